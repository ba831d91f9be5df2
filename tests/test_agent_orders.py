"""Two loopback agents driven through the public API in random orders (from a review of the
API in random orders).

Hypothesis draws a list of up to 14 operations, each on one of the two agents: signaling
(right, swapped, stale or duplicate parameters and candidates, end-of-candidates named for
the right, an old or the agent's own ufrag), ``connect`` with and without a timeout, ICE
restarts (with and without gathering anew, and back to old credentials), sends and
receives (waiting, in reader tasks, and ``_nowait``), subscriptions (small buffers
included) and their closing, closing the connection, leaving an agent's block, and time
passing.  Each example runs under an autojumping ``MockClock`` (virtual time: the 40 s
sleeps cost nothing).  ``test_random_orders`` draws 100 examples from two new agents;
``test_random_orders_once_connected`` 60 more whose operations come after both agents
connected (few draws of the first get there).  Both are derandomized, so that every run
draws the same lists (trio still orders each batch of ready tasks at random).

After every operation, and one virtual millisecond for the agents to act on it, the test
checks: only the documented exceptions come out of a call (``IceFailedError`` only in
``failed``; ``connect`` returns a :class:`~trice.Connection`, the same one every time, and
only with a pair selected); each subscriber's events follow ``GATHERING_TRANSITIONS`` and
``CONNECTION_TRANSITIONS``, nothing after ``closed``, and (unless events were lost) its
last connection state, gathering state and selected pair are the agent's and every local
candidate was announced; the pair statistics mark at most one pair selected, the agent's;
the connection's pair is the agent's; a fresh subscription's replay agrees with the
properties.  At the end, unless an agent left, both are signalled afresh (restarted if a
side failed or was handed stale credentials) and must connect within 40 s, to the same
connections as before, and (unless one was closed) carry a datagram each way; every
stream ends with ``closed``; no file descriptor is left open and no ResourceWarning is
raised.
"""

from __future__ import annotations

import dataclasses
import gc
import warnings
from typing import Any

import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

import trice
from trice.ice._events import CONNECTION_TRANSITIONS, GATHERING_TRANSITIONS

from loopback import connect_both, events_so_far, loopback_config, open_fds, signal

#: An operation: its name, the agent it acts on (0: controlling, 1: controlled), an argument.
Op = tuple[str, int, Any]

#: Virtual time given to the agents after each operation, before the checks.
STEP = 0.001
#: Examples per run of each test, and operations drawn per example (the file runs in some
#: 7 s).
EXAMPLES = 100
EXAMPLES_CONNECTED = 60
MAX_OPS = 14
#: The start of every example of ``test_random_orders_once_connected``: both agents
#: signalled (end-of-candidates included), connected, and 0.1 s on.
CONNECTED_FIRST: list[Op] = [("intro", 0, True), ("connboth", 0, None), ("sleep", 0, 0.1)]

SIDES = st.sampled_from([0, 1])
OPS: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("params"), SIDES, st.sampled_from(["right", "swapped", "old"])),
    st.tuples(st.just("cands"), SIDES, st.sampled_from(["all", "one", "none", "old", "dup"])),
    st.tuples(st.just("connect"), SIDES, st.sampled_from([0.0, 0.01, 0.3, 3.0, None])),
    st.tuples(st.just("restart"), SIDES, st.booleans()),
    st.tuples(st.just("signal"), SIDES, st.just(0)),
    st.tuples(st.just("send"), SIDES, st.just(0)),
    st.tuples(st.just("receive"), SIDES, st.sampled_from([0.0, 0.5])),
    st.tuples(st.just("subscribe"), SIDES, st.booleans()),
    st.tuples(st.just("waitgather"), SIDES, st.just(0)),
    st.tuples(st.just("aclose"), SIDES, st.just(0)),
    st.tuples(st.just("leave"), SIDES, st.just(0)),
    st.tuples(st.just("sleep"), st.just(0), st.sampled_from([0.001, 0.1, 1.0, 6.0, 40.0])),
    st.tuples(st.just("rtask"), SIDES, st.sampled_from([0.05, 2.0, None])),
    st.tuples(st.just("nowait"), SIDES, st.booleans()),
    st.tuples(st.just("small"), SIDES, st.sampled_from([1, 2, 3])),
    st.tuples(st.just("eoc_named"), SIDES, st.sampled_from(["right", "old", "own"])),
    st.tuples(st.just("named"), SIDES, st.sampled_from(["right", "old"])),
    st.tuples(st.just("restart_old"), SIDES, st.just(0)),
)
#: Operations that move two agents towards a connection (drawn more often, so that runs get
#: past checking).
LIVELY: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("intro"), st.just(0), st.booleans()),
    st.tuples(st.just("connboth"), st.just(0), st.sampled_from([0.01, 0.5, None])),
    st.tuples(st.just("connect"), SIDES, st.just(None)),
    st.tuples(st.just("restart"), SIDES, st.booleans()),
    st.tuples(st.just("send"), SIDES, st.just(0)),
    st.tuples(st.just("rtask"), SIDES, st.sampled_from([0.05, 2.0, None])),
    st.tuples(st.just("sleep"), st.just(0), st.sampled_from([0.001, 0.1, 1.0, 6.0, 40.0])),
)
ANY_OP: st.SearchStrategy[Op] = st.one_of(
    OPS.filter(lambda op: op[0] != "leave"), LIVELY, LIVELY, OPS
)

