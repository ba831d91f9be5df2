"""Gathering (RFC 8445 §5.1.1): which local addresses to bind (read with ifaddr), and the
gather tasks an agent runs: host sockets, server-reflexive candidates from STUN servers, and
relayed candidates from TURN servers.  The candidates themselves are made by the pure core
(``trice.ice._gathering``); these tasks find the addresses."""

from __future__ import annotations

import errno
import functools
import inspect
import ipaddress
import logging
import math
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import ifaddr
import trio

from trice import stun
from trice._config import MdnsMode, NetworkConfig
from trice._errors import ConfigError, LimitError, TriceError, TurnError, printable
from trice._servers import IceServer, ServerUrl, TransportPolicy, host_port
from trice._trio import _transport
from trice._trio._log import logger
from trice._trio._mux import MuxTransport
from trice._trio._relay import RelayTransport, run_relay
from trice._trio._tcp import TcpCounters, TcpTransport
from trice._trio._transport import UdpTransport, bind_socket, stun_transaction
from trice.ice._candidate import Candidate, CandidateType, TcpType
from trice.ice._events import ConnectionState, GatheringState
from trice.ice._gathering import (
    ACTIVE_PORT,
    host_candidate,
    relay_candidate,
    server_address_problem,
    srflx_candidate,
    tcp_host_candidate,
)
from trice.ice._priority import dual_stack_order
from trice.turn import AllocationError

if TYPE_CHECKING:
    from trice._trio._agent import Agent

Address = tuple[str, int]

__all__ = [
    "GatherReport",
    "HostAddress",
    "finish_gathering",
    "forget_adapters",
    "gather_local",
    "gather_servers",
    "has_server_sources",
    "host_addresses",
    "interface_index",
    "interface_of",
    "machine_addresses",
    "mdns_interfaces",
]


@dataclass(frozen=True, slots=True)
class HostAddress:
    """A usable local address: the interface it is on and the literal to bind."""

    interface: str
    address: str
    bind_address: str
    deprecated: bool = False  # (kept for want of another: ranked after the others)


#: Interfaces are read at most this often: an application that opens many agents at once
#: (a server, a test with hundreds of pairs) reads them once, not once an agent.
_ADAPTERS_TTL = 1.0
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class _Found:
    """One address of an interface, with what host gathering asks of it worked out once
    (the ipaddress module's properties cost a microsecond or so each, for every agent)."""

    address: _Address
    literal: str
    version: int
    never: bool  # link-local, multicast, unspecified or not assigned yet: never gathered
    loopback: bool
    prefix: int  # the length of the interface's network prefix
    temporary: bool = False  # an IPv6 temporary address (RFC 8981: no tracking by it)
    deprecated: bool = False  # its preferred lifetime is over (RFC 4862 §5.5.4)


_Adapters = list[tuple[str, list[_Found]]]
#: The interfaces as last read in each network namespace (see :func:`_namespace`): when
#: the read began (``time.monotonic()``), what, ifaddr's index of each interface by name
#: (see interface_index), and when the read ended.  A thread may have entered a namespace
#: of its own (``setns``): what one thread read serves another only in the same namespace.
_adapters_cache: dict[object, tuple[float, _Adapters, dict[str, int], float]] = {}


def _namespace() -> object:
    """The calling thread's network namespace, as a key of ``_adapters_cache``: on Linux
    its cookie (``SO_NETNS_COOKIE``, of a socket made in it: never used again, as the
    inode number of ``/proc/thread-self/ns/net`` is once its namespace is gone, by the next
    one made), or before Linux 5.14 that inode number; elsewhere (or where neither can be
    read) None, one for the process.  Where no socket can be made (no descriptor left), a
    key of its own, which no read serves (the read says what is wrong): an inode number
    there could be another namespace's, gone, whose read is still cached."""
    if sys.platform != "linux":
        return None
    if _transport._cookies:
        try:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError:
            return object()
        with probe:
            cookie = _transport.netns_cookie(probe)
        if cookie is not None:
            return cookie
    try:
        found = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


class UnreadableInterfaces(TriceError):
    """ifaddr cannot read the interfaces (a name that is not UTF-8, or an OSError from the
    system: a sandbox's refusal, say): a TriceError to the user; a watch of address changes
    tries again later (see ``_netwatch``)."""


def forget_adapters() -> None:
    """Read the interfaces afresh next time (a gathering anew must see what changed)."""
    _adapters_cache.clear()


#: A read of the interfaces that took more CPU time than this (a host with hundreds of
#: them: a container or Kubernetes node) has the next one made in a worker thread
#: (:func:`read_interfaces`), rather than hold up every task of the process as long.
_SLOW_READ = 0.02
#: Whether the last read, in any namespace, was slow; and for each namespace read lately,
#: whether its own last read was (a quick read elsewhere does not bring a slow namespace's
#: reads back onto its event loop).
_slow_reads = False
_slow_in: dict[object, bool] = {}
#: The lock that lets one task at a time read in a worker thread (the others then find
#: the cache fresh): one a trio run.
_reading: trio.lowlevel.RunVar[trio.Lock] = trio.lowlevel.RunVar("trice_reading_interfaces")


def _cache_serves(
    newer_than: float, cache: tuple[float, _Adapters, dict[str, int], float] | None
) -> bool:
    """Whether ``cache`` (the interfaces as read last) serves a reader that wants them read
    at ``newer_than`` or later (see :func:`_adapters`).  Its second of life counts from the
    read's end: a read in a worker thread that a loaded machine stretched past a second
    serves the task that waited for it (it was read again, on the event loop's thread)."""
    return (
        cache is not None and time.monotonic() - cache[3] < _ADAPTERS_TTL and cache[0] >= newer_than
    )


async def read_interfaces(newer_than: float = -math.inf) -> None:
    """Have the interfaces read, as :func:`_adapters` reads them, in a worker thread where
    the last read was slow (see ``_SLOW_READ``), so that the synchronous reads after this
    (``host_addresses``, mDNS's links) find them in the cache; where reads are quick, or
    the cache serves, nothing (the read, some milliseconds, is left to them).

    Under trio's ``MockClock`` (an application's tests in virtual time) the read is left
    to the calling task too: while a worker thread runs, an autojumping clock runs ahead,
    and the test's timeouts pass in no time.

    Raises:
        LimitError, TriceError: as :func:`_adapters`.
    """
    if not _slow_reads and not _slow_in:
        return  # (before the namespace's probe, a socket's opening: the usual case)
    namespace = _namespace()
    if not (_slow_reads or _slow_in.get(namespace)) or _cache_serves(
        newer_than, _adapters_cache.get(namespace)
    ):
        return
    from trio.testing import MockClock  # (here: the slow path only; trio.testing costs)

    if isinstance(trio.lowlevel.current_clock(), MockClock):
        return
    try:
        lock = _reading.get()
    except LookupError:
        lock = trio.Lock()
        _reading.set(lock)
    async with lock:
        if not _cache_serves(newer_than, _adapters_cache.get(namespace)):
            await trio.to_thread.run_sync(_read_in, namespace, newer_than)


def _read_in(namespace: object, newer_than: float) -> None:
    """In a worker thread: :func:`_adapters`, if the thread is in the network namespace of
    the task that asked (trio's idle workers serve every run of the process, and a worker
    stays in the namespace of the thread that started it); if not, nothing, and the task
    reads them itself."""
    if _namespace() == namespace:
        _adapters(newer_than)


