"""Platforms other than Linux, simulated on Linux: a socket module without Linux's constants,
Windows' errors and ifaddr's Windows-shaped adapters, macOS's loopback name.  Each test says
what a user on that platform would meet."""

from __future__ import annotations

import _socket
import dataclasses
import errno
import os
import socket
import subprocess
import sys
import textwrap

import ifaddr
import pytest
import trio
from test_relay import HANG_GUARD, SLOW_PATH, Inbox, start_relay

import trice
from trice._servers import ServerUrl
from trice._trio import _gather, _mdns, _transport
from trice.mdns import is_mdns_name
from trice.turn import AllocationError

from loopback import connect_both, loopback_config, signal
from natlab import lone_namespace, require_natlab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_python(source: str, *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``source`` (a template of this file's, ``{root}`` the repository) in a Python
    process of its own: a platform simulated there stays there."""
    return subprocess.run(
        [sys.executable, "-c", source.format(root=ROOT)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_mdns_works_where_the_socket_module_has_no_cmsg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows' socket module has neither ``CMSG_SPACE`` nor ``recvmsg``: the mDNS reader
    asked for the first before it looked at the platform, and its AttributeError took the
    agent down (under the default QUERY_ONLY, at a browser's first ``.local``
    candidate)."""
    monkeypatch.setattr(_mdns, "_LINUX", False)
    monkeypatch.delattr(socket, "CMSG_SPACE")
    base = loopback_config()
    config = dataclasses.replace(
        base, network=dataclasses.replace(base.network, mdns=trice.MdnsMode.QUERY_AND_GATHER)
    )
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config, controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        assert all(is_mdns_name(c.address) for c in a.local_candidates)
        signal(a, b)
        with trio.fail_after(10):
            ca, cb = await connect_both(a, b)
            await ca.send(b"over mDNS")
            assert await cb.receive() == b"over mDNS"


# ifaddr on Windows: the adapter's name is a GUID, its nice_name the hardware's description,
# and each address's nice_name the connection's name ("Ethernet"); socket.if_nametoindex
# knows none of them as trice uses them.  Simulated over the namespace's real interfaces.
_WINDOWS_LINKS = textwrap.dedent(
    """
    import socket, sys
    sys.path.insert(0, {root!r})
    import ifaddr
    from trice._trio import _mdns
    import trice

    real_index = socket.if_nametoindex
    real_adapters = ifaddr.get_adapters

    def no_index(name):
        raise OSError("no interface of that name")

    def windows_adapters(*args, **kwargs):
        socket.if_nametoindex = real_index  # (ifaddr's own read needs it here)
        try:
            found = real_adapters(*args, **kwargs)
        finally:
            socket.if_nametoindex = no_index
        return [
            ifaddr.Adapter(
                "{{GUID-%d}}" % adapter.index,
                "Hardware description %d" % adapter.index,
                [ifaddr.IP(ip.ip, ip.network_prefix, adapter.name) for ip in adapter.ips],
                index=adapter.index,
            )
            for adapter in found
        ]

    _mdns._LINUX = False
    socket.if_nametoindex = no_index
    ifaddr.get_adapters = windows_adapters
    sys.platform = "win32"
    network = trice.NetworkConfig(
        include_loopback=True, interface_filter=lambda name: name in ("lo", "va")
    )
    mdns = _mdns.open_mdns(network, lambda: 0.0)
    before = sorted(link[0] for link in mdns._links)
    mdns.follow_links(network)  # (a restart(regather=True) with nothing changed)
    after = sorted(link[0] for link in mdns._links)
    mdns.close()
    print(before, after)
    """
)


def test_windows_interface_names_and_mdns_links_across_a_regather() -> None:
    """On Windows the interface filter gets the connection's name ("Ethernet", here the
    namespace's ``lo`` and ``va``; it got the hardware's description), and mDNS keeps its
    links apart by ifaddr's index: ``if_nametoindex`` knows no such name, every link had
    index 0, and one gathering anew with nothing changed left mDNS on one link alone ("cannot
    join the group on lo ... Address already in use")."""
    require_natlab(turn=False)
    with lone_namespace("port") as ns:
        ns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
        ns.ip("addr", "add", "10.77.0.1/24", "dev", "va")
        ns.ip("link", "set", "va", "up")
        ns.ip("link", "set", "vb", "up")
        out = ns.check_output(
            [sys.executable, "-c", _WINDOWS_LINKS.format(root=ROOT)], timeout=60
        ).strip()
    assert out == "['10.77.0.1', '127.0.0.1'] ['10.77.0.1', '127.0.0.1']"


def test_the_interface_filter_gets_windows_connection_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A filter for ``"Ethernet"`` (what ``ipconfig`` and users call it) matches on Windows."""
    adapter = ifaddr.Adapter(
        "{4D36E972-E325-11CE-BFC1-08002BE10318}",
        "Intel(R) Ethernet Connection I219-V",
        [ifaddr.IP("192.0.2.10", 24, "Ethernet")],
        index=12,
    )
    monkeypatch.setattr(ifaddr, "get_adapters", lambda *a, **k: [adapter])
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(_gather, "_adapters_cache", {})  # (put back after the test)
    network = trice.NetworkConfig(interface_filter=lambda name: name == "Ethernet")
    found = _gather.host_addresses(network)
    assert [(h.interface, h.address) for h in found] == [("Ethernet", "192.0.2.10")]
    assert _gather.interface_index("Ethernet") == 12


_DEMO = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import ifaddr
    real = ifaddr.get_adapters

    def renamed(*args, **kwargs):  # (macOS and the BSDs call the loopback lo0)
        return [
            ifaddr.Adapter("lo0", "lo0", a.ips, index=a.index) if a.name == "lo" else a
            for a in real(*args, **kwargs)
        ]

    ifaddr.get_adapters = renamed
    from trice._cli import main
    sys.exit(main(["demo", "--count", "5", "--pings", "2", "--json"]))
    """
)


def test_trice_demo_runs_where_the_loopback_is_not_named_lo() -> None:
    """The README's first command took only an interface named ``lo``: on macOS and the BSDs
    (``lo0``) and Windows it gathered nothing and ended "ICE failed", status 2."""
    out = _run_python(_DEMO, timeout=120)
    assert out.returncode == 0, out.stderr


async def test_a_turn_server_not_listening_is_unreachable_on_windows_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Windows the ICMP port unreachable after a send on a connected UDP socket comes
    back from ``recv`` as WSAECONNRESET (ConnectionResetError), not ECONNREFUSED: a TURN
    server that is not listening was waited for until the allocation timed out."""

    def recv(self: socket.socket, size: int) -> bytes:
        try:
            return _socket.socket.recv(self, size)
        except ConnectionRefusedError:
            raise ConnectionResetError(10054, "forcibly closed by the remote host") from None

    monkeypatch.setattr(socket.socket, "recv", recv)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ServerUrl("turn", "127.0.0.1", port=port, transport="udp")
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            with pytest.raises(AllocationError) as info:
                await start_relay(nursery, server, Inbox(), allocation_timeout=SLOW_PATH)
    assert info.value.reason == "unreachable"


def test_no_so_reuseaddr_on_a_windows_tcp_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows SO_REUSEADDR lets another socket bind a port in use and take its
    connections (trio's ``open_tcp_listeners`` leaves it off there): trice set it on every
    TCP listener (passive ICE-TCP candidates, a TCP mux's port)."""
    seen: list[tuple[int, int]] = []

    class Recording(socket.socket):
        def setsockopt(self, level: int, option: int, value: int | bytes) -> None:  # type: ignore[override]
            seen.append((level, option))
            super().setsockopt(level, option, value)

    monkeypatch.setattr(socket, "socket", Recording)
    for platform, reuses in (("linux", True), ("win32", False)):
        seen.clear()
        monkeypatch.setattr(sys, "platform", platform)
        _transport.bind_socket("127.0.0.1", None, kind=socket.SOCK_STREAM).close()
        assert ((socket.SOL_SOCKET, socket.SO_REUSEADDR) in seen) is reuses, platform


def test_mdns_opens_where_so_reuseport_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python names SO_REUSEPORT from the headers it was built with; a kernel without it
    (WSL1, gVisor) refuses it with ENOPROTOOPT, and SO_REUSEADDR alone shares the port.
    The refusal turned mDNS off ("cannot open port 5353")."""
    real = socket.socket.setsockopt

    def setsockopt(self: socket.socket, level: int, option: int, value: int | bytes) -> None:
        if level == socket.SOL_SOCKET and option == getattr(socket, "SO_REUSEPORT", -1):
            raise OSError(errno.ENOPROTOOPT, os.strerror(errno.ENOPROTOOPT))
        real(self, level, option, value)

    monkeypatch.setattr(socket.socket, "setsockopt", setsockopt)
    mdns = _mdns.open_mdns(loopback_config().network, lambda: 0.0)
    assert mdns is not None
    mdns.close()


@pytest.mark.parametrize("code", [errno.ENOPROTOOPT, errno.EINVAL])
def test_mdns_opens_where_ip_pktinfo_is_refused(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """A kernel or sandbox that refuses IP_PKTINFO (WSL1 answered EINVAL) leaves mDNS on,
    reading datagrams without it as elsewhere than Linux: the refusal turned mDNS off
    for the process ("cannot open port 5353"; the portability review)."""
    real = socket.socket.setsockopt

    def setsockopt(self: socket.socket, level: int, option: int, value: int | bytes) -> None:
        if level == socket.IPPROTO_IP and option == _mdns._IP_PKTINFO:
            raise OSError(code, os.strerror(code))
        real(self, level, option, value)

    monkeypatch.setattr(socket.socket, "setsockopt", setsockopt)
    mdns = _mdns.open_mdns(loopback_config().network, lambda: 0.0)
    assert mdns is not None
    mdns.close()


_IMPORT = textwrap.dedent(
    """
    import builtins, select, socket, sys
    sys.path.insert(0, {root!r})
    import trio, ifaddr  # (trio picks its I/O backend as it is imported)
    for name in ["SO_REUSEPORT", "IP_PKTINFO", "IPV6_RECVPKTINFO", "IP_RECVERR",
                 "SO_BINDTODEVICE", "IP_MTU_DISCOVER", "AF_NETLINK", "NETLINK_ROUTE",
                 "SOCK_NONBLOCK", "SOCK_CLOEXEC", "IP_MULTICAST_ALL", "CMSG_SPACE",
                 "CMSG_LEN", "if_nametoindex", "if_nameindex", "AF_UNIX", "AF_PACKET"]:
        if hasattr(socket, name):
            delattr(socket, name)
    if hasattr(select, "epoll"):
        del select.epoll
    real_import = builtins.__import__

    def without_posix(name, *args, **kwargs):
        if name in ("fcntl", "resource", "termios"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    builtins.__import__ = without_posix
    sys.platform = "win32"
    import trice, trice._cli
    print("ok")
    """
)


def test_import_trice_without_linux_only_modules_and_constants() -> None:
    out = _run_python(_IMPORT, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
