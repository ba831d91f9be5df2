"""Multicast DNS on loopback: ``.local`` host candidates named, answered for and resolved.

Every socket here sends from 127.0.0.1 only (the agents' filters accept loopback alone, and
the mDNS socket sends from the interfaces they accept): multicast on ``lo`` never leaves the
machine.  Peers of other makes (Pion, aioice) are in ``test_mdns_interop.py``, in a network
namespace of their own.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trice
from trice import mdns
from trice._trio._mdns import Mdns, open_mdns
from trice.mdns._responder import MdnsResponder

from loopback import (
    HAS_IPV6,
    connect_both,
    filtered_config,
    loopback_config,
    server_socket,
    signal,
    stun_server,
    until,
)

GATHER = trice.MdnsMode.QUERY_AND_GATHER
QUERY = trice.MdnsMode.QUERY_ONLY


def _config(mode: trice.MdnsMode, **kwargs: Any) -> trice.AgentConfig:
    config = loopback_config(**kwargs)
    return dataclasses.replace(config, network=dataclasses.replace(config.network, mdns=mode))


def _mdns_of(agent: trice.Agent) -> Mdns:
    found = agent._mdns
    assert isinstance(found, Mdns)
    return found


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A plain socket on 5353 in the group on loopback: it hears what the agents multicast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", mdns.MDNS_PORT))
    membership = socket.inet_aton(mdns.MDNS_IPV4_GROUP) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sock.setblocking(False)
    with sock:
        yield sock


def _query_for(*names: str) -> Callable[[mdns.DnsMessage], bool]:
    """Whether a message is a query that asks for one of ``names``: another's (a test in
    another process asks on the same loopback group) is skipped."""
    wanted = set(names)
    return lambda m: not m.is_response and bool(wanted & {q.name for q in m.questions})


def _answer_for(name: str) -> Callable[[mdns.DnsMessage], bool]:
    """Whether a message is an answer with a record of ``name`` (see _query_for)."""
    return lambda m: m.is_response and any(r.name == name for r in m.records)


async def _next_message(
    sock: socket.socket, want: Any = lambda m: True
) -> tuple[mdns.DnsMessage, tuple[str, int]]:
    """The next message on ``sock`` that ``want`` accepts (others skipped)."""
    trio_sock = trio.socket.from_stdlib_socket(sock)
    with trio.fail_after(5):
        while True:
            data, source = await trio_sock.recvfrom(9000)
            message = mdns.decode_message(data)
            if want(message):
                return message, source


async def _answer_the_next_query(sock: socket.socket, name: str, address: str) -> None:
    """Wait for the next query (it asks for ``name`` alone) and answer it with ``address``."""
    query, _ = await _next_message(sock, _query_for(name))
    assert {q.name for q in query.questions} == {name}
    sock.sendto(mdns.encode_answer(name, [address]), (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT))


async def test_two_agents_that_name_their_candidates_connect_over_resolved_addresses() -> None:
    """Both sides signal only ``.local`` names, answer for them and resolve the other's:
    the pair selected is of host candidates at the real addresses, not learned ones."""
    async with (
        trice.open_agent(_config(GATHER), controlling=True) as a,
        trice.open_agent(_config(GATHER), controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        for agent in (a, b):
            (candidate,) = agent.local_candidates
            assert mdns.is_mdns_name(candidate.address)
            assert "127.0.0.1" not in candidate.to_sdp()
            assert _mdns_of(agent).interfaces == ["127.0.0.1"]  # loopback alone
        signal(a, b)  # (end-of-candidates at once: held while the names resolve)
        ca, cb = await connect_both(a, b)
        for conn in (ca, cb):
            pair = conn.selected_pair
            assert pair.remote.type is trice.CandidateType.HOST
            assert pair.remote.address == "127.0.0.1"
        assert ca.selected_pair.remote.port == b.local_candidates[0].port
        await ca.send(b"over mDNS")
        with trio.fail_after(5):
            assert await cb.receive() == b"over mDNS"


async def test_with_no_nat_the_address_a_stun_server_sees_is_signalled_beside_the_name() -> None:
    """Host candidates go out under .local names only, which a peer off the link cannot
    resolve; with no NAT in between, the STUN server sees the socket's own address: it is
    signalled as the srflx candidate (as under NOHOST; libwebrtc keeps it too).  It had been
    dropped as the host candidate's copy, and no address went out at all."""
    with await server_socket() as server:
        url = f"stun:127.0.0.1:{server.getsockname()[1]}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, server, None)  # (None: the real source, no NAT)
            config = _config(GATHER, ice_servers=[trice.IceServer(url)])
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                kinds = {c.type: c for c in agent.local_candidates}
                assert len(kinds) == len(agent.local_candidates) == 2
                named = kinds[trice.CandidateType.HOST]
                srflx = kinds[trice.CandidateType.SRFLX]
            nursery.cancel_scope.cancel()
    assert named.address.endswith(".local")
    assert srflx.address == "127.0.0.1" and srflx.port == named.port


