"""Candidates (RFC 8839 §5.1 SDP and W3C JSON), priorities and foundations (RFC 8445)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trice._errors import CandidateError
from trice.ice import (
    TYPE_PREFERENCE,
    Candidate,
    CandidateType,
    TcpType,
    candidate_priority,
    compute_foundation,
    end_of_candidates_json,
    local_preference,
    pair_priority,
)

HOST, SRFLX, PRFLX, RELAY = (
    CandidateType.HOST,
    CandidateType.SRFLX,
    CandidateType.PRFLX,
    CandidateType.RELAY,
)
MDNS = "f3e2a9b1-5c6d-4e7f-8a9b-0c1d2e3f4a5b.local"

# -- real-world lines ---------------------------------------------------------------------------

REAL_WORLD: list[tuple[str, dict[str, Any], str]] = [
    (  # Chrome, server reflexive, with its extension attributes
        "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 "
        "rport 46154 generation 0 ufrag sXkS network-cost 999",
        dict(
            foundation="842163049",
            component=1,
            protocol="udp",
            priority=1677729535,
            address="203.0.113.7",
            port=46154,
            type=SRFLX,
            related_address="10.0.0.2",
            related_port=46154,
            extensions=(("generation", "0"), ("ufrag", "sXkS"), ("network-cost", "999")),
        ),
        "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 "
        "rport 46154 generation 0 ufrag sXkS network-cost 999",
    ),
    (  # Chrome, mDNS host candidate
        f"a=candidate:3098347468 1 udp 2113937151 {MDNS} 54400 typ host generation 0 "
        "network-cost 999\r\n",
        dict(
            foundation="3098347468",
            component=1,
            protocol="udp",
            priority=2113937151,
            address=MDNS,
            port=54400,
            type=HOST,
            extensions=(("generation", "0"), ("network-cost", "999")),
        ),
        f"candidate:3098347468 1 udp 2113937151 {MDNS} 54400 typ host generation 0 "
        "network-cost 999",
    ),
    (  # Chrome, srflx behind mDNS: raddr 0.0.0.0 rport 0
        "candidate:1 1 udp 1685987071 198.51.100.4 61000 typ srflx raddr 0.0.0.0 rport 0 "
        "generation 0 network-id 1",
        dict(
            foundation="1",
            component=1,
            protocol="udp",
            priority=1685987071,
            address="198.51.100.4",
            port=61000,
            type=SRFLX,
            related_address="0.0.0.0",
            related_port=0,
            extensions=(("generation", "0"), ("network-id", "1")),
        ),
        "candidate:1 1 udp 1685987071 198.51.100.4 61000 typ srflx raddr 0.0.0.0 rport 0 "
        "generation 0 network-id 1",
    ),
    (  # Chrome, ICE-TCP active
        "candidate:2 1 tcp 1518280447 192.168.1.2 9 typ host tcptype active generation 0 "
        "network-id 1",
        dict(
            foundation="2",
            component=1,
            protocol="tcp",
            priority=1518280447,
            address="192.168.1.2",
            port=9,
            type=HOST,
            tcp_type=TcpType.ACTIVE,
            extensions=(("generation", "0"), ("network-id", "1")),
        ),
        "candidate:2 1 tcp 1518280447 192.168.1.2 9 typ host tcptype active generation 0 "
        "network-id 1",
    ),
    (  # Firefox: upper-case transport, IPv6 host
        "candidate:0 1 UDP 2122187007 2001:DB8:0:0::1 40302 typ host",
        dict(
            foundation="0",
            component=1,
            protocol="udp",
            priority=2122187007,
            address="2001:db8::1",
            port=40302,
            type=HOST,
        ),
        "candidate:0 1 udp 2122187007 2001:db8::1 40302 typ host",
    ),
    (  # Firefox, TCP passive, component 2
        "candidate:3 2 TCP 2105524478 10.1.2.3 52000 typ host tcptype passive",
        dict(
            foundation="3",
            component=2,
            protocol="tcp",
            priority=2105524478,
            address="10.1.2.3",
            port=52000,
            type=HOST,
            tcp_type=TcpType.PASSIVE,
        ),
        "candidate:3 2 tcp 2105524478 10.1.2.3 52000 typ host tcptype passive",
    ),
    (  # Pion v2: no prefix, tcptype written before raddr
        "1966762134 1 tcp 1694498815 203.0.113.9 9 typ srflx tcptype so raddr 10.0.0.9 rport 9",
        dict(
            foundation="1966762134",
            component=1,
            protocol="tcp",
            priority=1694498815,
            address="203.0.113.9",
            port=9,
            type=SRFLX,
            related_address="10.0.0.9",
            related_port=9,
            tcp_type=TcpType.SO,
        ),
        "candidate:1966762134 1 tcp 1694498815 203.0.113.9 9 typ srflx raddr 10.0.0.9 rport 9 "
        "tcptype so",
    ),
    (  # Pion relay over IPv6 with an IPv6 raddr, and odd spacing
        "candidate:4207374051  1 udp 16777215 2001:db8::7 50000 typ relay\traddr 2001:db8::2 "
        "rport 4000",
        dict(
            foundation="4207374051",
            component=1,
            protocol="udp",
            priority=16777215,
            address="2001:db8::7",
            port=50000,
            type=RELAY,
            related_address="2001:db8::2",
            related_port=4000,
        ),
        "candidate:4207374051 1 udp 16777215 2001:db8::7 50000 typ relay raddr 2001:db8::2 "
        "rport 4000",
    ),
    (  # ABNF literals match in any case; foundation with '+' and '/'
        "A=CANDIDATE:a+b/C 1 Udp 1845501695 192.0.2.1 3478 TYP PRFLX RADDR 10.0.0.1 RPORT 3478",
        dict(
            foundation="a+b/C",
            component=1,
            protocol="udp",
            priority=1845501695,
            address="192.0.2.1",
            port=3478,
            type=PRFLX,
            related_address="10.0.0.1",
            related_port=3478,
        ),
        "candidate:a+b/C 1 udp 1845501695 192.0.2.1 3478 typ prflx raddr 10.0.0.1 rport 3478",
    ),
]


@pytest.mark.parametrize(("line", "fields", "canonical"), REAL_WORLD)
def test_real_world_lines(line: str, fields: dict[str, Any], canonical: str) -> None:
    candidate = Candidate.from_sdp(line)
    assert candidate == Candidate(**fields)
    assert candidate.to_sdp() == canonical
    assert Candidate.from_sdp(canonical) == candidate
    assert Candidate.from_sdp("a=" + canonical) == candidate


def test_prefixes_are_optional() -> None:
    body = "1 1 udp 2130706431 10.0.0.1 5000 typ host"
    expected = Candidate.from_sdp("candidate:" + body)
    for line in (body, "a=" + body, "a=candidate:" + body, "  candidate: " + body + " \r\n"):
        assert Candidate.from_sdp(line) == expected


def test_conveniences() -> None:
    candidate = Candidate.from_sdp(REAL_WORLD[0][0])
    assert candidate.transport_address == ("203.0.113.7", 46154)
    assert candidate.extension("generation") == "0"
    assert candidate.extension("NETWORK-COST") == "999"
    assert candidate.extension("network-id") is None
    assert candidate.ufrag == "sXkS"  # from the extension
    assert dataclasses.replace(candidate, username_fragment="zzzz").ufrag == "zzzz"
    assert str(CandidateType.RELAY) == "relay"
    assert str(TcpType.SO) == "so"
    variant = dataclasses.replace(candidate, port=1)
    assert variant.port == 1
    assert candidate.port == 46154


def test_constructor_normalizes() -> None:
    candidate = Candidate(
        foundation="1",
        component=1,
        protocol="TCP",
        priority=1,
        address="2001:DB8::0:1",
        port=9,
        type="host",
        tcp_type="ACTIVE",
        extensions=[("generation", "0")],
    )
    assert candidate.protocol == "tcp"
    assert candidate.address == "2001:db8::1"
    assert candidate.type is CandidateType.HOST
    assert candidate.tcp_type is TcpType.ACTIVE
    assert candidate.extensions == (("generation", "0"),)
    hash(candidate)  # frozen, hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        candidate.port = 2  # type: ignore[misc]


# -- errors -------------------------------------------------------------------------------------

GOOD = "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host"

BAD_LINES: list[tuple[str, str]] = [
    ("", "foundation"),
    ("candidate:", "foundation"),
    ("candidate:abc-def 1 udp 1 10.0.0.1 1 typ host", "foundation"),
    ("candidate:" + "a" * 33 + " 1 udp 1 10.0.0.1 1 typ host", "foundation"),
    ("candidate:1", "component"),
    ("candidate:1 0 udp 1 10.0.0.1 1 typ host", "component"),
    ("candidate:1 257 udp 1 10.0.0.1 1 typ host", "component"),
    ("candidate:1 1000 udp 1 10.0.0.1 1 typ host", "component"),
    ("candidate:1 +1 udp 1 10.0.0.1 1 typ host", "component"),
    ("candidate:1 \u0661 udp 1 10.0.0.1 1 typ host", "component"),  # Arabic-Indic one
    ("candidate:1 1", "transport"),
    ("candidate:1 1 sctp 1 10.0.0.1 1 typ host", "transport"),
    ("candidate:1 1 udp", "priority"),
    ("candidate:1 1 udp 0 10.0.0.1 1 typ host", "priority"),
    ("candidate:1 1 udp 4294967296 10.0.0.1 1 typ host", "priority"),
    ("candidate:1 1 udp 1_000 10.0.0.1 1 typ host", "priority"),
    ("candidate:1 1 udp 12345678901 10.0.0.1 1 typ host", "priority"),
    ("candidate:1 1 udp 1", "address"),
    ("candidate:1 1 udp 1 10.0.0.256 1 typ host", "address"),
    ("candidate:1 1 udp 1 [2001:db8::1] 1 typ host", "address"),
    ("candidate:1 1 udp 1 fe80::1%eth0 1 typ host", "address"),
    ("candidate:1 1 udp 1 bad_name.local 1 typ host", "address"),
    ("candidate:1 1 udp 1 10.0.0.1", "port"),
    ("candidate:1 1 udp 1 10.0.0.1 65536 typ host", "port"),
    ("candidate:1 1 udp 1 10.0.0.1 -1 typ host", "port"),
    ("candidate:1 1 udp 1 10.0.0.1 1", "typ"),
    ("candidate:1 1 udp 1 10.0.0.1 1 type host", "typ"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ", "typ"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ stun", "typ"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ host typ host", "typ"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr", "raddr"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr nope! rport 1", "raddr"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx rport 1", "raddr"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr 1.2.3.4 raddr 1.2.3.4 rport 1", "raddr"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr 10.0.0.2", "rport"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr 10.0.0.2 rport", "rport"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr 10.0.0.2 rport x", "rport"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr 10.0.0.2 rport 70000", "rport"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ srflx raddr 1.1.1.1 rport 1 rport 1", "rport"),
    ("candidate:1 1 tcp 1 10.0.0.1 1 typ host tcptype", "tcptype"),
    ("candidate:1 1 tcp 1 10.0.0.1 1 typ host tcptype both", "tcptype"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ host tcptype active", "tcptype"),
    ("candidate:1 1 tcp 1 10.0.0.1 1 typ host tcptype so tcptype so", "tcptype"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ host generation", "extension"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ host gen(x) 0", "extension"),
    ("candidate:1 1 udp 1 10.0.0.1 1 typ host ufrag caf\u00e9", "extension"),
]


@pytest.mark.parametrize(("line", "field"), BAD_LINES)
def test_bad_lines(line: str, field: str) -> None:
    with pytest.raises(CandidateError) as info:
        Candidate.from_sdp(line)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_an_ipv4_mapped_address_is_the_ipv4_address_it_maps() -> None:
    """``::ffff:127.0.0.1`` (as some stacks write an IPv4 peer) is 127.0.0.1, as Pion reads
    it: paired with the IPv4 sockets, from which it is reached (it was kept as IPv6, paired
    with the IPv6-only socket, which cannot reach it, and never succeeded)."""
    candidate = Candidate.from_sdp("candidate:1 1 udp 1 ::ffff:127.0.0.1 9 typ host")
    assert candidate.address == "127.0.0.1"
    upper = Candidate.from_sdp("candidate:1 1 udp 1 ::FFFF:7F00:1 9 typ host")
    assert upper.address == "127.0.0.1"


@pytest.mark.parametrize(
    ("line", "quoted"),
    [
        ("candidate:1 1 sctp 1 10.0.0.1 1 typ host", "'sctp'"),
        ("candidate:1 1 udp 1 10.0.0.1 99999 typ host", "'99999'"),
        ("candidate:1 1 udp 1 10.0.0.1 1 typ stun", "'stun'"),
        ("candidate:1 1 udp 1 nope! 1 typ host", "'nope!'"),
    ],
)
def test_errors_quote_the_bad_value(line: str, quoted: str) -> None:
    with pytest.raises(CandidateError, match=quoted):
        Candidate.from_sdp(line)


def test_non_str_line() -> None:
    with pytest.raises(CandidateError):
        Candidate.from_sdp(b"candidate:1 1 udp 1 10.0.0.1 1 typ host")  # type: ignore[arg-type]


BASE: dict[str, Any] = dict(
    foundation="1", component=1, protocol="udp", priority=1, address="10.0.0.1", port=1, type=HOST
)

BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"foundation": ""}, "foundation"),
    ({"foundation": 1}, "foundation"),
    ({"component": 0}, "component"),
    ({"component": True}, "component"),
    ({"component": 1.0}, "component"),
    ({"protocol": "sctp"}, "protocol"),
    ({"protocol": None}, "protocol"),
    ({"priority": 0}, "priority"),
    ({"priority": 2**32}, "priority"),
    ({"address": "not an address"}, "address"),
    ({"address": ""}, "address"),
    ({"address": "1.2.3.4.5"}, "address"),
    ({"port": 65536}, "port"),
    ({"port": -1}, "port"),
    ({"type": "stun"}, "type"),
    ({"type": None}, "type"),
    ({"related_address": "10.0.0.2"}, "related_port"),
    ({"related_port": 1}, "related_address"),
    ({"related_address": "x y", "related_port": 1}, "related_address"),
    ({"related_address": "10.0.0.2", "related_port": 65536}, "related_port"),
    ({"tcp_type": TcpType.ACTIVE}, "tcp_type"),  # on a UDP candidate
    ({"protocol": "tcp", "tcp_type": "both"}, "tcp_type"),
    ({"sdp_mid": 0}, "sdp_mid"),
    ({"sdp_mline_index": -1}, "sdp_mline_index"),
    ({"sdp_mline_index": 65536}, "sdp_mline_index"),
    ({"sdp_mline_index": "0"}, "sdp_mline_index"),
    ({"username_fragment": b"abcd"}, "username_fragment"),
    ({"extensions": "generation 0"}, "extensions"),
    ({"extensions": [("generation",)]}, "extensions"),
    ({"extensions": [("generation", 0)]}, "extensions"),
    ({"extensions": [("gen eration", "0")]}, "extensions"),
    ({"extensions": [("generation", "")]}, "extensions"),
    ({"extensions": [("generation", "a b")]}, "extensions"),
    ({"extensions": [("RADDR", "10.0.0.1")]}, "extensions"),
    ({"extensions": [("tcptype", "active")]}, "extensions"),
    ({"extensions": 5}, "extensions"),
]


@pytest.mark.parametrize(("changes", "field"), BAD_FIELDS)
def test_constructor_validation(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(CandidateError) as info:
        Candidate(**{**BASE, **changes})
    assert info.value.field == field


# -- JSON ---------------------------------------------------------------------------------------


def test_json_shape_matches_browsers_and_pion() -> None:
    candidate = Candidate.from_sdp(GOOD, sdp_mid="0", sdp_mline_index=0)
    assert candidate.to_json() == {
        "candidate": GOOD,
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": None,
    }
    text = json.dumps(candidate.to_json())
    assert '"usernameFragment": null' in text
    assert Candidate.from_json(text) == candidate
    assert Candidate.from_json(candidate.to_json()) == candidate


@pytest.mark.parametrize(
    "line", ["a=end-of-candidates", "end-of-candidates\r\n", "A=End-Of-Candidates"]
)
def test_the_end_of_candidates_line_is_refused_as_what_it_is(line: str) -> None:
    """A receiver that hands every a= line to from_sdp: the end-of-candidates line is named
    (it was blamed on the foundation, "got 'end-of-candidates'")."""
    with pytest.raises(CandidateError, match=r"add_remote_candidate\(None\)") as info:
        Candidate.from_sdp(line)
    assert info.value.field == "candidate"


def test_json_for_a_browser_takes_the_signaling_fields_a_gathered_candidate_lacks() -> None:
    """A browser's addIceCandidate refuses a candidate with neither sdpMid nor
    sdpMLineIndex; a gathered candidate has neither: to_json takes them (and the ufrag), and
    a field given wins over the candidate's own."""
    gathered = Candidate.from_sdp(GOOD)
    init = gathered.to_json(sdp_mid="audio", sdp_mline_index=1, username_fragment="abcd")
    assert init == {
        "candidate": GOOD,
        "sdpMid": "audio",
        "sdpMLineIndex": 1,
        "usernameFragment": "abcd",
    }
    assert Candidate.from_json(init) == Candidate.from_sdp(
        GOOD, sdp_mid="audio", sdp_mline_index=1, username_fragment="abcd"
    )
    signalled = Candidate.from_sdp(GOOD, sdp_mid="0", sdp_mline_index=0)
    assert signalled.to_json(sdp_mid="1")["sdpMid"] == "1"
    assert signalled.to_json()["sdpMLineIndex"] == 0
    for bad in ({"sdp_mid": 0}, {"sdp_mline_index": -1}, {"username_fragment": b"x"}):
        with pytest.raises(CandidateError):
            gathered.to_json(**bad)


