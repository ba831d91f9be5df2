"""Rules of SASLprep and of the HMAC keys (trice/stun/_integrity.py) that the other STUN
tests did not pin (found by a mutation review; each test here kills a mutant the rest of the
suite let through): non-ASCII spaces mapped to SPACE, right-to-left text mixed with
left-to-right refused, the caches of primed keys capped, and a key in a bytearray or a
memoryview, writable or not, taken as its bytes."""

from __future__ import annotations

import pytest

from trice import stun
from trice.stun import _integrity

# -- SASLprep (RFC 4013) ---------------------------------------------------------------------


def test_saslprep_maps_non_ascii_spaces_to_space() -> None:
    """RFC 4013 §2.1: non-ASCII space characters (C.1.2) are mapped to SPACE (U+0020), not
    rejected.  (Most of them NFKC maps to SPACE as well; U+1680 OGHAM SPACE MARK it leaves
    alone, so only the mapping step makes it a space.)  (Mutant: the mapping to SPACE
    left out, and the character refused as prohibited.)"""
    assert stun.saslprep("a\u1680b") == "a b"
    assert stun.long_term_key("u", "r", "a\u1680b") == stun.long_term_key("u", "r", "a b")


def test_saslprep_refuses_right_to_left_text_mixed_with_left_to_right() -> None:
    """RFC 3454 §6, rule 2 (RFC 4013 §2.4): a string with a RandALCat character must hold
    no LCat character, even when it starts and ends with a RandALCat one.  (Mutant: rule 2
    not checked.)"""
    with pytest.raises(ValueError, match="mixes right-to-left and left-to-right"):
        stun.saslprep("\u0627a\u0627")
    assert stun.saslprep("\u0627\u0628") == "\u0627\u0628"


# -- the caches of primed keys ---------------------------------------------------------------


def test_the_primed_key_caches_hold_at_most_their_cap_oldest_out() -> None:
    """A process with many agents: the caches of primed HMAC keys stay at
    ``_CACHE_LIMIT`` keys, the oldest going first (module comments of _integrity).
    (Mutants: one key over the cap, ``>`` for ``>=``; none evicted.)"""
    limit = _integrity._CACHE_LIMIT
    keys = [b"integrity-rules-%06d" % i for i in range(limit + 4)]
    for key in keys:
        _integrity.hmac_sha1(key, b"data")
        _integrity.hmac_sha256(key, b"data")
    for cache in (_integrity._sha1_pads, _integrity._sha256_pads):
        assert len(cache) == limit
        assert keys[0] not in cache and keys[3] not in cache
        assert keys[4] in cache and keys[-1] in cache


# -- keys that are no bytes object -----------------------------------------------------------


def test_an_hmac_key_in_a_bytearray_keys_as_its_bytes() -> None:
    """The HMAC primitives take an unhashable key as its bytes (the paths for an
    unhashable key in sha1_pads and hmac_sha256).  (Mutant: the TypeError of hashing a
    bytearray not caught in hmac_sha256; in sha1_pads, test_stun_message's
    test_an_integrity_key_may_be_any_bytes_like_object catches it too.)"""
    key = bytearray(b"integrity-rules-key")
    raw = bytes(key)
    assert _integrity.hmac_sha1(key, b"data") == _integrity.hmac_sha1(raw, b"data")  # type: ignore[arg-type]
    assert _integrity.hmac_sha256(key, b"data") == _integrity.hmac_sha256(raw, b"data")  # type: ignore[arg-type]


def test_a_key_in_a_writable_memoryview_signs_as_its_bytes() -> None:
    """A key in a writable memoryview (of a bytearray) signs as its bytes, as the same key
    in a bytearray does: hashing such a view raises ValueError, not TypeError, and
    ``Message.encode(integrity_key=memoryview(bytearray(key)))`` failed with it (a defect
    this test found).  (Mutant: only TypeError caught, as before the fix.)"""
    raw = b"k" * 22
    message = stun.Message(
        stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=[stun.Username("a:b")]
    )
    signed = message.encode(integrity_key=raw, fingerprint=True)
    assert message.encode(integrity_key=bytearray(raw), fingerprint=True) == signed  # type: ignore[arg-type]
    key = memoryview(bytearray(raw))
    assert _integrity.hmac_sha256(key, b"data") == _integrity.hmac_sha256(raw, b"data")  # type: ignore[arg-type]
    assert message.encode(integrity_key=key, fingerprint=True) == signed  # type: ignore[arg-type]
