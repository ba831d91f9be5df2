"""Loopback-only agent configurations and signaling helpers for tests."""

from __future__ import annotations

import array
import contextlib
import dataclasses
import functools
import gc
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import trio
import trio.testing

import trice
from trice import stun
from trice._trio import _tcp
from trice._trio._tcp import TcpTransport


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6_loopback()

#: A tracer (coverage.py's, ``nox -s coverage``) runs the tests: each step takes many times
#: longer, and a test that counts the steps a bounded read takes, or bounds a flood in time,
#: measures the tracer.  Those skip then.
TRACED = sys.gettrace() is not None


#: Linux's SO_RCVBUFFORCE (Python's socket module does not name it).
SO_RCVBUFFORCE = 33


def room_for_a_flood(sock: socket.socket, size: int = 1 << 22) -> None:
    """Give ``sock`` a receive buffer of ``size`` bytes, or skip the test: the kernel caps
    what one asks at net.core.rmem_max (208 KiB by default), but root may ask past it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:  # (not root, or not Linux)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
        import pytest  # (here only: the bench scripts import loopback too)

        pytest.skip(
            f"needs a receive buffer of {size >> 20} MiB: root, or net.core.rmem_max raised"
        )


async def server_socket() -> trio.socket.SocketType:
    """A UDP socket on 127.0.0.1, for a server of the test's own (:func:`stun_server`)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    return sock


async def stun_server(
    sock: trio.socket.SocketType,
    mapped: tuple[str, int | None] | None,
    error: int | None = None,
    *,
    seen: list[tuple[tuple[str, int], bytes]] | None = None,
    gate: trio.Event | None = None,
    garble_first: bool = False,
    reason: str = "Nope",
) -> None:
    """A STUN server of the test's own on ``sock``: answers Binding requests with ``mapped``
    (or the real source) as the mapping (a port of ``None``: the source's port, as a 1:1
    NAT maps it), or with the error ``error`` (its reason phrase ``reason``).  Each
    request's source and transaction ID are appended to ``seen``; requests that come before
    ``gate`` is set are not answered; with ``garble_first``, the first answer goes with its
    FINGERPRINT broken, then as it is."""
    while True:
        data, source = await sock.recvfrom(2048)
        request = stun.decode(data)
        if seen is not None:
            seen.append((source[:2], request.transaction_id))
        if gate is not None and not gate.is_set():
            continue
        if error is not None:
            reply = request.error_response(error, reason)
        else:
            address, port = mapped or source[:2]
            port = source[1] if port is None else port
            reply = request.success_response(stun.XorMappedAddress(address, port))
        answer = reply.encode(fingerprint=True)
        if garble_first:
            garble_first = False
            await sock.sendto(answer[:-1] + bytes([answer[-1] ^ 1]), source)
        await sock.sendto(answer, source)


def loopback_config(*, ipv6: bool = False, **kwargs: Any) -> trice.AgentConfig:
    """An agent configuration that gathers only on loopback (never real interfaces)."""
    network = trice.NetworkConfig(
        interface_filter=lambda name: name == "lo",
        ip_filter=lambda address: address.is_loopback,
        include_loopback=True,
        ipv4=not ipv6,
        ipv6=ipv6,
    )
    return trice.AgentConfig(network=network, **kwargs)


def filtered_config(allowed: set[str] | None = None) -> trice.AgentConfig:
    """A loopback config of both families whose IP filter takes the addresses in
    ``allowed`` (as they are when it asks: a "network change" is a change of the set), or
    every loopback address."""
    network = dataclasses.replace(loopback_config().network, ipv6=True)
    if allowed is not None:
        network = dataclasses.replace(network, ip_filter=lambda ip: str(ip) in allowed)
    return dataclasses.replace(loopback_config(), network=network)


def signal(a: trice.Agent, b: trice.Agent, *, end: bool = True) -> None:
    """Hand each agent the other's parameters and candidates, as signaling would."""
    for here, there in ((a, b), (b, a)):
        params = there.local_parameters
        here.set_remote_parameters(params.ufrag, params.pwd, lite=params.lite)
        for candidate in there.local_candidates:
            here.add_remote_candidate(candidate)
        if end:
            here.add_remote_candidate(None)


