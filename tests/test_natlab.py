"""The NAT lab's own tests: each NAT kind behaves as RFC 4787 says, loss, coturn, teardown."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from natlab import (
    ECHO_ADDRESSES,
    PROBE,
    TURN_ADDRESS,
    Host,
    Lab,
    NatKind,
    leftover_namespaces,
    nat_lab,
    natlab_available,
    reap_stale,
    require_natlab,
)

pytestmark = pytest.mark.natlab

#: How long building a lab may take before a test calls it stuck: a hang guard, 100 times an
#: idle machine's 0.15-0.6 s, not a speed target (speed is for benchmarks to measure).  Each
#: command of the build also has its own timeout (tests/natlab.py).
BUILD_GUARD = 60.0

ALL_KINDS = list(NatKind)
EIM_KINDS = {NatKind.NONE, NatKind.ENDPOINT_INDEPENDENT, NatKind.FULL_CONE}


def _endpoint(endpoint: tuple[str, int]) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


def test_natlab_available_gives_a_reason_or_none() -> None:
    reason = natlab_available()
    assert reason is None or (isinstance(reason, str) and reason)


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.value)
def test_mapping_and_filtering(kind: NatKind) -> None:
    """Mapping: one socket, three server endpoints; filtering: unsolicited vs. answered."""
    require_natlab(turn=False)
    with nat_lab(kind, NatKind.NONE, turn=False) as lab:
        host = lab.host_a
        echo = lab.echo_endpoints()
        assert {address for address, _ in echo} == set(ECHO_ADDRESSES)

        result = host.probe("map", *map(_endpoint, echo))
        local_port = result["local"][1]
        mapped = [tuple(m) for m in result["mapped"]]
        # Replies from an endpoint the host sent to always get through (all mapped, no None).
        assert all(m[0] == host.public_address for m in mapped), result
        ports = {m[1] for m in mapped}
        if kind in EIM_KINDS:
            # Endpoint-independent mapping, and Linux keeps the host's port when it is free.
            assert ports == {local_port}, result
        else:
            # Address-and-port-dependent mapping: a new port per destination endpoint.
            assert len(ports) == len(echo), result

        # Filtering: the host talks to echo[0]; then echo[2] (another address) and echo[1]
        # (same address, another port) send to the mapping the host never sent them from.
        expect_unsolicited = kind in (NatKind.NONE, NatKind.FULL_CONE)
        for other in (echo[2], echo[1]):
            result = host.probe("filter", "--via", _endpoint(echo[0]), "--from", _endpoint(other))
            assert result["mapped"] is not None, result
            assert result["unsolicited"] is expect_unsolicited, (other, result)
            # Once the host has sent to it, the other endpoint's reply gets through.
            assert result["after_send"] is True, (other, result)


def _punch(lab: Lab, port_a: int = 40000, port_b: int = 40001) -> tuple[Any, Any]:
    """Both hosts send to each other's public address at the same time (hole punching)."""

    def start(host: Host, port: int, peer: Host, peer_port: int) -> subprocess.Popen[str]:
        argv = [sys.executable, str(PROBE), "punch", "--port", str(port), "--duration", "1.5"]
        argv.append(f"{peer.public_address}:{peer_port}")
        return host.run(argv, stdout=subprocess.PIPE, text=True)

    procs = [
        start(lab.host_a, port_a, lab.host_b, port_b),
        start(lab.host_b, port_b, lab.host_a, port_a),
    ]
    out_a, out_b = (proc.communicate(timeout=10)[0] for proc in procs)
    return json.loads(out_a), json.loads(out_b)


PUNCH_CASES = [
    # (a, b, connects): what RFC 4787 predicts; the same table as aioice's in such a lab.
    (NatKind.NONE, NatKind.NONE, True),
    (NatKind.ENDPOINT_INDEPENDENT, NatKind.ENDPOINT_INDEPENDENT, True),
    (NatKind.FULL_CONE, NatKind.ENDPOINT_INDEPENDENT, True),
    (NatKind.NONE, NatKind.ENDPOINT_INDEPENDENT, True),
    (NatKind.FULL_CONE, NatKind.SYMMETRIC, True),  # through the peer-reflexive address
    (NatKind.NONE, NatKind.SYMMETRIC, True),
    (NatKind.ENDPOINT_INDEPENDENT, NatKind.SYMMETRIC, False),
    (NatKind.SYMMETRIC, NatKind.SYMMETRIC, False),
]