def test_json_from_a_browser() -> None:
    text = (
        '{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx '
        'raddr 10.0.0.2 rport 46154 generation 0 ufrag sXkS network-cost 999",'
        '"sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXkS"}'
    )
    candidate = Candidate.from_json(text)
    assert candidate is not None
    assert candidate.sdp_mid == "0"
    assert candidate.sdp_mline_index == 0
    assert candidate.username_fragment == "sXkS"
    assert candidate.priority == 1677729535


def test_json_missing_optional_keys_and_unknown_keys() -> None:
    candidate = Candidate.from_json({"candidate": GOOD, "foo": 1})
    assert candidate == Candidate.from_sdp(GOOD)


def test_an_empty_username_fragment_means_none() -> None:
    """Go structs whose UsernameFragment is a plain string write ``""`` for none: no ufrag
    is empty, so it names none (it had been taken as a ufrag, and the agent dropped the
    candidate as another ICE generation's)."""
    candidate = Candidate.from_json({"candidate": GOOD, "usernameFragment": ""})
    assert candidate is not None and candidate.username_fragment is None
    assert candidate == Candidate.from_sdp(GOOD)


def test_end_of_candidates() -> None:
    obj = end_of_candidates_json(sdp_mid="0", sdp_mline_index=0, username_fragment="abcd")
    assert obj == {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}
    assert Candidate.from_json(obj) is None
    assert Candidate.from_json(json.dumps(end_of_candidates_json())) is None
    assert Candidate.from_json('{"candidate": ""}') is None
    with pytest.raises(CandidateError):
        end_of_candidates_json(sdp_mline_index=-1)
    with pytest.raises(CandidateError):
        end_of_candidates_json(sdp_mid=3)  # type: ignore[arg-type]


