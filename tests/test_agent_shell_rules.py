"""Rules of the agent's trio shell (trice/_trio/_agent.py) that the other agent tests did not
pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through): an empty username fragment on end-of-candidates, what a restart forgets of a lost
TCP connection, the addresses a UDP mux lets go of (checks of another ufrag, ICE failed),
datagrams a UDP mux hands over as consent and as a sign of life, a consent answer past its
RTO, and the event stream and ``connect`` of an agent closed or connected."""

from __future__ import annotations

import contextlib
import dataclasses
import socket

import pytest
import trio
import trio.testing
from test_agent import _a_peer_that_stops_answering, _answer

import trice
from trice import stun
from trice._trio._tcp import TcpTransport

from loopback import (
    connect_both,
    loopback_config,
    peer_check,
    signal,
    states_so_far,
    wait_for_state,
)
from virtual_time import wall_clock_guard


def _host(port: int) -> trice.Candidate:
    return trice.Candidate.from_sdp(f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host")


def _tcp_config(kind: trice.TcpType) -> trice.AgentConfig:
    """ICE-TCP candidates of ``kind`` alone (no UDP), no pair kept waiting for more."""
    config = loopback_config(timing=trice.Timing(pac_timeout=0))
    network = dataclasses.replace(config.network, tcp_candidates=(kind,), udp=False)
    return dataclasses.replace(config, network=network)


# -- remote candidates and restarts ----------------------------------------------------------


async def test_an_empty_username_fragment_names_no_generation_for_end_of_candidates() -> None:
    """``add_remote_candidate(None, username_fragment="")``: an empty ufrag names none (the
    W3C ``usernameFragment`` browsers send as ``""``), so it is the end-of-candidates of
    the peer's generation of now, and a candidate after it is refused.  (Mutant: the empty
    ufrag kept as a name, so the end-of-candidates is another generation's.)"""
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        await a.wait_gathering_complete()
        a.set_remote_parameters("peer", "p" * 22)
        a.add_remote_candidate(_host(9))
        a.add_remote_candidate(None, username_fragment="")
        with pytest.raises(trice.StateError):
            a.add_remote_candidate(_host(10))


async def test_a_restart_forgets_that_the_selected_pairs_tcp_connection_closed() -> None:
    """ICE failed because the selected pair's TCP connection closed; the agent restarts and
    its new checks fail too (the peer signalled no candidate): ``connect`` says why they
    failed, not the TCP connection of before.  (Mutant: ``restart`` keeps
    ``_selected_lost``.)"""
    async with (
        trice.open_agent(_tcp_config(trice.TcpType.ACTIVE), controlling=True) as a,
        trice.open_agent(_tcp_config(trice.TcpType.PASSIVE), controlling=False) as b,
    ):
        with trio.fail_after(5):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
        signal(a, b)
        _ca, cb = await connect_both(a, b, within=5)
        async with a.subscribe() as events:
            (passive,) = [t for t in b._transports.values() if isinstance(t, TcpTransport)]
            far = cb.selected_pair.remote.transport_address
            passive.drop(far, passive.link_to(far))
            with trio.fail_after(5):
                await wait_for_state(events, trice.ConnectionState.FAILED)
        with pytest.raises(trice.IceFailedError, match="TCP connection closed"):
            await a.connect()
        a.restart()
        a.set_remote_parameters("newpeer", "q" * 22)
        a.add_remote_candidate(None)
        with trio.fail_after(5), pytest.raises(trice.IceFailedError) as failed:
            await a.connect()
        assert "TCP connection closed" not in str(failed.value), failed.value


# -- the addresses a UDP mux holds for the agent ---------------------------------------------


async def test_a_mux_lets_go_of_an_address_an_early_check_of_another_ufrag_claimed() -> None:
    """An agent on a UDP mux answers a check that came before the peer's parameters, naming
    a ufrag the parameters then do not: what the check taught goes (``prflx_dropped``), and
    the mux lets go of the address its answer claimed for the agent (it may be another
    agent's peer).  (Mutant: ``set_remote_parameters`` never tells the muxes to let go.)"""
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as a,
    ):
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            peer = trio.socket.from_stdlib_socket(sock)
            await peer.sendto(peer_check(a, "wrong"), mux.local_address)
            with trio.fail_after(5):
                await peer.recv(2048)  # (its answer)
                await trio.testing.wait_all_tasks_blocked(0.01)
            assert mux.statistics().addresses == 1
            a.set_remote_parameters("right", "r" * 22)
            assert a.statistics().prflx_dropped == 1
            assert mux.statistics().addresses == 0


async def test_a_mux_agent_whose_ice_failed_lets_go_of_its_peers_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An agent on a UDP mux whose peer fell silent: once consent expires (ICE failed), the
    mux routes the peer's address to it no more (a peer that comes back there may be
    another agent's).  (Mutant: ICE failing releases no mux address.)"""
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=True, mux=mux) as a,
        a.subscribe() as events,
    ):
        async with trice.open_agent(loopback_config(), controlling=False) as b:
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            await connect_both(a, b)
            assert mux.statistics().addresses == 1
        with trio.fail_after(a.config.timing.failed_timeout + 10):
            await wait_for_state(events, trice.ConnectionState.FAILED)
        assert mux.statistics().addresses == 0


