"""Agents through a real coturn on loopback: relay candidates, the relay-only policy over UDP,
TCP and TLS, and a refused allocation that costs nothing but its report."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal as signals
import socket
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trice
from trice import stun
from trice._trio import _gather, _relay
from trice._trio._relay import RelayTransport
from trice.ice._checklist import PairState

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from coturn import PASSWORD, USER, Coturn, require_turnserver, run_coturn, stopped
from loopback import (
    HAS_IPV6,
    agents_alive,
    connect_both,
    cycle_collector_off,
    events_so_far,
    exchange_each_way,
    filtered_config,
    gathered_pair,
    loopback_config,
    resolving,
    send_wide_views,
    signal,
    state_of,
    until,
    wait_for_state,
)


@pytest.fixture
def coturn_tls() -> Iterator[Coturn]:
    require_turnserver()
    with run_coturn(tls=True) as server:
        yield server


def _relay_config(server: trice.IceServer) -> trice.AgentConfig:
    return loopback_config(
        ice_servers=[server],
        transport_policy=trice.TransportPolicy.RELAY,
        timing=trice.Timing(gather_timeout=3.0),
    )


@pytest.mark.parametrize(
    "password",
    [
        "\uff57\uff4f\uff4e\uff44\uff45\uff52-1",  # fullwidth letters
        "wo\u0308nder",  # decomposed
        "wonder\u00a0land",  # a no-break space
        "\u0d28\u0d4d\u200d-1",  # a ZWJ after a virama (Malayalam)
    ],
)
async def test_a_password_allocates_at_coturn_as_written(password: str) -> None:
    """coturn makes its key of the password as configured: a password of fullwidth
    letters (as a Japanese input method types them), a decomposed letter, a no-break
    space, a join control allocate in one challenge.  SASLprep's NFKC made ASCII of the
    fullwidth letters: refused, 401 (the pionturn review); OpaqueString (02979fb) composed
    the decomposed letter, made a space of the no-break one, refused the ZWJ (the
    p35pass5 review)."""
    require_turnserver()
    with run_coturn(password=password) as server:
        url = f"turn:127.0.0.1:{server.port}?transport=udp"
        config = _relay_config(trice.IceServer(url, USER, password))
        async with trice.open_agent(config, controlling=True) as agent:
            with trio.fail_after(10):
                await agent.wait_gathering_complete()
            assert [c.type for c in agent.local_candidates] == [trice.CandidateType.RELAY], (
                agent.gather_reports
            )


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_relay_only_session(coturn_tls: Coturn, transport: str) -> None:
    config = _relay_config(coturn_tls.ice_server(transport))
    async with gathered_pair(config) as (a, b):
        for agent in (a, b):
            assert [c.type for c in agent.local_candidates] == [trice.CandidateType.RELAY]
            (relay,) = agent.local_candidates
            # Signalled without the address the server saw us from (RFC 8839 allows it,
            # browsers do it): the relay policy shows the peer no address of ours.  The
            # agent knows it.
            assert (relay.related_address, relay.related_port) == ("0.0.0.0", 0)
            ((real, _),) = agent._core.local_candidates
            assert real.related_address == "127.0.0.1"  # as the server saw us
        signal(a, b)
        ca, cb = await connect_both(a, b)
        assert ca.selected_pair.local.type is trice.CandidateType.RELAY
        assert ca.selected_pair.remote.type is trice.CandidateType.RELAY
        await exchange_each_way(ca, cb)
        await send_wide_views(ca, cb)


async def test_relays_of_one_server_over_each_transport_have_foundations_of_their_own(
    coturn_tls: Coturn,
) -> None:
    """One coturn reached over UDP, TCP and TLS: three relayed candidates, each with a
    foundation of its own (RFC 8445 §5.1.1.3: the transport to the server is part of it;
    they shared one)."""
    servers = [coturn_tls.ice_server(transport) for transport in ("udp", "tcp", "tls")]
    config = dataclasses.replace(_relay_config(servers[0]), ice_servers=servers)
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(10):
            await a.wait_gathering_complete()
        relays = [c for c in a.local_candidates if c.type is trice.CandidateType.RELAY]
        assert len(relays) == 3
        assert len({c.foundation for c in relays}) == 3


async def test_each_candidate_gathered_names_its_server_and_how_a_relay_reaches_it(
    coturn_tls: Coturn,
) -> None:
    """The event of a server's candidate names that server's URL, and a relayed one how the
    agent reaches its TURN server (the W3C's ``url`` and ``relayProtocol``): a WebRTC stack
    reports them.  So do a late subscriber's, and an ICE restart's.  (NOHOST: on loopback
    the address a STUN server sees is the host's, signalled only in its place.)"""
    stun_url = f"stun:127.0.0.1:{coturn_tls.port}"
    servers = [trice.IceServer(stun_url)]
    servers += [coturn_tls.ice_server(transport) for transport in ("udp", "tcp", "tls")]
    config = loopback_config(
        ice_servers=servers,
        transport_policy=trice.TransportPolicy.NOHOST,
        timing=trice.Timing(gather_timeout=3.0),
    )
    expected = {
        (trice.CandidateType.SRFLX, f"{stun_url}", None),
        (trice.CandidateType.RELAY, f"turn:127.0.0.1:{coturn_tls.port}?transport=udp", "udp"),
        (trice.CandidateType.RELAY, f"turn:127.0.0.1:{coturn_tls.port}?transport=tcp", "tcp"),
        (trice.CandidateType.RELAY, f"turns:127.0.0.1:{coturn_tls.tls_port}?transport=tcp", "tls"),
    }

    def named(events: list[trice.Event]) -> set[tuple[trice.CandidateType, str | None, str | None]]:
        return {
            (e.candidate.type, e.url, e.relay_protocol)
            for e in events
            if isinstance(e, trice.CandidateGathered)
        }

    async with trice.open_agent(config, controlling=True) as agent:
        async with agent.subscribe() as events:
            with trio.fail_after(10):
                await agent.wait_gathering_complete()
            first = events_so_far(events)
        assert named(first) == expected
        async with agent.subscribe() as late:
            assert named(events_so_far(late)) == expected
            agent.restart(regather=True)
            with trio.fail_after(10):
                await agent.wait_gathering_complete()
            assert named(events_so_far(late)) == expected


def _selected_relay(agent: trice.Agent) -> RelayTransport:
    """The transport of ``agent``'s selected pair, a relay."""
    selected = agent._core.selected
    assert selected is not None
    relay = agent._transports[selected.base]
    assert isinstance(relay, RelayTransport)
    return relay


async def test_a_lost_relay_makes_send_raise_broken_resource_error(coturn_tls: Coturn) -> None:
    """The selected pair's relay goes (as when the server refuses to refresh it): the
    connection is open, its path is broken.  send raises BrokenResourceError, as after
    consent expired, not the ClosedResourceError that means the connection was closed."""
    config = _relay_config(coturn_tls.ice_server("udp"))
    async with gathered_pair(config) as (a, b):
        signal(a, b)
        ca, _cb = await connect_both(a, b)
        relay = _selected_relay(a)
        relay.close()  # (what run_relay does when the allocation ends)
        with pytest.raises(trio.BrokenResourceError, match="relay is gone"):
            await ca.send(b"nowhere")
        with pytest.raises(trio.BrokenResourceError, match="relay is gone"):
            ca.send_nowait(b"nowhere either")
        await ca.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await ca.send(b"closed")


async def test_relay_statistics_count_what_went_through_each_relay(coturn_tls: Coturn) -> None:
    """Agent.relay_statistics: each TURN allocation (its server, its relayed address: the
    relay candidate's) and its client's counters, where send_nowait's docs send a user to
    count data the client dropped; still readable once the agent closed.  An agent without
    relays has none."""
    server = coturn_tls.ice_server("udp")
    async with gathered_pair(_relay_config(server)) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        (before,) = a.relay_statistics()
        await exchange_each_way(ca, cb)  # (100 datagrams each way)
        (after,) = a.relay_statistics()
        assert (after.server,) == tuple(server.urls)
        (relay,) = a.local_candidates
        assert after.address == (relay.address, relay.port)
        sent = after.counters.sent_indications + after.counters.sent_channel_data
        assert sent - before.counters.sent_indications - before.counters.sent_channel_data >= 100
        assert after.counters.received - before.counters.received >= 100
        assert after.counters.dropped == 0
    assert a.relay_statistics() == (after,)  # (nothing came since)
    async with gathered_pair(loopback_config()) as (plain, _):
        assert plain.relay_statistics() == ()


async def test_a_relay_that_ends_on_its_own_fails_ice_at_once(coturn_tls: Coturn) -> None:
    """The TURN server goes away under a relay-only session over TCP (it is killed, and the
    connection to it drops).  The state becomes failed as the relay ends, not when consent
    would have expired (``failed_timeout``, 30 s here), and send and connect say why."""
    config = loopback_config(
        ice_servers=[coturn_tls.ice_server("tcp")],
        transport_policy=trice.TransportPolicy.RELAY,
        timing=trice.Timing(gather_timeout=3.0, failed_timeout=30.0),
    )
    async with gathered_pair(config) as (a, b):
        signal(a, b)
        ca, _cb = await connect_both(a, b)
        relay = _selected_relay(a)
        async with a.subscribe() as events:
            os.kill(coturn_tls.pid, signals.SIGKILL)
            with trio.fail_after(5):
                await wait_for_state(events, trice.ConnectionState.FAILED)
        assert relay.closed and relay.error is not None
        assert a.connection_state is trice.ConnectionState.FAILED
        assert all(pair.state is PairState.FAILED for pair in a._core.checklist)
        with pytest.raises(trio.BrokenResourceError, match="relay is gone"):
            await ca.send(b"nowhere")
        with pytest.raises(trice.IceFailedError, match="relay is gone"):
            await a.connect()
        # A restart tries again: no pair carries data until the new checks select one, and
        # what failed before (the relay) is no reason given for what comes next.
        a.restart()
        assert state_of(a) is trice.ConnectionState.CHECKING
        assert a._selected_lost is None
        with pytest.raises(trio.BrokenResourceError, match="ICE restart"):
            await ca.send(b"nowhere yet")
        # A plain restart keeps the candidates there are: none, the relay gone; connect()
        # says so at once (no check can come to an agent with no candidate: the PAC timer,
        # 15.5 s, waits for none), and what gets one (it said "no candidate pair works").
        b.restart()
        signal(a, b)
        assert a.local_candidates == ()
        with (
            trio.fail_after(5),
            pytest.raises(trice.IceFailedError, match=r"no local candidate.*regather=True"),
        ):
            await a.connect()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_closed_relay_agent_is_freed_without_the_cycle_collector(
    coturn_tls: Coturn, transport: str
) -> None:
    """A relay transport hands what it reads to its agent: once the agents closed (their
    allocations deleted), that link is let go of, and nothing holds them in a cycle."""
    server = coturn_tls.ice_server(transport)
    ufrags = ("relayAAA", "relayBBB")

    async def session() -> None:
        configs = [dataclasses.replace(_relay_config(server), ufrag=u) for u in ufrags]
        async with (
            trice.open_agent(configs[0], controlling=True) as a,
            trice.open_agent(configs[1], controlling=False) as b,
        ):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            ca, cb = await connect_both(a, b)
            await ca.send(b"over the relay")
            with trio.fail_after(5):
                assert await cb.receive() == b"over the relay"

    with cycle_collector_off():
        await session()
        await trio.testing.wait_all_tasks_blocked()
        assert agents_alive(*ufrags) == []


async def test_a_stranger_at_a_permitted_address_gets_no_answer_over_the_relay(
    coturn_tls: Coturn,
) -> None:
    """Over a relay only known peers are answered: a stranger on the peer's IP (which the
    relay has a permission for) whose check fails gets no answer, which would cost the
    relay a peer and a channel at the server for every port it sends from."""
    config = _relay_config(coturn_tls.ice_server("udp"))
    async with gathered_pair(config) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        (relayed,) = a.local_candidates
        (relay,) = [t for t in a._transports.values() if isinstance(t, RelayTransport)]
        peers = dict(relay._client._peers)
        rejected = a.statistics().requests_rejected
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            stranger.setblocking(False)
            for _ in range(3):  # no USERNAME: refused (400)
                request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST)
                stranger.sendto(request.encode(fingerprint=True), relayed.transport_address)
            # b's datagram reaches a's relay after them, and a through the same server: once
            # a has it, it has read the stranger's requests too.
            await cb.send(b"after the stranger")
            with trio.fail_after(5):
                assert await ca.receive() == b"after the stranger"
            assert a.statistics().requests_rejected == rejected + 3
            assert relay._client._peers == peers  # no peer, no channel for the stranger
            with pytest.raises(BlockingIOError):
                stranger.recv(2048)


async def test_relay_candidate_beside_host_candidates(coturn_tls: Coturn) -> None:
    config = loopback_config(ice_servers=[coturn_tls.ice_server("udp")])
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(10):
            await a.wait_gathering_complete()
        types = sorted(c.type.value for c in a.local_candidates)
        assert types == ["host", "relay"]


async def test_wrong_credentials_yield_no_relay_and_a_report(coturn_tls: Coturn) -> None:
    url = f"turn:127.0.0.1:{coturn_tls.port}?transport=udp"
    config = loopback_config(ice_servers=[trice.IceServer(url, USER, "not-the-password")])
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        assert [c.type for c in a.local_candidates] == [trice.CandidateType.HOST]
        (report,) = [r for r in a.gather_reports if r.source.startswith("turn:")]
        assert report.error is not None and "401" in report.error
        assert report.code == 401  # (for a program: the W3C icecandidateerror's errorCode)


def _gather_cli(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "trice", "gather", "--interface", "lo", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_trice_gather_against_coturn(coturn_tls: Coturn) -> None:
    url = f"turn:127.0.0.1:{coturn_tls.port}?transport=udp"
    records = _gather_cli("--turn", url, "--username", USER, "--credential", PASSWORD)
    types = sorted(str(r["type"]) for r in records if r["event"] == "candidate")
    assert "relay" in types and "host" in types
    (source,) = [r for r in records if r["event"] == "source" and r["source"] == url]
    assert source["error"] is None and source["candidates"] == 1


def test_trice_gather_names_why_a_turn_server_failed(coturn_tls: Coturn) -> None:
    url = f"turn:127.0.0.1:{coturn_tls.port}?transport=udp"
    records = _gather_cli("--turn", url, "--username", USER, "--credential", "wrong")
    (source,) = [r for r in records if r["event"] == "source" and r["source"] == url]
    assert source["candidates"] == 0 and "401" in str(source["error"])
    assert source["code"] == 401


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_servers_alternate_is_named_in_the_gather_report(transport: str) -> None:
    """A TURN server that redirects (300 Try Alternate, coturn's --alternate-server): not
    followed, as turn.rst says, but the report names the server to list instead (it said
    "300 Try Alternate" alone: the address was in a log line only)."""
    require_turnserver()
    with (
        run_coturn() as second,
        run_coturn(extra=(f"--alternate-server=127.0.0.1:{second.port}",)) as first,
    ):
        config = _relay_config(first.ice_server(transport))
        async with trice.open_agent(config, controlling=True) as agent:
            with trio.fail_after(10):
                await agent.wait_gathering_complete()
            (report,) = agent.gather_reports
    assert report.candidates == 0
    assert report.error == f"300 Try Alternate (alternate server 127.0.0.1:{second.port})"
    assert report.code == 300


async def test_a_permission_the_server_refuses_is_warned_of_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """coturn denies the peer's address (--denied-peer-ip: 403 to every CreatePermission):
    the relay-only session cannot connect, and the log says why, once a peer IP at WARNING,
    and the relay's statistics count it (nothing said so, not even at DEBUG: only data
    dropped was counted, as for a full queue)."""
    require_turnserver()
    caplog.set_level(logging.DEBUG, logger="trice")
    timing = trice.Timing(gather_timeout=3.0, failed_timeout=4.0, disconnected_timeout=2.0)
    with run_coturn(extra=("--denied-peer-ip=127.0.0.1",)) as coturn:
        config = dataclasses.replace(_relay_config(coturn.ice_server("udp")), timing=timing)
        async with gathered_pair(config) as (a, b):
            signal(a, b)
            with pytest.raises(BaseExceptionGroup) as failed:
                await connect_both(a, b, within=15)
            assert failed.group_contains(trice.IceFailedError)
            (relay,) = a.relay_statistics()
            assert relay.counters.refused >= 1
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "refused a permission" in r.getMessage()
    ]
    assert len(warned) == 2  # (one an agent: one peer IP each)
    assert all("for peer 127.0.0.1: 403 Forbidden" in m for m in warned)  # (coturn: "... IP")


def _mismatch_first(monkeypatch: pytest.MonkeyPatch, mismatches: int) -> list[trice.ServerUrl]:
    """Make the first ``mismatches`` allocations fail with 437, as coturn answers when it
    still holds an allocation for the local port (a client before us that never deleted
    its own); the calls are recorded."""
    from trice.turn import AllocationError

    real = _gather.run_relay  # type: ignore[attr-defined]
    calls: list[trice.ServerUrl] = []

    async def run_relay(server: trice.ServerUrl, *args: Any, **kwargs: Any) -> None:
        calls.append(server)
        if len(calls) <= mismatches:
            raise AllocationError(
                f"TURN server {server}: TURN Allocate failed: 437 Mismatched allocation",
                code=437,
                reason="Mismatched allocation: wrong transaction ID",
            )
        await real(server, *args, **kwargs)

    monkeypatch.setattr(_gather, "run_relay", run_relay)
    return calls


async def test_an_allocation_mismatch_is_tried_again_from_a_new_connection(
    coturn_tls: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _mismatch_first(monkeypatch, 1)
    async with trice.open_agent(_relay_config(coturn_tls.ice_server("udp")), controlling=True) as a:
        with trio.fail_after(10):
            await a.wait_gathering_complete()
        assert [c.type for c in a.local_candidates] == [trice.CandidateType.RELAY]
        (report,) = a.gather_reports
        assert report.error is None and report.candidates == 1
    assert len(calls) == 2


async def test_an_allocation_mismatch_that_persists_is_reported(
    coturn_tls: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _mismatch_first(monkeypatch, 10)
    async with trice.open_agent(_relay_config(coturn_tls.ice_server("udp")), controlling=True) as a:
        with trio.fail_after(10):
            await a.wait_gathering_complete()
        assert a.local_candidates == ()
        (report,) = a.gather_reports
        assert report.error is not None and report.error.startswith("437")
    assert len(calls) == 3  # the first try and two more, each from a new port


async def test_other_allocation_errors_are_not_tried_again(
    coturn_tls: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _mismatch_first(monkeypatch, 0)  # no 437: the real allocation, refused (401)
    url = f"turn:127.0.0.1:{coturn_tls.port}?transport=udp"
    config = loopback_config(
        ice_servers=[trice.IceServer(url, USER, "not-the-password")],
        transport_policy=trice.TransportPolicy.RELAY,
    )
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(10):
            await a.wait_gathering_complete()
        (report,) = a.gather_reports
        assert report.error is not None and report.error.startswith("401")
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (errno.EAFNOSUPPORT, "unreachable"),
        (errno.EMFILE, "out of file descriptors"),
    ],
)
async def test_a_relay_socket_that_cannot_be_made_costs_only_its_relay(
    monkeypatch: pytest.MonkeyPatch, code: int, error: str
) -> None:
    """The socket to a TURN server over UDP cannot be made (a family the kernel lacks, or
    no descriptor left): the server's report says why, and the agent goes on (the
    OSError had come out of ``open_agent``)."""

    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise OSError(code, os.strerror(code))

    fake = types.SimpleNamespace(
        **{name: getattr(socket, name) for name in dir(socket) if not name.startswith("__")}
    )
    fake.socket = refuse
    monkeypatch.setattr(_relay, "socket", fake)
    config = _relay_config(trice.IceServer("turn:127.0.0.1:3478", USER, PASSWORD))
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        (report,) = a.gather_reports
        assert (report.candidates, report.error) == (0, error)


async def test_a_tcp_relay_out_of_descriptors_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """No descriptor left for the TCP connection to a TURN server: the report says so,
    not "unreachable" (trio's ``open_tcp_stream`` raises an OSError of its own, without
    an errno, whose cause holds the attempts' errors)."""
    from trio import _highlevel_open_tcp_stream as opener

    def refuse(*args: object, **kwargs: object) -> trio.socket.SocketType:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(opener, "socket", refuse)
    url = "turn:127.0.0.1:3478?transport=tcp"
    config = _relay_config(trice.IceServer(url, USER, PASSWORD))
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        (report,) = a.gather_reports
        assert (report.candidates, report.error) == (0, "out of file descriptors")


async def test_gathering_anew_keeps_a_relay_that_lives(coturn_tls: Coturn) -> None:
    """An ICE restart that gathers anew keeps the relay (no second allocation): its
    candidate is gathered again, the same; the peers connect again through it."""
    config = _relay_config(coturn_tls.ice_server("udp"))
    async with gathered_pair(config) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        (relay,) = a.local_candidates
        reports = [(r.source, r.candidates) for r in a.gather_reports]
        a.restart(regather=True)
        b.restart()
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        assert a.local_candidates == (relay,)
        assert sum(isinstance(t, RelayTransport) for t in a._transports.values()) == 1
        # (Reported as the first gathering reported it: it had no report at all.)
        assert [(r.source, r.candidates) for r in a.gather_reports] == reports
        signal(a, b)
        await connect_both(a, b)
        await exchange_each_way(ca, cb, 10)


async def test_gathering_anew_replaces_a_relay_the_server_lost() -> None:
    """The TURN server restarted on its address (over UDP: the relays' sockets do not
    notice), and holds no allocation now.  At a gathering anew each relay is asked whether
    it lives (a Refresh, answered 437 Allocation Mismatch), and replaced: the new relays
    are signalled, and the peers connect through them.  (Before, the dead relays were
    signalled again, and the checks through them went nowhere.)"""
    require_turnserver()
    with contextlib.ExitStack() as first:
        coturn = first.enter_context(run_coturn())
        port, server = coturn.port, coturn.ice_server("udp")
        async with gathered_pair(_relay_config(server)) as (a, b):
            signal(a, b)
            ca, cb = await connect_both(a, b)
            old = {a.local_candidates, b.local_candidates}
            first.close()
            with run_coturn(port=port):
                a.restart(regather=True)
                b.restart(regather=True)
                with trio.fail_after(10):
                    await a.wait_gathering_complete()
                    await b.wait_gathering_complete()
                for agent in (a, b):
                    (relay,) = agent.local_candidates
                    assert relay.type is trice.CandidateType.RELAY
                assert not {a.local_candidates, b.local_candidates} & old
                signal(a, b)
                await connect_both(a, b)
                await exchange_each_way(ca, cb, 10)


async def test_a_relay_the_server_lost_fails_ice_once_the_peer_falls_silent() -> None:
    """The TURN server restarted on its address (over UDP: the relay's socket does not
    notice) and holds no allocation now: the peer falls silent, and at ``disconnected`` the
    agent asks the server (a Refresh, answered 437): ICE fails at once, and says the relay
    is gone, which a plain restart then signals no more.  (It failed only as consent
    expired, at ``failed_timeout``, saying so, and a plain restart signalled the dead relay
    again; the relay heard of it at its next refresh, minutes on: the suspects review.)"""
    require_turnserver()
    timing = trice.Timing(disconnected_timeout=1.0, failed_timeout=25.0)
    with contextlib.ExitStack() as first:
        coturn = first.enter_context(run_coturn())
        port, server = coturn.port, coturn.ice_server("udp")
        config = loopback_config(
            ice_servers=[server], transport_policy=trice.TransportPolicy.RELAY, timing=timing
        )
        async with gathered_pair(config) as (a, b), a.subscribe() as events:
            signal(a, b)
            await connect_both(a, b)
            first.close()
            with run_coturn(port=port):
                with trio.fail_after(5):  # (1 s to disconnected, and a round trip)
                    await wait_for_state(events, trice.ConnectionState.FAILED)
                with pytest.raises(trice.IceFailedError, match="relay is gone"):
                    await a.connect()
                a.restart()
                assert a.local_candidates == ()


async def test_gathering_anew_probes_each_relay_once_whichever_servers_name_it(
    coturn_tls: Coturn,
) -> None:
    """A TURN URL named by two ICE servers: one relay (a URL is asked once: it was two
    allocations on one server), and at a gathering anew it is probed once and signalled
    once again (it was probed, and signalled, once for each server that names its URL)."""
    server = coturn_tls.ice_server("udp")
    config = loopback_config(
        ice_servers=[server, server],
        transport_policy=trice.TransportPolicy.RELAY,
        timing=trice.Timing(gather_timeout=3.0),
    )
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        before = sorted(c.port for c in a.local_candidates)
        assert len(before) == 1
        a.restart(regather=True)
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        assert sorted(c.port for c in a.local_candidates) == before
        assert sum(isinstance(t, RelayTransport) for t in a._transports.values()) == 1


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_gathering_anew_keeps_a_relay_whose_server_says_nothing(transport: str) -> None:
    """The TURN server is stopped (SIGSTOP) at a gathering anew: the probe gets no answer
    within gather_timeout (over TCP, half of it, then a new allocation none either), and
    the relay is kept (a silent server would grant no new one either; its own refreshes
    decide later).  Gathering takes the gather_timeout once (it took two: the probe's, then
    a new allocation's, which failed, and the relay was lost)."""
    require_turnserver()
    timing = trice.Timing(gather_timeout=1.0)
    with run_coturn() as coturn:
        server = coturn.ice_server(transport)
        config = dataclasses.replace(_relay_config(server), timing=timing)
        async with trice.open_agent(config, controlling=True) as a:
            with trio.fail_after(5):
                await a.wait_gathering_complete()
            (relay,) = a.local_candidates
            with stopped(coturn.pid):  # (every thread: one still running answered, p37pass5)
                started = trio.current_time()
                a.restart(regather=True)
                with trio.fail_after(5):
                    await a.wait_gathering_complete()
                elapsed = trio.current_time() - started
            # (Once, not twice: short of 2 gather_timeouts, with room for a loaded machine.)
            assert timing.gather_timeout / 2 < elapsed < 1.9 * timing.gather_timeout
            assert a.local_candidates == (relay,)
            # One report of its source: it was said twice over TCP, the new allocation
            # failed and the relay gathered (p37pass4 on 03b6ebb).
            (report,) = a.gather_reports
            assert report.candidates == 1 and report.error is None


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_gathering_anew_gathers_no_relay_closed_as_its_probe_gives_up(
    coturn_tls: Coturn, transport: str
) -> None:
    """A relay whose server says nothing at a gathering anew closes in the very step its
    probe is given up (its connection ends, say): it is not gathered again, and its
    source's one report says no candidate came.  It was gathered, signalled with nothing
    behind it, and reported gathered (p37pass5 on b2e7252)."""
    config = dataclasses.replace(
        _relay_config(coturn_tls.ice_server(transport)), timing=trice.Timing(gather_timeout=1.0)
    )
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        (old,) = [t for t in a._transports.values() if isinstance(t, RelayTransport)]
        real_probe = old.probe

        async def probe() -> bool:
            try:
                return await real_probe()
            except trio.Cancelled:
                old.close()  # (in the very step the probe is given up)
                raise

        old.probe = probe  # type: ignore[method-assign]
        report = await _regathered_with_the_server_stopped(a, coturn_tls.pid)
        assert old.closed
        assert not a.local_candidates
        assert report.candidates == 0


async def _regathered_with_the_server_stopped(agent: trice.Agent, pid: int) -> trice.GatherReport:
    """Gather anew while the TURN server ``pid`` is stopped: the one report of its source."""
    with stopped(pid):
        agent.restart(regather=True)
        with trio.fail_after(5):
            await agent.wait_gathering_complete()
    (report,) = agent.gather_reports
    return report


async def test_gathering_anew_gathers_no_stuck_relay_lost_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay over TCP whose server says nothing at a gathering anew (stopped), and whose
    connection ends as a new allocation is asked for: its candidate is not gathered again,
    and the source's one report says the new allocation failed.  It was gathered, the
    relay closed behind it (p37pass4 on 03b6ebb)."""
    require_turnserver()
    with run_coturn() as coturn:
        config = dataclasses.replace(
            _relay_config(coturn.ice_server("tcp")), timing=trice.Timing(gather_timeout=1.0)
        )
        async with trice.open_agent(config, controlling=True) as a:
            with trio.fail_after(5):
                await a.wait_gathering_complete()
            assert len(a.local_candidates) == 1
            (old,) = [t for t in a._transports.values() if isinstance(t, RelayTransport)]
            assert isinstance(old._conn, _relay._StreamConnection)
            conn = old._conn
            real = _gather.gather_relay

            async def gather_relay(*args: Any, **kwargs: Any) -> Any:
                conn.stream.socket.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
                return await real(*args, **kwargs)

            monkeypatch.setattr(_gather, "gather_relay", gather_relay)
            report = await _regathered_with_the_server_stopped(a, coturn.pid)
            assert old.closed
            assert not a.local_candidates
            assert report.candidates == 0 and report.error is not None


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_gathering_anew_replaces_a_relay_whose_connection_is_stuck(
    coturn_tls: Coturn, transport: str
) -> None:
    """A relay over TCP or TLS whose connection carries nothing now (as one an outage left
    in TCP's backoff at both ends, its next copy tens of seconds away), while the server
    lives: at a gathering anew, the probe gets no answer in half the gather_timeout, and a
    new allocation over a new connection takes the relay's place; the peers connect
    through it.  The stuck relay was kept, and the restart's checks failed (the natrelay
    review)."""
    config = dataclasses.replace(
        _relay_config(coturn_tls.ice_server(transport)), timing=trice.Timing(gather_timeout=2.0)
    )
    async with gathered_pair(config) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        (old,) = a.local_candidates
        (stuck,) = [t for t in a._transports.values() if isinstance(t, RelayTransport)]
        assert isinstance(stuck._conn, _relay._StreamConnection)
        stuck._conn.stream.send_all = _never  # type: ignore[method-assign]
        a.restart(regather=True)
        b.restart()
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        (new,) = a.local_candidates
        assert new.type is trice.CandidateType.RELAY and new != old
        assert stuck.closed or stuck.base == a._core.data_pair.base  # type: ignore[union-attr]
        signal(a, b)
        await connect_both(a, b)
        await exchange_each_way(ca, cb, 10)


async def _never(data: object) -> None:
    await trio.sleep_forever()


async def test_gathering_anew_replaces_a_relay_whose_address_went(
    coturn_tls: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address a relay's connection leaves from is gone (the interfaces, as read, have
    it no more): the relay is not signalled again, and the server is asked for another.
    The old relay, over which the pair of before goes, stays until the next gathering anew,
    which closes it."""
    config = _relay_config(coturn_tls.ice_server("udp"))
    async with gathered_pair(config) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        (old,) = a.local_candidates
        monkeypatch.setattr(_gather, "_adapters", list)  # (no address on the machine)
        a.restart(regather=True)
        b.restart()
        monkeypatch.undo()
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        (new,) = a.local_candidates
        assert new.type is trice.CandidateType.RELAY and new != old
        live = [t for t in a._transports.values() if isinstance(t, RelayTransport) and not t.closed]
        assert len(live) == 2
        # Agent.relay_statistics lists both: the one of before, which carried the data, first.
        kept, replacing = a.relay_statistics()
        assert kept.address == old.transport_address and kept.counters.received > 0
        assert replacing.address == new.transport_address and replacing.server == kept.server
        signal(a, b)
        await connect_both(a, b)
        await exchange_each_way(ca, cb, 10)
        assert ca.selected_pair.local.transport_address == new.transport_address
        a.restart(regather=True)
        b.restart()
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        assert a.local_candidates == (new,)
        live = [t for t in a._transports.values() if isinstance(t, RelayTransport) and not t.closed]
        assert len(live) == 1
        # Once its task has ended (it deletes the allocation), the closed relay is let go
        # of: gathering anew after gathering anew, the agent holds its live relays only.
        with trio.fail_after(5):
            while len(a._transports) > len(live):  # noqa: ASYNC110 (the relay's own task)
                await trio.sleep(0.01)
        assert [t for t in a._transports.values() if isinstance(t, RelayTransport)] == live


async def test_a_server_with_ipv6_relays_only_gives_an_ipv6_relay() -> None:
    """A TURN server with no IPv4 relay answers an Allocate that names no family with 440
    (Address Family not Supported, RFC 8656 §7.2): the client asks again for an IPv6
    relayed address (REQUESTED-ADDRESS-FAMILY), and two agents connect over such relays;
    the 440 failed the allocation, and no relay was gathered."""
    if not HAS_IPV6:
        pytest.skip("needs an IPv6 loopback address (::1)")
    require_turnserver()
    with run_coturn(relay_ip="::1") as server:
        config = _relay_config(server.ice_server("udp"))
        async with gathered_pair(config) as (a, b):
            for agent in (a, b):
                ((relay, _),) = agent._core.local_candidates
                assert relay.type is trice.CandidateType.RELAY and relay.address == "::1"
            signal(a, b)
            ca, cb = await connect_both(a, b)
            await exchange_each_way(ca, cb)


@pytest.mark.parametrize(
    "servers", [[], [trice.IceServer("stun:127.0.0.1:3478")]], ids=["no-server", "stun-only"]
)
async def test_the_relay_policy_with_no_turn_server_says_it_gathers_nothing(
    servers: list[trice.IceServer], caplog: pytest.LogCaptureFixture
) -> None:
    """RELAY with no TURN server can gather nothing: a gather report and a warning say so
    (gathering completed with no report and no line, and ICE failed some 25 s later)."""
    config = loopback_config(ice_servers=servers, transport_policy=trice.TransportPolicy.RELAY)
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        assert agent.local_candidates == ()
        (report,) = agent.gather_reports
    assert report.source == "relay" and report.error is not None
    assert "no TURN server" in report.error and "no TURN server" in caplog.text


async def test_the_nohost_policy_with_no_server_says_it_signals_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """NOHOST with no STUN or TURN server (nor external address) binds host sockets but
    signals nothing: a 'nohost' gather report and a warning say so, as for RELAY."""
    config = loopback_config(transport_policy=trice.TransportPolicy.NOHOST)
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        assert agent.local_candidates == ()
        reports = {r.source: r for r in agent.gather_reports}
    assert reports["host"].candidates == 1 and reports["host"].error is None
    assert reports["nohost"].error == (
        "policy nohost and no STUN or TURN server: no candidate can be signalled"
    )
    assert "no candidate can be signalled" in caplog.text


async def test_the_nohost_policy_says_so_too_with_an_external_address_in_the_hosts_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 1:1 NAT's address that stands in the host candidate's place (the HOST form) goes out
    with it, which NOHOST keeps in: with no server, nothing is signalled, and the same report
    and warning say so (the external address was taken for something to signal).  A lite
    agent may take the HOST form only."""
    config = loopback_config(transport_policy=trice.TransportPolicy.NOHOST)
    network = dataclasses.replace(
        config.network,
        external_addresses=["203.0.113.7"],
        external_candidate=trice.CandidateType.HOST,
    )
    config = dataclasses.replace(config, network=network)
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        assert agent.local_candidates == ()
        reports = {r.source: r for r in agent.gather_reports}
    assert "no candidate can be signalled" in str(reports["nohost"].error)
    assert "no candidate can be signalled" in caplog.text
    trice.AgentConfig(lite=True, network=network)  # (no ConfigError)


async def test_a_relayed_candidate_pairs_with_no_address_the_peer_hid_behind_a_name(
    coturn_tls: Coturn,
) -> None:
    """Alice signals her host candidate under a ``.local`` name only; Bob, who has a host
    and a relayed candidate, resolves it: his host candidate pairs with the address, his
    relayed one does not (the TURN server would learn what Alice hid: a check went there
    through the relay)."""
    alice_config = loopback_config()
    alice_config = dataclasses.replace(
        alice_config,
        network=dataclasses.replace(alice_config.network, mdns=trice.MdnsMode.QUERY_AND_GATHER),
    )
    bob_config = dataclasses.replace(loopback_config(), ice_servers=[coturn_tls.ice_server("udp")])
    async with gathered_pair(bob_config, alice_config) as (bob, alice):
        assert any(c.type is trice.CandidateType.RELAY for c in bob.local_candidates)
        assert all(c.address.endswith(".local") for c in alice.local_candidates)
        signal(alice, bob)
        await connect_both(alice, bob)
        remotes = {(s.pair.local.type, s.pair.remote.address) for s in bob.pair_statistics()}
        assert (trice.CandidateType.HOST, "127.0.0.1") in remotes
        assert not [r for r in remotes if r[0] is trice.CandidateType.RELAY and r[1] == "127.0.0.1"]


async def _dropping_proxy(
    front: trio.socket.SocketType, server_port: int, drop: Callable[[stun.Message], bool]
) -> None:
    """Forward datagrams from the agent on ``front`` to coturn at ``server_port`` and its
    answers back, but those the agent sends that ``drop`` picks."""
    upstream: dict[tuple[str, int], trio.socket.SocketType] = {}

    async def back(up: trio.socket.SocketType, client: tuple[str, int]) -> None:
        while True:
            await front.sendto(await up.recv(65535), client)

    try:
        async with trio.open_nursery() as nursery:
            while True:
                data, source = await front.recvfrom(65535)
                if stun.is_stun(data) and drop(stun.decode(data)):
                    continue
                up = upstream.get(source)
                if up is None:
                    up = upstream[source] = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
                    await up.bind(("127.0.0.1", 0))
                    nursery.start_soon(back, up, source)
                await up.sendto(data, ("127.0.0.1", server_port))
    finally:
        for up in upstream.values():
            up.close()


async def test_an_allocate_lost_three_times_after_its_challenge_still_relays(
    coturn: Coturn,
) -> None:
    """The authenticated Allocate (after the 401) lost three times in a row, coturn answering
    the fourth copy: the relay is gathered within the default ``gather_timeout`` (3 s).
    At 500 ms doubling the fourth copy went at 3.5 s, after it, and a relay-only agent
    had no candidate at all (at 15 % loss each way, 1 session in 5 so, Pion's none): it
    now goes at 0.7 s (see ``ALLOCATE_RTO_MIN``)."""
    lost: list[bytes] = []

    def drop(message: stun.Message) -> bool:
        if message.method is stun.Method.ALLOCATE and message.has_integrity and len(lost) < 3:
            lost.append(message.transaction_id)
            return True
        return False

    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as front:
        await front.bind(("127.0.0.1", 0))
        url = f"turn:127.0.0.1:{front.getsockname()[1]}?transport=udp"
        config = loopback_config(
            ice_servers=[trice.IceServer(url, USER, PASSWORD)],
            transport_policy=trice.TransportPolicy.RELAY,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_dropping_proxy, front, coturn.port, drop)
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(10):
                    await agent.wait_gathering_complete()
                types = [c.type for c in agent.local_candidates]
                reports = agent.gather_reports
            nursery.cancel_scope.cancel()
    assert len(lost) == 3
    assert types == [trice.CandidateType.RELAY], reports


@pytest.mark.skipif(not HAS_IPV6, reason="no ::1 on this host")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_turn_server_whose_name_has_both_families_gives_a_relay_over_the_one_served(
    transport: str,
) -> None:
    """The server listens on 127.0.0.1 only (its IPv6 path broken, say); its name stands
    for ::1 too, first (as RFC 6724 sorts them).  A dual-stack agent gathers a relay over
    either transport (RFC 8656 §3.9).  Over UDP the relay asked the first address only,
    was refused, and a relay-only agent had no candidate (the ipv6 review)."""
    require_turnserver()
    with run_coturn() as server:
        addresses: list[tuple[int, tuple[Any, ...]]] = [
            (socket.AF_INET6, ("::1", server.port, 0, 0)),
            (socket.AF_INET, ("127.0.0.1", server.port)),
        ]
        url = f"turn:turn.test:{server.port}?transport={transport}"
        config = dataclasses.replace(
            filtered_config(None),
            ice_servers=[trice.IceServer(url, USER, PASSWORD)],
            transport_policy=trice.TransportPolicy.RELAY,
        )
        with resolving("turn.test", addresses):
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(10):
                    await agent.wait_gathering_complete()
                found = [(c.type, c.address) for c in agent.local_candidates]
                assert found == [(trice.CandidateType.RELAY, "127.0.0.1")], agent.gather_reports


async def test_data_queued_for_a_tcp_relay_is_dropped_when_consent_expires() -> None:
    """RFC 7675 §5.1: once consent expired (``failed``), no data goes.  Over a TURN relay
    reached over TCP, the server stopped: the application fills the relay's stream buffer
    (up to 1 MiB), and consent expires.  What waits there is dropped then (it was written to
    the server once it ran again, and relayed to the peer: some 900 datagrams; what the
    kernel held goes still)."""
    require_turnserver()
    timing = trice.Timing(keepalive_interval=0.1, disconnected_timeout=0.3, failed_timeout=1.0)
    with run_coturn() as coturn:
        relay_config = loopback_config(
            ice_servers=[coturn.ice_server("tcp")],
            transport_policy=trice.TransportPolicy.RELAY,
            timing=dataclasses.replace(timing, gather_timeout=3.0),
        )
        async with gathered_pair(relay_config, loopback_config(timing=timing)) as (a, b):
            signal(a, b)
            ca, _cb = await connect_both(a, b)
            (relay,) = [t for t in a._transports.values() if isinstance(t, RelayTransport)]
            conn = relay._conn
            assert isinstance(conn, _relay._StreamConnection)
            datagram = b"\x80" + b"r" * 1199
            with stopped(coturn.pid):
                with trio.move_on_after(0.5):
                    while True:
                        while ca.send_nowait(datagram):
                            pass
                        await trio.sleep(0.01)
                assert len(conn.pending) > _relay.STREAM_BUFFER_LIMIT // 2
                await until(lambda: a.connection_state is trice.ConnectionState.FAILED, 5)
                assert len(conn.pending) == 0
            before = b.statistics()
            await trio.sleep(1.0)
            after = b.statistics()
            came = after.datagrams_dropped + after.datagrams_received
            came -= before.datagrams_dropped + before.datagrams_received
            assert came * len(datagram) < _relay.STREAM_BUFFER_LIMIT // 2, came
