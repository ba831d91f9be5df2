"""The pure ICE core (``AgentCore``) in virtual time: no sockets, no trio, milliseconds each.

The harness (``core_harness.py``) wires two cores through an in-memory network with a float
clock; see its docstring for how it drives them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import trice
from trice import ConfigError, StateError, stun
from trice._config import Nomination, Timing
from trice.ice import Candidate, CandidateType, TcpType, candidate_priority
from trice.ice._checklist import Pair, PairState, compute_pair_priority
from trice.ice._core import (
    GIVE_WAY_AFTER,
    JITTER_MAX,
    MAX_CAPPED_KEPT,
    NO_PAIR_WORKS,
    PINGBACK_MAX,
    PINGBACK_MIN,
    PINGBACK_RTTS,
    RESEND_MIN,
    AgentCore,
    Check,
    IceParameters,
    check_schedule,
    two_cores,
)
from trice.ice._events import (
    CandidatePair,
    ConnectionState,
    ConnectionStateChanged,
    Event,
    SelectedPairChanged,
)
from trice.ice._gathering import (
    host_candidate,
    relay_candidate,
    srflx_candidate,
    tcp_host_candidate,
)

from core_harness import (
    Endpoint,
    Nat,
    Network,
    Packet,
    TidSource,
    connected,
    event_order_problems,
    make_candidate,
    two_agents,
)

S = ConnectionState
REGULAR, AGGRESSIVE = Nomination.REGULAR, Nomination.AGGRESSIVE
#: RFC 8863's PAC timer under FAST, pinned at the time its own check takes (sends at 0,
#: 0.1, 0.3, 0.7, given up at 1.1): by default it is a check's time on RFC 8489's schedule
#: (see test_the_pac_timer_waits_for_the_peers_checks_by_default).
FAST_PAC = 1.1
FAST = Timing(
    rto=0.1, rto_max=0.4, max_binding_requests=4, failed_timeout=10.0, pac_timeout=FAST_PAC
)


def assert_valid_events(*endpoints: Endpoint) -> None:
    for endpoint in endpoints:
        problems = event_order_problems((e for _, e in endpoint.events), restarts=endpoint.restarts)
        assert problems == [], f"{endpoint.name}: {problems}"


def assert_mirrored(a: Endpoint, b: Endpoint) -> None:
    """Both sides selected the same pair, seen from either end."""
    pa, pb = a.core.selected_pair(), b.core.selected_pair()
    assert pa is not None and pb is not None
    assert pa.remote.transport_address == pb.local.transport_address
    assert pb.remote.transport_address == pa.local.transport_address


def errors(net: Network, code: int, *, sender: str | None = None) -> list[Packet]:
    out = []
    for packet in net.packets(sender=sender, requests=False):
        error = packet.message.get(stun.ErrorCode)
        if error is not None and error.code == code:
            out.append(packet)
    return out


# -- connecting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("nomination", [REGULAR, AGGRESSIVE])
@pytest.mark.parametrize("a_controlling", [True, False])
def test_two_cores_connect(nomination: Nomination, a_controlling: bool) -> None:
    net, a, b = two_agents(
        nomination=nomination,
        a_controlling=a_controlling,
        b_controlling=not a_controlling,
        a_hosts=[("10.0.0.1", 5000), ("10.0.1.1", 5000)],
        b_hosts=[("10.0.0.2", 6000), ("10.0.1.2", 6000)],
    )
    assert net.run_until(connected(a, b), max_time=2.0)
    assert_mirrored(a, b)
    controlling, controlled = (a, b) if a_controlling else (b, a)
    assert controlling.core.controlling and not controlled.core.controlling
    assert controlling.core.selected is not None and controlling.core.selected.nominated
    # Only the controlling side nominates.
    assert not any(p.use_candidate for p in net.packets(sender=controlled.name, requests=True))
    nominations = [p for p in net.packets(sender=controlling.name) if p.use_candidate]
    if nomination is AGGRESSIVE:
        # Every check of the controlling side carries USE-CANDIDATE.
        assert nominations == net.packets(sender=controlling.name, requests=True)
    else:
        # One nomination transaction (perhaps sent twice, when a request of the peer came
        # while it was in flight), sent after the pair it nominates succeeded.
        assert len({p.data[8:20] for p in nominations}) == 1
        first = net.packets(sender=controlling.name, requests=True)[0]
        assert not first.use_candidate
    net.run_for(10.0)
    assert a.state is S.COMPLETED and b.state is S.COMPLETED
    assert_valid_events(a, b)


@pytest.mark.parametrize("nomination", [REGULAR, AGGRESSIVE])
def test_events_in_valid_order(nomination: Nomination) -> None:
    net, a, b = two_agents(
        nomination=nomination,
        a_hosts=[("10.0.0.1", 5000), ("10.0.1.1", 5001), ("2001:db8::1", 5002)],
        b_hosts=[("10.0.0.2", 6000), ("2001:db8::2", 6001)],
    )
    assert net.run_until(connected(a, b), max_time=5.0)
    net.run_for(30.0)
    assert_valid_events(a, b)
    for endpoint in (a, b):
        kinds = [type(e) for _, e in endpoint.events]
        first_connected = next(
            i
            for i, (_, e) in enumerate(endpoint.events)
            if isinstance(e, ConnectionStateChanged) and e.state is S.CONNECTED
        )
        assert SelectedPairChanged in kinds[:first_connected]
        assert endpoint.states()[0] is S.CHECKING


def test_event_order_checker_catches_mistakes() -> None:
    bad = [ConnectionStateChanged(S.CONNECTED)]
    assert event_order_problems(bad) != []
    assert event_order_problems([ConnectionStateChanged(S.CHECKING)]) == []
    assert (
        event_order_problems(
            [ConnectionStateChanged(S.CHECKING), ConnectionStateChanged(S.COMPLETED)]
        )
        != []
    )
    pair = CandidatePair(make_candidate("10.0.0.1", 1), make_candidate("10.0.0.2", 2))
    restarted: list[Event] = [
        ConnectionStateChanged(S.CHECKING),
        SelectedPairChanged(pair),
        ConnectionStateChanged(S.CONNECTED),
        ConnectionStateChanged(S.CHECKING),
    ]
    assert event_order_problems(restarted) != []  # (back to checking, with no restart)
    assert event_order_problems(restarted, restarts=1) == []


# -- pacing and retransmission --------------------------------------------------------------------


def test_ta_pacing() -> None:
    timing = Timing(ta=0.02)
    net, a, b = two_agents(
        timing=timing,
        a_hosts=[("10.0.0.1", 5000), ("10.0.1.1", 5001), ("10.0.2.1", 5002)],
        b_hosts=[("10.0.0.2", 6000), ("10.0.1.2", 6001), ("10.0.2.2", 6002)],
        exchange=False,
    )
    net.drop(lambda packet: packet.sender == "b")  # b is silent: a checks every pair
    net.now = 1.5
    net.exchange(a, b)
    net.run_for(1.0)
    starts = a.ordinary_starts()
    assert len(starts) == len(a.core.checklist) == 9
    assert starts[0] == 1.5  # the first check goes out at once
    gaps = [t2 - t1 for t1, t2 in itertools.pairwise(starts)]
    assert min(gaps) >= timing.ta - 1e-9
    assert max(gaps) <= timing.ta + 1e-9  # and no slower than Ta when there is work
    # Highest priority first.
    priorities = [c.pair.priority for _, c in a.started]
    assert priorities == sorted(priorities, reverse=True)


def test_check_schedule_numbers() -> None:
    timing = Timing(rto=0.5, rto_max=3.0, max_binding_requests=7)
    assert check_schedule(timing) == (0.0, 0.5, 1.5, 3.5, 6.5, 9.5, 12.5, 15.5)
    assert check_schedule(timing, 1) == (0.0, 0.5)
    small = Timing(rto=0.1, rto_max=0.25, max_binding_requests=5)
    offsets = check_schedule(small)
    assert len(offsets) == small.max_binding_requests + 1
    steps = [round(t2 - t1, 9) for t1, t2 in itertools.pairwise(offsets)]
    assert steps == [0.1, 0.2, 0.25, 0.25, 0.25]


def test_retransmissions_follow_the_schedule_then_give_up() -> None:
    net, a, b = two_agents(timing=FAST, exchange=False, end_of_candidates=False)
    net.drop_all()
    net.exchange(a, b, end_of_candidates=False)
    net.run_for(5.0)
    (start, check), *_ = a.started
    schedule = check_schedule(FAST)
    assert check.schedule == schedule
    sends = [t - start for t, c, _ in a.transmissions if c is check]
    assert sends == pytest.approx(list(schedule[:-1]))
    assert len(sends) == FAST.max_binding_requests
    assert [t - start for t, c in a.timeouts if c is check] == pytest.approx([schedule[-1]])
    assert check.pair.state is PairState.FAILED


def test_the_rto_grows_with_the_pairs_being_checked() -> None:
    """RFC 8445 §14.3: a check's RTO is MAX(rto, Ta x (Num-Waiting + Num-In-Progress)).
    Thirty unanswered pairs at Ta 50 ms: the first check's RTO is 1.5 s (it is one of the
    thirty), and each check's RTO is Ta times the pairs still busy as it starts, never
    below ``rto``; the doubling stops at ``rto_max`` (3 s here) or at that RTO (with the
    default ``rto_max``, 1 s, it is kept undoubled)."""
    timing = Timing(failed_timeout=60.0, rto_max=3.0)
    hosts = [(f"10.0.{i}.2", 6000) for i in range(30)]
    net, a, b = two_agents(timing=timing, b_hosts=hosts, exchange=False)
    net.drop_all()
    net.exchange(a, b)
    net.run_for(0.001)
    (_, first), *_ = a.started
    assert first.schedule == check_schedule(timing, None, 1.5)
    assert first.schedule[:3] == pytest.approx((0.0, 1.5, 4.5))
    assert [round(y - x, 6) for x, y in itertools.pairwise(first.schedule)][-1] == 3.0
    assert check_schedule(Timing(), None, 1.5)[:4] == pytest.approx((0.0, 1.5, 3.0, 4.5))
    # Twelve pairs of the waiting ones leave (as if failed): the next check is one of 18.
    waiting = [p for p in a.core.checklist if p.state is PairState.WAITING]
    for pair in waiting[:12]:
        pair.state = PairState.FAILED
    net.run_for(0.05)
    (_, second) = a.started[1]
    assert second.schedule[1] == pytest.approx(18 * timing.ta)
    for pair in waiting[12:24]:
        pair.state = PairState.FAILED
    net.run_for(0.05)
    (_, third) = a.started[2]
    assert third.schedule == check_schedule(timing)  # (6 busy: 300 ms, below rto)


def test_a_few_pairs_keep_the_configured_rto() -> None:
    """Ten pairs at Ta 50 ms cannot make more than 500 ms: every check has ``rto``."""
    hosts = [(f"10.0.{i}.2", 6000) for i in range(10)]
    net, a, b = two_agents(b_hosts=hosts, exchange=False)
    net.drop_all()
    net.exchange(a, b)
    net.run_for(20.0)
    assert len(a.started) == 10
    assert {c.schedule for _, c in a.started} == {check_schedule(a.core.timing)}


def test_a_check_the_peer_crossed_goes_once_more_at_twice_its_age() -> None:
    """b's check reaches a 1 ms into a's own check, whose answer is slow (a to b takes
    50 ms): a's check goes once more at 5 ms (RESEND_MIN; twice 1 ms is less), once."""

    def latency(packet: Packet) -> float:
        return 0.05 if packet.sender == "a" else 0.001

    net, a, _b = two_agents(latency=latency)
    net.run_for(0.3)
    (start, check), *_ = a.started
    assert check.pair.state is PairState.SUCCEEDED or check.pair.nominated
    sends = [t - start for t, c, _ in a.transmissions if c is check]
    assert sends == pytest.approx([0.0, RESEND_MIN])


def test_a_resend_due_after_the_rto_gives_way_to_the_retransmission() -> None:
    """b's check crosses a's late (at 0.31 s; a's checks never arrive): a's check would go
    again at 0.62 s, but its retransmission at the RTO (0.5 s) comes first and serves
    instead: no copy at 0.62 s."""
    net, a, b = two_agents(want=False)
    net.drop(lambda packet: packet.sender == "a" and packet.is_request)
    a.core.want_connection(net.now)
    net.run_for(0.3)
    b.core.want_connection(net.now)
    net.run_for(1.0)
    (start, check), *_ = a.started
    sends = [t - start for t, c, _ in a.transmissions if c is check]
    assert sends == pytest.approx([0.0, 0.5])


def test_lost_first_request_is_retransmitted_at_rto() -> None:
    timing = Timing(rto=0.3)
    net, a, _b = two_agents(timing=timing, want=False)
    lost: list[Packet] = []

    def lose_first(packet: Packet) -> bool:
        if packet.sender == "a" and packet.is_request and not lost:
            lost.append(packet)
            return True
        return False

    net.drop(lose_first)
    a.core.want_connection(net.now)  # b only answers
    assert net.run_until(connected(a), max_time=2.0)
    tid = lost[0].message.transaction_id
    requests = net.packets(sender="a", requests=True)
    assert requests[0] is lost[0]
    assert requests[1].message.transaction_id == tid
    assert requests[1].sent_at == pytest.approx(timing.rto)
    (answer,) = [p for p in net.packets(sender="b") if p.message.transaction_id == tid]
    assert answer.message.message_class is stun.MessageClass.SUCCESS
    assert answer.deliver_at == pytest.approx(timing.rto + 2 * 0.01)
    assert a.timeouts == []


# -- triggered checks (RFC 8445 §7.3.1.4) ---------------------------------------------------------


def binding_request(
    receiver: AgentCore,
    *,
    sender_ufrag: str | None = None,
    username: str | None = None,
    key: bytes | None = None,
    priority: int | None = 1_845_501_695,
    controlling: bool | None = False,
    tiebreaker: int = 5,
    use_candidate: bool = False,
    extra: tuple[stun.Attribute, ...] = (),
    tid: bytes = b"T" * 12,
    integrity: str = "sha1",
) -> stun.Message:
    """A Binding request to ``receiver`` as its peer would send it (decoded, as received),
    signed with MESSAGE-INTEGRITY (``integrity="sha1"``), MESSAGE-INTEGRITY-SHA256
    (``"sha256"``) or both (``"both"``)."""
    if sender_ufrag is None:
        sender_ufrag = "peer" if receiver.remote is None else receiver.remote.ufrag
    attributes: list[stun.Attribute] = [
        stun.Username(username or f"{receiver.local.ufrag}:{sender_ufrag}")
    ]
    if priority is not None:
        attributes.append(stun.Priority(priority))
    if controlling is True:
        attributes.append(stun.IceControlling(tiebreaker))
    elif controlling is False:
        attributes.append(stun.IceControlled(tiebreaker))
    if use_candidate:
        attributes.append(stun.UseCandidate())
    attributes.extend(extra)
    if key is None:
        key = stun.short_term_key(receiver.local.pwd)
    data = stun.Message(
        stun.Method.BINDING, stun.MessageClass.REQUEST, transaction_id=tid, attributes=attributes
    ).encode(
        integrity_key=key if integrity != "sha256" else None,
        integrity_sha256_key=key if integrity != "sha1" else None,
        fingerprint=True,
    )
    return stun.decode(data)


def three_pair_core() -> tuple[Network, Endpoint]:
    """``a`` (controlling) with one host and three remote candidates: three pairs, all waiting."""
    net, a, _b = two_agents(
        b_hosts=[("10.0.0.2", 6000), ("10.0.0.3", 6000), ("10.0.0.4", 6000)],
        want=False,
    )
    del net.endpoints["b"]
    return net, a


@pytest.mark.parametrize("state", [PairState.WAITING, PairState.FROZEN, PairState.FAILED])
def test_request_triggers_a_check(state: PairState) -> None:
    _net, a = three_pair_core()
    core = a.core
    pairs = list(core.checklist)
    assert [p.state for p in pairs] == [PairState.WAITING] * 3
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None and first.pair is pairs[0]
    assert core.poll_check(0.0) is None  # paced
    target = pairs[2]
    target.state = state
    response = core.on_request(0, target.remote_address, binding_request(core), 0.01)
    assert response is not None
    assert stun.decode(response).message_class is stun.MessageClass.SUCCESS
    assert target.state is PairState.WAITING
    assert core.next_deadline() == pytest.approx(core.timing.ta)
    assert core.poll_check(0.02) is None  # still paced
    triggered = core.poll_check(core.timing.ta)
    assert triggered is not None
    assert triggered.pair is target  # before the higher-priority waiting pairs[1]
    ordinary = core.poll_check(2 * core.timing.ta)
    assert ordinary is not None and ordinary.pair is pairs[1]


@pytest.mark.parametrize("b_controlling", [False, True])
def test_the_peers_check_starts_ours_without_connect(b_controlling: bool) -> None:
    """Only ``a`` is asked to connect (``want_connection``): ``b``'s checks begin with the
    first check of ``a``'s it answers (RFC 8445 §7.3.1.4), its triggered check going back
    at once, and both select a pair (in either role for ``b``: a role conflict included)."""
    net, a, b = two_agents(b_controlling=b_controlling, want=False)
    a.core.want_connection(net.now)
    assert b.core.state is ConnectionState.NEW
    assert net.run_until(connected(a, b), max_time=1.0)
    first_in = net.packets(sender="a", requests=True)[0]
    first_out = net.packets(sender="b", requests=True)[0]
    assert first_out.sent_at == pytest.approx(first_in.deliver_at)
    assert first_out.dst == first_in.src
    pa, pb = a.core.selected_pair(), b.core.selected_pair()
    assert pa is not None and pb is not None
    assert pa.local.transport_address == pb.remote.transport_address
    assert pa.remote.transport_address == pb.local.transport_address
    assert_valid_events(a, b)


def test_a_check_before_the_remote_parameters_starts_ours_once_they_come() -> None:
    """A check that comes before the remote parameters is answered (it is addressed to our
    ufrag and keyed with our password) but cannot be checked back; the checks begin when
    the parameters come, with no ``want_connection``."""
    _net, a, b = two_agents(want=False, exchange=False)
    core = b.core
    source = a.bases[0]
    response = core.on_request(
        0, source, binding_request(core, sender_ufrag=a.core.local.ufrag), 0.0
    )
    assert response is not None
    assert stun.decode(response).message_class is stun.MessageClass.SUCCESS
    assert core.poll_check(0.0) is None
    assert core.state.value == "new"  # (by value: mypy would keep it narrowed below)
    core.set_remote(a.core.local, 0.01)
    check = core.poll_check(0.01)
    assert check is not None and check.destination == source
    assert core.state is ConnectionState.CHECKING


@pytest.mark.parametrize("lite", [False, True], ids=["full", "lite"])
def test_what_checks_before_the_parameters_taught_stands_only_if_they_named_the_peer(
    lite: bool,
) -> None:
    """Before the peer's parameters, only the first part of a check's USERNAME can be
    checked (RFC 8445 §7.3).  Two checks nominate then: one naming the ufrag the peer's
    parameters then bring, one naming another (a forked offer's other answerer, who holds
    this agent's credentials too).  Once the parameters come, what the second taught is
    gone: its peer-reflexive candidate, its pair, its triggered check; a lite agent
    selects the peer's pair, and not before.  They stayed: a full agent checked the other
    address first, with the peer's credentials; a lite agent selected it at once, and
    its data went there (the suspects41b review)."""
    _net, a, b = two_agents(b_lite=lite, want=False, exchange=False)
    core = b.core
    peer, fork = ("10.0.0.1", 5000), ("10.0.0.9", 5000)
    for source, ufrag, tid in ((fork, "fork", b"F" * 12), (peer, a.core.local.ufrag, b"P" * 12)):
        request = binding_request(
            core, sender_ufrag=ufrag, controlling=True, use_candidate=True, tid=tid
        )
        assert core.on_request(0, source, request, 0.0) is not None
    assert core.selected is None
    core.set_remote(a.core.local, 0.01)
    assert [c.transport_address for c in core.remote_candidates] == [peer]
    assert [p.remote_address for p in core.checklist] == [peer]
    assert core.prflx_dropped == 1
    if lite:
        selected = core.selected
        assert selected is not None and selected.remote_address == peer
    else:
        check = core.poll_check(0.01)
        assert check is not None and check.destination == peer


def _run_to_failure(core: AgentCore, answered: tuple[str, int], key: bytes, now: float) -> None:
    """Drive ``core`` (virtual time, no network) until it fails, answering its checks to
    ``answered`` with success and letting every other check time out."""
    while core.state is not ConnectionState.FAILED:
        check = core.poll_check(now)
        if check is not None and check.destination == answered:
            assert core.on_response(check, stun.decode(_reply(check, key)), answered, now)
        deadline = core.next_deadline()
        assert deadline is not None and deadline < 60
        now = deadline
        core.on_timer(now)


@pytest.mark.parametrize("forks", [1, 8])
def test_an_early_nomination_whose_pair_failed_counts_once_a_misnamed_check_is_forgotten(
    forks: int,
) -> None:
    """Before the peer's parameters, other answerers of a forked offer nominate (each from
    its own address, naming its own ufrag), then the peer nominates a pair whose path is
    then lost, and checks another.  The parameters come, what the forks taught goes; the
    other pair works, nothing more is nominated, and the agent fails.  Its reason says the
    peer nominated a pair that did not pass: forgetting a fork's pair looked for a
    nomination among the pairs left unfailed, and said the peer nominated none (the last
    pass's suspects); and then eight forks filled the record of early nominations before
    the peer's came (the mutants8 review)."""
    _net, a, b = two_agents(want=False, exchange=False, timing=FAST)
    core, ufrag = b.core, a.core.local.ufrag
    nominated, other = ("10.0.0.1", 5000), ("10.0.0.1", 5001)
    checks = [((f"10.0.9.{n}", 5000), f"fork{n}", True) for n in range(forks)]
    checks += [(nominated, ufrag, True), (other, ufrag, False)]
    for n, (source, named, nominate) in enumerate(checks):
        request = binding_request(
            core, sender_ufrag=named, controlling=True, use_candidate=nominate, tid=bytes([n]) * 12
        )
        assert core.on_request(0, source, request, 0.0) is not None
    core.path_lost(0, nominated, 0.001)
    core.set_remote(a.core.local, 0.01)
    core.add_remote_candidate(None)
    assert core.prflx_dropped == forks
    _run_to_failure(core, other, stun.short_term_key(a.core.local.pwd), 0.01)
    assert core.no_pair_reason().endswith(
        "though 1 pair worked: the pair the controlling peer nominated did not pass this "
        "agent's check"
    )


