"""The ``trice`` command: ``trice demo`` and ``trice gather``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, overload

import trio

import trice
from trice._errors import printable
from trice._servers import host_port
from trice._trio._agent import introduce
from trice._trio._exits import leaves as _leaves
from trice._trio._mdns import Mdns

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup
if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["main"]

Emit = Callable[[dict[str, Any]], None]

#: The demo's throughput run stops after this many seconds, ``--count`` sent or not.
_THROUGHPUT_CAP = 5.0
#: Seconds the demo waits for a datagram (a pong, the rest of the throughput run) before it
#: counts it lost: on loopback, one that has not come by then never will.
_LOSS_WAIT = 1.0
#: How long the demo samples its task tree at every turn while the agents connect (then
#: every 10 ms).
_SAMPLED_CLOSELY = 0.05


class _DemoError(trice.TriceError):
    """The demo cannot run here (no loopback address to use)."""


class _OutputError(Exception):
    """Standard output could not be written (``trice demo > /dev/full``: no space left)."""


def _writes(emit: Emit) -> Emit:
    """``emit``, with a write error on standard output (but a closed pipe, said apart) as an
    :class:`_OutputError`, told from the errors of the agents' own sockets."""

    def guarded(record: dict[str, Any]) -> None:
        try:
            emit(record)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputError(f"standard output: {exc}") from exc

    return guarded


def _emitter(as_json: bool) -> Emit:
    def emit(record: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(record), flush=True)
        else:
            print(_render(record), flush=True)

    return _writes(emit)


def _render(record: dict[str, Any]) -> str:
    kind = record["event"]
    who = f"[{record['agent']}] " if "agent" in record else ""
    if kind == "start":
        return f"trice demo: two ICE agents in one process, on loopback ({record['families']})"
    if kind == "candidate":
        return f"{who}gathered  {record['candidate']}"
    if kind == "gathering":
        return f"{who}gathering {record['state']}"
    if kind == "state":
        return f"{who}connection {record['state']}"
    if kind == "selected":
        over = " (over TCP)" if record.get("protocol") == "tcp" else ""
        return f"{who}selected  {record['local']}  ->  {record['remote']}{over}"
    if kind == "tree":
        return "task tree while checks run:\n" + "\n".join(_tree_lines(record["tree"]))
    if kind == "rtt":
        checks = record.get("ice_us")
        lost = record.get("lost", 0)
        ice = "" if checks is None else f"; the pair's last ICE check: {checks:.0f} {_us()}"
        if lost == record["count"]:
            return f"round trip: all {lost} pings lost{ice}"
        over = f"{record['count']} pings" + (f", {lost} lost" if lost else "")
        return (
            f"round trip: median {record['median_us']:.0f} {_us()}, "
            f"min {record['min_us']:.0f} {_us()} over {over}{ice}"
        )
    if kind == "throughput":
        # (timed to the last datagram received: what was lost is waited for, not timed)
        return (
            f"throughput: {record['received']}/{record['sent']} datagrams of {record['size']} B "
            f"in {record['seconds'] * 1000:.1f} ms = {record['mbit_s']:.0f} Mbit/s "
            f"({record['pps']:.0f} datagrams/s)"
        )
    if kind == "connected":
        return f"connected in {record['ms']:.2f} ms (both sides)"
    if kind == "done":
        if record["open_sockets"] or record["tasks_left"]:
            return (
                f"done: both agents closed, but {record['open_sockets']} sockets are open and "
                f"these tasks left: {', '.join(record['tasks_left']) or 'none'}"
            )
        return "done: both agents closed, every socket and task is gone"
    return json.dumps(record)


def _tree_lines(node: dict[str, Any], prefix: str = "", last: bool = True) -> list[str]:
    last_branch, branch, stem = _GLYPHS if _prints("".join(_GLYPHS)) else _ASCII_GLYPHS
    lines = [f"{prefix}{last_branch if last else branch}{node['name']}"]
    children = node["children"]
    for i, child in enumerate(children):
        lines.extend(
            _tree_lines(child, prefix + ("    " if last else stem), i == len(children) - 1)
        )
    return lines


