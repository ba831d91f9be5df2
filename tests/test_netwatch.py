"""``trice.address_changes``: the kernel's notices (Linux's rtnetlink, in a namespace of the
test's own), the poll where there are none, and new addresses counted once they can be
bound.  (Its poll in virtual time: ``test_regather.py``.)"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import selectors
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
import trio
import trio.testing

import trice
from trice._trio import _gather, _netwatch
from trice._trio._gather import _Found

from natlab import LabError, Namespace, lone_namespace, require_natlab

# A watcher in the namespace: the addresses of interface ``v0`` as they change, each with
# whether a socket could be bound to it then.  By default the poll is an hour apart: what it
# sees in a test's seconds comes from the kernel's notices.  It says "ready" once it waits.
WATCHER = """
import json, socket, trio, trio.testing, trice
PRELUDE

def binds(address):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True

async def main():
    network = trice.NetworkConfig(interface_filter=lambda name: name == "v0")
    async def watch():
        async for addresses in trice.address_changes(network, interval=INTERVAL):
            print(json.dumps({a: binds(a) for a in addresses}), flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        print(json.dumps("ready"), flush=True)

trio.run(main)
"""


BIND_IPV6 = (
    "import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(('2001:db8::7', 0))"
)


def _next_line(proc: subprocess.Popen[str], within: float) -> Any:
    """The watcher's next line, as JSON; fails the test if none comes ``within`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(within):
            pytest.fail(f"the watcher said nothing within {within} s")
    line = proc.stdout.readline()
    assert line, f"the watcher ended: {proc.stderr.read() if proc.stderr else ''}"
    return json.loads(line)


@contextlib.contextmanager
def _watcher(ns: Namespace, *, prelude: str = "", interval: float = 3600) -> Any:
    """The watcher, started in ``ns`` (``prelude`` runs first) and ready."""
    script = WATCHER.replace("PRELUDE", prelude).replace("INTERVAL", repr(interval))
    proc = ns.run(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert _next_line(proc, 20) == "ready"
    yield proc


def test_the_kernels_notices_say_at_once_when_an_address_comes_or_goes() -> None:
    """In a namespace of its own, with a veth pair up: an IPv4 address added to ``v0`` is
    seen at once (the poll is an hour off), and so is its removal.  An IPv6 address is
    tentative until its duplicate address detection is over (RFC 4862 §5.4), and no socket
    can be bound to it meanwhile: it comes when detection is over, bindable."""
    require_natlab(turn=False)
    with lone_namespace("netwatch") as ns:
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "set", "v0", "up")
        ns.ip("link", "set", "v1", "up")
        with _watcher(ns) as watcher:
            ns.ip("addr", "add", "198.51.100.7/24", "dev", "v0")
            assert _next_line(watcher, 10) == {"198.51.100.7": True}

            added = time.monotonic()
            ns.ip("addr", "add", "2001:db8::7/64", "dev", "v0")
            # (As the address is added, no socket can be bound to it yet.)
            with pytest.raises(LabError, match="Cannot assign requested address"):
                ns.check_output([sys.executable, "-c", BIND_IPV6])
            seen = _next_line(watcher, 10)
            assert seen == {"198.51.100.7": True, "2001:db8::7": True}
            assert time.monotonic() - added > 0.5  # (detection takes a second or so)

            ns.ip("addr", "del", "198.51.100.7/24", "dev", "v0")
            assert _next_line(watcher, 10) == {"2001:db8::7": True}


async def test_without_the_kernels_notices_the_interfaces_are_polled(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no notice socket can be had (not Linux, netlink not allowed), the interfaces are
    read every ``interval``: a change made at 2.5 s is seen at 3 s."""
    monkeypatch.setattr(_netwatch, "address_notices", lambda: None)
    allowed = {"127.0.0.1"}
    network = trice.NetworkConfig(
        interface_filter=lambda name: name == "lo",
        ip_filter=lambda address: str(address) in allowed,
        include_loopback=True,
    )
    seen: list[tuple[float, tuple[str, ...]]] = []

    async def watch() -> None:
        async for addresses in trice.address_changes(network, interval=1.0):
            seen.append((trio.current_time(), addresses))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(2.5)
        allowed.clear()
        await trio.sleep(2.0)
        nursery.cancel_scope.cancel()
    assert seen == [(3.0, ())]


async def test_a_new_address_that_cannot_be_bound_yet_is_held_back(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address the interfaces list but no socket can be bound to (198.51.100.99 is on no
    interface of this machine: ``EADDRNOTAVAIL``, as for a tentative IPv6 address) is not
    said to have come, while another that came with it (127.0.0.2) is; it comes once it
    can be bound."""
    listed = ["127.0.0.1"]
    can_bind = {"127.0.0.1", "127.0.0.2"}

    def adapters() -> list[tuple[str, list[_Found]]]:
        found = []
        for literal in listed:
            address = ipaddress.ip_address(literal)
            found.append(_Found(address, literal, 4, False, address.is_loopback, 8))
        return [("lo", found)]

    real_bindable = _netwatch.bindable

    def bindable(address: str) -> bool:
        assert real_bindable(address) is (address in ("127.0.0.1", "127.0.0.2"))
        return address in can_bind

    monkeypatch.setattr(_gather, "_adapters", adapters)
    monkeypatch.setattr(_netwatch, "bindable", bindable)
    network = trice.NetworkConfig(include_loopback=True)
    seen: list[tuple[float, tuple[str, ...]]] = []

    async def watch() -> None:
        async for addresses in trice.address_changes(network, interval=1.0):
            seen.append((trio.current_time(), addresses))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(0.5)
        listed.extend(["198.51.100.99", "127.0.0.2"])
        await trio.sleep(2.0)  # (read at 1 s and 2 s)
        can_bind.add("198.51.100.99")  # (as when detection is over)
        await trio.sleep(1.0)  # (read at 3 s)
        nursery.cancel_scope.cancel()
    assert seen == [
        (1.0, ("127.0.0.1", "127.0.0.2")),
        (3.0, ("127.0.0.1", "127.0.0.2", "198.51.100.99")),
    ]


def test_bindable_is_false_only_for_an_address_that_is_not_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _netwatch.bindable("127.0.0.1")
    assert not _netwatch.bindable("198.51.100.99")

    def no_descriptor(*args: object) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket, "socket", no_descriptor)
    assert _netwatch.bindable("198.51.100.99")  # (host gathering reports that one)


@pytest.mark.parametrize("how", ["aclosing", "cancel"])
async def test_the_notice_socket_is_closed_when_the_watch_ends(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket the watch holds is closed when the loop is left (``break``) inside
    ``contextlib.aclosing``, and when its task is cancelled while it waits."""
    opened: list[socket.socket | None] = []
    real = _netwatch.address_notices

    def notices() -> socket.socket | None:
        opened.append(real())
        return opened[-1]

    monkeypatch.setattr(_netwatch, "address_notices", notices)
    allowed = {"127.0.0.1"}
    network = trice.NetworkConfig(
        interface_filter=lambda name: name == "lo",
        ip_filter=lambda address: str(address) in allowed,
        include_loopback=True,
    )
    if how == "aclosing":

        async def change() -> None:
            await trio.testing.wait_all_tasks_blocked()  # (the watch waits)
            allowed.clear()  # (seen at the next poll)

        changes = trice.address_changes(network, interval=0.1)
        with trio.fail_after(10):
            async with contextlib.aclosing(changes), trio.open_nursery() as nursery:
                nursery.start_soon(change)
                async for addresses in changes:
                    assert addresses == ()
                    assert opened[0] is None or opened[0].fileno() != -1
                    break
    else:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in trice.address_changes(network):
                    pass

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    if sys.platform.startswith("linux"):
        assert opened and opened[0] is not None
    assert all(sock is None or sock.fileno() == -1 for sock in opened)
