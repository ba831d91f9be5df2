"""The trio relay transport against a real coturn on loopback (UDP, TCP and TLS).

Each test starts its own ``turnserver`` on free 127.0.0.1 ports (tests/coturn.py) and stops it
by PID; the tests skip when coturn is not installed.  Timeouts are checked in virtual time
(``autojump_clock``) against a silent socket or an in-process scripted server, and against
coturn by making the slow path's timeout far longer than the test's hang guard.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import pathlib
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from test_turn import MAPPED, PEER, RELAYED, FakeServer, allocated, exchange

import trice
from trice import (
    CandidateType,
    ConfigError,
    IceServer,
    ServerUrl,
    TransportPolicy,
    TurnError,
    UsageError,
    open_agent,
    stun,
)
from trice._trio import _relay
from trice._trio._relay import RelayTransport, run_relay
from trice._trio._transport import READ_BATCH
from trice.turn import AllocationError, StreamFramer, TurnClient, TurnState
from trice.turn._client import SEND_INDICATION

from coturn import PASSWORD, USER, Coturn, free_port, require_turnserver, run_coturn
from loopback import (
    HAS_IPV6,
    answer_check,
    connect_both,
    gathered_pair,
    hold_readers,
    loopback_config,
    resolving,
    room_for_a_flood,
    signal,
    until,
)
from virtual_time import wall_clock_guard

Address = tuple[str, int]
Received = tuple[bytes, Address]

#: An allocation timeout for tests where coturn (or the kernel) answers at once: far longer
#: than HANG_GUARD, so that waiting for it instead of the answer fails the test.
SLOW_PATH = 30.0
#: Bounds a step that takes milliseconds; it only trips on a hang or on waiting for SLOW_PATH.
HANG_GUARD = 10.0


@pytest.fixture
def coturn() -> Iterator[Coturn]:
    with run_coturn() as server:
        yield server


@pytest.fixture
def coturn_tls() -> Iterator[Coturn]:
    require_turnserver()
    with run_coturn(tls=True) as server:
        yield server


def url(server: Coturn, transport: str) -> ServerUrl:
    if transport == "tls":
        assert server.tls_port is not None
        return ServerUrl("turns", "127.0.0.1", port=server.tls_port, transport="tcp")
    return ServerUrl("turn", "127.0.0.1", port=server.port, transport=transport)


class Inbox:
    """A ``deliver`` callback that keeps what arrived in a memory channel."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Received](100)

    def __call__(self, transport: RelayTransport, data: bytes, peer: Address) -> None:
        self.send.send_nowait((data, peer))


async def start_relay(
    nursery: trio.Nursery,
    server: ServerUrl,
    inbox: Inbox,
    *,
    password: str = PASSWORD,
    ssl_context: ssl.SSLContext | None = None,
    allocation_timeout: float = 3.0,
) -> RelayTransport:
    relay: RelayTransport = await nursery.start(
        lambda task_status: run_relay(
            server,
            USER,
            password,
            base=7,
            deliver=inbox,
            ssl_context=ssl_context,
            timeout=allocation_timeout,
            task_status=task_status,
        )
    )
    return relay


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- allocation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_allocate(transport: str) -> None:
    require_turnserver()
    with run_coturn(tls=transport == "tls") as server:
        context = server.tls_context() if transport == "tls" else None
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                relay = await start_relay(
                    nursery, url(server, transport), Inbox(), ssl_context=context
                )
                assert relay.state is TurnState.ALLOCATED
                assert relay.base == 7
                assert relay.local_address[0] == "127.0.0.1"
                assert relay.local_address[1] > 0
                assert relay.mapped_address is not None
                assert relay.mapped_address[0] == "127.0.0.1"
                assert relay.server == url(server, transport)
                nursery.cancel_scope.cancel()
            assert relay.closed
            # The server confirmed the deallocation.
            assert relay.state.value == TurnState.CLOSED.value


async def test_tls_rejects_an_unknown_certificate(coturn_tls: Coturn) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(AllocationError) as info:
                await start_relay(nursery, url(coturn_tls, "tls"), Inbox())  # system CAs only
    assert info.value.reason == "certificate"
    assert str(url(coturn_tls, "tls")) in str(info.value)


async def test_the_systems_authorities_are_loaded_once_off_the_event_loop(
    coturn_tls: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turns: relay with no ssl_context checks the server against the system's
    authorities: loaded once a process, in a worker thread.  They were loaded in the trio
    thread at each connection (30-70 ms here, every task of the process waiting)."""
    threads: list[str] = []
    test_ca = coturn_tls.tls_context()  # (the test CA's: the "system's" here)

    def default_context() -> ssl.SSLContext:
        threads.append(threading.current_thread().name)
        return test_ca

    monkeypatch.setattr(ssl, "create_default_context", default_context)
    monkeypatch.setattr(_relay, "_default_context", None)
    trio_thread = threading.current_thread().name
    for _ in range(2):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                relay = await start_relay(nursery, url(coturn_tls, "tls"), Inbox())
                assert relay.state is TurnState.ALLOCATED
                nursery.cancel_scope.cancel()
    assert len(threads) == 1 and threads[0] != trio_thread


async def test_wrong_password_is_401(coturn: Coturn) -> None:
    # The 401 ends the allocation at once: the guard trips long before the allocation timeout.
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            with pytest.raises(TurnError) as info:  # nursery.start raises it bare
                await start_relay(
                    nursery,
                    url(coturn, "udp"),
                    Inbox(),
                    password="nope",
                    allocation_timeout=SLOW_PATH,
                )
    error = info.value
    assert isinstance(error, AllocationError)
    assert error.code == 401
    assert "wrong credentials" in str(error)
    assert f"127.0.0.1:{coturn.port}" in str(error)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_nobody_listening_is_unreachable(transport: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    server = ServerUrl("turn", "127.0.0.1", port=port, transport=transport)
    # The ICMP error (UDP) or the reset (TCP) ends it at once, not the allocation timeout.
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            with pytest.raises(AllocationError) as info:
                await start_relay(nursery, server, Inbox(), allocation_timeout=SLOW_PATH)
    assert info.value.reason == "unreachable"
    assert str(server) in str(info.value)


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("closes the connection", "connection closed"),
        ("writes no STUN", "garbled stream"),
        ("writes a frame, then no STUN", "garbled stream"),
    ],
)
async def test_a_tcp_server_that_breaks_the_stream_ends_the_allocation_at_once(
    behaviour: str, reason: str
) -> None:
    """Over TCP, a server (here the test's) that closes the connection after the Allocate
    request, or answers with what no STUN or ChannelData framing can read (also right
    behind a whole frame, in one read: a BufferError escaped the relay and ended the agent),
    ends the allocation at once with an AllocationError naming the reason, not at the
    timeout."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)  # the Allocate request
            if behaviour != "closes the connection":
                junk = stun.Message(stun.Method.BINDING, stun.MessageClass.INDICATION).encode()
                frame = junk if behaviour == "writes a frame, then no STUN" else b""
                await stream.send_all(frame + b"\xff" * 64)
                await stream.receive_some(65536)  # (until the client hangs up)

    async with trio.open_nursery() as servers:
        servers.start_soon(trio.serve_listeners, serve, listeners)
        server = ServerUrl("turn", "127.0.0.1", port=port, transport="tcp")
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                with pytest.raises(AllocationError) as info:
                    await start_relay(nursery, server, Inbox(), allocation_timeout=SLOW_PATH)
        servers.cancel_scope.cancel()
    assert info.value.reason == reason
    assert str(server) in str(info.value)


def _unknown_ca() -> Any:
    import trustme

    return trustme.CA()


#: A CA that signed no certificate the tests' clients hold.
_UNKNOWN_CA = _unknown_ca()


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server's TLS context with a certificate for 127.0.0.1, and a client's that trusts
    it (a fresh trustme CA)."""
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("closes TLS", "connection closed"),
        ("closes TCP under TLS", "connection lost"),
        ("writes no STUN", "garbled stream"),
        ("writes no TLS", "tls"),
        ("wants a client certificate", "tls"),
    ],
)
async def test_a_tls_server_that_ends_the_stream_ends_the_allocation_at_once(
    behaviour: str, reason: str
) -> None:
    """Over TLS, whose records the relay decrypts itself: a server that closes TLS
    (close_notify) closed the connection; one whose TCP connection ends without it lost
    it; TLS that carries what is not STUN is a garbled stream.  One that writes what is
    not TLS, or refuses the handshake once the client's side is done (TLS 1.3: a client
    certificate it wants), ends it with TLS's error (reason ``"tls"``; the message and the
    cause say it): it was "connection lost", saying nothing of it (the pionturntls
    review).  Each ends the allocation at once."""
    server_context, client_context = _tls_contexts()
    if behaviour == "wants a client certificate":
        server_context.verify_mode = ssl.CERT_REQUIRED
        server_context.load_verify_locations(cadata=_UNKNOWN_CA.cert_pem.bytes().decode())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve(tcp: trio.SocketStream) -> None:
        async with tcp:
            tls = trio.SSLStream(tcp, server_context, server_side=True)
            if behaviour == "wants a client certificate":
                await _refuse_the_handshake(tcp, server_context)
                return
            await tls.receive_some(65536)  # the Allocate request
            if behaviour == "closes TLS":
                await tls.aclose()
            elif behaviour == "writes no STUN":
                await tls.send_all(b"\xff" * 64)
            elif behaviour == "writes no TLS":
                await tcp.send_all(b"\xff" * 64)
            if behaviour != "closes TCP under TLS":
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await tcp.receive_some(65536)  # (until the client hangs up)

    async with trio.open_nursery() as servers:
        servers.start_soon(trio.serve_listeners, serve, listeners)
        server = ServerUrl("turns", "127.0.0.1", port=port, transport="tcp")
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                with pytest.raises(AllocationError) as info:
                    await start_relay(
                        nursery,
                        server,
                        Inbox(),
                        ssl_context=client_context,
                        allocation_timeout=SLOW_PATH,
                    )
        servers.cancel_scope.cancel()
    assert info.value.reason == reason
    assert str(server) in str(info.value)
    if reason == "tls":
        assert "TLS" in str(info.value), str(info.value)
        assert isinstance(info.value.__cause__, _relay._Lost)
        assert isinstance(info.value.__cause__.__cause__, ssl.SSLError)


async def _refuse_the_handshake(tcp: trio.SocketStream, context: ssl.SSLContext) -> None:
    """A TLS server's side of a handshake it refuses, whose alert goes to the client
    (trio's SSLStream sends none), which then hangs up."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await tcp.receive_some(65536):
            incoming.write(data)
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                await tcp.send_all(outgoing.read())  # (the alert)
                continue
            await tcp.send_all(outgoing.read())


async def test_silent_server_times_out(autojump_clock: trio.testing.MockClock) -> None:
    # Virtual time (tests/virtual_time.py): nothing ever answers, so the clock may jump
    # whenever every task waits, and the allocation timeout is met exactly however loaded
    # the machine is.
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))  # bound, never read: requests vanish without ICMP
        hole.setblocking(False)
        server = ServerUrl("turn", "127.0.0.1", port=hole.getsockname()[1])
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            with pytest.raises(AllocationError) as info:
                await start_relay(nursery, server, Inbox(), allocation_timeout=0.8)
        elapsed = trio.current_time() - start
        allocates = 0
        while True:
            try:
                hole.recv(2048)
            except BlockingIOError:
                break
            allocates += 1
    # Given up at the allocation timeout: not before, and not at the end of the (39.5 s)
    # retransmission schedule of RFC 8489 §6.2.1.
    assert elapsed == pytest.approx(0.8)
    assert allocates >= 2  # retransmitted (the initial RTO is 0.5 s) until then
    assert info.value.reason == "timeout"
    assert info.value.code is None
    assert str(server) in str(info.value)


