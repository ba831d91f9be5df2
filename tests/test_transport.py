"""Local transports: the UDP transport's send (waiting while the socket would block, and what
wakes that wait), and the in-memory pair the shell's warm-up uses."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from trice._trio._transport import MemoryTransport, UdpTransport


class _BlockedSocket:
    """A UDP socket as the transport sees it, whose sends would block until ``free`` is set.

    Its descriptor is one end of a Unix datagram pair whose peer's queue is full, so that trio
    really waits for it to become writable."""

    family = socket.AF_INET

    def __init__(self, fd_sock: socket.socket) -> None:
        self._fd_sock = fd_sock
        self.free = False
        self.sent: list[bytes] = []

    def fileno(self) -> int:
        return self._fd_sock.fileno()

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 9)

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        if not self.free:
            raise BlockingIOError
        self.sent.append(data)
        return len(data)


async def test_a_blocked_send_survives_a_nudge_and_ends_on_close() -> None:
    """``notify_closing`` nudges a receiver waiting on the socket (data came another way);
    it wakes every waiter on that socket, a sender blocked in ``wait_writable`` too.  The
    send must carry on, and fail only when the transport really closes."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setblocking(False)
        while True:  # fill b's queue: a is no longer writable
            try:
                a.send(b"x" * 512)
            except BlockingIOError:
                break
        fake = _BlockedSocket(a)
        transport = UdpTransport(0, fake)  # type: ignore[arg-type]
        outcome: list[object] = []

        async def send() -> None:
            try:
                await transport.send(b"data", ("127.0.0.1", 9))
                outcome.append("sent")
            except trio.ClosedResourceError as exc:
                outcome.append(exc)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
                trio.lowlevel.notify_closing(a)  # a nudge, as ReceiveBuffer.nudge gives
                await trio.testing.wait_all_tasks_blocked()
                assert outcome == []  # still waiting to send
                fake.free = True
                b.setblocking(False)
                while True:  # make room: a is writable again
                    try:
                        b.recv(1024)
                    except BlockingIOError:
                        break
        assert outcome == ["sent"]
        assert fake.sent == [b"data"]

        # A real close ends a blocked send with ClosedResourceError.
        fake.free = False
        while True:
            try:
                a.send(b"x" * 512)
            except BlockingIOError:
                break
        outcome.clear()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
                transport.closed = True
                trio.lowlevel.notify_closing(a)
        assert len(outcome) == 1 and isinstance(outcome[0], trio.ClosedResourceError)


@pytest.mark.parametrize("error", [BlockingIOError, InterruptedError, OSError])
def test_send_nowait_reports_a_datagram_not_taken(error: type[OSError]) -> None:
    class Refusing(_BlockedSocket):
        def sendto(self, data: bytes, address: tuple[str, int]) -> int:
            raise error

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        transport = UdpTransport(0, Refusing(s))  # type: ignore[arg-type]
        assert transport.send_nowait(b"x", ("127.0.0.1", 9)) is False


async def test_memory_transports_carry_datagrams_both_ways_and_drop_when_full() -> None:
    """A pair of in-process transports (the shell's warm-up runs agents over them): what
    one end sends, the other's reader hands on, with the sender's address; a full queue
    drops, as UDP would; after close, nothing is sent and ``send`` raises."""
    a, b = MemoryTransport.pair(0, ("192.0.2.1", 9), 1, ("192.0.2.2", 9))
    got: list[tuple[int, bytes, tuple[str, int]]] = []

    def deliver(end: MemoryTransport, data: bytes, source: tuple[str, int]) -> None:
        got.append((end.base, data, source))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run, deliver)
        nursery.start_soon(b.run, deliver)
        assert a.send_nowait(b"to b", ("192.0.2.2", 9))
        await b.send(b"to a", ("192.0.2.1", 9))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(got) == [(0, b"to a", ("192.0.2.2", 9)), (1, b"to b", ("192.0.2.1", 9))]
        nursery.cancel_scope.cancel()
    sent = [a.send_nowait(b"x", ("192.0.2.2", 9)) for _ in range(100)]  # nobody reads
    assert sent.count(True) == 64 and not any(sent[64:])
    a.close()
    b.close()
    assert not a.send_nowait(b"late", ("192.0.2.2", 9))
    with pytest.raises(trio.ClosedResourceError):
        await a.send(b"late", ("192.0.2.2", 9))
