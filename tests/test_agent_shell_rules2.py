"""More rules of the agent's trio shell (trice/_trio/_agent.py, _gather.py) that the other
agent tests did not pin (found by a mutation review; each test here kills a mutant the rest
of the suite let through): a check that a new check of its pair replaces goes no more; a
TCP connection closing fails ICE with its reason only if it is the selected pair's; the
idle TCP connections closed at completion are those of every pair not selected, whatever
transport the selected one is on; and a relay replaced at a gathering anew stays while the
pair of before goes over it.  Scripted peers (a UDP socket, test_tcp_hostile's TCP peer)
and coturn, on loopback."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from test_tcp_hostile import (  # (its fixture closes the test's peers, however a test ends)
    ACTIVE,
    PASSIVE,
    PEER_PWD,
    PEER_UFRAG,
    _answer_requests,
    _close_peers,  # noqa: F401
    _handshake,
    _passive_candidate,
    _Peer,
    _proven,
    _success,
    _transport,
    tcp_config,
)

import trice
from trice import stun
from trice._trio._relay import RelayTransport

from coturn import require_turnserver, run_coturn
from loopback import (
    answer_check,
    connect_both,
    gathered_pair,
    loopback_config,
    signal,
    until,
    wait_for_state,
)


def _host(port: int) -> trice.Candidate:
    return trice.Candidate.from_sdp(f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host")


async def _connect(agent: trice.Agent) -> None:
    """``connect``, which starts the checks; ICE failing, as it may, is no matter here."""
    with contextlib.suppress(trice.IceFailedError):
        await agent.connect()


@contextlib.asynccontextmanager
async def _same_port_sockets() -> AsyncIterator[
    tuple[trio.socket.SocketType, trio.socket.SocketType]
]:
    """A UDP socket and a listening TCP socket of the test's peer on 127.0.0.1, at the same
    port number (a few tries: the TCP port may be taken)."""
    for _ in range(20):
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await udp.bind(("127.0.0.1", 0))
            try:
                await listener.bind(udp.getsockname())
            except OSError:
                continue
            listener.listen(4)
            with udp, listener:
                yield udp, listener
            return
        finally:
            udp.close()
            listener.close()
    raise AssertionError("no port free for both UDP and TCP")


# -- checks ------------------------------------------------------------------------------------


async def test_a_check_replaced_after_a_role_switch_is_not_sent_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A controlling agent checks a scripted peer that does not answer; the peer's own
    check claims the controlling role with the highest tie-breaker, and the agent gives way
    (RFC 8445 §7.3.1.1): its check in flight claimed the role of before, so the pair is
    checked anew, and the old transaction goes no more, only the new one (mutant: the old
    check's task is not dropped, and its copies go on beside the new check's, claiming a
    role the agent no longer has)."""
    async with (
        trice.open_agent(loopback_config(), controlling=True) as a,
        trio.open_nursery() as nursery,
    ):
        await a.wait_gathering_complete()
        (local,) = a.local_candidates
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as peer:
            await peer.bind(("127.0.0.1", 0))
            nursery.start_soon(_connect, a)
            a.set_remote_parameters("peer", "p" * 22)
            a.add_remote_candidate(_host(peer.getsockname()[1]))
            a.add_remote_candidate(None)
            with trio.fail_after(5):
                first = stun.decode(await peer.recv(2048))
            assert first.get(stun.IceControlling) is not None
            check = stun.Message(
                stun.Method.BINDING,
                stun.MessageClass.REQUEST,
                attributes=[
                    stun.Username(f"{a.local_parameters.ufrag}:peer"),
                    stun.Priority(1),
                    stun.IceControlling((1 << 64) - 1),
                ],
            ).encode(integrity_key=stun.short_term_key(a.local_parameters.pwd), fingerprint=True)
            await peer.sendto(check, local.transport_address)
            new: bytes | None = None
            after_new: list[bytes] = []
            with trio.move_on_after(10):  # (virtual time: the old check's schedule and more)
                while True:
                    message = stun.decode(await peer.recv(2048))
                    if message.message_class is not stun.MessageClass.REQUEST:
                        continue
                    if new is None and message.transaction_id != first.transaction_id:
                        new = message.transaction_id
                        assert message.get(stun.IceControlled) is not None
                    elif new is not None:
                        after_new.append(message.transaction_id)
            assert not a.controlling
            assert new is not None, "the pair was not checked anew"
            assert first.transaction_id not in after_new, "the replaced check went again"
            nursery.cancel_scope.cancel()


# -- ICE-TCP connections ---------------------------------------------------------------------


