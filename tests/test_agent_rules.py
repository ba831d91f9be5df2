"""Rules of the agent's counters, failure messages and event streams (trice/_trio/_agent.py,
trice/ice/_core.py, trice/_trio/_streams.py) that the other agent tests did not pin (found
by a mutation review): the core's prflx_dropped reported, counts in an ICE failure's
message said in the singular or the plural, and a stream's loss mark kept to one for a gap
that ends with ``closed``."""

from __future__ import annotations

import types

import pytest
import trio

import trice
from trice._trio._streams import EventStream
from trice.ice._core import _unauthorized, _unchecked

from loopback import events_so_far, loopback_config

# -- counters --------------------------------------------------------------------------------


async def test_statistics_report_the_cores_prflx_dropped() -> None:
    """AgentStatistics.prflx_dropped is the core's count (checks answered whose source was
    not learned), not a constant."""
    async with trice.open_agent(loopback_config(), controlling=True) as a:
        await a.wait_gathering_complete()
        a._core.prflx_dropped = 3
        assert a.statistics().prflx_dropped == 3


# -- an ICE failure's message ----------------------------------------------------------------


def test_one_refused_check_is_said_in_the_singular() -> None:
    """An ICE failure's message counts the checks the peer answered 401 Unauthorized: "1
    answer", "2 answers", and nothing at all when there were none."""
    core = types.SimpleNamespace(checks_unauthorized=1)
    text = _unauthorized(core)  # type: ignore[arg-type]
    assert "(1 answer 401 Unauthorized)" in text
    core.checks_unauthorized = 2
    assert "(2 answers 401 Unauthorized)" in _unauthorized(core)  # type: ignore[arg-type]
    core.checks_unauthorized = 0
    assert _unauthorized(core) == ""  # type: ignore[arg-type]


def test_one_unchecked_pair_is_said_in_the_singular() -> None:
    """An ICE failure's message counts the pairs past the cap (max_pairs, RFC 8445
    §6.1.2.5) that went unchecked: one is "1 pair"."""
    checklist = types.SimpleNamespace(unchecked=1, max_pairs=100)
    core = types.SimpleNamespace(checklist=checklist)
    assert "; 1 pair past the cap (max_pairs=100" in _unchecked(core)  # type: ignore[arg-type]


# -- event streams ---------------------------------------------------------------------------


def _state(state: trice.ConnectionState) -> trice.ConnectionStateChanged:
    return trice.ConnectionStateChanged(state)


def test_closed_lost_right_after_a_mark_that_took_the_last_room_makes_one_mark() -> None:
    """A full stream whose last room went to a loss mark loses more events, ``closed`` among
    them: the stream ends with one mark for the whole gap, then ``closed`` (as a gap before
    the end is marked once elsewhere)."""
    stream = EventStream(2, lambda stream: None)
    checking = _state(trice.ConnectionState.CHECKING)
    connected = _state(trice.ConnectionState.CONNECTED)
    stream._put(checking)
    stream._put(connected)
    stream._put(_state(trice.ConnectionState.DISCONNECTED))  # lost (full)
    assert stream.receive_nowait() == checking
    stream._put(_state(trice.ConnectionState.CONNECTED))  # the mark takes the room; lost
    stream._put(_state(trice.ConnectionState.FAILED))  # lost
    stream._put(_state(trice.ConnectionState.CLOSED))  # lost
    stream._end()
    got = events_so_far(stream)
    with pytest.raises(trio.EndOfChannel):  # (it ended)
        stream.receive_nowait()
    assert got == [
        connected,
        trice.EventsLost(3),  # disconnected, connected, failed
        _state(trice.ConnectionState.CLOSED),
    ]