@pytest.mark.parametrize(
    ("kind_a", "kind_b", "connects"),
    PUNCH_CASES,
    ids=[f"{a.value}-{b.value}" for a, b, _ in PUNCH_CASES],
)
def test_hole_punching(kind_a: NatKind, kind_b: NatKind, connects: bool) -> None:
    """Direct host-to-host UDP, both sending at once (exercises the conntrack-race fix)."""
    require_natlab(turn=False)
    with nat_lab(kind_a, kind_b, turn=False) as lab:
        result_a, result_b = _punch(lab)
    ok = bool(result_a["received_from"] and result_b["received_from"])
    assert ok is connects, (result_a, result_b)
    if connects and kind_a in EIM_KINDS and kind_b in EIM_KINDS:
        # The mappings were preserved: each saw the other at its public address and own port.
        assert result_a["received_from"] == [lab.host_b.public_address, 40001]
        assert result_b["received_from"] == [lab.host_a.public_address, 40000]


def test_loss() -> None:
    """20 % loss on each end of each public link: a round trip survives with p = 0.8**2."""
    require_natlab(turn=False)
    with nat_lab(NatKind.ENDPOINT_INDEPENDENT, NatKind.NONE, loss_percent=20, turn=False) as lab:
        echo = lab.echo_endpoints()
        for host in (lab.host_a, lab.host_b):
            result = host.probe("ping", _endpoint(echo[0]), "--count", 200)
            # Expected 128 of 200 (64 %); sigma is about 7, so this band is very loose.
            assert 95 <= result["received"] <= 160, (host.nat, result)


def test_coturn_answers_stun_binding_behind_nats() -> None:
    require_natlab()
    with nat_lab(NatKind.ENDPOINT_INDEPENDENT, NatKind.SYMMETRIC) as lab:
        assert lab.stun_url == f"stun:{TURN_ADDRESS}:3478"
        assert lab.turn_url == f"turn:{TURN_ADDRESS}:3478?transport=udp"
        assert lab.turn_tcp_url == f"turn:{TURN_ADDRESS}:3478?transport=tcp"
        assert lab.turn_username and lab.turn_password
        for host in (lab.host_a, lab.host_b):
            result = host.probe("stun", _endpoint(lab.turn_address))
            assert result["ok"], result
            assert result["class"] == "success" and result["method"] == 1, result
            assert result["xor_mapped"][0] == host.public_address, result
            # Over TCP too (coturn's TCP listener on the same port).
            result = host.probe("stun-tcp", _endpoint(lab.turn_address))
            assert result["ok"] and result["class"] == "success", result
            assert result["xor_mapped"][0] == host.public_address, result
        # Without loss every echo comes back.
        echo = lab.echo_endpoints()
        result = lab.host_a.probe("ping", _endpoint(echo[0]), "--count", 50)
        assert result["received"] == 50, result


@pytest.mark.parametrize("sink", [True, False], ids=["sink-route", "blackhole-route"])
def test_turn_relay_survives_unroutable_peers(sink: bool) -> None:
    """A relay through coturn works from behind a symmetric NAT, even after sending to a
    private (unroutable) peer address; with a `blackhole` default route it would not."""
    require_natlab()
    with nat_lab(NatKind.ENDPOINT_INDEPENDENT, NatKind.SYMMETRIC) as lab:
        if not sink:  # what the lab deliberately does not do (documents the quirk)
            lab.pub.ip("route", "replace", "blackhole", "default")
        echo = lab.echo_endpoints()
        result = lab.host_b.probe(
            "turn", _endpoint(lab.turn_address),
            "--user", lab.turn_username, "--password", lab.turn_password,
            "--peer", _endpoint(echo[0]),
            "--unroutable", f"{lab.host_a.address}:5000",
        )  # fmt: skip
        assert result["relayed"][0] == TURN_ADDRESS, result
        assert result["mapped"][0] == lab.public_address_b, result
        if sink:
            assert result["ok"] and result["echoed"] == result["relayed"], result
        else:
            assert not result["ok"], result  # coturn got EINVAL and dropped the allocation


