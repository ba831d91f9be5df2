"""The specialised ICE encoders give the general encoder's bytes, and the core uses them right."""

from __future__ import annotations

import ipaddress
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trice import stun
from trice._errors import StunDecodeError
from trice.ice import Candidate
from trice.ice._core import AgentCore, two_cores
from trice.stun._attributes import _pack_ip
from trice.stun._fastpath import (
    BindingRequestTemplate,
    _xor_mapped_v4,
    encode_binding_success,
    prime_success,
    success_pads,
)
from trice.stun._message import _decode_tail

tid = st.binary(min_size=12, max_size=12)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
port = st.integers(0, 0xFFFF)
ip = st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str)
# ice-char = ALPHA / DIGIT / "+" / "/" (RFC 8839 §5.4); a ufrag is 4 to 256 of them
ice_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
ufrag = st.text(ice_chars, min_size=4, max_size=256)
username = st.builds(lambda a, b: f"{a}:{b}", ufrag, ufrag) | st.text(max_size=40)
key = st.text(ice_chars, min_size=22, max_size=256).map(stun.short_term_key) | st.binary(
    max_size=100
)


def general_request(
    transaction_id: bytes,
    user: str,
    priority: int,
    controlling: bool,
    tiebreaker: int,
    use_candidate: bool,
    k: bytes,
) -> bytes:
    attributes: list[stun.Attribute] = [stun.Username(user), stun.Priority(priority)]
    if controlling:
        attributes.append(stun.IceControlling(tiebreaker))
    else:
        attributes.append(stun.IceControlled(tiebreaker))
    if use_candidate:
        attributes.append(stun.UseCandidate())
    return stun.Message(
        stun.Method.BINDING, stun.MessageClass.REQUEST, transaction_id, attributes
    ).encode(integrity_key=k, fingerprint=True)


def general_success(transaction_id: bytes, address: str, p: int, k: bytes) -> bytes:
    request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, transaction_id)
    return request.success_response(stun.XorMappedAddress(address, p)).encode(
        integrity_key=k, fingerprint=True
    )


@settings(max_examples=300)
@given(
    st.lists(tid, min_size=1, max_size=3),
    username,
    u32,
    st.booleans(),
    u64,
    st.booleans(),
    key,
)
def test_request_template_matches_the_general_encoder(
    tids: list[bytes],
    user: str,
    priority: int,
    controlling: bool,
    tiebreaker: int,
    use_candidate: bool,
    k: bytes,
) -> None:
    template = BindingRequestTemplate(
        user,
        priority,
        controlling=controlling,
        tiebreaker=tiebreaker,
        use_candidate=use_candidate,
        key=k,
    )
    for t in tids:  # one template, many transactions
        data = template.encode(t)
        assert data == general_request(t, user, priority, controlling, tiebreaker, use_candidate, k)
        message = stun.decode(data)
        assert message.transaction_id == t
        assert message.has_fingerprint
        assert message.verify_integrity(k)
        assert message.get(stun.Username) == stun.Username(user)
        assert message.get(stun.Priority) == stun.Priority(priority)
        role = stun.IceControlling if controlling else stun.IceControlled
        assert message.get(role) == role(tiebreaker)
        assert (message.get(stun.UseCandidate) is not None) is use_candidate


@settings(max_examples=300)
@given(tid, ip, port, key)
def test_success_response_matches_the_general_encoder(
    t: bytes, address: str, p: int, k: bytes
) -> None:
    data = encode_binding_success(t, address, p, k)
    assert data == general_success(t, address, p, k)
    message = stun.decode(data)
    assert message.method is stun.Method.BINDING
    assert message.message_class is stun.MessageClass.SUCCESS
    assert message.transaction_id == t
    assert message.verify_integrity(k)
    assert not message.verify_integrity(k + b"x")
    assert message.get(stun.XorMappedAddress) == stun.XorMappedAddress(address, p)


def _by_ipaddress(address: str) -> tuple[int, bytes] | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return (1 if ip.version == 4 else 2), ip.packed


@settings(max_examples=500)
@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.lists(st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join),
        st.lists(
            st.sampled_from(["0", "00", "01", "1", "255", "256", "+1", " 1", "1_0", "٣", ""]),
            min_size=4,
            max_size=4,
        ).map(".".join),
        st.from_regex(r"[0-9.:a-fx%]{0,20}", fullmatch=True),
        st.text(max_size=20),
    )
)
def test_packing_an_address_agrees_with_the_ipaddress_module(address: str) -> None:
    """Addresses are packed by a strict dotted-quad reader where it can (IPv4, as sockets
    report them) and by :mod:`ipaddress` otherwise: the result is what :mod:`ipaddress`
    alone gives, and so is a refusal."""
    expected = _by_ipaddress(address)
    if expected is None:
        with pytest.raises(ValueError):
            _pack_ip(address)
    else:
        assert _pack_ip(address) == expected


