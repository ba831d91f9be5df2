"""trice against real third-party ICE agents (aioice, Pion) on loopback host candidates.

trice runs in the test's own trio run, through its public API; the other peer is a
subprocess driven through the line protocol of ``tests/peers/harness.py``. One test also
runs trice's own peer program (``tests/peers/trice_peer.py``) against itself through the
harness, as the benchmarks do.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator

import pytest
import trio

import trice

from coturn import PASSWORD, USER, Coturn
from loopback import HAS_IPV6, loopback_config, state_of
from peers.harness import (
    ROLE_IDS,
    ROLES,
    Message,
    Peer,
    connect_pair,
    exchange,
    peer_command,
    peer_pair,
    restart_pair,
)

pytestmark = pytest.mark.interop

COUNT = 100
TIMEOUT = 20.0
KINDS = ["aioice", "pion"]
_UP = (trice.ConnectionState.CONNECTED, trice.ConnectionState.COMPLETED)
#: Consent checks every quarter second, disconnected after 0.6 s unheard.  (Consent, which
#: also bounds the wait for a controlling peer's nomination, was 1 s until 2026-12-05: Pion,
#: controlling on a loaded machine, once nominated later than that, 1 run in some 35.)
_SHORT_CONSENT = trice.Timing(keepalive_interval=0.25, disconnected_timeout=0.6, failed_timeout=2.0)


@pytest.fixture(autouse=True)
def trace_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every check and STUN message of trice lands in the report of a failing test."""
    caplog.set_level(trice.TRACE, logger="trice")
    yield


def _address(candidate_line: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    return ipaddress.ip_address(candidate_line.removeprefix("candidate:").split()[4])


def _assert_loopback(candidate_line: str, version: int) -> None:
    addr = _address(candidate_line)
    assert addr.is_loopback and addr.version == version, candidate_line


def _config(
    *, ipv6: bool = False, lite: bool = False, aggressive: bool = False
) -> trice.AgentConfig:
    return loopback_config(
        ipv6=ipv6,
        lite=lite,
        nomination=trice.Nomination.AGGRESSIVE if aggressive else trice.Nomination.REGULAR,
    )


async def _in_thread_expect(peer: Peer, kind: str) -> Message:
    return await trio.to_thread.run_sync(peer.expect, kind, TIMEOUT)


def _describe_to(peer: Peer, agent: trice.Agent, version: int) -> None:
    """Signal the agent's parameters, candidates and end-of-candidates to the peer."""
    ours = agent.local_parameters
    peer.send({"type": "parameters", "ufrag": ours.ufrag, "pwd": ours.pwd, "lite": ours.lite})
    for candidate in agent.local_candidates:
        _assert_loopback(candidate.to_sdp(), version)
        peer.send({"type": "candidate", "candidate": candidate.to_sdp()})
    peer.send({"type": "end-of-candidates"})


def _take_description(agent: trice.Agent, theirs: list[Message]) -> None:
    """Hand the agent the peer's description (as ``Peer.local_description`` read it)."""
    params, *candidates = theirs
    agent.set_remote_parameters(params["ufrag"], params["pwd"], lite=params["lite"])
    for msg in candidates:
        if msg["type"] == "candidate":
            agent.add_remote_candidate(trice.Candidate.from_sdp(msg["candidate"]))
        else:
            agent.add_remote_candidate(None)


async def _connected_with(agent: trice.Agent, peer: Peer) -> tuple[trice.Connection, list[Message]]:
    """Describe each side to the other (IPv4), start the peer, and connect, both ends:
    the agent's connection and the peer's description."""
    theirs = await trio.to_thread.run_sync(peer.local_description, TIMEOUT)
    with trio.fail_after(TIMEOUT):
        await agent.wait_gathering_complete()
    _describe_to(peer, agent, 4)
    _take_description(agent, theirs)
    peer.send({"type": "start"})
    with trio.fail_after(TIMEOUT):
        connection = await agent.connect()
    await _in_thread_expect(peer, "connected")
    return connection, theirs


async def _exchange_round(conn: trice.Connection, peer: Peer, kind: str, round_: int) -> None:
    """Data round ``round_``: ``COUNT`` datagrams each way; every one must arrive."""
    received = 0
    all_in = trio.Event()
    prefix = b"x%d" % round_

    async def count_received() -> None:
        nonlocal received
        async for data in conn:
            if data.partition(b"-")[0] == prefix:
                received += 1
                if received >= COUNT:
                    all_in.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count_received)
        peer.send({"type": "exchange", "count": COUNT})
        for i in range(COUNT):
            await conn.send(b"%s-%d" % (prefix, i))
        with trio.move_on_after(5):
            await all_in.wait()
        exchanged = await _in_thread_expect(peer, "exchanged")
        nursery.cancel_scope.cancel()
    assert exchanged == {"type": "exchanged", "sent": COUNT, "received": COUNT}, (
        f"{kind} got {exchanged['received']}/{COUNT} datagrams from trice in round {round_}"
    )
    assert received == COUNT, f"trice got {received}/{COUNT} datagrams from {kind}"


