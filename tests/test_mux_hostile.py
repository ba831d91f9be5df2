"""The UDP mux under stress, on loopback only: hostile and malformed input, a full socket,
the mux closing first, a failing agent, a peer that moves or signals another's address, a
quiet peer."""

from __future__ import annotations

import dataclasses
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    ExitStack,
    asynccontextmanager,
    contextmanager,
    suppress,
)

import pytest
import trio
import trio.testing

import trice
from trice import stun
from trice._trio._transport import READ_BATCH
from trice.ice._core import AgentCore

from loopback import (
    MostPerStep,
    answer_check,
    connect_both,
    events_so_far,
    loopback_config,
    mux_in_a_task,
    peer_check,
    room_for_a_flood,
    signal,
    until,
    wait_for_state,
)
from virtual_time import task_steps_while_sleeping, wall_clock_guard

#: How long every task must have been blocked before a test looks (datagrams on loopback
#: arrive at once; this leaves the mux's task its turn to read them).
CUSHION = 0.05


async def _settle() -> None:
    await trio.testing.wait_all_tasks_blocked(CUSHION)


@asynccontextmanager
async def _connected_through(
    mux: trice.UdpMux, *, server_controlling: bool = False
) -> AsyncIterator[tuple[trice.Agent, trice.Connection, trice.Agent, trice.Connection]]:
    """A server agent on ``mux`` connected with a client of its own (own socket): yields
    (server, its connection, client, its connection)."""
    async with (
        trice.open_agent(loopback_config(), controlling=server_controlling, mux=mux) as server,
        trice.open_agent(loopback_config(), controlling=not server_controlling) as client,
    ):
        await server.wait_gathering_complete()
        await client.wait_gathering_complete()
        signal(server, client)
        to_client, to_server = await connect_both(server, client)
        yield server, to_client, client, to_server


class _FullSocket:
    """Stands in for the mux's socket on the send side: ``sendto`` would block until ``free``,
    and its descriptor is one end of a Unix datagram pair whose peer's queue is full, so that
    trio really waits for it to become writable (as ``tests/test_transport.py`` does)."""

    def __init__(self, real: socket.socket, fd_sock: socket.socket) -> None:
        self.real = real
        self.fd_sock = fd_sock
        self.free = False

    def fileno(self) -> int:
        return self.fd_sock.fileno()

    def getsockname(self) -> tuple[str, int]:
        return self.real.getsockname()  # type: ignore[no-any-return]

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        if not self.free:
            raise BlockingIOError
        return self.real.sendto(data, address)

    def close(self) -> None:
        self.real.close()


@contextmanager
def _full_send_buffer(mux: trice.UdpMux) -> Iterator[_FullSocket]:
    """The mux's sends would block (its socket's send buffer full) inside the block; on
    leaving, the real socket is back, with room."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    while True:
        try:
            a.send(b"x" * 512)
        except BlockingIOError:
            break
    real = mux.sock
    fake = _FullSocket(real, a)
    mux.sock = fake  # type: ignore[assignment]
    try:
        yield fake
    finally:
        fake.free = True
        while True:  # room again: a send still waiting goes on
            try:
                b.recv(1024)
            except BlockingIOError:
                break
        mux.sock = real
        a.close()
        b.close()


def _candidate_at(address: tuple[str, int]) -> trice.Candidate:
    return trice.Candidate.from_sdp(
        f"candidate:1 1 udp 2130706431 {address[0]} {address[1]} typ host"
    )


def _signed_check(ours: trice.IceParameters, theirs: str) -> bytes:
    """A check to the agent of ``ours`` from its peer of ufrag ``theirs``, as it accepts it
    (signed with its password)."""
    return stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        attributes=(
            stun.Username(f"{ours.ufrag}:{theirs}"),
            stun.Priority(1853824767),
            stun.IceControlling(2**63 + 1),
        ),
    ).encode(integrity_key=stun.short_term_key(ours.pwd), fingerprint=True)


def _stranger() -> socket.socket:
    """A non-blocking UDP socket on 127.0.0.1 (its reads raise BlockingIOError when nothing
    came)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _binding_request(username: bytes, key: bytes | None = None) -> bytes:
    """A Binding request whose USERNAME is ``username`` (raw bytes, unchecked)."""
    attributes: list[stun.Attribute] = [stun.UnknownAttribute(0x0006, username)]
    return stun.Message(
        stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=tuple(attributes)
    ).encode(integrity_key=key, fingerprint=key is not None)


# --------------------------------------------------------------------------- the mux under stress


async def test_a_late_check_reads_its_socket_once_before_the_other_tasks_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A controlling agent on a UDP mux checks a peer that never answers, and floods the
    mux with data; each datagram costs 20 ms to deliver (virtual: a slow machine), so that
    a check that wakes at its RTO and reads what waits (a batch) takes past its next RTOs.
    Its next copy goes an RTO after that read, and it reads no more before the other tasks
    have had their turn: at most READ_BATCH datagrams a step.  It read again at each RTO
    the read took it past, with no turn between (the flakes5 review found it over
    ICE-TCP)."""
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=True, mux=mux) as agent,
        trio.open_nursery() as nursery,
    ):
        with _stranger() as peer:
            await agent.wait_gathering_complete()
            share = mux._owner(agent.local_parameters.ufrag)
            agent.set_remote_parameters("peer", "p" * 22)
            agent.add_remote_candidate(_candidate_at(peer.getsockname()))
            agent.add_remote_candidate(None)

            async def connect() -> None:
                with suppress(trice.IceFailedError):  # (nobody answers)
                    await agent.connect()

            nursery.start_soon(connect)
            await trio.socket.from_stdlib_socket(peer).recv(2048)  # (its first check)
            steps = MostPerStep(share, attribute="deliver", clock=autojump_clock, cost=0.02)
            room_for_a_flood(mux.sock)
            for _ in range(1000):
                peer.sendto(b"\x80 data", mux.local_address)
            trio.lowlevel.add_instrument(steps)
            try:
                await until(lambda: steps.total >= 1000, within=600)
            finally:
                trio.lowlevel.remove_instrument(steps)
            assert steps.most <= READ_BATCH
            nursery.cancel_scope.cancel()


async def test_an_exception_in_the_mux_block_propagates_as_itself() -> None:
    """An exception raised in the mux's block comes out as itself, not wrapped in an
    exception group by the mux's nursery."""
    with pytest.raises(ValueError, match="the body's"):
        async with trice.open_udp_mux("127.0.0.1"):
            raise ValueError("the body's own error")


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "224.0.0.251",
        "localhost",
        "255.255.255.255",
        "127.255.255.255",
        "0.1.2.3",
        "240.0.0.1",
    ],
)
async def test_a_mux_refuses_an_address_that_is_not_one_of_the_hosts(host: str) -> None:
    """A mux is every agent's host candidate: it must be bound to one address of the host;
    the unspecified address, a multicast one, a broadcast address (Linux binds them; peers
    leave out 255.255.255.255, and a check to the loopback network's is refused: they
    opened, the docclaims3 and p42pass2 reviews), one of 0.0.0.0/8 or 240.0.0.0/4, or a
    name is refused with UsageError."""
    with pytest.raises(trice.UsageError, match="open_udp_mux's host"):
        async with trice.open_udp_mux(host):
            pass


