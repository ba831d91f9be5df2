"""TURN through a proxy: the proxy's URL, and the handshakes that make a connection to it a
tunnel to the TURN server, as pure values and state machines: HTTP CONNECT (RFC 9110
§9.3.6; to an HTTPS proxy, inside TLS) and SOCKS5 CONNECT (RFC 1928, with RFC 1929's user
name and password).

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
from typing import TYPE_CHECKING
from urllib.parse import unquote

from trice._errors import ConfigError, ProtocolError, printable
from trice._servers import _split_host_port, host_port, parse_port, surely_host
from trice.ice._candidate import canonical_ip, is_hostname

if TYPE_CHECKING:
    import ssl

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

#: The URL schemes of the proxies trice speaks to, and the kind of each (``socks5h``, curl's
#: name for a SOCKS5 proxy that resolves names, is SOCKS5 here: a server's name always goes
#: to the proxy).  An ``https`` proxy is an HTTP proxy reached over TLS.
_SCHEMES = {"http": "http", "https": "https", "socks5": "socks5", "socks5h": "socks5"}
_SUPPORTED = "an HTTP (http://), HTTPS (https://) or SOCKS5 (socks5://) proxy"

#: Where a head ends: an empty line (RFC 9112 §2.2 lets a recipient take a bare LF for a
#: line's end).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: ([^\r\n]*))?")
#: Characters a user name or password may not hold once percent-decoded (RFC 7617 §2:
#: no control characters; a user name holds no colon).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ProxyUrl:
    """A proxy that TURN over TCP and TLS goes through (see
    :attr:`trice.NetworkConfig.proxy`): ``http://[user[:password]@]host:port`` (HTTP
    CONNECT), ``https://[user[:password]@]host:port`` (HTTP CONNECT inside TLS to the proxy,
    whose certificate is checked against ``host``) or ``socks5://[user:password@]host:port``
    (SOCKS5).

    Build one with :meth:`parse`, or from its parts, which are checked the same way.
    ``str()`` writes it without the password, as logs and reports show it.

    Attributes:
        scheme: ``"http"``, ``"https"`` or ``"socks5"``.
        host: an IP address (canonical form) or a DNS name (lower case).
        port: the proxy's port.
        username: the user name the proxy asks for (HTTP Basic, RFC 7617; SOCKS5, RFC
            1929), or ``None``: non-empty, with no ``:`` and no control characters.
        password: the password that goes with ``username`` (no control characters; for
            SOCKS5 1 to 255 bytes, as the user name); not shown by ``repr``.
        ssl_context: for an HTTPS proxy, the :class:`ssl.SSLContext` that checks its
            certificate (``None``: :func:`ssl.create_default_context`, the system's
            authorities).  Not compared, not shown.  (Its annotation names :mod:`ssl`,
            which this module, free of sockets, does not import: at run time
            ``typing.get_type_hints(ProxyUrl, localns={"ssl": ssl})`` reads it.)

    Raises:
        ConfigError: a part is invalid; the message never holds the password (but for a
            password with an unencoded ``@`` and no host behind it, whose tail after the
            ``@`` has a dot: that tail is quoted, taken for the host; encode ``@`` as
            ``%40``).
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        scheme = self.scheme.lower() if isinstance(self.scheme, str) else None
        if scheme not in _SCHEMES:
            raise ConfigError(f"proxy scheme {self.scheme!r} is not supported: {_SUPPORTED}")
        if self.ssl_context is not None:
            import ssl  # here, not at the top: this module stays free of sockets

            if not isinstance(self.ssl_context, ssl.SSLContext):
                raise ConfigError("the proxy's ssl_context must be an ssl.SSLContext or None")
            if _SCHEMES[scheme] != "https":
                raise ConfigError("an ssl_context is for an https:// proxy only")
            if self.ssl_context.protocol == ssl.PROTOCOL_TLS_SERVER:
                raise ConfigError(
                    "the proxy's ssl_context is a server's (PROTOCOL_TLS_SERVER): a client's "
                    "is needed, ssl.create_default_context() say"
                )
        host = self.host if isinstance(self.host, str) else ""
        canonical = canonical_ip(host)
        if canonical is None:
            if not is_hostname(host):
                raise ConfigError(
                    f"proxy host {self.host!r} is neither an IP address nor a DNS name"
                )
            canonical = host.lower()
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError("the proxy's port must be an int in 1..65535")
        username, password = self.username, self.password
        if username is not None or password is not None:
            if not isinstance(username, str) or not isinstance(password, (str, type(None))):
                raise ConfigError("the proxy's user name and password must be str")
            password = password or ""
            try:
                username.encode()
                password.encode()
            except UnicodeEncodeError:  # (a lone surrogate: $TRICE_PROXY of non-UTF-8 bytes)
                raise ConfigError(
                    "the proxy's user name and password must be text UTF-8 can carry"
                ) from None
            if not username or ":" in username or _CONTROL.search(username):
                raise ConfigError(
                    "the proxy's user name must be non-empty, with no ':' or control characters"
                )
            if _CONTROL.search(password):
                raise ConfigError("the proxy's password must have no control characters")
            if _SCHEMES[scheme] == "socks5" and not (
                len(username.encode()) <= 255 and 0 < len(password.encode()) <= 255
            ):
                raise ConfigError(
                    "a SOCKS5 proxy wants a user name and a password of 1 to 255 bytes each "
                    "(RFC 1929)"
                )
        object.__setattr__(self, "scheme", _SCHEMES[scheme])
        object.__setattr__(self, "host", canonical)
        object.__setattr__(self, "password", password)

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username is not None else ""
        return f"{self.scheme}://{user}{host_port(self.host, self.port)}"

    @classmethod
    def parse(cls, url: str, *, ssl_context: ssl.SSLContext | None = None) -> ProxyUrl:
        """Parse ``http://[user[:password]@]host:port``, the same with ``https://``, or
        ``socks5://[user:password@]host:port`` (``socks5h://`` is taken for ``socks5://``:
        a server's name always goes to the proxy, which resolves it).  ``ssl_context``
        checks an HTTPS proxy's certificate (see the class).  A trailing ``/`` is
        allowed.  The user name and password may be percent-encoded (``%40`` for ``@``);
        IPv6 literals go in brackets.  The port must be given: proxies listen on many.

        Raises:
            ConfigError: the URL is malformed, or of another scheme; the message says what,
                and quotes the URL without its user info (a password may be there, or in
                what was meant as a port).
        """
        if not isinstance(url, str):
            raise ConfigError(f"a proxy URL must be a str, not {type(url).__name__}")
        text = url.strip(" \t\r\n")
        scheme, sep, rest = text.partition("://")
        if not sep or not _SCHEME.fullmatch(scheme):
            # (No scheme, or what comes before "://" cannot be one, RFC 3986 §3.1: user info
            # written first, a password holding "://".  All of it is the authority, as a
            # redaction goes: see _redacted; never quoted as a scheme.)
            scheme, sep, rest = "", "", text
        userinfo, at, authority = rest.rpartition("@")
        shown = _redacted(scheme, sep, bool(at), authority)

        def fail(problem: str) -> ConfigError:
            return ConfigError(f"proxy URL {shown!r}: {problem}")

        if not sep:
            raise fail("expected http://host:port, https://host:port or socks5://host:port")
        if scheme.lower() not in _SCHEMES:
            raise fail(f"scheme {scheme!r} is not supported: {_SUPPORTED}")
        if authority.endswith("/"):
            authority = authority[:-1]
        if any(mark in authority for mark in "/?#"):
            raise fail("a proxy URL has no path, query or fragment")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            try:
                username = unquote(user, errors="strict")
                password = unquote(secret, errors="strict") if colon else ""
            except UnicodeDecodeError:
                raise fail("the user name or password is not UTF-8 once decoded") from None
        host, port_text = _split_host_port(authority, fail)
        if not port_text:
            raise fail(f"no port: write {scheme.lower()}://host:port")
        try:
            port = parse_port(port_text)
        except ValueError as exc:
            raise fail(f"the port is {exc}") from None  # (not quoted: it may be a password)
        try:
            return cls(scheme, host, port, username, password, ssl_context)
        except ConfigError as exc:
            problem = str(exc)
            if at and not surely_host(host):  # (not quoted here either: see _redacted)
                problem = problem.replace(repr(host), "...")
            raise fail(problem) from None


