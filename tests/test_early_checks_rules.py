"""Rules of the pure core (``AgentCore``) about checks that come before the peer's
parameters, early nominations, an ICE-lite agent nominated early or at once, ICE restarts,
and the data window of the pair of before, that the other core tests did not pin (found by
a mutation review; each test here kills a mutant the rest of the suite let through).  What
a check naming another ufrag (a forked offer's other answerer) taught goes once the
parameters come, and only that: the peer's own candidates, pairs and nominations stay, and
a fork's nomination, or one of the generation before a restart, is not the peer's."""

from __future__ import annotations

import pytest
from test_core import FAST, _restart, _run_to_failure, binding_request, last_consent

from trice import stun
from trice.ice import Candidate, CandidateType
from trice.ice._checklist import PairState
from trice.ice._core import IceParameters
from trice.ice._events import ConnectionState, ConnectionStateChanged

from core_harness import Address, Endpoint, Network, connected, make_candidate, two_agents

#: The end of the failure's reason when our check of the peer's pair worked but the peer
#: (controlling) nominated nothing of this generation.
NOMINATED_NONE = "though 1 pair worked: the controlling peer nominated none"


# -- what a check naming another ufrag taught before the parameters --------------------------


def test_a_signalled_candidate_where_only_a_misnamed_check_came_first_stays() -> None:
    """Before the peer's parameters, a check naming another ufrag (a fork's) comes from the
    address of a host candidate the peer then signals (held, as the parameters are not
    there yet).  Once they come, what the misnamed check taught goes only if it is still a
    peer-reflexive candidate: the signalled host candidate, and its pair, stay, and are
    checked.  (Mutant: the ``candidate.type is _PRFLX`` condition of ``_forget_misnamed``
    dropped, and the host candidate went.)"""
    _net, a, b = two_agents(want=False, exchange=False)
    core = b.core
    peer = a.bases[0]
    request = binding_request(core, sender_ufrag="fork", controlling=True, tid=b"F" * 12)
    assert core.on_request(0, peer, request, 0.0) is not None
    core.add_remote_candidate(make_candidate(peer[0], peer[1]))
    core.set_remote(a.core.local, 0.01)
    assert [(c.transport_address, c.type) for c in core.remote_candidates] == [
        (peer, CandidateType.HOST)
    ]
    assert [p.remote_address for p in core.checklist] == [peer]
    assert core.prflx_dropped == 0
    check = core.poll_check(0.01)
    assert check is not None and check.destination == peer
    assert core.state is ConnectionState.CHECKING


def test_an_address_a_check_naming_the_peer_taught_stays_after_a_misnamed_one() -> None:
    """Before the peer's parameters, two checks come from one address: the first names
    another ufrag, the second the peer's (the parameters then bring it).  The address was
    taught by a check that named the peer: its peer-reflexive candidate and its pair stay.
    (Mutant: one ufrag kept per address, ``len(ufrags) < 1``: only the first was kept, and
    the peer's candidate dropped.)"""
    _net, a, b = two_agents(want=False, exchange=False)
    core = b.core
    source = ("10.0.0.1", 5000)
    for n, ufrag in enumerate(("fork", a.core.local.ufrag)):
        request = binding_request(core, sender_ufrag=ufrag, controlling=True, tid=bytes([n]) * 12)
        assert core.on_request(0, source, request, 0.0) is not None
    core.set_remote(a.core.local, 0.01)
    assert [c.transport_address for c in core.remote_candidates] == [source]
    assert [p.remote_address for p in core.checklist] == [source]
    assert core.prflx_dropped == 0


# -- which nominations count: the peer's, of this generation ----------------------------------


