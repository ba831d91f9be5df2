"""ICE server URLs (RFC 7064 stun/stuns, RFC 7065 turn/turns) and IceServer validation."""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trice import AgentConfig, open_agent
from trice._errors import ConfigError
from trice._servers import IceServer, ServerUrl, TransportPolicy
from trice.ice import CandidateType

GOOD_URLS: list[tuple[str, tuple[str, str, int, str], str | None]] = [
    (
        "stun:stun.l.google.com:19302",
        ("stun", "stun.l.google.com", 19302, "udp"),
        "stun:stun.l.google.com:19302",
    ),
    ("stun:192.0.2.1", ("stun", "192.0.2.1", 3478, "udp"), "stun:192.0.2.1:3478"),
    ("stuns:stun.example.org", ("stuns", "stun.example.org", 5349, "tcp"), None),
    ("STUN:Stun.Example.ORG:3479", ("stun", "stun.example.org", 3479, "udp"), None),
    ("stun:[2001:db8::1]:3478", ("stun", "2001:db8::1", 3478, "udp"), "stun:[2001:db8::1]:3478"),
    ("stun:[2001:DB8:0::1]", ("stun", "2001:db8::1", 3478, "udp"), "stun:[2001:db8::1]:3478"),
    ("stun:example.org:", ("stun", "example.org", 3478, "udp"), "stun:example.org:3478"),
    (
        "turn:turn.example.org",
        ("turn", "turn.example.org", 3478, "udp"),
        "turn:turn.example.org:3478?transport=udp",
    ),
    (
        "turn:turn.example.org:3478?transport=tcp",
        ("turn", "turn.example.org", 3478, "tcp"),
        "turn:turn.example.org:3478?transport=tcp",
    ),
    (
        "turn:198.51.100.2?TRANSPORT=UDP",
        ("turn", "198.51.100.2", 3478, "udp"),
        "turn:198.51.100.2:3478?transport=udp",
    ),
    (
        "turns:turn.example.org",
        ("turns", "turn.example.org", 5349, "tcp"),
        "turns:turn.example.org:5349?transport=tcp",
    ),
    (
        "turns:turn.example.org:443?transport=tcp",
        ("turns", "turn.example.org", 443, "tcp"),
        None,
    ),
    (
        "turns:[2001:db8::2]:5349?transport=udp",  # TURN over DTLS (RFC 7350)
        ("turns", "2001:db8::2", 5349, "udp"),
        "turns:[2001:db8::2]:5349?transport=udp",
    ),
    (" turn:t.example?transport=tcp\n", ("turn", "t.example", 3478, "tcp"), None),
    # RFC 3986's forms, which RFC 7064 takes its host and port from: a trailing dot (the
    # DNS root), percent-escapes in a name, and leading zeros in a port.
    ("stun:stun.example.org.:3478", ("stun", "stun.example.org", 3478, "udp"), None),
    ("stun:stun.ex%61mple.org", ("stun", "stun.example.org", 3478, "udp"), None),
    # (An internationalized name, percent-escaped UTF-8 (RFC 3986 §3.2.2): its IDNA form.)
    ("stun:b%C3%BCcher.example", ("stun", "xn--bcher-kva.example", 3478, "udp"), None),
    # (IDNA 2008 with UTS #46, as browsers: faß.de is not fass.de, another domain.)
    ("stun:fa%C3%9F.de", ("stun", "xn--fa-hia.de", 3478, "udp"), None),
    # (An ideographic full stop is a dot to UTS #46: a trailing one too.)
    ("stun:b%C3%BCcher.example%E3%80%82", ("stun", "xn--bcher-kva.example", 3478, "udp"), None),
    ("stun:192.0.2.1:003478", ("stun", "192.0.2.1", 3478, "udp"), "stun:192.0.2.1:3478"),
]


@pytest.mark.parametrize(("text", "parts", "canonical"), GOOD_URLS)
def test_parse(text: str, parts: tuple[str, str, int, str], canonical: str | None) -> None:
    url = ServerUrl.parse(text)
    assert (url.scheme, url.host, url.port, url.transport) == parts
    assert url == ServerUrl(parts[0], parts[1], port=parts[2], transport=parts[3])
    if canonical is not None:
        assert str(url) == canonical
    assert ServerUrl.parse(str(url)) == url
    assert url.secure == parts[0].endswith("s")
    assert url.is_turn == parts[0].startswith("turn")


