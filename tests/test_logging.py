"""What trice logs, and how much: a peer, a port scanner or a shortage of descriptors must
not make it write a line per candidate or per attempt at WARNING; each warning names its
agent (its ufrag first, as docs/guide/logging.rst says); addresses are written as URIs
write them ([v6]:port)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal as signals
import socket
import time
from collections.abc import Iterator

import pytest
import trio
import trio.testing

import trice
from trice._trio import _tcp
from trice._trio._agent import _not_warming_up
from trice._trio._log import logger

from coturn import free_port, require_turnserver, run_coturn
from loopback import HAS_IPV6, connect_both, gathered_pair, loopback_config, signal, wait_for_state


class Records(logging.Handler):
    """Every record of the ``trice`` logger, from TRACE up."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(trice.TRACE)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _mdns(mode: trice.MdnsMode) -> trice.AgentConfig:
    base = loopback_config()
    return dataclasses.replace(base, network=dataclasses.replace(base.network, mdns=mode))


@pytest.mark.parametrize(
    ("mode", "line", "said"),
    [
        (trice.MdnsMode.QUERY_ONLY, "224.0.0.{k} {port} typ host", "no check may go there"),
        (trice.MdnsMode.DISABLED, "n{k}.local {port} typ host", "mDNS is disabled"),
    ],
    ids=["no-destination", "mdns-disabled"],
)
async def test_candidates_left_out_are_warned_of_once_an_agent(
    records: Records, mode: trice.MdnsMode, line: str, said: str
) -> None:
    """A peer that signals 500 candidates the agent leaves out (a multicast address, a
    .local name with mDNS disabled) gets one warning, the
    rest at DEBUG; each was a warning (5000 candidates, 5000 lines).  A .local name with
    mDNS disabled is said to be left out for that (it was said to be no .local name)."""
    async with trice.open_agent(_mdns(mode), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("peerufrag", "p" * 22)
        records.records.clear()
        for i in range(500):
            text = line.format(k=i % 250 + 1, port=1000 + i)
            agent.add_remote_candidate(trice.Candidate.from_sdp(f"candidate:{i} 1 udp 9 {text}"))
        ufrag = agent.local_parameters.ufrag
    (warning,) = records.warnings()
    assert warning.startswith(f"{ufrag}: ") and said in warning and "(more such" in warning
    assert len([r for r in records.records if said in r.getMessage()]) == 500


async def test_candidates_of_other_generations_are_said_once_and_never_warned_of(
    records: Records,
) -> None:
    """Candidates naming a ufrag not seen yet are held (a peer that restarted first): said
    at INFO once, then at DEBUG.  After a restart, the earlier generation's, trickled late,
    are left out at DEBUG: expected, no warning."""
    async with trice.open_agent(loopback_config(), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("peerufrag", "p" * 22)
        for i in range(20):
            line = f"candidate:{i} 1 udp 9 127.0.0.1 {1000 + i} typ host ufrag newer"
            agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        agent.restart()
        agent.set_remote_parameters("newer", "q" * 22)
        for i in range(20):
            line = f"candidate:{i} 1 udp 9 127.0.0.1 {2000 + i} typ host ufrag peerufrag"
            agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        assert len(agent.remote_candidates) == 20
        assert agent.statistics().remote_candidates_dropped == 20
    held = [r for r in records.records if "held" in r.getMessage()]
    assert [r.levelno for r in held] == [logging.INFO] + [logging.DEBUG] * 19
    late = [r for r in records.records if "an earlier ICE generation" in r.getMessage()]
    assert len(late) == 20 and {r.levelno for r in late} == {logging.DEBUG}
    assert records.warnings() == []


async def test_candidates_naming_the_agents_own_ufrag_are_warned_of_once(
    records: Records,
) -> None:
    """The application sent the peer's candidates with this agent's own ufrag (a signaling
    mistake): left out, counted, one warning that says so."""
    async with trice.open_agent(loopback_config(), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("peerufrag", "p" * 22)
        own = agent.local_parameters.ufrag
        for i in range(5):
            line = f"candidate:{i} 1 udp 9 127.0.0.1 {1000 + i} typ host ufrag {own}"
            agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        assert agent.remote_candidates == ()
        assert agent.statistics().remote_candidates_dropped == 5
    (warning,) = records.warnings()
    assert "this agent's own ufrag" in warning


async def test_a_candidate_of_a_generation_to_come_no_check_may_go_to_says_so(
    records: Records,
) -> None:
    """One of a generation to come that no check may go to (port 0) is left out for that,
    not said to be past the room of those held (which it had plenty of)."""
    async with trice.open_agent(loopback_config(), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("peerufrag", "p" * 22)
        line = "candidate:1 1 udp 9 127.0.0.1 0 typ host ufrag later"
        agent.add_remote_candidate(trice.Candidate.from_sdp(line))
    (warning,) = records.warnings()
    assert "no check may go there" in warning


async def test_names_held_for_parameters_with_mdns_disabled_are_warned_of_once(
    records: Records,
) -> None:
    """``.local`` candidates of a generation to come, taken by its parameters while mDNS
    is disabled: left out, counted, one warning for all of them (and the debug line about
    candidates of another generation does not count them)."""
    async with trice.open_agent(_mdns(trice.MdnsMode.DISABLED), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("peerufrag", "p" * 22)
        for i in range(3):
            line = f"candidate:{i} 1 udp 9 n{i}.local {1000 + i} typ host ufrag later"
            agent.add_remote_candidate(trice.Candidate.from_sdp(line))
        agent.restart()
        agent.set_remote_parameters("later", "q" * 22)
        assert agent.statistics().remote_candidates_dropped == 3
    (warning,) = records.warnings()
    assert "3 remote .local candidates left out" in warning and "mDNS is disabled" in warning
    assert not any("another ICE generation" in r.getMessage() for r in records.records)


async def test_each_kind_of_candidate_left_out_is_warned_of_once(records: Records) -> None:
    """A .local name under MdnsMode.DISABLED and a multicast address are left out for
    different reasons: each is warned of once (the first kept the other quiet)."""
    async with trice.open_agent(_mdns(trice.MdnsMode.DISABLED), controlling=False) as agent:
        await agent.wait_gathering_complete()
        agent.set_remote_parameters("peerufrag", "p" * 22)
        for line in ("n1.local 1000 typ host", "224.0.0.1 1001 typ host"):
            agent.add_remote_candidate(trice.Candidate.from_sdp(f"candidate:1 1 udp 9 {line}"))
    warnings = records.warnings()
    assert len(warnings) == 2 and "mDNS is disabled" in warnings[0], warnings
    assert "no check may go there" in warnings[1]


def test_accepts_short_of_descriptors_are_warned_of_once_in_a_while(
    records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors, every passive ICE-TCP listener tries again ten times a second:
    one warning in ACCEPT_WARNING_INTERVAL for the process, which counts the others (20
    agents wrote 200 lines a second)."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(_tcp, "_accept_warned_at", float("-inf"))
    monkeypatch.setattr(_tcp, "_accept_unwarned", 0)
    error = OSError(24, "Too many open files")
    for i in range(100):
        _tcp._accept_failed(f"listener {i % 20}", error)
        now[0] += 0.01
    now[0] += _tcp.ACCEPT_WARNING_INTERVAL
    _tcp._accept_failed("listener 0", error)
    warnings = records.warnings()
    assert len(warnings) == 2
    assert "(99 more such, of any listener, since the last warning" in warnings[1]
    assert len(records.records) == 101


async def test_a_relay_lost_is_warned_of_under_its_agents_ufrag(records: Records) -> None:
    """The TURN server goes (killed): each agent's warning that its relay is lost starts
    with its ufrag (they were the server's error alone, the same for every agent)."""
    require_turnserver()
    with run_coturn() as coturn:
        config = loopback_config(
            ice_servers=[coturn.ice_server("tcp")],
            transport_policy=trice.TransportPolicy.RELAY,
            timing=trice.Timing(gather_timeout=3.0),
        )
        async with gathered_pair(config) as (a, b):
            signal(a, b)
            await connect_both(a, b)
            a.restart()  # (the warning names the ufrag as it is then: it named the first)
            ufrags = (a.local_parameters.ufrag, b.local_parameters.ufrag)
            records.records.clear()
            async with b.subscribe() as events:
                os.kill(coturn.pid, signals.SIGKILL)
                with trio.fail_after(5):
                    await wait_for_state(events, trice.ConnectionState.FAILED)
            await trio.testing.wait_all_tasks_blocked()
    lost = [w for w in records.warnings() if "lost" in w]
    assert lost and all(w.startswith(ufrags) for w in lost), records.warnings()


async def test_an_address_that_cannot_be_bound_is_warned_of_under_its_agents_ufrag(
    records: Records,
) -> None:
    port = free_port()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))
        tcp.listen()
        base = loopback_config()
        network = dataclasses.replace(
            base.network, port_range=(port, port), tcp_candidates=(trice.TcpType.PASSIVE,)
        )
        config = dataclasses.replace(base, network=network)
        async with trice.open_agent(config, controlling=True) as agent:
            await agent.wait_gathering_complete()
            ufrag = agent.local_parameters.ufrag
    warnings = records.warnings()
    assert len(warnings) == 2 and all(w.startswith(f"{ufrag}: cannot ") for w in warnings)


def test_the_warm_up_filter_takes_a_record_whose_first_argument_is_a_list() -> None:
    """The filter that hides the warm-up's lines read ``args[0] in frozenset``, which
    raised TypeError (out of the logging call, into trice) for a list: netwatch's
    "address changes: %s came, %s went" while the first agent warmed up."""
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addFilter(_not_warming_up)
    try:
        logger.debug("address changes: %s came, %s went", ["127.0.0.2"], [])
    finally:
        logger.removeFilter(_not_warming_up)
        logger.setLevel(level)


@pytest.mark.skipif(not HAS_IPV6, reason="needs an IPv6 loopback address (::1)")
async def test_ipv6_addresses_in_check_and_selected_lines_are_in_brackets(
    records: Records,
) -> None:
    """``::1:41227`` (or ``2001:db8::1:5000``) does not say where the port begins: the
    TRACE check and recv lines and the DEBUG selected line write ``[::1]:41227``."""
    async with gathered_pair(loopback_config(ipv6=True)) as (a, b):
        signal(a, b)
        await connect_both(a, b)
    lines = [
        r.getMessage()
        for r in records.records
        if any(word in r.getMessage() for word in (" selected ", " check ", ": recv "))
    ]
    assert lines and all("[::1]:" in line for line in lines), lines[:3]
    assert not [line for line in lines if "::1:" in line.replace("[::1]:", "")]
