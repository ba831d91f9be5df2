"""Property tests for the parsers the other property tests leave out (the parsers48 review).

Every parser of outside input either gives a value or raises the typed error its docstring
names (a :class:`trice.TriceError` subclass; ``ValueError`` where a pure helper documents
it), never another exception, and never hangs; encoders and parsers agree where both
exist; and a valid message cut short or with a byte changed is refused with the typed
error (or, for a signed STUN message, fails its integrity check).

The example counts here are modest, so that the module runs in a few seconds.
``TRICE_PROPS_SCALE=20`` multiplies them, and ``TRICE_PROPS_DEADLINE_MS=500`` gives each
example a deadline (the suite's profile has none, see tests/conftest.py), for a long local
run that would catch a hang.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import itertools
import json
import os
import struct
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trice
from trice import ConfigError, ProtocolError, StunDecodeError, mdns, stun
from trice._cli import _at_least, main
from trice._proxy import HttpConnect, ProxyUrl
from trice._trio._gather import parse_inet6_flags
from trice.ice._core import AgentCore, IceParameters
from trice.ice._framing import FrameReader, frame
from trice.mdns._responder import MdnsResponder
from trice.stun._attributes import RULES
from trice.turn import StreamFramer, TurnClient, TurnState
from trice.turn._client import nonce_features

_SCALE = int(os.environ.get("TRICE_PROPS_SCALE", "1"))
_DEADLINE_MS = os.environ.get("TRICE_PROPS_DEADLINE_MS")


def _settings(examples: int) -> settings:
    deadline = None if _DEADLINE_MS is None else timedelta(milliseconds=int(_DEADLINE_MS))
    return settings(
        max_examples=examples * _SCALE,
        deadline=deadline,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# -- STUN messages built TLV by TLV (RFC 8489 §5, §14) ---------------------------------------------

_KNOWN = sorted(RULES)
_TLV_TYPE = st.sampled_from(_KNOWN) | st.integers(0, 0xFFFF)


@st.composite
def _tlv(draw: st.DrawFn) -> bytes:
    """One attribute of a known type (a length near its bounds, any value) or any type."""
    atype = draw(_TLV_TYPE)
    low, high, _ = RULES.get(atype, (0, 40, 0))
    length = draw(st.integers(max(0, low - 2), min(high, 40) + 2) | st.integers(0, 40))
    value = bytearray(draw(st.binary(min_size=length, max_size=length)))
    if low == 8 and high == 20 and length >= 2 and draw(st.booleans()):
        value[1] = draw(st.sampled_from([1, 2]))  # (an address: a family byte that may fit)
    pad = draw(st.binary(min_size=-length & 3, max_size=-length & 3))
    return struct.pack("!HH", atype, length) + bytes(value) + pad


@st.composite
def _wire_messages(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A message of arbitrary attributes with a well-formed header, maybe signed and
    fingerprinted as the encoder does it; and the key it was signed with."""
    mtype = draw(st.integers(0, 0x3FFF))
    tid = draw(st.binary(min_size=12, max_size=12))
    body = b"".join(draw(st.lists(_tlv(), max_size=6)))
    key = draw(st.binary(min_size=1, max_size=24))
    if draw(st.booleans()):
        header = struct.pack("!HHI", mtype, len(body) + 24, stun.MAGIC_COOKIE) + tid
        body += struct.pack("!HH", 0x0008, 20) + _hmac_sha1(key, header + body)
    if draw(st.booleans()):
        header = struct.pack("!HHI", mtype, len(body) + 8, stun.MAGIC_COOKIE) + tid
        crc = _crc(header + body) ^ 0x5354554E
        body += struct.pack("!HHI", 0x8028, 4, crc)
    data = struct.pack("!HHI", mtype, len(body), stun.MAGIC_COOKIE) + tid + body
    return data, key


def _hmac_sha1(key: bytes, data: bytes) -> bytes:
    import hashlib
    import hmac

    return hmac.new(key, data, hashlib.sha1).digest()


