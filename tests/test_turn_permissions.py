"""TURN permissions (RFC 8656 §9) and channels (§12) are kept only while the agent uses
the peer: data *from* a peer is no use of its permission (``TurnClient._in_use``).  An
agent whose relay talked to a peer it no longer wants (ICE failed; consent expired; an ICE
restart moved it to another peer) let the peer keep the server relaying to it for as long
as it sent, its data all dropped (the turnperm review); a peer still wanted, that only
sends, keeps them by the agent's consent checks.

The TURN server is test_turn's FakeServer over a loopback UDP socket, with a real relayed
socket on 127.0.0.2, in virtual time (autojump_clock).  Everything stays on loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import AsyncIterator

import trio
import trio.testing
from test_turn import PASSWORD, USER, FakeServer

import trice
from trice import stun
from trice.stun import Method

from loopback import loopback_config, wait_for_state

Address = tuple[str, int]

JUNK = b"\x80" + b"old-peer-media" * 8  # (RTP-like, not STUN: the agent drops it)


@dataclasses.dataclass
class _Relayer:
    """test_turn's FakeServer behind a UDP socket on loopback, with a real relayed socket:
    data the client sends goes out of the relayed socket, data that comes to it from an IP
    with a permission goes back to the client (ChannelData if a channel is bound to the
    source, else a Data indication).  The FakeServer's permissions never expire: what is
    measured is what the client asks to refresh."""

    fake: FakeServer
    ctl: trio.socket.SocketType
    rel: trio.socket.SocketType
    client: Address | None = None
    inbound: int = 0  # datagrams relayed from peers to the client

    @property
    def port(self) -> int:
        return int(self.ctl.getsockname()[1])

    @property
    def relayed(self) -> Address:
        host, port = self.rel.getsockname()[:2]
        return (host, port)

    async def serve_ctl(self) -> None:
        while True:
            data, source = await self.ctl.recvfrom(65536)
            self.client = source[:2]
            done = len(self.fake.relayed)
            for answer in self.fake.handle(data, trio.current_time()):
                await self.ctl.sendto(answer, source)
            for peer, payload, _how in self.fake.relayed[done:]:
                if peer[0].startswith("127."):  # (loopback only)
                    await self.rel.sendto(payload, peer)

    async def serve_rel(self) -> None:
        while True:
            payload, source = await self.rel.recvfrom(65536)
            source = source[:2]
            if source[0] not in self.fake.permissions or self.client is None:
                continue
            channel = next((n for n, a in self.fake.channels.items() if a == source), None)
            if channel is not None:
                frame = stun.encode_channel_data(channel, payload, pad=False)
            else:
                frame = self.fake.data_indication(source, payload)
            self.inbound += 1
            await self.ctl.sendto(frame, self.client)

    def asked(self, method: Method, ip: str) -> list[float]:
        """When the client asked for (or refreshed) a permission (CreatePermission) or a
        channel (ChannelBind) for ``ip``."""
        times = []
        for at, message in self.fake.requests:
            if message.method is not method or message.get(stun.Username) is None:
                continue
            if any(p.address == ip for p in message.get_all(stun.XorPeerAddress)):
                times.append(at)
        return times


@contextlib.asynccontextmanager
async def _relayer() -> AsyncIterator[_Relayer]:
    ctl = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    rel = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with ctl, rel:
        await ctl.bind(("127.0.0.1", 0))
        await rel.bind(("127.0.0.2", 0))
        fake = FakeServer(relayed_address=rel.getsockname()[:2])
        server = _Relayer(fake, ctl, rel)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_ctl)
            nursery.start_soon(server.serve_rel)
            yield server
            nursery.cancel_scope.cancel()


def _relay_only(server: _Relayer) -> trice.AgentConfig:
    url = f"turn:127.0.0.1:{server.port}?transport=udp"
    return loopback_config(
        ice_servers=[trice.IceServer(url, USER, PASSWORD)],
        transport_policy=trice.TransportPolicy.RELAY,
    )


def _host(address: Address, foundation: str = "1") -> trice.Candidate:
    return trice.Candidate(
        foundation=foundation,
        component=1,
        protocol="udp",
        priority=2130706431,
        address=address[0],
        port=address[1],
        type=trice.CandidateType.HOST,
    )


async def _keep_sending(sock: trio.socket.SocketType, to: Address, every: float) -> None:
    while True:
        await sock.sendto(JUNK, to)
        await trio.sleep(every)


async def _failed(agent: trice.Agent) -> None:
    """Wait (at most 120 virtual seconds) for the agent's state to become failed."""
    if agent.connection_state is trice.ConnectionState.FAILED:
        return
    with trio.fail_after(120):
        async with agent.subscribe() as stream:
            await wait_for_state(stream, trice.ConnectionState.FAILED)


async def _connect_quietly(agent: trice.Agent) -> None:
    with contextlib.suppress(Exception):
        await agent.connect()


SPAN = 1500.0  # how long the unwanted peer keeps sending (virtual seconds)


