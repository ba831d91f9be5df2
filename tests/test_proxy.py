"""TURN through a proxy (``NetworkConfig.proxy``): the proxy URL and the HTTP CONNECT and
SOCKS5 handshakes as pure code (with property tests of the parsers), proxies of the test's
own that misbehave, and real ones (tinyproxy, microsocks) in front of a real coturn, all on
loopback."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from proxies import (
    OUTBOUND,
    HttpsProxy,
    Microsocks,
    Tinyproxy,
    run_https_proxy,
    run_microsocks,
    run_tinyproxy,
)

import trice
from trice._errors import ProtocolError
from trice._proxy import (
    MAX_REPLY_HEAD,
    ConnectReply,
    HttpConnect,
    ProxyRefused,
    Socks5Connect,
    connect_request,
    read_connect_reply,
    tunnel_handshake,
)

from coturn import PASSWORD, USER, free_port, require_turnserver, run_coturn
from loopback import connect_both, exchange_each_way, gathered_pair, loopback_config, signal

# -- the proxy's URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("http://127.0.0.1:3128", ("http", "127.0.0.1", 3128, None, None)),
        (" HTTP://Proxy.Corp.Example:8080/ ", ("http", "proxy.corp.example", 8080, None, None)),
        ("http://[2001:DB8::1]:3128", ("http", "2001:db8::1", 3128, None, None)),
        ("http://alice:s%40cret%3A@proxy:3128", ("http", "proxy", 3128, "alice", "s@cret:")),
        ("http://alice@proxy:3128", ("http", "proxy", 3128, "alice", "")),
        ("http://al%C3%AFce:p@proxy:1", ("http", "proxy", 1, "alïce", "p")),
        ("https://alice:pw@Proxy.Example:443", ("https", "proxy.example", 443, "alice", "pw")),
        ("socks5://127.0.0.1:1080", ("socks5", "127.0.0.1", 1080, None, None)),
        ("SOCKS5H://bob:pw@socks.example:1080", ("socks5", "socks.example", 1080, "bob", "pw")),
    ],
)
def test_proxy_urls(text: str, parts: tuple[str, str, int, str | None, str | None]) -> None:
    proxy = trice.ProxyUrl.parse(text)
    assert (proxy.scheme, proxy.host, proxy.port, proxy.username, proxy.password) == parts
    assert trice.NetworkConfig(proxy=text).proxy == proxy
    assert trice.NetworkConfig(proxy=proxy).proxy is proxy


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("proxy:3128", "expected http://host:port, https://host:port or socks5://host:port"),
        ("socks4://proxy:1080", "an HTTP \\(http://\\), HTTPS \\(https://\\) or SOCKS5"),
        ("ftp://proxy:21", "is not supported"),
        ("socks5://alice@proxy:1080", "a user name and a password of 1 to 255 bytes"),
        ("socks5://alice:" + "x" * 256 + "@proxy:1080", "of 1 to 255 bytes"),
        ("socks5://proxy", "no port: write socks5://host:port"),
        ("http://proxy", "no port"),
        ("http://proxy:", "no port"),
        ("http://proxy:0", "not in 1..65535"),
        ("http://proxy:65536", "not in 1..65535"),
        ("http://proxy:31x8", "not a number"),
        ("http://proxy:3128/path", "no path, query or fragment"),
        ("http://proxy:3128?x=1", "no path, query or fragment"),
        ("http://:secret@proxy:3128", "user name must be non-empty"),
        ("http://a%3Ab:secret@proxy:3128", "no ':'"),
        ("http://a%0A:secret@proxy:3128", "control characters"),
        ("http://a:%FF%FE@proxy:3128", "not UTF-8"),
        ("http://bad_host!:3128", "neither an IP address nor a DNS name"),
        ("http://[fe80::1%25eth0]:3128", "zone index"),
        ("http://2001:db8::1:3128", "in brackets"),
        ("http://alice:top@secret@proxy.example", "'http://...@proxy.example': no port"),
        # A password holding an "@", and no host: what follows the "@" is not quoted.
        ("http://alice:p@secret", "'http://...@...': no port"),
        ("http://alice:p@[secret]:3128", "'http://...@...': the text in brackets is not"),
        ("http://alice:p@secret!:3128", "'http://...@...': proxy host ... is neither"),
        ("socks5://alice:p@pass_secret:1080", "'socks5://...@...': proxy host ... is neither"),
        ("http://alice:p@[fe80::1%secret]:3128", "'http://...@...': an IPv6 zone index"),
        ("socks5://alice:p@[secret]:1080", "'socks5://...@...': the text in brackets"),
        ("http://alice:secret@[2001:db8::1]", "'http://...@\\[2001:db8::1\\]': no port"),
        ("http://alice:secret", "'http://alice': the port is not a number"),
        ("http://alice:secret@[::1", "without a closing"),
        # No "://": the user info is still left out of the message.
        ("alice:secret@proxy.example:3128", "'...@proxy.example': expected http://host:port"),
        ("alice:p@secret", "'...@...': expected http://host:port"),
        ("http:/alice:secret@proxy.example:3128", "'...@proxy.example': expected http://host:port"),
        ("http//alice:secret@proxy.example:3128", "'...@proxy.example': expected http://host:port"),
        ("alice:secret", "'alice': expected http://host:port"),
        # What comes before "://" is no scheme (RFC 3986 §3.1): never quoted as one.
        ("alice:secret@http://proxy:3128", "expected http://host:port"),
        ("alice:secret://x@proxy:3128", "expected http://host:port"),
        ("http:/alice:secret@proxy:3128/?via=http://x", "expected http://host:port"),
    ],
)
def test_bad_proxy_urls_are_config_errors_that_never_show_the_password(
    text: str, problem: str
) -> None:
    with pytest.raises(trice.ConfigError, match=problem) as caught:
        trice.ProxyUrl.parse(text)
    assert "secret" not in str(caught.value)
    with pytest.raises(trice.ConfigError):
        trice.NetworkConfig(proxy=text)


def test_a_proxy_url_is_a_str() -> None:
    with pytest.raises(trice.ConfigError, match="must be a str, not int"):
        trice.NetworkConfig(proxy=3128)  # type: ignore[arg-type]
    with pytest.raises(trice.ConfigError, match="must be a str, not bytes") as caught:
        trice.NetworkConfig(proxy=b"http://alice:secret@proxy:1")  # type: ignore[arg-type]
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("parts", "problem"),
    [
        (("ftp", "proxy", 1), "scheme 'ftp' is not supported"),
        (("http", "proxy", 0), "1..65535"),
        (("http", "proxy", True), "1..65535"),
        (("http", "proxy\r\nX-Evil: 1", 3128), "neither an IP address nor a DNS name"),
        (("http", "proxy", 3128, "a:b", "secret"), "no ':'"),
        (("http", "proxy", 3128, "a", "sec\nret"), "password must have no control"),
        (("socks5", "proxy", 1080, "a", None), "1 to 255 bytes"),
        (("socks5", "proxy", 1080, "a" * 300, "secret"), "1 to 255 bytes"),
        (("http", "proxy", 3128, None, "secret"), "must be str"),
    ],
)
def test_a_proxy_url_made_from_its_parts_is_checked_as_a_parsed_one(
    parts: tuple[object, ...], problem: str
) -> None:
    with pytest.raises(trice.ConfigError, match=problem) as caught:
        trice.ProxyUrl(*parts)  # type: ignore[arg-type]
    assert "secret" not in str(caught.value)


def test_a_proxy_url_made_from_its_parts_is_normalised() -> None:
    proxy = trice.ProxyUrl("SOCKS5H", "Proxy.Example", 1080, "bob", "pw")
    assert (proxy.scheme, proxy.host) == ("socks5", "proxy.example")
    assert trice.ProxyUrl("http", "proxy", 3128, "alice").password == ""


def test_a_proxy_urls_password_shows_nowhere() -> None:
    proxy = trice.ProxyUrl.parse("http://alice:secret@proxy:3128")
    assert str(proxy) == "http://alice@proxy:3128"
    assert "secret" not in repr(proxy)
    assert "secret" not in repr(trice.NetworkConfig(proxy=proxy))
    assert str(trice.ProxyUrl.parse("http://[::1]:8080")) == "http://[::1]:8080"
    assert str(trice.ProxyUrl.parse("socks5h://bob:secret@p:1")) == "socks5://bob@p:1"


# -- the CONNECT handshake (RFC 9110 §9.3.6) ----------------------------------------------------


def test_the_connect_request() -> None:
    plain = trice.ProxyUrl.parse("http://proxy:3128")
    assert connect_request(plain, "turn.example.org", 443) == (
        b"CONNECT turn.example.org:443 HTTP/1.1\r\nHost: turn.example.org:443\r\n\r\n"
    )
    assert connect_request(plain, "2001:db8::2", 3478).startswith(
        b"CONNECT [2001:db8::2]:3478 HTTP/1.1\r\nHost: [2001:db8::2]:3478\r\n"
    )
    with_user = trice.ProxyUrl.parse("http://alice:s%40cret@proxy:3128")
    token = base64.b64encode(b"alice:s@cret").decode()
    assert connect_request(with_user, "198.51.100.2", 3478) == (
        b"CONNECT 198.51.100.2:3478 HTTP/1.1\r\nHost: 198.51.100.2:3478\r\n"
        + f"Proxy-Authorization: Basic {token}\r\n\r\n".encode()
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"HTTP/1.1 200 Connection established\r\n\r\n", (200, "Connection established", b"")),
        (
            b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n<x",
            (407, "Proxy Authentication Required", b"<x"),
        ),
        (b"HTTP/1.1 204\r\n\r\n", (204, "", b"")),
        (b"HTTP/1.1 502 Bad\x01\xffGateway\r\n\r\n", (502, "BadGateway", b"")),
    ],
)
def test_the_proxys_answer(data: bytes, expected: tuple[int, str, bytes]) -> None:
    reply = read_connect_reply(data)
    assert reply is not None
    assert (reply.status, reply.reason, reply.rest) == expected
    assert reply.ok == (200 <= expected[0] < 300)
    for cut in range(data.index(b"\r\n\r\n") + 3):
        assert read_connect_reply(data[:cut]) is None


def test_interim_answers_are_read_past_and_bare_lf_ends_lines() -> None:
    """RFC 9110 §15.2: 1xx answers before the final one are read past (a 101 to CONNECT is
    nonsense); RFC 9112 §2.2: a bare LF may end a line."""
    proxy = trice.ProxyUrl.parse("http://p:1")
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\nX: y\n\nHTTP/1.1 200 OK\n\n"
    for size in (1, 7, len(answer)):
        handshake = HttpConnect(proxy, "h", 1)
        for i in range(0, len(answer), size):
            assert not handshake.open
            handshake.receive_data(answer[i : i + size])
        assert handshake.open and handshake.rest == b""
    with pytest.raises(ProtocolError, match="101 Switching Protocols"):
        HttpConnect(proxy, "h", 1).receive_data(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    with pytest.raises(ProxyRefused, match=r"^403 No$"):
        HttpConnect(proxy, "h", 1).receive_data(b"HTTP/1.1 100 Go\r\n\r\nHTTP/1.1 403 No\r\n\r\n")


def test_a_head_that_comes_a_byte_at_a_time_is_searched_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy that sends its head a byte at a time (up to MAX_REPLY_HEAD of it) costs a
    search of each byte a few times, not of the whole head at each byte (which took 2 s
    of CPU for 16 KiB)."""
    searched = [0]
    real = trice._proxy._HEAD_END

    class Counting:
        def search(self, data: bytes, pos: int = 0) -> object:
            searched[0] += len(data) - pos
            return real.search(data, pos)

    monkeypatch.setattr(trice._proxy, "_HEAD_END", Counting())
    handshake = HttpConnect(trice.ProxyUrl.parse("http://p:1"), "h", 1)
    head = b"HTTP/1.1 200 OK\r\nX: " + b"y" * 16000 + b"\r\n\r\n"
    for i in range(len(head)):
        handshake.receive_data(head[i : i + 1])
    assert handshake.open
    assert searched[0] <= 6 * len(head)  # (four bytes a call, and the whole head once)
    endless = HttpConnect(trice.ProxyUrl.parse("http://p:1"), "h", 1)
    endless.receive_data(b"HTTP/1.1 200 OK\r\nX: ")
    with pytest.raises(ProtocolError, match="no end of its head"):
        for _ in range(MAX_REPLY_HEAD):
            endless.receive_data(b"y")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not HTTP"),
        (b"HTTP/2 200\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_REPLY_HEAD // 6), "no end of its head"),
        (b"HTTP/1.1 200 OK\r\n" + b"X" * MAX_REPLY_HEAD + b"\r\n\r\n", "no end of its head"),
    ],
)
def test_what_is_not_an_answer_to_connect(data: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        read_connect_reply(data)


@given(st.binary(max_size=300) | st.binary(max_size=40).map(lambda b: b"HTTP/1.1 " + b))
def test_any_bytes_are_an_answer_more_to_come_or_a_protocol_error(data: bytes) -> None:
    try:
        reply = read_connect_reply(data)
    except ProtocolError:
        return
    assert reply is None or isinstance(reply, ConnectReply)


_HEADER = st.tuples(
    st.text("abcXYZ-", min_size=1, max_size=10), st.text("abc 123/;=", max_size=20)
).map(lambda kv: f"{kv[0]}: {kv[1]}\r\n".encode())


@given(
    status=st.integers(100, 999),
    reason=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    headers=st.lists(_HEADER, max_size=5),
    rest=st.binary(max_size=20),
    cut=st.integers(0, 400),
)
def test_an_answer_read_in_any_two_parts_is_the_same(
    status: int, reason: str, headers: list[bytes], rest: bytes, cut: int
) -> None:
    head = f"HTTP/1.1 {status} {reason}\r\n".encode() + b"".join(headers) + b"\r\n"
    data = head + rest
    whole = read_connect_reply(data)
    assert whole == ConnectReply(status, reason, rest)
    part = read_connect_reply(data[:cut])
    if cut < len(head):
        assert part is None
    else:
        assert part == ConnectReply(status, reason, data[len(head) : cut])


# -- the SOCKS5 handshake (RFC 1928, RFC 1929) --------------------------------------------------


def _socks(credentials: str = "") -> trice.ProxyUrl:
    return trice.ProxyUrl.parse(f"socks5://{credentials}127.0.0.1:1080")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("198.51.100.2", b"\x01\xc6\x33\x64\x02"),
        ("2001:db8::2", b"\x04" + bytes.fromhex("20010db8000000000000000000000002")),
        ("turn.example.org", b"\x03\x10turn.example.org"),
    ],
)
def test_a_socks5_connect_without_credentials(host: str, address: bytes) -> None:
    """The greeting offers no authentication; once the proxy picks it, the CONNECT request
    names the server by address (IPv4, IPv6) or by name, for the proxy to resolve."""
    handshake = Socks5Connect(_socks(), host, 3478)
    assert handshake.start() == b"\x05\x01\x00"
    assert handshake.receive_data(b"\x05") == b""  # (half an answer: wait)
    assert handshake.receive_data(b"\x00") == b"\x05\x01\x00" + address + b"\x0d\x96"
    assert not handshake.open
    assert handshake.receive_data(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04") == b""
    assert not handshake.open
    assert handshake.receive_data(b"\x38") == b""
    assert handshake.open and handshake.rest == b""


def test_a_socks5_proxy_that_wants_no_credentials_though_offered_them() -> None:
    handshake = Socks5Connect(_socks("bob:pw@"), "198.51.100.2", 443)
    handshake.start()
    assert handshake.receive_data(b"\x05\x00") == b"\x05\x01\x00\x01\xc6\x33\x64\x02\x01\xbb"


def test_a_socks5_connect_with_credentials_and_a_named_bound_address() -> None:
    handshake = Socks5Connect(_socks("bob:s%40cret@"), "198.51.100.2", 443)
    assert handshake.start() == b"\x05\x02\x00\x02"  # (no authentication, or these)
    assert handshake.receive_data(b"\x05\x02") == b"\x01\x03bob\x06s@cret"
    connect = handshake.receive_data(b"\x01\x00")
    assert connect == b"\x05\x01\x00\x01\xc6\x33\x64\x02\x01\xbb"
    answer = b"\x05\x00\x00\x03\x05proxy\x12\x34" + b"early"
    assert handshake.receive_data(answer) == b""
    assert handshake.open and handshake.rest == b"early"


@pytest.mark.parametrize(
    ("answers", "error", "problem"),
    [
        ([b"\x05\xff"], ProxyRefused, "no authentication method"),
        ([b"\x04\x00"], ProtocolError, "not SOCKS5"),
        ([b"\x05\x02"], ProtocolError, "method 2, which was not offered"),
        ([b"\x05\x01"], ProtocolError, "method 1, which was not offered"),
        ([b"\x05\x00", b"\x05\x02\x00\x01" + bytes(6)], ProxyRefused, "not allowed by ruleset"),
        ([b"\x05\x00", b"\x05\x05\x00\x01" + bytes(6)], ProxyRefused, "connection refused"),
        ([b"\x05\x00", b"\x05\x63\x00\x01" + bytes(6)], ProxyRefused, "SOCKS5 reply 99"),
        ([b"\x05\x00", b"\x05\x00\x00\x09" + bytes(6)], ProtocolError, "address type 9"),
        ([b"\x05\x00", b"HTTP/1.1 400 Bad"], ProtocolError, "not a SOCKS5 reply"),
    ],
)
def test_what_a_socks5_proxy_refuses_or_garbles(
    answers: list[bytes], error: type[Exception], problem: str
) -> None:
    handshake = Socks5Connect(_socks(), "198.51.100.2", 3478)
    handshake.start()
    with pytest.raises(error, match=problem):
        for answer in answers:
            handshake.receive_data(answer)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [(b"\x01\x01", "were refused"), (b"\x05\x00", "not a SOCKS5 authentication answer")],
)
def test_a_socks5_proxy_that_refuses_the_credentials(answer: bytes, problem: str) -> None:
    handshake = Socks5Connect(_socks("bob:pw@"), "198.51.100.2", 3478)
    handshake.start()
    handshake.receive_data(b"\x05\x02")
    with pytest.raises(ProtocolError, match=problem):
        handshake.receive_data(answer)


