"""Drive Chromium's ICE agent (libwebrtc) against trice, on loopback, in a namespace of its own.

:func:`open_chromium` makes a network namespace with only ``lo`` (``natlab.lone_namespace``),
switches the calling thread into it with ``setns`` (so the trice agent the test opens there,
and the page server, bind their sockets in it), serves a page on 127.0.0.1, and starts a
headless Chromium on that page, in the namespace, with a fresh profile.  The page runs the
JavaScript the test sends it (a long poll, ``GET /poll``) and reports what happens on its
``RTCPeerConnection`` (``POST /report``): candidates, ICE states, the selected pair, and the
result of each piece of code.  On exit Chromium is stopped by its pid and process group,
the thread goes back to its own namespace, and the namespace is deleted (with anything
still running in it: only what this test started).

trice speaks ICE only: the SDP built around its ufrag and pwd (:func:`description`) carries
a fake DTLS fingerprint, so DTLS fails after ICE connects, as expected; ICE's states are
what the tests look at.  :class:`Session` does the offer/answer in either direction, trickles
candidates both ways (end-of-candidates too) and restarts ICE from either side.

Needs Linux, root, iproute2 and Chromium (Debian's ``/usr/lib/chromium/chromium``, or
``$TRICE_CHROMIUM``); :func:`chromium_unavailable` says what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import trio

import trice

from natlab import LabError, Namespace, entered, lone_namespace

#: The Chromium binary itself (not Debian's ``/usr/bin/chromium`` wrapper script).
CHROMIUM = Path(os.environ.get("TRICE_CHROMIUM", "/usr/lib/chromium/chromium"))

#: Chromium's ICE connection states that mean connected.
CHROMIUM_UP = ("connected", "completed")

Report = dict[str, Any]

# Gather on loopback (127.0.0.1 is all there is in the namespace): allowed, and with the
# (fake) microphone granted, Chromium gathers every interface's address as it is (no mDNS).
SWITCHES = (
    "--headless=new",
    "--no-sandbox",  # (root)
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--enable-logging=stderr",
    "--v=0",
)

_PAGE = r"""<!doctype html><html><body><script>
let chain = Promise.resolve();  // (reports go one at a time, in order)
function post(m) {
  const body = JSON.stringify(m);
  chain = chain.then(() => fetch('/report', {method: 'POST', body})).catch(() => {});
  return chain;
}
window.pc = null;
// A new RTCPeerConnection (with the microphone: Chromium then gathers loopback as it is),
// its events reported.
window.newPc = async function () {
  window.stream = window.stream || await navigator.mediaDevices.getUserMedia({audio: true});
  pc = new RTCPeerConnection();
  pc.onicecandidate = e =>
    post({type: 'icecandidate', candidate: e.candidate ? e.candidate.toJSON() : null});
  pc.oniceconnectionstatechange = () =>
    post({type: 'iceconnectionstate', state: pc.iceConnectionState});
  pc.createDataChannel('d');
};
// The ICE transport's selected pair, reported as it changes (once the SCTP transport is).
window.watchPair = function () {
  const t = pc.sctp && pc.sctp.transport.iceTransport;
  if (!t || t.watched) return;
  t.watched = true;
  t.onselectedcandidatepairchange = () => {
    const p = t.getSelectedCandidatePair();
    post({type: 'selectedpair', local: p.local.toJSON(), remote: p.remote.toJSON()});
  };
};
// getStats' selected candidate pair (with its two candidates and the transport), or null.
window.selectedPair = async function () {
  const byId = {};
  let transport = null;
  (await pc.getStats()).forEach(r => {
    byId[r.id] = r;
    if (r.type === 'transport') transport = r;
  });
  if (!transport || !transport.selectedCandidatePairId) return null;
  const pair = byId[transport.selectedCandidatePairId];
  return {pair, transport, local: byId[pair.localCandidateId],
          remote: byId[pair.remoteCandidateId]};
};
async function loop() {
  const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
  while (true) {
    let msgs;
    try { msgs = await (await fetch('/poll')).json(); }
    catch (e) { await new Promise(r => setTimeout(r, 100)); continue; }
    for (const m of msgs) {
      try {
        const value = await (new AsyncFunction(m.code))();
        post({type: 'result', id: m.id, value: value === undefined ? null : value});
      } catch (e) { post({type: 'result', id: m.id, error: String(e && e.stack || e)}); }
    }
  }
}
post({type: 'hello', ua: navigator.userAgent}).then(loop);
</script></body></html>"""


# --------------------------------------------------------------------------- availability


@functools.cache
def chromium_unavailable() -> str | None:
    """None if these tests can run here, else what is missing (for ``pytest.skip``)."""
    if not sys.platform.startswith("linux"):
        return "Chromium interop needs Linux network namespaces"
    if os.geteuid() != 0:
        return "Chromium interop needs root (a network namespace of its own, entered by setns)"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"Chromium is not installed ({CHROMIUM} is missing: apt install chromium, "
            "or point TRICE_CHROMIUM at its binary)"
        )
    if shutil.which("ip") is None:
        return "Chromium interop needs iproute2 (`ip`) on PATH"
    try:
        with lone_namespace("chromium-check") as ns, entered(ns):
            pass
    except (LabError, OSError) as exc:
        return f"cannot make and enter a network namespace: {exc}"
    return None


# --------------------------------------------------------------------------- namespace

# --------------------------------------------------------------------------- the page


class Page:
    """The page's side, seen from the test: :meth:`run` evaluates JavaScript there (an async
    function body: ``return`` gives the value back), :attr:`reports` is what it reported, in
    order, and :meth:`wait_for` waits for a report."""

    def __init__(self, log: Path) -> None:
        #: Everything the page reported, in order (each with ``type``, and ``at``: seconds
        #: since the page server started).
        self.reports: list[Report] = []
        self.log = log
        self._outbox: list[Report] = []
        self._ready = threading.Condition()
        self._closed = False
        self._changed = trio.Event()
        self._ids = itertools.count()
        self._token = trio.lowlevel.current_trio_token()
        self._t0 = time.monotonic()

    # (the HTTP server's threads)

    def _take_code(self, wait: float) -> list[Report]:
        with self._ready:
            self._ready.wait_for(lambda: self._outbox or self._closed, wait)
            out, self._outbox = self._outbox, []
            return out

    def _report(self, report: Report) -> None:
        report["at"] = round(time.monotonic() - self._t0, 3)
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._arrived, report, trio_token=self._token)

    def _close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    # (trio)

    def _arrived(self, report: Report) -> None:
        self.reports.append(report)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(
        self, predicate: Callable[[Report], bool], *, after: int = 0, within: float = 10.0
    ) -> tuple[int, Report]:
        """The first report from index ``after`` on that ``predicate`` takes, and its index;
        waits (``within`` seconds at most, then ``trio.TooSlowError``) for it to come."""
        with trio.fail_after(within):
            index = after
            while True:
                while index < len(self.reports):
                    if predicate(self.reports[index]):
                        return index, self.reports[index]
                    index += 1
                await self._changed.wait()

    async def run(self, code: str, within: float = 10.0) -> Any:
        """Run ``code`` (the body of an async function) in the page, and return what it
        returns (JSON); raises AssertionError with the page's stack if it throws."""
        id_ = next(self._ids)
        after = len(self.reports)
        with self._ready:
            self._outbox.append({"id": id_, "code": code})
            self._ready.notify_all()
        _, result = await self.wait_for(
            lambda r: r["type"] == "result" and r["id"] == id_, after=after, within=within
        )
        if "error" in result:
            raise AssertionError(f"the page threw: {result['error']}")
        return result["value"]

    def ice_states(self) -> list[str]:
        """Chromium's ``iceConnectionState`` changes so far."""
        return [r["state"] for r in self.reports if r["type"] == "iceconnectionstate"]

    async def wait_ice_connected(self, *, after: int = 0, within: float = 10.0) -> None:
        """Wait for Chromium's ``iceConnectionState`` to be reported connected (or completed)
        from report ``after`` on."""
        await self.wait_for(
            lambda r: r["type"] == "iceconnectionstate" and r["state"] in CHROMIUM_UP,
            after=after,
            within=within,
        )

    async def selected_pair(self) -> Report | None:
        """getStats' selected candidate pair: ``{"pair", "transport", "local", "remote"}``
        (the RTCStats of each), or None when there is none."""
        value: Report | None = await self.run("return await selectedPair();")
        return value

    async def ice_role(self) -> str | None:
        """Chromium's ICE role now, ``controlling`` or ``controlled`` (getStats' transport:
        Chromium's ``RTCIceTransport.role`` says null)."""
        role: str | None = await self.run(
            "let role = null; (await pc.getStats()).forEach(r => {"
            " if (r.type === 'transport') role = r.iceRole; }); return role;"
        )
        return role

    def log_tail(self, lines: int = 30) -> str:
        """The end of Chromium's own log (its stderr)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _handler(page: Page) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/poll":  # (a long poll: code to run, or [] after 5 s)
                self._send(json.dumps(page._take_code(5.0)).encode(), "application/json")
            else:
                self._send(_PAGE.encode(), "text/html")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            page._report(json.loads(self.rfile.read(length)))
            self._send(b"{}", "application/json")

    return Handler


@contextlib.contextmanager
def _page_server(page: Page) -> Iterator[int]:
    """The page's HTTP server on 127.0.0.1 (of the namespace the thread is in): its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(page))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="chromium-page", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        page._close()  # (a long poll waiting returns at once)
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- Chromium


