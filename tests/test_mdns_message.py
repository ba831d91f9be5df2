"""The multicast DNS message codec (RFC 6762, RFC 1035 §4): hand-built wire vectors, malformed
messages, and property tests with MdnsDecodeError as the decoder's only failure.

The vectors are written out byte by byte from RFC 1035 §4.1's layout, not produced by the
module under test: a 12-byte header (ID, flags, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT), then
questions (name, type, class) and records (name, type, class, TTL, RDLENGTH, RDATA).
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trice import ProtocolError
from trice.mdns import (
    TYPE_A,
    TYPE_AAAA,
    DnsMessage,
    MdnsDecodeError,
    Question,
    Record,
    decode_message,
    encode_answer,
    encode_query,
    is_mdns_name,
    normalize_name,
)

# --- hand-built vectors (RFC 1035 §4.1) ---------------------------------------------------

#: A query for abc.local, type A, class IN.
QUERY_A = bytes.fromhex(
    "0000 0000 0001 0000 0000 0000"  # ID 0, flags 0 (standard query), QD 1
    "03 616263 05 6c6f63616c 00"  # abc.local (offset 12)
    "0001 0001"  # type A, class IN
)

#: A response with an A (cache flush) and an AAAA record for abc.local, names uncompressed.
RESPONSE_A_AAAA = bytes.fromhex(
    "0000 8400 0000 0002 0000 0000"  # ID 0, QR+AA, AN 2
    "03 616263 05 6c6f63616c 00"  # abc.local
    "0001 8001 00000078 0004 c0000201"  # A, IN|cache flush, TTL 120, 192.0.2.1
    "03 616263 05 6c6f63616c 00"  # abc.local
    "001c 0001 00001194 0010 20010db8000000000000000000000001"  # AAAA, IN, 4500, 2001:db8::1
)

#: A response echoing its question; the answers' names are compression pointers.
RESPONSE_COMPRESSED = bytes.fromhex(
    "1234 8400 0001 0002 0000 0000"  # ID 0x1234, QR+AA, QD 1, AN 2
    "03 616263 05 6c6f63616c 00"  # abc.local at offset 12 ("local" at offset 16)
    "0001 0001"  # type A, class IN
    "c00c"  # -> offset 12: abc.local
    "0001 0001 0000000a 0004 c0000201"  # A, IN, TTL 10, 192.0.2.1
    "03 78797a c010"  # xyz + -> offset 16: xyz.local
    "001c 0001 0000000a 0010 20010db8000000000000000000000002"  # AAAA, IN, 10, 2001:db8::2
)

#: Records that must be skipped (PTR, TXT, an A record of class CH) ahead of an A record,
#: and an A record in the additional section.
RESPONSE_SKIPPED = bytes.fromhex(
    "0000 8400 0000 0004 0000 0001"  # QR+AA, AN 4, AR 1
    "04 5f737663 05 6c6f63616c 00"  # _svc.local at offset 12 ("local" at offset 17)
    "000c 0001 00000078 0006 03 616263 c011"  # PTR -> abc.local
    "03 616263 c011"  # abc.local at offset 40
    "0010 8001 00000078 0004 03 613d62"  # TXT "a=b"
    "c028 0001 0003 00000078 0004 0a000001"  # A of class CH (3): not an address of IN
    "c028 0001 8001 00000078 0004 c0000201"  # A, IN|flush, 192.0.2.1
    "c028 0001 0001 00000078 0004 c6336407"  # additional: A, IN, 198.51.100.7
)

#: A query whose question asks for a unicast response (the class's top bit).
QUERY_UNICAST = bytes.fromhex(
    "0000 0000 0001 0000 0000 0000"
    "03 414243 05 4c4f43414c 00"  # ABC.LOCAL: names are compared lowered
    "001c 8001"  # AAAA, IN|unicast response
)

#: A response as Pion's mdns sends it: flags 0x8400, ID 0, no question, one A record of
#: class IN (no cache-flush bit), TTL 120, for "<uuid>.local." written out uncompressed.
PION_UUID = "1f0e4c5a-9b7d-4e21-8c3f-6a2b5d7e9f01"
PION_ANSWER = (
    b"\x00\x00"  # ID 0
    b"\x84\x00"  # QR, AA
    b"\x00\x00\x00\x01\x00\x00\x00\x00"  # QD 0, AN 1, NS 0, AR 0
    b"\x24" + PION_UUID.encode("ascii") + b"\x05local\x00"  # 36-byte label, local, root
    b"\x00\x01"  # type A
    b"\x00\x01"  # class IN
    b"\x00\x00\x00\x78"  # TTL 120
    b"\x00\x04"  # RDLENGTH
    b"\xc0\xa8\x01\x05"  # 192.168.1.5
)

VECTORS = [
    QUERY_A,
    RESPONSE_A_AAAA,
    RESPONSE_COMPRESSED,
    RESPONSE_SKIPPED,
    QUERY_UNICAST,
    PION_ANSWER,
]


def _header(flags: int = 0x8400, qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!6H", 0, flags, qd, an, ns, ar)


def test_query_vector() -> None:
    """A query for abc.local type A decodes, and encode_query builds the same bytes."""
    msg = decode_message(QUERY_A)
    assert msg == DnsMessage(0, 0, (Question("abc.local", TYPE_A, False),), ())
    assert not msg.is_response
    assert encode_query("abc.local", (TYPE_A,)) == QUERY_A
    assert encode_query("abc.local.", (TYPE_A,)) == QUERY_A  # (the final dot dropped)
    # The name goes as written: some responders (Pion's) match it with its case.
    mixed = encode_query("Abc.local", (TYPE_A,))
    assert mixed == QUERY_A.replace(b"abc", b"Abc")
    assert decode_message(mixed).questions[0].name == "abc.local"


def test_response_a_aaaa_vector() -> None:
    """An A and an AAAA record decode with their TTLs, addresses and cache-flush bits."""
    msg = decode_message(RESPONSE_A_AAAA)
    assert msg.is_response
    assert msg.flags == 0x8400
    assert msg.questions == ()
    assert msg.records == (
        Record("abc.local", TYPE_A, 120, "192.0.2.1", True),
        Record("abc.local", TYPE_AAAA, 4500, "2001:db8::1", False),
    )


def test_encode_answer_matches_hand_built_bytes() -> None:
    """encode_answer writes RFC 1035's layout: QR+AA, no question, IN with cache flush."""
    expected = bytes.fromhex(
        "0000 8400 0000 0002 0000 0000"
        "03 616263 05 6c6f63616c 00 0001 8001 00000078 0004 c0000201"
        "03 616263 05 6c6f63616c 00 001c 8001 00000078 0010 20010db8000000000000000000000001"
    )
    assert encode_answer("abc.local", ["192.0.2.1", "2001:DB8::1"]) == expected