def test_a_lite_agent_nominated_before_the_parameters_waits_for_them_unfailed() -> None:
    """An ICE-lite agent (a lite offerer) is nominated by its full peer before the peer's
    parameters come, and checked every 5 s: it fails no sooner than ``failed_timeout``
    after the parameters (RFC 8863 §4), and selects once they come.  The nomination started
    the failure clock: it failed ``failed_timeout`` after it, the peer there, nothing
    selected (the p41pass1 review)."""
    _net, a, b = two_agents(b_lite=True, want=False, exchange=False)
    core, peer, ufrag = b.core, a.bases[0], a.core.local.ufrag
    timeout = core.timing.failed_timeout
    for n in range(int(timeout // 5) + 2):
        now = 5.0 * n
        while (deadline := core.next_deadline()) is not None and deadline <= now:
            core.on_timer(deadline)
        request = binding_request(
            core, sender_ufrag=ufrag, controlling=True, use_candidate=n == 0, tid=bytes([n]) * 12
        )
        assert core.on_request(0, peer, request, now) is not None
    assert core.state.value == "new"  # (by value: mypy would keep it narrowed below)
    core.set_remote(a.core.local, now)
    selected = core.selected
    assert selected is not None and selected.remote_address == peer
    assert core.state is ConnectionState.COMPLETED


def test_a_lite_agent_failed_before_the_parameters_selects_nothing_when_they_come() -> None:
    """An ICE-lite agent restarts; the peer's new checks nominate before its new parameters
    come, which take longer than ``failed_timeout``: the agent fails.  When the parameters
    come then, it selects nothing (it did: a selection after ``failed``; the p41pass1
    review)."""
    net, a, b = two_agents(b_lite=True)
    assert net.run_until(connected(a, b), max_time=5.0)
    core, now = b.core, net.now
    core.restart(IceParameters("newlite", "n" * 22, True), now)
    request = binding_request(
        core, sender_ufrag="peer2", controlling=True, use_candidate=True, tid=b"R" * 12
    )
    core.on_request(0, a.bases[0], request, now)
    later = now + core.timing.failed_timeout + 1
    while (deadline := core.next_deadline()) is not None and deadline <= later:
        core.on_timer(deadline)
    assert core.state is ConnectionState.FAILED
    core.drain_events()
    core.set_remote(IceParameters("peer2", "p" * 22), later)
    assert core.drain_events() == ()
    assert core.selected is None


def _refused_first_check(nomination: Nomination = Nomination.REGULAR) -> tuple[AgentCore, Check]:
    """A controlling core with three pairs whose first check the peer answered 401 at 1 ms
    (it came before this agent's parameters did: after an ICE restart, say)."""
    net, a, _b = two_agents(
        b_hosts=[("10.0.0.2", 6000), ("10.0.0.3", 6000), ("10.0.0.4", 6000)],
        want=False,
        nomination=nomination,
    )
    del net.endpoints["b"]
    core = a.core
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None
    assert first.nominating is (nomination is Nomination.AGGRESSIVE)
    assert not core.on_response(first, _refusal(first), first.destination, 0.001)
    return core, first


def _refusal(check: Check) -> stun.Message:
    """The peer's unsigned 401 to ``check``."""
    return stun.decode(_reply(check, None, stun.MessageClass.ERROR, [stun.ErrorCode(401)]))


@pytest.mark.parametrize("nomination", [Nomination.REGULAR, Nomination.AGGRESSIVE])
def test_a_check_the_peer_refused_with_401_goes_again_at_once_at_its_request(
    nomination: Nomination,
) -> None:
    """Our check reached the peer before our parameters did: it answered 401.  Its own
    check then comes, with them: ours goes again at once, as the same transaction, not at
    twice its age (no copy of ours is on its way: 100 ms lost against Chromium at each
    restart); under aggressive nomination too, where every check nominates (it went at its
    next RTO)."""
    core, first = _refused_first_check(nomination)
    core.on_request(0, first.pair.remote_address, binding_request(core), 0.1)
    assert list(core.poll_resend()) == [(first.transaction_id, 0.1)]


def test_a_401_that_comes_after_the_peers_check_sends_the_check_again_at_once() -> None:
    """The other order: the peer's check (with our parameters) came first, then its 401 to
    ours, made before: ours goes again at once.  Once a transaction: a second 401 to it (a
    peer that refuses every copy) asks nothing more."""
    _net, a = three_pair_core()
    core = a.core
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None
    core.on_request(0, first.pair.remote_address, binding_request(core), 0.05)
    list(core.poll_resend())  # (at twice its age: the answer may be on its way)
    assert not core.on_response(first, _refusal(first), first.destination, 0.06)
    assert list(core.poll_resend()) == [(first.transaction_id, 0.06)]
    assert not core.on_response(first, _refusal(first), first.destination, 0.07)
    assert list(core.poll_resend()) == []


def test_a_401_to_the_check_the_peers_request_triggered_asks_no_copy_at_once() -> None:
    """The peer's request (with our parameters) triggers our check on a pair that had
    failed; the peer refuses that check with 401: its request came before the check, not
    after, so no copy goes at once (one went for nothing)."""
    net, a, b = two_agents(want=False)
    del net.endpoints["b"]
    core = a.core
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None
    pair = first.pair
    key = stun.short_term_key(b.core.local.pwd)
    refused = _reply(first, key, stun.MessageClass.ERROR, [stun.ErrorCode(400)])
    assert core.on_response(first, stun.decode(refused), first.destination, 0.01)
    assert pair.state is PairState.FAILED
    assert core.on_request(0, pair.remote_address, binding_request(core), 1.0) is not None
    check = core.poll_check(1.0)
    assert check is not None and check.pair is pair
    list(core.poll_resend())
    assert not core.on_response(check, _refusal(check), check.destination, 1.01)
    assert list(core.poll_resend()) == []


def test_a_401_after_a_role_switch_sends_no_copy_of_the_check_of_the_old_role() -> None:
    """The peer's check makes this agent switch roles (tie-breakers): the pair is to be
    checked anew in the new role.  The peer's 401 to our check of before then sends no copy
    of it (it claims the role given up)."""
    _net, a = three_pair_core()
    core = a.core
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None and first.controlling
    pair = first.pair
    request = binding_request(core, controlling=True, tiebreaker=10**9)
    assert core.on_request(0, pair.remote_address, request, 0.03) is not None
    assert not core.controlling and pair.state is PairState.WAITING
    list(core.poll_resend())
    assert core.poll_check(0.031) is None  # (the new check waits for Ta)
    assert not core.on_response(first, _refusal(first), first.destination, 0.032)
    assert list(core.poll_resend()) == []


def test_a_refused_check_starts_nothing() -> None:
    """A check that fails authentication (a wrong password here) is refused and starts no
    checks of ours."""
    _net, a, b = two_agents(want=False)
    core = b.core
    request = binding_request(core, key=stun.short_term_key("not-the-password-at-all"))
    response = core.on_request(0, a.bases[0], request, 0.0)
    assert response is not None
    assert stun.decode(response).message_class is stun.MessageClass.ERROR
    assert core.poll_check(0.0) is None
    assert core.state is ConnectionState.NEW


def test_request_on_in_progress_pair_resends_it() -> None:
    """RFC 8445 §7.3.1.4: the peer's request on a pair whose check is in flight sends that
    check again, as the same transaction (so a response to any copy of it counts), at twice
    the age the request found it: here 10 ms, so at 20 ms; and only once."""
    _net, a = three_pair_core()
    core = a.core
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None
    assert list(core.poll_resend()) == []
    core.on_request(0, first.pair.remote_address, binding_request(core), 0.01)
    ((tid, at),) = core.poll_resend()
    assert tid == first.transaction_id and at == pytest.approx(0.02)
    assert list(core.poll_resend()) == []
    core.on_request(0, first.pair.remote_address, binding_request(core, tid=b"U" * 12), 0.011)
    assert list(core.poll_resend()) == []  # once per check
    again = core.poll_check(core.timing.ta)
    assert again is None or again.pair is not first.pair


def _checking(*, controlling: bool) -> tuple[AgentCore, Check, bytes]:
    """A core whose single pair's own check went out at t=0 (the peer, absent, has not
    answered it); returns the core, the check and the peer's key (its password's)."""
    net, a, b = two_agents(a_controlling=controlling, want=False)
    del net.endpoints["b"]
    core = a.core
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    assert check is not None
    return core, check, stun.short_term_key(b.core.local.pwd)


def _reply(
    check: Check,
    key: bytes | None,
    message_class: stun.MessageClass = stun.MessageClass.SUCCESS,
    attributes: list[stun.Attribute] | None = None,
) -> bytes:
    """A response to ``check``: by default a success with the address it came from (as the
    peer sees it), signed with ``key`` (unsigned if None)."""
    if attributes is None:
        attributes = [stun.XorMappedAddress(check.pair.local.address, check.pair.local.port)]
    return stun.Message(
        stun.Method.BINDING,
        message_class,
        transaction_id=check.transaction_id,
        attributes=attributes,
    ).encode(integrity_key=key, fingerprint=True)


def _checking_core(*, controlling: bool) -> tuple[AgentCore, Check, bytes]:
    """A core whose single pair's own check went out at t=0 (the peer, absent, has not
    answered it); returns the core, the check and the peer's answer to it."""
    core, check, key = _checking(controlling=controlling)
    return core, check, _reply(check, key)


def test_a_401_before_a_signed_answer_is_not_counted_against_the_credentials() -> None:
    """A 401 (the peer had not taken this agent's parameters yet: they were on their way,
    after a restart), then a signed answer: the credentials hold, and a later failure of
    another cause does not blame them.  (The 401 was still counted, and named.)"""
    core, check, key = _checking(controlling=False)
    assert not core.on_response(check, _refusal(check), check.destination, 0.005)
    assert core.checks_unauthorized == 1
    assert core.on_response(check, stun.decode(_reply(check, key)), check.destination, 0.01)
    assert core.checks_unauthorized == 0


def test_a_401_after_a_signed_answer_is_not_counted_against_the_credentials() -> None:
    """Two checks go as the peer takes this agent's parameters: the second's signed answer
    (a refusal of another cause, 400) comes first, then the first's 401, made before but
    come over a slower path.  The credentials held: when the generation fails (the first
    check runs out), they are not blamed.  (The 401 that came after was counted again.)"""
    net, a, b = two_agents(
        want=False, timing=FAST, b_hosts=(("10.0.0.2", 6000), ("10.0.0.3", 6000))
    )
    del net.endpoints["b"]
    core = a.core
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    now, second = 0.0, None
    while second is None:
        now += 0.005
        core.on_timer(now)
        second = core.poll_check(now)
    assert first is not None and first.pair is not second.pair
    key = stun.short_term_key(b.core.local.pwd)
    refused = _reply(second, key, stun.MessageClass.ERROR, [stun.ErrorCode(400)])
    assert core.on_response(second, stun.decode(refused), second.destination, now + 0.01)
    assert not core.on_response(first, _refusal(first), first.destination, now + 0.02)
    core.on_timeout(first, now + 2.0)
    assert core.state is ConnectionState.FAILED
    assert core.checks_unauthorized == 0


def _proved_pair_core(*, controlling: bool) -> tuple[AgentCore, Pair]:
    """A core whose single pair's own check has just succeeded at t=0.01, with an RTT of
    0.01 s; the peer has not checked the pair."""
    core, check, answer = _checking_core(controlling=controlling)
    assert core.on_response(check, stun.decode(answer), check.destination, 0.01)
    # (a controlling core goes on to nominate the pair, which puts it back in progress)
    assert check.pair.state is (PairState.IN_PROGRESS if controlling else PairState.SUCCEEDED)
    return core, check.pair


@pytest.mark.parametrize(
    "mapped",
    [("::1", 5000), ("::", 5000), ("10.0.0.1", 0), ("0.0.0.0", 5000), ("224.0.0.1", 5000)],
)
def test_a_mapped_address_no_candidate_can_have_tells_nothing(mapped: tuple[str, int]) -> None:
    """A success whose XOR-MAPPED-ADDRESS is of the other family, port 0, unspecified or
    multicast (a peer's mistake, or a lie) proves the pair, which keeps its own local
    candidate: no peer-reflexive one at that address (the selected pair had an IPv6 local
    with an IPv4 remote; the authfuzz review)."""
    core, check, key = _checking(controlling=False)
    answer = _reply(check, key, attributes=[stun.XorMappedAddress(*mapped)])
    assert core.on_response(check, stun.decode(answer), check.destination, 0.01)
    pair = check.pair
    assert pair.state is PairState.SUCCEEDED
    assert pair.valid_local is pair.local
    assert [c for c, _ in core.local_candidates if c.type is CandidateType.PRFLX] == []


def test_a_mapped_address_that_tells_nothing_keeps_the_local_candidate_learned() -> None:
    """The first check found the pair seen by the peer as 203.0.113.9:1000 (a NAT's
    mapping); the nomination's answer names an IPv6 address, which tells nothing: the pair
    keeps that peer-reflexive local candidate and its priority (it fell back to its host
    candidate, which the peer never saw; the p40pass1 review)."""
    core, check, key = _checking(controlling=True)
    learned: list[stun.Attribute] = [stun.XorMappedAddress("203.0.113.9", 1000)]
    assert core.on_response(
        check, stun.decode(_reply(check, key, attributes=learned)), check.destination, 0.01
    )
    pair = check.pair
    prflx, priority = pair.valid_local, pair.valid_priority
    assert prflx is not None and prflx.type is CandidateType.PRFLX
    now, nomination = 0.01, None
    while nomination is None:
        now += 0.01
        core.on_timer(now)
        nomination = core.poll_check(now)
    assert nomination.nominating and nomination.pair is pair
    bogus: list[stun.Attribute] = [stun.XorMappedAddress("::1", 5000)]
    answer = stun.decode(_reply(nomination, key, attributes=bogus))
    assert core.on_response(nomination, answer, nomination.destination, now + 0.01)
    assert core.selected is pair
    assert (pair.valid_local, pair.valid_priority) == (prflx, priority)


def test_a_check_awaits_its_answer_until_a_signed_one_comes() -> None:
    """What a shell that routes answers by transaction (a UDP mux) asks: an unsigned answer
    (a stranger's, who saw the check go by) leaves the check awaiting the peer's."""
    core, check, key = _checking(controlling=False)
    tid = check.transaction_id
    assert core.awaits_answer(tid) and not core.awaits_answer(b"x" * 12)
    assert not core.on_response(check, stun.decode(_reply(check, None)), check.destination, 0.01)
    assert core.awaits_answer(tid)
    assert core.on_response(check, stun.decode(_reply(check, key)), check.destination, 0.02)
    assert not core.awaits_answer(tid)


def test_a_consent_check_past_its_rto_awaits_its_answer_until_a_signed_one_comes() -> None:
    """The same for a consent check whose RTO passed (on a path slower than the RTO every
    answer comes late, and is taken: see ``_keep_late``): a stranger's unsigned answer
    leaves it awaiting the peer's, which ends it.  (Were it not awaited, a UDP mux ended
    its answer route at the stranger's, and dropped the peer's late answer, from an address
    two agents proved, as ambiguous: the mutants10 review.)"""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=2.0)
    net.run_for(3.0)
    net.drop_all()  # (every answer late from here: none comes in time)
    net.run_until(lambda: any(c.consent for _, c in a.timeouts), max_time=net.now + 20.0)
    late = [c for _, c in a.timeouts if c.consent and c.pair is a.core.selected][-1]
    now, key = net.now, stun.short_term_key(b.core.local.pwd)
    assert a.core.awaits_answer(late.transaction_id)
    unsigned = stun.decode(_reply(late, None))
    assert not a.core.on_late_response(unsigned, late.destination, now, base=late.base)
    assert a.core.awaits_answer(late.transaction_id)
    signed = stun.decode(_reply(late, key))
    assert a.core.on_late_response(signed, late.destination, now, base=late.base)
    assert not a.core.awaits_answer(late.transaction_id)


def test_peer_reflexive_local_candidates_no_pair_stands_on_go() -> None:
    """A peer that flips the agent's role again and again (RFC 8445 §7.3.1.1: the agent
    takes control and nominates its selected pair anew, then gives it back) and answers
    each nomination as from another address: each answer made a peer-reflexive local
    candidate, and none went until a restart (300 flips, 300 candidates for one pair; the
    authfuzz review).  Only the one the pair stands on stays."""
    core, check, key = _checking(controlling=False)
    pair, now = check.pair, 0.01

    def answer(check: Check, port: int) -> None:
        mapped: list[stun.Attribute] = [stun.XorMappedAddress("203.0.113.9", port)]
        assert core.on_response(
            check, stun.decode(_reply(check, key, attributes=mapped)), check.destination, now
        )

    answer(check, 1000)
    nomination = binding_request(core, controlling=True, use_candidate=True)
    core.on_request(pair.base, check.destination, nomination, now)
    assert core.selected is pair
    for flip in range(1, 31):
        takeover = binding_request(core, controlling=False, tiebreaker=0, tid=b"F" * 12)
        core.on_request(pair.base, check.destination, takeover, now)
        assert core.controlling
        renominated = None
        while renominated is None:
            now += 0.01
            core.on_timer(now)
            renominated = core.poll_check(now)
        answer(renominated, 1000 + flip)
        back = binding_request(core, controlling=True, tiebreaker=2**64 - 1, tid=b"B" * 12)
        core.on_request(pair.base, check.destination, back, now)
        assert not core.controlling
    learned = [c for c, _ in core.local_candidates if c.type is CandidateType.PRFLX]
    assert learned == [pair.valid_local]
    assert core.selected is pair


# -- checks made ahead (AgentCore.prepare) --------------------------------------------------------


def _attributes(message: bytes, key: bytes) -> list[str]:
    """The attribute names of an encoded check, once its MESSAGE-INTEGRITY verified."""
    decoded = stun.decode(message)
    assert decoded.verify_integrity(key)
    return [type(attribute).__name__ for attribute in decoded.attributes]


def test_the_first_check_is_made_ahead_during_signaling() -> None:
    """Signaling done (the harness lets the core prepare after each step), the first
    check is already made: checks starting take no new transaction id, and the check is
    the one a fresh core would have made."""
    _net, a, b = two_agents(want=False)
    tids = a.core._new_tid
    assert isinstance(tids, TidSource)
    made = tids.count
    assert made >= 1
    a.core.want_connection(0.0)
    check = a.core.poll_check(0.0)
    assert check is not None
    assert tids.count == made  # (none taken now)
    assert check.transaction_id == tids.prefix + made.to_bytes(8, "big")
    key = stun.short_term_key(b.core.local.pwd)
    assert _attributes(check.message, key) == [
        "Username",
        "Priority",
        "IceControlling",
        "MessageIntegrity",
        "Fingerprint",
    ]
    a.core.prepare()
    assert tids.count == made + 1  # the nomination of that pair, made ahead


def test_a_nomination_made_ahead_goes_out_when_the_pair_succeeds() -> None:
    net, a, b = two_agents()
    tids = a.core._new_tid
    assert isinstance(tids, TidSource)
    assert net.run_until(connected(a, b), max_time=1.0)
    nominations = [c for _, c in a.started if c.nominating]
    assert len(nominations) == 1
    key = stun.short_term_key(b.core.local.pwd)
    assert "UseCandidate" in _attributes(nominations[0].message, key)
    # Each transaction id taken went out: nothing was made ahead for nothing.
    assert tids.count == len(a.started)


def test_under_aggressive_nomination_the_check_made_ahead_nominates() -> None:
    _net, a, b = two_agents(nomination=AGGRESSIVE, want=False)
    tids = a.core._new_tid
    assert isinstance(tids, TidSource)
    made = tids.count
    a.core.want_connection(0.0)
    check = a.core.poll_check(0.0)
    assert check is not None and check.nominating
    assert tids.count == made
    key = stun.short_term_key(b.core.local.pwd)
    assert "UseCandidate" in _attributes(check.message, key)
    a.core.prepare()
    assert tids.count == made  # no separate nomination to make


def test_a_check_made_ahead_in_the_other_role_is_not_used() -> None:
    """A role switch after a check was made ahead: the check goes out made afresh, in the
    new role."""
    _net, a, b = two_agents(a_controlling=False, want=False)  # both controlled
    core = a.core
    tids = core._new_tid
    assert isinstance(tids, TidSource)
    made = tids.count
    # (As a 487, or the peer's ICE-CONTROLLED with a higher tie-breaker.)
    core._switch_role("a test")
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    assert check is not None
    assert tids.count == made + 1
    key = stun.short_term_key(b.core.local.pwd)
    assert "IceControlling" in _attributes(check.message, key)


def test_a_check_on_another_pair_leaves_the_one_made_ahead() -> None:
    """A check on another pair than the one made ahead for (a triggered check, say) is
    made afresh, and the one made ahead waits for its own pair."""
    _net, a, _b = two_agents(a_hosts=[("10.0.0.1", 5000), ("10.0.1.1", 5001)], want=False)
    core = a.core
    tids = core._new_tid
    assert isinstance(tids, TidSource)
    first, second = list(core.checklist)
    assert core.checklist.peek_ordinary() is first
    made = tids.count  # (the last one taken is first's check, made ahead)
    core.want_connection(0.0)
    other = core._start_check(second, nominating=False, now=0.0)
    assert tids.count == made + 1
    assert other.transaction_id == tids.prefix + (made + 1).to_bytes(8, "big")
    check = core.poll_check(0.0)
    assert check is not None and check.pair is first
    assert check.transaction_id == tids.prefix + made.to_bytes(8, "big")
    assert tids.count == made + 1


def test_nothing_is_made_ahead_once_a_pair_is_selected() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    for endpoint in (a, b):
        tids = endpoint.core._new_tid
        assert isinstance(tids, TidSource)
        count = tids.count
        endpoint.core.prepare()
        assert tids.count == count


def test_a_lite_agent_makes_no_checks_ahead() -> None:
    _net, _a, b = two_agents(b_lite=True, want=False)
    tids = b.core._new_tid
    assert isinstance(tids, TidSource)
    b.core.prepare()
    assert tids.count == 0


@pytest.mark.parametrize(
    ("where", "accepted"),
    [("as sent", True), ("from another address", False), ("on another transport", False)],
)
def test_a_response_must_be_symmetric(where: str, accepted: bool) -> None:
    """RFC 8445 §7.2.5.2.1: a success response counts only if it came from where the check
    went, to where it left from; otherwise the check's pair fails."""
    core, check, answer = _checking_core(controlling=False)
    source, base = check.destination, check.base
    if where == "from another address":
        source = (source[0], source[1] + 1)
    elif where == "on another transport":
        base += 1
    assert core.on_response(check, stun.decode(answer), source, 0.01, base=base)
    assert check.pair.state is (PairState.SUCCEEDED if accepted else PairState.FAILED)


@pytest.mark.parametrize(
    ("answer", "accepted", "state"),
    [
        ("signed with another key", False, PairState.IN_PROGRESS),
        ("unsigned", False, PairState.IN_PROGRESS),
        ("an error other than 487", True, PairState.FAILED),
        ("a success without XOR-MAPPED-ADDRESS", True, PairState.FAILED),
        ("a success with an unknown comprehension-required attribute", True, PairState.FAILED),
        ("a 487 with an unknown comprehension-required attribute", True, PairState.FAILED),
    ],
)
def test_answers_that_prove_nothing(answer: str, accepted: bool, state: PairState) -> None:
    """A response whose MESSAGE-INTEGRITY does not verify with the peer's password is
    ignored (RFC 8445 §7.2.5.1): it changes no state, and the check still waits for its
    real answer.  An authentic error response other than 487 (RFC 8489 §6.3.4), a
    success without the mapped address that every Binding success carries (RFC 8489
    §6.3.1.2), or any response with an unknown comprehension-required attribute (RFC 8489
    §6.3.3, §6.3.4: the transaction failed; a 487 then switches no role), ends the
    check, and its pair fails."""
    core, check, key = _checking(controlling=False)
    unknown = stun.UnknownAttribute(0x7F01, b"\x00\x01\x02\x03")
    if answer == "signed with another key":
        data = _reply(check, stun.short_term_key("y" * 22))
    elif answer == "unsigned":
        data = _reply(check, None)
    elif answer == "an error other than 487":
        data = _reply(check, key, stun.MessageClass.ERROR, [stun.ErrorCode(400, "Bad Request")])
    elif answer == "a success with an unknown comprehension-required attribute":
        mapped = stun.XorMappedAddress(check.pair.local.address, check.pair.local.port)
        data = _reply(check, key, attributes=[mapped, unknown])
    elif answer == "a 487 with an unknown comprehension-required attribute":
        conflict = stun.ErrorCode(487, "Role Conflict")
        data = _reply(check, key, stun.MessageClass.ERROR, [conflict, unknown])
    else:
        data = _reply(check, key, attributes=[])
    source, base = check.destination, check.base
    assert core.on_response(check, stun.decode(data), source, 0.01, base=base) is accepted
    assert check.pair.state is state
    assert not core.controlling  # (no role switch)
    good = stun.decode(_reply(check, key))
    assert core.on_response(check, good, source, 0.02, base=base) is not accepted
    if not accepted:
        assert check.pair.state is PairState.SUCCEEDED  # the real answer still counts


@pytest.mark.parametrize("message_class", [stun.MessageClass.INDICATION, stun.MessageClass.SUCCESS])
def test_what_is_not_a_request_gets_no_answer_and_changes_nothing(
    message_class: stun.MessageClass,
) -> None:
    """A Binding indication (a keepalive, RFC 8445 §11) or a stray response handed to
    ``on_request`` is not answered, and triggers no check."""
    _net, a = three_pair_core()
    core = a.core
    pairs = list(core.checklist)
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None and first.pair is pairs[0]
    attributes: list[stun.Attribute] = [
        stun.Username(f"{core.local.ufrag}:{core.remote.ufrag if core.remote else 'peer'}"),
        stun.Priority(1_845_501_695),
        stun.IceControlled(5),
    ]
    message = stun.decode(
        stun.Message(stun.Method.BINDING, message_class, b"T" * 12, attributes).encode(
            integrity_key=stun.short_term_key(core.local.pwd), fingerprint=True
        )
    )
    assert core.on_request(0, pairs[2].remote_address, message, 0.01) is None
    assert [p.state for p in pairs] == [PairState.IN_PROGRESS] + [PairState.WAITING] * 2
    after = core.poll_check(core.timing.ta)
    assert after is not None and after.pair is pairs[1]  # no check triggered on pairs[2]


@pytest.mark.parametrize("best_pair", ["answers in time", "fails", "stays silent"])
def test_regular_nomination_waits_for_a_better_pair_at_most_the_nomination_delay(
    best_pair: str,
) -> None:
    """Regular nomination (RFC 8445 §8.1.1): the controlling agent nominates the best valid
    pair once no better pair can still succeed, or ``Timing.nomination_delay`` after the
    first valid pair.  Here the second-best pair succeeds while the best one's check is in
    flight: if the best answers before the delay, it is nominated at once; if it fails, the
    valid pair is nominated at once; if it stays silent, the valid pair is nominated when
    the delay is up, a time that ``next_deadline`` names."""
    net, a, b = two_agents(b_hosts=(), exchange=False)
    for i, address in enumerate(("10.0.0.2", "10.0.0.3", "10.0.0.4")):
        b.add_host(address, 6000, local_pref=65535 - i)  # (best first)
    net.exchange(a, b, end_of_candidates=True, want=False)
    del net.endpoints["b"]
    core, key = a.core, stun.short_term_key(b.core.local.pwd)
    pairs = list(core.checklist)
    assert pairs[0].priority > pairs[1].priority > pairs[2].priority
    ta, delay = core.timing.ta, core.timing.nomination_delay
    core.want_connection(0.0)
    best = core.poll_check(0.0)
    second = core.poll_check(ta)
    assert best is not None and best.pair is pairs[0]
    assert second is not None and second.pair is pairs[1]
    valid_at = ta + 0.01
    answer = stun.decode(_reply(second, key))
    assert core.on_response(second, answer, second.destination, valid_at, base=second.base)
    assert pairs[1].state is PairState.SUCCEEDED
    assert core.poll_check(valid_at) is None  # no nomination yet: the best may still work
    now = valid_at + 0.01
    if best_pair == "answers in time":
        answer = stun.decode(_reply(best, key))
        assert core.on_response(best, answer, best.destination, now, base=best.base)
        expected = pairs[0]
    elif best_pair == "fails":
        core.on_timeout(best, now)
        assert pairs[0].state is PairState.FAILED
        expected = pairs[1]
    else:
        # Through the core's own deadlines (the third pair's check is among them) up to the
        # one that nominates.
        while (due := core.next_deadline()) is not None and due < valid_at + delay:
            core.on_timer(due)
            check = core.poll_check(due)
            assert check is None or not check.nominating
        assert due is not None and due == pytest.approx(valid_at + delay)
        now = due
        core.on_timer(now)
        expected = pairs[1]
    nomination = core.poll_check(now)
    assert nomination is not None and nomination.nominating
    assert nomination.pair is expected


@pytest.mark.parametrize(
    ("direct_path", "timing", "dead_hosts"),
    [
        ("slow", Timing(), 0),
        ("dead", Timing(), 0),
        ("slow", Timing(rto=1.5), 0),  # (a slow link's timers: the retransmission at 1.5 s)
        ("dead", Timing(rto=1.5), 0),
        ("slow", Timing(), 24),  # (many pairs: a first RTO of 24 x ta, RFC 8445 §14.3)
    ],
)
def test_a_relayed_pair_waits_the_relay_nomination_delay_for_a_direct_one(
    direct_path: str, timing: Timing, dead_hosts: int
) -> None:
    """A relayed pair is valid while the direct one's first check was lost (each side's,
    as a router resolving ARP drops): with the short ``nomination_delay`` (0.25 s, less
    than the RTO) the relay was nominated, for the session's life.  A relayed best waits
    ``relay_nomination_delay`` (1 s), and at least a check's first RTO (``rto``, or ``ta``
    times the pairs being checked) plus ``nomination_delay``, for a better pair still being
    checked, so the direct path, valid at its retransmission, wins; a dead one costs that
    wait, not the time its checks take to fail (15.5 s)."""
    net = Network(latency=0.01)
    a = net.add_endpoint("a", controlling=True, tiebreaker=2, timing=timing)
    b = net.add_endpoint("b", controlling=False, tiebreaker=1, timing=timing)
    dead = {f"10.9.{i}.1" for i in range(dead_hosts)}  # (addresses that reach nothing)
    for i in range(dead_hosts):
        a.add_host(f"10.9.{i}.1", 5000, local_pref=65535 - i)
    a.add_host("10.0.0.1", 5000, local_pref=60000 if dead_hosts else 65535)
    relay_base = len(a.bases)
    a.bases[relay_base] = ("198.51.100.1", 7000)
    relay = make_candidate(
        "198.51.100.1",
        7000,
        type=CandidateType.RELAY,
        server="198.51.100.1",
        related=("203.0.113.1", 40000),
    )
    a.core.add_local_candidate(relay, relay_base)
    a.signalled.append(relay)
    b.add_host("10.0.0.2", 6000)
    direct = {("10.0.0.1", 5000), ("10.0.0.2", 6000)}
    lost_until = 0.005 + dead_hosts * timing.ta if direct_path == "slow" else math.inf
    net.drop(lambda p: net.now < lost_until and p.src in direct and p.dst in direct)
    net.drop(lambda p: p.src[0] in dead or p.dst[0] in dead)
    net.exchange(a, b)
    assert net.run_until(lambda: a.core.selected is not None, max_time=20)
    selected = a.core.selected
    assert selected is not None
    selected_at = net.now
    net.run_for(2)
    assert a.core.selected is selected  # (final)
    if direct_path == "slow":
        assert selected.local.type is CandidateType.HOST
    else:
        assert selected.local.type is CandidateType.RELAY
        delay = max(timing.relay_nomination_delay, timing.rto + timing.nomination_delay)
        assert delay <= selected_at < delay + 0.2, selected_at


@pytest.mark.parametrize("controlling", [False, True])
def test_controlled_pings_back_once_when_no_nomination_comes(controlling: bool) -> None:
    """A controlled agent whose pair succeeded and on which the peer has checked sends the
    peer one check of its own if no nomination comes within two round trips: a peer that
    nominates when a request arrives on a pair it has proved (Pion) then nominates at once.
    The pair's state does not change; a controlling agent never does this."""
    core, pair = _proved_pair_core(controlling=controlling)
    if controlling:
        nomination = core.poll_check(0.01)
        assert nomination is not None and nomination.nominating
    assert core.poll_check(0.01) is None  # nothing yet: the peer has not checked this pair
    request = binding_request(core, controlling=not controlling)
    assert core.on_request(0, pair.remote_address, request, 0.015) is not None
    assert core.poll_check(0.015) is None  # the peer may still nominate
    due = core.next_deadline()
    assert due is not None
    if controlling:
        assert due > 0.2  # only failure is ahead
        return
    assert due == pytest.approx(0.01 + 2 * 0.01)
    core.on_timer(due)
    ping = core.poll_check(due)
    assert ping is not None and ping.pair is pair and not ping.nominating
    assert pair.state is PairState.SUCCEEDED
    assert core.on_request(0, pair.remote_address, request, due + 0.01) is not None
    core.on_timer(due + 0.01)
    assert core.poll_check(due + 0.01) is None  # once per pair


def _peer_requests(core: AgentCore, pair: Pair, now: float, *, nominate: bool = False) -> None:
    """The controlling peer checks ``pair`` (with USE-CANDIDATE if ``nominate``); the core
    answers."""
    tid = b"N" * 12 if nominate else b"T" * 12
    request = binding_request(core, controlling=True, use_candidate=nominate, tid=tid)
    assert core.on_request(0, pair.remote_address, request, now) is not None


def test_a_check_crossing_ours_wants_a_ping_back_with_no_time_of_its_own() -> None:
    """The controlling peer's check arrives while the controlled core's own check on the pair
    is in flight: a ping-back is wanted at once (the shell sends it at once to a peer in
    another process), but it has no time of its own until the core's check succeeds; then
    the usual two round trips apply, and it goes once."""
    core, check, answer = _checking_core(controlling=False)
    pair = check.pair
    _peer_requests(core, pair, 0.005)  # crosses our check
    assert pair.state is PairState.IN_PROGRESS
    assert core.pingback_pending
    deadline = core.next_deadline()
    assert deadline is not None and deadline > 0.2  # no timer for it (only our check's own)
    core.on_timer(0.006)
    assert core.poll_check(0.006) is None  # its timer does not send it
    assert core.pingback_pending
    core.ping_back_now(0.007)
    ping = core.poll_check(0.007)
    assert ping is not None and ping.pair is pair and not ping.nominating
    assert pair.transaction == check.transaction_id  # beside our check, not instead of it
    assert not core.pingback_pending
    assert core.on_response(check, stun.decode(answer), check.destination, 0.01)
    assert pair.state is PairState.SUCCEEDED
    assert not core.pingback_pending  # pinged once already


def test_a_check_crossed_early_goes_again_no_sooner_than_resend_min() -> None:
    """A request that crosses our check at once (age 1 ms) sends it again at RESEND_MIN, not
    at 2 ms: a loopback or LAN answer is not that quick in a loaded process."""
    core, check, _answer = _checking_core(controlling=False)
    _peer_requests(core, check.pair, 0.001)
    ((tid, at),) = core.poll_resend()
    assert tid == check.transaction_id and at == pytest.approx(RESEND_MIN)


def test_a_nomination_in_flight_is_not_sent_again_for_a_peer_request() -> None:
    """A nomination goes over a pair already proved: a peer's request on its pair that
    crosses its latest copy (2 ms after it) sends no copy of it."""
    core, pair = _proved_pair_core(controlling=True)  # ... and nominating it now
    nomination = core.poll_check(0.01)
    assert nomination is not None and nomination.nominating and nomination.pair is pair
    assert pair.state is PairState.IN_PROGRESS
    request = binding_request(core, controlling=False)  # from the controlled peer
    assert core.on_request(0, pair.remote_address, request, 0.012) is not None
    assert list(core.poll_resend()) == []


def test_a_nomination_goes_again_at_each_peer_request_an_rto_after_its_latest_copy() -> None:
    """Loss that lasts: the nomination's copies go 0.5 s, then 1 s apart (3 s at the last
    with the ``rto_max`` of before), all their answers lost, while the peer's checks come.
    A peer request that comes an RTO or more after the latest copy (which was lost, then)
    has the nomination sent again at once, at each such request; one that crosses a copy,
    none.  Before, no request sent a nomination again: in the NAT lab, a third of the
    packets lost each way, it took 17 s to connect trice to trice, the peer's checks coming
    every 2 s meanwhile."""
    core, pair = _proved_pair_core(controlling=True)
    nomination = core.poll_check(0.01)
    assert nomination is not None and nomination.nominating
    tid, start = nomination.transaction_id, 0.01
    assert nomination.schedule[:3] == pytest.approx((0.0, 0.5, 1.5))

    def request(at: float, n: int) -> list[tuple[bytes, float]]:
        message = binding_request(core, controlling=False, tid=bytes([n]) * 12)
        assert core.on_request(0, pair.remote_address, message, at) is not None
        return [(t, round(when, 9)) for t, when in core.poll_resend()]

    # (The copies went at start + 0 and start + 0.5: the latest 0.7 s before.)
    assert request(start + 1.2, 1) == [(tid, round(start + 1.2, 9))]
    assert request(start + 1.3, 2) == []  # (0.1 s after the copy it sent)
    assert request(start + 3.2, 3) == [(tid, round(start + 3.2, 9))]  # (0.7 s after 2.5)
    assert request(start + 3.25, 4) == []


def test_a_check_goes_again_at_each_peer_request_an_rto_after_its_latest_copy() -> None:
    """An ordinary check: a request that crosses it sends it once more at twice its age,
    once a transaction (test_request_on_in_progress_pair_resends_it); but a request that
    comes an RTO or more after the latest copy sends it again at once, each time (before,
    once a transaction: under lasting loss the next copy was up to a second away, 3 s with
    the ``rto_max`` of before)."""
    _net, a = three_pair_core()
    core = a.core
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None
    tid, remote = first.transaction_id, first.pair.remote_address

    def request(at: float, n: int) -> list[tuple[bytes, float]]:
        assert core.on_request(0, remote, binding_request(core, tid=bytes([n]) * 12), at)
        return [(t, round(when, 9)) for t, when in core.poll_resend()]

    assert request(0.01, 1) == [(tid, round(0.02, 9))]  # (crossing: twice its age)
    assert request(0.011, 2) == []  # (once a transaction)
    assert request(1.2, 3) == [(tid, round(1.2, 9))]  # (the copy at 0.5: 0.7 s before)
    assert request(1.25, 4) == []
    assert request(3.2, 5) == [(tid, round(3.2, 9))]  # (the copy at 2.5: 0.7 s before)


def _answer_to(check: Check, peer: AgentCore) -> stun.Message:
    return stun.decode(
        stun.Message(
            stun.Method.BINDING,
            stun.MessageClass.SUCCESS,
            transaction_id=check.transaction_id,
            attributes=[stun.XorMappedAddress(check.pair.local.address, check.pair.local.port)],
        ).encode(integrity_key=stun.short_term_key(peer.local.pwd), fingerprint=True)
    )


def test_a_crossing_ping_back_gets_its_time_when_our_check_succeeds() -> None:
    """Wanted when the peer's check crossed ours, the ping-back has no time of its own; once
    our check succeeds, it comes due two round trips later (should the shell not have sent
    it), and goes once."""
    core, check, answer = _checking_core(controlling=False)
    _peer_requests(core, check.pair, 0.005)  # crosses our check
    assert core.on_response(check, stun.decode(answer), check.destination, 0.01)
    due = core.next_deadline()
    assert due is not None and due == pytest.approx(0.01 + 2 * 0.01)
    core.on_timer(due)
    ping = core.poll_check(due)
    assert ping is not None and ping.pair is check.pair and not ping.nominating
    core.on_timer(due + 0.1)
    assert core.poll_check(due + 0.1) is None  # once per pair


def test_a_ping_back_whose_pair_fails_leaves_the_way_to_another_pair() -> None:
    """One ping-back is pending at a time: when its pair fails before it went, another pair
    that succeeds, and on which the peer checks, gets one (at its time)."""
    net, a, b = two_agents(
        a_controlling=False, want=False, b_hosts=(("10.0.0.2", 6000), ("10.0.0.3", 6000))
    )
    del net.endpoints["b"]
    core = a.core
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None
    second = core.poll_check(1.0)  # (after Ta)
    assert second is not None and second.pair is not first.pair
    _peer_requests(core, first.pair, 1.001)  # crosses the first check: a ping-back wanted
    assert core.pingback_pending
    # ... and its pair fails before the ping went (an error answer: a check that timed out
    # while the peer's request came would be made again, see test_core_network.py).
    refused = stun.decode(first.message).error_response(500, "Server Error")
    key = stun.short_term_key(b.core.local.pwd)
    answer = stun.decode(refused.encode(integrity_key=key, fingerprint=True))
    assert core.on_response(first, answer, first.destination, 1.002)
    assert first.pair.state is PairState.FAILED
    assert not core.pingback_pending
    assert core.on_response(second, _answer_to(second, b.core), second.destination, 1.01)
    _peer_requests(core, second.pair, 1.02)
    assert core.pingback_pending
    due = core.next_deadline()
    assert due is not None and due == pytest.approx(1.01 + 2 * 0.01)
    core.on_timer(due)
    ping = core.poll_check(due)
    assert ping is not None and ping.pair is second.pair


def test_ping_back_now_sends_the_pending_ping_back_before_its_time() -> None:
    """The shell sends a pending ping-back to a peer in another process at once
    (ping_back_now), not at its timer; with nothing pending, or once a pair is selected, it
    does nothing."""
    core, pair = _proved_pair_core(controlling=False)
    assert not core.pingback_pending
    core.ping_back_now(0.011)
    assert core.poll_check(0.011) is None  # nothing pending: nothing sent
    _peer_requests(core, pair, 0.012)
    assert core.pingback_pending
    due = core.next_deadline()
    assert due is not None and due > 0.012  # its timer is later...
    core.ping_back_now(0.012)  # ... but the shell need not wait for it
    ping = core.poll_check(0.012)
    assert ping is not None and ping.pair is pair and not ping.nominating
    assert not core.pingback_pending
    core.on_timer(due)
    assert core.poll_check(due) is None  # once per pair


@pytest.mark.parametrize("ping", [True, False])
def test_a_ping_back_is_made_ahead_when_the_shell_asks(ping: bool) -> None:
    """With ``prepare(ping=True)`` (the shell asks so when the peer is in another process,
    where a ping-back goes at once), a controlled agent makes ahead the ping-back of the pair
    its check is in flight on: when the peer's check crosses ours, the ping goes out without
    a new transaction id.  Without it, the ping is made when it is wanted."""
    core, check, _answer = _checking_core(controlling=False)
    tids = core._new_tid
    assert isinstance(tids, TidSource)
    core.prepare(ping=ping)
    made = tids.count
    _peer_requests(core, check.pair, 0.005)  # crosses our check: a ping-back is wanted
    core.ping_back_now(0.005)
    pingback = core.poll_check(0.005)
    assert pingback is not None and pingback.pair is check.pair and not pingback.nominating
    assert tids.count == (made if ping else made + 1)
    core.prepare(ping=ping)
    assert tids.count == (made if ping else made + 1)  # (once per pair: nothing more)


def test_a_pair_the_peer_checked_before_ours_went_pings_back_only_at_its_time() -> None:
    """The peer's check came first (it started ours) and ours went behind our answer: the
    peer had proved the pair when ours reached it, so a peer that nominates on our check has
    done so.  No ping-back soon (none made ahead, none for the shell to send at once); one
    at its time, should no nomination come."""
    net, a, b = two_agents(a_controlling=False, want=False)
    del net.endpoints["b"]
    core = a.core
    tids = core._new_tid
    assert isinstance(tids, TidSource)
    (pair,) = list(core.checklist)
    _peer_requests(core, pair, 0.0)
    check = core.poll_check(0.0)
    assert check is not None and check.pair is pair and not check.nominating
    made = tids.count
    core.prepare(ping=True)
    assert tids.count == made  # no ping made ahead (and no other pair to check)
    assert core.on_response(check, _answer_to(check, b.core), check.destination, 0.01)
    assert pair.state is PairState.SUCCEEDED
    assert not core.pingback_pending
    core.ping_back_now(0.01)
    assert core.poll_check(0.01) is None
    due = core.next_deadline()
    wait = min(max(PINGBACK_RTTS * 0.01, PINGBACK_MIN), PINGBACK_MAX)
    assert due is not None and due == pytest.approx(0.01 + wait)
    core.on_timer(due)
    ping = core.poll_check(due)
    assert ping is not None and ping.pair is pair and not ping.nominating


def test_a_controlling_agent_makes_no_ping_back_ahead() -> None:
    """Only a controlled agent pings back: ``prepare(ping=True)`` makes a controlling agent
    nothing more than ``prepare()`` does (its nomination)."""
    counts = []
    for ping in (False, True):
        core, _check, _answer = _checking_core(controlling=True)
        tids = core._new_tid
        assert isinstance(tids, TidSource)
        before = tids.count
        core.prepare(ping=ping)
        counts.append(tids.count - before)
    assert counts[0] == counts[1]


def test_ping_back_now_after_a_nomination_sends_nothing() -> None:
    core, pair = _proved_pair_core(controlling=False)
    _peer_requests(core, pair, 0.012)
    _peer_requests(core, pair, 0.013, nominate=True)
    assert core.selected is pair and not core.pingback_pending
    core.ping_back_now(0.014)
    assert core.poll_check(0.014) is None


def test_no_ping_back_is_pending_once_ice_failed() -> None:
    """A ping-back still waiting when ICE fails is dropped: nothing is pending (the shell
    would otherwise try to send it again and again), and nothing is sent."""
    core, pair = _proved_pair_core(controlling=False)
    _peer_requests(core, pair, 0.012)
    assert core.pingback_pending
    late = core.timing.failed_timeout + 1.0
    core.on_timer(late)
    assert core.state is ConnectionState.FAILED
    assert not core.pingback_pending
    core.ping_back_now(late)
    assert core.poll_check(late) is None


def test_no_pingback_when_the_nomination_comes_in_time() -> None:
    core, pair = _proved_pair_core(controlling=False)
    _peer_requests(core, pair, 0.015)
    _peer_requests(core, pair, 0.02, nominate=True)
    assert core.selected is pair
    core.on_timer(0.05)
    assert core.poll_check(0.05) is None


# -- peer-reflexive candidates (RFC 8445 §7.3.1.3, §7.2.5.3.1) ----------------------------------


def test_prflx_remote_learned_from_request() -> None:
    _net, a = three_pair_core()
    core = a.core
    before = len(core.checklist)
    source = ("198.51.100.7", 41000)
    assert not core.is_remote_address(source)
    request = binding_request(core, priority=1_862_270_975)
    response = core.on_request(0, source, request, 0.0)
    assert response is not None
    decoded = stun.decode(response)
    assert decoded.message_class is stun.MessageClass.SUCCESS
    mapped = decoded.get(stun.XorMappedAddress)
    assert mapped is not None and (mapped.address, mapped.port) == source
    prflx = core.remote_candidates[-1]
    assert prflx.type is CandidateType.PRFLX
    assert prflx.transport_address == source
    assert prflx.priority == 1_862_270_975
    assert core.is_remote_address(source)
    assert len(core.checklist) == before + 1
    pair = core.checklist.find(0, source)
    assert pair is not None and pair.state is PairState.WAITING
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    assert check is not None and check.pair is pair  # the triggered check goes first


def test_prflx_through_nat() -> None:
    nat = Nat("203.0.113.1")
    net, a, b = two_agents(a_nat=nat, a_hosts=[("192.168.1.10", 5000)])
    assert net.run_until(connected(a, b), max_time=5.0)
    public = nat.mappings[("192.168.1.10", 5000)]
    # a learned its public address from the XOR-MAPPED-ADDRESS of b's response.
    pa = a.core.selected_pair()
    assert pa is not None
    assert pa.local.type is CandidateType.PRFLX
    assert pa.local.transport_address == public
    assert (pa.local.related_address, pa.local.related_port) == ("192.168.1.10", 5000)
    # b learned it from a's request, with that request's PRIORITY.
    pb = b.core.selected_pair()
    assert pb is not None
    assert pb.remote.type is CandidateType.PRFLX
    assert pb.remote.transport_address == public
    first = net.packets(sender="a", requests=True)[0]
    priority = first.message.get(stun.Priority)
    assert priority is not None and pb.remote.priority == priority.value
    assert priority.value == candidate_priority(CandidateType.PRFLX, 65535, 1)
    # b's checks to a's private address went nowhere.
    assert any(reason == "unroutable" and p.sender == "b" for reason, p in net.dropped)
    assert_valid_events(a, b)


def test_both_sides_rank_a_path_behind_a_nat_by_the_same_candidate() -> None:
    """RFC 8445 §7.2.5.3.2: a's valid pair is ranked by the peer-reflexive candidate b saw
    (its check's PRIORITY), as b ranks it.  When a's server-reflexive candidate of that
    address comes later (its STUN answer was slow), a's valid pair takes it in the
    peer-reflexive one's place, as b does once it is signalled: both rank the path by the
    srflx candidate then."""
    nat = Nat("203.0.113.1")
    net, a, b = two_agents(a_nat=nat, a_hosts=[("192.168.1.10", 5000)], end_of_candidates=False)
    assert net.run_until(connected(a, b), max_time=5.0)
    pa, pb = a.core.selected, b.core.selected
    assert pa is not None and pb is not None and pa.valid_local is not None
    assert pa.valid_local.type is CandidateType.PRFLX
    assert pa.valid_priority == pb.valid_priority < pa.priority

    host = a.signalled[0]
    srflx = srflx_candidate(host, pa.valid_local.transport_address, "stun")
    a.core.add_local_candidate(srflx, 0)
    assert pa.valid_local is srflx and a.core.selected_pair() == CandidatePair(srflx, pb.local)
    assert b.core.add_remote_candidate(srflx)
    assert pb.remote == srflx
    assert pa.valid_priority == pb.valid_priority
    assert pa.valid_priority == compute_pair_priority(srflx, pb.local, controlling=True)


def _behind_a_nat_to_more_hosts(
    nomination_delay: float, b_more: Sequence[tuple[str, int, int]]
) -> tuple[Network, Endpoint, Endpoint]:
    """``a`` behind a NAT, with one host; ``b`` with a public host and ``b_more`` (address,
    port, local preference: ranked below it); 20 ms each way; not signalled yet."""
    timing = dataclasses.replace(FAST, nomination_delay=nomination_delay)
    net, a, b = two_agents(
        a_nat=Nat("203.0.113.1"),
        a_hosts=[("192.168.1.10", 5000)],
        b_hosts=[("198.51.100.2", 6000)],
        timing=timing,
        exchange=False,
        latency=0.02,
    )
    for address, port, preference in b_more:
        b.add_host(address, port, local_pref=preference)
    return net, a, b


def test_checks_after_the_srflx_candidate_came_take_it_too() -> None:
    """The srflx candidate comes after a's first check succeeded through the NAT: the
    peer-reflexive candidate it replaces is gone from a's local candidates, so a check that
    succeeds later (b's second address here, or any after an ICE restart) takes the srflx
    one too, as b ranks it; and both sides agree on the best valid pair."""
    net, a, b = _behind_a_nat_to_more_hosts(5.0, [("198.51.100.3", 6001, 60000)])
    net.exchange(a, b, end_of_candidates=False)

    def succeeded(endpoint: Endpoint) -> list[Pair]:
        return [p for p in endpoint.core.checklist if p.state is PairState.SUCCEEDED]

    assert net.run_until(lambda: bool(succeeded(a)), max_time=5.0)
    (first,) = succeeded(a)
    assert first.valid_local is not None and first.valid_local.type is CandidateType.PRFLX
    srflx = srflx_candidate(a.signalled[0], first.valid_local.transport_address, "stun")
    a.core.add_local_candidate(srflx, 0)
    assert b.core.add_remote_candidate(srflx)
    assert all(c.type is not CandidateType.PRFLX for c, _ in a.core.local_candidates)
    assert net.run_until(lambda: len(succeeded(a)) == 2, max_time=5.0)
    assert all(p.valid_local is srflx for p in succeeded(a))
    best_a, best_b = a.core.checklist.best_valid(), b.core.checklist.best_valid()
    assert best_a is not None and best_b is not None
    assert best_a.remote_address == b.bases[best_b.base]
    assert best_a.valid_priority == best_b.valid_priority


def test_regular_nomination_behind_a_nat_waits_for_no_pair_that_cannot_be_better() -> None:
    """a is behind a NAT; b has two more host candidates, ranked below its first.  Once a's
    check to b's first succeeds, seen through the NAT (peer-reflexive), the pairs still to
    check, which the NAT will show the same way, cannot beat it: a nominates at once (at
    0.04 s), not after checking them too (at 0.14 s, as when a pending pair was taken to
    rank as its host candidate, above the peer-reflexive one of the valid pair)."""
    more = [("172.17.0.1", 6001, 60000), ("172.18.0.1", 6002, 50000)]
    net, a, b = _behind_a_nat_to_more_hosts(1.0, more)
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=5.0)
    nominations = [t for t, check in a.started if check.nominating]
    assert nominations and nominations[0] < 0.1
    selected = a.core.selected
    assert selected is not None and selected.remote_address == ("198.51.100.2", 6000)


