"""Benchmark helpers on top of the peer harness (``tests/peers/harness.py``).

A benchmark row is ``(label, peer_a_cmd, peer_b_cmd)``: peer A is started ``--controlling``
and peer B ``--controlled``, both on loopback host candidates only. trice's own peer
(``tests/peers/trice_peer.py``) is the harness's ``"trice"`` kind.

:func:`measure_in_process` times two trice agents in one trio run instead, without processes
or pipes in between.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import trio

import trice
import trice._trio._agent  # (trice imports its shell on first use: here, before any clock)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from loopback import loopback_config, signal
from peers.harness import (
    PEER_KINDS,
    Connected,
    PeerUnavailable,
    connect_pair,
    peer_command,
    peer_pair,
)

__all__ = [
    "IDLE",
    "PEER_KINDS",
    "Flow",
    "PeerUnavailable",
    "Row",
    "WARMED",
    "Stats",
    "aioice_signal",
    "default_rows",
    "measure",
    "measure_cmds",
    "measure_in_process",
    "measure_pair",
    "one_way_and_ping_pong",
    "warmed",
]


def aioice_pair() -> tuple[Any, Any]:
    """A controlling and a controlled aioice connection, one component, IPv4 (as the
    benchmarks run them)."""
    import aioice

    return (
        aioice.Connection(ice_controlling=True, components=1, use_ipv6=False),
        aioice.Connection(ice_controlling=False, components=1, use_ipv6=False),
    )


async def aioice_signal(a: Any, b: Any) -> None:
    """Hand each of two aioice connections in one process the other's parameters and
    candidates, as signaling would (``data_plane.py`` and ``scale.py``)."""
    for here, there in ((a, b), (b, a)):
        here.remote_username = there.local_username
        here.remote_password = there.local_password
        for c in there.local_candidates:
            await here.add_remote_candidate(c)
        await here.add_remote_candidate(None)


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    peer_a_cmd: list[str]
    peer_b_cmd: list[str]

    @classmethod
    def of(cls, kind_a: str, kind_b: str, *, ipv6: bool = False, lite_b: bool = False) -> Row:
        """``kind_a`` (controlling) against ``kind_b`` (controlled), labelled ``a-b``."""
        label = f"{kind_a}-{kind_b}{' lite' if lite_b else ''}{' ipv6' if ipv6 else ''}"
        return cls(
            label,
            peer_command(kind_a, controlling=True, ipv6=ipv6),
            peer_command(kind_b, controlling=False, ipv6=ipv6, lite=lite_b),
        )


def measure_cmds(
    cmd_a: Sequence[str], cmd_b: Sequence[str], n: int, timeout: float = 20.0
) -> list[float]:
    """Connect fresh peers ``n`` times; each sample is the ms until *both* are connected.

    Each peer times its own connect call, made when it reads ``start`` (stamped just before
    the call, a scheduling step after the read: see docs/guide/performance.rst), both peers
    already holding each other's parameters and candidates, so process start-up and
    gathering are not counted (nor the peer program's timeout guard around the call).
    Which peer gets ``start`` first alternates from run to run.
    """
    return [measure_pair(cmd_a, cmd_b, timeout, b_first=i % 2 == 1).elapsed_ms for i in range(n)]


def measure_pair(
    cmd_a: Sequence[str], cmd_b: Sequence[str], timeout: float = 20.0, *, b_first: bool = False
) -> Connected:
    """Connect a fresh pair of peers once; both sides' ``connected`` messages (see
    :attr:`Connected.elapsed_ms` and :attr:`Connected.span_ms`).  ``b_first``: ``start``
    goes to peer B first (see :func:`connect_pair`; the benchmarks alternate it)."""
    with peer_pair(cmd_a, cmd_b) as (a, b):
        return connect_pair(a, b, timeout, b_first=b_first)


def measure(kind_a: str, kind_b: str, n: int, *, ipv6: bool = False) -> list[float]:
    """Connect times (ms) of ``kind_a`` (controlling) to ``kind_b`` (controlled)."""
    row = Row.of(kind_a, kind_b, ipv6=ipv6)
    return measure_cmds(row.peer_a_cmd, row.peer_b_cmd, n)


@dataclasses.dataclass(frozen=True)
class Stats:
    n: int
    median: float
    p10: float
    p90: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if len(samples) >= 2:
            deciles = statistics.quantiles(samples, n=10, method="inclusive")
            p10, p90 = deciles[0], deciles[-1]
        else:
            p10 = p90 = samples[0]
        return cls(
            len(samples),
            statistics.median(samples),
            p10,
            p90,
            min(samples),
            max(samples),
        )


def default_rows(*, ipv6: bool = False) -> list[Row]:
    """The baseline rows; rows whose peer cannot be built here are left out (with a note)."""
    pairs = [
        ("aioice", "aioice"),
        ("pion", "pion"),
        ("aioice", "pion"),
        ("pion", "aioice"),
        ("trice", "trice"),
        ("trice", "aioice"),
        ("aioice", "trice"),
        ("trice", "pion"),
        ("pion", "trice"),
    ]
    rows = []
    for kind_a, kind_b in pairs:
        try:
            row = Row.of(kind_a, kind_b, ipv6=ipv6)
        except PeerUnavailable as exc:
            print(f"skipping {kind_a}-{kind_b}: {exc}", file=sys.stderr)
            continue
        rows.append(row)
        if (kind_a, kind_b) == ("trice", "trice"):
            rows.append(warmed(row))
    return rows


WARMED = " (warm_up)"


def warmed(row: Row) -> Row:
    """``row`` with both trice peers calling :func:`trice.warm_up` at start-up, before
    anything is measured (as an application that wants its first connection fast would)."""
    return Row(row.label + WARMED, [*row.peer_a_cmd, "--warm"], [*row.peer_b_cmd, "--warm"])


async def _in_process_once(ipv6: bool, limit: float) -> float:
    config = loopback_config(ipv6=ipv6)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        with trio.fail_after(limit):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
        signal(a, b)
        return await timed_connect(a, b, limit)


async def timed_connect(a: trice.Agent, b: trice.Agent, limit: float) -> float:
    """Milliseconds until both agents' ``connect()`` returned (signaling already done)."""
    done: list[float] = []

    async def connect(agent: trice.Agent) -> None:
        await agent.connect()
        done.append(time.perf_counter())

    t0 = time.perf_counter()
    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect, a)
            nursery.start_soon(connect, b)
    return (max(done) - t0) * 1000.0


