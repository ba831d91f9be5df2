"""The test's own end of a TCP connection with an agent's ICE-TCP candidate or a TCP mux:
datagrams framed as ICE-TCP frames them (RFC 4571), for tests that play a hostile or unlucky
peer (``test_tcp_hostile.py``, ``test_tcpmux_hostile.py``)."""

from __future__ import annotations

import socket
import struct
from collections import deque
from typing import TypeVar

import trio

from trice import stun
from trice.ice._framing import FrameReader, frame

_P = TypeVar("_P", bound="FramedPeer")


class FramedPeer:
    """The test's end of one TCP connection: datagrams framed (RFC 4571)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._reader = FrameReader()
        self._queue: deque[bytes] = deque()

    @classmethod
    async def connect(
        cls: type[_P],
        address: tuple[str, int],
        *,
        rcvbuf: int | None = None,
        source: str | None = None,
    ) -> _P:
        """A connection to ``address`` (from ``source``, if given: another loopback
        address, say)."""
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:  # (before connecting: the window it offers stays small)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                await sock.bind((source, 0))
            await sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return cls(trio.SocketStream(sock))

    @classmethod
    async def accept(cls: type[_P], listener: trio.socket.SocketType) -> _P:
        sock, _ = await listener.accept()
        return cls(trio.SocketStream(sock))

    @property
    def agent_address(self) -> tuple[str, int]:
        """The agent's end, as this end sees it (a check's mapped address)."""
        name = self.stream.socket.getpeername()
        return (name[0], name[1])

    async def send(self, datagram: bytes) -> None:
        await self.stream.send_all(frame(datagram))

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are (a frame in pieces, or no frame at all)."""
        await self.stream.send_all(data)

    async def receive(self) -> bytes | None:
        """The next datagram; ``None`` once the other end closed (or reset) the connection."""
        while not self._queue:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self._queue.extend(self._reader.feed(data))
        return self._queue.popleft()

    async def answered(self, within: float = 5) -> None:
        """Read (and drop) what comes until a success answer (to a check of this end's: the
        agent read all that was sent before it)."""
        with trio.fail_after(within):
            while True:
                datagram = await self.receive()
                assert datagram is not None, "the agent closed the connection"
                if stun.decode(datagram).message_class is stun.MessageClass.SUCCESS:
                    return

    async def closed_by_agent(self) -> None:
        """Read (and drop) what comes, until the agent closes the connection."""
        while await self.receive() is not None:
            pass

    async def reset(self) -> None:
        """Close with a reset (SO_LINGER 0), as a crashed peer or a middlebox does."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def aclose(self) -> None:
        await self.stream.aclose()