def _redacted(scheme: str, sep: str, userinfo: bool, authority: str) -> str:
    """A proxy URL as an error quotes it: the user info left out, and of the authority the
    host only (a password may stand where the port should, in ``http://alice:secret``),
    and that only where it is surely one (``http://alice:p@ssw0rd`` has a password with an
    ``@`` and no host)."""
    host = authority.split("/", 1)[0]
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else "["
    else:
        host = host.split(":", 1)[0]
    if userinfo and not surely_host(host):
        host = "..."  # (it may be the rest of a password holding an "@")
    return f"{scheme}{sep}{'...@' if userinfo else ''}{host}"


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
    found = _HEAD_END.search(data)
    end = -1 if found is None else found.start()
    if end < 0:
        _check_partial(data)
        return None
    if end > MAX_REPLY_HEAD:
        raise ProtocolError(f"with no end of its head within {MAX_REPLY_HEAD} bytes")
    status_line = data[: data.find(b"\n")].removesuffix(b"\r")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        shown = status_line[:60].decode("ascii", "replace")
        raise ProtocolError(f"{shown!r}, not an HTTP/1.x status line")
    reason = (match.group(2) or b"").decode("latin-1")
    reason = "".join(c for c in reason if " " <= c <= "~")[:100]
    assert found is not None
    return ConnectReply(int(match.group(1)), reason, data[found.end() :])