def _adapters(newer_than: float = -math.inf) -> _Adapters:
    """(interface name, addresses) for every interface of the calling thread's network
    namespace, cached for a second; read afresh if the cache was read before ``newer_than``
    (a ``time.monotonic()`` value: when a change was noticed, say).  (Also from a worker
    thread: see :func:`read_interfaces`.)"""
    global _slow_reads
    namespace = _namespace()
    cache = _adapters_cache.get(namespace)
    if cache is not None and _cache_serves(newer_than, cache):
        return cache[1]
    now = time.monotonic()
    spent = time.thread_time()
    try:
        found = ifaddr.get_adapters()  # (through a netlink socket: it needs a descriptor)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise LimitError(
                "out of file descriptors: the interfaces cannot be read (raise the limit, "
                "ulimit -n / resource.setrlimit, or run fewer agents)"
            ) from exc
        # (A sandbox that refuses the netlink socket, EACCES; short of memory, ENOBUFS.)
        raise UnreadableInterfaces(f"the interfaces cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:  # (ifaddr reads every name as UTF-8, or none)
        raise UnreadableInterfaces(
            f"an interface's name is not UTF-8 ({bytes(exc.object)!r:.60}), and ifaddr reads "
            "no interface then: rename it (ip link set dev OLD name NEW)"
        ) from None
    except Exception as exc:  # (ifaddr's own: an assert on an address with no netmask,
        # which getifaddrs allows; a ValueError of ctypes in older versions)
        raise UnreadableInterfaces(f"ifaddr cannot read the interfaces: {exc!r:.200}") from exc
    adapters = []
    indexes = {}
    flags = _inet6_flags()
    asks = sys.platform == "linux" and any(getattr(a, "index", None) is not None for a in found)
    asker = _flags_socket() if asks else None  # (see link_up)
    try:
        for adapter in found:
            name = _interface_name(adapter)
            index = getattr(adapter, "index", None)
            if index is not None:
                indexes[name] = int(index)
                if not link_up(str(adapter.name), asker):
                    continue  # (set down: its addresses reach nobody for now)
            adapters.append((name, _addresses(adapter, flags.get(str(adapter.name), {}))))
    finally:
        if asker is not None:
            asker.close()
    # (Namespaces not read for a while are let go; list() copies at once, while other
    # threads may add theirs.)
    ended = time.monotonic()
    for key, (_, _, _, ended_at) in list(_adapters_cache.items()):
        if ended - ended_at >= _ADAPTERS_TTL:
            _adapters_cache.pop(key, None)
    _adapters_cache[namespace] = (now, adapters, indexes, ended)
    # (The CPU time the read took, which a busy machine does not stretch as it does the
    # wall clock's: one slow moment does not send reads to a thread, where trio's
    # MockClock would jump ahead while a test's tasks all wait on it.)
    _slow_reads = time.thread_time() - spent > _SLOW_READ
    if not _slow_reads:
        _slow_in.pop(namespace, None)
    elif namespace not in _slow_in:
        if len(_slow_in) >= 64:  # (namespaces come and go; their keys are never reused)
            _slow_in.clear()
        _slow_in[namespace] = True
    return adapters


def _interface_name(adapter: ifaddr.Adapter) -> str:
    """The name the filters and logs know an interface by: on Windows its connection's
    (``"Ethernet"``, ``"Wi-Fi"``), which ifaddr gives each address of it (its adapter's
    ``nice_name`` there is the hardware's description); elsewhere the system's (``eth0``)."""
    if sys.platform == "win32" and adapter.ips and adapter.ips[0].nice_name:
        return str(adapter.ips[0].nice_name)
    return str(adapter.nice_name or adapter.name)


def interface_index(name: str) -> int:
    """The index of the interface named ``name`` (see :func:`_interface_name`), or 0 if the
    system cannot say: the system's answer, or where it knows no such name (Windows, whose
    ``if_nametoindex`` takes other names), that of the last read of the interfaces."""
    try:
        return socket.if_nametoindex(name)
    except (OSError, AttributeError):  # (AttributeError: a Python without the call)
        cache = _adapters_cache.get(_namespace())
        return 0 if cache is None else cache[2].get(name, 0)


def _flags_socket() -> socket.socket | None:
    """A socket to ask interfaces' flags on (see :func:`link_up`), or None (none left)."""
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return None


#: IPv6 address flags (``IFA_F_*``, linux/if_addr.h), as /proc/net/if_inet6 shows them.
_IFA_F_TEMPORARY = 0x01
_IFA_F_OPTIMISTIC = 0x04
_IFA_F_DADFAILED = 0x08
_IFA_F_DEPRECATED = 0x20
_IFA_F_TENTATIVE = 0x40


def _inet6_flags() -> dict[str, dict[str, int]]:
    """The flags of this namespace's IPv6 addresses (interface name -> address -> flags)
    where the system says them (Linux's /proc/net/if_inet6); empty where it does not.  The
    calling thread's namespace, as ifaddr's (netlink) read is: a thread may have entered
    another than the process's main thread (``/proc/net`` is the main thread's)."""
    for path in ("/proc/thread-self/net/if_inet6", "/proc/net/if_inet6"):
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as file:
                return parse_inet6_flags(file.read())
        except OSError:
            continue
    return {}


def unassigned(flags: int) -> bool:
    """Whether an IPv6 address of these flags is not (or never will be) the interface's:
    its duplicate address detection is still going on (tentative, RFC 4862 §5.4: nothing
    can be bound to it, unless it is optimistic, RFC 4429) or has failed."""
    return bool(flags & _IFA_F_DADFAILED) or (
        bool(flags & _IFA_F_TENTATIVE) and not flags & _IFA_F_OPTIMISTIC
    )


def parse_inet6_flags(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/if_inet6's lines (address in 32 hex digits, interface index, prefix
    length, scope, flags, name) as interface name -> address literal -> flags; a line
    that does not read so is skipped."""
    flags: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or len(fields[0]) != 32:
            continue
        try:
            address = str(ipaddress.IPv6Address(int(fields[0], 16)))
            value = int(fields[4], 16)
        except ValueError:
            continue
        flags.setdefault(fields[5], {})[address] = value
    return flags


def _addresses(adapter: Any, flags: dict[str, int]) -> list[_Found]:
    """What an adapter of ifaddr's lists, as host gathering reads it (``flags``: its IPv6
    addresses' flags, by address literal)."""
    addresses = []
    for ip in adapter.ips:
        text = str(ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip)
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        # (IPv6 link-local needs a zone no candidate carries; IPv4 link-local, RFC 3927,
        # is a cable between two machines with no DHCP: kept.  Site-local and
        # IPv4-compatible IPv6 addresses MUST NOT be candidates, RFC 8445 §5.1.1.1; an
        # IPv4-mapped one cannot be bound.)
        never = address.is_multicast or address.is_unspecified
        if address.version == 6 and not never:
            never = (
                address.is_link_local
                or address.is_site_local
                or address.ipv4_mapped is not None
                or (int(address) >> 32 == 0 and not address.is_loopback)
            )
        bits = flags.get(str(address), 0) if address.version == 6 else 0
        never = never or unassigned(bits)  # (it comes once detection is over: a change)
        addresses.append(
            _Found(
                address,
                str(address),
                address.version,
                never,
                address.is_loopback,
                int(ip.network_prefix),
                bool(bits & _IFA_F_TEMPORARY),
                bool(bits & _IFA_F_DEPRECATED),
            )
        )
    return addresses


#: ``SIOCGIFFLAGS`` and ``IFF_UP`` (Linux: linux/sockios.h, linux/if.h), and ``struct ifreq``
#: as that request reads it (the name, then the flags; 40 bytes in all).
_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")


def link_up(name: str, sock: socket.socket | None = None) -> bool:
    """Whether interface ``name`` is up (set so: ``IFF_UP``), as the kernel says for this
    process's network namespace (Linux's ``SIOCGIFFLAGS``, asked on ``sock`` or a socket of
    its own; an address label such as ``eth0:1`` is its interface's); ``True`` where it
    cannot say.  An interface set down keeps its IPv4 addresses, which reach nobody: Pion,
    too, leaves out interfaces that are not up.  (Not whether it has carrier: an interface
    just set up has none for a moment, up to a second, till the kernel's link watch says
    so.)"""
    if sys.platform != "linux":
        return True
    import fcntl  # (not on every system: Windows has none)

    request = _IFREQ.pack(name.encode(errors="replace")[:15], 0)
    try:
        if sock is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as own:
                answer = fcntl.ioctl(own, _SIOCGIFFLAGS, request)
        else:
            answer = fcntl.ioctl(sock, _SIOCGIFFLAGS, request)
    except OSError:
        return True
    return bool(_IFREQ.unpack(answer)[1] & _IFF_UP)


def machine_addresses() -> frozenset[str]:
    """Every address the machine's interfaces have (as read within the second)."""
    return frozenset(entry.literal for _, entries in _adapters() for entry in entries)


def host_addresses(network: NetworkConfig, *, newer_than: float = -math.inf) -> list[HostAddress]:
    """The addresses host gathering binds, after the config's filters (the interfaces as
    read at ``newer_than`` or later: see ``_adapters``).

    Link-local IPv6 is always left out (it cannot reach peers off the link and needs scope
    handling every peer gets wrong); loopback only when ``include_loopback`` is set; IPv4 and
    IPv6 per the switches; then the interface and IP filters.  Of what they take, where the
    system tells addresses' flags (Linux): an IPv6 address of the prefix of a temporary one
    gathered on its interface is left out (RFC 8445 §5.1.1.1: it would let the host be
    tracked, which the temporary one is there to prevent), and so is a deprecated address
    where its interface has another of its family that is not (RFC 4862 §5.5.4).
    """
    taken: list[tuple[str, _Found]] = []
    seen: set[str] = set()
    for name, addresses in _adapters(newer_than):
        if network.interface_filter is not None and not _takes(network.interface_filter, name):
            continue
        for entry in addresses:
            if entry.never or (entry.loopback and not network.include_loopback):
                continue
            if not (network.ipv4 if entry.version == 4 else network.ipv6):
                continue
            if network.ip_filter is not None and not _takes(network.ip_filter, entry.address):
                continue
            if entry.literal in seen:
                continue
            seen.add(entry.literal)
            taken.append((name, entry))
    if any(entry.temporary or entry.deprecated for _, entry in taken):
        taken = _untraceable(taken)
    return [
        HostAddress(name, entry.literal, entry.literal, entry.deprecated) for name, entry in taken
    ]


def _untraceable(taken: list[tuple[str, _Found]]) -> list[tuple[str, _Found]]:
    """``taken`` without the deprecated addresses that another of their interface, family
    and kind (a ULA or not) replaces, then without the IPv6 addresses in the prefix of a
    temporary one left on their interface (a /128 that DHCPv6 gave too: see
    :func:`host_addresses`)."""

    def kind(entry: _Found) -> tuple[int, bool]:
        return entry.version, entry.version == 6 and entry.address in _ULA

    fresh = {(name, kind(entry)) for name, entry in taken if not entry.deprecated}
    taken = [(n, e) for n, e in taken if not (e.deprecated and (n, kind(e)) in fresh)]
    temporary = [
        (name, ipaddress.IPv6Network((int(entry.address), entry.prefix), strict=False))
        for name, entry in taken
        if entry.temporary
    ]
    return [
        (name, entry)
        for name, entry in taken
        if entry.temporary
        or entry.version == 4
        or not any(n == name and entry.address in net for n, net in temporary)
    ]


#: Unique local IPv6 addresses (RFC 4193), which reach no peer off the site.
_ULA = ipaddress.IPv6Network("fc00::/7")


def link_local_interfaces() -> list[str]:
    """The names of the interfaces that have an IPv4 link-local address (169.254/16)."""
    return [
        name
        for name, addresses in _adapters()
        if any(entry.version == 4 and entry.address.is_link_local for entry in addresses)
    ]


def interface_of(address: str) -> str | None:
    """The name of the interface that has the local address ``address``, or ``None``."""
    for name, addresses in _adapters():
        if any(entry.literal == address for entry in addresses):
            return name
    return None


def _takes(hook: Callable[[Any], object], value: object) -> bool:
    """Whether the network config's filter ``hook`` takes ``value``: its answer's truth.
    An awaitable (a plain function around an async one: ``NetworkConfig`` refuses an async
    one, but cannot see through that) is a :class:`~trice.ConfigError`, not a yes.

    Raises:
        ConfigError: ``hook`` answered with an awaitable.
    """
    answer = hook(value)
    if answer is True or answer is False:
        return answer
    if inspect.isawaitable(answer):
        close = getattr(answer, "close", None)
        if close is not None:
            close()  # (no "never awaited" warning besides)
        raise ConfigError(
            f"a network filter answered {value!r} with an awaitable ({type(answer).__name__}): "
            "the filters must be plain functions that answer at once"
        )
    return bool(answer)


#: The interfaces mDNS runs on: each one's name, first IPv4 address and network (see
#: :func:`mdns_interfaces`).
MdnsLinks = list[tuple[str, str, ipaddress.IPv4Network]]


def mdns_interfaces(network: NetworkConfig) -> MdnsLinks:
    """For multicast DNS: the name and first IPv4 address of each interface that the filters
    accept (loopback only with ``include_loopback``; the ``ipv4`` switch aside: mDNS runs over
    IPv4 whichever family the candidates are), with the interface's network (its link)."""
    found = []
    for name, addresses in _adapters():
        if network.interface_filter is not None and not _takes(network.interface_filter, name):
            continue
        usable = [
            entry
            for entry in addresses
            if entry.version == 4
            and not entry.never
            and (network.include_loopback or not entry.loopback)
            and (network.ip_filter is None or _takes(network.ip_filter, entry.address))
        ]
        # (A routable address first: an interface that had a link-local one before DHCP
        # gave it another is on the routable network, whose peers count as on the link.)
        usable.sort(key=lambda entry: entry.address.is_link_local)
        if usable:
            entry = usable[0]
            link = ipaddress.IPv4Network(f"{entry.literal}/{entry.prefix}", strict=False)
            found.append((name, entry.literal, link))
    return found


@dataclass(frozen=True, slots=True)
class GatherReport:
    """How one gather source did (see :attr:`Agent.gather_reports`; ``trice gather`` prints it).

    Attributes:
        source: ``"host"``, or the STUN/TURN server URL (with the local address it was
            asked from, for STUN); ``"relay"`` for the RELAY policy with no TURN server,
            ``"nohost"`` for the NOHOST policy with no STUN or TURN server (nor external
            address).
        elapsed: seconds the source took.
        candidates: how many candidates it produced.  For ``host`` under the NOHOST policy:
            how many sockets it bound (their host candidates are not signalled; each is the
            base of the server-reflexive and relayed candidates gathered from it).
        error: why it produced none (timeout, an error response, unreachable...), or ``None``.
        code: the server's error code (RFC 8489 §14.8) where it answered with an error
            response (486 Allocation Quota Reached, 401 for wrong credentials...: the W3C
            ``icecandidateerror`` event's ``errorCode`` then), or ``None`` (no answer,
            where W3C says 701, or an error of trice's side: ``error`` says which).
    """

    source: str
    elapsed: float
    candidates: int
    error: str | None = None
    code: int | None = None


async def gather_local(agent: Agent) -> None:
    """Gathering starts: the host sockets, in the agent's own task (binding is quick and
    local, and server-reflexive gathering asks from these very sockets)."""
    if agent._closed:
        await trio.lowlevel.checkpoint()  # (closed before its task first ran: the cancel)
        return
    agent._set_gathering(GatheringState.GATHERING)
    policy = agent._config.transport_policy
    if agent._config.network.tcp_candidates and (
        policy is not TransportPolicy.ALL or agent._muxes or agent._tcp_shares
    ):
        why = "the agent is on a mux" if policy is TransportPolicy.ALL else f"policy {policy.value}"
        logger.info("%s: no ICE-TCP candidates of its own (%s)", agent._local.ufrag, why)
    urls = [url for server in _servers(agent) for url in server.urls]
    if not agent._config.network.udp and any(not url.is_turn for url in urls):
        logger.info("%s: no server-reflexive candidates (no UDP host socket)", agent._local.ufrag)
    if policy is not TransportPolicy.RELAY:
        await gather_host(agent)
    # (Nothing at all to signal: said, rather than a silent failure of ICE later.)
    if policy is TransportPolicy.RELAY and not any(url.is_turn for url in urls):
        _nothing_to_signal(agent, "relay", "policy relay and no TURN server")
    elif (
        policy is TransportPolicy.NOHOST
        and not urls
        and not (
            agent._config.network.external_addresses
            and agent._config.network.external_candidate is CandidateType.SRFLX
        )
    ):
        _nothing_to_signal(agent, "nohost", "policy nohost and no STUN or TURN server")


def _nothing_to_signal(agent: Agent, source: str, why: str) -> None:
    error = f"{why}: no candidate can be signalled"
    logger.warning("%s: %s", agent._local.ufrag, error)
    agent._report(GatherReport(source, 0.0, 0, error))


def _servers(agent: Agent) -> Sequence[IceServer]:
    return () if agent._config.lite else agent._config.ice_servers


def has_server_sources(agent: Agent) -> bool:
    """Whether any STUN or TURN server is left to ask (see :func:`gather_servers`)."""
    return bool(_servers(agent))


async def gather_servers(agent: Agent, kept: Sequence[tuple[Candidate, int]] = ()) -> None:
    """The ``gather`` task: a task per STUN source (server and host socket) and per TURN
    server, then gathering is complete.  A gathering anew passes the relays it would keep
    (``kept``, with their candidates): each is probed (:func:`_probe_relay`) rather than
    its server asked for another."""
    policy = agent._config.transport_policy
    servers = _servers(agent)
    signalled = {base for _, base in agent._core.local_candidates}
    relayed = {
        t.server for _, base in kept if isinstance(t := agent._transports.get(base), RelayTransport)
    }
    asked: set[ServerUrl] = set()  # (a URL listed twice is asked once)
    async with trio.open_nursery() as nursery:
        if policy is not TransportPolicy.RELAY:
            for server in servers:
                for url in server.urls:
                    if url.is_turn or url.secure or url.transport != "udp" or url in asked:
                        continue
                    asked.add(url)
                    for transport in list(agent._transports.values()):
                        # (A host socket, or a UDP mux: the mux asks for all its agents.
                        # Not a socket whose address is signalled no more: see gather_anew.)
                        if (
                            isinstance(transport, (UdpTransport, MuxTransport))
                            and transport.base in signalled
                            and _may_reach(url.host, transport.family)
                        ):
                            nursery.start_soon(
                                gather_srflx,
                                agent,
                                url,
                                transport,
                                name=f"gather srflx {url} from {transport.local_address[0]}",
                            )
        for server in servers:
            for url in server.urls:
                if url.is_turn and url not in relayed:
                    relayed.add(url)  # (the first server that lists it: its credentials)
                    nursery.start_soon(gather_relay, agent, server, url, name=f"gather relay {url}")
        for candidate, base in kept:  # (one probe a relay, whichever servers name its URL)
            relay = agent._transports.get(base)
            if not isinstance(relay, RelayTransport):
                continue
            owner = next(s for s in servers if relay.server in s.urls)
            nursery.start_soon(
                _probe_relay,
                agent,
                owner,
                candidate,
                relay,
                name=f"probe relay {relay.server}",
            )
    finish_gathering(agent)


async def _probe_relay(
    agent: Agent, server: IceServer, candidate: Candidate, transport: RelayTransport
) -> None:
    """A relay kept by a gathering anew: if the server still holds its allocation (a
    Refresh answered), or says nothing within ``gather_timeout`` (a server that says
    nothing would grant no new one either: the relay's own refreshes decide later), its
    candidate is gathered again, the same.  If the server refused it (437: it holds no
    allocation for us now), the server is asked for a new one, in what is left of the
    ``gather_timeout``.  (A refused relay is closed already, as any whose refresh fails.)

    Over TCP or TLS, the answer may be late though the server lives: an outage leaves
    both ends of the connection in TCP's backoff, their next copy tens of seconds away.
    So half the time is the Refresh's; then a new allocation is asked for over a new
    connection, and if it comes, it takes the relay's place (which is closed, unless the
    pair of before the restart goes over it: then at the next gathering anew); if not,
    the relay is kept."""
    started = trio.current_time()
    alive = False
    timeout = agent._config.timing.gather_timeout
    stream = transport.server.transport == "tcp"
    with trio.move_on_at(started + (timeout / 2 if stream else timeout)) as probing:
        alive = await transport.probe()
    if probing.cancelled_caught and stream and not transport.closed:
        logger.info(
            "%s: relay %s from %s: no answer over its connection (in TCP's backoff after "
            "an outage?): asking for another over a new one",
            agent._local.ufrag,
            host_port(*transport.local_address),
            transport.server,
        )
        anew = await gather_relay(agent, server, transport.server, started=started, report=False)
        if anew.candidates:
            data_pair = agent._core.data_pair
            if data_pair is None or data_pair.base != transport.base:
                transport.close()  # (its task deletes the allocation, if it still can)
            return
        if transport.closed:  # (lost meanwhile: nothing to keep)
            logger.warning(
                "%s: no relay candidate from %s: %s",
                agent._local.ufrag,
                transport.server,
                anew.error,
            )
            agent._report(anew)
            return
    if (alive or probing.cancelled_caught) and not transport.closed:  # (closed: lost)
        agent._add_local(candidate, transport.base, signal=True, url=transport.server)
        agent._report(GatherReport(str(transport.server), trio.current_time() - started, 1))
        return
    logger.info(
        "%s: relay %s from %s lost (%s): asking for another",
        agent._local.ufrag,
        host_port(*transport.local_address),
        transport.server,
        "closed" if transport.error is None else _why(transport.error),
    )
    await gather_relay(agent, server, transport.server, started=started)


def finish_gathering(agent: Agent) -> None:
    """Every source has finished: local candidates are complete."""
    agent._core.set_local_complete()
    agent._set_gathering(GatheringState.COMPLETE)
    agent._pump()


async def gather_host(agent: Agent) -> None:
    """Host gathering (RFC 8445 §5.1.1.1): a socket for each address, read by the agent task
    (the first) or a receive task of its own (each other)."""
    started = trio.current_time()
    if agent._muxes or agent._tcp_shares:
        if agent._config.network.mdns is MdnsMode.QUERY_AND_GATHER:
            await read_interfaces()  # (mDNS's links, and each name's)
        if not agent._closed:
            _mux_hosts(agent, started)
        return
    await read_interfaces()
    if not agent._closed:  # (while a worker thread read them: uncancellable)
        _hosts(agent, host_addresses(agent._config.network), started, anew=False)


def _hosts(
    agent: Agent,
    hosts: Sequence[HostAddress],
    started: float,
    *,
    anew: bool,
    links: MdnsLinks | None = None,
) -> None:
    """The host candidates of ``hosts`` (each on the socket the agent has at its address: a
    gathering anew; or on a new one), and their ICE-TCP ones; then the host report.
    ``links``: the interfaces mDNS is to open on, as a gathering anew read them (else read
    now).

    At the first gathering, a socket that cannot be bound for want of descriptors raises
    :class:`~trice.LimitError` (out of :func:`~trice.open_agent`); anew, the restart has
    happened: it is reported (and logged), and costs only its own candidate."""
    network = agent._config.network
    signal = agent._config.transport_policy is TransportPolicy.ALL
    before = len(agent._signalled)
    if signal and hosts and network.mdns is MdnsMode.QUERY_AND_GATHER:
        agent._open_mdns(links)  # (first: the candidates are signalled under names it answers)
    sockets = {
        t.local_address[0]: t
        for t in agent._transports.values()
        if isinstance(t, UdpTransport) and not t.closed
    }
    error = None

    def adding(add: Callable[[], bool | None]) -> bool:
        """``add()``, and whether it added a candidate, a descriptor short raising or not."""
        nonlocal error
        try:
            return bool(add())
        except LimitError as exc:
            if not anew:
                raise
            logger.warning("%s: gathering anew: %s", agent._local.ufrag, exc)
            error = str(exc)
            return False

    bound = 0  # (host candidates added: one a UDP socket, and the TCP ones' at all)
    unbound: list[str] = []  # (why addresses could not be bound, for the report)
    _rank(agent, hosts)
    for host in hosts if network.udp else ():
        kept = sockets.get(host.address)
        ranks = _ranks(agent, host)
        bound += adding(functools.partial(_udp_host, agent, host, ranks, kept, unbound))
    if signal and network.tcp_candidates:
        bound += adding(functools.partial(_gather_tcp, agent, hosts))
    count = len(agent._signalled) - before if signal else bound
    if error is None and unbound:
        error = "; ".join(unbound)
    elif error is None and not agent._core.local_candidates:
        error = "no usable local address (check the filters)"
    elif error is None and bound and not count:
        error = _withheld(agent)
    agent._report(GatherReport("host", trio.current_time() - started, count, error))


def _withheld(agent: Agent) -> str | None:
    """Why a gathering signalled no host candidate of those it has: under
    ``QUERY_AND_GATHER`` each is withheld rather than shown under its own address (see
    ``Agent._add_local``); ``None`` under another mode."""
    if agent._config.network.mdns is not MdnsMode.QUERY_AND_GATHER:
        return None
    if agent._mdns:
        return "host candidates withheld: no link answers their .local names"
    return "host candidates withheld: mDNS could not be opened"


def _mux_hosts(
    agent: Agent,
    started: float,
    links: MdnsLinks | None = None,
) -> None:
    """Host candidates at the muxes' addresses, shared with their other agents (a passive
    TCP one at a TCP mux's), and the host report (for a gathering anew too, whose read of
    the interfaces mDNS is to open on is ``links``)."""
    signal = agent._config.transport_policy is TransportPolicy.ALL
    if signal and agent._config.network.mdns is MdnsMode.QUERY_AND_GATHER:
        agent._open_mdns(links)  # (first: the candidates are signalled under names)
    before = len(agent._signalled)
    added = 0
    for rank, share in enumerate(agent._muxes):
        if share.closed:
            continue  # (its mux closed: the address may be anybody's now)
        candidate = host_candidate(share.local_address, rank, address_rank=0, key=agent._key)
        agent._add_local(candidate, share.base, signal=signal)
        _add_external(agent, candidate, share.base)
        added += 1
    for rank, (tcp_mux, tcp) in enumerate(agent._tcp_shares):
        if tcp_mux.closed or tcp.closed:
            continue
        candidate = tcp_host_candidate(
            tcp.local_address, TcpType.PASSIVE, rank, address_rank=0, key=agent._key
        )
        agent._add_local(candidate, tcp.base, signal=signal)
        _add_external(agent, candidate, tcp.base)
        added += 1
    count = len(agent._signalled) - before if signal else added
    error = None if added else "no usable local address (every mux is closed)"
    if error is None and not count and signal:
        error = _withheld(agent)
    agent._report(GatherReport("host", trio.current_time() - started, count, error))


def _rank(agent: Agent, hosts: Sequence[HostAddress]) -> None:
    """Give ``hosts``' interfaces and addresses not ranked yet their ranks in host
    candidates' priorities: an interface's is its place in the order the agent first found
    its interfaces; an address's, its place among its interface's, new ones in RFC 8421
    §4's order (``dual_stack_order``: deprecated ones last), each in the first place an
    address gone left on its interface (a temporary IPv6 address's successor takes its
    place), else after the others.  Ranks are kept: an address kept by a gathering anew
    keeps its host candidate, priority and all, though others came or went
    (``Agent.restart`` says it keeps it).  (A tuple, not a dict: memory a thousand agents
    hold; a place left is an empty address.  Kept a process, by what it is made of: the
    agents of one process rank the same addresses the same.)"""
    agent._ranked = _ranking(agent._ranked, tuple(hosts))


@functools.lru_cache(maxsize=64)
def _ranking(ranked: tuple[str, ...], hosts: tuple[HostAddress, ...]) -> tuple[str, ...]:
    """:func:`_rank`'s ranking: ``ranked`` with ``hosts`` ranked in it."""
    present = {(host.interface, host.address) for host in hosts}
    entries = [
        (interface, address if (interface, address) in present else "")
        for interface, address in zip(ranked[::2], ranked[1::2], strict=True)
    ]
    known = set(entries)
    new: dict[str, list[str]] = {}
    deprecated = {host.address for host in hosts if host.deprecated}
    for host in hosts:
        if (host.interface, host.address) not in known:
            new.setdefault(host.interface, []).append(host.address)
    for interface, addresses in new.items():
        for address in dual_stack_order(addresses, deprecated):
            place = next((k for k, e in enumerate(entries) if e == (interface, "")), None)
            if place is None:
                entries.append((interface, address))
            else:
                entries[place] = (interface, address)
    return tuple(part for entry in entries for part in entry)


def _ranks(agent: Agent, host: HostAddress) -> tuple[int, int]:
    """``host``'s interface rank and address rank (see :func:`_rank`, which gave them)."""
    return _ranks_in(agent._ranked, host.interface, host.address)


@functools.lru_cache(maxsize=256)
def _ranks_in(ranked: tuple[str, ...], interface: str, address: str) -> tuple[int, int]:
    """:func:`_ranks` of ``interface`` and ``address`` in ``ranked``, kept (as ``_ranking``)."""
    interfaces = list(dict.fromkeys(ranked[::2]))
    mine = [a for i, a in zip(ranked[::2], ranked[1::2], strict=True) if i == interface]
    return interfaces.index(interface), mine.index(address)


def _udp_host(
    agent: Agent,
    host: HostAddress,
    ranks: tuple[int, int],
    kept: UdpTransport | None,
    unbound: list[str],
) -> bool:
    """The host candidate of ``host`` (of its interface's and address's ``ranks``): on
    ``kept``, the socket the agent has there already (a gathering anew), or on a new
    socket; whether it was added (an address that cannot bind is logged and skipped, and
    why noted in ``unbound``).

    Raises:
        LimitError: no descriptor is left for the socket.
    """
    network = agent._config.network
    if kept is None:
        try:
            start = 0 if network.port_range is None else secrets.randbelow(65536)
            sock = bind_socket(host.bind_address, network.port_range, start)
        except OSError as exc:  # (LimitError is no OSError: it propagates)
            logger.warning(
                "%s: cannot bind %s (%s): %s; skipped",
                agent._local.ufrag,
                host.address,
                host.interface,
                exc,
            )
            unbound.append(f"cannot bind {host.address}: {exc.strerror or exc}")
            return False
        kept = UdpTransport(agent._new_base(), sock, agent)
        agent._transports[kept.base] = kept
        agent._adopt_socket(kept, host.address)
    interface_rank, address_rank = ranks
    candidate = host_candidate(
        (host.address, kept.local_address[1]),
        interface_rank,
        address_rank=address_rank,
        key=agent._key,
    )
    signal = agent._config.transport_policy is TransportPolicy.ALL
    agent._add_local(candidate, kept.base, signal=signal)
    _add_external(agent, candidate, kept.base)
    return True


@dataclass(frozen=True, slots=True)
class Surroundings:
    """What a gathering anew reads before the ICE restart changes anything (so that a
    filter that raises leaves the agent as it was): the host addresses the config's filters
    take now, every address the machine has (a relay is of use only while the address its
    connection leaves from is one of them), and the interfaces mDNS runs on now
    (:func:`mdns_interfaces`), where mDNS is open or may be opened."""

    hosts: tuple[HostAddress, ...]
    machine: frozenset[str]
    links: MdnsLinks | None = None


def read_surroundings(agent: Agent) -> Surroundings:
    """The interfaces read afresh, for :func:`gather_anew`.

    Raises:
        whatever the config's filters raise.
    """
    forget_adapters()
    machine = machine_addresses()
    network = agent._config.network
    links = None
    if agent._mdns is not None or network.mdns is MdnsMode.QUERY_AND_GATHER:
        links = mdns_interfaces(network)  # (see _follow_links, and Agent._open_mdns)
    if agent._muxes or agent._tcp_shares or agent._config.transport_policy is TransportPolicy.RELAY:
        return Surroundings((), machine, links)
    return Surroundings(tuple(host_addresses(network)), machine, links)


def gather_anew(agent: Agent, now: Surroundings) -> None:
    """Gathering anew, for an ICE restart that asks for it (``Agent.restart(regather=True)``),
    on the interfaces as ``now`` found them.

    An address still there keeps its socket, and its host candidate, the same; a new address
    gets a socket; an address gone is signalled no more, and its socket is closed, unless
    the pair of before the restart goes over it (RFC 8445 §9: data may go on there until the
    new checks select a pair), and then at the next gathering anew.  ICE-TCP host candidates
    likewise.  A relay whose connection leaves from an address the machine still has is
    asked whether the server still holds it (a Refresh now: the path to the server may
    have changed under the same address, as through a proxy on this machine, or the server
    lost it), and keeps its candidate unless the server refused it (see
    :func:`_probe_relay`); another is closed (deallocated; if the pair of before goes over
    it, at the next gathering anew), and the server asked for a new one.  Then the STUN
    servers are asked again from every socket signalled.  Gathering goes back to
    ``gathering`` and on to ``complete``, each candidate gathered (again) as it comes.  A
    socket that cannot be bound (no descriptor left, say) is reported, not raised: the
    restart has happened."""
    started = trio.current_time()
    core = agent._core
    data_pair = core.data_pair
    carrying = None if data_pair is None else data_pair.base
    relays = [
        (candidate, base)
        for candidate, base in core.local_candidates
        if candidate.type is CandidateType.RELAY
        and isinstance(transport := agent._transports.get(base), RelayTransport)
        and not transport.closed
        and transport.source_address in now.machine
    ]
    kept = {base for _, base in relays}
    for transport in list(agent._transports.values()):
        if (
            isinstance(transport, RelayTransport)
            and not transport.closed
            and transport.base not in kept
            and transport.base != carrying
        ):
            transport.close()  # (its task deallocates it; a new one is asked for below)
    _follow_links(agent, now.links)
    core.gather_anew()
    agent._signalled.clear()
    agent._mapped = None
    agent._reports = ()
    agent._set_gathering(GatheringState.GATHERING)
    policy = agent._config.transport_policy
    if policy is not TransportPolicy.RELAY:
        if agent._muxes or agent._tcp_shares:
            _mux_hosts(agent, started, now.links)
        else:
            _close_gone(agent, now.hosts, carrying)
            _hosts(agent, now.hosts, started, anew=True, links=now.links)
    if has_server_sources(agent):
        agent._nursery.start_soon(gather_servers, agent, relays, name="gather")
    else:
        finish_gathering(agent)


def _follow_links(agent: Agent, links: MdnsLinks | None) -> None:
    """mDNS at a gathering anew, whatever the mode: an open one follows the links of now,
    ``links`` (before the new candidates are named); one that could not be opened is
    tried again when next needed (an interface may have come; that try does not warn
    again)."""
    mdns = agent._mdns
    if mdns is False:
        agent._mdns = None
        agent._mdns_quiet = True
    elif mdns is not None:
        mdns.follow_links(agent._config.network, links)


def _close_gone(agent: Agent, hosts: Sequence[HostAddress], carrying: int | None) -> None:
    """Close the host transports (UDP sockets, ICE-TCP candidates) of addresses the agent
    gathers no more, but for the one the pair of before the restart goes over
    (``carrying``), which waits for the next gathering anew, or the agent's end.  (The first
    socket, which the agent's task reads, stays its first, closed: the new sockets get
    readers of their own.)"""
    present = {host.address for host in hosts}
    for transport in list(agent._transports.values()):
        if (
            isinstance(transport, (UdpTransport, TcpTransport))
            and not transport.closed
            and transport.local_address[0] not in present
            and transport.base != carrying
        ):
            transport.close()  # (no pair is on it: the restart dropped them all)
            del agent._transports[transport.base]
            if type(transport) is UdpTransport:
                agent._forget_socket(transport)


#: Connections a passive ICE-TCP candidate's listener holds before they are accepted.
_BACKLOG = 32


def _gather_tcp(agent: Agent, addresses: Sequence[HostAddress]) -> bool:
    """ICE-TCP host candidates (RFC 6544 §5.1): for each address, a listening socket for a
    passive candidate, and an active candidate, as ``NetworkConfig.tcp_candidates`` asks
    (an ICE-lite agent opens no connection: passive only).  Each runs as a task.  Returns
    whether it added any."""
    added = False
    network = agent._config.network
    kinds = network.tcp_candidates
    if agent._config.lite and TcpType.ACTIVE in kinds:
        logger.info(
            "%s: ICE-lite opens no connection: no active ICE-TCP candidate", agent._local.ufrag
        )
        kinds = tuple(kind for kind in kinds if kind is TcpType.PASSIVE)
    counters = agent._tcp_counters
    if counters is None:
        counters = agent._tcp_counters = TcpCounters()
    kept = {
        (t.local_address[0], t.tcp_type): t
        for t in agent._transports.values()
        if isinstance(t, TcpTransport) and not t.closed
    }
    for host in addresses:
        rank, address_rank = _ranks(agent, host)  # (given by _hosts, which calls this)
        for kind in kinds:
            existing = kept.get((host.address, kind))
            if existing is not None:  # (gathering anew: the candidate of before, again)
                candidate = tcp_host_candidate(
                    existing.local_address, kind, rank, address_rank=address_rank, key=agent._key
                )
                agent._add_local(candidate, existing.base, signal=True)
                added = True
                if kind is TcpType.PASSIVE:
                    _add_external(agent, candidate, existing.base)
                continue
            listener = None
            port = ACTIVE_PORT
            if kind is TcpType.PASSIVE:
                try:
                    start = 0 if network.port_range is None else secrets.randbelow(65536)
                    listener = bind_socket(
                        host.bind_address, network.port_range, start, kind=socket.SOCK_STREAM
                    )
                    try:
                        listener.listen(_BACKLOG)
                    except BaseException:
                        listener.close()
                        raise
                except OSError as exc:  # (LimitError is no OSError: it propagates)
                    logger.warning(
                        "%s: cannot listen on %s (%s) for TCP: %s; skipped",
                        agent._local.ufrag,
                        host.address,
                        host.interface,
                        exc,
                    )
                    continue
                port = listener.getsockname()[1]
            base = agent._new_base()
            transport = TcpTransport(
                base,
                (host.address, port),
                kind,
                deliver=agent._dispatch,
                failed=agent._tcp_failed,
                max_links=agent._config.max_pairs,
                counters=counters,
                listener=listener,
            )
            agent._transports[base] = transport
            agent._nursery.start_soon(transport.run, name=f"tcp {kind.value} {host.address}")
            candidate = tcp_host_candidate(
                (host.address, port), kind, rank, address_rank=address_rank, key=agent._key
            )
            agent._add_local(candidate, base, signal=True)
            added = True
            if kind is TcpType.PASSIVE:
                _add_external(agent, candidate, base)  # (a 1:1 NAT forwards TCP too)
    return added


def _add_external(agent: Agent, host: Candidate, base: int) -> None:
    """A 1:1 NAT's public address for ``host``, if the network config gives one
    (``NetworkConfig.external_addresses``): known without a STUN server, it is what one would
    find (so that one that finds it adds nothing), and under ``external_candidate=SRFLX`` a
    srflx candidate of its own (under ``HOST``, ``Agent._add_local`` signals it in the host
    candidate's place)."""
    network = agent._config.network
    if not network.external_addresses:
        return
    external = network.external_address(host.address)
    if external is None:
        return
    mapped = (external, host.port)
    policy = agent._config.transport_policy
    if network.external_candidate is CandidateType.SRFLX:
        signal = policy is not TransportPolicy.RELAY
    else:
        signal = policy is TransportPolicy.ALL  # (in the host candidate's place)
    if signal:
        # (Known only if it goes out: under NOHOST a host candidate carries it nowhere,
        # and a STUN server that finds it is then what signals it.)
        if agent._mapped is None:
            agent._mapped = set()
        agent._mapped.add((base, mapped))
    if network.external_candidate is CandidateType.SRFLX:
        srflx = srflx_candidate(host, mapped, "1:1", key=agent._key)
        agent._add_local(srflx, base, signal=signal)


async def gather_srflx(
    agent: Agent, url: ServerUrl, transport: UdpTransport | MuxTransport
) -> None:
    """Server-reflexive gathering (RFC 8445 §5.1.1.2): a Binding request to the STUN
    server from a host socket, retransmitted as RFC 8489 §6.2.1 says, for at most
    ``Timing.gather_timeout``; or, for an agent on a UDP mux, the mux's answer (which asks
    from its socket for all its agents: see ``UdpMux._server_reflexive``)."""
    started = trio.current_time()
    source = f"{url} from {transport.local_address[0]}"
    timing = agent._config.timing
    end = started + timing.gather_timeout
    ask: Callable[[Address], Awaitable[stun.Message]]
    if isinstance(transport, MuxTransport):
        ask = functools.partial(
            transport.mux._server_reflexive, timing=timing, on_refused=transport.hooks.refused
        )
    else:
        pending = agent._pending
        if pending is None:
            pending = agent._pending = {}

        host = transport

        def drain() -> None:
            if isinstance(host, UdpTransport) and not host.closed:
                agent._drain(host)

        async def ask(server: Address) -> stun.Message:
            request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST)
            return await stun_transaction(
                transport.send_nowait, pending, timing, server, request, end, drain
            )

    try:
        with trio.fail_at(end):
            servers = await _resolve_all(url.host, url.port, transport.family)
            for scope, within in (("loopback", _is_loopback), ("link-local", _is_link_local)):
                if within(transport.local_address[0]):
                    # (A loopback socket reaches no other address, and a link-local one,
                    # RFC 3927, nothing off its link: no waiting for the timeout.)
                    servers = [server for server in servers if within(server[0])]
                    if not servers:
                        elapsed = trio.current_time() - started
                        report = GatherReport(source, elapsed, 0, f"unreachable from {scope}")
                        agent._report(report)
                        return
        # (A host socket's transactions end at ``end`` themselves, the answer that waits
        # unread taken first, which a cancel scope's deadline would not: see
        # stun_transaction.  The mux's are bounded here.)
        with trio.fail_at(end if isinstance(transport, MuxTransport) else math.inf):
            try:
                answered, reply = await _first_answer(ask, servers, timing.rto)
            except trio.ClosedResourceError:
                elapsed = trio.current_time() - started
                agent._report(GatherReport(source, elapsed, 0, "the mux closed"))
                return
    except trio.TooSlowError:
        agent._report(GatherReport(source, trio.current_time() - started, 0, "timeout"))
        return
    except socket.gaierror:  # (a name no resolver knows: as a TURN server's is reported)
        agent._report(GatherReport(source, trio.current_time() - started, 0, "unresolvable"))
        return
    except OSError as exc:
        agent._report(GatherReport(source, trio.current_time() - started, 0, f"unreachable: {exc}"))
        return
    elapsed = trio.current_time() - started
    if reply.message_class is stun.MessageClass.ERROR:
        err = reply.get(stun.ErrorCode)
        text = f"{err.code} {printable(err.reason)}" if err else "error response"
        agent._report(GatherReport(source, elapsed, 0, text, err.code if err else None))
        return
    mapped = reply.get(stun.XorMappedAddress) or reply.get(stun.MappedAddress)
    if mapped is None:
        agent._report(GatherReport(source, elapsed, 0, "no mapped address"))
        return
    if reply.unknown_required:
        # RFC 8489 §6.3.4: a success with an attribute it does not know, and must, is no
        # answer to take.
        text = "unknown comprehension-required attribute " + ", ".join(
            f"0x{kind:04x}" for kind in reply.unknown_required
        )
        agent._report(GatherReport(source, elapsed, 0, text))
        return
    address = (mapped.address, mapped.port)
    problem = server_address_problem(
        *address, ipv6=transport.family == socket.AF_INET6, base=transport.local_address[0]
    )
    if problem is not None:
        text = f"bad mapped address {host_port(*address)}: {problem}"
        agent._report(GatherReport(source, elapsed, 0, text))
        return
    key = (transport.base, address)
    if agent._mapped is None:
        agent._mapped = set()
    shown = any(  # (a host candidate of this socket went out under an address)
        base == transport.base
        and (c := gathered.candidate).type is CandidateType.HOST
        and not c.address.endswith(".local")
        for gathered, base in agent._signalled
    )
    if key in agent._mapped or (address == transport.local_address and shown):
        # No NAT in between (the host candidate is the address), or a mapping another
        # server already found: nothing new.  (Under NOHOST no host candidate is signalled,
        # and under mDNS gathering only its .local name, which a peer off the link cannot
        # resolve, or none, if no link answers it: then the address is signalled as this
        # one, or the agent would signal none, as libwebrtc keeps it when mDNS hides the
        # host.  Where a 1:1 NAT's address stands in the host's place, the local one is
        # signalled nowhere: left out.)
        agent._report(GatherReport(source, elapsed, 0))
        return
    base_candidate = next((c for c, b in agent._core.local_candidates if b == transport.base), None)
    if base_candidate is None:
        # The transport was lost while the server answered (its mux closed, say): nothing
        # to stand on.
        agent._report(GatherReport(source, elapsed, 0, "closed"))
        return
    agent._mapped.add(key)
    # (The foundation goes by the server's IP address, not its name, RFC 8445 §5.1.1.3: two
    # names of one server make one foundation.)
    candidate = srflx_candidate(base_candidate, address, answered[0], key=agent._key)
    agent._add_local(candidate, transport.base, signal=True, url=url)
    agent._report(GatherReport(source, elapsed, 1))
    kept = agent._srflx_kept
    if kept is None:
        kept = agent._srflx_kept = set()
    if (transport.base, answered) not in kept:  # (not again after a gathering anew)
        kept.add((transport.base, answered))
        agent._nursery.start_soon(
            _keep_srflx_alive,
            agent,
            transport,
            answered,
            name=f"keep srflx alive {url} from {transport.local_address[0]}",
        )


