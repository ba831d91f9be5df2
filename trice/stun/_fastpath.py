"""Specialised encoders for ICE connectivity checks and their success responses.

They produce, byte for byte, what :meth:`Message.encode` produces with ``integrity_key=key``
and ``fingerprint=True`` for the same attributes in the same order (RFC 8445 §7.1, §7.3.1;
RFC 8489 §14.5, §14.7), at a fraction of the cost: everything that does not depend on the
transaction ID is laid out once, and the inner HMAC-SHA1 state is primed with the header too,
so a message costs two hash copies, one CRC-32 and a few concatenations.
"""

from __future__ import annotations

import contextlib
import functools
import struct
from typing import Any, Final
from zlib import crc32

from ._attributes import Username, XorMappedAddress, _pack_ip
from ._attributes_ext import IceControlled, IceControlling, Priority, UseCandidate
from ._integrity import sha1_pads
from ._message import MessageClass, Method, message_type
from ._wire import (
    FINGERPRINT_XOR,
    HEADER,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    TL,
    TYPE_FINGERPRINT,
    TYPE_MESSAGE_INTEGRITY,
    U16,
    U32,
    U64,
)

__all__ = ["BindingRequestTemplate", "encode_binding_success", "prime_success"]

_BINDING_REQUEST: Final = message_type(Method.BINDING, MessageClass.REQUEST)
_BINDING_SUCCESS: Final = message_type(Method.BINDING, MessageClass.SUCCESS)
_USERNAME: Final = Username.TYPE
_PRIORITY: Final = Priority.TYPE
_USE_CANDIDATE: Final = UseCandidate.TYPE
_ICE_CONTROLLED: Final = IceControlled.TYPE
_ICE_CONTROLLING: Final = IceControlling.TYPE
_XOR_MAPPED_ADDRESS: Final = XorMappedAddress.TYPE

_MI_TL: Final = TL.pack(TYPE_MESSAGE_INTEGRITY, 20)
_FP_TL: Final = TL.pack(TYPE_FINGERPRINT, 4)
_U32_PACK: Final = U32.pack
_MASK6: Final = int.from_bytes(MAGIC_COOKIE_BYTES, "big") << 96


def _check_tid(transaction_id: bytes) -> None:
    if len(transaction_id) != 12:
        raise ValueError(f"a STUN transaction ID is 12 bytes, not {len(transaction_id)}")


