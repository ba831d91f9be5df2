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
  last one closes (at its next scheduling step): no task of trice outlives its agents.
* Entries are checked when they come due: an entry whose agent has since planned another
  wake-up is stale and skipped.  Arming the time already armed pushes nothing, and the heap
  is pruned (stale entries and copies dropped) when it grows past twice the agents and some
  slack, so that a flood of datagrams waking an agent cannot grow it.  The heap holds an
  agent through a cell (:class:`TimerCell`) that the agent empties as it closes, so that its
  entries left in the heap do not keep it alive.
* It also knows the local ufrags of the run's open agents (:meth:`TimerHub.has_other_agent`):
  an agent whose peer is another agent of the same run need not ping it back at once (see
  ``Agent._pump``).
* Where the system has ``epoll`` (Linux), the same task also waits for the agents' first
  sockets (:meth:`TimerHub.arm_read`): one run-wide epoll set, edge-triggered, which the task
  waits on with its timer.  When an agent's first socket becomes readable while the agent's
  task is parked waiting for it (``reader_waiting``), this task reads it for the agent
  (``Agent._readable``: the same reading, answering and counting the agent's task would do)
  without waking that task: with a thousand agents connecting at once, a task step and a
  wait on each socket fewer per datagram (some 10 % of the CPU of connecting them).  A socket
  whose reader is not waiting (a receiver holds it) is masked in the set at its next report,
  and armed again when the agent's task waits for it again (a socket with data pending is
  reported at once then).  Elsewhere, each agent's task waits on its socket itself.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import select
import time
from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from trice._trio._transport import UdpTransport

__all__ = ["Reader", "Sleeper", "TimerCell", "TimerHub", "timer_hub"]

#: Whether the system has ``epoll`` (Linux): then the timer task also reads the agents' first
#: sockets (see the module docstring).
HAS_EPOLL = hasattr(select, "epoll")
_READ = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLET", 0)


class Sleeper(Protocol):
    """What the timer wakes: an agent, whose ``_sleeping_until`` is its planned wake-up.

    ``_armed_at`` belongs to the timer: the due time of the sleeper's entry in the heap (so
    that arming the same time again pushes nothing), ``-inf`` when it has none.
    """

    _sleeping_until: float
    _armed_at: float
    _timer_cell: TimerCell

    def _time_came(self) -> None: ...


class TimerCell:
    """What the timer's heap holds for a sleeper: the sleeper, until it closes (then
    ``None``).  An agent that closes empties its cell, so that entries of it still in the
    heap hold it no longer: it is freed at once, not when they come due."""

    __slots__ = ("sleeper",)

    def __init__(self) -> None:
        self.sleeper: Sleeper | None = None


class Reader(Protocol):
    """What reads a socket that the timer task reports readable: an agent."""

    def _readable(self, transport: UdpTransport) -> bool:
        """Read ``transport`` now (its reader waits for it); return whether it was emptied."""
        ...

    def _resume(self) -> None: ...


#: Rounds of reading the set in one step of the timer task, and the time after which no
#: other round starts (see TimerHub._read_ready).
_READ_ROUNDS = 8
_READ_AGAIN_WITHIN = 0.001

_SEQUENCE = itertools.count()
#: Stale entries tolerated beyond two per member before the heap is pruned.
_PRUNE_SLACK = 256


