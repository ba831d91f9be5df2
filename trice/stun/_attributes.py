"""The attribute registry and the attributes of STUN itself (RFC 8489 §14).

Every attribute is a small frozen dataclass with a ``TYPE`` code.  The registry maps type codes
to classes; the decoder (``_message``) uses it to validate each attribute's length in its single
pass and to build typed values lazily.  ICE, TURN and RFC 5780 attributes live in
``_attributes_ext``.
"""

from __future__ import annotations

import functools
import ipaddress
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

from .._errors import StunDecodeError
from ._integrity import PasswordAlgorithmId
from ._wire import (
    KIND_ADDRESS,
    KIND_DECODE,
    KIND_FINGERPRINT,
    KIND_INTEGRITY,
    KIND_INTEGRITY_SHA256,
    KIND_PLAIN,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    TL,
    U16,
    U32,
    pad_length,
)

_A = TypeVar("_A", bound="Attribute")

#: type code -> attribute class (RFC 8489 §18.3 registry, as far as trice knows it).
ATTRIBUTE_TYPES: dict[int, type[Attribute]] = {}
#: type code -> (minimum value length, maximum value length, validation kind).
RULES: dict[int, tuple[int, int, int]] = {}


class Attribute:
    """Base class of every STUN attribute (RFC 8489 §14).

    Subclasses are frozen dataclasses; ``TYPE`` is the attribute type code.  Types below
    0x8000 are comprehension-required, the others comprehension-optional (RFC 8489 §14).
    """

    __slots__ = ()
    TYPE: ClassVar[int] = -1
    _MIN: ClassVar[int] = 0
    _MAX: ClassVar[int] = 0xFFFF
    _KIND: ClassVar[int] = KIND_PLAIN

    def _encode(self, transaction_id: bytes) -> bytes:
        raise NotImplementedError

    @classmethod
    def _decode(cls: type[_A], value: bytes, transaction_id: bytes) -> _A:
        raise NotImplementedError


def register(cls: type[_A]) -> type[_A]:
    """Add an attribute class to the type-code table (class decorator)."""
    if cls.TYPE in ATTRIBUTE_TYPES:  # pragma: no cover - programming error
        raise RuntimeError(f"STUN attribute type {cls.TYPE:#06x} registered twice")
    ATTRIBUTE_TYPES[cls.TYPE] = cls
    RULES[cls.TYPE] = (cls._MIN, cls._MAX, cls._KIND)
    return cls


#: Text that RFC 8489 bounds (a reason phrase, SOFTWARE, §14.8, §14.14): fewer characters.
TEXT_LIMIT: Final = 128

# --- value shapes shared by several attributes ------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextAttribute(Attribute):
    """An attribute whose value is UTF-8 text (RFC 8489 §14.3, §14.8, §14.9, §14.14).

    Decoding never fails on bad UTF-8: undecodable bytes become lone surrogates
    (``surrogateescape``) so that re-encoding gives back the exact bytes.
    """

    value: str

    def _encode(self, transaction_id: bytes) -> bytes:
        return self.value.encode("utf-8", "surrogateescape")

    @classmethod
    def _decode(cls: type[_A], value: bytes, transaction_id: bytes) -> _A:
        obj: _A = _new(cls)
        _set_text(obj, value.decode("utf-8", "surrogateescape"))
        return obj


@dataclass(frozen=True, slots=True)
class BytesAttribute(Attribute):
    """An attribute whose value is opaque bytes (RFC 8489 §14, RFC 8656 §18)."""

    value: bytes

    def _encode(self, transaction_id: bytes) -> bytes:
        return self.value

    @classmethod
    def _decode(cls: type[_A], value: bytes, transaction_id: bytes) -> _A:
        obj: _A = _new(cls)
        _set_bytes(obj, value)
        return obj


