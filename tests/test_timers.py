"""The run's shared timer (trice/_trio/_timers.py): one task for every agent's deadline."""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import socket
import time

import pytest
import trio
import trio.testing

import trice
from trice._trio._timers import TimerCell, TimerHub, timer_hub
from trice.ice._core import JITTER_MAX

from loopback import TRACED, connect_both, gathered_pair, loopback_config, signal
from virtual_time import wall_clock_guard


def _task_names() -> list[str]:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    names: list[str] = []
    todo = [root]
    while todo:
        task = todo.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return names


async def test_the_timer_task_lives_while_any_agent_is_open() -> None:
    config = loopback_config()
    assert "trice timers" not in _task_names()
    async with trice.open_agent(config, controlling=True) as a:
        async with trice.open_agent(config, controlling=False) as b:
            await trio.testing.wait_all_tasks_blocked()
            assert _task_names().count("trice timers") == 1  # one for both agents
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            await connect_both(a, b)
        await trio.testing.wait_all_tasks_blocked()
        assert "trice timers" in _task_names()  # a is still open
        assert timer_hub().running
    await trio.testing.wait_all_tasks_blocked()
    assert "trice timers" not in _task_names()  # the last agent closed: no task is left
    assert not timer_hub().running
    # A later agent starts it again.
    async with trice.open_agent(config, controlling=True):
        await trio.testing.wait_all_tasks_blocked()
        assert "trice timers" in _task_names()


async def test_deadlines_of_many_agents_come_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Consent keeps pairs connected, and a silenced peer is declared disconnected, then
    failed, at the configured times: every agent's deadlines fire through the one timer."""
    timing = trice.Timing(keepalive_interval=0.5, disconnected_timeout=2.0, failed_timeout=4.0)
    config = loopback_config(timing=timing)
    with wall_clock_guard():
        await _two_pairs_then_silence(config, timing)


async def _two_pairs_then_silence(config: trice.AgentConfig, timing: trice.Timing) -> None:
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
        trice.open_agent(config, controlling=True) as c,
        trice.open_agent(config, controlling=False) as d,
    ):
        for x, y in ((a, b), (c, d)):
            await x.wait_gathering_complete()
            await y.wait_gathering_complete()
            signal(x, y)
            await connect_both(x, y)
        await trio.sleep(10)  # 20 rounds of consent
        alive = (trice.ConnectionState.CONNECTED, trice.ConnectionState.COMPLETED)
        assert all(agent.connection_state in alive for agent in (a, b, c, d))
        # Silence d: every socket of d stops answering (closed under it).
        async with c.subscribe() as events:
            for transport in d._transports.values():
                transport.close()
            start = trio.current_time()
            seen: dict[trice.ConnectionState, float] = {}
            with trio.fail_after(60):
                async for event in events:
                    if isinstance(event, trice.ConnectionStateChanged):
                        seen.setdefault(event.state, trio.current_time() - start)
                        if event.state is trice.ConnectionState.FAILED:
                            break
        # c's last consent came at most one jittered interval (RFC 7675 §5.1: up to
        # JITTER_MAX times keepalive_interval) before the cut.
        longest = timing.keepalive_interval * JITTER_MAX
        low, high = timing.disconnected_timeout - longest, timing.disconnected_timeout
        assert low <= seen[trice.ConnectionState.DISCONNECTED] <= high
        low, high = timing.failed_timeout - longest, timing.failed_timeout
        assert low <= seen[trice.ConnectionState.FAILED] <= high
        assert a.connection_state in alive and b.connection_state in alive


class _Sleeper:
    def __init__(self) -> None:
        self._sleeping_until = math.inf
        self._armed_at = -math.inf
        self._timer_cell = TimerCell()
        self._timer_cell.sleeper = self
        self.woken = 0

    def _time_came(self) -> None:
        self.woken += 1


async def test_stale_entries_are_skipped_and_pruned(autojump_clock: trio.testing.MockClock) -> None:
    hub = TimerHub()
    hub.join()
    with wall_clock_guard():
        await _many_plans(hub)
    await trio.testing.wait_all_tasks_blocked()
    assert not hub.running


