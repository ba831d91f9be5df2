"""Start and stop private proxies on loopback for one test: tinyproxy (an HTTP proxy),
tinyproxy behind stunnel (an HTTPS proxy: TLS to the proxy, HTTP CONNECT inside) and
microsocks (a SOCKS5 proxy), all Debian's: the proxies that TURN over TCP and TLS goes
through (``NetworkConfig.proxy``).

Each listens on a free 127.0.0.1 port, connects onwards from :data:`OUTBOUND` (127.0.0.2:
so a server behind it sees its clients there, which proves they came through it), and keeps
what it writes in a temporary directory; tinyproxy takes clients from 127.0.0.1 only, opens
tunnels (CONNECT) to the given ports only, and its log records each CONNECT.  Each is ended
by its PID, never by name.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from coturn import accepts_tcp, free_port, running_process

TINYPROXY = shutil.which("tinyproxy")
MICROSOCKS = shutil.which("microsocks")
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
#: The address the proxies connect onwards from.
OUTBOUND = "127.0.0.2"


def require_tinyproxy() -> str:
    """Skip the calling test when tinyproxy is not installed."""
    if TINYPROXY is None:
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    return TINYPROXY


@dataclass(frozen=True)
class Tinyproxy:
    """A running tinyproxy.

    Attributes:
        port: its listening port on 127.0.0.1.
        log: the path of its log.
    """

    port: int
    log: Path

    def url(self, credentials: str = "") -> str:
        """Its URL for ``NetworkConfig.proxy`` (``credentials``: ``"user:password@"``)."""
        return f"http://{credentials}127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The targets (``host:port``) of the CONNECT requests it has read so far, whether
        it opened their tunnels or not."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            _, marker, rest = line.partition("Request (file descriptor ")
            if marker and "): CONNECT " in rest:
                found.append(rest.split("): CONNECT ", 1)[1].split()[0])
        return found


@contextlib.contextmanager
def run_tinyproxy(
    connect_ports: Sequence[int], *, basic_auth: tuple[str, str] | None = None
) -> Iterator[Tinyproxy]:
    """Run tinyproxy on loopback until the block exits (see the module docstring).

    Args:
        connect_ports: the only ports it opens tunnels to.
        basic_auth: ``(user, password)`` that clients must give (407 otherwise).
    """
    binary = require_tinyproxy()
    with tempfile.TemporaryDirectory(prefix="trice-tinyproxy-") as tmp:
        tmpdir = Path(tmp)
        port = free_port()
        log = tmpdir / "tinyproxy.log"
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            f'LogFile "{log}"',
            "LogLevel Connect",
            "MaxClients 50",
            "Allow 127.0.0.1",
            f"Bind {OUTBOUND}",
            f'PidFile "{tmpdir / "tinyproxy.pid"}"',
            *(f"ConnectPort {p}" for p in connect_ports),
        ]
        if basic_auth is not None:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        config = tmpdir / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        argv = [binary, "-d", "-c", str(config)]
        with running_process(argv, lambda: accepts_tcp(port), tmpdir, "tinyproxy"):
            yield Tinyproxy(port, log)


@dataclass(frozen=True)
class HttpsProxy:
    """A running HTTPS proxy: stunnel, its TLS end, in front of a tinyproxy.

    Attributes:
        port: stunnel's listening port on 127.0.0.1.
        tinyproxy: the tinyproxy behind it (its log records the CONNECTs).
        ca_pem: the trustme CA certificate (PEM) that signed stunnel's certificate, for
            127.0.0.1 and ``localhost``.
    """

    port: int
    tinyproxy: Tinyproxy
    ca_pem: bytes

    def url(self, credentials: str = "", host: str = "127.0.0.1") -> str:
        """Its URL for ``NetworkConfig.proxy``."""
        return f"https://{credentials}{host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        """A client's TLS context that trusts stunnel's certificate."""
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=self.ca_pem.decode())
        return context

    def requests(self) -> list[str]:
        return self.tinyproxy.requests()


@contextlib.contextmanager
def run_https_proxy(connect_ports: Sequence[int]) -> Iterator[HttpsProxy]:
    """Run tinyproxy (see :func:`run_tinyproxy`) with stunnel in front of it on loopback,
    until the block exits."""
    if STUNNEL is None:
        pytest.skip("stunnel is not installed (apt-get install stunnel4)")
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with (
        run_tinyproxy(connect_ports) as tinyproxy,
        tempfile.TemporaryDirectory(prefix="trice-stunnel-") as tmp,
    ):
        tmpdir = Path(tmp)
        cert_file, key_file = tmpdir / "cert.pem", tmpdir / "key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        port = free_port()
        config = tmpdir / "stunnel.conf"
        config.write_text(
            "\n".join(
                [
                    "foreground = yes",
                    "pid =",
                    f"output = {tmpdir / 'stunnel.log'}",
                    "[https-proxy]",
                    f"accept = 127.0.0.1:{port}",
                    f"connect = 127.0.0.1:{tinyproxy.port}",
                    f"cert = {cert_file}",
                    f"key = {key_file}",
                ]
            )
            + "\n"
        )
        argv = [STUNNEL, str(config)]
        with running_process(argv, lambda: accepts_tcp(port), tmpdir, "stunnel"):
            yield HttpsProxy(port, tinyproxy, ca.cert_pem.bytes())


@dataclass(frozen=True)
class Microsocks:
    """A running microsocks.

    Attributes:
        port: its listening port on 127.0.0.1.
    """

    port: int

    def url(self, credentials: str = "") -> str:
        """Its URL for ``NetworkConfig.proxy`` (``credentials``: ``"user:password@"``)."""
        return f"socks5://{credentials}127.0.0.1:{self.port}"


@contextlib.contextmanager
def run_microsocks(*, credentials: tuple[str, str] | None = None) -> Iterator[Microsocks]:
    """Run microsocks on loopback until the block exits (see the module docstring).

    Args:
        credentials: ``(user, password)`` that clients must give (RFC 1929).
    """
    if MICROSOCKS is None:
        pytest.skip("microsocks is not installed (apt-get install microsocks)")
    with tempfile.TemporaryDirectory(prefix="trice-microsocks-") as tmp:
        port = free_port()
        argv = [MICROSOCKS, "-i", "127.0.0.1", "-p", str(port), "-b", OUTBOUND]
        if credentials is not None:
            argv += ["-u", credentials[0], "-P", credentials[1]]
        with running_process(argv, lambda: accepts_tcp(port), Path(tmp), "microsocks"):
            yield Microsocks(port)
