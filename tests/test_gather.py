"""Gathering: host candidates, server-reflexive candidates, dead servers, policies."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import ipaddress
import json
import math
import os
import socket
import ssl
import stat as stat_module
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, Literal

import ifaddr
import pytest
import trio
import trio.testing

import trice
from trice import stun
from trice._trio import _gather, _relay
from trice._trio._transport import UdpTransport

from loopback import (
    HAS_IPV6,
    connect_both,
    gathered_pair,
    loopback_config,
    resolving,
    server_socket,
    signal,
    state_of,
    stun_server,
    wait_for_state,
)
from natlab import Namespace, entered, lone_namespace, require_natlab
from virtual_time import LongestStep, slow_interface_reads, wall_clock_guard


async def test_server_reflexive_candidate_from_each_host_socket() -> None:
    with await server_socket() as server:
        port = server.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, server, ("203.0.113.7", 40000))
            config = loopback_config(ice_servers=[trice.IceServer(f"stun:127.0.0.1:{port}")])
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                kinds = [c.type for c in agent.local_candidates]
                assert kinds == [trice.CandidateType.HOST, trice.CandidateType.SRFLX]
                host, srflx = agent.local_candidates
                assert (srflx.address, srflx.port) == ("203.0.113.7", 40000)
                assert (srflx.related_address, srflx.related_port) == (host.address, host.port)
                assert srflx.priority < host.priority
                reports = {r.source.split(" ")[0]: r for r in agent.gather_reports}
                assert reports[f"stun:127.0.0.1:{port}"].candidates == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("mapped", "problem"),
    [
        (("2001:db8::5", 40000), "an IPv6 address for an IPv4 socket"),
        (("0.0.0.0", 40000), "the unspecified address"),
        (("203.0.113.7", 0), "port 0"),
        (("224.0.0.1", 40000), "a multicast address"),
        (("169.254.1.1", 40000), "a link-local address"),
        (("240.0.0.1", 40000), "a reserved IPv4 address"),
        (("255.255.255.255", 40000), "a reserved IPv4 address"),
    ],
)
async def test_a_mapping_no_peer_could_use_is_no_candidate(
    mapped: tuple[str, int], problem: str
) -> None:
    """A STUN server's answer that no candidate can stand for is reported, not signalled."""
    candidates, report = await _gathered_against(functools.partial(stun_server, mapped=mapped))
    assert [c.type for c in candidates] == [trice.CandidateType.HOST]
    assert report.candidates == 0
    assert report.error is not None and "bad mapped address" in report.error
    assert problem in report.error


async def _gathered_against(
    serve: Callable[[trio.socket.SocketType], Awaitable[None]],
) -> tuple[tuple[trice.Candidate, ...], trice.GatherReport]:
    """An agent on loopback gathers with a STUN server of the test's (``serve``, on a socket
    of its own): its candidates, and the server's report."""
    with await server_socket() as server:
        port = server.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, server)
            config = loopback_config(ice_servers=[trice.IceServer(f"stun:127.0.0.1:{port}")])
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                (report,) = [r for r in agent.gather_reports if r.source != "host"]
                candidates = agent.local_candidates
            nursery.cancel_scope.cancel()
    return candidates, report


_AddrInfo = (
    tuple[Literal[socket.AddressFamily.AF_INET], socket.SocketKind, int, str, tuple[str, int]]
    | tuple[
        Literal[socket.AddressFamily.AF_INET6],
        socket.SocketKind,
        int,
        str,
        tuple[str, int, int, int] | tuple[int, bytes],
    ]
)


async def _gathered_through_a_name(
    addresses: list[tuple[str, int]], timing: trice.Timing
) -> tuple[tuple[trice.Candidate, ...], trice.GatherReport]:
    """An agent on loopback gathers from ``stun:stun.test``, a name that stands for
    ``addresses`` (a resolver of the test's own, see ``loopback.resolving``): its
    candidates, and the server's report."""
    with resolving("stun.test", [(socket.AF_INET, address) for address in addresses]):
        config = loopback_config(timing=timing, ice_servers=[trice.IceServer("stun:stun.test")])
        async with trice.open_agent(config, controlling=True) as agent:
            with trio.fail_after(10):
                await agent.wait_gathering_complete()
            (report,) = [r for r in agent.gather_reports if r.source != "host"]
            return agent.local_candidates, report


class _Scripted(trio.abc.HostnameResolver):
    """A resolver of the test's own (nothing goes to a DNS server): ``answer(family)`` is
    what a lookup finds for the family asked (0: any), or raises; the names asked are kept."""

    def __init__(self, answer: Callable[[int], list[_AddrInfo]]) -> None:
        self.answer = answer
        self.asked: list[bytes | None] = []

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        raise NotImplementedError

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[_AddrInfo]:
        self.asked.append(host)
        return self.answer(family)


def _no_name(family: int) -> list[_AddrInfo]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _at(address: str) -> list[_AddrInfo]:
    inet: Literal[socket.AddressFamily.AF_INET] = socket.AF_INET
    return [(inet, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", (address, 3478))]


async def _reports_through(
    resolver: _Scripted, server: trice.IceServer, *, ipv6: bool = False
) -> list[trice.GatherReport]:
    """The server's gather reports of a loopback agent (with ::1 too, if ``ipv6``) whose
    names ``resolver`` looks up."""
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        config = loopback_config(
            ipv6=ipv6, ice_servers=[server], timing=trice.Timing(gather_timeout=1.0)
        )
        async with trice.open_agent(config, controlling=True) as agent:
            with trio.fail_after(5):
                await agent.wait_gathering_complete()
            return [r for r in agent.gather_reports if r.source != "host"]
    finally:
        trio.socket.set_custom_hostname_resolver(None)


@pytest.mark.parametrize(
    "url",
    [
        "turn:turn.test:3478?transport=udp",
        "turn:turn.test:3478?transport=tcp",
        "turns:turn.test",
        "stun:turn.test:3478",
    ],
)
async def test_a_turn_server_name_that_does_not_resolve_is_reported_so(url: str) -> None:
    """Over every transport a TURN or STUN server name that no resolver knows is reported
    as ``unresolvable`` (over TCP and TLS, and a STUN server's, it said "unreachable")."""
    resolver = _Scripted(_no_name)
    server = trice.IceServer(url) if url.startswith("stun") else trice.IceServer(url, "u", "p")
    (report,) = await _reports_through(resolver, server)
    assert report.candidates == 0 and report.error == "unresolvable"
    assert resolver.asked and all(host == b"turn.test" for host in resolver.asked)


async def test_a_passing_resolver_failure_is_no_name_of_the_other_family() -> None:
    """A lookup that fails for a moment (EAI_AGAIN) is reported as the resolver's failure,
    not as a name with addresses of the other family only (it was, when a lookup of any
    family then found one)."""

    def flaky(family: int) -> list[_AddrInfo]:  # (any family: at 127.0.0.1)
        if family:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return _at("127.0.0.1")

    resolver = _Scripted(flaky)
    (report,) = await _reports_through(resolver, trice.IceServer("stun:turn.test:3478"))
    assert report.error == "unresolvable"
    assert resolver.asked == [b"turn.test"]  # (asked once: no second lookup)


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
async def test_a_stun_server_name_of_the_other_family_only_is_no_unresolvable_name() -> None:
    """A STUN server's name with an IPv4 address only, asked from ::1: the report says the
    socket's family has none (it said "unresolvable", as of a name no resolver knows)."""

    def ipv4_only(family: int) -> list[_AddrInfo]:
        return _no_name(family) if family == socket.AF_INET6 else _at("192.0.2.7")

    resolver = _Scripted(ipv4_only)
    reports = await _reports_through(resolver, trice.IceServer("stun:turn.test:3478"), ipv6=True)
    (report,) = [r for r in reports if r.source.endswith("from ::1")]
    assert report.error == "unreachable: turn.test has no address of the socket's family"


def _silent_socket(stack: contextlib.ExitStack) -> socket.socket:
    """A UDP socket on 127.0.0.1, bound and never read: requests to it vanish."""
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@pytest.mark.parametrize("live_first", [False, True])
async def test_a_stun_name_of_several_addresses_is_asked_at_each_in_turn(
    live_first: bool,
) -> None:
    """A STUN server's name that stands for several addresses (RFC 8489 §8): the next
    address is asked an RTO after the last, until one answers; one that answers first
    leaves the rest unasked."""
    with contextlib.ExitStack() as stack, await server_socket() as live:
        dead = _silent_socket(stack)
        addresses = [dead.getsockname(), live.getsockname()]
        if live_first:
            addresses.reverse()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, live, ("203.0.113.7", 40000))
            timing = trice.Timing(rto=0.1, gather_timeout=10.0)
            candidates, report = await _gathered_through_a_name(addresses, timing)
            nursery.cancel_scope.cancel()
        asked_dead = 0
        with contextlib.suppress(BlockingIOError):
            while dead.recv(2048):
                asked_dead += 1
    assert report.error is None and report.candidates == 1
    assert [c.type for c in candidates] == [trice.CandidateType.HOST, trice.CandidateType.SRFLX]
    assert (candidates[1].address, candidates[1].port) == ("203.0.113.7", 40000)
    assert (asked_dead > 0) is not live_first


async def test_a_stun_name_of_several_silent_addresses_is_reported_as_a_timeout() -> None:
    """Each address's transaction gives up (its sends run out within gather_timeout, with
    an RTO this short): the server is reported, nothing is raised (the asks' nursery let
    the TooSlowError out in a group, through open_agent)."""
    with contextlib.ExitStack() as stack:
        addresses = [_silent_socket(stack).getsockname() for _ in range(2)]
        timing = trice.Timing(rto=0.001, rto_max=0.001, gather_timeout=5.0)
        _, report = await _gathered_through_a_name(addresses, timing)
    assert report.candidates == 0 and report.error == "timeout"


async def test_a_stun_name_of_addresses_not_reached_in_time_asks_none_of_them_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten silent addresses asked an RTO (0.5 s) apart, the gather timeout at 3 s: those
    not reached by then are not asked at all, and the whole ends at the timeout.  (Each
    was sent one request at the timeout, after it.)"""
    with wall_clock_guard(), contextlib.ExitStack() as stack:
        socks = [_silent_socket(stack) for _ in range(10)]
        timing = trice.Timing(rto=0.5, gather_timeout=3.0)
        started = trio.current_time()
        _, report = await _gathered_through_a_name([s.getsockname() for s in socks], timing)
        took = trio.current_time() - started
        asked = []
        for sock in socks:
            requests = 0
            with contextlib.suppress(BlockingIOError):
                while sock.recv(2048):
                    requests += 1
            asked.append(requests > 0)
    assert report.error == "timeout"
    assert took < 3.0 + 0.01
    assert asked == [True] * 6 + [False] * 4


async def test_no_srflx_when_the_mapping_is_the_host_address() -> None:
    with await server_socket() as server:
        port = server.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, server, None)
            servers = [trice.IceServer([f"stun:127.0.0.1:{port}", f"stun:localhost:{port}"])]
            async with trice.open_agent(
                loopback_config(ice_servers=servers), controlling=True
            ) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                assert [c.type for c in agent.local_candidates] == [trice.CandidateType.HOST]
                assert all(r.error is None for r in agent.gather_reports)
            nursery.cancel_scope.cancel()


async def _symmetric_stun(sock: trio.socket.SocketType, port: int) -> None:
    """A STUN server behind which the agent sits as behind an address-dependent (symmetric)
    NAT: each request is answered with a mapping of its own (203.0.113.7, the next port
    after ``port``)."""
    while True:
        data, source = await sock.recvfrom(2048)
        port += 1
        reply = stun.decode(data).success_response(stun.XorMappedAddress("203.0.113.7", port))
        await sock.sendto(reply.encode(fingerprint=True), source)


async def test_a_srflx_foundation_goes_by_the_servers_address_not_its_name() -> None:
    """RFC 8445 §5.1.1.3: srflx candidates of one base share a foundation when their STUN
    servers have the same IP address: two names of one server make one (they made two,
    keyed by the URL's text); a server at another address makes another."""
    other = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await other.bind(("127.0.0.2", 0))
    with await server_socket() as server, other:
        port, other_port = server.getsockname()[1], other.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_symmetric_stun, server, 40000)
            nursery.start_soon(_symmetric_stun, other, 50000)
            urls = [
                f"stun:127.0.0.1:{port}",
                f"stun:localhost:{port}",
                f"stun:127.0.0.2:{other_port}",
            ]
            config = loopback_config(ice_servers=[trice.IceServer(urls)])
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                srflx = [c for c in agent.local_candidates if c.type is trice.CandidateType.SRFLX]
                assert len(srflx) == 3, agent.gather_reports
                first = {c.foundation for c in srflx if c.port < 50000}
                second = {c.foundation for c in srflx if c.port > 50000}
                assert len(first) == len(second) == 1
                assert first != second
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _answering_stun(
    mapped: tuple[str, int] = ("203.0.113.7", 4000),
) -> AsyncIterator[tuple[trice.IceServer, list[float]]]:
    """A STUN server on loopback that maps every request to ``mapped``: the server, and the
    times it was asked, as they come."""
    asked: list[float] = []

    async def serve(sock: trio.socket.SocketType) -> None:
        while True:
            data, source = await sock.recvfrom(2048)
            asked.append(trio.current_time())
            reply = stun.decode(data).success_response(stun.XorMappedAddress(*mapped))
            await sock.sendto(reply.encode(fingerprint=True), source)

    with await server_socket() as sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, sock)
            yield trice.IceServer(f"stun:127.0.0.1:{sock.getsockname()[1]}"), asked
            nursery.cancel_scope.cancel()


