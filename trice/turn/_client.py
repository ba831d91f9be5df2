"""A sans-IO TURN client for one allocation: Allocate, Refresh, permissions, channels
(RFC 8656 §7-§12) with long-term credentials (RFC 8489 §9.2).

No socket and no clock: the caller feeds what the server sent (:meth:`TurnClient.on_server_data`)
and the time (every method takes ``now``, a monotonic float in seconds), and sends what
:meth:`TurnClient.poll_transmit` hands back.
"""

from __future__ import annotations

import base64
import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import fields
from typing import Final

from .. import stun
from .._errors import StateError, printable
from .._servers import host_port
from ..ice._candidate import canonical_ip
from ..stun import Message, MessageClass, Method
from ..stun._integrity import secret_problem
from ._records import (
    ALLOCATE_RTO_MIN,
    CHANNEL_LIFETIME,
    CHANNEL_REFRESH,
    CHANNEL_REUSE,
    DEALLOCATE_RTO,
    FIRST_CHANNEL,
    IDLE,
    LAST_CHANNEL,
    MAX_OUTSTANDING,
    MAX_STALE_RETRIES,
    METHOD,
    PERMISSION_LIFETIME,
    PERMISSION_REFRESH,
    PERMISSION_RETRY_MAX,
    PERMISSION_RETRY_MIN,
    REFRESH_WAIT,
    Address,
    Kind,
    Peer,
    Permission,
    Transaction,
)
from ._state import TRANSITIONS, AllocationError, TurnEvent, TurnState, TurnStatistics

#: REQUESTED-ADDRESS-FAMILY's value for an IPv6 relayed address (RFC 8656 §18.6).
IPV6_FAMILY = 2
#: The message type of a Send indication (RFC 8656 §11.1): data, as ChannelData is.
SEND_INDICATION = stun.message_type(Method.SEND, MessageClass.INDICATION)
#: The longest data :meth:`TurnClient.send_to_peer` takes: what a Send indication to an IPv6
#: peer carries (STUN's length field; ChannelData carries more).
PEER_DATA_MAX = 65_504

__all__ = ["TurnClient"]


def _as_written(text: str) -> str:
    """A realm or password for the key, as written (see :class:`TurnClient`); ValueError
    for one with a control character, as SASLprep refuses it."""
    problem = secret_problem(text)
    if problem is not None:
        raise ValueError(f"no key can be made of it: {problem}")
    return text


