"""Local transports: the UDP sockets a host candidate stands on.

Sends are plain non-blocking ``sendto`` calls that wait with
:func:`trio.lowlevel.wait_writable` only when the kernel says the socket would block; receives
drain the socket the same way.  This is several times cheaper than ``await sock.sendto`` on a
trio socket (see bench/data_plane.py), and it is the hot path of the data plane.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

import trio

from trice import stun
from trice._errors import LimitError, UsageError

if TYPE_CHECKING:
    from trice._config import Timing
    from trice._trio._timers import TimerHub

__all__ = [
    "BINDING_REQUEST",
    "STUN_MAGIC",
    "UNSENT_LOW_WATER",
    "PairedSocket",
    "Transport",
    "UdpTransport",
    "bind_socket",
    "low_water",
    "paired_sockets",
    "stun_transaction",
]

Address = tuple[str, int]

#: STUN and data share a socket.  RFC 7983 tells them apart by the first byte (0-3: STUN);
#: the magic cookie is checked too, so that an application datagram that happens to begin
#: with a small byte is still delivered as data.
STUN_MAGIC = b"\x21\x12\xa4\x42"

#: The message type of a Binding request (a check), as :func:`trice.stun.peek_type` reads it.
BINDING_REQUEST = stun.message_type(stun.Method.BINDING, stun.MessageClass.REQUEST)

#: What hears the answer to a STUN transaction of ours: the message and where it came from.
OnReply = Callable[[stun.Message, Address], None]


#: Bytes written and not yet sent that an ICE-TCP connection's socket may hold before it
#: takes more (``TCP_NOTSENT_LOWAT``; trio's ``SocketStream``, which a TCP or TLS connection
#: to a TURN server is, sets the same): what waits beyond waits in trice's buffers, where
#: the agent's checks and answers can go before it.  (On a slow path the kernel took
#: megabytes of data, and consent checks waited behind them until consent ran out.)
UNSENT_LOW_WATER = 16 * 1024


#: The longest TCP retransmission timeout of an ICE-TCP connection while its agent hears
#: nothing from the peer (``disconnected``), in milliseconds (Linux 6.11 and later:
#: ``TCP_RTO_MAX_MS``, option 44; its least), and otherwise (TCP's own, two minutes).
#: TCP's backoff doubles up to two minutes: after an outage of 15 s the next
#: retransmission came some 25 s after it began, so a path back at 15 s stayed silent until
#: consent ran out, where UDP checks, sent every few seconds, recover at once.  Capped, a
#: copy goes every second at most.  Not always: the cap bounds the timeout itself, and over
#: a round trip longer than a second every message would go twice.
RTO_MAX_MS = 1000
RTO_MAX_MS_UNCAPPED = 120_000
_TCP_RTO_MAX_MS = 44
#: How long such a connection's data may go unacknowledged before the kernel gives it up,
#: in milliseconds (``TCP_USER_TIMEOUT``): two minutes, past consent's 30 s at most, so
#: that ICE, not TCP, says when a path is gone.  (Left to ``tcp_retries2``, a capped
#: connection ended after some 14 s of outage.)
USER_TIMEOUT_MS = 120_000


def low_water(sock: socket.socket, *, capped: bool = False) -> None:
    """Keep what ``sock`` (an ICE-TCP connection's socket) holds unsent near
    :data:`UNSENT_LOW_WATER`, where the system can (Linux: the segment being filled comes
    on top, some 32 KiB in all), and its data unacknowledged :data:`USER_TIMEOUT_MS` at
    most (Linux 6.11 and later, see :func:`cap_retransmissions`); elsewhere nothing."""
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if option is not None:
        with contextlib.suppress(OSError):  # (a kernel that lacks it)
            sock.setsockopt(socket.IPPROTO_TCP, option, UNSENT_LOW_WATER)
    cap_retransmissions(sock, capped)


def cap_retransmissions(sock: socket.socket, capped: bool) -> None:
    """Cap the retransmission timeout of ``sock`` (an ICE-TCP connection's) at
    :data:`RTO_MAX_MS`, or lift the cap: while its agent hears nothing (Linux 6.11 and
    later; elsewhere nothing).  Where the cap can be set, its data may go unacknowledged
    :data:`USER_TIMEOUT_MS` (else TCP gives a capped connection up in some 14 s)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):  # (a kernel before 6.11: ENOPROTOOPT, and
            # TCP's own give-up stays as it was: the timeout is never capped)
            rto_max = RTO_MAX_MS if capped else RTO_MAX_MS_UNCAPPED
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_RTO_MAX_MS, rto_max)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


