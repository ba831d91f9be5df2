"""Rules of the ICE-TCP hold and its counters (trice/_trio/_tcp.py, _checks.py), and of
``AgentCore._local_for_mapped``, that the rest of the suite let through (the mutants11
review, of the changes since f4227bc): each test kills a mutant, named in its docstring.
The TCP ones are driven at the transport's own level, the test's sockets standing in for
the peer, as in test_tcp_rules."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from test_tcp_rules import _binding_request, _binding_success

import trice
from trice import stun
from trice._trio import _tcp
from trice._trio._checks import _names_this_end
from trice.ice._checklist import Pair, compute_pair_priority
from trice.ice._framing import frame
from trice.ice._gathering import prflx_candidate, relay_candidate, tcp_host_candidate

from core_harness import make_candidate, two_agents
from loopback import adopted_tcp_connection, tcp_connection, tcp_transport

Address = tuple[str, int]
PASSIVE = trice.TcpType.PASSIVE
ACTIVE = trice.TcpType.ACTIVE
MAGIC = b"\x21\x12\xa4\x42"


def _answering_transport(
    delivered: list[bytes], answer: bytes, counters: _tcp.TcpCounters | None = None
) -> _tcp.TcpTransport:
    """A passive candidate's transport whose agent, handed ``answer``, takes it for the
    peer's answer naming this end (``prove`` with ``answered``, as CheckRun does)."""
    transport = tcp_transport(PASSIVE, counters=counters)

    def deliver(_: object, datagram: bytes, address: Address) -> None:
        delivered.append(datagram)
        if datagram == answer:
            transport.prove(address, answered=True)

    transport._deliver = deliver
    return transport


# -- the hold's bound, as documented ---------------------------------------------------------


async def test_the_hold_is_256_kib_each_datagram_counting_64_bytes_more() -> None:
    """The ICE-TCP guide: "At most 256 KiB are held a connection, each datagram counting 64
    bytes more than its length".  4096 empty datagrams fill it exactly, the 4097th is
    dropped and counted.  (Mutants: HOLD_COST 63, HOLD_LIMIT changed: test_tcp_rules
    reckons its counts from the constants, and follows them.)"""
    delivered: list[bytes] = []
    counters = _tcp.TcpCounters()
    transport = tcp_transport(PASSIVE, delivered=delivered, counters=counters)
    fit = 256 * 1024 // 64
    async with adopted_tcp_connection(transport) as (far, address):
        far.sendall(frame(_binding_request()) + frame(b"") * (fit + 1))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        link = transport.link_to(address)
        assert link is not None and link.held is not None
        assert (len(link.held), counters.unanswered) == (fit, 1)


# -- what the hold takes for STUN ------------------------------------------------------------


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x41\x01\x00\x0c" + MAGIC + bytes(12),  # (the magic cookie, but not STUN's first byte)
        b"\x20\x01\x00\x0c" + MAGIC + bytes(12),  # (RFC 7983: 20-63 is DTLS, not STUN)
        b"\x01\x01\x00\x0c" + b"ABCD" + bytes(12),  # (STUN's first byte, no magic cookie)
    ],
    ids=["cookie-high-byte", "cookie-dtls-byte", "no-cookie"],
)
async def test_data_that_looks_like_stun_in_part_only_is_held(datagram: bytes) -> None:
    """Over a connection no answer proved, only STUN (a first byte of 0-3 and the magic
    cookie, as ``stun.is_stun`` and the agent tell it) passes the hold; data that has one
    of the two is held like any, then handed over in its place once the answer comes.
    (Mutants: the first byte not looked at, or ``< 0x40`` for ``< 4``: such data reached
    the agent, which takes it for data, unanswered.)"""
    delivered: list[bytes] = []
    check, answer = _binding_request(), _binding_success()
    transport = _answering_transport(delivered, answer)
    async with adopted_tcp_connection(transport) as (far, address):
        far.sendall(frame(check) + frame(datagram) + frame(b"plain"))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert delivered == [check], "data handed over unanswered"
        transport.prove(address, answered=False)  # (the check accepted)
        far.sendall(frame(answer))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert delivered == [check, answer, datagram, b"plain"]


# -- the answer releases what was held, at once ----------------------------------------------


