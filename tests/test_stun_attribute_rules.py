"""RFC 8489 rules of STUN attributes and of the Binding fast path that the other STUN tests
did not pin (found by a mutation review): ERROR-CODE's reserved bits, the sizes of
PASSWORD-ALGORITHM and USERHASH, and what the fast path does with an address it cannot
encode."""

from __future__ import annotations

import struct

import pytest
from test_stun_message import TID

from trice import stun
from trice.stun import StunDecodeError
from trice.stun._fastpath import encode_binding_success, prime_success


def _message(*attributes: tuple[int, bytes], message_type: int = 0x0111) -> bytes:
    """A STUN message (a Binding error response by default) of the raw attributes given."""
    body = b""
    for kind, value in attributes:
        body += struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) & 3)
    return struct.pack("!HHI", message_type, len(body), stun.MAGIC_COOKIE) + TID + body


def test_the_reserved_bits_before_an_error_codes_class_are_ignored() -> None:
    """RFC 8489 §14.8: the 21 bits before the class are reserved, and "MUST be ignored on
    reception": a 401 with one of them set is a 401."""
    data = _message((0x0009, bytes((0, 0, 0x08 | 4, 1)) + b"Unauthorized"))
    error = stun.decode(data).get(stun.ErrorCode)
    assert error is not None and error.code == 401 and error.reason == "Unauthorized"


def test_a_password_algorithm_with_bytes_after_its_parameters_is_malformed() -> None:
    """PASSWORD-ALGORITHM holds one algorithm (RFC 8489 §14.12): more bytes after its padded
    parameters are not one, and the attribute is refused."""
    value = struct.pack("!HH", 2, 0) + b"\x00\x01\x00\x00"
    with pytest.raises(StunDecodeError):
        message = stun.decode(_message((0x001D, value)))
        message.get(stun.PasswordAlgorithm)


@pytest.mark.parametrize("size", [31, 33])
def test_a_userhash_is_32_bytes(size: int) -> None:
    """USERHASH is a SHA-256 hash: 32 bytes (RFC 8489 §14.4); one of another size is
    refused."""
    with pytest.raises(StunDecodeError):
        message = stun.decode(_message((0x001E, bytes(size)), message_type=0x0001))
        message.get(stun.UserHash)
    ok = stun.decode(_message((0x001E, bytes(32)), message_type=0x0001)).get(stun.UserHash)
    assert ok is not None and ok.value == bytes(32)


def test_a_success_to_an_unhashable_address_raises_value_error() -> None:
    """``encode_binding_success`` raises ValueError for an address it cannot encode
    (documented), an unhashable one included, as the general encoder does."""
    with pytest.raises(ValueError):
        encode_binding_success(TID, ["192.0.2.1"], 5000, b"k" * 16)  # type: ignore[arg-type]


@pytest.mark.parametrize("address", [["192.0.2.1"], {"a": 1}, "not an address"])
def test_priming_an_address_it_cannot_encode_is_quiet(address: object) -> None:
    """``prime_success`` is quiet about an address it cannot encode (documented)."""
    prime_success(address, 5000)  # type: ignore[arg-type]
