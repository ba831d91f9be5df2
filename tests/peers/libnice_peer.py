"""A libnice agent speaking the trice peer line protocol.

Usage::

    /usr/bin/python3 tests/peers/libnice_peer.py --controlling|--controlled [--ipv6] [--lite]
        [--aggressive] [--turn turn:HOST:PORT?transport=udp --username U --credential P
        [--relay-only]] [--namespace --stun stun:HOST[:PORT]] [-v]

JSON lines on stdin/stdout, logs on stderr; see ``tests/peers/harness.py`` for the
protocol.  libnice (the GLib ICE library of GStreamer's webrtcbin) is reached through
GObject introspection (``gi``, Debian's ``python3-gi`` and ``gir1.2-nice-0.1``), so this
program runs under a Python that has them, the system's ``/usr/bin/python3``, not trice's
venv (the harness finds one: ``harness.libnice_python``); it does not import trice.

The agent is ``Nice.Agent.new_full(..., Nice.Compatibility.RFC5245, ...)`` with regular
nomination (``Nice.AgentOption.REGULAR_NOMINATION``; ``--aggressive``: libnice's aggressive
mode, the library's own default) and Trickle ICE (``ICE_TRICKLE``: the harness's
``end-of-candidates`` is ``peer_candidate_gathering_done``).  ``--lite`` makes an ICE lite
agent (``LITE_MODE``).  libnice has no switch for a lite remote: when the remote says it is
lite, this program makes its full agent controlling, as RFC 8445 §6.1.1 asks.

Gathering: libnice enumerates every interface unless the application names its local
addresses, so this program names exactly one (``add_local_address``: 127.0.0.1, or ::1 with
``--ipv6``), turns ICE-TCP and UPnP off (UPnP, where libnice is built with it, would search
the real links by multicast), and names no STUN server.  ``--namespace`` (in a network
namespace of the NAT lab's, with ``--stun``) names instead the address the namespace
reaches the STUN server from, and ``--stun`` names that server (``stun-server``: a
server-reflexive candidate); ``--turn`` (UDP only: ``set_relay_info`` with
``RelayType.UDP``; the server given as an IP address) adds a relayed candidate, and
``--relay-only`` sets libnice's ``force-relay`` (only relayed candidates then).

Receiving: libnice delivers datagrams to a callback attached with
``nice_agent_attach_recv``, which GObject introspection does not expose, and
``Nice.Agent.recv`` comes through ``gi`` without its buffer; with no receiver attached,
libnice does not even read its sockets, so no check is ever answered.
So that one function is called through ``ctypes``, with the agent's own GMainContext (the
default one): every callback, of libnice's and of stdin's (a GLib IO watch), runs in the
GLib main loop of the one thread, in order.

``connected`` is said once libnice has selected a pair (``new-selected-pair-full``) and its
component is ``connected`` or ``ready``, with ``local`` and ``remote`` from that pair.

ICE restart (``restart``): ``restart_stream`` gives new credentials and keeps the local
candidates (libnice gathers nothing anew), and a new check list forms with the remote's new
description; ``connected`` comes again once a pair is selected after the new remote
parameters are in (its ``elapsed_ms`` counted from the restart).

Datagrams go out with ``Nice.Agent.send``, whose buffer ``gi`` takes as text: the harness's
payloads (``xR-I``) are ASCII.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib
import json
import logging
import os
import socket
import sys
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("libnice_peer")

#: The one component of the one stream.
COMPONENT = 1


def emit(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def load_gi() -> tuple[Any, Any]:
    """(GLib, Nice) from GObject introspection; ImportError or ValueError if missing.

    (Imported by name: ``gi`` lives in the system's Python, not in the venv that the type
    checker reads, so it stays an untyped module here.)"""
    gi = importlib.import_module("gi")
    gi.require_version("GLib", "2.0")
    gi.require_version("Nice", "0.1")
    return (
        importlib.import_module("gi.repository.GLib"),
        importlib.import_module("gi.repository.Nice"),
    )


def parse_turn(url: str) -> tuple[str, int, str]:
    """``turn:host[:port][?transport=udp]`` -> (host, port, transport)."""
    parts = urlsplit(url)
    if parts.scheme != "turn":
        raise ValueError(f"only turn: URLs (UDP) are supported: {url!r}")
    hostport = parts.path
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_s = rest.removeprefix(":")
    else:
        host, _, port_s = hostport.partition(":")
    transport = parse_qs(parts.query).get("transport", ["udp"])[0]
    return host, int(port_s) if port_s else 3478, transport


def parse_stun(url: str) -> tuple[str, int]:
    """``stun:host[:port]`` -> (host, port)."""
    host, port, _ = parse_turn("turn:" + url.removeprefix("stun:"))
    return host, port


def namespace_address(stun: str) -> str:
    """The IPv4 address this network namespace reaches the STUN server ``stun`` from (a
    connected UDP socket's: no packet goes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(parse_stun(stun))
        address: str = sock.getsockname()[0]
        return address


def sdp_line(agent: Any, candidate: Any) -> str:
    """The candidate's attribute value (``candidate:...``, no ``a=``).

    (libnice formats it: some fields of a ``Nice.Candidate``, its priority and foundation,
    read wrong through ``gi`` with libnice 0.1.21.)"""
    line: str = agent.generate_local_candidate_sdp(candidate)
    return line.removeprefix("a=")


class Receiver:
    """``nice_agent_attach_recv`` through ctypes: ``on_datagram(bytes)`` is called from the
    GLib main loop for each datagram of the stream's component."""

    _RECV_FUNC = ctypes.CFUNCTYPE(
        None,
        ctypes.c_void_p,  # NiceAgent *
        ctypes.c_uint,  # stream id
        ctypes.c_uint,  # component id
        ctypes.c_uint,  # length
        ctypes.c_void_p,  # gchar *buf
        ctypes.c_void_p,  # user data
    )

    def __init__(self, agent: Any, stream: int, on_datagram: Any) -> None:
        nice = ctypes.CDLL(ctypes.util.find_library("nice") or "libnice.so.10")
        glib = ctypes.CDLL(ctypes.util.find_library("glib-2.0") or "libglib-2.0.so.0")
        glib.g_main_context_default.restype = ctypes.c_void_p
        attach = nice.nice_agent_attach_recv
        attach.restype = ctypes.c_int
        attach.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            self._RECV_FUNC,
            ctypes.c_void_p,
        ]
        self._attach = attach
        self._context = glib.g_main_context_default()

        def callback(*args: Any) -> None:
            _agent, _stream, _component, length, buf, _data = args
            try:
                on_datagram(ctypes.string_at(buf, length))
            except Exception:  # (an exception cannot cross into C)
                log.exception("datagram callback failed")

        self._callback = self._RECV_FUNC(callback)  # (kept alive as long as attached)
        # PyGObject hashes a GObject by its C pointer: the NiceAgent * to hand libnice.
        if not attach(hash(agent), stream, COMPONENT, self._context, self._callback, None):
            raise RuntimeError("nice_agent_attach_recv failed")

    def detach(self, agent: Any, stream: int) -> None:
        """Stop the callbacks (before the agent goes)."""
        # (A NULL callback detaches.)
        self._attach(hash(agent), stream, COMPONENT, self._context, self._RECV_FUNC(), None)


