"""Drive real ICE peers (Pion, aioice, libnice, trice) as subprocesses over loopback.

Every peer is a program speaking the same **line protocol**: one JSON object per line, on
its stdin (input) and stdout (output); free-form logs go to stderr. Any two peers can thus be
wired together by relaying lines, which is what :func:`connect_pair` does.

Command line (every peer)::

    PEER --controlling|--controlled [--ipv6] [--lite]
         [--turn turn:HOST:PORT?transport=udp --username U --credential P [--relay-only]]

Peers gather ONLY loopback host candidates (127.0.0.1, or ::1 with ``--ipv6``), or relayed
candidates from the given TURN server. ``--lite`` makes an ICE lite agent (Pion, libnice and
trice; aioice answers with an ``error``). trice's and libnice's peers also take
``--aggressive`` (aggressive nomination when controlling); trice's ``--help`` lists the
rest (``--mdns``, ``--mux``, ``--tcp active|passive|both``, ``--no-udp``, ``--external``...).
Pion's peer also takes ``--tcp`` (ICE-TCP, IPv4 only: one passive TCP host candidate on
127.0.0.1 instead of UDP; with ``--also-udp``, beside the UDP one); pass it, as any kind's
own options, through ``extra``, e.g. ``peer_command("pion", False, extra=["--tcp"])``;
and, for the NAT lab (``tests/test_nat_interop.py``), ``--namespace`` (gather on every link
but loopback, IPv4 UDP: the lab's namespace's own), ``--stun URL`` (a server-reflexive
candidate too) and ``--report-selected`` (a ``selected`` message, ``local`` and ``remote``,
each time the selected pair changes, as trice's peer sends).  aioice's peer takes
``--namespace`` and ``--stun URL`` too; trice's also ``--report-states`` (a ``state``
message at each change of the connection state).

The libnice peer (``libnice_peer.py``, libnice through GObject introspection) runs under a
Python whose ``gi`` has libnice (Debian's ``python3-gi`` and ``gir1.2-nice-0.1``): the venv's
has not, so :func:`libnice_python` finds one (``$TRICE_LIBNICE_PYTHON``, else this Python,
else ``/usr/bin/python3``) and raises :class:`PeerUnavailable` when none can import it.  Its
``--turn`` is UDP only.

Output (peer -> harness), in this order::

    {"type": "parameters", "ufrag": "...", "pwd": "...", "lite": false}
    {"type": "candidate", "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"}
    ... one per local candidate (RFC 8839 attribute value: "candidate:" prefix, no "a=")
    {"type": "end-of-candidates"}
    {"type": "connected", "elapsed_ms": 0.61, "local": "candidate:...", "remote": "candidate:..."}
        once connected; elapsed_ms is the time the connect call took, started on "start"
        (measured inside the peer's timeout guard, whose cost is the program's, not the
        agent's); started_ns and connected_ns, optional, are the same two moments on the
        machine's wall clock, in nanoseconds (``local`` and ``remote``, the selected pair,
        are optional too, as is ``remote_candidates``: ``{"address", "port", "type"}`` of
        each remote candidate the agent holds, a ``.local`` one as its peer shows it)
    {"type": "exchanged", "sent": N, "received": M}
        answer to each "exchange", see below
    {"type": "synced"}
        answer to each "sync": every message before it has been handled
    {"type": "error", "message": "..."}
        on failure, followed by a non-zero exit

Input (harness -> peer)::

    {"type": "parameters", "ufrag": ..., "pwd": ..., "lite": ...}   the remote's
    {"type": "candidate", "candidate": "..."}     a remote candidate ("a=" / "candidate:" optional)
    {"type": "end-of-candidates"}                 no more remote candidates
    {"type": "sync"}                              answer "synced" once every message before
                                                  it has been handled
    {"type": "start"}                             start connectivity checks now (remote
                                                  parameters must have been given; candidates
                                                  may still trickle in afterwards)
    {"type": "exchange", "count": N}              data phase, see below
    {"type": "restart"}                           ICE restart (after start): the peer takes new
                                                  parameters and describes itself again, as at
                                                  the start (parameters, candidates, end-of-
                                                  candidates); it then takes the other's new
                                                  description, and says "connected" again once
                                                  the new checks select a pair (Pion, libnice
                                                  and trice; aioice answers with an "error")
    {"type": "close"}                             clean exit (so is EOF on stdin)

Data phase: exchange rounds are numbered 0, 1, 2... by each peer in the order it receives
``exchange`` messages (the harness sends each round to both peers). In round R a peer sends
N datagrams ``b"xR-I"`` (I = 0..N-1), counts the datagrams of round R it receives from the
other side (counting starts at connection, so datagrams that arrive before its own
``exchange`` are not lost), and prints ``exchanged`` once it has received N of them, or after
its exchange timeout (5 s) with however many it got. There is no echo, so lost datagrams are
reported rather than retried.

The harness API is synchronous (threads read the pipes), so it works from plain pytest tests,
from trio tests through ``trio.to_thread.run_sync`` and from benchmarks. Every call has a
timeout, and :class:`Peer` kills its process on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import trice

HERE = Path(__file__).resolve().parent
PION_SRC = HERE / "pion"
PION_BUILD_DIR = PION_SRC / ".build"
AIOICE_PEER = HERE / "aioice_peer.py"
LIBNICE_PEER = HERE / "libnice_peer.py"
TRICE_PEER = HERE / "trice_peer.py"
#: GOPATH holding Debian's golang-github-pion-ice.v2-dev and its dependencies.
GOPATH = os.environ.get("TRICE_PION_GOPATH", "/usr/share/gocode")

Message = dict[str, Any]


class PeerUnavailable(Exception):
    """A peer program cannot be built or run here (tests skip on this)."""


class PeerError(Exception):
    """A peer misbehaved: reported an error, exited, or timed out."""


# --------------------------------------------------------------------------- building Pion


_build_lock = threading.Lock()


def pion_binary() -> Path:
    """Build the Pion peer (once per source hash) and return the binary's path.

    Builds offline in GOPATH mode against Debian's packaged sources; the binary is cached in
    ``tests/peers/pion/.build/pion-peer-<hash>``. Raises :class:`PeerUnavailable` if Go or
    the Pion sources are missing.
    """
    go = shutil.which("go")
    if go is None:
        raise PeerUnavailable("the Go toolchain (go) is not installed")
    if not (Path(GOPATH) / "src/github.com/pion/ice/v2/agent.go").exists():
        raise PeerUnavailable(
            f"pion/ice v2 sources not found under {GOPATH}"
            " (apt install golang-github-pion-ice.v2-dev)"
        )
    source = (PION_SRC / "main.go").read_bytes()
    digest = hashlib.sha256(source + GOPATH.encode()).hexdigest()[:16]
    binary = PION_BUILD_DIR / f"pion-peer-{digest}"
    with _build_lock:
        if binary.exists():
            return binary
        PION_BUILD_DIR.mkdir(exist_ok=True)
        ignore = PION_BUILD_DIR / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")
        gocache = PION_BUILD_DIR / "gocache"
        env = {
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": GOPATH,
            "GOCACHE": str(gocache),
            "GOFLAGS": "",
            "CGO_ENABLED": "0",
        }
        fd, tmp = tempfile.mkstemp(prefix=".pion-peer-", dir=PION_BUILD_DIR)
        os.close(fd)
        try:
            proc = subprocess.run(
                [go, "build", "-o", tmp, "."],
                cwd=PION_SRC,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if proc.returncode != 0:
                raise PeerUnavailable(f"building the Pion peer failed:\n{proc.stderr}")
            os.chmod(tmp, 0o755)
            os.replace(tmp, binary)  # atomic: concurrent builders are harmless
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        # Drop binaries of older sources.
        for old in PION_BUILD_DIR.glob("pion-peer-*"):
            if old != binary:
                with contextlib.suppress(OSError):
                    old.unlink()
    return binary


# --------------------------------------------------------------------------- finding libnice


#: What an interpreter must run for the libnice peer: libnice's typelib through ``gi``.
_LIBNICE_PROBE = (
    "import gi; gi.require_version('Nice', '0.1'); from gi.repository import Nice; Nice.Agent"
)


@functools.cache
def _find_libnice_python() -> tuple[str | None, str]:
    """(interpreter, "") or (None, why not); probed once per process."""
    override = os.environ.get("TRICE_LIBNICE_PYTHON")
    candidates = [override] if override else [sys.executable, "/usr/bin/python3"]
    reasons = []
    for python in dict.fromkeys(candidates):  # (in order, without repeats)
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            reasons.append(f"{python}: not found")
            continue
        try:
            proc = subprocess.run(
                [python, "-c", _LIBNICE_PROBE], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{python}: {exc}")
            continue
        if proc.returncode == 0:
            return python, ""
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        reasons.append(f"{python}: {last}")
    return None, (
        "no Python here imports libnice through GObject introspection"
        f" (apt install python3-gi gir1.2-nice-0.1): {'; '.join(reasons)}"
    )


def libnice_python() -> str:
    """An interpreter that can run the libnice peer (the venv's cannot: its ``gi`` is the
    system's); raises :class:`PeerUnavailable`, with the reason, when there is none."""
    python, reason = _find_libnice_python()
    if python is None:
        raise PeerUnavailable(reason)
    return python


# --------------------------------------------------------------------------- commands


def _pion_base() -> list[str]:
    return [str(pion_binary())]


def _aioice_base() -> list[str]:
    return [sys.executable, str(AIOICE_PEER)]


def _trice_base() -> list[str]:
    return [sys.executable, str(TRICE_PEER)]


def _libnice_base() -> list[str]:
    return [libnice_python(), str(LIBNICE_PEER)]


#: Base command of each peer kind; role and options are appended by :func:`peer_command`.
#: Register more kinds by adding entries.  A kind that cannot run here raises
#: :class:`PeerUnavailable` (with the reason) from its entry: "pion" without Go or Pion's
#: sources, "libnice" without a Python whose ``gi`` has libnice (:func:`libnice_python`).
PEER_KINDS: dict[str, Callable[[], list[str]]] = {
    "pion": _pion_base,
    "aioice": _aioice_base,
    "libnice": _libnice_base,
    "trice": _trice_base,
}


#: The two roles of the trice side of an interop test, and their test ids.
ROLES = [True, False]
ROLE_IDS = ["trice-controlling", "trice-controlled"]


def all_exchanged(count: int) -> Message:
    """The ``exchanged`` message of a peer that sent and received ``count`` datagrams."""
    return {"type": "exchanged", "sent": count, "received": count}


def peer_command(
    kind: str,
    controlling: bool,
    *,
    ipv6: bool = False,
    lite: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of a ``kind`` peer (see :data:`PEER_KINDS`)."""
    try:
        base = PEER_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown peer kind {kind!r}; known: {sorted(PEER_KINDS)}") from None
    cmd = [*base(), "--controlling" if controlling else "--controlled"]
    if ipv6:
        cmd.append("--ipv6")
    if lite:
        cmd.append("--lite")
    cmd.extend(extra)
    return cmd


# --------------------------------------------------------------------------- one peer


_EOF: Message = {"type": "<eof>"}

#: Messages a peer sends as things happen, when asked to (``--report-states``,
#: ``--report-selected``): never part of a description.
_REPORTS = ("state", "selected")


class Peer:
    """One peer subprocess; use as a context manager (the process is killed on exit)."""

    def __init__(self, cmd: Sequence[str], *, name: str | None = None) -> None:
        self.cmd = list(cmd)
        self.name = name or Path(self.cmd[0]).name
        self._messages: queue.Queue[Message] = queue.Queue()
        self._stderr: list[str] = []
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._readers:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {"type": "error", "message": f"non-JSON output line: {line!r}"}
            self._messages.put(msg)
        self._messages.put(_EOF)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self._stderr[-lines:])

    def _fail(self, what: str) -> PeerError:
        return PeerError(
            f"{self.name}: {what}\n--- stderr of {self.name} ---\n{self.stderr_tail()}"
        )

    def send(self, msg: Message) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise self._fail(f"cannot send {msg['type']}: {exc}") from exc

    def recv(self, timeout: float) -> Message:
        """The next message; raises :class:`PeerError` on error, EOF or timeout."""
        try:
            msg = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise self._fail(f"no message within {timeout} s") from None
        if msg is _EOF:
            self._messages.put(_EOF)
            raise self._fail(f"exited (rc={self.proc.wait(5)}) without a message")
        if msg.get("type") == "error":
            raise self._fail(f"reported error: {msg.get('message')}")
        return msg

    def expect(self, kind: str, timeout: float) -> Message:
        """The next message, which must be of type ``kind``."""
        msg = self.recv(timeout)
        if msg.get("type") != kind:
            raise self._fail(f"expected {kind!r}, got {msg!r}")
        return msg

    def local_description(self, timeout: float = 10.0) -> list[Message]:
        """Parameters, candidates and end-of-candidates, as printed after startup."""
        deadline = time.monotonic() + timeout
        while (first := self.recv(max(0.0, deadline - time.monotonic())))["type"] in _REPORTS:
            pass  # (see below)
        if first["type"] != "parameters":
            raise self._fail(f"expected 'parameters', got {first!r}")
        msgs = [first]
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg.get("type") in ("connected", *_REPORTS):
                # (Pion, restarted, may say connected again over the pair of before, between
                # its new parameters and candidates: seen in 1 restart of 30 or so.  Not
                # this description's; the connection to come is said after it.  Nor are the
                # reports of --report-states and --report-selected, which come as they go.)
                continue
            if msg.get("type") not in ("candidate", "end-of-candidates"):
                raise self._fail(f"expected a candidate, got {msg!r}")
            msgs.append(msg)
            if msg["type"] == "end-of-candidates":
                return msgs

    def close(self, timeout: float = 3.0) -> int | None:
        """Ask the peer to exit, then kill it if it does not; returns its exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"type": "close"}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            for thread in self._readers:
                thread.join(5)
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


# --------------------------------------------------------------------------- two peers


@dataclasses.dataclass
class Connected:
    """Both sides' ``connected`` messages."""

    a: Message
    b: Message
    #: What each side described itself with (parameters, candidates, end-of-candidates).
    descriptions: tuple[list[Message], list[Message]] = ([], [])

    @property
    def elapsed_ms(self) -> float:
        """Time until both sides are connected (the max of the two)."""
        return max(float(self.a["elapsed_ms"]), float(self.b["elapsed_ms"]))

    @property
    def whole_ms(self) -> float | None:
        """Time from the first of the two starts until both are connected, on the machine's
        clock (``started_ns`` and ``connected_ns``), or ``None`` if a peer did not say.

        Each peer's :attr:`elapsed_ms` leaves out what came before its own start: a trice
        or aioice peer that read ``start`` late may find itself connected already (it
        answers the other's checks, and checks back, before it is told to start), and its
        late wake-up was in no figure, where a late Pion's, which leaves checks unread
        until it starts, was in its own.  This counts the late start whoever the peer is."""
        try:
            started = min(int(self.a["started_ns"]), int(self.b["started_ns"]))
            connected = max(int(self.a["connected_ns"]), int(self.b["connected_ns"]))
        except (KeyError, TypeError, ValueError):
            return None
        return (connected - started) / 1e6

    @property
    def span_ms(self) -> float | None:
        """Time from the later of the two starts until both are connected, on the machine's
        clock (``started_ns`` and ``connected_ns``), or ``None`` if a peer did not say.

        :attr:`elapsed_ms` also counts the skew between the two starts: the peer that reads
        ``start`` first waits for the other, so each peer program's own time to wake up and
        read its pipe ends up in the other's figure.  This leaves that skew out."""
        try:
            started = max(int(self.a["started_ns"]), int(self.b["started_ns"]))
            connected = max(int(self.a["connected_ns"]), int(self.b["connected_ns"]))
        except (KeyError, TypeError, ValueError):
            return None
        return (connected - started) / 1e6


def connect_pair(a: Peer, b: Peer, timeout: float = 20.0, *, b_first: bool = False) -> Connected:
    """Exchange the peers' descriptions, send ``start`` to both, wait until both connect.

    Both peers hold each other's parameters and all candidates (end-of-candidates included)
    before ``start``: each has answered a ``sync`` sent behind them, so ``elapsed_ms``
    measures connectivity checks only, not a peer still taking the other's description in
    (until 2026-11-29 ``start`` followed the descriptions at once, and a peer slow to take
    them in, trice's or aioice's Python, was timed doing so while the other had started).

    ``start`` goes to ``a`` first, or with ``b_first`` to ``b`` first: the peer that gets it
    first also waits for the other to wake and read its own, and times that wait.  The
    benchmarks alternate the order from one run to the next, so that the skew falls on
    either side alike.
    """
    descriptions = _swap_descriptions(a, b, timeout)
    a.send({"type": "sync"})
    b.send({"type": "sync"})
    a.expect("synced", timeout)
    b.expect("synced", timeout)
    for peer in (b, a) if b_first else (a, b):
        peer.send({"type": "start"})
    return Connected(a.expect("connected", timeout), b.expect("connected", timeout), descriptions)


def _swap_descriptions(a: Peer, b: Peer, timeout: float) -> tuple[list[Message], list[Message]]:
    """Read each peer's description (parameters, candidates, end-of-candidates), hand it
    to the other, and return both."""
    desc_a = a.local_description(timeout)
    desc_b = b.local_description(timeout)
    for msg in desc_b:
        a.send(msg)
    for msg in desc_a:
        b.send(msg)
    return desc_a, desc_b


def candidate_fields(line: str) -> tuple[str, int, str]:
    """(address, port, type) of a candidate line, as ``trice.Candidate.from_sdp`` reads
    it (a ``.local`` name is an address too)."""
    candidate = trice.Candidate.from_sdp(line)
    return candidate.address, candidate.port, candidate.type.value


def restart_pair(a: Peer, b: Peer, timeout: float = 20.0, *, b_first: bool = False) -> Connected:
    """ICE restart on both peers: each restarts and describes itself anew, takes the
    other's new description, and both connect again (``elapsed_ms``: from each one's
    restart).  ``a`` is told first, or ``b`` if ``b_first``."""
    for peer in (b, a) if b_first else (a, b):
        peer.send({"type": "restart"})
    _swap_descriptions(a, b, timeout)
    return Connected(a.expect("connected", timeout), b.expect("connected", timeout))


def exchange(a: Peer, b: Peer, count: int, timeout: float = 20.0) -> tuple[Message, Message]:
    """One data round: both peers send ``count`` datagrams; returns their ``exchanged``."""
    a.send({"type": "exchange", "count": count})
    b.send({"type": "exchange", "count": count})
    return a.expect("exchanged", timeout), b.expect("exchanged", timeout)


def _describe(cmd: Sequence[str]) -> str:
    # "aioice_peer.py --controlling" rather than the interpreter's path.
    args = list(cmd)
    if len(args) > 1 and args[1].endswith(".py"):
        args = args[1:]
    return " ".join([Path(args[0]).name, *args[1:]])


@contextlib.contextmanager
def peer_pair(cmd_a: Sequence[str], cmd_b: Sequence[str]) -> Iterator[tuple[Peer, Peer]]:
    """Start two peers; both are closed (and killed if need be) on exit."""
    with (
        Peer(cmd_a, name=f"A[{_describe(cmd_a)}]") as a,
        Peer(cmd_b, name=f"B[{_describe(cmd_b)}]") as b,
    ):
        yield a, b