async def _run_with_peer(
    kind: str,
    *,
    trice_controlling: bool,
    ipv6: bool = False,
    trice_lite: bool = False,
    peer_lite: bool = False,
    aggressive: bool = False,
    peer_controlling: bool | None = None,
    restart: bool = False,
    relay: Coturn | None = None,
    linger: float = 0.0,
) -> None:
    """trice (in process) against a ``kind`` peer (subprocess): connect, then exchange
    ``COUNT`` datagrams each way and check that every one arrived on both sides.  With
    ``restart``, both then restart ICE, signal anew, connect again and exchange again.

    The peer takes the other role than trice unless ``peer_controlling`` says otherwise.
    With ``relay``, both sides gather only relayed candidates, from that coturn over UDP.
    With ``linger``, trice says disconnected after 0.6 s without hearing the peer
    (``_SHORT_CONSENT``), and the session must stay up ``linger`` seconds on the peer's
    answers alone (connected or completed throughout) before a second round of data.
    """
    version = 6 if ipv6 else 4
    if peer_controlling is None:
        peer_controlling = not trice_controlling
    extra: list[str] = []
    config = _config(ipv6=ipv6, lite=trice_lite, aggressive=aggressive)
    if relay is not None:
        url = f"turn:127.0.0.1:{relay.port}?transport=udp"
        extra = [f"--turn={url}", f"--username={USER}", f"--credential={PASSWORD}"]
        extra.append("--relay-only")
        config = dataclasses.replace(
            config,
            ice_servers=[relay.ice_server("udp")],
            transport_policy=trice.TransportPolicy.RELAY,
        )
    if linger:
        config = dataclasses.replace(config, timing=_SHORT_CONSENT)
    cmd = peer_command(kind, controlling=peer_controlling, ipv6=ipv6, lite=peer_lite, extra=extra)
    with Peer(cmd, name=kind) as peer:
        async with trice.open_agent(config, controlling=trice_controlling) as agent:
            theirs = await trio.to_thread.run_sync(peer.local_description, TIMEOUT)
            with trio.fail_after(TIMEOUT):
                await agent.wait_gathering_complete()
            assert agent.local_candidates, "trice gathered no candidate"
            _describe_to(peer, agent, version)
            _take_description(agent, theirs)
            peer.send({"type": "start"})

            with trio.fail_after(TIMEOUT):
                conn = await agent.connect()
            if peer_lite:
                assert agent.controlling, "a full agent facing a lite one must control"
            if trice_lite:
                assert not agent.controlling, "a lite agent is always controlled"
            assert agent.connection_state in (
                trice.ConnectionState.CONNECTED,
                trice.ConnectionState.COMPLETED,
            )
            _assert_loopback(conn.selected_pair.local.to_sdp(), version)
            _assert_loopback(conn.selected_pair.remote.to_sdp(), version)
            if relay is not None:
                assert conn.selected_pair.local.type is trice.CandidateType.RELAY
                assert conn.selected_pair.remote.type is trice.CandidateType.RELAY
            connected = await _in_thread_expect(peer, "connected")
            for key in ("local", "remote"):
                if key in connected:
                    _assert_loopback(connected[key], version)
            await _exchange_round(conn, peer, kind, 0)

            if linger:
                async with agent.subscribe() as events:
                    with trio.move_on_after(linger):
                        async for event in events:
                            if isinstance(event, trice.ConnectionStateChanged):
                                # (The stream starts with the state of now.)
                                assert event.state in _UP, event
                assert state_of(agent) in _UP
                await _exchange_round(conn, peer, kind, 1)

            if restart:
                before = agent.local_parameters
                agent.restart()
                assert state_of(agent) is trice.ConnectionState.CHECKING
                peer.send({"type": "restart"})
                theirs_again = await trio.to_thread.run_sync(peer.local_description, TIMEOUT)
                assert theirs_again[0]["ufrag"] != theirs[0]["ufrag"]
                _describe_to(peer, agent, version)
                _take_description(agent, theirs_again)
                with trio.fail_after(TIMEOUT):
                    again = await agent.connect()
                assert again is conn and agent.local_parameters.ufrag != before.ufrag
                reconnected = await _in_thread_expect(peer, "connected")
                if "remote" in reconnected:
                    # (the peer's view of the new pair: its remote is trice's candidate)
                    _assert_loopback(reconnected["remote"], version)
                await _exchange_round(conn, peer, kind, 1)
            assert agent.statistics().datagrams_dropped == 0


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("kind", KINDS, indirect=True)
async def test_ipv4(kind: str, trice_controlling: bool) -> None:
    await _run_with_peer(kind, trice_controlling=trice_controlling)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1) here")
