"""RFC 8445 §6.1.2 and RFC 6544 §6.2 rules of the check list (``CheckList``) that the
other check-list tests did not pin (found by a mutation review): the order among equal
valid pairs, frozen pairs as pending, passive ICE-TCP pairing, and the count of pairs
pruned unchecked."""

from __future__ import annotations

from trice.ice import Candidate, CandidateType, TcpType
from trice.ice._checklist import CheckList, PairState
from trice.ice._gathering import tcp_host_candidate

from core_harness import make_candidate


def test_best_valid_of_equals_is_the_first_in_priority_order() -> None:
    """Of valid pairs of equal priority, ``CheckList.best_valid`` picks the first in the
    check list's priority order (RFC 8445 §6.1.2.3, §8.1.1): the pair a peer that orders
    alike nominates too."""
    checklist = CheckList(max_pairs=100)
    remote = make_candidate("10.0.0.2", 6000)
    first = checklist.add(make_candidate("10.0.0.1", 5000), remote, 0, controlling=True)
    second = checklist.add(make_candidate("10.0.0.3", 5000), remote, 1, controlling=True)
    assert first is not None and second is not None
    assert first.priority == second.priority
    assert list(checklist) == [first, second]
    first.state = second.state = PairState.SUCCEEDED
    assert checklist.best_valid() is first


def test_a_frozen_pair_above_is_pending() -> None:
    """``CheckList.pending_above``: a frozen pair ranked above a valid one may still be
    unfrozen and succeed (RFC 8445 §6.1.2.6), so regular nomination (§8.1.1) waits for it;
    a failed one is no longer pending."""
    checklist = CheckList(max_pairs=100)
    local = make_candidate("10.0.0.1", 5000)
    low = checklist.add(
        local, make_candidate("10.0.0.2", 6001, local_pref=1000), 0, controlling=True
    )
    high = checklist.add(local, make_candidate("10.0.0.2", 6000), 0, controlling=True)
    assert low is not None and high is not None and high.priority > low.priority
    low.state = PairState.SUCCEEDED
    high.state = PairState.FROZEN
    assert checklist.pending_above(low.valid_priority, True)
    high.state = PairState.FAILED
    assert not checklist.pending_above(low.valid_priority, True)


def test_a_passive_candidate_pairs_only_with_a_learned_active_one() -> None:
    """RFC 6544 §6.2: a local passive ICE-TCP candidate opens no connection, so
    ``CheckList.pairable`` pairs it only with the peer-reflexive active candidate of a
    connection the peer opened, not with a signalled active host candidate (no check could
    go on that pair)."""
    passive = tcp_host_candidate(("10.0.0.1", 5001), TcpType.PASSIVE, 0)
    signalled = Candidate.from_sdp(
        "candidate:2 1 tcp 1015023870 10.0.0.2 9 typ host tcptype active"
    )
    learned = Candidate.from_sdp(
        "candidate:3 1 tcp 1845501695 10.0.0.2 40000 typ prflx tcptype active"
    )
    assert signalled.type is CandidateType.HOST
    assert not CheckList.pairable(passive, signalled)
    assert CheckList.pairable(passive, learned)


def test_a_pruned_pair_that_was_checked_is_not_counted_unchecked() -> None:
    """``CheckList.unchecked`` counts the pairs the cap (RFC 8445 §6.1.2.5) pruned before
    any check of theirs went (the shell's failure message tells how many were never
    tried): a failed pair that was checked, pruned to make room, is not one of them."""
    checklist = CheckList(max_pairs=1)
    local = make_candidate("10.0.0.1", 5000)
    tried = checklist.add(local, make_candidate("10.0.0.2", 6000), 0, controlling=True)
    assert tried is not None
    tried.checks_sent = 1
    tried.state = PairState.FAILED
    fresh = checklist.add(local, make_candidate("10.0.0.3", 6000), 0, controlling=True)
    assert fresh is not None and list(checklist) == [fresh]
    assert checklist.pruned == 1
    assert checklist.unchecked == 0
