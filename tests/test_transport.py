"""Local transports: the UDP transport's send (waiting while the socket would block, and what
wakes that wait), its lease to receivers, and the socket pair the shell's warm-up stands its
agents on."""

from __future__ import annotations

import errno
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

import trice
from trice._trio import _transport
from trice._trio._connection import _OPENING, Connection, ReceiveBuffer
from trice._trio._transport import LEASE, UdpTransport, bind_socket, paired_sockets

from natlab import Namespace, entered, lone_namespace, require_natlab


def test_a_socket_is_leased_to_receivers_while_they_keep_coming_back() -> None:
    """The socket's reader (the agent task, or a receive loop) leaves the socket to a
    receiver for as long as one waits on it (no lease to renew: the reader sleeps), then
    for a lease from when it let go or last read, and takes it back after a lease with
    none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        transport = UdpTransport(0, sock)
        assert transport.leased_until(10.0) == -math.inf  # no receiver yet: the reader reads
        transport.held = True  # a receiver waits on the socket
        assert transport.leased_until(10.0) == math.inf
        assert transport.leased_until(500.0) == math.inf  # ... however long it waits
        assert transport.release(500.5) == 500.5 + LEASE  # it lets go
        assert not transport.held
        t = 500.5 + LEASE / 2
        assert transport.leased_until(t) == 500.5 + LEASE
        transport.holds += 1  # it has read again (without waiting), and gone back to its work
        assert transport.leased_until(t) == t + LEASE
        assert transport.leased_until(t + LEASE / 2) == t + LEASE  # nothing new
        assert transport.leased_until(t + LEASE) == -math.inf  # a lease without one
        assert transport.leased_until(600.0) == -math.inf


async def test_a_reader_parked_while_a_receiver_holds_the_socket_wakes_when_it_lets_go() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        transport = UdpTransport(0, sock)
        transport.held = True
        released = []

        async def reader() -> None:
            await transport.wait_released()
            released.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert transport.parked_reader is not None and not released
            transport.release(trio.current_time())
        assert released and transport.parked_reader is None
        # A parked reader can be cancelled (the agent closing).
        transport.held = True
        with trio.move_on_after(0.01):
            await transport.wait_released()
        assert transport.parked_reader is None


class _BlockedSocket:
    """A UDP socket as the transport sees it, whose sends would block until ``free`` is set.

    Its descriptor is one end of a Unix datagram pair whose peer's queue is full, so that trio
    really waits for it to become writable."""

    family = socket.AF_INET

    def __init__(self, fd_sock: socket.socket) -> None:
        self._fd_sock = fd_sock
        self.free = False
        self.sent: list[bytes] = []

    def fileno(self) -> int:
        return self._fd_sock.fileno()

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 9)

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        if not self.free:
            raise BlockingIOError
        self.sent.append(data)
        return len(data)


def _filled_pair() -> tuple[socket.socket, socket.socket]:
    """A Unix datagram pair whose first end is not writable (the other's queue is full)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    _fill(a)
    return a, b


def _make_room(b: socket.socket) -> None:
    while True:
        try:
            b.recv(1024)
        except BlockingIOError:
            return


def _fill(a: socket.socket) -> None:
    while True:  # fill the peer's queue: ``a`` is no longer writable
        try:
            a.send(b"x" * 512)
        except BlockingIOError:
            return


def _sender(
    transport: UdpTransport, outcome: list[object], check: Callable[[], None] | None = None
) -> Callable[[], Awaitable[None]]:
    """A task that sends one datagram and records "sent" or the ClosedResourceError."""

    async def send() -> None:
        try:
            await transport.send(b"data", ("127.0.0.1", 9), check)
            outcome.append("sent")
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    return send


async def test_a_blocked_send_survives_a_nudge_and_ends_on_close() -> None:
    """``notify_closing`` nudges a receiver waiting on the socket (data came another way);
    it wakes every waiter on that socket, a sender blocked in ``wait_writable`` too.  The
    send must carry on, and fail only when the transport really closes."""
    a, b = _filled_pair()
    with a, b:
        fake = _BlockedSocket(a)
        transport = UdpTransport(0, fake)  # type: ignore[arg-type]
        outcome: list[object] = []
        send = _sender(transport, outcome)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
                trio.lowlevel.notify_closing(a)  # a nudge, as ReceiveBuffer.nudge gives
                await trio.testing.wait_all_tasks_blocked()
                assert outcome == []  # still waiting to send
                fake.free = True
                _make_room(b)  # a is writable again
        assert outcome == ["sent"]
        assert fake.sent == [b"data"]

        # A real close ends a blocked send with ClosedResourceError.
        fake.free = False
        _fill(a)
        outcome.clear()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
                transport.closed = True
                trio.lowlevel.notify_closing(a)
        assert len(outcome) == 1 and isinstance(outcome[0], trio.ClosedResourceError)


async def test_two_sends_waiting_on_a_full_socket_take_turns() -> None:
    """Two tasks whose sends wait for the same full socket both get through once it has
    room (trio lets one task at a time wait for writability: the second used to get
    BusyResourceError)."""
    a, b = _filled_pair()
    with a, b:
        fake = _BlockedSocket(a)
        transport = UdpTransport(0, fake)  # type: ignore[arg-type]
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for data in (b"one", b"two"):
                    nursery.start_soon(transport.send, data, ("127.0.0.1", 9))
                await trio.testing.wait_all_tasks_blocked()
                assert fake.sent == []
                fake.free = True
                _make_room(b)
        assert sorted(fake.sent) == [b"one", b"two"]


@pytest.mark.parametrize("room", [False, True], ids=["", "room"])
async def test_a_waiting_send_gives_up_when_its_check_says_so(room: bool) -> None:
    """A send waiting for a full socket, woken (a nudge, as a Connection that closes gives),
    asks its ``check`` before it tries again: the connection's exception ends it.  Also
    when the socket has room by the time the send wakes (``room``): nothing is sent after
    the close (RFC 7675, after a failure)."""
    a, b = _filled_pair()
    with a, b:
        fake = _BlockedSocket(a)
        transport = UdpTransport(0, fake)  # type: ignore[arg-type]
        closed = False
        outcome: list[object] = []

        def check() -> None:
            if closed:
                raise trio.ClosedResourceError("the connection is closed")

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sender(transport, outcome, check))
                await trio.testing.wait_all_tasks_blocked()
                closed = True  # the connection closes, and wakes the send ...
                if room:
                    fake.free = True  # ... as room comes
                    _make_room(b)
                trio.lowlevel.notify_closing(a)
        assert len(outcome) == 1 and isinstance(outcome[0], trio.ClosedResourceError)
        if room:
            assert fake.sent == []