BAD_JSON: list[tuple[Any, str]] = [
    ("not json", "json"),
    ("[1, 2]", "json"),
    ("null", "json"),
    ("[" * 100_000, "json"),
    ("1" * 5000, "json"),
    (["candidate"], "json"),
    ({}, "candidate"),
    ({"candidate": None}, "candidate"),
    ({"candidate": 5}, "candidate"),
    ({"candidate": GOOD, "sdpMid": 0}, "sdpMid"),
    ({"candidate": GOOD, "sdpMLineIndex": "0"}, "sdpMLineIndex"),
    ({"candidate": GOOD, "sdpMLineIndex": 0.0}, "sdpMLineIndex"),
    ({"candidate": GOOD, "sdpMLineIndex": True}, "sdpMLineIndex"),
    ({"candidate": GOOD, "sdpMLineIndex": 70000}, "sdpMLineIndex"),
    ({"candidate": GOOD, "usernameFragment": 1}, "usernameFragment"),
    ({"candidate": "", "sdpMid": 1}, "sdpMid"),
    ({"candidate": "candidate:1 1 udp 1 10.0.0.1 1 typ nope"}, "typ"),
]


@pytest.mark.parametrize(("obj", "field"), BAD_JSON)
def test_bad_json(obj: Any, field: str) -> None:
    with pytest.raises(CandidateError) as info:
        Candidate.from_json(obj)
    assert info.value.field == field


