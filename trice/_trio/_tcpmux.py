"""One TCP port for many agents (Pion's ``TCPMux``): :func:`open_tcp_mux`.

A server that offers ICE-TCP to many peers gives them all the same passive candidate, one
address and port that one firewall rule opens, and listens once.  The mux accepts each
connection, reads its first frame, which must be a Binding request (RFC 6544: the active
side's first check), and hands the connection to the agent whose ufrag is the first part of
the request's USERNAME (RFC 8445 §7.2.2), if the request is signed with that agent's
password (the ufrag travels in clear: a stranger who knows it must not hold the agent's
places for connections).  From then on the connection is that agent's: the mux is done
with it, and closing the mux does not close it.  One source address holds at most
``MAX_WAITING_PER_SOURCE`` of the connections waiting for their first frame, so that a
stranger's flood does not push out the peers'.

An agent opened with ``mux=`` a :class:`TcpMux` signals a passive TCP host candidate at the
mux's address (see :func:`trice.open_agent`).
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass
from typing import Final

import trio

from trice import stun
from trice._errors import UsageError
from trice._trio import _tcp
from trice._trio._log import logger
from trice._trio._mux import MuxContext, asked_ufrag, check_mux_address
from trice._trio._tcp import TcpTransport, accept, close_socket
from trice._trio._transport import BINDING_REQUEST, Address, bind_socket
from trice.ice._framing import FrameReader

__all__ = ["TcpMux", "TcpMuxContext", "TcpMuxStatistics", "open_tcp_mux"]

#: Connections the mux holds at once while it waits for their first frame; at it, the
#: oldest of the source address that holds the most is closed (counted unroutable) to make
#: room for a new one.
MAX_WAITING: Final = 128
#: Of those, the most one source address holds: a new connection from a source that holds
#: this many already is closed (counted unroutable).
MAX_WAITING_PER_SOURCE: Final = 16
#: Connections waiting in the listener's backlog.
_BACKLOG: Final = 128


@dataclass(frozen=True, slots=True)
class TcpMuxStatistics:
    """A :class:`TcpMux`'s counters.

    Attributes:
        agents: agents that use the mux now.
        waiting: connections accepted whose first frame has not come yet.
        routed: connections handed to an agent.
        unroutable: connections closed instead: their first frame was no Binding request
            for an agent of the mux, signed with its password (or did not come within 10
            seconds), the agent had no room for it, or too many were waiting (from their
            source, or in all).
    """

    agents: int
    waiting: int
    routed: int
    unroutable: int


#: What :func:`open_tcp_mux` hands :class:`TcpMux`'s constructor: a mux built elsewhere would
#: have no task reading its socket.
_OPENING = object()


class TcpMux:
    """A TCP listening socket that many agents share; made by :func:`open_tcp_mux` (built
    directly, it raises :class:`~trice.UsageError`).

    Pass it to :func:`trice.open_agent` (``mux=``), as a :class:`~trice.UdpMux` is.
    """

    __slots__ = (
        "__weakref__",  # (an application's WeakSet or weakref.finalize)
        "_by_ufrag",
        "_closed",
        "_listening",
        "_routed",
        "_token",
        "_unroutable",
        "_waiting",
        "local_address",
        "sock",
    )

    def __init__(self, sock: socket.socket, *, _key: object = None) -> None:
        if _key is not _OPENING:
            # (Built directly, no task read its socket: its agents' checks went unanswered.)
            raise UsageError(
                "a trice.TcpMux is made by trice.open_tcp_mux(...), not built directly"
            )
        #: The mux's listening TCP socket, which its task accepts on (the application does
        #: not use it).
        self.sock = sock
        host, port = sock.getsockname()[:2]
        #: The address and port the mux listens on, which is every agent's passive candidate.
        self.local_address: Address = (host.split("%", 1)[0], port)
        self._by_ufrag: dict[str, TcpTransport] = {}
        #: The connections waiting for their first frame, oldest first (their tasks' scopes).
        # The connections waiting for their first frame, oldest first, with their source.
        self._waiting: dict[trio.CancelScope, str] = {}
        self._routed = 0
        self._unroutable = 0
        self._closed = False
        self._token: trio.lowlevel.TrioToken | None = None  # (the run it opened in)
        self._listening = True  # (false once the system shut the listener down: see accept)

    @property
    def closed(self) -> bool:
        """Whether the mux is closed (its block has ended, or it was cancelled)."""
        return self._closed

    def statistics(self) -> TcpMuxStatistics:
        """The mux's counters now."""
        return TcpMuxStatistics(
            agents=len(self._by_ufrag),
            waiting=len(self._waiting),
            routed=self._routed,
            unroutable=self._unroutable,
        )

    def _owner(self, ufrag: str) -> TcpTransport | None:
        """The passive candidate's transport of the agent of ``ufrag`` on this mux, or
        ``None``."""
        return self._by_ufrag.get(ufrag)

    def _attach(self, ufrag: str, transport: TcpTransport) -> None:
        if self._closed:
            raise UsageError("the TCP mux is closed")
        if not self._listening:
            raise UsageError(
                "the TCP mux listens no more (the system shut its listening socket down; "
                "see the log): open another"
            )
        if ufrag in self._by_ufrag:
            raise UsageError(f"an agent of ufrag {ufrag} uses this TCP mux already")
        self._by_ufrag[ufrag] = transport

    def _detach(self, transport: TcpTransport) -> None:
        for ufrag, held in list(self._by_ufrag.items()):
            if held is transport:
                del self._by_ufrag[ufrag]

    def _rename(self, transport: TcpTransport, ufrag: str) -> None:
        """The agent's ufrag changed (an ICE restart)."""
        self._detach(transport)
        if not (self._closed or transport.closed or not self._listening):
            self._attach(ufrag, transport)

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:  # (a task per connection that waits)
            await self._accept_loop(nursery)
            self._listening = False  # (the connections it handed over carry on)

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        while (accepted := await accept(self.sock, f"TCP mux {self.local_address}")) is not None:
            sock, address = accepted
            waiting = self._waiting
            sources = list(waiting.values())
            if sources.count(address[0]) >= MAX_WAITING_PER_SOURCE:
                self._unroutable += 1
                close_socket(sock)
                await trio.lowlevel.checkpoint()
                continue
            if len(waiting) >= MAX_WAITING:
                # The oldest waiting of the source that holds the most gives its place (a
                # stranger's idle connections cannot keep the peers out: a peer's first
                # check comes a round trip after it opens).
                counts = Counter(sources)
                most = max(counts.values())
                oldest = next(scope for scope, source in waiting.items() if counts[source] == most)
                del waiting[oldest]
                oldest.cancel()
            scope = trio.CancelScope()
            waiting[scope] = address[0]
            nursery.start_soon(self._route, sock, address, scope, name=f"tcp mux <- {address}")
            await trio.lowlevel.checkpoint()  # (a flood of connections lets others run)

    async def _route(self, sock: socket.socket, address: Address, scope: trio.CancelScope) -> None:
        """Read a connection's first frame, and hand the connection to its agent (unless
        ``scope`` is cancelled first: too many waited)."""
        handed = False
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            received = None
            with scope:
                received = await _first_frame(sock)
            first = None if received is None else received[0]
            transport = None
            if first is not None and stun.peek_type(first) == BINDING_REQUEST:
                ufrag = asked_ufrag(first)
                if ufrag is not None:
                    transport = self._by_ufrag.get(ufrag)
            if (
                transport is not None
                and received is not None
                and first is not None
                and (transport.vet is None or transport.vet(first))
            ):
                handed = transport.adopt(sock, address, received[1])
            if handed:
                self._routed += 1
            else:
                self._unroutable += 1
                logger.debug("TCP mux %s: no agent for %s", self.local_address, address)
        except OSError:
            self._unroutable += 1
        finally:
            self._waiting.pop(scope, None)
            if not handed:
                close_socket(sock)

    def _close(self) -> None:
        self._closed = True
        self._by_ufrag.clear()
        close_socket(self.sock)


