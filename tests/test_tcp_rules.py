"""Rules of an ICE-TCP candidate's transport (trice/_trio/_tcp.py) that the other ICE-TCP
tests did not pin (found by a mutation review; each test here kills a mutant the rest of the
suite let through), driven at the transport's own level, the test's sockets standing in for
the peers: the cap of connections, a reset connection of this ICE generation or of before a
restart, the order of STUN and data on the wire, what ICE failing or restarting keeps, the
time a connection has to carry a check, the far end an accept gives, the accept loop's pause
when errors last, and what closing a candidate ends."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

import trice
from trice import stun
from trice._trio import _tcp
from trice._trio._tcp import TcpTransport
from trice._trio._transport import READ_BATCH
from trice.ice._framing import FrameReader, frame

from loopback import MostPerStep, adopted_tcp_connection, tcp_connection, tcp_transport

Address = tuple[str, int]
PASSIVE = trice.TcpType.PASSIVE
ACTIVE = trice.TcpType.ACTIVE


def _listening() -> socket.socket:
    """A non-blocking listening socket on loopback (a passive candidate's)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    return listener


def _binding_request() -> bytes:
    """A check (signed and fingerprinted: the transport knows it for STUN)."""
    message = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        attributes=[stun.Username("abcd:efgh"), stun.Priority(1)],
    )
    return message.encode(integrity_key=b"k" * 22, fingerprint=True)


def _binding_success() -> bytes:
    """An answer to a check of the agent's (the transport knows it for STUN)."""
    message = stun.Message(stun.Method.BINDING, stun.MessageClass.SUCCESS)
    return message.encode(integrity_key=b"k" * 22, fingerprint=True)


def _read_frames(far: socket.socket, *sent: bytes) -> list[bytes]:
    """The datagrams in as many bytes on the wire as ``sent`` takes, framed (whatever
    their order, or their frames' bytes mixed up)."""
    far.settimeout(5)
    reader = FrameReader()
    got: list[bytes] = []
    received = 0
    while received < sum(len(frame(datagram)) for datagram in sent):
        chunk = far.recv(65536)
        assert chunk
        received += len(chunk)
        got += reader.feed(chunk)
    return got


async def _write_once(transport: TcpTransport, link: _tcp._Link, sock: object) -> None:
    """Run the connection's writer until it has written what it can, then end it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._write_loop, link, sock)  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


# -- the cap of connections (max_links) ------------------------------------------------------


def test_at_the_cap_a_connection_a_tcp_mux_hands_over_replaces_the_oldest_unproven() -> None:
    """A passive candidate on a TCP mux at ``max_links``: a connection the mux hands over
    takes the place of the oldest one not yet proven, as its own listener's do (module docs
    of _tcp), and the one pushed out is counted refused.  (Mutant: ``adopt`` made no room,
    and refused the new one.)"""
    counters = _tcp.TcpCounters()
    transport = tcp_transport(PASSIVE, max_links=2, counters=counters)
    with socket.socket() as a, socket.socket() as b, socket.socket() as c:
        assert transport.adopt(a, ("127.0.0.1", 5001), b"")
        assert transport.adopt(b, ("127.0.0.1", 5002), b"")
        transport.prove(("127.0.0.1", 5002), answered=False)
        assert transport.adopt(c, ("127.0.0.1", 5003), b"")
        assert sorted(transport._links) == [("127.0.0.1", 5002), ("127.0.0.1", 5003)]
        assert (counters.accepted, counters.refused) == (3, 1)
        transport._links.clear()  # (never served: the test closes the sockets)


def test_an_active_candidate_opens_at_most_max_links_connections() -> None:
    """An active candidate at ``max_links`` connections opens no more: the check that would
    need another is not taken (``send_nowait`` is false).  (Mutant: ``>`` for ``>=``, one
    more opened.)"""
    transport = tcp_transport(ACTIVE, max_links=2)
    check = _binding_request()
    assert transport.send_nowait(check, ("127.0.0.1", 5001))
    assert transport.send_nowait(check, ("127.0.0.1", 5002))
    assert not transport.send_nowait(check, ("127.0.0.1", 5003))
    assert transport.links == 2
    transport._links.clear()


# -- a check into a connection the peer reset ------------------------------------------------


class _ResetSocket:
    """A connection's socket that the peer has reset: every send fails."""

    def send(self, _data: object) -> int:
        raise ConnectionResetError(104, "Connection reset by peer")

    def fileno(self) -> int:
        return -1


