"""Every example under docs/examples runs as it is and prints what its guide says it prints.

Each example gathers on loopback only and contacts no server, so these run anywhere.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

#: A line (or part of one) each example must print.  An example missing here fails the test,
#: so a new example cannot go unchecked.
EXPECTED = {
    "quickstart.py": "bob got: hello, bob",
    "trickle_json.py": "trickle: connected, bob got b'trickled'",
    "events.py": "slow: lost 3 events",
    "stun_codec.py": "client: the responder saw us at 127.0.0.1:",
    "data.py": "alice: the selected pair's round trip timed: yes\nbob: 4 arrived, 6 dropped",
    "configuration.py": "configuration: every mistake refused",
    "errors.py": "errors: done",
    "lite.py": "checks sent by the lite agent: 0\nlite: completed",
    "logging_trace.py": "logging: connected",
    "restart.py": "connected again, same connection: True\nbob got: after the restart",
    "mdns.py": "mdns: bob's pair is alice's host candidate at 127.0.0.1",
    "mux.py": "carol got: echo: hello from carol",
    "regather.py": "127.0.0.1 kept: True\nconnected again, same connection: True",
    "mux_stun.py": "carol: srflx 203.0.113.7 (raddr 127.0.0.1)\nrequests to the STUN server: 1",
    "tcp.py": "alice got: hello back\nbob's listener: 1 accepted, 0 refused, 0 closed unproven",
    "tcp_mux.py": "connections routed: 3, unroutable: 0",
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert EXPECTED[name] in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr


def test_the_warm_up_says_one_line_in_a_trace_log() -> None:
    """A process's first agent warms trice up with two throwaway agents: a trace log says so
    in one line, without their own (some fifty) lines."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "logging_trace.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    log = result.stdout  # (the example logs to standard output)
    assert log.count("warming up") == 1, log
    assert "warmup" not in log.replace("warming up", "")
    assert "send nominate" in log  # the example's own agents are traced
