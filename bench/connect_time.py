"""Time to connected between real ICE peers over loopback host candidates.

Each run starts a fresh pair of peer processes, exchanges their parameters and candidates,
waits until both have taken them in (each answers a ``sync`` sent behind them: since
2026-11-29; before, ``start`` followed at once, and a peer still taking the other's
description in was timed doing so), sends ``start`` to both and takes the time from the
first of the two starts until both are connected, on the machine's clock: each peer says
when it read ``start`` (stamped just before its connect call, one scheduling step after
the read, the libnice peer's at the read: docs/guide/performance.rst) and when its connect
call returned, inside its timeout guard (so
gathering, process start-up and the peer program's own timeout guard are excluded; until
2026-11-29 the trice and aioice peers' clocks included the guard, which in the trice peer
took 18-45 µs).  Until 2026-12-02 the figure was the later of the two peers' own times:
a trice or aioice peer that read ``start`` late could find itself connected already (it
answers the other's checks, and checks back, before it is told to start), and its late
wake-up was in no figure, where a late Pion's (which drops checks until it starts) was in
its own (the benchhonesty review).  Prints median, p10 and p90 of ``--runs`` runs per row.

``start`` goes to the controlling peer first in even rounds and to the controlled peer first
in odd ones: the time from one start to the other (the second peer's wake-up) is in the
figure, whichever peer is late.  (Until 2026-11-29 11:50 the controlling peer always came first,
which put the skew on the controlled side's peer program every time.)

The rows are measured in rounds, one run of each row per round, rather than one row after
the other: on a shared machine the load drifts, and a row measured during a busy minute
would otherwise be compared with one measured during a quiet one.  Each ratio against a
reference row (trice-pion against pion-pion, say) is also given as the median of the
ratios within a round (``paired``), which that drift skews least, with a 95 % interval for
it (resampling the rounds) and the count of rounds in which the row was the sooner: an
interval that holds 1x means that the run cannot tell the row from its reference.

The row ``trice-trice (warm_up)`` is trice-trice with both peers calling
:func:`trice.warm_up` at start-up, before anything is measured: a fresh process's first
connection runs code the interpreter has not specialised yet, which this pays ahead.

The rows ``libnice-libnice``, ``trice-libnice`` and ``libnice-trice`` take libnice (GStreamer's
webrtcbin's ICE agent, ``tests/peers/libnice_peer.py``, run by a Python whose ``gi`` has it);
they are left out, with a note, where there is none.  libnice paces its checks every 20 ms
(its ``stun-pacing-timer``) and, in regular nomination, nominates on a later tick: some 60 ms.

The extra row ``trice-trice (in-process)`` runs both trice agents in one trio run: the clock
starts once both hold each other's parameters and candidates and stops when both
``connect()`` calls returned (no processes, pipes or JSON in between)::

    .venv/bin/python bench/connect_time.py [--runs 30] [--ipv6] [--only aioice-aioice ...]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys

from _peers import (
    WARMED,
    PeerUnavailable,
    Row,
    Stats,
    default_rows,
    measure_in_process,
    measure_pair,
)


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

#: The libnice rows, after the default ones (each trice row against libnice-libnice).
LIBNICE_PAIRS = [("libnice", "libnice"), ("trice", "libnice"), ("libnice", "trice")]


def libnice_rows(*, ipv6: bool = False) -> list[Row]:
    """The libnice rows, or none (with a note) where libnice cannot run here."""
    try:
        return [Row.of(kind_a, kind_b, ipv6=ipv6) for kind_a, kind_b in LIBNICE_PAIRS]
    except PeerUnavailable as exc:
        print(f"skipping the libnice rows: {exc}", file=sys.stderr)
        return []


def run(rows: list[Row], runs: int, *, in_process: bool = False, ipv6: bool = False) -> Results:
    """``runs`` rounds, each one run of every row; then, if asked, ``runs`` runs of the
    in-process pair.

    The in-process pair runs in this very process, after the rounds rather than among them:
    right after a round, the peers' processes are still exiting and this process's pipe
    readers winding down, which made it some 0.4 ms slower.  It is compared with no other
    row."""
    labels = [row.label for row in rows]
    rounds: list[dict[str, float]] = [{} for _ in range(runs)]
    spans: list[dict[str, float]] = [{} for _ in range(runs)]
    if rows:
        print(f"measuring {', '.join(labels)} ({runs} rounds)...", file=sys.stderr)
        for i, (sample, span) in enumerate(zip(rounds, spans, strict=True)):
            # The order turns by one row each round, so that no row always runs first (or
            # right after the same other row).
            for row in rows[i % len(rows) :] + rows[: i % len(rows)]:
                # Which peer gets ``start`` first alternates with the rounds.
                connected = measure_pair(row.peer_a_cmd, row.peer_b_cmd, b_first=i % 2 == 1)
                whole = connected.whole_ms
                sample[row.label] = connected.elapsed_ms if whole is None else whole
                if connected.span_ms is not None:
                    span[row.label] = connected.span_ms
    if in_process:
        label = IN_PROCESS + (" ipv6" if ipv6 else "")
        print(f"measuring {label} ({runs} runs)...", file=sys.stderr)
        labels.append(label)
        for sample, ms in zip(rounds, measure_in_process(runs, ipv6=ipv6), strict=True):
            sample[label] = ms
    return Results(labels, rounds, spans)


class Results:
    """The samples of each row, by round."""

    def __init__(
        self,
        labels: list[str],
        rounds: list[dict[str, float]],
        spans: list[dict[str, float]] | None = None,
    ) -> None:
        self.labels = labels
        self.rounds = rounds
        #: By round, each peer row's time from the later of its two starts (see
        #: ``Connected.span_ms``), where both peers told their clock times.
        self.spans = spans or []

    def span_stats(self) -> list[tuple[str, Stats]]:
        """The rows every round of which has a span."""
        return [
            (label, Stats.of([r[label] for r in self.spans]))
            for label in self.labels
            if self.spans and all(label in r for r in self.spans)
        ]

    def stats(self) -> list[tuple[str, Stats]]:
        return [(label, Stats.of([r[label] for r in self.rounds])) for label in self.labels]

    def ratios(self, label: str, reference: str, *, spans: bool = False) -> list[float]:
        """``label``'s time over ``reference``'s, round by round (with ``spans``, of the
        times from the later start)."""
        rounds = self.spans if spans else self.rounds
        return [r[label] / r[reference] for r in rounds if r[reference] > 0]

    def paired_ratio(self, label: str, reference: str, *, spans: bool = False) -> float:
        """The median over rounds of ``label``'s time over ``reference``'s in that round
        (with ``spans``, of the times from the later start)."""
        return statistics.median(self.ratios(label, reference, spans=spans))


#: Resamples for :func:`paired_interval`, and the seed that makes a run's output repeatable.
_BOOTSTRAP = 2000
_SEED = 8445


def paired_interval(ratios: list[float]) -> tuple[float, float]:
    """A 95 % interval for the median of ``ratios`` (a row's time over its reference's,
    round by round): the 2.5th and 97.5th percentiles of the medians of
    :data:`_BOOTSTRAP` resamples of the rounds, drawn with replacement.

    On a shared machine two rows can differ by a tenth from one run to the next with no
    change in either: an interval that holds 1x says that this run cannot tell the row from
    its reference, whichever side of 1x its median fell."""
    rng = random.Random(_SEED)
    n = len(ratios)
    medians = sorted(statistics.median(rng.choices(ratios, k=n)) for _ in range(_BOOTSTRAP))
    return medians[int(0.025 * _BOOTSTRAP)], medians[int(0.975 * _BOOTSTRAP) - 1]


def reference_row(label: str) -> str | None:
    """The row a trice-with-another-peer row is judged against: that peer with itself
    (``trice-pion ipv6`` -> ``pion-pion ipv6``); ``None`` for any other row."""
    pair = label.split(" ", 1)[0]
    kinds = pair.split("-")
    if len(kinds) != 2 or "trice" not in kinds or kinds[0] == kinds[1]:
        return None
    other = kinds[1] if kinds[0] == "trice" else kinds[0]
    return f"{other}-{other}" + label[len(pair) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30, help="runs per row (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 runs per row")
    parser.add_argument("--ipv6", action="store_true", help="use ::1 instead of 127.0.0.1")
    parser.add_argument("--only", nargs="+", metavar="LABEL", help="only these rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 5
    rows = default_rows(ipv6=args.ipv6) + libnice_rows(ipv6=args.ipv6)
    in_process = True
    if args.only:
        rows = [r for r in rows if r.label in args.only or r.label.split()[0] in args.only]
        in_process = IN_PROCESS in args.only or "in-process" in args.only
    if not rows and not in_process:
        print("no rows to measure", file=sys.stderr)
        return 1
    results = run(rows, args.runs, in_process=in_process, ipv6=args.ipv6)
    print(format_table(results.stats()))
    verdicts = format_targets(results)
    if verdicts:
        print()
        print(verdicts)
    spans = format_spans(results)
    if spans:
        print()
        print(spans)
    return 0


def format_spans(results: Results) -> str:
    """A diagnostic beside the targets (which stay judged by the table above): the same runs
    timed from the later of the two peers' starts, on the machine's clock.  The table above
    counts from the first start, so the skew between the starts (the driver writes
    ``start`` to one pipe, then the other, and each program takes its own time to wake and
    read it) is in it; this leaves it out (a trice peer that started after the pair had
    connected shows its few microseconds here)."""
    stats = results.span_stats()
    if not stats:
        return ""
    medians = {label: s.median for label, s in stats}
    lines = ["from the later start (skew between the two starts left out; a diagnostic):"]
    for label, s in stats:
        line = f"  {label:<30} median {s.median:7.3f} ms  p10 {s.p10:7.3f}  p90 {s.p90:7.3f}"
        reference = reference_row(label)
        if reference in medians:
            paired = results.paired_ratio(label, reference, spans=True)
            line += f"  {s.median / medians[reference]:.2f}x {reference} (paired {paired:.2f}x)"
        lines.append(line)
    return "\n".join(lines)


def format_targets(results: Results) -> str:
    """The issue's targets, each against the row it is judged by (medians of this run):
    trice-trice under 1 ms, and trice with a peer no slower than that peer with itself (the
    ratio of the medians; the median of the ratios within a round is printed beside it)."""
    medians = {label: s.median for label, s in results.stats()}
    lines = []
    for label in medians:
        if label.replace(" ipv6", "") in ("trice-trice", "trice-trice" + WARMED, IN_PROCESS):
            verdict = "met" if medians[label] < 1.0 else "not met"
            lines.append(f"{label:<32} {medians[label]:>7.3f} ms  target < 1 ms: {verdict}")
    for label, median in medians.items():
        reference = reference_row(label)
        if reference is None or reference not in medians:
            continue
        ratio = median / medians[reference]
        ratios = results.ratios(label, reference)
        low, high = paired_interval(ratios)
        sooner = sum(r < 1.0 for r in ratios)
        verdict = "met" if ratio <= 1.0 else "not met"
        lines.append(
            f"{label:<32} {median:>7.3f} ms  {ratio:5.2f}x {reference} "
            f"({medians[reference]:.3f} ms; paired {statistics.median(ratios):.2f}x, "
            f"95% {low:.2f}-{high:.2f}x; sooner in {sooner} of {len(ratios)} rounds): {verdict}"
        )
    lines.extend(_same_rule_for_others(results, medians))
    if any(reference_row(label) in medians for label in medians):
        lines.append(
            "(the target is judged by the ratio of the medians; paired: the median over rounds"
            " of the ratio\n within a round, and a 95% interval for it by resampling the rounds:"
            " an interval that holds\n 1x means that this run cannot tell the row from its"
            " reference)"
        )
    return "\n".join(lines)


def _same_rule_for_others(results: Results, medians: dict[str, float]) -> list[str]:
    """For comparison, not a target: the same rule applied to two other peers with each
    other (``aioice-pion`` against aioice-aioice and against pion-pion).

    aioice's ``connect()`` takes its 20 ms pacing sleep whatever its peer does, and that
    sleep ends on asyncio's millisecond tick counted from the last datagram it read: a peer
    that answers sooner can make it end later.  These lines show how a peer as fast as
    Pion fares by the rule that the trice-aioice rows are judged by."""
    lines = []
    for label in medians:
        pair = label.split(" ", 1)[0]
        kinds = pair.split("-")
        if len(kinds) != 2 or "trice" in kinds or kinds[0] == kinds[1]:
            continue
        for kind in kinds:
            reference = f"{kind}-{kind}" + label[len(pair) :]
            if reference not in medians:
                continue
            ratio = medians[label] / medians[reference]
            paired = results.paired_ratio(label, reference)
            lines.append(
                f"{label:<32} {medians[label]:>7.3f} ms  {ratio:5.2f}x {reference} "
                f"(paired {paired:.2f}x; for comparison, not a target)"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
