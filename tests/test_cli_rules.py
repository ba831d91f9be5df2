"""Rules of what ``trice demo`` and ``trice gather`` print (trice/_cli.py) that test_cli did
not pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through): a selected pair over TCP says so, ``done`` with sockets but no tasks left, the
branches of the task tree, a ``gather --watch`` table's headers after an address change and
a source's ``ok``, the throughput in megabits, the size limit of a datagram, and which round
trips the demo shows (the selected pair's, and the median of the pings).  The demo runs its
two agents on loopback."""

from __future__ import annotations

import statistics
import types
from typing import Any

import pytest

import trice
from trice import _cli

# -- what a record renders as -----------------------------------------------------------------


def test_a_pair_over_tcp_says_so() -> None:
    """A selected pair whose protocol is TCP ends ``(over TCP)``; one over UDP does not.
    (Kills ``record.get("protocol") == "tcp"`` -> ``False``.)"""
    record = {
        "event": "selected",
        "agent": "a",
        "local": "host 127.0.0.1:5000",
        "remote": "host 127.0.0.1:5001",
        "protocol": "tcp",
    }
    assert _cli._render(record) == (
        "[a] selected  host 127.0.0.1:5000  ->  host 127.0.0.1:5001 (over TCP)"
    )
    assert _cli._render({**record, "protocol": "udp"}).endswith("127.0.0.1:5001")


def test_sockets_left_open_without_tasks_are_said() -> None:
    """``done`` with sockets open but no task left says so (not "every socket ... is
    gone"), and names no tasks as ``none``.  (Kills ``record["open_sockets"] or `` -> ````
    in the test of what is left, and `` or 'none'`` -> ```` in the list of tasks.)"""
    record = {"event": "done", "open_sockets": 1, "tasks_left": []}
    assert _cli._render(record) == (
        "done: both agents closed, but 1 sockets are open and these tasks left: none"
    )


def test_the_task_tree_draws_its_branches_under_the_right_stems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a task that is not its parent's last, its children hang below a stem; under
    the last one, below blank space.  (Kills ``("    " if last else stem)`` -> ``(stem if
    last else "    ")``.)"""
    monkeypatch.setattr(_cli, "_prints", lambda text: True)
    tree: dict[str, Any] = {
        "name": "root",
        "children": [
            {"name": "a", "children": [{"name": "a1", "children": []}]},
            {"name": "b", "children": [{"name": "b1", "children": []}]},
        ],
    }
    assert _cli._tree_lines(tree) == [
        "└── root",
        "    ├── a",
        "    │   └── a1",
        "    └── b",
        "        └── b1",
    ]


# -- trice gather --watch ---------------------------------------------------------------------


def test_a_gather_table_after_an_address_change_prints_its_headers_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``trice gather --watch``: after "addresses now", the candidates and sources that
    follow come under their headers again; a source without error reads ``ok``.  (Kills
    ``header["candidate"] = header["source"] = False`` -> ``pass``, and ``record["error"]
    or "ok"`` -> ``record["error"] or ""``.)"""
    emit = _cli._gather_table()
    candidate = {
        "event": "candidate",
        "type": "host",
        "protocol": "udp",
        "tcp_type": None,
        "address": "127.0.0.1",
        "port": 5000,
        "related": "",
        "priority": 2130706431,
    }
    source = {
        "event": "source",
        "source": "host",
        "elapsed_ms": 1.0,
        "candidates": 1,
        "error": None,
    }
    emit(candidate)
    emit(source)
    emit({"event": "addresses", "addresses": ["127.0.0.1"]})
    emit(candidate)
    emit(source)
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("TYPE ") for line in lines) == 2
    assert sum(line.startswith("SOURCE ") for line in lines) == 2
    sources = [line for line in lines if "1.0ms" in line]
    assert len(sources) == 2 and all(line.endswith("  ok") for line in sources)


# -- trice demo -------------------------------------------------------------------------------


async def test_the_demos_throughput_is_in_megabits() -> None:
    """``mbit_s`` is the bits received a second, in millions; ``pps`` the datagrams.
    (Kills ``received * size * 8`` -> ``received * size``.)"""
    records: list[dict[str, Any]] = []
    await _cli._demo(records.append, count=200, size=1000, pings=1)
    (run,) = [r for r in records if r["event"] == "throughput"]
    assert run["seconds"] > 0
    assert run["mbit_s"] == pytest.approx(run["received"] * 1000 * 8 / run["seconds"] / 1e6)
    assert run["pps"] == pytest.approx(run["received"] / run["seconds"])


def test_a_datagram_size_past_the_udp_limit_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--size 65508`` (one past the largest UDP payload) is a usage error, exit status 2.
    (Kills ``value > high`` -> ``value > high + 1`` in the check of a number's range.)"""
    assert _cli.main(["demo", "--size", "65508"]) == 2
    assert "65508 is not from 1 to 65507" in capsys.readouterr().err


async def test_the_ice_round_trip_is_the_selected_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ice_us`` is the selected pair's round trip, not the first pair's listed (here a
    pair not selected, of no round trip worth showing, is listed first).  (Kills ``if
    s.selected`` -> ``if True``.)"""
    pair_statistics = trice.Agent.pair_statistics

    def with_another_first(self: trice.Agent) -> Any:
        other = types.SimpleNamespace(selected=False, round_trip_time=123.0)
        return [other, *pair_statistics(self)]

    monkeypatch.setattr(trice.Agent, "pair_statistics", with_another_first)
    records: list[dict[str, Any]] = []
    await _cli._demo(records.append, count=10, size=100, pings=1)
    (rtt,) = [r for r in records if r["event"] == "rtt"]
    assert rtt["ice_us"] is not None and 0 < rtt["ice_us"] < 1e6


async def test_the_round_trip_shown_is_the_median(monkeypatch: pytest.MonkeyPatch) -> None:
    """``median_us`` is the median of the pings' round trips (and ``min_us`` their least),
    all five of them.  (Kills ``statistics.median(rtts)`` -> ``max(rtts)``.)"""
    seen: list[list[float]] = []
    median = statistics.median

    def spy(data: list[float]) -> float:
        seen.append(list(data))
        return median(data)

    monkeypatch.setattr(statistics, "median", spy)
    records: list[dict[str, Any]] = []
    await _cli._demo(records.append, count=10, size=100, pings=5)
    (rtt,) = [r for r in records if r["event"] == "rtt"]
    (samples,) = seen
    assert len(samples) == 5
    assert rtt["median_us"] == pytest.approx(median(samples) * 1e6)
    assert rtt["min_us"] == pytest.approx(min(samples) * 1e6)