#: How often a server-reflexive candidate's NAT binding is refreshed with a Binding request
#: to its STUN server until ICE completes (RFC 8445 §5.1.1.4; no interval given there):
#: libwebrtc's 10 s, a third of the 30 s after which some NATs forget an idle UDP mapping.
SRFLX_KEEPALIVE: Final = 10.0


async def _keep_srflx_alive(
    agent: Agent, transport: UdpTransport | MuxTransport, server: Address
) -> None:
    """Keep the NAT binding of the socket ``transport`` to the STUN server ``server``, which
    a srflx candidate stands for (RFC 8445 §5.1.1.4): a Binding request there every
    ``SRFLX_KEEPALIVE`` seconds while ICE has not completed or failed (and again after an
    ICE restart), until no srflx candidate of the socket is left (a gathering anew gave
    them up) or the socket closes.  A peer that gets
    the candidate late (an answer after a minute's ringing) still finds the mapping there:
    before the checks start, nothing else goes out of the socket.  On a UDP mux, the mux
    asks for all its agents: one request a server however many agents keep it."""
    core = agent._core
    timing = agent._config.timing
    base = transport.base
    ask: Callable[[], Awaitable[object]]
    if isinstance(transport, MuxTransport):
        mux, refused = transport.mux, transport.hooks.refused

        async def ask() -> None:
            # (The mux's answer if it asked within the interval, for any of its agents.)
            fresh = SRFLX_KEEPALIVE * 0.9
            await mux._server_reflexive(server, timing, refused, fresh_for=fresh)

    else:
        pending = agent._pending
        assert pending is not None  # (gather_srflx's transaction made it)

        def drain() -> None:
            if not transport.closed:
                agent._drain(transport)

        async def ask() -> None:
            request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST)
            until = trio.current_time() + SRFLX_KEEPALIVE / 2
            await stun_transaction(
                transport.send_nowait, pending, timing, server, request, until, drain
            )

    try:
        while True:
            await trio.sleep(SRFLX_KEEPALIVE)
            if transport.closed or not any(
                b == base and c.type is CandidateType.SRFLX for c, b in core.local_candidates
            ):
                return
            if core.state in _ICE_OVER:
                # (Over, for now: an ICE restart signals the candidate again, and the
                # binding needs keeping till the new round completes, as a failed agent's
                # went quiet.)
                restarted = agent._restarted_event
                if restarted is None:
                    restarted = agent._restarted_event = trio.Event()
                await restarted.wait()
                continue
            try:
                with trio.fail_after(SRFLX_KEEPALIVE / 2):
                    await ask()
            except (trio.TooSlowError, trio.ClosedResourceError, OSError) as exc:
                # (The next goes all the same: the requests themselves keep the binding.)
                logger.debug("srflx keepalive to %s unanswered: %r", host_port(*server), exc)
    finally:
        kept = agent._srflx_kept
        if kept is not None:
            kept.discard((base, server))


