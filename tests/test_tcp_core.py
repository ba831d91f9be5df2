"""ICE-TCP (RFC 6544) in the pure core: framing (RFC 4571), priorities, TCP host and
peer-reflexive candidates, which tcptypes pair, and two cores checking over TCP in virtual
time (``core_harness.py``).  No sockets, no trio."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_core import FAST, _refusal, _reply, binding_request

import trice
from trice import stun
from trice.ice import Candidate, CandidateType, TcpType, candidate_priority, local_preference
from trice.ice._check import prflx_foundation
from trice.ice._checklist import CheckList, Pair, PairState
from trice.ice._core import TCP_KEY, AgentCore, IceParameters, remote_key
from trice.ice._framing import MAX_FRAME, FrameReader, frame
from trice.ice._gathering import (
    ACTIVE_PORT,
    host_candidate,
    prflx_candidate,
    srflx_candidate,
    tcp_host_candidate,
)
from trice.ice._priority import tcp_local_preference

from core_harness import Address, Endpoint, Network, connected, event_order_problems, two_agents

HOST, SRFLX, PRFLX, RELAY = (
    CandidateType.HOST,
    CandidateType.SRFLX,
    CandidateType.PRFLX,
    CandidateType.RELAY,
)
ACTIVE, PASSIVE, SO = TcpType.ACTIVE, TcpType.PASSIVE, TcpType.SO


# -- framing (RFC 4571 §2) ------------------------------------------------------------------------


def _framed_size(datagrams: list[bytes]) -> int:
    return sum(2 + len(d) for d in datagrams)


@given(
    st.lists(st.binary(min_size=0, max_size=2000), max_size=8),
    st.lists(st.integers(min_value=0, max_value=20_000), max_size=12),
)
def test_any_split_of_a_stream_of_frames_gives_its_datagrams_in_order(
    datagrams: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frame(d) for d in datagrams)
    assert len(stream) == _framed_size(datagrams)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    reader = FrameReader()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += reader.feed(memoryview(stream)[start:end])
        # Whatever is complete comes out at once; only the rest of a frame waits.
        assert reader.pending == end - _framed_size(out)
    assert out == datagrams
    assert reader.pending == 0


@given(
    st.lists(st.binary(max_size=300), max_size=4),
    st.binary(max_size=2000),
    st.data(),
)
def test_a_partial_frame_waits_with_the_bytes_fed_of_it(
    datagrams: list[bytes], last: bytes, data: st.DataObject
) -> None:
    whole = frame(last)
    fed = data.draw(st.integers(min_value=1, max_value=len(whole) - 1), label="fed")
    reader = FrameReader()
    out = reader.feed(b"".join(frame(d) for d in datagrams) + whole[:fed])
    assert out == datagrams
    assert reader.pending == fed
    assert reader.feed(whole[fed:]) == [last]
    assert reader.pending == 0


def test_frame_is_a_big_endian_length_then_the_datagram() -> None:
    assert frame(b"") == b"\x00\x00"
    assert frame(bytearray(b"\x01\x02\x03")) == b"\x00\x03\x01\x02\x03"
    assert frame(memoryview(bytes(258))) == b"\x01\x02" + bytes(258)


def test_a_frame_carries_at_most_65535_bytes() -> None:
    largest = bytes(range(256)) * 255 + bytes(255)
    assert len(largest) == MAX_FRAME == 65535
    framed = frame(largest)
    assert framed[:2] == b"\xff\xff" and len(framed) == 65537
    reader = FrameReader()
    assert reader.feed(framed[:40000]) == []
    assert reader.pending == 40000
    assert reader.feed(framed[40000:] + frame(b"x")) == [largest, b"x"]
    assert reader.pending == 0
    with pytest.raises(trice.UsageError):
        frame(bytes(65536))


# -- priorities and candidates (RFC 6544 §4.2, §4.5) ----------------------------------------------


@pytest.mark.parametrize(
    ("type", "tcp_type", "direction"),
    [
        (HOST, ACTIVE, 6),
        (HOST, PASSIVE, 4),
        (HOST, SO, 2),
        (RELAY, ACTIVE, 6),
        (RELAY, PASSIVE, 4),
        (RELAY, SO, 2),
        (SRFLX, SO, 6),
        (SRFLX, ACTIVE, 4),
        (SRFLX, PASSIVE, 2),
        (PRFLX, SO, 6),
        (PRFLX, ACTIVE, 4),
        (PRFLX, PASSIVE, 2),
    ],
)
@pytest.mark.parametrize("other", [0, 1, 4321, 8191])
def test_tcp_local_preference(
    type: CandidateType, tcp_type: TcpType, direction: int, other: int
) -> None:
    assert tcp_local_preference(type, tcp_type, other) == direction * 2**13 + other


@pytest.mark.parametrize("other", [-1, 8192, 65535])
def test_tcp_local_preference_out_of_range(other: int) -> None:
    with pytest.raises(trice.CandidateError):
        tcp_local_preference(HOST, ACTIVE, other)


def test_tcp_local_preference_needs_a_tcp_type() -> None:
    with pytest.raises(trice.CandidateError):
        tcp_local_preference(HOST, None, 8191)  # type: ignore[arg-type]


def _other_preference(address: str, rank: int) -> int:
    """The 13 bits that rank an address among a host's TCP candidates (``host_candidate``'s
    16-bit local preference for it, cut to 13)."""
    return local_preference(address, interface_preference=255 - rank) >> 3


@pytest.mark.parametrize(
    ("address", "rank"), [("10.0.0.1", 0), ("2001:db8::1", 0), ("10.0.0.1", 3)]
)
def test_tcp_host_candidates(address: str, rank: int) -> None:
    udp = host_candidate((address, 5000), rank)
    active = tcp_host_candidate((address, 5000), ACTIVE, rank)
    passive = tcp_host_candidate((address, 5000), PASSIVE, rank)
    other = _other_preference(address, rank)
    for candidate, tcp_type in ((active, ACTIVE), (passive, PASSIVE)):
        assert candidate.protocol == "tcp"
        assert candidate.tcp_type is tcp_type
        assert candidate.type is HOST
        assert candidate.address == address
        assert candidate.priority == candidate_priority(
            HOST, tcp_local_preference(HOST, tcp_type, other), 1
        )
        assert candidate.priority < udp.priority
        assert candidate.foundation != udp.foundation
        assert Candidate.from_sdp(candidate.to_sdp()) == candidate
        assert f"tcptype {tcp_type.value}" in candidate.to_sdp()
    assert active.port == ACTIVE_PORT == 9
    assert passive.port == 5000
    assert active.priority > passive.priority


def test_a_tcp_host_candidate_of_another_component() -> None:
    candidate = tcp_host_candidate(("10.0.0.1", 5000), PASSIVE, 0, component=2)
    assert candidate.component == 2
    assert candidate.priority & 0xFF == 256 - 2


def test_a_passive_candidates_public_address_is_a_tcp_srflx_candidate() -> None:
    """A 1:1 NAT's address of a passive candidate: a srflx candidate of the same tcptype,
    with the direction preference of a server-reflexive passive one (2, RFC 6544 §4.2) and
    the host's other-pref; a UDP base still gives a UDP one."""
    host = tcp_host_candidate(("10.0.0.5", 4443), PASSIVE, 0)
    srflx = srflx_candidate(host, ("203.0.113.5", 4443), "1:1")
    assert (srflx.protocol, srflx.tcp_type, srflx.type) == ("tcp", PASSIVE, CandidateType.SRFLX)
    other = ((host.priority >> 8) & 0xFFFF) & 0x1FFF
    expected = candidate_priority(CandidateType.SRFLX, (2 << 13) | other, 1)
    assert srflx.priority == expected
    assert (srflx.related_address, srflx.related_port) == ("10.0.0.5", 4443)
    udp = srflx_candidate(host_candidate(("10.0.0.5", 4443), 0), ("203.0.113.5", 4443), "1:1")
    assert (udp.protocol, udp.tcp_type) == ("udp", None)
    assert udp.foundation != srflx.foundation
    assert Candidate.from_sdp(srflx.to_sdp()) == srflx


