"""Rules of the UDP mux's routing table (trice/_trio/_mux.py) that the other mux tests did not
pin (found by a mutation review), driven at its own level: the agents sharing the mux claim
a peer's address by what they send to it, prove it by a check answered from it, and
datagrams from it go by ``_route`` to the one agent that holds it, or to none when it is
ambiguous or names no agent."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from trice import stun
from trice._trio import _mux
from trice._trio._mux import (
    _ANSWERED,
    _ROUND_TRIP,
    TRANSACTIONS_KEPT,
    MuxTransport,
    UdpMux,
    asked_ufrag,
)

Address = tuple[str, int]
S: Address = ("127.0.0.9", 5000)  # a peer's address, never sent to (nothing is sent here)


@pytest.fixture
def mux() -> Iterator[UdpMux]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield UdpMux(sock, _key=_mux._OPENING)
    finally:
        sock.close()


class _Share:
    """One agent's share of the mux, and what the mux delivered to it."""

    def __init__(self, mux: UdpMux, ufrag: str) -> None:
        self.got: list[bytes] = []
        self.share = MuxTransport(1, mux, ufrag, self._deliver)

    def _deliver(self, transport: MuxTransport, data: bytes, source: Address) -> None:
        self.got.append(data)


def _request() -> bytes:
    return stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST).encode()


def _success(request: bytes) -> bytes:
    return stun.Message(
        stun.Method.BINDING, stun.MessageClass.SUCCESS, transaction_id=request[8:20]
    ).encode()


def _checked(mux: UdpMux, who: _Share, source: Address = S) -> None:
    """``who`` sends a check to ``source``, whose success answer comes back from there."""
    request = _request()
    who.share._claim(request, source)
    mux._route(_success(request), source)


# -- agents that prove an address, and leave --------------------------------------------------


def test_a_third_agent_proving_an_address_gets_it_when_the_first_prover_leaves(
    mux: UdpMux,
) -> None:
    """b claims S (unproven), a proves it (b loses it), c proves it too (ambiguous); when a
    leaves, c is the only one that proved S: its data go to c."""
    a, b, c = _Share(mux, "aaaa"), _Share(mux, "bbbb"), _Share(mux, "cccc")
    request = _request()
    a.share._claim(request, S)  # a's check goes out
    b.share._claim(b"\x80data", S)  # b sends data there: S is b's, unproven
    mux._route(_success(request), S)  # a's check is answered from S: a proved it
    _checked(mux, c)  # c proves it as well: both's, data dropped
    mux._detach(a.share)
    c.got.clear()
    b.got.clear()
    mux._route(b"\x80payload", S)
    assert c.got == [b"\x80payload"]
    assert b.got == []


def test_an_address_three_agents_proved_stays_ambiguous_when_one_leaves(mux: UdpMux) -> None:
    """a, b and c each prove S; a leaves: S is still b's and c's, so its data go to neither
    and are counted ambiguous."""
    a, b, c = _Share(mux, "aaaa"), _Share(mux, "bbbb"), _Share(mux, "cccc")
    for share in (a, b, c):
        _checked(mux, share)
    mux._detach(a.share)
    for share in (b, c):
        share.got.clear()
    before = mux.statistics().ambiguous
    mux._route(b"\x80payload", S)
    assert b.got == [] and c.got == []
    assert mux.statistics().ambiguous == before + 1


def test_an_answer_a_round_trip_shared_stays_an_answer_when_the_round_trip_leaves(
    mux: UdpMux,
) -> None:
    """a, an ICE-lite agent, answers a check 'from S' (its source may be forged); b's check
    to S is answered from there (S is both's); b leaves.  S is a's again, proved by its
    answer alone: c, another ICE-lite agent, answering a check from S makes it both's
    (dropped).  a took b's round trip with S, and c's answer was ignored: S's data went to a
    (the last pass's suspects)."""
    a, b, c = _Share(mux, "aaaa"), _Share(mux, "bbbb"), _Share(mux, "cccc")
    a.share.answers_prove = c.share.answers_prove = True
    a.share._claim(_success(_request()), S)
    _checked(mux, b)
    mux._detach(b.share)
    assert mux._by_source[S] == (a.share, _ANSWERED)
    c.share._claim(_success(_request()), S)
    a.got.clear()
    mux._route(b"\x80payload", S)
    assert a.got == [] and c.got == []


