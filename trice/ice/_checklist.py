"""The check list: pair formation, pruning, ordering, foundations and pair states.

RFC 8445 §6.1.2 (forming the check list) and §6.1.4.2 (choosing the next ordinary check).
Pure: no trio, no sockets, no clock.  The agent core (``_core.py``) drives it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from trice.ice._candidate import Candidate, CandidateType, canonical_ip
from trice.ice._priority import pair_priority

__all__ = ["CheckList", "Pair", "PairState"]


class PairState(str, enum.Enum):
    """Candidate pair states (RFC 8445 §6.1.2.6)."""

    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: Pair-state transitions the check list makes (the docs draw this table).
PAIR_TRANSITIONS: dict[PairState, frozenset[PairState]] = {
    PairState.FROZEN: frozenset({PairState.WAITING}),
    PairState.WAITING: frozenset({PairState.IN_PROGRESS}),
    PairState.IN_PROGRESS: frozenset({PairState.SUCCEEDED, PairState.FAILED, PairState.WAITING}),
    PairState.SUCCEEDED: frozenset({PairState.IN_PROGRESS}),
    PairState.FAILED: frozenset({PairState.WAITING}),
}


def family(address: str) -> int:
    """6 for an IPv6 literal, 4 otherwise (names never pair: see :meth:`CheckList.pairable`)."""
    return 6 if ":" in address else 4


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
        nominated: the pair is nominated (RFC 8445 §8.1).
        nominate_on_success: controlled agent saw USE-CANDIDATE before the pair succeeded.
        transaction: the transaction id of the check in flight, if any.
        peer_checked: the peer has sent a check on this pair.
        pingback_at: when the controlled agent pings back on this pair if no nomination has
            come by then (see :meth:`trice.ice.AgentCore.on_timer`).
        pinged_back: a controlled agent has sent the peer its one ping-back on this pair.
    """

    __slots__ = (
        "base",
        "foundation",
        "local",
        "nominate_on_success",
        "nominated",
        "peer_checked",
        "pingback_at",
        "pinged_back",
        "priority",
        "remote",
        "state",
        "transaction",
        "valid_local",
    )

    def __init__(self, local: Candidate, remote: Candidate, base: int, priority: int) -> None:
        self.local = local
        self.remote = remote
        self.base = base
        self.foundation = f"{local.foundation}:{remote.foundation}"
        self.priority = priority
        self.state = PairState.FROZEN
        self.valid_local: Candidate | None = None
        self.nominated = False
        self.nominate_on_success = False
        self.transaction: bytes | None = None
        self.peer_checked = False
        self.pinged_back = False
        self.pingback_at = 0.0

    @property
    def remote_address(self) -> tuple[str, int]:
        return (self.remote.address, self.remote.port)

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