class _StubAgent:
    """What a Connection uses of its agent, around one transport."""

    def __init__(self, transport: UdpTransport) -> None:
        self._buffer = ReceiveBuffer(8)
        self._transports = {0: transport}
        self._closed = False
        self._selected_lost = None
        self._core = types.SimpleNamespace(
            state=trice.ConnectionState.CONNECTED,
            remote_addresses={},
            data_pair=object(),
            selected=object(),  # (the pair whose consent may expire)
            consent_revoked=False,
        )

    def _data_route(self) -> tuple[UdpTransport, tuple[str, int]]:
        return self._transports[0], ("127.0.0.1", 9)


@pytest.mark.parametrize("how", ["aclose", "consent expired"])
async def test_a_send_waiting_on_a_full_socket_ends_when_its_connection_does(how: str) -> None:
    """As with any trio channel, a send blocked when the connection closes raises
    ClosedResourceError; when the peer's consent expires, BrokenResourceError (it waited on,
    and sent after)."""
    a, b = _filled_pair()
    with a, b:
        fake = _BlockedSocket(a)
        agent = _StubAgent(UdpTransport(0, fake))  # type: ignore[arg-type]
        conn = Connection(agent, _key=_OPENING)  # type: ignore[arg-type]
        raised: list[BaseException] = []

        async def send() -> None:
            try:
                await conn.send(b"data")
            except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                raised.append(exc)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
                if how == "aclose":
                    await conn.aclose()
                else:
                    agent._core.state = trice.ConnectionState.FAILED
                    conn._stop_waiters()
        expected = trio.ClosedResourceError if how == "aclose" else trio.BrokenResourceError
        assert len(raised) == 1 and type(raised[0]) is expected
        assert how == "aclose" or "consent expired" in str(raised[0])
        assert fake.sent == []


