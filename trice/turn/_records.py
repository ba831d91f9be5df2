"""The client's bookkeeping records: transactions, permissions and channels (RFC 8656 §9, §12)."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from .. import stun
from ..stun import Method

__all__ = [
    "CHANNEL_REFRESH",
    "CHANNEL_LIFETIME",
    "CHANNEL_REUSE",
    "FIRST_CHANNEL",
    "IDLE",
    "LAST_CHANNEL",
    "MAX_STALE_RETRIES",
    "METHOD",
    "PERMISSION_LIFETIME",
    "PERMISSION_REFRESH",
    "PERMISSION_RETRY_MAX",
    "PERMISSION_RETRY_MIN",
    "Address",
    "Kind",
    "Peer",
    "Permission",
    "Transaction",
]

Address = tuple[str, int]

#: A permission lasts 300 s (RFC 8656 §9); it is refreshed 60 s before.
PERMISSION_LIFETIME: Final = 300.0
PERMISSION_REFRESH: Final = 240.0
#: A CreatePermission that failed (refused, or unanswered) is asked again by the next data for
#: the peer after this many seconds, doubling with each failure in a row up to the maximum: a
#: server's refusal may be passing (508 Insufficient Capacity, a restart), and the ICE agent
#: keeps sending its checks and consent checks meanwhile, which would never go again.
PERMISSION_RETRY_MIN: Final = 5.0
PERMISSION_RETRY_MAX: Final = 60.0
#: A channel binding lasts 600 s (RFC 8656 §12); it is refreshed 60 s before.
CHANNEL_LIFETIME: Final = 600.0
CHANNEL_REFRESH: Final = 540.0
#: A channel number, or a peer, is bound anew to another only this long after the binding
#: expired (RFC 8656 §12: against races with data still on the way).
CHANNEL_REUSE: Final = 300.0
#: A permission or channel that no data went to for this long is not refreshed when its
#: refresh is due (what comes from the peer alone is no use: see TurnClient._in_use): it
#: lapses (the server forgets it when its lifetime ends).  An ICE agent checks many peers
#: through a relay, and goes on with one of them at most.
IDLE: Final = 240.0
#: The first retransmission timeout of a deallocation (a Refresh of LIFETIME 0, RFC 8656
#: §8), if shorter than the client's: a client that closes waits half a second for the
#: answer (the trio shell's ``DEALLOCATE_WAIT``; longer for a far server), in which its
#: copies go at 0, 125 and 375 ms (and 875 ms, 1.875 s, while a longer wait lasts).
DEALLOCATE_RTO: Final = 0.125
#: The least first retransmission timeout of an Allocate that follows an answer to one (a
#: 401 challenge, a 438 stale nonce): such an Allocate starts at three times the round trip
#: that answer measured from the first copy (RFC 8489 §6.2.1's RTO from a measurement, RFC
#: 6298 §2.2's of the first; longer where the answer was to a later copy), no less than
#: this and no more than the client's RTO.  Gathering waits ``gather_timeout`` for the
#: two transactions in a row: at 500 ms doubling, a lost copy or two of the second left it
#: no copy in time.
ALLOCATE_RTO_MIN: Final = 0.1
#: Transactions a client over UDP has outstanding with its server at most (RFC 8489 §6.2's
#: SHOULD: ten).  Permissions and channel bindings past it wait for one to end, the
#: refreshes of those installed first; an Allocate, a Refresh or a deallocation never waits
#: (each must reach the server in time).  (Over TCP or TLS there is no cap: the stream
#: paces them.)
MAX_OUTSTANDING: Final = 10
#: How long the refresh of a permission or channel waits at ``MAX_OUTSTANDING`` at most:
#: then it goes, whatever is out.  Its own transaction (39.5 s over UDP) still ends within
#: the 60 s left of the permission's (or channel's) lifetime, which new requests, waiting
#: for answers that do not come, could otherwise take.
REFRESH_WAIT: Final = 20.0
#: Channel numbers (RFC 8656 §12).
FIRST_CHANNEL: Final = 0x4000
LAST_CHANNEL: Final = 0x4FFF
#: 438 Stale Nonce answers accepted in a row for one request before giving up (RFC 8489 §9.2.5
#: expects one retry; a server that keeps answering 438 is broken).
MAX_STALE_RETRIES: Final = 3


class Kind(enum.Enum):
    ALLOCATE = "Allocate"
    REFRESH = "Refresh"
    DEALLOCATE = "Refresh (deallocate)"
    PERMISSION = "CreatePermission"
    CHANNEL = "ChannelBind"


METHOD: Final = {
    Kind.ALLOCATE: Method.ALLOCATE,
    Kind.REFRESH: Method.REFRESH,
    Kind.DEALLOCATE: Method.REFRESH,
    Kind.PERMISSION: Method.CREATE_PERMISSION,
    Kind.CHANNEL: Method.CHANNEL_BIND,
}


@dataclass(slots=True, eq=False)
class Permission:
    """Permission for one peer IP (RFC 8656 §9) and the data waiting for it."""

    ip: str
    installed: bool = False
    failed: bool = False
    busy: bool = False  # a CreatePermission transaction is running
    refresh_at: float = float("inf")
    # When the server's permission ends, by the last CreatePermission or ChannelBind for
    # the IP that succeeded (RFC 8656 §9, §12.2: a ChannelBind installs it too).
    expires_at: float = float("-inf")
    failures: int = 0  # failed CreatePermissions in a row
    retry_at: float = float("inf")  # once failed: when data may ask again
    queue: deque[tuple[Address, bytes]] = field(default_factory=deque)


@dataclass(slots=True, eq=False)
class Peer:
    """One peer transport address and its channel (RFC 8656 §12)."""

    address: Address
    channel: int = 0  # 0: none
    bound: bool = False
    busy: bool = False  # a ChannelBind transaction is running
    # Bound: when to refresh.  A number, unbound: when to bind again (a ChannelBind that got
    # no answer, which the server may have bound), or never (``inf``: the channel lapsed).
    refresh_at: float = float("inf")
    failures: int = 0  # ChannelBinds in a row that got no answer
    used_at: float = float("-inf")  # data last went to the peer
    # When the server's binding of the channel ends at the latest (its last bind or refresh
    # that succeeded, or that got no answer and may have bound it, plus its lifetime).
    expires_at: float = float("-inf")


@dataclass(slots=True, eq=False)
class Transaction:
    kind: Kind
    wire: bytes
    schedule: stun.RetransmissionSchedule
    authenticated: bool
    stale: int
    target: Permission | Peer | None
    # The long-term key and realm it was signed with (its answer is checked with that key,
    # and a 401 naming another realm retries it, though the client moved on meanwhile).
    key: bytes | None = None
    realm: str | None = None
    # An answer came that failed the integrity check (over UDP, another copy may still
    # come): if none else does, that is why it failed, not a timeout (RFC 8489 §9.2.5).
    forged: bool = False
    started: float = 0.0  # (when its first copy went)
    quiet: bool = False  # (no more copies go: an Allocate the client closed during)
