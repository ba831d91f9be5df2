"""A trice agent on a UDP mux (``trice.open_udp_mux``, ``open_agent(mux=...)``) against real
third-party ICE agents (Pion, aioice) on loopback.

Both sides are peer programs driven through the line protocol of ``tests/peers/harness.py``:
trice's peer with ``--mux`` opens a mux on 127.0.0.1 (or ``::1``) around its agent, which then
signals one host candidate, the mux's address and port, and tells that address in its
``connected`` message.  Each test checks that the trice side signalled exactly that candidate,
that the selected pair stands on it (as trice and, where it says, the other peer see it),
and that ``COUNT`` datagrams go each way.  ICE-lite on the mux (the usual SFU setup: a lite
server on one public port) is run against both: a full Pion or aioice agent can face a lite
one (only aioice cannot *be* lite).
"""

from __future__ import annotations

import pytest

from loopback import HAS_IPV6
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
    restart_pair,
)

pytestmark = pytest.mark.interop

COUNT = 100
TIMEOUT = 20.0
KINDS = ["aioice", "pion"]
ALL_IN = all_exchanged(COUNT)


def _assert_on_the_mux(
    ours: list[Message], trice_connected: Message, other_connected: Message
) -> None:
    """trice signalled one candidate, a host one at the mux's address, and the selected pair
    stands on it."""
    host, port = trice_connected["mux"].split()
    mux = (host, int(port))
    candidates = [candidate_fields(m["candidate"]) for m in ours if m["type"] == "candidate"]
    assert candidates == [(*mux, "host")], f"trice signalled {candidates}, its mux is {mux}"
    assert candidate_fields(trice_connected["local"])[:2] == mux
    if "remote" in other_connected:  # (the other peer's view of the pair: trice's side)
        assert candidate_fields(other_connected["remote"])[:2] == mux


def _session(
    kind: str,
    *,
    trice_controlling: bool,
    lite: bool = False,
    ipv6: bool = False,
    restart: bool = False,
) -> None:
    """A trice peer on a mux and a ``kind`` peer in the other role connect, and exchange
    ``COUNT`` datagrams each way (with ``restart``, again after both restart ICE)."""
    cmd_trice = peer_command(
        "trice", controlling=trice_controlling, ipv6=ipv6, lite=lite, extra=["--mux"]
    )
    cmd_other = peer_command(kind, controlling=not trice_controlling, ipv6=ipv6)
    with peer_pair(cmd_trice, cmd_other) as (trice_peer, other):
        connected = connect_pair(trice_peer, other, TIMEOUT)
        ours, trice_connected, other_connected = connected.descriptions[0], connected.a, connected.b
        _assert_on_the_mux(ours, trice_connected, other_connected)
        assert exchange(trice_peer, other, COUNT, TIMEOUT) == (ALL_IN, ALL_IN)
        if restart:
            again = restart_pair(trice_peer, other, TIMEOUT)
            host, port = trice_connected["mux"].split()
            assert again.a["mux"] == trice_connected["mux"]  # (the same mux, a new ufrag)
            assert candidate_fields(again.a["local"])[:2] == (host, int(port))
            assert exchange(trice_peer, other, COUNT, TIMEOUT) == (ALL_IN, ALL_IN)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("kind", KINDS, indirect=True)
def test_mux_ipv4(kind: str, trice_controlling: bool) -> None:
    _session(kind, trice_controlling=trice_controlling)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1) here")
@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("kind", KINDS, indirect=True)
def test_mux_ipv6(kind: str, trice_controlling: bool) -> None:
    _session(kind, trice_controlling=trice_controlling, ipv6=True)


@pytest.mark.parametrize("kind", KINDS, indirect=True)
def test_lite_agent_on_a_mux(kind: str) -> None:
    """The SFU setup: an ICE-lite trice agent on a mux (always controlled), a full peer
    (controlling) checking it."""
    _session(kind, trice_controlling=False, lite=True)


@pytest.mark.parametrize("trice_controlling", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("kind", ["pion"], indirect=True)
def test_restart_on_a_mux(kind: str, trice_controlling: bool) -> None:
    """Both restart ICE: the agent moves to its new ufrag on the mux (requests for it are
    routed to it) and carries data again over the same mux address."""
    _session(kind, trice_controlling=trice_controlling, restart=True)
