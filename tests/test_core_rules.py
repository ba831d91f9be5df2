"""RFC 8445 and RFC 7675 rules of the pure core (``AgentCore``) that the other core tests
did not pin (found by a mutation review): role conflicts on equal tie-breakers, consent
from symmetric answers only, failure held back for checks the peer may still make,
nomination after a failed one, triggered checks, the RTO schedule and ICE restarts."""

from __future__ import annotations

import dataclasses

import pytest
from test_core import (
    FAST,
    _answer_to,
    _checking,
    _keepalive_indication,
    _reply,
    binding_request,
)

import trice
from trice import stun
from trice._config import Timing
from trice.ice import Candidate
from trice.ice._check import check_schedule
from trice.ice._checklist import PairState
from trice.ice._core import GIVE_WAY_AFTER, RESEND_MIN, AgentCore, Check, IceParameters
from trice.ice._events import ConnectionState

from core_harness import Endpoint, Network, Packet, make_candidate, two_agents

# -- role conflicts with equal tie-breakers (RFC 8445 §7.3.1.1: "larger than or equal to") ----


def _answer(core: AgentCore, request: stun.Message, now: float = 0.0) -> stun.Message | None:
    """``core``'s answer (decoded) to ``request`` from the peer's host 10.0.0.2:6000."""
    data = core.on_request(0, ("10.0.0.2", 6000), request, now)
    return None if data is None else stun.decode(data)


def test_a_controlling_agent_answers_487_to_an_equal_tiebreaker() -> None:
    """RFC 8445 §7.3.1.1: a controlling agent whose tie-breaker is larger than OR EQUAL to
    the request's ICE-CONTROLLING answers 487 (Role Conflict) and keeps its role."""
    _net, a, _b = two_agents(a_controlling=True, want=False)
    core = a.core
    request = binding_request(core, controlling=True, tiebreaker=core.tiebreaker)
    answer = _answer(core, request)
    assert answer is not None
    error = answer.get(stun.ErrorCode)
    assert error is not None and error.code == 487
    assert core.controlling and core.role_switches == 0


def test_a_controlled_agent_takes_control_on_an_equal_tiebreaker() -> None:
    """RFC 8445 §7.3.1.1: a controlled agent whose tie-breaker is larger than OR EQUAL to
    the request's ICE-CONTROLLED switches to controlling, and answers with success."""
    _net, _a, b = two_agents(a_controlling=False, b_controlling=False, want=False)
    core = b.core
    request = binding_request(core, controlling=False, tiebreaker=core.tiebreaker)
    data = core.on_request(0, ("10.0.0.1", 5000), request, 0.0)
    assert data is not None
    answer = stun.decode(data)
    assert answer.message_class is stun.MessageClass.SUCCESS
    assert core.controlling and core.role_switches == 1


# -- consent (RFC 7675) ----------------------------------------------------------------------


def _consent_check(a: Endpoint) -> tuple[Check, float]:
    """Drive ``a`` (connected) by hand to its next consent check: (check, now)."""
    core = a.core
    for _ in range(50):
        now = core.next_deadline()
        assert now is not None
        core.on_timer(now)
        check = core.poll_check(now)
        if check is not None and check.consent:
            return check, now
    raise AssertionError("no consent check came")


def test_a_403_from_another_address_than_the_consent_check_went_to_revokes_nothing() -> None:
    """RFC 8445 §7.2.5.2.1 / RFC 7675 §5.2: only a symmetric answer counts; an authenticated
    403 (Forbidden) to a consent check that comes from another address than the check went
    to does not revoke consent, and ICE does not fail."""
    net, a, b = two_agents()
    assert net.run_until(lambda: a.core.selected is not None and b.core.selected is not None, 1.0)
    net.run_for(1.0)
    check, now = _consent_check(a)
    reply = stun.decode(
        _reply(
            check, b.core._local_key, stun.MessageClass.ERROR, [stun.ErrorCode(403, "Forbidden")]
        )
    )
    assert a.core.on_response(check, reply, ("10.0.0.99", 6000), now + 0.01)
    assert not a.core.consent_revoked
    assert a.core.state is not ConnectionState.FAILED


