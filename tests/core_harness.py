"""A deterministic, virtual-time harness for the pure ICE core (no trio, no sockets).

Two (or more) :class:`~trice.ice._core.AgentCore` objects are wired through an in-memory
:class:`Network`: a float clock, a queue of packets with per-packet latency, loss rules (drop by
predicate) and optional NATs with endpoint-independent mapping and address-dependent filtering
(RFC 4787).  The network drives each core the way the trio shell (``trice/_trio/_agent.py``)
does: ``on_timer`` then ``poll_check`` (then ``prepare``) after every change, each check
transmitted at the offsets of ``Check.schedule`` and given up (``on_timeout``) at its last
offset, a new check on a pair cancelling the one in flight, requests answered through
``on_request`` and responses handed to ``on_response``.  Time jumps to the earliest of the
cores' ``next_deadline()``, the next packet and the next retransmission, so a test of many
virtual seconds runs in milliseconds.

Transaction ids come from a counter and tiebreakers are given, so every run is identical.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from trice import stun
from trice._config import Nomination, Timing
from trice.ice import Candidate, CandidateType, candidate_priority, compute_foundation
from trice.ice._core import AgentCore, Check, IceParameters
from trice.ice._events import (
    CONNECTION_TRANSITIONS,
    ConnectionState,
    ConnectionStateChanged,
    Event,
    SelectedPairChanged,
)

__all__ = [
    "Address",
    "Endpoint",
    "Flight",
    "Nat",
    "Network",
    "Packet",
    "TidSource",
    "connected",
    "event_order_problems",
    "make_candidate",
    "two_agents",
]

Address = tuple[str, int]


# -- candidates and ids ---------------------------------------------------------------------------


def make_candidate(
    address: str,
    port: int,
    *,
    type: CandidateType = CandidateType.HOST,
    component: int = 1,
    local_pref: int = 65535,
    protocol: str = "udp",
    base_address: str | None = None,
    server: str | None = None,
    related: Address | None = None,
) -> Candidate:
    """A candidate whose priority and foundation follow RFC 8445 §5.1.2.1 and §5.1.1.3."""
    return Candidate(
        foundation=compute_foundation(type, base_address or address, protocol, server),
        component=component,
        protocol=protocol,
        priority=candidate_priority(type, local_pref, component),
        address=address,
        port=port,
        type=type,
        related_address=None if related is None else related[0],
        related_port=None if related is None else related[1],
    )


class TidSource:
    """Deterministic 12-byte transaction ids: a 4-byte prefix and a counter."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix.ljust(4, b"\0")[:4]
        self.count = 0

    def __call__(self) -> bytes:
        self.count += 1
        return self.prefix + self.count.to_bytes(8, "big")


# -- the network ----------------------------------------------------------------------------------


@dataclass
class Packet:
    """One datagram on the virtual wire (addresses as the receiver sees them)."""

    seq: int
    sent_at: float
    deliver_at: float
    sender: str
    src: Address
    dst: Address
    data: bytes
    message: stun.Message
    private_src: Address

    @property
    def is_request(self) -> bool:
        return self.message.message_class is stun.MessageClass.REQUEST

    @property
    def is_response(self) -> bool:
        return self.message.message_class in (stun.MessageClass.SUCCESS, stun.MessageClass.ERROR)

    @property
    def use_candidate(self) -> bool:
        return self.message.get(stun.UseCandidate) is not None


class Nat:
    """Endpoint-independent mapping, address-dependent filtering (RFC 4787 §4.1, §5).

    A private ``(address, port)`` gets one public port on ``public_ip`` for every destination;
    an inbound packet to that public port passes only from an IP address the private side has
    sent to.
    """

    def __init__(self, public_ip: str, first_port: int = 40000) -> None:
        self.public_ip = public_ip
        self._ports = itertools.count(first_port)
        self.mappings: dict[Address, Address] = {}
        self._reverse: dict[Address, Address] = {}
        self._permissions: set[tuple[Address, str]] = set()
        self.filtered = 0

    def outbound(self, private: Address, destination: Address) -> Address:
        public = self.mappings.get(private)
        if public is None:
            public = (self.public_ip, next(self._ports))
            self.mappings[private] = public
            self._reverse[public] = private
        self._permissions.add((private, destination[0]))
        return public

    def rebind(self) -> None:
        """The NAT forgets every mapping (a rebinding): the next packets get new ports."""
        self.mappings.clear()
        self._reverse.clear()
        self._permissions.clear()

    def inbound(self, public: Address, source: Address) -> Address | None:
        private = self._reverse.get(public)
        if private is None or (private, source[0]) not in self._permissions:
            self.filtered += 1
            return None
        return private


