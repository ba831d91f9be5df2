"""Rules of the agent's mDNS steps (trice/_trio/_agent.py) that the other mDNS tests did not
pin (found by a mutation review; each test here kills a mutant the rest of the suite let
through): ``set_remote_parameters`` ends the asking of names it did not take, and a restart
forgets what mDNS found before it."""

from __future__ import annotations

import dataclasses
import socket

import trio
import trio.testing
from test_mdns import QUERY, _config, _mdns_of, _next_message, listener

import trice
from trice import mdns

from loopback import until

__all__ = ["listener"]  # (the fixture, imported for the tests below)


async def _asked(sock: socket.socket, name: str, within: float) -> None:
    """Wait (at most ``within`` seconds) for a query heard on ``sock`` that asks for
    ``name`` (others skipped: other tests may multicast on loopback too)."""
    with trio.fail_after(within):
        await _next_message(
            sock, lambda m: not m.is_response and name in {q.name for q in m.questions}
        )


# -- names asked for ahead of the peer's parameters --------------------------------------------


async def test_parameters_end_the_asking_of_a_name_of_another_ufrag() -> None:
    """A ``.local`` candidate of ufrag ``other`` came before the peer's parameters: its
    name is asked for ahead.  The parameters name ufrag ``peer``: they do not take it (it
    is left out), and its asking ends at once (not at ``mdns_timeout``).  (Mutant: the
    asking of the names the parameters took is ended instead.)"""
    config = _config(QUERY, timing=trice.Timing(mdns_timeout=10))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        named = trice.Candidate.from_sdp("candidate:1 1 udp 1 ahead-o.local 40011 typ host")
        agent.add_remote_candidate(dataclasses.replace(named, username_fragment="other"))
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert agent._ahead and "ahead-o.local" in agent._ahead
        agent.set_remote_parameters("peer", "q" * 22)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert not agent._ahead, agent._ahead
        assert "ahead-o.local" not in _mdns_of(agent)._waiting


# -- a restart ---------------------------------------------------------------------------------


async def test_a_name_resolved_before_a_restart_is_asked_for_anew_after_it(
    listener: socket.socket,
) -> None:
    """A ``.local`` name resolved in one ICE generation is asked for again when the next
    generation signals it (the peer may have moved: ``Mdns.forget_resolutions``), not
    taken from what mDNS found before the restart.  (Mutant: ``restart`` does not forget
    the resolutions.)"""
    config = _config(QUERY, timing=trice.Timing(mdns_timeout=10))
    async with trice.open_agent(config, controlling=True) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("genone", "q" * 22)
        named = trice.Candidate.from_sdp("candidate:1 1 udp 1 moved-y.local 40013 typ host")
        agent.add_remote_candidate(named)
        await _asked(listener, "moved-y.local", 5)
        listener.sendto(
            mdns.encode_answer("moved-y.local", ["127.0.0.1"]),
            (mdns.MDNS_IPV4_GROUP, mdns.MDNS_PORT),
        )
        await until(lambda: bool(agent.remote_candidates), within=5)
        agent.restart()
        agent.set_remote_parameters("gentwo", "r" * 22)
        agent.add_remote_candidate(named)
        await _asked(listener, "moved-y.local", 2)
