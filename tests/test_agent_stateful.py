"""A stateful test of the trio shell's public API: two loopback agents driven step by step
(the stateful48 review).

``test_agent_orders.py`` runs lists of operations from one setup; this test draws the setup
too, and checks what each step promises as it goes.  Each example opens two agents in one
``trio.run`` under an autojumping ``MockClock``, in a setup Hypothesis draws: controlling
and controlled, both controlling or both controlled (a role conflict), or a full agent and
an ICE-lite one (opened with ``controlling=True`` or not: lite overrides it); each
nominating regularly or aggressively; over IPv4, both families, UDP and ICE-TCP, or ICE-TCP
alone; each with the default configuration, timers short enough that checks fail and
consent expires between two steps, or small caps (remote candidates, pairs, the receive
buffer).  Then it draws the steps, one at a time (``st.data()``; each step's own choices are
drawn with it, whatever the agents are at, and picked among what there is then: a
candidate is one of the peer's real ones, a stream to close one that is open):

* signaling: the peer's parameters (right, a wrong ufrag or pwd, the same again, changed,
  the lite flag wrong), its candidates (one, all, the same twice, end-of-candidates, an
  earlier generation's, the agent's own, a ``username_fragment`` the candidate
  contradicts; before the parameters too), one way or both;
* ``connect()`` in a task, with or without a timeout, of one agent or both, and cancelling
  one that waits;
* subscriptions (``max_buffer`` 1, 2, 8 or 1024, or an invalid one) read after each step,
  by a slow task, or not at all until the end, and their closing;
* ``restart()`` with and without ``regather`` (and with the same credentials, refused);
  ``wait_gathering_complete``;
* ``send`` and ``send_nowait`` (of data, of what looks like STUN, of a datagram too long),
  ``receive`` (with a timeout), ``receive_nowait``, a reader task, a datagram that must
  arrive, ``aclose`` of the connection; leaving an agent's block early, by its end or by a
  cancellation (and calling the agent after);
* virtual time passing.

What a call may raise is what its docstring and the errors guide say, and where the test
can tell, only when they say: ``set_remote_parameters`` raises ``ConfigError`` for two
lite agents and ``StateError`` for different parameters already set or a closed agent, and
sets nothing then; ``add_remote_candidate`` raises ``StateError`` only after an
end-of-candidates or once closed; ``restart`` changes both credentials, forgets the peer's
parameters and makes the state ``checking`` (but from ``new``); ``connect`` raises
``IceFailedError`` only in ``failed`` and returns one connection, with a pair; a closed
connection raises ``ClosedResourceError``, never ``BrokenResourceError``.  After every
step: each stream read so far follows ``GATHERING_TRANSITIONS`` and
``CONNECTION_TRANSITIONS`` (from its replay on; anything may follow an ``EventsLost``),
nothing after ``closed``, no candidate gathered but while gathering, no pair selected once
ICE is over, none connected without a pair said since ``checking``; unless events were
lost, its last connection state, gathering state and selected pair are the agent's, and
its candidates are the agent's; a fresh subscription's replay agrees with the properties;
the pair statistics mark the selected pair; a connection's ``selected_pair`` is the
agent's; no ``connect()`` still waits once the agent is connected, failed or closed; an
agent that was asked to connect and has the peer's parameters is past ``new``; every
candidate signalled of the peer's generation is among ``remote_candidates``; a lite agent
never controls nor checks, and a full one facing it controls; ``datagrams_sent`` and
``bytes_sent`` count the sends that went, and ``datagrams_received`` lies between what was
read and what the peer sent.  At the end, unless an agent left, both are signalled afresh
(restarted first where the signaling went wrong), must connect in opposite roles, to the
connections they had, and carry a datagram each way; then both leave, every stream ends
with ``closed`` and then ``EndOfChannel``, and gave what a twin subscribed at the same
moment with room for all gave, but for runs replaced by an ``EventsLost`` that counts them
exactly; a closed agent refuses what its docs say; no task of an agent is left in the run;
no file descriptor stays open and no ``ResourceWarning`` was raised.  Each example runs
under a virtual-time bound and a real-time watchdog, so that a hang fails it.

``EXAMPLES`` examples (derandomized: every run draws the same; trio's scheduling is seeded
by Hypothesis too, but what the sockets do is not, so a failure may not replay);
``TRICE_STATEFUL_EXAMPLES`` in the environment asks for more.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import faulthandler
import gc
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import hypothesis
import hypothesis.errors
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

import trice
from trice.ice._events import CONNECTION_TRANSITIONS, GATHERING_TRANSITIONS

from loopback import HAS_IPV6, events_so_far, loopback_config, open_fds, walk_tasks

EXAMPLES = int(os.environ.get("TRICE_STATEFUL_EXAMPLES", "150"))
MAX_STEPS = 16
#: Virtual time given to the agents after each step, before the checks.
STEP = 0.001
#: Each example's bounds: virtual seconds (a wait that never ends), real seconds (a loop
#: that never yields: the watchdog dumps the stacks and ends the process).
VIRTUAL_BOUND = 3600.0
REAL_BOUND = 120
#: The time a "sleep" step lets pass (virtual: past disconnected_timeout, failed_timeout).
SLEEPS = (0.01, 0.3, 2.0, 7.0, 40.0)

_T = TypeVar("_T")
_S = trice.ConnectionState
_G = trice.GatheringState

#: The setups: each agent's (controlling, lite) as opened.
SETUPS: dict[str, tuple[tuple[bool, bool], tuple[bool, bool]]] = {
    "roles": ((True, False), (False, False)),
    "both_controlling": ((True, False), (True, False)),
    "both_controlled": ((False, False), (False, False)),
    "lite": ((True, False), (False, True)),
    "lite_claims_control": ((False, False), (True, True)),
}

#: Each agent's configuration besides: the defaults, timers short enough that checks fail
#: and consent expires between two steps, or small caps (remote candidates, pairs, the
#: receive buffer).
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "tight": {
        "timing": trice.Timing(
            ta=0.005,
            rto=0.05,
            rto_max=0.2,
            max_binding_requests=2,
            nomination_delay=0,
            keepalive_interval=0.1,
            disconnected_timeout=0.3,
            failed_timeout=1.5,
            pac_timeout=0,
        )
    },
    "caps": {"max_pairs": 2, "max_remote_candidates": 3, "receive_buffer": 2},
}

#: What the test sends as data.
PAYLOADS = {b"\x80data", b"\x80now", b"\x80ping", b"\x80pong"}

_TCP = (trice.TcpType.ACTIVE, trice.TcpType.PASSIVE)
#: The networks (each a change of loopback_config's): IPv4, both families (more pairs), UDP
#: and ICE-TCP, ICE-TCP alone.
NETWORKS: dict[str, Callable[[trice.NetworkConfig], trice.NetworkConfig]] = {
    "v4": lambda n: n,
    "dual": lambda n: dataclasses.replace(n, ipv6=HAS_IPV6),
    "tcp": lambda n: dataclasses.replace(n, tcp_candidates=_TCP),
    "tcp_only": lambda n: dataclasses.replace(n, tcp_candidates=_TCP, udp=False),
}

#: The operations, and what each may raise (anything else fails the example).
_CLOSED = (trio.ClosedResourceError,)
_DATA = (trio.ClosedResourceError, trio.BrokenResourceError)
ALLOWED: dict[str, tuple[type[BaseException], ...]] = {
    "params": (trice.ConfigError, trice.StateError),
    "cand": (trice.StateError, trice.LimitError),
    "signal": (trice.StateError, trice.ConfigError, trice.LimitError),
    "connect": (trice.IceFailedError, trio.ClosedResourceError),
    "cancel_connect": (),
    "subscribe": (),
    "unsubscribe": (),
    "restart": (trice.StateError,),
    "waitgather": _CLOSED,
    "send": _DATA,
    "send_nowait": _DATA,
    "receive": _DATA,
    "receive_nowait": (*_DATA, trio.WouldBlock),
    "reader": _DATA,
    "aclose": (),
    "leave": (),
    "sleep": (),
    "intro": (trice.StateError, trice.ConfigError, trice.LimitError),
    "connboth": (),
    "ping": (),
}
#: How often each is drawn (those that move the agents towards a connection more often, so
#: that examples get past checking; leaving, which ends most of what can be done, seldom).
WEIGHTS = {"signal": 3, "intro": 3, "connect": 3, "connboth": 2, "ping": 3, "leave": 1}
OP_NAMES = [name for name in sorted(ALLOWED) for _ in range(WEIGHTS.get(name, 2))]


def tally(what: str) -> None:
    """Count ``what`` in Hypothesis's statistics (``--hypothesis-show-statistics``)."""
    with contextlib.suppress(hypothesis.errors.InvalidArgument):  # (a run outside a test)
        hypothesis.event(what)


