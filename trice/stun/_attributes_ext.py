"""Attributes that other specifications add to STUN: ICE (RFC 8445 §16.1), TURN (RFC 8656 §18)
and NAT behaviour discovery (RFC 5780 §7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ._attributes import (
    AddressAttribute,
    Attribute,
    BytesAttribute,
    EmptyAttribute,
    XorAddressAttribute,
    register,
)
from ._wire import U16, U32, U64

_RFFU3 = b"\0\0\0"

# --- ICE (RFC 8445 §7.1.1, §16.1) ---------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class Priority(Attribute):
    """PRIORITY, 0x0024: the priority of the would-be peer-reflexive candidate (RFC 8445 §7.1.1)."""

    value: int
    TYPE: ClassVar[int] = 0x0024
    _MIN: ClassVar[int] = 4
    _MAX: ClassVar[int] = 4

    def _encode(self, transaction_id: bytes) -> bytes:
        return U32.pack(self.value)

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> Priority:
        obj: Priority = _new(cls)
        _set_priority(obj, U32.unpack(value)[0])
        return obj


@register
@dataclass(frozen=True, slots=True)
class UseCandidate(EmptyAttribute):
    """USE-CANDIDATE, 0x0025: the controlling agent nominates this pair (RFC 8445 §7.1.2)."""

    TYPE: ClassVar[int] = 0x0025


@register
@dataclass(frozen=True, slots=True)
class IceControlled(Attribute):
    """ICE-CONTROLLED, 0x8029: the sender is controlled; 64-bit tie-breaker (RFC 8445 §7.1.3)."""

    tiebreaker: int
    TYPE: ClassVar[int] = 0x8029
    _MIN: ClassVar[int] = 8
    _MAX: ClassVar[int] = 8

    def _encode(self, transaction_id: bytes) -> bytes:
        return U64.pack(self.tiebreaker)

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> IceControlled:
        obj: IceControlled = _new(cls)
        _set_icecontrolled(obj, U64.unpack(value)[0])
        return obj


@register
@dataclass(frozen=True, slots=True)
class IceControlling(Attribute):
    """ICE-CONTROLLING, 0x802A: the sender is controlling; 64-bit tie-breaker (RFC 8445 §7.1.3)."""

    tiebreaker: int
    TYPE: ClassVar[int] = 0x802A
    _MIN: ClassVar[int] = 8
    _MAX: ClassVar[int] = 8

    def _encode(self, transaction_id: bytes) -> bytes:
        return U64.pack(self.tiebreaker)

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> IceControlling:
        obj: IceControlling = _new(cls)
        _set_icecontrolling(obj, U64.unpack(value)[0])
        return obj


_new: Final[Any] = object.__new__  # fast construction on the decoder's hot path
_set_priority: Final[Any] = Priority.__dict__["value"].__set__
_set_icecontrolled: Final[Any] = IceControlled.__dict__["tiebreaker"].__set__
_set_icecontrolling: Final[Any] = IceControlling.__dict__["tiebreaker"].__set__

# --- TURN (RFC 8656 §18) -----------------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class ChannelNumber(Attribute):
    """CHANNEL-NUMBER, 0x000C: a channel number and two reserved bytes (RFC 8656 §18.1).

    Valid channels are 0x4000..0x4FFF (RFC 8656 §12); the range is checked by the TURN layer,
    which must answer 400 rather than drop the request.
    """

    channel: int
    TYPE: ClassVar[int] = 0x000C
    _MIN: ClassVar[int] = 4
    _MAX: ClassVar[int] = 4

    def _encode(self, transaction_id: bytes) -> bytes:
        return U16.pack(self.channel) + b"\0\0"

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> ChannelNumber:
        return cls(U16.unpack_from(value)[0])


@register
@dataclass(frozen=True, slots=True)
class Lifetime(Attribute):
    """LIFETIME, 0x000D: seconds until an allocation expires (RFC 8656 §18.2)."""

    seconds: int
    TYPE: ClassVar[int] = 0x000D
    _MIN: ClassVar[int] = 4
    _MAX: ClassVar[int] = 4

    def _encode(self, transaction_id: bytes) -> bytes:
        return U32.pack(self.seconds)

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> Lifetime:
        return cls(U32.unpack(value)[0])


@register
@dataclass(frozen=True, slots=True)
class XorPeerAddress(XorAddressAttribute):
    """XOR-PEER-ADDRESS, 0x0012: a peer's address as the TURN server sees it (RFC 8656 §18.3)."""

    TYPE: ClassVar[int] = 0x0012


