"""ICE restart: both agents take new parameters and check afresh; data goes on meanwhile.

An application restarts ICE when the path it has stopped working, or may have (the state
went ``failed``, or a network changed): each side calls ``restart()``, the two swap their
new parameters and candidates through signaling, and the checks run again.  Until they
select a pair, data keeps going over the old one.
"""

from __future__ import annotations

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


def signal(here: trice.Agent, there: trice.Agent) -> None:
    """Tell ``here`` what signaling would have carried from ``there``."""
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


async def connect_both(alice: trice.Agent, bob: trice.Agent) -> trice.Connection:
    """Both ``connect()`` calls at once; returns Alice's connection."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob.connect)
            to_bob = await alice.connect()
    return to_bob


async def main() -> None:
    config = trice.AgentConfig(network=LOOPBACK)
    async with (
        trice.open_agent(config, controlling=True) as alice,
        trice.open_agent(config, controlling=False) as bob,
    ):
        await alice.wait_gathering_complete()
        await bob.wait_gathering_complete()
        signal(alice, bob)
        signal(bob, alice)
        to_bob = await connect_both(alice, bob)
        to_alice = await bob.connect()  # (the agent's one connection)
        first = alice.local_parameters.ufrag

        # Both sides restart: new ufrag and pwd each; the old checks are forgotten.
        alice.restart()
        bob.restart()
        print("restarted:", alice.connection_state.value, first != alice.local_parameters.ufrag)

        # Signaling has not carried the new parameters yet, and data still flows.
        await to_bob.send(b"during the restart")
        print("bob got:", (await to_alice.receive()).decode())

        # The new parameters and the candidates (the same ones) go across; checks run.
        signal(alice, bob)
        signal(bob, alice)
        again = await connect_both(alice, bob)
        print("connected again, same connection:", again is to_bob)
        await to_bob.send(b"after the restart")
        print("bob got:", (await to_alice.receive()).decode())


if __name__ == "__main__":
    trio.run(main)
