"""Rules of the pure mDNS responder (trice/mdns/_responder.py) that the other mDNS tests did
not pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through): when a name of ours moved between links or came back from the gone is answered
again, which names ``mark_gone`` keeps, which question is answered and by which unicast
answer, how long what is heard of a peer's name is kept (the end of its records, goodbyes,
cache-flush records, shared records, the cap of addresses a name), and which names get
goodbyes.  The time is passed in; no socket."""

from __future__ import annotations

import struct
from typing import Any

from trice import mdns
from trice.mdns._responder import GONE_KEPT, MdnsResponder

LINK, OTHER = "lo", "eth9"  # (links are whatever the shell says they are: compared only)
PEER = ("127.0.0.2", 5353)


def _asked(now: float, **kw: Any) -> dict[str, Any]:
    """The keywords of ``on_datagram`` for a multicast datagram on its link at ``now``."""
    return {"direct": False, "on_link": True, "wanted": (), "now": now, **kw}


def _name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def _query_of(*names: str, qtype: int = mdns.TYPE_A) -> bytes:
    """One query, one question for each of ``names``."""
    body = b"".join(_name(n) + struct.pack("!HH", qtype, 1) for n in names)
    return struct.pack("!6H", 0, 0, len(names), 0, 0, 0) + body


def _shared(answer: bytes) -> bytes:
    """``answer`` (one record) without its cache-flush bit: a shared record."""
    assert answer.count(b"\x80\x01") == 1
    return answer.replace(b"\x80\x01", b"\x00\x01")


# -- our names: links and the gone ------------------------------------------------------------


def test_a_name_back_on_its_link_after_another_is_answered_at_once() -> None:
    """A name answered on one link, moved to another and back, is answered again at once
    on its first link (when it was told there is no matter once it moved).  (Kills
    ``if self._name_links.get(name, link) != link:`` -> ``if False:`` in ``add_name``.)"""
    responder = MdnsResponder()
    responder.add_name("me.local", "127.0.0.1", LINK)
    first, _ = responder.on_datagram(_query_of("me.local"), PEER, LINK, **_asked(10.0))
    assert len(first) == 1
    responder.add_name("me.local", "127.0.0.1", OTHER)
    responder.add_name("me.local", "127.0.0.1", LINK)
    again, _ = responder.on_datagram(_query_of("me.local"), PEER, LINK, **_asked(10.5))
    assert [(s.to, s.link) for s in again] == [(None, LINK)]


def test_a_name_whose_address_came_back_is_not_forgotten_as_gone() -> None:
    """A name marked gone and then back (not in the next ``gone``) is no longer counted
    among the gone: however many go after it, it stays.  (Kills ``del kept[name]`` ->
    ``pass`` in ``mark_gone``.)"""
    responder = MdnsResponder()
    responder.add_name("back.local", "127.0.0.1", LINK)
    responder.mark_gone({"back.local"})
    responder.mark_gone(set())  # (its address is back)
    others = [f"n{i}.local" for i in range(GONE_KEPT)]
    for i, name in enumerate(others):
        responder.add_name(name, f"127.0.1.{i + 1}", LINK)
    responder.mark_gone(set(others))
    assert responder.names["back.local"] == "127.0.0.1"
    assert responder.link("back.local") == LINK


def test_names_not_ours_marked_gone_take_no_room_among_the_gone() -> None:
    """``mark_gone`` keeps only names of ours: names it does not hold are passed over (they
    neither push ours out nor fail when the oldest are forgotten).  (Kills
    ``if name in self.names:`` -> ``if True:``.)"""
    responder = MdnsResponder()
    responder.add_name("mine.local", "127.0.0.1", LINK)
    strangers = {f"x{i}.local" for i in range(GONE_KEPT + 4)}
    responder.mark_gone({"mine.local"} | strangers)
    assert responder.names == {"mine.local": "127.0.0.1"}


def test_a_forgotten_name_that_comes_back_is_answered_at_once() -> None:
    """A name forgotten by ``mark_gone`` (past ``GONE_KEPT``) that is added again is
    answered at once: when it was told before it was forgotten is forgotten with it.
    (Kills ``self._forget_answered(name)`` -> ``pass`` in ``mark_gone``.)"""
    responder = MdnsResponder()
    names = [f"n{i}.local" for i in range(GONE_KEPT + 1)]
    for i, name in enumerate(names):
        responder.add_name(name, f"127.0.1.{i + 1}", LINK)
    told, _ = responder.on_datagram(_query_of(names[0]), PEER, LINK, **_asked(10.0))
    assert len(told) == 1
    responder.mark_gone(names)  # (the first, the longest gone, is forgotten)
    assert names[0] not in responder.names
    responder.add_name(names[0], "127.0.1.1", LINK)
    again, _ = responder.on_datagram(_query_of(names[0]), PEER, LINK, **_asked(10.2))
    assert [(s.to, s.link) for s in again] == [(None, LINK)]


