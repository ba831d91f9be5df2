"""RFC 8489 rules of the STUN codec that the other STUN tests did not pin (found by a
mutation review): the lengths of MESSAGE-INTEGRITY-SHA256 and of IPv4 address
attributes, what follows an integrity attribute, and the range of ERROR-CODE."""

from __future__ import annotations

import struct

import pytest

from trice import stun


@pytest.mark.parametrize("length", [18, 30])
def test_message_integrity_sha256_of_a_length_not_a_multiple_of_4_is_refused(length: int) -> None:
    """RFC 8489 §14.6: MESSAGE-INTEGRITY-SHA256 is at least 16 bytes, at most 32, and "MUST
    be a multiple of 4 bytes": the decoder refuses a message whose attribute is of another
    length."""
    body = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        transaction_id=b"A" * 12,
        attributes=(stun.Username("a:b"),),
    ).encode()
    header, attrs = body[:20], body[20:]
    padded = length + (-length & 3)
    total = len(attrs) + 4 + padded
    data = (
        header[:2]
        + struct.pack("!H", total)
        + header[4:]
        + attrs
        + struct.pack("!HH", 0x001C, length)
        + bytes(padded)
    )
    with pytest.raises(stun.StunDecodeError):
        stun.decode(data)


def _signed_then(extra_type: int, extra_len: int, *, sha256: bool) -> bytes:
    """A Binding request signed with MESSAGE-INTEGRITY (or -SHA256), with one more
    attribute of ``extra_type`` appended after the integrity attribute (and the header's
    length grown to cover it)."""
    key = b"the-key"
    data = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        transaction_id=b"B" * 12,
        attributes=(stun.Username("a:b"),),
    ).encode(integrity_key=None if sha256 else key, integrity_sha256_key=key if sha256 else None)
    tail = struct.pack("!HH", extra_type, extra_len) + bytes(extra_len)
    length = struct.unpack("!H", data[2:4])[0] + len(tail)
    return data[:2] + struct.pack("!H", length) + data[4:] + tail


@pytest.mark.parametrize(
    ("sha256", "extra"), [(False, (0x0008, 20)), (True, (0x001C, 32))], ids=["mi", "mi-sha256"]
)
def test_a_second_integrity_attribute_after_the_first_is_ignored(
    sha256: bool, extra: tuple[int, int]
) -> None:
    """RFC 8489 §14.5/§14.6: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and
    FINGERPRINT count, after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT: anything else that
    follows, a second copy of the same integrity attribute included, is ignored, and the
    first one verifies."""
    data = _signed_then(*extra, sha256=sha256)
    message = stun.decode(data)
    assert message.verify_integrity(b"the-key")


@pytest.mark.parametrize("length", [12, 16])
def test_an_ipv4_address_attribute_of_the_wrong_length_is_refused(length: int) -> None:
    """RFC 8489 §14.1/§14.2: an IPv4 (family 0x01) address attribute is 8 bytes long; the
    decoder refuses one of another length."""
    value = struct.pack("!BBH", 0, 1, 1234 ^ 0x2112) + bytes(4) + bytes(length - 8)
    attribute = struct.pack("!HH", 0x0020, length) + value
    data = struct.pack("!HHI", 0x0101, len(attribute), 0x2112A442) + b"C" * 12 + attribute
    with pytest.raises(stun.StunDecodeError):
        stun.decode(data)


def test_an_error_code_past_699_is_not_encoded() -> None:
    """RFC 8489 §14.8: ERROR-CODE is 300..699 (the class is 3 to 6): encoding 700 raises
    ValueError, as the attribute's documentation says."""
    message = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.ERROR,
        transaction_id=b"D" * 12,
        attributes=(stun.ErrorCode(700, "Nope"),),
    )
    with pytest.raises(ValueError):
        message.encode()
