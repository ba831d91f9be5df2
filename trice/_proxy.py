"""TURN through a proxy: the proxy's URL, and the handshakes that make a connection to it a
tunnel to the TURN server, as pure values and state machines: HTTP CONNECT (RFC 9110
§9.3.6) and SOCKS5 CONNECT (RFC 1928, with RFC 1929's user name and password).

Behind a firewall that lets nothing out but a proxy's connections, a TURN server over TCP
or TLS is reached through a tunnel that the proxy opens on request: once it has, the
connection carries TURN (or TLS, then TURN) as if it went to the server itself.  This is
what browsers do for TURN over TCP behind an HTTP proxy, and what Pion's ``ProxyDialer`` is
for.  No I/O here: the trio shell (``trice._trio._relay``) sends what a handshake says and
feeds it what the proxy answers.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from trice._errors import ConfigError, ProtocolError
from trice._servers import _split_host_port, host_port
from trice.ice._candidate import canonical_ip, is_hostname

__all__ = [
    "MAX_REPLY_HEAD",
    "ConnectReply",
    "HttpConnect",
    "ProxyRefused",
    "ProxyUrl",
    "Socks5Connect",
    "connect_request",
    "read_connect_reply",
    "tunnel_handshake",
]

#: The most bytes of a proxy's answer to CONNECT read before its head must have ended (its
#: status line and header fields, up to the empty line).
MAX_REPLY_HEAD = 16 * 1024

#: The URL schemes of the proxies trice speaks to (``socks5h``, curl's name for a SOCKS5
#: proxy that resolves names, is the same here: a server's name always goes to the proxy).
SCHEMES = ("http", "socks5", "socks5h")

_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: ([^\r\n]*))?")
#: Characters a user name or password may not hold once percent-decoded (RFC 7617 §2:
#: no control characters; a user name holds no colon).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ProxyUrl:
    """A proxy that TURN over TCP and TLS goes through (see
    :attr:`trice.NetworkConfig.proxy`): ``http://[user[:password]@]host:port`` (HTTP
    CONNECT) or ``socks5://[user:password@]host:port`` (SOCKS5).

    Build one with :meth:`parse`.  ``str()`` writes it without the password, as logs and
    reports show it.

    Attributes:
        scheme: ``"http"`` or ``"socks5"``.
        host: an IP address (canonical form) or a DNS name (lower case).
        port: the proxy's port.
        username: the user name the proxy asks for (HTTP Basic, RFC 7617; SOCKS5, RFC
            1929), or ``None``.
        password: the password that goes with ``username`` (not shown by ``repr``).
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username is not None else ""
        return f"{self.scheme}://{user}{host_port(self.host, self.port)}"

    @classmethod
    def parse(cls, url: str) -> ProxyUrl:
        """Parse ``http://[user[:password]@]host:port`` or
        ``socks5://[user:password@]host:port`` (``socks5h://`` is taken for ``socks5://``:
        a server's name always goes to the proxy, which resolves it).  A trailing ``/`` is
        allowed.  The user name and password may be percent-encoded (``%40`` for ``@``);
        IPv6 literals go in brackets.  The port must be given: proxies listen on many.

        Raises:
            ConfigError: the URL is malformed, or of another scheme; the message says what
                (and never holds the password).
        """
        if not isinstance(url, str):
            raise ConfigError(f"a proxy URL must be a str, got {url!r}")

        def fail(problem: str) -> ConfigError:
            shown = url.split("@", 1)[-1] if "@" in url else url  # (no password in errors)
            return ConfigError(f"proxy URL {shown!r}: {problem}")

        scheme, sep, rest = url.strip(" \t\r\n").partition("://")
        if not sep:
            raise fail("expected http://host:port or socks5://host:port")
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise fail(f"scheme {scheme!r} is not supported: an HTTP (http://) or SOCKS5 proxy")
        scheme = scheme[:6]  # (socks5h: socks5)
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
            if scheme == "socks5" and not (
                len(username.encode()) <= 255 and 0 < len(password.encode()) <= 255
            ):
                raise fail("SOCKS5 wants a password, and both at most 255 bytes (RFC 1929)")
        host, port_text = _split_host_port(authority, fail)
        if not port_text:
            raise fail(f"no port: write {scheme}://host:port")
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
        return cls(scheme, canonical, port, username, password)


class ProxyRefused(ProtocolError):
    """The proxy answered, and will not open the tunnel: the message says its answer (an
    HTTP status and reason, or a SOCKS5 reply)."""


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