def test_compression_pointers() -> None:
    """A pointer to the question's name and one to its "local" suffix after a new label."""
    msg = decode_message(RESPONSE_COMPRESSED)
    assert msg.id == 0x1234
    assert msg.questions == (Question("abc.local", TYPE_A),)
    assert msg.records == (
        Record("abc.local", TYPE_A, 10, "192.0.2.1"),
        Record("xyz.local", TYPE_AAAA, 10, "2001:db8::2"),
    )


def test_other_records_skipped() -> None:
    """PTR, TXT and non-IN records are skipped whole; the A records after them still decode,
    the additional section's included."""
    msg = decode_message(RESPONSE_SKIPPED)
    assert msg.records == (
        Record("abc.local", TYPE_A, 120, "192.0.2.1", True),
        Record("abc.local", TYPE_A, 120, "198.51.100.7", False),
    )
    assert msg.answer_records == 1  # (the first record alone is of the answer section)


def test_unicast_response_bit_and_case() -> None:
    """A question's class top bit is its unicast-response bit; its name comes lowered."""
    msg = decode_message(QUERY_UNICAST)
    assert msg.questions == (Question("abc.local", TYPE_AAAA, True),)


@pytest.mark.parametrize(
    ("flags", "opcode", "rcode", "response"),
    [
        (0x0000, 0, 0, False),
        (0x8400, 0, 0, True),
        (0x8403, 0, 3, True),  # NXDOMAIN
        (0x2800, 5, 0, False),  # UPDATE
        (0xF80F, 15, 15, True),
    ],
)
def test_opcode_and_rcode(flags: int, opcode: int, rcode: int, response: bool) -> None:
    """opcode is bits 11-14 of the flags, rcode bits 0-3, is_response bit 15."""
    msg = decode_message(_header(flags))
    assert (msg.opcode, msg.rcode, msg.is_response) == (opcode, rcode, response)


def test_pion_answer() -> None:
    """Pion's answer (ID 0, flags 0x8400, uncompressed "<uuid>.local.") decodes."""
    msg = decode_message(PION_ANSWER)
    assert msg == DnsMessage(
        0, 0x8400, (), (Record(f"{PION_UUID}.local", TYPE_A, 120, "192.168.1.5", False),), 1
    )
    assert is_mdns_name(msg.records[0].name)