# -- properties ---------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?"
hostnames = st.one_of(
    st.uuids().map(lambda u: f"{u}.local"),
    st.from_regex(rf"({_LABEL}\.)*[A-Za-z]{{1,6}}", fullmatch=True),
)
addresses = st.one_of(st.ip_addresses().map(str), hostnames)
ice_chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
tokens = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,12}", fullmatch=True).filter(
    lambda name: name.lower() not in {"typ", "raddr", "rport", "tcptype"}
)
vchars = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)


@st.composite
def candidates(draw: st.DrawFn) -> Candidate:
    protocol = draw(st.sampled_from(["udp", "tcp"]))
    related = draw(st.none() | st.tuples(addresses, st.integers(0, 65535)))
    return Candidate(
        foundation=draw(st.text(ice_chars, min_size=1, max_size=32)),
        component=draw(st.integers(1, 256)),
        protocol=protocol,
        priority=draw(st.integers(1, 2**32 - 1)),
        address=draw(addresses),
        port=draw(st.integers(0, 65535)),
        type=draw(st.sampled_from(CandidateType)),
        related_address=None if related is None else related[0],
        related_port=None if related is None else related[1],
        tcp_type=draw(st.none() | st.sampled_from(TcpType)) if protocol == "tcp" else None,
        sdp_mid=draw(st.none() | st.text(max_size=8)),
        sdp_mline_index=draw(st.none() | st.integers(0, 65535)),
        username_fragment=draw(st.none() | st.text(max_size=8)),
        extensions=tuple(draw(st.lists(st.tuples(tokens, vchars), max_size=4))),
    )