def test_nat_filters_unsolicited_inbound() -> None:
    nat = Nat("203.0.113.1")
    net, a, b = two_agents(a_nat=nat, a_hosts=[("192.168.1.10", 5000)], want=False)
    b.core.add_local_candidate(make_candidate("10.0.0.9", 7000), 1)
    b.bases[1] = ("10.0.0.9", 7000)
    public = nat.outbound(("192.168.1.10", 5000), ("10.0.0.2", 6000))
    net.send(b, 1, public, binding_request(a.core).raw or b"")
    net.send(b, 0, public, binding_request(a.core).raw or b"")
    net.run_for(0.1)
    # The request from a source a never sent to is filtered; the other comes through.
    assert [(reason, p.private_src) for reason, p in net.dropped] == [
        ("filtered", ("10.0.0.9", 7000))
    ]
    # That request started a's own checks (connect() or not): a's first request is its
    # triggered check back, through the mapping the request came in by.
    first = net.packets(sender="a", requests=True)[0]
    assert (first.private_src, first.dst) == (("192.168.1.10", 5000), ("10.0.0.2", 6000))
    assert a.core.state is not ConnectionState.NEW


# -- role conflicts (RFC 8445 §7.3.1.1, §7.2.5.1) -----------------------------------------------


@pytest.mark.parametrize("nomination", [REGULAR, AGGRESSIVE])
@pytest.mark.parametrize("first", ["a", "b"])
@pytest.mark.parametrize("role", ["controlling", "controlled"])
def test_role_conflict_resolved(nomination: Nomination, first: str, role: str) -> None:
    both = role == "controlling"
    # a has the larger tiebreaker, so a ends up controlling.
    net, a, b = two_agents(
        a_controlling=both, b_controlling=both, nomination=nomination, want=False
    )
    early, late = (a, b) if first == "a" else (b, a)
    early.core.want_connection(net.now)
    net.run_for(0.2)
    late.core.want_connection(net.now)
    assert net.run_until(connected(a, b), max_time=5.0)
    assert a.core.controlling and not b.core.controlling
    assert_mirrored(a, b)
    assert_valid_events(a, b)
    net.run_for(3.0)  # (past GIVE_WAY_AFTER: a peer that switched gives no one cause)
    assert a.core.role_switches + b.core.role_switches == 1
    assert a.core.controlling and not b.core.controlling
    e487 = errors(net, 487)
    # Who answers 487 (RFC 8445 §7.3.1.1): a controlling agent with the larger tiebreaker,
    # or a controlled agent with the smaller one.  Otherwise the receiver switches silently.
    if both and first == "b":
        assert [p.sender for p in e487] == ["a"]
    elif not both and first == "a":
        assert [p.sender for p in e487] == ["b"]
    else:
        assert e487 == []


@pytest.mark.parametrize("role", ["controlling", "controlled"])
def test_an_agent_gives_way_to_a_peer_that_ignores_role_conflicts(role: str) -> None:
    """A peer that reads no 487 (Pion 2, which also drops checks that claim its own role):
    a's tie-breaker wins, so a answers its checks with 487, and it never switches; nobody
    would, and ICE would fail.  Copies of a check refused before (same transaction) and new
    checks within GIVE_WAY_AFTER of the first 487 get 487s, as does the first new one after
    it (a late copy of a check sent before our 487 reached the peer, maybe); a second new
    check that still claims a's role makes a take the other role, and it is answered."""
    both = role == "controlling"
    a_wins = 2000 if both else 1000
    net, a, _b = two_agents(
        a_controlling=both,
        b_controlling=both,
        a_tiebreaker=a_wins,
        b_tiebreaker=3000 - a_wins,
        want=False,
    )
    core = a.core
    source = ("10.0.0.2", 6000)

    def claim(tid: bytes, now: float) -> stun.Message:
        request = binding_request(
            core, controlling=both, tiebreaker=3000 - a_wins, tid=tid, priority=1_845_501_695
        )
        answer = core.on_request(0, source, request, now)
        assert answer is not None
        return stun.decode(answer)

    def refused(message: stun.Message) -> bool:
        error = message.get(stun.ErrorCode)
        return error is not None and error.code == 487

    assert refused(claim(b"A" * 12, 0.0))
    assert refused(claim(b"B" * 12, GIVE_WAY_AFTER / 2))
    assert refused(claim(b"A" * 12, GIVE_WAY_AFTER + 0.5))  # (a copy of the first)
    assert refused(claim(b"C" * 12, GIVE_WAY_AFTER + 0.5))  # (a new one: a late copy, maybe)
    assert core.controlling is both and core.role_switches == 0
    answer = claim(b"D" * 12, GIVE_WAY_AFTER + 0.7)  # (another: the peer did not switch)
    assert answer.message_class is stun.MessageClass.SUCCESS
    assert core.controlling is not both and core.role_switches == 1
    assert "ignores role conflicts" in core.switched_because
    net.run_for(1.0)
    assert core.controlling is not both  # (and stays so)


def test_a_late_copy_of_a_check_from_before_the_peers_switch_makes_no_one_give_way() -> None:
    """Both controlled; a's tie-breaker wins, so b answers a's checks with 487 and a takes
    control.  a's check on its second pair went out before that 487 reached it; its first
    copies are lost, and one still claiming "controlled" reaches b more than GIVE_WAY_AFTER
    after b's first 487 (and a's first checks as controlling are lost too).  One late copy
    is not a peer that ignores 487s: b keeps its role, and a's switch is the only one."""
    net, a, b = two_agents(
        a_controlling=False,
        b_controlling=False,
        a_tiebreaker=2**63,
        b_tiebreaker=1,
        b_hosts=[("10.1.0.2", 6000), ("10.1.1.2", 6001)],
        exchange=False,
    )
    net.drop(lambda p: p.sender == "b" and p.is_request)  # (b's own checks never reach a)

    def tid(packet: Packet) -> int:
        return int.from_bytes(packet.message.transaction_id[4:], "big")

    def lost(p: Packet) -> bool:
        if p.sender == "a" and p.is_request and tid(p) == 1:
            return 0.2 < p.sent_at < 1.0  # (its first copy reaches b; b's 487 to it is lost)
        if p.sender == "a" and p.is_request and tid(p) == 2:
            return p.sent_at < 1.0  # (its copies at 0.05 and 0.55 lost; at 1.55, not)
        if p.sender == "b" and not p.is_request:
            return p.sent_at < 1.0
        if p.sender == "a" and p.message.get(stun.IceControlling) is not None:
            return p.sent_at < 1.549
        return False

    net.drop(lost)
    net.exchange(a, b)
    net.run_for(20.0)
    assert a.core.controlling and not b.core.controlling
    assert (a.core.role_switches, b.core.role_switches) == (1, 0)


@pytest.mark.parametrize(
    ("pairs", "one_way", "ta"),
    [(30, 0.35, 0.05), (30, 0.45, 0.05), (30, 1.0, 0.05), (80, 1.0, 0.01)],
)
def test_a_compliant_peer_with_many_pairs_over_a_slow_path_makes_no_one_give_way(
    pairs: int, one_way: float, ta: float
) -> None:
    """trice against trice, both controlling, a's tie-breaker wins; b checks first, over a
    round trip of 0.7 to 2 s (a geostationary satellite's is 0.6 s and more).  The new
    checks b sent before a's 487 reached it keep coming for up to a round trip after it,
    but one a pair: no path gets two, as Pion's do; nor do their retransmissions count as
    new checks, however many there are (80 pairs, checks 10 ms apart as RFC 8445 §14.2
    allows: b has sent some 200 and retransmitted 120 before the 487 reaches it).  a keeps
    its role; b's switch is the only one."""
    net, a, b = two_agents(
        a_controlling=True,
        b_controlling=True,
        a_tiebreaker=2**63,
        b_tiebreaker=1,
        b_hosts=[(f"10.1.{i}.2", 6000 + i) for i in range(pairs)],
        latency=one_way,
        timing=Timing(ta=ta),
        want=False,
    )
    b.core.want_connection(net.now)
    net.run_for(2.0)  # (a's application calls connect() later)
    a.core.want_connection(net.now)
    net.run_for(30.0)
    assert (a.core.role_switches, b.core.role_switches) == (0, 1)
    assert a.core.controlling and not b.core.controlling


def test_no_giving_way_once_the_peer_has_taken_the_other_role() -> None:
    """A peer that follows the RFC, over a path slower than GIVE_WAY_AFTER: a check it sent
    before our 487 reached it comes late, but it had switched already, and one of its
    checks has claimed the other role since: a keeps its role, and answers 487, to a
    second late check too (two past GIVE_WAY_AFTER would make it give way otherwise)."""
    _net, a, _b = two_agents(
        a_controlling=True, b_controlling=True, a_tiebreaker=2000, b_tiebreaker=1000, want=False
    )
    core = a.core
    source = ("10.0.0.2", 6000)

    def answer(tid: bytes, controlling: bool, now: float) -> int:
        request = binding_request(core, controlling=controlling, tiebreaker=1000, tid=tid)
        reply = core.on_request(0, source, request, now)
        assert reply is not None
        error = stun.decode(reply).get(stun.ErrorCode)
        return 0 if error is None else error.code

    assert answer(b"A" * 12, True, 0.0) == 487
    assert answer(b"B" * 12, False, 1.0) == 0  # (the peer switched: its check says so)
    assert answer(b"C" * 12, True, GIVE_WAY_AFTER + 1.0) == 487  # (sent before it did)
    assert answer(b"D" * 12, True, GIVE_WAY_AFTER + 1.1) == 487
    assert core.controlling and core.role_switches == 0


def test_a_lite_agent_never_gives_way() -> None:
    """The role of an ICE-lite agent (and of a full agent facing one) is no conflict to give
    way in: a full peer that keeps claiming to be controlled gets 487s."""
    _net, a, _b = two_agents(a_lite=True, b_controlling=False, want=False)
    core = a.core
    for k, now in enumerate((0.0, 2.0, 4.0)):
        request = binding_request(core, controlling=False, tid=bytes([65 + k]) * 12)
        answer = core.on_request(0, ("10.0.0.2", 6000), request, now)
        assert answer is not None
        error = stun.decode(answer).get(stun.ErrorCode)
        assert error is not None and error.code == 487
    assert not core.controlling and core.role_switches == 0


def test_487_switches_role_and_retries() -> None:
    _net, a = three_pair_core()
    core = a.core
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    assert check is not None and check.controlling
    request = stun.decode(check.message)
    assert core.remote is not None
    reply = stun.decode(
        request.error_response(487, "Role Conflict").encode(
            integrity_key=stun.short_term_key(core.remote.pwd)
        )
    )
    assert core.on_response(check, reply, check.destination, 0.01)
    assert not core.controlling
    retry = core.poll_check(core.timing.ta)
    assert retry is not None and retry.pair is check.pair and not retry.controlling
    assert stun.decode(retry.message).get(stun.IceControlled) is not None
    for pair in core.checklist:
        assert pair.priority == trice.ice.pair_priority(pair.remote.priority, pair.local.priority)


# -- ICE lite (RFC 8445 §2.5, §6.1.1) -----------------------------------------------------------


@pytest.mark.parametrize("nomination", [REGULAR, AGGRESSIVE])
@pytest.mark.parametrize("full_starts_controlling", [True, False])
def test_full_facing_lite(nomination: Nomination, full_starts_controlling: bool) -> None:
    net, a, b = two_agents(
        nomination=nomination,
        a_controlling=full_starts_controlling,
        b_controlling=True,  # ignored: a lite agent is always controlled
        b_lite=True,
    )
    assert a.core.controlling and not b.core.controlling
    assert net.run_until(connected(a, b), max_time=5.0)
    assert_mirrored(a, b)
    net.run_for(20.0)
    assert net.packets(sender="b", requests=True) == []  # lite never checks
    assert b.started == []
    assert a.state in (S.CONNECTED, S.COMPLETED) and b.state in (S.CONNECTED, S.COMPLETED)
    assert_valid_events(a, b)


def test_under_nohost_the_valid_pair_stands_on_the_srflx_candidate_at_the_hosts_address() -> None:
    """NOHOST with no NAT in between: the srflx candidate signalled is the host's own
    address; a check's mapped address is that address, and the valid pair's local candidate
    is the srflx one (it was the host candidate, never signalled, ranked by its own priority
    where the peer ranks the pair by the srflx one's)."""
    net, a, b = two_agents(exchange=False)
    a.core.nohost = True
    (host,) = a.signalled
    srflx = srflx_candidate(host, host.transport_address, "stun.example.org")
    a.core.add_local_candidate(srflx, 0)
    a.signalled = [srflx]
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=1.0)
    assert_mirrored(a, b)
    selected = a.core.selected_pair()
    assert selected is not None and selected.local.type is CandidateType.SRFLX
    assert a.core.selected is not None
    assert a.core.selected.valid_priority == b.core.selected.valid_priority  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "0.1.2.3",
        "ff02::1",
        "::",
        "::ffff:224.0.0.1",  # (what a dual-stack socket would send to 224.0.0.1)
        "::ffff:255.255.255.255",
        "stun.example.org",
        "host1",
        "peer.local",  # (the shell resolves these first, unless mDNS is disabled)
    ],
)
def test_a_signalled_candidate_no_check_may_go_to_is_left_out(address: str) -> None:
    """A peer (or its signaling) that names an unspecified, multicast or broadcast address:
    the candidate is left out and counted, and no check goes there (ours would have been
    multicast on our network).  So is a name (RFC 8839 §5.1 ignores FQDN candidates): it
    had been kept, and never paired, nor counted."""
    _net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, 0.0)
    bad = make_candidate(address, 6000)
    assert a.core.add_remote_candidate(bad) is False
    assert a.core.remote_candidates_dropped == 1
    assert not a.core.is_remote_address((address, 6000))
    assert len(a.core.checklist) == 0


def test_a_check_from_port_0_is_neither_answered_nor_learned() -> None:
    """A datagram may come from port 0 (Linux delivers it: a spoofed one, say); nothing can
    be sent back there (the kernel refuses: a warning about a firewall that is not there):
    the check is not answered, and its source not learned (no pair to it, no check sent
    there); it is counted as rejected."""
    _net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, 0.0)
    request = binding_request(a.core, controlling=False, tid=b"Z" * 12)
    assert a.core.on_request(0, ("10.0.0.9", 0), request, 0.0) is None
    assert a.core.requests_rejected == 1
    assert not [p for p in a.core.checklist if p.remote_address[1] == 0]


def test_a_signalled_candidate_at_port_0_is_left_out_but_an_active_tcp_one() -> None:
    """Port 0 is no destination either: the kernel refuses every check sent there (each
    counted in send_refused, the first with a warning that blames a firewall).  An active
    ICE-TCP candidate takes no connection, and its port (9 by RFC 6544) is never used."""
    _net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, 0.0)
    for protocol, tcp_type in (("udp", None), ("tcp", TcpType.PASSIVE)):
        bad = dataclasses.replace(
            make_candidate("10.0.0.2", 0, protocol=protocol), tcp_type=tcp_type
        )
        assert a.core.add_remote_candidate(bad) is False
    assert a.core.remote_candidates_dropped == 2
    active = dataclasses.replace(
        make_candidate("10.0.0.2", 0, protocol="tcp"), tcp_type=TcpType.ACTIVE
    )
    assert a.core.add_remote_candidate(active) is not False
    assert a.core.remote_candidates_dropped == 2


def test_a_role_conflict_from_a_lite_peer_switches_no_role() -> None:
    """A lite peer is always controlled (RFC 8445 §6.1.1): a 487 from one (broken, or
    hostile) fails the pair, and the full agent stays controlling (switching would leave no
    one to nominate)."""
    _net, a, b = two_agents(b_lite=True, want=False)
    core = a.core
    assert core.controlling
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    assert check is not None
    key = stun.short_term_key(b.core.local.pwd)
    conflict = _reply(check, key, stun.MessageClass.ERROR, [stun.ErrorCode(487, "Role Conflict")])
    assert core.on_response(check, stun.decode(conflict), check.destination, 0.01)
    assert core.controlling
    assert check.pair.state is PairState.FAILED


def _claiming(receiver: AgentCore, sender_ufrag: str, role: stun.Attribute) -> stun.Message:
    """A check to ``receiver`` from its peer of ufrag ``sender_ufrag`` (signed as the peer
    signs), with ``role`` (ICE-CONTROLLING or ICE-CONTROLLED and a tie-breaker)."""
    attributes = [
        stun.Username(f"{receiver.local.ufrag}:{sender_ufrag}"),
        stun.Priority(2130706431),
        role,
    ]
    message = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=attributes)
    return stun.decode(
        message.encode(integrity_key=stun.short_term_key(receiver.local.pwd), fingerprint=True)
    )


@pytest.mark.parametrize("nomination", list(Nomination))
def test_a_lite_peers_claim_to_control_is_answered_487_and_takes_no_role(
    nomination: Nomination,
) -> None:
    """A full agent facing a lite one controls (RFC 8445 §6.1.1), whatever tie-breaker a
    check that claims ICE-CONTROLLING from there carries (a broken lite peer, a hostile
    one with its password): it is answered 487, and the session connects.  (It had made
    the full agent controlled for good: no one nominated, and both sides failed.)"""
    net, a, b = two_agents(b_lite=True, nomination=nomination, want=False)
    claim = _claiming(a.core, b.core.local.ufrag, stun.IceControlling(2**64 - 1))
    answer = a.core.on_request(0, ("10.0.0.2", 6000), claim, 0.0)
    assert answer is not None
    error = stun.decode(answer).get(stun.ErrorCode)
    assert error is not None and error.code == 487
    assert a.core.controlling
    a.core.want_connection(net.now)
    b.core.want_connection(net.now)
    assert net.run_until(connected(a, b), max_time=5.0)


def test_a_full_peer_that_does_not_know_the_agent_is_lite_is_told_to_take_control() -> None:
    """The full peer's signaling lost the ice-lite flag, and it was opened controlled: the
    lite agent answers its checks 487 (RFC 8445 §7.3.1.1: it cannot switch, the peer must),
    the peer takes control and nominates, and both connect (the lite agent had answered
    them, and neither nominated)."""
    net, a, b = two_agents(a_controlling=False, b_lite=True, exchange=False)
    unflagged = IceParameters(b.core.local.ufrag, b.core.local.pwd, lite=False)
    a.core.set_remote(unflagged, 0.0)
    b.core.set_remote(a.core.local, 0.0)
    for here, there in ((a, b), (b, a)):
        for candidate in there.signalled:
            here.core.add_remote_candidate(candidate)
        here.core.add_remote_candidate(None)
        here.core.set_local_complete()
        here.core.want_connection(0.0)
    assert net.run_until(connected(a, b), max_time=5.0)
    assert a.core.controlling and not b.core.controlling
    assert_valid_events(a, b)


@pytest.mark.parametrize("both", ["controlling", "controlled"])
def test_an_agent_that_switches_role_checks_again_with_its_new_role(both: str) -> None:
    """Both agents open in one role; ``a`` (of the smaller tie-breaker if both control, of
    the larger if both are controlled) takes the other when ``b``'s check comes (RFC 8445
    §7.3.1.1), while its own first check, claiming the role
    of before, is in flight.  ``b`` drops requests that claim its own role (as Pion does,
    rather than answer 487): ``a`` checks again with its new role, and both connect at
    once (every copy of the check of before had claimed the old role, until it gave up
    15.5 s on)."""
    controlling = both == "controlling"
    net, a, b = two_agents(
        a_controlling=controlling,
        b_controlling=controlling,
        a_tiebreaker=1000 if controlling else 2000,
        b_tiebreaker=2000 if controlling else 1000,
        want=False,
    )
    claim = stun.IceControlling if controlling else stun.IceControlled

    def same_role_as_b(p: Packet) -> bool:
        return p.sender == "a" and p.is_request and p.message.get(claim) is not None

    net.drop(lambda p: same_role_as_b(p) and b.core.controlling is controlling)
    a.core.want_connection(net.now)
    net.run_for(0.01)  # (a's first check goes, and is dropped)
    b.core.want_connection(net.now)
    assert net.run_until(connected(a, b), max_time=2.0)
    assert a.core.controlling is not controlling and b.core.controlling is controlling


def test_a_check_of_the_role_before_that_times_out_fails_no_pair_checked_again() -> None:
    """``a`` switches role while its check is in flight, and its pair waits for a new
    check, with the new role, behind the pacing; if the old check's schedule runs out first
    (many pairs in the queue), its silence fails nothing: the new check decides."""
    _net, a, b = two_agents(a_tiebreaker=1000, b_controlling=True, b_tiebreaker=2000, want=False)
    core = a.core
    core.want_connection(0.0)
    old = core.poll_check(0.0)
    assert old is not None and old.controlling
    claim = _claiming(core, b.core.local.ufrag, stun.IceControlling(2000))
    elsewhere = (old.destination[0], old.destination[1] + 1)  # (not the pair's: no sign of it)
    core.on_request(0, elsewhere, claim, 0.01)
    assert not core.controlling
    core.on_timeout(old, 20.0)
    assert old.pair.state is PairState.WAITING
    assert old.pair in [check.pair for check in iter(lambda: core.poll_check(20.0), None)]


@pytest.mark.parametrize("nomination", list(Nomination))
def test_a_lite_agent_is_completed_once_it_has_its_pair(nomination: Nomination) -> None:
    """RFC 8445 §8.2: a lite agent, which makes no checks, is done once it has selected
    a pair: ``completed`` then (it stayed ``connected``), and again once the peer is back
    after a silence that made it ``disconnected``."""
    net, a, b = two_agents(nomination=nomination, b_lite=True)
    assert net.run_until(connected(a, b), max_time=5.0)
    assert b.states() == [S.CHECKING, S.CONNECTED, S.COMPLETED]
    assert b.time_of(S.COMPLETED) == b.time_of(S.CONNECTED)
    silence = net.drop_all()
    net.run_for(13.0)
    assert b.state is S.DISCONNECTED
    net.loss_rules.remove(silence)
    assert net.run_until(lambda: b.state is S.COMPLETED, max_time=net.now + 10.0)
    assert b.states()[-3:] == [S.DISCONNECTED, S.CONNECTED, S.COMPLETED]
    assert_valid_events(a, b)


def test_a_lite_agent_back_from_disconnected_by_data_is_completed_at_once() -> None:
    """Data from the peer brings a disconnected lite agent back: to ``completed`` at once,
    as a full agent goes (it stayed ``connected`` until the peer's next check)."""
    net, a, b = two_agents(b_lite=True)
    assert net.run_until(connected(a, b), max_time=5.0)
    net.drop_all()
    net.run_for(13.0)
    assert b.state is S.DISCONNECTED
    b.core.on_data(net.now)
    net.run_for(0.001)  # (the harness takes the events)
    assert b.states()[-3:] == [S.DISCONNECTED, S.CONNECTED, S.COMPLETED]


def test_a_lite_agent_is_not_disconnected_by_one_check_of_the_peer_missed() -> None:
    """A lite agent hears the peer only through its checks, which RFC 7675 paces 4-6 s
    apart: 8 s without one (one missed) is not disconnected (5 s had been, and a healthy
    idle pair with aioice flapped); 13 s is."""
    net, a, b = two_agents(b_lite=True)
    assert net.run_until(connected(a, b), max_time=5.0)
    net.drop(lambda p: p.sender == "a" and p.is_request)
    net.run_for(8.0)
    net.loss_rules.clear()
    net.run_for(3.0)
    assert S.DISCONNECTED not in b.states()
    net.drop(lambda p: p.sender == "a" and p.is_request)
    net.run_for(13.0)
    assert S.DISCONNECTED in b.states()


def _keepalive_indication(*attributes: stun.Attribute) -> stun.Message:
    """RFC 8445 §11's keepalive: a Binding indication, as a peer's would arrive."""
    return stun.decode(
        stun.Message(
            stun.Method.BINDING, stun.MessageClass.INDICATION, attributes=attributes
        ).encode(fingerprint=True)
    )


@pytest.mark.parametrize("which", ["from-the-pair", "from-elsewhere", "unknown-required"])
def test_binding_indications_on_the_selected_pair_are_a_sign_of_life(which: str) -> None:
    """RFC 8445 §11's keepalive, a Binding indication (what an older peer sends between
    its checks): on the selected pair it keeps an ICE-lite agent, which hears the peer only
    through its checks, from ``disconnected`` for 20 s without one, as data does (it had
    been ignored).  One from another address is not taken: disconnected after 12 s; nor
    one with an unknown comprehension-required attribute, which is discarded (RFC 8489
    §6.3.2; it was taken)."""
    net, a, b = two_agents(b_lite=True)
    assert net.run_until(connected(a, b), max_time=5.0)
    selected = b.core.selected
    assert selected is not None
    unknown = (stun.UnknownAttribute(0x7F00, bytes(4)),) if which == "unknown-required" else ()
    keepalive = _keepalive_indication(*unknown)
    source = ("10.9.9.9", 6000) if which == "from-elsewhere" else selected.remote_address
    net.drop(lambda p: p.sender == "a" and p.is_request)
    for _ in range(10):
        net.run_for(2.0)
        assert b.core.on_request(selected.base, source, keepalive, net.now) is None
    assert (S.DISCONNECTED in b.states()) is (which != "from-the-pair")


@pytest.mark.parametrize("which", ["from-the-pair", "from-elsewhere"])
def test_an_idle_rfc5245_peers_keepalive_indications_keep_a_lite_agents_consent(
    which: str,
) -> None:
    """An RFC 5245 full peer keeps an idle session with Binding indications every 15 s
    (its §10), and sends no check once ICE is done: a lite agent, which sends none, takes
    them as it takes data from the selected pair's remote address, and keeps the session
    for a minute (it failed at ``failed_timeout``, as Pion's lite agent does not).  Ones
    from another address keep nothing: failed."""
    net, a, b = two_agents(b_lite=True)
    assert net.run_until(connected(a, b), max_time=5.0)
    selected = b.core.selected
    assert selected is not None
    source = ("10.9.9.9", 6000) if which == "from-elsewhere" else selected.remote_address
    net.drop(lambda p: p.sender == "a" and p.is_request)
    for _ in range(4):
        net.run_for(15.0)
        b.core.on_request(selected.base, source, _keepalive_indication(), net.now)
    assert (S.FAILED in b.states()) is (which != "from-the-pair")


@pytest.mark.parametrize("nomination", list(Nomination))
def test_an_agent_that_takes_control_after_its_pair_succeeded_nominates_it(
    nomination: Nomination,
) -> None:
    """``a``, controlled, has checked (and selected) the pair while ``b``'s checks were
    lost; then ``b`` says it is controlled, with the smaller tie-breaker, and ``a`` takes
    control (RFC 8445 §7.3.1.1).  ``a`` checks the pair again with USE-CANDIDATE, and both
    connect on it: under aggressive nomination none had gone (every later check of a
    controlling agent nominates, but no later check went to a pair already valid), and ICE
    failed."""
    net, a, b = two_agents(
        a_controlling=False, b_controlling=True, nomination=nomination, a_tiebreaker=2000
    )
    net.drop(lambda p: p.sender == "b" and p.is_request)
    net.run_for(0.2)
    (pair,) = a.core.checklist
    assert pair.state is PairState.SUCCEEDED and not a.core.controlling
    claim = _claiming(a.core, b.core.local.ufrag, stun.IceControlled(1000))
    a.core.on_request(0, ("10.0.0.2", 6000), claim, net.now)
    assert a.core.controlling
    net.loss_rules.clear()
    b.core._switch_role("a test")  # (as b would on the 487 that its next check gets)
    sent = len(net.packets(sender="a", requests=True))
    net.run_for(5.0)
    assert any(p.use_candidate for p in net.packets(sender="a", requests=True)[sent:])
    assert connected(a, b)()
    assert_valid_events(a, b)


# -- failure ------------------------------------------------------------------------------------


def test_fails_at_failed_timeout_without_end_of_candidates() -> None:
    net, a, b = two_agents(timing=FAST, exchange=False)
    net.drop_all()
    net.exchange(a, b, end_of_candidates=False)
    assert net.run_until(lambda: a.state is S.FAILED and b.state is S.FAILED, max_time=60.0)
    assert a.time_of(S.FAILED) == pytest.approx(FAST.failed_timeout)
    assert b.time_of(S.FAILED) == pytest.approx(FAST.failed_timeout)
    # All pairs had failed long before; without end-of-candidates ICE must wait.
    assert all(p.state is PairState.FAILED for p in a.core.checklist)
    assert max(t for t, _ in a.timeouts) < FAST.failed_timeout / 2
    assert a.states() == [S.CHECKING, S.FAILED]
    assert a.core.next_deadline() is None
    assert a.core.poll_check(net.now) is None


def test_fails_early_when_all_pairs_fail_after_end_of_candidates() -> None:
    net, a, b = two_agents(
        timing=FAST, exchange=False, a_hosts=[("10.0.0.1", 5000), ("10.0.1.1", 5000)]
    )
    net.drop_all()
    net.exchange(a, b)
    assert net.run_until(lambda: a.state is S.FAILED, max_time=60.0)
    last_give_up = max(t for t, _ in a.timeouts)
    assert a.time_of(S.FAILED) == last_give_up
    assert last_give_up < FAST.failed_timeout
    assert len(a.timeouts) == len(a.core.checklist) == 2
    assert_valid_events(a)


@pytest.mark.parametrize(
    ("timing", "pac"),
    [
        (Timing(failed_timeout=60.0), 39.5),  # RFC 8863 §4's figure
        (Timing(), 30.0),  # (cut to failed_timeout)
        (Timing(rto=0.1, max_binding_requests=3), 1.9),  # (0.1 + 0.2, then 16 RTOs)
        (Timing(failed_timeout=60.0, pac_timeout=10.0), 10.0),
    ],
)
def test_the_pac_timer_waits_for_the_peers_checks_by_default(timing: Timing, pac: float) -> None:
    """Every pair failed, end-of-candidates both ways: ICE fails when the PAC timer ends
    (RFC 8863), by default the time a check takes on RFC 8489's schedule (sends 0.5 s
    apart, doubling; 39.5 s: RFC 8863 §4's figure), never past ``failed_timeout``: what
    the peer's checks, which the timer waits for, may take, and their start may come a
    signaling delay late.  It was this agent's own check's time (6.5 s since ``rto_max``
    came down to 1 s): a restart answered 6 s late by the peer (slow signaling) failed
    before the offerer could check (the liveness model, 2026-12-05)."""
    net, a, b = two_agents(timing=timing, exchange=False)
    net.drop_all()
    net.exchange(a, b)
    assert net.run_until(lambda: a.state is S.FAILED, max_time=120.0)
    assert all(p.state is PairState.FAILED for p in a.core.checklist)
    assert max(t for t, _ in a.timeouts) < pac
    assert a.time_of(S.FAILED) == pytest.approx(pac)


def test_against_a_lite_peer_ice_fails_as_the_last_check_gives_up() -> None:
    """An ICE-lite peer sends no checks: nothing to wait for (the PAC timer, RFC 8863, is
    for the peer's checks), so ICE fails as the last pair's check gives up (6.5 s), not
    at the PAC timer's 30 s."""
    net, a, b = two_agents(b_lite=True, exchange=False)
    net.drop_all()
    net.exchange(a, b)
    assert net.run_until(lambda: a.state is S.FAILED, max_time=60.0)
    assert a.time_of(S.FAILED) == max(t for t, _ in a.timeouts) == pytest.approx(6.5)


def test_end_of_candidates_after_all_pairs_failed_fails_at_once() -> None:
    net, a, b = two_agents(timing=FAST, exchange=False)
    net.drop_all()
    net.exchange(a, b, end_of_candidates=False)
    net.run_for(3.0)
    assert all(p.state is PairState.FAILED for p in a.core.checklist)
    assert a.state is S.CHECKING
    a.core.add_remote_candidate(None)
    a.core.set_local_complete()
    net.run_for(0.1)
    assert a.states()[-1] is S.FAILED


@pytest.mark.parametrize("pac", [None, 0.0])
def test_a_peer_without_candidates_connects_within_the_pac_timer(pac: float | None) -> None:
    """RFC 8863 §3.1: ``b`` signals no candidate at all, only end-of-candidates, and starts
    its checks half a second after ``a`` (its signaling was slow).  ``a``'s check list is
    empty and nothing can come, yet ``a`` waits for the PAC timer, learns ``b``'s
    peer-reflexive candidate from its check, and both connect.  With ``pac_timeout=0``
    ``a`` fails at once and answers nothing, and ``b`` fails too."""
    timing = dataclasses.replace(FAST, pac_timeout=pac)
    net, a, b = two_agents(timing=timing, exchange=False)
    a.core.set_remote(b.core.local, 0.0)
    a.core.add_remote_candidate(None)
    a.core.set_local_complete()
    a.core.want_connection(0.0)
    net.run_for(0.5)
    b.core.set_remote(a.core.local, net.now)
    for candidate in a.signalled:
        b.core.add_remote_candidate(candidate)
    b.core.add_remote_candidate(None)
    b.core.set_local_complete()
    b.core.want_connection(net.now)
    if pac is None:
        assert net.run_until(connected(a, b), max_time=FAST_PAC)
        assert a.core.selected is not None
        assert a.core.selected.remote.type is CandidateType.PRFLX
        assert_valid_events(a, b)
    else:
        net.run_for(FAST_PAC)
        assert a.states() == [S.CHECKING, S.FAILED]
        assert a.time_of(S.FAILED) == 0.0
        assert b.states() == [S.CHECKING, S.FAILED]


def test_after_a_restart_the_pac_timer_runs_from_the_peers_new_parameters() -> None:
    """RFC 8863 §4 starts the PAC timer once the peer's values are received: after an ICE
    restart whose answer comes 2 s late (no candidate in it, and the peer's checks half a
    second after), the checks and the timer start then, and the pair the peer's checks
    teach connects (it had failed the moment the parameters came: the timer had run from
    the restart)."""
    net, a, b = two_agents(timing=FAST)
    assert net.run_until(connected(a, b), max_time=5.0)
    a.restart(net.now)
    b.restart(net.now)
    net.run_for(2.0)
    a.core.set_remote(b.core.local, net.now)
    a.core.add_remote_candidate(None)
    net.run_for(0.5)
    b.core.set_remote(a.core.local, net.now)
    for candidate in a.signalled:
        b.core.add_remote_candidate(candidate)
    b.core.add_remote_candidate(None)
    assert net.run_until(connected(a, b), max_time=net.now + FAST_PAC)
    assert S.FAILED not in a.states()
    assert_valid_events(a, b)


def test_a_pruned_pair_the_peers_check_brings_back_is_not_counted_unchecked() -> None:
    """a holds one pair at most: b's real candidate comes below a dead one, and its pair is
    pruned before any check (counted unchecked).  Then b's check comes on that very path:
    a forms the pair again (kept) and checks it.  Its answers are lost, and ICE fails at a;
    every pair a formed was checked, and none is counted unchecked (it was: the failure
    said a pair past the cap went unchecked, the p35pass1 review)."""
    net, a, b = two_agents(exchange=False)
    a.core.checklist.max_pairs = 1
    a.core.set_remote(b.core.local, net.now)
    b.core.set_remote(a.core.local, net.now)
    (real,) = b.signalled
    dead = dataclasses.replace(
        real, address="10.0.0.9", port=7000, priority=real.priority + 1, foundation="dead"
    )
    a.core.add_remote_candidate(real)
    a.core.add_remote_candidate(dead)  # (the real pair, lower, is pruned)
    a.core.add_remote_candidate(None)
    assert a.core.checklist.unchecked == 1
    for candidate in a.signalled:
        b.core.add_remote_candidate(candidate)
    b.core.add_remote_candidate(None)
    net.drop(lambda packet: packet.is_response and packet.dst[0] == "10.0.0.1")  # (a's)
    a.core.want_connection(net.now)
    b.core.want_connection(net.now)
    net.run_for(60.0)
    assert a.core.state is S.FAILED
    sent_to = {p.dst for p in net.packets(sender="a", requests=True)}
    assert (real.address, real.port) in sent_to
    assert all(pair.checks_sent for pair in a.core.checklist)
    assert a.core.checklist.unchecked == 0


def test_a_consent_answer_after_a_restart_counts_for_the_pair_of_before() -> None:
    """Over a path of a 3 s round trip, a consent check of a's is on its way when a
    restarts (the peer's new parameters are slow to come).  Its answer, signed with the
    peer's key of before, comes after the restart and counts still for the pair of before
    (RFC 7675 §5.1: an answer to a request of the last 30 s), which carries data until its
    consent, from that check, runs out.  (The answer was thrown away: the pair stopped
    carrying data a round trip and an interval sooner.)"""
    net, a, b = two_agents(latency=1.5)
    assert net.run_until(connected(a, b), max_time=20.0)
    net.run_for(10.0)
    sent = len(a.started)
    assert net.run_until(
        lambda: any(c.consent for _, c in a.started[sent:]), max_time=net.now + 5.0
    )
    ((_, check),) = [(t, c) for t, c in a.started[sent:] if c.consent]
    pair = a.core.selected
    a.restart(net.now)
    net.run_for(3.5)  # (its answer came)
    assert a.core.data_pair is pair
    assert pair is not None and pair.responses_received > 0
    assert net.run_until(lambda: a.core.data_pair is None, max_time=net.now + 60.0)
    assert net.now == pytest.approx(check.started + a.core._consent_for, abs=net.spin_step)


