"""ICE-TCP (RFC 6544): the transports of an agent's TCP host candidates.

A passive candidate listens, and each connection a peer opens to it is a path to that peer;
an active candidate opens a connection to a peer's passive candidate when a check first goes
there.  Either way the agent sees what it sees of a UDP socket: datagrams to and from
addresses (each connection's far end), framed on the wire (RFC 4571, see
:mod:`trice.ice._framing`).

The task tree shows the structure: a task per candidate (``tcp passive ...``), holding a
task that accepts connections (passive) and a task per connection, which reads it and holds
a task that writes it.

A connection is one pair's path: it closes when the pair's check fails, and when it closes
(or cannot open) the agent fails the pair (``AgentCore.path_lost``), which no check opens
again (an ICE restart's may).

Limits, against a peer that does not play along: at most ``max_links`` connections per
candidate (``AgentConfig.max_pairs``: one a pair), of which a new one a peer opens takes the
place of the oldest one not yet proven; a connection a peer opened must carry a check the
agent accepts (authenticated, for this agent) within :data:`PROVE_WITHIN` seconds, or it is
closed; and its data is held (at most :data:`HOLD_LIMIT` bytes, each datagram counting
:data:`HOLD_COST` more) until the peer answers a check of the agent's over it, signed with the
peer's password and naming the candidate's address as the peer's end of it: a check that came
over it proves nothing of who sent it (a stranger who saw the peer's first check go by may
copy it to a connection of its own), nor does an answer that names another address (the
stranger passed the agent's check on to the peer over a path of its own).  Then the data
goes to the agent, in its order.
At most :data:`LINK_BUFFER` bytes of data wait to be written per connection (beyond,
a datagram is dropped, as a full UDP socket drops it, or a send waits), and as much again of
STUN, which is never dropped for data's sake.

STUN goes first: a check or an answer waiting is written before the data that waits, at the
next frame's start, and the kernel holds little not yet sent (``TCP_NOTSENT_LOWAT`` at
``_transport.UNSENT_LOW_WATER``, where the system has it; Linux adds the segment it is
filling: some 16-32 KiB), so that what waits stays here, where it can be passed.  (On a
slow path the kernel took megabytes, and consent checks waited behind them until consent
ran out.)
"""

from __future__ import annotations

import errno
import math
import os
import socket
import time
from collections.abc import Callable
from typing import Final

import trio

from trice._servers import host_port
from trice._trio._log import logger
from trice._trio._transport import (
    BINDING_REQUEST,
    READ_BATCH,
    STUN_MAGIC,
    Address,
    cap_retransmissions,
    low_water,
)
from trice.ice._candidate import TcpType
from trice.ice._framing import FrameReader, frame
from trice.stun import is_stun, peek_type

__all__ = [
    "CONNECT_TIMEOUT",
    "HOLD_COST",
    "HOLD_LIMIT",
    "LINK_BUFFER",
    "PROVE_WITHIN",
    "TcpCounters",
    "TcpTransport",
    "accept",
    "close_socket",
]

#: Seconds a connection a peer opened has to carry a check that the agent accepts.
PROVE_WITHIN: Final = 10.0
#: Bytes of data held on a connection a peer opened until the peer answers a check over it
#: (past them, data is dropped): as much as waits to be written (``LINK_BUFFER``); the
#: peer's data waits for its parameters too, which signalling may bring late (the agent
#: answers a check before, but checks only after).  Each datagram counts ``HOLD_COST``
#: bytes more than its length (what Python holds it in, and more: an empty one is not free).
HOLD_LIMIT: Final = 256 * 1024
HOLD_COST: Final = 64
#: Seconds an active candidate waits for a connection to open.
CONNECT_TIMEOUT: Final = 5.0
#: Bytes of data that may wait to be written on one connection (and as many again of STUN).
LINK_BUFFER: Final = 256 * 1024

#: The agent's handler of a datagram (``Agent._dispatch``), and of a connection that could
#: not open or closed (``Agent._tcp_failed``): with ``True`` for one opened before the last
#: ICE restart (kept for the new checks, it may turn out dead only under them: a peer that
#: rebooted, say).
Deliver = Callable[["TcpTransport", bytes, Address], None]
Failed = Callable[["TcpTransport", Address, bool], None]


