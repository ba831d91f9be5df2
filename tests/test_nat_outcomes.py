"""trice across real kernel NATs: the outcome table of the "NATs and TURN" guide.

Each test builds the NAT lab (tests/natlab.py: network namespaces, nftables NATs of the RFC 4787
kinds, coturn on a documentation address), runs a trice peer (tests/peers/trice_peer.py) in
each host namespace, relays their parameters and candidates, and checks what the topology
implies.  Needs root, ``ip``, ``nft`` and ``turnserver``; skips with the reason otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from natlab import PUBLIC_GATEWAY, Host, Lab, NatKind, nat_lab, require_natlab
from peers.harness import TRICE_PEER, Message, Peer, PeerError, exchange

pytestmark = pytest.mark.natlab

NONE, EIM, FULL, SYM = (
    NatKind.NONE,
    NatKind.ENDPOINT_INDEPENDENT,
    NatKind.FULL_CONE,
    NatKind.SYMMETRIC,
)
FAILED_TIMEOUT = 4.0
COUNT = 50
#: Checks sent per pair when the hard NATs must fail: so many (minutes of retransmissions) that
#: only the failed timeout can end ICE soon.
FAIL_CHECKS = 100
#: How long the hard NATs may take to fail: several times FAILED_TIMEOUT, to spare a loaded
#: machine, yet short of the 25 s default failed timeout and of the checks running out.
FAIL_GUARD = 20.0


def _typ(line: str) -> str:
    tokens = line.split()
    return tokens[tokens.index("typ") + 1]


def _peer(
    lab: Lab,
    host: Host,
    controlling: bool,
    *extra: str,
    turn: str | None = None,
    stun: bool = True,
) -> Peer:
    argv = [
        sys.executable,
        str(TRICE_PEER),
        "--controlling" if controlling else "--controlled",
        "--namespace",
        *([f"--stun={lab.stun_url}"] if stun else []),
        f"--failed-timeout={FAILED_TIMEOUT}",
        "--connect-timeout=30",
        *extra,
    ]
    if not any(arg.startswith("--gather-timeout") for arg in extra):
        argv.append("--gather-timeout=2")
    if turn is not None:
        argv += [f"--turn={turn}", f"--username={lab.turn_username}"]
        argv += [f"--credential={lab.turn_password}"]
    return Peer(host.argv(argv), name=host.name)


@contextmanager
def _peers(a: Peer, b: Peer) -> Iterator[tuple[Peer, Peer]]:
    with a, b:
        yield a, b


def _signal(a: Peer, b: Peer, desc_a: list[Message] | None = None) -> None:
    """Relay the two peers' descriptions (``a``'s as already read, if given), then start."""
    if desc_a is None:
        desc_a = a.local_description(15)
    desc_b = b.local_description(15)
    for msg in desc_b:
        a.send(msg)
    for msg in desc_a:
        b.send(msg)
    a.send({"type": "start"})
    b.send({"type": "start"})


def _connected_and_exchanged(a: Peer, b: Peer) -> tuple[Message, Message]:
    """Both peers say they are connected (their ``connected`` messages, returned), and
    ``COUNT`` datagrams go each way."""
    ca, cb = a.expect("connected", 30), b.expect("connected", 30)
    got_a, got_b = exchange(a, b, COUNT)
    assert (got_a["received"], got_b["received"]) == (COUNT, COUNT)
    return ca, cb


def _connect(lab: Lab, *, turn: str | None = None, relay_only: bool = False) -> tuple[str, ...]:
    """Connect the two hosts; returns the types (a local, a remote, b local, b remote)."""
    return tuple(_typ(line) for line in _connect_lines(lab, turn=turn, relay_only=relay_only))


def _connect_lines(
    lab: Lab, *, turn: str | None = None, relay_only: bool = False
) -> tuple[str, str, str, str]:
    """Connect the two hosts; returns the selected candidates' lines (a local, a remote, b
    local, b remote)."""
    extra = ("--relay-only",) if relay_only else ()
    with _peers(
        _peer(lab, lab.host_a, True, *extra, turn=turn),
        _peer(lab, lab.host_b, False, *extra, turn=turn),
    ) as (a, b):
        _signal(a, b)
        ca, cb = _connected_and_exchanged(a, b)
        return (ca["local"], ca["remote"], cb["local"], cb["remote"])


def _expect_failure(lab: Lab, *, stun: bool = True) -> float:
    """Both hosts must report ICE failure within FAIL_GUARD; returns how long it took."""
    checks = f"--max-binding-requests={FAIL_CHECKS}"
    peer_a = _peer(lab, lab.host_a, True, checks, stun=stun)
    peer_b = _peer(lab, lab.host_b, False, checks, stun=stun)
    with _peers(peer_a, peer_b) as (a, b):
        _signal(a, b)
        start = time.monotonic()
        for peer in (a, b):
            with pytest.raises(PeerError, match="IceFailedError"):
                peer.recv(max(0.0, start + FAIL_GUARD - time.monotonic()))
        return time.monotonic() - start


@pytest.fixture(autouse=True)
def _need_lab() -> None:
    require_natlab()


def _type_behind(nat: NatKind) -> str:
    return "host" if nat is NONE else "srflx"


OPEN = [(NONE, NONE), (NONE, EIM), (NONE, FULL), (EIM, EIM), (EIM, FULL), (FULL, FULL)]


@pytest.mark.parametrize("nats", OPEN, ids=[f"{a.name}-{b.name}" for a, b in OPEN])
def test_open_nats_connect_with_the_implied_types(nats: tuple[NatKind, NatKind]) -> None:
    with nat_lab(*nats) as lab:
        a_local, a_remote, b_local, b_remote = _connect_lines(lab)
        for line, host in ((a_local, lab.host_a), (b_remote, lab.host_a)):
            assert _implied(line, host), (line, host.nat)
        for line, host in ((b_local, lab.host_b), (a_remote, lab.host_b)):
            assert _implied(line, host), (line, host.nat)


def _implied(line: str, host: Host) -> bool:
    """Whether a selected candidate of ``host`` has the type its NAT implies.

    A full-cone NAT may, once in a while, map a host's socket anew towards the peer: the
    peer's first check and the host's own, crossing in the NAT at the same instant, make
    two conntrack entries for one flow, and masquerade resolves the clash with another port
    (``shared/natlab-notes.md``, "the conntrack hole-punching race"; the lab avoids it for
    endpoint-independent NATs, but a full cone must let new inbound traffic in).  ICE then
    learns that mapping as peer-reflexive: accepted for a full cone only, and only on the
    NAT's own public address."""
    typ = _typ(line)
    if typ == _type_behind(host.nat):
        return True
    address = line.split()[4]
    return host.nat is FULL and typ == "prflx" and address == host.public_address