async def test_a_srflx_binding_is_kept_alive_until_ice_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 8445 §5.1.1.4: a srflx candidate's NAT binding is refreshed with a Binding
    request to its server every SRFLX_KEEPALIVE seconds while ICE has not completed (a
    callee that answers after a minute still finds it), and no more once it has.  (It was
    asked once, at gathering: some NATs forget an idle mapping after 30 s.)"""
    every = _gather.SRFLX_KEEPALIVE
    with wall_clock_guard():
        async with _answering_stun() as (server, asked):
            config = loopback_config(ice_servers=[server])
            async with gathered_pair(config, loopback_config()) as (alice, bob):
                types = [c.type for c in alice.local_candidates]
                assert types == [trice.CandidateType.HOST, trice.CandidateType.SRFLX]
                start = asked[0]
                await trio.sleep(6.5 * every)  # (the callee's phone rings)
                assert [round(t - start, 6) for t in asked] == [every * k for k in range(7)]
                async with alice.subscribe() as events:
                    signal(alice, bob)
                    await connect_both(alice, bob)
                    with trio.fail_after(every):
                        await wait_for_state(events, trice.ConnectionState.COMPLETED)
                count = len(asked)
                await trio.sleep(5 * every)
                assert len(asked) <= count + 1  # (one may go before the task notices)


async def test_two_mappings_of_one_base_are_both_kept_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two STUN servers that see one socket at two public addresses (an address-dependent
    NAT, or one with a pool of addresses) make two srflx candidates on one base: both
    servers are asked again every SRFLX_KEEPALIVE seconds.  (The second's was not: its
    candidate, its priority lowered by unique_priority, was another object than the one
    the task looked for.)"""
    every = _gather.SRFLX_KEEPALIVE
    with wall_clock_guard():
        async with (
            _answering_stun(("203.0.113.7", 4000)) as (one, first),
            _answering_stun(("203.0.113.8", 4000)) as (two, second),
        ):
            config = loopback_config(ice_servers=[one, two])
            async with trice.open_agent(config, controlling=True) as alice:
                await alice.wait_gathering_complete()
                srflx = [c for c in alice.local_candidates if c.type is trice.CandidateType.SRFLX]
                assert len(srflx) == 2, srflx
                await trio.sleep(6.5 * every)  # (the callee's phone rings; ICE not done)
                assert sorted([len(first), len(second)]) == [7, 7], (first, second)