#: What each operation may raise (any other exception fails the example).
ALLOWED: dict[str, tuple[type[BaseException], ...]] = {
    "params": (trice.StateError,),
    "cands": (trice.StateError,),
    "signal": (trice.StateError,),
    "connect": (trice.IceFailedError, trio.ClosedResourceError),
    "restart": (trice.StateError,),
    "send": (trio.ClosedResourceError, trio.BrokenResourceError),
    "receive": (trio.ClosedResourceError, trio.BrokenResourceError),
    "waitgather": (trio.ClosedResourceError,),
    "rtask": (trio.ClosedResourceError, trio.BrokenResourceError),
    "nowait": (trio.ClosedResourceError, trio.BrokenResourceError, trio.WouldBlock),
    "eoc_named": (trice.StateError,),
    "named": (trice.StateError,),
    "restart_old": (trice.StateError, trice.ConfigError),
    "intro": (trice.StateError,),
}


def check_grammar(events: list[trice.Event], where: str) -> None:
    """The documented order of one subscriber's events (from its replay on)."""
    gathering: trice.GatheringState | None = None
    state: trice.ConnectionState | None = None
    closed = False
    for event in events:
        assert not closed, f"{where}: {event} after closed: {events}"
        if isinstance(event, trice.EventsLost):
            gathering = state = None  # (anything may follow)
            continue
        if isinstance(event, trice.GatheringStateChanged):
            if gathering is not None:
                assert event.state in GATHERING_TRANSITIONS[gathering], (where, events)
            gathering = event.state
        elif isinstance(event, trice.ConnectionStateChanged):
            if state is not None:
                assert event.state in CONNECTION_TRANSITIONS[state], (
                    f"{where}: {state} -> {event.state}",
                    events,
                )
            state = event.state
            closed = state is trice.ConnectionState.CLOSED