async def test_held_data_goes_when_the_answer_is_the_last_datagram_read() -> None:
    """The answer comes alone (the peer sends nothing after it, waiting for the agent): the
    data held before it goes at once, not when the peer sends again.  (Mutant: the branch
    that releases it right after the answer removed; it went only with the next datagram,
    which may never come.)"""
    delivered: list[bytes] = []
    check, answer = _binding_request(), _binding_success()
    data = [b"%02d" % i for i in range(10)]
    transport = _answering_transport(delivered, answer)
    async with adopted_tcp_connection(transport) as (far, address):
        far.sendall(frame(check) + b"".join(frame(d) for d in data))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        transport.prove(address, answered=False)
        far.sendall(frame(answer))
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert delivered == [check, answer, *data]


async def test_a_check_reading_the_answer_past_a_turn_hands_over_what_was_held() -> None:
    """A check about to be given up reads its connection (``read_waiting``, as
    ``CheckRun._answered_meanwhile`` does): 100 held datagrams, then the answer, in one
    read, past a turn's budget.  The answer releases the held data, which goes now too (the
    reader waits for the socket, which holds nothing more).  (Mutant: read_waiting took
    the backlog once, leaving what the answer released in ``link.backlog`` until the peer
    sent again.)"""
    delivered: list[bytes] = []
    answer = _binding_success()
    data = [b"%03d" % i for i in range(100)]
    transport = _answering_transport(delivered, answer)
    async with adopted_tcp_connection(transport) as (far, address):
        transport.prove(address, answered=False)  # (a check accepted over it)
        await trio.testing.wait_all_tasks_blocked()  # (the reader waits for the socket)
        far.sendall(b"".join(frame(d) for d in data) + frame(answer))
        await transport.read_waiting(address)  # (as a check task, with no checkpoint before)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert delivered == [answer, *data]


# -- the cap: which connection gives way -----------------------------------------------------


def test_at_the_cap_an_answered_connection_stays_answered_after_a_check_accepted() -> None:
    """A connection the peer answered over, then a check of the peer's accepted over it
    (``prove`` with ``answered`` false: a consent check, say), is still answered: at the
    cap, the one the peer answered nothing over gives way, and is counted refused (tcp_refused:
    closed at the cap).  (Mutants: ``prove`` set ``answered`` anew, not once for all, and
    the peer's connection gave way; the count skipped.)"""
    counters = _tcp.TcpCounters()
    transport = tcp_transport(PASSIVE, max_links=2, counters=counters)
    peer, stranger = ("127.0.0.1", 5001), ("127.0.0.1", 5002)
    with socket.socket() as a, socket.socket() as b, socket.socket() as c:
        assert transport.adopt(a, peer, b"")
        transport.prove(peer, answered=True)
        transport.prove(peer, answered=False)
        assert transport.adopt(b, stranger, b"")
        transport.prove(stranger, answered=False)
        assert transport.adopt(c, ("127.0.0.1", 5003), b"")
        assert sorted(transport._links) == [peer, ("127.0.0.1", 5003)]
        assert (counters.accepted, counters.refused) == (3, 1)
        transport._links.clear()  # (never served: the test closes the sockets)


# -- tcp_unsent ------------------------------------------------------------------------------


def test_what_a_connection_ending_had_queued_is_counted_unsent() -> None:
    """A connection that ends (its pair failed, the peer closed it) drops what it had queued
    to write, all of it, the rest of a frame begun counting as one: each is counted in
    ``tcp_unsent``.  (Mutants: ``_end`` counted nothing, or not the rest begun; only
    ``drop_data``, at ICE failure, was tested.)"""
    counters = _tcp.TcpCounters()
    transport = tcp_transport(ACTIVE, counters=counters)
    address = ("127.0.0.1", 5000)
    link = _tcp._Link(address, proven=True, epoch=0)
    begun = frame(b"x" * 10)
    link.pending += begun[4:] + frame(b"y" * 10) + frame(b"")
    link.left = len(begun) - 4
    transport._links[address] = link
    transport.drop(address, link, tell=False)
    assert counters.unsent == 3
    assert not transport._links


def test_a_trailing_empty_frame_counts_as_a_datagram_unsent() -> None:
    """An empty datagram is a frame of its two length bytes: the last in the queue counts
    too.  (Mutant: ``at + 2 < end``, the last frame if empty not counted.)"""
    assert _tcp._frames(bytearray(frame(b"")), 0) == 1
    assert _tcp._frames(bytearray(frame(b"a") + frame(b"")), 0) == 2


# -- a connection closed mid-read ------------------------------------------------------------