async def test_stun_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        await run_relay(ServerUrl.parse("stun:127.0.0.1"), USER, PASSWORD, base=1, deliver=Inbox())


# --- data ---------------------------------------------------------------------------------------


async def exchange_until(
    a: RelayTransport, b_address: Address, inbox: Inbox, payload: bytes, sender: Address
) -> None:
    """Send from *a* every 20 ms until *inbox* gets *payload* from *sender*."""
    while True:
        a.send_nowait(payload, b_address)
        with trio.move_on_after(0.02):
            data, peer = await inbox.receive.receive()
            if data == payload and peer == sender:
                return


@pytest.mark.parametrize("transports", [("udp", "udp"), ("tcp", "tls")])
async def test_two_relays_both_ways(transports: tuple[str, str]) -> None:
    require_turnserver()
    with run_coturn(tls=True) as server:
        context = server.tls_context()
        inbox_a, inbox_b = Inbox(), Inbox()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                a = await start_relay(
                    nursery, url(server, transports[0]), inbox_a, ssl_context=context
                )
                b = await start_relay(
                    nursery, url(server, transports[1]), inbox_b, ssl_context=context
                )
                # B needs a permission for A before coturn relays A's data to it, so both send.
                async with trio.open_nursery() as both:
                    both.start_soon(
                        exchange_until, a, b.local_address, inbox_b, b"a->b", a.local_address
                    )
                    both.start_soon(
                        exchange_until, b, a.local_address, inbox_a, b"b->a", b.local_address
                    )
                assert a.statistics().sent_indications > 0
                # Once the channels are bound, data goes as ChannelData.
                await exchange_until(a, b.local_address, inbox_b, b"channel a->b", a.local_address)
                while not a.statistics().sent_channel_data:
                    await exchange_until(
                        a, b.local_address, inbox_b, b"channel a->b", a.local_address
                    )
                while not b.statistics().sent_channel_data:
                    await exchange_until(
                        b, a.local_address, inbox_a, b"channel b->a", b.local_address
                    )
                for payload in (b"x", b"xy", b"xyz", bytes(range(256)) * 4):  # padding on streams
                    await exchange_until(a, b.local_address, inbox_b, payload, a.local_address)
                    await exchange_until(b, a.local_address, inbox_a, payload, b.local_address)
                assert a.statistics().malformed == b.statistics().malformed == 0
                nursery.cancel_scope.cancel()


async def test_plain_udp_peer(coturn: Coturn) -> None:
    inbox = Inbox()
    peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await peer.bind(("127.0.0.1", 0))
    peer_address: Address = peer.getsockname()
    with peer, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            relay = await start_relay(nursery, url(coturn, "udp"), inbox)
            # The first 8 wait for the permission; the rest are dropped (UDP semantics),
            # and counted, as lost on the way: no room to wait for (send_nowait says True).
            sent = [relay.send_nowait(b"hello %d" % i, peer_address) for i in range(12)]
            assert sent == [True] * 12
            assert relay.statistics().dropped == 4
            for i in range(8):
                data, source = await peer.recvfrom(100)
                assert data == b"hello %d" % i
                assert source == relay.local_address
            await relay.send(b"later", peer_address)
            data, _ = await peer.recvfrom(100)
            assert data == b"later"
            # Longer than a relay carries: an error, not a silent drop.
            with pytest.raises(UsageError, match="TURN relay"):
                relay.send_nowait(bytes(65_460), peer_address)
            with pytest.raises(UsageError, match="TURN relay"):
                await relay.send(bytes(65_460), peer_address)
            await peer.sendto(b"reply", relay.local_address)
            assert await inbox.receive.receive() == (b"reply", peer_address)
            nursery.cancel_scope.cancel()


# --- ending -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["cancel", "close"])
async def test_ending_deallocates(
    coturn: Coturn, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Closing waits for coturn's answer at most DEALLOCATE_WAIT, made here far longer than the
    # guard: only the answer can end the wait in time.  (The wait is shielded: a shutdown that
    # sat it out would end after SLOW_PATH seconds, past the guard, but not be cancelled.)
    monkeypatch.setattr(_relay, "DEALLOCATE_WAIT", SLOW_PATH)
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            relay = await start_relay(nursery, url(coturn, "udp"), Inbox())
            relayed_port = relay.local_address[1]
            assert not port_is_free(relayed_port)
            start = trio.current_time()
            if how == "cancel":
                nursery.cancel_scope.cancel()
            else:
                relay.close()
    assert trio.current_time() - start < HANG_GUARD  # milliseconds, not SLOW_PATH
    assert relay.closed
    assert relay.state is TurnState.CLOSED  # the server answered the deallocation
    assert not relay.send_nowait(b"late", ("127.0.0.1", 9))
    # coturn released the relayed port (about a second later): the allocation is gone; left
    # alone it would hold the port for the whole 600 s lifetime.
    with trio.fail_after(HANG_GUARD):
        while not port_is_free(relayed_port):  # noqa: ASYNC110 (polling another process)
            await trio.sleep(0.05)


async def _allocate_only_server(
    sock: trio.socket.SocketType,
    seen: list[stun.Message],
    grant_delay: float = 0.0,
    relayed: Address | None = ("198.51.100.1", 50000),
    password: str = PASSWORD,
) -> None:
    """Just enough of a TURN server for one allocation (a 401 challenge, then the Allocate
    granted, ``grant_delay`` seconds late, with ``relayed`` for its relayed address, if
    any, signed with ``password``'s key) that answers nothing else: the deallocation goes
    unanswered."""
    realm = "example.org"
    key = stun.long_term_key(USER, realm, password)

    async def grant(request: stun.Message, source: Address) -> None:
        await trio.sleep(grant_delay)
        granted = request.success_response(
            *([] if relayed is None else [stun.XorRelayedAddress(*relayed)]),
            stun.XorMappedAddress(source[0], source[1]),
            stun.Lifetime(600),
        )
        await sock.sendto(granted.encode(integrity_key=key), source)

    async with trio.open_nursery() as nursery:
        while True:
            data, source = await sock.recvfrom(2048)
            request = stun.decode(data)
            seen.append(request)
            if request.method is not stun.Method.ALLOCATE:
                continue
            if request.get(stun.Username) is None:
                challenge = request.error_response(
                    401, "Unauthorized", stun.Realm(realm), stun.Nonce("nonce")
                )
                await sock.sendto(challenge.encode(), source)
                continue
            nursery.start_soon(grant, request, source)


def _stream_relay() -> tuple[RelayTransport, _relay._StreamConnection]:
    """A relay transport over a TCP connection to the server that nothing drains (the
    server's end of a lockstep pair is never read), its client not allocated."""
    stream, _server_end = trio.testing.lockstep_stream_pair()
    conn = _relay._StreamConnection(stream, "127.0.0.1")
    server = ServerUrl("turn", "127.0.0.1", port=3478, transport="tcp")
    client = TurnClient(USER, PASSWORD, reliable=True)
    return RelayTransport(7, server, client, conn, Inbox()), conn


async def test_a_send_waiting_on_a_backed_up_relay_follows_the_pair_selected_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The selected pair goes through a relay whose stream to the server is backed up
    (the path to it half-open, say), and a send waits for room; another pair is selected:
    the agent wakes the waiting sends (as for a UDP mux or an ICE-TCP connection), and the
    datagram goes the new way.  It had waited on the relay until that drained or closed."""
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        relay, conn = _stream_relay()
        conn.pending += b"x" * (_relay.STREAM_BUFFER_LIMIT // 2 + 1)  # (backed up)
        # (Its client is not allocated, and would drop the datagram: the stream had no
        # room for it, as an allocated one's would have none.)
        monkeypatch.setattr(relay, "send_nowait", lambda data, address, retry=False: False)
        real_route = trice.Agent._data_route
        on_relay = True

        def route(agent: trice.Agent) -> tuple[object, tuple[str, int]]:
            if agent is a and on_relay:
                return relay, ("192.0.2.10", 6000)
            return real_route(agent)

        monkeypatch.setattr(trice.Agent, "_data_route", route)
        a._transports[relay.base] = relay  # (the agent's, as one gathered)
        try:
            ca._reroute()
            sent = trio.Event()

            async def send() -> None:
                await ca.send(b"follows the pair")
                sent.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
                assert not sent.is_set()  # (it waits for room on the relay)
                on_relay = False
                ca._reroute()  # (what the agent does when another pair is selected)
                ca._wake_senders()
                with trio.fail_after(2):
                    await sent.wait()
                    assert await cb.receive() == b"follows the pair"
        finally:
            del a._transports[relay.base]


async def _two_sends_waiting(
    relay: RelayTransport, then: Callable[[], Awaitable[None]]
) -> list[str]:
    """Two sends wait on ``relay`` at once (neither done yet), then ``then()``: what each
    came to, ``"sent"`` or ``"closed"`` (ClosedResourceError), within 3 s."""
    outcomes: list[str] = []

    async def send() -> None:
        try:
            await relay.send(b"data", ("192.0.2.10", 6000))  # (not allocated: dropped)
            outcomes.append("sent")
        except trio.ClosedResourceError:
            outcomes.append("closed")

    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
            assert outcomes == []
            await then()
    return outcomes


@pytest.mark.parametrize("then", ["drains", "closes"])
async def test_every_send_waiting_on_a_backed_up_stream_is_woken(then: str) -> None:
    """Two sends wait for room on a backed-up TURN stream; it drains (both go), or the
    relay closes (both raise ClosedResourceError).  Each waiter had made an event of its
    own, and only the last one's was set: the first waited for good."""
    relay, conn = _stream_relay()
    conn.pending += b"x" * (_relay.STREAM_BUFFER_LIMIT // 2 + 1)  # (backed up)

    async def drain_or_close() -> None:
        if then == "drains":
            conn.pending.clear()  # (what flush does once the stream took it all)
            conn.drained.set()
        else:
            relay.close()

    outcomes = await _two_sends_waiting(relay, drain_or_close)
    assert outcomes == ["sent" if then == "drains" else "closed"] * 2


@pytest.mark.parametrize("end", ["closed", "connection lost"])
async def test_two_sends_waiting_on_a_full_socket_to_the_server_take_turns(
    end: str, tmp_path: pathlib.Path
) -> None:
    """TURN over UDP, the socket to the server full (an AF_UNIX datagram socket whose
    server reads nothing stands in for it): two sends wait at once, and raise nothing but
    ClosedResourceError when the relay closes, or its connection to the server does (the
    second had raised BusyResourceError: trio lets one task at a time wait for a socket;
    then, taking turns, ValueError, waiting on the closed socket)."""
    mine = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with mine, theirs:
        theirs.bind(str(tmp_path / "server"))
        mine.bind(str(tmp_path / "client"))
        mine.connect(str(tmp_path / "server"))
        mine.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                mine.send(b"x" * 1000)
        server = ServerUrl("turn", "127.0.0.1", port=3478)
        client = TurnClient(USER, PASSWORD, reliable=False)
        conn = _relay._UdpConnection(mine)
        relay = RelayTransport(7, server, client, conn, Inbox())

        async def close() -> None:
            if end == "closed":
                relay.close()
                relay.wake()
                theirs.recv(2000)  # (room again: whoever waits looks, and finds it closed)
            else:
                await conn.aclose()  # (what the relay's end does, nobody woken first)

        outcomes = await _two_sends_waiting(relay, close)
    assert outcomes == ["closed", "closed"]


def test_a_full_stream_keeps_room_for_the_clients_requests() -> None:
    """Data filled the buffer of the stream to the server (an application's send_nowait
    loop): ChannelData and Send indications are refused, the client's own requests, and
    the agent's checks on a channel, are still taken (over a stream a request refused is
    never sent again: a Refresh lost so ended the allocation, with a healthy server)."""
    stream, _server_end = trio.testing.lockstep_stream_pair()
    conn = _relay._StreamConnection(stream, "127.0.0.1")
    for size in (1000, 0):  # (to the brim)
        while conn.write(stun.encode_channel_data(0x4000, b"x" * size, pad=True)):
            pass
    assert len(conn.pending) > _relay.STREAM_BUFFER_LIMIT - 4
    indication = stun.Message(
        stun.Method.SEND,
        stun.MessageClass.INDICATION,
        attributes=(stun.XorPeerAddress("192.0.2.1", 9), stun.Data(b"x" * 1000)),
    ).encode()
    assert not conn.write(indication)
    refresh = stun.Message(stun.Method.REFRESH, stun.MessageClass.REQUEST).encode()
    assert conn.write(refresh)
    # A check (or its answer) on a channel has room beyond data's too (with the requests,
    # written before data), but less than the requests': once it is full, a request still
    # goes.
    check = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST).encode()
    assert not conn.write(stun.encode_channel_data(0x4000, b"\x00" * 20, pad=True))
    while conn.write(stun.encode_channel_data(0x4000, check, pad=True)):
        pass
    limit = _relay.STREAM_BUFFER_LIMIT
    assert limit - 24 < len(conn.urgent) <= limit
    assert conn.write(refresh)


async def test_the_clients_requests_go_before_the_data_that_waits_on_a_stream() -> None:
    """A TCP or TLS stream to the server backed up with data (a file transfer on a slow
    uplink): a Refresh queued meanwhile goes out after the piece of data being written
    (``STREAM_PIECE``), not after all the data waiting (it waited behind a megabyte, and
    the agent's checks and answers too: consent ran out on a slow but working path)."""
    stream, server_end = trio.testing.lockstep_stream_pair()
    conn = _relay._StreamConnection(stream, "127.0.0.1")
    data = stun.encode_channel_data(0x4000, b"x" * 1000, pad=True)
    while conn.write(data):
        pass
    refresh = stun.Message(stun.Method.REFRESH, stun.MessageClass.REQUEST).encode()
    framer = StreamFramer()
    frames: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.flush)
        frames += framer.feed(await server_end.receive_some(1000))  # (a piece is on its way)
        assert conn.write(refresh)
        with trio.fail_after(10):
            while refresh not in frames:
                frames += framer.feed(await server_end.receive_some(65536))
        nursery.cancel_scope.cancel()
    assert _relay.STREAM_PIECE == 16 * 1024
    assert frames.index(refresh) <= 16 * 1024 // len(data) + 1  # (the piece begun, 17 frames)