BAD_URLS: list[tuple[str, str]] = [
    ("", "no scheme"),
    ("stun.example.org", "no scheme"),
    ("http://stun.example.org", "unknown scheme"),
    ("stun://stun.example.org", "'//'"),
    ("turn://turn.example.org:3478", "'//'"),
    ("stun:stun.example.org?transport=udp", "takes no query"),
    ("stuns:stun.example.org?transport=tcp", "takes no query"),
    ("turn:t.example?transport=sctp", "unsupported transport 'sctp'"),
    ("turn:t.example?transport=", "unsupported transport ''"),
    ("stun:2001:db8::1", "brackets"),
    ("stun:2001:db8::1:3478", "brackets"),
    ("stun:[2001:db8::1", "closing"),
    ("stun:[example.org]:3478", "not an IPv6 address"),
    ("stun:[fe80::1%eth0]", "zone index"),
    ("stun:[2001:db8::1]3478", "unexpected"),
    ("stun:", "no host"),
    ("stun::3478", "no host"),
    ("stun:bad_name.example", "neither an IP address nor a DNS name"),
    ("stun:1.2.3.256", "neither an IP address nor a DNS name"),
    # (A last label that is a number in hex: the resolver reads these as 127.0.0.1 and
    # 198.51.100.1, RFC 3986 §7.4, not as names.)
    ("stun:127.0.0.0x1", "neither an IP address nor a DNS name"),
    # (Names IDNA 2008 refuses, a joiner's, a symbol's: the message says what to write.)
    ("stun:%C3%BC%E2%80%8D.com", "no internationalized name IDNA 2008 takes"),
    ("stun:%E2%98%83.net", "write its ASCII (xn--) form"),
    ("stun:0x7f000001", "neither an IP address nor a DNS name"),
    ("turn:0xc6.0x33.0x64.0x1", "neither an IP address nor a DNS name"),
    ("stun:-bad.example", "neither an IP address nor a DNS name"),
    ("stun:ex%zzample.org", "neither an IP address nor a DNS name"),
    ("stun:%C3%28.example", "not UTF-8"),
    # (No socket could use one: an IPv4 socket takes no IPv6 literal, an IPv6 one cannot
    # send to a mapped address.)
    ("stun:[::ffff:192.0.2.1]:3478", "IPv4-mapped IPv6 address: write 192.0.2.1"),
    # (An IPv6 literal goes in brackets, percent-escaped or not: a name holds no ':'.)
    ("stun:%3A%3A1", "must be written in brackets"),
    ("turn:2001%3Adb8%3A%3A1:3478?transport=udp", "must be written in brackets"),
    ("turn:[::ffff:c000:201]", "IPv4-mapped IPv6 address: write 192.0.2.1"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_URLS)
def test_parse_errors_name_the_url_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServerUrl.parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert problem in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("turn:t.example?proto=udp", "only query"),
        ("turn:t.example?transport", "only query"),
        ("turn:t.example?transport=udp&x=1", "unsupported transport value"),
        ("stun:stun.example.org#frag", "fragment"),
    ],
)
def test_a_url_with_a_query_or_fragment_it_does_not_take_is_quoted_as_its_scheme(
    text: str, problem: str
) -> None:
    """A fragment, or a query other than ?transport=, may be the rest of a password
    (``turn:alice:2024#s3cret``): such a URL is quoted as its scheme alone, the problem
    said all the same."""
    with pytest.raises(ConfigError) as info:
        ServerUrl.parse(text)
    message = str(info.value)
    assert f"'{text.split(':')[0]}:...'" in message and problem in message, message