def test_a_success_from_another_address_to_a_consent_check_is_neither_consent_nor_timed() -> None:
    """A consent check's success answer from another address than the check went to is not
    symmetric (RFC 8445 §7.2.5.2.1): it gives no consent (RFC 7675 §5.1) and, as
    ``PairStatistics`` documents, no round-trip sample."""
    net, a, b = two_agents()
    assert net.run_until(lambda: a.core.selected is not None and b.core.selected is not None, 1.0)
    net.run_for(1.0)
    core = a.core
    check, now = _consent_check(a)
    before = [s.round_trip_time_samples for s in core.pair_statistics() if s.selected]
    consent_before = core._last_consent
    reply = _answer_to(check, b.core)
    assert core.on_response(check, reply, ("10.0.0.99", 6000), now + 0.01)
    after = [s.round_trip_time_samples for s in core.pair_statistics() if s.selected]
    assert after == before
    assert core._last_consent == consent_before


# -- keepalive indications (RFC 8445 §11) are not consent for a full agent (RFC 7675 §5.1) ----


def test_keepalive_indications_are_no_consent_for_a_full_agent() -> None:
    """A full agent whose consent checks go unanswered fails at failed_timeout, however many
    Binding indications (RFC 8445 §11 keepalives, unauthenticated) come on the selected
    pair: only answers to its own checks are consent (RFC 7675 §5.1, as the docstring of
    ``AgentCore.on_request`` says).  Only an ICE-lite agent, which sends no checks, takes
    them as a sign of the peer."""
    net, a, b = two_agents()
    assert net.run_until(lambda: a.core.selected is not None and b.core.selected is not None, 5.0)
    selected = a.core.selected
    assert selected is not None
    a_addresses = set(a.bases.values())
    net.drop(lambda p: p.dst in a_addresses)
    silent_from = net.now
    for _ in range(20):
        net.run_for(2.0)
        indication = _keepalive_indication()
        answer = a.core.on_request(selected.base, selected.remote_address, indication, net.now)
        assert answer is None
    assert ConnectionState.FAILED in a.states()
    failed_at = a.time_of(ConnectionState.FAILED)
    assert failed_at is not None
    assert failed_at <= silent_from + a.core.timing.failed_timeout + 0.1


def test_a_keepalive_on_another_socket_is_no_sign_of_life_for_a_lite_agent() -> None:
    """A Binding indication (RFC 8445 §11 keepalive) counts only on the selected pair: from
    its remote address AND on its local transport.  One from the right address that came in
    on another socket of the ICE-lite agent keeps nothing: it goes disconnected as with
    none."""
    net, a, b = two_agents(b_lite=True, b_hosts=(("10.0.0.2", 6000), ("10.0.0.3", 6000)))
    assert net.run_until(lambda: a.core.selected is not None and b.core.selected is not None, 5.0)
    selected = b.core.selected
    assert selected is not None
    other_base = next(base for base in b.bases if base != selected.base)
    net.drop(lambda p: p.sender == "a" and p.is_request)
    for _ in range(10):
        net.run_for(2.0)
        b.core.on_request(other_base, selected.remote_address, _keepalive_indication(), net.now)
    assert ConnectionState.DISCONNECTED in b.states()


def test_a_pac_timeout_past_failed_timeout_fails_at_failed_timeout() -> None:
    """With ``Timing.pac_timeout`` longer than ``failed_timeout``, RFC 8863's PAC timer is
    cut to failed_timeout: an empty check list fails at failed_timeout (the deadline the
    shell is given says so), not when the longer PAC timer would end."""
    timing = dataclasses.replace(FAST, pac_timeout=50.0, failed_timeout=10.0)
    net, a, _b = two_agents(timing=timing, b_hosts=(("fd00::2", 6000),))
    net.run_for(60.0)
    assert a.states() == [ConnectionState.CHECKING, ConnectionState.FAILED]
    assert a.time_of(ConnectionState.FAILED) == pytest.approx(10.0)


# -- nomination (RFC 8445 §8.1.1) -------------------------------------------------------------