async def test_a_send_waiting_on_a_backed_up_stream_is_woken_by_close() -> None:
    """A send waiting for a backed-up TCP or TLS connection to the server raises
    ClosedResourceError when the relay closes (it used to wait for ever)."""
    relay, conn = _stream_relay()
    conn.pending += b"x" * (_relay.STREAM_BUFFER_LIMIT // 2 + 1)  # backed up
    raised: list[BaseException] = []

    async def send() -> None:
        try:
            await relay.send(b"data", ("192.0.2.10", 6000))
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert not raised  # waiting for the buffer to drain
            relay.close()
    assert len(raised) == 1


async def test_a_relay_send_is_a_checkpoint_when_nothing_waits() -> None:
    relay, _conn = _stream_relay()
    with trio.testing.assert_checkpoints():
        await relay.send(b"data", ("192.0.2.10", 6000))  # (dropped: not allocated)


async def test_an_allocation_granted_after_the_timeout_is_deleted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server challenges us, then grants the authenticated Allocate only after
    run_relay has given up (its timeout): the late grant is deleted (a Refresh with
    LIFETIME 0) rather than left on the server for its lifetime."""
    seen: list[stun.Message] = []
    with wall_clock_guard(), trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        server = ServerUrl("turn", "127.0.0.1", port=sock.getsockname()[1])
        async with trio.open_nursery() as outer:
            outer.start_soon(_allocate_only_server, sock, seen, 0.4)
            async with trio.open_nursery() as nursery:
                with pytest.raises(AllocationError) as info:
                    await start_relay(nursery, server, Inbox(), allocation_timeout=0.3)
            outer.cancel_scope.cancel()
    assert info.value.reason == "timeout"
    refreshes = [m for m in seen if m.method is stun.Method.REFRESH]
    assert refreshes and all(m.get(stun.Lifetime) == stun.Lifetime(0) for m in refreshes)


async def test_an_allocation_granted_without_a_relayed_address_is_deleted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A grant without XOR-RELAYED-ADDRESS is no relay, but the server holds an allocation:
    it is deleted (a Refresh with LIFETIME 0), not left for its lifetime."""
    seen: list[stun.Message] = []
    with wall_clock_guard(), trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        server = ServerUrl("turn", "127.0.0.1", port=sock.getsockname()[1])
        async with trio.open_nursery() as outer:
            outer.start_soon(functools.partial(_allocate_only_server, sock, seen, relayed=None))
            async with trio.open_nursery() as nursery:
                with pytest.raises(AllocationError) as info:
                    await start_relay(nursery, server, Inbox())
            with trio.fail_after(HANG_GUARD):  # (until the server has the deletion)
                while not seen or seen[-1].method is stun.Method.ALLOCATE:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            outer.cancel_scope.cancel()
    assert info.value.reason == "no relayed address"
    assert [m.method for m in seen][-1] is stun.Method.REFRESH
    assert seen[-1].get(stun.Lifetime) == stun.Lifetime(0)


async def test_over_udp_a_grant_that_fails_the_integrity_check_says_so_not_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over UDP the client waits past an answer signed with another key (RFC 8489 §9.2.5:
    another copy may come) until its transaction's Ti, 39.5 s; the allocation's own time
    limit ends it sooner.  The error then says that the server answered and its answer
    failed the integrity check (a wrong password the server does not say, or a forger),
    as over TCP, rather than that no allocation came in time."""
    seen: list[stun.Message] = []
    with wall_clock_guard(), trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        server = ServerUrl("turn", "127.0.0.1", port=sock.getsockname()[1])
        async with trio.open_nursery() as outer:
            outer.start_soon(
                functools.partial(_allocate_only_server, sock, seen, password="another")
            )
            async with trio.open_nursery() as nursery:
                with pytest.raises(AllocationError) as info:
                    await start_relay(nursery, server, Inbox(), allocation_timeout=3.0)
            outer.cancel_scope.cancel()
    assert info.value.reason == "response failed the integrity check"
    assert "within 3.0 s" in str(info.value)
    assert [m.method for m in seen][:2] == [stun.Method.ALLOCATE, stun.Method.ALLOCATE]


@pytest.mark.parametrize(
    ("ipv6", "relayed"),
    [(False, ("2001:db8::1", 50000)), (True, ("198.51.100.1", 50000))],
    ids=["ipv4-host-ipv6-relay", "ipv6-host-ipv4-relay"],
)
async def test_a_relay_of_the_other_family_than_the_hosts_is_signalled(
    ipv6: bool, relayed: Address
) -> None:
    """NetworkConfig.ipv4 and ipv6 choose host addresses: a relayed address of the other
    family is a candidate all the same (a relay is how an IPv6-only host reaches IPv4
    peers, RFC 6156; asked for no family, a server grants IPv4, RFC 8656 §7.2)."""
    if ipv6 and not HAS_IPV6:
        pytest.skip("needs an IPv6 loopback address (::1)")
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.bind(("::1" if ipv6 else "127.0.0.1", 0))
        port = sock.getsockname()[1]
        host = "[::1]" if ipv6 else "127.0.0.1"
        config = loopback_config(
            ipv6=ipv6,
            ice_servers=[IceServer(f"turn:{host}:{port}", USER, PASSWORD)],
            transport_policy=TransportPolicy.RELAY,
        )
        async with trio.open_nursery() as outer:
            outer.start_soon(functools.partial(_allocate_only_server, sock, [], relayed=relayed))
            async with open_agent(config, controlling=True) as agent:
                with trio.fail_after(HANG_GUARD):
                    await agent.wait_gathering_complete()
                candidates = agent.local_candidates
            outer.cancel_scope.cancel()
    assert [(c.type, c.address, c.port) for c in candidates] == [(CandidateType.RELAY, *relayed)]


async def test_a_tcp_connection_lost_after_the_grant_fails_the_allocation() -> None:
    """Over TCP the allocation lives with its connection (RFC 8656 §3.1): the server closing
    it fails the relay, which sends nothing more (it sent a deletion into the broken stream
    and stayed closing for good)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    realm = "example.org"
    key = stun.long_term_key(USER, realm, PASSWORD)
    granted = trio.Event()
    read_to_the_end = trio.Event()  # (the client closed its end: nothing more can come)
    after_grant: list[bytes] = []

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            framer = StreamFramer()
            while not granted.is_set():
                for frame in framer.feed(await stream.receive_some(65536)):
                    request = stun.decode(frame)
                    if request.get(stun.Username) is None:
                        answer = request.error_response(
                            401, "Unauthorized", stun.Realm(realm), stun.Nonce("n")
                        )
                        await stream.send_all(answer.encode())
                    else:
                        answer = request.success_response(
                            stun.XorRelayedAddress("198.51.100.1", 50000),
                            stun.XorMappedAddress("127.0.0.1", 1),
                            stun.Lifetime(600),
                        )
                        await stream.send_all(answer.encode(integrity_key=key))
                        granted.set()
            await stream.send_eof()
            with contextlib.suppress(trio.BrokenResourceError):
                while data := await stream.receive_some(65536):
                    after_grant.append(data)
            read_to_the_end.set()

    async with trio.open_nursery() as servers:
        servers.start_soon(trio.serve_listeners, serve, listeners)
        server = ServerUrl("turn", "127.0.0.1", port=port, transport="tcp")
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                relay = await start_relay(nursery, server, Inbox())
                while not relay.closed:  # noqa: ASYNC110 (the relay's own task ends it)
                    await trio.sleep(0.01)
            await read_to_the_end.wait()
        servers.cancel_scope.cancel()
    assert _state(relay) is TurnState.FAILED
    assert relay.error is not None and relay.error.reason == "connection closed"
    assert after_grant == []


def _state(relay: RelayTransport) -> TurnState:
    """The relay's state (a call, so that mypy does not narrow it between steps)."""
    return relay.state


@pytest.mark.parametrize("how", ["cancel", "close"])
async def test_ending_waits_for_a_silent_server_at_most_the_deallocate_wait(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    # Virtual time (tests/virtual_time.py) against a server in this process: the clock jumps
    # only when every task waits, and loopback UDP is queued at once, so the wait is exact.
    seen: list[stun.Message] = []
    with wall_clock_guard(), trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        server = ServerUrl("turn", "127.0.0.1", port=sock.getsockname()[1])
        async with trio.open_nursery() as outer:
            outer.start_soon(_allocate_only_server, sock, seen)
            async with trio.open_nursery() as nursery:
                relay = await start_relay(nursery, server, Inbox())
                assert _state(relay) is TurnState.ALLOCATED
                start = trio.current_time()
                if how == "cancel":
                    nursery.cancel_scope.cancel()
                else:
                    relay.close()
            elapsed = trio.current_time() - start
            outer.cancel_scope.cancel()
    assert elapsed == pytest.approx(_relay.DEALLOCATE_WAIT)
    assert relay.closed
    assert _state(relay) is TurnState.CLOSING  # never answered; given up on
    refreshes = [m for m in seen if m.method is stun.Method.REFRESH]
    assert refreshes and all(m.get(stun.Lifetime) == stun.Lifetime(0) for m in refreshes)


async def test_data_left_in_the_stream_when_the_connection_is_lost_counts_as_dropped() -> None:
    """Over TCP, data waits in the stream's buffer behind a send the server does not take;
    the connection is lost: what waited never went, and counts as dropped, not sent (the
    client had counted it sent as it left the client for the buffer)."""
    client, server = allocated(reliable=True)
    client.send_to_peer(PEER, b"first", 1.0)
    exchange(client, server, 1.0)  # (the permission installed, "first" relayed)
    stream, server_end = trio.testing.lockstep_stream_pair()
    conn = _relay._StreamConnection(stream, "127.0.0.1")
    url = ServerUrl("turn", "127.0.0.1", port=3478, transport="tcp")
    relay = RelayTransport(7, url, client, conn, Inbox())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay._write_loop)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(10):
            assert relay.send_nowait(b"data %d" % i, PEER)
            await trio.testing.wait_all_tasks_blocked()  # (the writer takes what it can)
        assert conn.pending  # (behind the first, which the stream's send holds)
        await server_end.aclose()
    assert relay.closed and client.error is not None
    stats = client.statistics()
    # (Of the 10, only the one the stream's send held may have gone.)
    assert (stats.sent_indications + stats.sent_channel_data, stats.dropped) == (2, 9)


class _OneMoreRoom:
    """A UDP connection to the server whose socket takes ``room`` more datagrams, then is
    full."""

    reliable = False
    source = "127.0.0.1"
    closed = False

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[bytes] = []

    def write(self, data: bytes) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.written.append(data)
        return True


async def test_send_nowait_says_whether_the_datagram_went_not_whether_all_the_queue_did() -> None:
    """The peer's channel lapsed: the datagram goes as a Send indication, and a ChannelBind
    queues behind it, for which the socket has no room.  The datagram went: True (it was
    False, and Connection.send sent the datagram again once there was room)."""
    client, server = allocated()
    assert client.send_to_peer(PEER, b"first", 0.0)
    exchange(client, server, 0.0)  # (the permission installed, the channel bound)
    peer = client._peers[PEER]
    peer.bound = False  # (its channel lapsed, as the client's timer says of an idle one)
    peer.refresh_at = float("inf")
    conn = _OneMoreRoom(1)
    server_url = ServerUrl("turn", "127.0.0.1", port=3478)
    relay = RelayTransport(7, server_url, client, conn, Inbox())  # type: ignore[arg-type]
    assert relay.send_nowait(b"once", PEER) is True
    (sent,) = conn.written
    assert stun.peek_type(sent) == SEND_INDICATION


async def test_data_the_client_refuses_is_dropped_once_and_not_tried_again() -> None:
    """The peer's permission was refused: the datagram is dropped and counted, and
    send_nowait says True (a datagram lost on the way: no room to wait for).  It said
    False, and Connection.send tried again, and counted it dropped twice."""
    client, server = allocated(
        server=FakeServer(errors={stun.Method.CREATE_PERMISSION: (403, "Forbidden")})
    )
    now = trio.current_time()  # (the relay's clock, which send_nowait reads)
    assert client.send_to_peer(PEER, b"first", now)
    exchange(client, server, now)  # (the permission refused: not asked again for a while)
    before = client.statistics().dropped
    server_url = ServerUrl("turn", "127.0.0.1", port=3478)
    relay = RelayTransport(7, server_url, client, _OneMoreRoom(100), Inbox())  # type: ignore[arg-type]
    assert relay.send_nowait(b"refused", PEER) is True
    assert client.statistics().dropped == before + 1


class _RoomAfterAWait(_OneMoreRoom):
    """A UDP connection to the server whose socket is full, and has room again once a
    send has waited for it (or never, with ``room_later=0``)."""

    def __init__(self, room_later: int) -> None:
        super().__init__(0)
        self.room_later = room_later

    async def wait_writable(self) -> None:
        self.room = self.room_later
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("room_later", [10, 0])
async def test_a_relayed_datagram_that_waits_for_room_is_counted_once(room_later: int) -> None:
    """The socket to the server has no room: send_nowait says False, and the datagram is
    counted neither sent nor dropped if its sender waits and tries again (``retry``).  The
    send that waited for room counts it sent if it went, dropped if there was no room
    still.  It was counted dropped at the first try, and sent as well at the second."""
    client, server = allocated()
    assert client.send_to_peer(PEER, b"first", 0.0)
    exchange(client, server, 0.0)  # (the permission installed, the channel bound)
    conn = _RoomAfterAWait(room_later)
    server_url = ServerUrl("turn", "127.0.0.1", port=3478)
    relay = RelayTransport(7, server_url, client, conn, Inbox())  # type: ignore[arg-type]

    def sent_and_dropped() -> tuple[int, int]:
        stats = client.statistics()
        return stats.sent_channel_data + stats.sent_indications, stats.dropped

    sent, dropped = sent_and_dropped()
    assert relay.send_nowait(b"waits", PEER, retry=True) is False
    assert sent_and_dropped() == (sent, dropped)
    await relay.send(b"waits", PEER)
    went = len(conn.written)
    assert went == (1 if room_later else 0)
    assert sent_and_dropped() == (sent + went, dropped + 1 - went)
    # A caller that does not try again (a check, an answer, Connection.send_nowait):
    # the datagram is dropped, and counted so.
    conn.room = 0
    assert relay.send_nowait(b"given up", PEER) is False
    assert sent_and_dropped() == (sent + went, dropped + 2 - went)


def test_the_longest_relayed_datagram_fits_a_udp_datagram_to_the_server() -> None:
    """``RELAYED_MAX`` bytes to an IPv6 peer, as a Send indication, fit a UDP datagram to
    an IPv4 server, and a byte more does not (DATA is padded to a multiple of 4: it was 3
    bytes too many, and the kernel refused the datagram)."""

    def indication(size: int) -> bytes:
        return stun.Message(
            stun.Method.SEND,
            stun.MessageClass.INDICATION,
            stun.new_transaction_id(),
            (stun.XorPeerAddress("2001:db8::2", 6000), stun.Data(b"x" * size)),
        ).encode()

    assert len(indication(_relay.RELAYED_MAX)) <= 65_507 < len(indication(_relay.RELAYED_MAX + 1))


async def test_the_relay_reader_lets_other_tasks_run_between_batches() -> None:
    """1,000 datagrams waiting on the client's socket to the TURN server (a flood) are read
    64 at a time, other tasks running between batches, as from the agent's readers, the
    mux's and the mDNS socket's (READ_BATCH).  They were all read at once: a flood of Data
    indications held the run for as long as it lasted."""

    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        seen: list[trice.stun.Message] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_allocate_only_server, sock, seen)
            with trio.fail_after(5):
                relay = await nursery.start(
                    lambda task_status: run_relay(
                        trice.ServerUrl("turn", "127.0.0.1", port=port, transport="udp"),
                        USER,
                        PASSWORD,
                        base=7,
                        deliver=Inbox(),
                        task_status=task_status,
                    )
                )
            client_sock = relay._conn.sock
            room_for_a_flood(client_sock, 8 << 20)
            client = client_sock.getsockname()
            raw = socket.socket(fileno=os.dup(sock.fileno()))
            with raw:
                raw.setblocking(False)
                for _ in range(1000):
                    raw.sendto(b"\x40\x01\x00\x04abcd", client)  # (an unknown channel)
            counts = [relay.statistics().malformed]
            with trio.fail_after(5):
                while counts[-1] < 1000:
                    await trio.lowlevel.checkpoint()
                    counts.append(relay.statistics().malformed)
            steps = [b - a for a, b in itertools.pairwise(counts)]
            nursery.cancel_scope.cancel()
    assert max(steps) <= 2 * 64, f"{max(steps)} datagrams handled while no other task ran"