@given(candidates())
def test_sdp_round_trip(candidate: Candidate) -> None:
    line = candidate.to_sdp()
    assert line.startswith("candidate:")
    for text in (line, "a=" + line + "\r\n"):
        parsed = Candidate.from_sdp(
            text,
            sdp_mid=candidate.sdp_mid,
            sdp_mline_index=candidate.sdp_mline_index,
            username_fragment=candidate.username_fragment,
        )
        assert parsed == candidate
    bare = dataclasses.replace(
        candidate, sdp_mid=None, sdp_mline_index=None, username_fragment=None
    )
    assert Candidate.from_sdp(line) == bare


@given(candidates())
def test_json_round_trip(candidate: Candidate) -> None:
    assert Candidate.from_json(json.dumps(candidate.to_json())) == candidate
    assert Candidate.from_json(candidate.to_json()) == candidate


@given(st.text())
def test_arbitrary_text_raises_only_candidate_error(text: str) -> None:
    try:
        Candidate.from_sdp(text)
    except CandidateError as exc:
        assert exc.field is not None


_PIECES = [*GOOD.split(), "raddr", "rport", "tcptype", "tcp", "active", "::1", "0", "65536"]


@given(st.lists(st.sampled_from(_PIECES) | st.text(max_size=6), max_size=16))
def test_near_miss_lines_raise_only_candidate_error(pieces: list[str]) -> None:
    try:
        parsed = Candidate.from_sdp(" ".join(pieces))
    except CandidateError as exc:
        assert exc.field is not None
    else:
        _assert_as_constructed(parsed)