@pytest.mark.skipif(not HAS_IPV6, reason="needs an IPv6 loopback address (::1)")
async def test_a_host_address_no_link_names_goes_out_as_its_stun_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An address whose .local name no link answers (an IPv6-only interface, say) goes
    out as no host candidate at all: a STUN mapping equal to it (no NAT) is then the only
    way it goes out, and is kept (it had been taken for the copy of a host candidate that
    was never signalled)."""
    real_link = MdnsResponder.link

    def link(self: MdnsResponder, name: str) -> object:
        return None if ":" in self.names.get(name, "") else real_link(self, name)

    monkeypatch.setattr(MdnsResponder, "link", link)
    server = trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_DGRAM)
    await server.bind(("::1", 0))
    with server:
        url = f"stun:[::1]:{server.getsockname()[1]}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, server, None)  # (no NAT: the socket's own)
            config = _config(GATHER, ice_servers=[trice.IceServer(url)])
            config = dataclasses.replace(
                config, network=dataclasses.replace(config.network, ipv6=True)
            )
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                signalled = [(c.type, c.address) for c in agent.local_candidates]
            nursery.cancel_scope.cancel()
    assert (trice.CandidateType.SRFLX, "::1") in signalled
    assert not any(t is trice.CandidateType.HOST and a == "::1" for t, a in signalled)


async def test_with_mdns_unable_to_open_no_host_address_goes_out_as_a_host_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same, but mDNS cannot open (another process holds port 5353 to itself, say):
    no host candidate goes out, rather than the addresses mDNS hides (any local user could
    have unmasked them: the host candidate went out under its own address); as for an
    address no link answers for, a STUN mapping equal to it (no NAT) is how it goes out."""
    monkeypatch.setattr(trice._trio._agent, "open_mdns", lambda *args, **kwargs: None)
    with await server_socket() as server:
        url = f"stun:127.0.0.1:{server.getsockname()[1]}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stun_server, server, None)
            config = _config(GATHER, ice_servers=[trice.IceServer(url)])
            async with trice.open_agent(config, controlling=True) as agent:
                with trio.fail_after(5):
                    await agent.wait_gathering_complete()
                signalled = [(c.type, c.address) for c in agent.local_candidates]
                (report,) = [r for r in agent.gather_reports if r.source == "host"]
            nursery.cancel_scope.cancel()
    assert signalled == [(trice.CandidateType.SRFLX, "127.0.0.1")]
    # (The host report says why it gave none: it said 0 candidates, no error.)
    assert report.error == "host candidates withheld: mDNS could not be opened", report


