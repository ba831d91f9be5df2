"""Two trice agents on loopback: connect, nominate, trickle, fail, carry data, close."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import errno
import functools
import gc
import ipaddress
import itertools
import logging
import math
import os
import pathlib
import socket
import struct
import subprocess
import sys
import time
import warnings
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import hypothesis
import pytest
import trio
import trio.testing
from hypothesis import strategies as st

import trice
import trice._trio._agent
import trice._trio._checks
import trice._trio._timers
import trice._trio._transport
from trice import stun
from trice._trio._transport import READ_BATCH, UdpTransport
from trice.ice._core import PINGBACK_MIN, AgentCore

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

from loopback import (
    HAS_IPV6,
    agents_alive,
    answer_check,
    connect_both,
    cycle_collector_off,
    events_so_far,
    exchange_each_way,
    filtered_config,
    gathered_pair,
    held_in_another_run,
    loopback_config,
    open_fds,
    peer_check,
    room_for_a_flood,
    send_wide_views,
    signal,
    state_of,
    states_so_far,
    until,
    wait_for_state,
    walk_tasks,
    what_each_raises,
)
from virtual_time import task_steps_while_sleeping, wall_clock_guard


async def _connected_pair(
    a: trice.Agent, b: trice.Agent
) -> tuple[trice.Connection, trice.Connection]:
    await a.wait_gathering_complete()
    await b.wait_gathering_complete()
    signal(a, b)
    return await connect_both(a, b)


async def _exchange(ca: trice.Connection, cb: trice.Connection, count: int = 20) -> None:
    for i in range(count):
        await ca.send(b"a%d" % i)
        assert await cb.receive() == b"a%d" % i
        await cb.send(b"b%d" % i)
        assert await ca.receive() == b"b%d" % i


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("a_controlling", [True, False], ids=["a-controlling", "a-controlled"])
async def test_connect_and_exchange(ipv6: bool, a_controlling: bool) -> None:
    if ipv6 and not HAS_IPV6:
        pytest.skip("this host has no IPv6 loopback (::1 cannot be bound)")
    config = loopback_config(ipv6=ipv6)
    async with (
        trice.open_agent(config, controlling=a_controlling) as a,
        trice.open_agent(config, controlling=not a_controlling) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        family = ":" if ipv6 else "."
        assert family in ca.selected_pair.local.address
        assert ca.selected_pair.local == cb.selected_pair.remote
        assert ca.selected_pair.remote == cb.selected_pair.local
        assert a.controlling is a_controlling
        await _exchange(ca, cb)
        await send_wide_views(ca, cb)


async def test_pair_statistics_show_the_selected_pair_and_its_round_trip() -> None:
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        assert a.pair_statistics() == ()  # (no remote candidate yet, so no pair)
        began = trio.current_time()
        ca, cb = await _connected_pair(a, b)
        for agent, conn in ((a, ca), (b, cb)):
            stats = agent.pair_statistics()
            (selected,) = (s for s in stats if s.selected)
            assert selected.pair == conn.selected_pair
            assert selected.state is trice.PairState.SUCCEEDED and selected.nominated
            assert selected.checks_sent >= 1 and selected.responses_received >= 1
            assert selected.requests_received >= 1
            assert selected.round_trip_time is not None and 0 < selected.round_trip_time < 1.0
            assert selected.round_trip_time_samples >= 1
            assert selected.total_round_trip_time >= selected.round_trip_time
            assert sum(s.checks_sent for s in stats) == agent.statistics().checks_sent
            times = (
                selected.last_check_sent,
                selected.last_request_received,
                selected.last_response_received,
            )
            assert all(t is not None and began <= t <= trio.current_time() for t in times)
        pairs = [s.pair for s in a.pair_statistics()]
    assert [s.pair for s in a.pair_statistics()] == pairs  # (still there once closed)


async def test_an_answer_to_a_check_that_went_twice_is_counted_not_timed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Karn's rule, in the shell: a's first check is lost on its way out, and goes again (at
    once when b's check crosses it, or at its RTO); the answer may be to either copy, so it
    is counted but not timed (else it would count from the first copy, lost)."""
    lost: list[bytes] = []
    send_nowait = UdpTransport.send_nowait
    a_transports: set[UdpTransport] = set()

    def losing_send(
        self: UdpTransport, data: bytes, address: tuple[str, int], *, retry: bool = False
    ) -> bool:
        if not lost and self in a_transports and data[:2] == b"\x00\x01":  # a Binding request
            lost.append(data[8:20])
            return True
        return send_nowait(self, data, address, retry=retry)

    monkeypatch.setattr(UdpTransport, "send_nowait", losing_send)
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        a_transports.update(t for t in a._transports.values() if isinstance(t, UdpTransport))
        await _connected_pair(a, b)
        (selected,) = (s for s in a.pair_statistics() if s.selected)
    assert lost  # (the first check did go missing)
    assert selected.round_trip_time_samples == selected.responses_received - 1
    assert selected.round_trip_time is not None and selected.round_trip_time < 0.4


@pytest.mark.parametrize("nomination", list(trice.Nomination))
async def test_nomination_modes(nomination: trice.Nomination) -> None:
    config = loopback_config(nomination=nomination)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        await _exchange(ca, cb, 3)
        assert a.selected_pair is not None and b.selected_pair is not None


@pytest.mark.parametrize("lite_side", ["a", "b"])
@pytest.mark.parametrize("full_controls", [True, False], ids=["full-controls", "full-controlled"])
async def test_lite_against_full(
    lite_side: str, full_controls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The lite agent asks to be controlling: ICE-lite is always controlled against a full
    peer.  A full agent opened controlled takes the controlling role when it learns that
    its peer is lite, and says so."""
    caplog.set_level(logging.INFO, logger="trice")
    full, lite = loopback_config(), loopback_config(lite=True)
    a_opens, b_opens = (lite, full) if lite_side == "a" else (full, lite)
    async with (
        trice.open_agent(a_opens, controlling=True if lite_side == "a" else full_controls) as a,
        trice.open_agent(b_opens, controlling=full_controls if lite_side == "a" else True) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        lite_agent, full_agent = (a, b) if lite_side == "a" else (b, a)
        assert lite_agent.local_parameters.lite
        assert not lite_agent.controlling and full_agent.controlling
        assert lite_agent.statistics().checks_sent == 0
        assert lite_agent.statistics().role_switches == 0
        switched = full_agent.statistics().role_switches
        assert switched == (0 if full_controls else 1)
        said = f"{full_agent.local_parameters.ufrag}: now controlling (the peer is ICE-lite)"
        assert (said in caplog.text) is bool(switched)
        await _exchange(ca, cb, 3)


async def test_a_lite_agent_takes_no_nomination_from_a_check_naming_another_ufrag(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before an ICE-lite agent has its peer's parameters, a nominating check naming another
    ufrag (a forked offer's other answerer, who holds the agent's credentials too) comes
    first, then the peer's own checks: once the peer's parameters come, the agent selects
    the peer's pair, and no data goes to the other.  It selected the other at once (its
    check was of a higher priority), and sent its data there (the suspects41b review)."""
    async with (
        trice.open_agent(loopback_config(lite=True), controlling=False) as b,
        trice.open_agent(loopback_config(), controlling=True) as a,
    ):
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as fork:
            await fork.bind(("127.0.0.1", 0))
            await b.wait_gathering_complete()
            await a.wait_gathering_complete()
            (host,) = b.local_candidates
            check = peer_check(b, "fork", priority=2**31 - 1, controlling=True, nominate=True)
            await fork.sendto(check, host.transport_address)
            answer, _ = await fork.recvfrom(2048)
            assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS
            a.set_remote_parameters(b.local_parameters.ufrag, b.local_parameters.pwd, lite=True)
            a.add_remote_candidate(host)
            with trio.fail_after(5):
                ca = await a.connect()  # (the peer checked, and nominated, before b knew it)
            signal(a, b)
            with trio.fail_after(5):
                cb = await b.connect()
            assert (
                cb.selected_pair.remote.transport_address
                == ca.selected_pair.local.transport_address
            )
            await _exchange(ca, cb, 3)
            await cb.send(b"to the peer")
            assert await ca.receive() == b"to the peer"
            with trio.move_on_after(1) as waited:  # (virtual time)
                await fork.recvfrom(2048)
            assert waited.cancelled_caught  # (nothing more came to the other answerer)


async def test_a_lite_offerer_whose_answer_comes_late_connects_once_it_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ICE-lite offerer: the full answerer has its parameters and candidates, checks and
    nominates at once, and keeps consent; its answer (its parameters) reaches the lite
    agent 6 s later, past ``failed_timeout`` (5 s): the lite agent connects then.  The
    early nomination started its failure clock: it failed at 5 s, and the session with it
    (the p41pass1 review)."""
    timing = trice.Timing(keepalive_interval=1.0, disconnected_timeout=2.0, failed_timeout=5.0)
    async with (
        trice.open_agent(loopback_config(lite=True, timing=timing), controlling=False) as lite,
        trice.open_agent(loopback_config(timing=timing), controlling=True) as full,
        trio.open_nursery() as nursery,
    ):
        await lite.wait_gathering_complete()
        await full.wait_gathering_complete()
        ours = lite.local_parameters
        full.set_remote_parameters(ours.ufrag, ours.pwd, lite=True)
        for candidate in lite.local_candidates:
            full.add_remote_candidate(candidate)
        full.add_remote_candidate(None)
        nursery.start_soon(full.connect)
        await trio.sleep(6)  # (virtual: the answer is on its way)
        theirs = full.local_parameters
        lite.set_remote_parameters(theirs.ufrag, theirs.pwd)
        for candidate in full.local_candidates:
            lite.add_remote_candidate(candidate)
        lite.add_remote_candidate(None)
        with trio.fail_after(5):
            connection = await lite.connect()
        assert lite.connection_state is trice.ConnectionState.COMPLETED
        assert connection.selected_pair.remote.port == full.local_candidates[0].port
        nursery.cancel_scope.cancel()


async def test_two_lite_agents_are_refused_at_once() -> None:
    """Two ICE-lite agents send no checks: the second's parameters are refused with a
    ConfigError that says why (not an ICE failure at failed_timeout), and nothing is set."""
    lite = loopback_config(lite=True)
    async with (
        trice.open_agent(lite, controlling=True) as a,
        trice.open_agent(lite, controlling=False) as b,
    ):
        params = b.local_parameters
        with pytest.raises(trice.ConfigError, match="two lite agents"):
            a.set_remote_parameters(params.ufrag, params.pwd, lite=params.lite)
        assert a._core.remote is None
        a.set_remote_parameters(params.ufrag, params.pwd, lite=False)  # (nothing was set)


@pytest.mark.parametrize("role", [True, False], ids=["both-controlling", "both-controlled"])
async def test_role_conflict(role: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Both sides claim the same role; the tie-breaker settles it (RFC 8445 §7.3.1.1): one
    of them takes the other role, counts it and says so."""
    caplog.set_level(logging.INFO, logger="trice")
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=role) as a,
        trice.open_agent(config, controlling=role) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        assert a.controlling != b.controlling
        switched = [x for x in (a, b) if x.statistics().role_switches]
        assert len(switched) == 1 and switched[0].statistics().role_switches == 1
        (agent,) = switched
        role_now = "controlling" if agent.controlling else "controlled"
        assert f"{agent.local_parameters.ufrag}: now {role_now} (a role conflict" in caplog.text
        await _exchange(ca, cb, 3)


async def test_trickle_candidates_before_parameters() -> None:
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        for here, there in ((a, b), (b, a)):
            for candidate in there.local_candidates:
                here.add_remote_candidate(candidate)
        for here, there in ((a, b), (b, a)):
            p = there.local_parameters
            here.set_remote_parameters(p.ufrag, p.pwd)
        await connect_both(a, b)


@pytest.mark.parametrize("b_controlling", [False, True])
async def test_the_peers_checks_start_ours_before_connect_is_called(b_controlling: bool) -> None:
    """b holds a's parameters and candidates but nobody calls its connect(): a's checks
    start b's (RFC 8445 §7.3.1.4), and b reaches connected all the same; its connect(),
    called then, returns the selected pair at once."""
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=b_controlling) as b,
        b.subscribe() as events,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        assert b.connection_state is trice.ConnectionState.NEW
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.connect)
            with trio.fail_after(10):
                await wait_for_state(events, trice.ConnectionState.CONNECTED)
        assert b.statistics().checks_sent >= 1
        assert b.selected_pair is not None
        with trio.fail_after(1):
            conn = await b.connect()
        assert conn.selected_pair == b.selected_pair


async def test_trickle_after_connect_starts_without_end_of_candidates() -> None:
    config = loopback_config()
    done: dict[str, trice.Connection] = {}

    async def run(name: str, agent: trice.Agent) -> None:
        done[name] = await agent.connect()

    with trio.fail_after(10):
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
            trio.open_nursery() as nursery,
        ):
            # connect() first: nothing is known yet.
            nursery.start_soon(run, "a", a)
            nursery.start_soon(run, "b", b)
            await trio.testing.wait_all_tasks_blocked()
            assert a.connection_state is trice.ConnectionState.NEW
            for here, there in ((a, b), (b, a)):
                p = there.local_parameters
                here.set_remote_parameters(p.ufrag, p.pwd)
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            # Only a learns b's candidates: b learns a's as peer-reflexive from a's checks.
            for candidate in b.local_candidates:
                a.add_remote_candidate(candidate)
    # Leaving the nursery above means both connect() calls returned.
    assert done["b"].selected_pair.remote.type is trice.CandidateType.PRFLX