# -- answering questions ----------------------------------------------------------------------


def test_a_question_for_the_other_family_is_not_answered() -> None:
    """An AAAA question for a name whose address is IPv4 gets no answer, nor an A question
    for a name whose address is IPv6.  (Kills ``(ANY, TYPE_AAAA if ":" in address else
    TYPE_A)`` -> ``(ANY, TYPE_A, TYPE_AAAA)``.)"""
    responder = MdnsResponder()
    responder.add_name("me.local", "127.0.0.1", LINK)
    sends, _ = responder.on_datagram(
        _query_of("me.local", qtype=mdns.TYPE_AAAA), PEER, LINK, **_asked(10.0)
    )
    assert sends == []
    v6 = MdnsResponder()
    v6.add_name("me6.local", "::1", LINK)
    sends, _ = v6.on_datagram(_query_of("me6.local", qtype=mdns.TYPE_A), PEER, LINK, **_asked(1.0))
    assert sends == []


def test_the_one_unicast_answer_of_a_message_is_its_first_questions() -> None:
    """A direct query for two names both multicast a moment ago gets one unicast answer,
    the first question's.  (Kills ``unicast = unicast or answer`` -> ``unicast =
    answer``.)"""
    responder = MdnsResponder()
    responder.add_name("a.local", "127.0.0.1", LINK)
    responder.add_name("b.local", "127.0.0.3", LINK)
    responder.on_datagram(_query_of("a.local", "b.local"), PEER, LINK, **_asked(10.0))
    sends, _ = responder.on_datagram(
        _query_of("a.local", "b.local"), PEER, LINK, **_asked(10.5, direct=True)
    )
    assert [s.to for s in sends] == [PEER]
    (record,) = mdns.decode_message(sends[0].data).records
    assert (record.name, record.address) == ("a.local", "127.0.0.1")


# -- what is kept of a peer's name ------------------------------------------------------------


def test_a_name_found_is_dropped_from_found_the_moment_its_records_end() -> None:
    """At the very time its last record ends, a name is no more in ``found`` (what is kept
    there holds until then, not at it).  (Kills ``until <= now`` -> ``until < now`` where
    ``found`` is pruned.)"""
    responder = MdnsResponder()
    answer = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=120)
    responder.on_datagram(answer, PEER, LINK, **_asked(5.0, wanted={"peer.local"}))
    assert "peer.local" in responder.found
    other = mdns.encode_answer("else.local", ["127.0.0.8"], ttl=120)
    responder.on_datagram(other, PEER, LINK, **_asked(125.0))
    assert "peer.local" not in responder.found


def test_a_goodbye_never_makes_a_record_last_longer() -> None:
    """A goodbye for the last address of a name whose record ends in less than a second
    leaves that end as it was (§10.1: TTL 1 s at most, not one more second).  (Kills
    ``min(entry[1], now + GOODBYE_GRACE)`` -> ``now + GOODBYE_GRACE``.)"""
    responder = MdnsResponder()
    answer = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=10)
    responder.on_datagram(answer, PEER, LINK, **_asked(0.0, wanted={"peer.local"}))
    goodbye = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=0)
    responder.on_datagram(goodbye, PEER, LINK, **_asked(9.5))
    assert responder.lookup("peer.local", 9.9) == ("127.0.0.7",)
    assert responder.lookup("peer.local", 10.2) is None


def test_a_shared_record_of_a_name_found_but_no_longer_wanted_is_not_taken() -> None:
    """A name found, then no longer wanted: a shared record (no cache-flush bit) of it is
    not taken (only a cache-flush record updates what is kept).  (Kills ``if name not in
    wanted and not record.cache_flush:`` -> ``if False:``.)"""
    responder = MdnsResponder()
    answer = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=120)
    responder.on_datagram(answer, PEER, LINK, **_asked(5.0, wanted={"peer.local"}))
    shared = _shared(mdns.encode_answer("peer.local", ["127.0.0.9"], ttl=120))
    assert mdns.decode_message(shared).records[0].cache_flush is False
    _, resolved = responder.on_datagram(shared, PEER, LINK, **_asked(6.0))
    assert resolved == []
    assert responder.lookup("peer.local", 6.0) == ("127.0.0.7",)


