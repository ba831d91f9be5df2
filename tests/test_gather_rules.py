"""Rules of gathering (trice/_trio/_gather.py) that the other gathering tests did not pin
(found by a mutation review; each test here kills a mutant the rest of the suite let
through): the "nothing can be signalled" report under policy nohost, where a port range is
searched from, the host report's count, the sockets a gathering anew asks STUN servers
from and closes, and the host report of candidates withheld under mDNS."""

from __future__ import annotations

import dataclasses
import socket
import sys

import pytest
import trio
from test_regather import _connected, _restart_both, _stun

import trice
from trice._trio._transport import UdpTransport
from trice.mdns._responder import MdnsResponder

from loopback import HAS_IPV6, filtered_config, loopback_config

# -- host candidates and the host report ------------------------------------------------------


async def test_nohost_with_a_1to1_nat_address_has_something_to_signal() -> None:
    """Policy NOHOST, no STUN or TURN server, but a 1:1 NAT's external address signalled
    as a srflx candidate: that candidate is signalled, so no "nothing can be signalled"
    report is made.  (Mutant: the external srflx address not taken into account.)"""
    base = loopback_config()
    network = dataclasses.replace(base.network, external_addresses=("203.0.113.5",))
    config = dataclasses.replace(
        base, network=network, transport_policy=trice.TransportPolicy.NOHOST
    )
    async with trice.open_agent(config, controlling=True) as a:
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        kinds = [c.type for c in a.local_candidates]
        assert trice.CandidateType.SRFLX in kinds
        errors = [r.error for r in a.gather_reports if r.error is not None]
        assert not any("no candidate can be signalled" in e for e in errors), errors


async def test_host_ports_in_a_port_range_do_not_all_start_at_its_low_end() -> None:
    """A ``port_range`` is searched from a random place in it (as Pion's is): four agents
    opened one after another, each closed before the next, do not all get its lowest free
    port (with a random start, the chance they all match is ~1e-9).  (Mutant: the search
    starts at the range's low end.)"""
    base = loopback_config()
    network = dataclasses.replace(base.network, port_range=(41000, 41999))
    config = dataclasses.replace(base, network=network)
    ports = []
    for _ in range(4):
        async with trice.open_agent(config, controlling=True) as a:
            await a.wait_gathering_complete()
            ports.append(a.local_candidates[0].port)
    assert all(41000 <= port <= 41999 for port in ports)
    assert len(set(ports)) > 1, ports


async def test_the_host_report_counts_each_host_candidate_signalled() -> None:
    """The ``host`` report's ``candidates`` is how many candidates host gathering produced:
    with ICE-TCP active and passive candidates beside the UDP one on 127.0.0.1, three (not
    two, the sockets bound).  (Mutant: the report counts what was bound.)"""
    base = loopback_config()
    network = dataclasses.replace(
        base.network, tcp_candidates=(trice.TcpType.ACTIVE, trice.TcpType.PASSIVE)
    )
    async with trice.open_agent(dataclasses.replace(base, network=network), controlling=True) as a:
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        (host,) = [r for r in a.gather_reports if r.source == "host"]
        assert len(a.local_candidates) == 3
        assert host.candidates == 3, host


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
async def test_a_host_candidate_withheld_under_mdns_gathering_is_reported_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under ``QUERY_AND_GATHER`` an IPv6-only agent's host candidate (::1) has no link its
    ``.local`` name is answered on (an IPv6-only interface, as test_mdns makes it: the
    responder's ``link`` says none for an IPv6 address), mDNS being open: it is not
    signalled, and the host report says why (no link answers), not nothing, nor that mDNS
    could not be opened.  (Mutants: the report's reason left out, or the two reasons
    swapped.)"""
    real_link = MdnsResponder.link

    def link(self: MdnsResponder, name: str) -> object:
        return None if ":" in self.names.get(name, "") else real_link(self, name)

    monkeypatch.setattr(MdnsResponder, "link", link)
    base = loopback_config(ipv6=True)
    network = dataclasses.replace(base.network, mdns=trice.MdnsMode.QUERY_AND_GATHER)
    async with trice.open_agent(dataclasses.replace(base, network=network), controlling=True) as a:
        with trio.fail_after(5):
            await a.wait_gathering_complete()
        (host,) = [r for r in a.gather_reports if r.source == "host"]
        assert host.candidates == 0
        assert host.error == "host candidates withheld: no link answers their .local names"


# -- gathering anew after an address went ------------------------------------------------------


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
async def test_gathering_anew_asks_no_stun_server_from_a_socket_signalled_no_more() -> None:
    """``a`` is connected over 127.0.0.1, which then "goes" (its filter takes ::1 only): the
    gathering anew keeps that socket open (the pair of before carries data over it) but
    signals it no more, so the STUN server (on 127.0.0.1, out of ::1's reach) is not asked
    from it, and no srflx candidate or report of it comes.  (Mutant: every UDP socket asks
    the STUN servers, signalled or not.)"""
    seen: list[tuple[tuple[str, int], bytes]] = []
    allowed = {"127.0.0.1"}
    async with _stun(seen) as url:
        a_config = dataclasses.replace(filtered_config(allowed), ice_servers=[trice.IceServer(url)])
        async with _connected(a_config, filtered_config()) as (a, b, _ca, _cb):
            asked = len(seen)
            assert asked >= 1
            allowed.clear()
            allowed.add("::1")
            await _restart_both(a, b)
            assert len(seen) == asked, seen[asked:]
            assert [(c.type, c.address) for c in a.local_candidates] == [
                (trice.CandidateType.HOST, "::1")
            ]
            assert [r.source for r in a.gather_reports] == ["host"]


@pytest.mark.skipif(not HAS_IPV6, reason="the host has no IPv6 loopback (::1)")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_MEMINFO is Linux's")
async def test_the_kernels_drops_of_a_socket_a_gathering_anew_closed_stay_counted() -> None:
    """A burst the kernel dropped on the 127.0.0.1 socket is counted in ``kernel_dropped``;
    a gathering anew after 127.0.0.1 "went" closes that socket (no pair is on it), and the
    count stays (``AgentStatistics.kernel_dropped``: the agent's sockets, open and
    closed).  (Mutant: a socket a gathering anew closes is not forgotten into the
    count.)"""
    allowed = {"127.0.0.1"}
    async with trice.open_agent(filtered_config(allowed), controlling=False) as agent:
        await agent.wait_gathering_complete()
        for transport in agent._transports.values():
            if isinstance(transport, UdpTransport):
                transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        (candidate,) = agent.local_candidates
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(300):  # (all before the run's next turn)
                sender.sendto(b"x" * 1200, (candidate.address, candidate.port))
        dropped = agent.statistics().kernel_dropped
        assert dropped is not None and dropped >= 200
        allowed.clear()
        allowed.add("::1")
        agent.restart(regather=True)
        with trio.fail_after(5):
            await agent.wait_gathering_complete()
        assert [c.address for c in agent.local_candidates] == ["::1"]
        assert not any(  # (the 127.0.0.1 socket is closed and gone)
            isinstance(t, UdpTransport) and t.local_address[0] == "127.0.0.1"
            for t in agent._transports.values()
        )
        after = agent.statistics().kernel_dropped
        assert after is not None and after >= dropped, (dropped, after)