#: The connection states after which no srflx binding needs keeping (see _keep_srflx_alive).
_ICE_OVER: Final = frozenset(
    {ConnectionState.COMPLETED, ConnectionState.FAILED, ConnectionState.CLOSED}
)

#: Allocations started again from a new local port after a 437 Allocation Mismatch.
_MISMATCH_RETRIES = 2


async def gather_relay(
    agent: Agent,
    server: IceServer,
    url: ServerUrl,
    *,
    started: float | None = None,
    report: bool = True,
) -> GatherReport:
    """Relay gathering (RFC 8445 §5.1.1.2): allocate on the TURN server; the relay runs
    as a task of the agent until the agent closes, which deallocates it.  The server has
    ``gather_timeout`` from ``started`` (by default, now).  Returns the report of it,
    which is the agent's (and a failure warned of) unless not ``report`` and it failed
    (the caller then says what came of it)."""

    def failed(outcome: GatherReport) -> GatherReport:
        if report:
            agent._report(outcome)
        return outcome

    started = trio.current_time() if started is None else started
    base = agent._new_base()
    assert server.username is not None and server.credential is not None
    deadline = started + agent._config.timing.gather_timeout
    try:
        for attempt in range(1 + _MISMATCH_RETRIES):
            try:
                transport: RelayTransport = await agent._nursery.start(
                    functools.partial(
                        _serve_relay,
                        agent,
                        url,
                        server,
                        base=base,
                        timeout=max(deadline - trio.current_time(), 0.001),
                    ),
                    name=f"relay {url}",
                )
                break
            except AllocationError as exc:
                # 437: the server holds an allocation for this very 5-tuple (a client that
                # used the local port before and never deallocated, say).  RFC 8656 §7.3:
                # start again from another local port, as every connection gets.
                if exc.code != 437 or attempt == _MISMATCH_RETRIES:
                    raise
                logger.info("%s: %s; again from another port", agent._local.ufrag, exc)
    except TurnError as exc:
        level = logging.WARNING if report else logging.DEBUG
        logger.log(level, "%s: no relay candidate from %s: %s", agent._local.ufrag, url, exc)
        code = getattr(exc, "code", None)
        elapsed = trio.current_time() - started
        return failed(GatherReport(str(url), elapsed, 0, _why(exc), code))
    if transport.closed:
        # Lost between its allocation and now (the relay's tasks ran first).
        error = "closed" if transport.error is None else _why(transport.error)
        return failed(GatherReport(str(url), trio.current_time() - started, 0, error))
    problem = server_address_problem(
        *transport.local_address, ipv6=None, base=transport.source_address
    )
    if problem is not None:
        # (Closing deletes the allocation, in the relay's own task.)
        transport.close()
        error = f"bad relayed address {host_port(*transport.local_address)}: {problem}"
        return failed(GatherReport(str(url), trio.current_time() - started, 0, error))
    agent._transports[base] = transport
    # (The foundation tells apart relays of one server reached over UDP, TCP and TLS: the
    # transport to the server is part of it, RFC 8445 §5.1.1.3.)
    obtained_from = f"{url.host} {url.scheme} {url.transport}"
    candidate = relay_candidate(
        transport.local_address, transport.mapped_address, obtained_from, key=agent._key
    )
    agent._add_local(candidate, base, signal=True, url=url)
    gathered = GatherReport(str(url), trio.current_time() - started, 1)
    agent._report(gathered)
    return gathered


