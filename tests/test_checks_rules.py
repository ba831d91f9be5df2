"""Rules of the check tasks (trice/_trio/_checks.py) that the other check tests did not pin
(found by a mutation review; each test here kills a mutant the rest of the suite let
through): a stall past several retransmission times sends one copy, and the agent's timer
heap is let go when no check is in flight.  (That a cancelled check over ICE-TCP lets its
connection go is test_tcp_hostile's
test_a_cancelled_checks_connection_goes_quietly_and_its_pair_waits.)  Loopback only; virtual
time."""

from __future__ import annotations

import math
import socket

import pytest
import trio
import trio.testing

import trice
from trice import stun
from trice._trio import _checks

from loopback import connect_both, loopback_config, signal
from virtual_time import wall_clock_guard


def _copies_waiting(peer: socket.socket, transaction_id: bytes) -> int:
    """How many datagrams of the transaction ``transaction_id`` wait on ``peer`` (read)."""
    copies = 0
    while True:
        try:
            data = peer.recv(2048)
        except BlockingIOError:
            return copies
        copies += stun.decode(data).transaction_id == transaction_id


# -- retransmissions -------------------------------------------------------------------------


async def test_a_stall_past_several_retransmissions_sends_one_copy_not_each_missed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 8489 §6.2.1: each copy waits its RTO.  The process stalls (here: the virtual
    clock jumps 10 s) past several of a check's retransmission times: the check goes once
    more when the run wakes, not once for every time it missed (docs in CheckRun.run).
    (Mutant: the lateness not carried into the schedule, and every missed copy went at
    once.)"""
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(loopback_config(), controlling=True) as a:
            await a.wait_gathering_complete()
            a.set_remote_parameters("abcd", "x" * 22)
            port = peer.getsockname()[1]
            a.add_remote_candidate(
                trice.Candidate.from_sdp(f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host")
            )
            a.add_remote_candidate(None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.connect)
                autojump_clock.autojump_threshold = math.inf  # (the test moves the clock)
                await trio.testing.wait_all_tasks_blocked()
                request = stun.decode(peer.recv(2048))  # the check's first transmission
                assert _copies_waiting(peer, request.transaction_id) == 0
                autojump_clock.jump(10.0)  # (past 0.5, 1.5, 3.5, 6.5 and 9.5 s)
                for _ in range(5):
                    await trio.testing.wait_all_tasks_blocked()
                assert _copies_waiting(peer, request.transaction_id) == 1
                nursery.cancel_scope.cancel()


# -- the agent's timer heap ------------------------------------------------------------------


async def test_with_no_check_in_flight_the_agents_timer_heap_is_empty(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each check run leaves an entry in the agent's timer heap (its next transmission);
    when the last run in flight ends, the heap is cleared, not left holding every finished
    run (its check and message) until the agent next wakes, on an idle agent the next
    consent check (comments in CheckRun.run).  (Mutant: not cleared.)"""
    seen: list[tuple[int, int]] = []
    run = _checks.CheckRun.run

    async def recording(self: _checks.CheckRun) -> None:
        await run(self)
        seen.append((len(self.agent._runs), len(self.agent._timers)))

    monkeypatch.setattr(_checks.CheckRun, "run", recording)
    config = loopback_config()
    with wall_clock_guard():
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
        ):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            await connect_both(a, b)
    idle = [timers for runs, timers in seen if runs == 0]
    assert idle, "no run ended with none other in flight"
    assert idle == [0] * len(idle)
