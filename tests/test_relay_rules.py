"""Rules of the TURN relay transport (trice/_trio/_relay.py) that the other relay tests did
not pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through): what the UDP socket to the server does on the errors the system gives it, the
room a TCP relay's buffers keep and when the sends waiting for it go on, what a probe, a
refused permission, a lost connection and an ICMP error do to a relay, how long closing waits,
and how a server's addresses are tried and a TLS server's failures named.  Fake sockets, a
lockstep stream and test_turn's FakeServer stand in for the server; the few real sockets are
on loopback."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import struct
from typing import Any

import pytest
import trio
import trio.testing
from test_turn import FakeServer, allocated

import trice
from trice import ServerUrl, stun
from trice._trio import _relay
from trice._trio._relay import RelayTransport
from trice.stun import Method
from trice.turn import AllocationError, StreamFramer, TurnClient, TurnState

from coturn import PASSWORD, USER

SERVER = ("127.0.0.1", 3478)
TCP_SERVER = ServerUrl("turn", "127.0.0.1", port=3478, transport="tcp")
PEER = ("192.0.2.10", 6000)


def _ignore(*_: object) -> None:
    """A relay's ``deliver`` that drops what the peers send."""


# -- the UDP socket to the server and the system's errors ------------------------------------


class _FakeUdp:
    """Stands in for the connected UDP socket to the server: ``recv`` hands out ``script``
    in order (an exception in it is raised), ``send`` raises ``send_error`` if set, and
    ``connect`` is recorded."""

    def __init__(self, script: list[bytes | BaseException], send_error: int = 0) -> None:
        self.script = script
        self.send_error = send_error
        self.connects: list[Any] = []

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 40000)

    def recv(self, size: int) -> bytes:
        if not self.script:
            raise BlockingIOError
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def send(self, data: bytes) -> int:
        if self.send_error:
            raise OSError(self.send_error, "fake")
        return len(data)

    def connect(self, address: Any) -> None:
        self.connects.append(address)


def _udp(fake: _FakeUdp) -> _relay._UdpConnection:
    return _relay._UdpConnection(fake, SERVER)  # type: ignore[arg-type]


def test_a_send_refused_for_want_of_a_destination_connects_to_the_server_again() -> None:
    """EDESTADDRREQ on a send (the socket shut down by ``ss -K``, then sent to): the socket
    is connected to the server again (mutant: only ECONNABORTED reconnects)."""
    fake = _FakeUdp([], send_error=errno.EDESTADDRREQ)
    assert not _udp(fake).write(b"x")
    assert fake.connects == [SERVER]


async def test_a_read_that_meets_econnaborted_connects_to_the_server_again() -> None:
    """ECONNABORTED on a read: the socket is connected again, and what was read before it
    is returned (mutant: ``errno != ECONNABORTED``)."""
    fake = _FakeUdp([b"first", OSError(errno.ECONNABORTED, "aborted")])
    assert await _udp(fake).read() == [b"first"]
    assert fake.connects == [SERVER]


