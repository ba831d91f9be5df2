"""Unit tests: RFC 7983 classifier, ChannelData, stream framing, retransmission schedule,
SASLprep and keys, and the purity of trice.stun (no trio, socket or time)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st

from trice import stun
from trice._errors import StateError
from trice.stun._integrity import secret_problem

# --- classifier (RFC 7983, RFC 9443) ------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (0, stun.PacketKind.STUN),
        (3, stun.PacketKind.STUN),
        (4, stun.PacketKind.OTHER),
        (15, stun.PacketKind.OTHER),
        (16, stun.PacketKind.ZRTP),
        (19, stun.PacketKind.ZRTP),
        (20, stun.PacketKind.DTLS),
        (63, stun.PacketKind.DTLS),
        (64, stun.PacketKind.TURN_CHANNEL),
        (79, stun.PacketKind.TURN_CHANNEL),
        (80, stun.PacketKind.QUIC),
        (127, stun.PacketKind.QUIC),
        (128, stun.PacketKind.RTP),
        (191, stun.PacketKind.RTP),
        (192, stun.PacketKind.QUIC),
        (255, stun.PacketKind.QUIC),
    ],
)
def test_classify(first: int, kind: stun.PacketKind) -> None:
    assert stun.classify(bytes((first, 0, 0, 0))) is kind


def test_classify_empty_and_is_stun() -> None:
    assert stun.classify(b"") is stun.PacketKind.OTHER
    request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST).encode()
    assert stun.is_stun(request)
    assert not stun.is_stun(request[:19])
    assert not stun.is_stun(b"\x40" + request[1:])
    assert not stun.is_stun(request[:4] + b"\x00\x00\x00\x00" + request[8:])  # RFC 3489
    assert stun.classify(stun.encode_channel_data(0x4000, b"x")) is stun.PacketKind.TURN_CHANNEL


# --- ChannelData (RFC 8656 §12) ---------------------------------------------------------------


def test_channel_data_round_trip() -> None:
    frame = stun.encode_channel_data(0x4001, b"hello")
    assert frame == b"\x40\x01\x00\x05hello"
    assert stun.decode_channel_data(frame) == (0x4001, b"hello")
    padded = stun.encode_channel_data(0x4FFF, b"hello", pad=True)
    assert padded == b"\x4f\xff\x00\x05hello\x00\x00\x00"
    assert stun.decode_channel_data(padded) == (0x4FFF, b"hello")
    assert stun.encode_channel_data(0x4000, b"abcd", pad=True) == b"\x40\x00\x00\x04abcd"
    assert stun.decode_channel_data(b"\x40\x00\x00\x00") == (0x4000, b"")


def test_the_demux_functions_take_a_receive_buffer() -> None:
    """A bytearray or memoryview of a receive buffer goes where bytes go (and the lint's
    mypy checks these calls as a user's): what comes back is bytes, not a view of the
    buffer to be overwritten."""
    request = stun.Message(
        stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=[stun.Username("a:b")]
    ).encode(fingerprint=True)
    frame = stun.encode_channel_data(0x4001, memoryview(b"hello"))
    for buffer in (bytearray(request), memoryview(request)):
        assert stun.classify(buffer) is stun.PacketKind.STUN
        assert stun.peek_type(buffer) == 0x0001
        username = stun.peek_username(buffer)
        assert username == b"a:b" and type(username) is bytes
    for channel_data in (bytearray(frame), memoryview(frame)):
        assert stun.decode_channel_data(channel_data) == (0x4001, b"hello")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x40\x00\x00", "shorter"),
        (b"\x3f\xff\x00\x00", "outside"),
        (b"\x50\x00\x00\x00", "outside"),
        (b"\x40\x00\x00\x05abcd", "overruns"),
        (b"\x40\x00\x00\x01abcde", "more than padding"),
    ],
)
def test_channel_data_malformed(data: bytes, match: str) -> None:
    with pytest.raises(stun.StunDecodeError, match=match):
        stun.decode_channel_data(data)


def test_channel_data_encode_validation() -> None:
    with pytest.raises(ValueError, match="0x4000"):
        stun.encode_channel_data(0x3FFF, b"")
    with pytest.raises(ValueError, match="0x4000"):
        stun.encode_channel_data(0x5000, b"")
    with pytest.raises(ValueError, match="65535"):
        stun.encode_channel_data(0x4000, bytes(0x10000))


def test_frame_length_over_a_stream() -> None:
    message = stun.Message(
        stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=(stun.Software("x"),)
    ).encode(fingerprint=True)
    channel = stun.encode_channel_data(0x4002, b"abcde", pad=True)
    stream = message + channel + message[:10]
    assert stun.frame_length(b"") is None
    assert stun.frame_length(stream[:3]) is None
    assert stun.frame_length(stream[: len(message) - 1]) is None
    assert stun.frame_length(stream) == len(message)
    rest = stream[len(message) :]
    assert stun.frame_length(rest) == len(channel) == 12
    assert stun.frame_length(rest[:11]) is None
    assert stun.frame_length(rest[len(channel) :]) is None  # an incomplete STUN message
    assert stun.frame_length(bytearray(channel)) == 12
    assert stun.frame_length(memoryview(channel)) == 12
    with pytest.raises(stun.StunDecodeError):
        stun.frame_length(b"\x80\x00\x00\x00")
    with pytest.raises(stun.StunDecodeError):
        stun.frame_length(b"\xc0")
    with pytest.raises(stun.StunDecodeError):
        stun.frame_length(b"\x00\x01\x00\x05")


# --- retransmission schedule (RFC 8489 §6.2.1) ------------------------------------------------


def run_schedule(
    schedule: stun.RetransmissionSchedule, start: float = 0.0
) -> tuple[list[float], float]:
    """Drive a schedule in virtual time with no response: (send times, failure time)."""
    now = start
    sends = [now]
    deadline: float | None = schedule.start(now)
    while True:
        assert deadline is not None
        now = deadline
        deadline = schedule.on_timeout(now)
        if deadline is None:
            return sends, now
        sends.append(now)


def test_udp_schedule_defaults() -> None:
    schedule = stun.RetransmissionSchedule()
    sends, failed = run_schedule(schedule)
    assert sends == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert failed == 39.5
    assert schedule.sends == 7
    assert schedule.total_timeout == 39.5
    assert schedule.deadline is None
    assert schedule.on_timeout(50.0) is None  # stays failed


def test_udp_schedule_custom_and_offset() -> None:
    sends, failed = run_schedule(stun.RetransmissionSchedule(rto=0.1, rc=3, rm=4), start=100.0)
    assert sends == pytest.approx([100.0, 100.1, 100.3])
    assert failed == pytest.approx(100.7)
    assert stun.RetransmissionSchedule(rto=0.1, rc=3, rm=4).total_timeout == pytest.approx(0.7)


def test_udp_schedule_single_send_and_cap() -> None:
    assert run_schedule(stun.RetransmissionSchedule(rto=1.0, rc=1, rm=2)) == ([0.0], 2.0)
    sends, failed = run_schedule(stun.RetransmissionSchedule(rto=1.0, rc=5, rm=3, max_rto=2.5))
    assert sends == [0.0, 1.0, 3.0, 5.5, 8.0]
    assert failed == 11.0
    assert stun.RetransmissionSchedule(rto=1.0, rc=5, rm=3, max_rto=2.5).total_timeout == 11.0


def test_late_timeouts_count_from_now() -> None:
    schedule = stun.RetransmissionSchedule()
    assert schedule.start(0.0) == 0.5
    assert schedule.on_timeout(0.7) == pytest.approx(1.7)  # woken late: interval from now


def test_reliable_schedule() -> None:
    schedule = stun.RetransmissionSchedule(reliable=True, ti=39.5)
    assert run_schedule(schedule) == ([0.0], 39.5)
    assert schedule.total_timeout == 39.5
    assert run_schedule(stun.RetransmissionSchedule(reliable=True, ti=5.0), start=1.0) == (
        [1.0],
        6.0,
    )


def test_schedule_misuse() -> None:
    schedule = stun.RetransmissionSchedule()
    with pytest.raises(StateError):
        schedule.on_timeout(0.0)
    schedule.start(0.0)
    with pytest.raises(StateError):
        schedule.start(1.0)
    for bad in (
        {"rto": 0},
        {"rto": float("inf")},
        {"rc": 0},
        {"rm": -1},
        {"ti": 0},
        {"max_rto": 0},
    ):
        with pytest.raises(ValueError):
            stun.RetransmissionSchedule(**bad)
    assert "rto=0.5" in repr(schedule)


# --- SASLprep (RFC 4013) and keys -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "prepared"),
    [
        # RFC 4013 §3 examples
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        # more mapping
        ("a\u00a0b", "a b"),  # non-ASCII space -> SPACE
        ("a\u200bb", "ab"),  # zero-width space maps to nothing
        ("The\u00adM\u00aatr\u2168", "TheMatrIX"),  # RFC 5769 §2.4
        ("", ""),
        ("\u0627\u0644\u0639", "\u0627\u0644\u0639"),  # all right-to-left: fine
    ],
)
def test_saslprep(given: str, prepared: str) -> None:
    assert stun.saslprep(given) == prepared


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("\u0007", "control"),  # RFC 4013 §3 example
        ("\u0627\u0031", "right-to-left"),  # RFC 4013 §3 example
        ("a\u0627", "mixes|right-to-left"),
        ("\ue000", "private use"),
        ("\ufffe", "non-character"),
        ("\u202e", "change display"),
        ("\U000e0001", "tagging"),
        ("\u0221", "unassigned"),  # unassigned in Unicode 3.2
    ],
)
def test_saslprep_prohibited(given: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stun.saslprep(given)


def test_saslprep_allow_unassigned() -> None:
    assert stun.saslprep("\u0221", allow_unassigned=True) == "\u0221"


def test_a_long_term_key_as_written_differs_from_saslprep_only_where_it_maps() -> None:
    """``prepare=str``: the realm and password as written, as coturn and Pion make their
    keys; SASLprep maps a fullwidth letter to its ASCII one."""
    assert stun.long_term_key("u", "r", "pass", prepare=str) == stun.long_term_key("u", "r", "pass")
    fullwidth = "\uff57\uff4f\uff4e"
    assert stun.long_term_key("u", "r", fullwidth, prepare=str) == (
        hashlib.md5(f"u:r:{fullwidth}".encode()).digest()
    )
    assert stun.long_term_key("u", "r", fullwidth) == hashlib.md5(b"u:r:won").digest()
    assert stun.long_term_key("u", "", "pass", prepare=str) == hashlib.md5(b"u::pass").digest()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pass", None),
        ("\uff57\uff4f\uff4e", None),
        ("\u0d28\u0d4d\u200d", None),  # (a ZWJ after a virama: Malayalam's chillu)
        ("wonder\u00a0land", None),
        ("bad\u0007", "a control or surrogate code point U+0007 at index 3"),
        ("\ud800", "a control or surrogate code point U+D800 at index 0"),
    ],
)
def test_what_no_turn_key_can_be_made_of(text: str, problem: str | None) -> None:
    assert secret_problem(text) == problem


def test_keys() -> None:
    assert stun.short_term_key("pass") == b"pass"
    assert stun.short_term_key("I\u00adX") == b"IX"
    expected = hashlib.sha256(b"user:realm:pass").digest()
    assert stun.long_term_key("user", "realm", "pass", stun.PasswordAlgorithmId.SHA256) == expected
    assert stun.long_term_key("user", "realm", "pass", stun.PasswordAlgorithm.SHA256) == expected
    assert stun.long_term_key("user", "realm", "pass") == hashlib.md5(b"user:realm:pass").digest()
    with pytest.raises(ValueError, match="algorithm"):
        stun.long_term_key("user", "realm", "pass", 99)
    with pytest.raises(ValueError):
        stun.short_term_key("bad\u0007")
    assert stun.user_hash("user", "realm") == hashlib.sha256(b"user:realm").digest()


def test_hmac_matches_stdlib_for_all_key_sizes() -> None:
    import hmac

    from trice.stun._integrity import hmac_sha1, hmac_sha256

    for size in (0, 1, 16, 20, 32, 64, 65, 200):
        key = bytes(range(size % 256)) * (size // 256 + 1)
        key = key[:size]
        for data in (b"", b"abc", bytes(1000)):
            assert hmac_sha1(key, data) == hmac.digest(key, data, "sha1")
            assert hmac_sha256(key, data) == hmac.digest(key, data, "sha256")


# --- purity -----------------------------------------------------------------------------------


def test_stun_imports_without_trio_socket_or_time() -> None:
    """trice.stun is pure: it imports with trio, socket, asyncio, time and ifaddr blocked.

    ``trice/__init__.py`` re-exports the trio shell, so the check loads ``trice`` as a bare
    package (no ``__init__``) and imports ``trice.stun`` beneath it.
    """
    trice_dir = Path(__file__).resolve().parents[1] / "trice"
    code = textwrap.dedent(
        f"""
        import sys, types
        for name in ("trio", "socket", "asyncio", "time", "ifaddr", "select", "selectors"):
            sys.modules[name] = None
        package = types.ModuleType("trice")
        package.__path__ = [{str(trice_dir)!r}]
        sys.modules["trice"] = package
        import trice.stun as stun
        key = stun.short_term_key("pw")
        data = stun.Message(
            stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=(stun.Priority(1),)
        ).encode(integrity_key=key, fingerprint=True)
        assert stun.decode(data).verify_integrity(key)
        schedule = stun.RetransmissionSchedule()
        assert schedule.start(0.0) == 0.5
        print("pure")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure"


def test_public_surface() -> None:
    """Every exported name exists, and every public class or function has a docstring."""
    for name in stun.__all__:
        obj = getattr(stun, name)
        if callable(obj) and name != "StunDecodeError":  # re-exported from trice._errors
            assert obj.__doc__ and "RFC" in obj.__doc__, name


def test_peek_type_and_username_read_a_request_without_decoding_it() -> None:
    """``peek_type`` gives the message type of what looks like STUN; ``peek_username`` the
    USERNAME value, past other attributes, or None; neither looks at anything else."""
    request = stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        attributes=(stun.Software("x"), stun.Username("abcd:efgh")),
    ).encode(integrity_key=b"k" * 16, fingerprint=True)
    assert stun.peek_type(request) == 0x0001
    assert stun.peek_username(request) == b"abcd:efgh"
    plain = stun.Message(stun.Method.BINDING, stun.MessageClass.SUCCESS).encode()
    assert stun.peek_type(plain) == 0x0101
    assert stun.peek_username(plain) is None
    for not_stun in (b"", b"\x80" * 40, request[:19]):
        assert stun.peek_type(not_stun) is None
        assert stun.peek_username(not_stun) is None
    # A USERNAME after MESSAGE-INTEGRITY does not count (RFC 8489 §14.5), for the peek as
    # for the decoder (the peek took it, and a mux handed the check to that agent).
    signed = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST).encode(
        integrity_key=b"k" * 16
    )
    late = bytearray(signed + b"\x00\x06\x00\x09abcd:efgh\x00\x00\x00")
    late[2:4] = (len(late) - 20).to_bytes(2, "big")
    assert stun.decode(bytes(late)).first_values((0x0006,))[0] is None
    assert stun.peek_username(bytes(late)) is None