class BindingRequestTemplate:
    """An ICE connectivity check with everything but the transaction ID laid out.

    ``template.encode(tid)`` equals::

        Message(Method.BINDING, MessageClass.REQUEST, tid, (
            Username(username), Priority(priority),
            IceControlling(tiebreaker) if controlling else IceControlled(tiebreaker),
            *((UseCandidate(),) if use_candidate else ()),
        )).encode(integrity_key=key, fingerprint=True)

    Raises:
        ValueError: a value cannot be encoded (as :meth:`Message.encode` would say).
    """

    __slots__ = ("_body", "_head", "_inner", "_outer", "_tail")

    def __init__(
        self,
        username: str,
        priority: int,
        *,
        controlling: bool,
        tiebreaker: int,
        use_candidate: bool,
        key: bytes,
    ) -> None:
        try:
            user = username.encode("utf-8", "surrogateescape")
            parts = [
                TL.pack(_USERNAME, len(user)),
                user,
                bytes(-len(user) & 3),
                TL.pack(_PRIORITY, 4),
                U32.pack(priority),
                TL.pack(_ICE_CONTROLLING if controlling else _ICE_CONTROLLED, 8),
                U64.pack(tiebreaker),
            ]
        except (struct.error, OverflowError, TypeError) as exc:
            raise ValueError(f"cannot encode a Binding request: {exc}") from exc
        if use_candidate:
            parts.append(TL.pack(_USE_CANDIDATE, 0))
        body = b"".join(parts)
        length = len(body) + 24  # the header length MESSAGE-INTEGRITY is computed with
        if length + 8 > 0xFFFF:
            raise ValueError("STUN message too long")
        inner, outer = sha1_pads(key)
        inner = inner.copy()
        inner.update(HEADER.pack(_BINDING_REQUEST, length, MAGIC_COOKIE))
        self._inner: Any = inner
        self._outer: Any = outer
        self._head = HEADER.pack(_BINDING_REQUEST, length + 8, MAGIC_COOKIE)
        self._body = body
        self._tail = body + _MI_TL

    def encode(self, transaction_id: bytes) -> bytes:
        """Return the request with *transaction_id* (12 bytes), signed and fingerprinted.

        Raises:
            ValueError: the transaction ID is not 12 bytes.
        """
        if len(transaction_id) != 12:
            _check_tid(transaction_id)
        inner = self._inner.copy()
        inner.update(transaction_id + self._body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        data: bytes = self._head + transaction_id + self._tail + outer.digest()
        return data + _FP_TL + _U32_PACK(crc32(data) ^ FINGERPRINT_XOR)


@functools.lru_cache(maxsize=4096, typed=True)
def _xor_mapped_v4(address: str, port: int) -> bytes | None:
    """XOR-MAPPED-ADDRESS, type and length included, for an IPv4 *address*; else ``None``.

    Cached for as many peers as a process is likely to answer at once (a thousand pairs of
    agents: two thousand), since :func:`prime_success` fills it ahead of their answers.
    (Typed: a port of 5000.0 is refused, as the general encoder refuses it, even after 5000
    was cached.)"""
    family, packed = _pack_ip(address)
    if family != 1:
        return None
    try:
        return (
            TL.pack(_XOR_MAPPED_ADDRESS, 8)
            + b"\x00\x01"
            + U16.pack(port ^ 0x2112)
            + U32.pack(int.from_bytes(packed, "big") ^ MAGIC_COOKIE)
        )
    except (struct.error, OverflowError, TypeError) as exc:
        raise ValueError(f"cannot encode XOR-MAPPED-ADDRESS {address}:{port}: {exc}") from exc


def prime_success(address: str, port: int) -> None:
    """Work out ahead the XOR-MAPPED-ADDRESS of :func:`encode_binding_success` for a peer
    at ``(address, port)`` (an IPv4 one: IPv6 depends on each transaction ID), so that the
    first answer to it costs no more than the next.  Quiet about an address it cannot
    encode: the answer, if one comes, raises."""
    with contextlib.suppress(ValueError, TypeError):
        _xor_mapped_v4(address, port)


def _xor_mapped_v6(transaction_id: bytes, address: str, port: int) -> bytes:
    packed = _pack_ip(address)[1]
    mask = _MASK6 | int.from_bytes(transaction_id, "big")
    try:
        return (
            TL.pack(_XOR_MAPPED_ADDRESS, 20)
            + b"\x00\x02"
            + U16.pack(port ^ 0x2112)
            + (int.from_bytes(packed, "big") ^ mask).to_bytes(16, "big")
        )
    except (struct.error, OverflowError, TypeError) as exc:
        raise ValueError(f"cannot encode XOR-MAPPED-ADDRESS {address}:{port}: {exc}") from exc


_HEAD4_MI: Final = HEADER.pack(_BINDING_SUCCESS, 12 + 24, MAGIC_COOKIE)
_HEAD6_MI: Final = HEADER.pack(_BINDING_SUCCESS, 24 + 24, MAGIC_COOKIE)
_HEAD4: Final = HEADER.pack(_BINDING_SUCCESS, 12 + 32, MAGIC_COOKIE)
_HEAD6: Final = HEADER.pack(_BINDING_SUCCESS, 24 + 32, MAGIC_COOKIE)


def success_pads(key: bytes) -> tuple[Any, Any]:
    """The primed hash objects :func:`encode_binding_success` signs with for ``key`` (those
    of :func:`sha1_pads`): an agent keeps its own (``pads=``), so that thousands of agents
    in a process do not evict one another from the shared cache.

    (No states primed further with the answer's header: its 20 bytes stay in SHA-1's block
    buffer, so priming them saved no compression, and cost two hash states a key, some
    600 bytes of OpenSSL's memory each agent.)"""
    if type(key) is not bytes:  # (a bytearray, which the general encoder takes too)
        key = bytes(key)
    return sha1_pads(key)


def encode_binding_success(
    transaction_id: bytes,
    address: str,
    port: int,
    key: bytes,
    pads: tuple[Any, Any] | None = None,
) -> bytes:
    """Return the Binding success response to *transaction_id* mapping ``(address, port)``.

    Equals ``Message(Method.BINDING, MessageClass.SUCCESS, transaction_id,
    (XorMappedAddress(address, port),)).encode(integrity_key=key, fingerprint=True)``.

    Raises:
        ValueError: the address or port cannot be encoded, or the transaction ID is not
            12 bytes.
    """
    if len(transaction_id) != 12:
        _check_tid(transaction_id)
    if pads is None:
        pads = success_pads(key)
    try:
        attr = _xor_mapped_v4(address, port)
    except TypeError as exc:  # unhashable: not an address the general path could encode
        raise ValueError(f"cannot encode XOR-MAPPED-ADDRESS {address!r}: {exc}") from exc
    if attr is not None:
        head_mi = _HEAD4_MI
        head = _HEAD4
    else:
        attr = _xor_mapped_v6(transaction_id, address, port)
        head_mi = _HEAD6_MI
        head = _HEAD6
    inner = pads[0].copy()
    inner.update(head_mi + transaction_id + attr)
    outer = pads[1].copy()
    outer.update(inner.digest())
    data: bytes = head + transaction_id + attr + _MI_TL + outer.digest()
    return data + _FP_TL + _U32_PACK(crc32(data) ^ FINGERPRINT_XOR)