def test_a_nomination_that_fails_leaves_the_way_to_another_valid_pair() -> None:
    """Regular nomination (RFC 8445 §8.1.1): the nomination on the best valid pair goes
    unanswered (every copy lost), so that pair fails; the controlling agent then nominates
    the other valid pair, and both sides select it long before failed_timeout, rather than
    failing with a valid pair in hand."""
    net, a, b = two_agents(timing=FAST, b_hosts=(("10.0.0.2", 6000), ("10.0.0.3", 6000)))
    first: list[tuple[str, int]] = []

    def lose_first_nomination(p: Packet) -> bool:
        if p.sender != "a" or not p.use_candidate:
            return False
        if not first:
            first.append(p.dst)
        return p.dst == first[0]

    net.drop(lose_first_nomination)
    assert net.run_until(
        lambda: a.core.selected is not None and b.core.selected is not None, max_time=5.0
    )
    selected = a.core.selected
    assert selected is not None
    assert first and selected.remote_address != first[0]
    assert a.state is not ConnectionState.FAILED


# -- completed waits for the triggered checks (RFC 8445 §8.1.2) --------------------------------


def test_a_controlled_agent_is_not_completed_while_a_triggered_check_waits() -> None:
    """RFC 8445 §8.1.2: a controlled agent selects the pair the peer nominated while a
    triggered check on another pair (the peer's check there just came) still waits to go:
    it is connected, not completed, until no triggered check waits."""
    peer = IceParameters("peerufrag", "peer-password-0123456789ab")
    core = AgentCore(
        local=IceParameters("bufrag", "b-password-0123456789abcdef"),
        controlling=False,
        tiebreaker=1,
        timing=FAST,
    )
    core.add_local_candidate(make_candidate("10.0.0.2", 6000), 0)
    core.set_local_complete()
    core.set_remote(peer, 0.0)
    core.add_remote_candidate(make_candidate("10.0.0.1", 5000))
    core.add_remote_candidate(make_candidate("10.0.0.3", 5000, local_pref=1000))
    core.add_remote_candidate(None)
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    assert check is not None and check.destination == ("10.0.0.1", 5000)
    answer = stun.decode(_reply(check, stun.short_term_key(peer.pwd)))
    assert core.on_response(check, answer, check.destination, 0.01)
    # The peer's check on the other pair: a triggered check, queued (not polled yet).
    other = binding_request(core, controlling=True, tiebreaker=9, tid=b"O" * 12)
    assert core.on_request(0, ("10.0.0.3", 5000), other, 0.011) is not None
    assert core._triggered
    # The peer nominates the first pair.
    nomination = binding_request(
        core, controlling=True, tiebreaker=9, use_candidate=True, tid=b"N" * 12
    )
    assert core.on_request(0, ("10.0.0.1", 5000), nomination, 0.012) is not None
    assert core.selected is not None and core.selected.remote_address == ("10.0.0.1", 5000)
    assert core.state is ConnectionState.CONNECTED


# -- a nomination crossing our check asks a copy of it again (RFC 8445 §7.3.1.4) ---------------


def test_a_nomination_after_a_plain_check_crossed_ours_asks_another_copy() -> None:
    """RFC 8445 §7.3.1.4: a controlled agent's check is in flight; the peer's plain check
    crossed it (one copy asked, at twice its age), then the peer's nomination on the pair
    comes: another copy is asked at once, since the peer now waits for nothing but our
    check's success (a copy at each nomination, not once per transaction)."""
    core, check, _key = _checking(controlling=False)
    pair = check.pair
    plain = binding_request(core, controlling=True, tiebreaker=9, tid=b"P" * 12)
    assert core.on_request(0, pair.remote_address, plain, 0.01) is not None
    ((tid, _at),) = core.poll_resend()
    assert tid == check.transaction_id
    nomination = binding_request(
        core, controlling=True, tiebreaker=9, use_candidate=True, tid=b"N" * 12
    )
    assert core.on_request(0, pair.remote_address, nomination, 0.05) is not None
    ((tid, at),) = core.poll_resend()
    assert tid == check.transaction_id and at == pytest.approx(0.05)