def test_tcp_prflx_candidates_and_foundations() -> None:
    tcp = prflx_candidate(
        ("10.0.0.1", 50123), learned_from="10.0.0.1", component=1, priority=7, tcp_type=ACTIVE
    )
    udp = prflx_candidate(("10.0.0.1", 50123), learned_from="10.0.0.1", component=1, priority=7)
    assert (tcp.protocol, tcp.tcp_type, tcp.type) == ("tcp", ACTIVE, PRFLX)
    assert (udp.protocol, udp.tcp_type) == ("udp", None)
    assert tcp.foundation == prflx_foundation("10.0.0.1", "tcp")
    assert udp.foundation == prflx_foundation("10.0.0.1") == prflx_foundation("10.0.0.1", "udp")
    assert tcp.foundation != udp.foundation
    assert Candidate.from_sdp(tcp.to_sdp()) == tcp


# -- pairing (RFC 6544 §6.2) ----------------------------------------------------------------------


def _tcp(
    address: str,
    port: int,
    tcp_type: TcpType | None,
    type: CandidateType = HOST,
    *,
    component: int = 1,
) -> Candidate:
    return Candidate(
        foundation="f" + type.value,
        component=component,
        protocol="tcp",
        priority=candidate_priority(type, 30000, component),
        address=address,
        port=port,
        type=type,
        tcp_type=tcp_type,
    )


def _udp(address: str, port: int) -> Candidate:
    return host_candidate((address, port), 0)


L = "10.0.0.1"
R = "10.0.0.2"