def _after(times: list[float], t: float) -> list[float]:
    return [round(x - t) for x in times if x > t]


@contextlib.asynccontextmanager
async def _gathered(config: trice.AgentConfig, *, controlling: bool) -> AsyncIterator[trice.Agent]:
    """An agent of ``config``, its gathering complete."""
    async with trice.open_agent(config, controlling=controlling) as agent:
        with trio.fail_after(30):
            await agent.wait_gathering_complete()
        yield agent


async def _pair_both(a: trice.Agent, b: trice.Agent) -> tuple[trice.Connection, trice.Connection]:
    for here, there in ((a, b), (b, a)):
        params = there.local_parameters
        here.set_remote_parameters(params.ufrag, params.pwd)
        for candidate in there.local_candidates:
            here.add_remote_candidate(candidate)
        here.add_remote_candidate(None)
    out: dict[str, trice.Connection] = {}

    async def run(name: str, agent: trice.Agent) -> None:
        out[name] = await agent.connect()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", a)
            nursery.start_soon(run, "b", b)
    return out["a"], out["b"]


async def _bs_address(a: trice.Agent, b: trice.Agent) -> Address:
    """Connect ``a`` and ``b``, ``a`` sends a datagram over the pair: ``b``'s end of it."""
    conn = (await _pair_both(a, b))[0]
    await conn.send(b"hello")
    pair = b.selected_pair
    assert pair is not None
    return (pair.local.address, pair.local.port)


async def test_the_permission_of_a_peer_ice_failed_with_lapses_though_it_sends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ICE with the only remote candidate fails (the peer never answers a check), the agent
    says failed; the peer keeps sending media to the relayed address, which the agent drops
    as from an unknown source.  The agent's own last use of the IP was its last check:
    the permission lapses at its first refresh 240 s later.  It was refreshed every 240 s
    for as long as the peer sent."""
    async with _relayer() as server:
        peer = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with peer:
            await peer.bind(("127.0.0.1", 0))
            peer_address = peer.getsockname()[:2]
            async with _gathered(_relay_only(server), controlling=True) as agent:
                assert [c.type for c in agent.local_candidates] == [trice.CandidateType.RELAY]
                agent.set_remote_parameters("oldpeer", "o" * 22)
                agent.add_remote_candidate(_host(peer_address))
                agent.add_remote_candidate(None)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_connect_quietly, agent)
                    await _failed(agent)
                    failed_at = trio.current_time()
                    nursery.start_soon(_keep_sending, peer, server.relayed, 15.0)
                    await trio.sleep(SPAN)
                    nursery.cancel_scope.cancel()
                stats = agent.statistics()
                dropped = stats.unknown_source_dropped + stats.datagrams_dropped
                taken = stats.datagrams_received
    perms = _after(server.asked(Method.CREATE_PERMISSION, "127.0.0.1"), failed_at + 300)
    assert server.inbound > 50 and taken == 0  # (the peer sent; the agent took none)
    assert perms == [], (
        f"ICE failed at {failed_at:.0f} s; the unwanted peer's permission was refreshed "
        f"at +{perms} s after failure+300 s (peer data dropped by the agent: {dropped})"
    )


async def test_the_permission_and_channel_of_a_peer_whose_consent_expired_lapse(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connects to B through its relay (A relay-only), data flows (a channel is bound).
    B goes away (closed): A's consent to B expires (RFC 7675), A says failed and sends
    nothing more to B.  Something at B's old address (B's port, reused) keeps sending media
    to A's relayed address: A drops it, and its permission and channel lapse (they were
    refreshed, every 240 s and 540 s, for as long as it sent)."""
    async with _relayer() as server:
        async with _gathered(_relay_only(server), controlling=True) as a:
            async with _gathered(loopback_config(), controlling=False) as b:
                ca, cb = await _pair_both(a, b)
                for _ in range(3):
                    await ca.send(b"hello")
                    assert await cb.receive() == b"hello"
                    await cb.send(b"back")
                    assert await ca.receive() == b"back"
                pair = b.selected_pair
                assert pair is not None
                b_address = (pair.local.address, pair.local.port)
            assert server.fake.channels, "no channel was bound for B"
            await _failed(a)
            failed_at = trio.current_time()
            squatter = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with squatter:
                await squatter.bind(b_address)  # (B's port, as B's media would come)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_keep_sending, squatter, server.relayed, 15.0)
                    await trio.sleep(SPAN)
                    nursery.cancel_scope.cancel()
            stats = a.statistics()
            dropped = stats.unknown_source_dropped + stats.datagrams_dropped
            received_a = stats.datagrams_received
    ip = b_address[0]
    perms = _after(server.asked(Method.CREATE_PERMISSION, ip), failed_at + 300)
    chans = _after(server.asked(Method.CHANNEL_BIND, ip), failed_at + 600)
    assert server.inbound > 50
    assert (perms, chans) == ([], []), (
        f"consent expired at {failed_at:.0f} s; B's permission refreshed at +{perms} s "
        f"after failure+300 s, its channel at +{chans} s after failure+600 s (A dropped "
        f"{dropped} of its datagrams; took {received_a} in all)"
    )