def test_a_nomination_right_after_our_check_asks_its_copy_no_sooner_than_resend_min() -> None:
    """RFC 8445 §7.3.1.4: a nomination that crosses our check asks a copy of it at once, but
    no sooner than RESEND_MIN after the check went: a copy right behind the first would
    carry nothing new."""
    core, check, _key = _checking(controlling=False)
    nomination = binding_request(
        core, controlling=True, tiebreaker=9, use_candidate=True, tid=b"N" * 12
    )
    early = RESEND_MIN / 4
    assert core.on_request(0, check.pair.remote_address, nomination, early) is not None
    ((tid, at),) = core.poll_resend()
    assert tid == check.transaction_id
    assert at == pytest.approx(check.started + RESEND_MIN)


# -- a role switch ranks the pairs anew (RFC 8445 §7.2.5.1, §6.1.2.3) ---------------------------


def test_a_role_switch_recomputes_pair_priorities_with_unequal_candidates() -> None:
    """After a 487 (RFC 8445 §7.2.5.1) the agent is controlled, and each pair's priority is
    computed anew with the peer's candidate as G (§6.1.2.3): with unequal candidate
    priorities the number changes with the role."""
    net, a, _b = two_agents(b_hosts=(("10.0.0.2", 6000),), want=False, end_of_candidates=False)
    del net.endpoints["b"]
    core = a.core
    # A remote candidate ranked below ours.
    core.add_remote_candidate(make_candidate("10.0.0.4", 6000, local_pref=1000))
    core.want_connection(0.0)
    check = core.poll_check(0.0)
    assert check is not None and check.controlling
    assert core.remote is not None
    refusal: list[stun.Attribute] = [stun.ErrorCode(487, "Role Conflict")]
    key = stun.short_term_key(core.remote.pwd)
    reply = stun.decode(_reply(check, key, stun.MessageClass.ERROR, refusal))
    assert core.on_response(check, reply, check.destination, 0.01)
    assert not core.controlling
    assert any(p.local.priority != p.remote.priority for p in core.checklist)
    for pair in core.checklist:
        assert pair.priority == trice.ice.pair_priority(pair.remote.priority, pair.local.priority)


# -- giving way to a peer that ignores role conflicts (RFC 8445 §7.3.1.1, §6.1.1) -------------


def test_a_full_agent_never_gives_way_to_a_lite_peer_that_claims_control() -> None:
    """A full agent facing an ICE-lite peer controls (RFC 8445 §6.1.1): a lite peer that
    keeps claiming the controlling role gets 487s however long it goes on, past
    GIVE_WAY_AFTER too, and the full agent never gives way (else it would be controlled
    facing a lite agent, and nobody would nominate)."""
    _net, a, _b = two_agents(b_lite=True, want=False)
    core = a.core
    assert core.remote is not None and core.remote.lite and core.controlling
    times = (0.0, GIVE_WAY_AFTER + 1.0, GIVE_WAY_AFTER + 2.0, GIVE_WAY_AFTER + 3.0)
    for k, now in enumerate(times):
        request = binding_request(
            core, controlling=True, tiebreaker=2**63, tid=bytes([65 + k]) * 12
        )
        data = core.on_request(0, ("10.0.0.2", 6000), request, now)
        assert data is not None
        error = stun.decode(data).get(stun.ErrorCode)
        assert error is not None and error.code == 487
    assert core.controlling and core.role_switches == 0


def test_a_scaled_rto_above_rto_max_never_shrinks() -> None:
    """RFC 8445 §14.3: with many pairs the RTO is Ta times the pairs and may exceed rto_max;
    the RTO then starts at that value and doubles up to it (RFC 8489 §6.2.1), never
    shrinking to rto_max: the copies come no faster than the pacing allows."""
    schedule = check_schedule(Timing(), sends=4, rto=5.0)
    assert schedule == (0.0, 5.0, 10.0, 15.0, 20.0)


# -- an ICE restart starts the generation's counts afresh (RFC 8445 §9) ------------------------


def test_a_restart_forgets_the_401s_of_the_generation_before() -> None:
    """``checks_unauthorized`` counts this generation's 401s (what the shell's failure
    message blames on the credentials): an ICE restart (RFC 8445 §9), with new credentials
    on both sides, starts it at 0."""
    core, check, _key = _checking(controlling=True)
    refusal = stun.decode(
        _reply(check, None, stun.MessageClass.ERROR, [stun.ErrorCode(401, "Unauthorized")])
    )
    core.on_response(check, refusal, check.destination, 0.01)
    assert core.checks_unauthorized == 1
    core.restart(IceParameters("newufrag", "new-password-0123456789abc"), 0.02)
    assert core.checks_unauthorized == 0


