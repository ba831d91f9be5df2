"""The TCP mux (``trice.open_tcp_mux``) with a hostile or unlucky peer, on loopback only:
the test's own sockets stand in for the peers (a first frame in pieces, frames behind it,
malformed first frames, idle connections), and agents leave, restart or open at bad
moments.  Several were written against a defect of the first cut of the mux (the test failed
with it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from tcp_peer import FramedPeer

import trice
from trice import stun
from trice._trio import _tcp, _tcpmux
from trice._trio._tcp import TcpTransport
from trice._trio._transport import READ_BATCH
from trice.ice._framing import frame

from loopback import (
    HAS_IPV6,
    TRACED,
    MostPerStep,
    loopback_config,
    mux_in_a_task,
    open_fds,
    until,
    walk_tasks,
)

PEER_UFRAG, PEER_PWD = "peer", "p" * 22
#: PROVE_WITHIN for the tests that wait it out (see ``quick_prove``).
PROVE = 0.2
#: Tries of a race whose two orders trio picks at random (each order half the time).
TRIES = 24
_REQUEST = stun.MessageClass.REQUEST


@pytest.fixture
def quick_prove(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tcp, "PROVE_WITHIN", PROVE)


def _request(
    ufrag: str | bytes,
    pwd: str = "x" * 22,
    *,
    padding: int = 0,
    transaction_id: bytes | None = None,
    nominate: bool = False,
) -> bytes:
    """A Binding request to the agent of ``ufrag`` (signed with ``pwd``: the agent's own
    accepts it), with ``padding`` bytes of a comprehension-optional attribute, and
    USE-CANDIDATE if ``nominate``."""
    name = ufrag.encode() if isinstance(ufrag, str) else ufrag
    attributes: list[stun.Attribute] = [
        stun.UnknownAttribute(0x0006, name + b":" + PEER_UFRAG.encode()),  # (USERNAME)
        stun.Priority(1_845_000_000),
        stun.IceControlling(2),
    ]
    if padding:
        attributes.append(stun.UnknownAttribute(0x8FF0, bytes(padding)))
    if nominate:
        attributes.append(stun.UseCandidate())
    kwargs = {} if transaction_id is None else {"transaction_id": transaction_id}
    message = stun.Message(stun.Method.BINDING, _REQUEST, attributes=attributes, **kwargs)
    return message.encode(integrity_key=stun.short_term_key(pwd), fingerprint=True)


def _for(agent: trice.Agent, **kwargs: object) -> bytes:
    params = agent.local_parameters
    return _request(params.ufrag, params.pwd, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def _peer(address: tuple[str, int]) -> AsyncIterator[FramedPeer]:
    peer = await FramedPeer.connect(address)
    try:
        yield peer
    finally:
        await peer.aclose()


@asynccontextmanager
async def _mux_agent_and_peer() -> AsyncIterator[tuple[trice.TcpMux, trice.Agent, FramedPeer]]:
    """A TCP mux, an agent on it that has the peer's parameters, and a connection of the
    peer's to the mux (no frame sent yet)."""
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
        _peer(mux.local_address) as peer,
    ):
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        yield mux, agent, peer


def _share(mux: trice.TcpMux, agent: trice.Agent) -> TcpTransport:
    share = mux._owner(agent.local_parameters.ufrag)
    assert share is not None
    return share


async def _handed_over(mux: trice.TcpMux, agent: trice.Agent, peer: FramedPeer) -> socket.socket:
    """``peer`` sends a check for ``agent`` as its first frame: the mux hands the connection
    over; the agent's socket of it."""
    share = _share(mux, agent)
    await peer.send_raw(frame(_for(agent)))
    await until(lambda: share.links == 1)
    (link,) = share._links.values()
    assert link.sock is not None
    return link.sock


async def _open_and_close_an_agent() -> None:
    """The process's first agent warms trice up (with checkpoints); later ones do not."""
    async with trice.open_agent(loopback_config(), controlling=False):
        pass


# --------------------------------------------------------------------------- defects


