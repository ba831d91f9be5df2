"""The pure multicast DNS layer (RFC 6762): the DNS messages an ICE agent sends and reads to
resolve a peer's ``.local`` host candidate and to answer for its own (RFC 8445 §5.1.1.1's
privacy names, as browsers signal them).

Bytes in, frozen values out, and back; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from .._errors import MdnsDecodeError
from ._message import (
    ANY,
    CLASS_IN,
    MDNS_IPV4_GROUP,
    MDNS_IPV6_GROUP,
    MDNS_PORT,
    TYPE_A,
    TYPE_AAAA,
    DnsMessage,
    Question,
    Record,
    decode_message,
    encode_answer,
    encode_query,
    is_mdns_name,
    normalize_name,
)

__all__ = [
    "ANY",
    "CLASS_IN",
    "MDNS_IPV4_GROUP",
    "MDNS_IPV6_GROUP",
    "MDNS_PORT",
    "TYPE_A",
    "TYPE_AAAA",
    "DnsMessage",
    "MdnsDecodeError",
    "Question",
    "Record",
    "decode_message",
    "encode_answer",
    "encode_query",
    "is_mdns_name",
    "normalize_name",
]