def test_only_a_forks_early_nomination_says_the_peer_nominated_none() -> None:
    """Before the peer's parameters, a fork (another answerer, naming its own ufrag)
    nominates, and the peer checks without nominating.  The parameters come, our check of
    the peer's pair works, nothing is nominated, and the agent fails: the reason says the
    controlling peer nominated none (the fork's nomination is not the peer's).  (Mutants:
    ``ufrag in nominators`` dropped in ``_forget_misnamed``; an early nomination counted
    at once, whatever ufrag it named.  Both said the peer nominated a pair that did not
    pass.)"""
    _net, a, b = two_agents(want=False, exchange=False, timing=FAST)
    core, ufrag = b.core, a.core.local.ufrag
    peer, fork = ("10.0.0.1", 5000), ("10.0.0.9", 5000)
    for n, (source, named, nominate) in enumerate(((fork, "fork", True), (peer, ufrag, False))):
        request = binding_request(
            core, sender_ufrag=named, controlling=True, use_candidate=nominate, tid=bytes([n]) * 12
        )
        assert core.on_request(0, source, request, 0.0) is not None
    core.set_remote(a.core.local, 0.01)
    core.add_remote_candidate(None)
    assert core.prflx_dropped == 1
    _run_to_failure(core, peer, stun.short_term_key(a.core.local.pwd), 0.01)
    assert core.no_pair_reason().endswith(NOMINATED_NONE)


def test_an_early_nomination_of_the_generation_before_a_restart_does_not_count() -> None:
    """Before the peer's first parameters, a check naming the peer's ufrag ``P``
    nominates; then this agent restarts (new local credentials), and the peer's parameters
    (ufrag ``P``) come after.  This generation's checks nominate nothing: the failure's
    reason says the peer nominated none.  (Mutant: ``restart`` kept ``_nominators``, and
    counted the nomination of the generation before.)"""
    _net, a, b = two_agents(want=False, exchange=False, timing=FAST)
    core, ufrag = b.core, a.core.local.ufrag
    peer = ("10.0.0.1", 5000)
    request = binding_request(
        core, sender_ufrag=ufrag, controlling=True, use_candidate=True, tid=b"N" * 12
    )
    assert core.on_request(0, peer, request, 0.0) is not None
    core.restart(IceParameters("brestart", "r" * 22), 0.001)
    request = binding_request(core, sender_ufrag=ufrag, controlling=True, tid=b"M" * 12)
    assert core.on_request(0, peer, request, 0.002) is not None
    core.set_remote(a.core.local, 0.01)
    core.add_remote_candidate(None)
    _run_to_failure(core, peer, stun.short_term_key(a.core.local.pwd), 0.01)
    assert core.no_pair_reason().endswith(NOMINATED_NONE)


def test_a_nomination_of_the_generation_before_a_restart_does_not_count() -> None:
    """The peer nominates (its parameters known), then this agent restarts; in the new
    generation the peer's checks nominate nothing, our check works, and the agent fails:
    the reason says the controlling peer nominated none.  (Mutant: ``restart`` kept
    ``_peer_nominated``, and said the peer nominated a pair that did not pass.)"""
    _net, a, b = two_agents(want=False, timing=FAST)
    core = b.core
    peer = a.bases[0]
    request = binding_request(
        core, sender_ufrag=a.core.local.ufrag, controlling=True, use_candidate=True
    )
    assert core.on_request(0, peer, request, 0.0) is not None
    core.restart(IceParameters("brestart", "r" * 22), 0.001)
    fresh = IceParameters("arestart", "s" * 22)
    core.set_remote(fresh, 0.002)
    core.add_remote_candidate(make_candidate(peer[0], peer[1]))
    core.add_remote_candidate(None)
    _run_to_failure(core, peer, stun.short_term_key(fresh.pwd), 0.002)
    assert core.no_pair_reason().endswith(NOMINATED_NONE)


# -- an ICE-lite agent nominated early, or at once (RFC 8445 §8.1.1, §2.5) --------------------


