"""The NAT lab: NATs built from Linux network namespaces, nftables and coturn.

Each :func:`nat_lab` builds, for one test, an "internet" namespace on 203.0.113.0/24 (with
coturn and, on demand, UDP echo servers), two sides ``a`` and ``b`` each made of a host behind
a NAT router of a chosen :class:`NatKind` (or a host directly on the internet), and tears all of
it down on exit, even when the body raises. See ``docs/guide/natlab.rst``.

Needs root, iproute2, nftables and (for TURN) coturn; :func:`natlab_available` says why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ECHO_ADDRESSES",
    "PROBE",
    "TURN_ADDRESS",
    "Endpoint",
    "Host",
    "Lab",
    "LabError",
    "NatKind",
    "Namespace",
    "lab_fixture",
    "leftover_namespaces",
    "lone_namespace",
    "nat_lab",
    "natlab_available",
    "require_natlab",
]

Endpoint = tuple[str, int]

#: The standalone probe script (UDP echo server and client probes, pure stdlib).
PROBE = Path(__file__).with_name("natlab_probe.py")

PUBLIC_PREFIX = "203.0.113."
PUBLIC_GATEWAY = "203.0.113.1"  # the "internet" namespace's own address on the bridge
TURN_ADDRESS = "203.0.113.2"
ECHO_ADDRESSES = ("203.0.113.3", "203.0.113.4")
ECHO_PORTS = (3000, 3001)
TURN_PORT = 3478
TURNS_PORT = 5349
# Next hop of the internet's default route: a permanent neighbour on a veth whose peer drops
# everything, so packets to unknown (e.g. private) destinations vanish without an error.
SINK_GATEWAY = "198.51.100.254"
SINK_MAC = "02:00:00:00:00:fe"

NS_PREFIX = "trice-"


class NatKind(enum.Enum):
    """NAT behaviours in RFC 4787 terms."""

    #: No NAT: the host sits directly on the internet (203.0.113.x).
    NONE = "none"
    #: Endpoint-independent mapping, address-and-port-dependent filtering (``masquerade``).
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    #: Endpoint-independent mapping and filtering: masquerade + DNAT of new inbound UDP.
    FULL_CONE = "full-cone"
    #: Address-and-port-dependent mapping (``masquerade random,fully-random``) and filtering.
    SYMMETRIC = "symmetric"


class LabError(RuntimeError):
    """Building or driving the lab failed."""


def _run(argv: Sequence[str], *, input: str | None = None, timeout: float = 10.0) -> str:
    proc = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}"
        )
    return proc.stdout


@dataclass
class Namespace:
    """A network namespace of the lab; processes started with :meth:`run` are torn down."""

    name: str
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def argv(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """``argv`` prefixed to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *(os.fspath(arg) for arg in argv)]

    def run(self, argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this namespace (``subprocess.Popen`` keyword arguments apply).

        ``ip netns exec`` execs the command, so the Popen's pid is the command's own. The
        process is terminated (then killed) when the lab is torn down if still running.
        """
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(argv), **kwargs)
        self._processes.append(proc)
        return proc

    def check_output(self, argv: Sequence[str | os.PathLike[str]], timeout: float = 20.0) -> str:
        """Run ``argv`` in this namespace to completion and return its stdout."""
        return _run(self.argv(argv), timeout=timeout)

    def probe(self, *args: str | int | float | os.PathLike[str], timeout: float = 20.0) -> Any:
        """Run a ``natlab_probe.py`` client command here and return its JSON result."""
        out = self.check_output(
            [sys.executable, PROBE, *(a if isinstance(a, os.PathLike) else str(a) for a in args)],
            timeout=timeout,
        )
        return json.loads(out)

    def ip(self, *args: str) -> str:
        return _run(["ip", "-n", self.name, *args])

    def nft(self, ruleset: str) -> None:
        _run(self.argv(["nft", "-f", "-"]), input=ruleset)

    def sysctl(self, setting: str) -> None:
        _run(self.argv(["sysctl", "-q", "-w", setting]))


@dataclass
class Host(Namespace):
    """An end host: behind a NAT router, or on the internet for :attr:`NatKind.NONE`."""

    nat: NatKind = NatKind.NONE
    #: The host's own IPv4 address (private behind a NAT, public for NONE).
    address: str = ""
    #: The public address the host appears from (the NAT's WAN address, or ``address``).
    public_address: str = ""
    #: The NAT router's namespace, None for NONE.
    router: Namespace | None = None


@dataclass
class Lab:
    """A built lab. Attributes are valid inside the :func:`nat_lab` context only."""

    prefix: str
    pub: Namespace
    host_a: Host
    host_b: Host
    loss_percent: int
    directory: Path
    turn_enabled: bool = False
    turn_tls_enabled: bool = False
    turn_username: str = "trice"
    turn_password: str = ""
    turn_realm: str = "trice.test"
    _echo: tuple[Endpoint, ...] = ()

    @property
    def namespaces(self) -> list[Namespace]:
        nss: list[Namespace] = [self.pub, self.host_a, self.host_b]
        nss += [h.router for h in (self.host_a, self.host_b) if h.router is not None]
        return nss

    @property
    def public_address_a(self) -> str:
        return self.host_a.public_address

    @property
    def public_address_b(self) -> str:
        return self.host_b.public_address

    def _need_turn(self) -> None:
        if not self.turn_enabled:
            raise LabError("this lab was built with turn=False")

    @property
    def turn_address(self) -> Endpoint:
        self._need_turn()
        return (TURN_ADDRESS, TURN_PORT)

    @property
    def stun_url(self) -> str:
        self._need_turn()
        return f"stun:{TURN_ADDRESS}:{TURN_PORT}"

    @property
    def turn_url(self) -> str:
        self._need_turn()
        return f"turn:{TURN_ADDRESS}:{TURN_PORT}?transport=udp"

    @property
    def turn_tcp_url(self) -> str:
        self._need_turn()
        return f"turn:{TURN_ADDRESS}:{TURN_PORT}?transport=tcp"

    @property
    def turns_url(self) -> str:
        if not self.turn_tls_enabled:
            raise LabError("this lab was built with turn_tls=False")
        return f"turns:{TURN_ADDRESS}:{TURNS_PORT}?transport=tcp"

    @property
    def tls_ca_pem_path(self) -> Path:
        """PEM of the CA that issued coturn's certificate (for ``turns:``)."""
        if not self.turn_tls_enabled:
            raise LabError("this lab was built with turn_tls=False")
        return self.directory / "ca.pem"

    @property
    def turn_log_path(self) -> Path:
        return self.directory / "turnserver.log"

    def drop_udp(self, host: Host) -> None:
        """A firewall in front of ``host`` that lets no UDP in (what a network that allows
        only TCP does): IPv4 UDP arriving at its NAT router's WAN (or at the host itself, on
        the internet) is dropped, on ingress."""
        target: Namespace = host.router if host.router is not None else host
        device = "wan" if host.router is not None else "eth0"
        target.nft(_udp_rules(device))

    def echo_endpoints(self) -> tuple[Endpoint, ...]:
        """Start (once) the probe echo server in the internet namespace; its endpoints.

        Three endpoints: two ports on one address and the first port on a second address.
        """
        if not self._echo:
            endpoints = (
                (ECHO_ADDRESSES[0], ECHO_PORTS[0]),
                (ECHO_ADDRESSES[0], ECHO_PORTS[1]),
                (ECHO_ADDRESSES[1], ECHO_PORTS[0]),
            )
            proc = self.pub.run(
                [sys.executable, PROBE, "serve", *(f"{a}:{p}" for a, p in endpoints)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise LabError(f"echo server did not start: {line!r}, rc={proc.poll()}")
            self._echo = endpoints
        return self._echo


def _new_prefix() -> str:
    """A lab's names: ``trice-<pid>-<hex>-``, the pid of the process that makes the lab (see
    :func:`reap_stale`)."""
    return f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(2)}-"


#: A lab's namespace (or its temporary directory) and the pid of the process that made it.
_OURS = re.compile(rf"^{re.escape(NS_PREFIX)}(\d+)-[0-9a-f]+-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Tear down the labs whose maker is gone: a test run ended by a signal (SIGTERM from a
    job's timeout, say) never ran its teardown, and left namespaces (with coturn running in
    one) and a temporary directory.  Only names of this module's own form are touched.
    Returns the namespaces deleted."""
    stale = []
    for name in _lab_namespaces():
        match = _OURS.match(name)
        if match and not _alive(int(match.group(1))):
            stale.append(name)
    _teardown(stale, [])
    root = Path(tempfile.gettempdir())
    for path in root.glob(f"{NS_PREFIX}*"):
        match = _OURS.match(path.name)
        if match and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
    return stale


def _lab_namespaces() -> list[str]:
    """All namespaces named like ours (any run): ``ip netns list`` names starting ``trice-``."""
    out = _run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.startswith(NS_PREFIX)]


def _namespace_pids(name: str) -> list[int]:
    try:
        out = _run(["ip", "netns", "pids", name])
    except LabError:
        return []
    return [int(pid) for pid in out.split()]


def _terminate(processes: list[subprocess.Popen[Any]], grace: float = 1.0) -> None:
    alive = [p for p in processes if p.poll() is None]
    for proc in alive:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in alive:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    for proc in processes:  # close pipes the caller left open
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _teardown(namespaces: list[str], processes: list[subprocess.Popen[Any]]) -> None:
    _terminate(processes)
    for name in namespaces:
        # Anything still running in our namespaces descends from what we started there.
        for pid in _namespace_pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for name in namespaces:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@functools.cache
def _check_netns() -> str | None:
    name = f"{_new_prefix()}check"
    try:
        _run(["ip", "netns", "add", name])
    except (LabError, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run(["ip", "netns", "exec", name, "nft", "list", "ruleset"])
    except (LabError, OSError) as exc:
        return f"nftables does not work in a network namespace: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def natlab_available(*, turn: bool = True) -> str | None:
    """None if the lab can run here, else the reason it cannot (for ``pytest.skip``)."""
    if not sys.platform.startswith("linux"):
        return "the NAT lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, nftables)"
    tools = ["ip", "nft"] + (["turnserver"] if turn else [])
    for tool in tools:
        if shutil.which(tool) is None:
            return f"the NAT lab needs `{tool}` on PATH"
    return _check_netns()


def require_natlab(*, turn: bool = True) -> None:
    """``pytest.skip`` with the precise reason when the lab cannot run."""
    reason = natlab_available(turn=turn)
    if reason is not None:
        pytest.skip(reason)


def lab_fixture(nat_a: NatKind, nat_b: NatKind, **kwargs: Any) -> Any:
    """A pytest fixture building ``nat_lab(nat_a, nat_b, **kwargs)`` (skips if unavailable).

    Usage in a test module: ``cone_vs_symmetric = lab_fixture(NatKind.FULL_CONE,
    NatKind.SYMMETRIC)`` and then a test taking ``cone_vs_symmetric`` as an argument.
    """

    @pytest.fixture
    def fixture() -> Iterator[Lab]:
        require_natlab(turn=kwargs.get("turn", True))
        with nat_lab(nat_a, nat_b, **kwargs) as lab:
            yield lab

    return fixture


def _loss_rules(device: str, percent: int) -> str:
    # netdev ingress: runs in the receiving namespace before conntrack and routing; IPv4 only so
    # that ARP keeps working. Never drop in an output chain (sendto() would fail with EPERM).
    return f"""
table netdev trice_loss {{
    chain ingress_{device.replace("-", "_")} {{
        type filter hook ingress device "{device}" priority filter; policy accept;
        meta protocol ip numgen random mod 100 < {percent} drop
    }}
}}
"""


def _udp_rules(device: str) -> str:
    # As _loss_rules: on ingress, in the receiving namespace, IPv4 only.
    return f"""
table netdev trice_no_udp {{
    chain ingress_{device.replace("-", "_")} {{
        type filter hook ingress device "{device}" priority filter; policy accept;
        meta protocol ip ip protocol udp drop
    }}
}}
"""


def _nat_rules(kind: NatKind, wan_address: str, host_address: str) -> str:
    masquerade = "masquerade random,fully-random" if kind is NatKind.SYMMETRIC else "masquerade"
    dnat = ""
    if kind is NatKind.FULL_CONE:
        # Endpoint-independent filtering: any new inbound UDP to the WAN address goes to the
        # host, same port (masquerade preserves the host's port when it can); TCP too, as a
        # 1:1 NAT forwards it (what a passive ICE-TCP candidate behind one needs).
        dnat = (
            f'iifname "wan" ip daddr {wan_address} meta l4proto {{ udp, tcp }} '
            f"dnat to {host_address}"
        )
    return f"""
table ip trice_nat {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        {dnat}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {masquerade}
    }}
    chain input {{
        # Nothing is addressed to the router itself: dropping new inbound packets here, before
        # conntrack confirms them, avoids the hole-punching race (see the guide).
        type filter hook input priority filter; policy accept;
        iifname "wan" drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" ct status dnat accept
        iifname "wan" drop
    }}
}}
"""


def _start_turn(lab: Lab) -> None:
    directory = lab.directory
    argv: list[str | os.PathLike[str]] = [
        "turnserver",
        "-n",
        "--no-cli",
        "--no-dtls",
        "--listening-ip",
        TURN_ADDRESS,
        "--relay-ip",
        TURN_ADDRESS,
        "--listening-port",
        str(TURN_PORT),
        "--min-port",
        "49152",
        "--max-port",
        "65535",
        "--lt-cred-mech",
        f"--user={lab.turn_username}:{lab.turn_password}",
        f"--realm={lab.turn_realm}",
        "--fingerprint",
        "--log-file",
        lab.turn_log_path,
        "--simple-log",
        "--no-stdout-log",
        "--pidfile",
        directory / "turnserver.pid",
        "--userdb",
        directory / "turndb",
    ]
    if lab.turn_tls_enabled:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert(TURN_ADDRESS)
        ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(directory / "cert.pem"), append=True)
        cert.private_key_pem.write_to_path(str(directory / "key.pem"))
        argv += [
            "--tls-listening-port",
            str(TURNS_PORT),
            "--cert",
            directory / "cert.pem",
            "--pkey",
            directory / "key.pem",
        ]
    else:
        argv.append("--no-tls")
    # coturn writes a few lines to stderr (e.g. "socket: Protocol not supported" when it probes
    # for SCTP); keep them in the lab's directory.
    with (directory / "turnserver.stderr").open("wb") as stderr:
        proc = lab.pub.run(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    ready = lab.pub.probe("stun", f"{TURN_ADDRESS}:{TURN_PORT}", "--wait", 10)
    if ready.get("ok") and lab.turn_tls_enabled:
        ready = lab.pub.probe("connect", f"{TURN_ADDRESS}:{TURNS_PORT}", "--wait", 10)
    if not ready.get("ok"):
        log = "".join(
            path.read_text(errors="replace")
            for path in (directory / "turnserver.stderr", lab.turn_log_path)
            if path.exists()
        )
        raise LabError(f"coturn did not come up (rc={proc.poll()}):\n{log[-3000:]}")


@contextlib.contextmanager
def nat_lab(
    nat_a: NatKind,
    nat_b: NatKind,
    *,
    loss_percent: int = 0,
    turn: bool = True,
    turn_tls: bool = False,
) -> Iterator[Lab]:
    """Build the lab (see the module docstring), yield it, tear it down.

    ``loss_percent`` drops that share of IPv4 packets at each end of each public link, in the
    receiving namespace (so a round trip host -> internet -> host through one NAT survives with
    probability ``(1 - p) ** 2``). ``turn`` starts coturn on 203.0.113.2:3478 (UDP and TCP),
    ``turn_tls`` adds a TLS listener on 5349 with a certificate from a throw-away CA.
    """
    if not 0 <= loss_percent <= 100:
        raise ValueError("loss_percent must be within 0..100")
    if turn_tls and not turn:
        raise ValueError("turn_tls needs turn")
    reap_stale()
    prefix = _new_prefix()
    created: list[str] = []
    processes: list[subprocess.Popen[Any]] = []
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:

        def namespace(role: str) -> Namespace:
            ns = Namespace(prefix + role, processes)
            _run(["ip", "netns", "add", ns.name])
            created.append(ns.name)
            ns.ip("link", "set", "lo", "up")
            # IPv4 only on the lab's links (lo keeps ::1): otherwise IPv6 link-local addresses
            # would let hosts on the same bridge talk directly, around the "internet".
            ns.sysctl("net.ipv6.conf.default.disable_ipv6=1")
            return ns

        pub = namespace("pub")
        pub.ip("link", "add", "br0", "type", "bridge")
        pub.ip("link", "set", "br0", "up")
        pub.ip("addr", "add", f"{PUBLIC_GATEWAY}/24", "dev", "br0")
        for extra in (TURN_ADDRESS, *ECHO_ADDRESSES):
            pub.ip("addr", "add", f"{extra}/24", "dev", "br0")
        # The default route: see SINK_GATEWAY. (A `blackhole` route would make local sendto()
        # fail with EINVAL, which coturn may treat as fatal for an allocation.)
        pub.ip("link", "add", "sink", "type", "veth", "peer", "name", "sink-peer")
        pub.ip("link", "set", "sink", "up")
        pub.ip("link", "set", "sink-peer", "up")
        pub.ip("neigh", "add", SINK_GATEWAY, "lladdr", SINK_MAC, "dev", "sink", "nud", "permanent")
        pub.ip("route", "add", "default", "via", SINK_GATEWAY, "dev", "sink", "onlink")
        pub.sysctl("net.ipv4.ip_forward=1")
        pub_loss: list[str] = []

        hosts: list[Host] = []
        for index, (side, kind) in enumerate((("a", nat_a), ("b", nat_b)), start=1):
            wan_address = f"{PUBLIC_PREFIX}{10 * index}"
            port = f"port-{side}"
            host_ns = namespace(f"host-{side}")
            if kind is NatKind.NONE:
                host = Host(host_ns.name, processes, kind, wan_address, wan_address)
                host.ip(
                    "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", pub.name
                )
                host.ip("addr", "add", f"{wan_address}/24", "dev", "eth0")
                host.ip("link", "set", "eth0", "up")
                host.ip("route", "add", "default", "via", PUBLIC_GATEWAY)
                inbound: tuple[Namespace, str] = (host, "eth0")
            else:
                router = namespace(f"nat-{side}")
                lan_address = f"10.0.{index}.2"
                host = Host(host_ns.name, processes, kind, lan_address, wan_address, router)
                router.ip(
                    "link", "add", "wan", "type", "veth", "peer", "name", port, "netns", pub.name
                )
                router.ip("addr", "add", f"{wan_address}/24", "dev", "wan")
                router.ip("link", "set", "wan", "up")
                router.ip(
                    "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host.name
                )
                router.ip("addr", "add", f"10.0.{index}.1/24", "dev", "lan")
                router.ip("link", "set", "lan", "up")
                router.ip("route", "add", "default", "via", PUBLIC_GATEWAY)
                router.sysctl("net.ipv4.ip_forward=1")
                router.nft(_nat_rules(kind, wan_address, lan_address))
                host.ip("addr", "add", f"{lan_address}/24", "dev", "eth0")
                host.ip("link", "set", "eth0", "up")
                host.ip("route", "add", "default", "via", f"10.0.{index}.1")
                inbound = (router, "wan")
            pub.ip("link", "set", port, "master", "br0")
            pub.ip("link", "set", port, "up")
            if loss_percent:
                inbound[0].nft(_loss_rules(inbound[1], loss_percent))
                pub_loss.append(_loss_rules(port, loss_percent))
            hosts.append(host)
        for rules in pub_loss:
            pub.nft(rules)

        lab = Lab(
            prefix=prefix,
            pub=pub,
            host_a=hosts[0],
            host_b=hosts[1],
            loss_percent=loss_percent,
            directory=directory,
            turn_enabled=turn,
            turn_tls_enabled=turn_tls,
            turn_password=secrets.token_hex(8),
        )
        if turn:
            _start_turn(lab)
        yield lab
    finally:
        _teardown(created, processes)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def lone_namespace(role: str = "lone") -> Iterator[Namespace]:
    """One network namespace of its own, with ``lo`` up and nothing else, for a test that
    changes its links and addresses; torn down on exit (with what was started in it)."""
    processes: list[subprocess.Popen[Any]] = []
    reap_stale()
    ns = Namespace(f"{_new_prefix()}{role}", processes)
    _run(["ip", "netns", "add", ns.name])
    try:
        ns.ip("link", "set", "lo", "up")
        yield ns
    finally:
        _teardown([ns.name], processes)


def leftover_namespaces(prefix: str) -> list[str]:
    """Namespaces of a (torn down) lab that still exist: should be empty."""
    return [name for name in _lab_namespaces() if name.startswith(prefix)]


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: Namespace) -> Iterator[None]:
    """The calling thread in ``ns``'s network namespace for the block, then back where it was.

    (Only this thread moves: threads it starts in the block are born there; trio's worker
    threads started before stay where they were.)"""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
        try:
            _setns(there)
        finally:
            os.close(there)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