def test_trailing_bytes_ignored() -> None:
    """Bytes after the sections the counts announce are left unread."""
    assert decode_message(QUERY_A + b"\xff\xff") == decode_message(QUERY_A)


# --- malformed -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", VECTORS)
def test_every_truncation_raises(data: bytes) -> None:
    """Each vector is read to its last byte, so every shorter prefix raises MdnsDecodeError."""
    decode_message(data)
    for cut in range(len(data)):
        with pytest.raises(MdnsDecodeError):
            decode_message(data[:cut])


def test_error_type() -> None:
    """MdnsDecodeError is both a ProtocolError and a ValueError."""
    assert issubclass(MdnsDecodeError, ProtocolError)
    assert issubclass(MdnsDecodeError, ValueError)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("c00c 0001 0001", id="self"),
        pytest.param("c012 0001 0001 00", id="forward"),
        pytest.param("01 61 c00c 0001 0001", id="into-own-name"),
        pytest.param("c00e c00c 0001 0001", id="two-pointer-loop"),
        pytest.param("c0", id="cut-short"),
    ],
)
def test_bad_pointer(body: str) -> None:
    """A pointer to itself, forward, into its own name, or cut short raises."""
    with pytest.raises(MdnsDecodeError):
        decode_message(_header(0, qd=1) + bytes.fromhex(body))


def test_loop_behind_name_raises() -> None:
    """A valid backward pointer into a region that loops (here a skipped TXT record's data:
    label "a", then a pointer to that label) raises."""
    data = _header(an=2) + bytes.fromhex(
        "00 0010 0001 00000078 0004"  # root name at 12; TXT, IN, 120, 4 bytes of data:
        "01 61 c017"  # at 23: "a", then a pointer back to 23
        "c017 0001 0001 00000078 0004 c0000201"  # at 27: -> 23, then A 192.0.2.1
    )
    with pytest.raises(MdnsDecodeError):
        decode_message(data)
    # The same TXT record, with its data ending in a root label instead, lets the A decode.
    fine = data[:25] + b"\x00\x00" + data[27:]
    assert decode_message(fine).records == (Record("a", TYPE_A, 120, "192.0.2.1"),)


def _pointer_chain(questions: int) -> bytes:
    """``questions`` questions: the first names "local", each next one is a pointer to the
    previous one's name, so the last takes ``questions - 1`` jumps."""
    body = bytearray(b"\x05local\x00\x00\x01\x00\x01")
    previous = 12
    for _ in range(questions - 1):
        here = 12 + len(body)
        body += struct.pack("!HHH", 0xC000 | previous, TYPE_A, 1)
        previous = here
    return _header(0, qd=questions) + bytes(body)


def test_pointer_chain_limit() -> None:
    """32 jumps in one name decode; 33 raise."""
    msg = decode_message(_pointer_chain(33))
    assert {q.name for q in msg.questions} == {"local"}
    with pytest.raises(MdnsDecodeError):
        decode_message(_pointer_chain(34))


@pytest.mark.parametrize("kind", [0x40, 0x80, 0x7F, 0xBF])
def test_reserved_label_types(kind: int) -> None:
    """Label types 01 and 10 (RFC 6891's extended labels, reserved) raise."""
    with pytest.raises(MdnsDecodeError):
        decode_message(_header(0, qd=1) + bytes([kind]) + b"a" * 70 + b"\x00\x00\x01\x00\x01")


def _label(text: str) -> bytes:
    raw = text.encode("ascii")
    return bytes([len(raw)]) + raw


def test_name_length_limit() -> None:
    """A name of 255 bytes decodes; 256 or more raise, counted across a pointer too."""
    exact = _label("a" * 63) * 3 + _label("b" * 61) + b"\x00"
    assert len(exact) == 255
    msg = decode_message(_header(0, qd=1) + exact + b"\x00\x01\x00\x01")
    assert msg.questions[0].name == ".".join(["a" * 63] * 3 + ["b" * 61])

    over = _label("a" * 63) * 3 + _label("b" * 62) + b"\x00"
    assert len(over) == 256
    with pytest.raises(MdnsDecodeError):
        decode_message(_header(0, qd=1) + over + b"\x00\x01\x00\x01")

    # 193 bytes in the first question; the second adds a 64-byte label before a pointer.
    first = _label("a" * 63) * 3 + b"\x00"
    second = _label("c" * 63) + b"\xc0\x0c"
    data = _header(0, qd=2) + first + b"\x00\x01\x00\x01" + second + b"\x00\x01\x00\x01"
    with pytest.raises(MdnsDecodeError):
        decode_message(data)