async def test_with_mdns_unable_to_open_tcp_candidates_alone_are_withheld_and_said_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same with ICE-TCP host candidates alone (``udp=False``): none goes out, and the
    host report says why (it said nothing: its reason went by the UDP sockets bound)."""
    monkeypatch.setattr(trice._trio._agent, "open_mdns", lambda *args, **kwargs: None)
    config = _config(GATHER)
    network = dataclasses.replace(
        config.network, udp=False, tcp_candidates=(trice.TcpType.PASSIVE,)
    )
    async with trice.open_agent(
        dataclasses.replace(config, network=network), controlling=True
    ) as agent:
        with trio.fail_after(5):
            await agent.wait_gathering_complete()
        assert agent.local_candidates == ()
        (report,) = [r for r in agent.gather_reports if r.source == "host"]
    assert report.error == "host candidates withheld: mDNS could not be opened", report


async def test_a_process_holding_port_5353_cannot_unmask_the_host_addresses() -> None:
    """Port 5353 needs no privilege: a socket bound to it without SO_REUSEADDR keeps the
    agent's mDNS from opening.  The host address goes out neither named nor as it is (it
    went out as it is, signalled for anyone on the machine to unmask)."""
    squat = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        squat.bind(("0.0.0.0", 5353))
    except OSError:
        squat.close()
        pytest.skip("port 5353 is held already (by a responder that shares it, say)")
    with squat:
        async with trice.open_agent(_config(GATHER), controlling=True) as agent:
            with trio.fail_after(5):
                await agent.wait_gathering_complete()
            assert agent._mdns is False  # (it could not open)
            assert agent.local_candidates == ()
            assert [c.address for c, _ in agent._core.local_candidates] == ["127.0.0.1"]


async def test_the_default_resolves_a_peers_names_and_shows_its_own_addresses() -> None:
    """``QUERY_ONLY`` (the default) signals addresses and resolves the peer's names."""
    assert trice.NetworkConfig().mdns is QUERY
    async with (
        trice.open_agent(_config(GATHER), controlling=False) as named,
        trice.open_agent(loopback_config(), controlling=True) as plain,
    ):
        await named.wait_gathering_complete()
        await plain.wait_gathering_complete()
        assert plain.local_candidates[0].address == "127.0.0.1"
        assert plain._mdns is None  # (opened only once needed)
        signal(named, plain)
        await connect_both(named, plain)
        pair = plain.selected_pair
        assert pair is not None
        assert pair.remote.type is trice.CandidateType.HOST
        assert pair.remote.address == "127.0.0.1"
        assert plain.statistics().remote_candidates_dropped == 0


async def test_without_mdns_a_name_is_not_resolved_and_the_peer_is_learned_instead() -> None:
    """``DISABLED``: the peer's ``.local`` candidate is never paired; its checks still reach
    us, and the pair is made with the address they came from (peer-reflexive)."""
    off = _config(trice.MdnsMode.DISABLED)
    async with (
        trice.open_agent(_config(GATHER), controlling=True) as named,
        trice.open_agent(off, controlling=False) as plain,
    ):
        await named.wait_gathering_complete()
        await plain.wait_gathering_complete()
        signal(named, plain)
        await connect_both(named, plain)
        pair = plain.selected_pair
        assert pair is not None
        assert pair.remote.type is trice.CandidateType.PRFLX
        assert plain._mdns is None


async def test_a_local_name_of_more_than_one_dot_is_left_out_unasked() -> None:
    """draft-ietf-mmusic-mdns-ice-candidates §3.2.1: only a name of one label and
    ``.local`` is an mDNS candidate's; another (``printer.office.local``) is a host name, no
    address, left out at once: no mDNS socket opened, no query multicast for it (a peer
    could have the agent ask the link for any name)."""
    async with trice.open_agent(loopback_config(), controlling=True) as agent:
        agent.set_remote_parameters("peerufrag", "peerpasswordpeerpassword")
        line = "candidate:1 1 udp 2130706431 printer.office.local 40000 typ host"
        agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        assert agent._mdns is None
        assert agent.statistics().remote_candidates_dropped == 1


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
@pytest.mark.parametrize(
    ("answers", "gathered", "taken"),
    [
        (("fe80::1", "::1"), "::1", "::1"),  # (link-local first: it paired with nothing)
        (("::1", "127.0.0.1"), "127.0.0.1", "127.0.0.1"),  # (IPv6 allowed, none gathered)
    ],
)
async def test_a_name_answered_with_an_address_that_pairs_with_nothing_first_takes_one_that_does(
    monkeypatch: pytest.MonkeyPatch, answers: tuple[str, ...], gathered: str, taken: str
) -> None:
    """A name answered first with an address no local candidate pairs with (IPv6
    link-local, which trice never gathers; or of a family the agent has no candidate of):
    the remote candidate takes the address that pairs (it took the first, and paired with
    nothing: only the peer's checks could connect)."""

    async def resolve(self: Mdns, name: str) -> tuple[str, ...]:
        await trio.lowlevel.checkpoint()
        return answers

    monkeypatch.setattr(Mdns, "resolve", resolve)
    # (IPv6 only; or both families allowed, IPv4 alone gathered.  mDNS runs over IPv4:
    # an IP filter that takes no IPv4 address leaves it no link.)
    config = _config(QUERY, ipv6=True) if ":" in gathered else filtered_config({gathered})
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        assert [c.address for c in agent.local_candidates] == [gathered]
        agent.set_remote_parameters("abcd", "a" * 22)
        line = "candidate:1 1 udp 2130706431 peer-b.local 9 typ host"
        agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        await until(lambda: bool(agent.remote_candidates))
        assert [c.address for c in agent.remote_candidates] == [taken]
        assert agent.statistics().pairs == 1


