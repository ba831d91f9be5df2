"""Time to connected under loss that lasts, between real peers across the NAT lab.

Each session builds the NAT lab (``tests/natlab.py``: network namespaces and nftables, so
this needs root; coturn is the lab's STUN server): the first peer behind an
endpoint-independent NAT, the second on the internet, ``--loss`` per cent of the IPv4
packets dropped at each end of each public link (so about twice that each way between the
hosts, STUN included), every timer at its peer's default.  Each peer gathers on its
namespace's links and from the STUN server, the two descriptions are relayed, and the time
is taken from ``start`` until both have said ``connected`` (the later of the two peers' own
figures: each times its connect call from its own ``start``).  The roles alternate from one
session to the next, and the rows are measured in rounds, one session of each row per round
(as ``connect_time.py`` does), so that the load's drift falls on every row alike.

A row is first-second (the first behind the NAT): ``pion-pion`` and ``aioice-aioice`` are
the references, ``trice-pion`` and ``trice-aioice`` put trice with each.  Loss makes the
figures spread, so the table gives the median, the 90th percentile, how many sessions took
more than 5 s, and how many never connected within ``--limit`` seconds (both peers must have
said ``connected``: one side connected and the other not is a failure).  The ratio column is
the row's 90th percentile over its reference's (pion-pion for the rows with Pion, aioice-aioice
for those with aioice, trice-trice's over pion-pion's): the tail is where loss costs.

Run as root (CI is): ``.venv/bin/python bench/lossy_connect.py [--sessions 20] [--loss 10]
[--quick] [--rows pion-pion trice-pion ...]``; without root or nftables it says what is
missing and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from natlab import Host, Lab, NatKind, nat_lab, natlab_available
from peers.harness import AIOICE_PEER, TRICE_PEER, Peer, PeerError, PeerUnavailable, pion_binary

#: (first, second) peer kinds, in table order; the first is behind the NAT.
ROWS = [
    ("pion", "pion"),
    ("trice", "trice"),
    ("trice", "pion"),
    ("aioice", "aioice"),
    ("trice", "aioice"),
]
#: The row each row's ratio is taken against.
REFERENCE = {
    "trice-trice": "pion-pion",
    "trice-pion": "pion-pion",
    "trice-aioice": "aioice-aioice",
}
SLOW = 5.0


def _argv(kind: str, lab: Lab, controlling: bool) -> list[str]:
    role = "--controlling" if controlling else "--controlled"
    stun = f"--stun={lab.stun_url}"
    if kind == "pion":
        return [str(pion_binary()), role, "--namespace", stun]
    if kind == "aioice":
        return [sys.executable, str(AIOICE_PEER), role, "--namespace", stun]
    # (trice's peer program: its own defaults but for the lab's, as the NAT lab tests run it)
    return [sys.executable, str(TRICE_PEER), role, "--namespace", stun, "--connect-timeout=120"]


def session(first: str, second: str, loss: int, first_controls: bool, limit: float) -> float:
    """One session; seconds until both peers are connected (``inf`` if not within
    ``limit``)."""
    with nat_lab(NatKind.ENDPOINT_INDEPENDENT, NatKind.NONE, loss_percent=loss) as lab:
        hosts: list[Host] = [lab.host_a, lab.host_b]
        peers = [
            Peer(host.argv(_argv(kind, lab, controls)), name=f"{kind}-{host.name}")
            for kind, host, controls in zip(
                (first, second), hosts, (first_controls, not first_controls), strict=True
            )
        ]
        with peers[0], peers[1]:
            descriptions = [peer.local_description(15) for peer in peers]
            for peer, other in ((peers[0], descriptions[1]), (peers[1], descriptions[0])):
                for msg in other:
                    peer.send(msg)
            for peer in peers:
                peer.send({"type": "start"})
            deadline = time.monotonic() + limit
            try:
                # (No reports asked for: the first message after start is connected.)
                done = [
                    peer.expect("connected", max(0.0, deadline - time.monotonic()))
                    for peer in peers
                ]
            except PeerError:  # (a peer that gave up, or the limit)
                return float("inf")
    return max(float(msg["elapsed_ms"]) for msg in done) / 1000


@dataclass
class Row:
    first: str
    second: str
    samples: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.first}-{self.second}"

    def p90(self) -> float:
        done = sorted(self.samples)
        return done[min(len(done) - 1, int(0.9 * len(done)))]


def _seconds(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.2f}s"


def format_table(rows: list[Row], loss: int) -> str:
    header = (
        f"{'pair (first behind the NAT)':<28} {'sessions':>8} {'median':>8} {'p90':>8} "
        f"{'>5 s':>5} {'failed':>6} {'p90 ratio':>18}"
    )
    lines = [header, "-" * len(header)]
    by_label = {row.label: row for row in rows}
    for row in rows:
        connected = [s for s in row.samples if s != float("inf")]
        median = statistics.median(row.samples) if row.samples else float("nan")
        reference = by_label.get(REFERENCE.get(row.label, ""))
        ratio = ""
        if reference is not None and reference.samples:
            if max(row.p90(), reference.p90()) == float("inf"):
                ratio = f"n/a {reference.label}"  # (a tenth of its sessions failed)
            else:
                ratio = f"{row.p90() / reference.p90():.2f}x {reference.label}"
        lines.append(
            f"{row.label:<28} {len(row.samples):>8} {_seconds(median):>8} {_seconds(row.p90()):>8} "
            f"{sum(s > SLOW for s in connected):>5} {len(row.samples) - len(connected):>6} "
            f"{ratio:>18}"
        )
    lines.append(
        f"(seconds from 'start' until both peers are connected, {loss} % lost at each end of "
        "each public link;\n roles alternating; a session that never connected counts as "
        "infinitely long: never)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=20, help="sessions per row (20)")
    parser.add_argument("--loss", type=int, default=10, help="per cent at each link end (10)")
    parser.add_argument("--limit", type=float, default=45.0, help="seconds a session may take")
    parser.add_argument("--quick", action="store_true", help="4 sessions per row")
    names = [f"{first}-{second}" for first, second in ROWS]
    parser.add_argument(
        "--rows", nargs="+", choices=names, default=names, help="the rows to run (all)"
    )
    args = parser.parse_args(argv)
    reason = natlab_available()
    if reason is not None:
        print(f"lossy_connect: skipped: {reason}")
        return 0
    sessions = 4 if args.quick else args.sessions
    rows = []
    for first, second in ROWS:
        if f"{first}-{second}" not in args.rows:
            continue
        try:
            for kind in (first, second):
                if kind == "pion":
                    pion_binary()
        except PeerUnavailable as exc:
            print(f"skipping {first}-{second}: {exc}", file=sys.stderr)
            continue
        rows.append(Row(first, second))
    for n in range(sessions):
        turn = n % len(rows)  # (the order turns by one each round)
        for row in rows[turn:] + rows[:turn]:
            row.samples.append(session(row.first, row.second, args.loss, n % 2 == 0, args.limit))
    print(f"\nTime to connected under loss ({sessions} sessions a row)\n")
    print(format_table(rows, args.loss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
