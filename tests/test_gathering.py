"""The pure candidate constructors gathering uses (RFC 8445 §5.1.1, §5.1.2)."""

from __future__ import annotations

from pathlib import Path

import pytest

import trice
from trice.ice import CandidateType, TcpType, compute_foundation
from trice.ice._gathering import (
    address_problem,
    host_candidate,
    relay_candidate,
    server_address_problem,
    srflx_candidate,
    tcp_host_candidate,
)
from trice.ice._priority import dual_stack_order


def test_host_candidates_rank_interfaces_then_prefer_ipv6() -> None:
    first_v4 = host_candidate(("192.0.2.1", 5000), interface_rank=0)
    first_v6 = host_candidate(("2001:db8::1", 5001), interface_rank=0)
    second_v6 = host_candidate(("2001:db8::2", 5002), interface_rank=1)
    assert first_v4.type is CandidateType.HOST and first_v4.related_address is None
    assert first_v6.priority > first_v4.priority > second_v6.priority
    assert first_v4.priority >> 24 == 126  # host type preference


def test_a_link_local_address_ranks_after_the_others_of_its_family_and_deprecated_last() -> None:
    """A 169.254/16 address (or fe80::/10) of a scope too small for most peers comes after
    the routable ones of its family (RFC 6724 §6 rule 2: it came first when the system
    listed it first); a deprecated one comes after all fresh ones, of either family (RFC
    4862 §5.5.4: it ranked first, IPv6 above a fresh IPv4 address)."""
    assert dual_stack_order(["169.254.7.7", "10.9.9.9"]) == ["10.9.9.9", "169.254.7.7"]
    assert dual_stack_order(["fe80::1", "2001:db8::1", "10.9.9.9"]) == [
        "2001:db8::1",
        "10.9.9.9",
        "fe80::1",
    ]
    assert dual_stack_order(["2001:db8:2::5", "10.9.9.9"], {"2001:db8:2::5"}) == [
        "10.9.9.9",
        "2001:db8:2::5",
    ]


def test_dual_stack_order_interleaves_the_families_by_precedence() -> None:
    """RFC 8421 §4: each family by RFC 6724 precedence, the two taken in turn, starting
    with the family of the best (IPv6 unless it has only ULA and such)."""
    assert dual_stack_order(
        ["192.0.2.1", "fd00::1", "2001:db8::1", "192.0.2.2", "2001:db8::2", "2002:c000:201::1"]
    ) == ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", "2002:c000:201::1", "fd00::1"]
    assert dual_stack_order(["fd00::1", "10.0.0.1", "fd00::2", "10.0.0.2"]) == [
        "10.0.0.1",
        "fd00::1",
        "10.0.0.2",
        "fd00::2",
    ]
    assert dual_stack_order(["10.0.0.1"]) == ["10.0.0.1"] and dual_stack_order([]) == []
    with pytest.raises(trice.CandidateError):
        dual_stack_order(["printer.local"])


def test_an_address_rank_makes_the_low_byte_of_the_local_preference() -> None:
    first = host_candidate(("192.0.2.1", 5000), interface_rank=0, address_rank=0)
    second = host_candidate(("2001:db8::1", 5000), interface_rank=0, address_rank=1)
    other = host_candidate(("2001:db8::9", 5000), interface_rank=1, address_rank=0)
    assert (first.priority >> 8) & 0xFFFF == 65535 and (second.priority >> 8) & 0xFFFF == 65534
    assert first.priority > second.priority > other.priority
    active = tcp_host_candidate(("192.0.2.1", 0), TcpType.ACTIVE, 0, address_rank=0)
    active2 = tcp_host_candidate(("192.0.2.2", 0), TcpType.ACTIVE, 0, address_rank=1)
    assert active.priority > active2.priority


def test_srflx_keeps_the_base_preference_and_relates_to_it() -> None:
    base = host_candidate(("10.0.0.2", 5000), interface_rank=0)
    srflx = srflx_candidate(base, ("203.0.113.7", 40000), "stun.example.org")
    assert srflx.type is CandidateType.SRFLX
    assert (srflx.related_address, srflx.related_port) == ("10.0.0.2", 5000)
    assert srflx.priority >> 24 == 100
    assert (srflx.priority >> 8) & 0xFFFF == (base.priority >> 8) & 0xFFFF
    # Same type, base and server: same foundation, whatever the mapping (RFC 8445 §5.1.1.3).
    again = srflx_candidate(base, ("203.0.113.8", 40001), "stun.example.org")
    other_server = srflx_candidate(base, ("203.0.113.7", 40000), "stun.example.net")
    assert srflx.foundation == again.foundation != other_server.foundation