@dataclass
class Flight:
    """A check the harness is running: ``sent`` transmissions made so far."""

    endpoint: Endpoint
    check: Check
    start: float
    sent: int = 0
    sent_again: bool = False
    """It went more than once (a retransmission, or a resend before its RTO)."""
    answered: bool = False
    resend_at: float | None = None
    """When the check goes out once more before its RTO (see ``AgentCore.poll_resend``)."""
    superseded: bool = False
    """A newer check on the same pair replaced this one: it sends no more and never times
    out, but a late response is still handed to the core (RFC 8445 §7.3.1.4: a cancelled
    transaction "will wait the duration of the transaction timeout for a response")."""

    @property
    def next_time(self) -> float:
        # Offsets before the last are sends; the last is the give-up time.
        scheduled = self.start + self.check.schedule[self.sent]
        if self.resend_at is not None and self.resend_at < scheduled:
            return self.resend_at
        return scheduled


class Endpoint:
    """One side: its core, its transports (bases) and what happened to it."""

    def __init__(self, name: str, core: AgentCore, nat: Nat | None) -> None:
        self.name = name
        self.core = core
        self.nat = nat
        self.bases: dict[int, Address] = {}
        self.signalled: list[Candidate] = []
        self.events: list[tuple[float, Event]] = []
        self.started: list[tuple[float, Check]] = []
        self.transmissions: list[tuple[float, Check, int]] = []
        self.timeouts: list[tuple[float, Check]] = []
        self.flights: dict[bytes, Flight] = {}
        self.responses_sent: list[tuple[float, stun.Message]] = []
        self.stale_deadlines: list[float] = []
        self.restarts = 0

    # -- setting up

    def add_host(
        self, address: str, port: int, *, local_pref: int = 65535, component: int = 1
    ) -> Candidate:
        """Open a transport on ``(address, port)`` and add its host candidate (signalled)."""
        base = len(self.bases)
        self.bases[base] = (address, port)
        candidate = make_candidate(address, port, local_pref=local_pref, component=component)
        self.core.add_local_candidate(candidate, base)
        self.signalled.append(candidate)
        return candidate

    def restart(self, now: float) -> None:
        """An ICE restart, with new parameters of this endpoint's own (counted: see
        :func:`event_order_problems`)."""
        self.restarts += 1
        n = self.restarts
        self.core.restart(
            IceParameters(f"{self.name}ufrag{n}", f"{self.name}-password-{n}-0123456789abcdef"),
            now,
        )

    def base_of(self, address: Address) -> int | None:
        for base, local in self.bases.items():
            if local == address:
                return base
        return None

    # -- what happened

    @property
    def state(self) -> ConnectionState:
        return self.core.state

    def states(self) -> list[ConnectionState]:
        return [e.state for _, e in self.events if isinstance(e, ConnectionStateChanged)]

    def time_of(self, state: ConnectionState) -> float | None:
        """When the connection state first became ``state``."""
        for t, event in self.events:
            if isinstance(event, ConnectionStateChanged) and event.state is state:
                return t
        return None

    def ordinary_starts(self) -> list[float]:
        """Start times of the paced checks (neither consent nor nomination-only)."""
        return [t for t, c in self.started if not c.consent and not c.nominating]


def event_order_problems(events: Iterable[Event], *, restarts: int = 0) -> list[str]:
    """What is wrong with an event sequence, or ``[]``.

    Every :class:`ConnectionStateChanged` must follow ``CONNECTION_TRANSITIONS`` from ``NEW``;
    a pair must be selected (a :class:`SelectedPairChanged`) before, or with, the first
    ``CONNECTED``.  A move back to ``CHECKING`` (from any state but ``NEW``) is an ICE
    restart's: there are at most ``restarts`` of them.
    """
    problems: list[str] = []
    state = ConnectionState.NEW
    selected = False
    back = 0
    for event in events:
        if isinstance(event, SelectedPairChanged):
            selected = True
        elif isinstance(event, ConnectionStateChanged):
            if event.state not in CONNECTION_TRANSITIONS[state]:
                problems.append(f"{state.value} -> {event.state.value} is not allowed")
            elif event.state is ConnectionState.CHECKING and state is not ConnectionState.NEW:
                back += 1
                if back > restarts:
                    problems.append(f"{state.value} -> checking without an ICE restart")
            if event.state is ConnectionState.CONNECTED and not selected:
                problems.append("connected before any SelectedPairChanged")
            state = event.state
    return problems


LossRule = Callable[[Packet], bool]


