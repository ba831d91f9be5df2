"""trice against libnice (GStreamer's webrtcbin's ICE agent) on loopback.

libnice runs in ``tests/peers/libnice_peer.py`` under the system's Python (its ``gi``), a
subprocess driven through the line protocol of ``tests/peers/harness.py``; trice runs in the
test's own trio run, as in ``test_interop.py``, whose session (``_run_with_peer``: connect,
then 100 datagrams each way, all of which must arrive) most tests here reuse.  The tests
skip, with the reason, where no Python imports libnice through GObject introspection.

What libnice does differently, as seen here (libnice 0.1.21, RFC 5245 mode, regular
nomination): controlled, it selects a pair nominated to it only once its own (triggered)
check of that pair has succeeded, on its next 20 ms pacing tick, so it says "connected" some
20 ms after trice; controlling, it nominates some 60 ms after the start.  As an ICE lite
agent it still sends checks (triggered ones), which RFC 8445 §2.5 says a lite agent never
does; trice answers them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections.abc import Iterator

import pytest
import trio
from test_interop import (
    COUNT,
    TIMEOUT,
    _connected_with,
    _describe_to,
    _exchange_round,
    _in_thread_expect,
    _run_with_peer,
    _take_description,
)

import trice
from trice._trio._tcp import TcpTransport

from coturn import Coturn
from loopback import HAS_IPV6, loopback_config, state_of, until
from peers.harness import (
    ROLE_IDS,
    ROLES,
    Peer,
    PeerUnavailable,
    all_exchanged,
    connect_pair,
    exchange,
    libnice_python,
    peer_command,
    peer_pair,
    restart_pair,
)

pytestmark = pytest.mark.interop

LIBNICE = "libnice"


@pytest.fixture(autouse=True)
def libnice_available() -> None:
    """Skip, with the reason, where no Python here imports libnice through ``gi``."""
    try:
        libnice_python()
    except PeerUnavailable as exc:
        pytest.skip(f"libnice peer unavailable: {exc}")


@pytest.fixture(autouse=True)
def trace_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every check and STUN message of trice lands in the report of a failing test."""
    caplog.set_level(trice.TRACE, logger="trice")
    yield


def _address(line: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    return ipaddress.ip_address(line.removeprefix("candidate:").split()[4])


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_libnice_gathers_only_loopback(ipv6: bool) -> None:
    """libnice enumerates every interface unless told its addresses: the peer names only
    the loopback one, and gathers one host candidate on it, nothing on the real links."""
    if ipv6 and not HAS_IPV6:
        pytest.skip("no IPv6 loopback (::1) here")
    with Peer(peer_command(LIBNICE, controlling=True, ipv6=ipv6), name=LIBNICE) as peer:
        params, *candidates, end = peer.local_description()
    assert params["type"] == "parameters" and params["ufrag"] and params["pwd"]
    assert params["lite"] is False
    assert end == {"type": "end-of-candidates"}
    assert len(candidates) == 1, candidates
    line = candidates[0]["candidate"]
    assert _address(line) == ipaddress.ip_address("::1" if ipv6 else "127.0.0.1"), line
    assert line.split()[2].lower() == "udp" and " typ host" in line, line


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
async def test_ipv4(trice_controlling: bool) -> None:
    await _run_with_peer(LIBNICE, trice_controlling=trice_controlling)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1) here")
@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
async def test_ipv6(trice_controlling: bool) -> None:
    await _run_with_peer(LIBNICE, trice_controlling=trice_controlling, ipv6=True)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