async def test_a_name_nobody_answers_for_is_dropped_and_holds_failure_back_until_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The end-of-candidates waits for the name: the one other pair fails within some
    0.15 s, but ICE fails only once ``mdns_timeout`` (0.3 s) has passed without an answer
    and the name's candidate is left out (counted, logged)."""
    timing = trice.Timing(mdns_timeout=0.3, rto=0.05, rto_max=0.05, max_binding_requests=2)
    config = _config(QUERY, timing=timing)
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("abcd", "a" * 22)
        started = trio.current_time()
        for line in (
            "candidate:1 1 udp 2130706431 nobody-here.local 9 typ host",
            "candidate:2 1 udp 2130706430 127.0.0.1 9 typ host",  # (nobody there)
        ):
            agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        agent.add_remote_candidate(None)
        with caplog.at_level(logging.WARNING, logger="trice"), trio.fail_after(5):
            with pytest.raises(trice.IceFailedError):
                await agent.connect()
        assert trio.current_time() - started >= 0.3
        assert agent.statistics().remote_candidates_dropped == 1
        assert "nobody-here.local left out: no mDNS answer" in caplog.text


@pytest.mark.parametrize("address", ["192.0.2.7", "1f2e3d4c-aaaa-bbbb-cccc-1234567890ab.local"])
async def test_a_name_of_before_a_restart_is_left_out_unresolved(address: str) -> None:
    """A candidate of the generation before an ICE restart, trickled late (after the new
    generation's end-of-candidates, here), is left out and counted: a ``.local`` one too,
    without an mDNS query (it raised StateError, and before the end it was resolved, held
    against the cap and held the end back, all to be left out)."""
    async with trice.open_agent(_config(QUERY), controlling=True) as agent:
        agent.set_remote_parameters("peerufragA", "p" * 22)
        agent.restart()
        agent.set_remote_parameters("peerufragB", "q" * 22)
        agent.add_remote_candidate(None)  # (the new generation's end)
        line = f"candidate:1 1 udp 2130706431 {address} 5000 typ host"
        late = dataclasses.replace(trice.Candidate.from_sdp(line), username_fragment="peerufragA")
        agent.add_remote_candidate(late)
        assert agent.statistics().remote_candidates_dropped == 1
        assert agent._mdns is None  # (never opened: nothing to resolve)


async def test_names_being_resolved_count_against_the_cap() -> None:
    """A flood of ``.local`` names stops at ``max_remote_candidates`` like any other."""
    config = _config(QUERY, max_remote_candidates=2)
    async with trice.open_agent(config, controlling=True) as agent:
        agent.set_remote_parameters("abcd", "a" * 22)
        for i in range(2):
            agent.add_remote_candidate(
                trice.Candidate.from_sdp(f"candidate:1 1 udp 1 n{i}.local 9 typ host")
            )
        with pytest.raises(trice.LimitError):
            agent.add_remote_candidate(
                trice.Candidate.from_sdp("candidate:1 1 udp 1 n2.local 9 typ host")
            )
        assert agent._core.pending_remote == 2