class HttpConnect:
    """The client side of HTTP CONNECT (RFC 9110 §9.3.6) to ``proxy``, for a tunnel to
    ``host`` and ``port``: send :meth:`start`'s bytes, then feed the proxy's answer to
    :meth:`receive_data` until :attr:`open`."""

    def __init__(self, proxy: ProxyUrl, host: str, port: int) -> None:
        self._request = connect_request(proxy, host, port)
        self._data = b""
        #: Whether the tunnel is open (the proxy answered 2xx).
        self.open = False
        #: What came after the proxy's answer (nothing, from a proxy that waits for the
        #: client to speak first, as a TURN or TLS client does).
        self.rest = b""

    def start(self) -> bytes:
        """What to send first: the request."""
        return self._request

    def receive_data(self, data: bytes) -> bytes:
        """More of the proxy's answer; returns what to send next (nothing, here).

        Raises:
            ProxyRefused: the proxy answered a status that is not 2xx.
            ProtocolError: the answer is not an HTTP/1.x one (see
                :func:`read_connect_reply`).
        """
        if self.open:
            self.rest += data
            return b""
        self._data += data
        reply = read_connect_reply(self._data)
        if reply is not None:
            if not reply.ok:
                raise ProxyRefused(f"{reply.status} {reply.reason}".rstrip())
            self.open = True
            self.rest = reply.rest
        return b""


#: RFC 1928 §6: what a SOCKS5 reply's REP field means.
SOCKS5_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}
_NO_AUTH, _USER_PASSWORD, _NO_METHOD = 0x00, 0x02, 0xFF
_IPV4, _NAME, _IPV6 = 0x01, 0x03, 0x04


class Socks5Connect:
    """The client side of a SOCKS5 CONNECT (RFC 1928) to ``proxy``, for a tunnel to
    ``host`` (an IP literal, or a name the proxy resolves) and ``port``, with RFC 1929's
    user name and password if the URL has them: send :meth:`start`'s bytes, then feed the
    proxy's answers to :meth:`receive_data` and send what it returns, until :attr:`open`."""

    def __init__(self, proxy: ProxyUrl, host: str, port: int) -> None:
        self._proxy = proxy
        if ":" in host:
            address = bytes([_IPV6]) + ipaddress.IPv6Address(host).packed
        elif canonical_ip(host) is not None:
            address = bytes([_IPV4]) + ipaddress.IPv4Address(host).packed
        else:
            name = host.encode("ascii")
            address = bytes([_NAME, len(name)]) + name
        self._request = b"\x05\x01\x00" + address + port.to_bytes(2, "big")
        self._step = "method"
        self._data = b""
        self.open = False
        self.rest = b""

    def start(self) -> bytes:
        """What to send first: the greeting, which offers the one method the URL allows
        (none, or a user name and password)."""
        method = _NO_AUTH if self._proxy.username is None else _USER_PASSWORD
        return bytes([5, 1, method])

    def receive_data(self, data: bytes) -> bytes:
        """More of the proxy's answers; returns what to send next (possibly nothing, while
        an answer is incomplete).

        Raises:
            ProxyRefused: the proxy accepts none of the methods offered, refuses the
                credentials, or replies to CONNECT with an error (RFC 1928 §6).
            ProtocolError: the proxy does not speak SOCKS5.
        """
        if self.open:
            self.rest += data
            return b""
        self._data += data
        out = b""
        while not self.open:
            sent = self._advance()
            if sent is None:
                break
            out += sent
        return out

    def _advance(self) -> bytes | None:
        """One step, if its answer is whole: what to send next, or ``None`` to wait."""
        data = self._data
        if self._step == "method":
            if len(data) < 2:
                return None
            self._data = data[2:]
            if data[0] != 5:
                raise ProtocolError("what is not SOCKS5")
            if data[1] == _NO_METHOD or data[1] not in (_NO_AUTH, _USER_PASSWORD):
                raise ProxyRefused("no authentication method offered is acceptable")
            if data[1] == _NO_AUTH:
                self._step = "reply"
                return self._request
            if self._proxy.username is None:
                raise ProtocolError("a method that was not offered")
            user = self._proxy.username.encode()
            secret = (self._proxy.password or "").encode()
            self._step = "auth"
            return bytes([1, len(user)]) + user + bytes([len(secret)]) + secret
        if self._step == "auth":
            if len(data) < 2:
                return None
            self._data = data[2:]
            if data[0] != 1:
                raise ProtocolError("what is not a SOCKS5 authentication answer (RFC 1929)")
            if data[1] != 0:
                raise ProxyRefused("the user name and password were refused")
            self._step = "reply"
            return self._request
        if len(data) < 5:
            return None
        if data[0] != 5 or data[2] != 0:
            raise ProtocolError("what is not a SOCKS5 reply")
        if data[1] != 0:
            raise ProxyRefused(SOCKS5_REPLIES.get(data[1], f"SOCKS5 reply {data[1]}"))
        kind = data[3]
        if kind == _IPV4:
            size = 4 + 4 + 2
        elif kind == _IPV6:
            size = 4 + 16 + 2
        elif kind == _NAME:
            size = 4 + 1 + data[4] + 2
        else:
            raise ProtocolError(f"a SOCKS5 reply of address type {kind}")
        if len(data) < size:
            return None
        self.open = True
        self.rest = data[size:]
        self._data = b""
        return b""


def tunnel_handshake(proxy: ProxyUrl, host: str, port: int) -> HttpConnect | Socks5Connect:
    """The handshake that asks ``proxy`` (of either scheme) for a tunnel to ``host`` and
    ``port``."""
    if proxy.scheme == "socks5":
        return Socks5Connect(proxy, host, port)
    return HttpConnect(proxy, host, port)
