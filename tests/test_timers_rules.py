"""Rules of the run's timer hub (trice/_trio/_timers.py) that the other timer tests did not
pin (found by a mutation review): copies and stale entries of its heap pruned to one per
sleeper, a stale time planned again still waking, the roster and heap let go as agents
close, and the sockets it reads for agents (one read a step, and a parked reader woken when
its socket closes)."""

from __future__ import annotations

import math
import select
import socket

import pytest
import trio
import trio.testing
from test_timers import _Sleeper

import trice
from trice._trio._timers import HAS_EPOLL, TimerHub, timer_hub
from trice._trio._transport import UdpTransport

from loopback import loopback_config
from virtual_time import wall_clock_guard

# -- the heap --------------------------------------------------------------------------------


async def test_copies_of_one_time_armed_again_and_again_are_pruned_to_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sleeper that swings between two times (a datagram flood waking it, each plan armed
    again) leaves copies of its planned time in the heap: the prune keeps one, so the heap
    stays bounded however long the swinging lasts, and the sleeper is woken once."""
    hub = TimerHub()
    hub.join()
    with wall_clock_guard():
        try:
            sleeper = _Sleeper()
            due = trio.current_time() + 5
            for round_ in range(2000):
                sleeper._sleeping_until = due + round_ % 2
                hub.arm(sleeper._sleeping_until, sleeper)
                assert len(hub._heap) <= 2 * 1 + 256 + 1, round_
            await trio.sleep(10)
            assert sleeper.woken == 1
        finally:
            hub.leave()


async def test_a_time_that_went_stale_unarmed_and_came_back_still_wakes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sleeper armed for ``due`` that then plans no wake-up (sleeping_until = inf, which
    arms nothing) has its entry skipped as stale; planning ``due`` again later wakes it
    (the hub does not take that entry to be still in the heap)."""
    hub = TimerHub()
    hub.join()
    other = _Sleeper()  # (keeps the hub's task with an earlier deadline to wake at)
    with wall_clock_guard():
        try:
            sleeper = _Sleeper()
            start = trio.current_time()
            due = start + 5
            sleeper._sleeping_until = due
            hub.arm(due, sleeper)
            sleeper._sleeping_until = math.inf  # (planned no wake-up: nothing armed)
            await trio.sleep(6)  # the entry came due, stale: skipped
            assert sleeper.woken == 0
            # Later, the same time is planned again (an absolute time of the past: due at once).
            other._sleeping_until = start + 7
            hub.arm(other._sleeping_until, other)
            sleeper._sleeping_until = due
            hub.arm(due, sleeper)
            await trio.sleep(5)
            assert other.woken == 1
            assert sleeper.woken == 1
        finally:
            hub.leave()


def test_a_prune_keeps_one_entry_per_sleeper() -> None:
    """The prune drops stale entries and copies: one entry per sleeper is left (copies kept
    would halve the room between prunes, and every copy is a pop when it comes due)."""
    hub = TimerHub()
    hub._running = True  # (no task: only the heap is looked at)
    hub._until = -math.inf  # (no deadline to move)
    hub._members = 1
    sleeper = _Sleeper()
    for round_ in range(100):
        sleeper._sleeping_until = 1000.0 + round_ % 2
        hub.arm(sleeper._sleeping_until, sleeper)
    assert len(hub._heap) == 100
    hub._prune()
    assert len(hub._heap) == 1


# -- agents leaving --------------------------------------------------------------------------


def test_the_ufrags_of_closed_agents_are_forgotten() -> None:
    """An agent that closes takes its ufrag out of the hub's roster (under its last name):
    a server that opens and closes agents for a long time does not grow it."""
    hub = TimerHub()
    hub._running = True  # (no task: only the roster is looked at)
    hub.join("keep")
    for i in range(100):
        hub.join(f"u{i}")
        hub.rename(f"u{i}", f"r{i}")
        hub.leave(f"r{i}")
    assert hub._ufrags == {"keep": 1}
    assert not hub.has_other_agent("keep", "keep")


async def test_the_last_agent_to_close_leaves_the_heap_empty() -> None:
    """When the last agent of the run closes, the timer's heap is emptied with it (its
    stale entries are no memory held for the rest of the run)."""
    async with trice.open_agent(loopback_config(), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("abcd", "x" * 22)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.connect)  # (checking gives it deadlines)
            await trio.testing.wait_all_tasks_blocked()
            assert timer_hub()._heap
            nursery.cancel_scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert not timer_hub().running
    assert timer_hub()._heap == []


# -- the sockets the timer task reads for agents ---------------------------------------------


@pytest.mark.skipif(not HAS_EPOLL, reason="the timer task reads sockets only with epoll")
async def test_a_socket_not_read_empty_waits_for_the_next_step() -> None:
    """A socket the timer task reads for its agent, which holds more than one read takes (a
    flood), is read once in a step: the flood waits for the next round, after the other
    tasks (the step does not ask the set again for it)."""
    calls: list[int] = []

    class _Flooded:
        def _readable(self, transport: UdpTransport) -> bool:
            calls.append(1)
            return False  # (more than a batch waits)

        def _resume(self) -> None:
            pass

    hub = TimerHub()
    hub._running = True  # (no task: the step is taken by hand)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        transport = UdpTransport(0, sock)
        try:
            assert hub.arm_read(transport, _Flooded())
            transport.reader_waiting = True
            peer.sendto(b"\x80flood", sock.getsockname())
            epoll = hub._epoll
            assert epoll is not None
            select.select([sock], [], [], 2)  # (loopback delivers at once; this only makes sure)
            hub._read_ready(epoll)
            assert calls == [1]
        finally:
            hub._close_epoll()


@pytest.mark.skipif(not HAS_EPOLL, reason="the timer task reads sockets only with epoll")
async def test_a_reader_parked_for_a_socket_that_closes_is_woken() -> None:
    """The agent task parked for its first socket, which the timer task reads for it; the
    socket closes (a gathering anew let its address go, say): the task is woken (to find it
    closed), not left parked until its next deadline, and the socket is watched no more."""
    resumed: list[int] = []

    class _Parked:
        def _readable(self, transport: UdpTransport) -> bool:
            return True

        def _resume(self) -> None:
            resumed.append(1)

    hub = TimerHub()
    hub._running = True  # (no task: only the set is looked at)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    transport = UdpTransport(0, sock)
    try:
        assert hub.arm_read(transport, _Parked())
        transport.reader_waiting = True
        transport.close()
        assert resumed == [1]
        assert not transport.reader_waiting
        assert hub._watched == {}
    finally:
        sock.close()
        hub._close_epoll()