def _crc(data: bytes) -> int:
    import zlib

    return zlib.crc32(data)


_PLAIN_TYPES = (stun.MessageIntegrity, stun.MessageIntegritySha256, stun.Fingerprint)


def _touch(msg: stun.Message, key: bytes) -> None:
    """Read everything a decoded message offers (lazily decoded values too)."""
    for attribute in msg.attributes:
        msg.get(type(attribute))
    msg.first_values((0x0006, 0x0008, 0x0020, 0x0024, 0x8028, 0x7FFF))
    assert isinstance(msg.unknown_required, tuple)
    msg.verify_integrity(key)
    repr(msg)


@_settings(300)
@given(_wire_messages())
def test_stun_messages_of_any_attributes_decode_or_raise_stun_decode_error(
    case: tuple[bytes, bytes],
) -> None:
    """Any attributes, right or wrong for their type: ``decode`` gives a message whose
    every attribute reads, or raises StunDecodeError (and nothing else); what it reads
    encodes again (or the encoder says ValueError, for a value it does not write: a reason
    phrase of 128 characters or more), and that encoding is stable."""
    data, key = case
    try:
        msg = stun.decode(data)
    except StunDecodeError:
        return
    _touch(msg, key)
    # The integrity attributes are written anew by the encoder, not kept (their values are
    # of the message as it came); the rest must come back as it was read.
    kept = [a for a in msg.attributes if not isinstance(a, _PLAIN_TYPES)]
    rebuilt = stun.Message(msg.method, msg.message_class, msg.transaction_id, kept)
    try:
        again = rebuilt.encode()
    except ValueError:
        return
    decoded = stun.decode(again)
    assert list(decoded.attributes) == kept
    assert decoded.encode() == again
    assert (decoded.method, decoded.message_class) == (msg.method, msg.message_class)


_ATTRIBUTES = st.one_of(
    st.builds(stun.XorMappedAddress, st.ip_addresses().map(str), st.integers(0, 0xFFFF)),
    st.builds(stun.Username, st.text(max_size=20)),
    st.builds(stun.Priority, st.integers(0, 2**32 - 1)),
    st.builds(stun.IceControlling, st.integers(0, 2**64 - 1)),
    st.builds(stun.ErrorCode, st.integers(300, 699), st.text(max_size=10)),
    st.builds(stun.Software, st.text(max_size=20)),
    st.builds(stun.Data, st.binary(max_size=30)),
    st.just(stun.UseCandidate()),
)


@_settings(300)
@given(
    st.lists(_ATTRIBUTES, max_size=5),
    st.binary(min_size=12, max_size=12),
    st.booleans(),
    st.data(),
)
def test_a_signed_stun_message_cut_or_changed_is_refused(
    attributes: list[stun.Attribute], tid: bytes, fingerprint: bool, data: st.DataObject
) -> None:
    """A message cut short anywhere is a StunDecodeError; with one byte changed it is a
    StunDecodeError, or it fails its integrity check, or the change was in what nothing
    covers (FINGERPRINT's type, after which nothing counts): what it authenticates is never
    other than what was sent."""
    key = b"parsers48-key"
    msg = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, tid, attributes)
    wire = msg.encode(integrity_key=key, fingerprint=fingerprint)
    cut = data.draw(st.integers(0, len(wire) - 1), label="cut")
    with pytest.raises(StunDecodeError):
        stun.decode(wire[:cut])
    at = data.draw(st.integers(0, len(wire) - 1), label="at")
    xor = data.draw(st.integers(1, 255), label="xor")
    changed = bytearray(wire)
    changed[at] ^= xor
    try:
        decoded = stun.decode(bytes(changed))
    except StunDecodeError:
        return
    _touch(decoded, key)
    if decoded.verify_integrity(key):
        assert (decoded.method, decoded.message_class, decoded.transaction_id) == (
            msg.method,
            msg.message_class,
            tid,
        )
        signed = [a for a in decoded.attributes if not isinstance(a, _PLAIN_TYPES)]
        assert signed == list(msg.attributes)