async def _first_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The first frame a connection carries and every byte read so far (the frame's own
    included), or ``None`` if the connection ends, or none comes within ``PROVE_WITHIN``
    (the time an agent gives a connection it accepted itself)."""
    reader = FrameReader()
    received = bytearray()
    with trio.move_on_after(_tcp.PROVE_WITHIN):
        while True:
            try:
                data: bytes | None = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None  # (waited on below: see Agent._read_until_change)
            if data is None:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not data:
                return None
            received += data
            frames = reader.feed(data)
            if frames:
                return frames[0], bytes(received)
    return None


def open_tcp_mux(host: str = "127.0.0.1", port: int = 0) -> TcpMuxContext:
    """Open one TCP listening socket, on ``host`` (an IP literal) and ``port``, for many
    agents' passive ICE-TCP candidates to share; it closes when the block ends.

    Use it as ``async with trice.open_tcp_mux("192.0.2.1", 443) as mux:``, and open each
    agent inside with ``trice.open_agent(config, controlling=..., mux=mux)`` (with a UDP
    mux too: ``mux=(udp_mux, tcp_mux)``).  The connections it handed to agents are theirs:
    they outlast the mux.

    Raises:
        UsageError: ``host`` is no IP address, or not one address of the host (the
            unspecified address, a multicast one, the broadcast address), or ``port`` is out of
            range.
        OSError: the address cannot be bound (when the block is entered).
        LimitError: the process ran out of file descriptors (when the block is entered).
    """
    check_mux_address("open_tcp_mux", host, port, "passive candidate")
    return TcpMuxContext(host, port)


class TcpMuxContext(MuxContext[TcpMux]):
    """What :func:`open_tcp_mux` returns: an async context manager that listens and starts
    the mux's task on entry, and closes both on exit (an exception of the block goes on as
    itself).  Made by :func:`open_tcp_mux`."""

    __slots__ = ()
    kind = "tcp"

    def _open(self, port_range: tuple[int, int] | None) -> TcpMux:
        sock = bind_socket(self._host, port_range, kind=socket.SOCK_STREAM)
        try:
            sock.listen(_BACKLOG)
        except BaseException:
            sock.close()
            raise
        return TcpMux(sock, _key=_OPENING)
