"""Data plane, counted: Python opcodes a datagram, trice beside raw trio sockets.

``data_plane.py`` times the data path, and on a shared machine its ratios move by a tenth
from run to run.  This counts instead what the interpreter executes for each datagram
(``sys.settrace`` with opcode events), over the same paths and with the same drivers as
``data_plane.py``: the floor (raw non-blocking UDP sockets driven by trio) and a connected
pair of trice agents, on loopback, in one trio run.  A count does not move with the load:
the same code gives the same figure, run after run, to within a few opcodes.

What is counted is everything Python runs meanwhile: the benchmark's own loop, trio's
scheduler and I/O manager, and trice.  trio's clock is a :class:`trio.testing.MockClock`,
stopped while counting (it runs at real speed the rest of the time), so that no timer
comes due under the tracer's slowness (the agents' leases, consent checks): the count is
the data path's alone.  With the clock stopped, trio's own time limits never come: a
counted run that makes no progress (runs no opcode) for :data:`STALL` seconds of real time
is stopped by a watchdog thread, and a datagram lost (a drain whose burst the kernel's buffer
could not hold, say) ends the benchmark with an error, since a count divided by datagrams
that did not all come is no figure.  System calls and the C parts of trio and the
interpreter are not counted; ``data_plane.py`` shows that both paths make the same system
calls.

Three figures, as ``data_plane.py``'s: one way (a datagram sent and received), ping-pong (a
round trip: two sends, two receives), and receive alone (a burst queued in the kernel, then
drained); for trice also the drain by a reader that takes what is queued with
``receive_nowait``.
Run: ``python bench/opcodes.py [--count N]``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_plane as dp

T = TypeVar("T")

#: Seconds of real time without an opcode run after which a counted run is taken as stuck
#: (waiting for a datagram that was lost: trio's clock is stopped, its timeouts never come).
STALL = 3.0


class Lost(Exception):
    """A counted run lost datagrams, or waited for one that never came."""


class _Counter:
    """Counts the opcodes Python executes between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.count = 0

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
        return self._trace

    def start(self) -> None:
        self.count = 0
        # (Opcode events for the frame that calls settrace too: CPython 3.12.1 sent none
        # in a process's first traced session, python/cpython#114480, and the first figure
        # was 0.)
        frame = sys._getframe(1)
        frame.f_trace_opcodes = True
        sys.settrace(self._trace)

    def stop(self) -> int:
        sys.settrace(None)
        return self.count


async def _counted(
    clock: trio.testing.MockClock,
    per: int,
    what: str,
    run: Callable[..., Awaitable[T]],
    *args: object,
) -> tuple[float, T]:
    """Opcodes per datagram (or round trip) of ``run(*args)``, the clock stopped meanwhile,
    and what ``run`` returned.  Raises :class:`Lost` (saying ``what``) when ``run`` runs no
    opcode for :data:`STALL` seconds: it waits for what never comes."""
    counter = _Counter()
    token = trio.lowlevel.current_trio_token()
    finished = threading.Event()
    with trio.CancelScope() as scope:

        def watch() -> None:  # (in a thread of its own: not traced, and not on trio's clock)
            seen = -1
            while not finished.wait(STALL):
                if counter.count == seen:
                    token.run_sync_soon(scope.cancel)
                    return
                seen = counter.count

        watchdog = threading.Thread(target=watch, name="opcodes watchdog", daemon=True)
        watchdog.start()
        clock.rate = 0.0
        counter.start()
        try:
            result = await run(*args)
        finally:
            count = counter.stop()
            clock.rate = 1.0
            finished.set()
            watchdog.join()
    if scope.cancelled_caught:
        raise Lost(f"{what}: nothing came for {STALL:g} s (a datagram lost)")
    return count / per, result


def _all_came(what: str, received: int, sent: int) -> None:
    if received < sent:
        raise Lost(f"{what}: {sent - received} of {sent} datagrams lost")


async def _measure(clock: trio.testing.MockClock, count: int) -> dict[str, dict[str, float]]:
    pings = max(1, count // 2)
    figures: dict[str, dict[str, float]] = {}
    lost: Lost | None = None
    async with dp.both_paths(count + 16) as paths:
        try:
            for p in paths:
                # Once untraced first: the same warm code for both paths.
                await dp._ping_pong(p.send_a, p.receive_a, p.send_b, p.receive_b, 100)
                await dp._one_way(p.send_a, p.receive_b, 100)
                row = figures[p.name] = {}
                what = f"{p.name}, one way"
                row["one way"], (_, delivered) = await _counted(
                    clock, count, what, dp._one_way, p.send_a, p.receive_b, count
                )
                _all_came(what, round(delivered * count), count)
                row["ping-pong"], _ = await _counted(
                    clock,
                    pings,
                    f"{p.name}, ping-pong",
                    dp._ping_pong,
                    *(p.send_a, p.receive_a, p.send_b, p.receive_b, pings),
                )
                drains = {"receive": p.receive_b, "receive_nowait": p.receive_b_batched}
                for kind, receive in drains.items():
                    if receive is None:
                        continue
                    what = f"{p.name}, {kind}"
                    row[kind], (_, got) = await _counted(
                        clock, count, what, dp._drain_rate, p.fill, receive, count
                    )
                    _all_came(what, got, count)
        except Lost as exc:
            lost = exc  # (raised once the agents are closed, not through their nurseries)
    if lost is not None:
        raise SystemExit(
            f"bench/opcodes.py: {lost}: no figure counts it.  Is the kernel's receive buffer"
            f" too small for {count} datagrams (SO_RCVBUFFORCE needs root; or raise"
            " net.core.rmem_max, or lower --count)?"
        )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2000, help="datagrams a figure")
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args(argv)
    if args.quick:
        args.count = 500
    clock = trio.testing.MockClock(rate=1.0)
    figures = trio.run(_measure, clock, args.count, clock=clock)
    floor = figures["floor (raw trio sockets)"]
    print(
        f"\nData plane, counted: Python opcodes a datagram ({dp.SIZE} bytes, loopback; a"
        f" ping-pong figure is a round trip), {args.count} datagrams a figure\n"
    )
    kinds = ["one way", "ping-pong", "receive", "receive_nowait"]
    header = f"{'path':<26}" + "".join(f"{k:>16}" for k in kinds)
    print(header)
    print("-" * len(header))
    for name, row in figures.items():
        cells = "".join(f"{row[k]:>16,.0f}" if k in row else f"{'':>16}" for k in kinds)
        print(f"{name:<26}{cells}")
    trice_row = figures["trice"]
    # (receive_nowait against the floor's plain receive: the floor has no queue to take from)
    against = {k: floor[k if k in floor else "receive"] for k in kinds}
    cells = "".join(f"{trice_row[k] / against[k]:>15.2f}x" for k in kinds)
    print(f"{'trice vs floor':<26}{cells}")
    print(
        "\n(receive_nowait: trice's reader that takes what is queued without a schedule point"
        " each;\n its ratio is against the floor's plain receive)"
    )


if __name__ == "__main__":
    main()