async def test_a_candidate_after_a_held_end_of_candidates_is_refused() -> None:
    config = _config(QUERY)
    async with trice.open_agent(config, controlling=True) as agent:
        agent.set_remote_parameters("abcd", "a" * 22)
        agent.add_remote_candidate(
            trice.Candidate.from_sdp("candidate:1 1 udp 1 n.local 9 typ host")
        )
        agent.add_remote_candidate(None)
        for line in (
            "candidate:1 1 udp 1 m.local 9 typ host",
            "candidate:1 1 udp 1 127.0.0.1 9 typ host",
        ):
            with pytest.raises(trice.StateError):
                agent.add_remote_candidate(trice.Candidate.from_sdp(line))


async def test_an_answer_that_comes_after_an_ice_restart_is_not_taken(
    listener: socket.socket,
) -> None:
    """A name asked for before a restart belongs to the old generation: its answer, coming
    after, adds no candidate."""
    config = _config(QUERY, timing=trice.Timing(mdns_timeout=10))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("abcd", "a" * 22)
        agent.add_remote_candidate(
            trice.Candidate.from_sdp("candidate:1 1 udp 1 late-one.local 40000 typ host")
        )
        query, _ = await _next_message(listener, _query_for("late-one.local"))
        assert [q.name for q in query.questions] == ["late-one.local", "late-one.local"]
        agent.restart()
        assert agent._core.pending_remote == 0
        listener.sendto(
            mdns.encode_answer("late-one.local", ["127.0.0.1"]),
            (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT),
        )
        agent.set_remote_parameters("efgh", "b" * 22)
        await trio.testing.wait_all_tasks_blocked(0.05)  # (the agent's mDNS task read it)
        assert "late-one.local" not in _mdns_of(agent)._waiting  # (nobody asks any more)
        assert agent.pair_statistics() == ()


async def test_a_local_name_of_a_peer_that_restarted_first_is_resolved_after_the_restart(
    listener: socket.socket,
) -> None:
    """The peer restarted first, and its new ``.local`` host candidate (a browser's
    default), naming its new ufrag, came before its new parameters, after its old
    generation had ended: it is held, not resolved yet (nor refused: it raised
    StateError, a candidate after end-of-candidates), and once this agent restarts and
    takes the parameters, it is resolved and taken."""
    config = _config(QUERY, timing=trice.Timing(mdns_timeout=10))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("peerold", "p" * 22)
        agent.add_remote_candidate(None)
        named = trice.Candidate.from_sdp("candidate:1 1 udp 1 came-back.local 40003 typ host")
        agent.add_remote_candidate(dataclasses.replace(named, username_fragment="peernew"))
        agent.restart()
        agent.set_remote_parameters("peernew", "q" * 22)
        await _answer_the_next_query(listener, "came-back.local", "127.0.0.1")
        await until(lambda: bool(agent.remote_candidates), within=5)
        assert [(c.address, c.port) for c in agent.remote_candidates] == [("127.0.0.1", 40003)]
        assert agent.statistics().remote_candidates_dropped == 0


@pytest.mark.parametrize("restarted_before", [False, True])
async def test_a_local_name_that_names_a_ufrag_waits_through_a_restart_as_an_address_does(
    listener: socket.socket, restarted_before: bool
) -> None:
    """A ``.local`` candidate that names a ufrag, while the peer's parameters are not known
    (before the first, or after this agent's restart), is held as it is, beside a plain
    candidate of that ufrag: a further restart (a network change, say) drops neither, and
    both are taken once parameters naming them come, the name resolved then.  (It was
    resolved at once, and the restart dropped it, its answer coming too late.)"""
    config = _config(QUERY, timing=trice.Timing(mdns_timeout=10))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        if restarted_before:
            agent.set_remote_parameters("peerold", "p" * 22)
            agent.restart()
        named = trice.Candidate.from_sdp("candidate:1 1 udp 1 peer-x.local 40003 typ host")
        plain = trice.Candidate.from_sdp("candidate:2 1 udp 1 127.0.0.1 40004 typ host")
        agent.add_remote_candidate(dataclasses.replace(named, username_fragment="peernew"))
        agent.add_remote_candidate(dataclasses.replace(plain, username_fragment="peernew"))
        agent.restart()
        agent.set_remote_parameters("peernew", "q" * 22)
        await _answer_the_next_query(listener, "peer-x.local", "127.0.0.1")
        await until(lambda: len(agent.remote_candidates) == 2, within=5)
        assert sorted(c.port for c in agent.remote_candidates) == [40003, 40004]
        assert agent.statistics().remote_candidates_dropped == 0