@pytest.mark.parametrize("how", ["close", "cancel"])
async def test_data_sent_over_tcp_before_the_end_goes_before_the_deallocation(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    """Over TCP, the data a user sent and then closed (or cancelled) the relay goes to the
    server before the deallocation, within the close's half-second (in virtual time: a
    loaded machine does not stretch it).  Before, the writer was
    cancelled inside ``send_all``: the stream, cut mid-write, was taken for stuck, so all of
    that data was lost and the allocation was not deleted."""
    fake = FakeServer()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listeners[0].socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = listeners[0].socket.getsockname()[1]
    permitted = trio.Event()
    relayed_while_allocated: list[int] = []  # (a server drops what comes after the deletion)

    async def serve(stream: trio.SocketStream) -> None:
        framer = StreamFramer()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await stream.receive_some(65536):
                for frame in framer.feed(data):
                    for answer in fake.handle(frame, trio.current_time()):
                        await stream.send_all(answer)
                    if fake.allocated:
                        relayed_while_allocated[:] = [len(fake.relayed)]
                if fake.permissions and not permitted.is_set():
                    permitted.set()
                    await trio.sleep(0.25)  # (reading nothing: the client's writer waits)

    sent = [b"%05d" % i + bytes(1000) for i in range(400)]
    async with trio.open_nursery() as servers:
        servers.start_soon(trio.serve_listeners, serve, listeners)
        server = ServerUrl("turn", "127.0.0.1", port=port, transport="tcp")
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                relay = await start_relay(nursery, server, Inbox())
                assert relay.send_nowait(b"first", PEER)
                await permitted.wait()
                for datagram in sent:
                    assert relay.send_nowait(datagram, PEER)
                conn = relay._conn
                assert isinstance(conn, _relay._StreamConnection)
                while not conn.sending:  # noqa: ASYNC110 (the writer's own task)
                    await trio.sleep(0.001)
                start = trio.current_time()
                if how == "close":
                    relay.close()
                else:
                    nursery.cancel_scope.cancel()
            elapsed = trio.current_time() - start
        servers.cancel_scope.cancel()
    assert elapsed < _relay.DEALLOCATE_WAIT + 0.1
    relayed = [data for _, data, _ in fake.relayed]
    assert relayed == [b"first", *sent]
    assert relayed_while_allocated == [len(relayed)]
    assert fake.methods()[-1] == "REFRESH" and not fake.allocated
    assert relay.state is TurnState.CLOSED


async def test_an_allocation_granted_as_the_timeout_passes_is_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server's success comes, and the allocation timeout passes, in one turn of the
    loop (it stalled): the answer, waiting in the socket, is read before the timeout is
    said.  (The reader and the timeout were woken together, in trio's random order: the
    granted allocation was given up about half the time.)"""
    fake = FakeServer()
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        server = ServerUrl("turn", "127.0.0.1", port=sock.getsockname()[1])

        async def serve() -> None:
            stalled = False
            while True:
                await trio.lowlevel.wait_readable(sock)
                data, source = sock.recvfrom(2048)
                for answer in fake.handle(data, trio.current_time()):
                    sock.sendto(answer, source)
                if fake.allocated and not stalled:
                    stalled = True
                    autojump_clock.jump(5.0)  # (the loop stalls as the success comes)

        for _ in range(8):
            fake.allocated = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                relay = await start_relay(nursery, server, Inbox(), allocation_timeout=3.0)
                assert relay.state is TurnState.ALLOCATED
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("icmp", [False, True])
async def test_a_relayed_check_at_its_end_first_reads_the_answer_waiting_on_the_relay(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, icmp: bool
) -> None:
    """A check through a TURN relay over UDP that goes once, the relay's reader not having
    had its turn (a stall): at its end the check reads the answer waiting on the relay's
    socket, as over a host socket, and the pair succeeds.  (Only a host socket was read:
    the pair failed, and ICE with it.)  With ``icmp``, an ICMP error waits before the
    answer (the server's port was closed a moment, a restart): the read passes over it,
    as the reader does (it stopped there)."""
    timing = trice.Timing(max_binding_requests=1)
    fake = FakeServer()
    held = hold_readers(monkeypatch)
    with (
        wall_clock_guard(),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again,
    ):
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        client: list[Address] = []

        def serve() -> None:
            with contextlib.suppress(BlockingIOError):
                while True:
                    data, source = server.recvfrom(65536)
                    client[:] = [source]
                    for reply in fake.handle(data, trio.current_time()):
                        server.sendto(reply, source)

        async def serving(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                while True:
                    await trio.lowlevel.wait_readable(server)
                    serve()

        address = server.getsockname()
        config = loopback_config(
            timing=timing,
            ice_servers=[IceServer(f"turn:127.0.0.1:{address[1]}?transport=udp", USER, PASSWORD)],
            transport_policy=TransportPolicy.RELAY,
        )
        async with trio.open_nursery() as nursery:
            serving_scope = await nursery.start(serving)
            async with open_agent(config, controlling=True) as a:
                await a.wait_gathering_complete()
                (relay,) = [t for t in a._transports.values() if isinstance(t, RelayTransport)]
                a.set_remote_parameters("abcd", "x" * 22)
                a.add_remote_candidate(
                    trice.Candidate.from_sdp(f"candidate:1 1 udp 1 {PEER[0]} {PEER[1]} typ host")
                )
                a.add_remote_candidate(None)
                async with trio.open_nursery() as checking:
                    checking.start_soon(a.connect)
                    await trio.testing.wait_all_tasks_blocked()
                    ((_, check, _),) = fake.relayed  # the agent's one check, relayed
                    assert isinstance(relay._conn, _relay._UdpConnection)
                    held.add(relay._conn.sock.fileno())  # its reader goes back to wait:
                    server.sendto(bytes(8), client[0])  # (a datagram of no use)
                    await trio.testing.wait_all_tasks_blocked()
                    answering = server
                    if icmp:
                        serving_scope.cancel()
                        await trio.testing.wait_all_tasks_blocked()
                        server.close()
                        relay.send_nowait(b"data", PEER)  # (meets the closed port)
                        again.bind(address)
                        answering = again
                    answer = answer_check(check, relay.local_address)
                    answering.sendto(fake.data_indication(PEER, answer), client[0])  # unread
                    await trio.sleep(1.5 * timing.rto)  # past the check's end
                    (pair,) = a.pair_statistics()
                    assert pair.responses_received == 1
                    assert pair.state is not trice.PairState.FAILED  # (its nomination runs now)
                    checking.cancel_scope.cancel()
                held.clear()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("ahead", [0, READ_BATCH + 36])
async def test_a_refresh_answered_while_the_reader_waited_its_turn_keeps_the_allocation(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, ahead: int
) -> None:
    """The relay's reader has not had its turn since the Refresh went, and the run stalls
    past the allocation's lifetime as the server's answer comes (behind ``ahead`` datagrams
    of a peer's, relayed): when the relay's timer comes, it takes all the socket holds
    first, the answer with it, and the allocation lives on.  (It was given up, 'TURN refresh
    failed: no answer before the allocation's lifetime ran out': the answer unread; then,
    behind more than a batch of data, read one batch only.)"""
    fake = FakeServer(max_lifetime=30)  # (the Refresh goes at 24 s)
    stalled: list[float] = []
    held = hold_readers(monkeypatch)
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)

        async def serve() -> None:
            while True:
                await trio.lowlevel.wait_readable(server)
                with contextlib.suppress(BlockingIOError):
                    while True:
                        data, source = server.recvfrom(65536)
                        refresh = stun.decode(data).method is stun.Method.REFRESH
                        for _ in range(ahead if refresh else 0):
                            server.sendto(bytes(8), source)
                        for reply in fake.handle(data, trio.current_time()):
                            server.sendto(reply, source)
                        if refresh and not stalled:
                            stalled.append(trio.current_time())
                            autojump_clock.jump(7)  # (the run stalls: past the lifetime)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            address = ServerUrl.parse(f"turn:127.0.0.1:{server.getsockname()[1]}?transport=udp")
            relay = await start_relay(nursery, address, Inbox())
            assert isinstance(relay._conn, _relay._UdpConnection)
            held.add(relay._conn.sock.fileno())
            server.sendto(bytes(8), relay._conn.sock.getsockname())  # (its reader goes back
            await trio.sleep(40)  # to wait, and waits from now on)
            assert stalled
            assert not relay.closed, relay.error
            held.clear()
            nursery.cancel_scope.cancel()


async def _serve_each(
    server: socket.socket,
    handle: Callable[[bytes, Address], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Hand each datagram ``server`` gets to ``handle`` in a task of its own (a server far
    away: each answer on its way while the next request comes)."""
    while True:
        await trio.lowlevel.wait_readable(server)
        with contextlib.suppress(BlockingIOError):
            while True:
                nursery.start_soon(handle, *server.recvfrom(65536))


async def test_closing_waits_for_a_far_servers_stale_nonce_and_deletes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server 0.6 s away (a satellite link's round trip) whose nonce went stale: the
    deletion gets 438, and goes again with the new nonce, two round trips, which closing
    now waits for (two and a half of those it measured, see ``DEALLOCATE_WAIT``).  It waited
    half a second: the 438 came after, and the allocation was left for its lifetime (the
    turnlife review)."""
    fake = FakeServer()
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)

        async def later(data: bytes, source: Address) -> None:
            replies = fake.handle(data, trio.current_time())
            await trio.sleep(0.6)
            for reply in replies:
                server.sendto(reply, source)

        async with trio.open_nursery() as outer:
            outer.start_soon(_serve_each, server, later, outer)
            address = ServerUrl.parse(f"turn:127.0.0.1:{server.getsockname()[1]}?transport=udp")
            async with trio.open_nursery() as nursery:
                await start_relay(nursery, address, Inbox())
                assert fake.allocated
                fake.stale_next = 1  # (the nonce is stale by now)
                closed_at = trio.current_time()
                nursery.cancel_scope.cancel()
            took = trio.current_time() - closed_at
            assert not fake.allocated
            assert 1.2 <= took <= _relay.DEALLOCATE_WAIT_MAX
            outer.cancel_scope.cancel()


@pytest.mark.parametrize("close_at", [0.25, 0.3, 0.35])
async def test_an_allocate_sent_again_after_the_deletions_437_is_deleted_too(
    autojump_clock: trio.testing.MockClock, close_at: float
) -> None:
    """A server 0.1 s away each way; the authenticated Allocate's first copy is lost, and
    the relay closes before its next: the deletion finds no allocation (437), and the
    Allocate goes once more, at once (the grant's answer might have been lost), is granted
    and answered within closing's wait, and is deleted.  It went again at its own
    retransmission time, granted as closing's wait ended: the server kept the allocation
    for its lifetime (the suspects review on e04f287)."""
    fake = FakeServer()
    lost: list[bytes] = []
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)

        async def far(data: bytes, source: Address) -> None:
            await trio.sleep(0.1)
            message = stun.decode(data)
            authenticated = message.get(stun.Username) is not None
            if message.method is stun.Method.ALLOCATE and authenticated and not lost:
                lost.append(data)
                return
            replies = fake.handle(data, trio.current_time())
            await trio.sleep(0.1)
            for reply in replies:
                server.sendto(reply, source)

        async with trio.open_nursery() as outer:
            outer.start_soon(_serve_each, server, far, outer)
            address = ServerUrl.parse(f"turn:127.0.0.1:{server.getsockname()[1]}?transport=udp")
            async with trio.open_nursery() as nursery:
                with trio.move_on_after(close_at) as given_up:
                    await start_relay(nursery, address, Inbox())
            assert given_up.cancelled_caught and lost
            await trio.sleep(5)  # (all in flight lands)
            assert not fake.allocated
            outer.cancel_scope.cancel()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_over_a_stream_a_refresh_answered_while_the_reader_waited_keeps_the_allocation(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    """As over UDP (above), over a TCP or TLS connection to the server: the run stalls past
    the allocation's lifetime as the Refresh's answer comes, its reader not having had its
    turn; the relay's timer reads the connection first, and the allocation lives on.  (A
    stream was read by its reader only: the allocation was given up, the answer unread; a
    TLS one still was, its records going through trio's SSLStream.)"""
    fake = FakeServer(max_lifetime=30)  # (the Refresh goes at 24 s)
    held: list[bool] = []
    real_read = _relay._StreamConnection.read

    async def read(self: _relay._StreamConnection) -> list[bytes]:
        if held:
            await trio.sleep_forever()  # (the reader has not had its turn since)
        return await real_read(self)

    monkeypatch.setattr(_relay._StreamConnection, "read", read)
    server_context, client_context = _tls_contexts()
    streams: list[trio.abc.Stream] = []
    stalled: list[float] = []

    async def serve(tcp: trio.SocketStream) -> None:
        stream: trio.abc.Stream = tcp
        if transport == "tls":
            stream = trio.SSLStream(tcp, server_context, server_side=True)
        streams.append(stream)
        framer = StreamFramer()
        while data := await stream.receive_some(65536):
            for frame in framer.feed(data):
                for reply in fake.handle(frame, trio.current_time()):
                    await stream.send_all(reply)
                if stun.decode(frame).method is stun.Method.REFRESH and not stalled:
                    stalled.append(trio.current_time())
                    autojump_clock.jump(7)  # (the run stalls: past the lifetime)

    with wall_clock_guard():
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(
                functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
            )
            port = listener.socket.getsockname()[1]
            scheme = "turns" if transport == "tls" else "turn"
            address = ServerUrl.parse(f"{scheme}:127.0.0.1:{port}?transport=tcp")
            relay = await start_relay(nursery, address, Inbox(), ssl_context=client_context)
            held.append(True)
            await streams[0].send_all(b"\x40\x00\x00\x00")  # (its reader goes back to wait)
            await trio.sleep(40)
            assert stalled
            assert not relay.closed, relay.error
            nursery.cancel_scope.cancel()


def _unread(sock: trio.socket.SocketType) -> int:
    """The bytes waiting in a TCP socket's receive queue (FIONREAD)."""
    import fcntl
    import termios

    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)), sys.byteorder)


async def _tcp_pair() -> tuple[trio.SocketStream, socket.socket]:
    """A TCP connection on loopback: trio's end (a relay's), and the plain socket of the
    other end (a server's)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = await trio.open_tcp_stream("127.0.0.1", listener.getsockname()[1])
        server, _ = listener.accept()
    return client, server


async def _read_into(conn: _relay._StreamConnection, got: list[bytes]) -> None:
    got.extend(await conn.read())


@pytest.mark.skipif(sys.platform == "win32", reason="a plain TCP relay is read through trio there")
async def test_a_frame_split_between_the_reader_and_a_read_without_waiting_stays_whole() -> None:
    """A ChannelData frame of a plain TCP relay comes in two pieces: the reader takes the
    first, and a read without waiting (a check about to be sent again, the relay's timer)
    the second as it comes.  The frames come out whole, once, in order.  The reader read
    through trio's receive_some, which lets other tasks run after its recv: the bytes read
    meanwhile reached the framer first, which took a payload's bytes for a header, and every
    frame after was lost (p36pass3 on b75db64)."""
    first = stun.encode_channel_data(0x4000, bytes(range(200)) * 2)
    second = stun.encode_channel_data(0x4001, b"after" * 20)
    for _ in range(50):  # (until the read without waiting runs while the reader holds bytes)
        client, server = await _tcp_pair()
        with server:
            conn = _relay._StreamConnection(client, "127.0.0.1")
            got: list[bytes] = []
            server.sendall((first + second)[:100])
            await until(functools.partial(lambda sock: _unread(sock) >= 100, client.socket))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_into, conn, got)
                for _ in range(50):
                    await trio.lowlevel.checkpoint()
                    if _unread(client.socket) == 0:
                        break  # (the reader has taken the first piece)
                server.sendall((first + second)[100:])
                # (On loopback the rest is there at once; looked for without a checkpoint,
                # which would let the reader run.)
                assert select.select([client.socket.fileno()], [], [], 1)[0]
                got.extend(conn.read_waiting())
                with trio.move_on_after(1):  # (the reader, had it framed the rest)
                    await until(functools.partial(lambda got: len(got) >= 2, got))
                nursery.cancel_scope.cancel()
            await client.aclose()
        assert got == [first, second]


@pytest.mark.skipif(sys.platform == "win32", reason="a plain TCP relay is read through trio there")
async def test_a_reset_a_read_without_waiting_takes_is_still_a_lost_connection() -> None:
    """A reset of a plain TCP relay's connection, met by a read without waiting: the reader
    says "connection lost", as it does meeting it itself.  The read left it to the reader,
    but took the socket's error, and the reader met a plain end: "connection closed"
    (p36pass3 on b75db64)."""
    client, server = await _tcp_pair()
    conn = _relay._StreamConnection(client, "127.0.0.1")
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # (a reset)
    await until(lambda: bool(select.select([client.socket.fileno()], [], [], 0)[0]))
    assert conn.read_waiting() == []
    with pytest.raises(_relay._Lost) as lost:
        await conn.read()
    assert lost.value.reason == "connection lost"
    await client.aclose()


async def test_a_closed_tcp_relay_connection_reads_as_lost() -> None:
    """Read once closed, a plain TCP relay's connection says it is lost (``_Lost``), as
    trio's receive_some did; the reader that waits on the socket itself raised trio's
    ValueError for the closed descriptor (p36pass4 on df9deb7)."""
    client, server = await _tcp_pair()
    with server:
        conn = _relay._StreamConnection(client, "127.0.0.1")
        await conn.aclose()
        with pytest.raises(_relay._Lost) as lost:
            await conn.read()
    assert lost.value.reason == "connection lost"


async def _silent(tcp: trio.SocketStream) -> None:
    async with tcp:
        await trio.sleep_forever()


@pytest.mark.parametrize("given", [False, True], ids=["system-context", "own-context"])
async def test_a_turns_relay_closed_as_its_tcp_connection_opens_closes_it(
    monkeypatch: pytest.MonkeyPatch, given: bool
) -> None:
    """The relay is closed (its nursery cancelled) just as the TCP connection to a turns:
    server opens, before TLS starts: the connection is closed.  With no ssl_context, the
    system's authorities were loaded (in a thread) outside what closes the connection on
    the way out, and the cancellation left it open (the tlsown review)."""
    _, client_context = _tls_contexts()
    monkeypatch.setattr(_relay, "_default_context", None)  # (a process's first turns: relay)
    opened: list[trio.SocketStream] = []
    real_open = trio.open_tcp_stream
    scopes: list[trio.CancelScope] = []

    async def open_tcp_stream(*args: Any, **kwargs: Any) -> trio.SocketStream:
        stream = await real_open(*args, **kwargs)
        opened.append(stream)
        scopes[0].cancel()  # (closed now: the agent's nursery, say)
        return stream

    async with trio.open_nursery() as servers:
        (listener,) = await servers.start(
            functools.partial(trio.serve_tcp, _silent, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        url = ServerUrl("turns", "127.0.0.1", port=port, transport="tcp")
        monkeypatch.setattr(trio, "open_tcp_stream", open_tcp_stream)
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                scopes.append(nursery.cancel_scope)
                nursery.start_soon(
                    functools.partial(
                        run_relay,
                        url,
                        USER,
                        PASSWORD,
                        base=1,
                        deliver=Inbox(),
                        ssl_context=client_context if given else None,
                    )
                )
        monkeypatch.setattr(trio, "open_tcp_stream", real_open)
        servers.cancel_scope.cancel()
    (stream,) = opened
    left_open = stream.socket.fileno() != -1
    stream.socket.close()  # (the test's own cleanup)
    assert not left_open


@contextlib.asynccontextmanager
async def _s_server(
    tmp_path: pathlib.Path,
) -> AsyncIterator[tuple[_relay._StreamConnection, trio.Process, bytearray]]:
    """A TLS 1.2 server, ``openssl s_server`` (its stdin takes commands: ``r``
    renegotiates), and a relay's connection to it; what the server reads comes out on
    its stdout, gathered in the bytearray."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command (Debian's openssl package)")
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    port = free_port()
    argv = [openssl, "s_server", "-tls1_2", "-accept", f"127.0.0.1:{port}"]
    argv += ["-cert", str(tmp_path / "cert.pem"), "-key", str(tmp_path / "key.pem")]
    out = bytearray()
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process,
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        )
        assert process.stdin is not None and process.stdout is not None
        stdout = process.stdout

        async def read_server() -> None:
            while data := await stdout.receive_some(65536):
                out.extend(data)

        nursery.start_soon(read_server)
        server = ServerUrl("turns", "127.0.0.1", port=port, transport="tcp")
        with trio.fail_after(HANG_GUARD):
            while True:  # (until s_server listens)
                with contextlib.suppress(_relay._Lost):
                    conn = await _relay._connect(server, client_context, None)
                    break
                await trio.sleep(0.05)
        assert isinstance(conn, _relay._StreamConnection)
        try:
            yield conn, process, out
        finally:
            await conn.aclose()
            process.kill()  # (ours, by its handle)
            nursery.cancel_scope.cancel()


async def _until_in(out: bytearray, data: bytes) -> None:
    while data not in out:  # noqa: ASYNC110 (s_server's stdout, read by another task)
        await trio.sleep(0.01)


async def test_a_tls_relay_follows_renegotiations_while_it_writes(
    tmp_path: pathlib.Path,
) -> None:
    """A TLS 1.2 server (``openssl s_server``) renegotiates five times while the relay's
    connection writes all along: the connection follows, as trio's SSLStream did, its
    writes waiting for the server's records (and sending the handshake's own), and what it
    writes after comes through.  A write while the handshake ran ended the connection
    ("connection lost", TLS: the operation did not complete); then, where the reader took
    the server's records while the writer was writing, both sides waited for the other
    (the tlsown review on 9d218cb)."""
    after = stun.encode_channel_data(0x4000, b"after the renegotiations")
    async with _s_server(tmp_path) as (conn, process, out), trio.open_nursery() as nursery:
        assert process.stdin is not None

        async def read_relay() -> None:
            with contextlib.suppress(_relay._Lost):  # (at the end: closed)
                while True:
                    await conn.read()

        writing = trio.CancelScope()

        async def write_all_along() -> None:
            with writing:
                for i in itertools.count():
                    conn.write(stun.encode_channel_data(0x4000, b"flow %d" % i))
                    await trio.sleep(0.0005)

        nursery.start_soon(read_relay)
        nursery.start_soon(conn.run_writer)
        nursery.start_soon(write_all_along)
        for _ in range(5):
            await process.stdin.send_all(b"r\n")  # (a renegotiation)
            await trio.sleep(0.05)
        writing.cancel()
        conn.write(after)
        with trio.fail_after(HANG_GUARD):
            await _until_in(out, after)
        assert out.count(b"SSL_do_handshake -> 1") >= 1  # (it did renegotiate)
        nursery.cancel_scope.cancel()


async def test_a_tls_relay_closing_during_a_renegotiation_writes_what_it_held(
    tmp_path: pathlib.Path,
) -> None:
    """The relay closes as the server renegotiates (its reader took the HelloRequest, then
    the relay's tasks were cancelled): closing's flush writes the deletion all the same,
    reading the server's records itself, and data its writer had taken before it was
    cancelled is written too.  Closing waited for a reader that ran no more, until its
    wait ran out, and the deletion never went; the data the writer held was lost (p37pass2
    on dd8d279)."""
    held = stun.encode_channel_data(0x4000, b"data sent before close")
    deletion = stun.encode_channel_data(0x4001, b"the deletion")
    async with _s_server(tmp_path) as (conn, process, out):
        tls = conn.tls
        assert process.stdin is not None and tls is not None
        await process.stdin.send_all(b"r\n")
        with trio.fail_after(HANG_GUARD):  # (the reader takes the HelloRequest)
            await until(lambda: bool(conn.read_waiting() or tls.outgoing.pending), 9)
        async with trio.open_nursery() as relay:  # (the relay's tasks: its writer)
            relay.start_soon(conn.run_writer)
            conn.write(held)
            await until(lambda: not conn.urgent and not conn.pending)  # (the writer took it)
            relay.cancel_scope.cancel()  # (the relay closes)
        conn.write(deletion)
        with trio.CancelScope(shield=True) as scope:  # (as the relay's closing)
            scope.deadline = trio.current_time() + _relay.DEALLOCATE_WAIT_MAX
            conn.end_by(scope.deadline)
            await conn.flush()
        assert not scope.cancelled_caught
        with trio.fail_after(HANG_GUARD):
            await _until_in(out, deletion)
        assert held in out


class _Steps(trio.abc.Instrument):
    """Counts the scheduler's steps of ``task``."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_stream_relays_read_of_a_frame_waiting_is_one_step() -> None:
    """A TCP relay's read of a frame already in its socket takes one step of its task (the
    wait for the socket), as before the lock that lets one task wait to read at a time:
    taken with trio's acquire, uncontended, it yielded first, and every read waited a pass
    of the scheduler more (1.8x as long; p37pass3 on 6c0de82)."""
    frame = stun.encode_channel_data(0x4000, b"x" * 100)
    client, server = await _tcp_pair()
    with server:
        conn = _relay._StreamConnection(client, "127.0.0.1")
        server.sendall(frame)
        await until(lambda: _unread(client.socket) == len(frame))
        counter = _Steps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            frames = await conn.read()
        finally:
            trio.lowlevel.remove_instrument(counter)
        await client.aclose()
    assert frames == [frame]
    assert counter.steps == 1


async def test_a_tls_error_the_writer_reads_itself_keeps_its_reason() -> None:
    """The writer waits for the server's records (TLS cannot write: a renegotiation, here
    the TLS object answering None once) and reads them itself: what it reads is not TLS,
    and the writer raises what ended the stream, TLS's error (reason ``"tls"``).  It raised
    a plain "connection lost" of its own (p37pass4 on 2a318e3)."""
    server_context, client_context = _tls_contexts()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    go = trio.Event()

    async def serve(tcp: trio.SocketStream) -> None:
        async with tcp:
            await trio.SSLStream(tcp, server_context, server_side=True).do_handshake()
            await go.wait()
            await tcp.send_all(b"\xff" * 64)  # (not TLS)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await tcp.receive_some(65536)

    async with trio.open_nursery() as servers:
        servers.start_soon(trio.serve_listeners, serve, listeners)
        server = ServerUrl("turns", "127.0.0.1", port=port, transport="tcp")
        with trio.fail_after(HANG_GUARD):
            conn = await _relay._connect(server, client_context, None)
            assert isinstance(conn, _relay._StreamConnection) and conn.tls is not None
            real = conn.tls.encrypt
            answers: list[bytes | None] = [None]  # (the first: TLS cannot write yet)
            conn.tls.encrypt = lambda data: answers.pop() if answers else real(data)  # type: ignore[method-assign]
            conn.write(stun.encode_channel_data(0x4000, b"x" * 10))
            go.set()
            with pytest.raises(_relay._Lost) as info:
                await conn.flush()
            await conn.aclose()
        servers.cancel_scope.cancel()
    assert info.value.reason == "tls"
    assert "TLS" in str(info.value)


@pytest.mark.parametrize("reader", [False, True])
async def test_a_read_without_waiting_of_a_renegotiations_records_wakes_the_writer(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, reader: bool
) -> None:
    """The server renegotiates (TLS 1.2); the writer has data TLS cannot write yet, sends
    the ClientHello and waits for the server's records (in the socket's wait, or for the
    reader's).  They come, and a read without waiting takes them in the same pass (the
    relay's timer, a check about to be given up): the wait ends, and the writer sends
    TLS's next records and its data.  The wait went on, the socket empty again, while the
    server waited for the client's Finished (p37pass6).  The waiting task is held (it has
    not had its turn when the records come, as on a loaded machine): the socket would
    otherwise wake it first, now and then, and the read without waiting find nothing."""
    data = stun.encode_channel_data(0x4000, b"data written during the renegotiation")
    waits: list[object] = []
    held = hold_readers(monkeypatch)
    real_wait = trio.lowlevel.wait_readable

    async def wait_readable(sock: Any) -> None:
        waits.append(trio.lowlevel.current_task())
        await real_wait(sock)

    async with _s_server(tmp_path) as (conn, process, out), trio.open_nursery() as nursery:
        tls = conn.tls
        assert process.stdin is not None and tls is not None
        await process.stdin.send_all(b"r\n")  # (a renegotiation: the HelloRequest)
        with trio.fail_after(HANG_GUARD):
            await until(lambda: bool(conn.read_waiting() or tls.outgoing.pending), 9)
        monkeypatch.setattr(trio.lowlevel, "wait_readable", wait_readable)
        assert isinstance(conn.stream, trio.SocketStream)
        fd = conn.stream.socket.fileno()
        held.add(fd)
        if reader:

            async def read_relay() -> None:
                while True:
                    await conn.read()

            nursery.start_soon(read_relay)
            with trio.fail_after(HANG_GUARD):
                await until(lambda: bool(waits))  # (the reader waits in the socket's wait)
        conn.write(data)  # (TLS cannot write it before the server's next records)
        nursery.start_soon(conn.run_writer)
        before = len(waits)
        with trio.fail_after(HANG_GUARD):
            while not (
                conn.sending is False
                and tls.outgoing.pending == 0
                and (
                    len(waits) > before if not reader else conn._reading.statistics().tasks_waiting
                )
            ):
                await trio.lowlevel.checkpoint()
        # In this very pass (no trio checkpoint): the server's records come, and
        # read_waiting takes them, as the relay's timer would.
        assert select.select([fd], [], [], 5)[0], "the server did not answer the ClientHello"
        conn.read_waiting(4)
        held.clear()  # (from now on the socket wakes its waiting task)
        assert conn.broken is None
        try:
            with trio.fail_after(5):
                await _until_in(out, data)
        finally:
            conn.end_by(trio.current_time())  # (else the writer's shielded wait never ends)
            nursery.cancel_scope.cancel()


_SEVERAL = ServerUrl.parse("turn:turn.test:3478?transport=udp")


def _udp_server() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    return server


def _answering(
    server: socket.socket,
    fake: FakeServer,
    delay: float = 0.0,
    before: Callable[[], None] | None = None,
) -> Any:
    """A handler for :func:`_serve_each`: ``fake`` answers, ``delay`` away each way
    (``before`` called as each request reaches it)."""

    async def answer(data: bytes, source: Address) -> None:
        await trio.sleep(delay)
        if before is not None:
            before()
        replies = fake.handle(data, trio.current_time())
        await trio.sleep(delay)
        for reply in replies:
            server.sendto(reply, source)

    return answer


async def test_a_udp_relay_asks_the_next_address_of_a_server_whose_first_is_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server's name stands for two addresses, the first silent (its path broken): the
    relay asks the second once the first was silent for ``ADDRESS_STAGGER``, and is
    granted there (RFC 8656 §3.9).  It asked the first only, and gave up after its
    timeout (the ipv6 review: a dual-stack name whose IPv6 path is broken)."""
    fake = FakeServer()
    with wall_clock_guard(), _udp_server() as silent, _udp_server() as server:
        async with trio.open_nursery() as outer:
            outer.start_soon(_serve_each, server, _answering(server, fake), outer)
            addresses = [(socket.AF_INET, silent.getsockname())]
            addresses.append((socket.AF_INET, server.getsockname()))
            with resolving("turn.test", addresses):
                async with trio.open_nursery() as nursery:
                    began = trio.current_time()
                    relay = await start_relay(nursery, _SEVERAL, Inbox())
                    took = trio.current_time() - began
                    assert relay.local_address == RELAYED and fake.allocated
                    assert _relay.ADDRESS_STAGGER <= took < 2 * _relay.ADDRESS_STAGGER
                    assert stun.decode(silent.recv(2048)).method is stun.Method.ALLOCATE
                    nursery.cancel_scope.cancel()
            assert not fake.allocated
            outer.cancel_scope.cancel()