@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("kind", KINDS, indirect=True)
async def test_ipv6(kind: str, trice_controlling: bool) -> None:
    # Both aioice and the Pion peer support ::1 (the Pion peer through its own UDP mux).
    await _run_with_peer(kind, trice_controlling=trice_controlling, ipv6=True)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=["told-controlling", "told-controlled"])
@pytest.mark.parametrize("kind", ["pion"], indirect=True)
async def test_trice_full_to_pion_lite(kind: str, trice_controlling: bool) -> None:
    # A full agent facing a lite one takes the controlling role (RFC 8445 §6.1.1), even
    # when it was opened as controlled.  The lite peer is always controlled: told to be
    # controlling, Pion's lite agent claims ICE-CONTROLLING too, and as Pion ignores 487
    # (Role Conflict) answers and drops ICE-CONTROLLING requests, that pair cannot work.
    await _run_with_peer(
        kind, trice_controlling=trice_controlling, peer_lite=True, peer_controlling=False
    )


@pytest.mark.parametrize("kind", KINDS, indirect=True)
async def test_full_peer_to_trice_lite(kind: str) -> None:
    await _run_with_peer(kind, trice_controlling=False, trice_lite=True)


@pytest.mark.parametrize("kind", KINDS, indirect=True)
async def test_trice_aggressive_nomination(kind: str) -> None:
    await _run_with_peer(kind, trice_controlling=True, aggressive=True)


# --------------------------------------------------------------------------- trice's peer


def test_trice_peer_to_trice_peer() -> None:
    """trice's own peer program on both sides, through the harness (as the benchmarks)."""
    cmd_a = peer_command("trice", controlling=True)
    cmd_b = peer_command("trice", controlling=False)
    with peer_pair(cmd_a, cmd_b) as (a, b):
        connected = connect_pair(a, b)
        for msg in (connected.a, connected.b):
            _assert_loopback(msg["local"], 4)
            _assert_loopback(msg["remote"], 4)
        assert connected.elapsed_ms > 0
        ex_a, ex_b = exchange(a, b, COUNT)
        assert ex_a == {"type": "exchanged", "sent": COUNT, "received": COUNT}
        assert ex_b == {"type": "exchanged", "sent": COUNT, "received": COUNT}
        ex_a, ex_b = exchange(a, b, 5)
        assert (ex_a["received"], ex_b["received"]) == (5, 5)


@pytest.mark.parametrize(
    ("kind_a", "kind_b"),
    [("trice", "pion"), ("pion", "trice"), ("trice", "trice"), ("pion", "pion")],
    ids=["trice-pion", "pion-trice", "trice-trice", "pion-pion"],
)
def test_restart_through_the_harness(
    kind_a: str, kind_b: str, request: pytest.FixtureRequest
) -> None:
    """Both peer programs restart ICE (``restart_pair``) and carry data again: trice's and
    Pion's, each way round (Pion with itself shows the harness's own restart works)."""
    if "pion" in (kind_a, kind_b):
        request.getfixturevalue("pion_available")
    cmd_a = peer_command(kind_a, controlling=True)
    cmd_b = peer_command(kind_b, controlling=False)
    with peer_pair(cmd_a, cmd_b) as (a, b):
        connect_pair(a, b)
        assert (
            exchange(a, b, COUNT) == ({"type": "exchanged", "sent": COUNT, "received": COUNT},) * 2
        )
        again = restart_pair(a, b)
        for msg in (again.a, again.b):
            assert msg["elapsed_ms"] > 0
            if "local" in msg:
                _assert_loopback(msg["local"], 4)
        assert (
            exchange(a, b, COUNT) == ({"type": "exchanged", "sent": COUNT, "received": COUNT},) * 2
        )


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_trice_peer_gathers_only_loopback(ipv6: bool) -> None:
    if ipv6 and not HAS_IPV6:
        pytest.skip("no IPv6 loopback (::1) here")
    with Peer(peer_command("trice", controlling=True, ipv6=ipv6)) as peer:
        params, *candidates, end = peer.local_description()
    assert params["type"] == "parameters" and params["ufrag"] and params["pwd"]
    assert params["lite"] is False
    assert end == {"type": "end-of-candidates"}
    assert candidates, "no candidate gathered"
    for msg in candidates:
        assert _address(msg["candidate"]) == ipaddress.ip_address("::1" if ipv6 else "127.0.0.1")
        assert " typ host" in msg["candidate"]


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("kind", ["pion"], indirect=True)
async def test_ice_restart(kind: str, trice_controlling: bool) -> None:
    """Both sides restart ICE (Pion's Agent.Restart, which gathers anew, so its candidates
    change), signal anew and connect again; data flows over the new pair."""
    await _run_with_peer(kind, trice_controlling=trice_controlling, restart=True)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("kind", KINDS, indirect=True)
