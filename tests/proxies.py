"""Start and stop private proxies on loopback for one test: tinyproxy (an HTTP proxy) and
microsocks (a SOCKS5 proxy), both Debian's: the proxies that TURN over TCP and TLS goes
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
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from coturn import accepts_tcp, free_port, running_process

TINYPROXY = shutil.which("tinyproxy")
MICROSOCKS = shutil.which("microsocks")
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