class Transport(Protocol):
    """What the agent needs of a local transport: a host socket or a TURN relay.

    ``base`` is the id the pure core knows the transport by; ``local_address`` is the
    transport address of the candidate it stands for (for a relay, the relayed address).
    """

    base: int
    local_address: Address

    @property
    def closed(self) -> bool:
        """Whether the transport is closed (a relay whose allocation ended, say)."""

    def send_nowait(self, data: bytes, address: Address, *, retry: bool = False) -> bool:
        """Send if it can go now; ``False`` if it could not (``retry``: the caller waits for
        room and tries again, so a relay counts it neither sent nor dropped)."""
        ...

    async def send(
        self, data: bytes, address: Address, check: Callable[[], None] | None = None
    ) -> None:
        """Send, waiting while the transport would block; ``check``, called before each
        new attempt after a wait, raises to give up (its caller closed, say)."""

    def close(self) -> None: ...


#: Datagrams a reader takes from a socket in a row before it lets the other tasks run (a
#: flood cannot stall the run): the agent's readers, the mDNS socket's and a UDP mux's.
READ_BATCH = 64
#: The longest STUN message an agent decodes, or a mux reads a USERNAME in (a check with
#: the longest USERNAME, RFC 8489's 513 bytes, and every ICE attribute is some 650): longer
#: ones are dropped as malformed (an agent's) or unroutable (a mux's): a flood of big ones,
#: each thousands of attributes to walk, would cost a batch of reads a second of the run.
MAX_STUN = 2048

#: How long a socket's reader leaves the socket to receivers (a task that waits in
#: Connection.receive, or one that has read the socket itself) with none coming back, before
#: it takes the socket back (see :meth:`UdpTransport.leased_until`); STUN waits at most this
#: long while nobody reads.  Meanwhile only the kernel's buffer holds what comes (some 90
#: datagrams of 1200 bytes in Linux's default 208 KiB): a reader that read for 20 ms and
#: waited 15 ms for its next frame lost a fifth of a 50,000 a second stream in the kernel
#: (``AgentStatistics.kernel_dropped``), the agent's own buffer empty.  A lease of 2 ms lost
#: nothing there, but a receive loop in a run that also sends is away that long whenever
#: the sender has the CPU, and the socket went back and forth: one way fell from 75-87 %
#: of raw trio sockets to 69-72 % (``bench/data_plane.py``, 2026-12-01).
LEASE = 0.02
_NO_LEASE: tuple[int, float] = (0, -math.inf)

#: Linux's SO_MEMINFO socket option: the socket's memory figures (``struct sk_meminfo``), of
#: which the ninth (``SK_MEMINFO_DROPS``) counts the datagrams the kernel dropped for it.
_SO_MEMINFO: int | None = 55 if sys.platform.startswith("linux") else None
_MEMINFO_SIZE = 9 * 4


def kernel_drops_known() -> bool:
    """Whether :func:`kernel_drops` can say anything here: Linux, whose kernel has not
    refused the option (before 4.6, or an emulation of Linux that lacks it)."""
    return _SO_MEMINFO is not None


def kernel_drops(sock: socket.socket) -> int | None:
    """The datagrams the kernel dropped for ``sock`` (its receive buffer full, mostly), or
    ``None`` where the system does not say (elsewhere than Linux, or a kernel without the
    count: then never asked again in this process) or the socket is closed."""
    global _SO_MEMINFO
    if _SO_MEMINFO is None:
        return None
    try:
        figures = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO_SIZE)
    except OSError as exc:
        if exc.errno == errno.ENOPROTOOPT:
            _SO_MEMINFO = None  # (the kernel has no such option)
        return None
    if len(figures) < _MEMINFO_SIZE:
        _SO_MEMINFO = None  # (a kernel whose figures stop before the drops)
        return None
    return int.from_bytes(figures[32:36], sys.byteorder)


