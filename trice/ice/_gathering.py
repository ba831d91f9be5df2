"""Local candidates as gathering finds them (RFC 8445 §5.1.1, §5.1.2).

Pure: the shell finds addresses (a bound socket, a STUN mapping, a TURN allocation) and these
functions turn them into candidates with the right type, priority, foundation and related
address, so that every rule about candidates stays in the core.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Sequence

from trice.ice._candidate import Candidate, CandidateType, TcpType
from trice.ice._check import prflx_foundation
from trice.ice._priority import (
    candidate_priority,
    compute_foundation,
    local_preference,
    tcp_local_preference,
)

__all__ = [
    "no_destination",
    "ACTIVE_PORT",
    "address_problem",
    "host_candidate",
    "prflx_candidate",
    "relay_candidate",
    "server_address_problem",
    "srflx_candidate",
    "tcp_host_candidate",
    "unique_priority",
]

Address = tuple[str, int]


def address_problem(address: str, port: int, *, ipv6: bool | None) -> str | None:
    """Why a server's answer ``(address, port)`` (a STUN mapping, a TURN relayed address)
    cannot be signalled as a candidate, or ``None`` if it can: not an IP address, not of the
    family of the socket it stands for (``ipv6``; ``None``: either), port 0, unspecified,
    multicast, or an IPv4-mapped IPv6 address.  A peer could not use any of these."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if ipv6 is not None and (ip.version == 6) != ipv6:
        return f"an IPv{ip.version} address for an IPv{6 if ipv6 else 4} socket"
    if not 0 < port <= 0xFFFF:
        return f"port {port}"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    return None


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_RESERVED = ipaddress.ip_network("240.0.0.0/4")  # (255.255.255.255, the broadcast, within)