@dataclass(frozen=True, slots=True)
class EmptyAttribute(Attribute):
    """An attribute with an empty value: a flag (RFC 8445 §7.1.2, RFC 8656 §18.8)."""

    _MAX: ClassVar[int] = 0

    def _encode(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def _decode(cls: type[_A], value: bytes, transaction_id: bytes) -> _A:
        obj: _A = _new(cls)
        return obj


@functools.lru_cache(maxsize=512)
def _pack_ip(address: str) -> tuple[int, bytes]:
    # A dotted quad (what a socket reports) is read here: the ipaddress module costs about
    # three times as much, on the way to answering the first check from an address.  What
    # this strict reading does not take (an int, IPv6, a leading zero, an error), the
    # ipaddress module decides, as before.
    if type(address) is str:
        parts = address.split(".")
        if len(parts) == 4:
            for part in parts:
                if not (part.isascii() and part.isdigit()) or (part[0] == "0" and len(part) > 1):
                    break
            else:
                a, b, c, d = map(int, parts)
                if a < 256 and b < 256 and c < 256 and d < 256:
                    return 1, bytes((a, b, c, d))
    ip = ipaddress.ip_address(address)
    return (1 if ip.version == 4 else 2), ip.packed


@functools.lru_cache(maxsize=512)
def _unpack_ip(packed: bytes) -> str:
    if len(packed) == 4:
        return f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}"
    return str(ipaddress.IPv6Address(packed))


@dataclass(frozen=True, slots=True)
class AddressAttribute(Attribute):
    """An IP address and port, as in MAPPED-ADDRESS (RFC 8489 §14.1).

    The value is a reserved byte, the family (0x01 IPv4, 0x02 IPv6), the port and the
    4- or 16-byte address.
    """

    address: str
    port: int
    _MIN: ClassVar[int] = 8
    _MAX: ClassVar[int] = 20
    _KIND: ClassVar[int] = KIND_ADDRESS

    @property
    def family(self) -> int:
        """The STUN address family, 1 for IPv4 and 2 for IPv6 (RFC 8489 §14.1)."""
        return _pack_ip(self.address)[0]

    def _encode(self, transaction_id: bytes) -> bytes:
        family, packed = _pack_ip(self.address)
        return bytes((0, family)) + U16.pack(self.port) + packed

    @classmethod
    def _decode(cls: type[_A], value: bytes, transaction_id: bytes) -> _A:
        obj: _A = _new(cls)
        _set_address(obj, _unpack_ip(value[4:]))
        _set_port(obj, U16.unpack_from(value, 2)[0])
        return obj


