"""The check list: pair formation, pruning, ordering, foundations and states (RFC 8445 §6.1.2)."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import hypothesis
import pytest
from hypothesis import strategies as st

import trice.ice._checklist as checklist_module
from trice._config import Nomination, Timing
from trice.ice import (
    Candidate,
    CandidateType,
    candidate_priority,
    compute_foundation,
    pair_priority,
)
from trice.ice._checklist import (
    INDEX_FROM,
    PAIR_TRANSITIONS,
    CheckList,
    Pair,
    PairState,
    compute_pair_priority,
)

from core_harness import Nat, make_candidate, two_agents

HOST, SRFLX, PRFLX, RELAY = (
    CandidateType.HOST,
    CandidateType.SRFLX,
    CandidateType.PRFLX,
    CandidateType.RELAY,
)


def cand(
    address: str,
    port: int,
    *,
    type: CandidateType = HOST,
    pref: int = 65535,
    component: int = 1,
    protocol: str = "udp",
    foundation: str | None = None,
) -> Candidate:
    return Candidate(
        foundation=foundation or compute_foundation(type, address, protocol),
        component=component,
        protocol=protocol,
        priority=candidate_priority(type, pref, component),
        address=address,
        port=port,
        type=type,
    )


L4 = cand("10.0.0.1", 5000)
L6 = cand("2001:db8::1", 5000)
R4 = cand("10.0.0.2", 6000)
R6 = cand("2001:db8::2", 6000)


# -- pair formation (RFC 8445 §6.1.2.2) ---------------------------------------------------------


def test_pairable_same_component_udp_family() -> None:
    assert CheckList.pairable(L4, R4)
    assert CheckList.pairable(L6, R6)
    # IPv6 link-local with link-local only (§6.1.2.2 MUST); fec0:: is not in fe80::/10.
    assert CheckList.pairable(cand("fe80::1", 5000), cand("FE80::2", 6000))
    assert CheckList.pairable(cand("fec0::1", 5000), R6)


@pytest.mark.parametrize(
    ("local", "remote"),
    [
        (L4, R6),
        (L6, R4),
        (L4, cand("10.0.0.2", 6000, component=2)),
        (L4, cand("10.0.0.2", 6000, protocol="tcp")),
        (cand("10.0.0.1", 5000, protocol="tcp"), R4),
        (L4, cand("f3e2a9b1-5c6d-4e7f-8a9b-0c1d2e3f4a5b.local", 6000)),
        (L6, cand("fe80::7", 6000)),
        (cand("febf::1", 5000), R6),
    ],
    ids=["v4-v6", "v6-v4", "component", "remote-tcp", "local-tcp", "mdns", "to-link", "from-link"],
)
def test_unpairable(local: Candidate, remote: Candidate) -> None:
    assert not CheckList.pairable(local, remote)
    checklist = CheckList(max_pairs=10)
    assert checklist.add(local, remote, 0, controlling=True) is None
    assert len(checklist) == 0


@pytest.mark.parametrize("name", ["peer.example.com", "F3E2A9B1.LOCAL"])
def test_host_names_are_never_paired(name: str) -> None:
    assert not CheckList.pairable(L4, cand(name, 6000))


@pytest.mark.parametrize(
    ("type", "nohost", "pairs"),
    [
        (HOST, False, True),
        (RELAY, False, True),
        (SRFLX, False, False),
        (PRFLX, False, False),
        (HOST, True, False),
        (RELAY, True, True),
        (SRFLX, True, True),
    ],
)
def test_local_pairable_types(type: CandidateType, nohost: bool, pairs: bool) -> None:
    candidate = cand("10.0.0.1", 5000, type=type)
    assert CheckList.is_local_pairable_type(candidate, nohost=nohost) is pairs


# -- priorities (RFC 8445 §6.1.2.3) -------------------------------------------------------------


def test_pair_priority_from_both_roles() -> None:
    local = cand("10.0.0.1", 5000, pref=100)
    remote = cand("10.0.0.2", 6000, pref=200)
    assert local.priority < remote.priority
    controlling = CheckList(max_pairs=10)
    controlled = CheckList(max_pairs=10)
    p1 = controlling.add(local, remote, 0, controlling=True)
    p2 = controlled.add(local, remote, 0, controlling=False)
    assert p1 is not None and p2 is not None
    # G is the controlling agent's candidate, D the controlled agent's.
    assert p1.priority == pair_priority(local.priority, remote.priority)
    assert p2.priority == pair_priority(remote.priority, local.priority)
    assert p1.priority != p2.priority
    # The two agents of a session compute the same number for the same pair.
    assert compute_pair_priority(local, remote, True) == compute_pair_priority(remote, local, False)


def test_pairs_sorted_by_priority() -> None:
    checklist = CheckList(max_pairs=10)
    locals_ = [cand("10.0.0.1", 5000 + i, pref=1000 * (i + 1)) for i in range(3)]
    remotes = [cand("10.0.0.2", 6000 + i, pref=500 * (i + 1)) for i in range(3)]
    for base, local in enumerate(locals_):
        for remote in remotes:
            checklist.add(local, remote, base, controlling=True)
    assert len(checklist) == 9
    priorities = [p.priority for p in checklist]
    assert priorities == sorted(priorities, reverse=True)
    assert len(set(priorities)) == 9
    top = next(iter(checklist))
    assert (top.local, top.remote) == (locals_[2], remotes[2])


def test_role_switch_recomputes_and_resorts() -> None:
    checklist = CheckList(max_pairs=10)
    # Local high, remote low on one pair; local low, remote high on the other, chosen so the
    # order flips with the role.
    la = cand("10.0.0.1", 5000, pref=60000)
    lb = cand("10.0.0.1", 5001, pref=10)
    ra = cand("10.0.0.2", 6000, pref=20)
    rb = cand("10.0.0.3", 6000, pref=50000)
    pa = checklist.add(la, ra, 0, controlling=True)
    pb = checklist.add(lb, rb, 1, controlling=True)
    assert pa is not None and pb is not None
    before = {id(p): p.priority for p in checklist}
    checklist.recompute_priorities(controlling=False)
    for pair in checklist:
        assert pair.priority == pair_priority(pair.remote.priority, pair.local.priority)
        assert pair.priority != before[id(pair)]
    priorities = [p.priority for p in checklist]
    assert priorities == sorted(priorities, reverse=True)
    checklist.recompute_priorities(controlling=True)
    assert {id(p): p.priority for p in checklist} == before


def test_pair_priority_tiebreak_bit() -> None:
    # Same MIN, so the last bit decides: G > D gives +1.
    assert pair_priority(10, 5) == pair_priority(5, 10) + 1


# -- redundancy (RFC 8445 §6.1.2.4) -------------------------------------------------------------


def test_redundant_pair_keeps_higher_priority() -> None:
    checklist = CheckList(max_pairs=10)
    low = cand("10.0.0.1", 5000, type=RELAY)
    high = cand("10.0.0.1", 5000, type=HOST)
    first = checklist.add(low, R4, 0, controlling=True)
    second = checklist.add(high, R4, 0, controlling=True)
    assert first is not None and second is first
    assert len(checklist) == 1
    assert first.local is high
    assert first.priority == pair_priority(high.priority, R4.priority)
    assert first.foundation == f"{high.foundation}:{R4.foundation}"
    # A lower-priority redundant pair changes nothing.
    third = checklist.add(low, R4, 0, controlling=True)
    assert third is first and first.local is high and len(checklist) == 1


def test_redundant_pair_does_not_replace_a_pair_in_use() -> None:
    checklist = CheckList(max_pairs=10)
    low = cand("10.0.0.1", 5000, type=RELAY)
    high = cand("10.0.0.1", 5000, type=HOST)
    pair = checklist.add(low, R4, 0, controlling=True)
    assert pair is not None
    pair.state = PairState.IN_PROGRESS
    assert checklist.add(high, R4, 0, controlling=True) is pair
    assert pair.local is low


def test_same_remote_from_other_base_is_not_redundant() -> None:
    checklist = CheckList(max_pairs=10)
    checklist.add(cand("10.0.0.1", 5000), R4, 0, controlling=True)
    checklist.add(cand("10.0.0.1", 5001), R4, 1, controlling=True)
    assert len(checklist) == 2
    assert checklist.find(0, R4.transport_address) is not checklist.find(1, R4.transport_address)
    assert checklist.find(2, R4.transport_address) is None


# -- the pair cap (RFC 8445 §6.1.2.5) -----------------------------------------------------------


def test_pair_cap_prunes_lowest_priority() -> None:
    checklist = CheckList(max_pairs=3)
    remotes = [cand(f"10.0.1.{i}", 6000, pref=1000 * i) for i in range(1, 5)]
    for remote in remotes[:3]:
        assert checklist.add(L4, remote, 0, controlling=True) is not None
    # A better pair pushes out the worst one.
    assert checklist.add(L4, remotes[3], 0, controlling=True) is not None
    assert len(checklist) == 3
    assert checklist.pruned == 1
    assert {p.remote for p in checklist} == set(remotes[1:])
    assert checklist.find(0, remotes[0].transport_address) is None
    # A pair worse than all is pruned at once, and add() says so.
    worst = cand("10.0.2.1", 6000, pref=1)
    assert checklist.add(L4, worst, 0, controlling=True) is None
    assert len(checklist) == 3
    assert checklist.pruned == 2


def test_pair_cap_never_prunes_pairs_in_use() -> None:
    checklist = CheckList(max_pairs=2)
    pairs = [
        checklist.add(L4, cand(f"10.0.1.{i}", 6000, pref=i), 0, controlling=True) for i in (1, 2)
    ]
    for pair in pairs:
        assert pair is not None
        pair.state = PairState.SUCCEEDED
    # Only pairs not yet checked are pruned: here the new one, although its priority is higher.
    assert checklist.add(L4, cand("10.0.1.9", 6000, pref=9), 0, controlling=True) is None
    assert list(checklist) == sorted(pairs, key=lambda p: -p.priority if p else 0)
    assert checklist.pruned == 1


def test_pair_cap_keeps_a_pair_the_peer_checks_even_past_the_cap() -> None:
    """A pair formed for the peer's check (``keep``) is never the one pruned (RFC 8445
    §7.3.1.4: the agent adds it): with every other pair in use, the list goes past the cap
    by it, rather than answer the check with success and keep no pair."""
    checklist = CheckList(max_pairs=2)
    for i in (1, 2):
        pair = checklist.add(L4, cand(f"10.0.1.{i}", 6000, pref=100 + i), 0, controlling=True)
        assert pair is not None
        pair.state = PairState.IN_PROGRESS
    prflx = cand("198.51.100.7", 4000, type=CandidateType.PRFLX, pref=1)
    kept = checklist.add(L4, prflx, 0, controlling=True, keep=True)
    assert kept is not None and kept in checklist
    assert len(checklist) == 3 and checklist.pruned == 0


def test_pair_cap_prunes_failed_pairs_before_waiting_ones() -> None:
    """Failed pairs are done with: they go before pairs still to be checked, whatever their
    priority."""
    checklist = CheckList(max_pairs=2)
    failed = checklist.add(L4, cand("10.0.1.9", 6000, pref=900), 0, controlling=True)
    waiting = checklist.add(L4, cand("10.0.1.1", 6000, pref=100), 0, controlling=True)
    assert failed is not None and waiting is not None
    failed.state = PairState.FAILED
    assert checklist.add(L4, cand("10.0.1.5", 6000, pref=500), 0, controlling=True) is not None
    assert failed not in checklist and waiting in checklist
    assert checklist.pruned == 1


def test_pair_cap_spares_only_the_best_live_pair_the_peer_nominated() -> None:
    """A pair whose nomination the controlled agent answered before its own check of it
    succeeded (``nominate_on_success``): the peer holds it nominated, and selects the best
    it nominated.  The best such pair not failed is never pruned; other flagged pairs, and
    a failed flagged one, are pruned as any (the p40pass1 review: a failed one was kept
    for ever in place of pairs that may work, and an aggressive peer's nominations from
    many sources grew the list past the cap without end)."""
    checklist = CheckList(max_pairs=3)
    flagged = [
        checklist.add(L4, cand(f"10.0.1.{i}", 6000, pref=i), 0, controlling=False)
        for i in (1, 2, 3)
    ]
    for pair in flagged:
        assert pair is not None
        pair.nominate_on_success = True
    dead, live, best = flagged
    assert best is not None
    best.state = PairState.FAILED
    for i in (11, 12):
        checklist.add(L4, cand(f"10.0.2.{i}", 6000, pref=100 + i), 0, controlling=False)
    assert best not in checklist and dead not in checklist
    assert live in checklist and len(checklist) == 3
    for i in range(20, 40):  # (each past the cap: the live nominee stays, the list within)
        checklist.add(L4, cand(f"10.0.3.{i}", 6000, pref=100 + i), 0, controlling=False)
    assert live in checklist and len(checklist) == 3


def test_many_pairs_are_indexed_and_found_alike() -> None:
    """Past INDEX_FROM pairs the list indexes them (a short one scans): finding, redundancy
    and pruning answer the same either way."""
    checklist = CheckList(max_pairs=INDEX_FROM + 3)
    local = cand("10.0.0.1", 5000, pref=1000)
    remotes = [cand(f"10.0.3.{i}", 6000 + i, pref=100 * i) for i in range(1, INDEX_FROM + 5)]
    pairs = []
    for count, remote in enumerate(remotes[: INDEX_FROM + 3], start=1):
        pair = checklist.add(local, remote, 0, controlling=True)
        assert pair is not None
        pairs.append(pair)
        assert (checklist._index is not None) == (count > INDEX_FROM)
        for known, other in zip(remotes, pairs, strict=False):
            assert checklist.find(0, known.transport_address) is other
            assert checklist.find(1, known.transport_address) is None
    # A pair worse than all is pruned at once.
    assert checklist.add(local, cand("10.0.3.99", 7000, pref=1), 0, controlling=True) is None
    # A redundant pair found through the index: the better local candidate takes its place.
    assert checklist.add(L4, remotes[0], 0, controlling=True) is pairs[0]
    assert pairs[0].local is L4
    # Pruning drops the lowest pair from the index too.
    assert list(checklist)[-1] is pairs[0]
    assert checklist.add(local, remotes[-1], 0, controlling=True) is not None
    assert len(checklist) == INDEX_FROM + 3
    assert checklist.find(0, remotes[0].transport_address) is None
    assert checklist.find(0, remotes[-1].transport_address) is not None
    assert checklist._index is not None and len(checklist._index) == len(checklist)
    assert list(checklist) == sorted(checklist, key=lambda p: -p.priority)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    st.integers(min_value=1, max_value=12),
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=6),  # the remote's preference (ties share one)
            st.sampled_from(["add", "keep", "fail", "succeed", "nominate", "check"]),
            st.integers(min_value=0, max_value=40),  # which pair a state change is made to
        ),
        max_size=60,
    ),
)
def test_the_list_orders_and_prunes_as_sorting_and_dropping_the_lowest_would(
    cap: int, steps: list[tuple[int, str, int]]
) -> None:
    """Against a model of the list (every pair appended and the whole list sorted, stably;
    past the cap, failed pairs dropped lowest first, then frozen and waiting ones, never a
    nominated one that has not failed, nor the pair a check asks for): the same pairs, in
    the same order, the same count pruned and the same answer from ``add``, whatever the
    ties and states.  (The list inserts a pair where it goes and stops pruning once within
    the cap.)"""
    checklist = CheckList(max_pairs=cap)
    model: list[Pair] = []
    pruned = 0
    for n, (pref, action, which) in enumerate(steps):
        if action in ("add", "keep"):
            remote = cand(f"10.0.5.{n + 1}", 6000, pref=pref * 100)
            added = checklist.add(L4, remote, 0, controlling=True, keep=action == "keep")
            new = checklist.find(0, remote.transport_address) or added
            if new is None:  # (pruned at once: the model forms the same pair to compare)
                new = Pair(L4, remote, 0, compute_pair_priority(L4, remote, True))
            model = sorted([*model, new], key=lambda p: p.priority, reverse=True)
            for states in ((PairState.FAILED,), (PairState.FROZEN, PairState.WAITING)):
                for pair in reversed(list(model)):
                    if len(model) <= cap:
                        break
                    if (pair.nominated and pair.state is not PairState.FAILED) or (
                        pair.state not in states
                    ):
                        continue
                    if action == "keep" and pair is new:
                        continue
                    model.remove(pair)
                    pruned += 1
            assert (added is None) is (new not in model)
        elif model:
            pair = model[which % len(model)]
            if action == "fail":
                pair.state = PairState.FAILED
            elif action == "succeed":
                pair.state = PairState.SUCCEEDED
            elif action == "nominate":
                pair.nominated = True
            else:
                pair.state = PairState.IN_PROGRESS
        assert list(checklist) == model
        assert checklist.pruned == pruned


def test_sorting_keeps_the_order_of_equal_priorities() -> None:
    """Pairs of one priority stay in the order they were formed (the sort is stable)."""
    checklist = CheckList(max_pairs=10)
    remotes = [cand("10.0.4.1", 6000 + i, foundation=f"f{i}") for i in range(4)]
    pairs = [checklist.add(L4, r, 0, controlling=True) for r in remotes]
    assert list(checklist) == pairs
    checklist.recompute_priorities(False)
    assert list(checklist) == pairs


# -- states and foundations (RFC 8445 §6.1.2.6, §6.1.4.2, §7.2.5.3.3) ---------------------------


def same_foundation_pairs(checklist: CheckList) -> list[Pair]:
    """Three pairs with one foundation (one local IP, one remote IP, three remote ports)."""
    out = []
    for i, pref in enumerate((300, 200, 100)):
        pair = checklist.add(L4, cand("10.0.0.2", 6000 + i, pref=pref), 0, controlling=True)
        assert pair is not None
        out.append(pair)
    return out


def test_initial_states_waiting_per_foundation() -> None:
    checklist = CheckList(max_pairs=10)
    same = same_foundation_pairs(checklist)
    other = checklist.add(L4, cand("10.0.0.3", 6000, pref=50), 0, controlling=True)
    assert other is not None
    assert len({p.foundation for p in same}) == 1
    assert other.foundation != same[0].foundation
    assert [p.state for p in same] == [PairState.WAITING, PairState.FROZEN, PairState.FROZEN]
    assert other.state is PairState.WAITING


def test_unfreeze_foundation() -> None:
    checklist = CheckList(max_pairs=10)
    same = same_foundation_pairs(checklist)
    other_remote = cand("10.0.0.3", 6000)
    other = checklist.add(cand("10.0.0.1", 5001), other_remote, 1, controlling=True)
    extra = checklist.add(cand("10.0.0.1", 5001), cand("10.0.0.3", 6001), 1, controlling=True)
    assert other is not None and extra is not None
    assert extra.state is PairState.FROZEN
    same[0].state = PairState.SUCCEEDED
    checklist.unfreeze_foundation(same[0].foundation)
    assert [p.state for p in same] == [PairState.SUCCEEDED, PairState.WAITING, PairState.WAITING]
    assert extra.state is PairState.FROZEN


def test_a_new_pair_of_a_foundation_that_succeeded_waits() -> None:
    """RFC 8838 §12, rule 2: a pair formed after a pair of its foundation succeeded is
    waiting (the success would have unfrozen it, had it been there), not frozen behind
    every other waiting pair; one of a foundation with no success, below its best, is
    frozen."""
    checklist = CheckList(max_pairs=10)
    first = checklist.add(L4, cand("10.0.0.2", 6000, pref=60000), 0, controlling=True)
    assert first is not None and first.state is PairState.WAITING
    below = checklist.add(L4, cand("10.0.0.2", 6001, pref=100), 0, controlling=True)
    assert below is not None and below.foundation == first.foundation
    assert below.state is PairState.FROZEN
    first.state = PairState.SUCCEEDED
    checklist.unfreeze_foundation(first.foundation)
    later = checklist.add(L4, cand("10.0.0.2", 6002, pref=50), 0, controlling=True)
    assert later is not None and later.foundation == first.foundation
    assert later.state is PairState.WAITING


def test_next_ordinary_prefers_waiting() -> None:
    checklist = CheckList(max_pairs=10)
    same = same_foundation_pairs(checklist)
    low = checklist.add(L4, cand("10.0.0.3", 6000, pref=1), 0, controlling=True)
    assert low is not None and low.priority < same[2].priority
    assert checklist.next_ordinary() is same[0]
    same[0].state = PairState.IN_PROGRESS
    # The low-priority waiting pair goes before higher-priority frozen ones.
    assert checklist.next_ordinary() is low
    low.state = PairState.IN_PROGRESS
    # Nothing waiting, and every frozen pair's foundation is in progress.
    assert checklist.next_ordinary() is None
    assert same[1].state is PairState.FROZEN


def test_next_ordinary_unfreezes_highest_frozen_of_idle_foundation() -> None:
    checklist = CheckList(max_pairs=10)
    same = same_foundation_pairs(checklist)
    same[0].state = PairState.FAILED
    chosen = checklist.next_ordinary()
    assert chosen is same[1]
    assert chosen.state is PairState.WAITING
    assert same[2].state is PairState.FROZEN
    chosen.state = PairState.IN_PROGRESS
    assert checklist.next_ordinary() is None
    chosen.state = PairState.SUCCEEDED
    assert checklist.next_ordinary() is same[2]


def test_next_ordinary_empty() -> None:
    assert CheckList(max_pairs=10).next_ordinary() is None


def test_the_best_valid_pair_goes_by_the_candidate_the_peer_saw() -> None:
    """RFC 8445 §7.2.5.3.2: a valid pair whose local candidate is the peer-reflexive one the
    peer saw ranks by that candidate's priority, for either role, not by the checked pair's;
    so a direct path below it in the check list comes first once both succeeded."""
    checklist = CheckList(max_pairs=10)
    natted = checklist.add(cand("10.0.0.1", 5000, pref=60000), R4, 0, controlling=True)
    direct = checklist.add(cand("10.0.0.3", 5000, pref=50000), R4, 1, controlling=True)
    assert natted is not None and direct is not None
    assert natted.priority > direct.priority
    seen = cand("203.0.113.9", 40000, type=PRFLX, pref=60000)
    for pair in (natted, direct):
        pair.state = PairState.SUCCEEDED
    natted.valid_local = seen
    for controlling in (True, False, True):
        checklist.recompute_priorities(controlling=controlling)
        assert natted.valid_priority == compute_pair_priority(seen, R4, controlling)
        assert direct.valid_priority == direct.priority
        assert natted.valid_priority < direct.valid_priority < natted.priority
        assert checklist.best_valid() is direct
    direct.state = PairState.FAILED
    assert checklist.best_valid() is natted


def test_best_valid_pending_above_all_failed() -> None:
    checklist = CheckList(max_pairs=10)
    assert not checklist.all_failed()
    pairs = [
        checklist.add(L4, cand(f"10.0.1.{i}", 6000, pref=100 * i), 0, controlling=True)
        for i in (3, 2, 1)
    ]
    hi, mid, lo = (p for p in pairs if p is not None)
    assert checklist.best_valid() is None
    lo.state = PairState.SUCCEEDED
    assert checklist.best_valid() is lo
    assert checklist.pending_above(lo.priority, True)
    hi.state = PairState.FAILED
    mid.state = PairState.SUCCEEDED
    assert checklist.best_valid() is mid
    assert not checklist.pending_above(mid.priority, True)
    assert not checklist.all_failed()
    for pair in (hi, mid, lo):
        pair.state = PairState.FAILED
    assert checklist.all_failed()
    assert checklist.best_valid() is None


# -- every pair-state change is in the table ------------------------------------------------------


class _TracedPair(Pair):
    """A pair that records each change of its state (the check list makes these when the
    module's ``Pair`` is this class)."""

    __slots__ = ()
    changes: ClassVar[set[tuple[PairState, PairState]]] = set()

    @property
    def state(self) -> PairState:
        return _STATE_SLOT.__get__(self, Pair)  # type: ignore[no-any-return]

    @state.setter
    def state(self, value: PairState) -> None:
        try:
            old = _STATE_SLOT.__get__(self, Pair)
        except AttributeError:  # (the first state, set as the pair is made)
            old = None
        if old is not None and old is not value:
            _TracedPair.changes.add((old, value))
        _STATE_SLOT.__set__(self, value)


_STATE_SLOT: Any = Pair.__dict__["state"]


def _drive(rng: random.Random) -> None:
    """One run of two cores in virtual time, drawn from ``rng``: lite or full, NAT or none,
    either nomination, peer candidates that share a foundation signalled in any order,
    loss, a role conflict, a lost socket, a restart, and checks that fail before the peer's
    come."""
    lite = rng.random() < 0.2
    late_peer = rng.random() < 0.2
    timing = Timing(failed_timeout=8.0)
    if late_peer:  # (a's checks fail within 0.7 s, and b's arrive 1 s after they went)
        timing = Timing(rto=0.1, rto_max=0.2, max_binding_requests=3, failed_timeout=8.0)
    net, a, b = two_agents(
        nomination=rng.choice(list(Nomination)),
        a_hosts=[(f"10.0.{k}.1", 5000) for k in range(rng.randint(1, 3))],
        b_hosts=[],
        b_lite=lite,
        b_controlling=not lite and rng.random() < 0.3,
        a_nat=Nat("203.0.113.5") if rng.random() < 0.3 else None,
        timing=timing,
        latency=(lambda packet: 1.0 if packet.sender == "b" else 0.01) if late_peer else 0.01,
        exchange=False,
    )
    for k in range(rng.randint(1, 3)):  # (one foundation: the first pair of it waits)
        b.add_host("10.1.0.2", 6000 + k, local_pref=rng.randint(1, 65535))
    for k in range(1, rng.randint(1, 3)):
        b.add_host(f"10.1.{k}.2", 6000)
    rng.shuffle(b.signalled)
    net.exchange(a, b)
    if late_peer:
        rule = net.drop(lambda packet: packet.sender == "a" and packet.is_request)
    else:
        loss = rng.random() * 0.5
        rule = net.drop(lambda _packet: rng.random() < loss)
    net.run_for(rng.random() * 2)
    if rng.random() < 0.5:
        net.loss_rules.remove(rule)
    if rng.random() < 0.3:
        a.core.transport_lost(0, net.now)
    if not lite and rng.random() < 0.3:
        net.run_for(1.0)
        a.restart(net.now)
        b.restart(net.now)
        net.exchange(a, b)
    net.run_for(15.0)


def _lite_pair_below_a_failed_one() -> None:
    """An ICE-lite agent whose first pair failed with its socket: the peer's check on
    another pair of that foundation forms it frozen (the failed one ranks above it, and
    none succeeded), and proves it (``frozen -> succeeded``, rare in the drawn runs)."""
    net, _a, b = two_agents(
        a_hosts=[("10.0.0.1", 5000), ("10.0.0.1", 5001)],
        b_hosts=[("10.1.0.2", 6000), ("10.1.0.2", 6001)],
        b_lite=True,
    )
    assert net.run_until(lambda: len(b.core.checklist) > 0, max_time=1.0)
    (first,) = list(b.core.checklist)
    b.core.transport_lost(first.base, net.now)
    gone = b.bases[first.base]
    net.drop(lambda packet: packet.dst == gone)
    net.run_for(20.0)


def test_every_change_of_a_pairs_state_is_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hundred drawn runs of two cores: each pair-state change they make is one that
    ``PAIR_TRANSITIONS`` (which the design page draws) lists, and each one it lists is made."""
    monkeypatch.setattr(checklist_module, "Pair", _TracedPair)
    _TracedPair.changes = set()
    rng = random.Random(8445)
    for _ in range(200):
        _drive(rng)
    _lite_pair_below_a_failed_one()
    table = {(old, new) for old, news in PAIR_TRANSITIONS.items() for new in news}
    assert _TracedPair.changes - table == set()
    assert table - _TracedPair.changes == set()


@pytest.mark.parametrize(
    ("local", "remote", "pairs"),
    [
        ("169.254.7.7", "192.168.77.2", True),
        ("10.9.9.9", "169.254.8.8", True),
        ("fe80::1", "2001:db8::2", False),
        ("2001:db8::1", "fe80::2", False),
        ("fe80::1", "fe80::2", True),
    ],
)
def test_only_an_ipv6_link_local_address_pairs_with_link_local_ones_alone(
    local: str, remote: str, pairs: bool
) -> None:
    """RFC 8445 §6.1.2.2: an IPv6 link-local address pairs only with a link-local one.  An
    IPv4 one (169.254/16) pairs with any: a zeroconf host reaches a host that DHCP
    numbered on its link (RFC 3927 §2.6.2), as Pion and browsers pair them."""
    assert CheckList.pairable(make_candidate(local, 5000), make_candidate(remote, 6000)) is pairs