@pytest.mark.parametrize(
    "error",
    [BlockingIOError(), InterruptedError(), OSError(errno.ENOBUFS, "No buffer space available")],
)
def test_send_nowait_reports_a_datagram_not_taken(error: OSError) -> None:
    """A full buffer (or queue): not taken, for the caller to wait for room."""

    class Refusing(_BlockedSocket):
        def sendto(self, data: bytes, address: tuple[str, int]) -> int:
            raise error

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        transport = UdpTransport(0, Refusing(s))  # type: ignore[arg-type]
        assert transport.send_nowait(b"x", ("127.0.0.1", 9)) is False


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENETUNREACH, errno.EADDRNOTAVAIL])
async def test_a_datagram_the_kernel_refuses_is_dropped_and_reported(code: int) -> None:
    """A firewall's EPERM, no route, an address gone: the datagram is dropped on the way (as
    a network may drop it; waiting for room would not help), and the transport's agent
    hears of it (it counts and logs it: test_firewall.py, with a real firewall)."""
    heard: list[tuple[int | None, tuple[str, int], tuple[str, int]]] = []

    class Agent:
        def _kernel_refused(
            self, exc: OSError, local: tuple[str, int], address: tuple[str, int]
        ) -> None:
            heard.append((exc.errno, local, address))

    class Refusing(_BlockedSocket):
        def sendto(self, data: bytes, address: tuple[str, int]) -> int:
            raise OSError(code, os.strerror(code))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        transport = UdpTransport(0, Refusing(s), Agent())  # type: ignore[arg-type]
        to = ("127.0.0.1", 9)
        assert transport.send_nowait(b"x", to) is True
        with trio.fail_after(5):
            await transport.send(b"y", to)
        assert heard == [(code, transport.local_address, to)] * 2


async def test_a_full_queue_is_not_taken_for_a_refusal() -> None:
    """ENOBUFS (a full queue, not a firewall): ``send_nowait`` says not taken, for the caller
    to wait; ``send`` drops it, as before; neither tells the agent of a refusal (its one
    warning, "a firewall? no route?", was spent on a full buffer)."""
    heard: list[int | None] = []

    class Agent:
        def _kernel_refused(
            self, exc: OSError, local: tuple[str, int], address: tuple[str, int]
        ) -> None:
            heard.append(exc.errno)

    class Full(_BlockedSocket):
        def sendto(self, data: bytes, address: tuple[str, int]) -> int:
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        transport = UdpTransport(0, Full(s), Agent())  # type: ignore[arg-type]
        assert transport.send_nowait(b"x", ("127.0.0.1", 9)) is False
        with trio.fail_after(5):
            await transport.send(b"y", ("127.0.0.1", 9))
    assert heard == []


async def test_paired_sockets_pass_for_udp_sockets_on_documentation_addresses() -> None:
    """The socket pair the shell's warm-up stands its agents on: each end reports its own
    address and takes every datagram to come from the other's, as a UDP socket bound there
    would; a UdpTransport and trio's waits work over it; closing frees both descriptors."""
    here, there = ("192.0.2.1", 9), ("192.0.2.2", 9)
    a, b = paired_sockets(here, there)
    ta, tb = UdpTransport(0, a), UdpTransport(1, b)  # type: ignore[arg-type]
    assert (ta.local_address, tb.local_address) == (here, there)
    assert ta.family == socket.AF_INET
    assert ta.send_nowait(b"to b", there)
    with trio.fail_after(5):
        await trio.lowlevel.wait_readable(b)
    assert b.recvfrom(2048) == (b"to b", here)
    with pytest.raises(BlockingIOError):
        b.recvfrom(2048)  # non-blocking, as the agent's reads expect
    await tb.send(b"to a", here)
    assert a.recvfrom(2048) == (b"to a", there)
    fds = (a.fileno(), b.fileno())
    ta.close()
    tb.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


class _Erring(socket.socket):
    """A UDP socket whose next ``errors`` reads fail as an ICMP error surfaces (counted in
    ``raised``), then read as they should."""

    errors = 0
    raised = 0

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        if self.errors:
            self.errors -= 1
            self.raised += 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        data, source = super().recvfrom(bufsize, flags)
        return data, source


