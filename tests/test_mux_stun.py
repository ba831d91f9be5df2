"""Server-reflexive candidates for agents on a UDP mux: the mux asks each STUN server from
its own socket, once for all its agents (as Pion's ``UniversalUDPMux``), and keeps the answer
a while.  On loopback, with a STUN server of the test's own that reports a documentation
address as the mapping (as a NAT in front of the mux would)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trice
from trice._trio import _mux

from loopback import loopback_config, mux_in_a_task, server_socket, stun_server

MAPPED = "203.0.113.7"  # (the port is the mux's own, as a 1:1 NAT maps it)
Seen = list[tuple[tuple[str, int], bytes]]


@asynccontextmanager
async def _stun(**options: Any) -> AsyncIterator[tuple[str, Seen]]:
    """A STUN server of the test's own (``stun_server``'s ``options``): its URL, and the
    source and transaction ID of each request it got."""
    seen: Seen = []
    with await server_socket() as sock:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(stun_server, sock, (MAPPED, None), seen=seen, **options)
            nursery.start_soon(serve)
            yield f"stun:127.0.0.1:{sock.getsockname()[1]}", seen
            nursery.cancel_scope.cancel()


def _config(url: str, *, gather_timeout: float = 5.0) -> trice.AgentConfig:
    timing = trice.Timing(rto=0.05, gather_timeout=gather_timeout)
    return loopback_config(ice_servers=[trice.IceServer(url)], timing=timing)


def _requests(seen: Seen) -> int:
    """How many transactions the server saw (a retransmission is the same one)."""
    return len({tid for _, tid in seen})


async def _gathered(agent: trice.Agent) -> tuple[trice.Candidate, ...]:
    with trio.fail_after(5):
        await agent.wait_gathering_complete()
    return agent.local_candidates


def _assert_srflx_of(candidates: Sequence[trice.Candidate], mux: trice.UdpMux) -> None:
    """The mux's host candidate, and a srflx one at the mapped address, related to it."""
    host, srflx = candidates
    assert (host.type, host.transport_address) == (trice.CandidateType.HOST, mux.local_address)
    assert srflx.type is trice.CandidateType.SRFLX
    assert srflx.transport_address == (MAPPED, mux.local_address[1])
    assert (srflx.related_address, srflx.related_port) == mux.local_address


async def test_agents_opened_together_on_a_mux_cost_the_server_one_request() -> None:
    """Twenty agents open on one mux while the server does not answer yet: the mux asks
    once, from its own socket, and the others wait for that answer; each agent gathers the
    mux's server-reflexive address as a srflx candidate of its own."""
    gate = trio.Event()
    async with _stun(gate=gate) as (url, seen), trice.open_udp_mux() as mux:
        async with AsyncExitStack() as stack:
            agents = [
                await stack.enter_async_context(
                    trice.open_agent(_config(url), controlling=True, mux=mux)
                )
                for _ in range(20)
            ]
            await trio.testing.wait_all_tasks_blocked()  # (every agent asks, or waits)
            gate.set()
            for agent in agents:
                _assert_srflx_of(await _gathered(agent), mux)
                (report,) = [r for r in agent.gather_reports if r.source != "host"]
                assert (report.candidates, report.error) == (1, None)
        assert _requests(seen) == 1
        assert {source for source, _ in seen} == {mux.local_address}


async def test_the_answer_is_kept_a_while_then_asked_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent opened after the first has its answer from the mux, with no request; once
    the answer is older than ``ANSWER_KEPT``, the next agent's has the mux ask again."""
    async with _stun() as (url, seen), trice.open_udp_mux() as mux:
        for expected in (1, 1):
            async with trice.open_agent(_config(url), controlling=True, mux=mux) as agent:
                _assert_srflx_of(await _gathered(agent), mux)
            assert _requests(seen) == expected
        monkeypatch.setattr(_mux, "ANSWER_KEPT", 0.0)
        for expected in (2, 3):
            async with trice.open_agent(_config(url), controlling=True, mux=mux) as agent:
                _assert_srflx_of(await _gathered(agent), mux)
            assert _requests(seen) == expected


