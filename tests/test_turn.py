"""The pure TURN client against a tiny scripted server, in virtual time (RFC 8656)."""

from __future__ import annotations

import base64
import itertools
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trice import StateError, stun
from trice.stun import Message, MessageClass, Method
from trice.turn import AllocationError, StreamFramer, TurnClient, TurnEvent, TurnState
from trice.turn._client import PEER_DATA_MAX
from trice.turn._records import MAX_OUTSTANDING, PERMISSION_LIFETIME, REFRESH_WAIT

USER = "alice"
PASSWORD = "wonderland"
REALM = "example.org"
RELAYED = ("198.51.100.1", 50000)
MAPPED = ("203.0.113.5", 40000)
PEER = ("192.0.2.10", 6000)
PEER2 = ("192.0.2.10", 6001)

Address = tuple[str, int]


@dataclass
class FakeServer:
    """Just enough of a TURN server (RFC 8656) to script the client's conversations.

    It challenges unauthenticated requests with 401, checks MESSAGE-INTEGRITY with its own
    password, answers a stale nonce with 438, and records what it did.
    """

    password: str = PASSWORD
    nonce: str = "nonce-1"
    max_lifetime: int = 3600
    silent: bool = False
    always_stale: bool = False
    stale_next: int = 0  # answer this many authenticated requests with 438 (a new nonce)
    errors: dict[Method, tuple[int, str]] = field(default_factory=dict)
    requests: list[tuple[float, Message]] = field(default_factory=list)
    permissions: set[str] = field(default_factory=set)
    channels: dict[int, Address] = field(default_factory=dict)
    relayed: list[tuple[Address, bytes, str]] = field(default_factory=list)
    allocated: bool = False
    stale_count: int = 0
    relayed_address: Address = RELAYED
    ipv6_relays_only: bool = False  # (440 to an Allocate that names no family, as coturn)
    alternate: Address = ("192.0.2.99", 3478)  # (what a 300 answer names)
    #: How it prepares the realm and password for its key: SASLprep (RFC 5389), or as
    #: written (``str``: coturn's, Pion's).
    prepare: Callable[[str], str] = stun.saslprep
    realm: str = REALM

    @property
    def key(self) -> bytes:
        return stun.long_term_key(USER, self.realm, self.password, prepare=self.prepare)

    def handle(self, data: bytes, now: float) -> list[bytes]:
        if self.silent:
            return []
        if 0x40 <= data[0] <= 0x4F:
            channel, payload = stun.decode_channel_data(data)
            self.relayed.append((self.channels[channel], payload, "channel"))
            return []
        message = stun.decode(data)
        method = Method(message.method)
        if message.message_class is MessageClass.INDICATION:
            assert message.method is Method.SEND
            peer = message.get(stun.XorPeerAddress)
            data_attr = message.get(stun.Data)
            assert peer is not None and data_attr is not None
            if peer.address in self.permissions:
                self.relayed.append(((peer.address, peer.port), data_attr.value, "indication"))
            return []
        self.requests.append((now, message))
        if message.get(stun.Username) is None:
            return [
                message.error_response(
                    401, "Unauthorized", stun.Realm(self.realm), stun.Nonce(self.nonce)
                ).encode()
            ]
        if not message.verify_integrity(self.key):
            return [
                message.error_response(
                    401, "Unauthorized", stun.Realm(self.realm), stun.Nonce(self.nonce)
                ).encode()
            ]
        nonce = message.get(stun.Nonce)
        if self.stale_next:
            self.stale_next -= 1
            self.nonce += "+"
        if self.always_stale or nonce is None or nonce.value != self.nonce:
            self.stale_count += 1
            if self.always_stale:
                self.nonce = f"nonce-{self.stale_count + 1}"
            return [
                message.error_response(
                    438, "Stale Nonce", stun.Realm(self.realm), stun.Nonce(self.nonce)
                ).encode()
            ]
        if method in self.errors:
            code, reason = self.errors[method]
            extra: tuple[stun.Attribute, ...] = ()
            if code == 300:
                extra = (stun.AlternateServer(*self.alternate),)
            elif code == 420:
                extra = (stun.UnknownAttributes((0x0017, 0x7F01)),)
            return [message.error_response(code, reason, *extra).encode(integrity_key=self.key)]
        attrs: tuple[stun.Attribute, ...] = ()
        family = message.get(stun.RequestedAddressFamily)
        if message.method is Method.ALLOCATE and self.ipv6_relays_only:
            if family is None or family.family != 2:
                error = message.error_response(440, "Unsupported address family")
                return [error.encode(integrity_key=self.key)]
            self.allocated = True
            attrs = (  # (as coturn answers: the IPv4 relayed address empty, first)
                stun.XorRelayedAddress("0.0.0.0", 0),
                stun.XorRelayedAddress("2001:db8::7", 50000),
                stun.XorMappedAddress(*MAPPED),
                stun.Lifetime(600),
            )
        elif message.method is Method.ALLOCATE:
            lifetime = message.get(stun.Lifetime)
            seconds = min(lifetime.seconds if lifetime else 600, self.max_lifetime)
            self.allocated = True
            attrs = (
                stun.XorRelayedAddress(*self.relayed_address),
                stun.XorMappedAddress(*MAPPED),
                stun.Lifetime(seconds),
            )
        elif message.method is Method.REFRESH:
            if not self.allocated:  # (RFC 8656 §7.3: no allocation on this 5-tuple)
                error = message.error_response(437, "Allocation Mismatch")
                return [error.encode(integrity_key=self.key)]
            lifetime = message.get(stun.Lifetime)
            seconds = min(lifetime.seconds if lifetime else 600, self.max_lifetime)
            self.allocated = seconds > 0
            attrs = (stun.Lifetime(seconds),)
        elif message.method is Method.CREATE_PERMISSION:
            for peer in message.get_all(stun.XorPeerAddress):
                self.permissions.add(peer.address)
        elif message.method is Method.CHANNEL_BIND:
            number = message.get(stun.ChannelNumber)
            peer = message.get(stun.XorPeerAddress)
            assert number is not None and peer is not None
            self.channels[number.channel] = (peer.address, peer.port)
            self.permissions.add(peer.address)
        return [message.success_response(*attrs).encode(integrity_key=self.key)]

    def methods(self) -> list[str]:
        return [Method(m.method).name for _, m in self.requests]

    def data_indication(self, peer: Address, data: bytes) -> bytes:
        return Message(
            Method.DATA,
            MessageClass.INDICATION,
            attributes=(stun.XorPeerAddress(*peer), stun.Data(data)),
        ).encode()


def state(client: TurnClient) -> TurnState:
    """The client's state (a call, so that mypy does not narrow it between steps)."""
    return client.state


def exchange(client: TurnClient, server: FakeServer, now: float) -> list[tuple[Address, bytes]]:
    """Deliver everything the client queued to the server and the answers back."""
    received: list[tuple[Address, bytes]] = []
    while (data := client.poll_transmit(now)) is not None:
        for reply in server.handle(data, now):
            received += client.on_server_data(reply, now)
    return received


def run_until(client: TurnClient, server: FakeServer, end: float, now: float = 0.0) -> float:
    """Exchange, then jump from deadline to deadline up to *end*; return the time reached."""
    exchange(client, server, now)
    while (deadline := client.next_deadline()) is not None and deadline <= end:
        now = max(now, deadline)
        client.on_timer(now)
        exchange(client, server, now)
    return end


def allocated(
    *,
    reliable: bool = False,
    server: FakeServer | None = None,
    lifetime: int = 600,
    queue_limit: int = 8,
) -> tuple[TurnClient, FakeServer]:
    client = TurnClient(
        USER, PASSWORD, reliable=reliable, lifetime=lifetime, queue_limit=queue_limit
    )
    server = server or FakeServer()
    client.start(0.0)
    exchange(client, server, 0.0)
    assert state(client) is TurnState.ALLOCATED, client.error
    return client, server


# --- allocation -----------------------------------------------------------------------------


def test_the_transition_table_is_read_only() -> None:
    """Every client of the process goes by trice.turn.TRANSITIONS: it cannot be changed
    (by mistake, through the public name) under them."""
    from trice.turn import TRANSITIONS

    with pytest.raises(TypeError):
        TRANSITIONS[TurnState.IDLE][TurnEvent.START] = TurnState.CLOSED  # type: ignore[index]
    with pytest.raises(TypeError):
        TRANSITIONS[TurnState.CLOSED] = {}  # type: ignore[index]
    assert TRANSITIONS[TurnState.IDLE][TurnEvent.START] is TurnState.ALLOCATING


def test_allocate_after_401_challenge() -> None:
    client = TurnClient(USER, PASSWORD, reliable=False, lifetime=900)
    assert state(client) is TurnState.IDLE
    server = FakeServer()
    client.start(0.0)
    assert state(client) is TurnState.ALLOCATING
    exchange(client, server, 0.0)
    assert state(client) is TurnState.ALLOCATED
    assert client.relayed_address == RELAYED
    assert client.mapped_address == MAPPED
    assert client.lifetime == 900
    first, second = (m for _, m in server.requests)
    assert first.method is second.method is Method.ALLOCATE
    assert first.get(stun.Username) is None and not first.has_integrity
    assert first.get(stun.RequestedTransport) == stun.RequestedTransport(17)
    assert second.get(stun.Username) == stun.Username(USER)
    assert second.get(stun.Realm) == stun.Realm(REALM)
    assert second.get(stun.Nonce) == stun.Nonce("nonce-1")
    assert second.verify_integrity(server.key)
    assert first.transaction_id != second.transaction_id
    with pytest.raises(StateError):
        client.start(1.0)


def test_wrong_credentials_fail_with_401() -> None:
    client = TurnClient(USER, "wrong", reliable=False)
    client.start(0.0)
    exchange(client, FakeServer(), 0.0)
    assert state(client) is TurnState.FAILED
    assert isinstance(client.error, AllocationError)
    assert client.error.code == 401
    assert "wrong credentials" in str(client.error)
    assert client.next_deadline() is None


def test_stale_nonce_is_retried_on_allocate_and_refresh() -> None:
    server = FakeServer()
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    server.stale_next = 1  # the authenticated Allocate carries a stale nonce
    exchange(client, server, 0.0)
    assert state(client) is TurnState.ALLOCATED
    assert server.methods() == ["ALLOCATE"] * 3
    assert server.requests[-1][1].get(stun.Nonce) == stun.Nonce("nonce-1+")  # (the new one)
    server.stale_next = 1
    run_until(client, server, 600.0)
    assert state(client) is TurnState.ALLOCATED
    assert server.methods()[3:] == ["REFRESH", "REFRESH"]


def test_stale_nonce_loop_fails() -> None:
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    exchange(client, FakeServer(always_stale=True), 0.0)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 438
    assert "stale nonce 4 times" in str(client.error)


def test_stale_nonce_with_an_unusable_realm_fails_the_allocation() -> None:
    """A 438 whose new REALM no key can be made with (SASLprep refuses a control character)
    fails the transaction, here the Allocate, with nothing changed: the client neither
    waits for a transaction it dropped nor keeps the bad realm."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    request = stun.decode(client.poll_transmit(0.0) or b"")
    challenge = request.error_response(401, "Unauthorized", stun.Realm(REALM), stun.Nonce("n1"))
    client.on_server_data(challenge.encode(), 0.1)
    request = stun.decode(client.poll_transmit(0.1) or b"")
    stale = request.error_response(438, "Stale Nonce", stun.Realm("ev\u0007il"), stun.Nonce("n2"))
    client.on_server_data(stale.encode(), 0.2)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 438
    assert "unusable realm" in str(client.error)
    assert client._realm == REALM
    assert client.next_deadline() is None


def test_a_401_for_another_realm_is_answered_with_credentials_for_it() -> None:
    """The server's realm changed between its challenge and our authenticated Allocate (a
    restart with another configuration, a load balancer): its 401 names the new realm.
    The same credentials, keyed for that realm, go once more: the allocation succeeds where
    it failed for wrong credentials.  A 401 for the realm just used fails, as a second
    change of realm in a row does (no loop)."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    first = stun.decode(client.poll_transmit(0.0) or b"")
    challenge = first.error_response(401, "No", stun.Realm("old.example"), stun.Nonce("n1"))
    client.on_server_data(challenge.encode(), 0.01)
    second = stun.decode(client.poll_transmit(0.01) or b"")
    assert second.verify_integrity(stun.long_term_key(USER, "old.example", PASSWORD))
    moved = second.error_response(401, "No", stun.Realm(REALM), stun.Nonce("n2"))
    client.on_server_data(moved.encode(), 0.1)
    again = stun.decode(client.poll_transmit(0.1) or b"")
    assert again.get(stun.Realm) == stun.Realm(REALM)
    assert again.get(stun.Nonce) == stun.Nonce("n2")
    assert again.verify_integrity(stun.long_term_key(USER, REALM, PASSWORD))
    relayed = stun.XorRelayedAddress(*RELAYED)
    mapped = stun.XorMappedAddress(*MAPPED)
    success = again.success_response(relayed, mapped, stun.Lifetime(600))
    key = stun.long_term_key(USER, REALM, PASSWORD)
    client.on_server_data(success.encode(integrity_key=key, fingerprint=True), 0.2)
    assert state(client) is TurnState.ALLOCATED
    for realms, answers in ((["r1", "r1"], 2), ([f"r{k}" for k in range(9)], 5)):
        client = TurnClient(USER, PASSWORD, reliable=False)
        client.start(0.0)
        for k, realm in enumerate(realms):
            request = stun.decode(client.poll_transmit(float(k)) or b"")
            answer = request.error_response(401, "No", stun.Realm(realm), stun.Nonce(f"n{k}"))
            client.on_server_data(answer.encode(), k + 0.01)
            if state(client) is TurnState.FAILED:
                break
        assert k + 1 == answers
        assert client.error is not None and client.error.code == 401


