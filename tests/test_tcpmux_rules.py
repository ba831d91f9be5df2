"""Rules of the TCP mux (trice/_trio/_tcpmux.py) that the other TCP mux tests did not pin
(found by a mutation review; each test here kills a mutant the rest of the suite let
through): which waiting connection gives its place at MAX_WAITING, which first frame is
routed, a listener the system shut down, and a connection reset before its first frame.
Loopback only; the test's own sockets stand in for the peers."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct

import pytest
import trio
from tcp_peer import FramedPeer

import trice
from trice import stun
from trice._trio import _tcpmux
from trice.ice._framing import frame

from loopback import loopback_config, peer_check, until

PEER_UFRAG, PEER_PWD = "peer", "p" * 22


# -- which waiting connection gives its place ------------------------------------------------


async def test_at_max_waiting_a_source_holding_fewer_keeps_its_older_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At MAX_WAITING the oldest waiting connection *of the source that holds the most*
    gives its place (docs of MAX_WAITING): a peer's one connection, older than a stranger's
    two, stays when the stranger opens a third.  (Mutant: the oldest of any source went,
    the peer's.)"""
    monkeypatch.setattr(_tcpmux, "MAX_WAITING", 3)
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
        contextlib.AsyncExitStack() as stack,
    ):
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        peer = await FramedPeer.connect(mux.local_address, source="127.0.0.5")
        stack.push_async_callback(peer.aclose)
        await until(lambda: mux.statistics().waiting == 1)
        for waiting in (2, 3):
            stranger = await FramedPeer.connect(mux.local_address, source="127.0.0.9")
            stack.push_async_callback(stranger.aclose)
            await until(lambda: mux.statistics().waiting == waiting)  # noqa: B023
        stranger = await FramedPeer.connect(mux.local_address, source="127.0.0.9")
        stack.push_async_callback(stranger.aclose)
        await until(lambda: mux.statistics().unroutable == 1)
        check = peer_check(agent, PEER_UFRAG, priority=1_845_000_000, controlling=True)
        await peer.send_raw(frame(check))
        with trio.fail_after(2):
            answer = await peer.receive()
        assert answer is not None, "the peer's older connection was pushed out"
        assert stun.decode(answer).message_class is stun.MessageClass.SUCCESS


# -- which first frame is routed -------------------------------------------------------------


async def test_a_first_frame_that_is_no_binding_request_is_not_routed() -> None:
    """The mux hands a connection to an agent only for a Binding request (RFC 6544: the
    active side's first check; docs of TcpMuxStatistics.unroutable): a Binding indication
    signed with the agent's password and naming its ufrag is closed, counted unroutable,
    and holds none of the agent's places.  (Mutant: any STUN message naming the ufrag was
    routed.)"""
    async with (
        trice.open_tcp_mux("127.0.0.1") as mux,
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as agent,
    ):
        await agent.wait_gathering_complete()
        agent.set_remote_parameters(PEER_UFRAG, PEER_PWD)
        params = agent.local_parameters
        indication = stun.Message(
            stun.Method.BINDING,
            stun.MessageClass.INDICATION,
            attributes=[stun.Username(f"{params.ufrag}:{PEER_UFRAG}")],
        ).encode(integrity_key=stun.short_term_key(params.pwd), fingerprint=True)
        peer = await FramedPeer.connect(mux.local_address)
        try:
            await peer.send_raw(frame(indication))
            with trio.fail_after(2):
                assert await peer.receive() is None  # (closed)
            stats = mux.statistics()
            assert (stats.routed, stats.unroutable) == (0, 1)
        finally:
            await peer.aclose()


# -- a listener the system shut down ---------------------------------------------------------


async def test_an_agent_cannot_attach_to_a_tcp_mux_whose_listener_the_system_shut_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The system shut the mux's listening socket down (accept says EINVAL, as after
    SOCK_DESTROY): the mux listens no more (warned), and an agent opened on it is refused
    with a UsageError that says so (TcpMux._attach), rather than signalling a passive
    candidate no peer can reach.  (Mutant: the mux never noted it.)"""
    caplog.set_level(logging.WARNING, logger="trice")
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        mux.sock.shutdown(socket.SHUT_RD)  # (Linux: the listener's accept() now says EINVAL)
        await until(lambda: "listens no more" in caplog.text)
        with pytest.raises(trice.UsageError, match="listens no more"):
            async with trice.open_agent(loopback_config(), controlling=False, mux=mux):
                pass


# -- a connection reset before its first frame ----------------------------------------------


async def test_a_connection_reset_before_its_first_frame_is_counted_unroutable() -> None:
    """A connection the peer resets while the mux waits for its first frame: closed, and
    counted (TcpMuxStatistics.unroutable), as every connection the mux accepted is either
    routed or unroutable.  (Mutant: a reset went uncounted.)"""
    async with trice.open_tcp_mux("127.0.0.1") as mux:
        with socket.create_connection(mux.local_address) as sock:
            await until(lambda: mux.statistics().waiting == 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # (closed with SO_LINGER 0: a reset)
        await until(lambda: mux.statistics().waiting == 0)
        stats = mux.statistics()
        assert (stats.routed, stats.unroutable) == (0, 1)
