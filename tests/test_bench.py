"""The benchmarks' own arithmetic (``bench/``): what they report when datagrams go missing,
and which runs a row is made of.  Nothing here measures: each test is a fraction of a
second (the benchmarks run with ``nox -s bench``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import trice

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _peers  # noqa: E402
import data_plane  # noqa: E402
import mux  # noqa: E402
import tcp  # noqa: E402

FLOOR = "floor (raw trio sockets)"


def _lossy_fill(
    lost: int,
) -> tuple[Callable[[bytes], None], trio.MemoryReceiveChannel[bytes]]:
    """A ``fill`` that queues datagrams on a memory channel but its ``lost``-th, and the
    channel's receiving end."""
    send, receive = trio.open_memory_channel[bytes](100_000)
    filled = 0

    def fill(data: bytes) -> None:
        nonlocal filled
        filled += 1
        if filled != lost:
            send.send_nowait(data)

    return fill, receive


async def test_drain_rate_is_timed_to_the_last_datagram_and_counts_the_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One datagram of the burst lost: the rate is over the time the drain took to the last
    datagram received (it was the burst over the drain's time limit), and the drain says
    how many came."""
    monkeypatch.setattr(data_plane, "DRAIN_LIMIT", 0.3, raising=False)
    fill, channel = _lossy_fill(50)
    last = 0.0

    async def take() -> bytes:
        nonlocal last
        data = await channel.receive()
        last = time.perf_counter()
        return data

    start = time.perf_counter()
    rate, got = await data_plane._drain_rate(fill, take, 1000)
    assert got == 999
    assert rate > 999 / (last - start) / 2, (rate, 999 / (last - start))


def test_aioices_drain_is_timed_to_the_last_datagram_and_counts_the_lost() -> None:
    """The same for aioice's drain (asyncio)."""
    times: list[float] = []

    async def main() -> tuple[float, int]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        filled = 0

        def fill(data: bytes) -> None:
            nonlocal filled
            filled += 1
            if filled != 50:
                queue.put_nowait(data)

        async def take() -> bytes:
            data = await queue.get()
            times.append(time.perf_counter())
            return data

        times.append(time.perf_counter())
        return await data_plane._aioice_drain(fill, take, 1000, 0.3)

    rate, got = asyncio.run(main())
    assert got == 999
    assert rate > 999 / (times[-1] - times[0]) / 2, (rate, times[-1] - times[0])


async def test_floor_and_trice_report_the_loss_of_a_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel buffer that cannot hold the burst (not root: ``SO_RCVBUFFORCE`` refused):
    the drains lose datagrams, and the rows say so (``drained``), with receive rates of the
    datagrams that came, not of those over the drain's time limit (``delivered`` still
    said 100 % and the rates were some 40 datagrams a second: "100 % of the floor")."""

    def small(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)

    monkeypatch.setattr(data_plane, "_big_buffer", small)
    monkeypatch.setattr(data_plane, "BURST", 400)
    monkeypatch.setattr(data_plane, "DRAIN_LIMIT", 0.3, raising=False)
    floor, trice_row = await data_plane._floor_and_trice(40, 4, 1)
    assert 0 < floor.drained < 1 and 0 < trice_row.drained < 1, (floor, trice_row)
    assert 0 < trice_row.batched_drained < 1, trice_row
    # A drain of what the kernel queued runs at tens of thousands a second.
    for rate in (floor.receive_pps, trice_row.receive_pps, trice_row.batched_pps):
        assert rate > 2000, (floor, trice_row)


def _table(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rows: list[data_plane.Result],
    aioice: list[data_plane.Result],
) -> dict[str, list[str]]:
    """``data_plane.main``'s table for these floor and trice rows and aioice repeats (two):
    its rows' cells by path, and its lines under ``"lines"``."""

    async def floor_and_trice(count: int, pings: int, rounds: int) -> list[data_plane.Result]:
        return rows

    repeats = iter(aioice)

    def in_process(
        count: int, pings: int, seed: int, tuned: bool = False
    ) -> data_plane.Result | None:
        return None if tuned else next(repeats)

    monkeypatch.setattr(data_plane, "_floor_and_trice", floor_and_trice)
    monkeypatch.setattr(data_plane, "_aioice_in_process", in_process)
    data_plane.main(["--repeat", str(len(aioice))])
    lines = capsys.readouterr().out.splitlines()
    cells = {}
    for name in (FLOOR, "trice", "aioice"):
        (line,) = [line for line in lines if line.startswith(name + "  ")]
        cells[name] = line[len(name) :].split()
    cells["lines"] = lines
    return cells


