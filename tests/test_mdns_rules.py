"""Rules of the mDNS socket and its group memberships (trice/_trio/_mdns.py) that the other
mDNS tests did not pin (found by a mutation review; each test here kills a mutant the rest of
the suite let through): a link joined on a further socket, once the first holds as many
memberships as the system allows, is left by that socket; and the socket sends with an IP
TTL of 255.  Fake sockets and stubbed interfaces (no real interface is read, nothing is
sent), and one socket bound to port 5353 whose options are read."""

from __future__ import annotations

import errno
import ipaddress
import socket

import pytest

import trice
from trice._trio import _mdns as mdns_shell


class _FakeSock:
    """Records its socket options; ``full``: it holds as many memberships as it may."""

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.options: list[tuple[int, bytes]] = []

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        if option == socket.IP_ADD_MEMBERSHIP and self.full:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        self.options.append((option, value))

    def drops(self) -> list[bytes]:
        return [value for option, value in self.options if option == socket.IP_DROP_MEMBERSHIP]


# -- memberships past the system's limit -----------------------------------------------------


def test_a_link_joined_by_another_socket_is_left_by_that_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the system's memberships (ENOBUFS) links are joined on further sockets; a link
    that goes (its interface still there, its address gone, say) is left by the socket that
    joined it, its membership dropped there (mutants: the joining socket not recorded for a
    second link on a further socket; or the drop sent to the first socket, where it fails
    unseen, and the interface stays in the group, its traffic read for nothing)."""
    indexes = {"v5": 5, "v6": 6}
    monkeypatch.setattr(mdns_shell, "interface_index", lambda name: indexes.get(name, 0))
    monkeypatch.setattr(mdns_shell, "link_local_interfaces", list)
    monkeypatch.setattr(mdns_shell, "machine_addresses", set)
    main, more = _FakeSock(full=True), _FakeSock()
    monkeypatch.setattr(mdns_shell, "_mdns_socket", lambda: more)
    mdns = mdns_shell.Mdns(main, [], lambda: 0.0)  # type: ignore[arg-type]
    links = [
        mdns.join("v5", "10.60.5.1", ipaddress.IPv4Network("10.60.5.0/24")),
        mdns.join("v6", "10.60.6.1", ipaddress.IPv4Network("10.60.6.0/24")),
    ]
    assert all(links)
    assert len(mdns._more) == 1  # (the second link joined on it too, main being full)
    mdns._links = [link for link in links if link is not None]
    mdns.follow_links(trice.NetworkConfig(), read=[])  # (both links gone)
    assert main.drops() == []
    assert sorted(more.drops()) == sorted(
        [mdns_shell._membership("10.60.5.1", 5), mdns_shell._membership("10.60.6.1", 6)]
    )


# -- the socket's options --------------------------------------------------------------------


def test_the_mdns_socket_sends_with_a_ttl_of_255() -> None:
    """RFC 6762 §11: multicast and unicast replies go with IP TTL 255, which a receiver may
    check (mutant: a multicast TTL of 254; tests/test_mdns_links.py checks a unicast
    reply's TTL only)."""
    sock = mdns_shell._mdns_socket()
    with sock:
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 255
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 255