PAIRING: list[tuple[str, Candidate, Candidate, bool]] = [
    ("active-passive", _tcp(L, 9, ACTIVE), _tcp(R, 6000, PASSIVE), True),
    ("active-prflx-passive", _tcp(L, 9, ACTIVE), _tcp(R, 6000, PASSIVE, PRFLX), True),
    ("active-srflx-passive", _tcp(L, 9, ACTIVE), _tcp(R, 6000, PASSIVE, SRFLX), True),
    ("active-active", _tcp(L, 9, ACTIVE), _tcp(R, 9, ACTIVE), False),
    ("active-so", _tcp(L, 9, ACTIVE), _tcp(R, 6000, SO), False),
    ("passive-prflx-active", _tcp(L, 5000, PASSIVE), _tcp(R, 50123, ACTIVE, PRFLX), True),
    ("passive-host-active", _tcp(L, 5000, PASSIVE), _tcp(R, 9, ACTIVE), False),
    ("passive-srflx-active", _tcp(L, 5000, PASSIVE), _tcp(R, 50123, ACTIVE, SRFLX), False),
    ("passive-relay-active", _tcp(L, 5000, PASSIVE), _tcp(R, 50123, ACTIVE, RELAY), False),
    ("passive-passive", _tcp(L, 5000, PASSIVE), _tcp(R, 6000, PASSIVE), False),
    ("passive-prflx-passive", _tcp(L, 5000, PASSIVE), _tcp(R, 6000, PASSIVE, PRFLX), False),
    ("passive-so", _tcp(L, 5000, PASSIVE), _tcp(R, 6000, SO), False),
    ("so-so", _tcp(L, 5000, SO), _tcp(R, 6000, SO), True),
    ("so-active", _tcp(L, 5000, SO), _tcp(R, 9, ACTIVE), False),
    ("so-passive", _tcp(L, 5000, SO), _tcp(R, 6000, PASSIVE), False),
    ("udp-udp", _udp(L, 5000), _udp(R, 6000), True),
    ("udp-tcp-passive", _udp(L, 5000), _tcp(R, 6000, PASSIVE), False),
    ("udp-tcp-prflx-active", _udp(L, 5000), _tcp(R, 50123, ACTIVE, PRFLX), False),
    ("tcp-active-udp", _tcp(L, 9, ACTIVE), _udp(R, 6000), False),
    ("tcp-passive-udp", _tcp(L, 5000, PASSIVE), _udp(R, 6000), False),
    ("no-tcptype-local", _tcp(L, 5000, None), _tcp(R, 6000, PASSIVE), False),
    ("no-tcptype-remote", _tcp(L, 9, ACTIVE), _tcp(R, 6000, None), False),
    ("no-tcptype-both", _tcp(L, 5000, None), _tcp(R, 6000, None), False),
    ("no-tcptype-prflx", _tcp(L, 5000, PASSIVE), _tcp(R, 6000, None, PRFLX), False),
    ("v4-v6", _tcp(L, 9, ACTIVE), _tcp("2001:db8::2", 6000, PASSIVE), False),
    ("component", _tcp(L, 9, ACTIVE), _tcp(R, 6000, PASSIVE, component=2), False),
    (
        "mdns",
        _tcp(L, 9, ACTIVE),
        _tcp("f3e2a9b1-5c6d-4e7f-8a9b-0c1d2e3f4a5b.local", 6000, PASSIVE),
        False,
    ),
]


@pytest.mark.parametrize(
    ("local", "remote", "expected"), [case[1:] for case in PAIRING], ids=[c[0] for c in PAIRING]
)
def test_which_tcp_candidates_pair(local: Candidate, remote: Candidate, expected: bool) -> None:
    assert CheckList.pairable(local, remote) is expected
    checklist = CheckList(max_pairs=10)
    pair = checklist.add(local, remote, 0, controlling=True)
    assert (pair is not None) is expected
    assert len(checklist) == int(expected)


# -- remote candidates kept apart by protocol (TCP_KEY) -------------------------------------------

PEER = ("10.0.0.2", 6000)


def _core(*, controlling: bool = True) -> AgentCore:
    """A core with the peer's parameters, a UDP host candidate (base 0) and an active TCP
    host candidate (base 1, its connections from 10.0.0.1:50123)."""
    net = Network()
    endpoint = net.add_endpoint("a", controlling=controlling, tiebreaker=2)
    peer = net.add_endpoint("b", controlling=not controlling, tiebreaker=1)
    core = endpoint.core
    core.add_local_candidate(host_candidate(("10.0.0.1", 5000), 0), 0)
    core.add_local_candidate(tcp_host_candidate(("10.0.0.1", 50123), ACTIVE, 0), 1)
    core.set_remote(peer.core.local, 0.0)
    return core


def test_remote_key_moves_tcp_ports_past_the_udp_ones() -> None:
    assert TCP_KEY == 65536
    assert remote_key(_udp(*PEER)) == PEER
    assert remote_key(_tcp(*PEER, PASSIVE)) == (PEER[0], PEER[1] + 65536)
    assert remote_key(_tcp(PEER[0], 9, ACTIVE)) == (PEER[0], 9 + 65536)


@pytest.mark.parametrize(
    ("signalled", "udp_known", "tcp_known"),
    [
        (("udp",), True, False),
        (("tcp",), False, True),
        (("udp", "tcp"), True, True),
        (("tcp", "udp"), True, True),
    ],
)
def test_a_udp_and_a_tcp_candidate_at_one_address_and_port_stay_two(
    signalled: tuple[str, ...], udp_known: bool, tcp_known: bool
) -> None:
    core = _core()
    udp = _udp(*PEER)
    tcp = tcp_host_candidate(PEER, PASSIVE, 0)
    candidates = [udp if kind == "udp" else tcp for kind in signalled]
    for candidate in candidates:
        assert core.add_remote_candidate(candidate)
    assert core.remote_candidates == candidates
    assert core.is_remote_address(PEER) is udp_known
    assert core.is_remote_address(PEER, tcp=True) is tcp_known
    assert not core.is_remote_address((PEER[0], PEER[1] + 1))
    assert not core.is_remote_address((PEER[0], PEER[1] + 1), tcp=True)
    pairs = {
        (p.base, p.local.protocol, p.remote.protocol, p.remote_address) for p in core.checklist
    }
    expected = set()
    if udp_known:
        expected.add((0, "udp", "udp", PEER))
    if tcp_known:
        expected.add((1, "tcp", "tcp", PEER))
    assert pairs == expected
    for pair in core.checklist:
        if pair.remote.protocol == "tcp":
            assert pair.remote is tcp and pair.local.tcp_type is ACTIVE