class RefusalSink(Protocol):
    """Who hears of a datagram a host socket's kernel refused to send (the agent: it counts
    them, and logs each kind once)."""

    def _kernel_refused(self, exc: OSError, local: Address, address: Address) -> None: ...


def send_or_tell(
    sock: socket.socket,
    data: bytes,
    address: Address,
    *,
    closed: bool,
    local: Address,
    on_refused: Callable[[OSError, Address, Address], None] | None,
) -> bool:
    """Send ``data`` from ``sock`` (the socket at ``local``) if the kernel takes it now, as
    ``UdpTransport.send_nowait`` does (which writes these steps out, on the data path): a
    datagram the kernel refuses is told to ``on_refused``, and ``True``; ``False`` if the
    socket would block, is out of buffers, or is closed."""
    try:
        sock.sendto(data, address)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        if not refused(exc, data, closed, address):
            return False
        if on_refused is not None:
            on_refused(exc, local, address)
    return True


#: The longest UDP payload over IPv4 and over IPv6 (65,535 less the IP and UDP headers; an
#: IPv6 header's length is not in its payload's).
_UDP_MAX = 65_507
_UDP6_MAX = 65_527


def refused(exc: OSError, data: bytes, closed: bool, address: Address | None = None) -> bool:
    """Of an error from a non-blocking ``sendto`` other than "would block": whether the
    kernel refused the datagram (a firewall's EPERM, no route, an address gone: it is
    dropped on the way, and counted), rather than the socket being closed (EBADF) or out of
    buffers for now (ENOBUFS, a full queue: as a full socket buffer).

    Raises:
        UsageError: the datagram is longer than the path carries (EMSGSIZE; ``address``,
            where it went, tells IPv6's longer limit).
    """
    if exc.errno == errno.EMSGSIZE:
        ipv6 = address is not None and ":" in address[0]
        if len(data) > (_UDP6_MAX if ipv6 else _UDP_MAX):
            raise datagram_too_large(data) from None
        # (Within what UDP carries: the system's own limit, macOS's 9,216 bytes by default,
        # say, or a path MTU the kernel learned with fragmenting forbidden.)
        raise UsageError(
            f"the system refused a datagram of {len(data)} bytes as too long (EMSGSIZE: "
            "its own limit, as macOS's 9,216 bytes, or the path's MTU); keep to the path's "
            "MTU, about 1,200 bytes"
        ) from None
    return not (closed or exc.errno in (errno.EBADF, errno.ENOBUFS))