async def test_a_connection_the_agent_closes_over_a_check_hands_over_nothing_after_it() -> None:
    """The agent closes a connection (no room for the pair its check asks, say) while
    handling a check that came over it, and the socket holds more: nothing after the check
    is handed over (the connection ended unanswered: a stranger's, maybe), and what was
    held is counted.  (Mutant: ``_hand_over`` said the link was still open; the read went
    on, and, the hold let go with the link, handed the next datagram over as data.)"""
    delivered: list[bytes] = []
    counters = _tcp.TcpCounters()
    transport = tcp_transport(PASSIVE, counters=counters)
    check = _binding_request()

    def deliver(_: object, datagram: bytes, address: Address) -> None:
        delivered.append(datagram)
        if datagram == check:
            transport.drop(address, transport.link_to(address))

    transport._deliver = deliver
    with tcp_connection() as (far, near):
        address = far.getsockname()[:2]
        far.sendall(frame(b"data behind the check"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run)
            await trio.testing.wait_all_tasks_blocked()
            # (What a TCP mux read of it: data, held, then the check.)
            assert transport.adopt(near, address, frame(b"held") + frame(check))
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            transport.close()
    assert delivered == [check], delivered
    assert counters.unanswered == 1  # (what was held)


# -- which answer names this end of the connection (CheckRun) --------------------------------


def _answer(mapped: tuple[str, int] | None) -> stun.Message:
    attributes: list[stun.Attribute] = []
    if mapped is not None:
        attributes.append(stun.XorMappedAddress(*mapped))
    return stun.Message(stun.Method.BINDING, stun.MessageClass.SUCCESS, attributes=attributes)


def test_an_answer_names_this_end_by_the_sockets_address_or_a_candidate_of_its_own() -> None:
    """``_names_this_end``: the connection's own address (the listener's, which the core
    may know under a 1:1 NAT's public address only, in the host candidate's place), or a
    TCP candidate of this base other than a peer-reflexive one.  Not an answer without
    XOR-MAPPED-ADDRESS, nor one naming a candidate of another base.  (Mutants: no mapped
    address taken for this end; the socket's own address not looked at; the base not
    compared.)"""
    base, other_base = 5, 6
    private, public = ("10.0.0.1", 7000), ("203.0.113.5", 7000)
    mine = tcp_host_candidate(public, PASSIVE, 0)  # (the public address in the host's place)
    another = tcp_host_candidate(("10.0.0.2", 7002), PASSIVE, 0)
    learned = prflx_candidate(
        ("198.51.100.9", 4000),
        learned_from=private[0],
        component=1,
        priority=1,
        related=private,
        tcp_type=PASSIVE,
    )
    agent = SimpleNamespace(
        _core=SimpleNamespace(
            local_candidates=[(mine, base), (another, other_base), (learned, base)]
        )
    )
    transport = SimpleNamespace(local_address=private, base=base)

    def names(mapped: tuple[str, int] | None) -> bool:
        return _names_this_end(agent, transport, _answer(mapped))  # type: ignore[arg-type]

    assert names(private)
    assert names(public)
    assert not names(None)
    assert not names(("10.0.0.2", 7002))  # (another base's)
    assert not names(("198.51.100.9", 4000))  # (peer-reflexive)
    assert not names(("192.0.2.1", 7000))


# -- a mapped address that names a relay and another socket's candidate (AgentCore) ----------


@pytest.mark.parametrize("relay_first", [True, False])
def test_a_mapped_address_at_a_relay_is_a_lie_though_another_socket_has_it_too(
    relay_first: bool,
) -> None:
    """``_local_for_mapped``: the answer to a direct check names an address that is both a
    relayed candidate's and another socket's (a 1:1 NAT's public address in its host
    candidate's place), not the check's own socket's: the relay rule calls it a lie, and
    the pair keeps its local candidate, whichever was gathered first (as before 14241df,
    which only let the base's own candidate, found later, win).  (Mutant: ``found`` tried
    before ``lie``, the other socket's candidate taken.)"""
    _, a, b = two_agents(want=False)
    host = make_candidate("10.0.0.1", 50000)
    public = ("198.51.100.1", 50000)
    relay = relay_candidate(public, public, "turn:3478")
    other = make_candidate(*public, local_pref=65534)  # (another socket's, its host's place)
    a.core.add_local_candidate(host, 10)
    for candidate, base in [(relay, 11), (other, 12)][:: 1 if relay_first else -1]:
        a.core.add_local_candidate(candidate, base)
    remote = b.signalled[0]
    direct = Pair(host, remote, 10, compute_pair_priority(host, remote, True))
    assert a.core._local_for_mapped(direct, public) is host
