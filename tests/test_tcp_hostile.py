"""ICE-TCP (RFC 6544) with a hostile or unlucky peer, on loopback only: the test's own
sockets stand in for the peer, so that they can send what no agent would (nothing, garbage,
half a frame, a frame in 65,537 pieces, wrong credentials), open too many connections,
stop reading, close or reset a connection at a bad moment; and the agent is left (or
cancelled) with connections open, opening and accepted.  Each was written against a defect
of the first cut of the TCP transport (the test failed with it), or as a regression test of
behaviour that was right.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import ClassVar

import pytest
import trio
import trio.testing
from tcp_peer import FramedPeer

import trice
from trice import stun
from trice._trio import _checks, _gather, _tcp
from trice._trio._tcp import LINK_BUFFER, TcpTransport
from trice._trio._transport import READ_BATCH, bind_socket
from trice.ice._framing import MAX_FRAME, FrameReader, frame

from loopback import (
    HAS_IPV6,
    TRACED,
    MostPerStep,
    adopted_tcp_connection,
    hold_readers,
    loopback_config,
    open_fds,
    peer_check,
    signal,
    tcp_connection,
    tcp_transport,
    until,
    wait_for_state,
    walk_tasks,
)
from virtual_time import task_steps_while_sleeping, wall_clock_guard

ACTIVE = trice.TcpType.ACTIVE
PASSIVE = trice.TcpType.PASSIVE
#: The credentials of the peer the test plays (and of that peer after an ICE restart).
PEER_UFRAG, PEER_PWD = "peer", "p" * 22
PEER_UFRAG2, PEER_PWD2 = "peer2", "q" * 22
#: PROVE_WITHIN for the tests that wait it out (see ``short_prove``).
PROVE = 0.2
#: A long retransmission schedule: a check that fails within a second did not wait for it.
#: A long retransmission schedule, and no PAC wait (RFC 8863): the tests that use it time a
#: check's failure, which ICE follows at once then.
SLOW = trice.Timing(rto=5.0, rto_max=5.0, pac_timeout=0)
#: The PRIORITY of the test peer's checks (an active peer-reflexive candidate's, roughly).
PRIORITY = 1_845_000_000
_REQUEST = stun.MessageClass.REQUEST


def tcp_config(*kinds: trice.TcpType, ipv6: bool = False, **kwargs: object) -> trice.AgentConfig:
    """A loopback-only agent configuration with these ICE-TCP candidates."""
    config = loopback_config(ipv6=ipv6, **kwargs)
    network = dataclasses.replace(config.network, tcp_candidates=kinds)
    return dataclasses.replace(config, network=network)


def _transport(agent: trice.Agent, kind: trice.TcpType) -> TcpTransport:
    (transport,) = [
        t for t in agent._transports.values() if isinstance(t, TcpTransport) and t.tcp_type is kind
    ]
    return transport


def _passive_candidate(port: int, foundation: str = "1") -> trice.Candidate:
    return trice.Candidate.from_sdp(
        f"candidate:{foundation} 1 tcp 2124414975 127.0.0.1 {port} typ host tcptype passive"
    )


@pytest.fixture
def short_prove(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection a peer opened must carry an accepted check within PROVE seconds."""
    monkeypatch.setattr(_tcp, "PROVE_WITHIN", PROVE)


# --------------------------------------------------------------------------- the test's peer


#: The test's peers not closed yet (see ``_close_peers``).
_PEERS: list[_Peer] = []


@pytest.fixture(autouse=True)
def _close_peers() -> Iterator[None]:
    """Every peer a test opened is closed when it ends, however it ends.  (Not an async
    fixture: pytest-trio 0.8 runs none that a test does not name as an argument, and every
    peer's socket stayed open until the process ended.  After the test's trio run, a trio
    socket cannot be closed: its descriptor is.)"""
    yield
    while _PEERS:
        descriptor = _PEERS.pop().stream.socket.detach()
        if descriptor >= 0:
            os.close(descriptor)


class _Peer(FramedPeer):
    """A :class:`FramedPeer` that the test closes when it ends (see ``_close_peers``)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        _PEERS.append(self)


def _request(
    agent: trice.Agent,
    *,
    username: str | None = None,
    key: bytes | None = b"",
    nominate: bool = False,
) -> bytes:
    """A Binding request from the test's controlling peer to ``agent``: by default a check the
    agent accepts; ``key=None``: no MESSAGE-INTEGRITY (see ``loopback.peer_check``)."""
    return peer_check(
        agent,
        PEER_UFRAG,
        priority=PRIORITY,
        controlling=True,
        nominate=nominate,
        username=username,
        key=key,
    )


def _success(
    request: stun.Message,
    peer: _Peer,
    pwd: str = PEER_PWD,
    mapped: tuple[str, int] | None = None,
) -> bytes:
    """The peer's answer to the agent's check: a Binding success with the mapped address
    (the agent's end of the connection, unless ``mapped`` says otherwise)."""
    address = peer.agent_address if mapped is None else mapped
    response = request.success_response(stun.XorMappedAddress(*address))
    return response.encode(integrity_key=stun.short_term_key(pwd), fingerprint=True)


async def _answer_requests(
    peer: _Peer, pwd: str = PEER_PWD, mapped: tuple[str, int] | None = None
) -> None:
    """Answer every check that comes over ``peer`` with a success, until it closes."""
    while (datagram := await peer.receive()) is not None:
        message = stun.decode(datagram)
        if message.message_class is _REQUEST:
            await peer.send(_success(message, peer, pwd, mapped))


async def _handshake(agent: trice.Agent, peer: _Peer) -> trice.Connection:
    """The test's peer, controlling, connects ``agent`` (controlled, passive) over the
    connection ``peer``: a nominating check, then the answer to the agent's own check."""
    agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
    connected: list[trice.Connection] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def connect() -> None:
                connected.append(await agent.connect())
                nursery.cancel_scope.cancel()

            nursery.start_soon(connect)
            await peer.send(_request(agent, nominate=True))
            while True:
                datagram = await peer.receive()
                assert datagram is not None, "the agent closed the connection"
                message = stun.decode(datagram)
                if message.message_class is _REQUEST:
                    await peer.send(_success(message, peer))
    (connection,) = connected
    assert connection.selected_pair.local.tcp_type is PASSIVE
    return connection


async def _connect_answering(
    agent: trice.Agent, listener: trio.socket.SocketType, pwd: str = PEER_PWD
) -> _Peer:
    """``agent.connect()`` while the test's peer accepts the connection the agent's active
    candidate opens to ``listener`` and answers every check over it; returns that peer."""
    return (await _connect_answering_over(agent, listener, pwd))[0]


async def _connect_answering_over(
    agent: trice.Agent,
    over: trio.socket.SocketType | _Peer,
    pwd: str = PEER_PWD,
    mapped: tuple[str, int] | None = None,
) -> tuple[_Peer, trice.Connection]:
    """``agent.connect()`` while the test's peer answers every check over a connection:
    ``over`` itself (one open already), or the one the agent opens to the listener
    ``over`` (naming ``mapped`` as the agent's address, if given: see ``_success``).
    Returns that peer and the agent's connection."""
    peers: list[_Peer] = [over] if isinstance(over, _Peer) else []
    connections: list[trice.Connection] = []
    async with trio.open_nursery() as nursery:

        async def connect() -> None:
            connections.append(await agent.connect())
            nursery.cancel_scope.cancel()

        nursery.start_soon(connect)
        if not peers:
            assert not isinstance(over, _Peer)
            peers.append(await _Peer.accept(over))
        await _answer_requests(peers[0], pwd, mapped)
    return peers[0], connections[0]


@asynccontextmanager
async def _active_agent(
    timing: trice.Timing,
) -> AsyncIterator[tuple[trice.Agent, trio.socket.SocketType, trice.Candidate]]:
    """A controlling agent of ``timing`` with an active candidate, and the test's listener
    (a passive candidate of the peer's): the agent has the peer's parameters and that
    candidate (then end-of-candidates), ready to connect to it."""
    async with (
        _listener() as listener,
        trice.open_agent(tcp_config(ACTIVE, timing=timing), controlling=True) as agent,
    ):
        await agent.wait_gathering_complete()
        candidate = _passive_candidate(listener.getsockname()[1])
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(candidate)
        agent.add_remote_candidate(None)
        yield agent, listener, candidate


def _restarted(agent: trice.Agent, *remotes: trice.Candidate) -> None:
    """An ICE restart on both sides: the agent takes the peer's new parameters and
    ``remotes``, then end-of-candidates."""
    agent.restart()
    agent.set_remote_parameters(PEER_UFRAG2, PEER_PWD2)
    for remote in remotes:
        agent.add_remote_candidate(remote)
    agent.add_remote_candidate(None)


async def _proven(agent: trice.Agent, address: tuple[str, int]) -> _Peer:
    """A connection of the test's peer to ``agent``'s passive candidate, proven (its check
    answered with a success)."""
    peer = await _Peer.connect(address)
    await peer.send(_request(agent))
    with trio.fail_after(2):
        answer = await peer.receive()
    assert answer is not None
    assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
    return peer


async def _the_peers(agent: trice.Agent, address: tuple[str, int]) -> _Peer:
    """A connection of the test's peer to ``agent``'s passive candidate, proven, and the
    agent's own check over it answered (naming its end): the peer's, as far as the agent
    can tell (see ``_Link.answered``)."""
    peer = await _Peer.connect(address)
    await peer.send(_request(agent))
    with trio.fail_after(2):
        while True:
            datagram = await peer.receive()
            assert datagram is not None, "the agent closed the connection"
            message = stun.decode(datagram)
            if message.message_class is _REQUEST:
                await peer.send(_success(message, peer))
                break
    checked = len(agent.pair_statistics())
    await until(lambda: sum(p.responses_received for p in agent.pair_statistics()) >= checked)
    return peer


async def _fail_by_an_error(agent: trice.Agent, listener: trio.socket.SocketType) -> _Peer:
    """The agent (active, controlling, checking) connects to ``listener``, whose peer
    answers its check with a 400 error: the pair fails at once.  Returns that peer."""
    with trio.fail_after(2):
        first = await _Peer.accept(listener)
        check = await _read_until_stun(first)
    error = check.error_response(400, "Bad Request")
    await first.send(error.encode(integrity_key=stun.short_term_key(PEER_PWD), fingerprint=True))
    await until(lambda: agent.pair_statistics()[0].state is trice.PairState.FAILED)
    return first


async def _read_until_stun(peer: _Peer) -> stun.Message:
    """The next STUN message over ``peer`` (data skipped)."""
    while True:
        datagram = await peer.receive()
        assert datagram is not None, "the agent closed the connection"
        if datagram[:1] in (b"\x00", b"\x01") and datagram[4:8] == b"\x21\x12\xa4\x42":
            return stun.decode(datagram)


@asynccontextmanager
async def _listener(backlog: int = 8) -> AsyncIterator[trio.socket.SocketType]:
    """A listening socket of the test's on 127.0.0.1 (a passive candidate of the peer's)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        yield sock
    finally:
        sock.close()


@contextmanager
def _full_listener() -> Iterator[int]:
    """A port whose listener's accept queue is full: a connection to it stays opening (the
    kernel drops the SYNs), as to an address that swallows packets."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())  # (the one connection the queue holds)
        yield listener.getsockname()[1]
    finally:
        filler.close()
        listener.close()