def test_coturn_tls() -> None:
    require_natlab()
    with nat_lab(NatKind.FULL_CONE, NatKind.NONE, turn_tls=True) as lab:
        assert lab.turns_url == f"turns:{TURN_ADDRESS}:5349?transport=tcp"
        ca = lab.tls_ca_pem_path
        assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
        result = lab.host_a.probe("stun-tcp", f"{TURN_ADDRESS}:5349", "--tls-ca", ca)
        assert result["ok"] and result["class"] == "success", result
        assert result["xor_mapped"][0] == lab.host_a.public_address, result


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie left to a non-reaping init is dead too


def test_teardown_even_when_the_body_raises() -> None:
    require_natlab()
    pids: list[int] = []
    prefix = ""
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="boom"),
        nat_lab(NatKind.SYMMETRIC, NatKind.FULL_CONE, turn_tls=True) as lab,
    ):
        build_time = time.monotonic() - started
        prefix = lab.prefix
        assert len(leftover_namespaces(prefix)) == 5
        lab.echo_endpoints()
        # A child with a grandchild, pipes left open, as an agent subprocess would.
        proc = lab.host_a.run(
            ["sh", "-c", "sleep 60 & exec cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        lab.host_b.run([sys.executable, "-c", "import time; time.sleep(60)"])
        # A process shows in `ip netns pids` once `ip netns exec` has entered the namespace:
        # look until both have (or 5 s have passed), then assert.
        deadline = time.monotonic() + 5
        while True:
            pids = []
            for ns in lab.namespaces:
                out = subprocess.run(
                    ["ip", "netns", "pids", ns.name], capture_output=True, text=True, check=True
                ).stdout
                pids += [int(pid) for pid in out.split()]
            if (proc.pid in pids and len(pids) >= 5) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert proc.pid in pids
        assert len(pids) >= 5  # coturn, echo server, sh, sleep, python
        raise RuntimeError("boom")
    assert prefix and leftover_namespaces(prefix) == []
    assert [pid for pid in pids if _alive(pid)] == []
    temp = Path(tempfile.gettempdir())
    assert not any(p.name.startswith(prefix) for p in temp.iterdir()), "temp dir left"
    assert build_time < BUILD_GUARD, build_time


def test_build_and_teardown_with_and_without_turn() -> None:
    """A bare lab and one with NATs and coturn build, work and leave nothing behind.  How
    fast they build is a benchmark's business; here a generous guard only catches a stall."""
    require_natlab()
    for kinds, turn in (
        ((NatKind.NONE, NatKind.NONE), False),
        ((NatKind.FULL_CONE, NatKind.SYMMETRIC), True),
    ):
        started = time.monotonic()
        with nat_lab(*kinds, turn=turn) as lab:
            built = time.monotonic() - started
            prefix = lab.prefix
            assert lab.host_a.address == lab.public_address_a or lab.host_a.router is not None
        assert leftover_namespaces(prefix) == [], kinds
        assert built < BUILD_GUARD, (kinds, built)


def test_a_lab_whose_maker_died_is_reaped_by_the_next() -> None:
    """A test run ended by SIGTERM (a job's timeout) never tears its lab down: the next lab
    (or ``reap_stale``) deletes the namespaces whose maker is gone, and ends what runs in
    them.  They were left for good, coturn running."""
    require_natlab()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, 'tests'); from natlab import lone_namespace\n"
            "with lone_namespace('stale') as ns:\n"
            "    p = ns.run(['sleep', '60'])\n"
            "    print(ns.name, p.pid, flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    name, pid = child.stdout.readline().split()
    child.terminate()  # (SIGTERM: no teardown runs)
    child.wait(10)
    child.stdout.close()
    assert name in leftover_namespaces(name)
    assert name in reap_stale()
    assert leftover_namespaces(name) == []
    deadline = time.monotonic() + 5
    while _alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.02)  # (a process killed is gone a moment later)
    assert not _alive(int(pid))
