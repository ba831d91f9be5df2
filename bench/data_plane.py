"""Data plane: 1200-byte datagrams over a connected pair, beside raw trio sockets and aioice.

Three paths are measured, on loopback:

* **floor**: two raw non-blocking UDP sockets driven by trio, the least a correct trio
  program can do (``sendto``, waiting with ``wait_writable`` only when it would block;
  ``recvfrom``, waiting with ``wait_readable`` only when nothing is queued; each call a
  checkpoint, as trio's own socket methods are, cancellation checked before the datagram
  goes).  Until 2026-12-02 the floor read with ``recv``, which does not say who sent the
  datagram (an ICE agent must know, and the issue's floor is trio's ``recvfrom``), and
  checked cancellation after sending (a send cancelled had gone all the same, against
  trio's rule); the pingpong investigation found that the two put 3-8 points on every
  trice ratio against it, nearly all of them ``recvfrom``'s.
* **trice**: two agents connected by ICE; ``Connection.send`` / ``Connection.receive``.
* **aioice**: two aioice connections (asyncio), ``sendto`` / ``recvfrom``, each repeat in a
  fresh process with a fixed hash seed; the best repeat (the one of the highest receive
  rate) is kept whole, every column of its row from that one run.  Then, as a second
  reference, the same with the C library's heap tuned (``aioice, malloc tuned``), which
  gives aioice its fast speed every time: trice against aioice at its best.  (asyncio reads
  each datagram into a fresh 256 KiB buffer.  Whether glibc takes that from the heap, or
  maps and unmaps it, or trims the heap after it, for every datagram, depends on its
  dynamic thresholds, which move with what the process allocated before: so aioice ran
  2-3x apart from one process to the next.  ``MALLOC_MMAP_THRESHOLD_`` and
  ``MALLOC_TRIM_THRESHOLD_`` fix them above that buffer; see ``_aioice_in_process``.)

The floor and trice run in one trio run, in turns (``--rounds`` rounds, each a share of every
figure for both), so that a slow spell of this shared machine falls on both and their ratio
holds; each figure is the total over the rounds.

Three figures each: one-way datagrams per second (sender and receiver in the same process;
losses are counted, not hidden), ping-pong round trips per second, and the receive rate alone
(a burst of :data:`BURST` datagrams, the same for all three paths, is queued in the kernel
first, then timed while it is drained, up to the last datagram received; the share of the
burst received is the ``drained`` column, where a datagram the kernel's buffer could not
hold shows as loss); for trice also the receive rate of a reader that takes what is queued
with ``receive_nowait``.  Ratios are against the floor and against aioice.
Run: ``python bench/data_plane.py [--count N] [--pings N] [--rounds N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import trio

import trice
from trice._trio._transport import UdpTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _peers import aioice_pair, aioice_signal, share

from loopback import connect_both, loopback_config, signal

SIZE = 1200
#: The name of the second aioice reference: aioice with glibc's heap thresholds fixed.
AIOICE_TUNED = "aioice, malloc tuned"
#: glibc settings that keep asyncio's 256 KiB receive buffer on the heap, untrimmed.
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "4194304"}
RCVBUF = 4 * 1024 * 1024
#: The datagrams a receive-rate figure drains (floor, trice and aioice alike).
BURST = 5000
#: A drain gives up on the datagrams still missing after this many seconds (they are lost).
DRAIN_LIMIT = 5.0
#: A ping-pong not over within this many seconds (or 10 ms a round trip, if longer) lost a
#: ping or a pong (on loopback, where thousands take well under a second): the run stops.
PING_PONG_LIMIT = 30.0


class Lost(Exception):
    """A ping or its pong was lost: no ping-pong figure can be given (the run stops)."""


#: How a run stopped by :class:`Lost` says so on standard error (the aioice child's too).
LOST_PREFIX = "data_plane: "


@dataclass
class Result:
    name: str
    pps: float
    delivered: float
    rtt_per_s: float
    receive_pps: float = 0.0
    #: trice only: the receive rate of a reader that takes what is already queued with
    #: ``receive_nowait`` and awaits ``receive`` only when nothing is (see ``_batched``).
    batched_pps: float = 0.0
    #: The share of the queued bursts that their drains received (``receive_pps``), and
    #: of those of the ``receive_nowait`` reader (``batched_pps``).
    drained: float = 1.0
    batched_drained: float = 1.0


def _big_buffer(sock: socket.socket) -> None:
    """A kernel receive buffer large enough to hold the pre-filled burst (root can force it)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, 64 * 1024 * 1024)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)