async def test_a_udp_relay_asks_the_next_address_at_once_when_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first address refuses (nothing listens: an ICMP port unreachable): the relay
    asks the next at once, not after ``ADDRESS_STAGGER`` (made a minute here)."""
    monkeypatch.setattr(_relay, "ADDRESS_STAGGER", 60.0)
    fake = FakeServer()
    with _udp_server() as server:
        async with trio.open_nursery() as outer:
            outer.start_soon(_serve_each, server, _answering(server, fake), outer)
            refused = ("127.0.0.1", free_port())
            addresses = [(socket.AF_INET, refused), (socket.AF_INET, server.getsockname())]
            with resolving("turn.test", addresses):
                async with trio.open_nursery() as nursery:
                    with trio.fail_after(HANG_GUARD):
                        relay = await start_relay(nursery, _SEVERAL, Inbox())
                    assert relay.local_address == RELAYED and fake.allocated
                    nursery.cancel_scope.cancel()
            outer.cancel_scope.cancel()


async def test_a_servers_refusal_at_one_address_is_final(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wrong credentials at the first address: the relay fails at once with the server's
    401, and asks no other address (their server's answer would be the same)."""
    monkeypatch.setattr(_relay, "ADDRESS_STAGGER", 60.0)
    first, second = FakeServer(password="another"), FakeServer()
    async with _at_two_addresses(first, second):
        async with trio.open_nursery() as nursery:
            with trio.fail_after(HANG_GUARD), pytest.raises(AllocationError) as caught:
                await start_relay(nursery, _SEVERAL, Inbox())
        assert caught.value.code == 401
        assert first.requests and not second.requests


