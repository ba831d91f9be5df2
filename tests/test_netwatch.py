"""``trice.address_changes``: the kernel's notices (Linux's rtnetlink, in a namespace of the
test's own), the poll where there are none, and new addresses counted once they can be
bound.  (Its poll in virtual time: ``test_regather.py``.)"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import ipaddress
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import ifaddr
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import trice
from trice._trio import _gather, _netwatch
from trice._trio._gather import _Found

from loopback import filtered_config, loopback_config
from natlab import LabError, Namespace, lone_namespace, require_natlab
from virtual_time import LongestStep, slow_interface_reads

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


class JsonLines:
    """A process's standard output, line by line as JSON, each line waited for with a time
    limit (read unbuffered: a line that came with the one before is not left in a buffer
    that the wait does not see)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self._fd = proc.stdout.fileno()
        self._pending = b""

    def next(self, within: float) -> Any:
        """The next line, as JSON; fails the test if none comes ``within`` seconds."""
        deadline = time.monotonic() + within
        with selectors.DefaultSelector() as selector:
            selector.register(self._fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    pytest.fail(f"the process said nothing within {within} s")
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    errors = self.proc.stderr.read() if self.proc.stderr else b""
                    pytest.fail(f"the process ended: {errors.decode(errors='replace')}")
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)


