"""trice against Chromium's ICE agent (libwebrtc), live, on loopback in a namespace of its own.

Each test starts its own headless Chromium (``tests/peers/chromium.py``: a namespace with
only ``lo``, a page driven over HTTP, SDP around trice's ufrag and pwd with a fake
fingerprint, trickle ICE both ways) and stops it.  ICE only: DTLS fails after ICE connects,
by design.  Needs root, iproute2 and Chromium; skips saying which is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

import trice

from loopback import loopback_config
from peers.chromium import (
    CHROMIUM_UP,
    Page,
    Report,
    Session,
    chromium_unavailable,
    open_chromium,
    open_session,
)

pytestmark = pytest.mark.interop

_UP = (trice.ConnectionState.CONNECTED, trice.ConnectionState.COMPLETED)
#: Bound on connecting (both sides), from the first offer, or a restart's, on.  (Here both
#: take well under a second; loading Chromium and its page is not counted.)
WITHIN = 10.0
OFFERERS = [True, False]
OFFERER_IDS = ["chromium-offers", "trice-offers"]


@pytest.fixture(autouse=True)
def chromium_here(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Skip, saying what is missing, unless root, Chromium and namespaces are there; and
    every check and STUN message of trice lands in the report of a failing test."""
    reason = chromium_unavailable()
    if reason is not None:
        pytest.skip(reason)
    caplog.set_level(trice.TRACE, logger="trice")
    yield


def _tcp_config() -> trice.AgentConfig:
    """ICE-TCP only: one passive host candidate on 127.0.0.1, no UDP."""
    config = loopback_config()
    network = dataclasses.replace(config.network, udp=False, tcp_candidates=[trice.TcpType.PASSIVE])
    return dataclasses.replace(config, network=network)


async def _trice_up(events: trice.EventStream, *, after_checking: bool = False) -> None:
    """Read the agent's events until its state is connected (or completed); with
    ``after_checking``, once it is so after ``checking`` (a restart's checks)."""
    checking = not after_checking
    async for event in events:
        if isinstance(event, trice.ConnectionStateChanged):
            assert event.state is not trice.ConnectionState.FAILED, "trice's ICE failed"
            checking = checking or event.state is trice.ConnectionState.CHECKING
            if checking and event.state in _UP:
                return
    raise AssertionError("trice's agent closed before it connected")


async def _chromium_pair(page: Page) -> Report:
    """Chromium's selected candidate pair (getStats), which must have been answered, and
    its ICE connection state connected.  (Its ``state`` reads ``in-progress`` while one of
    Chromium's checks on it, a keepalive too, waits for its answer: libwebrtc sets it at
    each check.)"""
    assert await page.run("return pc.iceConnectionState;") in CHROMIUM_UP, page.ice_states()
    selected = await page.selected_pair()
    assert selected is not None, f"Chromium selected no pair (states {page.ice_states()})"
    pair = selected["pair"]
    answered = (pair["state"], pair["nominated"], pair["responsesReceived"] >= 1)
    assert answered in (("succeeded", True, True), ("in-progress", True, True)), pair
    return selected


async def _roles_differ(page: Page, agent: trice.Agent) -> None:
    """One side controls, the other is controlled."""
    theirs = await page.ice_role()
    assert theirs == ("controlled" if agent.controlling else "controlling"), theirs


def _same_pair(selected: Report, agent: trice.Agent) -> None:
    """Chromium's selected pair is trice's, seen from the other end."""
    pair = agent.selected_pair
    assert pair is not None
    local, remote = selected["local"], selected["remote"]
    assert (local["address"], local["port"]) == (pair.remote.address, pair.remote.port)
    assert (remote["address"], remote["port"]) == (pair.local.address, pair.local.port)
    assert local["protocol"] == remote["protocol"] == pair.local.protocol


@contextlib.asynccontextmanager
async def _connected(
    chromium_offers: bool, config: trice.AgentConfig | None = None
) -> AsyncIterator[Session]:
    """Chromium and a trice agent (controlling if it offers), connected: both sides
    connected within ``WITHIN`` of the first offer."""
    async with (
        open_chromium() as page,
        trice.open_agent(config or loopback_config(), controlling=not chromium_offers) as agent,
        open_session(page, agent) as session,
    ):
        async with agent.subscribe() as events:
            with trio.fail_after(WITHIN):
                await session.negotiate(chromium_offers=chromium_offers)
                await _trice_up(events)
                await page.wait_ice_connected()
        yield session


def _fields(line: str) -> dict[str, Any]:
    """A candidate line's fields, split by hand (RFC 8839 §5.1)."""
    words = line.removeprefix("candidate:").split()
    pairs = dict(zip(words[6::2], words[7::2], strict=False))
    return {
        "foundation": words[0],
        "component": int(words[1]),
        "protocol": words[2].lower(),
        "priority": int(words[3]),
        "address": words[4],
        "port": int(words[5]),
        "type": pairs["typ"],
        "tcp_type": pairs.get("tcptype"),
    }