_VECTORS = Path(__file__).resolve().parent / "vectors" / "rfc5769.json"


def _vector_cases() -> list[tuple[str, bytes, bytes]]:
    """The RFC 5769 vectors: name, message, and the key each is signed with."""
    vectors = json.loads(_VECTORS.read_text(encoding="utf-8"))["vectors"]
    cases = []
    for name, vec in vectors.items():
        if name == "long_term_request":
            key = stun.long_term_key(vec["username"], vec["realm"], vec["password"])
        else:
            key = stun.short_term_key(vec["password"])
        cases.append((name, bytes.fromhex(vec["hex"]), key))
    return cases


def test_every_cut_and_every_bit_flip_of_the_rfc_5769_vectors() -> None:
    """Exhaustively, for the four RFC 5769 messages: each one cut short anywhere is a
    StunDecodeError, and with any one bit flipped it is a StunDecodeError or fails its
    integrity check, but for a flip in what nothing covers (FINGERPRINT's type: after
    MESSAGE-INTEGRITY nothing else counts), which leaves what it authenticates as it was."""
    for name, wire, key in _vector_cases():
        original = stun.decode(wire)
        signed = [a for a in original.attributes if not isinstance(a, _PLAIN_TYPES)]
        for cut in range(len(wire)):
            with pytest.raises(StunDecodeError):
                stun.decode(wire[:cut])
        for at, bit in itertools.product(range(len(wire)), range(8)):
            changed = bytearray(wire)
            changed[at] ^= 1 << bit
            try:
                decoded = stun.decode(bytes(changed))
            except StunDecodeError:
                continue
            if decoded.verify_integrity(key):
                kept = [a for a in decoded.attributes if not isinstance(a, _PLAIN_TYPES)]
                assert kept == signed, (name, at, bit)
                assert decoded.transaction_id == original.transaction_id, (name, at, bit)
                assert not decoded.has_fingerprint or not original.has_fingerprint


@_settings(200)
@given(_wire_messages() | st.binary(max_size=120).map(lambda b: (b, b"")))
def test_the_demultiplexer_peeks_agree_with_the_decoder(case: tuple[bytes, bytes]) -> None:
    """``classify``, ``is_stun``, ``peek_type`` and ``peek_username`` (a mux's look before it
    decodes) raise nothing, and where the decoder takes the message, they say what it says:
    the USERNAME it reads (the first before any integrity attribute or FINGERPRINT)."""
    data, _ = case
    for view in (data, bytearray(data), memoryview(data)):
        kind = stun.classify(view)
        looks = stun.is_stun(view)
        mtype = stun.peek_type(view)
        username = stun.peek_username(view)
        assert (mtype is not None) == looks
        assert username is None or looks
    try:
        msg = stun.decode(data)
    except StunDecodeError:
        return
    if data[0] > 3:
        # (A method of 0x100 or more: the decoder takes it, RFC 7983's demultiplexer, which
        # gives STUN the first bytes 0..3 only, does not.)
        assert kind is not stun.PacketKind.STUN and not looks
        return
    assert kind is stun.PacketKind.STUN and looks
    assert mtype == (data[0] << 8) | data[1]
    assert username == msg.first_values((0x0006,))[0]


@_settings(300)
@given(st.binary(max_size=40), st.booleans())
def test_channel_data_of_any_bytes_from_a_datagram_or_a_stream(data: bytes, datagram: bool) -> None:
    """``decode_channel_data``: a channel in range and the bytes its length says, or
    StunDecodeError; from a stream no more than padding may follow (RFC 8656 §12.5)."""
    try:
        channel, payload = stun.decode_channel_data(data, datagram=datagram)
    except StunDecodeError:
        return
    assert 0x4000 <= channel <= 0x4FFF
    length = (data[2] << 8) | data[3]
    assert payload == data[4 : 4 + length] and len(payload) == length
    assert datagram or len(data) - 4 - length <= 3
    assert stun.decode_channel_data(stun.encode_channel_data(channel, payload, pad=True)) == (
        channel,
        payload,
    )