@contextmanager
def _closed_port() -> Iterator[int]:
    """A port bound by nobody's listener (kept bound, so that nobody else takes it): a
    connection to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --------------------------------------------------------------------------- a stranger's input


async def test_a_connection_that_carries_no_check_is_closed_after_prove_within(
    short_prove: None,
) -> None:
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        transport = _transport(agent, PASSIVE)
        peer = await _Peer.connect(transport.local_address)
        opened = trio.current_time()
        with trio.fail_after(PROVE + 2):
            assert await peer.receive() is None
        assert trio.current_time() - opened >= PROVE * 0.9  # (not before its time)
        stats = agent.statistics()
        assert (stats.tcp_accepted, stats.tcp_refused, stats.tcp_unproven) == (1, 0, 1)
        assert transport.links == 0
        await peer.aclose()


async def test_garbage_frames_change_nothing_and_the_connection_is_closed_unproven(
    short_prove: None,
) -> None:
    """Empty frames, data, bytes that look like STUN and are not, a STUN indication: none is
    a check the agent accepts; nothing is delivered, learned or paired, nothing crashes."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address)
        indication = stun.Message(stun.Method.BINDING, stun.MessageClass.INDICATION)
        for datagram in (
            b"",
            b"\x00",
            b"application data from a stranger",
            b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12),  # (a header whose body is missing)
            bytes(range(256)) * 4,
            indication.encode(fingerprint=True),
        ):
            await peer.send(datagram)
        with trio.fail_after(PROVE + 2):
            assert await peer.receive() is None  # (no answer to any of it, then closed)
        stats = agent.statistics()
        assert stats.datagrams_received == 0
        assert stats.malformed_dropped >= 1 and stats.unknown_source_dropped >= 1
        assert stats.requests_received == 0
        assert (stats.tcp_accepted, stats.tcp_unproven) == (1, 1)
        assert agent.pair_statistics() == ()
        await peer.aclose()


@pytest.mark.skipif(TRACED, reason="a tracer (coverage) reads the flood too slowly for its bound")
async def test_a_flood_of_empty_frames_lets_the_other_tasks_run() -> None:
    """A stranger streams empty frames (32,768 in each 64 KiB read): the reader hands over
    at most READ_BATCH datagrams before the other tasks run, the rest of a read's after
    them.  It read 64 reads' worth, two million datagrams, in one step (the run stalled
    1.7 s); then a read's worth, 32,768 (25-30 ms a step: a peer with 50 connections
    stalled the run 1 s; the suspects41c review)."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        transport = _transport(agent, PASSIVE)
        steps = MostPerStep(transport, held=True)  # (never proven: its data is held)
        with socket.create_connection(transport.local_address) as flood:
            flood.setblocking(False)
            chunk = b"\x00\x00" * 32768
            queued = 0
            with contextlib.suppress(BlockingIOError):  # (until the kernel holds no more)
                while queued < 1 << 20:  # (half a million frames: enough, and quick)
                    queued += flood.send(chunk)
            frames = queued // 2
            trio.lowlevel.add_instrument(steps)
            try:
                await until(lambda: steps.total >= frames, within=30)
            finally:
                trio.lowlevel.remove_instrument(steps)
        assert frames > 4 * 32768  # (what one step took before)
        assert steps.most <= READ_BATCH


async def test_a_memoryview_goes_over_a_backed_up_connection() -> None:
    """``send_nowait`` takes a memoryview as it takes bytes, also once data waits to be
    written (a TypeError came out of its test for STUN then)."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address, rcvbuf=4096)
        connection = await _handshake(agent, peer)
        (link,) = _transport(agent, PASSIVE)._links.values()
        while not link.pending:
            connection.send_nowait(b"x" * 1200)
        assert connection.send_nowait(memoryview(b"\x80 hello")) in (True, False)
        assert connection.send_nowait(memoryview(b"\x00\x01 looks like STUN")) in (True, False)


async def test_data_queued_before_consent_expired_is_not_written_after_it() -> None:
    """RFC 7675 §5.1: once consent expired (``failed``), no data goes.  The peer (a 4 KiB
    receive buffer) stops reading and answering after the handshake, the application fills
    the connection, and consent expires; the peer then reads again.  What the kernel held
    already is out of the agent's hands (TCP_NOTSENT_LOWAT keeps it small), and the rest of
    a frame begun goes, to keep the stream in step; the agent's own queue, up to 256 KiB,
    is dropped at ``failed`` (it was written out as the connection drained)."""
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=0.2, failed_timeout=0.6)
    config = tcp_config(PASSIVE)
    async with trice.open_agent(
        dataclasses.replace(config, timing=timing), controlling=False
    ) as agent:
        await agent.wait_gathering_complete()
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address, rcvbuf=4096)
        connection = await _handshake(agent, peer)
        datagram = b"\x80" + b"d" * 1199
        while connection.send_nowait(datagram):
            pass
        (link,) = _transport(agent, PASSIVE)._links.values()
        assert len(link.pending) > LINK_BUFFER // 2
        await until(lambda: agent.connection_state is trice.ConnectionState.FAILED, 5)
        with pytest.raises(trio.BrokenResourceError):
            connection.send_nowait(datagram)
        assert len(link.pending) < 2 + len(datagram)  # (at most the rest of a frame begun)
        after = 0  # (data that reaches the peer from now on)
        with trio.move_on_after(1.0):
            while (got := await peer.receive()) is not None:
                after += len(got) if got[:1] == b"\x80" else 0
        assert after < LINK_BUFFER // 2, after