@given(
    st.lists(st.binary(max_size=12), max_size=6),
    st.sampled_from(["", "bob:pw@"]),
)
def test_any_socks5_answers_open_the_tunnel_wait_or_are_a_protocol_error(
    answers: list[bytes], credentials: str
) -> None:
    handshake = Socks5Connect(_socks(credentials), "turn.example.org", 3478)
    handshake.start()
    try:
        for answer in answers:
            assert isinstance(handshake.receive_data(answer), bytes)
    except ProtocolError:
        return


@given(st.integers(0, 30), st.binary(max_size=5))
def test_socks5_answers_read_in_any_two_parts_are_the_same(cut: int, rest: bytes) -> None:
    answers = b"\x05\x02" + b"\x01\x00" + b"\x05\x00\x00\x04" + bytes(16) + b"\x00\x50" + rest
    sent = []
    handshake = Socks5Connect(_socks("bob:pw@"), "198.51.100.2", 3478)
    handshake.start()
    for part in (answers[:cut], answers[cut:]):
        sent.append(handshake.receive_data(part))
    assert b"".join(sent) == b"\x01\x03bob\x02pw" + b"\x05\x01\x00\x01\xc6\x33\x64\x02\x0d\x96"
    assert handshake.open and handshake.rest == rest


def test_the_handshake_follows_the_scheme() -> None:
    assert isinstance(tunnel_handshake(_socks(), "h", 1), Socks5Connect)
    http = tunnel_handshake(trice.ProxyUrl.parse("http://p:1"), "h", 1)
    assert isinstance(http, HttpConnect)
    assert http.start() == b"CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n"
    with pytest.raises(ProxyRefused, match=r"^407 Nope$"):
        http.receive_data(b"HTTP/1.1 407 Nope\r\n\r\n")


