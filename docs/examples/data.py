"""The data path: ``Connection`` is a ``trio.abc.Channel[bytes]`` of datagrams.

Received datagrams wait in a bounded buffer (``AgentConfig.receive_buffer``).  When the reader
falls behind and the buffer is full, the newest datagram is dropped and counted, as a UDP
socket would: STUN is still answered, so the connection stays up while nobody reads.
"""

from __future__ import annotations

import trio

import trice

LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


def signal(here: trice.Agent, there: trice.Agent) -> None:
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


async def main() -> None:
    async with (
        trice.open_agent(trice.AgentConfig(network=LOOPBACK), controlling=True) as alice,
        # Bob holds at most 4 datagrams that nobody has read yet.
        trice.open_agent(
            trice.AgentConfig(network=LOOPBACK, receive_buffer=4), controlling=False
        ) as bob,
    ):
        await alice.wait_gathering_complete()
        await bob.wait_gathering_complete()
        signal(alice, bob)
        signal(bob, alice)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bob.connect)
                to_bob = await alice.connect()
            from_alice = await bob.connect()  # the same Connection again

        # ICE times its checks' round trips (each check that went once): the latest.
        selected = next(s for s in alice.pair_statistics() if s.selected)
        assert selected.pair == to_bob.selected_pair
        timed = selected.round_trip_time is not None
        print("alice: the selected pair's round trip timed:", "yes" if timed else "no")

        # Ten datagrams while Bob is not reading: four fit, six are dropped.
        for i in range(10):
            await to_bob.send(b"datagram %d" % i)
        with trio.fail_after(5):
            while bob.statistics().datagrams_dropped < 6:  # noqa: ASYNC110 (counters: poll)
                await trio.sleep(0.01)
        stats = bob.statistics()
        print(f"bob: {stats.datagrams_received} arrived, {stats.datagrams_dropped} dropped")

        # Message boundaries are kept; the oldest datagrams are the ones kept.
        kept = [from_alice.receive_nowait() for _ in range(4)]
        print("bob read:", b", ".join(kept).decode())

        # Any trio code that takes a Channel[bytes] takes a Connection.
        async def echo(channel: trio.abc.Channel[bytes]) -> None:
            async for data in channel:
                await channel.send(data.upper())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo, from_alice)
            await to_bob.send(b"echo me")
            print("alice got back:", (await to_bob.receive()).decode())
            nursery.cancel_scope.cancel()

        # Closing a Connection: from then on both directions raise (a task blocked in
        # receive() at that moment gets ClosedResourceError too, as trio channels do).
        await from_alice.aclose()
        try:
            await from_alice.send(b"too late")
        except trio.ClosedResourceError:
            print("after aclose(): send raises ClosedResourceError")
    # Leaving the agent's block closes alice's connection too.
    try:
        await to_bob.receive()
    except trio.ClosedResourceError:
        print("after the agent closed: receive raises ClosedResourceError")


if __name__ == "__main__":
    trio.run(main)
