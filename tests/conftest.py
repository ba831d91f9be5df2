"""Fixtures shared by the test modules that run third-party peers, the suite's Hypothesis
settings, and the reasons of the trio tests' skips."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Generator, Iterator

import hypothesis
import pytest

from coturn import Coturn, require_turnserver, run_coturn
from peers.harness import PeerUnavailable, pion_binary

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

# (No deadline for an example: a loaded machine's stall, or a full garbage collection of the
# whole suite's heap, some 0.3-0.5 s, made a quick example "flaky" at the default 200 ms.)
hypothesis.settings.register_profile("trice", deadline=None)
hypothesis.settings.load_profile("trice")


#: The oldest aioice the tests that run it as a peer hold to (0.12: relay-only checks go from
#: relays only, and a resolved ``.local`` candidate keeps its name); 0.11 and later need
#: Python 3.11.
AIOICE_OLDEST = (0, 12)


def _aioice_unavailable() -> str | None:
    """Why aioice cannot be the tests' peer here, or ``None``."""
    try:
        version = importlib.metadata.version("aioice")
    except importlib.metadata.PackageNotFoundError:
        return "aioice is not installed (0.12, which the tests need, needs Python 3.11)"
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < AIOICE_OLDEST:
        return f"aioice {version} is older than 0.12 (the newest for Python 3.10 is 0.10)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The interop tests that run aioice (their names say so) skip, with the reason, where
    it cannot be their peer.  (Others that import it skip by ``pytest.importorskip``.)"""
    reason = _aioice_unavailable()
    if reason is not None:
        for item in items:
            if "aioice" in item.nodeid and item.get_closest_marker("interop") is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


def _the_skip(group: BaseException | None) -> BaseException | None:
    """The one ``pytest.skip`` in an exception group, if it holds nothing else."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group if isinstance(group, pytest.skip.Exception) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """A trio test that skips says why, and where: pytest-trio takes the ``pytest.skip``
    out of the exception group trio wraps it in by skipping anew, without the reason
    (where a test needs root, or a receive buffer rmem_max refuses, -rs said "Skipped",
    at a line of pytest's)."""
    try:
        return (yield)
    except pytest.skip.Exception as exc:
        skip = None if exc.msg else _the_skip(exc.__context__)
        if skip is not None:
            raise skip from None
        raise


@pytest.fixture(scope="session")
def pion_available() -> None:
    """Skip, with the reason, when Go or Debian's Pion sources are missing."""
    try:
        pion_binary()
    except PeerUnavailable as exc:
        pytest.skip(f"Pion peer unavailable: {exc}")


@pytest.fixture
def kind(request: pytest.FixtureRequest) -> str:
    """The other peer's kind, from an indirect parametrization (``"pion"`` skips, with the
    reason, where the Pion peer cannot be built)."""
    value: str = request.param
    if value == "pion":
        request.getfixturevalue("pion_available")
    return value


@pytest.fixture
def coturn() -> Iterator[Coturn]:
    """coturn on loopback for the test (a module may define its own)."""
    require_turnserver()
    with run_coturn() as server:
        yield server
