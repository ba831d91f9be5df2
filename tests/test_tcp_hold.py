"""Data over an ICE-TCP connection a peer opened, held until the peer answers a check of
the agent's over it (trice/_trio/_tcp.py, ``_Link.answered``): what a stranger with a copy of
the peer's check gets (none of its data taken, no place kept at the cap), what a peer that
plays along keeps (every datagram, in order: a burst before the agent had its parameters, a
487 on either side, an ICE restart, ICE-lite), and what is counted.  Written with the
tcphold46 review, whose tests failed on the hold's first cut."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing
from tcp_peer import FramedPeer

import trice
from trice import stun
from trice.ice._framing import frame

from loopback import (
    adopted_tcp_connection,
    loopback_config,
    peer_check,
    signal,
    tcp_transport,
    until,
)

ACTIVE = trice.TcpType.ACTIVE
PASSIVE = trice.TcpType.PASSIVE
PEER_UFRAG, PEER_PWD = "peer", "p" * 22
PEER_UFRAG2, PEER_PWD2 = "peer2", "q" * 22
PRIORITY = 1_845_000_000
_REQUEST = stun.MessageClass.REQUEST


def _tcp_only(kind: trice.TcpType, **kwargs: object) -> trice.AgentConfig:
    """A loopback agent's configuration with one ICE-TCP candidate of ``kind``, no UDP."""
    config = loopback_config(**kwargs)  # type: ignore[arg-type]
    network = dataclasses.replace(config.network, udp=False, tcp_candidates=(kind,))
    return dataclasses.replace(config, network=network)


def _check(
    agent: trice.Agent,
    *,
    ufrag: str = PEER_UFRAG,
    controlling: bool = True,
    nominate: bool = False,
    tiebreaker: int = 2,
) -> bytes:
    role: stun.Attribute = (
        stun.IceControlling(tiebreaker) if controlling else stun.IceControlled(tiebreaker)
    )
    attributes: list[stun.Attribute] = [
        stun.Username(f"{agent.local_parameters.ufrag}:{ufrag}"),
        stun.Priority(PRIORITY),
        role,
    ]
    if nominate:
        attributes.append(stun.UseCandidate())
    key = stun.short_term_key(agent.local_parameters.pwd)
    message = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=attributes)
    return message.encode(integrity_key=key, fingerprint=True)


def _success(request: stun.Message, peer: FramedPeer, pwd: str = PEER_PWD) -> bytes:
    response = request.success_response(stun.XorMappedAddress(*peer.agent_address))
    return response.encode(integrity_key=stun.short_term_key(pwd), fingerprint=True)


def _error(request: stun.Message, code: int, reason: str, pwd: str = PEER_PWD) -> bytes:
    response = request.error_response(code, reason)
    return response.encode(integrity_key=stun.short_term_key(pwd), fingerprint=True)


async def _next_request(peer: FramedPeer, within: float = 5) -> stun.Message:
    """The next check of the agent's over ``peer`` (answers to the peer's own are skipped)."""
    with trio.fail_after(within):
        while True:
            datagram = await peer.receive()
            assert datagram is not None, "the agent closed the connection"
            message = stun.decode(datagram)
            if message.message_class is _REQUEST:
                return message


def _passive(agent: trice.Agent) -> tuple[str, int]:
    (candidate,) = [c for c in agent.local_candidates if c.protocol == "tcp"]
    return (candidate.address, candidate.port)


def _data(n: int, tag: bytes = b"d") -> list[bytes]:
    return [tag + b"%04d" % i for i in range(n)]


async def _drain_into(agent: trice.Agent, received: list[bytes], count: int) -> None:
    """Connect (as the controlled agent), then read until ``count`` datagrams came, or 3 s
    passed."""
    with trio.fail_after(10):
        connection = await agent.connect()
    with trio.move_on_after(3):
        while len(received) < count:
            received.append(await connection.receive())


async def _answering(peer: FramedPeer, pwd: str = PEER_PWD) -> None:
    """Answer every check of the agent's over ``peer`` until it closes."""
    while (datagram := await peer.receive()) is not None:
        message = stun.decode(datagram)
        if message.message_class is _REQUEST:
            await peer.send(_success(message, peer, pwd))


# -- a stranger with a copy of the peer's check --------------------------------------------


