"""One timer for all the agents of a trio run.

Each agent task waits for a datagram on its first socket *or* its next deadline.  trio times
waits only with cancel scopes, and a cancel scope per agent is memory (the scope, its cancel
status and two sets) and garbage-collector work, and each change of its deadline leaves an
entry in trio's deadline heap.  With thousands of agents in a process that counts, so the
agents of a run share one timer instead: the ``trice timers`` task, which sleeps until the
earliest deadline of any agent and wakes the agents whose time has come.

* An agent task waiting on its socket is woken with :func:`trio.lowlevel.notify_closing`,
  which makes its wait raise :class:`trio.ClosedResourceError` without closing the socket
  (the same nudge a receiver gets, see ``ReceiveBuffer.nudge``); a parked one is rescheduled.
* The timer task is a system task (it serves every agent of the run, and no one agent's
  nursery outlives the others).  It starts with the first agent that opens and ends when the
  last one closes: no task of trice outlives its agents.
* Entries are checked when they come due: an entry whose agent has since planned another
  wake-up is stale and skipped, and the heap is pruned when stale entries pile up.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio

__all__ = ["Sleeper", "TimerHub", "timer_hub"]


class Sleeper(Protocol):
    """What the timer wakes: an agent, whose ``_sleeping_until`` is its planned wake-up."""

    _sleeping_until: float

    def _time_came(self) -> None: ...


_SEQUENCE = itertools.count()
#: Stale entries tolerated beyond two per member before the heap is pruned.
_PRUNE_SLACK = 256


class TimerHub:
    """The shared timer of one trio run (see the module docstring)."""

    __slots__ = ("_heap", "_members", "_running", "_scope", "_until")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Sleeper]] = []
        self._members = 0
        self._running = False
        self._scope: trio.CancelScope | None = None  # the timer task's wait
        self._until = -math.inf  # when that wait ends (-inf: the task is awake)

    @property
    def running(self) -> bool:
        """Whether the ``trice timers`` task is alive."""
        return self._running

    def join(self) -> None:
        """An agent opens: start the timer task if it is not running."""
        self._members += 1
        if not self._running:
            self._running = True
            trio.lowlevel.spawn_system_task(self._run, name="trice timers")

    def leave(self) -> None:
        """An agent closes; the last one to go ends the timer task."""
        self._members -= 1
        if self._members == 0:
            self._heap.clear()
            if self._scope is not None:
                self._scope.cancel()

    def arm(self, due: float, sleeper: Sleeper) -> None:
        """Wake ``sleeper`` at ``due`` (unless it has planned another wake-up by then)."""
        heap = self._heap
        heapq.heappush(heap, (due, next(_SEQUENCE), sleeper))
        if len(heap) > 2 * self._members + _PRUNE_SLACK:
            self._heap = [entry for entry in heap if entry[2]._sleeping_until == entry[0]]
            heapq.heapify(self._heap)
        if due < self._until:
            self._until = due
            assert self._scope is not None
            self._scope.deadline = due

    def _fire(self, now: float) -> float:
        """Wake the sleepers whose time has come; return the next due time."""
        heap = self._heap
        while heap:
            due, _, sleeper = heap[0]
            if sleeper._sleeping_until != due:
                heapq.heappop(heap)  # stale: it woke, or planned another time
            elif due <= now:
                heapq.heappop(heap)
                sleeper._time_came()
            else:
                return due
        return math.inf

    async def _run(self) -> None:
        try:
            while self._members > 0:
                until = self._fire(trio.current_time())
                if self._members == 0:
                    break
                with trio.CancelScope(deadline=until) as scope:
                    self._scope = scope
                    self._until = until
                    await trio.sleep_forever()
                self._scope = None
                self._until = -math.inf
        finally:
            self._scope = None
            self._until = -math.inf
            self._running = False


_HUB: trio.lowlevel.RunVar[TimerHub] = trio.lowlevel.RunVar("trice_timer_hub")


def timer_hub() -> TimerHub:
    """The timer of the current trio run."""
    try:
        return _HUB.get()
    except LookupError:
        hub = TimerHub()
        _HUB.set(hub)
        return hub
