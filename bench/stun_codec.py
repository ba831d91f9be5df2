"""Benchmark the STUN codec on the ICE hot path: trice.stun vs aioice.stun vs the stdlib floor.

The messages are an ICE Binding request (USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE,
MESSAGE-INTEGRITY, FINGERPRINT) and its success response (XOR-MAPPED-ADDRESS,
MESSAGE-INTEGRITY, FINGERPRINT).  Four operations are timed:

* ``decode+verify``: parse the bytes, check FINGERPRINT and MESSAGE-INTEGRITY;
* ``decode+verify+read``: the same, then read the values an ICE agent needs, as text and
  numbers (aioice decodes every value eagerly, trice lazily, so this row is the fair
  comparison).  trice's agent reads a check's values in one pass
  (:meth:`trice.stun.Message.first_values`); ``... read typed`` reads them as typed
  attributes instead, one ``get`` each;
* ``decode+verify, new shape``: as ``decode+verify`` for a message of a shape trice has not
  kept yet, which it decodes with the full pass and then keeps (see
  :func:`trice.stun.decode`: an authenticated message leaves its shape, and the next of the
  same shape is checked against it in one step, as the other rows, where the same message
  comes again and again, are);
* ``build+sign``: build the message from values and serialize it with MESSAGE-INTEGRITY and
  FINGERPRINT;
* ``build+sign (fast)``: the same bytes from the specialised encoders the ICE agent uses
  (``trice.stun._fastpath``): a check from a per-pair template given a fresh transaction ID,
  a success response from the transaction ID, the address and the key.

The floor is what any implementation must pay: one HMAC-SHA1 over the bytes, its keyed states
made once and copied (as trice's fast path does: an unprimed ``hmac.digest`` hashes the key's
pads each time, and trice went under it), and one ``zlib.crc32``.  The fair comparison with
aioice is the ``+read`` rows: ``decode+verify`` alone leaves trice's values undecoded.  Run
``python bench/stun_codec.py [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trice import stun
from trice.ice._requests import CHECK_TYPES
from trice.stun._fastpath import BindingRequestTemplate, encode_binding_success
from trice.stun._message import _decode_walk

aioice_stun: Any
try:
    from aioice import stun as aioice_stun
except ImportError:  # pragma: no cover - aioice is a test extra
    aioice_stun = None

KEY = stun.short_term_key("VOkJxbRl1RmTxUk/WvJxBt")
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
USERNAME = "evtj:h6vY"
PRIORITY = 1845494271
TIEBREAKER = 0x932FF9B151263B36
MAPPED = ("192.0.2.1", 32853)


def trice_request() -> bytes:
    return stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        TID,
        (
            stun.Username(USERNAME),
            stun.Priority(PRIORITY),
            stun.IceControlling(TIEBREAKER),
            stun.UseCandidate(),
        ),
    ).encode(integrity_key=KEY, fingerprint=True)


def trice_response() -> bytes:
    return stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.SUCCESS,
        TID,
        (stun.XorMappedAddress(*MAPPED),),
    ).encode(integrity_key=KEY, fingerprint=True)


REQUEST_TEMPLATE = BindingRequestTemplate(
    USERNAME, PRIORITY, controlling=True, tiebreaker=TIEBREAKER, use_candidate=True, key=KEY
)


def trice_request_fast() -> bytes:
    return REQUEST_TEMPLATE.encode(TID)


def trice_response_fast() -> bytes:
    return encode_binding_success(TID, MAPPED[0], MAPPED[1], KEY)


def trice_verify(data: bytes) -> bool:
    return stun.decode(data).verify_integrity(KEY)


def trice_verify_new_shape(data: bytes) -> bool:
    """The full pass (``_decode_walk``: what ``decode`` runs for a shape not kept), then the
    integrity check, which keeps the shape."""
    return _decode_walk(data).verify_integrity(KEY)


def trice_read_request(data: bytes) -> object:
    """As the agent reads a check: its values in one pass, then the ones it uses as text
    and numbers."""
    msg = stun.decode(data)
    assert msg.verify_integrity(KEY)
    username, _mi, priority, use, controlled, controlling = msg.first_values(CHECK_TYPES)
    assert username is not None and priority is not None
    return (
        username.decode("utf-8", "surrogateescape"),
        int.from_bytes(priority, "big"),
        None if controlling is None else int.from_bytes(controlling, "big"),
        None if controlled is None else int.from_bytes(controlled, "big"),
        use is not None,
    )


def trice_read_request_typed(data: bytes) -> object:
    """The same values as typed attributes, one :meth:`~trice.stun.Message.get` each."""
    msg = stun.decode(data)
    assert msg.verify_integrity(KEY)
    return (
        msg.get(stun.Username),
        msg.get(stun.Priority),
        msg.get(stun.IceControlling),
        msg.get(stun.IceControlled),
        msg.get(stun.UseCandidate),
    )


def trice_read_response(data: bytes) -> object:
    msg = stun.decode(data)
    assert msg.verify_integrity(KEY)
    return msg.get(stun.XorMappedAddress)


def aioice_request() -> bytes:
    assert aioice_stun is not None
    msg = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.REQUEST,
        transaction_id=TID,
    )
    msg.attributes["USERNAME"] = USERNAME
    msg.attributes["PRIORITY"] = PRIORITY
    msg.attributes["ICE-CONTROLLING"] = TIEBREAKER
    msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(KEY)
    msg.add_fingerprint()
    return bytes(msg)


def aioice_response() -> bytes:
    assert aioice_stun is not None
    msg = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.RESPONSE,
        transaction_id=TID,
    )
    msg.attributes["XOR-MAPPED-ADDRESS"] = MAPPED
    msg.add_message_integrity(KEY)
    msg.add_fingerprint()
    return bytes(msg)


def aioice_verify(data: bytes) -> bool:
    assert aioice_stun is not None
    ok: bool = aioice_stun.parse_message(data).check_message_integrity(KEY)
    return ok


def aioice_read_request(data: bytes) -> object:
    assert aioice_stun is not None
    msg = aioice_stun.parse_message(data)
    assert msg.check_message_integrity(KEY)
    a = msg.attributes
    return (
        a.get("USERNAME"),
        a.get("PRIORITY"),
        a.get("ICE-CONTROLLING"),
        a.get("ICE-CONTROLLED"),
        a.get("USE-CANDIDATE"),
    )


def aioice_read_response(data: bytes) -> object:
    assert aioice_stun is not None
    msg = aioice_stun.parse_message(data)
    assert msg.check_message_integrity(KEY)
    return msg.attributes.get("XOR-MAPPED-ADDRESS")


# HMAC-SHA1's keyed states, made once (RFC 2104: the key xor ipad, and xor opad, hashed):
# an implementation that keeps them pays only the two hashes over the message.
_INNER = hashlib.sha1(bytes(b ^ 0x36 for b in KEY.ljust(64, b"\0")))
_OUTER = hashlib.sha1(bytes(b ^ 0x5C for b in KEY.ljust(64, b"\0")))
assert len(KEY) <= 64  # (a longer key is hashed first: not so here)


def floor(data: bytes) -> object:
    inner = _INNER.copy()
    inner.update(data)
    outer = _OUTER.copy()
    outer.update(inner.digest())
    return outer.digest(), zlib.crc32(data)


def _calibrate(fn: Callable[[], object], min_time: float) -> int:
    """How many calls of *fn* take about *min_time* seconds."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / 4:
            return max(1, int(number * min_time / elapsed))
        number *= 2


