"""Agents on a UDP mux (``trice.open_udp_mux``) against agents on sockets of their own.

Three figures, each measured for both in turns in one run (a server agent on a mux and one
with its own socket, each with a client agent of its own socket, on loopback):

* one way: 1200-byte datagrams from the client to the server, per second (timed to the last
  one received; ``delivered`` is the share of those sent that came, the worst turn's);
* ping-pong: round trips per second (each side waits for the other's datagram; a ping or
  pong lost ends them, and a note says how many were done);
* connect: ms until a hundred server agents on one mux, or on their own sockets, are all
  connected with their clients.

::

    .venv/bin/python bench/mux.py [--repeat 5 | --quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import trice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _peers import Flow, loss_notes, one_way_and_ping_pong, ratio, share

from loopback import connect_both, loopback_config, signal

SIZE = 1200


@asynccontextmanager
async def _maybe_mux(on_mux: bool) -> AsyncIterator[trice.UdpMux | None]:
    if not on_mux:
        yield None
        return
    async with trice.open_udp_mux("127.0.0.1") as mux:
        yield mux


@asynccontextmanager
async def _server_and_client(
    mux: trice.UdpMux | None,
) -> AsyncIterator[tuple[trice.Connection, trice.Connection]]:
    """A server agent (on ``mux``, or on its own socket) and a client agent of its own
    socket, connected: (the server's connection to the client, the client's to it)."""
    async with (
        trice.open_agent(loopback_config(), controlling=False, mux=mux) as server,
        trice.open_agent(loopback_config(), controlling=True) as client,
    ):
        await server.wait_gathering_complete()
        await client.wait_gathering_complete()
        signal(server, client)
        yield await connect_both(server, client, within=60)


async def _data(on_mux: bool, count: int, rounds: int) -> Flow:
    """Datagrams a second one way, round trips a second (and what came of them)."""
    async with _maybe_mux(on_mux) as mux:
        async with _server_and_client(mux) as (to_client, to_server):
            return await one_way_and_ping_pong(to_server, to_client, count, rounds, SIZE)


async def _connect_many(on_mux: bool, n: int) -> float:
    """ms from opening n server agents (on one mux, or not) and their clients until all are
    connected (their closing after it not counted)."""
    async with _maybe_mux(on_mux) as mux:
        connected = 0
        all_connected = trio.Event()
        started = time.perf_counter()
        ended = started

        async def one() -> None:
            nonlocal connected, ended
            async with _server_and_client(mux):
                connected += 1
                if connected == n:
                    ended = time.perf_counter()
                    all_connected.set()
                await all_connected.wait()  # (each held open until all are connected)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        return (ended - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="turns of each measurement")
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    count, rounds, agents, repeat = 20_000, 3_000, 100, args.repeat
    if args.quick:
        count, rounds, agents, repeat = 2_000, 300, 20, 1
    rows: dict[str, list[tuple[float, float, float]]] = {"own socket": [], "mux": []}
    flows: dict[str, list[Flow]] = {"own socket": [], "mux": []}
    for _ in range(repeat):
        for name, on_mux in (("own socket", False), ("mux", True)):
            flow = trio.run(_data, on_mux, count, rounds)
            connect = trio.run(_connect_many, on_mux, agents)
            rows[name].append((flow.one_way, flow.round_trips, connect))
            flows[name].append(flow)
    print(f"\nAgents on a UDP mux, loopback, medians of {repeat} turns\n")
    print(
        f"{'server agent':<14}{'one way /s':>12}{'delivered':>11}{'ping-pong /s':>14}"
        f"{'connect ms':>12}"
    )
    print("-" * 63)
    medians = {}
    notes = []
    for name, samples in rows.items():
        med = tuple(statistics.median(s[i] for s in samples) for i in range(3))
        medians[name] = med
        delivered = min(f.delivered for f in flows[name])
        shown = share(delivered, 1.0)
        print(f"{name:<14}{med[0]:>12,.0f}{shown:>11}{med[1]:>14,.0f}{med[2]:>12.1f}")
        notes += loss_notes(name, delivered, [f.pongs for f in flows[name]], rounds)
    for note in notes:
        print(note)
    own, mux = medians["own socket"], medians["mux"]
    print(
        f"\nmux / own socket: one way {ratio(mux[0], own[0])}, ping-pong {ratio(mux[1], own[1])},"
        f" connect time of {agents} agents {ratio(mux[2], own[2])}"
    )
    print("(the mux's task hands each datagram to its agent: a task step more a datagram)")


if __name__ == "__main__":
    main()