def measure_in_process(n: int, *, ipv6: bool = False, timeout: float = 20.0) -> list[float]:
    """Connect times (ms) of two trice agents in one trio run, ``n`` fresh pairs.

    The clock starts once both agents hold each other's parameters and candidates
    (end-of-candidates included) and stops when both ``connect()`` calls returned.
    """
    return [trio.run(_in_process_once, ipv6, timeout) for _ in range(n)]


class Flow(NamedTuple):
    """What :func:`one_way_and_ping_pong` measured."""

    #: Datagrams a second one way, from the first sent to the last received.
    one_way: float
    #: Datagrams sent one way, and received (the rest lost, or cut off by the cap).
    sent: int
    received: int
    #: Round trips a second, to the last one completed.
    round_trips: float
    #: Round trips completed (of ``rounds``: the ping-pong stops at a lost ping or pong).
    pongs: int

    @property
    def delivered(self) -> float:
        """The share of the datagrams sent one way that came."""
        return self.received / self.sent if self.sent else 1.0


#: Seconds with nothing received after which the datagrams (or the ping, or its pong)
#: still awaited count as lost.
IDLE = 1.0


def share(received: int | float, of: int | float) -> str:
    """What share of ``of`` was received, for a table: ``100%`` only when nothing was lost
    (a loss is never rounded away: 1999 of 2000 is ``99.95%``)."""
    if not of or received >= of:
        return "100%"
    # (A hair over the floor: 1,634 / 2,000 * 10,000 is 8169.999... in floating point.)
    return f"{math.floor(received / of * 10_000 + 1e-6) / 100:.2f}%"


def loss_notes(name: str, delivered: float, pongs: Sequence[int], rounds: int) -> list[str]:
    """The notes under a table for row ``name``: what its worst run delivered one way, if
    not all, and where lost pings or pongs ended its ping-pongs (``pongs``: the round trips
    of each run, of ``rounds``)."""
    notes = []
    if delivered < 1.0:
        shown = share(delivered, 1.0)
        notes.append(f"{name}: DATAGRAMS LOST one way ({shown} delivered in the worst run)")
    done = [pong for pong in pongs if pong < rounds]
    if done:
        notes.append(
            f"{name}: a ping or pong lost, the ping-pong ended after"
            f" {', '.join(map(str, done))} of {rounds} round trips"
        )
    return notes


def ratio(value: float, of: float) -> str:
    """``value / of`` as ``1.23x``, or ``n/a`` where ``of`` is nothing (a run lost)."""
    return f"{value / of:.2f}x" if of else "n/a"


async def _stop_when_idle(scope: trio.CancelScope, last: Callable[[], float], idle: float) -> None:
    """Cancel ``scope`` once ``last()`` (the ``perf_counter`` time of the latest datagram
    received) is ``idle`` seconds old."""
    while True:
        await trio.sleep(idle / 4)
        if time.perf_counter() - last() > idle:
            scope.cancel()
            return


async def one_way_and_ping_pong(
    sender: trice.Connection,
    receiver: trice.Connection,
    count: int,
    rounds: int,
    size: int,
    *,
    cap: float = 20.0,
    idle: float | None = None,
) -> Flow:
    """Over a connected pair, in one trio run: datagrams of ``size`` bytes a second from
    ``sender`` to ``receiver`` (``count`` sent, ``cap`` seconds at most, timed to the last
    one received and counted as received: those still missing when nothing came for
    ``idle`` seconds, :data:`IDLE` by default, are lost), then round trips a second
    (``rounds`` ping-pongs of small datagrams, timed to the last one completed: a ping or
    pong that does not come within ``idle`` seconds ends them)."""
    idle = IDLE if idle is None else idle
    payload = bytes(size)
    clock = time.perf_counter
    sent = got = 0
    started = last = clock()

    all_in = trio.Event()

    async def sink() -> None:
        nonlocal got, last
        while got < count:
            await receiver.receive()
            got += 1
            last = clock()
        all_in.set()

    with trio.move_on_after(cap):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink)
            nursery.start_soon(_stop_when_idle, nursery.cancel_scope, lambda: last, idle)
            for _ in range(count):
                await sender.send(payload)
                sent += 1
            await all_in.wait()
            nursery.cancel_scope.cancel()
    one_way = got / (last - started) if got and last > started else 0.0
    pongs = 0
    started = last = clock()
    with trio.move_on_after(cap):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_when_idle, nursery.cancel_scope, lambda: last, idle)
            for _ in range(rounds):
                await sender.send(b"ping")
                # (A datagram of the one-way run still on its way is not a ping.)
                while await receiver.receive() != b"ping":
                    pass
                await receiver.send(b"pong")
                await sender.receive()
                pongs += 1
                last = clock()
            nursery.cancel_scope.cancel()
    round_trips = pongs / (last - started) if pongs and last > started else 0.0
    return Flow(one_way, sent, got, round_trips, pongs)
