"""Which local addresses host gathering binds (RFC 8445 §5.1.1.1), read with ifaddr."""

from __future__ import annotations

import ipaddress
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


def host_addresses(network: NetworkConfig) -> list[HostAddress]:
    """The addresses host gathering binds, after the config's filters.

    Link-local IPv6 is always left out (it cannot reach peers off the link and needs scope
    handling every peer gets wrong); loopback only when ``include_loopback`` is set; IPv4 and
    IPv6 per the switches; then the interface and IP filters.
    """
    found: list[HostAddress] = []
    seen: set[str] = set()
    for adapter in ifaddr.get_adapters():
        name = str(adapter.nice_name or adapter.name)
        if network.interface_filter is not None and not network.interface_filter(name):
            continue
        for ip in adapter.ips:
            raw = ip.ip
            text = raw[0] if isinstance(raw, tuple) else raw
            try:
                address = ipaddress.ip_address(str(text).split("%", 1)[0])
            except ValueError:
                continue
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