def test_a_restart_forgets_the_487s_of_the_generation_before() -> None:
    """Giving way to a peer that ignores role conflicts counts from the first 487 of this
    generation: after an ICE restart (RFC 8445 §9), a peer's first two checks that claim
    our role get 487s (RFC 8445 §7.3.1.1), however long ago the 487s of before went."""
    _net, a, _b = two_agents(a_controlling=True, want=False)
    core = a.core
    source = ("10.0.0.2", 6000)
    old = binding_request(core, controlling=True, tiebreaker=1, tid=b"a" * 12)
    first = core.on_request(0, source, old, 0.0)
    assert first is not None
    refused = stun.decode(first).get(stun.ErrorCode)
    assert refused is not None
    assert refused.code == 487
    core.restart(IceParameters("newufrag", "new-password-0123456789abc"), 1.0)
    peer = IceParameters("peerufrag2", "peer-password-2-0123456789")
    core.set_remote(peer, 1.0)
    now = GIVE_WAY_AFTER + 2.0
    for k in range(2):
        request = binding_request(core, controlling=True, tiebreaker=1, tid=bytes([98 + k]) * 12)
        data = core.on_request(0, source, request, now + k * 0.01)
        assert data is not None
        error = stun.decode(data).get(stun.ErrorCode)
        assert error is not None and error.code == 487
    assert core.controlling and core.role_switches == 0


# -- the pair cap and the selected pair --------------------------------------------------------


def test_a_selected_pair_whose_renomination_failed_is_not_pruned() -> None:
    """A controlled agent selects the pair the peer nominated; a role conflict then makes it
    controlling, and it checks the selected pair again with USE-CANDIDATE
    (``_nominate_after_switch``), which the peer refuses (400): the pair fails, and stays
    selected (consent carries on).  Two candidates trickled past ``max_pairs=2`` do not
    take it out of the check list, and the peer's next check on its path finds it.  The
    cap pruned it (288df5c: a nominated pair once failed), and that check made a second
    pair for the path, not the selected one (the p41pass2 review)."""
    peer_address = ("10.0.0.1", 5000)
    net = Network()
    endpoint = net.add_endpoint("b", controlling=False, tiebreaker=1000, max_pairs=2)
    peer = net.add_endpoint("a", controlling=True, tiebreaker=5).core
    endpoint.add_host("10.0.0.2", 6000)
    core = endpoint.core
    core.set_remote(peer.local, 0.0)
    core.add_remote_candidate(
        Candidate.from_sdp("candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host")
    )
    core.want_connection(0.0)
    key = stun.short_term_key(peer.local.pwd)
    check = core.poll_check(0.0)
    assert check is not None and check.destination == peer_address
    assert core.on_response(check, stun.decode(_reply(check, key)), peer_address, 0.01)
    pair = check.pair
    nomination = binding_request(
        core, controlling=True, tiebreaker=5, use_candidate=True, tid=b"N" * 12
    )
    assert core.on_request(0, peer_address, nomination, 0.02) is not None
    assert core.selected is pair
    conflict = binding_request(core, controlling=False, tiebreaker=1, tid=b"C" * 12)
    assert core.on_request(0, peer_address, conflict, 0.03) is not None
    assert core.controlling
    again = core.poll_check(0.03)
    assert again is not None and again.pair is pair and again.nominating
    refused = _reply(again, key, stun.MessageClass.ERROR, [stun.ErrorCode(400)])
    assert core.on_response(again, stun.decode(refused), peer_address, 0.04)
    assert pair.state is PairState.FAILED and core.selected is pair
    for port in (5001, 5002):
        line = f"candidate:{port} 1 udp 2130706431 10.0.0.1 {port} typ host"
        core.add_remote_candidate(Candidate.from_sdp(line))
    assert core.selected is pair and pair in core.checklist
    later = binding_request(core, controlling=False, tiebreaker=1, tid=b"L" * 12)
    core.on_request(0, peer_address, later, 0.05)
    assert [p for p in core.checklist if p.remote_address == peer_address] == [pair]