def test_the_same_source_over_udp_and_over_tcp_is_learned_twice() -> None:
    """A request from one address and port on a UDP base and on a TCP (passive) base: two
    peer-reflexive candidates, one of each protocol, the TCP one active (the other end of a
    connection to a passive candidate)."""
    net = Network()
    endpoint = net.add_endpoint("b", controlling=False, tiebreaker=1)
    peer = net.add_endpoint("a", controlling=True, tiebreaker=2)
    core = endpoint.core
    core.add_local_candidate(host_candidate(("10.0.0.2", 6000), 0), 0)
    passive = tcp_host_candidate(("10.0.0.2", 6001), PASSIVE, 0)
    core.add_local_candidate(passive, 1)
    core.set_remote(peer.core.local, 0.0)
    source = ("10.0.0.1", 50123)
    assert (
        core.on_request(1, source, binding_request(core, priority=1111, controlling=True), 0.0)
        is not None
    )
    assert not core.is_remote_address(source)
    assert core.is_remote_address(source, tcp=True)
    (tcp,) = core.remote_candidates
    assert (tcp.type, tcp.protocol, tcp.tcp_type, tcp.transport_address) == (
        PRFLX,
        "tcp",
        ACTIVE,
        source,
    )
    assert tcp.priority == 1111
    pair = core.checklist.find(1, source)
    assert pair is not None and pair.local is passive and pair.remote is tcp
    assert (
        core.on_request(0, source, binding_request(core, priority=2222, controlling=True), 0.1)
        is not None
    )
    assert core.is_remote_address(source)
    tcp_again, udp = core.remote_candidates
    assert tcp_again is tcp
    assert (udp.type, udp.protocol, udp.tcp_type, udp.priority) == (PRFLX, "udp", None, 2222)
    assert udp.foundation != tcp.foundation
    udp_pair = core.checklist.find(0, source)
    assert udp_pair is not None and udp_pair.remote is udp and udp_pair.local.protocol == "udp"
    assert len(core.checklist) == 2


@pytest.mark.parametrize("port", [50123, 9])
def test_an_active_candidate_signalled_at_its_connections_port_is_listed_once(port: int) -> None:
    """A peer that signals its active candidate at the port its connection then comes from
    has it listed once, as the peer-reflexive candidate learned from the connection (which
    pairs), not as that and as the signalled one (kept under port 9).  At port 9, both
    stay: they name two transport addresses."""
    net = Network()
    core = net.add_endpoint("b", controlling=False, tiebreaker=1).core
    peer = net.add_endpoint("a", controlling=True, tiebreaker=2)
    core.add_local_candidate(tcp_host_candidate(("10.0.0.2", 6001), PASSIVE, 0), 1)
    core.set_remote(peer.core.local, 0.0)
    source = ("10.0.0.1", 50123)
    signalled = _tcp(source[0], port, ACTIVE)
    assert core.add_remote_candidate(signalled)
    request = binding_request(core, priority=1111, controlling=True)
    assert core.on_request(1, source, request, 0.0) is not None
    listed = [(c.type, c.port) for c in core.remote_candidates]
    if port == 9:
        assert listed == [(HOST, 9), (PRFLX, 50123)]
    else:
        assert listed == [(PRFLX, 50123)]
    pair = core.checklist.find(1, source)
    assert pair is not None and pair.remote is core.remote_candidates[-1]


def test_after_a_restart_an_active_candidate_signalled_again_at_its_port_is_listed() -> None:
    """After an ICE restart the peer-reflexive candidate of before stays for its data
    (``_stale``, not listed); the new generation's active candidate, signalled again at
    the same port, is listed, not hidden behind it."""
    core = AgentCore(
        local=IceParameters("bbbb", "b" * 22), controlling=False, tiebreaker=1, timing=FAST
    )
    core.add_local_candidate(tcp_host_candidate(("10.0.0.2", 6001), PASSIVE, 0), 1)
    peer = IceParameters("aaaa", "a" * 22)
    core.set_remote(peer, 0.0)
    core.want_connection(0.0)
    source = ("10.0.0.1", 50123)
    signalled = _tcp(*source, ACTIVE)
    assert core.add_remote_candidate(signalled)
    request = binding_request(core, priority=1111, controlling=True, use_candidate=True)
    assert core.on_request(1, source, request, 0.0) is not None
    check = core.poll_check(0.0)
    assert check is not None
    key = stun.short_term_key(peer.pwd)
    assert core.on_response(check, stun.decode(_reply(check, key)), check.destination, 0.01)
    assert core.selected is not None
    core.restart(IceParameters("bbb2", "c" * 22), 1.0)
    core.set_remote(IceParameters("aaa2", "d" * 22), 1.0)
    again = dataclasses.replace(signalled, username_fragment="aaa2")
    assert core.add_remote_candidate(again)
    assert core.remote_candidates == [again]


