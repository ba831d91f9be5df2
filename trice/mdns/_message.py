"""DNS messages as multicast DNS carries them (RFC 1035 §4, RFC 6762 §18): what an ICE agent
needs to resolve a peer's ``.local`` host candidate and to answer for its own.

Pure: bytes in, frozen values out, and back.  Only address records (A and AAAA) are decoded;
others are skipped whole.  Names are compared in the form :func:`normalize_name` gives.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._errors import MdnsDecodeError

__all__ = [
    "ANY",
    "CLASS_IN",
    "MDNS_IPV4_GROUP",
    "MDNS_IPV6_GROUP",
    "MDNS_PORT",
    "TYPE_A",
    "TYPE_AAAA",
    "DnsMessage",
    "Question",
    "Record",
    "decode_message",
    "encode_answer",
    "encode_query",
    "is_mdns_name",
    "normalize_name",
]

#: The multicast DNS port (RFC 6762 §3).
MDNS_PORT = 5353
#: The IPv4 multicast group of mDNS.
MDNS_IPV4_GROUP = "224.0.0.251"
#: The IPv6 multicast group of mDNS (link-local scope).
MDNS_IPV6_GROUP = "ff02::fb"

#: The record type of an IPv4 address (RFC 1035 §3.4.1).
TYPE_A = 1
#: The record type of an IPv6 address (RFC 3596 §2.1).
TYPE_AAAA = 28
#: A question's type asking for records of every type (RFC 1035 §3.2.3).
ANY = 255
#: The Internet class (RFC 1035 §3.2.4).
CLASS_IN = 1

_HEADER = struct.Struct("!6H")
_FIXED = struct.Struct("!HH")  # a question's type and class
_RECORD = struct.Struct("!HHIH")  # a record's type, class, TTL and data length
_QR = 0x8000  # a response
_AA = 0x0400  # authoritative
_CLASS_ANY = 255
_TOP = 0x8000  # in a class: unicast response wanted (question), cache flush (record)
_MAX_NAME = 255  # bytes on the wire (RFC 1035 §2.3.4)
_MAX_JUMPS = 32  # compression pointers followed in one name
#: What reading the names of one message may cost, all its names together (a name that
#: points at another reads that one again): each label its bytes and ``_STEP_COST`` more,
#: each pointer ``_STEP_COST``; at most this much, or four times a larger message's size
#: (RFC 6762 §17 allows 9000 bytes).  Names that point at a long one cannot make a message
#: cost many times its size to decode.
_MAX_READ = 49152
_STEP_COST = 8


def _name_budget(size: int) -> int:
    """What reading the names of a message of ``size`` bytes may cost (see _MAX_READ)."""
    return max(_MAX_READ, 4 * size)


@dataclass(frozen=True, slots=True)
class Question:
    """A question: ``name`` (normalized), its type, and RFC 6762 §5.4's unicast-response bit."""

    name: str
    qtype: int
    unicast_response: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """An address record of class IN: ``name`` (normalized) has ``address`` (A or AAAA),
    for ``ttl`` seconds; ``cache_flush`` is RFC 6762 §10.2's bit."""

    name: str
    rtype: int
    ttl: int
    address: str
    cache_flush: bool = False


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """A decoded message: the header's fields, the questions, and the address records of
    its answer, authority and additional sections (records of other types or classes left
    out), the first ``answer_records`` of them from the answer section."""

    id: int
    flags: int
    questions: tuple[Question, ...] = ()
    records: tuple[Record, ...] = ()
    answer_records: int = 0
    #: The question section as it came, and how many questions it holds (all of them,
    #: those of other classes too): what a reply to a legacy query repeats (RFC 6762 §6.7).
    asked: bytes = field(default=b"", compare=False, repr=False)
    asked_count: int = field(default=0, compare=False, repr=False)

    @property
    def is_response(self) -> bool:
        """A response (the QR bit), not a query."""
        return bool(self.flags & _QR)

    @property
    def opcode(self) -> int:
        """The OPCODE field.  Non-zero is not a standard query or response, which mDNS
        ignores (RFC 6762 §18.3)."""
        return (self.flags >> 11) & 0xF

    @property
    def rcode(self) -> int:
        """The RCODE field.  Non-zero is an error response, which mDNS ignores (RFC 6762
        §18.11)."""
        return self.flags & 0xF