class TurnClient:
    """A TURN client for one allocation, as a pure state machine (RFC 8656).

    Drive it like this (the trio shell, :func:`trice._trio._relay.run_relay`, does exactly
    this)::

        client = TurnClient("user", "secret", reliable=False)
        client.start(now)
        loop:
            while (data := client.poll_transmit(now)) is not None: send it to the server
            wait for server data or client.next_deadline()
            peer_data = client.on_server_data(data, now)  # or client.on_timer(now)

    **Allocation** (RFC 8656 §7.1, RFC 8489 §9.2): the first Allocate goes without
    credentials; the server's 401 carries REALM and NONCE and the request is sent again with
    USERNAME, REALM, NONCE and MESSAGE-INTEGRITY, as is every later request.  A 438 Stale
    Nonce answer to any request is retried with the new nonce (up to three times in a row).
    A 401 to a request that had credentials means they are wrong, unless it names another
    realm: then the request goes again with the credentials made for that realm (counted
    with the stale-nonce retries: three in a row at most).  The key (RFC 8489 §9.2.2) is made
    of the realm and password as written, as coturn and Pion make theirs (RFC 8489's
    OpaqueString leaves most as written); where SASLprep (RFC 5389's, which maps
    compatibility characters: a fullwidth letter to its ASCII one) makes another key, a 401
    to the first has the request go once more with that one, for a server of RFC 5389's.
    300 Try Alternate is
    reported, not followed (:attr:`AllocationError.alternate_server`).  Any other error or
    a transaction timeout fails the allocation; :attr:`error` says why.

    **Keeping it alive**: a Refresh goes ``min(60, lifetime / 5)`` seconds before the
    granted lifetime ends (RFC 8656 §8); permissions are refreshed every 240 s (they last
    300 s, §9) and channel bindings every 540 s (they last 600 s, §12), while they are in
    use: one that no data went to for 240 s lapses instead (an ICE agent checks many peers
    through the relay and keeps one; data that only comes from the peer does not keep it:
    a peer the application gave up on would keep the server relaying to it, and one it
    still wants gets something, as an ICE agent's consent checks).  Data for it later asks
    again.  Records that nothing used for 240 s are forgotten (a relay lives through ICE
    restarts, and each generation checks new peers), but a channel's, whose number goes to
    a new peer only 5 minutes after its binding expired (§12).

    **Data** (RFC 8656 §9-§12): the first data for a peer IP sends CreatePermission and
    waits in a small queue (``queue_limit`` datagrams per IP; more are dropped and counted)
    until the permission is installed, because servers drop relayed data before that.  Then
    it goes in Send indications while a ChannelBind for the peer runs, and as ChannelData
    (padded to 4 bytes over TCP and TLS, §12.5) once the channel is bound.  A ChannelBind
    that got no answer may still have bound the channel on the server, and a refused
    refresh leaves the binding there till its end: its number stays the peer's (ChannelData
    on it is taken), data goes in Send indications, and the bind is tried again with the
    number 5 s later, then 10, 20, 40 and at most 60 s after each failure in a row (so
    too a bind refused after copies that got no answer: one of them may have bound it
    before the server came to refuse).  A bind refused once the binding ended gives the
    number up; the peer takes another (or the same) only 5 minutes after that end (§12).
    Data for a peer whose permission failed (refused, or unanswered), and that has no
    channel bound, is dropped and counted; the first such data 5 s later asks again, then
    10, 20, 40 and at most 60 s after each failure in a row.

    **Closing** (RFC 8656 §8): :meth:`close` sends a Refresh with LIFETIME 0; closing while
    the Allocate is still running deallocates as soon as it succeeds.

    Garbage from the server never raises: it is counted in :meth:`statistics` and dropped.

    Args:
        username: the long-term credential user name (sent in USERNAME).
        password: its password (only its key, RFC 8489 §9.2.2, is used).
        reliable: the connection to the server is TCP or TLS: one send per request with a
            ``ti`` timeout (RFC 8489 §6.2.2) and padded ChannelData; UDP otherwise.
        lifetime: the allocation lifetime to ask for, in seconds (RFC 8656 §7.1).
        rto: the initial retransmission timeout over UDP (RFC 8489 §6.2.1).
        ti: the transaction timeout over TCP/TLS (RFC 8489 §6.2.2).
        queue_limit: datagrams per peer IP held while its permission is pending.
        software: a SOFTWARE attribute for requests (fewer than 128 characters), or ``None``.
        new_transaction_id: where transaction IDs come from (tests pass a deterministic one).

    Raises:
        TypeError: the user name, password or software is not a ``str``.
        ValueError: no key can be made of the password, or the lifetime, queue limit or
            software is out of its bounds.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        reliable: bool,
        lifetime: int = 600,
        rto: float = 0.5,
        ti: float = 39.5,
        queue_limit: int = 8,
        software: str | None = None,
        new_transaction_id: Callable[[], bytes] = stun.new_transaction_id,
    ) -> None:
        for name, text in (("username", username), ("password", password)):
            if not isinstance(text, str):  # (else a 401's answer fails in on_server_data)
                raise TypeError(f"{name} must be a str, not {type(text).__name__}")
        if software is not None and not isinstance(software, str):
            raise TypeError(f"software must be a str or None, not {type(software).__name__}")
        if not 0 < lifetime <= 0xFFFFFFFF:
            raise ValueError(f"lifetime must be a positive number of seconds, not {lifetime!r}")
        if queue_limit < 0:
            raise ValueError(f"queue_limit must not be negative, not {queue_limit!r}")
        problem = secret_problem(password)
        if problem is not None:  # (fail early: no key can be made of it)
            raise ValueError(f"no TURN key can be made of the password: {problem}")
        if software is not None and len(software) >= 128:
            raise ValueError("software must be fewer than 128 characters (RFC 8489 §14.14)")
        self.username = username
        #: How the realm and password are prepared for the key: as written, or with
        #: SASLprep (RFC 5389 §15.4) once a server refused the first.
        self._prepare: Callable[[str], str] = _as_written
        self._key_proven = False  # (a success signed with it came: no fallback then)
        self.reliable = reliable
        self._password = password
        self._requested_lifetime = lifetime
        self._rto = rto
        self._allocate_rto = rto  # (see ALLOCATE_RTO_MIN)
        self._round_trip: float | None = None
        self._clean = False  # (round_trip is of answers to requests sent once)
        self._closing_until = math.inf  # (see close)
        self._ti = ti
        self._queue_limit = queue_limit
        self._software = stun.Software(software) if software else None
        self._new_tid = new_transaction_id
        self._state = TurnState.IDLE
        self._relaying = False  # (see _move)
        self._realm: str | None = None
        self._nonce: str | None = None
        self._key: bytes | None = None
        self._transactions: dict[bytes, Transaction] = {}
        # Permissions and channel bindings waiting for a transaction to end (over UDP, at
        # MAX_OUTSTANDING): each is built when it goes, with the nonce of then.  Refreshes
        # of those installed (or bound) wait apart, and go first: each at the latest at the
        # time it holds (REFRESH_WAIT after it was due), out or not.
        self._waiting: deque[tuple[Kind, Permission | Peer, int]] = deque()
        self._refreshes: deque[tuple[Kind, Permission | Peer, int, float]] = deque()
        self._outbox: deque[bytes] = deque()
        self._permissions: dict[str, Permission] = {}
        self._peers: dict[Address, Peer] = {}
        self._channels: dict[int, Peer] = {}
        self._next_channel = FIRST_CHANNEL
        # Numbers given back by their peers, a heap by the time each may serve another peer
        # (its binding's end plus CHANNEL_REUSE, RFC 8656 §12; -inf: never bound).
        self._released: list[tuple[float, int]] = []
        # The relayed address family asked for (REQUESTED-ADDRESS-FAMILY, RFC 8656 §7.1):
        # none (the server's default, IPv4) until a server without IPv4 relays says 440.
        self._family: int | None = None
        self._refresh_at = float("inf")
        self._expires_at = float("inf")  # (the allocation's end, as last granted)
        self._refreshing = False
        self._asked_early = False  # (the Refresh out was asked before due: see refresh_now)
        self._deadline: float | None = None
        self._dirty = True
        self._counts = {f.name: 0 for f in fields(TurnStatistics)}
        self.relayed_address: Address | None = None
        """The relayed transport address (XOR-RELAYED-ADDRESS), once allocated."""
        self.mapped_address: Address | None = None
        """Our address as the server saw it (XOR-MAPPED-ADDRESS), once allocated."""
        self.lifetime: int | None = None
        """The lifetime the server granted in its last Allocate or Refresh answer, seconds."""
        self.refusals: dict[str, str] = {}
        """Permissions the server refused since the caller last emptied this.  Each peer IP
        with the server's latest code and reason (``"403 Forbidden"``), for the caller to
        say (the trio shell logs them), and clear (one entry a peer IP: a caller that never
        clears it holds no more than the peers refused)."""
        self.error: AllocationError | None = None
        """Why the allocation failed, in :attr:`TurnState.FAILED`."""

    # --- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> TurnState:
        """The allocation's :class:`TurnState`."""
        return self._state

    @property
    def challenged(self) -> bool:
        """Whether the server challenged us and requests now carry our credentials.  From
        then on an Allocate may be granted, even late, so an application that gives up
        waiting should still :meth:`close`, which deletes what a late grant made."""
        return self._key is not None

    @property
    def answered_unverified(self) -> bool:
        """Whether an Allocate still waiting for its answer got answers, all of which failed
        the integrity check (RFC 8489 §9.2.5: signed with another key).  A driver that gives
        up before the transaction times out says so rather than that none came."""
        return any(tx.forged for tx in self._transactions.values() if tx.kind is Kind.ALLOCATE)

    @property
    def round_trip(self) -> float | None:
        """The round trip to the server over UDP, in seconds, smoothed (RFC 6298's SRTT)
        over the answers to requests sent once; until one comes, the least time an answer
        to a request sent again took from its first copy (more than the round trip, maybe:
        which copy it answers is not known, RFC 6298 §3); or ``None`` (none yet; over TCP
        or TLS, none).  A client that closes waits for the
        deletion longer the farther the server is (the trio shell: two and a half of them,
        see ``DEALLOCATE_WAIT``)."""
        return self._round_trip

    def statistics(self) -> TurnStatistics:
        """A snapshot of the counters (:class:`TurnStatistics`)."""
        return TurnStatistics(**self._counts)

    def channel_bound(self, peer: Address) -> bool:
        """Whether data to *peer* now goes as ChannelData (RFC 8656 §12)."""
        p = self._peers.get(peer) or self._peers.get(_written(peer))
        return p is not None and p.bound

    def permission_installed(self, peer: Address) -> bool:
        """Whether the server has a permission for *peer*'s IP address (RFC 8656 §9)."""
        perm = self._permissions.get(peer[0]) or self._permissions.get(_written(peer)[0])
        return perm is not None and perm.installed

    # --- driving ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the first Allocate request, without credentials (RFC 8656 §7.1).

        Raises:
            StateError: the client was already started.
        """
        if self._state is not TurnState.IDLE:
            raise StateError(f"start() in state {self._state}")
        self._move(TurnEvent.START)
        self._request(Kind.ALLOCATE, now)

    def poll_transmit(self, now: float) -> bytes | None:
        """The next datagram (UDP) or frame (TCP/TLS) to send to the server, or ``None``."""
        outbox = self._outbox
        return outbox.popleft() if outbox else None

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must next be called, or ``None`` when nothing is timed."""
        if self._dirty:
            self._dirty = False
            deadlines = [
                d for t in self._transactions.values() if (d := t.schedule.deadline) is not None
            ]
            if self._state is TurnState.ALLOCATED:
                deadlines.append(self._expires_at if self._refreshing else self._refresh_at)
                deadlines.extend(
                    (p.expires_at if p.busy else p.refresh_at)
                    for p in self._permissions.values()
                    if p.installed
                )
                deadlines.extend(
                    p.refresh_at for p in self._peers.values() if p.channel and not p.busy
                )
                if self._refreshes:
                    deadlines.append(self._refreshes[0][3])
            deadline = min(deadlines, default=float("inf"))
            self._deadline = None if deadline == float("inf") else deadline
        return self._deadline

    def on_timer(self, now: float) -> None:
        """Retransmit and time out transactions, refresh what is due (RFC 8656 §8, §9, §12)."""
        self._dirty = True
        for tid, tx in list(self._transactions.items()):
            deadline = tx.schedule.deadline
            if deadline is None or deadline > now or tid not in self._transactions:
                continue
            if tx.schedule.on_timeout(now) is None:
                del self._transactions[tid]
                self._on_timeout(tx, now)
            elif not tx.quiet:
                self._counts["retransmissions"] += 1
                self._outbox.append(tx.wire)
        if self._waiting or self._refreshes:
            self._release(now)
        if self._state is not TurnState.ALLOCATED:
            return
        if self._expires_at <= now:
            # The allocation ended on the server while its Refresh went unanswered (a short
            # lifetime leaves less time than the transaction's own timeout, 39.5 s over UDP):
            # the relay is gone now, not when the Refresh gives up.  Or no Refresh went at
            # all: the clock jumped past the lifetime (a driver that slept an hour).
            self._fail(
                f"TURN refresh failed: no answer before the allocation's lifetime "
                f"({self.lifetime} s) ran out"
                if self._refreshing
                else f"TURN allocation expired: its lifetime ({self.lifetime} s) ran out "
                "before a refresh could go (the clock jumped past it)",
                code=None,
                reason="timeout",
            )
            return
        if not self._refreshing and self._refresh_at <= now:
            self._refreshing = True
            self._asked_early = False
            self._request(Kind.REFRESH, now)
        idle = now - IDLE
        for perm in self._permissions.values():
            if perm.installed and perm.expires_at <= now:
                # Its refresh went unanswered until the permission's 300 s ran out (RFC 8656
                # §9), or none went (this call came late: a stalled loop): the server holds
                # it no more, though a refresh may still be granted; nor relays the data of
                # its IP's channels.
                perm.installed = False
                self._unbind(perm)
                if not perm.busy and self._in_use(perm, idle):
                    self._request(Kind.PERMISSION, now, perm)  # (asked again: see _lapse)
                continue
            if perm.installed and not perm.busy and perm.refresh_at <= now:
                if not self._in_use(perm, idle):
                    self._lapse(perm, now)
                else:
                    self._request(Kind.PERMISSION, now, perm)
        for peer in self._peers.values():
            if peer.bound and peer.expires_at <= now:
                peer.bound = False  # (the server binds it no more: a call that came late)
            if peer.channel and not peer.busy and peer.refresh_at <= now:
                if peer.used_at < idle:
                    peer.bound = False  # (it lapses: see _lapse)
                    peer.refresh_at = float("inf")
                else:
                    self._request(Kind.CHANNEL, now, peer)  # a refresh, or a bind again
        self._forget_idle(now, idle)

    @property
    def refreshing(self) -> bool:
        """Whether a Refresh of the allocation is waiting for its answer."""
        return self._refreshing

    def refresh_now(self, now: float) -> None:
        """Refresh the allocation now, not when it is due (RFC 8656 §8): the question whether
        the server still holds it, after the network changed, or the peer fell silent (its
        answer comes as any Refresh's, and a refusal fails the client).  No answer at all is
        no news, asked before the refresh was due: the allocation lasts its lifetime, and
        the refresh goes when due (the path may be down a moment, which is why it was
        asked).  A no-op unless allocated, or while a Refresh is waiting for its answer."""
        if self._state is TurnState.ALLOCATED and not self._refreshing:
            self._refreshing = True
            self._asked_early = now < self._refresh_at
            self._request(Kind.REFRESH, now)

    def send_to_peer(self, peer: Address, data: bytes, now: float) -> bool:
        """Relay *data* to *peer* through the allocation (RFC 8656 §9-§12).

        Returns ``True`` when the data was queued for :meth:`poll_transmit` (possibly behind a
        pending permission), ``False`` when it was dropped (and counted): the client is not
        allocated, the queue for the peer's permission is full, the permission failed and
        may not be asked again yet (see the class's **Data**), or *peer* is not an IP address
        of the relayed address's family.

        Raises:
            ValueError: *data* is longer than a Send indication carries (65,504 bytes), at
                once, also while the peer's permission is being asked for (queued, it
                spoiled the permission's grant, and the data queued behind it).
        """
        if len(data) > PEER_DATA_MAX:
            raise ValueError(f"{len(data)} bytes is more than TURN relays ({PEER_DATA_MAX})")
        p = self._peers.get(peer)
        if p is None:
            p = self._peers.get(_written(peer))  # (another spelling of an IPv6 address)
        if p is not None and p.bound and self._state is TurnState.ALLOCATED:
            p.used_at = now
            self._outbox.append(stun.encode_channel_data(p.channel, data, pad=self.reliable))
            self._counts["sent_channel_data"] += 1
            return True
        if self._state is not TurnState.ALLOCATED:
            self._counts["dropped"] += 1
            return False
        if p is None:
            p = self._new_peer(peer, now)
            if p is None:
                self._counts["dropped"] += 1
                return False
        p.used_at = now
        perm = self._permissions[p.address[0]]
        if perm.installed:
            self._send_indication(p.address, data)
            if p.channel and not p.busy and p.refresh_at == float("inf"):
                self._bind(p, now)  # its channel lapsed: bind it again, with its number
            return True
        if not perm.busy and not perm.failed:
            self._request(Kind.PERMISSION, now, perm)  # it lapsed: ask again
        if perm.failed:
            if now < perm.retry_at:
                self._counts["dropped"] += 1
                return False
            perm.failed = False  # ask again (see PERMISSION_RETRY_MIN), this data queued
            self._request(Kind.PERMISSION, now, perm)
        if len(perm.queue) >= self._queue_limit:
            self._counts["dropped"] += 1
            return False
        perm.queue.append((p.address, bytes(data)))
        return True

    def unsent(self, frame: bytes, dropped: bool = True) -> bool:
        """The transport could not take ``frame``, which :meth:`poll_transmit` gave (a
        stream's buffer was full): data (ChannelData, a Send indication) is counted as
        not sent, and as dropped unless ``dropped`` is false (its sender will try again,
        or knows).  (A request not sent is left to its transaction's timeout.) Returns
        whether ``frame`` was data."""
        if 0x40 <= frame[0] <= 0x7F:
            self._counts["sent_channel_data"] -= 1
        elif stun.peek_type(frame) == SEND_INDICATION:
            self._counts["sent_indications"] -= 1
        else:
            return False
        if dropped:
            self._counts["dropped"] += 1
        return True

    def on_server_data(self, data: bytes, now: float) -> list[tuple[Address, bytes]]:
        """Handle one datagram (UDP) or one whole frame (TCP/TLS, see :class:`StreamFramer`).

        Answers to this client's requests move the allocation along; Data indications
        (RFC 8656 §11.6) and ChannelData (§12.6) come back as ``[(peer, data)]``.  Anything
        else is counted as malformed or stray and dropped: this method does not raise.
        """
        if not data:
            self._counts["malformed"] += 1
            return []
        first = data[0]
        if 0x40 <= first <= 0x4F:
            try:
                channel, payload = stun.decode_channel_data(data, datagram=not self.reliable)
            except stun.StunDecodeError:
                self._counts["malformed"] += 1
                return []
            p = self._channels.get(channel)
            if p is None or (not p.bound and not self._may_relay(p, now)) or not self._relaying:
                # (A channel the server binds no more, or whose IP it has no permission
                # for, or no allocation at all: it relays no such data, RFC 8656 §12.6.
                # Forged, or stale: dropped.)
                self._counts["malformed"] += 1
                return []
            self._counts["received"] += 1  # (no use of the channel: see _in_use)
            return [(p.address, payload)]
        if first > 3:
            self._counts["malformed"] += 1
            return []
        try:
            message = stun.decode(data)
            klass = message.message_class
            if klass is MessageClass.INDICATION and message.method is Method.DATA:
                if message.unknown_required:
                    # RFC 8489 §6.3.2: an indication with an unknown comprehension-required
                    # attribute is discarded, its data with it.
                    self._counts["malformed"] += 1
                    return []
                address = message.get(stun.XorPeerAddress)
                payload_attr = message.get(stun.Data)
                if address is None or payload_attr is None:
                    self._counts["malformed"] += 1
                    return []
                # (The peer as it is known here, canonical: an IPv4 peer written as an
                # IPv4-mapped IPv6 address is the IPv4 peer, as its permission is, and as
                # ChannelData and send_to_peer name it.)
                peer = _written((address.address, address.port))
                perm = self._permissions.get(peer[0])
                if (
                    perm is None
                    or (not perm.installed and not perm.busy and now >= perm.expires_at)
                    or not self._relaying
                ):
                    # RFC 8656 §11.6: from a peer no permission was asked for, or none is
                    # held for now (it lapsed, or failed): the server relays no such data.
                    # Forged, or a server gone wrong: dropped.
                    self._counts["malformed"] += 1
                    return []
                self._counts["received"] += 1  # (no use of the permission: see _in_use)
                return [(peer, payload_attr.value)]
            if klass is MessageClass.SUCCESS or klass is MessageClass.ERROR:
                self._on_response(message, now)
                if self._waiting or self._refreshes:
                    self._release(now)
            else:
                self._counts["malformed"] += 1
        except (stun.StunDecodeError, ValueError):
            self._counts["malformed"] += 1
        return []

    def _in_use(self, perm: Permission, idle: float) -> bool:
        """Whether data went to ``perm``'s IP (to a peer there) since ``idle``.  What comes from
        there is no use: a peer the application gave up on (ICE failed, or restarted to
        another) would keep the server relaying to it for as long as it sends, its data
        dropped by the application; one it still wants gets something of its too (an ICE
        agent's consent checks)."""
        return any(p.used_at >= idle for p in self._peers.values() if p.address[0] == perm.ip)

    def _may_relay(self, p: Peer, now: float) -> bool:
        """Whether the server may still relay data on ``p``'s channel, though it does not
        count as bound: its binding may hold (a bind again running, or its lifetime not
        over) and so may its IP's permission (RFC 8656 §12.6)."""
        if not (p.busy or now < p.expires_at):
            return False
        perm = self._permissions.get(p.address[0])
        return perm is not None and (perm.installed or perm.busy or now < perm.expires_at)

    def connection_lost(self, reason: str) -> None:
        """The TCP or TLS connection to the server is gone, and the allocation with it (RFC
        8656 §3.1: the server deletes it): an allocation allocating or allocated fails
        (:attr:`error` says ``reason``), one closing is closed.  Nothing is sent."""
        self._fail(f"TURN allocation lost: {reason}", code=None, reason=reason)
        self._transactions.clear()
        for frame in self._outbox:
            self.unsent(frame)  # (data queued and never sent: dropped, not sent)
        self._outbox.clear()
        self._dirty = True

    def close(self, now: float, until: float | None = None) -> None:
        """Delete the allocation: a Refresh with LIFETIME 0 (RFC 8656 §8).

        Waits in :attr:`TurnState.CLOSING` for the answer (or the timeout), then
        :attr:`TurnState.CLOSED`.  Closing while allocating deallocates once the Allocate
        succeeds; once challenged, also at once (the server may have granted the
        authenticated Allocate, its answer still on the way from a far server), and the
        Allocate goes no more (a copy granted after the deletion would be left): its answer
        still counts, and a deletion refused meanwhile (437: the Allocate had not come)
        waits for it.  A no-op when failed, closing or closed.

        Args:
            now: the time.
            until: when the driver stops waiting (and reading): a deletion refused with 437
                sends the Allocate once more, at once (its grant's answer may be lost),
                only if the answer to it is due before then (:attr:`round_trip`); a grant
                that came after, with no one left to delete it, would stay at the server
                for its lifetime.  ``None``: no end.
        """
        state = self._state
        nxt = TRANSITIONS[state].get(TurnEvent.CLOSE)
        if nxt is None:
            return
        self._dirty = True
        self._move(TurnEvent.CLOSE)
        self._closing_until = math.inf if until is None else until
        self._waiting.clear()
        self._refreshes.clear()
        for perm in self._permissions.values():
            self._counts["dropped"] += len(perm.queue)
            perm.queue.clear()
        if state is TurnState.ALLOCATED:
            for tid, tx in list(self._transactions.items()):
                if tx.kind is not Kind.ALLOCATE:
                    del self._transactions[tid]
            self._request(Kind.DEALLOCATE, now)
        elif self._key is not None:
            for tx in self._transactions.values():
                tx.quiet = True  # (the Allocates: no other request goes before the grant)
            self._request(Kind.DEALLOCATE, now)

    # --- transactions --------------------------------------------------------------------

    def _move(self, event: TurnEvent) -> None:
        nxt = TRANSITIONS[self._state].get(event)
        if nxt is not None:
            self._state = nxt
            self._dirty = True
            # (Whether the server may relay peer data to us: the allocation is there, or
            # being deleted.  Failed or closed, it relays none: what comes is forged, or
            # stale.)
            self._relaying = nxt is TurnState.ALLOCATED or nxt is TurnState.CLOSING

    def _fail(self, message: str, *, code: int | None, reason: str, **extra: Address) -> None:
        if self._state is TurnState.CLOSING:
            self._move(TurnEvent.FAIL)
            return
        if self._state in (TurnState.ALLOCATING, TurnState.ALLOCATED):
            # (code 0: an error response without ERROR-CODE, which has none to give)
            self.error = AllocationError(message, code=code or None, reason=reason, **extra)
            self._move(TurnEvent.FAIL)
            self._transactions.clear()
            self._waiting.clear()
            self._refreshes.clear()
            for perm in self._permissions.values():
                self._counts["dropped"] += len(perm.queue)
                perm.queue.clear()

    def _request(
        self,
        kind: Kind,
        now: float,
        target: Permission | Peer | None = None,
        stale: int = 0,
        *,
        waited: bool = False,
    ) -> None:
        """Build, queue and time one request (RFC 8489 §6.2, RFC 8656 §7-§12).  Over UDP,
        a permission or channel binding waits while ``MAX_OUTSTANDING`` are out (unless it
        ``waited`` already, see :meth:`_release`, or is the retry of one answered with a
        challenge or a stale nonce, which takes its place).  The refresh of one installed
        (or bound) goes before the new ones, and waits ``REFRESH_WAIT`` at most: it must
        reach the server before the permission ends, and the new ones may wait long for
        answers that do not come."""
        if (
            target is not None
            and not waited
            and not self.reliable
            and len(self._transactions) >= MAX_OUTSTANDING
        ):
            target.busy = True
            self._dirty = True
            if target.installed if isinstance(target, Permission) else target.bound:
                self._refreshes.append((kind, target, stale, now + REFRESH_WAIT))
            else:
                self._waiting.append((kind, target, stale))
            return
        attrs: list[stun.Attribute] = []
        if kind is Kind.ALLOCATE:
            attrs.append(stun.RequestedTransport(17))
            if self._family is not None:
                attrs.append(stun.RequestedAddressFamily(self._family))
            attrs.append(stun.Lifetime(self._requested_lifetime))
        elif kind is Kind.REFRESH:
            attrs.append(stun.Lifetime(self._requested_lifetime))
        elif kind is Kind.DEALLOCATE:
            attrs.append(stun.Lifetime(0))
        elif kind is Kind.PERMISSION:
            assert isinstance(target, Permission)
            target.busy = True
            attrs.append(stun.XorPeerAddress(target.ip, 0))
        else:
            assert isinstance(target, Peer)
            target.busy = True
            attrs.append(stun.ChannelNumber(target.channel))
            attrs.append(stun.XorPeerAddress(*target.address))
        if self._software is not None:
            attrs.append(self._software)
        key = self._key
        tid = self._new_tid()
        try:
            if key is not None:
                assert self._realm is not None and self._nonce is not None
                if nonce_features(self._nonce) & USERNAME_ANONYMITY:
                    # RFC 8489 §9.2.5: the server's nonce cookie asks for the user name
                    # hashed (prepared as the key's realm is; ValueError if it cannot be).
                    why = "user name not hashable"
                    hashed = stun.user_hash(self.username, self._realm, prepare=self._prepare)
                    attrs.append(stun.UserHash(hashed))
                else:
                    attrs.append(stun.Username(self.username))
                attrs.append(stun.Realm(self._realm))
                attrs.append(stun.Nonce(self._nonce))
            why = "request too long"
            wire = Message(METHOD[kind], MessageClass.REQUEST, tid, attrs).encode(integrity_key=key)
        except ValueError as exc:  # (no request can go, now or later)
            if target is not None:
                target.busy = False
            self._fail(f"TURN {kind.value} failed: {exc}", code=None, reason=why)
            return
        rto = self._allocate_rto if kind is Kind.ALLOCATE else self._rto
        if kind is Kind.DEALLOCATE:
            # (A client that closes waits a moment only, DEALLOCATE_WAIT in the shell: copies
            # go DEALLOCATE_RTO and three times that after the first, so that one lost on
            # the way does not leave the allocation on the server until its lifetime ends.
            # A server that took an earlier copy answers a later one with a 437, taken as
            # done.)
            rto = min(rto, DEALLOCATE_RTO)
        schedule = stun.RetransmissionSchedule(rto, reliable=self.reliable, ti=self._ti)
        schedule.start(now)
        self._transactions[tid] = Transaction(
            kind, wire, schedule, key is not None, stale, target, key, self._realm, started=now
        )
        self._outbox.append(wire)
        self._dirty = True

    def _release(self, now: float) -> None:
        """Send the permissions and channel bindings that waited (see :meth:`_request`) while
        fewer than ``MAX_OUTSTANDING`` transactions are out, if the allocation still is: the
        refreshes first, and a refresh at its latest time whatever is out."""
        waiting = self._waiting
        refreshes = self._refreshes
        if self._state is not TurnState.ALLOCATED:
            waiting.clear()
            refreshes.clear()
            return
        transactions = self._transactions
        while refreshes and (len(transactions) < MAX_OUTSTANDING or refreshes[0][3] <= now):
            kind, target, stale, _latest = refreshes.popleft()
            self._request(kind, now, target, stale, waited=True)
        while waiting and len(transactions) < MAX_OUTSTANDING:
            kind, target, stale = waiting.popleft()
            self._request(kind, now, target, stale, waited=True)

    def _on_response(self, message: Message, now: float) -> None:
        tx = self._transactions.get(message.transaction_id)
        if tx is None or message.method != METHOD[tx.kind]:
            self._counts["stray"] += 1
            return
        error = message.get(stun.ErrorCode)
        code = error.code if error is not None else 0
        if tx.authenticated and (
            message.message_class is MessageClass.SUCCESS
            or (code not in (401, 438) and message.has_integrity)
        ):
            # RFC 8489 §9.2.5: an answer to an authenticated request that fails the integrity
            # check is discarded.  (An error may come unsigned, as coturn's 437 does: taken.)
            # The key is the request's own: the realm may have changed since it went.
            assert tx.key is not None
            if not message.verify_integrity(tx.key):
                self._counts["malformed"] += 1
                if self.reliable:  # (no copy of the answer can come: the transaction ends)
                    del self._transactions[message.transaction_id]
                    self._dirty = True
                    self._on_error(tx, now, None, "response failed the integrity check")
                tx.forged = True
                return  # (else it waits for another copy, as for a lost answer)
        del self._transactions[message.transaction_id]
        self._dirty = True
        if not self.reliable:
            # (From the first copy: the round trip; or more, where a copy went again and the
            # answer may be to it, RFC 6298 §3's ambiguity, which can only lengthen what it
            # sets.  See round_trip.)
            took = now - tx.started
            last = self._round_trip
            if tx.schedule.sends == 1:
                if self._clean and last is not None:
                    self._round_trip = last + (took - last) / 8
                else:  # (the first, or the first that is not ambiguous: it stands alone)
                    self._round_trip = took
                self._clean = True
            elif not self._clean:
                self._round_trip = took if last is None else min(last, took)
            if tx.kind is Kind.ALLOCATE:  # (see ALLOCATE_RTO_MIN)
                self._allocate_rto = min(self._rto, max(ALLOCATE_RTO_MIN, 3 * took))
        if message.message_class is MessageClass.SUCCESS:
            # (Taken even with an unknown comprehension-required attribute, which RFC 8489
            # §6.3.4 would have fail the transaction: the server has made the allocation,
            # permission or channel, and failing here would leave it there unknown to us.)
            self._on_success(tx, message, now)
            return
        # (The server's words, made printable: they go into the error, and so into logs.)
        reason = (
            printable(error.reason) if error is not None else "error response without ERROR-CODE"
        )
        if self._state is TurnState.CLOSING and tx.kind is Kind.ALLOCATE:
            self._move(TurnEvent.DONE)  # closed while allocating, and nothing was allocated
            return
        if message.unknown_required and code != 420:
            # RFC 8489 §6.3.4: an error that carries a comprehension-required attribute
            # this client does not know fails its transaction, retried for nothing.  (A
            # 420's UNKNOWN-ATTRIBUTES is known: it lists them.)
            listed = ", ".join(f"0x{t:04x}" for t in message.unknown_required[:8])
            self._on_error(tx, now, code, f"{reason} (with attributes it requires: {listed})")
            return
        realm = message.get(stun.Realm)
        nonce = message.get(stun.Nonce)
        if code in (401, 438):
            for what, attribute in (("realm", realm), ("nonce", nonce)):
                if attribute is not None and not _fits(attribute.value):
                    # (Sent back in every request, it would make them too long to send.)
                    self._on_error(
                        tx, now, code, f"unusable {what}: longer than RFC 8489 §14.9-14.10 allow"
                    )
                    return
            if (
                nonce is not None
                and nonce_features(nonce.value) & PASSWORD_ALGORITHMS
                and message.get(stun.PasswordAlgorithms) is None
            ):
                # RFC 8489 §9.2.5: the nonce cookie says the server offers its password
                # algorithms, and the answer has none: removed on the way (a bid-down to
                # MD5).  No request goes again.
                self._on_error(
                    tx,
                    now,
                    code,
                    f"{reason} (its nonce announces PASSWORD-ALGORITHMS, which the answer "
                    "lacks: removed on the way, RFC 8489 §9.2.1)",
                )
                return
        if (
            code == 401
            and tx.authenticated
            and realm is not None
            and nonce is not None
            and realm.value != tx.realm
            and tx.stale < MAX_STALE_RETRIES
        ):
            # A challenge for another realm than the one the request's credentials were for
            # (a server whose realm changed, or another server behind the same address):
            # the same credentials, made for that realm, once more (the key is per realm,
            # RFC 8489 §9.2.2), rather than a failure for wrong credentials.  Counted as a
            # stale retry, so that two realms in turn cannot loop.  (Another request of the
            # old realm's, in flight meanwhile, may have moved the client there already.)
            if realm.value != self._realm:
                try:
                    key = self._key_for(realm.value)
                except ValueError as exc:
                    self._on_error(tx, now, 401, f"unusable realm {realm.value!r}: {exc}")
                    return
                self._realm, self._key = realm.value, key
            self._nonce = nonce.value
            self._request(tx.kind, now, tx.target, tx.stale + 1, waited=True)
            return
        if code == 401 and not tx.authenticated and realm is not None and nonce is not None:
            # RFC 8489 §9.2.3: the challenge; retry with the long-term credentials.
            self._realm = realm.value
            self._nonce = nonce.value
            try:
                self._key = self._key_for(realm.value)
            except ValueError as exc:
                self._on_error(tx, now, 401, f"unusable realm {realm.value!r}: {exc}")
                return
            self._request(tx.kind, now, tx.target, tx.stale, waited=True)
            return
        if (
            code == 401
            and tx.authenticated
            and realm is not None
            and nonce is not None
            and self._prepare is _as_written
            and not self._key_proven
            and tx.stale < MAX_STALE_RETRIES
        ):
            # The credentials refused: a server of RFC 5389's makes its key with SASLprep,
            # which maps compatibility characters (a fullwidth letter to its ASCII one):
            # where that makes another key, the request goes once more with it.
            other: bytes | None
            try:
                other = stun.long_term_key(
                    self.username, realm.value, self._password, prepare=stun.saslprep
                )
            except ValueError:
                other = None
            if other is not None and other != self._key:
                self._prepare = stun.saslprep
                self._realm, self._key, self._nonce = realm.value, other, nonce.value
                self._request(tx.kind, now, tx.target, tx.stale + 1, waited=True)
                return
        if code == 438 and nonce is not None and tx.stale < MAX_STALE_RETRIES:
            # RFC 8489 §9.2.5: Stale Nonce; retry with the new nonce (and realm, if given).
            if realm is not None and realm.value != self._realm:
                # (The key first: a realm it cannot be made with fails the transaction, as
                # in the 401 branch, and changes nothing.)
                try:
                    key = self._key_for(realm.value)
                except ValueError as exc:
                    self._on_error(tx, now, 438, f"unusable realm {realm.value!r}: {exc}")
                    return
                self._realm = realm.value
                self._key = key
            self._nonce = nonce.value
            if self._key is not None:
                self._request(tx.kind, now, tx.target, tx.stale + 1, waited=True)
                return
        if code == 440 and tx.kind is Kind.ALLOCATE and self._family is None:
            # Address Family not Supported (RFC 8656 §7.2): a server with no IPv4 relay
            # (the default family): an IPv6 one, then (IPv6 peers reach it), once.
            self._family = IPV6_FAMILY
            self._request(tx.kind, now, tx.target, tx.stale, waited=True)
            return
        if code == 401:
            reason = f"{reason} (wrong credentials)" if tx.authenticated else reason
        elif code == 438:
            reason = f"{reason} (stale nonce {tx.stale + 1} times in a row)"
        elif code == 420:
            unknown = message.get(stun.UnknownAttributes)
            if unknown is not None and unknown.types:
                listed = ", ".join(f"0x{t:04x}" for t in unknown.types[:8])
                reason = f"{reason} (attributes it does not know: {listed})"
        alternate = (
            # (RFC 8489 §14.8: a 300 to an authenticated request is believed signed only;
            # else anyone who saw the request could name a server to go to.)
            message.get(stun.AlternateServer)
            if code == 300 and (message.has_integrity or not tx.authenticated)
            else None
        )
        self._on_error(
            tx,
            now,
            code,
            reason,
            None if alternate is None else (alternate.address, alternate.port),
        )

    def _key_for(self, realm: str) -> bytes:
        """The long-term key for ``realm`` (RFC 8489 §9.2.2; see the class's docstring)."""
        return stun.long_term_key(self.username, realm, self._password, prepare=self._prepare)

    def _on_success(self, tx: Transaction, message: Message, now: float) -> None:
        if tx.authenticated:
            self._key_proven = True  # (its integrity checked: the key is the server's)
        kind = tx.kind
        if kind is Kind.ALLOCATE:
            if self._granted_nothing(message, "allocation"):
                return  # (over as it is granted: nothing to relay, nothing to delete)
            # (The one of the family asked for: a server may list one of each, the other
            # empty, as coturn does with an IPv6 relay asked for: 0.0.0.0:0 first.)
            relayed = next(
                (
                    r
                    for r in message.get_all(stun.XorRelayedAddress)
                    if self._family is None or (":" in r.address) == (self._family == IPV6_FAMILY)
                ),
                None,
            )
            if relayed is None:
                self._fail(
                    "TURN allocation failed: success without XOR-RELAYED-ADDRESS",
                    code=None,
                    reason="no relayed address",
                )
                # (The server made an allocation all the same: deleted, not left to expire.
                # Sent once; the client has failed and waits for no answer.)
                self._request(Kind.DEALLOCATE, now)
                self._transactions.clear()
                return
            self.relayed_address = (relayed.address, relayed.port)
            mapped = message.get(stun.XorMappedAddress)
            if mapped is not None:
                self.mapped_address = (mapped.address, mapped.port)
            self._granted(message, now)
            if self._state is TurnState.CLOSING:
                self._request(Kind.DEALLOCATE, now)  # close() came while allocating
            else:
                self._move(TurnEvent.GRANTED)
        elif kind is Kind.REFRESH:
            self._refreshing = self._asked_early = False
            if self._granted_nothing(message, "refresh"):
                # The server ended the allocation (we asked for more): refreshing again at
                # once would loop a round trip at a time.
                return
            self._granted(message, now, refresh=True)
        elif kind is Kind.DEALLOCATE:
            self.lifetime = 0
            self._move(TurnEvent.DONE)
        elif kind is Kind.PERMISSION:
            perm = tx.target
            assert isinstance(perm, Permission)
            perm.busy = False
            perm.installed = True
            perm.failed = False
            perm.failures = 0
            perm.refresh_at = now + PERMISSION_REFRESH
            perm.expires_at = now + PERMISSION_LIFETIME
            self._held_again(perm, now)
        else:
            peer = tx.target
            assert isinstance(peer, Peer)
            peer.busy = False
            peer.bound = True
            peer.failures = 0
            peer.refresh_at = now + CHANNEL_REFRESH
            peer.expires_at = now + CHANNEL_LIFETIME
            # RFC 8656 §12.2: the binding installed (or refreshed) the permission for the
            # peer's IP too: it is held, and refreshed in its time, though it lapsed or its
            # own request failed (the channel's data goes only while it is held).
            # (With its own refresh still waiting, the permission may have run out since:
            # held again now, the data queued behind the refresh goes, and the IP's other
            # channels are bound again.)
            perm = self._permissions.get(peer.address[0])
            if perm is not None:
                perm.expires_at = max(perm.expires_at, now + PERMISSION_LIFETIME)
                if not perm.installed:
                    if not perm.busy:
                        perm.refresh_at = now + PERMISSION_REFRESH
                    perm.installed = True
                    perm.failed = False
                    self._held_again(perm, now)

    def _granted_nothing(self, message: Message, what: str) -> bool:
        """A success that grants a LIFETIME of 0 fails the allocation; returns whether it
        did."""
        granted = message.get(stun.Lifetime)
        if granted is None or granted.seconds != 0:
            return False
        self._fail(
            f"TURN {what} failed: the server granted a lifetime of 0",
            code=None,
            reason="lifetime 0",
        )
        return True

    def _granted(self, message: Message, now: float, *, refresh: bool = False) -> None:
        """The allocation was granted (or refreshed: ``refresh``) for the LIFETIME the
        success gives; without one (RFC 8656 §7.3 and §8 say it MUST be there), what was
        asked for, or on a Refresh what was granted last (the server may give less)."""
        granted = message.get(stun.Lifetime)
        if granted is not None:
            lifetime = granted.seconds
        elif refresh and self.lifetime:
            lifetime = self.lifetime
        else:
            lifetime = self._requested_lifetime
        self.lifetime = lifetime
        self._refresh_at = now + lifetime - min(60.0, lifetime / 5)
        self._expires_at = now + lifetime

    def _on_error(
        self,
        tx: Transaction,
        now: float,
        code: int | None,
        reason: str,
        alternate: Address | None = None,
    ) -> None:
        kind = tx.kind
        if kind is Kind.REFRESH and code is None and now < self._expires_at:
            if self._asked_early:
                # (Asked before due, and no answer came: no news, see refresh_now.)
                self._refreshing = self._asked_early = False
                self._dirty = True
                return
            if self._state is TurnState.ALLOCATED and reason == "timeout":
                # No answer, while the server still holds the allocation (a Refresh goes
                # 60 s before its end, and gives up 39.5 s later over UDP): another goes at
                # once, until the lifetime runs out (on_timer fails the client then), as a
                # permission is asked again.  One lost transaction ended a relay the
                # server held (1 % of refreshes at 30 % loss each way).
                self._refreshing = False
                self._refresh_at = now
                self._dirty = True
                return
        if code is not None:  # (0: an error response without ERROR-CODE, none to say)
            what = f"{code} {reason}".strip() if code else reason
        else:
            what = "no answer" if reason == "timeout" else reason
        if kind is Kind.ALLOCATE or kind is Kind.REFRESH:
            extra = {} if alternate is None else {"alternate_server": alternate}
            if alternate is not None:
                what += f" (alternate server {host_port(*alternate)})"
            self._fail(f"TURN {kind.value} failed: {what}", code=code, reason=reason, **extra)
            if (kind is Kind.REFRESH and code not in (None, 401, 437, 438)) or (
                kind is Kind.ALLOCATE and code == 437 and self._key is not None
            ):
                # A Refresh refused (508, say) leaves the allocation on the server until its
                # lifetime runs out, counted against our quota there: deleted, once, with no
                # wait (the client has failed; a lost request costs only the quota's slot).
                # So does an authenticated Allocate's 437: an allocation is on this 5-tuple,
                # ours (a copy granted, whose answer was lost, then a stale nonce's retry
                # went as a transaction of its own) or a client's of before on the port.
                self._request(Kind.DEALLOCATE, now)
                self._transactions.clear()
        elif kind is Kind.DEALLOCATE:
            # Closed while allocating, the deletion may have overtaken the Allocate (437),
            # which, out still, may yet be granted: it goes once more, now (its grant's
            # answer may be lost, and the server answers a copy of what it granted), if its
            # answer is due before the driver stops waiting (see close), and its grant is
            # deleted.  Or a deletion sent on the grant is out still (the answers crossed):
            # it decides.  The driver's wait bounds both.
            waiting = False
            for other in self._transactions.values():
                if other.kind is Kind.ALLOCATE:
                    waiting = True
                    due = now + (self._round_trip or 0.0)
                    schedule = other.schedule
                    if (
                        code == 437
                        and not self.reliable  # (over a stream nothing goes twice)
                        and due < self._closing_until
                        and schedule.sends < schedule.rc
                    ):
                        schedule.on_timeout(now)  # (a copy sent again: see round_trip)
                        self._counts["retransmissions"] += 1
                        self._outbox.append(other.wire)
                elif other.kind is Kind.DEALLOCATE:
                    waiting = True
            if not waiting:
                self._move(TurnEvent.DONE)
        elif code == 437:
            # Allocation Mismatch to a CreatePermission or ChannelBind: the server holds no
            # allocation for us (it lost it, or sees us at another address now).
            self._fail(f"TURN allocation lost: {what}", code=code, reason=reason)
        elif kind is Kind.PERMISSION:
            perm = tx.target
            assert isinstance(perm, Permission)
            perm.busy = False
            perm.failures += 1
            backoff = PERMISSION_RETRY_MIN * 2 ** min(perm.failures - 1, 8)
            pause = min(backoff, PERMISSION_RETRY_MAX)
            if code is not None:
                self._counts["refused"] += 1
                self.refusals[perm.ip] = what
            if perm.installed and now < perm.expires_at:
                # A refresh that got no answer, or was refused, while the server still
                # holds the permission (RFC 8656 §9: it ends only at its lifetime's end): it
                # stays ours (its channels' data goes on), and is refreshed again soon, or
                # woken at its end at the latest (see on_timer).
                perm.refresh_at = min(now + pause, perm.expires_at)
                return
            perm.installed = False
            perm.failed = True
            perm.retry_at = now + pause
            self._counts["dropped"] += len(perm.queue)
            perm.queue.clear()
            self._unbind(perm)
        else:
            p = tx.target
            assert isinstance(p, Peer)
            # RFC 8656 §12: without the channel, Send indications still work.
            p.busy = False
            p.bound = False
            if code is not None and tx.schedule.sends > 1 and now >= p.expires_at:
                # Refused, but maybe only a later copy: an earlier one may have bound the
                # channel, its answer lost, before the server came to refuse (a peer IP its
                # rules deny since): it may hold that binding for its lifetime, as after no
                # answer.
                p.expires_at = now + CHANNEL_LIFETIME
            if code is None or now < p.expires_at:
                # No answer (or none that checked): the server may have bound the channel;
                # or a refresh refused, and the server holds the binding to its end.  It
                # sends the peer's data on it meanwhile (§12.5): the number stays the
                # peer's (no other may have it, nor the peer another, §12), and the bind
                # goes again, with a pause.
                p.failures += 1
                backoff = PERMISSION_RETRY_MIN * 2 ** min(p.failures - 1, 8)
                p.refresh_at = now + min(backoff, PERMISSION_RETRY_MAX)
                if code is None:
                    p.expires_at = now + CHANNEL_LIFETIME  # (if one of its copies bound it)
                return
            self._release_channel(p)

    def _on_timeout(self, tx: Transaction, now: float) -> None:
        # (Every answer that came failed the integrity check: RFC 8489 §9.2.5 says so, not
        # that none came.)
        self._on_error(
            tx, now, None, "response failed the integrity check" if tx.forged else "timeout"
        )

    # --- peers --------------------------------------------------------------------------------

    def _new_peer(self, peer: Address, now: float) -> Peer | None:
        """The peer at *peer*, made if new (its permission asked for, or its channel bound),
        or ``None`` if *peer* is no ``(IP address, port)`` of the relayed address's family.
        Peers and permissions go by the address in canonical form (``canonical_ip``): two
        spellings of one IPv6 address are one peer, with one permission."""
        address = _written(peer)
        port = address[1]
        if type(port) is not int or not 0 < port <= 0xFFFF:
            return None
        relayed = self.relayed_address
        if relayed is None or (":" in address[0]) != (":" in relayed[0]):
            return None
        p = self._peers.get(address)
        if p is not None:
            return p  # (asked for by another spelling)
        p = Peer(address)
        self._peers[address] = p
        perm = self._permissions.get(address[0])
        if perm is None:
            perm = self._permissions[address[0]] = Permission(address[0])
            self._request(Kind.PERMISSION, now, perm)
        elif perm.installed:
            self._bind(p, now)
        return p

    def _bind(self, p: Peer, now: float) -> None:
        """Bind *p*'s channel (RFC 8656 §12.1), giving it a number first if it has none;
        without free numbers, or while the peer may not take another number yet (for
        ``CHANNEL_REUSE`` after its last binding's end, §12), do nothing."""
        if not p.channel:
            if now < p.expires_at + CHANNEL_REUSE:
                return  # (Send indications meanwhile)
            released = self._released
            if released and released[0][0] <= now:
                p.channel = heapq.heappop(released)[1]
            elif self._next_channel > LAST_CHANNEL:
                return
            else:
                p.channel = self._next_channel
                self._next_channel += 1
            self._channels[p.channel] = p
        self._request(Kind.CHANNEL, now, p)

    def _release_channel(self, p: Peer) -> None:
        """*p* gives up its channel number (the server refused to bind or refresh it, or
        the binding expired long ago): free for another peer once the server can bind it
        no more, ``CHANNEL_REUSE`` after the binding's end (RFC 8656 §12; a refused refresh
        leaves the binding until then), or at once if it was never bound."""
        number = p.channel
        p.channel = 0
        if self._channels.get(number) is p:
            del self._channels[number]
            heapq.heappush(self._released, (p.expires_at + CHANNEL_REUSE, number))

    def _forget_idle(self, now: float, idle: float) -> None:
        """Forget the peers and permissions that nothing has used for ``IDLE`` and the
        server holds no more: a relay lives through ICE restarts, and checks a new set of
        peer addresses in each, so that their records would otherwise grow for its life.
        A peer is kept until ``CHANNEL_REUSE`` after the server's binding of its channel
        expired (RFC 8656 §12: until then it may take no other number, and its number, if
        it still has one, serves no other peer), then its number is freed; a permission's record
        goes once no peer of its IP is left, no request for it runs, and the server holds
        it no more (data it relays until then is taken)."""
        peers = self._peers
        for address, p in list(peers.items()):
            if p.busy or p.bound or p.used_at >= idle or now < p.expires_at + CHANNEL_REUSE:
                continue  # (the last: the peer may take no other number yet, RFC 8656 §12)
            if p.channel:
                if p.refresh_at != float("inf"):
                    continue  # (a bind again pending)
                self._release_channel(p)
            del peers[address]
        held = {address[0] for address in peers}
        for ip, perm in list(self._permissions.items()):
            if (
                ip not in held
                and not (perm.busy or perm.installed or perm.queue)
                and now >= perm.expires_at
            ):
                del self._permissions[ip]

    def _lapse(self, perm: Permission, now: float) -> None:
        """Let an idle permission lapse, and the channels of its IP with it (data on a
        channel needs the permission too).  The record stays, not installed: data for the
        IP asks again, and the channels keep their numbers (the server holds a number for
        its peer until the binding's lifetime ends, §12), bound again when data goes, until
        :meth:`_forget_idle` lets them go.  Peers without a channel are forgotten, but for one
        whose binding ended less than ``CHANNEL_REUSE`` ago (it may take no other number
        until then, §12)."""
        perm.installed = False
        perm.refresh_at = float("inf")
        for address, p in list(self._peers.items()):
            if address[0] != perm.ip:
                continue
            if p.channel:
                p.bound = False
                p.refresh_at = float("inf")
            elif now >= p.expires_at + CHANNEL_REUSE:  # (else it may take no number yet)
                del self._peers[address]

    def _held_again(self, perm: Permission, now: float) -> None:
        """The server holds the permission (again): the data queued for its IP goes, and the
        IP's channels in use that are not bound are bound (again)."""
        while perm.queue:
            self._send_indication(*perm.queue.popleft())
        idle = now - IDLE
        for p in self._peers.values():
            if (
                p.address[0] == perm.ip
                and not p.bound
                and not p.busy
                and p.used_at >= idle
                and (not p.channel or p.refresh_at == float("inf"))
            ):
                self._bind(p, now)  # (with a bind again pending, it waits its time)

    def _unbind(self, perm: Permission) -> None:
        """The permission ended (or failed): its IP's channels count as bound no more.  Their
        data would go unchecked on a channel the server drops it from once the permission
        ends (RFC 8656 §12): it goes by the permission's path, asked again, and the channel
        is bound again, with its number, once the permission is back."""
        for peer in self._peers.values():
            if peer.address[0] == perm.ip and peer.bound:
                peer.bound = False
                peer.refresh_at = float("inf")

    def _send_indication(self, peer: Address, data: bytes) -> None:
        """Send indication with XOR-PEER-ADDRESS and DATA (RFC 8656 §11.1)."""
        message = Message(
            Method.SEND,
            MessageClass.INDICATION,
            self._new_tid(),
            (stun.XorPeerAddress(peer[0], peer[1]), stun.Data(data)),
        )
        self._outbox.append(message.encode())
        self._counts["sent_indications"] += 1


