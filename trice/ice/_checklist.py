"""The check list: pair formation, pruning, ordering, foundations and pair states.

RFC 8445 §6.1.2 (forming the check list) and §6.1.4.2 (choosing the next ordinary check).
Pure: no trio, no sockets, no clock.  The agent core (``_core.py``) drives it.
"""

from __future__ import annotations

import bisect
import enum
import functools
import ipaddress
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from trice.ice._candidate import Candidate, CandidateType, TcpType, canonical_ip
from trice.ice._events import CandidatePair
from trice.ice._priority import is_link_local, pair_priority

__all__ = ["CheckList", "Pair", "PairState", "PairStatistics"]


class PairState(str, enum.Enum):
    """Candidate pair states (RFC 8445 §6.1.2.6)."""

    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: Pair-state transitions the agent makes (the docs draw this table; a test drives the core
#: through many runs and checks every change against it).
PAIR_TRANSITIONS: dict[PairState, frozenset[PairState]] = {
    PairState.FROZEN: frozenset({PairState.WAITING, PairState.SUCCEEDED, PairState.FAILED}),
    PairState.WAITING: frozenset(
        {PairState.IN_PROGRESS, PairState.FROZEN, PairState.SUCCEEDED, PairState.FAILED}
    ),
    PairState.IN_PROGRESS: frozenset({PairState.SUCCEEDED, PairState.FAILED, PairState.WAITING}),
    PairState.SUCCEEDED: frozenset({PairState.IN_PROGRESS, PairState.FAILED}),
    PairState.FAILED: frozenset({PairState.WAITING}),
}


# The members as module constants for the code below: on CPython 3.11 reading an enum member
# off its class (``PairState.WAITING``) costs ~90 ns, a global ~10 ns, and the check list's
# loops test the state of every pair.
_FROZEN: Final = PairState.FROZEN
_WAITING: Final = PairState.WAITING
_IN_PROGRESS: Final = PairState.IN_PROGRESS
_SUCCEEDED: Final = PairState.SUCCEEDED
_FAILED: Final = PairState.FAILED
_HOST: Final = CandidateType.HOST
_SRFLX: Final = CandidateType.SRFLX
_RELAY: Final = CandidateType.RELAY
#: "Never yet", as a time (one float for every pair: ``-math.inf`` written out makes a new
#: one at each use, 24 bytes a slot).
_NEVER: Final = -math.inf


#: Ranges that the inside of a NAT uses (RFC 1918, RFC 6598's shared space, link-local, RFC
#: 4193's unique local, loopback): a path to such an address may not go through the NAT that a
#: path to a public one went through (see ``CheckList.pending_above``).
_INSIDE: Final = tuple(
    ipaddress.ip_network(prefix)
    for prefix in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)


@functools.lru_cache(maxsize=4096)
def _inside(address: str) -> bool:
    """Whether ``address`` is in a range that NATs have inside (see ``_INSIDE``)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in _INSIDE)


def family(address: str) -> int:
    """6 for an IPv6 literal, 4 otherwise (names never pair: see :meth:`CheckList.pairable`)."""
    return 6 if ":" in address else 4


@dataclass(frozen=True, slots=True)
class PairStatistics:
    """Counters and round-trip times of one candidate pair: a snapshot (see
    :meth:`trice.Agent.pair_statistics`).  The names follow the W3C's
    ``RTCIceCandidatePairStats``.

    Attributes:
        pair: the pair as :attr:`trice.Connection.selected_pair` gives it (``local`` is the
            candidate the peer sees, once a check succeeded).
        state: its state in the check list (RFC 8445 §6.1.2.6).  Once ICE is over (failed,
            or the agent closed) the states stay as they were: a pair still being checked
            then says ``in-progress``.
        nominated: the pair is nominated.
        selected: the pair is the one :attr:`trice.Agent.selected_pair` names: the one data
            goes over (during an ICE restart, the one selected before, until the new checks
            select one, and listed beside their pairs, which may join the same two
            candidates), or if none does, the last one selected.
        checks_sent: connectivity checks the agent started on it, consent checks included
            (each may be transmitted more than once).
        requests_received: the peer's checks on it that the agent took in: authenticated,
            and while ICE runs (not one refused for a role conflict).
        responses_received: authenticated answers to the agent's checks on it, errors
            included, and a consent check's answer that came after its RTO; not an answer
            to a check that a newer check of the pair replaced.
        round_trip_time: the latest round trip that a check measured, in seconds, or
            ``None`` before the first.  A full agent's consent checks on the selected pair
            (RFC 7675, every ``keepalive_interval`` seconds, or every half
            ``disconnected_timeout`` if that is shorter) keep it current.  An ICE-lite agent
            sends no checks, so it measures none.
        total_round_trip_time: the sum of all the round trips measured, in seconds.
        round_trip_time_samples: how many were measured: ``total_round_trip_time /
            round_trip_time_samples`` is the mean.  (Not the W3C's ``totalRoundTripTime /
            responsesReceived``: ``responses_received`` also counts the answers that are not
            timed, below, and that quotient would read low.)
        last_check_sent: when the agent started its latest check on the pair (consent's
            included; over a relay or an ICE-TCP connection still being set up, it goes a
            little later), or ``None`` before the first: a time of the agent's clock,
            :func:`trio.current_time` (another shell's core is on the clock it is given),
            as are the two below.
        last_request_received: when the latest of the peer's checks on it came (one that
            ``requests_received`` counts), or ``None``.
        last_response_received: when the latest answer to the agent's checks on it came (one
            that ``responses_received`` counts: an error answer too), or ``None``.  On a full
            agent's selected pair, ``trio.current_time() - last_response_received`` is how
            long the peer has left its checks unanswered; its consent (RFC 7675) runs out,
            and the connection fails, once no check sent in the last
            ``Timing.failed_timeout`` has had a success answer.

    A round trip runs from when the agent started the check to its answer.  Only an answer
    to a check that went once is timed: when a check was sent again, the answer may be to
    either copy (Karn's rule), so it is counted but not timed, and so is one read after the
    time a copy was due (the agent's own loop stalled).  Over a TURN relay, the
    first check to a new peer address waits for the server's permission (one more round
    trip to the server), and its figure includes that wait; the next check's does not.  So
    does the first check over an ICE-TCP connection the agent opens: it includes the
    connection's handshake.  Error answers, and answers from another address than the
    check went to, are counted but not timed either.
    """

    pair: CandidatePair
    state: PairState
    nominated: bool
    selected: bool
    checks_sent: int
    requests_received: int
    responses_received: int
    round_trip_time: float | None
    total_round_trip_time: float
    round_trip_time_samples: int
    last_check_sent: float | None
    last_request_received: float | None
    last_response_received: float | None


class Pair:
    """One candidate pair of the check list (mutable, compared by identity).

    Attributes:
        local: the local candidate checks are sent for (host, relay, or srflx under NOHOST).
        remote: the remote candidate.
        base: the id of the local transport (socket or relay) that sends from ``local``.
        foundation: pair foundation, the local and remote foundations joined.
        priority: pair priority (RFC 8445 §6.1.2.3), recomputed on a role change.
        state: a :class:`PairState`.
        valid_local: the local candidate the peer saw (mapped address), once it succeeded.
        valid_priority: the priority of the valid pair (RFC 8445 §7.2.5.3.2): the pair's
            priority with ``valid_local`` in place of ``local``, which is lower when the peer
            saw a peer-reflexive or server-reflexive address (a NAT's, or a TCP connection's
            own port).  Which valid pair is nominated or selected goes by it, so that both
            agents rank a path alike: the peer ranks it by the candidate it saw, too.  Equal
            to ``priority`` until a check succeeds.
        nominated: the pair is nominated (RFC 8445 §8.1).
        nominate_on_success: controlled agent saw USE-CANDIDATE before the pair succeeded.
        transaction: the transaction id of the check in flight, if any.
        peer_checked: the peer has sent a check on this pair.
        pingback_at: when the controlled agent pings back on this pair if no nomination has
            come by then (see :meth:`trice.ice._core.AgentCore.on_timer`).
        pinged_back: a controlled agent has sent the peer its one ping-back on this pair.
        resent: the transaction of the check in flight that the core has already asked the
            shell to send again (see :meth:`trice.ice._core.AgentCore.poll_resend`), if any.
        checks_sent, requests_received, responses_received, rtt, rtt_total, rtt_samples:
            what :class:`PairStatistics` reports.
        sent_at, answered_at: when the latest check on the pair started, and its latest
            answer came (``-inf``: never).
        proven_at: when the latest of our checks on the pair that had a success answer
            started (``-inf``: none had): the consent it gives runs from then (RFC 7675).
    """

    __slots__ = (
        "answered_at",
        "base",
        "checks_sent",
        "data_in_gap",
        "foundation",
        "heard_at",
        "heard_gap",
        "heard_tid",
        "left_at",
        "local",
        "nominate_on_success",
        "nominated",
        "paced_at",
        "peer_checked",
        "pingback_at",
        "pinged_back",
        "priority",
        "proven_at",
        "remote",
        "requests_received",
        "resent",
        "responses_received",
        "rtt",
        "rtt_samples",
        "rtt_total",
        "sent_at",
        "state",
        "transaction",
        "valid_local",
        "valid_priority",
    )

    def __init__(self, local: Candidate, remote: Candidate, base: int, priority: int) -> None:
        self.local = local
        self.remote = remote
        self.base = base
        self.foundation = f"{local.foundation}:{remote.foundation}"
        self.priority = self.valid_priority = priority
        self.state = _FROZEN
        self.valid_local: Candidate | None = None
        self.nominated = False
        self.nominate_on_success = False
        self.transaction: bytes | None = None
        self.resent: bytes | None = None
        self.peer_checked = False
        self.heard_at = _NEVER  # when the peer's last check on this pair came
        self.heard_gap = 0.0  # how long after the one before it
        self.heard_tid = b""  # its transaction id
        self.paced_at = _NEVER  # when that transaction's first copy came
        self.left_at = _NEVER  # when another pair was last selected in its place
        self.data_in_gap = False  # (a lite agent's: data came in that gap, see heard)
        self.pinged_back = False
        self.pingback_at = 0.0
        self.checks_sent = 0
        self.requests_received = 0
        self.responses_received = 0
        self.rtt: float | None = None
        self.rtt_total = 0.0
        self.rtt_samples = 0
        self.sent_at = self.answered_at = self.proven_at = _NEVER

    @property
    def remote_address(self) -> tuple[str, int]:
        return (self.remote.address, self.remote.port)

    def public(self) -> CandidatePair:
        """The pair as the user sees it: ``local`` is the candidate the peer sees, once a
        check succeeded (a peer-reflexive one, say)."""
        return CandidatePair(local=self.valid_local or self.local, remote=self.remote)

    def rank(self, controlling: bool) -> None:
        """Compute ``priority`` and ``valid_priority`` again (RFC 8445 §6.1.2.3), from the
        point of view of an agent of this role."""
        self.priority = compute_pair_priority(self.local, self.remote, controlling)
        valid = self.valid_local
        self.valid_priority = (
            self.priority
            if valid is None or valid is self.local
            else compute_pair_priority(valid, self.remote, controlling)
        )

    def heard(self, now: float, tid: bytes, floor: float, *, data_since: float = -math.inf) -> None:
        """A check of the peer's on the pair came at ``now``, transaction ``tid``; the gap
        since the one before is its pace, ``floor`` at least (the agent waits its own
        consent interval at least: checks closer than that, the first burst of them, say,
        bring the pace down to it, after an outage that had set it long).  A copy of the
        check before (its retransmission, the peer not having had our answer) sets no pace.
        ``data_since``: when data last came (an ICE-lite agent's): data since the check
        before marks the gap (``data_in_gap``), whose pace then says nothing of how far
        apart the peer's checks come when idle; a later gap without data clears it.  Gaps
        run from each transaction's first copy (``paced_at``): a late copy, which moves
        ``heard_at``, does not shorten the next."""
        data = data_since > self.paced_at
        if tid != self.heard_tid:
            if self.paced_at != -math.inf:
                self.heard_gap = max(now - self.paced_at, floor)
                self.data_in_gap = data
            self.paced_at = now
            self.heard_tid = tid
        elif data:
            self.data_in_gap = True
        self.heard_at = now

    def timed(self, rtt: float) -> None:
        """A check on the pair measured a round trip of ``rtt`` seconds."""
        rtt = max(rtt, 0.0)  # (a clock that a test sets by hand)
        self.rtt = rtt
        self.rtt_total += rtt
        self.rtt_samples += 1

    def statistics(self, *, selected: bool) -> PairStatistics:
        """A snapshot of the pair's counters (``selected``: it is the selected pair)."""
        return PairStatistics(
            pair=self.public(),
            state=self.state,
            nominated=self.nominated,
            selected=selected,
            checks_sent=self.checks_sent,
            requests_received=self.requests_received,
            responses_received=self.responses_received,
            round_trip_time=self.rtt,
            total_round_trip_time=self.rtt_total,
            round_trip_time_samples=self.rtt_samples,
            last_check_sent=_time(self.sent_at),
            last_request_received=_time(self.heard_at),
            last_response_received=_time(self.answered_at),
        )

    def __repr__(self) -> str:
        return (
            f"<Pair {self.local.address}:{self.local.port} ({self.local.type.value}) -> "
            f"{self.remote.address}:{self.remote.port} ({self.remote.type.value}) "
            f"{self.state.value}{' nominated' if self.nominated else ''}>"
        )


def compute_pair_priority(local: Candidate, remote: Candidate, controlling: bool) -> int:
    """RFC 8445 §6.1.2.3, from the point of view of the agent that holds ``local``."""
    if controlling:
        return pair_priority(local.priority, remote.priority)
    return pair_priority(remote.priority, local.priority)


#: The sort key of :meth:`CheckList._sort` (made once, not per sort).
_PRIORITY = operator.attrgetter("priority")
_STATE = operator.attrgetter("state")


def _descending(pair: Pair) -> int:
    """The key :meth:`CheckList.add` bisects the pairs by (highest priority first)."""
    return -pair.priority


#: A check list of more pairs than this indexes them by base and remote address; a shorter one
#: (most are: one to a few pairs) finds a pair by scanning, which is as fast and spares the
#: index (a dict and a key per pair, some 300 bytes an agent).
INDEX_FROM = 8

_Key = tuple[int, str, int]


class CheckList:
    """The pairs of one data stream, highest priority first (RFC 8445 §6.1.2).

    Args:
        max_pairs: cap on pairs; past it the lowest-priority pairs not yet checked are pruned
            (RFC 8445 §6.1.2.5).
    """

    __slots__ = (
        "_index",
        "_pairs",
        "_unchecked",
        "mapped_elsewhere",
        "max_pairs",
        "pruned",
        "selected",
    )

    def __init__(self, *, max_pairs: int) -> None:
        #: Highest priority first.  A tuple, made anew when pairs come or go or priorities
        #: change (rare, and there are few pairs): smaller than a list, and shared while empty.
        self._pairs: tuple[Pair, ...] = ()
        #: ``(base, remote address, remote port)`` to pair, once there are more than
        #: ``INDEX_FROM`` pairs (``None`` before: :meth:`find` scans ``_pairs``).
        self._index: dict[_Key, Pair] | None = None
        self.max_pairs = max_pairs
        self.pruned = 0  # (pairs pruned, the ICE restarts' too: carried over by the core)
        #: The agent's selected pair (set by the core), never pruned: nominated, and it may
        #: have failed (its re-nomination after a role switch, say, timed out).
        self.selected: Pair | None = None
        #: The paths (base, remote address) of this list's pairs pruned before any check
        #: of theirs, and not formed again since (see :attr:`unchecked`).
        self._unchecked: set[_Key] | None = None
        #: Whether a pair of this list ever succeeded with another local candidate than
        #: its own (set by the core): until one has, no pair is taken to be seen through
        #: a NAT, and :meth:`_seen_through` walks no pairs to say so.
        self.mapped_elsewhere = False

    def __iter__(self) -> Iterator[Pair]:
        return iter(self._pairs)

    @property
    def unchecked(self) -> int:
        """How many pairs the cap pruned before any check of theirs, whose path no pair
        formed since stands for (one the peer's check brought back is checked)."""
        return 0 if self._unchecked is None else len(self._unchecked)

    def __len__(self) -> int:
        return len(self._pairs)

    def find(self, base: int, address: tuple[str, int]) -> Pair | None:
        """The pair that sends from ``base`` to ``address``, if any."""
        index = self._index
        if index is not None:
            return index.get((base, address[0], address[1]))
        host, port = address
        for pair in self._pairs:
            remote = pair.remote
            if remote.port == port and pair.base == base and remote.address == host:
                return pair
        return None

    @staticmethod
    def pairable(local: Candidate, remote: Candidate) -> bool:
        """Same component, same transport protocol, same IP family (RFC 8445 §6.1.2.2).

        Over TCP (RFC 6544 §6.2) a local active candidate pairs with a remote passive one,
        and simultaneous-open with simultaneous-open.  A local passive candidate pairs only
        with the peer-reflexive active candidate of a connection the peer opened (learned
        from its check, RFC 6544 §7.2): it opens no connection, so checks from it go only
        over one that the peer opened.

        Only IP literals pair: host names (mDNS ``.local`` names among them) are not paired
        until resolved; and an IPv6 link-local address only with a link-local one (§6.1.2.2:
        a check from one to a global address, or back, cannot be routed).
        """
        if local.component != remote.component:
            return False
        protocol = local.protocol
        if protocol != remote.protocol:
            return False
        if protocol != "udp" and not _tcp_pairable(local, remote):
            return False
        if canonical_ip(remote.address) is None:
            return False
        if family(local.address) != family(remote.address):
            return False
        # (An IPv6 link-local address pairs only with a link-local one: §6.1.2.2.  Not
        # IPv4's 169.254/16: a host reaches any address of its link from one, RFC 3927
        # §2.6.2, a zeroconf host one that DHCP numbered.)
        if ":" not in local.address:
            return True
        return is_link_local(local.address) == is_link_local(remote.address)

    def add(
        self,
        local: Candidate,
        remote: Candidate,
        base: int,
        *,
        controlling: bool,
        keep: bool = False,
    ) -> Pair | None:
        """Form a pair, unless it is redundant or pruned; return the pair that stands for it.

        A pair with the same base and remote address as an existing one is redundant (RFC 8445
        §6.1.2.4): the one with the higher priority is kept.  With ``keep`` (a pair that the
        peer's check asks for, RFC 8445 §7.3.1.4) the new pair is never the one pruned.
        """
        if not self.pairable(local, remote):
            return None
        priority = compute_pair_priority(local, remote, controlling)
        existing = self.find(base, (remote.address, remote.port))
        if existing is not None:
            if priority > existing.priority and (
                existing.state is _FROZEN or existing.state is _WAITING
            ):
                existing.local = local
                existing.remote = remote
                existing.valid_local = None
                existing.priority = existing.valid_priority = priority
                existing.foundation = f"{local.foundation}:{remote.foundation}"
                self._sort()
            return existing
        pair = Pair(local, remote, base, priority)
        unchecked = self._unchecked
        if unchecked is not None:
            unchecked.discard(_key(pair))  # (its path is in the list again)
        # Waiting (RFC 8838 §12) if it is the highest-priority pair of its foundation, or
        # if a pair of the foundation succeeded; frozen otherwise.
        foundation = pair.foundation
        top = True
        for other in self._pairs:
            if other.foundation == foundation:
                if other.state is _SUCCEEDED:
                    pair.state = _WAITING
                    break
                if other.priority >= priority:
                    top = False
        else:
            if top:
                pair.state = _WAITING
        # Stable: a new pair comes after the pairs of its priority, as if appended and sorted
        # (the pairs are in that order: inserted where it goes, not the whole list sorted).
        old = self._pairs
        at = bisect.bisect_right(old, -priority, key=_descending)
        pairs = self._pairs = (*old[:at], pair, *old[at:]) if at < len(old) else (*old, pair)
        index = self._index
        if index is not None:
            index[_key(pair)] = pair
        elif len(pairs) > INDEX_FROM:
            self._index = {_key(p): p for p in pairs}
        if len(pairs) > self.max_pairs and pair in self._prune(pair if keep else None):
            return None
        return pair

    def _sort(self) -> None:
        self._pairs = tuple(sorted(self._pairs, key=_PRIORITY, reverse=True))

    def _prune(self, keep: Pair | None = None) -> list[Pair]:
        """Drop pairs that are not in use, lowest priority first, until the list is within
        the cap (RFC 8445 §6.1.2.5): failed ones first, then frozen and waiting ones.  A pair
        with a check in flight, a succeeded one, a nominated one that has not failed (or is
        the selected pair), and ``keep`` are never dropped: the list may exceed the cap by as
        many (each is a check the peer made, or one of ours that is running).  Nor is the
        best pair not failed whose nomination we answered before our check of it succeeded
        (``nominate_on_success``): the peer holds it nominated, and selects the best it
        nominated.  Returns the pairs dropped."""
        pairs = self._pairs
        excess = len(pairs) - self.max_pairs
        dropped: list[Pair] = []
        nominee = next((p for p in pairs if p.nominate_on_success and p.state is not _FAILED), None)
        # (Failed pairs first: looked for in C first, as most lists have none.)
        passes = (
            ((_FAILED,), (_FROZEN, _WAITING))
            if _FAILED in map(_STATE, pairs)
            else ((_FROZEN, _WAITING),)
        )
        for states in passes:
            if excess <= 0:
                break
            for pair in reversed(pairs):
                if (
                    pair is keep
                    or pair is nominee
                    or (pair.nominated and (pair.state is not _FAILED or pair is self.selected))
                    or pair.state not in states
                ):
                    continue
                dropped.append(pair)
                excess -= 1
                if pair.checks_sent == 0:
                    if self._unchecked is None:
                        self._unchecked = set()
                    self._unchecked.add(_key(pair))
                if excess <= 0:
                    break
        if not dropped:
            return dropped
        self.remove(dropped)
        self.pruned += len(dropped)
        return dropped

    def remove(self, dropped: Sequence[Pair]) -> None:
        """Take the pairs ``dropped`` (of this list) out of it."""
        pairs = self._pairs
        if len(dropped) == 1 and dropped[0] is pairs[-1]:
            self._pairs = pairs[:-1]  # (most often: the pair just added, the lowest)
        else:
            gone = {id(pair) for pair in dropped}
            self._pairs = tuple(pair for pair in pairs if id(pair) not in gone)
        index = self._index
        if index is not None:
            for pair in dropped:
                del index[_key(pair)]

    def __contains__(self, pair: object) -> bool:
        return pair in self._pairs

    def replace_remote(self, old: Candidate, new: Candidate, *, controlling: bool) -> None:
        """Pairs formed with ``old`` take ``new`` (of the same transport address) as their
        remote candidate instead."""
        for pair in self._pairs:
            if pair.remote is old:
                pair.remote = new
                pair.foundation = f"{pair.local.foundation}:{new.foundation}"
                pair.rank(controlling)
        self._sort()

    def recompute_priorities(self, controlling: bool) -> None:
        """After a role change (RFC 8445 §7.3.1.1), pair priorities change too."""
        for pair in self._pairs:
            pair.rank(controlling)
        self._sort()

    def unfreeze_foundation(self, foundation: str) -> None:
        """A pair succeeded: its frozen siblings become waiting (RFC 8445 §7.2.5.3.3)."""
        for pair in self._pairs:
            if pair.state is _FROZEN and pair.foundation == foundation:
                pair.state = _WAITING

    def next_ordinary(self) -> Pair | None:
        """The pair for the next ordinary check (RFC 8445 §6.1.4.2), or ``None``.

        The highest-priority waiting pair; failing that, the highest-priority frozen pair whose
        foundation no waiting or in-progress pair shares, which is unfrozen.
        """
        pair = self._ordinary()
        if pair is not None and pair.state is _FROZEN:
            pair.state = _WAITING
        return pair

    def has_ordinary_work(self) -> bool:
        """Whether :meth:`next_ordinary` would find a pair (without unfreezing it)."""
        return self._ordinary() is not None

    def peek_ordinary(self) -> Pair | None:
        """The pair :meth:`next_ordinary` would take now, left as it is."""
        return self._ordinary()

    def first_in_progress(self) -> Pair | None:
        """The highest-priority pair whose check is in flight, if any."""
        for pair in self._pairs:
            if pair.state is _IN_PROGRESS:
                return pair
        return None

    def _ordinary(self) -> Pair | None:
        """The pair :meth:`next_ordinary` takes, left as it is."""
        active = None  # foundations of the pairs in progress (most often there are none)
        frozen = False
        for pair in self._pairs:
            state = pair.state
            if state is _WAITING:
                return pair
            if state is _IN_PROGRESS:
                if active is None:
                    active = {pair.foundation}
                else:
                    active.add(pair.foundation)
            elif state is _FROZEN:
                frozen = True
        if not frozen:
            return None
        for pair in self._pairs:
            if pair.state is _FROZEN and (active is None or pair.foundation not in active):
                return pair
        return None

    def best_valid(self) -> Pair | None:
        """The succeeded pair of the highest valid priority (``Pair.valid_priority``; of
        equals, the first in priority order)."""
        best = None
        for pair in self._pairs:
            if pair.state is _SUCCEEDED and (
                best is None or pair.valid_priority > best.valid_priority
            ):
                best = pair
        return best

    def _seen_through(self, by_scope: bool = False) -> dict[tuple[int, bool], Candidate] | None:
        """For each base one of whose pairs succeeded with another local candidate than its
        own (the peer saw the base behind a NAT, say), that candidate: the first such pair's,
        in priority order (None: no such base), under the key ``(base, False)``.  With
        ``by_scope``, kept apart by the remote address's scope, under ``(base, inside)``
        (inside a NAT's ranges or not, see ``_inside``): a base seen through a NAT by a
        peer's public address may reach the same peer's private one directly, on a LAN they
        share."""
        if not self.mapped_elsewhere:
            return None
        seen: dict[tuple[int, bool], Candidate] | None = None
        for pair in self._pairs:
            valid = pair.valid_local
            if pair.state is _SUCCEEDED and valid is not None and valid is not pair.local:
                if seen is None:
                    seen = {}
                seen.setdefault((pair.base, by_scope and _inside(pair.remote.address)), valid)
        return seen

    @staticmethod
    def _as_seen(
        pair: Pair,
        seen: dict[tuple[int, bool], Candidate] | None,
        controlling: bool,
        by_scope: bool = False,
    ) -> int:
        """The valid priority ``pair`` is taken to have before it succeeds: as its base's
        pairs were seen (with ``by_scope``, its base's pairs to remote addresses of the same
        scope: see :meth:`_seen_through`), else its own."""
        if seen is None:
            return pair.priority
        valid = seen.get((pair.base, by_scope and _inside(pair.remote.address)))
        if valid is None:
            return pair.priority
        return compute_pair_priority(valid, pair.remote, controlling)

    def seen_priority(self, pair: Pair, controlling: bool) -> int:
        """The valid priority ``pair`` has (``Pair.valid_priority``), or, before it
        succeeded, the one it is taken to have, as its base's pairs were seen (whatever
        their remote addresses: see :meth:`pending_above` for why that waits by scope): to
        be compared with another pair's valid priority (a check's own priority, from its
        host candidate, ranks above a valid pair seen through a NAT that the same check
        would rank below once answered)."""
        if pair.valid_local is not None:
            return pair.valid_priority
        return self._as_seen(pair, self._seen_through(), controlling)

    def pending_above(self, priority: int, controlling: bool) -> bool:
        """Whether a pair not yet done may still succeed with a valid priority (see
        ``Pair.valid_priority``) above ``priority``.  A pending pair's valid priority is
        not known before it succeeds: where a pair of its base to a remote address of the
        same scope (public, or inside a NAT's ranges) has succeeded with another local
        candidate (the peer saw the base behind a NAT, say), the pair is taken to be seen as
        that one too; else its own priority stands for it.  (A valid pair ranks at most as
        its checked pair: the candidate the peer sees is the host candidate a check went
        from, or a peer-reflexive or server-reflexive one below it, or for a relayed check
        the relay itself; so the pairs are looked at in priority order until one cannot
        beat ``priority``.)

        By scope, because a base seen through a NAT by the peer's public address may reach
        its private one directly, on a LAN they share: taken to be seen through the NAT, that
        pair was not waited for, and regular nomination, which is final, chose the NAT's
        path for good, and failed when it died (the lan51 review).  A cancelled check
        (:meth:`seen_priority`) takes no scope apart: a pair that is not cancelled goes on
        nominating, and one whose answers cannot come back moved a lite peer to and fro."""
        seen = self._seen_through(by_scope=True)
        for pair in self._pairs:
            if pair.priority <= priority:
                return False  # (nor can any after it)
            state = pair.state
            if (state is _FROZEN or state is _WAITING or state is _IN_PROGRESS) and (
                self._as_seen(pair, seen, controlling, by_scope=True) > priority
            ):
                return True
        return False

    def all_failed(self) -> bool:
        """Every pair failed (an empty list has not failed: candidates may still come)."""
        # (Loops, not all()/any() over a generator: asked after every change, and a
        # generator left early is closed with an exception.)
        for pair in self._pairs:
            if pair.state is not _FAILED:
                return False
        return bool(self._pairs)

    def in_progress(self, above: int = -1) -> bool:
        """Whether a pair ranked above ``above`` (every pair, by default) is being checked."""
        for pair in self._pairs:  # (in priority order)
            if pair.priority <= above:
                return False
            if pair.state is _IN_PROGRESS:
                return True
        return False

    @staticmethod
    def is_local_pairable_type(candidate: Candidate, *, nohost: bool) -> bool:
        """Which local candidate types take part in pairs.

        Server-reflexive candidates are replaced by their base (RFC 8445 §6.1.2.4), so only host
        and relay candidates pair; under the NOHOST policy the server-reflexive candidate stands
        for its base instead, since host candidates are not used.
        """
        if candidate.type is _RELAY:
            return True
        if nohost:
            return candidate.type is _SRFLX
        return candidate.type is _HOST


def _tcp_pairable(local: Candidate, remote: Candidate) -> bool:
    """The tcptypes that pair (RFC 6544 §6.2; see :meth:`CheckList.pairable`)."""
    mine = local.tcp_type
    theirs = remote.tcp_type
    if mine is TcpType.ACTIVE:
        return theirs is TcpType.PASSIVE
    if mine is TcpType.PASSIVE:
        return theirs is TcpType.ACTIVE and remote.type is CandidateType.PRFLX
    return mine is TcpType.SO and theirs is TcpType.SO


def _key(pair: Pair) -> _Key:
    return (pair.base, pair.remote.address, pair.remote.port)


def _time(at: float) -> float | None:
    """A time for :class:`PairStatistics`: ``None`` for never (``-inf``)."""
    return None if at == -math.inf else at
