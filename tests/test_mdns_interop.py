"""Multicast DNS (RFC 6762) host candidates against real peers: one side signals its host
candidates under ``<name>.local`` names (``--mdns gather``), the other resolves them by mDNS
(``--mdns query``); both connect and carry data.

Pion's mDNS joins 224.0.0.251 and sends on every interface of the host, and aioice's joins
the group on whichever interface the route to 224.0.0.251 takes: on this machine's own
network that would be its real links.  So each case runs both peer programs (through the
line protocol of ``tests/peers/harness.py``) inside a network namespace that the test makes
and removes, whose only link is ``lo``:

- ``ip netns add trice-mdns-XXXXXX``, ``lo`` up;
- ``ip route add 224.0.0.0/4 dev lo`` there: aioice neither names an interface when it joins
  the group (without a route to the group the join fails with ENODEV) nor when it sends
  (ENETUNREACH).  trice and Pion need no route: they name ``lo`` (trice by its address,
  ``IP_MULTICAST_IF`` 127.0.0.1, Pion by its index in ``IP_PKTINFO``).  ``lo`` needs no
  MULTICAST flag either.

A capture of the namespace's ``lo`` (an ``AF_PACKET`` socket, in a process of its own there)
records every mDNS datagram, so each case checks on the wire that the resolving side asked
for each name and the naming side answered with 127.0.0.1, and from the peers' own reports
(``remote_candidates`` in ``connected``) that the resolving side holds the named candidate
as a host candidate: that resolution happened, not just peer-reflexive discovery.

Needs Linux, root and ``ip`` (and for Pion, Go and Debian's Pion sources); skips otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from trice.mdns import (
    TYPE_A,
    TYPE_AAAA,
    DnsMessage,
    MdnsDecodeError,
    decode_message,
    normalize_name,
)

from natlab import Namespace
from peers.harness import Message, Peer, candidate_fields, exchange, peer_command

pytestmark = pytest.mark.interop

#: Namespaces made here are named ``trice-mdns-<6 hex digits>``.
NS_PREFIX = "trice-mdns-"
COUNT = 100
TIMEOUT = 20.0
LOOPBACK = "127.0.0.1"

# Reads every IPv4 UDP datagram to or from port 5353 on lo (once: not the outgoing copy)
# and prints it as a JSON line.  Standard library only; run inside the test's namespace.
CAPTURE = r"""
import json, socket, struct, sys
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sock.bind(("lo", 0))
print("ready", flush=True)
while True:
    frame, address = sock.recvfrom(65535)
    if address[2] == socket.PACKET_OUTGOING:
        continue
    ip = frame[14:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        continue
    ihl = (ip[0] & 15) * 4
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    if 5353 not in (sport, dport):
        continue
    print(json.dumps({
        "src": socket.inet_ntoa(ip[12:16]), "sport": sport,
        "dst": socket.inet_ntoa(ip[16:20]), "dport": dport,
        "ttl": ip[8], "data": ip[ihl + 8:].hex(),
    }), flush=True)
"""


# --------------------------------------------------------------------------- namespace


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


@functools.cache
def _netns_unavailable() -> str | None:
    """Why a network namespace cannot be made here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (to make a network namespace)"
    if shutil.which("ip") is None:
        return "needs `ip` (iproute2) on PATH"
    name = f"{NS_PREFIX}{secrets.token_hex(3)}"
    try:
        _run(["ip", "netns", "add", name])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a network namespace: {exc}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def _namespace_pids(name: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(pid) for pid in proc.stdout.split()]


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A fresh network namespace with only ``lo`` (up, with a route for 224.0.0.0/4), torn
    down with everything still running in it, even when the test fails."""
    reason = _netns_unavailable()
    if reason is not None:
        pytest.skip(f"mDNS interop {reason}")
    ns = Namespace(f"{NS_PREFIX}{secrets.token_hex(3)}")
    _run(["ip", "netns", "add", ns.name])
    try:
        ns.ip("link", "set", "lo", "up")
        ns.ip("route", "add", "224.0.0.0/4", "dev", "lo")
        yield ns
    finally:
        for proc in ns._processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        # Whatever still runs there was started there by this test (the peers).
        for pid in _namespace_pids(ns.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)


# --------------------------------------------------------------------------- capture


@dataclasses.dataclass(frozen=True)
class Datagram:
    """One mDNS datagram seen on the namespace's lo."""

    src: str
    sport: int
    dst: str
    dport: int
    ttl: int
    data: bytes
    message: DnsMessage | None  # None: trice's decoder refused it

    def asks(self, name: str) -> bool:
        return (
            self.message is not None
            and not self.message.is_response
            and any(q.name == name for q in self.message.questions)
        )

    def answers(self, name: str) -> list[str]:
        if self.message is None or not self.message.is_response:
            return []
        return [r.address for r in self.message.records if r.name == name]

    def __str__(self) -> str:
        return f"{self.src}:{self.sport} -> {self.dst}:{self.dport} ttl {self.ttl}: {self.message}"


class Capture:
    """The mDNS datagrams on the namespace's lo, as :data:`CAPTURE` reports them."""

    def __init__(self, ns: Namespace) -> None:
        self.datagrams: list[Datagram] = []
        self._changed = threading.Condition()
        self.proc = ns.run(
            [sys.executable, "-c", CAPTURE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the capture did not start: {ready!r}, rc={self.proc.poll()}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            fields = json.loads(line)
            data = bytes.fromhex(fields.pop("data"))
            try:
                message: DnsMessage | None = decode_message(data)
            except MdnsDecodeError:
                message = None
            with self._changed:
                self.datagrams.append(Datagram(data=data, message=message, **fields))
                self._changed.notify_all()

    def wait_answered(self, names: set[str], timeout: float) -> None:
        """Wait until each of ``names`` was asked for and answered on the wire."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                missing = {
                    name
                    for name in names
                    if not any(d.asks(name) for d in self.datagrams)
                    or not any(d.answers(name) for d in self.datagrams)
                }
                if not missing:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = "\n".join(map(str, self.datagrams)) or "(nothing)"
                    raise AssertionError(
                        f"no mDNS query and answer for {sorted(missing)} within {timeout} s;"
                        f" seen on lo:\n{seen}"
                    )
                self._changed.wait(remaining)


# --------------------------------------------------------------------------- the cases


def _candidates(description: list[Message]) -> list[tuple[str, int, str]]:
    return [candidate_fields(m["candidate"]) for m in description if m["type"] == "candidate"]


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


@dataclasses.dataclass
class Outcome:
    names: dict[str, int]  # the names the gathering side signalled, and their ports
    namer: Message  # its "connected"
    resolver: Message  # the resolving side's "connected"
    wire: list[Datagram]


def _run_case(
    ns: Namespace,
    namer_kind: str,
    resolver_kind: str,
    *,
    namer_controlling: bool,
    namer_extra: tuple[str, ...] = (),
    answer_timeout: float = 10.0,
) -> Outcome:
    """``namer_kind`` (``--mdns gather``) and ``resolver_kind`` (``--mdns query``) inside
    ``ns``: exchange descriptions, wait until the names were asked for and answered on the
    wire, connect, exchange ``COUNT`` datagrams each way.  Checks what any case must show;
    returns the rest for the caller's checks."""
    capture = Capture(ns)
    namer_cmd = peer_command(
        namer_kind, namer_controlling, extra=["--mdns", "gather", *namer_extra]
    )
    resolver_cmd = peer_command(resolver_kind, not namer_controlling, extra=["--mdns", "query"])
    with (
        Peer(ns.argv(namer_cmd), name=f"{namer_kind}[gather]") as namer,
        Peer(ns.argv(resolver_cmd), name=f"{resolver_kind}[query]") as resolver,
    ):
        namer_desc = namer.local_description(TIMEOUT)
        resolver_desc = resolver.local_description(TIMEOUT)

        # The namer signalled only .local host candidates; the resolver, its address.
        named = _candidates(namer_desc)
        assert named, f"{namer_kind} signalled no candidate"
        names: dict[str, int] = {}
        for address, port, kind in named:
            assert address.endswith(".local") and not _is_ip(address), named
            assert kind == "host", named
            names[normalize_name(address)] = port
        plain = _candidates(resolver_desc)
        assert plain and all(a == LOOPBACK and k == "host" for a, _, k in plain), plain

        for msg in resolver_desc:
            namer.send(msg)
        for msg in namer_desc:
            resolver.send(msg)
        # Resolution runs on its own (a peer answers "synced" before its query is out):
        # let it finish before the checks start, so that the pair it makes can win.
        capture.wait_answered(set(names), answer_timeout)
        for peer in (namer, resolver):
            peer.send({"type": "sync"})
        for peer in (namer, resolver):
            peer.expect("synced", TIMEOUT)
        for peer in (namer, resolver):
            peer.send({"type": "start"})
        namer_connected = namer.expect("connected", TIMEOUT)
        resolver_connected = resolver.expect("connected", TIMEOUT)
        done = {"type": "exchanged", "sent": COUNT, "received": COUNT}
        assert exchange(namer, resolver, COUNT, TIMEOUT) == (done, done)
    wire = list(capture.datagrams)

    # On the wire: each name was answered with the namer's address, and nothing else.
    for name in names:
        assert {a for d in wire for a in d.answers(name)} == {LOOPBACK}, wire
    # The selected pair joins the namer's named candidate and the resolver's address, on
    # both sides.
    ports = set(names.values())
    for side, connected, local_ok, remote_ok in (
        (namer_kind, namer_connected, {LOOPBACK, *names}, {LOOPBACK}),
        (resolver_kind, resolver_connected, {LOOPBACK}, {LOOPBACK, *names}),
    ):
        local, remote = candidate_fields(connected["local"]), candidate_fields(connected["remote"])
        assert normalize_name(local[0]) in local_ok, (side, connected)
        assert normalize_name(remote[0]) in remote_ok, (side, connected)
    assert candidate_fields(namer_connected["local"])[1] in ports, namer_connected
    assert candidate_fields(resolver_connected["remote"])[1] in ports, resolver_connected
    # The resolver holds a named candidate as a host candidate (under its name, as Pion and
    # aioice keep it, or under the address found, as trice does): it was resolved, not only
    # learned as peer-reflexive from the namer's checks.
    resolved = [
        c
        for c in resolver_connected["remote_candidates"]
        if c["type"] == "host"
        and c["port"] in ports
        and normalize_name(c["address"]) in {LOOPBACK, *names}
    ]
    assert resolved, resolver_connected
    return Outcome(names, namer_connected, resolver_connected, wire)


ROLES = [True, False]
ROLE_IDS = ["namer-controlling", "namer-controlled"]


@pytest.fixture
def pion(request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("pion_available")


@pytest.mark.parametrize("namer_controlling", ROLES, ids=ROLE_IDS)
def test_pion_names_trice_resolves(netns: Namespace, pion: None, namer_controlling: bool) -> None:
    out = _run_case(netns, "pion", "trice", namer_controlling=namer_controlling)
    # Pion names all its host candidates with one random <uuid>.local name.
    assert len(out.names) == 1
    # trice pairs the resolved candidate under the address found, as a host candidate.
    address, _, kind = candidate_fields(out.resolver["remote"])
    assert (address, kind) == (LOOPBACK, "host"), out.resolver
    # trice asks for A and AAAA records in one query; Pion answers each question (the AAAA
    # one too) with its A record.
    (name,) = out.names
    asked = [d for d in out.wire if d.asks(name)]
    assert asked and asked[0].message is not None
    assert {q.qtype for q in asked[0].message.questions} == {TYPE_A, TYPE_AAAA}
    records = [r for d in out.wire if d.message is not None for r in d.message.records]
    assert records and {r.rtype for r in records} == {TYPE_A}, records


@pytest.mark.parametrize("namer_controlling", ROLES, ids=ROLE_IDS)
def test_trice_names_pion_resolves(netns: Namespace, pion: None, namer_controlling: bool) -> None:
    out = _run_case(netns, "trice", "pion", namer_controlling=namer_controlling)
    # Pion 2.3.1 resolves the name (_run_case saw it list the candidate as a host one), but
    # matches incoming packets to remote candidates by Address(), which for a resolved
    # candidate is still the name (agent.go, findRemoteCandidate): the answers to its checks
    # on that pair are dropped ("discard success message ... no such remote"), and the
    # connection goes over the peer-reflexive candidate that trice's checks make, at the same
    # address.  A Pion that matched by the resolved address would select the host candidate.
    assert candidate_fields(out.resolver["remote"])[2] in ("host", "prflx"), out.resolver
    # trice answered Pion's queries (type A, from 0.0.0.0:5353) by multicast.
    for name in out.names:
        answers = [d for d in out.wire if d.answers(name)]
        assert all(d.dst == "224.0.0.251" and d.src == LOOPBACK for d in answers), answers


@pytest.mark.parametrize("namer_controlling", ROLES, ids=ROLE_IDS)
def test_trice_names_aioice_resolves(netns: Namespace, namer_controlling: bool) -> None:
    out = _run_case(netns, "trice", "aioice", namer_controlling=namer_controlling)
    # aioice keeps the name on the resolved candidate, and pairs it as a host candidate.
    address, _, kind = candidate_fields(out.resolver["remote"])
    assert (normalize_name(address), kind) in {(n, "host") for n in out.names}, out.resolver
    # aioice only takes answers with RFC 6762's cache-flush bit: trice's have it.
    for name in out.names:
        records = [
            r
            for d in out.wire
            if d.message is not None and d.message.is_response
            for r in d.message.records
            if r.name == name
        ]
        assert records and all(r.cache_flush for r in records), records


def test_pion_mixed_case_name_trice_resolves(netns: Namespace, pion: None) -> None:
    _run_case(
        netns,
        "pion",
        "trice",
        namer_controlling=False,
        namer_extra=("--mdns-name", "Pion-Peer.local"),
        answer_timeout=3.5,
    )