async def _drain_rate(
    fill: Callable[[bytes], object],
    receive: Callable[[], Awaitable[bytes]],
    burst: int,
    limit: float | None = None,
) -> tuple[float, int]:
    """Receive rate alone: ``burst`` datagrams are queued in the kernel first (the sender does
    not yield, so nothing is read meanwhile), then timed while the receiver drains them.

    ``(datagrams a second, datagrams received)``: the clock stops at the last datagram
    received, so that those lost (waited for until ``limit``, :data:`DRAIN_LIMIT` by
    default) count neither in the rate nor in its time."""
    payload = b"\x80" + bytes(SIZE - 1)
    for _ in range(burst):
        fill(payload)
    clock = time.perf_counter
    start = end = clock()
    got = 0
    with trio.move_on_after(DRAIN_LIMIT if limit is None else limit):
        while got < burst:
            await receive()
            got += 1
            end = clock()
    return _rate(got, end - start), got


def _rate(count: int, seconds: float) -> float:
    return count / seconds if count and seconds > 0 else 0.0


def _loopback() -> trice.NetworkConfig:
    return trice.NetworkConfig(
        ip_filter=lambda address: address.is_loopback,
        include_loopback=True,
        ipv6=False,
    )


# ---------------------------------------------------------------- floor and trice, interleaved


@dataclass
class _Paths:
    """One path's ends: a -> b and b -> a, and ``fill`` (a's send without yielding)."""

    name: str
    send_a: Callable[[bytes], Awaitable[None]]
    receive_a: Callable[[], Awaitable[bytes]]
    send_b: Callable[[bytes], Awaitable[None]]
    receive_b: Callable[[], Awaitable[bytes]]
    fill: Callable[[bytes], object]
    receive_b_batched: Callable[[], Awaitable[bytes]] | None = None


def _floor_paths(a: socket.socket, b: socket.socket) -> _Paths:
    """Raw non-blocking UDP sockets driven by trio: each call a checkpoint, as trio's own
    socket methods are."""
    addr_a, addr_b = a.getsockname(), b.getsockname()

    def sender(sock: socket.socket, addr: tuple[str, int]) -> Callable[[bytes], Awaitable[None]]:
        async def send(data: bytes) -> None:
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                try:
                    sock.sendto(data, addr)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
            await trio.lowlevel.cancel_shielded_checkpoint()

        return send

    def receiver(sock: socket.socket) -> Callable[[], Awaitable[bytes]]:
        async def receive() -> bytes:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data, _source = sock.recvfrom(65536)
            except BlockingIOError:
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        return sock.recvfrom(65536)[0]
                    except BlockingIOError:
                        continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data

        return receive

    return _Paths(
        "floor (raw trio sockets)",
        sender(a, addr_b),
        receiver(a),
        sender(b, addr_a),
        receiver(b),
        lambda d: a.sendto(d, addr_b),
    )


def _trice_paths(ca: trice.Connection, cb: trice.Connection) -> _Paths:
    return _Paths("trice", ca.send, ca.receive, cb.send, cb.receive, ca.send_nowait, _batched(cb))


def _batched(conn: trice.Connection) -> Callable[[], Awaitable[bytes]]:
    """A reader that takes what is already queued without a schedule point each
    (``receive_nowait``), and awaits ``receive`` (a checkpoint, which then reads up to 64
    datagrams from the socket at once) only when the queue is empty."""

    async def receive() -> bytes:
        try:
            return conn.receive_nowait()
        except trio.WouldBlock:
            return await conn.receive()

    return receive