async def test_the_agent_answers_a_query_once_a_second_and_a_legacy_query_by_unicast(
    listener: socket.socket,
) -> None:
    """RFC 6762 §6: a multicast answer at most once a second per name; §6.7: a query from
    a port other than 5353 gets a unicast answer with its ID and question, TTL 10."""
    async with trice.open_agent(_config(GATHER), controlling=True) as agent:
        await agent.wait_gathering_complete()
        name = agent.local_candidates[0].address
        for _ in range(3):
            listener.sendto(mdns.encode_query(name), (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT))
        answer, _ = await _next_message(listener, _answer_for(name))
        (record,) = answer.records
        assert (record.name, record.address, record.ttl, record.cache_flush) == (
            name,
            "127.0.0.1",
            120,
            True,
        )
        # A query for another name, then nothing more about ours within the second.
        listener.sendto(mdns.encode_query("other.local"), (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT))
        answered, asked = _answer_for(name), _query_for("other.local")
        query, _ = await _next_message(listener, lambda m: answered(m) or asked(m))
        assert not query.is_response  # (the next message seen was not a second answer)

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as legacy:
            legacy.bind(("127.0.0.1", 0))
            legacy.setblocking(False)
            legacy.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1")
            )
            question = bytes.fromhex("1234 0000 0001 0000 0000 0000".replace(" ", ""))
            question += mdns.encode_query(name, (mdns.TYPE_A,))[12:]
            legacy.sendto(question, (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT))
            reply, source = await _next_message(legacy)
        assert reply.id == 0x1234 and reply.is_response
        assert [q.name for q in reply.questions] == [name]
        (record,) = reply.records
        assert (record.address, record.ttl, record.cache_flush) == ("127.0.0.1", 10, False)
        assert source[0] == "127.0.0.1"


