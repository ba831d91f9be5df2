"""Behaviour of the pure core that no other test pinned down: each of these failed against a
change of one line (a mutation) that the rest of the suite let through."""

from __future__ import annotations

from trice import stun
from trice.ice import Candidate, CandidateType, TcpType, candidate_priority, compute_foundation
from trice.ice._checklist import CheckList, PairState
from trice.ice._priority import tcp_local_preference


def _cand(
    address: str, port: int, *, pref: int = 65535, type: CandidateType = CandidateType.HOST
) -> Candidate:
    return Candidate(
        foundation=compute_foundation(type, address, "udp"),
        component=1,
        protocol="udp",
        priority=candidate_priority(type, pref, 1),
        address=address,
        port=port,
        type=type,
    )


def test_prflx_tcp_direction_preference_is_the_nat_assisted_one() -> None:
    """The table above tcp_local_preference and AgentCore._prflx_priority's docstring say a
    peer-reflexive ICE-TCP candidate takes the NAT-assisted direction preferences
    (simultaneous-open 6, active 4, passive 2), as Pion's candidateBase.LocalPreference does;
    the PRIORITY of every TCP check is computed this way (RFC 8445 §7.1.1), not by the
    host table (active 6, passive 4, S-O 2)."""
    assert tcp_local_preference(CandidateType.PRFLX, TcpType.ACTIVE, 8191) == (4 << 13) | 8191
    assert tcp_local_preference(CandidateType.PRFLX, TcpType.PASSIVE, 8191) == (2 << 13) | 8191
    assert tcp_local_preference(CandidateType.PRFLX, TcpType.SO, 8191) == (6 << 13) | 8191


def test_prune_never_drops_the_selected_pair_nor_a_nominated_one_not_failed() -> None:
    """CheckList._prune's docstring: "a nominated one that has not failed (or is the
    selected pair) ... never dropped".  The selected pair can be out of the succeeded
    state: its re-nomination (after a role switch, _nominate_after_switch) went back to
    waiting, or timed out and failed (_pair_failed leaves a selected pair selected):
    pruned (failed pairs go first), the selected pair would leave the check list."""
    checklist = CheckList(max_pairs=2)
    local = _cand("10.0.0.1", 5000)
    nominated = checklist.add(local, _cand("10.0.1.1", 6000, pref=900), 0, controlling=True)
    other = checklist.add(local, _cand("10.0.1.2", 6000, pref=800), 0, controlling=True)
    assert nominated is not None and other is not None
    nominated.nominated = True
    nominated.state = PairState.FAILED
    checklist.selected = nominated  # (the agent's selected pair, as the core says)
    other.state = PairState.SUCCEEDED
    # A third pair goes past the cap: something must go, but not the selected pair.
    checklist.add(local, _cand("10.0.1.3", 6000, pref=700), 0, controlling=True)
    assert nominated in checklist
    # The same with the nominated pair waiting (its re-nomination queued).
    nominated.state = PairState.WAITING
    checklist.add(local, _cand("10.0.1.4", 6000, pref=950), 0, controlling=True)
    assert nominated in checklist


def test_best_valid_takes_the_first_of_equals() -> None:
    """CheckList.best_valid's docstring: "of equals, the first in priority order".  Equal
    priorities are common (aioice gives all its host candidates one priority, as
    _maybe_follow's docstring says); the pair a controlling agent nominates must then be
    the first, not the last, or the two ends of a tie pick differently."""
    checklist = CheckList(max_pairs=10)
    local = _cand("10.0.0.1", 5000)
    first = checklist.add(local, _cand("10.0.1.1", 6000, pref=500), 0, controlling=True)
    second = checklist.add(local, _cand("10.0.1.2", 6000, pref=500), 0, controlling=True)
    assert first is not None and second is not None
    assert first.priority == second.priority
    assert list(checklist) == [first, second]
    for pair in (first, second):
        pair.state = PairState.SUCCEEDED
        pair.valid_local = local
    assert checklist.best_valid() is first


def test_0x8000_is_comprehension_optional_on_a_built_or_read_message() -> None:
    """RFC 8489 §14: 0x8000-0xFFFF are comprehension-optional, and Message.unknown_required
    says "(< 0x8000)".  Only the path of a message whose attributes are typed (built, or
    decoded and then read with .attributes) counts them itself: a decoded message answers
    unknown_required the same before and after its attributes were read."""
    built = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        attributes=[stun.UnknownAttribute(0x8000, b"abcd"), stun.UnknownAttribute(0x7FFF, b"")],
    )
    assert built.unknown_required == (0x7FFF,)
    decoded = stun.decode(built.encode())
    before = decoded.unknown_required
    assert len(decoded.attributes) == 2  # (typed now: unknown_required reads them)
    assert before == decoded.unknown_required == (0x7FFF,)