async def test_a_srflx_on_a_udp_mux_is_kept_alive_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RFC 8445 §5.1.1.4 on a UDP mux: the mux's binding to the STUN server is kept alive
    too, while an agent on it waits for its callee (nothing else goes out of the mux's
    socket meanwhile; it was asked once, at gathering)."""
    every = _gather.SRFLX_KEEPALIVE
    with wall_clock_guard():
        async with _answering_stun() as (server, asked):
            config = loopback_config(ice_servers=[server])
            async with trice.open_udp_mux("127.0.0.1") as mux:
                async with trice.open_agent(config, controlling=True, mux=mux) as alice:
                    await alice.wait_gathering_complete()
                    kinds = [c.type for c in alice.local_candidates]
                    assert trice.CandidateType.SRFLX in kinds, kinds
                    await trio.sleep(6.5 * every)  # (the callee's phone rings)
                    assert len(asked) == 7, asked  # (every 10 s, the mux's answer shared)


async def test_regather_does_not_double_the_keepalive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """restart(regather=True) while the callee rings: one keepalive per socket still."""
    every = _gather.SRFLX_KEEPALIVE
    with wall_clock_guard():
        async with _answering_stun() as (server, asked):
            config = loopback_config(ice_servers=[server])
            async with trice.open_agent(config, controlling=True) as alice:
                await alice.wait_gathering_complete()
                await trio.sleep(every * 1.5)
                for _ in range(3):
                    alice.restart(regather=True)
                    await alice.wait_gathering_complete()
                    await trio.sleep(every * 0.3)
                start = trio.current_time()
                before = len(asked)
                await trio.sleep(every * 6)
                assert len(asked) - before <= 7, [round(t - start, 3) for t in asked]
                assert len(asked) - before >= 5, [round(t - start, 3) for t in asked]


@pytest.mark.parametrize("regather", [False, True], ids=["restarted", "regathered"])
async def test_a_failed_agent_restarted_keeps_its_srflx_binding_alive_again(
    autojump_clock: trio.testing.MockClock, regather: bool
) -> None:
    """ICE failed, the agent restarts (the same srflx candidate signalled again, its
    checks waiting for the callee's answer): its NAT binding needs keeping as at first
    (RFC 8445 §5.1.1.4; a failed agent sent nothing since, so nothing else keeps it).  A
    plain restart kept none; with regather=True the keepalive started anew (it held)."""
    every = _gather.SRFLX_KEEPALIVE
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
        with wall_clock_guard():
            async with _answering_stun() as (server, asked):
                config = loopback_config(ice_servers=[server])
                async with trice.open_agent(config, controlling=True) as alice:
                    await alice.wait_gathering_complete()
                    alice.set_remote_parameters("deadufrag", "d" * 22)
                    alice.add_remote_candidate(
                        trice.Candidate.from_sdp(
                            f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"
                        )
                    )
                    alice.add_remote_candidate(None)
                    try:
                        with trio.fail_after(120):
                            await alice.connect()
                    except trice.TriceError:
                        pass
                    assert alice.connection_state is trice.ConnectionState.FAILED
                    await trio.sleep(every * 1.5)  # (the task has seen the failure)
                    alice.restart(regather=regather)  # (the candidates signalled again)
                    if regather:
                        await alice.wait_gathering_complete()
                    assert state_of(alice) is trice.ConnectionState.CHECKING
                    before = len(asked)
                    # (The callee's phone rings; the restarted agent fails on its own at
                    # failed_timeout, 25 s, with no answer: looked at before then.)
                    await trio.sleep(every * 2.4)
                    assert state_of(alice) is trice.ConnectionState.CHECKING
                    assert len(asked) - before >= 2, (before, asked)


async def test_a_completed_agent_restarted_keeps_its_srflx_binding_alive_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ICE completed, then the agent restarts and signals its srflx candidate anew, the
    callee slow to answer: no consent check goes on the pair of before meanwhile (see
    AgentCore.restart), so with no data nothing leaves the socket, and the binding the
    candidate stands for needs keeping as at first (RFC 8445 §5.1.1.4)."""
    every = _gather.SRFLX_KEEPALIVE
    with wall_clock_guard():
        async with _answering_stun() as (server, asked):
            config = loopback_config(ice_servers=[server])
            async with gathered_pair(config, loopback_config()) as (alice, bob):
                async with alice.subscribe() as events:
                    signal(alice, bob)
                    await connect_both(alice, bob)
                    with trio.fail_after(every):
                        await wait_for_state(events, trice.ConnectionState.COMPLETED)
                await trio.sleep(every * 1.5)  # (the task has seen ICE complete)
                alice.restart()
                before = len(asked)
                await trio.sleep(every * 2.4)  # (the callee's answer is slow to come)
                assert alice.connection_state is trice.ConnectionState.CHECKING
                assert len(asked) - before >= 2, (before, asked)


async def test_dead_server_costs_at_most_the_gather_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Virtual time (tests/virtual_time.py): nothing ever answers, so the clock may jump
    # whenever every task waits, and the timings below are exact on a loaded machine.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:  # bound, never answers
        dead.bind(("127.0.0.1", 0))
        dead.setblocking(False)
        port = dead.getsockname()[1]
        timing = trice.Timing(gather_timeout=0.3, rto=0.05)
        config = loopback_config(
            timing=timing, ice_servers=[trice.IceServer(f"stun:127.0.0.1:{port}")]
        )
        seen: list[tuple[str, float]] = []
        with wall_clock_guard(), trio.fail_after(60):  # hang guards only
            async with (
                trice.open_agent(config, controlling=True) as agent,
                agent.subscribe() as events,
            ):
                start = trio.current_time()
                async for event in events:
                    if isinstance(event, trice.CandidateGathered):
                        seen.append((event.candidate.type.value, trio.current_time() - start))
                    elif (
                        isinstance(event, trice.GatheringStateChanged)
                        and event.state is trice.GatheringState.COMPLETE
                    ):
                        seen.append(("complete", trio.current_time() - start))
                        break
                (report,) = [r for r in agent.gather_reports if r.source != "host"]
        # The host candidate trickles out at once, before the dead server gives up; gathering
        # completes when the gather timeout ends the (still retransmitting) STUN transaction,
        # not at the end of a retransmission schedule.
        assert [what for what, _ in seen] == ["host", "complete"]
        assert seen[0][1] == 0
        assert seen[1][1] == pytest.approx(timing.gather_timeout)
        assert report.error == "timeout"
        assert report.elapsed == pytest.approx(timing.gather_timeout)
        requests = 0
        while True:
            try:
                dead.recv(2048)
            except BlockingIOError:
                break
            requests += 1
        assert requests >= 2  # retransmitted within the timeout, as RFC 8489 says


async def test_error_response_is_reported() -> None:
    """With its reason phrase made printable (a hostile server's escapes and line breaks
    would drive the terminal that shows the report, or forge lines of a log)."""
    with await server_socket() as server:
        port = server.getsockname()[1]
        async with trio.open_nursery() as nursery:
            reason = "Nope\x1b[2J\r\nX"
            nursery.start_soon(functools.partial(stun_server, server, None, 401, reason=reason))
            config = loopback_config(ice_servers=[trice.IceServer(f"stun:127.0.0.1:{port}")])
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                (report,) = [r for r in agent.gather_reports if r.source != "host"]
                assert report.error == "401 Nope\\x1b[2J\\r\\nX"
                assert report.code == 401
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "mapped", [("203.0.113.7", 40000), None], ids=["behind-a-nat", "no-nat-in-between"]
)
async def test_nohost_policy_signals_no_host_candidate(mapped: tuple[str, int] | None) -> None:
    """Under NOHOST the one candidate is the srflx one.  With no NAT in between the server
    finds the host's own address, and that is signalled as the srflx candidate (it was left
    out as the host candidate's copy, and the agent signalled nothing, with no error said)."""
    with await server_socket() as server:
        port = server.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, server, mapped)  # (None: the real source)
            config = loopback_config(
                ice_servers=[trice.IceServer(f"stun:127.0.0.1:{port}")],
                transport_policy=trice.TransportPolicy.NOHOST,
            )
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                (srflx,) = agent.local_candidates
                assert srflx.type is trice.CandidateType.SRFLX
                # (Signalled without where it came from: the policy keeps that private.)
                assert (srflx.related_address, srflx.related_port) == ("0.0.0.0", 0)
                host = next(c for c, _ in agent._core.local_candidates if c.type.value == "host")
                assert (srflx.transport_address == host.transport_address) is (mapped is None)
            nursery.cancel_scope.cancel()


async def test_a_success_with_an_unknown_required_attribute_is_no_mapping() -> None:
    """RFC 8489 §6.3.4: a success that carries a comprehension-required attribute the
    client does not know is no answer to take: reported, not signalled (it was taken)."""

    async def serve(sock: trio.socket.SocketType) -> None:
        while True:
            data, source = await sock.recvfrom(2048)
            answer = stun.decode(data).success_response(
                stun.XorMappedAddress("203.0.113.5", 1005), stun.UnknownAttribute(0x0077, b"abcd")
            )
            await sock.sendto(answer.encode(fingerprint=True), source)

    candidates, report = await _gathered_against(serve)
    assert [c.type for c in candidates] == [trice.CandidateType.HOST]
    assert report.error == "unknown comprehension-required attribute 0x0077"


async def test_a_stun_answer_waiting_unread_at_the_gather_timeout_is_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server answered at once, but nothing read the socket until the gather timeout
    (the loop stalled, its reader not yet run): the answer waiting there is read before
    the timeout is said, and is a candidate.  (The timeout's cancel scope won by chance,
    and the candidate was lost.)"""
    held = trio.Event()

    async def serve(sock: trio.socket.SocketType) -> None:
        data, source = await sock.recvfrom(2048)
        await held.wait()  # (answered once nothing reads the agent's socket)
        answer = stun.decode(data).success_response(stun.XorMappedAddress("203.0.113.5", 1005))
        await sock.sendto(answer.encode(fingerprint=True), source)

    with wall_clock_guard():
        server = await server_socket()
        with server:
            port = server.getsockname()[1]
            config = loopback_config(ice_servers=[trice.IceServer(f"stun:127.0.0.1:{port}")])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, server)
                async with trice.open_agent(config, controlling=True) as agent:
                    await trio.testing.wait_all_tasks_blocked()  # (the request went)
                    (host,) = [t for t in agent._transports.values() if isinstance(t, UdpTransport)]
                    host.held = True  # the agent task leaves the socket to a receiver...
                    host.kick()  # ... that never comes: nothing reads it
                    held.set()
                    await agent.wait_gathering_complete()
                    (report,) = [r for r in agent.gather_reports if r.source != "host"]
                    types = [c.type for c in agent.local_candidates]
                nursery.cancel_scope.cancel()
    assert report.error is None
    assert trice.CandidateType.SRFLX in types


async def test_an_address_that_cannot_be_bound_is_in_the_host_report() -> None:
    """The port range holds one port, which another socket has: the host report says why
    nothing was bound (it blamed the filters)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = loopback_config()
        network = dataclasses.replace(config.network, port_range=(port, port))
        config = dataclasses.replace(config, network=network)
        async with trice.open_agent(config, controlling=True) as agent:
            with trio.fail_after(2):
                await agent.wait_gathering_complete()
            (report,) = agent.gather_reports
            assert report.candidates == 0
            assert report.error == (
                f"cannot bind 127.0.0.1: no free port in ({port}, {port}) on 127.0.0.1"
            )


def _external(mode: trice.CandidateType, *addresses: str, **kwargs: Any) -> trice.AgentConfig:
    config = loopback_config(**kwargs)
    network = dataclasses.replace(
        config.network, external_addresses=addresses, external_candidate=mode
    )
    return dataclasses.replace(config, network=network)


@asynccontextmanager
async def _gathered_with_astun_server(
    mode: trice.CandidateType, external: str
) -> AsyncIterator[tuple[trice.Agent, str]]:
    """An agent on loopback told ``external`` (as ``mode``), gathered with a STUN server of
    the test's on loopback that maps it to 203.0.113.7 (the source's port): (the agent, the
    server's URL)."""
    with await server_socket() as server:
        url = f"stun:127.0.0.1:{server.getsockname()[1]}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, server, ("203.0.113.7", None))
            config = _external(mode, external, ice_servers=[trice.IceServer(url)])
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                yield agent, url
            nursery.cancel_scope.cancel()


async def test_a_1to1_nats_address_is_a_srflx_candidate_and_astun_server_adds_no_copy() -> None:
    """``external_addresses`` (``SRFLX``, the default): a server-reflexive candidate at the
    external address and the host socket's port, related to the host candidate; a STUN
    server that finds the same mapping adds nothing."""
    async with _gathered_with_astun_server(trice.CandidateType.SRFLX, "203.0.113.7/127.0.0.1") as (
        agent,
        stun_url,
    ):
        host, srflx = agent.local_candidates
        assert (host.type, host.address) == (trice.CandidateType.HOST, "127.0.0.1")
        assert srflx.type is trice.CandidateType.SRFLX
        assert (srflx.address, srflx.port) == ("203.0.113.7", host.port)
        assert (srflx.related_address, srflx.related_port) == (host.address, host.port)
        reports = {r.source.split(" ")[0]: r for r in agent.gather_reports}
        assert reports[stun_url].candidates == 0  # (known already)