@pytest.mark.parametrize("nat", [NONE, FULL], ids=["NONE", "FULL_CONE"])
def test_against_symmetric_through_a_peer_reflexive_candidate(nat: NatKind) -> None:
    with nat_lab(nat, SYM) as lab:
        a_local, a_remote, _b_local, _b_remote = _connect(lab)
    assert a_local == _type_behind(nat)
    assert a_remote == "prflx"  # the symmetric NAT's mapping towards a is new to everyone


HARD = [(EIM, SYM), (SYM, SYM)]


@pytest.mark.parametrize("nats", HARD, ids=[f"{a.name}-{b.name}" for a, b in HARD])
def test_hard_nats_fail_within_the_failed_timeout(nats: tuple[NatKind, NatKind]) -> None:
    with nat_lab(*nats, turn=True) as lab:
        elapsed = _expect_failure(lab)
    # Ended by the failed timeout: the checks alone would run for minutes (FAIL_CHECKS), and
    # a peer that ignored --failed-timeout would take the default 25 s.
    assert elapsed < FAIL_GUARD


@pytest.mark.parametrize("nats", HARD, ids=[f"{a.name}-{b.name}" for a, b in HARD])
def test_hard_nats_connect_through_a_relay_with_turn(nats: tuple[NatKind, NatKind]) -> None:
    with nat_lab(*nats) as lab:
        types = _connect(lab, turn=lab.turn_url)
    assert "relay" in types


