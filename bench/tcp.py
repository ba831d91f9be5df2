"""Agents connected over ICE-TCP (``NetworkConfig.tcp_candidates``) against agents over UDP.

Three figures, each measured in turns in one run, two agents of one process on loopback
(over TCP: one active, one passive, only their TCP candidates signalled):

* connect: ms from both agents holding each other's description until both are connected
  (median of ``--connects`` pairs);
* one way: 1200-byte datagrams per second from one agent to the other (timed to the last
  one received; ``delivered`` is the share of those sent that came, the worst turn's);
* ping-pong: round trips per second (each side waits for the other's datagram; a ping or
  pong lost ends them, and a note says how many were done).

The floor for TCP is a plain trio TCP stream carrying the same datagrams framed as ICE-TCP
frames them (a two-byte length, RFC 4571): ``send_all`` a datagram, and a reader that
splits what ``receive_some`` returns.

::

    .venv/bin/python bench/tcp.py [--repeat 5 | --quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import trice
from trice.ice._framing import FrameReader, frame

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _peers import loss_notes, one_way_and_ping_pong, ratio, share

from loopback import connect_both, loopback_config

SIZE = 1200


def _config(tcp: tuple[trice.TcpType, ...]) -> trice.AgentConfig:
    config = loopback_config()
    return dataclasses.replace(
        config, network=dataclasses.replace(config.network, tcp_candidates=tcp)
    )


@asynccontextmanager
async def _pair(tcp: bool) -> AsyncIterator[tuple[float, trice.Connection, trice.Connection]]:
    """Two connected agents: (ms to connect, a's connection, b's)."""
    kinds = ((trice.TcpType.ACTIVE,), (trice.TcpType.PASSIVE,)) if tcp else ((), ())
    async with (
        trice.open_agent(_config(kinds[0]), controlling=True) as a,
        trice.open_agent(_config(kinds[1]), controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        for here, there in ((a, b), (b, a)):
            params = there.local_parameters
            here.set_remote_parameters(params.ufrag, params.pwd)
            for candidate in there.local_candidates:
                if (candidate.protocol == "tcp") == tcp:
                    here.add_remote_candidate(candidate)
            here.add_remote_candidate(None)
        started = time.perf_counter()
        ca, cb = await connect_both(a, b, within=20)
        elapsed = (time.perf_counter() - started) * 1000
        assert ca.selected_pair.local.protocol == ("tcp" if tcp else "udp")
        yield elapsed, ca, cb


async def _agents(tcp: bool, connects: int, count: int, rounds: int) -> tuple[float, ...]:
    """(connect ms, datagrams a second one way, round trips a second, the share of the
    datagrams delivered one way, the round trips completed)."""
    times = []
    for _ in range(connects):
        async with _pair(tcp) as (elapsed, _, _):
            times.append(elapsed)
    async with _pair(tcp) as (_, ca, cb):
        flow = await one_way_and_ping_pong(ca, cb, count, rounds, SIZE)
    return statistics.median(times), flow.one_way, flow.round_trips, flow.delivered, flow.pongs


async def _floor(count: int, rounds: int) -> tuple[float, ...]:
    """The same datagrams over a plain trio TCP stream, framed: (nan, one way, ping-pong,
    delivered, round trips completed), as :func:`_agents`."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
        async with client, server:
            reader = FrameReader()
            queue: list[bytes] = []

            async def receive(stream: trio.SocketStream) -> bytes:
                while not queue:
                    queue.extend(reader.feed(await stream.receive_some(65536)))
                return queue.pop(0)

            payload = bytes(SIZE)
            got = 0

            async def sink() -> None:
                nonlocal got
                while got < count:
                    await receive(server)
                    got += 1

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sink)
                for _ in range(count):
                    await client.send_all(frame(payload))
            one_way = got / (time.perf_counter() - started)
            back = FrameReader()
            started = time.perf_counter()
            for _ in range(rounds):
                await client.send_all(frame(b"ping"))
                await receive(server)
                await server.send_all(frame(b"pong"))
                while not back.feed(await client.receive_some(65536)):
                    pass
            ping = rounds / (time.perf_counter() - started)
    return float("nan"), one_way, ping, got / count, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="turns of each measurement")
    parser.add_argument("--connects", type=int, default=30, help="pairs timed a turn")
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    count, rounds, connects, repeat = 20_000, 3_000, args.connects, args.repeat
    if args.quick:
        count, rounds, connects, repeat = 2_000, 300, 5, 1
    rows: dict[str, list[tuple[float, ...]]] = {"UDP": [], "TCP": [], "TCP stream (floor)": []}
    for _ in range(repeat):
        rows["UDP"].append(trio.run(_agents, False, connects, count, rounds))
        rows["TCP"].append(trio.run(_agents, True, connects, count, rounds))
        rows["TCP stream (floor)"].append(trio.run(_floor, count, rounds))
    print(f"\nTwo agents on loopback over ICE-TCP and over UDP, medians of {repeat} turns\n")
    print(f"{'path':<20}{'connect ms':>12}{'one way /s':>12}{'delivered':>11}{'ping-pong /s':>14}")
    print("-" * 69)
    medians = {}
    notes = []
    for name, samples in rows.items():
        med = tuple(statistics.median(s[i] for s in samples) for i in range(3))
        medians[name] = med
        connect = "" if med[0] != med[0] else f"{med[0]:.2f}"
        delivered = min(s[3] for s in samples)
        shown = share(delivered, 1.0)
        print(f"{name:<20}{connect:>12}{med[1]:>12,.0f}{shown:>11}{med[2]:>14,.0f}")
        notes += loss_notes(name, delivered, [int(s[4]) for s in samples], rounds)
    for note in notes:
        print(note)
    udp, tcp, floor = medians["UDP"], medians["TCP"], medians["TCP stream (floor)"]
    print(
        f"\nTCP / UDP: connect time {ratio(tcp[0], udp[0])}, one way {ratio(tcp[1], udp[1])}, "
        f"ping-pong {ratio(tcp[2], udp[2])}"
    )
    print(
        f"TCP / its floor: one way {ratio(tcp[1], floor[1])}, ping-pong {ratio(tcp[2], floor[2])}"
    )


if __name__ == "__main__":
    main()