def _active_with_reset_link(
    failures: list[tuple[Address, bool]], *, epoch: int
) -> tuple[TcpTransport, Address]:
    """An active candidate after one ICE restart (its generation is 1), holding a proven
    connection of generation ``epoch`` that the peer has reset."""

    def failed(_transport: TcpTransport, address: Address, stale: bool) -> None:
        failures.append((address, stale))

    transport = tcp_transport(ACTIVE, failed=failed)
    transport.restarted(None)
    address = ("127.0.0.1", 5000)
    link = _tcp._Link(address, proven=True, epoch=epoch)
    link.sock = _ResetSocket()  # type: ignore[assignment]
    transport._links[address] = link
    return transport, address


def test_a_check_into_a_reset_connection_of_this_generation_fails_its_path() -> None:
    """A connection of the current ICE generation is the pair's path: when a check finds it
    reset, the agent is told (its pair fails), and no new connection opens for the check
    (module docs of _tcp: "which no check opens again").  (Mutant: the generation not
    looked at, and any reset connection reopened quietly.)"""
    failures: list[tuple[Address, bool]] = []
    transport, address = _active_with_reset_link(failures, epoch=1)
    assert not transport.send_nowait(_binding_request(), address)
    assert failures == [(address, False)]
    assert transport.links == 0


def test_a_check_into_a_reset_connection_of_before_a_restart_reopens_it_quietly() -> None:
    """A connection kept from before an ICE restart that a new check finds reset: the check
    goes over a new connection, and the agent is not told of the old one's end (it would
    send the check a second time, over the new one).  (Mutant: the agent told all the
    same, ``tell=True``.)"""
    failures: list[tuple[Address, bool]] = []
    transport, address = _active_with_reset_link(failures, epoch=0)
    assert transport.send_nowait(_binding_request(), address)
    assert failures == []
    link = transport._links[address]
    assert link.sock is None and link.epoch == 1  # (a new one, to open when the task runs)
    transport._links.clear()


# -- STUN and data on the wire ---------------------------------------------------------------


class _FullOnce:
    """A connection's socket whose send buffer is full at the first send, then has room."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.full = True

    def send(self, data: bytes) -> int:
        if self.full:
            self.full = False
            raise BlockingIOError
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()


class _PartialOnce:
    """A connection's socket that takes only 5 bytes of the first send (its buffer full
    after them), then all."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.first = True

    def send(self, data: bytes) -> int:
        if self.first:
            self.first = False
            return self.sock.send(bytes(data[:5]))
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()


async def test_a_check_goes_before_a_data_frame_of_which_nothing_was_written() -> None:
    """STUN goes first, at the next frame's start (module docs of _tcp): a data frame the
    kernel took none of has not begun, so a check queued after it is written before it.
    (Mutant: such a frame counted as begun, ``left`` set for it, and the check waited
    behind it.)"""
    transport = tcp_transport(ACTIVE)
    with tcp_connection() as (far, near):
        address = far.getsockname()[:2]
        link = _tcp._Link(address, proven=True, epoch=0)
        fake = _FullOnce(near)
        link.sock = fake  # type: ignore[assignment]
        transport._links[address] = link
        check = _binding_request()
        assert transport.send_nowait(b"d" * 1000, address)
        assert transport.send_nowait(check, address)
        await _write_once(transport, link, fake)
        assert _read_frames(far, check, b"d" * 1000) == [check, b"d" * 1000]
        transport._links.clear()


