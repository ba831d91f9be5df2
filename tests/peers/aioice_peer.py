"""An aioice agent speaking the trice peer line protocol.

Usage::

    python tests/peers/aioice_peer.py --controlling|--controlled [--ipv6] [--mdns query]
        [--turn turn:HOST:PORT?transport=udp --username U --credential P --relay-only]

JSON lines on stdin/stdout, logs on stderr; see ``tests/peers/harness.py`` for
the protocol. It only ever gathers a loopback host candidate (127.0.0.1, or ::1
with ``--ipv6``): aioice enumerates every interface *and* deliberately skips
127.0.0.1 / ::1, so this script replaces ``aioice.ice.get_host_addresses`` in
its own process. aioice cannot be an ICE lite agent, so ``--lite`` is an error.

Multicast DNS: aioice always resolves a remote ``<name>.local`` host candidate itself (one
mDNS query of type A to 224.0.0.251, from a socket on port 5353 that joined the group on
whichever interface the kernel's route to 224.0.0.251 takes, as neither the join nor the
send names one; the candidate is dropped if no answer comes within 1 s) and has no switch
to turn that off; it never names its own candidates (``aioice.mdns`` can publish a name, but
``aioice.Connection`` does not use it). So ``--mdns query`` (the default) is all it does,
and ``--mdns off`` or ``--mdns gather`` is answered with an ``error``. As aioice's mDNS
would use the host's real links, a ``.local`` candidate is answered with an ``error``
unless lo is the only interface (a network namespace of the test's own, with a route for
224.0.0.0/4 on lo). A resolved candidate keeps its ``.local`` name in aioice's lists, so in
``connected`` too (``remote``, and ``remote_candidates``: ``{"address", "port", "type"}``
of each remote candidate aioice holds, resolved or peer-reflexive).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aioice
import aioice.ice
import aioice.mdns

log = logging.getLogger("aioice_peer")


def emit(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def candidate_line(c: aioice.Candidate) -> str:
    return "candidate:" + str(c.to_sdp())


def parse_candidate(line: str) -> aioice.Candidate:
    s = line.strip().removeprefix("a=").removeprefix("candidate:")
    return aioice.Candidate.from_sdp(s)


def restrict_to_loopback(ipv6: bool) -> None:
    address = "::1" if ipv6 else "127.0.0.1"

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [address]

    aioice.ice.get_host_addresses = loopback_only


def only_loopback() -> bool:
    """Whether lo is this network namespace's only interface."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def parse_stun(url: str) -> tuple[str, int]:
    """``stun:host[:port]`` -> (host, port)."""
    parts = urlsplit(url)
    if parts.scheme != "stun" or not parts.path:
        raise ValueError(f"not a STUN URL: {url!r}")
    host, _, port = parts.path.rpartition(":")
    return (host, int(port)) if host else (parts.path, 3478)


def parse_turn(url: str) -> tuple[tuple[str, int], str, bool]:
    """``turn[s]:host[:port][?transport=udp|tcp]`` -> ((host, port), transport, ssl)."""
    parts = urlsplit(url)
    if parts.scheme not in ("turn", "turns"):
        raise ValueError(f"not a TURN URL: {url!r}")
    hostport = parts.path
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_s = rest.removeprefix(":")
    else:
        host, _, port_s = hostport.partition(":")
    ssl = parts.scheme == "turns"
    port = int(port_s) if port_s else (5349 if ssl else 3478)
    transport = parse_qs(parts.query).get("transport", ["udp"])[0]
    return (host, port), transport, ssl