@pytest.mark.parametrize(("rtype", "length"), [(TYPE_A, 5), (TYPE_A, 3), (TYPE_AAAA, 4)])
def test_address_length(rtype: int, length: int) -> None:
    """An A record must carry 4 bytes and an AAAA record 16."""
    record = b"\x00" + struct.pack("!HHIH", rtype, 1, 120, length) + b"\x01" * length
    with pytest.raises(MdnsDecodeError):
        decode_message(_header(an=1) + record)


@pytest.mark.parametrize(
    ("qd", "an", "ns", "ar"), [(2, 0, 0, 0), (0, 3, 0, 0), (0, 2, 1, 0), (0, 2, 0, 1)]
)
def test_counts_beyond_data(qd: int, an: int, ns: int, ar: int) -> None:
    """Counts claiming more questions or records than the bytes hold raise."""
    body = RESPONSE_A_AAAA[12:] if qd == 0 else QUERY_A[12:]
    with pytest.raises(MdnsDecodeError):
        decode_message(_header(0x8400, qd, an, ns, ar) + body)


def test_record_data_past_end() -> None:
    """A skipped record whose RDLENGTH runs past the message raises."""
    record = b"\x00" + struct.pack("!HHIH", 16, 1, 120, 10) + b"abc"
    with pytest.raises(MdnsDecodeError):
        decode_message(_header(an=1) + record)


# --- properties ----------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
label = st.text(_ALPHABET, min_size=1, max_size=63)


def _wire_size(name: str) -> int:
    return sum(len(part) + 1 for part in normalize_name(name).split(".")) + 1


@st.composite
def dns_names(draw: st.DrawFn) -> str:
    """A valid name of [A-Za-z0-9-] labels under 255 wire bytes, maybe ending in .local
    and maybe with a final dot."""
    labels = draw(st.lists(label, min_size=1, max_size=5))
    if draw(st.booleans()):
        labels.append("local")
    while _wire_size(".".join(labels)) > 255:
        labels.pop(0)
    return ".".join(labels) + ("." if draw(st.booleans()) else "")


name = dns_names()
address = st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str)
addresses = st.lists(address, max_size=6)
ttl = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)


def _records(name: str, addrs: list[str], ttl: int, flush: bool) -> tuple[Record, ...]:
    out = []
    for addr in addrs:
        ip = ipaddress.ip_address(addr)
        rtype = TYPE_A if ip.version == 4 else TYPE_AAAA
        out.append(Record(normalize_name(name), rtype, ttl, str(ip), flush))
    return tuple(out)


@given(st.binary(max_size=600))
@settings(max_examples=500)
def test_decode_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes decode to a DnsMessage or raise MdnsDecodeError, nothing else."""
    try:
        msg = decode_message(data)
    except MdnsDecodeError:
        return
    assert isinstance(msg, DnsMessage)


@given(
    st.tuples(u16, u16, *[st.integers(0, 4)] * 4),
    st.binary(max_size=300),
)
@settings(max_examples=500)
def test_decode_small_counts(header: tuple[int, ...], body: bytes) -> None:
    """Headers with small counts over arbitrary bytes (reaching names and records) decode
    or raise MdnsDecodeError, nothing else."""
    try:
        msg = decode_message(struct.pack("!6H", *header) + body)
    except MdnsDecodeError:
        return
    assert len(msg.questions) == header[2]
    assert len(msg.records) <= sum(header[3:])


@given(name, addresses, ttl)
@settings(max_examples=200)
def test_answer_round_trip(name: str, addrs: list[str], ttl: int) -> None:
    """A multicast answer decodes to the normalized name, the addresses in canonical form,
    A or AAAA as each is, with the cache-flush bit, ID 0 and no question."""
    msg = decode_message(encode_answer(name, addrs, ttl=ttl))
    assert msg.is_response
    assert (msg.id, msg.flags, msg.opcode, msg.rcode) == (0, 0x8400, 0, 0)
    assert msg.questions == ()
    assert msg.records == _records(name, addrs, ttl, True)


@given(name, addresses, u16, name, st.sampled_from([TYPE_A, TYPE_AAAA, 255]) | u16)
@settings(max_examples=200)
def test_legacy_unicast_round_trip(
    name: str, addrs: list[str], message_id: int, asked: str, qtype: int
) -> None:
    """A legacy unicast answer echoes the query's ID and question, without cache flush."""
    data = encode_answer(name, addrs, message_id=message_id, question=Question(asked, qtype))
    msg = decode_message(data)
    assert msg.is_response
    assert msg.id == message_id
    assert msg.questions == (Question(normalize_name(asked), qtype, False),)
    assert msg.records == _records(name, addrs, 120, False)