async def test_a_send_behind_the_rest_of_a_check_waits_for_it() -> None:
    """A check only part of which the kernel took: its rest waits (urgent), and what is
    sent next goes behind it, not into the middle of its frame, which would put the
    stream out of step for good.  (Mutant: a send looked only at the data waiting, not at
    the STUN, and wrote straight to the socket.)"""
    transport = tcp_transport(ACTIVE)
    with tcp_connection() as (far, near):
        address = far.getsockname()[:2]
        link = _tcp._Link(address, proven=True, epoch=0)
        fake = _PartialOnce(near)
        link.sock = fake  # type: ignore[assignment]
        transport._links[address] = link
        check = _binding_request()
        assert transport.send_nowait(check, address)
        assert transport.send_nowait(b"d" * 100, address)
        await _write_once(transport, link, fake)
        assert _read_frames(far, check, b"d" * 100) == [check, b"d" * 100]
        transport._links.clear()


def test_dropping_data_keeps_the_rest_of_a_frame_begun() -> None:
    """ICE failed (consent expired): the data waiting is dropped, all but the rest of a
    frame already begun on the wire, so that the stream stays in step for the STUN that
    follows (docs of TcpTransport.drop_data).  (Mutant: the rest went too, and the peer
    read the next frame from the middle of this one.)"""
    transport = tcp_transport(ACTIVE)
    address = ("127.0.0.1", 5000)
    link = _tcp._Link(address, proven=True, epoch=0)
    begun = frame(b"x" * 10)
    link.pending += begun[4:] + frame(b"y" * 10)
    link.left = len(begun) - 4
    transport._links[address] = link
    transport.drop_data()
    assert bytes(link.pending) == begun[4:]
    transport._links.clear()


async def test_a_peer_connections_data_waits_for_an_answer_over_it_and_keeps_its_order() -> None:
    """Over a connection a peer opened, the check that came over it is handed over, but the
    data behind it waits until the peer answers a check of the agent's over it (``prove``
    with ``answered``, as the agent does when the answer is handed over: a check accepted
    is not enough, a stranger may have copied it), and then goes, in its order, before
    what came behind the answer, in turns of ``READ_BATCH`` at most (the suspects43
    review)."""
    delivered: list[bytes] = []
    transport = tcp_transport(PASSIVE)
    check, answer = _binding_request(), _binding_success()
    held = [b"%d" % i for i in range(100)] + [b""]

    def deliver(_: object, datagram: bytes, address: Address) -> None:
        delivered.append(datagram)
        if datagram == answer:
            transport.prove(address, answered=True)

    transport._deliver = deliver
    async with adopted_tcp_connection(transport) as (far, address):
        steps = MostPerStep(transport)
        trio.lowlevel.add_instrument(steps)
        far.sendall(frame(check) + b"".join(frame(datagram) for datagram in held))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert delivered == [check]
        transport.prove(address, answered=False)  # (the check accepted)
        far.sendall(frame(answer) + frame(b"after"))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert delivered == [check, answer, *held, b"after"]
        trio.lowlevel.remove_instrument(steps)
        assert steps.most <= READ_BATCH
        far.sendall(frame(b"later"))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert delivered[-1] == b"later"