@contextlib.contextmanager
def _watcher(ns: Namespace, *, prelude: str = "", interval: float = 3600) -> Any:
    """The watcher, started in ``ns`` (``prelude`` runs first) and ready: its lines."""
    script = WATCHER.replace("PRELUDE", prelude).replace("INTERVAL", repr(interval))
    proc = ns.run([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = JsonLines(proc)
    assert lines.next(20) == "ready"
    yield lines


def test_the_kernels_notices_say_at_once_when_an_address_comes_or_goes() -> None:
    """In a namespace of its own, with a veth pair up: an IPv4 address added to ``v0`` is
    seen at once (the poll is an hour off), and so is its removal.  An IPv6 address is
    tentative until its duplicate address detection is over (RFC 4862 §5.4), and no socket
    can be bound to it meanwhile: it comes when detection is over, bindable."""
    require_natlab(turn=False)
    with lone_namespace("netwatch") as ns:
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        # (Detection takes 3 s, not 1: the process that tries the bind below, started
        # on a loaded machine, comes before it is over; it came after now and then.)
        ns.sysctl("net.ipv6.neigh.v0.retrans_time_ms=3000")
        ns.ip("link", "set", "v0", "up")
        ns.ip("link", "set", "v1", "up")
        with _watcher(ns) as watcher:
            ns.ip("addr", "add", "198.51.100.7/24", "dev", "v0")
            assert watcher.next(10) == {"198.51.100.7": True}

            added = time.monotonic()
            ns.ip("addr", "add", "2001:db8::7/64", "dev", "v0")
            # (As the address is added, no socket can be bound to it yet.)
            with pytest.raises(LabError, match="Cannot assign requested address"):
                ns.check_output([sys.executable, "-c", BIND_IPV6])
            seen = watcher.next(10)
            assert seen == {"198.51.100.7": True, "2001:db8::7": True}
            assert time.monotonic() - added > 2.5  # (detection takes 3 s here)

            ns.ip("addr", "del", "198.51.100.7/24", "dev", "v0")
            assert watcher.next(10) == {"2001:db8::7": True}


def test_an_interface_renamed_into_the_filter_is_seen_at_once() -> None:
    """A rename changes no address, only what the interface filter takes (``v0`` here):
    the kernel's link notices say when, and the poll is an hour off.  (An IPv4 address
    renamed with its interface gets an address notice of its own; an IPv6 one does not.)
    The interface makes no link-local address, and keeps its addresses while down (a
    rename wants it down), so that no address notice comes with the rename or the link
    set up or down; an interface's addresses count while it is up."""
    require_natlab(turn=False)
    with lone_namespace("netwatch-rename") as ns:
        ns.sysctl("net.ipv6.conf.all.keep_addr_on_down=1")
        ns.ip("link", "add", "w0", "type", "veth", "peer", "name", "w1")
        ns.ip("link", "set", "w0", "addrgenmode", "none")
        ns.ip("link", "set", "w1", "up")
        ns.ip("addr", "add", "2001:db8::9/64", "dev", "w0", "nodad")
        with _watcher(ns) as watcher:
            ns.ip("link", "set", "w0", "name", "v0")
            ns.ip("link", "set", "v0", "up")
            assert watcher.next(10) == {"2001:db8::9": True}
            ns.ip("link", "set", "v0", "down")
            assert watcher.next(10) == {}
            ns.ip("link", "set", "v0", "name", "w0")
            ns.ip("link", "set", "w0", "up")  # (up, out of the filter: no change)
            ns.ip("link", "set", "w0", "down")
            ns.ip("link", "set", "w0", "name", "v0")
            ns.ip("link", "set", "v0", "up")
            assert watcher.next(10) == {"2001:db8::9": True}


def test_an_interface_set_down_takes_its_addresses_with_it() -> None:
    """An interface set down keeps its IPv4 address, which reaches nobody: gathering took
    it (first, and anew), and the watch, which heard only renames in the link notices,
    said nothing, so the guide's "follow the network" never restarted the agent.  Now the
    address goes when the interface is set down, and comes back with it, each seen at once
    (the poll is an hour off)."""
    require_natlab(turn=False)
    with lone_namespace("netwatch-down") as ns:
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "set", "v0", "up")
        ns.ip("link", "set", "v1", "up")
        ns.ip("addr", "add", "198.51.100.7/24", "dev", "v0")
        with _watcher(ns) as watcher:
            ns.ip("link", "set", "v0", "down")
            assert watcher.next(10) == {}
            ns.ip("link", "set", "v0", "up")
            assert watcher.next(10) == {"198.51.100.7": True}


# The host addresses gathering takes in the process's namespace, as JSON.
HOSTS = """
import json, trice
from trice._trio._gather import host_addresses
print(json.dumps(sorted(h.address for h in host_addresses(trice.NetworkConfig()))))
"""


@pytest.mark.parametrize("no_ipv6", ["addrgenmode none", "disable_ipv6"])
def test_an_interface_set_down_among_dropped_notices_is_seen_up_again(no_ipv6: str) -> None:
    """More notices than the watch's socket holds while it settles (3000 addresses at once:
    ENOBUFS), with ``v0`` set down among them: the watch reads the interfaces afresh (v0's
    address gone), and its record of the links too, so that v0 set up again is seen at
    once.  (Its down notice was among those dropped: as kept, the up notice changed
    nothing, and nothing else came to wake the watch where bringing a link up adds no IPv6
    link-local address.)"""
    require_natlab(turn=False)
    with lone_namespace("netwatch-nobufs") as ns:
        if no_ipv6 == "disable_ipv6":
            ns.sysctl("net.ipv6.conf.all.disable_ipv6=1")
            ns.sysctl("net.ipv6.conf.default.disable_ipv6=1")
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        if no_ipv6 == "addrgenmode none":
            ns.ip("link", "set", "v0", "addrgenmode", "none")
        ns.ip("link", "set", "v0", "up")
        ns.ip("link", "set", "v1", "up")
        ns.ip("addr", "add", "198.51.100.7/24", "dev", "v0")
        with _watcher(ns) as watcher:
            flood = [f"addr add 10.{i // 250}.{i % 250}.1/32 dev lo" for i in range(1500)]
            flood.append("link set v0 down")
            flood += [f"addr add 10.{100 + i // 250}.{i % 250}.1/32 dev lo" for i in range(1500)]
            subprocess.run(
                ["ip", "-n", ns.name, "-batch", "-"],
                input="\n".join(flood) + "\n",
                text=True,
                check=True,
            )
            assert watcher.next(10) == {}
            # (Not a wait for a state: the flood's last notices are read meanwhile, so that
            # v0's up notice comes alone, and nothing but it can wake the watch.)
            time.sleep(1.5)
            ns.ip("link", "set", "v0", "up")
            assert watcher.next(5) == {"198.51.100.7": True}


def test_an_address_under_a_label_goes_down_with_its_interface() -> None:
    """An IPv4 address with a label (``label v0:1``, as keepalived makes them) is listed
    under the label, which names no interface of its own: it goes with ``v0`` set down,
    as its unlabelled sibling does (it stayed: no ``/sys/class/net/v0:1`` said it was
    down)."""
    require_natlab(turn=False)
    with lone_namespace("netwatch-label") as ns:
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("addr", "add", "198.51.100.1/24", "dev", "v0")
        ns.ip("addr", "add", "198.51.100.2/24", "dev", "v0", "label", "v0:1")
        ns.ip("link", "set", "v1", "up")
        ns.ip("link", "set", "v0", "up")
        assert json.loads(ns.check_output([sys.executable, "-c", HOSTS])) == [
            "198.51.100.1",
            "198.51.100.2",
        ]
        ns.ip("link", "set", "v0", "down")
        assert json.loads(ns.check_output([sys.executable, "-c", HOSTS])) == []


def test_a_process_that_entered_a_namespace_reads_that_namespaces_links() -> None:
    """A process that joined a network namespace but kept its mount namespace (``nsenter
    --net``, ``setns()``: pyroute2, test labs) sees the ``/sys/class/net`` of where it came
    from: there ``q0`` is down, in the namespace it entered ``q0`` is up.  Its address is
    gathered (it was left out, sysfs read for the wrong namespace)."""
    require_natlab(turn=False)
    with lone_namespace("netwatch-from") as came_from, lone_namespace("netwatch-to") as into:
        came_from.ip("link", "add", "q0", "type", "veth", "peer", "name", "q1")  # (down)
        into.ip("link", "add", "q0", "type", "veth", "peer", "name", "q1")
        into.ip("addr", "add", "198.51.100.9/24", "dev", "q0")
        into.ip("link", "set", "q1", "up")
        into.ip("link", "set", "q0", "up")
        entered = ["nsenter", f"--net=/run/netns/{into.name}", sys.executable, "-c", HOSTS]
        assert json.loads(came_from.check_output(entered)) == ["198.51.100.9"]


async def _watch(
    seen: list[tuple[float, tuple[str, ...]]], network: trice.NetworkConfig, **kwargs: Any
) -> None:
    """Each value of ``address_changes(network, **kwargs)``, with the time it came."""
    changes = trice.address_changes(network, **kwargs)
    async with contextlib.aclosing(changes):
        async for addresses in changes:
            seen.append((trio.current_time(), addresses))


@contextlib.asynccontextmanager
async def _watching(
    network: trice.NetworkConfig, **kwargs: Any
) -> AsyncIterator[list[tuple[float, tuple[str, ...]]]]:
    """A watch of ``network`` (``interval=1.0`` unless given) in a task of its own while the
    block runs: yields the list of what it says (see :func:`_watch`)."""
    seen: list[tuple[float, tuple[str, ...]]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(_watch, seen, network, **{"interval": 1.0, **kwargs}))
        yield seen
        nursery.cancel_scope.cancel()


async def test_address_changes_says_when_the_addresses_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``trice.address_changes`` reads the interfaces every ``interval`` (virtual seconds
    here) and says nothing while nothing changes; once the addresses the filters take
    change (127.0.0.1 goes, then comes back), the next reading says so, with the
    addresses of then."""
    allowed = {"127.0.0.1"}
    async with _watching(filtered_config(allowed).network) as seen:
        await trio.sleep(3.5)
        assert seen == []
        allowed.clear()  # (at 3.5 s: read at 4 s)
        await trio.sleep(2.0)
        allowed.add("127.0.0.1")  # (at 5.5 s: read at 6 s)
        await trio.sleep(2.0)
    assert seen == [(4.0, ()), (6.0, ("127.0.0.1",))]


@pytest.mark.parametrize("interval", [0, 0.01, -1, float("inf"), float("nan"), True, "2"])
def test_address_changes_wants_an_interval_of_a_tenth_or_more(interval: object) -> None:
    """Said at the call, where the mistake is (not at the first value)."""
    with pytest.raises(trice.ConfigError, match=r"interval must be a number >= 0\.1"):
        trice.address_changes(interval=interval)  # type: ignore[arg-type]


async def test_without_the_kernels_notices_the_interfaces_are_polled(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no notice socket can be had (not Linux, netlink not allowed), the interfaces are
    read every ``interval``: a change made at 2.5 s is seen at 3 s."""
    monkeypatch.setattr(_netwatch, "address_notices", lambda **_: None)
    allowed = {"127.0.0.1"}
    async with _watching(filtered_config(allowed).network) as seen:
        await trio.sleep(2.5)
        allowed.clear()
        await trio.sleep(2.0)
    assert seen == [(3.0, ())]


async def test_a_new_address_that_cannot_be_bound_yet_is_held_back(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address the interfaces list but no socket can be bound to (198.51.100.99 is on no
    interface of this machine: ``EADDRNOTAVAIL``, as for a tentative IPv6 address) is not
    said to have come, while another that came with it (127.0.0.2) is; it comes once it
    can be bound.  One still listed that can no longer be bound is said gone."""
    listed = ["127.0.0.1"]
    can_bind = {"127.0.0.1", "127.0.0.2"}

    def adapters(newer_than: float = 0.0) -> list[tuple[str, list[_Found]]]:
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
    async with _watching(network) as seen:
        await trio.sleep(0.5)
        listed.extend(["198.51.100.99", "127.0.0.2"])
        await trio.sleep(2.0)  # (read at 1 s and 2 s)
        can_bind.add("198.51.100.99")  # (as when detection is over)
        await trio.sleep(1.0)  # (read at 3 s)
        can_bind.discard("127.0.0.2")  # (still listed: as when detection starts again)
        await trio.sleep(1.0)  # (read at 4 s)
    assert seen == [
        (1.0, ("127.0.0.1", "127.0.0.2")),
        (3.0, ("127.0.0.1", "127.0.0.2", "198.51.100.99")),
        (4.0, ("127.0.0.1", "198.51.100.99")),
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


@pytest.mark.parametrize("how", ["break", "cancel-while-it-waits", "cancel-in-the-loop"])
async def test_the_notice_socket_is_closed_when_the_watch_ends(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket the watch holds is closed when its loop is left inside
    ``contextlib.aclosing``: by a ``break``, or by a cancellation while the loop's body
    waits (the generator paused at its ``yield``); and when its task is cancelled while the
    watch itself waits."""
    opened: list[socket.socket | None] = []
    real = _netwatch.address_notices

    def notices(*, links: bool = False) -> socket.socket | None:
        opened.append(real(links=links))
        return opened[-1]

    monkeypatch.setattr(_netwatch, "address_notices", notices)
    read = trio.Event()
    real_hosts = _gather.host_addresses

    def hosts(*args: Any, **kwargs: Any) -> list[_gather.HostAddress]:
        found = real_hosts(*args, **kwargs)
        read.set()
        return found

    monkeypatch.setattr(_netwatch, "host_addresses", hosts)
    allowed = {"127.0.0.1"}
    network = filtered_config(allowed).network

    async def change() -> None:
        # (Once the watch has its first addresses: the read of the interfaces goes to a
        # thread, and the filter changed during it was seen in them, which then never
        # changed: the watch timed out, on a loaded machine, in CI.)
        await read.wait()
        allowed.clear()  # (seen at the next poll)

    async def watch(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        changes = trice.address_changes(network, interval=0.1)
        async with contextlib.aclosing(changes):
            async for addresses in changes:
                assert addresses == ()
                assert opened[0] is None or opened[0].fileno() != -1
                if how == "break":
                    break
                task_status.started()
                await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(change)
            if how == "break":
                await watch()
            elif how == "cancel-in-the-loop":
                await nursery.start(watch)
                nursery.cancel_scope.cancel()
            else:

                async def waiting() -> None:
                    async for _ in trice.address_changes(network):
                        pass

                nursery.start_soon(waiting)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
    if sys.platform.startswith("linux"):
        assert opened and opened[0] is not None
    assert all(sock is None or sock.fileno() == -1 for sock in opened)


async def _watch_forever(network: trice.NetworkConfig) -> None:
    """Watch ``network``'s addresses, taking no notice of what is said."""
    async for _ in trice.address_changes(network):
        pass


def _socketpair_notices(
    monkeypatch: pytest.MonkeyPatch, kind: type[socket.socket] = socket.socket
) -> list[socket.socket]:
    """Each watch's notice socket becomes one end of a socket pair (of ``kind``); the other
    ends, listed, stand for the kernel: a datagram sent there is a notice."""
    kernel: list[socket.socket] = []

    def notices(*, links: bool = False) -> socket.socket:
        here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        watched = kind(fileno=here.detach())
        watched.setblocking(False)
        kernel.append(there)
        return watched

    monkeypatch.setattr(_netwatch, "address_notices", notices)
    return kernel


class _ReadCount:
    """How many times the interfaces were read (``ifaddr.get_adapters``)."""

    def __init__(self) -> None:
        self.count = 0


def _counted_reads(monkeypatch: pytest.MonkeyPatch) -> _ReadCount:
    """Count each read of the interfaces from now on."""
    reads = _ReadCount()
    real = ifaddr.get_adapters

    def get_adapters() -> Any:
        reads.count += 1
        return real()

    monkeypatch.setattr(ifaddr, "get_adapters", get_adapters)
    return reads


@pytest.mark.parametrize("burst", [False, True], ids=["one-notice", "a-burst"])
async def test_one_read_of_the_interfaces_serves_every_watch_a_notice_woke(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, burst: bool
) -> None:
    """Ten watches woken by the same notice read the interfaces once between them (each
    wants a read made after the last notice it drained; the first one made serves all);
    also when the burst's last notice comes 10 ms after the first, while they settle (an
    interface coming up: its addresses' notices over some milliseconds)."""
    kernel = _socketpair_notices(monkeypatch)
    reads = _counted_reads(monkeypatch)
    network = trice.NetworkConfig(interface_filter=lambda name: name == "lo")
    watch = functools.partial(_watch_forever, network)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            reads.count = 0
            for end in kernel:
                end.send(b"notice")
            if burst:
                await trio.sleep(0.01)  # (within the settle)
                for end in kernel:
                    end.send(b"the burst's last notice")
            await trio.sleep(1.0)  # (the poll is 2 s off)
            assert reads.count == 1
            nursery.cancel_scope.cancel()
    finally:
        for end in kernel:
            end.close()


class _FailsOnce(socket.socket):
    """A notice socket whose first read fails (ENOMEM, say), then reads as it should."""

    failed = False

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        if not type(self).failed:
            type(self).failed = True
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return super().recv_into(*args, **kwargs)


@pytest.mark.parametrize("fails_once", [False, True], ids=["reads", "a-read-fails"])
async def test_a_change_noticed_while_the_watch_settles_is_not_served_an_older_read(
    monkeypatch: pytest.MonkeyPatch, fails_once: bool
) -> None:
    """A notice wakes the watch; while it settles, an agent opens and gathers (a fresh read
    of the interfaces), then an address comes, and its notice with it: the watch drains
    both notices and must read again, not take the agent's read, made before that change
    (which went unsaid until the poll, an hour off here).  Also when the read at the
    wake-up failed, and the watch tried again at the settle's end."""
    listed = ["127.0.0.1"]

    def get_adapters(**_: object) -> list[ifaddr.Adapter]:
        ips = [ifaddr.IP(address, 8, "lo") for address in listed]
        return [ifaddr.Adapter("lo", "lo", ips, index=1)]

    monkeypatch.setattr(ifaddr, "get_adapters", get_adapters)
    _gather.forget_adapters()
    _FailsOnce.failed = False
    kernel = _socketpair_notices(monkeypatch, _FailsOnce if fails_once else socket.socket)
    network = trice.NetworkConfig(include_loopback=True, interface_filter=lambda n: n == "lo")
    seen: list[tuple[str, ...]] = []

    async def watch() -> None:
        async with contextlib.aclosing(trice.address_changes(network, interval=3600)) as changes:
            async for addresses in changes:
                seen.append(addresses)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            (end,) = kernel
            await trio.sleep(1.1)  # (the watch's first read is kept no more)
            end.send(b"a notice of no change the filter takes")
            await trio.sleep(0.01)  # (the watch woke, and settles for 50 ms)
            config = trice.AgentConfig(network=network)
            async with trice.open_agent(config, controlling=True) as agent:
                await agent.wait_gathering_complete()  # (a read of the interfaces)
            listed.append("127.0.0.2")
            end.send(b"its notice")  # (still within the settle)
            with trio.fail_after(2):
                while not seen:
                    await trio.testing.wait_all_tasks_blocked(0.01)
            nursery.cancel_scope.cancel()
    finally:
        for end in kernel:
            end.close()
    assert seen == [("127.0.0.1", "127.0.0.2")]
    assert _FailsOnce.failed is fails_once


async def test_the_watch_reads_the_interfaces_afresh_as_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent read the interfaces a moment ago (a read is kept a second), then an address
    came, then the watch starts: its first value is read afresh (it was the read of a
    moment ago, and the address went unsaid until the next poll: never, with a long
    interval)."""
    monkeypatch.setattr(_netwatch, "address_notices", lambda **_: None)
    _gather.forget_adapters()
    _gather._adapters()  # (what the agent read)
    reads = _counted_reads(monkeypatch)
    network = trice.NetworkConfig(interface_filter=lambda name: name == "lo")
    async with contextlib.aclosing(
        trice.address_changes(network, initial=True, interval=3600)
    ) as changes:
        await changes.__anext__()
    assert reads.count == 1


@given(st.binary(max_size=200), st.dictionaries(st.integers(-5, 20), st.text(max_size=5)))
def test_any_bytes_are_news_or_not_and_never_raise(data: bytes, names: dict[int, str]) -> None:
    """Whatever a read brings (the kernel's, truncated or garbled), parsing it says news or
    not, and raises nothing."""
    assert _netwatch._link_news(memoryview(data), dict(names)) in (True, False)


@given(st.lists(st.tuples(st.integers(1, 9), st.sampled_from(["v0", "w0", "lan"])), max_size=6))
def test_link_notices_read_together_are_news_if_any_renames(
    links: list[tuple[int, str]],
) -> None:
    names = {i: "v0" for i in range(1, 10)}
    expected = any(name != "v0" for _, name in links)
    data = b"".join(_link_notice(index, name) for index, name in links)
    assert _netwatch._link_news(memoryview(data), names) is expected


async def test_link_notices_that_rename_nothing_read_no_interfaces(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy link (a hundred notices of loopback's, its name unchanged) wakes the watch
    but reads the interfaces not once (each read them: some 20 reads a second); a notice
    that renames an interface does."""
    kernel = _socketpair_notices(monkeypatch)
    reads = _counted_reads(monkeypatch)
    network = trice.NetworkConfig(interface_filter=lambda name: name == "lo")
    lo = socket.if_nametoindex("lo")

    async def watch() -> None:
        async for _ in trice.address_changes(network, interval=3600):
            pass

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            (end,) = kernel
            reads.count = 0
            for _ in range(100):
                end.send(_link_notice(lo, "lo"))
                await trio.sleep(0.1)
            assert reads.count == 0
            end.send(_link_notice(lo, "renamed"))
            await trio.sleep(0.1)
            assert reads.count == 1
            nursery.cancel_scope.cancel()
    finally:
        for end in kernel:
            end.close()


class _Failing(socket.socket):
    """A notice socket whose every read fails (``EIO``)."""

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")


async def test_a_notice_socket_whose_reads_keep_failing_is_given_up_for_the_poll(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A notice socket that stays readable while each read fails would wake the watch for
    good: after three such wake-ups (at 0.05, 0.10 and 0.15 s) the watch closes it and
    polls, and sees a change at the next poll (1.15 s)."""
    kernel = _socketpair_notices(monkeypatch, _Failing)
    allowed = {"127.0.0.1"}
    try:
        async with _watching(filtered_config(allowed).network) as seen:
            await trio.testing.wait_all_tasks_blocked()
            (kernel_end,) = kernel
            kernel_end.send(b"readable for good")
            await trio.sleep(0.5)
            allowed.clear()
            await trio.sleep(1.0)
    finally:
        for end in kernel:
            end.close()
    assert [(round(at, 6), addresses) for at, addresses in seen] == [(1.15, ())]
    assert "the kernel's notices cannot be read; polling" in caplog.text


class _Reads:
    """A notice socket whose reads do as told: raise the error given, or take a notice."""

    def __init__(self, *outcomes: int | None) -> None:
        self.outcomes = list(outcomes)

    def recv_into(self, buffer: bytearray) -> int:
        outcome = self.outcomes.pop(0)
        if outcome is None:
            return 20
        if outcome == errno.EAGAIN:
            raise BlockingIOError(outcome, "would block")
        raise OSError(outcome, "failed")


@pytest.mark.parametrize(
    ("outcomes", "healthy"),
    [
        ((None, None, errno.EAGAIN), True),
        ((errno.ENOBUFS, None, errno.EAGAIN), True),  # (notices dropped: a change too)
        ((None, errno.EIO), False),
    ],
)
def test_drain_reads_what_is_queued_and_says_whether_the_socket_works(
    outcomes: tuple[int | None, ...], healthy: bool
) -> None:
    reads = _Reads(*outcomes)
    assert _netwatch._drain(reads) == (healthy, True)  # type: ignore[arg-type]
    assert reads.outcomes == []


class _Queue:
    """A notice socket whose queue the kernel keeps full: ENOBUFS once, then a first-in
    first-out ``queue`` refilled with ``filler``, so that it never reads empty (a steady
    flood); a change's notice goes to the end of the queue, as the kernel queues it."""

    def __init__(self, filler: bytes, backlog: int = 600) -> None:
        self.filler = filler
        self.queue: collections.deque[bytes] = collections.deque([filler] * backlog)
        self.first = True

    def recv_into(self, buffer: bytearray) -> int:
        if self.first:
            self.first = False
            raise OSError(errno.ENOBUFS, "No buffer space available")
        data = self.queue.popleft()
        self.queue.append(self.filler)  # (the flood goes on)
        buffer[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("goes", ["down", "up-again"])
def test_a_link_change_queued_behind_a_flood_that_never_empties_is_news(
    monkeypatch: pytest.MonkeyPatch, goes: str
) -> None:
    """After ENOBUFS, v0 (index 7) is set down (or, set down among the notices dropped, up
    again) while a flood keeps 600 notices queued before its notice.  The drains that end
    before reaching it read the links afresh (the queue is never read empty): the change
    is news there, not swallowed by that read, which would make its notice, read later,
    no news (and the change unsaid until the poll)."""
    state = {"up": True}
    monkeypatch.setattr(_netwatch, "_link_names", lambda: {1: "lo", 7: "v0"})
    monkeypatch.setattr(_netwatch, "link_up", lambda name: name == "lo" or state["up"])
    links = _netwatch._Links()
    flood = _Queue(_link_notice(1, "lo"))
    if goes == "up-again":
        state["up"] = False  # (its down notice among those dropped)
    assert _netwatch._drain(flood, links) == (True, True)  # type: ignore[arg-type]
    assert links.stale
    state["up"] = not state["up"]
    flood.queue.append(_link_notice(7, "v0", up=state["up"]))
    assert _netwatch._drain(flood, links)[1]  # type: ignore[arg-type]


class _Interleaved:
    """A notice socket whose one read writes ``notice`` to the buffer once ``turn`` is
    set, then sets ``wrote``, and returns once ``back`` is set: another thread's read may
    write meanwhile, into the same buffer if they share one."""

    def __init__(
        self, notice: bytes, turn: threading.Event, wrote: threading.Event, back: threading.Event
    ) -> None:
        self.notice: bytes | None = notice
        self.turn, self.wrote, self.back = turn, wrote, back

    def recv_into(self, buffer: bytearray) -> int:
        notice, self.notice = self.notice, None
        if notice is None:
            raise BlockingIOError(errno.EAGAIN, "would block")
        self.turn.wait(5)
        buffer[: len(notice)] = notice
        self.wrote.set()
        self.back.wait(5)
        return len(notice)


def test_watches_of_trio_runs_in_two_threads_read_their_own_notices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two threads drain at once (two trio runs, each with a watch): a's notice (interface
    7 named a0) is written, then b's (8, b0), before a's read returns.  Each reads the
    notice its own socket gave (they shared one buffer, and a's parsed b's)."""
    monkeypatch.setattr(_netwatch, "_link_names", dict)
    ready, a_wrote, b_wrote = threading.Event(), threading.Event(), threading.Event()
    ready.set()
    drains = {
        "a": (_Interleaved(_link_notice(7, "a0"), ready, a_wrote, b_wrote), _netwatch._Links()),
        "b": (_Interleaved(_link_notice(8, "b0"), a_wrote, b_wrote, ready), _netwatch._Links()),
    }
    threads = [threading.Thread(target=_netwatch._drain, args=drains[name]) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert drains["a"][1].names == {7: "a0"} and drains["b"][1].names == {8: "b0"}


class _ReadableButEmpty(socket.socket):
    """A notice socket that the poller says is readable, whose reads say EAGAIN."""

    reads = 0

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        type(self).reads += 1
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")


async def test_a_readable_socket_whose_reads_say_eagain_does_not_busy_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch drains the notices that come as it settles as they come; a socket that
    stays readable but yields nothing is not read again and again for the settle (some
    18,800 reads a second; under MockClock's autojump, virtual time stood still)."""
    kernel = _socketpair_notices(monkeypatch, _ReadableButEmpty)
    network = trice.NetworkConfig(interface_filter=lambda name: name == "lo")
    watch = functools.partial(_watch_forever, network)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            _ReadableButEmpty.reads = 0
            kernel[0].send(b"notice")  # (never read: the socket stays readable)
            start = time.monotonic()
            await trio.sleep(0.5)
            rate = _ReadableButEmpty.reads / (time.monotonic() - start)
            nursery.cancel_scope.cancel()
    finally:
        for end in kernel:
            end.close()
    assert rate < 200, f"{rate:.0f} reads a second"


def _link_notice(index: int, name: str, kind: int = 16, *, up: bool = True) -> bytes:
    """An RTM_NEWLINK (or ``kind``) notice for interface ``index`` named ``name``, up and
    running (``IFF_UP | IFF_RUNNING``) or, with ``up=False``, set down."""
    value = name.encode() + b"\0"
    attribute = struct.pack("=HH", 4 + len(value), 3) + value
    attribute += b"\0" * (-len(attribute) % 4)
    flags = 0x41 if up else 0
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0) + attribute
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def _address_notice() -> bytes:
    """An RTM_NEWADDR notice (what it says does not matter)."""
    body = struct.pack("=BBBBi", 2, 24, 0, 0, 7)
    return struct.pack("=IHHII", 16 + len(body), 20, 0, 0, 0) + body


@pytest.mark.parametrize(
    ("notices", "news", "after"),
    [
        ([_link_notice(7, "v0")], False, {7: "v0", 8: "w0"}),  # (flags, MTU: same name)
        ([_link_notice(7, "lan")], True, {7: "lan", 8: "w0"}),  # (renamed)
        ([_link_notice(9, "new")], True, {7: "v0", 8: "w0", 9: "new"}),  # (new here)
        ([_link_notice(8, "w0", kind=17)], False, {7: "v0"}),  # (gone: addresses tell)
        ([_address_notice()], True, {7: "v0", 8: "w0"}),
        ([_link_notice(7, "v0"), _address_notice()], True, {7: "v0", 8: "w0"}),
        ([_link_notice(7, "v0")[:20]], True, {7: "v0", 8: "w0"}),  # (truncated: news)
        ([b"notice"], True, {7: "v0", 8: "w0"}),
    ],
)
def test_with_an_interface_filter_a_link_notice_is_news_only_if_it_renames(
    notices: list[bytes], news: bool, after: dict[int, str]
) -> None:
    """Link notices come often (carrier, MTU, flags): the watch reads the interfaces again
    only for one that renames an interface (or names one new), as a rename may change what
    the filter takes.  Several notices in one read count together."""
    names = {7: "v0", 8: "w0"}
    assert _netwatch._link_news(memoryview(b"".join(notices)), names) is news
    assert names == after


@pytest.mark.parametrize(
    ("notices", "news", "down_after"),
    [
        ([_link_notice(7, "v0")], False, {8}),  # (up, as it was)
        ([_link_notice(7, "v0", up=False)], True, {7, 8}),  # (set down)
        ([_link_notice(8, "w0")], True, set()),  # (up again)
        ([_link_notice(8, "w0", up=False)], False, {8}),  # (still down)
        ([_link_notice(8, "w0", kind=17)], False, set()),  # (gone)
    ],
)
def test_a_link_notice_that_takes_an_interface_up_or_down_is_news(
    notices: list[bytes], news: bool, down_after: set[int]
) -> None:
    """An interface down keeps its IPv4 addresses, which gathering no longer takes: a link
    notice that sets one down, or up again (``IFF_UP``), is news; one that leaves it as it
    was is not."""
    down = {8}
    names = {7: "v0", 8: "w0"}
    assert _netwatch._link_news(memoryview(b"".join(notices)), names, down) is news
    assert down == down_after


async def test_with_initial_the_first_value_is_the_addresses_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``initial=True``: the first value comes at once (at 0 s), with the addresses as the
    watch starts; then only changes."""
    allowed = {"127.0.0.1"}
    async with _watching(filtered_config(allowed).network, initial=True) as seen:
        await trio.sleep(2.5)
        allowed.clear()
        await trio.sleep(1.0)
    assert seen == [(0.0, ("127.0.0.1",)), (3.0, ())]


def test_trice_gather_watch_gathers_anew_when_an_address_comes_or_goes() -> None:
    """``trice gather --watch`` on an interface with no address yet (in a namespace of the
    test's own): nothing gathered; an address comes, and it gathers anew, a host candidate
    there; the address goes, and it gathers anew, nothing."""
    require_natlab(turn=False)
    with lone_namespace("gather-watch") as ns:
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "set", "v0", "up")
        ns.ip("link", "set", "v1", "up")
        command = [sys.executable, "-m", "trice", "gather", "--interface", "v0", "--watch"]
        lines = JsonLines(
            ns.run([*command, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )

        def gathered() -> list[Any]:
            """The events of one gathering, to its host report."""
            events: list[Any] = []
            while not events or events[-1]["event"] != "source":
                events.append(lines.next(20))
            return events

        first = gathered()
        assert [e["event"] for e in first] == ["none", "source"]
        assert first[-1]["error"] == "no usable local address (check the filters)"

        ns.ip("addr", "add", "198.51.100.7/24", "dev", "v0")
        anew = gathered()
        assert anew[0] == {"event": "addresses", "addresses": ["198.51.100.7"]}
        candidates = [e for e in anew if e["event"] == "candidate"]
        assert [(c["type"], c["address"]) for c in candidates] == [("host", "198.51.100.7")]
        assert anew[-1]["candidates"] == 1 and anew[-1]["error"] is None

        ns.ip("addr", "del", "198.51.100.7/24", "dev", "v0")
        gone = gathered()
        assert gone[0] == {"event": "addresses", "addresses": []}
        assert [e["event"] for e in gone[1:]] == ["none", "source"]


def _listed_adapters(
    monkeypatch: pytest.MonkeyPatch,
    listed: list[str],
    failures: list[int],
    error: Exception | None = None,
) -> None:
    """The interfaces are ``lo`` with the addresses ``listed`` (as they are when read);
    while ``failures[0]`` is above 0, a read fails (and counts it down): with ``error``, or
    for want of descriptors, as ifaddr's netlink socket does then."""

    def get_adapters(**_: object) -> list[ifaddr.Adapter]:
        if failures[0] > 0:
            failures[0] -= 1
            raise error or OSError(errno.EMFILE, "Too many open files")
        return [ifaddr.Adapter("lo", "lo", [ifaddr.IP(a, 8, "lo") for a in listed], index=1)]

    monkeypatch.setattr(ifaddr, "get_adapters", get_adapters)
    _gather.forget_adapters()


def _polled_lo(
    monkeypatch: pytest.MonkeyPatch,
    listed: list[str],
    failures: list[int],
    error: Exception | None = None,
) -> AsyncGenerator[tuple[str, ...], None]:
    """A watch of ``lo`` (as :func:`_listed_adapters` fakes it) without the kernel's
    notices, polling every tenth of a second, with its first value at once."""
    monkeypatch.setattr(_netwatch, "address_notices", lambda **_: None)
    _listed_adapters(monkeypatch, listed, failures, error)
    network = trice.NetworkConfig(include_loopback=True, interface_filter=lambda n: n == "lo")
    return trice.address_changes(network, interval=0.1, initial=True)


async def test_a_poll_reads_the_interfaces_afresh_within_its_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the kernel's notices, a watch polls every ``interval``: a read older than
    that does not serve (a read is kept a second, here for an hour: with an interval of a
    tenth, a change had been seen only once the kept read expired)."""
    monkeypatch.setattr(_gather, "_ADAPTERS_TTL", 3600.0)
    listed = ["127.0.0.1"]
    async with contextlib.aclosing(_polled_lo(monkeypatch, listed, [0])) as changes:
        assert await changes.__anext__() == ("127.0.0.1",)
        listed.append("127.0.0.2")
        with trio.fail_after(5):
            assert await changes.__anext__() == ("127.0.0.1", "127.0.0.2")


async def test_a_watch_goes_on_through_a_moment_without_descriptors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading the interfaces takes a descriptor (a netlink socket): three polls find none,
    each logged, and the watch goes on to say the change (it had ended, with a bare
    OSError)."""
    listed = ["127.0.0.1"]
    failures = [0]
    async with contextlib.aclosing(_polled_lo(monkeypatch, listed, failures)) as changes:
        assert await changes.__anext__() == ("127.0.0.1",)
        listed.append("127.0.0.2")
        failures[0] = 3
        with trio.fail_after(5):
            assert await changes.__anext__() == ("127.0.0.1", "127.0.0.2")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    said = (
        "address changes: out of file descriptors: the interfaces cannot be read (raise the "
        "limit, ulimit -n / resource.setrlimit, or run fewer agents); trying again"
    )
    assert warnings == [said] * 3


async def test_a_watch_goes_on_through_a_read_ifaddr_fails_of_its_own(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ifaddr asserts (an address whose netmask getifaddrs left out, for a moment): the
    poll logs it and goes on, as for any read that fails (the error ended the watch: the
    errorpaths review)."""
    listed = ["127.0.0.1"]
    failures = [0]
    error = AssertionError("sockaddr_to_ip(<LP_sockaddr>) returned None")
    async with contextlib.aclosing(_polled_lo(monkeypatch, listed, failures, error)) as changes:
        assert await changes.__anext__() == ("127.0.0.1",)
        listed.append("127.0.0.2")
        failures[0] = 2
        with trio.fail_after(5):
            assert await changes.__anext__() == ("127.0.0.1", "127.0.0.2")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "ifaddr cannot read the interfaces" in warnings[0]


async def test_a_restart_that_cannot_read_the_interfaces_raises_limit_error_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = [0]
    _listed_adapters(monkeypatch, ["127.0.0.1"], failures)
    network = trice.NetworkConfig(include_loopback=True, interface_filter=lambda n: n == "lo")
    async with trice.open_agent(trice.AgentConfig(network=network), controlling=True) as agent:
        await agent.wait_gathering_complete()
        before = agent.local_parameters
        failures[0] = 1
        _gather.forget_adapters()
        with pytest.raises(trice.LimitError, match="out of file descriptors"):
            agent.restart(regather=True)
        assert agent.local_parameters == before
        assert agent.connection_state is trice.ConnectionState.NEW


async def test_a_watch_reads_slow_interfaces_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch's reads of the interfaces, where they are slow, go to a worker thread too:
    a watch held the event loop for each (up to 303 ms on a host of 300 interfaces)."""
    readers = slow_interface_reads(monkeypatch)
    steps = LongestStep()
    trio.lowlevel.add_instrument(steps)
    try:
        network = loopback_config().network
        async with contextlib.aclosing(trice.address_changes(network, initial=True)) as watch:
            with trio.fail_after(5):
                first = await watch.__anext__()
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert first == ("127.0.0.1",)
    assert steps.longest < 0.1, steps.longest
    # (And, whatever the machine's load: every read was made off the event loop's thread.)
    assert readers and threading.main_thread().name not in readers, readers


async def test_a_filters_own_error_ends_the_watch() -> None:
    """What the user's filter raises on a later read ends the watch, as at the first (a
    watch that takes every TriceError for a passing shortage logged "trying again" for
    ever); only a descriptor short or a name ifaddr cannot read is tried again."""
    calls = 0

    def interface_filter(name: str) -> bool:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise trice.ConfigError("the filter's own error")
        return name == "lo"

    network = trice.NetworkConfig(
        interface_filter=interface_filter, include_loopback=True, ipv6=False
    )
    with pytest.raises(trice.ConfigError, match="filter's own"), trio.fail_after(3):
        async with contextlib.aclosing(
            trice.address_changes(network, interval=0.1, initial=True)
        ) as changes:
            async for _ in changes:
                pass
