"""Multicast DNS by link: what the agent tells each link and answers from it (unicast
replies, QU and direct queries, goodbyes), the query schedule of a name, IP TTLs, and what it
keeps of the answers.

Loopback only: the tests that need other links, or sources off the link, call
``Mdns.on_datagram`` directly with a socket that records what would be sent (nothing is);
the one that sends does so from 127.0.0.1 to the group on ``lo``.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
import trio
import trio.testing
from test_mdns import GATHER, _config
from test_mdns_hostile import GROUP, _legacy_socket, _recording_mdns, _RecordingSocket, _with_id

import trice
from trice import mdns
from trice._trio import _gather
from trice._trio._mdns import Mdns
from trice.mdns._responder import GONE_KEPT

_LO = ("127.0.0.1", ipaddress.IPv4Network("127.0.0.0/8"), 1)
_OTHER = ("192.0.2.1", ipaddress.IPv4Network("192.0.2.0/24"), 7)  # (recorded, never sent)


def _qu(query: bytes) -> bytes:
    """``query`` (one question) with the unicast-response bit set."""
    out = bytearray(query)
    out[-2] |= 0x80
    return bytes(out)


def _unicast(fake: _RecordingSocket) -> list[Any]:
    return [destination for _, destination, _ in fake.sent if destination != GROUP]


# ---------------------------------------------------------------- unicast replies


def test_a_multicast_legacy_query_from_off_link_gets_no_unicast_reply() -> None:
    """A query taken in by multicast on a joined interface is heard whatever its source
    (Pion's come from 0.0.0.0), but a unicast reply goes only to a source on that link's
    network (RFC 6762 §11): not out through the routing table to a party off the link."""
    found, fake = _recording_mdns()
    ((_, _, index),) = found._links
    name = found.name("127.0.0.1")
    query = _with_id(mdns.encode_query(name, (mdns.TYPE_A,)), 0x1234)
    found.on_datagram(query, ("203.0.113.9", 40000), group_on=index)
    assert _unicast(fake) == []


def test_a_multicast_qu_question_from_off_link_gets_no_unicast_answer() -> None:
    """The same for a QU question (RFC 6762 §5.4) within the second after a multicast
    answer: no unicast answer to a source off the link."""
    found, fake = _recording_mdns()
    ((_, _, index),) = found._links
    name = found.name("127.0.0.1")
    plain = mdns.encode_query(name, (mdns.TYPE_A,))
    found.on_datagram(plain, ("127.0.0.2", mdns.MDNS_PORT), group_on=index)  # (multicast)
    found.on_datagram(_qu(plain), ("203.0.113.9", mdns.MDNS_PORT), group_on=index)
    assert _unicast(fake) == []


# ---------------------------------------------------------------- names and links


def test_the_goodbye_for_a_name_goes_only_to_the_link_of_its_address() -> None:
    """When the agent closes, each name's goodbye (RFC 6762 §10.1) goes to the link of
    its address only: a name's address is told to no other link."""
    fake = _RecordingSocket()
    found = Mdns(fake, [_LO, _OTHER], lambda: 100.0)  # type: ignore[arg-type]
    found.name("192.0.2.1")
    found.close()
    assert [interface for _, _, interface in fake.sent] == ["192.0.2.1"]


def test_a_name_is_not_told_on_a_link_its_address_is_not_on() -> None:
    """A query on one link for the name of an address on another link is not answered."""
    fake = _RecordingSocket()
    found = Mdns(fake, [_LO, _OTHER], lambda: 100.0)  # type: ignore[arg-type]
    name = found.name("192.0.2.1")
    found.on_datagram(mdns.encode_query(name, (mdns.TYPE_A,)), ("127.0.0.1", 5353), group_on=1)
    assert fake.sent == []


# ---------------------------------------------------------------- QU questions


def test_one_query_repeating_a_qu_question_draws_one_unicast_answer() -> None:
    """A multicast query that repeats a QU question for our name (40 times, over
    compression pointers, in under 300 bytes) draws one unicast answer, as a legacy query
    gets one reply: it cannot use up the second's unicast answers."""
    found, fake = _recording_mdns()
    ((_, _, index),) = found._links
    name = found.name("127.0.0.1")
    plain = mdns.encode_query(name, (mdns.TYPE_A,))
    found.on_datagram(plain, ("127.0.0.2", mdns.MDNS_PORT), group_on=index)  # (multicast)
    first = _qu(plain)[12:]
    again = b"\xc0\x0c" + struct.pack("!HH", mdns.TYPE_A, mdns.CLASS_IN | 0x8000)
    query = struct.pack("!6H", 0, 0, 40, 0, 0, 0) + first + again * 39
    assert len(query) < 300 and all(
        q.unicast_response for q in mdns.decode_message(query).questions
    )
    found.on_datagram(query, ("127.0.0.4", mdns.MDNS_PORT), group_on=index)
    assert len(_unicast(fake)) == 1


# ---------------------------------------------------------------- direct queries


def test_a_direct_unicast_query_is_answered_by_unicast() -> None:
    """RFC 6762 §5.5: a query sent straight to the host's address on port 5353 is
    answered as a QU one is: by unicast, within the second after a multicast answer."""
    found, fake = _recording_mdns()
    ((_, _, index),) = found._links
    name = found.name("127.0.0.1")
    plain = mdns.encode_query(name, (mdns.TYPE_A,))
    found.on_datagram(plain, ("127.0.0.2", mdns.MDNS_PORT), group_on=index)  # (multicast)
    found.on_datagram(plain, ("127.0.0.3", mdns.MDNS_PORT))  # (unicast: no group_on)
    assert _unicast(fake) == [("127.0.0.3", mdns.MDNS_PORT)]


# ---------------------------------------------------------------- query schedule


async def test_the_first_two_queries_for_a_shared_name_are_a_second_apart(
    mock_clock: trio.testing.MockClock,
) -> None:
    """RFC 6762 §5.2: the first two queries for a name go at least a second apart, also
    when two candidates of the name are signalled 0.6 s apart: the name has one schedule."""
    times: list[float] = []

    class Timed(_RecordingSocket):
        def sendto(self, data: bytes, destination: Any) -> int:
            times.append(trio.current_time())
            return super().sendto(data, destination)

    found = Mdns(Timed(), [_LO], trio.current_time)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(found.resolve, "peer.local")
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.6)
        nursery.start_soon(found.resolve, "peer.local")
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(40):  # (4 s of queries, in steps of 0.1)
            mock_clock.jump(0.1)
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    start = times[0]
    times = [round(t - start, 3) for t in times]
    assert times[1] >= 1.0, f"queries at {times}"