#: The "nonce cookie" that starts the NONCE of an RFC 8489 server, and its security
#: feature bits (§9.2, §18.1): each read both ways, as the RFC's figure numbers the bits from
#: the left and its erratum 6290 from the right, and servers follow either.
NONCE_COOKIE: Final = "obMatJos2"
PASSWORD_ALGORITHMS: Final = 0x800001
USERNAME_ANONYMITY: Final = 0x400002


def nonce_features(nonce: str | None) -> int:
    """The 24 security feature bits of ``nonce``'s cookie (RFC 8489 §9.2), or 0 if it has
    none."""
    if nonce is None or not nonce.startswith(NONCE_COOKIE):
        return 0
    try:
        return int.from_bytes(base64.b64decode(nonce[9:13], validate=True), "big")
    except ValueError:  # (binascii.Error: not base64, or fewer than four characters)
        return 0


def _fits(text: str) -> bool:
    """Whether a REALM or NONCE is as short as RFC 8489 §14.9-14.10 ask: under 128
    characters, at most 763 bytes."""
    return len(text) < 128 and len(text.encode("utf-8", "surrogateescape")) <= 763


def _written(peer: Address) -> Address:
    """*peer* with its IP address in canonical form (``("", 0)`` if *peer* is no ``(IP
    address, port)``), so that every spelling of an address finds one peer."""
    try:
        host, port = peer
    except (ValueError, TypeError):
        return ("", 0)
    canonical = canonical_ip(host)
    return ("", 0) if canonical is None else (canonical, port)