async def test_trickle(trice_controlling: bool) -> None:
    """Both sides start with the other's parameters but no candidate: neither can connect
    (libnice says nothing before a ``sync`` behind ``start``, trice stays checking); the
    candidates and end-of-candidates then trickle in to both, and they connect."""
    cmd = peer_command(LIBNICE, controlling=not trice_controlling)
    with Peer(cmd, name=LIBNICE) as peer:
        async with trice.open_agent(loopback_config(), controlling=trice_controlling) as agent:
            params, *theirs = await trio.to_thread.run_sync(peer.local_description, TIMEOUT)
            with trio.fail_after(TIMEOUT):
                await agent.wait_gathering_complete()
            ours = agent.local_parameters
            peer.send({"type": "parameters", "ufrag": ours.ufrag, "pwd": ours.pwd, "lite": False})
            agent.set_remote_parameters(params["ufrag"], params["pwd"])
            peer.send({"type": "start"})
            connections: list[trice.Connection] = []

            async def connect() -> None:
                connections.append(await agent.connect())

            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(connect)
                    await trio.sleep(0.2)  # (ten of libnice's pacing ticks)
                    peer.send({"type": "sync"})
                    # ("connected" here, before "synced", fails the expectation.)
                    await trio.to_thread.run_sync(peer.expect, "synced", TIMEOUT)
                    assert state_of(agent) is trice.ConnectionState.CHECKING
                    assert not connections
                    for candidate in agent.local_candidates:
                        peer.send({"type": "candidate", "candidate": candidate.to_sdp()})
                    peer.send({"type": "end-of-candidates"})
                    for msg in theirs:
                        line = msg.get("candidate")
                        agent.add_remote_candidate(
                            None if line is None else trice.Candidate.from_sdp(line)
                        )
            (conn,) = connections
            assert conn.selected_pair.remote.address == "127.0.0.1"
            connected = await trio.to_thread.run_sync(peer.expect, "connected", TIMEOUT)
            assert _address(connected["remote"]) == ipaddress.ip_address("127.0.0.1")
            await _exchange_round(conn, peer, LIBNICE, 0)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
async def test_ice_restart(trice_controlling: bool) -> None:
    """Both restart ICE (libnice's restart_stream: new credentials, the same candidates),
    signal anew and connect again; data flows after."""
    await _run_with_peer(LIBNICE, trice_controlling=trice_controlling, restart=True)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=["told-controlling", "told-controlled"])
async def test_trice_full_to_libnice_lite(trice_controlling: bool) -> None:
    # (libnice's lite agent sends triggered checks, which trice answers.)
    await _run_with_peer(
        LIBNICE, trice_controlling=trice_controlling, peer_lite=True, peer_controlling=False
    )


@pytest.mark.parametrize("peer_controlling", ROLES, ids=["told-controlling", "told-controlled"])
async def test_libnice_full_to_trice_lite(peer_controlling: bool) -> None:
    # (Told controlled, the libnice peer takes the controlling role on hearing that trice
    # is lite: libnice itself has no notion of a lite remote.)
    await _run_with_peer(
        LIBNICE, trice_controlling=False, trice_lite=True, peer_controlling=peer_controlling
    )


async def test_trice_aggressive_nomination() -> None:
    await _run_with_peer(LIBNICE, trice_controlling=True, aggressive=True)


async def test_libnice_aggressive_nomination() -> None:
    """libnice's own default, aggressive nomination, controlling: trice, controlled, takes
    the first nominated pair that works."""
    cmd = peer_command(LIBNICE, controlling=True, extra=["--aggressive"])
    with peer_pair(cmd, peer_command("trice", controlling=False)) as (a, b):
        connected = connect_pair(a, b, TIMEOUT)
        for msg in (connected.a, connected.b):
            assert _address(msg["local"]).is_loopback and _address(msg["remote"]).is_loopback
        assert exchange(a, b, COUNT) == (all_exchanged(COUNT),) * 2


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
async def test_libnice_answers_consent(trice_controlling: bool) -> None:
    """RFC 7675: trice's consent checks, every quarter second, are answered by libnice for
    three seconds (three times the consent trice allows itself), and data flows after."""
    await _run_with_peer(LIBNICE, trice_controlling=trice_controlling, linger=3.0)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
async def test_relay_to_relay(trice_controlling: bool, coturn: Coturn) -> None:
    """Both relay-only through one coturn over UDP (libnice's set_relay_info and
    force-relay): relay to relay on either side, every datagram arrives."""
    await _run_with_peer(LIBNICE, trice_controlling=trice_controlling, relay=coturn)


# --------------------------------------------------------------------------- peer programs


