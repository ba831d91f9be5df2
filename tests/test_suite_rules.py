"""Rules of the suite itself (tests/conftest.py): what it skips where a test peer is
missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Tests whose ids say "aioice" but which run trice (or asyncio) only.
NO_AIOICE_NEEDED = [
    "tests/test_docs.py::test_example_runs[from_aioice.py]",
    "tests/test_bench.py::test_the_aioice_row_is_one_whole_repeat",
    "tests/test_bench.py::test_aioices_drain_is_timed_to_the_last_datagram_and_counts_the_lost",
]

#: A test that runs aioice as its peer.
RUNS_AIOICE = "tests/test_interop.py::test_full_peer_to_trice_lite[aioice]"

HIDE_AIOICE = """\
import importlib.metadata, sys
_real = importlib.metadata.version
def _version(name):
    if name.lower() == "aioice":
        raise importlib.metadata.PackageNotFoundError(name)
    return _real(name)
importlib.metadata.version = _version
sys.modules["aioice"] = None  # (import aioice fails, as where it is not installed)
"""


def test_where_aioice_is_missing_only_the_tests_that_run_it_skip(tmp_path: Path) -> None:
    """Where aioice is missing (``nox -s compat`` on 3.10), an interop test that runs it
    skips, saying why, and the tests that do not run it still run: the migration guide's
    example (docs/examples/from_aioice.py, trice only) and two of the data-plane bench's
    table and drain tests.  They were skipped, "aioice is not installed", because their ids
    hold the word (the p41pass3 review)."""
    (tmp_path / "sitecustomize.py").write_text(HIDE_AIOICE)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    ids = [*NO_AIOICE_NEEDED, RUNS_AIOICE]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", *ids],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = out.stdout[-2000:]
    assert "3 passed, 1 skipped" in tail, tail
    skipped = [line for line in tail.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and "test_interop.py" in skipped[0], skipped
    assert "aioice is not installed" in skipped[0], skipped
    assert out.returncode == 0, tail


def _marked_helpers(source: str) -> list[str]:
    """The functions of a test module's ``source`` that carry a ``pytest.mark`` and are not
    collected (their names do not start with ``test``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if node.name.startswith("test"):
            continue
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if "pytest.mark." in ast.unparse(target) + ".":
                found.append(f"{node.name} (line {node.lineno})")
    return found


def test_no_mark_sits_on_a_function_pytest_does_not_collect() -> None:
    """A mark (``skipif``, ``parametrize``...) on a helper does nothing: the tests that call
    it run as if it were not there.  The TCP mux's flood test lost its ``skipif(TRACED)``
    so, moved onto the helper ``_flooded`` by b0618ce, and ran under coverage, where its
    twin in test_tcp_hostile skips (the flakes7 review)."""
    marked = {
        path.name: found
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        if not path.name.startswith("test_zz_")
        if (found := _marked_helpers(path.read_text()))
    }
    assert not marked, marked
    # (and the rule sees a mark on a helper, whether called or not)
    assert _marked_helpers("@pytest.mark.skipif(X, reason='')\nasync def _h(): pass\n")
    assert not _marked_helpers("@pytest.mark.skipif(X, reason='')\nasync def test_h(): pass\n")


STOCK_BOX = """\
import errno, socket
_real = socket.socket.setsockopt
def _setsockopt(self, level, option, value, *rest):
    if level == socket.SOL_SOCKET and option == 33:  # (SO_RCVBUFFORCE: not root)
        raise PermissionError(errno.EPERM, "Operation not permitted")
    if level == socket.SOL_SOCKET and option == socket.SO_RCVBUF:
        value = min(value, 212992)  # (a stock kernel's net.core.rmem_max)
    return _real(self, level, option, value, *rest)
socket.socket.setsockopt = _setsockopt
"""


def test_a_trio_test_that_skips_says_why_and_where(tmp_path: Path) -> None:
    """On a box that is not root, with a stock rmem_max, the agent's flood test cannot
    have the receive buffer it needs, and skips saying so, at the line that skips.  pytest-trio
    skipped it anew without the reason (tests/conftest.py's pytest_runtest_call): -rs said
    "Skipped", at a line of pytest's."""
    (tmp_path / "sitecustomize.py").write_text(STOCK_BOX)
    test = "tests/test_agent.py::test_a_flood_while_connect_reads_the_socket_lets_other_tasks_run"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", test],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    skipped = [line for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, out.stdout[-2000:]
    assert "tests/loopback.py:" in skipped[0], skipped  # (room_for_a_flood's skip)
    assert "needs a receive buffer of 8 MiB: root, or net.core.rmem_max raised" in skipped[0]