_GLYPHS = ("└── ", "├── ", "│   ")
_ASCII_GLYPHS = ("`-- ", "|-- ", "|   ")


def _prints(text: str) -> bool:
    """Whether standard output's encoding has ``text``'s characters (a Windows code page,
    or ``PYTHONIOENCODING=ascii``, may lack the tree's box-drawing characters, or 'µ')."""
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _us() -> str:
    """Microseconds' unit, as standard output can print it."""
    return "µs" if _prints("µ") else "us"


def _task_tree(
    task: trio.lowlevel.Task, labels: Mapping[trio.Nursery, str] | None = None
) -> dict[str, Any]:
    """``task``'s tree of tasks, as nodes (``name``, ``children``).  A nursery that
    ``labels`` names (an agent's) is a node of its own, its tasks under it; another
    nursery's tasks are children of the task that opened it.  Tasks are in a set in trio:
    each node's are listed in the order of :func:`_task_order`."""
    labels = labels or {}
    children: list[dict[str, Any]] = []
    for nursery in task.child_nurseries:
        tasks = [_task_tree(child, labels) for child in nursery.child_tasks]
        tasks.sort(key=_task_order)
        label = labels.get(nursery)
        if label is None:
            children.extend(tasks)
        else:
            children.append({"name": label, "children": tasks})
    return {"name": task.name, "children": children}


#: The order of an agent's tasks in the demo's tree: its own task, then the tasks that own
#: sockets, then the checks.
_TASK_KINDS = ("trice agent", "gather", "receive", "tcp", "accept", "mdns")


def _task_order(node: dict[str, Any]) -> tuple[int, str]:
    name = str(node["name"])
    for rank, kind in enumerate(_TASK_KINDS):
        if name.startswith(kind):
            return rank, name
    return len(_TASK_KINDS), name


def _shared_timers() -> list[dict[str, Any]]:
    """The run's ``trice timers`` task (a system task shared by every agent, outside the
    agents' own trees), as tree nodes."""
    root = trio.lowlevel.current_root_task()
    if root is None:
        return []
    return [
        {"name": f"{task.name} (shared by the agents of this run)", "children": []}
        for nursery in root.child_nurseries
        for task in nursery.child_tasks
        if task.name == "trice timers"
    ]


def _names(tree: dict[str, Any]) -> list[str]:
    """The names of a task tree's tasks, its root's first."""
    return [str(tree["name"])] + [name for child in tree["children"] for name in _names(child)]


def _count(tree: dict[str, Any], prefix: str) -> int:
    here = 1 if str(tree["name"]).startswith(prefix) else 0
    return here + sum(_count(child, prefix) for child in tree["children"])


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _loopback_network(
    ipv6: bool, mdns: bool = False, tcp: tuple[trice.TcpType, ...] = ()
) -> trice.NetworkConfig:
    return trice.NetworkConfig(
        ip_filter=lambda address: address.is_loopback,
        include_loopback=True,
        ipv6=ipv6,
        mdns=trice.MdnsMode.QUERY_AND_GATHER if mdns else trice.MdnsMode.QUERY_ONLY,
        tcp_candidates=tcp,
        udp=not tcp,
    )


async def _watch(name: str, stream: trice.EventStream, emit: Emit) -> None:
    async with stream:
        async for event in stream:
            if isinstance(event, trice.CandidateGathered):
                emit({"event": "candidate", "agent": name, "candidate": event.candidate.to_sdp()})
            elif isinstance(event, trice.GatheringStateChanged):
                emit({"event": "gathering", "agent": name, "state": event.state.value})
            elif isinstance(event, trice.ConnectionStateChanged):
                emit({"event": "state", "agent": name, "state": event.state.value})
            elif isinstance(event, trice.SelectedPairChanged):
                local, remote = event.pair.local, event.pair.remote
                emit(
                    {
                        "event": "selected",
                        "agent": name,
                        "local": f"{local.type.value} {host_port(local.address, local.port)}",
                        "remote": f"{remote.type.value} {host_port(remote.address, remote.port)}",
                        "protocol": local.protocol,
                    }
                )
            elif isinstance(event, trice.EventsLost):
                emit({"event": "events-lost", "agent": name, "count": event.count})


