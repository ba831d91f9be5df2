"""Rules of the proxy handshakes (trice/_proxy.py) that the other proxy tests did not pin
(found by a mutation review; each test here kills a mutant the rest of the suite let
through): the longest SOCKS5 user name, which HTTP status opens a tunnel, the bounds of the
proxy's answer (its head's length, its reason phrase, the bytes that tell it is not HTTP),
an answer's end split across two reads, and the version and reserved bytes of SOCKS5's
answers.  Pure parsing: no sockets."""

from __future__ import annotations

import pytest

import trice
from trice._errors import ProtocolError
from trice._proxy import (
    MAX_REPLY_HEAD,
    HttpConnect,
    ProxyRefused,
    Socks5Connect,
    read_connect_reply,
)

# -- the proxy's URL -------------------------------------------------------------------------


def test_a_socks5_user_name_of_255_bytes_is_allowed() -> None:
    """RFC 1929: ULEN is 1 to 255, so a user name of 255 bytes is taken and one of 256
    refused (mutant: ``len(username) < 255``)."""
    proxy = trice.ProxyUrl("socks5", "127.0.0.1", 1080, "u" * 255, "p")
    assert proxy.username == "u" * 255
    with pytest.raises(trice.ConfigError):
        trice.ProxyUrl("socks5", "127.0.0.1", 1080, "u" * 256, "p")


# -- the answer to HTTP CONNECT --------------------------------------------------------------


def _http() -> HttpConnect:
    return HttpConnect(trice.ProxyUrl.parse("http://127.0.0.1:3128"), "127.0.0.1", 3478)


def test_a_300_answer_to_connect_is_a_refusal() -> None:
    """Only a 2xx answer opens the tunnel (RFC 9110 §9.3.6): 300 is a refusal (mutant:
    ``status <= 300``)."""
    reply = read_connect_reply(b"HTTP/1.1 300 Multiple Choices\r\n\r\n")
    assert reply is not None and not reply.ok
    with pytest.raises(ProxyRefused, match="300"):
        _http().receive_data(b"HTTP/1.1 300 Multiple Choices\r\n\r\n")


def test_a_head_that_ends_exactly_at_the_limit_is_read() -> None:
    """A head whose end is at MAX_REPLY_HEAD is within it (mutant: ``end >= MAX``)."""
    status = b"HTTP/1.1 200 OK\r\n"
    filler = b"X-Pad: " + b"a" * (MAX_REPLY_HEAD - len(status) - 7)
    head = status + filler
    assert len(head) == MAX_REPLY_HEAD
    reply = read_connect_reply(head + b"\r\n\r\n")
    assert reply is not None and reply.ok


def test_a_partial_head_one_byte_past_the_limit_is_refused() -> None:
    """A head not yet whole that holds more than MAX_REPLY_HEAD bytes is an error at once,
    one byte past the limit (mutant: ``> MAX_REPLY_HEAD + 1``)."""
    data = b"HTTP/1.1 200 OK\r\n" + b"a" * (MAX_REPLY_HEAD + 1 - 17)
    assert len(data) == MAX_REPLY_HEAD + 1
    with pytest.raises(ProtocolError, match="no end of its head"):
        read_connect_reply(data)


def test_the_reason_phrase_is_cut_at_100_characters() -> None:
    """A long reason phrase is kept to its first 100 characters (mutant: ``[:101]``)."""
    reply = read_connect_reply(b"HTTP/1.1 403 " + b"r" * 150 + b"\r\n\r\n")
    assert reply is not None and reply.reason == "r" * 100


def test_five_bytes_that_are_not_http_are_refused_at_once() -> None:
    """Five bytes are enough to tell an answer is not HTTP (``HTTP/``), and it is refused
    then, not after a sixth (mutant: ``len(data) > 5``)."""
    with pytest.raises(ProtocolError, match="not HTTP"):
        read_connect_reply(b"SSH-2")


def test_a_head_end_split_after_three_of_its_bytes_is_found() -> None:
    """The search for the blank line starts three bytes back in what came before: an end
    split as ``\\r\\n\\r`` + ``\\n`` is found, and the tunnel opens (mutant: one byte back:
    the end is missed, and with a proxy that then waits for the client to speak the tunnel
    hangs).  (Two bytes back is the same as three: ``\\n\\r\\n`` ends a head too.)"""
    http = _http()
    assert http.receive_data(b"HTTP/1.1 200 Connection established\r\n\r") == b""
    assert not http.open
    http.receive_data(b"\n")
    assert http.open


# -- the answers of a SOCKS5 proxy -----------------------------------------------------------


def _socks5_after_greeting(credentials: bool = False) -> Socks5Connect:
    url = "socks5://alice:secret@127.0.0.1:1080" if credentials else "socks5://127.0.0.1:1080"
    socks = Socks5Connect(trice.ProxyUrl.parse(url), "198.51.100.2", 3478)
    socks.start()
    return socks


def test_a_socks5_reply_with_its_reserved_byte_set_is_not_socks5() -> None:
    """RFC 1928 §6: RSV is X'00'; a reply with it set is not a SOCKS5 reply (mutant: RSV
    not checked)."""
    socks = _socks5_after_greeting()
    socks.receive_data(b"\x05\x00")
    with pytest.raises(ProtocolError, match="not a SOCKS5 reply"):
        socks.receive_data(b"\x05\x00\x01\x01" + bytes(4) + b"\x00\x00")


def test_a_socks5_auth_answer_of_version_0_is_not_rfc_1929() -> None:
    """RFC 1929: the answer's VER is X'01'; version 0 is not an RFC 1929 answer (mutant:
    ``data[0] > 1``)."""
    socks = _socks5_after_greeting(credentials=True)
    socks.receive_data(b"\x05\x02")
    with pytest.raises(ProtocolError, match="RFC 1929"):
        socks.receive_data(b"\x00\x00")