def _why(error: TurnError) -> str:
    """A gather report's error: the server's code and reason, or what went wrong."""
    reason = getattr(error, "reason", "") or str(error)
    if reason in ("certificate", "tls"):
        reason = str(error)  # (the tag alone does not say why: the verifier's message does)
    code = getattr(error, "code", None)
    why = f"{code} {reason}" if code else reason
    alternate = getattr(error, "alternate_server", None)
    if alternate is not None:  # (300 Try Alternate: the server to list instead, RFC 8489 §10)
        why += f" (alternate server {host_port(*alternate)})"
    return why


async def _serve_relay(
    agent: Agent,
    url: ServerUrl,
    server: IceServer,
    *,
    base: int,
    timeout: float,  # noqa: ASYNC109 (bounds the allocation only, as run_relay's)
    task_status: trio.TaskStatus[RelayTransport] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`run_relay` as a task of ``agent``.  When the allocation ends on its own (the
    server refused to refresh it, or the connection to it was lost), the agent hears of it
    (``Agent._transport_lost``): the pairs on the relay fail, and ICE with them if one was
    selected.  (Closing the agent ends the relay by cancellation, which goes past this.)"""
    assert server.username is not None and server.credential is not None
    proxy = agent._config.network.proxy
    await run_relay(
        url,
        server.username,
        server.credential,
        base=base,
        deliver=agent._dispatch,
        ssl_context=server.ssl_context,
        timeout=timeout,
        proxy=proxy,
        owner=lambda: agent._local.ufrag,  # (as it is then: a restart changes it)
        task_status=task_status,
    )
    agent._transport_lost(base)
    transport = agent._transports.get(base)
    if isinstance(transport, RelayTransport) and transport.closed and not agent._closed:
        del agent._transports[base]  # (ended: nothing goes over it any more)


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def _is_link_local(address: str) -> bool:
    return ipaddress.ip_address(address.split("%", 1)[0]).is_link_local


def _may_reach(host: str, family: int) -> bool:
    """Whether a socket of ``family`` can talk to ``host`` (a name may resolve to either)."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return True
    return (literal.version == 6) == (family == socket.AF_INET6)


#: The resolver's errors that say a name has no address (of the family asked).
_NO_ADDRESS: Final = frozenset(
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
    if hasattr(socket, name)
)


async def _resolve_all(host: str, port: int, family: int) -> list[Address]:
    """A server's addresses in the family of the socket that will talk to it, in the
    resolver's order, each once."""
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, family=family, type=trio.socket.SOCK_DGRAM
        )
    except socket.gaierror as exc:
        # (A name with no address of this family: unresolvable if it has none at all, else
        # of the other family only.  Another error, a passing one, is as it is.)
        if exc.errno not in _NO_ADDRESS:
            raise
        try:
            found = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
        except socket.gaierror:
            raise exc from None
        if any(info[0] == family for info in found):
            raise
        raise OSError(f"{host} has no address of the socket's family") from exc
    addresses: list[Address] = []
    for info in infos:
        sockaddr = info[4]
        address = (str(sockaddr[0]), int(sockaddr[1]))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"{host} has no address of the socket's family")
    return addresses


