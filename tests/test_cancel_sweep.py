"""Cancelling anywhere: a session of two agents is run once to count its task steps, then
again and again, cancelled from outside before its first step, its second, and so on to
past its last (an instrument cancels the scope around it as the chosen step begins).  After
each run: nothing but the cancellation came out, both agents are closed, every file
descriptor opened is closed again, no task of trice is left (the run's timer task ends
with the last agent), and, through a TURN server, every allocation made was deleted (a
Refresh with a lifetime of 0 seen by coturn, not left to time out).  Loopback only.

The sessions: host candidates over UDP with either nomination, an ICE-lite peer, a restart,
agents on a UDP mux and on a TCP mux, ICE-TCP, and relays over UDP, TCP and TLS (coturn).
Each cancelled run takes a millisecond or so; a sweep of a session is a few hundred.

Then one call cancelled the same way, the agents used on: ``connect()`` (called again, it
connects) and ``receive()`` (a cancelled receive takes no datagram: all arrive), over UDP
and ICE-TCP."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import re
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing

import trice

from coturn import Coturn, require_turnserver, run_coturn
from loopback import (
    connect_both,
    gathered_pair,
    loopback_config,
    open_fds,
    signal,
    walk_tasks,
)

#: A session: it opens its agents (adding each to the list as it opens) and uses them.
Session = Callable[[list[trice.Agent]], Awaitable[None]]

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc/self/fd"
)


class _CancelAtStep(trio.abc.Instrument):
    """Cancels ``scope`` as the ``at``-th task step of the run (from its adding) begins;
    counts the steps (``steps``)."""

    def __init__(self, at: int, scope: trio.CancelScope) -> None:
        self.at = at
        self.scope = scope
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.steps == self.at:
            self.scope.cancel()


async def _run(session: Session, at: int) -> tuple[int, list[trice.Agent], bool]:
    """Run ``session`` once, cancelled at step ``at`` (0: never); returns the steps it
    took, its agents and whether the cancellation was caught."""
    agents: list[trice.Agent] = []
    scope = trio.CancelScope()
    instrument = _CancelAtStep(at, scope)
    trio.lowlevel.add_instrument(instrument)
    try:
        with scope:
            await session(agents)
    finally:
        trio.lowlevel.remove_instrument(instrument)
    return instrument.steps, agents, scope.cancelled_caught


async def _sweep(session: Session, *, most: int = 400) -> int:
    """Run ``session`` cancelled at each step in turn (at most ``most`` runs, spread evenly
    over its steps, and some past its last), checking after each what the module docstring
    says; returns the number of runs cancelled."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    fds = open_fds()
    for _ in range(2):  # (the steps of the second: a process's first run does more)
        steps, agents, _ = await _run(session, 0)
        assert agents and all(a.connection_state is trice.ConnectionState.CLOSED for a in agents)
    await trio.testing.wait_all_tasks_blocked()
    tasks = set(walk_tasks(root))
    assert open_fds() == fds
    stride = max(1, (steps + most - 1) // most)
    cancelled = 0
    within = range(1, steps + 1, stride)
    for at in range(1, steps + 10, stride):
        _, agents, caught = await _run(session, at)
        cancelled += caught
        await trio.testing.wait_all_tasks_blocked()
        states = [agent.connection_state for agent in agents]
        assert all(state is trice.ConnectionState.CLOSED for state in states), (at, states)
        assert open_fds() == fds, f"cancelled at step {at}: {open_fds() - fds} left open"
        left = [task.name for task in walk_tasks(root) if task not in tasks]
        assert not left, f"cancelled at step {at}: {left} left running"
    gc.collect()  # (an unclosed socket's ResourceWarning fails the test: filterwarnings)
    # Most runs were cancelled (a run's steps vary a little with the kernel's timing).
    assert cancelled >= len(within) * 0.8, (cancelled, len(within))
    return cancelled


async def _exchange(ca: trice.Connection, cb: trice.Connection) -> None:
    for i in range(3):
        await ca.send(b"a%d" % i)
        assert await cb.receive() == b"a%d" % i
        await cb.send(b"b%d" % i)
        assert await ca.receive() == b"b%d" % i


def _pair_session(
    config: trice.AgentConfig,
    peer: trice.AgentConfig | None = None,
    *,
    restart: bool = False,
    a_mux: trice.UdpMux | trice.TcpMux | None = None,
    b_mux: trice.UdpMux | trice.TcpMux | None = None,
) -> Session:
    """Two agents (``a`` controlling) gather, signal, connect and exchange datagrams, ``a``
    reading its events meanwhile; with ``restart``, both restart and connect again."""

    async def session(agents: list[trice.Agent]) -> None:
        async with (
            trice.open_agent(config, controlling=True, mux=a_mux) as a,
            trice.open_agent(peer or config, controlling=False, mux=b_mux) as b,
        ):
            agents.extend((a, b))
            async with a.subscribe() as events, trio.open_nursery() as nursery:

                async def read() -> None:
                    async for _ in events:
                        pass

                nursery.start_soon(read)
                await a.wait_gathering_complete()
                await b.wait_gathering_complete()
                signal(a, b)
                ca, cb = await connect_both(a, b)
                await _exchange(ca, cb)
                if restart:
                    a.restart()
                    b.restart()
                    signal(a, b)
                    await connect_both(a, b)
                    await _exchange(ca, cb)
                await ca.aclose()
                nursery.cancel_scope.cancel()

    return session


def _tcp(config: trice.AgentConfig, *types: trice.TcpType) -> trice.AgentConfig:
    network = dataclasses.replace(config.network, tcp_candidates=types, udp=False)
    return dataclasses.replace(config, network=network)


@pytest.mark.parametrize(
    "kind",
    ["regular", "aggressive", "lite-peer", "restart", "ice-tcp"],
)
async def test_a_session_cancelled_at_any_step_leaves_nothing(kind: str) -> None:
    config = loopback_config()
    peer = None
    if kind == "aggressive":
        config = loopback_config(nomination=trice.Nomination.AGGRESSIVE)
    elif kind == "lite-peer":
        peer = loopback_config(lite=True)
    elif kind == "ice-tcp":
        config = _tcp(config, trice.TcpType.ACTIVE, trice.TcpType.PASSIVE)
    session = _pair_session(config, peer, restart=kind == "restart")
    assert await _sweep(session) > 0


@pytest.mark.parametrize("kind", ["udp-mux", "tcp-mux"])
async def test_a_session_on_a_mux_cancelled_at_any_step_leaves_nothing(kind: str) -> None:
    """An agent on a mux (which lives on: its agents are counted out)."""
    async with contextlib.AsyncExitStack() as stack:
        mux: trice.UdpMux | trice.TcpMux
        if kind == "udp-mux":
            mux = await stack.enter_async_context(trice.open_udp_mux("127.0.0.1"))
            session = _pair_session(loopback_config(), a_mux=mux)
        else:
            mux = await stack.enter_async_context(trice.open_tcp_mux("127.0.0.1"))
            passive = _tcp(loopback_config(), trice.TcpType.PASSIVE)
            active = _tcp(loopback_config(), trice.TcpType.ACTIVE)
            session = _pair_session(passive, active, a_mux=mux)
        assert await _sweep(session) > 0
        assert mux.statistics().agents == 0


@pytest.fixture(scope="module")
def verbose_coturn() -> Iterator[Coturn]:
    """coturn, saying in its log each allocation made and each Refresh (its lifetime)."""
    require_turnserver()
    # (2000 relay ports: coturn frees a deleted allocation's port at its next second.)
    with run_coturn(tls=True, extra=("--verbose",), relay_ports=2000) as server:
        yield server


def _allocations(log: str) -> tuple[set[str], set[str]]:
    """The sessions that coturn's log says were allocated, and those deleted (a Refresh
    with a lifetime of 0)."""
    made = set(re.findall(r"session (\d+): new, ", log))
    deleted = set(re.findall(r"session (\d+): refreshed, .*lifetime=0\b", log))
    return made, deleted


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_a_relay_session_cancelled_at_any_step_leaves_no_allocation(
    verbose_coturn: Coturn, transport: str
) -> None:
    config = loopback_config(
        ice_servers=[verbose_coturn.ice_server(transport)],
        transport_policy=trice.TransportPolicy.RELAY,
    )
    made_before, _ = _allocations(verbose_coturn.log_text())
    assert await _sweep(_pair_session(config), most=150) > 0
    # (coturn logs a Refresh as it answers it, and leaving waits for the answers.)
    made, deleted = _allocations(verbose_coturn.log_text())
    assert len(made - made_before) >= 2
    assert made - deleted == set(), verbose_coturn.log_text()[-3000:]


# -- one call cancelled, the agents used on ----------------------------------------------


async def _cancel_one_call(config: trice.AgentConfig, at: int, call: str) -> tuple[int, bool]:
    """Two agents gathered and signalled; ``call`` ("connect": both agents' ``connect()``;
    "receive": a receive loop while 20 datagrams come, five at a time) cancelled at step
    ``at``; then the same call again, uncancelled, must finish what the first began:
    connect, and every datagram received once (a cancelled receive takes none).  Returns
    the steps the cancellable part took and whether it was cancelled."""
    async with gathered_pair(config) as (a, b):
        signal(a, b)
        scope = trio.CancelScope()
        instrument = _CancelAtStep(at, scope)
        if call == "connect":
            trio.lowlevel.add_instrument(instrument)
            try:
                with scope:
                    await connect_both(a, b)
            finally:
                trio.lowlevel.remove_instrument(instrument)
            ca, cb = await connect_both(a, b)
            await _exchange(ca, cb)
            return instrument.steps, scope.cancelled_caught
        ca, cb = await connect_both(a, b)
        sent = [b"%d" % i for i in range(20)]
        got: list[bytes] = []

        async def send() -> None:  # (in fives: a receive finds some queued, some not)
            for i, datagram in enumerate(sent):
                ca.send_nowait(datagram)
                if i % 5 == 4:
                    await trio.lowlevel.checkpoint()

        trio.lowlevel.add_instrument(instrument)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                with scope:
                    while len(got) < len(sent):
                        got.append(await cb.receive())
        finally:
            trio.lowlevel.remove_instrument(instrument)
        with trio.fail_after(5):
            while len(got) < len(sent):
                got.append(await cb.receive())
        assert sorted(got, key=int) == sent, f"cancelled at step {at}"
        return instrument.steps, scope.cancelled_caught


@pytest.mark.parametrize("call", ["connect", "receive"])
@pytest.mark.parametrize("transport", ["udp", "ice-tcp"])
async def test_a_call_cancelled_at_any_step_is_taken_up_again(call: str, transport: str) -> None:
    config = loopback_config()
    if transport == "ice-tcp":
        config = _tcp(config, trice.TcpType.ACTIVE, trice.TcpType.PASSIVE)
    for _ in range(2):  # (the steps of the second, as in _sweep)
        steps, _ = await _cancel_one_call(config, 0, call)
    cancelled = 0
    for at in range(1, steps + 3):
        cancelled += (await _cancel_one_call(config, at, call))[1]
    # (Not at every step: a connect over loopback may be done a few steps before its
    # tasks are, and a cancellation past its last checkpoint is not caught.  A UDP
    # connect is done within its first few: 3-5 of 9-11 steps were caught, 3 of 11 in
    # one run of five under load, which a third of the steps failed: CI at ab9fa01.)
    floor = 2 if (transport, call) == ("udp", "connect") else steps * 0.3
    assert cancelled >= floor, (cancelled, steps)