@dataclass(frozen=True, slots=True)
class XorAddressAttribute(Attribute):
    """An IP address and port XOR-ed with the magic cookie and transaction ID (RFC 8489 §14.2).

    The port is XOR-ed with the cookie's top 16 bits, an IPv4 address with the cookie and an
    IPv6 address with the cookie followed by the transaction ID.
    """

    address: str
    port: int
    _MIN: ClassVar[int] = 8
    _MAX: ClassVar[int] = 20
    _KIND: ClassVar[int] = KIND_ADDRESS

    @property
    def family(self) -> int:
        """The STUN address family, 1 for IPv4 and 2 for IPv6 (RFC 8489 §14.2)."""
        return _pack_ip(self.address)[0]

    def _encode(self, transaction_id: bytes) -> bytes:
        family, packed = _pack_ip(self.address)
        mask = MAGIC_COOKIE_BYTES if family == 1 else MAGIC_COOKIE_BYTES + transaction_id
        n = len(packed)
        xored = (int.from_bytes(packed, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
        return bytes((0, family)) + U16.pack(self.port ^ 0x2112) + xored

    @classmethod
    def _decode(cls: type[_A], value: bytes, transaction_id: bytes) -> _A:
        port = U16.unpack_from(value, 2)[0] ^ 0x2112
        if len(value) == 8:
            packed = (U32.unpack_from(value, 4)[0] ^ MAGIC_COOKIE).to_bytes(4, "big")
        else:
            mask = int.from_bytes(MAGIC_COOKIE_BYTES + transaction_id, "big")
            packed = (int.from_bytes(value[4:20], "big") ^ mask).to_bytes(16, "big")
        obj: _A = _new(cls)
        _set_xor_address(obj, _unpack_ip(packed))
        _set_xor_port(obj, port)
        return obj


# Decoding builds values with object.__new__ and the slot descriptors: the same result as the
# frozen dataclass __init__, at about half the cost (this is the decoder's hot path).
_new: Final[Any] = object.__new__
if sys.version_info >= (3, 11):
    _set_text: Any = TextAttribute.__dict__["value"].__set__
    _set_bytes: Any = BytesAttribute.__dict__["value"].__set__
    _set_address: Any = AddressAttribute.__dict__["address"].__set__
    _set_port: Any = AddressAttribute.__dict__["port"].__set__
    _set_xor_address: Any = XorAddressAttribute.__dict__["address"].__set__
    _set_xor_port: Any = XorAddressAttribute.__dict__["port"].__set__
else:  # pragma: no cover - Python 3.10
    # There, a slotted dataclass gives each subclass slots of its own for the fields it
    # inherits, which hide the base class's: a value must go through the object's own.
    def _setter(name: str) -> Any:
        def set_field(obj: object, value: object) -> None:
            object.__setattr__(obj, name, value)

        return set_field

    _set_text = _set_bytes = _setter("value")
    _set_address = _set_xor_address = _setter("address")
    _set_port = _set_xor_port = _setter("port")


# --- RFC 8489 attributes -----------------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class MappedAddress(AddressAttribute):
    """MAPPED-ADDRESS, 0x0001: the reflexive address, not XOR-ed (RFC 8489 §14.1)."""

    TYPE: ClassVar[int] = 0x0001


@register
@dataclass(frozen=True, slots=True)
class XorMappedAddress(XorAddressAttribute):
    """XOR-MAPPED-ADDRESS, 0x0020: the reflexive transport address (RFC 8489 §14.2)."""

    TYPE: ClassVar[int] = 0x0020


@register
@dataclass(frozen=True, slots=True)
class Username(TextAttribute):
    """USERNAME, 0x0006: the user name of the credentials (RFC 8489 §14.3).

    ICE sends ``"remote-ufrag:local-ufrag"`` here (RFC 8445 §7.2.2).
    """

    TYPE: ClassVar[int] = 0x0006


@register
@dataclass(frozen=True, slots=True)
class UserHash(BytesAttribute):
    """USERHASH, 0x001E: SHA-256 of user name and realm, 32 bytes (RFC 8489 §14.4)."""

    TYPE: ClassVar[int] = 0x001E
    _MIN: ClassVar[int] = 32
    _MAX: ClassVar[int] = 32


@register
@dataclass(frozen=True, slots=True)
class MessageIntegrity(BytesAttribute):
    """MESSAGE-INTEGRITY, 0x0008: HMAC-SHA1 of the message, 20 bytes (RFC 8489 §14.5).

    Do not build it by hand: pass ``integrity_key`` to :meth:`Message.encode`.
    """

    TYPE: ClassVar[int] = 0x0008
    _MIN: ClassVar[int] = 20
    _MAX: ClassVar[int] = 20
    _KIND: ClassVar[int] = KIND_INTEGRITY


@register
@dataclass(frozen=True, slots=True)
class MessageIntegritySha256(BytesAttribute):
    """MESSAGE-INTEGRITY-SHA256, 0x001C: HMAC-SHA256, 16 to 32 bytes (RFC 8489 §14.6).

    Do not build it by hand: pass ``integrity_sha256_key`` to :meth:`Message.encode`.
    """

    TYPE: ClassVar[int] = 0x001C
    _MIN: ClassVar[int] = 16
    _MAX: ClassVar[int] = 32
    _KIND: ClassVar[int] = KIND_INTEGRITY_SHA256


@register
@dataclass(frozen=True, slots=True)
class Fingerprint(Attribute):
    """FINGERPRINT, 0x8028: CRC-32 of the message XOR 0x5354554e (RFC 8489 §14.7).

    Do not build it by hand: pass ``fingerprint=True`` to :meth:`Message.encode`.
    """

    value: int
    TYPE: ClassVar[int] = 0x8028
    _MIN: ClassVar[int] = 4
    _MAX: ClassVar[int] = 4
    _KIND: ClassVar[int] = KIND_FINGERPRINT

    def _encode(self, transaction_id: bytes) -> bytes:
        return U32.pack(self.value)

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> Fingerprint:
        return cls(U32.unpack(value)[0])


@register
@dataclass(frozen=True, slots=True)
class ErrorCode(Attribute):
    """ERROR-CODE, 0x0009: an error number 300..699 and a reason phrase (RFC 8489 §14.8).

    Common codes: 300 Try Alternate, 400 Bad Request, 401 Unauthenticated, 420 Unknown
    Attribute, 438 Stale Nonce, 487 Role Conflict (RFC 8445 §7.3.1.1), 500 Server Error.
    A decoded reason phrase has no trailing NULs (padding some servers add: coturn's).  The
    reason phrase has fewer than 128 characters: encoding a longer one raises
    ``ValueError`` (a longer one is decoded as it is).
    """

    code: int
    reason: str = ""
    TYPE: ClassVar[int] = 0x0009
    _MIN: ClassVar[int] = 4
    _KIND: ClassVar[int] = KIND_DECODE

    def _encode(self, transaction_id: bytes) -> bytes:
        if not 300 <= self.code <= 699:
            raise ValueError(f"STUN error code must be within 300..699, not {self.code}")
        if len(self.reason) >= TEXT_LIMIT:
            raise ValueError(f"an ERROR-CODE reason must be fewer than {TEXT_LIMIT} characters")
        klass, number = divmod(self.code, 100)
        return bytes((0, 0, klass, number)) + self.reason.encode("utf-8", "surrogateescape")

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> ErrorCode:
        klass = value[2] & 0x07
        number = value[3]
        if not 3 <= klass <= 6 or number > 99:
            raise StunDecodeError(f"ERROR-CODE class {klass} number {number} out of range")
        # (Some servers pad the reason phrase with NULs to a multiple of 4, coturn among
        # them: padding, not text.)
        reason = value[4:].rstrip(b"\x00").decode("utf-8", "surrogateescape")
        return cls(klass * 100 + number, reason)


@register
@dataclass(frozen=True, slots=True)
class Realm(TextAttribute):
    """REALM, 0x0014: the long-term credential realm (RFC 8489 §14.9)."""

    TYPE: ClassVar[int] = 0x0014


@register
@dataclass(frozen=True, slots=True)
class Nonce(TextAttribute):
    """NONCE, 0x0015: the server's nonce, possibly with a security-feature prefix (RFC 8489 §14.10).

    Kept as text; the "nonce cookie" ``obMatJos2`` prefix of RFC 8489 §9.2 is left to callers.
    """

    TYPE: ClassVar[int] = 0x0015


@register
@dataclass(frozen=True, slots=True)
class PasswordAlgorithm(Attribute):
    """PASSWORD-ALGORITHM, 0x001D: the algorithm chosen by the client (RFC 8489 §14.12).

    ``algorithm`` is a :class:`PasswordAlgorithmId` number; ``PasswordAlgorithm.MD5`` and
    ``PasswordAlgorithm.SHA256`` are aliases of those numbers for :func:`long_term_key`.
    """

    algorithm: int
    parameters: bytes = b""
    TYPE: ClassVar[int] = 0x001D
    MD5: ClassVar[PasswordAlgorithmId] = PasswordAlgorithmId.MD5
    SHA256: ClassVar[PasswordAlgorithmId] = PasswordAlgorithmId.SHA256
    _MIN: ClassVar[int] = 4
    _KIND: ClassVar[int] = KIND_DECODE

    def _encode(self, transaction_id: bytes) -> bytes:
        params = self.parameters
        return TL.pack(self.algorithm, len(params)) + params + bytes(pad_length(len(params)))

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> PasswordAlgorithm:
        algorithms, _ = _decode_algorithms(value, single=True)
        return algorithms[0]


def _decode_algorithms(value: bytes, *, single: bool) -> tuple[tuple[PasswordAlgorithm, ...], int]:
    """Parse (algorithm, length, parameters, padding) entries (RFC 8489 §14.11, §14.12)."""
    out: list[PasswordAlgorithm] = []
    pos = 0
    n = len(value)
    while pos < n:
        if pos + 4 > n:
            raise StunDecodeError("truncated PASSWORD-ALGORITHM entry")
        algorithm, length = TL.unpack_from(value, pos)
        end = pos + 4 + length
        if end > n:
            raise StunDecodeError("PASSWORD-ALGORITHM parameters overrun the attribute")
        out.append(PasswordAlgorithm(algorithm, value[pos + 4 : end]))
        pos = min(n, end + pad_length(length))
        if single:
            break
    if single and pos != n:
        raise StunDecodeError("trailing bytes after PASSWORD-ALGORITHM")
    return tuple(out), pos


@register
@dataclass(frozen=True, slots=True)
class PasswordAlgorithms(Attribute):
    """PASSWORD-ALGORITHMS, 0x8002: the algorithms a server supports (RFC 8489 §14.11)."""

    algorithms: tuple[PasswordAlgorithm, ...]
    TYPE: ClassVar[int] = 0x8002
    _KIND: ClassVar[int] = KIND_DECODE

    def _encode(self, transaction_id: bytes) -> bytes:
        return b"".join(a._encode(transaction_id) for a in self.algorithms)

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> PasswordAlgorithms:
        return cls(_decode_algorithms(value, single=False)[0])


@register
@dataclass(frozen=True, slots=True)
class UnknownAttributes(Attribute):
    """UNKNOWN-ATTRIBUTES, 0x000A: the types a 420 response did not understand (RFC 8489 §14.13)."""

    types: tuple[int, ...]
    TYPE: ClassVar[int] = 0x000A
    _KIND: ClassVar[int] = KIND_DECODE

    def _encode(self, transaction_id: bytes) -> bytes:
        return b"".join(U16.pack(t) for t in self.types)

    @classmethod
    def _decode(cls, value: bytes, transaction_id: bytes) -> UnknownAttributes:
        if len(value) & 1:
            raise StunDecodeError("UNKNOWN-ATTRIBUTES length is odd")
        return cls(tuple(U16.unpack_from(value, i)[0] for i in range(0, len(value), 2)))


@register
@dataclass(frozen=True, slots=True)
class Software(TextAttribute):
    """SOFTWARE, 0x8022: a description of the agent's software (RFC 8489 §14.14): fewer
    than 128 characters (encoding a longer one raises ``ValueError``; a longer one is
    decoded as it is)."""

    TYPE: ClassVar[int] = 0x8022

    def _encode(self, transaction_id: bytes) -> bytes:
        if len(self.value) >= TEXT_LIMIT:
            raise ValueError(f"SOFTWARE must be fewer than {TEXT_LIMIT} characters")
        return self.value.encode("utf-8", "surrogateescape")


@register
@dataclass(frozen=True, slots=True)
class AlternateServer(AddressAttribute):
    """ALTERNATE-SERVER, 0x8023: where a 300 response redirects to (RFC 8489 §14.15)."""

    TYPE: ClassVar[int] = 0x8023


@register
@dataclass(frozen=True, slots=True)
class AlternateDomain(TextAttribute):
    """ALTERNATE-DOMAIN, 0x8003: the TLS domain of the ALTERNATE-SERVER (RFC 8489 §14.16)."""

    TYPE: ClassVar[int] = 0x8003


@dataclass(frozen=True, slots=True)
class UnknownAttribute(Attribute):
    """An attribute whose type trice does not know, kept verbatim (RFC 8489 §14).

    When ``type < 0x8000`` (comprehension-required), a responder should answer 420 with
    UNKNOWN-ATTRIBUTES; :attr:`Message.unknown_required` lists such types.
    """

    type: int
    value: bytes

    def _encode(self, transaction_id: bytes) -> bytes:
        return self.value