async def test_a_send_waiting_on_a_backed_up_connection_goes_once_it_drains() -> None:
    """``Connection.send`` over an ICE-TCP connection whose buffer is full waits only while
    it is: once the peer reads again and the connection's writer drains the buffer, the
    send goes (it waited for an unrelated wake-up: a new pair, the agent closing)."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address, rcvbuf=4096)
        connection = await _handshake(agent, peer)
        while connection.send_nowait(b"\x80" + b"d" * 1199):
            pass
        last = b"\x80last" + b"L" * 1195  # (as big: no room for it either)
        sent = trio.Event()

        async def send() -> None:
            await connection.send(last)
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked(0.01)
            assert not sent.is_set()  # (it waits for room)
            with trio.fail_after(5):
                while (datagram := await peer.receive()) != last:  # the peer reads again
                    assert datagram is not None
            with trio.fail_after(1):
                await sent.wait()


@pytest.mark.parametrize("wrong", ["ufrag", "key", "no-integrity"])
async def test_a_check_with_wrong_credentials_gets_an_error_and_proves_nothing(
    short_prove: None, wrong: str
) -> None:
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address)
        if wrong == "ufrag":
            request = _request(agent, username=f"nobody:{PEER_UFRAG}")
        elif wrong == "key":
            request = _request(agent, key=stun.short_term_key("w" * 22))
        else:
            request = _request(agent, key=None)
        await peer.send(request)
        with trio.fail_after(PROVE + 2):
            response = await peer.receive()
            assert response is not None
            message = stun.decode(response)
            assert message.message_class is stun.MessageClass.ERROR
            error = message.get(stun.ErrorCode)
            assert error is not None and error.code in (400, 401)
            assert await peer.receive() is None  # closed, unproven
        stats = agent.statistics()
        assert stats.requests_rejected == 1
        assert (stats.tcp_accepted, stats.tcp_unproven) == (1, 1)
        assert agent.pair_statistics() == ()  # (no peer-reflexive candidate learned)
        assert agent.connection_state is trice.ConnectionState.NEW
        await peer.aclose()


async def test_half_a_frame_then_the_end_of_the_stream_closes_the_connection_at_once() -> None:
    """(PROVE_WITHIN is the real one, 10 s: the connection ends because the peer's did.)"""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        transport = _transport(agent, PASSIVE)
        peer = await _Peer.connect(transport.local_address)
        await peer.stream.send_all(frame(_request(agent))[:30])
        await peer.stream.send_eof()
        with trio.fail_after(2):
            assert await peer.receive() is None
        assert transport.links == 0
        stats = agent.statistics()
        assert (stats.requests_received, stats.tcp_unproven) == (0, 0)
        await peer.aclose()
        # The agent is none the worse: the next connection's check is answered.
        again = await _Peer.connect(transport.local_address)
        await again.send(_request(agent))
        with trio.fail_after(2):
            answer = await again.receive()
        assert answer is not None
        assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
        await again.aclose()


async def test_the_largest_frame_sent_byte_by_byte_keeps_the_stream_in_step() -> None:
    """A 65,535-byte frame (STUN-looking junk: malformed), each byte in a send of its own,
    then a check in the same stream: the check is read whole and answered."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        raw = socket.create_connection(_transport(agent, PASSIVE).local_address)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        peer = _Peer(trio.SocketStream(trio.socket.from_stdlib_socket(raw)))
        junk = b"\x00\x01" + (MAX_FRAME - 20).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12)
        junk += bytes(MAX_FRAME - len(junk))
        wire = frame(junk) + frame(_request(agent))
        with trio.fail_after(10):
            for i in range(len(wire)):
                while True:
                    try:
                        raw.send(wire[i : i + 1])  # (one byte a call)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(raw)
                if i % 4096 == 0:
                    await trio.lowlevel.checkpoint()  # (the agent reads along the way)
            answer = await peer.receive()
        assert answer is not None
        assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
        stats = agent.statistics()
        assert (stats.malformed_dropped, stats.requests_received) == (1, 1)
        await peer.aclose()


async def test_past_max_pairs_proven_connections_stay_and_a_new_one_is_refused() -> None:
    """At the cap (max_pairs connections, all proven, and answered: the peer's), a new
    connection is closed at once and counted; once one of the others closes, its place is
    free again."""
    async with trice.open_agent(tcp_config(PASSIVE, max_pairs=2), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        transport = _transport(agent, PASSIVE)
        address = transport.local_address
        first = await _the_peers(agent, address)
        second = await _the_peers(agent, address)
        third = await _Peer.connect(address)
        with trio.fail_after(2):
            assert await third.receive() is None  # closed at once
        stats = agent.statistics()
        assert (stats.tcp_accepted, stats.tcp_refused) == (2, 1)
        assert transport.links == 2
        await first.aclose()
        await until(lambda: transport.links == 1)
        await _proven(agent, address)
        stats = agent.statistics()
        assert (stats.tcp_accepted, stats.tcp_refused, stats.tcp_unproven) == (3, 1, 0)
        assert transport.links == 2  # (the second one, and the new one)
        await second.aclose()


async def test_a_connection_whose_check_found_no_room_is_closed_unproven(
    short_prove: None,
) -> None:
    """A check over a new connection, answered with a success but past the remote
    candidate cap (no pair stands for it: counted in ``prflx_dropped``), leaves the
    connection unproven: it is closed after PROVE_WITHIN, as one that carried no check.
    It stayed, holding one of the candidate's ``max_pairs`` places for good (the authtcp
    review)."""
    config = tcp_config(PASSIVE, max_pairs=3, max_remote_candidates=2)
    async with trice.open_agent(config, controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        transport = _transport(agent, PASSIVE)
        address = transport.local_address
        first = await _proven(agent, address)
        second = await _proven(agent, address)
        third = await _proven(agent, address)  # (answered with a success, but no room)
        assert agent.statistics().prflx_dropped == 1
        with trio.fail_after(PROVE + 2):
            assert await third.receive() is None  # closed by the agent
        stats = agent.statistics()
        assert (stats.tcp_accepted, stats.tcp_unproven, transport.links) == (3, 1, 2)
        for peer in (first, second, third):
            await peer.aclose()


async def test_connections_that_came_and_went_do_not_lock_the_peer_out() -> None:
    """The peer opens connections to the passive candidate one after another, each
    carrying a check the agent accepts, and closes each: the far end each left behind
    (peer-reflexive, at an address no connection comes from again) goes with it.  They
    stayed, counted against ``max_remote_candidates``: past the cap, a new connection's
    nomination was refused (400) until an ICE restart (the authtcp review)."""
    config = tcp_config(PASSIVE, max_remote_candidates=5)
    async with trice.open_agent(config, controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        transport = _transport(agent, PASSIVE)
        address = transport.local_address
        for _ in range(config.max_remote_candidates + 1):
            gone = await _proven(agent, address)
            await gone.aclose()
            await until(lambda: transport.links == 0)
        peer = await _Peer.connect(address)
        await peer.send(_request(agent, nominate=True))
        with trio.fail_after(2):
            answer = await peer.receive()
        assert answer is not None
        assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
        assert agent.statistics().prflx_dropped == 0
        await peer.aclose()


async def test_a_mapped_address_at_the_agents_listener_leaves_the_local_end_active() -> None:
    """The peer answers the check that went over the connection the agent opened with
    XOR-MAPPED-ADDRESS naming the agent's own passive listener (a lie: that end is an
    ephemeral port).  The selected pair's local candidate stays the active one; it became
    the passive host candidate of the other socket, with its priority (the authtcp
    review)."""
    config = tcp_config(ACTIVE, PASSIVE, timing=trice.Timing(rto=0.1, rto_max=0.1))
    async with (
        _listener() as listener,
        trice.open_agent(config, controlling=True) as agent,
    ):
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(_passive_candidate(listener.getsockname()[1]))
        agent.add_remote_candidate(None)
        passive = _transport(agent, PASSIVE).local_address
        with trio.fail_after(5):
            _, connection = await _connect_answering_over(agent, listener, mapped=passive)
        assert connection.selected_pair.local.tcp_type is ACTIVE


async def test_a_check_no_pair_stands_for_leaves_the_connection_of_before_unproven(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After an ICE restart, at ``max_remote_candidates``, the new generation's check over
    the connection of before is answered but makes no pair (``prflx_dropped``): the
    connection stays of the generation before, and is closed once the new pair is
    selected and the pair of before's data counts no more.  It was proven anew, and stayed
    with no pair on it for good (its far end was still a known address: the p40pass3
    review)."""
    config = tcp_config(PASSIVE, max_remote_candidates=3)
    async with trice.open_agent(config, controlling=False) as agent:
        await agent.wait_gathering_complete()
        transport = _transport(agent, PASSIVE)
        address = transport.local_address
        old = await _Peer.connect(address)
        await _handshake(agent, old)
        _restarted(agent, _passive_candidate(1, "7"), _passive_candidate(2, "8"))
        username = f"{agent.local_parameters.ufrag}:{PEER_UFRAG2}"

        async def check(peer: _Peer, *, nominate: bool = False) -> stun.MessageClass:
            await peer.send(_request(agent, username=username, nominate=nominate))
            while True:
                data = await peer.receive()
                assert data is not None, "the agent closed the connection"
                message = stun.decode(data)
                if message.message_class is not _REQUEST:
                    return message.message_class
                await peer.send(_success(message, peer, PEER_PWD2))

        new = await _Peer.connect(address)
        assert await check(new) is stun.MessageClass.SUCCESS
        assert await check(old) is stun.MessageClass.SUCCESS  # (answered: no room)
        assert agent.statistics().prflx_dropped == 1
        await new.send(_request(agent, username=username, nominate=True))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_answer_requests, new, PEER_PWD2)
            await trio.sleep(60)  # (virtual: the pair of before's data counts no more)
            assert agent._core.previous_remote is None
            assert transport.links == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("resignalled", [False, True], ids=["", "resignalled"])
