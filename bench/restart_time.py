"""Time to connected again after an ICE restart, between real peers over loopback.

Each run starts a fresh pair of peer processes, connects them (not timed), then sends
``restart`` to both (``tests/peers/harness.py``, ``restart_pair``): each restarts, describes
itself anew (Pion also gathers anew: its ``Agent.Restart`` drops its candidates), takes the
other's new description through the harness, and says ``connected`` again, timing itself
from its own restart.  A sample is the later of the two; it includes the harness relaying
the descriptions, so it is a comparison between rows, not an absolute figure.  Rows are
measured in rounds (one run of each row per round, the order turned by one each round), as
``connect_time.py`` does, and which peer is told to restart first alternates.  aioice has
no ICE restart, so it has no row::

    .venv/bin/python bench/restart_time.py [--runs 15 | --quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from _peers import PeerUnavailable, Stats
from connect_time import format_table

from peers.harness import connect_pair, exchange, peer_command, peer_pair, restart_pair

#: (controlling, controlled) peer kinds, in table order.
PAIRS = [("pion", "pion"), ("trice", "trice"), ("trice", "pion"), ("pion", "trice")]
#: Datagrams each way after the restart: the new pair must carry them all.
COUNT = 20


def measure_once(kind_a: str, kind_b: str, *, b_first: bool = False) -> float:
    """One run: connect, restart (the controlled peer told first if ``b_first``), check the
    new pair with a data round; ms to connected."""
    cmd_a = peer_command(kind_a, controlling=True)
    cmd_b = peer_command(kind_b, controlling=False)
    with peer_pair(cmd_a, cmd_b) as (a, b):
        connect_pair(a, b)
        again = restart_pair(a, b, b_first=b_first)
        for done in exchange(a, b, COUNT):
            if done["received"] != COUNT:
                raise RuntimeError(f"{kind_a}-{kind_b}: {done} after the restart")
        return max(float(again.a["elapsed_ms"]), float(again.b["elapsed_ms"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="runs per row (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 runs per row")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    pairs = []
    for kind_a, kind_b in PAIRS:
        try:
            peer_command(kind_a, controlling=True)
            peer_command(kind_b, controlling=False)
        except PeerUnavailable as exc:
            print(f"skipping {kind_a}-{kind_b}: {exc}", file=sys.stderr)
            continue
        pairs.append((kind_a, kind_b))
    labels = [f"{a}-{b}" for a, b in pairs]
    print(f"measuring {', '.join(labels)} ({runs} rounds)...", flush=True)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    rows = list(zip(pairs, labels, strict=True))
    for i in range(runs):
        # As connect_time.py: the order turns by one row each round (no row always runs
        # first), and which peer restarts first alternates (the sample is the later of
        # the two: the one told second would always carry its wait otherwise).
        for (kind_a, kind_b), label in rows[i % len(rows) :] + rows[: i % len(rows)]:
            samples[label].append(measure_once(kind_a, kind_b, b_first=i % 2 == 1))
    print(format_table([(label, Stats.of(samples[label])) for label in labels]))
    print("(for this table: from each peer's restart until both are connected again)")
    reference = samples.get("pion-pion")
    if reference:
        for label in ("trice-pion", "pion-trice", "trice-trice"):
            if label in samples:
                ratio = statistics.median(samples[label]) / statistics.median(reference)
                print(f"{label:<12} {ratio:.2f}x pion-pion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