class Side:
    """One agent of the two, and what the test keeps of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.agent: trice.Agent | None = None
        self.leave = trio.Event()
        self.left = trio.Event()
        # Each subscription, with the events it has given so far.
        self.streams: list[tuple[trice.EventStream, list[trice.Event]]] = []
        self.conn: trice.Connection | None = None
        self.conn_closed = False  # (its aclose called)
        self.old_params: list[trice.IceParameters] = []
        self.old_cands: list[trice.Candidate] = []

    @property
    def open_agent(self) -> trice.Agent:
        assert self.agent is not None
        return self.agent


class Scenario:
    """One example: the two agents, the operations' effects, and the checks."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.sides = [Side(0), Side(1)]
        self.escaped: list[str] = []
        self.readers: list[trio.CancelScope] = []
        self.reused = False  # (a restart back to old credentials: the peer cannot tell)

    async def hold(self, side: Side, task_status: trio.TaskStatus[None]) -> None:
        async with trice.open_agent(loopback_config(), controlling=side.index == 0) as agent:
            side.agent = agent
            side.streams.append((agent.subscribe(), []))
            task_status.started()
            await side.leave.wait()
        side.left.set()

    def guard(self, name: str, exc: BaseException) -> None:
        if not isinstance(exc, ALLOWED.get(name, ())):
            self.escaped.append(f"{name}: {exc!r}")
            raise exc

    async def connect(self, side: Side, delay: float | None) -> None:
        agent = side.open_agent
        try:
            with trio.move_on_after(1e9 if delay is None else delay):
                conn = await agent.connect()
                if not isinstance(conn, trice.Connection):
                    self.escaped.append(f"connect returned {conn!r}")
                if side.conn is not None and conn is not side.conn:
                    self.escaped.append("connect gave another Connection")
                side.conn = conn
                if agent.selected_pair is None or agent.connection_state not in (
                    trice.ConnectionState.CONNECTED,
                    trice.ConnectionState.COMPLETED,
                    trice.ConnectionState.DISCONNECTED,  # (a pair selected, consent late)
                    # (A restart made while connect() took its last checkpoint: the call
                    # came before it, and returns the connection it had.)
                    trice.ConnectionState.CHECKING,
                ):
                    self.escaped.append(
                        f"connect returned in {agent.connection_state} with {agent.selected_pair}"
                    )
        except trio.Cancelled:
            raise
        except BaseException as exc:
            if (
                isinstance(exc, trice.IceFailedError)
                and agent.connection_state is not trice.ConnectionState.FAILED
            ):
                self.escaped.append(f"IceFailedError in {agent.connection_state}: {exc}")
            self.guard("connect", exc)

    async def read(self, side: Side, delay: float | None, scope: trio.CancelScope) -> None:
        conn = side.conn
        if conn is None:
            return
        try:
            with scope:
                if delay is not None:
                    scope.deadline = trio.current_time() + delay
                while True:
                    await conn.receive()
        except trio.Cancelled:
            raise
        except BaseException as exc:
            self.guard("rtask", exc)

    def check(self, step: str) -> None:
        """The invariants that hold between operations."""
        for side in self.sides:
            agent = side.open_agent
            for n, (stream, seen) in enumerate(side.streams):
                seen.extend(events_so_far(stream))
                check_grammar(seen, f"{step} agent {side.index} stream {n}")
                if any(isinstance(e, trice.EventsLost) for e in seen):
                    continue
                states = [e.state for e in seen if isinstance(e, trice.ConnectionStateChanged)]
                if states:
                    assert states[-1] is agent.connection_state, (
                        f"{step}: agent {side.index} stream {n} says {states[-1]}, "
                        f"agent {agent.connection_state}"
                    )
                gstates = [e.state for e in seen if isinstance(e, trice.GatheringStateChanged)]
                if gstates:
                    assert gstates[-1] is agent.gathering_state, (step, side.index, gstates)
                pairs = [e.pair for e in seen if isinstance(e, trice.SelectedPairChanged)]
                if pairs:
                    assert pairs[-1] == agent.selected_pair, (
                        f"{step}: agent {side.index} stream {n} last pair {pairs[-1]}, "
                        f"agent {agent.selected_pair}"
                    )
                gathered = {e.candidate for e in seen if isinstance(e, trice.CandidateGathered)}
                assert set(agent.local_candidates) <= gathered, (step, side.index)
            rows = [r for r in agent.pair_statistics() if r.selected]
            assert len(rows) <= 1, (step, rows)
            if agent.connection_state is not trice.ConnectionState.CLOSED:
                assert (rows[0].pair if rows else None) == agent.selected_pair, (
                    f"{step}: agent {side.index} statistics {rows} vs {agent.selected_pair}"
                )
            if side.conn is not None and agent.selected_pair is not None:
                assert side.conn.selected_pair == agent.selected_pair, step
            # A fresh replay agrees with the properties.
            replay = events_so_far(agent.subscribe())
            states = [e.state for e in replay if isinstance(e, trice.ConnectionStateChanged)]
            if agent.connection_state is not trice.ConnectionState.NEW:
                assert states and states[-1] is agent.connection_state, (step, replay)
            cands = [e.candidate for e in replay if isinstance(e, trice.CandidateGathered)]
            assert cands == list(agent.local_candidates), (step, side.index, replay)
            pairs = [e.pair for e in replay if isinstance(e, trice.SelectedPairChanged)]
            if agent.connection_state is not trice.ConnectionState.CLOSED:
                assert (pairs[-1] if pairs else None) == agent.selected_pair, (step, replay)
            check_grammar(replay, f"{step} replay {side.index}")

    async def apply(self, op: Op, tasks: trio.Nursery) -> None:
        """Carry out one operation (what it raises goes to the caller)."""
        name, who, arg = op
        side, other = self.sides[who], self.sides[1 - who]
        agent, peer = side.open_agent, other.open_agent
        if name == "params":
            if arg == "right":
                p = peer.local_parameters
            elif arg == "swapped":
                p = agent.local_parameters
            else:
                p = other.old_params[0] if other.old_params else peer.local_parameters
            agent.set_remote_parameters(p.ufrag, p.pwd)
        elif name == "cands":
            if arg == "all":
                cands = list(peer.local_candidates)
            elif arg == "one":
                cands = list(peer.local_candidates[:1])
            elif arg == "old":
                cands = list(other.old_cands)
            elif arg == "dup":
                cands = list(peer.local_candidates[:1]) * 2
            else:
                cands = []
                agent.add_remote_candidate(None)
            for c in cands:
                agent.add_remote_candidate(c)
        elif name == "signal":  # (one way: this agent learns the other's all)
            p = peer.local_parameters
            agent.set_remote_parameters(p.ufrag, p.pwd)
            for c in peer.local_candidates:
                agent.add_remote_candidate(c)
            agent.add_remote_candidate(None)
        elif name == "connect":
            tasks.start_soon(self.connect, side, arg)
        elif name == "restart":
            side.old_params.append(agent.local_parameters)
            side.old_cands.extend(
                dataclasses.replace(c, username_fragment=agent.local_parameters.ufrag)
                for c in agent.local_candidates
            )
            agent.restart(regather=arg)
        elif name == "send":
            if side.conn is not None:
                await side.conn.send(b"\x80hello")
        elif name == "receive":
            if side.conn is not None:
                with trio.move_on_after(arg):
                    await side.conn.receive()
        elif name == "subscribe":
            if arg or not side.streams:
                side.streams.append((agent.subscribe(), []))
            else:
                stream, _ = side.streams.pop()
                await stream.aclose()
        elif name == "waitgather":
            with trio.move_on_after(5):
                await agent.wait_gathering_complete()
        elif name == "aclose":
            if side.conn is not None:
                side.conn_closed = True
                await side.conn.aclose()
        elif name == "leave":
            side.leave.set()
            await side.left.wait()
        elif name == "intro":  # (both ways, with end-of-candidates or not)
            signal(agent, peer, end=arg)
        elif name == "connboth":
            tasks.start_soon(self.connect, side, arg)
            tasks.start_soon(self.connect, other, arg)
        elif name == "rtask":
            self.readers.append(trio.CancelScope())
            tasks.start_soon(self.read, side, arg, self.readers[-1])
        elif name == "nowait":
            if side.conn is not None:
                if arg:
                    side.conn.send_nowait(b"\x80now")
                else:
                    side.conn.receive_nowait()
        elif name == "small":
            side.streams.append((agent.subscribe(max_buffer=arg), []))
        elif name == "eoc_named":
            if arg == "right":
                u = peer.local_parameters.ufrag
            elif arg == "old":
                u = (other.old_params or [peer.local_parameters])[0].ufrag
            else:
                u = agent.local_parameters.ufrag
            agent.add_remote_candidate(None, username_fragment=u)
        elif name == "named":
            if arg == "right":
                u = peer.local_parameters.ufrag
            else:
                u = (other.old_params or [peer.local_parameters])[0].ufrag
            for c in peer.local_candidates:
                agent.add_remote_candidate(
                    dataclasses.replace(c, username_fragment=None), username_fragment=u
                )
        elif name == "restart_old":
            if side.old_params:
                self.reused = True
                back = side.old_params[0]
                side.old_params.append(agent.local_parameters)
                agent.restart(back.ufrag, back.pwd)
        elif name == "sleep":
            await trio.sleep(arg)
        else:
            raise AssertionError(f"unknown operation {op}")

    async def finish(self) -> None:
        """Both agents open: each given the other's current parameters and candidates, they
        connect, to the connections they had, and carry data."""
        a, b = self.sides[0].open_agent, self.sides[1].open_agent
        # (A failed agent tries again by a restart only.)
        fresh = trice.ConnectionState.FAILED in (a.connection_state, b.connection_state)
        fresh = fresh or self.reused
        for x, y in ((a, b), (b, a)):
            rp = x.remote_parameters
            if rp is not None and rp.ufrag != y.local_parameters.ufrag:
                fresh = True
        for x in (a, b):
            await x.wait_gathering_complete()
        for _ in range(2):
            if fresh:
                self.log.append("final restart")
                a.restart()
                b.restart()
            fresh = False
            for x, y in ((a, b), (b, a)):
                p = y.local_parameters
                x.set_remote_parameters(p.ufrag, p.pwd)
                for c in y.local_candidates:
                    try:
                        x.add_remote_candidate(c)
                    except trice.StateError:
                        fresh = True  # (after end-of-candidates: start afresh)
            if not fresh:
                break
        self.log.append("final connect")
        got = await connect_both(a, b, within=40)
        for side, conn in zip(self.sides, got, strict=True):
            if side.conn is not None:
                assert conn is side.conn, "connect gave another Connection"
        await trio.sleep(STEP)
        self.check("final")
        if not any(side.conn_closed for side in self.sides):
            self.log.append("final data")
            with trio.fail_after(5):
                await got[0].send(b"\x80ping")
                while await got[1].receive() != b"\x80ping":
                    pass
                await got[1].send(b"\x80pong")
                while await got[0].receive() != b"\x80pong":
                    pass

    async def run(self, ops: list[Op]) -> None:
        async with trio.open_nursery() as nursery:
            for side in self.sides:
                await nursery.start(self.hold, side)
            async with trio.open_nursery() as tasks:
                for i, op in enumerate(ops):
                    step = f"#{i} {op[0]} {op[1]} {op[2]}"
                    self.log.append(step)
                    try:
                        await self.apply(op, tasks)
                    except trio.Cancelled:
                        raise
                    except BaseException as exc:
                        self.guard(op[0], exc)
                    await trio.sleep(STEP)
                    self.check(step)
                    a, b = self.sides[0].open_agent, self.sides[1].open_agent
                    self.log.append(
                        f"  {a.connection_state.value}/{b.connection_state.value} "
                        f"conn={self.sides[0].conn is not None}/{self.sides[1].conn is not None}"
                    )
                for scope in self.readers:
                    scope.cancel()  # (the final exchange reads alone)
                if not any(side.left.is_set() for side in self.sides):
                    await self.finish()
                tasks.cancel_scope.cancel()
            for side in self.sides:
                side.leave.set()
        for side in self.sides:
            for stream, seen in side.streams:
                seen.extend(events_so_far(stream))
                check_grammar(seen, f"end agent {side.index}")
                assert seen[-1] == trice.ConnectionStateChanged(trice.ConnectionState.CLOSED)
        assert not self.escaped, self.escaped


def run_ops(ops: list[Op]) -> None:
    """One example, under virtual time; then no descriptor and no ResourceWarning left."""
    log: list[str] = []
    gc.collect()
    before = open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trio.run(Scenario(log).run, ops, clock=trio.testing.MockClock(autojump_threshold=0))
        except BaseException as exc:
            raise AssertionError(f"steps: {log}") from exc
        gc.collect()
    assert open_fds() <= before, (log, open_fds() - before)
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, (log, [str(w.message) for w in leaked])


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(ANY_OP, max_size=MAX_OPS))
def test_random_orders(ops: list[Op]) -> None:
    """Any order of the public calls keeps the invariants (see the module docstring)."""
    run_ops(ops)


@settings(
    max_examples=EXAMPLES_CONNECTED,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(ANY_OP, max_size=MAX_OPS))
def test_random_orders_once_connected(ops: list[Op]) -> None:
    """The same, the operations drawn coming after both agents connected (few draws of
    the other test get that far)."""
    run_ops([*CONNECTED_FIRST, *ops])