async def _read_as_written(session: Session, *kinds: tuple[str, str | None]) -> None:
    """Once Chromium is done gathering: trice read every candidate line Chromium gave (in
    its SDP or trickled) field by field as written, writes it back the same, and holds
    its UDP ones if it has UDP itself; lines of each of ``kinds`` (protocol, tcptype) were
    among them."""
    with trio.fail_after(WITHIN):
        await session.wait_chromium_gathered()
    lines = session.chromium_lines
    assert session.chromium_ice is not None
    ufrag = session.chromium_ice.ufrag
    assert set(kinds) <= {
        (_fields(line)["protocol"], _fields(line)["tcp_type"]) for line in lines
    }, lines
    for line in lines:
        candidate = trice.Candidate.from_sdp(line)
        tcp_type = candidate.tcp_type.value if candidate.tcp_type else None
        assert {
            "foundation": candidate.foundation,
            "component": candidate.component,
            "protocol": candidate.protocol,
            "priority": candidate.priority,
            "address": candidate.address,
            "port": candidate.port,
            "type": candidate.type.value,
            "tcp_type": tcp_type,
        } == _fields(line), line
        assert ("ufrag", ufrag) in candidate.extensions, line
        assert candidate.to_sdp() == line  # (extensions kept, in order)
    held = {(c.protocol, c.address, c.port) for c in session.agent.remote_candidates}
    udp = any(c.protocol == "udp" for c in session.agent.local_candidates)
    for line in lines:
        fields = _fields(line)
        if udp and fields["protocol"] == "udp":
            assert ("udp", fields["address"], fields["port"]) in held, (line, held)


@pytest.mark.parametrize("chromium_offers", OFFERERS, ids=OFFERER_IDS)
async def test_connect(chromium_offers: bool) -> None:
    """Both sides connect, in either role, on the same pair; trice reads Chromium's
    candidate lines (a UDP host one; an active TCP one too, if Chromium got to it before it
    connected and stopped gathering) as written."""
    async with _connected(chromium_offers) as session:
        agent, page = session.agent, session.page
        assert agent.controlling is not chromium_offers
        await _roles_differ(page, agent)
        assert agent.connection_state in _UP
        _same_pair(await _chromium_pair(page), agent)

        await _read_as_written(session, ("udp", None))


@pytest.mark.parametrize(
    ("by_chromium", "chromium_offers"),
    [(True, False), (False, True)],
    ids=["chromium-restarts-controlled", "trice-restarts-controlled"],
)
async def test_restart(by_chromium: bool, chromium_offers: bool) -> None:
    """An ICE restart offered by the side that answered at first (the controlled one):
    both sides connected again, on the new ufrags, within ``WITHIN``, in opposite roles."""
    async with _connected(chromium_offers) as session:
        agent, page = session.agent, session.page
        assert session.chromium_ice is not None
        old = (agent.local_parameters.ufrag, session.chromium_ice.ufrag)
        after = len(page.reports)
        async with agent.subscribe() as events:
            with trio.fail_after(WITHIN):
                await session.restart(by_chromium=by_chromium)
                new = (agent.local_parameters.ufrag, session.chromium_ice.ufrag)
                assert new[0] != old[0] and new[1] != old[1], (old, new)
                await _trice_up(events, after_checking=True)
                # (Chromium's iceConnectionState stays connected over a restart: its ICE
                # transport says when it selects a pair of the new generation.)
                await page.wait_for(
                    lambda r: (
                        r["type"] == "selectedpair"
                        and r["local"]["usernameFragment"] == new[1]
                        and r["remote"]["usernameFragment"] == new[0]
                    ),
                    after=after,
                )
        # (libwebrtc takes its role anew from the restart's offer/answer, the offerer
        # controlling, where trice keeps its own: a restart offered by the controlled side
        # makes both claim the same role, and the tie-breakers (or a 487) settle it, either
        # way round, RFC 8445 §7.3.1.1.)
        await _roles_differ(page, agent)
        assert agent.connection_state in _UP
        assert agent.remote_parameters is not None
        assert agent.remote_parameters.ufrag == new[1]
        _same_pair(await _chromium_pair(page), agent)


async def test_tcp_chromium_active_to_trice_passive() -> None:
    """trice gathers ICE-TCP only (``udp=False``, one passive candidate) and offers:
    Chromium's active TCP candidate connects to it (RFC 6544), and both sides select that
    TCP pair."""
    async with _connected(False, _tcp_config()) as session:
        agent, page = session.agent, session.page
        pair = agent.selected_pair
        assert pair is not None
        assert (pair.local.protocol, pair.local.tcp_type) == ("tcp", trice.TcpType.PASSIVE)
        assert pair.remote.tcp_type is trice.TcpType.ACTIVE
        selected = await _chromium_pair(page)
        _same_pair(selected, agent)
        assert agent.statistics().tcp_accepted >= 1
        await _read_as_written(session, ("tcp", "active"))