def _assert_as_constructed(parsed: Candidate) -> None:
    """The parser makes its candidate without the constructor's checks: what it makes must
    pass them unchanged (every field valid and in its normal form)."""
    assert dataclasses.replace(parsed) == parsed


@pytest.mark.parametrize(
    "line",
    [
        "A=CANDIDATE:1 1 UDP 2130706431 2001:DB8:0::1 5000 TYP HOST",
        "candidate:x 2 TCP 7 ::FFFF:10.0.0.1 9 typ SRFLX RADDR 2001:DB8::0:2 RPORT 9 TCPTYPE so",
        "candidate:1 1 udp 1 host.local 0 typ prflx generation 0 network-id 1 ufrag AbC+",
    ],
)
def test_a_parsed_candidate_is_what_the_constructor_makes(line: str) -> None:
    parsed = Candidate.from_sdp(line, sdp_mid="0", sdp_mline_index=0, username_fragment="u")
    _assert_as_constructed(parsed)
    assert parsed.protocol in ("udp", "tcp")


@given(candidates(), st.data())
def test_mutated_lines_raise_only_candidate_error(
    candidate: Candidate, data: st.DataObject
) -> None:
    parts = candidate.to_sdp().split(" ")
    index = data.draw(st.integers(0, len(parts) - 1))
    parts[index] = data.draw(st.text(max_size=8))
    try:
        parsed = Candidate.from_sdp(" ".join(parts))
    except CandidateError as exc:
        assert exc.field is not None
    else:
        _assert_as_constructed(parsed)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@given(
    st.text()
    | json_values.map(json.dumps)
    | st.fixed_dictionaries(
        {"candidate": st.sampled_from([GOOD, ""]) | st.text()},
        optional={
            "sdpMid": json_values,
            "sdpMLineIndex": json_values,
            "usernameFragment": json_values,
        },
    )
)
def test_arbitrary_json_raises_only_candidate_error(obj: Any) -> None:
    with contextlib.suppress(CandidateError):
        Candidate.from_json(obj)


# -- priorities (RFC 8445 §5.1.2, §6.1.2.3) --------------------------------------------------------


def test_type_preferences_are_the_recommended_values() -> None:
    assert dict(TYPE_PREFERENCE) == {HOST: 126, PRFLX: 110, SRFLX: 100, RELAY: 0}
    with pytest.raises(TypeError):
        TYPE_PREFERENCE[HOST] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("type", "local", "component", "expected"),
    [
        (HOST, 65535, 1, 2130706431),  # 126*2^24 + 65535*2^8 + 255
        (HOST, 65535, 2, 2130706430),
        (SRFLX, 65535, 1, 1694498815),  # 100*2^24 + 65535*2^8 + 255
        (SRFLX, 30, 1, 1677729535),  # Chrome's srflx above
        (HOST, 32512, 1, 2122252543),  # Firefox's host
        (PRFLX, 65535, 1, 1862270975),  # 110*2^24 + 65535*2^8 + 255
        (RELAY, 65535, 1, 16777215),  # Pion's relay
        (RELAY, 1, 256, 256),
    ],
)
def test_candidate_priority(type: CandidateType, local: int, component: int, expected: int) -> None:
    assert candidate_priority(type, local, component) == expected


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((HOST, -1, 1), "local_preference"),
        ((HOST, 65536, 1), "local_preference"),
        ((HOST, 1, 0), "component"),
        ((HOST, 1, 257), "component"),
        (("host", 1, 1), "type"),
    ],
)
def test_candidate_priority_validation(args: tuple[Any, int, int], field: str) -> None:
    with pytest.raises(CandidateError) as info:
        candidate_priority(*args)
    assert info.value.field == field


def test_pair_priority() -> None:
    g, d = 2130706431, 1694498815
    # 2^32 * MIN(G, D) + 2 * MAX(G, D) + (G > D ? 1 : 0)
    assert pair_priority(g, d) == 7277816997797167103
    assert pair_priority(g, d) == 1694498815 * 4294967296 + 2 * 2130706431 + 1
    assert pair_priority(d, g) == 7277816997797167102
    assert pair_priority(5, 5) == 5 * 2**32 + 10
    assert pair_priority(1, 1) == 2**32 + 2
    top = 2**32 - 1  # beyond RFC 8445's 2**31 - 1, but the grammar carries it
    assert pair_priority(top, top) == top * 2**32 + 2 * top
    rfc_top = 2**31 - 1
    assert pair_priority(rfc_top, rfc_top - 1) < 2**63  # fits a signed 64-bit integer
    for bad in ((0, 1), (1, 0), (2**32, 1), (True, 1)):
        with pytest.raises(CandidateError):
            pair_priority(*bad)


@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_pair_priority_fields(g: int, d: int) -> None:
    # With RFC 8445 candidate priorities (< 2**31) the three terms occupy separate bits.
    p = pair_priority(g, d)
    assert p >> 32 == min(g, d)
    assert (p >> 1) & 0x7FFFFFFF == max(g, d)
    assert p & 1 == (1 if g > d else 0)