async def test_an_agent_on_two_muxes_stays_connected_when_the_other_one_closes() -> None:
    """An agent may use several muxes (a host candidate on each); one of them closing fails
    only the pairs on it: with the selected pair on the other, the agent stays connected
    and data goes on."""
    async with (
        trice.open_udp_mux("127.0.0.1") as kept,
        mux_in_a_task(lambda: trice.open_udp_mux("127.0.0.1")) as (closing, closing_scope, _),
        trice.open_agent(loopback_config(), controlling=False, mux=(kept, closing)) as server,
        trice.open_agent(loopback_config(), controlling=True) as client,
    ):
        await server.wait_gathering_complete()
        await client.wait_gathering_complete()
        ports = {c.port for c in server.local_candidates}
        assert ports == {kept.local_address[1], closing.local_address[1]}
        signal(server, client)
        to_client, to_server = await connect_both(server, client)
        # (The first mux's candidate ranks first: its pair is the best, and selected.)
        assert to_client.selected_pair.local.port == kept.local_address[1]
        closing_scope.cancel()
        await _settle()
        assert closing.closed
        assert server.connection_state in (
            trice.ConnectionState.CONNECTED,
            trice.ConnectionState.COMPLETED,
        )
        await to_server.send(b"still here")
        with trio.fail_after(5):
            assert await to_client.receive() == b"still here"


async def test_two_agents_sends_waiting_on_the_full_mux_socket_take_turns() -> None:
    """Sends of two agents that wait for room on the shared socket take turns (one lock a
    mux): neither raises trio.BusyResourceError."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with (
            _connected_through(mux) as (_, first, _c1, _t1),
            _connected_through(mux) as (_, second, _c2, _t2),
        ):
            outcome: list[object] = []

            async def send(conn: trice.Connection, data: bytes) -> None:
                try:
                    await conn.send(data)
                    outcome.append("sent")
                except Exception as exc:  # (what is raised is the finding)
                    outcome.append(exc)

            with trio.fail_after(10), _full_send_buffer(mux):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, first, b"one")
                    nursery.start_soon(send, second, b"two")
                    await trio.testing.wait_all_tasks_blocked()
                    waited = list(outcome)
                    busy = [o for o in outcome if isinstance(o, trio.BusyResourceError)]
                    nursery.cancel_scope.cancel()
            assert not busy, f"a send on the full mux socket raised {busy[0]!r}"
            assert waited == []  # (both waited for room: neither went, neither raised)


async def _send_noting(connection: trice.Connection, outcome: list[object]) -> None:
    """Send a datagram over ``connection``; note ``"sent"``, or what it raised."""
    try:
        await connection.send(b"waits for room")
        outcome.append("sent")
    except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
        outcome.append(exc)


async def test_a_send_waiting_on_the_full_mux_socket_ends_when_the_connection_closes() -> None:
    """A send waiting for room on the mux's socket is woken when its connection closes, and
    raises ClosedResourceError at once."""
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        _connected_through(mux) as (_, to_client, _, _),
    ):
        outcome: list[object] = []
        with trio.fail_after(10), _full_send_buffer(mux):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_noting, to_client, outcome)
                await trio.testing.wait_all_tasks_blocked()
                assert outcome == []  # (waiting for room)
                await to_client.aclose()
                await trio.testing.wait_all_tasks_blocked()
                ended = list(outcome)
                nursery.cancel_scope.cancel()
        assert len(ended) == 1 and isinstance(ended[0], trio.ClosedResourceError), (
            f"the send waiting on the mux's socket did not end when its connection closed: {ended}"
        )


async def test_a_send_waiting_on_the_full_mux_socket_ends_when_the_agent_closes() -> None:
    """A send waiting for room on the mux's socket, in a task outside the agent's block, is
    woken when the agent closes, and raises ClosedResourceError at once."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        outcome: list[object] = []
        with trio.fail_after(10), ExitStack() as full:
            async with trio.open_nursery() as nursery:
                async with _connected_through(mux) as (_, to_client, _, _):
                    full.enter_context(_full_send_buffer(mux))  # (until after the agent)
                    nursery.start_soon(_send_noting, to_client, outcome)
                    await trio.testing.wait_all_tasks_blocked()
                    assert outcome == []  # (waiting for room)
                await trio.testing.wait_all_tasks_blocked()
                ended = list(outcome)
                nursery.cancel_scope.cancel()
        assert len(ended) == 1 and isinstance(ended[0], trio.ClosedResourceError), ended


