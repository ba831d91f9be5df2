"""Scale: N pairs of agents in one process, all connecting at once, beside aioice.

For N in (100, 500, 1000): the time until every pair is connected (from opening the agents,
so host gathering is included; each timed run in a fresh process of its own), and the
memory each agent holds once connected (traced Python allocations, in a separate run so
that tracing does not slow the timed one; the agents are held open from one task, so that
the harness keeps nothing per pair alive, as in the aioice run), and the resident memory
they add to a fresh process (``--rss-size`` pairs, 1000 by default: what an operator sees,
allocator arenas and C memory included), connecting all at once and, for trice, 100 at a
time (the arenas keep what a burst freed: the larger the burst, the more).  Then, at the default
limit of 1024 file descriptors, what happens when they run out: trice raises
:class:`trice.LimitError`; aioice is reported as measured.

Each size is timed ``--repeat`` times (3 by default), trice and aioice in turns, each run in
a fresh process; the table gives the medians, and the speed is the median of the ratios
within a turn (on a shared machine the load drifts between turns).

trice is timed twice a turn: with its default, regular nomination, and with aggressive
nomination, which is what aioice does (a controlling aioice agent puts USE-CANDIDATE on
every check it sends to a full peer: ``aioice/ice.py``, ``check_start``).  With regular
nomination a pair takes six messages (a check each way and their answers, then the
nomination and its answer); with aggressive nomination four, as in the aioice run.  So the
aggressive row is the like-for-like comparison, and the regular row is what an application
that keeps trice's defaults gets.

Each pair is connected as aioice's are: the two ``connect()`` calls side by side (a nursery
here, ``asyncio.gather`` there), with one time limit for the whole run rather than one per
pair (until 2026-11-29 each trice pair had a ``trio.fail_after`` of its own, which the
aioice run never had: some 5 % of a pair's Python work, in the harness, not in trice).

``--phases N`` prints only where a pair's CPU goes, phase by phase (opening the agents,
host gathering, signaling, connecting, closing), for N pairs and both nomination modes, and
the same phases around aioice's own calls.

Each timed run, and each kind's ``--phases`` run, starts with a full garbage collection,
trice's and aioice's alike (since
2026-12-02: the process's first full collection, of what importing made, fell inside
trice's window, some 12 ms of the 100 pairs' 74, and outside aioice's, whose setup ran one
just before; the scaleperf investigation).

Run: ``python bench/scale.py [--sizes 100 500 1000] [--repeat 3] [--quick] [--phases N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import trio

import trice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _peers import aioice_pair, aioice_signal

from loopback import loopback_config, signal

KIB = 1024
#: The time limit for connecting all the pairs of a run (a guard: a pair connects in
#: milliseconds, 1000 pairs in seconds).
CONNECT_LIMIT = 120.0


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


# ---------------------------------------------------------------- trice


async def _connect_pair(a: trice.Agent, b: trice.Agent) -> None:
    """Both agents' ``connect()`` side by side, as ``asyncio.gather`` runs aioice's (the
    time limit is the caller's, for all the pairs at once)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.connect)
        nursery.start_soon(b.connect)


async def _gather_and_connect(a: trice.Agent, b: trice.Agent) -> None:
    """Wait until both agents have their host candidates, hand each the other's, and
    connect them (:func:`_connect_pair`)."""
    await a.wait_gathering_complete()
    await b.wait_gathering_complete()
    signal(a, b)
    await _connect_pair(a, b)


async def _trice_pairs(
    n: int,
    measure: Callable[[], None] | None = None,
    nomination: trice.Nomination = trice.Nomination.REGULAR,
) -> float:
    """Open n pairs, connect them all; returns seconds until all are connected."""
    config = loopback_config(nomination=nomination)
    connected = 0
    all_connected = trio.Event()
    release = trio.Event()

    async def one_pair() -> None:
        nonlocal connected
        async with (
            trice.open_agent(config, controlling=True) as a,
            trice.open_agent(config, controlling=False) as b,
        ):
            await _gather_and_connect(a, b)
            connected += 1
            if connected == n:
                all_connected.set()
            await release.wait()

    gc.collect()  # (a fresh heap for each kind: see the module's docstring)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one_pair)
        with trio.fail_after(CONNECT_LIMIT):
            await all_connected.wait()
        elapsed = time.perf_counter() - start
        if measure is not None:
            measure()
        release.set()
    return elapsed


async def _open_pairs(
    stack: AsyncExitStack, config: trice.AgentConfig, n: int
) -> list[tuple[trice.Agent, trice.Agent]]:
    """Open n pairs of agents one after the other, each held open by ``stack``."""
    pairs = []
    for _ in range(n):
        a = await stack.enter_async_context(trice.open_agent(config, controlling=True))
        b = await stack.enter_async_context(trice.open_agent(config, controlling=False))
        pairs.append((a, b))
    return pairs


async def _trice_held_open(n: int, measure: Callable[[], None], batch: int = 0) -> None:
    """Open n pairs, connect them all (``batch`` pairs at a time, or all at once), and call
    ``measure`` while they are open and idle.

    The agents are held open by one :class:`contextlib.AsyncExitStack` in one task, so that
    the harness itself keeps nothing per pair alive (a task per pair waiting to close its
    agents costs about 2 KiB of trio's own): what is measured is the agents, as the aioice
    run measures its connections (whose harness tasks are done by then).
    """
    config = loopback_config()
    async with AsyncExitStack() as stack:
        pairs = await _open_pairs(stack, config, n)
        step = batch or n
        with trio.fail_after(CONNECT_LIMIT):
            for start in range(0, n, step):
                async with trio.open_nursery() as nursery:
                    for a, b in pairs[start : start + step]:
                        nursery.start_soon(_gather_and_connect, a, b)
        del pairs, a, b
        measure()


def _trice_memory(n: int) -> float:
    """KiB of traced allocations per agent, once every pair is connected."""
    result: list[float] = []

    def measure() -> None:
        gc.collect()
        current, _peak = tracemalloc.get_traced_memory()
        result.append((current - base) / (2 * n) / KIB)

    trio.run(_trice_held_open, 1, lambda: None)  # (first use, not counted: as aioice's)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    trio.run(_trice_held_open, n, measure)
    tracemalloc.stop()
    return result[0]


async def _trice_fd_exhaustion(n: int) -> str:
    try:
        await _trice_pairs(n)
    except Exception as exc:  # the bench's nursery groups the pairs that failed together
        leaves = _leaves(exc)
        kinds = sorted({type(e).__name__ for e in leaves})
        first = leaves[0]
        return f"{len(leaves)} pairs raised {', '.join(kinds)}; e.g. {first}"
    return "no error: every pair connected"


def _leaves(exc: BaseException) -> list[BaseException]:
    inner = getattr(exc, "exceptions", None)
    if not isinstance(inner, tuple):
        return [exc]
    return [leaf for e in inner for leaf in _leaves(e)]


PHASES = ("open", "gather", "signal", "connect", "close")


def _phase_clock(n: int, spent: dict[str, float]) -> Callable[[str], None]:
    """``phase(name)`` puts the CPU time since the last call (or since this one), in
    microseconds per pair, into ``spent[name]``."""
    mark = time.process_time()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.process_time()
        spent[name] = (now - mark) * 1e6 / n
        mark = now

    return phase


async def _trice_phases(n: int, nomination: trice.Nomination) -> dict[str, float]:
    """Where a pair's CPU goes: n pairs opened one after the other, then each phase for all
    of them (all connecting at once); microseconds of this process's CPU per pair."""
    config = loopback_config(nomination=nomination)
    spent: dict[str, float] = {}
    phase = _phase_clock(n, spent)
    async with AsyncExitStack() as stack:
        pairs = await _open_pairs(stack, config, n)
        phase("open")
        for a, b in pairs:
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
        phase("gather")
        for a, b in pairs:
            signal(a, b)
        phase("signal")
        with trio.fail_after(CONNECT_LIMIT):
            async with trio.open_nursery() as nursery:
                for a, b in pairs:
                    nursery.start_soon(_connect_pair, a, b)
        phase("connect")
    phase("close")
    return spent


def _phases(n: int) -> None:
    """Print :func:`_trice_phases` for both nomination modes, and :func:`_aioice_phases`,
    each in a fresh process."""
    print(f"\nWhere a pair's time goes: {n} pairs, CPU microseconds per pair (this process)\n")
    header = f"{'nomination':<12}" + "".join(f"{name:>9}" for name in PHASES) + f"{'total':>9}"
    print(header)
    print("-" * len(header))
    kinds = [trice.Nomination.REGULAR.value, trice.Nomination.AGGRESSIVE.value]
    if _aioice_setup():
        kinds.append(AIOICE)
    for kind in kinds:
        spent = _in_fresh_process("--phases-one", kind, str(n))
        if spent is None:
            print(f"{kind:<12}failed (see above)")
            continue
        cells = "".join(f"{spent[name]:>9.0f}" for name in PHASES)
        print(f"{kind:<12}{cells}{sum(spent.values()):>9.0f}")
    print(
        "(open: both agents of each pair, one pair after the other; gather: until each has its"
        " host\n candidates; signal: each handed the other's; connect: all pairs at once, until"
        " both\n connect() calls of every pair returned; close: leaving all the agents;"
        " aioice: the same\n phases around its own calls, nominating aggressively)"
    )


# ---------------------------------------------------------------- aioice


def _aioice_setup() -> bool:
    try:
        import aioice.ice
    except ImportError:
        return False

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    aioice.ice.get_host_addresses = loopback_only
    return True


async def _aioice_phases(n: int) -> dict[str, float]:
    """:func:`_trice_phases` for aioice (which nominates aggressively): the same phases,
    timed around aioice's own calls."""

    spent: dict[str, float] = {}
    phase = _phase_clock(n, spent)
    pairs = [aioice_pair() for _ in range(n)]
    phase("open")
    await asyncio.gather(*(c.gather_candidates() for pair in pairs for c in pair))
    phase("gather")
    for a, b in pairs:
        await aioice_signal(a, b)
    phase("signal")
    await asyncio.gather(*(asyncio.gather(a.connect(), b.connect()) for a, b in pairs))
    phase("connect")
    for a, b in pairs:
        await a.close()
        await b.close()
    phase("close")
    return spent


async def _aioice_pairs(n: int, measure: Callable[[], None] | None = None) -> tuple[float, int]:

    async def one_pair() -> tuple[object, object, bool]:
        a, b = aioice_pair()
        await asyncio.gather(a.gather_candidates(), b.gather_candidates())
        ok = bool(a.local_candidates and b.local_candidates)
        await aioice_signal(a, b)
        try:
            await asyncio.gather(a.connect(), b.connect())
        except ConnectionError:
            ok = False
        return a, b, ok

    gc.collect()  # (a fresh heap for each kind: see the module's docstring)
    start = time.perf_counter()
    pairs = await asyncio.gather(*(one_pair() for _ in range(n)))
    elapsed = time.perf_counter() - start
    if measure is not None:
        measure()
    for a, b, _ok in pairs:
        await a.close()  # type: ignore[attr-defined]
        await b.close()  # type: ignore[attr-defined]
    return elapsed, sum(ok for _a, _b, ok in pairs)


def _aioice_memory(n: int) -> float:
    result: list[float] = []

    def measure() -> None:
        gc.collect()
        result.append((tracemalloc.get_traced_memory()[0] - base) / (2 * n) / KIB)

    asyncio.run(_aioice_pairs(1))  # (first use, not counted: as trice's)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    asyncio.run(_aioice_pairs(n, measure))
    tracemalloc.stop()
    return result[0]


def _rss() -> int:
    """Bytes this process holds in memory (resident set size; Linux's /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _python_arenas() -> tuple[int, int]:
    """Bytes of Python's own allocator (pymalloc): held by objects, and free in its arenas
    (free blocks of pools in use, and pools unused), from ``sys._debugmallocstats`` (CPython
    writes it to the C stderr: read back through a temporary file)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()

    def figure(label: str) -> int:
        match = re.search(rf"{label}\s*=\s*([\d,]+)", text)
        return int(match.group(1).replace(",", "")) if match else 0

    free = figure("# bytes in available blocks") + figure(r"unused pools \* \d+ bytes")
    return figure("# bytes in allocated blocks"), free


def _rss_one(kind: str, n: int, batch: int = 0) -> None:
    """Print, as JSON, the KiB of resident memory per agent that n connected pairs add to a
    fresh process (after one pair was opened and closed, so that first use is not counted):
    what the process holds, the Python allocator's arenas and the C library's heap included,
    which traced allocations leave out: almost all of it arenas kept for objects freed after
    connecting (C memory, OpenSSL's hash states among it, was some 0.2 KiB an agent on
    2026-12-01).  trice's pairs connect ``batch`` at a time, or all at once: the arenas a
    burst leaves hold what it freed, the more the larger the burst."""
    _raise_fd_limit(4 * n + 256)
    after: list[tuple[int, int, int]] = []

    def measure() -> None:
        gc.collect()
        after.append((_rss(), *_python_arenas()))

    if kind == AIOICE:
        _aioice_setup()
        asyncio.run(_aioice_pairs(1))
        gc.collect()
        base = (_rss(), *_python_arenas())
        asyncio.run(_aioice_pairs(n, measure))
    else:
        trio.run(_trice_held_open, 1, lambda: None)
        gc.collect()
        base = (_rss(), *_python_arenas())
        trio.run(_trice_held_open, n, measure, batch)
    kib = [(now - then) / (2 * n) / KIB for now, then in zip(after[0], base, strict=True)]
    print(json.dumps({"kib": kib[0], "objects": kib[1], "free": kib[2]}))


#: The kinds of timed run: trice with each nomination mode, and aioice.
TRICE, TRICE_AGGRESSIVE, AIOICE = "trice", "trice-aggressive", "aioice"


def _timed_alone(kind: str, n: int) -> tuple[float, int] | None:
    """One timed run (``kind`` is one of :data:`TRICE`, :data:`TRICE_AGGRESSIVE` and
    :data:`AIOICE`) in a fresh process of its own.

    In one process the second of two runs came out up to a fifth faster or slower than the
    first, whichever library ran first (the interpreter's arenas and the collector's
    thresholds carry over): a fresh process each keeps the comparison even.
    """
    got = _in_fresh_process("--one", kind, str(n))
    if got is None:
        return None
    return float(got["seconds"]), int(got["ok"])


def _in_fresh_process(*args: str) -> dict[str, float] | None:
    """Run this script with ``args`` in a process of its own and return the JSON object it
    prints, or ``None`` (with a note on stderr) if it printed none."""
    command = [sys.executable, __file__, *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            got: dict[str, float] = json.loads(line)
            return got
    print(f"{' '.join(args)} failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
    return None


def _one(kind: str, n: int) -> None:
    _raise_fd_limit(4 * n + 256)
    if kind == TRICE:
        seconds, ok = trio.run(_trice_pairs, n), n
    elif kind == TRICE_AGGRESSIVE:
        seconds, ok = trio.run(_trice_pairs, n, None, trice.Nomination.AGGRESSIVE), n
    else:
        _aioice_setup()
        seconds, ok = asyncio.run(_aioice_pairs(n))
    print(json.dumps({"seconds": seconds, "ok": ok}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="N pairs of agents connecting at once")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--memory-size", type=int, default=200, help="pairs for the memory run")
    parser.add_argument(
        "--rss-size", type=int, default=1000, help="pairs for the resident-memory run"
    )
    parser.add_argument(
        "--rss-one", nargs=3, metavar=("KIND", "N", "BATCH"), help=argparse.SUPPRESS
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each size")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--phases",
        type=int,
        metavar="N",
        help="only print where a pair's CPU goes (open, gather, signal, connect, close), N pairs",
    )
    parser.add_argument("--phases-one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases_one:
        kind, count = args.phases_one[0], int(args.phases_one[1])
        _raise_fd_limit(4 * count + 256)
        if kind == AIOICE:
            _aioice_setup()
            gc.collect()  # (a fresh heap for each kind, as in the timed runs)
            print(json.dumps(asyncio.run(_aioice_phases(count))))
        else:
            gc.collect()
            print(json.dumps(trio.run(_trice_phases, count, trice.Nomination(kind))))
        return
    if args.phases:
        _phases(args.phases)
        return
    if args.one:
        _one(args.one[0], int(args.one[1]))
        return
    if args.rss_one:
        _rss_one(args.rss_one[0], int(args.rss_one[1]), int(args.rss_one[2]))
        return
    if args.quick:
        args.sizes, args.memory_size, args.rss_size, args.repeat = [100], 50, 200, 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    have_aioice = _aioice_setup()
    rows = []
    kinds = [TRICE, TRICE_AGGRESSIVE] + ([AIOICE] if have_aioice else [])
    for n in args.sizes:
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        aio_ok: list[int] = []
        ratios: dict[str, list[float]] = {TRICE: [], TRICE_AGGRESSIVE: []}
        for turn in range(max(1, args.repeat)):
            # The order turns by one each turn, so that no kind always runs first.
            got: dict[str, float] = {}
            for kind in kinds[turn % len(kinds) :] + kinds[: turn % len(kinds)]:
                timed = _timed_alone(kind, n)
                if timed is not None:
                    got[kind] = timed[0]
                    times[kind].append(timed[0])
                    if kind == AIOICE:
                        aio_ok.append(timed[1])
            for kind, ratio in ratios.items():
                if kind in got and AIOICE in got:
                    ratio.append(got[AIOICE] / got[kind])
        if times[TRICE] or times[TRICE_AGGRESSIVE]:
            rows.append((n, times, aio_ok, ratios))

    def ms(runs: list[float]) -> str:
        return f"{statistics.median(runs) * 1000:.0f}ms" if runs else "n/a"

    def speed(ratio: list[float]) -> str:
        if not ratio:
            return "n/a"
        return f"{statistics.median(ratio):.2f}x ({min(ratio):.2f}-{max(ratio):.2f})"

    _raise_fd_limit(4 * args.memory_size + 256)
    trice_kib = _trice_memory(args.memory_size)
    aio_kib = _aioice_memory(args.memory_size) if have_aioice else None
    rss_kib = {
        kind: _in_fresh_process("--rss-one", kind, str(args.rss_size), "0")
        for kind in [TRICE] + ([AIOICE] if have_aioice else [])
    }
    # (The same, the pairs connecting 100 at a time: what the arenas keep of a burst.)
    rss_batched = _in_fresh_process("--rss-one", TRICE, str(args.rss_size), "100")

    print("\nScale: N pairs of agents in one process, host candidates on loopback\n")
    header = (
        f"{'pairs':>6} {'runs':>5} {'trice':>8} {'aggressive':>11} {'aioice':>8} {'aioice ok':>10}"
        f"  {'speed: trice':>19} {'aggressive':>19}"
    )
    print(header)
    print("-" * len(header))
    for n, times, aio_ok, ratios in rows:
        ok = f"{min(aio_ok)}/{n}" if aio_ok else "n/a"
        print(
            f"{n:>6} {len(times[TRICE]):>5} {ms(times[TRICE]):>8}"
            f" {ms(times[TRICE_AGGRESSIVE]):>11} {ms(times.get(AIOICE, [])):>8} {ok:>10}"
            f"  {speed(ratios[TRICE]):>19} {speed(ratios[TRICE_AGGRESSIVE]):>19}"
        )
    print(
        "(time until every pair is connected, medians of the runs.  trice: default, regular"
        " nomination;\n aggressive: trice nominating aggressively, as aioice does.  speed:"
        " aioice's time / trice's,\n the median over turns and its range; above 1x, trice"
        " connects them all sooner)"
    )
    print(
        f"\nmemory per agent, once connected: traced Python allocations ({args.memory_size}"
        f" pairs), and resident memory ({args.rss_size} pairs, a fresh process each)"
    )
    for kind, traced in ((TRICE, trice_kib), (AIOICE, aio_kib)):
        if traced is None:
            continue
        held = rss_kib.get(kind)
        resident = "resident n/a"
        if held:
            resident = (
                f"{held['kib']:6.1f} KiB resident (Python's arenas: {held['objects']:.1f} in"
                f" objects, {held['free']:.1f} free)"
            )
        print(f"  {kind:<7}{traced:6.1f} KiB traced  {resident}")
    if rss_batched:
        print(
            f"  trice, the pairs connecting 100 at a time: {rss_batched['kib']:6.1f} KiB resident"
            f" (arenas: {rss_batched['objects']:.1f} in objects, {rss_batched['free']:.1f} free)"
        )
    print(
        "(traced: what Python objects hold.  resident: what the process holds; it adds the\n"
        " space Python's allocator keeps free in its arenas after objects of the connecting\n"
        " burst were freed (CPython 3.11 gives an arena back only once all of it is free):\n"
        " the larger the burst, the more; and C memory, some 0.2 KiB an agent)"
    )

    # Descriptors running out: back to the limit the process started with (1024 by default).
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    n = 600
    print(f"\nfile descriptors: limit {min(soft, 1024)}, {n} pairs ({2 * n} sockets and more):")
    print(f"  trice:  {trio.run(_trice_fd_exhaustion, n)}")
    if have_aioice:
        try:
            _, done = asyncio.run(_aioice_pairs(n))
            print(f"  aioice: no error raised; {done}/{n} pairs connected")
        except Exception as exc:
            print(f"  aioice: {type(exc).__name__}: {exc}")
    print()


if __name__ == "__main__":
    main()
