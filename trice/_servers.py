"""STUN and TURN server URLs (RFC 7064, RFC 7065) and the ICE server list of a configuration.

Pure values, validated when built: a malformed URL or a TURN server without credentials is a
:class:`~trice.ConfigError` at configuration time, not a surprise while gathering.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

import idna

from trice._errors import ConfigError
from trice.ice._candidate import CandidateType, canonical_ip, is_hostname
from trice.stun._integrity import secret_problem

if TYPE_CHECKING:
    import ssl

__all__ = ["IceServer", "ServerUrl", "TransportPolicy"]

_DEFAULT_PORT = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}
_DEFAULT_TRANSPORT = {"stun": "udp", "turn": "udp", "stuns": "tcp", "turns": "tcp"}
_SCHEMES = "'stun', 'stuns', 'turn' or 'turns'"


class TransportPolicy(str, enum.Enum):
    """Which local candidates the agent gathers and uses.

    ``"all"`` and ``"relay"`` are the W3C ``RTCIceTransportPolicy`` values (WebRTC §4.2.5);
    ``"nohost"`` (as in Pion and older Chrome) hides local interface addresses while keeping
    reflexive and relayed candidates.
    """

    ALL = "all"
    """Every candidate type."""
    RELAY = "relay"
    """Relayed candidates only (the peer never learns a local or public address of ours:
    they are signalled without the address they came from, ``raddr 0.0.0.0 rport 0``)."""
    NOHOST = "nohost"
    """Everything but host candidates (signalled without the address they came from)."""

    def __str__(self) -> str:
        return self.value

    def allows(self, type: CandidateType) -> bool:
        """Tell whether a local candidate of this type may be gathered under the policy."""
        if self is TransportPolicy.RELAY:
            return type is CandidateType.RELAY
        if self is TransportPolicy.NOHOST:
            return type is not CandidateType.HOST
        return True


@dataclass(frozen=True, slots=True, init=False)
class ServerUrl:
    """A ``stun:``/``stuns:`` URI (RFC 7064 §3.1) or ``turn:``/``turns:`` URI (RFC 7065 §3.1).

    Build one with :meth:`parse`, or directly with keywords; ``str(url)`` writes the canonical
    form with the port, and for TURN the transport, spelled out
    (``turn:[2001:db8::1]:3478?transport=udp``), which :meth:`parse` reads back to an equal
    value.

    Attributes:
        scheme: ``"stun"``, ``"stuns"``, ``"turn"`` or ``"turns"`` (lower-case).
        host: a DNS name (lower-cased), an IPv4 literal or an IPv6 literal without brackets.
        port: 1..65535; by default 3478 for stun/turn and 5349 for stuns/turns (RFC 7064 §3.1,
            RFC 7065 §3.1).
        transport: ``"udp"`` or ``"tcp"``; by default UDP for stun/turn and TCP (TLS) for
            stuns/turns.  Only TURN URIs can choose (``?transport=``); ``turns`` with UDP means
            TURN over DTLS (RFC 7350), which a gatherer may not support.
    """

    scheme: str
    host: str
    port: int
    transport: str

    def __init__(
        self, scheme: str, host: str, *, port: int | None = None, transport: str | None = None
    ) -> None:
        """Validate and normalize the parts; defaults come from the scheme.

        Raises:
            ConfigError: a part is invalid.
        """
        if not isinstance(scheme, str) or scheme.lower() not in _DEFAULT_PORT:
            raise ConfigError(f"unknown scheme {scheme!r}: expected {_SCHEMES}")
        scheme = scheme.lower()
        if not isinstance(host, str):
            raise ConfigError(f"host must be a str, got {host!r}")
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            mapped = None
        if mapped is not None:
            # (Asked before canonical_ip, which reads it as the IPv4 address it maps, as a
            # peer's candidate is: in a URL the user wrote, say what to write.)
            raise ConfigError(
                f"host {host!r} is an IPv4-mapped IPv6 address: write {mapped} instead"
            )
        canonical = canonical_ip(host)
        if canonical is None:
            name = host
            if not name.isascii():
                # An internationalized name (RFC 3986 §3.2.2: percent-escaped UTF-8 in a
                # URI) is looked up in its ASCII form: IDNA 2008 (RFC 5891) with UTS #46's
                # mapping, as browsers do, not IDNA 2003, which takes faß.de to fass.de,
                # another domain.  (ValueError too: older idna releases raise it for a
                # character their Unicode data lacks.)
                try:
                    name = idna.encode(name, uts46=True).decode("ascii")
                except ValueError as exc:  # (UnicodeError, or older idna's own ValueError)
                    raise ConfigError(
                        f"host {host!r} is no internationalized name IDNA 2008 takes "
                        f"({exc}); write its ASCII (xn--) form"
                    ) from None
            # (A trailing dot, the DNS root, names the same host: RFC 3986's reg-name.  After
            # the mapping, which makes one of an ideographic full stop.)
            name = name[:-1] if name.endswith(".") else name
            if not is_hostname(name):
                raise ConfigError(f"host {host!r} is neither an IP address nor a DNS name")
            canonical = name.lower()
        if port is None:
            port = _DEFAULT_PORT[scheme]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"port must be an int in 1..65535, got {port!r}")
        default_transport = _DEFAULT_TRANSPORT[scheme]
        if transport is None:
            transport = default_transport
        if not isinstance(transport, str) or transport.lower() not in ("udp", "tcp"):
            raise ConfigError(f"transport must be 'udp' or 'tcp', got {transport!r}")
        transport = transport.lower()
        if not scheme.startswith("turn") and transport != default_transport:
            raise ConfigError(
                f"a {scheme}: URI has no transport choice (RFC 7064 §3.1): "
                f"it is {default_transport}"
            )
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "host", canonical)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "transport", transport)

    @property
    def secure(self) -> bool:
        """True for ``stuns:`` and ``turns:``: the server is reached over TLS (or DTLS)."""
        return self.scheme in ("stuns", "turns")

    @property
    def is_turn(self) -> bool:
        """True for ``turn:`` and ``turns:`` URIs: the server allocates relayed candidates."""
        return self.scheme in ("turn", "turns")

    def __str__(self) -> str:
        text = f"{self.scheme}:{host_port(self.host, self.port)}"
        if self.is_turn:
            text += f"?transport={self.transport}"
        return text

    @classmethod
    def parse(cls, url: str) -> ServerUrl:
        """Parse a STUN or TURN URI.

        The grammar is ``scheme ":" host [":" port]`` (RFC 7064 §3.1) with, for TURN only,
        ``["?transport=" ("udp" / "tcp")]`` (RFC 7065 §3.1).  IPv6 literals go in brackets
        (``stun:[2001:db8::1]:3478``).  The scheme, the ``transport`` key and its value match in
        any case; an empty port means the default.  Refused, each with its own message: the
        ``//`` authority form (``stun://host``, which these RFCs do not define), user info
        (``turn:user@host``: give credentials to :class:`IceServer`), any other query, a
        fragment, and transports other than UDP and TCP.

        Raises:
            ConfigError: the URL is malformed; the message quotes it and says what is wrong.
        """
        if not isinstance(url, str):
            raise ConfigError(f"an ICE server URL must be a str, got {url!r}")

        def fail(problem: str, shown: str | None = None) -> ConfigError:
            return ConfigError(f"ICE server URL {shown or _redacted(url)!r}: {problem}")

        scheme, colon, rest = url.strip(" \t\r\n").partition(":")
        if not colon:
            raise fail(f"no scheme: expected {_SCHEMES} followed by ':'")
        scheme = scheme.lower()
        if scheme not in _DEFAULT_PORT:
            raise fail(f"unknown scheme {scheme!r}: expected {_SCHEMES}")
        if rest.startswith("//"):
            raise fail(f"no '//' in STUN/TURN URIs (RFC 7064, RFC 7065): write '{scheme}:host'")
        if "#" in rest:
            raise fail("a fragment ('#') is not allowed")
        rest, question, query = rest.partition("?")
        transport: str | None = None
        if question:
            if not scheme.startswith("turn"):
                raise fail(f"a {scheme}: URI takes no query (RFC 7064 §3.1)")
            key, equals, value = query.partition("=")
            if key.lower() != "transport" or not equals:
                raise fail("the only query allowed is '?transport=udp' or '?transport=tcp'")
            if value.lower() not in ("udp", "tcp"):
                # (Not quoted unless letters or nothing: it may be a password's rest.)
                shown = repr(value) if value.isalpha() or not value else "value"
                raise fail(f"unsupported transport {shown}: expected 'udp' or 'tcp'")
            transport = value.lower()
        if "@" in rest:
            raise fail("user info is not allowed: give IceServer a username and credential")
        host, port_text = _split_host_port(rest, fail)
        if "%" in host and not rest.startswith("["):
            # RFC 3986's reg-name may hold percent-escapes (a zone index in a bracketed IPv6
            # literal is refused by _split_host_port).
            try:
                host = unquote(host, errors="strict")
            except UnicodeDecodeError:
                raise fail(f"host {host!r} is not UTF-8 once decoded") from None
            if ":" in host:  # (no name has one, and an IPv6 literal goes in brackets)
                raise fail("an IPv6 address must be written in brackets, e.g. [2001:db8::1]")
        port: int | None = None
        if port_text:
            try:
                port = parse_port(port_text)
            except ValueError as exc:
                # (Neither it nor the URL quoted: ``turn:alice:secret`` puts a password there.)
                written = f"{scheme}:{rest[: len(rest) - len(port_text) - 1]}:..."
                raise fail(f"the port is {exc}", written) from None
        try:
            return cls(scheme, host, port=port, transport=transport)
        except ConfigError as exc:
            problem = str(exc)
            if repr(host) in problem and _redacted(url) == f"{scheme}:...":
                # (Where the URL is not quoted, lest a password stand in it, nor is its
                # host, nor what IDNA said of it.)
                problem = "the host is neither an IP address nor a DNS name (not quoted)"
            raise fail(problem) from None


def parse_port(text: str) -> int:
    """The port a URL writes as ``text``.

    Raises:
        ValueError: ``text`` is not digits (``"not a number"``), or not in 1..65535 (``"not
            in 1..65535"``).  Leading zeros are taken (RFC 3986's port is any digits).
    """
    if not (text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 5):
        raise ValueError("not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError("not in 1..65535")
    return port


def _split_host_port(text: str, fail: Callable[[str], ConfigError]) -> tuple[str, str]:
    """Split ``host[:port]`` where host may be a bracketed IPv6 literal."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise fail("'[' without a closing ']'")
        host, after = text[1:end], text[end + 1 :]
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            # (Not quoted: behind an "@", or where a port should be, a password may be it.)
            raise fail("the text in brackets is not an IPv6 address") from None
        if ip.scope_id is not None:
            raise fail("an IPv6 zone index ('%...') is not allowed")
        if after and not after.startswith(":"):
            raise fail("unexpected text after the IPv6 address (only :PORT may follow)")
        return host, after[1:]
    if text.count(":") > 1:
        raise fail("an IPv6 address must be written in brackets, e.g. [2001:db8::1]:3478")
    host, _, port_text = text.partition(":")
    if not host:
        raise fail("no host")
    return host, port_text


@dataclass(frozen=True, slots=True, init=False)
class IceServer:
    """One STUN or TURN server entry, like the W3C ``RTCIceServer`` dictionary (WebRTC §4.2.4).

    ``IceServer("stun:stun.example.org")`` or
    ``IceServer(["turn:turn.example.org", "turns:turn.example.org"], "user", "secret")``.

    Attributes:
        urls: the server's URLs, parsed, in the order given; never empty.
        username: the TURN username (long-term credential, RFC 8489 §9.2), or ``None``.
        credential: the TURN password, or ``None``; it is left out of ``repr()``.
        ssl_context: for ``turns:`` URLs, the :class:`ssl.SSLContext` that checks the
            server; ``None`` means :func:`ssl.create_default_context` (the certificate is
            verified against the system's CAs and the URL's host name; they are loaded once
            a process, at the first such connection).  (Its annotation names :mod:`ssl`,
            which this module, free of sockets, does not import: at run time
            ``typing.get_type_hints(IceServer, localns={"ssl": ssl})`` reads it.)
    """

    urls: tuple[ServerUrl, ...]
    username: str | None
    credential: str | None = field(repr=False)
    ssl_context: ssl.SSLContext | None = field(repr=False, compare=False)

    def __init__(
        self,
        urls: str | ServerUrl | Iterable[str | ServerUrl],
        username: str | None = None,
        credential: str | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Parse and check the URLs.

        Args:
            urls: one URL or a sequence of them, as strings or :class:`ServerUrl` values.
            username: required (non-empty) when any URL is ``turn:`` or ``turns:``.
            credential: required (non-empty) when any URL is ``turn:`` or ``turns:``.

        Raises:
            ConfigError: no URLs, a malformed URL (the message quotes it), a URL trice cannot
                use (``stuns:``, STUN over TLS; ``turns:`` over UDP, which is DTLS), a TURN URL
                without username and credential, a username that is not UTF-8 text of at most
                508 bytes, a credential no TURN key can be made of (one with a control
                character), an ``ssl_context`` with no ``turns:`` URL or
                made for a server (``PROTOCOL_TLS_SERVER``), or a value of the wrong type.
        """
        items: list[str | ServerUrl]
        if isinstance(urls, (str, ServerUrl)):
            items = [urls]
        elif isinstance(urls, Iterable) and not isinstance(urls, (bytes, bytearray)):
            items = list(urls)
        else:
            raise ConfigError(
                f"urls must be a str or a sequence of str, got a {type(urls).__name__}"
            )
        if not items:
            raise ConfigError("an IceServer needs at least one URL")
        parsed: list[tuple[str, ServerUrl]] = []
        for item in items:
            if isinstance(item, ServerUrl):
                parsed.append((str(item), item))
            elif isinstance(item, str):
                parsed.append((item, ServerUrl.parse(item)))
            else:
                raise ConfigError(
                    f"each URL must be a str or a ServerUrl, got a {type(item).__name__}"
                )
        for name, value in (("username", username), ("credential", credential)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a str or None, got a {type(value).__name__}")
        for text, url in parsed:
            if url.scheme == "stuns":
                raise ConfigError(
                    f"ICE server URL {text!r}: STUN over TLS (stuns:) is not supported; "
                    "use stun: (a TURN server over TLS is turns:)"
                )
            if url.scheme == "turns" and url.transport == "udp":
                raise ConfigError(
                    f"ICE server URL {text!r}: TURN over DTLS (RFC 7350) is not supported; "
                    "use turns: over TCP (TLS), or turn: over UDP"
                )
            if url.is_turn and not (username and credential):
                raise ConfigError(
                    f"ICE server URL {text!r}: a TURN server needs a username and a credential"
                )
        if username:
            try:
                size = len(username.encode())
            except UnicodeEncodeError:
                raise ConfigError(
                    f"the username {username!r} is not text UTF-8 can carry"
                ) from None
            if size > 508:
                raise ConfigError(
                    f"the username is {size} bytes in UTF-8; STUN's USERNAME holds at most 508 "
                    "(RFC 8489 §14.3)"
                )
        problem = secret_problem(credential) if credential else None
        if problem is not None:  # (the TURN key is made of it: RFC 8489 §9.2.2)
            raise ConfigError(f"the credential cannot make a TURN key: {problem}")
        object.__setattr__(self, "urls", tuple(url for _, url in parsed))
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "credential", credential)
        if ssl_context is not None:
            import ssl  # here, not at the top: this module stays free of sockets

            if not isinstance(ssl_context, ssl.SSLContext):
                raise ConfigError("ssl_context must be an ssl.SSLContext or None")
            if ssl_context.protocol == ssl.PROTOCOL_TLS_SERVER:
                raise ConfigError(
                    "ssl_context is a server's (PROTOCOL_TLS_SERVER): a TURN client needs a "
                    "client's, ssl.create_default_context() say"
                )
            if not any(url.secure for url in self.urls):
                raise ConfigError(
                    "an ssl_context is for turns: URLs only, and this server has none"
                )
        object.__setattr__(self, "ssl_context", ssl_context)


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URI writes it (RFC 3986 §3.2.2): an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _redacted(url: str) -> str:
    """An ICE server URL as an error quotes it: without user info, where a password may
    have been put (``turn:alice:secret@host``; trice takes none there); and only its
    scheme where what follows is no ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``
    (``turn:alice:secret``, ``turns:alice:s3cret:443``: a password may stand anywhere in
    it, ``?`` and ``#`` included)."""
    head, at, tail = url.rpartition("@")
    if at:
        scheme, colon, rest = head.partition(":")
        if not colon:
            return "...@..."
        slashes = "//" if rest.startswith("//") else ""
        # (Behind the last @, only a host and port: a password may hold an @ itself.)
        shown = tail if _plain(tail) and surely_host(tail.partition("?")[0]) else "..."
        return f"{scheme}:{slashes}...@{shown}"
    scheme, colon, rest = url.partition(":")
    return url if not colon or _plain(rest) else f"{scheme}:..."


def surely_host(authority: str) -> bool:
    """Whether ``authority``, the text behind the last ``@`` of a URL (``host[:port]``), is
    surely a host, not the rest of a password that holds an ``@`` and came with no host
    (``turn:alice:p@ssw0rd``): an IPv6 literal in brackets, or a name or IPv4 address with
    a dot in it.  (A dotless name, ``localhost`` or a container's, is not quoted after an
    ``@``; a password's tail with a dot still would be.)"""
    if authority.startswith("["):
        inside = authority[1:].partition("]")[0]
        if "%" in inside:
            return False  # (a zone index: no URL here takes one, and a password may be it)
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            return False  # (a password's tail may hold a "[")
        return True
    return "." in authority.partition(":")[0]


def _plain(rest: str) -> bool:
    """Whether ``rest`` (a URL past its scheme) is a host and port where no password can
    be: a name or IPv4 address, or an IPv6 literal (bracketed or not), then ``:digits``
    or nothing, then ``?transport=`` and letters or nothing.  A fragment, or another
    query, may be the rest of a password (``turn:alice:2024#s3cret``)."""
    authority, question, query = rest.partition("?")
    if "#" in rest or (question and not re.fullmatch(r"(?i)transport=[a-z]*", query)):
        return False
    if authority.startswith("["):
        inside, bracket, after = authority[1:].partition("]")
        if bracket and not re.fullmatch(r":?[0-9]*", after):
            return False
        authority = inside.partition("%")[0]
    if _PLAIN_AUTHORITY.match(authority):
        return True
    try:
        ipaddress.IPv6Address(authority)  # (one, bracketed or not: quoted)
    except ValueError:
        return False
    return True


#: What a STUN/TURN URL's host and port look like after its scheme where no password can
#: be in them: a name or IPv4 address (no ``:``, ``[`` or ``]``), then digits if a port.
_PLAIN_AUTHORITY = re.compile(r"[^:\[\]]*(?::[0-9]*)?\Z")