@pytest.mark.parametrize(
    ("kind_a", "kind_b"),
    [("libnice", "libnice"), ("trice", "libnice"), ("libnice", "trice")],
    ids=["libnice-libnice", "trice-libnice", "libnice-trice"],
)
def test_through_the_harness(kind_a: str, kind_b: str) -> None:
    """The peer programs, as the benchmarks run them: connect, data, restart, data."""
    with peer_pair(
        peer_command(kind_a, controlling=True), peer_command(kind_b, controlling=False)
    ) as (a, b):
        connected = connect_pair(a, b, TIMEOUT)
        for msg in (connected.a, connected.b):
            assert msg["elapsed_ms"] > 0
            assert _address(msg["local"]).is_loopback and _address(msg["remote"]).is_loopback
        assert exchange(a, b, COUNT) == (all_exchanged(COUNT),) * 2
        again = restart_pair(a, b, TIMEOUT)
        for msg in (again.a, again.b):
            assert msg["elapsed_ms"] > 0
        assert exchange(a, b, COUNT) == (all_exchanged(COUNT),) * 2
        assert exchange(a, b, 5) == (all_exchanged(5),) * 2


# -- ICE-TCP alone (RFC 6544): libnice's active and passive candidates ----------------------


def _tcp_only(*kinds: trice.TcpType, timing: trice.Timing | None = None) -> trice.AgentConfig:
    config = loopback_config() if timing is None else loopback_config(timing=timing)
    network = dataclasses.replace(config.network, tcp_candidates=kinds, udp=False)
    return dataclasses.replace(config, network=network)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize(
    "kinds",
    [
        (trice.TcpType.ACTIVE,),
        (trice.TcpType.PASSIVE,),
        (trice.TcpType.ACTIVE, trice.TcpType.PASSIVE),
    ],
    ids=["active", "passive", "both"],
)
async def test_ice_tcp_alone(trice_controlling: bool, kinds: tuple[trice.TcpType, ...]) -> None:
    """Over ICE-TCP candidates alone, no UDP, trice's active, passive or both against
    libnice's: they connect and exchange data (the rfc6544 review)."""
    cmd = peer_command(LIBNICE, not trice_controlling, extra=["--tcp-only"])
    with Peer(cmd, name="libnice-tcp") as peer:
        async with trice.open_agent(_tcp_only(*kinds), controlling=trice_controlling) as agent:
            connection, _ = await _connected_with(agent, peer)
            assert connection.selected_pair.local.protocol == "tcp"
            await _exchange_round(connection, peer, "libnice-tcp", 0)


async def test_after_a_restart_libnices_old_connection_to_the_passive_candidate_is_closed() -> None:
    """trice (controlled, passive only) and libnice (controlling, active) over ICE-TCP, then
    both restart: libnice opens a new connection for the new generation, leaves its first
    open, and signals that one's far end as ``typ prflx tcptype active``.  The first is
    closed once the new generation carries the data (docs/guide/tcp.rst); it was kept, its
    address known, and each restart kept one more (the rfc6544 review)."""
    timing = trice.Timing(keepalive_interval=0.5, disconnected_timeout=1.0, failed_timeout=2.0)
    config = _tcp_only(trice.TcpType.PASSIVE, timing=timing)
    with Peer(peer_command(LIBNICE, True, extra=["--tcp-only"]), name="libnice-tcp") as peer:
        async with trice.open_agent(config, controlling=False) as agent:
            connection, _ = await _connected_with(agent, peer)
            (transport,) = [t for t in agent._transports.values() if isinstance(t, TcpTransport)]
            first = connection.selected_pair.remote.port
            agent.restart()
            peer.send({"type": "restart"})
            again = await trio.to_thread.run_sync(peer.local_description, TIMEOUT)
            _describe_to(peer, agent, 4)
            _take_description(agent, again)
            with trio.fail_after(TIMEOUT):
                await agent.connect()
            await _in_thread_expect(peer, "connected")
            await _exchange_round(connection, peer, "libnice-tcp", 0)
            second = connection.selected_pair.remote.port
            assert second != first  # (libnice's new connection)
            assert any("prflx" in m.get("candidate", "") for m in again)

            def held() -> list[int]:
                return [link.address[1] for link in transport._links.values()]

            # (Closed once data from the pair of before counts no more: failed_timeout, 2 s,
            # after the new selection.)
            with contextlib.suppress(trio.TooSlowError):
                await until(lambda: held() == [second], within=10)
            assert held() == [second]
