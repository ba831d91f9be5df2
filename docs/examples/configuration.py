"""Configuration: one frozen, keyword-only AgentConfig with nested groups, checked when built.

Nothing here opens a socket: a bad value fails where it is written, with a ConfigError that
names it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import trice

config = trice.AgentConfig(
    network=trice.NetworkConfig(
        interface_filter=lambda name: not name.startswith(("docker", "veth")),
        ip_filter=lambda ip: ip in ipaddress.ip_network("127.0.0.0/8"),
        include_loopback=True,
        ipv6=False,
        port_range=(50000, 50099),
    ),
    timing=trice.Timing(ta=0.02, nomination_delay=0.1, failed_timeout=10.0),
    nomination=trice.Nomination.AGGRESSIVE,
    ice_servers=[
        trice.IceServer("stun:stun.example.org"),
        trice.IceServer("turns:turn.example.org", username="alice", credential="s3cret"),
    ],
    transport_policy=trice.TransportPolicy.ALL,
    max_remote_candidates=50,
    receive_buffer=256,
)
print("timing:", config.timing)
print("servers:", [str(url) for server in config.ice_servers for url in server.urls])

MISTAKES: list[tuple[str, Callable[[], object]]] = [
    ("Timing(ta=0.001)", lambda: trice.Timing(ta=0.001)),
    ("Timing(rto_max=0)", lambda: trice.Timing(rto_max=0)),
    ("Timing(failed_timeout=1)", lambda: trice.Timing(failed_timeout=1)),
    ("NetworkConfig(ipv4=False, ipv6=False)", lambda: trice.NetworkConfig(ipv4=False, ipv6=False)),
    ("NetworkConfig(port_range=(9, 1))", lambda: trice.NetworkConfig(port_range=(9, 1))),
    ("AgentConfig(ufrag='no spaces')", lambda: trice.AgentConfig(ufrag="no spaces")),
    ("AgentConfig(pwd='short')", lambda: trice.AgentConfig(pwd="short")),
    ("AgentConfig(nomination='eager')", lambda: trice.AgentConfig(nomination="eager")),  # type: ignore[arg-type]
    ("AgentConfig(receive_buffer=0)", lambda: trice.AgentConfig(receive_buffer=0)),
    ("IceServer('stun://host')", lambda: trice.IceServer("stun://host")),
    ("IceServer('turn:host')", lambda: trice.IceServer("turn:host")),
]
for text, build in MISTAKES:
    try:
        build()
    except trice.ConfigError as exc:
        # ConfigError is a UsageError and a ValueError.
        assert isinstance(exc, trice.UsageError) and isinstance(exc, ValueError)
        print(f"{text:40} -> ConfigError: {exc}")
    else:
        raise AssertionError(f"{text} was accepted")
print("configuration: every mistake refused")
