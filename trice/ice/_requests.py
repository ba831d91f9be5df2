"""Rules for an incoming Binding request: authentication (RFC 8489 §9.1.3, RFC 8445 §7.3)
and role conflicts (RFC 8445 §7.3.1.1).  Pure functions; :class:`AgentCore` applies them."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from trice import stun

__all__ = ["CHECK_TYPES", "RoleDecision", "authenticate", "learned", "resolve_role_conflict"]


#: The attribute types an answer to a check reads, in one pass (see
#: :meth:`trice.stun.Message.first_values`): USERNAME, MESSAGE-INTEGRITY, PRIORITY,
#: USE-CANDIDATE, ICE-CONTROLLED, ICE-CONTROLLING.
CHECK_TYPES: Final = (0x0006, 0x0008, 0x0024, 0x0025, 0x8029, 0x802A)
_USERNAME, _INTEGRITY, _PRIORITY, _USE_CANDIDATE, _CONTROLLED, _CONTROLLING = range(6)

CheckValues = Sequence[bytes | None]


def authenticate(
    request: stun.Message,
    local_ufrag: str,
    remote_ufrag: str | None,
    local_key: bytes,
    values: CheckValues | None = None,
) -> tuple[int, str, bool] | None:
    """Check a connectivity check's credentials; ``None`` if it may be processed, else the
    error code and reason to answer with, and whether the request was authenticated (its
    MESSAGE-INTEGRITY verified): then the error response carries MESSAGE-INTEGRITY too
    (RFC 8489 §9.1.3), else it carries none.

    A request without USERNAME, or without both MESSAGE-INTEGRITY and
    MESSAGE-INTEGRITY-SHA256, is a 400; a USERNAME that is not
    ``<our ufrag>:<their ufrag>`` (their part checked once known) or a MESSAGE-INTEGRITY that
    does not verify with our password is a 401; an unknown comprehension-required attribute
    is a 420; a check without PRIORITY, or with a PRIORITY of 0 (a priority is at least 1,
    RFC 8445 §5.1.2), is a 400.

    ``values``: the request's :data:`CHECK_TYPES` values, if the caller has read them.
    """
    if values is None:
        values = request.first_values(CHECK_TYPES)
    username = values[_USERNAME]
    if username is None or (values[_INTEGRITY] is None and not request.has_integrity_sha256):
        return 400, "Bad Request", False
    # (decoded as stun.Username decodes it)
    local_part, _, remote_part = username.decode("utf-8", "surrogateescape").partition(":")
    if local_part != local_ufrag or (remote_ufrag is not None and remote_part != remote_ufrag):
        return 401, "Unauthorized", False
    if not request.verify_integrity(local_key):
        return 401, "Unauthorized", False
    if request.unknown_required:
        return 420, "Unknown Attribute", True
    priority = values[_PRIORITY]
    if priority is None or not any(priority):
        return 400, "Bad Request", True
    return None


def learned(values: CheckValues) -> tuple[int, bool]:
    """What an authenticated check tells (RFC 8445 §7.3.1.3-7.3.1.5): its PRIORITY, and
    whether it carries USE-CANDIDATE, from its :data:`CHECK_TYPES` values."""
    priority = values[_PRIORITY]
    assert priority is not None  # authenticate() saw to it
    return int.from_bytes(priority, "big"), values[_USE_CANDIDATE] is not None


def named_ufrag(values: CheckValues) -> str:
    """The peer's ufrag a check names: the second part of its USERNAME (``values``: its
    :data:`CHECK_TYPES` values, of a request :func:`authenticate` passed)."""
    username = values[_USERNAME]
    assert username is not None  # authenticate() saw to it
    return username.decode("utf-8", "surrogateescape").partition(":")[2]


class RoleDecision(enum.Enum):
    """What a role conflict asks of the agent that received the request."""

    KEEP = "keep"  # no conflict, or the conflict is the peer's to resolve
    SWITCH = "switch"  # take the other role, then answer
    REJECT = "reject"  # answer 487 Role Conflict


def resolve_role_conflict(
    request: stun.Message,
    *,
    controlling: bool,
    tiebreaker: int,
    lite: bool,
    values: CheckValues | None = None,
    peer_lite: bool = False,
) -> RoleDecision:
    """RFC 8445 §7.3.1.1: both sides think they control (or both that they are controlled);
    the larger tie-breaker controls.  An ICE-lite agent never takes the controlling role
    (a controlled peer is answered 487, whatever its tie-breaker, so that it takes it), and
    a full agent facing one (``peer_lite``) never gives it up (§6.1.1): a request that
    claims it from there is answered 487, whatever its tie-breaker.

    ``values``: the request's :data:`CHECK_TYPES` values, if the caller has read them."""
    if values is None:
        values = request.first_values(CHECK_TYPES)
    if controlling:
        theirs = values[_CONTROLLING]
        if theirs is None:
            return RoleDecision.KEEP
        if peer_lite or tiebreaker >= int.from_bytes(theirs, "big"):
            return RoleDecision.REJECT
        return RoleDecision.SWITCH
    controlled = values[_CONTROLLED]
    if controlled is None:
        return RoleDecision.KEEP
    if lite:
        # (It cannot take control: the peer must, and a 487 tells it so.  A full peer
        # whose signaling lost the ice-lite flag had stayed controlled, and no one
        # nominated.)
        return RoleDecision.REJECT
    if tiebreaker >= int.from_bytes(controlled, "big"):
        return RoleDecision.SWITCH
    return RoleDecision.REJECT