async def test_when_the_mux_closes_first_a_send_says_so() -> None:
    """The mux closes while an agent on it is connected: Connection.send and send_nowait
    raise ClosedResourceError saying the mux closed (not that a relay is gone)."""
    async with (
        mux_in_a_task(lambda: trice.open_udp_mux("127.0.0.1")) as (mux, mux_scope, _),
        _connected_through(mux) as (_, to_client, _, _),
    ):
        mux_scope.cancel()
        await _settle()
        assert mux.closed
        with pytest.raises(trio.ClosedResourceError, match="mux"):
            await to_client.send(b"after the mux closed")
        with pytest.raises(trio.ClosedResourceError, match="mux"):
            to_client.send_nowait(b"after the mux closed")


async def test_when_the_mux_closes_first_its_agents_hear_of_it() -> None:
    """The mux closes while an agent on it is connected: the agent's pairs there fail, ICE
    with them, and a task waiting in receive() is woken (not left until consent expires)."""
    async with (
        mux_in_a_task(lambda: trice.open_udp_mux("127.0.0.1")) as (mux, mux_scope, _),
        _connected_through(mux) as (server, to_client, _, _),
    ):
        outcome: list[object] = []

        async def receive() -> None:
            try:
                outcome.append(await to_client.receive())
            except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await _settle()
            mux_scope.cancel()
            await _settle()
            ended = list(outcome)
            state = server.connection_state
            nursery.cancel_scope.cancel()
        assert state is trice.ConnectionState.FAILED, f"the agent is {state.value}"
        assert len(ended) == 1 and isinstance(ended[0], trio.ClosedResourceError), ended
        assert "mux" in str(ended[0])


async def test_a_peer_cannot_divert_another_agents_traffic_by_signalling_its_address() -> None:
    """An agent's peer that signals another agent's peer's address as its own candidate
    cannot take that address: the other agent answered checks from there with success (the
    proof), and a mere check to it does not take it away."""
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        _connected_through(mux) as (_, to_p, p_agent, p_to_b),
    ):
        (p_candidate,) = p_agent.local_candidates
        p_address = (p_candidate.address, p_candidate.port)
        async with trice.open_agent(loopback_config(), controlling=True, mux=mux) as a:
            await a.wait_gathering_complete()
            # A's (hostile) peer's signaling: made-up parameters, P's address as candidate.
            a.set_remote_parameters("evil", "e" * 22)
            a.add_remote_candidate(_candidate_at(p_address))
            a.add_remote_candidate(None)

            async def a_connects() -> None:
                with suppress(trice.IceFailedError):
                    await a.connect()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(a_connects)
                await _settle()  # (A's first check has gone to P, and P's 401 came back)
                await p_to_b.send(b"for B only")
                await _settle()
                a_got = a.statistics().datagrams_received
                try:
                    b_got: bytes | None = to_p.receive_nowait()
                except trio.WouldBlock:
                    b_got = None
                nursery.cancel_scope.cancel()
        assert a_got == 0, "agent A received a datagram that P sent to agent B"
        assert b_got == b"for B only", "B did not get what its peer sent it"


async def test_one_agents_failure_does_not_take_down_the_mux(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error raised while one agent handles a datagram from the mux is that agent's: its
    task raises it, and the mux and its other agents go on."""
    original = AgentCore.on_request
    broken: set[int] = set()

    def on_request(self: AgentCore, *args: object) -> bytes | None:
        if id(self) in broken:
            raise RuntimeError("agent A's bug")
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(AgentCore, "on_request", on_request)
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        _connected_through(mux) as (_, to_p, _, p_to_b),
    ):
        with pytest.raises(RuntimeError, match="agent A's bug"):
            async with (
                trice.open_agent(loopback_config(), controlling=False, mux=mux) as a,
                trice.open_agent(loopback_config(), controlling=True) as a_peer,
            ):
                await a.wait_gathering_complete()
                await a_peer.wait_gathering_complete()
                broken.add(id(a._core))
                signal(a, a_peer)
                with trio.fail_after(10):
                    await a_peer.connect()  # (its check makes A's core raise)
        await p_to_b.send(b"B still works")
        with trio.fail_after(5):
            assert await to_p.receive() == b"B still works"


# --------------------------------------------------------------------------- what holds


async def test_requests_for_unknown_or_malformed_usernames_are_dropped_and_counted() -> None:
    """A flood of Binding requests for ufrags no agent has, with USERNAMEs long, empty,
    without a colon, not UTF-8, or whose length runs past the message, and of garbage that
    looks like STUN: all dropped or refused, nothing answered, no address taken, and the
    agent on the mux still connects and carries data after it."""
    rng = random.Random(8445)
    async with trice.open_udp_mux("127.0.0.1") as mux:
        with _stranger() as stranger:
            names = [
                b"x" * 60000 + b":y",
                b"",
                b"nocolon",
                b"\xff\xfe:\x00",
                b":",
                b"a" * 513 + b":" + b"b" * 513,
            ]
            for i in range(300):
                stranger.sendto(
                    _binding_request(b"u%d:v" % i if i >= len(names) else names[i]),
                    mux.local_address,
                )
                if i % 3 == 0:
                    garbage = bytearray(_binding_request(b"u%d:v" % i))
                    garbage[2:4] = (0xFFFF).to_bytes(2, "big")  # (length past the end)
                    garbage[22:24] = rng.randbytes(2)  # (USERNAME's length, any)
                    stranger.sendto(bytes(garbage), mux.local_address)
                if i % 50 == 0:
                    await _settle()
            await _settle()
            stats = mux.statistics()
            assert (stats.delivered, stats.addresses) == (0, 0)
            assert stats.unroutable == 400
            with pytest.raises(BlockingIOError):
                stranger.recv(2048)  # (nothing came back)
        async with _connected_through(mux) as (_, to_client, _, to_server):
            await to_client.send(b"after the flood")
            with trio.fail_after(5):
                assert await to_server.receive() == b"after the flood"


async def test_a_request_that_draws_an_error_claims_no_address() -> None:
    """Someone who knows an agent's ufrag (it is in the signaling) sends requests with a wrong
    MESSAGE-INTEGRITY, or none, from one of the agent's remote candidates' addresses (spoofed,
    say): the agent answers with an error (401, 400), and that answer does not make the
    address the agent's (a datagram from it is still nobody's)."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent:
            await agent.wait_gathering_complete()
            with _stranger() as stranger:
                agent.set_remote_parameters("peer", "q" * 22)
                agent.add_remote_candidate(_candidate_at(stranger.getsockname()))
                username = f"{agent.local_parameters.ufrag}:peer".encode()
                stranger.sendto(_binding_request(username, b"w" * 22), mux.local_address)
                stranger.sendto(_binding_request(username), mux.local_address)
                await _settle()
                assert agent.statistics().requests_rejected == 2
                answers = [stun.decode(stranger.recv(2048)) for _ in range(2)]
                assert {a.message_class for a in answers} == {stun.MessageClass.ERROR}
                assert mux.statistics().addresses == 0
                stranger.sendto(b"\x80data", mux.local_address)
                await _settle()
                assert agent.statistics().datagrams_received == 0
                assert mux.statistics().unroutable == 1