def test_a_check_list_with_no_pairs_fails_once_no_candidate_can_come() -> None:
    """The peer offers IPv6 only and this agent has IPv4 only: no pair can be formed.  Once
    both sides' candidates are complete and checks have begun, ICE fails (RFC 8838 §8) when
    the PAC timer ends (RFC 8863 §3.2: a check of the peer's may still come), not at
    ``failed_timeout``; with ``pac_timeout=0``, at once; without end-of-candidates it waits
    (a candidate may come)."""
    net, a, b = two_agents(timing=FAST, b_hosts=(("fd00::2", 6000),))
    net.run_for(FAST_PAC - 0.01)
    assert len(a.core.checklist) == 0
    assert a.states() == [S.CHECKING]
    net.run_for(0.1)
    assert a.states() == [S.CHECKING, S.FAILED]
    assert a.time_of(S.FAILED) == pytest.approx(FAST_PAC)
    assert b.states() == [S.CHECKING, S.FAILED]

    impatient = dataclasses.replace(FAST, pac_timeout=0)
    net, a, b = two_agents(timing=impatient, b_hosts=(("fd00::2", 6000),))
    net.run_for(0.1)
    assert a.states() == [S.CHECKING, S.FAILED]
    assert a.time_of(S.FAILED) == 0.0

    net, a, b = two_agents(timing=FAST, exchange=False, b_hosts=(("fd00::2", 6000),))
    net.exchange(a, b, end_of_candidates=False)
    net.run_for(1.0)
    assert a.states() == [S.CHECKING]
    a.core.add_remote_candidate(None)
    net.run_for(0.1)
    assert a.states() == [S.CHECKING]  # (a local candidate may still come)
    a.core.set_local_complete()
    net.run_for(0.1)
    assert a.states() == [S.CHECKING, S.FAILED]  # (the PAC timer had ended)


def _fails_when_the_pac_timer_ends(core: AgentCore, *, since: float) -> None:
    """``core``, whose checks started at ``since`` with nothing to check and nothing to
    come, fails when RFC 8863's PAC timer ends, not before (and no later)."""
    states = [core.state]
    assert core.next_deadline() == since + FAST_PAC
    core.on_timer(since + FAST_PAC - 0.001)
    states.append(core.state)
    core.on_timer(since + FAST_PAC)
    states.append(core.state)
    assert states == [S.CHECKING, S.CHECKING, S.FAILED]


def _v4_core() -> AgentCore:
    """A controlling core with one IPv4 host candidate, gathered, facing a peer whose
    parameters it has (ufrag ``peer2``)."""
    core = AgentCore(
        local=IceParameters("ufrag", "password-0123456789abcdef"),
        controlling=True,
        tiebreaker=1,
        timing=FAST,
    )
    core.add_local_candidate(make_candidate("10.0.0.1", 5000), 0)
    core.set_local_complete()
    return core


def _peer2() -> IceParameters:
    return IceParameters("peer2", "password-0123456789abcdef")


@pytest.mark.parametrize("how", ["late", "held"])
def test_an_earlier_generations_dropped_candidate_does_not_hold_failure_back(how: str) -> None:
    """An IPv6-only peer, an IPv4-only agent: ICE fails when the PAC timer ends (RFC 8863),
    not at ``failed_timeout``, also when a candidate of
    an earlier ICE generation was dropped (one trickled late, naming the old ufrag), or one
    held for the peer's parameters when the agent restarted names another ufrag than the
    parameters that came (held on, for a generation to come): the peer cannot check from
    those.  (A candidate of this generation left out does hold it back: next test.)"""
    core = _v4_core()
    if how == "late":
        core.set_remote(IceParameters("peer1", "password-1123456789abcdef"), 0.0)
        core.restart(IceParameters("ufrag2", "password-2123456789abcdef"), 0.0)
        core.set_remote(_peer2(), 0.0)
        old = Candidate.from_sdp("candidate:1 1 udp 2130706431 fd00::2 6000 typ host ufrag peer1")
        assert core.add_remote_candidate(old) is False
    else:
        held = Candidate.from_sdp("candidate:1 1 udp 2130706431 10.0.0.2 6000 typ host ufrag peer1")
        core.add_remote_candidate(held)
        core.want_connection(0.0)
        core.restart(IceParameters("ufrag2", "password-2123456789abcdef"), 1.0)
        core.set_remote(_peer2(), 1.0)
    assert core.remote_candidates_dropped == (1 if how == "late" else 0)
    assert core.remote_candidates == []
    core.add_remote_candidate(make_candidate("fd00::2", 6002))
    core.add_remote_candidate(None)
    core.want_connection(1.0)
    _fails_when_the_pac_timer_ends(core, since=1.0)


def test_a_candidate_of_this_generation_left_out_holds_failure_back() -> None:
    """A ``.local`` candidate that no mDNS answer came for is left out (the shell gives it
    back as ``None``): the peer may pair it with ours and check, so an empty check list is
    no failure yet (the failed timeout decides, as before)."""
    core = _v4_core()
    core.set_remote(_peer2(), 0.0)
    generation = core.hold_remote()
    core.add_remote_candidate(make_candidate("fd00::2", 6002))
    core.add_remote_candidate(None)
    core.release_remote(None, generation)
    core.want_connection(0.0)
    assert core.remote_complete and len(core.checklist) == 0
    states = [core.state]
    for now in (FAST_PAC + 0.01, FAST_PAC + 0.5, FAST.failed_timeout):  # (past the PAC timer)
        core.on_timer(now)
        states.append(core.state)
    assert states == [S.CHECKING, S.CHECKING, S.CHECKING, S.FAILED]


@pytest.mark.parametrize("family", ["other", "same"])
def test_ice_tcp_holds_failure_back_only_for_an_active_candidate_of_its_family(
    family: str,
) -> None:
    """A passive ICE-TCP candidate here holds an empty check list's failure back only for
    an active one there of its family (RFC 6544 §6.2: the peer connects to it, and
    checks): an IPv6-only peer's active candidate does not, and ICE fails when the PAC
    timer ends (RFC 8863), not at ``failed_timeout``; an IPv4 one does, past the PAC
    timer."""
    core = _v4_core()
    core.add_local_candidate(tcp_host_candidate(("10.0.0.1", 5001), TcpType.PASSIVE, 0), 1)
    core.set_remote(_peer2(), 0.0)
    there = "fd00::2" if family == "other" else "10.0.0.2"
    active = Candidate.from_sdp(f"candidate:2 1 tcp 1015023870 {there} 9 typ host tcptype active")
    core.add_remote_candidate(make_candidate("fd00::2", 6000))
    core.add_remote_candidate(active)
    core.add_remote_candidate(None)
    core.want_connection(0.0)
    assert len(core.checklist) == 0
    if family == "other":
        _fails_when_the_pac_timer_ends(core, since=0.0)
    else:
        core.on_timer(FAST_PAC + 0.01)
        core.on_timer(FAST_PAC + 0.5)
        assert core.state is S.CHECKING


def test_an_ice_lite_agent_with_no_pairs_does_not_fail() -> None:
    """An ICE-lite agent forms no pairs (the peer's checks prove them): its empty check list
    is no failure."""
    net, a, b = two_agents(timing=FAST, b_lite=True, exchange=False)
    net.drop_all()
    net.exchange(a, b)
    net.run_for(1.0)
    assert len(b.core.checklist) == 0
    assert S.FAILED not in b.states()


def _best_pair_cut_off() -> tuple[Network, Endpoint, Endpoint]:
    """``a`` (controlling, regular nomination) with two hosts, ``b`` with one, signalled to
    each other; every packet of the best pair's host (10.0.0.1) is lost."""
    net = Network(latency=0.01)
    a = net.add_endpoint("a", controlling=True, tiebreaker=2)
    b = net.add_endpoint("b", controlling=False, tiebreaker=1)
    a.add_host("10.0.0.1", 5000, local_pref=65535)
    a.add_host("10.0.1.1", 5001, local_pref=60000)
    b.add_host("10.0.0.2", 6000)
    net.drop(lambda p: "10.0.0.1" in (p.src[0], p.dst[0]))
    net.exchange(a, b)
    return net, a, b


def test_a_controlling_agents_nomination_cancels_its_checks_on_other_pairs() -> None:
    """RFC 8445 §8.1.2: once the controlling agent's regular nomination has selected a
    pair, its ordinary checks in flight on other pairs are cancelled: not sent again (here
    the best pair's, whose host is cut off), though a late answer would count; and they no
    longer hold ``completed`` back (it came when the dead pair's schedule ran out, 6.5 s
    in with the default timing, 15.5 s with the 3 s ``rto_max`` of before 2026-12-05).
    The controlled agent, which follows the peer's nominations, keeps its own."""
    net, a, b = _best_pair_cut_off()
    assert net.run_until(connected(a, b), max_time=5.0)
    selected = a.time_of(S.CONNECTED)
    assert selected is not None
    net.run_for(20.0)
    assert a.time_of(S.COMPLETED) == selected
    dead = [c for t, c, _ in a.transmissions if t > selected and not c.consent]
    assert dead == []
    ((_, timed_out),) = [(t, c) for t, c in a.timeouts if not c.consent]
    assert timed_out.pair.local.address == "10.0.0.1"  # (waited out)
    # Its silence is no failure: the pair is back to waiting, and is not checked again.
    assert timed_out.pair.state is PairState.WAITING
    assert a.core.state is S.COMPLETED
    assert (b.time_of(S.COMPLETED) or 0.0) > selected + 5.0  # (its checks ran their course)


def test_a_late_role_conflict_on_a_cancelled_check_switches_no_role() -> None:
    """A 487 that answers a check the controlling agent's final nomination cancelled comes
    too late to matter: the peer took the nomination as the controlled agent.  The role
    stays (switching made both sides controlled) and the pair goes back to waiting, not
    failed; consent goes on."""
    net, a, b = _best_pair_cut_off()
    assert net.run_until(lambda: a.state is S.COMPLETED, max_time=5.0)
    (flight,) = [f for f in a.flights.values() if not f.check.consent]
    check = flight.check
    assert check.pair.local.address == "10.0.0.1" and a.core.cancelled(check)
    request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, check.transaction_id)
    conflict = request.error_response(487, "Role Conflict").encode(
        integrity_key=b.core.local.pwd.encode(), fingerprint=True
    )
    remote = (check.pair.remote.address, check.pair.remote.port)
    assert a.core.on_response(check, stun.decode(conflict), remote, net.now)
    assert a.core.controlling
    assert check.pair.state is PairState.WAITING
    net.run_for(20.0)
    assert a.state is S.COMPLETED and b.state is S.COMPLETED
    assert a.core.controlling and not b.core.controlling


# -- consent freshness (RFC 7675) -----------------------------------------------------------------


def last_arrival(net: Network, endpoint: Endpoint, *, answers_only: bool = False) -> float:
    """When the last packet reached ``endpoint`` (the peer last heard), or with
    ``answers_only`` the last success response (consent last refreshed: the peer's requests
    do not count for that, RFC 7675 §5.1)."""
    return max(
        p.deliver_at
        for p in net.delivered
        if p.dst in endpoint.bases.values()
        and (not answers_only or p.message.message_class is stun.MessageClass.SUCCESS)
    )


def last_consent(net: Network, endpoint: Endpoint) -> float:
    """When the check went whose answer last reached ``endpoint``: consent runs from there
    (RFC 7675 §5.1 counts the answers to the requests of the last 30 s), also when that
    answer selected the pair (its check went before)."""
    answer = max(
        (
            p
            for p in net.delivered
            if p.dst in endpoint.bases.values()
            and p.message.message_class is stun.MessageClass.SUCCESS
        ),
        key=lambda p: p.deliver_at,
    )
    tid = answer.message.transaction_id
    sent = min(
        p.sent_at
        for p in net.sent
        if p.sender == endpoint.name and p.is_request and p.message.transaction_id == tid
    )
    return sent


@pytest.mark.parametrize("nomination", [REGULAR, AGGRESSIVE])
@pytest.mark.parametrize("peer_checks", [False, True])
def test_the_first_consent_check_comes_an_rto_on_when_the_peer_has_not_checked_the_pair(
    nomination: Nomination, peer_checks: bool
) -> None:
    """A controlling agent selects a pair the peer has not checked (its checks all lost):
    the peer may be waiting for a request of ours to check it again (Pion checks a pair it
    gave up on, after 1.4 s of loss, only when one comes, and a trice peer's ping-back may
    be lost), so the first consent check goes one RTO after the selection (0.5 s), not a
    consent interval after (2 s).  Where the peer has checked the pair, at the interval
    (and where its check comes before that RTO runs out: the next test)."""
    net, a, b = two_agents(nomination=nomination, exchange=False)
    if not peer_checks:
        net.drop(lambda p: p.sender == "b" and p.is_request)
    net.exchange(a, b)
    assert net.run_until(lambda: a.state in (S.CONNECTED, S.COMPLETED), max_time=5.0)
    selected_at = a.time_of(S.CONNECTED)
    assert selected_at is not None
    pair = a.core.selected
    assert pair is not None and pair.peer_checked is peer_checks
    net.run_for(5.0)
    after = [p.sent_at - selected_at for p in net.packets(sender="a", requests=True)]
    after = [t for t in after if t > 0]
    if peer_checks:
        assert after[0] > 1.9  # (the consent interval, 2 s, from the check that proved it)
    else:
        assert after[0] == pytest.approx(0.5)
        assert after[1] > 2.0  # (then at the interval)


def test_against_a_lite_peer_the_first_consent_check_comes_at_the_interval() -> None:
    """An ICE-lite peer never checks the pair (RFC 8445 §2.5), and is done once our
    nomination comes: the first consent check goes at the interval, not an RTO on."""
    net, a, _b = two_agents(b_lite=True)
    assert net.run_until(lambda: a.state in (S.CONNECTED, S.COMPLETED), max_time=5.0)
    selected_at = a.time_of(S.CONNECTED)
    assert selected_at is not None
    net.run_for(5.0)
    after = [p.sent_at - selected_at for p in net.packets(sender="a", requests=True)]
    assert next(t for t in after if t > 0) > 1.9


def test_a_peer_check_that_comes_before_the_early_consent_check_puts_it_off() -> None:
    """An aggressive nomination's answer comes before the peer's own check on the pair
    (which takes 0.3 s here): the early consent check due an RTO after the selection is
    put off to the consent interval once that check comes; none goes more."""
    net, a, b = two_agents(
        nomination=AGGRESSIVE,
        exchange=False,
        latency=lambda p: 0.3 if p.sender == "b" and p.is_request else 0.01,
    )
    net.exchange(a, b)
    assert net.run_until(lambda: a.state in (S.CONNECTED, S.COMPLETED), max_time=5.0)
    selected_at = a.time_of(S.CONNECTED)
    assert selected_at is not None
    assert a.core.selected is not None and not a.core.selected.peer_checked
    net.run_for(5.0)
    assert a.core.selected.peer_checked
    after = [p.sent_at - selected_at for p in net.packets(sender="a", requests=True)]
    assert next(t for t in after if t > 0) > 1.9


def test_consent_lasts_30_s_at_most_whatever_failed_timeout_says() -> None:
    """RFC 7675 §5.1: consent expires 30 s after the last answered check went; a
    failed_timeout of 60 s holds checking up that long, but not the data of a pair the peer
    stopped answering."""
    timing = Timing(failed_timeout=60.0)
    net, a, b = two_agents(timing=timing)
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(5.0)
    net.drop_all()
    assert net.run_until(lambda: a.state is S.FAILED, max_time=net.now + 90.0)
    assert a.time_of(S.FAILED) == pytest.approx(last_consent(net, a) + 30.0, abs=net.spin_step)


@pytest.mark.parametrize(
    "timing",
    [
        Timing(keepalive_interval=50.0, disconnected_timeout=100.0, failed_timeout=100.0),
        Timing(disconnected_timeout=40.0, failed_timeout=60.0),
        Timing(disconnected_timeout=30.0, failed_timeout=1000.0),
        Timing(disconnected_timeout=19.0, failed_timeout=1000.0),
    ],
)
def test_with_timeouts_past_30_s_a_live_pair_keeps_consent_and_a_lost_one_disconnects_first(
    timing: Timing,
) -> None:
    """With failed_timeout over consent's 30 s, disconnected_timeout counts 20 s at most
    (disconnected still comes first), and the consent checks go often enough for it, but
    no more often than keepalive_interval asks: a peer that answers keeps the pair for
    good; one that goes makes the agent disconnected, then failed at 30 s."""
    net, a, b = two_agents(timing=timing)
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(10.0)
    checks = len(net.packets(sender="a", requests=True))
    net.run_for(300.0)
    consent_checks = len(net.packets(sender="a", requests=True)) - checks
    interval = min(timing.keepalive_interval, min(timing.disconnected_timeout, 20.0) / 2.4)
    assert consent_checks <= 300.0 / (interval * 0.8) + 1
    assert a.state is S.COMPLETED and b.state is S.COMPLETED
    net.drop_all()
    assert net.run_until(lambda: a.state is S.FAILED, max_time=net.now + 60.0)
    assert a.time_of(S.FAILED) == pytest.approx(last_consent(net, a) + 30.0, abs=net.spin_step)
    assert a.states()[-2:] == [S.DISCONNECTED, S.FAILED]
    disconnected = last_arrival(net, a) + min(timing.disconnected_timeout, 20.0)
    assert a.time_of(S.DISCONNECTED) == pytest.approx(disconnected, abs=net.spin_step)


def test_consent_lost_disconnected_then_failed() -> None:
    """Disconnected ``disconnected_timeout`` after the peer was last heard (any packet),
    failed ``failed_timeout`` after consent was last refreshed (an answer to our check)."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(10.0)
    cut = net.now
    net.drop_all()
    assert net.run_until(lambda: a.state is S.FAILED and b.state is S.FAILED, max_time=60.0)
    timing = a.core.timing
    for endpoint in (a, b):
        heard = last_arrival(net, endpoint)
        # The last packets: in the last consent interval, or in flight at the cut.
        assert cut - timing.keepalive_interval * 1.2 <= heard <= cut + 0.011
        answered = last_arrival(net, endpoint, answers_only=True)
        # The last answer to one of its consent checks came before the cut (or in flight).
        assert cut - timing.keepalive_interval <= answered <= cut + 0.011
        disconnected = endpoint.time_of(S.DISCONNECTED)
        failed = endpoint.time_of(S.FAILED)
        assert disconnected is not None and failed is not None
        assert disconnected == pytest.approx(heard + timing.disconnected_timeout)
        # The harness would poll a spinning core every spin_step; a past deadline would show.
        consent = last_consent(net, endpoint)
        assert failed == pytest.approx(consent + timing.failed_timeout, abs=net.spin_step)
        assert endpoint.states()[-2:] == [S.DISCONNECTED, S.FAILED]
    assert_valid_events(a, b)


def _cores_connected() -> tuple[AgentCore, AgentCore]:
    """Two cores (a controlling) connected at t=1 in memory: a's check and nomination,
    and b's check, answered."""
    a, b = two_cores(("stallA", "stallB"))
    for core, peer in ((a, b), (a, b), (b, a)):
        check = core.poll_check(1.0)
        assert check is not None
        source = core.local_candidates[0][0].transport_address
        answer = peer.on_request(0, source, stun.decode(check.message), 1.0)
        assert answer is not None
        core.on_response(check, stun.decode(answer), check.destination, 1.0)
    assert a.selected is not None and b.selected is not None
    a.drain_events()
    return a, b


@pytest.mark.parametrize("answered", [True, False])
def test_after_its_own_loop_stalled_an_agent_asks_before_it_says_disconnected(
    answered: bool,
) -> None:
    """The agent's clock jumps 10 s (its process stopped, its loop blocked): the peer was
    not heard, but nothing was asked either.  A consent check goes first, and the state
    stays until it goes unanswered for its RTO: then ``disconnected``.  (It said
    ``disconnected`` at once, and went back at the answer.)"""
    a, b = _cores_connected()
    now = 11.0
    due = a.next_deadline()
    assert due is not None and due < now
    a.on_timer(now)
    check = a.poll_check(now)
    assert check is not None and check.consent and a.poll_check(now) is None
    assert list(a.drain_events()) == []
    rto = check.schedule[-1]
    assert a.next_deadline() == now + rto
    if answered:
        source = a.local_candidates[0][0].transport_address
        answer = b.on_request(0, source, stun.decode(check.message), now + 0.01)
        assert answer is not None
        a.on_response(check, stun.decode(answer), check.destination, now + 0.01)
        a.on_timer(now + rto)
        assert list(a.drain_events()) == [] and a.state is S.COMPLETED
    else:
        a.on_timer(now + rto)
        assert list(a.drain_events()) == [ConnectionStateChanged(S.DISCONNECTED)]


@pytest.mark.parametrize("consent", [False, True])
@pytest.mark.parametrize("read_late", [False, True])
def test_an_answer_read_past_the_next_copys_time_is_not_timed(
    consent: bool, read_late: bool
) -> None:
    """An answer read after the time the check's next copy (or its end) was due, no copy
    having gone, was read late: the agent's own loop stalled.  Its time is not the path's,
    and no round trip is taken from it (Karn's rule, stretched).  Read in time, it is."""
    if consent:
        a, b = _cores_connected()
        a.on_timer(10.0)  # (a consent check is due by then)
        check = a.poll_check(10.0)
    else:
        a, b = two_cores(("lateA", "lateB"))
        check = a.poll_check(1.0)
    assert check is not None and check.consent is consent
    pair = check.pair
    before = pair.rtt_samples
    source = a.local_candidates[0][0].transport_address
    answer = b.on_request(0, source, stun.decode(check.message), check.started)
    assert answer is not None
    delay = check.schedule[1] + 2.0 if read_late else 0.01
    a.on_response(check, stun.decode(answer), check.destination, check.started + delay)
    assert pair.rtt_samples == before + (0 if read_late else 1)
    if not read_late:
        assert pair.rtt == pytest.approx(0.01)


def test_the_peers_requests_keep_it_connected_but_only_answers_keep_consent() -> None:
    """Once every answer to ``a``'s checks is lost, the peer's own requests still reach ``a``:
    the peer is there, so ``a`` does not go disconnected, but it has no consent to send
    (RFC 7675 §5.1): it fails ``failed_timeout`` after the last answer."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(5.0)
    cut = net.now
    a_addresses = set(a.bases.values())
    net.drop(
        lambda p: p.dst in a_addresses and p.message.message_class is stun.MessageClass.SUCCESS
    )
    assert net.run_until(lambda: a.state is S.FAILED, max_time=60.0)
    answered = last_arrival(net, a, answers_only=True)
    assert answered <= cut + 0.011
    assert a.time_of(S.FAILED) == pytest.approx(
        last_consent(net, a) + a.core.timing.failed_timeout, abs=net.spin_step
    )
    assert S.DISCONNECTED not in a.states()
    assert S.FAILED not in b.states()  # (b's checks are answered)


def _answers_to(net: Network, endpoint: Endpoint) -> list[Packet]:
    return [
        p
        for p in net.delivered
        if p.dst in endpoint.bases.values() and p.message.message_class is stun.MessageClass.SUCCESS
    ]


def test_a_late_nomination_gives_no_consent_its_checks_did_not() -> None:
    """The controlling peer nominates late (a long ``nomination_delay``, no
    end-of-candidates), 24 s after b's own check on the pair was answered, and answers
    nothing of b's since: b selects the pair, but its consent runs from that check (RFC 7675
    §5.1), so it fails ``failed_timeout`` after the check went, not after the nomination.
    Meanwhile it checks the pair again every consent interval while it waits for the
    nomination (see ``AgentCore._nudge``), and goes on so once it selects the pair."""
    timing = Timing(nomination_delay=24.0)
    net, _a, b = two_agents(timing=timing, end_of_candidates=False)
    assert net.run_until(lambda: bool(_answers_to(net, b)), max_time=2.0)
    net.run_for(0.05)
    net.drop(lambda p: p.sender == "a" and p.message.message_class is stun.MessageClass.SUCCESS)
    assert net.run_until(lambda: b.core.selected is not None, max_time=30.0)
    selected_at = net.now
    assert selected_at >= 24.0
    consent = last_consent(net, b)  # (an answer on its way when the silence began came)
    assert consent < 0.2
    assert net.run_until(lambda: b.state is S.FAILED, max_time=60.0)
    assert b.time_of(S.FAILED) == pytest.approx(consent + timing.failed_timeout, abs=net.spin_step)
    checks = [p.sent_at for p in net.packets(sender="b", requests=True) if p.sent_at > 1.0]
    gaps = [later - earlier for earlier, later in itertools.pairwise(checks)]
    assert checks[0] < 2.0 + 0.1 and checks[-1] > selected_at
    assert max(gaps) <= timing.keepalive_interval * JITTER_MAX + net.spin_step


def test_a_nomination_after_consent_ran_out_selects_once_a_check_is_answered() -> None:
    """Nominated 50 s after b's check on the pair was answered (its consent long gone), b
    selects nothing, and carries no data, until a check of its own on the pair is answered:
    sent at once; while the peer answers nothing, b stays unselected; once an answer comes,
    b selects the pair, with consent from that check."""
    timing = Timing(failed_timeout=60.0, nomination_delay=50.0)
    net, a, b = two_agents(timing=timing, end_of_candidates=False)
    assert net.run_until(lambda: bool(_answers_to(net, b)), max_time=2.0)
    net.run_for(0.05)
    silence = net.drop(
        lambda p: p.sender == "a" and p.message.message_class is stun.MessageClass.SUCCESS
    )
    assert net.run_until(lambda: a.core.selected is not None, max_time=55.0)  # (a nominated)
    nominated_at = min(p.deliver_at for p in net.packets(sender="a") if p.use_candidate)
    assert nominated_at >= 50.0
    net.run_for(2.0)
    assert b.core.selected is None and b.core.data_pair is None
    assert [p for p in net.packets(sender="b", requests=True) if p.sent_at >= nominated_at]
    net.loss_rules.remove(silence)
    assert net.run_until(lambda: b.core.selected is not None, max_time=net.now + 10.0)
    assert b.state is S.CONNECTED or b.state is S.COMPLETED
    assert last_consent(net, b) >= nominated_at


def test_an_authenticated_403_to_a_consent_check_revokes_consent_at_once() -> None:
    """RFC 7675 §5.2: the peer answers a consent check with an authenticated 403
    (Forbidden): ICE fails at once, not when consent would have expired, and the core says
    consent was revoked.  An unauthenticated 403 is ignored; a restart starts afresh."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(5.0)
    key = b.core._local_key

    def forbid(signed: bool) -> Callable[[str, bytes], bytes]:
        def rewrite(sender: str, data: bytes) -> bytes:
            message = stun.decode(data)
            if sender != "b" or message.message_class is not stun.MessageClass.SUCCESS:
                return data
            error = stun.Message(
                message.method,
                stun.MessageClass.ERROR,
                message.transaction_id,
                (stun.ErrorCode(403, "Forbidden"),),
            )
            return error.encode(integrity_key=key if signed else None, fingerprint=True)

        return rewrite

    net.rewrite = forbid(signed=False)
    start = net.now
    net.run_for(10.0)
    assert a.state is not S.FAILED and not a.core.consent_revoked
    assert [p for p in net.delivered if p.deliver_at > start and p.sender == "b"]
    net.rewrite = forbid(signed=True)
    start = net.now
    assert net.run_until(lambda: a.state is S.FAILED, max_time=start + 30.0)
    first = min(
        p.deliver_at
        for p in net.delivered
        if p.deliver_at > start
        and p.sender == "b"
        and p.message.message_class is stun.MessageClass.ERROR
    )
    assert a.time_of(S.FAILED) == pytest.approx(first, abs=net.spin_step)
    assert a.core.consent_revoked
    net.rewrite = None
    _restart(net, a, b)
    assert not a.core.consent_revoked
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=net.now + 2.0)


def test_data_from_the_peer_keeps_it_connected_but_is_not_consent() -> None:
    """Once nothing of STUN reaches ``a``, data from the peer (which the shell tells with
    ``on_data``) still shows the peer there: ``a`` stays connected while data comes, goes
    disconnected ``disconnected_timeout`` after the last of it, and comes back with the next.
    Data is not consent (RFC 7675 §5.1): ``a`` fails ``failed_timeout`` after the last answer
    all the same."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(1.0)
    a_addresses = set(a.bases.values())
    net.drop(lambda p: p.dst in a_addresses)
    timing = a.core.timing
    until = net.now + 2 * timing.disconnected_timeout
    while net.now < until:
        net.run_for(0.5)
        a.core.on_data(net.now)
    assert S.DISCONNECTED not in a.states()
    last_data = net.now
    assert net.run_until(lambda: a.state is S.DISCONNECTED, max_time=60.0)
    assert a.time_of(S.DISCONNECTED) == pytest.approx(
        last_data + timing.disconnected_timeout, abs=net.spin_step
    )
    a.core.on_data(net.now)
    assert a.core.state is S.COMPLETED  # (back, and done at once: nothing is left to check)
    assert net.run_until(lambda: a.state is S.FAILED, max_time=60.0)
    consent = last_consent(net, a)
    assert a.time_of(S.FAILED) == pytest.approx(consent + timing.failed_timeout, abs=net.spin_step)
    a.core.on_data(net.now)
    assert a.state is S.FAILED  # (and failed stays failed)


def test_a_lite_agent_keeps_consent_by_the_peers_checks() -> None:
    """A lite agent sends no checks: the full peer's checks are what keeps it connected."""
    net, a, b = two_agents(b_lite=True)
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(60.0)
    assert b.core.checks_sent == 0
    assert S.DISCONNECTED not in b.states() and S.FAILED not in b.states()


def test_a_lite_agent_keeps_consent_by_the_peers_data_when_it_checks_no_more() -> None:
    """A full peer that checks only a pair gone idle (Pion) sends no check while data
    flows both ways: the lite agent's consent is kept by the data over the selected pair
    (it went ``failed`` at failed_timeout, with data coming every 20 ms, and the session
    ended).  Data from the peer's other addresses keeps it alive, not consenting."""
    net, a, b = two_agents(b_lite=True)
    assert net.run_until(connected(a, b), max_time=1.0)
    net.drop(lambda p: p.sender == "a" and p.is_request)  # (no more checks from the peer)
    end = net.now + 60.0
    while net.now < end:
        net.run_for(0.02)
        b.core.on_data(net.now, selected=True)
    assert S.DISCONNECTED not in b.states() and S.FAILED not in b.states()
    end = net.now + b.core.timing.failed_timeout + 1.0
    while net.now < end:  # (data from elsewhere than the selected pair: no consent)
        net.run_for(0.02)
        b.core.on_data(net.now)
    assert b.states()[-1] is S.FAILED


def test_a_path_slower_than_the_rto_keeps_consent() -> None:
    """With a round trip of 0.6 s every answer to a consent check comes after the check
    gave up (its RTO is 0.5 s): it still refreshes consent (RFC 7675 §5.1 counts an answer to
    any consent request of the last 30 s)."""
    net, a, b = two_agents(latency=0.3)
    assert net.run_until(connected(a, b), max_time=5.0)
    net.run_for(60.0)
    for endpoint in (a, b):
        assert S.DISCONNECTED not in endpoint.states()
        assert S.FAILED not in endpoint.states()
        assert any(c.consent for _, c in endpoint.timeouts)  # (they did give up first)


def test_consent_runs_from_when_the_answered_check_went() -> None:
    """RFC 7675 §5.1 counts answers to the consent requests sent in the last 30 s: with
    everything from the peer lost but one answer, which comes 25 s late, consent ends 30 s
    after that check went (it ran 30 s from the answer: 25 s more of sending)."""
    timing = Timing(failed_timeout=60.0)  # (consent: 30 s)
    net, a, b = two_agents(timing=timing)
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(5.0)
    cut = net.now

    def the_answered_one(packet: Packet) -> bool:
        first = next((c for t, c in a.started if t > cut and c.consent), None)
        return (
            first is not None
            and packet.message.message_class is stun.MessageClass.SUCCESS
            and packet.message.transaction_id == first.transaction_id
        )

    net.latency = lambda packet: 25.0 if the_answered_one(packet) else 0.01
    net.drop(lambda p: p.sent_at > cut and p.sender == "b" and not the_answered_one(p))
    assert net.run_until(lambda: a.state is S.FAILED, max_time=net.now + 120.0)
    sent = next(t for t, c in a.started if t > cut and c.consent)
    answered = [p for p in net.delivered if p.sender == "b" and p.sent_at > cut]
    assert len(answered) == 1 and answered[0].deliver_at > sent + 25.0  # (it came, and late)
    assert a.time_of(S.FAILED) == pytest.approx(sent + 30.0, abs=0.05)


@pytest.mark.parametrize("latency", [0.01, 0.3], ids=["in-time", "late"])
def test_answers_with_an_unknown_comprehension_required_attribute_keep_no_consent(
    latency: float,
) -> None:
    """Once connected, the peer answers every consent check with an unknown
    comprehension-required attribute beside its mapped address: each transaction failed
    (RFC 8489 §6.3.3), in time or late (past the RTO), so consent runs out (RFC 7675)."""
    net, a, b = two_agents(latency=latency)
    assert net.run_until(connected(a, b), max_time=5.0)
    key = stun.short_term_key(b.core.local.pwd)
    unknown = stun.UnknownAttribute(0x7F01, b"\x00\x01\x02\x03")

    def tainted(sender: str, data: bytes) -> bytes:
        message = stun.decode(data)
        if sender != "b" or message.message_class is not stun.MessageClass.SUCCESS:
            return data
        kept = [a for a in message.attributes if isinstance(a, stun.XorMappedAddress)]
        return stun.Message(
            message.method,
            message.message_class,
            transaction_id=message.transaction_id,
            attributes=[*kept, unknown],
        ).encode(integrity_key=key, fingerprint=True)

    net.rewrite = tainted
    net.run_for(40.0)
    assert S.FAILED in a.states()


def _random_loss(rng: random.Random, share: float) -> Callable[[Packet], bool]:
    """A loss rule that drops ``share`` of the packets at random."""

    def lose(_packet: Packet) -> bool:
        return rng.random() < share

    return lose


def test_lost_answers_now_and_then_do_not_make_a_pair_flap() -> None:
    """15 % of the packets lost at random, two minutes, ten seeds: each side still hears
    the other most of the time (answers, and the other's own checks), and a pair seldom goes
    disconnected.  (When only answers counted, it went disconnected 64 times here.)"""
    flaps = 0
    for seed in range(10):
        rng = random.Random(seed)
        net, a, b = two_agents()
        assert net.run_until(connected(a, b), max_time=1.0)
        net.drop(_random_loss(rng, 0.15))
        net.run_for(120.0)
        for endpoint in (a, b):
            assert S.FAILED not in endpoint.states()
            flaps += endpoint.states().count(S.DISCONNECTED)
    assert flaps <= 4


def test_a_long_keepalive_interval_does_not_make_a_healthy_pair_flap() -> None:
    """Consent checks go at least twice per disconnected_timeout, whatever keepalive_interval
    says: with a check every 6 s and 5.5 s without consent counting as disconnected, a
    healthy pair went disconnected and back every 6 s."""
    timing = Timing(keepalive_interval=6.0, disconnected_timeout=5.5)
    net, a, b = two_agents(timing=timing)
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(30.0)
    for endpoint in (a, b):
        assert S.DISCONNECTED not in endpoint.states()
        consents = [c for t, c in endpoint.started if c.consent]
        assert len(consents) >= 30.0 / (timing.disconnected_timeout / 2) - 1


def test_consent_checks_go_at_jittered_intervals() -> None:
    """RFC 7675 §5.1: each interval between consent checks is the base one (the keep-alive
    interval, 2 s) times a factor drawn from 0.8-1.2, so that agents do not send in step
    (here the factors are given: 0.8, then 1.2, in turn); and even at 1.2 consent is checked
    twice per ``disconnected_timeout`` (a long keep-alive interval: 4 s, 5 s disconnected
    timeout; the base interval is 5 / 2.4 s, so 2.5 s at most)."""
    for timing, base in ((Timing(), 2.0), (Timing(keepalive_interval=4.0), 5.0 / 2.4)):
        net, a, b = two_agents(timing=timing)
        factors = itertools.cycle((0.8, 1.2))
        a.core._jitter = factors.__next__
        assert net.run_until(connected(a, b), max_time=1.0)
        assert a.core.selected is not None
        proved = a.core.selected.proven_at
        net.run_for(20.0)
        times = [t for t, c in a.started if c.consent]
        # (The first interval runs from when the check that proved the selected pair went,
        # before the selection by a round trip: the answers come as far apart as the checks.)
        times.insert(0, proved)
        gaps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(times)]
        assert gaps[:2] == [round(0.8 * base, 6), round(1.2 * base, 6)]
        assert len(gaps) > 4
        assert set(gaps) == {round(0.8 * base, 6), round(1.2 * base, 6)}
        assert max(gaps) <= timing.disconnected_timeout / 2
        assert S.DISCONNECTED not in a.states()


@pytest.mark.parametrize("b_lite", [True, False], ids=["lite-peer", "full-peer"])
def test_a_healthy_path_of_a_3_s_round_trip_never_says_disconnected(b_lite: bool) -> None:
    """Over a path of a 3 s round trip (1.5 s each way) nothing is lost, and the state
    never leaves connected/completed, not even at the first consent check: its answer
    comes as long after the last one as the checks go apart (the consent interval, at
    most 2.4 s).  The first went an interval after the nomination's answer, and its
    answer came a round trip later still, 5.4 s after the peer was last heard, past
    ``disconnected_timeout``: against a peer that sends no checks of its own (ICE-lite)
    the state flapped to disconnected and back (the latency review)."""
    net, a, b = two_agents(latency=1.5, b_lite=b_lite)
    a.core._jitter = lambda: 1.2  # (the longest interval, RFC 7675 §5.1)
    assert net.run_until(connected(a, b), max_time=20.0)
    net.run_for(40.0)
    assert S.DISCONNECTED not in a.states() and S.DISCONNECTED not in b.states()
    assert a.states()[-1] is S.COMPLETED