def _query_with_known_answer(name: str, ttl: int) -> bytes:
    """A QM query for ``name``'s A record whose answer section holds that record with
    ``ttl`` (as test_mdns_hostile builds one)."""
    import struct

    from trice import mdns

    question = mdns.encode_query(name, (mdns.TYPE_A,))[12:]
    known = bytearray(mdns.encode_answer(name, ["127.0.0.1"], ttl=ttl)[12:])
    known[len(known) - 14 + 2] &= 0x7F  # (class IN without the cache-flush bit)
    return struct.pack("!6H", 0, 0, 1, 1, 0, 0) + question + bytes(known)


def test_a_known_answer_with_under_half_its_ttl_is_answered() -> None:
    """RFC 6762 §7.1: a responder MUST NOT answer when the query's answer section holds the
    record "with an RR TTL at least half the correct value"; with less, the querier's copy
    is about to expire and the answer must go (it refreshes the cache).  The existing tests
    pin only the suppression (TTL 120): suppressed at any TTL, a querier whose cached
    record is nearly stale would never get it refreshed."""
    from trice.mdns._responder import ANSWER_TTL, MdnsResponder

    responder = MdnsResponder()
    responder.add_name("me.local", "127.0.0.1", "lo")
    fresh = _query_with_known_answer("me.local", ANSWER_TTL // 2)
    sends, _ = responder.on_datagram(
        fresh, ("127.0.0.2", 5353), "lo", now=10.0, direct=False, on_link=True, wanted=()
    )
    assert sends == []  # (suppressed: the querier has it with half its TTL or more)
    stale = _query_with_known_answer("me.local", ANSWER_TTL // 2 - 1)
    sends, _ = responder.on_datagram(
        stale, ("127.0.0.2", 5353), "lo", now=20.0, direct=False, on_link=True, wanted=()
    )
    assert len(sends) == 1 and sends[0].to is None  # (multicast: the querier's copy expires)


def test_a_permission_whose_refreshes_go_unanswered_ends_with_its_lifetime() -> None:
    """RFC 8656 §9: a permission lasts 300 s from its last grant.  Its refresh at 241 and the
    one again at 285.5 get no answer (the server is silent to CreatePermission): at the
    permission's end (301), while the second still waits, the client must count it gone
    (permission_installed: "whether the server has a permission"; it did until the refresh
    gave up, at 325), and once that one gave up, drop a Data indication
    from the peer's IP, and refuse data to the peer until it may ask again (send_to_peer's
    docs), not keep it "installed" for ever and send Send indications the server
    drops."""
    from test_turn import PEER, FakeServer, allocated, run_until

    from trice.stun import Method

    class Silent(FakeServer):
        def handle(self, data: bytes, now: float) -> list[bytes]:
            if now >= 200.0 and data[0] < 0x40:
                message = stun.decode(data)
                if message.method is Method.CREATE_PERMISSION:
                    return []
            return super().handle(data, now)

    client, server = allocated(server=Silent(errors={Method.CHANNEL_BIND: (403, "Forbidden")}))
    assert client.send_to_peer(PEER, b"x", 1.0)
    run_until(client, server, 240.0, now=1.0)
    assert client.permission_installed(PEER)
    assert client.send_to_peer(PEER, b"y", 240.0)  # (in use: its refresh goes at 241)
    run_until(client, server, 300.5, now=240.0)
    assert client.permission_installed(PEER)  # (granted at 1 s: it lasts until 301 s)
    run_until(client, server, 301.5, now=300.5)
    assert not client.permission_installed(PEER)  # (its refresh still waits for an answer)
    run_until(client, server, 330.0, now=301.5)
    assert not client.permission_installed(PEER)
    indication = server.data_indication(PEER, b"late")
    assert client.on_server_data(indication, 330.0) == []
    assert client.send_to_peer(PEER, b"z", 330.0) is False


def test_a_check_whose_answers_were_lost_while_the_peer_checked_is_made_again() -> None:
    """AgentCore.on_timeout's comment (and test_core_network's lasting-loss test, whose random
    loss almost never loses all 7 answers of one check, so it never noticed): a check whose
    answers were all lost while the peer's checks on the pair kept coming is made again,
    not failed.  Here every answer to b's checks is lost for 17 s; a's checks reach b, so a
    nominates and is connected at once.  b's first check gives up at 15.5 s; made again,
    it is answered after 17 s and b connects (before failed_timeout, 25 s), rather than
    fail its only pair, and ICE with it, while a stays connected on that pair."""
    from trice import ConnectionState

    from core_harness import connected, two_agents

    net, a, b = two_agents()
    b_addresses = set(b.bases.values())
    net.drop(
        lambda p: (
            net.now < 17.0
            and p.dst in b_addresses
            and p.message.message_class is stun.MessageClass.SUCCESS
        )
    )
    assert net.run_until(connected(a), max_time=1.0)
    assert net.run_until(connected(a, b), max_time=24.0), b.states()
    assert ConnectionState.FAILED not in b.states()