async def _many_plans(hub: TimerHub) -> None:
    try:
        sleepers = [_Sleeper() for _ in range(10)]
        now = trio.current_time()
        for round_ in range(200):  # each sleeper changes its mind 200 times
            for i, sleeper in enumerate(sleepers):
                sleeper._sleeping_until = now + 100 + round_ + i / 100
                hub.arm(sleeper._sleeping_until, sleeper)
        # Stale entries are pruned: the heap stays bounded, not 2000 long.
        assert len(hub._heap) <= 2 * 10 + 256 + 1
        await trio.sleep(400)
        # Only the last plan of each came due, once.
        assert [s.woken for s in sleepers] == [1] * 10
    finally:
        hub.leave()


async def test_the_same_time_armed_again_and_again_pushes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An agent re-arms its planned time after every datagram that wakes it (a flood of
    junk datagrams included): that must neither grow the heap nor cost more each time."""
    hub = TimerHub()
    hub.join()
    with wall_clock_guard():
        try:
            sleepers = [_Sleeper() for _ in range(3)]
            due = trio.current_time() + 5
            for sleeper in sleepers:
                sleeper._sleeping_until = due
            for _ in range(5000):
                for sleeper in sleepers:
                    hub.arm(due, sleeper)
            assert len(hub._heap) == 3
            # A time that went stale and came back is armed anew (one more entry), and the
            # stale copies go at the next prune.
            for round_ in range(300):
                sleepers[0]._sleeping_until = due + 1 + round_ % 2
                hub.arm(sleepers[0]._sleeping_until, sleepers[0])
            assert len(hub._heap) <= 2 * 1 + 256 + 1
            await trio.sleep(10)
            assert [s.woken for s in sleepers] == [1, 1, 1]
        finally:
            hub.leave()


async def test_a_closed_agent_is_not_kept_by_the_timer() -> None:
    """Closing an agent drops the timer's hold on it (not only when its entries come due),
    once stale entries outnumber the open agents."""
    config = loopback_config()
    async with trice.open_agent(config, controlling=True) as keeper:
        hub = timer_hub()
        for _ in range(30):
            async with trice.open_agent(config, controlling=False) as short:
                await short.wait_gathering_complete()
                short.set_remote_parameters("abcd", "x" * 22)
                async with trio.open_nursery() as nursery:
                    # Checking gives it a deadline (the failed timeout): the timer holds it.
                    nursery.start_soon(short.connect)
                    await trio.testing.wait_all_tasks_blocked()
                    assert short._armed_at != -math.inf
                    nursery.cancel_scope.cancel()
        kept = {id(entry[2]) for entry in hub._heap}
        assert len(kept - {id(keeper)}) <= 16 + 2
        assert len(hub._heap) <= 2 * 1 + 16 + 1


async def test_the_hub_knows_the_ufrags_of_the_runs_other_agents() -> None:
    """An agent tells a peer of its own run by the peer's ufrag; its own ufrag does not count
    (two ends configured alike in two processes must not take each other for neighbours)."""
    hub = TimerHub()
    hub.join("aaaa")
    hub.join("bbbb")
    try:
        assert hub.has_other_agent("bbbb", own="aaaa")
        assert not hub.has_other_agent("cccc", own="aaaa")
        assert not hub.has_other_agent("aaaa", own="aaaa")  # only itself
        hub.join("aaaa")  # a second agent with the same configured ufrag
        assert hub.has_other_agent("aaaa", own="aaaa")
        hub.leave("aaaa")
        assert not hub.has_other_agent("aaaa", own="aaaa")
    finally:
        hub.leave("aaaa")
        hub.leave("bbbb")
    assert not hub.has_other_agent("bbbb", own="aaaa")


async def test_an_ice_restart_renames_an_agent_for_the_hub() -> None:
    hub = TimerHub()
    hub.join("aaaa")
    hub.join("bbbb")
    try:
        roster = hub.roster
        hub.rename("bbbb", "cccc")  # (b restarted)
        assert hub.roster != roster  # (the agents' cached answers are asked again)
        assert hub.has_other_agent("cccc", own="aaaa")
        assert not hub.has_other_agent("bbbb", own="aaaa")
    finally:
        hub.leave("aaaa")
        hub.leave("cccc")
    assert not hub.has_other_agent("cccc", own="aaaa")


class _TimerSteps(trio.abc.Instrument):
    """Counts the steps of the run's timer task while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on and task.name == "trice timers":
            self.steps += 1