class PeerFailed(Exception):
    """Reported as an ``error`` message, then the program exits with 1."""


class Peer:
    def __init__(self, args: argparse.Namespace, glib: Any, nice: Any) -> None:
        self.args = args
        self.GLib = glib
        self.Nice = nice
        self.loop = glib.MainLoop()
        self.exit_code = 0
        flags = nice.AgentOption.ICE_TRICKLE
        if not args.aggressive:
            flags |= nice.AgentOption.REGULAR_NOMINATION
        if args.lite:
            flags |= nice.AgentOption.LITE_MODE
        agent = nice.Agent.new_full(glib.MainContext.default(), nice.Compatibility.RFC5245, flags)
        self.agent = agent
        agent.set_property("controlling-mode", args.controlling)
        agent.set_property("upnp", False)
        agent.set_property("ice-tcp", args.tcp_only)  # (ICE-TCP alone, or UDP alone)
        agent.set_property("ice-udp", not args.tcp_only)
        local = namespace_address(args.stun) if args.namespace else None
        if local is None:
            local = "::1" if args.ipv6 else "127.0.0.1"
        address = nice.Address.new()
        if not address.set_from_string(local):
            raise PeerFailed(f"cannot make the address {local}")
        if not agent.add_local_address(address):
            raise PeerFailed("add_local_address failed")
        if args.relay_only:
            agent.set_property("force-relay", True)
        if args.stun:
            agent.set_property("stun-server", parse_stun(args.stun)[0])
            agent.set_property("stun-server-port", parse_stun(args.stun)[1])
        self.stream: int = agent.add_stream(1)
        if args.turn:
            host, port, transport = parse_turn(args.turn)
            if transport != "udp":
                raise PeerFailed(f"only TURN over UDP is supported, not {transport}")
            relay_type = nice.RelayType.UDP
            if not agent.set_relay_info(
                self.stream, COMPONENT, host, port, args.username, args.credential, relay_type
            ):
                raise PeerFailed(f"set_relay_info({host!r}, {port}) failed")
        agent.connect("candidate-gathering-done", self.guarded(self.on_gathered))
        agent.connect("component-state-changed", self.guarded(self.on_state))
        agent.connect("new-selected-pair-full", self.guarded(self.on_selected))
        self.receiver = Receiver(agent, self.stream, self.guarded(self.on_datagram))

        self.gathered = False
        self.stdin_buffer = b""
        self.remote_parameters: dict[str, Any] | None = None
        self.pending: list[Any] = []  # remote candidates taken before "start"
        self.remote_done = False
        self.started = False
        #: Waiting for a selected pair to say "connected" (after start, or after a
        #: restart's new remote parameters).
        self.awaiting = False
        self.t0 = 0.0
        self.started_ns = 0
        self.deadline_source = 0
        self.state = nice.ComponentState.DISCONNECTED
        self.selected: tuple[str, str] | None = None
        self.connected = False
        self.rounds = 0
        self.queued_rounds: list[tuple[int, int]] = []  # exchanges asked before connected
        self.received: defaultdict[int, int] = defaultdict(int)
        #: Rounds sent and waiting for the other's datagrams: round -> (count, sent, timer).
        self.waiting: dict[int, tuple[int, int, int]] = {}

    # ------------------------------------------------------------------ plumbing

    def guarded(self, fn: Any) -> Any:
        """``fn`` as a GLib callback: an exception ends the program with an ``error``."""

        def wrapper(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as exc:
                self.fail(f"{type(exc).__name__}: {exc}")
                return False

        return wrapper

    def fail(self, message: str) -> None:
        if self.exit_code == 0:
            log.error("%s", message)
            emit({"type": "error", "message": message})
            self.exit_code = 1
        self.loop.quit()

    def run(self) -> int:
        if not self.agent.gather_candidates(self.stream):
            raise PeerFailed("gather_candidates failed")
        self.loop.run()
        self.receiver.detach(self.agent, self.stream)
        self.agent.remove_stream(self.stream)
        return self.exit_code

    def describe(self) -> None:
        """Parameters, candidates and end-of-candidates (at the start, and on a restart)."""
        ok, ufrag, pwd = self.agent.get_local_credentials(self.stream)
        if not ok:
            raise PeerFailed("get_local_credentials failed")
        emit({"type": "parameters", "ufrag": ufrag, "pwd": pwd, "lite": self.args.lite})
        for candidate in self.agent.get_local_candidates(self.stream, COMPONENT):
            emit({"type": "candidate", "candidate": sdp_line(self.agent, candidate)})
        emit({"type": "end-of-candidates"})

    # ------------------------------------------------------------------ libnice's signals

    def on_gathered(self, _agent: Any, stream: int) -> None:
        if stream != self.stream or self.gathered:
            return
        self.gathered = True
        self.describe()
        # (stdin is read from now on: lines sent meanwhile wait in the pipe.)
        self.GLib.io_add_watch(
            sys.stdin.fileno(),
            self.GLib.PRIORITY_DEFAULT,
            self.GLib.IOCondition.IN | self.GLib.IOCondition.HUP,
            self.guarded(self.on_stdin),
        )

    def on_state(self, _agent: Any, stream: int, component: int, state: Any) -> None:
        if (stream, component) != (self.stream, COMPONENT):
            return
        log.info("component state %s", self.Nice.component_state_to_string(state))
        self.state = state
        if state == self.Nice.ComponentState.FAILED and self.awaiting:
            raise PeerFailed("libnice: the component failed (no pair works)")
        self.maybe_connected()

    def on_selected(
        self, _agent: Any, stream: int, component: int, local: Any, remote: Any
    ) -> None:
        if (stream, component) != (self.stream, COMPONENT):
            return
        self.selected = (sdp_line(self.agent, local), sdp_line(self.agent, remote))
        log.info("selected pair %s -> %s", *self.selected)
        self.maybe_connected()

    def on_datagram(self, data: bytes) -> None:
        head, sep, _ = data.partition(b"-")
        if not (sep and head.startswith(b"x") and head[1:].isdigit()):
            return
        round_ = int(head[1:])
        self.received[round_] += 1
        waiting = self.waiting.get(round_)
        if waiting is not None and self.received[round_] >= waiting[0]:
            count, sent, timer = self.waiting.pop(round_)
            self.GLib.source_remove(timer)
            self.exchanged(round_, count, sent)

    # ------------------------------------------------------------------ the line protocol

    def on_stdin(self, fd: int, _condition: Any) -> bool:
        data = os.read(fd, 65536)
        if not data:
            log.info("stdin EOF")
            self.loop.quit()
            return False
        self.stdin_buffer += data
        while b"\n" in self.stdin_buffer:
            line, _, self.stdin_buffer = self.stdin_buffer.partition(b"\n")
            if line.strip() and not self.handle(json.loads(line)):
                self.loop.quit()
                return False
        return True

    def handle(self, msg: dict[str, Any]) -> bool:
        kind = msg.get("type")
        if kind == "parameters":
            self.take_parameters(msg)
        elif kind == "candidate":
            self.take_candidate(str(msg["candidate"]))
        elif kind == "end-of-candidates":
            self.remote_done = True
            if self.started:
                self.agent.peer_candidate_gathering_done(self.stream)
        elif kind == "sync":
            emit({"type": "synced"})
        elif kind == "start":
            self.start()
        elif kind == "exchange":
            if not self.started:
                raise PeerFailed("exchange before start")
            round_, self.rounds = self.rounds, self.rounds + 1
            if self.connected:
                self.exchange(round_, int(msg["count"]))
            else:
                self.queued_rounds.append((round_, int(msg["count"])))
        elif kind == "restart":
            self.restart()
        elif kind == "close":
            log.info("close requested")
            return False
        else:
            log.warning("ignoring unknown message type %r", kind)
        return True

    def take_parameters(self, msg: dict[str, Any]) -> None:
        self.remote_parameters = msg
        if not self.started:
            return
        # (After a restart: the remote's new description.)
        self.set_remote_credentials()
        self.awaiting = True
        self.maybe_connected()

    def set_remote_credentials(self) -> None:
        assert self.remote_parameters is not None
        ufrag, pwd = self.remote_parameters["ufrag"], self.remote_parameters["pwd"]
        if not self.agent.set_remote_credentials(self.stream, ufrag, pwd):
            raise PeerFailed("set_remote_credentials failed")

    def take_candidate(self, line: str) -> None:
        line = line.strip().removeprefix("a=")
        if not line.startswith("candidate:"):
            line = "candidate:" + line
        candidate = self.agent.parse_remote_candidate_sdp(self.stream, "a=" + line)
        if candidate is None:
            raise PeerFailed(f"libnice cannot parse the candidate {line!r}")
        if self.started:
            self.add_remote_candidates([candidate])
        else:
            self.pending.append(candidate)

    def add_remote_candidates(self, candidates: list[Any]) -> None:
        if candidates and self.agent.set_remote_candidates(self.stream, COMPONENT, candidates) < 0:
            raise PeerFailed("set_remote_candidates failed")

    def start(self) -> None:
        if self.started:
            return
        if self.remote_parameters is None:
            raise PeerFailed("start before remote parameters")
        if self.remote_parameters.get("lite") and not self.args.lite:
            # (RFC 8445 §6.1.1: the full agent controls; libnice has no notion of a lite
            # remote, so its role is set here.)
            self.agent.set_property("controlling-mode", True)
        self.started = True
        self.begin_clock()
        self.set_remote_credentials()
        self.add_remote_candidates(self.pending)
        self.pending = []
        if self.remote_done:
            self.agent.peer_candidate_gathering_done(self.stream)
        self.awaiting = True
        self.maybe_connected()

    def begin_clock(self) -> None:
        self.started_ns = time.time_ns()
        self.t0 = time.perf_counter()
        if self.deadline_source:
            self.GLib.source_remove(self.deadline_source)
        self.deadline_source = self.GLib.timeout_add(
            int(self.args.connect_timeout * 1000), self.guarded(self.connect_timed_out)
        )

    def connect_timed_out(self) -> bool:
        self.deadline_source = 0
        raise PeerFailed(f"not connected within {self.args.connect_timeout} s")

    def maybe_connected(self) -> None:
        ready = (self.Nice.ComponentState.CONNECTED, self.Nice.ComponentState.READY)
        if not self.awaiting or self.selected is None or self.state not in ready:
            return
        elapsed = (time.perf_counter() - self.t0) * 1000.0
        self.awaiting = False
        if self.deadline_source:
            self.GLib.source_remove(self.deadline_source)
            self.deadline_source = 0
        local, remote = self.selected
        emit(
            {
                "type": "connected",
                "elapsed_ms": elapsed,
                "started_ns": self.started_ns,
                "connected_ns": time.time_ns(),
                "local": local,
                "remote": remote,
                "remote_candidates": self.remote_candidates(),
            }
        )
        self.connected = True
        for round_, count in self.queued_rounds:
            self.exchange(round_, count)
        self.queued_rounds = []

    def remote_candidates(self) -> list[dict[str, Any]]:
        """``{"address", "port", "type"}`` of each remote candidate libnice holds."""
        out = []
        for candidate in self.agent.get_remote_candidates(self.stream, COMPONENT):
            # candidate:<foundation> <component> <transport> <priority> <address> <port> typ <t>
            fields = sdp_line(self.agent, candidate).split()
            out.append({"address": fields[4], "port": int(fields[5]), "type": fields[7]})
        return out

    def restart(self) -> None:
        if not self.started:
            raise PeerFailed("restart before start")
        if not self.agent.restart_stream(self.stream):
            raise PeerFailed("restart_stream failed")
        self.awaiting = False
        self.selected = None
        self.remote_done = False
        self.begin_clock()
        self.describe()

    # ------------------------------------------------------------------ data

    def exchange(self, round_: int, count: int) -> None:
        sent = 0
        for i in range(count):
            payload = f"x{round_}-{i}"
            if self.agent.send(self.stream, COMPONENT, len(payload), payload) == len(payload):
                sent += 1
        if self.received[round_] >= count:
            self.exchanged(round_, count, sent)
            return
        timer = self.GLib.timeout_add(
            int(self.args.exchange_timeout * 1000), self.guarded(self.exchange_timed_out), round_
        )
        self.waiting[round_] = (count, sent, timer)

    def exchange_timed_out(self, round_: int) -> bool:
        count, sent, _ = self.waiting.pop(round_)
        self.exchanged(round_, count, sent)
        return False

    def exchanged(self, round_: int, count: int, sent: int) -> None:
        emit({"type": "exchanged", "sent": sent, "received": min(self.received[round_], count)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--controlling", action="store_true")
    role.add_argument("--controlled", action="store_true")
    parser.add_argument("--ipv6", action="store_true", help="gather ::1 instead of 127.0.0.1")
    parser.add_argument("--lite", action="store_true", help="an ICE lite agent (LITE_MODE)")
    parser.add_argument(
        "--aggressive",
        action="store_true",
        help="aggressive nomination (libnice's own default; regular nomination otherwise)",
    )
    parser.add_argument(
        "--turn", help="TURN URL, UDP only, the server an IP address: turn:127.0.0.1:3478"
    )
    parser.add_argument("--username", help="TURN username")
    parser.add_argument("--credential", help="TURN password")
    parser.add_argument("--relay-only", action="store_true", help="libnice's force-relay")
    parser.add_argument(
        "--namespace",
        action="store_true",
        help="gather on the address the network namespace this runs in (the NAT lab's own)"
        " reaches the STUN server from (IPv4)",
    )
    parser.add_argument("--stun", help="STUN URL, the server an IP address: stun:203.0.113.2")
    parser.add_argument("--tcp-only", action="store_true", help="ICE-TCP candidates, no UDP")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--exchange-timeout", type=float, default=5.0)
    parser.add_argument("-v", "--verbose", action="store_true", help="libnice's debug log too")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="libnice-peer: %(name)s %(levelname)s %(message)s",
    )
    if args.relay_only and not args.turn:
        emit({"type": "error", "message": "--relay-only needs --turn"})
        return 2
    if args.namespace and (args.ipv6 or not args.stun):
        emit({"type": "error", "message": "--namespace gathers IPv4 only, and needs --stun"})
        return 2
    if args.verbose:
        os.environ["G_MESSAGES_DEBUG"] = "all"
    try:
        glib, nice = load_gi()
    except (ImportError, ValueError) as exc:
        emit({"type": "error", "message": f"libnice through gi is unavailable: {exc}"})
        return 2
    # (GLib writes debug and info messages to stdout by default: keep it for the protocol.)
    glib.log_writer_default_set_use_stderr(True)
    if args.verbose:
        nice.debug_enable(True)
    try:
        return Peer(args, glib, nice).run()
    except Exception as exc:
        log.exception("peer failed")
        emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