def _exited(pid: int) -> bool:
    """Whether ``pid`` (our child) has exited, leaving it unreaped (its process group, and
    so its pid, stay ours until then)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _stop(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """Stop Chromium (started as a process group leader): SIGTERM to its group, SIGKILL to
    the group after ``grace`` seconds or once it has exited (what it started and left),
    then reap it.  (Its crash handlers make sessions of their own: the namespace's
    teardown kills them, as anything else left in it.)"""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not _exited(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # (teardown, not a wait for a state under test)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def _chromium(ns: Namespace, url: str, tmp: Path, switches: Sequence[str]) -> Iterator[int]:
    """Chromium started in ``ns`` on ``url`` (profile and log in ``tmp``): its pid; stopped
    (:func:`_stop`) on exit."""
    argv = [str(CHROMIUM), *SWITCHES, *switches, f"--user-data-dir={tmp / 'profile'}", url]
    # (a home of its own too: its crash handler's database goes under ~/.config otherwise)
    home = {"HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "config")}
    env = {**os.environ, **home, "XDG_CACHE_HOME": str(tmp / "cache")}
    with open(tmp / "chromium.log", "wb") as log:
        # (ip netns exec execs Chromium: the pid is Chromium's, and leads a new group.)
        proc = subprocess.Popen(
            ns.argv(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            yield proc.pid
        finally:
            _stop(proc)


@contextlib.asynccontextmanager
async def open_chromium(*switches: str, within: float = 30.0) -> AsyncIterator[Page]:
    """A namespace of its own with only ``lo``, entered by this thread; the page server on
    its 127.0.0.1; a headless Chromium (``SWITCHES`` and ``switches``) with a fresh profile
    on the page, until the page says hello (``within`` seconds).  Everything is undone on
    exit, whatever happens: Chromium stopped by pid and process group, the server closed,
    the thread back in its namespace, the namespace deleted, the profile removed.

    Open the trice agent inside the block (its sockets are then made in the namespace) and
    close it there too."""
    with (
        tempfile.TemporaryDirectory(prefix="trice-chromium-") as tmp,
        lone_namespace("chromium") as ns,
        entered(ns),
    ):
        page = Page(Path(tmp) / "chromium.log")
        with (
            _page_server(page) as port,
            _chromium(ns, f"http://127.0.0.1:{port}/", Path(tmp), switches) as pid,
        ):
            try:
                await page.wait_for(lambda r: r["type"] == "hello", within=within)
            except trio.TooSlowError:
                raise AssertionError(
                    f"Chromium (pid {pid}) did not load its page within {within} s:\n"
                    f"{page.log_tail()}"
                ) from None
            yield page


# --------------------------------------------------------------------------- SDP

#: A well-formed SHA-256 fingerprint that matches no certificate (DTLS fails; ICE is done).
FAKE_FINGERPRINT = ":".join(["AB"] * 32)


def description(
    params: trice.IceParameters,
    setup: str,
    candidates: Sequence[trice.Candidate] = (),
    *,
    end: bool = False,
) -> str:
    """An SDP offer or answer (``setup``: ``actpass`` for an offer, ``active`` or ``passive``
    for an answer) of one data channel m-line around trice's ICE parameters, with
    ``candidates`` (and ``a=end-of-candidates`` if ``end``); trickle ICE."""
    lines = [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        *(["a=ice-lite"] if params.lite else []),
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        f"a=ice-ufrag:{params.ufrag}",
        f"a=ice-pwd:{params.pwd}",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {FAKE_FINGERPRINT}",
        f"a=setup:{setup}",
        "a=mid:0",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
        *(f"a={candidate.to_sdp()}" for candidate in candidates),
        *(["a=end-of-candidates"] if end else []),
    ]
    return "\r\n".join(lines) + "\r\n"


@dataclasses.dataclass(frozen=True)
class RemoteIce:
    """The ICE part of Chromium's SDP: its ufrag, pwd and candidate lines (``candidate:...``)."""

    ufrag: str
    pwd: str
    candidates: list[str]

    @classmethod
    def of(cls, sdp: str) -> RemoteIce:
        ufrag = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.MULTILINE)
        pwd = re.search(r"^a=ice-pwd:(\S+)", sdp, re.MULTILINE)
        assert ufrag and pwd, f"no ICE parameters in Chromium's SDP:\n{sdp}"
        lines = re.findall(r"^a=(candidate:[^\r\n]+)", sdp, re.MULTILINE)
        return cls(ufrag.group(1), pwd.group(1), lines)


