"""mDNS across network changes, with the kernel's own group memberships: two namespaces of
the test's own joined by a veth pair, an ``Mdns`` answering in one (as an agent's does),
another asking from the other.  The interface is renumbered, then made anew with the same
address; after each, ``Mdns.follow_links`` (what a gathering anew calls) keeps the names
answered, and no membership outlives the socket.  (Links in the small, with a socket that
only records: ``test_mdns_links.py``.)"""

from __future__ import annotations

import json
import subprocess
import sys

from test_netwatch import JsonLines

from natlab import Namespace, lone_namespace, require_natlab

# Answers for names, and follows the links when told (standard input: "name ADDRESS",
# "follow"); each command's result is a JSON line.
ANSWERING = """
import json, trio, trice
from trice._trio._gather import forget_adapters
from trice._trio._mdns import open_mdns

network = trice.NetworkConfig(interface_filter=lambda name: name == "v0")

async def main():
    mdns = open_mdns(network, trio.current_time)
    stdin = trio.lowlevel.FdStream(0)
    pending = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mdns.serve)
        print(json.dumps([link[0] for link in mdns._links]), flush=True)
        while True:
            while b"\\n" not in pending:
                chunk = await stdin.receive_some()
                if not chunk:
                    nursery.cancel_scope.cancel()
                    return
                pending += chunk
            line, pending = pending.split(b"\\n", 1)
            command, *args = line.decode().split()
            if command == "name":
                print(json.dumps(mdns.name(args[0])), flush=True)
            else:
                forget_adapters()
                mdns.follow_links(network)
                print(json.dumps([link[0] for link in mdns._links]), flush=True)

trio.run(main)
"""

# Resolves one name from interface v1, for up to 3 s: the addresses found, as JSON.
ASKING = """
import json, sys, trio, trice
from trice._trio._mdns import open_mdns

async def main():
    network = trice.NetworkConfig(interface_filter=lambda name: name == "v1")
    mdns = open_mdns(network, trio.current_time)
    found = ()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mdns.serve)
        with trio.move_on_after(3):
            found = await mdns.resolve(sys.argv[1])
        nursery.cancel_scope.cancel()
    print(json.dumps(list(found)))

trio.run(main)
"""


def _link(a: Namespace, b: Namespace, a_address: str, b_address: str) -> None:
    """A veth pair: v0 in ``a``, v1 in ``b``, with these addresses, up."""
    a.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b.name)
    a.ip("addr", "add", a_address, "dev", "v0")
    b.ip("addr", "add", b_address, "dev", "v1")
    a.ip("link", "set", "v0", "up")
    b.ip("link", "set", "v1", "up")


def _resolve(b: Namespace, name: str, interface: str = "v1") -> list[str]:
    """``name`` resolved from ``interface`` of ``b``: the addresses found."""
    asking = ASKING.replace('name == "v1"', f"name == {interface!r}")
    out = b.check_output([sys.executable, "-c", asking, name], timeout=20)
    result: list[str] = json.loads(out)
    return result


class _Answering:
    """``ANSWERING`` running in ``a`` on the interfaces ``accepted`` (a Python expression of
    ``name``): :meth:`tell` gives it a command and returns its answer."""

    def __init__(self, a: Namespace, accepted: str = 'name == "v0"') -> None:
        script = ANSWERING.replace('name == "v0"', accepted)
        self.proc = a.run(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = JsonLines(self.proc)

    def tell(self, command: str) -> object:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.out.next(20)

    def end(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def test_names_stay_answered_when_the_interface_is_renumbered_or_made_anew() -> None:
    require_natlab(turn=False)
    with lone_namespace("mdns-a") as a, lone_namespace("mdns-b") as b:
        _link(a, b, "10.0.0.5/24", "10.0.0.6/24")
        answering = _Answering(a)
        tell = answering.tell
        assert answering.out.next(20) == ["10.0.0.5"]
        first = tell("name 10.0.0.5")
        assert _resolve(b, str(first)) == ["10.0.0.5"]

        # Renumbered: the same interface, another address and network.
        a.ip("addr", "del", "10.0.0.5/24", "dev", "v0")
        a.ip("addr", "add", "10.1.0.5/24", "dev", "v0")
        b.ip("addr", "add", "10.1.0.6/24", "dev", "v1")
        assert tell("follow") == ["10.1.0.5"]
        second = tell("name 10.1.0.5")
        assert _resolve(b, str(second)) == ["10.1.0.5"]
        assert _resolve(b, str(first)) == []  # (its address went)

        # Made anew (another index), with the same address.
        a.ip("link", "del", "v0")
        _link(a, b, "10.1.0.5/24", "10.1.0.6/24")
        assert tell("follow") == ["10.1.0.5"]
        assert _resolve(b, str(second)) == ["10.1.0.5"]

        answering.end()
        # No membership of 224.0.0.251 (FB0000E0 in /proc/net/igmp) is left on v0.
        igmp = a.check_output(["cat", "/proc/net/igmp"])
        device = ""
        for line in igmp.splitlines():
            if not line.startswith("\t"):
                device = line.split()[1] if len(line.split()) > 1 else ""
            elif device == "v0":
                assert "FB0000E0" not in line, igmp


def test_past_the_systems_memberships_a_socket_another_socket_joins_the_next_links() -> None:
    """Linux lets one socket join as many groups as ``net.ipv4.igmp_max_memberships``
    allows (20 by default; 2 here, in the test's namespace): the links past them are
    joined by other sockets, read alike, and a name on each is answered (the joins failed,
    ENOBUFS: those links' names were answered nowhere).  A link that comes later is joined
    too, and one that goes is left by the socket that joined it."""
    require_natlab(turn=False)
    with lone_namespace("mdns-many-a") as a, lone_namespace("mdns-many-b") as b:
        a.sysctl("net.ipv4.igmp_max_memberships=2")

        def link(i: int) -> None:
            a.ip("link", "add", f"v{i}", "type", "veth", "peer", "name", f"w{i}", "netns", b.name)
            a.ip("addr", "add", f"10.60.{i}.1/24", "dev", f"v{i}")
            b.ip("addr", "add", f"10.60.{i}.2/24", "dev", f"w{i}")
            a.ip("link", "set", f"v{i}", "up")
            b.ip("link", "set", f"w{i}", "up")

        for i in range(5):
            link(i)
        answering = _Answering(a, 'name[:1] == "v"')
        tell = answering.tell

        def resolve(name: object, i: int) -> list[str]:
            return _resolve(b, str(name), f"w{i}")

        assert answering.out.next(20) == [f"10.60.{i}.1" for i in range(5)]
        names = [tell(f"name 10.60.{i}.1") for i in range(5)]
        for i in range(5):
            assert resolve(names[i], i) == [f"10.60.{i}.1"], i
        link(5)
        a.ip("link", "del", "v3")
        assert tell("follow") == [f"10.60.{i}.1" for i in (0, 1, 2, 4, 5)]
        assert resolve(tell("name 10.60.5.1"), 5) == ["10.60.5.1"]
        assert resolve(names[4], 4) == ["10.60.4.1"]
        answering.end()