# ---------------------------------------------------------------- IP TTL


async def test_a_unicast_reply_goes_with_ip_ttl_255() -> None:
    """RFC 6762 §11: mDNS responses go with IP TTL 255, unicast ones too (how older
    queriers tell that they come from the link)."""
    async with trice.open_agent(_config(GATHER), controlling=True) as agent:
        await agent.wait_gathering_complete()
        name = agent.local_candidates[0].address
        with _legacy_socket() as legacy:
            legacy.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_RECVTTL", 12), 1)
            legacy.sendto(mdns.encode_query(name, (mdns.TYPE_A,)), GROUP)
            with trio.fail_after(5):
                await trio.lowlevel.wait_readable(legacy)
            data, ancillary, _, _ = legacy.recvmsg(9000, socket.CMSG_SPACE(4))
    assert mdns.decode_message(data).is_response
    ((level, kind, value),) = ancillary
    assert (level, kind) == (socket.IPPROTO_IP, socket.IP_TTL)
    assert int.from_bytes(value[:4], "little") == 255


# ---------------------------------------------------------------- the answers kept


async def test_an_ice_restart_asks_again_for_a_name_resolved_before() -> None:
    """After an ICE restart (the usual answer to a peer that moved) a name signalled again
    (Pion keeps its name across restarts) is asked for anew, not taken from what was
    found before."""
    found, fake = _recording_mdns(trio.current_time)
    ((_, _, index),) = found._links
    async with trio.open_nursery() as nursery:
        nursery.start_soon(found.resolve, "peer.local")
        await trio.testing.wait_all_tasks_blocked()
        found.on_datagram(
            mdns.encode_answer("peer.local", ["127.0.0.7"]), ("127.0.0.7", 5353), group_on=index
        )
        await trio.testing.wait_all_tasks_blocked()
        assert "peer.local" not in found._waiting
        # The peer moves: it announces its new address (cache flush), then restarts ICE.
        found.on_datagram(
            mdns.encode_answer("peer.local", ["127.0.0.8"]), ("127.0.0.8", 5353), group_on=index
        )
        found.forget_resolutions()
        before = len(fake.sent)
        nursery.start_soon(found.resolve, "peer.local")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(fake.sent) > before, f"resolved from the stale cache {found._found}, no query"


