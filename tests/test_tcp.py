"""ICE-TCP (RFC 6544) between two trice agents on loopback: ``NetworkConfig.tcp_candidates``.

One agent offers an active candidate, the other a passive one (a listening socket); only
those are signalled, as if a firewall let nothing but TCP through, and the pair found must
carry data both ways.  With UDP signalled too, UDP wins.  Hostile and unlucky peers are in
``test_tcp_hostile.py``, the pure core's rules in ``test_tcp_core.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import trice
from trice import stun
from trice._trio import _gather
from trice._trio._tcp import TcpTransport
from trice._trio._transport import RTO_MAX_MS, RTO_MAX_MS_UNCAPPED, STUN_MAGIC, UdpTransport
from trice.ice._framing import FrameReader, frame

from loopback import (
    HAS_IPV6,
    answer_check,
    connect_both,
    gathered_pair,
    hold_readers,
    loopback_config,
    send_wide_views,
    server_socket,
    signal,
    stun_server,
    until,
    wait_for_state,
)
from natlab import entered, lone_namespace, require_natlab

ACTIVE = (trice.TcpType.ACTIVE,)
PASSIVE = (trice.TcpType.PASSIVE,)
BOTH = (trice.TcpType.ACTIVE, trice.TcpType.PASSIVE)
COUNT = 100
FAMILIES = [
    pytest.param(False, id="ipv4"),
    pytest.param(
        True, id="ipv6", marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
    ),
]


def tcp_config(
    tcp: tuple[trice.TcpType, ...], *, ipv6: bool = False, **kwargs: object
) -> trice.AgentConfig:
    config = loopback_config(ipv6=ipv6, **kwargs)
    network = dataclasses.replace(config.network, tcp_candidates=tcp)
    return dataclasses.replace(config, network=network)


def is_tcp(candidate: trice.Candidate) -> bool:
    return candidate.protocol == "tcp"


def signal_only(a: trice.Agent, b: trice.Agent, keep: object = is_tcp) -> None:
    """Hand each agent the other's parameters and the candidates ``keep`` accepts."""
    assert callable(keep)
    for here, there in ((a, b), (b, a)):
        params = there.local_parameters
        here.set_remote_parameters(params.ufrag, params.pwd, lite=params.lite)
        for candidate in there.local_candidates:
            if keep(candidate):
                here.add_remote_candidate(candidate)
        here.add_remote_candidate(None)


async def exchange(ca: trice.Connection, cb: trice.Connection, count: int = COUNT) -> None:
    """``count`` datagrams each way, each received in order and intact."""
    with trio.fail_after(10):
        for i in range(count):
            await ca.send(b"a%d" % i)
            await cb.send(b"b%d" % i)
        assert [await cb.receive() for _ in range(count)] == [b"a%d" % i for i in range(count)]
        assert [await ca.receive() for _ in range(count)] == [b"b%d" % i for i in range(count)]


