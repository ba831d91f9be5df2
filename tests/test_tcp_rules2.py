"""More ICE-TCP rules that the other ICE-TCP tests did not pin (found by a mutation review;
each test here kills a mutant the rest of the suite let through): what the core forgets of
a connection's far end when the connection closes, and how the transport tells that the
peer is gone from a connection (which lets a reconnect from the same port take its place).
Loopback only."""

from __future__ import annotations

import socket
import struct

import pytest
from test_core import binding_request
from test_tcp_core import PASSIVE, PRFLX, _core

from trice._trio._tcp import _peer_gone

from loopback import tcp_connection

# -- the core: a closed connection's far end (path_lost) --------------------------------------


def test_a_learned_passive_far_end_stays_when_our_connection_to_it_closes() -> None:
    """An active candidate's connection (to a listener the peer did not signal: behind a
    NAT, say) carries the peer's check, which teaches the listener's address as a
    peer-reflexive candidate of tcptype passive.  When that connection closes
    (``path_lost``), the far end stays known: it is a listener, and this agent may connect
    to it again (only a learned active far end, whose port no connection comes from
    again, goes).  (Mutant: ``remote.tcp_type is TcpType.ACTIVE`` dropped in
    ``path_lost``, and the listener was forgotten.)"""
    core = _core()
    listener = ("10.0.0.7", 7000)
    request = binding_request(core, controlling=False, priority=1111)
    assert core.on_request(1, listener, request, 0.0) is not None
    learned = [c for c in core.remote_candidates if c.transport_address == listener]
    assert [(c.type, c.tcp_type) for c in learned] == [(PRFLX, PASSIVE)]
    core.path_lost(1, listener, 0.1)
    assert core.is_remote_address(listener, tcp=True)


# -- the transport: a connection whose peer is gone (_peer_gone) ------------------------------


@pytest.mark.parametrize("how", ["reset", "close"])
def test_a_connection_whose_peer_closed_its_end_is_gone(how: str) -> None:
    """``_peer_gone`` (which lets a reconnect from the same port take the place of the
    connection of before, see ``TcpTransport._end_if_reset``) says a connection is gone
    whether the peer reset it or closed its end (a FIN: the agent's end in CLOSE_WAIT),
    with what it sent before read or not, as its docstring says; and not while it is
    open.  (Mutant: ``_TCP_GONE`` without CLOSE_WAIT, 8, took a closed one for open.)"""
    with tcp_connection() as (far, near):
        far.sendall(b"\x00\x01x")  # (unread data: the end comes after it)
        assert not _peer_gone(near)
        if how == "reset":
            far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        far.close()
        assert _peer_gone(near)
