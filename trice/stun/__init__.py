"""The pure STUN layer: messages, attributes, integrity, framing and retransmission timing.

Bytes in, typed messages out, and back (RFC 8489, with the ICE attributes of RFC 8445 §16.1,
the TURN attributes and ChannelData of RFC 8656, RFC 5780's attributes and RFC 7983's
demultiplexing).  Nothing here does I/O or reads a clock: this package imports no trio,
socket or time module.
"""

from __future__ import annotations

from .._errors import StunDecodeError
from ._attributes import (
    AddressAttribute,
    AlternateDomain,
    AlternateServer,
    Attribute,
    BytesAttribute,
    EmptyAttribute,
    ErrorCode,
    Fingerprint,
    MappedAddress,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    PasswordAlgorithm,
    PasswordAlgorithms,
    Realm,
    Software,
    TextAttribute,
    UnknownAttribute,
    UnknownAttributes,
    UserHash,
    Username,
    XorAddressAttribute,
    XorMappedAddress,
)
from ._attributes_ext import (
    ChangeRequest,
    ChannelNumber,
    Data,
    DontFragment,
    EvenPort,
    IceControlled,
    IceControlling,
    Lifetime,
    OtherAddress,
    Priority,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    ResponseOrigin,
    ResponsePort,
    UseCandidate,
    XorPeerAddress,
    XorRelayedAddress,
)
from ._framing import (
    PacketKind,
    classify,
    decode_channel_data,
    encode_channel_data,
    frame_length,
    is_stun,
    peek_type,
    peek_username,
)
from ._integrity import PasswordAlgorithmId, long_term_key, saslprep, short_term_key, user_hash
from ._message import Message, MessageClass, Method, decode, message_type, new_transaction_id
from ._transaction import RetransmissionSchedule
from ._wire import MAGIC_COOKIE

__all__ = [
    # messages (RFC 8489 §5)
    "MAGIC_COOKIE",
    "Message",
    "MessageClass",
    "Method",
    "StunDecodeError",
    "decode",
    "message_type",
    "new_transaction_id",
    # attribute shapes
    "AddressAttribute",
    "Attribute",
    "BytesAttribute",
    "EmptyAttribute",
    "TextAttribute",
    "UnknownAttribute",
    "XorAddressAttribute",
    # STUN attributes (RFC 8489 §14)
    "AlternateDomain",
    "AlternateServer",
    "ErrorCode",
    "Fingerprint",
    "MappedAddress",
    "MessageIntegrity",
    "MessageIntegritySha256",
    "Nonce",
    "PasswordAlgorithm",
    "PasswordAlgorithms",
    "Realm",
    "Software",
    "UnknownAttributes",
    "UserHash",
    "Username",
    "XorMappedAddress",
    # ICE attributes (RFC 8445 §16.1)
    "IceControlled",
    "IceControlling",
    "Priority",
    "UseCandidate",
    # TURN attributes (RFC 8656 §18)
    "ChannelNumber",
    "Data",
    "DontFragment",
    "EvenPort",
    "Lifetime",
    "RequestedAddressFamily",
    "RequestedTransport",
    "ReservationToken",
    "XorPeerAddress",
    "XorRelayedAddress",
    # NAT behaviour discovery attributes (RFC 5780 §7)
    "ChangeRequest",
    "OtherAddress",
    "ResponseOrigin",
    "ResponsePort",
    # credentials (RFC 8489 §9, RFC 4013)
    "PasswordAlgorithmId",
    "long_term_key",
    "saslprep",
    "short_term_key",
    "user_hash",
    # demultiplexing and framing (RFC 7983, RFC 8656 §12)
    "PacketKind",
    "classify",
    "decode_channel_data",
    "encode_channel_data",
    "frame_length",
    "is_stun",
    "peek_type",
    "peek_username",
    # transactions (RFC 8489 §6.2)
    "RetransmissionSchedule",
]