async def test_a_1to1_nats_address_in_the_host_candidates_place_and_no_stun_copy() -> None:
    """Under ``external_candidate=HOST`` too, a STUN server that finds the external address
    adds no srflx candidate: the host candidate signals it already."""
    async with _gathered_with_astun_server(trice.CandidateType.HOST, "203.0.113.7") as (
        agent,
        _,
    ):
        (host,) = agent.local_candidates
        assert (host.type, host.address) == (trice.CandidateType.HOST, "203.0.113.7")


async def test_a_1to1_nats_address_in_the_host_candidates_place() -> None:
    """``external_candidate=HOST``: the host candidate goes out with the external address
    (the local one is signalled nowhere); a bare external address stands for every local
    address of its family."""
    config = _external(trice.CandidateType.HOST, "203.0.113.7")
    async with trice.open_agent(config, controlling=True) as agent:
        with trio.fail_after(5):
            await agent.wait_gathering_complete()
        (host,) = agent.local_candidates
        assert (host.type, host.address) == (trice.CandidateType.HOST, "203.0.113.7")


async def test_nohost_policy_signals_the_1to1_srflx_alone() -> None:
    config = _external(
        trice.CandidateType.SRFLX, "203.0.113.7", transport_policy=trice.TransportPolicy.NOHOST
    )
    async with trice.open_agent(config, controlling=True) as agent:
        with trio.fail_after(5):
            await agent.wait_gathering_complete()
        (srflx,) = agent.local_candidates
        assert (srflx.type, srflx.address) == (trice.CandidateType.SRFLX, "203.0.113.7")


async def test_lite_agent_gathers_host_only() -> None:
    config = loopback_config(lite=True, ice_servers=[trice.IceServer("stun:127.0.0.1:9")])
    async with trice.open_agent(config, controlling=False) as agent:
        with trio.fail_after(2):
            await agent.wait_gathering_complete()
        assert [c.type for c in agent.local_candidates] == [trice.CandidateType.HOST]


async def test_filters_leave_nothing_and_gathering_still_completes() -> None:
    network = trice.NetworkConfig(interface_filter=lambda name: False)
    async with trice.open_agent(trice.AgentConfig(network=network), controlling=True) as agent:
        with trio.fail_after(2):
            await agent.wait_gathering_complete()
        assert agent.local_candidates == ()
        (report,) = agent.gather_reports
        assert report.error is not None and "filters" in report.error


@pytest.mark.parametrize("url", ["stun:", "turn:127.0.0.1", "stun://x", "http:x"])
def test_bad_server_urls_fail_at_construction(url: str) -> None:
    with pytest.raises(trice.ConfigError):
        trice.IceServer(url)


# -- which interface addresses host gathering binds ------------------------------------------


def _fake_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Interfaces as ifaddr would list them: nothing here is bound or sent to."""
    adapters = [
        SimpleNamespace(
            nice_name="lo",
            name="lo",
            ips=[
                SimpleNamespace(ip="127.0.0.1", network_prefix=8),
                SimpleNamespace(ip=("::1", 0, 0), network_prefix=64),
            ],
        ),
        SimpleNamespace(
            nice_name="eth0",
            name="eth0",
            ips=[
                SimpleNamespace(ip="192.0.2.10", network_prefix=24),
                SimpleNamespace(ip=("fe80::1", 0, 2), network_prefix=64),  # link-local: never
                SimpleNamespace(ip=("2001:db8::10", 0, 0), network_prefix=64),
                SimpleNamespace(ip="192.0.2.10", network_prefix=24),  # (listed twice: bound once)
            ],
        ),
        SimpleNamespace(
            nice_name="odd",
            name="odd",
            ips=[
                SimpleNamespace(ip="0.0.0.0", network_prefix=32),  # unspecified: never
                SimpleNamespace(ip="224.0.0.1", network_prefix=32),  # multicast: never
                SimpleNamespace(ip="not an address", network_prefix=32),
            ],
        ),
    ]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_adapters_cache", {})


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        (trice.NetworkConfig(), ["192.0.2.10", "2001:db8::10"]),
        (trice.NetworkConfig(ipv6=False), ["192.0.2.10"]),
        (trice.NetworkConfig(ipv4=False), ["2001:db8::10"]),
        (
            trice.NetworkConfig(include_loopback=True),
            ["127.0.0.1", "::1", "192.0.2.10", "2001:db8::10"],
        ),
        (
            trice.NetworkConfig(include_loopback=True, interface_filter=lambda n: n == "lo"),
            ["127.0.0.1", "::1"],
        ),
        (
            trice.NetworkConfig(ip_filter=lambda a: isinstance(a, ipaddress.IPv6Address)),
            ["2001:db8::10"],
        ),
    ],
)
def test_host_addresses_follow_the_network_config(
    monkeypatch: pytest.MonkeyPatch, network: trice.NetworkConfig, expected: list[str]
) -> None:
    """Link-local, multicast and unspecified addresses never; loopback only when asked; the
    IPv4 and IPv6 switches; the interface filter gets the name, the IP filter the address
    object; each address once."""
    _fake_adapters(monkeypatch)
    found = _gather.host_addresses(network)
    assert [h.address for h in found] == expected
    assert all(h.bind_address == h.address for h in found)


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        (trice.NetworkConfig(), [("eth0", "192.0.2.10", "192.0.2.0/24")]),
        (
            trice.NetworkConfig(include_loopback=True, ipv4=False),
            [("lo", "127.0.0.1", "127.0.0.0/8"), ("eth0", "192.0.2.10", "192.0.2.0/24")],
        ),
        (
            trice.NetworkConfig(include_loopback=True, interface_filter=lambda n: n == "lo"),
            [("lo", "127.0.0.1", "127.0.0.0/8")],
        ),
        (
            trice.NetworkConfig(include_loopback=True, ip_filter=lambda a: a.is_loopback),
            [("lo", "127.0.0.1", "127.0.0.0/8")],
        ),
    ],
)
def test_mdns_runs_on_one_ipv4_address_of_each_interface_the_filters_accept(
    monkeypatch: pytest.MonkeyPatch, network: trice.NetworkConfig, expected: list[Any]
) -> None:
    """mDNS's links: the first IPv4 address of each interface (whatever the ``ipv4``
    switch: mDNS runs over IPv4), with its network; loopback only when asked; both filters."""
    _fake_adapters(monkeypatch)
    found = _gather.mdns_interfaces(network)
    assert [(name, address, str(link)) for name, address, link in found] == expected


async def test_two_addresses_of_one_kind_on_one_interface_get_priorities_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 8445 §5.1.2.1: candidates of one type and component each have their own local
    preference.  Two IPv4 addresses on one interface had one (the interface's rank and the
    family's precedence): the second found takes one less."""
    hosts = [
        _gather.HostAddress("lo", "127.0.0.1", "127.0.0.1"),
        _gather.HostAddress("lo", "127.0.0.2", "127.0.0.2"),
    ]
    monkeypatch.setattr(_gather, "host_addresses", lambda network: hosts)
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
        first, second = agent.local_candidates
    assert (first.address, second.address) == ("127.0.0.1", "127.0.0.2")
    assert second.priority == first.priority - 256  # (one less local preference)
    assert trice.Candidate.from_sdp(second.to_sdp()) == second


def test_relays_of_one_preference_and_mappings_of_one_base_get_priorities_of_their_own() -> None:
    """The same rule for relayed candidates (one preference for every server) and
    server-reflexive ones (two mappings of one base, from two servers behind a NAT that
    maps by destination); a candidate found again (a gathering anew's) keeps its own."""
    from trice.ice._gathering import (
        host_candidate,
        relay_candidate,
        srflx_candidate,
        unique_priority,
    )

    one = relay_candidate(("203.0.113.1", 5000), None, "turn-a:3478")
    two = relay_candidate(("198.51.100.9", 6000), None, "turn-b:3478")
    assert one.priority == two.priority
    known = [(one, 1)]
    assert unique_priority(two, 2, known).priority == one.priority - 256
    assert unique_priority(one, 1, known) is one  # (itself again)
    host = host_candidate(("192.0.2.1", 5000), 0)
    a = srflx_candidate(host, ("203.0.113.7", 40000), "stun-a")
    b = srflx_candidate(host, ("203.0.113.7", 40001), "stun-b")
    known = [(host, 0), (a, 0), (one, 1)]
    assert unique_priority(b, 0, known).priority == a.priority - 256
    c = relay_candidate(("203.0.113.9", 7000), None, "turn-c:3478")
    known = [(one, 1), (dataclasses.replace(two, priority=one.priority - 256), 2)]
    assert unique_priority(c, 3, known).priority == one.priority - 512


async def _gathered_with_a_host_address_of(
    external: str, mapped: tuple[str, int | None] | None, policy: trice.TransportPolicy
) -> tuple[trice.Candidate, ...]:
    """The candidates an agent of ``policy`` gathers whose host address a 1:1 NAT's
    ``external`` one stands in for (``external_candidate=HOST``), from a STUN server that
    maps it to ``mapped`` (see :func:`stun_server`)."""
    with await server_socket() as server:
        url = f"stun:127.0.0.1:{server.getsockname()[1]}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, server, mapped)
            config = loopback_config(transport_policy=policy, ice_servers=[trice.IceServer(url)])
            network = dataclasses.replace(
                config.network,
                external_addresses=(external,),
                external_candidate=trice.CandidateType.HOST,
            )
            config = dataclasses.replace(config, network=network)
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                gathered = agent.local_candidates
            nursery.cancel_scope.cancel()
    return gathered


