"""Credentials and message authentication: SASLprep, keys, HMACs and FINGERPRINT.

Implements RFC 4013 (SASLprep), the key derivations of RFC 8489 §9.1.1 (short-term) and
§9.2.2 (long-term), the USERHASH of RFC 8489 §14.4, and the HMAC/CRC primitives used by
MESSAGE-INTEGRITY (§14.5), MESSAGE-INTEGRITY-SHA256 (§14.6) and FINGERPRINT (§14.7).
"""

from __future__ import annotations

import _thread
import hashlib
import os
import stringprep
import unicodedata
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Final, TypeVar

__all__ = [
    "PasswordAlgorithmId",
    "long_term_key",
    "saslprep",
    "short_term_key",
    "user_hash",
]


class PasswordAlgorithmId(IntEnum):
    """Password algorithm numbers of the PASSWORD-ALGORITHM(S) attributes (RFC 8489 §18.5)."""

    MD5 = 0x0001
    SHA256 = 0x0002


# --- SASLprep (RFC 4013) --------------------------------------------------------------------

_UCD: Final[Any] = unicodedata.ucd_3_2_0  # stringprep (RFC 3454) is defined on Unicode 3.2

_PROHIBITED: Final = (
    ("non-ASCII space", stringprep.in_table_c12),
    ("ASCII control character", stringprep.in_table_c21),
    ("non-ASCII control character", stringprep.in_table_c22),
    ("private use character", stringprep.in_table_c3),
    ("non-character code point", stringprep.in_table_c4),
    ("surrogate code point", stringprep.in_table_c5),
    ("character inappropriate for plain text", stringprep.in_table_c6),
    ("character inappropriate for canonical representation", stringprep.in_table_c7),
    ("change display property or deprecated character", stringprep.in_table_c8),
    ("tagging character", stringprep.in_table_c9),
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare *text* with the SASLprep profile of stringprep (RFC 4013 §2, RFC 3454).

    The steps are: map non-ASCII spaces to SPACE and drop "commonly mapped to nothing"
    characters (RFC 4013 §2.1), normalize with NFKC (§2.2), reject prohibited output (§2.3) and
    check bidirectional text (§2.4, RFC 3454 §6).  Printable ASCII is returned unchanged
    without any table look-up.

    Args:
        text: the string to prepare (a password, realm or user name).
        allow_unassigned: accept code points unassigned in Unicode 3.2 ("queries", RFC 3454
            §7); by default they are rejected as for "stored strings".

    Returns:
        The prepared string.

    Raises:
        ValueError: the string contains a prohibited character or breaks the bidi rules.
    """
    if text.isascii() and text.isprintable():
        return text
    in_c12 = stringprep.in_table_c12
    in_b1 = stringprep.in_table_b1
    mapped = "".join(" " if in_c12(c) else c for c in text if not in_b1(c))
    prepared: str = _UCD.normalize("NFKC", mapped)
    for index, char in enumerate(prepared):
        for label, predicate in _PROHIBITED:
            if predicate(char):
                raise ValueError(
                    f"SASLprep: prohibited {label} U+{ord(char):04X} at index {index} "
                    "(RFC 4013 §2.3)"
                )
        if not allow_unassigned and stringprep.in_table_a1(char):
            raise ValueError(
                f"SASLprep: unassigned code point U+{ord(char):04X} at index {index} "
                "(RFC 4013 §2.5)"
            )
    in_d1 = stringprep.in_table_d1
    if any(in_d1(c) for c in prepared):
        if any(stringprep.in_table_d2(c) for c in prepared):
            raise ValueError("SASLprep: string mixes right-to-left and left-to-right text")
        if not (in_d1(prepared[0]) and in_d1(prepared[-1])):
            raise ValueError(
                "SASLprep: right-to-left text must start and end with a right-to-left character"
            )
    return prepared


# --- keys ------------------------------------------------------------------------------------


def short_term_key(password: str) -> bytes:
    """Return the short-term credential key: ``OpaqueString(password)`` (RFC 8489 §9.1.1).

    The password is prepared with SASLprep (RFC 4013), which agrees with the PRECIS
    OpaqueString profile for every ICE password (``ice-pwd`` is printable ASCII, RFC 8839
    §5.4), and encoded as UTF-8.  ICE uses this key for its connectivity checks
    (RFC 8445 §7.2.2).

    Raises:
        ValueError: the password contains characters SASLprep prohibits.
    """
    return saslprep(password).encode("utf-8")


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: int = PasswordAlgorithmId.MD5,
    *,
    prepare: Callable[[str], str] = saslprep,
) -> bytes:
    """Return the long-term credential key (RFC 8489 §9.2.2).

    ``MD5(username ":" realm ":" password)`` or ``SHA-256(...)`` of the same string for
    ``SHA256`` of :class:`~trice.stun.PasswordAlgorithmId`.  The realm and the password
    are prepared with ``prepare``: SASLprep by default, as RFC 5389 §15.4 has it (RFC 5769
    §2.4 checks this); ``prepare=str`` takes them as written, as coturn and Pion do (RFC
    8489's OpaqueString leaves most as written: it does not map compatibility characters,
    a fullwidth letter, say, to ASCII as SASLprep does).  The user name is used as sent in
    USERNAME.

    Args:
        username: the value of the USERNAME attribute.
        realm: the value of the REALM attribute.
        password: the password (before its preparation).
        algorithm: a :class:`PasswordAlgorithmId` (or the attribute's ``algorithm``).
        prepare: how the realm and password are prepared: :func:`saslprep`, or ``str``.

    Raises:
        ValueError: ``prepare`` rejects the realm or password, or the algorithm is unknown.
    """
    material = f"{username}:{prepare(realm)}:{prepare(password)}".encode()
    if algorithm == PasswordAlgorithmId.MD5:
        return hashlib.md5(material, usedforsecurity=False).digest()
    if algorithm == PasswordAlgorithmId.SHA256:
        return hashlib.sha256(material).digest()
    raise ValueError(f"unknown STUN password algorithm {algorithm!r} (RFC 8489 §18.5)")


def secret_problem(text: str) -> str | None:
    """Why no TURN key can be made of ``text`` (a password, taken as written: see
    :func:`long_term_key`), or ``None``: a control character (RFC 8489's OpaqueString, as
    SASLprep, allows none), or a lone surrogate (no UTF-8 holds it)."""
    for index, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Cs"):
            return f"a control or surrogate code point U+{ord(char):04X} at index {index}"
    return None


def user_hash(username: str, realm: str, *, prepare: Callable[[str], str] = saslprep) -> bytes:
    """Return the USERHASH value ``SHA-256(OpaqueString(username) ":" realm)`` (RFC 8489 §14.4).

    The user name and realm are prepared with ``prepare``: SASLprep by default; ``str``
    takes them as written, as :func:`long_term_key` can.

    Raises:
        ValueError: ``prepare`` rejects the user name or the realm.
    """
    return hashlib.sha256(f"{prepare(username)}:{prepare(realm)}".encode()).digest()


# --- HMAC and CRC ---------------------------------------------------------------------------

_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_CACHE_LIMIT: Final = 4096  # keys: a process may hold thousands of agents
# key -> (inner hash primed with key^ipad, outer hash primed with key^opad).  An ICE agent talks
# with a handful of keys, so priming once per key halves the cost of each HMAC (RFC 2104 §2).
_sha1_pads: dict[bytes, tuple[Any, Any]] = {}
_sha256_pads: dict[bytes, tuple[Any, Any]] = {}


_caching = _thread.allocate_lock()  # (not threading: it imports time, which the core does not)


def _fresh_lock_in_child() -> None:
    """A child forked while a thread held the lock inherits it held, by a thread it does
    not have: its first new key would wait for good.  It gets a lock of its own."""
    global _caching
    _caching = _thread.allocate_lock()


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_fresh_lock_in_child)
_V = TypeVar("_V")


def cache_key(cache: dict[bytes, _V], key: bytes, value: _V) -> _V:
    """Put ``value`` in a cache of keys' primed hashes, the oldest key out at the cap.

    Under a lock: threads (each with its trio run, or using the codec alone) share these
    caches, and two that evicted at once could both pick the same oldest key (a KeyError
    out of whatever primed a key, ``open_agent`` too).  Only a miss gets here; a hit is a
    plain ``dict.get``."""
    with _caching:
        if len(cache) >= _CACHE_LIMIT:
            del cache[next(iter(cache))]  # the oldest
        cache[key] = value
    return value


def _prime(cache: dict[bytes, tuple[Any, Any]], key: bytes, name: str) -> tuple[Any, Any]:
    block = (hashlib.new(name, key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    pads = (hashlib.new(name, block.translate(_IPAD)), hashlib.new(name, block.translate(_OPAD)))
    return cache_key(cache, key, pads)


def sha1_pads(key: bytes) -> tuple[Any, Any]:
    """Return the SHA-1 objects primed with ``key ^ ipad`` and ``key ^ opad`` (RFC 2104 §2).

    Shared and cached: copy them before updating.  The fast encoders prime them further.
    """
    try:
        return _sha1_pads.get(key) or _prime(_sha1_pads, key, "sha1")
    except (TypeError, ValueError):  # (unhashable: a bytearray or a writable memoryview)
        return _prime(_sha1_pads, _key_bytes(key), "sha1")


def _key_bytes(key: object) -> bytes:
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"a STUN integrity key is bytes, not {type(key).__name__}")


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    """Return HMAC-SHA1(*key*, *data*), as used by MESSAGE-INTEGRITY (RFC 8489 §14.5)."""
    pads = sha1_pads(key)
    inner = pads[0].copy()
    inner.update(data)
    outer = pads[1].copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """Return HMAC-SHA256(*key*, *data*), as used by MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6)."""
    try:
        pads = _sha256_pads.get(key) or _prime(_sha256_pads, key, "sha256")
    except (TypeError, ValueError):  # (unhashable: a bytearray or a writable memoryview)
        pads = _prime(_sha256_pads, _key_bytes(key), "sha256")
    inner = pads[0].copy()
    inner.update(data)
    outer = pads[1].copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest
