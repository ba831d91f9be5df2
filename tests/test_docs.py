"""Every example under docs/examples runs as it is and prints what its guide says it prints.

Each example gathers on loopback only and contacts no server, so these run anywhere.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLES = DOCS / "examples"

#: A line (or part of one) each example must print.  An example missing here fails the test,
#: so a new example cannot go unchecked.
EXPECTED = {
    "quickstart.py": "bob got: hello, bob",
    "trickle_json.py": "trickle: connected, bob got b'trickled'",
    "browser_sdp.py": "browser_sdp: remote candidates held: 3",
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
    "from_aioice.py": "alice got: pong\nsend after close: trio.ClosedResourceError",
    "from_pion.py": "alice got: pong\nalice's pair: host -> host",
    "testing.py": "in less than 5 s of real time: True",
    "two_processes.py": "listen: got 'hello from the dial side'\ndial: connected",
}


def _shown_outputs() -> dict[str, list[tuple[str, str]]]:
    """The output blocks the guides show under an example (``Output::``, ``Its output
    ...::``), by example: ``(guide, block)``."""
    pattern = re.compile(
        r"\.\. literalinclude:: \.\./examples/(\w+\.py).*?\n(?:.*?\n)*?"
        r"(?:Output|Its output[^\n]*)::\n\n((?:    .*\n|\n)+)"
    )
    shown: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for rst in sorted((DOCS / "guide").glob("*.rst")):
        for match in pattern.finditer(rst.read_text()):
            shown[match.group(1)].append((rst.name, match.group(2)))
    return shown


SHOWN = _shown_outputs()


def _lines(text: str) -> collections.Counter[str]:
    """The non-blank lines of ``text``, as a multiset (the order of two agents' lines may
    vary), with what changes from run to run written alike: numbers (ports, times),
    foundations, ufrags and passwords."""
    lines: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        if line.strip():
            line = re.sub(r"(ice-ufrag:|ice-pwd:|trice )\S+", r"\1X", line.strip())
            line = re.sub(r"candidate:[0-9a-f]{8}", "candidate:F", line)
            lines[re.sub(r"\d+(\.\d+)?", "N", line)] += 1
    return lines


def test_the_guides_show_output_blocks_to_check() -> None:
    """(The pattern still finds the guides' output blocks: a change of their wording would
    otherwise leave them unchecked.)"""
    assert sum(len(blocks) for blocks in SHOWN.values()) >= 10


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
    printed = _lines(result.stdout)
    for guide, block in SHOWN.get(name, ()):
        shown = _lines(block)
        # (Each line the guide shows, as the example prints it, numbers aside.)
        assert shown == printed, (
            f"{guide} shows {sorted(shown - printed)}; {name} prints {sorted(printed - shown)}"
        )


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


#: A reference Sphinx cannot resolve, as its nitpicky build says it.
_UNRESOLVED = re.compile(
    r"^(?P<where>.*?): WARNING: py:\w+ reference target not found: (?P<target>.+?) \[ref\.\w+\]$"
)


def test_references_to_trices_names_resolve_and_no_prose_reads_as_a_type(
    tmp_path: Path,
) -> None:
    """A nitpicky build (``-n``, offline: the standard library's and trio's names do not
    resolve, as expected) finds no reference to a name of trice's that links nowhere
    (``trice.Candidate.to_json`` for ``trice.ice.Candidate.to_json``: plain text on the
    page), and no attribute whose docstring's first words napoleon took for its type (a
    first line ``Words: more`` shows as "Type: Words")."""
    pytest.importorskip("sphinx", reason="needs Sphinx (nox -s tests installs it)")
    pytest.importorskip("sphinxcontrib_trio", reason="needs sphinxcontrib-trio")
    import trice
    import trice.ice
    import trice.stun

    exported = {name for module in (trice, trice.ice, trice.stun) for name in module.__all__}
    command = [sys.executable, "-m", "sphinx", "-q", "-n", "-E", "-b", "dummy"]
    build = subprocess.run(
        [*command, "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    wrong = []
    for line in build.stderr.splitlines():
        found = _UNRESOLVED.match(line.strip())
        if found is None:
            continue
        target = found["target"].lstrip("~.")
        ours = (target.startswith("trice.") and "._" not in target) or (
            target.split(".")[0] in exported
        )
        if " " in target or ours:
            wrong.append(f"{found['where']}: {target}")
    assert not wrong, "\n".join(wrong)
