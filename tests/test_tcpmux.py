"""One TCP port for many agents' passive ICE-TCP candidates (``trice.open_tcp_mux``,
``open_agent(mux=...)``), on loopback: server agents on one mux, each with a client agent
of its own that opens a connection from an active candidate; only TCP candidates are
signalled.  The mux hands each connection to the agent its first check asks."""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.lowlevel
from tcp_peer import FramedPeer

import trice
from trice import stun
from trice._trio import _tcp
from trice.ice._framing import frame

from loopback import connect_both, loopback_config, mux_in_a_task, open_fds

ACTIVE = (trice.TcpType.ACTIVE,)


def _client_config() -> trice.AgentConfig:
    config = loopback_config()
    return dataclasses.replace(
        config, network=dataclasses.replace(config.network, tcp_candidates=ACTIVE)
    )


def _signal_tcp(a: trice.Agent, b: trice.Agent) -> None:
    for here, there in ((a, b), (b, a)):
        params = there.local_parameters
        here.set_remote_parameters(params.ufrag, params.pwd, lite=params.lite)
        for candidate in there.local_candidates:
            if candidate.protocol == "tcp":
                here.add_remote_candidate(candidate)
        here.add_remote_candidate(None)


@asynccontextmanager
async def _server_and_client(
    mux: trice.TcpMux | trice.UdpMux | tuple[trice.UdpMux | trice.TcpMux, ...],
    **server: object,
) -> AsyncIterator[tuple[trice.Agent, trice.Connection, trice.Connection]]:
    """A server agent on ``mux`` and a client agent with an active TCP candidate, connected
    over TCP: (the server agent, its connection, the client's)."""
    async with (
        trice.open_agent(loopback_config(**server), controlling=False, mux=mux) as s,  # type: ignore[arg-type]
        trice.open_agent(_client_config(), controlling=True) as c,
    ):
        await s.wait_gathering_complete()
        await c.wait_gathering_complete()
        _signal_tcp(s, c)
        cs, cc = await connect_both(s, c, within=20)
        yield s, cs, cc


async def test_thirty_agents_on_one_tcp_mux_each_get_their_own_connection() -> None:
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        address = mux.local_address
        results: dict[int, tuple[list[bytes], list[bytes]]] = {}

        async def one(i: int) -> None:
            async with _server_and_client(mux) as (server, to_client, to_server):
                (candidate,) = server.local_candidates
                assert (candidate.protocol, candidate.tcp_type) == ("tcp", trice.TcpType.PASSIVE)
                assert candidate.transport_address == address
                assert to_client.selected_pair.local == candidate
                with trio.fail_after(10):
                    for n in range(5):
                        await to_server.send(b"%d to server %d" % (i, n))
                        await to_client.send(b"%d to client %d" % (i, n))
                    got_server = [await to_client.receive() for _ in range(5)]
                    got_client = [await to_server.receive() for _ in range(5)]
                results[i] = (got_server, got_client)
                assert mux._owner(server.local_parameters.ufrag) is not None

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, i)
        for i, (got_server, got_client) in results.items():
            assert got_server == [b"%d to server %d" % (i, n) for n in range(5)]
            assert got_client == [b"%d to client %d" % (i, n) for n in range(5)]
        assert len(results) == 30
        stats = mux.statistics()
        assert (stats.agents, stats.waiting, stats.routed, stats.unroutable) == (0, 0, 30, 0)


async def test_an_agent_on_a_udp_and_a_tcp_mux_signals_one_candidate_on_each() -> None:
    async with trice.open_udp_mux("127.0.0.1") as udp, trice.open_tcp_mux("127.0.0.1") as tcp:
        async with _server_and_client((udp, tcp)) as (server, to_client, to_server):
            candidates = sorted(
                (c.protocol, c.transport_address, c.tcp_type) for c in server.local_candidates
            )
            assert candidates == [
                ("tcp", tcp.local_address, trice.TcpType.PASSIVE),
                ("udp", udp.local_address, None),
            ]
            assert to_client.selected_pair.local.protocol == "tcp"
            await to_server.send(b"over the tcp mux")
            with trio.fail_after(5):
                assert await to_client.receive() == b"over the tcp mux"


async def test_connections_a_tcp_mux_handed_over_outlast_it() -> None:
    """The mux's block ends (in a task of its own) while its agents are open: the
    connections it handed them go on."""
    async with mux_in_a_task(lambda: trice.open_tcp_mux("127.0.0.1")) as (mux, scope, ended):
        async with _server_and_client(mux) as (_, to_client, to_server):
            scope.cancel()
            with trio.fail_after(5):
                await ended.wait()
                assert mux.closed and mux.statistics().agents == 0
                await to_server.send(b"after the mux closed")
                assert await to_client.receive() == b"after the mux closed"


async def test_an_ice_restart_moves_the_agent_to_its_new_ufrag_on_the_mux() -> None:
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        async with _server_and_client(mux) as (server, _, _):
            old = server.local_parameters.ufrag
            share = mux._owner(old)
            assert share is not None
            new = server.restart()
            assert mux._owner(old) is None and mux._owner(new.ufrag) is share


async def test_two_agents_may_not_share_a_ufrag_on_a_tcp_mux() -> None:
    config = loopback_config(ufrag="sameUfrag", pwd="p" * 22)
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        async with trice.open_agent(config, controlling=False, mux=mux):
            with pytest.raises(trice.UsageError, match="uses this TCP mux already"):
                async with trice.open_agent(config, controlling=False, mux=mux):
                    pass