@_settings(200)
@given(st.lists(st.binary(max_size=30), max_size=8))
def test_the_turn_stream_framer_over_any_bytes(chunks: list[bytes]) -> None:
    """Whatever a TURN server's stream holds, the framer gives whole frames (each of the
    size ``frame_length`` says) or raises StunDecodeError, and once it has, it raises again
    (the stream is out of step), keeping what it had; what it gave and keeps is what came."""
    framer = StreamFramer()
    given_out: list[bytes] = []
    failed = False
    for chunk in chunks:
        try:
            frames = framer.feed(chunk)
        except StunDecodeError:
            failed = True
            with pytest.raises(StunDecodeError):
                framer.feed(b"")
            break
        for one in frames:
            assert stun.frame_length(one) == len(one)
        given_out += frames
    fed = b"".join(chunks)
    if not failed:
        assert b"".join(given_out) + fed[len(b"".join(given_out)) :] == fed
        assert framer.buffered == len(fed) - len(b"".join(given_out))


@_settings(200)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_ice_tcp_frames_of_any_bytes(chunks: list[bytes]) -> None:
    """RFC 4571 framing has no invalid stream: any bytes give datagrams, in order, each of
    the length before it, and the rest waits (never more than one frame's)."""
    reader = FrameReader()
    out: list[bytes] = []
    for chunk in chunks:
        out += reader.feed(chunk)
    fed = b"".join(chunks)
    used = sum(2 + len(d) for d in out)
    assert b"".join(frame(d) for d in out) == fed[:used]
    assert reader.pending == len(fed) - used <= 2 + 0xFFFF


@_settings(300)
@given(
    st.text(max_size=24)
    | st.binary(max_size=24).map(lambda b: b.decode("utf-8", "surrogateescape"))
)
def test_nonce_features_of_any_nonce(nonce: str) -> None:
    """The security feature bits of a server's NONCE (RFC 8489 §9.2): 24 bits, whatever
    the nonce holds (text decoded with surrogateescape too, as a NONCE is)."""
    for text in (nonce, "obMatJos2" + nonce):
        assert 0 <= nonce_features(text) < 2**24


@_settings(300)
@given(st.text(max_size=12), st.text(max_size=12), st.sampled_from([1, 2]))
def test_long_term_keys_of_any_realm(realm: str, password: str, algorithm: int) -> None:
    """A realm from a server and a password: a key, or ValueError (SASLprep's refusal, or
    text UTF-8 cannot carry) whichever way they are prepared."""
    for prepare in (stun.saslprep, str):
        try:
            key = stun.long_term_key("user", realm, password, algorithm, prepare=prepare)
        except ValueError:
            continue
        assert len(key) == (16 if algorithm == 1 else 32)


# -- the TURN client, answered by a server that says anything (RFC 8656) --------------------------

_TURN_ADDRESS = st.tuples(
    st.sampled_from(["198.51.100.1", "2001:db8::7", "0.0.0.0", "::ffff:192.0.2.1"])
    | st.ip_addresses().map(str),
    st.integers(0, 0xFFFF),
)
_NONCES = st.sampled_from(["n1", "obMatJos2AAAB", "obMatJos2gAAB", "obMatJos2!!!!", "obMatJos2"])
_TURN_ATTRIBUTE = st.one_of(
    st.builds(stun.Realm, st.sampled_from(["example.org", "other"]) | st.text(max_size=140)),
    st.builds(stun.Nonce, _NONCES | st.text(max_size=140)),
    _TURN_ADDRESS.map(lambda a: stun.XorRelayedAddress(*a)),
    _TURN_ADDRESS.map(lambda a: stun.XorMappedAddress(*a)),
    _TURN_ADDRESS.map(lambda a: stun.AlternateServer(*a)),
    st.builds(stun.Lifetime, st.sampled_from([0, 1, 600]) | st.integers(0, 2**32 - 1)),
    st.builds(stun.UnknownAttributes, st.lists(st.integers(0, 0xFFFF), max_size=3).map(tuple)),
    st.builds(
        stun.PasswordAlgorithms,
        st.lists(
            st.builds(stun.PasswordAlgorithm, st.integers(0, 3), st.binary(max_size=3)),
            max_size=2,
        ).map(tuple),
    ),
    st.builds(stun.UnknownAttribute, st.integers(0x7000, 0x7002), st.binary(max_size=4)),
    st.builds(stun.Software, st.text(max_size=10)),
)
_CODES = st.sampled_from([300, 400, 401, 420, 437, 438, 440, 486, 508]) | st.integers(300, 699)