async def test_malformed_mdns_is_counted_and_changes_nothing(listener: socket.socket) -> None:
    async with (
        trice.open_agent(_config(GATHER), controlling=True) as a,
        trice.open_agent(_config(GATHER), controlling=False) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        for garbage in (b"", b"\x00" * 11, b"\x00\x00\x84\x00\x00\x00\x00\x05", b"\xff" * 40):
            listener.sendto(garbage, (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT))
        await trio.testing.wait_all_tasks_blocked(0.05)  # (the agents' mDNS tasks read them)
        assert _mdns_of(a).malformed == _mdns_of(b).malformed == 4
        signal(a, b)
        ca, _ = await connect_both(a, b)
        assert ca.selected_pair.remote.address == "127.0.0.1"
        assert b.selected_pair is not None
        assert b.selected_pair.remote.address == "127.0.0.1"


async def test_answers_with_an_opcode_an_error_code_or_no_ttl_are_not_taken(
    listener: socket.socket,
) -> None:
    """RFC 6762 §18.3, §18.11 and §10.1: such answers are not taken; the plain one after
    them is."""
    config = _config(QUERY, timing=trice.Timing(mdns_timeout=10))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("abcd", "a" * 22)
        line = "candidate:1 1 udp 1 asked.local 40000 typ host"
        agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        await _next_message(listener, _query_for("asked.local"))
        group = (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT)
        for flags, address in ((0x8400 | 0x0800, "127.0.0.2"), (0x8400 | 0x0003, "127.0.0.3")):
            forged = bytearray(mdns.encode_answer("asked.local", [address]))
            forged[2:4] = flags.to_bytes(2, "big")
            listener.sendto(bytes(forged), group)
        # A goodbye (TTL 0, RFC 6762 §10.1) says the name is going away: not an answer.
        listener.sendto(mdns.encode_answer("asked.local", ["127.0.0.5"], ttl=0), group)
        await trio.testing.wait_all_tasks_blocked(0.05)  # (the agent's mDNS task read them)
        assert "asked.local" not in _mdns_of(agent)._found
        listener.sendto(mdns.encode_answer("asked.local", ["127.0.0.4"]), group)
        await trio.testing.wait_all_tasks_blocked(0.05)
        (pair,) = agent.pair_statistics()
        assert pair.pair.remote.address == "127.0.0.4"


async def test_the_mdns_socket_closes_with_the_agent() -> None:
    async with trice.open_agent(_config(GATHER), controlling=True) as agent:
        await agent.wait_gathering_complete()
        sock = _mdns_of(agent)._sock
        assert sock.fileno() >= 0
    assert sock.fileno() == -1


def test_a_host_candidate_is_named_and_the_others_left_to_the_caller() -> None:
    """``_named`` gives a host candidate a name the agent answers for; a srflx or relayed
    candidate goes through as it is (the agent hides where it came from: see
    ``test_mdns_hostile``'s test of the related addresses)."""
    from trice._trio._agent import _named

    found = open_mdns(loopback_config().network, lambda: 0.0)
    assert found is not None
    with found._sock:
        srflx = trice.Candidate.from_sdp(
            "candidate:2 1 udp 1 203.0.113.5 4000 typ srflx raddr 127.0.0.1 rport 5000"
        )
        relay = trice.Candidate.from_sdp(
            "candidate:3 1 udp 1 198.51.100.7 4000 typ relay raddr 203.0.113.5 rport 4000"
        )
        host = trice.Candidate.from_sdp("candidate:1 1 udp 1 127.0.0.1 5000 typ host")
        named = _named(host, found)
        assert named is not None
        assert found.names == {named.address: "127.0.0.1"}
        assert _named(srflx, found) == srflx
        assert _named(relay, found) == relay


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
async def test_an_agent_of_ipv6_only_takes_the_ipv6_address_of_a_name_that_has_both(
    listener: socket.socket,
) -> None:
    """A peer's name is answered with an A and an AAAA record; the agent gathers IPv6 only
    (mDNS itself runs over IPv4): it pairs the IPv6 address.  It took the first, IPv4,
    which nothing of its own pairs with."""
    config = loopback_config(ipv6=True, timing=trice.Timing(mdns_timeout=10))
    network = dataclasses.replace(config.network, mdns=trice.MdnsMode.QUERY_ONLY)
    async with trice.open_agent(
        dataclasses.replace(config, network=network), controlling=True
    ) as agent:
        await agent.wait_gathering_complete()
        assert {c.address for c in agent.local_candidates} == {"::1"}
        agent.set_remote_parameters("abcd", "a" * 22)
        line = "candidate:1 1 udp 2130706431 dual.local 40000 typ host"
        agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        await _next_message(listener, _query_for("dual.local"))
        group = (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT)
        listener.sendto(mdns.encode_answer("dual.local", ["127.0.0.1", "::1"]), group)
        await until(lambda: not agent._core.pending_remote)
        assert [s.pair.remote.address for s in agent.pair_statistics()] == ["::1"]


@pytest.mark.skipif(not HAS_IPV6, reason="needs an IPv6 loopback address (::1)")
async def test_a_local_candidate_whose_mdns_cannot_open_holds_no_place() -> None:
    """The first .local candidate opens mDNS, which asks the IP filter of IPv4 addresses
    (its queries go over IPv4): a filter that raises on them raises out of
    add_remote_candidate, and the candidate is not taken.  It held its place all the
    same: the cap refused the next candidate, and an end-of-candidates waited for it, so
    ICE failed at failed_timeout rather than once its one pair failed."""

    def ip_filter(address: trice.IPAddress) -> bool:
        if address.version == 4:
            raise ValueError("the filter's own: IPv6 only")
        return address.is_loopback

    network = trice.NetworkConfig(
        interface_filter=lambda name: name == "lo", ip_filter=ip_filter, ipv4=False, ipv6=True
    )
    network = dataclasses.replace(network, include_loopback=True)
    timing = trice.Timing(pac_timeout=0, max_binding_requests=1, rto=0.2, failed_timeout=20)
    config = trice.AgentConfig(network=network, timing=timing, max_remote_candidates=1)
    named = trice.Candidate.from_sdp(
        "candidate:1 1 udp 2122260223 0c8a9a63-1d3b-4f4e-9e7a-6a4b5f7d1e2c.local 5000 typ host"
    )
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("abcd", "x" * 22)
        with pytest.raises(ValueError, match="the filter's own"):
            agent.add_remote_candidate(named)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as silent:
            silent.bind(("::1", 0))  # (one check, unanswered: the pair fails)
            port = silent.getsockname()[1]
            agent.add_remote_candidate(
                trice.Candidate.from_sdp(f"candidate:2 1 udp 2122260223 ::1 {port} typ host")
            )
            agent.add_remote_candidate(None)
            with trio.fail_after(5), pytest.raises(trice.IceFailedError):
                await agent.connect()


async def test_two_agents_of_one_process_show_no_common_foundation() -> None:
    """Each agent keys its foundations with a secret of its own: two agents of one process
    on the same address signal different foundations under their different names (with a
    key of the process, a peer that met both could tell they were of one host), and an
    agent's own stay the same across a gathering anew."""
    async with (
        trice.open_agent(_config(GATHER), controlling=True) as a,
        trice.open_agent(_config(GATHER), controlling=True) as b,
    ):
        await a.wait_gathering_complete()
        await b.wait_gathering_complete()
        ((fa,), (fb,)) = [{c.foundation for c in x.local_candidates} for x in (a, b)]
        assert fa != fb
        a.restart(regather=True)
        await a.wait_gathering_complete()
        assert {c.foundation for c in a.local_candidates} == {fa}


async def test_a_local_name_that_waits_for_parameters_is_asked_for_before_they_come(
    listener: socket.socket,
) -> None:
    """A ``.local`` candidate that names a ufrag before the peer's parameters is held as it
    is, and its name asked for at once: once the parameters come it is taken at the
    address already answered, with no query after them.  (It was asked for only once
    they came, its answer's time added to the connection's.)"""
    config = _config(QUERY, timing=trice.Timing(mdns_timeout=10))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        named = trice.Candidate.from_sdp("candidate:1 1 udp 1 ahead-x.local 40005 typ host")
        agent.add_remote_candidate(dataclasses.replace(named, username_fragment="peerfirst"))
        await _answer_the_next_query(listener, "ahead-x.local", "127.0.0.1")
        await until(lambda: "ahead-x.local" in _mdns_of(agent)._found, within=5)
        assert not agent.remote_candidates  # (held, not taken: no parameters yet)
        agent.set_remote_parameters("peerfirst", "q" * 22)
        await until(lambda: bool(agent.remote_candidates), within=5)
        assert [(c.address, c.port) for c in agent.remote_candidates] == [("127.0.0.1", 40005)]
        with trio.move_on_after(0.2):  # (no query for it follows the parameters)
            query, _ = await _next_message(listener, _query_for("ahead-x.local"))
            pytest.fail(f"asked again: {[q.name for q in query.questions]}")


async def test_a_name_held_again_right_after_a_restart_is_asked_for(
    listener: socket.socket,
) -> None:
    """A ``.local`` name held before the peer's parameters, then after a restart held again
    (the new generation's, signalled in the same turn): the restart ends the first asking,
    and the name is asked for anew.  (The first asking's record, not yet gone, kept the
    second from starting, and then went: nobody asked.)"""
    config = _config(QUERY, timing=trice.Timing(mdns_timeout=10))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        named = trice.Candidate.from_sdp("candidate:1 1 udp 1 ahead-w.local 40007 typ host")
        agent.add_remote_candidate(dataclasses.replace(named, username_fragment="genone"))
        await trio.testing.wait_all_tasks_blocked(0.05)
        agent.restart()
        agent.add_remote_candidate(dataclasses.replace(named, username_fragment="gentwo"))
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert "ahead-w.local" in _mdns_of(agent)._waiting