def test_relay_only_policy_whatever_the_nats() -> None:
    with nat_lab(EIM, FULL) as lab:
        types = _connect(lab, turn=lab.turn_url, relay_only=True)
    assert types == ("relay", "relay", "relay", "relay")


def _share_a_lan(lab: Lab, address: str = "10.0.1.3") -> None:
    """Give b a second link onto a's LAN, beside its public one: a bridge in a's namespace
    holds a's address (and eth0's MAC, which the NAT router has learned), with a's link to
    the router and a link to b, where b takes ``address``."""
    a, b = lab.host_a, lab.host_b
    mac = json.loads(a.ip("-j", "link", "show", "eth0"))[0]["address"]
    a.ip("link", "add", "br-lan", "type", "bridge")
    a.ip("link", "set", "br-lan", "address", mac)
    a.ip("addr", "del", f"{a.address}/24", "dev", "eth0")
    a.ip("link", "set", "eth0", "master", "br-lan")
    a.ip("link", "add", "lanb", "type", "veth", "peer", "name", "lan", "netns", b.name)
    a.ip("link", "set", "lanb", "master", "br-lan")
    for link in ("br-lan", "lanb"):
        a.ip("link", "set", link, "up")
    a.ip("addr", "add", f"{a.address}/24", "dev", "br-lan")
    a.ip("route", "add", "default", "via", a.address.rsplit(".", 1)[0] + ".1")
    b.ip("addr", "add", f"{address}/24", "dev", "lan")
    b.ip("link", "set", "lan", "up")


def _addresses(msg: Message) -> tuple[str, str]:
    """A ``selected`` or ``connected`` message's local and remote addresses."""
    return msg["local"].split()[4], msg["remote"].split()[4]


def _until_connected_over(peer: Peer, path: tuple[str, str], timeout: float = 30.0) -> Message:
    """The peer's messages (with ``--report-selected``) until it has said ``connected`` and
    selected the pair of ``path`` (local and remote addresses); returns its first
    ``selected`` message."""
    deadline = time.monotonic() + timeout
    first: Message | None = None
    connected = over = False
    while not (connected and over):
        msg = peer.recv(max(0.0, deadline - time.monotonic()))
        if msg["type"] == "connected":
            connected = True
        elif msg["type"] == "selected":
            first = first or msg
            over = _addresses(msg) == path
    assert first is not None
    return first


def _exchange_over(a: Peer, b: Peer, paths: tuple[tuple[str, str], tuple[str, str]]) -> None:
    """A data round of ``COUNT`` datagrams each way, all received; a pair selected meanwhile
    must be each peer's path of ``paths``."""
    for peer in (a, b):
        peer.send({"type": "exchange", "count": COUNT})
    for peer, path in zip((a, b), paths, strict=True):
        while (msg := peer.recv(20))["type"] != "exchanged":
            assert msg["type"] == "selected" and _addresses(msg) == path, msg
        assert msg["received"] == COUNT, msg


@pytest.mark.parametrize("nomination", ["regular", "aggressive"])
def test_a_lan_beside_the_nat_is_the_path_kept(nomination: str) -> None:
    """a behind an endpoint-independent NAT; b on the internet and on a's LAN too, its
    public address ranked first.  a's host reaches b's public address through the NAT (a
    peer-reflexive pair, valid first) and b's LAN address directly (a host pair, ranked
    above it).  Regular nomination waits for the LAN pair and selects it first; aggressive
    nomination may select the NAT's pair first, then moves.  Data goes on over the LAN
    when the NAT stops passing UDP.  Before (the lan51 review), regular nomination took the
    LAN pair to be seen through the NAT too, did not wait for it, and nominated the NAT's
    path for good."""
    with nat_lab(EIM, NONE) as lab:
        _share_a_lan(lab)
        extra = ["--report-selected"] + (["--aggressive"] if nomination == "aggressive" else [])
        peer_a = _peer(lab, lab.host_a, True, *extra)
        peer_b = _peer(lab, lab.host_b, False, "--report-selected")
        lan_a, lan_b = (lab.host_a.address, "10.0.1.3"), ("10.0.1.3", lab.host_a.address)
        with _peers(peer_a, peer_b) as (a, b):
            _signal(a, b)
            first = _until_connected_over(a, lan_a)
            _until_connected_over(b, lan_b)
            if nomination == "regular":
                assert _addresses(first) == lan_a, first
            _exchange_over(a, b, (lan_a, lan_b))
            lab.drop_udp(lab.host_a)
            _exchange_over(a, b, (lan_a, lan_b))