@pytest.mark.parametrize("latency", [0.5, 1.0])
def test_a_controlled_agents_first_consent_check_keeps_its_distance_from_the_ping_back(
    latency: float,
) -> None:
    """b (controlled) pings back on the pair a checked (a check of consent's), then a's
    nomination selects the pair with the ping-back still on its way: the first consent
    check is paced from the ping-back, the latest check on the pair, and goes no less than
    0.8 of an interval after it (RFC 7675 §5.1; paced from the pair's first check, it went
    0.4 of an interval after the ping-back: the p35pass1 review)."""
    net, a, b = two_agents(latency=latency)
    assert net.run_until(connected(a, b), max_time=30.0)
    net.run_for(20.0)
    interval = b.core._consent_interval()
    selected = b.time_of(S.CONNECTED)
    assert selected is not None
    times = [t for t, c in b.started if c.consent]
    assert times[0] < selected  # (the ping-back, before the selection)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.8 * interval - 1e-9, (times[:4], interval)


def test_consent_jitter_by_default_is_drawn_from_0_8_to_1_2() -> None:
    core = AgentCore(
        local=IceParameters("abcd", "a" * 22), controlling=True, tiebreaker=1, timing=Timing()
    )
    factors = [core._jitter() for _ in range(1000)]
    assert 0.8 <= min(factors) < 0.85 and 1.15 < max(factors) <= 1.2


def test_consent_restored_reconnects() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    rule = net.drop_all()
    assert net.run_until(lambda: a.state is S.DISCONNECTED and b.state is S.DISCONNECTED, 30.0)
    net.loss_rules.remove(rule)
    back = (S.CONNECTED, S.COMPLETED)
    assert net.run_until(lambda: a.state in back and b.state in back, max_time=net.now + 5.0)
    for endpoint in (a, b):
        states = endpoint.states()
        assert S.CONNECTED in states[states.index(S.DISCONNECTED) :]
        assert S.FAILED not in states
    net.run_for(60.0)
    assert a.state in back and b.state in back
    assert_valid_events(a, b)


def test_no_busy_loop_while_disconnected() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    net.drop_all()
    assert net.run_until(lambda: a.state is S.FAILED, max_time=60.0)
    assert a.stale_deadlines == []


def test_no_busy_loop_with_frozen_pairs_of_an_active_foundation() -> None:
    net, a, b = two_agents(
        a_hosts=[("10.0.0.1", 5000), ("10.0.0.1", 5001)],
        b_hosts=[("10.0.0.2", 6000), ("10.0.0.2", 6001)],
        exchange=False,
    )
    net.drop(lambda packet: packet.sender == "b")
    net.exchange(a, b)
    states = [p.state for p in a.core.checklist]
    assert states.count(PairState.FROZEN) == 3  # one foundation for all four pairs
    net.run_for(1.0)
    assert a.stale_deadlines == []


def _agent_and_lite_peer() -> tuple[Network, Endpoint, Endpoint]:
    """A controlling full agent a (10.0.0.1:5000) and an ICE-lite peer b (10.0.0.2:6000),
    nothing signalled yet."""
    net = Network(latency=0.01)
    a = net.add_endpoint("a", controlling=True, tiebreaker=2)
    b = net.add_endpoint("b", controlling=False, tiebreaker=1, lite=True)
    a.add_host("10.0.0.1", 5000)
    b.add_host("10.0.0.2", 6000)
    return net, a, b


def test_the_highest_priority_pair_of_a_foundation_waits_whatever_came_first() -> None:
    """RFC 8445 §6.1.2.6: of each foundation, the highest-priority pair starts waiting, the
    rest frozen, whatever order the candidates came in.  Here the lite peer signals first a
    lower-priority candidate on the same IP (the same foundation) that never answers: its
    pair was the waiting one, and the good pair waited, frozen, for its check to time out
    (15.5 s) before it was checked."""
    net, a, b = _agent_and_lite_peer()
    a.core.set_remote(b.core.local, 0.0)
    a.core.add_remote_candidate(make_candidate("10.0.0.2", 6999, local_pref=100))  # no answer
    for candidate in b.signalled:
        a.core.add_remote_candidate(candidate)
    good, ghost = list(a.core.checklist)
    assert good.foundation == ghost.foundation and good.priority > ghost.priority
    assert (good.state, ghost.state) == (PairState.WAITING, PairState.FROZEN)
    b.core.set_remote(a.core.local, 0.0)
    for candidate in a.signalled:
        b.core.add_remote_candidate(candidate)
    a.core.want_connection(0.0)
    b.core.want_connection(0.0)
    assert net.run_until(connected(a, b), max_time=1.0)


def test_a_better_pair_trickled_while_its_foundation_is_checked_goes_at_the_next_ta() -> None:
    """RFC 8838 §12, rule 1: a trickled pair that is the best of its foundation waits, even
    while a worse pair of that foundation is being checked.  Here the peer trickles a
    candidate that never answers, then a better one on the same IP (one foundation): its
    pair stayed frozen until the first check gave up (15.5 s), and connected only then."""
    net, a, b = _agent_and_lite_peer()
    a.core.set_remote(b.core.local, 0.0)
    b.core.set_remote(a.core.local, 0.0)
    for candidate in a.signalled:
        b.core.add_remote_candidate(candidate)
    a.core.want_connection(0.0)
    b.core.want_connection(0.0)
    a.core.add_remote_candidate(make_candidate("10.0.0.2", 6999, local_pref=100))  # no answer
    net.run_for(0.2)
    (ghost,) = list(a.core.checklist)
    assert ghost.state is PairState.IN_PROGRESS
    for candidate in b.signalled:
        a.core.add_remote_candidate(candidate)
    good = next(p for p in a.core.checklist if p is not ghost)
    assert good.foundation == ghost.foundation and good.priority > ghost.priority
    assert good.state is PairState.WAITING
    assert net.run_until(connected(a, b), max_time=1.0)


def test_a_role_switch_forgets_a_nomination_in_flight() -> None:
    """A controlling agent that switches to controlled (a role conflict) no longer counts
    the nomination it had in flight: switched back, it could otherwise never nominate."""
    core, pair = _proved_pair_core(controlling=True)  # ... and nominating it now
    assert core._nominating is pair
    core._switch_role("a test")
    assert core._nominating is None


def test_no_busy_loop_after_the_nomination_fails() -> None:
    """The controlling agent's nomination never gets through and its only valid pair fails:
    the nomination delay, long passed, does not stay due (which woke the shell over and over
    until failed_timeout)."""
    net, a, _b = two_agents(end_of_candidates=False)  # (no end: ICE waits for candidates)
    net.drop(lambda packet: packet.is_request and packet.use_candidate)
    net.run_for(40.0)
    # (The peer's ping-back came during the first nomination, so the pair is nominated
    # again, not failed; ICE fails at failed_timeout, and nothing is sent after that.)
    assert a.core.state is ConnectionState.FAILED
    assert a.stale_deadlines == []
    failed_at = a.time_of(ConnectionState.FAILED)
    assert failed_at is not None
    assert not [p for p in net.packets(sender="a", requests=True) if p.sent_at > failed_at]


def test_a_pruned_pair_leaves_the_triggered_queue() -> None:
    """A pair waiting in the triggered-check queue that the cap prunes is not checked (it was,
    and could be selected while no longer in the check list)."""
    _net, a, _b = two_agents(want=False, end_of_candidates=False)
    core = a.core
    (pair,) = list(core.checklist)
    pair.priority = 1  # (the lowest there is: the one the cap prunes)
    core._triggered = [pair]
    core.checklist.max_pairs = 1
    core.add_remote_candidate(make_candidate("10.0.0.3", 6001))
    assert pair not in core.checklist
    assert not core._triggered
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    assert check is not None and check.pair is not pair


def test_a_pair_whose_nomination_was_answered_is_not_pruned() -> None:
    """The controlled agent answers the peer's USE-CANDIDATE check with a success before its
    own check of that pair has succeeded (RFC 8445 §7.3.1.5): the peer now holds the pair
    nominated.  Better sources that check in next must not push it out at the cap: it was
    pruned, never checked nor selected, and the agent failed while the peer held it
    selected (the authfuzz review)."""
    net, a, b = two_agents(a_controlling=False, b_controlling=True, want=False)
    del net.endpoints["b"]
    core = a.core
    core.checklist.max_pairs = 2
    nominated = ("10.0.0.7", 7000)
    low = binding_request(core, priority=50, controlling=True, use_candidate=True)
    reply = core.on_request(0, nominated, low, 0.0)
    assert reply is not None
    assert stun.decode(reply).message_class is stun.MessageClass.SUCCESS
    for i in range(1, 4):
        better = binding_request(core, priority=10**6 + i, controlling=True, tid=bytes([i]) * 12)
        core.on_request(0, ("10.0.0.8", 7000 + i), better, 0.0)
    assert core.checklist.pruned
    now = 0.0
    while now < 5.0 and core.selected is None:
        check = core.poll_check(now)
        if check is not None:
            core.on_response(check, _answer_to(check, b.core), check.destination, now + 0.01)
        now += 0.01
        core.on_timer(now)
    assert core.selected is not None and core.selected.remote_address == nominated


# -- latency ------------------------------------------------------------------------------------


@pytest.mark.parametrize("latency", [0.04, 0.1])
def test_connects_when_rtt_exceeds_ta(latency: float) -> None:
    net, a, b = two_agents(latency=latency)
    assert net.run_until(connected(a, b), max_time=5.0)


@pytest.mark.parametrize("latency", [0.0, 0.001, 0.01, 0.012])
def test_connects_when_rtt_below_ta(latency: float) -> None:
    net, a, b = two_agents(latency=latency)
    assert net.run_until(connected(a, b), max_time=1.0)
    assert net.now <= 4 * latency + 1e-9  # check, response, nomination, response


@pytest.mark.parametrize("latency", [0.015, 0.02])
def test_nomination_survives_a_stale_triggered_check(latency: float) -> None:
    net, a, b = two_agents(latency=latency)
    assert net.run_until(connected(a, b), max_time=5.0)


# -- hostile input (RFC 8445 §7.3, RFC 8489 §6.3) -----------------------------------------------


def snapshot(core: AgentCore) -> tuple[object, ...]:
    return (
        list(core.remote_candidates),
        [(p.state, p.priority) for p in core.checklist],
        list(core._triggered or ()),
        core.controlling,
        core.state,
        core.selected,
    )


def rejected(core: AgentCore, request: stun.Message, source: tuple[str, int]) -> stun.Message:
    before = snapshot(core)
    count = core.requests_rejected
    data = core.on_request(0, source, request, 0.0)
    assert data is not None
    response = stun.decode(data)
    assert response.message_class is stun.MessageClass.ERROR
    assert response.transaction_id == request.transaction_id
    assert core.requests_rejected == count + 1
    assert snapshot(core) == before
    return response


@pytest.mark.parametrize("source", [("10.0.0.2", 6000), ("198.51.100.7", 4000)])
@pytest.mark.parametrize(
    "username", ["aufrag:bufrag", "bufrag:intruder", "bufrag", "bufragX:aufrag", ":"]
)
def test_wrong_username_401_changes_nothing(username: str, source: tuple[str, int]) -> None:
    _net, _a, b = two_agents(want=False)
    core = b.core
    core.want_connection(0.0)
    request = binding_request(core, username=username, controlling=True, tiebreaker=2**63)
    response = rejected(core, request, source)
    error = response.get(stun.ErrorCode)
    assert error is not None and error.code == 401
    assert not response.has_integrity  # it cannot be signed with a key the sender lacks


def test_wrong_integrity_401() -> None:
    _net, _a, b = two_agents(want=False)
    request = binding_request(b.core, key=stun.short_term_key("not-the-password-at-all!!"))
    response = rejected(b.core, request, ("198.51.100.7", 4000))
    error = response.get(stun.ErrorCode)
    assert error is not None and error.code == 401


def test_missing_integrity_400() -> None:
    _net, _a, b = two_agents(want=False)
    data = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        transaction_id=b"N" * 12,
        attributes=[stun.Username("bufrag:aufrag"), stun.Priority(1)],
    ).encode(fingerprint=True)
    response = rejected(b.core, stun.decode(data), ("198.51.100.7", 4000))
    error = response.get(stun.ErrorCode)
    assert error is not None and error.code == 400


@pytest.mark.parametrize("priority", [None, 0])
def test_missing_or_zero_priority_400_with_integrity(priority: int | None) -> None:
    """An authenticated check without PRIORITY, or with a PRIORITY of 0 (a priority is at
    least 1), is a 400 that carries MESSAGE-INTEGRITY, as every error answering an
    authenticated request does (RFC 8489 §9.1.3): else the peer would discard it and wait
    for its check to time out.  A peer-reflexive candidate of priority 0 cannot be learned
    (it used to take the agent down)."""
    _net, _a, b = two_agents(want=False)
    request = binding_request(b.core, priority=priority)
    response = rejected(b.core, request, ("198.51.100.7", 4000))
    error = response.get(stun.ErrorCode)
    assert error is not None and error.code == 400
    assert response.verify_integrity(stun.short_term_key(b.core.local.pwd))


@pytest.mark.parametrize("address", ["::1.2.3.4", "::ffff:198.51.100.7", "fe80::1%eth0"])
def test_a_source_no_candidate_can_stand_for_is_answered_but_not_learned(address: str) -> None:
    """A source address that a candidate would write otherwise ("::1.2.3.4" is "::102:304",
    as the socket does not write it; an IPv4-mapped one is the IPv4 address it maps) or not
    at all (a scope): the check is answered, but no peer-reflexive candidate or pair is
    made of it (no pair could be found by it); counted in ``prflx_dropped``.  (Only a
    dual-stack socket gives IPv4-mapped sources, and trice's IPv6 sockets are IPv6-only; an
    IPv4-mapped source was learned where Python wrote it as the socket did, 3.13 on.)"""
    _net, _a, b = two_agents(want=False)
    core = b.core
    before = list(core.remote_candidates), len(core.checklist)
    data = core.on_request(0, (address, 4000), binding_request(core), 0.0)
    assert data is not None
    assert stun.decode(data).message_class is stun.MessageClass.SUCCESS
    assert (list(core.remote_candidates), len(core.checklist)) == before
    assert core.prflx_dropped == 1


@pytest.mark.parametrize("integrity", ["sha1", "sha256", "both"])
@pytest.mark.parametrize("answer", ["success", "487"])
def test_a_check_signed_with_message_integrity_sha256_is_taken_and_answered_so(
    integrity: str, answer: str
) -> None:
    """RFC 8489 §9.1.3: a check needs MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 (one
    with only the latter had a 400), and the answer to one with MESSAGE-INTEGRITY-SHA256
    carries it too (beside MESSAGE-INTEGRITY, which RFC 8445 peers read), a role conflict's
    as a success's."""
    _net, _a, b = two_agents(want=False)
    core = b.core
    request = binding_request(  # (controlled too, with the larger tie-breaker: a 487)
        core, integrity=integrity, controlling=answer == "success", tiebreaker=2**64 - 1
    )
    data = core.on_request(0, ("10.0.0.9", 4000), request, 0.0)
    assert data is not None
    response = stun.decode(data)
    expected = stun.MessageClass.SUCCESS if answer == "success" else stun.MessageClass.ERROR
    assert response.message_class is expected
    assert response.has_integrity_sha256 is (integrity != "sha1")
    assert response.get(stun.MessageIntegrity) is not None
    assert response.verify_integrity(stun.short_term_key(core.local.pwd))


@pytest.mark.parametrize(
    ("ufrag", "pwd", "lite"),
    [
        ("", "x" * 22, False),
        ("peer", "", False),
        ("peer", "bad\x07pwd-of-22-characters", False),
        ("u" * 257, "x" * 22, False),
        ("\ud800peer", "x" * 22, False),  # (what JSON's "\ud800peer" gives: no UTF-8)
        ("peer", "x" * 22, "false"),
        ("peer", "\u200b" * 30, False),  # (SASLprep maps each to nothing: an empty key)
    ],
)
def test_unusable_remote_parameters_are_a_config_error_and_set_nothing(
    ufrag: str, pwd: str, lite: bool
) -> None:
    """Also with local candidates, whose checks are made as the parameters come."""
    net = Network()
    endpoint = net.add_endpoint("a", controlling=True, tiebreaker=1)
    endpoint.add_host("10.0.0.1", 5000)
    core = endpoint.core
    with pytest.raises(ConfigError):
        core.set_remote(IceParameters(ufrag, pwd, lite), 0.0)
    assert core.remote is None
    core.set_remote(IceParameters("peer", "x" * 22), 0.0)  # and the right ones still go
    assert core.remote is not None and core.remote.ufrag == "peer"


def test_unknown_comprehension_required_attribute_420() -> None:
    _net, _a, b = two_agents(want=False)
    request = binding_request(b.core, extra=(stun.UnknownAttribute(0x7F01, b"\x00\x01\x02\x03"),))
    response = rejected(b.core, request, ("198.51.100.7", 4000))
    error = response.get(stun.ErrorCode)
    assert error is not None and error.code == 420
    unknown = response.get(stun.UnknownAttributes)
    assert unknown is not None and 0x7F01 in unknown.types
    assert response.verify_integrity(stun.short_term_key(b.core.local.pwd))


def test_unknown_comprehension_optional_attribute_is_ignored() -> None:
    _net, _a, b = two_agents(want=False)
    request = binding_request(b.core, extra=(stun.UnknownAttribute(0xC0DE, b"abcd"),))
    data = b.core.on_request(0, ("10.0.0.1", 5000), request, 0.0)
    assert data is not None
    assert stun.decode(data).message_class is stun.MessageClass.SUCCESS


# -- limits and misuse --------------------------------------------------------------------------


def test_remote_candidate_limit() -> None:
    core = AgentCore(
        local=IceParameters("ufrag", "password-0123456789abcdef"),
        controlling=True,
        tiebreaker=1,
        timing=Timing(),
        max_remote_candidates=3,
    )
    for i in range(3):
        core.add_remote_candidate(make_candidate(f"10.0.0.{i + 1}", 6000))
    core.add_remote_candidate(make_candidate("10.0.0.1", 6000))  # a duplicate is no new one
    with pytest.raises(trice.LimitError):
        core.add_remote_candidate(make_candidate("10.0.0.9", 6000))
    assert len(core.remote_candidates) == 3


def _held_core(max_remote_candidates: int = 3) -> AgentCore:
    core = AgentCore(
        local=IceParameters("ufrag", "password-0123456789abcdef"),
        controlling=True,
        tiebreaker=1,
        timing=Timing(),
        max_remote_candidates=max_remote_candidates,
    )
    core.set_remote(IceParameters("peer", "password-0123456789abcdef"), 0.0)
    return core


def test_held_candidates_count_against_the_cap_and_end_of_candidates_waits_for_them() -> None:
    """A candidate the shell holds back (a .local name it resolves) counts against the cap;
    an end-of-candidates waits until every held one is back, taken or left out."""
    core = _held_core()
    first, second = core.hold_remote(), core.hold_remote()
    core.add_remote_candidate(make_candidate("10.0.0.1", 6000))
    with pytest.raises(trice.LimitError):
        core.hold_remote()  # (two held and one known: the cap of 3 is reached)
    with pytest.raises(trice.LimitError):
        core.add_remote_candidate(make_candidate("10.0.0.3", 6000))  # (nor signalled)
    assert core.add_remote_candidate(None)
    assert core.remote_end_held and not core.remote_complete
    with pytest.raises(trice.StateError):
        core.add_remote_candidate(make_candidate("10.0.0.9", 6000))  # (after the end)
    with pytest.raises(trice.StateError):
        core.hold_remote()
    assert core.release_remote(make_candidate("10.0.0.2", 6000), first)
    assert core.remote_end_held and not core.remote_complete  # (one still held)
    assert not core.release_remote(None, second)  # (left out: no answer)
    assert core.remote_complete and not core.remote_end_held
    assert core.remote_candidates_dropped == 1
    assert core.pending_remote == 0
    assert ("10.0.0.2", 6000) in core.remote_addresses


def test_a_restart_forgets_what_was_held_and_its_late_return_is_not_taken() -> None:
    core = _held_core()
    held = core.hold_remote()
    core.add_remote_candidate(None)
    core.restart(IceParameters("ufr2", "password-0123456789abcdeg"), 1.0)
    assert (core.pending_remote, core.remote_end_held) == (0, False)
    assert not core.release_remote(make_candidate("10.0.0.2", 6000), held)
    assert ("10.0.0.2", 6000) not in core.remote_addresses
    assert core.pending_remote == 0


def test_prflx_past_the_limit_is_dropped_and_counted() -> None:
    _net, _a, b = two_agents(want=False)
    core = b.core
    core.max_remote_candidates = len(core.remote_candidates)
    core.on_request(0, ("198.51.100.7", 4000), binding_request(core), 0.0)
    assert core.prflx_dropped == 1
    assert not core.is_remote_address(("198.51.100.7", 4000))


def test_a_nomination_from_a_source_past_the_limit_is_refused() -> None:
    """RFC 8445 §7.3.1.5: a nomination the controlled agent cannot take (no room for its
    source as a remote candidate) is refused with an error, not answered with a success
    that would have the peer select a pair this agent never has; nothing changes.  (A
    check without USE-CANDIDATE from there is answered, see above.)"""
    _net, _a, b = two_agents(want=False)
    core = b.core
    core.max_remote_candidates = len(core.remote_candidates)
    request = binding_request(core, controlling=True, use_candidate=True)
    response = rejected(core, request, ("198.51.100.7", 4000))
    error = response.get(stun.ErrorCode)
    assert error is not None and error.code == 400
    assert response.verify_integrity(stun.short_term_key(core.local.pwd))
    assert core.prflx_dropped == 1 and core.selected is None


def test_a_487_switch_takes_a_new_tiebreaker() -> None:
    """RFC 8445 §7.2.5.1: an agent that switched its role on a 487 to its check changes
    its tiebreaker, and its next checks carry the new one; a switch on a peer's check
    (§7.3.1.1) keeps it."""
    drawn = iter([4242, 4343])
    core = AgentCore(
        local=IceParameters("localufrag", "local-password-0123456789abcdef"),
        controlling=False,
        tiebreaker=1000,
        timing=Timing(),
        new_transaction_id=TidSource(b"L"),
        consent_jitter=lambda: 1.0,
        new_tiebreaker=lambda: next(drawn),
    )
    core.add_local_candidate(make_candidate("10.0.0.1", 5000), 0)
    core.set_local_complete()
    peer = IceParameters("peerufrag", "peer-password-0123456789abcdef")
    core.set_remote(peer, 0.0)
    core.add_remote_candidate(make_candidate("10.0.0.2", 6000))
    core.add_remote_candidate(None)
    core.want_connection(0.0)
    first = core.poll_check(0.0)
    assert first is not None
    conflict = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.ERROR,
        transaction_id=first.transaction_id,
        attributes=[stun.ErrorCode(487, "Role Conflict")],
    ).encode(integrity_key=stun.short_term_key(peer.pwd), fingerprint=True)
    assert core.on_response(first, stun.decode(conflict), first.destination, 0.01)
    assert core.controlling and core.tiebreaker == 4242
    again, now = None, 0.01
    while again is None and now < 1.0:  # (paced: Ta after the first check)
        now += 0.01
        core.on_timer(now)
        again = core.poll_check(now)
    assert again is not None and again.pair is first.pair
    claimed = stun.decode(again.message).get(stun.IceControlling)
    assert claimed is not None and claimed.tiebreaker == 4242
    # The peer's check, controlling with the larger tiebreaker: this side gives way (§7.3.1.1),
    # keeping its tiebreaker.
    request = binding_request(core, controlling=True, tiebreaker=2**63)
    assert core.on_request(0, ("10.0.0.2", 6000), request, now) is not None
    assert not core.controlling and core.tiebreaker == 4242


def test_candidate_after_end_of_candidates() -> None:
    _net, a, _b = two_agents(want=False)
    assert a.core.remote_complete
    with pytest.raises(trice.StateError):
        a.core.add_remote_candidate(make_candidate("10.0.0.9", 6000))


def test_remote_parameters_cannot_change() -> None:
    _net, a, _b = two_agents(want=False)
    with pytest.raises(trice.StateError):
        a.core.set_remote(IceParameters("other", "other-password-0123456789"), 0.0)


def test_connected_core_keeps_no_scratch_state() -> None:
    """A process may hold thousands of idle agents: once connected, with its events drained
    and no check in flight, a core holds no queues, live checks or check templates, through
    consent checks too (each makes its template afresh), and nothing twice."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=5.0)
    net.run_for(3 * a.core.timing.keepalive_interval + 0.5)  # consent checks came and went
    assert a.state is S.COMPLETED and b.state is S.COMPLETED
    for endpoint in (a, b):
        core = endpoint.core
        assert not any(endpoint.flights), endpoint.flights
        assert core.checks_sent > 3  # consent checks were sent
        for name in ("_events", "_triggered", "_urgent", "_resend", "_live", "_templates"):
            assert getattr(core, name) is None, name
        assert list(core.drain_events()) == []
        assert list(core.poll_resend()) == []
        assert core.checklist._index is None
        remote = core.remote_candidates
        assert list(core.remote_addresses) == [c.transport_address for c in remote]


def test_remote_candidates_keep_their_order() -> None:
    """Signalled and learned remote candidates are listed in the order they came; a signalled
    candidate that replaces a learned one takes its place."""
    _net, a = three_pair_core()
    core = a.core
    before = core.remote_candidates
    learned = ("198.51.100.7", 41000)
    core.on_request(0, learned, binding_request(core, priority=1_862_270_975), 0.0)
    core.remote_complete = False
    core.add_remote_candidate(make_candidate("10.0.0.99", 6000))
    signalled = Candidate.from_sdp("candidate:sig 1 udp 2130706431 198.51.100.7 41000 typ host")
    core.add_remote_candidate(signalled)
    after = core.remote_candidates
    assert after[: len(before)] == before
    assert after[len(before)] is signalled
    assert after[-1].transport_address == ("10.0.0.99", 6000)
    assert core.is_remote_address(learned) and core.remote_addresses[learned] is signalled


def test_closed_core_does_nothing() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    a.core.close()
    assert a.core.state is S.CLOSED
    assert a.core.next_deadline() is None
    assert a.core.poll_check(net.now) is None
    assert a.core.on_request(0, ("10.0.0.2", 6000), binding_request(a.core), net.now) is None


def test_a_prflx_remote_candidate_is_paired_only_with_the_base_its_check_came_on() -> None:
    """RFC 8445 §7.3.1.3: a peer-reflexive remote candidate joins the remote candidates but
    is paired with no local candidate; only the pair its check came on (§7.3.1.4) is
    formed: not one from the agent's other host, nor from a local candidate gathered later.
    Signalled after all (RFC 8838 §11.4), it is paired as any signalled candidate."""
    _net, a, _b = two_agents(a_hosts=(("10.0.0.1", 5000), ("10.0.0.9", 5009)), want=False)
    core = a.core
    source = ("10.0.0.77", 7777)
    assert core.on_request(0, source, binding_request(core), 0.0) is not None
    assert [p.base for p in core.checklist if p.remote_address == source] == [0]
    later = make_candidate("10.0.0.10", 5010)
    core.add_local_candidate(later, 2)
    assert [p.base for p in core.checklist if p.remote_address == source] == [0]

    signalled = Candidate.from_sdp("candidate:sig 1 udp 2130706431 10.0.0.77 7777 typ host")
    core.remote_complete = False  # (the harness signalled end-of-candidates already)
    core.add_remote_candidate(signalled)
    pairs = sorted((p.base, p.remote.type) for p in core.checklist if p.remote_address == source)
    assert pairs == [(0, CandidateType.HOST), (1, CandidateType.HOST), (2, CandidateType.HOST)]


def test_prflx_remote_candidates_from_one_address_have_foundations_of_their_own() -> None:
    """RFC 8445 §7.3.1.3: a peer-reflexive remote candidate's foundation differs from every
    other remote candidate's, also one learned from another port of the same address (two
    NAT mappings), so that neither pair waits frozen behind the other's."""
    _net, a, _b = two_agents(want=False)
    core = a.core
    core.on_request(0, ("10.0.0.77", 7777), binding_request(core, tid=b"1" * 12), 0.0)
    core.on_request(0, ("10.0.0.77", 7778), binding_request(core, tid=b"2" * 12), 0.0)
    prflx = [c for c in core.remote_candidates if c.type is CandidateType.PRFLX]
    assert len(prflx) == 2
    assert len({c.foundation for c in core.remote_candidates}) == len(core.remote_candidates)


def test_signalled_candidate_replaces_the_learned_prflx() -> None:
    """RFC 8838 §11.4: a check may outrun signaling; the signalled candidate then wins."""
    _net, a = three_pair_core()
    core = a.core
    source = ("198.51.100.7", 41000)
    core.on_request(0, source, binding_request(core, priority=1_862_270_975), 0.0)
    (pair,) = [p for p in core.checklist if p.remote.transport_address == source]
    assert pair.remote.type is CandidateType.PRFLX
    signalled = Candidate.from_sdp("candidate:sig 1 udp 2130706431 198.51.100.7 41000 typ host")
    core.remote_complete = False  # the harness signalled end-of-candidates already
    core.add_remote_candidate(signalled)
    assert pair.remote is signalled
    assert [c for c in core.remote_candidates if c.transport_address == source] == [signalled]


def _b_selected_a_as_prflx() -> tuple[Network, Endpoint, Endpoint]:
    """a and b connected, b's selected pair naming a by the peer-reflexive candidate a's
    check taught it: a's host candidate not signalled to b yet."""
    net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, net.now)
    b.core.set_remote(a.core.local, net.now)
    for candidate in b.signalled:
        a.core.add_remote_candidate(candidate)
    a.core.add_remote_candidate(None)
    a.core.want_connection(net.now)
    b.core.want_connection(net.now)
    assert net.run_until(connected(a, b), max_time=1.0)
    assert b.core.selected is not None
    assert b.core.selected.remote.type is CandidateType.PRFLX
    return net, a, b


def test_a_signalled_candidate_that_replaces_the_selected_pairs_remote_says_so() -> None:
    """The peer's check taught b its address, as a peer-reflexive candidate, and b selected
    the pair before the peer's candidate was signalled (a ``.local`` name resolving, say):
    once it is, it takes the learned one's place in the selected pair, and b says the
    selected pair anew, now naming the host candidate (it changed silently)."""
    net, a, b = _b_selected_a_as_prflx()
    seen = len(b.events)
    (host,) = a.signalled
    b.core.add_remote_candidate(host)
    b.events.extend((net.now, e) for e in b.core.drain_events())
    (said,) = [e for _, e in b.events[seen:] if isinstance(e, SelectedPairChanged)]
    assert said.pair.remote.type is CandidateType.HOST
    assert said.pair.remote.transport_address == host.transport_address


def test_a_candidate_that_renames_the_selected_pair_after_failed_says_nothing() -> None:
    """Once ICE failed, no pair carries data: a signalled candidate that takes the place of
    the peer-reflexive remote of the pair once selected says no pair."""
    net, a, b = _b_selected_a_as_prflx()
    b.core.on_timer(net.now + 100.0)  # (consent expired long ago)
    assert b.core.state is ConnectionState.FAILED
    b.core.drain_events()
    (host,) = a.signalled
    b.core.add_remote_candidate(host)
    assert not [e for e in b.core.drain_events() if isinstance(e, SelectedPairChanged)]


def test_a_gathered_candidate_that_renames_the_selected_pairs_local_says_so() -> None:
    """Behind a NAT, a's check found its public address (a peer-reflexive local candidate)
    and the pair was selected before its STUN server's answer came: the server-reflexive
    candidate of that address takes the learned one's place in the selected pair, which is
    said anew, naming it (it changed silently)."""
    net, a, _b = two_agents(
        a_nat=Nat("203.0.113.1"), a_hosts=[("192.168.1.10", 5000)], end_of_candidates=False
    )
    assert net.run_until(connected(a, _b), max_time=5.0)
    pair = a.core.selected
    assert pair is not None and pair.valid_local is not None
    assert pair.valid_local.type is CandidateType.PRFLX
    a.core.drain_events()
    srflx = srflx_candidate(a.signalled[0], pair.valid_local.transport_address, "stun")
    a.core.add_local_candidate(srflx, 0)
    (said,) = [e for e in a.core.drain_events() if isinstance(e, SelectedPairChanged)]
    assert said.pair.local.type is CandidateType.SRFLX
    assert said.pair == a.core.selected_pair()


@pytest.mark.parametrize(
    ("controlling", "ours", "theirs", "lite", "decision"),
    [
        (True, 10, 5, False, "reject"),  # both controlling, ours larger: they must switch
        (True, 5, 10, False, "switch"),
        (False, 10, 5, False, "switch"),  # both controlled, ours larger: we control
        (False, 5, 10, False, "reject"),
        (False, 10, 5, True, "reject"),  # a lite agent never takes control: the peer must
        (False, 5, 10, True, "reject"),
    ],
)
def test_role_conflict_table(
    controlling: bool, ours: int, theirs: int, lite: bool, decision: str
) -> None:
    """RFC 8445 §7.3.1.1, as a table."""
    from trice.ice._requests import resolve_role_conflict

    attribute = stun.IceControlling(theirs) if controlling else stun.IceControlled(theirs)
    request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=[attribute])
    got = resolve_role_conflict(request, controlling=controlling, tiebreaker=ours, lite=lite)
    assert got.value == decision


def test_warm_core_runs_a_check_and_its_nomination(monkeypatch: pytest.MonkeyPatch) -> None:
    """``warm_core`` exercises the whole hot path: a check, its response and the nomination."""
    from trice.ice import _core

    made: list[AgentCore] = []
    real = _core.AgentCore

    def spy(*args: object, **kwargs: object) -> AgentCore:
        core = real(*args, **kwargs)  # type: ignore[arg-type]
        made.append(core)
        return core

    monkeypatch.setattr(_core, "AgentCore", spy)
    _core.warm_core(rounds=1)
    a, b = made
    assert a.selected is not None and b.selected is not None
    assert a.checks_sent == 2


def test_a_consent_check_leaves_the_pairs_check_in_flight_alone() -> None:
    """A consent-style check (keep-alive or ping-back) on a pair whose own check is in flight
    runs beside it: the in-flight check's response still counts."""
    a, b = two_cores(("ufA1", "ufB1"))
    check = a.poll_check(1.0)
    assert check is not None and check.pair.state is PairState.IN_PROGRESS
    a._start_check(check.pair, nominating=False, now=1.0, consent=True)
    response = b.on_request(0, ("192.0.2.1", 9), stun.decode(check.message), 1.0)
    assert response is not None
    assert a.on_response(check, stun.decode(response), check.destination, 1.0)
    assert check.pair.valid_local is not None  # the pair succeeded...
    nomination = a.poll_check(1.0)
    assert nomination is not None and nomination.nominating  # ...and is being nominated


def test_a_consent_deadline_is_met_by_the_same_sum_it_was_set_by() -> None:
    """``next_deadline`` says ``last + timeout``; at that instant ``on_timer`` must act.  In
    floating point ``(last + t) - last`` can fall short of ``t`` (0.15 + 0.3 - 0.15 < 0.3): a
    test written as ``now - last >= t`` left the deadline due and unmet, and the shell woke
    again and again (under virtual time, forever)."""
    assert (0.15 + 0.3) - 0.15 < 0.3  # the rounding this test is about
    timing = Timing(keepalive_interval=10.0, disconnected_timeout=0.3, failed_timeout=0.6)
    net, ea, eb = two_agents(timing=timing)
    assert net.run_until(connected(ea, eb), max_time=1.0)
    a = ea.core
    a._last_consent = a._last_alive = 0.15  # as if the peer was last heard then
    a._asked_at = 0.15  # (and asked then, unanswered)
    a._next_consent = None  # (keepalives aside)
    due = a.next_deadline()
    assert due == 0.15 + 0.3
    states = []
    a.on_timer(due)
    states.append(a.state)
    assert a.next_deadline() == 0.15 + 0.6
    a.on_timer(0.15 + 0.6)
    states.append(a.state)
    assert states == [ConnectionState.DISCONNECTED, ConnectionState.FAILED]


def _pair_to(core: AgentCore, address: tuple[str, int]) -> Pair:
    (pair,) = [p for p in core.checklist if p.remote_address == address]
    return pair


def _selections(endpoint: Endpoint) -> list[tuple[str, int]]:
    return [
        e.pair.remote.transport_address
        for _, e in endpoint.events
        if isinstance(e, SelectedPairChanged)
    ]


@pytest.mark.parametrize("lite", [True, False])
def test_a_controlled_agent_follows_the_peer_only_once_its_pair_went_quiet(lite: bool) -> None:
    """The peer nominates two pairs, and a selects the higher.  The peer goes on checking
    the lower one beside it (a backup, without USE-CANDIDATE) while it still checks the
    higher: a stays (no flip-flop).  Once the peer's checks on the higher stop for a consent
    interval while they come on the lower (USE-CANDIDATE or not), a follows, and that
    refreshes no consent (RFC 7675: only answers to a's own checks, or for a lite agent the
    peer's checks on the selected pair, do)."""
    a, _b, core, pair_hi, pair_lo = _two_nominated(lite)
    _peer_check(a, pair_hi, 0.0, True, b"A" * 12)
    _peer_check(a, pair_lo, 0.1, True, b"B" * 12)
    assert _selections(a) == [HI]
    for second in range(1, 20):
        _peer_check(a, pair_lo, second, False, b"L" * 12)  # a backup ping
        _peer_check(a, pair_hi, second + 0.5, second % 2 == 0, b"H" * 12)  # the pair it uses
    assert _selections(a) == [HI]  # no flip-flop
    consent_before = core._last_consent
    for second in range(20, 24):  # the peer moved: nothing on hi any more
        _peer_check(a, pair_lo, second, True, b"L" * 12)
    assert _selections(a) == [HI, LO]
    if lite:
        assert core._last_consent == 23  # (the peer's checks on the pair now selected)
    else:
        assert core._last_consent == consent_before == pair_lo.proven_at  # (no refresh)


