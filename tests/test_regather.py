"""An ICE restart that gathers anew (``Agent.restart(regather=True)``), for a host whose
network changed: the interfaces are read again, an address still there keeps its socket and
candidate, a new one gets a socket, one gone is signalled no more; STUN servers are asked
again, relays that live are kept.  On loopback: a network change is an IP filter that
accepts other addresses than before (127.0.0.1, then ::1)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import ifaddr
import pytest
import trio
import trio.testing

import trice
from trice._trio import _gather
from trice._trio._transport import UdpTransport

from loopback import (
    HAS_IPV6,
    connect_both,
    events_so_far,
    filtered_config,
    gathered_pair,
    loopback_config,
    mux_in_a_task,
    open_fds,
    server_socket,
    signal,
    stun_server,
)

HOST, SRFLX = trice.CandidateType.HOST, trice.CandidateType.SRFLX


async def _exchange(ca: trice.Connection, cb: trice.Connection, tag: bytes) -> None:
    await ca.send(b"a " + tag)
    await cb.send(b"b " + tag)
    with trio.fail_after(5):
        assert await cb.receive() == b"a " + tag
        assert await ca.receive() == b"b " + tag


async def _restart_both(
    a: trice.Agent, b: trice.Agent, *, a_regather: bool = True, b_regather: bool = False
) -> None:
    """Both restart (``a`` gathering anew, and ``b`` if asked), wait for their gathering,
    and signal."""
    a.restart(regather=a_regather)
    b.restart(regather=b_regather)
    with trio.fail_after(5):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
    signal(a, b)


def _gathering_events(events: list[trice.Event]) -> list[object]:
    return [
        e.state if isinstance(e, trice.GatheringStateChanged) else e.candidate
        for e in events
        if isinstance(e, (trice.GatheringStateChanged, trice.CandidateGathered))
    ]


@asynccontextmanager
async def _connected(
    a_config: trice.AgentConfig, b_config: trice.AgentConfig
) -> AsyncIterator[tuple[trice.Agent, trice.Agent, trice.Connection, trice.Connection]]:
    """``a`` (controlling) and ``b``, gathered, signalled and connected: the agents and
    their connections."""
    async with gathered_pair(a_config, b_config) as (a, b):
        signal(a, b)
        ca, cb = await connect_both(a, b)
        yield a, b, ca, cb


async def test_gathering_anew_keeps_what_is_still_there() -> None:
    """Nothing changed: the same host candidate (the same socket) is gathered again, with
    the events of a gathering (``gathering``, the candidate, ``complete``); no socket is
    opened; the peers connect again and the same connection carries data."""
    async with _connected(loopback_config(), loopback_config()) as (a, b, ca, cb):
        before = a.local_candidates
        fds = open_fds()
        async with a.subscribe() as events:
            events_so_far(events)  # (what happened before)
            await _restart_both(a, b)
            assert _gathering_events(events_so_far(events)) == [
                trice.GatheringState.GATHERING,
                *before,
                trice.GatheringState.COMPLETE,
            ]
        assert a.local_candidates == before
        assert open_fds() == fds
        assert await connect_both(a, b) == (ca, cb)
        await _exchange(ca, cb, b"after")


async def test_an_address_kept_keeps_its_candidate_though_an_interface_before_it_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two interfaces (as ifaddr lists them; their addresses on loopback): the first one's
    address goes, and a gathering anew keeps the second one's host candidate as it was,
    priority and all (its interface's rank, and so its local preference, was counted
    afresh: the candidate changed under a peer that holds it)."""
    adapters = [
        SimpleNamespace(nice_name=name, name=name, ips=[SimpleNamespace(ip=ip, network_prefix=8)])
        for name, ip in (("first", "127.0.0.1"), ("second", "127.0.0.2"))
    ]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: list(adapters))
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    network = dataclasses.replace(
        loopback_config().network, interface_filter=lambda name: name in ("first", "second")
    )
    async with trice.open_agent(trice.AgentConfig(network=network), controlling=True) as a:
        await a.wait_gathering_complete()
        (kept,) = [c for c in a.local_candidates if c.address == "127.0.0.2"]
        del adapters[0]
        a.restart(regather=True)
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        assert a.local_candidates == (kept,)