@given(name)
@settings(max_examples=200)
def test_query_round_trip(name: str) -> None:
    """A query asks for A then AAAA for the normalized name, with ID 0, flags 0."""
    msg = decode_message(encode_query(name))
    assert (msg.id, msg.flags, msg.is_response) == (0, 0, False)
    assert msg.questions == (
        Question(normalize_name(name), TYPE_A, False),
        Question(normalize_name(name), TYPE_AAAA, False),
    )
    assert msg.records == ()


@given(name, addresses, st.data())
@settings(max_examples=300)
def test_mutated_answer(name: str, addrs: list[str], data: st.DataObject) -> None:
    """Changing one byte of an answer never raises anything but MdnsDecodeError."""
    encoded = bytearray(encode_answer(name, addrs))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    try:
        msg = decode_message(bytes(encoded))
    except MdnsDecodeError:
        return
    assert isinstance(msg, DnsMessage)


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("abc.local", "abc.local"),
        ("ABC.Local.", "abc.local"),
        ("MiXeD-09.LOCAL", "mixed-09.local"),
        ("\u00c4.LOCAL", "\u00c4.local"),  # Ä: only ASCII letters fold
        ("\u0130x", "\u0130x"),  # İ: str.lower() would make two code points
        ("\u212a.local", "\u212a.local"),  # KELVIN SIGN: str.lower() would make "k"
        ("", ""),
        (".", ""),
    ],
)
def test_normalize_name(raw: str, normal: str) -> None:
    """normalize_name lowers ASCII letters only and drops a final dot."""
    assert normalize_name(raw) == normal


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("x.local", True),
        ("X.LOCAL.", True),
        ("a.b.local", False),  # (draft-ietf-mmusic-mdns-ice-candidates §3.2.1)
        (f"{PION_UUID}.local", True),
        ("local", False),
        ("local.", False),
        (".local", False),
        ("xlocal", False),
        ("x.local.example", False),
        ("192.0.2.1", False),
        ("", False),
    ],
)
def test_is_mdns_name(raw: str, expected: bool) -> None:
    """is_mdns_name holds for a name with a label before a final "local" label."""
    assert is_mdns_name(raw) is expected


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="root"),
        pytest.param(".local", id="empty-first-label"),
        pytest.param("a..local", id="empty-inner-label"),
        pytest.param("x.local..", id="two-final-dots"),
        pytest.param("a" * 64 + ".local", id="label-64"),
        pytest.param("\u00e9" * 32 + ".local", id="label-64-utf8-bytes"),
        pytest.param(".".join(["a" * 63] * 3 + ["b" * 62]), id="name-256"),
        pytest.param(".".join(["a" * 63] * 5), id="name-321"),
    ],
)
def test_bad_names_rejected(bad: str) -> None:
    """encode_query and encode_answer reject an empty label, a label over 63 bytes and a
    name over 255 bytes, with ValueError; so is a bad name in the echoed question."""
    with pytest.raises(ValueError):
        encode_query(bad)
    with pytest.raises(ValueError):
        encode_answer(bad, ["192.0.2.1"])
    with pytest.raises(ValueError):
        encode_answer("ok.local", ["192.0.2.1"], question=Question(bad, TYPE_A))


def test_longest_name_accepted() -> None:
    """A name of exactly 255 wire bytes encodes and decodes back."""
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])
    msg = decode_message(encode_query(longest))
    assert msg.questions[0].name == longest


def test_bad_address_rejected() -> None:
    """encode_answer rejects something that is not an IP address, with ValueError."""
    with pytest.raises(ValueError):
        encode_answer("x.local", ["not-an-address"])


@pytest.mark.parametrize("target", [2, 7, 11])
def test_a_compression_pointer_into_the_header_is_refused(target: int) -> None:
    """A name that points into the header (which holds none; no encoder writes one) is
    malformed: a reply that repeats the question (RFC 6762 §6.7) has other bytes there,
    and would ask another name, or be malformed itself."""
    question = struct.pack("!H", 0xC000 | target) + struct.pack("!HH", TYPE_A, 1)
    data = struct.pack("!6H", 0x1234, 0, 1, 0, 0, 0) + question
    with pytest.raises(MdnsDecodeError, match="points into the header"):
        decode_message(data)
