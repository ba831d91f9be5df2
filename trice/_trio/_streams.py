"""Per-subscriber event streams: bounded, never blocking the agent, never silent about loss."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from trice.ice._events import ConnectionState, ConnectionStateChanged, Event, EventsLost

__all__ = ["EventStream"]


class EventStream(trio.abc.ReceiveChannel[Event]):
    """One subscriber's channel of agent events (see :meth:`trice.Agent.subscribe`).

    The agent puts events in without ever waiting.  When the subscriber is ``max_buffer``
    events behind, further events are dropped and counted, and the subscriber receives one
    :class:`~trice.EventsLost` with the count where the gap is: after the events queued
    before it and before any that came after it: nothing is lost silently, and the order of
    what it reads is the order of what happened.  Closing the stream (leaving ``async
    with``) unsubscribes it; so does dropping it unclosed, once it is collected (the agent
    holds its subscribers weakly).  Several tasks may receive from one stream at once: each
    event goes to one of them (for every task to see every event, subscribe each).  The
    agent's last event, ``closed``, ends every stream, even one that lost the events before
    it (then after their mark).
    """

    def __init__(self, max_buffer: int, on_close: Callable[[EventStream], None]) -> None:
        self._queue: deque[Event] = deque()
        self._max = max_buffer
        self._lost = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._ended = False
        self._on_close = on_close

    def _put(self, event: Event) -> None:
        if self._closed or self._ended:
            return
        queue = self._queue
        if self._lost and len(queue) < self._max:
            # Room again after a loss: the gap is marked where it was, before what follows.
            lost, self._lost = self._lost, 0
            if queue and isinstance(queue[-1], EventsLost):
                # Lost again right after the last mark (which took the last room): the same
                # gap, so one mark for both.
                queue[-1] = EventsLost(queue[-1].count + lost)
            else:
                queue.append(EventsLost(lost))
        if len(queue) >= self._max:
            self._lost += 1
        else:
            queue.append(event)
        self._lot.unpark_all()

    def _end(self) -> None:
        """The agent closed, its last event, ``closed``, put: readers get what is queued,
        then ``EndOfChannel``.  If ``closed`` was lost for want of room (the last event
        lost), it is queued all the same, past ``max_buffer``, after the mark of the others
        lost: a stream ends with it."""
        if self._lost and not self._ended and not self._closed:
            lost, self._lost = self._lost - 1, 0  # (the last one lost was closed)
            queue = self._queue
            if lost:
                if queue and isinstance(queue[-1], EventsLost):
                    queue[-1] = EventsLost(queue[-1].count + lost)
                else:
                    queue.append(EventsLost(lost))
            queue.append(ConnectionStateChanged(ConnectionState.CLOSED))
        self._ended = True
        self._lot.unpark_all()

    def receive_nowait(self) -> Event:
        """The next event if one is queued, else raise :class:`trio.WouldBlock`."""
        if self._closed:
            raise trio.ClosedResourceError("this event stream is closed")
        if self._queue:
            event = self._queue.popleft()
            if not self._queue and self._lost:
                lost, self._lost = self._lost, 0
                if isinstance(event, EventsLost):
                    return EventsLost(event.count + lost)  # one gap, not two markers
                self._queue.append(EventsLost(lost))
            return event
        if self._lost:
            lost, self._lost = self._lost, 0
            return EventsLost(lost)
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Event:
        """Wait for the next event.

        Raises:
            trio.EndOfChannel: the agent closed and every event was read.
            trio.ClosedResourceError: this stream was closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                event: Event | None = self.receive_nowait()
            except trio.WouldBlock:
                event = None  # (parked below: see Agent._read_until_change)
            if event is None:
                await self._lot.park()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    async def aclose(self) -> None:
        """Unsubscribe."""
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._on_close(self)
            self._lot.unpark_all()
        await trio.lowlevel.checkpoint()