class UdpTransport:
    """A bound, non-blocking UDP socket with an id (the *base* the core talks about)."""

    __slots__ = (
        "armed",
        "base",
        "closed",
        "dropped_at_close",
        "errors",
        "family",
        "held",
        "holds",
        "lease",
        "local_address",
        "parked_reader",
        "read_hub",
        "reader_waiting",
        "send_lock",
        "sock",
    )

    def __init__(self, base: int, sock: socket.socket, errors: RefusalSink | None = None) -> None:
        self.base = base
        self.sock = sock
        self.errors = errors
        self.family = sock.family
        host, port = sock.getsockname()[:2]
        self.local_address: Address = (host.split("%", 1)[0], port)
        self.closed = False
        self.dropped_at_close: int | None = None  # (see kernel_dropped)
        # Who waits on the socket: its reader (``reader_waiting`` while it does), or a
        # task blocked in Connection.receive or Agent.connect (``held``; ``holds`` counts
        # such receives).
        self.held = False
        self.holds = 0
        # A reader task (Agent._receive_loop) parked while a receiver holds the socket: the
        # receiver reschedules it when it lets go (see release).
        self.parked_reader: trio.lowlevel.Task | None = None
        self.reader_waiting = False
        # The run's timer, if it reports this socket readable to its reader (see
        # TimerHub.arm_read), and whether it does so now.
        self.read_hub: TimerHub | None = None
        self.armed = False
        self.send_lock: trio.Lock | None = None  # (made when a send first has to wait)
        self.lease = _NO_LEASE  # (holds seen, until when the socket is left to receivers)

    def leased_until(self, now: float) -> float:
        """Until when the socket's reader leaves it to receivers, or ``-inf`` if the reader
        may take it now.

        While a receiver waits on the socket (``held``: a ``receive()``, or a
        ``connect()``), it reads STUN itself and the socket is its until it lets go
        (``inf``): its reader sleeps meanwhile, with no lease to renew, so that an idle
        connection whose application waits in ``receive()`` costs no wake-ups.  Once the
        receiver lets go (:meth:`release`), or if it has read the socket since the reader
        last looked (``holds`` changed), the socket is leased to receivers for
        :data:`LEASE` more: a receive loop comes back within that.  The reader takes the
        socket back once a lease passes with none."""
        if self.held:
            return math.inf
        lease = self.lease
        if lease[0] != self.holds:
            lease = self.lease = (self.holds, now + LEASE)
        return lease[1] if now < lease[1] else -math.inf

    def release(self, now: float) -> float:
        """A receiver that waited on the socket lets go: the lease runs from ``now``, and a
        reader task parked until then is rescheduled (to sleep until the lease ends).
        Returns when the lease ends (the agent task, if it reads this socket, must wake by
        then)."""
        self.held = False
        end = now + LEASE
        self.lease = (self.holds, end)
        task = self.parked_reader
        if task is not None:
            self.parked_reader = None
            trio.lowlevel.reschedule(task)
        return end

    def hand_back(self) -> None:
        """A ``connect()`` that held the socket lets go: its reader (the agent task, which
        ``connect()`` reschedules) takes it back at once, with no lease."""
        self.held = False
        self.lease = (self.holds, -math.inf)

    def _unpark_reader(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self.parked_reader = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait_released(self) -> None:
        """Park the socket's reader task until a receiver lets go (see :meth:`release`)."""
        self.parked_reader = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._unpark_reader)

    def kick(self) -> None:
        """Make the socket's reader leave its wait (it looks again, and finds the socket
        held): :func:`trio.lowlevel.notify_closing` without closing the socket.  A reader
        that the run's timer reads for (see ``TimerHub.arm_read``) is parked, not waiting on
        the socket: it is rescheduled."""
        if self.reader_waiting and not self.closed:
            self.reader_waiting = False
            hub = self.read_hub
            if hub is None:
                trio.lowlevel.notify_closing(self.sock)
            else:
                hub.wake_reader(self)

    def send_nowait(self, data: bytes, address: Address, *, retry: bool = False) -> bool:
        """Send if the kernel takes it now; UDP may drop, so a full buffer drops too
        (``False``).  A datagram the kernel refuses (a firewall's EPERM, no route) is
        dropped on the way, as a network may drop it: counted and logged (see
        :class:`RefusalSink`), and ``True``.

        (``Connection.send_nowait`` comes here for a datagram its own call to the socket did
        not send, and the agent for its checks.)"""
        try:
            self.sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if not refused(exc, data, self.closed, address):
                return False  # (closed: the caller's wait says so; no buffer: as a full one)
            if self.errors is not None:
                self.errors._kernel_refused(exc, self.local_address, address)
        return True

    async def send(
        self, data: bytes, address: Address, check: Callable[[], None] | None = None
    ) -> None:
        """Send one datagram, waiting only while the socket would block.

        ``check`` is called before each new attempt after a wait, and raises to give up: a
        :class:`~trice.Connection` closed, or whose peer's consent expired, while its send
        waited.  Several tasks may wait to send at once: they take turns on the socket (trio
        lets one task at a time wait for it to become writable).
        """
        while True:
            try:
                self.sock.sendto(data, address)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                if self.closed or exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("the transport is closed") from None
                # ICMP errors (unreachable, refused) and EPERM from firewalls: UDP semantics,
                # the datagram dropped on the way (counted and logged).  (ENOBUFS, a full
                # queue that no wait on the socket sees empty, drops it uncounted.)
                if refused(exc, data, False, address) and self.errors is not None:
                    self.errors._kernel_refused(exc, self.local_address, address)
                return
            lock = self.send_lock
            if lock is None:
                lock = self.send_lock = trio.Lock()
            async with lock:
                if self.closed:
                    raise trio.ClosedResourceError("the transport is closed")
                if check is not None:
                    check()
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                except trio.ClosedResourceError:
                    # notify_closing also serves to nudge a receiver waiting on this socket
                    # (see ReceiveBuffer.nudge), and wakes every waiter on it: only a real
                    # close ends the send (or ``check``, below).
                    if self.closed:
                        raise
            if check is not None:
                check()  # (before trying again)

    def kernel_dropped(self) -> int | None:
        """The datagrams the kernel dropped for the socket (see :func:`kernel_drops`): at
        its close, once closed."""
        return self.dropped_at_close if self.closed else kernel_drops(self.sock)

    def close(self) -> None:
        if not self.closed:
            self.dropped_at_close = kernel_drops(self.sock)
            self.closed = True
            self.errors = None  # (the agent: no cycle left for the collector to find)
            hub = self.read_hub
            if hub is not None:
                hub.forget(self)  # (before the descriptor goes; wakes a waiting reader)
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