@pytest.mark.skipif(TRACED, reason="a tracer (coverage) stretches each read past its budget")
async def test_the_timer_task_reads_what_its_own_reads_made_readable() -> None:
    """Two agents of one run connecting: the answer that one agent's read sends to the
    other is read in the same step of the timer task, so the exchange (check, answer,
    nomination, answer) takes a step or two, not one a hop (about 38 steps for ten
    connections; 0.87 times the time of the in-process connect then)."""
    probe = _TimerSteps()
    trio.lowlevel.add_instrument(probe)
    try:
        for _ in range(10):
            config = loopback_config()
            async with (
                trice.open_agent(config, controlling=True) as a,
                trice.open_agent(config, controlling=False) as b,
            ):
                with trio.fail_after(10):
                    await a.wait_gathering_complete()
                    await b.wait_gathering_complete()
                    signal(a, b)
                    probe.on = True
                    await connect_both(a, b)
                    probe.on = False
    finally:
        trio.lowlevel.remove_instrument(probe)
    assert probe.steps <= 20, probe.steps


def test_a_step_reads_again_within_its_time_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The timer task reads the set again while every socket it reported was read empty,
    eight rounds at most, and none started a millisecond or more after the step began: a
    flood over hundreds of sockets, each read empty each round, held the run 200 ms."""
    rounds = 0

    def read_once(self: TimerHub, epoll: object) -> bool:
        nonlocal rounds
        rounds += 1
        return True  # (every socket reported was read empty: it could go on)

    clock = iter(itertools.count())
    monkeypatch.setattr(TimerHub, "_read_once", read_once)
    hub = TimerHub()
    epoll = object()
    hub._epoll = epoll  # type: ignore[assignment]
    monkeypatch.setattr(time, "perf_counter", lambda: 0.0)  # (a quick machine)
    hub._read_ready(epoll)  # type: ignore[arg-type]
    assert rounds == 8
    rounds = 0
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock) * 0.0004)
    hub._read_ready(epoll)  # type: ignore[arg-type]
    assert rounds == 3  # (the third began at 0.8 ms; the fourth would at 1.2)


async def test_a_stalled_loop_sends_each_check_in_flight_once_not_every_copy_it_missed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The loop held 8 s (a blocking call, a paused process) while checks wait for answers:
    each check goes once more, then waits its next RTO from then (RFC 8489 §6.2.1); it sent
    every copy it had missed, back to back (3 each here)."""
    silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
    for sock in silent:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)

    def received() -> int:
        count = 0
        for sock in silent:
            with contextlib.suppress(BlockingIOError):
                while sock.recv(2048):
                    count += 1
        return count

    with wall_clock_guard():
        async with trice.open_agent(loopback_config(), controlling=True) as agent:
            await agent.wait_gathering_complete()
            agent.set_remote_parameters("abcd", "x" * 22)
            for i, sock in enumerate(silent):
                port = sock.getsockname()[1]
                line = f"candidate:{i} 1 udp {2130706431 - i} 127.0.0.1 {port} typ host"
                agent.add_remote_candidate(trice.Candidate.from_sdp(line))
            agent.add_remote_candidate(None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(agent.connect)
                await trio.sleep(0.5)  # (every check started: Ta is 50 ms)
                autojump_clock.autojump_threshold = math.inf  # (time moves by the jump alone)
                await trio.testing.wait_all_tasks_blocked(0.02)
                received()
                assert len(agent._runs) == 5
                autojump_clock.jump(8.0)
                await trio.testing.wait_all_tasks_blocked(0.05)
                assert received() == 5  # (one copy each)
                nursery.cancel_scope.cancel()
    for sock in silent:
        sock.close()


async def test_out_of_descriptors_for_the_epoll_set_the_readers_wait_on_their_sockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process at its descriptor limit once gathering is done cannot open the timer
    task's epoll set: the readers wait on their sockets themselves, as where there is no
    epoll, and the agents connect.  (The OSError came out of the agent, which died.)"""
    import select

    def out_of_descriptors() -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(select, "epoll", out_of_descriptors)  # (trio's own is open already)
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        with trio.fail_after(10):
            await connect_both(a, b)