async def test_under_an_external_host_address_a_stun_mapping_of_the_local_one_stays_out() -> None:
    """A 1:1 NAT's address stands in the host's place (``external_candidate=HOST``): the
    local address is signalled nowhere, even when a STUN server on this side of the NAT
    sees it as it is (it came back as a srflx candidate once mDNS gathering had made such
    a mapping count)."""
    # (No NAT between the agent and the STUN server: it sees the socket's own address.)
    (host,) = await _gathered_with_a_host_address_of("203.0.113.7", None, trice.TransportPolicy.ALL)
    assert (host.type, host.address) == (trice.CandidateType.HOST, "203.0.113.7")


async def test_under_nohost_a_1to1_address_in_the_hosts_place_goes_out_as_its_mapping() -> None:
    """NOHOST, and a 1:1 NAT's address to stand in the host candidate's place (which NOHOST
    keeps from going out): the STUN server finds that address, and it goes out as the srflx
    candidate (it was taken as known already, and nothing went out at all)."""
    (srflx,) = await _gathered_with_a_host_address_of(
        "127.0.0.2",
        ("127.0.0.2", None),
        trice.TransportPolicy.NOHOST,  # (the NAT's)
    )
    assert (srflx.type, srflx.address) == (trice.CandidateType.SRFLX, "127.0.0.2")


async def test_a_server_url_listed_twice_is_asked_once() -> None:
    """The same STUN URL in two IceServer entries: one request a socket, one report (it
    was asked twice, and the second report said 0 candidates and no error)."""
    sock = await server_socket()
    port = sock.getsockname()[1]
    seen: list[tuple[tuple[str, int], bytes]] = []
    url = f"stun:127.0.0.1:{port}"
    servers = [trice.IceServer(urls=[url]), trice.IceServer(urls=[url, url])]
    config = dataclasses.replace(loopback_config(), ice_servers=servers)
    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(stun_server, sock, ("203.0.113.9", None), seen=seen)
            )
            async with trice.open_agent(config, controlling=True) as agent:
                await agent.wait_gathering_complete()
                reports = [r for r in agent.gather_reports if r.source.startswith("stun")]
            nursery.cancel_scope.cancel()
    assert len(seen) == 1 and len(reports) == 1, (seen, reports)


def test_an_ipv4_link_local_address_is_gathered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cable between two machines with no DHCP gives each a 169.254/16 address (RFC
    3927): gathered, as the docs say (only link-local IPv6 is left out); it was not."""
    ips = [SimpleNamespace(ip="169.254.7.8", network_prefix=16)]
    adapters = [SimpleNamespace(nice_name="eth9", name="eth9", ips=ips)]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    found = _gather.host_addresses(trice.NetworkConfig(interface_filter=lambda n: n == "eth9"))
    assert [h.address for h in found] == ["169.254.7.8"]


def test_ipv6_addresses_that_must_not_be_candidates_are_not_gathered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Site-local (fec0::/10) and IPv4-compatible (::a.b.c.d) IPv6 addresses MUST NOT be
    candidates (RFC 8445 §5.1.1.1: they were gathered), and an IPv4-mapped one cannot be
    bound (a warning each gathering); a global one is."""
    ips = [
        SimpleNamespace(ip=(text, 0, 0), network_prefix=64)
        for text in ("fec0::1", "::a01:203", "::ffff:10.1.2.3", "2001:db8::5")
    ]
    adapters = [SimpleNamespace(nice_name="eth9", name="eth9", ips=ips)]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    found = _gather.host_addresses(trice.NetworkConfig(interface_filter=lambda n: n == "eth9"))
    assert [h.address for h in found] == ["2001:db8::5"]


def test_an_address_a_temporary_one_stands_for_is_not_gathered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 8445 §5.1.1.1: with a temporary IPv6 address gathered, an address of the same
    interface and prefix that lets the host be tracked MUST NOT be (both were); one of
    another prefix is.  A deprecated address is left out where its interface has a fresh
    one of its family (an old temporary one, here), kept where it has none (the IPv4
    one)."""
    flags = {"eth9": {"2001:db8:1::10": 0x80, "2001:db8:1::77": 0x01, "2001:db8:1::66": 0x21}}
    flags["eth9"]["2001:db8:2::5"] = 0x80
    texts = ["2001:db8:1::10", "2001:db8:1::66", "2001:db8:1::77", "2001:db8:2::5"]
    ips = [SimpleNamespace(ip=(text, 0, 0), network_prefix=64) for text in texts]
    ips.append(SimpleNamespace(ip="10.9.9.9", network_prefix=24))
    adapters = [SimpleNamespace(nice_name="eth9", name="eth9", ips=ips)]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_inet6_flags", lambda: flags)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    found = _gather.host_addresses(trice.NetworkConfig(interface_filter=lambda n: n == "eth9"))
    assert [h.address for h in found] == ["2001:db8:1::77", "2001:db8:2::5", "10.9.9.9"]
    # The temporary one filtered out: the address it stood for is gathered.
    network = trice.NetworkConfig(
        interface_filter=lambda n: n == "eth9", ip_filter=lambda a: str(a) != "2001:db8:1::77"
    )
    found = _gather.host_addresses(network)
    assert [h.address for h in found] == ["2001:db8:1::10", "2001:db8:2::5", "10.9.9.9"]


def test_a_deprecated_address_kept_ranks_after_the_fresh_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deprecated IPv6 address kept for want of a fresh one of its family is ranked
    after the interface's fresh addresses (RFC 4862 §5.5.4): the IPv4 one first (the
    deprecated one came first, as any IPv6 address)."""
    flags = {"eth9": {"2001:db8:2::5": 0xA0}}
    ips = [
        SimpleNamespace(ip=("2001:db8:2::5", 0, 0), network_prefix=64),
        SimpleNamespace(ip="10.9.9.9", network_prefix=24),
    ]
    adapters = [SimpleNamespace(nice_name="eth9", name="eth9", ips=ips)]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_inet6_flags", lambda: flags)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    hosts = _gather.host_addresses(trice.NetworkConfig(interface_filter=lambda n: n == "eth9"))
    agent = SimpleNamespace(_ranked=())
    _gather._rank(agent, hosts)  # type: ignore[arg-type]
    ranks = {host.address: _gather._ranks(agent, host) for host in hosts}  # type: ignore[arg-type]
    assert ranks == {"10.9.9.9": (0, 0), "2001:db8:2::5": (0, 1)}


def test_a_tentative_or_duplicate_address_is_not_gathered_and_replaces_no_deprecated_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An IPv6 address whose duplicate address detection is still going on (tentative) or
    has failed is not the interface's yet (RFC 4862 §5.4): it cannot be bound, and a
    deprecated address beside it stays, its interface's only usable one (the deprecated
    one was left out for it, and the interface had no IPv6 candidate; for good, once
    detection failed).  An optimistic one (RFC 4429) can be used, and is."""
    flags = {
        "eth9": {"2001:db8:1::1": 0xA0, "2001:db8:1::2": 0x40},
        "eth8": {"2001:db8:2::1": 0xA0, "2001:db8:2::9": 0x48},
        "eth7": {"2001:db8:3::1": 0xA0, "2001:db8:3::2": 0x44},
    }
    adapters = [
        SimpleNamespace(
            nice_name=name,
            name=name,
            ips=[SimpleNamespace(ip=(text, 0, 0), network_prefix=64) for text in addresses],
        )
        for name, addresses in flags.items()
    ]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_inet6_flags", lambda: flags)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    found = _gather.host_addresses(trice.NetworkConfig(interface_filter=lambda n: n[:3] == "eth"))
    assert [h.address for h in found] == ["2001:db8:1::1", "2001:db8:2::1", "2001:db8:3::2"]


async def test_an_interface_name_that_is_not_utf8_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ifaddr reads every interface's name as UTF-8, and reads none when one is not (Linux
    allows any bytes): open_agent says which name and what to do, in a TriceError; a
    UnicodeDecodeError came out of it."""

    def get_adapters() -> list[Any]:
        return [b"ok0", b"bad\xff0"][1].decode("utf-8")  # type: ignore[return-value]

    monkeypatch.setattr(ifaddr, "get_adapters", get_adapters)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    with pytest.raises(trice.TriceError, match=r"not UTF-8 \(b'bad\\xff0'\).*rename it") as info:
        async with trice.open_agent(loopback_config(), controlling=True) as agent:
            await agent.wait_gathering_complete()
    assert not isinstance(info.value, UnicodeError)


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOBUFS])
async def test_interfaces_the_system_refuses_to_show_are_a_trice_error(
    code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ifaddr's read fails (a sandbox that refuses the netlink socket: EACCES; short of
    memory: ENOBUFS): a TriceError out of open_agent, the OSError its cause, as errors.rst
    says (the bare OSError came out, which ``except trice.TriceError`` missed)."""

    def refuse() -> list[Any]:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ifaddr, "get_adapters", refuse)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    with pytest.raises(trice.TriceError, match="the interfaces cannot be read") as info:
        async with trice.open_agent(loopback_config(), controlling=True) as agent:
            await agent.wait_gathering_complete()
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == code


@pytest.mark.parametrize(
    "error",
    [AssertionError("sockaddr_to_ip(<LP_sockaddr>) returned None"), ValueError("NULL pointer")],
    ids=["assert", "null"],
)
async def test_what_else_ifaddr_raises_is_a_trice_error(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ifaddr's own failures (an ``assert`` on an address whose netmask getifaddrs left
    out; a NULL pointer in older versions) are, as a refused read, a TriceError out of
    open_agent, with them as its cause (they came out bare: the errorpaths review)."""

    def fail() -> list[Any]:
        raise error

    monkeypatch.setattr(ifaddr, "get_adapters", fail)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    with pytest.raises(trice.TriceError, match="the interfaces") as info:
        async with trice.open_agent(loopback_config(), controlling=True) as agent:
            await agent.wait_gathering_complete()
    assert info.value.__cause__ is error