@pytest.mark.parametrize("ipv6", FAMILIES)
@pytest.mark.parametrize(
    "active_controls", [True, False], ids=["active-controls", "passive-controls"]
)
async def test_an_active_and_a_passive_candidate_connect_and_carry_data(
    ipv6: bool, active_controls: bool
) -> None:
    async with (
        trice.open_agent(tcp_config(ACTIVE, ipv6=ipv6), controlling=active_controls) as a,
        trice.open_agent(tcp_config(PASSIVE, ipv6=ipv6), controlling=not active_controls) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        loopback = "::1" if ipv6 else "127.0.0.1"
        (a_tcp,) = [c for c in a.local_candidates if is_tcp(c)]
        (b_tcp,) = [c for c in b.local_candidates if is_tcp(c)]
        assert (a_tcp.tcp_type, a_tcp.address, a_tcp.port) == (trice.TcpType.ACTIVE, loopback, 9)
        assert (b_tcp.tcp_type, b_tcp.address) == (trice.TcpType.PASSIVE, loopback)
        assert b_tcp.port != 9
        signal_only(a, b)
        ca, cb = await connect_both(a, b)

        # a's side: its check came from a port of its own, so its valid candidate is a
        # peer-reflexive one (the active candidate it came from as the related address).
        pair = ca.selected_pair
        assert pair.local.protocol == "tcp" and pair.local.type is trice.CandidateType.PRFLX
        assert pair.local.tcp_type is trice.TcpType.ACTIVE
        assert (pair.local.related_address, pair.local.related_port) == (loopback, 9)
        assert pair.remote == b_tcp
        # b's side: its own passive candidate, and a's as learned from the connection.
        pair_b = cb.selected_pair
        assert pair_b.local == b_tcp
        assert pair_b.remote.type is trice.CandidateType.PRFLX
        assert pair_b.remote.tcp_type is trice.TcpType.ACTIVE
        assert pair_b.remote.transport_address == pair.local.transport_address
        await exchange(ca, cb)
        await send_wide_views(ca, cb)
        stats = b.statistics()
        assert (stats.tcp_accepted, stats.tcp_refused, stats.tcp_unproven) == (1, 0, 0)
        assert a.statistics().tcp_accepted == 0


async def test_udp_is_preferred_when_it_works_too() -> None:
    """Both agents offer UDP and both kinds of TCP candidate: the UDP pair is selected (a
    TCP host candidate ranks below the UDP one of its address)."""
    async with gathered_pair(tcp_config(BOTH)) as (a, b):
        kinds = sorted((c.protocol, c.tcp_type) for c in a.local_candidates)
        assert kinds == [
            ("tcp", trice.TcpType.ACTIVE),
            ("tcp", trice.TcpType.PASSIVE),
            ("udp", None),
        ]
        (udp,) = [c for c in a.local_candidates if not is_tcp(c)]
        assert all(c.priority < udp.priority for c in a.local_candidates if is_tcp(c))
        signal_only(a, b, keep=lambda c: True)
        ca, cb = await connect_both(a, b)
        assert ca.selected_pair.local.protocol == cb.selected_pair.local.protocol == "udp"
        await exchange(ca, cb, 10)


@pytest.mark.parametrize("active_controls", [True, False], ids=["a-controls", "b-controls"])
async def test_both_kinds_on_both_sides_over_tcp_only(active_controls: bool) -> None:
    """Each agent offers an active and a passive candidate: whichever pair wins carries the
    data (both directions of connection are possible)."""
    async with (
        trice.open_agent(tcp_config(BOTH), controlling=active_controls) as a,
        trice.open_agent(tcp_config(BOTH), controlling=not active_controls) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal_only(a, b)
        ca, cb = await connect_both(a, b)
        for conn in (ca, cb):
            assert conn.selected_pair.local.protocol == "tcp"
            assert conn.selected_pair.remote.protocol == "tcp"
        assert ca.selected_pair.local.transport_address == cb.selected_pair.remote.transport_address
        await exchange(ca, cb)


async def test_an_ice_lite_agent_offers_a_passive_candidate_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lite server behind a TCP-only firewall: it listens (it opens no connection, so asked
    for both kinds it gathers the passive one, and says so), and a full active peer connects
    to it."""
    caplog.set_level(logging.INFO, logger="trice")
    async with gathered_pair(tcp_config(ACTIVE), tcp_config(BOTH, lite=True)) as (a, b):
        assert "ICE-lite opens no connection: no active ICE-TCP candidate" in caplog.text
        assert [c.tcp_type for c in b.local_candidates if is_tcp(c)] == [trice.TcpType.PASSIVE]
        signal_only(a, b)
        ca, cb = await connect_both(a, b)
        assert cb.selected_pair.local.tcp_type is trice.TcpType.PASSIVE
        await exchange(ca, cb)


async def test_the_passive_listener_takes_a_port_of_the_port_range() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tcp_config(PASSIVE)
    config = dataclasses.replace(
        config, network=dataclasses.replace(config.network, port_range=(port, port))
    )
    async with trice.open_agent(config, controlling=False) as agent:
        await agent.wait_gathering_complete()
        (passive,) = [c for c in agent.local_candidates if is_tcp(c)]
        assert passive.port == port
        # Listening there: a connection opens.
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.aclose()


async def test_tcp_candidates_are_not_gathered_under_the_nohost_policy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = tcp_config(BOTH, transport_policy=trice.TransportPolicy.NOHOST)
    with caplog.at_level(logging.INFO, logger="trice"):
        async with trice.open_agent(config, controlling=True) as agent:
            await agent.wait_gathering_complete()
            assert not [c for c in agent.local_candidates if is_tcp(c)]
    assert "no ICE-TCP candidates of its own (policy nohost)" in caplog.text  # (not silent)


@pytest.mark.parametrize("active_controls", [True, False], ids=["a-controls", "b-controls"])
async def test_with_udp_off_only_tcp_host_candidates_are_gathered_and_they_connect(
    active_controls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """``NetworkConfig(udp=False)`` (Pion's NetworkTypes of TCP alone): no UDP socket, no UDP
    host candidate and no server-reflexive one (a STUN server is given, and said to be of
    no use), on both sides; everything signalled, and the TCP pair carries the data.  A
    gathering anew keeps to TCP too."""
    caplog.set_level(logging.INFO, logger="trice")
    stun_url = "stun:127.0.0.1:%d"

    def tcp_only(tcp: tuple[trice.TcpType, ...], port: int) -> trice.AgentConfig:
        config = tcp_config(tcp, ice_servers=[trice.IceServer(urls=[stun_url % port])])
        return dataclasses.replace(config, network=dataclasses.replace(config.network, udp=False))

    with await server_socket() as sock:
        port = sock.getsockname()[1]
        async with (
            trio.open_nursery() as nursery,
            trice.open_agent(tcp_only(ACTIVE, port), controlling=active_controls) as a,
            trice.open_agent(tcp_only(PASSIVE, port), controlling=not active_controls) as b,
        ):
            nursery.start_soon(stun_server, sock, ("203.0.113.7", 40000))
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            for agent, kind in ((a, trice.TcpType.ACTIVE), (b, trice.TcpType.PASSIVE)):
                assert [(c.protocol, c.type, c.tcp_type) for c in agent.local_candidates] == [
                    ("tcp", trice.CandidateType.HOST, kind)
                ]
                assert not [t for t in agent._transports.values() if isinstance(t, UdpTransport)]
            assert "no server-reflexive candidates (no UDP host socket)" in caplog.text
            signal_only(a, b, keep=lambda c: True)
            ca, cb = await connect_both(a, b)
            assert ca.selected_pair.local.protocol == cb.selected_pair.local.protocol == "tcp"
            await exchange(ca, cb, 10)
            a.restart(regather=True)
            with trio.fail_after(5):
                await a.wait_gathering_complete()
            assert {c.protocol for c in a.local_candidates} == {"tcp"}
            nursery.cancel_scope.cancel()


async def test_udp_off_is_refused_where_it_would_leave_nothing_to_gather() -> None:
    """``udp=False`` needs a TCP host candidate to gather (or a TCP mux's; for a lite agent,
    a passive one); not under NOHOST, nor on a UDP mux.  The relay policy needs none."""
    with pytest.raises(trice.ConfigError, match="udp must be True or False"):
        trice.NetworkConfig(udp="no", tcp_candidates=PASSIVE)  # type: ignore[arg-type]
    bare = trice.AgentConfig(network=trice.NetworkConfig(udp=False))
    with pytest.raises(trice.ConfigError, match="name them in tcp_candidates"):
        trice.open_agent(bare, controlling=True)
    trice.open_agent(
        dataclasses.replace(bare, transport_policy=trice.TransportPolicy.RELAY), controlling=True
    )
    network = trice.NetworkConfig(udp=False, tcp_candidates=ACTIVE)
    with pytest.raises(trice.ConfigError, match="use TransportPolicy"):
        trice.AgentConfig(network=network, transport_policy=trice.TransportPolicy.NOHOST)
    with pytest.raises(trice.ConfigError, match="needs a passive ICE-TCP candidate"):
        trice.open_agent(trice.AgentConfig(network=network, lite=True), controlling=False)
    async with trice.open_udp_mux("127.0.0.1") as mux:
        with pytest.raises(trice.ConfigError, match="UDP mux for an agent that gathers no UDP"):
            trice.open_agent(trice.AgentConfig(network=network), controlling=True, mux=mux)


async def test_udp_off_on_a_tcp_mux_gathers_the_muxs_candidate_alone() -> None:
    """An agent on a TCP mux with ``udp=False`` names no tcp_candidates of its own (the mux
    gives it its passive candidate): accepted, and that candidate is all it gathers."""
    config = trice.AgentConfig(network=trice.NetworkConfig(udp=False), lite=True)
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(config, controlling=False, mux=mux) as agent,
    ):
        await agent.wait_gathering_complete()
        assert [(c.protocol, c.tcp_type) for c in agent.local_candidates] == [
            ("tcp", trice.TcpType.PASSIVE)
        ]


async def test_tcp_candidates_go_out_under_mdns_names_and_connect() -> None:
    """Under ``QUERY_AND_GATHER`` the TCP host candidates are named too; the peer resolves
    the passive one's name and connects to it."""

    def named(tcp: tuple[trice.TcpType, ...]) -> trice.AgentConfig:
        config = tcp_config(tcp)
        network = dataclasses.replace(config.network, mdns=trice.MdnsMode.QUERY_AND_GATHER)
        return dataclasses.replace(config, network=network)

    async with (
        trice.open_agent(named(ACTIVE), controlling=True) as a,
        trice.open_agent(named(PASSIVE), controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        (b_tcp,) = [c for c in b.local_candidates if is_tcp(c)]
        assert b_tcp.address.endswith(".local")
        signal_only(a, b)
        ca, cb = await connect_both(a, b)
        assert ca.selected_pair.remote.address == "127.0.0.1"
        assert ca.selected_pair.remote.tcp_type is trice.TcpType.PASSIVE
        await exchange(ca, cb, 10)


def test_config_rejects_simultaneous_open_and_other_values() -> None:
    with pytest.raises(trice.ConfigError, match="simultaneous-open"):
        trice.NetworkConfig(tcp_candidates=[trice.TcpType.SO])
    with pytest.raises(trice.ConfigError, match="not a TcpType"):
        trice.NetworkConfig(tcp_candidates=["listen"])  # type: ignore[list-item]
    with pytest.raises(trice.ConfigError, match="sequence"):
        trice.NetworkConfig(tcp_candidates="passive")  # type: ignore[arg-type]
    # (The enum's values do too, as JSON gives them.)
    network = trice.NetworkConfig(
        tcp_candidates=["passive", trice.TcpType.ACTIVE, "passive"]  # type: ignore[list-item]
    )
    assert network.tcp_candidates == BOTH


async def test_an_ice_restart_over_tcp_keeps_the_connection_and_carries_data_again() -> None:
    """After a restart the checks go over the connection already open (the active candidate
    opens no second one to the same address), and data flows over the pair selected anew."""
    async with gathered_pair(tcp_config(ACTIVE), tcp_config(PASSIVE)) as (a, b):
        signal_only(a, b)
        ca, cb = await connect_both(a, b)
        before = ca.selected_pair
        a.restart()
        b.restart()
        await exchange(ca, cb, 3)  # (over the pair of before, meanwhile)
        signal_only(a, b)
        ca2, cb2 = await connect_both(a, b)
        assert (ca2, cb2) == (ca, cb)
        assert ca.selected_pair.local.transport_address == before.local.transport_address
        assert ca.selected_pair.remote == before.remote
        await exchange(ca, cb)
        assert b.statistics().tcp_accepted == 1  # (one connection, from start to end)


async def test_an_ice_tcp_path_back_after_an_outage_carries_again_within_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A path that goes away for 16 s and comes back, before ``failed``: over ICE-TCP the
    agents are connected again within about a second of its return, as over UDP.  (TCP's
    own backoff, doubling, had its next copy due some 25 s after the path went, past
    consent: capped at a second, ``RTO_MAX_MS``, while the agent hears nothing; not else,
    where a round trip over a second would have every message go twice.)  In a namespace of
    its own (root), the path cut on ``lo``'s ingress, where its two addresses' packets go."""
    require_natlab(turn=False)
    timing = trice.Timing()  # (the defaults: disconnected after 5 s, failed after 30)
    with lone_namespace("tcpout") as ns:
        for address in ("10.1.0.1", "10.1.0.2"):
            ns.ip("addr", "add", f"{address}/32", "dev", "lo")

        def config(address: str, tcp: tuple[trice.TcpType, ...]) -> trice.AgentConfig:
            network = trice.NetworkConfig(
                ip_filter=lambda ip: str(ip) == address,
                include_loopback=True,
                ipv6=False,
                udp=False,
                tcp_candidates=tcp,
            )
            return trice.AgentConfig(network=network, timing=timing)

        async def inline(sync_fn: Any, *args: Any, **_kwargs: Any) -> Any:
            return sync_fn(*args)

        # (The interfaces read before, cached for a second, and trio's worker threads, are
        # of the namespace the process began in: they are read anew, in this thread.)
        monkeypatch.setattr(_gather, "_adapters_cache", {})
        monkeypatch.setattr(trio.to_thread, "run_sync", inline)
        with entered(ns):
            async with gathered_pair(config("10.1.0.1", ACTIVE), config("10.1.0.2", PASSIVE)) as (
                a,
                b,
            ):
                signal_only(a, b)
                await connect_both(a, b)
                assert _rto_max(a) == {RTO_MAX_MS_UNCAPPED}
                async with a.subscribe() as events:
                    cut = trio.current_time()
                    ns.nft(
                        "table netdev tcpout {\n"
                        "  chain cut {\n"
                        '    type filter hook ingress device "lo" priority filter;\n'
                        "    ip saddr 10.1.0.1 drop\n"
                        "    ip daddr 10.1.0.1 drop\n"
                        "  }\n"
                        "}\n"
                    )
                    with trio.fail_after(10):
                        await wait_for_state(events, trice.ConnectionState.DISCONNECTED)
                    assert _rto_max(a) == {RTO_MAX_MS}
                    await trio.sleep_until(cut + 16)
                    ns.nft("delete table netdev tcpout")
                    with trio.fail_after(2.5):
                        await wait_for_state(events, trice.ConnectionState.CONNECTED)
                    assert _rto_max(a) == {RTO_MAX_MS_UNCAPPED}


def _rto_max(agent: trice.Agent) -> set[int]:
    """The retransmission timeouts (``TCP_RTO_MAX_MS``) the agent's TCP connections cap."""
    return {
        link.sock.getsockopt(socket.IPPROTO_TCP, 44)
        for transport in agent._transports.values()
        if isinstance(transport, TcpTransport)
        for link in transport._links.values()
        if link.sock is not None
    }


def _tcp_links(agent: trice.Agent) -> int:
    """The TCP connections the agent's candidates hold open now."""
    return sum(t.links for t in agent._transports.values() if isinstance(t, TcpTransport))


def _ends(pair: trice.CandidatePair | None) -> str:
    if pair is None:
        return "none"
    local, remote = pair.local, pair.remote
    return f"{local.address}:{local.port} -> {remote.address}:{remote.port} {local.protocol}"


def _tcp_report(*agents: trice.Agent) -> str:
    """Each agent's state, its TCP connections and its TCP pairs, a line each."""
    lines = []
    for agent in agents:
        lines.append(
            f"{agent.local_parameters.ufrag}: {agent.connection_state.value}, "
            f"controlling={agent.controlling}, selected {_ends(agent.selected_pair)}"
        )
        for t in agent._transports.values():
            if isinstance(t, TcpTransport):
                lines.extend(
                    f"  {t.tcp_type.value} {t.local_address} <-> {link.address}: "
                    f"proven={link.proven} connecting={link.sock is None} closed={link.closed}"
                    for link in t._links.values()
                )
        lines.extend(
            f"  pair {_ends(s.pair)} {s.state.value} nominated={s.nominated} "
            f"checks={s.checks_sent} answers={s.responses_received}"
            for s in agent.pair_statistics()
            if s.pair.local.protocol == "tcp"
        )
    return "\n".join(lines)


@pytest.mark.parametrize("active_controls", [True, False], ids=["a-controls", "b-controls"])
async def test_once_ice_completes_only_the_selected_pairs_connection_stays_open(
    active_controls: bool,
) -> None:
    """Both agents offer both kinds, so a connection may open each way; once ICE has
    completed, the one the selected pair does not use is closed, on both sides, and the
    data goes on over the other (and after an ICE restart too)."""
    async with (
        trice.open_agent(tcp_config(BOTH), controlling=active_controls) as a,
        trice.open_agent(tcp_config(BOTH), controlling=not active_controls) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        async with a.subscribe() as events_a, b.subscribe() as events_b:
            signal_only(a, b)
            ca, cb = await connect_both(a, b)
            try:
                with trio.fail_after(5):
                    await wait_for_state(events_a, trice.ConnectionState.COMPLETED)
                    await wait_for_state(events_b, trice.ConnectionState.COMPLETED)
                    while _tcp_links(a) + _tcp_links(b) > 2:  # (the far ends see the close)
                        await trio.lowlevel.checkpoint()
            except trio.TooSlowError:
                # (Seen once in CI and never since: what was left open, and where, for the
                # next time to say.)
                pytest.fail("not settled in 5 s:\n" + _tcp_report(a, b))
        assert (_tcp_links(a), _tcp_links(b)) == (1, 1)
        await exchange(ca, cb, 10)
        a.restart()
        b.restart()
        signal_only(a, b)
        await connect_both(a, b)
        await exchange(ca, cb, 10)


async def test_under_aggressive_nomination_no_connection_is_closed() -> None:
    """Aggressive nomination, both kinds on both sides: two connections open, both are
    nominated, and both sides select the same one (each ranks a valid pair by the candidate
    the peer saw).  Neither is closed once ICE completes: under aggressive nomination the
    controlled side may still move to another nominated pair then, and data flows both
    ways."""
    config = tcp_config(BOTH, nomination=trice.Nomination.AGGRESSIVE)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        async with a.subscribe() as events_a, b.subscribe() as events_b:
            signal_only(a, b)
            ca, cb = await connect_both(a, b)
            with trio.fail_after(5):
                await wait_for_state(events_a, trice.ConnectionState.COMPLETED)
                await wait_for_state(events_b, trice.ConnectionState.COMPLETED)
        await exchange(ca, cb, 10)
        assert (_tcp_links(a), _tcp_links(b)) == (2, 2)
        pa, pb = ca.selected_pair, cb.selected_pair
        assert pa.local.transport_address == pb.remote.transport_address
        assert pa.remote.transport_address == pb.local.transport_address
        for agent in (a, b):
            assert agent.connection_state is trice.ConnectionState.COMPLETED


async def test_a_connection_kept_through_a_restart_that_closes_later_fails_ice() -> None:
    """After an ICE restart over the connection of before, that connection is the new
    selected pair's: when the peer drops it later (the peer's agent staying open), ICE
    fails at once on this side too, and no new connection is opened in its place (as one
    is for checks a restart sends over a connection that turns out dead)."""
    async with gathered_pair(tcp_config(ACTIVE), tcp_config(PASSIVE)) as (a, b):
        signal_only(a, b)
        ca, cb = await connect_both(a, b)
        a.restart()
        b.restart()
        signal_only(a, b)
        await connect_both(a, b)
        await exchange(ca, cb, 3)
        async with a.subscribe() as events:
            (passive,) = [t for t in b._transports.values() if isinstance(t, TcpTransport)]
            address = cb.selected_pair.remote.transport_address
            passive.drop(address, passive.link_to(address))  # (b drops it)
            with trio.fail_after(5):
                await wait_for_state(events, trice.ConnectionState.FAILED)
        with pytest.raises(trio.BrokenResourceError, match="TCP connection closed"):
            await ca.send(b"nowhere")
        assert b.statistics().tcp_accepted == 1  # (a opened no connection in its place)


@contextlib.asynccontextmanager
async def _connected_over_tcp() -> AsyncIterator[
    tuple[trice.Connection, trice.Connection, trice.Agent]
]:
    """An active and a passive agent connected over ICE-TCP alone: their connections, and
    the passive agent."""
    async with (
        trice.open_agent(tcp_config(ACTIVE), controlling=True) as a,
        trice.open_agent(tcp_config(PASSIVE), controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal_only(a, b)
        ca, cb = await connect_both(a, b)
        assert ca.selected_pair.local.protocol == "tcp"
        yield ca, cb, b


async def test_data_over_ice_tcp_counts_its_bytes_received() -> None:
    """Data that comes another way than a host UDP socket's reader (ICE-TCP here; a relay
    and a UDP mux alike) counts in ``bytes_received`` as well as ``datagrams_received``."""
    async with _connected_over_tcp() as (ca, cb, b):
        before = b.statistics()
        sizes = [1, 10, 100, 1000]
        with trio.fail_after(10):
            for size in sizes:
                await ca.send(b"\x80" * size)
            for size in sizes:
                assert len(await cb.receive()) == size
        after = b.statistics()
        assert after.datagrams_received - before.datagrams_received == len(sizes)
        assert after.bytes_received - before.bytes_received == sum(sizes)


async def test_a_receive_over_ice_tcp_ends_when_its_agent_closes() -> None:
    """A task blocked in ``receive()`` on a pair with no host UDP socket (ICE-TCP; a relay
    likewise) waits on the agent's buffer, not on a socket: it gets ClosedResourceError
    when the agent closes, as the docs say, and does not wait for ever."""
    outcome: list[BaseException | bytes] = []

    async def receiver(conn: trice.Connection) -> None:
        try:
            outcome.append(await conn.receive())
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with _connected_over_tcp() as (ca, _cb, _b):
                nursery.start_soon(receiver, ca)
                await trio.testing.wait_all_tasks_blocked(0.01)  # (the receiver waits)
                assert outcome == []
    (ended,) = outcome
    assert isinstance(ended, trio.ClosedResourceError)


async def test_a_reset_while_a_check_waits_behind_a_frame_begun_fails_only_the_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transfer over ICE-TCP backs up (the peer reads nothing), a STUN message waits
    behind the data frame begun, and the peer goes away with data unread (a reset): the
    sender's writer meets the reset, and its connection closes, and send says so.  Its
    writer closed the connection while a view of the buffer that closing clears was still
    held: a BufferError ended the agent, out of ``open_agent`` (the apps review)."""
    held = hold_readers(monkeypatch)
    async with trice.open_agent(tcp_config(ACTIVE), controlling=True) as a:
        async with trice.open_agent(tcp_config(PASSIVE), controlling=False) as b:
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal_only(a, b)
            ca, _ = await connect_both(a, b)
            (transport,) = [t for t in a._transports.values() if isinstance(t, TcpTransport)]
            (link,) = transport._links.values()
            (other,) = [t for t in b._transports.values() if isinstance(t, TcpTransport)]
            held.update(peer.sock.fileno() for peer in other._links.values() if peer.sock)
            while ca.send_nowait(bytes(1200)):  # (until the buffers are full)
                await trio.lowlevel.checkpoint()
            await until(lambda: link.left > 0, within=5)
            indication = trice.stun.Message(
                trice.stun.Method.BINDING, trice.stun.MessageClass.INDICATION
            ).encode()
            assert transport.send_nowait(indication, link.address)
            assert link.urgent
        held.clear()  # (b is gone, its connection reset with data unread)
        with trio.fail_after(10), pytest.raises(trio.BrokenResourceError, match="TCP"):
            while True:
                await ca.send(bytes(1200))


async def test_data_an_ice_tcp_connection_drops_unsent_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer over ICE-TCP answers the agent's checks, then reads nothing: the agent sends
    until the connection's buffer is full, consent expires, and ICE fails, which drops what
    waits to be written (RFC 7675: no data may go); the peer then reads all the connection
    carried.  Claim: what ``datagrams_sent`` counts, less ``tcp_unsent``, is what the peer
    got (280 counted, 20 got: 260 dropped were counted nowhere, the stats47 review)."""

    def is_stun(datagram: bytes) -> bool:
        return datagram[:1] < b"\x04" and datagram[4:8] == STUN_MAGIC

    timing = trice.Timing(disconnected_timeout=2, failed_timeout=5)
    with trio.socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        async with trice.open_agent(tcp_config(ACTIVE, timing=timing), controlling=True) as a:
            await a.wait_gathering_complete()
            a.set_remote_parameters("abcd", "x" * 22)
            line = f"candidate:9 1 tcp 2124414975 127.0.0.1 {port} typ host tcptype passive"
            a.add_remote_candidate(trice.Candidate.from_sdp(line))
            a.add_remote_candidate(None)
            flooding, failed = trio.Event(), trio.Event()
            got: list[bytes] = []

            async def peer() -> None:
                sock, _ = await listener.accept()
                with sock:
                    mapped = sock.getpeername()[:2]
                    reader = FrameReader()
                    while not flooding.is_set():  # (answers the agent's checks)
                        with trio.move_on_after(0.05):
                            for datagram in reader.feed(await sock.recv(65536)):
                                request = stun.MessageClass.REQUEST
                                if is_stun(datagram) and (
                                    stun.decode(datagram).message_class is request
                                ):
                                    await sock.send(frame(answer_check(datagram, mapped)))
                    await failed.wait()  # (reads nothing meanwhile)
                    while True:  # (then all the connection carried)
                        with trio.move_on_after(1) as quiet:
                            data = await sock.recv(65536)
                        if quiet.cancelled_caught or not data:
                            return
                        got.extend(d for d in reader.feed(data) if not is_stun(d))

            async with a.subscribe() as events, trio.open_nursery() as nursery:
                nursery.start_soon(peer)
                with trio.fail_after(5):
                    conn = await a.connect()
                flooding.set()
                await trio.sleep(0.2)
                while conn.send_nowait(bytes(1000)):
                    await trio.lowlevel.checkpoint()
                with trio.fail_after(30):
                    await wait_for_state(events, trice.ConnectionState.FAILED)
                failed.set()
            stats = a.statistics()
    assert stats.tcp_unsent > 0
    assert stats.datagrams_sent - stats.tcp_unsent == len(got), (stats, len(got))


@pytest.mark.parametrize("cap", [2, 3])
async def test_a_failure_says_when_the_cap_left_an_ice_tcp_connections_end_unlearned(
    autojump_clock: trio.testing.MockClock, cap: int
) -> None:
    """Two ICE-TCP agents (active and passive each) whose ``max_remote_candidates`` of 2
    the two signalled candidates fill: a connection's other end, a peer-reflexive candidate
    (RFC 6544 §7.2), is past the cap and left out, so no pair works; the failure says so,
    naming the cap (it said only "no candidate pair works": the stateful48 review).  With
    a cap of 3 the same agents connect."""
    config = tcp_config(BOTH, max_remote_candidates=cap)
    config = dataclasses.replace(config, network=dataclasses.replace(config.network, udp=False))
    said: dict[str, str] = {}

    async def connect(name: str, agent: trice.Agent) -> None:
        try:
            await agent.connect()
        except trice.IceFailedError as exc:
            said[name] = str(exc)

    async with gathered_pair(config) as (a, b):
        signal(a, b)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect, "a", a)
                nursery.start_soon(connect, "b", b)
        if cap == 3:
            assert said == {}
            return
        assert b.statistics().prflx_dropped > 0
        assert said.keys() == {"a", "b"}
        assert all("(max_remote_candidates=2) went unlearned" in text for text in said.values())
