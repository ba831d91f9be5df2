"""The TURN relay transport: the pure :class:`~trice.turn.TurnClient` over UDP, TCP or TLS.

:func:`run_relay` owns one connection to a TURN server and one allocation on it.  It is
started with ``await nursery.start(run_relay, ...)``, which returns the
:class:`RelayTransport` once the server granted a relayed address or raises
:class:`~trice.turn.AllocationError` (a :class:`~trice.TurnError`) when it did not.  It then
reads the server, runs the client's timers (refreshes, permissions, channels) and hands
relayed data to ``deliver``, until it is cancelled or the transport is closed; on the way out
it deletes the allocation (best effort, 0.5 s at most, or 2.5 round trips to a far server,
2 s at most: ``DEALLOCATE_WAIT``) and closes its socket.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import socket
import ssl
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from trice import stun
from trice._errors import ConfigError, ProtocolError
from trice._proxy import ProxyRefused, ProxyUrl, tunnel_handshake
from trice._servers import ServerUrl, host_port
from trice._trio._log import logger
from trice._trio._transport import READ_BATCH, bind_named, datagram_too_large
from trice.turn import AllocationError, StreamFramer, TurnClient, TurnState, TurnStatistics
from trice.turn._client import SEND_INDICATION

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["RelayTransport", "run_relay"]

Address = tuple[str, int]
Deliver = Callable[["RelayTransport", bytes, Address], None]

#: How long closing waits for the server to confirm the deallocation (RFC 8656 §8), at
#: least: from a far server (a round trip measured over UDP, see ``TurnClient.round_trip``),
#: two and a half round trips (for a 438 Stale Nonce and the deletion sent again), up to
#: ``DEALLOCATE_WAIT_MAX``.
DEALLOCATE_WAIT = 0.5
DEALLOCATE_WAIT_MAX = 2.0
#: The most a read of a TCP or TLS connection to the server takes.
STREAM_READ = 65536
#: The batches of ``READ_BATCH`` datagrams the relay's timer reads at most, before it
#: retransmits or gives up (see ``_timer_loop``).
TIMER_READ_BATCHES = 64
#: The longest datagram a relay carries: what fits a UDP datagram to the server (65,507
#: bytes) as a Send indication to an IPv6 peer (48 bytes more, and DATA's padding to a
#: multiple of 4), and so as ChannelData too.
RELAYED_MAX = 65_456
#: Bytes a TCP/TLS connection may hold unsent before ``send_nowait`` drops data.
STREAM_BUFFER_LIMIT = 1 << 20
#: Peer IPs whose refused permission a relay warns of (the others: DEBUG).
_REFUSALS_WARNED = 16
#: The most data a TCP/TLS connection's writer hands the stream at once (whole frames):
#: the client's requests and the agent's checks and answers waiting go before the next
#: piece, and the socket holds little unsent (trio's ``SocketStream`` sets
#: ``TCP_NOTSENT_LOWAT`` to 16 KiB: some 16-32 KiB, with the segment being filled).
STREAM_PIECE = 16 * 1024
#: How long a relay over UDP waits for a server's address to answer before it asks the
#: next, when the server's name stands for several (RFC 8305 §5's Connection Attempt
#: Delay; at once when one is refused; none once one answered).
ADDRESS_STAGGER = 0.25
#: The reasons of an allocation that failed with no answer from that address.
_NO_ANSWER = frozenset({"timeout", "unreachable"})


class _Lost(Exception):
    """The connection to the server failed; ``reason`` is a short word for the error (for a
    proxy's, what it did)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _UdpConnection:
    """A connected, non-blocking UDP socket to the server."""

    reliable = False

    def __init__(self, sock: socket.socket, server: tuple[Any, ...] | None = None) -> None:
        self.sock = sock
        self.server = server  # (its address, as connected to: see reconnect)
        self.source: str = sock.getsockname()[0].split("%", 1)[0]
        self.closed = False
        # (trio lets one task at a time wait for a socket to become writable: the sends
        # that wait for room take turns, as on a host socket.)
        self._writable = trio.Lock()

    def reconnect(self) -> None:
        """The system shut the socket down (SOCK_DESTROY, ``ss -K``: ECONNABORTED once,
        then EDESTADDRREQ to a send): it forgot the server, not its port, which was named
        in the bind (see ``bind_named``): it is connected to the server again, and the
        allocation's 5-tuple is the same."""
        if not self.closed and self.server is not None:
            with contextlib.suppress(OSError):
                self.sock.connect(self.server)

    def write(self, data: bytes) -> bool:
        try:
            self.sock.send(data)
        except OSError as exc:  # would block, ICMP errors, firewall EPERM: UDP drops
            if exc.errno in (errno.EDESTADDRREQ, errno.ECONNABORTED):
                self.reconnect()
            return False
        return True

    async def wait_writable(self) -> None:
        async with self._writable:
            if self.closed:  # (closed while this waited its turn: as a host socket's sends)
                raise trio.ClosedResourceError("the connection to the TURN server is closed")
            await trio.lowlevel.wait_writable(self.sock)

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()

    async def run_writer(self) -> None:
        await trio.sleep_forever()

    async def read(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                data: bytes | None = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None  # (waited on below: see Agent._read_until_change)
            except (ConnectionRefusedError, ConnectionResetError) as exc:
                # (An ICMP port unreachable: ECONNREFUSED, or on Windows WSAECONNRESET.)
                if out:
                    return out
                raise _Lost(f"unreachable ({exc.strerror or exc})", "unreachable") from exc
            except OSError as exc:
                if self.closed:
                    raise _Lost("closed", "closed") from exc
                if exc.errno == errno.ECONNABORTED:
                    self.reconnect()  # (see there)
                if out:
                    return out
                await trio.lowlevel.checkpoint()  # other ICMP errors: UDP carries on
                continue
            if data is None:
                if out:
                    return out
                await trio.lowlevel.wait_readable(self.sock)
                continue
            out.append(data)
            if len(out) >= READ_BATCH:
                return out

    def read_waiting(self) -> list[bytes]:
        """What the socket holds now, up to a batch, without waiting (see
        :meth:`RelayTransport.read_waiting`)."""
        out: list[bytes] = []
        recv = self.sock.recv
        for _ in range(READ_BATCH):
            try:
                out.append(recv(65536))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # (an ICMP error, before what came after it: the
                # reader passes over it too once allocated, as checks through it are)
                if exc.errno == errno.ECONNABORTED:
                    self.reconnect()
                continue
        return out

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
        await trio.lowlevel.checkpoint()


class _Tls:
    """TLS on the connection to a ``turns:`` server (RFC 8656 §3.1): an
    :class:`ssl.SSLObject` between two memory buffers, whose records the connection moves
    itself.  So a TLS connection is read as a plain TCP one is, what its socket holds now
    taken without waiting and framed (see :meth:`_StreamConnection.read_waiting`); trio's
    ``SSLStream`` reads only by waiting, in the task that reads."""

    def __init__(self, obj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO):
        self.obj = obj
        self.incoming = incoming
        self.outgoing = outgoing

    def receive(self, data: bytes | bytearray) -> tuple[bytes, _Lost | None]:
        """Decrypt ``data`` from the server (``b""``: the connection's end).  Returns the
        plaintext, and what ended the stream, if something did: the server's close_notify
        (closed), an end without it (lost), an alert (a TLS 1.3 server's refusal of the
        handshake comes once the client's side is done, say) or a bad record (``"tls"``,
        saying TLS's error).  Records the reads left to send (a TLS 1.3 KeyUpdate's answer)
        wait in ``outgoing``, for the writer."""
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        plain = bytearray()
        while True:
            try:
                chunk = self.obj.read(STREAM_READ)
            except ssl.SSLWantReadError:
                return bytes(plain), None
            except ssl.SSLZeroReturnError:  # (the server's close_notify)
                chunk = b""
            except ssl.SSLEOFError as exc:  # (an end without close_notify)
                lost = _Lost("connection to the server lost", "connection lost")
                lost.__cause__ = exc
                return bytes(plain), lost
            except ssl.SSLError as exc:  # (an alert; a record out of step)
                lost = _Lost(f"connection to the server lost (TLS: {exc.reason or exc})", "tls")
                lost.__cause__ = exc
                return bytes(plain), lost
            if not chunk:
                return bytes(plain), _Lost("the server closed the connection", "connection closed")
            plain += chunk

    def encrypt(self, data: bytes) -> bytes | None:
        """The records to send for ``data``, after those waiting (see :meth:`receive`);
        ``None`` while TLS cannot write before the server's next records come (the server
        began a renegotiation, TLS 1.2: the handshake's own records wait in ``outgoing``,
        and ``data`` is to be given again once more is read).

        Raises:
            _Lost: TLS cannot write (it is closed, say).
        """
        if data:
            try:
                self.obj.write(data)
            except ssl.SSLWantReadError:
                return None
            except ssl.SSLError as exc:
                raise _Lost(
                    f"connection to the server lost (TLS: {exc.reason or exc})", "tls"
                ) from exc
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """The close_notify record to send as the connection closes (nothing if TLS
        cannot make it)."""
        with contextlib.suppress(ssl.SSLError):
            self.obj.unwrap()
        return self.outgoing.read()


class _StreamConnection:
    """A TCP or TLS stream to the server, framed (RFC 8656 §12.5), with a writer buffer.
    ``stream`` carries TLS's records for ``tls``, if given."""

    reliable = True

    def __init__(self, stream: trio.abc.Stream, source: str, tls: _Tls | None = None) -> None:
        self.stream = stream
        self.source = source
        self.tls = tls
        self.framer = StreamFramer()
        #: What ended the stream (its end, an error, bytes out of step), raised by the
        #: reader once the frames before it are taken.
        self.broken: _Lost | None = None
        self._frames_ready: list[bytes] = []  # (framed, not yet taken)
        # Data waiting (whole frames, their sizes in order), and control frames waiting,
        # which go first: the client's requests, and the agent's checks and answers.
        self.pending = bytearray()
        self.sizes: deque[int] = deque()
        self.urgent = bytearray()
        self.wake = trio.Event()
        self.drained = trio.Event()
        self.sending = False  # a send_all is running (cancelling it breaks a TLS stream)
        self._reads = 0  # (reads taken so far: see _read_once, _sealed)
        self._reading = trio.Lock()  # (one task waits to read at a time: see _sealed)
        self._waiting: trio.CancelScope | None = None  # (that wait: see _read_now)
        self.send_scope: trio.CancelScope | None = None  # (the send_all running, shielded)
        self.ending = math.inf  # when the relay closes: the send_all running is cut then
        self.closed = False  # lost or closed: waiting senders are woken, and told

    def write(self, data: bytes) -> bool:
        """Queue ``data`` (one frame) if there is room.  Data fills its buffer up to
        ``STREAM_BUFFER_LIMIT``.  The agent's checks and their answers on a channel
        (ChannelData whose payload is STUN: consent must not starve behind data) and the
        client's own requests (a Refresh, a permission, a channel) go in a buffer of their
        own, written first (at the next frame's start), up to the limit too for the
        checks, twice it for the requests, a reserve nothing else reaches (over a stream a
        request lost here is never sent again, and a lost Refresh would end the
        allocation)."""
        if data[0] < 0x40:
            if stun.peek_type(data) == SEND_INDICATION:
                return self._queue(data)
            room = 2 * STREAM_BUFFER_LIMIT
        elif stun.is_stun(memoryview(data)[4:]):  # (ChannelData: its payload after 4 bytes)
            room = STREAM_BUFFER_LIMIT
        else:
            return self._queue(data)
        if len(self.urgent) + len(data) > room:
            return False
        self.urgent += data
        self.wake.set()
        return True

    def _queue(self, data: bytes) -> bool:
        """Queue data (a frame) behind the data waiting, if there is room."""
        if len(self.pending) + len(data) > STREAM_BUFFER_LIMIT:
            return False
        self.pending += data
        self.sizes.append(len(data))
        self.wake.set()
        return True

    async def wait_writable(self) -> None:
        """Wait while the writer's buffer is more than half full (a checkpoint either way).

        Raises:
            trio.ClosedResourceError: the connection is (or gets) lost or closed.
        """
        waited = False
        while len(self.pending) > STREAM_BUFFER_LIMIT // 2 and not self.closed:
            drained = self.drained
            if drained.is_set():  # (one event for every waiter: each is woken by the drain)
                drained = self.drained = trio.Event()
            await drained.wait()
            waited = True
        if self.closed:
            raise trio.ClosedResourceError("the connection to the TURN server is closed")
        if not waited:
            await trio.lowlevel.checkpoint()

    def _close_writers(self) -> None:
        """Lost or closed: wake the senders waiting for the buffer to drain."""
        self.closed = True
        self.drained.set()

    def end_by(self, deadline: float) -> None:
        """The relay is closing: a send_all running goes on until ``deadline`` at most."""
        self.ending = min(self.ending, deadline)
        if self.send_scope is not None:
            self.send_scope.deadline = self.ending

    async def flush(self) -> None:
        """Write what waits: the control frames first, then data a piece at a time
        (``STREAM_PIECE``), the control frames that came meanwhile before each piece.

        A piece, once begun, is written whole even when the relay is cancelled: cut,
        it would leave the stream out of step, with the data sent before it lost and no
        way to delete the allocation.  Closing bounds that wait (:meth:`end_by`)."""
        pending, sizes, urgent, tls = self.pending, self.sizes, self.urgent, self.tls
        while urgent or pending or (tls is not None and tls.outgoing.pending):
            if urgent:
                chunk = bytes(urgent)
                urgent.clear()
            elif pending:
                size = sizes.popleft()
                while sizes and size + sizes[0] <= STREAM_PIECE:
                    size += sizes.popleft()
                chunk = bytes(pending[:size])
                del pending[:size]
            else:
                chunk = b""  # (what TLS's reads left to send)
            if tls is not None:
                sealed = await self._sealed(tls, chunk)
                if sealed is None:
                    return  # (cut)
                chunk = sealed
            if not await self._write(chunk):
                return
            await trio.lowlevel.checkpoint_if_cancelled()
            if len(pending) <= STREAM_BUFFER_LIMIT // 2:
                self.drained.set()  # (room again: the sends waiting go on)
        self.drained.set()

    async def _sealed(self, tls: _Tls, chunk: bytes) -> bytes | None:
        """``chunk`` encrypted, once TLS can write it: while the server renegotiates (TLS
        1.2), the handshake's records go, and this waits for the server's next ones, as
        trio's SSLStream waits: read by the reader, or by this (the frames they carry are
        kept for the next :meth:`read`), whichever has its turn first (with no reader,
        closing, this).  The wait, as a write, goes on when the relay is cancelled, until
        closing's wait ends (:meth:`end_by`): the chunk, taken from its buffer, is not
        lost.  ``None``: cut then (see :meth:`_write`).

        Raises:
            _Lost: the connection is lost or closed meanwhile.
        """
        while (sealed := tls.encrypt(chunk)) is None:
            reads = self._reads
            if not await self._write(tls.outgoing.read()):
                return None
            with trio.CancelScope(shield=True, deadline=self.ending) as scope:
                self.send_scope = scope
                try:
                    # (Read while this wrote, or waited its turn: TLS may write now, or has
                    # records of the handshake to send, which the server waits for.)
                    if self._reads == reads and self.broken is None and not self.closed:
                        await self._read_once()
                finally:
                    self.send_scope = None
            if scope.cancelled_caught:
                await trio.lowlevel.checkpoint()  # (the relay's cancellation, at once)
                return None
            if self.broken is not None:
                raise self.broken  # (what ended it: TLS's error, say)
            if self.closed:
                raise _Lost("connection to the server lost", "connection lost")
        return sealed

    async def _write(self, data: bytes) -> bool:
        """Write ``data`` whole, even when the relay is cancelled (see :meth:`flush`), until
        closing's wait ends (:meth:`end_by`): whether it was written, not cut (then the
        stream is out of step for good, and the relay's cancellation is taken).

        Raises:
            _Lost: the connection is lost.
        """
        if not data:
            return True
        self.sending = True
        with trio.CancelScope(shield=True, deadline=self.ending) as scope:
            self.send_scope = scope
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._close_writers()
                raise _Lost("connection to the server lost", "connection lost") from exc
            finally:
                self.send_scope = None
        if scope.cancelled_caught:  # (cut as closing's wait ended: out of step for good)
            await trio.lowlevel.checkpoint()  # (the relay's cancellation, at once)
            return False
        self.sending = False
        return True

    async def run_writer(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            await self.flush()

    async def read(self) -> list[bytes]:
        """The whole frames the server sent next (waiting for them).

        Raises:
            _Lost: the connection is lost or closed, or its bytes are out of step.
        """
        while True:
            frames = self._taken()  # (framed already: by a read without waiting, say)
            if frames:
                return frames
            if self.broken is not None:  # (what ended the stream, its frames before it taken)
                raise self.broken
            await self._read_once()

    async def _read_once(self) -> None:
        """Wait for what the connection sends next, and take it (see :meth:`_ingest`); if
        another task waits to read (the reader, or the writer in :meth:`_sealed`), wait
        for it to have read, and take nothing (that task did).

        Raises:
            _Lost: the connection is lost or closed.
        """
        lock = self._reading
        try:
            lock.acquire_nowait()  # (not trio's acquire: it would yield first, uncontended)
        except trio.WouldBlock:
            reads = self._reads
            await lock.acquire()
            if self._reads != reads:  # (another task read meanwhile)
                lock.release()
                return
        try:
            await self._read_now()
        finally:
            lock.release()

    async def _read_now(self) -> None:
        sock = self._raw()
        if sock is None:  # (through a proxy's TLS, or on Windows: through the stream)
            try:
                data = await self.stream.receive_some(STREAM_READ)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise _Lost("connection to the server lost", "connection lost") from exc
            self._ingest(data)
            return
        # (The socket's bytes are taken and framed in one step, with no other task between,
        # as read_waiting takes them too: trio's receive_some lets other tasks run after its
        # recv, and bytes read meanwhile reached the framer first.)
        if sock.fileno() == -1:  # (closed: trio's wait would raise a ValueError)
            raise _Lost("connection to the server lost", "connection lost")
        # (A read without waiting that takes what came ends the wait: the socket, empty
        # again, would not wake it, and a write waiting for TLS's records would wait on.)
        with trio.CancelScope() as waiting:
            self._waiting = waiting
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError as exc:
                raise _Lost("connection to the server lost", "connection lost") from exc
            finally:
                self._waiting = None
        if not waiting.cancelled_caught:
            self._take_waiting(sock)

    def _raw(self) -> trio.socket.SocketType | None:
        """The socket of the connection, whose bytes this reads itself (``None`` through an
        HTTPS proxy, whose TLS is trio's, and on Windows, whose os.read takes no socket)."""
        stream = self.stream
        if sys.platform == "win32" or not isinstance(stream, trio.SocketStream):
            return None
        return stream.socket

    def _take_waiting(self, sock: trio.socket.SocketType) -> bool:
        """Read, decrypt and frame what the socket holds now (one read of ``STREAM_READ``
        at most), without waiting: the frames go to ``_frames_ready``; the end of the
        stream, an error or bytes out of step are kept, and raised by :meth:`read`.
        Returns whether the read took all it asked for (more may wait)."""
        if self.broken is not None:
            return False  # (the end taken already: by the reader, or a read without waiting)
        try:
            data = os.read(sock.fileno(), STREAM_READ)  # (non-blocking: trio's socket)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # (a reset: taken now, the socket would read as ended)
            self.broken = _Lost("connection to the server lost", "connection lost")
            self.broken.__cause__ = exc
            return False
        self._ingest(data)
        return len(data) == STREAM_READ

    def _ingest(self, data: bytes | bytearray) -> None:
        """Take ``data`` from the connection (``b""``: its end), through TLS if any."""
        self._reads += 1
        if self._waiting is not None:
            self._waiting.cancel()  # (taken by a read without waiting: see _read_now)
        tls = self.tls
        if tls is None:
            if data:
                self._feed(data)
            else:
                self.broken = _Lost("the server closed the connection", "connection closed")
            return
        plain, end = tls.receive(data)
        if plain:
            self._feed(plain)
        if end is not None and self.broken is None:
            self.broken = end
        if tls.outgoing.pending:
            self.wake.set()  # (for the writer)

    def _feed(self, data: bytes | bytearray) -> None:
        """Frame ``data`` (see :class:`~trice.turn.StreamFramer`): whole frames to
        ``_frames_ready``, then bytes out of step kept as the stream's end."""
        try:
            self._frames_ready += self.framer.feed(data)
            self.framer.feed(b"")  # (whole frames before bytes out of step come first)
        except stun.StunDecodeError as exc:
            why = f"the server's stream is out of step: {exc}"
            self.broken = _Lost(why, "garbled stream")

    def _taken(self) -> list[bytes]:
        frames, self._frames_ready = self._frames_ready, []
        return frames

    def read_waiting(self, reads: int = 1) -> list[bytes]:
        """What the connection holds now, framed, read without waiting (``reads`` reads
        of ``STREAM_READ`` at most), as the reader would (a check about to be given up,
        the relay's timer: see :meth:`RelayTransport.read_waiting`); what ends the stream
        (its end, an error, bytes out of step) is kept for the reader, and said in
        :attr:`broken`.  Through an HTTPS proxy nothing: the proxy's TLS is trio's, which
        the reader alone reads."""
        sock = self._raw()
        if sock is None or self.closed:
            return []
        for _ in range(reads):
            if not self._take_waiting(sock):
                break
        return self._taken()

    async def aclose(self) -> None:
        self._close_writers()
        if self.sending:
            await trio.aclose_forcefully(self.stream)
            return
        try:
            if self.tls is not None:
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, OSError
                ):
                    await self.stream.send_all(self.tls.close_notify())
        finally:
            await self.stream.aclose()


_Connection = _UdpConnection | _StreamConnection
#: An address of the server over UDP: its family, and the socket address.
_Target = tuple[int, tuple[Any, ...]]


class RelayTransport:
    """A relayed candidate's transport: sends go through the TURN server (RFC 8656).

    Implements the agent's ``Transport`` protocol; :attr:`local_address` is the relayed
    address.  Made by :func:`run_relay`, which also ends it.

    Attributes:
        base: the id the ICE core knows this transport by.
        local_address: the relayed transport address (XOR-RELAYED-ADDRESS).
        mapped_address: our address as the TURN server saw it (XOR-MAPPED-ADDRESS), a
            server-reflexive address, or ``None`` if the server did not say.
        server: the TURN server.
        error: why the allocation failed after it was granted (refresh refused, connection
            lost), or ``None``.
    """

    def __init__(
        self, base: int, server: ServerUrl, client: TurnClient, conn: _Connection, deliver: Deliver
    ) -> None:
        self.base = base
        self.server = server
        self.local_address: Address = ("0.0.0.0", 0)
        self.mapped_address: Address | None = None
        self.error: AllocationError | None = None
        self._client = client
        self._conn = conn
        self._deliver = deliver
        self._wake = trio.Event()
        self._armed: float | None = None
        self._settled = trio.Event()
        self._answered: Callable[[], None] | None = None  # (told once: see _relay_at)
        self._scope: trio.CancelScope | None = None
        self._closed = False
        self._probing: trio.Event | None = None  # set when the Refresh of probe() is over
        self._senders: set[trio.CancelScope] = set()  # (the sends waiting: see wake)
        self._refused: set[str] = set()  # (peer IPs whose refused permission was warned of)

    @property
    def source_address(self) -> str:
        """The local address the connection to the server leaves from (a relay is of use
        only while the machine still has it)."""
        return self._conn.source

    @property
    def state(self) -> TurnState:
        """The allocation's state."""
        return self._client.state

    @property
    def closed(self) -> bool:
        """Whether the transport was closed (by :meth:`close`, cancellation or failure)."""
        return self._closed

    def statistics(self) -> TurnStatistics:
        """The TURN client's counters."""
        return self._client.statistics()

    def send_nowait(self, data: bytes, address: Address, *, retry: bool = False) -> bool:
        """Relay *data* to *address* if it can go now (see
        :meth:`TurnClient.send_to_peer <trice.turn.TurnClient.send_to_peer>`); ``False``
        only if the connection to the server had no room for it: counted dropped in
        :attr:`TurnStatistics.dropped <trice.turn.TurnStatistics>`, unless the caller will
        wait for room and try again (``retry``).  Data the client refuses (no permission, a
        full queue) is dropped and counted, as a datagram lost on the way: waiting would
        not help, and ``True`` is returned.

        Raises:
            UsageError: *data* is longer than a relay carries (``RELAYED_MAX``).
        """
        if len(data) > RELAYED_MAX:
            raise datagram_too_large(data, relayed=True)
        if self._closed:
            return False
        client = self._client
        self._drain()  # (what was queued before: this datagram's frame, if any, comes next)
        client.send_to_peer(address, data, trio.current_time())  # (refused: counted)
        ok = self._drain(own=retry)
        if client.next_deadline() != self._armed:
            self._wake.set()
        return ok

    async def send(
        self, data: bytes, address: Address, check: Callable[[], None] | None = None
    ) -> None:
        """Relay *data*, waiting while the connection to the server is backed up (always a
        checkpoint); ``check``, called after the wait, raises to give up (see
        ``UdpTransport.send``).

        Raises:
            trio.ClosedResourceError: the transport is closed, or closes while waiting.
            UsageError: *data* is longer than a relay carries (``RELAYED_MAX``).
        """
        if len(data) > RELAYED_MAX:
            raise datagram_too_large(data, relayed=True)
        if self._closed:
            raise trio.ClosedResourceError("the relay transport is closed")
        while True:
            with trio.CancelScope() as scope:  # (cancelled by wake(): look at ``check``)
                self._senders.add(scope)
                try:
                    await self._conn.wait_writable()  # (raises if the connection closes)
                finally:
                    self._senders.discard(scope)
            if self._closed:
                raise trio.ClosedResourceError("the relay transport is closed")
            if check is not None:
                check()
            if not scope.cancelled_caught:
                break
        self.send_nowait(data, address)  # (no room still: dropped, counted)

    def read_waiting(self, batches: int = 1) -> None:
        """Take what the server's socket already holds (over UDP, or plain TCP), now, as
        the reader would, up to ``batches`` of ``READ_BATCH`` datagrams (of a stream,
        ``batches`` reads of ``STREAM_READ`` bytes): a check about to be sent again or
        given up looks for its answer first (see ``CheckRun._answered_meanwhile``), and so
        does the relay's timer, in all the socket holds (see ``_timer_loop``)."""
        conn = self._conn
        if isinstance(conn, _StreamConnection):
            if not self._closed:
                frames = conn.read_waiting(batches)
                if frames:
                    self._take(frames)
                if conn.broken is not None:  # (the reader, waiting, would not see it soon)
                    self._lost(conn.broken)
            return
        for _ in range(batches):
            if self._closed:
                return
            frames = conn.read_waiting()
            if frames:
                self._take(frames)
            if len(frames) < READ_BATCH:
                return

    def wake(self) -> None:
        """Wake the sends waiting for the connection to the server: they look at their
        connection again (its selected pair may have moved)."""
        for scope in self._senders:
            scope.cancel()

    async def probe(self) -> bool:
        """Whether the server still holds the allocation: a Refresh goes now (see
        :meth:`TurnClient.refresh_now <trice.turn.TurnClient.refresh_now>`), and this waits
        for its answer, or its timeout (39.5 s over UDP: the caller bounds the wait).  A
        refusal (437 Allocation Mismatch, from a server that lost the allocation or sees
        the client at another address now) closes the transport, as a failed refresh
        does."""
        if self._closed:
            return False
        if self._probing is None:
            self._probing = trio.Event()
        probing = self._probing
        self.refresh_now()
        await probing.wait()
        return not self._closed and self._client.state is TurnState.ALLOCATED

    def refresh_now(self) -> None:
        """Ask the server now whether it still holds the allocation, without waiting for
        the answer (see :meth:`probe`): a refusal closes the transport."""
        if not self._closed:
            self._client.refresh_now(trio.current_time())
            self._pump()
            self._wake.set()  # (the timer loop arms the Refresh's retransmissions)

    def close(self) -> None:
        """End :func:`run_relay`, which deletes the allocation and closes the connection.
        A :meth:`send` waiting for a backed-up connection raises ClosedResourceError."""
        if self._scope is not None:
            self._scope.cancel()
        self._closed = True
        self._wake_senders()
        self._probed()

    def _wake_senders(self) -> None:
        conn = self._conn
        if isinstance(conn, _StreamConnection):
            conn._close_writers()

    # --- inside run_relay ----------------------------------------------------------------

    def _drain(self, own: bool = False) -> bool:
        """Hand the connection what the client queued; returns whether all its data went
        (data that did not is dropped, and the client counts it so: see
        ``TurnClient.unsent``; a request that did not is left to its retransmissions, and
        says nothing of the data's fate).  With ``own``, the first data frame is the
        caller's datagram, which is not counted as dropped if it does not go (see
        :meth:`send_nowait`'s ``retry``)."""
        client = self._client
        conn = self._conn
        ok = True
        while (data := client.poll_transmit(0.0)) is not None:
            if not conn.write(data) and client.unsent(data, dropped=not (own and ok)):
                ok = False
        return ok

    def _probed(self) -> None:
        """Wake :meth:`probe`'s wait."""
        if self._probing is not None:
            self._probing.set()
            self._probing = None

    def _pump(self) -> None:
        """Send what the client queued and notice allocation, failure and the end of a
        probe's Refresh."""
        self._drain()
        client = self._client
        if self._probing is not None and not client.refreshing:
            self._probed()
        state = client.state
        if self._answered is not None and (client.challenged or state is TurnState.ALLOCATED):
            answered, self._answered = self._answered, None
            answered()
        if state is TurnState.ALLOCATED and not self._settled.is_set():
            assert client.relayed_address is not None
            self.local_address = client.relayed_address
            self.mapped_address = client.mapped_address
            self._settled.set()
        elif state is TurnState.FAILED:
            self._stop(client.error)
        if client.refusals:
            for ip, what in client.refusals.items():
                # (Once a peer IP at WARNING, for the first peers: a refused permission is
                # asked again, backing off to a minute, and a peer may name many IPs.)
                warned = ip in self._refused or len(self._refused) >= _REFUSALS_WARNED
                log = logger.debug if warned else logger.warning
                log(
                    "TURN %s: the server refused a permission for peer %s: %s",
                    self.server,
                    ip,
                    what,
                )
                if len(self._refused) < _REFUSALS_WARNED:
                    self._refused.add(ip)
            client.refusals.clear()

    def _stop(self, error: AllocationError | None) -> None:
        if error is not None and self.error is None:
            self.error = AllocationError(
                f"TURN server {self.server}: {error}",
                code=error.code,
                reason=error.reason,
                alternate_server=error.alternate_server,
            )
            self.error.__cause__ = error.__cause__
        self._settled.set()
        self._closed = True
        self._wake_senders()
        self._probed()
        if self._scope is not None:
            self._scope.cancel()

    def _take(self, frames: list[bytes]) -> None:
        """The server's frames to the client, and the data they carry to the agent."""
        client = self._client
        deliver = self._deliver
        now = trio.current_time()
        for frame in frames:
            for peer, data in client.on_server_data(frame, now):
                deliver(self, data, peer)
        self._pump()
        if client.next_deadline() != self._armed:
            self._wake.set()

    async def _read_loop(self) -> None:
        client = self._client
        while True:
            try:
                frames = await self._conn.read()
            except _Lost as exc:
                if exc.reason == "unreachable" and client.state is TurnState.ALLOCATED:
                    continue  # an ICMP error once allocated: UDP carries on, refreshes tell
                self._lost(exc)
                return
            self._take(frames)
            if len(frames) >= READ_BATCH:
                # (A full batch: more may wait, a flood's; the other tasks get their turn
                # first, as the agent's readers give it.)
                await trio.lowlevel.checkpoint()

    async def _timer_loop(self) -> None:
        client = self._client
        while True:
            deadline = self._armed = client.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                # What the socket holds first (over UDP), as a check looks for its answer
                # (CheckRun._answered_meanwhile): after a stall of the run, the answer to a
                # Refresh may wait there unread, its reader not having had its turn, and
                # the lifetime it renewed would be taken to have run out.  All of it (a
                # relay that carried media through the stall holds much of it: a default
                # receive buffer holds a few hundred datagrams).
                self.read_waiting(TIMER_READ_BATCHES)
                deadline = client.next_deadline()
                if deadline is not None and now >= deadline:
                    client.on_timer(now)
            self._pump()

    async def _write_loop(self) -> None:
        try:
            await self._conn.run_writer()
        except _Lost as exc:
            self._lost(exc)

    def drop_data(self) -> None:
        """Drop the data waiting to be written to the server over TCP or TLS (ICE failed:
        consent expired, and no data may go, RFC 7675 §5.1), counted as not sent; control
        messages (refreshes) still go.  (The frames start at the buffer's start: a flush
        takes whole frames.)"""
        conn = self._conn
        if isinstance(conn, _StreamConnection) and conn.pending:
            self._unsend(conn, conn.pending)
            conn.drained.set()

    def _unsend(self, conn: _StreamConnection, *waiting: bytearray) -> None:
        """Empty ``waiting``, buffers of ``conn``, their data counted as dropped, not sent
        (the frames start at the buffers' starts: a flush takes whole frames)."""
        for buffer in waiting:
            for frame in StreamFramer().feed(buffer):
                self._client.unsent(frame)
            buffer.clear()
        conn.sizes.clear()

    def _lost(self, exc: _Lost) -> None:
        """The connection failed: the relay stops.  A TCP or TLS connection took the
        allocation with it (the server deletes it), and the client is told so: nothing is
        sent to delete it."""
        error = AllocationError(str(exc), reason=exc.reason)
        error.__cause__ = exc  # (what TLS or the system said, if anything)
        self._stop(error)
        conn = self._conn
        if isinstance(conn, _StreamConnection):
            self._unsend(conn, conn.urgent, conn.pending)  # (what waits never goes)
            self._client.connection_lost(exc.reason)

    async def _shutdown(self, *, deallocate: bool) -> None:
        """Delete the allocation (best effort, RFC 8656 §8) and close the connection.

        With *deallocate* false (the allocation timed out before the server even challenged
        us, so nothing can have been allocated), nothing is sent or awaited.
        """
        self._closed = True
        client = self._client
        conn = self._conn
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _deallocate_wait(client)
            if isinstance(conn, _StreamConnection):
                conn.end_by(scope.deadline)
                scope.deadline = conn.ending
            try:
                stuck = isinstance(conn, _StreamConnection) and conn.sending
                if deallocate and not stuck:
                    await conn.flush()  # (the data sent before close goes before the deletion)
                    # (A no-op unless allocating or allocated; the wait's end: see there.)
                    client.close(trio.current_time(), until=scope.deadline)
                    self._drain()
                    await conn.flush()
                while client.state is TurnState.CLOSING:
                    deadline = client.next_deadline()
                    with trio.move_on_at(math.inf if deadline is None else deadline):
                        frames = await conn.read()
                        for frame in frames:
                            client.on_server_data(frame, trio.current_time())
                    if deadline is not None and trio.current_time() >= deadline:
                        client.on_timer(trio.current_time())
                    self._drain()
                    await conn.flush()
            except _Lost as exc:
                client.connection_lost(exc.reason)  # (closing: given up, closed)
            finally:
                await conn.aclose()
        logger.debug(
            "TURN %s: relay %s closed (%s)",
            self.server,
            host_port(*self.local_address),
            client.state,
        )


async def _udp_targets(server: ServerUrl, bind_address: str | None) -> list[_Target]:
    """The addresses of a server over UDP, in the resolver's order, each once (those of
    ``bind_address``'s family only, if given)."""
    try:
        infos = await trio.socket.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise _Lost(f"cannot resolve {server.host!r}: {exc}", "unresolvable") from exc
    if bind_address is not None:
        wanted = socket.AF_INET6 if ":" in bind_address else socket.AF_INET
        infos = [info for info in infos if info[0] == wanted]
        if not infos:
            raise _Lost(f"no address of {server.host!r} to reach from {bind_address}", "family")
    targets: list[_Target] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in targets:
            targets.append((family, sockaddr))
    return targets


async def _connect(
    server: ServerUrl,
    ssl_context: ssl.SSLContext | None,
    bind_address: str | None,
    proxy: ProxyUrl | None = None,
    in_tunnel: list[bool] | None = None,
    target: _Target | None = None,
) -> _Connection:
    """Open the connection to the server: UDP (to ``target``, an address of the server's),
    TCP, or TLS for ``turns:`` (RFC 8656 §3.1); TCP and TLS through
    ``proxy``'s tunnel, if given (``in_tunnel[0]`` is true while the proxy makes it: a
    timeout then is the proxy's)."""
    if server.transport == "udp":
        assert target is not None  # (resolved by run_relay: see _udp_targets)
        family, sockaddr = target
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:  # (out of descriptors; or a family the kernel lacks)
            raise _unreachable(exc) from exc
        try:
            sock.setblocking(False)
            if sys.platform == "linux":  # (a port named: see _UdpConnection.reconnect)
                any_address = "::" if family == socket.AF_INET6 else "0.0.0.0"
                bind_named(sock, any_address if bind_address is None else bind_address)
            elif bind_address is not None:
                sock.bind((bind_address, 0))
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            raise _unreachable(exc) from exc
        return _UdpConnection(sock, sockaddr)
    tcp: trio.abc.Stream
    if proxy is not None:
        if in_tunnel is not None:
            in_tunnel[0] = True
        tcp, source = await _tunnel(proxy, server, bind_address)
        if in_tunnel is not None:
            in_tunnel[0] = False
    else:
        try:
            direct = await trio.open_tcp_stream(
                server.host, server.port, local_address=bind_address
            )
        except socket.gaierror as exc:  # (a name no resolver knows)
            raise _Lost(f"cannot resolve {server.host!r}: {exc}", "unresolvable") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc
        tcp, source = direct, _source(direct)
    if not server.secure:
        return _StreamConnection(tcp, source)
    return _StreamConnection(tcp, source, await _tls_handshake(tcp, ssl_context, server.host))


_NO_DESCRIPTOR = (errno.EMFILE, errno.ENFILE)


def _out_of_descriptors(exc: BaseException) -> bool:
    """Whether ``exc`` is, or came of, running out of file descriptors: trio's
    ``open_tcp_stream`` raises an OSError of its own, without an errno, whose cause is
    a group of each attempt's error."""
    if isinstance(exc, OSError) and exc.errno in _NO_DESCRIPTOR:
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_out_of_descriptors(leaf) for leaf in exc.exceptions)
    cause = exc.__cause__
    return cause is not None and _out_of_descriptors(cause)


def _unreachable(exc: OSError) -> _Lost:
    """The server cannot be reached from here: ``exc`` from making, binding or connecting
    the socket (or the process ran out of file descriptors, which says so)."""
    if _out_of_descriptors(exc):
        return _Lost(
            "out of file descriptors: raise the limit (ulimit -n / resource.setrlimit) or run "
            "fewer agents",
            "out of file descriptors",
        )
    return _Lost(f"unreachable ({exc.strerror or exc})", "unreachable")


def _source(sock: trio.SocketStream) -> str:
    """The local address of a TCP connection (without a zone index)."""
    address: str = sock.socket.getsockname()[0]
    return address.split("%", 1)[0]


#: The system's authorities, loaded once a process (see :func:`_default_tls_context`).
_default_context: ssl.SSLContext | None = None


async def _default_tls_context() -> ssl.SSLContext:
    """The TLS context a server or proxy is checked with when none is given: the system's
    authorities (:func:`ssl.create_default_context`), loaded once a process, in a worker
    thread (reading and parsing them takes tens of milliseconds, which every task of the
    process would otherwise wait out at each connection)."""
    global _default_context
    if _default_context is None:
        _default_context = await trio.to_thread.run_sync(ssl.create_default_context)
    return _default_context


async def _context_for(
    stream: trio.abc.Stream, ssl_context: ssl.SSLContext | None, lost: Callable[[str, str], _Lost]
) -> ssl.SSLContext:
    """``ssl_context``, else the system's authorities (:func:`_default_tls_context`);
    cancelled as those load, or if they cannot be (a malformed bundle, a store the process
    may not read: ``lost(what, "tls")`` then, this server's failure, not the agent's),
    ``stream`` is closed."""
    try:
        return ssl_context if ssl_context is not None else await _default_tls_context()
    except Exception as exc:
        await trio.aclose_forcefully(stream)
        raise lost(
            f"TLS cannot start: the system's authorities cannot be loaded ({exc})", "tls"
        ) from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _tls(
    stream: trio.abc.Stream,
    ssl_context: ssl.SSLContext | None,
    hostname: str,
    lost: Callable[[str, str], _Lost],
    *,
    https_compatible: bool = False,
) -> trio.SSLStream[trio.abc.Stream]:
    """``stream`` with TLS on it, the peer's certificate checked against ``hostname``
    (``ssl_context``, else the system's authorities).  A failed handshake closes ``stream``
    and raises ``lost(what, reason)``: reason ``"certificate"`` or ``"tls"``."""
    context = await _context_for(stream, ssl_context, lost)
    try:
        tls = trio.SSLStream(
            stream, context, server_hostname=hostname, https_compatible=https_compatible
        )
    except (ssl.SSLError, ValueError) as exc:  # (a context that makes no client: see IceServer)
        await trio.aclose_forcefully(stream)
        raise lost(f"TLS cannot start: {exc}", "tls") from exc
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        raise _handshake_failed(exc.__cause__ or exc, lost) from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


def _handshake_failed(cause: BaseException, lost: Callable[[str, str], _Lost]) -> _Lost:
    """A TLS handshake failed of ``cause``: reason ``"certificate"`` or ``"tls"``."""
    if isinstance(cause, ssl.SSLCertVerificationError):
        return lost(f"TLS certificate rejected: {cause.verify_message or cause}", "certificate")
    return lost(f"TLS handshake failed: {cause}", "tls")


async def _tls_handshake(
    stream: trio.abc.Stream, ssl_context: ssl.SSLContext | None, hostname: str
) -> _Tls:
    """TLS with a ``turns:`` server on ``stream`` (see :class:`_Tls`), its certificate
    checked as :func:`_tls` checks it, and with the same errors.  (Nothing the server sends
    can follow the handshake's records in the reads made here but TLS's own: it speaks only
    once asked, and nothing is asked before.)"""
    context = await _context_for(stream, ssl_context, _Lost)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        obj = context.wrap_bio(incoming, outgoing, server_hostname=hostname)
    except (ssl.SSLError, ValueError) as exc:  # (a context that makes no client: see IceServer)
        await trio.aclose_forcefully(stream)
        raise _Lost(f"TLS cannot start: {exc}", "tls") from exc
    try:
        while True:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            if outgoing.pending:
                await stream.send_all(outgoing.read())
            if done:
                return _Tls(obj, incoming, outgoing)
            data = await stream.receive_some(STREAM_READ)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()
    except ssl.SSLError as exc:
        await trio.aclose_forcefully(stream)
        raise _handshake_failed(exc, _Lost) from exc
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        await trio.aclose_forcefully(stream)
        raise _handshake_failed(exc, _Lost) from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _tunnel(
    proxy: ProxyUrl, server: ServerUrl, bind_address: str | None
) -> tuple[trio.abc.Stream, str]:
    """A TCP connection to ``proxy`` (with TLS on it, for an HTTPS proxy), made a tunnel to
    ``server`` (HTTP CONNECT or SOCKS5: see :mod:`trice._proxy`): what goes over it
    afterwards reaches the server.  Returns it, and its local address.  The proxy's errors
    have a reason that begins with ``"proxy"`` and says what it did: it cannot be reached,
    its TLS fails (``"proxy TLS certificate rejected: ..."``), it refuses (an HTTP status that
    is not 2xx, such as 407 when it wants credentials, 403 when its rules forbid the
    server's port, 502 when it cannot reach the server; or a SOCKS5 refusal), closes, or
    answers in another protocol."""

    def lost(what: str) -> _Lost:
        return _Lost(f"proxy {proxy}: {what}", f"proxy {what}")

    handshake = tunnel_handshake(proxy, server.host, server.port)
    try:
        sock = await trio.open_tcp_stream(proxy.host, proxy.port, local_address=bind_address)
    except OSError as exc:
        if _out_of_descriptors(exc):
            raise _unreachable(exc) from exc  # (this process's want, not the proxy's)
        raise lost(f"unreachable ({exc.strerror or exc})") from exc
    source = _source(sock)
    stream: trio.abc.Stream = sock
    if proxy.scheme == "https":
        stream = await _tls(
            sock, proxy.ssl_context, proxy.host, lambda what, _: lost(what), https_compatible=True
        )
    try:
        await stream.send_all(handshake.start())
        while not handshake.open:
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise lost("closed the connection")
            reply = handshake.receive_data(bytes(chunk))
            if reply:
                await stream.send_all(reply)
        if handshake.rest:
            raise lost("sent data before the tunnel was used")
    except ProxyRefused as exc:
        await trio.aclose_forcefully(stream)
        raise lost(f"refused: {exc}") from exc
    except ProtocolError as exc:
        await trio.aclose_forcefully(stream)
        raise lost(f"answered {exc}") from exc
    except (OSError, trio.BrokenResourceError) as exc:
        await trio.aclose_forcefully(stream)
        raise lost(f"connection lost ({exc})") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream, source


def _deallocate_wait(client: TurnClient) -> float:
    """How long closing waits for the deletion's answer (see ``DEALLOCATE_WAIT``)."""
    far = client.round_trip
    if far is None:
        return DEALLOCATE_WAIT
    return max(DEALLOCATE_WAIT, min(DEALLOCATE_WAIT_MAX, 2.5 * far))


async def _bound_on_end(conn: _StreamConnection) -> None:
    """Wait for the relay's end (cancelled or closed), then bound the write running then:
    it goes on for the deallocation's wait at most (see :meth:`_StreamConnection.flush`)."""
    try:
        await trio.sleep_forever()
    finally:
        conn.end_by(trio.current_time() + DEALLOCATE_WAIT)


async def run_relay(
    server: ServerUrl,
    username: str,
    credential: str,
    *,
    base: int,
    deliver: Deliver,
    ssl_context: ssl.SSLContext | None = None,
    lifetime: int = 600,
    timeout: float = 3.0,  # noqa: ASYNC109 (bounds the allocation only; runs until cancelled)
    bind_address: str | None = None,
    proxy: ProxyUrl | None = None,
    owner: Callable[[], str] | None = None,
    task_status: trio.TaskStatus[RelayTransport] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Allocate a relayed address on *server* and serve it until cancelled (RFC 8656).

    Start it with ``transport = await nursery.start(run_relay, server, user, password,
    base=..., deliver=...)``.  Allocation (connection, TLS handshake, the 401 challenge and
    the authenticated Allocate) must finish within *timeout* seconds (what a challenged
    server may have granted by then is deleted; a server that asks no credentials, RFC 8155
    §9, and grants after the timeout keeps its grant for its lifetime: waiting on every
    silent server for it would make each timeout longer).  Afterwards
    ``deliver(transport, data, peer)`` is called, from the reading task, for each datagram a
    peer sent through the relay.

    Over UDP, a server whose name stands for several addresses (both families, say) is
    asked at each in turn, as RFC 8656 §3.9 (after RFC 8305) would have it: in the
    resolver's order, the families taking turns, the next once those asked are silent for
    ``ADDRESS_STAGGER`` or one was refused by the network (none once the timeout
    passed); the first address to answer
    (its challenge) is the one, and the others are given up (what they may have made is
    deleted: one given up unheard is waited for, ``DEALLOCATE_WAIT`` at most, in case a
    server that asks no credentials granted it, and a refusal of the race comes that much
    later).  A server's refusal (401, say) is final.  (Over TCP and TLS, trio's
    ``open_tcp_stream`` tries each.)

    Ends when cancelled or when :meth:`RelayTransport.close` is called, after deleting the
    allocation (a Refresh with LIFETIME 0, waiting at most 0.5 s for the answer, or longer
    for a far server, see ``DEALLOCATE_WAIT``) and closing
    the connection.  If the allocation fails once granted (refresh refused, connection lost),
    the transport closes, :attr:`RelayTransport.error` says why, a warning is logged and this
    returns normally.

    Args:
        server: a ``turn:`` or ``turns:`` URL (``turns:`` with TCP: TLS).
        username, credential: the long-term credentials (RFC 8489 §9.2).
        base: the id of the transport for the ICE core.
        deliver: called with ``(transport, data, peer)`` for each relayed datagram.
        ssl_context: for ``turns:``; by default :func:`ssl.create_default_context`, which
            verifies the server's certificate against the system's CAs and its name.
        lifetime: the allocation lifetime to ask for, in seconds.
        timeout: seconds allowed for the whole allocation.
        bind_address: a local IP address to send from (for a relay per interface).
        proxy: a proxy to reach a TCP or TLS server through (HTTP CONNECT or SOCKS5);
            UDP servers are reached directly.
        owner: who the relay is for (an agent's ufrag, as it is when asked), the start of
            the warning logged when the allocation ends on its own.

    Raises:
        AllocationError: before the transport is handed out, naming the server and the
            reason: ``reason`` is ``"timeout"``, ``"unreachable"``, ``"unresolvable"``,
            ``"family"``, ``"out of file descriptors"``, ``"certificate"``, ``"tls"``,
            ``"connection lost"``/``"connection closed"``, or the server's reason phrase
            with ``code`` (401 wrong credentials, 438 stale nonce loop, 300 with
            ``alternate_server``, 486 quota...); through a proxy, what the proxy did,
            after ``"proxy "`` (``"proxy refused: 407 Proxy Authentication Required"``,
            ``"proxy unreachable (...)"``...).
        ConfigError: *server* is not a TURN URL, or asks for DTLS (``turns:`` over UDP).
    """
    if not server.is_turn:
        raise ConfigError(f"{server} is not a TURN server URL")
    if server.secure and server.transport == "udp":
        raise ConfigError(f"{server}: TURN over DTLS (RFC 7350) is not supported")
    label = f"TURN server {server}"
    deadline = trio.current_time() + timeout
    relay_at = functools.partial(
        _relay_at,
        server,
        username,
        credential,
        base=base,
        deliver=deliver,
        ssl_context=ssl_context,
        lifetime=lifetime,
        timeout=timeout,
        deadline=deadline,
        bind_address=bind_address,
        proxy=proxy,
        owner=owner,
    )
    if server.transport != "udp":
        await relay_at(None, task_status=task_status)
        return
    targets: list[_Target] = []
    with trio.move_on_at(deadline):
        try:
            targets = await _udp_targets(server, bind_address)
        except _Lost as exc:
            raise AllocationError(f"{label}: {exc}", reason=exc.reason) from exc
    if not targets:
        raise AllocationError(f"{label}: no connection within {timeout} s", reason="timeout")
    if len(targets) == 1:
        await relay_at(targets[0], task_status=task_status)
    else:
        await _first_answered(server, targets, deadline, relay_at, task_status)


async def _first_answered(
    server: ServerUrl,
    targets: list[_Target],
    deadline: float,
    relay_at: Callable[..., Awaitable[None]],
    task_status: trio.TaskStatus[RelayTransport],
) -> None:
    """:func:`run_relay`'s race over a server's several addresses over UDP (see there):
    ``relay_at(target, answered=..., task_status=...)`` asks one.  None is asked once the
    allocation's ``deadline`` has passed (the attempts that time out then would have asked
    the rest at once, past the timeout: a grant there, unchallenged, was left behind)."""
    # (Each address is asked by a task of its own, in this task's nursery: the first to
    # be answered is the one (RFC 8656 §3.9), the others are cancelled, and end there,
    # deleting what they may have; the relay granted goes on there.)
    granted: list[RelayTransport] = []
    errors: list[AllocationError] = []
    failed: list[AllocationError] = []  # (what the race ended with, if no relay)
    decided = trio.Event()  # (granted, or refused, or every address failed)
    news = [trio.Event()]  # (an attempt was answered or ended: asked next, or no more)
    attempts: list[trio.CancelScope] = []
    chosen: list[trio.CancelScope] = []
    asking = [True]  # (until every address is asked, or the deadline passed)

    def answered(scope: trio.CancelScope) -> None:
        """The attempt of ``scope`` was answered (challenged, or granted) first."""
        if not chosen:
            chosen.append(scope)
            for other in attempts:
                if other is not scope:
                    other.cancel()
            news[0].set()

    async with trio.open_nursery() as serving:

        async def attempt(target: _Target, scope: trio.CancelScope) -> None:
            with scope:
                try:
                    relay = await serving.start(
                        functools.partial(relay_at, target, answered=lambda: answered(scope))
                    )
                except AllocationError as exc:
                    errors.append(exc)
                    if chosen[0] is scope if chosen else exc.reason not in _NO_ANSWER:
                        failed.append(exc)  # (the server answered: that is final)
                    elif not chosen and not asking[0] and len(errors) == len(attempts):
                        failed.append(errors[0])  # (none answered: the first that came)
                    if failed:
                        decided.set()
                else:
                    if chosen[0] is not scope:
                        relay.close()  # (granted as another, answered first, was chosen)
                    else:
                        granted.append(relay)
                        decided.set()
                news[0].set()

        for number, target in enumerate(_interleaved(targets)):
            if number and trio.current_time() >= deadline:
                break
            if number:
                logger.debug("TURN %s: asking its next address, %s", server, target[1][0])
            news[0] = trio.Event()
            attempts.append(trio.CancelScope())
            serving.start_soon(attempt, target, attempts[-1])
            with trio.move_on_after(ADDRESS_STAGGER):
                await news[0].wait()
            if decided.is_set() or chosen:
                break
        asking[0] = False
        if not decided.is_set() and not chosen and len(errors) == len(attempts):
            failed.append(errors[0])  # (every address asked failed already)
            decided.set()
        await decided.wait()
        for other in attempts:
            other.cancel()
        if granted:
            task_status.started(granted[0])
            return
    raise failed[0]


def _interleaved(targets: list[_Target]) -> list[_Target]:
    """A server's addresses in the resolver's order, the families taking turns (RFC 8305
    §4: with one family's path broken, the other's first address comes second)."""
    first = [t for t in targets if t[0] == targets[0][0]]
    other = [t for t in targets if t[0] != targets[0][0]]
    turns: list[_Target] = []
    for number in range(max(len(first), len(other))):
        turns += first[number : number + 1] + other[number : number + 1]
    return turns


async def _relay_at(
    server: ServerUrl,
    username: str,
    credential: str,
    target: _Target | None,
    *,
    base: int,
    deliver: Deliver,
    ssl_context: ssl.SSLContext | None,
    lifetime: int,
    timeout: float,  # noqa: ASYNC109 (for the messages: the deadline bounds it)
    deadline: float,
    bind_address: str | None,
    proxy: ProxyUrl | None,
    owner: Callable[[], str] | None,
    answered: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[RelayTransport] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`run_relay` over one connection: to ``target`` over UDP (an address of the
    server's); ``answered`` is called once the server first answers (its challenge, or a
    grant)."""
    client = TurnClient(username, credential, reliable=server.transport == "tcp", lifetime=lifetime)
    label = f"TURN server {server}"
    started = False
    relay: RelayTransport | None = None
    in_tunnel = [False]
    with trio.move_on_at(deadline) as connect_scope:
        try:
            conn = await _connect(server, ssl_context, bind_address, proxy, in_tunnel, target)
        except _Lost as exc:
            raise AllocationError(f"{label}: {exc}", reason=exc.reason) from exc
    if connect_scope.cancelled_caught:
        if in_tunnel[0]:
            raise AllocationError(
                f"{label}: no tunnel from proxy {proxy} within {timeout} s", reason="proxy timeout"
            )
        raise AllocationError(f"{label}: no connection within {timeout} s", reason="timeout")
    relay = RelayTransport(base, server, client, conn, deliver)
    relay._answered = answered
    try:
        async with trio.open_nursery() as nursery:
            relay._scope = nursery.cancel_scope
            nursery.start_soon(relay._read_loop)
            nursery.start_soon(relay._timer_loop)
            nursery.start_soon(relay._write_loop)
            client.start(trio.current_time())
            relay._pump()
            if isinstance(conn, _StreamConnection):
                nursery.start_soon(_bound_on_end, conn)
            with trio.move_on_at(connect_scope.deadline):
                await relay._settled.wait()
            if not relay._settled.is_set():
                # (After a stall of the loop the answer may wait in the socket, its reader
                # woken with this deadline: it runs before this task's next turn.)
                await trio.lowlevel.checkpoint()
            if client.state is TurnState.ALLOCATED and not relay._closed:
                logger.debug(
                    "TURN %s: relayed %s, mapped %s, lifetime %s s",
                    server,
                    relay.local_address,
                    relay.mapped_address,
                    client.lifetime,
                )
                started = True
                task_status.started(relay)
            elif relay.error is None and client.answered_unverified:
                why = "response failed the integrity check"
                relay.error = AllocationError(
                    f"{label}: TURN Allocate failed: {why} (no other answer within {timeout} s)",
                    reason=why,
                )
                nursery.cancel_scope.cancel()
            elif relay.error is None:
                relay.error = AllocationError(
                    f"{label}: no allocation within {timeout} s", reason="timeout"
                )
                nursery.cancel_scope.cancel()
            else:
                nursery.cancel_scope.cancel()
    finally:
        # After a timeout too, once the server has challenged us: the authenticated
        # Allocate may still be granted, and the allocation must not be left behind.
        await relay._shutdown(deallocate=started or relay.error is None or client.challenged)
    if relay.error is not None:
        if not started:
            raise relay.error
        logger.warning(
            "%s%s (relayed %s)",
            f"{owner()}: " if owner is not None else "",
            relay.error,
            host_port(*relay.local_address),
        )