def test_an_ice_tcp_checks_answer_after_the_rto_is_timed() -> None:
    """Over ICE-TCP a check goes once and waits its whole schedule (no copy is ever due):
    its answer after the RTO (a slow path, or the connect's time in the first check) is
    the path's round trip, timed."""
    core = _core()
    source = ("198.51.100.7", 443)
    core.add_remote_candidate(_tcp(*source, PASSIVE))
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    while check is not None and check.pair.local.protocol != "tcp":
        check = core.poll_check(0.0)
    assert check is not None
    late = check.schedule[1] + 0.2
    assert late < check.schedule[-1]
    answer = _reply(check, stun.short_term_key(core.remote.pwd if core.remote else ""))
    assert core.on_response(check, stun.decode(answer), check.destination, late)
    assert check.pair.rtt_samples == 1 and check.pair.rtt == pytest.approx(late)


def test_a_request_to_an_active_candidate_learns_a_passive_peer() -> None:
    """Over a connection our active candidate opened, a request from an address not
    signalled is from a (peer-reflexive) passive candidate, which the active one pairs
    with."""
    core = _core()
    source = ("198.51.100.7", 443)
    assert core.on_request(1, source, binding_request(core), 0.0) is not None
    (learned,) = core.remote_candidates
    assert (learned.type, learned.protocol, learned.tcp_type) == (PRFLX, "tcp", PASSIVE)
    pair = core.checklist.find(1, source)
    assert pair is not None and pair.local.tcp_type is ACTIVE
    assert pair.state is PairState.WAITING


def _passive_side(*listeners: Address) -> tuple[AgentCore, AgentCore]:
    """A controlled core with a passive TCP candidate at each of ``listeners`` (bases 1,
    2...), facing a controlling peer with two active candidates, all signalled."""
    net = Network()
    endpoint = net.add_endpoint("b", controlling=False, tiebreaker=1)
    peer = net.add_endpoint("a", controlling=True, tiebreaker=2)
    core = endpoint.core
    for base, listener in enumerate(listeners, start=1):
        core.add_local_candidate(tcp_host_candidate(listener, PASSIVE, base), base)
    core.set_local_complete()
    core.set_remote(peer.core.local, 0.0)
    for rank in (0, 1):
        core.add_remote_candidate(tcp_host_candidate((f"10.0.0.{1 + 2 * rank}", 0), ACTIVE, rank))
    core.add_remote_candidate(None)
    return core, peer.core


def test_a_connections_peer_reflexive_candidate_is_paired_on_its_listener_only() -> None:
    """RFC 6544 §7.2: a check over a connection to one passive candidate learns the
    connection's far end, which no other passive candidate can reach (it opens no
    connection): the one pair formed is on the listener the connection came to."""
    core, _ = _passive_side(B_LISTENER, ("10.0.0.4", 6002))
    source = ("10.0.0.1", 50123)
    request = binding_request(core, controlling=True)
    assert core.on_request(1, source, request, 0.0) is not None
    assert [(p.base, p.remote_address) for p in core.checklist] == [(1, source)]


def test_a_passive_side_whose_pairs_failed_answers_the_next_connection_no_more() -> None:
    """A passive candidate's pairs are the connections come so far: when they have all
    failed (a's first connection dropped), the peer's other active candidate may still
    connect, and until the PAC timer ends (RFC 8863) ICE waits for it: its check is
    answered.  When the timer ends with every pair failed, ICE fails.  Then the agent
    answers no check: the peer's next connection is not answered, so the peer fails too (it
    connected and held consent with an agent that had failed)."""
    # (RFC 8863's 39.5 s, a check's on RFC 8489's schedule, cut to failed_timeout: 30 s.)
    pac = min(stun.RetransmissionSchedule().total_timeout, trice.Timing().failed_timeout)
    core, _ = _passive_side(B_LISTENER)
    first, second, third = ("10.0.0.1", 50123), ("10.0.0.3", 50124), ("10.0.0.3", 50125)
    assert core.on_request(1, first, binding_request(core, controlling=True), 0.0) is not None
    core.path_lost(1, first, 0.1)
    assert _ice_state(core) is trice.ConnectionState.CHECKING
    assert core.on_request(1, second, binding_request(core, controlling=True), 0.2) is not None
    core.path_lost(1, second, 0.3)
    core.on_timer(pac)
    assert _ice_state(core) is trice.ConnectionState.FAILED
    request = binding_request(core, controlling=True, use_candidate=True)
    assert core.on_request(1, third, request, pac + 0.1) is None