# -- proxies of the test's own that misbehave ---------------------------------------------------

Behaviour = Callable[[trio.SocketStream], Awaitable[None]]


async def _answer(data: bytes, stream: trio.SocketStream) -> None:
    await stream.send_all(data)
    await trio.sleep_forever()


async def _close(stream: trio.SocketStream) -> None:
    await stream.aclose()


async def _silent(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


@asynccontextmanager
async def _fake_proxy(behave: Behaviour) -> AsyncIterator[tuple[int, list[bytes], trio.Event]]:
    """A proxy that reads the request's head, then does ``behave``: its port, the heads it
    read, and an event set once a client closed its side."""
    heads: list[bytes] = []
    closed = trio.Event()

    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        heads.append(data)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(behave, stream)
            try:
                while await stream.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass
            except trio.ClosedResourceError:
                return  # (behave closed it)
            closed.set()
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        )
        yield listener.socket.getsockname()[1], heads, closed
        nursery.cancel_scope.cancel()


def _proxied(
    proxy: str | trice.ProxyUrl, server: trice.IceServer, *, gather_timeout: float = 3.0
) -> trice.AgentConfig:
    """A relay-only agent on loopback whose TURN server is ``server``, through ``proxy``."""
    config = loopback_config(
        ice_servers=[server],
        transport_policy=trice.TransportPolicy.RELAY,
        timing=trice.Timing(gather_timeout=gather_timeout),
    )
    if isinstance(proxy, str):
        proxy = trice.ProxyUrl.parse(proxy)  # (replace is typed by the fields: a ProxyUrl)
    return dataclasses.replace(config, network=dataclasses.replace(config.network, proxy=proxy))