def test_the_table_says_what_a_drain_lost(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = data_plane.Result("x", 100_000.0, 1.0, 30_000.0, 100_000.0, 300_000.0)
    floor = dataclasses.replace(result, name=FLOOR)
    trice_row = dataclasses.replace(result, name="trice", drained=0.5)
    aioice = data_plane.Result("aioice", 90_000.0, 1.0, 10_000.0, 40_000.0)
    table = _table(monkeypatch, capsys, [floor, trice_row], [aioice])
    header = next(line for line in table["lines"] if line.startswith("path "))
    assert "receive pkt/s  drained" in header
    assert table[FLOOR][4] == "100%" and table["trice"][4] == "50.00%"
    assert any("DATAGRAMS LOST in the receive drains" in line for line in table["lines"])


def test_the_aioice_row_is_one_whole_repeat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The best repeat (its receive rate) is the row, every column of it: not each column's
    best over the repeats, a row no repeat measured."""
    result = data_plane.Result("x", 100_000.0, 1.0, 30_000.0, 100_000.0, 100_000.0)
    rows = [dataclasses.replace(result, name=FLOOR), dataclasses.replace(result, name="trice")]
    repeats = [
        data_plane.Result("aioice", 90_000.0, 1.0, 10_000.0, 40_000.0),
        data_plane.Result("aioice", 40_000.0, 0.99, 30_000.0, 110_000.0),
    ]
    cells = _table(monkeypatch, capsys, rows, repeats)["aioice"]
    assert cells[:4] == ["40,000", "99.00%", "30,000", "110,000"], cells


def test_the_floor_trice_and_aioice_drain_the_same_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receive rates compared (``recv vs aioice``) are of bursts of one size: the floor
    and trice drained ``BURST // 2`` datagrams, aioice ``BURST``."""
    bursts: list[tuple[str, int]] = []

    async def trio_drain(
        fill: object, receive: object, burst: int, limit: float | None = None
    ) -> tuple[float, int]:
        bursts.append(("trio", burst))
        return 1.0, burst

    async def asyncio_drain(
        fill: object, receive: object, burst: int, limit: float | None = None
    ) -> tuple[float, int]:
        bursts.append(("aioice", burst))
        return 1.0, burst

    aioice_ice = pytest.importorskip("aioice.ice")

    # (``_aioice`` puts its own in; this puts the original back after the test.)
    monkeypatch.setattr(aioice_ice, "get_host_addresses", aioice_ice.get_host_addresses)
    monkeypatch.setattr(data_plane, "_drain_rate", trio_drain)
    monkeypatch.setattr(data_plane, "_aioice_drain", asyncio_drain, raising=False)
    trio.run(data_plane._floor_and_trice, 20, 2, 1)
    result = data_plane._aioice(20, 2)
    assert result is not None
    assert [b for kind, b in bursts if kind == "trio"] == [data_plane.BURST] * 3
    assert [b for kind, b in bursts if kind == "aioice"] == [data_plane.BURST]


class _Ends:
    """Two ends of a datagram path over memory channels; the sender's ``lost``-th datagram
    is lost on the way.  ``a`` sends to ``b`` and ``b`` to ``a``."""

    def __init__(self, lost: int) -> None:
        self.to_b = trio.open_memory_channel[bytes](100_000)
        self.to_a = trio.open_memory_channel[bytes](100_000)
        self.lost = lost
        self.sent = 0
        self.last = 0.0
        ends = self

        class A:
            async def send(self, data: bytes) -> None:
                ends.sent += 1
                if ends.sent != ends.lost:
                    ends.to_b[0].send_nowait(data)
                await trio.lowlevel.checkpoint()

            async def receive(self) -> bytes:
                return await ends.to_a[1].receive()

        class B:
            async def send(self, data: bytes) -> None:
                ends.to_a[0].send_nowait(data)
                await trio.lowlevel.checkpoint()

            async def receive(self) -> bytes:
                data = await ends.to_b[1].receive()
                ends.last = time.perf_counter()
                return data

        self.a, self.b = A(), B()


async def test_one_way_is_timed_to_the_last_datagram_and_says_what_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``bench/_peers.py``'s one-way figure (``tcp.py``, ``mux.py``): one datagram of 2000
    lost, and the figure was the datagrams over the 20 s cap, with no loss said."""
    monkeypatch.setattr(_peers, "IDLE", 0.2, raising=False)
    ends = _Ends(lost=1000)
    start = time.perf_counter()
    with trio.fail_after(30):
        flow = await _peers.one_way_and_ping_pong(ends.a, ends.b, 2000, 5, 1200)  # type: ignore[arg-type]
    took = ends.last - start
    assert (flow.sent, flow.received) == (2000, 1999)
    assert flow.delivered == 1999 / 2000
    assert flow.one_way > 1999 / took / 2, (flow, 1999 / took)
    assert flow.pongs == 5 and flow.round_trips > 0


async def test_a_lost_ping_ends_the_ping_pong(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ping lost: the ping-pong had no time limit and waited for ever; now it ends, says
    how many round trips were done, and times those."""
    monkeypatch.setattr(_peers, "IDLE", 0.2, raising=False)
    ends = _Ends(lost=3)  # (the one datagram one way, then the first ping, then the second)
    with trio.fail_after(10):
        flow = await _peers.one_way_and_ping_pong(ends.a, ends.b, 1, 10, 1200)  # type: ignore[arg-type]
    assert (flow.received, flow.pongs) == (1, 1)
    assert flow.round_trips > 100  # (one round trip over memory channels, not over 0.2 s)


def _mux_table(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flow: Callable[[bool, int, int], _peers.Flow],
) -> str:
    """What ``mux.py --quick`` prints when each data run gives ``flow(on_mux, count,
    rounds)`` and connecting takes 10 ms."""

    async def data(on_mux: bool, count: int, rounds: int) -> _peers.Flow:
        return flow(on_mux, count, rounds)

    async def connect_many(on_mux: bool, n: int) -> float:
        return 10.0

    monkeypatch.setattr(mux, "_data", data)
    monkeypatch.setattr(mux, "_connect_many", connect_many)
    monkeypatch.setattr(sys, "argv", ["mux.py", "--quick"])
    mux.main()
    return capsys.readouterr().out


def test_tcp_and_mux_print_what_was_delivered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tcp.py`` and ``mux.py`` print the share of the datagrams delivered one way, and say
    so when a lost ping ended a ping-pong."""

    async def agents(tcp_: bool, connects: int, count: int, rounds: int) -> tuple[float, ...]:
        return 0.5, 60_000.0, 20_000.0, 0.75 if tcp_ else 1.0, 120 if tcp_ else rounds

    async def floor(count: int, rounds: int) -> tuple[float, ...]:
        return float("nan"), 60_000.0, 30_000.0, 1.0, rounds

    monkeypatch.setattr(tcp, "_agents", agents)
    monkeypatch.setattr(tcp, "_floor", floor)
    monkeypatch.setattr(sys, "argv", ["tcp.py", "--quick"])
    tcp.main()
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("TCP  ")]
    assert line.split()[1:] == ["0.50", "60,000", "75.00%", "20,000"]
    assert "TCP: a ping or pong lost, the ping-pong ended after 120 of 300 round trips" in out

    def flow(on_mux: bool, count: int, rounds: int) -> _peers.Flow:
        return _peers.Flow(50_000.0, count, count - on_mux, 20_000.0, rounds - on_mux)

    out = _mux_table(monkeypatch, capsys, flow)
    (line,) = [line for line in out.splitlines() if line.startswith("mux  ")]
    assert line.split()[1:] == ["50,000", "99.95%", "20,000", "10.0"]  # (1999 of 2000)
    assert "mux: DATAGRAMS LOST one way" in out
    assert "mux: a ping or pong lost, the ping-pong ended after 299 of 300 round trips" in out


_OPCODES = textwrap.dedent(
    """
    import contextlib, sys
    sys.path.insert(0, {bench!r})
    import trio
    import data_plane, opcodes

    opcodes.STALL = 0.3
    LOST = {lost}  # (the fill's datagram lost, 0: none)


    @contextlib.asynccontextmanager
    async def both_paths(receive_buffer):
        paths = []
        for name in ("floor (raw trio sockets)", "trice"):
            to_b = trio.open_memory_channel(100_000)
            to_a = trio.open_memory_channel(100_000)
            filled = 0

            def fill(data, to_b=to_b):
                global filled
                filled += 1
                if filled != LOST:
                    to_b[0].send_nowait(data)

            async def send(data, channel=to_b[0]):
                channel.send_nowait(data)
                await trio.lowlevel.checkpoint()

            async def send_back(data, channel=to_a[0]):
                channel.send_nowait(data)
                await trio.lowlevel.checkpoint()

            batched = to_b[1].receive if name == "trice" else None
            paths.append(
                data_plane._Paths(
                    name, send, to_a[1].receive, send_back, to_b[1].receive, fill, batched
                )
            )
        yield tuple(paths)

    filled = 0
    data_plane.both_paths = both_paths
    opcodes.main(["--count", "50"])
    """
)


@pytest.mark.parametrize("lost", [0, 7])
def test_opcodes_stops_with_an_error_when_a_datagram_is_lost(lost: int) -> None:
    """``bench/opcodes.py`` stops trio's clock while it counts: a drain that lost a datagram
    (a kernel buffer that could not be forced) waited for it for ever, its time limit
    never coming.  Now a run without progress is stopped, and the loss is an error; and
    a run that loses nothing prints its table."""
    script = _OPCODES.format(bench=str(BENCH), lost=lost)
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("bench/opcodes.py hung on a lost datagram") from None
    if not lost:
        assert out.returncode == 0, out.stderr
        assert "trice vs floor" in out.stdout
        return
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(
        "bench/opcodes.py: floor (raw trio sockets), receive: nothing came for 0.3 s"
    ), out.stderr


async def test_data_planes_ping_pong_stops_with_an_error_on_a_lost_ping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The third ping is lost: the ping-pong stops with Lost at its limit (main says so in
    one line, exit status 1), where it waited for the pong for good."""
    monkeypatch.setattr(data_plane, "PING_PONG_LIMIT", 0.5)
    to_b = trio.open_memory_channel[bytes](1000)
    to_a = trio.open_memory_channel[bytes](1000)
    sent = 0

    async def send_a(data: bytes) -> None:
        nonlocal sent
        sent += 1
        if sent != 3:
            to_b[0].send_nowait(data)
        await trio.lowlevel.checkpoint()

    async def send_b(data: bytes) -> None:
        to_a[0].send_nowait(data)
        await trio.lowlevel.checkpoint()

    with trio.fail_after(5), pytest.raises(data_plane.Lost, match="after 2 of 10"):
        await data_plane._ping_pong(send_a, to_a[1].receive, send_b, to_b[1].receive, 10)


def test_a_ping_pong_lost_whole_gives_no_ratio_but_n_a(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The own socket's ping-pong lost at its first ping (0 round trips): the ratio line
    says n/a (it raised ZeroDivisionError, and the run ended in a traceback)."""

    def flow(on_mux: bool, count: int, rounds: int) -> _peers.Flow:
        lost = not on_mux
        return _peers.Flow(50_000.0, count, count, 0.0 if lost else 20_000.0, 0 if lost else rounds)

    assert "one way 1.00x, ping-pong n/a," in _mux_table(monkeypatch, capsys, flow)


def test_an_exact_share_is_shown_exactly() -> None:
    """1,634 of 2,000 is 81.70 %, 43 of 1,000 4.30 % (floored in floating point they
    showed 81.69 % and 4.29 %); a loss is still never rounded up to 100 %."""
    assert _peers.share(1634, 2000) == "81.70%"
    assert _peers.share(43, 1000) == "4.30%"
    assert _peers.share(1634 / 2000, 1.0) == "81.70%"
    assert _peers.share(1999, 2000) == "99.95%"
    assert _peers.share(19999, 20000) == "99.99%"


@pytest.mark.parametrize("batch", ["0", "5"])
def test_scales_resident_run_prints_its_figures_at_once_and_in_batches(batch: str) -> None:
    """``bench/scale.py --rss-one KIND N BATCH`` (the resident-memory run, in a process of
    its own): 20 pairs, connecting all at once and 5 at a time, print their figures."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--rss-one", "trice", "20", batch],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-500:]
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("{")]
    figures = json.loads(line)
    assert set(figures) == {"kib", "objects", "free"} and figures["objects"] > 0


