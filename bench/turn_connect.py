"""Time to connected through a TURN server (coturn) on loopback, relay-only.

One private coturn (``turnserver``, started by ``tests/coturn.py`` on free 127.0.0.1 ports,
``--allow-loopback-peers``) serves the whole run and is stopped by its PID at the end. Every
peer runs with the RELAY transport policy, so its only candidates are relayed ones and every
check goes peer -> coturn -> coturn -> peer.

Each run starts a fresh pair of peer processes (harness ``tests/peers/harness.py``), waits
for their relay allocations (gathering is not timed), exchanges their parameters and relay
candidates, sends ``start`` to both and takes the later of the two ``connected`` times.
Prints median, p10 and p90 of ``--runs`` runs per row.

The row ``trice-trice (in-process)`` runs two trice agents in one trio run against the same
coturn: the clock starts once both hold each other's parameters and relay candidates and
stops when both ``connect()`` calls returned.

Rows whose peer cannot be built (no Go toolchain / Pion sources) are skipped with a note; the
whole benchmark is skipped (exit 0, note on stderr) without coturn's ``turnserver``::

    .venv/bin/python bench/turn_connect.py [--runs 15 | --quick] [--only trice-trice ...]
"""

from __future__ import annotations

import argparse
import sys

import trio
from _peers import PeerUnavailable, Row, Stats, measure_pair, timed_connect
from connect_time import format_table

import trice

from coturn import PASSWORD, TURNSERVER, USER, run_coturn
from loopback import loopback_config, signal
from peers.harness import PeerError, peer_command

#: (controlling, controlled) peer kinds, in table order.
PAIRS = [
    ("trice", "trice"),
    ("aioice", "aioice"),
    ("pion", "pion"),
    ("trice", "aioice"),
    ("trice", "pion"),
]

IN_PROCESS = "trice-trice (in-process)"

#: Per-run limit; Pion alone waits 2 s (RelayAcceptanceMinWait) before nominating a relay.
TIMEOUT = 30.0


def turn_url(port: int) -> str:
    return f"turn:127.0.0.1:{port}?transport=udp"


def turn_args(port: int) -> list[str]:
    """The TURN options every harness peer accepts, relay-only."""
    return [
        f"--turn={turn_url(port)}",
        f"--username={USER}",
        f"--credential={PASSWORD}",
        "--relay-only",
    ]


def relay_rows(port: int, pairs: list[tuple[str, str]]) -> list[Row]:
    """Rows for ``pairs`` through the coturn on ``port``; unavailable peers are noted."""
    extra = turn_args(port)
    rows = []
    for kind_a, kind_b in pairs:
        try:
            rows.append(
                Row(
                    f"{kind_a}-{kind_b}",
                    peer_command(kind_a, controlling=True, extra=extra),
                    peer_command(kind_b, controlling=False, extra=extra),
                )
            )
        except PeerUnavailable as exc:
            print(f"skipping {kind_a}-{kind_b}: {exc}", file=sys.stderr)
    return rows


def _relay_config(port: int) -> trice.AgentConfig:
    return loopback_config(
        ice_servers=[trice.IceServer(turn_url(port), USER, PASSWORD)],
        transport_policy=trice.TransportPolicy.RELAY,
    )


async def _in_process_once(port: int, limit: float) -> float:
    config = _relay_config(port)
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        with trio.fail_after(limit):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
        for agent in (a, b):
            types = {c.type for c in agent.local_candidates}
            if types != {trice.CandidateType.RELAY}:
                raise RuntimeError(f"expected only relay candidates, got {types}")
        signal(a, b)
        elapsed = await timed_connect(a, b, limit)
        for agent in (a, b):
            pair = agent.selected_pair
            if pair is None or pair.local.type is not trice.CandidateType.RELAY:
                raise RuntimeError(f"selected pair is not relayed: {pair}")
        return elapsed


def measure_in_process_relay(port: int, n: int, timeout: float = TIMEOUT) -> list[float]:
    """Connect times (ms) of two in-process trice agents through coturn, ``n`` fresh pairs."""
    return [trio.run(_in_process_once, port, timeout) for _ in range(n)]


def measure_relayed(row: Row, n: int, timeout: float = TIMEOUT) -> tuple[list[float], list[str]]:
    """Like ``_peers.measure_cmds``, but each run must select a relayed pair on both sides.

    A peer's ``connected`` message names its selected pair when the peer knows it (``local``
    and ``remote``); both must then be ``typ relay`` candidates.  A run whose peers fail (one
    reports an error, exits, or is not connected within ``timeout``) is left out of the
    samples and its reason returned with the others: one failed run (Pion's relay gathering
    has come back empty here) does not end the whole benchmark.
    """
    samples = []
    failures = []
    for i in range(n):
        try:
            connected = measure_pair(row.peer_a_cmd, row.peer_b_cmd, timeout, b_first=i % 2 == 1)
        except PeerError as exc:
            failures.append(str(exc).splitlines()[0])
            continue
        for msg in (connected.a, connected.b):
            for key in ("local", "remote"):
                if key in msg and " typ relay" not in str(msg[key]):
                    raise RuntimeError(f"{row.label}: selected pair is not relayed: {msg}")
        samples.append(connected.elapsed_ms)
    return samples, failures


def run(rows: list[Row], runs: int) -> tuple[list[tuple[str, Stats]], list[str]]:
    """The rows' figures (of those with a run that connected), and a line for each row
    some of whose runs failed."""
    results = []
    notes = []
    for row in rows:
        print(f"measuring {row.label} ({runs} runs)...", file=sys.stderr)
        samples, failures = measure_relayed(row, runs)
        if samples:
            results.append((row.label, Stats.of(samples)))
        if failures:
            notes.append(
                f"{row.label}: {len(failures)} of {runs} runs failed, left out"
                f" (first: {failures[0]})"
            )
    return results, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="runs per row (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 runs per row")
    parser.add_argument("--only", nargs="+", metavar="LABEL", help="only these rows")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    if TURNSERVER is None:
        print(
            "skipping: coturn's turnserver is not installed (apt-get install coturn)",
            file=sys.stderr,
        )
        return 0
    pairs = PAIRS
    in_process = True
    if args.only:
        pairs = [(a, b) for a, b in PAIRS if f"{a}-{b}" in args.only]
        in_process = IN_PROCESS in args.only or "in-process" in args.only
    if not pairs and not in_process:
        print("no rows to measure", file=sys.stderr)
        return 1
    with run_coturn() as server:
        print(f"coturn pid {server.pid} on 127.0.0.1:{server.port}", file=sys.stderr)
        results, notes = run(relay_rows(server.port, pairs), runs)
        if in_process:
            print(f"measuring {IN_PROCESS} ({runs} runs)...", file=sys.stderr)
            results.append((IN_PROCESS, Stats.of(measure_in_process_relay(server.port, runs))))
    table = format_table(results).splitlines()
    table[-1] = "(milliseconds from 'start' until both peers are connected; relay-only via coturn)"
    print("\n".join(table + notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
