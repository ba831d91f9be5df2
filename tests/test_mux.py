"""Many agents on one UDP socket (``trice.open_udp_mux``), on loopback: each connects with its
own peer, gets its own datagrams, and holds no socket of its own."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import struct
import weakref

import pytest
import trio
import trio.testing

import trice
import trice._trio._agent
from trice import stun
from trice._trio import _mux
from trice._trio._mux import MuxTransport, UdpMux, asked_ufrag
from trice._trio._transport import MAX_STUN

from loopback import (
    HAS_IPV6,
    answer_check,
    connect_both,
    held_in_another_run,
    hold_readers,
    loopback_config,
    mux_in_a_task,
    signal,
    until,
)
from virtual_time import wall_clock_guard


async def _pair_through(
    mux: trice.UdpMux, i: int, *, server_controlling: bool = False, lite: bool = False
) -> tuple[trice.Candidate, trice.CandidatePair]:
    """A server agent on ``mux`` and a client of its own connect and exchange two datagrams
    that name ``i`` each way; returns the server's host candidate and selected pair."""
    server_config = loopback_config(lite=lite)
    async with (
        trice.open_agent(server_config, controlling=server_controlling, mux=mux) as server,
        trice.open_agent(loopback_config(), controlling=not server_controlling) as client,
    ):
        await server.wait_gathering_complete()
        await client.wait_gathering_complete()
        signal(server, client)
        to_client, to_server = await connect_both(server, client)
        for n in range(2):
            await to_server.send(b"%d up %d" % (i, n))
            await to_client.send(b"%d down %d" % (i, n))
        with trio.fail_after(5):
            got_up = [await to_client.receive() for _ in range(2)]
            got_down = [await to_server.receive() for _ in range(2)]
        assert got_up == [b"%d up 0" % i, b"%d up 1" % i]
        assert got_down == [b"%d down 0" % i, b"%d down 1" % i]
        (host,) = server.local_candidates
        return host, to_client.selected_pair