async def test_the_peer_answers_consent(kind: str, trice_controlling: bool) -> None:
    """RFC 7675 with another agent: trice's consent checks, every quarter second, are
    answered on the selected pair for three seconds (five times the silence after which
    trice says disconnected here), never disconnected, and data flows after."""
    await _run_with_peer(kind, trice_controlling=trice_controlling, linger=3.0)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("kind", KINDS, indirect=True)
async def test_relay_to_relay(kind: str, trice_controlling: bool, coturn: Coturn) -> None:
    """Both sides relay-only through one coturn: the pair selected is relay to relay on
    either side, and every datagram arrives, each way."""
    await _run_with_peer(kind, trice_controlling=trice_controlling, relay=coturn)


@pytest.mark.parametrize("trice_wins", [False, True], ids=["trice-loses", "trice-wins"])
@pytest.mark.parametrize("both_controlling", [True, False], ids=["both-ctl", "both-ctd"])
async def test_a_role_switch_on_pions_check_connects_at_once(
    both_controlling: bool, trice_wins: bool, request: pytest.FixtureRequest
) -> None:
    """trice and Pion open in one role.  Pion drops requests that claim its own role, and
    reads no 487.  When the tie-breakers make trice switch, it does on Pion's first check,
    while its own first check is in flight: it checks again with its new role and connects
    well before that first check would have given up (15.5 s), which it had waited for.
    When they make trice keep its role, its 487s go unheeded: Pion's checks still claim
    that role a second later, and trice gives way (they failed to connect at all)."""
    request.getfixturevalue("pion_available")
    with Peer(peer_command("pion", controlling=both_controlling), name="pion") as peer:
        async with trice.open_agent(loopback_config(), controlling=both_controlling) as agent:
            # (The larger tie-breaker keeps controlling, and makes a controlled agent switch.)
            larger = both_controlling is trice_wins
            agent._core.tiebreaker = 2**64 - 1 if larger else 0
            theirs = await trio.to_thread.run_sync(peer.local_description, TIMEOUT)
            await agent.wait_gathering_complete()
            ours = agent.local_parameters
            peer.send({"type": "parameters", "ufrag": ours.ufrag, "pwd": ours.pwd, "lite": False})
            for candidate in agent.local_candidates:
                peer.send({"type": "candidate", "candidate": candidate.to_sdp()})
            peer.send({"type": "end-of-candidates"})
            parameters, *rest = theirs
            agent.set_remote_parameters(parameters["ufrag"], parameters["pwd"])
            for message in rest:
                line = message.get("candidate")
                agent.add_remote_candidate(None if line is None else trice.Candidate.from_sdp(line))
            peer.send({"type": "start"})
            with trio.fail_after(8):
                await agent.connect()
            assert agent.controlling is not both_controlling
            assert agent.statistics().role_switches == 1
            assert ("ignores role conflicts" in agent._core.switched_because) is trice_wins
            await trio.to_thread.run_sync(peer.expect, "connected", TIMEOUT)


@pytest.mark.parametrize("kind", ["pion"], indirect=True)
async def test_a_lite_trice_stays_up_under_steady_data(kind: str) -> None:
    """A lite trice (which sends no checks), Pion controlling, datagrams each way every
    20 ms for three times the consent the short timing allows: Pion checks only a pair
    gone idle, so none of its checks come, and the data keeps consent (trice went
    ``failed`` at failed_timeout, on a healthy session)."""
    config = dataclasses.replace(_config(lite=True), timing=_SHORT_CONSENT)
    cmd = peer_command(kind, controlling=True, extra=["--echo"])
    with Peer(cmd, name=kind) as peer:
        async with trice.open_agent(config, controlling=False) as agent:
            conn, _ = await _connected_with(agent, peer)
            echoed = 0

            async def count_echoes() -> None:
                nonlocal echoed
                async for _ in conn:
                    echoed += 1

            async with agent.subscribe() as events, trio.open_nursery() as nursery:
                nursery.start_soon(count_echoes)
                with trio.move_on_after(3 * _SHORT_CONSENT.failed_timeout):
                    async with trio.open_nursery() as sending:

                        async def send() -> None:
                            for i in range(10**6):
                                await conn.send(b"steady-%d" % i)
                                await trio.sleep(0.02)  # (the pace of the traffic)

                        sending.start_soon(send)
                        async for event in events:
                            if isinstance(event, trice.ConnectionStateChanged):
                                assert event.state in _UP, event
                nursery.cancel_scope.cancel()
            assert state_of(agent) in _UP and echoed > 50