def test_open_tcp_mux_refuses_what_it_cannot_listen_on() -> None:
    for host, port in (("localhost", 0), ("0.0.0.0", 0), ("127.0.0.1", 70000)):
        with pytest.raises(trice.UsageError):
            trice.open_tcp_mux(host, port)
    with pytest.raises(TypeError, match="TcpMux"):
        trice.open_agent(controlling=True, mux=[object()])  # type: ignore[list-item]


# ------------------------------------------------------------------ what the mux does not route


def _frame(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


async def _closed_by_mux(address: tuple[str, int], data: bytes) -> None:
    """A raw connection to the mux that sends ``data``: the mux closes it."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            if data:
                await stream.send_all(data)
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    return


def _request(ufrag: str, pwd: str = "x" * 22) -> bytes:
    """A check for the agent of ``ufrag``, signed with ``pwd`` (by default, not its own)."""
    message = stun.Message(
        stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=[stun.Username(ufrag + ":peer")]
    )
    return message.encode(integrity_key=stun.short_term_key(pwd), fingerprint=True)


@pytest.fixture
def quick_prove(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tcp, "PROVE_WITHIN", 0.2)


async def test_the_mux_closes_what_it_cannot_route(quick_prove: None) -> None:
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        async with trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent:
            ufrag = agent.local_parameters.ufrag
            address = mux.local_address
            await _closed_by_mux(address, _frame(_request("nobodyHere")))  # (unknown ufrag)
            await _closed_by_mux(address, _frame(b"\x80" + bytes(30)))  # (not STUN)
            response = stun.Message(stun.Method.BINDING, stun.MessageClass.SUCCESS).encode()
            await _closed_by_mux(address, _frame(response))  # (STUN, but no request)
            await _closed_by_mux(address, b"")  # (silence, past PROVE_WITHIN)
            await _closed_by_mux(address, _frame(_request(ufrag))[:5])  # (half, then silence)
            # A request for the agent that is not signed with its password: the ufrag travels
            # in clear, and a stranger must not hold the agent's places for connections.
            await _closed_by_mux(address, _frame(_request(ufrag)))
            stats = mux.statistics()
            assert (stats.routed, stats.unroutable, stats.waiting) == (0, 6, 0)
            assert agent.statistics().tcp_accepted == 0
            # Signed right, it is routed, and the agent answers it.
            with trio.fail_after(5):
                stream = await trio.open_tcp_stream(*address)
                async with stream:
                    request = _request(ufrag, agent.local_parameters.pwd)
                    await stream.send_all(_frame(request))
                    answer = await stream.receive_some(65536)
            assert stun.decode(answer[2:]).message_class is not stun.MessageClass.REQUEST
            assert stun.decode(answer[2:]).transaction_id == stun.decode(request).transaction_id
            assert mux.statistics().routed == 1
            assert agent.statistics().tcp_accepted == 1


async def test_past_max_waiting_a_new_connection_takes_the_oldest_ones_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At ``MAX_WAITING`` connections waiting for their first frame, the oldest is closed
    (counted unroutable) and the new one waits in its place."""
    from trice._trio import _tcpmux

    monkeypatch.setattr(_tcpmux, "MAX_WAITING", 2)
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        address = mux.local_address
        with trio.fail_after(5):
            first = await trio.open_tcp_stream(*address)
            while mux.statistics().waiting < 1:
                await trio.lowlevel.checkpoint()
            second = await trio.open_tcp_stream(*address)
            while mux.statistics().waiting < 2:
                await trio.lowlevel.checkpoint()
            third = await trio.open_tcp_stream(*address)
            assert await first.receive_some(1) == b""  # (the oldest: closed)
        stats = mux.statistics()
        assert (stats.unroutable, stats.waiting) == (1, 2)
        for stream in (first, second, third):
            await stream.aclose()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_leaving_closes_the_mux_and_every_connection_it_held() -> None:
    before = open_fds()
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        async with _server_and_client(mux):
            pass
        raw = socket.create_connection(mux.local_address)
        with trio.fail_after(5):  # (the mux holds it, waiting for its first frame)
            while mux.statistics().waiting < 1:
                await trio.lowlevel.checkpoint()
    raw.close()
    assert open_fds() <= before


async def test_a_stranger_copying_the_peers_check_to_its_own_connection_gets_no_data_in() -> None:
    """A stranger saw the client's check go by (signed with the server's password, it can
    be sent again as it is), sends the copy to the mux over a connection of its own (it is
    answered: the copy is authentic), and data behind it.  The server takes none of that
    data as the client's: it is held until an answer to the server's own check over that
    connection, signed with the client's password, which the stranger cannot give.  The
    mux checked the first frame only, and the agent took the data of any connection a
    check came over (the suspects43 review)."""
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        _server_and_client(mux) as (server, on_server, on_client),
    ):
        remote = server.remote_parameters
        assert remote is not None
        check = stun.Message(
            stun.Method.BINDING,
            stun.MessageClass.REQUEST,
            attributes=(
                stun.Username(f"{server.local_parameters.ufrag}:{remote.ufrag}"),
                stun.Priority(1_845_494_015),
                stun.IceControlling(0x1234),
            ),
        ).encode(integrity_key=stun.short_term_key(server.local_parameters.pwd), fingerprint=True)
        before = server.statistics()
        stranger = await FramedPeer.connect(mux.local_address)
        try:
            await stranger.send_raw(frame(check))
            await stranger.answered()
            await stranger.send_raw(frame(b"INJECTED by a stranger") + frame(check))
            await stranger.answered()  # (the server read all that came before)
            await on_client.send(b"from the peer")
            with trio.fail_after(5):
                assert await on_server.receive() == b"from the peer"
            after = server.statistics()
            assert after.datagrams_received == before.datagrams_received + 1
            assert after.tcp_accepted == before.tcp_accepted + 1  # (the stranger's)
        finally:
            await stranger.aclose()