class TimerHub:
    """The shared timer of one trio run (see the module docstring)."""

    __slots__ = (
        "_epoll",
        "_heap",
        "_members",
        "_running",
        "_scope",
        "_stepping",
        "_ufrags",
        "_until",
        "_watched",
        "roster",
    )

    def __init__(self) -> None:
        # The agents' first sockets, by descriptor, with their readers (see arm_read), in an
        # epoll set made with the first (and closed when the task ends).
        self._epoll: select.epoll | None = None
        self._watched: dict[int, tuple[UdpTransport, Reader]] = {}
        self._heap: list[tuple[float, int, TimerCell]] = []
        self._members = 0
        self._running = False
        self._scope: trio.CancelScope | None = None  # the timer task's wait
        self._until = -math.inf  # when that wait ends (-inf: the task is awake)
        # While the task reads for the agents (see _read_ready), what they arm only brings
        # ``_until`` forward: the scope's deadline follows once, when the reading is done
        # (each change of a deadline is work for trio, some microseconds).
        self._stepping = False
        self._ufrags: dict[str, int] = {}  # the local ufrags of the run's open agents
        #: Counts the changes of that roster (an agent opening or closing), so that an
        #: agent can keep an answer of :meth:`has_other_agent` until the next change.
        self.roster = 0

    @property
    def running(self) -> bool:
        """Whether the ``trice timers`` task is alive."""
        return self._running

    def join(self, ufrag: str | None = None) -> None:
        """An agent (with local ``ufrag``) opens: start the timer task if it is not
        running."""
        if not self._running:
            trio.lowlevel.spawn_system_task(self._run, name="trice timers")
            self._running = True  # (after the spawn: should it fail, nothing is counted)
        self._members += 1
        if ufrag is not None:
            self._count_ufrag(ufrag, 1)

    def rename(self, old: str, new: str) -> None:
        """An open agent's local ufrag changed from ``old`` to ``new`` (an ICE restart)."""
        self._count_ufrag(old, -1)
        self._count_ufrag(new, 1)

    def _count_ufrag(self, ufrag: str, change: int) -> None:
        count = self._ufrags.get(ufrag, 0) + change
        if count > 0:
            self._ufrags[ufrag] = count
        else:
            self._ufrags.pop(ufrag, None)
        self.roster += 1

    def leave(self, ufrag: str | None = None) -> None:
        """An agent (the one that joined with ``ufrag``) closes; the last one to go ends
        the timer task."""
        if ufrag is not None:
            self._count_ufrag(ufrag, -1)
        self._members -= 1
        if self._members == 0:
            self._prune(keep=False)
            self._close_epoll()  # (now: the last agent leaves no descriptor behind)
            if self._scope is not None:
                self._scope.cancel()
        elif len(self._heap) > 2 * self._members + 16:
            self._prune()  # let closed agents go now, not when their entries come due

    def arm(self, due: float, sleeper: Sleeper) -> None:
        """Wake ``sleeper`` at ``due`` (unless it has planned another wake-up by then)."""
        if sleeper._armed_at == due:
            return  # its entry for that time is in the heap already
        sleeper._armed_at = due
        heap = self._heap
        heapq.heappush(heap, (due, next(_SEQUENCE), sleeper._timer_cell))
        if len(heap) > 2 * self._members + _PRUNE_SLACK:
            self._prune()
        if due < self._until:
            self._until = due
            if not self._stepping:
                assert self._scope is not None
                self._scope.deadline = due

    def arm_read(self, transport: UdpTransport, reader: Reader) -> bool:
        """Report ``transport`` readable from now on: while ``transport.reader_waiting``,
        this task then calls ``reader._readable(transport)``.  Returns ``False`` where the
        system has no epoll: the caller waits on the socket itself.

        Arming a socket that has data pending reports it at once (epoll looks again when a
        socket is armed), so nothing that came while it was not armed is missed."""
        if not HAS_EPOLL or not self._running:
            return False
        epoll = self._epoll
        if epoll is None:
            try:
                epoll = self._epoll = select.epoll()
            except OSError:  # (out of descriptors: the reader waits on its socket itself)
                return False
            if self._scope is not None:
                self._scope.cancel()  # (the task sleeps without it: it waits on it now)
        fd = transport.sock.fileno()
        entry = self._watched.get(fd)
        try:
            if entry is not None and entry[0] is transport:
                epoll.modify(fd, _READ)
            else:
                if entry is not None:  # (a closed socket's descriptor, used again)
                    self._unregister(fd)
                epoll.register(fd, _READ)
                self._watched[fd] = (transport, reader)
                transport.read_hub = self
        except (OSError, ValueError):
            # (A socket closed meanwhile, which the caller finds closed; or the system
            # refused: its reader waits on it itself, then.)
            if self._watched.get(fd, (None,))[0] is transport:
                self._unregister(fd)
            transport.read_hub = None
            transport.armed = False
            return False
        transport.armed = True
        return True

    def forget(self, transport: UdpTransport) -> None:
        """``transport`` closes: take it out of the set (before its descriptor goes), and
        wake its reader if it was waiting for it."""
        transport.armed = False
        transport.read_hub = None
        reader = self._reader_of(transport)
        if reader is None:
            return
        self._unregister(transport.sock.fileno())
        if transport.reader_waiting:
            transport.reader_waiting = False
            reader._resume()

    def wake_reader(self, transport: UdpTransport) -> None:
        """Reschedule the reader parked for ``transport`` (see ``UdpTransport.kick``)."""
        reader = self._reader_of(transport)
        if reader is not None:
            reader._resume()

    def _reader_of(self, transport: UdpTransport) -> Reader | None:
        """The reader ``transport`` is watched for, if it is (its descriptor, not another
        socket's that took the number after it closed)."""
        entry = self._watched.get(transport.sock.fileno())
        return entry[1] if entry is not None and entry[0] is transport else None

    def _close_epoll(self) -> None:
        epoll, self._epoll = self._epoll, None
        for transport, _reader in self._watched.values():
            transport.armed = False
            transport.read_hub = None
        self._watched = {}
        if epoll is not None:
            trio.lowlevel.notify_closing(epoll)  # (the task may wait on it)
            epoll.close()

    def _unregister(self, fd: int) -> None:
        self._watched.pop(fd, None)
        epoll = self._epoll
        if epoll is not None:
            # (Already gone with its descriptor, or the set is closed: nothing to undo.)
            with contextlib.suppress(OSError, ValueError):
                epoll.unregister(fd)

    def _read_ready(self, epoll: select.epoll) -> None:
        """Read the sockets the set reports, for their readers (see arm_read).

        What was read may have made another socket of the set readable (an agent of this
        run answering another's check): the set is asked again, up to
        :data:`_READ_ROUNDS` times, so that the answer is read in this step, not a round
        of the scheduler later (four hops of a connection between two agents of one run
        took four rounds).  Only while every socket reported was read empty (one with more
        than a batch waiting, a flood, waits for the next round, after the other tasks),
        and within :data:`_READ_AGAIN_WITHIN` of the step's start: a flood spread over
        many sockets, each read empty every round, held the run for 200 ms and more."""
        again_until = time.perf_counter() + _READ_AGAIN_WITHIN
        for _ in range(_READ_ROUNDS):
            if (
                not self._read_once(epoll)
                or epoll is not self._epoll
                or time.perf_counter() > again_until
            ):
                return

    def _read_once(self, epoll: select.epoll) -> bool:
        """One round of :meth:`_read_ready`: whether the set reported sockets, and every one
        of them was read empty."""
        watched = self._watched
        try:
            ready = epoll.poll(0)
        except (OSError, ValueError):
            return False  # (closed meanwhile: nothing left to read for)
        emptied = bool(ready)
        for fd, _events in ready:
            entry = watched.get(fd)
            if entry is None:
                continue
            transport, reader = entry
            if transport.closed:
                continue
            if not transport.reader_waiting:
                # Its reader does not wait for it now (a receiver holds the socket): no more
                # reports until the reader arms it again.
                transport.armed = False
                events = 0
            elif reader._readable(transport) or transport.closed:
                continue
            else:
                # More than one read takes (a burst): report it again, for the next round
                # (after other tasks had their turn).
                events = _READ
                emptied = False
            with contextlib.suppress(OSError, ValueError):
                epoll.modify(fd, events)
        return emptied

    def has_other_agent(self, ufrag: str, own: str) -> bool:
        """Whether an open agent of this run, other than the caller (whose local ufrag is
        ``own``), has the local ufrag ``ufrag``: a peer with that ufrag is most likely an
        agent of this very run.  (Two ends configured with the same ufrag in different
        runs do not find each other here.)"""
        count = self._ufrags.get(ufrag, 0)
        return count > 1 if ufrag == own else count > 0

    def _prune(self, *, keep: bool = True) -> None:
        """Drop the stale entries, and the copies: one entry per sleeper at most (none
        without ``keep``)."""
        kept: list[tuple[float, int, TimerCell]] = []
        for entry in self._heap:
            sleeper = entry[2].sleeper
            if sleeper is not None:
                sleeper._armed_at = -math.inf
        if keep:
            for entry in self._heap:
                due, _, cell = entry
                sleeper = cell.sleeper
                if (
                    sleeper is not None
                    and sleeper._sleeping_until == due
                    and sleeper._armed_at != due
                ):
                    sleeper._armed_at = due
                    kept.append(entry)
            heapq.heapify(kept)
        self._heap = kept

    def _fire(self, now: float) -> float:
        """Wake the sleepers whose time has come; return the next due time."""
        heap = self._heap
        while heap:
            due, _, cell = heap[0]
            sleeper = cell.sleeper
            if sleeper is None:
                heapq.heappop(heap)  # (its agent closed)
                continue
            if sleeper._sleeping_until != due or sleeper._armed_at != due:
                # Stale (it woke, or planned another time), or a copy of an entry that has
                # fired already.
                heapq.heappop(heap)
                if sleeper._armed_at == due:
                    sleeper._armed_at = -math.inf
            elif due <= now:
                heapq.heappop(heap)
                sleeper._armed_at = -math.inf
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
                    epoll = self._epoll
                    if epoll is None:
                        await trio.sleep_forever()
                    # Read what the sockets bring until the next timer is due (this scope's
                    # deadline, which arm() brings forward) or the set changes: one scope
                    # for many reads.
                    while epoll is self._epoll:
                        try:
                            await trio.lowlevel.wait_readable(epoll)
                        except trio.ClosedResourceError:
                            break  # (closed: the last agent left)
                        if epoll is not self._epoll:
                            # Closed (or replaced) after it was reported readable, before this
                            # task ran: the last agent left in that round.
                            break
                        self._stepping = True
                        try:
                            self._read_ready(epoll)
                        finally:
                            self._stepping = False
                        if self._until < scope.deadline:
                            scope.deadline = self._until
                self._scope = None
                self._until = -math.inf
        finally:
            self._scope = None
            self._until = -math.inf
            self._running = False
            self._close_epoll()


_HUB: trio.lowlevel.RunVar[TimerHub] = trio.lowlevel.RunVar("trice_timer_hub")


def timer_hub() -> TimerHub:
    """The timer of the current trio run."""
    try:
        return _HUB.get()
    except LookupError:
        hub = TimerHub()
        _HUB.set(hub)
        return hub
