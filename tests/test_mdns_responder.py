"""The pure mDNS responder (``trice.mdns._responder``), with the time passed in: what the
trio shell sends and keeps, decided without a socket or a clock."""

from __future__ import annotations

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