@st.composite
def _answers(draw: st.DrawFn) -> tuple[bool, int, str, list[stun.Attribute], str]:
    """A server's answer: success or error (its code and reason), its attributes, and how
    it is signed (with the right key, a wrong one, or not)."""
    success = draw(st.booleans())
    code = draw(_CODES)
    reason = draw(st.text(max_size=12))
    attributes = draw(st.lists(_TURN_ATTRIBUTE, max_size=5))
    signed = draw(st.sampled_from(["right", "wrong", "none"]))
    return success, code, reason, attributes, signed


def _assert_live(client: TurnClient) -> None:
    """A client allocating, allocated or closing waits for something that will come: a
    timer (an answer's deadline, a refresh's), never for nothing."""
    if client.state in (TurnState.ALLOCATING, TurnState.ALLOCATED, TurnState.CLOSING):
        deadline = client.next_deadline()
        assert deadline is not None and deadline < float("inf"), client.state
    else:
        assert client.state in (TurnState.FAILED, TurnState.CLOSED)


def _answer(
    request: stun.Message, answer: tuple[bool, int, str, list[stun.Attribute], str], key: bytes
) -> bytes:
    success, code, reason, attributes, signed = answer
    if success:
        message = request.success_response(*attributes)
    else:
        message = request.error_response(code, reason, *attributes)
    integrity = {"right": key, "wrong": b"not the key", "none": None}[signed]
    return message.encode(integrity_key=integrity)


@_settings(150)
@given(
    st.lists(_answers(), min_size=1, max_size=8),
    st.booleans(),
    st.lists(st.floats(0, 4000), max_size=4),
)
def test_a_turn_client_answered_anything_never_raises(
    answers: list[tuple[bool, int, str, list[stun.Attribute], str]],
    reliable: bool,
    waits: list[float],
) -> None:
    """Each request the client sends gets an answer of any kind (of its transaction ID, so
    that it is read, not dropped as stray): ``on_server_data`` and ``on_timer`` raise
    nothing, whatever the server says, and the client stays in one of its states (an
    AllocationError in ``error`` once failed)."""
    client = TurnClient("alice", "wonderland", reliable=reliable)
    key = stun.long_term_key("alice", "example.org", "wonderland", prepare=str)
    now = 0.0
    client.start(now)
    extra = iter(waits)
    for answer in answers:
        sent = []
        while (out := client.poll_transmit(now)) is not None:
            sent.append(out)
        requests = [stun.decode(s) for s in sent if s[0] < 4]
        if not requests:
            now += next(extra, 1.0)
            client.on_timer(now)
            continue
        client.on_server_data(_answer(requests[-1], answer, key), now)
        if client.state is TurnState.ALLOCATED and client.relayed_address is not None:
            client.send_to_peer(("192.0.2.10", 6000), b"x", now)
        _assert_live(client)
        now += 0.01
    for wait in waits:
        now += wait
        client.on_timer(now)
        while client.poll_transmit(now) is not None:
            pass
        _assert_live(client)
    assert client.state in TurnState
    if client.state is TurnState.FAILED:
        assert isinstance(client.error, trice.TurnError)


# -- multicast DNS (RFC 6762) --------------------------------------------------------------------

_LABEL = st.binary(min_size=1, max_size=12) | st.sampled_from([b"local", b"a.b", b"x\\", b"A"])


