"""trice with Pion, aioice and libnice across real kernel NATs: the NAT lab
(tests/natlab.py) with a Pion, aioice or libnice peer (``--namespace``: it gathers on its
namespace's links and from the lab's STUN server) in one host namespace and a trice peer in
the other.

Interop and NAT lab at once: runs in ``nox -s interop``, as root (network namespaces,
nftables, coturn as the STUN server), the Pion tests with Go and Pion's sources, the libnice
one with libnice through GObject introspection; skips, saying which is missing, otherwise.
"""

from __future__ import annotations

import sys
import time

import pytest

from natlab import Host, Lab, NatKind, nat_lab, require_natlab
from peers.harness import (
    _REPORTS,
    AIOICE_PEER,
    LIBNICE_PEER,
    Message,
    Peer,
    PeerError,
    PeerUnavailable,
    _swap_descriptions,
    libnice_python,
    pion_binary,
)
from test_nat_outcomes import (
    COUNT,
    EIM,
    NONE,
    SYM,
    _addresses,
    _exchange_over,
    _implied,
    _peer,
    _renumber,
    _signal,
    _typ,
)

pytestmark = [pytest.mark.natlab, pytest.mark.interop]


@pytest.fixture(autouse=True)
def _need_lab() -> None:
    require_natlab()


@pytest.fixture
def need_pion() -> None:
    try:
        pion_binary()
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


def _pion(lab: Lab, host: Host, controlling: bool) -> Peer:
    argv = [
        str(pion_binary()),
        "--controlling" if controlling else "--controlled",
        "--namespace",
        f"--stun={lab.stun_url}",
        "--report-selected",
    ]
    return Peer(host.argv(argv), name=f"pion-{host.name}")


def _trice(lab: Lab, host: Host, controlling: bool, *extra: str) -> Peer:
    return _peer(lab, host, controlling, "--report-selected", *extra)


def _connected(peer: Peer, timeout: float = 30.0) -> Message:
    """The peer's ``connected`` message (``selected`` and ``state`` reports before it are
    passed over: the last selected pair is the one ``connected`` names)."""
    deadline = time.monotonic() + timeout
    while (msg := peer.recv(max(0.0, deadline - time.monotonic())))["type"] != "connected":
        assert msg["type"] in _REPORTS, msg
    return msg


ROLES = ["trice-controlling", "trice-controlled"]
NATS = [(EIM, EIM), (EIM, NONE), (NONE, SYM), (SYM, NONE)]


@pytest.mark.usefixtures("need_pion")
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("nats", NATS, ids=[f"trice_{a.name}-pion_{b.name}" for a, b in NATS])
def test_trice_and_pion_connect_across_nats(nats: tuple[NatKind, NatKind], role: str) -> None:
    """trice behind the first NAT (host a), Pion behind the second (host b): both select
    the same path, with the candidate types the NATs imply, and data goes both ways over it.
    Behind a symmetric NAT, whose mapping towards the peer only the checks show, trice
    names its end of the pair peer-reflexive; Pion, which learns no peer-reflexive
    candidate of its own, names it by its base, the host candidate."""
    trice_controls = role == "trice-controlling"
    with nat_lab(*nats) as lab:
        a = _trice(lab, lab.host_a, trice_controls)
        b = _pion(lab, lab.host_b, not trice_controls)
        with a, b:
            _signal(a, b)
            ca, cb = _connected(a), _connected(b)
            for local, remote, host in ((ca, cb, lab.host_a), (cb, ca, lab.host_b)):
                if host.nat is SYM:
                    assert _typ(local["local"]) == ("prflx" if local is ca else "host"), local
                    assert _typ(remote["remote"]) == "prflx", remote
                    assert _addresses(remote)[1] == host.public_address, remote
                else:
                    assert _implied(local["local"], host), (local, host.nat)
                    assert _implied(remote["remote"], host), (remote, host.nat)
                    assert _addresses(local)[0] == _addresses(remote)[1], (local, remote)
            _exchange_over(a, b, (_addresses(ca), _addresses(cb)))