async def test_thirty_agents_on_one_socket_each_get_their_own_datagrams() -> None:
    """Thirty server agents share one mux: one host candidate (the mux's address and port)
    for all; each connects with its own client, concurrently, and gets only its datagrams;
    once they close, the mux routes nothing more."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        results: list[tuple[trice.Candidate, trice.CandidatePair]] = []

        async def one(i: int) -> None:
            results.append(await _pair_through(mux, i))

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, i)
        assert len(results) == 30
        for host, pair in results:
            assert (host.address, host.port) == mux.local_address
            assert (pair.local.address, pair.local.port) == mux.local_address
        stats = mux.statistics()
        assert (stats.agents, stats.addresses, stats.unroutable) == (0, 0, 0)
        assert stats.delivered >= 30 * 4  # (a check, an answer, a nomination and data, each)


@pytest.mark.parametrize(
    ("server_controlling", "lite"),
    [(True, False), (False, True)],
    ids=["server-controlling", "lite-server"],
)
async def test_a_mux_agent_in_either_role_and_as_ice_lite(
    server_controlling: bool, lite: bool
) -> None:
    """The agent on the mux controls (its own checks' answers come back by their source), or
    is an ICE-lite server (it sends no check: the address is its once it answers one)."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        host, _ = await _pair_through(mux, 0, server_controlling=server_controlling, lite=lite)
        assert (host.address, host.port) == mux.local_address


async def test_muxes_can_be_referred_to_weakly() -> None:
    """A UDP or a TCP mux can be held weakly (an application's WeakSet or
    weakref.finalize of them), as an agent can: there was no ``__weakref__`` slot."""
    async with (
        trice.open_udp_mux("127.0.0.1") as udp,
        trice.open_tcp_mux("127.0.0.1") as tcp,
    ):
        assert weakref.ref(udp)() is udp
        assert weakref.ref(tcp)() is tcp


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1) here")
async def test_a_mux_on_ipv6_loopback() -> None:
    async with trice.open_udp_mux("::1") as mux:
        server_config = loopback_config(ipv6=True)
        async with (
            trice.open_agent(server_config, controlling=False, mux=mux) as server,
            trice.open_agent(loopback_config(ipv6=True), controlling=True) as client,
        ):
            await server.wait_gathering_complete()
            await client.wait_gathering_complete()
            signal(server, client)
            to_client, _ = await connect_both(server, client)
            assert to_client.selected_pair.local.address == "::1"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_agents_on_a_mux_hold_no_socket_of_their_own() -> None:
    """A hundred agents on one mux add no file descriptor (each would bind a socket of its
    own without one)."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with trio.open_nursery() as nursery:
            opened = trio.Event()
            release = trio.Event()
            count = 0
            before = len(os.listdir("/proc/self/fd"))

            async def hold() -> None:
                nonlocal count
                async with trice.open_agent(loopback_config(), controlling=False, mux=mux) as a:
                    await a.wait_gathering_complete()
                    count += 1
                    if count == 100:
                        opened.set()
                    await release.wait()

            for _ in range(100):
                nursery.start_soon(hold)
            with trio.fail_after(10):
                await opened.wait()
            assert len(os.listdir("/proc/self/fd")) == before
            assert mux.statistics().agents == 100
            release.set()
        assert mux.statistics().agents == 0


async def test_what_the_mux_cannot_route_is_dropped_and_counted() -> None:
    """A Binding request for a ufrag no agent of the mux has, and a datagram from an address
    no agent sent to, go nowhere: counted, unanswered."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent:
            await agent.wait_gathering_complete()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.bind(("127.0.0.1", 0))
                stranger.setblocking(False)
                request = stun.Message(
                    stun.Method.BINDING,
                    stun.MessageClass.REQUEST,
                    attributes=(stun.Username("nobody:xyz"),),
                ).encode()
                stranger.sendto(request, mux.local_address)
                stranger.sendto(b"\x80data from a stranger", mux.local_address)
                await trio.testing.wait_all_tasks_blocked(0.05)
                assert mux.statistics().unroutable == 2
                with pytest.raises(BlockingIOError):
                    stranger.recv(2048)  # (nothing came back)


async def test_one_ufrag_per_mux_and_a_restart_moves_the_agent_to_its_new_one() -> None:
    """Two agents of one ufrag cannot share a mux, and an ICE restart refuses a ufrag that
    another agent of the mux has; a restarted agent takes requests for its new ufrag."""
    async with trice.open_udp_mux("127.0.0.1") as mux:
        config = loopback_config(ufrag="same", pwd="p" * 22)
        async with trice.open_agent(config, controlling=False, mux=mux) as server:
            with pytest.raises(trice.UsageError, match="ufrag same"):
                async with trice.open_agent(config, controlling=True, mux=mux):
                    pass
            other_config = loopback_config(ufrag="othr", pwd="q" * 22)
            async with trice.open_agent(other_config, controlling=False, mux=mux):
                with pytest.raises(trice.ConfigError, match="ufrag othr"):
                    server.restart(ufrag="othr")
            assert server.local_parameters.ufrag == "same"  # (nothing changed)
            async with trice.open_agent(loopback_config(), controlling=True) as client:
                await server.wait_gathering_complete()
                await client.wait_gathering_complete()
                signal(server, client)
                await connect_both(server, client)
                server.restart()
                client.restart()
                signal(server, client)
                to_client, to_server = await connect_both(server, client)
                assert mux._owner("same") is None
                await to_server.send(b"after the restart")
                with trio.fail_after(5):
                    assert await to_client.receive() == b"after the restart"


async def test_open_agent_takes_only_muxes() -> None:
    with pytest.raises(TypeError, match="mux"):
        trice.open_agent(loopback_config(), controlling=True, mux="127.0.0.1:3478")  # type: ignore[arg-type]
    with pytest.raises(trice.UsageError, match="port"):
        async with trice.open_udp_mux("127.0.0.1", 70000):
            pass