async def test_a_connection_over_the_mux_carries_a_burst_in_order() -> None:
    """The connection's generic path (no host socket of its own: the mux's task reads, the
    receiver is woken through the receive buffer) carries a burst each way, none lost."""
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        _connected_through(mux, server_controlling=True) as (_, to_client, _, to_server),
    ):
        count = 200
        with trio.fail_after(10):
            for i in range(count):
                await to_client.send(b"down %d" % i)
                await to_server.send(b"up %d" % i)
                if i % 20 == 19:  # (within the receive buffers)
                    for j in range(i - 19, i + 1):
                        assert await to_server.receive() == b"down %d" % j
                        assert await to_client.receive() == b"up %d" % j


async def test_a_peer_that_moves_is_answered_and_followed() -> None:
    """The peer's address changes (a NAT rebinding): its next check, from the new address,
    finds the agent by its USERNAME, is answered there (the answer takes the address for the
    agent), the new address is learned (peer-reflexive), and data from it reaches the agent;
    a Binding indication (a keepalive) from it too."""
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        _connected_through(mux) as (server, to_client, client, _),
    ):
        ours = server.local_parameters
        theirs = client.local_parameters
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as moved:
            await moved.bind(("127.0.0.1", 0))
            request = _signed_check(ours, theirs.ufrag)
            await moved.sendto(request, mux.local_address)
            with trio.fail_after(5):
                answer = stun.decode(await moved.recv(2048))
            assert answer.message_class is stun.MessageClass.SUCCESS
            assert answer.transaction_id == stun.decode(request).transaction_id
            stun_before = server.statistics().stun_received
            keepalive = stun.Message(stun.Method.BINDING, stun.MessageClass.INDICATION)
            await moved.sendto(keepalive.encode(fingerprint=True), mux.local_address)
            await moved.sendto(b"\x80from the new address", mux.local_address)
            with trio.fail_after(5):
                assert await to_client.receive() == b"\x80from the new address"
            assert server.statistics().stun_received == stun_before + 1


@asynccontextmanager
async def _a_mux_agent_whose_peer_left(
    config: trice.AgentConfig, *, unread: bool = False
) -> AsyncIterator[tuple[trice.Agent, trice.EventStream, Callable[[], float]]]:
    """An agent on a mux, connected with a peer on a socket of its own, which left (with
    ``unread``, after one datagram the application did not read): the agent, once
    disconnected, its events, and a way for the peer to come back (a datagram from its
    address; returns when it went)."""
    with wall_clock_guard():
        async with (
            trice.open_udp_mux("127.0.0.1") as mux,
            trice.open_agent(config, controlling=True, mux=mux) as a,
            a.subscribe() as stream,
        ):
            async with trice.open_agent(config, controlling=False) as b:
                await a.wait_gathering_complete()
                await b.wait_gathering_complete()
                signal(a, b)
                _, cb = await connect_both(a, b)
                peer = b.local_candidates[0].transport_address
                if unread:
                    await cb.send(b"\x80unread")
                    await until(lambda: a.statistics().datagrams_received == 1)
            with trio.fail_after(30):
                await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)

            def come_back() -> float:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as back:
                    back.bind(peer)
                    back.sendto(b"\x80I am back", mux.local_address)
                return trio.current_time()

            yield a, stream, come_back


async def test_an_agent_on_a_mux_whose_peer_went_quiet_does_not_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A disconnected agent on a mux waits for its peer's datagrams without polling (they
    wake it, through the mux), as one on a socket of its own does."""

    timing = trice.Timing(keepalive_interval=1.0, disconnected_timeout=2.0, failed_timeout=60.0)
    async with _a_mux_agent_whose_peer_left(loopback_config(timing=timing)) as (a, stream, back):
        steps = await task_steps_while_sleeping(10.0)
        assert a.connection_state is trice.ConnectionState.DISCONNECTED
        assert steps < 150, f"{steps} task steps in 10 s (50 Hz polling: ~500+)"
        # The peer's data, when it comes back (from its address), wakes the agent at once:
        # connected again well before its next timer (a consent check, 1 s).
        sent_at = back()
        with trio.fail_after(10):
            await wait_for_state(stream, trice.ConnectionState.CONNECTED)
        assert trio.current_time() - sent_at < 0.5  # (virtual time)


@pytest.mark.parametrize("full_buffer", [False, True])
async def test_peer_back_over_a_mux_wakes_the_agent_even_with_a_full_buffer(
    autojump_clock: trio.testing.MockClock, full_buffer: bool
) -> None:
    """A disconnected agent on a mux whose application has not read what came before
    (receive_buffer full): the peer's data, dropped and counted, brings it back at once,
    a sign of life as on the agent's own socket (it waited for its next consent check)."""
    timing = trice.Timing(keepalive_interval=5.0, disconnected_timeout=10.0, failed_timeout=60.0)
    config = loopback_config(timing=timing, receive_buffer=1)
    async with _a_mux_agent_whose_peer_left(config, unread=full_buffer) as (a, stream, back):
        dropped = a.statistics().datagrams_dropped
        sent_at = back()
        with trio.move_on_after(30):
            await wait_for_state(stream, trice.ConnectionState.CONNECTED)
        assert a.statistics().datagrams_dropped == dropped + full_buffer
        assert a.connection_state is not trice.ConnectionState.DISCONNECTED
        assert trio.current_time() - sent_at < 0.01  # (virtual time: at once)