@pytest.mark.parametrize(
    ("size", "count"),
    [
        (65_000, _tcp.HOLD_LIMIT // (65_000 + _tcp.HOLD_COST)),
        (0, _tcp.HOLD_LIMIT // _tcp.HOLD_COST),
    ],
    ids=["bytes", "empty datagrams"],
)
async def test_data_held_past_its_limit_or_on_a_connection_closed_unanswered_is_counted(
    size: int, count: int
) -> None:
    """At most ``HOLD_LIMIT`` bytes wait for the answer, each datagram counting
    ``HOLD_COST`` more (an empty one is not free); one past them is dropped and counted, and
    so is what waited on a connection that closed unanswered (in
    ``unknown_source_dropped``): none of it is handed over."""
    delivered: list[bytes] = []
    counters = _tcp.TcpCounters()
    transport = tcp_transport(PASSIVE, delivered=delivered, counters=counters)
    check = _binding_request()
    async with adopted_tcp_connection(transport) as (far, address):
        far.sendall(frame(check) + b"".join(frame(bytes(size)) for _ in range(count + 1)))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        transport.prove(address, answered=False)
        assert counters.unanswered == 1  # (the one past the limit)
        transport.drop(address, transport.link_to(address))
        assert counters.unanswered == count + 1
    assert delivered == [check]


# -- connections and ICE's generations -------------------------------------------------------


def test_after_a_restart_the_connection_a_known_address_names_stays() -> None:
    """close_stale closes the connections of an earlier ICE generation, but the one to
    ``keep`` and the one to an address ``known`` names (the pair of before the restart,
    whose data still counts).  (Mutants: the known one closed too; the kept one closed
    too.)"""
    transport = tcp_transport(ACTIVE, max_links=8)
    kept, known, other, new = (("127.0.0.1", port) for port in (5001, 5002, 5003, 5004))
    for address in (kept, known, other):
        transport._links[address] = _tcp._Link(address, proven=True, epoch=0)
    transport.restarted(None)
    transport._links[new] = _tcp._Link(new, proven=True, epoch=1)
    transport.close_stale(kept, lambda address: address == known)
    assert sorted(transport._links) == [kept, known, new]
    transport._links.clear()


async def test_a_check_looking_for_its_answer_on_a_connection_still_opening_finds_none() -> None:
    """A check due again (or at its end) first reads what its connection holds
    (CheckRun._answered_meanwhile): a connection still opening (a SYN unanswered) has
    nothing yet, and nothing to read with.  (Mutant: read_waiting went on to read it, and
    the check task failed on the socket it does not have yet.)"""
    transport = tcp_transport(ACTIVE)
    address = ("127.0.0.1", 5001)
    assert transport.send_nowait(_binding_request(), address)  # (opening: no socket yet)
    await transport.read_waiting(address)
    assert transport.links == 1
    transport._links.clear()


# -- the time a connection has to carry a check ----------------------------------------------


async def test_a_connection_that_carries_no_check_is_closed_after_ten_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connection a peer opened must carry an accepted check within PROVE_WITHIN, 10 s
    (module docs of _tcp; TcpMuxStatistics: "within 10 seconds"), or it is closed and
    counted unproven.  Virtual time.  (Mutant: PROVE_WITHIN another time, 20 s.)"""
    counters = _tcp.TcpCounters()
    listener = _listening()
    transport = tcp_transport(PASSIVE, counters=counters, listener=listener)
    with socket.create_connection(listener.getsockname()):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run)
            await trio.sleep(9.9)
            assert (transport.links, counters.accepted, counters.unproven) == (1, 1, 0)
            await trio.sleep(0.2)
            assert (transport.links, counters.unproven) == (0, 1)
            transport.close()


# -- accepting connections -------------------------------------------------------------------


class _ListenerFromLinkLocal:
    """A listener whose next connection comes from a scoped (link-local) IPv6 address."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def accept(self) -> tuple[socket.socket, tuple[str, int, int, int]]:
        return self.sock, ("fe80::1%lo", 5000, 0, 1)


async def test_an_accepted_connections_far_end_has_no_zone_index() -> None:
    """accept() gives a connection's far end as an address a candidate can hold: without the
    ``%zone`` Linux adds to a scoped IPv6 source (a candidate's address has no zone index,
    see NetworkConfig.external_addresses).  (Mutant: the zone kept.)"""
    with socket.socket() as sock:
        accepted = await _tcp.accept(_ListenerFromLinkLocal(sock), "test")  # type: ignore[arg-type]
        assert accepted == (sock, ("fe80::1", 5000))


class _AbortingListener:
    """A listener whose accept() fails (a connection aborted before it was accepted) for
    ``failures`` calls, then hands over ``sock``."""

    def __init__(self, sock: socket.socket, failures: int) -> None:
        self.sock = sock
        self.failures = failures
        self.calls = 0

    def accept(self) -> tuple[socket.socket, Address]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionAbortedError(103, "Software caused connection abort")
        return self.sock, ("127.0.0.1", 5000)

    def fileno(self) -> int:
        return self.sock.fileno()


async def test_accept_errors_that_last_wait_a_little_every_64_in_a_row(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After another error, accept() tries again once the other tasks have had their turn,
    and shortly (0.1 s) after many in a row (_FAILED_IN_A_ROW, 64): an error that lasts
    does not spin the process.  Virtual time.  (Mutant: it never waited.)"""
    with socket.socket() as sock:
        listener = _AbortingListener(sock, 200)
        start = trio.current_time()
        accepted = await _tcp.accept(listener, "test")  # type: ignore[arg-type]
        assert accepted == (sock, ("127.0.0.1", 5000))
        assert listener.calls == 201
        assert trio.current_time() - start == pytest.approx(0.3)  # (after 64, 128 and 192)


async def test_a_connection_pushed_out_before_its_task_ran_delivers_nothing() -> None:
    """A TCP mux handed a connection over as the agent opened (its task not yet serving
    it), and a newer one took its place at the cap: it is closed unserved, and what the
    mux read of it is not delivered to the agent.  (Mutant: its task served it anyway.)"""
    delivered: list[bytes] = []
    transport = tcp_transport(PASSIVE, max_links=1, delivered=delivered)
    with socket.socket() as old, socket.socket() as new:
        assert transport.adopt(old, ("127.0.0.1", 5001), frame(b"old"))
        assert transport.adopt(new, ("127.0.0.1", 5002), frame(b"new"))  # (old pushed out)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run)
            await trio.testing.wait_all_tasks_blocked()
            transport.close()
        assert b"old" not in delivered
        assert old.fileno() == -1


# -- closing a candidate ---------------------------------------------------------------------


async def test_a_transport_closed_before_its_task_runs_ends_its_task_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A candidate's transport closed before its task ran (the agent left as it opened):
    the task ends at once rather than serve a closed candidate until the agent's nursery
    is cancelled.  Virtual time.  (Mutant: it slept on.)"""
    listener = _listening()
    transport = tcp_transport(PASSIVE, listener=listener)
    transport.close()
    with trio.fail_after(5):
        await transport.run()
    assert listener.fileno() == -1


async def test_closing_a_passive_candidate_closes_its_listener_at_once() -> None:
    """close() closes the listening socket itself, not only its task (which may never have
    run: an agent that failed to open after gathering): no descriptor is left behind.
    (Mutant: only the task's end closed it.)"""
    listener = _listening()
    transport = tcp_transport(PASSIVE, listener=listener)
    transport.close()
    assert listener.fileno() == -1


def test_what_a_connection_drops_unsent_is_counted_by_the_datagram() -> None:
    """``tcp_unsent`` counts datagrams (RFC 4571 frames) a connection drops unsent: at ICE
    failure, those after the rest of a frame begun, which still goes (the stream stays in
    step); when the connection ends, that rest too, as one more."""
    rest = frame(b"x" * 7)[-3:]  # (the last 3 bytes of a frame begun)
    pending = bytearray(rest + frame(b"a" * 5) + frame(b"") + frame(b"b" * 300))
    assert _tcp._frames(pending, len(rest)) == 3  # (drop_data)
    assert _tcp._frames(pending, 0, len(rest)) == 4  # (_end)
    assert _tcp._frames(bytearray(frame(b"c")), 0) == 1
    assert _tcp._frames(bytearray(), 0) == 0