async def test_an_agent_leaving_as_the_mux_hands_it_a_connection_does_not_crash_the_mux(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent leaves with a connection of its own open; as that connection's task ends
    (closing its socket), the last byte of another connection's first check, for the same
    agent, arrives.  trio runs the mux's routing task and the agent's transport task in the
    same batch, in either order: in one of them the transport's nursery is closed but the
    transport not yet marked so."""
    await _open_and_close_an_agent()
    close = _tcp.close_socket
    #: (the socket whose closing sends the byte, that byte, and where)
    trigger: list[tuple[socket.socket, bytes, socket.socket]] = []

    def close_socket(sock: socket.socket | None) -> None:
        if trigger and sock is trigger[0][0]:
            _, byte, late = trigger.pop()
            late.send(byte)
        close(sock)

    monkeypatch.setattr(_tcp, "close_socket", close_socket)
    for _ in range(TRIES):
        async with trice.open_tcp_mux("127.0.0.1") as mux:
            with socket.create_connection(mux.local_address) as late:
                await _leave_as_a_check_completes(mux, late, trigger)
        stats = mux.statistics()
        assert (stats.routed, stats.unroutable) == (1, 1)


async def _leave_as_a_check_completes(
    mux: trice.TcpMux,
    late: socket.socket,
    trigger: list[tuple[socket.socket, bytes, socket.socket]],
) -> None:
    async with (
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
        _peer(mux.local_address) as first,
    ):
        await agent.wait_gathering_complete()
        handed = await _handed_over(mux, agent, first)
        request = frame(_for(agent))
        late.sendall(request[:-1])
        await until(lambda: mux.statistics().waiting == 1)
        trigger.append((handed, request[-1:], late))
    await until(lambda: mux.statistics().waiting == 0)
    assert not trigger, "the first connection was not closed as the agent left"


async def test_a_check_that_comes_as_the_agent_opens_is_routed() -> None:
    """An agent with a ufrag of its own choosing: its peer's check arrives as the agent
    opens (attached to the mux, its transport's task not yet run)."""
    await _open_and_close_an_agent()
    pwd = "w" * 22
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        for i in range(TRIES):
            ufrag = f"early{i}"
            request = frame(_request(ufrag, pwd))
            raw = socket.create_connection(mux.local_address)
            try:
                raw.sendall(request[:-1])
                await until(lambda: mux.statistics().waiting == 1)
                raw.send(request[-1:])
                config = loopback_config(ufrag=ufrag, pwd=pwd)
                async with trice.open_agent(config, controlling=False, mux=mux) as agent:
                    await until(lambda: mux.statistics().waiting == 0)
                    assert agent.statistics().tcp_accepted == 1, f"try {i}: refused"
            finally:
                raw.close()


async def test_idle_connections_at_max_waiting_do_not_keep_a_peer_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_tcpmux, "MAX_WAITING", 2)
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
        _peer(mux.local_address) as idle1,
        _peer(mux.local_address) as idle2,
    ):
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        await until(lambda: mux.statistics().waiting == 2)
        async with _peer(mux.local_address) as peer:
            await peer.send_raw(frame(_for(agent)))
            with trio.fail_after(2):
                answer = await peer.receive()
        assert answer is not None, "the peer's connection was closed; the idle ones stay"
        assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
        del idle1, idle2