@hypothesis.given(st.binary(max_size=200))
def test_peek_username_takes_any_bytes(data: bytes) -> None:
    """On arbitrary bytes, and on a STUN header over arbitrary attributes, the peeks return
    and never raise; what they return is a slice of the input."""
    header = b"\x00\x01" + len(data).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12)
    for candidate in (data, header + data):
        found = stun.peek_username(candidate)
        assert found is None or found in candidate
        kind = stun.peek_type(candidate)
        assert kind is None or 0 <= kind <= 0x3FFF


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_child_forked_while_a_thread_primes_a_key_primes_its_own() -> None:
    """A process forked while another of its threads held the key cache's lock (priming an
    agent's key) left the child a lock held by no thread of its own: its first new key (every
    agent's password is one) waited for good.  Here the fork comes with the lock held; the
    child must prime a new key at once (an alarm ends it otherwise)."""
    script = textwrap.dedent(
        """
        import os, signal
        from trice.stun import _integrity
        with _integrity._caching:  # (as a thread priming a key holds it)
            pid = os.fork()
            if pid == 0:
                signal.alarm(10)
                _integrity.sha1_pads(b"the child's own key")
                _integrity.hmac_sha256(b"the child's own key", b"data")
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert done.returncode == 0  # (242, the -14 of a child its alarm ended, before)


def test_channel_data_from_a_datagram_ignores_what_follows_its_data() -> None:
    """Over UDP what follows a ChannelData message's data is no part of it, padding or not
    (RFC 8656 §12.6 drops only a datagram shorter than its length says): ``datagram=True``
    reads the data and ignores the rest.  A stream's frame is exact: more than padding
    after it is refused."""
    frame = stun.encode_channel_data(0x4001, b"hello") + bytes(8)
    assert stun.decode_channel_data(frame, datagram=True) == (0x4001, b"hello")
    with pytest.raises(stun.StunDecodeError, match="more than padding"):
        stun.decode_channel_data(frame)
    with pytest.raises(stun.StunDecodeError, match="overruns"):
        stun.decode_channel_data(frame[:8], datagram=True)