async def test_addresses_asked_at_once_leave_one_allocation(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both addresses asked at once (no stagger), both answering at once: one relay is
    handed out, and the other allocation, granted as the first was or about to be, is
    deleted."""
    monkeypatch.setattr(_relay, "ADDRESS_STAGGER", 0.0)
    first, second = FakeServer(), FakeServer(relayed_address=("198.51.100.2", 50000))
    with wall_clock_guard():
        async with _at_two_addresses(first, second):
            async with trio.open_nursery() as nursery:
                relay = await start_relay(nursery, _SEVERAL, Inbox())
                await trio.sleep(5)  # (all in flight lands)
                assert first.requests and second.requests
                kept = first if relay.local_address == RELAYED else second
                assert [first.allocated, second.allocated].count(True) == 1
                assert kept.allocated and not relay.closed
                nursery.cancel_scope.cancel()
            assert not first.allocated and not second.allocated


@contextlib.asynccontextmanager
async def _at_two_addresses(
    first: FakeServer, second: FakeServer, delays: tuple[float, float] = (0.0, 0.0)
) -> AsyncIterator[None]:
    """While the block runs, ``turn.test`` stands for two addresses of a server: ``first``
    answers at one, ``second`` at the other, ``delays`` away each way."""
    with _udp_server() as one, _udp_server() as two:
        async with trio.open_nursery() as outer:
            for sock, fake, delay in ((one, first, delays[0]), (two, second, delays[1])):
                outer.start_soon(_serve_each, sock, _answering(sock, fake, delay), outer)
            addresses = [(socket.AF_INET, one.getsockname()), (socket.AF_INET, two.getsockname())]
            with resolving("turn.test", addresses):
                yield
            outer.cancel_scope.cancel()


def _quota(fake: FakeServer, other: FakeServer, sock: socket.socket, delay: float) -> Any:
    """``fake`` answers ``delay`` away each way; an authenticated Allocate that reaches it
    while ``other`` (the same server's other address) holds this user's allocation is
    refused with 486 (a per-user quota of one allocation: coturn's ``user-quota=1``)."""

    def quota() -> None:
        if other.allocated:
            fake.errors[stun.Method.ALLOCATE] = (486, "Allocation Quota Reached")
        else:
            fake.errors.pop(stun.Method.ALLOCATE, None)

    return _answering(sock, fake, delay, quota)


async def test_the_next_address_is_not_asked_once_the_first_has_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first address answers (its 401 challenge) after 0.2 s, within
    ``ADDRESS_STAGGER``: its path works, and no other address is asked.  The second was
    asked at 0.25 s all the same, and a second allocation made at the server (then
    deleted), for every far server (a round trip over 125 ms) whose name has two addresses
    (the p38pass1 review)."""
    first, second = FakeServer(), FakeServer(relayed_address=("198.51.100.2", 50000))
    with wall_clock_guard():
        async with _at_two_addresses(first, second, (0.1, 0.1)):
            async with trio.open_nursery() as nursery:
                relay = await start_relay(nursery, _SEVERAL, Inbox())
                await trio.sleep(5)
                assert relay.local_address == RELAYED
                assert not second.requests, "the second address was asked"
                nursery.cancel_scope.cancel()


async def test_a_quota_refusal_at_a_later_address_does_not_lose_the_first_allocation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One server, two addresses, a quota of one allocation a user.  The first address is
    0.15 s away each way (silent at 0.25 s: the second is asked, 0.08 s away).  The first
    answers first (0.3 s), and is the one: the second is given up, and the first granted.
    The second went on, its authenticated Allocate refused (486, the first granted
    meanwhile) before the first's grant came, and the refusal, taken as final, deleted the
    first's allocation: no relay at all (the p38pass1 review)."""
    first = FakeServer()
    second = FakeServer(relayed_address=("198.51.100.2", 50000))
    with wall_clock_guard(), _udp_server() as one, _udp_server() as two:
        async with trio.open_nursery() as outer:
            outer.start_soon(_serve_each, one, _quota(first, second, one, 0.15), outer)
            outer.start_soon(_serve_each, two, _quota(second, first, two, 0.08), outer)
            addresses = [(socket.AF_INET, one.getsockname()), (socket.AF_INET, two.getsockname())]
            with resolving("turn.test", addresses):
                async with trio.open_nursery() as nursery:
                    try:
                        relay = await start_relay(nursery, _SEVERAL, Inbox())
                    except AllocationError as exc:
                        pytest.fail(f"no relay, though the server granted one: {exc!r}")
                    assert relay.local_address == RELAYED
                    nursery.cancel_scope.cancel()
            outer.cancel_scope.cancel()


async def test_the_debug_log_says_a_next_address_is_asked_only_when_one_is(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two silent addresses: the second is asked once, and the log says so once, naming
    it (it said so after the last address too, naming none)."""
    with wall_clock_guard(), _udp_server() as one, _udp_server() as two:
        addresses = [(socket.AF_INET, one.getsockname()), (socket.AF_INET, two.getsockname())]
        with resolving("turn.test", addresses), caplog.at_level(logging.DEBUG, "trice"):
            async with trio.open_nursery() as nursery:
                with pytest.raises(AllocationError) as caught:
                    await start_relay(nursery, _SEVERAL, Inbox(), allocation_timeout=1.0)
        assert caught.value.reason == "timeout"
        asked = [r for r in caplog.records if "asking its next address" in r.getMessage()]
        assert len(asked) == 1, [r.getMessage() for r in asked]
        assert str(two.getsockname()[0]) in asked[0].getMessage()


async def test_cancelled_mid_race_leaves_no_allocation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The agent closes (run_relay cancelled) at 0.5 s, an address's authenticated
    Allocate in flight: no allocation is left behind."""
    first, second = FakeServer(), FakeServer(relayed_address=("198.51.100.2", 50000))
    with wall_clock_guard():
        async with _at_two_addresses(first, second, (0.2, 0.15)):
            with trio.move_on_after(0.5):
                async with trio.open_nursery() as nursery:
                    await start_relay(nursery, _SEVERAL, Inbox())
                    pytest.fail("granted before 0.5 s")
            await trio.sleep(5)
            assert first.requests and second.requests
            assert not first.allocated and not second.allocated


async def test_a_name_whose_addresses_repeat_is_asked_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A name whose addresses repeat has each asked once."""
    fake = FakeServer()
    with wall_clock_guard(), _udp_server() as server:
        async with trio.open_nursery() as outer:
            outer.start_soon(_serve_each, server, _answering(server, fake, 0.2), outer)
            addresses = [(socket.AF_INET, server.getsockname())] * 3
            with resolving("turn.test", addresses):
                async with trio.open_nursery() as nursery:
                    relay = await start_relay(nursery, _SEVERAL, Inbox())
                    assert relay.local_address == RELAYED
                    allocates = [m for _, m in fake.requests if m.method is stun.Method.ALLOCATE]
                    assert len(allocates) == 2  # (one 401, one granted)
                    nursery.cancel_scope.cancel()
            assert not fake.allocated
            outer.cancel_scope.cancel()


@pytest.mark.skipif(not HAS_IPV6, reason="no ::1")
async def test_the_other_family_is_asked_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A dual-stack name as a resolver sorts it (RFC 6724): two IPv6 addresses, then the
    IPv4 one; the IPv6 path is broken (silent).  The families take turns (RFC 8305 §4, as
    trio's open_tcp_stream has them for the same server over TCP): the IPv4 address is
    asked second, at ``ADDRESS_STAGGER``.  It was asked third, at twice that (the p38pass1
    review)."""
    fake = FakeServer()
    with (
        wall_clock_guard(),
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s1,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s2,
        _udp_server() as server,
    ):
        s1.bind(("::1", 0))
        s2.bind(("::1", 0))
        async with trio.open_nursery() as outer:
            outer.start_soon(_serve_each, server, _answering(server, fake), outer)
            addresses = [
                (socket.AF_INET6, s1.getsockname()),
                (socket.AF_INET6, s2.getsockname()),
                (socket.AF_INET, server.getsockname()),
            ]
            with resolving("turn.test", addresses):
                async with trio.open_nursery() as nursery:
                    began = trio.current_time()
                    relay = await start_relay(nursery, _SEVERAL, Inbox())
                    took = trio.current_time() - began
                    assert relay.local_address == RELAYED
                    assert took < 2 * _relay.ADDRESS_STAGGER, f"IPv4 asked after {took:.2f} s"
                    nursery.cancel_scope.cancel()
            outer.cancel_scope.cancel()


class _NoChallenge(FakeServer):
    """A server that grants an Allocate without a challenge (no credentials asked)."""

    def handle(self, data: bytes, now: float) -> list[bytes]:
        if self.silent:
            return []
        message = stun.decode(data)
        if message.get(stun.Username) is None and message.method is stun.Method.ALLOCATE:
            self.requests.append((now, message))
            self.allocated = True
            return [
                message.success_response(
                    stun.XorRelayedAddress(*self.relayed_address),
                    stun.XorMappedAddress(*MAPPED),
                    stun.Lifetime(600),
                ).encode()
            ]
        if message.get(stun.Username) is None and message.method is stun.Method.REFRESH:
            self.requests.append((now, message))
            lifetime = message.get(stun.Lifetime)
            self.allocated = bool(lifetime and lifetime.seconds)
            return [message.success_response(stun.Lifetime(0)).encode()]
        return super().handle(data, now)


async def test_a_server_without_challenge_at_two_addresses_keeps_one_allocation(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that grants without a challenge (RFC 8155 §9), at two addresses asked at
    once: one relay is kept, and the other address's grant, on its way as that address
    was given up, is deleted (an address given up unheard is still waited for, up to
    ``DEALLOCATE_WAIT``, for this: the cost of a refusal reported that much later when
    another address is silent, as the p38pass2 review found)."""
    monkeypatch.setattr(_relay, "ADDRESS_STAGGER", 0.0)
    first, second = _NoChallenge(), _NoChallenge(relayed_address=("198.51.100.2", 50000))
    with wall_clock_guard():
        async with _at_two_addresses(first, second):
            async with trio.open_nursery() as nursery:
                with trio.fail_after(5):
                    relay = await start_relay(nursery, _SEVERAL, Inbox())
                await trio.sleep(5)
                assert [first.allocated, second.allocated].count(True) == 1
                assert not relay.closed
                nursery.cancel_scope.cancel()
            assert not first.allocated and not second.allocated


async def _arrivals(sock: socket.socket, times: list[float]) -> None:
    """When each datagram reaches ``sock`` (a silent address of the server's)."""
    listener = trio.socket.from_stdlib_socket(sock)
    while True:
        await listener.recv(2048)
        times.append(trio.current_time())


async def test_addresses_not_reached_by_the_timeout_are_not_asked_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten silent addresses, ``ADDRESS_STAGGER`` apart, a 0.9 s timeout: those not reached
    by then are not asked at all, and the failure comes at the timeout.  Each attempt that
    timed out then had the next asked at once, six Allocates past the timeout (the p38pass7
    review)."""
    timeout = 0.9
    socks = [_udp_server() for _ in range(10)]
    arrivals: list[list[float]] = [[] for _ in socks]
    try:
        with wall_clock_guard():
            async with trio.open_nursery() as outer:
                for sock, times in zip(socks, arrivals, strict=True):
                    outer.start_soon(_arrivals, sock, times)
                addresses = [(socket.AF_INET, s.getsockname()) for s in socks]
                with resolving("turn.test", addresses):
                    began = trio.current_time()
                    async with trio.open_nursery() as nursery:
                        with pytest.raises(AllocationError) as caught:
                            await start_relay(
                                nursery, _SEVERAL, Inbox(), allocation_timeout=timeout
                            )
                    took = trio.current_time() - began
                await trio.sleep(1)
                outer.cancel_scope.cancel()
    finally:
        for sock in socks:
            sock.close()
    first_asked = [times[0] - began for times in arrivals if times]
    assert len(first_asked) == 4 and max(first_asked) < timeout, first_asked
    assert caught.value.reason == "timeout" and took <= timeout + 0.01


async def test_a_server_reached_only_after_the_timeout_keeps_no_allocation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Eight silent addresses, then a server that grants without a challenge (RFC 8155
    §9): the timeout (1 s) passes before its turn, and it is not asked.  It was, at 2 s,
    and its grant, given up unchallenged, stayed at the server (the p38pass7 review)."""
    silent = [_udp_server() for _ in range(8)]
    granting = _NoChallenge()
    try:
        with wall_clock_guard(), _udp_server() as server:
            async with trio.open_nursery() as outer:
                outer.start_soon(_serve_each, server, _answering(server, granting), outer)
                addresses = [(socket.AF_INET, s.getsockname()) for s in silent]
                addresses.append((socket.AF_INET, server.getsockname()))
                with resolving("turn.test", addresses):
                    async with trio.open_nursery() as nursery:
                        with pytest.raises(AllocationError):
                            await start_relay(nursery, _SEVERAL, Inbox(), allocation_timeout=1.0)
                await trio.sleep(5)
                assert not granting.requests and not granting.allocated
                outer.cancel_scope.cancel()
    finally:
        for sock in silent:
            sock.close()
