"""The pure TURN client against a model of a server that keeps RFC 8656's lifetimes, driven
by random steps in virtual time (a hypothesis state machine).

The server (:class:`LifetimeServer`) holds what a real one holds, with its own clock: the
allocation until its lifetime ends (RFC 8656 §7), each permission 300 s from its last
install (§9), each channel binding 600 s (§12), and it relays only what they allow: a Send
indication to an IP with a permission, ChannelData on a bound channel to a peer whose IP
has one, and a peer's data back the same way.  It answers as coturn does: 401 first, 438
when its nonce changed, 437 to a Refresh, permission or channel with no allocation, 403 to
a peer IP its rules refuse, and 400 to a ChannelBind whose number or peer is bound
otherwise.

The steps: the application sends to one of four peers (two IPs, two ports each), a peer
sends through the relay, time passes (from 0.1 s to 11 minutes), the links lose a share
of what goes each way (none, 30 %, or all: an outage), duplicate some of it or reorder
what goes in one burst (over UDP), the server refuses an IP, its nonce goes stale, or it
forgets the allocation (a restart), the client closes.

Held after every step:

* the client never raises, and keeps what the RFC makes it keep whatever is lost: it
  never binds a channel number, or a peer, that is bound otherwise, nor within 5 minutes of
  the end of its other binding (§12: the server records each such request);
* its counts add up: each datagram handed to it is sent, dropped (counted), or waiting
  for its permission (a bounded queue);
* it is never ahead of the server, loss or not (the model's links take no time): while it
  is allocated, so is the server (unless the server forgot it); the server drops nothing
  it sends (no Send indication to an IP without a permission, no ChannelData on a channel
  the server does not hold, or to an IP whose permission ended); it returns only what the
  server relayed, in order; and once the server forgot the allocation, the client is no
  longer allocated when the lifetime it was granted ends (it learns at its Refresh, a
  minute before, if not sooner);
* while nothing was ever lost: the allocation never fails; the client returns everything
  the server relays from a peer; and once closed, the server holds no allocation.

``TRICE_TURN_MODEL_EXAMPLES=N`` runs N examples (and at random with
``TRICE_TURN_MODEL_RANDOM=1``).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from trice import stun
from trice.stun import Message, MessageClass, Method
from trice.turn import TurnClient, TurnState

USER = "alice"
PASSWORD = "wonderland"
REALM = "example.org"
KEY = stun.long_term_key(USER, REALM, PASSWORD, prepare=str)
RELAYED = ("198.51.100.1", 50000)
MAPPED = ("203.0.113.5", 40000)
PEERS = [("192.0.2.10", 6000), ("192.0.2.10", 6001), ("192.0.2.20", 7000), ("192.0.2.20", 7001)]
QUEUE_LIMIT = 4

Address = tuple[str, int]

#: RFC 8656's lifetimes: a permission (§9), a channel binding (§12), and how long a
#: channel number or a peer waits after its binding ended before it is bound otherwise.
PERMISSION = 300.0
CHANNEL = 600.0
REUSE = 300.0


@dataclass
class LifetimeServer:
    """A TURN server for one client's 5-tuple that keeps RFC 8656's lifetimes (see the
    module's docstring); ``violations`` lists what the client asked that it must not."""

    nonce: str = "nonce-1"
    refused: set[str] = field(default_factory=set)
    allocation_ends: float = float("-inf")
    allocate_tid: bytes = b""
    allocate_answer: bytes = b""
    permissions: dict[str, float] = field(default_factory=dict)
    #: channel number -> (peer, when its binding ends); an ended one is kept, for §12's wait.
    channels: dict[int, tuple[Address, float]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    #: What came from the client that this server did not relay, and why.
    dropped: list[str] = field(default_factory=list)

    def allocated(self, now: float) -> bool:
        return now < self.allocation_ends

    def _permitted(self, ip: str, now: float) -> bool:
        return self.allocated(now) and now < self.permissions.get(ip, float("-inf"))

    def channel_of(self, peer: Address, now: float) -> int | None:
        for number, (bound, ends) in self.channels.items():
            if bound == peer and now < ends:
                return number
        return None

    def deallocate(self) -> None:
        self.allocation_ends = float("-inf")
        self.permissions.clear()
        # (The channels' ends stay, for the wait of §12: a new allocation is another
        # 5-tuple's at a real server, but this model's client keeps its numbers only
        # within one allocation, which is what is checked.)

    def handle(self, data: bytes, now: float) -> list[bytes]:
        """What the server answers to one datagram from the client."""
        if 0x40 <= data[0] <= 0x4F:
            number, _payload = stun.decode_channel_data(data)
            peer, ends = self.channels.get(number, (None, float("-inf")))
            if peer is None or now >= ends or not self._permitted(peer[0], now):
                self.dropped.append(f"ChannelData on {number:#x} at {now:.3f}")
            return []
        message = stun.decode(data)
        if message.message_class is MessageClass.INDICATION:
            peer_attr = message.get(stun.XorPeerAddress)
            data_attr = message.get(stun.Data)
            assert peer_attr is not None and data_attr is not None
            peer = (peer_attr.address, peer_attr.port)
            if not self._permitted(peer[0], now):
                self.dropped.append(f"Send indication to {peer} at {now:.3f}")
            return []
        return [self._answer(message, now).encode(integrity_key=self._signs(message))]

    def _signs(self, message: Message) -> bytes | None:
        return KEY if message.get(stun.Username) is not None else None

    def _answer(self, message: Message, now: float) -> Message:
        if message.get(stun.Username) is None or not message.verify_integrity(KEY):
            return message.error_response(
                401, "Unauthorized", stun.Realm(REALM), stun.Nonce(self.nonce)
            )
        nonce = message.get(stun.Nonce)
        if nonce is None or nonce.value != self.nonce:
            return message.error_response(
                438, "Stale Nonce", stun.Realm(REALM), stun.Nonce(self.nonce)
            )
        method = message.method
        if method is Method.ALLOCATE:
            if self.allocated(now):
                if message.transaction_id == self.allocate_tid:  # (a copy: §7.2)
                    return stun.decode(self.allocate_answer)
                return message.error_response(437, "Allocation Mismatch")
            lifetime = message.get(stun.Lifetime)
            seconds = min(lifetime.seconds if lifetime else 600, 3600)
            self.allocation_ends = now + seconds
            answer = message.success_response(
                stun.XorRelayedAddress(*RELAYED),
                stun.XorMappedAddress(*MAPPED),
                stun.Lifetime(seconds),
            )
            self.allocate_tid = message.transaction_id
            self.allocate_answer = answer.encode(integrity_key=KEY)
            return answer
        if not self.allocated(now):
            return message.error_response(437, "Allocation Mismatch")
        if method is Method.REFRESH:
            lifetime = message.get(stun.Lifetime)
            seconds = min(lifetime.seconds if lifetime else 600, 3600)
            if seconds == 0:
                self.deallocate()
            else:
                self.allocation_ends = now + seconds
            return message.success_response(stun.Lifetime(seconds))
        if method is Method.CREATE_PERMISSION:
            ips = [peer.address for peer in message.get_all(stun.XorPeerAddress)]
            if any(ip in self.refused for ip in ips):
                return message.error_response(403, "Forbidden")
            for ip in ips:
                self.permissions[ip] = now + PERMISSION
            return message.success_response()
        assert method is Method.CHANNEL_BIND, method
        number_attr = message.get(stun.ChannelNumber)
        peer_attr = message.get(stun.XorPeerAddress)
        assert number_attr is not None and peer_attr is not None
        number, peer = number_attr.channel, (peer_attr.address, peer_attr.port)
        problem = self._bind_problem(number, peer, now)
        if problem is not None:
            self.violations.append(f"at {now:.3f}: {problem}")
            return message.error_response(400, "Bad Request")
        if peer[0] in self.refused:
            return message.error_response(403, "Forbidden")
        self.channels = {n: b for n, b in self.channels.items() if b[0] != peer or n == number}
        self.channels[number] = (peer, now + CHANNEL)
        self.permissions[peer[0]] = now + PERMISSION
        return message.success_response()

    def _bind_problem(self, number: int, peer: Address, now: float) -> str | None:
        """Why binding ``number`` to ``peer`` now breaks RFC 8656 §12, or ``None``."""
        if not 0x4000 <= number <= 0x4FFF:
            return f"channel number {number:#x} out of range"
        for other, (bound, ends) in self.channels.items():
            if other == number and bound != peer and now < ends + REUSE:
                return f"{number:#x} is {bound}'s until {ends + REUSE:.3f}, asked for {peer}"
            if other != number and bound == peer and now < ends + REUSE:
                return f"{peer} is on {other:#x} until {ends + REUSE:.3f}, asked {number:#x}"
        return None

    def from_peer(self, peer: Address, payload: bytes, now: float) -> bytes | None:
        """What a peer's datagram to the relayed address becomes on the way to the client
        (ChannelData on its channel, else a Data indication), or ``None``: not relayed."""
        if not self._permitted(peer[0], now):
            return None
        number = self.channel_of(peer, now)
        if number is not None:
            return stun.encode_channel_data(number, payload, pad=False)
        return Message(
            Method.DATA,
            MessageClass.INDICATION,
            attributes=(stun.XorPeerAddress(*peer), stun.Data(payload)),
        ).encode()


#: How far one step moves the clock: past retransmissions, permission and channel
#: refreshes and lifetimes, and the allocation's.
STEPS = [0.1, 0.6, 2.0, 10.0, 45.0, 61.0, 130.0, 241.0, 301.0, 480.0, 601.0, 660.0]


class TurnModel(RuleBasedStateMachine):
    #: Over TCP or TLS (:class:`ReliableTurnModel`): nothing is lost, the connection may be.
    reliable = False

    def __init__(self) -> None:
        super().__init__()
        self.server = LifetimeServer()
        self.client = TurnClient(USER, PASSWORD, reliable=self.reliable, queue_limit=QUEUE_LIMIT)
        self.now = 0.0
        self.loss = 0.0
        self.lossless = True
        self.duplicate = self.reorder = False
        self.rng = random.Random(0)
        self.handed = 0
        self.from_server: list[tuple[Address, bytes]] = []
        self.returned: list[tuple[Address, bytes]] = []
        self.counter = 0
        self.forgotten_at: float | None = None

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.rng.seed(seed)
        self.client.start(self.now)
        self._pump()

    def _lost(self) -> bool:
        lost = self.loss > 0 and not self.reliable and self.rng.random() < self.loss
        self.lossless = self.lossless and not lost
        return lost

    def _copies(self) -> int:
        """How many times a datagram that was not lost arrives (twice, now and then, while
        the links duplicate)."""
        return 2 if self.duplicate and self.rng.random() < 0.3 else 1

    def _pump(self) -> None:
        if self.duplicate or self.reorder:
            self._pump_disorderly()
            return
        while (data := self.client.poll_transmit(self.now)) is not None:
            if self._lost():
                continue
            for answer in self.server.handle(data, self.now):
                if not self._lost():
                    self.returned += self.client.on_server_data(answer, self.now)

    def _pump_disorderly(self) -> None:
        """:meth:`_pump` over links that duplicate or reorder: what the client has queued
        goes as one burst, which the server takes in some order, and its answers come back
        as one burst, in some order; until the client queues nothing more."""
        while True:
            burst = []
            while (data := self.client.poll_transmit(self.now)) is not None:
                if not self._lost():
                    burst += [data] * self._copies()
            if not burst:
                return
            if self.reorder:
                self.rng.shuffle(burst)
            answers = []
            for data in burst:
                for answer in self.server.handle(data, self.now):
                    if not self._lost():
                        answers += [answer] * self._copies()
            if self.reorder:
                self.rng.shuffle(answers)
            for answer in answers:
                self.returned += self.client.on_server_data(answer, self.now)

    def _payload(self) -> bytes:
        self.counter += 1
        return b"%d" % self.counter

    @rule(which=st.integers(0, len(PEERS) - 1), count=st.sampled_from([1, 3, 6]))
    def send(self, which: int, count: int) -> None:
        for _ in range(count):
            self.handed += 1
            self.client.send_to_peer(PEERS[which], self._payload(), self.now)
        self._pump()

    @rule(which=st.integers(0, len(PEERS) - 1))
    def peer_sends(self, which: int) -> None:
        peer = PEERS[which]
        payload = self._payload()
        frame = self.server.from_peer(peer, payload, self.now)
        if frame is None:
            return
        if self._lost():
            self.from_server.append((peer, payload))
        else:
            for _ in range(self._copies()):
                self.from_server.append((peer, payload))
                self.returned += self.client.on_server_data(frame, self.now)
        self._pump()

    @rule(seconds=st.sampled_from(STEPS))
    def time_passes(self, seconds: float) -> None:
        end = self.now + seconds
        while (deadline := self.client.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.client.on_timer(self.now)
            self._pump()
        self.now = end

    @rule(loss=st.sampled_from([0.0, 0.3, 1.0]))
    def links_lose(self, loss: float) -> None:
        self.loss = loss

    @rule(duplicate=st.booleans(), reorder=st.booleans())
    def links_disorder(self, duplicate: bool, reorder: bool) -> None:
        if not self.reliable:  # (a stream neither duplicates nor reorders)
            self.duplicate, self.reorder = duplicate, reorder

    @rule(ip=st.sampled_from(sorted({ip for ip, _ in PEERS})), refuse=st.booleans())
    def server_refuses(self, ip: str, refuse: bool) -> None:
        if refuse:
            self.server.refused.add(ip)
        else:
            self.server.refused.discard(ip)

    @rule(now=st.integers(0, 7))
    def server_forgets(self, now: int) -> None:
        if now or not self.server.allocated(self.now):  # (one draw in 8)
            return
        self.server.deallocate()  # (a restart: the allocation is gone, RFC 8656 §7.3's 437)
        self.forgotten_at = self.now

    @rule()
    def nonce_goes_stale(self) -> None:
        self.server.nonce += "+"

    @rule(now=st.integers(0, 15))
    def close(self, now: int) -> None:
        if now:  # (one draw in 16: the rest of a run goes on)
            return
        self.client.close(self.now)
        self._pump()

    @invariant()
    def keeps_the_channel_rules(self) -> None:
        assert self.server.violations == []

    @invariant()
    def counts_add_up(self) -> None:
        stats = self.client.statistics()
        settled = stats.sent_indications + stats.sent_channel_data + stats.dropped
        waiting = self.handed - settled
        assert 0 <= waiting <= QUEUE_LIMIT * 2, (self.handed, stats)

    @invariant()
    def never_ahead_of_the_server(self) -> None:
        state = self.client.state
        if self.forgotten_at is not None:
            # It learns at its next request (a Refresh at the latest, a minute before the
            # lifetime of 600 s it asked for ends), or when the lifetime it knows ends.
            assert state is not TurnState.ALLOCATED or self.now < self.forgotten_at + 600
            return
        if state is TurnState.ALLOCATED:
            assert self.server.allocated(self.now)
        assert self.server.dropped == []
        returned = list(self.returned)  # (in order, each once: a subsequence)
        for item in self.from_server:
            if returned and returned[0] == item:
                returned.pop(0)
        assert returned == []

    @invariant()
    def nothing_lost_while_nothing_is_lost(self) -> None:
        if not self.lossless or self.forgotten_at is not None:
            return
        state = self.client.state
        assert state is not TurnState.FAILED, self.client.error
        if state is TurnState.CLOSED:
            assert not self.server.allocated(self.now)
        assert self.returned == self.from_server


TurnModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("TRICE_TURN_MODEL_EXAMPLES", "100")),
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=not os.environ.get("TRICE_TURN_MODEL_RANDOM"),
    database=None,
)
test_turn_client_against_a_server_that_keeps_lifetimes = TurnModel.TestCase


class ReliableTurnModel(TurnModel):
    """:class:`TurnModel` over TCP or TLS: nothing is lost (``links_lose`` is a no-op), and
    the connection may be (the server deletes the allocation with it, RFC 8656 §3.1): the
    client fails, and sends nothing more."""

    reliable = True

    @rule(now=st.integers(0, 7))
    def connection_lost(self, now: int) -> None:
        if now:  # (one draw in 8)
            return
        self.server.deallocate()
        self.forgotten_at = self.now
        before = self.client.state
        self.client.connection_lost("reset by peer")
        after = self.client.state
        if before in (TurnState.ALLOCATING, TurnState.ALLOCATED):
            assert after is TurnState.FAILED, after
        elif before is TurnState.CLOSING:
            assert after is TurnState.CLOSED, after
        assert self.client.poll_transmit(self.now) is None
        assert self.client.next_deadline() is None


ReliableTurnModel.TestCase.settings = TurnModel.TestCase.settings
test_turn_client_over_a_stream_against_a_server_that_keeps_lifetimes = ReliableTurnModel.TestCase


def _exchange(
    client: TurnClient, server: LifetimeServer, now: float, *, answers: bool = True
) -> None:
    """Deliver what the client queued to the server, and (unless ``answers`` is false: all
    lost) the answers back."""
    while (data := client.poll_transmit(now)) is not None:
        for answer in server.handle(data, now):
            if answers:
                client.on_server_data(answer, now)


def test_a_bind_refused_after_a_copy_that_may_have_bound_keeps_the_number_from_others() -> None:
    """Found by the model (2026-12-05): a ChannelBind whose first copy bound the channel,
    its answer lost, and whose next copy the server refused (it came to refuse the peer's IP
    meanwhile), gave its number up at once, as though never bound; the next peer took it,
    and the server, which holds the first binding for 10 minutes, refused that bind (RFC 8656
    §12).  A refusal that may answer a later copy than the one that bound leaves the number
    the peer's for the binding's lifetime, as no answer does."""
    server = LifetimeServer()
    client = TurnClient(USER, PASSWORD, reliable=False, queue_limit=QUEUE_LIMIT)
    client.start(0.0)
    _exchange(client, server, 0.0)
    assert client.state is TurnState.ALLOCATED
    far, near = PEERS[2], PEERS[0]
    client.send_to_peer(far, b"a", 1.0)
    permission = client.poll_transmit(1.0)
    assert permission is not None and client.poll_transmit(1.0) is None
    for answer in server.handle(permission, 1.0):
        client.on_server_data(answer, 1.0)  # installed: the data goes, and a ChannelBind
    _exchange(client, server, 1.0, answers=False)
    assert server.channel_of(far, 1.0) == 0x4000  # bound at the server, the answer lost
    assert not client.channel_bound(far)
    server.refused.add(far[0])
    deadline = client.next_deadline()
    assert deadline is not None and deadline < 2.0
    client.on_timer(deadline)
    _exchange(client, server, deadline)  # the copy, refused
    assert not client.channel_bound(far)
    client.send_to_peer(near, b"c", 3.0)
    _exchange(client, server, 3.0)
    client.send_to_peer(near, b"d", 3.0)
    _exchange(client, server, 3.0)
    assert server.violations == []
    assert server.channel_of(near, 3.0) not in (None, 0x4000)
