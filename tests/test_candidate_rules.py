"""Rules of the candidate model and of the names and addresses around it that the other
candidate, server and mDNS tests did not pin (found by a mutation review): the lengths of
host names and their labels (RFC 1035, RFC 1123) and numeric last labels (RFC 3696), the
ranges of a candidate's fields (RFC 8445, RFC 8839), white space and case in its text, the
extent of fe80::/10, the addresses no check goes to, the length of an ICE server's USERNAME
(RFC 8489 §14.3), and the escaping of an mDNS name's labels."""

from __future__ import annotations

import struct

import pytest
from test_candidate import BASE, GOOD
from test_mdns_message import _header, _label

from trice import CandidateError, ConfigError, IceServer
from trice.ice import Candidate, CandidateType
from trice.ice._candidate import is_hostname
from trice.ice._gathering import no_destination
from trice.ice._priority import compute_foundation, is_link_local, tcp_local_preference
from trice.mdns import TYPE_A, decode_message


def _line(address: str) -> str:
    """A host candidate's SDP line at ``address``."""
    return GOOD.replace("10.0.0.1", address)


# -- host names ------------------------------------------------------------------------------


def test_a_host_name_is_253_characters_at_most() -> None:
    """RFC 1123 §2.1 (and RFC 1035's 255 bytes on the wire): a host name is 253 characters
    of text at most; a candidate line with a longer one is refused."""
    name = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(name) == 253 and is_hostname(name)
    longer = ".".join(["a" * 63] * 3 + ["b" * 62])
    assert len(longer) == 254 and not is_hostname(longer)
    with pytest.raises(CandidateError):
        Candidate.from_sdp(_line(longer))


def test_a_label_is_63_characters_at_most() -> None:
    """RFC 1035 §2.3.4: a label has at most 63 octets; a candidate line with a longer one is
    refused."""
    assert is_hostname("a" * 63 + ".local")
    assert not is_hostname("a" * 64 + ".local")
    with pytest.raises(CandidateError):
        Candidate.from_sdp(_line("a" * 64 + ".local"))


@pytest.mark.parametrize("text", ["0x7f000001", "127.0.0.0x1", "10.0.0.0X0a", "host.0x"])
def test_a_name_whose_last_label_is_a_hexadecimal_number_is_no_host_name(text: str) -> None:
    """A last label that is a number, hexadecimal included, is refused (RFC 3696 §2): the
    resolver reads ``0x7f000001`` as an address."""
    assert not is_hostname(text)
    with pytest.raises(CandidateError):
        Candidate.from_sdp(_line(text))


# -- a candidate's fields, in its constructor, its SDP line and its JSON ----------------------


@pytest.mark.parametrize("component", [0, 257])
def test_the_constructor_refuses_a_component_out_of_1_to_256(component: int) -> None:
    """RFC 8445 §5.1.2.1: a component ID is 1..256; the constructor refuses another, naming
    the field, as the SDP parser does."""
    fields = BASE | {"component": component}
    with pytest.raises(CandidateError) as info:
        Candidate(**fields)
    assert info.value.field == "component"


@pytest.mark.parametrize("blank", [" ", "\r\n", " \t "])
def test_a_json_candidate_of_white_space_is_the_end_of_candidates(blank: str) -> None:
    """``from_json`` reads a ``candidate`` of white space only as it reads ``""`` (the end
    of candidates): the line's white space is stripped, as :meth:`Candidate.from_sdp`
    strips it."""
    assert Candidate.from_json({"candidate": blank, "sdpMid": "0"}) is None


def test_a_priority_of_more_than_ten_digits_is_refused() -> None:
    """RFC 8839 §5.1: ``priority = 1*10DIGIT``; eleven digits are not one, leading zeros or
    not, and ten are."""
    with pytest.raises(CandidateError) as info:
        Candidate.from_sdp("candidate:1 1 udp 00000000001 192.0.2.1 5000 typ host")
    assert info.value.field == "priority"
    good = Candidate.from_sdp("candidate:1 1 udp 0000000001 192.0.2.1 5000 typ host")
    assert good.priority == 1


def test_from_sdp_refuses_an_sdp_mline_index_out_of_range() -> None:
    """The signaling fields given to ``from_sdp`` are checked as the constructor checks
    them: an m-line index is 0..65535."""
    with pytest.raises(CandidateError) as info:
        Candidate.from_sdp(_line("192.0.2.1"), sdp_mline_index=65536)
    assert info.value.field == "sdp_mline_index"