class _Totals:
    """Sums over the rounds of one path: datagrams (or round trips) and the seconds they took."""

    def __init__(self) -> None:
        self.sent = self.got = 0
        self.one_way: list[float] = [0, 0.0]
        self.pings: list[float] = [0, 0.0]
        self.drain: list[float] = [0, 0.0]
        self.batched: list[float] = [0, 0.0]
        #: Datagrams queued for the drains, and received: [queued, received].
        self.drain_got: list[int] = [0, 0]
        self.batched_got: list[int] = [0, 0]

    @staticmethod
    def add(total: list[float], count: int, rate: float) -> None:
        if rate > 0:
            total[0] += count
            total[1] += count / rate

    def result(self, name: str) -> Result:
        def rate(total: list[float]) -> float:
            return total[0] / total[1] if total[1] else 0.0

        return Result(
            name,
            rate(self.one_way),
            self.got / self.sent if self.sent else 0.0,
            rate(self.pings),
            rate(self.drain),
            rate(self.batched),
            self.drain_got[1] / self.drain_got[0] if self.drain_got[0] else 1.0,
            self.batched_got[1] / self.batched_got[0] if self.batched_got[0] else 1.0,
        )

    def drained(
        self, total: list[float], got: list[int], burst: int, drain: tuple[float, int]
    ) -> None:
        """Add a drain of ``burst`` datagrams (``_drain_rate``'s rate and count received)."""
        rate, received = drain
        self.add(total, received, rate)
        got[0] += burst
        got[1] += received


