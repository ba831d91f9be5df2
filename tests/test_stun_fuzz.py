"""Property tests: round-trips, and StunDecodeError as the only failure of the decoders."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trice import stun
from trice.stun import _message
from trice.stun._attributes import ATTRIBUTE_TYPES

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
port = u16
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ip = ipv4 | ipv6
text = st.text(max_size=80)
blob = st.binary(max_size=80)
algorithm = st.builds(stun.PasswordAlgorithm, u16, st.binary(max_size=12))
known_types = set(ATTRIBUTE_TYPES)  # only to generate types trice does not know
unknown_type = u16.filter(lambda t: t not in known_types)

attribute: st.SearchStrategy[stun.Attribute] = st.one_of(
    st.builds(stun.MappedAddress, ip, port),
    st.builds(stun.XorMappedAddress, ip, port),
    st.builds(stun.XorPeerAddress, ip, port),
    st.builds(stun.XorRelayedAddress, ip, port),
    st.builds(stun.AlternateServer, ip, port),
    st.builds(stun.ResponseOrigin, ip, port),
    st.builds(stun.OtherAddress, ip, port),
    st.builds(stun.Username, text),
    st.builds(stun.Realm, text),
    st.builds(stun.Nonce, text),
    st.builds(stun.Software, text),
    st.builds(stun.AlternateDomain, text),
    st.builds(stun.UserHash, st.binary(min_size=32, max_size=32)),
    # (A reason's trailing NULs are padding to the decoder, some servers' coturn's: dropped.)
    st.builds(stun.ErrorCode, st.integers(300, 699), text.map(lambda t: t.rstrip("\x00"))),
    algorithm,
    st.builds(stun.PasswordAlgorithms, st.lists(algorithm, max_size=4).map(tuple)),
    st.builds(stun.UnknownAttributes, st.lists(u16, max_size=6).map(tuple)),
    st.builds(stun.Priority, u32),
    st.just(stun.UseCandidate()),
    st.builds(stun.IceControlled, u64),
    st.builds(stun.IceControlling, u64),
    st.builds(stun.ChannelNumber, u16),
    st.builds(stun.Lifetime, u32),
    st.builds(stun.Data, blob),
    st.builds(stun.RequestedAddressFamily, st.integers(0, 255)),
    st.builds(stun.EvenPort, st.booleans()),
    st.builds(stun.RequestedTransport, st.integers(0, 255)),
    st.just(stun.DontFragment()),
    st.builds(stun.ReservationToken, st.binary(min_size=8, max_size=8)),
    st.builds(stun.ChangeRequest, st.booleans(), st.booleans()),
    st.builds(stun.ResponsePort, port),
    st.builds(stun.UnknownAttribute, unknown_type, blob),
)
method = st.sampled_from(list(stun.Method)) | st.integers(0, 0xFFF)
message = st.builds(
    stun.Message,
    method,
    st.sampled_from(list(stun.MessageClass)),
    st.binary(min_size=12, max_size=12),
    st.lists(attribute, max_size=8).map(tuple),
)
key = st.binary(min_size=1, max_size=70)


@given(message, st.none() | key, st.none() | key, st.booleans(), st.binary(min_size=1, max_size=1))
@settings(max_examples=300)
def test_round_trip(
    msg: stun.Message,
    integrity_key: bytes | None,
    sha256_key: bytes | None,
    fingerprint: bool,
    padding: bytes,
) -> None:
    data = msg.encode(
        integrity_key=integrity_key,
        integrity_sha256_key=sha256_key,
        fingerprint=fingerprint,
        padding=padding,
    )
    decoded = stun.decode(data)
    assert decoded.method == msg.method
    assert decoded.message_class == msg.message_class
    assert decoded.transaction_id == msg.transaction_id
    n = len(msg.attributes)
    assert decoded.attributes[:n] == msg.attributes
    for attr in msg.attributes:  # lazy get() agrees with the eager tuple
        assert stun.decode(data).get(type(attr)) == next(
            a for a in msg.attributes if type(a) is type(attr)
        )
    extra = [type(a) for a in decoded.attributes[n:]]
    expected = (
        ([stun.MessageIntegrity] if integrity_key is not None else [])
        + ([stun.MessageIntegritySha256] if sha256_key is not None else [])
        + ([stun.Fingerprint] if fingerprint else [])
    )
    assert extra == expected
    assert decoded.has_fingerprint == fingerprint
    if sha256_key is not None:
        assert decoded.verify_integrity(sha256_key)
    elif integrity_key is not None:
        assert decoded.verify_integrity(integrity_key)
        assert not decoded.verify_integrity(integrity_key + b"!")
    else:
        assert not decoded.has_integrity
    # A decoded message re-encodes to the very same bytes.
    assert decoded.encode(padding=padding) == data
    # Stream framing finds the message's end.
    assert stun.frame_length(data + b"\x00") == len(data)


def _wire_attributes(data: bytes) -> list[tuple[int, bytes]]:
    """(type, value) of each attribute on the wire, up to FINGERPRINT (a plain walk)."""
    out = []
    pos = 20
    while pos < len(data):
        atype, alen = struct.unpack_from("!HH", data, pos)
        out.append((atype, data[pos + 4 : pos + 4 + alen]))
        if atype == 0x8028:
            break
        pos += 4 + alen + (-alen & 3)
    return out


_TYPE_CODES = st.sampled_from([0x0006, 0x0008, 0x0024, 0x0025, 0x8029, 0x802A, 0x8028, 0x7FFE])


@given(message, st.none() | key, st.booleans(), st.lists(_TYPE_CODES, max_size=7).map(tuple))
@settings(max_examples=300)
def test_first_values_and_unknown_required_agree_with_the_wire(
    msg: stun.Message, integrity_key: bytes | None, fingerprint: bool, types: tuple[int, ...]
) -> None:
    """``first_values`` (one pass over a decoded message's records) gives the wire value of
    the first attribute of each type asked for, ``None`` where there is none, also when a
    type is asked for twice (the second place stays ``None``); ``unknown_required`` lists
    the comprehension-required types that trice does not know, before and after the
    attributes are decoded."""
    data = msg.encode(integrity_key=integrity_key, fingerprint=fingerprint)
    decoded = stun.decode(data)
    wire = _wire_attributes(data)
    if integrity_key is not None:  # nothing after MESSAGE-INTEGRITY but FINGERPRINT counts
        at = next(i for i, (t, _) in enumerate(wire) if t == 0x0008)
        wire = wire[: at + 1] + [(t, v) for t, v in wire[at + 1 :] if t == 0x8028]
    expected: list[bytes | None] = []
    for i, t in enumerate(types):
        first = next((v for wt, v in wire if wt == t), None)
        expected.append(None if t in types[:i] else first)
    assert decoded.first_values(types) == expected
    assert decoded.first_values(list(types)) == expected  # type: ignore[arg-type]
    unknown = tuple(t for t, _ in wire if t < 0x8000 and t not in ATTRIBUTE_TYPES)
    assert decoded.unknown_required == unknown
    decoded.attributes  # noqa: B018 - decoded eagerly now: the other path
    assert decoded.unknown_required == unknown
    assert decoded.first_values(types) == expected  # still the wire's bytes


def _exercise(data: bytes) -> None:
    """Decode and touch everything; only StunDecodeError may escape."""
    try:
        msg = stun.decode(data)
    except stun.StunDecodeError:
        return
    msg.attributes  # noqa: B018 - lazily decoded values must not fail either
    msg.unknown_required  # noqa: B018
    for attr in msg.attributes:
        msg.get(type(attr))
    msg.verify_integrity(b"key")
    repr(msg)


@given(st.binary(max_size=200))
@settings(max_examples=1000)
def test_decode_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_decode_bytes_with_a_valid_header(body: bytes) -> None:
    body = body[: len(body) - len(body) % 4]
    header = struct.pack("!HHI", 0x0001, len(body), stun.MAGIC_COOKIE) + bytes(12)
    _exercise(header + body)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("extend"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("set-length"), st.integers(0, 10_000), st.integers(0, 0xFFFF)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in mutations:
        if not buf:
            break
        i = where % len(buf)
        if kind == "flip":
            buf[i] ^= value
        elif kind == "truncate":
            del buf[i:]
        elif kind == "extend":
            buf[i:i] = bytes((value,)) * (1 + where % 8)
        else:  # overwrite a 16-bit length-looking field at a 4-byte boundary
            j = i - i % 4 + 2
            buf[j : j + 2] = struct.pack("!H", value)
    return bytes(buf)


@given(message, st.booleans(), st.lists(mutation, min_size=1, max_size=4))
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_decode_mutated_messages(
    msg: stun.Message, fingerprint: bool, mutations: list[tuple[str, int, int]]
) -> None:
    data = msg.encode(integrity_key=b"key", fingerprint=fingerprint)
    mutated = _mutate(data, mutations)
    _exercise(mutated)
    if fingerprint and mutated != data:
        # A FINGERPRINT-protected message almost never survives a mutation unnoticed; when
        # decoding succeeds, integrity must still hold or fail cleanly (no exception).
        with contextlib.suppress(stun.StunDecodeError):
            stun.decode(mutated).verify_integrity(b"key")


@given(st.binary(max_size=80))
@settings(max_examples=500)
def test_decode_channel_data_arbitrary(data: bytes) -> None:
    try:
        channel, payload = stun.decode_channel_data(data)
    except stun.StunDecodeError:
        return
    assert 0x4000 <= channel <= 0x4FFF
    assert stun.decode_channel_data(stun.encode_channel_data(channel, payload)) == (
        channel,
        payload,
    )


@given(st.integers(0x4000, 0x4FFF), st.binary(max_size=300), st.booleans())
def test_channel_data_round_trip(channel: int, payload: bytes, pad: bool) -> None:
    frame = stun.encode_channel_data(channel, payload, pad=pad)
    assert stun.decode_channel_data(frame) == (channel, payload)
    if pad:
        assert len(frame) % 4 == 0
        assert stun.frame_length(frame) == len(frame)


@given(st.binary(max_size=40))
def test_frame_length_arbitrary(data: bytes) -> None:
    try:
        size = stun.frame_length(data)
    except stun.StunDecodeError:
        return
    assert size is None or 4 <= size <= len(data)


@given(st.text(max_size=20))
@settings(max_examples=300)
def test_saslprep_only_value_error(value: str) -> None:
    try:
        prepared = stun.saslprep(value)
    except ValueError:
        return
    assert stun.saslprep(prepared) == prepared  # idempotent on its own output


def _outcome(decode: Callable[[bytes], stun.Message], data: bytes) -> object:
    """What a decoder makes of ``data``: its error's message, or everything the message
    holds (what ``first_values`` sees for a few types included)."""
    try:
        msg = decode(data)
    except stun.StunDecodeError as exc:
        return ("error", str(exc))
    types = (0x0006, 0x0008, 0x0020, 0x0024, 0x8029, 0x802A, 0x8028, 0x7FFE, 0x0006)
    return (
        msg.method,
        msg.message_class,
        msg.transaction_id,
        list(msg._records),
        (msg._mi, msg._mi256, msg._fp),
        msg.unknown_required,
        msg.first_values(types),
        msg.first_values(list(types)),  # type: ignore[arg-type]
        msg.attributes,
    )


@given(
    message,
    st.none() | key,
    st.booleans(),
    st.lists(st.lists(mutation, min_size=1, max_size=3), max_size=4),
)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_decode_of_a_shape_seen_before_agrees_with_the_walk(
    msg: stun.Message,
    integrity_key: bytes | None,
    fingerprint: bool,
    mutations: list[list[tuple[str, int, int]]],
) -> None:
    """A message of a kept shape is decoded without the walk (``_message._LAYOUTS``): for
    the message again, and for variants of it (a flipped bit in a value, a family byte, the
    cookie or FINGERPRINT; a length changed; cut or grown), the outcome is the walk's own,
    error messages included."""
    data = msg.encode(integrity_key=integrity_key, fingerprint=fingerprint)
    walked = _outcome(_message._decode_walk, data)
    assert _outcome(stun.decode, data) == walked
    # Keep its shape (as a message that passed verify_integrity leaves it, but for any
    # message here, in a cache emptied first: a full one keeps no more), then decode it
    # from its shape, and its variants.
    _message._LAYOUTS.clear()
    for _ in range(2):  # (a shape is kept the second time its type and length pass)
        _message._remember(data, _message._decode_walk(data))
    assert _outcome(stun.decode, data) == walked
    for change in mutations:
        variant = _mutate(data, change)
        assert _outcome(stun.decode, variant) == _outcome(_message._decode_walk, variant)


def test_a_kept_shape_is_used_and_the_cache_stays_bounded() -> None:
    """The second authenticated message of a type and length leaves its shape (the first
    leaves none: a fresh process's first connection sees each shape once), and a message of
    that shape is decoded from it (it has a ``_layout``), also when two shapes share a type
    and length; an unauthenticated one leaves none; a shape with ERROR-CODE (whose value the
    walk checks) is not kept; once full, the cache keeps what it holds and takes no more."""
    integrity = stun.short_term_key("x" * 22)

    def request(tid: bytes, controlling: bool) -> bytes:
        role = stun.IceControlling(7) if controlling else stun.IceControlled(7)
        attributes = (stun.Username("abcd:efgh"), stun.Priority(1), role)
        msg = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, tid, attributes)
        return msg.encode(integrity_key=integrity, fingerprint=True)

    _message._LAYOUTS.clear()
    _message._SEEN.clear()
    first = stun.decode(request(bytes(12), True))
    assert not first.verify_integrity(b"not the key")
    assert stun.decode(request(bytes(12), True))._layout is None  # (not authenticated yet)
    assert first.verify_integrity(integrity)
    second = stun.decode(request(bytes(12), True))
    assert second._layout is None  # (one authenticated so far)
    assert second.verify_integrity(integrity)
    controlling = stun.decode(request(b"\x01" * 12, True))
    assert controlling._layout is not None
    assert controlling.transaction_id == b"\x01" * 12
    assert controlling.verify_integrity(integrity)
    # ICE-CONTROLLED instead: the same type and length, a shape of its own.
    assert stun.decode(request(b"\x02" * 12, False)).verify_integrity(integrity)
    controlled = stun.decode(request(b"\x03" * 12, False))
    assert controlled._layout is not None
    assert controlled._layout is not controlling._layout
    assert controlled.get(stun.IceControlled) == stun.IceControlled(7)
    assert stun.decode(request(b"\x04" * 12, True))._layout is controlling._layout
    error = stun.Message(
        stun.Method.BINDING, stun.MessageClass.ERROR, bytes(12), (stun.ErrorCode(487, "x"),)
    ).encode(integrity_key=integrity)
    assert stun.decode(error).verify_integrity(integrity)
    assert stun.decode(error)._layout is None
    for length in range(0, 600, 4):  # more keys than the cache holds, each seen twice
        name = stun.Username("u" * length)
        built = stun.Message(stun.Method.BINDING, 1, bytes(12), (name,))
        for _ in range(2):
            assert stun.decode(built.encode(integrity_key=integrity)).verify_integrity(integrity)
    assert len(_message._LAYOUTS) == _message._LAYOUTS_MAX
    assert all(len(shapes) <= _message._SHAPES_MAX for shapes in _message._LAYOUTS.values())
    # Full: a new shape is not kept, and the kept ones stay.
    assert stun.decode(request(b"\x05" * 12, True))._layout is controlling._layout
    built = stun.Message(stun.Method.BINDING, 1, bytes(12), (stun.Username("v" * 999),))
    for _ in range(2):
        assert stun.decode(built.encode(integrity_key=integrity)).verify_integrity(integrity)
    assert stun.decode(built.encode(integrity_key=integrity))._layout is None
    _message._LAYOUTS.clear()  # (the tests after this one start with an empty cache)


def test_only_small_messages_leave_a_shape() -> None:
    """An authenticated peer's big messages (many attributes, or many bytes) are walked every
    time and leave no shape: what the cache holds stays small whatever is sent."""
    integrity = stun.short_term_key("x" * 22)
    many = [stun.UnknownAttribute(0x8100, b"") for _ in range(_message._SHAPE_ATTRIBUTES_MAX)]
    big = [stun.Username("u" * 500), stun.Software("s" * 40)]
    small = [stun.Username("abcd:efgh"), stun.Priority(1)]
    _message._LAYOUTS.clear()
    _message._SEEN.clear()
    try:
        for attributes, kept in ((many, False), (big, False), (small, True)):
            built = stun.Message(stun.Method.BINDING, 1, bytes(12), attributes)
            data = built.encode(integrity_key=integrity, fingerprint=True)
            for _ in range(3):
                assert stun.decode(data).verify_integrity(integrity)
            assert (stun.decode(data)._layout is not None) is kept, (len(data), kept)
    finally:
        _message._LAYOUTS.clear()


def test_no_hypothesis_example_has_a_deadline() -> None:
    """The suite's Hypothesis profile (tests/conftest.py) gives examples no deadline: a
    stall of a loaded machine, or a full garbage collection of the suite's heap, made a
    quick example exceed the default 200 ms and fail as "flaky" (the flakesB review)."""
    assert settings.default is not None and settings.default.deadline is None