def test_an_answer_a_round_trip_outranked_still_counts_when_the_round_trip_leaves(
    mux: UdpMux,
) -> None:
    """As above, but c (ICE-lite) answers a check from S while S is both's (a's answer and
    b's round trip), and b leaves after: a and c have answered from S, so it stays both's,
    as an answer proves it (its data dropped).  c's answer, outranked by b's round trip,
    was not kept: S went to a (the p42pass1 review)."""
    a, b, c = _Share(mux, "aaaa"), _Share(mux, "bbbb"), _Share(mux, "cccc")
    a.share.answers_prove = c.share.answers_prove = True
    a.share._claim(_success(_request()), S)
    _checked(mux, b)
    c.share._claim(_success(_request()), S)
    mux._detach(b.share)
    assert mux._by_source[S] == (None, _ANSWERED)
    mux._route(b"\x80payload", S)
    assert a.got == [] and c.got == []


# -- what claims an address, and what proves it -----------------------------------------------


def test_a_check_after_answering_the_peer_first_proves_the_address(mux: UdpMux) -> None:
    """An agent that answered its peer's check first (which claims S, unproven) and then
    checks S itself proves S: a peer signalling S to another agent cannot divert it."""
    a, b = _Share(mux, "aaaa"), _Share(mux, "bbbb")
    a.share._claim(_success(_request()), S)  # a answers a check from S
    _checked(mux, a)  # then its own check to S succeeds
    assert mux._by_source[S] == (a.share, _ROUND_TRIP)
    b.share._claim(_request(), S)  # b's peer signalled S: b checks it
    a.got.clear()
    mux._route(b"\x80payload", S)
    assert a.got == [b"\x80payload"] and b.got == []


def test_a_success_answer_takes_no_address_another_agent_claimed(mux: UdpMux) -> None:
    """b checks S (claims it, unproven); a answers a check 'from S' with success (its source
    may be forged): S stays b's."""
    a, b = _Share(mux, "aaaa"), _Share(mux, "bbbb")
    b.share._claim(_request(), S)
    a.share._claim(_success(_request()), S)
    assert mux._by_source[S] == (b.share, False)
    mux._route(b"\x80payload", S)
    assert b.got == [b"\x80payload"] and a.got == []


def test_the_transactions_noted_for_answers_are_bounded(mux: UdpMux) -> None:
    """The mux notes each check's transaction to know whose its answer is; an agent checking
    ever more addresses does not grow that note past TRANSACTIONS_KEPT."""
    a = _Share(mux, "aaaa")
    for i in range(TRANSACTIONS_KEPT + 100):
        a.share._claim(_request(), ("127.0.0.9", 1000 + i % 50000))
    assert len(mux._by_tid) <= TRANSACTIONS_KEPT