def _check_partial(data: bytes | bytearray) -> None:
    """Raise :class:`ProtocolError` if ``data``, a head not yet whole, cannot become one."""
    if len(data) > MAX_REPLY_HEAD:
        raise ProtocolError(f"with no end of its head within {MAX_REPLY_HEAD} bytes")
    if len(data) >= 5 and not data.startswith(b"HTTP/"):
        raise ProtocolError("what is not HTTP")


class HttpConnect:
    """The client side of HTTP CONNECT (RFC 9110 §9.3.6) to ``proxy``, for a tunnel to
    ``host`` and ``port``: send :meth:`start`'s bytes, then feed the proxy's answer to
    :meth:`receive_data` until :attr:`open`."""

    def __init__(self, proxy: ProxyUrl, host: str, port: int) -> None:
        self._request = connect_request(proxy, host, port)
        self._data = bytearray()
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

        Interim answers (1xx, RFC 9110 §15.2) are read past.

        Raises:
            ProxyRefused: the proxy answered a final status that is not 2xx.
            ProtocolError: the answer is not an HTTP/1.x one (see
                :func:`read_connect_reply`).
        """
        if self.open:
            self.rest += data
            return b""
        # (Only the new bytes, and the three before them, can end the head: a proxy that
        # sends its head a byte at a time costs no search of all of it each time.)
        searched = max(0, len(self._data) - 3)
        self._data += data
        while True:
            if _HEAD_END.search(self._data, searched) is None:
                _check_partial(self._data)
                break
            reply = read_connect_reply(bytes(self._data))
            assert reply is not None
            if 100 <= reply.status < 200 and reply.status != 101:
                # (An interim answer: the final one follows, §15.2.)
                self._data = bytearray(reply.rest)
                searched = 0
                continue
            if reply.status == 101:
                raise ProtocolError("101 Switching Protocols, to a CONNECT")
            if not reply.ok:
                raise ProxyRefused(f"{reply.status} {printable(reply.reason)}".rstrip())
            self.open = True
            self.rest = reply.rest
            break
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
        """What to send first: the greeting, which offers no authentication, and a user
        name and password too if the URL has them (as curl does)."""
        if self._proxy.username is None:
            return bytes([5, 1, _NO_AUTH])
        return bytes([5, 2, _NO_AUTH, _USER_PASSWORD])

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
            if data[1] == _NO_METHOD:
                raise ProxyRefused("no authentication method offered is acceptable")
            if data[1] == _NO_AUTH:
                self._step = "reply"
                return self._request
            if data[1] != _USER_PASSWORD or self._proxy.username is None:
                raise ProtocolError(f"method {data[1]}, which was not offered")
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