def test_relay_candidate() -> None:
    relay = relay_candidate(("203.0.113.2", 50000), ("198.51.100.9", 41000), "turn.example.org")
    assert relay.type is CandidateType.RELAY and relay.priority >> 24 == 0
    assert (relay.related_address, relay.related_port) == ("198.51.100.9", 41000)
    assert relay.foundation == compute_foundation(
        CandidateType.RELAY, "203.0.113.2", "udp", "turn.example.org"
    )
    # (A grant without XOR-MAPPED-ADDRESS: the line still carries raddr and rport.)
    unknown = relay_candidate(("203.0.113.2", 50000), None, "t")
    assert (unknown.related_address, unknown.related_port) == ("0.0.0.0", 0)
    assert unknown.to_sdp().endswith("typ relay raddr 0.0.0.0 rport 0")
    unknown6 = relay_candidate(("2001:db8::2", 50000), None, "t")
    assert (unknown6.related_address, unknown6.related_port) == ("::", 0)


@pytest.mark.parametrize(
    ("address", "port", "ipv6", "problem"),
    [
        ("203.0.113.7", 40000, False, None),
        ("2001:db8::5", 40000, True, None),
        ("2001:db8::5", 40000, None, None),
        ("203.0.113.7", 40000, True, "an IPv4 address for an IPv6 socket"),
        ("example.org", 40000, False, "not an IP address"),
        ("203.0.113.7", 0, False, "port 0"),
        ("::", 40000, True, "the unspecified address"),
        ("ff02::1", 40000, True, "a multicast address"),
        ("::ffff:1.2.3.4", 40000, True, "an IPv4-mapped IPv6 address"),
    ],
)
def test_address_problem(address: str, port: int, ipv6: bool | None, problem: str | None) -> None:
    assert address_problem(address, port, ipv6=ipv6) == problem


@pytest.mark.parametrize(
    ("address", "base", "problem"),
    [
        ("203.0.113.7", "192.0.2.2", None),
        ("127.0.0.1", "127.0.0.1", None),  # (a server on this machine, asked from loopback)
        ("::1", "::1", None),
        ("127.0.0.1", "192.0.2.2", "a loopback address"),
        ("::1", "fd00::2", "a loopback address"),
        ("169.254.1.1", "192.0.2.2", "a link-local address"),
        ("fe80::1", "fd00::2", "a link-local address"),
        ("0.1.2.3", "192.0.2.2", "a reserved IPv4 address"),
        ("240.0.0.1", "192.0.2.2", "a reserved IPv4 address"),
        ("255.255.255.255", "192.0.2.2", "a reserved IPv4 address"),
        ("224.0.0.1", "192.0.2.2", "a multicast address"),  # (address_problem's)
    ],
)
def test_a_servers_answer_is_no_address_a_peer_could_not_reach(
    address: str, base: str, problem: str | None
) -> None:
    """What a STUN or TURN server answers, asked from ``base``: besides what no candidate
    can be (``address_problem``), what no peer could reach."""
    ipv6 = ":" in base
    assert server_address_problem(address, 40000, ipv6=ipv6, base=base) == problem


def test_relays_of_one_server_reached_over_other_transports_have_other_foundations() -> None:
    """RFC 8445 §5.1.1.3: candidates share a foundation only if obtained over the same
    transport from the same server; the gathering names the server with its transport."""
    relayed = ("203.0.113.2", 50000)
    over = {
        transport: relay_candidate(relayed, None, f"turn.example.org turn {transport}")
        for transport in ("udp", "tcp")
    }
    assert over["udp"].foundation != over["tcp"].foundation
    same = relay_candidate(("203.0.113.2", 50001), None, "turn.example.org turn udp")
    assert same.foundation == over["udp"].foundation


def test_tcp_candidates_rank_below_udp_on_as_many_interfaces_as_the_docs_say() -> None:
    """An active TCP candidate (the higher of the two kinds) ranks below the UDP host
    candidate of its address on a host's first 37 interfaces, as tcp.rst and
    ``NetworkConfig``'s docstring both say (the docstring said 36)."""

    def below(rank: int) -> bool:
        udp = host_candidate(("192.0.2.1", 5000), rank, address_rank=0)
        active = tcp_host_candidate(("192.0.2.1", 5000), TcpType.ACTIVE, rank, address_rank=0)
        return active.priority < udp.priority

    first = next(rank for rank in range(256) if not below(rank))
    said = f"on a host's first {first} interfaces"
    assert said in " ".join((trice.NetworkConfig.__doc__ or "").split())
    tcp_rst = Path(__file__).resolve().parents[1] / "docs" / "guide" / "tcp.rst"
    assert said in " ".join(tcp_rst.read_text().split())
