"""An ICE restart that gathers anew: for a host whose network changed.

Alice's network "changes" here by her IP filter: it takes 127.0.0.1 only at first, then
every loopback address (on a host with IPv6, ::1 joins).  ``restart(regather=True)`` reads
the interfaces again: 127.0.0.1 keeps its socket and candidate, a new address gets a socket,
and the STUN servers (none here) would be asked again.  Alice signals what the new
gathering finds, as at the start, and the two connect again over the same connection.
"""

from __future__ import annotations

import ipaddress

import trio

import trice

LOOPBACK = trice.NetworkConfig(ip_filter=lambda ip: ip.is_loopback, include_loopback=True)
allowed = {ipaddress.ip_address("127.0.0.1")}  # what Alice's network offers, for now


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
    alice_network = trice.NetworkConfig(
        include_loopback=True,
        ip_filter=lambda ip: ip in allowed,
    )
    async with (
        trice.open_agent(trice.AgentConfig(network=alice_network), controlling=True) as alice,
        trice.open_agent(trice.AgentConfig(network=LOOPBACK), controlling=False) as bob,
    ):
        await alice.wait_gathering_complete()
        await bob.wait_gathering_complete()
        signal(alice, bob)
        signal(bob, alice)
        to_bob = await connect_both(alice, bob)
        print("before:", [c.address for c in alice.local_candidates])

        # The network changed: every loopback address now.  Restart, gathering anew.
        allowed.add(ipaddress.ip_address("::1"))
        async with alice.subscribe() as events:
            alice.restart(regather=True)
            bob.restart()
            await alice.wait_gathering_complete()
            states = [
                e.state.value for e in _queued(events) if isinstance(e, trice.GatheringStateChanged)
            ]
        print("gathering again:", states[-2:])
        print("127.0.0.1 kept:", "127.0.0.1" in [c.address for c in alice.local_candidates])

        signal(alice, bob)
        signal(bob, alice)
        again = await connect_both(alice, bob)
        print("connected again, same connection:", again is to_bob)


def _queued(events: trice.EventStream) -> list[trice.Event]:
    """The events queued on ``events`` now."""
    queued = []
    while True:
        try:
            queued.append(events.receive_nowait())
        except trio.WouldBlock:
            return queued


if __name__ == "__main__":
    trio.run(main)