async def _demo(
    emit: Emit, *, count: int, size: int, pings: int, mdns: bool = False, tcp: bool = False
) -> None:
    ipv6 = _has_ipv6()
    # With ``tcp``, a gathers an active ICE-TCP candidate, b a passive one, and no UDP one:
    # as if a firewall let nothing but TCP through.
    config_a = trice.AgentConfig(
        network=_loopback_network(ipv6, mdns, (trice.TcpType.ACTIVE,) if tcp else ())
    )
    config_b = trice.AgentConfig(
        network=_loopback_network(ipv6, mdns, (trice.TcpType.PASSIVE,) if tcp else ())
    )
    emit({"event": "start", "families": "IPv4 and IPv6" if ipv6 else "IPv4"})
    me = trio.lowlevel.current_task()
    async with trio.open_nursery() as watchers:
        async with (
            trice.open_agent(config_a, controlling=True) as a,
            trice.open_agent(config_b, controlling=False) as b,
        ):
            watchers.start_soon(_watch, "a", a.subscribe(), emit, name="watch a")
            watchers.start_soon(_watch, "b", b.subscribe(), emit, name="watch b")
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            if not (a.local_candidates and b.local_candidates):
                if (
                    mdns
                    and all(agent._transports for agent in (a, b))  # (sockets: lo is up)
                    and not all(isinstance(agent._mdns, Mdns) for agent in (a, b))
                ):
                    raise _DemoError(
                        "mDNS could not be opened (-v says why), and --mdns signals the host "
                        "candidates only as .local names"
                    )
                advice = " ip link set lo up" if sys.platform.startswith("linux") else ""
                raise _DemoError(
                    f"no loopback address to use (is the loopback interface up?{advice})"
                )
            # Signaling, in-process: each side learns the other's parameters and candidates.
            introduce(a, b)
            best: dict[str, Any] = {"name": "trice demo", "children": []}
            # (Each agent's tasks under its nursery, open_agent's, in this task.)
            labels = {
                a._nursery: "agent a: open_agent's nursery (controlling)",
                b._nursery: "agent b: open_agent's nursery (controlled)",
            }
            conns: dict[str, trice.Connection] = {}
            started = connected = trio.current_time()
            # (The clock runs from the first connect() call, in its task: not from before
            # the tasks start, when the sampler's first look at the task tree, a
            # millisecond and more on a loaded machine, came first: the compat51 review.)
            calls: list[float] = []

            async def connect(name: str, agent: trice.Agent) -> None:
                nonlocal connected
                calls.append(trio.current_time())
                conns[name] = await agent.connect()
                connected = trio.current_time()  # (the later of the two: the sampler's
                # sleep is not timed)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect, "a", a, name="connect a")
                nursery.start_soon(connect, "b", b, name="connect b")
                # Sample the live task tree until both are connected; keep the busiest view.
                # (At every turn while checks run, some milliseconds on loopback; then every
                # 10 ms, which keeps a CPU busy no longer while a connection takes its time.)
                while len(conns) < 2:
                    tree = _task_tree(me, labels)
                    tree["name"] = "trice demo"
                    tree["children"].extend(_shared_timers())
                    if _count(tree, "check") + _count(tree, "nominate") > _count(
                        best, "check"
                    ) + _count(best, "nominate"):
                        best = tree
                    if trio.current_time() - started < _SAMPLED_CLOSELY:
                        await trio.lowlevel.checkpoint()
                    else:
                        await trio.sleep(0.01)
            elapsed = connected - min(calls)
            emit({"event": "connected", "ms": elapsed * 1000})
            emit({"event": "tree", "tree": best})
            ca, cb = conns["a"], conns["b"]
            rtts = []
            for i in range(pings):
                ping, pong = b"ping %d" % i, b"pong %d" % i
                t0 = trio.current_time()
                # A ping (or its pong) not back within _LOSS_WAIT is lost; one that comes
                # late is not taken for a later round's.
                with trio.move_on_after(_LOSS_WAIT):
                    await ca.send(ping)
                    while await cb.receive() != ping:
                        pass
                    await cb.send(pong)
                    while await ca.receive() != pong:
                        pass
                    rtts.append(trio.current_time() - t0)
            # ICE's own figure: the selected pair's latest timed check.
            ice_rtt = next((s.round_trip_time for s in a.pair_statistics() if s.selected), None)
            emit(
                {
                    "event": "rtt",
                    "count": pings,
                    "lost": pings - len(rtts),
                    "median_us": statistics.median(rtts) * 1e6 if rtts else None,
                    "min_us": min(rtts) * 1e6 if rtts else None,
                    "ice_us": None if ice_rtt is None else ice_rtt * 1e6,
                }
            )
            payload = bytes(size)
            sent = received = 0
            t0 = last = trio.current_time()
            all_in = trio.Event()

            async def sink() -> None:
                nonlocal received, last
                while True:
                    await cb.receive()
                    received += 1
                    last = trio.current_time()
                    if received >= count or (sending_done and received >= sent):
                        all_in.set()

            sending_done = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sink)
                with trio.move_on_after(_THROUGHPUT_CAP):  # (the sending, at most)
                    for _ in range(count):
                        await ca.send(payload)
                        sent += 1
                sending_done = True
                if received >= sent:
                    all_in.set()
                # What was lost never comes: wait for the rest while datagrams come in (also
                # when the cap cut the sending: the last ones are on their way).
                before = -1
                while received != before and not all_in.is_set():
                    before = received
                    with trio.move_on_after(_LOSS_WAIT):
                        await all_in.wait()
                nursery.cancel_scope.cancel()
            # Timed to the last datagram received (not over the wait for those lost).
            seconds = last - t0
            emit(
                {
                    "event": "throughput",
                    "sent": sent,
                    "received": received,
                    "size": size,
                    "seconds": seconds,
                    "mbit_s": received * size * 8 / seconds / 1e6 if seconds > 0 else 0.0,
                    "pps": received / seconds if seconds > 0 else 0.0,
                }
            )
            # (Taken now: a closed agent holds none.)
            transports = [transport for agent in (a, b) for transport in agent._transports.values()]
    # The agents closed: what they leave behind is nothing, or the line says what: their
    # sockets, the tasks of the demo's tree, and the run's system task the agents share
    # (``trice timers``, outside their nurseries), given a moment to end.
    open_sockets = sum(not transport.closed for transport in transports) + sum(
        isinstance(agent._mdns, Mdns) and not agent._mdns.closed for agent in (a, b)
    )
    for _ in range(100):  # (a task cancelled ends at its next step: a few checkpoints)
        if not _system_tasks_left():
            break
        await trio.lowlevel.checkpoint()
    tasks_left = _names(_task_tree(me))[1:] + _system_tasks_left()
    emit({"event": "done", "open_sockets": open_sockets, "tasks_left": tasks_left})