@asynccontextmanager
async def both_paths(receive_buffer: int) -> AsyncIterator[tuple[_Paths, _Paths]]:
    """The floor's two raw sockets and a connected pair of trice agents on loopback, all with
    the same large kernel buffers: ``(floor, trice)`` paths, closed on exit."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setblocking(False)
        _big_buffer(s)
        s.bind(("127.0.0.1", 0))
    config = loopback_config(receive_buffer=receive_buffer)
    try:
        async with (
            trice.open_agent(config, controlling=True) as ta,
            trice.open_agent(config, controlling=False) as tb,
        ):
            await ta.wait_gathering_complete()
            await tb.wait_gathering_complete()
            signal(ta, tb)
            ca, cb = await connect_both(ta, tb)
            for agent in (ta, tb):  # the same kernel buffers as the floor
                for t in agent._transports.values():
                    if isinstance(t, UdpTransport):
                        _big_buffer(t.sock)
            yield _floor_paths(a, b), _trice_paths(ca, cb)
    finally:
        a.close()
        b.close()


async def _floor_and_trice(count: int, pings: int, rounds: int) -> list[Result]:
    """Both paths in one trio run, measured in turns (``rounds`` rounds of ``count/rounds``
    datagrams each way, and so on), so that a slow spell of the machine falls on both and
    the ratios hold; each figure is the total over the rounds."""
    per = max(1, count // rounds)
    per_ping = max(1, pings // rounds)
    burst = BURST
    async with both_paths(max(per, burst) + 16) as paths:
        totals = {p.name: _Totals() for p in paths}
        for _ in range(rounds):
            for p in paths:
                tot = totals[p.name]
                pps, delivered = await _one_way(p.send_a, p.receive_b, per)
                tot.add(tot.one_way, per, pps)
                tot.sent += per
                tot.got += round(delivered * per)
                rtt = await _ping_pong(p.send_a, p.receive_a, p.send_b, p.receive_b, per_ping)
                tot.add(tot.pings, per_ping, rtt)
                drain = await _drain_rate(p.fill, p.receive_b, burst)
                tot.drained(tot.drain, tot.drain_got, burst, drain)
                if p.receive_b_batched is not None:
                    drain = await _drain_rate(p.fill, p.receive_b_batched, burst)
                    tot.drained(tot.batched, tot.batched_got, burst, drain)
        return [totals[p.name].result(p.name) for p in paths]


async def _one_way(
    send: Callable[[bytes], Awaitable[None]], receive: Callable[[], Awaitable[bytes]], count: int
) -> tuple[float, float]:
    payload = b"\x80" + bytes(SIZE - 1)
    received = 0
    start = time.perf_counter()
    end = start
    all_in = trio.Event()

    async def sink() -> None:
        nonlocal received, end
        while received < count:
            await receive()
            received += 1
            end = time.perf_counter()
        all_in.set()

    with trio.move_on_after(max(5.0, count / 2000)):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink)
            for _ in range(count):
                await send(payload)
            # Let the receiver drain what is queued (a lost datagram never comes), then stop.
            with trio.move_on_after(1.0):
                await all_in.wait()
            nursery.cancel_scope.cancel()
    return received / (end - start) if end > start else 0.0, received / count


async def _ping_pong(
    send_a: Callable[[bytes], Awaitable[None]],
    receive_a: Callable[[], Awaitable[bytes]],
    send_b: Callable[[bytes], Awaitable[None]],
    receive_b: Callable[[], Awaitable[bytes]],
    pings: int,
) -> float:
    payload = b"\x80" + bytes(SIZE - 1)

    async def echo() -> None:
        while True:
            await send_b(await receive_b())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        start = time.perf_counter()
        done = 0
        # (One deadline for the whole run, not one a round trip: what is timed stays the
        # round trips alone.)
        with trio.move_on_after(max(PING_PONG_LIMIT, pings / 100)):
            for done in range(1, pings + 1):  # noqa: B007 (read after the loop)
                await send_a(payload)
                await receive_a()
            done = pings + 1
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    if done <= pings:
        raise Lost(f"a ping or its pong was lost after {done - 1} of {pings} round trips")
    return pings / elapsed


# ---------------------------------------------------------------- aioice


def _aioice(count: int, pings: int) -> Result | None:
    try:
        import aioice
        import aioice.ice
    except ImportError:
        return None

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    aioice.ice.get_host_addresses = loopback_only
    payload = b"\x80" + bytes(SIZE - 1)

    async def main() -> Result:
        a, b = aioice_pair()
        try:
            return await measure(a, b)
        finally:  # (a lost datagram raises Lost: the sockets are closed all the same)
            await a.close()
            await b.close()

    async def measure(a: aioice.Connection, b: aioice.Connection) -> Result:
        await asyncio.gather(a.gather_candidates(), b.gather_candidates())
        await aioice_signal(a, b)
        await asyncio.gather(a.connect(), b.connect())
        for conn in (a, b):
            for protocol in conn._protocols:
                _big_buffer(protocol.transport.get_extra_info("socket"))
        received = 0
        start = time.perf_counter()
        end = start

        async def sink() -> None:
            nonlocal received, end
            while received < count:
                await b.recvfrom()
                received += 1
                end = time.perf_counter()

        task = asyncio.ensure_future(sink())
        for _ in range(count):
            await a.sendto(payload, 1)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=2.0)
        except asyncio.TimeoutError:
            task.cancel()
        pps = _rate(received, end - start)

        async def echo() -> None:
            while True:
                data, _ = await b.recvfrom()
                await b.sendto(data, 1)

        echo_task = asyncio.ensure_future(echo())
        start = time.perf_counter()
        done = 0

        async def ping_pong() -> None:
            nonlocal done
            for done in range(pings):  # noqa: B007 (read in the error)
                await a.sendto(payload, 1)
                await a.recvfrom()

        # (asyncio.wait_for, not asyncio.timeout: Python 3.10 has no asyncio.timeout.)
        try:
            await asyncio.wait_for(ping_pong(), max(PING_PONG_LIMIT, pings / 100))
        except asyncio.TimeoutError:
            raise Lost(f"aioice: a ping or its pong was lost after {done} of {pings}") from None
        finally:
            echo_task.cancel()
        rtt = pings / (time.perf_counter() - start)
        await asyncio.sleep(0.05)
        # Receive rate alone: queue the burst from a's socket without yielding, then drain.
        pair = a._nominated[1]
        sender = pair.protocol.transport
        to = (pair.remote_candidate.host, pair.remote_candidate.port)
        drain, got = await _aioice_drain(lambda d: sender.sendto(d, to), b.recvfrom, BURST)
        return Result("aioice", pps, received / count, rtt, drain, drained=got / BURST)

    return asyncio.run(main())


async def _aioice_drain(
    fill: Callable[[bytes], object],
    receive: Callable[[], Awaitable[object]],
    burst: int,
    limit: float | None = None,
) -> tuple[float, int]:
    """``_drain_rate`` in asyncio, for aioice: ``(datagrams a second, datagrams received)``,
    the clock stopped at the last datagram received."""
    payload = b"\x80" + bytes(SIZE - 1)
    for _ in range(burst):
        fill(payload)
    clock = time.perf_counter
    start = end = clock()
    got = 0

    async def drain() -> None:
        nonlocal got, end
        while got < burst:
            await receive()
            got += 1
            end = clock()

    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(drain(), DRAIN_LIMIT if limit is None else limit)
    return _rate(got, end - start), got


def _aioice_in_process(count: int, pings: int, seed: int, tuned: bool = False) -> Result | None:
    """aioice in a fresh process with ``PYTHONHASHSEED=seed`` (and, ``tuned``, glibc's heap
    thresholds fixed: :data:`MALLOC_TUNED`); ``None`` where aioice is not installed, and a
    RuntimeError naming the end of its output where the child failed (until 2026-12-02 it
    was ``None`` too, and the row left out without a word: the benchhonesty review).

    aioice's data path runs at one of two speeds, 2-3x apart (receive: about 40k or 110k
    datagrams/s here), and which one a process gets is set by what it allocated before:
    the same hash seed and command line gave the same speed run after run, another command
    line or another day another one.  asyncio's datagram transport reads each datagram with
    ``recvfrom(256 KiB)``: a fresh 256 KiB buffer, shrunk to the datagram.  With glibc's
    default thresholds (128 KiB, raised as the process frees large blocks), that buffer is
    mapped and unmapped for each datagram, or the heap trimmed after it, until the process
    happens to have raised them: some 10 µs a datagram (cProfile: ``recvfrom`` 10.6 µs a
    call in the slow runs).  With the thresholds fixed above it, every run is fast (receive
    110k, one way 83k, ping-pong 32k round trips/s, on 2026-11-29, whatever the seed).
    """
    command = [sys.executable, __file__, "--aioice-only", f"--count={count}", f"--pings={pings}"]
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    if tuned:
        env.update(MALLOC_TUNED)
    # (Longer than the child's own limits, which say what was lost: see Lost.)
    limit = 300 + max(PING_PONG_LIMIT, pings / 100) + max(5.0, count / 2000) + DRAIN_LIMIT
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return Result(**json.loads(line))
    for line in out.stderr.splitlines():
        if line.startswith(LOST_PREFIX):
            raise Lost(line.removeprefix(LOST_PREFIX))
    if out.returncode != 0:  # (a crash is no "aioice not installed": said, with its end)
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"the aioice child failed (status {out.returncode}): {tail}")
    return None


def _share(value: float, of: float) -> str:
    """``value`` as a percentage of ``of`` (``n/a`` where ``of`` is nothing)."""
    return f"{value / of:.0%}" if of else "n/a"


def _times(value: float, of: float) -> str:
    """``value`` as a multiple of ``of`` (``n/a`` where ``of`` is nothing)."""
    return f"{value / of:.2f}x" if of else "n/a"


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except Lost as exc:  # (no figure to give: said in one line, exit status 1)
        print(f"{LOST_PREFIX}{exc}", file=sys.stderr)
        sys.exit(1)


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20000, help="datagrams one way")
    parser.add_argument("--pings", type=int, default=3000, help="round trips")
    parser.add_argument("--rounds", type=int, default=10, help="turns of floor and trice")
    parser.add_argument(
        "--repeat", type=int, default=6, help="aioice: best of this many runs (its receive rate)"
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--aioice-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.pings, args.rounds, args.repeat = 3000, 500, 3, 1
    if args.aioice_only:  # one aioice measurement, as JSON (see _aioice_in_process)
        only = _aioice(args.count, args.pings)
        if only is not None:
            print(json.dumps(dataclasses.asdict(only)))
        return
    runs: dict[str, list[Result]] = {}
    for result in trio.run(_floor_and_trice, args.count, args.pings, max(1, args.rounds)):
        runs[result.name] = [result]
    for seed in range(1, args.repeat + 1):
        aio_result = _aioice_in_process(args.count, args.pings, seed)
        if aio_result is not None:
            runs.setdefault(aio_result.name, []).append(aio_result)
    for seed in range(1, max(1, args.repeat // 2) + 1):
        aio_result = _aioice_in_process(args.count, args.pings, seed, tuned=True)
        if aio_result is not None:
            runs.setdefault(AIOICE_TUNED, []).append(
                dataclasses.replace(aio_result, name=AIOICE_TUNED)
            )
    # One whole repeat a row: the one of the highest receive rate (not each column's best,
    # a row no repeat measured).
    best = {
        name: dataclasses.replace(max(results, key=lambda r: r.receive_pps), name=name)
        for name, results in runs.items()
    }
    floor = best["floor (raw trio sockets)"]
    aio = best.get("aioice")
    print(
        f"\nData plane: {SIZE}-byte datagrams on loopback; floor and trice in {args.rounds} "
        f"rounds of turns, aioice best of {args.repeat} (malloc tuned: best of"
        f" {max(1, args.repeat // 2)})"
    )
    print(
        f"one way: {args.count} datagrams; ping-pong: {args.pings} round trips;"
        f" receive: bursts of {BURST} datagrams\n"
    )
    header = (
        f"{'path':<26} {'one-way pkt/s':>14} {'delivered':>10} {'rtt/s':>9} "
        f"{'receive pkt/s':>14} {'drained':>8} {'pkt/s vs floor':>15} {'rtt vs floor':>13} "
        f"{'recv vs floor':>14} {'recv vs aioice':>15}"
    )
    print(header)
    print("-" * len(header))
    for result in best.values():
        vs_aio = _times(result.receive_pps, aio.receive_pps) if aio else "n/a"
        print(
            f"{result.name:<26} {result.pps:>14,.0f} {share(result.delivered, 1.0):>10} "
            f"{result.rtt_per_s:>9,.0f} {result.receive_pps:>14,.0f} "
            f"{share(result.drained, 1.0):>8} "
            f"{_share(result.pps, floor.pps):>14} {_share(result.rtt_per_s, floor.rtt_per_s):>12} "
            f"{_share(result.receive_pps, floor.receive_pps):>13} {vs_aio:>15}"
        )
    trice_best = best.get("trice")
    if trice_best is not None and trice_best.batched_pps:
        vs_aio = f", {_times(trice_best.batched_pps, aio.receive_pps)} aioice" if aio else ""
        lost = (
            f"; {share(trice_best.batched_drained, 1.0)} of its bursts received"
            if trice_best.batched_drained < 1
            else ""
        )
        print(
            f"\ntrice, receive_nowait while datagrams are queued: {trice_best.batched_pps:,.0f} "
            f"receive pkt/s ({_share(trice_best.batched_pps, floor.receive_pps)} of the floor"
            f"{vs_aio}{lost})"
        )
    fast = best.get(AIOICE_TUNED)
    if trice_best is not None and fast is not None:
        print(
            f"against aioice with malloc tuned (its fast speed): trice receive"
            f" {_times(trice_best.receive_pps, fast.receive_pps)}, receive_nowait"
            f" {_times(trice_best.batched_pps, fast.receive_pps)}"
        )
    if any(min(r.drained, r.batched_drained) < 1 for r in best.values()):
        print(
            "\nDATAGRAMS LOST in the receive drains (drained < 100 %): the kernel's receive"
            " buffer could not hold the burst\n(SO_RCVBUFFORCE needs root; or raise"
            " net.core.rmem_max); each receive rate counts only what came."
        )
    if any(r.delivered < 1 for r in best.values()):
        print("\nDATAGRAMS LOST one way (delivered < 100 %): each one-way rate counts what came.")
    print()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
