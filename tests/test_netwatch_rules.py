"""Rules of the address-change watch (trice/_trio/_netwatch.py) that the other netwatch
tests did not pin (found by a mutation review; each test here kills a mutant the rest of the
suite let through): a netlink notice shorter than its own header, links no longer stale once
the queue was read empty, and watches polling at once sharing one read of the interfaces.
No netlink socket and no real interface: the notices are built here, and the interfaces
are stubbed."""

from __future__ import annotations

import contextlib
import struct
import threading

import ifaddr
import pytest
import trio
import trio.testing

import trice
from trice._trio import _gather, _netwatch

_RTM_NEWADDR = 20

# -- the kernel's notices --------------------------------------------------------------------


def test_a_notice_shorter_than_its_header_is_news_not_a_loop() -> None:
    """A notice claiming a length of 0 (less than its own header) does not parse, and is
    news at once (mutant: the length not checked: the offset never moves, a busy loop for
    ever in the watch's task).  (Parsed in a thread joined with a timeout, the only way to
    see a loop that never yields; the mutant's thread is a daemon, left spinning.)"""
    data = memoryview(struct.pack("=IHHII", 0, _RTM_NEWADDR, 0, 0, 0))
    result: list[bool] = []
    worker = threading.Thread(
        target=lambda: result.append(_netwatch._link_news(data, {})), daemon=True
    )
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "_link_news loops on a notice of length 0"
    assert result == [True]


def test_links_read_afresh_once_the_queue_was_read_empty_are_no_longer_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After dropped notices (ENOBUFS) the links are stale, and read afresh at the end of
    each drain until one reads the queue empty; then they are current, and later drains
    read no interfaces (mutant: ``self.stale`` kept: every drain from then on reads every
    interface's name and state, for ever)."""
    reads: list[int] = []

    def link_names() -> dict[int, str]:
        reads.append(1)
        return {7: "v0"}

    monkeypatch.setattr(_netwatch, "_link_names", link_names)
    monkeypatch.setattr(_netwatch, "link_up", lambda name: True)
    links = _netwatch._Links()
    links.stale = True
    assert not links.resync(emptied=False)
    assert links.stale
    links.resync()
    assert not links.stale
    reads.clear()

    class _Empty:
        def recv_into(self, sink: bytearray) -> int:
            raise BlockingIOError

    assert _netwatch._drain(_Empty(), links) == (True, False)  # type: ignore[arg-type,unused-ignore]
    assert reads == []


# -- polling ---------------------------------------------------------------------------------


async def test_watches_that_poll_together_share_a_recent_read(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the kernel's notices, ten watches polling at the same moment are served by
    a read made within the interval: the interfaces are read once at most between them
    (mutant: ``newer_than`` = now: each watch reads them afresh, ten reads a poll).  (The
    interfaces are ifaddr's, stubbed: ``lo`` with 127.0.0.1; the 2.5 s slept are virtual,
    one poll's interval.)"""
    monkeypatch.setattr(_netwatch, "address_notices", lambda **_: None)
    reads = [0]

    def get_adapters(**_: object) -> list[ifaddr.Adapter]:
        reads[0] += 1
        return [ifaddr.Adapter("lo", "lo", [ifaddr.IP("127.0.0.1", 8, "lo")], index=1)]

    monkeypatch.setattr(ifaddr, "get_adapters", get_adapters)
    _gather.forget_adapters()
    network = trice.NetworkConfig(include_loopback=True, interface_filter=lambda n: n == "lo")

    async def watch() -> None:
        async with contextlib.aclosing(trice.address_changes(network, interval=2.0)) as changes:
            async for _ in changes:
                pass

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            reads[0] = 0
            await trio.sleep(2.5)  # (one poll each)
            assert reads[0] <= 1, reads[0]
            nursery.cancel_scope.cancel()
    finally:
        _gather.forget_adapters()