async def test_checks_not_signed_for_the_agent_hold_none_of_its_places(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ufrag travels in clear: connections whose first check asks for the agent but is
    not signed with its password are closed by the mux (they were handed over, and each
    held one of the agent's ``max_pairs`` places for ``PROVE_WITHIN``, past ``MAX_WAITING``,
    for any number of agents); a check signed right still gets in."""
    monkeypatch.setattr(_tcpmux, "MAX_WAITING", 4)
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(max_pairs=10), controlling=False, mux=mux) as agent,
    ):
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        strangers = [await FramedPeer.connect(mux.local_address) for _ in range(10)]
        try:
            for stranger in strangers:
                await stranger.send_raw(frame(_request(agent.local_parameters.ufrag, "w" * 22)))
            await until(lambda: mux.statistics().unroutable == 10)
            assert _share(mux, agent).links == 0
            async with _peer(mux.local_address) as peer:
                await peer.send_raw(frame(_for(agent)))
                with trio.fail_after(2):
                    answer = await peer.receive()
            assert answer is not None
            assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
        finally:
            for stranger in strangers:
                await stranger.aclose()


async def test_one_sources_idle_connections_do_not_push_a_waiting_peer_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The peer's connection waits for its first check when one stranger (from 127.0.0.2)
    opens ``MAX_WAITING`` idle connections: the stranger holds at most
    ``MAX_WAITING_PER_SOURCE`` of the places, and the peer's check gets in (the stranger's
    flood pushed the oldest waiting out: the peer's)."""
    monkeypatch.setattr(_tcpmux, "MAX_WAITING", 8)
    monkeypatch.setattr(_tcpmux, "MAX_WAITING_PER_SOURCE", 2)
    async with _mux_agent_and_peer() as (mux, agent, peer):
        await until(lambda: mux.statistics().waiting == 1)
        strangers = [
            await FramedPeer.connect(mux.local_address, source="127.0.0.2") for _ in range(8)
        ]
        try:
            await until(lambda: mux.statistics().waiting == 3)
            await peer.send_raw(frame(_for(agent)))
            with trio.fail_after(2):
                answer = await peer.receive()
            assert answer is not None, "the peer's connection was pushed out"
            assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
        finally:
            for stranger in strangers:
                await stranger.aclose()


async def test_open_agent_on_a_closed_tcp_mux_is_a_usage_error() -> None:
    async with mux_in_a_task(lambda: trice.open_tcp_mux("127.0.0.1")) as (mux, scope, ended):
        scope.cancel()
        with trio.fail_after(2):
            await ended.wait()
        with pytest.raises(trice.UsageError, match="closed"):
            async with trice.open_agent(loopback_config(), controlling=False, mux=mux):
                pass


async def test_a_connection_the_mux_hands_over_has_nodelay() -> None:
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
        _peer(mux.local_address) as peer,
    ):
        await agent.wait_gathering_complete()
        handed = await _handed_over(mux, agent, peer)
        assert handed.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_open_tcp_mux_refuses_a_host_that_is_no_string() -> None:
    for host in (2130706433, b"\x7f\x00\x00\x01"):
        with pytest.raises(trice.UsageError):
            trice.open_tcp_mux(host)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- what is right


async def test_frames_behind_a_first_check_in_pieces_are_all_delivered_in_order() -> None:
    """A first check of some 1.9 KB in 100-byte pieces (each read by the mux on its own;
    a longer one the agent drops: see MAX_STUN), the last piece carrying a second check and
    half a third: the agent answers all three, in order (the bytes the mux read past the
    first frame are the agent's)."""
    async with _mux_agent_and_peer() as (mux, agent, peer):
        ids = [bytes([i]) * 12 for i in (1, 2, 3)]
        first = frame(_for(agent, padding=1_800, transaction_id=ids[0]))
        second = frame(_for(agent, transaction_id=ids[1]))
        third = frame(_for(agent, transaction_id=ids[2]))
        pieces = [first[i : i + 100] for i in range(0, len(first), 100)]
        pieces[-1] += second + third[:30]
        for piece in pieces:
            await peer.send_raw(piece)
            await trio.testing.wait_all_tasks_blocked(0.001)
        assert mux.statistics().routed == 1
        await peer.send_raw(third[30:])
        answers: list[tuple[bytes, stun.MessageClass]] = []
        with trio.fail_after(2):
            while len(answers) < len(ids):  # (the agent's own triggered checks skipped)
                datagram = await peer.receive()
                assert datagram is not None, "the agent closed the connection"
                message = stun.decode(datagram)
                if message.message_class is not _REQUEST:
                    answers.append((message.transaction_id, message.message_class))
        assert answers == [(i, stun.MessageClass.SUCCESS) for i in ids]
        assert agent.statistics().tcp_accepted == 1


