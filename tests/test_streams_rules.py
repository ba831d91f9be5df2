"""Rules of a subscriber's event stream (trice/_trio/_streams.py) that the other tests did
not pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through), as trio's channels behave: a reader parked in ``receive()`` is woken by the end of
the agent or by another task closing the stream, and ``receive()`` is a checkpoint (it
raises in a cancelled scope, taking nothing, and checkpoints with an event ready).  The
stream is driven on its own, in virtual time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

import trice
from trice._trio._streams import EventStream


def _stream() -> EventStream:
    """A stream of room for four events, whose closing nobody watches."""
    return EventStream(4, lambda _stream: None)


def _state(state: trice.ConnectionState) -> trice.ConnectionStateChanged:
    return trice.ConnectionStateChanged(state)


# -- a parked reader woken --------------------------------------------------------------------


async def _parked_reader_told(
    stream: EventStream, end: Callable[[], Awaitable[None]], error: type[BaseException]
) -> None:
    """A reader waits in ``stream.receive()``; ``end`` (another task's) wakes it with
    ``error``."""
    told = False

    async def reader() -> None:
        nonlocal told
        with pytest.raises(error):
            await stream.receive()
        told = True

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await end()
    assert told


async def test_a_reader_parked_when_the_stream_ends_gets_end_of_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reader waiting in ``receive()`` when the agent ends the stream gets
    ``EndOfChannel`` (it is woken, not left waiting).  (Kills ``self._lot.unpark_all()`` ->
    ``pass`` in ``_end``.)"""
    stream = _stream()

    async def end() -> None:
        stream._end()

    await _parked_reader_told(stream, end, trio.EndOfChannel)


async def test_a_reader_parked_when_another_task_closes_the_stream_is_told(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reader waiting in ``receive()`` when another task closes the stream gets
    ``ClosedResourceError``.  (Kills ``self._lot.unpark_all()`` -> ``pass`` in
    ``aclose``.)"""
    stream = _stream()
    await _parked_reader_told(stream, stream.aclose, trio.ClosedResourceError)


# -- receive() is a checkpoint ----------------------------------------------------------------


async def test_receive_in_a_cancelled_scope_raises_and_takes_nothing() -> None:
    """A cancelled ``receive()`` raises ``Cancelled`` even with an event ready, and the
    event stays for the next read (trio's rule: a checkpoint that raises does nothing).
    (Kills ``await trio.lowlevel.checkpoint_if_cancelled()`` -> ``pass``.)"""
    stream = _stream()
    event = _state(trice.ConnectionState.CHECKING)
    stream._put(event)
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.receive()
    assert scope.cancelled_caught
    assert stream.receive_nowait() is event


async def test_receive_with_an_event_ready_is_a_checkpoint() -> None:
    """``receive()`` with an event already queued still checkpoints (it yields to the
    scheduler).  (Kills ``await trio.lowlevel.cancel_shielded_checkpoint()`` -> ``pass``.)"""
    stream = _stream()
    stream._put(_state(trice.ConnectionState.CHECKING))
    with trio.testing.assert_checkpoints():
        await stream.receive()
