"""More rules of the TURN relay transport (trice/_trio/_relay.py) that the other relay tests
did not pin, or pinned only by chance (found by a mutation review; each test here kills a
mutant the rest of the suite let through): an allocation granted as its timeout passes is
taken whatever order trio runs the tasks it wakes together in.  test_turn's FakeServer is the
server, on a loopback socket."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from test_relay import Inbox, start_relay
from test_turn import FakeServer

from trice import ServerUrl
from trice.turn import TurnState

from virtual_time import fix_task_order, wall_clock_guard


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])
async def test_an_allocation_granted_as_the_timeout_passes_is_taken_in_either_order(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, reverse: bool
) -> None:
    """The server's success (to the Allocate's copy at 1.5 s) comes, and the allocation
    timeout (3 s) passes, in one turn of the loop (it stalled): the relay's reader and the
    task that waits for the allocation are woken together, alone; whichever of them trio
    runs first (its order fixed here, each way in turn), the answer waiting in the socket
    is read before the timeout is said, and the relay is allocated (mutant: no checkpoint
    before the timeout is said, and the run that has the waiting task first gives a
    granted allocation up).  (test_relay's test of this tries trio's random order eight
    times, but its stall also wakes the relay's timer task, which reads the answer too:
    it let the mutant through now and then.)"""
    fix_task_order(monkeypatch, reverse=reverse)
    fake = FakeServer()
    with wall_clock_guard(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        server = ServerUrl("turn", "127.0.0.1", port=sock.getsockname()[1])

        async def serve() -> None:
            challenged = stalled = False
            while True:
                await trio.lowlevel.wait_readable(sock)
                data, source = sock.recvfrom(2048)
                if challenged and trio.current_time() < 1.0:
                    continue  # (the authenticated Allocate's first copies are lost)
                challenged = True
                for answer in fake.handle(data, trio.current_time()):
                    sock.sendto(answer, source)
                if fake.allocated and not stalled:
                    # The loop stalls as the success comes, past the timeout, but not as
                    # far as the Allocate's next copy (3.1 s): the reader and the waiting
                    # task are woken together, nothing else.
                    stalled = True
                    autojump_clock.jump(deadline + 0.05 - trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            deadline = trio.current_time() + 3.0
            relay = await start_relay(nursery, server, Inbox(), allocation_timeout=3.0)
            assert relay.state is TurnState.ALLOCATED
            nursery.cancel_scope.cancel()