def _system_tasks_left() -> list[str]:
    """The names of trice's tasks among the run's system tasks (``trice timers``)."""
    root = trio.lowlevel.current_root_task()
    if root is None:
        return []
    return [
        task.name
        for nursery in root.child_nurseries
        for task in nursery.child_tasks
        if task.name.startswith("trice ")
    ]


async def _gather(args: argparse.Namespace, emit: Emit) -> int:
    servers = []
    if args.stun:
        scheme = args.stun.split(":", 1)[0].strip().lower()
        if scheme in ("turn", "turns"):
            raise trice.ConfigError(  # (the scheme only: the URL may hold a password)
                f"--stun takes a stun: or stuns: URL, not a {scheme}: one: a TURN server "
                "goes with --turn"
            )
        servers.append(trice.IceServer(args.stun))
    if args.turn:
        servers.append(trice.IceServer(args.turn, args.username, args.credential))
    network = trice.NetworkConfig(
        interface_filter=(lambda name: name in args.interface) if args.interface else None,
        include_loopback=bool(args.interface),  # (named: loopback, whatever its name)
        tcp_candidates=(trice.TcpType.ACTIVE, trice.TcpType.PASSIVE) if args.tcp else (),
        proxy=args.proxy,
    )
    policy = trice.TransportPolicy(args.policy)
    config = trice.AgentConfig(
        network=network,
        ice_servers=servers,
        transport_policy=policy,
        timing=trice.Timing(gather_timeout=args.timeout),
    )
    if not args.watch:
        async with trice.open_agent(config, controlling=True) as agent:
            await agent.wait_gathering_complete()
            _emit_gathered(agent, emit)
        return 0
    # The watch is live once its first value is in: no change after that is missed, those
    # made while the agent gathers included.
    async with contextlib.aclosing(trice.address_changes(network, initial=True)) as changes:
        await anext(changes)
        async with trice.open_agent(config, controlling=True) as agent:
            await agent.wait_gathering_complete()
            _emit_gathered(agent, emit)
            async for addresses in changes:
                emit({"event": "addresses", "addresses": list(addresses)})
                agent.restart(regather=True)
                await agent.wait_gathering_complete()
                _emit_gathered(agent, emit)
    return 0


