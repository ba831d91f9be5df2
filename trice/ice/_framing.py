"""Datagrams over a TCP connection, as ICE-TCP carries them (RFC 6544 §3): each one behind
a two-byte length in network order (RFC 4571 §2).

Pure: the shell feeds the bytes it reads to a :class:`FrameReader` and writes what
:func:`frame` gives.
"""

from __future__ import annotations

from typing import Final

from trice._errors import UsageError

__all__ = ["MAX_FRAME", "FrameReader", "frame"]

#: The longest datagram a frame carries (its length is 16 bits).
MAX_FRAME: Final = 0xFFFF


def frame(data: bytes | bytearray | memoryview) -> bytes:
    """``data`` behind its length (RFC 4571 §2).

    Raises:
        UsageError: ``data`` is longer than :data:`MAX_FRAME`.
    """
    size = len(data)
    if size > MAX_FRAME:
        raise UsageError(
            f"a datagram of {size} bytes is more than an ICE-TCP frame carries ({MAX_FRAME:,} "
            "bytes; keep to about 1,200, as over UDP)"
        )
    return size.to_bytes(2, "big") + bytes(data)


class FrameReader:
    """The datagrams in a stream of frames, as its bytes arrive in pieces of any size.

    Every length is valid (0 too: an empty datagram), so a stream is never out of step; at
    most one frame's bytes (65,537) wait here for the rest of it.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received of a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next bytes of the stream; return the datagrams they complete, in order."""
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        start = 0
        end = len(buffer)
        while end - start >= 2:
            size = (buffer[start] << 8) | buffer[start + 1]
            if end - start - 2 < size:
                break
            out.append(bytes(buffer[start + 2 : start + 2 + size]))
            start += 2 + size
        if start:
            del buffer[:start]
        return out
