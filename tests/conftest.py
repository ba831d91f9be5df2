"""Fixtures shared by the test modules that run third-party peers, and the suite's
Hypothesis settings."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest

from coturn import Coturn, require_turnserver, run_coturn
from peers.harness import PeerUnavailable, pion_binary

# (No deadline for an example: a loaded machine's stall, or a full garbage collection of the
# whole suite's heap, some 0.3-0.5 s, made a quick example "flaky" at the default 200 ms.)
hypothesis.settings.register_profile("trice", deadline=None)
hypothesis.settings.load_profile("trice")


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
