"""Rules of the local transports (trice/_trio/_transport.py, and a UDP mux's share) that the
other transport tests did not pin (found by a mutation review): sends waiting on a socket
that closes end, ENOBUFS is a full queue and no refusal, and a one-port ephemeral range is
taken as it is.  (A waiting send asking its check before it sends, with room come, is a
case of test_transport's.)"""

from __future__ import annotations

import errno
import socket

import pytest
import trio
import trio.testing
from test_transport import _BlockedSocket, _filled_pair, _sender

from trice._trio import _mux, _transport
from trice._trio._mux import MuxTransport, UdpMux
from trice._trio._transport import UdpTransport


class _ClosableBlocked(_BlockedSocket):
    """A blocked socket (see ``_BlockedSocket``) that the transport can close."""

    def __init__(self, fd_sock: socket.socket) -> None:
        super().__init__(fd_sock)
        self.closed_at_fd = -1

    def getsockopt(self, *args: object) -> bytes:
        return bytes(9 * 4)  # (SO_MEMINFO: no drops)

    def fileno(self) -> int:
        return -1 if self.closed_at_fd == 0 else super().fileno()

    def close(self) -> None:
        self.closed_at_fd = 0


async def test_sends_waiting_their_turn_on_a_full_socket_that_closes_raise_closed() -> None:
    """Two sends wait for a full socket (one waits for it, one for its turn); the transport
    closes: both raise ClosedResourceError, and neither sends."""
    a, b = _filled_pair()
    with a, b:
        fake = _ClosableBlocked(a)
        transport = UdpTransport(0, fake)  # type: ignore[arg-type]
        outcome: list[object] = []

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sender(transport, outcome))
                nursery.start_soon(_sender(transport, outcome))
                await trio.testing.wait_all_tasks_blocked()
                fake.free = True  # (a send that still tries gets through: caught below)
                transport.close()
        assert [type(o) for o in outcome] == [trio.ClosedResourceError] * 2
        assert fake.sent == []


class _NoBuffers:
    """A mux's socket as the mux sees it, whose kernel is out of buffers (ENOBUFS)."""

    family = socket.AF_INET

    def __init__(self) -> None:
        self.tries = 0

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 9)

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.tries += 1
        raise OSError(errno.ENOBUFS, "No buffer space available")


def test_a_mux_share_out_of_buffers_says_the_datagram_was_not_taken() -> None:
    """ENOBUFS is a full queue (as a full socket buffer), not a refusal: a share's
    ``send_nowait`` says the datagram was not taken (a Connection then waits for room, or
    its ``send_nowait`` returns False), as a host socket's does."""
    sock = _NoBuffers()
    mux = UdpMux(sock, _key=_mux._OPENING)  # type: ignore[arg-type]
    refused: list[OSError] = []
    share = MuxTransport(1, mux, "aaaa", lambda *args: None)
    share.hooks.refused = lambda exc, local, address: refused.append(exc)
    assert share.send_nowait(b"\x80data", ("127.0.0.9", 5000)) is False
    assert sock.tries == 1
    assert refused == []
    assert mux._send_nowait(b"\x80data", ("127.0.0.9", 5000)) is False


def test_a_single_port_ephemeral_range_is_taken_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux takes ``ip_local_port_range`` with both ends equal (one port): the range is that
    port, not IANA's dynamic range."""
    texts = {"ip_local_port_range": b"40000\t40000\n", "ip_local_reserved_ports": b"\n"}
    monkeypatch.setattr(_transport, "_read_proc", lambda name: texts[name])
    assert _transport._ephemeral_ports() == (40000, 40000, ())