def normalize_name(name: str) -> str:
    """``name`` as compared here: ASCII letters lowered (DNS names ignore their case, RFC
    4343), without a final dot."""
    lowered = name.translate(_LOWER)
    return lowered[:-1] if lowered.endswith(".") else lowered


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def is_mdns_name(name: str) -> bool:
    """Tell whether ``name`` is an mDNS candidate's name, resolved by multicast DNS: one
    label and ``.local`` (RFC 6762 §3; draft-ietf-mmusic-mdns-ice-candidates §3.2.1 leaves
    a name of more dots to ordinary ICE, to which a host name is no address)."""
    label, dot, domain = normalize_name(name).partition(".")
    return bool(label) and dot == "." and domain == "local"


def encode_query(name: str, qtypes: Sequence[int] = (TYPE_A, TYPE_AAAA)) -> bytes:
    """A multicast DNS query for ``name``'s addresses of the types ``qtypes``: ID 0, one
    question for each type, no unicast-response bit (RFC 6762 §18).  The name goes as
    written, its case kept (some responders match it with its case)."""
    labels = _encode_name(name)
    body = b"".join(labels + _FIXED.pack(qtype, CLASS_IN) for qtype in qtypes)
    return _HEADER.pack(0, 0, len(qtypes), 0, 0, 0) + body


def encode_answer(
    name: str,
    addresses: Sequence[str],
    *,
    ttl: int = 120,
    message_id: int = 0,
    question: Question | None = None,
    reply_to: DnsMessage | None = None,
) -> bytes:
    """An authoritative response: ``name`` has ``addresses`` (A or AAAA, as each is).

    A multicast response (the default) has ID 0, no question, and the cache-flush bit on
    each record, ``name`` being this host's alone (RFC 6762 §6, §10.2).  For a legacy
    unicast query (one not from port 5353, §6.7), pass it as ``reply_to``: its ID and its
    question section are repeated as they came (every question, byte for byte, so no
    larger than the query's), and the records go without the bit.  (Or its
    ``message_id`` and the one ``question`` to repeat, written anew.)
    """
    encoded = _encode_name(name)
    legacy = reply_to is not None or question is not None
    flush = 0 if legacy else _TOP
    records = []
    for address in addresses:
        ip = ipaddress.ip_address(address)
        rtype = TYPE_A if ip.version == 4 else TYPE_AAAA
        packed = ip.packed
        records.append(encoded + _RECORD.pack(rtype, CLASS_IN | flush, ttl, len(packed)) + packed)
    if reply_to is not None:
        # (At the offset it had in the query, after a header of the same size: a pointer
        # in it to an earlier name still points there.)
        message_id, asked, count = reply_to.id, reply_to.asked, reply_to.asked_count
    elif question is not None:
        asked, count = _encode_name(question.name) + _FIXED.pack(question.qtype, CLASS_IN), 1
    else:
        asked, count = b"", 0
    header = _HEADER.pack(message_id, _QR | _AA, count, len(records), 0, 0)
    return header + asked + b"".join(records)


def _encode_name(name: str) -> bytes:
    """``name`` in labels, as written (its case kept), without a final dot."""
    out = bytearray()
    for label in (name[:-1] if name.endswith(".") else name).split("."):
        raw = label.encode("utf-8")
        if not 0 < len(raw) <= 63:
            raise ValueError(f"DNS name {name!r} has an empty label or one over 63 bytes")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > _MAX_NAME:
        raise ValueError(f"DNS name {name!r} is over 255 bytes")
    return bytes(out)