class CheckList:
    """The pairs of one data stream, highest priority first (RFC 8445 §6.1.2).

    Args:
        max_pairs: cap on pairs; past it the lowest-priority pairs not yet checked are pruned
            (RFC 8445 §6.1.2.5).
    """

    def __init__(self, *, max_pairs: int) -> None:
        self._pairs: list[Pair] = []
        self._index: dict[tuple[int, str, int], Pair] = {}
        self.max_pairs = max_pairs
        self.pruned = 0

    def __iter__(self) -> Iterator[Pair]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def find(self, base: int, address: tuple[str, int]) -> Pair | None:
        """The pair that sends from ``base`` to ``address``, if any."""
        return self._index.get((base, address[0], address[1]))

    @staticmethod
    def pairable(local: Candidate, remote: Candidate) -> bool:
        """Same component, UDP on both sides, same IP family (RFC 8445 §6.1.2.2).

        Only IP literals pair: host names (mDNS ``.local`` names among them) are not paired
        until resolved.
        """
        if local.component != remote.component:
            return False
        if local.protocol != "udp" or remote.protocol != "udp":
            return False
        if canonical_ip(remote.address) is None:
            return False
        return family(local.address) == family(remote.address)

    def add(
        self, local: Candidate, remote: Candidate, base: int, *, controlling: bool
    ) -> Pair | None:
        """Form a pair, unless it is redundant or pruned; return the pair that stands for it.

        A pair with the same base and remote address as an existing one is redundant (RFC 8445
        §6.1.2.4): the one with the higher priority is kept.
        """
        if not self.pairable(local, remote):
            return None
        priority = compute_pair_priority(local, remote, controlling)
        key = (base, remote.address, remote.port)
        existing = self._index.get(key)
        if existing is not None:
            if priority > existing.priority and existing.state in (
                PairState.FROZEN,
                PairState.WAITING,
            ):
                existing.local = local
                existing.remote = remote
                existing.priority = priority
                existing.foundation = f"{local.foundation}:{remote.foundation}"
                self._sort()
            return existing
        pair = Pair(local, remote, base, priority)
        if not any(p.foundation == pair.foundation for p in self._pairs):
            pair.state = PairState.WAITING
        self._pairs.append(pair)
        self._index[key] = pair
        self._sort()
        if len(self._pairs) > self.max_pairs:
            self._prune()
        return pair if key in self._index else None

    def _sort(self) -> None:
        self._pairs.sort(key=lambda p: p.priority, reverse=True)

    def _prune(self) -> None:
        """Drop the lowest-priority pairs that are not in use (RFC 8445 §6.1.2.5)."""
        for pair in reversed(self._pairs):
            if len(self._pairs) <= self.max_pairs:
                break
            if pair.state in (PairState.FROZEN, PairState.WAITING):
                self._pairs.remove(pair)
                del self._index[(pair.base, pair.remote.address, pair.remote.port)]
                self.pruned += 1

    def replace_remote(self, old: Candidate, new: Candidate, *, controlling: bool) -> None:
        """Pairs formed with ``old`` take ``new`` as their remote candidate instead."""
        for pair in self._pairs:
            if pair.remote is old:
                pair.remote = new
                pair.foundation = f"{pair.local.foundation}:{new.foundation}"
                pair.priority = compute_pair_priority(pair.local, new, controlling)
        self._sort()

    def recompute_priorities(self, controlling: bool) -> None:
        """After a role change (RFC 8445 §7.3.1.1), pair priorities change too."""
        for pair in self._pairs:
            pair.priority = compute_pair_priority(pair.local, pair.remote, controlling)
        self._sort()

    def unfreeze_foundation(self, foundation: str) -> None:
        """A pair succeeded: its frozen siblings become waiting (RFC 8445 §7.2.5.3.3)."""
        for pair in self._pairs:
            if pair.state is PairState.FROZEN and pair.foundation == foundation:
                pair.state = PairState.WAITING

    def next_ordinary(self) -> Pair | None:
        """The pair for the next ordinary check (RFC 8445 §6.1.4.2), or ``None``.

        The highest-priority waiting pair; failing that, the highest-priority frozen pair whose
        foundation no waiting or in-progress pair shares, which is unfrozen.
        """
        active: set[str] = set()
        for pair in self._pairs:
            if pair.state is PairState.WAITING:
                return pair
            if pair.state is PairState.IN_PROGRESS:
                active.add(pair.foundation)
        for pair in self._pairs:
            if pair.state is PairState.FROZEN and pair.foundation not in active:
                pair.state = PairState.WAITING
                return pair
        return None

    def has_ordinary_work(self) -> bool:
        """Whether :meth:`next_ordinary` would find a pair (without unfreezing it)."""
        active: set[str] = set()
        for pair in self._pairs:
            if pair.state is PairState.WAITING:
                return True
            if pair.state is PairState.IN_PROGRESS:
                active.add(pair.foundation)
        return any(p.state is PairState.FROZEN and p.foundation not in active for p in self._pairs)

    def best_valid(self) -> Pair | None:
        """The highest-priority succeeded pair."""
        for pair in self._pairs:
            if pair.state is PairState.SUCCEEDED:
                return pair
        return None

    def pending_above(self, priority: int) -> bool:
        """Whether a pair of higher priority may still succeed."""
        for pair in self._pairs:
            if pair.priority <= priority:
                return False
            if pair.state in (PairState.FROZEN, PairState.WAITING, PairState.IN_PROGRESS):
                return True
        return False

    def all_failed(self) -> bool:
        """Every pair failed (an empty list has not failed: candidates may still come)."""
        return bool(self._pairs) and all(p.state is PairState.FAILED for p in self._pairs)

    def in_progress(self) -> bool:
        return any(p.state is PairState.IN_PROGRESS for p in self._pairs)

    @staticmethod
    def is_local_pairable_type(candidate: Candidate, *, nohost: bool) -> bool:
        """Which local candidate types take part in pairs.

        Server-reflexive candidates are replaced by their base (RFC 8445 §6.1.2.4), so only host
        and relay candidates pair; under the NOHOST policy the server-reflexive candidate stands
        for its base instead, since host candidates are not used.
        """
        if candidate.type is CandidateType.RELAY:
            return True
        if nohost:
            return candidate.type is CandidateType.SRFLX
        return candidate.type is CandidateType.HOST