async def settle() -> None:
    """Let the agents act on a step: ``STEP`` of time, then until every task waits (a
    connect() woken by the step has returned)."""
    await trio.sleep(STEP)
    await trio.testing.wait_all_tasks_blocked()


def check_grammar(events: list[trice.Event], where: str) -> None:
    """One subscriber's events, from its replay on, in an order the docs allow."""
    gathering: trice.GatheringState | None = None
    state: trice.ConnectionState | None = None
    closed = False
    paired = False  # (a SelectedPairChanged since the last checking, or the start)
    for event in events:
        assert not closed, f"{where}: {event} after closed: {events}"
        if isinstance(event, trice.EventsLost):
            assert event.count > 0, (where, events)
            gathering = state = None  # (anything may follow)
            paired = True
        elif isinstance(event, trice.GatheringStateChanged):
            if gathering is not None:
                assert event.state in GATHERING_TRANSITIONS[gathering], (where, events)
            gathering = event.state
        elif isinstance(event, trice.CandidateGathered):
            assert gathering in (None, _G.GATHERING), f"{where}: {event} in {gathering}"
        elif isinstance(event, trice.SelectedPairChanged):
            assert state not in (_S.FAILED, _S.CLOSED), f"{where}: {event} once ICE is over"
            paired = True
        elif isinstance(event, trice.ConnectionStateChanged):
            if state is not None:
                assert event.state in CONNECTION_TRANSITIONS[state], (
                    f"{where}: {state} -> {event.state}",
                    events,
                )
            if event.state in (_S.CONNECTED, _S.COMPLETED) and state in (_S.NEW, _S.CHECKING):
                # (A pair selected first: also after a restart, for the same two addresses.)
                assert paired, f"{where}: {state} -> {event.state} with no pair said: {events}"
            if event.state is _S.CHECKING:
                paired = False
            state = event.state
            closed = state is _S.CLOSED


def check_lost_counted(seen: list[trice.Event], full: list[trice.Event], where: str) -> None:
    """What a stream gave (``seen``) is what its twin that lost nothing gave (``full``), in
    order, but for runs of events each replaced by an ``EventsLost`` that counts them: no
    event dropped silently, none made up, none out of order."""
    i = 0
    for event in seen:
        if isinstance(event, trice.EventsLost):
            i += event.count
            assert i <= len(full), f"{where}: {event} counts past the events: {seen} / {full}"
        else:
            assert i < len(full) and full[i] == event, (
                f"{where}: {event} at {i} is not the twin's {full[i : i + 1]}",
                seen,
                full,
            )
            i += 1
    assert i == len(full), f"{where}: {len(full) - i} events lost uncounted: {seen} / {full}"