async def test_a_stranger_who_passes_the_agents_check_on_to_the_peer_gets_no_data_in() -> None:
    """A stranger with a copy of the peer's check, over a connection of its own, passes the
    agent's check over it on to a candidate of the peer's it can reach (its UDP one here),
    and hands the peer's answer back (authentic: signed with the peer's password), then
    data.  The answer names the stranger's address, not the agent's end of the connection:
    the data stays held.  (Any signed answer released it: tcphold46-1.)"""
    async with (
        trice.open_agent(_tcp_only(PASSIVE), controlling=False) as agent,
        trice.open_agent(loopback_config(), controlling=True) as peer,
    ):
        await agent.wait_gathering_complete()
        await peer.wait_gathering_complete()
        # Signaling: parameters only (the peer is yet to open its connection).
        params = peer.local_parameters
        agent.set_remote_parameters(params.ufrag, params.pwd)
        mine = agent.local_parameters
        peer.set_remote_parameters(mine.ufrag, mine.pwd)
        passive = next(
            c for c in agent.local_candidates if c.protocol == "tcp" and c.tcp_type is PASSIVE
        )
        peer_udp = next(c for c in peer.local_candidates if c.protocol == "udp")
        before = agent.statistics()
        # The stranger: the peer's check, as seen on the wire (signed with the agent's
        # password), copied to a connection of its own.
        copied = peer_check(agent, params.ufrag, priority=1_845_000_000, controlling=True)
        stranger = await FramedPeer.connect((passive.address, passive.port))
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        try:
            with trio.fail_after(10):
                await stranger.send(copied)
                # The agent answers the copy, and checks the connection back.
                while True:
                    datagram = await stranger.receive()
                    assert datagram is not None, "the agent closed the connection"
                    request = stun.decode(datagram)
                    if request.message_class is stun.MessageClass.REQUEST:
                        break
                # Reflected to the real peer, which answers it.
                await udp.sendto(datagram, (peer_udp.address, peer_udp.port))
                while True:
                    answer, _ = await udp.recvfrom(4096)
                    message = stun.decode(answer)
                    if (
                        message.message_class is stun.MessageClass.SUCCESS
                        and message.transaction_id == request.transaction_id
                    ):
                        break
                await stranger.send(answer)
                await stranger.send(b"INJECTED by a stranger")
                await stranger.send(copied)  # (once answered again, all before it was read)
                await stranger.answered()
            after = agent.statistics()
            assert after.datagrams_received == before.datagrams_received, (
                "the stranger's data was taken as the peer's: "
                f"{after.datagrams_received - before.datagrams_received} datagram(s)"
            )
        finally:
            udp.close()
            await stranger.aclose()