async def test_first_frames_for_no_agent_are_closed_and_the_mux_goes_on() -> None:
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
    ):
        await agent.wait_gathering_complete()
        params = agent.local_parameters
        ufrag = params.ufrag.encode()
        username = stun.UnknownAttribute(0x0006, ufrag + b":" + PEER_UFRAG.encode())
        indication = stun.Message(
            stun.Method.BINDING, stun.MessageClass.INDICATION, attributes=[username]
        )
        allocate = stun.Message(stun.Method.ALLOCATE, _REQUEST, attributes=[username])
        no_colon = stun.Message(
            stun.Method.BINDING, _REQUEST, attributes=[stun.UnknownAttribute(0x0006, ufrag)]
        )
        truncated = bytearray(_for(agent))
        struct.pack_into("!H", truncated, 2, 8)  # (the message ends inside USERNAME)
        firsts = [
            b"",  # (an empty datagram)
            b"\x00",
            _request(b"\xff\xfe\xfd\xfc"),  # (a ufrag no UTF-8)
            _request(params.ufrag.upper() if params.ufrag.upper() != params.ufrag else "ZZZZ"),
            no_colon.encode(fingerprint=True),
            indication.encode(fingerprint=True),
            allocate.encode(fingerprint=True),
            bytes(truncated),
        ]
        for first in firsts:
            async with _peer(mux.local_address) as peer:
                await peer.send_raw(frame(first))
                with trio.fail_after(2):
                    assert await peer.receive() is None, first
        stats = mux.statistics()
        assert (stats.routed, stats.unroutable, stats.waiting) == (0, len(firsts), 0)
        assert agent.statistics().tcp_accepted == 0
        async with _peer(mux.local_address) as peer:  # (and the mux still routes)
            await peer.send_raw(frame(_for(agent)))
            with trio.fail_after(2):
                assert await peer.receive() is not None
        assert mux.statistics().routed == 1


async def test_a_check_for_a_ufrag_given_up_in_an_ice_restart_is_not_routed() -> None:
    """A connection's first check, for the agent's ufrag before an ICE restart, completes
    after it: the mux looks the ufrag up when the frame is whole (not routed); one for the
    new ufrag is."""
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
        _peer(mux.local_address) as old,
    ):
        await agent.wait_gathering_complete()
        request = frame(_for(agent))
        await old.send_raw(request[:40])
        await until(lambda: mux.statistics().waiting == 1)
        agent.restart()
        await old.send_raw(request[40:])
        with trio.fail_after(2):
            assert await old.receive() is None
        assert agent.statistics().tcp_accepted == 0
        async with _peer(mux.local_address) as new:
            await new.send_raw(frame(_for(agent)))
            with trio.fail_after(2):
                assert await new.receive() is not None
        stats = mux.statistics()
        assert (stats.routed, stats.unroutable) == (1, 1)
        assert agent.statistics().tcp_accepted == 1


async def test_the_mux_closing_closes_the_connections_that_wait_at_once() -> None:
    async with mux_in_a_task(lambda: trice.open_tcp_mux("127.0.0.1")) as (mux, scope, ended):
        async with _peer(mux.local_address) as idle, _peer(mux.local_address) as half:
            await half.send_raw(frame(_request("nobodyHere"))[:10])
            await until(lambda: mux.statistics().waiting == 2)
            scope.cancel()
            with trio.fail_after(1):  # (not PROVE_WITHIN, 10 s, later)
                await ended.wait()
                assert await idle.receive() is None
                assert await half.receive() is None
        stats = mux.statistics()
        assert (stats.waiting, stats.agents) == (0, 0)


async def test_an_agent_outlives_its_mux_and_restarts_and_leaves_cleanly() -> None:
    async with mux_in_a_task(lambda: trice.open_tcp_mux("127.0.0.1")) as (mux, scope, ended):
        async with trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent:
            await agent.wait_gathering_complete()
            assert mux.statistics().agents == 1
            scope.cancel()
            with trio.fail_after(2):
                await ended.wait()
            assert mux.statistics().agents == 0
            new = agent.restart()
            assert mux._owner(new.ufrag) is None and mux.statistics().agents == 0
        assert mux.statistics().agents == 0