def _dead_turn() -> trice.IceServer:
    """A TURN server over TCP where nothing listens."""
    return trice.IceServer(f"turn:127.0.0.1:{free_port()}?transport=tcp", USER, PASSWORD)


async def _relay_report(config: trice.AgentConfig) -> trice.GatherReport:
    """Gather with ``config`` (one TURN server): the relay's report, once gathering is
    complete (within the gather timeout and a second)."""
    async with trice.open_agent(config, controlling=True) as agent:
        with trio.fail_after(config.timing.gather_timeout + 1):
            await agent.wait_gathering_complete()
        (report,) = [r for r in agent.gather_reports if r.source != "host"]
        assert [c.type for c in agent.local_candidates] == []
        return report


@pytest.mark.parametrize(
    ("behave", "error"),
    [
        (
            functools.partial(_answer, b"HTTP/1.1 403 Forbidden\r\nX: y\r\n\r\n"),
            "proxy refused: 403 Forbidden",
        ),
        (functools.partial(_answer, b"SSH-2.0-OpenSSH_9.2\r\n"), "proxy answered what is not HTTP"),
        (_close, "proxy closed the connection"),
        (
            functools.partial(_answer, b"HTTP/1.1 200 OK\r\n\r\nHELLO"),
            "proxy sent data before the tunnel was used",
        ),
        (
            functools.partial(_answer, b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 4000),
            "proxy answered with no end of its head",
        ),
        (_silent, "proxy timeout"),
    ],
    ids=["refuses", "not-http", "closes", "data-first", "endless-head", "silent"],
)
async def test_a_proxy_that_misbehaves_costs_the_relay_only(behave: Behaviour, error: str) -> None:
    """The proxy refuses, answers what is not HTTP, closes, sends data before the tunnel is
    used, sends a head with no end, or says nothing: no relay candidate, a report that says
    what the proxy did (or the timeout), within the gather timeout; the agent asked for a
    tunnel to the TURN server, and closed its connection to the proxy."""
    turn = _dead_turn()
    async with _fake_proxy(behave) as (port, heads, closed):
        config = _proxied(f"http://127.0.0.1:{port}", turn, gather_timeout=1.0)
        report = await _relay_report(config)
        assert report.error is not None and report.error.startswith(error), report
        assert [h.split(b"\r\n")[0] for h in heads] == [
            b"CONNECT 127.0.0.1:%d HTTP/1.1" % turn.urls[0].port
        ]
        if behave is not _close:
            with trio.fail_after(2):
                await closed.wait()