def test_a_pair_found_again_keeps_its_far_end_known_when_another_path_from_there_goes() -> None:
    """The peer's active end connects to two passive candidates from one port (a peer that
    binds its active socket does).  The first connection closes (``path_lost``: its learned
    far end goes); the second learns it again; the first's pair, found again by a check
    from that port, holds the candidate of then, and is nominated and selected.  When the
    second connection closes, the far end stays known: the shell takes data over TCP only
    from known far ends.  It was forgotten (the selected pair's candidate was not the one
    known at its address), and the peer's data over the selected pair dropped while the
    agent stayed connected (the suspects41a review)."""
    core, peer = _passive_side(B_LISTENER, ("10.0.0.4", 6002))
    source = ("10.0.0.1", 50123)
    key = stun.short_term_key(peer.local.pwd)

    def checked(base: int, now: float, *, nominate: bool = False) -> None:
        request = binding_request(core, controlling=True, use_candidate=nominate)
        assert core.on_request(base, source, request, now) is not None
        check = core.poll_check(now)
        assert check is not None and check.base == base
        assert core.on_response(check, stun.decode(_reply(check, key)), source, now + 0.01)

    assert core.on_request(1, source, binding_request(core, controlling=True), 0.0)
    core.path_lost(1, source, 0.05)
    checked(2, 0.1)
    checked(1, 0.2, nominate=True)
    selected = core.selected
    assert selected is not None and (selected.base, selected.remote_address) == (1, source)
    core.path_lost(2, source, 0.3)
    assert core.selected is selected
    assert core.is_remote_address(source, tcp=True)
    assert [c.transport_address for c in core.remote_candidates if c.port == source[1]] == [source]


def test_the_failed_pairs_of_nominated_connections_that_closed_are_pruned() -> None:
    """A controlling peer with aggressive nomination opens connection after connection to
    the passive candidate, each nominated and selected in its turn, and closes the one
    before: each leaves a failed pair that was nominated.  The cap prunes them (a nominated
    pair is spared only while it has not failed): the list stays within ``max_pairs``, and
    a candidate signalled after them still gets its pair.  They were never pruned: 40
    connections left 40 pairs past ``max_pairs=5``, and the new candidate's pair was pruned
    at once, never checked (the suspects41c review)."""
    max_pairs = 5
    net = Network()
    endpoint = net.add_endpoint("b", controlling=False, tiebreaker=1, max_pairs=max_pairs)
    peer = net.add_endpoint("a", controlling=True, tiebreaker=2).core
    core = endpoint.core
    core.add_local_candidate(tcp_host_candidate(B_LISTENER, PASSIVE, 1), 1)
    core.add_local_candidate(host_candidate(("10.0.0.2", 5000), 0), 0)
    core.set_local_complete()
    core.set_remote(peer.local, 0.0)
    key = stun.short_term_key(peer.local.pwd)
    now, previous = 0.0, None
    for i in range(40):
        source = ("10.0.0.1", 50000 + i)
        request = binding_request(
            core,
            controlling=True,
            use_candidate=True,
            priority=1_000 + i,
            tid=bytes(8) + i.to_bytes(4, "big"),
        )
        assert core.on_request(1, source, request, now) is not None
        while (check := core.poll_check(now)) is None or check.destination != source:
            if check is not None:
                core.on_response(check, stun.decode(_reply(check, key)), check.destination, now)
            now += 0.01
            core.on_timer(now)
        assert core.on_response(check, stun.decode(_reply(check, key)), source, now)
        selected = core.selected
        assert selected is not None and selected.remote_address == source
        assert core.checklist.selected is selected  # (never pruned, failed or not)
        if previous is not None:
            core.path_lost(1, previous, now)  # (the peer closed the connection of before)
        previous = source
    assert len(core.checklist) <= max_pairs
    core.add_remote_candidate(
        Candidate.from_sdp("candidate:9 1 udp 2130706431 10.0.0.1 7000 typ host")
    )
    assert [p.remote_address for p in core.checklist if p.base == 0] == [("10.0.0.1", 7000)]


def _ice_state(core: AgentCore) -> trice.ConnectionState:
    """(A call: a type checker keeps no narrowing of ``core.state`` across it.)"""
    return core.state


# -- two cores over TCP ---------------------------------------------------------------------------

A_CONNECTION: Address = ("10.0.0.1", 50123)  # where a's active candidate connects from
B_LISTENER: Address = ("10.0.0.2", 6001)
A_UDP: Address = ("10.0.0.1", 5000)
B_UDP: Address = ("10.0.0.2", 6000)


def _add_tcp(endpoint: Endpoint, candidate: Candidate, base_address: Address) -> int:
    """A TCP transport of ``endpoint`` at ``base_address`` (an active candidate's: where its
    connection comes from) with ``candidate``, signalled."""
    base = len(endpoint.bases)
    endpoint.bases[base] = base_address
    endpoint.core.add_local_candidate(candidate, base)
    endpoint.signalled.append(candidate)
    return base


