"""Connectivity checks in flight: one task each, retransmitting on the check's schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from trice import stun
from trice._servers import host_port
from trice._trio._log import TRACE, logger
from trice._trio._mux import MuxTransport
from trice._trio._relay import RelayTransport
from trice._trio._tcp import TcpTransport, _Link
from trice._trio._transport import Transport, UdpTransport
from trice.ice._candidate import CandidateType
from trice.ice._checklist import PairState
from trice.ice._core import Check

if TYPE_CHECKING:
    from trice._trio._agent import Agent

__all__ = ["CheckRun", "check_name"]

Address = tuple[str, int]


class CheckRun:
    """One connectivity check in flight: its first transmission goes out when it is made,
    then its task retransmits on the check's schedule until a response settles it or the
    schedule runs out (RFC 8445 §14.3).

    The task parks itself with :func:`trio.lowlevel.wait_task_rescheduled`; whatever concerns
    it (a response, a superseding check on the same pair, a resend, or its next transmission
    coming due on the agent's timer, see :meth:`Agent._arm`) reschedules it.  No cancel
    scope or event per wait: a check task is one of the commonest things in a busy process,
    and a cancellation costs several times a plain wake-up."""

    __slots__ = (
        "agent",
        "check",
        "dropped",
        "due",
        "failed",
        "link",
        "once",
        "resend_at",
        "sent_again",
        "settled",
        "task",
        "transport",
    )

    def __init__(self, agent: Agent, check: Check, transport: Transport) -> None:
        self.agent = agent
        self.check = check
        self.transport = transport
        #: Over TCP, the connection the check went over (see ``TcpTransport.drop``).
        self.link: _Link | None = None
        self.settled = False
        self.dropped = False
        self.failed = False  # its path failed before the schedule ran out (see fail)
        # Over a reliable transport (ICE-TCP) a check goes once and waits its schedule out:
        # the connection carries it or fails (RFC 6544 §7.1, RFC 8489 §6.2.2).
        self.once = type(transport) is TcpTransport
        self.resend_at: float | None = None  # one more transmission, before the RTO
        self.sent_again = False  # (then its answer is not timed: Karn's rule)
        self.due = math.inf  # when the parked task wants waking (the agent's timer)
        self.task: trio.lowlevel.Task | None = None  # set while the task is parked
        agent._runs[check.transaction_id] = self

    def wake(self) -> None:
        """Reschedule the parked task (if it is parked): it looks at what changed."""
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def on_response(
        self, message: stun.Message, source: Address, now: float, transport: Transport
    ) -> None:
        """A response to the check came from ``source`` on ``transport``."""
        agent = self.agent
        if agent._core.on_response(
            self.check, message, source, now, base=transport.base, sent_again=self.sent_again
        ):
            if isinstance(transport, TcpTransport):
                # (An answer of this generation's over the connection: its path now, which
                # an end fails, not one kept from before a restart.)
                transport.prove(source, answered=_names_this_end(agent, transport, message))
            self.settled = True
            self.wake()
            agent._pump(now)
        else:
            agent._pump(now)  # (not taken: it may still ask something, a 401's resend)

    def fail(self) -> None:
        """The check's path failed (its TCP connection could not open, or closed): the
        check fails now rather than when its schedule runs out."""
        self.failed = True
        self.wake()

    def drop(self) -> None:
        """A new check on the same pair replaces this one: stop retransmitting."""
        self.dropped = True
        self.wake()

    def resend_at_time(self, at: float) -> None:
        """The core asks for the check once more at ``at``, before its RTO (see
        :meth:`AgentCore.poll_resend <trice.ice._core.AgentCore.poll_resend>`)."""
        if self.settled or self.dropped or (self.resend_at is not None and at >= self.resend_at):
            return  # (one pending at a time; a sooner one, a nomination's, replaces it)
        self.resend_at = at
        if at < self.due and self.task is not None:
            # Parked until a later time: woken at ``at`` instead, by the agent's timer (no
            # task switch now, while a crossing check's answer may be on its way).  A task
            # that is not parked sees ``resend_at`` before it parks.
            self.due = at
            self.agent._arm(self, at)

    def _answered_meanwhile(self) -> bool:
        """Before sending the check again, or giving it up, read what its socket already
        holds: in a busy process the answer has often arrived and waits there, unread,
        because the socket's reader has not had its turn yet.  A copy sent then would only
        add to the load (a request and a response more, on both sides), and a check given
        up then would fail its pair.  Returns whether the check is over.  (Over ICE-TCP,
        where no copy goes, see :meth:`_answered_before_giving_up`.)"""
        transport = self.transport
        if not transport.closed:
            if isinstance(transport, UdpTransport):
                self.agent._drain(transport)
            elif isinstance(transport, (MuxTransport, RelayTransport)):
                transport.read_waiting()  # (a relay through an HTTPS proxy: by its task only)
        return self.settled or self.dropped

    async def _answered_before_giving_up(self) -> bool:
        """:meth:`_answered_meanwhile`, before the check is given up; over ICE-TCP, what the
        connection holds is taken in turns (see ``TcpTransport.read_waiting``)."""
        transport = self.transport
        if isinstance(transport, TcpTransport) and not transport.closed:
            await transport.read_waiting(self.check.destination)
        return self._answered_meanwhile()

    async def _turn(self) -> bool:
        """Let the other tasks run before this run reads its socket again (see run);
        whether the check is still on (not failed)."""
        await trio.lowlevel.checkpoint()
        return not self.failed

    def _again(self) -> None:
        """Send the check once more (not over a reliable transport: see ``once``); a copy
        asked for by now (``resend_at``: by an answer read just before) is this one."""
        if not self.once:
            self.sent_again = True
            self.transmit()
            resend_at = self.resend_at
            if resend_at is not None and resend_at <= self.agent._now():
                self.resend_at = None

    def transmit(self) -> None:
        check = self.check
        if logger.isEnabledFor(TRACE):
            logger.log(
                TRACE,
                "%s: send %s%s",
                self.agent.local_parameters.ufrag,
                check_name(check),
                " USE-CANDIDATE" if check.nominating else "",
            )
        transport = self.transport
        sent = transport.send_nowait(check.message, check.destination)
        if isinstance(transport, TcpTransport):
            self.link = transport.link_to(check.destination)
        if not sent and self.once:
            # Over TCP the check goes once, and this was it: no connection could take it (at
            # the cap, say).  It fails now rather than at the end of its schedule.
            self.fail()

    async def run(self) -> None:
        agent = self.agent
        check = self.check
        try:
            schedule = check.schedule
            core = agent._core
            # How late the copies go, the run having woken past a deadline (a stalled loop,
            # a paused process): the schedule moves on from when the copy went, so that a
            # stall sends one copy, not every copy it missed at once (RFC 8489 §6.2.1: each
            # waits its RTO).
            late = 0.0
            # Whether the other tasks had a turn since this task last read its socket: a
            # run that woke late reads at most once before they have one (one read, over
            # ICE-TCP, may frame thousands of datagrams), however many deadlines passed.
            turned = True
            for i in range(len(schedule) - 1):
                if i and self.once:
                    if core.finished:
                        return  # (nothing goes again over TCP: its answer is read as it comes)
                elif i:
                    if not turned and not await self._turn():
                        break
                    turned = False
                    if self._answered_meanwhile() or core.finished:
                        return  # (answered; or ICE is over, failed or closed)
                    if not core.cancelled(check):  # (else it only waits for a late answer)
                        self._again()
                    # (From when the copy went: the read before it may have taken a while.)
                    late = max(late, agent._now() - check.started - schedule[i])
                deadline = check.started + late + schedule[i + 1]
                while not self.failed:
                    if self.settled or self.dropped:
                        return  # (perhaps before this task even ran)
                    resend_at = self.resend_at
                    due = deadline if resend_at is None else min(deadline, resend_at)
                    if agent._now() < due:
                        self.due = due
                        agent._arm(self, due)
                        self.task = trio.lowlevel.current_task()
                        await trio.lowlevel.wait_task_rescheduled(self._abort)
                        turned = True
                        self.due = math.inf
                        if self.settled or self.dropped:
                            return
                        if self.failed:
                            break
                    now = agent._now()
                    if now >= deadline:
                        late += now - deadline
                        break  # the RTO passed: the next transmission
                    if resend_at is not None and now >= resend_at:
                        self.resend_at = None
                        if self.once:
                            continue  # (nothing goes again over TCP: see above)
                        if not turned and not await self._turn():
                            break
                        turned = False
                        if self._answered_meanwhile() or core.finished:
                            return  # (answered; or ICE is over)
                        if not core.cancelled(check):
                            self._again()
                if self.failed:
                    break
                self.resend_at = None
            # (Before giving up, the answer waiting unread is taken, as before a copy: after
            # a stall, the run's timer may come before the socket's reader.)
            if not self.failed and not turned:
                await self._turn()
            if not self.failed and (await self._answered_before_giving_up() or core.finished):
                return
            core.on_timeout(check, agent._now())
            agent._pump()
        finally:
            self.task = None
            runs = agent._runs
            runs.pop(check.transaction_id, None)  # (first: the drop below must not see it)
            if not runs:
                # (Emptied in place, its table given back: a new dict, made as the last
                # check ends, is kept by an idle agent, and made in the middle of the
                # connecting burst of thousands of agents it keeps an arena of Python's
                # allocator from being given back.)
                runs.clear()
                # No check in flight: what the agent's timer heap holds is stale (each
                # entry a finished run, its check and message), and would stay until the
                # agent task next woke (an idle agent: the next consent check).
                agent._timers.clear()
            transport = self.transport
            if isinstance(transport, TcpTransport):
                failed = check.pair.state is PairState.FAILED
                if failed or agent._core.cancelled(check):
                    # (By an error response, a timeout, or its connection; or cancelled by
                    # the final nomination, whose pair took the place of this one: the
                    # connection is of no use now, and holds a place, see TcpTransport.  A
                    # cancelled check's pair waits, unfailed: its connection goes quietly.)
                    transport.drop(check.destination, self.link, tell=failed)


def check_name(check: Check) -> str:
    """The task name of a check: its kind and its pair."""
    pair = check.pair
    kind = "consent" if check.consent else "nominate" if check.nominating else "check"
    local, remote = pair.local, pair.remote
    return (
        f"{kind} {host_port(local.address, local.port)} -> {host_port(remote.address, remote.port)}"
    )


def _names_this_end(agent: Agent, transport: TcpTransport, message: stun.Message) -> bool:
    """Whether an answer over an ICE-TCP connection names this end of it, as the peer saw it
    (XOR-MAPPED-ADDRESS): the candidate's address, or that of a candidate signalled for it
    (a 1:1 NAT's public one), which the peer connected to.  Only then does it show the peer
    at the connection's far end (see ``TcpTransport.prove``): a stranger who passed the
    agent's check on to the peer, over a path of its own, hands back an answer that names
    the stranger's address there."""
    mapped = message.get(stun.XorMappedAddress)
    if mapped is None:
        return False
    address = (mapped.address, mapped.port)
    if address == transport.local_address:
        return True
    base = transport.base
    return any(
        (candidate.address, candidate.port) == address
        and candidate.protocol == "tcp"
        and candidate.type is not CandidateType.PRFLX
        for candidate, of in agent._core.local_candidates
        if of == base
    )