@dataclasses.dataclass
class Stream:
    """A subscription and what the test has read of it (``mode``: ``poll`` after each
    step, ``slow`` by a task, ``never`` until the end)."""

    stream: trice.EventStream
    mode: str
    seen: list[trice.Event] = dataclasses.field(default_factory=list)
    closed: bool = False
    ended: bool = False  # (EndOfChannel read)
    #: A twin subscribed at the same moment with room for everything: what the stream
    #: would have given, had it lost nothing.
    twin: trice.EventStream | None = None


@dataclasses.dataclass
class Side:
    """One agent of the two, and what the test keeps of it."""

    index: int
    controlling: bool
    lite: bool
    config: trice.AgentConfig
    agent: trice.Agent | None = None
    leave: trio.Event = dataclasses.field(default_factory=trio.Event)
    scope: trio.CancelScope = dataclasses.field(default_factory=trio.CancelScope)
    left: trio.Event = dataclasses.field(default_factory=trio.Event)
    streams: list[Stream] = dataclasses.field(default_factory=list)
    conn: trice.Connection | None = None
    conn_closed: bool = False
    connects: list[trio.CancelScope] = dataclasses.field(default_factory=list)
    old_cands: list[trice.Candidate] = dataclasses.field(default_factory=list)
    ended_candidates: bool = False  # (an end-of-candidates was taken, ever)
    wanted: bool = False  # (connect() was called, not in a cancelled scope)
    #: The peer's candidates of its current generation (no ufrag named) given to this
    #: agent since its last restart.
    given: list[trice.Candidate] = dataclasses.field(default_factory=list)
    readers: int = 0  # (reader tasks started on its connection)

    sent: int = 0  # (data datagrams its connection took: sends that returned, True)
    sent_bytes: int = 0
    received: int = 0  # (datagrams the test received on its connection)
    carry_until: float = 0.0  # (an ICE restart's pair of before carries data until then)
    left_at: float = float("inf")  # (when its block was left)
    last_stats: trice.AgentStatistics | None = None

    @property
    def a(self) -> trice.Agent:
        assert self.agent is not None
        return self.agent

    @property
    def c(self) -> trice.Connection:
        assert self.conn is not None
        return self.conn

    def carries(self) -> bool:
        """Whether data goes: a pair selected, or during an ICE restart made while one was,
        its pair of before, in its consent's time (the restart's first 5 s, consent 30 s)."""
        state = self.a.connection_state
        if state in (_S.CONNECTED, _S.COMPLETED):
            return True
        return state is _S.CHECKING and trio.current_time() < self.carry_until

    async def send(self, data: bytes) -> None:
        await self.c.send(data)
        self.sent += 1
        self.sent_bytes += len(data)

    def send_nowait(self, data: bytes) -> None:
        if self.c.send_nowait(data):
            self.sent += 1
            self.sent_bytes += len(data)

    async def receive(self) -> bytes:
        data = await self.c.receive()
        self.received += 1
        assert data in PAYLOADS, data
        return data

    def receive_nowait(self) -> bytes:
        data = self.c.receive_nowait()
        self.received += 1
        assert data in PAYLOADS, data
        return data


