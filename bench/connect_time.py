"""Time to connected between real ICE peers over loopback host candidates.

Each run starts a fresh pair of peer processes, exchanges their parameters and candidates,
sends ``start`` to both and takes the later of the two ``connected`` times (so gathering and
process start-up are excluded). Prints median, p10 and p90 of ``--runs`` runs per row.

The row ``trice-trice (warm_up)`` is trice-trice with both peers calling
:func:`trice.warm_up` at start-up, before anything is measured: a fresh process's first
connection runs code the interpreter has not specialised yet, which this pays ahead.

The extra row ``trice-trice (in-process)`` runs both trice agents in one trio run: the clock
starts once both hold each other's parameters and candidates and stops when both
``connect()`` calls returned (no processes, pipes or JSON in between)::

    .venv/bin/python bench/connect_time.py [--runs 30] [--ipv6] [--only aioice-aioice ...]
"""

from __future__ import annotations

import argparse
import sys

from _peers import WARMED, Row, Stats, default_rows, measure_cmds, measure_in_process


def format_table(results: list[tuple[str, Stats]]) -> str:
    header = f"{'pair (controlling-controlled)':<32} {'runs':>5} {'median':>9} {'p10':>9} "
    header += f"{'p90':>9} {'min':>9} {'max':>9}"
    lines = [header, "-" * len(header)]
    for label, s in results:
        lines.append(
            f"{label:<32} {s.n:>5} {s.median:>9.3f} {s.p10:>9.3f} {s.p90:>9.3f}"
            f" {s.minimum:>9.3f} {s.maximum:>9.3f}"
        )
    lines.append("(milliseconds from 'start' until both peers are connected)")
    return "\n".join(lines)


IN_PROCESS = "trice-trice (in-process)"


def run(rows: list[Row], runs: int) -> list[tuple[str, Stats]]:
    results = []
    for row in rows:
        print(f"measuring {row.label} ({runs} runs)...", file=sys.stderr)
        results.append((row.label, Stats.of(measure_cmds(row.peer_a_cmd, row.peer_b_cmd, runs))))
    return results


def run_in_process(runs: int, ipv6: bool) -> tuple[str, Stats]:
    label = IN_PROCESS + (" ipv6" if ipv6 else "")
    print(f"measuring {label} ({runs} runs)...", file=sys.stderr)
    return label, Stats.of(measure_in_process(runs, ipv6=ipv6))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30, help="runs per row (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 runs per row")
    parser.add_argument("--ipv6", action="store_true", help="use ::1 instead of 127.0.0.1")
    parser.add_argument("--only", nargs="+", metavar="LABEL", help="only these rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 5
    rows = default_rows(ipv6=args.ipv6)
    in_process = True
    if args.only:
        rows = [r for r in rows if r.label in args.only or r.label.split()[0] in args.only]
        in_process = IN_PROCESS in args.only or "in-process" in args.only
    if not rows and not in_process:
        print("no rows to measure", file=sys.stderr)
        return 1
    results = run(rows, args.runs)
    if in_process:
        results.append(run_in_process(args.runs, args.ipv6))
    print(format_table(results))
    verdicts = format_targets(results)
    if verdicts:
        print()
        print(verdicts)
    return 0


def format_targets(results: list[tuple[str, Stats]]) -> str:
    """The issue's targets, each against the row it is judged by (medians of this run):
    trice-trice under 1 ms, and trice with a peer no slower than that peer with itself."""
    medians = {label: s.median for label, s in results}
    lines = []
    for label in ("trice-trice", "trice-trice" + WARMED, IN_PROCESS):
        if label in medians:
            verdict = "met" if medians[label] < 1.0 else "not met"
            lines.append(f"{label:<32} {medians[label]:>7.3f} ms  target < 1 ms: {verdict}")
    for label, median in medians.items():
        kinds = label.split()[0].split("-")
        if len(kinds) != 2 or "trice" not in kinds or kinds[0] == kinds[1]:
            continue
        other = kinds[1] if kinds[0] == "trice" else kinds[0]
        reference = medians.get(f"{other}-{other}")
        if reference is None:
            continue
        ratio = median / reference
        verdict = "met" if ratio <= 1.0 else "not met"
        lines.append(
            f"{label:<32} {median:>7.3f} ms  {ratio:5.2f}x {other}-{other} "
            f"({reference:.3f} ms): {verdict}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