async def test_a_restart_that_gathers_anew_says_so_before_what_the_gathering_finds() -> None:
    """The restart's ``checking`` (the new generation) comes before the new gathering's
    events: an application that starts its list of candidates to signal anew at that
    ``checking`` keeps what the gathering finds (it came first, and was lost so)."""
    async with _connected(loopback_config(), loopback_config()) as (a, _, _, _):
        async with a.subscribe() as events:
            events_so_far(events)  # (what happened before)
            a.restart(regather=True)
            seen = events_so_far(events)
        checking = seen.index(trice.ConnectionStateChanged(trice.ConnectionState.CHECKING))
        gathering = seen.index(trice.GatheringStateChanged(trice.GatheringState.GATHERING))
        first_candidate = next(
            i for i, e in enumerate(seen) if isinstance(e, trice.CandidateGathered)
        )
        assert checking < gathering < first_candidate


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
async def test_a_new_address_is_gathered_and_one_gone_is_signalled_no_more() -> None:
    """``a`` had 127.0.0.1 only; then its network "changes" (its IP filter takes ::1
    only): gathering anew binds a socket on ::1 and signals it, and 127.0.0.1 is signalled
    no more (its socket stays open, unused, until the agent closes).  The peers connect
    again over ::1, and the same connection carries data."""
    allowed = {"127.0.0.1"}
    async with _connected(filtered_config(allowed), filtered_config()) as (a, b, ca, cb):
        assert [c.address for c in a.local_candidates] == ["127.0.0.1"]
        allowed.clear()
        allowed.add("::1")
        fds = open_fds()
        await _restart_both(a, b)
        assert [(c.type, c.address) for c in a.local_candidates] == [(HOST, "::1")]
        assert len(open_fds() - fds) == 1  # (the new socket; the old one stays)
        await connect_both(a, b)
        assert ca.selected_pair.local.address == "::1"
        assert ca.selected_pair.remote.address == "::1"
        await _exchange(ca, cb, b"over ::1")
        (report,) = a.gather_reports
        assert (report.source, report.candidates, report.error) == ("host", 1, None)


@asynccontextmanager
async def _stun(seen: list[tuple[tuple[str, int], bytes]]) -> AsyncIterator[str]:
    """A STUN server of the test's own that maps to 203.0.113.7 (the source's port): its
    URL."""
    with await server_socket() as sock:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(stun_server, sock, ("203.0.113.7", None), seen=seen)
            nursery.start_soon(serve)
            yield f"stun:127.0.0.1:{sock.getsockname()[1]}"
            nursery.cancel_scope.cancel()


async def test_gathering_anew_asks_the_stun_servers_again() -> None:
    """The NAT's mapping may have changed: the STUN server is asked again, and the srflx
    candidate is gathered again from its answer; the reports are the new gathering's."""
    seen: list[tuple[tuple[str, int], bytes]] = []
    async with _stun(seen) as url:
        config = loopback_config(ice_servers=[trice.IceServer(url)])
        async with trice.open_agent(config, controlling=True) as a:
            with trio.fail_after(5):
                await a.wait_gathering_complete()
            first = a.local_candidates
            assert [c.type for c in first] == [HOST, SRFLX]
            a.restart(regather=True)
            assert a.gathering_state is trice.GatheringState.GATHERING
            assert [c.type for c in a.local_candidates] == [HOST]
            with trio.fail_after(5):
                await a.wait_gathering_complete()
            assert a.local_candidates == first
            assert len({tid for _, tid in seen}) == 2
            assert sorted(r.source.split(" ")[0] for r in a.gather_reports) == ["host", url]


async def test_gathering_anew_waits_for_the_gathering_before_it() -> None:
    """A restart that would gather anew while gathering goes on is refused, and changes
    nothing (the ufrag stays)."""
    gate = trio.Event()
    with await server_socket() as sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(stun_server, sock, None, gate=gate))
            url = f"stun:127.0.0.1:{sock.getsockname()[1]}"
            config = loopback_config(ice_servers=[trice.IceServer(url)])
            async with trice.open_agent(config, controlling=True) as a:
                ufrag = a.local_parameters.ufrag
                with pytest.raises(trice.StateError, match="gathering is not complete"):
                    a.restart(regather=True)
                assert a.local_parameters.ufrag == ufrag
                gate.set()
                with trio.fail_after(5):
                    await a.wait_gathering_complete()
                a.restart(regather=True)
                assert a.local_parameters.ufrag != ufrag
            nursery.cancel_scope.cancel()