def _next_address(address: str) -> str:
    prefix, last = address.rsplit(".", 1)
    return f"{prefix}.{int(last) + 1}"


def _renumber(host: Host) -> str:
    """Give the NAT in front of ``host`` the next public address in place of its own, as a
    new lease would (the old address goes, and the kernel forgets the mappings made with
    it); returns the new address."""
    router = host.router
    assert router is not None
    old = host.public_address
    new = _next_address(old)
    router.sysctl("net.ipv4.conf.wan.promote_secondaries=1")
    router.ip("addr", "add", f"{new}/24", "dev", "wan")
    router.ip("addr", "del", f"{old}/24", "dev", "wan")
    if "default" not in router.ip("route", "show"):
        router.ip("route", "add", "default", "via", PUBLIC_GATEWAY)
    return new


@pytest.mark.parametrize("behind", ["controlling", "controlled"])
def test_a_nat_whose_public_address_changes_while_connected_is_followed(behind: str) -> None:
    """One agent (a controlling, or b controlled) behind an endpoint-independent NAT, the
    other on the internet, connected; then the NAT's public address changes (a new lease,
    say: the old address goes, and the kernel forgets the mappings made with it).  The
    controlling agent nominates the pair again: behind the NAT, when its consent checks
    show it the new mapped address; on the internet, when the peer's checks come from the
    new address and its own pair has gone quiet.  Both go on over the new address, and data
    too, without an ICE restart.  (Before, the lan51 review: both failed.)"""
    nats = (EIM, NONE) if behind == "controlling" else (NONE, EIM)
    with nat_lab(*nats) as lab:
        host = lab.host_a if behind == "controlling" else lab.host_b
        other = lab.host_b if behind == "controlling" else lab.host_a
        old = host.public_address
        new = _next_address(old)
        slow = "--failed-timeout=15"  # (room for consent while the agents move)
        peer_a = _peer(lab, lab.host_a, True, "--report-selected", slow)
        peer_b = _peer(lab, lab.host_b, False, "--report-selected", slow)
        with _peers(peer_a, peer_b) as (a, b):
            _signal(a, b)
            public = b if behind == "controlling" else a

            def paths(address: str) -> tuple[tuple[str, str], tuple[str, str]]:
                ends = (address, other.address), (other.address, address)
                return ends if behind == "controlling" else (ends[1], ends[0])

            for peer, path in zip((a, b), paths(old), strict=True):
                _until_connected_over(peer, path)
            _exchange_over(a, b, paths(old))
            _renumber(host)
            moved = public.recv(20)
            assert moved["type"] == "selected", moved
            assert _addresses(moved) == (other.address, new), moved
            _exchange_over(a, b, paths(new))


def test_twenty_percent_loss_still_connects() -> None:
    # About 36 % of packets are lost each way between the hosts (two lossy links), so both
    # gathering and checks lean on retransmissions: a short, capped RTO gives them many tries.
    lossy = ("--rto=0.1", "--rto-max=0.3", "--max-binding-requests=20", "--gather-timeout=5")
    with nat_lab(EIM, EIM, loss_percent=20) as lab:
        with _peers(
            _peer(lab, lab.host_a, True, *lossy), _peer(lab, lab.host_b, False, *lossy)
        ) as (a, b):
            _signal(a, b)
            ca = a.expect("connected", 30)
            b.expect("connected", 30)
    assert _typ(ca["local"]) == "srflx"


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_turn_over_tcp_and_tls_carry_a_relay_only_session(kind: str) -> None:
    with nat_lab(SYM, SYM, turn_tls=kind == "tls") as lab:
        if kind == "tcp":
            types = _connect(lab, turn=lab.turn_tcp_url, relay_only=True)
        else:
            extra = f"--cafile={lab.tls_ca_pem_path}"
            with _peers(
                _peer(lab, lab.host_a, True, "--relay-only", extra, turn=lab.turns_url),
                _peer(lab, lab.host_b, False, "--relay-only", extra, turn=lab.turns_url),
            ) as (a, b):
                _signal(a, b)
                ca, cb = a.expect("connected", 30), b.expect("connected", 30)
                types = (_typ(ca["local"]), _typ(ca["remote"]), _typ(cb["local"]))
    assert set(types) == {"relay"}


