"""How soon :func:`trice.address_changes` says that an address came or went.

In a network namespace of its own (root needed), with a veth pair up, a watcher process
follows interface ``v0`` (``tests/test_netwatch.py``'s); the bench adds an IPv4 address to
``v0`` and removes it, ``--rounds`` times, and times each from the return of ``ip addr``
until the watcher's line: with the kernel's notices (rtnetlink), and with the poll alone
(``interval`` 2 s, the default, as where there are no notices)::

    .venv/bin/python bench/netwatch.py [--rounds 20] [--quick]

The notice path's figure is mostly the watch's own settling time (50 ms: it lets the other
notices of a burst come before it reads the interfaces once).  The poll's is its interval:
each change is made right after the line before, so right after a read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_netwatch import _watcher

from natlab import lone_namespace, natlab_available

POLL_ONLY = "import trice._trio._netwatch as w; w.address_notices = lambda **_: None\n"


def measure(rounds: int, *, poll_only: bool) -> list[float]:
    """Milliseconds from each change to the watcher's line."""
    taken = []
    with lone_namespace("netwatch-bench") as ns:
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "set", "v0", "up")
        ns.ip("link", "set", "v1", "up")
        with _watcher(ns, prelude=POLL_ONLY if poll_only else "", interval=2.0) as watcher:
            for _ in range(rounds):
                for change in ("add", "del"):
                    ns.ip("addr", change, "198.51.100.7/24", "dev", "v0")
                    start = time.monotonic()
                    watcher.next(10)
                    taken.append((time.monotonic() - start) * 1000)
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 3
    reason = natlab_available(turn=False)
    if reason is not None:
        print(f"skipped: {reason}")
        return
    print(f"\nAn address added or removed, until address_changes says so ({args.rounds} rounds)\n")
    header = f"{'watch':<28}{'changes':>8}{'median':>10}{'p90':>10}{'max':>10}"
    print(header)
    print("-" * len(header))
    for label, poll_only in (("kernel's notices", False), ("poll every 2 s (no notices)", True)):
        taken = sorted(measure(args.rounds, poll_only=poll_only))
        p90 = taken[int(0.9 * (len(taken) - 1))]
        print(
            f"{label:<28}{len(taken):>8}{statistics.median(taken):>8.1f}ms"
            f"{p90:>8.1f}ms{taken[-1]:>8.1f}ms"
        )
    print("(from the return of `ip addr add/del` until the watcher's line)")


if __name__ == "__main__":
    main()