async def connect_both(
    a: trice.Agent, b: trice.Agent, within: float = 10
) -> tuple[trice.Connection, trice.Connection]:
    """Connect two agents concurrently; fail the test if it takes longer than ``within``."""
    result: dict[str, trice.Connection] = {}

    async def run(name: str, agent: trice.Agent) -> None:
        result[name] = await agent.connect()

    with trio.fail_after(within):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", a)
            nursery.start_soon(run, "b", b)
    return result["a"], result["b"]


async def wait_for_state(stream: trice.EventStream, state: trice.ConnectionState) -> None:
    """Read ``stream`` until the connection state becomes ``state``."""
    async for event in stream:
        if isinstance(event, trice.ConnectionStateChanged) and event.state is state:
            return
    raise AssertionError(f"the agent closed before reaching {state.value}")


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Wait (at most ``within`` seconds) until ``condition()``, looking each time every
    task has been blocked a moment (what an agent does follows what a socket brought)."""
    with trio.fail_after(within):
        while not condition():
            await trio.testing.wait_all_tasks_blocked(0.005)


def hold_readers(monkeypatch: Any) -> set[int]:
    """From now on, a task that waits for a socket whose fileno is in the returned set to be
    readable waits forever: the socket's reader has not had its turn (as after a stall).
    The test adds to the set, and clears it before the sockets close."""
    held: set[int] = set()
    real = trio.lowlevel.wait_readable

    async def wait_readable(sock: Any) -> None:
        if (sock if isinstance(sock, int) else sock.fileno()) in held:
            await trio.sleep_forever()
        await real(sock)

    monkeypatch.setattr(trio.lowlevel, "wait_readable", wait_readable)
    return held


def answer_check(data: bytes, mapped: tuple[str, int], pwd: str = "x" * 22) -> bytes:
    """A scripted peer's success answer to the check ``data``, signed with ``pwd``."""
    request = stun.decode(data)
    return stun.Message(
        stun.Method.BINDING,
        stun.MessageClass.SUCCESS,
        request.transaction_id,
        [stun.XorMappedAddress(*mapped)],
    ).encode(integrity_key=stun.short_term_key(pwd), fingerprint=True)


def peer_check(
    agent: trice.Agent,
    peer_ufrag: str = "abcd",
    *,
    priority: int = 1,
    controlling: bool = False,
    nominate: bool = False,
    username: str | None = None,
    key: bytes | None = b"",
) -> bytes:
    """A scripted peer's connectivity check to ``agent``: by default one it accepts (its
    ufrag before ``peer_ufrag``, signed with its password); ``username`` names another,
    ``key`` signs with another key, ``key=None`` leaves MESSAGE-INTEGRITY and FINGERPRINT
    out."""
    role: stun.Attribute = stun.IceControlling(2) if controlling else stun.IceControlled(1)
    attributes: list[stun.Attribute] = [
        stun.Username(username or f"{agent.local_parameters.ufrag}:{peer_ufrag}"),
        stun.Priority(priority),
        role,
    ]
    if nominate:
        attributes.append(stun.UseCandidate())
    if key == b"":
        key = stun.short_term_key(agent.local_parameters.pwd)
    message = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, attributes=attributes)
    return message.encode(integrity_key=key, fingerprint=key is not None)


class MostPerStep(trio.abc.Instrument):
    """The most datagrams ``transport`` delivered within one task step (``most``), and in
    all (``total``): an instrument, added with ``trio.lowlevel.add_instrument``.  It counts
    by wrapping the transport's handler, ``attribute`` (a UDP mux share's is ``deliver``),
    or, with ``held``, what an ICE-TCP transport hands over or holds (``_hand_over``: its
    connections that no answer proved yet hold their data); each datagram moves ``clock``
    on by ``cost`` seconds, if given (a slow machine, in virtual time)."""

    def __init__(
        self,
        transport: Any,
        *,
        attribute: str = "_deliver",
        held: bool = False,
        clock: trio.testing.MockClock | None = None,
        cost: float = 0.0,
    ) -> None:
        self.count = self.most = self.total = 0
        if held:
            attribute = "_hand_over"
        deliver = getattr(transport, attribute)

        def counted(*args: Any) -> object:
            n = len(args[1]) if held else 1  # (_hand_over's: a list of datagrams)
            self.count += n
            self.total += n
            if clock is not None:
                clock.jump(cost * n)
            return deliver(*args)

        setattr(transport, attribute, counted)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.most = max(self.most, self.count)


def _keep(into: list[bytes], _transport: object, data: bytes, _source: object) -> None:
    into.append(data)


def _no_failure(_transport: TcpTransport, _address: tuple[str, int], _stale: bool) -> None:
    pass


