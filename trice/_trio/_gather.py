"""Which local addresses host gathering binds (RFC 8445 §5.1.1.1), read with ifaddr."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

import ifaddr

from trice._config import NetworkConfig

__all__ = ["HostAddress", "host_addresses"]


@dataclass(frozen=True, slots=True)
class HostAddress:
    """A usable local address: the interface it is on and the literal to bind."""

    interface: str
    address: str
    bind_address: str


#: Interfaces are read at most this often: an application that opens many agents at once
#: (a server, a test with hundreds of pairs) reads them once, not once an agent.
_ADAPTERS_TTL = 1.0
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_adapters_cache: tuple[float, list[tuple[str, list[_Address]]]] | None = None


def _adapters() -> list[tuple[str, list[_Address]]]:
    """(interface name, addresses) for every interface, cached for a second."""
    global _adapters_cache
    now = time.monotonic()
    if _adapters_cache is not None and now - _adapters_cache[0] < _ADAPTERS_TTL:
        return _adapters_cache[1]
    adapters = []
    for adapter in ifaddr.get_adapters():
        name = str(adapter.nice_name or adapter.name)
        addresses = []
        for ip in adapter.ips:
            text = str(ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip)
            try:
                addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                continue
        adapters.append((name, addresses))
    _adapters_cache = (now, adapters)
    return adapters


def host_addresses(network: NetworkConfig) -> list[HostAddress]:
    """The addresses host gathering binds, after the config's filters.

    Link-local IPv6 is always left out (it cannot reach peers off the link and needs scope
    handling every peer gets wrong); loopback only when ``include_loopback`` is set; IPv4 and
    IPv6 per the switches; then the interface and IP filters.
    """
    found: list[HostAddress] = []
    seen: set[str] = set()
    for name, addresses in _adapters():
        if network.interface_filter is not None and not network.interface_filter(name):
            continue
        for address in addresses:
            if address.version == 4 and not network.ipv4:
                continue
            if address.version == 6 and not network.ipv6:
                continue
            if address.is_link_local or address.is_multicast or address.is_unspecified:
                continue
            if address.is_loopback and not network.include_loopback:
                continue
            if network.ip_filter is not None and not network.ip_filter(address):
                continue
            literal = str(address)
            if literal in seen:
                continue
            seen.add(literal)
            found.append(HostAddress(name, literal, literal))
    return found