class StdinReader:
    """Feeds stdin lines into an asyncio queue from a daemon thread (None = EOF)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = loop
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        # The loop may already be closed when stdin ends after we exited.
        with contextlib.suppress(RuntimeError):
            for line in sys.stdin:
                self._loop.call_soon_threadsafe(self.queue.put_nowait, line)
            self._loop.call_soon_threadsafe(self.queue.put_nowait, None)


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        kwargs: dict[str, Any] = {}
        if args.stun:
            kwargs["stun_server"] = parse_stun(args.stun)
        if args.turn:
            server, transport, ssl = parse_turn(args.turn)
            kwargs.update(
                turn_server=server,
                turn_username=args.username,
                turn_password=args.credential,
                turn_transport=transport,
                turn_ssl=ssl,
            )
            if args.relay_only:
                kwargs["transport_policy"] = aioice.TransportPolicy.RELAY
        self.conn = aioice.Connection(
            ice_controlling=args.controlling,
            components=1,
            use_ipv4=not args.ipv6,
            use_ipv6=args.ipv6,
            **kwargs,
        )
        self.received: defaultdict[int, int] = defaultdict(int)
        self.received_changed = asyncio.Event()
        self.connected = asyncio.Event()
        self.rounds = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.started = False
        self.failure: str | None = None

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("task failed: %s", self.failure)

    async def run(self) -> int:
        await self.conn.gather_candidates()
        emit(
            {
                "type": "parameters",
                "ufrag": self.conn.local_username,
                "pwd": self.conn.local_password,
                "lite": False,
            }
        )
        for c in self.conn.local_candidates:
            emit({"type": "candidate", "candidate": candidate_line(c)})
        emit({"type": "end-of-candidates"})

        reader = StdinReader(asyncio.get_running_loop())
        try:
            while True:
                get = asyncio.ensure_future(reader.queue.get())
                # Wake up regularly to notice failed background tasks.
                while not get.done() and self.failure is None:
                    await asyncio.wait([get], timeout=0.1)
                if self.failure is not None:
                    get.cancel()
                    emit({"type": "error", "message": self.failure})
                    return 1
                line = get.result()
                if line is None:
                    log.info("stdin EOF")
                    return 0
                line = line.strip()
                if not line:
                    continue
                msg = json.loads(line)
                if not await self.handle(msg):
                    return 0
        finally:
            for task in list(self.tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.conn.close()

    async def handle(self, msg: dict[str, Any]) -> bool:
        kind = msg.get("type")
        if kind == "parameters":
            self.conn.remote_username = msg["ufrag"]
            self.conn.remote_password = msg["pwd"]
            self.conn.remote_is_lite = bool(msg.get("lite", False))
        elif kind == "candidate":
            candidate = parse_candidate(msg["candidate"])
            if aioice.mdns.is_mdns_hostname(candidate.host) and not only_loopback():
                raise RuntimeError(
                    f"{candidate.host}: aioice's mDNS would use this host's real interfaces;"
                    " give .local candidates only inside a network namespace whose only link"
                    " is lo"
                )
            await self.conn.add_remote_candidate(candidate)
        elif kind == "end-of-candidates":
            await self.conn.add_remote_candidate(None)
        elif kind == "sync":
            emit({"type": "synced"})
        elif kind == "start":
            if not self.started:
                if self.conn.remote_username is None:
                    raise RuntimeError("start before remote parameters")
                self.started = True
                self.spawn(self.connect())
        elif kind == "exchange":
            if not self.started:
                raise RuntimeError("exchange before start")
            self.spawn(self.exchange(self.rounds, int(msg["count"])))
            self.rounds += 1
        elif kind == "restart":
            raise RuntimeError("aioice has no ICE restart")
        elif kind == "close":
            log.info("close requested")
            return False
        else:
            log.warning("ignoring unknown message type %r", kind)
        return True

    async def connect(self) -> None:
        # The clock runs around the connect call alone, inside the timeout guard (see the
        # trice peer).
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(self.args.connect_timeout):
                started_ns = time.time_ns()
                t0 = time.perf_counter()
                await self.conn.connect()
        else:  # pragma: no cover
            started_ns = time.time_ns()
            t0 = time.perf_counter()
            await asyncio.wait_for(self.conn.connect(), self.args.connect_timeout)
        elapsed = (time.perf_counter() - t0) * 1000.0
        out: dict[str, Any] = {
            "type": "connected",
            "elapsed_ms": elapsed,
            "started_ns": started_ns,
            "connected_ns": time.time_ns(),
        }
        pair = self.conn._nominated.get(1)
        if pair is not None:
            out["local"] = candidate_line(pair.protocol.local_candidate)
            out["remote"] = candidate_line(pair.remote_candidate)
        # (a resolved .local candidate keeps its name here: aioice only lists it once resolved)
        out["remote_candidates"] = [
            {"address": c.host, "port": c.port, "type": c.type} for c in self.conn.remote_candidates
        ]
        self.connected.set()
        emit(out)
        self.spawn(self.receive())

    async def receive(self) -> None:
        while True:
            try:
                data = await self.conn.recv()
            except ConnectionError:
                return
            head, sep, _ = data.partition(b"-")
            if sep and head.startswith(b"x") and head[1:].isdigit():
                self.received[int(head[1:])] += 1
                self.received_changed.set()

    async def exchange(self, round_: int, count: int) -> None:
        await self.connected.wait()
        sent = 0
        for i in range(count):
            await self.conn.send(b"x%d-%d" % (round_, i))
            sent += 1
        deadline = time.monotonic() + self.args.exchange_timeout
        while self.received[round_] < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.received_changed.clear()
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self.received_changed.wait(), remaining)
        emit({"type": "exchanged", "sent": sent, "received": self.received[round_]})


async def _amain(args: argparse.Namespace) -> int:
    return await Peer(args).run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--controlling", action="store_true")
    role.add_argument("--controlled", action="store_true")
    parser.add_argument("--ipv6", action="store_true", help="gather ::1 instead of 127.0.0.1")
    parser.add_argument("--lite", action="store_true", help="unsupported by aioice (error)")
    parser.add_argument(
        "--mdns",
        choices=["off", "query", "gather"],
        default="query",
        help="multicast DNS: aioice always resolves .local candidates (query, the default)"
        " and never names its own: off and gather are errors",
    )
    parser.add_argument(
        "--namespace",
        action="store_true",
        help="gather on the links of the network namespace this runs in (the NAT lab's own),"
        " IPv4, loopback left out (aioice's own enumeration), rather than on 127.0.0.1",
    )
    parser.add_argument("--stun", help="STUN URL, e.g. stun:203.0.113.2:3478")
    parser.add_argument("--turn", help="TURN URL, e.g. turn:127.0.0.1:3478?transport=udp")
    parser.add_argument("--username", help="TURN username")
    parser.add_argument("--credential", help="TURN password")
    parser.add_argument("--relay-only", action="store_true")
    parser.add_argument("--count", type=int, default=0, help="ignored")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--exchange-timeout", type=float, default=5.0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="aioice-peer: %(name)s %(levelname)s %(message)s",
    )
    if args.lite:
        emit({"type": "error", "message": "aioice cannot be an ICE lite agent"})
        return 2
    if args.mdns == "off":
        emit({"type": "error", "message": "aioice always resolves .local candidates"})
        return 2
    if args.mdns == "gather":
        emit({"type": "error", "message": "aioice cannot name its candidates by mDNS"})
        return 2
    if args.relay_only and not args.turn:
        emit({"type": "error", "message": "--relay-only needs --turn"})
        return 2
    if args.namespace:
        if args.ipv6:
            emit({"type": "error", "message": "--namespace gathers IPv4 only"})
            return 2
    else:
        restrict_to_loopback(args.ipv6)
    try:
        return asyncio.run(_amain(args))
    except Exception as exc:
        log.exception("peer failed")
        emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