class Network:
    """The virtual wire and clock that drive the cores.

    Args:
        latency: one-way delay of every packet, or a function of the packet.
    """

    def __init__(self, *, latency: float | Callable[[Packet], float] = 0.01) -> None:
        self.now = 0.0
        self.latency = latency
        self.endpoints: dict[str, Endpoint] = {}
        self.loss_rules: list[LossRule] = []
        #: Packets for which this says yes arrive twice (the copy a millisecond later).
        self.duplicate: LossRule | None = None
        #: What a sender puts on the wire instead of what its core made (a hostile peer's
        #: answers, say): given the sender's name and the bytes, returns the bytes to send.
        self.rewrite: Callable[[str, bytes], bytes] | None = None
        self.sent: list[Packet] = []
        self.delivered: list[Packet] = []
        self.dropped: list[tuple[str, Packet]] = []
        self._queue: list[tuple[float, int, Packet]] = []
        self._seq = itertools.count()
        self.max_steps = 200_000
        self.spin_step = 0.01
        self.steps = 0

    # -- building

    def add_endpoint(
        self,
        name: str,
        *,
        controlling: bool,
        tiebreaker: int,
        timing: Timing | None = None,
        nomination: Nomination = Nomination.REGULAR,
        lite: bool = False,
        nat: Nat | None = None,
        max_pairs: int = 100,
        max_remote_candidates: int = 200,
    ) -> Endpoint:
        params = IceParameters(
            ufrag=f"{name}ufrag", pwd=f"{name}-password-0123456789abcdef", lite=lite
        )
        core = AgentCore(
            local=params,
            controlling=controlling,
            tiebreaker=tiebreaker,
            timing=Timing() if timing is None else timing,
            nomination=nomination,
            max_pairs=max_pairs,
            max_remote_candidates=max_remote_candidates,
            new_transaction_id=TidSource(name.encode()),
            consent_jitter=lambda: 1.0,  # (deterministic: RFC 7675's jitter has its own test)
        )
        endpoint = Endpoint(name, core, nat)
        self.endpoints[name] = endpoint
        return endpoint

    def exchange(
        self,
        a: Endpoint,
        b: Endpoint,
        *,
        end_of_candidates: bool = True,
        want: bool = True,
    ) -> None:
        """Signal parameters and candidates both ways, then (``want``) start both sides."""
        for x, y in ((a, b), (b, a)):
            x.core.set_remote(y.core.local, self.now)
            for candidate in y.signalled:
                x.core.add_remote_candidate(candidate)
            if end_of_candidates:
                x.core.add_remote_candidate(None)
                x.core.set_local_complete()
        if want:
            a.core.want_connection(self.now)
            b.core.want_connection(self.now)
        self._service()

    def drop(self, rule: LossRule) -> LossRule:
        """Add a loss rule (returned, so it can be removed from :attr:`loss_rules`)."""
        self.loss_rules.append(rule)
        return rule

    def drop_all(self) -> LossRule:
        return self.drop(lambda packet: True)

    # -- the wire

    def send(self, endpoint: Endpoint, base: int, destination: Address, data: bytes) -> None:
        private = endpoint.bases[base]
        source = private if endpoint.nat is None else endpoint.nat.outbound(private, destination)
        if self.rewrite is not None:
            data = self.rewrite(endpoint.name, data)
        packet = Packet(
            seq=next(self._seq),
            sent_at=self.now,
            deliver_at=self.now,
            sender=endpoint.name,
            src=source,
            dst=destination,
            data=data,
            message=stun.decode(data),
            private_src=private,
        )
        latency = self.latency if isinstance(self.latency, (int, float)) else self.latency(packet)
        packet.deliver_at = self.now + latency
        self.sent.append(packet)
        if any(rule(packet) for rule in self.loss_rules):
            self.dropped.append(("lost", packet))
            return
        heapq.heappush(self._queue, (packet.deliver_at, packet.seq, packet))
        if self.duplicate is not None and self.duplicate(packet):
            copy = dataclasses.replace(
                packet, seq=next(self._seq), deliver_at=packet.deliver_at + 0.001
            )
            heapq.heappush(self._queue, (copy.deliver_at, copy.seq, copy))

    def _route(self, packet: Packet) -> tuple[Endpoint, int] | None:
        for endpoint in self.endpoints.values():
            if endpoint.nat is not None:
                if packet.dst[0] != endpoint.nat.public_ip:
                    continue
                private = endpoint.nat.inbound(packet.dst, packet.src)
                if private is None:
                    self.dropped.append(("filtered", packet))
                    return None
                base = endpoint.base_of(private)
            else:
                base = endpoint.base_of(packet.dst)
            if base is not None:
                return endpoint, base
        self.dropped.append(("unroutable", packet))
        return None

    def _deliver(self, packet: Packet) -> None:
        route = self._route(packet)
        if route is None:
            return
        endpoint, base = route
        self.delivered.append(packet)
        # Decode again, as a receiver would, from the bytes.
        message = stun.decode(packet.data)
        core = endpoint.core
        if message.message_class in (stun.MessageClass.REQUEST, stun.MessageClass.INDICATION):
            response = core.on_request(base, packet.src, message, self.now)
            if response is not None:
                endpoint.responses_sent.append((self.now, stun.decode(response)))
                self.send(endpoint, base, packet.src, response)
            return
        flight = endpoint.flights.get(message.transaction_id)
        if flight is None:
            # No check in flight: perhaps the answer to a consent check past its RTO.
            core.on_late_response(message, packet.src, self.now, base=base)
            return
        if flight.answered:
            return
        if core.on_response(
            flight.check, message, packet.src, self.now, base=base, sent_again=flight.sent_again
        ):
            flight.answered = True
            del endpoint.flights[message.transaction_id]

    # -- checks

    def _start(self, endpoint: Endpoint, check: Check) -> None:
        if not check.consent:
            # A new check on a pair cancels the one in flight: no more retransmissions and
            # no timeout, but its response is still listened for until its give-up time.
            for flight in endpoint.flights.values():
                if flight.check.pair is check.pair and not flight.check.consent:
                    flight.superseded = True
                    flight.sent = len(flight.check.schedule) - 1
                    flight.resend_at = None
        endpoint.started.append((self.now, check))
        flight = Flight(endpoint, check, self.now)
        endpoint.flights[check.transaction_id] = flight
        self._fire(flight)

    def _fire(self, flight: Flight) -> None:
        endpoint, check = flight.endpoint, flight.check
        if flight.superseded or (endpoint.core.finished and flight.sent):
            # (Superseded; or ICE is over, failed or closed: the shell sends no more.)
            del endpoint.flights[check.transaction_id]
        elif (
            flight.sent and flight.sent < len(check.schedule) - 1 and endpoint.core.cancelled(check)
        ) or (flight.resend_at is not None and endpoint.core.cancelled(check)):
            # Cancelled (a pair is selected, RFC 8445 §8.1.2): this copy does not go, as in
            # the shell, whose run asks at each copy's time; its answer is still awaited
            # until its give-up time, and a later copy goes if the check is cancelled no
            # more by then (its pair ranked above the selected one since, say).
            resend_at = flight.resend_at
            flight.resend_at = None
            if flight.sent < len(check.schedule) - 1 and (
                resend_at is None or resend_at >= flight.start + check.schedule[flight.sent]
            ):
                flight.sent += 1  # (the copy that was due: skipped; past the last, it gives up)
        elif (
            flight.resend_at is not None
            and flight.resend_at <= self.now
            and flight.resend_at < flight.start + check.schedule[flight.sent]
        ):
            # Once more before its RTO, as the same transaction (the next scheduled
            # transmission stays where it was).
            flight.resend_at = None
            flight.sent_again = True
            endpoint.transmissions.append((self.now, check, flight.sent))
            self.send(endpoint, check.base, check.destination, check.message)
        elif flight.sent < len(check.schedule) - 1:
            # (A resend not yet sent is dropped: this transmission serves, as in the shell.)
            flight.resend_at = None
            flight.sent_again |= flight.sent > 0
            endpoint.transmissions.append((self.now, check, flight.sent))
            flight.sent += 1
            self.send(endpoint, check.base, check.destination, check.message)
        else:
            del endpoint.flights[check.transaction_id]
            endpoint.timeouts.append((self.now, check))
            endpoint.core.on_timeout(check, self.now)

    # -- the clock

    def _drain(self, endpoint: Endpoint) -> None:
        for event in endpoint.core.drain_events():
            endpoint.events.append((self.now, event))

    def _service(self) -> None:
        """What the shell's scheduler does after every change: timers, then new checks."""
        for endpoint in self.endpoints.values():
            core = endpoint.core
            core.on_timer(self.now)
            for tid, at in core.poll_resend():
                # The check goes out once more at ``at``, as the same transaction.
                flight = endpoint.flights.get(tid)
                if (
                    flight is not None
                    and not flight.superseded
                    and (flight.resend_at is None or at < flight.resend_at)
                ):
                    flight.resend_at = at
            while (check := core.poll_check(self.now)) is not None:
                self._drain(endpoint)
                self._start(endpoint, check)
            self._drain(endpoint)
            core.prepare()  # spare work, once what was due is sent (as the shell does)

    def _due(self) -> Packet | Flight | None:
        packet = self._queue[0][2] if self._queue else None
        flight = min(
            (f for e in self.endpoints.values() for f in e.flights.values()),
            key=lambda f: f.next_time,
            default=None,
        )
        if (
            packet is not None
            and packet.deliver_at <= self.now
            and (flight is None or packet.deliver_at <= flight.next_time)
        ):
            return packet
        if flight is not None and flight.next_time <= self.now:
            return flight
        return None

    def _process_due(self) -> None:
        while (item := self._due()) is not None:
            self.steps += 1
            if self.steps > self.max_steps:
                raise RuntimeError("the harness ran too many steps (a livelock?)")
            if isinstance(item, Packet):
                heapq.heappop(self._queue)
                self._deliver(item)
            else:
                self._fire(item)
            self._service()

    def _next_time(self) -> float | None:
        times: list[float] = []
        if self._queue:
            times.append(self._queue[0][0])
        for endpoint in self.endpoints.values():
            times.extend(f.next_time for f in endpoint.flights.values())
            deadline = endpoint.core.next_deadline()
            if deadline is None:
                continue
            if deadline <= self.now:
                # The core asks to be woken at once although it has just been served: the
                # trio shell's scheduler would spin, calling on_timer over and over.  Record
                # it and emulate the busy loop with steps of ``spin_step``.
                if not endpoint.stale_deadlines or endpoint.stale_deadlines[-1] != self.now:
                    endpoint.stale_deadlines.append(self.now)
                deadline = self.now + self.spin_step
            times.append(deadline)
        return min(times) if times else None

    def run_until(self, predicate: Callable[[], bool], max_time: float) -> bool:
        """Advance virtual time until ``predicate()`` holds (True) or ``max_time`` (False)."""
        self._process_due()
        self._service()
        while not predicate():
            t = self._next_time()
            if t is None or t > max_time:
                self.now = max(self.now, max_time)
                self._process_due()
                self._service()
                return predicate()
            self.now = max(self.now, t)
            self.steps += 1
            if self.steps > self.max_steps:
                raise RuntimeError("the harness ran too many steps (a livelock?)")
            self._process_due()
            self._service()
        return True

    def run_for(self, duration: float) -> None:
        """Advance virtual time by ``duration`` seconds."""
        self.run_until(lambda: False, self.now + duration)

    def packets(self, *, sender: str | None = None, requests: bool | None = None) -> list[Packet]:
        """Packets sent, filtered by sender and by kind."""
        out = []
        for packet in self.sent:
            if sender is not None and packet.sender != sender:
                continue
            if requests is not None and packet.is_request != requests:
                continue
            out.append(packet)
        return out


