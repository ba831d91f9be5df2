"""Candidate and pair priorities and foundations (RFC 8445 §5.1.1.3, §5.1.2, §6.1.2.3).

Pure arithmetic: every formula of RFC 8445 that orders candidates and pairs lives here, once.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import secrets
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

from trice._errors import CandidateError, a_type
from trice.ice._candidate import MAX_PRIORITY, CandidateType, TcpType, _uint, canonical_ip

__all__ = [
    "TYPE_PREFERENCE",
    "candidate_priority",
    "compute_foundation",
    "dual_stack_order",
    "is_link_local",
    "local_preference",
    "pair_priority",
    "tcp_local_preference",
]

TYPE_PREFERENCE: Mapping[CandidateType, int] = MappingProxyType(
    {
        CandidateType.HOST: 126,
        CandidateType.PRFLX: 110,
        CandidateType.SRFLX: 100,
        CandidateType.RELAY: 0,
    }
)
"""The recommended type preferences of RFC 8445 §5.1.2.2 (read-only).

Host 126, peer reflexive 110, server reflexive 100, relayed 0.
"""

# RFC 6724 §2.1 default policy table: (prefix, precedence), longest prefix first.
_PRECEDENCE: tuple[tuple[ipaddress.IPv6Network, int], ...] = tuple(
    (ipaddress.IPv6Network(prefix), precedence)
    for prefix, precedence in (
        ("::1/128", 50),
        ("::ffff:0:0/96", 35),
        ("::/96", 1),
        ("2001::/32", 5),
        ("2002::/16", 30),
        ("fec0::/10", 1),
        ("3ffe::/16", 1),
        ("fc00::/7", 3),
        ("::/0", 40),
    )
)


def candidate_priority(type: CandidateType, local_preference: int, component: int) -> int:
    """Compute a candidate's priority (RFC 8445 §5.1.2.1).

    ``priority = 2**24 * type_preference + 2**8 * local_preference + (256 - component)``,
    with the type preference from :data:`TYPE_PREFERENCE`.

    Args:
        type: the candidate type.
        local_preference: 0..65535; RFC 8445 §5.1.2.1 says 65535 when the agent has a single IP
            address; see :func:`local_preference` for multihomed hosts.
        component: the component ID, 1..256.

    Raises:
        CandidateError: an argument is out of range (``field`` names it).

    Example:
        >>> candidate_priority(CandidateType.HOST, 65535, 1)
        2130706431
    """
    if not isinstance(type, CandidateType):
        raise CandidateError(f"type must be a CandidateType, got {type!r}", field="type")
    _uint(local_preference, "local_preference", 0, 65535)
    _uint(component, "component", 1, 256)
    return (TYPE_PREFERENCE[type] << 24) + (local_preference << 8) + (256 - component)


def local_preference(address: str, *, interface_preference: int = 255) -> int:
    """A local preference for a multihomed, dual-stack host (RFC 8445 §5.1.2.1, RFC 8421).

    The 16 bits are ``interface_preference << 8 | address_precedence``.  The high byte ranks the
    interfaces (the caller's choice: 255 for the best, e.g. wired before Wi-Fi before VPN); the
    low byte is the address's precedence in the RFC 6724 §2.1 default policy table, which
    RFC 8421 §4 points to for ordering address families.  So, on one interface, global IPv6
    (40) comes before IPv4 (35), which comes before 6to4 (30), Teredo (5), ULA (3) and
    deprecated prefixes (1); IPv6 loopback is 50.  (An agent's host gathering ranks its
    addresses itself, the families interleaved, RFC 8421 §4: see ``dual_stack_order``.)

    An agent with a single address should simply use 65535 (RFC 8445 §5.1.2.1).

    Args:
        address: the candidate's base IP address (a literal, not a host name).
        interface_preference: 0..255, higher is preferred.

    Raises:
        CandidateError: ``address`` is not an IP literal, or ``interface_preference`` is out of
            range.
    """
    _uint(interface_preference, "interface_preference", 0, 255)
    text = canonical_ip(address) if isinstance(address, str) else None
    if text is None:
        raise CandidateError(f"address {address!r} is not an IP literal", field="address")
    return (interface_preference << 8) | _precedence(text)


def dual_stack_order(addresses: Sequence[str], last: Collection[str] = frozenset()) -> list[str]:
    """``addresses`` (IP literals of one interface) in the order their host candidates are
    preferred (RFC 8421 §4): each family by its RFC 6724 §2.1 precedence (in the order
    given where equal), a link-local address (IPv4's 169.254/16, IPv6's fe80::/10) after
    the others of its family (§6 rule 2: of a scope too small for most peers), then the two
    families taken in turn, starting with the family of the best precedence (IPv6, unless
    it has only ULA, Teredo or such).  So a dual-stack interface's checks try an IPv4
    address second, not after every IPv6 one: a broken family costs one candidate's
    checks, not all of them.  The addresses in ``last`` (deprecated ones, RFC 4862
    §5.5.4: for no new communication where another will do) come after all the others,
    in the same order among themselves.

    Raises:
        CandidateError: an address is not an IP literal.
    """
    fresh = [address for address in addresses if address not in last]
    stale = [address for address in addresses if address in last]
    return _interleaved(fresh) + _interleaved(stale)


def _interleaved(addresses: Sequence[str]) -> list[str]:
    ranked = []
    for address in addresses:
        text = canonical_ip(address) if isinstance(address, str) else None
        if text is None:
            raise CandidateError(f"address {address!r} is not an IP literal", field="address")
        ranked.append(((is_link_local(text), -_precedence(text)), ":" in text, address))
    ranked.sort(key=lambda entry: entry[0])  # (stable: equals keep their order)
    v6 = [address for _, six, address in ranked if six]
    v4 = [address for _, six, address in ranked if not six]
    first, second = (v6, v4) if ranked and ranked[0][1] else (v4, v6)
    ordered = []
    for i in range(max(len(first), len(second))):
        ordered += first[i : i + 1] + second[i : i + 1]
    return ordered


def is_link_local(text: str) -> bool:
    """Whether a canonical IP literal (perhaps with an IPv6 ``%`` zone) is link-local:
    169.254/16 (RFC 3927) or fe80::/10."""
    if ":" not in text:
        return text.startswith("169.254.")
    head = text.split(":", 1)[0]
    return len(head) == 4 and head[:3].lower() in ("fe8", "fe9", "fea", "feb")


@functools.lru_cache(maxsize=1024)
def _precedence(text: str) -> int:
    """RFC 6724 §2.1 precedence of a canonical IP literal (kept: addresses repeat)."""
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv4Address):
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")
    return next(value for network, value in _PRECEDENCE if ip in network)


#: RFC 6544 §4.2's recommended direction preferences (0..7, 7 the most preferred) of an
#: ICE-TCP candidate: for host and relayed candidates active 6, passive 4, simultaneous-open
#: 2; for server- and peer-reflexive ones (NAT-assisted) simultaneous-open 6, active 4,
#: passive 2.
_DIRECTION_PREFERENCE: Mapping[tuple[bool, TcpType], int] = MappingProxyType(
    {
        (False, TcpType.ACTIVE): 6,
        (False, TcpType.PASSIVE): 4,
        (False, TcpType.SO): 2,
        (True, TcpType.SO): 6,
        (True, TcpType.ACTIVE): 4,
        (True, TcpType.PASSIVE): 2,
    }
)


def tcp_local_preference(type: CandidateType, tcp_type: TcpType, other_preference: int) -> int:
    """The local preference of an ICE-TCP candidate (RFC 6544 §4.2):
    ``2**13 * direction_pref + other_pref``.

    The direction preference follows the RFC's recommendation (see the table above: a host
    candidate prefers active, then passive, then simultaneous-open); ``other_preference``,
    0..8191, ranks the addresses (8191 on a host with one address), as a UDP candidate's
    local preference does.

    Example:
        >>> tcp_local_preference(CandidateType.HOST, TcpType.PASSIVE, 8191)
        40959
    """
    if not isinstance(tcp_type, TcpType):
        raise CandidateError(f"tcp_type must be a TcpType, got {tcp_type!r}", field="tcp_type")
    _uint(other_preference, "other_preference", 0, 8191)
    reflexive = type is CandidateType.SRFLX or type is CandidateType.PRFLX
    return (_DIRECTION_PREFERENCE[reflexive, tcp_type] << 13) | other_preference


def compute_foundation(
    type: CandidateType,
    base_address: str,
    protocol: str,
    server: str | None = None,
    *,
    key: bytes | None = None,
) -> str:
    """Compute a foundation (RFC 8445 §5.1.1.3).

    Two candidates get the same foundation exactly when they have the same type, the same base
    IP address (the port does not matter), the same transport protocol and the same STUN/TURN
    server (``None`` for host and peer-reflexive candidates).  IP literals are compared in their
    canonical form, names and protocols without regard to case.

    The result is 8 lower-case hex characters taken from a SHA-256 digest keyed with a secret,
    ``key`` (an agent's own: trice's agents each draw one), or one drawn once a process:
    made of ice-chars (RFC 8839 §5.1), and another under another key.  So a foundation tells
    the peer nothing of the base address it was made from (a host candidate signalled under
    an mDNS name, or a server-reflexive one whose related address is hidden: unkeyed, 32
    bits of a plain hash of an address gave the address back to whoever tried the private
    ranges), nor, an agent's key its own, that two sessions are of one host.

    Args:
        type: the candidate type.
        base_address: the base's IP address (RFC 8445 §5.1.1.1).
        protocol: ``"udp"`` or ``"tcp"``.
        server: the STUN or TURN server that produced the candidate (e.g. its IP address, or
            ``"host:port"``), or ``None``.
        key: the secret the digest is keyed with (bytes, not empty: an agent's own), or
            ``None`` for the process's.

    Raises:
        CandidateError: an argument has the wrong type.
    """
    if not isinstance(type, CandidateType):
        raise CandidateError(f"type must be a CandidateType, got {type!r}", field="type")
    for name, value in (("base_address", base_address), ("protocol", protocol)):
        if not isinstance(value, str):
            raise CandidateError(f"{name} must be a str, got {value!r}", field=name)
    if server is not None and not isinstance(server, str):
        raise CandidateError(f"server must be a str or None, got {server!r}", field="server")
    if key is not None:
        if not isinstance(key, bytes) or not key:
            # (A secret: named by its type, never quoted.)
            given = "empty bytes" if key == b"" else a_type(key)
            raise CandidateError(f"key must be bytes, not empty, or None, got {given}", field="key")
        return _foundation(type, base_address, protocol, server, key)
    if (
        base_address.__class__ is str
        and protocol.__class__ is str
        and (server is None or server.__class__ is str)
    ):
        # Kept: what the process's key gives (a user of the pure core; trice's agents key
        # their own, see above).  (Plain strings only: a subclass may hash and compare
        # like one, and lower-case differently.)
        return _kept_foundation(type, base_address, protocol, server)
    return _foundation(type, base_address, protocol, server)


#: The secret that foundations are keyed with where no key is given (see
#: :func:`compute_foundation`).
_FOUNDATION_KEY = secrets.token_bytes(16)


@functools.lru_cache(maxsize=256)
def _kept_foundation(
    type: CandidateType, base_address: str, protocol: str, server: str | None
) -> str:
    return _foundation(type, base_address, protocol, server)


def _foundation(
    type: CandidateType,
    base_address: str,
    protocol: str,
    server: str | None,
    secret: bytes | None = None,
) -> str:
    base = canonical_ip(base_address) or base_address.lower()
    server_key = "" if server is None else (canonical_ip(server) or server.lower())
    text = "\0".join((type.value, base, protocol.lower(), server_key))
    digest = hashlib.sha256(_FOUNDATION_KEY if secret is None else secret)
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:8]


def pair_priority(controlling_priority: int, controlled_priority: int) -> int:
    """Compute a candidate pair's priority (RFC 8445 §6.1.2.3).

    With G the controlling agent's candidate priority and D the controlled agent's:
    ``2**32 * MIN(G, D) + 2 * MAX(G, D) + (1 if G > D else 0)``.

    With RFC 8445 candidate priorities (at most 2**31 - 1) the result is below 2**63 and the
    three terms occupy separate bits; larger priorities, which the SDP grammar can carry, still
    compute (Python integers do not overflow) but no longer sort strictly by MIN first.

    Args:
        controlling_priority: G, the priority of the controlling agent's candidate.
        controlled_priority: D, the priority of the controlled agent's candidate.

    Raises:
        CandidateError: a priority is not in 1..2**32-1.
    """
    g = _uint(controlling_priority, "controlling_priority", 1, MAX_PRIORITY)
    d = _uint(controlled_priority, "controlled_priority", 1, MAX_PRIORITY)
    return (min(g, d) << 32) + 2 * max(g, d) + (1 if g > d else 0)