async def test_an_icmp_refusal_after_a_datagram_keeps_the_datagram() -> None:
    """A read that took a datagram, then meets ECONNREFUSED, returns the datagram; the
    refusal is said at the next read (mutant: raised at once, the datagram lost)."""
    fake = _FakeUdp([b"answer", ConnectionRefusedError(errno.ECONNREFUSED, "refused")])
    conn = _udp(fake)
    assert await conn.read() == [b"answer"]
    fake.script.append(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    with pytest.raises(_relay._Lost) as info:
        await conn.read()
    assert info.value.reason == "unreachable"


# -- a TCP relay's buffers and the sends that wait for room ----------------------------------


def _undrained() -> tuple[_relay._StreamConnection, trio.abc.Stream]:
    """A stream connection to the server over a lockstep stream nothing drains (unless
    the test reads the server's end, returned with it)."""
    stream, server_end = trio.testing.lockstep_stream_pair()
    return _relay._StreamConnection(stream, "127.0.0.1"), server_end


def _refresh_frame(size: int) -> bytes:
    """A Refresh request with ``size`` bytes of attributes (as a frame, never decoded)."""
    return struct.pack("!HHI12s", 0x0004, size, 0x2112A442, b"t" * 12) + bytes(size)


async def test_the_clients_requests_have_twice_the_room_of_data() -> None:
    """The client's requests have room up to twice STREAM_BUFFER_LIMIT on a stream that
    nothing drains, a reserve data never reaches (mutant: up to the limit only)."""
    conn, _server_end = _undrained()
    frame = _refresh_frame(60_000)
    taken = 0
    while taken + len(frame) <= 3 * _relay.STREAM_BUFFER_LIMIT // 2:
        assert conn.write(frame), taken
        taken += len(frame)
    assert len(conn.urgent) > _relay.STREAM_BUFFER_LIMIT


async def test_a_flush_wakes_the_waiting_sends_once_half_the_buffer_went() -> None:
    """A flush under way sets ``drained`` as soon as the data waiting is at most half the
    limit, not only once all of it was written (mutant: only at the end: a slow uplink
    keeps every send waiting until the whole megabyte went)."""
    conn, server_end = _undrained()
    frame = b"\x40\x00" + struct.pack("!H", 1000) + bytes(1000)  # (ChannelData)
    while conn.write(frame):
        pass
    total = len(conn.pending)
    woken = trio.Event()

    async def waiter() -> None:
        await conn.wait_writable()
        woken.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.flush)
            nursery.start_soon(waiter)
            got = 0
            while got < total // 2 + 2 * _relay.STREAM_PIECE:
                got += len(await server_end.receive_some(65536))
            await trio.testing.wait_all_tasks_blocked()
            woken_early = woken.is_set()  # (some 400 KiB still to go)
            while got < total:  # (the rest, for the shielded flush to end)
                got += len(await server_end.receive_some(65536))
    assert woken_early