def _state_kinds(events: list[tuple[float, Event]]) -> list[str]:
    """The selections and states among ``events``, in order."""
    return [
        "selected" if isinstance(e, SelectedPairChanged) else e.state.value
        for _, e in events
        if isinstance(e, (SelectedPairChanged, ConnectionStateChanged))
    ]


@pytest.mark.parametrize("lite", [True, False])
@pytest.mark.parametrize("nominate", [True, False])
@pytest.mark.parametrize("start", ["completed", "disconnected"])
def test_following_the_peer_goes_by_way_of_connected(
    lite: bool, nominate: bool, start: str
) -> None:
    """A controlled agent that follows the peer to another nominated pair goes by way of
    ``connected`` (an application that waits for ``connected`` again sees the move), as
    any selection does, and on to ``completed`` at once, once: from ``completed`` it
    stayed completed; out of ``disconnected`` it flapped, completed, connected, completed."""
    a, b, core, pair_hi, pair_lo = _two_nominated(lite)
    _peer_check(a, pair_hi, 0.0, True, b"A" * 12)
    _peer_check(a, pair_lo, 0.1, True, b"B" * 12)
    t = 0.1
    if start == "completed":
        for second in range(1, 3):
            t = float(second)
            _peer_check(a, pair_hi, t, False, b"H" * 12)
            _tick(a, b, t)
    else:
        while core.state is not ConnectionState.DISCONNECTED and t < 20.0:
            t += 0.5
            _tick(a, b, t, dead=[pair_hi])
    assert core.state.value == start
    seen = len(a.events)
    for _ in range(6):  # the peer moved: its checks come on lo only
        t += 1.0
        _peer_check(a, pair_lo, t, nominate, b"L" * 12)
        if _state_kinds(a.events[seen:]):
            break
    assert _state_kinds(a.events[seen:]) == ["selected", "connected", "completed"]


def _paced_on_hi() -> tuple[Endpoint, Endpoint, Pair, Pair]:
    """:func:`_two_nominated`'s a and b, and the pairs to HI and LO, once the peer has
    nominated both and used the pair to HI for 20 s, checking it every 5 s (RFC 7675's
    pace, aioice's)."""
    a, b, _core, hi, lo = _two_nominated()
    _peer_check(a, hi, 0.0, True, b"A" * 12)
    _peer_check(a, lo, 0.1, True, b"B" * 12)
    t = 0.0
    while t < 20.0:
        t += 0.25
        _tick(a, b, t)
        if t % 5 == 0:
            _peer_check(a, hi, t, False, bytes([int(t)]) * 12)
    return a, b, hi, lo


def test_a_peer_that_paces_its_checks_5_s_apart_has_not_left_its_pair_after_3() -> None:
    """The peer nominated hi and lo and uses hi, checking it every 5 s (RFC 7675's pace,
    aioice's); 3 s after its last check there, one check of its own comes on lo (a backup
    ping, a late copy).  hi is not quiet by the peer's own pace: a stays.  Once hi has had
    nothing for longer than that pace while lo's checks come, a follows (once its check on
    lo, whose consent is old, is answered)."""
    a, b, _hi, lo = _paced_on_hi()
    _peer_check(a, lo, 23.0, False, b"L" * 12)  # (3 s after its last on hi)
    _tick(a, b, 23.0)
    assert _selections(a) == [HI]
    _peer_check(a, lo, 26.5, False, b"M" * 12)  # (6.5 s after it: longer than 5 s, jitter too)
    _tick(a, b, 26.5)  # (and lo's consent, 26.5 s old, checked again: answered)
    assert _selections(a) == [HI, LO]


HI, LO = ("10.0.0.2", 6000), ("10.0.0.3", 6001)


def _two_nominated(lite: bool = False) -> tuple[Endpoint, Endpoint, AgentCore, Pair, Pair]:
    """a, controlled, with two pairs to the peer b (to HI, and to LO of lower priority),
    both proved at 0 for a full a (a lite one makes its pairs as the peer's checks come)."""
    net, a, b = two_agents(
        a_controlling=False, b_controlling=True, a_lite=lite, want=False, b_hosts=(),
        exchange=False,
    )  # fmt: skip
    for k, (address, port) in enumerate((HI, LO)):
        b.add_host(address, port, local_pref=65535 - k)
    net.exchange(a, b, want=False)
    core = a.core
    core.want_connection(0.0)
    for source in (HI, LO):
        if lite:
            request = binding_request(core, controlling=True, tid=b"P" * 12)
            assert core.on_request(0, source, request, 0.0) is not None
        else:
            pair = _pair_to(core, source)
            pair.state = PairState.SUCCEEDED
            pair.valid_local = pair.local
            pair.proven_at = 0.0
    return a, b, core, _pair_to(core, HI), _pair_to(core, LO)


def _peer_check(endpoint: Endpoint, pair: Pair, now: float, nominate: bool, tid: bytes) -> None:
    core = endpoint.core
    request = binding_request(core, controlling=True, use_candidate=nominate, tid=tid)
    assert core.on_request(0, pair.remote_address, request, now) is not None
    endpoint.events.extend((now, e) for e in core.drain_events())


def _tick(
    a: Endpoint,
    b: Endpoint,
    now: float,
    dead: Sequence[Pair] = (),
    sent: list[tuple[float, Pair]] | None = None,
) -> None:
    """a's timers and checks (listed in ``sent``, if given); the peer answers those on
    pairs not ``dead``."""
    a.core.on_timer(now)
    while (check := a.core.poll_check(now)) is not None:
        if sent is not None:
            sent.append((now, check.pair))
        if check.pair not in dead:
            a.core.on_response(check, _answer_to(check, b.core), check.destination, now)
    a.events.extend((now, e) for e in a.core.drain_events())


def test_a_copy_of_the_peers_check_does_not_set_its_pace() -> None:
    """The peer paces its checks on hi 5 s apart; one of them comes again 0.5 s later (a
    retransmission, a duplicating network): its pace stays 5 s, and one backup check on lo
    3 s after moves nothing."""
    a, b, hi, lo = _paced_on_hi()
    _peer_check(a, hi, 20.5, False, bytes([20]) * 12)  # (the same check, again)
    _peer_check(a, lo, 23.5, False, b"L" * 12)
    _tick(a, b, 23.5)
    assert _selections(a) == [HI]


@pytest.mark.parametrize("lite", [False, True])
def test_a_peer_that_checked_its_pair_seldom_is_followed_before_consent_runs_out(
    lite: bool,
) -> None:
    """The peer checked hi 22 s apart (a peer that checks an idle pair only, as Pion: none
    while data flows both ways); then hi's path dies, and the peer uses lo, checking it
    every 2 s.  Waiting out the peer's pace (26.4 s with jitter) would outlast a's own
    consent on hi (25 s): a follows within half of it, and never fails."""
    a, b, core, hi, lo = _two_nominated(lite)
    _peer_check(a, hi, 0.0, True, b"A" * 12)
    _peer_check(a, lo, 0.1, True, b"B" * 12)
    t = 0.0
    while t < 22.0:
        t += 0.5
        _tick(a, b, t)  # (a's consent checks on hi answered until 22 s)
    _peer_check(a, hi, 22.0, False, b"H" * 12)
    k = 0
    while t < 60.0 and core.state is not S.FAILED:
        t += 0.5
        _tick(a, b, t, dead=(hi,))
        if t > 23 and t % 2 == 0:
            k += 1
            _peer_check(a, lo, t, True, k.to_bytes(12, "big"))
    assert _selections(a) == [HI, LO]
    assert S.FAILED not in a.states()


def test_a_pair_whose_consent_ran_out_is_followed_only_once_a_check_there_is_answered() -> None:
    """The peer nominated two pairs and uses the higher; 60 s on it moves to the lower, on
    which no check of a's has been answered since the start (the path works one way
    only).  RFC 7675 §5.1: no data there without an answer in the last 30 s.  a does not
    follow; it checks the pair (consent checks); once those are answered, the peer's next
    check there is followed, with consent from that answer."""
    a, b, core, hi, lo = _two_nominated()
    sent: list[tuple[float, Pair]] = []

    def checked_lo() -> list[float]:
        return [at for at, pair in sent if pair is lo and at > 60.0]

    _peer_check(a, hi, 0.0, True, b"A" * 12)
    _peer_check(a, lo, 0.1, True, b"B" * 12)
    t = 0.0
    while t < 60.0:  # the peer uses hi, and checks lo beside it
        t += 0.5
        _tick(a, b, t, dead=(lo,), sent=sent)
        if t % 1 == 0:
            _peer_check(a, hi, t, False, b"H" * 12)
            _peer_check(a, lo, t + 0.01, False, b"L" * 12)
    while t < 75.0:  # the peer moved to lo: its checks come there only
        t += 0.5
        _tick(a, b, t, dead=(lo,), sent=sent)
        if t % 1 == 0:
            _peer_check(a, lo, t, False, b"L" * 12)
    assert _selections(a) == [HI] and core.data_pair is hi
    assert core.state is S.COMPLETED  # (hi's consent still holds: a's checks there answered)
    lately = checked_lo()
    assert lately  # (lo checked)
    for k in range(20):  # (a peer that checks lo ten times a second does not set the pace)
        _peer_check(a, lo, t + 0.01 + k * 0.1, False, b"L" * 12)
    assert len(checked_lo()) == len(lately)  # (ticks send them)
    t += 2.0
    _tick(a, b, t, dead=(lo,), sent=sent)
    paced = 2.0 / core.timing.rto + 1  # (one an RTO at most)
    assert len(checked_lo()) <= len(lately) + paced < len(lately) + 20
    t += 0.5
    _peer_check(a, lo, t, False, b"L" * 12)  # (a checks lo again: an RTO has passed)
    assert _selections(a) == [HI]
    _tick(a, b, t, sent=sent)  # (answered now: a follows at once, not at the peer's next check)
    assert _selections(a) == [HI, LO] and core.data_pair is lo
    assert lo.proven_at > 75.0 and core._last_consent == lo.proven_at


# -- a transport lost for good (a TURN allocation that ended) --------------------------------------


def _lose(net: Network, endpoint: Endpoint, base: int) -> None:
    """``endpoint``'s transport ``base`` is gone: nothing goes or comes through it any more,
    and its core is told (as the shell does when a relay ends on its own)."""
    address = endpoint.bases[base]
    net.drop(lambda p: p.src == address or p.dst == address)
    endpoint.core.transport_lost(base, net.now)
    net._service()


def test_losing_the_selected_pairs_transport_fails_ice_at_once() -> None:
    """Not ``failed_timeout`` later, when consent would expire: no data can go that way
    again, and no other pair may be selected once one was nominated (RFC 8445 §8.1.1)."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(3.0)
    lost_at = net.now
    _lose(net, a, 0)
    assert a.state is S.FAILED
    assert a.time_of(S.FAILED) == lost_at
    assert a.core.next_deadline() is None
    assert a.core.poll_check(net.now) is None
    assert all(pair.state is PairState.FAILED for pair in a.core.checklist)
    started = len(a.started)
    net.run_for(5.0)
    assert len(a.started) == started  # (no consent checks: ICE is over)
    assert_valid_events(a, b)


def test_losing_another_transport_fails_its_pairs_and_nothing_else() -> None:
    net, a, b = two_agents(
        a_hosts=(("10.0.0.1", 5000), ("10.0.1.1", 5001)), end_of_candidates=False
    )
    assert net.run_until(connected(a, b), max_time=1.0)
    selected = a.core.selected
    assert selected is not None
    other = 1 - selected.base
    _lose(net, a, other)
    net.run_for(3.0)
    assert a.state in (S.CONNECTED, S.COMPLETED)
    assert a.core.selected is selected
    assert [p.state for p in a.core.checklist if p.base == other] == [PairState.FAILED]
    # A candidate the peer signals afterwards pairs with the transports that are left only.
    a.core.add_remote_candidate(make_candidate("10.0.0.2", 6001, local_pref=100))
    assert {p.base for p in a.core.checklist if p.remote.port == 6001} == {selected.base}
    assert all(base != other for _, base in a.core.local_candidates)
    assert_valid_events(a, b)


def test_losing_a_transport_while_checking_fails_its_pairs_at_once() -> None:
    """The preferred transport's checks get nowhere; when it is lost its pair fails at
    once (not after the check's retransmissions), and ICE goes on with the other."""
    net, a, b = two_agents(timing=FAST, exchange=False)
    a.add_host("10.0.1.1", 5001, local_pref=100)  # (base 1, below base 0)
    lost = a.bases[0]
    net.drop(lambda p: p.src == lost or p.dst == lost)
    net.exchange(a, b)
    net.run_for(0.02)
    pair = next(p for p in a.core.checklist if p.base == 0)
    states = [pair.state]
    _lose(net, a, 0)
    states.append(pair.state)
    assert states == [PairState.IN_PROGRESS, PairState.FAILED]
    lost_at = net.now
    assert net.run_until(connected(a, b), max_time=5.0)
    assert a.core.selected is not None and a.core.selected.base == 1
    assert not [t for t, check in a.started if check.pair.base == 0 and t >= lost_at]
    assert_valid_events(a, b)


def test_losing_the_only_transport_before_any_pair_works_fails_ice() -> None:
    """At once, not when the PAC timer ends (RFC 8863): with no candidate left, no check
    of the peer's can come."""
    net, a, b = two_agents(timing=FAST, exchange=False)
    net.drop(lambda p: p.src == ("10.0.0.1", 5000) or p.dst == ("10.0.0.1", 5000))
    net.exchange(a, b)
    net.run_for(0.05)
    assert a.states() == [S.CHECKING]
    _lose(net, a, 0)
    assert a.states() == [S.CHECKING, S.FAILED]
    assert a.time_of(S.FAILED) == pytest.approx(0.05)


def test_a_lost_transport_after_ice_ended_changes_nothing() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    a.core.close()
    net._service()
    _lose(net, a, 0)
    assert a.states()[-1] is S.CLOSED
    assert_valid_events(a, b)


def test_checks_in_flight_when_ice_fails_are_forgotten_then() -> None:
    """Not kept until the agent closes: their answers count for nothing once ICE is over."""
    timing = Timing(
        rto=0.1, rto_max=1.0, max_binding_requests=7, failed_timeout=0.5, disconnected_timeout=0.5
    )
    net, a, b = two_agents(timing=timing, exchange=False)
    net.drop_all()
    net.exchange(a, b)
    assert net.run_until(lambda: a.core.state is S.FAILED, max_time=60.0)
    assert net.now == pytest.approx(0.5)  # (failed_timeout, the check still retransmitting)
    assert a.core._live is None
    assert a.core.poll_check(net.now) is None
    net.run_for(5.0)  # (the harness's flights time out: nothing to find, nothing to change)
    assert a.states() == [S.CHECKING, S.FAILED]


def test_losing_a_transport_while_nominating_on_it_nominates_on_no_other_pair_of_it() -> None:
    """The controlling agent's nomination is in flight on the lost transport, and another
    pair of that transport has succeeded: the nomination must not move on to that pair (the
    pairs of the transport fail together), but to a pair elsewhere."""
    net, a, b = two_agents(timing=FAST, a_hosts=(), b_hosts=(), exchange=False)
    a.add_host("10.0.0.1", 5000)  # base 0, preferred
    a.add_host("10.0.1.1", 5001, local_pref=100)  # base 1
    b.add_host("10.0.0.2", 6000)
    b.add_host("10.0.0.3", 6001, local_pref=1000)
    # a's checks from base 0 to b's first address are lost until a lower pair of base 0 has
    # succeeded: the nomination then waits for, and goes on, the higher pair.
    rule = net.drop(lambda p: p.src == ("10.0.0.1", 5000) and p.dst == ("10.0.0.2", 6000))
    net.exchange(a, b)

    def nominating_beside_a_succeeded_pair() -> bool:
        core = a.core
        if rule in net.loss_rules and any(
            p.base == 0 and p.state is PairState.SUCCEEDED for p in core.checklist
        ):
            net.loss_rules.remove(rule)
        nominating = core._nominating
        return (
            nominating is not None
            and nominating.base == 0
            and any(
                p is not nominating and p.base == 0 and p.state is PairState.SUCCEEDED
                for p in core.checklist
            )
        )

    assert net.run_until(nominating_beside_a_succeeded_pair, max_time=5.0)
    lost_at = net.now
    started = len(a.started)
    _lose(net, a, 0)
    assert not [c for _, c in a.started[started:] if c.pair.base == 0]
    assert not [c for c in (a.core._live or {}).values() if c.pair.base == 0]
    assert net.run_until(connected(a, b), max_time=10.0)
    assert a.core.selected is not None and a.core.selected.base == 1
    # (No check from there, that is: the harness may still hand the core a request that
    # was on its way at the loss, which a shell's closed transport would not.)
    assert not [
        p for p in net.sent if p.src == ("10.0.0.1", 5000) and p.is_request and p.sent_at > lost_at
    ]
    assert_valid_events(a, b)


# -- pair statistics ------------------------------------------------------------------------------


def test_pair_statistics_count_the_checks_and_time_the_round_trips() -> None:
    """Each side's one pair, once connected: the checks it started and the peer's (as many
    as crossed the wire), the answers, and each answer timed at the path's round trip
    (twice the 10 ms one-way delay)."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    for endpoint, peer in ((a, b), (b, a)):
        (stats,) = endpoint.core.pair_statistics()
        assert stats.selected and stats.nominated and stats.state is PairState.SUCCEEDED
        assert stats.pair == endpoint.core.selected_pair()
        assert stats.checks_sent == len(net.packets(sender=endpoint.name, requests=True)) >= 1
        delivered = [p for p in net.delivered if p.sender == peer.name]
        assert stats.requests_received == sum(p.is_request for p in delivered) >= 1
        assert stats.responses_received == sum(p.is_response for p in delivered) >= 1
        assert stats.round_trip_time == pytest.approx(0.02)
        assert stats.round_trip_time_samples == stats.responses_received
        assert stats.total_round_trip_time == pytest.approx(0.02 * stats.responses_received)


def test_pair_statistics_say_when_the_latest_check_went_and_request_and_answer_came() -> None:
    """The times are the core's clock's (the shell's trio clock): a's latest check started
    when its latest request went out, and b's latest request and answer to a came when
    they were delivered; the consent checks keep them going."""
    net, a, b = two_agents(want=False)
    (fresh,) = a.core.pair_statistics()
    assert fresh.last_check_sent is fresh.last_request_received is None
    assert fresh.last_response_received is None
    a.core.want_connection(net.now)
    b.core.want_connection(net.now)
    assert net.run_until(connected(a, b), max_time=1.0)
    net.run_for(5.0)  # (consent checks, once connected)
    (stats,) = a.core.pair_statistics()
    sent = net.packets(sender="a", requests=True)
    from_b = [p for p in net.delivered if p.sender == "b"]
    assert stats.last_check_sent == max(p.sent_at for p in sent) > 1.0
    assert stats.last_request_received == max(p.deliver_at for p in from_b if p.is_request)
    assert stats.last_response_received == max(p.deliver_at for p in from_b if p.is_response)
    assert stats.last_response_received > 1.0


def test_an_address_two_sockets_signal_is_taken_for_the_checks_own_socket() -> None:
    """A 1:1 NAT's one public address in the host candidate's place of two private addresses
    (the same port on each): the core knows two host candidates at one address.  The answer
    to a check from the second socket names it: the valid pair's local candidate is that
    socket's own, not the first one's."""
    _, a, b = two_agents(want=False)
    public = ("203.0.113.5", 7000)
    first = make_candidate(*public)
    second = make_candidate(*public, local_pref=65534)
    a.core.add_local_candidate(first, 10)
    a.core.add_local_candidate(second, 11)
    pair = Pair(second, b.signalled[0], 11, compute_pair_priority(second, b.signalled[0], True))
    assert a.core._local_for_mapped(pair, public) is second
    pair = Pair(first, b.signalled[0], 10, compute_pair_priority(first, b.signalled[0], True))
    assert a.core._local_for_mapped(pair, public) is first


def test_a_mapped_address_naming_a_relayed_candidate_of_another_socket_is_a_lie() -> None:
    """A relayed check is seen by the peer from the relayed address and no other, and a
    check that leaves a host socket never from the relayed address: an answer naming the
    agent's other candidate (the host for a relayed check, the relay for a host one) is a
    lie, and the pair keeps its own local candidate.  The first took the host candidate
    for a relayed path (reported as direct, ranked as host, and nominated without the
    relay's delay), the second the relay for a direct one (the hostile43 review)."""
    _, a, b = two_agents(want=False)
    host = make_candidate("192.0.2.10", 7000)
    relay = relay_candidate(("203.0.113.5", 50000), ("192.0.2.10", 7000), "turn:3478")
    a.core.add_local_candidate(host, 10)
    a.core.add_local_candidate(relay, 11)
    remote = b.signalled[0]
    relayed = Pair(relay, remote, 11, compute_pair_priority(relay, remote, True))
    assert a.core._local_for_mapped(relayed, ("192.0.2.10", 7000)) is relay
    direct = Pair(host, remote, 10, compute_pair_priority(host, remote, True))
    assert a.core._local_for_mapped(direct, ("203.0.113.5", 50000)) is host
    assert a.core._local_for_mapped(direct, ("192.0.2.10", 7000)) is host
    assert a.core._local_for_mapped(relayed, ("203.0.113.5", 50000)) is relay
    # A relayed check answered as from another relay (a second allocation) keeps its own.
    other = relay_candidate(("203.0.113.5", 50002), ("192.0.2.10", 7002), "turn:3478")
    a.core.add_local_candidate(other, 12)
    assert a.core._local_for_mapped(relayed, ("203.0.113.5", 50002)) is relay
    # A direct pair that learned the NAT's mapping keeps that peer-reflexive candidate (the
    # host one, which the peer never saw, would rank it: the mutants10 review).
    prflx = a.core._local_for_mapped(direct, ("198.51.100.7", 40000))
    assert prflx.type is CandidateType.PRFLX
    direct.valid_local = prflx
    assert a.core._local_for_mapped(direct, ("203.0.113.5", 50000)) is prflx


@pytest.mark.parametrize("relay_first", [True, False])
def test_a_checks_own_srflx_at_a_relays_address_is_found_whatever_came_first(
    relay_first: bool,
) -> None:
    """The agent and its TURN server behind one NAT that maps the host socket to the very
    address a relay allocation got (the srflx and the relayed candidate are equal): the
    answer to a direct check naming that address names the socket's own srflx, which the
    pair takes, whichever candidate was gathered first (the relay's rule above stopped the
    search before the srflx when the TURN server answered first: the p43pass review)."""
    _, a, b = two_agents(want=False)
    host = make_candidate("10.0.0.1", 50000)
    public = ("198.51.100.1", 50000)
    relay = relay_candidate(public, public, "turn:3478")
    srflx = srflx_candidate(host, public, "stun:3478")
    a.core.add_local_candidate(host, 10)
    for candidate, base in [(relay, 11), (srflx, 10)][:: 1 if relay_first else -1]:
        a.core.add_local_candidate(candidate, base)
    remote = b.signalled[0]
    direct = Pair(host, remote, 10, compute_pair_priority(host, remote, True))
    assert a.core._local_for_mapped(direct, public) is srflx


def test_consent_checks_keep_the_selected_pairs_round_trip_current() -> None:
    delay = [0.01]
    net, a, b = two_agents(latency=lambda packet: delay[0])
    assert net.run_until(connected(a, b), max_time=1.0)
    (before,) = a.core.pair_statistics()
    delay[0] = 0.05
    net.run_for(10.0)
    (after,) = a.core.pair_statistics()
    assert after.round_trip_time == pytest.approx(0.1)
    answers = after.responses_received - before.responses_received
    assert answers >= 10.0 / a.core.timing.keepalive_interval - 1  # (consent checks')
    assert after.round_trip_time_samples - before.round_trip_time_samples == answers
    assert after.total_round_trip_time == pytest.approx(
        before.total_round_trip_time + 0.1 * answers
    )


def test_an_answer_to_a_check_sent_again_is_counted_not_timed() -> None:
    """Karn's rule: a's first check is lost and goes again, so its answer may be to either
    copy; it is counted, but no round trip is taken from it (else it would say the time
    since the first copy, more than the path's 20 ms)."""
    net, a, b = two_agents()
    lost: list[Packet] = []

    def first_check_of_a(packet: Packet) -> bool:
        if not lost and packet.sender == "a" and packet.is_request:
            lost.append(packet)
            return True
        return False

    net.drop(first_check_of_a)
    assert net.run_until(connected(a, b), max_time=5.0)
    transaction = lost[0].message.transaction_id
    again = [
        p for p in net.packets(sender="a", requests=True) if p.message.transaction_id == transaction
    ]
    assert len(again) >= 2  # (it did go again, and was answered)
    assert any(
        p.message.transaction_id == transaction for p in net.packets(sender="b") if p.is_response
    )
    (stats,) = a.core.pair_statistics()
    assert stats.round_trip_time_samples == stats.responses_received - 1
    assert stats.total_round_trip_time == pytest.approx(0.02 * stats.round_trip_time_samples)


def test_a_late_consent_answer_is_counted_and_timed() -> None:
    """A path slower than the RTO: no check is answered in time, but a consent check goes
    once, so its answer, late as it is, can only be to that copy: timed (and consent holds)."""
    delay = [0.01]
    net, a, b = two_agents(latency=lambda packet: delay[0])
    assert net.run_until(connected(a, b), max_time=1.0)
    (before,) = a.core.pair_statistics()
    delay[0] = 0.4  # a round trip of 0.8 s, past the 0.5 s RTO
    assert a.core.timing.rto < 0.8
    net.run_for(10.0)
    (after,) = a.core.pair_statistics()
    assert after.responses_received > before.responses_received
    assert after.round_trip_time == pytest.approx(0.8)
    answers = after.responses_received - before.responses_received
    assert after.round_trip_time_samples - before.round_trip_time_samples == answers
    assert a.state in (S.CONNECTED, S.COMPLETED)


# -- ICE restart (RFC 8445 §9) --------------------------------------------------------------------


def _restart(net: Network, *endpoints: Endpoint) -> None:
    """Each endpoint restarts with new parameters of its own."""
    for endpoint in endpoints:
        endpoint.restart(net.now)


def test_a_restart_checks_afresh_with_new_credentials_while_data_keeps_its_pair() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    old = a.core.selected
    assert old is not None
    old_public = a.core.selected_pair()
    _restart(net, a, b)
    for endpoint in (a, b):
        core = endpoint.core
        assert core.state is S.CHECKING and core.selected is None and core.remote is None
        assert len(core.checklist) == 0
        # Data still goes over the pair of before, and still comes from its peer.
        assert core.data_pair is not None and core.selected_pair() is not None
        assert core.is_remote_address(core.data_pair.remote_address)
    assert a.core.data_pair is old and a.core.selected_pair() == old_public
    net.run_for(5.0)
    assert a.state is S.CHECKING  # nothing without the peer's new parameters
    assert a.core.selected is None and a.core.data_pair is old
    restarted_at = net.now
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=net.now + 1.0)
    for endpoint, peer in ((a, b), (b, a)):
        core = endpoint.core
        assert core.selected is not None and core.selected is not old
        assert core.data_pair is core.selected
        states = endpoint.states()
        assert states[states.index(S.CHECKING, 1) :][:2] == [S.CHECKING, S.CONNECTED]
        # Every check since carries the new user name (peer's ufrag : own ufrag).
        since = [c for t, c in endpoint.started if t >= restarted_at]
        assert since
        username = f"{peer.core.local.ufrag}:{core.local.ufrag}"
        for check in since:
            sent = stun.decode(check.message).get(stun.Username)
            assert sent is not None and sent.value == username
    assert_valid_events(a, b)
    (stats,) = a.core.pair_statistics()
    assert stats.selected and stats.pair == old_public


def test_after_a_restart_the_peers_old_checks_are_refused_and_old_answers_ignored() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    _, old_check = b.started[0]  # (signed with a's old password, to a's old ufrag)
    _restart(net, a)
    response = a.core.on_request(0, b.bases[0], stun.decode(old_check.message), net.now)
    assert response is not None
    error = stun.decode(response).get(stun.ErrorCode)
    assert error is not None and error.code == 401  # (RFC 8489 §9.1.3: the old ufrag)
    assert len(a.core.checklist) == 0  # learned nothing
    # An answer to one of a's checks from before comes late: it is no answer to anything now.
    _, a_check = a.started[-1]
    answer = _answer_to(a_check, b.core)
    assert not a.core.on_response(a_check, answer, a_check.destination, net.now)


def test_restarts_behind_a_nat_that_maps_afresh_each_time_keep_no_old_prflx() -> None:
    """Behind a NAT that maps ``a`` afresh for each generation (a rebinding, or a peer that
    reports a new address each time), each restart's checks learn a new peer-reflexive
    local candidate, and the restart after forgets it with the checks that learned it
    (RFC 8445 §7.2.5.3.1): the local candidates do not grow with the restarts."""
    nat = Nat("203.0.113.7")
    net, a, b = two_agents(a_nat=nat)
    assert net.run_until(connected(a, b), max_time=5.0)
    before = len(a.core.local_candidates)
    for _ in range(30):
        nat.rebind()
        a.restart(net.now)
        b.restart(net.now)
        net.exchange(a, b)
        assert net.run_until(connected(a, b), max_time=net.now + 5.0)
    selected = a.core.selected
    assert selected is not None
    assert len(a.core.local_candidates) == before
    assert selected.local in [c for c, _ in a.core.local_candidates]


def test_a_late_end_of_candidates_after_a_restart_before_any_parameters_is_ignored() -> None:
    """The agent restarts before the peer's first parameters came; the peer's first
    end-of-candidates comes then, late, before its new parameters: it is taken for the
    earlier generation's and ignored (docs/guide/restart.rst), and the new generation's
    candidates are taken (it had ended the new generation: StateError on its first)."""
    core = AgentCore(
        local=IceParameters("aufrag", "a-password-0123456789abcdef"),
        controlling=True,
        tiebreaker=1,
        timing=Timing(),
    )
    core.add_local_candidate(make_candidate("10.0.0.1", 5000), 0)
    core.want_connection(0.0)
    core.restart(IceParameters("aufrag1", "a-password-1-0123456789abcdef"), 0.0)
    assert core.add_remote_candidate(None) is False
    core.set_remote(IceParameters("bufrag1", "b-password-1-0123456789abcdef"), 0.1)
    core.add_remote_candidate(make_candidate("10.1.0.2", 6000))
    assert [c.address for c in core.remote_candidates] == ["10.1.0.2"]
    assert not core.remote_complete


def test_after_the_late_end_of_candidates_came_the_next_is_the_new_generations() -> None:
    """The end-of-candidates of before the restart comes late, and is ignored; there is one
    a generation, so the next, before the new parameters too, is the new generation's, and
    is taken (it was ignored as well: the new generation never ended, RFC 8838 §8)."""
    net, a, b = two_agents(end_of_candidates=False)
    assert net.run_until(connected(a, b), max_time=1.0)
    a.restart(net.now)
    b.restart(net.now)
    assert a.core.add_remote_candidate(None) is False  # (the old generation's, late)
    for candidate in b.signalled:
        assert a.core.add_remote_candidate(candidate) is True
    assert a.core.add_remote_candidate(None) is True


def test_without_the_peers_new_parameters_ice_fails_only_at_failed_timeout() -> None:
    """Both restart, and the peer's new candidates (naming its new ufrag, as W3C's
    usernameFragment does: held) and end-of-candidates come before its parameters: ICE
    does not fail at the PAC timer on its empty check list (docs/guide/restart.rst: without
    the peer's parameters, failed_timeout after the restart), and the old pair carries
    data meanwhile."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    a.restart(net.now)
    b.restart(net.now)
    for candidate in b.signalled:
        named = dataclasses.replace(candidate, username_fragment=b.core.local.ufrag)
        assert a.core.add_remote_candidate(named) is True  # (held)
    assert a.core.add_remote_candidate(None) is True  # (the old generation's had come)
    net.run_for(a.core.timing.failed_timeout - 1.0)
    assert a.state is S.CHECKING, a.states()


def test_a_restart_brings_a_failed_agent_back() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    rule = net.drop_all()
    assert net.run_until(lambda: a.state is S.FAILED and b.state is S.FAILED, max_time=60.0)
    assert a.core.data_pair is not None  # (the failed pair: still the one it had)
    net.loss_rules.remove(rule)
    _restart(net, a, b)
    # Consent had expired: no data may go over the failed pair (RFC 7675).
    assert a.core.data_pair is None and b.core.data_pair is None
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=net.now + 1.0)
    states = a.states()
    failed = states.index(S.FAILED)
    assert states[failed : failed + 3] == [S.FAILED, S.CHECKING, S.CONNECTED]
    assert_valid_events(a, b)


def test_a_restart_that_finds_no_pair_fails_and_ends_the_old_pairs_data() -> None:
    timing = Timing(disconnected_timeout=2.0, failed_timeout=3.0)
    net, a, b = two_agents(timing=timing)
    assert net.run_until(connected(a, b), max_time=1.0)
    _restart(net, a, b)
    assert a.core.data_pair is not None
    # The peer's new parameters never come: the new checks fail, failed_timeout later.
    assert net.run_until(lambda: a.state is S.FAILED, max_time=net.now + 10.0)
    assert a.core.data_pair is None
    assert not a.core.is_remote_address(b.bases[0])


def test_a_peer_address_not_signalled_anew_is_a_data_source_a_while_after_a_new_pair() -> None:
    """b moves to a new address (it gives up its old one): a's data from the old address
    counts until the new pair is selected, and then while the old pair's consent would
    have lasted (b may send there until it selects too: its nomination's answer may be
    lost, and data in flight comes still); then no more."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    old_address = b.bases[0]
    consent = last_consent(net, a)
    _restart(net, a, b)
    b.core.transport_lost(0, net.now)  # (its old socket gone)
    b.signalled.clear()
    b.add_host("10.0.0.3", 6001)
    assert a.core.is_remote_address(old_address)
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=net.now + 1.0)
    assert a.core.selected is not None
    assert a.core.selected.remote_address == ("10.0.0.3", 6001)
    assert a.core.data_pair is a.core.selected
    assert a.core.is_remote_address(old_address)
    ends = consent + a.core.timing.failed_timeout
    assert net.run_until(lambda: not a.core.is_remote_address(old_address), max_time=ends + 1)
    assert net.now == pytest.approx(ends, abs=net.spin_step)
    assert all(p.remote_address != old_address for p in a.core.checklist)
    assert a.state is S.COMPLETED


def test_a_restart_while_checking_starts_over() -> None:
    net, a, b = two_agents(want=False)
    a.core.want_connection(net.now)
    b.core.want_connection(net.now)
    net.run_until(lambda: bool(a.started), max_time=1.0)
    assert a.state is S.CHECKING and a.core.selected is None
    _restart(net, a, b)
    assert a.core.data_pair is None and len(a.core.checklist) == 0
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=net.now + 1.0)
    assert_valid_events(a, b)


def test_a_restart_before_any_check_stays_new() -> None:
    net, a, b = two_agents(exchange=False)
    _restart(net, a)
    assert a.state is S.NEW and a.core.local.ufrag == "aufrag1"
    net.exchange(a, b)
    assert net.run_until(connected(a, b), max_time=1.0)


def test_a_restart_needs_new_credentials_and_an_open_agent() -> None:
    net, a, _b = two_agents()
    assert net.run_until(connected(a, _b), max_time=1.0)
    same_ufrag = IceParameters(a.core.local.ufrag, "another-password-0123456789")
    same_pwd = IceParameters("another", a.core.local.pwd)
    for params in (same_ufrag, same_pwd):
        with pytest.raises(ConfigError, match="new ufrag and a new pwd"):
            a.core.restart(params, net.now)
    assert a.state in (S.CONNECTED, S.COMPLETED)  # (nothing changed)
    a.core.close()
    with pytest.raises(trice.StateError, match="closed"):
        _restart(net, a)


def test_a_candidate_of_another_ice_generation_is_left_out() -> None:
    """A candidate that says it belongs to another ufrag than the peer's of now (trickled
    late, from before a restart) forms no pair; one of the peer's ufrag, or that says none,
    does."""
    net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, net.now)
    old_ufrag = b.core.local.ufrag
    (candidate,) = b.signalled
    _restart(net, b)
    a.core.restart(IceParameters("aufrag1", "a-password-1-0123456789abcdef"), net.now)
    a.core.set_remote(b.core.local, net.now)
    stale = dataclasses.replace(candidate, username_fragment=old_ufrag)
    assert a.core.add_remote_candidate(stale) is False
    assert len(a.core.checklist) == 0 and not a.core.is_remote_address(b.bases[0])
    fresh = dataclasses.replace(candidate, username_fragment=b.core.local.ufrag)
    assert a.core.add_remote_candidate(fresh) is True
    assert len(a.core.checklist) == 1
    # Without a ufrag it is taken as the peer's (the SDP line says none).
    b.add_host("10.0.0.3", 6001)
    assert a.core.add_remote_candidate(b.signalled[-1]) is True
    assert len(a.core.checklist) == 2


def test_a_restarted_agent_waits_for_the_peers_parameters_without_spinning() -> None:
    """After a restart the peer, restarted too, may check first, or trickle its candidates
    before its parameters come: the checks they queue wait for those parameters, and the
    core asks for no wake-up it cannot use (a busy loop in the shell)."""
    for peer_checks_first in (True, False):
        net, a, b = two_agents()
        assert net.run_until(connected(a, b), max_time=1.0)
        _restart(net, a, b)
        if peer_checks_first:
            b.core.set_remote(a.core.local, net.now)  # (b took a's answer, a has not yet)
            for candidate in a.signalled:
                b.core.add_remote_candidate(candidate)
        else:
            for candidate in b.signalled:
                a.core.add_remote_candidate(candidate)
        net.run_for(0.3)
        assert a.stale_deadlines == [] and b.stale_deadlines == []
        assert a.core.selected is None
        net.exchange(a, b)
        assert net.run_until(connected(a, b), max_time=net.now + 1.0)
        assert_valid_events(a, b)