def test_a_lite_agent_does_not_select_an_early_nominated_pair_that_failed() -> None:
    """An ICE-lite agent is nominated before the peer's parameters come, and the pair's
    path is then lost (``path_lost``: its ICE-TCP connection closed, say): the pair failed.
    When the parameters come, the agent selects nothing (no pair the peer nominated
    works), and does not complete.  (Mutant: ``p.state is _PAIR_SUCCEEDED`` dropped in
    ``_forget_misnamed``, and the failed pair was selected.)"""
    _net, a, b = two_agents(b_lite=True, want=False, exchange=False)
    core, ufrag = b.core, a.core.local.ufrag
    peer = a.bases[0]
    request = binding_request(
        core, sender_ufrag=ufrag, controlling=True, use_candidate=True, tid=b"L" * 12
    )
    assert core.on_request(0, peer, request, 0.0) is not None
    core.path_lost(0, peer, 0.001)
    assert [p.state for p in core.checklist] == [PairState.FAILED]
    core.set_remote(a.core.local, 0.01)
    assert core.selected is None
    assert core.state is not ConnectionState.COMPLETED


def test_a_lite_agent_nominated_early_on_two_pairs_selects_the_best() -> None:
    """Before the peer's parameters, the peer nominates two pairs of an ICE-lite agent, the
    second of lower priority.  When the parameters come, the agent selects the best pair
    the peer nominated (RFC 8445 §8.1.1: the highest-priority nominated pair).  (Mutant:
    ``min`` for ``max`` in ``_forget_misnamed``, and the worse was selected.)"""
    _net, a, b = two_agents(b_lite=True, want=False, exchange=False)
    core, ufrag = b.core, a.core.local.ufrag
    best, worse = ("10.0.0.1", 5000), ("10.0.0.1", 5001)
    for n, (source, priority) in enumerate(((best, 1_845_501_695), (worse, 1_000_000))):
        request = binding_request(
            core,
            sender_ufrag=ufrag,
            controlling=True,
            use_candidate=True,
            priority=priority,
            tid=bytes([n]) * 12,
        )
        assert core.on_request(0, source, request, 0.0) is not None
    core.set_remote(a.core.local, 0.01)
    selected = core.selected
    assert selected is not None and selected.remote_address == best


def test_a_lite_agent_nominated_at_once_goes_by_way_of_checking() -> None:
    """An ICE-lite agent whose peer's parameters are known is nominated by the peer's first
    check: its state goes new -> checking -> connected -> completed (RFC 8445 §2.5's
    states in order; an application that waits for checking sees it).  (Mutant: the move
    to checking dropped from ``_select_nominated``, and the state went from new to
    connected.)"""
    _net, a, b = two_agents(b_lite=True, want=False)
    core = b.core
    core.drain_events()
    request = binding_request(
        core, sender_ufrag=a.core.local.ufrag, controlling=True, use_candidate=True
    )
    assert core.on_request(0, a.bases[0], request, 0.0) is not None
    states = [e.state for e in core.drain_events() if isinstance(e, ConnectionStateChanged)]
    assert states == [
        ConnectionState.CHECKING,
        ConnectionState.CONNECTED,
        ConnectionState.COMPLETED,
    ]


# -- restarts and the data window of the pair of before (RFC 8445 §9, RFC 7675) ---------------


def _moved_over_a_restart() -> tuple[Network, Endpoint, Address, Candidate, float]:
    """a and b connect; b moves to a new address (10.0.0.3:6001, its old host lost) over an
    ICE restart, signalling only the new one, and a new pair is selected.  The network, a,
    b's old address, a's remote candidate of it, and when a last had consent on the pair
    of before."""
    net, a, b = two_agents()
    assert net.run_until(connected(a, b), max_time=1.0)
    old_address = b.bases[0]
    (old_candidate,) = [c for c in a.core.remote_candidates if c.transport_address == old_address]
    consent = last_consent(net, a)
    _restart(net, a, b)
    b.core.transport_lost(0, net.now)
    b.signalled.clear()
    b.add_host("10.0.0.3", 6001)
    net.exchange(a, b, end_of_candidates=False)
    assert net.run_until(connected(a, b), max_time=net.now + 1.0)
    return net, a, old_address, old_candidate, consent


