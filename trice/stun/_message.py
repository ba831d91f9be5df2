"""STUN messages: header, the single-pass decoder and the encoder (RFC 8489 §5, §6, §14)."""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from enum import IntEnum
from typing import Final, TypeVar
from zlib import crc32

from .._errors import StateError, StunDecodeError
from . import _attributes_ext as _ext  # noqa: F401  (registers the ICE/TURN/RFC 5780 types)
from ._attributes import ATTRIBUTE_TYPES, RULES, Attribute, ErrorCode, UnknownAttribute
from ._integrity import hmac_sha1, hmac_sha256
from ._wire import (
    FINGERPRINT_XOR,
    HEADER,
    HEADER_SIZE,
    KIND_ADDRESS,
    KIND_DECODE,
    KIND_FINGERPRINT,
    KIND_INTEGRITY,
    KIND_INTEGRITY_SHA256,
    MAGIC_COOKIE,
    TL,
    TYPE_FINGERPRINT,
    TYPE_MESSAGE_INTEGRITY,
    TYPE_MESSAGE_INTEGRITY_SHA256,
    U16,
    U32,
)

_A = TypeVar("_A", bound=Attribute)


class Method(IntEnum):
    """STUN methods used by trice: STUN (RFC 8489 §18.2) and TURN (RFC 8656 §17)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class MessageClass(IntEnum):
    """The two class bits of the message type (RFC 8489 §5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


def message_type(method: int, message_class: int) -> int:
    """Return the 14-bit message type interleaving method and class bits (RFC 8489 §5).

    The layout is ``M11..M7 C1 M6..M4 C0 M3..M0``.
    """
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 1) << 4)
        | ((message_class & 2) << 7)
    )


def _split_type(mtype: int) -> tuple[Method | int, MessageClass]:
    method = (mtype & 0x000F) | ((mtype >> 1) & 0x0070) | ((mtype >> 2) & 0x0F80)
    klass = MessageClass(((mtype >> 4) & 1) | ((mtype >> 7) & 2))
    return _METHODS.get(method, method), klass


_METHODS: Final[dict[int, Method]] = {int(m): m for m in Method}
_TYPES: Final = {
    message_type(m, c): (m, c) for m in Method for c in MessageClass
}  # message type -> (Method, MessageClass) for every known pair


def new_transaction_id() -> bytes:
    """Return a fresh, cryptographically random 96-bit transaction ID (RFC 8489 §5)."""
    return os.urandom(12)


_MI_TL: Final = TL.pack(TYPE_MESSAGE_INTEGRITY, 20)
_MI256_TL: Final = TL.pack(TYPE_MESSAGE_INTEGRITY_SHA256, 32)
_FP_TL: Final = TL.pack(TYPE_FINGERPRINT, 4)
_PADS: Final = {
    bytes((b,)): (b"", bytes((b,)), bytes((b, b)), bytes((b, b, b))) for b in range(256)
}