@pytest.mark.usefixtures("need_pion")
@pytest.mark.parametrize("behind", ["trice-controlling", "pion-controlling"])
def test_a_nat_whose_public_address_changes_is_followed_with_pion(behind: str) -> None:
    """The controlling agent behind an endpoint-independent NAT (trice on host a, or Pion
    on host b), the controlled one on the internet, connected; then the NAT's public
    address changes, and the kernel forgets its mappings.

    - trice controlling, behind it: its consent answers show the new mapped address, it
      nominates its pair again, and Pion selects the pair with the new address.
    - Pion controlling, behind it: Pion does not nominate again (its checks go on, from
      the new address); trice, controlled, selects that pair itself once its own consent
      checks have gone unanswered for twice the quiet time.

    (Measured on 2026-12-05: Pion followed some 2 s after the change; trice, with Pion
    checking every 2 s, moved after some 6 s.)

    Both go on over the new address, data too, without an ICE restart."""
    trice_behind = behind == "trice-controlling"
    with nat_lab(*((EIM, NONE) if trice_behind else (NONE, EIM))) as lab:
        host = lab.host_a if trice_behind else lab.host_b
        other = lab.host_b if trice_behind else lab.host_a
        old = host.public_address
        a = _trice(lab, lab.host_a, trice_behind, "--failed-timeout=30")
        b = _pion(lab, lab.host_b, not trice_behind)
        with a, b:
            _signal(a, b)
            ca, cb = _connected(a), _connected(b)
            public = b if trice_behind else a
            seen_from_public = _addresses(cb if trice_behind else ca)
            assert seen_from_public == (other.address, old), seen_from_public
            _exchange_over(a, b, (_addresses(ca), _addresses(cb)))
            new = _renumber(host)
            moved = public.recv(40)
            assert moved["type"] == "selected", moved
            assert _addresses(moved) == (other.address, new), moved
            paths = [_addresses(ca), _addresses(cb)]
            paths[1 if trice_behind else 0] = _addresses(moved)
            _exchange_over(a, b, (paths[0], paths[1]))


def _until_state(peer: Peer, state: str, timeout: float) -> float:
    """Read the peer's messages (with ``--report-states``) until it says ``state``;
    returns how long that took."""
    start = time.monotonic()
    while (msg := peer.recv(max(0.0, start + timeout - time.monotonic())))["type"] != "state" or (
        msg["state"] != state
    ):
        pass
    return time.monotonic() - start


@pytest.mark.usefixtures("need_pion")
def test_a_remapped_controlled_agent_under_pion_says_disconnected_and_a_restart_mends_it() -> None:
    """trice, controlled, behind an endpoint-independent NAT; Pion, controlling, on the
    internet; connected.  The NAT's public address changes: trice's checks and data reach
    Pion from the new address, but Pion goes on sending to the old one (it moves to no
    other pair by itself), and its data is lost.  trice sees the new mapped address in the
    answers to its consent checks, and hears nothing from Pion on the pair: it says
    ``disconnected`` (twice the quiet time on; before 2026-12-05 it said nothing, and
    stayed ``completed``), and the application's ICE restart brings data back both ways
    (trice signals its candidates of before, the server-reflexive one stale: Pion learns
    the new address from trice's checks)."""
    with nat_lab(EIM, NONE) as lab:
        a = _peer(lab, lab.host_a, False, "--report-states", "--failed-timeout=30")
        b = _pion(lab, lab.host_b, True)
        with a, b:
            _signal(a, b)
            _until_state(a, "connected", 30)
            _connected(b)
            _until_data_both_ways(a, b, 0)
            _renumber(lab.host_a)
            assert _until_state(a, "disconnected", 30) < 30
            for peer in (a, b):
                peer.send({"type": "restart"})
            _swap_descriptions(a, b, 20)
            _until_state(a, "connected", 30)
            _connected(b)  # (Pion says connected again after a restart)
            _until_data_both_ways(a, b, 0)


def _aioice(lab: Lab, host: Host, controlling: bool) -> Peer:
    argv = [
        sys.executable,
        str(AIOICE_PEER),
        "--controlling" if controlling else "--controlled",
        "--namespace",
        f"--stun={lab.stun_url}",
    ]
    return Peer(host.argv(argv), name=f"aioice-{host.name}")