@st.composite
def _dns_messages(draw: st.DrawFn) -> bytes:
    """A DNS message of a header, questions and records as their counts say (or not)."""

    def name() -> bytes:
        if draw(st.integers(0, 4)) == 0:
            return struct.pack("!H", 0xC000 | draw(st.integers(0, 60)))  # (a pointer)
        labels = draw(st.lists(_LABEL, min_size=1, max_size=3))
        return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"

    questions = [
        name() + struct.pack("!HH", draw(st.sampled_from([1, 28, 255])), draw(st.integers(0, 3)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    records = []
    for _ in range(draw(st.integers(0, 3))):
        rtype = draw(st.sampled_from([1, 28, 5]))
        rdata = draw(st.binary(min_size=0, max_size=18))
        if draw(st.booleans()):
            rdata = bytes(4 if rtype == 1 else 16)
        klass = draw(st.sampled_from([1, 0x8001, 3]))
        ttl = draw(st.integers(0, 2**32 - 1))
        records.append(name() + struct.pack("!HHIH", rtype, klass, ttl, len(rdata)) + rdata)
    counts = [len(questions), len(records), 0, 0]
    if draw(st.booleans()):
        counts = draw(st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4))
    flags = draw(st.sampled_from([0, 0x8400, 0x0100]) | st.integers(0, 0xFFFF))
    header = struct.pack("!6H", draw(st.integers(0, 0xFFFF)), flags, *counts)
    return header + b"".join(questions) + b"".join(records)


@_settings(200)
@given(_dns_messages() | st.binary(max_size=100), st.integers(0, 0xFFFF), st.booleans())
def test_an_mdns_responder_reads_any_datagram(data: bytes, port: int, direct: bool) -> None:
    """The responder (ours: ``n.local`` on link "lo") takes any datagram from the network:
    an answer to send, names resolved, or MdnsDecodeError (counted), nothing else; what it
    sends decodes."""
    responder = MdnsResponder()
    responder.add_name("n.local", "192.0.2.7", "lo")
    try:
        sends, resolved = responder.on_datagram(
            data,
            ("192.0.2.9", port),
            "lo",
            direct=direct,
            on_link=True,
            wanted={"x.local", "n.local"},
            now=1.0,
        )
    except trice.MdnsDecodeError:
        assert responder.malformed == 1
        return
    for send in sends:
        mdns.decode_message(send.data)
    assert all(isinstance(name, str) for name in resolved)


@_settings(200)
@given(_dns_messages())
def test_mdns_messages_decode_or_raise_mdns_decode_error(data: bytes) -> None:
    """Built messages, their counts right or wrong: a message, or MdnsDecodeError; cut
    short, a message too (fewer sections) or the error, never another exception."""
    for cut in (len(data), len(data) - 1, 12, len(data) // 2):
        try:
            message = mdns.decode_message(data[:cut])
        except trice.MdnsDecodeError:
            continue
        for record in message.records:
            ipaddress.ip_address(record.address)
            assert record.rtype in (mdns.TYPE_A, mdns.TYPE_AAAA)


# -- proxies (HTTP CONNECT, RFC 9110 §9.3.6) ---------------------------------------------------

_PROXY_PIECES = st.sampled_from(
    ["http://", "https://", "socks5://", "socks5h://", "ftp://", "@", ":", "[", "]", "::1",
     "127.0.0.1", "proxy.example", "/", "%40", "%", "?", "#", "3128", "0", "99999", "user",
     "pw", " ", "\x00", "é"]
)  # fmt: skip


@_settings(400)
@given(st.text(max_size=40) | st.lists(_PROXY_PIECES | st.text(max_size=3)).map("".join))
def test_any_proxy_url_text_parses_or_raises_config_error(text: str) -> None:
    """``ProxyUrl.parse`` (and ``NetworkConfig(proxy=...)``, ``$TRICE_PROXY``): a proxy,
    or ConfigError, whose message never quotes a password."""
    try:
        proxy = ProxyUrl.parse(text)
    except ConfigError as exc:
        password = text.rpartition("@")[0].partition("://")[2].partition(":")[2]
        if len(password) >= 6 and password.isalnum():
            assert password not in str(exc)
        return
    assert proxy.scheme in ("http", "https", "socks5")
    assert 1 <= proxy.port <= 65535
    assert ProxyUrl.parse(str(proxy)).host == proxy.host
    assert trice.NetworkConfig(proxy=text).proxy == proxy


_USERINFO = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xD7FF, exclude_characters="\x7f"),
    max_size=8,
)


@_settings(300)
@given(
    st.sampled_from(["http", "https", "socks5"]),
    st.sampled_from(["127.0.0.1", "proxy.example", "2001:db8::1"]),
    st.integers(1, 65535),
    st.none() | st.tuples(_USERINFO.filter(lambda u: ":" not in u and u), _USERINFO),
)
def test_a_proxy_url_written_from_its_parts_reads_back(
    scheme: str, host: str, port: int, credentials: tuple[str, str] | None
) -> None:
    """Percent-encoded user info (RFC 3986 §3.2.1) reads back as it was, for any text."""
    where = f"[{host}]" if ":" in host else host
    user = ""
    if credentials is not None:
        user = f"{quote(credentials[0], safe='')}:{quote(credentials[1], safe='')}@"
    text = f"{scheme}://{user}{where}:{port}"
    try:
        proxy = ProxyUrl.parse(text)
    except ConfigError:
        # (Only SOCKS5's own bounds refuse these: RFC 1929 wants a password of 1 byte or more.)
        assert scheme == "socks5" and credentials is not None and not credentials[1]
        return
    assert (proxy.scheme, proxy.host, proxy.port) == (scheme, host, port)
    if credentials is not None:
        assert (proxy.username, proxy.password) == credentials


_PROXY = ProxyUrl.parse("http://127.0.0.1:3128")
_HEAD = st.sampled_from(
    [b"HTTP/1.1 200 Connection established\r\n\r\n", b"HTTP/1.0 100 Continue\r\n\r\n",
     b"HTTP/1.1 407 Proxy Authentication Required\r\nX: y\r\n\r\n", b"HTTP/1.1 101 Up\n\n",
     b"HTTP/1.1 200\n\n", b"\r\n\r\n", b"HTTP/", b"HTTP/1.1 99 x\r\n\r\n"]
)  # fmt: skip


@_settings(300)
@given(st.lists(_HEAD | st.binary(max_size=20), max_size=5), st.data())
def test_an_http_proxy_answer_in_any_pieces(pieces: list[bytes], data: st.DataObject) -> None:
    """``HttpConnect.receive_data`` over any answer, cut anywhere: the tunnel opens, or more
    is awaited, or ProtocolError (ProxyRefused among them), the same however it is cut."""
    answer = b"".join(pieces)

    def outcome(parts: list[bytes]) -> object:
        handshake = HttpConnect(_PROXY, "turn.example.org", 3478)
        handshake.start()
        try:
            for part in parts:
                assert handshake.receive_data(part) == b""
        except ProtocolError as exc:
            return type(exc).__name__  # (its words may differ: said of what came so far)
        return handshake.open, handshake.rest if handshake.open else b""

    whole = outcome([answer])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(answer)), max_size=4), label="cuts"))
    parts = [answer[a:b] for a, b in itertools.pairwise([0, *cuts, len(answer)])]
    assert outcome(parts) == whole