# -- datagrams a UDP mux hands over (``_dispatch``) ------------------------------------------


async def test_a_lite_agent_on_a_mux_keeps_consent_by_data_over_the_selected_pair(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ICE-lite agent on a UDP mux (its datagrams handed over by ``_dispatch``, not read
    by its own receive loop) whose full peer sends data every 0.2 s and no consent check
    (its keepalive interval is long): the data over the selected pair is the lite agent's
    consent, which never lapses (no ``disconnected``, no ``failed``).  (Mutant:
    ``_dispatch`` does not count the lite source's data.)"""
    full = trice.Timing(keepalive_interval=30, disconnected_timeout=20, failed_timeout=30)
    lite = trice.Timing(keepalive_interval=0.3, disconnected_timeout=0.6, failed_timeout=1.0)
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(timing=full), controlling=True) as a,
        trice.open_agent(loopback_config(lite=True, timing=lite), controlling=False, mux=mux) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        ca, _cb = await connect_both(a, b)
        async with b.subscribe() as events:
            states_so_far(events)
            for i in range(20):
                await ca.send(b"%d" % i)
                await trio.sleep(0.2)  # (virtual time: the pace of the data is the test)
            seen = states_so_far(events)
        assert trice.ConnectionState.DISCONNECTED not in seen, seen
        assert trice.ConnectionState.FAILED not in seen, seen
        assert b._lite_data >= 20


async def test_a_mux_agent_whose_peer_went_quiet_is_connected_again_at_its_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An agent on a UDP mux (its datagrams handed over by ``_dispatch``) is disconnected,
    its peer silent; a datagram from the peer's address comes: connected again at once, not
    at the agent's next timer (its consent check, within a second).  (Mutant:
    ``_dispatch`` does not resume a disconnected agent.)"""
    timing = trice.Timing(keepalive_interval=1.0, disconnected_timeout=2.0, failed_timeout=60.0)
    async with (
        trice.open_udp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(timing=timing), controlling=True, mux=mux) as a,
        a.subscribe() as stream,
    ):
        async with trice.open_agent(loopback_config(timing=timing), controlling=False) as b:
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            ca, _cb = await connect_both(a, b)
            pair = ca.selected_pair
        with trio.fail_after(10):
            await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)
        await trio.sleep(0.3)  # (virtual time: between two of its timers)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as back:
            back.bind(pair.remote.transport_address)
            back.sendto(b"\x80I am back", pair.local.transport_address)
        sent_at = trio.current_time()
        with trio.fail_after(10):
            await wait_for_state(stream, trice.ConnectionState.CONNECTED)
        assert trio.current_time() - sent_at < 0.01  # (virtual time)


# -- consent -----------------------------------------------------------------------------------


async def test_a_late_consent_answer_brings_a_disconnected_agent_back_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The peer stopped answering, and ``a`` is disconnected; then it answers a consent
    check after the check's RTO (the check gave up; ``AgentCore.on_late_response`` counts
    it, RFC 7675 §5.1): ``a`` is connected again at once, not at its next timer.  (Mutant:
    the late answer counted, but the agent not pumped.)"""
    timing = trice.Timing(
        rto=0.1, keepalive_interval=0.2, disconnected_timeout=1.0, failed_timeout=6.0
    )
    with wall_clock_guard():
        async with _a_peer_that_stops_answering(timing) as (_a, peer, stream, _address):
            with trio.fail_after(5):
                await wait_for_state(stream, trice.ConnectionState.DISCONNECTED)
            with contextlib.suppress(BlockingIOError):
                while True:
                    peer.recv(2048)  # (the checks before)
            await trio.lowlevel.wait_readable(peer)
            data, source = peer.recvfrom(2048)
            await trio.sleep(1.5 * timing.rto)  # (virtual time: the check has given up)
            peer.sendto(_answer(stun.decode(data), source), source)
            sent_at = trio.current_time()
            with trio.fail_after(5):
                await wait_for_state(stream, trice.ConnectionState.CONNECTED)
            assert trio.current_time() - sent_at < 0.01  # (virtual time)


# -- the event stream and ``connect`` ----------------------------------------------------------


async def test_a_stream_subscribed_after_close_ends_after_the_history() -> None:
    """``subscribe()`` on a closed agent gives its history, then the end: reading it past
    that ends at once (it does not wait for events that never come).  (Mutant: a stream
    subscribed after close is not ended.)"""
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        await a.wait_gathering_complete()
    stream = a.subscribe()
    seen: list[trice.Event] = []
    with trio.fail_after(1):
        async for event in stream:
            seen.append(event)
    assert trice.GatheringStateChanged(trice.GatheringState.COMPLETE) in seen


async def test_connect_once_connected_is_still_a_checkpoint() -> None:
    """``connect()`` after a pair is selected returns the connection at once, but as every
    trio operation, it is a checkpoint (a loop of it does not starve other tasks, and a
    cancelled scope is noticed).  (Mutant: no checkpoint when it need not wait.)"""
    async with (
        trice.open_agent(loopback_config(), controlling=True) as a,
        trice.open_agent(loopback_config(), controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        signal(a, b)
        ca, _cb = await connect_both(a, b)
        with trio.testing.assert_checkpoints():
            assert await a.connect() is ca