async def test_a_mux_keeps_no_answer_past_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mux that serves agents one after another, each with a STUN server of its own (ICE
    servers set per session, a name that resolves to rotating addresses), kept the last
    answer of every server it ever asked, some kilobyte each, for its whole life (the
    leaks49 review); answers older than ``ANSWER_KEPT`` serve no agent, and go as the next
    is kept."""
    monkeypatch.setattr(_mux, "ANSWER_KEPT", 0.0)
    async with trice.open_udp_mux() as mux:
        for _ in range(3):
            async with (
                _stun() as (url, _),
                trice.open_agent(_config(url), controlling=True, mux=mux) as agent,
            ):
                _assert_srflx_of(await _gathered(agent), mux)
            assert len(mux._answers) == 1


async def test_an_error_answer_is_each_waiting_agents_but_is_not_kept() -> None:
    """The server answers with an error: the agents that waited for that answer report it
    (no srflx candidate); it is not kept, so an agent opened later asks again."""
    gate = trio.Event()
    async with _stun(error=400, gate=gate) as (url, seen), trice.open_udp_mux() as mux:
        async with (
            trice.open_agent(_config(url), controlling=True, mux=mux) as a,
            trice.open_agent(_config(url), controlling=True, mux=mux) as b,
        ):
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
            for agent in (a, b):
                assert [c.type for c in await _gathered(agent)] == [trice.CandidateType.HOST]
                (report,) = [r for r in agent.gather_reports if r.source != "host"]
                assert (report.candidates, report.error) == (0, "400 Nope")
        assert _requests(seen) == 1
        async with trice.open_agent(_config(url), controlling=True, mux=mux) as c:
            await _gathered(c)
        assert _requests(seen) == 2


async def test_an_agent_that_waited_for_one_that_gave_up_asks_itself() -> None:
    """The agent whose request is in flight gives up (its gather timeout is short); the one
    waiting for its answer then asks itself, and gathers the srflx candidate once the
    server answers."""
    gate = trio.Event()
    async with _stun(gate=gate) as (url, seen), trice.open_udp_mux() as mux:
        async with trice.open_agent(
            _config(url, gather_timeout=0.3), controlling=True, mux=mux
        ) as quick:
            await trio.testing.wait_all_tasks_blocked()  # (its request is in flight)
            assert _requests(seen) == 1
            async with trice.open_agent(_config(url), controlling=True, mux=mux) as patient:
                assert [c.type for c in await _gathered(quick)] == [trice.CandidateType.HOST]
                (report,) = [r for r in quick.gather_reports if r.source != "host"]
                assert report.error == "timeout"
                gate.set()
                _assert_srflx_of(await _gathered(patient), mux)
        assert _requests(seen) == 2


async def test_a_mux_that_closes_ends_its_question_at_once() -> None:
    """The mux closes while its request waits for the server: the agent's gathering ends
    now with the reason (not at its gather timeout, 10 s on)."""
    async with (
        _stun(gate=trio.Event()) as (url, _),
        mux_in_a_task(trice.open_udp_mux) as (mux, scope, ended),
        trice.open_agent(_config(url, gather_timeout=10.0), controlling=True, mux=mux) as agent,
    ):
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        with trio.fail_after(2):
            await ended.wait()
            await agent.wait_gathering_complete()
        (report,) = [r for r in agent.gather_reports if r.source != "host"]
        assert (report.candidates, report.error) == (0, "the mux closed")


async def test_a_malformed_answer_is_dropped_and_counted_and_the_question_goes_on() -> None:
    """The first answer comes with a broken FINGERPRINT: the mux drops it (counted as
    unroutable) and takes the good one that follows."""
    async with _stun(garble_first=True) as (url, seen), trice.open_udp_mux() as mux:
        async with trice.open_agent(_config(url), controlling=True, mux=mux) as agent:
            _assert_srflx_of(await _gathered(agent), mux)
        assert _requests(seen) == 1
        assert mux.statistics().unroutable == 1


@pytest.mark.parametrize("steps", range(8))
async def test_a_mux_that_closes_as_its_kept_answer_is_handed_over(steps: int) -> None:
    """The mux holds a kept answer; an agent opens on it and the mux closes ``steps``
    scheduling steps later, as the answer is handed over or just after: the agent's
    gathering ends quietly ("the mux closed", or "closed"), never with a srflx candidate on
    a transport that is gone, and never by crashing the agent (as it did: its base was
    gone when the answer came)."""
    async with _stun() as (url, _):
        async with mux_in_a_task(trice.open_udp_mux) as (mux, scope, ended):
            async with trice.open_agent(_config(url), controlling=True, mux=mux) as first:
                await _gathered(first)  # (the answer is kept now)
            async with trice.open_agent(_config(url), controlling=True, mux=mux) as agent:
                for _ in range(steps):
                    await trio.lowlevel.checkpoint()
                scope.cancel()
                with trio.fail_after(3):
                    await ended.wait()
                    await agent.wait_gathering_complete()
                srflx = [c for c in agent.local_candidates if c.type is trice.CandidateType.SRFLX]
                reports = [r for r in agent.gather_reports if r.source != "host"]
                if reports and reports[0].candidates == 0:
                    assert reports[0].error in ("the mux closed", "closed"), reports
                    assert srflx == []


@pytest.mark.parametrize("on_mux", [True, False], ids=["mux", "host-socket"])
async def test_a_loopback_socket_asks_no_server_elsewhere(on_mux: bool) -> None:
    """A mux (or a host socket) on a loopback address cannot reach a STUN server elsewhere:
    it is not asked (no datagram goes), and gathering ends at once, not at the gather
    timeout (5 s here)."""
    config = _config("stun:203.0.113.1:3478")
    async with trice.open_udp_mux() as mux:
        async with trice.open_agent(config, controlling=True, mux=mux if on_mux else None) as a:
            with trio.fail_after(1):
                await a.wait_gathering_complete()
            (report,) = [r for r in a.gather_reports if r.source != "host"]
            assert (report.candidates, report.error) == (0, "unreachable from loopback")