@pytest.mark.parametrize("kind", ["srflx", "host"])
def test_a_1to1_nats_public_address_from_the_config_connects_without_stun(kind: str) -> None:
    """A host behind a 1:1 NAT (full cone here), told its public address
    (``NetworkConfig.external_addresses``, as Pion's ``NAT1To1IPs``), is reached with no STUN
    server at all: the peer behind its own NAT checks that address, and the pair is made
    with it, as a srflx candidate or in the host candidate's place."""
    with nat_lab(FULL, EIM) as lab:
        external = f"--external={lab.host_a.public_address}/{lab.host_a.address}"
        with _peers(
            _peer(lab, lab.host_a, True, external, f"--external-candidate={kind}", stun=False),
            _peer(lab, lab.host_b, False, stun=False),
        ) as (a, b):
            description = a.local_description(15)
            lines = [m["candidate"] for m in description if m["type"] == "candidate"]
            assert any(
                line.split()[4] == lab.host_a.public_address and _typ(line) == kind
                for line in lines
            ), lines
            hidden = [line for line in lines if line.split()[4] == lab.host_a.address]
            assert bool(hidden) == (kind == "srflx"), lines  # (HOST: in the host's place)
            _signal(a, b, description)
            ca, cb = _connected_and_exchanged(a, b)
        assert cb["remote"].split()[4] == lab.host_a.public_address
        assert _typ(cb["remote"]) == kind
    # The agent behind the NAT names the pair as the peer does: by the candidate it signalled
    # (the peer's answers give that address back; it was taken for a peer-reflexive one).
    assert ca["local"].split()[4:6] == cb["remote"].split()[4:6]
    assert _typ(ca["local"]) == kind, (ca["local"], cb["remote"])


def test_an_ice_lite_agent_behind_a_1to1_nat_names_its_public_host_candidate() -> None:
    """An ICE-lite agent behind a 1:1 NAT (an SFU in a cloud: Pion's ``Lite`` with
    ``NAT1To1IPs`` of candidate type host), its public address in the host candidate's place:
    a full peer behind its own NAT connects, and the lite agent's selected pair names the
    host candidate it signalled, at the public address (it named the private one)."""
    with nat_lab(FULL, EIM) as lab:
        external = f"--external={lab.host_a.public_address}/{lab.host_a.address}"
        lite = _peer(lab, lab.host_a, False, "--lite", external, "--external-candidate=host")
        with _peers(lite, _peer(lab, lab.host_b, True, stun=False)) as (a, b):
            description = a.local_description(15)
            _signal(a, b, description)
            ca, cb = _connected_and_exchanged(a, b)
    assert ca["local"].split()[4] == lab.host_a.public_address, ca["local"]
    assert _typ(ca["local"]) == "host"
    assert ca["local"].split()[4:6] == cb["remote"].split()[4:6]


def test_an_agent_on_a_mux_behind_a_nat_is_reached_at_the_muxs_server_reflexive_address() -> None:
    """A host behind a NAT runs its agent on a UDP mux (Pion's ``UniversalUDPMux``): the
    mux asks the STUN server from its own socket, and the agent signals the mux's public
    address as a srflx candidate related to the mux's.  The peer, behind a NAT of its own,
    checks that address and the pair is made with it."""
    with nat_lab(EIM, EIM) as lab:
        with _peers(_peer(lab, lab.host_a, True, "--mux"), _peer(lab, lab.host_b, False)) as (a, b):
            description = a.local_description(15)
            lines = [m["candidate"] for m in description if m["type"] == "candidate"]
            srflx = [line for line in lines if _typ(line) == "srflx"]
            assert len(srflx) == 1, lines
            tokens = srflx[0].split()
            assert tokens[4] == lab.host_a.public_address, lines
            assert tokens[tokens.index("raddr") + 1] == lab.host_a.address, lines
            _signal(a, b, description)
            ca, cb = _connected_and_exchanged(a, b)
        mux_address, mux_port = ca["mux"].split()
        assert mux_address == lab.host_a.address
        assert tokens[tokens.index("rport") + 1] == mux_port
        assert cb["remote"].split()[4:6] == tokens[4:6]
        assert _typ(cb["remote"]) == "srflx"