# -- whose address: proof by a round trip, answers by transaction ID ------------------------------


def _receive_all(connection: trice.Connection) -> list[bytes]:
    got = []
    with suppress(trio.WouldBlock):
        while True:
            got.append(connection.receive_nowait())
    return got


async def test_an_ice_lite_peers_address_is_not_taken_by_another_agents_check() -> None:
    """A (full, on the mux) connects with P, an ICE-lite peer, which sends no check: A's
    claim on P's address is proven by the round trip of A's own check, which P answered.
    X, another agent on the mux, whose hostile peer signals P's address, checks it: the
    check does not take the address, and P's data goes to A (it went to X: A had answered
    no check from P, so its claim was not proven)."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with (
            trice.open_agent(loopback_config(), controlling=True, mux=mux) as a,
            trice.open_agent(loopback_config(lite=True), controlling=False) as p,
            trice.open_agent(loopback_config(), controlling=True, mux=mux) as x,
        ):
            for agent in (a, p, x):
                await agent.wait_gathering_complete()
            signal(a, p)
            a_conn, p_conn = await connect_both(a, p)
            x.set_remote_parameters("evil", "e" * 22)
            x.add_remote_candidate(_candidate_at(p.local_candidates[0].transport_address))
            x.add_remote_candidate(None)
            async with trio.open_nursery() as nursery:

                async def x_connects() -> None:
                    with suppress(trice.IceFailedError):
                        await x.connect()

                nursery.start_soon(x_connects)
                await _settle()
                await p_conn.send(b"for A only")
                await _settle()
                nursery.cancel_scope.cancel()
            assert _receive_all(a_conn) == [b"for A only"]
            assert x.statistics().datagrams_received == 0


def _forge_a_check_from(
    p: trice.Agent, *, to: trice.Agent, at: trice.UdpMux, nominate: bool = False
) -> None:
    """A check to agent ``to`` (on the mux ``at``), signed with its credentials (its peer
    ``evil`` knows them), from ``p``'s address (forged: it leaves ``p``'s own socket)."""
    to.set_remote_parameters("evil", "e" * 22)
    to.add_remote_candidate(None)
    (p_socket,) = [t for t in p._transports.values() if hasattr(t, "sock")]
    check = peer_check(to, "evil", priority=1853824767, controlling=True, nominate=nominate)
    p_socket.sock.sendto(check, at.local_address)


@pytest.mark.parametrize("lite", [False, True], ids=["full", "ice-lite"])
async def test_a_forged_check_answered_by_another_agent_takes_no_proven_address(
    lite: bool,
) -> None:
    """E, the peer of X (on the mux), knows X's credentials and sends X a valid check from
    P's address (forged: here it leaves P's own socket), P being A's proven peer.  X
    answers it, which takes nothing from A: P's data goes to A.  (It proved the address
    for X, and P's data went to X; then, for an ICE-lite X, whose answers prove addresses,
    it made the address both's, and P's data was dropped.)"""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with (
            _connected_through(mux) as (_, a_conn, p, p_conn),
            trice.open_agent(loopback_config(lite=lite), controlling=False, mux=mux) as x,
        ):
            await x.wait_gathering_complete()
            _forge_a_check_from(p, to=x, at=mux)
            await _settle()
            await p_conn.send(b"for A")
            await _settle()
            assert _receive_all(a_conn) == [b"for A"]
            assert x.statistics().datagrams_received == 0
            assert mux.statistics().ambiguous == 0


@asynccontextmanager
async def _victim_peer_and_lite_agent(
    *, victim_lite: bool
) -> AsyncIterator[tuple[trice.UdpMux, trice.Agent, trice.Agent, trice.Agent, trio.Nursery]]:
    """A UDP mux with two agents on it, V (ICE-lite if ``victim_lite``) and an ICE-lite
    one, and P, V's peer, with a socket of its own: all gathered, with a nursery (its
    tasks cancelled at the end).  Yields (mux, V, P, the lite agent, nursery)."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with (
            trice.open_agent(loopback_config(lite=victim_lite), controlling=False, mux=mux) as v,
            trice.open_agent(loopback_config(), controlling=True) as p,
            trice.open_agent(loopback_config(lite=True), controlling=False, mux=mux) as lite,
            trio.open_nursery() as nursery,
        ):
            for agent in (v, p, lite):
                await agent.wait_gathering_complete()
            yield mux, v, p, lite, nursery
            nursery.cancel_scope.cancel()


async def _connecting(agent: trice.Agent, connections: list[trice.Connection]) -> None:
    with suppress(trice.IceFailedError):
        connections.append(await agent.connect())