async def test_under_the_relay_policy_an_agent_does_not_use_the_tcp_mux() -> None:
    config = loopback_config(transport_policy=trice.TransportPolicy.RELAY)
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(config, controlling=False, mux=mux) as agent,
    ):
        await agent.wait_gathering_complete()
        assert mux.statistics().agents == 0
        assert mux._owner(agent.local_parameters.ufrag) is None
        assert agent.local_candidates == ()


async def test_an_agent_that_fails_to_open_on_a_tcp_mux_leaves_nothing_attached() -> None:
    """The same mux twice: the second attach fails; the first is undone, and the ufrag is
    free for the next agent."""
    config = loopback_config(ufrag="twiceUfrag", pwd="p" * 22)
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        with pytest.raises(trice.UsageError):
            async with trice.open_agent(config, controlling=False, mux=(mux, mux)):
                pass
        assert mux.statistics().agents == 0
        async with trice.open_agent(config, controlling=False, mux=mux):
            assert mux.statistics().agents == 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_an_agent_leaving_closes_what_the_mux_handed_it_and_nothing_is_left() -> None:
    """The agent leaves holding a connection the mux handed it (its peer sees the end),
    while another waits at the mux for its first check's last bytes (for that agent: not
    routed once they come); then the mux's block ends: no descriptor, no task is left."""
    await _open_and_close_an_agent()
    before = open_fds()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        async with _peer(mux.local_address) as handed, _peer(mux.local_address) as waiting:
            async with trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent:
                await agent.wait_gathering_complete()
                share = _share(mux, agent)
                await handed.send_raw(frame(_for(agent)))
                await until(lambda: share.links == 1)
                late = frame(_for(agent))
                await waiting.send_raw(late[:20])
                await until(lambda: mux.statistics().waiting == 1)
            with trio.fail_after(2):
                while await handed.receive() is not None:  # (the agent's answer, then the end)
                    pass
                await waiting.send_raw(late[20:])
                assert await waiting.receive() is None
        stats = mux.statistics()
        assert (stats.agents, stats.waiting, stats.routed, stats.unroutable) == (0, 0, 1, 1)
        assert not [t.name for t in walk_tasks(root) if "<-" in t.name or "passive" in t.name]
    assert not [t.name for t in walk_tasks(root) if "tcp" in t.name]
    assert open_fds() <= before


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
async def test_a_tcp_mux_on_ipv6_loopback_routes_and_signals_its_address() -> None:
    async with (
        trice.open_tcp_mux("::1") as mux,
        trice.open_agent(loopback_config(ipv6=True), controlling=False, mux=mux) as agent,
        _peer(mux.local_address) as peer,
    ):
        await agent.wait_gathering_complete()
        assert mux.local_address[0] == "::1"
        (candidate,) = agent.local_candidates
        assert (candidate.transport_address, candidate.tcp_type) == (
            mux.local_address,
            trice.TcpType.PASSIVE,
        )
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        await peer.send_raw(frame(_for(agent)))
        with trio.fail_after(2):
            answer = await peer.receive()
        assert answer is not None
        assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
        assert mux.statistics().routed == 1


