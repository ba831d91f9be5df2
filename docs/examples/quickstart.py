"""Quickstart: two ICE agents in one process connect over loopback and exchange datagrams.

Run it with ``python docs/examples/quickstart.py``; it prints the selected pair and the
messages.  Signaling is a pair of function calls here; across a network it would be any
channel you like (see the signaling guide).
"""

from __future__ import annotations

import trio

import trice

# Loopback only: the example never touches a real interface or a public server.
LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback,
    include_loopback=True,
    ipv6=False,
)


def signal(here: trice.Agent, there: trice.Agent) -> None:
    """Tell ``here`` what signaling would have carried from ``there``."""
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)  # end-of-candidates


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

        connections: dict[str, trice.Connection] = {}

        async def connect(name: str, agent: trice.Agent) -> None:
            connections[name] = await agent.connect()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect, "alice", alice)
                nursery.start_soon(connect, "bob", bob)

        to_bob, to_alice = connections["alice"], connections["bob"]
        pair = to_bob.selected_pair
        print(
            f"selected: {pair.local.address}:{pair.local.port} -> "
            f"{pair.remote.address}:{pair.remote.port}"
        )
        await to_bob.send(b"hello, bob")
        print("bob got:", (await to_alice.receive()).decode())
        await to_alice.send(b"hello, alice")
        print("alice got:", (await to_bob.receive()).decode())
    print("closed:", alice.connection_state.value)


if __name__ == "__main__":
    trio.run(main)