@register
@dataclass(frozen=True, slots=True)
class Data(BytesAttribute):
    """DATA, 0x0013: the application data of a Send or Data indication (RFC 8656 §18.4)."""

    TYPE: ClassVar[int] = 0x0013


@register
@dataclass(frozen=True, slots=True)
class XorRelayedAddress(XorAddressAttribute):
    """XOR-RELAYED-ADDRESS, 0x0016: the relayed transport address allocated (RFC 8656 §18.5)."""

    TYPE: ClassVar[int] = 0x0016


@register
@dataclass(frozen=True, slots=True)
class RequestedAddressFamily(Attribute):
    """REQUESTED-ADDRESS-FAMILY, 0x0017: 1 for IPv4, 2 for IPv6 relays (RFC 8656 §18.6)."""

    family: int
    TYPE: ClassVar[int] = 0x0017
    _MIN: ClassVar[int] = 4
    _MAX: ClassVar[int] = 4

    def _encode(self, transaction_id: bytes) -> bytes:
        return bytes((self.family,)) + _RFFU3

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> RequestedAddressFamily:
        return cls(value[0])


@register
@dataclass(frozen=True, slots=True)
class EvenPort(Attribute):
    """EVEN-PORT, 0x0018: ask for an even relayed port; R bit reserves the next (RFC 8656 §18.7)."""

    reserve: bool = False
    TYPE: ClassVar[int] = 0x0018
    _MIN: ClassVar[int] = 1
    _MAX: ClassVar[int] = 4

    def _encode(self, transaction_id: bytes) -> bytes:
        return b"\x80" if self.reserve else b"\x00"

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> EvenPort:
        return cls(bool(value[0] & 0x80))


@register
@dataclass(frozen=True, slots=True)
class RequestedTransport(Attribute):
    """REQUESTED-TRANSPORT, 0x0019: the relay's IP protocol number, 17 = UDP (RFC 8656 §18.11)."""

    protocol: int = 17
    TYPE: ClassVar[int] = 0x0019
    _MIN: ClassVar[int] = 4
    _MAX: ClassVar[int] = 4

    def _encode(self, transaction_id: bytes) -> bytes:
        return bytes((self.protocol,)) + _RFFU3

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> RequestedTransport:
        return cls(value[0])


@register
@dataclass(frozen=True, slots=True)
class DontFragment(EmptyAttribute):
    """DONT-FRAGMENT, 0x001A: relay with the IP DF bit set (RFC 8656 §18.8)."""

    TYPE: ClassVar[int] = 0x001A


@register
@dataclass(frozen=True, slots=True)
class ReservationToken(BytesAttribute):
    """RESERVATION-TOKEN, 0x0022: an 8-byte token for a reserved relay port (RFC 8656 §18.9)."""

    TYPE: ClassVar[int] = 0x0022
    _MIN: ClassVar[int] = 8
    _MAX: ClassVar[int] = 8


# --- NAT behaviour discovery (RFC 5780 §7) ----------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class ChangeRequest(Attribute):
    """CHANGE-REQUEST, 0x0003: answer from another IP and/or port (RFC 5780 §7.2)."""

    change_ip: bool = False
    change_port: bool = False
    TYPE: ClassVar[int] = 0x0003
    _MIN: ClassVar[int] = 4
    _MAX: ClassVar[int] = 4

    def _encode(self, transaction_id: bytes) -> bytes:
        return U32.pack((4 if self.change_ip else 0) | (2 if self.change_port else 0))

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> ChangeRequest:
        flags = U32.unpack(value)[0]
        return cls(bool(flags & 4), bool(flags & 2))


@register
@dataclass(frozen=True, slots=True)
class ResponsePort(Attribute):
    """RESPONSE-PORT, 0x0027: the port a response should be sent to (RFC 5780 §7.5)."""

    port: int
    TYPE: ClassVar[int] = 0x0027
    _MIN: ClassVar[int] = 4
    _MAX: ClassVar[int] = 4

    def _encode(self, transaction_id: bytes) -> bytes:
        return U16.pack(self.port) + b"\0\0"

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> ResponsePort:
        return cls(U16.unpack_from(value)[0])


@register
@dataclass(frozen=True, slots=True)
class ResponseOrigin(AddressAttribute):
    """RESPONSE-ORIGIN, 0x802B: the address the response was sent from (RFC 5780 §7.3)."""

    TYPE: ClassVar[int] = 0x802B


@register
@dataclass(frozen=True, slots=True)
class OtherAddress(AddressAttribute):
    """OTHER-ADDRESS, 0x802C: the server's alternate IP and port (RFC 5780 §7.4)."""

    TYPE: ClassVar[int] = 0x802C