def test_local_preference_rfc_8421_and_6724() -> None:
    v6 = local_preference("2001:db8::1")  # ::/0, precedence 40
    v4 = local_preference("192.0.2.1")  # ::ffff:0:0/96, precedence 35
    ula = local_preference("fd00::1")  # fc00::/7, precedence 3
    six_to_four = local_preference("2002:c000:201::1")  # 2002::/16, precedence 30
    teredo = local_preference("2001:0:4136:e378::1")  # 2001::/32, precedence 5
    assert (v6, v4, six_to_four, teredo, ula) == (
        255 << 8 | 40,
        255 << 8 | 35,
        255 << 8 | 30,
        255 << 8 | 5,
        255 << 8 | 3,
    )
    assert local_preference("::1") == 255 << 8 | 50
    # The interface ranks first: IPv4 on a better interface beats IPv6 on a worse one.
    assert local_preference("192.0.2.1", interface_preference=200) > local_preference(
        "2001:db8::1", interface_preference=199
    )
    assert local_preference("10.0.0.1", interface_preference=0) == 35
    for value in (v6, v4, ula):
        assert 0 <= value <= 65535
    with pytest.raises(CandidateError):
        local_preference("printer.local")
    with pytest.raises(CandidateError):
        local_preference("10.0.0.1", interface_preference=256)


# -- foundations (RFC 8445 §5.1.1.3) ---------------------------------------------------------------


_FOUNDATION_OF = """
from trice.ice import CandidateType, compute_foundation
print(compute_foundation(CandidateType.HOST, "10.0.0.1", "udp", None))
"""


