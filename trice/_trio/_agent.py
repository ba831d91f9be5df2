"""The ICE agent in trio: ``open_agent`` and ``Agent``.

The task tree is the protocol's structure.  ``open_agent`` owns one nursery, in the caller's
task, and every task of the agent is a child of it::

    trice agent <ufrag>            (the agent's task: host gathering, the core's time, and
                                    the reader of the first host socket)
    gather                         (only with STUN/TURN servers: one task per source)
    ├── gather srflx stun:... from 192.0.2.1
    └── gather relay turn:...
    relay turn:...                 (a TURN allocation, alive until the agent closes)
    receive 127.0.0.1:5000         (a reader for each further local socket)
    check 127.0.0.1:5000 -> 127.0.0.1:6000
    ...

Every decision (which pair to check, what a response means, which state comes next) is
made by :class:`trice.ice._core.AgentCore`; this module moves bytes and keeps time.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import heapq
import ipaddress
import itertools
import logging
import math
import secrets
import socket
import sys
import weakref
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from trice import stun
from trice._config import AgentConfig, MdnsMode, NetworkConfig, Nomination, check_credentials
from trice._errors import (
    ConfigError,
    IceFailedError,
    LimitError,
    StateError,
    UsageError,
    a_type,
    printable,
)
from trice._servers import ServerUrl, TransportPolicy, host_port
from trice._trio._checks import CheckRun, check_name
from trice._trio._connection import _OPENING as _CONNECTING
from trice._trio._connection import LOST_REASONS, Connection, Lost, ReceiveBuffer
from trice._trio._exits import exit_nursery, open_block_nursery, raise_alone, require_trio
from trice._trio._gather import (
    GatherReport,
    MdnsLinks,
    finish_gathering,
    gather_anew,
    gather_local,
    gather_servers,
    has_server_sources,
    read_surroundings,
)
from trice._trio._log import TRACE, logger
from trice._trio._mdns import Mdns, open_mdns
from trice._trio._mux import MuxHooks, MuxTransport, UdpMux
from trice._trio._relay import RelayTransport
from trice._trio._streams import EventStream
from trice._trio._tcp import TcpCounters, TcpTransport
from trice._trio._tcpmux import TcpMux
from trice._trio._timers import TimerCell, timer_hub
from trice._trio._transport import (
    MAX_STUN,
    READ_BATCH,
    STUN_MAGIC,
    Transport,
    UdpTransport,
    kernel_drops_known,
    paired_sockets,
)
from trice.ice._candidate import Candidate, CandidateType, TcpType
from trice.ice._checklist import Pair, PairStatistics
from trice.ice._core import NO_PAIR_WORKS, AgentCore, IceParameters, unreachable, warm_core
from trice.ice._events import (
    CandidateGathered,
    CandidatePair,
    ConnectionState,
    ConnectionStateChanged,
    Event,
    GatheringState,
    GatheringStateChanged,
    SelectedPairChanged,
)
from trice.ice._gathering import host_candidate, unique_priority
from trice.mdns import is_mdns_name
from trice.turn import TurnStatistics

__all__ = ["Agent", "AgentContext", "AgentStatistics", "GatherReport", "open_agent", "warm_up"]

Address = tuple[str, int]
_ICE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
#: Byte value -> an ice-char, by its low 6 bits (``bytes.translate`` maps a whole string at once).
_TO_ICE_CHARS = bytes(ord(_ICE_CHARS[b & 63]) for b in range(256))


def _random_ice_string(length: int) -> str:
    """``length`` random ice-chars (RFC 8445 §5.3): 6 random bits each, from the OS."""
    return secrets.token_bytes(length).translate(_TO_ICE_CHARS).decode("ascii")


_DISCONNECTED = ConnectionState.DISCONNECTED
_SUCCESS = stun.message_type(stun.Method.BINDING, stun.MessageClass.SUCCESS)

#: Tie-breaker of the agents' timer heaps (equal due times never compare the runs).
_SEQUENCE = itertools.count()

#: Whether this process has run :func:`~trice.ice._core.warm_core`.
_warm = False


@dataclass(frozen=True, slots=True)
class AgentStatistics:
    """Counters of one agent (a snapshot; see :meth:`Agent.statistics`).

    Attributes:
        datagrams_received: data datagrams delivered to the receive buffer.
        bytes_received: the bytes of those datagrams (Pion's ``Conn.BytesReceived``).
        datagrams_sent: data datagrams the connection sent (that the socket, TCP
            connection or TURN client took: a relay's client may still drop one, counted in
            its own statistics, :meth:`Agent.relay_statistics`, as a network may; a TCP
            connection, counted in ``tcp_unsent``; a UDP mux withholds data to an address
            another agent on it proved, counted in its ``MuxStatistics.withheld``).
        bytes_sent: the bytes of those datagrams (Pion's ``Conn.BytesSent``).
        datagrams_dropped: data datagrams dropped because the receive buffer was full, or
            because ICE had failed (no data is taken then, until an ICE restart; a UDP mux
            routes the peer's address to a failed agent no more, and counts it there).
        unknown_source_dropped: data datagrams from addresses that are no remote candidate;
            and over a TCP connection a peer opened, data held for an answer to a check of
            the agent's over it that never came, or past what is held (256 KiB, see the
            ICE-TCP guide).
        malformed_dropped: packets that looked like STUN but did not decode, or were longer
            than 2048 bytes (no check is: a longer message is not read, even a signed one).
        stun_received: STUN messages received, of every method and class (other than a
            Binding request or response, ICE reads none: a Binding indication is a
            keepalive; the rest are dropped).
        checks_sent: connectivity checks started (each may be sent several times).
        requests_received: Binding requests received.
        requests_rejected: requests refused with an error (400, 401, 420, 487); over a
            relay, one from an unknown peer is not answered at all, nor is one from port 0
            (no answer can go there).
        prflx_dropped: checks answered whose source was not learned as a peer-reflexive
            candidate: past the cap, or an address that no candidate can stand for as it is
            written (each check counts: a peer that sends its check again counts again); and
            peer-reflexive candidates that checks before the peer's parameters taught, and
            whose checks named another ufrag than the parameters' (one each).
        remote_candidates_dropped: signalled candidates left out: another ICE generation's
            (those held for the peer's parameters, or being resolved, at a restart too), a
            ``.local`` name that multicast DNS did not resolve (or, relay-only, does not
            resolve), another name, an address no check may go to (multicast, broadcast,
            port 0...), or a component other than 1 (see
            :meth:`Agent.add_remote_candidate`).
        pairs: candidate pairs in the check list.
        pairs_pruned: pairs dropped by the pair cap.
        tcp_accepted: TCP connections peers opened to the passive ICE-TCP candidates
            (``NetworkConfig.tcp_candidates``).
        tcp_refused: such connections closed at the cap (``max_pairs`` a candidate): the
            oldest one not yet proven, for a newer one, or the newer one when all are proven;
            and one from an address that has one open, or that could not be set up.
        tcp_unproven: such connections closed because no check the agent accepted came over
            them within 10 seconds (one answered past the remote-candidate cap, the peer's
            address not learned, proves nothing: see the ICE-TCP guide).
        tcp_unsent: data datagrams that an ICE-TCP connection (of either kind) had queued
            to write, counted in ``datagrams_sent``, and dropped unsent: when ICE failed
            (consent expired: no data may go, RFC 7675), or the connection ended (the rest
            of a datagram begun counts too).
        send_refused: datagrams (data or checks) that a host socket's kernel refused to send:
            a firewall's EPERM, an unreachable network, an address gone.  They are dropped
            on the way, as a network may drop them: data among them is in
            ``datagrams_sent`` too, and ``Connection.send_nowait`` said ``True``.  The first
            refusal is logged as a warning.
        role_switches: times the agent took the other role (:attr:`Agent.controlling`):
            facing an ICE-lite peer, or to resolve a role conflict with a peer that claimed
            the same role (RFC 8445 §7.3.1.1, by the tie-breakers).  The first is logged at
            INFO, the others at DEBUG.
        kernel_dropped: datagrams (data or STUN) that the kernel dropped on the agent's own
            UDP sockets before the agent read them: a socket's receive buffer was full, the
            application and the agent's reader having fallen behind a burst (raise
            ``net.core.rmem_default`` for more room).  Not in ``datagrams_dropped``, which
            counts the agent's own buffer.  From Linux's ``SO_MEMINFO``; ``None`` on other
            systems, and once a Linux kernel has refused the option (before 4.6, or an
            emulation of Linux).  A UDP mux's socket is the mux's, and a TURN client's
            socket to its server the relay's: neither is counted here.
    """

    datagrams_received: int
    bytes_received: int
    datagrams_sent: int
    bytes_sent: int
    datagrams_dropped: int
    unknown_source_dropped: int
    malformed_dropped: int
    stun_received: int
    checks_sent: int
    requests_received: int
    requests_rejected: int
    prflx_dropped: int
    remote_candidates_dropped: int
    pairs: int
    pairs_pruned: int
    tcp_accepted: int = 0
    tcp_refused: int = 0
    tcp_unproven: int = 0
    tcp_unsent: int = 0
    send_refused: int = 0
    role_switches: int = 0
    kernel_dropped: int | None = None


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    """One of an agent's TURN allocations, and its client's counters (a snapshot; see
    :meth:`Agent.relay_statistics`).

    Attributes:
        server: the TURN server's URL.
        address: the relayed transport address, ``(host, port)``: the relay candidate's.
        counters: the TURN client's counters; among them ``dropped``, the data it refused.
    """

    server: ServerUrl
    address: tuple[str, int]
    counters: TurnStatistics


#: What :class:`AgentContext` hands :class:`Agent`'s constructor: an agent built
#: elsewhere would have no nursery, and its ``connect()`` would wait for ever.
_OPENING = object()


class Agent:
    """An ICE agent (RFC 8445).  Made by :func:`open_agent`; not built directly (that
    raises :class:`~trice.UsageError`)."""

    __slots__ = (
        "__weakref__",  # (an application's WeakSet or weakref.finalize of its agents)
        "_ahead",
        "_armed_at",
        "_bases_made",
        "_buffer",
        "_bytes_received",
        "_change_waiter",
        "_changed",
        "_closed",
        "_config",
        "_connect_blocked",
        "_connect_sock",
        "_connection",
        "_context",
        "_core",
        "_data_seen",
        "_datagrams",
        "_elsewhere",
        "_elsewhere_seen",
        "_failure",
        "_gathering",
        "_hub",
        "_kernel_gone",
        "_key",
        "_lite_at",
        "_lite_data",
        "_lite_source",
        "_local",
        "_malformed",
        "_mapped",
        "_mdns",
        "_mdns_quiet",
        "_mux_kept",
        "_muxes",
        "_now",
        "_nursery",
        "_parked",
        "_pending",
        "_previous_lost",
        "_primary",
        "_ranked",
        "_relays_at_close",
        "_reports",
        "_restarted",
        "_restarted_event",
        "_role_switches",
        "_route_pair",
        "_runs",
        "_selected_lost",
        "_send_refused",
        "_sent_total",
        "_signalled",
        "_sleeping_until",
        "_srflx_kept",
        "_stun_received",
        "_subscribers",
        "_tcp_counters",
        "_tcp_shares",
        "_timer_cell",
        "_timers",
        "_token",
        "_transports",
        "_unknown_source",
        "_warned",
    )

    _nursery: trio.Nursery  # open_agent's, where every task of the agent runs

    def __init__(self, config: AgentConfig, controlling: bool, *, _key: object = None) -> None:
        if _key is not _OPENING:
            # (Built directly, it had no nursery and ran no task: wait_gathering_complete()
            # and connect() waited for ever, the typing50 review.)
            raise UsageError("a trice.Agent is made by trice.open_agent(...), not built directly")
        self._config = config
        self._local = IceParameters(
            ufrag=config.ufrag or _random_ice_string(8),
            pwd=config.pwd or _random_ice_string(24),
            lite=config.lite,
        )
        self._core = AgentCore(
            local=self._local,
            controlling=controlling,
            tiebreaker=secrets.randbits(64),
            timing=config.timing,
            nomination=config.nomination,
            max_pairs=config.max_pairs,
            max_remote_candidates=config.max_remote_candidates,
            nohost=config.transport_policy is TransportPolicy.NOHOST,
        )
        self._transports: dict[int, Transport] = {}
        self._relays_at_close: tuple[RelayStatistics, ...] | None = None
        self._role_switches = 0  # (the core's count, as last logged: see _pump)
        # (Each as its event said it, with its transport's base: a transport that ends
        # takes its candidates away.)
        self._signalled: list[tuple[CandidateGathered, int]] = []
        self._gathering = GatheringState.NEW
        # Made by the first subscribe; weak, so that a stream its subscriber dropped without
        # closing it (an ``async for`` left by a ``break``) is unsubscribed when collected.
        self._subscribers: weakref.WeakSet[EventStream] | None = None
        self._changed: trio.Event | None = None  # made when someone waits for a change
        # The first task waiting for a change, parked by itself (see _abort_change).
        self._change_waiter: trio.lowlevel.Task | None = None
        self._hub = timer_hub()
        self._token = trio.lowlevel.current_trio_token()  # (the run it belongs to)
        # The run's clock, read without trio.current_time()'s two calls on the way (the
        # same clock: a run has one).
        self._now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        # _peer_elsewhere's answer, and the hub's roster version it was found at.
        self._elsewhere = True
        self._elsewhere_seen = -1
        self._armed_at = -math.inf  # the timer's own bookkeeping (see TimerHub.arm)
        self._timer_cell = TimerCell()  # (holds the agent while it is open: see __aenter__)
        # The agent task while it is parked (a receiver holds its socket): the run's timer
        # reschedules it; while it waits on the socket, the timer kicks the socket instead.
        self._parked: trio.lowlevel.Task | None = None
        # The socket a connect() call reads itself, and whether it waits on it now (see
        # _read_until_change).
        self._connect_sock: socket.socket | None = None
        self._connect_blocked = False
        # Gathering transactions in flight: the response's handler, by transaction id (made
        # on need: only server gathering sends them).
        self._pending: dict[bytes, Callable[[stun.Message, Address], None]] | None = None
        # The (socket, STUN server) bindings kept alive by a task (see _keep_srflx_alive).
        self._srflx_kept: set[tuple[int, Address]] | None = None
        # Set at the next ICE restart (made on need: see _keep_srflx_alive).
        self._restarted_event: trio.Event | None = None
        # Checks in flight, by transaction id (emptied in place, its table given back,
        # once its last check ends: see CheckRun.run).
        self._runs: dict[bytes, CheckRun] = {}
        self._sleeping_until = -math.inf  # the agent task's planned wake-up time
        # The socket the agent task reads itself (see _run).
        self._primary: UdpTransport | None = None
        # When parked check tasks want waking: a heap of (due, sequence, run), fired by the
        # agent task; entries whose run has moved on are skipped.
        self._timers: list[tuple[float, int, CheckRun]] = []
        self._buffer = ReceiveBuffer(config.receive_buffer)
        self._connection: Connection | None = None
        # The core's pair that the connection's route was looked up for (see _data_route).
        self._route_pair: Pair | None = None
        self._mux_kept = False  # (an address kept on a UDP mux over an ICE restart)
        self._closed = False
        # An error raised while the run's timer task read the first socket for this agent
        # (see _readable): the agent's task raises it.
        self._failure: BaseException | None = None
        # The data count after the run's timer task last read data for this agent, and when.
        self._data_seen: tuple[int, float] = (-1, -math.inf)
        # The agent task's context, in which the run's timer task reads for it (the check
        # tasks that reading starts copy it, as they would from the agent task).
        self._context: contextvars.Context | None = None
        # Whether ICE failed because the selected pair's relay ended (see _transport_lost).
        self._selected_lost: Lost | None = None  # (what failed ICE under the selected pair)
        self._previous_lost: Lost | None = None  # (under the pair of before an ICE restart)
        # An ICE-lite agent's: the selected pair's remote address, and the data from there,
        # counted (its consent: see AgentCore.on_data).  ``None`` for a full agent.
        self._lite_source: Address | None = None
        self._lite_data = 0
        self._lite_at = -math.inf  # (when the last of that data came)
        self._tcp_counters: TcpCounters | None = None  # (made with the first TCP candidate)
        # The addresses host gathering found, as (interface, address, interface,
        # address...), in the order first ranked: an interface's place among the
        # interfaces, and an address's among its interface's, are their ranks in host
        # candidates' priorities, kept across gatherings anew (see _gather._rank).
        self._ranked: tuple[str, ...] = ()
        self._restarted = False  # (see add_remote_candidate's log line)
        self._warned = 0  # (the reasons a left-out candidate was warned of: see _left_out)
        self._send_refused = 0  # (datagrams the kernel refused: see _kernel_refused)
        self._kernel_gone = 0  # (the kernel's drops on sockets closed: see _kernel_dropped)
        # The secret its candidates' foundations are keyed with: of this agent alone, so
        # that a peer cannot tell two sessions are of one host (see compute_foundation).
        self._key = secrets.token_bytes(16)
        self._unknown_source = 0
        self._malformed = 0
        self._stun_received = 0
        self._datagrams = 0
        self._bytes_received = 0
        self._sent_total = (0, 0)  # (datagrams and bytes the connection sent, once closed)
        self._reports: tuple[GatherReport, ...] = ()
        self._bases_made = 0
        self._mapped: set[tuple[int, Address]] | None = None  # srflx found (made on need)
        # Multicast DNS (see _mdns.py): None until needed, False if it could not start
        # (tried again after a gathering anew, quietly: it warned once).
        self._mdns: Mdns | Literal[False] | None = None
        self._mdns_quiet = False
        self._ahead: dict[str, trio.CancelScope] | None = None  # (names asked: _ask_ahead)
        # The agent's shares of UDP muxes (open_agent's mux=), in place of host sockets.
        self._muxes: tuple[MuxTransport, ...] = ()
        # Its passive TCP candidates' transports on TCP muxes, with their muxes.
        self._tcp_shares: tuple[tuple[TcpMux, TcpTransport], ...] = ()

    # ------------------------------------------------------------------ public face

    @property
    def local_parameters(self) -> IceParameters:
        """This agent's ICE parameters (``.ufrag``, ``.pwd`` and ``.lite``)."""
        return self._local

    @property
    def local_candidates(self) -> tuple[Candidate, ...]:
        """The local candidates gathered so far, as signalled to the peer, but those of a
        TURN relay or UDP mux that has ended since."""
        return tuple(gathered.candidate for gathered, _base in self._signalled)

    @property
    def remote_parameters(self) -> IceParameters | None:
        """The peer's ICE parameters as :meth:`set_remote_parameters` last gave them, or
        ``None`` before (and after an ICE restart, until the peer's new ones are given)."""
        return self._core.remote

    @property
    def remote_candidates(self) -> tuple[Candidate, ...]:
        """The peer's candidates known now, in the order learned.  Those signalled (with
        ``.local`` names resolved) and the peer-reflexive ones learned from its checks and
        answers (as Pion's ``GetRemoteCandidatesStats`` lists them).  After an ICE restart,
        the new generation's only."""
        return tuple(self._core.remote_candidates)

    @property
    def gathering_state(self) -> GatheringState:
        """Where gathering stands now."""
        return self._gathering

    @property
    def connection_state(self) -> ConnectionState:
        """The connection state now."""
        return self._core.state

    @property
    def controlling(self) -> bool:
        """Whether this agent is controlling now (a role conflict may change it)."""
        return self._core.controlling

    @property
    def selected_pair(self) -> CandidatePair | None:
        """The pair data goes over, or ``None`` before one is selected.

        During an ICE restart (:meth:`restart`) it is the pair selected before, until the
        new checks select one.  Once no pair carries data (ICE failed; or a restart came
        after that, or outlived the old pair's consent) it is the last pair selected."""
        return self._core.selected_pair()

    @property
    def gather_reports(self) -> tuple[GatherReport, ...]:
        """One :class:`GatherReport` per gather source of the latest gathering, each as its
        source finishes (while a gathering runs, those done so far; a gathering anew,
        ``restart(regather=True)``, starts them afresh)."""
        return self._reports

    @property
    def config(self) -> AgentConfig:
        """The :class:`~trice.AgentConfig` the agent was opened with (read-only: the agent
        goes by it while it lives)."""
        return self._config

    def statistics(self) -> AgentStatistics:
        """A snapshot of this agent's counters."""
        core = self._core
        tcp = self._tcp_counters or TcpCounters()
        connection = self._connection
        sent = (
            self._sent_total
            if connection is None
            else (connection._datagrams_sent, connection._bytes_sent)
        )
        return AgentStatistics(
            datagrams_received=self._datagrams,
            bytes_received=self._bytes_received,
            datagrams_sent=sent[0],
            bytes_sent=sent[1],
            datagrams_dropped=self._buffer.dropped,
            unknown_source_dropped=self._unknown_source + tcp.unanswered,
            malformed_dropped=self._malformed,
            stun_received=self._stun_received,
            checks_sent=core.checks_sent,
            requests_received=core.requests_received,
            requests_rejected=core.requests_rejected,
            prflx_dropped=core.prflx_dropped,
            remote_candidates_dropped=core.remote_candidates_dropped,
            pairs=len(core.checklist),
            pairs_pruned=core.checklist.pruned,
            tcp_accepted=tcp.accepted,
            tcp_refused=tcp.refused,
            tcp_unproven=tcp.unproven,
            tcp_unsent=tcp.unsent,
            send_refused=self._send_refused,
            role_switches=core.role_switches,
            kernel_dropped=self._kernel_dropped(),
        )

    def _kernel_dropped(self) -> int | None:
        """The datagrams the kernel dropped for the agent's own UDP sockets, open and
        closed, or ``None`` where the system does not say (see
        :attr:`AgentStatistics.kernel_dropped`)."""
        total = self._kernel_gone
        for transport in self._transports.values():
            if type(transport) is UdpTransport:
                total += transport.kernel_dropped() or 0
        return total if kernel_drops_known() else None

    def _forget_socket(self, transport: UdpTransport) -> None:
        """A closed host socket leaves the agent: its kernel's drop count stays counted."""
        self._kernel_gone += transport.kernel_dropped() or 0

    def relay_statistics(self) -> tuple[RelayStatistics, ...]:
        """A snapshot of each of the agent's TURN allocations (its relay candidates') and its
        client's counters, oldest first (still readable once the agent closed).  A server
        may have two at a time: during a gathering anew, the one that carries the data and
        the one that replaces it.  One that has ended is gone from it, with its counters:
        on its own (the server refused to refresh it, its connection was lost), or let go
        by the agent, a gathering anew (:meth:`restart` with ``regather``) having replaced
        it; read them before, where they matter.

        Data sent over a relayed pair that the TURN client refused (no permission for the
        peer, a full queue) is counted there, in ``counters.dropped``:
        :meth:`Connection.send_nowait` said ``True`` for it, and
        :attr:`AgentStatistics.datagrams_sent` counted it, as for a datagram a network
        loses::

            for relay in agent.relay_statistics():
                print(relay.server, relay.address, "dropped:", relay.counters.dropped)
        """
        if self._relays_at_close is not None:
            return self._relays_at_close
        return tuple(
            RelayStatistics(t.server, t.local_address, t.statistics())
            for t in self._transports.values()
            if isinstance(t, RelayTransport)
        )

    def pair_statistics(self) -> tuple[PairStatistics, ...]:
        """A snapshot of each candidate pair's counters and round-trip times, highest
        priority first (still readable once the agent closed).

        The selected pair's entry says ``selected=True``; its ``round_trip_time`` is the
        path's latest round trip, which a full agent's consent checks measure every few
        seconds (:attr:`Timing.keepalive_interval <trice.Timing.keepalive_interval>`) at no
        cost to the data (an ICE-lite agent sends no checks, and measures none)::

            for stats in agent.pair_statistics():
                if stats.selected:
                    print("round trip:", stats.round_trip_time)
        """
        return self._core.pair_statistics()

    async def wait_gathering_complete(self) -> None:
        """Wait until gathering is complete.

        Raises:
            trio.ClosedResourceError: the agent closed before gathering completed.
            StateError: a task of another trio run than the agent's waits, the agent open.
        """
        self._in_own_run("wait_gathering_complete")
        waited = False
        while self._gathering is not GatheringState.COMPLETE:
            self._raise_if_closed()
            await self._wait_for_change()
            waited = True
        if not waited:  # the wait is a checkpoint; without it, take one
            await trio.lowlevel.checkpoint()

    def subscribe(self, max_buffer: int = 1024) -> EventStream:
        """A new channel of this agent's events.

        Use it as ``async with agent.subscribe() as events: async for event in events``.
        The stream starts with the agent's state so far, as events (the gathering state and
        each candidate gathered, the selected pair, the connection state), then carries every
        change: subscribing late never misses what already happened.  Each subscriber has
        its own buffer of ``max_buffer`` events; a subscriber that falls further behind loses
        events and is told so by an :class:`~trice.EventsLost` event.  The agent never waits
        for a subscriber.

        Raises:
            ConfigError: ``max_buffer`` is not an integer of at least 1 (a ValueError too).
            StateError: the call came from outside the trio run that opened the agent,
                which is open.
        """
        self._in_own_run("subscribe")
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise ConfigError(f"max_buffer must be an integer >= 1, not {max_buffer!r}")
        subscribers = self._subscribers
        if subscribers is None:
            subscribers = self._subscribers = weakref.WeakSet()
        stream = EventStream(max_buffer, subscribers.discard)
        if self._gathering is not GatheringState.NEW:
            stream._put(GatheringStateChanged(GatheringState.GATHERING))
        for gathered, _base in self._signalled:
            stream._put(gathered)
        if self._gathering is GatheringState.COMPLETE:
            stream._put(GatheringStateChanged(GatheringState.COMPLETE))
        pair = self._core.selected_pair()
        if pair is not None:
            stream._put(SelectedPairChanged(pair))
        if self._core.state is not ConnectionState.NEW:
            stream._put(ConnectionStateChanged(self._core.state))
        subscribers.add(stream)
        if self._closed:
            stream._end()
        return stream

    def set_remote_parameters(self, ufrag: str, pwd: str, lite: bool = False) -> None:
        """Give the peer's ICE parameters (from signaling).

        Raises:
            ConfigError: the ufrag or pwd is not a string of 1 to 256 characters that UTF-8
                can carry, the pwd cannot make a STUN key (control characters, say),
                ``lite`` is not a bool, or both this agent and the peer are ICE-lite (two
                lite agents cannot connect); nothing is set then.
            StateError: different parameters were already set, or the agent is closed, or
                the call came from outside the trio run that opened the agent (another
                thread: use ``trio.from_thread.run_sync``); nothing is set then.
        """
        self._in_own_run("set_remote_parameters")
        self._raise_if_closed(StateError)
        now = self._now()
        core = self._core
        dropped = core.remote_candidates_dropped
        core.set_remote(IceParameters(ufrag=ufrag, pwd=pwd, lite=lite), now)
        for share in self._muxes:
            # (What checks naming another ufrag taught went: see AgentCore.set_remote.  The
            # muxes let go of their addresses, which those checks' answers claimed.)
            share.let_go_but(core.remote_addresses)
        names = core.take_names()  # (.local ones held for these parameters)
        if core.remote_candidates_dropped != dropped:
            logger.debug(
                "%s: %d remote candidates that waited for these parameters left out (another "
                "ICE generation's)",
                self._local.ufrag,
                core.remote_candidates_dropped - dropped,
            )
        ahead = self._ahead
        if ahead:  # (names asked for ahead that these parameters did not take)
            taken = {name.address for name in names}
            for name, scope in ahead.items():
                if name not in taken:
                    scope.cancel()
        if names:
            self._resolve_taken(names)
        self._pump(now)

    def _resolve_taken(self, names: list[Candidate]) -> None:
        """Resolve the ``.local`` candidates that the core held as they were, for parameters
        that now came (see ``AgentCore.take_names``; the core counts them as being
        resolved).  Where mDNS is disabled, or cannot open, they are left out (one warning,
        as ever)."""
        core = self._core
        why = self._no_mdns()
        left = 0
        for name in names:
            if why is None:
                try:
                    self._resolve_later(name, core.generation)
                    continue
                except Exception as exc:  # (the parameters are set: the names are left out)
                    why = f"mDNS cannot open ({exc})"  # (_resolve_later let this one go)
            else:
                core.release_remote(None, core.generation)
            left += 1
        if why is not None:
            self._left_out(
                _MDNS_OFF,
                "%s: %d remote .local candidates left out (%s...): %s",
                self._local.ufrag,
                left,
                _peer_text(names[0].address),
                why,
            )

    def add_remote_candidate(
        self, candidate: Candidate | None, *, username_fragment: str | None = None
    ) -> None:
        """Add a remote candidate from signaling, at any time; ``None`` means the peer sent
        end-of-candidates.  ``username_fragment`` is the ufrag signalled with it (the W3C
        ``usernameFragment`` of an ``RTCIceCandidateInit``, which
        :meth:`Candidate.from_json <trice.ice.Candidate.from_json>` reads into a candidate but
        has no candidate to put in for end-of-candidates): an end-of-candidates that names
        the ufrag of another generation is ignored (logged), and one that comes before the
        peer's parameters waits for them.

        A candidate that names a ufrag (the W3C ``usernameFragment``, or a ``ufrag``
        extension of its line) belongs to that ufrag's ICE generation.  One that names the
        peer's ufrag of an earlier generation (trickled late, from before an ICE restart)
        is left out, logged at DEBUG and counted in
        :attr:`AgentStatistics.remote_candidates_dropped`; so is one that names this
        agent's own ufrag (a signaling mistake: a warning).  One that names a ufrag not seen
        yet waits for parameters that name it: while the peer's parameters are not known,
        and while they are, for those of an ICE restart (a peer that restarted first, whose
        new candidates came before its new parameters: :meth:`restart`, then
        :meth:`set_remote_parameters`, takes them; the first is logged at INFO, since it
        is a signaling mistake otherwise).  Parameters take the waiting candidates that
        name their ufrag; the others wait on for a later generation's, until the peer's
        parameters after this agent's next restart, which leave them out (and count them)
        unless they name their ufrag (see :meth:`restart`).  Those waiting while the
        peer's parameters are not known (at the start, or after a restart) count against
        ``max_remote_candidates``; those of a generation to come have a room of their own,
        as large (past it, one is left out).  A ``.local`` one is resolved once taken; one
        that waits for the peer's parameters (not of a generation to come, whose restart
        would forget the answer) is asked for at once, the answer at hand then.  After an
        ICE restart, an
        end-of-candidates that comes before the peer's new parameters, while the earlier
        generation's may still be on its way, is taken for that one and ignored, unless
        it names the new ufrag: signal the new parameters first.

        A candidate whose address is a ``.local`` name is resolved by multicast DNS first
        (unless :attr:`NetworkConfig.mdns <trice.NetworkConfig.mdns>` is ``DISABLED``, or
        the transport policy is relay-only: no relayed candidate pairs with an address the
        peer hid so), then taken under the address found; meanwhile an end-of-candidates
        waits, and one left unanswered for ``Timing.mdns_timeout`` is left out, logged and
        counted in :attr:`AgentStatistics.remote_candidates_dropped`.  Any other name (or a
        ``.local`` one with mDNS disabled, or relay-only) is left out, logged and counted
        at once (RFC 8839 §5.1), and so is an address no check may go to (unspecified,
        multicast, broadcast), port 0 (but an active ICE-TCP candidate's, whose port means
        nothing, RFC 6544 §4.5), or a component other than 1 (the agent has one:
        RTCP's, 2, of a peer without rtcp-mux).

        Raises:
            LimitError: more than ``AgentConfig.max_remote_candidates`` candidates (names
                being resolved count).
            StateError: a candidate after end-of-candidates, or the agent is closed, or
                the call came from outside the trio run that opened the agent (another
                thread: use ``trio.from_thread.run_sync``).
            UsageError: ``username_fragment`` is not the one the candidate names.

        A ``.local`` candidate that starts multicast DNS (the agent's first) reads the
        interfaces: what the network config's filters raise comes from here too (mDNS
        asks the IP filter of IPv4 addresses even with ``ipv4=False``: its queries go over
        IPv4), and :class:`~trice.LimitError` when no descriptor is left to read them; the
        candidate is not taken then.  That read is made in this call (some milliseconds;
        more on a host of hundreds of interfaces), as ``restart(regather=True)``'s is.
        """
        self._in_own_run("add_remote_candidate")
        self._raise_if_closed(StateError)
        if candidate is not None and not isinstance(candidate, Candidate):
            raise TypeError(
                f"add_remote_candidate takes a trice.Candidate or None, not "
                f"{a_type(candidate)}: make one of a candidate line with "
                "Candidate.from_sdp, of its JSON with Candidate.from_json"
            )
        if username_fragment is not None:
            if not isinstance(username_fragment, str):
                raise TypeError("username_fragment must be a str or None")
            username_fragment = username_fragment or None  # (an empty one names none)
        if username_fragment is not None and candidate is not None:
            named = candidate.ufrag
            if named is None:
                candidate = dataclasses.replace(candidate, username_fragment=username_fragment)
            elif named != username_fragment:
                raise UsageError(f"the candidate names ufrag {named!r}, not {username_fragment!r}")
            username_fragment = None
        if (
            candidate is not None
            and candidate.address[-1] in "lL."  # (no IP literal ends so: the test below is dearer)
            and candidate.component == 1  # (else left out, unresolved: see _take_remote)
            and is_mdns_name(candidate.address)
            and self._no_mdns() is None
            # (Not one that names a ufrag other than the peer's of now: left out, or held
            # as it is by the core and resolved once parameters naming it come, which may
            # be after a restart; see AgentCore.take_names.)
            and (
                candidate.ufrag is None
                or (self._core.remote is not None and candidate.ufrag == self._core.remote.ufrag)
            )
        ):
            self._resolve_later(candidate)
            return
        self._take_remote(candidate, username_fragment)

    def _take_remote(self, candidate: Candidate | None, ufrag: str | None = None) -> None:
        """Hand a signalled candidate (or end-of-candidates, of ``ufrag``'s generation if
        named) to the core."""
        core = self._core
        early = candidate is not None and core.early(candidate.ufrag)
        if not core.add_remote_candidate(candidate, ufrag):
            if candidate is None:
                logger.debug(
                    "%s: end-of-candidates ignored (%s)",
                    self._local.ufrag,
                    "taken for the generation of before the ICE restart"
                    if ufrag is None
                    else f"ufrag {_peer_text(ufrag)}: another ICE generation's",
                )
            elif candidate.component != 1 and not core.misnamed(candidate.ufrag):
                self._left_out(
                    _OTHER_COMPONENT,
                    "%s: remote candidate at %s left out: component %d (trice has one "
                    "component: the peer must multiplex RTCP on it, rtcp-mux)",
                    self._local.ufrag,
                    _peer_text(candidate.address),
                    candidate.component,
                )
            elif early and not unreachable(candidate):
                self._left_out(
                    _PAST_THE_CAP,
                    "%s: remote candidate of ufrag %s left out: as many of generations to come "
                    "(ufrags not seen yet) wait already as AgentConfig.max_remote_candidates",
                    self._local.ufrag,
                    _peer_text(candidate.ufrag),
                )
            elif not core.misnamed(candidate.ufrag):
                named = is_mdns_name(candidate.address)
                why = (
                    self._no_mdns() or "mDNS is off"
                    if named
                    else "no check may go there (a name other than an mDNS .local one, or an "
                    "unspecified, multicast or broadcast address)"
                )
                self._left_out(
                    _MDNS_OFF if named else _NO_DESTINATION,
                    "%s: remote candidate at %s left out: %s",
                    self._local.ufrag,
                    _peer_text(candidate.address),
                    why,
                )
            elif candidate.ufrag == core.local.ufrag:
                self._left_out(
                    _OTHER_GENERATION,
                    "%s: remote candidate at %s left out: it names this agent's own ufrag, "
                    "not the peer's (a signaling mistake?)",
                    self._local.ufrag,
                    _peer_text(candidate.address),
                )
            else:
                # (A late one from before an ICE restart.)
                self._left_out(
                    _OTHER_GENERATION,
                    "%s: remote candidate of ufrag %s left out (the peer's is %s: an earlier "
                    "ICE generation's)",
                    self._local.ufrag,
                    _peer_text(candidate.ufrag),
                    _peer_text(core.remote.ufrag if core.remote else None),
                    quiet=True,
                )
            return
        remote = core.remote
        if early and candidate is not None and remote is not None:
            # Held for parameters that name its ufrag (see AgentCore.add_remote_candidate):
            # from a peer that restarted first, or else a signaling mistake.  Said at INFO
            # the first time for this agent, then at DEBUG.
            log = logger.debug if self._warned & _HELD_EARLY else logger.info
            self._warned |= _HELD_EARLY
            log(
                "%s: remote candidate of ufrag %s held: the peer's is %s; it is taken if "
                "the peer's next parameters (after an ICE restart) name its ufrag",
                self._local.ufrag,
                _peer_text(candidate.ufrag),
                _peer_text(remote.ufrag),
            )
        if (
            candidate is not None
            and remote is None
            and candidate.ufrag is not None
            and is_mdns_name(candidate.address)
        ):
            # (Held as it is, before the peer's parameters: see AgentCore.take_names.  Not
            # one of a generation to come: the restart its parameters need forgets answers.)
            self._ask_ahead(candidate.address)
        self._pump()

    def _no_mdns(self) -> str | None:
        """Why a remote ``.local`` name is not resolved, or ``None`` if it is: mDNS is
        disabled, or the transport policy is relay-only (a name would be asked for on the
        local network, and what it stands for pairs with no relayed candidate: see
        ``AgentCore.release_remote``)."""
        if self._config.network.mdns is MdnsMode.DISABLED:
            return "mDNS is disabled (NetworkConfig.mdns)"
        if self._config.transport_policy is TransportPolicy.RELAY:
            return (
                "the transport policy is relay-only (AgentConfig.transport_policy): what a "
                ".local name stands for pairs with no relayed candidate"
            )
        return None

    def _ask_ahead(self, name: str) -> None:
        """A ``.local`` candidate held as it is for the peer's parameters (see
        ``AgentCore.take_names``): its name is asked for now, so that the answer is at hand
        once they come (the name is resolved then; an ICE restart meanwhile forgets it).
        Where mDNS is disabled or cannot open, nothing is asked: the candidate is left out
        when taken, and said so then."""
        if self._no_mdns() is not None:
            return
        ahead = self._ahead
        if ahead is None:
            ahead = self._ahead = {}
        asking = ahead.get(name)
        if asking is not None and not asking.cancel_called:  # (a restart's: asked anew)
            return
        try:
            mdns = self._open_mdns()
        except Exception:  # (the filters, or a descriptor short: reported when taken)
            return
        if mdns is not None:
            scope = ahead[name] = trio.CancelScope()
            mdns.scopes.add(scope)
            self._nursery.start_soon(
                self._resolve_ahead, mdns, name, scope, ahead, name=f"mdns ask {name}"
            )

    async def _resolve_ahead(
        self, mdns: Mdns, name: str, scope: trio.CancelScope, ahead: dict[str, trio.CancelScope]
    ) -> None:
        # (Cancelled by an ICE restart, and by parameters that do not take the name.)
        with scope:
            try:
                with trio.move_on_after(self._config.timing.mdns_timeout):
                    await mdns.resolve(name)  # (its answer is kept, for the resolving)
            finally:
                mdns.scopes.discard(scope)
                if ahead.get(name) is scope:  # (else asked anew meanwhile)
                    del ahead[name]

    def restart(
        self, ufrag: str | None = None, pwd: str | None = None, *, regather: bool = False
    ) -> IceParameters:
        """ICE restart (RFC 8445 §9): take new local parameters, and check afresh.

        Signal the new parameters to the peer, with the local candidates (the same ones:
        they stay, as do the sockets and relays; signal end-of-candidates too), and hand
        this agent the peer's new parameters and candidates once the peer has restarted
        as well (:meth:`set_remote_parameters`, :meth:`add_remote_candidate`).  The peer's
        old parameters and candidates, and every check, are forgotten; the role stays.

        With ``regather``, the local candidates are gathered anew, as Pion's ``Restart``
        and a browser's ``restartIce()`` do, for a host whose network changed (a robot
        that roamed from one access point to another, a laptop whose Wi-Fi gave way to a
        tethered phone): the interfaces are read again; an address still there keeps its
        socket and host candidate, a new address gets a socket, and one gone is signalled
        no more; the STUN servers are asked again (the NAT's mapping may have changed), and
        relays that live are kept.  The gathering state goes back to ``gathering``, each
        candidate is gathered (again) as it comes (:class:`~trice.CandidateGathered`), and
        :meth:`wait_gathering_complete` waits for the new gathering: signal what it gathers,
        as at the start.  With host candidates only, the new gathering may be over when
        this returns (``complete`` again, the events said in between).

        The state becomes ``checking`` (from ``new`` it stays ``new``), also after
        ``failed``: a restart is how a failed agent tries again.  Until the new checks
        select a pair, data keeps going over the pair selected before (RFC 8445 §9 lets it:
        :attr:`selected_pair` still says which), while its consent, last refreshed before
        the restart, is younger than ``Timing.failed_timeout`` (30 s at most: RFC 7675);
        then, with no pair for data, ``send`` and ``receive`` raise
        :class:`trio.BrokenResourceError`.
        :meth:`connect` waits for the new pair, and returns the same :class:`Connection`,
        which then carries data over it.  If the new checks fail, so does the agent.

        Args:
            ufrag: the new ufrag (4 to 32 ice-chars), or ``None`` for a random one.
            pwd: the new pwd (22 to 256 ice-chars), or ``None`` for a random one.

        Returns:
            the new :attr:`local_parameters`.

        Raises:
            ConfigError: ``ufrag`` or ``pwd`` is no valid one, or the same as before (a
                restart changes both); nothing changes then.
            StateError: the agent is closed, or the call came from outside the trio run
                that opened the agent (another thread: use ``trio.from_thread.run_sync``);
                or, with ``regather``, gathering is not complete (a restart may gather anew
                once the gathering before it is done).  Nothing changes then.
            TypeError: ``regather`` is not a :class:`bool`; nothing changes then.
            LimitError: with ``regather``, no file descriptor is left to read the
                interfaces with; nothing changes then.
            TriceError: with ``regather``, the interfaces cannot be read: an interface's
                name is not UTF-8 (ifaddr reads no interface then), or the system refuses
                (the OSError is its ``__cause__``); nothing changes then.

        With ``regather``, what the network config's filters raise as the interfaces are
        read comes from here too, before anything changes.  They are read in this call,
        which holds up the process's other tasks as long (some milliseconds; a host of
        hundreds of interfaces takes a tenth of a second or more), where gathering and
        :func:`address_changes` read them in a worker thread once reads are that slow.
        """
        self._in_own_run("restart")
        self._raise_if_closed(StateError)
        if not isinstance(regather, bool):
            raise TypeError(f"restart's regather is True or False, not {regather!r:.40}")
        surroundings = None
        if regather:
            if self._gathering is not GatheringState.COMPLETE:
                raise StateError("gathering is not complete: a restart gathers anew only after it")
            surroundings = read_surroundings(self)  # (first: a filter that raises changes nothing)
        old = self._local
        local = IceParameters(
            ufrag=_random_ice_string(8) if ufrag is None else ufrag,
            pwd=_random_ice_string(24) if pwd is None else pwd,
            lite=old.lite,
        )
        check_credentials(local.ufrag, local.pwd)
        if any(t.mux._owner(local.ufrag) not in (None, t) for t in self._muxes):
            raise ConfigError(f"ufrag {local.ufrag} is another agent's on the same UDP mux")
        if any(mux._owner(local.ufrag) not in (None, t) for mux, t in self._tcp_shares):
            raise ConfigError(f"ufrag {local.ufrag} is another agent's on the same TCP mux")
        now = self._now()
        self._core.restart(local, now)
        self._local = local
        self._hub.rename(old.ufrag, local.ufrag)
        data_pair = self._core.data_pair  # (its address still carries data: kept)
        for transport in self._muxes:
            keep = () if data_pair is None else (data_pair.remote_address,)
            transport.rename(local.ufrag, keep=keep)
            self._mux_kept = self._mux_kept or bool(transport.kept)  # (see _pump)
        for tcp_mux, share in self._tcp_shares:
            tcp_mux._rename(share, local.ufrag)
        for kept in self._transports.values():
            if isinstance(kept, TcpTransport):
                on = data_pair if data_pair is not None and data_pair.base == kept.base else None
                kept.restarted(None if on is None else on.remote_address)
        self._selected_lost = self._previous_lost = None
        self._follow_lite_source()  # (none selected now)
        # Data is taken again, if ICE had failed (not if the connection was closed).
        self._buffer.closed = self._connection is not None and self._connection._closed
        self._restarted = True
        restarted = self._restarted_event
        if restarted is not None:  # (the srflx keepalives that waited for it go on)
            self._restarted_event = None
            restarted.set()
        mdns = self._mdns
        if isinstance(mdns, Mdns):  # names still being resolved are of the old generation
            mdns.forget_resolutions()
        for run in list(self._runs.values()):
            run.drop()  # (the core has forgotten them)
        logger.debug("%s: ICE restart (was %s)", local.ufrag, old.ufrag)
        if surroundings is not None:
            # (The restart's own events first: the new generation's state before what its
            # gathering finds.)
            self._pump(now)
            gather_anew(self, surroundings)
        self._pump(now)
        return local

    async def connect(self) -> Connection:
        """Start connectivity checks (once remote parameters are known) and wait until a pair
        is selected.

        The peer's first check starts them too, if it comes first (RFC 8445 §7.3.1.4): a
        pair may then be selected before this is called, and it returns at once.

        Returns:
            the :class:`Connection` over the selected pair: the agent's one connection, the
            same object from every call (also after it was closed with
            :meth:`Connection.aclose`, which is for good), until ICE fails.

        Raises:
            IceFailedError: ICE failed: no pair works, or (after a connection) the peer's
                consent expired, or the selected pair's TURN relay is gone.
            trio.ClosedResourceError: the agent closed.
            StateError: a task of another trio run than the agent's calls it, the agent
                open.
        """
        self._in_own_run("connect")
        # (A call in a cancelled scope does nothing, as trio's own operations: no checks.)
        await trio.lowlevel.checkpoint_if_cancelled()
        primary = self._socket_to_read()
        if primary is not None and self._core.state is ConnectionState.NEW:
            # A peer in another process may have sent its first check while this process
            # was busy (with signaling, say): answer it first, which starts our checks on
            # its pair right behind the answer (see AgentCore._learn_from_request).  Our
            # check then reaches a peer that has proved the pair, which nominates on it if
            # it does so (Pion does); sent first, it would cross the peer's check, and the
            # peer would wait for a ping-back.  With nothing there: one failed read.
            self._drain(primary)
        now = self._now()
        self._core.want_connection(now)
        self._pump(now)
        waited = False
        while True:
            self._raise_if_closed()
            state = self._core.state
            if state is ConnectionState.FAILED:
                if self._selected_lost is not None:
                    raise IceFailedError(f"ICE failed: {LOST_REASONS[self._selected_lost]}")
                if self._core.consent_revoked:
                    raise IceFailedError(
                        "ICE failed: the peer revoked consent on the selected pair (a 403 "
                        "answer, RFC 7675 §5.2)"
                    )
                if self._core.selected is not None:
                    raise IceFailedError(
                        "ICE failed: the peer's consent expired on the selected pair (RFC 7675)"
                    )
                if self._core.no_candidate():
                    # (A relay-only agent whose relays ended, say: a plain restart keeps the
                    # candidates there are.)
                    raise IceFailedError(
                        "ICE failed: this agent has no local candidate (see its "
                        "gather_reports; a relay that ended is replaced by "
                        "restart(regather=True))"
                    )
                raise IceFailedError(f"ICE failed: {self._core.no_pair_reason()}")
            if self._core.selected is not None:
                if self._connection is None:
                    self._connection = Connection(self, _key=_CONNECTING)
                connection = self._connection
                if not waited:  # the wait below is a checkpoint; without it, take one
                    await trio.lowlevel.checkpoint()
                    self._raise_if_closed()  # (closed meanwhile: its connection let go)
                return connection
            primary = self._socket_to_read()
            if primary is not None:
                await self._read_until_change(primary, checkpoint=not waited)
                waited = True
                continue
            await self._wait_for_change()
            waited = True

    # ------------------------------------------------------------------ internals

    def _change(self) -> trio.Event:
        """An event set at the next change that someone waits for: of the gathering state,
        of the selected pair, or to a final connection state (see ``_emit``)."""
        if self._changed is None:
            self._changed = trio.Event()
        return self._changed

    def _wait_for_change(self) -> Awaitable[object]:
        """What a task waiting for a change awaits: the first parks itself (see
        :meth:`_abort_change`), the others wait on :meth:`_change`'s event.  (Not a
        coroutine of its own: that would be one object more a wait.)"""
        if self._change_waiter is None:
            self._change_waiter = trio.lowlevel.current_task()
            return trio.lowlevel.wait_task_rescheduled(self._abort_change)  # noqa: ASYNC105
        return self._change().wait()

    def _abort_change(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        """A task waiting for a change (in :meth:`connect` or :meth:`wait_gathering_complete`)
        waits, if it is the first, parked by itself rather than on :meth:`_change`'s event
        (woken by :meth:`_wake_change`): an event's wait costs the event, its set of tasks, a
        coroutine and a closure, some 0.7 KiB an agent that, with thousands of agents
        connecting at once, all exist at the height of the burst, whose arenas Python's
        allocator keeps after it (see the performance guide).  Another task waiting at the
        same time waits on the event.  This is the parked task's abort: it was cancelled."""
        self._change_waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake_change(self) -> None:
        """Wake the task waiting for a change parked by itself (see :meth:`_abort_change`)."""
        task = self._change_waiter
        if task is not None:
            self._change_waiter = None
            trio.lowlevel.reschedule(task)

    def _in_own_run(self, method: str) -> None:
        """Raise StateError if ``method`` was called from outside the trio run that opened
        the agent (a plain thread, or a task of another thread's run), before any step of it:
        its steps wake this run's tasks and start tasks in its nurseries, which only this
        run's thread may do.  (A closed agent is let through: it steps no more.)"""
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            token = None
        if token is not self._token and not self._closed:
            raise StateError(
                f"Agent.{method} was called from outside the trio run that opened the agent: "
                "call it from that run's tasks (from another thread, with "
                "trio.from_thread.run_sync and that run's trio token)"
            )

    def _raise_if_closed(self, kind: type[Exception] = trio.ClosedResourceError) -> None:
        if self._closed:
            raise kind("the agent is closed")

    def _emit(self, event: Event) -> None:
        if self._closed:
            return  # "closed" was the last event (a gather step may still run after it)
        # (Each kind's own steps under one test of its kind: most events are neither.)
        if isinstance(event, ConnectionStateChanged):
            state = event.state
            logger.debug("%s: connection state %s", self._local.ufrag, state.value)
            if self._tcp_counters is not None:  # (the agent has TCP candidates)
                if (
                    state is ConnectionState.COMPLETED
                    and self._core.controlling
                    and self._config.nomination is Nomination.REGULAR
                ):
                    self._close_idle_tcp()
                if state is ConnectionState.DISCONNECTED or state in _HEARD:
                    # (The peer silent: its connections retransmit every second at most,
                    # so that a path back carries again at once; heard, TCP's own.)
                    capped = state is ConnectionState.DISCONNECTED
                    for transport in self._transports.values():
                        if isinstance(transport, TcpTransport):
                            transport.cap_retransmissions(capped)
            if state is _DISCONNECTED:
                pair = self._core.selected
                relay = None if pair is None else self._transports.get(pair.base)
                if isinstance(relay, RelayTransport):
                    # The peer silent over our relay: the TURN server may have lost the
                    # allocation (it restarted), which it says only when asked.  Asked
                    # now, a refusal ends the relay, and ICE with the reason, in a round
                    # trip, not at the allocation's next refresh (minutes away).
                    relay.refresh_now()
            if state is ConnectionState.FAILED:
                connection = self._connection
                if connection is not None:
                    connection._stop_waiters()  # consent expired: no more data (RFC 7675)
                for transport in self._transports.values():
                    # (Nor what waits in a stream's buffer, to go once the path drains.)
                    if isinstance(transport, (TcpTransport, RelayTransport)):
                        transport.drop_data()
                # No more data either way: what the peer still sends is dropped, so that
                # receive, once it has returned what had come, raises for good (until an ICE
                # restart), and a receive loop ends.
                self._buffer.closed = True
                for share in self._muxes:
                    share.release()  # (a peer that comes back there may be another agent's)
                if self._core.selected is None:
                    reason = self._core.no_pair_reason()
                    if reason != NO_PAIR_WORKS:  # (what more it can say: logged, as raised)
                        logger.warning("%s: ICE failed: %s", self._local.ufrag, reason)
                wakes = True
            else:
                wakes = state is ConnectionState.CLOSED
        elif isinstance(event, SelectedPairChanged):
            if logger.isEnabledFor(logging.DEBUG):
                local, remote = event.pair.local, event.pair.remote
                logger.debug(
                    "%s: selected %s -> %s",
                    self._local.ufrag,
                    host_port(local.address, local.port),
                    host_port(remote.address, remote.port),
                )
            self._previous_lost = None  # (a transport lost under the pair of before)
            self._follow_lite_source()
            connection = self._connection
            if connection is not None:
                connection._reroute()  # sends follow the new pair,
                connection._wake_senders()  # those waiting for room on the old one too
            wakes = True
        else:
            wakes = isinstance(event, GatheringStateChanged)
        subscribers = self._subscribers
        if subscribers:
            for stream in subscribers:
                stream._put(event)
        if wakes:
            self._wake_change()
        changed = self._changed
        if changed is not None and wakes:
            self._changed = None
            changed.set()
            if self._connect_sock is not None:  # (see _read_until_change)
                if self._connect_blocked:
                    trio.lowlevel.notify_closing(self._connect_sock)  # connect() looks
                else:
                    # connect() read this itself: it returns now and reschedules the agent
                    # task, which then looks at its deadline itself (no timer to arm).
                    self._sleeping_until = -math.inf

    def _pump(self, now: float | None = None) -> None:
        """After any change of the core: deliver its events, start the checks it wants now
        (their first transmission goes out at once, not after a trip through the agent
        task), bring the agent task's wait forward if the core's deadline came nearer, and
        last let the core make its next checks ahead (:meth:`AgentCore.prepare
        <trice.ice._core.AgentCore.prepare>`).  ``now`` saves asking the clock again, from a caller
        that just did."""
        if now is None:
            now = self._now()
        # Checks first: their first transmission goes out before the events are handed to
        # subscribers and waiters (the core queues events in order either way).  A ping-back
        # too, before the events are drained: starting a check can fail its pair (its
        # transport gone), and the events that makes must not wait for a later pump.
        self._start_checks(now)
        if not self._closed and self._ping_back_now_if_elsewhere(now):
            self._start_checks(now)
        for event in self._core.drain_events():
            self._emit(event)
        core = self._core
        if core.role_switches != self._role_switches:
            # (At INFO the first time: a peer could make it switch without end.)
            level = logging.INFO if not self._role_switches else logging.DEBUG
            self._role_switches = core.role_switches
            logger.log(
                level,
                "%s: now %s (%s)",
                self._local.ufrag,
                "controlling" if core.controlling else "controlled",
                core.switched_because,
            )
        if self._mux_kept and core.previous_remote is None:
            # The pair of before an ICE restart carries data no more: the UDP muxes let
            # its address go (unless the new generation's too).
            self._mux_kept = False
            for share in self._muxes:
                share.forget_kept(core.remote_addresses)
        if self._route_pair is not None and core.data_pair is None:
            # No pair carries data now (an ICE restart's pair of before ended; a new
            # selection reroutes on its event): the connection looks its route up again,
            # and the tasks waiting to send or receive look at it again, to raise.
            self._route_pair = None
            connection = self._connection
            if connection is not None:
                connection._stop_waiters()
        # If the agent task is not waiting (this may be it, reading its socket), it looks at
        # the deadline itself.
        if self._sleeping_until != -math.inf:
            deadline = self._core.next_deadline()
            if deadline is not None:
                self._wake_by(deadline)
        # Last, what was sent is on its way: make the next checks ahead (and a controlled
        # agent's ping-back, for a peer in another process: see _on_stun).
        core.prepare(ping=not core.controlling and self._peer_elsewhere())

    def _ping_back_now_if_elsewhere(self, now: float) -> bool:
        """Have the core queue a pending ping-back at once if the peer is in another
        process (Pion, say): waiting for the ping's time would only cost the peer's
        nomination that long.  A peer that is an agent of this very run is trice, which
        nominates by itself: the ping waits for its time (the core's timer), and the
        nomination, which comes first, drops it.  Returns whether a ping was queued."""
        core = self._core
        if core.pingback_pending and self._peer_elsewhere():
            core.ping_back_now(now)
            return True
        return False

    def _peer_elsewhere(self) -> bool:
        """Whether the peer is not an agent of this trio run (see ``TimerHub.has_other_agent``):
        most likely in another process, which may be Pion.  (Asked at every pump: the answer
        is kept until an agent of the run opens or closes; the remote ufrag, once set, stays.)"""
        hub = self._hub
        if self._elsewhere_seen != hub.roster:
            remote = self._core.remote
            if remote is None:
                return True
            self._elsewhere = not hub.has_other_agent(remote.ufrag, self._local.ufrag)
            self._elsewhere_seen = hub.roster
        return self._elsewhere

    def _wake_by(self, due: float) -> None:
        """Bring the agent task's wait forward to ``due`` if it planned to sleep longer."""
        if due < self._sleeping_until:
            self._sleeping_until = due
            self._hub.arm(due, self)

    def _time_came(self) -> None:
        """The run's timer: the agent task's planned wake-up time has come (see _run)."""
        self._resume()

    def _readable(self, transport: UdpTransport) -> bool:
        """The run's timer task found the first socket readable while this agent's task is
        parked waiting for it (see ``TimerHub.arm_read``): read it here, as that task would,
        without waking it.  Returns whether the socket was emptied.

        The task is woken only if it has something to do: data from a peer taken for gone
        (it tells the core), or an error (it raises it, in the agent's nursery, where an
        error of the agent's belongs)."""
        if self._closed:
            return True
        buffer = self._buffer
        seen = self._datagrams + buffer.dropped
        context = self._context
        try:
            if context is None:
                empty = self._drain(transport)
            else:
                empty = context.run(self._drain, transport)
        except BaseException as exc:  # (the agent's, even KeyboardInterrupt: never the run's)
            self._failure = exc
            transport.reader_waiting = False
            self._resume()
            return True
        count = self._datagrams + buffer.dropped
        if count != seen:
            # Data, which the agent task tells the core of when it next wakes: when it came
            # (one clock read a report, not a datagram), and at once if the peer seemed gone.
            self._data_seen = (count, self._now())
            if self._core.state is _DISCONNECTED:
                self._resume()
        return empty

    def _resume(self) -> None:
        """Wake the agent task, parked or waiting on its first socket itself (no epoll, or
        the run's timer task would not read it): it looks at everything again."""
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)
            return
        primary = self._primary
        if primary is not None and primary.reader_waiting:
            primary.kick()  # the agent task's wait raises ClosedResourceError

    def _unpark(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _arm(self, run: CheckRun, due: float) -> None:
        """Wake ``run``'s parked task at ``due`` (the agent task keeps the time)."""
        heapq.heappush(self._timers, (due, next(_SEQUENCE), run))
        self._wake_by(due)

    def _fire_timers(self, now: float) -> float:
        """Wake the check tasks whose time has come; returns the next due time."""
        timers = self._timers
        while timers:
            due, _, run = timers[0]
            if run.due != due or run.task is None:
                heapq.heappop(timers)  # that wait is over already
            elif due <= now:
                heapq.heappop(timers)
                run.wake()
            else:
                return due
        return math.inf

    def _start_checks(self, now: float) -> None:
        core = self._core
        for tid, at in core.poll_resend():
            pending = self._runs.get(tid)
            if pending is not None:
                pending.resend_at_time(at)
        while (check := core.poll_check(now)) is not None:
            transport = self._transports.get(check.base)
            if transport is None:
                core.on_timeout(check, now)
                continue
            if not check.consent:
                # A new check on a pair replaces the pair's check in flight (if any).
                pair = check.pair
                for old in self._runs.values():
                    if old.check.pair is pair and not old.check.consent:
                        old.drop()
            run = CheckRun(self, check, transport)
            run.transmit()
            self._nursery.start_soon(run.run, name=check_name(check))

    def _data_route(self) -> tuple[Transport, Address]:
        pair = self._route_pair = self._core.data_pair
        assert pair is not None  # (Connection._check_open said so)
        return self._transports[pair.base], pair.remote_address

    def _set_gathering(self, state: GatheringState) -> None:
        if state is not self._gathering and not self._closed:  # (closed: "closed" was last)
            self._gathering = state
            self._emit(GatheringStateChanged(state))

    def _add_local(
        self, candidate: Candidate, base: int, *, signal: bool, url: ServerUrl | None = None
    ) -> None:
        """Add a local candidate on transport ``base`` (signalled to the peer if ``signal``),
        which the STUN or TURN server ``url`` gave, if any (none once closed: "closed" was
        the last event)."""
        if self._closed:
            return
        candidate = unique_priority(candidate, base, self._core.local_candidates)
        network = self._config.network
        external = None
        if (
            signal
            and network.external_addresses
            and network.external_candidate is CandidateType.HOST
            and candidate.type is CandidateType.HOST
        ):
            external = network.external_address(candidate.address)
            if external is not None:
                # A 1:1 NAT's public address, in the host's place: the candidate the peer
                # sees, and so the one the core knows (the peer's answers name it, and a
                # peer-reflexive candidate is one it does not know, RFC 8445 §7.2.5.3.1;
                # a server-reflexive one found from the socket is related to it).
                candidate = dataclasses.replace(candidate, address=external)
        self._core.add_local_candidate(candidate, base)
        if signal:
            mdns = self._mdns
            if external is None and network.mdns is MdnsMode.QUERY_AND_GATHER:
                named = _named(candidate, mdns if isinstance(mdns, Mdns) else None)
                if named is None:
                    logger.info(
                        "%s: host candidate %s not signalled: %s",
                        self._local.ufrag,
                        candidate.address,
                        "no link its .local name is answered on (mDNS runs on IPv4 links)"
                        if isinstance(mdns, Mdns)
                        else "mDNS is off (it could not be opened), and the address is hidden",
                    )
                    self._pump()
                    return
                candidate = named
            if candidate.related_address is not None and (
                network.mdns is MdnsMode.QUERY_AND_GATHER
                or self._config.transport_policy is not TransportPolicy.ALL
            ):
                # (No host address is signalled then, nor is one shown where a
                # server-reflexive or relayed candidate came from, as browsers do.)
                unspecified = "::" if ":" in candidate.address else "0.0.0.0"
                candidate = dataclasses.replace(
                    candidate, related_address=unspecified, related_port=0
                )
            if url is None:
                gathered = CandidateGathered(candidate)
            else:
                relayed = candidate.type is CandidateType.RELAY
                protocol = ("tls" if url.secure else url.transport) if relayed else None
                gathered = CandidateGathered(candidate, str(url), protocol)
            self._signalled.append((gathered, base))
            self._emit(gathered)
        self._pump()

    # ------------------------------------------------------------------ multicast DNS

    def _open_mdns(self, links: MdnsLinks | None = None) -> Mdns | None:
        """The agent's :class:`Mdns`, opened (and its task started) on first need, on
        ``links`` if given (as a gathering anew read them: see ``Surroundings``); ``None``
        if it cannot be (a warning, the first time)."""
        mdns = self._mdns
        if mdns is None:
            opened = open_mdns(
                self._config.network, self._now, warn=not self._mdns_quiet, links=links
            )
            self._mdns = False if opened is None else opened
            if opened is not None:
                self._nursery.start_soon(opened.serve, name=f"mdns {self._local.ufrag}")
            return opened
        return mdns if isinstance(mdns, Mdns) else None

    def _resolved_address(self, addresses: Sequence[str]) -> str:
        """Of the addresses a ``.local`` name resolved to, the one its candidate takes: IPv4
        first (mDNS itself runs over IPv4), of a family this agent has a local candidate of
        (else of one it gathers), and not an IPv6 link-local address, which pairs with
        nothing trice gathers; else the first.  (An address of a family with no base of
        the agent's paired with nothing.)"""

        def pairable(address: str, families: Collection[bool]) -> bool:
            v6 = ":" in address
            return v6 in families and not (v6 and ipaddress.ip_address(address).is_link_local)

        network = self._config.network
        gathered = {":" in local.address for local, _ in self._core.local_candidates}
        configured = {family for family, on in ((False, network.ipv4), (True, network.ipv6)) if on}
        for families in (gathered, configured):
            usable = sorted((a for a in addresses if pairable(a, families)), key=lambda a: ":" in a)
            if usable:
                return usable[0]
        return addresses[0]

    def _resolve_later(self, candidate: Candidate, generation: int | None = None) -> None:
        """A ``.local`` candidate: held by the core (it counts against the cap, and an
        end-of-candidates waits for it), resolved by mDNS in a task of its own, then given
        back to the core, under the address found or as left out.  (``generation``: the
        core holds it already, see ``AgentCore.take_names``.)"""
        core = self._core
        if generation is None:
            generation = core.hold_remote()  # (raises StateError, LimitError)
        try:
            mdns = self._open_mdns()  # (the filters it calls, or a descriptor short, raise)
        except BaseException:
            core.release_remote(None, generation)  # (never taken: no slot nor end held)
            raise
        if mdns is None:
            self._left_out(
                _MDNS_OFF,
                "%s: remote candidate %s left out: mDNS is off",
                self._local.ufrag,
                _peer_text(candidate.address),
            )
            core.release_remote(None, generation)
            self._pump()
            return
        self._nursery.start_soon(
            self._resolve,
            mdns,
            candidate,
            generation,  # (a restart may come before the task runs)
            name=f"mdns resolve {candidate.address}",
        )

    async def _resolve(self, mdns: Mdns, candidate: Candidate, generation: int) -> None:
        core = self._core
        if generation != core.generation:
            return  # (an ICE restart came before this task ran)
        addresses: tuple[str, ...] = ()
        with trio.CancelScope() as scope:  # (cancelled by an ICE restart)
            mdns.scopes.add(scope)
            try:
                with trio.move_on_after(self._config.timing.mdns_timeout):
                    addresses = await mdns.resolve(candidate.address)
            finally:
                mdns.scopes.discard(scope)
        if generation != core.generation or self._closed:
            return  # (an ICE restart came meanwhile: the candidate was of the old generation)
        if not addresses:
            self._left_out(
                _NO_ANSWER,
                "%s: remote candidate %s left out: no mDNS answer in %g s",
                self._local.ufrag,
                _peer_text(candidate.address),
                self._config.timing.mdns_timeout,
            )
            core.release_remote(None, generation)
            self._pump()
            return
        address = self._resolved_address(addresses)
        logger.debug("%s: remote %s is %s", self._local.ufrag, candidate.address, address)
        try:
            resolved = dataclasses.replace(candidate, address=address)
            if not core.release_remote(resolved, generation, hidden=True):
                self._left_out(
                    _OTHER_GENERATION,
                    "%s: remote candidate of ufrag %s left out (another ICE generation's)",
                    self._local.ufrag,
                    _peer_text(candidate.ufrag),
                    quiet=self._restarted,
                )
        except LimitError as exc:  # (past the cap: a guard; names hold their room)
            core.remote_candidates_dropped += 1
            core.left_out += 1
            self._left_out(
                _PAST_THE_CAP,
                "%s: remote candidate %s left out: %s",
                self._local.ufrag,
                address,
                exc,
            )
        self._pump()

    def _left_out(self, reason: int, message: str, *args: object, quiet: bool = False) -> None:
        """Log a remote candidate left out for ``reason`` (one of the ``_NO_DESTINATION``...
        bits): at WARNING the first time for this agent and reason (unless ``quiet``), at
        DEBUG after, so that a peer signalling thousands of them writes one warning each
        way, not thousands (they are counted in ``remote_candidates_dropped``)."""
        if quiet or self._warned & reason:
            logger.debug(message, *args)
            return
        self._warned |= reason
        logger.warning(message + " (more such: at DEBUG)", *args)

    def _kernel_refused(self, exc: OSError, local: Address, address: Address) -> None:
        """A host socket's kernel refused a datagram (data or a check) that it was asked to
        send: a firewall's EPERM, no route, an address gone.  Counted
        (``AgentStatistics.send_refused``), and logged: at WARNING the first time for this
        agent, then at DEBUG (a firewall in the way refuses every datagram)."""
        self._send_refused += 1
        message = "%s: the kernel refused to send from %s to %s: %s (a firewall? no route?)"
        args = (self._local.ufrag, host_port(*local), host_port(*address), exc.strerror or exc)
        if self._warned & _SEND_REFUSED:
            logger.debug(message, *args)
            return
        self._warned |= _SEND_REFUSED
        more = "; counted in AgentStatistics.send_refused (more: at DEBUG)"
        logger.warning(message + more, *args)

    # ------------------------------------------------------------------ tasks

    async def _run(self) -> None:
        """The agent's own task: it gathers the host candidates, keeps the core's time, and
        reads the first host socket itself (or, where the system has epoll, has the run's
        timer task read it while it is parked: see ``TimerHub.arm_read``).

        Every other task of the agent (checks, readers of further sockets, server gathering)
        runs in ``self._nursery``, :func:`open_agent`'s own.  One task and one nursery per agent,
        and one wait in it for a datagram *or* the next deadline: with thousands of agents in a
        process, each task, nursery and pending wait is memory and scheduling that counts.
        """
        self._context = trio.lowlevel.current_task().context
        for share in self._muxes:  # (datagrams from a mux are handled in this context)
            share.hooks.context = self._context
        await gather_local(self)
        if has_server_sources(self):
            self._nursery.start_soon(gather_servers, self, name="gather")
        else:
            finish_gathering(self)
        # Then the loop (inline, not a coroutine of its own: one frame less per idle agent):
        # run the core's timers, then wait until its next deadline, a change that brings that
        # deadline nearer (``_pump`` moves the wait's deadline), or a datagram on the first
        # host socket, which this task then reads.  While a task blocked in
        # :meth:`Connection.receive` holds that socket, this task leaves the socket to it and
        # takes it back after a lease with no receiver (the same hand-off as
        # :meth:`_receive_loop`).
        core = self._core
        hub = self._hub
        # Until the agent closes: after ICE failed there are no timers left, but STUN is
        # still answered (and counted) as long as the agent is open.
        #
        # No cancel scope times the wait: the run's timer (trice/_trio/_timers.py) wakes the
        # task at ``_sleeping_until`` (by notify_closing on the socket it waits on, or by
        # rescheduling it if it is parked); ``_pump`` brings that time forward.
        due = -math.inf  # when the last wait was due to end
        # Data from the peer is a sign of life for the core (``AgentCore.on_data``).  Its
        # readers only count it, queued or dropped (reading the clock would cost the data
        # plane some 2 % a datagram); this loop, which wakes at each consent check, notices
        # the count move and tells the core when its time comes.  While the peer seems gone
        # (disconnected), the task that reads its data (whichever it is) wakes this one at
        # once.
        buffer = self._buffer
        datagrams = 0
        data_at = -math.inf
        lite_seen = 0  # (an ICE-lite agent's data over the selected pair: its consent too)
        lite_fresh = False
        while not self._closed:
            now = self._now()
            if self._datagrams + buffer.dropped != datagrams:
                datagrams = self._datagrams + buffer.dropped
                # When the last of it came, if the run's timer task read it (see _readable);
                # else now, when this task notices it (a receiver's reads are not timed).
                seen_count, seen_at = self._data_seen
                data_at = seen_at if seen_count == datagrams else now
                if self._lite_data != lite_seen:
                    lite_seen = self._lite_data
                    lite_fresh = True
                if core.state is _DISCONNECTED:
                    if lite_fresh:  # (first: on_data takes no time before one it was told)
                        core.on_data(self._lite_at, selected=True)
                        lite_fresh = False
                    core.on_data(now)
                    self._pump(now)
            if now >= due:
                # The core's time came (a datagram was handled as it was read).
                if lite_fresh:
                    core.on_data(self._lite_at, selected=True)  # (dated by its own data)
                    lite_fresh = False
                if data_at != -math.inf:
                    core.on_data(data_at)
                core.on_timer(now)
                self._pump(now)
                if self._restarted and self._tcp_counters is not None:
                    self._close_stale_tcp()
            deadline = core.next_deadline()
            wake_at = self._fire_timers(now)
            if deadline is not None and deadline < wake_at:
                wake_at = deadline
            primary = self._primary
            read = False
            if primary is not None and not primary.closed:
                # Leave the socket to receivers while they keep coming back (the same
                # hand-off as _receive_loop's).
                leased = primary.leased_until(now)
                if leased == -math.inf:
                    read = True
                elif leased < wake_at:
                    wake_at = leased
            readable = False
            self._sleeping_until = wake_at
            if wake_at != math.inf:
                hub.arm(wake_at, self)
            try:
                if read:
                    assert primary is not None
                    armed = primary.armed or hub.arm_read(primary, self)
                    primary.reader_waiting = True
                    if armed:
                        # The run's timer task reads the socket for us while we are parked
                        # (see _readable): we wake for our time, or what concerns us.
                        self._parked = trio.lowlevel.current_task()
                        await trio.lowlevel.wait_task_rescheduled(self._unpark)
                    else:
                        try:
                            await trio.lowlevel.wait_readable(primary.sock)
                            readable = True
                        except trio.ClosedResourceError:
                            pass  # the timer, a nudge (see ReceiveBuffer.nudge), a receiver
                else:
                    self._parked = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._unpark)
            finally:
                self._parked = None
                if primary is not None:
                    primary.reader_waiting = False
                due = self._sleeping_until
                self._sleeping_until = -math.inf
            failure = self._failure
            if failure is not None:
                self._failure = None
                raise failure
            # Read what came before the core's timers run, also when the timer ended the wait:
            # in a busy process a datagram may wait there unread (a nomination, say, which
            # must come before the ping-back it makes needless).
            if primary is not None and (
                readable
                or (
                    read
                    and not primary.closed
                    and (now := self._now()) >= due
                    and primary.leased_until(now) == -math.inf  # (not a receiver's now)
                )
            ):
                empty = self._drain(primary)
                if not empty:
                    await trio.lowlevel.checkpoint()

    def _socket_to_read(self) -> UdpTransport | None:
        """The socket a :meth:`connect` call reads itself, if it should: the agent's first
        socket, open and not held by another task, when the peer is in another process."""
        primary = self._primary
        if (
            primary is not None
            and not primary.held
            and not primary.closed
            and self._peer_elsewhere()
        ):
            return primary
        return None

    async def _read_until_change(self, transport: UdpTransport, *, checkpoint: bool) -> None:
        """For :meth:`connect`, with a peer in another process: wait for the next change it
        waits for (a pair selected, ICE over, the agent closed) on the agent's first socket,
        reading it meanwhile, as the agent task would (see :meth:`Connection.receive`, which
        does the same).  The datagram that selects a pair is then read by the very task that
        returns it: no task switch between the two (some 30-40 µs of trio's here).  A
        change made elsewhere (another socket, the timers) ends the wait with
        :func:`trio.lowlevel.notify_closing` on the socket, which stays open.

        With ``checkpoint``, it takes connect()'s checkpoint while it holds the socket, once
        it has read what the socket held (the peer's own check, often): while the first check
        is on its way, and the agent task cannot read meanwhile (taken after the pair is
        selected, it could let the agent task answer what came next first)."""
        changed = self._change()
        sock = transport.sock
        ipv6 = transport.family == socket.AF_INET6
        transport.held = True
        transport.kick()  # the agent task leaves the socket (and parks: see leased_until)
        self._connect_sock = sock
        read = 0
        try:
            while not changed.is_set():
                if read >= READ_BATCH:
                    # (A flood: the other tasks get their turn between batches, as from the
                    # agent's readers; the socket stays held.)
                    read = 0
                    await trio.lowlevel.checkpoint()
                    continue
                try:
                    data, source = sock.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    data = None  # (waited on below: not in this clause, whose exception
                    # would be the context of a cancellation that comes in the wait)
                except OSError:
                    if transport.closed:
                        break
                    read += 1  # (an ICMP error, say: a read all the same, for the batch)
                    continue
                if data is None:
                    if checkpoint:
                        checkpoint = False
                        await trio.lowlevel.checkpoint()
                        continue
                    self._connect_blocked = True
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    except trio.ClosedResourceError:
                        pass  # nudged (or closed: connect() sees it)
                    finally:
                        self._connect_blocked = False
                    if transport.closed:
                        break
                    continue
                read += 1
                if ipv6:
                    source = (source[0], source[1])
                self._dispatch(transport, data, source)
            if checkpoint:
                await trio.lowlevel.checkpoint()
        finally:
            # The agent task takes the socket back now (no lease), and reads on.
            self._connect_sock = None
            transport.hand_back()
            self._resume()

    def _adopt_socket(self, transport: UdpTransport, address: str) -> None:
        """A new host socket on ``address``: the agent task reads the first, a reader task
        each other."""
        if self._primary is None and not transport.closed:
            self._primary = transport
        else:
            name = f"receive {host_port(address, transport.local_address[1])}"
            self._nursery.start_soon(self._receive_loop, transport, name=name)

    def _transport_lost(self, base: int, reason: Lost = "relay") -> None:
        """Transport ``base`` (a relay) ended on its own while the agent is open: its
        checks stop, and the core fails its pairs, and ICE if the selected pair was one
        (:meth:`AgentCore.transport_lost <trice.ice._core.AgentCore.transport_lost>`)."""
        transport = self._transports.get(base)
        if self._closed or transport is None or not transport.closed:
            return
        for run in list(self._runs.values()):
            if run.transport is transport:
                run.drop()
        core = self._core
        self._note_lost(reason, base)
        now = self._now()
        core.transport_lost(base, now)
        # (Not signalled again, at a restart say: the address is dead.)
        self._signalled = [entry for entry in self._signalled if entry[1] != base]
        self._pump(now)

    def _tcp_failed(self, transport: TcpTransport, address: Address, stale: bool) -> None:
        """A connection of ``transport`` to ``address`` could not open, or closed: the
        checks waiting for an answer over it fail now, and so does its pair (ICE too, if it
        was the selected pair: see :meth:`AgentCore.path_lost
        <trice.ice._core.AgentCore.path_lost>`).

        Unless it was ``stale``, kept from before an ICE restart and not yet used by the new
        checks (see ``TcpTransport.prove``): then only the pair of before on it goes (see
        :meth:`AgentCore.previous_path_lost <trice.ice._core.AgentCore.previous_path_lost>`), and
        new checks that wait on it, an active candidate sends again over a new connection
        (the old one may have died unnoticed before the restart: a peer that rebooted,
        say)."""
        if self._closed:
            return
        runs = [
            run
            for run in self._runs.values()
            if run.transport is transport
            and run.check.destination == address
            and not (run.dropped or run.settled or run.failed)  # (still waiting on it)
        ]
        if stale and runs and transport.tcp_type is TcpType.ACTIVE:
            for run in runs:
                run.transmit()  # (opens the new connection; fails the run if none can open)
            return
        if stale and not runs:
            # (No check of these went over it: theirs is not the path that ended.)
            self._note_lost("tcp", transport.base, address)
            self._core.previous_path_lost(transport.base, address)
            self._pump(self._now())
            return
        for run in runs:
            run.fail()
        self._note_lost("tcp", transport.base, address)
        now = self._now()
        self._core.path_lost(transport.base, address, now)
        self._pump(now)

    def _follow_lite_source(self) -> None:
        """An ICE-lite agent's selected pair changed (or went): the address whose data is
        its consent follows it."""
        selected = self._core.selected
        if self._config.lite and selected is not None:
            self._lite_source = selected.remote_address
        else:
            self._lite_source = None

    def _note_lost(self, reason: Lost, base: int, address: Address | None = None) -> None:
        """The transport ``base`` (or its path to ``address``) is gone: if the selected pair
        went over it, which fails ICE, ``connect`` and the connection say so; if, during an
        ICE restart, the pair of before did, the connection says so (no pair carries data
        now, and none on that transport will)."""
        core = self._core
        if core.finished:
            return
        selected = core.selected
        pair = selected if selected is not None else core.data_pair
        if pair is None or pair.base != base:
            return
        if address is not None and pair.remote_address != address:
            return
        if selected is not None:
            self._selected_lost = reason
        else:
            self._previous_lost = reason

    def _close_idle_tcp(self) -> None:
        """ICE completed, nominated by this agent (regular nomination): the TCP connections
        of the pairs not selected carry nothing more (until an ICE restart, whose checks
        open them again): closed, each a descriptor and two tasks fewer.  The peer's side of
        each sees it close, and fails that pair.

        Only the controlling agent closes them, and only after regular nomination, where the
        one pair nominated is the one both sides select.  Under aggressive nomination both
        rank the pairs alike (by the candidate the peer saw) but the controlled side moves
        to a better pair nominated after the one it selected, and closing one could cut its
        path before that."""
        selected = self._core.selected
        for transport in self._transports.values():
            if isinstance(transport, TcpTransport):
                keep = None
                if selected is not None and selected.base == transport.base:
                    keep = selected.remote_address
                transport.close_idle(keep)

    def _close_stale_tcp(self) -> None:
        """After an ICE restart, once the new checks have selected a pair: close the TCP
        connections of the generations before that carry nothing now (see
        :meth:`TcpTransport.close_stale`).  Not before: the new checks go over the
        connections kept, whichever the peer takes up."""
        core = self._core
        if core.selected is None:
            return
        pair = core.data_pair
        for transport in self._transports.values():
            if isinstance(transport, TcpTransport):
                keep = None
                if pair is not None and pair.base == transport.base:
                    keep = pair.remote_address
                transport.close_stale(keep, functools.partial(core.is_previous_remote, tcp=True))

    def _signed_for_us(self, data: bytes) -> bool:
        """Whether ``data`` (the first frame of a connection a TCP mux routes here by its
        ufrag) is a STUN message signed with this agent's password: the mux gives the
        connection a place here only then (the ufrag travels in clear)."""
        try:
            message = stun.decode(data)
        except stun.StunDecodeError:
            return False
        return message.verify_integrity(stun.short_term_key(self._local.pwd))

    def _share_tcp_mux(self, mux: TcpMux) -> TcpTransport:
        """The transport of a passive TCP candidate at a TCP mux's address, attached to
        the mux (which hands it the connections whose first check asks this agent)."""
        counters = self._tcp_counters
        if counters is None:
            counters = self._tcp_counters = TcpCounters()
        transport = TcpTransport(
            self._new_base(),
            mux.local_address,
            TcpType.PASSIVE,
            deliver=self._dispatch,
            failed=self._tcp_failed,
            max_links=self._config.max_pairs,
            counters=counters,
        )
        transport.vet = self._signed_for_us
        mux._attach(self._local.ufrag, transport)
        self._transports[transport.base] = transport
        self._tcp_shares += ((mux, transport),)
        return transport

    def _mux_failed(self, exc: BaseException) -> None:
        """Handling a datagram from a mux raised: this agent's task raises it."""
        self._failure = exc
        self._resume()

    def _mux_lost(self, base: int) -> None:
        """A mux closed while this agent is open: its pairs there fail (ICE too, if the
        selected pair was one), and the tasks waiting to send or receive are told."""
        self._transport_lost(base, "mux")
        connection = self._connection
        if connection is not None:
            connection._stop_waiters()

    def _report(self, report: GatherReport) -> None:
        self._reports += (report,)

    def _new_base(self) -> int:
        base = self._bases_made
        self._bases_made += 1
        return base

    def _drain(self, transport: UdpTransport, one: bool = False) -> bool:
        """Read what one socket holds: STUN to the core, data from known remotes to the
        receive buffer (whose ``put`` is inlined: this is the data plane's hot loop).

        Runs in the socket's reader (the agent task, or a ``receive`` task), in a task blocked in
        :meth:`Connection.receive`, which waits on the socket itself (see ``_receive_loop``),
        or in a check task about to send its check again (``CheckRun._answered_meanwhile``).
        Returns False if it stopped after a batch with more to read, True once the socket is
        empty (or, with ``one``, once it has queued a data datagram).

        With ``one`` it stops at the first data datagram it queues: a receiver that takes
        datagrams one at a time reads the next when it comes back, and reading on would
        cost a failed read (a system call and an exception) for each datagram that arrives
        on its own.

        Every reader reads on to the end of a batch, dropping (and counting) what the receive
        buffer has no room for, so that STUN behind the data is answered: a receive that
        stopped at a full buffer left checks and consent's answers in the kernel for as long
        as its application took (the recv46 review), there to be lost uncounted off Linux.
        """
        recv = transport.sock.recvfrom
        buffer = self._buffer
        queue = buffer.queue
        maxlen = buffer.maxlen
        remotes = self._core.remote_addresses  # the core's own dict of them, kept up to date
        lite_source = self._lite_source
        ipv6 = transport.family == socket.AF_INET6
        added = size = 0  # (datagrams queued and their bytes, counted once a batch)
        dropped = False  # (a sign of life too: see below)
        empty = True
        try:
            for _ in range(READ_BATCH):
                try:
                    data, source = recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    if transport.closed:
                        break
                    continue  # ICMP errors surface here on some systems; UDP carries on.
                if ipv6:
                    source = (source[0], source[1])
                if data and data[0] < 4 and data[4:8] == STUN_MAGIC:
                    self._on_stun(transport, data, source)
                elif source in remotes:
                    if buffer.closed:
                        # (ICE failed, or the connection closed: no data is taken, RFC 7675.)
                        buffer.dropped += 1
                        dropped = True
                        continue
                    if source == lite_source:
                        self._lite_data += 1
                        self._lite_at = self._now()
                    if queue is None:
                        queue = buffer.make_queue()
                    if len(queue) < maxlen:
                        queue.append(data)
                        added += 1
                        size += len(data)
                        if one:
                            break
                    else:
                        buffer.dropped += 1
                        dropped = True
                else:
                    self._unknown_source += 1
                    if self._core.selected is not None:
                        self._from_stranger(transport, source)
            else:
                empty = False  # (a whole batch read: there may be more)
        finally:
            # (Also when handling a STUN message raised: what was queued before it counts.)
            if added or dropped:
                if added:
                    self._datagrams += added
                    self._bytes_received += size
                    buffer.wake()
                if self._core.state is _DISCONNECTED:
                    # The peer seemed gone, and this task is not the agent's (a receiver, a
                    # further socket's reader, a check task): the agent task tells the core,
                    # once a batch, of the data queued or dropped (a sign of life all the same).
                    self._resume()
        return empty

    async def _receive_loop(self, transport: UdpTransport) -> None:
        """The reader of one socket, so that STUN is answered whether or not anyone reads
        data.  While a task is blocked in :meth:`Connection.receive`, that task waits on the
        socket and reads it itself (one task switch less per datagram); the reader steps
        aside and takes the socket back when the receiver leaves."""
        sock = transport.sock
        while not transport.closed:  # (a gathering anew closes the socket of an address gone)
            if not self._drain(transport):
                await trio.lowlevel.checkpoint()
                continue
            leased = transport.leased_until(self._now())
            if leased != -math.inf:
                # Leave the socket to receivers for as long as they keep coming back (a
                # receive loop does); take it back after a lease without one.  While one
                # waits on it, sleep until it lets go.
                while leased != -math.inf:
                    if leased == math.inf:
                        await transport.wait_released()
                    else:
                        await trio.sleep_until(leased)
                    leased = transport.leased_until(self._now())
                continue
            transport.reader_waiting = True
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                if transport.closed:
                    return
                # a receiver taking the socket (see UdpTransport.kick), or a nudge
            finally:
                transport.reader_waiting = False

    def _dispatch(self, transport: Transport, data: bytes, source: Address) -> None:
        """One datagram from ``source`` arrived on ``transport`` (used by relays, by UDP
        muxes, by a ``connect()`` or ``receive()`` that reads its socket itself; the UDP
        receive loop inlines the same steps)."""
        if data and data[0] < 4 and data[4:8] == STUN_MAGIC:
            self._on_stun(transport, data, source)
        elif self._core.is_remote_address(source, tcp=type(transport) is TcpTransport):
            buffer = self._buffer
            if source == self._lite_source:
                self._lite_data += 1
                self._lite_at = self._now()
            if buffer.closed:
                buffer.dropped += 1  # (ICE failed: no data is taken, RFC 7675)
            elif buffer.put(data):
                self._datagrams += 1
                self._bytes_received += len(data)
            if self._core.state is _DISCONNECTED:
                # The peer is back (its datagram queued, or dropped by a full buffer, a
                # sign of life all the same): the agent task tells the core.
                self._resume()
        else:
            self._unknown_source += 1
            if self._core.selected is not None:
                self._from_stranger(transport, source)

    def _from_stranger(self, transport: Transport, source: Address) -> None:
        """Data from ``source``, no remote candidate's address, on ``transport``: dropped,
        but a peer behind a NAT that mapped it anew may be there (see
        :meth:`AgentCore.on_stranger <trice.ice._core.AgentCore.on_stranger>`)."""
        now = self._now()
        if self._core.on_stranger(transport.base, source, now):
            self._pump(now)

    def _on_stun(self, transport: Transport, data: bytes, source: Address) -> None:
        if len(data) > MAX_STUN:
            # (No check or answer of ICE's comes near: a flood of big ones, each thousands of
            # attributes to decode, would cost a batch of reads a second of the run.)
            self._malformed += 1
            return
        try:
            message = stun.decode(data)
        except stun.StunDecodeError:
            self._malformed += 1
            return
        self._stun_received += 1
        now = self._now()
        cls = message.message_class
        if logger.isEnabledFor(TRACE):
            logger.log(
                TRACE,
                "%s: recv %s %s from %s",
                self._local.ufrag,
                getattr(message.method, "name", message.method),
                cls.name,
                host_port(*source[:2]),
            )
        if cls is stun.MessageClass.REQUEST or cls is stun.MessageClass.INDICATION:
            core = self._core
            if self._lite_at != -math.inf:
                # (An ICE-lite agent's data over the selected pair is told at the core's
                # next deadline; a check now must find it told: see AgentCore._maybe_follow.
                # Told twice, it counts once.)
                core.on_data(self._lite_at, selected=True)
            response = core.on_request(transport.base, source, message, now)
            tcp = type(transport) is TcpTransport
            if response is not None and (
                type(transport) is UdpTransport or tcp or core.is_remote_address(source)
            ):
                # Over a relay only a known peer is answered: each new peer address costs a
                # permission and a channel at the TURN server, and a stranger (a failed
                # check, or a peer-reflexive candidate past the cap) would use them up.
                # The ping-back this request asks for (made ahead) follows the answer as
                # closely as it can (the pump sends it), as Pion's triggered check follows
                # its answer: a peer that nominates on it then finds both in one read.
                self._ping_back_now_if_elsewhere(now)
                if (
                    isinstance(transport, TcpTransport)
                    and stun.peek_type(response) == _SUCCESS
                    and core.checklist.find(transport.base, source) is not None
                ):
                    # (A connection the peer opened stays once a check over it is accepted
                    # and a pair stands for it: one past the cap, or from a passive
                    # candidate's port, answered all the same, is closed unproven, as one
                    # that never checked.  Its data is held till the peer answers a check of
                    # ours over it, but by an ICE-lite agent, which sends none.)
                    transport.prove(source, answered=core.local.lite)
                transport.send_nowait(response, source)
            self._pump(now)
            return
        run = self._runs.get(message.transaction_id)
        if run is not None:
            run.on_response(message, source, now, transport)
            return
        if self._core.on_late_response(message, source, now, base=transport.base):
            self._pump(now)  # (an answer to a consent check past its RTO)
            return
        pending = self._pending
        if pending is not None:
            handler = pending.get(message.transaction_id)
            if handler is not None:
                handler(message, source)

    def _close(self) -> None:
        if self._closed:
            return
        self._core.close()
        self._pump()
        self._closed = True
        connection = self._connection
        if connection is not None:
            connection._reroute()
            # The connection keeps the agent (to say it is closed); the agent lets go of it,
            # so that a closed agent is freed as soon as nobody holds either, not at the
            # next collection of reference cycles.  (What it sent stays counted.)
            self._sent_total = (connection._datagrams_sent, connection._bytes_sent)
            self._connection = None
        self._buffer.close()
        for stream in list(self._subscribers or ()):
            stream._end()
        self._wake_change()
        if self._changed is not None:
            self._changed.set()


def open_agent(
    config: AgentConfig | None = None,
    *,
    controlling: bool,
    mux: UdpMux | TcpMux | Sequence[UdpMux | TcpMux] | None = None,
) -> AgentContext:
    """Open an ICE agent; it gathers at once and closes when the block ends.

    Use it as ``async with trice.open_agent(config, controlling=True) as agent:``.

    Args:
        config: an :class:`~trice.AgentConfig` (defaults if ``None``).
        controlling: the initial role (RFC 8445 §6.1.1).  An ICE-lite agent is always
            controlled; a full agent facing a lite one becomes controlling.
        mux: one or more :class:`~trice.UdpMux` (see :func:`~trice.open_udp_mux`) and
            :class:`~trice.TcpMux` (see :func:`~trice.open_tcp_mux`): the agent signals a
            host candidate at each UDP mux's address, and a passive ICE-TCP one at each TCP
            mux's, which it shares with the other agents of the mux, instead of binding
            host sockets of its own (the network filters and ``tcp_candidates`` then do not
            apply).  Its STUN servers are asked by the UDP mux, from the mux's socket, one
            request at a time for all the mux's agents (an answer is kept 25 s): the answer
            is the mux's server-reflexive address, a srflx candidate of the agent.
            Relayed candidates are gathered as usual.  Under the ``RELAY`` transport policy
            the muxes are not used.

    Leaving the block, or a cancellation anywhere in it, closes every socket and ends every
    task; the state becomes ``closed``.  An agent with TURN allocations deletes them first
    (RFC 8656 §8), shielded from cancellation: leaving then waits for the servers' answers,
    at most half a second, or from a far server two and a half round trips (as measured
    over UDP; 2 s at most).

    Raises:
        TypeError: ``config`` is not an :class:`~trice.AgentConfig` (or ``None``), or
            ``controlling`` is not a :class:`bool`.
        StateError: (on entering the block) a mux was opened in another trio run.
        ConfigError: ``NetworkConfig(udp=False)`` with a :class:`~trice.UdpMux`, or with
            neither ``tcp_candidates`` nor a :class:`~trice.TcpMux` (for an ICE-lite agent, a
            passive candidate) under a policy that gathers host candidates.

    Errors: an exception raised in the body propagates as itself (not wrapped in an
    exception group).  A failure inside the agent's own tasks (a bug, or
    :class:`~trice.LimitError` when file descriptors run out while gathering, a
    :class:`~trice.TriceError` when the interfaces cannot be read: an interface's name is
    not UTF-8, which ifaddr cannot read, or the system refuses) cancels the body and
    propagates as itself too (a group the task raised itself, whole); only several
    simultaneous failures come out as an :class:`ExceptionGroup`.
    """
    if config is None:
        config = AgentConfig()
    elif not isinstance(config, AgentConfig):
        # (Named by its type, never its repr: a W3C configuration holds credentials.)
        raise TypeError(f"open_agent takes a trice.AgentConfig or None, not {a_type(config)}")
    if not isinstance(controlling, bool):
        raise TypeError(f"open_agent's controlling is True or False, not {controlling!r}")
    muxes = () if mux is None else (mux,) if isinstance(mux, (UdpMux, TcpMux)) else tuple(mux)
    if not all(isinstance(m, (UdpMux, TcpMux)) for m in muxes):
        raise TypeError(
            f"open_agent's mux is a trice.UdpMux or trice.TcpMux, or a sequence of them, not "
            f"{mux!r}"
        )
    if not config.network.udp:
        _check_tcp_only(config, muxes)
    return AgentContext(config, controlling, muxes)


def _check_tcp_only(config: AgentConfig, muxes: tuple[UdpMux | TcpMux, ...]) -> None:
    """A :class:`~trice.ConfigError` where ``NetworkConfig(udp=False)`` leaves the agent no
    host candidate to gather (with a UDP mux, none that the mux could give)."""
    if any(isinstance(m, UdpMux) for m in muxes):
        raise ConfigError(
            "open_agent: a UDP mux for an agent that gathers no UDP candidate "
            "(NetworkConfig(udp=False))"
        )
    if config.transport_policy is TransportPolicy.RELAY or any(
        isinstance(m, TcpMux) for m in muxes
    ):
        return  # (relays only; a TCP mux's passive candidate)
    kinds = config.network.tcp_candidates
    if not kinds:
        raise ConfigError(
            "NetworkConfig(udp=False) gathers host candidates over TCP only: name them in "
            "tcp_candidates, or give the agent a TCP mux (for relay candidates alone, use "
            "TransportPolicy.RELAY)"
        )
    if config.lite and TcpType.PASSIVE not in kinds:
        raise ConfigError(
            "an ICE-lite agent opens no connection: with NetworkConfig(udp=False) it needs a "
            "passive ICE-TCP candidate (tcp_candidates=(TcpType.PASSIVE,)) or a TCP mux"
        )


class AgentContext:
    """What :func:`open_agent` returns: an async context manager that opens the agent's
    nursery on entry and yields the :class:`Agent`; the agent closes on exit.

    Made by :func:`open_agent`; not built directly.  It can be entered once (entering it
    again raises :class:`~trice.StateError`).

    A class, not an ``@asynccontextmanager`` generator (as trio's own nursery manager is):
    an open agent then holds no suspended generator, its frame and its wrapper, which with
    thousands of agents in a process is memory that counts.
    """

    __slots__ = ("_agent", "_config", "_controlling", "_joined", "_manager", "_muxes")

    def __init__(
        self, config: AgentConfig, controlling: bool, muxes: tuple[UdpMux | TcpMux, ...] = ()
    ) -> None:
        self._config = config
        self._controlling = controlling
        self._muxes = muxes
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._agent: Agent | None = None
        self._joined = False  # counted by the run's timer (see TimerHub.join)

    async def __aenter__(self) -> Agent:
        if self._manager is not None:
            raise StateError("an open_agent(...) context can be entered only once")
        # (Taken before the first wait, the warm-up's: another task entering meanwhile gets
        # StateError; it entered too, and the two nurseries were misnested.)
        manager = self._manager = open_block_nursery("open_agent")
        global _warm
        if not _warm:
            _warm = True
            warm_core()
            if hasattr(socket, "AF_UNIX"):  # (the shell's warm-up stands on a socket pair)
                try:
                    await _warm_shell()
                except BaseException:
                    _warm = False  # (cancelled: the next agent warms up; it fails no agent)
                    raise
        nursery = await manager.__aenter__()
        try:
            token = trio.lowlevel.current_trio_token()
            if any(mux._token not in (None, token) for mux in self._muxes):
                # (Its task would hand the agent what comes from its own run's thread.)
                raise StateError("the mux was opened in another trio run than this agent's")
            agent = self._agent = Agent(self._config, self._controlling, _key=_OPENING)
            # One nursery for all the agent's tasks (see the module docstring): a nursery
            # and a task fewer per agent than a task of its own owning a nursery would take.
            agent._nursery = nursery
            agent._hub.join(agent._local.ufrag)
            agent._timer_cell.sleeper = agent
            self._joined = True
            relay_only = self._config.transport_policy is TransportPolicy.RELAY
            for mux in () if relay_only else self._muxes:  # (before any task: see _attach)
                if isinstance(mux, TcpMux):
                    tcp = agent._share_tcp_mux(mux)
                    nursery.start_soon(tcp.run, name=f"tcp mux passive {mux.local_address[0]}")
                    continue
                share = MuxTransport(agent._new_base(), mux, agent._local.ufrag, agent._dispatch)
                share.hooks.failed = agent._mux_failed
                share.hooks.lost = agent._mux_lost
                share.hooks.refused = agent._kernel_refused
                share.hooks.pending = agent._core.awaits_answer
                share.answers_prove = self._config.lite
                agent._transports[share.base] = share
                agent._muxes += (share,)
            nursery.start_soon(agent._run, name=f"trice agent {agent.local_parameters.ufrag}")
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return agent

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:  # (not plain bool: type checkers would take it to swallow exceptions)
        manager = self._manager
        assert manager is not None, "__aexit__ without __aenter__"
        agent = self._agent
        try:
            if agent is not None:
                agent._close()
                agent._nursery.cancel_scope.cancel()
            return await exit_nursery(manager, exc_type, exc, tb)
        finally:
            if agent is not None:
                agent._timer_cell.sleeper = None  # (its entries in the timer's heap let go)
                if self._joined:
                    self._joined = False
                    agent._hub.leave(agent._local.ufrag)
                for transport in agent._transports.values():
                    transport.close()
                for tcp_mux, tcp in agent._tcp_shares:
                    tcp_mux._detach(tcp)
                if isinstance(agent._mdns, Mdns):
                    agent._mdns.close()
                # Its tasks are over: let go of what refers back to the agent (a relay's
                # delivery, the check runs on its timer heap, a UDP mux share's hooks), so
                # that nothing holds it in a reference cycle once the application drops it.
                agent._relays_at_close = agent.relay_statistics()
                for transport in agent._transports.values():
                    if type(transport) is UdpTransport:
                        agent._forget_socket(transport)
                agent._transports = {}
                agent._timers = []
                for share in agent._muxes:
                    share.hooks = MuxHooks()
                    share.deliver = _deliver_nothing
                agent._muxes = ()


def _deliver_nothing(transport: MuxTransport, data: bytes, source: Address) -> None:
    """A closed agent's mux share: nothing is delivered (see ``AgentContext.__aexit__``)."""


def _named(candidate: Candidate, mdns: Mdns | None) -> Candidate | None:
    """``candidate`` as signalled under :attr:`MdnsMode.QUERY_AND_GATHER`: a host candidate
    under a ``.local`` name of its own, or ``None`` if its name would be answered on no
    link, or mDNS could not be opened at all (which a warning said): the draft has such a
    candidate not signalled rather than its address shown, and a process that holds port
    5353 to itself must not unmask the addresses.  Other candidates are left as they are
    (their related address is hidden by the caller)."""
    if candidate.type is not CandidateType.HOST:
        return candidate
    if mdns is None:
        return None
    name = mdns.name(candidate.address)
    if mdns.responder.link(name) is None:
        return None
    return dataclasses.replace(candidate, address=name)


async def warm_up(rounds: int = 3) -> bool:
    """Connect two throwaway agents to each other on loopback, ``rounds`` times, and pass a
    few datagrams each way; then close them.

    A fresh Python process runs each piece of code slowly the first few times, until the
    interpreter has specialised it: a process's first connection costs some 0.3-0.5 ms more
    than later ones (``bench/connect_time.py`` on the development machine, two processes:
    1.1-1.4 ms cold, 0.8-0.9 ms after this).  An application for which its very first
    connection must be fast may call this once at start-up, to pay that ahead (it takes
    5-15 ms).  trice itself never calls it: it opens sockets, on 127.0.0.1 only, and nothing
    leaves the machine.

    Args:
        rounds: connections to make, one after the other (1 to 1000).

    Returns:
        whether the warm-up connected (``False`` without an IPv4 loopback address, or if
        it did not finish within ``rounds`` seconds); it never raises for that.

    Raises:
        ConfigError: ``rounds`` is not a whole number from 1 to 1000 (a
            :class:`ValueError` too).
        UsageError: no trio run is going on (under asyncio, say).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 1000:
        raise ConfigError(
            f"warm_up needs a whole number of rounds from 1 to 1000, not {rounds!r:.40}"
        )
    require_trio("warm_up")
    network = NetworkConfig(
        ip_filter=lambda address: address.is_loopback, include_loopback=True, ipv6=False
    )
    config = AgentConfig(network=network)
    with trio.move_on_after(float(rounds)):
        for _ in range(rounds):
            async with (
                open_agent(config, controlling=True) as a,
                open_agent(config, controlling=False) as b,
            ):
                await a.wait_gathering_complete()
                await b.wait_gathering_complete()
                if not a.local_candidates or not b.local_candidates:
                    return False
                introduce(a, b)
                first, second = await _connect_both(a, b)  # (in the order they connected)
                if first is None or second is None:
                    return False
                for i in range(4):
                    await first.send(b"\x80warm %d" % i)
                    await second.receive()
                    await second.send(b"\x80warm %d" % i)
                    await first.receive()
        return True
    return False


#: How long the shell's warm-up may take at most, in seconds (it takes a few milliseconds).
_WARM_SHELL_LIMIT = 0.5


async def _warm_shell(rounds: int = 3) -> None:
    """Connect two throwaway agents to each other, within the process, ``rounds`` times:
    once per process, when its first agent opens.

    :func:`~trice.ice._core.warm_core` warms the pure core; this warms the shell's own paths
    (the agent task reading its socket, checks as tasks, events, ``connect``), which a fresh
    process otherwise runs cold in its first real connection, at some 0.2-0.3 ms more
    (``bench/connect_time.py``, two processes); its last round as against a peer in
    another process (``connect`` reading the socket itself, the controlled agent pinging
    back at once), the paths of every such connection.  The agents gather nothing; each
    stands on one end of an ``AF_UNIX`` socket pair that passes for a UDP socket
    (:class:`~trice._trio._transport.PairedSocket`) with a documentation address (RFC 5737):
    the agent task's socket reads and sends run the same code as over a UDP socket (on a
    stand-in one), and nothing goes over any network.  It never fails the agent being
    opened: any error ends it early (logged at debug level)."""
    network = NetworkConfig(interface_filter=_no_interface)
    # Named ufrags, so that the throwaway agents' lines in a debug or trace log say what
    # they are (their passwords are random).
    configs = (
        AgentConfig(network=network, ufrag="warmupA"),
        AgentConfig(network=network, ufrag="warmupB"),
    )
    logger.debug("warming up: two throwaway agents connect over a local socket pair")
    # Their own lines (some fifty at TRACE) would only bury the application's first agents
    # in a debug log: this one line says that the warm-up ran.
    logger.addFilter(_not_warming_up)
    try:
        with trio.move_on_after(_WARM_SHELL_LIMIT):
            for i in range(rounds):
                # The last round as against a peer in another process (see
                # _warm_shell_once): the paths a connection between two processes takes.
                await _warm_shell_once(*configs, elsewhere=i == rounds - 1)
    except Exception as exc:  # (a bug here must not stop anyone's agent from opening)
        logger.debug("the shell's warm-up stopped: %r", exc)
    finally:
        logger.removeFilter(_not_warming_up)


#: Why a remote candidate was left out (``Agent._left_out``'s reasons, as bits).
_NO_DESTINATION, _OTHER_GENERATION, _MDNS_OFF, _NO_ANSWER, _PAST_THE_CAP = 1, 2, 4, 8, 16
_SEND_REFUSED = 32  # (not a left-out candidate's: see Agent._kernel_refused)
_HELD_EARLY = 64  # (held, not left out: see Agent._take_remote)
_OTHER_COMPONENT = 128

_WARM_UFRAGS = frozenset({"warmupA", "warmupB"})
_HEARD = (ConnectionState.CONNECTED, ConnectionState.COMPLETED)


def _not_warming_up(record: logging.LogRecord) -> bool:
    """A logging filter: drop the lines of the warm-up's throwaway agents (each starts with
    the agent's ufrag)."""
    args = record.args
    return not (
        isinstance(args, tuple) and args and isinstance(args[0], str) and args[0] in _WARM_UFRAGS
    )


def _no_interface(name: str) -> bool:
    return False


async def _warm_shell_once(
    config_a: AgentConfig, config_b: AgentConfig, *, elsewhere: bool = False
) -> None:
    async with (
        open_agent(config_a, controlling=True) as a,
        open_agent(config_b, controlling=False) as b,
    ):
        await a.wait_gathering_complete()  # (nothing to gather)
        await b.wait_gathering_complete()
        ends = paired_sockets(("192.0.2.1", 9), ("192.0.2.2", 9))
        # Each agent closes its end when it closes: registered first, so nothing can leak.
        transports = []
        for agent, sock in zip((a, b), ends, strict=True):
            # (a PairedSocket has what UdpTransport uses of a socket, not all of its type)
            transport = UdpTransport(agent._new_base(), sock)  # type: ignore[arg-type]
            agent._transports[transport.base] = transport
            transports.append(transport)
        for agent, transport in zip((a, b), transports, strict=True):
            agent._adopt_socket(transport, transport.local_address[0])
            agent._time_came()  # the agent task, parked without a socket, takes it up
            agent._add_local(
                host_candidate(transport.local_address, 0, key=agent._key),
                transport.base,
                signal=True,
            )
        introduce(a, b)
        if elsewhere:
            # Each takes the other for a peer in another process, as against a real peer:
            # connect() reads the socket itself (_read_until_change), the controlled agent
            # pings back at once.  (Kept until an agent of the run opens or closes: see
            # _peer_elsewhere.)
            for agent in (a, b):
                agent._elsewhere = True
                agent._elsewhere_seen = agent._hub.roster
        await _connect_both(a, b)
        # No data: the data path warms up in its first milliseconds of real use.


def introduce(a: Agent, b: Agent) -> None:
    """Signaling within one process: each agent gets the other's parameters and candidates,
    then end-of-candidates (used by :func:`warm_up` and ``trice demo``)."""
    for here, there in ((a, b), (b, a)):
        params = there.local_parameters
        here.set_remote_parameters(params.ufrag, params.pwd, lite=params.lite)
        for candidate in there.local_candidates:
            here.add_remote_candidate(candidate)
        here.add_remote_candidate(None)


async def _connect_both(a: Agent, b: Agent) -> list[Connection | None]:
    """Connect two agents introduced to each other; their connections in the order they
    came (``None`` for an agent whose ICE failed)."""
    connections: list[Connection | None] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_connect_into, a, connections)
            nursery.start_soon(_connect_into, b, connections)
    except BaseExceptionGroup as group:
        raise_alone(group)  # (a KeyboardInterrupt, say: as itself, out of open_agent too)
    return connections


async def _connect_into(agent: Agent, connections: list[Connection | None]) -> None:
    try:
        connections.append(await agent.connect())
    except IceFailedError:
        connections.append(None)


def _peer_text(text: str | None) -> str:
    """A ufrag the peer signalled, as a log line shows it: its control characters written
    out (it could otherwise drive the terminal that shows the log, or forge a line)."""
    return "None" if text is None else printable(text)