def _js(value: object) -> str:
    return json.dumps(value)


# --------------------------------------------------------------------------- a session


class Session:
    """A trice agent and the page's RTCPeerConnection, negotiated with each other.

    Made by :func:`open_session`, which also forwards Chromium's trickled candidates to
    the agent as they come (:attr:`chromium_lines` keeps every candidate line Chromium
    gave, in the SDP or trickled)."""

    def __init__(self, page: Page, agent: trice.Agent, nursery: trio.Nursery) -> None:
        self.page = page
        self.agent = agent
        self.chromium_lines: list[str] = []
        self.chromium_ice: RemoteIce | None = None
        self._chromium_ufrag: str | None = None  # (of the last candidate Chromium trickled)
        self._setup = "active"  # (trice's DTLS role in its answers: it stays, restarts too)
        self._gathered = trio.Event()  # (Chromium said it is done gathering: a null candidate)
        self._nursery = nursery

    def _take(self, ice: RemoteIce) -> None:
        self.chromium_ice = ice
        self.agent.set_remote_parameters(ice.ufrag, ice.pwd)
        for line in ice.candidates:
            self.chromium_lines.append(line)
            self.agent.add_remote_candidate(trice.Candidate.from_sdp(line))

    async def _chromium_offers(self, restart: bool) -> None:
        sdp = await self.page.run(
            ("pc.restartIce();" if restart else "")
            + " const o = await pc.createOffer(); await pc.setLocalDescription(o);"
            " return pc.localDescription.sdp;"
        )
        ice = RemoteIce.of(sdp)
        if restart:
            self.agent.restart()
        self._take(ice)
        answer = description(self.agent.local_parameters, self._setup)
        await self.page.run(
            f"await pc.setRemoteDescription({{type: 'answer', sdp: {_js(answer)}}}); watchPair();"
        )

    async def _trice_offers(self, restart: bool) -> None:
        if restart:
            self.agent.restart()
        offer = description(self.agent.local_parameters, "actpass")
        sdp = await self.page.run(
            f"await pc.setRemoteDescription({{type: 'offer', sdp: {_js(offer)}}}); watchPair();"
            " const a = await pc.createAnswer(); await pc.setLocalDescription(a);"
            " return pc.localDescription.sdp;"
        )
        self._take(RemoteIce.of(sdp))
        if not restart:  # (the DTLS roles are set now: Chromium's is not trice's)
            self._setup = "passive" if "\r\na=setup:active" in sdp else "active"

    async def negotiate(self, *, chromium_offers: bool) -> None:
        """The first offer/answer (Chromium's or trice's offer), then trice's candidates
        trickled to Chromium (end-of-candidates too) in a task of the session's."""
        await self.page.run("await newPc();")
        await (self._chromium_offers if chromium_offers else self._trice_offers)(False)
        self._nursery.start_soon(self._trickle_to_chromium)

    async def restart(self, *, by_chromium: bool) -> None:
        """An ICE restart offered by Chromium (``restartIce()``) or by trice (``restart()``,
        the same candidates signalled anew); each side keeps its role.  Returns once both
        have the other's new parameters; the checks go on."""
        self._gathered = trio.Event()
        await (self._chromium_offers if by_chromium else self._trice_offers)(True)
        self._nursery.start_soon(self._trickle_to_chromium)

    async def wait_chromium_gathered(self) -> None:
        """Wait until Chromium has said it is done gathering (since the last restart): every
        candidate line it gave by then is in :attr:`chromium_lines`."""
        await self._gathered.wait()

    async def _trickle_to_chromium(self) -> None:
        await self.agent.wait_gathering_complete()
        ufrag = self.agent.local_parameters.ufrag
        for candidate in self.agent.local_candidates:
            init = candidate.to_json(sdp_mid="0", sdp_mline_index=0, username_fragment=ufrag)
            await self.page.run(f"await pc.addIceCandidate({_js(init)});")
        end = trice.end_of_candidates_json("0", 0, ufrag)
        await self.page.run(f"await pc.addIceCandidate({_js(end)});")

    async def _forward_from_chromium(self) -> None:
        """Chromium's trickled candidates, and its end-of-candidates, to the agent."""
        index = 0
        while True:
            index, report = await self.page.wait_for(
                lambda r: r["type"] == "icecandidate", after=index, within=math.inf
            )
            index += 1
            init = report["candidate"]
            # (null: Chromium is done gathering, for the generation it trickled last)
            candidate = None if init is None else trice.Candidate.from_json(init)
            if candidate is None:
                ufrag = (init or {}).get("usernameFragment") or self._chromium_ufrag
                self.agent.add_remote_candidate(None, username_fragment=ufrag)
                if init is None:
                    self._gathered.set()
            else:
                self.chromium_lines.append(init["candidate"])
                self._chromium_ufrag = candidate.username_fragment or self._chromium_ufrag
                self.agent.add_remote_candidate(candidate)


@contextlib.asynccontextmanager
async def open_session(page: Page, agent: trice.Agent) -> AsyncIterator[Session]:
    """A :class:`Session` of ``page`` and ``agent``, its tasks (forwarding, trickling)
    running for the block and cancelled after it."""
    async with trio.open_nursery() as nursery:
        session = Session(page, agent, nursery)
        nursery.start_soon(session._forward_from_chromium)
        yield session
        nursery.cancel_scope.cancel()