async def test_the_connection_of_before_carries_data_while_the_pair_of_before_counts(
    autojump_clock: trio.testing.MockClock, resignalled: bool
) -> None:
    """After an ICE restart, once the new pair is selected, what the peer sends over the
    connection of before still comes while the pair of before's consent would have lasted
    (the peer may not have taken its nomination's answer in yet), and the connection closes
    after; ``resignalled``: the same when the peer signals that connection's far end anew,
    peer-reflexive, as libnice does.  That closed the connection at the first deadline
    after the selection, and what came over it after was lost (the suspects41b review)."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        transport = _transport(agent, PASSIVE)
        address = transport.local_address
        old = await _Peer.connect(address)
        connection = await _handshake(agent, old)
        far = old.stream.socket.getsockname()[1]
        line = f"candidate:9 1 tcp 1845000000 127.0.0.1 {far} typ prflx tcptype active"
        _restarted(agent, *([trice.Candidate.from_sdp(line)] if resignalled else []))
        username = f"{agent.local_parameters.ufrag}:{PEER_UFRAG2}"
        async with agent.subscribe() as events, trio.open_nursery() as nursery:
            new = await _Peer.connect(address)
            nursery.start_soon(_answer_requests, new, PEER_PWD2)
            await new.send(_request(agent, username=username, nominate=True))
            near = new.stream.socket.getsockname()[1]
            with trio.fail_after(5):
                async for event in events:
                    match event:
                        case trice.SelectedPairChanged(pair) if pair.remote.port == near:
                            break
            await trio.sleep(5)  # (virtual: past the next deadlines, a consent check's)
            await old.send(b"over the pair of before")
            with trio.fail_after(1):
                assert await connection.receive() == b"over the pair of before"
            await trio.sleep(60)  # (virtual: the pair of before's data counts no more)
            assert transport.links == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("on_mux", [False, True], ids=["own-listener", "tcp-mux"])
@pytest.mark.parametrize("max_pairs", [3, 100])
async def test_the_connections_of_before_a_restart_leave_the_new_peer_room(
    autojump_clock: trio.testing.MockClock, max_pairs: int, on_mux: bool
) -> None:
    """A peer that held the old credentials (the old generation's answerer, or whoever read
    a leaked SDP) connected, and proved ``max_pairs`` connections to the passive candidate
    (on its own listener, or a TCP mux's); the application restarts ICE to shut it out.
    The new peer's connection takes the place of the oldest of before that no new check
    went over, but the one that carries data until the new checks select a pair; its
    nominating check is answered.  Proven once, they held every place: the new peer was
    refused, for good (the authrestart review)."""
    config = (
        loopback_config(max_pairs=max_pairs) if on_mux else tcp_config(PASSIVE, max_pairs=max_pairs)
    )
    async with contextlib.AsyncExitStack() as stack:
        mux = await stack.enter_async_context(trice.open_tcp_mux("127.0.0.1")) if on_mux else None
        agent = await stack.enter_async_context(
            trice.open_agent(config, controlling=False, mux=mux)
        )
        await agent.wait_gathering_complete()
        transport = _transport(agent, PASSIVE)
        address = transport.local_address
        old = [await _Peer.connect(address)]
        await _handshake(agent, old[0])  # (the pair selected: its connection carries data)
        old += [await _proven(agent, address) for _ in range(max_pairs - 1)]
        assert transport.links == max_pairs
        _restarted(agent)
        new = await _Peer.connect(address)
        username = f"{agent.local_parameters.ufrag}:{PEER_UFRAG2}"
        await new.send(_request(agent, username=username, nominate=True))
        with trio.fail_after(5):
            answer = await new.receive()
        assert answer is not None, f"refused ({agent.statistics().tcp_refused})"
        assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
        with trio.fail_after(5):
            assert await old[1].receive() is None  # (the oldest no new check went over)
        assert transport.links == max_pairs
        kept = old[0].stream.socket.getsockname()
        assert transport.link_to((kept[0], kept[1])) is not None  # (the pair that carries data)


async def test_the_connections_of_before_a_restart_leave_an_active_candidate_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The old generation's peer signalled ``max_pairs`` passive candidates, accepts every
    connection the agent's active candidate opens to them, and answers none of the checks:
    they are in flight when the application restarts ICE with a new peer (one passive
    candidate).  The agent connects to the new peer's candidate, in the place of a
    connection of before, which is no peer's connection refused.  It opened none: those
    held every place, and ICE failed (the authrestart review); and then the one that gave
    its place up was counted in ``tcp_refused`` (the p42pass1 review)."""
    max_pairs = 3
    config = tcp_config(ACTIVE, max_pairs=max_pairs, timing=trice.Timing(rto=5.0, rto_max=5.0))
    async with contextlib.AsyncExitStack() as stack:
        listeners = [await stack.enter_async_context(_listener()) for _ in range(max_pairs + 1)]
        *old, new = listeners
        agent = await stack.enter_async_context(trice.open_agent(config, controlling=True))
        nursery = await stack.enter_async_context(trio.open_nursery())
        await agent.wait_gathering_complete()
        transport = _transport(agent, ACTIVE)
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        for n, listener in enumerate(old):
            agent.add_remote_candidate(_passive_candidate(listener.getsockname()[1], str(n + 1)))
        agent.add_remote_candidate(None)
        nursery.start_soon(agent.connect)
        held = []
        with trio.fail_after(5):
            for listener in old:
                held.append(peer := await _Peer.accept(listener))
                assert await peer.receive() is not None  # (its check: never answered)
        assert transport.links == max_pairs
        _restarted(agent, _passive_candidate(new.getsockname()[1], "9"))
        with trio.fail_after(10):
            await _Peer.accept(new)
        assert transport.links == max_pairs
        stats = agent.statistics()
        assert (stats.tcp_accepted, stats.tcp_refused) == (0, 0)
        nursery.cancel_scope.cancel()


async def test_the_place_an_active_candidate_makes_after_a_restart_is_its_new_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An active candidate (max_pairs 2) connected to the peer's passive candidates A and B
    (the peer accepts, answers nothing).  ICE restarts; the peer signals A again and a new
    one, X.  The new check to A goes over A's connection of before; X's check needs a
    place, and B's connection, of before, idle, gives it up.  A's was closed instead, its
    check in flight sent again over a new connection, which took the place made for X's:
    X was never connected to (the p42pass1 review)."""
    config = tcp_config(ACTIVE, max_pairs=2, timing=trice.Timing(rto=5.0, rto_max=5.0))
    async with contextlib.AsyncExitStack() as stack:
        a, b, x = [await stack.enter_async_context(_listener()) for _ in range(3)]
        agent = await stack.enter_async_context(trice.open_agent(config, controlling=True))
        nursery = await stack.enter_async_context(trio.open_nursery())
        await agent.wait_gathering_complete()
        transport = _transport(agent, ACTIVE)
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(_passive_candidate(a.getsockname()[1], "1"))
        agent.add_remote_candidate(_passive_candidate(b.getsockname()[1], "2"))
        agent.add_remote_candidate(None)

        async def connect() -> None:
            with contextlib.suppress(trice.IceFailedError):
                await agent.connect()

        nursery.start_soon(connect)
        held = []
        with trio.fail_after(5):
            for listener in (a, b):
                held.append(peer := await _Peer.accept(listener))
                assert await peer.receive() is not None  # (its check: never answered)
        assert transport.links == 2
        a_again = _passive_candidate(a.getsockname()[1], "1")
        _restarted(agent, a_again, _passive_candidate(x.getsockname()[1], "9"))
        with trio.fail_after(5):
            assert await held[0].receive() is not None  # (the new check to A, over the old)
        with trio.fail_after(10):
            await _Peer.accept(x)
        with trio.fail_after(5):
            assert await held[1].receive() is None  # (B's gave way)
        nursery.cancel_scope.cancel()


async def test_a_connection_proven_just_before_a_restart_is_not_closed_unproven(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A passive candidate: the peer is selected over a first connection, and opens a
    second, whose check the agent accepts.  The application restarts ICE half a second
    later; the peer's new parameters are slow to come.  The second connection stays, and
    counts as no unproven one: the restart made it unproven (for the cap), and its reader,
    still within the 10 s a connection has to carry an accepted check, closed it as one
    that carried none (the p42pass1 review)."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        transport = _transport(agent, PASSIVE)
        address = transport.local_address
        await _handshake(agent, await _Peer.connect(address))
        second = await _Peer.connect(address)
        await second.send(_request(agent))
        with trio.fail_after(5):
            while True:  # (its answer; the agent's own check over it is left unanswered)
                datagram = await second.receive()
                assert datagram is not None
                if stun.decode(datagram).message_class is stun.MessageClass.SUCCESS:
                    break
        end = second.stream.socket.getsockname()
        await trio.sleep(0.5)  # (virtual)
        agent.restart()
        await trio.sleep(11)  # (virtual: past the 10 s to prove a connection in)
        assert agent.statistics().tcp_unproven == 0
        assert transport.link_to((end[0], end[1])) is not None


def _free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing holds (for the test's peer to connect from)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _connect_from(
    port: int, address: tuple[str, int]
) -> tuple[trio.socket.SocketType, _Peer]:
    """A connection of the test's peer from 127.0.0.1:``port`` (again, if it was just
    reset) to ``address``: its socket, and the peer over it."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind(("127.0.0.1", port))
    await sock.connect(address)
    return sock, _Peer(trio.SocketStream(sock))


async def _answered(agent: trice.Agent, peer: _Peer) -> None:
    """The test's peer sends ``agent`` a check, which it answers with a success."""
    await peer.send(_request(agent))
    with trio.fail_after(2):
        answer = await peer.receive()
    assert answer is not None, f"closed unanswered ({agent.statistics().tcp_refused})"
    assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS


def _reset(sock: trio.socket.SocketType) -> None:
    """Close the test's end of a connection with a reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("pause", [0.0, 1.0], ids=["at-once", "later"])
async def test_a_reconnect_from_the_same_port_after_a_reset_is_answered(
    autojump_clock: trio.testing.MockClock, pause: float
) -> None:
    """The peer's active end, bound to a fixed port, proves a connection, resets it, and
    connects again from the same address and port, and checks (at once, or ``later``):
    the check is answered over the new connection, which stays.  At once, the agent had
    not read the reset yet when the new connection came: its listener refused it ("no
    room").  Later, the end of the agent's own check over the old connection closed the
    connection at that address: the new one (the suspects41c review)."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        transport = _transport(agent, PASSIVE)
        port = _free_port()
        for again in (False, True):
            sock, peer = await _connect_from(port, transport.local_address)
            if again:
                await trio.sleep(pause)  # (virtual)
            await _answered(agent, peer)
            if again:
                await trio.sleep(1)  # (virtual: the agent's check over the old one is over)
                assert transport.links == 1
            _reset(sock)


async def test_a_cancelled_checks_connection_goes_quietly_and_its_pair_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A controlling agent that nominates aggressively checks a passive candidate that never
    answers over ICE-TCP, then selects a UDP pair ranked above it: the TCP check is
    cancelled (RFC 8445 §8.1.2).  When its schedule runs out its connection is closed (it
    holds a place), quietly: the pair waits, not failed, as a cancelled check's timeout
    leaves it (``AgentCore.cancelled``).  The close told the agent that the path was lost,
    which failed the pair (the mutants4 review)."""
    config = tcp_config(ACTIVE, nomination=trice.Nomination.AGGRESSIVE)
    with socket.socket() as silent:  # (listens, never accepts nor answers)
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(loopback_config(), controlling=False) as b,
            trio.open_nursery() as nursery,
        ):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            tcp = _transport(a, ACTIVE)
            a.set_remote_parameters(b.local_parameters.ufrag, b.local_parameters.pwd)
            line = f"candidate:9 1 tcp 1518280447 127.0.0.1 {port} typ host tcptype passive"
            a.add_remote_candidate(trice.Candidate.from_sdp(line))
            nursery.start_soon(a.connect)
            await trio.sleep(0.1)  # (virtual: a's check over TCP goes)
            assert tcp.links == 1
            signal(a, b)  # (then b's UDP candidate: selected)
            await trio.sleep(60)  # (virtual: the TCP check's schedule runs out)
            selected = a.selected_pair
            assert selected is not None and selected.local.protocol == "udp"
            assert tcp.links == 0
            (pair,) = [s for s in a.pair_statistics() if s.pair.local.protocol == "tcp"]
            assert pair.state is not trice.PairState.FAILED
            nursery.cancel_scope.cancel()


async def test_a_reconnect_after_a_reset_with_data_unread_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the test above, at once, but the peer wrote a data frame more before it reset the
    old connection, which the agent has not read yet (its reader held): the new connection
    is taken, and its check answered.  The old one was taken for open (a peek finds that
    unread byte before the end), and the new one refused (the p41pass2 review)."""
    held = hold_readers(monkeypatch)
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        transport = _transport(agent, PASSIVE)
        port = _free_port()
        try:
            for again in (False, True):
                sock, peer = await _connect_from(port, transport.local_address)
                await _answered(agent, peer)
                if again:
                    break
                (link,) = transport._links.values()
                assert link.sock is not None
                held.add(link.sock.fileno())  # (the old connection is read no more for now)
                await peer.send(b"data")  # (read: its reader waits again, held, after it)
                await trio.testing.wait_all_tasks_blocked()
                await peer.send(b"left unread")
                _reset(sock)  # (and at once, the same port again)
        finally:
            held.clear()


async def test_a_strangers_idle_connections_do_not_lock_the_peer_out() -> None:
    """At the cap with connections nobody proved, a new one takes the oldest one's place
    (counted refused): the peer's connection, whose check proves it, gets in."""
    async with trice.open_agent(tcp_config(PASSIVE, max_pairs=2), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        transport = _transport(agent, PASSIVE)
        strangers = [await _Peer.connect(transport.local_address) for _ in range(2)]
        await until(lambda: transport.links == 2)
        await _proven(agent, transport.local_address)
        with trio.fail_after(2):
            assert await strangers[0].receive() is None  # (the oldest one made room)
        stats = agent.statistics()
        assert (stats.tcp_accepted, stats.tcp_refused) == (3, 1)
        # A connection at the cap whose check is answered is not the next to go: a new one
        # takes the place of the other stranger's.
        await _proven(agent, transport.local_address)
        with trio.fail_after(2):
            assert await strangers[1].receive() is None
        assert agent.statistics().tcp_refused == 2


class _ResetSocket(socket.socket):
    """An accepted connection that the peer reset before it was set up: as on macOS and
    the BSDs, where setsockopt on it then fails with EINVAL."""

    def setsockopt(self, *args: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")


class _ListenerOfResetConnections(socket.socket):
    """A listening socket whose first accepted connection is a :class:`_ResetSocket`."""

    resets: ClassVar[list[_ResetSocket]] = []  # (the ones made: the test closes them)

    def accept(self) -> tuple[socket.socket, object]:
        fd, address = self._accept()  # type: ignore[attr-defined]
        if not self.resets:
            reset = _ResetSocket(self.family, self.type, self.proto, fileno=fd)
            self.resets.append(reset)
            return reset, address
        return socket.socket(self.family, self.type, self.proto, fileno=fd), address


async def test_a_connection_reset_before_it_is_set_up_does_not_crash_the_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """setsockopt on an accepted connection can fail (EINVAL on macOS and the BSDs when
    the peer reset it already): that connection is lost, the agent is not, and the next
    connection is served."""

    def bind(
        address: str, port_range: tuple[int, int] | None, start: int = 0, *, kind: int = 0
    ) -> socket.socket:
        if kind != socket.SOCK_STREAM:
            return bind_socket(address, port_range, start)
        sock = bind_socket(address, port_range, start, kind=kind)
        listener = _ListenerOfResetConnections(fileno=sock.detach())
        listener.setblocking(False)
        return listener

    monkeypatch.setattr(_gather, "bind_socket", bind)
    resets: list[_ResetSocket] = []
    monkeypatch.setattr(_ListenerOfResetConnections, "resets", resets)
    try:
        async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
            await agent.wait_gathering_complete()
            agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
            address = _transport(agent, PASSIVE).local_address
            reset = await _Peer.connect(address)
            with trio.fail_after(2):
                assert await reset.receive() is None  # (closed: it could not be set up)
            await _proven(agent, address)
        assert [sock.fileno() for sock in resets] == [-1]  # (closed by the agent)
    finally:
        for sock in resets:
            sock.close()


class _FailingListener:
    """A listening socket (nobody connects) whose next ``left`` accepts fail with
    ``code``, counted by task step (``most``: the most in one step)."""

    def __init__(self, sock: socket.socket, code: int, left: int) -> None:
        self.sock, self.code, self.left = sock, code, left
        self.tries = self.in_step = self.most = 0
        self.cancel: tuple[int, trio.CancelScope] | None = None  # (at that try, cancel it)

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        self.tries += 1
        if self.cancel is not None and self.tries == self.cancel[0]:
            self.cancel[1].cancel()  # (as the agent's close, while the accepts fail)
        if self.left:
            self.left -= 1
            self.in_step += 1
            self.most = max(self.most, self.in_step)
            raise OSError(self.code, os.strerror(self.code))
        return self.sock.accept()


class _Steps(trio.abc.Instrument):
    def __init__(self, listener: _FailingListener) -> None:
        self.listener = listener

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.listener.in_step = 0


@pytest.mark.parametrize("code", [errno.EPERM, errno.EHOSTUNREACH, errno.ECONNABORTED])
async def test_an_accept_error_that_lasts_lets_the_other_tasks_run(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    """An accept that fails (a connection that failed before it was accepted, or a
    security module's refusal, for as long as it lasts) is tried again once the other
    tasks have had their turn, and after many in a row a tenth of a second later: the
    listener stays readable meanwhile.  It was tried again at once: the whole run spun in
    one task step, no timer, no other agent, no cancellation, for as long as the error
    lasted (the cancelsweep review)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        listener = _FailingListener(sock, code, 200)
        trio.lowlevel.add_instrument(_Steps(listener))
        with trio.move_on_after(1):
            await _tcp.accept(listener, "test")  # type: ignore[arg-type]
        assert listener.left == 0  # (all 200 tried within the second)
        assert listener.most == 1
        assert listener.tries == 201  # (then it waits for a connection)
        assert trio.current_time() == pytest.approx(1.0)


@pytest.mark.parametrize("code", [errno.ECONNABORTED, errno.EPERM])
async def test_a_cancellation_while_accepts_fail_carries_no_accept_error(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    """The agent (or mux) closes while its listener's accepts keep failing: the Cancelled
    that ends the accept loop carries no accept error as its context (its wait is made out
    of the except clause, as every wait of the readers is), with the error's traceback
    (the listener, the transport); it did (the p35pass2 review)."""
    contexts: list[BaseException | None] = []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        listener = _FailingListener(sock, code, 10**6)
        with trio.CancelScope() as scope:
            listener.cancel = (3, scope)
            try:
                await _tcp.accept(listener, "test")  # type: ignore[arg-type]
            except trio.Cancelled as exc:
                contexts.append(exc.__context__)
                raise
        assert listener.tries == 3
        assert contexts == [None]


async def test_a_listener_that_listens_no_more_ends_its_accept_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """EINVAL from accept: the listener listens no more (the system shut it down), and says
    so at every try while it reads as ready; the accept loop ends, with a warning."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        listener = _FailingListener(sock, errno.EINVAL, 1000)
        with trio.fail_after(1):
            assert await _tcp.accept(listener, "test") is None  # type: ignore[arg-type]
    assert listener.tries == 1
    assert "test: the listener listens no more" in caplog.text


_DESTROYED = """
import dataclasses, subprocess, sys
import trio, trio.testing, trice

async def main():
    network = trice.NetworkConfig(
        interface_filter=lambda n: n == "lo", include_loopback=True, ipv6=False, udp=False,
        tcp_candidates=(trice.TcpType.PASSIVE,),
    )
    async with trice.open_agent(trice.AgentConfig(network=network), controlling=False) as agent:
        await agent.wait_gathering_complete()
        (passive,) = agent.local_candidates
        port = f":{passive.port}"
        subprocess.run(["ss", "-K", "-t", "-l", "src", passive.address, "sport", "=", port],
                       check=True, capture_output=True)
        await trio.testing.wait_all_tasks_blocked()  # (the accept loop heard of it)
        print("alive", flush=True)

trio.run(main)
"""


def test_a_listener_the_system_destroys_leaves_the_run_going() -> None:
    """The kernel's own: ``ss -K`` (SOCK_DESTROY, as a network manager may use when an
    address goes) shuts an agent's passive listener down, and accept says EINVAL at every
    try while the listener reads as ready: the agent's run goes on (it froze, for good).
    In a child process, which ``subprocess.run`` ends at its time limit."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _DESTROYED], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the run froze once the listener was destroyed")
    if "Operation not supported" in done.stderr:
        pytest.skip("this kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY)")
    assert done.stdout == "alive\n", done.stderr[-2000:]
    assert "the listener listens no more" in done.stderr


# --------------------------------------------------------------------------- a connected peer


@pytest.mark.parametrize(
    "ipv6",
    [
        pytest.param(False, id="ipv4"),
        pytest.param(
            True, id="ipv6", marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
        ),
    ],
)
async def test_a_proven_connection_outlives_prove_within_and_carries_data(
    short_prove: None, ipv6: bool
) -> None:
    async with trice.open_agent(tcp_config(PASSIVE, ipv6=ipv6), controlling=False) as agent:
        await agent.wait_gathering_complete()
        address = _transport(agent, PASSIVE).local_address
        peer = await _Peer.connect(address)
        connection = await _handshake(agent, peer)
        # A silent connection opened after it is closed after PROVE_WITHIN: by then the
        # proven one's deadline has passed too.
        silent = await _Peer.connect(address)
        with trio.fail_after(PROVE + 2):
            assert await silent.receive() is None
        await connection.send(b"still here")
        await peer.send(b"and here")
        with trio.fail_after(2):
            assert await connection.receive() == b"and here"
            while (datagram := await peer.receive()) != b"still here":
                assert datagram is not None, "the proven connection was closed"
        stats = agent.statistics()
        assert (stats.tcp_accepted, stats.tcp_unproven) == (2, 1)
        await silent.aclose()
        await peer.aclose()


async def test_a_send_waiting_for_room_follows_the_pair_selected_anew() -> None:
    """A send waits for room on the selected pair's connection, whose peer stopped reading;
    an ICE restart's checks come over a new connection and select its pair: the waiting
    send goes over the new one.  It had stayed on the old connection until that closed, and
    then raised BrokenResourceError with the agent completed on the new pair."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        address = _transport(agent, PASSIVE).local_address
        old = await _Peer.connect(address, rcvbuf=4096)
        connection = await _handshake(agent, old)
        datagram = b"x" * 1200
        for _ in range(50_000):
            if not connection.send_nowait(datagram):
                break
        else:
            raise AssertionError("send_nowait never said the connection is full")
        outcome: list[BaseException | None] = []

        async def send() -> None:
            try:
                await connection.send(datagram)
                outcome.append(None)
            except trio.BrokenResourceError as exc:
                outcome.append(exc)

        async def answer(peer: _Peer) -> None:
            while (received := await peer.receive()) is not None:
                if received[4:8] == b"\x21\x12\xa4\x42":
                    message = stun.decode(received)
                    if message.message_class is _REQUEST:
                        await peer.send(_success(message, peer, PEER_PWD2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == []  # (it waits for room)
            agent.restart()
            agent.set_remote_parameters(PEER_UFRAG2, PEER_PWD2)
            new = await _Peer.connect(address)
            nursery.start_soon(answer, new)
            username = f"{agent.local_parameters.ufrag}:{PEER_UFRAG2}"
            await new.send(_request(agent, username=username, nominate=True))
            port = new.stream.socket.getsockname()[1]
            await until(lambda: connection.selected_pair.remote.port == port)
            await until(lambda: bool(outcome))
            assert outcome == [None]
            await old.aclose()  # (the old path ends now: nothing waits on it)
            await trio.testing.wait_all_tasks_blocked()
            assert agent.connection_state is trice.ConnectionState.COMPLETED
            await connection.send(b"after")  # (over the new connection at once)
            nursery.cancel_scope.cancel()


async def test_a_peer_that_never_reads_fills_a_bounded_buffer_and_a_waiting_send_breaks() -> None:
    """The peer stops reading: ``send_nowait`` says False once the kernel's buffers and
    LINK_BUFFER are full (nothing grows without bound); ``send`` waits, and can be
    cancelled; when the peer resets the connection, a waiting ``send`` raises
    BrokenResourceError at once."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address, rcvbuf=4096)
        connection = await _handshake(agent, peer)
        transport = _transport(agent, PASSIVE)
        (link,) = transport._links.values()
        datagram = b"x" * 1200
        for _ in range(50_000):  # (60 MB: far more than the kernel and LINK_BUFFER hold)
            if not connection.send_nowait(datagram):
                break
        else:
            raise AssertionError("send_nowait never said the connection is full")
        assert LINK_BUFFER - len(frame(datagram)) < len(link.pending) <= LINK_BUFFER
        with trio.move_on_after(0.2) as waited:
            await connection.send(datagram)
        assert waited.cancelled_caught  # (it waited for room, and cancelling it worked)
        assert len(link.pending) <= LINK_BUFFER
        outcome: list[BaseException] = []
        sent = trio.Event()

        async def send() -> None:
            try:
                await connection.send(datagram)
                sent.set()
            except trio.BrokenResourceError as exc:
                outcome.append(exc)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    while connection.send_nowait(datagram):
                        pass  # (full again: the kernel may have taken more meanwhile)
                    sent = trio.Event()
                    nursery.start_soon(send)
                    await trio.testing.wait_all_tasks_blocked()
                    if not sent.is_set():
                        break  # (it waits for room)
                else:
                    raise AssertionError("every send found room")
                await peer.reset()
        assert len(outcome) == 1
        assert transport.links == 0


async def _fails_with_no_connection_to(port: int, *, within: float) -> None:
    """An active agent, with a long retransmission schedule, whose one remote candidate is
    a passive one at ``port`` on 127.0.0.1: ICE fails within ``within`` seconds (the check
    fails as its connection does), and no connection is left."""
    async with trice.open_agent(tcp_config(ACTIVE, timing=SLOW), controlling=True) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(_passive_candidate(port))
        agent.add_remote_candidate(None)
        with trio.fail_after(within), pytest.raises(trice.IceFailedError):
            await agent.connect()
        assert _transport(agent, ACTIVE).links == 0


async def test_a_refused_connection_fails_the_check_at_once() -> None:
    """RFC 6544 §7.1: the connection cannot open, the check has failed; with a long
    retransmission schedule, ICE fails right after end-of-candidates all the same."""
    with _closed_port() as port:
        await _fails_with_no_connection_to(port, within=1)


async def test_a_connection_that_does_not_open_in_time_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_tcp, "CONNECT_TIMEOUT", 0.2)
    with _full_listener() as port:
        await _fails_with_no_connection_to(port, within=2)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_leaving_closes_every_connection_open_opening_or_accepted_and_every_task() -> None:
    """Cancelled mid-session, with a connection open to a peer that answers nothing, one
    still opening (SYNs dropped), and one a stranger opened to the passive candidate:
    every socket is closed (the far ends see it) and no task of the agent is left."""
    async with _listener() as silent:
        with _full_listener() as opening_port:
            before = open_fds()
            with trio.CancelScope() as scope:
                async with trice.open_agent(tcp_config(ACTIVE, PASSIVE), controlling=True) as a:
                    await a.wait_gathering_complete()
                    a.set_remote_parameters(PEER_UFRAG, PEER_PWD)
                    a.add_remote_candidate(_passive_candidate(silent.getsockname()[1], "1"))
                    a.add_remote_candidate(_passive_candidate(opening_port, "2"))
                    stranger = await _Peer.connect(_transport(a, PASSIVE).local_address)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(a.connect)
                        with trio.fail_after(5):
                            answerless = await _Peer.accept(silent)
                        active, passive = _transport(a, ACTIVE), _transport(a, PASSIVE)
                        # (A link counts from its opening; its socket comes once its
                        # connect's task has had its turn, which a stall may put last.)
                        await until(
                            lambda: (
                                (active.links, passive.links) == (2, 1)
                                and any(link.sock is not None for link in active._links.values())
                            )
                        )
                        assert sorted(link.sock is None for link in active._links.values()) == [
                            False,
                            True,  # (the one still opening)
                        ]
                        scope.cancel()
            ours = {str(p.stream.socket.fileno()) for p in (answerless, stranger)}
            assert open_fds() - before == ours  # (only the test's own ends are left)
            with trio.fail_after(2):
                await answerless.closed_by_agent()
                await stranger.closed_by_agent()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    names = [t.name for t in walk_tasks(root)]
    assert not [n for n in names if n.startswith(("tcp ", "accept ", "write"))]


async def test_a_hostile_authenticated_peer_cannot_crash_the_agent(short_prove: None) -> None:
    """A peer with the credentials (the signalled one, misbehaving) sends checks with odd
    priorities and roles, data, and drops connections mid-check, over several connections:
    the agent answers, and stays open."""
    async with trice.open_agent(tcp_config(ACTIVE, PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        address = _transport(agent, PASSIVE).local_address
        for priority in (0, 1, 2**31, 2**32 - 1):
            peer = await _Peer.connect(address)
            for controlling in (True, False):
                message = stun.Message(
                    stun.Method.BINDING,
                    _REQUEST,
                    attributes=[
                        stun.Username(f"{agent.local_parameters.ufrag}:{PEER_UFRAG}"),
                        stun.Priority(priority),
                        stun.IceControlling(priority) if controlling else stun.IceControlled(1),
                        stun.UseCandidate(),
                    ],
                )
                key = stun.short_term_key(agent.local_parameters.pwd)
                await peer.send(message.encode(integrity_key=key, fingerprint=True))
                await peer.send(b"data before any pair is selected")
            with trio.fail_after(2):
                assert await peer.receive() is not None  # (answered)
            await peer.reset()  # (mid-check: the agent's own check over it is in flight)
        await until(lambda: _transport(agent, PASSIVE).links == 0)
        assert agent.connection_state is not trice.ConnectionState.CLOSED
        assert agent.statistics().requests_received == 8


# --------------------------------------------------------------------------- a connection ends


async def test_the_selected_pairs_connection_closing_ends_the_connection_promptly() -> None:
    """The peer closes the selected pair's connection: the path is gone for good (nothing
    opens it again), so ICE fails at once, not when consent expires (failed_timeout, 25 s
    by default): a waiting receive, and send, raise BrokenResourceError."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address)
        connection = await _handshake(agent, peer)
        with trio.fail_after(1.5):
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    with pytest.raises(trio.BrokenResourceError, match="TCP connection"):
                        await connection.receive()

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                await peer.aclose()
        with pytest.raises(trio.BrokenResourceError, match="TCP connection"):
            await connection.send(b"x")
        assert agent.connection_state is trice.ConnectionState.FAILED
        with pytest.raises(trice.IceFailedError, match="TCP connection"):
            await agent.connect()


async def test_a_send_into_a_connection_the_peer_just_reset_fails_ice_cleanly() -> None:
    """The peer resets the selected pair's connection and the application sends before
    the agent has read the reset: the send meets it (ECONNRESET), and the agent fails the
    pair there and then, without raising out of send_nowait."""
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address)
        connection = await _handshake(agent, peer)
        await peer.reset()  # (no checkpoint after it: the agent's reader has not run)
        assert connection.send_nowait(b"x" * 1200) is False
        assert agent.connection_state is trice.ConnectionState.FAILED
        assert _transport(agent, PASSIVE).links == 0
        with pytest.raises(trio.BrokenResourceError, match="TCP connection"):
            connection.send_nowait(b"x")
        with pytest.raises(trio.BrokenResourceError, match="TCP connection"):
            await connection.receive()


async def _restart_once_the_connection_ends(
    end: Callable[[trice.Agent, _Peer], Awaitable[None]],
) -> None:
    """An active agent connects to the test's passive candidate; ``end`` ends the selected
    pair's connection; the agent and the peer restart ICE: the agent must connect again."""
    async with _active_agent(trice.Timing(rto=0.1, rto_max=0.1)) as (agent, listener, candidate):
        with trio.fail_after(2):
            peer = await _connect_answering(agent, listener)
        await end(agent, peer)
        _restarted(agent, candidate)
        with trio.fail_after(2):
            again = await _connect_answering(agent, listener, PEER_PWD2)
        await again.aclose()


async def test_an_ice_restart_reaches_a_passive_candidate_whose_connection_closed() -> None:
    """The selected pair's connection closes (ICE fails); after an ICE restart the active
    candidate opens a new connection to the same passive candidate, and connects."""

    async def closed(agent: trice.Agent, peer: _Peer) -> None:
        await peer.aclose()  # (the peer's end of the selected pair's connection closes)
        await until(lambda: _transport(agent, ACTIVE).links == 0)

    await _restart_once_the_connection_ends(closed)


async def test_an_ice_restart_over_a_connection_that_died_unnoticed_opens_a_new_one() -> None:
    """The peer's end of the selected pair's connection is gone (reset) and the agent has
    not read it yet when the application restarts ICE (as after a peer that rebooted: the
    reset only comes back to the restart's check).  The restart must still connect."""

    async def reset(_: trice.Agent, peer: _Peer) -> None:
        await peer.reset()  # (no checkpoint after it: the agent's reader has not run)

    await _restart_once_the_connection_ends(reset)


async def test_the_connection_of_before_closing_fails_no_pair_of_the_restarts_checks() -> None:
    """After an ICE restart the connection of before closes while the new pair to the
    same passive candidate waits its turn (a UDP pair that nobody answers goes first, Ta
    apart): only the pair of before goes with it.  The new pair's check opens a connection
    of its own, and ICE connects (the new pair failed with the old connection, unchecked,
    and the restart failed)."""
    timing = trice.Timing(ta=0.5, rto=0.1, rto_max=0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        nobody = trice.Candidate.from_sdp(
            f"candidate:9 1 udp 2130706431 127.0.0.1 {silent.getsockname()[1]} typ host"
        )
        async with _active_agent(timing) as (agent, listener, candidate):
            with trio.fail_after(2):
                peer = await _connect_answering(agent, listener)
            _restarted(agent, nobody, candidate)
            await peer.aclose()  # (before the new checks reach the TCP pair)
            await until(lambda: _transport(agent, ACTIVE).links == 0)
            with trio.fail_after(3):
                again = await _connect_answering(agent, listener, PEER_PWD2)
            await again.aclose()


async def test_after_a_restart_the_connection_the_new_checks_use_is_their_path() -> None:
    """An ICE restart whose checks go over the connection of before: once they are
    answered over it, it is the new generation's path, and a reset of it fails ICE at
    once, as before any restart.  (It stayed of the generation before for good: a consent
    check then went over a new connection, quietly, and ICE stayed connected to a peer
    that had reset; data sent into the reset opened a connection that began with it.)"""
    fast = trice.Timing(rto=0.1, rto_max=0.1, keepalive_interval=0.05)
    async with _active_agent(fast) as (agent, listener, candidate):
        with trio.fail_after(2):
            peer = await _connect_answering(agent, listener)
        _restarted(agent, candidate)
        with trio.fail_after(2):  # (over the connection of before)
            _, connection = await _connect_answering_over(agent, peer, PEER_PWD2)
        assert _transport(agent, ACTIVE).links == 1
        await peer.reset()  # (no checkpoint after it: the agent's reader has not run)
        assert connection.send_nowait(b"application data") is False
        await until(lambda: agent.connection_state is trice.ConnectionState.FAILED)
        readable, _, _ = select.select([listener.fileno()], [], [], 0)
        assert readable == []  # (no new connection was opened)


async def test_a_check_the_restart_dropped_does_not_reopen_the_connection_of_before() -> None:
    """A consent check waits on the connection when the peer resets it and the application
    restarts ICE (the reset not read yet); then data is sent into the reset.  Only the pair
    of before goes with the connection: the check the restart dropped opens no new one (it
    was still listed as waiting, so it went again over a new connection, with the old
    generation's credentials, and the pair of before stayed)."""
    fast = trice.Timing(rto=0.1, rto_max=0.1, keepalive_interval=0.05)
    async with _active_agent(fast) as (agent, listener, _):
        with trio.fail_after(2):
            peer, connection = await _connect_answering_over(agent, listener)
        with trio.fail_after(2):
            await _read_until_stun(peer)  # (a consent check, left unanswered)
        await peer.reset()  # (no checkpoint from here: the agent's reader has not run)
        agent.restart()
        agent.set_remote_parameters(PEER_UFRAG2, PEER_PWD2)
        connection.send_nowait(b"application data")  # (meets the reset)
        assert agent._core.data_pair is None
        assert _transport(agent, ACTIVE).links == 0
        readable, _, _ = select.select([listener.fileno()], [], [], 0)
        assert readable == []


async def test_a_check_unanswered_over_the_connection_of_before_opens_no_other() -> None:
    """After an ICE restart the peer takes the new check over the connection of before and
    never answers: the check times out, its pair fails and the connection is closed, and
    ICE fails.  No connection is opened again (the ended check, still listed, was sent
    again over a new one, which then stayed open after ICE had failed)."""
    fast = trice.Timing(rto=0.05, rto_max=0.05, max_binding_requests=3)
    async with _active_agent(fast) as (agent, listener, candidate):
        with trio.fail_after(2):
            peer = await _connect_answering(agent, listener)
        _restarted(agent, candidate)
        with trio.fail_after(3):
            await _read_until_stun(peer)  # (a check, never answered)
        await until(lambda: agent.connection_state is trice.ConnectionState.FAILED, 3.0)
        await until(lambda: _transport(agent, ACTIVE).links == 0)
        readable, _, _ = select.select([listener.fileno()], [], [], 0)
        assert readable == []


# --------------------------------------------------------------------------- slots, back-pressure


async def test_a_failed_pairs_connection_does_not_keep_a_later_candidate_unreachable() -> None:
    """A pair failed by an error response: its connection is closed (RFC 6544 §7.1: one
    connection a pair), and frees its place (max_links) for the next candidate's."""
    config = tcp_config(ACTIVE, max_pairs=1)
    async with (
        _listener() as refusing,
        _listener() as answering,
        trice.open_agent(config, controlling=True) as agent,
    ):
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(_passive_candidate(refusing.getsockname()[1], "1"))
        async with trio.open_nursery() as nursery:

            async def connect() -> None:
                await agent.connect()
                nursery.cancel_scope.cancel()

            nursery.start_soon(connect)
            first = await _fail_by_an_error(agent, refusing)
            with trio.fail_after(1):
                await first.closed_by_agent()
            # The peer's other candidate, trickled: the first pair failed, checks go there.
            agent.add_remote_candidate(_passive_candidate(answering.getsockname()[1], "2"))
            agent.add_remote_candidate(None)
            with trio.fail_after(1):
                second = await _Peer.accept(answering)
            with trio.fail_after(5):
                await _answer_requests(second)  # (until connect() returns)


async def test_a_check_that_no_connection_can_carry_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A check over TCP goes once: if the transport cannot take it (here, the only place
    for a connection is held), it fails then, not at the end of its (long) schedule."""
    monkeypatch.setattr(TcpTransport, "drop", lambda *_, **__: None)  # (held: see above)
    config = tcp_config(ACTIVE, max_pairs=1, timing=SLOW)
    async with _listener() as refusing, trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(_passive_candidate(refusing.getsockname()[1], "1"))
        async with trio.open_nursery() as nursery:

            async def connect() -> None:
                with pytest.raises(trice.IceFailedError):
                    await agent.connect()

            nursery.start_soon(connect)
            await _fail_by_an_error(agent, refusing)
            with _closed_port() as port:
                agent.add_remote_candidate(_passive_candidate(port, "2"))
                agent.add_remote_candidate(None)
                with trio.fail_after(1):
                    await until(lambda: agent.connection_state is trice.ConnectionState.FAILED)


async def test_a_check_at_its_end_first_reads_the_answer_waiting_on_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checks over TCP, on a connection whose reader has not had its turn (a stall): at
    its end each check reads the answer waiting on the connection, as over a host socket,
    and ICE connects.  The first answer's first byte came before (the reader framed it),
    so the rest must follow it in order.  (Only sockets read without waiting were read:
    the pair failed, and ICE with it.)"""
    held = hold_readers(monkeypatch)
    timing = trice.Timing(rto=0.3, rto_max=0.3, max_binding_requests=1)
    async with _active_agent(timing) as (agent, listener, _), trio.open_nursery() as nursery:
        connected: list[trice.Connection] = []

        async def connect() -> None:
            connected.append(await agent.connect())
            nursery.cancel_scope.cancel()

        nursery.start_soon(connect)
        with trio.fail_after(2):
            peer = await _Peer.accept(listener)
            check = await _read_until_stun(peer)
        (link,) = _transport(agent, ACTIVE)._links.values()
        assert link.sock is not None
        held.add(link.sock.fileno())  # its reader goes back to wait, for good, after:
        answer = frame(_success(check, peer))
        await peer.send_raw(answer[:1])
        await trio.testing.wait_all_tasks_blocked()
        await peer.send_raw(answer[1:])  # waits on the connection, unread
        with trio.fail_after(2):
            await _answer_requests(peer)  # (the nomination's answer too)
    assert connected  # (not cancelled by the time limit)
    (pair,) = agent.pair_statistics()
    assert pair.state is trice.PairState.SUCCEEDED
    assert pair.responses_received == 2


async def test_a_connection_a_tcp_mux_hands_over_from_an_address_with_one_open_is_refused() -> None:
    """As the candidate's own listener does: a second connection from an address that has
    one open is refused, and counted (``tcp_refused``, as its docs say); over a TCP mux it
    went uncounted (the stats review)."""
    counters = _tcp.TcpCounters()
    transport = tcp_transport(PASSIVE, counters=counters)
    (first, first_peer), (second, second_peer) = socket.socketpair(), socket.socketpair()
    with first, first_peer, second, second_peer:  # (the first open: its peer holds it)
        assert transport.adopt(first, ("127.0.0.1", 5000), b"")
        assert not transport.adopt(second, ("127.0.0.1", 5000), b"")
        assert (counters.accepted, counters.refused) == (1, 1)
        transport._links.clear()  # (its first, never served: the test closes it)


async def test_what_a_check_takes_from_its_connection_past_a_turn_is_handed_over() -> None:
    """A check about to be given up takes what its connection holds (``read_waiting``, as
    ``CheckRun._answered_meanwhile`` does): 100 small frames in one read, past a turn's
    budget.  All are handed over, in order, without the peer sending again.  The rest
    waited in ``link.backlog``, for the reader, parked until the socket held more (the
    p41pass3 review)."""
    delivered: list[bytes] = []
    transport = tcp_transport(PASSIVE, delivered=delivered)
    async with adopted_tcp_connection(transport) as (far, address):
        transport.prove(address, answered=True)
        await trio.testing.wait_all_tasks_blocked()  # (the reader waits for the socket)
        far.sendall(b"".join(frame(b"%03d" % i) for i in range(100)))
        await transport.read_waiting(address)  # (as a check task, with no checkpoint before)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    assert delivered == [b"%03d" % i for i in range(100)]


async def test_a_check_reading_its_connection_takes_no_more_than_a_turn_of_the_reader() -> None:
    """Thousands of small datagrams wait on a connection: a turn of its reader hands over
    at most READ_BATCH before the other tasks run (a receiver that takes what is queued at
    each turn keeps its buffer from overflowing), and a check that reads the connection
    before its give-up at most what one read framed.  It took every read of a batch at
    once: thousands of datagrams, past the receive buffer (the p35pass1 review)."""
    turns = []
    for by_check in (False, True):
        delivered: list[bytes] = []
        transport = tcp_transport(ACTIVE, delivered=delivered)
        with tcp_connection() as (far, near):
            near.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 212992)
            address = far.getsockname()[:2]
            link = _tcp._Link(address, proven=True, epoch=0)
            link.sock, link.reader = near, FrameReader()
            transport._links[address] = link
            # (Two reads' worth and more, READ_BATCH many times over: over loopback, all of
            # it is in the receive queue once sendall returns, within the buffer of a stock
            # kernel's rmem_max, asked for above on any box: 425,984 bytes, half of them
            # window.  4 MiB were asked for, and 4,000 frames sent, past the buffer there:
            # the flakes7 review.)
            data = frame(b"d" * 98) * 1500
            far.sendall(data)
            queued = fcntl.ioctl(near, termios.FIONREAD, struct.pack("i", 0))
            assert struct.unpack("i", queued)[0] == len(data)
            if by_check:
                await transport.read_waiting(address)
            else:
                await transport._read(link, near, link.reader)
        turns.append(len(delivered))
    assert 0 < turns[0] <= READ_BATCH
    assert turns[0] < turns[1] <= 65536 // len(frame(b"d" * 98)) + 1


def _recording_consent(monkeypatch: pytest.MonkeyPatch) -> tuple[list[bytes], list[trio.Event]]:
    """The transaction IDs of the consent checks the agents make from now on, and events:
    the last of them is set at the next one made."""
    consent: list[bytes] = []
    made: list[trio.Event] = [trio.Event()]
    transmit = _checks.CheckRun.transmit

    def recording(run: _checks.CheckRun) -> None:
        transmit(run)
        if run.check.consent:
            consent.append(run.check.transaction_id)
            made[-1].set()

    monkeypatch.setattr(_checks.CheckRun, "transmit", recording)
    return consent, made


@asynccontextmanager
async def _a_slow_peer() -> AsyncIterator[tuple[_Peer, trice.Connection]]:
    """An agent (passive, consent checks every 50 ms) connected over ICE-TCP to the test's
    peer, which takes little at a time (a receive buffer of 4 KiB): the peer, and the
    agent's connection."""
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=5, failed_timeout=10)
    async with trice.open_agent(tcp_config(PASSIVE, timing=timing), controlling=False) as agent:
        await agent.wait_gathering_complete()
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address, rcvbuf=4096)
        yield peer, await _handshake(agent, peer)


@pytest.mark.parametrize(
    "first_byte",
    [
        pytest.param(b"d", id="data"),
        pytest.param(b"\x00", id="data-whose-first-byte-is-below-4"),  # (as STUN's is)
    ],
)
async def test_a_consent_check_made_while_the_connection_is_backed_up_still_goes(
    monkeypatch: pytest.MonkeyPatch, first_byte: bytes
) -> None:
    """The application keeps the connection's buffer full while the peer is slow (here:
    stops reading for a moment); a consent check made meanwhile must reach the peer once
    it reads again, as TCP would carry it (over TCP a check is not sent again): STUN has
    room of its own, which data never takes, whatever its first byte."""
    consent, made = _recording_consent(monkeypatch)
    async with _a_slow_peer() as (peer, connection):
        # Small datagrams: what is left of the room is less than a check's frame.
        datagram = first_byte + b"d" * 39
        for _ in range(1_000_000):
            if not connection.send_nowait(datagram):
                break
        else:
            raise AssertionError("send_nowait never said the connection is full")
        consent.clear()
        made.append(trio.Event())
        with trio.fail_after(2):
            await made[-1].wait()
        wanted = consent[0]
        with trio.fail_after(1):
            while (await _read_until_stun(peer)).transaction_id != wanted:
                pass


async def test_a_consent_check_goes_before_the_data_that_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The application keeps the connection's buffer full (a file transfer) while the path
    is slow: a consent check made meanwhile goes before the data waiting, at the next
    frame's start, and the socket holds little unsent (TCP_NOTSENT_LOWAT), so that the
    peer reads it after less than half the connection's buffer of data.  It waited behind
    all of it, and the megabytes the kernel took: on a 50 kB/s path consent ran out."""
    consent, _made = _recording_consent(monkeypatch)
    async with _a_slow_peer() as (peer, connection):
        datagram = b"\x80" + b"d" * 1199
        while connection.send_nowait(datagram):
            pass
        consent.clear()
        await until(lambda: bool(consent))
        wanted, data = consent[0], 0
        with trio.fail_after(5):
            while True:
                got = await peer.receive()
                assert got is not None
                if got[:1] in (b"\x00", b"\x01") and stun.decode(got).transaction_id == wanted:
                    break
                if got[:1] == b"\x80":
                    data += len(got)
    assert data < _tcp.LINK_BUFFER // 2, data


async def test_the_tcp_counters_survive_the_agent_closing() -> None:
    async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        peer = await _Peer.connect(_transport(agent, PASSIVE).local_address)
        await until(lambda: agent.statistics().tcp_accepted == 1)
    await peer.aclose()
    assert agent.statistics().tcp_accepted == 1


@pytest.mark.parametrize("signalled", [False, True], ids=["unsignalled", "signalled-as-prflx"])
async def test_connections_of_generations_gone_are_closed_and_leave_room(
    autojump_clock: trio.testing.MockClock, signalled: bool
) -> None:
    """A controlled agent (passive, two places): at each ICE restart the peer connects
    anew and leaves its older connections open, with nothing over them (its network moved
    on: half-open here).  Each is closed once the new generation has its pair and data
    from the pair of before counts no more; the places stay free, and every restart
    connects.  They had stayed open for good, and the third restart's connection was
    refused.  So too where the peer signals the far ends of its old connections anew, as
    peer-reflexive candidates, as libnice does (they were kept, as known addresses: the
    rfc6544 review)."""
    timing = trice.Timing(keepalive_interval=0.5, disconnected_timeout=1.0, failed_timeout=2.0)
    config = tcp_config(PASSIVE, max_pairs=2, timing=timing)
    with wall_clock_guard():
        async with trice.open_agent(config, controlling=False) as agent:
            await agent.wait_gathering_complete()
            transport = _transport(agent, PASSIVE)
            ports: list[int] = []
            for generation in range(5):
                ufrag, pwd = f"peer{generation}", f"{generation:04d}" + "p" * 20
                if generation:
                    agent.restart()
                agent.set_remote_parameters(ufrag, pwd)
                for n, old in enumerate(ports if signalled else []):
                    line = f"candidate:{3 + n} 1 tcp 935330815 127.0.0.1 {old} typ prflx"
                    agent.add_remote_candidate(trice.Candidate.from_sdp(f"{line} tcptype active"))
                peer = await _Peer.connect(transport.local_address)
                port = peer.stream.socket.getsockname()[1]

                async def answer(peer: _Peer = peer, pwd: str = pwd) -> None:
                    while (received := await peer.receive()) is not None:
                        message = stun.decode(received)
                        if message.message_class is _REQUEST:
                            await peer.send(_success(message, peer, pwd))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(answer)
                    username = f"{agent.local_parameters.ufrag}:{ufrag}"
                    await peer.send(_request(agent, username=username, nominate=True))
                    for _ in range(100):  # (virtual time: 10 s at most)
                        pair = agent.selected_pair
                        if pair is not None and pair.remote.port == port and transport.links == 1:
                            break
                        await trio.sleep(0.1)
                    else:
                        raise AssertionError(f"generation {generation}: {transport.links} held")
                    nursery.cancel_scope.cancel()
                ports.append(port)
            assert agent.statistics().tcp_refused == 0


async def test_after_a_restart_the_connections_of_before_stay_until_a_new_pair_is_selected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ICE restart keeps the connections for the new checks, whichever the peer takes
    up: with no new pair selected, 3 s on, both proven connections of before are open, and
    the peer's new check over the one not selected is answered (it had been closed at the
    agent's first timer tick after the restart)."""
    with wall_clock_guard():
        async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as agent:
            await agent.wait_gathering_complete()
            transport = _transport(agent, PASSIVE)
            first = await _Peer.connect(transport.local_address)
            await _handshake(agent, first)
            second = await _proven(agent, transport.local_address)
            assert transport.links == 2
            agent.restart()
            agent.set_remote_parameters(PEER_UFRAG2, PEER_PWD2)
            await trio.sleep(3.0)  # (virtual time: the agent's timers run meanwhile)
            assert agent._core.selected is None and transport.links == 2
            username = f"{agent.local_parameters.ufrag}:{PEER_UFRAG2}"
            await second.send(_request(agent, username=username))
            with trio.fail_after(2):
                answer = await second.receive()
            assert answer is not None and stun.decode(answer).message_class is not _REQUEST


async def test_an_agent_whose_tcp_peer_went_quiet_does_not_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The selected pair is over TCP and the peer stops answering (its connection stays
    open): the disconnected agent waits for the peer's datagrams without polling (they wake
    it, from the connection's task), as one on a socket of its own does."""
    timing = trice.Timing(keepalive_interval=1.0, disconnected_timeout=2.0, failed_timeout=60.0)
    with wall_clock_guard():
        async with (
            trice.open_agent(tcp_config(PASSIVE, timing=timing), controlling=False) as agent,
            agent.subscribe() as stream,
        ):
            await agent.wait_gathering_complete()
            peer = await _Peer.connect(_transport(agent, PASSIVE).local_address)
            await _handshake(agent, peer)  # (then the peer answers no more)
            with trio.fail_after(10):
                await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)
            steps = await task_steps_while_sleeping(10.0)
            assert agent.connection_state is trice.ConnectionState.DISCONNECTED
            assert steps < 150, f"{steps} task steps in 10 s (50 Hz polling: ~500+)"
            await peer.aclose()


@pytest.mark.parametrize("port", ["nine", "its connection's"])
async def test_a_check_from_the_port_a_signalled_active_candidate_names_is_paired(
    port: str,
) -> None:
    """An active candidate's port means nothing (RFC 6544 §4.5: 9 is signalled).  A peer
    that signals the port its connection comes from has the far end of that connection
    learned, peer-reflexive (§7.2), as one that signals 9: its nominating check is paired
    and the agent connects.  (It was taken for the signalled candidate, which a passive
    one pairs with none: answered, never paired, and connect() waited on.)"""
    config = loopback_config()
    config = dataclasses.replace(
        config,
        network=dataclasses.replace(config.network, tcp_candidates=(PASSIVE,), udp=False),
    )
    async with trice.open_agent(config, controlling=False) as agent:
        await agent.wait_gathering_complete()
        (transport,) = [t for t in agent._transports.values() if isinstance(t, TcpTransport)]
        raw = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        await raw.bind(("127.0.0.1", 0))  # (the port is known before it connects)
        signalled = 9 if port == "nine" else raw.getsockname()[1]
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(
            trice.Candidate.from_sdp(
                f"candidate:1 1 tcp 2128609279 127.0.0.1 {signalled} typ host tcptype active"
            )
        )
        agent.add_remote_candidate(None)
        await raw.connect(transport.local_address)
        connection = await _handshake(agent, _Peer(trio.SocketStream(raw)))
        assert connection.selected_pair.remote.type is trice.CandidateType.PRFLX