@pytest.mark.parametrize("with_udp", [False, True], ids=["tcp-only", "udp-lost"])
def test_two_cores_connect_over_tcp(with_udp: bool) -> None:
    """``a`` (controlling) has an active TCP candidate, ``b`` (controlled) a passive one
    (and, here and there, UDP host candidates whose packets are all lost): ``b`` learns
    ``a``'s connection as a peer-reflexive active candidate, ``a`` learns the address its
    connection comes from as a local peer-reflexive active one, and both select the TCP
    pair."""
    net, a, b = two_agents(
        a_hosts=[A_UDP] if with_udp else [],
        b_hosts=[B_UDP] if with_udp else [],
        timing=FAST,
        exchange=False,
    )
    net.drop(lambda p: A_UDP in (p.src, p.dst) or B_UDP in (p.src, p.dst))
    active = tcp_host_candidate(("10.0.0.1", 0), ACTIVE, 0)
    passive = tcp_host_candidate(B_LISTENER, PASSIVE, 0)
    a_base = _add_tcp(a, active, A_CONNECTION)
    b_base = _add_tcp(b, passive, B_LISTENER)
    net.exchange(a, b)
    # b pairs nothing with a's signalled active candidate: it waits for a's connection.
    assert all(p.local.protocol == "udp" for p in b.core.checklist)
    assert net.run_until(connected(a, b), max_time=5.0)

    # The check a sent over its connection, with a peer-reflexive active candidate's
    # priority (RFC 6544 §4.2 direction preference 4, RFC 8445 §7.1.1).
    other = _other_preference("10.0.0.1", 0)
    expected = candidate_priority(PRFLX, tcp_local_preference(PRFLX, ACTIVE, other), 1)
    tcp_checks = [p for p in net.packets(sender="a", requests=True) if p.src == A_CONNECTION]
    assert tcp_checks
    for packet in tcp_checks:
        assert packet.dst == B_LISTENER
        priority = packet.message.get(stun.Priority)
        assert priority is not None and priority.value == expected
    assert expected == (110 << 24) + ((4 << 13 | other) << 8) + 255
    assert all(p.dst[1] != ACTIVE_PORT for p in net.sent)

    # b: a's connection is a peer-reflexive active TCP candidate at its source address.
    learned = [c for c in b.core.remote_candidates if c.type is PRFLX]
    assert len(learned) == 1
    (prflx,) = learned
    assert (prflx.protocol, prflx.tcp_type, prflx.transport_address) == (
        "tcp",
        ACTIVE,
        A_CONNECTION,
    )
    assert prflx.priority == expected
    assert b.core.is_remote_address(A_CONNECTION, tcp=True)
    assert not b.core.is_remote_address(A_CONNECTION)
    pb = b.core.selected_pair()
    assert pb is not None
    assert pb.local == passive and pb.remote == prflx
    b_pair = b.core.checklist.find(b_base, A_CONNECTION)
    assert b_pair is not None and b_pair is b.core.selected

    # a: the valid pair's local candidate is a peer-reflexive active candidate at the
    # address its connection came from, related to the active candidate (port 9).
    pa = a.core.selected_pair()
    assert pa is not None
    assert pa.remote == passive
    local = pa.local
    assert (local.type, local.protocol, local.tcp_type) == (PRFLX, "tcp", ACTIVE)
    assert local.transport_address == A_CONNECTION
    assert (local.related_address, local.related_port) == ("10.0.0.1", ACTIVE_PORT)
    assert local.priority == expected
    assert local.foundation == prflx_foundation("10.0.0.1", "tcp")
    assert a.core.selected is not None and a.core.selected.base == a_base
    assert a.core.selected.nominated

    # Nothing paired across protocols, on either side; a learned no remote candidate.
    for endpoint in (a, b):
        assert all(p.local.protocol == p.remote.protocol for p in endpoint.core.checklist)
        assert event_order_problems(e for _, e in endpoint.events) == []
    assert [c for c in a.core.remote_candidates if c.type is PRFLX] == []
    assert len(a.core.checklist) == (2 if with_udp else 1)
    assert len(b.core.checklist) == (2 if with_udp else 1)


# -- one port number, two protocols ---------------------------------------------------------------


@pytest.mark.parametrize("side", ["active", "passive"])
def test_a_tcp_check_maps_to_a_tcp_local_candidate_whatever_udp_has_the_port(side: str) -> None:
    net = Network()
    me = net.add_endpoint("me", controlling=side == "active", tiebreaker=2)
    peer = net.add_endpoint("peer", controlling=side != "active", tiebreaker=1)
    core = me.core
    mine = ("10.0.0.1", 50123)
    core.add_local_candidate(host_candidate(mine, 0), 0)  # a UDP socket on port 50123
    core.set_remote(peer.core.local, 0.0)
    if side == "active":
        # The active candidate's connection came from port 50123 too.
        core.add_local_candidate(tcp_host_candidate(mine, ACTIVE, 0), 1)
        core.add_remote_candidate(tcp_host_candidate(PEER, PASSIVE, 0))
        core.want_connection(0.0)
    else:
        # A passive candidate listening on port 50123, and the peer's connection to it.
        core.add_local_candidate(tcp_host_candidate(mine, PASSIVE, 0), 1)
        assert core.on_request(1, PEER, binding_request(core, controlling=True), 0.0) is not None
    check = core.poll_check(0.0)
    assert check is not None and check.base == 1
    key = stun.short_term_key(peer.core.local.pwd)
    answer = _reply(check, key, attributes=[stun.XorMappedAddress(*mine)])
    assert core.on_response(check, stun.decode(answer), check.destination, 0.01)
    local = check.pair.valid_local
    assert local is not None
    assert local.protocol == "tcp"


def _state(pair: Pair) -> PairState:
    """(A call: a type checker keeps no narrowing of ``pair.state`` across it.)"""
    return pair.state


