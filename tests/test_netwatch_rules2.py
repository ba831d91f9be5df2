"""More rules of the address-change watch (trice/_trio/_netwatch.py) that the other netwatch
tests did not pin (found by a mutation review; the test here kills a mutant the rest of the
suite let through, which had only hung the netwatch tests): a watch without the kernel's
notices polls once an interval, not in a loop.  No netlink socket and no real interface:
the notices are turned off, and the interfaces are stubbed."""

from __future__ import annotations

import contextlib
import math

import ifaddr
import pytest
import trio
import trio.testing

import trice
from trice._trio import _gather, _netwatch


async def test_a_watch_that_polls_reads_the_interfaces_once_an_interval(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the kernel's notices, a watch of a 1 s interval left 10.5 s (virtual) reads
    the interfaces at its start and once a poll: about eleven times, not in a loop that
    never sleeps (mutant: the next poll's time not moved on after a poll, so every later
    wait for it is already over: the watch spins, reading the interfaces for ever, and the
    clock never moves).  (The count of reads stops a spinning watch: past 100, the read
    raises, which ends the test instead of hanging it.)"""
    monkeypatch.setattr(_netwatch, "address_notices", lambda **_: None)
    monkeypatch.setattr(
        ifaddr,
        "get_adapters",
        lambda **_: [ifaddr.Adapter("lo", "lo", [ifaddr.IP("127.0.0.1", 8, "lo")], index=1)],
    )
    reads = [0]
    real_read = _gather.read_interfaces  # (what the watch imported)

    async def read_interfaces(newer_than: float = -math.inf) -> None:
        reads[0] += 1
        if reads[0] > 100:
            raise AssertionError("the watch reads the interfaces in a loop")
        await real_read(newer_than)

    monkeypatch.setattr(_netwatch, "read_interfaces", read_interfaces)
    _gather.forget_adapters()
    network = trice.NetworkConfig(include_loopback=True, interface_filter=lambda n: n == "lo")

    async def watch() -> None:
        async with contextlib.aclosing(trice.address_changes(network, interval=1.0)) as changes:
            async for _ in changes:
                pass

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.sleep(10.5)  # (virtual time: ten polls' worth)
            assert 10 <= reads[0] <= 12, reads[0]
            nursery.cancel_scope.cancel()
    finally:
        _gather.forget_adapters()