async def _socks_answers(answers: list[bytes], stream: trio.SocketStream) -> None:
    """A SOCKS5 proxy of the test's own: to each message of the client (the greeting, then
    the request), the next of ``answers``; when they run out, it closes once the client's
    next message came (or the client closed: a close before would race that message, and
    the client could see a reset instead)."""
    for answer in answers:
        if not await stream.receive_some(4096):
            return
        await stream.send_all(answer)
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.receive_some(4096)
    await stream.aclose()


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        ([b"\x05\x00", b"\x05\x02\x00\x01" + bytes(6)], "proxy refused: connection not allowed"),
        ([b"\x05\xff"], "proxy refused: no authentication method offered is acceptable"),
        ([b"\x05\x00"], "proxy closed the connection"),
        ([b"\x05\x00", b"\x05\x00\x00\x07" + bytes(6)], "proxy answered a SOCKS5 reply of"),
        ([b"HTTP/1.1 400 Bad Request\r\n\r\n"], "proxy answered what is not SOCKS5"),
    ],
    ids=["refuses", "no-method", "closes", "bad-address-type", "http"],
)
async def test_a_socks5_proxy_that_misbehaves_costs_the_relay_only(
    answers: list[bytes], error: str
) -> None:
    """What a SOCKS5 proxy does wrong is reported as it was, and costs the relay only."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(_socks_answers, answers)
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        report = await _relay_report(_proxied(f"socks5://127.0.0.1:{port}", _dead_turn()))
        assert report.error is not None and report.error.startswith(error), report
        nursery.cancel_scope.cancel()


async def test_a_proxy_that_is_not_there() -> None:
    report = await _relay_report(_proxied(f"http://127.0.0.1:{free_port()}", _dead_turn()))
    assert report.error is not None and report.error.startswith("proxy unreachable"), report


# -- a real proxy (tinyproxy) in front of a real TURN server (coturn) ---------------------------


Proxy = Tinyproxy | HttpsProxy | Microsocks


def _through(proxy: Proxy, server: trice.IceServer, credentials: str = "") -> trice.AgentConfig:
    url: str | trice.ProxyUrl = proxy.url(credentials)
    if isinstance(proxy, HttpsProxy):
        url = trice.ProxyUrl.parse(proxy.url(credentials), ssl_context=proxy.tls_context())
    return _proxied(url, server, gather_timeout=5.0)


@contextlib.contextmanager
def _proxy(kind: str, port: int) -> Iterator[Proxy]:
    """A real proxy of ``kind`` (``"http"``: tinyproxy, ``"https"``: tinyproxy behind
    stunnel, ``"socks5"``: microsocks) that lets clients reach ``port``."""
    if kind == "http":
        with run_tinyproxy([port]) as tinyproxy:
            yield tinyproxy
    elif kind == "https":
        with run_https_proxy([port]) as https_proxy:
            yield https_proxy
    else:
        with run_microsocks() as microsocks:
            yield microsocks


@pytest.mark.parametrize(
    ("kind", "transport"),
    [
        ("http", "tcp"),
        ("http", "tls"),
        ("http", "udp"),
        ("https", "tcp"),
        ("https", "tls"),
        ("socks5", "tcp"),
        ("socks5", "tls"),
    ],
)
async def test_a_relay_only_session_through_a_real_proxy(kind: str, transport: str) -> None:
    """Both agents reach coturn through tinyproxy (HTTP CONNECT), tinyproxy behind stunnel
    (an HTTPS proxy: TLS to the proxy, whose certificate is checked, then CONNECT inside)
    or microsocks (SOCKS5), over TCP or TLS (the TLS handshake runs inside the tunnel, and
    checks coturn's certificate: TLS inside TLS through the HTTPS proxy), and 100 datagrams
    go each way through the relays.  coturn saw them at the proxy's outbound address (their
    relays' related address).  TURN over UDP goes to coturn directly: the proxy reads
    nothing."""
    require_turnserver()
    with run_coturn(tls=True, tls_names=("localhost",)) as coturn:
        # (By name: the certificate, of that name only, is checked against the TURN
        # server's name, not against the proxy's address.)
        server = coturn.ice_server(
            transport, host="localhost" if transport == "tls" else "127.0.0.1"
        )
        target = (server.urls[0].host, server.urls[0].port)
        with _proxy(kind, target[1]) as proxy:
            config = _through(proxy, server)
            async with gathered_pair(config) as (a, b):
                for agent in (a, b):
                    ((relay, _),) = agent._core.local_candidates  # (not signalled so)
                    assert relay.type is trice.CandidateType.RELAY
                    via = "127.0.0.1" if transport == "udp" else OUTBOUND
                    assert relay.related_address == via  # (where coturn saw the agent)
                signal(a, b)
                ca, cb = await connect_both(a, b)
                await exchange_each_way(ca, cb)
            if isinstance(proxy, (Tinyproxy, HttpsProxy)):
                tunnels = proxy.requests()
                assert tunnels == ([] if transport == "udp" else [f"{target[0]}:{target[1]}"] * 2)


async def _relay_through(
    proxy: Proxy | trice.AgentConfig, server: trice.IceServer, credentials: str = ""
) -> trice.GatherReport:
    """The relay's gather report of an agent that reaches ``server`` through ``proxy`` (or
    of an agent of that configuration)."""
    config = proxy if isinstance(proxy, trice.AgentConfig) else _through(proxy, server, credentials)
    async with trice.open_agent(config, controlling=True) as agent:
        with trio.fail_after(7):
            await agent.wait_gathering_complete()
        (report,) = [r for r in agent.gather_reports if r.source != "host"]
        return report


@pytest.mark.parametrize(
    ("kind", "credentials", "error"),
    [
        ("http", "", "proxy refused: 407 Proxy Authentication Required"),
        ("http", "alice:wrong@", "proxy refused: 401 Unauthorized"),  # (tinyproxy's answer)
        ("http", "alice:%73esame42@", None),  # (percent-encoded: "s")
        ("socks5", "", "proxy refused: no authentication method offered is acceptable"),
        ("socks5", "alice:wrong@", "proxy refused: the user name and password were refused"),
        ("socks5", "alice:%73esame42@", None),
    ],
    ids=["http-none", "http-wrong", "http-right", "socks5-none", "socks5-wrong", "socks5-right"],
)
async def test_a_proxy_that_wants_credentials(
    kind: str, credentials: str, error: str | None
) -> None:
    """tinyproxy with Basic authentication (without credentials it answers 407, with wrong
    ones 401) and microsocks with RFC 1929's (no method acceptable without them; wrong ones
    refused): the report names the refusal; with the right credentials, the relay is
    allocated through the proxy."""
    require_turnserver()
    with contextlib.ExitStack() as stack:
        coturn = stack.enter_context(run_coturn())
        proxy: Tinyproxy | Microsocks
        if kind == "http":
            proxy = stack.enter_context(
                run_tinyproxy([coturn.port], basic_auth=("alice", "sesame42"))
            )
        else:
            proxy = stack.enter_context(run_microsocks(credentials=("alice", "sesame42")))
        report = await _relay_through(proxy, coturn.ice_server("tcp"), credentials)
    assert (report.candidates, report.error) == ((1, None) if error is None else (0, error))


async def test_an_https_proxy_whose_certificate_is_not_trusted() -> None:
    """An HTTPS proxy is checked as a TLS server is: with the system's authorities only
    (no ``ssl_context``), stunnel's certificate from a test CA is rejected, and the report
    says so; the relay is lost, the agent not."""
    require_turnserver()
    with run_coturn() as coturn, run_https_proxy([coturn.port]) as proxy:
        server = coturn.ice_server("tcp")
        report = await _relay_through(_proxied(proxy.url(), server), server)
        assert proxy.requests() == []  # (no CONNECT went)
    assert report.candidates == 0
    assert report.error is not None
    assert report.error.startswith("proxy TLS certificate rejected: "), report


def test_an_https_proxys_tls_context() -> None:
    """``ssl_context`` checks an HTTPS proxy's certificate: for that scheme only, an
    ``ssl.SSLContext``; neither shown nor compared."""
    context = ssl.create_default_context()
    proxy = trice.ProxyUrl.parse("https://proxy.example:443", ssl_context=context)
    assert proxy.ssl_context is context
    assert proxy == trice.ProxyUrl.parse("https://proxy.example:443")
    assert "ssl_context" not in repr(proxy) and str(proxy) == "https://proxy.example:443"
    with pytest.raises(trice.ConfigError, match="for an https:// proxy only"):
        trice.ProxyUrl.parse("http://proxy.example:3128", ssl_context=context)
    with pytest.raises(trice.ConfigError, match=r"must be an ssl\.SSLContext"):
        trice.ProxyUrl("https", "proxy.example", 443, ssl_context="yes")  # type: ignore[arg-type]
    # A server's context makes no client: refused here (it raised ssl.SSLError out of the
    # agent, the proxy's connection left open).
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(trice.ConfigError, match="PROTOCOL_TLS_SERVER"):
        trice.ProxyUrl.parse("https://proxy.example:443", ssl_context=server_side)


async def test_a_proxy_whose_rules_forbid_the_port() -> None:
    """tinyproxy opens tunnels only to the ports it allows (``ConnectPort``): to any other,
    it refuses, and the report says so."""
    require_turnserver()
    with run_coturn() as coturn, run_tinyproxy([443]) as proxy:
        report = await _relay_through(proxy, coturn.ice_server("tcp"))
    assert report.candidates == 0
    assert report.error is not None and report.error.startswith("proxy refused: 403")


async def test_a_socks5_proxy_that_cannot_reach_the_server() -> None:
    """microsocks finds nothing listening at the TURN server's address: it replies so
    (RFC 1928 §6), and the report says what it replied."""
    with run_microsocks() as proxy:
        report = await _relay_through(proxy, _dead_turn())
    assert report.candidates == 0
    assert report.error == "proxy refused: connection refused", report  # (REP 5)


def test_trice_gather_through_a_proxy() -> None:
    """``trice gather --proxy``: the relay comes through tinyproxy; a URL that is not a
    proxy's is refused with the reason, before anything is gathered."""
    require_turnserver()
    with run_coturn() as coturn, run_tinyproxy([coturn.port]) as proxy:
        url = f"turn:127.0.0.1:{coturn.port}?transport=tcp"
        argv = [sys.executable, "-m", "trice", "gather", "--interface", "lo", "--json"]
        argv += ["--turn", url, "--username", USER, "--credential", PASSWORD]
        out = subprocess.run(
            [*argv, "--proxy", proxy.url()], capture_output=True, text=True, timeout=60, check=True
        )
        records = [json.loads(line) for line in out.stdout.splitlines()]
        (source,) = [r for r in records if r["event"] == "source" and r["source"] == url]
        assert (source["candidates"], source["error"]) == (1, None)
        assert proxy.requests() == [f"127.0.0.1:{coturn.port}"]
    bad = subprocess.run(
        [*argv, "--proxy", "socks4://127.0.0.1:1080"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "'socks4' is not supported" in bad.stderr
    # From the environment (where a password stays out of ps), and never shown in an error.
    env = {**os.environ, "TRICE_PROXY": "http://alice:top@secret@127.0.0.1"}
    hidden = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert hidden.returncode == 2
    assert "proxy URL 'http://...@127.0.0.1': no port" in hidden.stderr
    assert "secret" not in hidden.stderr + hidden.stdout


@pytest.mark.parametrize("scheme", ["socks5", "http"])
def test_proxy_credentials_utf8_cannot_carry_are_a_config_error(scheme: str) -> None:
    """A lone surrogate (what os.environ makes of non-UTF-8 bytes in $TRICE_PROXY) in the
    user name or password: ConfigError (SOCKS5 raised UnicodeEncodeError; HTTP took it,
    and the agent's gathering raised it later)."""
    for username, password in (("u\udcff", "p"), ("u", "p\udcff")):
        with pytest.raises(trice.ConfigError, match="UTF-8"):
            trice.ProxyUrl(scheme, "127.0.0.1", 1080, username=username, password=password)