@pytest.mark.parametrize("first", ["permission", "refresh"])
def test_requests_in_flight_when_the_realm_changes_go_again_for_the_new_one(first: str) -> None:
    """A CreatePermission and a Refresh, both keyed for the realm of before, are in flight
    when the server's realm changes: each 401 names the new one.  Each request goes again
    with the new realm's key, whichever 401 came first (the second was taken for wrong
    credentials: the client had moved to that realm already); and a success to a request
    keyed for the old realm, signed with that key, is taken (it was checked with the new
    one)."""
    moved = "moved.example"
    client, _server = allocated(reliable=True)
    assert client.send_to_peer(PEER, b"x", 1.0)
    client.refresh_now(1.0)
    sent = [stun.decode(d) for d in iter(lambda: client.poll_transmit(1.0), None)]
    requests = {m.method: m for m in sent if m.message_class is stun.MessageClass.REQUEST}
    order = [Method.CREATE_PERMISSION, Method.REFRESH]
    if first == "refresh":
        order.reverse()
    for k, method in enumerate(order):
        answer = requests[method].error_response(401, "No", stun.Realm(moved), stun.Nonce("n9"))
        client.on_server_data(answer.encode(), 1.1 + k / 10)
    assert state(client) is TurnState.ALLOCATED, client.error
    again = [stun.decode(d) for d in iter(lambda: client.poll_transmit(1.3), None)]
    assert {m.method for m in again} == set(order)
    key = stun.long_term_key(USER, moved, PASSWORD)
    assert all(m.verify_integrity(key) for m in again)
    client, _server = allocated(reliable=True)
    assert client.send_to_peer(PEER, b"x", 2.0)
    client.refresh_now(2.0)
    sent = [stun.decode(d) for d in iter(lambda: client.poll_transmit(2.0), None)]
    requests = {m.method: m for m in sent if m.message_class is stun.MessageClass.REQUEST}
    answer = requests[Method.CREATE_PERMISSION].error_response(
        401, "No", stun.Realm(moved), stun.Nonce("n9")
    )
    client.on_server_data(answer.encode(), 2.1)
    granted = requests[Method.REFRESH].success_response(stun.Lifetime(600))
    old_key = stun.long_term_key(USER, REALM, PASSWORD)
    client.on_server_data(granted.encode(integrity_key=old_key, fingerprint=True), 2.2)
    assert state(client) is TurnState.ALLOCATED, client.error


def test_a_challenge_with_an_unusable_realm_fails_the_allocation() -> None:
    """A 401 challenge whose REALM no key can be made with (SASLprep refuses a control
    character) fails the Allocate with a clear error, rather than raising or retrying."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    request = stun.decode(client.poll_transmit(0.0) or b"")
    challenge = request.error_response(
        401, "Unauthorized", stun.Realm("ev\u0007il"), stun.Nonce("n1")
    )
    client.on_server_data(challenge.encode(), 0.1)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 401
    assert "unusable realm" in str(client.error)
    assert client.poll_transmit(0.1) is None and client.next_deadline() is None


def test_an_allocation_granted_without_a_relayed_address_fails() -> None:
    """A success to the Allocate without XOR-RELAYED-ADDRESS (RFC 8656 §7.3 makes it
    mandatory) grants nothing usable: the allocation fails, and says why."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    server = FakeServer()
    request = stun.decode(client.poll_transmit(0.0) or b"")
    for reply in server.handle(request.encode(), 0.0):  # the challenge
        client.on_server_data(reply, 0.0)
    request = stun.decode(client.poll_transmit(0.0) or b"")
    granted = request.success_response(stun.XorMappedAddress(*MAPPED), stun.Lifetime(600))
    client.on_server_data(granted.encode(integrity_key=server.key), 0.1)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.reason == "no relayed address"
    assert client.relayed_address is None
    # The server made an allocation all the same: it is deleted, once, with no wait.
    request = stun.decode(client.poll_transmit(0.1) or b"")
    assert request.method is Method.REFRESH and request.get(stun.Lifetime) == stun.Lifetime(0)
    assert request.verify_integrity(server.key)
    assert client.poll_transmit(0.1) is None and client.next_deadline() is None


def test_a_server_without_ipv4_relays_is_asked_for_an_ipv6_one() -> None:
    """440 (Address Family not Supported, RFC 8656 §7.2) to an Allocate that named no
    family (IPv4, the default): the client asks again for an IPv6 relayed address
    (REQUESTED-ADDRESS-FAMILY 2), and takes the relayed address of that family from the
    answer, where coturn lists an empty IPv4 one first; the 440 failed the allocation."""
    client, server = allocated(server=FakeServer(ipv6_relays_only=True))
    assert client.relayed_address == ("2001:db8::7", 50000)
    allocates = [m for _, m in server.requests if m.method is Method.ALLOCATE]
    families = [m.get(stun.RequestedAddressFamily) for m in allocates]
    assert families == [None, None, stun.RequestedAddressFamily(2)]


def test_a_440_to_the_ipv6_allocate_fails_the_allocation() -> None:
    """The client asks for the other family once: a second 440 fails the allocation."""
    server = FakeServer(errors={Method.ALLOCATE: (440, "Unsupported address family")})
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    exchange(client, server, 0.0)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 440
    assert len([m for _, m in server.requests if m.method is Method.ALLOCATE]) == 3


@pytest.mark.parametrize("code", [401, 438])
@pytest.mark.parametrize(
    ("realm", "nonce"), [(REALM, "n" * 128), ("r" * 128, "n2"), (REALM, "é" * 127 * 3)]
)
def test_a_realm_or_nonce_too_long_to_send_back_fails_the_allocation(
    code: int, realm: str, nonce: str
) -> None:
    """RFC 8489 §14.9-14.10: a REALM or NONCE has under 128 characters, at most 763 bytes.
    One far longer, sent back in every request, would make them too long to encode (a
    65,000-byte nonce raised ValueError out of the client and stopped its refreshes): the
    transaction fails, with a reason, and the client raises nothing."""
    client = TurnClient(USER, PASSWORD, reliable=True)
    client.start(0.0)
    server = FakeServer()
    request = stun.decode(client.poll_transmit(0.0) or b"")
    if code == 438:
        for reply in server.handle(request.encode(), 0.0):  # the challenge
            client.on_server_data(reply, 0.0)
        request = stun.decode(client.poll_transmit(0.0) or b"")
    answer = request.error_response(code, "No", stun.Realm(realm), stun.Nonce(nonce))
    client.on_server_data(answer.encode(), 0.1)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == code
    assert "longer than RFC 8489" in str(client.error)
    assert client.poll_transmit(0.1) is None and client.next_deadline() is None


def test_a_request_too_long_to_encode_fails_the_allocation_and_raises_nothing() -> None:
    """Whatever makes a request too long to encode (a very long username, here: the client
    does not check it; IceServer does) fails the allocation rather than raising."""
    client = TurnClient("u" * 65_500, PASSWORD, reliable=True)
    client.start(0.0)
    request = stun.decode(client.poll_transmit(0.0) or b"")
    challenge = request.error_response(401, "Unauthorized", stun.Realm(REALM), stun.Nonce("n1"))
    client.on_server_data(challenge.encode(), 0.1)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.reason == "request too long"


@pytest.mark.parametrize("closing", [False, True])
def test_a_lost_connection_fails_the_allocation_or_ends_its_closing(closing: bool) -> None:
    """Over TCP or TLS the allocation lives as long as the connection (RFC 8656 §3.1): once
    it is lost the client fails, or, closing, is closed; it sends nothing more."""
    client, _server = allocated(reliable=True)
    if closing:
        client.close(5.0)
    client.connection_lost("connection closed")
    assert state(client) is (TurnState.CLOSED if closing else TurnState.FAILED)
    assert client.poll_transmit(5.0) is None and client.next_deadline() is None
    if not closing:
        assert client.error is not None and client.error.reason == "connection closed"


def test_data_a_lost_connection_never_sent_is_counted_dropped_not_sent() -> None:
    """Data queued for the server when the connection is lost never goes: it counts as
    dropped (the sent counters had kept it, as if relayed)."""
    client, server = allocated(reliable=True)
    client.send_to_peer(PEER, b"first", 1.0)
    exchange(client, server, 1.0)  # (the permission installed, "first" relayed)
    assert [payload for _, payload, _ in server.relayed] == [b"first"]
    for i in range(3):
        assert client.send_to_peer(PEER, b"later %d" % i, 2.0)
    client.connection_lost("connection closed")
    assert client.poll_transmit(2.0) is None
    stats = client.statistics()
    assert (stats.sent_indications + stats.sent_channel_data, stats.dropped) == (1, 3)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (486, "Allocation Quota Reached"),
        (508, "Insufficient Capacity"),
        (300, "Try Alternate"),
        (420, "Unknown Attribute"),
    ],
)
def test_error_response_fails_the_allocation(code: int, reason: str) -> None:
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    exchange(client, FakeServer(errors={Method.ALLOCATE: (code, reason)}), 0.0)
    assert state(client) is TurnState.FAILED
    error = client.error
    assert error is not None
    if code == 420:  # (which attributes the server did not know, from UNKNOWN-ATTRIBUTES)
        reason += " (attributes it does not know: 0x0017, 0x7f01)"
    assert (error.code, error.reason) == (code, reason)
    if code == 300:
        assert error.alternate_server == ("192.0.2.99", 3478)
        assert "192.0.2.99:3478" in str(error)
    else:
        assert error.alternate_server is None


def test_an_ipv6_alternate_server_is_written_in_brackets() -> None:
    """(As the gather report writes it, and a URI: it read 2001:db8::9:3478.)"""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    server = FakeServer(errors={Method.ALLOCATE: (300, "Try Alternate")})
    server.alternate = ("2001:db8::9", 3478)
    exchange(client, server, 0.0)
    assert client.error is not None
    assert "(alternate server [2001:db8::9]:3478)" in str(client.error)