def _emit_gathered(agent: trice.Agent, emit: Emit) -> None:
    """Emit the agent's candidates and the reports of its gather sources.  A related address
    goes as ``related_address`` and ``related_port`` (as ``address`` and ``port``), and as
    ``related``, ``host:port`` with an IPv6 address in brackets (as the text's columns)."""
    for candidate in agent.local_candidates:
        related_address = candidate.related_address or None
        related_port = candidate.related_port if related_address else None
        related = host_port(related_address, candidate.related_port or 0) if related_address else ""
        emit(
            {
                "event": "candidate",
                "type": candidate.type.value,
                "protocol": candidate.protocol,
                "tcp_type": None if candidate.tcp_type is None else candidate.tcp_type.value,
                "address": candidate.address,
                "port": candidate.port,
                "related": related,
                "related_address": related_address,
                "related_port": related_port,
                "priority": candidate.priority,
                "foundation": candidate.foundation,
                "sdp": candidate.to_sdp(),
            }
        )
    if not agent.local_candidates:
        emit({"event": "none", "policy": agent.config.transport_policy.value})
    for report in agent.gather_reports:
        emit(
            {
                "event": "source",
                "source": report.source,
                "elapsed_ms": round(report.elapsed * 1000, 2),
                "candidates": report.candidates,
                "error": report.error,
                "code": report.code,
            }
        )


def _gather_emitter(as_json: bool) -> Emit:
    if as_json:
        return _emitter(True)
    return _writes(_gather_table())