def tcp_transport(
    tcp_type: trice.TcpType,
    *,
    max_links: int = 4,
    counters: _tcp.TcpCounters | None = None,
    delivered: list[bytes] | None = None,
    failed: _tcp.Failed = _no_failure,
    listener: socket.socket | None = None,
) -> TcpTransport:
    """An ICE-TCP candidate's transport of ``tcp_type``, with no agent: at ``listener``'s
    address if given (else at 127.0.0.1:9, never bound); the datagrams it hands over go
    into ``delivered``."""
    return TcpTransport(
        0,
        listener.getsockname() if listener is not None else ("127.0.0.1", 9),
        tcp_type,
        deliver=functools.partial(_keep, [] if delivered is None else delivered),
        failed=failed,
        max_links=max_links,
        counters=_tcp.TcpCounters() if counters is None else counters,
        listener=listener,
    )


@contextlib.contextmanager
def tcp_connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback TCP connection: the far end (the test's peer, blocking) and the near end
    (the candidate's, non-blocking)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        far = socket.create_connection(listener.getsockname())
        near, _ = listener.accept()
    with far, near:
        near.setblocking(False)
        yield far, near


@contextlib.asynccontextmanager
async def adopted_tcp_connection(
    transport: _tcp.TcpTransport,
) -> AsyncIterator[tuple[socket.socket, tuple[str, int]]]:
    """``transport`` running, with a loopback connection (:func:`tcp_connection`) adopted as
    a peer's to its passive candidate: the peer's end (blocking) and its address.  The
    transport closes at the end."""
    with tcp_connection() as (far, near):
        address = far.getsockname()[:2]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run)
            await trio.testing.wait_all_tasks_blocked()
            assert transport.adopt(near, address, b"")
            try:
                yield far, address
            finally:
                transport.close()


def events_so_far(stream: trice.EventStream) -> list[trice.Event]:
    """The events queued on ``stream`` now, without waiting (up to its end, if it ended)."""
    events: list[trice.Event] = []
    while True:
        try:
            events.append(stream.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return events


def states_so_far(stream: trice.EventStream) -> list[trice.ConnectionState]:
    """The connection states queued on ``stream`` now, without waiting."""
    return [e.state for e in events_so_far(stream) if isinstance(e, trice.ConnectionStateChanged)]


@contextlib.contextmanager
def cycle_collector_off() -> Iterator[None]:
    """Python's cycle collector off (after one last collection) for the block: what a
    reference cycle holds stays alive in it, for :func:`agents_alive` to find."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def agents_alive(*ufrags: str) -> list[trice.Agent]:
    """The agents with these ufrags that are still alive: held by someone, or by a reference
    cycle (see :func:`cycle_collector_off`)."""
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, trice.Agent) and o.local_parameters.ufrag in ufrags
    ]


def state_of(agent: trice.Agent) -> trice.ConnectionState:
    """The agent's state now.  (A call: a type checker keeps no narrowing of
    ``agent.connection_state`` across it, as it does across a method call that changes it.)"""
    return agent.connection_state


def open_fds() -> set[str]:
    """The process's open file descriptors (Linux: ``/proc/self/fd``)."""
    return set(os.listdir("/proc/self/fd"))


def walk_tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    """``task`` and every task under it, depth first."""
    out = [task]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            out.extend(walk_tasks(child))
    return out


_M = TypeVar("_M")


@contextlib.asynccontextmanager
async def mux_in_a_task(
    open_mux: Callable[[], AbstractAsyncContextManager[_M]],
) -> AsyncIterator[tuple[_M, trio.CancelScope, trio.Event]]:
    """A mux (``open_mux()``: ``trice.open_udp_mux(...)`` or ``open_tcp_mux(...)``) whose
    block runs in a task of its own: cancelling the scope ends the block while the caller's
    agents are open (the mux closing first); the event is set once it has ended."""
    scope = trio.CancelScope()
    ended = trio.Event()

    async def run(task_status: trio.TaskStatus[_M]) -> None:
        with scope:
            async with open_mux() as mux:
                task_status.started(mux)
                await trio.sleep_forever()
        ended.set()

    async with trio.open_nursery() as nursery:
        mux = await nursery.start(run)
        yield mux, scope, ended
        scope.cancel()


async def exchange_each_way(ca: trice.Connection, cb: trice.Connection, count: int = 100) -> None:
    """``count`` datagrams each way, all of them received (in any order: UDP keeps none),
    within 5 s."""
    for i in range(count):
        await ca.send(b"a%d" % i)
        await cb.send(b"b%d" % i)
    with trio.fail_after(5):
        got_b = {await cb.receive() for _ in range(count)}
        got_a = {await ca.receive() for _ in range(count)}
    assert got_b == {b"a%d" % i for i in range(count)}
    assert got_a == {b"b%d" % i for i in range(count)}


async def send_wide_views(ca: trice.Connection, cb: trice.Connection) -> None:
    """A memoryview of 4-byte items goes whole (its bytes, not as many bytes as it has
    items: the ICE-TCP and TURN framings had written their lengths from ``len()``), by
    ``send`` and by ``send_nowait``, and the datagram after it too; so does a view that is
    not contiguous (``send`` over a host socket had raised BufferError); what is not
    bytes-like is a TypeError, as a UDP socket makes it."""
    view = memoryview(array.array("I", range(100)))
    strided = memoryview(b"abcdef")[::2]  # (not contiguous: a socket takes it not)
    await ca.send(view)
    assert ca.send_nowait(view)
    await ca.send(strided)
    assert ca.send_nowait(strided)
    await ca.send(b"after")
    with trio.fail_after(5):
        got = [await cb.receive() for _ in range(5)]
    assert got == [view.tobytes(), view.tobytes(), b"ace", b"ace", b"after"]
    try:  # (not pytest.raises: the benchmarks import this module, and pytest is big)
        await ca.send([1, 2, 3])  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("a list went as a datagram")


@contextlib.asynccontextmanager
async def gathered_pair(
    config: trice.AgentConfig, b_config: trice.AgentConfig | None = None
) -> AsyncIterator[tuple[trice.Agent, trice.Agent]]:
    """A controlling agent of ``config`` and a controlled one (of ``b_config``, if given),
    both done gathering (within 10 s: a relay allocated, say)."""
    async with (
        trice.open_agent(config, controlling=True) as a,
        trice.open_agent(config if b_config is None else b_config, controlling=False) as b,
    ):
        with trio.fail_after(10):
            await a.wait_gathering_complete()
            await b.wait_gathering_complete()
        yield a, b


@contextlib.contextmanager
def held_in_another_run(enter: Callable[[], AbstractAsyncContextManager[_M]]) -> Iterator[_M]:
    """What ``enter()`` opens (an agent, a mux) in a trio run of its own, in a thread of its
    own, held open until the block ends: for tests of what an object of one run does when
    another thread's run uses it.  The run's errors fail the test at the end."""
    opened: list[_M] = []
    ready, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def hold() -> None:
        async with enter() as thing:
            opened.append(thing)
            ready.set()
            await trio.to_thread.run_sync(done.wait)

    def run() -> None:
        try:
            trio.run(hold)
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert ready.wait(10) and not errors, errors
        yield opened[0]
    finally:
        done.set()
        thread.join(10)
    assert errors == []


def what_each_raises(calls: list[Callable[[], object]]) -> list[BaseException | None]:
    """What each call raises (``None`` for one that returns), in order."""
    raised: list[BaseException | None] = []
    for call in calls:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)
        else:
            raised.append(None)
    return raised


class _Names(trio.abc.HostnameResolver):
    """``host`` stands for ``addresses`` (each a family and a socket address, for UDP and
    TCP), in that order, as a name in DNS with several records; other names are the
    system's."""

    def __init__(self, host: str, addresses: Sequence[tuple[int, tuple[Any, ...]]]) -> None:
        self.host = host.encode()
        self.addresses = addresses

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        if host != self.host:
            name = None if host is None else host.decode()
            return socket.getaddrinfo(name, port, family, type, proto, flags)
        kinds = [type] if type else [socket.SOCK_DGRAM, socket.SOCK_STREAM]
        return [
            (fam, kind, 0, "", sockaddr)
            for kind in kinds
            for fam, sockaddr in self.addresses
            if family in (0, fam)
        ]

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        raise NotImplementedError


@contextlib.contextmanager
def resolving(host: str, addresses: Sequence[tuple[int, tuple[Any, ...]]]) -> Iterator[None]:
    """While the block runs, trio resolves ``host`` to ``addresses`` (see :class:`_Names`):
    a name with several records, with no DNS."""
    trio.socket.set_custom_hostname_resolver(_Names(host, addresses))
    try:
        yield
    finally:
        trio.socket.set_custom_hostname_resolver(None)