def decode_message(data: bytes | bytearray | memoryview) -> DnsMessage:
    """Decode a DNS message; raises :class:`~trice.MdnsDecodeError` if it is malformed.

    Questions of class IN or ANY are kept, whatever their type (RFC 6762 §6: no other
    class is asked for here); of the records (answer, authority and additional sections)
    only the A and AAAA records of class IN, the rest skipped.  A label with a dot in it is
    kept escaped (``\\.``), so that a name of one label never passes for one of two.
    A :class:`bytearray` or :class:`memoryview` is read as its bytes.
    """
    if not isinstance(data, bytes):
        data = memoryview(data).tobytes()  # (not bytes(): an int would make that many)
    if len(data) < _HEADER.size:
        raise MdnsDecodeError(f"a DNS message has a 12-byte header, got {len(data)} bytes")
    message_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    offset = _HEADER.size
    steps = [_name_budget(len(data))]  # (what reading names may still cost: see _MAX_READ)
    questions = []
    for _ in range(qdcount):
        name, offset = _decode_name(data, offset, steps)
        if offset + _FIXED.size > len(data):
            raise MdnsDecodeError("a DNS question ends early")
        qtype, qclass = _FIXED.unpack_from(data, offset)
        offset += _FIXED.size
        if qclass & ~_TOP in (CLASS_IN, _CLASS_ANY):
            questions.append(Question(name, qtype, bool(qclass & _TOP)))
    asked = data[_HEADER.size : offset]
    records = []
    answer_records = 0
    for index in range(ancount + nscount + arcount):
        name, offset = _decode_name(data, offset, steps)
        if offset + _RECORD.size > len(data):
            raise MdnsDecodeError("a DNS record ends early")
        rtype, rclass, ttl, length = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        end = offset + length
        if end > len(data):
            raise MdnsDecodeError("a DNS record's data runs past the message")
        if rclass & ~_TOP == CLASS_IN and rtype in (TYPE_A, TYPE_AAAA):
            size = 4 if rtype == TYPE_A else 16
            if length != size:
                raise MdnsDecodeError(f"an address record of type {rtype} has {length} bytes")
            address = str(ipaddress.ip_address(data[offset:end]))
            records.append(Record(name, rtype, ttl, address, bool(rclass & _TOP)))
            answer_records += index < ancount
        offset = end
    return DnsMessage(
        message_id, flags, tuple(questions), tuple(records), answer_records, asked, qdcount
    )


def _decode_name(data: bytes, offset: int, steps: list[int]) -> tuple[str, int]:
    """The name at ``offset`` and the offset after it (compression pointers followed only
    backwards, so that no loop can form); ``steps`` counts down what the message's names
    may still cost to read (see ``_MAX_READ``)."""
    labels: list[str] = []
    size = 1
    end = -1  # where the name ends in the message, once a pointer was followed
    jumps = 0
    floor = offset  # a pointer must point before this
    while True:
        if offset >= len(data):
            raise MdnsDecodeError("a DNS name runs past the message")
        length = data[offset]
        steps[0] -= _STEP_COST if length & 0xC0 == 0xC0 else length + _STEP_COST
        if steps[0] < 0:
            raise MdnsDecodeError(
                f"a DNS message whose labels cost over {_name_budget(len(data))} to read"
            )
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise MdnsDecodeError("a DNS compression pointer is cut short")
            target = ((length & 0x3F) << 8) | data[offset + 1]
            if target >= floor or jumps == _MAX_JUMPS:
                raise MdnsDecodeError("a DNS compression pointer does not point back")
            if target < _HEADER.size:
                # (Into the header, which holds no name: no encoder writes one, and a reply
                # that repeats the question, RFC 6762 §6.7, has other bytes there.)
                raise MdnsDecodeError("a DNS compression pointer points into the header")
            if end < 0:
                end = offset + 2
            jumps += 1
            floor = offset = target
            continue
        if length & 0xC0:
            raise MdnsDecodeError(f"a DNS label of unknown kind {length >> 6}")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise MdnsDecodeError("a DNS label runs past the message")
        size += length + 1
        if size > _MAX_NAME:
            raise MdnsDecodeError("a DNS name is over 255 bytes")
        label = data[offset : offset + length].decode("utf-8", "replace")
        if "." in label or "\\" in label:
            label = label.replace("\\", "\\\\").replace(".", "\\.")
        labels.append(label)
        offset += length
    return normalize_name(".".join(labels)), offset if end < 0 else end