async def test_an_agent_on_a_mux_gathers_its_mux_candidates_anew() -> None:
    """On a UDP mux: the mux's host candidate again, and its srflx one from the mux's kept
    STUN answer (no new request within 25 s)."""
    seen: list[tuple[tuple[str, int], bytes]] = []
    async with _stun(seen) as url, mux_in_a_task(trice.open_udp_mux) as (mux, _, _):
        config = loopback_config(ice_servers=[trice.IceServer(url)])
        async with trice.open_agent(config, controlling=True, mux=mux) as a:
            with trio.fail_after(5):
                await a.wait_gathering_complete()
            first = a.local_candidates
            a.restart(regather=True)
            with trio.fail_after(5):
                await a.wait_gathering_complete()
            assert a.local_candidates == first
            assert [c.type for c in first] == [HOST, SRFLX]
            assert len({tid for _, tid in seen}) == 1


async def test_ice_tcp_candidates_are_gathered_anew_on_their_sockets() -> None:
    """ICE-TCP: the passive candidate keeps its listener (the same port), the active one is
    gathered again."""
    network = dataclasses.replace(
        loopback_config().network, tcp_candidates=(trice.TcpType.ACTIVE, trice.TcpType.PASSIVE)
    )
    config = dataclasses.replace(loopback_config(), network=network)
    async with trice.open_agent(config, controlling=True) as a:
        await a.wait_gathering_complete()
        first = a.local_candidates
        fds = open_fds()
        a.restart(regather=True)
        await a.wait_gathering_complete()
        assert a.local_candidates == first
        assert sorted(c.tcp_type.value for c in first if c.tcp_type) == ["active", "passive"]
        assert open_fds() == fds


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
@pytest.mark.parametrize("kept", ["127.0.0.1", "::1"], ids=["new-last", "new-first"])
async def test_a_socket_that_cannot_be_bound_anew_is_reported_not_raised(
    kept: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors as a gathering anew binds the socket of a new address (after the
    kept one in the interface's order, or before it): the restart has happened, so the
    error is reported (and logged), not raised; it costs only that candidate, the kept
    socket still giving its own; gathering completes; and the next gathering anew, with
    descriptors again, binds it."""
    allowed = {kept}
    async with trice.open_agent(filtered_config(allowed), controlling=True) as a:
        await a.wait_gathering_complete()
        allowed.add("::1" if kept == "127.0.0.1" else "127.0.0.1")

        def no_descriptors(*_: object, **__: object) -> object:
            raise trice.LimitError("out of file descriptors (test)")

        monkeypatch.setattr(_gather, "bind_socket", no_descriptors)
        a.restart(regather=True)
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        assert [c.address for c in a.local_candidates] == [kept]
        (report,) = a.gather_reports
        assert (report.candidates, report.error) == (1, "out of file descriptors (test)")
        monkeypatch.undo()
        a.restart(regather=True)
        await a.wait_gathering_complete()
        assert sorted(c.address for c in a.local_candidates) == ["127.0.0.1", "::1"]


async def test_a_filter_that_raises_leaves_the_agent_as_it_was() -> None:
    """The interfaces are read before the restart changes anything: a filter that raises
    raises from ``restart``, and the ufrag, the gathering state and the candidates stay;
    a later gathering anew works."""
    broken = [False]

    def ip_filter(ip: object) -> bool:
        if broken[0]:
            raise RuntimeError("the filter broke")
        return str(ip) == "127.0.0.1"

    network = dataclasses.replace(loopback_config().network, ip_filter=ip_filter)
    config = dataclasses.replace(loopback_config(), network=network)
    async with trice.open_agent(config, controlling=True) as a:
        await a.wait_gathering_complete()
        ufrag, before = a.local_parameters.ufrag, a.local_candidates
        broken[0] = True
        with pytest.raises(RuntimeError, match="the filter broke"):
            a.restart(regather=True)
        assert a.local_parameters.ufrag == ufrag
        assert a.gathering_state is trice.GatheringState.COMPLETE
        assert a.local_candidates == before
        broken[0] = False
        a.restart(regather=True)
        await a.wait_gathering_complete()
        assert a.local_candidates == before


@pytest.mark.parametrize("case", ["mdns open", "mdns off", "mux"])
async def test_a_filter_that_raises_for_mdns_leaves_the_agent_as_it_was(case: str) -> None:
    """mDNS's read of the interfaces is made with the others, before the restart changes
    anything.  It came after, the filter raising from there: with mDNS open (an IPv6 agent,
    whose mDNS asks the filter of IPv4 addresses), restart raised with the ufrag changed;
    with mDNS off at the first gathering (no IPv4 address passed), also with the gathering
    left ``gathering`` for good, every later restart(regather=True) refused; on a UDP mux,
    whose agents read no host address, any filter that raised did the same."""
    if case != "mux" and not HAS_IPV6:
        pytest.skip("the host has no IPv6 loopback (::1)")
    mode = ["take"]

    def ip_filter(ip: trice.IPAddress) -> bool:
        if ip.version == 4 and mode[0] == "raise":
            raise RuntimeError("the filter broke")
        if ip.version == 4 and case == "mdns off":
            return False
        return ip.is_loopback

    if case == "mux":
        network = dataclasses.replace(loopback_config().network, ip_filter=ip_filter)
    else:
        network = trice.NetworkConfig(
            ip_filter=ip_filter, include_loopback=True, ipv4=False, ipv6=True
        )
    network = dataclasses.replace(network, mdns=trice.MdnsMode.QUERY_AND_GATHER)
    config = trice.AgentConfig(network=network, timing=trice.Timing(gather_timeout=2.0))
    async with contextlib.AsyncExitStack() as stack:
        mux = (
            await stack.enter_async_context(trice.open_udp_mux("127.0.0.1"))
            if case == "mux"
            else None
        )
        a = await stack.enter_async_context(trice.open_agent(config, controlling=True, mux=mux))
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        assert bool(a._mdns) is (case != "mdns off")
        ufrag = a.local_parameters.ufrag
        mode[0] = "raise"
        with pytest.raises(RuntimeError, match="the filter broke"):
            a.restart(regather=True)
        assert a.local_parameters.ufrag == ufrag
        assert a.gathering_state is trice.GatheringState.COMPLETE
        mode[0] = "take"
        a.restart(regather=True)
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        assert a.local_parameters.ufrag != ufrag


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
async def test_the_socket_of_an_address_gone_is_closed_once_no_pair_needs_it() -> None:
    """127.0.0.1 goes and ::1 comes: the old socket carries the pair of before until the
    new checks select one, so the gathering anew leaves it open; the next one closes it
    (and the open descriptors are as many as at the start).  So a network that keeps
    changing costs no socket more than one a change."""
    allowed = {"127.0.0.1"}
    async with _connected(filtered_config(allowed), filtered_config()) as (a, b, ca, cb):
        start = len(open_fds())

        def open_sockets() -> list[str]:
            return sorted(
                t.local_address[0]
                for t in a._transports.values()
                if isinstance(t, UdpTransport) and not t.closed
            )

        allowed.clear()
        allowed.add("::1")
        await _restart_both(a, b)
        assert open_sockets() == ["127.0.0.1", "::1"]  # (the pair of before is on the first)
        await connect_both(a, b)
        await _exchange(ca, cb, b"over ::1")
        await _restart_both(a, b)
        assert open_sockets() == ["::1"]
        assert len(open_fds()) == start
        await connect_both(a, b)
        await _exchange(ca, cb, b"still over ::1")


async def test_an_agent_that_names_its_candidates_keeps_their_names() -> None:
    """Under ``QUERY_AND_GATHER`` a host candidate kept by a gathering anew keeps its
    ``.local`` name (no new name a gathering)."""
    network = dataclasses.replace(loopback_config().network, mdns=trice.MdnsMode.QUERY_AND_GATHER)
    config = dataclasses.replace(loopback_config(), network=network)
    async with trice.open_agent(config, controlling=True) as a:
        await a.wait_gathering_complete()
        before = a.local_candidates
        assert before and before[0].address.endswith(".local")
        for _ in range(3):
            a.restart(regather=True)
            await a.wait_gathering_complete()
        assert a.local_candidates == before


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
async def test_names_are_answered_on_a_link_that_came_with_a_gathering_anew(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under ``QUERY_AND_GATHER``, an agent whose first gathering found no IPv4 link for
    mDNS (its filter took ::1 only) signals no candidate (its address hidden, not shown
    unnamed: mDNS fails closed), with a warning, and connects all the same (the peer learns
    it from its checks); a gathering anew that finds none either does not warn again; then
    the network changes (127.0.0.1 comes) and a gathering anew opens mDNS on that link: the
    new candidate is named, and a peer resolves the name and connects over it."""
    allowed = {"::1"}
    named = filtered_config(allowed)
    named = dataclasses.replace(
        named, network=dataclasses.replace(named.network, mdns=trice.MdnsMode.QUERY_AND_GATHER)
    )
    async with _connected(named, filtered_config()) as (a, b, ca, cb):
        assert not a.local_candidates
        await _restart_both(a, b)
        await connect_both(a, b)
        assert not a.local_candidates
        assert caplog.text.count("mDNS off") == 1
        allowed.clear()
        allowed.add("127.0.0.1")
        await _restart_both(a, b)
        (candidate,) = a.local_candidates
        assert candidate.address.endswith(".local")
        await connect_both(a, b)
        assert ca.selected_pair.local.address == "127.0.0.1"
        assert cb.selected_pair.remote.address == "127.0.0.1"  # (resolved by mDNS)
        await _exchange(ca, cb, b"over the named candidate")


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
@pytest.mark.parametrize("first", ["127.0.0.1", "::1"], ids=["first-socket", "other-socket"])
async def test_a_receiver_waiting_across_network_changes_gets_the_next_datagram(
    first: str,
) -> None:
    """An application's receive waits (an idle connection) on the selected pair's socket,
    the agent's first one or another; the network changes twice, and the second gathering
    anew closes that socket, the pair long moved to the other address: the receive is not
    told the connection closed (nor does the agent crash, as a reader of a closed socket
    did), and the next datagram the peer sends reaches it."""
    other = "::1" if first == "127.0.0.1" else "127.0.0.1"
    allowed = {"127.0.0.1", "::1"}
    b_allowed = {first}
    got: list[bytes] = []
    arrived = trio.Event()
    async with _connected(filtered_config(allowed), filtered_config(b_allowed)) as (a, b, ca, cb):
        assert ca.selected_pair.local.address == first

        async def application() -> None:
            got.append(await ca.receive())
            arrived.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(application)
            await trio.testing.wait_all_tasks_blocked()
            allowed.discard(first)  # (the network changes: the address goes)
            b_allowed.clear()
            b_allowed.add(other)
            for regather_b in (True, False):
                await _restart_both(a, b, b_regather=regather_b)
                await connect_both(a, b)
            assert ca.selected_pair.local.address == other
            assert all(
                t.closed or t.local_address[0] != first
                for t in a._transports.values()
                if isinstance(t, UdpTransport)
            )
            await cb.send(b"after two changes")
            with trio.fail_after(5):
                await arrived.wait()
        assert got == [b"after two changes"]


async def _moved_to(
    a: trice.Agent, b: trice.Agent, allowed: set[str], b_allowed: set[str], address: str
) -> None:
    """The network changes: each side's filter takes ``address`` only; both restart, ``a``
    gathering anew (``b`` too), and connect again."""
    for filter_set in (allowed, b_allowed):
        filter_set.clear()
        filter_set.add(address)
    await _restart_both(a, b, b_regather=True)
    await connect_both(a, b)


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
@pytest.mark.parametrize("refresh", [False, True], ids=["alone", "route-looked-up-again"])
async def test_a_send_blocked_on_a_socket_closed_under_it_goes_the_new_way(
    refresh: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send waits on the first pair's socket (its buffer full); the pair moves to ::1,
    and the next gathering anew closes the old socket: the datagram goes the new way,
    whether or not another send looked the route up meanwhile (it was told the relay was
    gone, and lost, when one had)."""
    allowed, b_allowed = {"127.0.0.1"}, {"127.0.0.1"}
    async with _connected(filtered_config(allowed), filtered_config(b_allowed)) as (a, b, ca, cb):
        core = a._core
        assert core.data_pair is not None
        old = a._transports[core.data_pair.base]
        assert isinstance(old, UdpTransport)
        closed = trio.Event()
        real_send = UdpTransport.send

        async def send(self: UdpTransport, data: bytes, *args: object) -> None:
            if self is old and data == b"blocked":
                await closed.wait()  # (the buffer stays full until the socket closes)
                raise trio.ClosedResourceError("closed")
            await real_send(self, data, *args)  # type: ignore[arg-type]

        real_nowait = UdpTransport.send_nowait

        def send_nowait(
            self: UdpTransport, data: bytes, address: tuple[str, int], *, retry: bool = False
        ) -> bool:
            blocked = self is old and data == b"blocked"
            return not blocked and real_nowait(self, data, address, retry=retry)

        monkeypatch.setattr(UdpTransport, "send", send)
        monkeypatch.setattr(UdpTransport, "send_nowait", send_nowait)

        def full(data: bytes, address: tuple[str, int]) -> int:
            raise BlockingIOError

        ca._sendto = full  # (the kernel would block)
        sent = trio.Event()

        async def blocked_sender() -> None:
            await ca.send(b"blocked")
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
            await _moved_to(a, b, allowed, b_allowed, "::1")
            if refresh:
                await ca.send(b"another send")  # (looks the route up: the new pair)
                assert await cb.receive() == b"another send"
            await _restart_both(a, b)  # (closes the old socket)
            assert old.closed
            closed.set()
            with trio.fail_after(5):
                await sent.wait()
                assert await cb.receive() == b"blocked"


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
@pytest.mark.parametrize("meanwhile", ["datagram-queued", "no-pair-left"])
async def test_a_receive_whose_socket_closes_takes_what_came_or_is_told(meanwhile: str) -> None:
    """The gathering anew closes the socket a receive waits on, and in the same step either
    the new pair's reader queues a datagram, which the receive takes, or the pair of before
    ends (no pair carries data), and the receive raises BrokenResourceError.  (It parked,
    and waited for the next datagram, before.)"""
    allowed, b_allowed = {"127.0.0.1"}, {"127.0.0.1"}
    async with _connected(filtered_config(allowed), filtered_config(b_allowed)) as (a, b, ca, _):
        outcome: list[object] = []
        done = trio.Event()

        async def application() -> None:
            try:
                outcome.append(await ca.receive())
            except trio.BrokenResourceError as exc:
                outcome.append(exc)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(application)
            await trio.testing.wait_all_tasks_blocked()
            await _moved_to(a, b, allowed, b_allowed, "::1")
            pair = a._core.data_pair
            assert pair is not None
            a.restart(regather=True)  # (closes the old socket, waking the receive)
            if meanwhile == "datagram-queued":
                b.restart()
                a._dispatch(a._transports[pair.base], b"only one", pair.remote_address)
            else:
                a._transports[pair.base].close()
                a._transport_lost(pair.base)  # (the pair of before ends in the same step)
                assert a._core.data_pair is None
            with trio.fail_after(2):
                await done.wait()
        if meanwhile == "datagram-queued":
            assert outcome == [b"only one"]
        else:
            assert len(outcome) == 1 and isinstance(outcome[0], trio.BrokenResourceError)


async def test_regather_must_be_a_bool() -> None:
    """restart(regather="no") gathered anew (a truthy string); every other flag of the API
    refuses what is not a bool."""
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        await agent.wait_gathering_complete()
        before = agent.local_parameters
        with pytest.raises(TypeError, match="regather is True or False"):
            agent.restart(regather="no")  # type: ignore[arg-type]
        assert agent.gathering_state is trice.GatheringState.COMPLETE
        assert agent.local_parameters == before