async def test_a_goodbye_forgets_the_cached_answer() -> None:
    """RFC 6762 §10.1: a goodbye (TTL 0) ends the name's cached answer one second later
    (not at once: another responder may answer meanwhile), whatever TTL the answer had."""
    found, _ = _recording_mdns(trio.current_time)
    ((_, _, index),) = found._links
    async with trio.open_nursery() as nursery:
        nursery.start_soon(found.resolve, "peer.local")
        await trio.testing.wait_all_tasks_blocked()
        answer = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=0x7FFFFFFF)
        found.on_datagram(answer, ("127.0.0.7", 5353), group_on=index)
        await trio.testing.wait_all_tasks_blocked()
        assert found._found["peer.local"][0] == ("127.0.0.7",)  # (kept: at most 120 s)
        assert found._found["peer.local"][1] <= trio.current_time() + 120
        goodbye = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=0)
        found.on_datagram(goodbye, ("127.0.0.7", 5353), group_on=index)
        assert found._found["peer.local"][1] == pytest.approx(trio.current_time() + 1, abs=0.1)
        nursery.cancel_scope.cancel()


async def test_an_answer_and_its_goodbye_in_one_read_raise_nothing() -> None:
    """An answer, then at once a goodbye for the same name (both read before the waiting
    task runs again): the record holds one second more (RFC 6762 §10.1), so the name
    resolves to its address, and no error reaches the agent."""
    found, _ = _recording_mdns(trio.current_time)
    ((_, _, index),) = found._links
    result: list[tuple[str, ...]] = []

    async def resolve() -> None:
        result.append(await found.resolve("peer.local"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resolve)
        await trio.testing.wait_all_tasks_blocked()
        source = ("127.0.0.7", 5353)
        found.on_datagram(mdns.encode_answer("peer.local", ["127.0.0.7"]), source, group_on=index)
        goodbye = mdns.encode_answer("peer.local", ["127.0.0.7"], ttl=0)
        found.on_datagram(goodbye, source, group_on=index)
    assert result == [("127.0.0.7",)]


# ---------------------------------------------------------------- links that change


class _MembershipSocket(_RecordingSocket):
    """A :class:`_RecordingSocket` that also records the group memberships asked for: join
    or leave, the address and the interface index (0 if given by address only)."""

    def __init__(self) -> None:
        super().__init__()
        self.memberships: list[tuple[str, str, int]] = []

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        super().setsockopt(level, option, value)
        kinds = {socket.IP_ADD_MEMBERSHIP: "join", socket.IP_DROP_MEMBERSHIP: "leave"}
        if level == socket.IPPROTO_IP and option in kinds:
            index = struct.unpack("=i", value[8:12])[0] if len(value) == 12 else 0
            self.memberships.append((kinds[option], socket.inet_ntoa(value[4:8]), index))


class _World:
    """The machine's interfaces as the test sets them (name -> index and addresses with
    their prefix lengths), an ``Mdns`` joined on loopback that sends nothing, and the
    clock it reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.interfaces: dict[str, tuple[int, list[tuple[str, int]]]] = {
            "lo": (1, [("127.0.0.1", 8)])
        }
        monkeypatch.setattr(_gather, "_adapters", self._adapters)
        monkeypatch.setattr(socket, "if_nametoindex", lambda name: self.interfaces[name][0])
        self.network = trice.NetworkConfig(include_loopback=True, mdns=GATHER)
        self.sock = _MembershipSocket()
        self.clock = 100.0
        self.mdns = Mdns(self.sock, [_LO], lambda: self.clock)  # type: ignore[arg-type]

    def _adapters(self, newer_than: float = 0.0) -> list[tuple[str, list[_gather._Found]]]:
        return [
            (
                name,
                [
                    _gather._Found(ipaddress.ip_address(a), a, 4, False, a == "127.0.0.1", p)
                    for a, p in addresses
                ],
            )
            for name, (_, addresses) in self.interfaces.items()
        ]

    def change(
        self, name: str, index: int = 0, addresses: list[tuple[str, int]] | None = None
    ) -> None:
        """Interface ``name`` comes (or changes) with ``index`` and ``addresses``, or goes
        (``addresses`` ``None``); then a gathering anew: ``Mdns.follow_links``."""
        if addresses is None:
            del self.interfaces[name]
        else:
            self.interfaces[name] = (index, addresses)
        self.mdns.follow_links(self.network)

    def answered(self, name: str, index: int) -> bool:
        """Whether a query for ``name`` taken in on interface ``index`` is answered."""
        self.clock += 2.0  # (a name is multicast at most once a second on a link)
        self.sock.sent.clear()
        query = mdns.encode_query(name, (mdns.TYPE_A,))
        self.mdns.on_datagram(query, ("127.0.0.1", 5353), group_on=index)
        return bool(self.sock.sent)


def test_a_gathering_anew_joins_the_links_that_came_and_leaves_those_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Mdns.follow_links`` (a gathering anew, before it names the new candidates): the
    group is joined on an interface that came (eth7, 192.0.2.1/24), a name of its address
    is answered there; when it goes, the group is left there, and that name is answered
    nowhere, while loopback's goes on being answered."""
    world = _World(monkeypatch)
    found = world.mdns
    lo_name = found.name("127.0.0.1")
    world.change("eth7", 7, [("192.0.2.1", 24)])
    assert world.sock.memberships == [("join", "192.0.2.1", 7)]
    assert found._links == [_LO, _OTHER]
    other_name = found.name("192.0.2.1")
    assert world.answered(other_name, 7)
    assert world.answered(lo_name, 1)

    world.change("eth7")
    assert world.sock.memberships[1:] == [("leave", "192.0.2.1", 7)]
    assert found._links == [_LO]
    assert not world.answered(other_name, 7)
    assert not world.answered(other_name, 1)
    assert world.answered(lo_name, 1)
    assert found.names[other_name] == "192.0.2.1"  # (kept: the same name if it comes back)


def test_a_name_whose_address_went_says_goodbye_and_is_answered_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """eth7 has two addresses, each named; one goes while eth7 stays joined: its name says
    goodbye there (TTL 0, RFC 6762 §10.1) and is answered no more, though its address is
    still in eth7's network; the other's name goes on being answered."""
    world = _World(monkeypatch)
    found = world.mdns
    world.change("eth7", 7, [("192.0.2.1", 24), ("192.0.2.2", 24)])
    staying, going = found.name("192.0.2.1"), found.name("192.0.2.2")
    assert world.answered(going, 7)

    world.sock.sent.clear()
    world.change("eth7", 7, [("192.0.2.1", 24)])
    ((data, destination, interface),) = world.sock.sent
    assert (destination, interface) == (GROUP, "192.0.2.1")
    goodbye = mdns.decode_message(data)
    assert [(r.name, r.ttl) for r in goodbye.records] == [(going, 0)]
    assert world.sock.memberships == [("join", "192.0.2.1", 7)]  # (eth7 stays joined)
    assert not world.answered(going, 7)
    assert world.answered(staying, 7)


def test_a_roaming_host_keeps_only_the_last_names_whose_address_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """eth7 takes a new address at each of 40 networks, named and answered for each: the
    names of addresses gone are kept, for an address that comes back to get its name back,
    but only the last ``GONE_KEPT``; the others, and when they were last told, are
    forgotten.  A name whose address is still the host's is never forgotten."""
    world = _World(monkeypatch)
    found = world.mdns
    lo_name = found.name("127.0.0.1")
    names = []
    for i in range(1, 41):
        world.change("eth7", 7, [(f"192.0.2.{i}", 24)])
        names.append(found.name(f"192.0.2.{i}"))
        assert world.answered(names[-1], 7)
    assert set(found.names) == {lo_name, *names[-1 - GONE_KEPT :]}
    assert {name for name, _ in found.responder._answered} <= set(found.names)
    assert world.answered(lo_name, 1)
    # The last address gone comes back: its name with it, answered again.
    world.change("eth7", 7, [("192.0.2.39", 24)])
    assert found.name("192.0.2.39") == names[-2]
    assert world.answered(names[-2], 7)


def test_a_renumbered_interface_keeps_its_membership(monkeypatch: pytest.MonkeyPatch) -> None:
    """eth7 is renumbered (192.0.2.1/24 -> 198.51.100.1/24, the same interface): its
    membership stays (a second join by the new address would fail on Linux: the
    interface is in the group already), its link takes the new address and network; the
    new address's name is answered there, the old one's no more."""
    world = _World(monkeypatch)
    found = world.mdns
    world.change("eth7", 7, [("192.0.2.1", 24)])
    old_name = found.name("192.0.2.1")

    world.change("eth7", 7, [("198.51.100.1", 24)])
    assert world.sock.memberships == [("join", "192.0.2.1", 7)]
    assert found._links == [_LO, ("198.51.100.1", ipaddress.IPv4Network("198.51.100.0/24"), 7)]
    new_name = found.name("198.51.100.1")
    assert world.answered(new_name, 7)
    assert not world.answered(old_name, 7)


def test_an_interface_made_anew_is_joined_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """eth7 is made anew with the same address (an adapter plugged in again: a new index,
    9): the old membership is left first, by its index (the interface it was on is gone),
    then the new interface is joined; the name is answered on the new one only."""
    world = _World(monkeypatch)
    found = world.mdns
    world.change("eth7", 7, [("192.0.2.1", 24)])
    name = found.name("192.0.2.1")

    world.change("eth7", 9, [("192.0.2.1", 24)])
    assert world.sock.memberships == [
        ("join", "192.0.2.1", 7),
        ("leave", "192.0.2.1", 7),
        ("join", "192.0.2.1", 9),
    ]
    assert world.answered(name, 9)
    assert not world.answered(name, 7)


def test_an_address_on_a_second_subnet_of_a_joined_interface_is_answered_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An interface's second IPv4 address, on another subnet than the one the interface
    was joined with, is on that link too: its name is answered there.  It was answered
    nowhere (matched by the first address's network), and under QUERY_AND_GATHER its host
    candidate went out under no address at all."""
    world = _World(monkeypatch)
    found = world.mdns
    world.change("eth7", 7, [("192.0.2.1", 24), ("198.51.100.1", 24)])
    first, second = found.name("192.0.2.1"), found.name("198.51.100.1")
    assert world.answered(first, 7)
    assert world.answered(second, 7)


def test_the_goodbye_of_a_renumbered_address_goes_from_the_interface_as_it_is_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An interface is renumbered: the goodbye for the name of the address that went goes
    out on its link, from the address the interface has now.  It was sent from the address
    that went, which Linux refuses (EADDRNOTAVAIL): the goodbye never went."""
    world = _World(monkeypatch)
    found = world.mdns
    world.change("eth7", 7, [("192.0.2.1", 24)])
    old_name = found.name("192.0.2.1")
    world.sock.sent.clear()
    world.change("eth7", 7, [("198.51.100.1", 24)])  # (renumbered: the same interface)
    goodbyes = [
        (destination, interface)
        for data, destination, interface in world.sock.sent
        if [(r.name, r.ttl) for r in mdns.decode_message(data).records] == [(old_name, 0)]
    ]
    assert goodbyes == [(GROUP, "198.51.100.1")]


def test_a_peer_of_link_local_address_only_is_on_the_link_of_an_interface_with_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An interface with a routable address and a 169.254/16 one is joined with the
    routable one's network; a peer on the cable with a link-local address only (RFC 3927)
    is on that link too: its direct query is answered (it was dropped as off the link)."""
    world = _World(monkeypatch)
    found = world.mdns
    world.change("eth7", 7, [("192.0.2.1", 24), ("169.254.7.7", 16)])
    assert found._link_of("169.254.9.9") == found._link_at(7)
    assert found._link_of("198.51.100.9") is None  # (off every link still)
    name = found.name("169.254.7.7")
    world.sock.sent.clear()
    found.on_datagram(mdns.encode_query(name, (mdns.TYPE_A,)), ("169.254.9.9", 5353))
    assert world.sock.sent


def test_a_link_local_peer_is_on_the_link_of_the_interface_it_came_in_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two cables, each interface with a routable address and a 169.254/16 one (or only
    the latter): a link-local-only peer's direct query, or QU question, taken in on the
    second is on that one's link, and answered there.  It was put on the first interface
    with a link-local address, or the one whose network is 169.254/16: not answered."""
    for second in ([("198.51.100.1", 24), ("169.254.8.8", 16)], [("169.254.8.8", 16)]):
        world = _World(monkeypatch)
        world.change("eth7", 7, [("192.0.2.1", 24), ("169.254.7.7", 16)])
        world.change("eth8", 8, second)
        found = world.mdns
        for index, address in ((8, "169.254.8.8"), (7, "169.254.7.7")):
            name = found.name(address)
            query = mdns.encode_query(name, (mdns.TYPE_A,))
            world.clock += 5.0
            world.sock.sent.clear()
            found.on_datagram(query, ("169.254.9.9", 5353), arrived_on=index)
            assert world.sock.sent, (second, index)
            qu = bytearray(query)
            qu[-2] |= 0x80  # (unicast response wanted, RFC 6762 §5.4)
            world.sock.sent.clear()
            found.on_datagram(bytes(qu), ("169.254.9.9", 5353), group_on=index)
            assert [to for _, to, _ in world.sock.sent] == [("169.254.9.9", 5353)], second


def _no_descriptor_left(newer_than: float = 0.0) -> list[tuple[str, list[_gather._Found]]]:
    """``_gather._adapters`` when no file descriptor is left to read the interfaces."""
    raise trice.LimitError("no file descriptor left")


def test_a_datagram_of_a_link_local_source_reads_no_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What interfaces have a link-local address is read as the links are joined: a
    datagram from a 169.254 source reads none (it read them, and a descriptor shortage
    then raised out of the mDNS task, taking the agent down)."""
    world = _World(monkeypatch)
    world.change("eth7", 7, [("192.0.2.1", 24), ("169.254.7.7", 16)])
    found = world.mdns
    name = found.name("169.254.7.7")

    monkeypatch.setattr(_gather, "_adapters", _no_descriptor_left)
    world.sock.sent.clear()
    found.on_datagram(mdns.encode_query(name, (mdns.TYPE_A,)), ("169.254.9.9", 5353))
    assert world.sock.sent


def test_joining_with_no_descriptor_to_read_the_interfaces_leaves_no_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading which interfaces have a link-local address finds no descriptor left: mDNS
    opens all the same, with none (it raised out of open_mdns, the bound socket left to
    the garbage collector)."""
    world = _World(monkeypatch)

    monkeypatch.setattr(_gather, "_adapters", _no_descriptor_left)
    found = Mdns(world.sock, [_LO], lambda: world.clock)  # type: ignore[arg-type]
    assert found._link_local == frozenset()