def _challenged(nonce: str, *extra: stun.Attribute) -> tuple[TurnClient, bytes | None]:
    """A client whose first Allocate got a 401 with ``nonce`` (and ``extra``), and what it
    sent then."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    first = client.poll_transmit(0.0)
    assert first is not None
    challenge = stun.decode(first).error_response(
        401, "Unauthorized", stun.Realm(REALM), stun.Nonce(nonce), *extra
    )
    client.on_server_data(challenge.encode(), 0.05)
    return client, client.poll_transmit(0.05)


def _cookie(features: int) -> str:
    """An RFC 8489 §9.2 nonce: the cookie, 24 feature bits in base64, then the rest."""
    return "obMatJos2" + base64.b64encode(features.to_bytes(3, "big")).decode() + "abcdef"


@pytest.mark.parametrize("bits", [0x000002, 0x400000], ids=["erratum-6290", "figure"])
def test_a_nonce_cookie_asking_username_anonymity_gets_userhash(bits: int) -> None:
    """RFC 8489 §9.2.5: a nonce cookie with "Username anonymity" set asks for USERHASH in
    place of USERNAME (the RFC's test vector B.1 sets the bit as 0x000002; a server that
    reads the figure's numbering sets 0x400000); the key is the same."""
    _, wire = _challenged(_cookie(bits))
    assert wire is not None
    retry = stun.decode(wire)
    assert retry.get(stun.Username) is None
    userhash = retry.get(stun.UserHash)
    assert userhash is not None and userhash.value == stun.user_hash(USER, REALM)
    assert retry.verify_integrity(stun.long_term_key(USER, REALM, PASSWORD))
    _, plain = _challenged(_cookie(0x000004))  # (another feature: USERNAME as before)
    assert plain is not None and stun.decode(plain).get(stun.Username) is not None


@pytest.mark.parametrize(
    ("user", "realm"),
    [
        ("alice", "example\u200eorg"),  # (a left-to-right mark: SASLprep prohibits it)
        ("alice\ue000", "example.org"),  # (a private-use character)
    ],
    ids=["lrm-realm", "private-use-user"],
)
def test_a_userhash_is_made_of_the_name_and_realm_as_the_key_is(user: str, realm: str) -> None:
    """USERHASH is made of the user name and realm prepared as the key's are: as written,
    where SASLprep would refuse them (the Allocate was never sent again: the client waited
    in ``allocating`` with no deadline, and on a Refresh or a Deallocate the error ended the
    agent)."""
    client = TurnClient(user, PASSWORD, reliable=False)
    client.start(0.0)
    first = client.poll_transmit(0.0)
    assert first is not None
    challenge = stun.decode(first).error_response(
        401, "Unauthorized", stun.Realm(realm), stun.Nonce(_cookie(0x000002))
    )
    client.on_server_data(challenge.encode(), 0.05)
    wire = client.poll_transmit(0.05)
    assert wire is not None
    userhash = stun.decode(wire).get(stun.UserHash)
    assert userhash is not None
    assert userhash.value == stun.user_hash(user, realm, prepare=str)


@pytest.mark.parametrize("bits", [0x000001, 0x800000], ids=["erratum-6290", "figure"])
def test_a_nonce_cookie_announcing_password_algorithms_that_did_not_come_fails(bits: int) -> None:
    """RFC 8489 §9.2.5: the cookie says the server offered PASSWORD-ALGORITHMS and the 401
    has none (removed on the way, to make the client use MD5): no request goes again."""
    client, wire = _challenged(_cookie(bits))
    assert wire is None
    assert client.state is TurnState.FAILED
    assert client.error is not None and "PASSWORD-ALGORITHMS" in client.error.reason
    offered = stun.PasswordAlgorithms((stun.PasswordAlgorithm(stun.PasswordAlgorithm.MD5),))
    _, retried = _challenged(_cookie(bits), offered)  # (offered: it goes on, as before)
    assert retried is not None


def test_an_error_with_an_unknown_comprehension_required_attribute_is_not_retried() -> None:
    """RFC 8489 §6.3.4: such an error fails its transaction: a 438 that carries one is no
    reason to send the Allocate again."""
    client, wire = _challenged("nonce-1")
    assert wire is not None
    stale = stun.decode(wire).error_response(
        438,
        "Stale Nonce",
        stun.Realm(REALM),
        stun.Nonce("nonce-2"),
        stun.UnknownAttribute(0x7F01, b"\x00\x00\x00\x01"),
    )
    client.on_server_data(
        stale.encode(integrity_key=stun.long_term_key(USER, REALM, PASSWORD)), 0.1
    )
    assert client.poll_transmit(0.1) is None
    assert client.state is TurnState.FAILED
    assert client.error is not None and "0x7f01" in client.error.reason


def test_an_unsigned_300_to_an_authenticated_request_names_no_alternate() -> None:
    """RFC 8489 §14.8: a 300 is believed only with its integrity checked, once the request
    had credentials: else whoever saw the request names the server to go to.  (It still
    fails the Allocate, as an unsigned error does; signed, it names one: see above.)"""
    client, wire = _challenged("nonce-1")
    assert wire is not None
    forged = stun.decode(wire).error_response(
        300, "Try Alternate", stun.AlternateServer("203.0.113.66", 3478)
    )
    client.on_server_data(forged.encode(), 0.1)
    assert client.error is not None and client.error.code == 300
    assert client.error.alternate_server is None


def test_a_servers_reason_is_made_printable_in_the_error() -> None:
    """A reason phrase with a terminal's escapes and line breaks (a hostile server's) is
    written out in the error, which goes into logs: it can neither drive the terminal that
    shows the log nor forge a line of it."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    evil = "Forbidden\x1b]0;owned\x07\x1b[2J\r\nX"
    exchange(client, FakeServer(errors={Method.ALLOCATE: (403, evil)}), 0.0)
    error = client.error
    assert error is not None
    assert error.reason == "Forbidden\\x1b]0;owned\\x07\\x1b[2J\\r\\nX"
    assert str(error).isprintable()


def test_udp_timeout_after_retransmissions() -> None:
    server = FakeServer(silent=True)
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    sends = []
    now = 0.0
    while state(client) is TurnState.ALLOCATING:
        while client.poll_transmit(now) is not None:
            sends.append(now)
        deadline = client.next_deadline()
        assert deadline is not None
        now = deadline
        client.on_timer(now)
    del server
    assert sends == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert now == 39.5
    assert state(client) is TurnState.FAILED
    assert client.error is not None
    assert (client.error.code, client.error.reason) == (None, "timeout")
    assert client.statistics().retransmissions == 6


@pytest.mark.parametrize(
    ("answered", "round_trip", "expected"),
    [
        # The challenge answered the first copy 20 ms after: the Allocate's copies go 100 ms
        # apart at first (3 x 20 ms is below the floor), doubling.
        (1, 0.02, [0.0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3]),
        # 150 ms: three round trips, 450 ms.
        (1, 0.15, [0.0, 0.45, 1.35, 3.15, 6.75, 13.95, 28.35]),
        # 300 ms: no slower than the client's RTO (500 ms).
        (1, 0.3, [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]),
        # The challenge came after a second copy went: which copy it answers is not known
        # (Karn's ambiguity), and the time from the first, 600 ms, is taken: no faster.
        (2, 0.6, [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]),
    ],
)
def test_the_allocate_after_a_challenge_resends_at_the_round_trip_it_measured(
    answered: int, round_trip: float, expected: list[float]
) -> None:
    """RFC 8489 §6.2.1: a client that has measured the round trip to its server computes its
    RTO from it.  The authenticated Allocate after a 401 starts at three times the round trip
    the challenge measured, from 100 ms (``ALLOCATE_RTO_MIN``) to the client's RTO.
    Gathering gives the two transactions ``gather_timeout`` (3 s): at 500 ms doubling, three
    lost copies of the second left the relay out, which Pion's client (200 ms) got."""
    server = FakeServer()
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    first = client.poll_transmit(0.0)
    assert first is not None
    if answered == 2:
        client.on_timer(0.5)
        assert client.poll_transmit(0.5) == first
    now = round_trip
    (challenge,) = server.handle(first, now)
    client.on_server_data(challenge, now)
    sent_at = now
    sends: list[float] = []
    while state(client) is TurnState.ALLOCATING and len(sends) < 7:
        data = client.poll_transmit(now)
        if data is not None:
            assert stun.decode(data).has_integrity
            sends.append(round(now - sent_at, 3))
            continue
        deadline = client.next_deadline()
        assert deadline is not None
        now = deadline
        client.on_timer(now)
    assert sends == expected


def test_tcp_sends_once_and_times_out_after_ti() -> None:
    client = TurnClient(USER, PASSWORD, reliable=True, ti=10.0)
    client.start(0.0)
    assert client.poll_transmit(0.0) is not None
    assert client.next_deadline() == 10.0
    client.on_timer(10.0)
    assert client.poll_transmit(10.0) is None
    assert state(client) is TurnState.FAILED


def test_integrity_failure_is_dropped_and_the_transaction_goes_on() -> None:
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    challenge = stun.decode(client.poll_transmit(0.0) or b"")
    client.on_server_data(
        challenge.error_response(401, "Unauthorized", stun.Realm(REALM), stun.Nonce("n")).encode(),
        0.0,
    )
    request = stun.decode(client.poll_transmit(0.0) or b"")
    forged = request.success_response(stun.XorRelayedAddress(*RELAYED)).encode(
        integrity_key=b"not the key"
    )
    assert client.on_server_data(forged, 0.1) == []
    assert state(client) is TurnState.ALLOCATING
    assert client.statistics().malformed == 1
    genuine = request.success_response(stun.XorRelayedAddress(*RELAYED)).encode(
        integrity_key=stun.long_term_key(USER, REALM, PASSWORD)
    )
    client.on_server_data(genuine, 0.2)
    assert state(client) is TurnState.ALLOCATED
    client.on_server_data(genuine, 0.3)  # a duplicate
    assert client.statistics().stray == 1


def _refresh_due(reliable: bool = False) -> tuple[TurnClient, stun.Message]:
    """An allocated client whose Refresh is out: the client and the request."""
    client, _server = allocated(reliable=reliable)
    client.on_timer(540.0)
    request = stun.decode(client.poll_transmit(540.0) or b"")
    assert request.method is Method.REFRESH
    return client, request


KEY = stun.long_term_key(USER, REALM, PASSWORD)


def test_an_error_that_fails_the_integrity_check_is_discarded() -> None:
    """RFC 8489 §9.2.5: an error response to an authenticated request whose
    MESSAGE-INTEGRITY does not match is discarded (the transaction waits on, as for a lost
    answer: a forged 437 would have ended the allocation); one that comes unsigned, as
    coturn's 437 does, is taken."""
    client, request = _refresh_due()
    forged = request.error_response(437, "Allocation Mismatch").encode(integrity_key=b"no")
    client.on_server_data(forged, 540.1)
    assert state(client) is TurnState.ALLOCATED
    assert client.statistics().malformed == 1
    unsigned = request.error_response(437, "Allocation Mismatch").encode()
    client.on_server_data(unsigned, 540.2)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 437


def test_over_a_stream_an_answer_that_fails_the_integrity_check_ends_the_transaction() -> None:
    """RFC 8489 §9.2.5: over TCP or TLS no other copy of the answer can come, so a success
    that fails the integrity check ends the transaction at once (it waited for Ti, 39.5 s)."""
    client, request = _refresh_due(reliable=True)
    unsigned = request.success_response(stun.Lifetime(600)).encode()
    client.on_server_data(unsigned, 540.1)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and "integrity" in str(client.error)


def test_over_udp_answers_that_all_fail_the_integrity_check_say_so_not_timeout() -> None:
    """RFC 8489 §9.2.5: over UDP a copy of an answer that fails the integrity check is
    waited past (another may come), but if none else does, the failure says that integrity
    was violated, not that no answer came."""
    client, request = _refresh_due()
    unsigned = request.success_response(stun.Lifetime(600)).encode()
    client.on_server_data(unsigned, 540.1)
    assert state(client) is TurnState.ALLOCATED  # (another copy may come)
    now = 540.1
    while state(client) is TurnState.ALLOCATED and now < 700:
        deadline = client.next_deadline()
        assert deadline is not None
        now = deadline
        client.on_timer(now)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.reason == "response failed the integrity check"


def test_a_success_with_an_unknown_comprehension_required_attribute_is_taken() -> None:
    """A success with an unknown comprehension-required attribute is taken (RFC 8489 §6.3.4
    would fail the transaction): the server has made what was asked for, and failing it
    here would leave an allocation (or a channel whose data would be lost) on the server
    unknown to the client."""
    client, request = _refresh_due()
    odd = request.success_response(
        stun.Lifetime(600), stun.UnknownAttribute(0x7FFE, b"????")
    ).encode(integrity_key=KEY)
    client.on_server_data(odd, 540.1)
    assert state(client) is TurnState.ALLOCATED
    assert client.next_deadline() == 540.1 + 540.0


# --- refreshes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("granted", "interval"), [(600, 540.0), (100, 80.0), (3600, 3540.0)])
def test_refresh_before_the_lifetime_ends(granted: int, interval: float) -> None:
    client, server = allocated(server=FakeServer(max_lifetime=granted), lifetime=3600)
    assert client.lifetime == granted
    assert client.next_deadline() == interval
    run_until(client, server, 3 * interval + 1)
    refreshes = [t for t, m in server.requests if m.method is Method.REFRESH]
    assert refreshes == [interval, 2 * interval, 3 * interval]
    assert all(m.get(stun.Lifetime) == stun.Lifetime(3600) for _, m in server.requests[2:])


def test_refresh_now_asks_at_once_and_a_mismatch_fails_the_client() -> None:
    """``refresh_now`` (after a network change: does the server still hold it?) sends a
    Refresh at once, one at a time; the next comes in its time after the answer.  A 437
    (the server holds no allocation for this 5-tuple) fails the client."""
    client, server = allocated()
    client.refresh_now(10.0)
    client.refresh_now(10.0)  # (one is waiting: no second)
    assert client.refreshing
    exchange(client, server, 10.0)
    assert server.methods() == ["ALLOCATE", "ALLOCATE", "REFRESH"]
    assert not client.refreshing
    assert client.next_deadline() == pytest.approx(10.0 + 600 - 60)
    server.errors[Method.REFRESH] = (437, "Allocation Mismatch")
    client.refresh_now(20.0)
    exchange(client, server, 20.0)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 437
    client.refresh_now(30.0)  # (a no-op unless allocated)
    assert client.poll_transmit(30.0) is None


def test_refresh_refused_fails_the_allocation() -> None:
    client, server = allocated()
    server.errors[Method.REFRESH] = (437, "Allocation Mismatch")
    run_until(client, server, 600.0)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 437
    assert not client.send_to_peer(PEER, b"x", 600.0)


def test_a_refresh_granted_no_lifetime_fails_the_allocation() -> None:
    """A Refresh answered with LIFETIME 0 (the server ended the allocation) fails it, rather
    than refreshing again at once, a round trip at a time."""
    client, server = allocated()
    server.max_lifetime = 0
    now = client.next_deadline()
    assert now is not None
    client.on_timer(now)
    exchange(client, server, now)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.reason == "lifetime 0"
    assert client.next_deadline() is None
    assert client.poll_transmit(now) is None


def test_an_allocation_granted_a_lifetime_of_0_fails() -> None:
    """An Allocate answered with LIFETIME 0 is over as it is granted: a failure, not a relay
    signalled and dead at once."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    server = FakeServer(max_lifetime=0)
    client.start(0.0)
    exchange(client, server, 0.0)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.reason == "lifetime 0"
    assert client.relayed_address is None


# --- permissions, channels, data ---------------------------------------------------------------


def test_permission_then_indications_then_channel_data() -> None:
    client, server = allocated()
    assert client.send_to_peer(PEER, b"one", 1.0)
    assert client.send_to_peer(PEER, b"two", 1.0)
    first = stun.decode(client.poll_transmit(1.0) or b"")
    assert first.method is Method.CREATE_PERMISSION
    assert first.get(stun.XorPeerAddress) == stun.XorPeerAddress(PEER[0], 0)
    assert client.poll_transmit(1.0) is None  # the data waits for the permission
    assert not client.permission_installed(PEER)
    for reply in server.handle(first.raw or b"", 1.0):
        client.on_server_data(reply, 1.0)
    assert client.permission_installed(PEER)
    exchange(client, server, 1.0)
    assert server.relayed == [(PEER, b"one", "indication"), (PEER, b"two", "indication")]
    assert server.methods()[-2:] == ["CREATE_PERMISSION", "CHANNEL_BIND"]
    assert client.channel_bound(PEER)
    assert client.send_to_peer(PEER, b"three", 2.0)
    frame = client.poll_transmit(2.0)
    assert frame is not None and len(frame) == 4 + 5  # unpadded over UDP
    server.handle(frame, 2.0)
    assert server.relayed[-1] == (PEER, b"three", "channel")
    # A second port on the same IP reuses the permission and gets its own channel at once.
    assert client.send_to_peer(PEER2, b"four", 3.0)
    exchange(client, server, 3.0)
    assert server.relayed[-1] == (PEER2, b"four", "indication")
    assert server.methods()[-1] == "CHANNEL_BIND"
    assert sorted(server.channels.values()) == [PEER, PEER2]
    stats = client.statistics()
    assert (stats.sent_indications, stats.sent_channel_data, stats.dropped) == (3, 1, 0)


def _asked(server: FakeServer) -> dict[str, list[float]]:
    """When the server was asked for a permission, and for a channel."""
    return {
        name: [t for t, m in server.requests if m.method is method]
        for name, method in (("perm", Method.CREATE_PERMISSION), ("chan", Method.CHANNEL_BIND))
    }


def _channel_numbers(server: FakeServer) -> set[int]:
    return {
        number.channel
        for _, m in server.requests
        if m.method is Method.CHANNEL_BIND and (number := m.get(stun.ChannelNumber)) is not None
    }


def test_data_the_transport_could_not_take_counts_as_dropped_not_sent() -> None:
    """A stream's buffer full, the shell hands back what it could not send (``unsent``):
    ChannelData and a Send indication count as dropped, not as sent."""
    client, server = allocated()
    assert client.send_to_peer(PEER, b"one", 1.0)
    exchange(client, server, 1.0)
    exchange(client, server, 1.0)
    assert client.channel_bound(PEER)
    before = client.statistics()
    assert client.send_to_peer(PEER, b"two", 2.0)  # (ChannelData)
    assert client.send_to_peer(PEER2, b"three", 2.0)  # (a Send indication, then its bind)
    while (frame := client.poll_transmit(2.0)) is not None:
        client.unsent(frame)
    after = client.statistics()
    assert after.sent_channel_data == before.sent_channel_data
    assert after.sent_indications == before.sent_indications
    assert after.dropped == before.dropped + 2


def test_permission_and_channel_refresh_timing() -> None:
    """While data goes to the peer, its permission is refreshed every 240 s and its channel
    every 540 s, with the one number."""
    client, server = allocated()
    for now in range(10, 1100, 100):
        client.send_to_peer(PEER, b"x", float(now))
        run_until(client, server, now + 100.0, now=float(now))
    assert _asked(server) == {
        "perm": [10.0, 250.0, 490.0, 730.0, 970.0],
        "chan": [10.0, 550.0, 1090.0],
    }
    assert _channel_numbers(server) == {0x4000}


def test_data_that_only_comes_from_the_peer_keeps_neither_permission_nor_channel() -> None:
    """Data that only comes from the peer (on the channel, or in a Data indication from
    its IP) is no use of them: they lapse as if idle (240 s after the client last sent
    there, at a refresh).  It kept them: a peer the application gave up on (ICE failed, or
    restarted to another) kept the server relaying to it for as long as it sent, its data
    dropped (the turnperm review)."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 10.0)
    exchange(client, server, 10.0)
    for now in range(10, 1100, 100):
        if now % 200 == 10:
            frame = stun.encode_channel_data(0x4000, b"in", pad=False)
        else:
            frame = server.data_indication(("192.0.2.10", 7000), b"in")
        client.on_server_data(frame, float(now))
        run_until(client, server, now + 100.0, now=float(now))
    assert _asked(server) == {"perm": [10.0, 250.0], "chan": [10.0]}  # (lapsed at 490)
    assert not client.permission_installed(PEER) and not client.channel_bound(PEER)


def test_an_idle_permission_and_channel_lapse_and_data_asks_again() -> None:
    """A permission that no data went to or came from for 240 s when its refresh is due
    lapses, and its IP's channels with it; data for the peer later asks again, and binds
    the channel again with its number (the server may hold it for the peer still)."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 11.0)
    run_until(client, server, 1000.0, now=11.0)
    assert _asked(server) == {"perm": [11.0, 251.0], "chan": [11.0]}  # (lapsed at 491)
    assert not client.permission_installed(PEER) and not client.channel_bound(PEER)
    deadline = client.next_deadline()
    assert deadline is not None and deadline > 1000.0  # (the allocation's refresh only)
    assert client.send_to_peer(PEER, b"y", 1000.0)
    exchange(client, server, 1000.0)
    assert _asked(server) == {"perm": [11.0, 251.0, 1000.0], "chan": [11.0, 1000.0]}
    assert server.relayed[-1] == (PEER, b"y", "indication")
    assert client.channel_bound(PEER)
    assert _channel_numbers(server) == {0x4000}


def _binds(server: FakeServer) -> list[tuple[float, Address, int]]:
    """Each ChannelBind the server was asked: when, for which peer, with which number."""
    binds = []
    for t, m in server.requests:
        peer, number = m.get(stun.XorPeerAddress), m.get(stun.ChannelNumber)
        if m.method is Method.CHANNEL_BIND and peer is not None and number is not None:
            binds.append((t, (peer.address, peer.port), number.channel))
    return binds


def test_a_lapsed_channels_number_goes_to_another_peer_five_minutes_after_it_expired() -> None:
    """A lapsed channel keeps its number and its peer while the server may hold the
    binding (600 s from its last bind) and 300 s more (RFC 8656 §12); then both are
    forgotten, and the number is the next new peer's."""
    client, server = allocated()
    a, b, c = ("192.0.2.10", 6000), ("192.0.2.11", 6000), ("192.0.2.12", 6000)
    client.send_to_peer(a, b"x", 11.0)  # (bound at 11: held by the server to 611 at most)
    run_until(client, server, 1000.0, now=11.0)  # (lapsed at 491)
    assert client.send_to_peer(b, b"x", 1000.0)  # (no pass since 911 yet: a's number held)
    run_until(client, server, 1100.0, now=1000.0)  # (a pass at 1080 forgets a)
    assert a not in client._peers and a[0] not in client._permissions
    assert client.send_to_peer(c, b"x", 1100.0)
    exchange(client, server, 1100.0)
    assert [(peer, number) for _, peer, number in _binds(server)] == [
        (a, 0x4000),
        (b, 0x4001),
        (c, 0x4000),
    ]


def test_a_number_whose_refresh_was_refused_goes_to_no_other_peer() -> None:
    """``a``'s channel is bound at 1 s (the server holds it to 601 s); its refresh at 541 s
    is refused.  The number goes to no other peer (RFC 8656 §12: ChannelData the server
    still sends on it is ``a``'s, and had come out as the new peer's): ``a`` keeps it, and
    binds it again once the server takes it (the number was given up, and went to another
    peer at 901 s, ``a``'s binding's end plus 5 minutes)."""
    client, server = allocated()
    a, b, c = ("192.0.2.10", 6000), ("192.0.2.20", 6000), ("192.0.2.30", 6000)
    client.send_to_peer(a, b"x", 1.0)
    now = run_until(client, server, 1.0, now=1.0)
    assert client.channel_bound(a)
    for t in range(60, 541, 60):  # (a in use: its channel is refreshed at 541)
        now = run_until(client, server, float(t), now=now)
        client.send_to_peer(a, b"x", float(t))
    server.errors[Method.CHANNEL_BIND] = (403, "Forbidden")
    now = run_until(client, server, 545.0, now=now)
    assert _binds(server)[-1][1:] == (a, 0x4000)  # (the refused refresh)
    del server.errors[Method.CHANNEL_BIND]
    client.send_to_peer(b, b"y", 546.0)
    exchange(client, server, 546.0)
    exchange(client, server, 546.0)
    assert _binds(server)[-1][1:] == (b, 0x4001)
    on_a = client.on_server_data(stun.encode_channel_data(0x4000, b"a's", pad=False), 547.0)
    assert on_a == [(a, b"a's")]
    now = run_until(client, server, 560.0, now=547.0)
    assert _binds(server)[-1][1:] == (a, 0x4000) and client.channel_bound(a)
    client.send_to_peer(c, b"z", 901.0)
    exchange(client, server, 901.0)
    exchange(client, server, 901.0)
    assert _binds(server)[-1][1:] == (c, 0x4002)


def test_a_relay_that_checks_new_peers_for_hours_keeps_records_of_the_last_ones_only() -> None:
    """Every 5 minutes 20 new peer addresses are checked through the relay (each ICE
    generation's, say), then fall idle: the records of the idle ones go, with their
    permissions, and their channel numbers serve new peers (they had been kept for the
    allocation's life, and the numbers had run out after 4096 peers).  With permissions
    refused, or channels, the records go too."""
    for refused in (None, Method.CREATE_PERMISSION, Method.CHANNEL_BIND):
        errors: dict[Method, tuple[int, str]] = {}
        if refused is not None:
            errors[refused] = (403, "Forbidden")
        client, server = allocated(server=FakeServer(errors=errors))
        now, ip = 1.0, 0
        while now < 3 * 3600:
            for _ in range(20):
                ip += 1
                client.send_to_peer((f"10.0.{ip >> 8}.{ip & 255}", 5000), b"check", now)
            exchange(client, server, now)
            now = run_until(client, server, now + 300.0, now=now)
        assert ip == 720
        assert len(client._permissions) <= 80 and len(client._peers) <= 80
        # (Refused binds give their numbers back at once: 20 go at a time.)
        numbers = {None: 80, Method.CREATE_PERMISSION: 0, Method.CHANNEL_BIND: 20}[refused]
        assert len(_channel_numbers(server)) <= numbers


def test_a_peer_without_a_channel_is_forgotten_when_its_permission_lapses() -> None:
    server = FakeServer(errors={Method.CHANNEL_BIND: (400, "Bad Request")})
    client, server = allocated(server=server)
    client.send_to_peer(PEER, b"x", 11.0)
    run_until(client, server, 1000.0, now=11.0)
    assert client._peers == {}
    assert client.send_to_peer(PEER, b"y", 1000.0)
    exchange(client, server, 1000.0)
    assert server.relayed[-1] == (PEER, b"y", "indication")


def test_udp_channel_data_longer_than_its_length_says_is_taken_to_its_length() -> None:
    """Over UDP, ChannelData is dropped only when the datagram is shorter than its length
    says (RFC 8656 §12.6), and padding is optional (§12.5): what follows the length is no
    part of it.  (A datagram with more than 3 bytes after it was dropped as malformed; Pion
    takes it.)  Over TCP a frame is exact, and stays so."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    frame = stun.encode_channel_data(0x4000, b"hello") + bytes(8)
    assert client.on_server_data(frame, 2.0) == [(PEER, b"hello")]
    assert client.statistics().malformed == 0


def test_channel_data_the_server_would_not_relay_is_dropped() -> None:
    """ChannelData on a channel whose binding (bound at 11: 611 at most) and its IP's
    permission (551 at most) both ran out is dropped, as a Data indication from the IP is
    (RFC 8656 §12.6): the server relays none such.  (It was taken, and kept the peer's
    record alive.)"""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 11.0)
    exchange(client, server, 11.0)
    frame = stun.encode_channel_data(0x4000, b"chan")
    assert client.on_server_data(frame, 12.0) == [(PEER, b"chan")]
    run_until(client, server, 700.0, now=12.0)
    assert not client.permission_installed(PEER) and not client.channel_bound(PEER)
    assert client.on_server_data(server.data_indication(PEER, b"ind"), 700.0) == []
    assert client.on_server_data(frame, 700.0) == []


def test_a_peer_takes_no_other_number_within_five_minutes_of_its_bindings_end() -> None:
    """RFC 8656 §12: once a binding expires, its peer is bound to no other number for 5
    minutes.  Bound to 0x4000 at 11 (611 at most), refused a bind again at 620 (its number
    given back), then idle: its record stays until 911, and data at 885 goes in a Send
    indication, not on 0x4001.  (The record was forgotten at 880, and 0x4001 bound.)"""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 11.0)
    run_until(client, server, 620.0, now=11.0)
    assert not client.channel_bound(PEER)
    server.errors[Method.CHANNEL_BIND] = (403, "Forbidden")
    client.send_to_peer(PEER, b"y", 620.0)
    exchange(client, server, 620.0)
    exchange(client, server, 620.0)
    del server.errors[Method.CHANNEL_BIND]
    run_until(client, server, 880.0, now=620.0)
    client.on_timer(880.0)  # (idle records are forgotten now)
    exchange(client, server, 880.0)
    client.send_to_peer(PEER, b"z", 885.0)
    exchange(client, server, 885.0)
    binds = [
        (t, m.get(stun.ChannelNumber).channel)  # type: ignore[union-attr]
        for t, m in server.requests
        if m.method is Method.CHANNEL_BIND
    ]
    assert binds == [(11.0, 0x4000), (620.0, 0x4000)]
    assert server.relayed[-1] == (PEER, b"z", "indication")


def test_a_late_timer_counts_what_ran_out_meanwhile_as_gone() -> None:
    """The driver's call came late (a stalled loop): a permission in use, installed at 0,
    ran out at 300 before its refresh went at 301.  It counts as held no more (it did,
    and the next deadline was 300, in the past), and is asked for again at once."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 0.0)
    exchange(client, server, 0.0)
    client.send_to_peer(PEER, b"y", 200.0)  # (in use: refreshed, not lapsed)
    asked = len(server.requests)
    client.on_timer(301.0)
    assert not client.permission_installed(PEER)
    deadline = client.next_deadline()
    assert deadline is None or deadline > 301.0
    exchange(client, server, 301.0)
    assert server.requests[asked][1].method is Method.CREATE_PERMISSION  # (at 301)
    assert client.permission_installed(PEER)


def test_a_bound_peer_written_another_way_gets_channel_data() -> None:
    """An IPv6 peer written otherwise than canonically (``2001:db8:0::10``) is the peer
    bound: its data goes as ChannelData (it went in Send indications, every time, though
    ``channel_bound`` said yes)."""
    client, server = allocated(server=FakeServer(ipv6_relays_only=True))
    peer = ("2001:db8:0::10", 6000)
    for now in (0.0, 1.0):
        client.send_to_peer(peer, b"x", now)
        exchange(client, server, now)
    assert client.channel_bound(peer)
    client.send_to_peer(peer, b"y", 2.0)
    exchange(client, server, 2.0)
    assert server.relayed[-1][2] == "channel"


def test_no_peer_data_is_taken_once_the_allocation_is_deleted() -> None:
    """Deleted (or failed), the allocation relays nothing: ChannelData on its channel and
    Data indications from its peer are dropped as malformed (both were taken)."""
    client, server = allocated()
    for now in (0.0, 1.0):
        client.send_to_peer(PEER, b"x", now)
        exchange(client, server, now)
    (number,) = server.channels
    client.close(2.0)
    exchange(client, server, 2.0)
    assert state(client) is TurnState.CLOSED
    malformed = client.statistics().malformed
    assert client.on_server_data(stun.encode_channel_data(number, b"late"), 3.0) == []
    assert client.on_server_data(server.data_indication(PEER, b"late"), 3.0) == []
    assert client.statistics().malformed == malformed + 2


def test_a_channel_bind_that_got_no_answer_keeps_its_number_and_binds_again() -> None:
    """The server bound the channel, but its answers were lost: the server relays the
    peer's data on the channel, which is taken; data to the peer goes in Send indications
    meanwhile, and the bind goes again 5 s after the timeout, with the same number."""
    client, server = allocated()
    now = 1.0
    client.send_to_peer(PEER, b"x", now)

    def exchange_losing_bind_answers() -> None:
        while (data := client.poll_transmit(now)) is not None:
            replies = server.handle(data, now)
            if data[0] < 4 and stun.decode(data).method is Method.CHANNEL_BIND:
                continue
            for reply in replies:
                client.on_server_data(reply, now)

    exchange_losing_bind_answers()
    while (deadline := client.next_deadline()) is not None and deadline <= 42.0:
        now = deadline
        client.on_timer(now)
        exchange_losing_bind_answers()
    assert server.channels == {0x4000: PEER} and not client.channel_bound(PEER)
    frame = stun.encode_channel_data(0x4000, b"from the peer", pad=False)
    assert client.on_server_data(frame, 42.0) == [(PEER, b"from the peer")]
    assert client.send_to_peer(PEER, b"to the peer", 42.0)
    exchange(client, server, 42.0)
    assert server.relayed[-1] == (PEER, b"to the peer", "indication")
    run_until(client, server, 60.0, now=42.0)
    assert client.channel_bound(PEER)
    assert _asked(server)["chan"][-1] == pytest.approx(1.0 + 39.5 + 5.0)
    assert _channel_numbers(server) == {0x4000}


class _Relayed:
    """A client and server driven through time, the application sending to ``PEER`` at the
    times given.  ``lose(now, message)`` drops a request on its way to the server;
    ``hold(now, message)`` keeps the server's answer to it back until :meth:`release`.
    Records when ChannelData went, and when the server installed a permission for
    ``PEER``'s IP (a CreatePermission or ChannelBind it took: RFC 8656 §9, §12.2)."""

    def __init__(
        self,
        lose: Callable[[float, Message], bool] = lambda now, message: False,
        hold: Callable[[float, Message], bool] = lambda now, message: False,
    ) -> None:
        self.client, self.server = allocated()
        self.lose, self.hold = lose, hold
        self.held: list[bytes] = []
        self.channel_data: list[float] = []
        self.installs: list[float] = []

    def _exchange(self, now: float) -> None:
        client = self.client
        while (data := client.poll_transmit(now)) is not None:
            if 0x40 <= data[0] <= 0x4F:
                self.channel_data.append(now)
                self.server.handle(data, now)
                continue
            message = stun.decode(data)
            if message.message_class is MessageClass.REQUEST and self.lose(now, message):
                continue
            replies = self.server.handle(data, now)
            if message.method in (Method.CREATE_PERMISSION, Method.CHANNEL_BIND):
                self.installs.append(now)
            if message.message_class is MessageClass.REQUEST and self.hold(now, message):
                self.held += replies
                continue
            for reply in replies:
                client.on_server_data(reply, now)

    def release(self, now: float) -> None:
        for reply in self.held:
            self.client.on_server_data(reply, now)
        self.held = []
        self._exchange(now)

    def run(self, end: float, sends: Sequence[float] = (), peer: Address = PEER) -> None:
        """From the last time run to ``end``: the client's deadlines, and a send to
        ``peer`` at each of ``sends``."""
        pending = sorted(sends)
        while True:
            deadline = self.client.next_deadline()
            upcoming = [t for t in (deadline, pending[0] if pending else None) if t is not None]
            if not upcoming or min(upcoming) > end:
                return
            now = min(upcoming)
            if pending and pending[0] == now:
                pending.pop(0)
                self.client.send_to_peer(peer, b"data", now)
            else:
                self.client.on_timer(now)
            self._exchange(now)

    def unpermitted(self) -> list[float]:
        """When ChannelData went with no permission held on the server."""
        return [
            t
            for t in self.channel_data
            if not any(t - PERMISSION_LIFETIME < i <= t for i in self.installs)
        ]


def test_a_permission_refresh_that_gets_no_answer_is_asked_again_in_time() -> None:
    """The refresh of a permission whose channel carries data is lost (three times over,
    each transmission): while the server still holds the permission the client asks again
    (5 s after), instead of giving it up, which left the channel's data to a permission
    that only the ChannelBind refreshes renewed, 300 s out of each 540."""

    def lose(now: float, message: Message) -> bool:
        return message.method is Method.CREATE_PERMISSION and 240.0 <= now < 285.0

    relayed = _Relayed(lose=lose)
    relayed.run(1200.0, sends=[1.0 + 20 * i for i in range(60)])
    assert relayed.client.permission_installed(PEER) and relayed.client.channel_bound(PEER)
    assert relayed.unpermitted() == []
    assert [t for t in relayed.installs if 280 < t < 300] == [pytest.approx(1 + 240 + 39.5 + 5)]


def test_a_channel_bound_while_its_permission_lapsed_holds_the_permission_again() -> None:
    """PEER2's permission (the IP's) lapses at 721 while PEER's ChannelBind refresh, sent
    at 700, waits for its answer; the answer comes at 725.  The binding installed the
    permission on the server (RFC 8656 §12.2): the client holds it again and refreshes it
    in its time, as PEER's data goes on, rather than sending ChannelData that the server
    drops from 1025 on."""
    relayed = _Relayed(hold=lambda now, m: m.method is Method.CHANNEL_BIND and 699 < now < 722)
    relayed.run(1.0, sends=[1.0], peer=PEER2)
    relayed.run(699.0, sends=[160.0, 470.0])
    relayed.run(722.0)
    assert not relayed.client.permission_installed(PEER)  # (lapsed at 721)
    relayed.release(725.0)
    relayed.run(1300.0, sends=[730.0 + 20 * i for i in range(28)])
    assert relayed.client.permission_installed(PEER) and relayed.client.channel_bound(PEER)
    assert relayed.unpermitted() == []


def test_a_data_indication_from_an_ip_whose_permission_ended_is_dropped() -> None:
    """A lapsed permission's record stays (for its channels' numbers): a Data indication
    from its IP is taken while the server may still hold the permission (300 s from the
    last grant), and dropped after (RFC 8656 §11.6)."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 11.0)
    run_until(client, server, 1000.0, now=11.0)  # (refreshed at 251; lapsed at 491)
    indication = server.data_indication(("192.0.2.10", 9999), b"late")
    assert client.on_server_data(indication, 500.0) == [(("192.0.2.10", 9999), b"late")]
    malformed = client.statistics().malformed
    assert client.on_server_data(indication, 551.0) == []
    assert client.statistics().malformed == malformed + 1


def test_a_data_indication_while_a_lapsed_permission_lasts_is_taken_without_a_channel() -> None:
    """As above, the peer without a channel (the server refused the ChannelBind): the
    lapsed permission's record stays while the server may still hold it, and a Data
    indication it relays then is taken.  The record went as the permission lapsed, and
    the data was dropped, counted malformed."""
    server = FakeServer(errors={stun.Method.CHANNEL_BIND: (403, "Forbidden")})
    client, server = allocated(server=server)
    client.send_to_peer(PEER, b"x", 11.0)
    run_until(client, server, 495.0, now=11.0)  # (refreshed at 251; lapsed at 491)
    assert client.permission_installed(PEER) is False
    indication = server.data_indication(("192.0.2.10", 9999), b"late")
    assert client.on_server_data(indication, 500.0) == [(("192.0.2.10", 9999), b"late")]
    run_until(client, server, 560.0, now=500.0)
    assert client.on_server_data(indication, 560.0) == []  # (it ended at 551)


def test_queue_behind_a_permission_is_bounded() -> None:
    client, server = allocated(queue_limit=3)
    assert [client.send_to_peer(PEER, b"%d" % i, 1.0) for i in range(5)] == [True] * 3 + [False] * 2
    assert client.statistics().dropped == 2
    exchange(client, server, 1.0)
    assert [d for _, d, _ in server.relayed] == [b"0", b"1", b"2"]


def test_refused_permission_drops_the_queue() -> None:
    client, server = allocated(
        server=FakeServer(errors={Method.CREATE_PERMISSION: (403, "Forbidden")})
    )
    assert client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    assert server.relayed == []
    assert not client.send_to_peer(PEER, b"y", 2.0)
    assert client.statistics().dropped == 2
    assert state(client) is TurnState.ALLOCATED  # the allocation itself is fine
    # Counted and told, for the caller to say (it said nothing: an operator whose server
    # denies the peer saw only data dropped, as for a full queue).
    assert client.statistics().refused == 1
    assert client.refusals == {PEER[0]: "403 Forbidden"}
    # Refused again (the permission asked anew, 5 s on, then 15): one entry a peer IP, for
    # a caller that never empties it (a list grew by one at each refusal).
    for now in (7.0, 23.0):
        client.send_to_peer(PEER, b"z", now)
        exchange(client, server, now)
    assert client.statistics().refused == 3
    assert client.refusals == {PEER[0]: "403 Forbidden"}


@pytest.mark.parametrize("method", [Method.CREATE_PERMISSION, Method.CHANNEL_BIND])
def test_an_allocation_mismatch_to_a_permission_or_channel_fails_the_allocation(
    method: Method,
) -> None:
    """437 to a CreatePermission or ChannelBind says the server holds no allocation for
    the client: the allocation fails now, rather than at its next refresh."""
    client, server = allocated(server=FakeServer(errors={method: (437, "Allocation Mismatch")}))
    assert client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    exchange(client, server, 1.0)  # (the ChannelBind follows the permission)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 437


def test_a_failed_permission_is_asked_again_after_a_growing_pause() -> None:
    """Data for the peer is dropped meanwhile; the first data 5 s after the failure asks
    again, then 10 s after the next failure; once granted, data flows."""
    server = FakeServer(errors={Method.CREATE_PERMISSION: (508, "Insufficient Capacity")})
    client, server = allocated(server=server)

    def asked() -> list[float]:
        return [t for t, m in server.requests if m.method is Method.CREATE_PERMISSION]

    assert client.send_to_peer(PEER, b"a", 1.0)
    exchange(client, server, 1.0)
    assert not client.send_to_peer(PEER, b"b", 5.9)
    assert client.send_to_peer(PEER, b"c", 6.0)  # queued behind the new request
    exchange(client, server, 6.0)
    assert asked() == [1.0, 6.0]
    assert not client.send_to_peer(PEER, b"d", 15.9)
    del server.errors[Method.CREATE_PERMISSION]
    assert client.send_to_peer(PEER, b"e", 16.0)
    exchange(client, server, 16.0)
    assert asked() == [1.0, 6.0, 16.0]
    assert client.permission_installed(PEER)
    assert [d for _, d, _ in server.relayed] == [b"e"]
    assert client.statistics().dropped == 4  # a and c with their refusals, b and d
    # Refused again later (at its refresh, 256 s), the pause starts over from 5 s; the
    # server holds the permission to its end (316 s, RFC 8656 §9), so it stays, and the
    # data goes, until then (it ended at the refusal: the authturn review).
    server.errors[Method.CREATE_PERMISSION] = (403, "Forbidden")
    run_until(client, server, 260.0, now=16.0)
    assert asked()[-1] == 256.0
    assert client.permission_installed(PEER) and client.channel_bound(PEER)
    assert client.send_to_peer(PEER, b"f", 260.0)
    exchange(client, server, 260.0)
    assert [d for _, d, _ in server.relayed] == [b"e", b"f"]
    run_until(client, server, 320.0, now=260.0)
    assert asked()[3:] == [256.0, 261.0, 271.0, 291.0, 316.0]
    assert not client.permission_installed(PEER) and not client.channel_bound(PEER)
    assert "192.0.2.10" in client.refusals
    sent = client.statistics().sent_channel_data
    assert not client.send_to_peer(PEER, b"g", 320.0)
    assert client.statistics().sent_channel_data == sent


def test_refused_channel_keeps_send_indications() -> None:
    client, server = allocated(
        server=FakeServer(errors={Method.CHANNEL_BIND: (400, "Bad Request")})
    )
    client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    assert not client.channel_bound(PEER)
    client.send_to_peer(PEER, b"y", 2.0)
    exchange(client, server, 2.0)
    assert [kind for _, _, kind in server.relayed] == ["indication", "indication"]


def test_channel_data_is_padded_over_streams() -> None:
    client, server = allocated(reliable=True)
    client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    assert client.channel_bound(PEER)
    client.send_to_peer(PEER, b"abcde", 2.0)
    frame = client.poll_transmit(2.0)
    assert frame == b"\x40\x00\x00\x05abcde\x00\x00\x00"


def test_receiving_data_indications_and_channel_data() -> None:
    """A Data indication from a peer no permission was asked for is dropped (RFC 8656
    §11.6: the server relays none; forged, or a server gone wrong); once one is asked for
    (the first send to the peer), it is delivered, and so is ChannelData on its channel."""
    client, server = allocated()
    assert client.on_server_data(server.data_indication(PEER, b"early"), 1.0) == []
    client.send_to_peer(PEER, b"x", 1.0)
    assert client.on_server_data(server.data_indication(PEER, b"hi"), 1.0) == [(PEER, b"hi")]
    exchange(client, server, 1.0)
    assert client.on_server_data(stun.encode_channel_data(0x4000, b"chan"), 2.0) == [
        (PEER, b"chan")
    ]
    assert client.on_server_data(stun.encode_channel_data(0x4000, b"pad", pad=True), 2.0) == [
        (PEER, b"pad")
    ]
    assert client.on_server_data(stun.encode_channel_data(0x4001, b"?"), 2.0) == []
    assert client.statistics().received == 3
    assert client.statistics().malformed == 2


def test_a_data_indication_names_its_peer_as_the_client_does() -> None:
    """A Data indication whose XOR-PEER-ADDRESS writes an IPv4 peer as an IPv4-mapped IPv6
    address is from the IPv4 peer: its permission is found, and the peer is handed on in
    the form the client knows it by (as ChannelData's and send_to_peer's), so that the
    agent matches it to its pair rather than to an unknown source."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 1.0)
    mapped = ("::ffff:" + PEER[0], PEER[1])
    assert client.on_server_data(server.data_indication(mapped, b"hi"), 1.0) == [(PEER, b"hi")]
    assert client.statistics().received == 1


def test_a_data_indication_with_an_unknown_required_attribute_is_dropped() -> None:
    """RFC 8489 §6.3.2: an indication with an unknown comprehension-required attribute is
    discarded, its data with it (counted malformed; it was delivered)."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 1.0)
    indication = stun.Message(
        Method.DATA,
        MessageClass.INDICATION,
        attributes=(
            stun.XorPeerAddress(*PEER),
            stun.Data(b"payload"),
            stun.UnknownAttribute(0x7F00, bytes(4)),
        ),
    ).encode()
    assert client.on_server_data(indication, 2.0) == []
    assert client.statistics().malformed == 1
    assert client.on_server_data(server.data_indication(PEER, b"hi"), 2.0) == [(PEER, b"hi")]


def test_not_an_ip_or_wrong_family_is_dropped() -> None:
    client, _ = allocated()
    assert not client.send_to_peer(("example.org", 1), b"x", 1.0)
    assert not client.send_to_peer(("2001:db8::1", 1), b"x", 1.0)
    assert not client.send_to_peer(("192.0.2.1", 0), b"x", 1.0)
    assert client.poll_transmit(1.0) is None
    assert client.statistics().dropped == 3


def test_a_port_that_is_no_int_is_dropped_and_counted() -> None:
    """A port given as text, a float or a bool is no port: dropped and counted, nothing sent
    (it used to be queued, then lost when the permission came)."""
    client, _ = allocated()
    for port in ("5000", 5000.0, True):
        assert not client.send_to_peer(("198.51.100.1", port), b"x", 1.0)  # type: ignore[arg-type]
    assert client.poll_transmit(1.0) is None
    assert client.statistics().dropped == 3


def test_two_spellings_of_one_ipv6_address_are_one_peer() -> None:
    client, server = allocated(server=FakeServer(relayed_address=("2001:db8::99", 5000)))
    assert client.send_to_peer(("2001:db8::1", 7), b"a", 1.0)
    assert client.send_to_peer(("2001:DB8:0::1", 7), b"b", 1.0)
    exchange(client, server, 1.0)
    asked = [m for _, m in server.requests if m.method is Method.CREATE_PERMISSION]
    assert len(asked) == 1
    assert server.permissions == {"2001:db8::1"}
    assert client.permission_installed(("2001:DB8::1", 7))
    relayed = [(peer, payload) for peer, payload, _how in server.relayed]
    assert relayed == [(("2001:db8::1", 7), b"a"), (("2001:db8::1", 7), b"b")]


def _requests(wire: list[bytes]) -> list[Message]:
    return [m for m in map(stun.decode, wire) if m.message_class is MessageClass.REQUEST]


@pytest.mark.parametrize("reliable", [False, True])
def test_over_udp_ten_requests_at_most_are_out_and_the_others_go_as_answers_come(
    reliable: bool,
) -> None:
    """An agent checking twenty peer addresses through a relay at once asks for twenty
    permissions: over UDP, ten go (RFC 8489 §6.2: a client SHOULD keep to ten outstanding
    transactions with a server), the others as answers come, until every one is installed.
    Over TCP, the stream paces them: all go at once."""
    client, server = allocated(reliable=reliable)
    peers = [(f"192.0.2.{i}", 5000) for i in range(1, 21)]
    for peer in peers:
        client.send_to_peer(peer, b"check", 1.0)
    first = []
    while (data := client.poll_transmit(1.0)) is not None:
        first.append(data)
    assert len(_requests(first)) == (20 if reliable else MAX_OUTSTANDING)
    most = 0
    for data in first:
        for reply in server.handle(data, 1.0):
            client.on_server_data(reply, 1.0)
    while (data := client.poll_transmit(1.0)) is not None:
        most = max(most, len(client._transactions))
        for reply in server.handle(data, 1.0):
            client.on_server_data(reply, 1.0)
    assert all(client.permission_installed(peer) for peer in peers)
    assert most <= (20 if reliable else MAX_OUTSTANDING)
    assert [address for address, _, _ in server.relayed].count(peers[-1]) == 1


def test_requests_waiting_for_room_go_as_the_unanswered_ones_time_out() -> None:
    """A server that answers none: the permissions that waited go once the first ten
    time out (RFC 8489 §6.2.1: 39.5 s), and none of them is lost."""
    client, server = allocated()
    server.silent = True
    for i in range(1, 16):
        client.send_to_peer((f"192.0.2.{i}", 5000), b"check", 1.0)
    first = []
    while (data := client.poll_transmit(1.0)) is not None:
        first.append(data)
    assert len(_requests(first)) == MAX_OUTSTANDING
    now = 1.0
    later: list[bytes] = []
    while (deadline := client.next_deadline()) is not None and deadline < 100.0:
        now = deadline
        client.on_timer(now)
        while (data := client.poll_transmit(now)) is not None:
            later.append(data)
    asked = {m.get(stun.XorPeerAddress).address for m in _requests(later)}  # type: ignore[union-attr]
    assert asked == {f"192.0.2.{i}" for i in range(1, 16)}  # (retransmissions, and the 5 held)
    assert client.state is TurnState.ALLOCATED


def test_refreshes_due_together_keep_to_ten_outstanding_and_all_go_in_time() -> None:
    """Thirty permissions in use, installed together, fall due together: ten refreshes go
    (RFC 8489 §6.2; all thirty went at once), the others as answers come, and every
    permission stays installed past its lifetime."""
    client, server = allocated()
    peers = [(f"198.51.100.{i}", 5000) for i in range(10, 40)]
    most = 0

    def deliver(now: float) -> None:
        nonlocal most
        while (data := client.poll_transmit(now)) is not None:
            most = max(most, len(client._transactions))
            for reply in server.handle(data, now):
                client.on_server_data(reply, now)

    for now in range(0, 501, 10):
        while (deadline := client.next_deadline()) is not None and deadline <= now:
            client.on_timer(deadline)
            deliver(deadline)
        for peer in peers:
            client.send_to_peer(peer, b"x", now)  # (in use)
        deliver(now)
        assert all(client.permission_installed(peer) for peer in peers), now
    assert most == MAX_OUTSTANDING
    asked = [m for _, m in server.requests if m.method is Method.CREATE_PERMISSION]
    assert len(asked) == 3 * len(peers)  # (installed, then refreshed twice)


class _SilentToNewPeers(FakeServer):
    """Leaves the CreatePermissions for 203.0.113.0/24 unanswered (lost, or dropped)."""

    def handle(self, data: bytes, now: float) -> list[bytes]:
        if data[0] < 0x40:
            message = stun.decode(data)
            peer = message.get(stun.XorPeerAddress)
            if (
                message.method is Method.CREATE_PERMISSION
                and peer is not None
                and peer.address.startswith("203.0.113.")
            ):
                return []
        return super().handle(data, now)


def _in_use_at_the_cap() -> tuple[TurnClient, _SilentToNewPeers, float]:
    """PEER in use (data every 10 s), its permission due for refresh at 241 s; at 200 s
    thirty new peer IPs asked for, whose requests the server leaves unanswered, ten at a
    time.  Returns the client, the server and the time (200 s)."""
    client, server = allocated(server=_SilentToNewPeers())
    assert isinstance(server, _SilentToNewPeers)
    assert client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    now = 1.0
    while now < 200.0:
        now = run_until(client, server, now + 10.0, now=now)
        assert client.send_to_peer(PEER, b"d", now)
        exchange(client, server, now)
    for i in range(1, 31):
        client.send_to_peer((f"203.0.113.{i}", 5000), b"check", now)
    exchange(client, server, now)
    return client, server, now


def _refreshes_of_peer(server: FakeServer) -> list[float]:
    """When the CreatePermissions for PEER's IP after 200 s reached the server."""
    return [
        at
        for at, m in server.requests
        if m.method is Method.CREATE_PERMISSION
        and (peer := m.get(stun.XorPeerAddress)) is not None
        and peer.address == PEER[0]
        and at > 200.0
    ]


def test_the_refresh_of_a_permission_in_use_waits_at_the_cap_no_longer_than_refresh_wait() -> None:
    """The refresh goes REFRESH_WAIT after it was due (241 s) at the latest, past the cap,
    in time (it waited behind two 39.5 s timeouts, and the permission ran out on the
    server at 301 s: data to the peer in use stopped)."""
    client, server, now = _in_use_at_the_cap()
    while now < 305.0:
        now = run_until(client, server, now + 1.0, now=now)
        client.send_to_peer(PEER, b"d", now)
        exchange(client, server, now)
        assert client.permission_installed(PEER), now
    refreshed = _refreshes_of_peer(server)
    assert refreshed and 241.0 + REFRESH_WAIT <= refreshed[0] < 242.0 + REFRESH_WAIT


def test_a_refresh_that_waited_at_the_cap_goes_again_at_once_after_a_stale_nonce() -> None:
    """The refresh that went past the cap at its latest time is answered 438 Stale Nonce:
    it goes again at once with the new nonce, not after REFRESH_WAIT more (it waited
    again as a new refresh, leaving less than its own transaction's time)."""
    client, server, now = _in_use_at_the_cap()
    server.stale_next = 1  # (the next request it answers: 438)
    while now < 300.0:
        now = run_until(client, server, now + 1.0, now=now)
        client.send_to_peer(PEER, b"d", now)
        exchange(client, server, now)
    first, again = _refreshes_of_peer(server)[:2]
    assert 241.0 + REFRESH_WAIT <= first < 242.0 + REFRESH_WAIT
    assert again == first


# --- closing ----------------------------------------------------------------------------------


def test_close_deallocates() -> None:
    client, server = allocated()
    client.close(5.0)
    assert state(client) is TurnState.CLOSING
    request = stun.decode(client.poll_transmit(5.0) or b"")
    assert request.method is Method.REFRESH
    assert request.get(stun.Lifetime) == stun.Lifetime(0)
    assert request.verify_integrity(server.key)
    for reply in server.handle(request.raw or b"", 5.0):
        client.on_server_data(reply, 5.0)
    assert state(client) is TurnState.CLOSED
    assert not server.allocated
    assert client.next_deadline() is None
    client.close(6.0)  # a no-op
    assert client.poll_transmit(6.0) is None


def test_a_deallocation_is_sent_again_within_the_half_second_a_closing_client_waits() -> None:
    """The shell waits 0.5 s for the deallocation's answer (DEALLOCATE_WAIT): its copies go
    at 0, 125 and 375 ms, so that one lost leaves no allocation on the server for its
    lifetime (one went, the next at the client's 0.5 s RTO, when the wait ended).  A later
    copy's 437, the server having taken an earlier one, closes it."""
    client, server = allocated()
    client.close(5.0)
    sent = []
    for now in (5.0, 5.1, 5.125, 5.3, 5.375, 5.499):
        client.on_timer(now)
        while (wire := client.poll_transmit(now)) is not None:
            sent.append((now, stun.decode(wire).transaction_id))
    assert [now for now, _ in sent] == [5.0, 5.125, 5.375]
    assert len({tid for _, tid in sent}) == 1
    (_, tid) = sent[0]
    mismatch = stun.Message(Method.REFRESH, stun.MessageClass.ERROR, tid, [stun.ErrorCode(437)])
    client.on_server_data(mismatch.encode(integrity_key=server.key), 5.45)
    assert state(client) is TurnState.CLOSED


def test_close_times_out_to_closed() -> None:
    client, server = allocated()
    server.silent = True
    client.close(5.0)
    run_until(client, server, 100.0, now=5.0)
    assert state(client) is TurnState.CLOSED


def test_close_while_allocating_deallocates_once_granted() -> None:
    client = TurnClient(USER, PASSWORD, reliable=False)
    server = FakeServer()
    client.start(0.0)
    client.close(0.0)
    assert state(client) is TurnState.CLOSING
    exchange(client, server, 0.0)  # 401 challenge, so nothing was allocated yet
    assert state(client) is TurnState.CLOSED
    assert server.methods() == ["ALLOCATE"]

    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    challenge = client.poll_transmit(0.0) or b""
    for reply in server.handle(challenge, 0.0):
        client.on_server_data(reply, 0.0)
    client.close(0.1)  # the authenticated Allocate is in flight
    exchange(client, server, 0.1)
    assert state(client) is TurnState.CLOSED
    # (The deletion at once, and again on the grant: the first may have overtaken it.)
    assert server.methods()[-3:] == ["ALLOCATE", "REFRESH", "REFRESH"]
    assert not server.allocated


def _challenged_allocate_out(server: FakeServer) -> tuple[TurnClient, bytes]:
    """A client whose authenticated Allocate went at 0.1 s (returned), unanswered."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    for reply in server.handle(client.poll_transmit(0.0) or b"", 0.0):
        client.on_server_data(reply, 0.0)
    allocate = client.poll_transmit(0.1)
    assert allocate is not None and stun.decode(allocate).has_integrity
    return client, allocate


@pytest.mark.parametrize("overtaken", [False, True])
def test_closing_while_the_authenticated_allocate_is_out_deletes_at_once(overtaken: bool) -> None:
    """Closed while the authenticated Allocate is out (a far server: granted, its answer on
    the way), the client sends the deletion at once and the Allocate no more: the shell
    waits a moment only, and a grant whose answer came after it was left for its lifetime
    (the turnlife review).  Where the deletion overtakes the Allocate (437: nothing to
    delete yet), the client waits for the Allocate's answer, and deletes what it grants."""
    server = FakeServer()
    client, allocate = _challenged_allocate_out(server)
    client.close(0.2)
    deallocate = client.poll_transmit(0.2)
    assert deallocate is not None
    assert stun.decode(deallocate).get(stun.Lifetime) == stun.Lifetime(0)
    for now in (0.6, 1.6):  # (past the Allocate's RTOs: no copy of it goes)
        client.on_timer(now)
        while (data := client.poll_transmit(now)) is not None:
            assert stun.decode(data).method is Method.REFRESH
    first, then = (deallocate, allocate) if overtaken else (allocate, deallocate)
    for data in (first, then):
        for reply in server.handle(data, 1.7):
            client.on_server_data(reply, 1.7)
    if overtaken:
        assert state(client) is TurnState.CLOSING  # (437, the Allocate still out)
        assert server.allocated  # (granted after the deletion that overtook it)
    exchange(client, server, 1.8)
    assert state(client) is TurnState.CLOSED
    assert not server.allocated


@pytest.mark.parametrize(
    "password",
    [
        "\uff57\uff4f\uff4e\uff44\uff45\uff52",  # fullwidth letters
        "\ufb01sh-and-chips",  # a ligature
        "x\u00b2y",  # a superscript
        "w\u00f6nder",  # composed
        "wo\u0308nder",  # decomposed
        "wonder\u00a0land",  # a no-break space
        "\u0d28\u0d4d\u200d",  # a ZWJ after a virama (Malayalam)
    ],
)
def test_a_password_makes_the_key_as_written_as_servers_make_it(password: str) -> None:
    """coturn and Pion make the key of the password as written: compatibility characters,
    a decomposed letter, a no-break space stay as they are.  SASLprep (RFC 5389's NFKC)
    mapped the first three: every authenticated request was refused (the pionturn
    review).  One challenge, then the allocation."""
    server = FakeServer(password=password, prepare=str)
    client = TurnClient(USER, password, reliable=False)
    client.start(0.0)
    exchange(client, server, 0.0)
    assert state(client) is TurnState.ALLOCATED, client.error
    assert server.methods() == ["ALLOCATE", "ALLOCATE"]


def test_a_server_of_rfc_5389_that_refuses_the_key_as_written_gets_the_saslprep_one() -> None:
    """A server that makes its key with SASLprep (RFC 5389 §15.4) refuses the key of a
    fullwidth password as written: the request goes once more with the SASLprep key, and
    the allocation and the later requests use it.  A wrong password is refused as before,
    once the two keys were tried."""
    fullwidth = "\uff57\uff4f\uff4e\uff44\uff45\uff52"
    server = FakeServer(password=fullwidth)
    client = TurnClient(USER, fullwidth, reliable=False)
    client.start(0.0)
    exchange(client, server, 0.0)
    assert state(client) is TurnState.ALLOCATED, client.error
    assert server.methods() == ["ALLOCATE", "ALLOCATE", "ALLOCATE"]
    client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    assert server.permissions  # (its CreatePermission taken with the key it settled on)
    wrong = TurnClient(USER, "\uff57rong", reliable=False)
    wrong.start(0.0)
    exchange(wrong, FakeServer(password=fullwidth), 0.0)
    assert state(wrong) is TurnState.FAILED
    assert wrong.error is not None and "wrong credentials" in str(wrong.error)


def test_a_key_a_signed_success_proved_is_kept_through_a_401() -> None:
    """The key as written allocated (the server's signed success proves it); a 401 to a
    later request fails that request only, with the same key: SASLprep's took its place
    for good, and the allocation's next refresh failed (the p35pass6 review)."""
    fullwidth = "\uff57\uff4f\uff4e\uff44\uff45\uff52"
    server = FakeServer(password=fullwidth, prepare=str)
    client = TurnClient(USER, fullwidth, reliable=False, lifetime=600)
    client.start(0.0)
    exchange(client, server, 0.0)
    assert state(client) is TurnState.ALLOCATED, client.error
    client.send_to_peer(PEER, b"x", 1.0)
    request = stun.decode(client.poll_transmit(1.0) or b"")
    refused = request.error_response(
        401, "Unauthorized", stun.Realm(server.realm), stun.Nonce(server.nonce)
    )
    client.on_server_data(refused.encode(), 1.0)
    run_until(client, server, 700.0, 1.0)
    assert state(client) is TurnState.ALLOCATED, client.error


@pytest.mark.parametrize("prepare", [str, stun.saslprep], ids=["as-written", "saslprep"])
def test_a_server_whose_realm_is_empty_is_allocated_from(prepare: Callable[[str], str]) -> None:
    """A server whose REALM is empty (Pion's TURN server's by default) is allocated from: a
    key is made of an empty realm (an OpaqueString of 02979fb refused it: every allocation
    failed, the p35pass5 review)."""
    server = FakeServer(prepare=prepare, realm="")
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    exchange(client, server, 0.0)
    assert state(client) is TurnState.ALLOCATED, client.error


def test_idle_close_and_bad_arguments() -> None:
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.close(0.0)
    assert state(client) is TurnState.CLOSED
    assert client.poll_transmit(0.0) is None
    with pytest.raises(ValueError, match="lifetime"):
        TurnClient(USER, PASSWORD, reliable=False, lifetime=0)
    with pytest.raises(ValueError, match="control"):
        TurnClient(USER, "bad\u0007", reliable=False)
    # Not text: refused here, not by on_server_data at the 401 (which never raises).
    for bad in (None, 123, b"user"):
        with pytest.raises(TypeError, match="username must be a str"):
            TurnClient(bad, PASSWORD, reliable=False)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="password must be a str"):
            TurnClient(USER, bad, reliable=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="software must be a str"):
        TurnClient(USER, PASSWORD, reliable=False, software=b"trice")  # type: ignore[arg-type]