@functools.lru_cache(maxsize=1024)
def no_destination(address: str) -> bool:
    """Whether no check may go to ``address``: an IP address unspecified, multicast, or
    (IPv4) in 0.0.0.0/8 or 240.0.0.0/4, the broadcast address included, or no IP address at
    all (a DNS name).  A peer that signals one (by mistake, or to have our checks multicast
    on our network) has it left out.  A signalled name is left out too (RFC 8839 §5.1: an
    agent ignores FQDN candidates, which no extension it knows defines): the shell resolves
    an mDNS ``.local`` one first, and hands over the address found."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # (a dual-stack socket sends to the IPv4 address it spells)
    if ip.is_unspecified or ip.is_multicast:
        return True
    return isinstance(ip, ipaddress.IPv4Address) and (ip in _THIS_NETWORK or ip in _RESERVED)


def server_address_problem(address: str, port: int, *, ipv6: bool | None, base: str) -> str | None:
    """Why a server's answer ``(address, port)`` (a STUN mapping, a TURN relayed address),
    asked from the local address ``base``, cannot be signalled (see
    :func:`address_problem`), or ``None``: besides, a server on the way to a peer gives no
    loopback address (unless asked from one: a server on this machine), no link-local one
    (it has no scope), and no IPv4 address of 0.0.0.0/8 or 240.0.0.0/4 (reserved, and the
    broadcast address): a peer could reach none of them."""
    problem = address_problem(address, port, ipv6=ipv6)
    if problem is not None:
        return problem
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        try:
            asked_from_loopback = ipaddress.ip_address(base.split("%", 1)[0]).is_loopback
        except ValueError:
            asked_from_loopback = False
        if not asked_from_loopback:
            return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and (ip in _THIS_NETWORK or ip in _RESERVED):
        return "a reserved IPv4 address"
    return None


#: Relayed candidates of one agent come from at most a few servers: one local preference.
_RELAY_PREFERENCE = 65535


def host_candidate(
    address: Address,
    interface_rank: int,
    component: int = 1,
    *,
    address_rank: int | None = None,
    key: bytes | None = None,
) -> Candidate:
    """A host candidate (RFC 8445 §5.1.1.1).

    ``interface_rank`` is the interface's place in the order interfaces were found (0 is the
    most preferred): the high byte of the local preference.  ``address_rank`` is the
    address's place among its interface's (0 first; ``_priority.dual_stack_order``
    orders them, RFC 8421 §4): the low byte.  Without it, the low byte is the address's
    RFC 6724 precedence (:func:`~trice.ice.local_preference`): on one interface, IPv6 comes
    before IPv4, which serves an interface with one address of each family.  ``key`` keys
    the foundation (see :func:`~trice.ice.compute_foundation`: an agent's own secret), as
    in the other constructors here.
    """
    preference = _host_preference(address[0], interface_rank, address_rank)
    return Candidate(
        foundation=compute_foundation(CandidateType.HOST, address[0], "udp", key=key),
        component=component,
        protocol="udp",
        priority=candidate_priority(CandidateType.HOST, preference, component),
        address=address[0],
        port=address[1],
        type=CandidateType.HOST,
    )


#: The port an active ICE-TCP candidate is signalled with (RFC 6544 §4.5: it connects
#: from ports of its own choosing, and accepts no connection).
ACTIVE_PORT = 9


def _host_preference(
    address: str, interface_rank: int, address_rank: int | None, address_bits: int = 8
) -> int:
    """A host candidate's local preference (see :func:`host_candidate`), of ``8 +
    address_bits`` bits: the interface's rank in the high 8, the address's in the rest."""
    interface_preference = 255 - min(interface_rank, 255)
    if address_rank is None:
        preference = local_preference(address, interface_preference=interface_preference)
        return preference >> (8 - address_bits)
    lowest = (1 << address_bits) - 1
    return interface_preference << address_bits | (lowest - min(address_rank, lowest))


def tcp_host_candidate(
    address: Address,
    tcp_type: TcpType,
    interface_rank: int,
    component: int = 1,
    *,
    address_rank: int | None = None,
    key: bytes | None = None,
) -> Candidate:
    """An ICE-TCP host candidate (RFC 6544 §4.5): passive at the listening ``address``, or
    active (``address``'s port is then ignored: it is signalled as :data:`ACTIVE_PORT`).

    Its foundation differs from the UDP host candidate's of the same address (the transport
    protocol is part of it), and its local preference is RFC 6544 §4.2's: the direction
    preference above the address's rank (as :func:`host_candidate` ranks it, in 13 bits:
    the interface's in 8, the address's in 5).
    """
    rank = _host_preference(address[0], interface_rank, address_rank, address_bits=5)
    preference = tcp_local_preference(CandidateType.HOST, tcp_type, rank)
    return Candidate(
        foundation=compute_foundation(CandidateType.HOST, address[0], "tcp", key=key),
        component=component,
        protocol="tcp",
        priority=candidate_priority(CandidateType.HOST, preference, component),
        address=address[0],
        port=ACTIVE_PORT if tcp_type is TcpType.ACTIVE else address[1],
        type=CandidateType.HOST,
        tcp_type=tcp_type,
    )


def srflx_candidate(
    base: Candidate, mapped: Address, server: str, *, key: bytes | None = None
) -> Candidate:
    """The server-reflexive candidate a STUN server reported for ``base`` (RFC 8445 §5.1.1.2):
    its local preference is the base's, its related address the base's address.  For an
    ICE-TCP base (a 1:1 NAT's address of a passive candidate), of its tcptype, with the
    direction preference of a server-reflexive candidate (RFC 6544 §4.2)."""
    preference = (base.priority >> 8) & 0xFFFF
    if base.tcp_type is not None:
        preference = tcp_local_preference(CandidateType.SRFLX, base.tcp_type, preference & 0x1FFF)
    return Candidate(
        foundation=compute_foundation(
            CandidateType.SRFLX, base.address, base.protocol, server, key=key
        ),
        component=base.component,
        protocol=base.protocol,
        priority=candidate_priority(CandidateType.SRFLX, preference, base.component),
        address=mapped[0],
        port=mapped[1],
        type=CandidateType.SRFLX,
        related_address=base.address,
        related_port=base.port,
        tcp_type=base.tcp_type,
    )


def relay_candidate(
    relayed: Address,
    mapped: Address | None,
    server: str,
    component: int = 1,
    *,
    key: bytes | None = None,
) -> Candidate:
    """A relayed candidate from a TURN allocation (RFC 8445 §5.1.1.2); its related address
    is the mapped address the TURN server saw (RFC 8839 §5.1), or, from a server that left
    XOR-MAPPED-ADDRESS out of its grant (RFC 8656 §7.3 asks for it), the unspecified address
    of the relayed address's family and port 0, as a hidden related address is written: a
    relayed candidate's line carries ``raddr`` and ``rport``.  ``server`` names the server
    and the transport it was reached over (its foundation's part, §5.1.1.3)."""
    if mapped is None:
        mapped = ("::" if ":" in relayed[0] else "0.0.0.0", 0)
    return Candidate(
        foundation=compute_foundation(CandidateType.RELAY, relayed[0], "udp", server, key=key),
        component=component,
        protocol="udp",
        priority=candidate_priority(CandidateType.RELAY, _RELAY_PREFERENCE, component),
        address=relayed[0],
        port=relayed[1],
        type=CandidateType.RELAY,
        related_address=mapped[0],
        related_port=mapped[1],
    )


def prflx_candidate(
    address: Address,
    *,
    learned_from: str,
    component: int,
    priority: int,
    related: Address | None = None,
    tcp_type: TcpType | None = None,
) -> Candidate:
    """A peer-reflexive candidate (RFC 8445 §7.2.5.3.1, §7.3.1.3): an address a check
    revealed, never signalled.  ``learned_from`` is what its foundation derives from (the
    base's address, for a local one; the source's address and port, for a remote one);
    ``priority`` is the one the check carried (remote) or would carry (local).  With
    ``tcp_type`` it is an ICE-TCP candidate (RFC 6544 §7.1.1)."""
    return Candidate(
        foundation=prflx_foundation(learned_from, "udp" if tcp_type is None else "tcp"),
        component=component,
        protocol="udp" if tcp_type is None else "tcp",
        priority=priority,
        address=address[0],
        port=address[1],
        type=CandidateType.PRFLX,
        related_address=None if related is None else related[0],
        related_port=None if related is None else related[1],
        tcp_type=tcp_type,
    )


def unique_priority(
    candidate: Candidate, base: int, known: Sequence[tuple[Candidate, int]]
) -> Candidate:
    """``candidate``, with a local preference none of ``known`` of its type and component has
    (RFC 8445 §5.1.2.1: each its own, the same type and component): one less than its own
    for each taken, in the order found.  Two addresses of one kind on one interface get
    the same from :func:`~trice.ice.local_preference`, and so do two relays of one
    preference, or two mappings of one base.  (The same candidate found again, a gathering
    anew's, keeps its own.)"""
    priority = candidate.priority
    taken = {
        c.priority
        for c, b in known
        if c.type is candidate.type
        and c.component == candidate.component
        and not (b == base and c.transport_address == candidate.transport_address)
    }
    if priority not in taken:
        return candidate
    lowest = priority & 0xFF00_00FF  # (a local preference of 0: it never runs past it)
    while priority in taken and priority > lowest:
        priority -= 256  # (the local preference, in bits 8-23, one less)
    return dataclasses.replace(candidate, priority=priority)