async def test_muxs_connect_figure_ends_when_all_are_connected_not_closed(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """``mux.py``'s "connect" runs until every agent is connected: the agents' closing after
    it (made to take 300 s here) is not in it (it was: the clock stopped when they had
    closed)."""
    real = mux._server_and_client

    @contextlib.asynccontextmanager
    async def slow_to_close(
        on: trice.UdpMux | None,
    ) -> AsyncIterator[tuple[trice.Connection, trice.Connection]]:
        async with real(on) as connections:
            yield connections
        await trio.sleep(300)

    monkeypatch.setattr(mux, "_server_and_client", slow_to_close)
    monkeypatch.setattr(time, "perf_counter", trio.current_time)  # (mux.py reads it so)
    assert await mux._connect_many(False, 3) < 100_000  # (ms: the 300 s left out)


def test_restart_times_rounds_turn_their_order_and_alternate_who_restarts_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``restart_time.py`` turns the order of its rows by one each round (as
    ``connect_time.py``), and alternates which peer is told to restart first (the later
    of the two times is the sample: the one told second carried its wait in every run)."""
    import restart_time

    runs: list[tuple[str, bool]] = []

    def measure_once(a: str, b: str, *, b_first: bool = False) -> float:
        runs.append((f"{a}-{b}", b_first))
        return 1.0

    monkeypatch.setattr(restart_time, "peer_command", lambda kind, controlling: [kind])
    monkeypatch.setattr(restart_time, "measure_once", measure_once)
    assert restart_time.main(["--runs", "2"]) == 0
    rows = len(restart_time.PAIRS)
    assert runs[0][0] != runs[rows][0]
    assert {b_first for _label, b_first in runs[:rows]} == {False}
    assert {b_first for _label, b_first in runs[rows:]} == {True}


def test_the_benches_import_trices_shell_before_any_clock() -> None:
    """``trice`` imports its trio shell on first use (some 150 ms): a bench that timed its
    first agents would count that as theirs (``scale.py`` did: 100 pairs took 2.5 times
    as long), and trace its memory as theirs.  Importing a bench imports the shell."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(BENCH)!r})
        import scale, mux, data_plane, tcp, turn_connect, connect_time
        print("trice._trio._agent" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr


def test_connect_time_counts_from_the_first_start_whoever_is_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """connect_time.py judges a run from the first of the two peers' starts until both are
    connected: a peer that read ``start`` 50 ms late, connected already (as a trice peer can
    be: it answers the other's checks before it starts), counts the 50 ms.  Each peer's own
    time (1 ms here) left a late trice peer's wake-up out, and a late Pion's in (the
    benchhonesty review)."""
    import connect_time

    from peers.harness import Connected

    base = 1_000_000_000
    a = {"elapsed_ms": 1.0, "started_ns": base, "connected_ns": base + 1_000_000}
    b = {"elapsed_ms": 0.01, "started_ns": base + 50_000_000, "connected_ns": base + 50_010_000}
    monkeypatch.setattr(connect_time, "measure_pair", lambda *_, **__: Connected(a, b))
    row = _peers.Row("trice-trice", ["a"], ["b"])
    results = connect_time.run([row], 1)
    assert results.rounds[0]["trice-trice"] == pytest.approx(50.01)


def test_a_crashed_aioice_child_is_said_not_dropped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """data_plane's aioice child that fails (its asyncio.run raises here) is an error naming
    the end of its output: it was taken for "aioice not installed", and its row left out
    without a word (the benchhonesty review)."""
    pytest.importorskip("aioice")
    (tmp_path / "sitecustomize.py").write_text(
        "import asyncio\n"
        "def _boom(*args, **kwargs):\n"
        "    raise RuntimeError('injected crash')\n"
        "asyncio.run = _boom\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"the aioice child failed.*injected crash"):
        data_plane._aioice_in_process(200, 20, seed=1)


_PHASES_GC_PROBE = r"""
import gc, json, sys, time
sys.path.insert(0, {bench!r})
import scale

full = []
window = [None, None]

def on_gc(phase, info):
    if phase == "start" and info["generation"] == 2:
        full.append(time.perf_counter())

gc.callbacks.append(on_gc)
original = scale._phase_clock

def phase_clock(n, spent):
    window[0] = time.perf_counter()
    inner = original(n, spent)
    def phase(name):
        inner(name)
        window[1] = time.perf_counter()
    return phase

scale._phase_clock = phase_clock
scale.main(["--phases-one", {kind!r}, "100"])
inside = [t for t in full if window[0] is not None and window[0] <= t <= window[1]]
print(json.dumps({{"inside": len(inside)}}))
"""


def _full_collections_in_phases(kind: str) -> int:
    code = _PHASES_GC_PROBE.format(bench=str(BENCH), kind=kind)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=BENCH.parent
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith('{"inside"')]
    return int(json.loads(lines[-1])["inside"])


def test_scale_phases_start_from_a_fresh_heap_for_trice_as_for_aioice() -> None:
    """``scale.py --phases`` charges no full garbage collection of what importing made to
    trice's phases alone: each kind's run starts from a fresh heap, as the timed runs do
    (aioice's setup ran one before its window; trice's fell inside, some 118 µs a pair of
    its "open" phase at 100 pairs: the p39pass7 review)."""
    pytest.importorskip("aioice")
    aioice = _full_collections_in_phases("aioice")
    trice_regular = _full_collections_in_phases("regular")
    assert trice_regular <= aioice, (
        f"--phases: {trice_regular} full collection(s) inside trice's phase window against "
        f"{aioice} inside aioice's (100 pairs): the process's first full collection, of "
        "what importing made, is charged to trice's CPU per pair alone"
    )


def test_lossy_connects_table_counts_a_failed_session_and_gives_no_ratio_for_it() -> None:
    """A session that never connected is a failure and an infinite time: the 90th
    percentile of a row with one in ten is infinite, and no ratio is made of it."""
    import lossy_connect

    pion = lossy_connect.Row("pion", "pion", [0.5] * 9 + [2.0])
    trice = lossy_connect.Row("trice", "pion", [0.4] * 8 + [6.0, float("inf")])
    table = lossy_connect.format_table([pion, trice], 10).splitlines()
    assert table[2].split()[:6] == ["pion-pion", "10", "0.50s", "2.00s", "0", "0"]
    row = ["trice-pion", "10", "0.40s", "never", "1", "1", "n/a", "pion-pion"]
    assert table[3].split()[:8] == row
    faster = lossy_connect.Row("trice", "pion", [0.4] * 9 + [1.0])
    assert "0.50x pion-pion" in lossy_connect.format_table([pion, faster], 10)