class TcpCounters:
    """What an agent's passive candidates saw (kept by the agent, so that they outlast the
    transports): see ``AgentStatistics.tcp_accepted``, ``tcp_refused``, ``tcp_unproven``, and
    ``unknown_source_dropped``, which counts ``unanswered`` in; and what every TCP
    candidate's connections dropped unsent (``AgentStatistics.tcp_unsent``)."""

    __slots__ = ("accepted", "refused", "unanswered", "unproven", "unsent")

    def __init__(self) -> None:
        self.accepted = 0
        self.refused = 0
        self.unproven = 0
        self.unanswered = 0  # (data held, then dropped: see _Link.answered)
        self.unsent = 0  # (data queued to write, then dropped: see _frames)


class _Link:
    """One TCP connection of a candidate: to (or from) ``address``."""

    __slots__ = (
        "address",
        "answered",
        "backlog",
        "closed",
        "epoch",
        "held",
        "held_bytes",
        "left",
        "pending",
        "proven",
        "reader",
        "ready",
        "scope",
        "sock",
        "urgent",
    )

    def __init__(self, address: Address, *, proven: bool, epoch: int) -> None:
        self.address = address
        self.epoch = epoch  # (the ICE generation it opened in: see TcpTransport.restarted)
        self.sock: socket.socket | None = None  # (None while an active one connects)
        #: What waits for the writer (the socket would block, or is still connecting): data,
        #: and STUN, which goes first (at the start of the next frame of data: ``left``
        #: bytes of the one at ``pending``'s head are still to go).
        self.pending = bytearray()
        self.urgent = bytearray()
        self.left = 0
        self.ready = trio.Event()  # set when there is something to write
        self.proven = proven
        #: Whether the peer answered a check over the connection (or the agent opened it);
        #: till then its data is held (see the module's docstring), and its bytes counted.
        #: What was held goes first once it did (see ``TcpTransport._hand_over``).
        self.answered = proven
        self.held: list[bytes] | None = None if proven else []
        self.held_bytes = 0
        self.closed = False
        self.scope: trio.CancelScope | None = None
        #: The connection's frame reader, once its reader task reads the socket (see
        #: ``TcpTransport.read_waiting``).
        self.reader: FrameReader | None = None
        #: Datagrams read and framed but not yet handed over, from the index given: a read
        #: of small frames past a turn's budget (see ``TcpTransport._take``).
        self.backlog: tuple[list[bytes], int] | None = None


