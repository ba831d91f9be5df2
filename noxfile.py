"""nox sessions for trice: tests, interop, lint, typecheck, docs, bench, compat, coverage."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "interop", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
# (A session whose Python is missing fails, rather than being skipped: the suite passing
# without having run must not look like the suite passing.)
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
TEST_DEPS = [
    "pytest>=8",
    "pytest-trio>=0.8",
    "hypothesis>=6",
    "aioice>=0.12; python_version >= '3.11'",  # (0.11 and later need 3.11)
    "trustme>=1.0",
    "setuptools>=77",  # (tests/test_packaging.py builds the sdist and the wheel)
    "mypy>=1.10",  # (tests/test_public_api.py types a user's program)
    "sphinx",  # (tests/test_docs.py: a nitpicky build finds references that link nowhere)
    "sphinxcontrib-trio",
]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, property, loopback and (when root) NAT-lab tests; interop runs in its own session."""
    session.install("-e", ".", *TEST_DEPS)
    session.run("pytest", "-m", "not interop", *session.posargs)


@nox.session(python=PYTHON)
def interop(session: nox.Session) -> None:
    """Interop with real peers: aioice (PyPI), Pion (Debian's golang-github-pion-ice.v2-dev),
    libnice (Debian's gir1.2-nice-0.1, run by the system's python3) and Chromium."""
    session.install("-e", ".", *TEST_DEPS)
    session.run("pytest", "-m", "interop", *session.posargs)


@nox.session(python=["3.10", "3.12", "3.13"])
def compat(session: nox.Session) -> None:
    """The ``tests`` session on the other Pythons trice supports (3.10: without aioice, whose
    0.11 on needs 3.11; the tests that import it skip, saying so).  Not among the default
    sessions, nor in ``.ci/run``: some 5 minutes each, and each Python must be installed
    (its session fails if it is not; with pyenv, name them,
    ``PYENV_VERSION=3.11.7:3.10.13:3.12.1:3.13.0 nox -s compat``)."""
    session.install("-e", ".", *TEST_DEPS)
    session.run("pytest", "-m", "not interop", *session.posargs)


@nox.session(python=PYTHON)
def coverage(session: nox.Session) -> None:
    """The whole suite (interop included) under coverage.py, lines and branches, subprocesses
    (the CLI's tests) too; prints the report.  Not run by default: it is slower."""
    session.install("-e", ".", *TEST_DEPS, "coverage>=7.10")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "-q")
    session.run("coverage", "report")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict against trio's own inline hints (no trio-typing: see docs/design.rst)."""
    session.install("-e", ".", "mypy", "nox", *TEST_DEPS)
    session.run("mypy")
    # The guides' examples are a user's programs: strict too, in a run of their own (their
    # module names, mux.py say, are bench's as well).
    session.run("mypy", "--strict", "docs/examples")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Sphinx, warnings as errors."""
    session.install("-e", ".", "sphinx", "sphinxcontrib-trio")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run every benchmark under bench/ and print its table (``nox -s bench -- --quick``
    for a short run).  The benches reuse the tests' helpers (coturn, the peer harness)."""
    session.install("-e", ".", *TEST_DEPS)
    import pathlib

    for script in sorted(pathlib.Path("bench").glob("*.py")):
        if script.name.startswith("_"):
            continue
        session.run("python", str(script), *session.posargs)