async def _first_answer(
    ask: Callable[[Address], Awaitable[stun.Message]], servers: Sequence[Address], stagger: float
) -> tuple[Address, stun.Message]:
    """The first answer of a server that has several addresses (RFC 8489 §8: a name may
    stand for several; RFC 8305's way with them), and the address that gave it: ``ask``
    each in turn, the next one ``stagger`` seconds after the last began, or at once when
    it failed, until one answers.  The caller bounds the whole in time.

    Raises:
        OSError, trio.ClosedResourceError, trio.TooSlowError: every address failed (the
            first error that came).
    """
    if len(servers) == 1:
        return servers[0], await ask(servers[0])
    answers: list[tuple[Address, stun.Message]] = []
    errors: list[OSError | trio.ClosedResourceError | trio.TooSlowError] = []
    async with trio.open_nursery() as nursery:

        async def one(server: Address, failed: trio.Event) -> None:
            try:
                answer = await ask(server)
            except (OSError, trio.ClosedResourceError, trio.TooSlowError) as exc:
                errors.append(exc)
                failed.set()
                return
            answers.append((server, answer))
            nursery.cancel_scope.cancel()

        for server in servers:
            failed = trio.Event()
            nursery.start_soon(one, server, failed)
            with trio.move_on_after(stagger):
                await failed.wait()
    if answers:
        return answers[0]
    raise errors[0]