def test_the_pair_of_before_a_restart_carries_data_only_while_its_consent_lasts() -> None:
    """RFC 7675: the old pair stops carrying data when its consent, last refreshed before
    the restart, is ``failed_timeout`` old, though the new checks have time left."""
    timing = Timing(keepalive_interval=0.5, disconnected_timeout=1.0, failed_timeout=3.0)
    net, a, b = two_agents(timing=timing)
    assert net.run_until(connected(a, b), max_time=1.0)
    net.drop_all()
    net.run_for(2.0)
    assert a.state is S.DISCONNECTED
    consent = last_consent(net, a)
    _restart(net, a)
    assert a.core.data_pair is not None  # (consent has not expired yet)
    assert net.run_until(lambda: a.core.data_pair is None, max_time=net.now + 5.0)
    assert net.now == pytest.approx(consent + timing.failed_timeout, abs=net.spin_step)
    assert a.core.state is S.CHECKING  # (the new checks go on, and fail on their own time)
    assert not a.core.is_remote_address(b.bases[0])
    assert net.run_until(lambda: a.state is S.FAILED, max_time=net.now + 5.0)


def test_an_answer_on_another_pair_refreshes_no_consent_of_the_pair_of_before() -> None:
    """After a restart, the controlled side's ping-backs (consent-like checks) on the new
    pairs are answered: those answers prove the new path, not the old one, whose consent
    still ends ``failed_timeout`` after its last answer."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    previous = b.core.data_pair
    old = ("10.0.0.1", 5000)
    net.drop(lambda p: old in (p.src, p.dst))  # (the old path dies)
    net.run_for(10.0)
    last_consent = last_arrival(net, b, answers_only=True)
    net.drop(lambda p: p.sender == "a" and p.is_request and p.use_candidate)
    _restart(net, a, b)
    a.signalled = [a.add_host("10.0.0.1", 5001)]
    net.exchange(a, b)
    net.run_for(2.0)
    assert b.core.selected is None and b.core.data_pair is previous
    assert any(p.sender == "a" and not p.is_request for p in net.packets() if p.dst != old)
    assert net.run_until(lambda: b.core.data_pair is None, max_time=net.now + 30.0)
    # (Not the restart's time, 10 s later, plus failed_timeout.)
    assert net.now == pytest.approx(last_consent + b.core.timing.failed_timeout, abs=0.05)


def test_the_address_of_before_a_restart_takes_no_room_from_the_cap() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    a.core.max_remote_candidates = 1
    _restart(net, a, b)
    net.exchange(a, b)  # (b's one candidate again: no LimitError)
    assert net.run_until(connected(a, b), max_time=net.now + 1.0)
    assert a.core.remote_candidates == list(b.signalled)


def test_a_candidate_of_before_a_restart_after_the_new_end_is_left_out() -> None:
    """Signaling may bring a candidate of the generation before the restart after the new
    generation's end-of-candidates: it is left out and counted, as before that end (it
    raised StateError, which the application's signaling took for its own mistake)."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    old_ufrag = b.core.local.ufrag
    _restart(net, a, b)
    net.exchange(a, b)
    assert a.core.remote_complete
    (candidate,) = b.signalled
    late = dataclasses.replace(candidate, port=candidate.port + 1, username_fragment=old_ufrag)
    dropped = a.core.remote_candidates_dropped
    assert a.core.add_remote_candidate(late) is False
    assert a.core.remote_candidates_dropped == dropped + 1
    with pytest.raises(trice.StateError):  # (one of this generation's, after its end)
        a.core.add_remote_candidate(dataclasses.replace(late, username_fragment=None))


def test_candidates_wait_for_the_parameters_of_their_generation() -> None:
    """After a restart, before the peer's new parameters, a candidate that names a ufrag
    waits: taken if the parameters then say it is the peer's, left out (counted) if it is
    one of before the restart trickled late, and held on if its ufrag was never seen (a
    generation to come).  The old generation had not ended: an end-of-candidates then is
    taken for its own, late, and ignored."""
    net, a, b = two_agents(end_of_candidates=False)
    assert net.run_until(connected(a, b), max_time=1.0)
    old_ufrag = b.core.local.ufrag
    _restart(net, a, b)
    (candidate,) = b.signalled
    b.add_host("10.0.0.3", 6001)
    fresh = dataclasses.replace(candidate, username_fragment=b.core.local.ufrag)
    # (b kept its socket: its candidate of before has the same address, trickled late.)
    late = dataclasses.replace(candidate, username_fragment=old_ufrag)
    unknown = dataclasses.replace(b.signalled[1], username_fragment="someone")
    for held in (fresh, late, unknown):
        assert a.core.add_remote_candidate(held) is True
    assert a.core.add_remote_candidate(None) is False  # (the old generation's, late)
    assert not a.core.remote_complete
    assert a.core.remote_candidates == [] and len(a.core.checklist) == 0  # (held)
    a.core.set_remote(b.core.local, net.now)
    assert a.core.remote_candidates == [fresh]  # (not replaced by the late one)
    assert a.core.remote_candidates_dropped == 1  # (the late one; the unknown one waits on)
    # Now the peer's ufrag is known: one that names another of before is left out at once.
    assert a.core.add_remote_candidate(late) is False
    assert a.core.remote_candidates_dropped == 2
    assert a.core.add_remote_candidate(None) is True and a.core.remote_complete


def test_an_end_of_candidates_before_the_parameters_counts_when_none_can_be_late() -> None:
    """The old generation had ended before the restart (as it does in any whole
    session): an end-of-candidates before the peer's new parameters is the new one's.  The
    same before any restart.  (After a restart that came before the peer's parameters, it
    may be the first generation's, late, and is ignored: see
    ``test_a_late_end_of_candidates_after_a_restart_before_any_parameters_is_ignored``.)"""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    _restart(net, a, b)
    for candidate in b.signalled:
        assert a.core.add_remote_candidate(candidate)
    assert a.core.add_remote_candidate(None) is True and a.core.remote_complete
    _net2, c, _d = two_agents(exchange=False)
    assert c.core.add_remote_candidate(None) is True and c.core.remote_complete


def test_a_peer_that_keeps_its_ufrag_through_a_restart_keeps_its_candidates() -> None:
    """Not compliant (RFC 8445 §9 changes both), but seen: the peer's new parameters keep
    its ufrag; candidates that name it are its own, before and after they come."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    ufrag = b.core.local.ufrag
    a.restart(net.now)
    (candidate,) = b.signalled
    tagged = dataclasses.replace(candidate, username_fragment=ufrag)
    assert a.core.add_remote_candidate(tagged) is True
    a.core.set_remote(IceParameters(ufrag, "b-another-password-0123456789"), net.now)
    assert a.core.remote_candidates == [tagged]
    assert a.core.remote_candidates_dropped == 0


def test_candidates_of_a_generation_to_come_have_a_room_of_their_own() -> None:
    """Candidates naming a ufrag not seen yet, while the peer's parameters are known, are
    held apart: as many as ``max_remote_candidates`` (the next is left out and counted, no
    LimitError), and none takes the room of the generation of now (a peer that never
    restarts cannot crowd out its own candidates); setting the same parameters again keeps
    them; once the restart and the parameters naming them come, they count as any."""
    net, a, b = two_agents(exchange=False)
    a.core.max_remote_candidates = 2
    a.core.set_remote(b.core.local, net.now)
    (candidate,) = b.signalled
    early = [
        dataclasses.replace(candidate, port=7000 + k, username_fragment="later") for k in range(3)
    ]
    assert [a.core.add_remote_candidate(c) for c in early] == [True, True, False]
    assert a.core.remote_candidates_dropped == 1
    assert a.core.add_remote_candidate(candidate) is True  # (this generation's: room)
    assert a.core.add_remote_candidate(dataclasses.replace(candidate, port=6001)) is True
    a.core.set_remote(b.core.local, net.now)  # (again: nothing changes)
    a.restart(net.now)
    a.core.set_remote(IceParameters("later", "later-password-0123456789"), net.now)
    assert [c.port for c in a.core.remote_candidates] == [7000, 7001]
    assert a.core.remote_candidates_dropped == 1


def test_a_candidate_naming_this_agents_own_ufrag_is_left_out() -> None:
    """A signaling mistake (the peer's candidate sent with our ufrag): left out and
    counted, not held for ever as one of a generation to come.  Unless the peer's ufrag
    is ours too (two agents of one configuration with its ufrag)."""
    net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, net.now)
    (candidate,) = b.signalled
    mistaken = dataclasses.replace(candidate, username_fragment=a.core.local.ufrag)
    assert a.core.add_remote_candidate(mistaken) is False
    assert a.core.remote_candidates_dropped == 1
    net, a, b = two_agents(exchange=False)
    a.core.set_remote(a.core.local, net.now)  # (the peer's parameters are ours)
    (candidate,) = b.signalled
    same = dataclasses.replace(candidate, username_fragment=a.core.local.ufrag)
    assert a.core.add_remote_candidate(same) is True
    assert a.core.remote_candidates == [same]


def test_a_local_name_of_a_generation_to_come_is_resolved_once_its_parameters_come() -> None:
    """A ``.local`` candidate of a generation to come is held as it is, not resolved (it
    may never be taken); the parameters naming its ufrag hand it to the shell to resolve
    (``take_names``), held as a name being resolved: the end-of-candidates of its
    generation waits for it."""
    net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, net.now)
    a.core.add_remote_candidate(None)  # (the generation of now has ended)
    named = Candidate.from_sdp("candidate:1 1 udp 2130706431 peer-host.local 7000 typ host")
    named = dataclasses.replace(named, username_fragment="later")
    assert a.core.add_remote_candidate(named) is True
    assert a.core.add_remote_candidate(None, "later") is True
    assert a.core.take_names() == []
    a.restart(net.now)
    a.core.set_remote(IceParameters("later", "later-password-0123456789"), net.now)
    assert a.core.take_names() == [named] and a.core.pending_remote == 1
    assert a.core.remote_end_held and not a.core.remote_complete
    resolved = dataclasses.replace(named, address="10.0.0.7")
    assert a.core.release_remote(resolved, a.core.generation) is True
    assert a.core.remote_candidates == [resolved] and a.core.remote_complete


def test_held_candidates_count_once_against_the_cap() -> None:
    """A candidate held twice (the same address), and a peer's check from a held address,
    take one place under ``max_remote_candidates`` between them."""
    _net, a, b = two_agents(exchange=False)
    a.core.max_remote_candidates = 1
    (candidate,) = b.signalled
    tagged = dataclasses.replace(candidate, username_fragment=b.core.local.ufrag)
    assert a.core.add_remote_candidate(tagged) is True
    assert a.core.add_remote_candidate(tagged) is True  # (no LimitError: the same one)
    with pytest.raises(trice.LimitError):
        a.core.add_remote_candidate(
            dataclasses.replace(tagged, port=candidate.port + 1)  # (a second address)
        )
    request = binding_request(a.core, sender_ufrag=b.core.local.ufrag, controlling=False)
    answer = a.core.on_request(0, candidate.transport_address, request, 0.0)
    assert answer is not None and stun.decode(answer).message_class is stun.MessageClass.SUCCESS
    assert a.core.prflx_dropped == 0  # (learned: its address has its place already)
    (learned,) = a.core.remote_candidates
    assert learned.type is CandidateType.PRFLX
    a.core.set_remote(b.core.local, 0.0)
    assert a.core.remote_candidates == [tagged]  # (the signalled one takes the learned one's place)
    (pair,) = a.core.checklist
    assert pair.remote == tagged


def test_held_candidates_naming_other_ufrags_at_one_address_each_count() -> None:
    """Held candidates at one address naming ever new ufrags each take a place: they are
    held by address and ufrag, and a peer (or its signaling) could otherwise have the
    agent hold any number of them past ``max_remote_candidates`` (they counted once)."""
    _net, a, b = two_agents(exchange=False)
    a.core.max_remote_candidates = 10
    (candidate,) = b.signalled
    for i in range(10):
        assert a.core.add_remote_candidate(
            dataclasses.replace(candidate, username_fragment=f"gen{i}")
        )
    with pytest.raises(trice.LimitError):
        a.core.add_remote_candidate(dataclasses.replace(candidate, username_fragment="gen10"))
    assert len(a.core._held or ()) == 10
    assert a.core.add_remote_candidate(dataclasses.replace(candidate, username_fragment="gen3"))


@pytest.mark.parametrize("known_by", ["a candidate naming no ufrag", "a check of the peer's"])
def test_held_candidates_at_a_known_address_count_but_one(known_by: str) -> None:
    """Before the peer's parameters, its address is known (a candidate that names no ufrag,
    or a check of the peer's, learned): candidates there naming ever new ufrags are held,
    and each but the first counts (they had all been held past the cap, uncounted)."""
    _net, a, b = two_agents(exchange=False)
    a.core.max_remote_candidates = 10
    (candidate,) = b.signalled
    if known_by == "a candidate naming no ufrag":
        assert a.core.add_remote_candidate(candidate)
    else:
        request = binding_request(a.core, sender_ufrag=b.core.local.ufrag, controlling=False)
        assert a.core.on_request(0, candidate.transport_address, request, 0.0) is not None
    assert len(a.core.remote_addresses) == 1
    with pytest.raises(trice.LimitError):
        for i in range(1000):
            a.core.add_remote_candidate(dataclasses.replace(candidate, username_fragment=f"g{i}"))
    assert len(a.core._held or ()) == 10  # (the known address's own place, and nine more)


def test_a_restart_after_consent_ran_out_keeps_no_pair_for_data() -> None:
    """Consent's time ran out, but the timer has not run yet: a restart then keeps no pair
    for data (RFC 7675), and names the last selected one."""
    timing = Timing(disconnected_timeout=1.0, failed_timeout=2.0)
    net, a, b = two_agents(timing=timing)
    assert net.run_until(connected(a, b), max_time=1.0)
    named = a.core.selected_pair()
    net.drop_all()
    last = a.core._last_consent
    a.restart(last + timing.failed_timeout)  # (before on_timer has seen it)
    assert a.core.data_pair is None
    assert a.core.selected_pair() == named  # (the last one selected)
    (stats,) = [s for s in a.core.pair_statistics() if s.selected]
    assert stats.pair == named


def test_a_transport_lost_after_ice_failed_takes_its_candidates_away_all_the_same() -> None:
    """ICE failed first, then a transport ends (a relay): its candidates go all the same
    (they stayed, and the restart that followed paired them, on a base with no transport)."""
    timing = Timing(disconnected_timeout=1.0, failed_timeout=2.0, pac_timeout=0)
    net, a, _b = two_agents(timing=timing)
    net.drop_all()
    assert net.run_until(lambda: a.state is S.FAILED, max_time=10.0)
    ((_, base),) = a.core.local_candidates
    a.core.transport_lost(base, net.now)
    assert a.core.local_candidates == ()
    a.restart(net.now)
    assert len(a.core.checklist) == 0


def test_a_restart_whose_old_pair_loses_its_transport_has_no_pair_for_data() -> None:
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    _restart(net, a, b)
    previous = a.core.data_pair
    assert previous is not None
    a.core.transport_lost(previous.base, net.now)
    assert a.core.data_pair is None
    assert not a.core.is_remote_address(previous.remote_address)


def test_a_chrome_style_candidate_line_names_its_ufrag() -> None:
    """Chrome writes the ufrag into the candidate line (``ufrag X``): it counts as the
    candidate's generation, as ``usernameFragment`` does (one naming another ufrag waits
    for parameters that name it)."""
    net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, net.now)
    (candidate,) = b.signalled
    line = candidate.to_sdp()
    ours = Candidate.from_sdp(f"{line} generation 0 ufrag {b.core.local.ufrag}")
    theirs = Candidate.from_sdp(f"{line.replace('6000', '6001')} ufrag someone")
    assert a.core.add_remote_candidate(theirs) is True
    assert a.core.add_remote_candidate(ours) is True
    assert a.core.remote_candidates == [ours]


def test_candidates_held_through_a_restart_wait_for_parameters_naming_them() -> None:
    """Candidates held for parameters that had not come when the agent restarts: they may
    be the new generation's, and keep waiting; the parameters take what names their ufrag,
    and the rest, naming a ufrag never seen, waits on for a generation to come: a peer that
    restarted twice, its second generation's candidates overtaking the first's parameters,
    has them taken with the second's parameters.  (They were dropped with the first's.)"""
    net, a, b = two_agents(exchange=False)
    (candidate,) = b.signalled
    second = dataclasses.replace(candidate, username_fragment="x1y2")
    assert a.core.add_remote_candidate(second)
    a.core.add_remote_candidate(None, "x1y2")  # (and its end-of-candidates)
    a.restart(net.now)
    assert a.core.remote_candidates_dropped == 0
    a.core.set_remote(b.core.local, net.now)
    assert a.core.remote_candidates == []
    assert a.core.remote_candidates_dropped == 0
    assert not a.core.remote_complete
    a.restart(net.now)
    a.core.set_remote(IceParameters("x1y2", b.core.local.pwd), net.now)
    assert a.core.remote_candidates == [second]
    assert a.core.remote_candidates_dropped == 0
    assert a.core.remote_complete


def _facing_g1g1() -> AgentCore:
    """A controlling core (ufrag ``me01``) with one host candidate, facing a peer whose
    parameters name ufrag ``g1g1``."""
    core = AgentCore(
        local=IceParameters("me01", "m" * 22), controlling=True, tiebreaker=1, timing=FAST
    )
    core.add_local_candidate(make_candidate("10.0.0.1", 5000), 0)
    core.set_remote(IceParameters("g1g1", "p" * 22), 0.0)
    return core


def _hold_abandoned(core: AgentCore) -> None:
    """Three candidates of a generation to come (ufrag ``zzzz``) whose parameters never
    come."""
    for i in range(3):
        abandoned = make_candidate(f"10.0.9.{i + 1}", 6000)
        assert core.add_remote_candidate(dataclasses.replace(abandoned, username_fragment="zzzz"))


def test_candidates_of_a_generation_whose_parameters_never_come_wait_one_restart_only() -> None:
    """Candidates of a generation to come whose parameters never come (an offer rolled
    back, a stranger's) wait through one restart; parameters naming another ufrag after it
    drop and count them.  They went round for ever (early, held, early...), taking the
    room of what waits for the peer's parameters after each restart."""
    core = _facing_g1g1()
    core.max_remote_candidates = 3
    _hold_abandoned(core)
    core.restart(IceParameters("me02", "n" * 22), 1.0)
    core.set_remote(IceParameters("g2g2", "q" * 22), 1.0)
    assert core.remote_candidates_dropped == 3
    core.restart(IceParameters("me03", "o" * 22), 2.0)
    following = dataclasses.replace(make_candidate("10.0.0.2", 6000), username_fragment="g3g3")
    assert core.add_remote_candidate(following)  # (room for it: LimitError before)
    core.set_remote(IceParameters("g3g3", "r" * 22), 2.0)
    assert core.remote_candidates == [following]


def test_a_generation_to_come_waits_through_one_restart_with_two_restarts_in_a_row() -> None:
    """Two restarts of this agent's with no parameters between them count as one: the
    candidates of a generation to come are dropped by the parameters after them, if those
    name another ufrag (the second restart let them wait on)."""
    core = _facing_g1g1()
    _hold_abandoned(core)
    core.restart(IceParameters("me02", "n" * 22), 1.0)
    core.restart(IceParameters("me03", "o" * 22), 2.0)
    core.set_remote(IceParameters("g3g3", "r" * 22), 2.0)
    assert core.remote_candidates_dropped == 3 and not core._early


def test_ends_of_generations_never_come_leave_room_for_the_next_ones() -> None:
    """End-of-candidates naming generations whose parameters never come wait through one
    restart only, as their candidates do: eight of them (``MAX_NAMED_ENDS``) went round
    for ever, and the end of a peer that restarted first was then refused (its generation
    never complete)."""
    core = _facing_g1g1()
    for i in range(8):
        core.add_remote_candidate(None, f"ab{i:02d}")  # (abandoned generations' ends)
    core.restart(IceParameters("me02", "n" * 22), 1.0)
    core.set_remote(IceParameters("g2g2", "q" * 22), 1.0)
    core.restart(IceParameters("me03", "o" * 22), 2.0)
    core.set_remote(IceParameters("g3g3", "r" * 22), 2.0)
    following = dataclasses.replace(make_candidate("10.0.0.2", 6000), username_fragment="g4g4")
    assert core.add_remote_candidate(following)
    core.add_remote_candidate(None, "g4g4")
    core.restart(IceParameters("me04", "s" * 22), 3.0)
    core.set_remote(IceParameters("g4g4", "t" * 22), 3.0)
    assert core.remote_candidates == [following]
    assert core.remote_complete


def test_a_restarted_peers_candidates_before_its_parameters_wait_for_them() -> None:
    """A peer restarts first (its process came back, say) and its new candidates, naming
    its new ufrag, come before its new parameters: they wait for this agent's restart and
    the parameters, as candidates before the first parameters do.  They were dropped as
    another generation's, and the restarted session had to find the peer by its checks
    alone.  A candidate of the generation of before, trickled late, is still dropped."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    before = b.core.local.ufrag
    b.restart(net.now)
    (candidate,) = b.signalled
    early = dataclasses.replace(candidate, username_fragment=b.core.local.ufrag)
    assert a.core.add_remote_candidate(early) is True  # (held: the peer's is another now)
    assert early not in a.core.remote_candidates
    a.restart(net.now)
    a.core.set_remote(b.core.local, net.now)
    assert a.core.remote_candidates == [early]
    late = dataclasses.replace(candidate, port=6001, username_fragment=before)
    assert a.core.add_remote_candidate(late) is False
    assert a.core.remote_candidates_dropped == 1


def test_a_local_candidate_after_a_restart_pairs_with_no_old_address() -> None:
    """A local candidate gathered during a restart pairs with the new generation's
    candidates only, not with the address the old pair's data still comes from."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    _restart(net, a, b)
    a.add_host("10.0.0.9", 5009)
    assert len(a.core.checklist) == 0
    net.exchange(a, b)
    assert len(a.core.checklist) == 2  # (both local candidates, with b's one, signalled anew)


def test_a_local_pwd_that_makes_an_empty_key_is_a_config_error() -> None:
    """The local side too (the public API allows only ice-chars; the core is public to
    embedders): a pwd SASLprep maps to nothing makes no secret, at the start or a restart."""
    with pytest.raises(ConfigError, match="cannot make a STUN key"):
        AgentCore(
            local=IceParameters("abcd", "\x07" * 22),
            controlling=True,
            tiebreaker=1,
            timing=Timing(),
        )
    nothing = "\u200b" * 30
    with pytest.raises(ConfigError, match="empty STUN key"):
        AgentCore(
            local=IceParameters("abcd", nothing), controlling=True, tiebreaker=1, timing=Timing()
        )
    _net, a, _b = two_agents()
    with pytest.raises(ConfigError, match="empty STUN key"):
        a.core.restart(IceParameters("efgh", nothing), 0.0)


@pytest.mark.parametrize("nomination", list(Nomination))
def test_a_controlled_agent_whose_checks_are_answered_is_completed_as_it_selects(
    nomination: Nomination,
) -> None:
    """Its one check answered before the nomination comes, a controlled agent has no check
    left to wait for when it selects: ``completed`` then (it stayed ``connected`` until
    its first consent check was answered, a keepalive interval later, under regular
    nomination)."""
    net, a, b = two_agents(nomination=nomination)
    assert net.run_until(connected(a, b), max_time=5.0)
    net.run_for(0.5)
    assert not b.core.controlling
    assert b.time_of(S.COMPLETED) == b.time_of(S.CONNECTED)
    assert a.time_of(S.COMPLETED) == a.time_of(S.CONNECTED)


def _switched_mid_check() -> tuple[AgentCore, Check, bytes]:
    """A controlling agent facing one silent peer (no PAC timer) whose one pair's check is
    in flight when the peer's claim to control switches it to controlled (the pair waits
    for its check in the new role); the check, and the peer's key."""
    net, a, b = two_agents(
        a_tiebreaker=1000,
        b_controlling=True,
        b_tiebreaker=2000,
        want=False,
        timing=Timing(pac_timeout=0.0),
    )
    del net.endpoints["b"]
    core = a.core
    core.want_connection(0.0)
    old = core.poll_check(0.0)
    assert old is not None and old.controlling
    claim = _claiming(core, b.core.local.ufrag, stun.IceControlling(2000))
    core.on_request(0, old.destination, claim, 0.01)
    return core, old, stun.short_term_key(b.core.local.pwd)


def test_a_pair_an_old_check_refuses_after_a_role_switch_is_checked_again() -> None:
    """The role switches while the one pair's check is in flight (the pair waits for its
    check in the new role); then the old check gets a refusal (400): the new check
    decides, and goes.  The pair had failed while still queued, which held the failure of
    ICE back, and its check never went: ICE failed only at failed_timeout."""
    core, old, key = _switched_mid_check()
    assert not core.controlling and old.pair.state is PairState.WAITING
    refusal = _reply(old, key, stun.MessageClass.ERROR, [stun.ErrorCode(400, "Bad Request")])
    assert core.on_response(old, stun.decode(refusal), old.destination, 0.02)
    again = core.poll_check(0.02 + core.timing.ta)
    assert again is not None and again.pair is old.pair and not again.controlling
    core.on_response(
        again,
        stun.decode(
            _reply(again, key, stun.MessageClass.ERROR, [stun.ErrorCode(400, "Bad Request")])
        ),
        again.destination,
        0.1,
    )
    assert core.state is S.FAILED  # (every pair failed, both ends came, no PAC timer)


def test_a_failed_pair_leaves_the_triggered_check_queue() -> None:
    """A pair waiting in the triggered-check queue fails (an answer to its check of before
    the role switch, which was a success elsewhere: not symmetric): it leaves the queue,
    which held the failure of ICE back."""
    core, old, _ = _switched_mid_check()
    core._pair_failed(old.pair, 0.02)  # (as any failure of it would, the pair queued)
    assert not core._triggered
    assert core.state is S.FAILED


def test_a_controlling_agent_is_completed_at_its_final_selection() -> None:
    """Regular nomination: the pair is selected while a triggered check waits (the peer
    checked another pair).  The selection is final, so the waiting pair leaves the
    triggered-check queue (RFC 8445 §8.1.2) and the agent is completed at once: the check
    went a Ta later, cancelled at birth, and held completion back till then (till the next
    consent check, 2 s on, before that)."""
    net, a, b = two_agents(b_hosts=[("10.0.0.2", 6000), ("10.0.0.3", 6000)], want=False)
    del net.endpoints["b"]
    core = a.core
    key = stun.short_term_key(b.core.local.pwd)
    core.want_connection(0.0)
    c1 = core.poll_check(0.0)
    assert c1 is not None
    p1, p2 = list(core.checklist)
    assert c1.pair is p1
    core.on_response(c1, stun.decode(_reply(c1, key)), c1.destination, 0.01)
    n1 = core.poll_check(0.01)
    assert n1 is not None and n1.nominating
    core.on_request(0, p2.remote_address, binding_request(core, controlling=False), 0.02)
    core.on_response(n1, stun.decode(_reply(n1, key)), n1.destination, 0.03)
    assert core.selected is p1 and core.state is S.COMPLETED
    assert core.poll_check(core.timing.ta) is None
    assert p2.state is PairState.WAITING and p2.transaction is None


def test_after_a_restart_parameters_that_bring_no_pair_fail_ice_at_the_pac_timer() -> None:
    """After an ICE restart the peer's new candidates (named with its new ufrag: held) and
    end-of-candidates come before its parameters, and pair with none of ours (IPv6; we
    have IPv4): once the parameters come, ICE fails at the PAC timer, as at the first
    start.  It failed at failed_timeout (nothing looked again when the parameters came)."""
    net, a, b = two_agents(timing=FAST)
    assert net.run_until(connected(a, b), max_time=1.0)
    a.restart(net.now)
    b.restart(net.now)
    v6 = make_candidate("2001:db8::2", 6000)
    v6 = dataclasses.replace(v6, username_fragment=b.core.local.ufrag)
    assert a.core.add_remote_candidate(v6) is True  # (held)
    assert a.core.add_remote_candidate(None) is True
    a.core.set_remote(b.core.local, net.now)
    assert not list(a.core.checklist)
    net.run_for(FAST_PAC + 1.0)
    assert a.state is S.FAILED, a.states()


def test_an_end_of_candidates_that_names_a_ufrag_ends_that_generation_only() -> None:
    """An end-of-candidates may name its generation's ufrag (W3C usernameFragment): the
    new generation's, come before the new parameters, waits for them and ends it then;
    the late one of before a restart, come after the new parameters, is ignored (it ended
    the new generation, and every new candidate raised StateError)."""
    net, a, b = two_agents(end_of_candidates=False)
    assert net.run_until(connected(a, b), max_time=1.0)
    a.restart(net.now)
    b.restart(net.now)
    assert a.core.add_remote_candidate(None, b.core.local.ufrag) is True  # (waits)
    assert not a.core.remote_complete
    a.core.set_remote(b.core.local, net.now)
    assert a.core.remote_complete  # (it named them)
    net, c, d = two_agents(end_of_candidates=False)
    assert net.run_until(connected(c, d), max_time=1.0)
    old = d.core.local.ufrag
    c.restart(net.now)
    d.restart(net.now)
    c.core.set_remote(d.core.local, net.now)
    assert c.core.add_remote_candidate(None, old) is False  # (late, of before: ignored)
    for candidate in d.signalled:
        assert c.core.add_remote_candidate(candidate) is True
    assert c.core.add_remote_candidate(None, d.core.local.ufrag) is True
    assert c.core.remote_complete


def test_a_late_named_end_of_an_older_generation_leaves_the_new_ones_held_end() -> None:
    """Two ICE restarts; the new generation's end-of-candidates (naming its ufrag) comes
    before the peer's new parameters and waits for them; then late ones of the generations
    before come, the first's and the middle's (whose parameters never came here): the new
    generation's still ends it once its parameters come.  One named end was held, and a
    late one took its place: the generation never ended."""
    for late_of in ("first", "middle"):
        net, a, b = two_agents(end_of_candidates=False)
        assert net.run_until(connected(a, b), max_time=1.0)
        first = b.core.local.ufrag
        a.restart(net.now)
        b.restart(net.now)
        middle = b.core.local.ufrag
        if late_of == "first":
            a.core.set_remote(b.core.local, net.now)
        a.restart(net.now)
        b.restart(net.now)
        assert a.core.add_remote_candidate(None, b.core.local.ufrag) is True  # (waits)
        a.core.add_remote_candidate(None, first if late_of == "first" else middle)
        a.core.set_remote(b.core.local, net.now)
        assert a.core.remote_complete, late_of


def test_named_ends_held_are_bounded_and_a_repeat_is_still_taken() -> None:
    """Ends naming ever new ufrags before the peer's parameters: 8 are held, more are
    ignored (False); one already held, repeated, is still taken (True), and the one of the
    parameters that come ends the generation."""
    net, a, b = two_agents(end_of_candidates=False)
    assert net.run_until(connected(a, b), max_time=1.0)
    a.restart(net.now)
    b.restart(net.now)
    assert all(a.core.add_remote_candidate(None, f"u{i:03}") for i in range(7))
    assert a.core.add_remote_candidate(None, b.core.local.ufrag) is True  # (the 8th)
    assert a.core.add_remote_candidate(None, "u999") is False
    assert a.core.add_remote_candidate(None, b.core.local.ufrag) is True  # (held: a repeat)
    a.core.set_remote(b.core.local, net.now)
    assert a.core.remote_complete


def test_a_lite_agents_consent_by_data_holds_when_a_keepalive_came_after_it() -> None:
    """Data over the selected pair at t1, told to the core after a Binding indication of
    t2 > t1 was handled: consent is refreshed all the same (it was thrown away, the data
    taken for stale, and the lite agent failed while the peer kept sending)."""
    net, a, b = two_agents(b_lite=True)
    assert net.run_until(connected(a, b), max_time=1.0)
    selected = b.core.selected
    assert selected is not None
    keepalive = _keepalive_indication()
    net.drop(lambda p: p.sender == "a" and p.is_request)  # (no more checks from the peer)
    end = net.now + 60.0
    while net.now < end:
        net.run_for(0.1)
        data_at = net.now - 0.05
        assert b.core.on_request(selected.base, selected.remote_address, keepalive, net.now) is None
        b.core.on_data(data_at, selected=True)
    assert S.FAILED not in b.states()


# -- trickle and nomination -----------------------------------------------------------------


def _a_has_the_poor_candidate_of_two(
    nomination: Nomination,
) -> tuple[Network, Endpoint, Endpoint, Candidate]:
    """b has a poor candidate (local preference 100) and a good one (returned); a has b's
    parameters and the poor one, b has a's parameters; both want to connect."""
    net, a, b = two_agents(exchange=False, b_hosts=(), nomination=nomination)
    poor = b.add_host("10.0.0.2", 6000, local_pref=100)
    good = b.add_host("10.0.0.3", 6001)
    a.core.set_remote(b.core.local, net.now)
    b.core.set_remote(a.core.local, net.now)
    a.core.add_remote_candidate(poor)
    a.core.want_connection(net.now)
    b.core.want_connection(net.now)
    return net, a, b, good


def _b_trickles_its_better_candidate_late(
    nomination: Nomination,
) -> tuple[Network, Endpoint, Endpoint, Candidate]:
    """b has a poor candidate (local preference 100) and a good one; a gets the poor one
    first, the good one 50 ms later (then end-of-candidates), as trickle does;
    b gets a's candidates 50 ms in too (till then it knows a from a's checks alone).
    Returns the network, both endpoints and the good candidate."""
    net, a, b, good = _a_has_the_poor_candidate_of_two(nomination)
    net.run_for(0.05)
    a.core.add_remote_candidate(good)
    for candidate in a.signalled:
        b.core.add_remote_candidate(candidate)
    a.core.add_remote_candidate(None)
    b.core.add_remote_candidate(None)
    return net, a, b, good


@pytest.mark.parametrize("nomination", [Nomination.REGULAR, Nomination.AGGRESSIVE])
def test_a_better_candidate_trickled_after_a_pair_works_is_the_one_selected(
    nomination: Nomination,
) -> None:
    """The peer's poor candidate works at once; its better one comes 50 ms later.  Regular
    nomination, final, waits for it (end-of-candidates had not come): it nominated the poor
    pair, and the better one was never checked.  Aggressive nomination selects the poor
    pair, then goes on to check the better one, which replaces it (it was never checked
    either).  Both sides end on the same pair."""
    net, a, b, good = _b_trickles_its_better_candidate_late(nomination)
    if nomination is Nomination.REGULAR:
        assert a.core.selected is None  # (it waited)
    assert net.run_until(connected(a, b), max_time=2.0)
    net.run_for(1.0)
    here, there = a.core.selected_pair(), b.core.selected_pair()
    assert here is not None and there is not None
    assert here.remote == good and there.local.address == good.address
    assert a.state is ConnectionState.COMPLETED


def test_without_end_of_candidates_regular_nomination_waits_the_nomination_delay() -> None:
    """No end-of-candidates: a better candidate may still come, so the valid pair is
    nominated only once ``Timing.nomination_delay`` has passed since it became valid; with
    end-of-candidates (and nothing better being checked), at once."""
    net, a, _ = two_agents(end_of_candidates=False)
    assert net.run_until(lambda: a.core.checklist.best_valid() is not None, max_time=1.0)
    valid_at = net.now
    assert net.run_until(connected(a), max_time=2.0)
    delay = a.core.timing.nomination_delay
    assert valid_at + delay <= net.now < valid_at + delay + 0.1
    net, a, _ = two_agents()
    assert net.run_until(lambda: a.core.checklist.best_valid() is not None, max_time=1.0)
    valid_at = net.now
    assert net.run_until(connected(a), max_time=2.0)
    assert net.now < valid_at + 0.05  # (the nomination's round trip, 20 ms)


def test_a_better_pair_trickled_after_an_aggressive_selection_is_due_for_a_check() -> None:
    """The shell wakes the core by ``next_deadline``: a controlling agent nominating
    aggressively, its poor pair selected, gets a better candidate; the better pair's check
    is due at once (the next pacing slot), not at the next consent check, seconds away."""
    net, a, _, good = _a_has_the_poor_candidate_of_two(AGGRESSIVE)
    assert net.run_until(connected(a), max_time=1.0)
    a.core.add_remote_candidate(good)
    deadline = a.core.next_deadline()
    assert deadline is not None and deadline <= net.now + a.core.timing.ta


def test_after_a_late_end_of_candidates_the_nomination_is_due_at_once() -> None:
    """A valid pair waits for the nomination delay while the peer may still trickle; its
    end-of-candidates, once it comes, makes the nomination due at once by ``next_deadline``
    (the shell's only wake-up), not when the delay would have ended."""
    net, a, _ = two_agents(end_of_candidates=False)
    assert net.run_until(lambda: a.core.checklist.best_valid() is not None, max_time=1.0)
    waiting = a.core.next_deadline()
    assert a.core.selected is None and waiting is not None and waiting > net.now
    a.core.add_remote_candidate(None)
    due = a.core.next_deadline()
    assert due is not None and due <= net.now


class _SocketSources:
    """A core driven as a shell may drive it that hands on IPv6 sources as the socket gives
    them, ``(host, port, flowinfo, scope_id)``."""

    def __init__(self, core: AgentCore) -> None:
        self._core = core

    def __getattr__(self, name: str) -> object:
        return getattr(self._core, name)

    def on_request(
        self, base: int, source: tuple[str, int], request: stun.Message, now: float
    ) -> bytes | None:
        return self._core.on_request(base, (*source, 0, 0), request, now)  # type: ignore[arg-type]

    def on_response(
        self,
        check: Check,
        response: stun.Message,
        source: tuple[str, int],
        now: float,
        **kw: object,
    ) -> bool:
        return self._core.on_response(check, response, (*source, 0, 0), now, **kw)  # type: ignore[arg-type]


def test_ipv6_sources_as_a_socket_gives_them_are_taken() -> None:
    """An IPv6 socket gives a source as ``(host, port, flowinfo, scope_id)``: a shell that
    hands it on so gets answers taken as symmetric, checks learned and keepalives heard,
    and connects.  (Every pair failed as not symmetric, and the peer's checks were never
    learned.)"""
    net, a, b = two_agents(
        a_hosts=[("2001:db8::1", 5000)], b_hosts=[("2001:db8::2", 6000)], exchange=False
    )
    for endpoint in (a, b):
        endpoint.core = _SocketSources(endpoint.core)  # type: ignore[assignment]
    net.exchange(a, b)
    assert net.run_until(connected(a, b), 5.0)
    selected = a.core.selected
    assert selected is not None and selected.remote_address == ("2001:db8::2", 6000)
    # A keepalive (RFC 8445 §11) from there, so given, is a sign of life too.
    later = net.now + 1.0
    assert (
        a.core.on_request(selected.base, ("2001:db8::2", 6000), _keepalive_indication(), later)
        is None
    )
    assert a.core._last_alive == later


@pytest.mark.parametrize(
    "source", [("10.0.0.9", 70000), ("10.0.0.9", -1), ("localhost", 4000), ("10.0.0.9",)]
)
def test_a_request_from_no_address_a_socket_gives_is_a_usage_error(
    source: tuple[str, int],
) -> None:
    """A shell's mistake, a source no socket gives (a port past 65535, a name, a tuple of
    one), raises UsageError, a TriceError (it was a bare ValueError from the encoder, or
    an IndexError)."""
    _net, _a, b = two_agents(want=False)
    with pytest.raises(trice.UsageError, match="source must be an IP address and a port"):
        b.core.on_request(0, source, binding_request(b.core), 0.0)


@pytest.mark.parametrize("start", [-10.0, -1e6])
def test_a_clock_that_reads_below_zero_checks_at_once(start: float) -> None:
    """The clock is any float: one that reads below 0 when checks begin has the first go at
    once (none went until the clock came to 0: 10 s late, or ICE failed first)."""
    net, a, b = two_agents(exchange=False)
    net.now = start
    net.exchange(a, b)
    assert net.run_until(connected(a, b), start + 1.0)
    assert net.packets(sender="a", requests=True)[0].sent_at == start


def test_a_candidate_of_another_component_is_left_out_and_counted() -> None:
    """An agent has one component: a peer's RTCP candidate (component 2, a peer without
    rtcp-mux) is left out and counted, whatever its address (it was taken, paired with
    nothing, and said nothing)."""
    _net, _a, b = two_agents(want=False, end_of_candidates=False)
    core = b.core
    rtcp = make_candidate("10.0.0.9", 5001, component=2)
    before = list(core.remote_candidates), core.remote_candidates_dropped
    assert core.add_remote_candidate(rtcp) is False
    assert list(core.remote_candidates) == before[0]
    assert core.remote_candidates_dropped == before[1] + 1


#: A relayed candidate of ours (see the tests of addresses hidden behind names).
RELAYED = make_candidate("198.51.100.9", 7000, type=CandidateType.RELAY)


@pytest.mark.parametrize("relay_first", [True, False])
def test_no_relayed_candidate_pairs_with_an_address_the_peer_hid_behind_a_name(
    relay_first: bool,
) -> None:
    """An address the peer signalled only under an mDNS name (resolved by the shell) pairs
    with our host candidate but not our relayed one, whichever came first: the TURN server
    would learn it (draft-ietf-mmusic-mdns-ice-candidates §3.3.2).  One signalled as it
    is pairs with both."""
    _net, _a, b = two_agents(exchange=False, want=False)
    core = b.core
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)

    def add_relay() -> None:
        core.add_local_candidate(RELAYED, 9)

    if relay_first:
        add_relay()
    generation = core.hold_remote()
    assert core.release_remote(make_candidate("10.0.0.7", 4000), generation, hidden=True)
    core.add_remote_candidate(make_candidate("10.0.0.8", 4000))
    if not relay_first:
        add_relay()
    pairs = {(p.local.type, p.remote.address) for p in core.checklist}
    assert pairs == {
        (CandidateType.HOST, "10.0.0.7"),
        (CandidateType.HOST, "10.0.0.8"),
        (CandidateType.RELAY, "10.0.0.8"),
    }