@pytest.mark.parametrize("victim_lite", [False, True], ids=["full", "ice-lite"])
@pytest.mark.parametrize("nominate", [False, True], ids=["", "nominating"])
async def test_a_check_forged_before_the_peer_comes_takes_nothing_from_its_agent(
    victim_lite: bool, nominate: bool
) -> None:
    """X, an ICE-lite agent on the mux, answers a check forged from P's address (its peer E
    knows X's credentials) before P, the peer of V (another agent on the mux), comes.  Then
    V and P connect, and P sends: its data never goes to X.  V's proof, a round trip or an
    ICE-lite V's answer, makes the address both's: its data is dropped (the mux cannot tell
    two agents' peers at one address from a forger; see the p41pass1 review's test
    below).  X's answer had the address for good against an ICE-lite V: P's data went to
    X (its application got it, nominated; the authmux review)."""
    async with _victim_peer_and_lite_agent(victim_lite=victim_lite) as (mux, v, p, x, nursery):
        x_connections: list[trice.Connection] = []
        nursery.start_soon(_connecting, x, x_connections)
        _forge_a_check_from(p, to=x, at=mux, nominate=nominate)
        await _settle()
        assert len(x_connections) == nominate
        signal(v, p)
        v_conn, p_conn = await connect_both(v, p)
        await p_conn.send(b"for V")
        await _settle()
        assert x.statistics().datagrams_received == 0
        assert _receive_all(v_conn) == []
        assert mux.statistics().ambiguous == 1


@pytest.mark.parametrize("victim_lite", [False, True], ids=["full", "ice-lite"])
async def test_an_agent_nominated_by_a_forged_check_sends_no_data_to_another_agents_peer(
    victim_lite: bool,
) -> None:
    """V, on the mux, is connected with P.  A, an ICE-lite agent on the same mux, is
    nominated by a check forged from P's address (its peer E knows A's credentials), and
    its application sends: P never gets it (it would take it for V's: it comes from the
    mux's address); what A sends there is withheld, and counted.  An ICE-lite V's answers
    proved P's address no better than A's: it is both's, and V's data is withheld too.
    (A's data went to P: the authmux review.)"""
    async with _victim_peer_and_lite_agent(victim_lite=victim_lite) as (mux, v, p, a, nursery):
        signal(v, p)
        v_conn, p_conn = await connect_both(v, p)
        a_connections: list[trice.Connection] = []
        nursery.start_soon(_connecting, a, a_connections)
        _forge_a_check_from(p, to=a, at=mux, nominate=True)
        await _settle()
        (a_conn,) = a_connections
        await a_conn.send(b"from A")
        await v_conn.send(b"from V")
        await _settle()
        assert _receive_all(p_conn) == ([] if victim_lite else [b"from V"])
        assert mux.statistics().withheld == 1 + victim_lite


