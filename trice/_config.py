"""Agent configuration: one frozen, keyword-only dataclass with nested groups.

Pure: it never imports trio or sockets.  Everything is validated when the object is built, so
that a bad value fails where it is written, with a :class:`~trice.ConfigError` naming it.
"""

from __future__ import annotations

import enum
import inspect
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trice._errors import ConfigError, a_type
from trice._proxy import ProxyUrl
from trice._servers import IceServer, TransportPolicy
from trice.ice._candidate import CandidateType, TcpType

__all__ = [
    "AgentConfig",
    "IPAddress",
    "MdnsMode",
    "Nomination",
    "NetworkConfig",
    "Timing",
]

#: An IPv4 or IPv6 address, as :class:`NetworkConfig.ip_filter` receives it.
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: RFC 8445 §5.3: ice-char = ALPHA / DIGIT / "+" / "/"
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+\Z")


class Nomination(str, enum.Enum):
    """How the controlling agent nominates (RFC 8445 §8.1.1).

    ``REGULAR``: checks run without USE-CANDIDATE; once the best valid pair is known the
    controlling agent repeats its check with USE-CANDIDATE.  ``AGGRESSIVE`` (RFC 5245 style,
    which many peers still send): every check carries USE-CANDIDATE until a pair is
    selected, and the first pair that works is selected at once; a better one found later
    replaces it.  After the selection checks go without USE-CANDIDATE, and a pair that
    proves better than the selected one is nominated then.  The controlling agent's checks
    in flight on pairs taken to rank at or below the selected one as the peer would see
    them (through the same NAT, say) cease (RFC 8445 §8.1.2): each would nominate a pair it
    does not use; such a pair, if it ranks above by its own priority, is checked again,
    without USE-CANDIDATE, when the check's transaction ends.

    In both modes, when a NAT maps either agent anew (a rebinding), the controlling agent
    nominates the pair with the new address, and both go on over it without an ICE
    restart (see the design page).
    """

    REGULAR = "regular"
    AGGRESSIVE = "aggressive"


class MdnsMode(str, enum.Enum):
    """What the agent does with multicast DNS (RFC 6762) names for host candidates, the
    ``<uuid>.local`` names that browsers signal in place of their addresses (the modes and
    their names are Pion's).

    ``QUERY_ONLY`` (the default): a remote candidate named by a ``.local`` name is resolved by
    an mDNS query on the agent's own interfaces, then paired (but under a relay-only
    transport policy: left out, unresolved); the agent's own candidates show
    their addresses.  ``QUERY_AND_GATHER``: the same, and the agent signals each host
    candidate under a random ``.local`` name of its own (and srflx candidates without their
    related address), answering the queries for them: peers on the link resolve the names,
    others never learn the host addresses.  ``DISABLED``: no mDNS; ``.local`` candidates are
    left out, logged and counted (``remote_candidates_dropped``), as any name is.
    """

    DISABLED = "disabled"
    QUERY_ONLY = "query"
    QUERY_AND_GATHER = "gather"


def _check_ice_chars(name: str, value: str, minimum: int, maximum: int) -> None:
    """``value`` is ``minimum`` to ``maximum`` ice-chars, or a ConfigError says why (a pwd,
    a secret, by its length and where it goes wrong, never quoted)."""
    if not isinstance(value, str):
        shown = f"a {type(value).__name__}" if name == "pwd" else repr(value)
        raise ConfigError(f"{name} must be a str, not {shown}")
    if not (minimum <= len(value) <= maximum) or not _ICE_CHARS.match(value):
        if name != "pwd":
            shown = f"{name} {value!r}"
        else:
            wrong = next((i for i, c in enumerate(value) if not _ICE_CHARS.match(c)), None)
            where = "" if wrong is None else f", not one at index {wrong}"
            shown = f"pwd (not shown: {len(value)} characters{where})"
        raise ConfigError(
            f"{shown} must be {minimum} to {maximum} ice-chars "
            "(letters, digits, '+' and '/'; RFC 8445 §5.3)"
        )


def check_credentials(ufrag: str | None, pwd: str | None) -> None:
    """A local ufrag and pwd as RFC 8445 §5.3 makes them (``None``: not given): 4 to 32
    ice-chars (RFC 8839 §5.4: no longer when sent; a peer's may be up to 256) and 22 to 256.
    Raises :class:`ConfigError` otherwise."""
    if ufrag is not None:
        _check_ice_chars("ufrag", ufrag, 4, 32)
    if pwd is not None:
        _check_ice_chars("pwd", pwd, 22, 256)