def _backed_up_relay() -> tuple[RelayTransport, _relay._StreamConnection]:
    """A relay (not allocated) over a stream nothing drains, its data buffer more than
    half full."""
    conn, _server_end = _undrained()
    client = TurnClient(USER, PASSWORD, reliable=True)
    conn.pending += b"x" * (_relay.STREAM_BUFFER_LIMIT // 2 + 1)
    return RelayTransport(7, TCP_SERVER, client, conn, _ignore), conn


async def test_dropping_the_data_wakes_the_sends_waiting_for_room() -> None:
    """drop_data() (consent expired) empties the backed-up buffer, and the sends waiting
    for room go on (mutant: ``conn.drained.set()`` left out: they wait for good)."""
    relay, conn = _backed_up_relay()
    done = trio.Event()

    async def send() -> None:
        await relay.send(b"data", PEER)  # (not allocated: dropped)
        done.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            relay.drop_data()
            assert not conn.pending
            await trio.testing.wait_all_tasks_blocked()
            assert done.is_set()


async def test_a_send_woken_while_the_stream_is_still_backed_up_waits_on() -> None:
    """wake() (another pair selected) makes a waiting send ask ``check``; if that does
    not give up, the send waits for room again, not putting the datagram into a full
    buffer (mutant: it goes on to send_nowait at once)."""
    relay, _conn = _backed_up_relay()
    checked: list[int] = []
    done = trio.Event()

    async def send() -> None:
        with contextlib.suppress(trio.ClosedResourceError):  # (the close at the end)
            await relay.send(b"data", PEER, check=lambda: checked.append(1))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        relay.wake()
        await trio.testing.wait_all_tasks_blocked()
        assert checked == [1]
        assert not done.is_set()  # (still waiting for room)
        relay.close()


# -- probes, refused permissions, errors and retransmissions ---------------------------------


def _allocated_relay() -> tuple[RelayTransport, _relay._StreamConnection, FakeServer]:
    """A relay whose client is allocated (at time 0), over a stream nothing drains."""
    client, fake = allocated(reliable=True)
    conn, _server_end = _undrained()
    return RelayTransport(7, TCP_SERVER, client, conn, _ignore), conn, fake


async def test_a_probe_ended_by_close_says_false(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A relay closed while probe() waits: False, though the client still says ALLOCATED
    (the deletion not yet sent) (mutant: ``not self._closed`` dropped)."""
    relay, _conn, _fake = _allocated_relay()
    result: list[bool] = []

    async def probe() -> None:
        result.append(await relay.probe())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.testing.wait_all_tasks_blocked()
        relay.close()
    assert relay.state is TurnState.ALLOCATED
    assert result == [False]


def test_refused_permissions_are_warned_of_for_the_first_16_peers_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Peers whose permissions the server refused are warned of, the first
    _REFUSALS_WARNED (16) of them; the rest are logged below WARNING (mutant:
    ``len(_refused) > _REFUSALS_WARNED``: every peer warned of)."""
    client = TurnClient(USER, PASSWORD, reliable=True)
    conn, _server_end = _undrained()
    relay = RelayTransport(7, TCP_SERVER, client, conn, _ignore)
    for number in range(20):
        client.refusals[f"198.51.100.{number + 1}"] = "403 Forbidden"
    with caplog.at_level(logging.DEBUG, logger="trice"):
        relay._pump()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == _relay._REFUSALS_WARNED == 16


async def test_the_first_error_of_a_relay_is_the_one_it_keeps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Refresh refused with 437, then the connection lost: ``error`` says the 437
    (mutant: ``and self.error is None`` dropped: the later loss replaced it)."""
    relay, conn, fake = _allocated_relay()
    fake.errors[Method.REFRESH] = (437, "Allocation Mismatch")
    relay.refresh_now()
    request = bytes(conn.urgent)
    conn.urgent.clear()
    relay._take(fake.handle(request, trio.current_time()))
    assert relay.error is not None and relay.error.code == 437
    relay._lost(_relay._Lost("connection to the server lost", "connection lost"))
    assert relay.error.code == 437


class _OneIcmpError:
    """A UDP connection to the server whose first read meets an ICMP error, then waits."""

    reliable = False
    source = "127.0.0.1"

    def __init__(self) -> None:
        self.reads = 0

    async def read(self) -> list[bytes]:
        self.reads += 1
        if self.reads == 1:
            raise _relay._Lost("unreachable (Connection refused)", "unreachable")
        await trio.sleep_forever()
        raise AssertionError


async def test_an_icmp_error_once_allocated_keeps_the_relay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once allocated, an ICMP error on the UDP socket to the server is passed over (UDP
    carries on; the refreshes tell if the server is gone) (mutant: it ends the relay)."""
    client, _fake = allocated()
    conn = _OneIcmpError()
    server = ServerUrl("turn", "127.0.0.1", port=3478)
    relay = RelayTransport(7, server, client, conn, _ignore)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay._read_loop)
        await trio.testing.wait_all_tasks_blocked()
        assert conn.reads == 2
        assert not relay.closed, relay.error
        nursery.cancel_scope.cancel()


async def test_a_permission_lost_on_the_way_is_asked_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """send_nowait to a new peer sends a CreatePermission and wakes the relay's timer for
    its retransmissions: over UDP a lost one is sent again within seconds (mutant: the
    timer not woken, asleep until the Refresh, minutes away).  (The 5 s slept are virtual:
    the retransmission's timing is what is pinned.)"""
    client, _fake = allocated()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server_sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        server_sock.bind(("127.0.0.1", 0))
        server_sock.setblocking(False)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        sock.connect(server_sock.getsockname())
        conn = _relay._UdpConnection(sock, server_sock.getsockname())
        server = ServerUrl("turn", "127.0.0.1", port=server_sock.getsockname()[1])
        relay = RelayTransport(7, server, client, conn, _ignore)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay._timer_loop)
            await trio.testing.wait_all_tasks_blocked()
            relay.send_nowait(b"data", ("198.51.100.20", 6000))
            await trio.sleep(5)  # (the server, silent, answers nothing)
            nursery.cancel_scope.cancel()
        methods = []
        while True:
            try:
                methods.append(stun.decode(server_sock.recv(2048)).method)
            except BlockingIOError:
                break
    assert methods.count(Method.CREATE_PERMISSION) >= 2, methods


# -- closing ---------------------------------------------------------------------------------


def test_closing_waits_two_and_a_half_round_trips_of_a_far_server() -> None:
    """DEALLOCATE_WAIT's rule: 2.5 round trips, from 0.5 s up to 2 s (mutant: 2)."""

    class _Far:
        round_trip: float | None = 0.6

    far = _Far()
    assert _relay._deallocate_wait(far) == pytest.approx(1.5)  # type: ignore[arg-type]
    far.round_trip = None
    assert _relay._deallocate_wait(far) == _relay.DEALLOCATE_WAIT  # type: ignore[arg-type]


