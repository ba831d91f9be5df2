"""``Connection``: the selected pair as a :class:`trio.abc.Channel` of datagrams."""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import trio

from trice._errors import UsageError
from trice._trio._mux import MuxTransport
from trice._trio._relay import RelayTransport
from trice._trio._tcp import TcpTransport
from trice._trio._transport import STUN_MAGIC, Transport, UdpTransport
from trice.ice._events import CandidatePair, ConnectionState

if TYPE_CHECKING:
    from trice._trio._agent import Agent

__all__ = ["LOST_REASONS", "Connection", "Lost", "ReceiveBuffer"]

#: Datagrams a receive loop reads one at a time in a row, the socket never running dry, before
#: a read takes a batch (see ``Connection._streak``).
_STREAK = 64
_FAILED = ConnectionState.FAILED
_DISCONNECTED = ConnectionState.DISCONNECTED
_AF_INET6 = socket.AF_INET6
#: What :meth:`Agent.connect` hands :class:`Connection`'s constructor: a connection built
#: elsewhere would be a second one beside the agent's own, which ``connect()`` never returns.
_OPENING = object()


class ReceiveBuffer:
    """Received datagrams waiting for :meth:`Connection.receive`.

    Bounded: when full, the newest datagram is dropped and counted (UDP semantics), so a
    reader that falls behind never holds up the sender.  STUN behind data in the kernel
    waits for the next read to reach it: a batch reads 64 at a time, dropping what this
    has no room for, a receive loop one (see ``Agent._drain`` and the data guide).
    """

    __slots__ = ("closed", "dropped", "lot", "maxlen", "queue", "turn", "waiting_on")

    def __init__(self, maxlen: int) -> None:
        # The queue and the parking lot are made when first needed: an agent that never
        # carries data (or not yet) does not pay for them, and there may be thousands.
        self.queue: deque[bytes] | None = None
        self.maxlen = maxlen
        self.dropped = 0
        self.lot: trio.lowlevel.ParkingLot | None = None
        # No more data is queued: the agent closed, or ICE failed (until a restart).
        self.closed = False
        # The socket a receiver waits on itself, while it does (see ``nudge``).
        self.waiting_on: socket.socket | None = None
        # The parked receive woken to wait on the socket next, till it runs: the receives
        # in a loop take the socket in turn, as trio's memory channels serve them.
        self.turn: trio.lowlevel.Task | None = None

    def make_queue(self) -> deque[bytes]:
        """The queue, made now if it was not yet."""
        if self.queue is None:
            self.queue = deque()
        return self.queue

    def put(self, data: bytes) -> bool:
        """Queue ``data``, or drop and count it if the buffer is full; returns whether it was
        queued."""
        queue = self.queue if self.queue is not None else self.make_queue()
        if len(queue) >= self.maxlen:
            self.dropped += 1
            return False
        queue.append(data)
        self.wake()
        return True

    def wake(self) -> None:
        """Data was queued: wake one parked receiver, or the one waiting on a socket."""
        lot = self.lot
        if lot:
            lot.unpark()
        if self.waiting_on is not None:
            self.nudge()

    def pass_turn(self) -> None:
        """Give the first receive waiting for a datagram handed over its turn on the socket
        (see ``turn``), unless one has it."""
        lot = self.lot
        if lot and self.turn is None:
            for task in lot.unpark():
                self.turn = task

    def nudge(self) -> None:
        """Wake the receiver that waits on a socket itself: data came some other way
        (another socket's reader, a relay), or the connection closed.

        :func:`trio.lowlevel.notify_closing` wakes the tasks waiting on a socket with
        :class:`trio.ClosedResourceError` without closing it (trio registers the socket again
        at the next wait); the receiver takes that as "look again".  A cancel scope around
        every wait would do the same, at a cost of several microseconds per datagram."""
        sock = self.waiting_on
        if sock is not None:
            self.waiting_on = None
            trio.lowlevel.notify_closing(sock)

    def close(self) -> None:
        self.closed = True
        if self.lot is not None:
            self.lot.unpark_all()
        self.nudge()