class Example:
    """One example: the two agents, the steps, and the checks."""

    def __init__(
        self,
        data: st.DataObject,
        setup: str,
        aggressive: tuple[bool, bool],
        network: str,
        profiles: tuple[str, str],
    ) -> None:
        self.data = data
        self.log: list[str] = [
            f"setup {setup} aggressive={aggressive} network {network} profiles {profiles}"
        ]
        self.sides: list[Side] = []
        for i, (controlling, lite) in enumerate(SETUPS[setup]):
            nomination = trice.Nomination.AGGRESSIVE if aggressive[i] else trice.Nomination.REGULAR
            config = loopback_config(lite=lite, nomination=nomination, **PROFILES[profiles[i]])
            config = dataclasses.replace(config, network=NETWORKS[network](config.network))
            self.sides.append(Side(i, controlling, lite, config))
        self.tasks: trio.Nursery | None = None
        self.choices: list[int] = []
        self.readers: list[trio.CancelScope] = []

    def draw(self, strategy: st.SearchStrategy[Any], label: str) -> Any:
        return self.data.draw(strategy, label=label)

    # ------------------------------------------------------------------ the agents

    async def hold(self, side: Side, task_status: trio.TaskStatus[None]) -> None:
        try:
            with side.scope:  # (cancelled: leaving by a cancellation, mid-session)
                async with trice.open_agent(side.config, controlling=side.controlling) as agent:
                    side.agent = agent
                    side.streams.append(Stream(agent.subscribe(), "poll"))
                    if side.lite:
                        assert not agent.controlling, "a lite agent is always controlled"
                    task_status.started()
                    await side.leave.wait()
        finally:
            side.left.set()

    def guard(self, name: str, exc: BaseException) -> None:
        if not isinstance(exc, ALLOWED[name]):
            raise AssertionError(f"{name} raised {exc!r}, which its docs do not name") from exc

    async def connect(self, side: Side, within: float | None, scope: trio.CancelScope) -> None:
        agent = side.a
        try:
            with scope:
                if within is not None:
                    scope.deadline = trio.current_time() + within
                conn = await agent.connect()
                assert isinstance(conn, trice.Connection), conn
                assert side.conn is None or conn is side.conn, "connect gave another Connection"
                side.conn = conn
                assert agent.selected_pair is not None, "connect returned with no pair"
        except trice.IceFailedError:
            state = agent.connection_state
            assert state is _S.FAILED, f"IceFailedError in {state}"
        except trio.ClosedResourceError:
            assert side.left.is_set() or agent.connection_state is _S.CLOSED
        except trio.Cancelled:
            raise
        finally:
            if scope in side.connects:
                side.connects.remove(scope)

    async def read_slowly(self, stream: Stream) -> None:
        try:
            async for event in stream.stream:
                stream.seen.append(event)
                await trio.sleep(0.3)
        except trio.ClosedResourceError:
            assert stream.closed, "a stream not closed raised ClosedResourceError"
        else:
            stream.ended = True

    async def read_data(self, side: Side, scope: trio.CancelScope) -> None:
        conn = side.conn
        assert conn is not None
        side.readers += 1
        try:
            with scope:
                while True:
                    await side.receive()
        except trio.Cancelled:
            raise
        except BaseException as exc:
            self.guard("reader", exc)
        finally:
            side.readers -= 1

    # ------------------------------------------------------------------ the steps

    def pick_op(self) -> tuple[str, Side]:
        """The next step's operation and side, and the choices it makes (drawn here, all of
        them, whatever the agents are at: what Hypothesis draws must not hang on what the
        sockets did, or a replay draws otherwise)."""
        name = self.draw(st.sampled_from(OP_NAMES), "op")
        side = self.sides[self.draw(st.sampled_from([0, 1]), "side")]
        self.choices = list(self.draw(st.tuples(*[st.integers(0, 255)] * 3), "choices"))
        return name, side

    def choose(self, options: Sequence[_T]) -> _T:
        """One of ``options``, by the step's next choice (the first once they run out)."""
        n = self.choices.pop(0) if self.choices else 0
        choice = options[n % len(options)]
        self.log[-1] += f" {choice!r:.30}"
        return choice

    def signal_params(self, side: Side, kind: str) -> trice.IceParameters:
        """The parameters ``kind`` names for ``side`` to be given."""
        peer = self.sides[1 - side.index].a.local_parameters
        given = side.a.remote_parameters
        if kind == "right":
            return peer
        if kind == "wrong_pwd":
            return dataclasses.replace(peer, pwd="p" * 22)
        if kind == "wrong_ufrag":
            return dataclasses.replace(peer, ufrag="wrongufrag")
        if kind == "lite_flag":
            return dataclasses.replace(peer, lite=not peer.lite)
        if kind == "again":
            return given or peer
        return dataclasses.replace(peer, ufrag="chg" + peer.ufrag)  # (changed)

    def set_params(self, side: Side, params: trice.IceParameters) -> None:
        agent = side.a
        before = agent.remote_parameters
        closed = agent.connection_state is _S.CLOSED
        try:
            agent.set_remote_parameters(params.ufrag, params.pwd, lite=params.lite)
        except trice.ConfigError:
            assert side.lite and params.lite, f"ConfigError for {params} (lite {side.lite})"
            assert agent.remote_parameters == before, "a refused call set parameters"
            raise
        except trice.StateError:
            assert closed or (before is not None and before != params), (
                f"StateError: had {before}, given {params}"
            )
            assert agent.remote_parameters == before, "a refused call set parameters"
            raise
        assert not closed, "a closed agent took parameters"
        assert not (side.lite and params.lite), "two lite agents were let connect"
        assert before is None or before == params, f"had {before}, took {params}"
        assert agent.remote_parameters == params, (agent.remote_parameters, params)
        self.check_remote_known(side)

    def add_candidate(
        self, side: Side, candidate: trice.Candidate | None, *, current: bool = True
    ) -> None:
        agent = side.a
        closed = agent.connection_state is _S.CLOSED
        try:
            agent.add_remote_candidate(candidate)
        except trice.StateError:
            assert closed or side.ended_candidates, f"StateError for {candidate}"
            raise
        except trice.LimitError:
            cap = agent.config.max_remote_candidates
            assert len(agent.remote_candidates) >= cap or cap < 200, "LimitError below the cap"
            raise
        assert not closed, "a closed agent took a candidate"
        if candidate is None:
            side.ended_candidates = True
        elif current:
            side.given.append(candidate)
        self.check_remote_known(side)

    @staticmethod
    def check_remote_known(side: Side) -> None:
        """The peer's candidates of this generation that were signalled to ``side`` are
        among its ``remote_candidates`` once its parameters are known."""
        agent = side.a
        if agent.remote_parameters is None or agent.connection_state is _S.CLOSED:
            return
        known = {(c.protocol, c.address, c.port) for c in agent.remote_candidates}
        for c in side.given:
            assert (c.protocol, c.address, c.port) in known, (
                f"{c} was signalled, and is not among {agent.remote_candidates}"
            )

    async def apply(self, name: str, side: Side) -> None:
        """Carry out one step (what it raises goes to the caller)."""
        assert self.tasks is not None
        other = self.sides[1 - side.index]
        agent, peer = side.a, other.a
        if name == "params":
            kinds = ["right", "wrong_pwd", "wrong_ufrag", "lite_flag", "again", "changed"]
            kind = self.choose(kinds)
            self.set_params(side, self.signal_params(side, kind))
        elif name == "cand":
            cands = list(peer.local_candidates)
            kinds = ["one", "all", "dup", "end", "old", "own", "misnamed"]
            kind = self.choose(kinds)
            if kind == "end":
                self.add_candidate(side, None)
                return
            if kind == "misnamed":  # (a username_fragment the candidate contradicts)
                if cands:
                    named = dataclasses.replace(cands[0], username_fragment="someufrag")
                    with pytest.raises(trice.UsageError):
                        agent.add_remote_candidate(named, username_fragment="otherufrag")
                return
            if kind == "old":
                cands = other.old_cands[:2]
            elif kind == "own":  # (a signaling mistake: the agent's own candidates)
                cands = list(agent.local_candidates[:1])
            elif kind in ("one", "dup") and cands:
                pick = self.choose(cands)
                cands = [pick] * (2 if kind == "dup" else 1)
            for candidate in cands:
                self.add_candidate(side, candidate, current=kind not in ("old", "own"))
        elif name == "signal":  # (one way: this agent learns the other's all)
            self.set_params(side, peer.local_parameters)
            for candidate in peer.local_candidates:
                self.add_candidate(side, candidate)
            self.add_candidate(side, None)
        elif name == "intro":  # (both ways, with end-of-candidates or not)
            end = self.choose([False, True])
            for here, there in ((side, other), (other, side)):
                self.set_params(here, there.a.local_parameters)
                for candidate in there.a.local_candidates:
                    self.add_candidate(here, candidate)
                if end:
                    self.add_candidate(here, None)
        elif name == "connboth":
            for each in self.sides:
                each.wanted = True
                scope = trio.CancelScope()
                each.connects.append(scope)
                self.tasks.start_soon(self.connect, each, None, scope)
        elif name == "connect":
            timeout = self.choose([None, 0.0, 0.05, 2.0])
            side.wanted = side.wanted or timeout != 0.0
            scope = trio.CancelScope()
            side.connects.append(scope)
            self.tasks.start_soon(self.connect, side, timeout, scope)
        elif name == "cancel_connect":
            if side.connects:
                side.connects[0].cancel()
        elif name == "subscribe":
            size = self.choose([1, 2, 8, 1024, 0])
            if size == 0:
                bads: list[Any] = [0, -1, True, 1.5]
                for bad in bads:
                    with pytest.raises(trice.ConfigError):
                        agent.subscribe(max_buffer=bad)
                return
            mode = self.choose(["poll", "slow", "never"])
            twin = agent.subscribe(max_buffer=1 << 20)
            stream = Stream(agent.subscribe(max_buffer=size), mode, twin=twin)
            side.streams.append(stream)
            if mode == "slow":
                self.tasks.start_soon(self.read_slowly, stream)
        elif name == "unsubscribe":
            open_streams = [s for s in side.streams if not s.closed]
            if open_streams:
                stream = self.choose(open_streams)
                if stream.mode == "poll":
                    stream.seen.extend(events_so_far(stream.stream))
                    check_grammar(stream.seen, "before unsubscribing")
                stream.closed = True
                await stream.stream.aclose()
                with pytest.raises(trio.ClosedResourceError):
                    stream.stream.receive_nowait()
        elif name == "restart":
            regather = self.choose([False, True])
            if self.choose(range(6)) == 0:  # (a restart must change both)
                p = agent.local_parameters
                closed_now = agent.connection_state is _S.CLOSED
                with pytest.raises(trice.StateError if closed_now else trice.ConfigError):
                    agent.restart(p.ufrag, p.pwd)
                assert agent.local_parameters == p
            gathered = agent.gathering_state is _G.COMPLETE
            was = agent.connection_state
            closed = was is _S.CLOSED
            ufrag = agent.local_parameters.ufrag
            olds = [dataclasses.replace(c, username_fragment=ufrag) for c in agent.local_candidates]
            try:
                new = agent.restart(regather=regather)
            except trice.StateError:
                assert closed or (regather and not gathered), "StateError from restart"
                raise
            assert not closed, "a closed agent restarted"
            assert new == agent.local_parameters and new.ufrag != ufrag
            if was is not _S.NEW:
                assert agent.connection_state is _S.CHECKING, (
                    f"restart from {was}: {agent.connection_state}"
                )
            else:
                assert agent.connection_state is _S.NEW, "restart from new left new"
            first = side.streams[0]
            if regather and not first.closed:  # (the first stream, polled, of 1024)
                new_events = events_so_far(first.stream)
                first.seen.extend(new_events)
                # (Loopback's gathering anew may end within the call: gathering, then
                # complete.)
                assert trice.GatheringStateChanged(_G.GATHERING) in new_events or any(
                    isinstance(e, trice.EventsLost) for e in first.seen
                ), f"a gathering anew, and no gathering state: {new_events}"
            assert agent.remote_parameters is None, "a restart kept the peer's parameters"
            if was in (_S.CONNECTED, _S.COMPLETED):
                if agent.config.timing.failed_timeout >= 25:
                    side.carry_until = trio.current_time() + 5
            elif was is not _S.CHECKING:
                side.carry_until = 0.0  # (failed, disconnected: no pair carries data)
            side.old_cands = olds
            side.ended_candidates = False  # (a new generation: its own end)
            side.given = []
        elif name == "waitgather":
            with trio.move_on_after(10):
                await agent.wait_gathering_complete()
        elif name in ("send", "send_nowait", "receive", "receive_nowait", "reader", "aclose"):
            await self.use_connection(name, side)
        elif name == "leave":
            side.left_at = trio.current_time()
            if self.choose([False, True]):
                side.scope.cancel()
            side.leave.set()
            await side.left.wait()
            assert agent.connection_state is _S.CLOSED
        elif name == "ping":
            await self.ping(side, other)
        elif name == "sleep":
            delay = self.choose(SLEEPS)
            await trio.sleep(delay)
        else:
            raise AssertionError(f"unknown operation {name}")

    async def ping(self, side: Side, other: Side) -> None:
        """Both connected, their connections open, and nobody else reading the other's: a
        datagram sent one way arrives (loopback loses none)."""
        here, there = side.conn, other.conn
        if (
            here is None
            or there is None
            or side.conn_closed
            or other.conn_closed
            or other.readers
            or other.a.config.receive_buffer < 16  # (what came before may fill it)
            or not side.carries()
            or not other.carries()
        ):
            return
        self.log[-1] += " (sent)"
        restarting = _S.CHECKING in (side.a.connection_state, other.a.connection_state)
        tally("ping during a restart" if restarting else "ping")
        await side.send(b"\x80ping")
        with trio.move_on_after(2) as waited:
            while await other.receive() != b"\x80ping":
                pass
        assert not waited.cancelled_caught, (
            f"a datagram sent in {side.a.connection_state} over {side.a.selected_pair} did "
            f"not come in 2 s ({other.a.connection_state}, {other.a.selected_pair})"
        )

    async def use_connection(self, name: str, side: Side) -> None:
        assert self.tasks is not None
        conn = side.conn
        if conn is None:
            return
        closed = side.conn_closed or side.a.connection_state is _S.CLOSED
        tally(f"{name} on a {'closed' if closed else 'open'} connection")
        payload = b"\x80data"
        if name in ("send", "send_nowait"):
            kind = self.choose(["data", "data", "stun", "long"])
            if kind != "data":
                # (STUN's first bytes and magic cookie, or longer than any path carries.)
                bad = (
                    b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)
                    if kind == "stun"
                    else bytes(70000)
                )
                allowed: tuple[type[BaseException], ...] = (trice.UsageError,)
                if kind == "long":
                    allowed = (trice.UsageError, *_DATA)
                with pytest.raises(allowed):
                    if name == "send":
                        await conn.send(bad)
                    else:
                        conn.send_nowait(bad)
                return
        try:
            if name == "send":
                await side.send(payload)
            elif name == "send_nowait":
                side.send_nowait(b"\x80now")
            elif name == "receive":
                with trio.move_on_after(0.5):
                    await side.receive()
            elif name == "receive_nowait":
                side.receive_nowait()
            elif name == "reader":
                self.readers.append(trio.CancelScope())
                self.tasks.start_soon(self.read_data, side, self.readers[-1])
            else:
                side.conn_closed = True
                await conn.aclose()
                # For good: each call says so (the agent open or not).
                with pytest.raises(trio.ClosedResourceError):
                    await conn.send(b"\x80after")
                with pytest.raises(trio.ClosedResourceError):
                    conn.send_nowait(b"\x80after")
                with pytest.raises(trio.ClosedResourceError):
                    await conn.receive()
                with pytest.raises(trio.ClosedResourceError):
                    conn.receive_nowait()
        except trio.ClosedResourceError:
            assert closed, f"{name}: ClosedResourceError from an open connection"
            raise
        except trio.BrokenResourceError:
            assert not closed, f"{name}: BrokenResourceError, not ClosedResourceError, once closed"
            raise
        if name in ("send", "send_nowait") and side.a.connection_state is _S.FAILED:
            raise AssertionError(f"{name} went through once ICE failed (consent expired)")
        if closed and name not in ("reader", "aclose"):
            raise AssertionError(f"{name} went through on a closed connection")

    # ------------------------------------------------------------------ the checks

    def check(self, step: str) -> None:
        """The invariants that hold between steps."""
        for side in self.sides:
            agent = side.a
            where = f"{step} agent {side.index}"
            for n, stream in enumerate(side.streams):
                if stream.closed or stream.mode == "never":
                    continue
                if stream.mode == "poll":
                    stream.seen.extend(events_so_far(stream.stream))
                check_grammar(stream.seen, f"{where} stream {n}")
                if stream.mode == "slow" or any(
                    isinstance(e, trice.EventsLost) for e in stream.seen
                ):
                    continue
                self.check_agrees(agent, stream.seen, f"{where} stream {n}")
            stats = agent.statistics()
            counts = [v for v in dataclasses.astuple(stats) if isinstance(v, int)]
            assert min(counts) >= 0, (where, stats)
            self.check_counters(side, stats, where)
            assert (stats.datagrams_sent, stats.bytes_sent) == (side.sent, side.sent_bytes), (
                f"{where}: {side.sent} datagrams ({side.sent_bytes} bytes) sent, counted "
                f"{stats.datagrams_sent} ({stats.bytes_sent})"
            )
            other = self.sides[1 - side.index]
            assert side.received <= stats.datagrams_received <= other.sent, (
                f"{where}: received {side.received}, counted {stats.datagrams_received}, "
                f"the peer sent {other.sent}"
            )
            if side.lite:
                assert stats.checks_sent == 0, f"{where}: a lite agent sent checks"
            now = trio.current_time()
            for r in agent.pair_statistics():
                assert (r.round_trip_time is None) == (r.round_trip_time_samples == 0), r
                assert r.responses_received >= r.round_trip_time_samples, r
                assert r.total_round_trip_time >= 0 and r.checks_sent >= 0, r
                for at in (r.last_check_sent, r.last_request_received, r.last_response_received):
                    assert at is None or at <= now, (r, now)
                if side.lite:
                    assert r.checks_sent == 0 and r.round_trip_time is None, r
            rows = [r for r in agent.pair_statistics() if r.selected]
            assert len(rows) <= 1, (where, rows)
            if agent.connection_state is not _S.CLOSED:
                assert (rows[0].pair if rows else None) == agent.selected_pair, (
                    f"{where}: statistics {rows} vs {agent.selected_pair}"
                )
            if side.conn is not None and agent.selected_pair is not None:
                assert side.conn.selected_pair == agent.selected_pair, where
            replay = events_so_far(agent.subscribe())
            check_grammar(replay, f"{where} replay")
            cands = [e.candidate for e in replay if isinstance(e, trice.CandidateGathered)]
            assert cands == list(agent.local_candidates), (where, replay)
            pairs = [e.pair for e in replay if isinstance(e, trice.SelectedPairChanged)]
            assert (pairs[-1] if pairs else None) == agent.selected_pair, (where, replay)
            states = [e.state for e in replay if isinstance(e, trice.ConnectionStateChanged)]
            assert (states[-1] if states else _S.NEW) is agent.connection_state, (where, replay)
            if agent.connection_state in (_S.CONNECTED, _S.COMPLETED):
                assert agent.selected_pair is not None, f"{where}: connected with no pair"
            if side.lite:
                assert not agent.controlling, f"{where}: a lite agent controlling"
            gone = self.sides[1 - side.index].left_at
            if trio.current_time() > gone + min(agent.config.timing.failed_timeout, 30) + 1:
                # (The peer gone: consent, last refreshed before, expired.)
                live = (_S.CONNECTED, _S.COMPLETED, _S.DISCONNECTED)
                assert agent.connection_state not in live, f"{where}: the peer left at {gone}"
            if side.wanted and agent.remote_parameters is not None:
                assert agent.connection_state is not _S.NEW, f"{where}: new, connect() called"
            remote = agent.remote_parameters
            if remote is not None and remote.lite and agent.connection_state is not _S.CLOSED:
                assert agent.controlling, f"{where}: a full agent facing a lite one controlled"
            if agent.connection_state in (_S.CONNECTED, _S.COMPLETED, _S.FAILED, _S.CLOSED):
                waiting = [s for s in side.connects if s.deadline == float("inf")]
                assert not waiting, f"{where}: connect() still waits in {agent.connection_state}"

    @staticmethod
    def check_counters(side: Side, stats: trice.AgentStatistics, where: str) -> None:
        """Counters only grow: through restarts, and once closed (``pairs`` is a count of
        now)."""
        last = side.last_stats
        if last is not None:
            for field in dataclasses.fields(stats):
                was, now = getattr(last, field.name), getattr(stats, field.name)
                if field.name != "pairs" and was is not None and now is not None:
                    assert now >= was, f"{where}: {field.name} went from {was} to {now}"
        side.last_stats = stats

    @staticmethod
    def check_agrees(agent: trice.Agent, seen: list[trice.Event], where: str) -> None:
        """A stream read to now, that lost nothing, says what the properties say."""
        states = [e.state for e in seen if isinstance(e, trice.ConnectionStateChanged)]
        assert (states[-1] if states else _S.NEW) is agent.connection_state, (
            f"{where}: stream says {states[-1:]}, agent {agent.connection_state}"
        )
        gstates = [e.state for e in seen if isinstance(e, trice.GatheringStateChanged)]
        assert (gstates[-1] if gstates else _G.NEW) is agent.gathering_state, (where, gstates)
        pairs = [e.pair for e in seen if isinstance(e, trice.SelectedPairChanged)]
        if agent.connection_state is not _S.CLOSED:
            assert (pairs[-1] if pairs else None) == agent.selected_pair, (
                f"{where}: last pair {pairs[-1:]}, agent {agent.selected_pair}"
            )
        gathered = {e.candidate for e in seen if isinstance(e, trice.CandidateGathered)}
        # (No relay and no mux here, whose candidates go; loopback's addresses stay.)
        assert set(agent.local_candidates) == gathered, where

    # ------------------------------------------------------------------ the end

    async def finish(self) -> None:
        """Both agents open: signalled afresh, they connect (to the connections they had)
        and carry a datagram each way."""
        a, b = self.sides[0].a, self.sides[1].a
        with trio.fail_after(60):
            for x in (a, b):
                await x.wait_gathering_complete()
        fresh = _S.FAILED in (a.connection_state, b.connection_state)
        for x, y in ((a, b), (b, a)):
            if x.remote_parameters not in (None, y.local_parameters):
                fresh = True
        for _ in range(2):
            if fresh:
                self.log.append("final restart")
                for side in self.sides:
                    side.a.restart()
                    side.ended_candidates = False
                    side.given = []
            fresh = False
            for side in self.sides:
                x, y = side.a, self.sides[1 - side.index].a
                p = y.local_parameters
                x.set_remote_parameters(p.ufrag, p.pwd, lite=p.lite)
                for c in y.local_candidates:
                    try:
                        x.add_remote_candidate(c)
                    except trice.StateError:
                        fresh = True  # (after end-of-candidates: start afresh)
                    except trice.LimitError:
                        assert x.config.max_remote_candidates < len(y.local_candidates)
            if not fresh:
                break
        self.log.append("final connect")
        got: list[trice.Connection] = []

        async def one(side: Side) -> None:
            try:
                conn = await side.a.connect()
            except trice.IceFailedError:
                # (Documented: past max_remote_candidates, the peer-reflexive candidates
                # that checks teach are dropped, and an ICE-TCP pair needs one.)
                if not any(x.a.statistics().prflx_dropped for x in self.sides):
                    raise
                tally("final connect failed: peer-reflexive candidates past the cap")
                return
            assert side.conn is None or conn is side.conn, "connect gave another Connection"
            side.conn = conn
            got.append(conn)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for side in self.sides:
                    nursery.start_soon(one, side)
        if len(got) < 2:
            return
        await settle()
        self.check("final")
        assert a.controlling != b.controlling, "both connected in the same role"
        if not any(side.conn_closed for side in self.sides):
            self.log.append("final data")
            for side in self.sides:  # (what came before: a small buffer drops what is new)
                with contextlib.suppress(trio.WouldBlock):
                    while True:
                        side.receive_nowait()
            with trio.fail_after(10):
                sa, sb = self.sides
                await sa.send(b"\x80ping")
                while await sb.receive() != b"\x80ping":
                    pass
                await sb.send(b"\x80pong")
                while await sa.receive() != b"\x80pong":
                    pass

    def check_ended(self) -> None:
        """Both agents left: every stream not closed ends with ``closed``, then its end."""
        for side in self.sides:
            agent = side.a
            assert agent.connection_state is _S.CLOSED
            for n, stream in enumerate(side.streams):
                where = f"end agent {side.index} stream {n} ({stream.mode})"
                if stream.closed:
                    with pytest.raises(trio.ClosedResourceError):
                        stream.stream.receive_nowait()
                    continue
                if not stream.ended:
                    stream.seen.extend(events_so_far(stream.stream))
                    with pytest.raises(trio.EndOfChannel):
                        stream.stream.receive_nowait()
                check_grammar(stream.seen, where)
                assert stream.seen[-1:] == [trice.ConnectionStateChanged(_S.CLOSED)], (
                    where,
                    stream.seen[-3:],
                )
                if stream.twin is not None:
                    check_lost_counted(stream.seen, events_so_far(stream.twin), where)
            self.check_counters(side, agent.statistics(), f"end agent {side.index}")
            # A closed agent's documented answers.
            late = agent.subscribe()
            replay = events_so_far(late)
            assert replay[-1:] == [trice.ConnectionStateChanged(_S.CLOSED)], replay
            with pytest.raises(trio.EndOfChannel):
                late.receive_nowait()
            with pytest.raises(trice.StateError):
                agent.set_remote_parameters("abcd", "p" * 22)
            with pytest.raises(trice.StateError):
                agent.add_remote_candidate(None)
            with pytest.raises(trice.StateError):
                agent.restart()
            conn = side.conn
            if conn is not None:
                # (Its pair is still the agent's last: the property has no error to raise.)
                assert conn.selected_pair == agent.selected_pair
                with pytest.raises(trio.ClosedResourceError):
                    conn.send_nowait(b"\x80late")
                with pytest.raises(trio.ClosedResourceError):
                    conn.receive_nowait()

    async def run(self) -> None:
        root = trio.lowlevel.current_root_task()
        assert root is not None
        before = collections.Counter(t.name for t in walk_tasks(root))
        with trio.fail_after(VIRTUAL_BOUND):
            await self.run_steps()
        await trio.testing.wait_all_tasks_blocked()
        left = collections.Counter(t.name for t in walk_tasks(root)) - before
        assert not left, f"tasks left after both agents: {sorted(left)}"

    async def run_steps(self) -> None:
        async with trio.open_nursery() as nursery:
            for side in self.sides:
                await nursery.start(self.hold, side)
            async with trio.open_nursery() as tasks:
                self.tasks = tasks
                steps: list[tuple[str, Side] | None] = []
                if self.draw(st.booleans(), "start connected"):
                    steps += [("intro", self.sides[0]), ("connboth", self.sides[0])]
                    steps += [("sleep", self.sides[0])]
                steps += [None] * self.draw(st.integers(0, MAX_STEPS), "steps")
                for i, step in enumerate(steps):
                    name, side = step or self.pick_op()
                    self.log.append(f"#{i} {name} {side.index}")
                    try:
                        await self.apply(name, side)
                    except AssertionError:
                        raise
                    except Exception as exc:
                        self.log[-1] += f" -> {type(exc).__name__}"
                        tally(f"{name} raised {type(exc).__name__}")
                        self.guard(name, exc)
                    await settle()
                    self.check(self.log[-1])
                    a, b = self.sides[0].a, self.sides[1].a
                    self.log[-1] += f"  [{a.connection_state.value}/{b.connection_state.value}]"
                for scope in self.readers:
                    scope.cancel()  # (the final exchange reads alone)
                for side in self.sides:
                    for scope in side.connects:
                        scope.cancel()
                states = sorted({s.a.connection_state.value for s in self.sides})
                tally(f"states before the end: {states}")
                if not any(side.left.is_set() for side in self.sides):
                    await self.finish()
                for side in self.sides:
                    side.leave.set()
                    await side.left.wait()
                self.check_ended()
                tasks.cancel_scope.cancel()


