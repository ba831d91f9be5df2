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
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import ifaddr
import pytest
import trio

from trice._trio import _gather

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


class LongestStep(trio.abc.Instrument):
    """The longest a task step took (wall clock): how long the event loop was held."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._began: float | None = None  # (added during a step: that one is not timed)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._began = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._began is not None:
            self.longest = max(self.longest, time.perf_counter() - self._began)


def slow_interface_reads(
    monkeypatch: pytest.MonkeyPatch, seconds: float = 0.15, stalled: float = 0.0
) -> list[str]:
    """Make reading the interfaces take ``seconds`` of CPU time (a host with hundreds of
    them), and have one read made so: the next go to a worker thread, for this test only
    (the process's state of reads is put back after it: a later test's read in a worker
    thread would let its MockClock jump ahead).  A read in a worker thread is held
    ``stalled`` seconds more (a loaded machine's).  Returns the list that the name of each
    thread reading after that goes into."""
    real = ifaddr.get_adapters
    readers: list[str] = []

    def slow() -> Any:
        readers.append(threading.current_thread().name)
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
        if threading.current_thread() is not threading.main_thread():
            time.sleep(stalled)
        return real()

    monkeypatch.setattr(ifaddr, "get_adapters", slow)
    monkeypatch.setattr(_gather, "_adapters_cache", {})
    monkeypatch.setattr(_gather, "_slow_reads", False)
    monkeypatch.setattr(_gather, "_slow_in", {})
    _gather._adapters()
    assert _gather._slow_reads
    _gather.forget_adapters()
    readers.clear()
    return readers


class _TaskOrder(random.Random):
    """trio's source of randomness for the order it runs a batch of woken tasks in (it
    reverses the batch when ``random()`` is under 0.5): fixed, one way or the other."""

    def __init__(self, reverse: bool) -> None:
        super().__init__(0)
        self.value = 0.0 if reverse else 0.9

    def random(self) -> float:
        return self.value


def fix_task_order(monkeypatch: pytest.MonkeyPatch, *, reverse: bool) -> None:
    """Make trio run each batch of woken tasks in the order they were woken (``reverse``:
    the other way), for a test whose outcome turns on which of two tasks woken together
    runs first.  (It reaches into trio's internals: if they change, this fails loudly.)"""
    monkeypatch.setattr(trio._core._run, "_r", _TaskOrder(reverse))
