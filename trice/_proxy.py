"""TURN through an HTTP proxy: the proxy's URL, and the CONNECT handshake (RFC 9110 §9.3.6)
as pure values and functions.

Behind a corporate firewall that lets nothing out but an HTTP proxy's connections, a TURN
server over TCP or TLS is reached through a tunnel that the proxy opens on request: the
client sends ``CONNECT turn.example.org:443 HTTP/1.1`` and, once the proxy answers 2xx,
the connection carries TURN (or TLS, then TURN) as if it went to the server itself.  This
is what browsers do for TURN over TCP behind such a proxy, and what Pion's ``ProxyDialer``
is for.  No I/O here: the trio shell (``trice._trio._relay``) writes the request and feeds
the answer in.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from trice._errors import ConfigError, ProtocolError
from trice._servers import _split_host_port, host_port
from trice.ice._candidate import canonical_ip, is_hostname

__all__ = ["MAX_REPLY_HEAD", "ConnectReply", "ProxyUrl", "connect_request", "read_connect_reply"]

#: The most bytes of a proxy's answer to CONNECT read before its head must have ended (its
#: status line and header fields, up to the empty line).
MAX_REPLY_HEAD = 16 * 1024

_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: ([^\r\n]*))?")
#: Characters a user name or password may not hold once percent-decoded (RFC 7617 §2:
#: no control characters; a user name holds no colon).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ProxyUrl:
    """An HTTP proxy that TURN over TCP and TLS goes through:
    ``http://[user[:password]@]host:port`` (see :attr:`trice.NetworkConfig.proxy`).

    Build one with :meth:`parse`.  ``str()`` writes it without the password, as logs and
    reports show it.

    Attributes:
        host: an IP address (canonical form) or a DNS name (lower case).
        port: the proxy's port.
        username: for ``Proxy-Authorization: Basic`` (RFC 7617), or ``None``.
        password: the password that goes with ``username`` (not shown by ``repr``).
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username is not None else ""
        return f"http://{user}{host_port(self.host, self.port)}"

    @classmethod
    def parse(cls, url: str) -> ProxyUrl:
        """Parse ``http://[user[:password]@]host:port`` (a trailing ``/`` allowed).  The
        user name and password may be percent-encoded (``%40`` for ``@``); IPv6 literals go
        in brackets.  The port must be given: proxies listen on many.

        Raises:
            ConfigError: the URL is malformed, or not ``http:``; the message says what.
        """
        if not isinstance(url, str):
            raise ConfigError(f"a proxy URL must be a str, got {url!r}")

        def fail(problem: str) -> ConfigError:
            shown = url.split("@", 1)[-1] if "@" in url else url  # (no password in errors)
            return ConfigError(f"proxy URL {shown!r}: {problem}")

        scheme, sep, rest = url.strip(" \t\r\n").partition("://")
        if not sep:
            raise fail("expected http://host:port")
        if scheme.lower() != "http":
            raise fail(f"scheme {scheme!r} is not supported: only an HTTP proxy (http://)")
        if rest.endswith("/"):
            rest = rest[:-1]
        if any(mark in rest for mark in "/?#"):
            raise fail("a proxy URL has no path, query or fragment")
        userinfo, at, authority = rest.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            try:
                username = unquote(user, errors="strict")
                password = unquote(secret, errors="strict") if colon else ""
            except UnicodeDecodeError:
                raise fail("the user name or password is not UTF-8 once decoded") from None
            if not username or ":" in username or _CONTROL.search(username + password):
                raise fail("the user name must be non-empty, with no ':' or control characters")
        host, port_text = _split_host_port(authority, fail)
        if not port_text:
            raise fail("no port: write http://host:port")
        if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
            raise fail(f"port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise fail(f"port {port} is not in 1..65535")
        canonical = canonical_ip(host)
        if canonical is None:
            if not is_hostname(host):
                raise fail(f"host {host!r} is neither an IP address nor a DNS name")
            canonical = host.lower()
        return cls(canonical, port, username, password)


def connect_request(proxy: ProxyUrl, host: str, port: int) -> bytes:
    """The CONNECT request that asks ``proxy`` for a tunnel to ``host`` (an IP literal or
    a DNS name, as a :class:`~trice.ServerUrl` has it) and ``port``."""
    target = host_port(host, port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.username is not None:
        token = f"{proxy.username}:{proxy.password or ''}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(token).decode('ascii')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True, slots=True)
class ConnectReply:
    """The head of a proxy's answer to CONNECT.

    Attributes:
        status: the status code (2xx: the tunnel is open).
        reason: the reason phrase, printable ASCII only, at most 100 characters.
        rest: the bytes that came after the head (none, from a proxy that waits for the
            client to speak first, as a TURN or TLS client does).
    """

    status: int
    reason: str
    rest: bytes

    @property
    def ok(self) -> bool:
        """Whether the tunnel is open (a 2xx status)."""
        return 200 <= self.status < 300


def read_connect_reply(data: bytes) -> ConnectReply | None:
    """The proxy's answer so far, ``data``: its head, once whole, or ``None`` while more
    must come.

    Raises:
        ProtocolError: the answer is not HTTP/1.x, or its head runs past
            :data:`MAX_REPLY_HEAD` bytes; the message completes "the proxy answered".
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_REPLY_HEAD:
            raise ProtocolError(f"with no end of its head within {MAX_REPLY_HEAD} bytes")
        if len(data) >= 5 and not data.startswith(b"HTTP/"):
            raise ProtocolError("what is not HTTP")
        return None
    if end > MAX_REPLY_HEAD:
        raise ProtocolError(f"with no end of its head within {MAX_REPLY_HEAD} bytes")
    status_line = data[: data.find(b"\r\n")]
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        shown = status_line[:60].decode("ascii", "replace")
        raise ProtocolError(f"{shown!r}, not an HTTP/1.x status line")
    reason = (match.group(2) or b"").decode("latin-1")
    reason = "".join(c for c in reason if " " <= c <= "~")[:100]
    return ConnectReply(int(match.group(1)), reason, data[end + 4 :])