def test_an_answer_the_agent_drops_leaves_the_checks_route_for_the_real_one(
    mux: UdpMux,
) -> None:
    """a and b both proved S (ambiguous: answers from there find their agent by
    transaction only).  a's next check to S draws first an answer from a stranger
    with its transaction ID (unsigned: a's core drops it, and still awaits the answer),
    then the peer's own from S: that one goes to a.  The first took the check's route with
    it, and the real answer was dropped as ambiguous: each consent check so, a's ICE failed
    (the hostile43 review).  Once a's core took an answer, the route ends."""
    a, b = _Share(mux, "aaaa"), _Share(mux, "bbbb")
    _checked(mux, a)
    _checked(mux, b)
    assert mux._by_source[S][0] is None  # (both proved it)
    awaited: set[bytes] = set()
    a.share.hooks.pending = awaited.__contains__
    request = _request()
    a.share._claim(request, S)
    awaited.add(request[8:20])
    a.got.clear()
    b.got.clear()
    mux._route(_success(request), ("127.0.0.66", 4000))  # (the stranger's: dropped by a)
    awaited.clear()  # (a's core takes the next, as the mux delivers it)
    mux._route(_success(request), S)  # (the peer's)
    assert a.got == [_success(request)] * 2 and b.got == []
    mux._route(_success(request), S)  # (a copy: the route ended)
    assert len(a.got) == 2 and mux.statistics().ambiguous == 1


def test_an_address_kept_over_a_restart_that_is_still_the_peers_stays_routed(
    mux: UdpMux,
) -> None:
    """After an ICE restart, the pair of before ends; an address kept for it that is a remote
    address of the new generation too stays the agent's."""
    a = _Share(mux, "aaaa")
    _checked(mux, a)
    a.share.rename("aaa2", keep=[S])
    a.share.forget_kept([S])
    a.got.clear()
    mux._route(b"\x80payload", S)
    assert a.got == [b"\x80payload"]


# -- requests that name no agent -------------------------------------------------------------


def test_a_username_without_a_colon_names_no_agent(mux: UdpMux) -> None:
    """A Binding request whose USERNAME has no ``:`` asks no agent (RFC 8445 §7.2.2: it is
    ``ours:theirs``): not routed, counted unroutable."""
    a = _Share(mux, "aaaa")
    request = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        attributes=(stun.UnknownAttribute(0x0006, b"aaaa"),),
    ).encode()
    assert asked_ufrag(request) is None
    mux._route(request, S)
    assert a.got == []
    assert mux.statistics().unroutable == 1


# -- claims the mutants10 review found untested (each fails on a mutant of _claim, _let_go
# or _proved that the rest of the suite let through) ---------------------------------------


def test_an_address_taken_from_an_unproven_claim_is_not_the_first_claimers_when_shared(
    mux: UdpMux,
) -> None:
    """An agent whose unproven claim on S another agent's check took (the peer at S
    moved to the other agent; ``_claim`` drops it from the first's ``claimed``) has no part
    in S any more.  Here a claims S, b's check takes it, b and c both prove S (ambiguous),
    and b leaves: S is c's alone, and its data go to c.  Had a kept S in its ``claimed``,
    ``_let_go`` counted a among S's provers and left S ambiguous: c's peer's data dropped."""
    a, b, c = _Share(mux, "aaaa"), _Share(mux, "bbbb"), _Share(mux, "cccc")
    a.share._claim(b"\x80data", S)  # a sends there first: S is a's, unproven
    _checked(mux, b)  # b's check takes S and proves it
    _checked(mux, c)  # c proves it too: both's
    assert mux._by_source[S] == (None, _ROUND_TRIP)
    mux._detach(b.share)
    assert mux._by_source[S] == (c.share, _ROUND_TRIP)
    c.got.clear()
    mux._route(b"\x80payload", S)
    assert c.got == [b"\x80payload"] and a.got == []


def test_an_agents_answers_do_not_crowd_out_its_checks_answer_routes(mux: UdpMux) -> None:
    """Only an agent's checks (Binding requests) are noted for routing their answers
    by transaction (``_claim``'s docstring).  a and b both proved S (its data and stray
    answers are dropped as ambiguous); a checks S again, then answers TRANSACTIONS_KEPT of
    the peer's checks: the answer to a's check still finds a.  Were answers noted too, they
    crowded the check's route out of the bounded table, and its answer was dropped."""
    a, b = _Share(mux, "aaaa"), _Share(mux, "bbbb")
    _checked(mux, a)
    _checked(mux, b)
    assert mux._by_source[S][0] is None
    request = _request()
    a.share._claim(request, S)
    for _ in range(TRANSACTIONS_KEPT):
        a.share._claim(_success(_request()), S)  # (a answers a check of its peer's)
    a.got.clear()
    mux._route(_success(request), S)
    assert a.got == [_success(request)]


