"""Rules for an incoming Binding request: authentication (RFC 8489 §9.1.3, RFC 8445 §7.3)
and role conflicts (RFC 8445 §7.3.1.1).  Pure functions; :class:`AgentCore` applies them."""

from __future__ import annotations

import enum

from trice import stun

__all__ = ["RoleDecision", "authenticate", "resolve_role_conflict"]


def authenticate(
    request: stun.Message, local_ufrag: str, remote_ufrag: str | None, local_key: bytes
) -> tuple[int, str, bool] | None:
    """Check a connectivity check's credentials; ``None`` if it may be processed, else the
    error code and reason to answer with, and whether the request was authenticated (its
    MESSAGE-INTEGRITY verified): then the error response carries MESSAGE-INTEGRITY too
    (RFC 8489 §9.1.3), else it carries none.

    A request without USERNAME or MESSAGE-INTEGRITY is a 400; a USERNAME that is not
    ``<our ufrag>:<their ufrag>`` (their part checked once known) or a MESSAGE-INTEGRITY that
    does not verify with our password is a 401; an unknown comprehension-required attribute
    is a 420; a check without PRIORITY, or with a PRIORITY of 0 (a priority is at least 1,
    RFC 8445 §5.1.2), is a 400.
    """
    username = request.get(stun.Username)
    if username is None or request.get(stun.MessageIntegrity) is None:
        return 400, "Bad Request", False
    local_part, _, remote_part = username.value.partition(":")
    if local_part != local_ufrag or (remote_ufrag is not None and remote_part != remote_ufrag):
        return 401, "Unauthorized", False
    if not request.verify_integrity(local_key):
        return 401, "Unauthorized", False
    if request.unknown_required:
        return 420, "Unknown Attribute", True
    priority = request.get(stun.Priority)
    if priority is None or priority.value == 0:
        return 400, "Bad Request", True
    return None


class RoleDecision(enum.Enum):
    """What a role conflict asks of the agent that received the request."""

    KEEP = "keep"  # no conflict, or the conflict is the peer's to resolve
    SWITCH = "switch"  # take the other role, then answer
    REJECT = "reject"  # answer 487 Role Conflict


def resolve_role_conflict(
    request: stun.Message, *, controlling: bool, tiebreaker: int, lite: bool
) -> RoleDecision:
    """RFC 8445 §7.3.1.1: both sides think they control (or both that they are controlled);
    the larger tie-breaker controls.  An ICE-lite agent never takes the controlling role."""
    if controlling:
        theirs = request.get(stun.IceControlling)
        if theirs is None:
            return RoleDecision.KEEP
        return RoleDecision.REJECT if tiebreaker >= theirs.tiebreaker else RoleDecision.SWITCH
    controlled = request.get(stun.IceControlled)
    if controlled is None or lite:
        return RoleDecision.KEEP
    return RoleDecision.SWITCH if tiebreaker >= controlled.tiebreaker else RoleDecision.REJECT
