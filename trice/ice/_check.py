"""Value types of the agent core: ICE parameters, a check to run, and its schedule."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from trice._config import Timing
from trice.ice._checklist import Pair

__all__ = ["Check", "IceParameters", "check_schedule", "prflx_foundation"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class IceParameters:
    """ICE parameters of one side (RFC 8445 §5.3).

    Attributes:
        ufrag: the username fragment (4 to 256 ice-chars).
        pwd: the password (22 to 256 ice-chars).
        lite: whether this side is an ICE-lite agent (RFC 8445 §2.5).
    """

    ufrag: str
    pwd: str = field(repr=False)  # (a secret: not in logs)
    lite: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    """A connectivity check the shell must run.

    Send ``message`` from transport ``base`` to ``destination`` at each offset of
    ``schedule`` but the last (seconds after the start), except once
    :meth:`AgentCore.cancelled` says the check is cancelled (then only wait for a late
    answer); the last offset is when the check gives up.  Report the outcome with
    :meth:`AgentCore.on_response` or :meth:`AgentCore.on_timeout`.
    """

    pair: Pair
    transaction_id: bytes
    message: bytes
    destination: Address
    base: int
    schedule: tuple[float, ...]
    nominating: bool = False
    consent: bool = False
    controlling: bool = False
    started: float = 0.0


def check_schedule(
    timing: Timing, sends: int | None = None, rto: float | None = None
) -> tuple[float, ...]:
    """Send offsets and the give-up time of a check (RFC 8445 §14.3, RFC 8489 §6.2.1).

    The RTO starts at ``rto`` (by default ``timing.rto``) and doubles up to
    ``timing.rto_max``, or up to ``rto`` itself if that is more.
    """
    count = timing.max_binding_requests if sends is None else sends
    interval = timing.rto if rto is None else rto
    cap = max(timing.rto_max, interval)
    offsets = []
    t = 0.0
    for _ in range(count):
        offsets.append(t)
        t += interval
        interval = min(interval * 2, cap)
    offsets.append(t)
    return tuple(offsets)


def prflx_foundation(address: str, protocol: str = "udp") -> str:
    """A foundation for a peer-reflexive candidate learned from ``address`` (over TCP, one
    of its own: the transport protocol is part of a foundation, RFC 8445 §5.1.1.3)."""
    key = address if protocol == "udp" else f"{address} {protocol}"
    return "p" + hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:8]
