"""The third-party peers (Pion, aioice) talk to each other through the harness, on loopback.

This proves the peer programs and the line protocol before trice's own peer is wired in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from coturn import PASSWORD, USER, run_coturn
from loopback import HAS_IPV6
from peers.harness import (
    Message,
    Peer,
    PeerError,
    connect_pair,
    exchange,
    peer_command,
    peer_pair,
)

pytestmark = pytest.mark.interop

COUNT = 100
KINDS = ["pion", "aioice"]
PAIRS = [(a, b) for a in KINDS for b in KINDS]


@pytest.fixture
def kinds(request: pytest.FixtureRequest) -> tuple[str, str]:
    pair: tuple[str, str] = request.param
    if "pion" in pair:
        request.getfixturevalue("pion_available")
    return pair


def _address(candidate_line: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    assert candidate_line.startswith("candidate:"), candidate_line
    return ipaddress.ip_address(candidate_line.split()[4])


def _check_loopback_pair(msg: Message, version: int) -> None:
    for key in ("local", "remote"):
        if key in msg:
            addr = _address(msg[key])
            assert addr.is_loopback and addr.version == version, msg


def _run_pair(kind_a: str, kind_b: str, *, ipv6: bool = False, lite_b: bool = False) -> None:
    cmd_a = peer_command(kind_a, controlling=True, ipv6=ipv6)
    cmd_b = peer_command(kind_b, controlling=False, ipv6=ipv6, lite=lite_b)
    with peer_pair(cmd_a, cmd_b) as (a, b):
        connected = connect_pair(a, b)
        version = 6 if ipv6 else 4
        _check_loopback_pair(connected.a, version)
        _check_loopback_pair(connected.b, version)
        assert connected.elapsed_ms > 0
        ex_a, ex_b = exchange(a, b, COUNT)
        assert ex_a == {"type": "exchanged", "sent": COUNT, "received": COUNT}
        assert ex_b == {"type": "exchanged", "sent": COUNT, "received": COUNT}
        # A second round is counted separately.
        ex_a, ex_b = exchange(a, b, 5)
        assert (ex_a["received"], ex_b["received"]) == (5, 5)


@pytest.mark.parametrize("kinds", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS], indirect=True)
def test_pair_ipv4(kinds: tuple[str, str]) -> None:
    _run_pair(*kinds)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1) here")
@pytest.mark.parametrize("kinds", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS], indirect=True)
def test_pair_ipv6(kinds: tuple[str, str]) -> None:
    _run_pair(*kinds, ipv6=True)


LITE_PAIRS = [("pion", "pion"), ("aioice", "pion")]


@pytest.mark.parametrize(
    "kinds", LITE_PAIRS, ids=[f"{a}-{b}lite" for a, b in LITE_PAIRS], indirect=True
)
def test_full_controlling_to_lite(kinds: tuple[str, str]) -> None:
    _run_pair(*kinds, lite_b=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_gathers_only_loopback(kind: str, ipv6: bool, request: pytest.FixtureRequest) -> None:
    if kind == "pion":
        request.getfixturevalue("pion_available")
    if ipv6 and not HAS_IPV6:
        pytest.skip("no IPv6 loopback (::1) here")
    with Peer(peer_command(kind, controlling=True, ipv6=ipv6)) as peer:
        desc = peer.local_description()
    params, *candidates, end = desc
    assert params["type"] == "parameters"
    assert params["ufrag"] and params["pwd"]
    assert params["lite"] is False
    assert end == {"type": "end-of-candidates"}
    assert candidates, "no candidate gathered"
    for msg in candidates:
        addr = _address(msg["candidate"])
        assert addr == ipaddress.ip_address("::1" if ipv6 else "127.0.0.1"), msg
        assert " typ host" in msg["candidate"]


def test_aioice_refuses_lite() -> None:
    with Peer(peer_command("aioice", controlling=False, lite=True)) as peer:
        with pytest.raises(PeerError, match="lite"):
            peer.recv(timeout=10)
        assert peer.proc.wait(10) != 0


@pytest.fixture
def coturn() -> Iterator[list[str]]:
    """A coturn on 127.0.0.1 (relaying to loopback peers, tests/coturn.py: free ports for
    it and its relays); yields the peers' TURN options."""
    with run_coturn() as server:
        yield [
            f"--turn=turn:127.0.0.1:{server.port}?transport=udp",
            f"--username={USER}",
            f"--credential={PASSWORD}",
            "--relay-only",
        ]


#: Relay-only through coturn: the third-party pairs, and trice with each peer in both roles.
RELAY_PAIRS = [
    *PAIRS,
    ("trice", "aioice"),
    ("aioice", "trice"),
    ("trice", "pion"),
    ("pion", "trice"),
    ("trice", "trice"),
]


@pytest.mark.parametrize(
    "kinds", RELAY_PAIRS, ids=[f"{a}-{b}" for a, b in RELAY_PAIRS], indirect=True
)
def test_pair_relay_only_through_coturn(kinds: tuple[str, str], coturn: list[str]) -> None:
    kind_a, kind_b = kinds
    cmd_a = peer_command(kind_a, controlling=True, extra=coturn)
    cmd_b = peer_command(kind_b, controlling=False, extra=coturn)
    with peer_pair(cmd_a, cmd_b) as (a, b):
        # Pion waits RelayAcceptanceMinWait (2 s) before nominating a relayed pair.
        connected = connect_pair(a, b, timeout=30)
        for msg in (connected.a, connected.b):
            for key in ("local", "remote"):
                if key in msg:
                    assert " typ relay" in msg[key], msg
                    assert _address(msg[key]).is_loopback, msg
        ex_a, ex_b = exchange(a, b, COUNT)
        assert (ex_a["received"], ex_b["received"]) == (COUNT, COUNT)


def test_trice_peers_that_warm_up_first() -> None:
    """``--warm``: each trice peer calls trice.warm_up() before its agent opens (the
    benchmark's ``trice-trice (warm_up)`` row), then connects and exchanges as usual."""
    cmd_a = [*peer_command("trice", controlling=True), "--warm"]
    cmd_b = [*peer_command("trice", controlling=False), "--warm"]
    with peer_pair(cmd_a, cmd_b) as (a, b):
        connected = connect_pair(a, b)
        _check_loopback_pair(connected.a, 4)
        ex_a, ex_b = exchange(a, b, COUNT)
        assert ex_a == {"type": "exchanged", "sent": COUNT, "received": COUNT}
        assert ex_b == {"type": "exchanged", "sent": COUNT, "received": COUNT}


def test_the_pion_peers_sync_waits_for_the_candidates_it_was_handed(
    pion_available: None,
) -> None:
    """``sync`` is answered once Pion's agent holds the candidates (AddRemoteCandidate hands
    each to its loop from a goroutine of its own): ``held`` says so, also when one came
    twice or as another Pion takes for Equal (held once: the count was of the calls, and
    sync waited out its second)."""
    with Peer(peer_command("pion", controlling=False), name="pion") as pion:
        pion.local_description(10.0)
        pion.send({"type": "parameters", "ufrag": "abcd", "pwd": "a" * 24, "lite": False})
        line = "candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host"
        equal = "candidate:2 1 udp 2130706175 127.0.0.1 40001 typ host"
        another = "candidate:3 1 udp 2130706175 127.0.0.1 40002 typ host"
        for candidate in (line, line, equal, another):
            pion.send({"type": "candidate", "candidate": candidate})
        pion.send({"type": "sync"})
        assert pion.expect("synced", 10.0)["held"] is True