def test_a_lost_path_fails_its_pair_only_and_ice_if_it_was_selected() -> None:
    """``AgentCore.path_lost``: the pair of a TCP connection that closed fails with its
    checks; another pair of the same transport is left alone; and when the pair lost is the
    selected one, ICE fails at once (as for a relay that is gone)."""
    net, a, b = two_agents(a_hosts=[], b_hosts=[], timing=FAST, exchange=False)
    active = tcp_host_candidate(("10.0.0.1", 0), ACTIVE, 0)
    passive = tcp_host_candidate(B_LISTENER, PASSIVE, 0)
    a_base = _add_tcp(a, active, A_CONNECTION)
    _add_tcp(b, passive, B_LISTENER)
    other_listener = ("10.0.0.2", 7777)  # (a second passive candidate, never answered)
    a.core.add_remote_candidate(tcp_host_candidate(other_listener, PASSIVE, 1))
    net.exchange(a, b)
    other = a.core.checklist.find(a_base, other_listener)
    assert other is not None and other.state is not PairState.FAILED
    assert net.run_until(connected(a, b), max_time=5.0)
    selected = a.core.selected
    assert selected is not None and selected.remote_address == B_LISTENER

    a.core.path_lost(a_base, other_listener, net.now)
    assert _state(other) is PairState.FAILED
    state = a.core.state  # (not the selected pair's path: ICE goes on)
    assert state in (trice.ConnectionState.CONNECTED, trice.ConnectionState.COMPLETED)
    assert selected.state is PairState.SUCCEEDED

    a.core.path_lost(a_base, B_LISTENER, net.now)
    assert _state(selected) is PairState.FAILED
    assert a.core.state is trice.ConnectionState.FAILED


# -- both kinds on both sides: one connection each way --------------------------------------------

A_LISTENER: Address = ("10.0.0.1", 5001)
B_CONNECTION: Address = ("10.0.0.2", 60123)  # where b's active candidate connects from


def _path(endpoint: Endpoint) -> tuple[Address, Address]:
    """The selected pair as the two ends of its path: this side's, then the peer's."""
    pair = endpoint.core.selected
    assert pair is not None
    return endpoint.bases[pair.base], pair.remote_address


@pytest.mark.parametrize("nomination", list(trice.Nomination), ids=lambda n: n.value)
def test_both_sides_select_the_same_connection_of_two(nomination: trice.Nomination) -> None:
    """Each side has an active and a passive candidate, so two connections open, one each
    way.  Each side's end of the connection it opened is peer-reflexive, at the other side
    and in its own valid pair (RFC 8445 §7.2.5.3.2: a valid pair is ranked by the candidate
    the peer saw, the PRIORITY its check carried); so both rank the two alike and select
    the same one, even when both are nominated (aggressive nomination).  Ranked by the
    checked pair instead, each side ranked its own connection first, and under aggressive
    nomination each selected that."""
    net, a, b = two_agents(
        a_hosts=[], b_hosts=[], timing=FAST, exchange=False, nomination=nomination
    )
    _add_tcp(a, tcp_host_candidate(("10.0.0.1", 0), ACTIVE, 0), A_CONNECTION)
    _add_tcp(a, tcp_host_candidate(A_LISTENER, PASSIVE, 0), A_LISTENER)
    _add_tcp(b, tcp_host_candidate(("10.0.0.2", 0), ACTIVE, 0), B_CONNECTION)
    _add_tcp(b, tcp_host_candidate(B_LISTENER, PASSIVE, 0), B_LISTENER)
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=5.0)
    net.run_for(2.0)  # (every check answered, every nomination made)
    for endpoint in (a, b):
        # Both connections were proved, in their two pairs on each side.
        assert sum(p.state is PairState.SUCCEEDED for p in endpoint.core.checklist) == 2
        assert event_order_problems(e for _, e in endpoint.events) == []
    a_end, b_end = _path(a)
    assert _path(b) == (b_end, a_end)
    a_pair, b_pair = a.core.selected, b.core.selected
    assert a_pair is not None and b_pair is not None
    assert a_pair.valid_priority == b_pair.valid_priority
    if nomination is trice.Nomination.AGGRESSIVE:
        assert sum(p.nominated for p in b.core.checklist) == 2


def test_a_refused_check_over_tcp_is_checked_anew_once_per_check_of_the_peers() -> None:
    """Over ICE-TCP, where no copy goes: a peer that refuses our check with 401 and then
    checks us has the pair checked anew, with a new check, once; the 401 to that one (the
    check the peer's request triggered, at its very time) asks nothing more until the peer
    checks again (it had the pair checked anew twice a request)."""
    core = _core()
    peer = ("198.51.100.7", 443)
    core.add_remote_candidate(_tcp(*peer, TcpType.PASSIVE))
    core.add_remote_candidate(None)
    core.set_local_complete()
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None and first.pair.local.protocol == "tcp"
    pair = first.pair
    assert not core.on_response(first, _refusal(first), first.destination, 0.01)
    assert core.poll_check(0.5) is None  # (the peer has not checked us since)
    assert core.on_request(1, peer, binding_request(core, tid=b"P" * 12), 1.0) is not None
    second = core.poll_check(1.0)
    assert second is not None and second.pair is pair
    assert not core.on_response(second, _refusal(second), second.destination, 1.01)
    assert pair.state is PairState.IN_PROGRESS
    assert core.poll_check(2.0) is None
