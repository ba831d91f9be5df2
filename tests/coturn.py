"""Start and stop a private coturn (``turnserver``) on loopback for one test.

Each instance listens on free 127.0.0.1 ports (UDP and TCP on one port, TLS on another when
asked), relays on 127.0.0.1 from its own port range, allows loopback peers, and keeps its
database, pid file and log in a temporary directory.  It is killed by its PID when the
context exits, never by name.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import trice
from trice import stun

TURNSERVER = shutil.which("turnserver")
REALM = "trice.test"
USER = "alice"
PASSWORD = "wonderland"


def require_turnserver() -> str:
    """Skip the calling test when coturn's ``turnserver`` is not installed."""
    if TURNSERVER is None:
        pytest.skip("coturn's turnserver binary is not installed (apt-get install coturn)")
    return TURNSERVER


@dataclass(frozen=True)
class Coturn:
    """A running coturn instance.

    Attributes:
        port: the UDP and TCP listening port on 127.0.0.1.
        tls_port: the TLS listening port, or ``None`` without TLS.
        ca_pem: the trustme CA certificate (PEM) that signed the server's certificate.
        log: the path of the server's log file.
        pid: the server's process ID.
    """

    port: int
    tls_port: int | None
    ca_pem: bytes | None
    log: Path
    pid: int

    def ice_server(self, transport: str, *, host: str = "127.0.0.1") -> trice.IceServer:
        """This server as an agent's TURN server, reached at ``host`` over ``transport``:
        ``"udp"``, ``"tcp"``, or ``"tls"`` (``turns:``, trusting :attr:`ca_pem`)."""
        if transport == "tls":
            assert self.tls_port is not None
            url = f"turns:{host}:{self.tls_port}?transport=tcp"
            return trice.IceServer(url, USER, PASSWORD, ssl_context=self.tls_context())
        return trice.IceServer(f"turn:{host}:{self.port}?transport={transport}", USER, PASSWORD)

    def tls_context(self) -> ssl.SSLContext:
        """A client's TLS context that trusts this server's certificate (:attr:`ca_pem`)."""
        assert self.ca_pem is not None
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=self.ca_pem.decode())
        return context

    def log_text(self) -> str:
        """The log so far (for assertions and failure messages)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def free_port(*, pair: bool = False) -> int:
    """A port free for UDP and TCP on 127.0.0.1 (and the next one too with ``pair``)."""
    for _ in range(200):
        port = random.randrange(20000, 40000, 2)
        ports = (port, port + 1) if pair else (port,)
        try:
            with contextlib.ExitStack() as stack:
                for p in ports:
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        s = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port")


def _answers_binding(port: int) -> bool:
    request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        try:
            s.sendto(request.encode(), ("127.0.0.1", port))
            data = s.recv(2048)
        except OSError:
            return False
    try:
        return stun.decode(data).transaction_id == request.transaction_id
    except stun.StunDecodeError:
        return False


def accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def run_coturn(
    *,
    tls: bool = False,
    tls_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    user: str = USER,
    password: str = PASSWORD,
    extra: tuple[str, ...] = (),
    port: int | None = None,
    relay_ip: str = "127.0.0.1",
    relay_ports: int = 100,
) -> Iterator[Coturn]:
    """Run coturn on loopback until the block exits (see the module docstring).

    Args:
        tls: also listen for TLS, with a certificate for ``tls_names`` (``127.0.0.1`` and
            ``localhost`` by default) signed by a fresh trustme CA (:attr:`Coturn.ca_pem`).
        user, password: the one long-term credential the server accepts (realm
            :data:`REALM`).
        extra: more ``turnserver`` options.
        port: the port to listen on (and the next), as an earlier coturn's (a server
            restarted); by default a free one.
        relay_ip: the address relayed addresses are on (``::1``: a server with IPv6
            relays only).
        relay_ports: how many ports relayed addresses may take (coturn frees a deleted
            allocation's port at the next second of its clock).
    """
    binary = require_turnserver()
    with tempfile.TemporaryDirectory(prefix="trice-coturn-") as tmp:
        tmpdir = Path(tmp)
        if port is None:
            port = free_port(pair=True)  # coturn also binds the "alternative" port + 1
        relay_low = random.randrange(41000, 62000 - relay_ports, 100)
        log = tmpdir / "turn.log"
        argv = [
            binary,
            "-n",
            "--listening-ip=127.0.0.1",
            f"--listening-port={port}",
            f"--relay-ip={relay_ip}",
            f"--min-port={relay_low}",
            f"--max-port={relay_low + relay_ports - 1}",
            "--lt-cred-mech",
            f"--user={user}:{password}",
            f"--realm={REALM}",
            "--no-cli",
            "--no-dtls",
            "--allow-loopback-peers",
            f"--userdb={tmpdir / 'turndb'}",
            f"--pidfile={tmpdir / 'turn.pid'}",
            f"--log-file={log}",
            "--simple-log",
            "--no-stdout-log",
            *extra,
        ]
        tls_port: int | None = None
        ca_pem: bytes | None = None
        if tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert(*tls_names)
            cert_file = tmpdir / "cert.pem"
            key_file = tmpdir / "key.pem"
            cert.cert_chain_pems[0].write_to_path(str(cert_file))
            cert.private_key_pem.write_to_path(str(key_file))
            tls_port = free_port(pair=True)
            ca_pem = ca.cert_pem.bytes()
            argv += [
                f"--cert={cert_file}",
                f"--pkey={key_file}",
                f"--tls-listening-port={tls_port}",
            ]
        else:
            argv.append("--no-tls")

        def ready() -> bool:
            return _answers_binding(port) and (tls_port is None or accepts_tcp(tls_port))

        with running_process(argv, ready, tmpdir, "turnserver") as pid:
            yield Coturn(port, tls_port, ca_pem, log, pid)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process ``pid`` (one the test started) stopped (SIGSTOP) for the block, every
    thread of it: ``kill`` returns before each has stopped, and a thread still running on
    another CPU may answer a request meanwhile.  SIGCONT at the end."""
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while not all(_stopped(pid, task) for task in os.listdir(f"/proc/{pid}/task")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"process {pid} did not stop within 5 s")
            time.sleep(0.001)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _stopped(pid: int, task: str) -> bool:
    try:
        with open(f"/proc/{pid}/task/{task}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except FileNotFoundError:  # (the thread ended)
        return True


@contextlib.contextmanager
def running_process(
    argv: list[str], ready: Callable[[], bool], tmpdir: Path, name: str
) -> Iterator[int]:
    """Run ``argv`` (its stderr kept in ``tmpdir``) until the block exits, once ``ready()``
    says it serves (within 10 s); yields its PID.  Ended by that PID: SIGTERM, then SIGKILL
    if it has not exited 5 s later."""
    stderr_path = tmpdir / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 10
        while not ready():
            if proc.poll() is not None:
                err = stderr_path.read_text(errors="replace")
                raise RuntimeError(f"{name} exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start listening within 10 s")
            time.sleep(0.05)
        yield proc.pid
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
