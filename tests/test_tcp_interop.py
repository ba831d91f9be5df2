"""ICE-TCP (RFC 6544) against a real third-party agent: trice's active candidate connects to
Pion's passive one (Pion's ``TCPMux`` on 127.0.0.1), in both roles, and ``COUNT`` datagrams
go each way.  Also trice against trice in two processes, one active and one passive.

Pion 2.3.1 gathers passive TCP candidates only, and drops a remote active one: it learns
trice's side as a peer-reflexive candidate when trice's check arrives over the connection.
aioice has no ICE-TCP.  Both peers are programs driven through the line protocol of
``tests/peers/harness.py``; trice's with ``--tcp``, Pion's with ``--tcp`` (which makes it
gather TCP only); trice's against trice's with ``--no-udp`` too (describing TCP only).
"""

from __future__ import annotations

import pytest

from peers.harness import (
    ROLE_IDS,
    ROLES,
    Message,
    all_exchanged,
    candidate_fields,
    connect_pair,
    exchange,
    peer_command,
    peer_pair,
)

pytestmark = pytest.mark.interop

COUNT = 100
TIMEOUT = 20.0
ALL_IN = all_exchanged(COUNT)


def _candidates(description: list[Message]) -> list[str]:
    return [m["candidate"] for m in description if m["type"] == "candidate"]


def _tcp_candidates(description: list[Message]) -> list[str]:
    return [line for line in _candidates(description) if " tcp " in line]


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
def test_trice_active_connects_to_pion_passive(
    trice_controlling: bool, pion_available: None
) -> None:
    cmd_trice = peer_command("trice", controlling=trice_controlling, extra=["--tcp", "active"])
    cmd_pion = peer_command("pion", controlling=not trice_controlling, extra=["--tcp"])
    with peer_pair(cmd_trice, cmd_pion) as (trice_peer, pion):
        connected = connect_pair(trice_peer, pion, TIMEOUT)
        ours, theirs = connected.descriptions
        (active,) = _tcp_candidates(ours)
        assert active.endswith(" 127.0.0.1 9 typ host tcptype active")
        (passive,) = _tcp_candidates(theirs)
        assert passive.endswith("tcptype passive")
        # trice selected its connection from the active candidate to Pion's passive one.
        local, remote = connected.a["local"], connected.a["remote"]
        assert " tcp " in local and local.endswith(
            "typ prflx raddr 127.0.0.1 rport 9 tcptype active"
        )
        assert candidate_fields(remote) == candidate_fields(passive)
        # Pion selected the same connection: its passive candidate, and trice's port.
        assert candidate_fields(connected.b["local"]) == candidate_fields(passive)
        assert candidate_fields(connected.b["remote"])[:2] == candidate_fields(local)[:2]
        assert exchange(trice_peer, pion, COUNT, TIMEOUT) == (ALL_IN, ALL_IN)


@pytest.mark.parametrize(
    "active_controlling", ROLES, ids=["active-controlling", "passive-controlling"]
)
def test_trice_active_connects_to_trice_passive_in_another_process(
    active_controlling: bool,
) -> None:
    """Two trice processes, each describing its TCP candidate only (``--no-udp``)."""
    cmd_active = peer_command(
        "trice", controlling=active_controlling, extra=["--tcp", "active", "--no-udp"]
    )
    cmd_passive = peer_command(
        "trice", controlling=not active_controlling, extra=["--tcp", "passive", "--no-udp"]
    )
    with peer_pair(cmd_active, cmd_passive) as (active, passive):
        connected = connect_pair(active, passive, TIMEOUT)
        ours, theirs = connected.descriptions
        (offered_active,) = _candidates(ours)
        (offered_passive,) = _candidates(theirs)
        assert offered_active.endswith(" 9 typ host tcptype active")
        assert offered_passive.endswith("tcptype passive")
        local = connected.a["local"]
        assert local.endswith("typ prflx raddr 127.0.0.1 rport 9 tcptype active")
        assert candidate_fields(connected.a["remote"]) == candidate_fields(offered_passive)
        assert candidate_fields(connected.b["local"]) == candidate_fields(offered_passive)
        assert candidate_fields(connected.b["remote"])[:2] == candidate_fields(local)[:2]
        assert exchange(active, passive, COUNT, TIMEOUT) == (ALL_IN, ALL_IN)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
def test_with_pion_offering_udp_and_tcp_the_udp_pair_is_selected(
    trice_controlling: bool, pion_available: None
) -> None:
    """A mixed deployment: trice offers UDP and an active TCP candidate, Pion UDP and a
    passive TCP one; both work on loopback, and both agents select the UDP pair (TCP ranks
    below), which carries the data."""
    cmd_trice = peer_command("trice", controlling=trice_controlling, extra=["--tcp", "active"])
    cmd_pion = peer_command(
        "pion", controlling=not trice_controlling, extra=["--tcp", "--also-udp"]
    )
    with peer_pair(cmd_trice, cmd_pion) as (trice_peer, pion):
        connected = connect_pair(trice_peer, pion, TIMEOUT)
        ours, theirs = connected.descriptions
        assert len(_tcp_candidates(ours)) == len(_tcp_candidates(theirs)) == 1
        assert len(_candidates(theirs)) == 2  # (Pion's UDP and TCP host candidates)
        for end in ("local", "remote"):
            assert connected.a[end].split()[2] == "udp", connected.a
            assert connected.b[end].split()[2] == "udp", connected.b
        assert exchange(trice_peer, pion, COUNT, TIMEOUT) == (ALL_IN, ALL_IN)