def run_example(data: st.DataObject) -> None:
    """One example, under virtual time; then no descriptor and no ResourceWarning left."""
    setup = data.draw(st.sampled_from(sorted(SETUPS)), label="setup")
    aggressive = data.draw(st.tuples(st.booleans(), st.booleans()), label="aggressive")
    network = data.draw(st.sampled_from(sorted(NETWORKS)), label="network")
    profile = st.sampled_from(["default", "default", "tight", "caps"])
    profiles = data.draw(st.tuples(profile, profile), label="profiles")
    example = Example(data, setup, aggressive, network, profiles)
    gc.collect()
    before = open_fds()
    faulthandler.dump_traceback_later(REAL_BOUND, exit=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                trio.run(example.run, clock=trio.testing.MockClock(autojump_threshold=0))
            except BaseException as exc:
                raise AssertionError("steps:\n  " + "\n  ".join(example.log)) from exc
            gc.collect()
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert open_fds() <= before, (example.log, open_fds() - before)
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, (example.log, [str(w.message) for w in leaked])


_settings: Callable[[Any], Any] = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@_settings
@given(st.data())
def test_two_agents_step_by_step(data: st.DataObject) -> None:
    """Any sequence of the public calls keeps the documented promises (see the module
    docstring)."""
    run_example(data)