def connected(*endpoints: Endpoint) -> Callable[[], bool]:
    """A predicate: every endpoint has a selected pair and is connected or completed."""
    good = (ConnectionState.CONNECTED, ConnectionState.COMPLETED)
    return lambda: all(e.core.selected is not None and e.state in good for e in endpoints)


def two_agents(
    *,
    a_controlling: bool = True,
    b_controlling: bool = False,
    a_tiebreaker: int = 2000,
    b_tiebreaker: int = 1000,
    nomination: Nomination = Nomination.REGULAR,
    b_nomination: Nomination | None = None,
    timing: Timing | None = None,
    a_hosts: Sequence[Address] = (("10.0.0.1", 5000),),
    b_hosts: Sequence[Address] = (("10.0.0.2", 6000),),
    a_nat: Nat | None = None,
    a_lite: bool = False,
    b_lite: bool = False,
    latency: float | Callable[[Packet], float] = 0.01,
    exchange: bool = True,
    end_of_candidates: bool = True,
    want: bool = True,
) -> tuple[Network, Endpoint, Endpoint]:
    """Two endpoints ``a`` and ``b`` with host candidates, signalled to each other."""
    net = Network(latency=latency)
    a = net.add_endpoint(
        "a",
        controlling=a_controlling,
        tiebreaker=a_tiebreaker,
        timing=timing,
        nomination=nomination,
        lite=a_lite,
        nat=a_nat,
    )
    b = net.add_endpoint(
        "b",
        controlling=b_controlling,
        tiebreaker=b_tiebreaker,
        timing=timing,
        nomination=nomination if b_nomination is None else b_nomination,
        lite=b_lite,
    )
    for address, port in a_hosts:
        a.add_host(address, port)
    for address, port in b_hosts:
        b.add_host(address, port)
    if exchange:
        net.exchange(a, b, end_of_candidates=end_of_candidates, want=want)
    return net, a, b
