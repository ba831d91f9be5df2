"""Virtual time for trio tests: pytest-trio's ``autojump_clock``, and a guard in real seconds.

With ``autojump_clock`` (``trio.testing.MockClock(autojump_threshold=0)``) the clock jumps to
the next deadline whenever every task waits, so timers fire exactly, and at once, however
loaded the machine is.  That suits tests where nothing outside the process has to answer in
the meantime (a silent socket, or peers in the same process: loopback UDP is queued at once).

But a task that never waits (say a loop whose deadline is due yet never fires) keeps the
clock still, so ``trio.fail_after`` never trips and the test would hang: wrap such a test's
body in :func:`wall_clock_guard`, which cancels it after real seconds instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
import trio

#: Real seconds a virtual-time test may run: they take well under a second.
WALL_CLOCK_GUARD = 10.0


@contextlib.contextmanager
def wall_clock_guard(seconds: float = WALL_CLOCK_GUARD) -> Iterator[None]:
    """Fail the test if the block is still running after ``seconds`` of real time."""
    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:

        def expire() -> None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(scope.cancel, trio_token=token)

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
    if scope.cancelled_caught:
        pytest.fail(f"still running after {seconds} s of real time (a task that never waits?)")


async def task_steps_while_sleeping(seconds: float) -> int:
    """Sleep ``seconds`` (virtual, with ``autojump_clock``) and return how many task steps
    the run took meanwhile: how busy the agents are while nothing happens."""

    class Steps(trio.abc.Instrument):
        count = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.count += 1

    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        await trio.sleep(seconds)
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.count