def _is_int(value: object) -> bool:
    """An int, not a bool (``True`` is an int to Python, not a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_flags(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, bool):
            raise ConfigError(f"{type(owner).__name__}.{name} must be True or False, not {value!r}")


#: The longest any timer may be, in seconds (a year): longer is a mistake, and a huge int
#: would overflow the sums of times inside the agent.
MAX_SECONDS = 365 * 24 * 3600


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = _is_number(value)
    try:
        ok = ok and math.isfinite(value)
    except OverflowError:  # (an int beyond any float)
        ok = False
    ok = ok and (value >= 0 if allow_zero else value > 0) and value <= MAX_SECONDS
    if not ok:
        # (Pion turns a timer off with 0: say what to do here instead.)
        hint = ""
        if _is_number(value) and value == 0 and not allow_zero and name.startswith("Timing."):
            hint = " (no timer is turned off by 0: give a long time instead"
            if name == "Timing.keepalive_interval":
                hint = (
                    " (no timer is turned off by 0, and consent checks not at all, RFC 7675:"
                    " whatever this says they go at least twice per disconnected_timeout"
                )
            if name in ("Timing.disconnected_timeout", "Timing.failed_timeout"):
                hint += "; consent ends a silent pair at 30 s whatever these say, RFC 7675"
            hint += ")"
        raise ConfigError(
            f"{name} must be a number {'>= 0' if allow_zero else '> 0'} of at most a year "
            f"of seconds ({MAX_SECONDS}), not {value!r:.40}{hint}"
        )


def _is_async(hook: Callable[..., object]) -> bool:
    """Whether calling ``hook`` makes a coroutine: an async function (or a partial of one),
    or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)