async def test_at_max_waiting_the_oldest_of_the_sources_that_hold_most_gives_its_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Strangers hold one idle connection an address each (any IPv6 host has a /64), and a
    peer connects among them: every source holds as many, and the oldest connection
    gives its place, never the peer's, newer than three.  The mux took a source of the
    most by set (hash) order, not by age: the peer was pushed out in most tries."""
    monkeypatch.setattr(_tcpmux, "MAX_WAITING", 4)
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
    ):
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        for trial in range(8):
            async with contextlib.AsyncExitStack() as stack:

                async def stranger(group: int, i: int, trial: int = trial) -> None:
                    address = f"127.{group}.{trial}.{i + 1}"
                    peer = await FramedPeer.connect(mux.local_address, source=address)
                    stack.push_async_callback(peer.aclose)

                for i in range(3):
                    await stranger(1, i)
                await until(lambda: mux.statistics().waiting == 3)
                peer = await stack.enter_async_context(_peer(mux.local_address))
                await until(lambda: mux.statistics().waiting == 4)
                pushed_out = mux.statistics().unroutable
                for i in range(3):  # (fewer than MAX_WAITING: the peer's is not the oldest)
                    await stranger(2, i)
                    pushed_out += 1
                    await until(lambda: mux.statistics().unroutable == pushed_out)  # noqa: B023
                await peer.send_raw(frame(_for(agent)))
                with trio.fail_after(2):
                    answer = await peer.receive()
                assert answer is not None, f"the peer was pushed out (try {trial})"
            await until(lambda: mux.statistics().waiting == 0)


async def _flooded(peer: FramedPeer, flood: bytes, steps: MostPerStep, *, within: float) -> None:
    """``peer`` writes ``flood`` (its 4 * 32,768 empty frames after a check), and ``steps``
    counts the agent's deliveries until they are all in."""
    trio.lowlevel.add_instrument(steps)
    try:
        await peer.send_raw(flood)
        await until(lambda: steps.total > 4 * 32768, within=within)
    finally:
        trio.lowlevel.remove_instrument(steps)


@pytest.mark.skipif(TRACED, reason="a tracer (coverage) reads the flood too slowly for its bound")
async def test_a_connection_a_tcp_mux_hands_over_delivers_no_more_in_a_step_than_any() -> None:
    """An authenticated peer writes its check and then empty frames (32,768 in each 64 KiB
    read) to a TCP mux at once: the mux hands the connection over with the first read,
    whose frames the agent delivers READ_BATCH at a time, letting the other tasks run in
    between, as for a connection its own listener accepted (test_tcp_hostile's flood
    test).  It delivered them all and read on at once: two reads' worth, some 65,500
    datagrams, in one step (the suspects41c review)."""
    async with _mux_agent_and_peer() as (mux, agent, peer):
        share = _share(mux, agent)
        steps = MostPerStep(share, held=True)  # (the peer answers no check: its data held)
        flood = frame(_for(agent)) + b"\x00\x00" * (4 * 32768)
        await _flooded(peer, flood, steps, within=30)
        assert steps.most <= READ_BATCH


async def test_a_check_over_a_flooded_connection_reads_it_only_to_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """As above, each datagram delivered costing 0.1 ms (of virtual time: a slow machine),
    so that the flood outlasts the first RTOs of the agent's own check over the connection
    (which the peer never answers): the check, which goes once over TCP, does not read the
    connection at its RTOs, only when it is about to be given up, and the bound holds.  It
    read it at each RTO, a read's worth (32,768 frames) in one step; and, the read having
    taken past the next RTOs, read again at each of them with no turn between: 115,305
    datagrams in one step (the flakes5 review; under load the test above failed so)."""
    async with _mux_agent_and_peer() as (mux, agent, peer):
        steps = MostPerStep(_share(mux, agent), held=True, clock=autojump_clock, cost=1e-4)
        flood = frame(_for(agent)) + b"\x00\x00" * (4 * 32768)
        await _flooded(peer, flood, steps, within=600)
        assert steps.most <= READ_BATCH


async def test_a_check_crossed_over_a_flooded_connection_reads_it_no_sooner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """As above, but the peer's second check (nominating) crosses the agent's own check in
    flight on the pair, which asks that check sent again: over TCP nothing goes again, and
    the run reads the connection no sooner for it.  Woken for it, the run read the
    connection and handed over all that read framed, some 32,500 datagrams, in one step
    (the p42pass1 review)."""
    async with _mux_agent_and_peer() as (mux, agent, peer):
        await peer.send_raw(frame(_for(agent)))
        with trio.fail_after(5):
            while True:  # (its answer, and the agent's own check: never answered)
                datagram = await peer.receive()
                assert datagram is not None
                if stun.decode(datagram).message_class is stun.MessageClass.REQUEST:
                    break
        steps = MostPerStep(_share(mux, agent), held=True, clock=autojump_clock, cost=1e-4)
        flood = frame(_for(agent, nominate=True)) + b"\x00\x00" * (4 * 32768)
        await _flooded(peer, flood, steps, within=600)
        assert steps.most <= READ_BATCH