@pytest.mark.parametrize(
    "error", [ssl.SSLError(336245134, "[X509] PEM lib"), PermissionError(errno.EACCES, "certs")]
)
async def test_system_authorities_that_cannot_be_loaded_fail_that_server_only(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``turns:`` server with no ``ssl_context`` is checked against the system's
    authorities; when they cannot be loaded (a malformed bundle, a store the process may
    not read), that server gives no candidate and says why in its report, and the agent
    gathers the rest.  The error came out of open_agent and ended the agent (the
    errorpaths review)."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(ssl, "create_default_context", broken)
    monkeypatch.setattr(_relay, "_default_context", None)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def accept(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    server = trice.IceServer(urls=[f"turns:127.0.0.1:{port}"], username="u", credential="p")
    config = dataclasses.replace(loopback_config(), ice_servers=[server])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, accept, listeners)
        async with trice.open_agent(config, controlling=True) as agent:
            with trio.fail_after(10):
                await agent.wait_gathering_complete()
            (report,) = [r for r in agent.gather_reports if r.source.startswith("turns:")]
            assert report.error is not None and "authorities cannot be loaded" in report.error
            assert [c.type for c in agent.local_candidates] == [trice.CandidateType.HOST]
        nursery.cancel_scope.cancel()


def test_a_dhcpv6_address_in_a_temporary_ones_prefix_is_not_gathered_either(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DHCPv6 address (a /128, stable) inside a temporary address's /64 lets the host be
    tracked as well as the SLAAC one: left out too (it was gathered: the prefixes were
    compared as equal, not as one inside the other).  A deprecated global address beside
    a fresh ULA alone is kept: a ULA reaches no peer off the site, it replaces nothing."""
    temporary = "2001:db8:1:0:1111:2222:3333:4444"
    ips = [
        SimpleNamespace(ip=("2001:db8:1::10", 0, 0), network_prefix=64),
        SimpleNamespace(ip=(temporary, 0, 0), network_prefix=64),
        SimpleNamespace(ip=("2001:db8:1::abcd", 0, 0), network_prefix=128),
        SimpleNamespace(ip=("2001:db8:2::5", 0, 0), network_prefix=64),
        SimpleNamespace(ip=("fd00::5", 0, 0), network_prefix=64),
    ]
    flags = {
        "eth9": {"2001:db8:1::10": 0x180, temporary: 0x01, "2001:db8:1::abcd": 0x80},
        "eth8": {"2001:db8:2::5": 0xA0, "fd00::5": 0x80},
    }
    adapters = [
        SimpleNamespace(nice_name="eth9", name="eth9", ips=ips[:3]),
        SimpleNamespace(nice_name="eth8", name="eth8", ips=ips[3:]),
    ]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_inet6_flags", lambda: flags)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    found = _gather.host_addresses(trice.NetworkConfig(interface_filter=lambda n: n[:3] == "eth"))
    assert [h.address for h in found] == [temporary, "2001:db8:2::5", "fd00::5"]


def test_proc_net_if_inet6_reads_as_flags_by_interface_and_address() -> None:
    text = (
        "20010db8000100006fdd94c226df6577 03 40 00 01       v0\n"
        "20010db8000200000000000000000005 03 40 00 a0       v0\n"
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "not a line\n"
        "zz010db8000200000000000000000005 03 40 00 a0       v0\n"
    )
    assert _gather.parse_inet6_flags(text) == {
        "v0": {"2001:db8:1:0:6fdd:94c2:26df:6577": 0x01, "2001:db8:2::5": 0xA0},
        "lo": {"::1": 0x80},
    }


_PRIVACY_GATHERER = """
import json, trio, trice

async def main():
    config = trice.AgentConfig(network=trice.NetworkConfig(interface_filter=lambda n: n == "v0"))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        print(json.dumps([c.address for c in agent.local_candidates]), flush=True)

trio.run(main)
"""


def test_the_kernels_temporary_and_deprecated_addresses_in_a_namespace() -> None:
    """In a namespace of the test's own, the kernel makes a temporary address for a prefix
    (``mngtmpaddr``, RFC 8981) and deprecates one (``preferred_lft 0``): the agent gathers
    the temporary one, not the address it stands for, and not the deprecated one beside a
    fresh one; it gathered all four."""
    require_natlab(turn=False)
    with lone_namespace("privacy") as ns:
        for setting in ("all.accept_dad=0", "default.accept_dad=0", "default.use_tempaddr=2"):
            ns.sysctl(f"net.ipv6.conf.{setting}")
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "set", "v0", "up")
        ns.ip("link", "set", "v1", "up")
        ns.ip("-6", "addr", "add", "2001:db8:1::10/64", "dev", "v0", "mngtmpaddr")
        ns.ip("-6", "addr", "add", "2001:db8:2::5/64", "dev", "v0", "preferred_lft", "0")
        ns.ip("-6", "addr", "add", "2001:db8:2::6/64", "dev", "v0")
        shown = ns.ip("-6", "addr", "show", "dev", "v0", "temporary")
        lines = [line.split() for line in shown.splitlines()]
        temporary = [fields[1].split("/")[0] for fields in lines if fields[:1] == ["inet6"]]
        assert len(temporary) == 1, shown
        found = json.loads(ns.check_output([sys.executable, "-c", _PRIVACY_GATHERER], timeout=30))
    assert sorted(found) == sorted([temporary[0], "2001:db8:2::6"]), found


def test_a_deprecated_address_beside_a_tentative_one_in_a_namespace() -> None:
    """In a namespace of the test's own, a renumbering: the old address deprecated, the new
    one's duplicate address detection still going on (kept so for minutes).  The agent
    gathers the old one, the interface's only usable IPv6 address (it had none)."""
    require_natlab(turn=False)
    with lone_namespace("tentative") as ns:
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.sysctl("net.ipv6.conf.v0.dad_transmits=50")
        ns.sysctl("net.ipv6.neigh.v0.retrans_time_ms=10000")
        ns.ip("link", "set", "v1", "up")
        ns.ip("link", "set", "v0", "up")
        ns.ip("-6", "addr", "add", "2001:db8:5::1/64", "dev", "v0", "nodad", "preferred_lft", "0")
        ns.ip("-6", "addr", "add", "2001:db8:5::2/64", "dev", "v0")
        shown = ns.ip("-6", "addr", "show", "dev", "v0")
        assert "tentative" in shown, shown
        found = json.loads(ns.check_output([sys.executable, "-c", _PRIVACY_GATHERER], timeout=30))
    assert found == ["2001:db8:5::1"], found


def test_a_thread_in_another_namespace_reads_that_namespaces_address_flags() -> None:
    """A thread may enter a network namespace of its own (``setns``): ifaddr reads that
    namespace's interfaces, and the IPv6 flags must be its too (``/proc/thread-self/net``;
    ``/proc/net`` is the main thread's).  Without them the deprecated address beside a
    fresh one was gathered."""
    require_natlab(turn=False)
    with lone_namespace("threadflags") as ns:
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "set", "v1", "up")
        ns.ip("link", "set", "v0", "up")
        ns.ip("-6", "addr", "add", "2001:db8:8::1/64", "dev", "v0", "nodad", "preferred_lft", "0")
        ns.ip("-6", "addr", "add", "2001:db8:8::2/64", "dev", "v0", "nodad")
        found: list[str] = []

        def in_thread() -> None:
            with entered(ns):
                _gather.forget_adapters()
                try:
                    network = trice.NetworkConfig(ipv4=False, interface_filter=lambda n: n == "v0")
                    found.extend(h.address for h in _gather.host_addresses(network))
                finally:
                    _gather.forget_adapters()

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join(20)
    assert found == ["2001:db8:8::2"], found


def _namespace_with(ns: Namespace, address: str) -> None:
    """A veth end ``v0`` in ``ns``, up, with the IPv4 ``address``."""
    ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ns.ip("link", "set", "v1", "up")
    ns.ip("link", "set", "v0", "up")
    ns.ip("addr", "add", f"{address}/24", "dev", "v0")


_ON_V0 = trice.NetworkConfig(interface_filter=lambda name: name == "v0", ipv6=False)


def _gather_in(ns: Namespace, out: dict[str, object]) -> None:
    """A thread of the application's: enters ``ns``, runs trio, opens an agent there and
    puts its host candidates (or the error) in ``out``."""

    async def main() -> None:
        async with trice.open_agent(trice.AgentConfig(network=_ON_V0), controlling=True) as agent:
            with trio.fail_after(10):
                await agent.wait_gathering_complete()
            out["candidates"] = sorted(c.address for c in agent.local_candidates)

    try:
        with entered(ns):
            trio.run(main)
    except BaseException as exc:  # (reported to the test's thread)
        out["error"] = repr(exc)


def test_threads_in_two_namespaces_each_gather_their_own_interfaces() -> None:
    """Two threads of one process, each in a network namespace of its own, each with its
    own trio run and agent, one after the other: each gathers its own namespace's address.
    The interfaces read for the first served the second (cached for a second, for the
    whole process), whose agent then could not bind the first's address and had no host
    candidate."""
    require_natlab(turn=False)
    _gather.forget_adapters()
    with lone_namespace("nsa") as a, lone_namespace("nsb") as b:
        _namespace_with(a, "198.51.100.1")
        _namespace_with(b, "198.51.100.2")
        seen: dict[str, dict[str, object]] = {"a": {}, "b": {}}
        for name, ns in (("a", a), ("b", b)):
            thread = threading.Thread(target=_gather_in, args=(ns, seen[name]))
            thread.start()
            thread.join(30)
    _gather.forget_adapters()
    assert seen == {"a": {"candidates": ["198.51.100.1"]}, "b": {"candidates": ["198.51.100.2"]}}


def test_a_slow_read_in_a_worker_thread_reads_the_callers_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where reads of the interfaces are slow (``_slow_reads``), one is made in a trio
    worker thread.  Idle workers serve every run of the process, and a thread stays in the
    namespace it was started in: a worker of the main thread's read the main namespace's
    interfaces for a thread that had entered its own, whose agent then had no candidate."""
    require_natlab(turn=False)
    trio.run(trio.to_thread.run_sync, lambda: None)  # (an idle worker, in this namespace)
    with lone_namespace("nsslow") as ns:
        _namespace_with(ns, "198.51.100.7")
        monkeypatch.setattr(_gather, "_adapters_cache", {})
        monkeypatch.setattr(_gather, "_slow_reads", True)
        seen: dict[str, object] = {}
        thread = threading.Thread(target=_gather_in, args=(ns, seen))
        thread.start()
        thread.join(30)
    assert seen == {"candidates": ["198.51.100.7"]}


def _gather_in_a_namespace_of_its_own(
    address: str, seen_as: tuple[int, int] | None = None
) -> dict[str, object]:
    """A thread that makes a network namespace of its own (unshare), with ``lo`` up and
    ``address`` on it, gathers there on ``lo`` and ends (its namespace goes with it).  Says
    the namespace's ``(st_dev, st_ino)``; with ``seen_as``, ``os.stat`` says that of it
    instead, as when Linux gives a new namespace the inode number of one gone."""
    out: dict[str, object] = {}
    on_lo = trice.NetworkConfig(
        interface_filter=lambda name: name == "lo", ipv6=False, include_loopback=True
    )

    async def main() -> None:
        async with trice.open_agent(trice.AgentConfig(network=on_lo), controlling=True) as agent:
            with trio.fail_after(10):
                await agent.wait_gathering_complete()
            out["candidates"] = sorted(c.address for c in agent.local_candidates)

    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        found = real_stat(path, *args, **kwargs)
        if seen_as is None or path != "/proc/thread-self/ns/net":
            return found
        fields = list(found)
        fields[stat_module.ST_DEV], fields[stat_module.ST_INO] = seen_as
        return os.stat_result(fields)

    def body() -> None:
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "unshare")
            found = os.stat("/proc/thread-self/ns/net")
            out["key"] = (found.st_dev, found.st_ino)
            for step in (
                ("link", "set", "lo", "up"),
                ("addr", "add", f"{address}/32", "dev", "lo"),
            ):
                subprocess.run(["ip", *step], check=True)  # (a child is born in it)
            os.stat = stat  # (this thread's the one that reads now: see the caller)
            try:
                trio.run(main)
            finally:
                os.stat = real_stat
        except BaseException as exc:
            out["error"] = repr(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    return out


def test_a_namespace_made_after_another_went_gathers_its_own_interfaces() -> None:
    """A thread makes a network namespace, gathers there and ends; another makes its own a
    moment later, which Linux may give the inode number of the one gone (nsfs numbers are
    reused, lowest first, once the namespace is freed: here it is made to say so, as the
    kernel's freeing is late under load, and the test waited for it in vain now and then,
    the flakes2 review).  The cache keyed by that number served the new namespace the gone
    one's interfaces, fresh for a second: its agent gathered an address not there; it is
    keyed by the namespace's cookie, used once."""
    require_natlab(turn=False)
    try:
        _gather.forget_adapters()
        first = _gather_in_a_namespace_of_its_own("198.51.100.1")
        assert "candidates" in first, first
        key = first["key"]
        assert isinstance(key, tuple)
        second = _gather_in_a_namespace_of_its_own("198.51.100.2", seen_as=key)
    finally:
        _gather.forget_adapters()
    assert second.get("candidates") == ["127.0.0.1", "198.51.100.2"], second


def _watch_in(ns: Namespace, out: list[object], seconds: float) -> None:
    """A thread of the application's: enters ``ns`` and watches its addresses a while."""

    async def main() -> None:
        with trio.move_on_after(seconds):
            async for addresses in trice.address_changes(_ON_V0, interval=0.1, initial=True):
                out.append(addresses)

    try:
        with entered(ns):
            trio.run(main)
    except BaseException as exc:
        out.append(repr(exc))


def test_watches_of_threads_in_two_namespaces_see_no_change_of_the_others() -> None:
    """Two threads, each in a network namespace of its own whose address does not change,
    each watching it (``address_changes``, polling every 0.1 s), at once: each yields its
    first value and nothing more.  A poll was served by the other namespace's read, and
    the watch said that the address went and came back: cues for ICE restarts."""
    require_natlab(turn=False)
    _gather.forget_adapters()
    with lone_namespace("nswa") as a, lone_namespace("nswb") as b:
        _namespace_with(a, "198.51.100.1")
        _namespace_with(b, "198.51.100.2")
        seen: dict[str, list[object]] = {"a": [], "b": []}
        threads = [
            threading.Thread(target=_watch_in, args=(ns, seen[name], 2.0))
            for name, ns in (("a", a), ("b", b))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    _gather.forget_adapters()
    assert seen == {"a": [("198.51.100.1",)], "b": [("198.51.100.2",)]}


async def test_a_dual_stack_interfaces_host_candidates_interleave_the_families(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 8421 §4: an interface with two addresses of each family ranks them IPv6, IPv4,
    IPv6, IPv4 (a broken family costs one candidate's checks first, not all of them); they
    were ranked both IPv6 before both IPv4.  (The IPv6 sockets are bound at ::1.)"""
    texts = ["2001:db8::1", "2001:db8::2", "127.0.0.1", "127.0.0.2"]
    ips = [
        SimpleNamespace(ip=(t, 0, 0) if ":" in t else t, network_prefix=64 if ":" in t else 8)
        for t in texts
    ]
    adapters = [SimpleNamespace(nice_name="lo", name="lo", ips=ips)]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    real_bind = _gather.bind_socket  # type: ignore[attr-defined]
    monkeypatch.setattr(
        _gather,
        "bind_socket",
        lambda address, *args, **kw: real_bind("::1" if ":" in address else address, *args, **kw),
    )
    network = trice.NetworkConfig(interface_filter=lambda n: n == "lo", include_loopback=True)
    config = dataclasses.replace(loopback_config(), network=network)
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        ranked = sorted(agent.local_candidates, key=lambda c: -c.priority)
    assert [c.address for c in ranked] == ["2001:db8::1", "127.0.0.1", "2001:db8::2", "127.0.0.2"]


async def _priorities_across_a_change(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[list[Any]], None]
) -> tuple[dict[str, int], dict[str, int]]:
    """The host candidates' priorities (by address) of an agent on 127.0.0.1 and
    127.0.0.2 (faked as lo's), then after ``change`` (of that list of addresses) and a
    gathering anew."""
    ips = [SimpleNamespace(ip=t, network_prefix=8) for t in ("127.0.0.1", "127.0.0.2")]
    adapters = [SimpleNamespace(nice_name="lo", name="lo", ips=ips)]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
        before = {c.address: c.priority for c in agent.local_candidates}
        change(ips)
        monkeypatch.setattr(_gather, "_adapters_cache", {})
        agent.restart(regather=True)
        await agent.wait_gathering_complete()
        after = {c.address: c.priority for c in agent.local_candidates}
    return before, after


async def test_an_address_found_anew_takes_the_place_of_one_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A temporary IPv6 address is replaced every day or so: the new one takes the place
    (and the priority) the old one left on its interface, rather than a place after every
    address the agent ever saw there (ranked below the IPv4 one for the agent's life, and
    the low bits running out); the kept address keeps its priority."""

    def replace(ips: list[Any]) -> None:
        ips[0] = SimpleNamespace(ip="127.0.0.3", network_prefix=8)  # (.1 went, .3 came)

    before, after = await _priorities_across_a_change(monkeypatch, replace)
    assert after == {"127.0.0.3": before["127.0.0.1"], "127.0.0.2": before["127.0.0.2"]}


async def test_an_address_found_anew_is_ranked_after_those_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gathering anew that finds one more address on an interface (listed first) keeps
    the others' host candidates' priorities, and ranks it after them."""

    def add(ips: list[Any]) -> None:
        ips.insert(0, SimpleNamespace(ip="127.0.0.3", network_prefix=8))

    before, after = await _priorities_across_a_change(monkeypatch, add)
    assert len(before) == 2 and {a: p for a, p in after.items() if a in before} == before
    assert after["127.0.0.3"] < min(before.values())


def test_mdns_takes_an_interfaces_routable_address_before_its_link_local_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An interface with a 169.254/16 address listed before its DHCP one (APIPA first, as
    avahi-autoipd adds it): mDNS's link is the routable network, whose peers are on the
    link.  It was the first address's, 169.254.0.0/16: a peer on 10.0.0.0/24 was off the
    link, and its direct queries dropped."""
    ips = [
        SimpleNamespace(ip="169.254.7.7", network_prefix=16),
        SimpleNamespace(ip="10.0.0.5", network_prefix=24),
    ]
    adapters = [SimpleNamespace(nice_name="v0", name="v0", ips=ips)]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    found = _gather.mdns_interfaces(trice.NetworkConfig())
    assert [(name, address, str(link)) for name, address, link in found] == [
        ("v0", "10.0.0.5", "10.0.0.0/24")
    ]


_STUN_SERVER = """
import socket
import ssl
from trice import stun
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.1", 3478))
print("ready", flush=True)
while True:
    data, source = s.recvfrom(2048)
    reply = stun.decode(data).success_response(stun.XorMappedAddress(*source[:2]))
    try:
        s.sendto(reply.encode(fingerprint=True), source)
    except OSError:
        pass  # (no route back)
"""

_GATHERER = """
import json, trio, trice

async def main():
    config = trice.AgentConfig(
        network=trice.NetworkConfig(interface_filter=lambda n: n == "v0", ipv6=False),
        ice_servers=[trice.IceServer("stun:198.51.100.1:3478")],
    )
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        reports = [[r.source, r.candidates, r.error] for r in agent.gather_reports]
        print(json.dumps(reports), flush=True)

trio.run(main)
"""


def test_a_link_local_socket_asks_no_stun_server_off_its_link() -> None:
    """A host with a 169.254/16 address beside its routable one, in a namespace of the
    test's own: the link-local socket asks no STUN server off its link (no answer can come
    back to it, RFC 3927), reported at once as unreachable, as a loopback socket is; it
    asked, and gathering waited for its timeout."""
    require_natlab(turn=False)
    with lone_namespace("llstun") as a, lone_namespace("llsrv") as b:
        a.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b.name)
        a.ip("addr", "add", "10.0.0.5/24", "dev", "v0")
        a.ip("addr", "add", "169.254.7.7/16", "dev", "v0")
        b.ip("addr", "add", "10.0.0.1/24", "dev", "v1")
        b.ip("addr", "add", "198.51.100.1/32", "dev", "lo")
        a.ip("link", "set", "v0", "up")
        b.ip("link", "set", "v1", "up")
        a.ip("route", "add", "default", "via", "10.0.0.1")
        server = b.run([sys.executable, "-c", _STUN_SERVER], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        reports = json.loads(a.check_output([sys.executable, "-c", _GATHERER], timeout=30))
    by_source = {source.rsplit(" from ", 1)[-1]: (n, error) for source, n, error in reports}
    assert by_source["169.254.7.7"] == (0, "unreachable from link-local"), reports
    assert by_source["10.0.0.5"] == (0, None), reports  # (answered: no NAT, no srflx)


async def test_slow_interface_reads_do_not_hold_up_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where reading the interfaces is slow (300 of them took 122 ms), gathering reads them
    in a worker thread: no task step takes that long (every task of the process waited the
    read out), and the agent gathers as before."""
    readers = slow_interface_reads(monkeypatch)
    steps = LongestStep()
    trio.lowlevel.add_instrument(steps)
    try:
        async with trice.open_agent(loopback_config(), controlling=True) as agent:
            await agent.wait_gathering_complete()
            assert [c.address for c in agent.local_candidates] == ["127.0.0.1"]
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert steps.longest < 0.1, steps.longest
    # (And, whatever the machine's load: every read was made off the event loop's thread.)
    assert readers and threading.main_thread().name not in readers, readers


async def test_a_slow_read_stretched_past_a_second_serves_the_task_that_waited_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker thread's read of slow interfaces took over a second by the wall clock (a
    loaded machine preempted it): the agent waited for it, and it serves the agent.  Dated
    from its start, it was stale when it came, and the interfaces were read again on the
    event loop's thread, holding every task of the process (the flakesA review: this
    test's neighbour above failed so under load, a step of 0.9-1.7 s)."""
    readers = slow_interface_reads(monkeypatch, stalled=1.1)
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
        assert [c.address for c in agent.local_candidates] == ["127.0.0.1"]
    assert readers and threading.main_thread().name not in readers, readers


def test_a_quick_read_elsewhere_does_not_bring_a_slow_namespaces_reads_onto_its_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Namespace A's reads are slow (hundreds of interfaces): after one, the next read in A
    goes to a worker thread, a quick read in the main namespace between the two
    notwithstanding.  (The slowness was one flag for the process: A's read, a change
    noticed, was then made nowhere by read_interfaces and fell on A's event loop, holding
    up all of its tasks.)"""
    require_natlab(turn=False)
    real = ifaddr.get_adapters
    state: dict[str, Any] = {"slow_ns": None, "reads": []}

    def maybe_slow() -> Any:
        here = _gather._namespace()
        if here == state["slow_ns"]:
            end = time.thread_time() + 3 * _gather._SLOW_READ
            while time.thread_time() < end:
                pass
        state["reads"].append((here == state["slow_ns"], threading.current_thread().name))
        return real()

    monkeypatch.setattr(ifaddr, "get_adapters", maybe_slow)
    # (Which thread then reads is trio's: an idle worker of another namespace's reads
    # nothing, and the task reads itself; what is asked here is that a worker is asked.)
    asked: list[object] = []
    read_in = _gather._read_in

    def asking(namespace: object, newer_than: float) -> None:
        asked.append(namespace)
        read_in(namespace, newer_than)

    monkeypatch.setattr(_gather, "_read_in", asking)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    monkeypatch.setattr(_gather, "_slow_reads", False)
    monkeypatch.setattr(_gather, "_slow_in", {})
    out: dict[str, Any] = {}
    go_on = threading.Event()
    main_done = threading.Event()

    def in_a(ns: Any) -> None:
        try:
            with entered(ns):
                state["slow_ns"] = _gather._namespace()
                _gather._adapters()  # (slow: the next read in A goes to a worker thread)
                out["slow_after_a"] = _gather._slow_reads
                go_on.set()
                main_done.wait(10)
                state["reads"].clear()
                loop_thread = threading.current_thread().name

                async def main() -> None:
                    await _gather.read_interfaces(time.monotonic())

                trio.run(main)
                out["reads"] = list(state["reads"])
                out["loop"] = loop_thread
                out["asked"] = asked == [state["slow_ns"]]
        except BaseException as exc:  # (reported to the test's thread)
            out["error"] = repr(exc)
            go_on.set()

    with lone_namespace("zzslow") as ns:
        thread = threading.Thread(target=in_a, args=(ns,), name="in-A")
        thread.start()
        assert go_on.wait(10)
        _gather._adapters(-math.inf)  # (the main namespace's read: quick)
        main_done.set()
        thread.join(30)
    _gather.forget_adapters()
    assert "error" not in out, out
    assert out["slow_after_a"], out
    # The read A's slowness asked for went to a worker thread.
    assert out["asked"], out


async def test_under_a_mock_clock_slow_interface_reads_stay_in_the_calling_task(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application's test in virtual time, on a host where reading the interfaces is
    slow: the reads stay in the calling task, and the agent gathers in time.  (In a worker
    thread, the autojumping clock ran ahead meanwhile, to the test's own timeout.)"""
    readers = slow_interface_reads(monkeypatch)
    with trio.fail_after(10):
        async with trice.open_agent(loopback_config(), controlling=True) as agent:
            await agent.wait_gathering_complete()
            assert [c.address for c in agent.local_candidates] == ["127.0.0.1"]
    assert readers and set(readers) == {threading.main_thread().name}, readers


def test_a_read_slow_by_the_wall_clock_alone_sends_no_read_to_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read is slow by the CPU time it takes, not the wall clock's: one that waited
    (a busy machine, the process preempted) does not send the next reads to a worker
    thread, where a test's MockClock would jump ahead while every task waits on it."""
    real = ifaddr.get_adapters

    def waited() -> Any:
        time.sleep(0.05)
        return real()

    monkeypatch.setattr(ifaddr, "get_adapters", waited)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    monkeypatch.setattr(_gather, "_slow_reads", False)
    _gather._adapters()
    assert not _gather._slow_reads


def test_out_of_descriptors_the_namespace_key_matches_no_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No descriptor left for the probe socket that reads the namespace's cookie: the key
    is one of its own, which no cached read serves (the inode number it fell back to could
    be a gone namespace's, the number reused: see the test above)."""
    if sys.platform != "linux":
        pytest.skip("namespace cookies are Linux's")

    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket, "socket", no_socket)  # (as _gather reads it)
    first, second = _gather._namespace(), _gather._namespace()
    assert first != second
    assert not isinstance(first, (tuple, bytes))


async def test_an_agent_closed_while_a_worker_thread_reads_its_interfaces_gathers_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where reads of the interfaces are slow (a worker thread reads them), an agent closed
    while its first read is in the thread (which no cancellation stops) gathers nothing
    once the read ends: ``closed`` was its subscribers' last event, and what it says agrees.
    It went on, bound a socket and gathered a candidate, and said gathering complete to a
    late subscriber and in its properties (the eventgrammar review)."""
    async with trice.open_agent(loopback_config(), controlling=True):
        pass  # (the process's warm-up, once, out of the way: it reads no interface held)
    monkeypatch.setattr(_gather, "_slow_reads", True)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    entered, release = threading.Event(), threading.Event()
    real = _gather._read_in

    def held_read(*args: Any) -> Any:
        entered.set()
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(_gather, "_read_in", held_read)

    async def release_at_close(events: trice.EventStream) -> None:
        async for event in events:
            if event == trice.ConnectionStateChanged(trice.ConnectionState.CLOSED):
                release.set()

    async with trio.open_nursery() as nursery:
        async with trice.open_agent(loopback_config(), controlling=True) as a:
            stream = a.subscribe()
            nursery.start_soon(release_at_close, a.subscribe())
            with trio.fail_after(10):
                await trio.to_thread.run_sync(entered.wait)
            assert a.gathering_state is trice.GatheringState.GATHERING
    with trio.fail_after(10):  # (a stream of a closed agent that never ended: a failure)
        events = [event async for event in stream]
        assert [event async for event in a.subscribe()] == events
    assert events == [
        trice.GatheringStateChanged(trice.GatheringState.GATHERING),
        trice.ConnectionStateChanged(trice.ConnectionState.CLOSED),
    ]
    assert a.gathering_state is trice.GatheringState.GATHERING
    assert a.local_candidates == ()
