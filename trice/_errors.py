"""The whole trice error tree.

Two families sit under :class:`TriceError`:

* *Usage errors*: the caller misused the API (bad configuration, a malformed candidate
  line handed in by signaling, a call in the wrong state).  They are raised where the
  mistake is made.
* *Protocol failures*: the network or the peer did not do what ICE needs (ICE failed,
  a transaction timed out, a TURN allocation was refused).  Garbage *received* from the
  network is counted and dropped by the agent; it is never raised into user code.  Only the
  pure codecs raise :class:`StunDecodeError` (and :class:`MdnsDecodeError`) to whoever
  calls them directly.
"""

from __future__ import annotations

__all__ = [
    "CandidateError",
    "ConfigError",
    "IceFailedError",
    "LimitError",
    "MdnsDecodeError",
    "ProtocolError",
    "StateError",
    "StunDecodeError",
    "TransactionError",
    "TriceError",
    "TurnError",
    "UsageError",
]


class TriceError(Exception):
    """Root of every error that trice raises on purpose."""


class UsageError(TriceError):
    """The caller misused the API."""


class ConfigError(UsageError, ValueError):
    """A configuration value is invalid (raised when :class:`trice.AgentConfig` is built), or
    so are the peer's ICE parameters given to :meth:`trice.Agent.set_remote_parameters`."""


class CandidateError(UsageError, ValueError):
    """A candidate line or JSON object is malformed.

    Attributes:
        field: the name of the field at fault (``"port"``, ``"typ"``...), or ``None``.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StateError(UsageError, RuntimeError):
    """A method was called in a state that does not allow it."""


class LimitError(UsageError):
    """A documented limit was reached: remote candidates (``max_remote_candidates``), or
    file descriptors while gathering.  (Past ``max_pairs`` pairs are pruned and counted,
    not refused.)"""


class ProtocolError(TriceError):
    """The network or the peer did not do what the protocol needs."""


class StunDecodeError(ProtocolError, ValueError):
    """Bytes are not a well-formed STUN message (or ChannelData frame)."""


class MdnsDecodeError(ProtocolError, ValueError):
    """Bytes are not a well-formed DNS message, as multicast DNS (RFC 6762) carries them."""


class TransactionError(ProtocolError):
    """A STUN transaction failed: it timed out or got an error response.

    Reserved for the STUN transaction API: this version of trice raises it nowhere (a TURN
    transaction that fails raises :class:`~trice.turn.AllocationError`, a
    :class:`TurnError`; a connectivity check that fails fails its pair).

    Attributes:
        code: the STUN error code of the response, or ``None`` for a timeout.
        reason: the reason phrase, or a description of what went wrong.
    """

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class TurnError(ProtocolError):
    """A TURN operation (allocation, permission, channel binding) failed."""


class IceFailedError(ProtocolError):
    """ICE ended in the failed state: no candidate pair works, or the peer's consent expired
    on the selected pair (RFC 7675), or the selected pair's TURN relay is gone."""


def printable(text: str) -> str:
    """``text`` with what a terminal would act on (escapes, carriage returns, line breaks)
    written out as Python escapes: for text from a server or a peer (a reason phrase) that
    goes into an error's message, and so into logs."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def a_type(value: object) -> str:
    """``value``'s type, named with its article ("a str", "an IceServer", "a UdpMux"; or
    "None"), for an error that must not quote the value (it may hold a secret)."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeioAEIO' else 'a'} {name}"  # ("a UdpMux", "an int")
