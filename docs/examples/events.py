"""Events: subscribe, match on the closed union, replay on subscribe, and EventsLost.

Each ``agent.subscribe()`` is its own bounded stream.  It starts with the state so far (so a
late subscriber misses nothing), never makes the agent wait, and says so with ``EventsLost``
when it fell too far behind.
"""

from __future__ import annotations

import sys

import trio

import trice

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing import NoReturn

    def assert_never(value: NoReturn) -> NoReturn:
        raise AssertionError(f"unhandled event {value!r}")


LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


def describe(event: trice.Event) -> str:
    """One line per event.  ``trice.Event`` is a closed union: mypy checks that every case is
    handled, because ``assert_never`` only accepts what is left (nothing)."""
    match event:
        case trice.CandidateGathered(candidate=candidate):
            return f"gathered {candidate.type.value} {candidate.address}:{candidate.port}"
        case trice.GatheringStateChanged(state=state):
            return f"gathering {state.value}"
        case trice.ConnectionStateChanged(state=state):
            return f"connection {state.value}"
        case trice.SelectedPairChanged(pair=pair):
            return f"selected {pair.local.address}:{pair.local.port} -> {pair.remote.port}"
        case trice.EventsLost(count=count):
            return f"lost {count} events (read the current state from the agent)"
        case _:
            assert_never(event)


def drain(stream: trice.EventStream) -> list[str]:
    """Everything queued on ``stream`` right now, without waiting."""
    lines = []
    while True:
        try:
            lines.append(describe(stream.receive_nowait()))
        except trio.WouldBlock:
            return lines


def signal(here: trice.Agent, there: trice.Agent) -> None:
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


async def watch(stream: trice.EventStream) -> None:
    async with stream:  # leaving the block unsubscribes
        async for event in stream:
            print("  live:", describe(event))
            if event == trice.ConnectionStateChanged(trice.ConnectionState.CONNECTED):
                return


async def main() -> None:
    config = trice.AgentConfig(network=LOOPBACK)
    async with (
        trice.open_agent(config, controlling=True) as alice,
        trice.open_agent(config, controlling=False) as bob,
    ):
        print("alice, subscribed from the start:")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, alice.subscribe())
            await alice.wait_gathering_complete()
            await bob.wait_gathering_complete()
            signal(alice, bob)
            signal(bob, alice)
            nursery.start_soon(bob.connect)
            await alice.connect()

        # A late subscriber first gets the state so far, replayed as events.
        async with alice.subscribe() as late:
            print("a late subscriber starts with a replay:")
            for line in drain(late):
                print("  replay:", line)

        # A subscriber whose buffer is too small for what it has to say loses the surplus, and
        # is told how much.  The agent never waits for it.
        async with alice.subscribe(max_buffer=2) as slow:
            print("a subscriber with max_buffer=2:")
            for line in drain(slow):
                print("  slow:", line)


if __name__ == "__main__":
    trio.run(main)