def _gather_table() -> Emit:
    header = {"candidate": False, "source": False}

    def emit(record: dict[str, Any]) -> None:
        kind = record["event"]
        if kind == "addresses":
            header["candidate"] = header["source"] = False
            print(f"\naddresses now: {', '.join(record['addresses']) or 'none'}; gathering anew")
        elif kind == "none":
            print(f"no candidates (transport policy {record['policy']})")
        elif kind == "candidate":
            if not header["candidate"]:
                header["candidate"] = True
                print(f"{'TYPE':<6} {'PROTO':<11} {'ADDRESS':<40} {'RELATED':<46} PRIORITY")
            address = host_port(record["address"], record["port"])
            proto = " ".join(filter(None, (record["protocol"], record.get("tcp_type"))))
            print(
                f"{record['type']:<6} {proto:<11} {address:<40} "
                f"{record['related']:<46} {record['priority']}"
            )
        else:
            if not header["source"]:
                header["source"] = True
                print(f"\n{'SOURCE':<60} {'TIME':>10} {'CANDS':>5}  RESULT")
            result = printable(record["error"] or "ok")
            print(
                f"{record['source']:<60} {record['elapsed_ms']:>8.1f}ms "
                f"{record['candidates']:>5}  {result}"
            )
        sys.stdout.flush()  # (each line as it comes, to a pipe too: ``--watch | tee``)

    return emit


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trice`` console script."""
    parser = _Parser(prog="trice", description="ICE (RFC 8445) for trio")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: TRACE)")
    parser.add_argument("--version", action="version", version=f"trice {trice.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="two agents connect on loopback; no server needed")
    demo.add_argument("--json", action="store_true", help="print JSON lines")
    demo.add_argument(
        "--count", type=_at_least(1), default=5000, help="datagrams for the throughput run"
    )
    demo.add_argument(
        "--size", type=_at_least(1, 65_507), default=1200, help="datagram size in bytes"
    )
    demo.add_argument("--pings", type=_at_least(1), default=200, help="round trips to time")
    demo.add_argument(
        "--mdns",
        action="store_true",
        help="signal host candidates under .local names, resolved by mDNS (on loopback)",
    )
    demo.add_argument(
        "--tcp",
        action="store_true",
        help="connect over ICE-TCP only (RFC 6544): a active, b passive, no UDP gathered",
    )
    gather = sub.add_parser("gather", help="gather candidates once and show how each source did")
    gather.add_argument("--stun", metavar="URL", help="a STUN server, e.g. stun:host:3478")
    gather.add_argument("--turn", metavar="URL", help="a TURN server, e.g. turn:host?transport=udp")
    gather.add_argument("--username", help="TURN username")
    gather.add_argument(
        "--credential",
        default=os.environ.get("TRICE_TURN_CREDENTIAL") or None,
        help="TURN password (by default $TRICE_TURN_CREDENTIAL, which stays out of ps and history)",
    )
    gather.add_argument(
        "--interface", action="append", metavar="NAME", help="only this interface (repeatable)"
    )
    gather.add_argument("--policy", choices=[p.value for p in trice.TransportPolicy], default="all")
    gather.add_argument("--timeout", type=float, default=3.0, help="gather timeout per server")
    gather.add_argument(
        "--tcp", action="store_true", help="ICE-TCP host candidates too (active and passive)"
    )
    gather.add_argument(
        "--proxy",
        metavar="URL",
        default=os.environ.get("TRICE_PROXY") or None,
        help=(
            "a proxy for TURN over TCP and TLS: http://proxy:3128, https://proxy:443 or "
            "socks5://proxy:1080 (by default $TRICE_PROXY, where a password in it stays out "
            "of ps and history)"
        ),
    )
    gather.add_argument(
        "--watch",
        action="store_true",
        help="then watch the addresses, and gather anew (an ICE restart) each time they change",
    )
    gather.add_argument("--json", action="store_true", help="print JSON lines")
    if sys.stdout is None:  # (``trice gather >&-``: Python has no standard output at all)
        _say("standard output: closed")
        return 1
    try:
        args = parser.parse_args(argv)
    except OSError as exc:  # (--help or --version, written at once: see _Parser)
        return _flushed(exc)
    except SystemExit as exc:
        # (--help and --version print, and exit: their output is flushed here, where a
        # reader that went or a full disk is taken as below, not as the interpreter exits.)
        status = _flushed()
        if status is not None:
            return status
        code = exc.code
        return code if isinstance(code, int) else 0 if code is None else 2
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        # A character standard output's encoding lacks (in a name, in a server's words) is
        # written out as an escape, not raised.
        reconfigure(errors="backslashreplace")
    if args.verbose:
        level = trice.TRACE if args.verbose > 1 else logging.DEBUG
        logging.basicConfig(
            level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
        )
    elif args.command == "gather" and not logging.getLogger().handlers:
        # What the log would warn of (a server that gave no candidate) is in the output
        # already: Python's last-resort handler would print it again, bare, on stderr.
        log = logging.getLogger("trice")
        if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
            log.addHandler(logging.NullHandler())
    try:
        if args.command == "demo":
            trio.run(
                lambda: _demo(
                    _emitter(args.json),
                    count=args.count,
                    size=args.size,
                    pings=args.pings,
                    mdns=args.mdns,
                    tcp=args.tcp,
                )
            )
            return 0
        return trio.run(_gather, args, _gather_emitter(args.json))
    except BaseException as exc:
        # (What the demo's own nurseries raise comes in a group: looked at leaf by leaf.)
        leaves = _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return 130
        if all(isinstance(leaf, BrokenPipeError) for leaf in leaves):
            # The reader went (``trice demo --json | head``): quietly, as a shell's tools do
            # on SIGPIPE; and nothing more goes to the closed pipe as the interpreter exits.
            _to_nowhere(sys.stdout)
            return 141
        if all(isinstance(leaf, trice.TriceError) for leaf in leaves):
            for said in dict.fromkeys(str(leaf) for leaf in leaves):  # (each once)
                _say(said)
            # (2 for what was given wrong, as argparse's usage error; 1 for what happened
            # as it ran: no candidate, ICE failed, no descriptor left...)
            return 2 if all(isinstance(leaf, trice.ConfigError) for leaf in leaves) else 1
        if all(isinstance(leaf, _OutputError) for leaf in leaves):
            # (``trice demo > /dev/full``.)  What is still buffered for standard output goes
            # nowhere, not into a second error as the interpreter exits.
            _to_nowhere(sys.stdout)
            _say(str(leaves[0]))
            return 1
        raise


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose help and version are written as the commands' output is:
    an error writing them is raised (argparse let it pass: with PYTHONUNBUFFERED, ``trice
    --version > /dev/full`` said nothing, and exited 0)."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if not message:
            return
        file = file or sys.stderr
        if file is sys.stdout:
            file.write(message)  # (help, version: see _flushed)
        elif file is not None:  # (a usage error: said if it can be, as argparse does)
            try:
                file.write(message)
                flush = getattr(file, "flush", None)  # (said now, not at the exit)
                if flush is not None:
                    flush()
            except OSError:
                _to_nowhere(file)  # (a full disk: status 2 still, not 120)

    def error(self, message: str) -> NoReturn:
        """A usage error: said on standard error, if there is one (argparse printed its
        usage line on standard output then: into the JSON a script reads), status 2."""
        if sys.stderr is not None:
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _say(text: str) -> None:
    """``trice: text`` on standard error, if there is one (closed: nothing, not into
    standard output's JSON), and if it can be written (a full disk, a reader that went:
    nothing, and the exit status stays the one the caller gives)."""
    if sys.stderr is None:
        return
    try:
        print(f"trice: {text}", file=sys.stderr, flush=True)
    except OSError:
        _to_nowhere(sys.stderr)


def _to_nowhere(stream: Any) -> None:
    """Point ``stream``'s file at nothing: what is still buffered for it goes nowhere, not
    into a second error as the interpreter exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


@overload
def _flushed() -> int | None: ...
@overload
def _flushed(error: OSError) -> int: ...
def _flushed(error: OSError | None = None) -> int | None:
    """Flush standard output (unless a write to it failed already, of ``error``): ``None``
    if all went, else the exit status, 141 for a reader that went (``trice --help |
    true``), 1 for another error (a full disk), said on standard error, standard output
    then pointed to nowhere, so that nothing more fails as the interpreter exits."""
    assert sys.stdout is not None  # (see main)
    if error is None:
        try:
            sys.stdout.flush()
            return None
        except OSError as exc:
            error = exc
    _to_nowhere(sys.stdout)
    if isinstance(error, BrokenPipeError):
        return 141
    _say(f"standard output: {error}")
    return 1


def _at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{value} is not {bound}")
        return value

    return parse
