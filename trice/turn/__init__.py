"""The pure TURN client: one allocation's state machine and stream framing (RFC 8656).

Nothing here does I/O or reads a clock: this package imports no trio, socket or time module.
The trio shell that drives it over UDP, TCP or TLS is :func:`trice._trio._relay.run_relay`.
"""

from __future__ import annotations

from ._client import TurnClient
from ._framer import StreamFramer
from ._state import TRANSITIONS, AllocationError, TurnEvent, TurnState, TurnStatistics

__all__ = [
    "TRANSITIONS",
    "AllocationError",
    "StreamFramer",
    "TurnClient",
    "TurnEvent",
    "TurnState",
    "TurnStatistics",
]