@pytest.mark.parametrize("address", ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "::"])
def test_success_response_examples(address: str) -> None:
    t = bytes(range(12))
    k = stun.short_term_key("VOkJxbRl1RmTxUk/WvJxBt")
    for p in (0, 9, 0x2112, 65535):
        assert encode_binding_success(t, address, p, k) == general_success(t, address, p, k)


def test_bad_values_raise_value_error_like_the_general_encoder() -> None:
    k = b"key"

    def make(user: str = "a:b", priority: int = 1, tiebreaker: int = 1) -> BindingRequestTemplate:
        return BindingRequestTemplate(
            user, priority, controlling=True, tiebreaker=tiebreaker, use_candidate=False, key=k
        )

    bad: list[tuple[str, int, int]] = [
        ("a:b", -1, 1),
        ("a:b", 2**32, 1),
        ("a:b", 1, 2**64),
        ("a:b", 1, -1),
        ("x" * 70000, 1, 1),  # USERNAME longer than 65535 bytes
        ("x" * 65480, 1, 1),  # the message, with MESSAGE-INTEGRITY and FINGERPRINT, too long
    ]
    for user, priority, tiebreaker in bad:
        with pytest.raises(ValueError):
            make(user, priority, tiebreaker)
        with pytest.raises(ValueError):
            general_request(bytes(12), user, priority, True, tiebreaker, False, k)
    longest = "x" * 65472
    assert make(longest).encode(bytes(12)) == general_request(
        bytes(12), longest, 1, True, 1, False, k
    )
    template = make()
    with pytest.raises(ValueError):
        template.encode(bytes(11))
    for address, p in [("192.0.2.1", 65536), ("192.0.2.1", -1), ("2001:db8::1", 70000)]:
        with pytest.raises(ValueError):
            encode_binding_success(bytes(12), address, p, k)
        with pytest.raises(ValueError):
            general_success(bytes(12), address, p, k)
    with pytest.raises(ValueError):
        encode_binding_success(bytes(12), "not an address", 1, k)
    with pytest.raises(ValueError):
        encode_binding_success(bytes(13), "192.0.2.1", 1, k)
    # What is refused stays refused after its like was encoded (the attribute is cached).
    encode_binding_success(bytes(12), "192.0.2.1", 5000, k)
    for port in (5000.0, "5000"):
        with pytest.raises(ValueError):
            encode_binding_success(bytes(12), "192.0.2.1", port, k)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            general_success(bytes(12), "192.0.2.1", port, k)  # type: ignore[arg-type]


def test_a_bytearray_key_signs_as_its_bytes() -> None:
    key = bytearray(b"0123456789abcdefghijkl")
    tid = bytes(range(12))
    data = encode_binding_success(tid, "192.0.2.1", 5000, key)  # type: ignore[arg-type]
    assert data == general_success(tid, "192.0.2.1", 5000, bytes(key))


# -- the decoder's shortcut for a message ending in MESSAGE-INTEGRITY and FINGERPRINT ----------


@settings(max_examples=200)
@given(tid, username, u32, st.booleans(), u64, st.booleans(), key, st.data())
def test_decoder_shortcut_agrees_with_the_tail_walker(
    t: bytes,
    user: str,
    priority: int,
    controlling: bool,
    tiebreaker: int,
    use_candidate: bool,
    k: bytes,
    data: st.DataObject,
) -> None:
    raw = general_request(t, user, priority, controlling, tiebreaker, use_candidate, k)
    message = stun.decode(raw)
    mi = len(raw) - 32
    assert (message._mi, message._mi256, message._fp) == (mi, -1, len(raw) - 8)
    records = list(message._records[:-2])  # what the main loop found before MESSAGE-INTEGRITY
    assert _decode_tail(raw, mi, records) == (mi, -1, len(raw) - 8)
    assert records == list(message._records)
    # Any flipped bit, but in FINGERPRINT's type and length (it would become another,
    # ignored attribute), makes the message fail to decode.
    n = len(raw)
    index = data.draw(st.integers(0, n - 1).filter(lambda i: not n - 8 <= i < n - 4))
    broken = bytearray(raw)
    broken[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(StunDecodeError):
        stun.decode(bytes(broken))


def test_decoder_still_walks_other_endings() -> None:
    k = b"key"
    t = bytes(12)
    body = (stun.Username("a:b"),)
    request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, t, body)
    both = request.encode(integrity_key=k, integrity_sha256_key=k, fingerprint=True)
    message = stun.decode(both)
    assert message._mi >= 0 and message._mi256 >= 0 and message._fp >= 0
    assert message.verify_integrity(k)
    only_mi = request.encode(integrity_key=k)
    message = stun.decode(only_mi)
    assert message._mi >= 0 and message._fp < 0 and message.verify_integrity(k)
    # MESSAGE-INTEGRITY, FINGERPRINT, then an ignored attribute: the walker, not the shortcut.
    raw = request.encode(integrity_key=k, fingerprint=True)
    extra = bytes.fromhex("80220004") + b"abcd"
    length = (len(raw) - 20 + len(extra)).to_bytes(2, "big")
    message = stun.decode(raw[:2] + length + raw[4:] + extra)
    assert message._fp == len(raw) - 8 and message.verify_integrity(k)
    assert message.get(stun.Software) is None
    assert [r[0] for r in message._records] == [0x0006, 0x0008, 0x8028]