def _until_data_both_ways(a: Peer, b: Peer, timeout: float) -> tuple[float, list[Message]]:
    """Data rounds of ``COUNT`` datagrams each way, a second apart, until one arrives whole
    both ways; returns how long that took, and the reports ``a`` sent meanwhile."""
    start = time.monotonic()
    reports: list[Message] = []
    while True:
        for peer in (a, b):
            peer.send({"type": "exchange", "count": COUNT})
        got = []
        for peer in (a, b):
            while (msg := peer.recv(20))["type"] != "exchanged":
                assert msg["type"] in _REPORTS, msg
                if peer is a:
                    reports.append(msg)
            got.append(msg["received"])
        took = time.monotonic() - start
        if got == [COUNT, COUNT]:
            return took, reports
        assert took < timeout, got
        time.sleep(1.0)


@pytest.mark.parametrize("behind", ["trice-controlling", "aioice-controlling"])
def test_a_nat_whose_public_address_changes_is_followed_with_aioice(behind: str) -> None:
    """As with Pion, with aioice (from PyPI) as the peer: the controlling agent behind an
    endpoint-independent NAT, the other on the internet; the NAT's public address changes
    while they are connected.  trice controlling, behind it: it nominates its pair again,
    and aioice follows.  aioice controlling, behind it (it does not nominate again): trice
    selects the pair with the new address by itself, twice the quiet time on (aioice
    checks consent every 5 s or so).  Data goes both ways again, without an ICE restart:
    measured on 2026-12-05, in rounds a second apart, 6 s after the change with trice
    controlling and 12 s with aioice controlling; at 178f756 both sessions failed."""
    trice_behind = behind == "trice-controlling"
    with nat_lab(*((EIM, NONE) if trice_behind else (NONE, EIM))) as lab:
        host = lab.host_a if trice_behind else lab.host_b
        a = _trice(lab, lab.host_a, trice_behind, "--failed-timeout=30")
        b = _aioice(lab, lab.host_b, not trice_behind)
        with a, b:
            _signal(a, b)
            _connected(a)
            b.expect("connected", 30)
            _until_data_both_ways(a, b, 0)
            new = _renumber(host)
            _, reports = _until_data_both_ways(a, b, 30)
            if not trice_behind:
                selected = [msg for msg in reports if msg["type"] == "selected"]
                assert selected and _addresses(selected[-1])[1] == new, reports


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", ["pion", "aioice"])
def test_trice_and_a_real_peer_connect_over_lossy_links(
    kind: str, role: str, request: pytest.FixtureRequest
) -> None:
    """5 % of the packets lost at each end of each public link (some 10 % each way between
    the hosts, STUN to the lab's server included), trice behind an endpoint-independent
    NAT, Pion or aioice on the internet, every timer at its default: both connect, on the
    same pair, trice's end of it at the NAT's public address (server-reflexive, or
    peer-reflexive when gathering lost every STUN answer).  Measured on 2026-12-05, 20
    sessions with each peer, roles alternating: all connected; with Pion both at once,
    within 0.61 s of the start (Pion waits 0.5 s before nominating a reflexive pair), with
    aioice within 1.52 s, aioice up to 1.5 s after trice (its check's retransmission)."""
    if kind == "pion":
        request.getfixturevalue("need_pion")
    trice_controls = role == "trice-controlling"
    with nat_lab(EIM, NONE, loss_percent=5) as lab:
        a = _trice(lab, lab.host_a, trice_controls, "--failed-timeout=30")
        peer = _pion if kind == "pion" else _aioice
        b = peer(lab, lab.host_b, not trice_controls)
        with a, b:
            _signal(a, b)
            ca, cb = _connected(a), _connected(b)
    assert _addresses(ca) == tuple(reversed(_addresses(cb))), (ca, cb)
    assert _addresses(ca) == (lab.host_a.public_address, lab.host_b.public_address), ca
    assert _typ(ca["local"]) in ("srflx", "prflx"), ca


@pytest.fixture
def need_libnice() -> None:
    try:
        libnice_python()
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


def _libnice(lab: Lab, host: Host, controlling: bool) -> Peer:
    argv = [
        libnice_python(),
        str(LIBNICE_PEER),
        "--controlling" if controlling else "--controlled",
        "--namespace",
        f"--stun={lab.stun_url}",
    ]
    return Peer(host.argv(argv), name=f"libnice-{host.name}")


