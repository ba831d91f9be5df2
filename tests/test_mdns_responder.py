"""The pure mDNS responder (``trice.mdns._responder``), with the time passed in: what the
trio shell sends and keeps, decided without a socket or a clock."""

from __future__ import annotations

import struct
from typing import Any

from trice import mdns
from trice.mdns._responder import ANSWER_TTL, MdnsResponder

LINK, OTHER = "lo", "eth9"  # (links are whatever the shell says they are: compared only)


def _query(name: str, qtype: int = mdns.TYPE_A) -> bytes:
    return mdns.encode_query(name, (qtype,))


def test_a_name_is_asked_for_at_0_1_3_7_seconds_on_one_schedule() -> None:
    responder = MdnsResponder()
    sent = []
    now = 0.0
    while now <= 8.0:
        send, due = responder.query_due("peer.local", now)
        if send:
            sent.append(now)
        assert due > now
        now = round(now + 0.25, 2)
    assert sent == [0.0, 1.0, 3.0, 7.0]
    responder.stop_asking("peer.local")
    assert responder.query_due("peer.local", 8.0)[0]  # (a new schedule starts at once)


def test_an_answer_goes_once_a_second_on_its_names_link_only() -> None:
    responder = MdnsResponder()
    responder.add_name("me.local", "127.0.0.1", LINK)
    asked: dict[str, Any] = {"direct": False, "on_link": True, "wanted": (), "now": 10.0}
    sends, _ = responder.on_datagram(_query("me.local"), ("127.0.0.2", 5353), LINK, **asked)
    assert [(s.to, s.link) for s in sends] == [(None, LINK)]
    (record,) = mdns.decode_message(sends[0].data).records
    assert (record.address, record.ttl, record.cache_flush) == ("127.0.0.1", ANSWER_TTL, True)
    again, _ = responder.on_datagram(_query("me.local"), ("127.0.0.3", 5353), LINK, **asked)
    assert again == []  # (within the second)
    other, _ = responder.on_datagram(_query("me.local"), ("10.0.0.3", 5353), OTHER, **asked)
    assert other == []  # (not told on another link)
    asked["now"] = 11.0
    later, _ = responder.on_datagram(_query("me.local"), ("127.0.0.3", 5353), LINK, **asked)
    assert len(later) == 1


def test_answers_are_kept_for_names_wanted_and_goodbyes_remove_them() -> None:
    responder = MdnsResponder()
    answer = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=3600)
    kw: dict[str, Any] = {"direct": False, "on_link": True, "now": 5.0}
    _, resolved = responder.on_datagram(answer, ("127.0.0.7", 5353), LINK, wanted=(), **kw)
    assert resolved == [] and responder.found == {}  # (nobody asked)
    _, resolved = responder.on_datagram(
        answer, ("127.0.0.7", 5353), LINK, wanted={"peer.local"}, **kw
    )
    assert resolved == ["peer.local"]
    assert responder.lookup("peer.local", 5.0) == ("127.0.0.7",)
    assert responder.lookup("peer.local", 5.0 + ANSWER_TTL) is None  # (120 s at most)
    goodbye = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=0)
    responder.on_datagram(goodbye, ("127.0.0.7", 5353), LINK, wanted=(), **kw)
    # (RFC 6762 §10.1: kept one second more, then gone.)
    assert responder.lookup("peer.local", 5.5) == ("127.0.0.7",)
    assert responder.lookup("peer.local", 6.0) is None


def _one_label(name: str) -> bytes:
    """``name`` as ONE DNS label, dots and all (RFC 1035 §3.1 allows any byte in one)."""
    raw = name.encode()
    return bytes([len(raw)]) + raw + b"\x00"


def test_a_name_of_one_label_with_dots_is_not_one_of_two() -> None:
    """The one label ``<uuid>.local`` is no ``<uuid>`` . ``local``: a question for it is not
    answered, and a record of it does not resolve the two-label name.  Labels were joined
    with dots as they came, and it was answered for and taken."""
    name = "1f4712db-ea17-4bcf-a596-105139dfd8bf.local"
    responder = MdnsResponder()
    responder.add_name(name, "127.0.0.1", LINK)
    query = struct.pack("!6H", 0, 0, 1, 0, 0, 0) + _one_label(name) + struct.pack("!HH", 1, 1)
    asked: dict[str, Any] = {"direct": False, "on_link": True, "wanted": (), "now": 10.0}
    assert responder.on_datagram(query, ("127.0.0.2", 5353), LINK, **asked)[0] == []
    record = (
        _one_label("peer.local") + struct.pack("!HHIH", 1, 0x8001, 120, 4) + b"\xc0\x00\x02\x09"
    )
    answer = struct.pack("!6H", 0, 0x8400, 0, 1, 0, 0) + record
    told: dict[str, Any] = {"direct": False, "on_link": True, "now": 10.0}
    assert (
        responder.on_datagram(answer, ("192.0.2.9", 5353), LINK, wanted={"peer.local"}, **told)[1]
        == []
    )


def test_a_question_of_another_class_than_in_or_any_is_not_answered() -> None:
    """RFC 6762 §6: a question of class CH (3) for the agent's name is not one for its IN
    record (it was answered with it); one of class ANY (255) is."""
    responder = MdnsResponder()
    responder.add_name("me.local", "127.0.0.1", LINK)
    asked: dict[str, Any] = {"direct": False, "on_link": True, "wanted": (), "now": 10.0}
    for qclass, answered in ((3, False), (255, True)):
        query = bytearray(_query("me.local"))
        struct.pack_into("!H", query, len(query) - 2, qclass)
        sends, _ = responder.on_datagram(bytes(query), ("127.0.0.2", 5353), LINK, **asked)
        assert bool(sends) is answered, qclass


