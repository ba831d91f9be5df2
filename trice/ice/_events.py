"""States, their transition tables, and the events an agent emits.

Pure data.  The tables are what the agent enforces *and* what the docs draw, so the diagrams
cannot drift from the code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from trice.ice._candidate import Candidate

__all__ = [
    "CONNECTION_TRANSITIONS",
    "GATHERING_TRANSITIONS",
    "CandidateGathered",
    "CandidatePair",
    "ConnectionState",
    "ConnectionStateChanged",
    "Event",
    "EventsLost",
    "GatheringState",
    "GatheringStateChanged",
    "SelectedPairChanged",
]


class GatheringState(str, enum.Enum):
    """Where local candidate gathering stands (as W3C's RTCIceGatheringState)."""

    NEW = "new"
    GATHERING = "gathering"
    COMPLETE = "complete"


class ConnectionState(str, enum.Enum):
    """The agent's connection state: the seven states of Pion's ``ICEConnectionState``.

    ``checking`` once checks may begin: the peer's parameters known and ``connect()``
    called (or the peer's first check come), a pair to check or not yet (Pion's agent is
    checking from its ``Dial``/``Accept``; W3C waits for a remote candidate); ``connected``
    once a pair is selected; ``completed``
    once, besides, no check is left to wait for: a controlling agent that nominates
    regularly is there at once, its own nomination being final (its checks still in flight
    on other pairs are cancelled, RFC 8445 §8.1.2); a controlled agent, which follows the
    peer's nominations, once its own checks are all answered or given up; an ICE-lite
    agent, which makes no checks, as soon as it has selected a pair (RFC 8445 §8.2).  A
    check that comes after ``completed`` (a peer-reflexive address learned late: the peer's
    ICE-TCP connection, say) may select a pair again: an agent that nominates aggressively,
    a controlling one too, then goes back through ``connected`` to ``completed``, as a
    controlled agent does that follows the peer to another nominated pair.  Unlike W3C's
    ``completed``, it does not wait for the peer's end-of-candidates: a candidate trickled
    after it forms pairs that a controlling agent with regular nomination never checks (its
    nomination is final, RFC 8445 §8.1.1) and a controlled agent checks only once the
    peer's check on one of them comes; they stay ``waiting`` in
    :meth:`~trice.Agent.pair_statistics`.
    ``disconnected`` while the peer is not heard (an answer or a check on the selected
    pair, or data from any of its addresses: see the design notes), and for a controlled
    agent that a NAT mapped anew, while the peer's checks and data go to the forgotten
    mapping (answers to its own checks, which come, do not count then); ``failed`` when no
    pair works, or consent expired (RFC 7675); ``closed`` when the agent closed.
    """

    NEW = "new"
    CHECKING = "checking"
    CONNECTED = "connected"
    COMPLETED = "completed"
    FAILED = "failed"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


_G = GatheringState
_C = ConnectionState

#: Allowed gathering transitions (anything may also stay where it is).  ``complete`` goes
#: back to ``gathering`` only by an ICE restart that gathers anew (``restart(regather=True)``).
GATHERING_TRANSITIONS: Mapping[GatheringState, frozenset[GatheringState]] = {
    _G.NEW: frozenset({_G.GATHERING}),
    _G.GATHERING: frozenset({_G.COMPLETE}),
    _G.COMPLETE: frozenset({_G.GATHERING}),
}

#: Allowed connection-state transitions.  ``closed`` can be reached from every state, and
#: ``checking`` from every state but ``new`` and ``closed`` by an ICE restart (and only so
#: from ``connected``, ``completed``, ``disconnected`` and ``failed``).
CONNECTION_TRANSITIONS: Mapping[ConnectionState, frozenset[ConnectionState]] = {
    _C.NEW: frozenset({_C.CHECKING, _C.CONNECTED, _C.FAILED, _C.CLOSED}),
    _C.CHECKING: frozenset({_C.CONNECTED, _C.FAILED, _C.CLOSED}),
    _C.CONNECTED: frozenset({_C.CHECKING, _C.COMPLETED, _C.DISCONNECTED, _C.FAILED, _C.CLOSED}),
    _C.COMPLETED: frozenset({_C.CHECKING, _C.CONNECTED, _C.DISCONNECTED, _C.FAILED, _C.CLOSED}),
    _C.DISCONNECTED: frozenset({_C.CHECKING, _C.CONNECTED, _C.COMPLETED, _C.FAILED, _C.CLOSED}),
    _C.FAILED: frozenset({_C.CHECKING, _C.CLOSED}),
    _C.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class CandidatePair:
    """A local and a remote candidate that ICE found to work together.

    Attributes:
        local: the local candidate, as the agent holds it (a server-reflexive or
            peer-reflexive candidate when a NAT sits in between, RFC 8445 §7.2.5.3.2).
            Where what is signalled hides something (an mDNS name for a host candidate, a
            related address left unspecified under a transport policy), this is not the
            signalled candidate: it shows the address and the related address, for this
            side's own view (:doc:`/guide/nats`, :doc:`/guide/mdns`).  Pass on what
            :attr:`Agent.local_candidates <trice.Agent.local_candidates>` holds instead.
        remote: the peer's candidate.
    """

    local: Candidate
    remote: Candidate


@dataclass(frozen=True, slots=True)
class CandidateGathered:
    """A local candidate was gathered; signal it to the peer (trickle ICE, RFC 8838).

    Attributes:
        candidate: the candidate, as the peer is to see it.
        url: the URL of the STUN or TURN server that gave it, written out
            (``str(ServerUrl)``: ``"turn:203.0.113.5:3478?transport=udp"``), as the W3C's
            ``RTCPeerConnectionIceEvent.url``; ``None`` for a host candidate and for one a
            1:1 NAT's configured address gave (``NetworkConfig.external_addresses``).
        relay_protocol: for a relayed candidate, how the agent reaches its TURN server:
            ``"udp"``, ``"tcp"`` or ``"tls"`` (the W3C's ``relayProtocol``); ``None`` for
            the others.
    """

    candidate: Candidate
    url: str | None = None
    relay_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class GatheringStateChanged:
    """Gathering moved to ``state``; ``complete`` means: signal end-of-candidates."""

    state: GatheringState


@dataclass(frozen=True, slots=True)
class ConnectionStateChanged:
    """The connection state moved to ``state``."""

    state: ConnectionState


@dataclass(frozen=True, slots=True)
class SelectedPairChanged:
    """A (new) pair was selected for data: the first, and after it a nominated pair of
    higher priority, or, on a controlled agent, the nominated pair that the controlling
    agent's checks come on once the selected pair went quiet (see the design page,
    "Following the controlling agent").  Sends follow the selected pair.  Said again, for
    the same path, when a candidate takes the place of a peer-reflexive one in it (RFC 8838
    §11.4): one the peer signalled, which its check had taught first (a ``.local`` name
    resolved after the pair was selected, say), then named in ``pair.remote``; or a
    server-reflexive one gathered after a check found its address, then named in
    ``pair.local``.  Never once ICE is over, nor for the pair of before an ICE restart that
    carries data until the new checks select one (the peer-reflexive candidates are the old
    generation's: it keeps their names)."""

    pair: CandidatePair


@dataclass(frozen=True, slots=True)
class EventsLost:
    """This subscriber fell ``count`` events behind its buffer; those events were dropped.

    Never emitted silently: a subscriber that reads too slowly learns it lost events, and can
    read the current state from the agent.
    """

    count: int


#: Every event an agent emits: a closed union, so ``match`` with ``assert_never`` works.
Event: TypeAlias = (
    CandidateGathered
    | GatheringStateChanged
    | ConnectionStateChanged
    | SelectedPairChanged
    | EventsLost
)