def _face(agent: trice.Agent, port: int, *, ufrag: str = "abcd", end: bool = True) -> None:
    """Signal to ``agent`` a peer whose only candidate is ``127.0.0.1:port`` (a socket the
    test holds, which answers only what the test makes it answer)."""
    agent.set_remote_parameters(ufrag, "x" * 22)
    agent.add_remote_candidate(
        trice.Candidate.from_sdp(f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host")
    )
    if end:
        agent.add_remote_candidate(None)


@contextlib.asynccontextmanager
async def _checked_by_its_peer(
    peer: socket.socket,
) -> AsyncIterator[tuple[trice.Agent, stun.Message, tuple[str, int]]]:
    """An agent (controlling) connecting to the test's ``peer`` socket (bound, non-blocking):
    the peer takes its first check, and 20 ms later checks it with its parameters, which
    the agent answers (taken off the socket).  Yields the agent, its check and its address;
    the virtual clock stands 20 ms after the check."""
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        await a.wait_gathering_complete()
        _face(a, peer.getsockname()[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.connect)
            await trio.testing.wait_all_tasks_blocked()
            data, source = peer.recvfrom(2048)  # the agent's check
            await trio.sleep(0.02)  # (its next copy: at twice this age, or its RTO)
            peer.sendto(peer_check(a), source)
            await trio.testing.wait_all_tasks_blocked()
            answer = stun.decode(peer.recv(2048))
            assert answer.message_class is stun.MessageClass.SUCCESS
            yield a, stun.decode(data), source
            nursery.cancel_scope.cancel()


def _sent_since(peer: socket.socket) -> list[bytes]:
    """The transaction ids of what the agent sent the peer since last read."""
    ids = []
    with contextlib.suppress(BlockingIOError):
        while True:
            ids.append(stun.decode(peer.recv(2048)).transaction_id)
    return ids


async def test_a_401_after_the_peers_check_sends_the_check_again_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The peer checks the agent with its parameters, then answers the agent's check 401
    (made before it held them, after a restart): the check goes again at once, as the same
    transaction, no time passing (the answer, taken by the check's task, asked for a
    resend that waited for the agent's next turn)."""
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with _checked_by_its_peer(peer) as (_a, check, source):
            start = trio.current_time()
            peer.sendto(check.error_response(401, "Unauthorized").encode(fingerprint=True), source)
            await trio.testing.wait_all_tasks_blocked()
            assert check.transaction_id in _sent_since(peer)
            assert trio.current_time() == start


@pytest.mark.parametrize("refused", [True, False], ids=["a-401-waits", "nothing-waits"])
async def test_a_401_read_by_the_checks_task_at_its_rto_sends_one_copy(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, refused: bool
) -> None:
    """At its RTO the check's task first reads what its socket holds: there, the peer's 401
    to the check (made before the peer held our parameters; it has checked us since).  One
    copy goes, not two in the same instant (the copy that 401 asked for, and the one due)."""
    from trice._trio._checks import CheckRun

    waiting: list[tuple[bytes, tuple[str, int]]] = []  # (the 401, as if unread)
    answered_meanwhile = CheckRun._answered_meanwhile

    def reading_the_401(run: CheckRun) -> bool:
        if waiting:
            run.agent._on_stun(run.transport, *waiting.pop())
        return answered_meanwhile(run)

    monkeypatch.setattr(CheckRun, "_answered_meanwhile", reading_the_401)
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with _checked_by_its_peer(peer) as (a, check, _source):
            started = trio.current_time() - 0.02
            await trio.sleep(0.1)  # (its copy at twice its age has gone)
            _sent_since(peer)
            if refused:
                refusal = check.error_response(401, "Unauthorized").encode(fingerprint=True)
                waiting.append((refusal, peer.getsockname()))
            await trio.sleep_until(started + a.config.timing.rto)
            await trio.testing.wait_all_tasks_blocked()
            assert not waiting  # (the check's task read it)
            assert _sent_since(peer).count(check.transaction_id) == 1


async def test_unworkable_pair_fails_within_failed_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The remote candidate points at a port nobody answers on.  Virtual time: nothing ever
    # answers, so the clock may jump whenever every task waits, and the timers are exact.
    timing = trice.Timing(
        ta=0.01,
        rto=0.05,
        rto_max=0.1,
        max_binding_requests=3,
        disconnected_timeout=0.5,
        failed_timeout=0.5,
    )
    config = loopback_config(timing=timing)
    with wall_clock_guard():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            silent.setblocking(False)
            port = silent.getsockname()[1]
            async with trice.open_agent(config, controlling=True) as a:
                _face(a, port, end=False)
                start = trio.current_time()
                with trio.fail_after(60), pytest.raises(trice.IceFailedError):  # a hang guard
                    await a.connect()
                elapsed = trio.current_time() - start
                assert a.connection_state is trice.ConnectionState.FAILED
            requests = 0
            while True:
                try:
                    silent.recv(2048)
                except BlockingIOError:
                    break
                requests += 1
        # The check gave up after its transmissions (at 0.25 s), but more candidates may still
        # trickle in (no end-of-candidates): ICE fails at the failed timeout, neither sooner nor
        # (the default being 25 s) later.
        assert requests == timing.max_binding_requests
        assert elapsed == pytest.approx(timing.failed_timeout)


async def test_all_pairs_failed_with_end_of_candidates_fails_early() -> None:
    timing = trice.Timing(ta=0.01, rto=0.05, rto_max=0.1, max_binding_requests=2)
    config = loopback_config(timing=timing)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        async with trice.open_agent(config, controlling=True) as a:
            await a.wait_gathering_complete()
            _face(a, port)
            with trio.fail_after(3), pytest.raises(trice.IceFailedError):
                await a.connect()  # well before the 25 s failed timeout


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
async def test_no_pair_of_a_family_in_common_fails_when_the_pac_timer_ends() -> None:
    """An agent with 127.0.0.1 only and one with ::1 only: no pair can be formed, and with
    both sides' candidates complete ``connect()`` fails on both (RFC 8838 §8) when the PAC
    timer ends (RFC 8863: a check of the peer's might still have come), not after the
    failed timeout."""
    timing = trice.Timing(rto=0.1, rto_max=0.2, max_binding_requests=3, pac_timeout=0.5)
    async with (
        trice.open_agent(loopback_config(timing=timing), controlling=True) as a,
        trice.open_agent(loopback_config(ipv6=True, timing=timing), controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        with trio.fail_after(3):
            for agent in (a, b):
                start = trio.current_time()
                with pytest.raises(trice.IceFailedError, match="no candidate pair works"):
                    await agent.connect()
                assert trio.current_time() - start >= 0.5


@pytest.mark.parametrize("end", [False, True], ids=["no-end", "end"])
@pytest.mark.parametrize("policy", ["relay", "nohost"])
async def test_an_agent_that_gathered_no_candidate_fails_as_checks_begin(
    autojump_clock: trio.testing.MockClock, policy: str, end: bool
) -> None:
    """A relay-only agent whose TURN server never answered gathered nothing, and a NOHOST
    one whose STUN and TURN servers never answered has host candidates only, which it
    never signals nor pairs: ``connect()`` fails as soon as it is called, saying it has no
    candidate, not when the PAC timer ends (15.5 s: it waits for a check of the peer's,
    and none can come to an agent with no address), and whether or not the peer's
    end-of-candidates came (the peer's candidates, whatever they are, pair with none of
    its).  (The NOHOST one failed after the PAC timer or ``failed_timeout``: the p48pass
    review.)"""
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        if policy == "relay":
            urls = [f"turn:127.0.0.1:{port}"]
            transport_policy = trice.TransportPolicy.RELAY
        else:
            urls = [f"stun:127.0.0.1:{port}", f"turn:127.0.0.1:{port}"]
            transport_policy = trice.TransportPolicy.NOHOST
        config = loopback_config(
            ice_servers=[trice.IceServer(urls, "user", "pass")],
            transport_policy=transport_policy,
            timing=trice.Timing(gather_timeout=1.0),
        )
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(loopback_config(), controlling=False) as b,
        ):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            assert a.local_candidates == () and b.local_candidates
            signal(a, b, end=end)
            start = trio.current_time()
            with pytest.raises(trice.IceFailedError, match="no local candidate"):
                await a.connect()
            assert trio.current_time() - start == 0
            assert a.connection_state is trice.ConnectionState.FAILED


async def test_a_nomination_cancels_the_checks_in_flight_on_other_pairs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A controlling agent (regular nomination) facing a peer with one more candidate, of
    higher priority, that never answers (a socket that only listens): it nominates the
    working pair once the nomination delay has passed, and its check in flight to the
    silent one is cancelled then (RFC 8445 §8.1.2): not sent again (at its RTO, 0.5 s after
    its first transmission, it would have been), and ``completed`` comes with the
    selection, not when that check would give up (15.5 s).  (b's own candidate is signalled
    one local preference lower: a lone address's has the highest, 65535.)  In virtual
    time: the nomination must come within the silent check's RTO, which a loaded machine's
    stall could otherwise outlast (the flakesA review)."""
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.setblocking(False)
        port = silent.getsockname()[1]
        async with gathered_pair(loopback_config()) as (a, b):
            params = a.local_parameters
            b.set_remote_parameters(params.ufrag, params.pwd)
            for candidate in a.local_candidates:
                b.add_remote_candidate(candidate)
            params = b.local_parameters
            a.set_remote_parameters(params.ufrag, params.pwd)
            for candidate in b.local_candidates:
                a.add_remote_candidate(
                    dataclasses.replace(candidate, priority=candidate.priority - 256)
                )
            a.add_remote_candidate(
                trice.Candidate.from_sdp(
                    f"candidate:silent 1 udp 2130706431 127.0.0.1 {port} typ host"
                )
            )
            a.add_remote_candidate(None)
            b.add_remote_candidate(None)
            async with a.subscribe() as events:
                await connect_both(a, b)
                with trio.fail_after(3):  # (before, it came at 15.5 s)
                    await wait_for_state(events, trice.ConnectionState.COMPLETED)
            first = silent.recv(2048)  # (the check's first transmission, before the choice)
            assert stun.decode(first).message_class is stun.MessageClass.REQUEST
            await trio.sleep(1.0)  # (past the check's RTO: a retransmission would be here)
            with pytest.raises(BlockingIOError):
                silent.recv(2048)


async def test_a_failed_agent_answers_no_check() -> None:
    """Once ICE failed, the agent answers no check (as Pion, which closes its candidates):
    a peer that still holds a pair with it loses consent (RFC 7675) and fails too, rather
    than staying connected to an agent that failed."""
    timing = trice.Timing(ta=0.01, rto=0.05, rto_max=0.1, max_binding_requests=2)
    config = loopback_config(timing=timing)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(config, controlling=True) as a:
            await a.wait_gathering_complete()
            _face(a, peer.getsockname()[1])
            with trio.fail_after(3), pytest.raises(trice.IceFailedError):
                await a.connect()
            received = a._core.requests_received
            request = peer_check(a)
            peer.sendto(request, a.local_candidates[0].transport_address)
            with trio.fail_after(3):
                while a._core.requests_received == received:
                    await trio.testing.wait_all_tasks_blocked(0.002)
            # (An answer goes out as the request is read: it would be here by now.  What
            # is here is the agent's own checks, sent before it failed.)
            while True:
                try:
                    data = peer.recv(2048)
                except BlockingIOError:
                    break
                assert stun.decode(data).transaction_id != stun.decode(request).transaction_id
            assert a.connection_state is trice.ConnectionState.FAILED


_VALID: dict[trice.ConnectionState, set[trice.ConnectionState]] = {
    trice.ConnectionState.NEW: {trice.ConnectionState.CHECKING},
    trice.ConnectionState.CHECKING: {trice.ConnectionState.CONNECTED},
    trice.ConnectionState.CONNECTED: {
        trice.ConnectionState.COMPLETED,
        trice.ConnectionState.CLOSED,
    },
    trice.ConnectionState.COMPLETED: {trice.ConnectionState.CLOSED},
}


async def test_events_arrive_in_a_valid_order() -> None:
    config = loopback_config()
    seen: dict[str, list[trice.Event]] = {"a": [], "b": []}

    async def watch(name: str, stream: trice.EventStream) -> None:
        async with stream:
            async for event in stream:
                seen[name].append(event)

    async with (
        trio.open_nursery() as nursery,
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        nursery.start_soon(watch, "a", a.subscribe())
        nursery.start_soon(watch, "b", b.subscribe())
        async with a.subscribe() as stream:
            await _connected_pair(a, b)
            with trio.fail_after(5):
                await wait_for_state(stream, trice.ConnectionState.COMPLETED)
        # Leaving the agents ends the streams: the watchers finish by themselves.
    for events in seen.values():
        gathering = [e.state for e in events if isinstance(e, trice.GatheringStateChanged)]
        assert gathering == [trice.GatheringState.GATHERING, trice.GatheringState.COMPLETE]
        first_gathered = next(
            i for i, e in enumerate(events) if isinstance(e, trice.CandidateGathered)
        )
        complete = next(
            i
            for i, e in enumerate(events)
            if isinstance(e, trice.GatheringStateChanged)
            and e.state is trice.GatheringState.COMPLETE
        )
        assert first_gathered < complete
        states = [e.state for e in events if isinstance(e, trice.ConnectionStateChanged)]
        assert states[0] is trice.ConnectionState.CHECKING
        assert trice.ConnectionState.CONNECTED in states
        assert states[-1] is trice.ConnectionState.CLOSED
        previous = trice.ConnectionState.NEW
        for state in states:
            assert state in _VALID[previous] | {trice.ConnectionState.CLOSED}, (previous, state)
            previous = state
        selected = next(i for i, e in enumerate(events) if isinstance(e, trice.SelectedPairChanged))
        connected = next(
            i
            for i, e in enumerate(events)
            if isinstance(e, trice.ConnectionStateChanged)
            and e.state is trice.ConnectionState.CONNECTED
        )
        assert selected < connected


async def test_slow_subscriber_never_stalls_and_learns_of_loss() -> None:
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        stream = a.subscribe(max_buffer=1)  # never read while connecting
        async with stream:
            await _connected_pair(a, b)
            first = stream.receive_nowait()
            assert first is not None
            lost = stream.receive_nowait()
            assert isinstance(lost, trice.EventsLost) and lost.count >= 1
            with pytest.raises(trio.WouldBlock):
                stream.receive_nowait()


async def test_closed_is_the_last_event_even_when_the_agent_closes_before_it_ran() -> None:
    """An agent whose block ends before its task first ran gathers nothing, and its
    subscribers see nothing after closed (they saw its candidate and gathering complete,
    after closed, before)."""
    config = loopback_config()
    async with trice.open_agent(config, controlling=True):
        pass  # (the process's warm-up, once, out of the way)
    async with trice.open_agent(config, controlling=True) as a:
        stream = a.subscribe()
    events = [event async for event in stream]
    assert events == [trice.ConnectionStateChanged(trice.ConnectionState.CLOSED)]
    assert a.local_candidates == ()
    assert a.gathering_state is trice.GatheringState.NEW


async def test_a_stream_dropped_unclosed_is_unsubscribed() -> None:
    """An ``async for`` over a stream left by a ``break``, without ``async with``: once the
    stream is collected it is no subscriber any more (it was held, and fed every event,
    until the agent closed)."""
    config = loopback_config()
    async with trice.open_agent(config, controlling=True) as a:
        await a.wait_gathering_complete()
        async for _ in a.subscribe():
            break
        gc.collect()
        assert not a._subscribers
        async with a.subscribe() as kept:
            assert a._subscribers is not None and set(a._subscribers) == {kept}


@pytest.mark.parametrize("max_buffer", [0, -1, 1.5, True])
async def test_subscribe_needs_a_buffer_of_one_event_at_least(max_buffer: object) -> None:
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        with pytest.raises(trice.ConfigError, match="max_buffer"):
            a.subscribe(max_buffer=max_buffer)  # type: ignore[arg-type]


def test_a_gap_in_a_subscriber_stream_is_marked_where_it_was() -> None:
    """Events lost to a full buffer are marked by one EventsLost where they were: after what
    was queued before them and before what came after (which a subscriber could otherwise
    take for what came last); consecutive losses make one mark."""
    from trice._trio._streams import EventStream

    S = trice.ConnectionState
    stream = EventStream(2, lambda _stream: None)
    for state in (S.CHECKING, S.CONNECTED, S.DISCONNECTED):  # DISCONNECTED is lost
        stream._put(trice.ConnectionStateChanged(state))
    assert stream.receive_nowait() == trice.ConnectionStateChanged(S.CHECKING)
    stream._put(trice.ConnectionStateChanged(S.CONNECTED))  # room for the mark only: lost
    stream._put(trice.ConnectionStateChanged(S.COMPLETED))  # lost too
    got = []
    with pytest.raises(trio.WouldBlock):
        while True:
            got.append(stream.receive_nowait())
            if len(got) == 2:
                stream._put(trice.ConnectionStateChanged(S.CLOSED))
    assert got == [
        trice.ConnectionStateChanged(S.CONNECTED),
        trice.EventsLost(3),
        trice.ConnectionStateChanged(S.CLOSED),
    ]


def test_losses_after_a_mark_that_took_the_last_room_make_one_mark() -> None:
    """A mark takes the room that a read made; events lost while it waits, up to the next
    read, belong to the same gap: still one mark, with the whole count."""
    from trice._trio._streams import EventStream

    S = trice.ConnectionState
    stream = EventStream(2, lambda _stream: None)
    order = (S.CHECKING, S.CONNECTED, S.DISCONNECTED, S.CONNECTED, S.COMPLETED, S.FAILED)
    events = [trice.ConnectionStateChanged(state) for state in order]
    got = []
    for i, event in enumerate(events):
        stream._put(event)  # DISCONNECTED, CONNECTED, COMPLETED lost (the second to the mark)
        if i in (2, 4):
            got.append(stream.receive_nowait())  # room for one: the mark takes it
    with pytest.raises(trio.WouldBlock):
        while True:
            got.append(stream.receive_nowait())
    assert got == [events[0], events[1], trice.EventsLost(3), events[5]]


@hypothesis.given(
    max_buffer=st.integers(1, 4),
    steps=st.lists(st.booleans(), max_size=60),  # True: an event comes; False: a read
)
def test_a_stream_loses_nothing_silently_and_marks_each_gap_once(
    max_buffer: int, steps: list[bool]
) -> None:
    """Whatever the order of events and reads: what is read, with the marks' counts, is
    every event in order; a mark stands only where events were lost, never two in a row."""
    from trice._trio._streams import EventStream

    stream = EventStream(max_buffer, lambda _stream: None)
    sent: list[trice.Event] = []
    got: list[trice.Event] = []

    def read() -> None:
        with contextlib.suppress(trio.WouldBlock):
            got.append(stream.receive_nowait())

    for comes in steps:
        if comes:
            sent.append(trice.ConnectionStateChanged(trice.ConnectionState.CHECKING))
            stream._put(sent[-1])
        else:
            read()
    for _ in range(len(steps) + 2):
        read()
    seen = iter(sent)
    for before, event in zip([None, *got], got, strict=False):
        if isinstance(event, trice.EventsLost):
            assert event.count >= 1 and not isinstance(before, trice.EventsLost)
            for _ in range(event.count):
                next(seen)
        else:
            assert event is next(seen)  # (identity: each event is its own object)
    assert next(seen, None) is None  # nothing lost without a mark at the end


async def test_stun_answered_while_nobody_reads_and_buffer_drops_newest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=0.3, failed_timeout=0.6)
    config = loopback_config(receive_buffer=8, timing=timing)
    # Virtual time (agents in one process, loopback UDP queued at once): a loaded machine
    # cannot stall an agent past its 0.3 s disconnected timeout.
    with wall_clock_guard():
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
        ):
            ca, cb = await _connected_pair(a, b)
            async with a.subscribe() as stream:
                for i in range(50):
                    await ca.send(b"%d" % i)
                # b never reads; consent checks go on and are answered all the while, so a, which
                # would fail after 0.6 s without consent, stays connected for twice that.
                await trio.sleep(1.2)
                assert a.connection_state in (
                    trice.ConnectionState.CONNECTED,
                    trice.ConnectionState.COMPLETED,
                )
                states = states_so_far(stream)
                assert trice.ConnectionState.DISCONNECTED not in states
            assert a.statistics().stun_received >= 10  # about 24 consent responses in 1.2 s
            stats = b.statistics()
            assert stats.datagrams_dropped == 50 - 8
            received = [cb.receive_nowait() for _ in range(8)]
            assert received == [b"%d" % i for i in range(8)]  # the oldest were kept


async def test_once_consent_expires_send_and_receive_raise_broken_resource_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The peer goes away: a's consent checks go unanswered, and at failed_timeout a fails.
    RFC 7675 forbids sending more: send raises BrokenResourceError, and so does a receive
    that was waiting, once it has returned what had arrived."""
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=0.3, failed_timeout=0.6)
    config = loopback_config(timing=timing)
    with wall_clock_guard():
        async with trice.open_agent(config, controlling=True) as a:
            async with trice.open_agent(config, controlling=False) as b:
                ca, cb = await _connected_pair(a, b)
                await cb.send(b"last words")
                with trio.fail_after(1):
                    assert await ca.receive() == b"last words"
                await cb.send(b"unread")  # (in a's socket as the send returns: loopback)
            # b is gone.
            await ca.send(b"still allowed")  # (not yet failed)
            assert await ca.receive() == b"unread"  # what had arrived is still returned
            with trio.fail_after(2), pytest.raises(trio.BrokenResourceError):
                await ca.receive()  # waits, and is woken when consent expires
            assert a.connection_state is trice.ConnectionState.FAILED
            with pytest.raises(trice.IceFailedError, match="consent expired"):
                await a.connect()
            with pytest.raises(trio.BrokenResourceError):
                await ca.send(b"too late")
            with pytest.raises(trio.BrokenResourceError):
                ca.send_nowait(b"too late")
            await ca.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await ca.send(b"closed")


async def test_a_peer_that_answers_a_consent_check_with_403_revokes_consent_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 7675 §5.2: b answers a's checks with an authenticated 403 (Forbidden) from some
    moment on: a fails at its next consent check, not at failed_timeout, and send and
    connect say that the peer revoked consent."""
    timing = trice.Timing(keepalive_interval=0.05, failed_timeout=30.0)
    config = loopback_config(timing=timing)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, _ = await _connected_pair(a, b)
        forbidding = b._core
        answer = AgentCore.on_request

        def forbid(
            core: AgentCore, base: int, source: tuple[str, int], request: stun.Message, now: float
        ) -> bytes | None:
            if core is not forbidding:
                return answer(core, base, source, request, now)
            error = request.error_response(403, "Forbidden")
            return error.encode(integrity_key=core._local_key, fingerprint=True)

        async with a.subscribe() as events:
            monkeypatch.setattr(AgentCore, "on_request", forbid)
            with trio.fail_after(2):
                await wait_for_state(events, trice.ConnectionState.FAILED)
        with pytest.raises(trio.BrokenResourceError, match="revoked consent"):
            await ca.send(b"no")
        with pytest.raises(trice.IceFailedError, match="revoked consent"):
            await a.connect()


async def test_receive_nowait_returns_what_had_arrived_before_consent_expired(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Datagrams queued when consent expires are still the caller's: ``receive_nowait``
    returns them, as ``receive`` does, and raises BrokenResourceError only once none is
    left."""
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=0.3, failed_timeout=0.6)
    config = loopback_config(timing=timing)
    with wall_clock_guard():
        async with trice.open_agent(config, controlling=True) as a:
            async with a.subscribe() as stream:
                async with trice.open_agent(config, controlling=False) as b:
                    ca, cb = await _connected_pair(a, b)
                    for i in range(3):
                        await cb.send(b"left %d" % i)
                # b is gone; a's agent task queues what b sent, and consent expires.
                with trio.fail_after(2):
                    await wait_for_state(stream, trice.ConnectionState.FAILED)
            assert [ca.receive_nowait() for _ in range(3)] == [b"left 0", b"left 1", b"left 2"]
            with pytest.raises(trio.BrokenResourceError):
                ca.receive_nowait()
            await ca.aclose()
            with pytest.raises(trio.ClosedResourceError):
                ca.receive_nowait()


async def test_a_datagram_longer_than_udp_carries_is_a_usage_error() -> None:
    """Too long for UDP: both sends raise (the kernel's EMSGSIZE used to be swallowed, and the
    datagram dropped without a word); the connection goes on."""
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        with pytest.raises(trice.UsageError, match="65508 bytes"):
            await ca.send(bytes(65508))
        with pytest.raises(trice.UsageError, match="more than UDP carries"):
            ca.send_nowait(bytes(70000))
        await ca.send(bytes(65507))  # (the most that IPv4 carries)
        with trio.fail_after(5):
            assert len(await cb.receive()) == 65507


async def test_statistics_count_the_datagrams_and_bytes_sent_and_received() -> None:
    """``datagrams_sent``, ``bytes_sent`` and ``bytes_received`` (Pion's Conn.BytesSent and
    BytesReceived; the W3C stats' bytesSent/packetsSent): by both sends, on the fast path
    and through a copy (a memoryview of wide items counts its bytes, not its items); a
    send refused counts nothing.  The receiver counts the bytes it took."""
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        before = a.statistics()
        assert (before.datagrams_sent, before.bytes_sent, before.bytes_received) == (0, 0, 0)
        ca, cb = await _connected_pair(a, b)
        for _ in range(5):
            await ca.send(b"x" * 100)
        assert ca.send_nowait(bytearray(50))
        wide = memoryview(bytes(64)).cast("I")  # (16 items of 4 bytes)
        await ca.send(wide)
        assert ca.send_nowait(wide[::2])  # (not contiguous: copied, 32 bytes)
        with pytest.raises(trice.UsageError):
            await ca.send(bytes(65508))
        with trio.fail_after(5):
            for _ in range(8):
                await cb.receive()
        sent, received = a.statistics(), b.statistics()
        assert (sent.datagrams_sent, sent.bytes_sent) == (8, 500 + 50 + 64 + 32)
        assert (received.datagrams_received, received.bytes_received) == (8, 646)
        assert (received.datagrams_sent, received.bytes_sent) == (0, 0)
    # Once the agent closed, as the other counters do (they read 0: the closing agent let
    # go of its connection, which held them).
    closed = a.statistics()
    assert (closed.datagrams_sent, closed.bytes_sent) == (sent.datagrams_sent, sent.bytes_sent)


_BINDING_INDICATION = stun.Message(stun.Method.BINDING, stun.MessageClass.INDICATION).encode()


async def test_data_read_in_a_batch_whose_stun_handling_raised_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of reads counts what it queued at its end: when handling a STUN message of
    the batch raises (a bug, say, out of a receive that reads the socket itself), the data
    queued before it is counted all the same (it was in the buffer, and counted nowhere)."""
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        await connect_both(a, b)
        primary = a._primary
        assert primary is not None and b._primary is not None
        before = a.statistics()
        to_a = primary.sock.getsockname()[:2]
        for datagram in (b"\x80one", b"\x80two", _BINDING_INDICATION):
            b._primary.sock.sendto(datagram, to_a)

        def raises(*args: object) -> None:
            raise RuntimeError("a bug in STUN handling")

        monkeypatch.setattr(trice._trio._agent.Agent, "_on_stun", raises)
        with pytest.raises(RuntimeError):
            a._drain(primary)  # (no checkpoint since the sends: nobody read them first)
        after = a.statistics()
        assert after.datagrams_received - before.datagrams_received == 2
        assert after.bytes_received - before.bytes_received == 8


async def test_a_datagram_that_looks_like_stun_is_refused() -> None:
    """A datagram whose first byte is 0-3 and whose bytes 4-8 are STUN's magic cookie is
    STUN to the peer (RFC 7983), which dropped it: both sends refuse it (as Pion's Write
    does; it went, and was lost without a word), whatever buffer holds it.  With the first
    byte 0-3 alone, it is data."""
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        stun_like = b"\x00\x01\x00\x00" + stun.MAGIC_COOKIE.to_bytes(4, "big") + bytes(12)
        with pytest.raises(trice.UsageError, match="taken for STUN"):
            await ca.send(stun_like)
        with pytest.raises(trice.UsageError, match="taken for STUN"):
            ca.send_nowait(memoryview(stun_like))
        # By the bytes that would go, for views of other items or shapes too (a view of
        # wide items was compared item by item and went; views of 'c' items or of two
        # dimensions raised TypeError or NotImplementedError, where they had been sent).
        with pytest.raises(trice.UsageError, match="taken for STUN"):
            await ca.send(memoryview(stun_like).cast("I"))
        plain = b"plain data, 16b."
        views: list[Any] = [memoryview(plain).cast("c"), memoryview(plain).cast("B", (4, 4))]
        for view in views:
            await ca.send(view)
            assert ca.send_nowait(view)
        await ca.send(b"\x00\x01\x00\x00 not the cookie")
        with trio.fail_after(5):
            assert [await cb.receive() for _ in range(4)] == [plain] * 4
            assert await cb.receive() == b"\x00\x01\x00\x00 not the cookie"


async def test_an_agent_whose_peer_went_quiet_does_not_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Disconnected, with its own task waiting on the selected pair's socket, an agent wakes
    for its consent checks and for data, not every 20 ms lease: a thousand agents whose peers
    dropped at once used to poll at 50 Hz each until they failed."""

    timing = trice.Timing(keepalive_interval=1.0, disconnected_timeout=2.0, failed_timeout=60.0)
    config = loopback_config(timing=timing)
    with wall_clock_guard():
        async with trice.open_agent(config, controlling=True) as a:
            async with a.subscribe() as stream:
                async with trice.open_agent(config, controlling=False) as b:
                    await _connected_pair(a, b)
                with trio.fail_after(10):
                    await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)
            steps = await task_steps_while_sleeping(10.0)
            assert a.connection_state is trice.ConnectionState.DISCONNECTED
            assert steps < 150, steps  # (its consent checks; 1,050 when it
            # polled every lease)


@pytest.mark.parametrize(
    "reader",
    ["a receive loop", "a further socket's reader", "a further socket's, the connection closed"],
)
async def test_an_agent_whose_peer_went_quiet_does_not_poll_whoever_reads(
    autojump_clock: trio.testing.MockClock, reader: str
) -> None:
    """Disconnected while another task reads the selected pair's socket (a receive loop on
    the first socket, or the reader of a further one: dual stack, the pair on ::1), the
    agent does not poll for data every 20 ms lease: the peer's data, read by that task,
    wakes it at once (it polled at 50 Hz until it failed or the peer came back); also when
    the connection was closed, and the data is dropped (it waited for the next timer)."""
    further = reader != "a receive loop"
    if further and not HAS_IPV6:
        pytest.skip("the host has no IPv6 loopback (::1)")
    timing = trice.Timing(keepalive_interval=1.0, disconnected_timeout=2.0, failed_timeout=60.0)
    config = loopback_config(timing=timing)
    peer_config = loopback_config(ipv6=True, timing=timing) if further else config
    if further:
        config = dataclasses.replace(filtered_config(), timing=timing)
    received: list[bytes] = []

    async def receive_loop(connection: trice.Connection) -> None:
        async for data in connection:
            received.append(data)

    with wall_clock_guard():
        async with (
            trice.open_agent(config, controlling=True) as a,
            a.subscribe() as stream,
            trio.open_nursery() as nursery,
        ):
            async with trice.open_agent(peer_config, controlling=False) as b:
                ca, _ = await _connected_pair(a, b)
                pair = ca.selected_pair
                if further:  # (the premise: the pair is not on the agent's first socket)
                    assert a.local_candidates[0].transport_address[0] == "127.0.0.1"
                    assert pair.local.transport_address[0] == "::1"
                    if "closed" in reader:
                        await ca.aclose()
                else:
                    nursery.start_soon(receive_loop, ca)
            with trio.fail_after(10):
                await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)
            steps = await task_steps_while_sleeping(10.0)
            assert a.connection_state is trice.ConnectionState.DISCONNECTED
            assert steps < 150, f"{steps} task steps in 10 s (50 Hz polling: ~1,000)"
            # The peer comes back (a datagram from its address): connected again at once,
            # not at the next consent check (within 1 s).
            family = socket.AF_INET6 if further else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as back:
                back.bind(pair.remote.transport_address)
                back.sendto(b"\x80I am back", pair.local.transport_address)
            sent_at = trio.current_time()
            with trio.fail_after(10):
                await wait_for_state(stream, trice.ConnectionState.CONNECTED)
            assert trio.current_time() - sent_at < 0.01  # (virtual time)
            if not further:
                await until(lambda: received == [b"\x80I am back"])
            nursery.cancel_scope.cancel()


async def test_the_peers_parameters_and_candidates_are_readable() -> None:
    """``remote_parameters`` and ``remote_candidates`` (Pion's GetRemoteUserCredentials
    and GetRemoteCandidatesStats): nothing before signaling; what was signalled after it,
    and a peer-reflexive candidate learned from the peer's check (``b`` signals nothing
    to ``a`` but its parameters); nothing again after an ICE restart."""
    async with gathered_pair(loopback_config()) as (a, b):

        def peer_of(agent: trice.Agent) -> tuple[object, tuple[trice.Candidate, ...]]:
            return agent.remote_parameters, agent.remote_candidates

        assert peer_of(a) == (None, ())
        theirs = b.local_parameters
        a.set_remote_parameters(theirs.ufrag, theirs.pwd)
        ours = a.local_parameters
        b.set_remote_parameters(ours.ufrag, ours.pwd)
        for candidate in a.local_candidates:
            b.add_remote_candidate(candidate)
        assert a.remote_parameters == theirs
        assert b.remote_candidates == a.local_candidates
        await connect_both(a, b)
        (learned,) = a.remote_candidates
        assert learned.type is trice.CandidateType.PRFLX
        assert learned.transport_address == b.local_candidates[0].transport_address
        a.restart()
        assert peer_of(a) == (None, ())


async def test_send_after_close_raises_closed_resource_error() -> None:
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        await cb.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await cb.send(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await cb.receive()
    with pytest.raises(trio.ClosedResourceError):
        await ca.send(b"x")
    assert a.connection_state is trice.ConnectionState.CLOSED


@pytest.mark.parametrize("closing", ["the connection", "the agent"])
async def test_a_closed_connection_raises_though_its_fast_path_was_ready(closing: str) -> None:
    """Sends and receives on a host socket skip the lookups once the route is known (the
    socket and its sendto kept with it); closing the connection, or its agent, forgets the
    route: then both raise ClosedResourceError, with datagrams still queued."""
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        await _exchange(ca, cb, 3)  # (both ends' routes known, the fast path ready)
        await _exchange(cb, ca, 3)
        for i in range(3):
            await ca.send(b"q%d" % i)
        try:
            # Nothing queued yet, as a rule: then the next receive reads a batch.  (On a
            # loaded machine more than LEASE may pass since the last receive, and the
            # agent's reader takes the socket back and queues them: this test once failed
            # when it asked that nothing be queued.)
            first = cb.receive_nowait()
        except trio.WouldBlock:
            first = await cb.receive()
        assert first == b"q0"
        with trio.fail_after(5):
            while len(b._buffer.queue or ()) < 2:
                await trio.lowlevel.checkpoint()  # (the reader's turn, if it read them)
        assert b._buffer.queue == deque([b"q1", b"q2"])
        if closing == "the connection":
            await cb.aclose()
        else:
            b._close()
        with pytest.raises(trio.ClosedResourceError):
            await cb.receive()
        with pytest.raises(trio.ClosedResourceError):
            await cb.send(b"x")
        with pytest.raises(trio.ClosedResourceError):
            cb.send_nowait(b"x")
        assert cb._udp is None and cb._sendto is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_leaving_or_cancelling_closes_every_socket_and_task() -> None:
    before = open_fds()
    config = loopback_config()
    with trio.move_on_after(0.5) as scope:
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
        ):
            await _connected_pair(a, b)
            await trio.sleep_forever()  # cancelled from outside, mid-session
    assert scope.cancelled_caught
    assert a.connection_state is trice.ConnectionState.CLOSED
    assert open_fds() <= before
    # No task of the agents outlives them.
    root = trio.lowlevel.current_root_task()
    assert root is not None
    names = [t.name for t in walk_tasks(root)]
    assert not any(n.startswith(("gather", "receive ", "checks", "check ")) for n in names)


async def test_a_closed_agent_is_freed_without_the_cycle_collector() -> None:
    """Nothing the agent makes holds it in a reference cycle: once the block is left and
    nobody holds the agent or its connection, it is freed at once, with its core, sockets and
    buffers (an application that opens and closes agents all day does not wait for the cycle
    collector, or fill its oldest generation, to get their memory back).  An agent can be
    referred to weakly (it could not: no ``__weakref__`` slot), and the reference dies with
    it."""
    ufrags = ("freedAAA", "freedBBB")
    refs: list[weakref.ref[trice.Agent]] = []

    async def session() -> None:
        async with (
            trice.open_agent(loopback_config(ufrag=ufrags[0]), controlling=True) as a,
            trice.open_agent(loopback_config(ufrag=ufrags[1]), controlling=False) as b,
        ):
            refs.extend((weakref.ref(a), weakref.ref(b)))
            ca, cb = await _connected_pair(a, b)
            await _exchange(ca, cb, count=2)
            async with a.subscribe():
                pass

    with cycle_collector_off():
        await session()
        await trio.testing.wait_all_tasks_blocked()
        assert agents_alive(*ufrags) == []
        assert [ref() for ref in refs] == [None, None]
        # The same while another agent of the run stays open (the run's timer lives on, its
        # heap with entries of the closed agents in it).
        async with trice.open_agent(loopback_config(), controlling=True) as keeper:
            await keeper.wait_gathering_complete()
            await session()
            await trio.testing.wait_all_tasks_blocked()
            assert agents_alive(*ufrags) == []


async def test_an_agent_closed_on_a_udp_mux_that_lives_on_is_freed_at_once() -> None:
    """The same for an agent on a UDP mux that stays open: its share of the mux held the
    agent's methods (its hooks, its delivery), and the agent its share, a cycle only the
    collector freed."""
    ufrags = ("muxfreeA", "muxfreeB")
    async with trice.open_udp_mux("127.0.0.1") as mux:
        with cycle_collector_off():
            async with (
                trice.open_agent(loopback_config(ufrag=ufrags[0]), controlling=True, mux=mux) as a,
                trice.open_agent(loopback_config(ufrag=ufrags[1]), controlling=False) as b,
            ):
                ca, cb = await _connected_pair(a, b)
                await _exchange(ca, cb, count=2)
                del ca, cb
            del a, b
            await trio.testing.wait_all_tasks_blocked()
            assert agents_alive(*ufrags) == []
        assert mux.statistics().agents == 0


async def test_an_agent_closed_mid_check_is_freed_without_the_cycle_collector(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A check in flight when the agent closes is on the agent's timer heap, which refers
    back to the agent: the heap is let go of with the agent."""
    config = loopback_config(ufrag="midcheck")

    async def session(silent: socket.socket) -> None:
        async with trice.open_agent(config, controlling=True) as a:
            _face(a, silent.getsockname()[1])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.connect)
                await trio.lowlevel.wait_readable(silent)  # the first check came
                await trio.testing.wait_all_tasks_blocked()
                assert a._timers  # (what this test is about)
                nursery.cancel_scope.cancel()

    with wall_clock_guard(), cycle_collector_off():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            await session(silent)
        await trio.testing.wait_all_tasks_blocked()
        assert agents_alive("midcheck") == []


async def _assert_no_agent_tasks_left() -> None:
    """Once everything else has settled, no task of an agent (its own, a reader, a check,
    the run's timer) is left in the run."""
    await trio.testing.wait_all_tasks_blocked()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    names = [t.name for t in walk_tasks(root)]
    assert not any(n.startswith(("trice", "receive ", "check ")) for n in names), names


@pytest.mark.skipif(os.geteuid() != 0, reason="a raw socket (to send from port 0) needs root")
async def test_a_check_from_port_0_is_not_answered(caplog: pytest.LogCaptureFixture) -> None:
    """A check that comes from port 0 (a raw socket's, here: a spoofed one, say) is not
    answered: the kernel would refuse to send there, counted and warned about as a
    firewall's doing.  It is counted as rejected, and nothing is said above DEBUG."""
    caplog.set_level(logging.DEBUG, logger="trice")
    async with trice.open_agent(loopback_config(), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("peerufrag", "p" * 24)
        (host,) = agent.local_candidates
        local = agent.local_parameters
        request = stun.Message(
            stun.Method.BINDING,
            stun.MessageClass.REQUEST,
            b"Q" * 12,
            [stun.Username(f"{local.ufrag}:peerufrag"), stun.Priority(1), stun.IceControlling(7)],
        ).encode(integrity_key=stun.short_term_key(local.pwd), fingerprint=True)
        udp = struct.pack("!HHHH", 0, host.port, 8 + len(request), 0)  # (no checksum: IPv4)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
            raw.sendto(udp + request, (host.address, 0))
        await until(lambda: agent.statistics().requests_received == 1)
        stats = agent.statistics()
        assert (stats.requests_rejected, stats.send_refused) == (1, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_agents_config_is_read_only() -> None:
    """Agent.config is the config the agent was opened with, and goes by while it lives:
    it cannot be swapped under it (mypy refuses it too)."""
    config = loopback_config()
    async with trice.open_agent(config, controlling=True) as agent:
        assert agent.config is config
        with pytest.raises(AttributeError):
            agent.config = loopback_config()  # type: ignore[misc]


async def test_body_exception_propagates_unwrapped() -> None:
    mine = KeyError("mine")
    with pytest.raises(KeyError) as caught:
        async with trice.open_agent(loopback_config(), controlling=True) as agent:
            raise mine
    assert caught.value is mine
    assert agent.connection_state is trice.ConnectionState.CLOSED


async def test_an_internal_failure_comes_out_with_its_cause_and_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure of the agent's own task comes out of open_agent as itself, and as it was
    raised: a LimitError with the OSError it was raised from (the traceback's "direct
    cause"), a bug raised while handling another exception with that one as its context;
    neither chained to the group it was unwrapped from."""

    async def out_of_descriptors(agent: object) -> None:
        try:
            raise OSError(errno.EMFILE, "Too many open files")
        except OSError as exc:
            raise trice.LimitError("out of file descriptors") from exc

    async def a_bug(agent: object) -> None:
        empty: dict[str, int] = {}
        try:
            empty["missing"]
        except KeyError:
            raise RuntimeError("a bug while handling")  # noqa: B904 (the bug it plays)

    monkeypatch.setattr(trice._trio._agent, "gather_local", out_of_descriptors)
    with pytest.raises(trice.LimitError) as limit:
        async with trice.open_agent(loopback_config(), controlling=True):
            await trio.sleep_forever()
    assert isinstance(limit.value.__cause__, OSError)
    assert limit.value.__suppress_context__
    monkeypatch.setattr(trice._trio._agent, "gather_local", a_bug)
    with pytest.raises(RuntimeError) as bug:
        async with trice.open_agent(loopback_config(), controlling=True):
            await trio.sleep_forever()
    assert isinstance(bug.value.__context__, KeyError) and bug.value.__cause__ is None
    assert not bug.value.__suppress_context__


@pytest.mark.parametrize("where", ["first open_agent", "warm_up"])
async def test_a_keyboard_interrupt_while_warming_up_comes_out_as_itself(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the warm-up (the process's first open_agent runs it; so does warm_up),
    whose two agents connect in a nursery of its own: a KeyboardInterrupt, not a group
    holding one (which ``except KeyboardInterrupt`` misses)."""
    connect = trice.Agent.connect
    calls: list[trice.Agent] = []

    async def interrupted(self: trice.Agent) -> trice.Connection:
        calls.append(self)
        if len(calls) == 1:  # (one task gets the signal, as trio delivers it)
            raise KeyboardInterrupt
        return await connect(self)

    monkeypatch.setattr(trice.Agent, "connect", interrupted)
    # (The first open_agent of the process warms the shell up; warm_up's own rounds here.)
    monkeypatch.setattr(trice._trio._agent, "_warm", where == "warm_up")
    with pytest.raises(BaseException) as caught:
        if where == "warm_up":
            await trice.warm_up(1)
        else:
            async with trice.open_agent(loopback_config(), controlling=True):
                pass
    assert type(caught.value) is KeyboardInterrupt


async def test_one_failure_beside_an_enclosing_cancellation_is_raised_alone() -> None:
    """A nursery of trice's own (the warm-up's) whose one task is interrupted just as an
    enclosing scope is cancelled (the warm-up's time limit): the KeyboardInterrupt comes
    out as itself, not in a group beside the Cancelled (which that scope strips, leaving a
    group of one that ``except KeyboardInterrupt`` misses)."""
    from trice._trio._exits import leaves, raise_alone

    async def interrupted(outer: trio.CancelScope) -> None:
        await trio.testing.wait_all_tasks_blocked()
        outer.cancel()
        raise KeyboardInterrupt

    with pytest.raises(BaseException) as caught, trio.CancelScope() as outer:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                nursery.start_soon(interrupted, outer)
        except BaseExceptionGroup as group:
            assert any(isinstance(e, trio.Cancelled) for e in leaves(group))
            raise_alone(group)
    assert type(caught.value) is KeyboardInterrupt


def test_a_tasks_own_group_deep_in_nursery_groups_is_raised_alone_as_itself() -> None:
    """A group a task of a nursery of trice's own raised (a filter of the user's, say),
    nested in nurseries' groups with nothing else: ``raise_alone`` raises the very object
    (split() had rebuilt it: a copy came out; the mutants7 review)."""
    from trice._trio._exits import raise_alone

    mine = BaseExceptionGroup("my filter", [KeyError("a"), ValueError("b")])
    nursery = "Exceptions from Trio nursery"
    outer = BaseExceptionGroup(nursery, [BaseExceptionGroup(nursery, [mine])])
    with pytest.raises(BaseExceptionGroup) as caught:
        raise_alone(outer)
    assert caught.value is mine


async def test_a_body_raising_a_group_gets_it_back_as_it_was() -> None:
    """trio wraps what leaves a nursery in a group; the body's own exception, a group
    included, comes out of ``open_agent`` as the very object, neither wrapped nor flattened."""
    for mine in (
        BaseExceptionGroup("mine", [KeyError("one")]),
        BaseExceptionGroup("mine", [KeyError("one"), ValueError("two")]),
    ):
        with pytest.raises(BaseExceptionGroup) as caught:
            async with trice.open_agent(loopback_config(), controlling=True):
                raise mine
        assert caught.value is mine


@pytest.mark.parametrize("resource", ["agent", "udp mux", "tcp mux"])
def test_a_bodys_group_of_one_comes_back_as_it_was_in_trios_old_mode(resource: str) -> None:
    """Under ``strict_exception_groups=False`` (trio's old mode) trio's nursery hands the
    body's group on as it is (a copy): out of open_agent and the muxes it comes as the very
    object; it came out flattened to its one exception, the body's frame gone from the
    traceback."""
    openers: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[object]]] = {
        "agent": lambda: trice.open_agent(loopback_config(), controlling=True),
        "udp mux": lambda: trice.open_udp_mux("127.0.0.1"),
        "tcp mux": lambda: trice.open_tcp_mux("127.0.0.1"),
    }
    mine = ExceptionGroup("mine", [ValueError("a")])
    out: list[BaseException] = []

    async def main() -> None:
        try:
            async with openers[resource]():
                raise mine
        except BaseException as exc:  # (what came out, whatever it is)
            out.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", trio.TrioDeprecationWarning)
        trio.run(main, strict_exception_groups=False)
    assert out == [mine] and out[0] is mine


async def test_a_group_an_agents_task_raises_alone_comes_out_as_that_group() -> None:
    """A failure of the agent's own task comes out as itself (trio's nursery group taken
    off), a group that the task raised itself (the user's filter, here) whole: it came out
    flattened to its one exception, the group's message lost."""

    def refuse(address: object) -> bool:
        raise ExceptionGroup("the filter's own", [ValueError("a")])

    base = loopback_config()
    config = dataclasses.replace(base, network=dataclasses.replace(base.network, ip_filter=refuse))
    with pytest.raises(ExceptionGroup) as caught:
        with trio.fail_after(5):
            async with trice.open_agent(config, controlling=True):
                await trio.sleep_forever()
    assert caught.value.message == "the filter's own"
    assert [type(e) for e in caught.value.exceptions] == [ValueError]


async def test_a_wait_cancelled_in_connect_or_an_event_stream_carries_no_context() -> None:
    """A timeout of connect() or of a task reading events: the Cancelled behind the
    TooSlowError has no context, as from trio's own waits.  connect() waited on its socket
    inside the ``except BlockingIOError`` clause of its read, and the stream inside ``except
    trio.WouldBlock``: each traceback said the cancellation came "during handling of"
    an error that never was."""

    def chain(exc: BaseException | None) -> list[str]:
        out: list[str] = []
        while exc is not None:
            out.append(type(exc).__name__)
            exc = exc.__cause__ or exc.__context__
        return out

    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
        async with agent.subscribe() as events:
            events_so_far(events)
            with pytest.raises(trio.TooSlowError) as caught:
                with trio.fail_after(0.05):
                    await events.receive()
            assert chain(caught.value) == ["TooSlowError", "Cancelled"]
        agent.set_remote_parameters("peer", "p" * 22)
        with pytest.raises(trio.TooSlowError) as caught:
            with trio.fail_after(0.2):
                await agent.connect()
        assert chain(caught.value) == ["TooSlowError", "Cancelled"]


async def test_a_bodys_group_beside_an_enclosing_cancellation_stays_a_group() -> None:
    """The body's own nursery raises a group of its failure and an enclosing scope's
    cancellation: the rest of it goes on as a group, as trio hands it on without an agent;
    open_agent flattened it to the bare ValueError."""

    async def fail(outer: trio.CancelScope) -> None:
        await trio.testing.wait_all_tasks_blocked()
        outer.cancel()
        raise ValueError("mine")

    with trio.CancelScope() as outer:
        with pytest.raises(BaseExceptionGroup) as caught:
            async with trice.open_agent(loopback_config(), controlling=True):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    nursery.start_soon(fail, outer)
    assert [type(e) for e in caught.value.exceptions] == [ValueError]


async def test_connect_in_a_cancelled_scope_starts_nothing() -> None:
    """trio's rule: an operation that raises Cancelled did not happen.  connect() in a
    scope cancelled already started the checks (the state became checking), then raised."""
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.connect()
        assert a.connection_state is trice.ConnectionState.NEW
        assert a.statistics().checks_sent == 0


async def test_one_failure_comes_out_as_itself_while_an_enclosing_scope_is_cancelled() -> None:
    """The body's exception, or the agent's own single failure (a filter of the user's that
    raises), as an enclosing scope is cancelled (a timeout that expires then): it comes out
    as itself, not in a group beside the scope's Cancelled (``except KeyError`` works)."""
    mine = KeyError("mine")
    with trio.CancelScope() as outer:
        with pytest.raises(KeyError) as caught:
            async with trice.open_agent(loopback_config(), controlling=True) as agent:
                await agent.wait_gathering_complete()
                outer.cancel()
                raise mine
    assert caught.value is mine

    def refuse(address: object) -> bool:
        raise ValueError("the filter's own")

    base = loopback_config()
    config = dataclasses.replace(base, network=dataclasses.replace(base.network, ip_filter=refuse))
    with trio.CancelScope() as outer:
        with pytest.raises(ValueError, match="the filter's own"):
            async with trice.open_agent(config, controlling=True):
                try:
                    await trio.sleep_forever()
                finally:
                    outer.cancel()
    with trio.CancelScope() as outer:
        with pytest.raises(KeyError) as caught:
            async with trice.open_udp_mux("127.0.0.1") as mux:
                outer.cancel()
                raise mine
    assert caught.value is mine and mux.closed


@pytest.mark.parametrize("where", ["agent", "mux"])
@pytest.mark.parametrize("when", ["in the block", "on the way out"])
async def test_a_cancellation_of_an_enclosing_scope_comes_out_as_one_cancelled(
    where: str, when: str
) -> None:
    """An enclosing scope is cancelled, in the block or as it is left: a single
    ``trio.Cancelled`` comes out (the block's own, if it raised one), not a group of the
    block's and the tasks' (``except trio.Cancelled`` around the block works)."""
    seen: list[BaseException] = []
    with trio.CancelScope() as outer:
        try:
            async with contextlib.AsyncExitStack() as stack:
                mux = None
                if where == "mux":
                    mux = await stack.enter_async_context(trice.open_udp_mux("127.0.0.1"))
                agent = await stack.enter_async_context(
                    trice.open_agent(loopback_config(), controlling=True, mux=mux)
                )
                await agent.wait_gathering_complete()
                if when == "in the block":
                    outer.cancel()
                    await trio.sleep_forever()
                stack.callback(outer.cancel)  # (cancelled as the agent or the mux closes)
        except BaseException as exc:
            seen.append(exc)
            raise
    assert outer.cancelled_caught
    (out,) = seen
    assert type(out) is trio.Cancelled, repr(out)


async def test_warm_up_needs_a_round() -> None:
    with pytest.raises(trice.ConfigError):
        await trice.warm_up(rounds=0)


async def test_an_open_agent_context_is_entered_once() -> None:
    context = trice.open_agent(loopback_config(), controlling=True)
    assert isinstance(context, trice.AgentContext)
    async with context as agent:
        with pytest.raises(trice.StateError):
            async with context:
                pass  # pragma: no cover
        inside = agent.connection_state
    assert inside is trice.ConnectionState.NEW  # the failed re-entry left the agent alone
    assert agent.connection_state is trice.ConnectionState.CLOSED


async def test_an_open_agent_context_entered_by_two_tasks_during_the_warm_up_is_entered_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process's first agent warms trice up (a wait) before it opens: a second task
    entering the same context meanwhile gets StateError (it entered too, and the two
    nurseries misnested: TrioInternalError ended the run)."""
    monkeypatch.setattr(trice._trio._agent, "_warm", False)
    context = trice.open_agent(loopback_config(), controlling=True)
    outcomes: list[str] = []

    async def enter() -> None:
        try:
            async with context:
                outcomes.append("entered")
                await trio.sleep(0.05)
        except trice.StateError:
            outcomes.append("StateError")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(enter)
            nursery.start_soon(enter)
    assert sorted(outcomes) == ["StateError", "entered"]


async def test_hostile_requests_get_errors_and_change_nothing() -> None:
    async with trice.open_agent(loopback_config(), controlling=False) as a:
        await a.wait_gathering_complete()
        a.set_remote_parameters("peer", "p" * 22)
        target = a.local_candidates[0].transport_address
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))

            async def ask(message: bytes) -> stun.Message | None:
                await sock.sendto(message, target)
                with trio.move_on_after(2):
                    data, _ = await sock.recvfrom(2048)
                    return stun.decode(data)
                return None

            def request(username: str, key: bytes, *attrs: stun.Attribute) -> bytes:
                msg = stun.Message(
                    stun.Method.BINDING,
                    stun.MessageClass.REQUEST,
                    attributes=[stun.Username(username), *attrs],
                )
                return msg.encode(integrity_key=key, fingerprint=True)

            ufrag = a.local_parameters.ufrag
            good_key = stun.short_term_key(a.local_parameters.pwd)
            prio = stun.Priority(1)
            wrong_user = await ask(request("nobody:peer", good_key, prio))
            wrong_key = await ask(request(f"{ufrag}:peer", b"wrong", prio))
            no_priority = await ask(request(f"{ufrag}:peer", good_key))
            for response, code in ((wrong_user, 401), (wrong_key, 401), (no_priority, 400)):
                assert response is not None
                error = response.get(stun.ErrorCode)
                assert error is not None and error.code == code
            # A STUN header (cookie and all) that claims 8 bytes of attributes it lacks.
            broken = b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x00\x06"
            await sock.sendto(broken, target)
            await sock.sendto(b"not stun, not from a peer", target)
            # STUN that is no Binding request: a Binding indication (a keepalive), an Allocate
            # request and a request of a method nobody knows; none is answered or counted
            # as a request (a reply would make ask() below take it for its own answer).
            for kind in (0x0011, 0x0003, 0x02E2):
                await sock.sendto(kind.to_bytes(2, "big") + bytes(2) + broken[4:20], target)
            # One socket, one reader, in order: once this answer is back, both were handled.
            assert await ask(request("nobody:peer", good_key, prio)) is not None
        stats = a.statistics()
        assert stats.requests_received == stats.requests_rejected == 4
        assert stats.stun_received == 7
        assert stats.pairs == 0  # no peer-reflexive candidate was learned
        assert stats.unknown_source_dropped == 1
        assert a.connection_state is trice.ConnectionState.NEW


async def test_an_agent_with_no_pair_after_end_of_candidates_waits_for_the_peers_checks() -> None:
    """a's only remote candidate is an mDNS name it cannot resolve, then end-of-candidates:
    no pair, yet a does not fail.  b's checks reach a, which learns b as a peer-reflexive
    candidate, and both connect (as a browser behind an mDNS name would)."""
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=False) as a,
        trice.open_agent(config, controlling=True) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        b_params = b.local_parameters
        a.set_remote_parameters(b_params.ufrag, b_params.pwd)
        port = b.local_candidates[0].port
        a.add_remote_candidate(
            trice.Candidate.from_sdp(
                f"candidate:1 1 udp 2122260223 2a0c9e6e-6f43-4d8e.local {port} typ host"
            )
        )
        a.add_remote_candidate(None)
        assert a.statistics().pairs == 0
        a_params = a.local_parameters
        b.set_remote_parameters(a_params.ufrag, a_params.pwd)
        for candidate in a.local_candidates:
            b.add_remote_candidate(candidate)
        b.add_remote_candidate(None)
        ca, cb = await connect_both(a, b)
        assert ca.selected_pair.remote.type is trice.CandidateType.PRFLX
        await _exchange(ca, cb, 3)


async def _left_out(
    config: trice.AgentConfig, line: str, caplog: pytest.LogCaptureFixture
) -> tuple[str, list[str]]:
    """An agent of ``config`` given the peer's parameters, then the candidate ``line``,
    which it leaves out and counts, nothing taken nor resolved: its ufrag, and the warnings
    it logged."""
    async with trice.open_agent(config, controlling=True) as a:
        await a.wait_gathering_complete()
        a.set_remote_parameters("abcd", "x" * 22)
        caplog.clear()  # (what gathering said: a relay-only agent without a TURN server)
        with caplog.at_level(logging.WARNING, logger="trice"):
            a.add_remote_candidate(trice.Candidate.from_sdp(line))
        assert a.statistics().remote_candidates_dropped == 1
        assert a.remote_candidates == () and a._mdns is None  # (nothing asked)
        return a.local_parameters.ufrag, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    ("address", "mode"),
    [("localhost", trice.MdnsMode.QUERY_ONLY), ("peer.local", trice.MdnsMode.DISABLED)],
)
async def test_a_candidate_named_by_dns_is_left_out_logged_and_counted(
    address: str, mode: trice.MdnsMode, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 8839 §5.1: a candidate whose address is a name (one that is not an mDNS
    ``.local`` one, or with mDNS disabled) is ignored: it is left out, logged and counted,
    where it had sat among the remote candidates, never paired nor reported."""
    config = loopback_config()
    config = dataclasses.replace(config, network=dataclasses.replace(config.network, mdns=mode))
    line = f"candidate:1 1 udp 2130706431 {address} 4000 typ host"
    ufrag, said = await _left_out(config, line, caplog)
    why = (
        "mDNS is disabled (NetworkConfig.mdns)"
        if mode is trice.MdnsMode.DISABLED
        else "no check may go there (a name other than an mDNS .local one, or an "
        "unspecified, multicast or broadcast address)"
    )
    assert said == [f"{ufrag}: remote candidate at {address} left out: {why} (more such: at DEBUG)"]


@pytest.mark.parametrize("address", ["127.0.0.1", "peer-rtcp.local"])
async def test_a_candidate_of_another_component_is_left_out_logged_and_counted(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent has one component: a peer's RTCP candidate (component 2: a peer without
    rtcp-mux, aioice's ``components=2``) is left out, with a warning that says why, and
    counted; a ``.local`` one is not resolved.  (It was taken, paired with nothing, and
    said nothing.)"""
    line = f"candidate:1 2 udp 2130706430 {address} 4001 typ host"
    ufrag, said = await _left_out(loopback_config(), line, caplog)
    assert said == [
        f"{ufrag}: remote candidate at {address} left out: component 2 "
        "(trice has one component: the peer must multiplex RTCP on it, rtcp-mux) "
        "(more such: at DEBUG)"
    ]


async def test_a_relay_only_agent_leaves_a_local_name_out_unresolved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under a relay-only transport policy a ``.local`` candidate is left out, logged and
    counted, and no query goes out on the local network: what the name stands for would
    pair with no relayed candidate (the TURN server would learn what the peer hid)."""
    config = dataclasses.replace(loopback_config(), transport_policy=trice.TransportPolicy.RELAY)
    line = "candidate:1 1 udp 2130706431 peer.local 4000 typ host"
    _ufrag, said = await _left_out(config, line, caplog)
    (message,) = said
    assert "left out: the transport policy is relay-only" in message


async def test_remote_candidate_flood_stops_at_the_cap() -> None:
    async with trice.open_agent(loopback_config(max_remote_candidates=10), controlling=True) as a:
        for port in range(10):
            a.add_remote_candidate(
                trice.Candidate.from_sdp(f"candidate:1 1 udp 1 127.0.0.1 {1000 + port} typ host")
            )
        with pytest.raises(trice.LimitError, match="max_remote_candidates"):
            a.add_remote_candidate(
                trice.Candidate.from_sdp("candidate:1 1 udp 1 127.0.0.1 2000 typ host")
            )


@pytest.mark.parametrize(
    ("config", "controlling"),
    [("x", True), ({"lite": True}, True), (5, False), (None, 1), (None, "yes"), (None, None)],
)
def test_open_agent_with_arguments_of_the_wrong_type_raises_type_error(
    config: object, controlling: object
) -> None:
    with pytest.raises(TypeError, match="open_agent"):
        trice.open_agent(config, controlling=controlling)  # type: ignore[arg-type]


async def test_add_remote_candidate_given_a_line_or_its_json_says_how_to_make_one() -> None:
    """A newcomer's first mistake: the line or the dict itself, not a Candidate.  The
    TypeError names what was given and the two ways to make a Candidate of it."""
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        line = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"
        for wrong in (line, {"candidate": line, "sdpMid": "0"}):
            with pytest.raises(TypeError, match=r"from_sdp.*from_json") as caught:
                agent.add_remote_candidate(wrong)  # type: ignore[arg-type]
            assert type(wrong).__name__ in str(caught.value)


class _NoTruth:
    """A value whose ``==`` gives something that raises when asked for its truth (as a
    numpy array's does)."""

    def __eq__(self, other: object) -> Any:
        class Ambiguous:
            def __bool__(self) -> bool:
                raise ValueError("ambiguous")

        return Ambiguous()

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (trice.AgentConfig, {"ufrag": 12345}),
        (trice.AgentConfig, {"lite": "yes"}),
        (trice.AgentConfig, {"max_pairs": True}),
        (trice.AgentConfig, {"receive_buffer": 1.0}),
        (trice.AgentConfig, {"ice_servers": "stun:127.0.0.1"}),
        (trice.AgentConfig, {"ice_servers": None}),
        (trice.NetworkConfig, {"port_range": (50010.5, 50012.5)}),
        (trice.NetworkConfig, {"port_range": (1, 2, 3)}),
        (trice.NetworkConfig, {"port_range": "ab"}),
        (trice.NetworkConfig, {"ipv4": 0, "ipv6": 1}),
        (trice.NetworkConfig, {"interface_filter": "lo"}),
        (trice.NetworkConfig, {"mdns": "sometimes"}),
        (trice.NetworkConfig, {"external_addresses": "203.0.113.7"}),
        (trice.NetworkConfig, {"external_addresses": ["somewhere"]}),
        (trice.NetworkConfig, {"external_addresses": [b"203.0.113.7"]}),
        (trice.NetworkConfig, {"external_addresses": ["203.0.113.7", "203.0.113.8"]}),
        (trice.NetworkConfig, {"external_addresses": ["203.0.113.7/::1"]}),
        (trice.NetworkConfig, {"external_addresses": ["0.0.0.0"]}),
        (trice.NetworkConfig, {"external_addresses": ["224.0.0.1"]}),
        # (No peer could check these: broadcast, reserved, 0/8, IPv4-mapped, link-local.)
        (trice.NetworkConfig, {"external_addresses": ["255.255.255.255"]}),
        (trice.NetworkConfig, {"external_addresses": ["240.0.0.1"]}),
        (trice.NetworkConfig, {"external_addresses": ["0.1.2.3"]}),
        (trice.NetworkConfig, {"external_addresses": ["::ffff:203.0.113.1"]}),
        (trice.NetworkConfig, {"external_addresses": ["169.254.1.1"]}),
        (trice.AgentConfig, {"lite": True, "transport_policy": "relay"}),
        (trice.AgentConfig, {"lite": True, "transport_policy": "nohost"}),
        # (A lite agent has host candidates only: a 1:1 NAT's address in their place.)
        (
            trice.AgentConfig,
            {"lite": True, "network": trice.NetworkConfig(external_addresses=["203.0.113.7"])},
        ),
        (trice.NetworkConfig, {"external_addresses": ["2001:db8::7%eth0"]}),
        (trice.NetworkConfig, {"external_addresses": ["2001:db8::7/fe80::1%1"]}),
        (
            trice.NetworkConfig,
            {"external_addresses": ["203.0.113.7/10.0.0.1", "203.0.113.8/10.0.0.1"]},
        ),
        (trice.NetworkConfig, {"external_candidate": "relay"}),
        (trice.NetworkConfig, {"external_candidate": "nonsense"}),
        (trice.Timing, {"mdns_timeout": 0}),
        (trice.Timing, {"ta": math.inf}),
        (trice.Timing, {"rto": "1"}),
        (trice.Timing, {"rto": _NoTruth()}),  # (its == gives what has no truth value)
        (trice.Timing, {"max_binding_requests": True}),
        (trice.Timing, {"max_binding_requests": 10**9}),
        (trice.Timing, {"ta": 10**400}),
        (trice.Timing, {"ta": 10**308}),  # (finite, and overflowed the sums of times)
        (trice.Timing, {"failed_timeout": 10**9}),
        # (Consent checks every 1e-300 s never moved the clock on; every 1e-4 s flooded.)
        (trice.Timing, {"keepalive_interval": 1e-300}),
        (trice.Timing, {"keepalive_interval": 1e-4}),
        (trice.Timing, {"disconnected_timeout": 1e-4, "failed_timeout": 1.0}),
        (trice.Timing, {"keepalive_interval": 2**1024}),
        (trice.Timing, {"pac_timeout": -1}),
        (trice.Timing, {"pac_timeout": math.nan}),
        (trice.Timing, {"pac_timeout": "15"}),
    ],
)
def test_a_value_of_the_wrong_type_is_a_config_error_at_once(
    cls: type[object], kwargs: dict[str, Any]
) -> None:
    """Caught when the configuration is made, as a ConfigError, not later while gathering
    (a float port range used to raise TypeError from inside the agent)."""
    with pytest.raises(trice.ConfigError):
        cls(**kwargs)


async def test_an_agent_built_directly_is_refused() -> None:
    """Only open_agent makes an agent: one built directly had no nursery, and its
    wait_gathering_complete() and connect() waited for ever (the typing50 review)."""
    with pytest.raises(trice.UsageError, match=r"made by trice\.open_agent"):
        trice.Agent(trice.AgentConfig(), True)


async def test_a_connection_built_directly_is_refused() -> None:
    """Only Agent.connect makes a connection: one built directly on an open agent was a
    second connection beside the one connect() returns (the typing50 review)."""
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        with pytest.raises(trice.UsageError, match=r"returned by Agent\.connect\(\)"):
            trice.Connection(agent)


def test_config_validation() -> None:
    with pytest.raises(trice.ConfigError, match="ufrag"):
        trice.AgentConfig(ufrag="ab")
    with pytest.raises(trice.ConfigError, match="pwd"):
        trice.AgentConfig(pwd="short")
    with pytest.raises(trice.ConfigError, match="ta"):
        trice.Timing(ta=0.001)
    # Pion turns a timer off with 0: the message says what to do here instead.
    with pytest.raises(trice.ConfigError, match="no timer is turned off by 0") as caught:
        trice.Timing(keepalive_interval=0)
    assert "twice per disconnected_timeout" in str(caught.value)  # (consent goes anyway)
    with pytest.raises(trice.ConfigError, match=r"not -1$"):  # (not 0: no such hint)
        trice.Timing(rto=-1)
    with pytest.raises(trice.ConfigError, match="port_range"):
        trice.NetworkConfig(port_range=(10, 5))
    assert trice.AgentConfig(ufrag="abcd", pwd="a" * 22).ufrag == "abcd"
    # RFC 8839 §5.4: no longer than 32 when sent (a USERNAME of two 256-character ufrags
    # was over STUN's 509 bytes); a peer's may be up to 256.
    assert trice.AgentConfig(ufrag="u" * 32).ufrag == "u" * 32
    with pytest.raises(trice.ConfigError, match=r"ufrag 'u{33}' must be 4 to 32 ice-chars"):
        trice.AgentConfig(ufrag="u" * 33)
    # External addresses: canonical text, one bare address a family, explicit ones winning.
    network = trice.NetworkConfig(
        external_addresses=["203.0.113.5", "2001:DB8::5", "198.51.100.9/10.0.0.5"]
    )
    assert network.external_addresses == ("203.0.113.5", "2001:db8::5", "198.51.100.9/10.0.0.5")
    assert network.external_address("10.0.0.5") == "198.51.100.9"
    assert network.external_address("10.0.0.6") == "203.0.113.5"
    assert network.external_address("2001:db8::1") == "2001:db8::5"
    assert trice.NetworkConfig().external_address("10.0.0.5") is None
    # A port range as JSON gives it (a list) is taken, as a tuple.
    assert trice.NetworkConfig(port_range=[50000, 50099]).port_range == (50000, 50099)  # type: ignore[arg-type]


def test_an_async_filter_is_a_config_error() -> None:
    """A filter written ``async def`` (an easy slip in a trio program): its coroutine, never
    awaited, was taken as true, so a filter that refused every address took them all."""

    async def refuse(address: object) -> bool:
        return False

    class Refuser:
        async def __call__(self, address: object) -> bool:
            return False

    hooks: list[Any] = [refuse, functools.partial(refuse), Refuser()]
    for hook in hooks:
        with pytest.raises(trice.ConfigError, match="interface_filter must be a plain function"):
            trice.NetworkConfig(interface_filter=hook)
        with pytest.raises(trice.ConfigError, match="ip_filter must be a plain function"):
            trice.NetworkConfig(ip_filter=hook)
    assert trice.NetworkConfig(ip_filter=lambda address: False).ip_filter is not None


@pytest.mark.parametrize("name", ["interface_filter", "ip_filter"])
async def test_a_filter_that_answers_with_an_awaitable_is_a_config_error(name: str) -> None:
    """A plain function around an async one (a lambda, a decorator) passes NetworkConfig's
    check, and its answer, a coroutine, was taken as true: every address.  The answer is a
    ConfigError out of open_agent, and no "never awaited" warning follows."""

    async def refuse(address: object) -> bool:
        return False

    base = loopback_config()
    wrapped: Any = lambda value: refuse(value)  # noqa: E731 (the wrapping the test is about)
    network = dataclasses.replace(base.network, **{name: wrapped})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(trice.ConfigError, match=r"answered .* with an awaitable"):
            config = dataclasses.replace(base, network=network)
            async with trice.open_agent(config, controlling=True) as agent:
                await agent.wait_gathering_complete()


async def test_custom_credentials_and_port_range() -> None:
    network = trice.NetworkConfig(
        interface_filter=lambda n: n == "lo",
        include_loopback=True,
        ipv6=False,
        port_range=(40000, 40100),
    )
    config = trice.AgentConfig(ufrag="user", pwd="p" * 22, network=network)
    async with trice.open_agent(config, controlling=True) as a:
        await a.wait_gathering_complete()
        assert a.local_parameters.ufrag == "user"
        assert all(40000 <= c.port <= 40100 for c in a.local_candidates)


def _consecutive_udp_ports(count: int) -> list[socket.socket]:
    """``count`` UDP sockets bound to consecutive ports of 127.0.0.1 (held by the test)."""
    for _ in range(50):
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        first.bind(("127.0.0.1", 0))
        held = [first]
        try:
            for i in range(1, count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", first.getsockname()[1] + i))
            return held
        except OSError:
            for sock in held:
                sock.close()
    raise AssertionError("no run of free ports found")


async def test_a_port_range_skips_ports_in_use_and_an_address_without_one_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With ``port_range``, a host socket takes the first free port of the range from a
    random start, passing over ports in use; an address on which the whole range is in use
    is logged and skipped, and gathering still completes (with the reason in
    ``gather_reports``: it said "no usable local address (check the filters)")."""
    held = _consecutive_udp_ports(3)
    try:
        low = held[0].getsockname()[1]
        network = trice.NetworkConfig(
            interface_filter=lambda name: name == "lo",
            ip_filter=lambda address: address.is_loopback,
            include_loopback=True,
            ipv6=False,
            port_range=(low, low + 2),
        )
        held.pop(1).close()  # the one free port, in the middle
        for _ in range(5):  # (each agent's search starts at a random port of the range)
            async with trice.open_agent(trice.AgentConfig(network=network), controlling=True) as a:
                await a.wait_gathering_complete()
                assert [c.port for c in a.local_candidates] == [low + 1]
        held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        held[-1].bind(("127.0.0.1", low + 1))  # now the whole range is in use
        with caplog.at_level(logging.WARNING, logger="trice"):
            async with trice.open_agent(trice.AgentConfig(network=network), controlling=True) as a:
                await a.wait_gathering_complete()
                assert a.local_candidates == ()
                (report,) = a.gather_reports
                assert report.source == "host" and report.candidates == 0
                assert report.error == (
                    f"cannot bind 127.0.0.1: no free port in ({low}, {low + 2}) on 127.0.0.1"
                )
        assert any("cannot bind 127.0.0.1" in r.getMessage() for r in caplog.records)
    finally:
        for sock in held:
            sock.close()


_FD_SCRIPT = """
import resource, sys, trio, trice
sys.path.insert(0, sys.argv[1])
from loopback import loopback_config

async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    config = loopback_config()
    async with trio.open_nursery() as nursery:
        async def hold():
            try:
                async with trice.open_agent(config, controlling=True) as agent:
                    await agent.wait_gathering_complete()
                    await trio.sleep_forever()
            except trice.LimitError as exc:  # bare, straight out of open_agent
                print("LimitError:", exc)
                nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                print("group of", sorted({type(e).__name__ for e in group.exceptions}))
                nursery.cancel_scope.cancel()
        for _ in range(100):
            nursery.start_soon(hold)
            await trio.sleep(0.01)

trio.run(main)
"""


def test_running_out_of_descriptors_is_a_clear_limit_error(tmp_path: pathlib.Path) -> None:
    """An internal failure of an agent comes out of ``open_agent`` as itself, not wrapped."""
    script = tmp_path / "fds.py"
    script.write_text(_FD_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(pathlib.Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.startswith("LimitError: out of file descriptors"), out.stdout + out.stderr


class _StepCounter(trio.abc.Instrument):
    """Counts the steps of the tasks whose names start with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        self.prefixes = prefixes
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith(self.prefixes):
            self.steps += 1


async def test_a_receive_that_reads_its_socket_counts_the_bytes_received() -> None:
    """A receive already waiting when each datagram comes reads the host socket itself (not
    the agent's reader): what it takes counts in ``datagrams_received`` and
    ``bytes_received`` too."""
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        await trio.testing.wait_all_tasks_blocked(0.01)  # (the checks' traffic is over)
        before = b.statistics()
        sizes = [3, 30, 300, 3000]
        got: list[int] = []

        async def take() -> None:
            got.append(len(await cb.receive()))

        with trio.fail_after(10):
            for size in sizes:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(take)
                    await trio.testing.wait_all_tasks_blocked(0.01)  # (it waits on the socket)
                    await ca.send(b"\x80" * size)
        assert got == sizes
        after = b.statistics()
        assert after.datagrams_received - before.datagrams_received == len(sizes)
        assert after.bytes_received - before.bytes_received == sum(sizes)


async def test_every_receive_that_returns_data_is_a_checkpoint() -> None:
    """A guard for any change that would make ``receive`` cheaper by skipping trio's
    schedule point (data.rst: it is a checkpoint): whichever way the datagram comes, read
    from the socket by the receive itself, queued in a batch, or left queued after
    ``receive_nowait``, the receive is a cancel point and a schedule point, and a task that
    only counts its turns gets about one a datagram."""
    payload = b"\x80" + bytes(1199)
    config = loopback_config(receive_buffer=4096)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        _pin_receive_buffer(b, 1 << 20)  # (room for the bursts, whatever the default)
        # (80: the first read one at a time, the rest in a batch.)
        with trio.fail_after(10):
            for _ in range(80):
                assert ca.send_nowait(payload)
            for _ in range(80):
                with trio.testing.assert_checkpoints():
                    assert await cb.receive() == payload
            for _ in range(40):
                assert ca.send_nowait(payload)
            with pytest.raises(trio.WouldBlock):
                cb.receive_nowait()  # (nothing queued yet: the data is in the kernel)
            for _ in range(40):
                with trio.testing.assert_checkpoints():
                    assert await cb.receive() == payload
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await trio.lowlevel.checkpoint()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other)
                for _ in range(80):
                    assert ca.send_nowait(payload)
                before = turns
                for _ in range(80):
                    await cb.receive()
                got = turns - before
                nursery.cancel_scope.cancel()
        assert got >= 70, f"the other task ran {got} times in 80 receives"


def _pin_receive_buffer(agent: trice.Agent, size: int) -> None:
    """Pin the kernel's receive buffer of the agent's host sockets (so that how much it holds
    does not hang on the machine's defaults)."""
    for transport in agent._transports.values():
        if isinstance(transport, UdpTransport):
            transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_MEMINFO is Linux's")
async def test_statistics_count_what_the_kernel_dropped_before_the_agent_read_it() -> None:
    """A burst the run never got a turn to read (the kernel's buffer full) is counted in
    ``kernel_dropped``, not in ``datagrams_dropped`` (the agent's own buffer), and the
    count stays once the agent closed."""
    async with trice.open_agent(loopback_config(), controlling=False) as agent:
        await agent.wait_gathering_complete()
        assert agent.statistics().kernel_dropped == 0
        _pin_receive_buffer(agent, 32768)
        (candidate,) = agent.local_candidates
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(300):  # (all before the run's next turn)
                sender.sendto(b"x" * 1200, (candidate.address, candidate.port))
        during = agent.statistics()
        assert during.kernel_dropped is not None and during.kernel_dropped >= 200
        assert during.datagrams_dropped == 0
    assert agent.statistics().kernel_dropped == during.kernel_dropped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_MEMINFO is Linux's")
async def test_kernel_dropped_is_none_where_the_kernel_has_no_drop_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Linux whose kernel refuses the option (before 4.6; an emulation of Linux):
    ``kernel_dropped`` is ``None``, as elsewhere than Linux, not 0 (no drops), which it
    cannot say."""
    monkeypatch.setattr(trice._trio._transport, "_SO_MEMINFO", 4242)  # (ENOPROTOOPT)
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
        assert agent.statistics().kernel_dropped is None


@pytest.mark.parametrize("family", ["ipv4", "ipv6 beside ipv4"])
async def test_an_idle_connection_waiting_in_receive_costs_no_wake_ups(
    autojump_clock: trio.testing.MockClock, family: str
) -> None:
    """While the application waits in ``receive()`` and nothing comes, the socket's reader
    (the agent task, or the receive task of a further socket) sleeps: it wakes for the
    agent's deadlines (consent), not every lease.  A thousand idle connections cost no CPU
    between their consent checks."""
    if family != "ipv4" and not HAS_IPV6:
        pytest.skip("needs an IPv6 loopback address (::1)")
    # (Consent checks every 12 s or so, jitter included no sooner than 9.6 s.)
    timing = trice.Timing(keepalive_interval=25, disconnected_timeout=29, failed_timeout=30)
    if family == "ipv4":
        config = loopback_config(timing=timing)
    else:
        # Both families; the pair is on ::1, which a receive task reads (the agent task
        # reads the first socket, 127.0.0.1).
        config = trice.AgentConfig(network=_BOTH_FAMILIES, timing=timing)
    with wall_clock_guard():
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
        ):
            ca, cb = await _connected_pair(a, b)
            if family != "ipv4":
                assert ca.selected_pair.local.address == "::1"
            counter = _StepCounter("trice agent", "receive ", "trice timers")
            got: list[bytes] = []

            async def receive(conn: trice.Connection) -> None:
                got.append(await conn.receive())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, ca)
                nursery.start_soon(receive, cb)
                await trio.sleep(0.1)
                trio.lowlevel.add_instrument(counter)
                await trio.sleep(8.0)  # (400 lease ends)
                trio.lowlevel.remove_instrument(counter)
                assert counter.steps <= 4, counter.steps
                await ca.send(b"to b")
                await cb.send(b"to a")
            assert sorted(got) == [b"to a", b"to b"]


async def test_stun_answered_while_a_receiver_holds_the_socket_and_after_it_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A task blocked in receive() reads the socket itself (STUN included); once it stops
    receiving, the reader task takes the socket back: consent never lapses either way."""
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=0.3, failed_timeout=0.6)
    config = loopback_config(timing=timing)
    # Virtual time: a loaded machine cannot stall an agent past its 0.3 s timeout.
    with wall_clock_guard():
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
        ):
            ca, cb = await _connected_pair(a, b)
            async with a.subscribe() as stream:
                got: list[bytes] = []
                async with trio.open_nursery() as nursery:

                    async def receive_once() -> None:
                        got.append(await cb.receive())

                    nursery.start_soon(receive_once)
                    await trio.sleep(1.0)  # b blocks in receive() all along: > failed_timeout
                    await ca.send(b"x")
                assert got == [b"x"]
                # b has stopped receiving; its reader takes the socket back after a lease.
                await trio.sleep(1.0)
                for agent in (a, b):
                    assert agent.connection_state in (
                        trice.ConnectionState.CONNECTED,
                        trice.ConnectionState.COMPLETED,
                    )
                states = states_so_far(stream)
                # The stream starts with the replayed current state; nothing degraded after it.
                assert states and states[0] in (
                    trice.ConnectionState.CONNECTED,
                    trice.ConnectionState.COMPLETED,
                )
                assert trice.ConnectionState.DISCONNECTED not in states


async def test_a_receive_reads_one_datagram_unless_the_reader_takes_batches() -> None:
    """A receive that finds the queue empty reads one datagram from the socket and leaves the
    rest there (reading on would cost a failed read for each datagram that comes on its own);
    once the reader takes queued datagrams with receive_nowait, a receive that reads the
    socket queues what it holds for it."""
    async with (
        trice.open_agent(loopback_config(), controlling=True) as a,
        trice.open_agent(loopback_config(), controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        for i in range(10):
            assert ca.send_nowait(b"%d" % i)
        assert await cb.receive() == b"0"
        with pytest.raises(trio.WouldBlock):
            cb.receive_nowait()  # one read: nothing else was queued
        assert await cb.receive() == b"1"  # (read now, as a batch: the reader takes batches)
        assert [cb.receive_nowait() for _ in range(8)] == [b"%d" % i for i in range(2, 10)]
        assert b.statistics().datagrams_received == 10


async def test_two_receivers_share_a_burst() -> None:
    """With two tasks receiving, the one that reads the socket queues what it holds and wakes
    the other: the burst is shared at once, not left in the socket for whichever comes
    back first."""
    async with (
        trice.open_agent(loopback_config(), controlling=True) as a,
        trice.open_agent(loopback_config(), controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        got: dict[str, bytes] = {}

        async def worker(name: str) -> None:
            got[name] = await cb.receive()
            await trio.sleep_forever()  # busy with its datagram

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "one")
            nursery.start_soon(worker, "two")
            await trio.testing.wait_all_tasks_blocked()
            for i in range(4):
                assert ca.send_nowait(b"%d" % i)
            await trio.testing.wait_all_tasks_blocked()  # (no time passes for the reader)
            assert sorted(got.values()) == [b"0", b"1"]
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("receivers", [3, 5])
async def test_each_of_many_receivers_gets_one_datagram_of_a_burst(receivers: int) -> None:
    """As many datagrams as tasks waiting in receive, sent at once: each task gets one (the
    task that read the socket queued the burst and woke one other; the rest slept on with
    datagrams queued for them, until the next datagram came)."""
    async with (
        trice.open_agent(loopback_config(), controlling=True) as a,
        trice.open_agent(loopback_config(), controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        got: list[bytes] = []

        async def worker() -> None:
            got.append(await cb.receive())

        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                for _ in range(receivers):
                    nursery.start_soon(worker)
                await trio.testing.wait_all_tasks_blocked()
                for i in range(receivers):
                    assert ca.send_nowait(b"%d" % i)
        assert sorted(got) == sorted(b"%d" % i for i in range(receivers))


async def test_stun_behind_a_backlog_is_read_before_the_reader_reaches_it() -> None:
    """A receive loop reads one datagram at a time, but once the socket has not run dry for
    a while (the reader is behind a backlog) a read takes a batch: a check waiting behind
    100 datagrams is answered long before a one-at-a-time reader would reach it."""
    async with (
        trice.open_agent(loopback_config(), controlling=True) as a,
        trice.open_agent(loopback_config(), controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        transport, remote = ca._route or ca._get_route()
        for i in range(100):
            assert transport.send_nowait(b"d%d" % i, remote)
        check = peer_check(b, a.local_parameters.ufrag, controlling=True)
        assert transport.send_nowait(check, remote)
        for i in range(100):
            assert transport.send_nowait(b"e%d" % i, remote)
        before = b.statistics().requests_received
        consumed = 0
        with trio.fail_after(5):
            while b.statistics().requests_received == before:
                await cb.receive()
                consumed += 1
        assert consumed <= 80  # (a batch came after 64 single reads)


@pytest.mark.parametrize("waiting", [False, True], ids=["finds", "waits"])
async def test_a_receive_reading_the_socket_answers_stun_it_finds_there(waiting: bool) -> None:
    """A receive that reads the socket itself hands STUN to the agent (the peer's check is
    answered) and returns the data behind it: whether it finds them there, or waits on the
    socket when they come."""
    async with (
        trice.open_agent(loopback_config(), controlling=True) as a,
        trice.open_agent(loopback_config(), controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            address = b.local_candidates[0].transport_address
            before = b.statistics()
            got: list[bytes] = []
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    if waiting:

                        async def receive() -> None:
                            got.append(await cb.receive())

                        nursery.start_soon(receive)
                        await trio.testing.wait_all_tasks_blocked()  # cb waits on its socket
                        primary = b._primary
                        assert primary is not None and primary.held
                    # All three go out before anything else runs: the receive reads them.
                    stranger.sendto(b"\x80junk", address)  # data from no remote candidate
                    transport, remote = ca._route or ca._get_route()
                    check = peer_check(b, a.local_parameters.ufrag, controlling=True)
                    transport.send_nowait(check, remote)  # a's socket, with b's credentials
                    transport.send_nowait(b"data", remote)
                    if not waiting:
                        got.append(await cb.receive())
            assert got == [b"data"]
            after = b.statistics()
            assert after.requests_received == before.requests_received + 1
            assert after.unknown_source_dropped == before.unknown_source_dropped + 1


async def test_receive_blocked_on_the_socket_wakes_on_close() -> None:
    # No consent traffic within the test's time: only the close can wake the receiver.
    config = loopback_config(
        timing=trice.Timing(keepalive_interval=30, disconnected_timeout=30, failed_timeout=60)
    )
    with trio.fail_after(2):
        async with trice.open_agent(config, controlling=True) as a:
            async with trice.open_agent(config, controlling=False) as b:
                _ca, cb = await _connected_pair(a, b)
                async with trio.open_nursery() as nursery:

                    async def blocked() -> None:
                        with pytest.raises(trio.ClosedResourceError):
                            await cb.receive()

                    nursery.start_soon(blocked)
                    await trio.testing.wait_all_tasks_blocked()
                    await cb.aclose()


#: Loopback only, a socket for 127.0.0.1 and one for ::1.
_BOTH_FAMILIES = trice.NetworkConfig(
    interface_filter=lambda name: name == "lo",
    ip_filter=lambda address: address.is_loopback,
    include_loopback=True,
    ipv4=True,
    ipv6=True,
)


@pytest.mark.skipif(not HAS_IPV6, reason="needs an IPv6 loopback (::1)")
async def test_receiver_on_the_selected_socket_gets_data_from_another_socket() -> None:
    """A receiver blocked on the selected pair's socket is woken when data from the peer
    arrives on another local socket (read by that socket's reader)."""
    network = _BOTH_FAMILIES
    # No consent traffic within the test's time: only the nudge can wake the receiver.
    timing = trice.Timing(keepalive_interval=30, disconnected_timeout=30, failed_timeout=60)
    config = trice.AgentConfig(network=network, timing=timing)
    with trio.fail_after(3):
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
        ):
            _ca, cb = await _connected_pair(a, b)
            selected = cb.selected_pair.local
            # a's socket of the other family, and b's candidate of that family.
            other = next(c for c in b.local_candidates if c.address != selected.address)
            family = socket.AF_INET6 if ":" in other.address else socket.AF_INET
            sender = next(
                t
                for t in a._transports.values()
                if isinstance(t, UdpTransport) and t.family == family
            )
            got: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def receive_once() -> None:
                    got.append(await cb.receive())

                nursery.start_soon(receive_once)
                await trio.testing.wait_all_tasks_blocked()
                sender.send_nowait(b"\x80 via the other socket", other.transport_address)
            assert got == [b"\x80 via the other socket"]


async def test_a_check_crossing_the_peers_goes_again_once_at_twice_its_age() -> None:
    """RFC 8445 §7.3.1.4: the peer's request on a pair whose check is in flight may mean the
    way just opened, so the check goes out again (the same transaction), long before its RTO;
    but not at once: only when twice as old as when the peer's request found it."""
    timing = trice.Timing(rto=5.0, rto_max=5.0, max_binding_requests=2)
    config = loopback_config(timing=timing)
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as peer:
        await peer.bind(("127.0.0.1", 0))
        port = peer.getsockname()[1]
        async with trice.open_agent(config, controlling=True) as a, trio.open_nursery() as nursery:
            await a.wait_gathering_complete()
            _face(a, port, ufrag="peer")
            nursery.start_soon(a.connect)
            with trio.fail_after(4):
                data, address = await peer.recvfrom(2048)
                first_at = trio.current_time()
                first = stun.decode(data)
                assert first.message_class is stun.MessageClass.REQUEST
                await trio.sleep(0.05)  # the peer's own check starts later
                request = peer_check(a, "peer")
                age = trio.current_time() - first_at
                await peer.sendto(request, address)
                while True:  # skip the answer to the peer's check
                    data, _ = await peer.recvfrom(2048)
                    again = stun.decode(data)
                    if again.message_class is stun.MessageClass.REQUEST:
                        break
            resent_at = trio.current_time()
            assert again.transaction_id == first.transaction_id  # the same transaction
            assert resent_at - first_at >= 2 * age - 0.002  # not at once
            with trio.move_on_after(0.3):  # and only once (the RTO is 5 s away)
                data, _ = await peer.recvfrom(2048)
                pytest.fail(f"a third copy: {stun.decode(data)}")
            nursery.cancel_scope.cancel()


async def _recvfrom_now(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    """The next datagram on a non-blocking socket, waiting without letting virtual time pass
    (a loaded kernel may deliver a loopback datagram a little late): at most a real second,
    during which nothing else in the process becomes idle."""
    give_up = time.monotonic() + 1.0
    while True:
        try:
            return sock.recvfrom(2048)
        except BlockingIOError:
            if time.monotonic() > give_up:
                raise AssertionError("no datagram came") from None
            await trio.lowlevel.checkpoint()


async def test_a_check_the_peer_crossed_goes_once_more_at_twice_its_age(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The peer's request comes 10 ms after ``b``'s own check on the pair left: the check
    goes out once more, as the same transaction, when it is twice as old (20 ms), and then
    not again before its RTO (RFC 8445 §7.3.1.4, see ``AgentCore.poll_resend``)."""
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(loopback_config(), controlling=False) as b:
            await b.wait_gathering_complete()
            b._hub.join("peer")  # (taken for an agent of this run: no ping-back at once)
            _face(b, peer.getsockname()[1], ufrag="peer")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.connect)
                data, address = await _recvfrom_now(peer)
                sent = trio.current_time()
                check = stun.decode(data)
                await trio.sleep(0.01)
                peer.sendto(peer_check(b, "peer", controlling=True), address)
                answer = stun.decode((await _recvfrom_now(peer))[0])
                assert answer.message_class is stun.MessageClass.SUCCESS
                await trio.lowlevel.wait_readable(peer)  # (the clock runs meanwhile)
                copy = stun.decode(peer.recv(2048))
                assert copy.transaction_id == check.transaction_id
                assert trio.current_time() - sent == pytest.approx(0.02, abs=1e-3)
                await trio.sleep(0.4)  # (the RTO is 0.5 s)
                with pytest.raises(BlockingIOError):
                    peer.recv(2048)
                nursery.cancel_scope.cancel()
            b._hub.leave("peer")


def _only_copies_of(check: stun.Message, peer: socket.socket) -> None:
    """Read what waits on ``peer``: only copies of ``check`` (sent again because the peer's
    own request crossed it) may be there."""
    while True:
        try:
            copy = stun.decode(peer.recv(2048))
        except BlockingIOError:
            return
        assert copy.transaction_id == check.transaction_id


@contextlib.asynccontextmanager
async def _facing_a_controlling_peer(
    *, in_this_run: bool = True
) -> AsyncIterator[tuple[trice.Agent, socket.socket, stun.Message, tuple[str, int]]]:
    """A controlled agent ``b`` that is connecting, and the test's socket ``peer`` playing a
    controlling agent that nominates only when told to: ``peer`` has read ``b``'s first check
    and checked the pair itself (``b`` answered).  Yields ``b``, ``peer``, ``b``'s check (not
    yet answered) and the address it came from.  For virtual-time tests (with a guard in
    real time).

    With ``in_this_run``, ``b`` takes the peer for an agent of its own trio run (the run's
    timer knows its ufrag, as it knows every open agent's); else for one in another
    process."""
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(loopback_config(), controlling=False) as b:
            await b.wait_gathering_complete()
            if in_this_run:
                b._hub.join("peer")
            _face(b, peer.getsockname()[1], ufrag="peer")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.connect)
                data, address = await _recvfrom_now(peer)
                check = stun.decode(data)  # b's own check
                assert check.message_class is stun.MessageClass.REQUEST
                peer.sendto(peer_check(b, "peer", controlling=True), address)
                while True:  # b's answer (and copies of b's check, which the request crossed)
                    message = stun.decode((await _recvfrom_now(peer))[0])
                    if message.message_class is stun.MessageClass.SUCCESS:
                        break
                    assert message.transaction_id == check.transaction_id
                yield b, peer, check, address
                nursery.cancel_scope.cancel()
            if in_this_run:
                b._hub.leave("peer")


def _answer(check: stun.Message, address: tuple[str, int]) -> bytes:
    """The peer's answer to ``check`` (``_face`` gave the peer the password "x" * 22)."""
    return stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.SUCCESS,
        check.transaction_id,
        [stun.XorMappedAddress(address[0], address[1])],
    ).encode(integrity_key=stun.short_term_key("x" * 22), fingerprint=True)


async def _answer_until_selected(a: trice.Agent, peer: socket.socket) -> tuple[str, int]:
    """The test's socket ``peer`` answers ``a``'s checks at once until ``a`` selects a pair
    (its nomination answered); returns ``a``'s address."""
    address = ("", 0)
    while a.selected_pair is None:
        data, address = await _recvfrom_now(peer)
        peer.sendto(_answer(stun.decode(data), address), address)
        for _ in range(20):
            await trio.lowlevel.checkpoint()
    return address


async def _answer_until_nominated(peer: socket.socket, *after: bytes) -> None:
    """The test's socket ``peer`` answers the agent's checks at once until one nominates;
    right behind its answer to that one it sends ``after``."""
    while True:
        data, address = await _recvfrom_now(peer)
        address = (address[0], address[1])
        check = stun.decode(data)
        peer.sendto(_answer(check, address), address)
        if check.get(stun.UseCandidate) is not None:
            for datagram in after:
                peer.sendto(datagram, address)
            return


@contextlib.asynccontextmanager
async def _facing_a_socket() -> AsyncIterator[tuple[trice.Agent, socket.socket]]:
    """A controlling agent, done gathering, whose peer is the test's socket on 127.0.0.1
    (see ``_face``): a peer in another process, as far as the agent can tell."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(loopback_config(), controlling=True) as a:
            await a.wait_gathering_complete()
            _face(a, peer.getsockname()[1])
            yield a, peer


async def test_what_comes_behind_the_selecting_answer_waits_for_connect_to_return() -> None:
    """For a peer in another process, ``connect()`` returns as soon as a pair is selected,
    before anything read after that is dealt with: a request the peer sent right behind its
    answer to our nomination (as Pion does) is answered after ``connect()`` returns, and is
    answered all the same; data sent behind it waits in the receive buffer."""
    async with _facing_a_socket() as (a, peer):
        request = peer_check(a)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_answer_until_nominated, peer, request, b"first", b"second")
            with trio.fail_after(5):
                conn = await a.connect()
            with pytest.raises(BlockingIOError):
                peer.recvfrom(2048)  # not answered yet
            answer = stun.decode((await _recvfrom_now(peer))[0])
            assert answer.message_class is stun.MessageClass.SUCCESS
            assert answer.transaction_id == stun.decode(request).transaction_id
            with trio.fail_after(5):
                assert await conn.receive() == b"first"
                assert await conn.receive() == b"second"


@pytest.mark.skipif(not HAS_IPV6, reason="needs an IPv6 loopback address (::1)")
async def test_a_pair_selected_on_another_socket_ends_connects_own_read() -> None:
    """For a peer in another process ``connect()`` reads the agent's first socket itself
    while it waits; a pair selected through another socket (read by that socket's reader)
    still ends its wait at once."""
    network = _BOTH_FAMILIES
    async with trice.open_agent(trice.AgentConfig(network=network), controlling=True) as a:
        await a.wait_gathering_complete()
        assert a._primary is not None and len(a.local_candidates) == 2
        # The peer stands on the family the agent task does not read.
        other = socket.AF_INET6 if a._primary.family == socket.AF_INET else socket.AF_INET
        host = "::1" if other == socket.AF_INET6 else "127.0.0.1"
        with socket.socket(other, socket.SOCK_DGRAM) as peer:
            peer.bind((host, 0))
            peer.setblocking(False)
            a.set_remote_parameters("abcd", "x" * 22)
            a.add_remote_candidate(
                trice.Candidate.from_sdp(
                    f"candidate:1 1 udp 2130706431 {host} {peer.getsockname()[1]} typ host"
                )
            )
            a.add_remote_candidate(None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_answer_until_nominated, peer)
                with trio.fail_after(5):
                    conn = await a.connect()
                assert conn.selected_pair.local.address == host


async def test_a_cancelled_connect_hands_its_socket_back() -> None:
    """A ``connect()`` that reads its socket itself (a peer in another process) and is
    cancelled gives the socket back to the agent task, which answers the peer from then on;
    a later ``connect()`` takes it again and connects."""
    async with _facing_a_socket() as (a, peer):
        primary = a._primary
        assert primary is not None
        with trio.move_on_after(0.05) as scope:
            await a.connect()  # nobody answers its checks
        assert scope.cancelled_caught
        assert not primary.held and a._connect_sock is None
        request = peer_check(a)
        peer.sendto(request, primary.local_address)
        with trio.fail_after(5):
            while True:  # (the agent's own checks come too)
                reply = stun.decode((await _recvfrom_now(peer))[0])
                if reply.transaction_id == stun.decode(request).transaction_id:
                    break
        assert reply.message_class is stun.MessageClass.SUCCESS
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_answer_until_nominated, peer)
            with trio.fail_after(5):
                await a.connect()


async def test_the_agent_task_sleeps_while_connect_reads_its_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While ``connect()`` reads the socket itself, the agent task wakes only for its
    deadlines (a check's next transmission, a timeout), not every lease: a thousand agents
    checking at once cost nothing in between."""
    with wall_clock_guard():
        async with _facing_a_socket() as (a, _peer):
            counter = _StepCounter("trice agent")
            trio.lowlevel.add_instrument(counter)
            try:
                with trio.move_on_after(1.0):
                    await a.connect()  # nobody answers its checks
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert counter.steps <= 10, counter.steps  # (50 with a lease)


async def test_a_consent_answer_after_its_check_gave_up_still_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that answers every consent check after the check's RTO (a path slower than
    the RTO) and sends nothing of its own: its late answers keep consent (RFC 7675 §5.1
    counts an answer to any consent request of the last 30 s), and ``a`` stays connected."""
    timing = trice.Timing(
        rto=0.1, keepalive_interval=0.2, disconnected_timeout=1.0, failed_timeout=2.0
    )
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(loopback_config(timing=timing), controlling=True) as a:
            await a.wait_gathering_complete()
            _face(a, peer.getsockname()[1])
            async with a.subscribe() as stream, trio.open_nursery() as nursery:
                nursery.start_soon(a.connect)
                address = await _answer_until_selected(a, peer)
                late = 0
                with trio.move_on_after(3 * timing.failed_timeout):
                    while True:
                        await trio.lowlevel.wait_readable(peer)
                        data, address = peer.recvfrom(2048)
                        await trio.sleep(1.5 * timing.rto)  # the check has given up
                        peer.sendto(_answer(stun.decode(data), address), address)
                        late += 1
                assert late >= 20
                states = states_so_far(stream)
                assert trice.ConnectionState.DISCONNECTED not in states
                assert a.connection_state is trice.ConnectionState.COMPLETED
                nursery.cancel_scope.cancel()


async def test_data_from_the_peer_keeps_it_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that stops answering checks but goes on sending data (which nobody reads,
    past the receive buffer) is still there: ``a`` stays connected while data comes (as
    Pion does), goes disconnected no sooner than ``disconnected_timeout`` after the last of
    it, and comes back at the next datagram.  Data is not consent: ``a`` fails all the
    same, ``failed_timeout`` after the last answer."""
    timing = trice.Timing(
        rto=0.1, keepalive_interval=0.2, disconnected_timeout=1.0, failed_timeout=6.0
    )
    with wall_clock_guard():
        async with _a_peer_that_stops_answering(timing) as (a, peer, stream, address):
            answered = trio.current_time()
            while trio.current_time() < answered + 3 * timing.disconnected_timeout:
                await trio.sleep(0.1)
                peer.sendto(b"data", address)
            assert a.statistics().datagrams_received == 4  # (the rest dropped)
            assert trice.ConnectionState.DISCONNECTED not in states_so_far(stream)
            last_data = trio.current_time()
            with trio.fail_after(3 * timing.disconnected_timeout):
                await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)
            assert trio.current_time() >= last_data + timing.disconnected_timeout
            peer.sendto(b"data", address)
            with trio.fail_after(0.01):
                await wait_for_state(stream, trice.ConnectionState.CONNECTED)
            with trio.fail_after(timing.failed_timeout):
                await wait_for_state(stream, trice.ConnectionState.FAILED)
            assert trio.current_time() == pytest.approx(
                answered + timing.failed_timeout, abs=2 * timing.keepalive_interval
            )


@contextlib.asynccontextmanager
async def _a_peer_that_stops_answering(
    timing: trice.Timing,
) -> AsyncIterator[tuple[trice.Agent, socket.socket, trice.EventStream, tuple[str, int]]]:
    """A controlling agent (a receive buffer of 4) whose peer is the test's socket: it
    answers the agent's checks until a pair is selected, then nothing (the test makes it
    send data).  Yields the agent, the socket, the agent's events and its address."""
    config = loopback_config(timing=timing, receive_buffer=4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(config, controlling=True) as a:
            await a.wait_gathering_complete()
            _face(a, peer.getsockname()[1])
            async with a.subscribe() as stream, trio.open_nursery() as nursery:
                nursery.start_soon(a.connect)
                address = await _answer_until_selected(a, peer)
                yield a, peer, stream, address
                nursery.cancel_scope.cancel()


async def test_after_failed_what_the_peer_still_sends_is_dropped_and_a_receive_loop_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The peer stops answering but streams data (every 10 ms), to a reader slower than
    that: once consent expires (failed), ``async for`` ends with BrokenResourceError after
    what had arrived, and ``receive`` keeps raising while the data keeps coming (it had
    been queued on: the loop never ended, and a receive after the error returned data)."""
    timing = trice.Timing(
        rto=0.1, keepalive_interval=0.2, disconnected_timeout=1.0, failed_timeout=2.0
    )
    with wall_clock_guard():
        async with _a_peer_that_stops_answering(timing) as (a, peer, _stream, address):
            conn = await a.connect()

            async def stream_data() -> None:
                while True:
                    peer.sendto(b"data", address)
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream_data)
                received = 0
                with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
                    async for _data in conn:
                        received += 1
                        await trio.sleep(0.02)  # (a reader slower than the peer)
                assert a.connection_state is trice.ConnectionState.FAILED
                assert received > 50
                dropped = a.statistics().datagrams_dropped
                await trio.sleep(0.5)  # (virtual time: 50 more datagrams come meanwhile)
                assert a.statistics().datagrams_dropped >= dropped + 45  # (counted)
                with pytest.raises(trio.BrokenResourceError):
                    conn.receive_nowait()
                with pytest.raises(trio.BrokenResourceError):
                    await conn.receive()
                nursery.cancel_scope.cancel()


@pytest.mark.skipif(not HAS_IPV6, reason="needs an IPv6 loopback address (::1)")
async def test_data_on_a_further_socket_brings_a_disconnected_peer_back_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Data on a socket that a receive task reads (not the agent task's own) counts as
    heard too: once the peer seemed gone (disconnected), its next datagram brings the state
    back within a lease, not at the next consent check."""
    timing = trice.Timing(
        rto=0.1, keepalive_interval=0.5, disconnected_timeout=1.0, failed_timeout=20.0
    )
    config = trice.AgentConfig(network=_BOTH_FAMILIES, timing=timing)
    with wall_clock_guard(), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer:
        peer.bind(("::1", 0))
        peer.setblocking(False)
        async with trice.open_agent(config, controlling=True) as a:
            await a.wait_gathering_complete()
            assert a._primary is not None and a._primary.family == socket.AF_INET
            a.set_remote_parameters("abcd", "x" * 22)
            a.add_remote_candidate(
                trice.Candidate.from_sdp(
                    f"candidate:1 1 udp 2130706431 ::1 {peer.getsockname()[1]} typ host"
                )
            )
            a.add_remote_candidate(None)
            async with a.subscribe() as stream, trio.open_nursery() as nursery:
                nursery.start_soon(_answer_until_nominated, peer)
                conn = await a.connect()
                assert conn.selected_pair.local.address == "::1"
                # The peer falls silent: no answers, no data.
                with trio.fail_after(3 * timing.disconnected_timeout):
                    await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)
                peer.sendto(b"back", conn.selected_pair.local.transport_address)
                sent = trio.current_time()
                with trio.fail_after(timing.keepalive_interval):
                    await wait_for_state(stream, trice.ConnectionState.CONNECTED)
                assert trio.current_time() - sent <= 0.03  # a lease, not a consent check


async def _next_data(sock: socket.socket) -> bytes:
    """The next datagram on ``sock`` that is not STUN (the agent's checks are skipped)."""
    while True:
        data = (await _recvfrom_now(sock))[0]
        if not (data[0] < 4 and data[4:8] == b"\x21\x12\xa4\x42"):
            return data


async def test_sends_follow_a_better_pair_selected_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ICE may select a better pair once connected: here the test's two sockets play a
    controlling peer, which nominates its lower candidate first, then its higher one.  The
    connection's sends follow the new pair at once, and the event says so."""
    with (
        wall_clock_guard(),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as high,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as low,
    ):
        for sock in (high, low):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        async with trice.open_agent(loopback_config(), controlling=False) as b:
            await b.wait_gathering_complete()
            b.set_remote_parameters("peer", "x" * 22)
            for foundation, sock, priority in ((1, high, 2130706431), (2, low, 2130706175)):
                port = sock.getsockname()[1]
                line = f"candidate:{foundation} 1 udp {priority} 127.0.0.1 {port} typ host"
                b.add_remote_candidate(trice.Candidate.from_sdp(line))
            b.add_remote_candidate(None)
            connections: list[trice.Connection] = []
            connected = trio.Event()

            async def connect() -> None:
                connections.append(await b.connect())
                connected.set()

            async with b.subscribe() as stream, trio.open_nursery() as nursery:
                nursery.start_soon(connect)
                address = ("", 0)
                for sock in (high, low):  # b's checks (paced: the clock runs meanwhile)
                    await trio.lowlevel.wait_readable(sock)
                    data, address = sock.recvfrom(2048)
                    sock.sendto(_answer(stun.decode(data), address), address)
                low.sendto(peer_check(b, "peer", controlling=True, nominate=True), address)
                with trio.fail_after(1):
                    await connected.wait()
                (conn,) = connections
                assert conn.selected_pair.remote.port == low.getsockname()[1]
                await conn.send(b"one")
                assert await _next_data(low) == b"one"
                high.sendto(peer_check(b, "peer", controlling=True, nominate=True), address)
                with trio.fail_after(1):
                    async for event in stream:
                        if (
                            isinstance(event, trice.SelectedPairChanged)
                            and event.pair.remote.port == high.getsockname()[1]
                        ):
                            break
                assert conn.selected_pair.remote.port == high.getsockname()[1]
                await conn.send(b"two")
                assert await _next_data(high) == b"two"
                nursery.cancel_scope.cancel()


async def _ping_from(b: trice.Agent, check: stun.Message, peer: socket.socket) -> stun.Message:
    """The next request on ``peer`` that is not a copy of ``check``: ``b``'s ping-back (a
    request without USE-CANDIDATE)."""
    while True:
        message = stun.decode((await _recvfrom_now(peer))[0])
        if message.transaction_id != check.transaction_id:
            assert message.message_class is stun.MessageClass.REQUEST
            assert message.get(stun.UseCandidate) is None
            return message


@pytest.mark.parametrize("controlling", [False, True])
async def test_connect_answers_a_check_waiting_on_its_socket_before_checking(
    autojump_clock: trio.testing.MockClock, controlling: bool
) -> None:
    """The peer (here the test's socket, taken for one in another process) checked before
    this process called connect(), and its check waits unread on the socket: connect()
    answers it first, and b's own check follows the answer, rather than crossing the peer's
    check (a peer that nominates when our check reaches a pair it has proved, as Pion does,
    nominates on it at once)."""
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(loopback_config(), controlling=controlling) as b:
            await b.wait_gathering_complete()
            _face(b, peer.getsockname()[1], ufrag="peer")
            (local,) = b.local_candidates
            peer.sendto(peer_check(b, "peer", controlling=not controlling), local.transport_address)
            with trio.move_on_after(1.0):  # (nobody nominates or answers: cancelled)
                await b.connect()  # its first step runs before b's own task reads the socket
            first = stun.decode((await _recvfrom_now(peer))[0])
            second = stun.decode((await _recvfrom_now(peer))[0])
            assert first.message_class is stun.MessageClass.SUCCESS  # the answer
            assert second.message_class is stun.MessageClass.REQUEST  # then b's check
            assert b.statistics().checks_sent >= 1


async def test_controlled_agent_facing_an_agent_of_its_own_run_pings_back_only_at_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A controlled agent that has answered the peer's check, with no nomination yet, pings
    the peer back (the test's socket plays a controlling peer that nominates only when a
    request comes on a pair it has proved, as Pion does).  Here b takes the peer for an
    agent of its own trio run, that is for trice, which nominates by itself: b sends no ping
    at once, only at the ping's own time, a couple of round trips (at least PINGBACK_MIN)
    after its own check (which the peer's crossed) succeeded, and once."""
    async with _facing_a_controlling_peer() as (b, peer, check, address):
        for _ in range(3):
            await trio.testing.wait_all_tasks_blocked()
        _only_copies_of(check, peer)
        assert b.statistics().checks_sent == 1  # no ping at once
        peer.sendto(_answer(check, address), address)
        answered = trio.current_time()  # (no time passes here: b's check took none)
        await trio.sleep(PINGBACK_MIN * 0.9)
        _only_copies_of(check, peer)
        assert b.statistics().checks_sent == 1  # not before its time
        await trio.sleep(PINGBACK_MIN * 0.2)
        await _ping_from(b, check, peer)
        assert b.statistics().checks_sent == 2  # at its time
        assert trio.current_time() - answered == pytest.approx(PINGBACK_MIN * 1.1)
        await trio.sleep(1.0)
        _only_copies_of(check, peer)
        assert b.statistics().checks_sent == 2  # once


async def test_no_ping_back_when_the_nomination_of_an_agent_of_the_run_comes_before_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Facing an agent of its own run, b's ping waits for its time, and the nomination,
    coming before that, makes it needless: none is sent."""
    async with _facing_a_controlling_peer() as (b, peer, check, address):
        peer.sendto(_answer(check, address), address)
        await trio.sleep(PINGBACK_MIN / 2)
        nomination = peer_check(b, "peer", controlling=True, nominate=True)
        peer.sendto(nomination, address)
        await trio.sleep(1.0)
        assert b.selected_pair is not None
        answer = stun.decode((await _recvfrom_now(peer))[0])
        assert answer.message_class is stun.MessageClass.SUCCESS
        assert answer.transaction_id == stun.decode(nomination).transaction_id
        _only_copies_of(check, peer)
        assert b.statistics().checks_sent == 1  # its check, and no ping-back


async def test_controlled_agent_facing_a_peer_in_another_process_pings_back_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that is not an agent of this run (Pion, say, in another process) gets the
    ping-back right behind b's answer to its check, in the same step, before b's own check
    (which the peer's crossed) is even answered: no time passes."""
    async with _facing_a_controlling_peer(in_this_run=False) as (b, peer, check, _address):
        started = trio.current_time()
        await _ping_from(b, check, peer)
        assert trio.current_time() == started
        assert b.statistics().checks_sent == 2


async def test_no_ping_back_when_the_nomination_is_read_with_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A controlling trice agent nominates as soon as its check succeeds, so its nomination
    comes right behind its answer to our check: read first, it makes the ping needless, and
    none is sent (two trice agents in one process)."""
    async with _facing_a_controlling_peer() as (b, peer, check, address):
        nomination = peer_check(b, "peer", controlling=True, nominate=True)
        peer.sendto(_answer(check, address), address)
        peer.sendto(nomination, address)
        for _ in range(3):  # b's reader, and a ping-back if one were wanted, run
            await trio.testing.wait_all_tasks_blocked()
        answer = stun.decode((await _recvfrom_now(peer))[0])
        assert answer.message_class is stun.MessageClass.SUCCESS  # the nomination's
        assert b.selected_pair is not None
        _only_copies_of(check, peer)
        assert b.statistics().checks_sent == 1  # its check, and no ping-back


async def test_what_waits_on_the_socket_is_read_before_the_timers_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """In a busy process, the run's timer may end the agent task's wait while a datagram
    waits unread on its socket: it is read before the core's timers run.  Here the
    nomination waits there when the ping-back comes due: read first, it makes the ping
    needless (with 1000 pairs in one process this was a ping for half the pairs)."""
    async with _facing_a_controlling_peer() as (b, peer, check, address):
        peer.sendto(_answer(check, address), address)
        for _ in range(50):  # b reads the answer; the process never goes idle
            await trio.lowlevel.checkpoint()
        primary = b._primary
        assert primary is not None and primary.reader_waiting
        # The ping-back is due, the nomination waits unread, the timer wakes b:
        peer.sendto(peer_check(b, "peer", controlling=True, nominate=True), address)
        autojump_clock.jump(0.01)
        primary.kick()
        for _ in range(50):
            await trio.lowlevel.checkpoint()
        assert b.selected_pair is not None
        assert b.statistics().checks_sent == 1  # its check, and no ping-back


@pytest.mark.parametrize("sends", [7, 1])
async def test_a_check_due_again_or_at_its_end_first_reads_the_answer_waiting_on_its_socket(
    autojump_clock: trio.testing.MockClock, sends: int
) -> None:
    """In a busy process a check's answer may sit unread in the socket when the check comes
    due again (its reader has not had its turn): the check reads it rather than send a copy.
    Here nobody reads the socket at all (as if a receiver held it), the answer waits there,
    and the check's RTO passes.  A check that goes once (``max_binding_requests=1``) reads
    it at its end: its pair succeeds (it failed with its answer there, and ICE with it)."""
    timing = trice.Timing(max_binding_requests=sends)
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(loopback_config(timing=timing), controlling=True) as a:
            await a.wait_gathering_complete()
            _face(a, peer.getsockname()[1])
            primary = a._primary
            assert primary is not None
            primary.held = True  # the agent task leaves the socket to a receiver...
            primary.kick()  # ... that never comes: nothing reads it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.connect)
                await trio.testing.wait_all_tasks_blocked()
                data, source = peer.recvfrom(2048)  # the agent's first check
                request = stun.decode(data)
                answer = stun.Message(
                    stun.Method.BINDING,
                    stun.MessageClass.SUCCESS,
                    request.transaction_id,
                    [stun.XorMappedAddress(source[0], source[1])],
                ).encode(integrity_key=stun.short_term_key("x" * 22), fingerprint=True)
                peer.sendto(answer, source)  # lands in the agent's socket, unread
                await trio.sleep(2 * timing.rto)  # the check comes due again, or ends
                copies = 0
                while True:
                    try:
                        again = stun.decode(peer.recv(2048))
                    except BlockingIOError:
                        break
                    copies += again.transaction_id == request.transaction_id
                assert copies == 0  # it read the answer instead of sending the check again
                assert a.statistics().stun_received >= 1
                (pair,) = a.pair_statistics()
                assert pair.state is not trice.PairState.FAILED  # (its nomination runs now)
                assert pair.responses_received == 1
                nursery.cancel_scope.cancel()


def _signal_with(here: trice.Agent, there: trice.Agent, *, pwd: str, port: int | None) -> None:
    """Signal ``there`` to ``here`` with ``pwd`` for its pwd, and its candidates at
    ``port`` if given (a port nobody answers on)."""
    here.set_remote_parameters(there.local_parameters.ufrag, pwd)
    for candidate in there.local_candidates:
        here.add_remote_candidate(
            candidate if port is None else dataclasses.replace(candidate, port=port)
        )
    here.add_remote_candidate(None)


async def test_a_pwd_the_peer_does_not_take_is_named_when_ice_fails(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Signaling that garbled the peer's pwd: every check is refused with 401.  The
    failure says so, and a WARNING too (it said only "no candidate pair works", and
    nothing was logged).  After a restart with the right pwd, a failure of another cause
    (a port nobody answers on) names no 401 of the generation before."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        async with gathered_pair(loopback_config()) as (a, b):
            _signal_with(a, b, pwd="x" * 22, port=None)  # (garbled)
            _signal_with(b, a, pwd=a.local_parameters.pwd, port=None)
            with pytest.raises(trice.IceFailedError, match="401 Unauthorized") as info:
                await a.connect()
            assert "ufrag and pwd signalled" in str(info.value)
            warned = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert ["401" in r.message for r in warned] == [True]
            a.restart()
            b.restart()
            caplog.clear()
            _signal_with(a, b, pwd=b.local_parameters.pwd, port=dead.getsockname()[1])
            _signal_with(b, a, pwd=a.local_parameters.pwd, port=None)
            with pytest.raises(trice.IceFailedError) as info:
                await a.connect()
    assert str(info.value) == "ICE failed: no candidate pair works"
    assert not [r for r in caplog.records if "401" in r.message]


async def test_a_failure_names_the_pairs_the_cap_left_unchecked(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``max_pairs`` the lowest pairs are pruned before any check (RFC 8445
    §6.1.2.5): here the only one that works, the peer's real candidate, below a port nobody
    answers on.  The failure says that pairs went unchecked, and how many (it blamed the
    pairs alone: "no candidate pair works"), and a WARNING says so too (the docs said it
    did; nothing was logged: the p40pass2 review)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        config = dataclasses.replace(loopback_config(), max_pairs=1)
        async with gathered_pair(config, loopback_config()) as (a, b):
            (real,) = b.local_candidates
            a.set_remote_parameters(b.local_parameters.ufrag, b.local_parameters.pwd)
            port = dead.getsockname()[1]
            a.add_remote_candidate(dataclasses.replace(real, port=port, priority=real.priority + 1))
            a.add_remote_candidate(real)
            a.add_remote_candidate(None)
            with pytest.raises(trice.IceFailedError) as info:
                await a.connect()
    assert str(info.value) == (
        "ICE failed: no candidate pair works; 1 pair past the cap (max_pairs=1, RFC 8445 "
        "§6.1.2.5) went unchecked"
    )
    assert a.statistics().pairs_pruned == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{a.local_parameters.ufrag}: {info.value}"]


async def test_connect_racing_the_agents_close_never_returns_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``connect()`` on an agent already connected takes a checkpoint before it returns; if
    the agent's block is left meanwhile (another task), it returns the connection or raises
    trio.ClosedResourceError, as documented.  It returned ``None``: the close had let go of
    the connection (the apistate review).  trio orders a batch at random, so the race is
    taken in about half of the 30 trials."""
    outcomes: list[object] = []

    async def call(agent: trice.Agent) -> None:
        try:
            outcomes.append(await agent.connect())
        except trio.ClosedResourceError as exc:
            outcomes.append(exc)

    config = loopback_config()
    for _ in range(30):
        async with (
            trice.open_agent(config, controlling=False) as b,
            trio.open_nursery() as nursery,
        ):
            async with trice.open_agent(config, controlling=True) as a:
                await a.wait_gathering_complete()
                await b.wait_gathering_complete()
                signal(a, b)
                await connect_both(a, b)
                nursery.start_soon(call, a)
                await trio.lowlevel.checkpoint()  # (call may be parked in connect now)
            # (a's block is left: the agent closes)
    kinds = [type(outcome).__name__ for outcome in outcomes]
    assert set(kinds) <= {"Connection", "ClosedResourceError"}, kinds
    assert "ClosedResourceError" in kinds  # (the race was taken)


@pytest.mark.parametrize("how", ["none", "nominated", "pruned"])
async def test_a_failure_with_pairs_that_worked_says_why_none_was_selected(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """A controlling peer that checks, and answers this controlled agent's checks, but
    never nominates the pair that works (and, but for ``none``, nominates another one whose
    checks go unanswered; ``pruned``: that pair, failed, is then pruned at the cap by a
    candidate more): ICE fails at ``failed_timeout``.  The failure says a pair worked and
    why none was selected, and a WARNING says the same (it said "no candidate pair works",
    and nothing was logged; the authfuzz, p40pass2 and p40final reviews)."""
    caplog.set_level(logging.DEBUG, logger="trice")
    timing = trice.Timing(
        disconnected_timeout=2.0, failed_timeout=5.0, rto=0.1, rto_max=0.4, max_binding_requests=4
    )
    config = dataclasses.replace(
        loopback_config(), timing=timing, max_pairs=2 if how == "pruned" else 100
    )
    async with trice.open_agent(config, controlling=False) as agent:
        await agent.wait_gathering_complete()
        (host,) = agent.local_candidates
        local = agent.local_parameters
        with (
            trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as peer,
            trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as silent,
            trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as dead,
        ):
            for sock in (peer, silent, dead):
                await sock.bind(("127.0.0.1", 0))

            def signal_candidate(sock: trio.socket.SocketType) -> None:
                address, port = sock.getsockname()
                line = f"candidate:{port} 1 udp 2130706431 {address} {port} typ host"
                agent.add_remote_candidate(trice.Candidate.from_sdp(line))

            agent.set_remote_parameters("peerufrag", "x" * 22)
            for sock in (peer, silent) if how != "none" else (peer,):
                signal_candidate(sock)

            async def answer_checks() -> None:
                while True:
                    data, source = await peer.recvfrom(2048)
                    if stun.decode(data).message_class is stun.MessageClass.REQUEST:
                        await peer.sendto(answer_check(data, source[:2]), source)

            def check(use_candidate: bool) -> bytes:
                return peer_check(
                    agent,
                    "peerufrag",
                    priority=host.priority,
                    controlling=True,
                    nominate=use_candidate,
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_checks)
                await peer.sendto(check(False), (host.address, host.port))
                if how != "none":  # (its own checks go unanswered: nobody reads ``silent``)
                    await silent.sendto(check(True), (host.address, host.port))
                if how == "pruned":
                    port = silent.getsockname()[1]
                    pairs = agent._core.checklist
                    await trio.sleep(2)  # (virtual time: its four checks are over by 1.1 s)
                    assert any(p.remote.port == port and p.state.value == "failed" for p in pairs)
                    signal_candidate(dead)  # (past max_pairs: the failed pair goes)
                    assert not any(p.remote.port == port for p in pairs)
                agent.add_remote_candidate(None)
                with pytest.raises(trice.IceFailedError) as info:
                    await agent.connect()
                nursery.cancel_scope.cancel()
    why = (
        "the controlling peer nominated none"
        if how == "none"
        else "the pair the controlling peer nominated did not pass this agent's check"
    )
    reason = f"no pair was selected within failed_timeout (5 s), though 1 pair worked: {why}"
    assert str(info.value) == f"ICE failed: {reason}"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{local.ufrag}: ICE failed: {reason}"]


async def test_consent_checks_a_restarted_peer_refuses_are_not_taken_for_bad_credentials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The peer restarted, its new parameters lost on the way: it refuses the consent
    checks with 401, and consent runs out.  The failure says so, and blames no signaled
    pwd (a peer that restarts first refuses them on every ordinary restart too)."""
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        await connect_both(a, b)
        async with a.subscribe() as events:
            b.restart()  # (its new parameters never reach a)
            with trio.fail_after(120):
                await wait_for_state(events, trice.ConnectionState.FAILED)
        with pytest.raises(trice.IceFailedError, match="consent expired") as info:
            await a.connect()
    assert "401" not in str(info.value)
    assert a._core.checks_unauthorized == 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_warm_up_connects_on_loopback_and_leaves_nothing_open() -> None:
    before = open_fds()
    assert await trice.warm_up(rounds=2)
    assert open_fds() <= before
    await _assert_no_agent_tasks_left()


async def test_warm_up_without_loopback_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from trice._trio import _gather

    monkeypatch.setattr(_gather, "host_addresses", lambda network: [])
    assert await trice.warm_up(rounds=1) is False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_the_shells_warm_up_connects_over_a_socket_pair_and_binds_no_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once per process, the first agent to open first connects two throwaway agents over
    a local socket pair: no socket is bound, every round connects, nothing is left."""
    from trice._trio import _agent, _gather

    def no_socket(*args: object) -> socket.socket:
        raise AssertionError("the warm-up bound a socket")

    connected: list[bool] = []
    connect_into = _agent._connect_into

    async def counting(agent: trice.Agent, out: list[trice.Connection | None]) -> None:
        await connect_into(agent, out)
        connected.append(out[-1] is not None)

    monkeypatch.setattr(_gather, "bind_socket", no_socket)
    monkeypatch.setattr(_agent, "_connect_into", counting)
    monkeypatch.setattr(_agent, "_warm", True)  # (its own agents must not warm up again)
    before = open_fds()
    await _agent._warm_shell(rounds=2)
    assert connected == [True] * 4
    assert open_fds() <= before
    await _assert_no_agent_tasks_left()


async def test_the_shells_warm_up_runs_connect_reading_its_socket_as_against_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The warm-up's last round takes the peer for one in another process: ``connect``
    reads the socket itself, the path of every connection between two processes (it ran
    first inside the first real connection's timed window: the coldpath review)."""
    from trice._trio import _agent

    read: list[str] = []
    read_until_change = _agent.Agent._read_until_change

    async def counting(agent: trice.Agent, transport: Any, *, checkpoint: bool) -> None:
        read.append(agent.local_parameters.ufrag)
        await read_until_change(agent, transport, checkpoint=checkpoint)

    monkeypatch.setattr(_agent.Agent, "_read_until_change", counting)
    monkeypatch.setattr(_agent, "_warm", True)  # (its own agents must not warm up again)
    await _agent._warm_shell(rounds=2)
    assert read and set(read) <= _agent._WARM_UFRAGS


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_the_shells_warm_up_closes_its_socket_pair_when_it_fails_midway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trice._trio import _agent

    def broken(self: trice.Agent, transport: object, address: str) -> None:
        raise RuntimeError("a bug while taking up the socket")

    monkeypatch.setattr(_agent.Agent, "_adopt_socket", broken)
    monkeypatch.setattr(_agent, "_warm", True)  # (its own agents must not warm up again)
    before = open_fds()
    await _agent._warm_shell(rounds=1)  # logs the failure, raises nothing
    assert open_fds() <= before


async def test_the_shells_warm_up_never_fails_the_agent_being_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trice._trio import _agent

    called: list[bool] = []

    def broken(a: trice.Agent, b: trice.Agent) -> None:
        called.append(True)
        raise RuntimeError("a bug in the warm-up")

    monkeypatch.setattr(_agent, "introduce", broken)
    monkeypatch.setattr(_agent, "_warm", False)  # as in a fresh process
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
        assert agent.local_candidates
    assert called == [True]  # the first agent of a process warmed up, the warm-up failed...
    assert _agent._warm  # ... and it is not tried again


async def test_a_first_agent_cancelled_during_the_warm_up_leaves_it_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process's first open_agent, cancelled while it warms up: the next agent warms
    up (the warm-up had been marked done, and no agent of the process ever ran it)."""
    from trice._trio import _agent

    warmed: list[int] = []
    warm_shell = _agent._warm_shell

    async def counted(rounds: int = 3) -> None:
        warmed.append(rounds)
        await warm_shell(rounds)

    monkeypatch.setattr(_agent, "_warm_shell", counted)
    monkeypatch.setattr(_agent, "_warm", False)  # as in a fresh process
    with trio.CancelScope() as scope:
        scope.cancel()
        async with trice.open_agent(loopback_config(), controlling=True):
            raise AssertionError("entered in a cancelled scope")
    assert warmed == [3] and not _agent._warm
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
    assert warmed == [3, 3] and _agent._warm


# -- who reads an agent's first socket ------------------------------------------------------


@pytest.mark.parametrize("epoll", [True, False], ids=["the run's timer", "the agent's task"])
async def test_the_first_socket_is_read_either_way(
    monkeypatch: pytest.MonkeyPatch, epoll: bool
) -> None:
    """Where the system has epoll, the run's timer task reads an agent's first socket while
    the agent's task is parked; elsewhere the agent's task waits on it itself.  Both answer
    checks, take data for a receiver and hand the socket to one and back."""
    monkeypatch.setattr(trice._trio._timers, "HAS_EPOLL", epoll)
    # Timers too far off for the agent task's own timed wake-ups (consent) to stand in for
    # the reader within the test's time.
    timing = trice.Timing(keepalive_interval=30, disconnected_timeout=60, failed_timeout=120)
    config = loopback_config(timing=timing)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        await trio.testing.wait_all_tasks_blocked()
        for agent in (a, b):
            assert agent._primary is not None
            assert agent._primary.armed is epoll
            assert agent._primary.reader_waiting
        with trio.fail_after(1):
            # Data with nobody receiving: the reader queues it.
            for i in range(10):
                await ca.send(b"a%d" % i)
            while b.statistics().datagrams_received < 10:
                await trio.testing.wait_all_tasks_blocked()
            assert [await cb.receive() for _ in range(10)] == [b"a%d" % i for i in range(10)]
            # A check with nobody receiving: answered.
            before = b.statistics().requests_received
            transport, remote = ca._route or ca._get_route()
            assert transport.send_nowait(peer_check(b, a.local_parameters.ufrag), remote)
            while b.statistics().requests_received == before:
                await trio.testing.wait_all_tasks_blocked()
            # A receiver that waits on the socket, then lets it go.
            async with trio.open_nursery() as nursery:
                got: list[bytes] = []

                async def receive() -> None:
                    got.append(await cb.receive())

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                await ca.send(b"waited for")
            assert got == [b"waited for"]


class _Stop(BaseException):
    """Not an Exception (as SystemExit from a signal handler is not)."""


@pytest.mark.parametrize("error", [RuntimeError, _Stop])
async def test_an_error_while_the_timer_reads_for_an_agent_is_the_agents(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    """A failure in reading the first socket, which the run's timer task does for a parked
    agent, is raised where the agent's own errors are: from its ``open_agent`` block (not
    from the run's system task, which would end the whole run)."""

    def broken(self: trice.Agent, transport: UdpTransport, one: bool = False) -> bool:
        raise error("a bug in reading")

    with pytest.raises(error, match="a bug in reading"):
        async with trice.open_agent(loopback_config(), controlling=False) as agent:
            await agent.wait_gathering_complete()
            await trio.testing.wait_all_tasks_blocked()
            primary = agent._primary
            assert primary is not None and primary.armed
            monkeypatch.setattr(trice.Agent, "_drain", broken)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"anything", primary.local_address)
            with trio.fail_after(5):
                await trio.sleep_forever()


def test_the_last_agent_leaving_while_its_socket_is_reported_ends_nothing_else() -> None:
    """The run's timer task was told the epoll set is readable, and before it ran the last
    agent left, which closes the set: the task must not read the closed set (an error in a
    system task ends the whole run).  Datagrams flood the agent's socket as it leaves; the
    race came out in a third of the runs before it was mended."""

    async def one_run() -> None:
        async with trio.open_nursery() as nursery:
            async with trice.open_agent(loopback_config(), controlling=True) as agent:
                await agent.wait_gathering_complete()
                assert agent._primary is not None
                address = agent._primary.local_address
                out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                out.setblocking(False)

                async def flood() -> None:
                    with out:
                        while True:
                            with contextlib.suppress(OSError):
                                out.sendto(b"x", address)
                            await trio.lowlevel.checkpoint()

                nursery.start_soon(flood)
                for _ in range(50):
                    await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()

    for _ in range(40):
        trio.run(one_run)


async def test_tasks_started_while_the_timer_reads_see_the_applications_context() -> None:
    """The checks that a datagram read by the run's timer task starts copy the context of
    the agent's task, as they would if that task had read it: a context variable set by the
    application (a request id for its logs, say) is seen in every check task."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")
    var.set("app-42")
    seen: list[str] = []
    original = trice._trio._checks.CheckRun.run

    async def run(self: trice._trio._checks.CheckRun) -> None:
        seen.append(var.get())
        await original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trice._trio._checks.CheckRun, "run", run)
        async with (
            trice.open_agent(loopback_config(), controlling=True) as a,
            trice.open_agent(loopback_config(), controlling=False) as b,
        ):
            await _connected_pair(a, b)
    assert seen and set(seen) == {"app-42"}


@pytest.mark.parametrize("epoll", [True, False], ids=["the run's timer", "the agent's task"])
async def test_disconnected_counts_from_the_last_data_whoever_reads_it(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock, epoll: bool
) -> None:
    """The peer's checks go unanswered and only its data comes: the state becomes
    disconnected ``disconnected_timeout`` after the last datagram, also when the run's
    timer task read it (which does not wake the agent task) between two of the agent's
    own wake-ups."""
    monkeypatch.setattr(trice._trio._timers, "HAS_EPOLL", epoll)
    timing = trice.Timing(
        rto=0.1, keepalive_interval=1.0, disconnected_timeout=2.0, failed_timeout=60.0
    )
    async with _a_peer_that_stops_answering(timing) as (_a, peer, stream, address):
        await trio.sleep(1.45)  # (virtual time: halfway between two consent checks)
        peer.sendto(b"data", address)
        last = trio.current_time()
        with trio.fail_after(10):
            await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)
        assert trio.current_time() - last == pytest.approx(2.0, abs=0.02)


async def test_a_crossed_checks_resend_due_after_ice_failed_is_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The peer's request crossed our check, which is then due to go once more (at twice
    its age); ICE fails before that: nothing more goes out."""
    timing = trice.Timing(rto=0.5, disconnected_timeout=0.3, failed_timeout=0.3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with trice.open_agent(loopback_config(timing=timing), controlling=True) as a:
            await a.wait_gathering_complete()
            _face(a, peer.getsockname()[1])
            assert a._primary is not None

            async def connect() -> None:
                with pytest.raises(trice.IceFailedError):
                    await a.connect()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect)
                await trio.lowlevel.wait_readable(peer)  # our first check
                await trio.sleep(0.2)  # (virtual time) our check is 0.2 s old, unanswered
                peer.sendto(peer_check(a), a._primary.local_address)
            assert a.connection_state is trice.ConnectionState.FAILED
            while True:  # what went before ICE failed
                try:
                    peer.recvfrom(2048)
                except BlockingIOError:
                    break
            with trio.move_on_after(1.0):
                await trio.lowlevel.wait_readable(peer)
                pytest.fail("a check went out after ICE failed")


# -- ICE restart ----------------------------------------------------------------------------------


async def test_a_restart_checks_again_while_data_keeps_flowing() -> None:
    config = loopback_config()
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        ca, cb = await _connected_pair(a, b)
        old_a, old_b = a.local_parameters, b.local_parameters
        pair_before = a.selected_pair
        async with a.subscribe() as stream:
            events_so_far(stream)  # (what it replays)
            new_a = a.restart()
            new_b = b.restart(ufrag="restartB", pwd="b" * 22)
            assert new_a == a.local_parameters and new_a.ufrag != old_a.ufrag
            assert new_a.pwd != old_a.pwd and new_a.lite is old_a.lite
            assert (new_b.ufrag, new_b.pwd) == ("restartB", "b" * 22)
            assert old_b != new_b
            assert a.connection_state is trice.ConnectionState.CHECKING
            # Until the new checks select a pair, data goes over the old one, both ways.
            assert a.selected_pair == pair_before
            with trio.fail_after(5):
                await _exchange(ca, cb, 3)
            signal(a, b)  # (the new parameters, and the same candidates again)
            ca2, cb2 = await connect_both(a, b)
            assert ca2 is ca and cb2 is cb  # (the agent's one connection, over the new pair)
            events = events_so_far(stream)
        states = [e.state for e in events if isinstance(e, trice.ConnectionStateChanged)]
        assert states[:2] == [trice.ConnectionState.CHECKING, trice.ConnectionState.CONNECTED]
        assert any(isinstance(e, trice.SelectedPairChanged) for e in events)
        with trio.fail_after(5):
            await _exchange(ca, cb, 3)
        # The two agents of this run still know each other by their new ufrags.
        hub = trice._trio._timers.timer_hub()
        assert hub.has_other_agent(new_b.ufrag, own=new_a.ufrag)
        assert not hub.has_other_agent(old_b.ufrag, own=new_a.ufrag)
        assert not a._peer_elsewhere() and not b._peer_elsewhere()


async def test_a_restart_tries_again_after_failing() -> None:
    """a fails (its one remote candidate leads nowhere); a restart with the right
    candidates connects it."""
    timing = trice.Timing(rto=0.02, max_binding_requests=2, failed_timeout=5.0)
    config = loopback_config(timing=timing)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
        trio.open_nursery() as nursery,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        nowhere = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        nowhere.bind(("127.0.0.1", 0))  # (bound and never read: checks there go unanswered)
        with nowhere:
            params = b.local_parameters
            a.set_remote_parameters(params.ufrag, params.pwd)
            (good,) = b.local_candidates
            a.add_remote_candidate(dataclasses.replace(good, port=nowhere.getsockname()[1]))
            a.add_remote_candidate(None)
            with trio.fail_after(5), pytest.raises(trice.IceFailedError):
                await a.connect()
        before = a.connection_state
        assert before is trice.ConnectionState.FAILED
        a.restart()
        b.restart()
        assert a.connection_state is trice.ConnectionState.CHECKING
        signal(a, b)
        ca, cb = await connect_both(a, b)
        with trio.fail_after(5):
            await _exchange(ca, cb, 3)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", ["udp", "udp-mux", "tcp"])
async def test_after_failing_a_restart_with_a_new_peer_carries_data_again(kind: str) -> None:
    """The peer goes, and consent expires (failed: what comes is dropped from then on);
    a restart with another peer carries data again over the same connection, whichever the
    transport: the receive buffer takes data again."""
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=0.3, failed_timeout=0.6)

    def config(passive: bool) -> trice.AgentConfig:
        base = loopback_config(timing=timing)
        if kind != "tcp":
            return base
        tcp = (trice.TcpType.PASSIVE if passive else trice.TcpType.ACTIVE,)
        return dataclasses.replace(
            base, network=dataclasses.replace(base.network, tcp_candidates=tcp)
        )

    def introduce(x: trice.Agent, peer: trice.Agent) -> None:
        for here, there in ((x, peer), (peer, x)):
            params = there.local_parameters
            here.set_remote_parameters(params.ufrag, params.pwd)
            for candidate in there.local_candidates:
                if kind != "tcp" or candidate.protocol == "tcp":
                    here.add_remote_candidate(candidate)
            here.add_remote_candidate(None)

    async with contextlib.AsyncExitStack() as stack:
        mux = None
        if kind == "udp-mux":
            mux = await stack.enter_async_context(trice.open_udp_mux("127.0.0.1"))
        x = await stack.enter_async_context(
            trice.open_agent(config(True), controlling=False, mux=mux)
        )
        await x.wait_gathering_complete()
        stream = await stack.enter_async_context(x.subscribe())
        async with trice.open_agent(config(False), controlling=True) as first:
            await first.wait_gathering_complete()
            introduce(x, first)
            conn, theirs = await connect_both(x, first)
            await exchange_each_way(conn, theirs, 5)
        with trio.fail_after(5):
            await wait_for_state(stream, trice.ConnectionState.FAILED)
        with pytest.raises(trio.BrokenResourceError):
            await conn.receive()
        async with trice.open_agent(config(False), controlling=True) as second:
            await second.wait_gathering_complete()
            x.restart()
            introduce(x, second)
            again, theirs = await connect_both(x, second)
            assert again is conn
            with trio.fail_after(5):
                await exchange_each_way(conn, theirs, 5)


async def test_restart_refuses_what_it_cannot_take() -> None:
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        params = a.local_parameters
        with pytest.raises(trice.ConfigError, match="new ufrag and a new pwd"):
            a.restart(ufrag=params.ufrag)
        with pytest.raises(trice.ConfigError, match="new ufrag and a new pwd"):
            a.restart(pwd=params.pwd)
        with pytest.raises(trice.ConfigError, match="ice-chars"):
            a.restart(ufrag="bad!")
        with pytest.raises(trice.ConfigError, match="ice-chars"):
            a.restart(pwd="short")
        assert a.local_parameters == params  # (nothing changed)
        assert a.connection_state is trice.ConnectionState.NEW
        a.restart()
        assert a.connection_state is trice.ConnectionState.NEW  # (no check yet: stays new)
    with pytest.raises(trice.StateError):
        a.restart()


async def test_during_a_restart_data_stops_when_the_old_pairs_consent_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """b goes away; a restarts while it is disconnected.  Its data goes on over the old
    pair until that pair's consent is failed_timeout old (RFC 7675), then send raises
    while the new checks still run; those fail later, and a restart from failed, with
    nobody there, fails again on its own time."""
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=0.3, failed_timeout=0.6)
    config = loopback_config(timing=timing)
    with wall_clock_guard():
        async with trice.open_agent(config, controlling=True) as a:
            async with trice.open_agent(config, controlling=False) as b:
                ca, _cb = await _connected_pair(a, b)
                pair = ca.selected_pair
            # b is gone.
            await trio.sleep(0.35)  # (virtual time: a is disconnected, consent not expired)
            assert a.connection_state is trice.ConnectionState.DISCONNECTED
            async with a.subscribe() as stream, trio.open_nursery() as nursery:
                a.restart()
                await ca.send(b"still allowed")  # (over the pair of before)
                woken: list[float] = []

                async def receiver() -> None:
                    with pytest.raises(trio.BrokenResourceError, match="ICE restart"):
                        await ca.receive()  # (waiting when the old pair ends: woken to raise)
                    woken.append(trio.current_time())

                nursery.start_soon(receiver)
                await trio.sleep(0.3)  # (its consent now expired; the new checks go on)
                assert state_of(a) is trice.ConnectionState.CHECKING
                assert woken  # (at once, not at the new checks' end)
                with pytest.raises(trio.BrokenResourceError, match="ICE restart"):
                    await ca.send(b"not any more")
                assert ca.selected_pair == pair  # (none carries data: the last one selected)
                with trio.fail_after(1):
                    await wait_for_state(stream, trice.ConnectionState.FAILED)
                a.restart()  # (from failed, with nobody there: it fails again, in time)
                with trio.fail_after(1):
                    await wait_for_state(stream, trice.ConnectionState.CHECKING)
                    await wait_for_state(stream, trice.ConnectionState.FAILED)


async def test_a_restart_ends_the_check_tasks_in_flight() -> None:
    timing = trice.Timing(rto=1.0, failed_timeout=30.0)
    config = loopback_config(timing=timing)
    async with trice.open_agent(config, controlling=True) as a, trio.open_nursery() as nursery:
        await a.wait_gathering_complete()
        nowhere = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with nowhere:
            nowhere.bind(("127.0.0.1", 0))  # (never read: checks there go unanswered)
            _face(a, nowhere.getsockname()[1])
            nursery.start_soon(a.connect)
            await trio.testing.wait_all_tasks_blocked()
            assert a._runs  # (a check in flight, waiting for its RTO)
            a.restart()
            await trio.testing.wait_all_tasks_blocked()
            assert a._runs == {}
            nursery.cancel_scope.cancel()


async def test_a_peers_ufrag_in_a_log_line_has_its_control_characters_written_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ufrag the peer signalled (in JSON, any text) is logged with a candidate held:
    with its escapes and line breaks written out, it can neither drive the terminal that
    shows the log nor forge a line of it."""
    caplog.set_level(logging.INFO, logger="trice")
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        await a.wait_gathering_complete()
        a.set_remote_parameters("peer\x1b[2J\rWARNING trice forged", "p" * 22)
        init = {
            "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
            "usernameFragment": "old\nWARNING trice forged line",
        }
        a.add_remote_candidate(trice.Candidate.from_json(init))
    (line,) = [r.getMessage() for r in caplog.records if "held" in r.getMessage()]
    assert "old\\nWARNING" in line and "peer\\x1b[2J\\rWARNING" in line
    assert line.isprintable()


async def test_a_peer_process_that_came_back_is_reached_over_its_signalled_host() -> None:
    """A and B connected; B's process comes back (a new agent B2), whose candidates (naming
    its ufrag) and end-of-candidates reach A before its parameters; A restarts, then takes
    the parameters: A pairs with B2's signalled host candidate (they were dropped as
    another generation's, and only a peer-reflexive candidate could stand in)."""
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        async with trice.open_agent(loopback_config(), controlling=False) as b:
            ca, _ = await _connected_pair(a, b)
        async with trice.open_agent(loopback_config(), controlling=False) as b2:
            await b2.wait_gathering_complete()
            ufrag = b2.local_parameters.ufrag
            for candidate in b2.local_candidates:
                a.add_remote_candidate(dataclasses.replace(candidate, username_fragment=ufrag))
            a.add_remote_candidate(None, username_fragment=ufrag)
            new = a.restart()
            a.set_remote_parameters(ufrag, b2.local_parameters.pwd)
            b2.set_remote_parameters(new.ufrag, new.pwd)
            for candidate in a.local_candidates:
                b2.add_remote_candidate(candidate)
            b2.add_remote_candidate(None)
            with trio.fail_after(10):
                _, cb2 = await connect_both(a, b2)
                await ca.send(b"again")
                assert await cb2.receive() == b"again"
            assert ca.selected_pair.remote.type is trice.CandidateType.HOST
            assert a.statistics().remote_candidates_dropped == 0


@pytest.mark.parametrize("how", ["failed", "aclose"])
async def test_a_receive_woken_by_a_datagram_as_ice_fails_or_it_closes_takes_nothing(
    how: str,
) -> None:
    """A receive waiting on its socket is made runnable by a datagram, and in that very
    round ICE fails (a path lost) or the connection closes: the receive raises, and takes
    no data after either (it returned the datagram)."""
    races = 0
    for _ in range(10):
        async with gathered_pair(loopback_config()) as (a, b):
            signal(a, b)
            ca, cb = await connect_both(a, b)
            got: list[object] = []

            async def receive(ca: trice.Connection = ca, got: list[object] = got) -> None:
                try:
                    got.append(await ca.receive())
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    got.append(exc)

            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receive)
                    await trio.testing.wait_all_tasks_blocked()
                    assert cb.send_nowait(b"sent before")
                    await trio.lowlevel.checkpoint()  # (the receive is made runnable)
                    if got:
                        continue  # (it ran first: no race this time)
                    races += 1
                    if how == "failed":
                        now = a._now()  # (what a lost path does: a TCP connection, a relay)
                        selected = a._core.selected
                        assert selected is not None
                        a._core.path_lost(selected.base, selected.remote_address, now)
                        a._pump(now)
                        assert a.connection_state is trice.ConnectionState.FAILED
                    else:
                        await ca.aclose()
            (outcome,) = got
            assert not isinstance(outcome, bytes), outcome
            if races and isinstance(outcome, Exception) and how == "failed":
                stats = a.statistics()  # (the datagram read and dropped: counted so)
                assert (stats.datagrams_received, stats.datagrams_dropped) == (0, 1)
    assert races > 0


@pytest.mark.parametrize("mux", [False, True], ids=["", "mux"])
async def test_data_that_comes_after_the_connection_closed_is_dropped_not_held(
    mux: bool,
) -> None:
    """The connection is closed and its agent still open (it answers STUN): what the peer
    still sends is dropped and counted so, as nothing can receive it now; it was counted
    received, and kept in the buffer for the agent's life.  What had come is let go.  The
    same for an agent on a UDP mux."""
    async with contextlib.AsyncExitStack() as stack:
        share = await stack.enter_async_context(trice.open_udp_mux("127.0.0.1")) if mux else None
        config = loopback_config()
        a = await stack.enter_async_context(trice.open_agent(config, controlling=True, mux=share))
        b = await stack.enter_async_context(trice.open_agent(config, controlling=False))
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        ca, cb = await connect_both(a, b)
        await cb.send(b"unread")
        await until(lambda: a.statistics().datagrams_received == 1)  # (no receive waits)
        await ca.aclose()
        assert not a._buffer.queue
        before = a.statistics()
        for _ in range(5):
            await cb.send(b"after close")
        await until(lambda: a.statistics().datagrams_dropped == before.datagrams_dropped + 5)
        after = a.statistics()
        assert after.datagrams_received == before.datagrams_received
        assert after.datagrams_dropped == before.datagrams_dropped + 5
        assert not a._buffer.queue
        a.restart()  # (an ICE restart opens no closed connection to data)
        await cb.send(b"after the restart")
        await until(lambda: a.statistics().datagrams_dropped == before.datagrams_dropped + 6)
        assert not a._buffer.queue


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
@pytest.mark.parametrize("then", ["data", "aclose"])
async def test_a_receive_waiting_on_the_old_pairs_socket_follows_the_pair(then: str) -> None:
    """A receive waits on the selected pair's socket (IPv4); the peer nominates another
    pair (IPv6), and a second receive comes: data over the new pair reaches both, and
    aclose wakes both.  The first was left on the old socket, and the second took over
    the buffer's one ``waiting_on``: nothing woke the first again."""
    low = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    high = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with low, high:
        await low.bind(("127.0.0.1", 0))
        await high.bind(("::1", 0))
        async with trice.open_agent(filtered_config(), controlling=False) as b:
            await b.wait_gathering_complete()
            b.set_remote_parameters("peer", "x" * 22)
            nominate = peer_check(b, "peer", controlling=True, nominate=True)
            for sock, priority in ((high, 2130706431), (low, 2130706175)):
                host, port = sock.getsockname()[:2]
                line = f"candidate:{priority} 1 udp {priority} {host} {port} typ host"
                b.add_remote_candidate(trice.Candidate.from_sdp(line))
            b.add_remote_candidate(None)
            seen: dict[object, tuple[str, int]] = {}

            async def answer(sock: trio.socket.SocketType) -> None:
                while True:  # (every check of b's answered; where it came from kept)
                    data, source = await sock.recvfrom(65536)
                    message = stun.decode(data)
                    source = seen[sock] = source[:2]
                    if message.message_class is stun.MessageClass.REQUEST:
                        await sock.sendto(_answer(message, source), source)

            got: list[object] = []

            async def receive(conn: trice.Connection) -> None:
                try:
                    got.append(await conn.receive())
                except trio.ClosedResourceError as exc:
                    got.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer, low)
                nursery.start_soon(answer, high)
                nursery.start_soon(b.connect)  # (b checks)
                await until(lambda: len(seen) == 2)
                async with b.subscribe() as stream:
                    await low.sendto(nominate, seen[low])  # (the IPv4 pair first)
                    conn = await b.connect()
                    assert conn.selected_pair.local.address == "127.0.0.1"
                    nursery.start_soon(receive, conn)  # (waits on b's IPv4 socket)
                    await trio.testing.wait_all_tasks_blocked()
                    events_so_far(stream)
                    await high.sendto(nominate, seen[high])  # (then the IPv6 one)
                    with trio.fail_after(5):
                        async for event in stream:
                            if isinstance(event, trice.SelectedPairChanged):
                                break
                assert conn.selected_pair.local.address == "::1"
                nursery.start_soon(receive, conn)
                await trio.testing.wait_all_tasks_blocked()
                if then == "data":
                    await high.sendto(b"one", seen[high])
                    await high.sendto(b"two", seen[high])
                    await until(lambda: len(got) == 2)
                    assert sorted(got) == [b"one", b"two"]  # type: ignore[type-var]
                else:
                    await conn.aclose()
                    await until(lambda: len(got) == 2)
                    assert all(isinstance(x, trio.ClosedResourceError) for x in got)
                nursery.cancel_scope.cancel()


async def test_a_receive_outlives_many_reroutes() -> None:
    """A receive waits on the selected pair's socket while the pair is rerouted again and
    again (a controlled agent following the peer's nominations, one each consent
    interval, for as long as the receive waits): it returns the peer's datagram.  Each
    reroute nested one more call, and 1200 of them broke trio's run."""
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        got: list[object] = []

        async def receive() -> None:
            got.append(await cb.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(1200):
                cb._reroute()  # (what b does at each SelectedPairChanged)
                await trio.testing.wait_all_tasks_blocked()
            await ca.send(b"hello")
            await until(lambda: bool(got))
        assert got == [b"hello"]


async def test_an_end_of_candidates_from_json_names_its_generation() -> None:
    """The JSON end-of-candidates carries a usernameFragment, which add_remote_candidate
    takes with it: one of the peer's generation before its restart, come after the new
    parameters, is ignored, and the new candidates are taken (each raised StateError); a
    usernameFragment that contradicts the candidate's own is a UsageError."""
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        await connect_both(a, b)
        late = trice.end_of_candidates_json(username_fragment=b.local_parameters.ufrag)
        a.restart()
        b.restart()
        params = a.local_parameters
        b.set_remote_parameters(params.ufrag, params.pwd)
        for candidate in a.local_candidates:
            b.add_remote_candidate(candidate)
        b.add_remote_candidate(None)
        params = b.local_parameters
        a.set_remote_parameters(params.ufrag, params.pwd)
        ufrag = late["usernameFragment"]
        assert isinstance(ufrag, str)
        a.add_remote_candidate(trice.Candidate.from_json(late), username_fragment=ufrag)
        for candidate in b.local_candidates:
            a.add_remote_candidate(candidate)
        a.add_remote_candidate(None, username_fragment=params.ufrag)
        await connect_both(a, b)
        candidate = dataclasses.replace(b.local_candidates[0], username_fragment="abcd")
        with pytest.raises(trice.UsageError):
            a.add_remote_candidate(candidate, username_fragment="efgh")


async def test_warm_up_and_address_changes_refuse_bad_arguments_with_config_errors() -> None:
    """A fraction, a bool, None, NaN or a huge number of warm-up rounds, a huge poll
    interval, or an AgentConfig where the NetworkConfig goes: ConfigError at the call (they
    were TypeError, ValueError, OverflowError, or an AttributeError at the first value)."""
    for rounds in (2.5, None, True, "3", math.nan, 10**400, 0):
        with pytest.raises(trice.ConfigError):
            await trice.warm_up(rounds)  # type: ignore[arg-type]
    with pytest.raises(trice.ConfigError):
        trice.address_changes(trice.AgentConfig())  # type: ignore[arg-type]
    with pytest.raises(trice.ConfigError):
        trice.address_changes(interval=10**400)


_SHORT_LITE = trice.Timing(keepalive_interval=0.25, disconnected_timeout=0.6, failed_timeout=1.0)


async def test_a_lite_agents_consent_is_kept_by_data_over_the_selected_pair_only() -> None:
    """The full peer closes (no check, no data from it: RFC 7675 says stop sending), but a
    candidate it signalled, never checked, keeps sending plain datagrams: the lite agent
    fails at failed_timeout, as such data is no consent (any data from the peer's known
    addresses had kept it up for good)."""
    full = loopback_config(timing=_SHORT_LITE)
    lite = loopback_config(lite=True, timing=_SHORT_LITE)
    stranger = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await stranger.bind(("127.0.0.1", 0))
    port = stranger.getsockname()[1]
    async with trice.open_agent(lite, controlling=False) as b:
        async with trice.open_agent(full, controlling=True) as a:
            with trio.fail_after(10):
                await a.wait_gathering_complete()
                await b.wait_gathering_complete()
            signal(a, b, end=False)
            # The peer also signals a candidate no check ever goes to or from.
            b.add_remote_candidate(
                trice.Candidate.from_sdp(f"candidate:9 1 udp 1 127.0.0.1 {port} typ host")
            )
            a.add_remote_candidate(None)
            b.add_remote_candidate(None)
            await connect_both(a, b)
            pair = b.selected_pair
            assert pair is not None
            target = (pair.local.address, pair.local.port)
            assert target != ("127.0.0.1", port)
        # The full peer is closed: no check, no data from it.
        async with b.subscribe() as events, trio.open_nursery() as nursery:

            async def spray() -> None:
                while True:
                    await stranger.sendto(b"not-stun", target)
                    await trio.sleep(0.05)

            nursery.start_soon(spray)
            failed = False
            with trio.move_on_after(4 * _SHORT_LITE.failed_timeout):
                async for event in events:
                    if (
                        isinstance(event, trice.ConnectionStateChanged)
                        and event.state is trice.ConnectionState.FAILED
                    ):
                        failed = True
                        break
            nursery.cancel_scope.cancel()
        stranger.close()
        assert failed, f"lite agent still {state_of(b)} 4 s after its peer closed"


async def _steps_while_flooded(agent: trice.Agent, count: int = 1000) -> list[int]:
    """``count`` datagrams of a stranger's put on the agent's first socket at once: how
    many the agent handles between two of this task's checkpoints, each time."""
    primary = agent._primary
    assert primary is not None
    room_for_a_flood(primary.sock, 8 << 20)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.setblocking(False)
        before = agent.statistics().unknown_source_dropped
        for _ in range(count):
            stranger.sendto(b"\xffgarbage", primary.local_address)
        counts = [0]
        with trio.fail_after(5):
            while counts[-1] < count:
                await trio.lowlevel.checkpoint()
                counts.append(agent.statistics().unknown_source_dropped - before)
    return [b - a for a, b in itertools.pairwise(counts)]


async def test_a_flood_while_connect_reads_the_socket_lets_other_tasks_run() -> None:
    """connect() reads the agent's first socket itself (the peer in another process): a
    flood is read a batch at a time, other tasks running between batches (it read all
    1,000 at once, and a flood of bad checks held the run for as long as it lasted)."""
    async with trice.open_agent(loopback_config(), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("elsewhere", "p" * 24)
        line = "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"
        agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.connect)
            await until(lambda: agent._connect_blocked)  # (connect() waits on the socket)
            steps = await _steps_while_flooded(agent)
            nursery.cancel_scope.cancel()
    assert max(steps) <= 2 * READ_BATCH, steps


async def test_stun_longer_than_any_check_is_dropped_undecoded() -> None:
    """A Binding request of 3,000 bytes (hundreds of empty attributes: a flood of such
    cost a batch of reads a second of the run to decode) is dropped, counted malformed,
    and not answered; one of ICE's size is answered."""
    async with trice.open_agent(loopback_config(), controlling=False) as agent:
        await agent.wait_gathering_complete()
        (candidate,) = agent.local_candidates
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.settimeout(0.5)
            for attributes, answered in ((740, False), (10, True)):
                body = b"".join(struct.pack("!HH", 0x8030, 0) for _ in range(attributes))
                request = struct.pack("!HHI", 1, len(body), 0x2112A442) + b"T" * 12 + body
                before = agent.statistics().malformed_dropped
                peer.sendto(request, (candidate.address, candidate.port))
                try:
                    got = await trio.to_thread.run_sync(peer.recv, 2048)
                except TimeoutError:
                    got = b""
                assert bool(got) is answered, attributes
                assert agent.statistics().malformed_dropped == before + (not answered)


async def test_a_lite_agents_consent_is_dated_by_its_data_over_the_selected_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Data over the selected pair, then later data from another address of the peer's
    (never checked): the lite agent's consent is dated by the first (it was dated by the
    latest datagram from anywhere, consent stretched by up to a wake-up)."""
    told: list[tuple[float, bool]] = []
    on_data = AgentCore.on_data

    def recording(self: AgentCore, now: float, *, selected: bool = False) -> None:
        told.append((now, selected))
        on_data(self, now, selected=selected)

    monkeypatch.setattr(AgentCore, "on_data", recording)
    stranger = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await stranger.bind(("127.0.0.1", 0))
    port = stranger.getsockname()[1]
    full = trice.Timing(keepalive_interval=30, disconnected_timeout=20, failed_timeout=30)
    lite = trice.Timing(keepalive_interval=0.3, disconnected_timeout=0.6, failed_timeout=1.0)
    with stranger:
        async with (
            trice.open_agent(loopback_config(timing=full), controlling=True) as a,
            trice.open_agent(loopback_config(lite=True, timing=lite), controlling=False) as b,
        ):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b, end=False)
            line = f"candidate:9 1 udp 1 127.0.0.1 {port} typ host"
            b.add_remote_candidate(trice.Candidate.from_sdp(line))
            a.add_remote_candidate(None)
            b.add_remote_candidate(None)
            ca, _ = await connect_both(a, b)
            pair = b.selected_pair
            assert pair is not None
            target = pair.local.transport_address
            await until(lambda: b.connection_state is trice.ConnectionState.COMPLETED)
            told.clear()
            await ca.send(b"over the selected pair")
            await until(lambda: b._lite_data == 1)
            selected_at = b._lite_at
            await trio.sleep(0.05)  # (a later datagram, from elsewhere)
            await stranger.sendto(b"from another address", target)
            await until(lambda: any(selected for _, selected in told))
    ((at, _),) = [entry for entry in told if entry[1]]
    assert at == selected_at


async def test_a_lite_agent_is_told_of_its_data_before_the_next_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Data over a lite agent's selected pair is told to its core at the core's next
    deadline; a check of the peer's that comes first is handled with the data told before
    it (the core judges from it whether the selected pair is in use, as the peer checks a
    backup pair).  The check was handled first, the data seconds later."""
    told: list[tuple[str, float]] = []
    on_data, on_request = AgentCore.on_data, AgentCore.on_request

    def data(self: AgentCore, now: float, *, selected: bool = False) -> None:
        if selected:
            told.append(("data", now))
        on_data(self, now, selected=selected)

    def request(self: AgentCore, *args: Any) -> Any:
        told.append(("check", args[-1]))
        return on_request(self, *args)

    monkeypatch.setattr(AgentCore, "on_data", data)
    monkeypatch.setattr(AgentCore, "on_request", request)
    full = trice.Timing(keepalive_interval=0.2, disconnected_timeout=5, failed_timeout=10)
    lite = trice.Timing(keepalive_interval=30, disconnected_timeout=20, failed_timeout=30)
    async with (
        trice.open_agent(loopback_config(timing=full), controlling=True) as a,
        trice.open_agent(loopback_config(lite=True, timing=lite), controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        ca, _ = await connect_both(a, b)
        await until(lambda: b.connection_state is trice.ConnectionState.COMPLETED)
        await ca.send(b"over the selected pair")
        await until(lambda: b._lite_data == 1)
        sent_at = b._lite_at
        told.clear()
        await until(lambda: any(what == "check" for what, _ in told))  # (a's consent check)
    first_check = next(i for i, (what, _) in enumerate(told) if what == "check")
    assert ("data", sent_at) in told[:first_check]


async def test_resume_wakes_an_agent_task_that_waits_on_its_first_socket_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without epoll the agent task waits on its first socket itself, not parked: data
    that comes another way (a relay, a TCP connection: _dispatch resumes the agent) wakes
    it all the same.  It woke only at its next timer: a disconnected relayed agent, which
    no longer polls, came back a consent interval late."""
    monkeypatch.setattr(trice._trio._timers, "HAS_EPOLL", False)
    quiet = trice.Timing(keepalive_interval=30, disconnected_timeout=20, failed_timeout=30)
    async with gathered_pair(loopback_config(timing=quiet)) as (a, b):
        signal(a, b)
        await connect_both(a, b)
        primary = a._primary
        assert primary is not None
        await until(lambda: primary.reader_waiting and a._parked is None)
        looked = 0
        next_deadline = AgentCore.next_deadline

        def counting(core: AgentCore) -> float | None:
            nonlocal looked
            looked += core is a._core
            return next_deadline(core)

        monkeypatch.setattr(AgentCore, "next_deadline", counting)
        a._resume()
        await until(lambda: looked > 0)


async def test_a_pwd_is_neither_shown_by_repr_nor_quoted_by_errors() -> None:
    """The pwd is a secret (with the ufrag, it authenticates checks): AgentConfig's and
    IceParameters' repr showed it (IceServer and ProxyUrl hide theirs), and the errors of
    a pwd refused (AgentConfig, restart, set_remote_parameters) quoted it; they say its
    length and where it goes wrong."""
    pwd = "S3cretS3cretS3cretS3cr"
    assert pwd not in repr(trice.AgentConfig(ufrag="abcd", pwd=pwd))
    assert pwd not in repr(trice.IceParameters("abcd", pwd))
    bad = "S3cretS3cretS3cret!!x"  # (21 characters, and a '!')
    with pytest.raises(trice.ConfigError, match=r"21 characters, not one at index 18") as info:
        trice.AgentConfig(pwd=bad)
    assert "S3cret" not in str(info.value)
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        with pytest.raises(trice.ConfigError) as info:
            agent.restart(pwd=bad)
        assert "S3cret" not in str(info.value)
        for remote in ("PeerSecret\x07PeerSecret", "PeerSecret" * 30, "PeerSecret\ud800"):
            with pytest.raises(trice.ConfigError) as info:
                agent.set_remote_parameters("abcd", remote)
            assert "PeerSecret" not in str(info.value), info.value


@pytest.mark.parametrize(
    "opener", ["open_agent", "open_udp_mux", "open_tcp_mux", "warm_up", "address_changes"]
)
def test_under_asyncio_opening_says_that_trice_runs_under_trio(opener: str) -> None:
    """An application on asyncio that tries trice: a UsageError that says what is wrong
    (it was trio's AttributeError: 'RunContext' object has no attribute 'runner'), and no
    socket opened."""

    async def main() -> None:
        block: contextlib.AbstractAsyncContextManager[object]
        if opener == "warm_up":
            await trice.warm_up(1)
            return
        if opener == "address_changes":
            network = loopback_config().network  # (it reads interfaces, and sends nothing)
            async with contextlib.aclosing(trice.address_changes(network)) as changes:
                async for _ in changes:
                    break
            return
        if opener == "open_agent":
            block = trice.open_agent(loopback_config(), controlling=True)
        elif opener == "open_udp_mux":
            block = trice.open_udp_mux("127.0.0.1")
        else:
            block = trice.open_tcp_mux("127.0.0.1")
        async with block:
            raise AssertionError("entered")

    def sockets() -> int:
        fds = pathlib.Path("/proc/self/fd")
        return sum(os.readlink(fd).startswith("socket:") for fd in fds.iterdir() if fd.exists())

    before = sockets()
    with pytest.raises(trice.UsageError, match=f"{opener} runs under trio"):
        asyncio.run(main())
    assert sockets() == before


async def test_the_agents_methods_called_from_a_plain_thread_raise_and_change_nothing() -> None:
    """A signaling or UI thread that calls the agent directly (not through
    ``trio.from_thread``) gets StateError before anything changes.  Before, ``restart``
    changed the parameters, took a subscriber out of its wait for good and raised trio's
    RuntimeError; ``set_remote_parameters`` set the parameters, left a check without its task
    and raised AttributeError."""
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
        before = agent.local_parameters
        candidate = agent.local_candidates[0]
        calls: list[Callable[[], object]] = [
            lambda: agent.set_remote_parameters("peer", "p" * 22),
            lambda: agent.add_remote_candidate(candidate),
            lambda: agent.add_remote_candidate(None),
            agent.restart,
            agent.subscribe,
        ]

        raised = await trio.to_thread.run_sync(what_each_raises, calls)
        assert all(isinstance(exc, trice.StateError) for exc in raised), raised
        assert "trio.from_thread.run_sync" in str(raised[0])
        assert agent.local_parameters == before
        assert agent.remote_parameters is None and agent.remote_candidates == ()
        assert agent.connection_state is trice.ConnectionState.NEW

        # Through trio.from_thread, as the message says, it works.
        def restart() -> trice.IceParameters:
            return trio.from_thread.run_sync(agent.restart)

        after = await trio.to_thread.run_sync(restart)
        assert after != before and agent.local_parameters == after


def test_an_agent_called_from_another_trio_run_raises_and_breaks_neither_run() -> None:
    """An application with a trio run in each of two threads hands an agent of one to a task
    of the other, which calls it directly: StateError, both runs go on.  Before, the calls
    went through, the agent's check tasks were started on the other run's scheduler, and
    that run died with TrioInternalError."""
    raised: list[BaseException | None] = []

    async def run_a(b: trice.Agent) -> None:
        async with trice.open_agent(loopback_config(), controlling=True) as a:
            await a.wait_gathering_complete()
            params = a.local_parameters
            raised.extend(
                what_each_raises(
                    [
                        lambda: b.set_remote_parameters(params.ufrag, params.pwd),
                        lambda: b.add_remote_candidate(a.local_candidates[0]),
                    ]
                )
            )
            with pytest.raises(trice.StateError):
                await b.connect()
            with pytest.raises(trice.StateError):
                await b.wait_gathering_complete()
            await trio.sleep(0.05)  # (a turn of run A's scheduler, were tasks started in it)

    with held_in_another_run(lambda: trice.open_agent(loopback_config(), controlling=False)) as b:
        trio.run(run_a, b)
        assert b.remote_parameters is None  # (nothing set from run A)
    assert all(isinstance(exc, trice.StateError) for exc in raised), raised


async def test_the_selected_pair_stays_as_last_said_once_ice_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A controlled agent selected a pair whose remote candidate the peer's check taught
    (peer-reflexive: signaling was slow), and ICE failed (the peer went away).  The peer's
    host candidate, signalled now, takes that candidate's place, and nothing is said, ICE
    being over: ``selected_pair`` stays the pair last said, as does the flagged row of
    ``pair_statistics``, also after a restart.  It changed, unsaid, and agreed with no event
    any subscriber got (the eventgrammar review; p37pass2)."""
    config = loopback_config()
    async with trice.open_agent(config, controlling=False) as b:
        stream, watch = b.subscribe(), b.subscribe()
        async with trice.open_agent(config, controlling=True) as a:
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            pa, pb = a.local_parameters, b.local_parameters
            a.set_remote_parameters(pb.ufrag, pb.pwd)
            for candidate in b.local_candidates:
                a.add_remote_candidate(candidate)
            a.add_remote_candidate(None)
            b.set_remote_parameters(pa.ufrag, pa.pwd)  # (a's candidates not yet)
            await connect_both(a, b)
            (host,) = a.local_candidates
        with trio.fail_after(120):
            await wait_for_state(watch, trice.ConnectionState.FAILED)
        b.add_remote_candidate(host)  # (signaling was slow: it comes now)
        said = [e.pair for e in events_so_far(stream) if isinstance(e, trice.SelectedPairChanged)]
        assert said[-1].remote.type is trice.CandidateType.PRFLX
        assert b.selected_pair == said[-1]
        # Its statistics' row says so too, and so does a restart after (p37pass2 on f41c34d).
        (row,) = [row for row in b.pair_statistics() if row.selected]
        assert row.pair == said[-1]
        b.restart()
        assert b.selected_pair == said[-1]
        assert not [e for e in events_so_far(stream) if isinstance(e, trice.SelectedPairChanged)]


@pytest.mark.parametrize("subscribed", ["before", "after"])
async def test_closed_ends_a_full_stream_after_the_mark_of_what_it_lost(
    autojump_clock: trio.testing.MockClock, subscribed: str
) -> None:
    """A subscriber whose buffer is full as the agent closes gets ``closed`` all the same,
    last, after the mark of the events it lost (and so does one subscribed after the close,
    whose replay fills it).  It lost ``closed`` with the others: its stream ended on an
    EventsLost, and a state machine waiting for ``closed`` never saw it (the eventgrammar
    review)."""
    closed = trice.ConnectionStateChanged(trice.ConnectionState.CLOSED)
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        await a.wait_gathering_complete()
        if subscribed == "before":
            stream = a.subscribe(max_buffer=2)  # (its replay fills it: gathering, a candidate)
    if subscribed == "after":
        stream = a.subscribe(max_buffer=2)
    with trio.fail_after(5):  # (a stream of a closed agent that never ended: a failure)
        events = [event async for event in stream]
    gathering = trice.GatheringStateChanged(trice.GatheringState.GATHERING)
    assert events[0] == gathering and isinstance(events[1], trice.CandidateGathered)
    assert events[2:] == [trice.EventsLost(1), closed]  # (complete lost; closed, never)


async def _second_receive_waited(
    ca: trice.Connection,
    cb: trice.Connection,
    leave: Callable[[trio.CancelScope], Awaitable[None]],
) -> float:
    """Two tasks receive on ``cb``: the first waits on the socket itself, the second for a
    datagram handed over.  ``leave(first's cancel scope)`` has the first leave (cancelled,
    or done with a datagram), then the peer sends one: how long the second waited for it."""
    first_scope = trio.CancelScope()
    got: list[float] = []

    async def first() -> None:
        with first_scope:
            await cb.receive()

    async def second() -> None:
        await cb.receive()
        got.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        await leave(first_scope)
        await trio.testing.wait_all_tasks_blocked()
        sent = trio.current_time()
        await ca.send(b"\x80next")
    assert got
    return got[0] - sent


def _leaving(how: str, ca: trice.Connection) -> Callable[[trio.CancelScope], Awaitable[None]]:
    """The first receive leaves: ``"cancelled"``, or ``"done"`` with a datagram."""

    async def leave(scope: trio.CancelScope) -> None:
        if how == "cancelled":
            scope.cancel()
        else:
            await ca.send(b"\x80first")

    return leave


@pytest.mark.parametrize("leaves", ["cancelled", "done"])
async def test_a_receive_waiting_behind_another_is_served_once_that_one_leaves(
    autojump_clock: trio.testing.MockClock, leaves: str
) -> None:
    """Two tasks receive: the first waits on the socket itself, the second waits for a
    datagram handed over.  The first leaves (cancelled, or done with its datagram): the
    second waits on the socket now, and the next datagram reaches it at once.  It was left
    waiting to be handed one, which nothing did until the reader's lease ran out, 20 ms
    later (the triocontract review)."""
    with wall_clock_guard():
        async with gathered_pair(loopback_config()) as (a, b):
            signal(a, b)
            ca, cb = await connect_both(a, b)
            waited = await _second_receive_waited(ca, cb, _leaving(leaves, ca))
    assert waited < 0.005, waited


async def test_send_takes_its_datagram_as_trio_abc_send_channel_names_it() -> None:
    """Code written for any ``trio.abc.SendChannel`` may call ``send(value=...)`` (the
    argument was named ``data``: a TypeError; the triocontract review)."""
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        channel: trio.abc.SendChannel[bytes] = ca
        await channel.send(value=b"\x80generic")
        with trio.fail_after(5):
            assert await cb.receive() == b"\x80generic"


def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


def _signal_family(here: trice.Agent, there: trice.Agent, version: int) -> None:
    params = there.local_parameters
    here.set_remote_parameters(params.ufrag, params.pwd)
    for candidate in there.local_candidates:
        if _version(candidate.address) == version:
            here.add_remote_candidate(candidate)
    here.add_remote_candidate(None)


@pytest.mark.skipif(not HAS_IPV6, reason="needs ::1")
@pytest.mark.parametrize("leaves", ["cancelled", "done"])
async def test_a_receive_parked_before_a_reroute_takes_the_new_socket_once_the_holder_leaves(
    autojump_clock: trio.testing.MockClock, leaves: str
) -> None:
    """As the test above, with the selected pair moved to another socket between (an ICE
    restart onto the other family): the first receive follows it and waits on the new
    socket; once it leaves, the second waits there and gets the next datagram at once.  It
    stayed waiting to be handed one (it looked for the socket of before), 20 ms (the
    p38pass4 review)."""
    with wall_clock_guard():
        async with gathered_pair(filtered_config()) as (a, b):
            signal(a, b)
            ca, cb = await connect_both(a, b)
            before = cb.selected_pair.local
            other = 6 if _version(before.address) == 4 else 4

            async def restart_then_leave(scope: trio.CancelScope) -> None:
                held_before = cb._udp
                assert held_before is not None and held_before.held
                # An ICE restart onto the other family: another socket.
                a.restart()
                b.restart()
                _signal_family(a, b, other)
                _signal_family(b, a, other)

                def moved(agent: trice.Agent) -> bool:
                    pair = agent.selected_pair
                    return pair is not None and _version(pair.local.address) == other

                await until(lambda: moved(a) and moved(b), within=10)
                await trio.testing.wait_all_tasks_blocked()
                # (the first receive follows the pair: it waits on the new socket)
                now_udp = cb._udp
                if now_udp is None:
                    cb._get_route()
                    now_udp = cb._udp
                assert now_udp is not None and now_udp is not held_before
                assert now_udp.held, "the first receive did not move to the new socket"
                await _leaving(leaves, ca)(scope)

            waited = await _second_receive_waited(ca, cb, restart_then_leave)
    assert waited < 0.005, waited


class _ReceiverSteps(trio.abc.Instrument):
    """Counts the task steps of tasks named ``receiver ...``."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith("receiver "):
            self.steps += 1


async def _receivers_in_a_loop(count: int, datagrams: int) -> tuple[list[int], int]:
    """``count`` tasks each receive in a plain loop while the peer sends ``datagrams``
    datagrams 1 ms apart: how many each task got, and the receivers' task steps."""
    got = [0] * count
    async with gathered_pair(loopback_config()) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)

        async def receiver(i: int) -> None:
            while True:
                await cb.receive()
                got[i] += 1

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(receiver, i, name=f"receiver {i}")
            await trio.testing.wait_all_tasks_blocked()
            counter = _ReceiverSteps()
            trio.lowlevel.add_instrument(counter)
            try:
                for k in range(datagrams):
                    await ca.send(b"\x80%d" % k)
                    await trio.sleep(0.001)
                await trio.sleep(0.1)
            finally:
                trio.lowlevel.remove_instrument(counter)
            nursery.cancel_scope.cancel()
    assert sum(got) == datagrams
    return got, counter.steps


async def test_receives_in_a_loop_take_the_datagrams_in_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three tasks receive in a loop, as workers on a trio memory channel would: they take
    the datagrams in turn.  The task that got one came back before the others woken had
    run, took the socket again, and got every one (the p38pass5 review)."""
    with wall_clock_guard():
        got, _ = await _receivers_in_a_loop(3, 60)
    assert got == [20, 20, 20], got


async def test_a_datagram_costs_the_receivers_the_same_steps_however_many_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A datagram wakes the receive that has its turn and the one that got it, not every
    receive waiting: six receivers take well under three times the steps of two (every
    parked receive was woken at each release, to park again: six steps a datagram, against
    two; the p38pass5 review)."""
    with wall_clock_guard():
        _, two = await _receivers_in_a_loop(2, 100)
        _, six = await _receivers_in_a_loop(6, 100)
    assert six < 2 * two, (two, six)


async def test_a_receive_given_its_turn_as_the_route_is_forgotten_takes_the_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two receives: the first waits on the socket, the second is parked.  The pair is
    selected anew (``_reroute``, as Agent._emit does at a SelectedPairChanged, here over
    the same socket) in the same step as the first receive leaves (cancelled): the second,
    given its turn, looks the route up and waits on the socket.  It parked again, the
    route not yet looked up, and the next datagram waited for the reader's lease, 20 ms
    (the p38pass6 review)."""
    with wall_clock_guard():
        async with gathered_pair(loopback_config()) as (a, b):
            signal(a, b)
            ca, cb = await connect_both(a, b)

            async def cancel_and_reroute(scope: trio.CancelScope) -> None:
                assert cb._udp is not None and cb._udp.held
                scope.cancel()
                cb._reroute()  # (the pair selected anew: Agent._emit)

            waited = await _second_receive_waited(ca, cb, cancel_and_reroute)
    assert waited < 0.005, waited


async def test_data_after_a_restart_whose_checks_failed_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Both agents restart and the new checks fail (the peer's new candidate is a silent
    port): ``send`` and ``receive`` raise BrokenResourceError saying that the checks after
    the ICE restart selected no pair, not that the peer's consent expired (the p48pass
    review), and ``connect()`` says why."""
    timing = trice.Timing(rto=0.1, rto_max=0.2, max_binding_requests=3)
    config = loopback_config(timing=timing)
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
        ):
            ca, _cb = await _connected_pair(a, b)
            a.restart()
            params = b.restart()
            a.set_remote_parameters(params.ufrag, params.pwd)
            port = silent.getsockname()[1]
            line = f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"
            a.add_remote_candidate(trice.Candidate.from_sdp(line))
            a.add_remote_candidate(None)
            with trio.fail_after(30), pytest.raises(trice.IceFailedError, match="no candidate"):
                await a.connect()
            with pytest.raises(trio.BrokenResourceError, match="after the ICE restart"):
                await ca.send(b"x")
            with pytest.raises(trio.BrokenResourceError, match="after the ICE restart"):
                await ca.receive()


async def test_tasks_waiting_together_in_connect_all_return_and_one_cancelled_leaves_no_trace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first task that waits in ``connect`` (or ``wait_gathering_complete``) for a
    change of the agent's parks itself; the others wait on an event.  The parked one,
    cancelled, frees its place (a wake-up would otherwise reschedule a task no longer
    waiting: trio raises), the next takes it, and every waiter left returns the one
    connection once the peer's candidates come."""
    config = loopback_config()
    async with gathered_pair(config) as (a, b):
        params = b.local_parameters
        a.set_remote_parameters(params.ufrag, params.pwd)  # (no candidate yet: it waits)
        got: list[trice.Connection] = []
        first = trio.CancelScope()

        async def connect() -> None:
            got.append(await a.connect())

        async def cancelled_connect() -> None:
            with first:
                await a.connect()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled_connect)  # (parks itself)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(connect)  # (on the event)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(connect)  # (parks itself in the place the first left)
            await trio.testing.wait_all_tasks_blocked()
            signal(a, b)
            nursery.start_soon(b.connect)
        assert first.cancelled_caught
        assert len(got) == 2 and got[0] is got[1]