async def test_an_agent_on_a_mux_names_its_candidate_under_query_and_gather() -> None:
    """mDNS works on a mux as off it: under ``QUERY_AND_GATHER`` the mux's host candidate is
    signalled under a ``.local`` name, which the peer resolves to the mux's address."""
    config = loopback_config()
    network = dataclasses.replace(config.network, mdns=trice.MdnsMode.QUERY_AND_GATHER)
    named = dataclasses.replace(config, network=network)
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        trice.open_agent(named, controlling=False, mux=mux) as server,
        trice.open_agent(loopback_config(), controlling=True) as client,
    ):
        await server.wait_gathering_complete()
        await client.wait_gathering_complete()
        (host,) = server.local_candidates
        assert host.address.endswith(".local") and host.port == mux.local_address[1]
        signal(server, client)
        await connect_both(server, client)
        pair = client.selected_pair
        assert pair is not None
        assert (pair.remote.address, pair.remote.port) == mux.local_address
        assert pair.remote.type is trice.CandidateType.HOST


async def test_a_gathering_anew_reports_the_mux_host_and_a_closed_mux_is_listed_no_more() -> None:
    """A gathering anew on a mux reports its host source, as the first one does (it
    reported none); once the mux closes, its candidate leaves ``local_candidates`` (a
    restart had signalled it again, dead), and a gathering anew says why it found none."""
    async with mux_in_a_task(trice.open_udp_mux) as (mux, scope, ended):
        async with trice.open_agent(loopback_config(), controlling=True, mux=mux) as agent:
            await agent.wait_gathering_complete()
            (host,) = agent.local_candidates
            assert [(r.source, r.candidates) for r in agent.gather_reports] == [("host", 1)]
            agent.restart(regather=True)
            await agent.wait_gathering_complete()
            assert agent.local_candidates == (host,)
            assert [(r.source, r.candidates) for r in agent.gather_reports] == [("host", 1)]
            scope.cancel()
            await ended.wait()
            assert not agent.local_candidates
            agent.restart(regather=True)
            await agent.wait_gathering_complete()
            assert not agent.local_candidates
            (report,) = agent.gather_reports
            assert (report.source, report.candidates) == ("host", 0)
            assert report.error == "no usable local address (every mux is closed)"


async def test_sends_waiting_their_turn_on_a_full_mux_socket_that_closes_raise_closed() -> None:
    """Three agents' sends wait on a mux's full socket (trio lets one task at a time wait
    on it; the others wait their turn), and the mux closes: each raises
    ClosedResourceError (the next in turn waited on the closed socket: ValueError, then
    BusyResourceError)."""
    full, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with full, other:
        full.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                full.send(b"x" * 512)

        class Blocked:  # (the mux's socket: it never takes a datagram, until closed)
            family = socket.AF_INET

            def fileno(self) -> int:
                return full.fileno()

            def getsockname(self) -> tuple[str, int]:
                return ("127.0.0.1", 9)

            def sendto(self, data: bytes, address: tuple[str, int]) -> int:
                if full.fileno() == -1:
                    raise OSError(9, "Bad file descriptor")
                raise BlockingIOError

            def close(self) -> None:
                full.close()

        mux = UdpMux(Blocked(), _key=_mux._OPENING)  # type: ignore[arg-type]
        shares = [MuxTransport(i, mux, f"agent{i}", lambda *args: None) for i in range(3)]
        outcomes: list[str] = []

        async def send(share: MuxTransport) -> None:
            try:
                await share.send(b"data", ("127.0.0.1", 9))
                outcomes.append("sent")
            except trio.ClosedResourceError:
                outcomes.append("closed")

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for share in shares:
                    nursery.start_soon(send, share)
                await trio.testing.wait_all_tasks_blocked()
                mux._close()
    assert outcomes == ["closed"] * 3