def test_without_stun_or_its_public_address_a_host_behind_a_nat_is_not_reached() -> None:
    """The same two NATs, neither side told a public address and no STUN server: each
    signals only its private address, and ICE fails (the contrast to the test above)."""
    with nat_lab(FULL, EIM) as lab:
        _expect_failure(lab, stun=False)


def test_where_udp_is_blocked_an_active_tcp_candidate_reaches_a_passive_one() -> None:
    """ICE-TCP (``NetworkConfig.tcp_candidates``): a host behind a NAT whose network lets no
    UDP in connects over TCP to a public host's passive candidate; its connection comes from
    the NAT's address, which both learn as a peer-reflexive candidate."""
    with nat_lab(EIM, NONE, turn=False) as lab:
        lab.drop_udp(lab.host_a)
        with _peers(
            _peer(lab, lab.host_a, True, "--tcp=active", stun=False),
            _peer(lab, lab.host_b, False, "--tcp=passive", stun=False),
        ) as (a, b):
            _signal(a, b)
            ca, cb = _connected_and_exchanged(a, b)
    public_a = lab.host_a.public_address
    for line in (ca["local"], ca["remote"], cb["local"], cb["remote"]):
        assert line.split()[2] == "tcp", line
    assert ca["local"].split()[4] == public_a and _typ(ca["local"]) == "prflx"
    assert ca["local"].endswith("tcptype active")
    assert ca["remote"].split()[4] == lab.host_b.address and ca["remote"].endswith("passive")
    assert cb["remote"].split()[4:6] == ca["local"].split()[4:6]


def test_where_udp_is_blocked_ice_fails_without_tcp_candidates() -> None:
    """The same lab without ICE-TCP: the UDP checks find nothing (the contrast to the test
    above)."""
    with nat_lab(EIM, NONE, turn=False) as lab:
        lab.drop_udp(lab.host_a)
        _expect_failure(lab, stun=False)


@pytest.mark.parametrize("kind", ["srflx", "host"])
def test_a_passive_tcp_candidate_behind_a_1to1_nat_is_reached_at_its_public_address(
    kind: str,
) -> None:
    """A server behind a 1:1 NAT (full cone here, which forwards TCP too) that lets no UDP
    in, told its public address, offers its passive TCP candidate there (as a srflx
    candidate beside the host one, or in its place): a client behind its own NAT connects
    to it over TCP."""
    with nat_lab(FULL, EIM, turn=False) as lab:
        lab.drop_udp(lab.host_a)
        external = f"--external={lab.host_a.public_address}/{lab.host_a.address}"
        with _peers(
            _peer(
                lab,
                lab.host_a,
                False,
                "--tcp=passive",
                external,
                f"--external-candidate={kind}",
                stun=False,
            ),
            _peer(lab, lab.host_b, True, "--tcp=active", stun=False),
        ) as (a, b):
            description = a.local_description(15)
            lines = [m["candidate"] for m in description if m["type"] == "candidate"]
            public = [
                line
                for line in lines
                if line.split()[2] == "tcp" and line.split()[4] == lab.host_a.public_address
            ]
            assert len(public) == 1 and _typ(public[0]) == kind, lines
            assert public[0].endswith("tcptype passive")
            _signal(a, b, description)
            ca, cb = _connected_and_exchanged(a, b)
    assert cb["remote"].split()[2] == "tcp"
    assert cb["remote"].split()[4:6] == public[0].split()[4:6]
    assert ca["local"].split()[4:6] == public[0].split()[4:6] and _typ(ca["local"]) == kind