def test_learned_candidates_leave_the_room_of_the_names_being_resolved() -> None:
    """Names being resolved hold their room (mdns.rst): at the cap, checks from other
    sources are not learned (counted in ``prflx_dropped``), and the names, resolved, are
    taken.  The learned ones took the room, and the names were refused (LimitError)."""
    _net, _a, b = two_agents(exchange=False, want=False)
    core = b.core
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)
    core.max_remote_candidates = 2
    first, second = core.hold_remote(), core.hold_remote()
    for i, source in enumerate((("10.0.0.50", 4000), ("10.0.0.51", 4000))):
        core.on_request(0, source, binding_request(core, tid=bytes([i]) * 12), 0.0)
    assert core.prflx_dropped == 2
    assert core.release_remote(make_candidate("10.0.0.7", 4000), first, hidden=True)
    assert core.release_remote(make_candidate("10.0.0.8", 4000), second, hidden=True)
    assert [c.address for c in core.remote_candidates] == ["10.0.0.7", "10.0.0.8"]


def test_a_name_left_out_hides_no_address() -> None:
    """A name that resolves to an address no check may go to is left out, and leaves no
    mark: the address is not taken for one the peer hid."""
    _net, _a, b = two_agents(exchange=False, want=False)
    core = b.core
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)
    generation = core.hold_remote()
    assert not core.release_remote(make_candidate("224.0.0.9", 4000), generation, hidden=True)
    assert not core._hidden


def test_a_hidden_address_the_peers_check_taught_first_stays_hidden() -> None:
    """On a LAN the peer's check often comes before the mDNS answer: the address is learned
    peer-reflexive, then the name resolves to it.  It was never signalled as it is, so no
    relayed candidate pairs with it (it did: the learned candidate was taken for a
    signalled one).  A check the peer sends to the relayed candidate from there still
    pairs."""
    _net, _a, b = two_agents(exchange=False, want=False)
    core = b.core
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)
    core.add_local_candidate(RELAYED, 9)
    source = ("10.0.0.7", 4000)
    assert core.on_request(0, source, binding_request(core), 0.0) is not None
    generation = core.hold_remote()
    core.release_remote(make_candidate(*source), generation, hidden=True)

    def relayed() -> list[Pair]:
        return [p for p in core.checklist if p.local.type is CandidateType.RELAY]

    assert relayed() == []
    assert core.on_request(9, source, binding_request(core), 0.0) is not None
    assert [p.remote_address for p in relayed()] == [source]


def test_a_hidden_address_stays_hidden_after_a_restart_that_kept_its_pair() -> None:
    """The pair selected before a restart keeps its remote address known (the stale one)
    until a new pair is selected: the same ``.local`` name resolving to it again is still
    hidden, and no relayed candidate pairs with it (it did: the stale entry was taken for
    a signalled one)."""

    def signal(x: Endpoint, y: Endpoint, *, hidden: bool) -> None:
        x.core.set_remote(y.core.local, net.now)
        for candidate in y.signalled:
            if hidden:
                x.core.release_remote(candidate, x.core.hold_remote(), hidden=True)
            else:
                x.core.add_remote_candidate(candidate)
        x.core.add_remote_candidate(None)
        x.core.set_local_complete()

    net, a, b = two_agents(exchange=False, want=False)
    b.core.add_local_candidate(RELAYED, 9)
    signal(a, b, hidden=False)
    signal(b, a, hidden=True)
    a.core.want_connection(net.now)
    b.core.want_connection(net.now)
    assert net.run_until(connected(a, b), max_time=5.0)
    a.restart(net.now)
    b.restart(net.now)
    signal(a, b, hidden=False)
    signal(b, a, hidden=True)
    assert [p for p in b.core.checklist if p.local.type is CandidateType.RELAY] == []


def test_a_candidate_of_another_component_after_end_of_candidates_is_a_state_error() -> None:
    """After end-of-candidates any candidate raises StateError, one of another component
    too (it was left out quietly)."""
    _net, _a, b = two_agents(want=False)
    with pytest.raises(trice.StateError, match="after end-of-candidates"):
        b.core.add_remote_candidate(make_candidate("10.0.0.9", 5001, component=2))


def test_after_an_outage_the_peers_check_has_ours_sent_again_at_once() -> None:
    """The way was down from the start until 4 s: ``a``'s check went at 0, 0.5, 1.5 and 3.5
    (all lost), its next copy due at 6.5.  ``b``'s check comes through at 4.51: ``a``'s
    latest copy went 1 s before, longer than an RTO, so it was lost, and the check goes
    again at once: connected by 4.6 s.  (Twice the check's age, 9 s, fell after its own
    next copy, so none went, and ``a`` waited for the copy at 6.5.)  The RTO doubles up
    to 3 s here, as it did by default until 2026-12-05 (since, up to 1 s: the copies at
    2.5 and 3.5 s, and one at 4.5 just before ``b``'s check comes)."""
    net, a, b = two_agents(want=False, timing=Timing(rto_max=3.0))
    outage = net.drop_all()
    a.core.want_connection(net.now)
    net.run_for(1.0)
    b.core.want_connection(net.now)
    net.run_for(3.0)
    net.loss_rules.remove(outage)
    assert net.run_until(connected(a), max_time=4.6)
    sent = [round(p.sent_at, 2) for p in net.packets(sender="a", requests=True)]
    assert sent[:5] == [0.0, 0.5, 1.5, 3.5, 4.51]


def test_a_candidate_of_another_component_of_a_generation_to_come_is_left_out() -> None:
    """A peer's RTCP candidate that names a ufrag not seen yet (a generation to come) is
    left out and counted at once, as one of the generation of now is: it was held, took
    that generation's room, and was taken in when its parameters came."""
    _net, _a, b = two_agents(want=False, end_of_candidates=False)
    core = b.core
    dropped = core.remote_candidates_dropped
    rtcp = dataclasses.replace(
        make_candidate("10.0.0.9", 5001, component=2), username_fragment="next"
    )
    assert core.add_remote_candidate(rtcp) is False
    assert core.remote_candidates_dropped == dropped + 1
    core.restart(IceParameters("bbbb", "q" * 22), 1.0)
    core.set_remote(IceParameters("next", "n" * 22), 1.0)
    assert [c for c in core.remote_candidates if c.component != 1] == []


def test_pairs_lost_before_checks_begin_fail_ice_when_they_begin() -> None:
    """Every pair lost (its transport gone) before the checks began leaves the agent new
    (it failed at once, and connect() could only raise); once they begin, ICE fails at
    once, its one candidate gone: no check of the peer's can come, and RFC 8863's PAC timer
    would wait for nothing."""
    _net, _a, b = two_agents(want=False)
    core = b.core
    core.transport_lost(0, 1.0)
    assert core.state is S.NEW
    core.want_connection(2.0)
    changes = [e.state for e in core.drain_events() if isinstance(e, ConnectionStateChanged)]
    assert changes == [S.CHECKING, S.FAILED]


def test_no_resend_goes_just_before_the_checks_own_next_copy() -> None:
    """The way opens at 1.485 s, when ``a``'s latest copy (0.5 s) is long lost: ``b``'s
    check, at 1.495 s, would have ``a``'s sent again at once, but its own next copy goes at
    1.5 s: that one alone goes (a second, 5 ms before it, doubled the check)."""
    net, a, b = two_agents(want=False)
    outage = net.drop_all()
    a.core.want_connection(net.now)
    net.run_for(1.485)
    net.loss_rules.remove(outage)
    b.core.want_connection(net.now)
    assert net.run_until(connected(a), max_time=3.0)
    sent = [round(p.sent_at, 3) for p in net.packets(sender="a", requests=True)]
    assert [t for t in sent if 1.49 <= t <= 1.5] == [1.5]


def test_a_lite_agent_keeps_to_the_pace_of_an_rfc_5245_peers_keepalive_checks() -> None:
    """An RFC 5245 peer checks the selected pair every 15 s (its keepalives, §10), and
    sends nothing else: a lite agent, which hears the peer only through its checks, takes
    that pace once two have come, and stays connected (it went disconnected at each gap,
    its silence limit 12 s)."""
    _net, _a, b = two_agents(b_lite=True, want=False, exchange=False)
    core = b.core
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)
    core.add_remote_candidate(make_candidate("10.0.0.1", 5000))
    core.add_remote_candidate(None)
    source = ("10.0.0.1", 5000)
    states: list[ConnectionState] = []
    for i in range(7):
        now = 15.0 * i
        core.on_timer(now)
        request = binding_request(core, use_candidate=i == 0, controlling=True, tid=bytes([i]) * 12)
        assert core.on_request(0, source, request, now) is not None
        states += [e.state for e in core.drain_events() if isinstance(e, ConnectionStateChanged)]
        core.on_timer(now + 14.9)
        states += [e.state for e in core.drain_events() if isinstance(e, ConnectionStateChanged)]
    # (Before the second check the pace is not known: the 12 s limit, one gap.)
    after = states[states.index(S.CONNECTED, states.index(S.DISCONNECTED)) :]
    assert S.DISCONNECTED not in after and S.FAILED not in after, states


def _lite_core(timing: Timing | None = None) -> AgentCore:
    """An ICE-lite agent's core, its peer's parameters and one candidate at 10.0.0.1:5000."""
    _net, _a, b = two_agents(b_lite=True, want=False, exchange=False, timing=timing)
    core = b.core
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)
    core.add_remote_candidate(make_candidate("10.0.0.1", 5000))
    core.add_remote_candidate(None)
    return core


def _lite_check(core: AgentCore, now: float, i: int) -> None:
    """The peer's check (its first nominating) at ``now``, after the core's timer."""
    core.on_timer(now)
    request = binding_request(core, use_candidate=i == 0, controlling=True, tid=bytes([i + 1]) * 12)
    assert core.on_request(0, ("10.0.0.1", 5000), request, now) is not None


def _lite_states(core: AgentCore) -> list[ConnectionState]:
    return [e.state for e in core.drain_events() if isinstance(e, ConnectionStateChanged)]


def _idle_then_a_minute_of_data(core: AgentCore) -> float:
    """The peer checks the idle pair every 2 s (Pion's way), then sends a minute of data
    with no check: the time after it."""
    t = 0.0
    for i in range(4):
        _lite_check(core, t, i)
        t += 2.0
    while t < 62.0:
        core.on_data(t, selected=True)
        t += 0.5
    return t


def test_a_lite_agents_paced_silence_is_never_below_disconnected_timeout() -> None:
    """Checks 18 s apart with ``disconnected_timeout`` 20 s: the lite agent waits the 20 s
    it is told at least (the pace, capped at two thirds of its consent, made it 16.7 s)."""
    core = _lite_core(Timing(disconnected_timeout=20.0, failed_timeout=25.0))
    for i, now in enumerate((0.0, 18.0, 36.0)):
        _lite_check(core, now, i)
    _lite_states(core)
    for step in range(1, 20):
        core.on_timer(36.0 + step)
    assert S.DISCONNECTED not in _lite_states(core)


def test_a_lite_agent_takes_no_pace_from_checks_with_data_between() -> None:
    """A peer that checks only an idle pair (Pion) sends none while data flows: one check
    after a minute of data is no pace, and once the peer vanishes the lite agent is
    disconnected 12 s after its last data (the minute's gap stretched it to 16.7 s)."""
    core = _lite_core()
    t = _idle_then_a_minute_of_data(core)
    _lite_check(core, t, 5)
    t += 0.5
    while t < 120.0:
        core.on_data(t, selected=True)
        t += 0.5
    _lite_states(core)
    core.on_timer(t - 0.5 + 12.5)
    assert S.DISCONNECTED in _lite_states(core)


@pytest.mark.parametrize(
    ("failed_timeout", "disconnected_after"),
    [(30.0, 15.0 * JITTER_MAX), (25.0, 25.0 * 2 / 3)],
    ids=["default", "consent-25"],
)
def test_a_lite_agent_whose_paced_peer_vanished_is_disconnected_then_failed(
    failed_timeout: float, disconnected_after: float
) -> None:
    """Checks 15 s apart, then silence: disconnected as far after the last as the pace
    with its jitter (18 s), not before, or at two thirds of consent if that is sooner (16.7
    s of 25); failed when consent runs out (30 s by default)."""
    core = _lite_core(Timing(failed_timeout=failed_timeout))
    for i in range(4):
        _lite_check(core, 15.0 * i, i)
    _lite_states(core)
    core.on_timer(45.0 + disconnected_after - 0.1)
    assert S.DISCONNECTED not in _lite_states(core)
    core.on_timer(45.0 + disconnected_after)
    assert S.DISCONNECTED in _lite_states(core)
    core.on_timer(45.0 + failed_timeout - 0.1)
    assert S.FAILED not in _lite_states(core)
    core.on_timer(45.0 + failed_timeout)
    assert S.FAILED in _lite_states(core)


def test_an_address_hidden_then_signalled_as_it_is_pairs_with_the_relay() -> None:
    """The peer hides its host behind a ``.local`` name and signals a server-reflexive
    candidate at the same address (no NAT: libwebrtc does so with mDNS on).  Whichever
    comes first, the address is disclosed once signalled as it is, and our relayed
    candidate pairs with it (resolved first, it stayed hidden)."""
    _net, _a, b = two_agents(exchange=False, want=False)
    core = b.core
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)
    core.add_local_candidate(RELAYED, 9)
    generation = core.hold_remote()
    assert core.release_remote(make_candidate("10.0.0.7", 4000), generation, hidden=True)
    assert not [p for p in core.checklist if p.local.type is CandidateType.RELAY]
    core.add_remote_candidate(
        make_candidate("10.0.0.7", 4000, type=CandidateType.SRFLX, related=("0.0.0.0", 9))
    )
    pairs = {(p.local.type, p.remote.address) for p in core.checklist}
    assert (CandidateType.RELAY, "10.0.0.7") in pairs


def test_a_lite_agent_takes_no_pace_from_a_gap_with_data_in_it() -> None:
    """Checks 2 s apart, a minute of data, one check, then the peer vanishes: the gap
    before that check had data in it, no pace, so the lite agent is disconnected 12 s
    after it (the minute's gap stretched it to 16.7 s)."""
    core = _lite_core()
    t = _idle_then_a_minute_of_data(core)
    _lite_check(core, t, 5)
    _lite_states(core)
    core.on_timer(t + 12.5)
    assert S.DISCONNECTED in _lite_states(core)


def test_a_hidden_address_signalled_as_it_is_while_held_pairs_with_the_relay() -> None:
    """A ``.local`` name (naming no ufrag) resolved before the peer's parameters, hidden;
    a plain candidate at the address, naming the peer's ufrag, held for the parameters:
    once they take it, the address is disclosed, and the relayed candidate pairs with it
    (the candidates the parameters take did not disclose it)."""
    _net, _a, b = two_agents(exchange=False, want=False)
    core = b.core
    core.add_local_candidate(RELAYED, 9)
    assert core.release_remote(make_candidate("10.0.0.7", 4000), core.hold_remote(), hidden=True)
    plain = make_candidate("10.0.0.7", 4000, type=CandidateType.SRFLX, related=("0.0.0.0", 9))
    assert core.add_remote_candidate(dataclasses.replace(plain, username_fragment="peer"))
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)
    pairs = {(p.local.type, p.remote.address) for p in core.checklist}
    assert (CandidateType.RELAY, "10.0.0.7") in pairs


def test_a_lite_agents_pace_from_a_gap_with_data_does_not_come_back() -> None:
    """A minute of data between two checks, then checks 1 s apart (too close to set a
    pace): the gap with data set no pace, and none comes back later, so once the peer
    vanishes the lite agent is disconnected 12 s after its last check (the minute's gap
    came back as the pace once the fast checks had moved past the data)."""
    core = _lite_core()
    t = _idle_then_a_minute_of_data(core)
    i = 5
    while t < 130.0:
        _lite_check(core, t, i % 200 + 5)
        i += 1
        t += 1.0
    _lite_states(core)
    core.on_timer(t - 1.0 + 12.5)
    assert S.DISCONNECTED in _lite_states(core)


def test_a_lite_agents_data_told_after_the_check_that_ended_its_gap_counts_in_that_gap() -> None:
    """The trio shell tells a lite agent's core of data at the core's next deadline (dated
    when it came), and of the peer's checks at once: checks 2 s apart, data from 6.5 s to
    16.5 s, a check at 17 s, the data told at 18 s.  The gap before the check at 17 s had
    data, so it sets no pace, and the peer gone, the agent is disconnected 12 s after that
    check (the data was taken for none, dated before the check, and the 11 s gap paced
    the wait: 13.2 s)."""
    core = _lite_core()
    for i, t in enumerate((0.0, 2.0, 4.0, 6.0)):
        _lite_check(core, t, i)
    _lite_check(core, 17.0, 5)
    core.on_data(16.5, selected=True)
    core.on_timer(18.0)
    _lite_states(core)
    core.on_timer(17.0 + 12.5)
    assert S.DISCONNECTED in _lite_states(core)


#: The two remote candidates of :func:`_lite_with_a_backup`: the pair the peer uses, and
#: its backup.
USED, BACKUP = ("10.0.0.1", 5000), ("10.0.0.3", 5000)


def _lite_with_a_backup() -> tuple[AgentCore, Callable[..., None]]:
    """An ICE-lite agent's core whose peer nominated two pairs (aggressive nomination): the
    one to ``USED`` (selected) and, after it, the one to ``BACKUP``.  With ``check(now,
    source, nominate=False)``, which hands it the peer's next check from ``source``."""
    _net, _a, b = two_agents(b_lite=True, want=False, exchange=False)
    core = b.core
    core.set_remote(IceParameters("peer", "p" * 22), 0.0)
    core.add_remote_candidate(make_candidate(*USED))
    core.add_remote_candidate(make_candidate(*BACKUP, local_pref=100))
    core.add_remote_candidate(None)
    tids = iter(range(1, 250))

    def check(now: float, source: tuple[str, int], *, nominate: bool = False) -> None:
        core.on_timer(now)
        request = binding_request(
            core,
            use_candidate=nominate,
            controlling=True,
            tid=bytes([next(tids)]) * 12,
            priority=1_845_501_695 if source == USED else 100,
        )
        assert core.on_request(0, source, request, now) is not None

    check(0.0, USED, nominate=True)
    check(0.05, BACKUP, nominate=True)
    return core, check


def _followed_to_the_backup(core: AgentCore, check: Callable[..., None]) -> None:
    """Data over the selected pair until 37 s, the peer's checks on the backup every 15 s:
    the lite agent follows the backup at 45 s, once the selected pair is quiet."""
    t = 0.1
    for when in (15.0, 30.0, 45.0):
        while t < min(when, 37.0):
            core.on_data(t, selected=True)
            t += 0.5
        check(when, BACKUP)
    assert core.selected is not None and core.selected.remote_address == BACKUP


def test_a_lite_agent_keeps_its_pair_while_data_comes_over_it_and_a_backup_is_checked() -> None:
    """The peer nominated two pairs (aggressive nomination), checks the selected one every
    15 s and sends data over it all along; 3 s after its last check there, a check on the
    other nominated pair: the selected pair is in use, not quiet, and stays selected (a
    gap with data had its pace forgotten, and 2.4 s of quiet was taken for the peer
    leaving the pair: the lite agent moved)."""
    core, check = _lite_with_a_backup()
    assert core.selected is not None and core.selected.remote_address == USED
    t = 0.1
    for when in (15.0, 30.0, 45.0, 48.0):
        while t < when:
            core.on_data(t, selected=True)
            t += 0.5
        check(when, USED if when < 48.0 else BACKUP)
    assert core.selected.remote_address == USED
    # A peer that checks only an idle pair (Pion's way) sends none over the selected pair
    # while data flows: 25 s of data and no check there, then one on the backup pair.  (It
    # was taken for quiet after 18 s, 0.6 of consent, and the lite agent moved.)
    while t < 73.0:
        core.on_data(t, selected=True)
        core.on_timer(t)
        t += 0.5
    check(73.0, BACKUP)
    assert core.selected.remote_address == USED


@pytest.mark.parametrize(("step", "keepalive"), [(1.0, None), (2.0, 5.0)])
def test_a_lite_agents_pace_comes_down_again_once_checks_come_faster_after_an_outage(
    step: float, keepalive: float | None
) -> None:
    """Checks ``step`` apart, 14 s without one (an outage), then a minute of checks
    ``step`` apart, then none: the lite agent is disconnected 12 s after the last check.
    Checks closer than its consent interval (``keepalive_interval``: Pion's 2 s against a
    lite server set to 5 s, say) set no pace, and the outage's 14 s stayed the pace for
    the session: disconnected 16.7 s after."""
    core = _lite_core(None if keepalive is None else Timing(keepalive_interval=keepalive))
    n, t = 0, 0.0
    while t < 84.0:
        if not 10.0 < t < 24.0:
            _lite_check(core, t, n % 250)
            n += 1
        t += step
    last = t - step
    _lite_states(core)
    core.on_timer(last + 12.5)
    assert S.DISCONNECTED in _lite_states(core)


def test_copies_of_a_check_set_no_pace_and_shorten_no_gap() -> None:
    """An RFC 5245 peer checks every 15 s; our answer to its check at 45 s is lost three
    times, and its copies (the same transaction) come at 45.5, 46.5 and 48.5 s: the lite
    agent keeps the 15 s pace, measured from each transaction's first copy, and is not
    disconnected in the gaps after.  (A copy set a pace of 0.5 s; then, copies setting
    none, the last one moved the start of the next gap: 11.5 s was the pace.)"""
    core = _lite_core()
    for i in range(4):
        _lite_check(core, 15.0 * i, i)
    for copy in (45.5, 46.5, 48.5):
        _lite_check(core, copy, 3)  # (the check of 45 s again: its transaction id)
    for i, at in ((4, 60.0), (5, 75.0)):
        _lite_states(core)
        t = at - 15.0 + 0.1
        while t < at:
            core.on_timer(t)
            t += 0.1
        _lite_check(core, at, i)
        assert S.DISCONNECTED not in _lite_states(core), at


def test_a_lite_agent_paces_a_backup_pair_by_its_own_checks_not_by_data_elsewhere() -> None:
    """Two pairs nominated; the peer sends data over the selected one until 37 s and checks
    the backup every 15 s; once the selected pair is quiet, the lite agent follows the
    backup (at 45 s), whose checks keep their 15 s pace: no disconnected at the next gap.
    Data over the selected pair was taken for data in the backup's gap, which then set no
    pace: disconnected 12 s after the check that moved it."""
    core, check = _lite_with_a_backup()
    _followed_to_the_backup(core, check)
    _lite_states(core)
    core.on_timer(59.9)
    check(60.0, BACKUP)
    assert S.DISCONNECTED not in _lite_states(core)


def test_a_pair_the_peer_comes_back_to_takes_no_pace_from_its_time_away() -> None:
    """The peer uses one pair (data over it), moves to a backup (the lite agent follows at
    45 s; data over the backup until 80 s), comes back to the first at 100 s, then is gone:
    the first pair's gap of 100 s spans the peer's time on the backup, no pace of its idle
    checks, and the lite agent is disconnected 12 s after that check (the 100 s was taken
    for a pace: 16.7 s, two thirds of consent)."""
    core, check = _lite_with_a_backup()
    _followed_to_the_backup(core, check)
    t = 45.5
    while t < 80.0:
        core.on_timer(t)
        core.on_data(t, selected=True)
        t += 0.5
    check(100.0, USED)
    assert core.selected is not None and core.selected.remote_address == USED
    _lite_states(core)
    core.on_timer(100.0 + 12.5)
    assert S.DISCONNECTED in _lite_states(core)


@pytest.mark.parametrize(
    ("ufrag", "pwd", "lite"),
    [("peer2", "password-0123456789abcdef", "no"), (7, "password-0123456789abcdef", False)],
)
def test_bad_remote_parameters_after_good_ones_are_a_config_error(
    ufrag: Any, pwd: str, lite: Any
) -> None:
    """A bad value given after parameters were set is a ConfigError (what is wrong with it),
    as before them; it was a StateError, as if they were only different ones."""
    core = _v4_core()
    core.set_remote(_peer2(), 0.0)
    with pytest.raises(trice.ConfigError):
        core.set_remote(IceParameters(ufrag, pwd, lite=lite), 0.0)
    assert core.remote == _peer2()


def test_a_release_without_a_hold_is_a_state_error() -> None:
    """``release_remote`` with no candidate held (a driver's slip, or a release told twice)
    is a StateError, and changes nothing: it drove the count of held candidates below zero,
    which lifted the cap on remote candidates by as many, and counted candidates left out
    that never were (the coreapi review on e04f287)."""
    a, _ = two_cores(("relA", "relB"), end=False)
    for _ in range(3):
        with pytest.raises(StateError, match="hold_remote"):
            a.release_remote(None, a.generation)
    assert a.pending_remote == 0
    assert a.remote_candidates_dropped == 0 and a.left_out == 0
    a.hold_remote()
    a.release_remote(None, a.generation)  # (held: taken, and counted as left out)
    assert a.pending_remote == 0 and a.remote_candidates_dropped == 1


@pytest.mark.parametrize("tiebreaker", [-1, 1 << 64, True, 1.0])
def test_a_tiebreaker_beyond_64_bits_is_refused_at_construction(tiebreaker: Any) -> None:
    """A tiebreaker no check can carry (RFC 8445 §16.1: 64 bits) is a ConfigError where it
    is given: it was taken, and the first check raised a bare ValueError from the STUN
    encoder (the coreapi review on e04f287)."""
    with pytest.raises(ConfigError, match="tiebreaker"):
        AgentCore(
            local=IceParameters("tieA", "a" * 22),
            controlling=True,
            tiebreaker=tiebreaker,
            timing=Timing(),
        )


def test_on_response_takes_only_the_checks_own_answer() -> None:
    """``on_response`` takes a message as the check's answer only if it is a response with
    the check's transaction id (RFC 8489 §6.3): an answer to another check handed with it
    made its pair succeed, unanswered, and the check itself come back (a hairpin) failed
    its pair (the coreapi review on e04f287)."""
    a, b = two_cores(("ownA", "ownB"), end=False)
    a.add_remote_candidate(host_candidate(("192.0.2.3", 9), 0))
    first, second = a.poll_check(1.0), a.poll_check(2.0)
    assert first is not None and second is not None and first.pair is not second.pair
    assert not a.on_response(second, stun.decode(second.message), second.destination, 2.0)
    local = a.local_candidates[0][0]
    answer = b.on_request(0, (local.address, local.port), stun.decode(first.message), 2.0)
    assert answer is not None
    assert not a.on_response(second, stun.decode(answer), second.destination, 2.0)
    assert second.pair.state is PairState.IN_PROGRESS
    assert a.on_response(first, stun.decode(answer), first.destination, 2.0)
    assert first.pair.state is PairState.SUCCEEDED


# -- RFC 7675 §5.1: an answer read once consent expired brings nothing back ----------------


def _deliver_answer(core: AgentCore, check: Check, answer: stun.Message, now: float) -> None:
    """Hand ``answer`` to ``core`` as the shell would: to the check in flight, or, past its
    RTO, as a late answer."""
    live = core._live or {}
    if live.get(check.transaction_id) is check:
        core.on_response(check, answer, check.destination, now, base=check.base)
    else:
        core.on_late_response(answer, check.destination, now, base=check.base)


def _consent_running_out(left: float) -> tuple[Network, Endpoint, Endpoint, float]:
    """Two connected cores whose every packet is lost from 3 s on, run until ``left``
    seconds before ``a``'s consent expires: the network, the two, and that expiry."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=2.0)
    net.run_for(3.0)
    net.drop_all()
    expiry = a.core._last_consent + a.core._consent_for
    net.run_until(lambda: False, expiry - left)
    return net, a, b, expiry


def test_a_consent_answer_that_comes_after_consent_expired_does_not_re_establish_it() -> None:
    """RFC 7675 §5.1: "STUN consent responses received after consent expiry do not
    re-establish consent".  Every answer to ``a``'s consent checks is lost until consent
    has expired; then an answer to its latest check (sent well within the last 30 s, and
    within failed_timeout) arrives before the core's timer has run (the shell reads what
    came before it runs the core's timers: trice/_trio/_agent.py ``_run``; a loop that
    woke late).  Consent had expired at ``_last_consent + _consent_for``: that answer must
    not bring it back, and the timer that runs right after finds ``failed``.  (It refreshed
    consent: ``_last_consent`` was set to the check's send time whatever ``now`` was, and
    ``a`` stayed connected, sending data.)"""
    _net, a, b, expiry = _consent_running_out(0.3)
    assert a.state is not S.FAILED
    consent_checks = [c for _, c in a.started if c.consent and c.pair is a.core.selected]
    latest = consent_checks[-1]
    assert latest.started > a.core._last_consent  # (sent after the last consent: it counts)
    assert expiry - latest.started < a.core._consent_for  # (well within 30 s)
    now = expiry + 0.2  # the answer arrives after consent expired, before on_timer ran
    _deliver_answer(a.core, latest, _answer_to(latest, b.core), now)
    a.core.on_timer(now)
    assert a.core.state is S.FAILED, (
        f"consent expired at {expiry:.2f} s, yet an answer read at {now:.2f} s brought it "
        f"back: state {a.core.state.value}, consent now until "
        f"{a.core._last_consent + a.core._consent_for:.2f} s"
    )


def test_after_a_restart_a_late_answer_does_not_bring_back_the_old_pairs_expired_consent() -> None:
    """The same as above for the pair of before an ICE restart, which carries data until
    its consent expires (see ``AgentCore.restart``): an answer to one of its consent checks
    that arrives after that consent expired, before the timer ran, brings nothing back.
    (``on_late_response`` set ``_last_consent`` to the check's send time whatever ``now``
    was, and data went on over it.)"""
    net, a, b, expiry = _consent_running_out(1.0)
    a.restart(net.now)
    previous = a.core.data_pair
    assert previous is not None and a.core._previous_checks
    latest = max(a.core._previous_checks.values(), key=lambda c: c.started)
    assert latest.started > a.core._last_consent
    now = expiry + 0.2  # after the old pair's consent expired; the timer has not run yet
    a.core.on_late_response(_answer_to(latest, b.core), latest.destination, now, base=latest.base)
    a.core.on_timer(now)
    assert a.core.data_pair is None, (
        f"the old pair's consent expired at {expiry:.2f} s, yet an answer read at "
        f"{now:.2f} s brought it back: data goes on over it until "
        f"{a.core._last_consent + a.core._consent_for:.2f} s"
    )


def test_a_failure_counts_the_sources_the_cap_left_unlearned_once_each() -> None:
    """A peer behind a NAT whose checks (a check, its retransmissions, a nomination) all
    come from one source this agent cannot learn, its one remote candidate filling
    ``max_remote_candidates``: the failure says one peer-reflexive candidate went
    unlearned, not one a check (it said two: the p48pass review); and after an ICE restart,
    one again, the count being the generation's."""
    net = Network()
    a = net.add_endpoint("a", controlling=True, tiebreaker=2, nat=Nat("203.0.113.1"))
    b = net.add_endpoint("b", controlling=False, tiebreaker=1, max_remote_candidates=1)
    a.add_host("10.0.0.1", 5000)
    b.add_host("10.0.0.2", 6000)
    net.exchange(a, b)
    net.run_for(60)
    assert b.core.state is S.FAILED and b.core.prflx_dropped >= 2
    said = "; 1 peer-reflexive candidate past the cap (max_remote_candidates=1) went unlearned"
    assert b.core.no_pair_reason() == NO_PAIR_WORKS + said
    a.restart(net.now)
    b.restart(net.now)
    assert b.core.no_pair_reason() == NO_PAIR_WORKS  # (a new generation: none yet)
    net.exchange(a, b)
    net.run_for(60)
    assert b.core.state is S.FAILED
    assert b.core.no_pair_reason() == NO_PAIR_WORKS + said


def test_the_sources_the_cap_left_unlearned_are_kept_up_to_a_bound() -> None:
    """A connected agent whose ``max_remote_candidates`` is reached answers signed checks
    from new sources without learning them, and keeps each source to count it for the
    failure reason.  Checks from ever new sources (a captured check replayed from spoofed
    addresses, a peer behind a NAT that picks a new port each time) grew that set for the
    generation's life, some 300 bytes a source (the leaks49 review): it stops at
    MAX_CAPPED_KEPT, and the reason then says "or more"."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), 5)
    core = b.core
    core.max_remote_candidates = len(core.remote_addresses)
    key = stun.short_term_key(core.local.pwd)
    for i in range(MAX_CAPPED_KEPT + 100):
        request = binding_request(core, key=key, controlling=True, tid=i.to_bytes(12, "big"))
        source = (f"10.9.{i >> 8}.{i & 255}", 40000)
        assert core.on_request(0, source, request, net.now) is not None  # (answered)
    assert core.state in (S.CONNECTED, S.COMPLETED)
    assert core.prflx_dropped == MAX_CAPPED_KEPT + 100
    assert len(core._prflx_capped or ()) == MAX_CAPPED_KEPT
    assert core.no_pair_reason().endswith(
        f"; {MAX_CAPPED_KEPT} or more peer-reflexive candidates past the cap"
        f" (max_remote_candidates={core.max_remote_candidates}) went unlearned"
    )