def _states_for(peer: Peer, seconds: float) -> list[tuple[float, str]]:
    """The states the peer (with ``--report-states``) says within ``seconds``, each with
    when it said it; nothing but reports may come meanwhile."""
    start = time.monotonic()
    states = []
    while (left := start + seconds - time.monotonic()) > 0:
        try:
            msg = peer.recv(left)
        except PeerError:
            assert peer.proc.poll() is None, "the peer exited"
            break
        assert msg["type"] in _REPORTS, msg
        if msg["type"] == "state":
            states.append((round(time.monotonic() - start, 1), msg["state"]))
    return states


@pytest.mark.usefixtures("need_libnice")
def test_a_remapped_agent_under_libnice_keepalive_indications_does_not_flap() -> None:
    """trice, controlling, behind an endpoint-independent NAT; libnice (RFC 5245 mode, no
    consent freshness: once connected it sends no checks, only a keepalive indication
    every 25 s), controlled, on the internet; connected, and idle.  The NAT's public
    address changes: trice nominates its pair again and libnice follows; then only
    libnice's indications say it is there.  Over 55 s trice says ``disconnected`` once at
    most (before libnice's first indication shows it an older peer), and data goes both
    ways at the end.  Measured on 2026-12-05: no state change at all (libnice's first
    indication had come before the change); at b22a043, where trice judged libnice's
    silence by the pace of its checks at connecting, ``disconnected`` 6.6 s after the
    change, ``connected`` at libnice's indication (26.8 s), ``disconnected`` 4.8 s later,
    ``connected`` at the next (51.8 s)."""
    with nat_lab(EIM, NONE) as lab:
        a = _trice(lab, lab.host_a, True, "--report-states", "--failed-timeout=30")
        b = _libnice(lab, lab.host_b, False)
        with a, b:
            _signal(a, b)
            _connected(a)
            b.expect("connected", 30)
            _until_data_both_ways(a, b, 0)
            _renumber(lab.host_a)
            states = _states_for(a, 55)
            disconnected = [at for at, state in states if state == "disconnected"]
            assert len(disconnected) <= 1, states
            _until_data_both_ways(a, b, 0)


@pytest.mark.usefixtures("need_libnice")
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("flow", ["idle", "data"])
def test_libnice_behind_a_nat_whose_public_address_changes_is_followed(
    role: str, flow: str
) -> None:
    """libnice behind an endpoint-independent NAT, trice on the internet (controlling or
    controlled); connected.  The NAT's public address changes: libnice, an RFC 5245
    agent, checks nothing more once connected; its keepalive indications (25 s apart, and
    only when it sends no data) and its data come from the new address, while trice's
    consent checks go to the forgotten mapping.  trice checks the address they come from,
    libnice answers, and trice moves there (controlling: it nominates the pair;
    controlled: it selects it), data going both ways again.

    ``idle``: nothing is sent after the change but libnice's indication, 25 s after its
    last data; trice has RFC 7675's 30 s of consent here (``--failed-timeout=30``, trice's
    default since 2026-12-05: with 25 s, the default until then, it ran out first, 2 runs
    of 2).  Measured on 2026-12-05: ``completed`` over the new address 25.0 s after the
    change (8 runs); at d10b248 consent ran out, and ICE failed, in both roles.
    ``data``: rounds of data a second apart from the change on: data both ways again 6.0
    s after the change (2 runs of each role: twice the quiet time, then libnice's next
    datagram checked); at 34f52b9, before data was taken as a sign, not within 20 s."""
    with nat_lab(NONE, EIM) as lab:
        a = _trice(
            lab, lab.host_a, role == "trice-controlling", "--report-states", "--failed-timeout=30"
        )
        b = _libnice(lab, lab.host_b, role != "trice-controlling")
        with a, b:
            _signal(a, b)
            _connected(a)
            b.expect("connected", 30)
            _until_data_both_ways(a, b, 0)
            new = _renumber(lab.host_b)
            start = time.monotonic()
            moved: Message | None = None
            if flow == "data":
                _, reports = _until_data_both_ways(a, b, 20)
                moved = [msg for msg in reports if msg["type"] == "selected"][-1]
            else:
                while (msg := a.recv(max(0.0, start + 40 - time.monotonic())))[
                    "type"
                ] != "state" or (msg["state"] != "completed" or moved is None):
                    assert msg["type"] in _REPORTS, msg
                    if msg["type"] == "selected":
                        moved = msg
            assert moved is not None and _addresses(moved)[1] == new, moved
            _until_data_both_ways(a, b, 0)