def test_an_old_address_signalled_anew_after_the_new_pair_still_ends_its_data_window() -> None:
    """As test_core's test_a_peer_address_not_signalled_anew_..., b moves to a new address
    over an ICE restart and a new pair is selected; then b's old host candidate is
    trickled anew (late).  The old address is a remote candidate again, but the pair of
    before's data window still ends when its consent would have (``previous_remote`` is
    ``None`` then), not before.  (Mutants: ``_add_remote`` clearing ``_previous_until``
    with ``_stale`` left the window open for good; ``previous_remote`` giving ``_stale``
    closed it at once.)"""
    net, a, old_address, old_candidate, consent = _moved_over_a_restart()
    selected = a.core.selected
    assert selected is not None and selected.remote_address == ("10.0.0.3", 6001)
    assert a.core.previous_remote == old_address
    a.core.add_remote_candidate(old_candidate)  # (trickled late: a candidate again)
    ends = consent + a.core.timing.failed_timeout
    assert net.run_until(lambda: a.core.previous_remote is None, max_time=ends + 1)
    assert net.now == pytest.approx(ends, abs=net.spin_step)
    assert a.core.is_remote_address(old_address)


def test_closing_ends_the_data_window_of_an_old_address_signalled_anew() -> None:
    """As the test above, but the agent closes inside the window: nothing of the pair of
    before counts then (``previous_remote`` is ``None``).  (Mutant: ``_set_state`` looking
    at ``_stale``, which the candidate signalled anew cleared, rather than
    ``_previous_far``, and keeping the window.)"""
    _net, a, old_address, old_candidate, _consent = _moved_over_a_restart()
    a.core.add_remote_candidate(old_candidate)
    assert a.core.previous_remote == old_address
    a.core.close()
    assert a.core.previous_remote is None


def test_two_restarts_before_the_peers_parameters_keep_the_data_pairs_far_end() -> None:
    """b learned a only from a's checks (a signalled no candidate to b): the selected
    pair's remote is peer-reflexive.  b restarts; before a's new parameters, a's check from
    that address (naming a's new ufrag) comes; b restarts again before those parameters.
    The pair of before still carries data: when the third generation's parameters come,
    its far end stays a remote address (its data counts), and no peer-reflexive candidate
    is dropped.  (Mutant: ``restart`` keeping ``_taught`` judged that far end by the
    second generation's check, which named another ufrag, and dropped it.)"""
    net, a, b = two_agents(exchange=False)
    a.core.set_remote(b.core.local, net.now)
    for candidate in b.signalled:
        a.core.add_remote_candidate(candidate)
    a.core.add_remote_candidate(None)
    a.core.set_local_complete()
    b.core.set_remote(a.core.local, net.now)
    b.core.add_remote_candidate(None)
    b.core.set_local_complete()
    a.core.want_connection(net.now)
    b.core.want_connection(net.now)
    assert net.run_until(connected(a, b), max_time=1.0)
    selected = b.core.selected
    assert selected is not None and selected.remote.type is CandidateType.PRFLX
    far = selected.remote_address
    net.drop_all()
    core, now = b.core, net.now
    core.restart(IceParameters("bgen2", "2" * 22), now)
    request = binding_request(core, sender_ufrag="agen2", controlling=True, tid=b"2" * 12)
    assert core.on_request(0, far, request, now) is not None
    core.restart(IceParameters("bgen3", "3" * 22), now + 0.01)
    core.set_remote(IceParameters("agen3", "a" * 22), now + 0.02)
    assert core.prflx_dropped == 0
    assert core.is_remote_address(far)
    assert core.previous_remote == far