class Message:
    """A STUN message: method, class, transaction ID and ordered attributes (RFC 8489 §5).

    Build one to send it::

        request = Message(Method.BINDING, MessageClass.REQUEST, attributes=(Username("a:b"),))
        data = request.encode(integrity_key=key, fingerprint=True)

    or get one from :func:`decode`.  A decoded message keeps its bytes: typed attribute values
    are built lazily, on :meth:`get`, :meth:`get_all` or :attr:`attributes`, and
    :meth:`verify_integrity` hashes the received bytes without re-encoding.  Treat messages as
    immutable.

    Args:
        method: a :class:`Method` (or any 12-bit method number).
        message_class: a :class:`MessageClass`.
        transaction_id: 12 bytes; ``None`` draws a fresh one (:func:`new_transaction_id`).
        attributes: the attributes, in order.

    Raises:
        ValueError: the method does not fit in 12 bits or the transaction ID is not 12 bytes.
    """

    __slots__ = (
        "_attrs",
        "_fp",
        "_layout",
        "_mi",
        "_mi256",
        "_raw",
        "_records",
        "_unknown",
        "message_class",
        "method",
        "transaction_id",
    )

    method: Method | int
    message_class: MessageClass
    transaction_id: bytes
    _attrs: tuple[Attribute, ...] | None
    _raw: bytes | None
    _records: Sequence[tuple[int, int, int]]
    _layout: _Layout | None
    _mi: int
    _mi256: int
    _fp: int
    _unknown: bool

    def __init__(
        self,
        method: int,
        message_class: int,
        transaction_id: bytes | None = None,
        attributes: Iterable[Attribute] = (),
    ) -> None:
        if transaction_id is None:
            transaction_id = os.urandom(12)
        elif len(transaction_id) != 12:
            raise ValueError(f"a STUN transaction ID is 12 bytes, not {len(transaction_id)}")
        if not 0 <= method <= 0xFFF:
            raise ValueError(f"a STUN method is 12 bits, not {method:#x}")
        self.method = _METHODS.get(method, method)
        self.message_class = (
            message_class if type(message_class) is MessageClass else MessageClass(message_class)
        )
        self.transaction_id = bytes(transaction_id)
        self._attrs = tuple(attributes)
        self._raw = None
        self._records = ()
        self._layout = None
        self._mi = self._mi256 = self._fp = -1
        self._unknown = False

    # --- reading ---------------------------------------------------------------------------

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        """All attributes in order, typed (unknown ones as :class:`UnknownAttribute`)."""
        attrs = self._attrs
        if attrs is None:
            raw = self._raw
            assert raw is not None
            tid = self.transaction_id
            attrs = self._attrs = tuple(
                _decode_value(t, raw[s : s + n], tid) for t, s, n in self._records
            )
        return attrs

    def __iter__(self) -> Iterator[Attribute]:
        return iter(self.attributes)

    def get(self, cls: type[_A]) -> _A | None:
        """Return the first attribute of class *cls*, or ``None`` (RFC 8489 §14).

        On a decoded message only the matching attribute is decoded.
        """
        t = cls.TYPE
        if self._attrs is None and t >= 0:
            raw = self._raw
            assert raw is not None
            for at, s, n in self._records:
                if at == t:
                    return cls._decode(raw[s : s + n], self.transaction_id)
            return None
        for a in self.attributes:
            if isinstance(a, cls):
                return a
        return None

    def first_values(self, types: tuple[int, ...]) -> list[bytes | None]:
        """The value of the first attribute of each type in *types*, as bytes on the wire
        (``None`` for a type the message does not have), in the order of *types*.

        One pass and no attribute objects: for a reader that wants a few plain values (an
        ICE agent answering a check reads five).  A decoded message's values were checked
        as :func:`decode` checks them (the length of every known attribute); what
        :meth:`get` would see, this sees.  A type asked for twice has its value in its first
        place only (``None`` in the later ones).
        """
        found: list[bytes | None] = [None] * len(types)
        raw = self._raw
        layout = self._layout
        if layout is not None and raw is not None:
            # A message of a shape decoded before: where each value lies is known.
            plan = layout.plans.get(types) if type(types) is tuple else None
            if plan is None:
                plan = layout.plan(types)
            for place, start, end in plan:
                found[place] = raw[start:end]
            return found
        if raw is not None:
            # (The wire's bytes, whether the attributes were decoded since or not.)
            try:
                index = _FIRST_INDEX.get(types)
            except TypeError:  # (a list, say: mapped anew below)
                index = None
            if index is None:
                index = _first_index(types)
            left = len(index)
            for at, s, n in self._records:
                i = index.get(at)
                if i is not None and found[i] is None:
                    found[i] = raw[s : s + n]
                    left -= 1
                    if not left:
                        break
            return found
        tid = self.transaction_id
        for a in self.attributes:
            at = a.type if isinstance(a, UnknownAttribute) else a.TYPE
            if at in types:
                i = types.index(at)
                if found[i] is None:
                    found[i] = a._encode(tid)  # (an unknown one's: its value)
        return found

    def get_all(self, cls: type[_A]) -> tuple[_A, ...]:
        """Return every attribute of class *cls*, in order (RFC 8489 §14)."""
        return tuple(a for a in self.attributes if isinstance(a, cls))

    @property
    def unknown_required(self) -> tuple[int, ...]:
        """Types of unknown comprehension-required attributes (< 0x8000), in order.

        A server answers a request that has any with 420 and UNKNOWN-ATTRIBUTES listing them
        (RFC 8489 §6.3.1.1).
        """
        known = ATTRIBUTE_TYPES
        if self._attrs is None:
            if not self._unknown:
                return ()  # (decode saw no attribute below 0x8000 that it has no rule for)
            return tuple([t for t, _, _ in self._records if t < 0x8000 and t not in known])
        types = [a.type for a in self._attrs if isinstance(a, UnknownAttribute)]
        return tuple([t for t in types if t < 0x8000 and t not in known])

    @property
    def has_integrity(self) -> bool:
        """Whether the decoded message carries MESSAGE-INTEGRITY(-SHA256) (RFC 8489 §14.5)."""
        return self._mi >= 0 or self._mi256 >= 0

    @property
    def has_integrity_sha256(self) -> bool:
        """Whether the decoded message carries MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6):
        a response to such a request must carry it too (§9.1.3)."""
        return self._mi256 >= 0

    @property
    def has_fingerprint(self) -> bool:
        """Whether the decoded message carried a (valid) FINGERPRINT (RFC 8489 §14.7)."""
        return self._fp >= 0

    @property
    def raw(self) -> bytes | None:
        """The bytes this message was decoded from, or ``None`` for a built message."""
        return self._raw

    def verify_integrity(self, key: bytes) -> bool:
        """Check MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY (RFC 8489 §14.5-6).

        The HMAC covers the header, with its length field counting up to the end of the
        integrity attribute, and every attribute before it.  Returns ``False`` when the
        message has no integrity attribute, or the HMAC does not match, or a
        MESSAGE-INTEGRITY-SHA256 value is truncated (under 32 bytes: no usage of trice's
        allows that, §14.6).

        Raises:
            StateError: the message was built, not decoded.
        """
        raw = self._raw
        if raw is None:
            raise StateError("verify_integrity() needs a decoded message")
        pos = self._mi256
        if pos >= 0:
            n = U16.unpack_from(raw, pos + 2)[0]
            covered = raw[:2] + U16.pack(pos - HEADER_SIZE + 4 + n) + raw[4:pos]
            # (A truncated HMAC, 16 to 28 bytes, decodes but does not verify: its value
            # "MUST be the full 32 bytes unless the STUN Usage explicitly specifies that
            # truncation is allowed", §14.6, and neither ICE nor TURN does.)
            ok = n == 32 and hmac.compare_digest(hmac_sha256(key, covered), raw[pos + 4 : pos + 36])
        else:
            pos = self._mi
            if pos < 0:
                return False
            covered = raw[:2] + U16.pack(pos - HEADER_SIZE + 24) + raw[4:pos]
            ok = hmac.compare_digest(hmac_sha1(key, covered), raw[pos + 4 : pos + 24])
        if ok and self._layout is None:
            _remember(raw, self)  # (a shape worth keeping: see decode)
        return ok

    # --- building ----------------------------------------------------------------------------

    def encode(
        self,
        *,
        integrity_key: bytes | None = None,
        integrity_sha256_key: bytes | None = None,
        fingerprint: bool = False,
        padding: bytes = b"\x00",
    ) -> bytes:
        """Serialize the message (RFC 8489 §5, §14).

        Attributes are written in order, each padded to 4 bytes.  Then, as asked,
        MESSAGE-INTEGRITY (HMAC-SHA1, §14.5), MESSAGE-INTEGRITY-SHA256 (§14.6) and FINGERPRINT
        (CRC-32 XOR 0x5354554e, §14.7) are appended, each computed with the header length
        counting up to its own end.  Integrity attributes already in :attr:`attributes` are
        written verbatim, so do not ask for new ones on a decoded message that has them.

        Args:
            integrity_key: the key for MESSAGE-INTEGRITY (:func:`short_term_key`,
                :func:`long_term_key`).
            integrity_sha256_key: the key for MESSAGE-INTEGRITY-SHA256.
            fingerprint: append FINGERPRINT.
            padding: the byte used to pad attribute values.  RFC 8489 says zero and receivers
                ignore it; RFC 5769 §2.1-2.3 use ``b" "``, which reproduces those vectors.

        Raises:
            ValueError: an attribute value cannot be encoded (out of range, bad address) or
                the message exceeds 65535 bytes of attributes.
        """
        tid = self.transaction_id
        pads = _PADS.get(padding)
        if pads is None:
            raise ValueError("padding must be a single byte")
        tl = TL.pack
        parts: list[bytes] = []
        append = parts.append
        for a in self.attributes:
            t = a.TYPE
            if t < 0:
                if not isinstance(a, UnknownAttribute):
                    raise ValueError(f"{type(a).__name__} is a shape, not an attribute type")
                t = a.type
            try:
                value = a._encode(tid)
                if value.__class__ is not bytes:  # (text given for bytes: str.encode spared)
                    raise TypeError(f"a value of bytes, not {type(value).__name__}")
                n = len(value)
                append(tl(t, n))
            except (struct.error, OverflowError, TypeError, AttributeError) as exc:
                # (AttributeError: a value of another type, such as bytes for text.)
                raise ValueError(f"cannot encode {a!r}: {exc}") from exc
            append(value)
            if n & 3:
                append(pads[4 - (n & 3)])
        body = b"".join(parts)
        length = len(body)
        mtype = message_type(self.method, self.message_class)
        if integrity_key is not None:
            length += 24
            if length > 0xFFFF:
                raise ValueError("STUN message too long")
            body += _MI_TL + hmac_sha1(
                integrity_key, HEADER.pack(mtype, length, MAGIC_COOKIE) + tid + body
            )
        if integrity_sha256_key is not None:
            length += 36
            if length > 0xFFFF:
                raise ValueError("STUN message too long")
            header = HEADER.pack(mtype, length, MAGIC_COOKIE) + tid
            body += _MI256_TL + hmac_sha256(integrity_sha256_key, header + body)
        if fingerprint:
            length += 8
            if length > 0xFFFF:
                raise ValueError("STUN message too long")
            data = HEADER.pack(mtype, length, MAGIC_COOKIE) + tid + body
            return data + _FP_TL + U32.pack(crc32(data) ^ FINGERPRINT_XOR)
        if length > 0xFFFF:
            raise ValueError("STUN message too long")
        return HEADER.pack(mtype, length, MAGIC_COOKIE) + tid + body

    def success_response(self, *attributes: Attribute) -> Message:
        """Return a success response to this request: same method and transaction ID
        (RFC 8489 §6.3.1.2)."""
        return Message(self.method, MessageClass.SUCCESS, self.transaction_id, attributes)

    def error_response(self, code: int, reason: str, *attributes: Attribute) -> Message:
        """Return an error response carrying ERROR-CODE first, then *attributes*
        (RFC 8489 §6.3.1.1, §14.8)."""
        return Message(
            self.method,
            MessageClass.ERROR,
            self.transaction_id,
            (ErrorCode(code, reason), *attributes),
        )

    # --- dunder ----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.method == other.method
            and self.message_class == other.message_class
            and self.transaction_id == other.transaction_id
            and self.attributes == other.attributes
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        method = self.method.name if isinstance(self.method, Method) else f"{self.method:#05x}"
        return (
            f"Message({method}, {self.message_class.name}, "
            f"transaction_id={self.transaction_id.hex()}, attributes={self.attributes!r})"
        )


