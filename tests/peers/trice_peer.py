"""A trice agent speaking the trice peer line protocol.

Usage::

    python tests/peers/trice_peer.py --controlling|--controlled [--ipv6] [--lite]
        [--aggressive] [--warm] [--mdns off|query|gather]
        [--external ADDRESS[/LOCAL] ...] [--external-candidate srflx|host] [--mux]
        [-v | --trace]

JSON lines on stdin/stdout, logs on stderr; see ``tests/peers/harness.py`` for the
protocol. It only ever gathers loopback host candidates (127.0.0.1, or ::1 with ``--ipv6``)
through ``trice.NetworkConfig(interface_filter=lambda n: n == "lo", include_loopback=True)``.
``--aggressive`` makes a controlling agent nominate aggressively; ``--warm`` calls
:func:`trice.warm_up` before the agent opens. ``--mdns`` sets ``NetworkConfig.mdns``:
``off`` (``MdnsMode.DISABLED``), ``query`` (``QUERY_ONLY``, the library's default and this
peer's) or ``gather`` (``QUERY_AND_GATHER``: the host candidates go out under ``.local``
names, and the agent answers mDNS queries for them on lo). Its ``connected`` messages also
carry ``remote_candidates``: ``{"address", "port", "type"}`` of each remote candidate in the
check list (a ``.local`` one resolved shows the address found). ``--external ADDRESS[/LOCAL]``
(repeatable) and ``--external-candidate srflx|host`` set ``NetworkConfig.external_addresses``
and ``external_candidate`` (a 1:1 NAT's public address). ``--mux`` opens a UDP mux
(:func:`trice.open_udp_mux`) on 127.0.0.1 (``::1`` with ``--ipv6``; with ``--namespace``, on
the namespace's first IPv4 address) around the agent, which is opened on it (``mux=``): the
host candidate is then the mux's address and port (and ``--stun`` gives it the mux's
server-reflexive one), and the ``connected`` messages also carry ``mux``, that address and
port as ``"ADDRESS PORT"``. ``--stun``, ``--turn`` (with ``--username``, ``--credential``
and, for ``turns:``, ``--cafile``) and ``--relay-only`` name the servers and the policy.
``--trace`` (or the environment variable
``TRICE_PEER_TRACE=1``) logs every check and STUN message at trice's TRACE level.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import ssl
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import ifaddr
import trio

import trice

log = logging.getLogger("trice_peer")

#: Loopback interface name on Linux.
LOOPBACK = "lo"


def emit(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


#: ``--mdns`` values and the modes they stand for.
MDNS_MODES = {
    "off": trice.MdnsMode.DISABLED,
    "query": trice.MdnsMode.QUERY_ONLY,
    "gather": trice.MdnsMode.QUERY_AND_GATHER,
}


#: ``--tcp`` values and the ICE-TCP candidates they stand for.
TCP_CANDIDATES = {
    "active": (trice.TcpType.ACTIVE,),
    "passive": (trice.TcpType.PASSIVE,),
    "both": (trice.TcpType.ACTIVE, trice.TcpType.PASSIVE),
}


def network_config(
    ipv6: bool, namespace: bool = False, mdns: trice.MdnsMode = trice.MdnsMode.QUERY_ONLY
) -> trice.NetworkConfig:
    """Loopback-only gathering: 127.0.0.1, or ::1 with ``ipv6``.

    With ``namespace`` (the NAT lab runs the peer inside a network namespace that the test
    made, whose only links are the lab's own), every non-loopback IPv4 address is used.
    """
    if namespace:
        return trice.NetworkConfig(ipv6=False, mdns=mdns)
    return trice.NetworkConfig(
        interface_filter=lambda name: name == LOOPBACK,
        include_loopback=True,
        ipv4=not ipv6,
        ipv6=ipv6,
        mdns=mdns,
    )


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin (without the newline), read without blocking the trio thread."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                if buffer.strip():
                    yield buffer.decode()
                return
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                yield line.decode()


def remote_candidates(agent: trice.Agent) -> list[dict[str, Any]]:
    """The remote candidates of the agent's check list (signalled, resolved from a
    ``.local`` name, or peer-reflexive), for the ``remote_candidates`` of ``connected``."""
    seen: dict[tuple[str, int, str], None] = {}
    for stats in agent.pair_statistics():
        remote = stats.pair.remote
        seen[(remote.address, remote.port, remote.type.value)] = None
    return [{"address": a, "port": p, "type": t} for a, p, t in seen]


class PeerFailed(Exception):
    """A fatal error, reported as an ``error`` message."""


class Peer:
    def __init__(
        self, args: argparse.Namespace, agent: trice.Agent, mux: trice.UdpMux | None = None
    ) -> None:
        self.args = args
        self.agent = agent
        self.mux = mux
        self.conn: trice.Connection | None = None
        self.connected = trio.Event()
        self.received: defaultdict[int, int] = defaultdict(int)
        self.received_changed = trio.Event()
        self.rounds = 0
        self.started = False
        self.have_remote = False

    async def run(self, nursery: trio.Nursery) -> None:
        agent = self.agent
        if self.args.report_selected:
            await nursery.start(self.report_selected)
        if self.args.report_states:
            await nursery.start(self.report_states)
        params = agent.local_parameters
        emit({"type": "parameters", "ufrag": params.ufrag, "pwd": params.pwd, "lite": params.lite})
        await agent.wait_gathering_complete()
        self.describe_candidates()
        async for raw in stdin_lines():
            line = raw.strip()
            if not line:
                continue
            msg = json.loads(line)
            if not self.handle(msg, nursery):
                return
        log.info("stdin EOF")

    def handle(self, msg: dict[str, Any], nursery: trio.Nursery) -> bool:
        kind = msg.get("type")
        if kind == "parameters":
            self.agent.set_remote_parameters(
                msg["ufrag"], msg["pwd"], lite=bool(msg.get("lite", False))
            )
            self.have_remote = True
        elif kind == "candidate":
            self.agent.add_remote_candidate(trice.Candidate.from_sdp(msg["candidate"]))
        elif kind == "end-of-candidates":
            self.agent.add_remote_candidate(None)
        elif kind == "sync":
            emit({"type": "synced"})
        elif kind == "start":
            if not self.started:
                if not self.have_remote:
                    raise PeerFailed("start before remote parameters")
                self.started = True
                nursery.start_soon(self.connect)
        elif kind == "exchange":
            if not self.started:
                raise PeerFailed("exchange before start")
            nursery.start_soon(self.exchange, self.rounds, int(msg["count"]))
            self.rounds += 1
        elif kind == "restart":
            if not self.started:
                raise PeerFailed("restart before start")
            self.restart(nursery)
        elif kind == "close":
            log.info("close requested")
            return False
        else:
            log.warning("ignoring unknown message type %r", kind)
        return True

    def restart(self, nursery: trio.Nursery) -> None:
        """ICE restart: new parameters, the same candidates, described as at the start; a
        task reports the next connection as ``connected`` again."""
        t0 = time.perf_counter()
        params = self.agent.restart()
        emit({"type": "parameters", "ufrag": params.ufrag, "pwd": params.pwd, "lite": params.lite})
        self.describe_candidates()
        nursery.start_soon(self.reconnect, t0)

    def describe_candidates(self) -> None:
        """The local candidates (not the UDP ones with ``--no-udp``), then their end."""
        for candidate in self.agent.local_candidates:
            if not (self.args.no_udp and candidate.protocol == "udp"):
                emit({"type": "candidate", "candidate": candidate.to_sdp()})
        emit({"type": "end-of-candidates"})

    async def reconnect(self, t0: float) -> None:
        with trio.fail_after(self.args.connect_timeout):
            conn = await self.agent.connect()
        pair = conn.selected_pair
        emit(
            {
                "type": "connected",
                "elapsed_ms": (time.perf_counter() - t0) * 1000.0,
                "local": pair.local.to_sdp(),
                "remote": pair.remote.to_sdp(),
                "remote_candidates": remote_candidates(self.agent),
                **self.mux_field(),
            }
        )

    async def report_selected(self, task_status: trio.TaskStatus[None]) -> None:
        """With ``--report-selected``: a ``selected`` message (``local``, ``remote``) each
        time the selected pair changes."""
        async with self.agent.subscribe() as events:
            task_status.started()
            async for event in events:
                if isinstance(event, trice.SelectedPairChanged) and event.pair is not None:
                    pair = event.pair
                    emit(
                        {
                            "type": "selected",
                            "local": pair.local.to_sdp(),
                            "remote": pair.remote.to_sdp(),
                        }
                    )

    async def report_states(self, task_status: trio.TaskStatus[None]) -> None:
        """With ``--report-states``: a ``state`` message (``state``: the connection state's
        value) at each change of the connection state."""
        async with self.agent.subscribe() as events:
            task_status.started()
            async for event in events:
                if isinstance(event, trice.ConnectionStateChanged):
                    emit({"type": "state", "state": event.state.value})

    def mux_field(self) -> dict[str, str]:
        """``{"mux": "ADDRESS PORT"}`` with ``--mux``, else nothing."""
        if self.mux is None:
            return {}
        host, port = self.mux.local_address
        return {"mux": f"{host} {port}"}

    async def connect(self) -> None:
        # The clock runs around the connect call alone, inside the peer's timeout guard, as
        # in the aioice and Pion peers: the guard is this program's cost, not the agent's
        # (trio's fail_after took 18-45 µs here, entered in a process idle until "start").
        with trio.fail_after(self.args.connect_timeout):
            started_ns = time.time_ns()
            t0 = time.perf_counter()
            conn = await self.agent.connect()
        elapsed = (time.perf_counter() - t0) * 1000.0
        connected_ns = time.time_ns()
        pair = conn.selected_pair
        self.conn = conn
        self.connected.set()
        emit(
            {
                "type": "connected",
                "elapsed_ms": elapsed,
                "started_ns": started_ns,
                "connected_ns": connected_ns,
                "local": pair.local.to_sdp(),
                "remote": pair.remote.to_sdp(),
                "remote_candidates": remote_candidates(self.agent),
                **self.mux_field(),
            }
        )
        await self.receive(conn)

    async def receive(self, conn: trice.Connection) -> None:
        try:
            async for data in conn:
                head, sep, _ = data.partition(b"-")
                if sep and head.startswith(b"x") and head[1:].isdigit():
                    self.received[int(head[1:])] += 1
                    self.received_changed.set()
                    self.received_changed = trio.Event()
        except trio.ClosedResourceError:
            return

    async def exchange(self, round_: int, count: int) -> None:
        await self.connected.wait()
        assert self.conn is not None
        sent = 0
        for i in range(count):
            await self.conn.send(b"x%d-%d" % (round_, i))
            sent += 1
        with trio.move_on_after(self.args.exchange_timeout):
            while self.received[round_] < count:
                await self.received_changed.wait()
        emit({"type": "exchanged", "sent": sent, "received": self.received[round_]})


async def amain(args: argparse.Namespace) -> int:
    servers = []
    if args.stun:
        servers.append(trice.IceServer(args.stun))
    if args.turn:
        context = None
        if args.cafile:
            context = ssl.create_default_context(cafile=args.cafile)
        servers.append(
            trice.IceServer(args.turn, args.username, args.credential, ssl_context=context)
        )
    timing = trice.Timing(
        rto=args.rto,
        rto_max=args.rto_max,
        max_binding_requests=args.max_binding_requests,
        failed_timeout=args.failed_timeout,
        disconnected_timeout=min(5.0, args.failed_timeout),
        gather_timeout=args.gather_timeout,
    )
    network = network_config(args.ipv6, args.namespace, MDNS_MODES[args.mdns])
    if args.external:
        network = dataclasses.replace(
            network,
            external_addresses=args.external,
            external_candidate=trice.CandidateType(args.external_candidate),
        )
    if args.tcp:
        network = dataclasses.replace(network, tcp_candidates=TCP_CANDIDATES[args.tcp])
    config = trice.AgentConfig(
        network=network,
        lite=args.lite,
        nomination=trice.Nomination.AGGRESSIVE if args.aggressive else trice.Nomination.REGULAR,
        ice_servers=servers,
        transport_policy=trice.TransportPolicy.RELAY
        if args.relay_only
        else trice.TransportPolicy.ALL,
        timing=timing,
    )
    if args.warm:
        await trice.warm_up()
    async with contextlib.AsyncExitStack() as stack:
        mux = None
        if args.mux:
            host = _namespace_address() if args.namespace else "::1" if args.ipv6 else "127.0.0.1"
            mux = await stack.enter_async_context(trice.open_udp_mux(host))
        agent = await stack.enter_async_context(
            trice.open_agent(config, controlling=args.controlling, mux=mux)
        )
        nursery = await stack.enter_async_context(trio.open_nursery())
        await Peer(args, agent, mux).run(nursery)
        nursery.cancel_scope.cancel()
    return 0


def _namespace_address() -> str:
    """The first non-loopback IPv4 address of the network namespace this runs in (the NAT
    lab's: its only links are the lab's own)."""
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                return ip.ip
    raise SystemExit("no IPv4 address outside loopback in this network namespace")


def _describe(exc: BaseException) -> str:
    # Unwrap exception groups of one exception (without naming BaseExceptionGroup, which
    # Python 3.10 lacks).
    while True:
        inner = getattr(exc, "exceptions", None)
        if not (isinstance(inner, tuple) and len(inner) == 1):
            break
        exc = inner[0]
    return f"{type(exc).__name__}: {exc}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--controlling", action="store_true")
    role.add_argument("--controlled", action="store_true")
    parser.add_argument("--ipv6", action="store_true", help="gather ::1 instead of 127.0.0.1")
    parser.add_argument("--lite", action="store_true", help="be an ICE lite agent")
    parser.add_argument(
        "--aggressive", action="store_true", help="aggressive nomination when controlling"
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="call trice.warm_up() first (before the agent opens and anything is measured)",
    )
    parser.add_argument("--stun", help="STUN URL")
    parser.add_argument("--turn", help="TURN URL")
    parser.add_argument("--username", help="TURN username")
    parser.add_argument("--credential", help="TURN password")
    parser.add_argument("--cafile", help="CA certificate (PEM) for a turns: server")
    parser.add_argument("--relay-only", action="store_true", help="the RELAY transport policy")
    parser.add_argument(
        "--namespace",
        action="store_true",
        help="gather on every non-loopback IPv4 address (only inside a test's own netns)",
    )
    parser.add_argument(
        "--mdns",
        choices=sorted(MDNS_MODES),
        default="query",
        help="multicast DNS: off (DISABLED), query (QUERY_ONLY, the default) or gather"
        " (QUERY_AND_GATHER: signal the host candidates under .local names)",
    )
    parser.add_argument(
        "--external",
        action="append",
        metavar="ADDRESS[/LOCAL]",
        help="a 1:1 NAT's public address (NetworkConfig.external_addresses; repeatable)",
    )
    parser.add_argument(
        "--external-candidate",
        choices=["srflx", "host"],
        default="srflx",
        help="signal it as a srflx candidate (the default) or in the host's place",
    )
    parser.add_argument(
        "--mux",
        action="store_true",
        help="open the agent on a UDP mux (trice.open_udp_mux) on 127.0.0.1 (::1 with --ipv6;"
        " the namespace's address with --namespace): its host candidate is the mux's address",
    )
    parser.add_argument(
        "--tcp",
        choices=sorted(TCP_CANDIDATES),
        help="gather ICE-TCP host candidates too (NetworkConfig.tcp_candidates): active,"
        " passive or both",
    )
    parser.add_argument(
        "--no-udp",
        action="store_true",
        help="describe no UDP candidate (as if a firewall dropped UDP: with --tcp, TCP only)",
    )
    # (Each timer's default is the library's: until 2026-12-05 the peer had its own, and
    # ran a default it no longer was, the 3 s rto_max, in every bench and interop test.)
    timing = trice.Timing()
    parser.add_argument("--failed-timeout", type=float, default=timing.failed_timeout)
    parser.add_argument(
        "--rto", type=float, default=timing.rto, help="initial retransmission timeout"
    )
    parser.add_argument(
        "--rto-max", type=float, default=timing.rto_max, help="cap of the doubling RTO"
    )
    parser.add_argument("--max-binding-requests", type=int, default=timing.max_binding_requests)
    parser.add_argument("--gather-timeout", type=float, default=timing.gather_timeout)
    parser.add_argument("--count", type=int, default=0, help="ignored")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--exchange-timeout", type=float, default=5.0)
    parser.add_argument(
        "--report-selected",
        action="store_true",
        help="a 'selected' message each time the selected pair changes",
    )
    parser.add_argument(
        "--report-states",
        action="store_true",
        help="a 'state' message at each change of the connection state",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="trice DEBUG logs")
    parser.add_argument("--trace", action="store_true", help="trice TRACE logs (every check)")
    args = parser.parse_args()
    level = logging.WARNING
    if args.verbose:
        level = logging.DEBUG
    if args.trace or os.environ.get("TRICE_PEER_TRACE"):
        level = trice.TRACE
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="trice-peer: %(relativeCreated)9.3f %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("trice").setLevel(level)
    log.setLevel(min(level, logging.INFO) if level < logging.WARNING else level)
    try:
        return trio.run(amain, args)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.exception("peer failed")
        emit({"type": "error", "message": _describe(exc)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