async def test_the_address_kept_over_a_restart_is_let_go_with_the_pair_of_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An agent on a mux restarts, and its new checks select a pair with another peer
    address: the address of before stays routed to it while data from there counts (the
    pair of before's consent), then is let go.  It stayed the agent's for its life, and
    another agent's peer there (a NAT mapping reused) had its data dropped as ambiguous.
    (In virtual time: a stall of 0.6 s would have let it go before the test looked.)"""
    timing = trice.Timing(keepalive_interval=0.05, disconnected_timeout=0.3, failed_timeout=0.6)
    with wall_clock_guard():
        await _kept_over_a_restart(timing)


async def _kept_over_a_restart(timing: trice.Timing) -> None:
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with trice.open_agent(
            loopback_config(timing=timing), controlling=False, mux=mux
        ) as a:
            await a.wait_gathering_complete()
            async with trice.open_agent(loopback_config(timing=timing), controlling=True) as p1:
                await p1.wait_gathering_complete()
                signal(a, p1)
                await connect_both(a, p1)
                (before,) = [c.transport_address for c in p1.local_candidates]
                a.restart()
                async with trice.open_agent(loopback_config(), controlling=True) as p2:
                    await p2.wait_gathering_complete()
                    signal(a, p2)
                    await connect_both(a, p2)
                    (after,) = [c.transport_address for c in p2.local_candidates]
                    assert before in mux._by_source  # (still counts: the pair of before's)
                    with trio.fail_after(2):  # (virtual: the pair of before fails at 0.6 s)
                        while before in mux._by_source:  # noqa: ASYNC110 (the mux's table)
                            await trio.sleep(0.01)
                    assert after in mux._by_source


async def test_a_mux_closing_during_an_ice_restart_is_said_by_send_and_receive() -> None:
    """The mux of the pair of before closes during an ICE restart: send and receive raise
    ClosedResourceError saying so (as when it closes under the selected pair), not that
    a restart is under way, which no pair on that mux can ever end."""
    config = loopback_config(timing=trice.Timing(pac_timeout=0.0))
    async with mux_in_a_task(lambda: trice.open_udp_mux("127.0.0.1")) as (mux, scope, ended):
        async with (
            trice.open_agent(config, controlling=False, mux=mux) as server,
            trice.open_agent(config, controlling=True) as client,
        ):
            await server.wait_gathering_complete()
            await client.wait_gathering_complete()
            signal(server, client)
            to_client, _ = await connect_both(server, client)
            server.restart()
            await to_client.send(b"still over the pair of before")
            scope.cancel()
            with trio.fail_after(2):
                await ended.wait()
            with pytest.raises(trio.ClosedResourceError, match="mux"):
                await to_client.send(b"x")
            with pytest.raises(trio.ClosedResourceError, match="mux"):
                await to_client.receive()
            # The new checks then fail (no candidate is left here): connect says so, not
            # that the mux closed under a selected pair (there was none).
            client.restart()
            signal(server, client)
            with trio.fail_after(5), pytest.raises(trice.IceFailedError) as failed:
                await server.connect()
            assert "mux" not in str(failed.value)


async def test_a_closed_mux_refers_to_no_agent() -> None:
    """An agent's check is in flight when its mux closes: the closed mux keeps no
    reference to the agent (its table of transaction IDs held it, for as long as the
    application kept the mux).  The agent, its one candidate gone with the mux, fails at
    once (no check can come to it)."""
    failures: list[trice.IceFailedError] = []

    async def connect(agent: trice.Agent) -> None:
        try:
            await agent.connect()
        except trice.IceFailedError as exc:
            failures.append(exc)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        async with mux_in_a_task(lambda: trice.open_udp_mux("127.0.0.1")) as (mux, scope, ended):
            async with trice.open_agent(loopback_config(), controlling=True, mux=mux) as agent:
                await agent.wait_gathering_complete()
                agent.set_remote_parameters("peer", "q" * 22)
                port = silent.getsockname()[1]
                line = f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"
                agent.add_remote_candidate(trice.Candidate.from_sdp(line))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(connect, agent)
                    await until(lambda: bool(mux._by_tid))  # (a check in flight)
                    scope.cancel()
                    with trio.fail_after(2):
                        await ended.wait()
                    await until(lambda: bool(failures))
                assert "no local candidate" in str(failures[0])
            assert not mux._by_tid


async def test_two_agents_of_one_mux_never_connect() -> None:
    """Two agents of one mux, signalled to each other: their checks, from the mux's own
    address, are dropped (counted unroutable), and ICE fails.  They connected, and every
    datagram between them was dropped as ambiguous."""
    timing = trice.Timing(pac_timeout=0.0, disconnected_timeout=0.5, failed_timeout=1.0)
    config = loopback_config(timing=timing)
    async with trice.open_udp_mux("127.0.0.1") as mux:
        async with (
            trice.open_agent(config, controlling=True, mux=mux) as a,
            trice.open_agent(config, controlling=False, mux=mux) as b,
        ):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            with trio.fail_after(5):
                for agent in (a, b):
                    with pytest.raises(trice.IceFailedError):
                        await agent.connect()
            assert mux.statistics().unroutable > 0


@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "::1%lo", "::1%1"])
def test_a_mux_host_no_candidate_can_carry_is_a_usage_error(host: str) -> None:
    """An IPv4-mapped address (IPv6 sockets here are IPv6-only: EINVAL at bind), or a zone
    index (a candidate carries none; gaierror at bind, or signalled without it):
    UsageError at the call."""
    with pytest.raises(trice.UsageError):
        trice.open_udp_mux(host)
    with pytest.raises(trice.UsageError):
        trice.open_tcp_mux(host)


async def test_an_agent_on_a_mux_ranks_its_lone_host_candidate_as_one_without() -> None:
    """An agent on one UDP mux has one address: its host candidate has the lone address's
    local preference, 65535, as the same address's without a mux (2130650111 against
    2130706431: the mux path ranked it by the address's precedence)."""
    network = trice.NetworkConfig(
        interface_filter=lambda n: n == "lo", include_loopback=True, ipv6=False
    )
    config = trice.AgentConfig(network=network)
    async with (
        trice.open_udp_mux("127.0.0.1", 0) as mux,
        trice.open_agent(config, controlling=True, mux=mux) as on_mux,
        trice.open_agent(config, controlling=True) as alone,
    ):
        await on_mux.wait_gathering_complete()
        await alone.wait_gathering_complete()
        ((muxed,), (own,)) = on_mux.local_candidates, alone.local_candidates
    assert muxed.priority == own.priority == 2130706431


async def test_a_mux_agent_whose_host_candidate_is_withheld_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QUERY_AND_GATHER with mDNS unable to open: the mux agent's host candidate is
    withheld, and its host report says why (it said 0 candidates, no error)."""
    monkeypatch.setattr(trice._trio._agent, "open_mdns", lambda *args, **kwargs: None)
    network = trice.NetworkConfig(
        interface_filter=lambda n: n == "lo",
        include_loopback=True,
        ipv6=False,
        mdns=trice.MdnsMode.QUERY_AND_GATHER,
    )
    async with (
        trice.open_udp_mux("127.0.0.1", 0) as mux,
        trice.open_agent(trice.AgentConfig(network=network), controlling=True, mux=mux) as agent,
    ):
        await agent.wait_gathering_complete()
        assert agent.local_candidates == ()
        (report,) = [r for r in agent.gather_reports if r.source == "host"]
    assert report.error == "host candidates withheld: mDNS could not be opened"


async def test_a_check_at_its_end_first_reads_the_answer_waiting_on_the_mux(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that goes once, on a mux whose reader has not had its turn (a stall): at its
    end the check reads the answer waiting on the mux's socket, as over a host socket, and
    the pair succeeds.  (Only a host socket was read: the pair failed, and ICE with it.)"""
    timing = trice.Timing(max_binding_requests=1)
    held = hold_readers(monkeypatch)
    with (
        wall_clock_guard(),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as kicker,
    ):
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        async with (
            trice.open_udp_mux("127.0.0.1") as mux,
            trice.open_agent(loopback_config(timing=timing), controlling=True, mux=mux) as a,
        ):
            await a.wait_gathering_complete()
            held.add(mux.sock.fileno())  # the mux's reader goes back to wait, for good:
            kicker.sendto(bytes(8), mux.local_address)  # (a datagram it cannot route)
            await trio.testing.wait_all_tasks_blocked()
            a.set_remote_parameters("abcd", "x" * 22)
            port = peer.getsockname()[1]
            a.add_remote_candidate(
                trice.Candidate.from_sdp(f"candidate:1 1 udp 1 127.0.0.1 {port} typ host")
            )
            a.add_remote_candidate(None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.connect)
                await trio.testing.wait_all_tasks_blocked()
                data, source = peer.recvfrom(2048)  # the agent's one check
                peer.sendto(answer_check(data, source), source)  # waits on the mux, unread
                await trio.sleep(1.5 * timing.rto)  # past the check's end
                (pair,) = a.pair_statistics()
                assert pair.responses_received == 1
                assert pair.state is not trice.PairState.FAILED  # (its nomination runs now)
                nursery.cancel_scope.cancel()
            held.clear()


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_an_agent_on_a_mux_of_another_trio_run_is_refused(kind: str) -> None:
    """A mux opened in one thread's trio run, handed to open_agent in another thread's run:
    StateError as the block is entered, and the mux's run goes on.  Its task hands the agent
    what comes, from its own run's thread, and woke the other run's tasks: that run died
    (TrioInternalError) and the agent never connected."""

    def opener() -> contextlib.AbstractAsyncContextManager[trice.UdpMux | trice.TcpMux]:
        return (trice.open_udp_mux if kind == "udp" else trice.open_tcp_mux)("127.0.0.1", 0)

    async def agent_run(mux: trice.UdpMux | trice.TcpMux) -> None:
        with pytest.raises(trice.StateError, match="another trio run"):
            async with trice.open_agent(loopback_config(), controlling=False, mux=mux):
                pass  # pragma: no cover

    with held_in_another_run(opener) as mux:
        trio.run(agent_run, mux)


def test_the_mux_walks_no_attributes_of_a_request_longer_than_an_agent_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Binding request longer than any agent decodes (``MAX_STUN``) is unroutable: the
    mux looks for no USERNAME in it.  It walked every attribute header, 16,000 of a 64 KiB
    request, some 200 times what routing a good check costs (the cpudos review)."""
    walked: list[bytes] = []
    monkeypatch.setattr(stun, "peek_username", lambda data: walked.append(data))
    longest = MAX_STUN
    padding = struct.pack(">HH", 0x8030, 0) * ((longest - 20) // 4 + 1)  # (empty, optional)
    big = struct.pack(">HHI", 0x0001, len(padding), 0x2112A442) + bytes(12) + padding
    assert len(big) > longest
    assert asked_ufrag(big) is None
    assert not walked
    asked_ufrag(big[: longest - 4])  # (what an agent reads: walked)
    assert walked


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_a_mux_built_directly_is_refused(kind: int) -> None:
    """Only open_udp_mux and open_tcp_mux make a mux: one built directly had no task
    reading its socket, and its agents' checks went unanswered until ICE failed (as an
    agent built directly, the typing50 review)."""
    mux = trice.UdpMux if kind == socket.SOCK_DGRAM else trice.TcpMux
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(trice.UsageError, match=r"not built directly"):
            mux(sock)