class Connection(trio.abc.Channel[bytes]):
    """A connected ICE path that carries datagrams: ``send``, ``receive``, ``aclose``, and
    ``async for data in conn``.

    Each :meth:`send` is one datagram to the peer over the selected pair, each
    :meth:`receive` one datagram from it (message boundaries are kept; nothing is
    retransmitted).  If ICE selects a better pair later, sends follow it.  After the agent
    or the connection closes, both raise :class:`trio.ClosedResourceError`.

    If the peer's consent expires (no answer to consent checks for ``failed_timeout``, or
    30 s if that is less: the peer is gone, or the path broke; the state becomes
    ``failed``), RFC 7675 forbids sending
    more: :meth:`send` raises :class:`trio.BrokenResourceError`, and so does :meth:`receive`
    once it has returned what had arrived (a receive waiting then is woken with it); what
    the peer still sends is dropped, until an ICE restart.  While only ``disconnected``,
    both go on: consent may come back.

    During an ICE restart (:meth:`Agent.restart <trice.Agent.restart>`) both go over the
    pair selected before, while its consent lasts; when no pair carries data they raise
    :class:`trio.BrokenResourceError` in the same way, until the new checks select a pair,
    which the connection then uses.

    Made by :meth:`Agent.connect <trice.Agent.connect>`; not built directly (that raises
    :class:`~trice.UsageError`).

    Several tasks may use one connection at once, as trio's memory channels allow: each
    datagram received goes to one of the tasks waiting in :meth:`receive`, and sends from
    several tasks each go as they come.  (:meth:`Agent.connect <trice.Agent.connect>` may
    be awaited by several tasks too: all get this same connection.)
    """

    def __init__(self, agent: Agent, *, _key: object = None) -> None:
        if _key is not _OPENING:
            raise UsageError(
                "a trice.Connection is returned by Agent.connect(), not built directly"
            )
        self._agent = agent
        self._buffer = agent._buffer
        # The core's own dict of remote addresses, kept up to date (see ``_is_data``).
        self._remotes = agent._core.remote_addresses
        self._closed = False
        # (transport, remote address), looked up once per selected pair: the send path is
        # hot.  When the transport is a host socket, ``_udp`` is it and ``_sendto`` its
        # ``sendto``, so that a send or receive costs no lookup; all three are ``None`` again
        # (``_reroute``) when the pair changes, the agent closes or consent expires.
        self._route: tuple[Transport, tuple[str, int]] | None = None
        self._udp: UdpTransport | None = None
        self._sendto: Callable[[bytes, tuple[str, int]], int] | None = None
        self._to: tuple[str, int] = ("", 0)
        # Datagrams the fast path has read in a row without the socket running dry: past
        # _STREAK the reader is behind a backlog, and reads take batches until the socket
        # runs dry (so STUN in the backlog is answered soon, not when a slow reader reaches
        # it, and a backlog costs less to read).  ``receive_nowait`` sets it to _STREAK: a
        # reader that takes queued datagrams that way gets a batch (up to 64) queued by the
        # next receive that reads the socket; a plain receive loop gets one datagram a read.
        self._streak = 0
        self._datagrams_sent = 0  # (see Agent.statistics)
        self._bytes_sent = 0

    @property
    def selected_pair(self) -> CandidatePair:
        """The pair data goes over now (``.local`` and ``.remote`` candidates): see
        :attr:`Agent.selected_pair <trice.Agent.selected_pair>`."""
        pair = self._agent.selected_pair
        assert pair is not None
        return pair

    def _check_closed(self) -> None:
        if self._closed or self._agent._closed:
            raise trio.ClosedResourceError("the connection is closed")

    def _check_open(self) -> None:
        """Closed: ClosedResourceError; consent expired, or no pair for data during an ICE
        restart: BrokenResourceError."""
        self._check_closed()
        core = self._agent._core
        failed = core.state is _FAILED
        if failed or core.data_pair is None:
            agent = self._agent
            lost = agent._selected_lost if failed else agent._previous_lost
            if lost == "mux":
                raise trio.ClosedResourceError("the selected pair's UDP mux is closed")
            if lost is not None:
                raise trio.BrokenResourceError(LOST_REASONS[lost])
            if failed and core.consent_revoked:
                raise trio.BrokenResourceError(
                    "the peer revoked consent (a 403 answer, ICE failed): no more data may go "
                    "(RFC 7675 §5.2)"
                )
            if failed and core.selected is None:
                # (An ICE restart's checks failed; the pair of before was let go then.)
                raise trio.BrokenResourceError(
                    "ICE failed: the checks after the ICE restart selected no pair "
                    "(connect() says why): no more data may go"
                )
            if failed:
                raise trio.BrokenResourceError(
                    "the peer's consent expired (ICE failed): no more data may go (RFC 7675)"
                )
            raise _no_pair_yet()

    def _stop_waiters(self) -> None:
        """Consent expired (the agent's state became failed), no pair carries data (during
        an ICE restart), or the connection closed: sends stop, and the tasks waiting to
        send or receive are woken, to raise (a receiver once it has taken what had
        arrived)."""
        self._reroute()  # (which wakes a receiver waiting on a socket)
        buffer = self._buffer
        if buffer.lot is not None:
            buffer.lot.unpark_all()
        self._wake_senders()

    def _wake_senders(self) -> None:
        """Wake the sends waiting for a full socket to take their datagram: they look at
        the connection again (see ``UdpTransport.send``'s ``check``)."""
        for transport in self._agent._transports.values():
            if isinstance(transport, UdpTransport) and not transport.closed:
                lock = transport.send_lock
                if lock is not None and lock.locked():
                    trio.lowlevel.notify_closing(transport.sock)
            elif isinstance(transport, (MuxTransport, TcpTransport, RelayTransport)):
                transport.wake()

    def _reroute(self) -> None:
        """Forget the route: the selected pair changed, the agent closed, or sends stop.  A
        receiver waiting on the old pair's socket is woken, to look again (see
        :meth:`receive`)."""
        self._route = None
        self._udp = None
        self._sendto = None
        self._buffer.nudge()

    def _get_route(self) -> tuple[Transport, tuple[str, int]]:
        self._check_open()
        route = self._route = self._agent._data_route()
        transport, address = route
        if isinstance(transport, UdpTransport):
            self._udp = transport
            self._sendto = transport.sock.sendto
            self._to = address
        return route

    async def send(self, value: bytes | bytearray | memoryview) -> None:
        """Send one datagram to the peer, waiting only while the socket's buffer is full
        (if another pair is selected meanwhile, the datagram goes over it).  (The argument
        is named ``value``, as :meth:`trio.abc.SendChannel.send` names it.)

        Raises:
            trio.ClosedResourceError: the connection or its agent is closed, or the UDP mux
                of the selected pair (see :func:`~trice.open_udp_mux`).
            trio.BrokenResourceError: the peer's consent expired (RFC 7675), or the selected
                pair's TURN relay or TCP connection is gone, or no pair carries data during
                an ICE restart.
            UsageError: *value* is longer than the path carries (UDP: 65,507 bytes over
                IPv4, 65,527 over IPv6; ICE-TCP: 65,535; a TURN relay: 65,456), or looks
                like STUN (its first byte 0 to 3, bytes 4
                to 7 STUN's magic cookie), which the peer takes for STUN, not data (RFC
                7983), and drops.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        data = value
        if type(data) is bytes:
            if data and data[0] < 4 and data[4:8] == STUN_MAGIC:
                raise _stun_like()
        elif _looks_like_stun(data):
            raise _stun_like()
        sendto = self._sendto
        if sendto is not None:
            # A host socket: the kernel takes the datagram at once, or the slow path below
            # (the transport's own send) sends it, waiting while the socket would block.
            try:
                size = sendto(data, self._to)  # type: ignore[arg-type]
            except (OSError, BufferError):  # (a non-contiguous view: the path below copies it)
                pass
            else:
                self._datagrams_sent += 1
                self._bytes_sent += size
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
        transport, address = self._route or self._get_route()
        if type(data) is not bytes:
            data = _as_bytes(data)
        if not transport.send_nowait(data, address, retry=True):
            await self._send_when_room(data, (transport, address))
        self._datagrams_sent += 1
        self._bytes_sent += len(data)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _send_when_room(self, data: bytes, route: tuple[Transport, tuple[str, int]]) -> None:
        """Wait for room on ``route`` (the selected pair's transport and peer address) to
        send ``data``.  If the pair moves meanwhile (another is selected, an ICE restart's
        say; the agent wakes the waiting sends), or a gathering anew closes the transport,
        the datagram goes the new way (once), as a send made then would: it had stayed on
        the old one, a TCP connection that its peer no longer read, until that closed, and
        then raised."""

        def check() -> None:
            self._check_open()
            if (self._route or self._get_route()) != route:
                raise _Moved

        while True:
            self._check_open()
            transport, address = route
            try:
                await transport.send(data, address, check)
                return
            except _Moved:
                pass
            except trio.ClosedResourceError:
                self._check_open()  # (the connection or the agent closed: as it says)
                if (self._route or self._get_route()) == route:
                    raise _relay_gone() from None
            route = self._route or self._get_route()
            transport, address = route
            if transport.send_nowait(data, address, retry=True):
                return

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Send one datagram if the socket takes it at once; returns whether it was sent
        (``False``: the socket's buffer is full, and the datagram is dropped).  Over a TURN
        relay, data the TURN client refuses (no permission for the peer, a full queue) is
        dropped on the way, as a network may drop it: counted in the relay's
        :attr:`TurnStatistics.dropped <trice.turn.TurnStatistics>` (see
        :meth:`Agent.relay_statistics`), and ``True``; so is a
        datagram the kernel refuses to send (a firewall's EPERM, no route), counted in
        :attr:`AgentStatistics.send_refused <trice.AgentStatistics>`.

        Raises:
            trio.ClosedResourceError: the connection or its agent is closed, or the UDP mux
                of the selected pair (see :func:`~trice.open_udp_mux`).
            trio.BrokenResourceError: the peer's consent expired (RFC 7675), or the selected
                pair's TURN relay or TCP connection is gone, or no pair carries data during
                an ICE restart.
            UsageError: *value* is longer than the path carries (UDP: 65,507 bytes over
                IPv4, 65,527 over IPv6; ICE-TCP: 65,535; a TURN relay: 65,456), or looks
                like STUN (see :meth:`send`).
        """
        if type(data) is bytes:
            if data and data[0] < 4 and data[4:8] == STUN_MAGIC:
                raise _stun_like()
        elif _looks_like_stun(data):
            raise _stun_like()
        sendto = self._sendto
        if sendto is not None:
            # A host socket, as for ``send``: the kernel takes the datagram at once (any
            # buffer, a memoryview of wide items too), or the path below says why not (a
            # full socket, a datagram too long, a closed agent; or copies a view that is
            # not contiguous).
            try:
                size = sendto(data, self._to)  # type: ignore[arg-type]
            except (OSError, BufferError):
                pass
            else:
                self._datagrams_sent += 1
                self._bytes_sent += size
                return True
        transport, address = self._route or self._get_route()
        if type(data) is not bytes:
            data = _as_bytes(data)
        if transport.send_nowait(data, address):
            self._datagrams_sent += 1
            self._bytes_sent += len(data)
            return True
        if transport.closed:
            self._check_open()  # (the connection or the agent closed: as it says)
            raise _relay_gone()
        return False

    def receive_nowait(self) -> bytes:
        """The next received datagram, or raise :class:`trio.WouldBlock`.

        It takes what is already queued (it reads no socket).  The next :meth:`receive` that
        reads the socket then queues all the socket holds, up to 64 datagrams, for it to take
        (see the data guide, "Reading fast").

        Raises:
            trio.WouldBlock: nothing is queued.
            trio.ClosedResourceError: the connection or its agent is closed, or the UDP mux
                of the selected pair (see :func:`~trice.open_udp_mux`).
            trio.BrokenResourceError: the peer's consent expired, or no pair carries data
                during an ICE restart, and nothing that had arrived is left to take.
        """
        self._streak = _STREAK
        self._check_closed()
        if self._buffer.queue:
            # (after consent expired too: what had arrived is returned first, as by receive)
            return self._buffer.queue.popleft()
        self._check_open()
        raise trio.WouldBlock

    async def receive(self) -> bytes:
        """Wait for the next datagram from the peer.

        Raises:
            trio.ClosedResourceError: the connection or its agent is closed, or the UDP mux
                of the selected pair (see :func:`~trice.open_udp_mux`).
            trio.BrokenResourceError: the peer's consent expired (RFC 7675), or the selected
                pair's TURN relay or TCP connection is gone, or no pair carries data during
                an ICE restart, and what had arrived before was all returned.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:  # (once more only if rerouted while waiting on a socket: below)
            transport = self._udp
            if transport is None and (self._closed or self._agent._closed):
                # (A kept socket means open: closing forgets it, see ``_reroute``.)
                raise trio.ClosedResourceError("the connection is closed")
            buffer = self._buffer
            queue = buffer.queue
            if queue:
                data = queue.popleft()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            if transport is None:
                if self._route is None:
                    self._get_route()  # (raises if consent expired)
                transport = self._udp
            if transport is None or transport.held or transport.closed or buffer.turn:
                # Another task already waits on the socket (or has its turn next), or the
                # pair is relayed: wait for a reader to hand a datagram over, or for the
                # socket to be let go.
                handed = await self._handed_over()
                if handed is not None:
                    return handed
                continue  # (let go by the task that waited on it: this one waits on it now)
            # One datagram per read, unless the reader has just used receive_nowait, other
            # tasks wait in receive too, or the reader is behind a backlog (then a read queues
            # all the socket holds, up to 64, and wakes the others).
            one = self._streak < _STREAK and not buffer.lot
            sock = transport.sock
            look = True  # whether to read the socket before waiting on it
            if one:
                # The common case of a receive loop: one datagram straight from the socket, as a
                # plain trio socket would (reading on would cost a failed read, a system call
                # and an exception, for each datagram that comes on its own).
                try:
                    data, source = sock.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    self._streak = 0  # caught up: nothing yet, wait for it
                    look = False
                except OSError:
                    pass  # (an ICMP error, say: the reader's loop deals with it)
                else:
                    self._streak += 1
                    transport.holds += 1  # (a receiver keeps the socket's reader away...)
                    if transport.reader_waiting:
                        transport.kick()  # (... which, if it waits on the socket, looks again)
                    if self._is_data(transport, data, source):
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        return data
            # Wait on the socket ourselves and read it, STUN included: the datagram reaches
            # this task straight from the kernel, not through the reader task.
            transport.held = True
            transport.holds += 1
            if transport.reader_waiting:
                transport.kick()  # frees the socket's read slot at once
            agent = self._agent
            try:
                if look:
                    # Read what the socket holds first (a batch, or on after STUN).
                    data_or_none = self._drained(transport, one)
                    if data_or_none is not None:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        return data_or_none
                while True:
                    if self._udp is not transport:
                        # Rerouted (another pair selected): the receive starts again, on the
                        # new pair's socket, or waits for its reader.  (Left waiting here, it
                        # heard only this socket, and a receive on the new one took over the
                        # buffer's ``waiting_on``: data and closing no longer woke it.)
                        break
                    buffer.waiting_on = sock
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    except trio.ClosedResourceError:
                        if transport.closed:
                            # A gathering anew closed the socket, the pair having moved on:
                            # take what came meanwhile, or wait for the new pair's reader.
                            if buffer.waiting_on is sock:
                                buffer.waiting_on = None
                            self._check_closed()
                            if buffer.queue:
                                return buffer.queue.popleft()
                            self._check_open()
                            break  # (look again, on the new pair's way)
                        # nudged: look in the queue, and at the connection
                    else:
                        if buffer.waiting_on is sock:
                            buffer.waiting_on = None
                        if one and not buffer.lot and not buffer.queue:
                            # Woken with the socket to itself: one datagram straight from it,
                            # as the fast path above reads (no batch, no trip through the queue).
                            try:
                                data, source = sock.recvfrom(65536)
                            except (BlockingIOError, InterruptedError):
                                self._check_open()  # (a wake-up without data: wait again)
                                continue
                            except OSError:
                                pass  # (an ICMP error, say: the reader's handling, below)
                            else:
                                if self._is_data(transport, data, source):
                                    if self._udp is None:
                                        # (Rerouted since this woke: another pair, which is
                                        # fine, or the connection closed or failed, which
                                        # raises: no data after either.)
                                        self._checked_after_reroute(len(data))
                                    self._streak += 1
                                    return data
                                # (STUN, answered: read on before waiting)
                    data_or_none = self._drained(transport, one)
                    if data_or_none is not None:
                        return data_or_none
            finally:
                if buffer.waiting_on is sock:  # (not another receiver's, on the new pair's)
                    buffer.waiting_on = None
                # The reader takes the socket back after a lease with no receiver.
                end = transport.release(agent._now())
                if transport is agent._primary:
                    agent._wake_by(end)
                # The first receive waiting for a datagram handed over waits on the socket
                # now (left parked, it got nothing until the lease ended), before this
                # task's next receive, which waits behind it.
                buffer.pass_turn()
            # Rerouted: look again, on the new pair's way.

    async def _handed_over(self) -> bytes | None:
        """Wait for a reader to hand a datagram over.  Parking is the schedule point: once
        woken with data, return it at once, as trio's memory channels do.  ``None`` when
        the pair's socket (the pair's now: it may have moved) is let go by the receive that
        waited on it, and this one has its turn (see ``ReceiveBuffer.turn``): the caller
        waits on it then."""
        buffer = self._buffer
        if buffer.lot is None:
            buffer.lot = trio.lowlevel.ParkingLot()
        while True:
            await buffer.lot.park()
            mine = buffer.turn is trio.lowlevel.current_task()
            if mine:
                buffer.turn = None
            self._check_closed()
            queue = buffer.queue
            if queue:
                data = queue.popleft()
                if queue:
                    buffer.wake()  # (more came at once: the next receiver waiting takes one)
                if mine:
                    buffer.pass_turn()  # (the turn on the socket, not taken, goes on)
                return data
            self._check_open()
            udp = self._udp
            if udp is not None and not udp.held and not udp.closed:
                return None  # (its turn, or the socket is free: as a receive that came now)
            if mine and udp is None and self._route is None:
                return None  # (its turn, the route forgotten meanwhile: looked up anew)

    def _drained(self, transport: UdpTransport, one: bool) -> bytes | None:
        """Read what the socket holds (data queued, STUN to the agent) and take the first
        datagram queued, if any; raise if the connection closed, or consent expired with
        nothing queued.  With ``one``, reading stops at the first data datagram (unless
        others wait to receive too, who get a batch)."""
        buffer = self._buffer
        if self._agent._drain(transport, one and not buffer.lot) and not one:
            self._streak = 0  # the backlog is read: one at a time again
        self._check_closed()
        queue = buffer.queue
        if queue:
            data = queue.popleft()
            if queue and buffer.lot:
                buffer.lot.unpark()  # (a batch: the next receiver waiting takes one)
            return data
        self._check_open()
        return None

    def _checked_after_reroute(self, size: int) -> None:
        """A datagram just read (of ``size`` bytes), and counted received, while the
        connection was rerouted: if it is closed or failed, the datagram is dropped (counted
        so) and this raises."""
        try:
            self._check_open()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._agent._datagrams -= 1
            self._agent._bytes_received -= size
            self._buffer.dropped += 1
            raise

    def _is_data(self, transport: UdpTransport, data: bytes, source: tuple[str, int]) -> bool:
        """A datagram a receive read from the socket itself: data from the peer (counted)
        is for the caller; STUN, or anything from a stranger, goes to the agent."""
        if transport.family == _AF_INET6:
            source = (source[0], source[1])
        if (not data or data[0] > 3 or data[4:8] != STUN_MAGIC) and source in self._remotes:
            agent = self._agent
            agent._datagrams += 1
            agent._bytes_received += len(data)
            if source == agent._lite_source:
                agent._lite_data += 1  # (an ICE-lite agent's consent: see AgentCore.on_data)
                agent._lite_at = agent._now()
            if agent._core.state is _DISCONNECTED:
                agent._resume()  # (the peer is back: the agent task tells the core)
            return True
        self._agent._dispatch(transport, data, source)  # STUN, or from a stranger
        return False

    async def aclose(self) -> None:
        """Close the connection, for good: sends and receives raise from now on, and
        :meth:`Agent.connect` returns this same closed connection.  Datagrams not read are
        let go, and what the peer still sends is dropped (counted in ``datagrams_dropped``).
        The agent itself (and the answering of STUN) closes when its ``async with`` block
        ends."""
        self._closed = True
        # What had come is let go, and what the peer still sends is dropped, and counted so:
        # no receive takes it now.
        buffer = self._buffer
        buffer.closed = True
        if buffer.queue:
            buffer.queue.clear()
        self._stop_waiters()  # (the waiting tasks see it closed)
        await trio.lowlevel.checkpoint()


class _Moved(Exception):
    """A send waiting for room: the selected pair moved (see ``Connection._send_when_room``)."""


def _no_pair_yet() -> trio.BrokenResourceError:
    """Only during an ICE restart: after failing, or once the pair of before ended."""
    return trio.BrokenResourceError(
        "no pair carries data now: an ICE restart is under way, and the pair of before it "
        "failed or ended"
    )


#: What went from under the selected pair, failing ICE (``Agent._selected_lost``): a TURN
#: allocation, the UDP mux, or the pair's TCP connection; and how errors say it.
Lost = Literal["relay", "mux", "tcp"]
LOST_REASONS: dict[Lost, str] = {
    "relay": "the selected pair's relay is gone (its TURN allocation ended)",
    "mux": "the selected pair's UDP mux closed",
    "tcp": "the selected pair's TCP connection closed",
}


def _relay_gone() -> trio.BrokenResourceError:
    """The selected pair's own transport is gone while the connection is open: a TURN
    allocation that ended (the server refused to refresh it, say), which fails ICE."""
    return trio.BrokenResourceError(LOST_REASONS["relay"])


def _looks_like_stun(data: bytes | bytearray | memoryview) -> bool:
    """Whether a datagram given as another buffer than bytes starts as STUN does, by its
    bytes as they would go (a memoryview of wider items, or of several dimensions, is sent
    as its bytes: see :func:`_as_bytes`).  Anything not bytes-like raises TypeError, as the
    send would."""
    view = memoryview(data)
    if view.ndim == 1 and view.format in ("B", "b"):
        head = view[:8].tobytes()
    else:
        try:
            head = view.cast("B")[:8].tobytes()
        except TypeError:  # (not contiguous: its bytes in order, copied)
            head = view.tobytes()[:8]
    return len(head) == 8 and head[0] < 4 and head[4:8] == STUN_MAGIC


def _stun_like() -> UsageError:
    """A datagram to send looks like STUN: the peer would take it for STUN (RFC 7983's
    first byte, and STUN's magic cookie), not data, and drop it (Pion's rule is wider: see
    data.rst)."""
    return UsageError(
        "a datagram whose first byte is 0 to 3 and whose bytes 4 to 7 are STUN's magic "
        "cookie (21 12 a4 42) is taken for STUN by the peer, not data (RFC 7983): it would "
        "be dropped"
    )


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """A datagram given as a bytearray or memoryview, as the transports take it: its bytes
    (of a memoryview of wider items too: ``len()`` counts its items, and the ICE-TCP and
    TURN framings write their length fields from it).  Anything else not bytes-like is a
    :class:`TypeError`, as a UDP socket's ``sendto`` makes it."""
    return memoryview(data).tobytes()
