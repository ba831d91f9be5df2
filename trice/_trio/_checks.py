"""Connectivity checks in flight: one task each, retransmitting on the check's schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from trice import stun
from trice._trio._log import TRACE, logger
from trice._trio._transport import Transport
from trice.ice._core import Check

if TYPE_CHECKING:
    from trice._trio._agent import Agent

__all__ = ["CheckRun", "check_name"]

Address = tuple[str, int]

#: How old a check in flight must be before the peer's crossing request makes it go out again
#: at once (see :meth:`CheckRun.poke`); far below any RTO, far above a loopback round trip.
RESEND_GRACE = 0.005


class CheckRun:
    """One connectivity check in flight: its first transmission goes out when it is made,
    then its task retransmits on the check's schedule until a response settles it or the
    schedule runs out (RFC 8445 §14.3)."""

    __slots__ = (
        "agent",
        "check",
        "resend_at",
        "scope",
        "settled",
        "start",
        "transport",
        "wake",
    )

    def __init__(self, agent: Agent, check: Check, transport: Transport) -> None:
        self.agent = agent
        self.check = check
        self.transport = transport
        self.settled = False
        self.resend_at: float | None = None
        self.wake = trio.Event()
        self.start = trio.current_time()
        self.scope = trio.CancelScope()
        agent._pending[check.transaction_id] = self.on_response
        agent._pokes[check.transaction_id] = self.poke
        if not check.consent:
            agent._check_scopes[check.pair] = self.scope

    def on_response(self, message: stun.Message, source: Address) -> None:
        agent = self.agent
        if agent._core.on_response(self.check, message, source, trio.current_time()):
            self.settled = True
            self.wake.set()
            agent._pump()

    def poke(self) -> None:
        """The core asks for the check again: the peer's request came in on this pair.

        A check younger than :data:`RESEND_GRACE` is most likely crossing the peer's own
        check on the wire (both sides start together), its response on the way: it is sent
        again only if still unanswered when it reaches that age.  An older one goes out again
        now."""
        if self.settled:
            return
        due = self.start + RESEND_GRACE
        if trio.current_time() >= due:
            self.transmit()
        elif self.resend_at is None:
            self.resend_at = due
            self.wake.set()

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
        self.transport.send_nowait(check.message, check.destination)

    async def run(self) -> None:
        agent = self.agent
        check = self.check
        tid = check.transaction_id
        try:
            with self.scope:
                schedule = check.schedule
                for i in range(len(schedule) - 1):
                    if i:
                        self.transmit()
                    deadline = self.start + schedule[i + 1]
                    while True:
                        resend_at = self.resend_at
                        wake_at = deadline if resend_at is None else min(deadline, resend_at)
                        with trio.move_on_at(wake_at):
                            await self.wake.wait()
                        if self.settled:
                            return
                        if self.wake.is_set():
                            self.wake = trio.Event()  # poked: a resend is now due
                            continue
                        if resend_at is None or wake_at >= deadline:
                            break  # the RTO passed: the next transmission
                        self.resend_at = None
                        self.transmit()
                    self.resend_at = None
                agent._core.on_timeout(check, trio.current_time())
                agent._pump()
        finally:
            agent._pending.pop(tid, None)
            agent._pokes.pop(tid, None)
            if agent._check_scopes.get(check.pair) is self.scope:
                del agent._check_scopes[check.pair]


def check_name(check: Check) -> str:
    """The task name of a check: its kind and its pair."""
    pair = check.pair
    kind = "consent" if check.consent else "nominate" if check.nominating else "check"
    return (
        f"{kind} {pair.local.address}:{pair.local.port} -> {pair.remote.address}:{pair.remote.port}"
    )