def best_of(fns: list[Callable[[], object]], *, repeat: int, min_time: float) -> list[float]:
    """Seconds per call of each function: the best of *repeat* rounds.

    The functions are timed in turn within each round, so a burst of load on a shared machine
    hits all of them alike and the ratios stay meaningful.
    """
    numbers = [_calibrate(fn, min_time) for fn in fns]
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, (fn, number) in enumerate(zip(fns, numbers, strict=True)):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / number)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs (about 2 s in all)")
    args = parser.parse_args(argv)
    repeat, min_time = (3, 0.02) if args.quick else (15, 0.1)

    request, response = trice_request(), trice_response()
    if aioice_stun is not None:  # same bytes from both codecs, and each reads the other's
        assert aioice_request() == request, "aioice and trice disagree on the request"
        assert aioice_response() == response, "aioice and trice disagree on the response"
    assert trice_verify(request) and trice_verify(response)
    assert trice_request_fast() == request and trice_response_fast() == response

    def bind(fn: Callable[[bytes], object], data: bytes) -> Callable[[], object]:
        return lambda: fn(data)

    Case = tuple[str, Callable[[], object], Callable[[], object], bytes]
    cases: list[Case] = [
        (
            "request  decode+verify",
            bind(trice_verify, request),
            bind(aioice_verify, request),
            request,
        ),
        (
            "request  decode+verify, new shape",
            bind(trice_verify_new_shape, request),
            bind(aioice_verify, request),
            request,
        ),
        (
            "request  decode+verify+read",
            bind(trice_read_request, request),
            bind(aioice_read_request, request),
            request,
        ),
        (
            "request  ... read typed",
            bind(trice_read_request_typed, request),
            bind(aioice_read_request, request),
            request,
        ),
        ("request  build+sign", trice_request, aioice_request, request),
        ("request  build+sign (fast)", trice_request_fast, aioice_request, request),
        (
            "response decode+verify",
            bind(trice_verify, response),
            bind(aioice_verify, response),
            response,
        ),
        (
            "response decode+verify+read",
            bind(trice_read_response, response),
            bind(aioice_read_response, response),
            response,
        ),
        ("response build+sign", trice_response, aioice_response, response),
        ("response build+sign (fast)", trice_response_fast, aioice_response, response),
    ]
    have_aioice = aioice_stun is not None
    print(
        f"STUN codec, Python {platform.python_version()} on {platform.machine()}; "
        f"best of {repeat}; request {len(request)} B, response {len(response)} B"
    )
    header = (
        f"{'operation':<34} {'trice µs':>9} {'trice op/s':>11} {'aioice µs':>10} "
        f"{'aioice op/s':>12} {'floor µs':>9} {'x aioice':>9} {'/ floor':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, ours, theirs, data in cases:
        fns = [ours, bind(floor, data)] + ([theirs] if have_aioice else [])
        times = best_of(fns, repeat=repeat, min_time=min_time)
        t_ours, t_floor = times[0], times[1]
        if have_aioice:
            t_theirs = times[2]
            theirs_cols = f"{t_theirs * 1e6:>10.2f} {1 / t_theirs:>12,.0f}"
            speedup = f"{t_theirs / t_ours:>8.2f}x"
        else:
            theirs_cols = f"{'-':>10} {'-':>12}"
            speedup = f"{'-':>9}"
        print(
            f"{label:<34} {t_ours * 1e6:>9.2f} {1 / t_ours:>11,.0f} {theirs_cols} "
            f"{t_floor * 1e6:>9.2f} {speedup} {t_ours / t_floor:>7.2f}x"
        )
    print(
        "x aioice = trice's rate / aioice's rate (higher is better); "
        "/ floor = trice's time / (one HMAC-SHA1 from primed pads + one CRC-32) (lower is "
        "better); the +read rows are the like-for-like comparison with aioice."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