def test_a_cache_flush_record_replaces_only_its_type_heard_over_a_second_ago() -> None:
    """RFC 6762 §10.2: an AAAA answer (cache flush) in a second packet keeps the A address
    of the first (both kept, IPv4 first); one of the same type replaces the kept one once
    that is over a second old, and adds to it within the second; a shared record (no
    flush bit) adds.  A flush, or any answer for a name being resolved, replaced all."""
    responder = MdnsResponder()
    told: dict[str, Any] = {"direct": False, "on_link": True, "wanted": {"peer.local"}}

    def answer(address: str, now: float, *, flush: bool = True) -> tuple[str, ...] | None:
        data = bytearray(mdns.encode_answer("peer.local", [address]))
        if not flush:
            data[12 + len(b"\x04peer\x05local\x00") + 2] &= 0x7F
        responder.on_datagram(bytes(data), ("192.0.2.5", 5353), LINK, now=now, **told)
        return responder.lookup("peer.local", now)

    assert answer("192.0.2.5", 10.0) == ("192.0.2.5",)
    assert answer("2001:db8::5", 10.01) == ("192.0.2.5", "2001:db8::5")
    assert answer("192.0.2.6", 10.5) == ("192.0.2.5", "192.0.2.6", "2001:db8::5")
    assert answer("192.0.2.7", 12.0) == ("192.0.2.7", "2001:db8::5")
    assert answer("192.0.2.8", 14.0, flush=False) == ("192.0.2.7", "192.0.2.8", "2001:db8::5")


def _tell(responder: MdnsResponder, now: float, *records: tuple[str, int]) -> None:
    """An answer for ``peer.local`` (being resolved) in one packet a record: ``(address,
    ttl)``, the cache-flush bit set, as responders send them."""
    told: dict[str, Any] = {"direct": False, "on_link": True, "wanted": {"peer.local"}}
    for address, ttl in records:
        data = mdns.encode_answer("peer.local", [address], ttl=ttl)
        responder.on_datagram(data, ("192.0.2.5", 5353), LINK, now=now, **told)


def test_each_address_keeps_its_own_age_and_ttl() -> None:
    """Each address of a name is kept for its own record's TTL, and a cache flush goes by
    each record's own age (RFC 6762 §10.2): a flush at 11.5 s drops the address heard at
    10 s, keeps the one of 10.9 s; an AAAA record of TTL 5 does not cut the A record's
    120 s short.  (The age and the TTL were the last answer's, for every address.)"""
    responder = MdnsResponder()
    _tell(responder, 10.0, ("192.0.2.1", 120))
    _tell(responder, 10.9, ("192.0.2.2", 120))
    _tell(responder, 11.5, ("192.0.2.3", 120))
    assert responder.lookup("peer.local", 11.5) == ("192.0.2.2", "192.0.2.3")
    _tell(responder, 20.0, ("2001:db8::5", 5))
    assert responder.lookup("peer.local", 30.0) == ("192.0.2.2", "192.0.2.3")


def test_a_goodbye_address_stays_gone_and_what_is_kept_stays_bounded() -> None:
    """A goodbye for the only A address keeps it a second (§10.1), and an AAAA answer in
    that second does not bring it back (it had, for the AAAA record's 120 s).  A new
    address every 0.9 s, each a cache flush, keeps a few (it grew without end: each
    answer made its type's age new, and nothing was flushed)."""
    responder = MdnsResponder()
    _tell(responder, 10.0, ("192.0.2.5", 120))
    _tell(responder, 20.0, ("192.0.2.5", 0))  # (a goodbye)
    _tell(responder, 20.2, ("2001:db8::5", 120))
    assert responder.lookup("peer.local", 30.0) == ("2001:db8::5",)
    now = 40.0
    for i in range(300):
        _tell(responder, now, (f"10.{i // 250}.{i % 250}.1", 120))
        now += 0.9
    kept = responder.lookup("peer.local", now)
    assert kept is not None and len(kept) <= 3


def test_a_legacy_reply_repeats_every_question_of_the_query() -> None:
    """RFC 6762 §6.7: the reply to a legacy unicast query (not from port 5353) repeats its ID
    and its questions: both of a query that asks A and AAAA (as trice's own resolver does),
    not the one answered alone."""
    responder = MdnsResponder()
    responder.add_name("n.local", "192.0.2.5", LINK)
    query = bytearray(mdns.encode_query("n.local"))
    query[0:2] = b"\x12\x34"
    source = ("192.0.2.9", 40000)
    sends, _ = responder.on_datagram(
        bytes(query), source, LINK, direct=True, on_link=True, wanted=(), now=100.0
    )
    (reply,) = [s for s in sends if s.to == source]
    message = mdns.decode_message(reply.data)
    assert message.id == 0x1234
    assert [(q.name, q.qtype) for q in message.questions] == [
        ("n.local", mdns.TYPE_A),
        ("n.local", mdns.TYPE_AAAA),
    ]
    assert [(r.name, r.address) for r in message.records] == [("n.local", "192.0.2.5")]