def _decode_value(t: int, value: bytes, tid: bytes) -> Attribute:
    cls = ATTRIBUTE_TYPES.get(t)
    if cls is None:
        return UnknownAttribute(t, value)
    return cls._decode(value, tid)


_new = object.__new__

#: For :meth:`Message.first_values`: each tuple of types asked for, mapped to where each
#: type goes in the answer (its first place in the tuple).  A reader asks with a few fixed
#: tuples; past _FIRST_INDEX_MAX of them, further ones are mapped anew on each call.
_FIRST_INDEX: dict[tuple[int, ...], dict[int, int]] = {}
_FIRST_INDEX_MAX = 64


def _first_index(types: Sequence[int]) -> dict[int, int]:
    index: dict[int, int] = {}
    for i, t in enumerate(types):
        index.setdefault(t, i)
    if type(types) is tuple and len(_FIRST_INDEX) < _FIRST_INDEX_MAX:
        _FIRST_INDEX[types] = index
    return index


_HEADER_UNPACK = HEADER.unpack_from
_TL_UNPACK = TL.unpack_from


def _decode_tail(
    data: bytes, pos: int, records: list[tuple[int, int, int]]
) -> tuple[int, int, int]:
    """Walk the attributes from the first integrity attribute or FINGERPRINT at *pos* on.

    After MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count, after
    MESSAGE-INTEGRITY-SHA256 only FINGERPRINT, and nothing after FINGERPRINT (RFC 8489
    §14.5-14.7); the rest is skipped, though its bounds are still checked.
    """
    n = len(data)
    mi = mi256 = fp = -1
    after = 0  # 0: before any; 1: after MESSAGE-INTEGRITY; 2: after MI-SHA256; 3: after FINGERPRINT
    while pos < n:
        atype, alen = _TL_UNPACK(data, pos)
        end = pos + 4 + alen
        if end > n:
            raise StunDecodeError(f"attribute {atype:#06x} overruns the message")
        if after < 3:
            if atype == TYPE_MESSAGE_INTEGRITY and after == 0:
                if alen != 20:
                    raise StunDecodeError(f"MESSAGE-INTEGRITY has a bad length {alen}")
                mi = pos
                after = 1
                records.append((atype, pos + 4, alen))
            elif atype == TYPE_MESSAGE_INTEGRITY_SHA256 and after <= 1:
                if not 16 <= alen <= 32 or alen & 3:
                    raise StunDecodeError(f"MESSAGE-INTEGRITY-SHA256 has a bad length {alen}")
                mi256 = pos
                after = 2
                records.append((atype, pos + 4, alen))
            elif atype == TYPE_FINGERPRINT:
                if alen != 4:
                    raise StunDecodeError(f"FINGERPRINT has a bad length {alen}")
                # The CRC covers the header with its length ending at FINGERPRINT (§14.7).
                covered = data[:pos] if end == n else data[:2] + U16.pack(end - 20) + data[4:pos]
                if crc32(covered) ^ FINGERPRINT_XOR != U32.unpack_from(data, pos + 4)[0]:
                    raise StunDecodeError("FINGERPRINT does not match")
                fp = pos
                after = 3
                records.append((atype, pos + 4, alen))
        pos = end + (-alen & 3)
    return mi, mi256, fp


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse one STUN message (RFC 8489 §5, §6.3, §14).

    Checks, in one pass: the two top bits are zero, the magic cookie, the length field (a
    multiple of 4 that matches *data*), each attribute's bounds and padding, the value length
    of every known attribute (and the family of addresses), and FINGERPRINT when present
    (§14.7).  Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and
    FINGERPRINT, and everything after FINGERPRINT, are ignored (§14.5, §14.6, §14.7).
    Integrity is checked separately by :meth:`Message.verify_integrity`.

    Peers send the same few shapes of message again and again (an ICE agent's checks and
    their answers): a message of the shape of one that passed :meth:`Message.verify_integrity`
    (the second of its type and length to pass; the same type, length, cookie, attribute
    types and lengths, and address families) is checked against that shape in one step,
    with the same outcome as the pass, in half its time (``bench/stun_codec.py``).  Only
    authenticated messages of at most 548 bytes and 16 attributes leave a shape, at most 8
    shapes for each of 64 types and lengths: a stranger's message costs the pass, plus
    the quick test of each shape kept for its type and length (at most 8).

    Raises:
        StunDecodeError: *data* is not a well-formed STUN message.  No other exception.
    """
    if type(data) is not bytes:
        data = bytes(data)
    layouts = _LAYOUTS.get(data[:4])
    if layouts is not None and len(data) == layouts[0].size:
        for layout in layouts:
            if layout.unpack(data) == layout.expected:
                fp = layout.fp
                if fp < 0 or crc32(data[:fp]) ^ FINGERPRINT_XOR == U32.unpack_from(data, fp + 4)[0]:
                    # The shape of a message decoded before (every attribute's type and
                    # length, the cookie, the family of each address checked), and the
                    # same FINGERPRINT test passed: the walk below would find what it
                    # found then (see _Layout).
                    return _from_layout(data, layout)
                break  # (FINGERPRINT does not match: the walk says so)
    return _decode_walk(data)


def _from_layout(data: bytes, layout: _Layout) -> Message:
    """A message of a shape decoded before: what the walk found then (see decode)."""
    msg: Message = _new(Message)
    msg.method = layout.method
    msg.message_class = layout.message_class
    msg.transaction_id = data[8:20]
    msg._attrs = None
    msg._raw = data
    msg._records = layout.records
    msg._layout = layout
    msg._mi = layout.mi
    msg._mi256 = layout.mi256
    msg._fp = layout.fp
    msg._unknown = layout.unknown
    return msg


def _decode_walk(data: bytes) -> Message:
    """:func:`decode`'s one pass over the message (for one of a shape not kept)."""
    n = len(data)
    if n < 20:
        raise StunDecodeError("shorter than a STUN header")
    mtype, length, cookie = _HEADER_UNPACK(data)
    if mtype & 0xC000:
        raise StunDecodeError("the top two bits of a STUN message are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunDecodeError("wrong magic cookie")
    if length + 20 != n or length & 3:
        raise StunDecodeError("the length field does not match the message")
    records: list[tuple[int, int, int]] = []
    append = records.append
    rules = RULES
    mi = mi256 = fp = -1
    unknown = False
    pos = 20
    while pos < n:
        atype, alen = _TL_UNPACK(data, pos)
        end = pos + 4 + alen
        if end > n:
            raise StunDecodeError(f"attribute {atype:#06x} overruns the message")
        rule = rules.get(atype)
        if rule is None:
            # No rule: an attribute trice does not know (see Message.unknown_required).
            if atype < 0x8000:
                unknown = True
        else:
            if not rule[0] <= alen <= rule[1]:
                raise StunDecodeError(f"attribute {atype:#06x} has a bad length {alen}")
            kind = rule[2]
            if kind:
                if kind == KIND_ADDRESS:
                    family = data[pos + 5]
                    if not ((family == 1 and alen == 8) or (family == 2 and alen == 20)):
                        raise StunDecodeError(f"address attribute {atype:#06x} is malformed")
                elif kind == KIND_DECODE:
                    ATTRIBUTE_TYPES[atype]._decode(data[pos + 4 : end], data[8:20])
                elif kind == KIND_INTEGRITY and end + 8 == n and data[end : end + 4] == _FP_TL:
                    # The usual ending, MESSAGE-INTEGRITY then FINGERPRINT: what _decode_tail
                    # would find, without walking it (the rule above checked the length 20).
                    if crc32(data[:end]) ^ FINGERPRINT_XOR != U32.unpack_from(data, end + 4)[0]:
                        raise StunDecodeError("FINGERPRINT does not match")
                    append((atype, pos + 4, alen))
                    append((TYPE_FINGERPRINT, end + 4, 4))
                    mi = pos
                    fp = end
                    break
                else:  # MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT: the tail has its own rules
                    mi, mi256, fp = _decode_tail(data, pos, records)
                    break
        append((atype, pos + 4, alen))
        pos = end + (-alen & 3)
    msg = _new(Message)
    info = _TYPES.get(mtype)
    msg.method, msg.message_class = info if info is not None else _split_type(mtype)
    msg.transaction_id = data[8:20]
    msg._attrs = None
    msg._raw = data
    msg._records = records
    msg._layout = None
    msg._mi = mi
    msg._mi256 = mi256
    msg._fp = fp
    msg._unknown = unknown
    return msg


class _Layout:
    """The shape of a message :func:`decode` accepted: what it found, and how to tell that
    another message has the same shape.

    The walk's every check but one depends only on the header's type and length, the
    cookie, each attribute's type and length (which also fix where each one lies) and the
    family byte of each address it checks; the one other is FINGERPRINT's CRC.  ``unpack``
    reads all of those at once (one :class:`struct.Struct`), and ``expected`` is what they
    were: a message that reads the same, and whose FINGERPRINT (if any) matches, would be
    walked to the same records, integrity positions and verdict.  Not kept for a message
    with an attribute that has its own decoder (ERROR-CODE, say: its value is checked too),
    or with anything after FINGERPRINT.
    """

    __slots__ = (
        "expected",
        "fp",
        "message_class",
        "method",
        "mi",
        "mi256",
        "plans",
        "records",
        "size",
        "unknown",
        "unpack",
    )

    def __init__(self, fmt: str, expected: tuple[int, ...], msg: Message, size: int) -> None:
        self.unpack = struct.Struct(fmt).unpack
        self.expected = expected
        self.size = size
        self.method = msg.method
        self.message_class = msg.message_class
        self.records = tuple(msg._records)
        self.mi = msg._mi
        self.mi256 = msg._mi256
        self.fp = msg._fp
        self.unknown = msg._unknown
        #: For :meth:`Message.first_values`: each tuple of types asked for, mapped to
        #: ``(place in the answer, start, end)`` of each value.
        self.plans: dict[tuple[int, ...], tuple[tuple[int, int, int], ...]] = {}

    def plan(self, types: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
        """Where the first value of each type in ``types`` lies (kept for a few tuples)."""
        index = _first_index(types)
        seen: set[int] = set()
        plan = []
        for at, s, n in self.records:
            i = index.get(at)
            if i is not None and at not in seen:
                seen.add(at)
                plan.append((i, s, s + n))
        found = tuple(plan)
        if type(types) is tuple and len(self.plans) < _PLANS_MAX:
            self.plans[types] = found
        return found


#: Shapes of authenticated messages, by their first four bytes (type and length), the
#: latest first: peers send the same few shapes again and again (an ICE agent's checks
#: and their answers; a check with ICE-CONTROLLING has the same type and length as one
#: with ICE-CONTROLLED).  Bounded: _SHAPES_MAX shapes a key, _LAYOUTS_MAX keys; once full,
#: no more are kept (none is dropped: a shape that keeps coming back is never walked
#: again, and one not kept costs what every message cost before shapes were kept).
_LAYOUTS: dict[bytes, tuple[_Layout, ...]] = {}
_LAYOUTS_MAX = 64
#: Types and lengths seen once in an authenticated message and not kept yet (see _remember).
_SEEN: set[bytes] = set()
_SHAPES_MAX = 8
_PLANS_MAX = 8
#: Only small messages leave a shape (an ICE check is about 100 bytes and six attributes),
#: so that what the cache holds stays small too (some 2 KB a shape at most), whatever an
#: authenticated peer sends: a message of 64 KB or of 10,000 attributes is walked, as
#: before there were shapes.
_SHAPE_BYTES_MAX = 548
_SHAPE_ATTRIBUTES_MAX = 16
_SKIP_KINDS: Final = frozenset({KIND_INTEGRITY, KIND_INTEGRITY_SHA256, KIND_FINGERPRINT})


def _remember(data: bytes, msg: Message) -> None:
    """Keep the shape of ``data``, which :func:`_decode_walk` accepted as ``msg`` (called
    once ``msg`` passed :meth:`Message.verify_integrity`: whoever sent it holds the key), if
    a message of its type and length passed before."""
    n = len(data)
    if n > _SHAPE_BYTES_MAX or len(msg._records) > _SHAPE_ATTRIBUTES_MAX:
        return  # (too big to be worth keeping: see _SHAPE_BYTES_MAX)
    key = data[:4]
    others = _LAYOUTS.get(key, ())
    if len(others) >= _SHAPES_MAX or (not others and len(_LAYOUTS) >= _LAYOUTS_MAX):
        return  # full: a shape not kept costs the pass, as before there were shapes
    if not others and key not in _SEEN:
        # The first of its type and length: kept the next time, if there is one (keeping
        # costs some 4 µs; a fresh process's first connection sees each shape once).
        if len(_SEEN) >= _LAYOUTS_MAX:
            _SEEN.clear()
        _SEEN.add(key)
        return
    if msg._fp >= 0 and msg._fp + 8 != n:
        return  # (something after FINGERPRINT: ignored by the walk, not worth a shape)
    fmt = [">4xI12x"]
    expected = [MAGIC_COOKIE]
    walked = True  # (before the first integrity attribute or FINGERPRINT: the main loop)
    pos = 20
    while pos < n:
        atype, alen = _TL_UNPACK(data, pos)
        padded = alen + (-alen & 3)
        rule = RULES.get(atype)
        kind = rule[2] if rule is not None else 0
        if walked and kind in _SKIP_KINDS:
            walked = False
        if walked and kind == KIND_DECODE:
            return
        if walked and kind == KIND_ADDRESS:
            fmt.append(f"HHxB{padded - 2}x")
            expected += (atype, alen, data[pos + 5])
        else:
            fmt.append(f"HH{padded}x")
            expected += (atype, alen)
        pos += 4 + padded
    layout = _Layout("".join(fmt), tuple(expected), msg, n)
    if all(other.expected != layout.expected for other in others):
        _LAYOUTS[key] = (layout, *others)