async def test_an_address_a_lite_agent_forgot_at_its_parameters_is_let_go() -> None:
    """L1, an ICE-lite agent on the mux, answers a check naming another ufrag before its
    peer's parameters (a forked offer's other answerer F): once they come, L1 forgets F's
    address, and so does the mux.  Later F, from the same socket, is the honest peer of L2
    (another ICE-lite agent on the mux): their data goes both ways.  The mux held F's
    address for L1 for good: L2's answer made it both's, F's data to L2 was dropped and
    L2's to F withheld (the p41pass1 review)."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with (
            trice.open_agent(loopback_config(lite=True), controlling=False, mux=mux) as l1,
            trice.open_agent(loopback_config(), controlling=True) as a,
            trice.open_agent(loopback_config(lite=True), controlling=False, mux=mux) as l2,
            trio.open_nursery() as nursery,
        ):
            for agent in (l1, a, l2):
                await agent.wait_gathering_complete()
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as fork:
                await fork.bind(("127.0.0.1", 0))
                for agent, ufrag in ((l1, "fork"), (l2, "fork2")):
                    if agent is l2:
                        signal(l1, a)
                        await connect_both(l1, a)
                        assert l1.statistics().prflx_dropped == 1  # (F's address forgotten)
                        l2.set_remote_parameters("fork2", "f" * 22)
                        l2.add_remote_candidate(None)
                        l2_connections: list[trice.Connection] = []
                        nursery.start_soon(_connecting, l2, l2_connections)
                    check = peer_check(
                        agent, ufrag, priority=2**31 - 1, controlling=True, nominate=agent is l2
                    )
                    await fork.sendto(check, mux.local_address)
                    with trio.fail_after(5):
                        answer, _ = await fork.recvfrom(2048)
                    assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
                await _settle()
                (l2_conn,) = l2_connections
                await fork.sendto(b"for L2", mux.local_address)
                await _settle()
                assert _receive_all(l2_conn) == [b"for L2"]
                await l2_conn.send(b"to F")
                with trio.fail_after(5):
                    data, _ = await fork.recvfrom(2048)
                assert data == b"to F"
                assert (mux.statistics().ambiguous, mux.statistics().withheld) == (0, 0)
            nursery.cancel_scope.cancel()


async def test_a_round_trip_takes_no_address_from_a_lite_agents_peer() -> None:
    """A (full) and L (ICE-lite) on one mux, whose honest peers share one address Y (two
    agents of one program behind one socket, its own mux say).  L connects first (its
    answers prove Y), then A (its round trip to Y): the address is both's, and what L's
    peer sends L goes to neither, never to A.  A's round trip took Y from L, and L's
    peer's data went to A's application (the p41pass1 review)."""
    pwd = "p" * 22
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with (
            trice.open_agent(loopback_config(), controlling=True, mux=mux) as a,
            trice.open_agent(loopback_config(lite=True), controlling=False, mux=mux) as lite,
            trio.open_nursery() as nursery,
        ):
            for agent in (a, lite):
                await agent.wait_gathering_complete()
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as y:
                await y.bind(("127.0.0.1", 0))
                lite.set_remote_parameters("peer2", "q" * 22)
                lite.add_remote_candidate(None)
                lite_connections: list[trice.Connection] = []
                nursery.start_soon(_connecting, lite, lite_connections)
                check = peer_check(
                    lite, "peer2", priority=2**31 - 1, controlling=True, nominate=True
                )
                await y.sendto(check, mux.local_address)
                with trio.fail_after(5):
                    answer, _ = await y.recvfrom(2048)
                assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
                await _settle()
                (lite_conn,) = lite_connections

                async def answer_a() -> None:  # (A's peer, at Y too)
                    while True:
                        data, source = await y.recvfrom(2048)
                        if stun.peek_type(data) == 0x0001 and b"peer1" in data:
                            await y.sendto(answer_check(data, source[:2], pwd), source)

                nursery.start_soon(answer_a)
                a.set_remote_parameters("peer1", pwd)
                a.add_remote_candidate(_candidate_at(y.getsockname()))
                a.add_remote_candidate(None)
                with trio.fail_after(5):
                    a_conn = await a.connect()
                await _settle()
                await y.sendto(b"for L", mux.local_address)
                await _settle()
                assert _receive_all(a_conn) == [] and _receive_all(lite_conn) == []
                assert mux.statistics().ambiguous == 1
            nursery.cancel_scope.cancel()


async def test_two_agents_whose_peers_share_an_address_get_no_data_of_the_others() -> None:
    """Two muxes facing each other, two agents on each (a1 with a2, b1 with b2): on each
    mux both agents' peers are at one address.  The answers to each agent's checks find it
    by their transaction ID (consent holds for all four; before, one agent's answers went
    to the other, and its ICE failed), and data to that address, which its mux could not
    tell whose it is, is withheld and counted, never handed to the other agent (b1 got
    a1's data; then it was sent and dropped there as ambiguous)."""
    timing = trice.Timing(keepalive_interval=0.2, disconnected_timeout=0.6, failed_timeout=1.5)
    async with trice.open_udp_mux("127.0.0.1") as m1, trice.open_udp_mux("127.0.0.1") as m2:
        async with (
            trice.open_agent(loopback_config(timing=timing), controlling=True, mux=m1) as a1,
            trice.open_agent(loopback_config(timing=timing), controlling=False, mux=m2) as a2,
            trice.open_agent(loopback_config(timing=timing), controlling=True, mux=m1) as b1,
            trice.open_agent(loopback_config(timing=timing), controlling=False, mux=m2) as b2,
        ):
            for agent in (a1, a2, b1, b2):
                await agent.wait_gathering_complete()
            signal(a1, a2)
            a1c, a2c = await connect_both(a1, a2)
            signal(b1, b2)
            b1c, b2c = await connect_both(b1, b2)
            await a2c.send(b"for a1")
            await b2c.send(b"for b1")
            await _settle()
            assert _receive_all(a1c) == [] and _receive_all(b1c) == []
            # (Withheld: not sent.  m1's ``ambiguous`` may count a repeated answer to a
            # check whose copy crossed its first answer, from the address both peers share.)
            assert m2.statistics().withheld == 2
            async with a1.subscribe() as e1, b1.subscribe() as e2:
                await trio.sleep(3 * timing.failed_timeout)  # (consent must hold meanwhile)
                failed = trice.ConnectionStateChanged(trice.ConnectionState.FAILED)
                assert failed not in events_so_far(e1) + events_so_far(e2)
            alive = (trice.ConnectionState.CONNECTED, trice.ConnectionState.COMPLETED)
            assert all(x.connection_state in alive for x in (a1, a2, b1, b2))


async def test_an_agent_whose_ice_failed_lets_its_addresses_go() -> None:
    """A (on the mux) proved P's address; P goes, and A's ICE fails (A stays open).  Q, an
    ICE-lite peer of B's (on the same mux), comes at the same address (a NAT reusing the
    mapping): B's checks reach it and B connects (A's proven claim kept the address, and
    Q's answers went to A)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def at_port(*, lite: bool = False) -> trice.AgentConfig:
        config = loopback_config(lite=lite)
        network = dataclasses.replace(config.network, port_range=(port, port))
        return dataclasses.replace(config, network=network)

    quick = trice.Timing(keepalive_interval=0.2, disconnected_timeout=0.5, failed_timeout=1.0)
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with trice.open_agent(loopback_config(timing=quick), controlling=False, mux=mux) as a:
            async with a.subscribe() as events:
                async with trice.open_agent(at_port(), controlling=True) as p:
                    await a.wait_gathering_complete()
                    await p.wait_gathering_complete()
                    signal(a, p)
                    await connect_both(a, p)
                with trio.fail_after(5):
                    await wait_for_state(events, trice.ConnectionState.FAILED)
            async with (
                trice.open_agent(loopback_config(), controlling=True, mux=mux) as b,
                trice.open_agent(at_port(lite=True), controlling=False) as q,
            ):
                await b.wait_gathering_complete()
                await q.wait_gathering_complete()
                signal(b, q)
                await connect_both(b, q)


@pytest.mark.parametrize("kind", ["udp", "tcp"])
async def test_a_gathering_anew_after_the_mux_closed_signals_no_candidate_there(
    kind: str,
) -> None:
    """The mux closed under the agent: a gathering anew signals no candidate at the mux's
    address (its port may be anybody's now)."""
    opener: Callable[[], AbstractAsyncContextManager[trice.UdpMux | trice.TcpMux]] = (
        (lambda: trice.open_udp_mux("127.0.0.1"))
        if kind == "udp"
        else (lambda: trice.open_tcp_mux("127.0.0.1"))
    )
    async with mux_in_a_task(opener) as (mux, scope, ended):
        async with trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent:
            await agent.wait_gathering_complete()
            assert any(c.port == mux.local_address[1] for c in agent.local_candidates)
            scope.cancel()
            with trio.fail_after(2):
                await ended.wait()
            agent.restart(regather=True)
            with trio.fail_after(5):
                await agent.wait_gathering_complete()
            assert [c for c in agent.local_candidates if c.port == mux.local_address[1]] == []


def _answer(request: bytes, pwd: str, mapped: tuple[str, int]) -> bytes:
    """A success answer to ``request`` signed with ``pwd`` (the answerer's password)."""
    response = stun.decode(request).success_response(stun.XorMappedAddress(*mapped))
    return response.encode(integrity_key=stun.short_term_key(pwd), fingerprint=True)


async def _check_from_a_stranger(
    mux: trice.UdpMux, agent: trice.Agent, stranger: trio.socket.SocketType
) -> bytes:
    """``agent`` (on ``mux``) is given a peer at ``stranger``'s address (ufrag ``e``; more
    candidates may come: ICE does not fail when that pair does) and starts checking: the
    first check of its that reaches ``stranger`` (another agent's checks there skipped)."""
    agent.set_remote_parameters("e", "e" * 22)
    agent.add_remote_candidate(_candidate_at(stranger.getsockname()))
    agent._core.want_connection(agent._now())
    agent._pump(agent._now())
    wanted = stun.Username(f"e:{agent.local_parameters.ufrag}")
    with trio.fail_after(2):
        while True:
            data = await stranger.recv(2048)
            message = stun.decode(data)
            request = message.message_class is stun.MessageClass.REQUEST
            if request and message.get(stun.Username) == wanted:
                return data


async def test_an_agents_check_keeps_its_route_past_a_strangers_unsigned_answer() -> None:
    """B proved the peer's address; A checks the same peer, and a stranger's unsigned
    answer with A's check's transaction ID comes first: the peer's signed answer still
    reaches A, by the route the check left (the agent wires ``MuxHooks.pending`` to its
    core's ``awaits_answer``).  Unwired, the stranger's answer ended the route, and the
    real one went by its source, ambiguous (the mutants10 review)."""
    with (
        trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as peer,
        trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as stranger,
    ):
        await peer.bind(("127.0.0.1", 0))
        await stranger.bind(("127.0.0.1", 0))
        async with (
            trice.open_udp_mux("127.0.0.1") as mux,
            trice.open_agent(loopback_config(), controlling=True, mux=mux) as b,
            trice.open_agent(loopback_config(), controlling=True, mux=mux) as a,
        ):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            to = mux.local_address
            b_check = await _check_from_a_stranger(mux, b, peer)
            await peer.sendto(_answer(b_check, "e" * 22, to), to)
            await _settle()
            assert [s.responses_received for s in b.pair_statistics()] == [1]
            a_check = await _check_from_a_stranger(mux, a, peer)
            unsigned = stun.decode(a_check).success_response(stun.XorMappedAddress(*to))
            await stranger.sendto(unsigned.encode(), to)
            await _settle()
            assert [s.responses_received for s in a.pair_statistics()] == [0]
            await peer.sendto(_answer(a_check, "e" * 22, to), to)
            await _settle()
            assert [s.responses_received for s in a.pair_statistics()] == [1]


async def test_an_answer_from_elsewhere_than_the_check_went_proves_nothing() -> None:
    """A checks E (a stranger's socket here); the answer, signed right, comes from P's
    address (forged), P being B's proven peer.  It reaches A (whose core fails the pair:
    not symmetric) but proves no address: P's data still goes to B (the address became
    both's, and P's data was dropped)."""
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as stranger:
        async with (
            trice.open_udp_mux("127.0.0.1") as mux,
            _connected_through(mux) as (_, b_conn, p, p_conn),
            trice.open_agent(loopback_config(), controlling=True, mux=mux) as a,
        ):
            await a.wait_gathering_complete()
            await stranger.bind(("127.0.0.1", 0))
            check = await _check_from_a_stranger(mux, a, stranger)
            (p_socket,) = [t for t in p._transports.values() if hasattr(t, "sock")]
            p_socket.sock.sendto(_answer(check, "e" * 22, mux.local_address), mux.local_address)
            await _settle()
            await p_conn.send(b"for B")
            await _settle()
            assert _receive_all(b_conn) == [b"for B"]
            assert mux.statistics().ambiguous == 0


async def test_a_late_answer_to_a_failed_agents_check_takes_no_address() -> None:
    """A's ICE fails while an answer to one of its checks is on its way: A let its
    addresses go, and the late answer takes none for it again (its transaction was still
    noted, and it proved the address for a failed agent, against whoever had it next)."""
    quick = trice.Timing(
        rto=0.05, rto_max=0.05, max_binding_requests=2, disconnected_timeout=0.5, failed_timeout=0.5
    )
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as stranger:
        async with (
            trice.open_udp_mux("127.0.0.1") as mux,
            trice.open_agent(loopback_config(timing=quick), controlling=True, mux=mux) as a,
        ):
            await a.wait_gathering_complete()
            await stranger.bind(("127.0.0.1", 0))
            async with a.subscribe() as events:
                check = await _check_from_a_stranger(mux, a, stranger)
                with trio.fail_after(5):
                    await wait_for_state(events, trice.ConnectionState.FAILED)
            assert mux.statistics().addresses == 0
            await stranger.sendto(_answer(check, "e" * 22, mux.local_address), mux.local_address)
            await _settle()
            assert mux.statistics().addresses == 0


async def test_a_restart_lets_go_of_the_addresses_of_before_but_the_one_data_goes_to() -> None:
    """An agent on a mux, connected, is checked from 30 more addresses by its peer (or one
    with its password: a roaming peer, a hostile one).  An ICE restart lets go of them all
    but the address of the pair that carries data until the new checks select one, whose
    data still comes (the mux had kept every address a peer ever used, a generation after
    another, for the agent's life)."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with (
            trice.open_agent(loopback_config(), controlling=False, mux=mux) as server,
            trice.open_agent(loopback_config(), controlling=True) as client,
        ):
            await server.wait_gathering_complete()
            await client.wait_gathering_complete()
            signal(server, client)
            to_client, to_server = await connect_both(server, client)
            assert mux.statistics().addresses == 1
            check = _signed_check(server.local_parameters, client.local_parameters.ufrag)
            for i in range(30):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as roamer:
                    roamer.bind((f"127.0.9.{i + 1}", 0))
                    roamer.sendto(check, mux.local_address)
            await trio.testing.wait_all_tasks_blocked(CUSHION)
            assert mux.statistics().addresses == 31
            server.restart()
            assert mux.statistics().addresses == 1
            await to_server.send(b"over the pair of before")
            with trio.fail_after(5):
                assert await to_client.receive() == b"over the pair of before"
