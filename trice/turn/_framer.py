"""Cutting a TCP or TLS byte stream from a TURN server into whole messages (RFC 8656 §12.5)."""

from __future__ import annotations

from ..stun import StunDecodeError, frame_length

__all__ = ["StreamFramer"]


class StreamFramer:
    """Accumulate bytes read from a stream and hand out whole frames (RFC 8656 §12.5).

    Over TCP and TLS, STUN messages follow one another with no separator (RFC 8489 §6.2.2)
    and so do ChannelData messages, each padded to a multiple of 4 bytes (RFC 8656 §12.5).
    The first two bits of a frame say which it is and bytes 2..3 hold its length
    (:func:`trice.stun.frame_length`).  Feed whatever a read returned; get back the frames it
    completed, in order, ChannelData padding included (the decoders accept it)::

        framer = StreamFramer()
        for frame in framer.feed(await stream.receive_some()):
            peer_data = client.on_server_data(frame, now)

    Raises (from :meth:`feed`):
        StunDecodeError: the stream holds something that is neither STUN nor ChannelData: it
            is out of step and can only be closed.  Whole frames before it in one read are
            returned first, and the next call raises (``feed(b"")`` asks at once).
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        # (A bytearray, grown in place: a frame that comes a byte at a time costs a byte's
        # work a read, where a bytes buffer copied all of it each time.)
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete frame are waiting for the rest."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add *data* and return every frame now complete (RFC 8656 §12.5).

        Raises:
            StunDecodeError: the stream is out of step (see the class docstring); the framer
                keeps the offending bytes and raises again on the next call.
        """
        buffer = self._buffer
        try:
            buffer += data
        except TypeError:  # (a memoryview that is not contiguous: its bytes, in order)
            buffer += memoryview(data).tobytes()
        frames: list[bytes] = []
        start = 0
        try:
            with memoryview(buffer) as view:
                end = len(buffer)
                while start < end:
                    # (Each view let go at once, on an error too: the buffer is resized
                    # below, which a view still held would forbid.)
                    with view[start:] as rest:
                        size = frame_length(rest)
                    if size is None:
                        break
                    frames.append(bytes(view[start : start + size]))
                    start += size
        except StunDecodeError:
            if not frames:
                raise
            # (The whole frames before the bytes out of step are returned; the next call
            # raises, the offending bytes kept.)
        finally:
            if start:
                del buffer[:start]
        return frames