@dataclass(frozen=True, kw_only=True, slots=True)
class NetworkConfig:
    """Which local addresses host gathering uses.

    Attributes:
        interface_filter: called with each interface name (on Windows the connection's
            name, ``"Ethernet"``); only those it accepts are used.
        ip_filter: called with each :mod:`ipaddress` address; only those it accepts are used.
        include_loopback: use loopback addresses (left out by default, as RFC 8445 §5.1.1.1
            advises).  Tests and the demo use loopback only.
        ipv4: gather IPv4 addresses.
        ipv6: gather IPv6 addresses (link-local IPv6 is always left out).
        port_range: ``(low, high)`` inclusive port range for host sockets (UDP, and a
            passive ICE-TCP candidate's listener), or ``None`` for a port of the system's
            ephemeral range: on Linux a UDP socket's is picked by trice at random and named
            in the bind (a port the kernel chose, it takes back when it shuts the socket
            down); elsewhere, and for a listener, the kernel chooses.
        mdns: :class:`MdnsMode`: resolve the peer's ``.local`` candidates (the default), also
            name the agent's own host candidates so, or neither.  mDNS runs on the interfaces
            and IPv4 addresses that the filters above accept, and only once needed.
        external_addresses: the public addresses of a 1:1 NAT in front of this host (a cloud
            server's "elastic" address, say), which the agent signals without asking a STUN
            server (Pion's ``NAT1To1IPs``): each ``"external"`` (for every local address of
            its family) or ``"external/local"`` (for that local address; it wins over the
            other form).  The port is the host socket's own: a 1:1 NAT keeps it.  An address
            no peer could send a check to (unspecified, multicast, broadcast or reserved
            IPv4, IPv4-mapped, link-local) is a :class:`ConfigError`.
        external_candidate: how an external address is signalled:
            :attr:`CandidateType.SRFLX <trice.ice.CandidateType.SRFLX>` (the default, where
            Pion's is host), a server-reflexive candidate beside the host one; or
            :attr:`CandidateType.HOST <trice.ice.CandidateType.HOST>`, in the host
            candidate's place (the local address is then signalled nowhere, and peers on
            the same network reach the host through the NAT, if it lets them).
        tcp_candidates: the ICE-TCP host candidates (RFC 6544) to gather beside the UDP ones,
            on each address host gathering uses:
            :attr:`TcpType.PASSIVE <trice.ice.TcpType.PASSIVE>` (a listening socket, in
            ``port_range`` if given, which peers connect to: what a server behind a firewall
            that lets only TCP in offers), :attr:`TcpType.ACTIVE <trice.ice.TcpType.ACTIVE>`
            (connections opened to the peer's passive candidates: what a client behind a
            firewall that lets only TCP out needs), both, or none (the default).  They rank
            below the UDP host candidate of the same address (on a host's first 37
            interfaces).  A passive
            one's address behind a 1:1 NAT (``external_addresses``) is signalled too.  Not for
            an agent on a mux (a TCP mux gives it its passive candidate: see
            :func:`~trice.open_tcp_mux`), nor under the ``NOHOST`` and ``RELAY`` transport
            policies; an ICE-lite agent gathers the passive one only.  See the guide, "ICE
            over TCP".
        udp: gather the UDP host candidates (the default), and the server-reflexive ones
            learned over their sockets.  ``False`` gathers host candidates over TCP only, those
            of ``tcp_candidates`` (or a TCP mux's, see :func:`~trice.open_agent`), as Pion's
            ``NetworkTypes`` of ``tcp4`` and ``tcp6`` alone do: for a host whose network lets
            no UDP through, or to try a TCP path alone.  Relay candidates are gathered still
            (a TURN server may be reached over TCP or TLS, and relays UDP).  Not for an agent
            on a UDP mux, nor under the ``NOHOST`` transport policy (which gathers no TCP
            candidate: use ``RELAY`` for relays alone); :func:`~trice.open_agent` refuses it
            where it would leave no host candidate (no TCP candidate, nor TCP mux; for an
            ICE-lite agent, no passive one).
        proxy: a proxy that TURN over TCP and TLS goes through (``turn:...?transport=tcp``
            and ``turns:`` servers): a :class:`~trice.ProxyUrl`, or its text,
            ``"http://[user:password@]host:port"`` (an HTTP proxy), the same with
            ``https://`` (an HTTP proxy reached over TLS, its certificate checked) or
            ``"socks5://[user:password@]host:port"`` (a SOCKS5 one), made a
            :class:`~trice.ProxyUrl` when the config is; or ``None`` (the default: connect
            directly).  The agent asks the proxy for a tunnel to the TURN server (HTTP
            CONNECT, or SOCKS5's CONNECT), as browsers do behind a corporate proxy (Pion's
            ``ProxyDialer``); STUN, TURN over UDP and the peer-to-peer paths do not use it.
            See the guide, "NATs and TURN".
    """

    interface_filter: Callable[[str], object] | None = None
    ip_filter: Callable[[IPAddress], object] | None = None
    include_loopback: bool = False
    ipv4: bool = True
    ipv6: bool = True
    port_range: tuple[int, int] | None = None
    mdns: MdnsMode = MdnsMode.QUERY_ONLY
    external_addresses: Sequence[str] = ()
    external_candidate: CandidateType = CandidateType.SRFLX
    tcp_candidates: Sequence[TcpType] = ()
    proxy: ProxyUrl | None = None
    udp: bool = True

    if TYPE_CHECKING:  # (what the constructor takes: a proxy's text is made a ProxyUrl)

        def __init__(
            self,
            *,
            interface_filter: Callable[[str], object] | None = None,
            ip_filter: Callable[[IPAddress], object] | None = None,
            include_loopback: bool = False,
            ipv4: bool = True,
            ipv6: bool = True,
            port_range: tuple[int, int] | None = None,
            mdns: MdnsMode = MdnsMode.QUERY_ONLY,
            external_addresses: Sequence[str] = (),
            external_candidate: CandidateType = CandidateType.SRFLX,
            tcp_candidates: Sequence[TcpType] = (),
            proxy: ProxyUrl | str | None = None,
            udp: bool = True,
        ) -> None: ...

    def __post_init__(self) -> None:
        _check_flags(self, "include_loopback", "ipv4", "ipv6", "udp")
        if self.proxy is not None and not isinstance(self.proxy, ProxyUrl):
            object.__setattr__(self, "proxy", ProxyUrl.parse(self.proxy))
        for name, kind in (("mdns", MdnsMode), ("external_candidate", CandidateType)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError as exc:
                raise ConfigError(f"NetworkConfig.{name}: {exc}") from None
        if self.external_candidate not in (CandidateType.SRFLX, CandidateType.HOST):
            raise ConfigError("NetworkConfig.external_candidate must be SRFLX or HOST")
        object.__setattr__(self, "external_addresses", _external_addresses(self.external_addresses))
        object.__setattr__(self, "tcp_candidates", _tcp_candidates(self.tcp_candidates))
        for name in ("interface_filter", "ip_filter"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise ConfigError(f"NetworkConfig.{name} must be callable or None")
            if hook is not None and _is_async(hook):
                # (Its coroutine, never awaited, would be taken as true: every address.)
                raise ConfigError(
                    f"NetworkConfig.{name} must be a plain function, not an async one: it is "
                    "called as the interfaces are read, and must answer at once"
                )
        if not (self.ipv4 or self.ipv6):
            raise ConfigError("NetworkConfig: at least one of ipv4 and ipv6 must be enabled")
        if self.port_range is not None:
            bounds: object = self.port_range
            if isinstance(bounds, list):  # (as JSON gives it)
                bounds = tuple(bounds)
                object.__setattr__(self, "port_range", bounds)
            if not (
                isinstance(bounds, tuple)
                and len(bounds) == 2
                and _is_int(bounds[0])
                and _is_int(bounds[1])
                and 1 <= bounds[0] <= bounds[1] <= 65535
            ):
                raise ConfigError(
                    f"NetworkConfig.port_range {self.port_range!r} must be (low, high) "
                    "with 1 <= low <= high <= 65535"
                )

    def external_address(self, local: str) -> str | None:
        """The external address :attr:`external_addresses` gives the local address ``local``
        (an IP literal as gathering has it), or ``None``."""
        bare = None
        ip = ipaddress.ip_address(local)
        for entry in self.external_addresses:
            external, _, mapped = entry.partition("/")
            if mapped:
                if ipaddress.ip_address(mapped) == ip:
                    return external
            elif ipaddress.ip_address(external).version == ip.version:
                bare = external
        return bare


def _tcp_candidates(value: object) -> tuple[TcpType, ...]:
    """``NetworkConfig.tcp_candidates`` checked, in canonical order (active, passive)."""
    name = "NetworkConfig.tcp_candidates"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a sequence of TcpType, not {value!r}")
    wanted = set()
    for entry in value:
        try:
            tcp_type = TcpType(entry)
        except ValueError:
            raise ConfigError(f"{name}: {entry!r} is not a TcpType") from None
        if tcp_type is TcpType.SO:
            raise ConfigError(f"{name}: simultaneous-open (so) candidates are not supported")
        wanted.add(tcp_type)
    return tuple(t for t in (TcpType.ACTIVE, TcpType.PASSIVE) if t in wanted)


def _external_addresses(value: object) -> tuple[str, ...]:
    """``NetworkConfig.external_addresses`` checked and in canonical form (see there)."""
    name = "NetworkConfig.external_addresses"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a sequence of strings, not {value!r}")
    entries = []
    locals_seen: set[IPAddress] = set()
    families: set[int] = set()
    for entry in value:
        if not isinstance(entry, str):
            raise ConfigError(f"{name}: {entry!r} is not a string")
        external_text, slash, local_text = entry.partition("/")
        if "%" in entry:
            raise ConfigError(f"{name}: {entry!r}: a candidate's address has no zone index")
        try:
            external = ipaddress.ip_address(external_text)
            local = ipaddress.ip_address(local_text) if slash else None
        except ValueError:
            raise ConfigError(
                f"{name}: {entry!r} is neither an address nor address/local-address"
            ) from None
        from trice.ice._gathering import no_destination  # (which imports this module)

        mapped = isinstance(external, ipaddress.IPv6Address) and external.ipv4_mapped
        if no_destination(str(external)) or external.is_link_local or mapped:
            # (Unspecified, multicast, reserved or broadcast IPv4, IPv4-mapped, link-local:
            # a peer could send no check there.)
            raise ConfigError(f"{name}: {entry!r}: {external} cannot be a candidate's address")
        if local is None:
            if external.version in families:
                raise ConfigError(
                    f"{name}: two external IPv{external.version} addresses for every local one"
                )
            families.add(external.version)
            entries.append(str(external))
            continue
        if local.version != external.version:
            raise ConfigError(f"{name}: {entry!r} maps one family to the other")
        if local in locals_seen:
            raise ConfigError(f"{name}: {local} is mapped twice")
        locals_seen.add(local)
        entries.append(f"{external}/{local}")
    return tuple(entries)


@dataclass(frozen=True, kw_only=True, slots=True)
class Timing:
    """Every timer of the agent, in seconds (each at most a year).

    Attributes:
        ta: pacing of connectivity checks (RFC 8445 §14.2 recommends 50 ms; it must not go
            below 5 ms).  The first check, and the nomination check, go out at once.
        rto: least initial retransmission timeout of a check.  A check's first RTO is
            ``ta`` times the pairs waiting or in progress as it starts, or this if that is
            less (RFC 8445 §14.3); it doubles up to ``rto_max`` (or up to that first RTO if
            it is more).
        rto_max: upper bound of the doubling retransmission timeout (a first RTO above it is
            kept, undoubled).  1 s: a check's copies go at 0, 0.5, 1.5, 2.5 s... and it gives
            up after 6.5 s (7 copies).  Under loss that lasts, copies 3 s apart (the cap
            until 2026-12-05) made the tail of the time to connected long: in virtual time,
            35 % of the packets lost each way, 1000 seeded sessions, the 99th percentile
            went from 15.6 to 8.0 s, and none took over 10 s (50 before), for as many
            messages.  Pion, which checks every 200 ms, keeps a shorter tail still
            (``bench/lossy_connect.py``).  With many pairs in progress the first RTO grows
            (RFC 8445 §14.3), and with it the cap.
        max_binding_requests: transmissions of a check on its RTO schedule before its pair
            fails (1 to 100; RFC 8489 §6.2.1's Rc is 7).  A check of the peer's that crosses
            ours in flight asks one copy more (RFC 8445 §7.3.1.4), and a nominating one a
            copy at each such request, so a check may go out more often than this.
        nomination_delay: how long the controlling agent, with a valid pair in hand, waits for
            better pairs still being checked before it nominates the best valid one (and,
            until the peer's end-of-candidates, for better candidates it may still trickle:
            with end-of-candidates signalled and nothing better being checked, it nominates
            at once).
        relay_nomination_delay: the same wait when the best valid pair is relayed (a TURN
            candidate on either side), and at least a check's first RTO (``rto``, or
            ``ta`` times the pairs being checked, RFC 8445 §14.3) plus ``nomination_delay``
            whatever this says: long enough for a better pair's first retransmission to succeed,
            since a nomination is final and a session nominated onto a relay stays there.
            Pion waits 2 s for a relayed pair (``RelayAcceptanceMinWait``), counted from
            the start of checks and whether or not a better pair is still being checked;
            trice only while one is.
        keepalive_interval: consent checks on the selected pair (RFC 7675 §5.1, but shorter),
            and at least twice per ``disconnected_timeout`` whatever this says (a healthy pair
            would otherwise flap to disconnected and back between two checks); each interval
            is this times a factor drawn from 0.8-1.2 (RFC 7675 §5.1: agents do not send in
            step).  At least 5 ms.  A controlling agent whose selected pair the peer has not
            checked yet sends the first one ``rto`` after the selection, unless the peer's
            check comes meanwhile: the peer's may be lost, and a peer that checks a pair it
            gave up on only when a request comes (Pion, after 1.4 s of loss) would wait
            for it.
        disconnected_timeout: without hearing from the peer for this long (an answer to a
            check, a check of the peer's own on the selected pair, or data), the state
            becomes disconnected (an agent whose own loop stalled past this, having asked
            nothing meanwhile, asks first, and waits the check's RTO for its answer: the
            silence was its own) (20 s at most when ``failed_timeout`` is over 30 s, which
            consent's 30 s cuts down: disconnected comes first).  An ICE-lite agent hears
            the peer through its checks, which RFC 7675 paces 4-6 s apart, and its data: it
            waits 12 s at least (but not past two thirds of ``failed_timeout``, or of 30 s
            if that is less: consent's), so that one
            check missed on an idle pair is no disconnection, and, while only checks come,
            as far apart as the last two (an RFC 5245 peer's 15 s), within the same bound.
            At least 12 ms.
        failed_timeout: without a selected pair this long after checks start, or without consent
            this long (an answer to one of our checks, RFC 7675; for an ICE-lite agent, which
            sends none, the peer's checks or its data over the selected pair), the state
            becomes failed;
            consent lasts 30 s at most, though (RFC 7675 §5.1), whatever this says.  The
            default, 30 s, is consent's whole time, and Pion's time to fail a silent pair
            (its ``FailedTimeout``, 25 s, counts from the end of its ``DisconnectedTimeout``,
            5 s).  (Until 2026-12-05 it was 25 s, Pion's figure counted from the last
            consent: an older peer's keepalive indication 25 s apart, libnice's, came too
            late after a NAT's rebinding.)
            Consent counts from when an answered check went, so a path's round trip must
            stay well under this: the controlled agent's first consent answer comes some
            2.5 round trips after its first check went (answered, then the peer's
            nomination, then its own consent check).  A round trip of 11.8 s holds with
            the defaults; one of 12 s connects and then fails.
        pac_timeout: how long after checks start ICE may not yet fail, though every pair has
            failed or none could be formed (RFC 8863, "patiently awaiting connectivity": the
            peer's checks may still come and teach a peer-reflexive pair that works).
            ``None``, the default, is the time a check takes to give up with all its
            retransmissions on RFC 8489's schedule (0.5 s doubling, from ``rto`` and
            ``max_binding_requests``: 39.5 s, RFC 8863 §4's figure), which is what the
            peer's checks may take, their start a signaling delay late; this agent's own,
            capped at ``rto_max``, give up sooner (6.5 s), and a timer that short failed
            an answering agent whose answer took 6 s to reach the peer.  So with the
            defaults failure comes at ``failed_timeout`` (30 s), as Pion's does; against
            an ICE-lite peer, which sends no checks, as soon as the last pair has.  ``0``
            lets ICE fail as soon as the last pair has.  It never delays failure past
            ``failed_timeout``, and an agent whose gathering ended with no candidate at all
            (a relay-only agent whose TURN servers all refused it, say) fails as soon as
            checks begin: no check of the peer's can come to it.  (Until 2026-12-05 the
            default was this agent's own check time: 15.5 s, then 6.5 s.)
        gather_timeout: the most a STUN or TURN server may hold up gathering.
        mdns_timeout: how long a peer's ``.local`` name is queried for (RFC 6762 §5.2's
            retries, 1 s apart and doubling) before its candidate is dropped.
    """

    ta: float = 0.05
    rto: float = 0.5
    rto_max: float = 1.0
    max_binding_requests: int = 7
    nomination_delay: float = 0.25
    relay_nomination_delay: float = 1.0
    keepalive_interval: float = 2.0
    disconnected_timeout: float = 5.0
    failed_timeout: float = 30.0
    pac_timeout: float | None = None
    gather_timeout: float = 3.0
    mdns_timeout: float = 5.0

    def __post_init__(self) -> None:
        _positive("Timing.ta", self.ta)
        if self.ta < 0.005:
            raise ConfigError("Timing.ta must be at least 0.005 s (RFC 8445 §14.2)")
        for name in (
            "rto",
            "rto_max",
            "keepalive_interval",
            "disconnected_timeout",
            "failed_timeout",
            "gather_timeout",
            "mdns_timeout",
        ):
            _positive(f"Timing.{name}", getattr(self, name))
        # (Consent checks go every keepalive_interval, and at least twice per
        # disconnected_timeout: a tinier one flooded the peer, or never moved the clock on.)
        if self.keepalive_interval < 0.005:
            raise ConfigError("Timing.keepalive_interval must be at least 0.005 s")
        if self.disconnected_timeout < 0.012:
            raise ConfigError("Timing.disconnected_timeout must be at least 0.012 s")
        _positive("Timing.nomination_delay", self.nomination_delay, allow_zero=True)
        _positive("Timing.relay_nomination_delay", self.relay_nomination_delay, allow_zero=True)
        if self.pac_timeout is not None:
            _positive("Timing.pac_timeout", self.pac_timeout, allow_zero=True)
        if not (_is_int(self.max_binding_requests) and 1 <= self.max_binding_requests <= 100):
            raise ConfigError("Timing.max_binding_requests must be an integer from 1 to 100")
        if self.failed_timeout < self.disconnected_timeout:
            raise ConfigError("Timing.failed_timeout must be >= Timing.disconnected_timeout")


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentConfig:
    """Everything an ICE agent needs to know before it starts.

    Attributes:
        lite: be an ICE-lite agent (RFC 8445 §2.5): host candidates only, no checks of its own;
            it answers checks and accepts nomination (so only with the ``ALL`` transport
            policy: another leaves it no candidate, a :class:`ConfigError`; and a 1:1 NAT's
            external addresses only in the host candidates' place,
            ``NetworkConfig.external_candidate=HOST``, as Pion has it: the default,
            ``SRFLX``, is a :class:`ConfigError`).  Its ``ice_servers`` are not asked.
        ufrag: the local username fragment; random (8 chars) when ``None``.
        pwd: the local password; random (24 chars) when ``None``.
        network: which local addresses to gather (:class:`NetworkConfig`).
        timing: pacing, retransmission and state timers (:class:`Timing`).
        nomination: :class:`Nomination` mode used when controlling.
        ice_servers: STUN and TURN servers (:class:`~trice.IceServer`).
        transport_policy: which candidate types are gathered, signalled and paired.
        max_pairs: cap on candidate pairs (RFC 8445 §6.1.2.5; 100 by default).
        max_remote_candidates: cap on remote candidates (signalled and peer-reflexive); past it
            :meth:`~trice.Agent.add_remote_candidate` raises :class:`~trice.LimitError` and
            learned peer-reflexive candidates are dropped and counted.
        receive_buffer: datagrams held for :meth:`~trice.Connection.receive`; when full, the
            newest datagram is dropped and counted.
    """

    lite: bool = False
    ufrag: str | None = None
    pwd: str | None = field(default=None, repr=False)  # (a secret: not in logs)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    timing: Timing = field(default_factory=Timing)
    nomination: Nomination = Nomination.REGULAR
    ice_servers: Sequence[IceServer] = ()
    transport_policy: TransportPolicy = TransportPolicy.ALL
    max_pairs: int = 100
    max_remote_candidates: int = 200
    receive_buffer: int = 1024

    def __post_init__(self) -> None:
        _check_flags(self, "lite")
        check_credentials(self.ufrag, self.pwd)
        if not isinstance(self.network, NetworkConfig):
            raise ConfigError("AgentConfig.network must be a trice.NetworkConfig")
        if not isinstance(self.timing, Timing):
            raise ConfigError("AgentConfig.timing must be a trice.Timing")
        try:
            nomination = Nomination(self.nomination)
        except ValueError as exc:
            raise ConfigError(f"AgentConfig.nomination: {exc}") from None
        try:
            policy = TransportPolicy(self.transport_policy)
        except ValueError as exc:
            raise ConfigError(f"AgentConfig.transport_policy: {exc}") from None
        object.__setattr__(self, "nomination", nomination)
        object.__setattr__(self, "transport_policy", policy)
        if self.lite and policy is not TransportPolicy.ALL:
            raise ConfigError(
                f"an ICE-lite agent has host candidates only: transport policy {policy.name} "
                f"would leave it none"
            )
        if not self.network.udp and policy is TransportPolicy.NOHOST:
            raise ConfigError(
                "transport policy NOHOST with NetworkConfig(udp=False) would leave relay "
                "candidates only (no TCP candidate under NOHOST, no server-reflexive one without "
                "UDP): use TransportPolicy.RELAY"
            )
        if (
            self.lite
            and self.network.external_addresses
            and self.network.external_candidate is CandidateType.SRFLX
        ):
            raise ConfigError(
                "an ICE-lite agent has host candidates only: its external addresses go in the "
                "host candidates' place (NetworkConfig.external_candidate=CandidateType.HOST)"
            )
        if isinstance(self.ice_servers, (str, bytes)) or not isinstance(self.ice_servers, Iterable):
            alone = isinstance(self.ice_servers, IceServer)
            one = " (a list of the one: [server])" if alone else ""
            raise ConfigError(
                f"AgentConfig.ice_servers must be a sequence of trice.IceServer, not "
                f"{a_type(self.ice_servers)}{one}"  # (never its repr: it may hold a secret)
            )
        servers = tuple(self.ice_servers)
        for server in servers:
            if not isinstance(server, IceServer):
                # (Named by its type, never its repr: a W3C RTCIceServer dict holds its
                # credential.)
                hint = (
                    ": make one with trice.IceServer(urls, username, credential)"
                    if isinstance(server, Mapping)
                    else ""
                )
                raise ConfigError(
                    f"AgentConfig.ice_servers: {a_type(server)} is not a trice.IceServer{hint}"
                )
        object.__setattr__(self, "ice_servers", servers)
        for name in ("max_pairs", "max_remote_candidates", "receive_buffer"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                raise ConfigError(f"AgentConfig.{name} must be an integer >= 1")