# --- robustness -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_garbage_from_the_server_is_counted_not_raised(packets: list[bytes]) -> None:
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    for packet in packets:
        client.on_server_data(packet, 2.0)
    stats = client.statistics()
    assert stats.malformed + stats.stray + stats.received == len(packets)
    assert state(client) is TurnState.ALLOCATED


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_garbage_near_valid_messages(data: st.DataObject) -> None:
    client, _ = allocated()
    tid = data.draw(st.binary(min_size=12, max_size=12))
    valid = Message(
        Method.DATA, MessageClass.INDICATION, tid, (stun.XorPeerAddress(*PEER), stun.Data(b"z"))
    ).encode()
    position = data.draw(st.integers(0, len(valid) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = valid[:position] + bytes((byte,)) + valid[position + 1 :]
    result = client.on_server_data(mutated, 1.0)
    assert result == [] or len(result) == 1


def _frames() -> st.SearchStrategy[bytes]:
    stun_frames = st.builds(
        lambda data: Message(
            Method.DATA, MessageClass.INDICATION, attributes=(stun.Data(data),)
        ).encode(),
        st.binary(max_size=40),
    )
    channel_frames = st.builds(
        lambda channel, data: stun.encode_channel_data(channel, data, pad=True),
        st.integers(0x4000, 0x4FFF),
        st.binary(max_size=40),
    )
    return st.one_of(stun_frames, channel_frames)


@settings(max_examples=300, deadline=None)
@given(st.lists(_frames(), max_size=10), st.data())
def test_framer_over_arbitrary_chunking(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = StreamFramer()
    out: list[bytes] = []
    for start, end in itertools.pairwise([0, *cuts, len(stream)]):
        out += framer.feed(stream[start:end])
    assert out == frames
    assert framer.buffered == 0
    # Fed as views that are not contiguous (every other byte of a doubled stream), too.
    doubled = bytes(b for byte in stream for b in (byte, 0))
    framer = StreamFramer()
    assert framer.feed(memoryview(doubled)[::2]) == frames


def test_framer_rejects_a_stream_out_of_step() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\x40\x00\x00\x01") == []
    assert framer.feed(b"z\x00\x00\x00") == [b"\x40\x00\x00\x01z\x00\x00\x00"]
    with pytest.raises(stun.StunDecodeError):
        framer.feed(b"\xff\xff")
    # Out of step right after a whole frame, in one read: the whole frame comes back, and
    # StunDecodeError at the next call, and the one after (the view the error came from held
    # the buffer, whose resizing raised BufferError, which no caller expects; and the whole
    # frame was lost with the error).
    framer = StreamFramer()
    whole = b"\x40\x00\x00\x01z\x00\x00\x00"
    assert framer.feed(whole + b"\xc0\x00\x00\x00") == [whole]
    for _ in range(2):
        with pytest.raises(stun.StunDecodeError):
            framer.feed(b"")


# --- purity -----------------------------------------------------------------------------------


def test_turn_imports_without_trio_socket_or_time() -> None:
    """trice.turn is pure: it imports and allocates with trio, socket and time blocked."""
    trice_dir = Path(__file__).resolve().parents[1] / "trice"
    code = textwrap.dedent(
        f"""
        import sys, types
        for name in ("trio", "socket", "asyncio", "time", "ifaddr", "select", "selectors"):
            sys.modules[name] = None
        package = types.ModuleType("trice")
        package.__path__ = [{str(trice_dir)!r}]
        sys.modules["trice"] = package
        import trice.turn as turn
        client = turn.TurnClient("u", "p", reliable=False)
        client.start(0.0)
        assert client.poll_transmit(0.0) is not None
        assert client.next_deadline() == 0.5
        print("pure")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure"


def test_data_longer_than_a_send_indication_carries_is_refused_at_once() -> None:
    """Too long for a Send indication: ValueError at once, also while the permission is
    being asked for.  Queued then, it raised when the grant came, inside on_server_data:
    the grant was counted malformed, and the data queued behind it never went."""
    client, server = allocated()
    with pytest.raises(ValueError, match="more than TURN relays"):
        client.send_to_peer(PEER, b"x" * (PEER_DATA_MAX + 1), 0.0)
    assert client.send_to_peer(PEER, b"x" * PEER_DATA_MAX, 0.0)
    assert client.send_to_peer(PEER, b"small", 0.0)
    exchange(client, server, 0.0)
    assert client.statistics().malformed == 0
    assert (PEER, b"small", "indication") in server.relayed
    with pytest.raises(ValueError, match="more than TURN relays"):
        client.send_to_peer(PEER, b"x" * (PEER_DATA_MAX + 1), 0.0)
    indication = stun.Message(
        stun.Method.SEND,
        stun.MessageClass.INDICATION,
        stun.new_transaction_id(),
        (stun.XorPeerAddress("2001:db8::2", 6000), stun.Data(b"x" * PEER_DATA_MAX)),
    )
    indication.encode()  # (the longest there is)


def test_a_refused_channel_refresh_keeps_the_number_while_the_server_holds_it() -> None:
    """The peer's channel (bound at 1 s, refreshed at 541 s: held to 1141 s) has its next
    refresh refused (508): the server holds the binding to its end and relays the peer's
    data on it (RFC 8656 §12.5), which is taken; the bind goes again with the same number
    (a peer may not take another number till 5 minutes after its binding's end, §12).
    The number was given up at once: the data was dropped (counted malformed), and the
    peer bound to a new number 4 minutes early."""
    client, server = allocated()
    now = 1.0
    client.send_to_peer(PEER, b"x", now)
    exchange(client, server, now)
    (number,) = server.channels
    while now < 1070.0:  # (in use: refreshed at 541, not lapsing)
        now += 10.0
        client.send_to_peer(PEER, b"x", now)
        run_until(client, server, now, now=now - 10.0)
    server.errors[stun.Method.CHANNEL_BIND] = (508, "Insufficient Capacity")
    run_until(client, server, 1085.0, now=now)  # (the refresh at 1081: refused)
    assert not client.channel_bound(PEER)
    data = stun.encode_channel_data(number, b"from the peer")
    assert client.on_server_data(data, 1090.0) == [(PEER, b"from the peer")]
    assert client.statistics().malformed == 0
    del server.errors[stun.Method.CHANNEL_BIND]
    now = 1090.0
    while now < 1300.0:
        now += 10.0
        client.send_to_peer(PEER, b"x", now)
        run_until(client, server, now, now=now - 10.0)
    binds = [
        m.get(stun.ChannelNumber)
        for _, m in server.requests
        if m.method is stun.Method.CHANNEL_BIND
    ]
    assert {b.channel for b in binds if b is not None} == {number}
    assert client.channel_bound(PEER)


def test_a_peer_whose_binding_ended_takes_another_number_only_5_minutes_on() -> None:
    """The server refuses to bind a peer's channel again after its binding ended: the
    number is given up, and the peer (its data going as Send indications) takes another
    only 5 minutes after the binding's end (RFC 8656 §12)."""
    client, server = allocated()
    client.send_to_peer(PEER, b"x", 1.0)
    exchange(client, server, 1.0)
    (number,) = server.channels
    peer = client._peers[PEER]
    ended = peer.expires_at
    server.errors[stun.Method.CHANNEL_BIND] = (403, "Forbidden")
    peer.bound = False  # (lapsed: bound again when data goes, after its end)
    peer.refresh_at = float("inf")
    client.send_to_peer(PEER, b"x", ended + 1.0)
    exchange(client, server, ended + 1.0)
    assert peer.channel == 0  # (refused after the end: given up)
    del server.errors[stun.Method.CHANNEL_BIND]
    client._bind(peer, ended + 100.0)  # (as a permission's grant would)
    assert peer.channel == 0
    client._bind(peer, ended + 301.0)
    assert peer.channel == number  # (its number of before: free again by then)


class _NoLifetimeOnRefresh(FakeServer):
    """Grants Refreshes without LIFETIME (RFC 8656 §8 says it MUST be there)."""

    def handle(self, data: bytes, now: float) -> list[bytes]:
        out = super().handle(data, now)
        if data[0] >= 0x40 or not out:
            return out
        request = stun.decode(data)
        if (
            request.method is Method.REFRESH
            and request.message_class is MessageClass.REQUEST
            and stun.decode(out[0]).message_class is MessageClass.SUCCESS
        ):
            return [request.success_response().encode(integrity_key=self.key)]
        return out


def test_a_refresh_granted_without_a_lifetime_keeps_the_one_granted_before() -> None:
    """The Allocate was granted 30 s; a Refresh success without LIFETIME does not say the
    server now holds it for the 600 s asked for: the next Refresh comes within 30 s (it came
    at 564 s, long after the allocation had ended on the server)."""
    client, server = allocated(server=_NoLifetimeOnRefresh(max_lifetime=30))
    assert client.lifetime == 30
    run_until(client, server, 24.5)  # (the first Refresh went at 24 s, and was granted)
    assert len([m for _, m in server.requests if m.method is Method.REFRESH]) == 1
    assert client.lifetime == 30
    deadline = client.next_deadline()
    assert deadline is not None and deadline <= 24.0 + 30


def test_a_clock_that_jumps_past_the_lifetime_fails_the_allocation_at_once() -> None:
    """A driver polled late, an hour after the allocation (600 s): it ended on the server
    long ago, so the client fails at once, sends no Refresh, and takes no more data (it
    sent a Refresh and stayed allocated, its next deadline an hour in the past)."""
    client, _server = allocated()
    client.on_timer(3600.0)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and "lifetime (600 s) ran out" in str(client.error)
    assert client.poll_transmit(3600.0) is None
    assert not client.send_to_peer(PEER, b"late", 3600.0)
    assert client.next_deadline() is None


@pytest.mark.parametrize("reliable", [False, True])
def test_a_refresh_unanswered_fails_the_allocation_when_it_ends(reliable: bool) -> None:
    """Granted 30 s, then the server goes silent: the Refresh goes at 24 s, and the
    allocation is gone at 30 s, when its lifetime runs out (the client was ALLOCATED until
    the Refresh's own transaction timed out, at 63.5 s over UDP)."""
    client, server = allocated(server=FakeServer(max_lifetime=30), reliable=reliable)
    server.silent = True
    run_until(client, server, 29.9)
    assert state(client) is TurnState.ALLOCATED and client.refreshing
    assert client.next_deadline() == pytest.approx(30.0, abs=0.2)
    run_until(client, server, 30.2)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and "lifetime (30 s) ran out" in str(client.error)


@pytest.mark.parametrize(
    ("code", "deleted"), [(508, True), (486, True), (437, False), (401, False)]
)
def test_a_refused_refresh_deletes_the_allocation_it_leaves_on_the_server(
    code: int, deleted: bool
) -> None:
    """A Refresh refused (508 Insufficient Capacity, say) fails the relay, but the server
    keeps the allocation until its lifetime ends, counted against the user's quota: the
    client deletes it, once, with no wait.  Not after 437 (the server has none) nor 401
    (the credentials it would be signed with are refused)."""
    client, server = allocated(server=FakeServer(max_lifetime=100))
    server.errors[Method.REFRESH] = (code, "refused")
    run_until(client, server, 80.5)  # (the Refresh went at 80 s)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == code
    refreshes = [m for _, m in server.requests if m.method is Method.REFRESH]
    zero = [m for m in refreshes if m.get(stun.Lifetime) == stun.Lifetime(0)]
    assert len(zero) == deleted and all(m.verify_integrity(server.key) for m in zero)
    assert client.poll_transmit(80.5) is None
    assert client.next_deadline() is None


def test_an_authenticated_allocates_437_deletes_the_allocation_on_the_5_tuple() -> None:
    """An authenticated Allocate answered 437 Allocation Mismatch (RFC 8656 §7.2: this
    5-tuple holds an allocation; ours, when a copy was granted, its answer lost, and a
    stale nonce's retry went as a transaction of its own): the client fails, and deletes
    that allocation, signed, once (it was left on the server for its lifetime; the shell
    then allocates from another port; the authturn review)."""
    server = FakeServer()
    client, allocate = _challenged_allocate_out(server)
    request = stun.decode(allocate)
    mismatch = request.error_response(437, "Allocation Mismatch")
    client.on_server_data(mismatch.encode(integrity_key=server.key, fingerprint=True), 0.2)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code == 437
    deletion = client.poll_transmit(0.2)
    assert deletion is not None
    message = stun.decode(deletion)
    assert message.method is Method.REFRESH and message.get(stun.Lifetime) == stun.Lifetime(0)
    assert message.verify_integrity(server.key)
    assert client.poll_transmit(0.2) is None


class _SilentToPermissions(FakeServer):
    """From 200 s (until ``until``), CreatePermission goes unanswered (the rest is answered)."""

    until = math.inf

    def handle(self, data: bytes, now: float) -> list[bytes]:
        silent = 200.0 <= now < self.until and data[0] < 0x40
        if silent and stun.decode(data).method is Method.CREATE_PERMISSION:
            return []
        return super().handle(data, now)


def test_a_channel_on_a_permission_that_ran_out_is_bound_no_more() -> None:
    """The permission of a channel's peer ends at 301 s, its refresh unanswered: the channel
    counts as bound no more then either (the server drops ChannelData without a permission,
    RFC 8656 §12), and data to the peer waits behind the refresh rather than go as
    ChannelData (it stayed bound until the refresh gave up, at 325 s)."""
    client, server = allocated(server=_SilentToPermissions())
    assert client.send_to_peer(PEER, b"x", 1.0)
    run_until(client, server, 240.0, now=1.0)
    assert client.channel_bound(PEER)
    assert client.send_to_peer(PEER, b"y", 240.0)  # (in use: refreshed)
    while client.poll_transmit(240.0) is not None:
        pass
    run_until(client, server, 301.5, now=240.0)
    assert not client.permission_installed(PEER)
    assert not client.channel_bound(PEER)
    sent = client.statistics().sent_channel_data
    assert client.send_to_peer(PEER, b"z", 301.5)  # (queued behind the refresh)
    frames = []
    while (frame := client.poll_transmit(301.5)) is not None:
        frames.append(frame)
    assert not [f for f in frames if 0x40 <= f[0] <= 0x7F]  # (no ChannelData)
    assert client.statistics().sent_channel_data == sent


def _channel_in_use_at_240() -> tuple[TurnClient, FakeServer]:
    """A channel to PEER bound at 1 s, in use at 240 s (its permission's refresh goes at
    241 s), on a server silent to CreatePermission from 200 s."""
    client, server = allocated(server=_SilentToPermissions())
    assert client.send_to_peer(PEER, b"x", 1.0)
    run_until(client, server, 240.0, now=1.0)
    assert client.channel_bound(PEER)
    assert client.send_to_peer(PEER, b"y", 240.0)
    exchange(client, server, 240.0)
    return client, server


def test_a_late_grant_binds_the_channel_again_and_sends_what_waited() -> None:
    """The permission ran out (301 s) with its refresh unanswered; data to PEER waits behind
    the refresh, which is granted late (its copy after 310 s): the data goes, and the
    channel is bound again."""
    client, server = _channel_in_use_at_240()
    assert isinstance(server, _SilentToPermissions)
    server.until = 310.0
    run_until(client, server, 301.5, now=240.0)
    assert not client.channel_bound(PEER)
    assert client.send_to_peer(PEER, b"z", 301.5)  # (queued, not dropped)
    exchange(client, server, 301.5)
    before = len(server.relayed)
    run_until(client, server, 324.0, now=301.5)
    assert client.permission_installed(PEER) and client.channel_bound(PEER)
    assert (PEER, b"z", "indication") in server.relayed[before:]
    assert client.send_to_peer(PEER, b"w", 324.0)
    exchange(client, server, 324.0)
    assert server.relayed[-1] == (PEER, b"w", "channel")


def test_a_channel_bind_granted_after_the_permission_ran_out_holds_it_again() -> None:
    """A ChannelBind for another port of PEER's IP is in flight when the permission runs
    out, its refresh unanswered; the bind is granted, which installs the permission on the
    server (RFC 8656 §12.2): data to both peers is relayed, also after the refresh gives up
    (the permission stayed "gone" behind the busy refresh, and all was dropped at 325 s)."""
    client, server = _channel_in_use_at_240()
    run_until(client, server, 300.9, now=240.0)
    assert client.send_to_peer(PEER2, b"a", 300.9)  # (an indication, and PEER2's ChannelBind)
    held = []
    while (frame := client.poll_transmit(300.9)) is not None:
        held.append(frame)
    client.on_timer(301.0)  # (the permission ran out, its refresh unanswered)
    assert not client.channel_bound(PEER)
    for frame in held:  # (the ChannelBind arrives, and is granted)
        for reply in server.handle(frame, 301.1):
            client.on_server_data(reply, 301.1)
    exchange(client, server, 301.1)
    assert client.permission_installed(PEER) and client.channel_bound(PEER2)
    run_until(client, server, 340.0, now=301.1)  # (the refresh gave up at 325 s)
    relayed = len(server.relayed)
    assert client.send_to_peer(PEER, b"p1", 340.0)
    assert client.send_to_peer(PEER2, b"p2", 340.0)
    exchange(client, server, 340.0)
    assert [d for _, d, _ in server.relayed[relayed:]] == [b"p1", b"p2"]


def test_an_error_response_without_error_code_fails_the_allocation_with_no_code() -> None:
    """An error response with no ERROR-CODE fails the allocation; the error has no code
    (None, as a STUN server's gather report has), not 0, which is none (300-699): it went
    on to ``GatherReport.code``."""
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    request = stun.decode(client.poll_transmit(0.0) or b"")
    reply = Message(request.method, MessageClass.ERROR, request.transaction_id, [])
    client.on_server_data(reply.encode(), 0.01)
    assert state(client) is TurnState.FAILED
    assert client.error is not None and client.error.code is None
    assert "without ERROR-CODE" in str(client.error)
    assert " 0 " not in str(client.error)  # (no code to say)


def test_a_copy_lost_once_does_not_make_a_near_server_far() -> None:
    """``round_trip`` is smoothed (RFC 6298's SRTT): a Refresh whose first copy was lost
    (answered 0.5 s after it, at its second) leaves a server that answered at once near
    enough that closing waits its half second (2.5 round trips, at least 0.5 s).  It was the
    last answer's time, and every later close of the relay waited 1.25 s for a server next
    door (p36pass2).  A path that grows slower is followed, as the least sample was not."""
    client, server = allocated(server=FakeServer(max_lifetime=30))
    assert client.round_trip == 0.0
    due = client.next_deadline()
    assert due is not None
    client.on_timer(due)
    lost = client.poll_transmit(due)  # (the Refresh's first copy, lost)
    assert lost is not None and stun.decode(lost).method is Method.REFRESH
    client.on_timer(due + 0.5)
    exchange(client, server, due + 0.5)  # (its second copy, answered at once)
    assert state(client) is TurnState.ALLOCATED
    assert client.round_trip is not None and 2.5 * client.round_trip <= 0.5
    now = due + 1.0
    for _ in range(20):  # (the path grows slower: each answer 0.4 s after its request)
        client.refresh_now(now)
        request = client.poll_transmit(now)
        assert request is not None
        for reply in server.handle(request, now + 0.4):
            client.on_server_data(reply, now + 0.4)
        now += 1.0
    assert state(client) is TurnState.ALLOCATED
    assert client.round_trip is not None and client.round_trip > 0.3


@pytest.mark.parametrize(("until", "sent"), [(0.45, True), (0.35, False), (None, True)])
def test_after_the_deletions_437_the_allocate_goes_again_only_if_answered_in_time(
    until: float | None, sent: bool
) -> None:
    """The deletion refused with 437 at 0.3 s (the Allocate had not come), the Allocate goes
    once more at once only if its answer is due (a round trip of 0.1 s) before the driver
    stops waiting (``until``): one granted later, with no one left to delete it, would stay
    at the server (the suspects review on e04f287)."""
    server = FakeServer()
    client = TurnClient(USER, PASSWORD, reliable=False)
    client.start(0.0)
    for reply in server.handle(client.poll_transmit(0.0) or b"", 0.05):
        client.on_server_data(reply, 0.1)
    assert client.round_trip == pytest.approx(0.1)
    allocate = client.poll_transmit(0.1)
    assert allocate is not None
    client.close(0.2, until=until)
    (refused,) = server.handle(client.poll_transmit(0.2) or b"", 0.25)
    client.on_server_data(refused, 0.3)
    assert (client.poll_transmit(0.3) == allocate) is sent
    assert state(client) is TurnState.CLOSING  # (the Allocate's answer still counts)


def test_a_deletion_overtaken_resumes_the_allocate_and_crossed_answers_wait_for_the_last() -> None:
    """Closed while the authenticated Allocate is out, the deletion overtakes it (437): the
    Allocate goes again (the grant's answer may be lost, and the server answers a copy of a
    request it granted), and the grant is deleted.  Where the answers cross (the grant,
    then the first deletion's 437), the client waits for the deletion sent on the grant
    rather than closing unconfirmed (p36pass2's suspicions).  The copy goes at once, and
    only that one: a later copy, granted once the driver has stopped waiting, would stay at
    the server (suspects on e04f287)."""
    server = FakeServer()
    client, allocate = _challenged_allocate_out(server)
    client.close(0.2)
    deallocate = client.poll_transmit(0.2) or b""
    (refused,) = server.handle(deallocate, 0.3)  # (437: the Allocate has not come)
    (granted,) = server.handle(allocate, 0.3)  # (and its answer is lost)
    client.on_server_data(refused, 0.4)
    assert state(client) is TurnState.CLOSING
    again = client.poll_transmit(0.4)  # (the Allocate goes again, at once)
    assert again == allocate
    client.on_timer(0.7)  # (its RTO: no more copies)
    assert client.poll_transmit(0.7) is None
    client.on_server_data(granted, 0.7)  # (the grant, at last: deleted)
    second = client.poll_transmit(0.7)
    assert second is not None and stun.decode(second).method is Method.REFRESH
    assert state(client) is TurnState.CLOSING  # (until the deletion's answer)
    for reply in server.handle(second, 0.8):
        client.on_server_data(reply, 0.8)
    assert state(client) is TurnState.CLOSED and not server.allocated

    # The answers cross: the grant comes first, then the first deletion's 437.
    server = FakeServer()
    client, allocate = _challenged_allocate_out(server)
    client.close(0.2)
    deallocate = client.poll_transmit(0.2) or b""
    (refused,) = server.handle(deallocate, 0.3)
    (granted,) = server.handle(allocate, 0.3)
    client.on_server_data(granted, 0.4)
    client.on_server_data(refused, 0.4)
    assert state(client) is TurnState.CLOSING  # (the deletion sent on the grant decides)
    exchange(client, server, 0.5)
    assert state(client) is TurnState.CLOSED and not server.allocated


def _challenge_after_a_lost_copy(client: TurnClient, server: FakeServer) -> float:
    """The first Allocate's first copy lost; its second (at 0.5 s) answered 20 ms later by
    a server near by: a time from the first copy (0.52 s) that says little (RFC 6298 §3)."""
    client.start(0.0)
    first = client.poll_transmit(0.0)
    assert first is not None  # (lost)
    client.on_timer(0.5)
    assert client.poll_transmit(0.5) == first
    (challenge,) = server.handle(first, 0.52)
    client.on_server_data(challenge, 0.52)
    return 0.52


def test_answers_to_requests_sent_again_do_not_make_a_near_server_far() -> None:
    """``round_trip`` follows Karn's rule (RFC 6298 §3): an answer to a request sent again
    is taken only until one to a request sent once comes, which replaces it, and none
    after.  Smoothed over every answer, the challenge's first copy lost (0.52 s) left a
    server 20 ms away at 0.27 s after three answers, and a Refresh answered at its fourth
    copy (3.5 s) took a server next door to 0.44 s: closing waited 0.7-1.1 s, not its half
    second (the trio shell's wait is 2.5 round trips from 0.5 s; p36pass5)."""
    server = FakeServer(max_lifetime=3600)
    client = TurnClient(USER, PASSWORD, reliable=False)
    now = _challenge_after_a_lost_copy(client, server)
    assert client.round_trip == pytest.approx(0.52)  # (all there is, for now)
    authenticated = client.poll_transmit(now)
    assert authenticated is not None
    for reply in server.handle(authenticated, now + 0.02):
        client.on_server_data(reply, now + 0.02)
    assert state(client) is TurnState.ALLOCATED
    assert client.round_trip == pytest.approx(0.02)  # (sent once: it replaces the other)
    now = 10.0
    server.silent = True
    client.refresh_now(now)
    exchange(client, server, now)  # (lost: the server is out a moment)
    for at in (0.5, 1.5):
        client.on_timer(now + at)
        exchange(client, server, now + at)
    server.silent = False
    client.on_timer(now + 3.5)
    exchange(client, server, now + 3.5)  # (its fourth copy, answered at once)
    assert state(client) is TurnState.ALLOCATED
    assert client.round_trip == pytest.approx(0.02)


def test_the_allocate_after_a_438_starts_at_the_round_trip_that_answer_measured() -> None:
    """An Allocate after a 438 (as after a 401) starts at three times the round trip the
    438 measured (``ALLOCATE_RTO_MIN`` at least): 20 ms here, so 100 ms, though the
    challenge before took 0.52 s from its first copy (a copy lost).  Made of the smoothed
    round trip, it was 0.5 s (p36pass5)."""
    server = FakeServer(stale_next=1)
    client = TurnClient(USER, PASSWORD, reliable=False)
    now = _challenge_after_a_lost_copy(client, server)
    second = client.poll_transmit(now)
    assert second is not None
    now += 0.02
    (stale,) = server.handle(second, now)
    client.on_server_data(stale, now)
    third = client.poll_transmit(now)
    assert third is not None and state(client) is TurnState.ALLOCATING  # (lost)
    deadline = client.next_deadline()
    assert deadline is not None and deadline - now == pytest.approx(0.1)


def test_over_a_stream_a_437_to_the_deletion_sends_no_copy_and_the_allocate_times_out() -> None:
    """Over TCP or TLS a request goes once (RFC 8489 §6.2.2): a deletion refused with 437
    sends no copy of the Allocate, which keeps its timeout (Ti), so that the client closes
    at last without a driver's bound.  The copy went, and counting it ended the Allocate's
    schedule: no deadline was left, and the client stayed closing for ever (p37pass1 on
    ce1780b)."""
    server = FakeServer()
    client = TurnClient(USER, PASSWORD, reliable=True)
    client.start(0.0)
    for reply in server.handle(client.poll_transmit(0.0) or b"", 0.0):
        client.on_server_data(reply, 0.05)
    assert client.poll_transmit(0.1) is not None  # (the authenticated Allocate)
    client.close(0.2)
    (refused,) = server.handle(client.poll_transmit(0.2) or b"", 0.25)
    client.on_server_data(refused, 0.3)
    assert client.poll_transmit(0.3) is None
    assert state(client) is TurnState.CLOSING
    deadline = client.next_deadline()
    assert deadline is not None
    client.on_timer(deadline)
    assert state(client) is TurnState.CLOSED


@pytest.mark.parametrize("outage", [38.0, 45.0])
def test_a_refresh_asked_early_and_unanswered_is_no_news(outage: float) -> None:
    """A Refresh asked before due (``refresh_now``: the peer fell silent, the network
    changed) that gets no answer, the path down a while, leaves the allocation, which the
    server holds for its lifetime: it is refreshed when due, and refused only by the
    server's word.  It failed the client at the end of its transaction (39.5 s over UDP),
    minutes before the allocation ended (p37pass1 on 680b1fc)."""
    client, server = allocated()
    client.refresh_now(10.0)
    now = 10.0
    while (deadline := client.next_deadline()) is not None and deadline <= 10.0 + outage:
        now = deadline
        client.on_timer(now)
        while client.poll_transmit(now) is not None:
            pass  # (lost: the path is down)
    run_until(client, server, 1000.0, now)  # (the path back: refreshed when due, as ever)
    assert state(client) is TurnState.ALLOCATED, client.error
    assert not client.refreshing  # (refreshed when due: the lifetime, 600 s, is past)
    server.allocated = False  # (the server lost it)
    client.refresh_now(1001.0)
    exchange(client, server, 1001.0)
    assert state(client) is TurnState.FAILED


def _lost_until(client: TurnClient, until: float, now: float = 0.0) -> tuple[float, list[float]]:
    """Run the client's timers until ``until``, everything it sends lost; returns the time
    and when each send went."""
    sent: list[float] = []
    while (deadline := client.next_deadline()) is not None and deadline < until:
        now = deadline
        client.on_timer(now)
        while client.poll_transmit(now) is not None:
            sent.append(now)
    return now, sent


def test_a_refresh_unanswered_is_sent_anew_while_the_allocation_holds() -> None:
    """A 600 s allocation's Refresh goes at 540 s; every copy is lost, and its transaction
    gives up at 579.5 s, with 20.5 s of the allocation left: another Refresh goes at once,
    the path clears at 580 s, and it keeps the allocation.  The first one's loss failed the
    relay that the server held (one refresh in a hundred at 30 % loss each way: the netem
    review)."""
    client, server = allocated(server=FakeServer(max_lifetime=600), lifetime=600)
    now, sent = _lost_until(client, 580.0)
    assert [t for t in sent if t >= 540.0][:7] == [540.0, 540.5, 541.5, 543.5, 547.5, 555.5, 571.5]
    assert 579.5 in sent and state(client) is TurnState.ALLOCATED
    while (deadline := client.next_deadline()) is not None and deadline < 599.0:
        now = max(deadline, 580.0)
        client.on_timer(now)
        exchange(client, server, now)
    assert state(client) is TurnState.ALLOCATED and server.allocated
    assert [t for t, m in server.requests if m.method is Method.REFRESH] != []
    assert client.next_deadline() == pytest.approx(now + 540.0, abs=5.0)  # (the next, due)


def test_refreshes_unanswered_to_the_allocations_end_fail_it_then() -> None:
    """Nothing comes back at all: Refreshes go until the allocation's lifetime runs out,
    and the client fails then, saying so, not at the first transaction's end."""
    client, _ = allocated(server=FakeServer(max_lifetime=600), lifetime=600)
    failed_at, _ = _lost_until(client, 700.0)
    assert state(client) is TurnState.FAILED and failed_at == pytest.approx(600.0, abs=0.01)
    assert client.error is not None and "lifetime (600 s) ran out" in str(client.error)