async def test_another_connection_of_the_selected_pairs_candidate_closing_is_not_the_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A passive agent, connected over one connection of the test's peer, answered a check
    over a second connection to the same candidate, which then closes: the selected pair
    lives on, and when ICE fails later, the peer's consent having expired, ``connect`` and
    the connection say so, not that the selected pair's TCP connection closed (mutant: a
    closed connection of the selected pair's candidate counted as the selected pair's, its
    remote address not compared).  (Virtual time: consent's timers.)"""
    timing = trice.Timing(keepalive_interval=0.5, disconnected_timeout=1.0, failed_timeout=3.0)
    async with trice.open_agent(tcp_config(PASSIVE, timing=timing), controlling=False) as a:
        await a.wait_gathering_complete()
        address = _transport(a, PASSIVE).local_address
        first = await _Peer.connect(address)
        connection = await _handshake(a, first)
        second = await _proven(a, address)
        port = second.stream.socket.getsockname()[1]
        await second.aclose()
        await until(
            lambda: any(
                p.pair.remote.port == port and p.state is trice.PairState.FAILED
                for p in a.pair_statistics()
            )
        )
        assert a.connection_state is not trice.ConnectionState.FAILED
        with trio.fail_after(30), pytest.raises(trice.IceFailedError) as failed:
            async with a.subscribe() as events:
                await wait_for_state(events, trice.ConnectionState.FAILED)
            await a.connect()
        assert "consent expired" in str(failed.value), failed.value
        with pytest.raises(trio.BrokenResourceError, match="consent expired"):
            await connection.send(b"late")


async def test_a_pair_selected_over_udp_lets_a_tcp_connection_to_the_same_port_go() -> None:
    """A controlling agent with UDP and an active TCP candidate checks the test's peer,
    whose UDP candidate and passive TCP candidate share a port number: both pairs work,
    the UDP one is nominated, and once ICE completes, the TCP connection (idle: its pair
    not selected) is closed, though its far end's address is the selected pair's remote
    one, which is over another transport (mutant: every TCP candidate keeps the
    connection to the selected pair's remote address, whatever transport that pair is
    on)."""
    async with (
        trice.open_agent(tcp_config(ACTIVE), controlling=True) as a,
        _same_port_sockets() as (udp, listener),
        trio.open_nursery() as nursery,
    ):
        await a.wait_gathering_complete()
        port = udp.getsockname()[1]
        a.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        a.add_remote_candidate(_passive_candidate(port))
        a.add_remote_candidate(_host(port))
        a.add_remote_candidate(None)
        nursery.start_soon(_connect, a)
        with trio.fail_after(5):
            tcp = await _Peer.accept(listener)
            while True:  # (the TCP pair's check answered first: it works, and has its link)
                data = await tcp.receive()
                assert data is not None
                message = stun.decode(data)
                if message.message_class is stun.MessageClass.REQUEST:
                    await tcp.send(_success(message, tcp))
                    break
        closed = trio.Event()

        async def answer_tcp() -> None:
            await _answer_requests(tcp)
            closed.set()

        async def answer_udp() -> None:
            while True:
                data, source = await udp.recvfrom(2048)
                if stun.decode(data).message_class is stun.MessageClass.REQUEST:
                    await udp.sendto(answer_check(data, source, PEER_PWD), source)

        nursery.start_soon(answer_tcp)
        nursery.start_soon(answer_udp)
        await until(lambda: a.connection_state is trice.ConnectionState.COMPLETED, within=5)
        assert a.selected_pair is not None
        assert a.selected_pair.local.protocol == "udp"
        with trio.fail_after(5):
            await closed.wait()
        nursery.cancel_scope.cancel()


# -- gathering anew ----------------------------------------------------------------------------


async def test_a_relay_replaced_at_a_gathering_anew_stays_while_the_pair_of_before_uses_it() -> (
    None
):
    """Two agents connected through their TURN relays (over TCP); one gathers anew, and its
    relay's probe gets no answer in half the gather_timeout (as over a connection in TCP's
    backoff), so a new allocation over a new connection takes its place: the old relay,
    over which the pair of before still carries the data during the restart, stays open
    till the next gathering anew, and the data goes on (mutant: the old relay closed
    whatever pair goes over it: the connection broken until the restart's checks end).
    (The probe is the one thing stubbed: it never answers.)"""
    require_turnserver()
    with run_coturn() as coturn:
        config = loopback_config(
            ice_servers=[coturn.ice_server("tcp")],
            transport_policy=trice.TransportPolicy.RELAY,
            timing=trice.Timing(gather_timeout=2.0),
        )
        async with gathered_pair(config) as (a, b):
            signal(a, b)
            ca, cb = await connect_both(a, b)
            (old,) = a.local_candidates
            (kept,) = [t for t in a._transports.values() if isinstance(t, RelayTransport)]

            async def probe() -> bool:
                await trio.sleep_forever()
                raise AssertionError("unreachable")

            kept.probe = probe  # type: ignore[method-assign]
            a.restart(regather=True)
            b.restart()
            with trio.fail_after(5):
                await a.wait_gathering_complete()
            (new,) = a.local_candidates
            assert new.type is trice.CandidateType.RELAY and new != old
            await ca.send(b"during the restart")
            with trio.fail_after(5):
                assert await cb.receive() == b"during the restart"
            assert not kept.closed