# -- the core ---------------------------------------------------------------------------------


def _cores() -> tuple[AgentCore, AgentCore]:
    return two_cores(("ufA1", "ufB1"))


def test_core_checks_are_the_general_encoding_in_either_role() -> None:
    a, _ = _cores()
    check = a.poll_check(1.0)
    assert check is not None
    pair = check.pair
    for _ in range(2):
        for nominating in (False, True):
            for consent in (False, True):
                c = a._start_check(pair, nominating=nominating, now=1.0, consent=consent)
                assert c.controlling is a.controlling
                assert c.message == general_request(
                    c.transaction_id,
                    "ufB1:ufA1",
                    a._prflx_priority(pair.local),
                    a.controlling,
                    a.tiebreaker,
                    a.controlling and nominating,
                    stun.short_term_key("b" * 22),
                )
        a._switch_role("a test")  # the templates of the other role must not be reused


def test_core_success_response_is_the_general_encoding() -> None:
    a, b = _cores()
    check = a.poll_check(1.0)
    assert check is not None
    for source in [("192.0.2.1", 9), ("2001:db8::7", 40000)]:
        request = stun.decode(check.message)
        response = b.on_request(0, source, request, 1.0)
        assert response == general_success(
            request.transaction_id, source[0], source[1], stun.short_term_key("b" * 22)
        )


def test_the_answer_to_a_signalled_peer_is_made_ready_while_signaling_goes_on() -> None:
    """Once a host candidate is signalled, the XOR-MAPPED-ADDRESS of the answer to its first
    check is worked out already (the answer only looks it up); priming is quiet about what
    it cannot encode, and changes no bytes."""
    a, _b = two_cores(end=False)
    port = 40000 + _xor_mapped_v4.cache_info().misses % 20000  # (an address not seen yet)
    a.add_remote_candidate(Candidate.from_sdp(f"candidate:9 1 udp 1 198.51.100.77 {port} typ host"))
    before = _xor_mapped_v4.cache_info()
    encode_binding_success(b"t" * 12, "198.51.100.77", port, b"k")
    after = _xor_mapped_v4.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    for odd in ("::1", "not an address", "300.1.1.1"):
        prime_success(odd, 1)
    prime_success("192.0.2.7", 70000)  # (no port of UDP)
    assert encode_binding_success(b"t" * 12, "192.0.2.8", 9, b"k") == stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.SUCCESS,
        b"t" * 12,
        [stun.XorMappedAddress("192.0.2.8", 9)],
    ).encode(integrity_key=b"k", fingerprint=True)


def test_the_key_caches_are_shared_safely_by_threads() -> None:
    """Threads (each with a trio run and its agents, or using the codec alone) prime keys
    in the process-wide caches, full (4096 keys seen): the oldest goes out once, never
    twice (two threads evicting at once had raised KeyError, out of ``open_agent`` too)."""
    errors: list[BaseException] = []

    def prime(tag: str) -> None:
        try:
            for i in range(3000):
                key = stun.short_term_key(f"{tag}-{i}")
                success_pads(key)  # (sha1_pads' cache, which the fast path signs with)
                stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST).encode(
                    integrity_key=key, fingerprint=False
                )
        except BaseException as exc:
            errors.append(exc)

    for i in range(4096):
        success_pads(stun.short_term_key(f"fill-{i}"))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (threads switch all the time: the race, every run)
    try:
        threads = [threading.Thread(target=prime, args=(f"t{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