# -- signaling and configuration text ------------------------------------------------------------

_SECRETS = st.text(max_size=30) | st.text("abcdefghijklmnopqrstuvwxyz+/0123456789", max_size=300)


@_settings(300)
@given(_SECRETS, _SECRETS, st.booleans() | st.none() | st.integers(0, 2))
def test_remote_ice_parameters_of_any_text(ufrag: str, pwd: str, lite: Any) -> None:
    """The peer's ufrag and pwd from signaling (``set_remote_parameters``): taken, or
    ConfigError, and nothing is set then."""
    core = AgentCore(
        local=IceParameters("locl", "p" * 22), controlling=True, tiebreaker=1, timing=trice.Timing()
    )
    try:
        core.set_remote(IceParameters(ufrag, pwd, lite), 0.0)
    except ConfigError:
        assert core.remote is None
        return
    assert core.remote == IceParameters(ufrag, pwd, lite)
    assert 1 <= len(ufrag) <= 256 and 1 <= len(pwd) <= 256


@_settings(300)
@given(
    st.lists(
        st.text("0123456789abcdef.:/%", max_size=20)
        | st.sampled_from(["203.0.113.1", "203.0.113.1/10.0.0.1", "2001:db8::1", "::ffff:1.2.3.4"]),
        max_size=3,
    ),
    st.text(max_size=8) | st.sampled_from(["query", "gather", "disabled"]),
    st.none() | st.text(max_size=30),
    st.none() | st.text(max_size=30),
)
def test_configuration_text_is_taken_or_a_config_error(
    external: list[str], mode: str, ufrag: str | None, pwd: str | None
) -> None:
    """Strings a configuration takes (external addresses, the mDNS mode, the local ufrag and
    pwd): a config, or ConfigError."""
    with contextlib.suppress(ConfigError):
        network = trice.NetworkConfig(external_addresses=external, mdns=mode)  # type: ignore[arg-type]
        for local in ("10.0.0.1", "2001:db8::2"):
            network.external_address(local)
    with contextlib.suppress(ConfigError):
        trice.AgentConfig(ufrag=ufrag, pwd=pwd)