def test_a_cache_flush_keeps_an_address_heard_exactly_a_second_ago() -> None:
    """A cache-flush record replaces the addresses heard OVER a second ago: one heard a
    second ago exactly (one answer in several packets) stays.  (Kills ``heard < now -
    1.0`` -> ``heard <= now - 1.0``.)"""
    responder = MdnsResponder()
    wanted = {"peer.local"}
    first = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=120)
    responder.on_datagram(first, PEER, LINK, **_asked(4.0, wanted=wanted))
    second = mdns.encode_answer("peer.local", ["127.0.0.8"], ttl=120)
    responder.on_datagram(second, PEER, LINK, **_asked(5.0, wanted=wanted))
    assert responder.lookup("peer.local", 5.0) == ("127.0.0.7", "127.0.0.8")


def test_at_most_sixteen_addresses_are_kept_for_a_name_the_newest() -> None:
    """Of seventeen addresses heard for a name (shared records), the sixteen newest are
    kept.  (Kills ``len(book) > KEPT_PER_NAME`` -> ``len(book) > KEPT_PER_NAME + 1``.)"""
    responder = MdnsResponder()
    wanted = {"peer.local"}
    addresses = [f"127.0.2.{i}" for i in range(1, 18)]  # (17)
    for address in addresses:
        shared = _shared(mdns.encode_answer("peer.local", [address], ttl=120))
        responder.on_datagram(shared, PEER, LINK, **_asked(5.0, wanted=wanted))
    assert responder.lookup("peer.local", 5.0) == tuple(addresses[1:])


def test_a_goodbye_alone_resolves_nothing() -> None:
    """A goodbye for one of a name's two addresses changes what is kept but resolves no
    name (nothing new to check).  (Kills ``if new:`` -> ``if True:``.)"""
    responder = MdnsResponder()
    wanted = {"peer.local"}
    both = _shared(mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=120))
    responder.on_datagram(both, PEER, LINK, **_asked(5.0, wanted=wanted))
    more = _shared(mdns.encode_answer("peer.local", ["127.0.0.8"], ttl=120))
    responder.on_datagram(more, PEER, LINK, **_asked(5.0, wanted=wanted))
    goodbye = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=0)
    _, resolved = responder.on_datagram(goodbye, PEER, LINK, **_asked(6.0, wanted=wanted))
    assert resolved == []
    assert responder.lookup("peer.local", 6.0) == ("127.0.0.8",)


def test_a_goodbye_for_the_last_address_holding_keeps_it_a_second() -> None:
    """Of a name's two addresses, one whose record ended at this very moment no longer
    holds: a goodbye for the other, now its last, keeps that one a second more.  (Kills
    ``until > now`` -> ``until >= now`` in the goodbye's count of the addresses
    holding.)"""
    responder = MdnsResponder()
    wanted = {"peer.local"}
    old = _shared(mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=10))
    responder.on_datagram(old, PEER, LINK, **_asked(0.0, wanted=wanted))
    new = _shared(mdns.encode_answer("peer.local", ["127.0.0.8"], ttl=10))
    responder.on_datagram(new, PEER, LINK, **_asked(5.0, wanted=wanted))
    goodbye = mdns.encode_answer("peer.local", ["127.0.0.8"], ttl=0)
    responder.on_datagram(goodbye, PEER, LINK, **_asked(10.0, wanted=wanted))
    assert responder.lookup("peer.local", 10.5) == ("127.0.0.8",)
    assert responder.lookup("peer.local", 11.0) is None


# -- our goodbyes -----------------------------------------------------------------------------


def test_goodbyes_go_only_for_names_answered_on_a_link() -> None:
    """A name answered nowhere (link ``None``), or not ours, gets no goodbye.  (Kills
    ``if self._name_links.get(name) is not None`` -> ``if True`` in ``goodbyes``.)"""
    responder = MdnsResponder()
    responder.add_name("nowhere.local", "127.0.0.1", None)
    responder.add_name("here.local", "127.0.0.3", LINK)
    assert [s.link for s in responder.goodbyes()] == [LINK]
    assert responder.goodbyes(["nowhere.local", "stranger.local"]) == []