async def test_closing_a_tcp_relay_whose_server_stopped_reading_ends_soon() -> None:
    """A TCP relay whose server stops reading while a piece of data is being written (the
    writer's send_all, shielded, blocked on a full socket): closing ends within about
    DEALLOCATE_WAIT, the write cut (mutant: ``_bound_on_end`` sets no bound: the relay's
    nursery waits for the shielded write, here until the server gives up 5 s later; with a
    server that never does, for ever).  (Real time: the write blocks on a real loopback
    socket the kernel filled, and closing's duration is what is pinned.)"""
    fake = FakeServer()
    stop = trio.Event()

    async def serve(listener: trio.SocketListener) -> None:
        stream = await listener.accept()
        framer = StreamFramer()
        async with stream:
            while not stop.is_set():
                data = await stream.receive_some(65536)
                if not data:
                    return
                if stop.is_set():
                    break
                for frame in framer.feed(data):
                    for reply in fake.handle(frame, trio.current_time()):
                        await stream.send_all(reply)
            await trio.sleep(5)  # (then gives up: the mutant's relay ends only now)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server = ServerUrl("turn", "127.0.0.1", port=port, transport="tcp")
    big = 32 << 20  # (more than loopback's socket buffers hold)
    async with trio.open_nursery() as outer:
        outer.start_soon(serve, listeners[0])
        async with trio.open_nursery() as nursery:
            relay: RelayTransport = await nursery.start(
                lambda task_status: _relay.run_relay(
                    server, USER, PASSWORD, base=7, deliver=_ignore, task_status=task_status
                )
            )
            conn = relay._conn
            assert isinstance(conn, _relay._StreamConnection)
            stop.set()
            conn.pending += bytes(big)
            conn.sizes.append(big)
            conn.wake.set()
            # (Every task blocked: the writer's send_all waits on the full socket.)
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            assert conn.sending
            began = trio.current_time()
            relay.close()
        took = trio.current_time() - began
        outer.cancel_scope.cancel()
    await listeners[0].aclose()
    assert took < 2.0, took


# -- connecting: a server's addresses, TLS and proxies ---------------------------------------


def test_a_handshake_failure_other_than_the_certificate_is_tls() -> None:
    """A TLS handshake that fails for another reason than the server's certificate is a
    "tls" loss (mutant: every SSLError taken for a rejected certificate)."""
    lost = _relay._handshake_failed(ssl.SSLError(1, "wrong version number"), _relay._Lost)
    assert lost.reason == "tls"


def test_a_servers_addresses_take_turns_by_family_the_first_family_first() -> None:
    """RFC 8305 §4: the addresses alternate by family, the family of the first address
    first (mutant: the other family's address first)."""
    v4a = (socket.AF_INET, ("192.0.2.1", 3478))
    v4b = (socket.AF_INET, ("192.0.2.2", 3478))
    v6 = (socket.AF_INET6, ("2001:db8::1", 3478, 0, 0))
    assert _relay._interleaved([v4a, v4b, v6]) == [v4a, v6, v4b]
    assert _relay._interleaved([v6, v4a, v4b]) == [v6, v4a, v4b]


async def test_a_tls_handshake_that_stalls_past_an_open_tunnel_is_the_servers_timeout() -> None:
    """A ``turns:`` server through an HTTP proxy: the proxy opens the tunnel, then the TLS
    handshake gets no answer: the timeout is the connection's ("timeout", "no connection
    within"), not the proxy's (mutant: ``in_tunnel[0]`` left true once the tunnel is open:
    "proxy timeout", "no tunnel from proxy", blaming a proxy that did its part).  (Real
    time, 1 s: the timeout races real loopback I/O, which an autojumping clock could pass
    before the tunnel opens.)"""

    async def proxy(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
        await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await trio.sleep_forever()  # (the tunnel carries nothing: a silent server)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    proxy_url = trice.ProxyUrl.parse(f"http://127.0.0.1:{port}")
    server = ServerUrl("turns", "127.0.0.1", port=5349, transport="tcp")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, proxy, listeners)
        with pytest.raises(AllocationError) as info:
            await _relay.run_relay(
                server,
                USER,
                PASSWORD,
                base=7,
                deliver=_ignore,
                ssl_context=ssl.create_default_context(),
                timeout=1.0,
                proxy=proxy_url,
            )
        nursery.cancel_scope.cancel()
    assert info.value.reason == "timeout", info.value
    assert "no connection within" in str(info.value)
