"""More rules of the UDP mux (trice/_trio/_mux.py) that the other mux tests did not pin
(found by a mutation review; each test here kills a mutant the rest of the suite let
through), driven at the mux's own level as test_mux_rules does, loopback only: data an
agent sends by the waiting ``send`` to an address another agent proved is withheld, as by
``send_nowait``."""

from __future__ import annotations

import socket

import trio
from test_mux_rules import _checked, _Share

from trice._trio import _mux
from trice._trio._mux import UdpMux

# -- data to another agent's proven address ----------------------------------------------------


async def test_data_sent_by_the_waiting_send_to_another_agents_proven_address_is_withheld() -> None:
    """a proves its peer's address P (a round trip); b's agent then sends data there by the
    waiting ``send`` (the one a full socket buffer goes by): it is withheld and counted, as
    by ``send_nowait`` (P would take it for a's: it comes from the mux's address), and P
    receives nothing.  (Mutant: ``send`` ignoring ``_claim``'s verdict, and sending it.)"""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        address = peer.getsockname()
        mux = UdpMux(sock, _key=_mux._OPENING)
        a, b = _Share(mux, "aaaa"), _Share(mux, "bbbb")
        _checked(mux, a, address)
        await b.share.send(b"\x80for b's peer", address)
        assert mux.statistics().withheld == 1
        await trio.lowlevel.checkpoint()
        try:
            got = peer.recv(2048)
        except BlockingIOError:
            got = None
        assert got is None