def test_a_foundation_is_stable_in_a_process_and_keyed_with_its_secret() -> None:
    """The same in a process, made of ice-chars; another in another process, and not the
    plain SHA-256 of the address it was (unkeyed, a foundation gave the base address back
    to a peer that hashed the private ranges: under mDNS, the address the name hides)."""
    first = compute_foundation(HOST, "10.0.0.1", "udp", None)
    assert compute_foundation(HOST, "10.0.0.1", "udp", None) == first
    plain = hashlib.sha256(b"host\x0010.0.0.1\x00udp\x00").hexdigest()[:8]
    assert first != plain and len(first) == 8
    others = {
        subprocess.run(
            [sys.executable, "-c", _FOUNDATION_OF], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(others | {first}) == 3, others
    foundation = compute_foundation(RELAY, "2001:db8::1", "tcp", "turn.example.org:3478")
    Candidate(**{**BASE, "foundation": foundation})  # valid ice-chars
    # An agent's own key: its foundations are its own, and follow the same rules.
    mine = compute_foundation(HOST, "10.0.0.1", "udp", None, key=b"k" * 16)
    assert mine == compute_foundation(HOST, "10.0.0.1", "UDP", None, key=b"k" * 16)
    assert mine not in (first, compute_foundation(HOST, "10.0.0.1", "udp", None, key=b"j" * 16))
    with pytest.raises(CandidateError):
        compute_foundation(HOST, "10.0.0.1", "udp", key="k" * 16)  # type: ignore[arg-type]
    with pytest.raises(CandidateError):  # (it was taken for no key: the process's)
        compute_foundation(HOST, "10.0.0.1", "udp", key=b"")


def test_foundation_equality_rules() -> None:
    base = compute_foundation(SRFLX, "192.168.1.2", "udp", "198.51.100.1")
    # Same type, base IP, transport and server: same foundation, however spelled.
    assert compute_foundation(SRFLX, "192.168.1.2", "UDP", "198.51.100.1") == base
    assert compute_foundation(HOST, "2001:db8::1", "udp", None) == compute_foundation(
        HOST, "2001:DB8:0::1", "udp", None
    )
    # Any one of them differs: a different foundation.
    assert compute_foundation(PRFLX, "192.168.1.2", "udp", "198.51.100.1") != base
    assert compute_foundation(SRFLX, "192.168.1.3", "udp", "198.51.100.1") != base
    assert compute_foundation(SRFLX, "192.168.1.2", "tcp", "198.51.100.1") != base
    assert compute_foundation(SRFLX, "192.168.1.2", "udp", "198.51.100.2") != base
    assert compute_foundation(SRFLX, "192.168.1.2", "udp", None) != base
    with pytest.raises(CandidateError):
        compute_foundation("host", "10.0.0.1", "udp")  # type: ignore[arg-type]
    with pytest.raises(CandidateError):
        compute_foundation(HOST, 10, "udp")  # type: ignore[arg-type]


def test_foundations_are_kept_only_for_plain_strings() -> None:
    """Foundations are cached by their arguments; a str subclass that hashes and compares
    like a plain string but lower-cases differently gets its own answer, before and after
    the plain string's is kept."""

    class Shouting(str):
        def lower(self) -> str:
            return self.upper()

    plain = compute_foundation(HOST, "Host.Example", "udp")
    assert compute_foundation(HOST, Shouting("Host.Example"), "udp") != plain
    assert compute_foundation(HOST, "Host.Example", "udp") == plain
    assert compute_foundation(HOST, "host.example", "udp") == plain


class _EqualToAnything:
    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("field", ["protocol", "extensions"])
def test_a_field_that_merely_compares_equal_to_a_valid_one_is_refused(field: str) -> None:
    """The constructor's quick checks look at types, not only at equality."""
    with pytest.raises(CandidateError) as caught:
        Candidate(**{**BASE, field: _EqualToAnything()})
    assert caught.value.field == field


def test_str_subclasses_and_empty_lists_become_plain_values() -> None:
    class Text(str):
        pass

    candidate = Candidate(**{**BASE, "protocol": Text("udp"), "extensions": []})
    assert type(candidate.protocol) is str and candidate.protocol == "udp"
    assert candidate.extensions == () and type(candidate.extensions) is tuple


# -- purity -------------------------------------------------------------------------------------


def test_pure_packages_import_without_trio_sockets_or_clock() -> None:
    """trice.ice and trice._servers never import trio, socket, ifaddr or time.

    The top-level ``trice`` package (the shell's business) is replaced by a bare namespace so that
    only the pure modules themselves are exercised.
    """
    package_dir = Path(__file__).resolve().parent.parent / "trice"
    code = f"""
import sys, types
for name in ("trio", "socket", "ifaddr", "time"):
    sys.modules[name] = None
package = types.ModuleType("trice")
package.__path__ = [{str(package_dir)!r}]
sys.modules["trice"] = package
import trice.ice, trice._servers
from trice.ice import Candidate
assert Candidate.from_sdp("candidate:1 1 udp 1 10.0.0.1 1 typ host").port == 1
print("pure")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("".join(f" x{i} y" for i in range(33)), "extension"),  # (one more than 32)
        (" x " + "y" * 257, "extension"),
        (" " + "x" * 257 + " y", "extension"),
    ],
)
def test_a_candidate_line_carries_a_bounded_load(extra: str, field: str) -> None:
    """A peer's candidates are kept for the agent's life, and max_remote_candidates bounds
    only how many come: one line had any number of extensions, of any length (megabytes
    held for a few candidates).  32 of 256 characters are taken."""
    with pytest.raises(CandidateError) as info:
        Candidate.from_sdp(GOOD + extra)
    assert info.value.field == field
    kept = Candidate.from_sdp(GOOD + "".join(f" x{i} {'y' * 256}" for i in range(32)))
    assert len(kept.extensions) == 32
    with pytest.raises(CandidateError):
        dataclasses.replace(kept, extensions=(*kept.extensions, ("one", "more")))


@pytest.mark.parametrize("key", ["sdpMid", "usernameFragment"])
def test_signaling_strings_are_256_characters_at_most(key: str) -> None:
    assert Candidate.from_json({"candidate": GOOD, key: "a" * 256}) is not None
    with pytest.raises(CandidateError) as info:
        Candidate.from_json({"candidate": GOOD, key: "a" * 257})
    assert info.value.field == key
    assert Candidate.from_sdp(GOOD, username_fragment="").username_fragment is None


@pytest.mark.parametrize("key", ["TopSecretFoundationKey", bytearray(b"TopSecretFoundationKey")])
def test_a_foundation_key_of_the_wrong_type_is_named_not_quoted(key: object) -> None:
    """compute_foundation's key is a secret: an error about its type names the type only
    (it quoted 40 characters of it: the secrets review)."""
    with pytest.raises(CandidateError) as caught:
        compute_foundation(CandidateType.HOST, "192.0.2.10", "udp", key=key)  # type: ignore[arg-type]
    assert caught.value.field == "key"
    assert "TopSecret" not in str(caught.value)
    assert type(key).__name__ in str(caught.value)


@pytest.mark.parametrize("prefix", ["a=", ""])
def test_another_attributes_line_is_no_candidate_and_its_value_is_not_quoted(prefix: str) -> None:
    """An SDP fragment (RFC 8840) fed line by line: its ice-pwd line is refused as no
    candidate line, naming the attribute, not its value (the pwd was quoted as a bad
    foundation, into a signaling loop's log: the secrets review)."""
    pwd = "asd88fgpdd777uzjYhagZg"
    with pytest.raises(CandidateError) as caught:
        Candidate.from_sdp(f"{prefix}ice-pwd:{pwd}")
    assert caught.value.field == "candidate"
    assert "ice-pwd" in str(caught.value) and pwd not in str(caught.value)
    with pytest.raises(CandidateError) as caught:  # (a foundation with ':', after candidate:)
        Candidate.from_sdp("candidate:a:b 1 udp 1 192.0.2.1 5 typ host")
    assert caught.value.field == "foundation"