@pytest.mark.parametrize(
    "text",
    [
        "turns:alice:s3cr3tpw:443",
        "turn:alice:s3cr3t#pw",
        "turn:alice:s3cr3t?pw",
        "turn:alice:s3cr3t:pw?transport=udp",
        "turn:[alice:s3cr3tpw",
        "turn:alice:s3cr3t?transport=sctp",
        "turn:[::1]:s3cr3t?transport=sctp",
        "turn:[::1]:s3cr3t#x",
        "turn:[alice]:s3cr3t",
        "turn:alice:2024#s3cr3t",  # (a password of digits, then a '#': no port, no fragment)
        "turn:alice:2024?s3cr3t",
        "turn:t.example?transport=udp&credential=s3cr3t",
        "turn:t.example?transport=s3cr3t:x",
        "turn:[::1]x:s3cr3t",
        "turn:[alice:s3cr3t]:3478",
        # (A host of a bracket: the host, and what IDNA says of it, were quoted.)
        "turn:s3cr3t]%C3%A9",
        "stun:pa[s3cr3t%C3%A9:3478",
        "turn:pa]s3cr3t",
    ],
)
def test_a_password_written_into_a_url_is_never_quoted(text: str) -> None:
    """Whatever the parse stumbles on, a URL whose text after the scheme is no host and
    port is quoted as its scheme alone: a password typed there (``turn:alice:secret``)
    could stand anywhere in it, ``?`` and ``#`` included.  Only a port that was no number
    hid it before."""
    with pytest.raises(ConfigError) as info:
        ServerUrl.parse(text)
    assert "s3cr3t" not in str(info.value) and f"'{text.split(':')[0]}:...'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("stun:example.org:0", "not in 1..65535"),
        ("stun:example.org:65536", "not in 1..65535"),
        ("stun:example.org:http", "not a number"),
        ("stun:example.org:-1", "not a number"),
        ("stun:example.org:123456", "not a number"),
        ("stun:example.org:0000000", "not in 1..65535"),
        ("turn:alice:Wonderland99", "not a number"),  # (a password where the port goes)
        ("turn:alice:Wonderland99?transport=tcp", "not a number"),
    ],
)
def test_a_bad_port_is_not_quoted(text: str, problem: str) -> None:
    """``turn:alice:secret`` puts a password where the port goes: neither the port nor
    the URL with it is quoted (both were), as ProxyUrl quotes neither."""
    with pytest.raises(ConfigError) as info:
        ServerUrl.parse(text)
    message = str(info.value)
    port = text.split("?")[0].rsplit(":", 1)[1]
    written = text.split("?")[0].rsplit(":", 1)[0]
    assert f"{written}:...'" in message and problem in message
    assert port not in message.replace(written, "")


@pytest.mark.parametrize(
    ("text", "shown", "problem"),
    [
        ("turn:user@t.example", "turn:...@t.example", "user info is not allowed"),
        ("turn:alice:secret@t.example:3478?transport=tcp", "turn:...@t.example:3478", "user info"),
        ("turns://alice:secret@t.example", "turns://...@t.example", "'//'"),
        ("alice:secret@t.example", "alice:...@t.example", "unknown scheme"),
        # A password holding an "@" and no host: what follows the "@" is not quoted.
        ("turn:alice:p@secret", "turn:...@...'", "user info"),
        ("turns:alice:p@secret:5349", "turns:...@...'", "user info"),
        ("turn:alice:p@secret?transport=tcp", "turn:...@...'", "user info"),
        ("turn:alice:p@[secret]", "turn:...@...'", "user info"),
        ("turn:alice:p@[secret]:3478", "turn:...@...'", "user info"),
        ("turn:alice:p@[secret", "turn:...@...'", "user info"),
        ("turn:alice:secret@[2001:db8::1]:3478", "turn:...@[2001:db8::1]:3478'", "user info"),
    ],
)
def test_parse_errors_quote_the_url_without_its_user_info(
    text: str, shown: str, problem: str
) -> None:
    """A password put in the URL (trice takes none there) is not quoted back."""
    with pytest.raises(ConfigError) as info:
        ServerUrl.parse(text)
    message = str(info.value)
    assert shown in message and problem in message
    assert "secret" not in message