async def test_after_a_restart_to_a_peer_at_another_ip_the_old_ips_permission_lapses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connects to B through its relay, then restarts toward a new peer at another IP
    (127.0.0.9: it never answers, the checks simply go there).  B's candidates are
    forgotten, nothing goes to B's IP; B (its agent gone, its port reused) keeps sending
    media.  The old IP's permission lapses (it was refreshed for as long as that sent)."""
    async with _relayer() as server:
        async with _gathered(_relay_only(server), controlling=True) as a:
            async with _gathered(loopback_config(), controlling=False) as b:
                b_address = await _bs_address(a, b)
            a.restart()
            a.set_remote_parameters("newpeer", "n" * 22)
            a.add_remote_candidate(_host(("127.0.0.9", 9)))
            a.add_remote_candidate(None)
            restarted_at = trio.current_time()
            squatter = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with squatter:
                await squatter.bind(b_address)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_keep_sending, squatter, server.relayed, 15.0)
                    await trio.sleep(SPAN)
                    nursery.cancel_scope.cancel()
            stats = a.statistics()
            dropped = stats.unknown_source_dropped + stats.datagrams_dropped
    ip = b_address[0]
    # (Consent to B may have gone on up to 30 s after the restart: allow 30 + 300 s.)
    perms = _after(server.asked(Method.CREATE_PERMISSION, ip), restarted_at + 330)
    assert server.inbound > 50
    assert perms == [], (
        f"restarted at {restarted_at:.0f} s; the old IP's permission was refreshed at "
        f"+{perms} s after restart+330 s (A dropped {dropped} of its datagrams)"
    )
    assert not math.isnan(restarted_at)


def _channel_binds(server: _Relayer, peer: Address) -> list[float]:
    """When the client bound (or refreshed) a channel to exactly ``peer``."""
    return [
        at
        for at, message in server.fake.requests
        if message.method is Method.CHANNEL_BIND
        and message.get(stun.Username) is not None
        and any((p.address, p.port) == peer for p in message.get_all(stun.XorPeerAddress))
    ]


async def test_after_a_restart_to_a_peer_at_the_same_ip_the_old_peers_channel_lapses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connects to B through its relay (a channel to B's address), then restarts to C at
    the same IP (another port), and keeps sending to C: the IP's permission is C's too
    (RFC 8656 §9: by IP), rightly refreshed.  B's *channel* (its own port, §12) lapses:
    A sends nothing there, and drops what comes from there (it was refreshed every 540 s
    while something at B's old address sent)."""
    async with _relayer() as server:
        async with _gathered(_relay_only(server), controlling=True) as a:
            async with _gathered(loopback_config(), controlling=False) as b:
                b_address = await _bs_address(a, b)
            assert _channel_binds(server, b_address)
            a.restart()
            restarted_at = trio.current_time()
            async with _gathered(loopback_config(), controlling=False) as c:
                conn = (await _pair_both(a, c))[0]
                squatter = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                with squatter:
                    await squatter.bind(b_address)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_keep_sending, squatter, server.relayed, 15.0)
                        for _ in range(int(SPAN // 10)):
                            await conn.send(b"to C")  # (A's use of the IP, for C)
                            await trio.sleep(10)
                        nursery.cancel_scope.cancel()
            stats = a.statistics()
    old = _after(_channel_binds(server, b_address), restarted_at + 630)
    assert server.inbound > 50
    assert old == [], (
        f"restarted at {restarted_at:.0f} s to a peer at B's IP; B's old channel was "
        f"refreshed at +{old} s after restart+630 s (A dropped "
        f"{stats.unknown_source_dropped} datagrams from B's address as unknown)"
    )


async def test_a_peer_that_only_sends_keeps_its_permission(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B sends A media every second for 1500 s through A's relay, and A sends B nothing of
    its own: A's consent checks keep B's permission (refreshed every 240 s all along), and
    every datagram comes."""
    async with _relayer() as server:
        async with _gathered(_relay_only(server), controlling=True) as a:
            async with _gathered(loopback_config(), controlling=False) as b:
                ca, cb = await _pair_both(a, b)
                start = trio.current_time()
                got = 0
                for i in range(int(SPAN)):
                    await cb.send(b"media %d" % i)
                    with trio.fail_after(5):
                        assert await ca.receive() == b"media %d" % i
                    got += 1
                    await trio.sleep(1)
                assert a.connection_state in (
                    trice.ConnectionState.CONNECTED,
                    trice.ConnectionState.COMPLETED,
                )
                pair = b.selected_pair
                assert pair is not None
                ip = pair.local.address
    asked = server.asked(Method.CREATE_PERMISSION, ip)
    assert got == int(SPAN)
    assert len([t for t in asked if t > start]) >= int(SPAN // 240) - 1, asked
