"""The allocation's states and transitions as data, its error and its statistics (RFC 8656 §7)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from .._errors import TurnError

__all__ = ["TRANSITIONS", "AllocationError", "TurnEvent", "TurnState", "TurnStatistics"]


class TurnState(str, enum.Enum):
    """Where one TURN allocation stands (RFC 8656 §7)."""

    IDLE = "idle"
    """Built; :meth:`~trice.turn.TurnClient.start` sends the first Allocate request."""
    ALLOCATING = "allocating"
    """An Allocate transaction is running (with its 401/438 retries, RFC 8656 §7.1)."""
    ALLOCATED = "allocated"
    """The server granted a relayed address; refreshes keep it alive (RFC 8656 §7.3, §8)."""
    CLOSING = "closing"
    """A Refresh with LIFETIME 0 is deleting the allocation (RFC 8656 §8)."""
    FAILED = "failed"
    """The allocation was refused, timed out or was lost; :attr:`~TurnClient.error` says why."""
    CLOSED = "closed"
    """Deallocated (or given up on while closing); nothing is left on the server."""

    def __str__(self) -> str:
        return self.value


class TurnEvent(str, enum.Enum):
    """What moves an allocation from one :class:`TurnState` to another."""

    START = "start"
    GRANTED = "granted"
    FAIL = "fail"
    CLOSE = "close"
    DONE = "done"

    def __str__(self) -> str:
        return self.value


_TRANSITIONS: dict[TurnState, dict[TurnEvent, TurnState]] = {
    TurnState.IDLE: {
        TurnEvent.START: TurnState.ALLOCATING,
        TurnEvent.CLOSE: TurnState.CLOSED,
    },
    TurnState.ALLOCATING: {
        TurnEvent.GRANTED: TurnState.ALLOCATED,
        TurnEvent.FAIL: TurnState.FAILED,
        TurnEvent.CLOSE: TurnState.CLOSING,
    },
    TurnState.ALLOCATED: {
        TurnEvent.FAIL: TurnState.FAILED,
        TurnEvent.CLOSE: TurnState.CLOSING,
    },
    TurnState.CLOSING: {
        TurnEvent.DONE: TurnState.CLOSED,
        TurnEvent.FAIL: TurnState.CLOSED,
    },
    TurnState.FAILED: {},
    TurnState.CLOSED: {},
}
#: The allocation's state machine: state -> {event: next state}, read-only (every client
#: of the process reads it).  A pair missing here is a no-op (for instance ``close`` on a
#: failed allocation).  The reference docs draw the state diagram from this table.
TRANSITIONS: Final[Mapping[TurnState, Mapping[TurnEvent, TurnState]]] = MappingProxyType(
    {state: MappingProxyType(events) for state, events in _TRANSITIONS.items()}
)


class AllocationError(TurnError):
    """A TURN allocation failed: refused, timed out, lost, or redirected (RFC 8656 §7).

    Attributes:
        code: the STUN error code of the server's answer (401, 438, 300, 437, 486...), or
            ``None`` when there was no answer (a timeout) or the failure was local.
        reason: the server's reason phrase, or a short word for a local failure:
            ``"timeout"``, ``"unreachable"``, ``"certificate"``, ``"connection lost"``,
            ``"response failed the integrity check"`` (every answer was signed with another
            key)...
        alternate_server: for 300 Try Alternate, the ALTERNATE-SERVER address (RFC 8489
            §14.15); trice reports it rather than following it.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        reason: str = "",
        alternate_server: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.alternate_server = alternate_server


@dataclass(frozen=True, slots=True)
class TurnStatistics:
    """Counters of one TURN client (see :meth:`TurnClient.statistics`).

    Attributes:
        malformed: datagrams or frames from the server that were not well-formed STUN or
            ChannelData, Data indications without a peer or data or from a peer no
            permission was asked for, ChannelData on an unknown channel, and responses whose
            MESSAGE-INTEGRITY did not check: counted and dropped.
        stray: responses that match no running transaction (late or duplicate).
        retransmissions: requests sent again after a timeout (UDP only, RFC 8489 §6.2.1).
        dropped: data handed to :meth:`TurnClient.send_to_peer` and not sent: the queue behind
            a pending permission was full, the permission failed, or the allocation was not
            (or no longer) allocated.
        sent_indications: data sent in Send indications (RFC 8656 §11).
        sent_channel_data: data sent as ChannelData (RFC 8656 §12).
        received: peer data returned by :meth:`TurnClient.on_server_data`: every datagram
            a peer sent through the relay, its ICE checks and answers included (as the
            ``sent_`` counts include the agent's), so more than the agent's
            ``datagrams_received``.
        refused: CreatePermission requests the server answered with an error (403 Forbidden
            for a peer address its rules deny, say): that peer's data is dropped (and
            counted in ``dropped``) until a retry is granted (see
            :attr:`TurnClient.refusals`); a refused refresh keeps the permission, and its
            data going, until the permission's end (the server holds it so long).
    """

    malformed: int
    stray: int
    retransmissions: int
    dropped: int
    sent_indications: int
    sent_channel_data: int
    received: int
    refused: int = 0