async def test_a_stranger_with_copies_of_the_peers_check_cannot_keep_the_peer_out() -> None:
    """A stranger copies the peer's check to ``max_pairs`` connections of its own and
    answers none of the agent's checks over them; the real peer then opens its connection
    and checks.  The peer's connection gets a place (the stranger's, over which no answer
    came, give way), and its check an answer.  (Only a connection no accepted check went
    over gave way: the peer's was closed at once, for some 16 s: tcphold46-3.)"""
    async with trice.open_agent(_tcp_only(PASSIVE, max_pairs=3), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(None)
        (candidate,) = [c for c in agent.local_candidates if c.protocol == "tcp"]
        address = (candidate.address, candidate.port)
        copied = _check(agent)
        strangers = []
        try:
            for _ in range(3):
                stranger = await FramedPeer.connect(address)
                strangers.append(stranger)
                await stranger.send(copied)
                await stranger.answered()
            peer = await FramedPeer.connect(address)
            strangers.append(peer)
            await peer.send(_check(agent))
            await peer.answered()
        finally:
            for s in strangers:
                await s.aclose()


async def test_a_check_reading_an_unanswered_connection_past_a_turn_hands_over_no_data() -> None:
    """A connection a peer opened, its check accepted but no check of the agent's answered
    over it: 100 small datagrams in one read, past a turn's budget, taken by a check about
    to be given up (``read_waiting``, as ``CheckRun._answered_meanwhile`` does).  None of
    them is handed over (those past the budget neither, which wait in ``link.backlog``),
    and once the answer comes they all are, in order."""
    delivered: list[bytes] = []
    transport = tcp_transport(PASSIVE, delivered=delivered)
    data = [b"%03d" % i for i in range(100)]
    async with adopted_tcp_connection(transport) as (far, address):
        transport.prove(address, answered=False)  # (a check accepted, maybe a copy)
        await trio.testing.wait_all_tasks_blocked()  # (the reader waits for the socket)
        far.sendall(b"".join(frame(d) for d in data))
        await transport.read_waiting(address)  # (as a check task, with no checkpoint before)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert delivered == [], f"{len(delivered)} datagrams handed over unanswered"
        transport.prove(address, answered=True)  # (as the answer handed over does)
        far.sendall(frame(b"after"))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    assert delivered == [*data, b"after"]


# -- a peer that plays along -------------------------------------------------------------------


async def _a_burst_arrives_whole(
    agent: trice.Agent, peer: trice.Agent, count: int, *, late: bool = False
) -> None:
    """``peer`` opens the connection and sends ``count`` small datagrams the moment its
    connect() returns; ``agent`` receives every one, in order (over TCP, a reliable
    transport, the peer cannot tell that any was lost).  With ``late``, the agent gets the
    peer's parameters only once the burst went (a signalling race: it answers the peer's
    checks before, with its own password, but checks back only after)."""
    await agent.wait_gathering_complete()
    await peer.wait_gathering_complete()
    if late:
        mine = agent.local_parameters
        peer.set_remote_parameters(mine.ufrag, mine.pwd)
        for candidate in agent.local_candidates:
            peer.add_remote_candidate(candidate)
        peer.add_remote_candidate(None)
    else:
        signal(agent, peer)
    received: list[bytes] = []
    sent = trio.Event()
    async with trio.open_nursery() as nursery:

        async def peer_side() -> None:
            connection = await peer.connect()
            for i in range(count):
                await connection.send(b"%08d" % i)
            sent.set()

        nursery.start_soon(peer_side)
        if late:
            with trio.fail_after(10):
                await sent.wait()
            theirs = peer.local_parameters  # (the answer to the peer's offer arrives)
            agent.set_remote_parameters(theirs.ufrag, theirs.pwd)
            agent.add_remote_candidate(None)
        with trio.fail_after(10):
            connection = await agent.connect()
        with trio.move_on_after(5):
            while len(received) < count:
                received.append(await connection.receive())
    stats = agent.statistics()
    assert received == [b"%08d" % i for i in range(len(received))], "out of order"
    assert len(received) == count, (
        f"{count - len(received)} of {count} datagrams lost; "
        f"unknown_source_dropped={stats.unknown_source_dropped}"
    )


@pytest.mark.parametrize("nomination", list(trice.Nomination))
@pytest.mark.parametrize("count", [200, 1000])
async def test_a_burst_sent_at_once_after_connect_arrives_whole(
    nomination: trice.Nomination, count: int
) -> None:
    """A trice peer (controlling, active candidate) sends a burst the moment its connect()
    returns, over the connection it opened to the agent's passive candidate (the data that
    overtakes its answer to the agent's check is held till that answer)."""
    async with (
        trice.open_agent(_tcp_only(PASSIVE), controlling=False) as agent,
        trice.open_agent(_tcp_only(ACTIVE, nomination=nomination), controlling=True) as peer,
    ):
        await _a_burst_arrives_whole(agent, peer, count)


@pytest.mark.parametrize("nomination", list(trice.Nomination))
@pytest.mark.parametrize("count", [200, 1000])
async def test_a_burst_before_the_agent_has_the_peers_parameters_arrives_whole(
    count: int, nomination: trice.Nomination
) -> None:
    """The same in a signalling race: the agent gets the peer's parameters only after the
    burst, which waits till then (all past 256 datagrams were dropped: tcphold46-2)."""
    async with (
        trice.open_agent(_tcp_only(PASSIVE), controlling=False) as agent,
        trice.open_agent(_tcp_only(ACTIVE, nomination=nomination), controlling=True) as peer,
    ):
        await _a_burst_arrives_whole(agent, peer, count, late=True)


@pytest.mark.parametrize("nomination", list(trice.Nomination))
async def test_a_controlled_peers_burst_reaches_a_controlling_passive_agent(
    nomination: trice.Nomination,
) -> None:
    """The agent under test controls (``nomination``) with a passive candidate; the trice
    peer, controlled, opens the connection and sends the burst."""
    async with (
        trice.open_agent(_tcp_only(PASSIVE, nomination=nomination), controlling=True) as agent,
        trice.open_agent(_tcp_only(ACTIVE), controlling=False) as peer,
    ):
        await _a_burst_arrives_whole(agent, peer, 1000)


async def test_a_peers_burst_reaches_a_lite_passive_agent() -> None:
    """An ICE-lite agent (passive candidate) takes the data behind an accepted check at
    once: a trice peer's burst right after connect() arrives whole."""
    async with (
        trice.open_agent(_tcp_only(PASSIVE, lite=True), controlling=False) as agent,
        trice.open_agent(_tcp_only(ACTIVE), controlling=True) as peer,
    ):
        await _a_burst_arrives_whole(agent, peer, 1000)


async def test_data_before_the_answer_to_a_487d_check_comes_after_the_retried_one() -> None:
    """The peer's first answer to the agent's check over its connection is a 487 (signed:
    the peer is there).  The agent switches role and checks again (RFC 8445 §7.2.5.1); the
    peer answers that.  Data the peer sent before either answer is held, then handed over,
    all of it, in order, before the data that came after."""
    async with trice.open_agent(_tcp_only(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(None)
        before, after = _data(20, b"b"), _data(20, b"a")
        received: list[bytes] = []
        peer = await FramedPeer.connect(_passive(agent))
        try:
            async with trio.open_nursery() as nursery:
                await peer.send(_check(agent, controlling=True, nominate=True))
                for d in before:
                    await peer.send(d)
                request = await _next_request(peer)
                await peer.send(_error(request, 487, "Role Conflict"))
                # (The peer now takes the controlled role: the agent checks again, as
                # controlling.)
                request = await _next_request(peer)
                await peer.send(_success(request, peer))
                for d in after:
                    await peer.send(d)
                nursery.start_soon(_answering, peer)
                await _drain_into(agent, received, 40)
                nursery.cancel_scope.cancel()
        finally:
            await peer.aclose()
        assert received == before + after, agent.statistics()


async def test_data_held_before_the_peers_check_was_487d_goes_once_it_answers() -> None:
    """The peer's first check claims the agent's role (both controlled, the peer's
    tie-breaker higher): the agent answers 487 (not accepted: the connection is not
    proven).  The peer switches to controlling and checks again; then answers the agent's
    check.  Its data sent between is the peer's: handed over, in order."""
    async with trice.open_agent(_tcp_only(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(None)
        first, second = _data(10, b"f"), _data(10, b"s")
        received: list[bytes] = []
        peer = await FramedPeer.connect(_passive(agent))
        try:
            async with trio.open_nursery() as nursery:
                await peer.send(_check(agent, controlling=False, tiebreaker=2**64 - 1))
                with trio.fail_after(5):
                    while True:
                        datagram = await peer.receive()
                        assert datagram is not None
                        message = stun.decode(datagram)
                        if message.message_class is stun.MessageClass.ERROR:
                            break
                for d in first:
                    await peer.send(d)
                await peer.send(_check(agent, controlling=True, nominate=True))
                request = await _next_request(peer)
                await peer.send(_success(request, peer))
                for d in second:
                    await peer.send(d)
                nursery.start_soon(_answering, peer)
                await _drain_into(agent, received, 20)
                nursery.cancel_scope.cancel()
        finally:
            await peer.aclose()
        assert received == first + second, agent.statistics()


async def test_an_ice_restart_before_the_peer_answered_keeps_the_connections_data() -> None:
    """The peer checks over its connection and sends data; before it answers the agent's
    check, both sides restart ICE: the peer checks again over the same connection with its
    new credentials, then answers the agent's new check.  Its data, held across the
    restart, is the peer's: handed over, in order, before what came after."""
    async with trice.open_agent(_tcp_only(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(None)
        first, second = _data(10, b"f"), _data(10, b"s")
        received: list[bytes] = []
        peer = await FramedPeer.connect(_passive(agent))
        try:
            async with trio.open_nursery() as nursery:
                await peer.send(_check(agent))
                for d in first:
                    await peer.send(d)
                await _next_request(peer)  # (not answered)
                agent.restart()
                agent.set_remote_parameters(PEER_UFRAG2, PEER_PWD2)
                agent.add_remote_candidate(None)
                await peer.send(_check(agent, ufrag=PEER_UFRAG2, nominate=True))
                request = await _next_request(peer)
                await peer.send(_success(request, peer, PEER_PWD2))
                for d in second:
                    await peer.send(d)
                nursery.start_soon(_answering, peer, PEER_PWD2)
                await _drain_into(agent, received, 20)
                nursery.cancel_scope.cancel()
        finally:
            await peer.aclose()
        assert received == first + second, agent.statistics()


async def test_a_lite_agent_takes_the_data_behind_an_accepted_check_at_once() -> None:
    """An ICE-lite agent sends no check: the data behind an accepted check is handed over
    as it comes."""
    async with trice.open_agent(_tcp_only(PASSIVE, lite=True), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(None)
        data = _data(10)
        received: list[bytes] = []
        peer = await FramedPeer.connect(_passive(agent))
        try:
            await peer.send(_check(agent, nominate=True))
            for d in data:
                await peer.send(d)
            await _drain_into(agent, received, 10)
        finally:
            await peer.aclose()
        assert received == data


async def test_a_strangers_held_data_is_counted_once_its_connection_closes() -> None:
    """A stranger copies the peer's check to a connection of its own, and sends data behind
    it, which it never gets answered: each datagram is counted in
    ``unknown_source_dropped`` once the connection closes (none handed over)."""
    async with trice.open_agent(_tcp_only(PASSIVE), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        agent.add_remote_candidate(None)
        stranger = await FramedPeer.connect(_passive(agent))
        await stranger.send(_check(agent))
        for d in _data(30):
            await stranger.send(d)
        await _next_request(stranger)
        await stranger.aclose()
        await until(lambda: agent.statistics().unknown_source_dropped >= 30, within=5)
        stats = agent.statistics()
        assert stats.unknown_source_dropped == 30
        assert stats.datagrams_received == 0