class TcpTransport:
    """An ICE-TCP host candidate's transport: passive (with a listening socket) or active.

    Implements the agent's ``Transport`` protocol; the address a datagram goes to, or came
    from, is the far end of one of its connections.  ``local_address`` is the candidate's
    (for an active one, the address and port 9 it is signalled with).

    As a host socket's transport does, it writes with plain non-blocking calls, and leaves
    what the kernel does not take at once to the connection's writer task.
    """

    def __init__(
        self,
        base: int,
        local_address: Address,
        tcp_type: TcpType,
        *,
        deliver: Deliver,
        failed: Failed,
        max_links: int,
        counters: TcpCounters,
        listener: socket.socket | None = None,
    ) -> None:
        self.base = base
        self.local_address = local_address
        self.tcp_type = tcp_type
        self.closed = False
        self._deliver = deliver
        self._failed = failed
        self._max_links = max_links
        self._listener = listener
        self._links: dict[Address, _Link] = {}  # (in the order opened)
        self._nursery: trio.Nursery | None = None
        self._early: list[tuple[_Link, bytes]] = []  # (see adopt)
        self._senders = trio.lowlevel.ParkingLot()
        self.counters = counters
        self._epoch = 0  # (ICE restarts so far)
        # The connections of an earlier ICE generation that may not make room for a new one
        # (see restarted): the one data goes over meanwhile, and those a check of this
        # generation went over.
        self._spared: set[Address] | None = None
        self._capped = False  # (see cap_retransmissions)

    def __repr__(self) -> str:
        return f"<TcpTransport {self.tcp_type.value} {host_port(*self.local_address)}>"

    @property
    def links(self) -> int:
        """Connections open (or opening) now."""
        return len(self._links)

    # ------------------------------------------------------------------ the Transport protocol

    def send_nowait(self, data: bytes, address: Address, *, retry: bool = False) -> bool:
        framed = frame(data)  # (first: one too long for a frame opens no connection)
        link = self._links.get(address)
        if link is None:
            link = self._open(address)
            if link is None:
                return False
        if link.closed:
            return False
        if (
            link.epoch != self._epoch
            and (spared := self._spared) is not None
            and peek_type(data) == BINDING_REQUEST
        ):
            spared.add(address)  # (the new checks' path now: see restarted)
        sock = link.sock
        stun = is_stun(data)
        if link.pending or link.urgent or sock is None:
            # Behind what waits (or still connecting): queued, if there is room (STUN has
            # room of its own, and goes first: a check or an answer is not dropped, nor
            # held back, because data filled up).
            queue = link.urgent if stun else link.pending
            if len(queue) + len(framed) > LINK_BUFFER:
                return False
            queue += framed
            link.ready.set()
            return True
        try:
            sent = sock.send(framed)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # (Reset by the peer, say.)  One kept from before an ICE restart that turns out
            # dead under the new checks: a check goes over a new connection instead (not
            # data, nor an answer: a peer takes nothing but a check first on a connection).
            reopen = (
                self.tcp_type is TcpType.ACTIVE
                and link.epoch != self._epoch
                and peek_type(data) == BINDING_REQUEST
            )
            self._close_link(link, tell=not reopen)
            return reopen and self.send_nowait(data, address)
        if sent < len(framed):
            # (The rest of a frame is queued whatever the room: the stream stays in step.)
            if stun:
                link.urgent += framed[sent:]
            else:
                link.pending += framed[sent:]
                link.left = len(framed) - sent if sent else 0  # (none of it gone: a frame's start)
            link.ready.set()
        return True

    async def send(
        self, data: bytes, address: Address, check: Callable[[], None] | None = None
    ) -> None:
        """Send, waiting while the connection's buffer is full.

        Raises:
            trio.BrokenResourceError: no connection to ``address`` is open (it closed, or
                none was ever made).
        """
        while True:
            link = self._links.get(address)
            if link is None or link.closed or self.closed:
                raise trio.BrokenResourceError(
                    f"the TCP connection of {host_port(*self.local_address)} to "
                    f"{host_port(*address)} is closed"
                )
            if self.send_nowait(data, address):
                return
            await self._senders.park()
            if check is not None:
                check()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        close_socket(self._listener)
        self.wake()

    def wake(self) -> None:
        """Wake the sends waiting for room: they look at the connection again."""
        self._senders.unpark_all()

    # ------------------------------------------------------------------ from the agent

    #: For a passive candidate on a TCP mux: whether a connection's first frame is a check
    #: signed for this agent (set by the agent; see ``TcpMux``).
    vet: Callable[[bytes], bool] | None = None

    def adopt(self, sock: socket.socket, address: Address, received: bytes) -> bool:
        """A passive candidate on a TCP mux: a connection from ``address`` that the mux
        accepted and read ``received`` of (its first frame, at least), handed over as if
        this candidate had accepted it.  Whether it took it (``False``: no room, or closed;
        the caller keeps the socket)."""
        if self.closed:
            return False
        if not self._room_for(address):  # (as its own listener refuses one)
            self.counters.refused += 1
            return False
        self.counters.accepted += 1
        low_water(sock, capped=self._capped)
        link = _Link(address, proven=False, epoch=self._epoch)
        link.sock = sock
        self._links[address] = link
        if self._nursery is None:
            # (The agent has just opened: its task starts serving it, see run.)
            self._early.append((link, received))
        else:
            self._start_serve(link, received)
        return True

    def _start_serve(self, link: _Link, received: bytes) -> None:
        assert self._nursery is not None and link.sock is not None
        name = f"tcp {host_port(*self.local_address)} <- {host_port(*link.address)}"
        self._nursery.start_soon(self._serve, link, link.sock, received, name=name)

    def cap_retransmissions(self, capped: bool) -> None:
        """Cap the connections' retransmission timeout at a second, those to come too, or
        lift the cap (:func:`~trice._trio._transport.cap_retransmissions`): while the agent
        hears nothing from the peer, so that a path back after an outage carries again
        within a second, not when TCP's doubling backoff next tries."""
        if capped != self._capped:
            self._capped = capped
            for link in self._links.values():
                if link.sock is not None:
                    cap_retransmissions(link.sock, capped)

    def drop_data(self) -> None:
        """Drop the data waiting to be written (ICE failed: consent expired, and no data
        may go, RFC 7675 §5.1), all but the rest of a frame begun, so that the stream stays
        in step; STUN waiting goes still."""
        for link in self._links.values():
            self.counters.unsent += _frames(link.pending, link.left)
            del link.pending[link.left :]
        self._senders.unpark_all()

    def restarted(self, keep: Address | None) -> None:
        """An ICE restart: the connections open now are of the generation before (see
        ``Failed``: one that ends under the new checks is not their path's end).  At the
        cap, a new connection takes the place of the oldest of them (see _make_room),
        but the one to ``keep`` (the pair that carries data until the new checks select
        one) and those a check of the new generation goes over (see send_nowait and
        :meth:`prove`).  Kept, they held every place: a peer that had the old credentials
        (the reason to restart, maybe) kept the new generation's connections out for
        good."""
        self._epoch += 1
        self._spared = {keep} if keep is not None else set()

    def close_idle(self, keep: Address | None) -> None:
        """Close every connection but the one to ``keep`` (the selected pair's), quietly:
        their pairs are done with (see ``Agent._close_idle_tcp``)."""
        for link in list(self._links.values()):
            if link.address != keep:
                self._close_link(link, tell=False)

    def close_stale(self, keep: Address | None, known: Callable[[Address], bool]) -> None:
        """Close, quietly, the connections of an earlier ICE generation (see
        :meth:`restarted`) that this one's checks did not take up: but the one to ``keep``
        (the pair data goes over), and one to an address ``known`` names (the pair of before
        a restart, while data from there counts; not any remote candidate's: libnice signals
        its old connection's end anew, as peer-reflexive, and each restart kept one more,
        till the peer's new connection was refused).  Nothing else would close them
        on a controlled agent (see ``Agent._close_idle_tcp``): a peer that moved on and left
        them open (half-open, its network gone) filled the candidate's places, one a
        restart, until its new connections were refused."""
        epoch = self._epoch
        for link in list(self._links.values()):
            if link.epoch != epoch and link.address != keep and not known(link.address):
                self._close_link(link, tell=False)

    def link_to(self, address: Address) -> _Link | None:
        """The connection to ``address``, if any (for :meth:`drop`)."""
        return self._links.get(address)

    def drop(self, address: Address, link: _Link | None, *, tell: bool = True) -> None:
        """Close the connection ``link`` (:meth:`link_to`) to ``address``, if it is still
        the one there: its pair failed, the path is of no use (a check's connection that
        closed, and the peer's new one from the same port, are not the same path).  The
        agent is told, if ``tell``, as when the peer closes it."""
        if link is not None and self._links.get(address) is link:
            self._close_link(link, tell=tell)

    def prove(self, address: Address, *, answered: bool) -> None:
        """A check of this ICE generation went over the connection to ``address`` (the
        agent accepted one that came over it, or an answer to one of its own): the
        connection is proven, and of this generation (the check had its credentials).  An
        answer that names this end of the connection (``answered``) also shows the peer at
        the far end: the data held till then goes to the agent (next, see
        :meth:`_hand_over`)."""
        link = self._links.get(address)
        if link is not None:
            link.proven = True
            link.epoch = self._epoch
            link.answered = link.answered or answered

    # ------------------------------------------------------------------ tasks

    async def run(self) -> None:
        """The candidate's task, until the transport closes (or the agent does)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.closed:
                    nursery.cancel_scope.cancel()
                if self._listener is not None:
                    nursery.start_soon(
                        self._accept_loop,
                        self._listener,
                        name=f"accept {host_port(*self.local_address)}",
                    )
                # What came before this task ran: checks to send (an active candidate's
                # connections to open), connections a TCP mux handed over.
                for link in list(self._links.values()):
                    if link.sock is None:
                        self._start_connect(link)
                for link, received in self._early:
                    self._start_serve(link, received)
                self._early = []
                try:
                    await trio.sleep_forever()
                finally:
                    self.closed = True  # (before the nursery closes: adopt takes none now)
        finally:
            self.closed = True
            close_socket(self._listener)
            self._links.clear()
            self.wake()

    def _open(self, address: Address) -> _Link | None:
        """An active candidate's new connection to ``address``, opening; ``None`` if none
        may open (a passive candidate, closed, or at the cap)."""
        if self.tcp_type is not TcpType.ACTIVE or self.closed:
            return None
        link = _Link(address, proven=True, epoch=self._epoch)
        self._links[address] = link  # (first: the place made below is this one's)
        if len(self._links) > self._max_links and not self._make_room(refused=False):
            del self._links[address]  # (none of an ICE generation before gave way)
            return None
        if self._nursery is not None:
            self._start_connect(link)
        return link

    def _start_connect(self, link: _Link) -> None:
        assert self._nursery is not None
        name = f"tcp {self.local_address[0]} -> {host_port(*link.address)}"
        self._nursery.start_soon(self._connect, link, name=name)

    async def _connect(self, link: _Link) -> None:
        address = link.address
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = None
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((self.local_address[0], 0))
            low_water(sock, capped=self._capped)  # (before it connects: its SYNs too)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                with trio.move_on_after(CONNECT_TIMEOUT):
                    await trio.lowlevel.wait_writable(sock)
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                    code = errno.ETIMEDOUT
            if code:
                raise OSError(code, os.strerror(code))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            close_socket(sock)
            logger.debug("%r: cannot connect to %s: %s", self, host_port(*address), exc)
            self._end(link)
            return
        except BaseException:
            close_socket(sock)
            self._end(link)
            raise
        link.sock = sock
        await self._serve(link, sock)

    async def _accept_loop(self, listener: socket.socket) -> None:
        assert self._nursery is not None
        while (accepted := await accept(listener, self)) is not None:
            sock, address = accepted
            room = self._room_for(address)
            try:
                if not room:
                    raise OSError(errno.ECONNREFUSED, "no room")
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                low_water(sock, capped=self._capped)
            except OSError as exc:
                # (No room; or reset before it was set up: some systems say EINVAL then.)
                self.counters.refused += 1
                sock.close()
                logger.debug("%r: refused a connection from %s: %s", self, host_port(*address), exc)
            else:
                self.counters.accepted += 1
                link = _Link(address, proven=False, epoch=self._epoch)
                link.sock = sock
                self._links[address] = link
                name = f"tcp {host_port(*self.local_address)} <- {host_port(*address)}"
                self._nursery.start_soon(self._serve, link, sock, name=name)
            await trio.lowlevel.checkpoint()  # (a flood of connections lets others run)

    async def _serve(self, link: _Link, sock: socket.socket, received: bytes = b"") -> None:
        """Read the connection (this task) and write it (a task of its own) until it
        closes, either end closes it, or the transport closes."""
        if link.closed:  # (closed before this task ran, see _close_link)
            close_socket(sock)
            return
        try:
            async with trio.open_nursery() as nursery:
                link.scope = nursery.cancel_scope
                nursery.start_soon(self._write_loop, link, sock, name="write")
                await self._read_loop(link, sock, received)
                nursery.cancel_scope.cancel()
        finally:
            self._end(link)
            close_socket(sock)

    async def _read_loop(self, link: _Link, sock: socket.socket, received: bytes) -> None:
        reader = FrameReader()
        if received:
            link.backlog = (reader.feed(received), 0)  # (what a TCP mux read of it: see _take)
        link.reader = reader  # (the socket's bytes come next: read_waiting may take them)
        if not link.proven:
            with trio.move_on_after(PROVE_WITHIN):
                while not link.proven:
                    if not await self._read(link, sock, reader):
                        return
            if not link.proven:
                self.counters.unproven += 1
                logger.debug(
                    "%r: no accepted check from %s within %s s; closed",
                    self,
                    host_port(*link.address),
                    PROVE_WITHIN,
                )
                return
        while await self._read(link, sock, reader):
            pass

    async def _read(self, link: _Link, sock: socket.socket, reader: FrameReader) -> bool:
        """Read what the connection holds (see :meth:`_take`), then wait for more, or let
        the other tasks run.  False once the stream ends."""
        taken = self._take(link, sock, reader)
        if taken is _ENDED:
            return False
        if taken is _EMPTIED:
            await trio.lowlevel.wait_readable(sock)
        else:
            await trio.lowlevel.checkpoint()
        return True

    def _take(
        self, link: _Link, sock: socket.socket, reader: FrameReader, *, read: bool = True
    ) -> object:
        """Read what the connection holds now, without waiting, and hand over the datagrams
        it completes: at most ``READ_BATCH`` reads and datagrams.  A read may complete
        thousands of small frames (32,768 empty ones in 64 KiB): those past the budget wait
        in ``link.backlog``, and go first the next time, before the socket is read again, so
        that datagrams keep their order.  Returns ``_EMPTIED`` (the socket would block),
        ``_ENDED`` (the stream ended, or failed, or the link closed) or ``_BATCH`` (the
        budget spent: more may wait).  With ``read`` false, only the backlog goes (and
        ``_EMPTIED`` once it is gone)."""
        deliver = self._deliver
        address = link.address
        budget = READ_BATCH
        while budget > 0:
            backlog = link.backlog
            if backlog is not None:
                datagrams, start = backlog
            elif not read:
                return _EMPTIED
            else:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return _EMPTIED  # (waited on by the caller: see Agent._read_until_change)
                except OSError:
                    return _ENDED
                if not data:
                    return _ENDED
                datagrams, start = reader.feed(data), 0
                budget -= 1
            end = start + budget
            if end < len(datagrams):
                link.backlog = (datagrams, end)
                datagrams = datagrams[start:end]
            else:
                link.backlog = None
                if start:
                    datagrams = datagrams[start:]
            budget -= len(datagrams)
            if link.held is None:
                for datagram in datagrams:
                    deliver(self, datagram, address)
                    if link.closed:
                        return _ENDED
            elif not self._hand_over(link, datagrams):
                return _ENDED
        return _BATCH

    def _hand_over(self, link: _Link, datagrams: list[bytes]) -> bool:
        """Hand ``datagrams`` of ``link`` to the agent; or, till the peer answered a check
        over it, its STUN only, holding its data (see ``_Link.answered``).  Once it did,
        what was held goes first: it and the rest take the place of ``link.backlog``, which
        ``_take`` hands over in turns, as any.  False once the link closed."""
        deliver = self._deliver
        address = link.address
        for i, datagram in enumerate(datagrams):
            held = link.held
            if held is not None:
                if link.answered:
                    self._unhold(link, held, datagrams[i:])
                    return True
                if not (datagram[:1] < b"\x04" and datagram[4:8] == STUN_MAGIC):
                    size = len(datagram) + HOLD_COST
                    if link.held_bytes + size <= HOLD_LIMIT:
                        held.append(datagram)
                        link.held_bytes += size
                    else:
                        self.counters.unanswered += 1
                    continue
            deliver(self, datagram, address)
            if link.closed:
                return False
            if held is not None and link.answered:  # (that was the answer)
                self._unhold(link, held, datagrams[i + 1 :])
                return True
        return True

    @staticmethod
    def _unhold(link: _Link, held: list[bytes], rest: list[bytes]) -> None:
        backlog = link.backlog
        if backlog is not None:
            rest = rest + backlog[0][backlog[1] :]
        link.held = None
        link.held_bytes = 0
        link.backlog = (held + rest, 0)

    async def read_waiting(self, address: Address) -> None:
        """Take what the connection to ``address`` already holds, now, as its reader would
        (:meth:`_take`): a check about to be given up looks for its answer first (see
        ``CheckRun._answered_meanwhile``).  An end it meets, the reader meets too.

        What that read framed past the budget goes too, before this returns: the reader,
        which may be waiting for the socket to hold more, would not wake for it (a cancel
        scope to wake it, around each of its waits, cost a third of ICE-TCP's throughput).
        It goes ``READ_BATCH`` datagrams at a time, the other tasks running in between, as
        the reader hands it over (all at once, a flood's 30,000 empty frames went in one
        step, when a check over the connection gave up in the middle of it)."""
        link = self._links.get(address)
        if link is None or link.closed or link.reader is None:
            return  # (none; or its reader has yet to take what a TCP mux read of it)
        sock, reader = link.sock, link.reader
        assert sock is not None  # (a reader reads it)
        self._take(link, sock, reader)
        backlog = link.backlog
        if backlog is None:
            return
        # As many turns as that read's backlog takes, no more: what the reader reads
        # meanwhile, it hands over itself, and a peer that floods on could keep the check
        # from giving up.  (While the peer has not answered, its data is held, and an
        # answer among the backlog frees it to go over again: each of the backlog's may
        # take two places of a turn, and what was held one.)
        left = 2 * (len(backlog[0]) - backlog[1]) + len(link.held or ())
        for _ in range(-(-left // READ_BATCH)):
            await trio.lowlevel.checkpoint()
            if link.backlog is None or link.closed:
                return
            self._take(link, sock, reader, read=False)  # (the reader may have taken some)

    async def _write_loop(self, link: _Link, sock: socket.socket) -> None:
        pending, urgent = link.pending, link.urgent
        while True:
            await link.ready.wait()
            link.ready = trio.Event()
            while pending or urgent:
                # STUN first, at a frame's start; data meanwhile only to the end of the
                # frame begun, while STUN waits.
                first = urgent and not link.left
                if first:
                    out: bytes | bytearray | memoryview = urgent
                elif urgent:
                    out = memoryview(pending)[: link.left]
                else:
                    out = pending
                lost = False
                try:
                    sent = sock.send(out)
                except (BlockingIOError, InterruptedError):
                    sent = -1  # (waited on below: see Agent._read_until_change)
                except OSError:
                    lost = True  # (closed below, once the view of the buffer it clears is let go)
                finally:
                    if isinstance(out, memoryview):
                        out.release()
                if lost:
                    self._close_link(link)
                    return
                if sent < 0:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                if first:
                    del urgent[:sent]
                else:
                    link.left = _sent_of(pending, link.left, sent)
                    if len(pending) < LINK_BUFFER // 2:
                        self._senders.unpark_all()  # (room again: the sends waiting go on)
            self._senders.unpark_all()

    def _make_room(self, *, refused: bool = True) -> bool:
        """At the cap, a new connection takes the place of the oldest that no accepted check
        has proven yet (counted ``refused``: one a peer opened), or of the oldest of an ICE
        generation before that no check of this one went over (see restarted); failing
        those, of the oldest that the peer answered no check over (see ``_Link.answered``:
        a check accepted over it may be a stranger's copy of the peer's): a stranger's
        connections cannot keep the peer out, whose connection is proven by its first check
        and answered a round trip later (or once its parameters came).  Whether one was
        closed."""
        epoch, spared = self._epoch, self._spared
        for link in self._links.values():
            if not link.proven or (
                link.epoch != epoch and spared is not None and link.address not in spared
            ):
                if refused and not link.proven:
                    self.counters.refused += 1
                logger.debug(
                    "%r: closed %s, %s, for a newer connection",
                    self,
                    host_port(*link.address),
                    "unproven" if not link.proven else "of before an ICE restart",
                )
                self._close_link(link)
                return True
        for link in self._links.values():
            if not link.answered:
                if refused:
                    self.counters.refused += 1
                logger.debug(
                    "%r: closed %s, not answered, for a newer connection",
                    self,
                    host_port(*link.address),
                )
                self._close_link(link)
                return True
        return False

    def _room_for(self, address: Address) -> bool:
        """Whether this candidate may take a new connection from ``address`` (accepted, or
        handed over by a TCP mux): not while one from there is open (see _end_if_reset),
        nor at the cap, once the oldest unproven connection has made room if there is one
        (see _make_room)."""
        if self.closed:
            return False
        self._end_if_reset(address)
        if address in self._links:
            return False
        if len(self._links) >= self._max_links:
            self._make_room()
        return len(self._links) < self._max_links

    def _end_if_reset(self, address: Address) -> None:
        """A new connection came from ``address``: if the one from there of before was
        reset or closed by the peer, and this candidate has not read that yet (a peer that
        connects again at once, from the same port), it ends now, and the new one may take
        its place (it was refused, and the peer had to try again)."""
        link = self._links.get(address)
        if link is not None and link.sock is not None and _peer_gone(link.sock):
            self._close_link(link)

    def _close_link(self, link: _Link, *, tell: bool = True) -> None:
        """Close a connection: ended now (the agent is told, if ``tell``), its task ends it
        (or, not running yet, does not serve it)."""
        self._end(link, tell=tell)
        if link.scope is not None:
            link.scope.cancel()

    def _end(self, link: _Link, *, tell: bool = True) -> None:
        """A connection closed or could not open: the agent is told (its checks to the
        address stop waiting, its pair fails), if ``tell``."""
        if link.closed:
            return
        link.closed = True
        self.counters.unsent += _frames(link.pending, 0, link.left)
        link.pending.clear()
        link.urgent.clear()
        if link.held:
            self.counters.unanswered += len(link.held)
            link.held = None
        if self._links.get(link.address) is link:
            del self._links[link.address]
        self.wake()
        if tell and not self.closed:
            self._failed(self, link.address, link.epoch != self._epoch)


def _frames(pending: bytearray, at: int, left: int = 0) -> int:
    """The data datagrams (RFC 4571 frames) in ``pending`` from ``at``, where one starts,
    or, with ``left``, from its head, the rest of a frame begun (``left`` bytes) counting
    as one: what dropping them leaves unsent, though ``datagrams_sent`` counted them."""
    count = 1 if left else 0
    at = max(at, left)
    end = len(pending)
    while at + 2 <= end:
        at += 2 + (pending[at] << 8 | pending[at + 1])
        count += 1
    return count


def _sent_of(pending: bytearray, left: int, sent: int) -> int:
    """Drop the ``sent`` bytes at the head of ``pending`` (RFC 4571 frames, the first with
    ``left`` bytes still to go, or 0 if whole): how many of the frame now at its head are
    still to go (0: a frame starts there)."""
    at = 0
    while at < sent:
        if not left:
            left = 2 + (pending[at] << 8 | pending[at + 1])
        step = min(left, sent - at)
        at += step
        left -= step
    del pending[:sent]
    return left


#: What :meth:`TcpTransport._take` found.
_EMPTIED, _ENDED, _BATCH = object(), object(), object()


#: Errors of accept() that say the listener listens no more (the system shut it down:
#: Linux's SOCK_DESTROY, ``ss -K``, as a network manager may when an address goes): it
#: says so again at every try, while the listener reads as ready.
_NOT_LISTENING = frozenset({errno.EINVAL, errno.EBADF, errno.ENOTSOCK})

# (A peek that never blocks, whatever the socket's mode; where there is no such flag, the
# sockets it peeks at are non-blocking.)
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)

# Linux's TCP_INFO, whose first byte is the connection's state: CLOSE once reset, CLOSE_WAIT
# once the peer closed its end (include/net/tcp_states.h).
_TCP_INFO: Final[int | None] = getattr(socket, "TCP_INFO", None)
_TCP_GONE: Final = frozenset({7, 8})


def _peer_gone(sock: socket.socket) -> bool:
    """Whether the peer reset the connection ``sock``, or closed its end, whether or not
    what it sent before is read yet (a peek sees that first); elsewhere than on Linux, a
    peek tells only once nothing is left to read."""
    if _TCP_INFO is not None:
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0] in _TCP_GONE
        except OSError:
            pass  # (no TCP_INFO here: a peek, as elsewhere)
    try:
        return not sock.recv(1, socket.MSG_PEEK | _DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False  # (nothing to read: still open)
    except OSError:
        return True  # (reset)


#: Failed accepts in a row (of other errors: each a connection that failed before it was
#: accepted, as Linux passes network errors on) before the next waits as the short ones do.
_FAILED_IN_A_ROW = 64


async def accept(listener: socket.socket, who: object) -> tuple[socket.socket, Address] | None:
    """The next connection on a non-blocking ``listener`` (waited for as trio waits), with
    its far end; ``None`` once the listener is closed, or listens no more (logged).  Out
    of file descriptors or memory, it logs (as ``who``) and tries again shortly, the
    connection waiting in the backlog, as trio's own listeners do; after another error
    (a connection reset before it was accepted, say) it tries again once the other tasks
    have had their turn, and shortly after many in a row."""
    failed = 0
    while True:
        short = turn = False
        try:
            sock, source = listener.accept()
        except (BlockingIOError, InterruptedError):
            failed = 0
        except OSError as exc:
            if listener.fileno() == -1:
                return None
            if exc.errno in _NOT_LISTENING:
                logger.warning("%s: the listener listens no more (%s); it takes no more", who, exc)
                return None
            failed += 1
            short = exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
            if short:
                _accept_failed(who, exc)
            elif failed < _FAILED_IN_A_ROW:
                turn = True  # (others run first: the error may last)
            else:
                failed = 0
                short = True
        else:
            return sock, (source[0].split("%", 1)[0], source[1])
        # (Waited on out of the except clauses: see Agent._read_until_change.)
        if turn:
            await trio.lowlevel.checkpoint()
            continue
        if short:
            await trio.sleep(0.1)
            continue
        try:
            await trio.lowlevel.wait_readable(listener)
        except trio.ClosedResourceError:
            return None


#: An accept that fails for want of descriptors or memory is warned of at most once in
#: this many seconds in a process (every listener tries again ten times a second: a
#: hundred agents would write a thousand lines a second); the others go to DEBUG, counted.
ACCEPT_WARNING_INTERVAL = 10.0
_accept_warned_at = -math.inf
_accept_unwarned = 0


def _accept_failed(who: object, exc: OSError) -> None:
    global _accept_warned_at, _accept_unwarned
    now = time.monotonic()
    if now - _accept_warned_at < ACCEPT_WARNING_INTERVAL:
        _accept_unwarned += 1
        logger.debug("%s: cannot accept a connection: %s", who, exc)
        return
    logger.warning(
        "%s: cannot accept a connection: %s (%d more such, of any listener, since the last"
        " warning, at DEBUG; at most one a %g s)",
        who,
        exc,
        _accept_unwarned,
        ACCEPT_WARNING_INTERVAL,
    )
    _accept_warned_at, _accept_unwarned = now, 0


def close_socket(sock: socket.socket | None) -> None:
    """Close a socket that a task may be waiting on (it is told: ClosedResourceError)."""
    if sock is not None and sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()