async def test_connect_reading_its_socket_yields_through_a_run_of_socket_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """connect() reads the agent's socket itself while the peer is in another process (here
    pretended); a run of failed reads (ICMP errors surface as recvfrom's OSError) counts
    as reads: the other tasks get a turn every batch, not once the run is over."""
    from trice._trio import _agent, _gather

    from loopback import connect_both, loopback_config, signal

    erring: list[_Erring] = []
    bind = bind_socket

    def binding(*args: object, **kwargs: object) -> socket.socket:
        sock = bind(*args, **kwargs)  # type: ignore[arg-type]
        if sock.type != socket.SOCK_DGRAM:
            return sock
        wrapped = _Erring(sock.family, sock.type, sock.proto, fileno=sock.detach())
        wrapped.setblocking(False)
        erring.append(wrapped)
        return wrapped

    monkeypatch.setattr(_gather, "bind_socket", binding)
    monkeypatch.setattr(_agent.Agent, "_peer_elsewhere", lambda self: True)
    gaps: list[int] = []

    async def watch(sock: _Erring) -> None:
        seen = sock.raised
        while True:
            await trio.lowlevel.checkpoint()
            gaps.append(sock.raised - seen)
            seen = sock.raised

    async with (
        trice.open_agent(loopback_config(), controlling=True) as a,
        trice.open_agent(loopback_config(), controlling=False) as b,
        trio.open_nursery() as nursery,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        assert a._primary is not None
        (sock,) = [s for s in erring if s is a._primary.sock]
        nursery.start_soon(watch, sock)
        await trio.lowlevel.checkpoint()
        signal(a, b)
        sock.errors = 5000
        with trio.fail_after(10):
            await connect_both(a, b)
        nursery.cancel_scope.cancel()
    assert sock.raised == 5000
    assert max(gaps) <= 200, max(gaps)


_OUT_OF_DESCRIPTORS = """
import errno, os, resource
import trice
from trice._trio._transport import bind_socket

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError as exc:
    assert exc.errno == errno.EMFILE
try:
    bind_socket("127.0.0.1", None)
except trice.LimitError as exc:
    print("LimitError:", exc)
except OSError as exc:
    print("OSError:", exc)
"""


def test_a_socket_that_cannot_be_made_for_want_of_descriptors_is_a_limit_error() -> None:
    """The process's descriptor limit (EMFILE) reached as a socket is made: LimitError, as
    the docs of ``open_agent`` and ``restart(regather=True)`` say (the other test of it runs
    out earlier, as the interfaces are read)."""
    out = subprocess.run(
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.stdout.startswith("LimitError: out of file descriptors"), out.stdout + out.stderr


@pytest.mark.parametrize(
    ("size", "to", "said"),
    [
        (10_000, "127.0.0.1", "system refused"),
        (65_508, "127.0.0.1", "more than UDP"),
        (65_508, "::1", "system refused"),
        (65_528, "::1", "more than UDP"),
    ],
)
def test_emsgsize_says_whose_limit_it_was(size: int, to: str, said: str) -> None:
    """EMSGSIZE for a datagram UDP can carry (65,507 bytes over IPv4, 65,527 over IPv6) is
    the system's own limit (macOS takes 9,216 bytes by default) or a path MTU: said so, not
    "more than UDP carries"."""
    exc = OSError(errno.EMSGSIZE, os.strerror(errno.EMSGSIZE))
    with pytest.raises(trice.UsageError, match=said):
        _transport.refused(exc, bytes(size), closed=False, address=(to, 9))


class _PortsTaken:
    """Stands for a UDP socket whose binds to ``taken`` ports fail (EADDRINUSE)."""

    def __init__(self, taken: set[int]) -> None:
        self.taken = taken
        self.tried: list[int] = []

    def bind(self, address: tuple[str, int]) -> None:
        self.tried.append(address[1])
        if address[1] in self.taken:
            raise OSError(errno.EADDRINUSE, "Address already in use")


def test_a_udp_socket_binds_a_port_of_the_ephemeral_range_named_not_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A UDP socket binds a port it names (the system keeps a named port through
    SOCK_DESTROY, see tests/test_destroyed.py): of the ephemeral range, not reserved, not
    taken; picked at random, then, after ``_NAMED_TRIES`` unlucky picks, the range gone
    through in order (the system's choice, which it may take back, came after 8 picks); the
    system's choice (port 0) only where none is free."""
    monkeypatch.setattr(_transport, "_namespace_ports", lambda sock: (100, 104, (range(101, 102),)))
    picks = iter([0, 1, 3])  # (the random picks)
    monkeypatch.setattr(secrets, "randbelow", lambda n: next(picks))
    sock = _PortsTaken({100})
    _transport.bind_named(sock, "127.0.0.1")  # type: ignore[arg-type]
    assert sock.tried == [100, 103]  # (taken; 101 reserved, not tried; free)
    monkeypatch.setattr(secrets, "randbelow", lambda n: 0)  # (every pick the port taken)
    sock = _PortsTaken({100, 102})
    _transport.bind_named(sock, "127.0.0.1")  # type: ignore[arg-type]
    assert sock.tried == [100] * 8 + [100, 102, 103]
    sock = _PortsTaken({100, 102, 103, 104})
    _transport.bind_named(sock, "127.0.0.1")  # type: ignore[arg-type]
    assert sock.tried[-1] == 0


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's SOCK_DESTROY: elsewhere port 0")
def test_bind_socket_names_the_port_of_a_udp_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    named: list[str] = []
    real = _transport.bind_named

    def bind_named(sock: socket.socket, address: str) -> None:
        named.append(address)
        real(sock, address)

    monkeypatch.setattr(_transport, "bind_named", bind_named)
    with bind_socket("127.0.0.1", None) as sock:
        low, high, _ = _transport._ephemeral_ports()
        assert low <= sock.getsockname()[1] <= high
    with bind_socket("127.0.0.1", None, kind=socket.SOCK_STREAM):
        pass  # (a listener's port is the system's choice)
    assert named == ["127.0.0.1"]


def _sockets_say_their_namespace() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return _transport.netns_cookie(sock) is not None


@pytest.mark.skipif(
    not _sockets_say_their_namespace(),
    reason="sockets here do not say their network namespace (SO_NETNS_COOKIE, Linux 5.14)",
)
def test_the_ephemeral_range_is_read_once_a_second_in_a_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Binds in one network namespace within ``_PORTS_TTL`` share one read of the range
    (two files of /proc, some 17 µs: a tenth of an agent's opening and gathering); the
    next second's bind reads it again (an administrator's change shows)."""
    reads: list[int] = []
    real = _transport._ephemeral_ports

    def counted() -> tuple[int, int, tuple[range, ...]]:
        reads.append(1)
        return real()

    now = [1000.0]
    monkeypatch.setattr(_transport, "_ephemeral_ports", counted)
    monkeypatch.setattr(_transport, "_ports_read", {})
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    for _ in range(3):
        with bind_socket("127.0.0.1", None):
            pass
    assert len(reads) == 1
    now[0] += _transport._PORTS_TTL
    with bind_socket("127.0.0.1", None):
        pass
    assert len(reads) == 2


def test_the_ephemeral_range_is_the_systems() -> None:
    low, high, reserved = _transport._ephemeral_ports()
    assert 0 < low <= high <= 65535
    if os.path.exists("/proc/sys/net/ipv4/ip_local_port_range"):
        with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
            assert (low, high) == tuple(int(f) for f in file.read().split())
    assert all(isinstance(ports, range) for ports in reserved)


def test_the_ephemeral_range_is_the_namespaces_of_the_binding_thread() -> None:
    """The range and the reserved ports are a network namespace's: a thread that entered
    another namespace binds in that one's (they were read once a process, from the first;
    then once a namespace, by its inode, which the kernel gives the next namespace when
    one goes: the one after it bound in the range of the one gone, the p35pass5 review)."""
    require_natlab(turn=False)
    _transport._ephemeral_ports()  # (read here first)
    for low in (40000, 50000):  # (the second namespace may take the first's inode)
        with lone_namespace("ports") as ns:
            ns.sysctl(f"net.ipv4.ip_local_port_range={low} {low + 9}")
            ns.sysctl(f"net.ipv4.ip_local_reserved_ports={low}-{low + 4}")
            ports: list[int] = []

            def in_thread(ns: Namespace = ns, ports: list[int] = ports) -> None:
                with entered(ns):
                    for _ in range(3):
                        with bind_socket("127.0.0.1", None) as sock:
                            ports.append(sock.getsockname()[1])

            thread = threading.Thread(target=in_thread)
            thread.start()
            thread.join(20)
        assert len(ports) == 3 and all(low + 5 <= port <= low + 9 for port in ports), ports


def test_every_reserved_port_is_read_however_long_the_list() -> None:
    """Every other port of the range reserved (some 80 KiB of text): all are read.  The
    kernel gives a bitmap's text to one read only, and 64 KiB cut the list, its last number
    in half (the p35pass6 review)."""
    require_natlab(turn=False)
    script = (
        "from trice._trio import _transport\n"
        "low, high, reserved = _transport._ephemeral_ports()\n"
        "print(sum(len(r) for r in reserved), min(r.start for r in reserved),"
        " max(r.stop for r in reserved) - 1)\n"
    )
    with lone_namespace("reserved") as ns:
        ns.sysctl("net.ipv4.ip_local_port_range=32768 60999")
        reserved = ",".join(str(port) for port in range(32768, 60999, 2))
        ns.check_output(
            ["sh", "-c", f"echo {reserved} > /proc/sys/net/ipv4/ip_local_reserved_ports"]
        )
        count, first, last = ns.check_output([sys.executable, "-c", script]).split()
    assert (int(count), int(first), int(last)) == (len(range(32768, 60999, 2)), 32768, 60998)