def test_an_agent_whose_ice_failed_leaves_an_address_it_shared_to_the_other(
    mux: UdpMux,
) -> None:
    """``MuxTransport.release``, ``UdpMux._let_go``: an agent whose ICE failed (it
    stays open, on the mux) routes its addresses no more; one that two agents proved goes
    to the other.  a and b both proved S; a's ICE fails: S is b's, and its data go to b.
    (Counting a, still on the mux, among S's provers left S ambiguous: b's data dropped.)"""
    a, b = _Share(mux, "aaaa"), _Share(mux, "bbbb")
    _checked(mux, a)
    _checked(mux, b)
    a.share.release()
    assert mux._by_source[S] == (b.share, _ROUND_TRIP)
    a.got.clear()
    b.got.clear()
    mux._route(b"\x80payload", S)
    assert b.got == [b"\x80payload"] and a.got == []


def test_an_address_an_agent_let_go_is_no_longer_counted_as_its(mux: UdpMux) -> None:
    """What an agent let go (its ICE failed) is gone from its claims for good.  a
    proved S and its ICE failed; later b and c both prove S (ambiguous), and b leaves: S is
    c's alone.  (Had a kept S in its ``claimed``, it counted among S's provers: S stayed
    ambiguous, and c's peer's data were dropped.)"""
    a, b, c = _Share(mux, "aaaa"), _Share(mux, "bbbb"), _Share(mux, "cccc")
    _checked(mux, a)
    a.share.release()
    _checked(mux, b)
    _checked(mux, c)
    mux._detach(b.share)
    assert mux._by_source[S] == (c.share, _ROUND_TRIP)
    c.got.clear()
    mux._route(b"\x80payload", S)
    assert c.got == [b"\x80payload"]


def test_a_round_trip_left_alone_stays_a_round_trip(mux: UdpMux) -> None:
    """``_let_go``: the other keeps "the other's own proof".  a and b both proved S by
    a round trip; a leaves, and S is b's, proved by its round trip.  So an ICE-lite agent c
    answering a check 'from S' (a check's source may be forged) takes nothing: S's data
    still go to b.  (Were b's proof lowered to an answer, c's answer made S both's, and b's
    data were dropped.)"""
    a, b, c = _Share(mux, "aaaa"), _Share(mux, "bbbb"), _Share(mux, "cccc")
    c.share.answers_prove = True
    _checked(mux, a)
    _checked(mux, b)
    mux._detach(a.share)
    c.share._claim(_success(_request()), S)  # c answers a (forged) check from S
    b.got.clear()
    mux._route(b"\x80payload", S)
    assert b.got == [b"\x80payload"] and c.got == []


def test_an_answer_outranked_by_anothers_round_trip_is_not_noted(mux: UdpMux) -> None:
    """``_proved``: an answer leaves an address another agent's round trip proved as
    it is.  b proved S; c, ICE-lite, answers a check 'from S': c gains no part in S.  So
    once b leaves, and d and e prove S in turn (both's), e has S alone when d leaves.
    (Had c's answer been noted in its ``claimed``, c counted among S's provers: S stayed
    ambiguous, and e's peer's data were dropped.)"""
    b, c = _Share(mux, "bbbb"), _Share(mux, "cccc")
    d, e = _Share(mux, "dddd"), _Share(mux, "eeee")
    c.share.answers_prove = True
    _checked(mux, b)
    c.share._claim(_success(_request()), S)
    mux._detach(b.share)
    _checked(mux, d)
    _checked(mux, e)
    mux._detach(d.share)
    e.got.clear()
    mux._route(b"\x80payload", S)
    assert e.got == [b"\x80payload"] and c.got == []