def test_an_extension_is_found_by_its_name_in_any_case() -> None:
    """``extension(name)`` and ``ufrag`` look extension names up in any case (as
    documented)."""
    candidate = Candidate.from_sdp(_line("192.0.2.1") + " Generation 0 UFRAG abcd")
    assert candidate.extension("generation") == "0"
    assert candidate.extension("GENERATION") == "0"
    assert candidate.ufrag == "abcd"


# -- priorities and foundations --------------------------------------------------------------


@pytest.mark.parametrize("address", ["fe80::1", "fe9a::1", "fea0::1", "febf:ffff::1"])
def test_all_of_fe80_10_is_link_local(address: str) -> None:
    """fe80::/10 runs from fe80:: to febf:ffff:...: all of it is link-local (RFC 4291
    §2.5.6)."""
    assert is_link_local(address)


def test_fec0_is_not_link_local() -> None:
    """fec0:: lies just past fe80::/10: not link-local (RFC 4291 §2.5.6)."""
    assert not is_link_local("fec0::1")


def test_a_servers_name_makes_one_foundation_in_any_case() -> None:
    """``compute_foundation`` compares server names (and protocols) without regard to case
    (documented): one server spelled two ways makes one foundation."""
    key = b"k" * 16
    lower = compute_foundation(CandidateType.SRFLX, "10.0.0.1", "udp", "stun.example.org", key=key)
    upper = compute_foundation(CandidateType.SRFLX, "10.0.0.1", "UDP", "STUN.Example.ORG", key=key)
    assert lower == upper


@pytest.mark.parametrize("tcp_type", ["bogus", None, 3])
def test_tcp_local_preference_refuses_what_is_no_tcp_type(tcp_type: object) -> None:
    """A ``tcp_type`` that is no TcpType is a CandidateError naming it (documented)."""
    with pytest.raises(CandidateError) as info:
        tcp_local_preference(CandidateType.HOST, tcp_type, 8191)  # type: ignore[arg-type]
    assert info.value.field == "tcp_type"


# -- where checks go -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "240.0.0.1",
        "255.255.255.255",
        "0.1.2.3",
        "224.0.0.251",
        "::",
        "ff02::1",
        "::ffff:255.255.255.255",
        "::ffff:0.0.0.1",
        "::ffff:224.0.0.1",
        "::ffff:0.0.0.0",
        "peer.local",
    ],
)
def test_no_check_goes_to_a_reserved_broadcast_or_multicast_address(address: str) -> None:
    """``no_destination`` holds for the unspecified address, multicast, IPv4 0/8 and 240/4
    (the broadcast included), also when spelled as IPv4-mapped IPv6 (a dual-stack socket
    sends there), and for a name, which is no IP address (RFC 8839 §5.1: FQDN candidates
    are ignored)."""
    assert no_destination(address)


@pytest.mark.parametrize("address", ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "::1"])
def test_a_unicast_address_is_a_destination(address: str) -> None:
    """A unicast address, IPv4, IPv6, IPv4-mapped or loopback, is one a check may go to."""
    assert not no_destination(address)


# -- an ICE server's USERNAME ----------------------------------------------------------------


def test_a_username_of_508_bytes_is_taken_and_509_refused() -> None:
    """STUN's USERNAME holds at most 508 bytes (RFC 8489 §14.3), counted in UTF-8: an
    IceServer's username of 508 bytes is taken, one of 509 refused."""
    IceServer("turn:turn.example.org", "u" * 508, "pw")
    IceServer("turn:turn.example.org", "é" * 254, "pw")  # (508 bytes in UTF-8)
    with pytest.raises(ConfigError):
        IceServer("turn:turn.example.org", "u" * 509, "pw")
    with pytest.raises(ConfigError):
        IceServer("turn:turn.example.org", "é" * 254 + "u", "pw")


# -- mDNS names ------------------------------------------------------------------------------


def _question(*labels: str) -> bytes:
    """An mDNS query of one question (type A) for the name of ``labels``."""
    name = b"".join(_label(label) for label in labels) + b"\x00"
    return _header(flags=0, qd=1) + name + struct.pack("!HH", TYPE_A, 1)


def test_a_backslash_in_a_label_is_escaped_so_that_no_two_names_read_alike() -> None:
    """The name of two labels ``a\\`` and ``b`` and the one-label name ``a.b`` are two
    names: each label's backslash and dot are escaped, so their texts differ."""
    two = decode_message(_question("a\\", "b")).questions[0].name
    one = decode_message(_question("a.b")).questions[0].name
    assert two != one
    assert one == "a\\.b"
    assert two == "a\\\\.b"