_SOCK_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)


def bind_socket(
    address: str,
    port_range: tuple[int, int] | None,
    rng_start: int = 0,
    *,
    kind: int = socket.SOCK_DGRAM,
) -> socket.socket:
    """Bind a non-blocking UDP socket (or of ``kind``: a TCP listener's) on ``address`` (IPv4
    or IPv6 literal, scope allowed); with ``port_range``, the search for a free port starts
    ``rng_start`` ports into it.

    Raises:
        LimitError: the process ran out of file descriptors.
        OSError: the address cannot be bound (the caller logs and skips it).
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        # Non-blocking from the start where the system can (one system call less a socket).
        sock = socket.socket(family, kind | _SOCK_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise LimitError(
                "out of file descriptors: raise the limit (ulimit -n / resource.setrlimit) or "
                "run fewer agents"
            ) from exc
        raise
    try:
        if not _SOCK_NONBLOCK:
            sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM and sys.platform != "win32":
            # (A listener's port in TIME_WAIT from an earlier agent is free to listen on.
            # Not on Windows, where the option lets another socket take a port in use, as
            # trio's own open_tcp_listeners knows.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if port_range is None:
            if kind == socket.SOCK_DGRAM and sys.platform == "linux":
                bind_named(sock, address)
            else:
                sock.bind((address, 0))
        else:
            low, high = port_range
            span = high - low + 1
            ports = (low + (rng_start + i) % span for i in range(span))
            if not _bind_first_free(sock, address, ports):
                raise OSError(errno.EADDRINUSE, f"no free port in {port_range} on {address}")
    except BaseException:
        sock.close()
        raise
    return sock


#: Ports of the system's ephemeral range picked at random (each taken, or reserved)
#: before :func:`bind_named` goes through the range in order.
_NAMED_TRIES = 8


def bind_named(sock: socket.socket, address: str) -> None:
    """Bind UDP ``sock`` to ``address`` and a port of the system's ephemeral range picked
    here, at random, and named in the bind (not port 0, the system's choice).  Linux keeps a
    named port the socket's when the system shuts the socket down (SOCK_DESTROY: ``ss -K``,
    as a network manager may), and says so once (ECONNABORTED, taken as an ICMP error is);
    a port it chose, it takes back, and the socket's next send takes another, which no peer
    knows, while the peer's datagrams go to the one signalled, where nothing listens.
    After ``_NAMED_TRIES`` ports taken, the range is gone through in order from a random
    one; the system's choice only where none is free (where it has none either, as a rule).
    """
    low, high, reserved = _namespace_ports(sock)
    ports = _named_ports(low, high)
    if reserved:
        ports = (port for port in ports if not any(port in taken for taken in reserved))
    if not _bind_first_free(sock, address, ports):
        sock.bind((address, 0))


def _named_ports(low: int, high: int) -> Iterator[int]:
    """The ports :func:`bind_named` tries: ``_NAMED_TRIES`` at random, then the range in
    order from a random one (a nearly full range is gone through once)."""
    span = high - low + 1
    for _ in range(_NAMED_TRIES):
        yield low + secrets.randbelow(span)
    start = secrets.randbelow(span)
    for i in range(span):
        yield low + (start + i) % span


def _bind_first_free(sock: socket.socket, address: str, ports: Iterable[int]) -> bool:
    """Bind ``sock`` to ``address`` and the first of ``ports`` free; whether one was (a
    port taken, or privileged, is passed over; another error raised)."""
    for port in ports:
        try:
            sock.bind((address, port))
            return True
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
    return False


#: ``SO_NETNS_COOKIE`` (Linux 5.14; Python names it from 3.12 on).
_SO_NETNS_COOKIE: int = getattr(socket, "SO_NETNS_COOKIE", 71)
#: Whether sockets may say their network namespace's cookie (until a kernel says not).
_cookies = sys.platform == "linux"


def netns_cookie(sock: socket.socket) -> bytes | None:
    """The cookie of the network namespace ``sock`` was made in (``SO_NETNS_COOKIE``): a
    namespace's own, never given to another (as the inode number of
    ``/proc/thread-self/ns/net`` is, once its namespace is gone, to the next one made); or
    None where the system has none (not Linux, or before 5.14)."""
    global _cookies
    if not _cookies:
        return None
    try:
        return sock.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8)
    except OSError as exc:
        if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL):
            _cookies = False
        return None


#: The ephemeral range as read lately in each network namespace, by its cookie: when it
#: was read (``time.monotonic()``) and what :func:`_ephemeral_ports` said.
_ports_read: dict[bytes, tuple[float, tuple[int, int, tuple[range, ...]]]] = {}
#: How long a read of the ephemeral range serves binds in its namespace (an
#: administrator's change shows in the next second's binds).
_PORTS_TTL = 1.0


def _namespace_ports(sock: socket.socket) -> tuple[int, int, tuple[range, ...]]:
    """:func:`_ephemeral_ports` for a bind of ``sock``, made by the calling thread: read at
    most once a second in a network namespace (the two files, some 17 µs, were a tenth of
    an agent's opening and host gathering on loopback), keyed by the namespace's cookie,
    which no other namespace is given; read at every bind where sockets have no cookie."""
    cookie = netns_cookie(sock)
    if cookie is None:
        return _ephemeral_ports()
    now = time.monotonic()
    read = _ports_read.get(cookie)
    if read is not None and now - read[0] < _PORTS_TTL:
        return read[1]
    ports = _ephemeral_ports()
    if len(_ports_read) >= 64:  # (namespaces come and go: their reads are let go)
        for key, (at, _) in list(_ports_read.items()):
            if now - at >= _PORTS_TTL:
                _ports_read.pop(key, None)
    _ports_read[cookie] = (now, ports)
    return ports


def _ephemeral_ports() -> tuple[int, int, tuple[range, ...]]:
    """The ephemeral port range of the calling thread's network namespace
    (``net.ipv4.ip_local_port_range``, which IPv6 shares) and the ports reserved in it
    (``ip_local_reserved_ports``, which the system's own choice passes over); IANA's dynamic
    range, 49152-65535, where they cannot be read.  A namespace's are its own (see
    :func:`_namespace_ports`)."""
    try:
        low, high = (int(field) for field in _read_proc("ip_local_port_range").split())
    except (OSError, ValueError):
        return 49152, 65535, ()
    if not 0 < low <= high <= 65535:
        return 49152, 65535, ()
    reserved: list[range] = []
    try:
        text = _read_proc("ip_local_reserved_ports")
        if not text.endswith(b"\n"):  # (cut short: the last field may be half a number)
            text = text.rpartition(b",")[0]
        for part in text.strip().split(b","):
            first, _, last = part.partition(b"-")
            if first.strip():
                reserved.append(range(int(first), int(last or first) + 1))
    except (OSError, ValueError):
        pass
    return low, high, tuple(reserved)


def _read_proc(name: str) -> bytes:
    """What /proc/sys/net/ipv4/``name`` says (the calling thread's namespace's).  The kernel
    gives a bitmap's text (the reserved ports) to the first read only, up to its size: a
    text longer than a small read (every other port reserved is some 100 KiB) is read
    again, whole, in a read of 1 MiB (a buffer the kernel zeroes: not at every bind)."""
    text = _read_once(name, 256)
    if len(text) == 256 and not text.endswith(b"\n"):
        text = _read_once(name, 1 << 20)
    return text


def _read_once(name: str, size: int) -> bytes:
    fd = os.open(f"/proc/sys/net/ipv4/{name}", os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


class PairedSocket:
    """One end of an ``AF_UNIX`` datagram socket pair that passes for a UDP socket bound to
    ``local`` whose every datagram comes from ``remote``: enough of a socket for
    :class:`UdpTransport` and trio's waits.  Nothing goes over any network.

    trice drives its UDP path with a pair of these once per process (see
    ``_agent._warm_shell``)."""

    __slots__ = ("_local", "_remote", "_sock", "family")

    def __init__(self, sock: socket.socket, local: Address, remote: Address) -> None:
        self._sock = sock
        self._local = local
        self._remote = remote
        self.family = socket.AF_INET

    def getsockname(self) -> Address:
        return self._local

    def fileno(self) -> int:
        return self._sock.fileno()

    def recvfrom(self, size: int) -> tuple[bytes, Address]:
        return self._sock.recv(size), self._remote

    def sendto(self, data: bytes, address: Address) -> int:
        return self._sock.send(data)

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        return self._sock.getsockopt(level, option, size)

    def close(self) -> None:
        self._sock.close()


def paired_sockets(a: Address, b: Address) -> tuple[PairedSocket, PairedSocket]:
    """Two :class:`PairedSocket` ends, linked, non-blocking: one at ``a``, one at ``b``."""
    first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        first.setblocking(False)
        second.setblocking(False)
    except BaseException:
        first.close()
        second.close()
        raise
    return PairedSocket(first, a, b), PairedSocket(second, b, a)


def datagram_too_large(data: bytes, *, relayed: bool = False) -> UsageError:
    limit = (
        "65,456 bytes through a TURN relay"
        if relayed
        else ("65,507 bytes over IPv4, 65,527 over IPv6")
    )
    return UsageError(
        f"a datagram of {len(data)} bytes is more than UDP carries ({limit}; keep to the "
        "path's MTU, about 1,200 bytes, to avoid fragments)"
    )


async def stun_transaction(
    send: Callable[[bytes, Address], object],
    pending: dict[bytes, OnReply],
    timing: Timing,
    server: Address,
    request: stun.Message,
    until: float = math.inf,
    drain: Callable[[], object] | None = None,
) -> stun.Message:
    """One STUN transaction with ``server``: ``request`` sent with ``send`` and
    retransmitted per RFC 8489 §6.2.1 (a doubling RTO capped at ``Timing.rto_max``) until
    an answer comes, for as long as the caller allows (it bounds this in time: on a lossy
    path every extra try counts), or until ``until`` (then :exc:`trio.TooSlowError`).
    Whoever reads the socket hands the answers of the transaction ids in ``pending`` to
    their handler there.

    At ``until``, ``drain`` reads the socket first: after a stall of the loop the answer
    may wait there unread, its reader not yet run.  (A cancel scope's deadline could not:
    it raises into the wait, and the handler goes with it.)"""
    cap = max(timing.rto, timing.rto_max)  # (a first RTO above rto_max is kept, undoubled)
    schedule = stun.RetransmissionSchedule(rto=timing.rto, rc=1000, max_rto=cap)
    data = request.encode(fingerprint=True)
    box: list[stun.Message] = []
    done = trio.Event()

    def on_reply(message: stun.Message, source: Address) -> None:
        if message.method != stun.Method.BINDING:
            return  # (the right transaction ID on another method's message: not ours)
        if source == server or not box:
            box.append(message)
            done.set()

    pending[request.transaction_id] = on_reply
    try:
        now = trio.current_time()
        if now >= until:
            raise trio.TooSlowError  # (a server asked in turn, past the time: not asked)
        deadline: float | None = schedule.start(now)
        while deadline is not None:
            send(data, server)
            with trio.move_on_at(min(deadline, until)):
                await done.wait()
            if not box and trio.current_time() >= until:
                if drain is not None:
                    drain()
                if not box:
                    raise trio.TooSlowError
            if box:
                return box[0]
            deadline = schedule.on_timeout(trio.current_time())
        raise trio.TooSlowError
    finally:
        del pending[request.transaction_id]