@_settings(300)
@given(st.text(max_size=12), st.integers(-5, 5), st.none() | st.integers(0, 70_000))
def test_cli_integers_are_an_integer_in_range_or_a_usage_error(
    text: str, low: int, high: int | None
) -> None:
    import argparse

    try:
        value = _at_least(low, high)(text)
    except argparse.ArgumentTypeError:
        return
    assert value >= low and (high is None or value <= high)


@_settings(40)
@given(
    st.sampled_from(["--stun", "--turn", "--proxy", "--username", "--credential"]),
    st.text(max_size=30)
    | st.sampled_from(
        ["stun:127.0.0.1", "turn:127.0.0.1", "-x", "http://a:1", "http://u:\udcff@h:1", "\udcff"]
    ),
)
def test_cli_server_and_proxy_text_is_taken_or_a_usage_error(option: str, value: str) -> None:
    """``trice gather`` with any server URL, proxy or credential, and a timeout it refuses
    (so that nothing is ever sent): exit status 2 and a message, never a traceback."""
    argv = ["gather", option, value, "--timeout", "nan"]
    argv += ["--username", "u", "--credential", "c"] if option == "--turn" else []
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 2
    assert err.getvalue()


_HEX = "0123456789abcdef"


@_settings(150)
@given(
    st.lists(
        st.tuples(
            st.text(_HEX + "x+-_ ", min_size=32, max_size=32)
            | st.integers(0, 2**128 - 1).map(lambda n: f"{n:032x}"),
            st.text(_HEX, min_size=1, max_size=3),
            st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=6),
        ),
        max_size=4,
    ),
    st.text(max_size=40),
)
def test_proc_net_if_inet6_of_any_text(lines: list[tuple[str, str, str]], noise: str) -> None:
    """``/proc/net/if_inet6`` as read: lines of its form give their address and flags (the
    last line of an interface and address wins), and nothing raises."""
    text = "\n".join(f"{a} 02 40 00 {f} {n}" for a, f, n in lines) + "\n" + noise
    parsed = parse_inet6_flags(text)
    expected: dict[str, dict[str, int]] = {}
    for address, flags, name in lines:
        if all(c in _HEX for c in address):
            literal = str(ipaddress.IPv6Address(int(address, 16)))
            expected.setdefault(name, {})[literal] = int(flags, 16)
    for name, addresses in expected.items():
        for literal, value in addresses.items():
            assert parsed[name][literal] == value or noise
