"""More rules of the agent's shell (trice/_trio/_agent.py) that the other agent tests did not
pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through): connect() on an agent that closes while it takes its checkpoint raises, rather
than hand over the connection of a closed agent.  Loopback only, virtual time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trice

from loopback import connect_both, loopback_config, signal
from virtual_time import fix_task_order


async def _hold(
    opened: list[trice.Agent],
    ready: trio.Event,
    go: trio.Event,
    closing: trio.Event,
    done: trio.Event,
) -> None:
    """Open an agent (controlling) in this task, and leave it (closing it) once ``go``."""
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        opened.append(agent)
        ready.set()
        await go.wait()
        closing.set()  # (the agent closes now, before this task takes another step)
    done.set()


# -- connect() on an agent closed meanwhile -------------------------------------------------


@pytest.mark.parametrize(
    ("reverse", "closed_first"),
    [(False, True), (True, False)],
    ids=["closed-first", "connect-first"],
)
async def test_connect_on_an_agent_closed_during_its_checkpoint_raises(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    reverse: bool,
    closed_first: bool,
) -> None:
    """connect() on an agent already connected takes a checkpoint before it returns; if the
    agent is closed meanwhile (its ``open_agent`` left by the task that entered it), it
    raises ClosedResourceError rather than hand over a connection of a closed agent.  The
    closing task and connect()'s are woken in one batch, the closing task first: trio's
    order is fixed here each way in turn, so that the agent closes first (connect() must
    raise) or after connect() returns (the connection is handed over).  (Mutant: the
    ``_raise_if_closed`` after the checkpoint dropped, and the connection of the closed
    agent was returned.)"""
    fix_task_order(monkeypatch, reverse=reverse)
    go, ready, closing, done = trio.Event(), trio.Event(), trio.Event(), trio.Event()
    opened: list[trice.Agent] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold, opened, ready, go, closing, done)
        async with trice.open_agent(loopback_config(), controlling=False) as b:
            await ready.wait()
            (a,) = opened
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
            signal(a, b)
            await connect_both(a, b)
            go.set()  # (the closing task woken, then connect()'s at its checkpoint)
            if closed_first:
                with pytest.raises(trio.ClosedResourceError):
                    await a.connect()
                assert closing.is_set()
            else:
                connection = await a.connect()
                assert not closing.is_set(), "connect() returned after the agent closed"
                assert connection is not None
            await done.wait()
