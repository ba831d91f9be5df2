"""Wire constants and precompiled structs shared by the STUN modules (RFC 8489 §5, §14)."""

from __future__ import annotations

import struct
from typing import Final

#: The fixed magic cookie of every RFC 5389/8489 message (RFC 8489 §5).
MAGIC_COOKIE: Final = 0x2112A442
MAGIC_COOKIE_BYTES: Final = b"\x21\x12\xa4\x42"
#: Size of the STUN header in bytes (RFC 8489 §5).
HEADER_SIZE: Final = 20
#: XOR constant of the FINGERPRINT attribute: ASCII "STUN" (RFC 8489 §14.7).
FINGERPRINT_XOR: Final = 0x5354554E

# Attribute type codes the message layer itself needs (RFC 8489 §18.3).
TYPE_MESSAGE_INTEGRITY: Final = 0x0008
TYPE_MESSAGE_INTEGRITY_SHA256: Final = 0x001C
TYPE_FINGERPRINT: Final = 0x8028

HEADER: Final = struct.Struct("!HHI")  # type, length, cookie (transaction id follows)
TL: Final = struct.Struct("!HH")  # attribute type and length
U8: Final = struct.Struct("!B")
U16: Final = struct.Struct("!H")
U32: Final = struct.Struct("!I")
U64: Final = struct.Struct("!Q")

# Kinds of eager validation done by the decoder's single pass (see _message.decode).
KIND_PLAIN: Final = 0  # the length bounds are the whole check
KIND_ADDRESS: Final = 1  # family byte must match the length (8 for IPv4, 20 for IPv6)
KIND_DECODE: Final = 2  # run the attribute's own decoder (rare, structured values)
KIND_INTEGRITY: Final = 3  # MESSAGE-INTEGRITY
KIND_INTEGRITY_SHA256: Final = 4  # MESSAGE-INTEGRITY-SHA256
KIND_FINGERPRINT: Final = 5  # FINGERPRINT


def pad_length(n: int) -> int:
    """Return how many padding bytes follow a value of *n* bytes (RFC 8489 §14)."""
    return -n & 3