def test_parse_non_str() -> None:
    with pytest.raises(ConfigError):
        ServerUrl.parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("http", "x.example"), {}),
        (("stun", "[2001:db8::1]"), {}),
        (("stun", 5), {}),
        (("stun", "x.example"), {"port": 0}),
        (("stun", "x.example"), {"port": True}),
        (("stun", "x.example"), {"port": "3478"}),
        (("turn", "x.example"), {"transport": "sctp"}),
        (("stun", "x.example"), {"transport": "tcp"}),  # stun: URIs cannot say so
        (("stuns", "x.example"), {"transport": "udp"}),
    ],
)
def test_server_url_constructor_validation(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ServerUrl(*args, **kwargs)


def test_server_url_is_frozen_and_hashable() -> None:
    url = ServerUrl.parse("turn:t.example")
    assert len({url, ServerUrl("TURN", "T.example")}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        url.port = 1  # type: ignore[misc]
    assert dataclasses.replace(url, port=80) == ServerUrl.parse("turn:t.example:80")


# -- IceServer ----------------------------------------------------------------------------------


def test_ice_server_single_and_many_urls() -> None:
    stun = IceServer("stun:stun.example.org")
    assert stun.urls == (ServerUrl.parse("stun:stun.example.org"),)
    assert stun.username is None
    assert stun.credential is None
    turn = IceServer(
        ["turn:t.example?transport=udp", "turn:t.example?transport=tcp", "turns:t.example"],
        "user",
        "secret",
    )
    assert [str(url) for url in turn.urls] == [
        "turn:t.example:3478?transport=udp",
        "turn:t.example:3478?transport=tcp",
        "turns:t.example:5349?transport=tcp",
    ]
    assert IceServer(("stun:a.example",)) == IceServer(ServerUrl.parse("stun:a.example"))
    assert IceServer([ServerUrl("stun", "a.example"), "stun:b.example"]).urls[1].host == "b.example"
    assert dataclasses.replace(turn, credential="other").credential == "other"


def test_ice_server_hides_the_credential_from_repr() -> None:
    server = IceServer("turn:t.example", username="user", credential="s3cr3t")
    assert "s3cr3t" not in repr(server)
    assert "user" in repr(server)


@pytest.mark.parametrize(
    ("urls", "username", "credential", "problem"),
    [
        ([], None, None, "at least one URL"),
        ((), None, None, "at least one URL"),
        ("turn:t.example", None, None, "'turn:t.example'"),
        ("turn:t.example", "user", None, "needs a username and a credential"),
        ("turns:t.example", None, "pw", "'turns:t.example'"),
        (["stun:s.example", "turn:t.example"], "", "pw", "'turn:t.example'"),
        (["stun:s.example", "stun://bad"], None, None, "'stun://bad'"),
        (5, None, None, "urls must be"),
        (b"stun:s.example", None, None, "urls must be"),
        ([5], None, None, "each URL"),
        ("turn:t.example", 1, "pw", "username must be"),
        ("turn:t.example", "user", 1, "credential must be"),
        ("turn:t.example", "user", "pass\x07word", "cannot make a TURN key"),
        ("turn:t.example", "\ud800user", "pw", "not text UTF-8 can carry"),
        ("turn:t.example", "é" * 255, "pw", "510 bytes in UTF-8"),
        ("stuns:s.example", None, None, "STUN over TLS"),
        ("turns:t.example?transport=udp", "user", "pw", "TURN over DTLS"),
    ],
)
def test_ice_server_validation(urls: Any, username: Any, credential: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(")) as info:
        IceServer(urls, username, credential)
    assert isinstance(info.value, ValueError)


def test_stun_server_may_carry_unused_credentials() -> None:
    assert IceServer("stun:s.example", "user", "pw").username == "user"


# -- TransportPolicy ----------------------------------------------------------------------------


def test_an_ice_servers_tls_context_is_a_clients_for_a_turns_url() -> None:
    """``ssl_context`` is for ``turns:`` URLs: given for a server with none, it would be
    silently unused (the user believing TLS protects the connection); a server's context
    (PROTOCOL_TLS_SERVER) makes no client, and raised ssl.SSLError out of the agent, its
    connection left open."""
    client = ssl.create_default_context()
    assert IceServer("turns:turn.example", "u", "p", ssl_context=client).ssl_context is client
    mixed = IceServer(["turn:turn.example", "turns:turn.example"], "u", "p", ssl_context=client)
    assert mixed.ssl_context is client
    with pytest.raises(ConfigError, match="for turns: URLs only"):
        IceServer("turn:turn.example?transport=tcp", "u", "p", ssl_context=client)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ConfigError, match="PROTOCOL_TLS_SERVER"):
        IceServer("turns:turn.example", "u", "p", ssl_context=server_side)


def test_transport_policy() -> None:
    assert TransportPolicy("relay") is TransportPolicy.RELAY
    assert str(TransportPolicy.NOHOST) == "nohost"
    assert all(TransportPolicy.ALL.allows(kind) for kind in CandidateType)
    assert [kind for kind in CandidateType if TransportPolicy.RELAY.allows(kind)] == [
        CandidateType.RELAY
    ]
    assert [kind for kind in CandidateType if TransportPolicy.NOHOST.allows(kind)] == [
        CandidateType.SRFLX,
        CandidateType.PRFLX,
        CandidateType.RELAY,
    ]


# -- properties ---------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?"
hosts = st.one_of(
    st.ip_addresses()
    .filter(lambda ip: getattr(ip, "ipv4_mapped", None) is None)  # (refused: no socket uses one)
    .map(str),
    st.from_regex(rf"({_LABEL}\.)*[A-Za-z]{{1,6}}", fullmatch=True),
)


@st.composite
def server_urls(draw: st.DrawFn) -> ServerUrl:
    scheme = draw(st.sampled_from(["stun", "stuns", "turn", "turns"]))
    transport = draw(st.none() | st.sampled_from(["udp", "tcp"])) if "turn" in scheme else None
    return ServerUrl(
        scheme,
        draw(hosts),
        port=draw(st.none() | st.integers(1, 65535)),
        transport=transport,
    )


@given(server_urls())
def test_round_trip(url: ServerUrl) -> None:
    assert ServerUrl.parse(str(url)) == url
    assert str(ServerUrl.parse(str(url))) == str(url)


@st.composite
def written_urls(draw: st.DrawFn) -> tuple[str, ServerUrl]:
    """URLs written the way people write them: optional port and query, any case."""
    url = draw(server_urls())
    host = f"[{url.host}]" if ":" in url.host else url.host
    text = draw(st.sampled_from([url.scheme, url.scheme.upper()])) + ":" + host
    if draw(st.booleans()) or url.port != (5349 if url.secure else 3478):
        text += f":{url.port}"
    if url.is_turn and (draw(st.booleans()) or url.transport != ("tcp" if url.secure else "udp")):
        text += "?transport=" + draw(st.sampled_from([url.transport, url.transport.upper()]))
    return text, url


@given(written_urls())
def test_parse_as_written(pair: tuple[str, ServerUrl]) -> None:
    text, url = pair
    assert ServerUrl.parse(text) == url


_PIECES = ["stun", "turn", "turns", ":", "//", "[", "]", "::1", "?", "transport=", "udp", "@"]


@given(st.text() | st.lists(st.sampled_from(_PIECES) | st.text(max_size=4)).map("".join))
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        ServerUrl.parse(text)
    with contextlib.suppress(ConfigError):
        IceServer(text, "user", "pw")


#: A TURN provider's credential, as a W3C RTCIceServer dictionary carries it.
_SECRET = "TurnCredZ9q7Secret"
_W3C_SERVER = {"urls": ["turn:turn.example.org"], "username": "alice", "credential": _SECRET}


@pytest.mark.parametrize(
    "make",
    [
        lambda: AgentConfig(ice_servers=[_W3C_SERVER]),  # type: ignore[list-item]
        lambda: AgentConfig(ice_servers=[("turn:turn.example.org", "alice", _SECRET)]),  # type: ignore[list-item]
        lambda: IceServer([_W3C_SERVER]),  # type: ignore[list-item]
        lambda: open_agent({"iceServers": [_W3C_SERVER]}, controlling=True),  # type: ignore[arg-type]
    ],
    ids=["w3c-dict", "tuple", "dict-as-url", "w3c-configuration"],
)
def test_a_wrong_type_where_an_ice_server_goes_is_named_not_quoted(make: Any) -> None:
    """A W3C ``RTCIceServer`` dictionary (what TURN providers hand out), a tuple, or a W3C
    configuration given where trice takes its own types: the error names the type, and
    does not quote the object with its credential (it went into bug reports)."""
    with pytest.raises((ConfigError, TypeError)) as info:
        make()
    assert _SECRET not in str(info.value)
    assert "dict" in str(info.value) or "tuple" in str(info.value)


def test_one_ice_server_given_alone_is_told_to_go_in_a_list() -> None:
    """``ice_servers=IceServer(...)`` (aioice's ``turn_server=`` takes one server): the
    error says to put it in a list, names its type with its article, and quotes nothing
    of it."""
    server = IceServer("turn:turn.example.org", "alice", _SECRET)
    with pytest.raises(ConfigError) as info:
        AgentConfig(ice_servers=server)  # type: ignore[arg-type]
    assert str(info.value) == (
        "AgentConfig.ice_servers must be a sequence of trice.IceServer, not an IceServer "
        "(a list of the one: [server])"
    )
