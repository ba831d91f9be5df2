"""Telling packets apart and framing them: the RFC 7983 demultiplexer (with RFC 9443's
QUIC), TURN ChannelData
(RFC 8656 §12) and STUN/ChannelData framing over TCP and TLS (RFC 8489 §6.2.2, RFC 8656 §12.5).
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from .._errors import StunDecodeError
from ._wire import MAGIC_COOKIE_BYTES, U16

__all__ = [
    "PacketKind",
    "classify",
    "decode_channel_data",
    "encode_channel_data",
    "frame_length",
    "is_stun",
    "peek_type",
    "peek_username",
]

#: Lowest and highest valid TURN channel numbers (RFC 8656 §12).
CHANNEL_MIN: Final = 0x4000
CHANNEL_MAX: Final = 0x4FFF


class PacketKind(str, Enum):
    """What the first byte of a packet says it is (RFC 7983 §7 as RFC 9443 §3 updates it,
    RFC 5764 §5.1.2).  64..79 is TURN ChannelData, or QUIC on a socket that TURN does not
    use (RFC 9443 §4): :func:`classify` says ``TURN_CHANNEL``, and only the application
    knows whether TURN is in use."""

    STUN = "stun"  #: 0..3
    ZRTP = "zrtp"  #: 16..19
    DTLS = "dtls"  #: 20..63
    TURN_CHANNEL = "turn-channel"  #: 64..79
    QUIC = "quic"  #: 80..127 and 192..255 (RFC 9443; 64..79 too, where TURN is not in use)
    RTP = "rtp"  #: 128..191 (RTP and RTCP)
    OTHER = "other"  #: 4..15, and the empty packet


def _kind_of(byte: int) -> PacketKind:
    if byte <= 3:
        return PacketKind.STUN
    if 16 <= byte <= 19:
        return PacketKind.ZRTP
    if 20 <= byte <= 63:
        return PacketKind.DTLS
    if 64 <= byte <= 79:
        return PacketKind.TURN_CHANNEL
    if 128 <= byte <= 191:
        return PacketKind.RTP
    if byte >= 80:
        return PacketKind.QUIC
    return PacketKind.OTHER


_KINDS: Final = tuple(_kind_of(b) for b in range(256))


def classify(data: bytes | bytearray | memoryview) -> PacketKind:
    """Classify a packet by its first byte, as RFC 7983 §7 (updated by RFC 9443 for QUIC)
    demultiplexes one port.

    This is a table look-up; it does not check that the packet is well formed.
    """
    return _KINDS[data[0]] if data else PacketKind.OTHER


def is_stun(data: bytes | bytearray | memoryview) -> bool:
    """Whether *data* looks like an RFC 5389/8489 STUN message (RFC 8489 §5, RFC 7983 §7).

    True when it is at least 20 bytes, the top two bits are zero and bytes 4..7 hold the
    magic cookie.  Cheap; :func:`decode` does the full check.  (An agent takes a datagram
    of 8 to 19 bytes that starts so for STUN too, a malformed one: not data, see the data
    guide.)
    """
    return len(data) >= 20 and data[0] < 4 and data[4:8] == MAGIC_COOKIE_BYTES


def peek_type(data: bytes | bytearray | memoryview) -> int | None:
    """The 16-bit message type (method and class, RFC 8489 §5) of what :func:`is_stun` takes
    for a STUN message, or ``None``; nothing else is looked at."""
    return (data[0] << 8) | data[1] if is_stun(data) else None


def peek_username(data: bytes | bytearray | memoryview) -> bytes | None:
    """The value of a STUN-looking message's USERNAME attribute (RFC 8489 §14.3), found by
    walking the attributes' headers (§14) without decoding them: a demultiplexer's look,
    before the agent decodes and checks the whole message; ``None`` if there is none
    before MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT (what follows them
    does not count, §14.5-14.7, as for the decoder)."""
    if not is_stun(data):
        return None
    end = min(len(data), 20 + U16.unpack_from(data, 2)[0])
    i = 20
    while i + 4 <= end:
        kind, length = U16.unpack_from(data, i)[0], U16.unpack_from(data, i + 2)[0]
        if kind == 0x0006:  # USERNAME
            return bytes(data[i + 4 : min(i + 4 + length, end)])
        if kind == 0x0008 or kind == 0x001C or kind == 0x8028:
            return None  # (MESSAGE-INTEGRITY(-SHA256), FINGERPRINT: nothing after counts)
        i += 4 + ((length + 3) & ~3)
    return None


def encode_channel_data(
    channel: int, data: bytes | bytearray | memoryview, *, pad: bool = False
) -> bytes:
    """Build a ChannelData message: channel, length, application data (RFC 8656 §12.4).

    Args:
        channel: a channel number within 0x4000..0x4FFF.
        data: the application data (at most 65535 bytes).
        pad: pad to a multiple of 4 bytes, as required over TCP and TLS (RFC 8656 §12.5).

    Raises:
        ValueError: the channel number or the data length is out of range.
    """
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise ValueError(f"TURN channel numbers are 0x4000..0x4FFF, not {channel:#x}")
    n = len(data)
    if n > 0xFFFF:
        raise ValueError(f"ChannelData carries at most 65535 bytes, not {n}")
    frame = U16.pack(channel) + U16.pack(n) + bytes(data)
    if pad and n & 3:
        frame += bytes(4 - (n & 3))
    return frame


def decode_channel_data(
    data: bytes | bytearray | memoryview, *, datagram: bool = False
) -> tuple[int, bytes]:
    """Parse a ChannelData message into ``(channel, application data)`` (RFC 8656 §12.4).

    Up to 3 bytes of padding after the data are accepted (RFC 8656 §12.5); from a
    ``datagram`` (UDP), whatever follows the data is no part of it, and is ignored (§12.6
    drops only a datagram shorter than its length says; Pion reads it so too).

    Raises:
        StunDecodeError: shorter than 4 bytes, the channel is outside 0x4000..0x4FFF, the
            length field overruns the data, or (not a ``datagram``) more than padding
            follows it.
    """
    total = len(data)
    if total < 4:
        raise StunDecodeError("ChannelData shorter than its 4-byte header")
    channel = (data[0] << 8) | data[1]
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunDecodeError(f"ChannelData channel {channel:#06x} outside 0x4000..0x4FFF")
    length = (data[2] << 8) | data[3]
    extra = total - 4 - length
    if extra < 0:
        raise StunDecodeError("ChannelData length field overruns the data")
    if extra > 3 and not datagram:
        raise StunDecodeError("ChannelData followed by more than padding")
    return channel, bytes(data[4 : 4 + length])


def frame_length(buffer: bytes | bytearray | memoryview) -> int | None:
    """Size of the STUN message or ChannelData frame at the start of a stream buffer.

    Over TCP and TLS, STUN messages are sent back to back (RFC 8489 §6.2.2) and so are
    ChannelData messages, padded to 4 bytes (RFC 8656 §12.5).  The first two bits tell them
    apart (``00`` STUN, ``01`` ChannelData) and bytes 2..3 hold the length.

    Returns:
        The number of bytes the first frame occupies once the buffer holds all of it, or
        ``None`` while it is still incomplete.

    Raises:
        StunDecodeError: the buffer starts with neither STUN nor ChannelData, or a STUN
            length is not a multiple of 4: the stream is out of step and must be closed.
    """
    if len(buffer) < 4:
        if buffer and buffer[0] >> 6 > 1:
            raise StunDecodeError("stream data is neither STUN nor ChannelData")
        return None
    first = buffer[0] >> 6
    length = (buffer[2] << 8) | buffer[3]
    if first == 0:
        if length & 3:
            raise StunDecodeError("STUN length not a multiple of 4 in a stream")
        size = 20 + length
    elif first == 1:
        size = 4 + length + (-length & 3)
    else:
        raise StunDecodeError("stream data is neither STUN nor ChannelData")
    return size if len(buffer) >= size else None
