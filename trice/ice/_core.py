"""The ICE agent's brain: roles, checks, responses, nomination, consent and timers.

``AgentCore`` is sans-IO.  The trio shell feeds it what happened (a request arrived, a
check got a response or timed out, the clock reached a deadline) with ``now`` as an argument,
and asks it what to do (:meth:`AgentCore.poll_check`, :meth:`AgentCore.next_deadline`,
:meth:`AgentCore.drain_events`).  It decides every state transition; the shell only moves
bytes and keeps time.  RFC 8445 sections are cited where each rule lives.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import ipaddress
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TypeGuard

from trice import stun
from trice._config import Nomination, Timing
from trice._errors import (
    CandidateError,
    ConfigError,
    LimitError,
    StateError,
    UsageError,
    a_type,
)
from trice.ice._candidate import Candidate, CandidateType, TcpType
from trice.ice._check import Check, IceParameters, check_schedule
from trice.ice._checklist import CheckList, Pair, PairState, PairStatistics
from trice.ice._events import (
    CONNECTION_TRANSITIONS,
    CandidatePair,
    ConnectionState,
    ConnectionStateChanged,
    Event,
    SelectedPairChanged,
)
from trice.ice._gathering import no_destination, prflx_candidate
from trice.ice._priority import candidate_priority, tcp_local_preference
from trice.ice._requests import (
    CHECK_TYPES,
    RoleDecision,
    authenticate,
    learned,
    named_ufrag,
    resolve_role_conflict,
)
from trice.mdns._message import is_mdns_name
from trice.stun._fastpath import (
    BindingRequestTemplate,
    encode_binding_success,
    prime_success,
    success_pads,
)

__all__ = ["AgentCore", "Check", "IceParameters", "check_schedule"]

#: The range of the factor of each interval between consent checks (RFC 7675 §5.1).
JITTER_MIN, JITTER_MAX = 0.8, 1.2


def _consent_jitter() -> float:
    return random.uniform(JITTER_MIN, JITTER_MAX)


def _new_tiebreaker() -> int:
    return random.getrandbits(64)


def _paired_with_every_local(remote: Candidate) -> bool:
    """Whether a remote candidate is paired with every local candidate: all are but a
    peer-reflexive one, paired with none (RFC 8445 §7.3.1.3; only the pair its check came
    on is formed, §7.3.1.4).  Over TCP too: it is the far end of one connection, to one
    passive candidate, and another passive candidate can open none (RFC 6544 §7.2)."""
    return remote.type is not CandidateType.PRFLX


Address = tuple[str, int]

#: Remote candidates are kept by transport address (``remote_addresses``); a TCP candidate's
#: port is moved past the UDP ports (``TCP_KEY + port``), so that a UDP and a TCP candidate at
#: one address and port stay two, and a datagram's source, which the shell looks up, never
#: finds a TCP candidate (see :func:`remote_key`).
TCP_KEY: Final = 1 << 16


def remote_key(candidate: Candidate) -> Address:
    """The key of a remote candidate in ``AgentCore.remote_addresses`` (see :data:`TCP_KEY`)."""
    if candidate.protocol == "udp":
        return (candidate.address, candidate.port)
    if candidate.tcp_type is TcpType.ACTIVE and candidate.type is not CandidateType.PRFLX:
        # (An active candidate's port means nothing, RFC 6544 §4.5: 9 is signalled.  One
        # that a peer signals with the port its connections come from is not taken for
        # their far end, which is learned, peer-reflexive, as §7.2 says: as the other,
        # a passive candidate pairs with none.)
        return (candidate.address, 9 + TCP_KEY)
    return (candidate.address, candidate.port + TCP_KEY)


def _tcp_key(address: Address) -> Address:
    """The key in ``AgentCore.remote_addresses`` of the far end ``address`` of an ICE-TCP
    connection (see :data:`TCP_KEY`)."""
    return (address[0], address[1] + TCP_KEY)


def _opposite(tcp_type: TcpType | None) -> TcpType | None:
    """The tcptype of the other end of a TCP connection (RFC 6544 §7.1.1, §7.2)."""
    if tcp_type is TcpType.ACTIVE:
        return TcpType.PASSIVE
    if tcp_type is TcpType.PASSIVE:
        return TcpType.ACTIVE
    return tcp_type


#: What changes the bytes of a check: the local candidate's priority and component, the
#: role, USE-CANDIDATE, and the tie-breaker (see ``AgentCore._check_template``).
_TemplateKey = tuple[int, int, bool, bool, int]
#: A check made ahead (see :meth:`AgentCore.prepare`): pair, template key, transaction id,
#: message.
_Spare = tuple[Pair, _TemplateKey, bytes, bytes]

#: A controlled agent waits this many round trips of its own check (at least PINGBACK_MIN,
#: at most PINGBACK_MAX seconds) for the peer to nominate before it pings back
#: (``_want_pingback``).  The cap is Pion's own checking interval: waiting longer than that
#: would never help.
PINGBACK_RTTS = 2.0
PINGBACK_MIN = 0.0005
PINGBACK_MAX = 0.2

#: The longest consent lasts without an answer (RFC 7675 §5.1), whatever
#: ``Timing.failed_timeout`` says.
CONSENT_EXPIRY = 30.0
#: How long after its first 487 a peer may still claim this agent's role in new checks
#: before the agent gives way, taking the other role itself (a peer that ignores 487s).
#: Well within the 1.2 s Pion 2 goes on checking a pair it gets no answer on (7 checks 200 ms
#: apart): two new checks on one path after it make the agent give way (see _ignores_487).
GIVE_WAY_AFTER = 0.6
#: Paths (our transport, the peer's address) whose refused checks are kept, to tell copies
#: from new checks: as many as a check list may hold, and more.
MAX_REFUSED_KEPT = 1024
#: Sources of peer-reflexive candidates left out past ``max_remote_candidates`` kept, to count
#: them apart (see ``no_pair_reason``): more are counted as "or more", not kept (one captured
#: check, replayed from ever new sources, grew the set for the generation's life).
MAX_CAPPED_KEPT = 1024

#: The least silence of the peer that makes an ICE-lite agent disconnected: two of RFC
#: 7675 §5.1's longest intervals between consent checks (5 s, +20 %), whatever
#: ``Timing.disconnected_timeout`` says (see ``AgentCore.__init__``).
LITE_SILENCE = 12.0

#: The soonest a check that the peer's request crossed goes out again (see ``poll_resend``):
#: above a loopback or LAN round trip, far below any RTO.
RESEND_MIN = 0.005
#: The end-of-candidates naming a ufrag held for the peer's parameters (see
#: ``AgentCore.add_remote_candidate``): more are ignored.  Also the peer's ufrags of past
#: generations kept, and the ufrags kept for each address checks taught before the peer's
#: parameters (``_taught``).
MAX_NAMED_ENDS = 8

#: What an ICE failure with no pair selected says when it knows nothing more (see
#: :meth:`AgentCore.no_pair_reason`).
NO_PAIR_WORKS: Final = "no candidate pair works"

#: Enum members as module constants for the per-message paths: on CPython 3.11 reading a
#: member off its class (``PairState.WAITING``) costs ~90 ns, a global ~10 ns.
_PAIR_FROZEN: Final = PairState.FROZEN
_PAIR_WAITING: Final = PairState.WAITING
_PAIR_IN_PROGRESS: Final = PairState.IN_PROGRESS
_PAIR_SUCCEEDED: Final = PairState.SUCCEEDED
_PAIR_FAILED: Final = PairState.FAILED
_STATE_CLOSED: Final = ConnectionState.CLOSED
_STATE_CONNECTED: Final = ConnectionState.CONNECTED
_STATE_DISCONNECTED: Final = ConnectionState.DISCONNECTED
_STATE_FAILED: Final = ConnectionState.FAILED
_STATE_NEW: Final = ConnectionState.NEW
_BINDING: Final = stun.Method.BINDING
_REQUEST: Final = stun.MessageClass.REQUEST
_INDICATION: Final = stun.MessageClass.INDICATION
_SUCCESS: Final = stun.MessageClass.SUCCESS
_ERROR: Final = stun.MessageClass.ERROR
_REJECT: Final = RoleDecision.REJECT
_SWITCH: Final = RoleDecision.SWITCH
_AGGRESSIVE: Final = Nomination.AGGRESSIVE
_HOST: Final = CandidateType.HOST
_RELAY: Final = CandidateType.RELAY
_PRFLX: Final = CandidateType.PRFLX


def _key_of(pwd: str, whose: str) -> bytes:
    """The short-term STUN key of ``pwd`` (RFC 8489 §9.1.1), for ``whose`` it is in a
    ConfigError: one SASLprep refuses, or maps to nothing (zero-width characters: no
    secret), cannot make one."""
    try:
        key = stun.short_term_key(pwd)
    except ValueError as exc:
        raise ConfigError(f"{whose} (not shown) cannot make a STUN key: {exc}") from None
    if not key:
        raise ConfigError(f"{whose} (not shown) makes an empty STUN key")
    return key


class AgentCore:
    """Pure ICE agent logic for one data stream with one component.

    Args:
        local: the local :class:`IceParameters`.
        controlling: initial role (RFC 8445 §6.1.1); an ICE-lite agent is always controlled.
        tiebreaker: 64-bit random number for role conflicts (RFC 8445 §7.3.1.1).
        timing: the agent's :class:`~trice.Timing`.
        nomination: regular or aggressive nomination when controlling.
        max_pairs: cap on pairs.
        max_remote_candidates: cap on remote candidates.
        nohost: the NOHOST transport policy (server-reflexive candidates stand for their base).
        new_transaction_id: source of transaction ids (injected so tests are deterministic).
        consent_jitter: the factor of each interval between consent checks, by default
            drawn from 0.8-1.2 (RFC 7675 §5.1: agents do not send in step); injected so
            tests are deterministic.
        new_tiebreaker: source of the tiebreaker taken after a 487 switched the role (RFC
            8445 §7.2.5.1: it changes), 64 random bits by default; injected so tests are
            deterministic.

    Raises:
        ConfigError: ``tiebreaker`` is not an integer from 0 to 2**64 - 1 (its checks could
            not carry it).
    """

    __slots__ = (
        "_answered_signed",
        "_asked_at",
        "_carried",
        "_checking_since",
        "_consent_for",
        "_data_at",
        "_disconnected_for",
        "_early",
        "_early_consent",
        "_events",
        "_fail_held",
        "_first_valid_at",
        "_held",
        "_hidden",
        "_hiding",
        "_indicating",
        "_jitter",
        "_last_alive",
        "_last_consent",
        "_last_selected",
        "_late",
        "_late_end_possible",
        "_late_prflx",
        "_live",
        "_local_key",
        "_moving",
        "_named_ends",
        "_names",
        "_new_tid",
        "_new_tiebreaker",
        "_next_consent",
        "_next_paced",
        "_nominating",
        "_nominators",
        "_nudge_at",
        "_past_ufrags",
        "_peer_nominated",
        "_pingback",
        "_pingback_soon",
        "_previous",
        "_previous_checks",
        "_previous_far",
        "_previous_key",
        "_previous_ufrag",
        "_previous_until",
        "_prflx_capped",
        "_probe",
        "_probe_at",
        "_refused",
        "_refused_at",
        "_refused_checks",
        "_remapped_at",
        "_remote_key",
        "_resend",
        "_resend_asked",
        "_said_pair",
        "_schedules",
        "_spare_check",
        "_spare_nomination",
        "_spare_ping",
        "_stale",
        "_stranger",
        "_success_pads",
        "_taught",
        "_templates",
        "_triggered",
        "_unheard",
        "_urgent",
        "_wanted",
        "checklist",
        "checks_sent",
        "checks_unauthorized",
        "consent_revoked",
        "controlling",
        "finished",
        "generation",
        "left_out",
        "local",
        "local_candidates",
        "local_complete",
        "max_remote_candidates",
        "nohost",
        "nomination",
        "pending_remote",
        "prflx_dropped",
        "remote",
        "remote_addresses",
        "remote_candidates_dropped",
        "remote_complete",
        "remote_end_held",
        "requests_received",
        "requests_rejected",
        "role_switches",
        "selected",
        "state",
        "switched_because",
        "tiebreaker",
        "timing",
    )

    def __init__(
        self,
        *,
        local: IceParameters,
        controlling: bool,
        tiebreaker: int,
        timing: Timing,
        nomination: Nomination = Nomination.REGULAR,
        max_pairs: int = 100,
        max_remote_candidates: int = 200,
        nohost: bool = False,
        new_transaction_id: Callable[[], bytes] = stun.new_transaction_id,
        consent_jitter: Callable[[], float] = _consent_jitter,
        new_tiebreaker: Callable[[], int] = _new_tiebreaker,
    ) -> None:
        if type(tiebreaker) is not int or not 0 <= tiebreaker < 1 << 64:
            raise ConfigError(
                f"the tiebreaker must be a 64-bit unsigned integer, not {tiebreaker!r}"
            )
        self.local = local
        self.controlling = controlling and not local.lite
        self.tiebreaker = tiebreaker
        self.timing = timing
        # The schedules of an ordinary check and of a consent check (sent once), shared by
        # every agent of the same timing: looked up once here, not per check (the cache's
        # key is the whole Timing, hashed and compared field by field at each lookup).
        self._schedules = (_schedule(timing, None), _schedule(timing, 1))
        # How long consent lasts without an answer: failed_timeout, never past RFC 7675's
        # 30 s (§5.1: the agent must stop sending then); and how long without hearing from
        # the peer makes it disconnected: disconnected_timeout, but when consent is cut
        # down so, at most two thirds of it (disconnected comes first, and the consent
        # checks, twice per that at least, keep a live pair's consent).
        self._consent_for = min(timing.failed_timeout, CONSENT_EXPIRY)
        self._disconnected_for = timing.disconnected_timeout
        if timing.failed_timeout > CONSENT_EXPIRY:
            self._disconnected_for = min(self._disconnected_for, CONSENT_EXPIRY * 2 / 3)
        if local.lite:
            # A lite agent hears the peer only through its checks, which RFC 7675 §5.1
            # paces 4-6 s apart (aioice does): disconnected once two are missed, not at
            # one gap longer than ``disconnected_timeout`` (a healthy idle pair flapped).
            cap = max(self._disconnected_for, self._consent_for * 2 / 3)
            self._disconnected_for = min(max(self._disconnected_for, LITE_SILENCE), cap)
        #: Every pair failed (or none can be) while RFC 8863's PAC timer still ran: ICE
        #: fails when it ends, if nothing changed meanwhile (see ``_maybe_fail``).
        self._fail_held = False
        self.nomination = nomination
        self.max_remote_candidates = max_remote_candidates
        self.nohost = nohost
        self._new_tid = new_transaction_id
        self._jitter = consent_jitter
        self._new_tiebreaker = new_tiebreaker
        self._local_key = _key_of(local.pwd, "the pwd")
        self._success_pads = success_pads(self._local_key)  # kept: see success_pads
        self.remote: IceParameters | None = None
        self._remote_key = b""
        self.checklist = CheckList(max_pairs=max_pairs)
        #: ``(candidate, base)`` in the order gathered; the first host or relay candidate of a
        #: base is the one its checks and answers are for (see ``_base_candidate``).  A tuple,
        #: made anew for each candidate (they are few): smaller than a list.
        self.local_candidates: tuple[tuple[Candidate, int], ...] = ()
        #: The remote candidates by transport address, in the order learned (see
        #: :attr:`remote_candidates`).  The shell tests ``source in remote_addresses`` for
        #: every datagram, holding on to this very dict: it is never replaced.
        self.remote_addresses: dict[Address, Candidate] = {}
        self.remote_complete = False
        #: Signalled candidates the shell holds back (``.local`` names it resolves, see
        #: :meth:`hold_remote`): they count against the cap, and an end-of-candidates waits
        #: for them (``remote_end_held``).
        self.pending_remote = 0
        self.remote_end_held = False
        #: This generation's remote candidates left out (a name no mDNS answer came for, no
        #: room left): the peer may still check from them, so an empty check list is no
        #: failure yet (see ``_peer_may_check``).
        self.left_out = 0
        #: The ICE generation: one more at each :meth:`restart` (what a held candidate
        #: belongs to).
        self.generation = 0
        self.local_complete = False
        self.state = ConnectionState.NEW
        #: ``state`` is failed or closed (kept as a field: it is asked on every packet).
        self.finished = False
        #: ICE failed because the peer revoked consent (an authenticated 403 to a consent
        #: check, RFC 7675 §5.2), rather than let it expire; until a restart.
        self.consent_revoked = False
        self.selected: Pair | None = None
        #: After an ICE restart, until a new pair is selected: the pair selected before,
        #: which data still goes over (see :meth:`restart`); and its remote address, kept
        #: among ``remote_addresses`` for that data until the peer signals it anew.
        self._previous: Pair | None = None
        #: The consent checks on it that were in flight at the restart (or past their
        #: RTO), by transaction id, and the peer's key of then: their answers still count
        #: for it (see on_late_response).
        self._previous_checks: dict[bytes, Check] | None = None
        self._previous_key = b""
        self._stale: Address | None = None
        #: That address still, from the restart until data from it counts no more, though
        #: the peer signal it anew (``_stale`` is then ``None``): the TCP connection there
        #: stays open as long as it would have (see is_previous_remote).
        self._previous_far: Address | None = None
        #: Once a pair of the new generation is selected, until when data from
        #: ``_previous_far`` still counts (see _make_selected); ``None`` while the pair of
        #: before carries data.
        self._previous_until: float | None = None
        #: The last pair selected, which :meth:`selected_pair` names once none carries data.
        self._last_selected: Pair | None = None
        #: The selected pair as last said (SelectedPairChanged), with the pair: what
        #: selected_pair says once ICE is over (see there).
        self._said_pair: tuple[Pair, CandidatePair] | None = None
        #: The candidates that name a ufrag, held (by address) while the peer's ufrag is
        #: not known, or that name one not seen yet, of a generation to come (see
        #: :meth:`add_remote_candidate`).
        self._held: dict[tuple[Address, str], Candidate] | None = None
        #: Remote addresses the peer signalled only under mDNS names (see release_remote):
        #: no relayed candidate pairs with them.
        self._hidden: set[Address] | None = None
        self._hiding = False  # (release_remote is taking a hidden one: see above)
        #: When a lite agent last had data from the peer (see _silence).
        self._data_at = -math.inf
        #: After an ICE restart: the earlier generation's end-of-candidates may still come
        #: (it had not before the restart), and one before the peer's new parameters is
        #: taken for it (see :meth:`add_remote_candidate`).
        self._late_end_possible = False
        # After an ICE restart: the peer's ufrag of before, and an end-of-candidates that
        # named a ufrag before the peer's new parameters came (see add_remote_candidate).
        self._previous_ufrag: str | None = None
        self._named_ends: set[str] | None = None
        # The ufrags of a generation to come that already waited through a restart (see
        # restart), until the next parameters: those naming another drop them, as they do
        # an earlier one's.
        self._carried: set[str] | None = None
        # The peer's ufrags of the generations before this one (the last MAX_NAMED_ENDS):
        # what names one of them is late; what names another ufrag may be early.
        self._past_ufrags: tuple[str, ...] = ()
        # Candidates of a generation to come (see _hold_early), and the .local ones of them
        # that parameters took, for the shell to resolve (see take_names).
        self._early: dict[tuple[Address, str], Candidate] | None = None
        self._names: list[Candidate] | None = None
        # The remote addresses checks taught before the peer's parameters came, with the
        # ufrags those checks named (see _forget_misnamed).
        self._taught: dict[Address, set[str]] | None = None
        # The ufrags that nominations among those checks named (see _forget_misnamed).
        self._nominators: set[str] | None = None
        # What is usually empty is ``None`` until it is not (an idle agent then holds no
        # containers for it: a process may hold thousands of agents), and again once emptied.
        self._events: list[Event] | None = None
        # Small FIFO queues: lists (an empty deque costs ~700 bytes, many agents hold these).
        self._triggered: list[Pair] | None = None
        self._urgent: list[Check] | None = None
        self._resend: list[tuple[bytes, float]] | None = None
        #: The last copy asked at a nominating request: (transaction id, when).
        self._resend_asked: tuple[bytes, float] | None = None
        #: The checks awaiting a response, by transaction id.
        self._live: dict[bytes, Check] | None = None
        #: Those of them the peer answered 401 (see _want_resend).
        self._refused_checks: set[bytes] | None = None
        #: Encoded-check templates, keyed by what changes their bytes; kept only until a pair
        #: is selected (see ``_check_template``).
        self._templates: dict[tuple[int, int, bool, bool, int], BindingRequestTemplate] | None
        self._templates = None
        #: Checks made ahead by :meth:`prepare` (see there): ``(pair, template key,
        #: transaction id, message)``, the next ordinary check, the next nomination and, if
        #: the shell asks, the next ping-back.
        self._spare_check: _Spare | None = None
        self._spare_nomination: _Spare | None = None
        self._spare_ping: _Spare | None = None
        self._wanted = False
        self._checking_since: float | None = None
        self._next_paced = 0.0
        self._first_valid_at: float | None = None
        self._nudge_at: float | None = None  # (see _nudge)
        self._nominating: Pair | None = None
        #: Whether the nomination in flight (``_nominating``) moves the selection to its
        #: pair, whatever its priority (see :meth:`_maybe_move`).
        self._moving = False
        self._pingback: Pair | None = None
        self._pingback_soon = False  # whether the shell may send it sooner (_want_pingback)
        #: When consent was last refreshed: an answer to one of our checks on the selected
        #: pair (RFC 7675).  Without one for ``failed_timeout``, the state is failed.
        self._last_consent = 0.0
        #: When the peer was last heard on the selected pair: an answer, a request of its
        #: own, or data (see on_data).  Without any for ``disconnected_timeout``, the state
        #: is disconnected.
        self._last_alive = 0.0
        #: When a consent check's answer on the selected pair first showed another mapped
        #: address than the pair's, or the peer was last heard since (a check on the pair,
        #: data): None without such an answer (see _maybe_remapped).
        self._remapped_at: float | None = None
        #: Disconnected for it: the peer, unheard there, uses the forgotten mapping.
        self._unheard = False
        #: The peer has sent a keepalive indication on the selected pair: an older one (see
        #: _unheard_after).
        self._indicating = False
        #: The pair whose check asks whether an older peer's indication came from its new
        #: mapping, and when it was asked (see _maybe_probe).
        self._probe: Pair | None = None
        self._probe_at = 0.0
        #: The last such indication's source that came before the silence, and when
        #: (checked once the silence comes: see _maybe_probe).
        self._stranger: tuple[Address, float] | None = None
        #: When the first consent check went since then (None: none yet).  A full agent
        #: that asked nothing in the silence (its own loop stalled: the process stopped,
        #: the loop blocked) asks first, and says disconnected only if that goes unanswered
        #: for its RTO (see on_timer).
        self._asked_at: float | None = None
        self._next_consent: float | None = None
        #: A controlling agent whose selected pair the peer had not checked yet: (the early
        #: time its first consent check is due, the regular time); see _select.
        self._early_consent: tuple[float, float] | None = None
        #: Consent checks past their RTO whose answer still counts if it comes (see
        #: on_late_response), by transaction id.
        self._late: dict[bytes, Check] | None = None
        # statistics
        self.checks_sent = 0
        #: Answers 401 Unauthorized to this agent's checks (copies included; not to consent
        #: checks) since checks started, or restarted, until a signed answer comes: the
        #: peer does not take the credentials this agent holds for it (a pwd, or ufrag,
        #: mangled in signaling, or another session's).
        self.checks_unauthorized = 0
        self._answered_signed = False  # (this generation: then no 401 counts)
        self._peer_nominated = False  # (a USE-CANDIDATE came this generation: see no_pair_reason)
        self.requests_received = 0
        self.requests_rejected = 0
        self.prflx_dropped = 0
        # The sources of this generation's peer-reflexive candidates left out past
        # max_remote_candidates (no_pair_reason says how many), once there is one.
        self._prflx_capped: set[tuple[str, int]] | None = None
        #: The peer-reflexive addresses learned while a pair was selected (see _maybe_move).
        self._late_prflx: set[Address] | None = None
        self.remote_candidates_dropped = 0
        #: Times the agent took the other role: facing an ICE-lite peer, or to resolve a role
        #: conflict (RFC 8445 §7.2.5.1, §7.3.1.1), and why the last time.
        self.role_switches = 0
        self.switched_because = ""
        #: When this generation's first 487 went, and for each path (our transport, the
        #: source) the last four transactions refused there and how many new ones came there
        #: ``GIVE_WAY_AFTER`` or more after it (see _ignores_487).
        self._refused_at: float | None = None
        self._refused: dict[tuple[int, Address], tuple[tuple[bytes, ...], int]] | None = None

    # ------------------------------------------------------------------ inputs from the user

    def set_remote(self, remote: IceParameters, now: float) -> None:
        """Remote ICE parameters arrived (RFC 8445 §5.3); a full agent facing a lite one
        takes the controlling role (RFC 8445 §6.1.1).

        Raises:
            ConfigError: the ufrag or pwd is not a string of 1 to 256 characters that
                UTF-8 can carry, the pwd is not one that a STUN key can be made of (it has
                control characters, say, or only characters SASLprep maps to nothing), or
                ``lite`` is not a bool, or both agents are ICE-lite.  Nothing is set
                then.  (Liberal in what it takes: RFC 8445 asks for ice-chars, at least 4
                and 22 of them, of the side that makes them.)
            StateError: different parameters were already set.
        """
        first = self.remote is None
        for name, value in (("ufrag", remote.ufrag), ("pwd", remote.pwd)):
            if not isinstance(value, str):
                raise ConfigError(
                    f"the remote {name} must be a str of 1 to 256 characters, not {a_type(value)}"
                )
            # (The pwd is a secret: its errors do not quote it.)
            shown = repr(value) if name == "ufrag" else "(not shown)"
            if not 1 <= len(value) <= 256:
                raise ConfigError(
                    f"the remote {name} {shown} must be 1 to 256 characters, not {len(value)}"
                )
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:  # (a lone surrogate, from JSON's "\ud800")
                    raise ConfigError(
                        f"the remote {name} {shown} is not text that UTF-8 can carry"
                    ) from None
        if not isinstance(remote.lite, bool):
            raise ConfigError(f"the remote lite flag must be True or False, not {remote.lite!r}")
        if not first and self.remote != remote:  # (after the checks: a bad value says so)
            raise StateError(
                "different remote parameters are already set (an ICE restart, restart(), "
                "makes room for new ones)"
            )
        if remote.lite and self.local.lite:
            raise ConfigError(
                "the peer is an ICE-lite agent too: two lite agents send no checks, and cannot "
                "connect (one side must be a full agent, RFC 8445 §2.5)"
            )
        key = _key_of(remote.pwd, "the remote pwd")
        if not first:
            return  # (the same parameters again: nothing changes)
        self.remote = remote
        self._remote_key = key
        if remote.lite and not self.local.lite and not self.controlling:
            self._switch_role("the peer is ICE-lite")
        held = self._held
        carried, self._carried = self._carried or (), None
        if held is not None:
            self._held = None
            for (_, ufrag), candidate in held.items():
                if ufrag != remote.ufrag:
                    if self.misnamed(ufrag) or ufrag in carried:
                        # (An earlier generation's; or one to come that waited through a
                        # restart already, and is not this one: a stranger's, or one
                        # abandoned.)
                        self.remote_candidates_dropped += 1
                    else:
                        # (A generation to come: a peer that restarted twice, whose second
                        # generation overtook its first's parameters.)
                        self._hold_early(candidate, ufrag)
                elif is_mdns_name(candidate.address):
                    # (Held unresolved: the shell resolves it now, see take_names.  An
                    # end-of-candidates that came before waits for it.)
                    if self.remote_complete:
                        self.remote_complete = False
                        self.remote_end_held = True
                    self.pending_remote += 1
                    if self._names is None:
                        self._names = [candidate]
                    else:
                        self._names.append(candidate)
                else:
                    self._take_remote(candidate)
        named, self._named_ends = self._named_ends, None
        if named is not None:
            later = {
                u for u in named if u != remote.ufrag and not self.misnamed(u) and u not in carried
            }
            self._named_ends = later or None  # (ends of a generation to come wait on)
            if remote.ufrag in named:
                self.add_remote_candidate(None, remote.ufrag)  # (an end that named it came first)
        for candidate in self._base_candidates():
            self._prepare_checks(candidate)
        if self._taught is not None:
            self._forget_misnamed(remote.ufrag, now)
        if first and self.state is ConnectionState.CHECKING and self._checking_since is not None:
            # After an ICE restart the checks start now, with the peer's new parameters:
            # ``failed_timeout`` and the PAC timer count from here (RFC 8863 §4: once the
            # peer's values are received), not from the restart.
            self._checking_since = now
            self._fail_held = False
            self._maybe_fail(now)  # (what came before them may pair with nothing: as at first)
        self._maybe_start(now)

    def _forget_misnamed(self, ufrag: str, now: float) -> None:
        """The peer's parameters came, with its ``ufrag``: what checks that came before them
        taught stands only if they named it (RFC 8445 §7.3: until then only the first part
        of a check's USERNAME could be checked).  A peer-reflexive candidate that only
        checks naming other ufrags taught (a forked offer's other answerer's, who holds
        this agent's credentials too; counted in ``prflx_dropped``) goes, with its pairs and
        their checks; and an ICE-lite agent selects the best pair the peer nominated so
        far (it waited for the parameters to say the nomination was the peer's)."""
        taught, self._taught = self._taught, None
        assert taught is not None
        remotes = self.remote_addresses
        wrong = set()
        for key, ufrags in taught.items():
            candidate = remotes.get(key)
            if ufrag not in ufrags and candidate is not None and candidate.type is _PRFLX:
                wrong.add(key)
        if wrong:
            checklist = self.checklist
            checklist.remove([pair for pair in checklist if remote_key(pair.remote) in wrong])
            for key in wrong:
                del remotes[key]
            self._lose(lambda pair: remote_key(pair.remote) in wrong, now)  # (their checks)
            self.prflx_dropped += len(wrong)
        nominators, self._nominators = self._nominators, None
        if nominators is not None and ufrag in nominators:
            self._peer_nominated = True  # (its pair may have failed since: see no_pair_reason)
        if self.local.lite and self.selected is None and not self.finished:
            nominated = [p for p in self.checklist if p.nominated and p.state is _PAIR_SUCCEEDED]
            if nominated:
                self._select_nominated(max(nominated, key=lambda pair: pair.valid_priority), now)
                self._maybe_complete()

    def _select_nominated(self, pair: Pair, now: float) -> None:
        """An ICE-lite agent selects ``pair``, which the peer nominated (RFC 8445 §7.3.1.5):
        checking from now, if it was not already."""
        self._checking_since = self._checking_since or now
        if self.state is _STATE_NEW:
            self._set_state(ConnectionState.CHECKING)
        self._select(pair, now)

    def restart(self, local: IceParameters, now: float) -> None:
        """ICE restart (RFC 8445 §9): new local parameters (``local``; the lite flag stays
        as it was).  The peer's parameters, its candidates and the check list are
        forgotten; checks start afresh once the peer's new parameters come
        (:meth:`set_remote`) and its candidates with them (``failed_timeout`` and the PAC
        timer count from then).  The role, the tiebreaker and
        the local candidates stay (signal them again, with the new parameters).

        The state becomes ``checking`` (it stays ``new`` before any check), also after
        ``failed``.  Until a new pair is selected, data keeps going over the pair selected
        before (:attr:`data_pair`), as §9 allows, unless consent had expired on it; no
        consent check goes on it meanwhile, so it ends when its consent, last refreshed by
        a check made before the restart (answered before or after it), is
        ``failed_timeout`` old (RFC 7675), or earlier, when the new checks select a pair or
        fail.

        Raises:
            StateError: the agent is closed.
            ConfigError: ``local`` keeps the ufrag or the pwd of before (§9 changes both),
                or its pwd cannot make a STUN key.  Nothing changes then.
        """
        if self.state is _STATE_CLOSED:
            raise StateError("the agent is closed")
        if local.ufrag == self.local.ufrag or local.pwd == self.local.pwd:
            raise ConfigError("an ICE restart needs a new ufrag and a new pwd (RFC 8445 §9)")
        key = _key_of(local.pwd, "the pwd")
        if self.finished or now >= self._last_consent + self._consent_for:
            self._previous = None  # (failed, or consent expired: no data may go, RFC 7675)
        elif self.selected is not None:
            self._previous = self.selected  # (else any from an earlier restart stays)
        previous = self._previous
        if previous is None:
            self._previous_checks = None
        elif previous is self.selected:
            # Its consent checks on their way: over a slow path the last ones before the
            # restart are answered after it, and count still (RFC 7675 §5.1: an answer to
            # a request of the last 30 s), signed with the peer's key of before.
            kept = {
                tid: check
                for checks in (self._live, self._late)
                if checks
                for tid, check in checks.items()
                if check.consent and check.pair is previous
            }
            self._previous_checks = kept or None
            self._previous_key = self._remote_key
        # (Also when no parameters of the peer's came before: its end-of-candidates may have
        # been on its way all the same.)
        self._late_end_possible = not (self.remote_complete or self.remote_end_held)
        if self.remote is not None:
            self._previous_ufrag = self.remote.ufrag
            self._past_ufrags = (*self._past_ufrags, self.remote.ufrag)[-MAX_NAMED_ENDS:]
        # (What waits for the peer's parameters, naming a ufrag, keeps waiting, and so do
        # the candidates of a generation to come: the new generation's may have come before
        # this restart, from a peer that restarted first.  Those of a generation to come,
        # candidates and ends named while the peer's parameters were known, wait through
        # this restart and no further (``_carried``): the parameters take what names their
        # ufrag and drop those (see set_remote); held before any parameters, they have
        # waited through none yet.  A name the shell was resolving is of the generation of
        # before.)
        early = self._early
        carried = self._carried or set()
        if early is not None:
            self._early = None
            self._held = {**self._held, **early} if self._held else early
            carried.update(ufrag for _, ufrag in early)
        if self.remote is not None and self._named_ends:
            carried.update(self._named_ends)
        self._carried = carried or None
        self.remote_candidates_dropped += self.pending_remote
        self._names = None
        self._hidden = None
        self._taught = self._nominators = None
        self.local = IceParameters(local.ufrag, local.pwd, self.local.lite)
        self._local_key = key
        self._success_pads = success_pads(key)
        self.remote = None
        self._remote_key = b""
        # Peer-reflexive local candidates were learned by checks (RFC 8445 §7.2.5.3.1), and
        # go with them: the new checks learn theirs (kept, a NAT that maps afresh, or a
        # peer that reports a new address each generation, would grow the tuple for ever).
        self.local_candidates = tuple(
            entry for entry in self.local_candidates if entry[0].type is not CandidateType.PRFLX
        )
        checklist = CheckList(max_pairs=self.checklist.max_pairs)
        checklist.pruned = self.checklist.pruned
        self.checklist = checklist
        remotes = self.remote_addresses  # (emptied in place: the shell holds this dict)
        remotes.clear()
        self._stale = self._previous_far = None
        self._previous_until = None
        if previous is not None:
            stale = remote_key(previous.remote)
            remotes[stale] = previous.remote
            self._stale = self._previous_far = stale
        self.remote_complete = False
        self.left_out = 0
        self.generation += 1  # (what the shell held is the old generation's)
        self.pending_remote = 0
        self.remote_end_held = False
        self.selected = None
        self.checks_unauthorized = 0  # (this generation's: see __init__)
        self._prflx_capped = self._late_prflx = None
        self._answered_signed = False
        self._peer_nominated = False
        self.consent_revoked = False
        self._refused_at = self._refused = None
        self._drop_checks()
        self._nominating = None
        self._first_valid_at = self._nudge_at = None
        self._next_consent = self._early_consent = None
        self._fail_held = False
        self._remapped_at = None
        self._unheard = False
        self._probe = self._stranger = None
        if self.state is _STATE_NEW:
            return
        self._checking_since = now
        self._next_paced = now
        self._set_state(ConnectionState.CHECKING)

    @property
    def data_pair(self) -> Pair | None:
        """The pair data goes over: the selected pair, or after an ICE restart, until a new
        one is selected, the pair selected before (see :meth:`restart`)."""
        return self.selected or self._previous

    @property
    def _named_pair(self) -> Pair | None:
        """The pair :meth:`selected_pair` names (and :meth:`pair_statistics` flags): the
        one data goes over, or if none does, the last one selected."""
        return self.data_pair or self._last_selected

    def want_connection(self, now: float) -> None:
        """The user asked to connect: checks start once remote parameters are known.  An
        authenticated check from the peer does the same (see ``_learn_from_request``)."""
        self._wanted = True
        self._maybe_start(now)

    def add_local_candidate(self, candidate: Candidate, base: int) -> None:
        """A local candidate was gathered on transport ``base``; form its pairs."""
        self.local_candidates += ((candidate, base),)
        if candidate.type is CandidateType.SRFLX:
            self._adopt_local(candidate, base)
        if self.local.lite or not CheckList.is_local_pairable_type(candidate, nohost=self.nohost):
            return
        if self.remote is not None and self._base_candidate(base) is candidate:
            self._prepare_checks(candidate)
        stale = self._stale
        for address, remote in self.remote_addresses.items():
            # (Not the pair of before a restart: not signalled anew.)
            if address != stale and _paired_with_every_local(remote):
                self._add_pair(candidate, remote, base)

    def _adopt_local(self, candidate: Candidate, base: int) -> None:
        """A server-reflexive candidate gathered after a check from ``base`` found its
        address as peer-reflexive takes the learned one's place (as the peer, once the
        candidate reaches it, takes it in place of the peer-reflexive candidate it learned:
        RFC 8838 §11.4), so that both rank the path by the same candidate (see
        ``Pair.valid_priority``): in the valid pairs of now, and, the peer-reflexive one
        gone from the local candidates, in those of later checks (after an ICE restart
        too).  The selected pair among them is said anew (see :meth:`_said_anew`)."""
        address = candidate.transport_address

        def replaced(local: Candidate, local_base: int) -> bool:
            return (
                local_base == base
                and local.type is CandidateType.PRFLX
                and local.transport_address == address
                and local.protocol == candidate.protocol
            )

        if not any(replaced(local, local_base) for local, local_base in self.local_candidates):
            return
        self.local_candidates = tuple(
            (local, local_base)
            for local, local_base in self.local_candidates
            if not replaced(local, local_base)
        )
        for pair in self.checklist:
            valid = pair.valid_local
            if valid is not None and replaced(valid, pair.base):
                pair.valid_local = candidate
                if candidate is not pair.local:
                    self.checklist.mapped_elsewhere = True
                pair.rank(self.controlling)
                if pair is self.selected:
                    self._said_anew(pair)

    def _base_candidate(self, base: int) -> Candidate | None:
        """The candidate of transport ``base`` that checks and answers are for: its first
        host or relay candidate."""
        for candidate, candidate_base in self.local_candidates:
            if candidate_base == base:
                kind = candidate.type
                if kind is _HOST or kind is _RELAY:
                    return candidate
        return None

    def _base_candidates(self) -> Iterator[Candidate]:
        """The :meth:`_base_candidate` of each base, in the order of the bases."""
        seen: set[int] = set()
        for candidate, base in self.local_candidates:
            if base not in seen and candidate.type in (_HOST, _RELAY):
                seen.add(base)
                yield candidate

    def add_remote_candidate(self, candidate: Candidate | None, ufrag: str | None = None) -> bool:
        """A remote candidate was signalled; ``None`` means end-of-candidates (RFC 8838 §4).

        A candidate that names a ufrag (:attr:`Candidate.ufrag <trice.ice.Candidate.ufrag>`:
        the W3C ``usernameFragment``, or a ``ufrag`` extension of its line) is of the ICE
        generation of that ufrag.  Returns ``False`` for one that names the peer's ufrag of
        an earlier generation (trickled late, from before an ICE restart), which it leaves
        out and counts (``remote_candidates_dropped``).  One that names a ufrag not seen
        yet is held for parameters that name it (:meth:`set_remote`): while the peer's are
        not known, and while they are, for those of an ICE restart to come (a peer that
        restarted first, whose candidates came before its new parameters; W3C's
        ``addIceCandidate`` refuses those, and its applications hold them back
        themselves).  Parameters take the held candidates that name their ufrag, leave out
        (and count) those of an earlier generation, and hold the others on, as of an ICE
        restart to come (a peer that restarted twice, its second generation's candidates
        overtaking its first's parameters); candidates held through :meth:`restart` stay
        held, for the parameters that come next: if those name another ufrag, they are
        left out and counted (a generation abandoned, or a stranger's).
        Those held while the peer's parameters are not known count against
        ``max_remote_candidates``; those of a generation to come have a room of their own
        (see :meth:`_hold_early`).

        An end-of-candidates may name its generation's ufrag (``ufrag``, the W3C
        ``usernameFragment``): one of an earlier generation's is ignored (``False``), and
        one that names a ufrag not seen yet waits for parameters that name it.  After an
        ICE restart, one that names no ufrag and comes before the peer's new parameters is
        taken for the earlier generation's (a late one would end the new generation before
        it began): it is ignored, and ``False`` is returned; the next one is the new
        generation's.  Signal the new parameters first."""
        if candidate is None:
            if ufrag is not None:
                remote = self.remote
                if remote is None:
                    if ufrag == self._previous_ufrag:
                        self._late_end_possible = False  # (the late one: it came)
                        return False
                    return self._name_end(ufrag)
                if ufrag != remote.ufrag:
                    # (An earlier generation's is ignored; another waits, as before the
                    # parameters, for those of a restart to come: see below.)
                    return not self.misnamed(ufrag) and self._name_end(ufrag)
            if self.remote is None and self._late_end_possible:
                self._late_end_possible = False  # (there was one: the next is this one's)
                return False
            if self.pending_remote:
                self.remote_end_held = True  # (taken once the held candidates are back)
                return True
            self.remote_complete = True
            self._maybe_fail()
            return True
        ufrag = candidate.username_fragment  # (Candidate.ufrag, without a call when unnamed)
        if ufrag is None and candidate.extensions:
            ufrag = candidate.extension("ufrag")
        remote = self.remote
        if ufrag is not None:
            if self.misnamed(ufrag):
                self.remote_candidates_dropped += 1
                return False
            if remote is not None and ufrag != remote.ufrag:
                return self._hold_early(candidate, ufrag)
        if self.remote_complete or self.remote_end_held:
            raise StateError("a remote candidate came after end-of-candidates")
        if candidate.component != 1:
            # (One data stream of one component, as WebRTC's with rtcp-mux: a peer's RTCP
            # candidates, component 2, pair with nothing here.)
            self.remote_candidates_dropped += 1
            return False
        if unreachable(candidate) and not (
            # (A .local one that names a ufrag, before the peer's parameters: held as it
            # is, and resolved once they come, see take_names.)
            ufrag is not None and remote is None and is_mdns_name(candidate.address)
        ):
            self.remote_candidates_dropped += 1
            return False
        address = remote_key(candidate)
        if ufrag is not None and remote is None:
            # (By address and ufrag: a peer that kept its sockets through a restart signals
            # the same address in both generations.  Each counts, or candidates naming
            # ever new ufrags at one address would be held past the cap.)
            held = self._held
            if held is None or (address, ufrag) not in held:
                # (A known address takes one held candidate in its place: see _remote_count.)
                known = address in self.remote_addresses and address != self._stale
                if not known or (held is not None and any(a == address for a, _u in held)):
                    self.check_room()
            if held is None:
                self._held = {(address, ufrag): candidate}
            else:
                held[address, ufrag] = candidate
            return True
        remotes = self.remote_addresses
        stale = self._stale
        if address in remotes and address != stale:
            self._adopt_known(candidate, address)
            return True
        if self._held is not None:
            if not self._counted(address):
                self.check_room()
        elif len(remotes) - (stale is not None) + self.pending_remote >= self.max_remote_candidates:
            self.check_room()  # (raises)
        # (What _take_remote does, inlined: the common way, once per candidate signalled.)
        self._add_remote(candidate)
        prime_success(candidate.address, candidate.port)
        return True

    def misnamed(self, ufrag: str | None) -> bool:
        """Whether a candidate that names ``ufrag`` is left out for it by
        :meth:`add_remote_candidate`: the peer's parameters are known and name another
        ufrag, and it names one of an earlier generation's (a candidate trickled late) or
        this agent's own (a signaling mistake).  (Before the peer's parameters come, any
        ufrag may be the peer's: some peers keep theirs through a restart, and ours may be
        theirs too.)  The shell asks before it holds a ``.local`` one back for resolving."""
        remote = self.remote
        return (
            ufrag is not None
            and remote is not None
            and ufrag != remote.ufrag
            and (ufrag in self._past_ufrags or ufrag == self.local.ufrag)
        )

    def early(self, ufrag: str | None) -> bool:
        """Whether a candidate that names ``ufrag`` is one of a generation to come (see
        :meth:`add_remote_candidate`): the peer's parameters are known, and name another
        ufrag, not seen before."""
        remote = self.remote
        return (
            ufrag is not None
            and remote is not None
            and ufrag != remote.ufrag
            and not self.misnamed(ufrag)
        )

    def _hold_early(self, candidate: Candidate, ufrag: str) -> bool:
        """Hold a candidate of a generation to come (see :meth:`early`) until parameters
        that name its ufrag come, after a restart.  Such candidates have a room of their own
        (``max_remote_candidates`` of them; past it, the new one is left out and counted):
        they take none of the generation of now's, which a peer that never restarts would
        otherwise crowd out.  A ``.local`` one is held as it is, and resolved once taken
        (see :meth:`take_names`).  Whether it was held."""
        if candidate.component != 1 or (
            unreachable(candidate) and not is_mdns_name(candidate.address)
        ):
            self.remote_candidates_dropped += 1  # (see add_remote_candidate)
            return False
        key = (remote_key(candidate), ufrag)
        early = self._early
        if early is None:
            early = self._early = {}
        elif key not in early and len(early) >= self.max_remote_candidates:
            self.remote_candidates_dropped += 1
            return False
        early[key] = candidate
        return True

    def take_names(self) -> list[Candidate]:
        """The ``.local`` candidates of a generation to come that parameters naming their
        ufrag took (:meth:`set_remote`): the shell resolves each and gives it back with
        :meth:`release_remote` (each is held as :meth:`hold_remote` holds one, of the
        generation of now)."""
        names, self._names = self._names or [], None
        return names

    def _name_end(self, ufrag: str) -> bool:
        """Hold an end-of-candidates that names ``ufrag`` until parameters with that ufrag
        come (:meth:`set_remote`).  (Every one, of as many generations as there were
        restarts, bounded: one late of an older generation must not take the place of the
        new one's.)  Whether it was held."""
        named = self._named_ends
        if named is None:
            named = self._named_ends = set()
        if ufrag not in named and len(named) >= MAX_NAMED_ENDS:
            return False
        named.add(ufrag)
        return True

    def _counted(self, address: Address) -> bool:
        """Whether a remote candidate at ``address`` is counted against
        ``max_remote_candidates`` already (a candidate for it is known, or held)."""
        held = self._held
        return (address in self.remote_addresses and address != self._stale) or (
            held is not None and any(key[0] == address for key in held)
        )

    def _remote_count(self) -> int:
        """The remote candidates that count against ``max_remote_candidates``: those held
        (see :meth:`add_remote_candidate`; one for each address and ufrag, but one of them at
        an address known, which has its place already), and the known ones but the address of
        before an ICE restart that stays for its data (see :meth:`restart`)."""
        remotes = self.remote_addresses
        stale = self._stale
        count = len(remotes) - (stale is not None)
        held = self._held
        if held:
            # Each held candidate counts, but one at each known address, which has its place.
            known = {a for a, _ufrag in held if a in remotes and a != stale}
            count += len(held) - len(known)
        return count

    def hold_remote(self) -> int:
        """The shell holds a signalled candidate back (a ``.local`` name it resolves, say):
        it counts against ``max_remote_candidates``, and an end-of-candidates waits for it.
        Returns the ICE generation it belongs to (give it to :meth:`release_remote`).

        Raises:
            StateError: it came after end-of-candidates.
            LimitError: no remote candidate more may come.
        """
        if self.remote_complete or self.remote_end_held:
            raise StateError("a remote candidate came after end-of-candidates")
        self.check_room()
        self.pending_remote += 1
        return self.generation

    def release_remote(
        self, candidate: Candidate | None, generation: int, *, hidden: bool = False
    ) -> bool:
        """A candidate held (:meth:`hold_remote`) comes back: taken as
        :meth:`add_remote_candidate` takes one (what it returns is returned; it may raise
        :class:`LimitError`), or, ``None``, left out and counted in
        ``remote_candidates_dropped``.  Then an end-of-candidates held for it is taken, once
        none is held.  Nothing is done for a candidate of an earlier generation (an ICE
        restart came meanwhile): ``False``.

        Raises:
            StateError: no candidate is held.

        ``hidden``: the peer signalled the candidate's address under an mDNS name only (the
        shell resolved it).  A relayed candidate of ours pairs with none such: the TURN
        server would learn the address the peer hid (draft-ietf-mmusic-mdns-ice-candidates
        §3.3.2; a check the peer sends to our relayed candidate from there still pairs)."""
        if generation != self.generation:
            return False
        if self.pending_remote <= 0:
            raise StateError("release_remote() without a candidate held (hold_remote)")
        self.pending_remote -= 1
        end_held, self.remote_end_held = self.remote_end_held, False  # (it came before this)
        try:
            if candidate is None:
                self.remote_candidates_dropped += 1
                self.left_out += 1
                return False
            if hidden:
                key = remote_key(candidate)
                known = self.remote_addresses.get(key)
                marked = False
                if known is None or known.type is CandidateType.PRFLX or key == self._stale:
                    # (Else signalled as it is too.  Learned from the peer's check, or the
                    # pair of before a restart's, it was not signalled: hidden all the same.)
                    if self._hidden is None:
                        self._hidden = set()
                    marked = key not in self._hidden
                    self._hidden.add(key)
                self._hiding = True
                try:
                    return self.add_remote_candidate(candidate)
                finally:
                    self._hiding = False
                    if marked and key not in self.remote_addresses and self._hidden:
                        self._hidden.discard(key)  # (left out, past the cap: hides nothing)
            return self.add_remote_candidate(candidate)
        finally:
            if end_held:
                self.add_remote_candidate(None)  # (held again while others are pending)

    def check_room(self) -> None:
        """Raise :class:`LimitError` if no remote candidate more may come (those held by
        the shell counted)."""
        if self._remote_count() + self.pending_remote >= self.max_remote_candidates:
            raise LimitError(
                f"more than {self.max_remote_candidates} remote candidates "
                "(AgentConfig.max_remote_candidates)"
            )

    def _take_remote(self, candidate: Candidate) -> None:
        """A signalled candidate of the peer's generation of now: learned and paired."""
        if unreachable(candidate):
            self.remote_candidates_dropped += 1
            return
        address = remote_key(candidate)
        if address in self.remote_addresses and address != self._stale:
            self._adopt_known(candidate, address)
            return
        self._add_remote(candidate)
        # The answer to the peer's first check from this address (the check of a host
        # candidate comes from it), made ready now, while signaling goes on.
        prime_success(candidate.address, candidate.port)

    def _adopt_known(self, candidate: Candidate, address: Address) -> None:
        """A signalled candidate at a known remote ``address``: adopted (see
        :meth:`_adopt_signalled`); and one hidden behind a name (see :meth:`release_remote`),
        now signalled as it is, is hidden no more: our relayed candidates pair with it, as
        in the other order."""
        self._adopt_signalled(candidate)
        hidden = self._hidden
        if hidden and address in hidden and not self._hiding:
            hidden.discard(address)
            disclosed = self.remote_addresses[address]
            for local, base in self.local_candidates:
                if local.type is _RELAY:
                    self._add_pair(local, disclosed, base)

    def _adopt_signalled(self, candidate: Candidate) -> None:
        """A signalled candidate whose address was learned first as peer-reflexive (its
        check outran signaling, or a ``.local`` name's resolving) takes the learned one's
        place, with its own type, priority and foundation (RFC 8838 §11.4).  When that is
        the selected pair's remote candidate, the pair is said anew (see
        :meth:`_said_anew`)."""
        address = remote_key(candidate)
        known = self.remote_addresses[address]
        if known.type is CandidateType.PRFLX and candidate.type is not CandidateType.PRFLX:
            self.remote_addresses[address] = candidate  # in its place: the order is kept
            self.checklist.replace_remote(known, candidate, controlling=self.controlling)
            self._add_remote(candidate)  # (signalled: paired with every local candidate now)
            selected = self.selected
            if selected is not None and selected.remote is candidate:
                self._said_anew(selected)

    def _said_anew(self, pair: Pair) -> None:
        """The selected ``pair`` is now named by other candidates (a signalled or gathered
        one in the place of a peer-reflexive one): the same path, said again
        (:class:`SelectedPairChanged`), unless ICE is over (failed or closed), when no pair
        carries data."""
        if not self.finished:
            self._say_selected(pair)

    def _say_selected(self, pair: Pair) -> None:
        public = pair.public()
        self._said_pair = (pair, public)
        self._emit(SelectedPairChanged(public))

    def _add_remote(self, candidate: Candidate) -> None:
        """A remote candidate (in the place of the one at its address, if any), paired with
        every local candidate (see ``_paired_with_every_local``)."""
        address = remote_key(candidate)
        if address == self._stale:
            # (Signalled, or learned, anew: a candidate of these checks.  Its data window,
            # and its TCP connection's, stay: ``_previous_far``.)
            self._stale = None
        self.remote_addresses[address] = candidate
        if self.local.lite or not _paired_with_every_local(candidate):
            return
        for local, base in self.local_candidates:
            if CheckList.is_local_pairable_type(local, nohost=self.nohost):
                self._add_pair(local, candidate, base)

    @property
    def remote_candidates(self) -> list[Candidate]:
        """The remote candidates, signalled or peer-reflexive, in the order learned (not the
        address of before an ICE restart that stays for its data: see :meth:`restart`).

        A TCP active candidate signalled at the port its connection then came from is
        listed once, as the peer-reflexive candidate learned from it, which pairs (see
        :func:`remote_key`)."""
        stale = self._stale
        held = self.remote_addresses
        return [
            c
            for address, c in held.items()
            if address != stale
            and not (
                address[1] == 9 + TCP_KEY
                and c.port != 9
                and (c.address, c.port + TCP_KEY) in held
                and (c.address, c.port + TCP_KEY) != stale
                and held[c.address, c.port + TCP_KEY].tcp_type is TcpType.ACTIVE
            )
        ]

    def gather_anew(self) -> None:
        """Local gathering starts again (an ICE restart that gathers anew): the local
        candidates are forgotten (the shell adds those it keeps again, with the new ones,
        by :meth:`add_local_candidate`), and gathering is no longer complete."""
        self.local_candidates = ()
        self.local_complete = False

    def set_local_complete(self) -> None:
        """Local gathering is complete."""
        self.local_complete = True
        self._maybe_fail()

    def transport_lost(self, base: int, now: float) -> None:
        """Transport ``base`` is gone for good: a TURN allocation that ended after it was
        granted (the server refused to refresh it, or the connection to it was lost).

        Its candidates pair no more, and its pairs fail with their checks.  If the selected
        pair was one of them, ICE fails now: no data can go that way again, nor can consent
        be refreshed there (RFC 7675), and once nominated no other pair may be selected
        without an ICE restart (RFC 8445 §8.1.1).  Without this the state would stay
        connected until consent expired, ``failed_timeout`` later.  (Its candidates go
        even when ICE is over: a restart pairs them no more.)"""
        self.local_candidates = tuple(entry for entry in self.local_candidates if entry[1] != base)
        if self.finished:
            return
        self._lose(lambda pair: pair.base == base, now)

    def path_lost(self, base: int, address: Address, now: float) -> None:
        """The path from transport ``base`` to ``address`` is gone for good: an ICE-TCP
        connection that could not open, or closed (it is not opened again).  Its pair fails
        with its checks; the transport's other pairs are left alone.  If the pair was the
        selected one, ICE fails now, as :meth:`transport_lost` says."""
        if self.finished:
            return
        self._lose(lambda pair: pair.base == base and pair.remote_address == address, now)
        # The far end of a connection the peer opened (learned, peer-reflexive) is gone
        # with it: no connection comes from there again (a new one, from a new port), and
        # it held a place under max_remote_candidates for the generation: 200 connections
        # come and gone left the peer no room for another.
        key = _tcp_key(address)
        remote = self.remote_addresses.get(key)
        if (
            remote is not None
            and remote.type is _PRFLX
            and remote.tcp_type is TcpType.ACTIVE
            and key != self._stale
            and not self.finished
            # (By key, not the candidate: a pair failed here before and found again by a
            # check from the same port holds the candidate of then.)
            and all(
                pair.state is _PAIR_FAILED
                for pair in self.checklist
                if remote_key(pair.remote) == key
            )
        ):
            del self.remote_addresses[key]

    def previous_path_lost(self, base: int, address: Address) -> None:
        """An ICE-TCP connection kept from before an ICE restart closed, and no check of
        this generation went over it: the pair of before on it (if it was that) carries data
        no more; this generation's pairs are left alone (their first check opens a
        connection of its own, or the peer does)."""
        previous = self._previous
        if previous is not None and previous.base == base and previous.remote_address == address:
            self._forget_previous()

    def _lose(self, lost: Callable[[Pair], bool], now: float) -> None:
        """The pairs ``lost`` picks fail with their checks, for good (see
        :meth:`transport_lost`)."""
        previous = self._previous
        if previous is not None and lost(previous):
            self._forget_previous()  # (the pair of before a restart: data goes there no more)
        live = self._live
        if live:
            for tid in [tid for tid, check in live.items() if lost(check.pair)]:
                del live[tid]
            self._live = live or None
        late = self._late
        if late:
            for tid in [tid for tid, check in late.items() if lost(check.pair)]:
                del late[tid]
            self._late = late or None
        if self._urgent:
            self._urgent = [c for c in self._urgent if not lost(c.pair)] or None
        if self._triggered:
            self._triggered = [p for p in self._triggered if not lost(p)] or None
        if self._resend:
            self._resend = [
                (tid, at) for tid, at in self._resend if live is None or tid in live
            ] or None
        for name in ("_spare_check", "_spare_nomination", "_spare_ping"):
            spare: _Spare | None = getattr(self, name)
            if spare is not None and lost(spare[0]):
                setattr(self, name, None)
        # Every pair lost fails first, and only then is the rest looked at: failing them
        # one by one would let a nomination, say, move on to the next pair of the same base,
        # not failed yet.
        for pair in self.checklist:
            if lost(pair):
                pair.state = _PAIR_FAILED
                pair.transaction = None
                if self._nominating is pair:
                    self._nominating = None
                if self._pingback is pair:
                    self._pingback = None
        selected = self.selected
        if selected is not None and lost(selected):
            self._set_state(ConnectionState.FAILED)
            return
        self._maybe_nominate(now)
        self._maybe_fail(now)
        self._maybe_complete()

    def close(self) -> None:
        """The agent closes: every check stops."""
        self._set_state(ConnectionState.CLOSED)

    # ------------------------------------------------------------------ queries

    def drain_events(self) -> Sequence[Event]:
        """The events produced since the last call, oldest first."""
        events = self._events
        if events is None:
            return ()
        self._events = None
        return events

    def _emit(self, event: Event) -> None:
        events = self._events
        if events is None:
            self._events = [event]
        else:
            events.append(event)

    @property
    def previous_remote(self) -> Address | None:
        """After an ICE restart, the remote address of the pair of before, while data from
        it still counts (see :meth:`restart`); else ``None``."""
        return self._previous_far

    def is_previous_remote(self, address: Address, *, tcp: bool = False) -> bool:
        """Whether ``address`` (over a TCP connection: ``tcp``) is :attr:`previous_remote`."""
        return (_tcp_key(address) if tcp else address) == self._previous_far

    def is_remote_address(self, address: Address, *, tcp: bool = False) -> bool:
        """Whether data from ``address`` (over a TCP connection: ``tcp``) comes from a known
        remote candidate."""
        return (_tcp_key(address) if tcp else address) in self.remote_addresses

    def no_pair_reason(self) -> str:
        """Why ICE failed with no pair selected, as the shell's error says it:
        :data:`NO_PAIR_WORKS`, or that some pairs worked and none was nominated in time (a
        controlled agent says whether the controlling peer nominated none, one that
        took the controlled role too, say, or a pair that did not pass this agent's
        check); with what the failure owes to the peer's 401s, to the pair cap and to the
        cap on remote candidates (peer-reflexive ones it left out: an ICE-TCP connection's
        other end is one)."""
        pairs = self.checklist
        worked = sum(1 for pair in pairs if pair.state is _PAIR_SUCCEEDED)
        if not worked:
            reason = NO_PAIR_WORKS
        else:
            reason = (
                f"no pair was selected within failed_timeout "
                f"({self.timing.failed_timeout:g} s), "
                f"though {worked} pair{'s' if worked > 1 else ''} worked"
            )
            if not self.controlling:
                nominated = self._peer_nominated  # (its pair may be gone: pruned, failed)
                reason += (
                    ": the pair the controlling peer nominated did not pass this agent's check"
                    if nominated
                    else ": the controlling peer nominated none"
                )
        capped = len(self._prflx_capped or ())
        if capped:
            more = " or more" if capped >= MAX_CAPPED_KEPT else ""
            reason += (
                f"; {capped}{more} peer-reflexive candidate{'s' if capped > 1 else ''} past "
                f"the cap (max_remote_candidates={self.max_remote_candidates}) went unlearned"
            )
        return f"{reason}{_unauthorized(self)}{_unchecked(self)}"

    def selected_pair(self) -> CandidatePair | None:
        """The selected pair as the user sees it: the pair data goes over (see
        :attr:`data_pair`), or if none does, the last one selected; as it was last said
        (:class:`SelectedPairChanged`): once ICE is over (failed or closed), a candidate
        signalled in the place of a peer-reflexive one changes the pair, but says nothing
        (see :meth:`_said_anew`), nor does a restart after."""
        pair = self._named_pair
        if pair is None:
            return None
        said = self._said_pair
        if said is not None and said[0] is pair:
            return said[1]
        return pair.public()

    def pair_statistics(self) -> tuple[PairStatistics, ...]:
        """Each pair's counters and round-trip times, highest priority first; the pair that
        :meth:`selected_pair` names is flagged, and listed last if the check list no longer
        holds it (from before an ICE restart)."""
        selected = self._named_pair
        pairs = tuple(self.checklist)
        if selected is not None and selected not in pairs:
            pairs += (selected,)
        rows = tuple(pair.statistics(selected=pair is selected) for pair in pairs)
        said = self._said_pair
        if said is None or said[0] is not selected or said[1] == said[0].public():
            return rows
        # (The selected pair as selected_pair says it, as last said.)
        return tuple(
            dataclasses.replace(row, pair=said[1]) if row.selected else row for row in rows
        )

    # ------------------------------------------------------------------ scheduling

    def _maybe_start(self, now: float) -> None:
        if self._wanted and self.remote is not None and self.state is _STATE_NEW:
            self._checking_since = now
            self._next_paced = now  # (a clock may read below 0: the first check goes now)
            self._set_state(ConnectionState.CHECKING)
            self._maybe_fail(now)  # (nothing to check, and nothing can come)

    @property
    def _checking(self) -> bool:
        return self._checking_since is not None and not self.finished

    def poll_check(self, now: float) -> Check | None:
        """The next check to start now, or ``None`` (pacing by Ta, RFC 8445 §6.1.4.2).

        Nomination and consent checks go out at once; triggered checks come before ordinary
        ones, and both wait their turn of Ta.
        """
        if self._checking_since is None or self.finished or self.remote is None:
            return None
        urgent = self._urgent
        if urgent:
            if len(urgent) == 1:
                self._urgent = None
            return urgent.pop(0)
        if self.local.lite or now < self._next_paced:
            return None
        pair = None
        triggered = self._triggered
        if triggered:
            while triggered:
                candidate = triggered.pop(0)
                if candidate.state is _PAIR_WAITING:
                    pair = candidate
                    break
            if not triggered:
                self._triggered = None
        if pair is None and (self.selected is None or self._better_to_check()):
            pair = self.checklist.next_ordinary()
        if pair is None:
            self._maybe_complete()
            return None
        self._next_paced = now + self.timing.ta
        nominating = self.controlling and self.nomination is _AGGRESSIVE
        if nominating and self.selected is not None:
            # Once a pair is selected, a check goes without USE-CANDIDATE, as under
            # regular nomination, and a pair that succeeds above the selected one is
            # nominated then (see _pair_succeeded): a controlled peer that follows the
            # latest nomination is not moved off the pair in use.  How the peer would rank
            # a pair not yet proved is a guess: a base behind a NAT that no check of it has
            # shown yet is ranked by its host candidate's priority, and its nomination,
            # below the selected pair as the peer saw it, went on for whole transactions
            # (the agg50 review; one round trip more to move up is the price).
            nominating = False
        check = self._start_check(pair, nominating=nominating, now=now)
        if self.selected is not None and self._triggered is None:
            self._maybe_complete()  # (the last triggered check started: cancelled, it may be)
        return check

    def poll_resend(self) -> Sequence[tuple[bytes, float]]:
        """Checks to send again before their RTO: ``(transaction id, when)`` pairs.  The
        shell sends that transaction once more at ``when``, unless a response came first
        (it stays the same transaction, so a response to any copy of it counts).

        A request from the peer on a pair whose ordinary check is in flight (RFC 8445
        §7.3.1.4) may mean that the way has just opened (the peer's NAT, or the TURN server's
        permission, now expects us).  Not at once, though: most likely the peer's check
        crossed ours on the wire, our answer on its way.  If the peer's request reached us
        A after our latest copy of the check went, that copy (if it got through) is
        answered by about 2A after it; the check goes out again then (at least
        :data:`RESEND_MIN` after), once per check, or at once, at each such request, if A is
        past ``Timing.rto`` (the copy was lost, to loss that lasts, or the way has only now
        opened: after an outage).  The rule scales with the path and with the load of the
        process: a loaded process answers late, and does not flood itself with copies; and
        a check that a TURN server dropped goes out again within milliseconds.  A request
        that nominates the pair (the peer waits for nothing but our check) has it sent
        again at once, at each such request, as does a request on a pair whose check the
        peer answered 401 (it came before our parameters did: no copy of ours is on its
        way), or that 401 coming after such a request, once a transaction (over ICE-TCP,
        where no copy goes, the pair is checked anew instead).  Our own regular nomination
        goes again only when A is past ``Timing.rto``: it goes over a pair already proved,
        where only loss loses a copy.
        """
        resend = self._resend
        if resend is None:
            return ()
        self._resend = None
        return resend

    def _start_check(
        self, pair: Pair, *, nominating: bool, now: float, consent: bool = False
    ) -> Check:
        assert self.remote is not None
        local = pair.local
        controlling = self.controlling
        key = (local.priority, local.component, controlling, nominating, self.tiebreaker)
        # A check made ahead (see prepare) for this pair in this role, if any: used once.
        nomination = nominating and self.nomination is not _AGGRESSIVE
        if consent:
            spare = self._spare_ping
        else:
            spare = self._spare_nomination if nomination else self._spare_check
        if _spare_fits(spare, pair, key):
            if consent:
                self._spare_ping = None
            elif nomination:
                self._spare_nomination = None
            else:
                self._spare_check = None
            tid, message = spare[2], spare[3]
        else:
            tid, message = self._encode_check(local, key)
        live = self._live
        if live is None:
            live = self._live = {}
        elif not consent and pair.transaction is not None:
            # A new check of the pair replaces the one in flight (a consent check runs
            # beside it: it is never the pair's check).
            live.pop(pair.transaction, None)
        if not consent:
            pair.state = _PAIR_IN_PROGRESS
            pair.transaction = tid
        # (Positional: a dataclass takes keywords at twice the cost, on every check.)
        if consent and self._asked_at is None and pair is self.selected:
            self._asked_at = now
        check = Check(
            pair,  # pair
            tid,  # transaction_id
            message,  # message
            pair.remote_address,  # destination
            pair.base,  # base
            self._schedules[1] if consent else self._check_schedule(),  # schedule
            nominating,  # nominating
            consent,  # consent
            controlling,  # controlling
            now,  # started
        )
        live[tid] = check
        self.checks_sent += 1
        pair.checks_sent += 1
        pair.sent_at = now
        return check

    def _check_schedule(self) -> tuple[float, ...]:
        """The schedule of a check starting now.  Its RTO is the larger of ``Timing.rto``
        and ``Timing.ta`` times the pairs waiting or in progress, this one included (RFC
        8445 §14.3: with many pairs to check, each is sent again about once per round of
        the pacing, and the checks' retransmissions stay within the pacing's rate)."""
        timing = self.timing
        checklist = self.checklist
        ta = timing.ta
        if len(checklist) * ta <= timing.rto:  # (however many are busy: most often)
            return self._schedules[0]
        busy = 0
        for pair in checklist:
            state = pair.state
            if state is _PAIR_WAITING or state is _PAIR_IN_PROGRESS:
                busy += 1
        rto = busy * ta
        if rto <= timing.rto:
            return self._schedules[0]
        return _scaled_schedule(timing, round(rto, 3))

    def _encode_check(self, local: Candidate, key: _TemplateKey) -> tuple[bytes, bytes]:
        """A new transaction id, and the check from ``local`` with it: USERNAME, PRIORITY,
        ICE-CONTROLLING (+ USE-CANDIDATE) or ICE-CONTROLLED, then MESSAGE-INTEGRITY and
        FINGERPRINT (RFC 8445 §7.1.1-7.1.3, §7.2.2)."""
        tid = self._new_tid()
        templates = self._templates
        template = None if templates is None else templates.get(key)
        if template is None:
            template = self._check_template(local, key)
        return tid, template.encode(tid)

    def prepare(self, *, ping: bool = False) -> None:
        """Spare work, for the shell to do once it has sent what it had to send: make ahead
        the checks most likely to go next, so that when one is due it goes out without
        being built (a transaction id and a signed message) on the way.

        They are the next ordinary check (also the likeliest triggered check: the peer
        checks the same pair), and, for a controlling agent under regular nomination, the
        nomination of the highest pair being checked.  With ``ping`` (the shell asks so
        when the peer is not an agent of its own run, where a ping-back goes at once), a
        controlled agent also makes ahead the ping-back of the highest pair being checked
        (see :meth:`ping_back_now`).  Nothing is sent and no state changes but this cache
        of at most three messages, dropped once a pair is selected; a check made ahead
        that is not used costs only its making.
        """
        if self.remote is None or self.local.lite or self.selected is not None or self.finished:
            return
        controlling = self.controlling
        regular = self.nomination is not _AGGRESSIVE
        checklist = self.checklist
        pair = checklist.peek_ordinary()
        if pair is None:
            self._spare_check = None
        else:
            self._spare_check = self._spare_for(
                self._spare_check, pair, controlling and not regular
            )
        if controlling and regular and self._nominating is None:
            pair = checklist.first_in_progress()
            if pair is None:
                self._spare_nomination = None
            else:
                self._spare_nomination = self._spare_for(self._spare_nomination, pair, True)
        elif not controlling:
            self._spare_nomination = None  # (made before a role switch)
        if ping and not controlling:
            pair = checklist.first_in_progress()
            # (A pair the peer checked before ours went wants no ping soon: _pair_succeeded.)
            if pair is None or pair.pinged_back or pair.peer_checked:
                self._spare_ping = None
            else:
                self._spare_ping = self._spare_for(self._spare_ping, pair, False)
        else:
            self._spare_ping = None

    def _spare_for(self, spare: _Spare | None, pair: Pair, nominating: bool) -> _Spare:
        """``spare`` if it is the check ``pair`` would send now, else that check made anew."""
        local = pair.local
        key = (local.priority, local.component, self.controlling, nominating, self.tiebreaker)
        if _spare_fits(spare, pair, key):
            return spare
        return (pair, key, *self._encode_check(local, key))

    def _prepare_checks(self, local: Candidate) -> None:
        """Build the templates of the first checks from ``local`` now, while signaling is
        still going on, rather than on the way to the first check (see ``_check_template``)."""
        if self.local.lite or self.selected is not None or self.finished:
            return  # no checks to come, or none to keep templates for
        nominations = (False, True) if self.controlling else (False,)
        for nominating in nominations:
            key = (local.priority, local.component, self.controlling, nominating, self.tiebreaker)
            if self._templates is None or key not in self._templates:
                self._check_template(local, key)

    def _check_template(
        self, local: Candidate, key: tuple[int, int, bool, bool, int]
    ) -> BindingRequestTemplate:
        """The template of the checks on pairs with ``local``'s priority and component, in
        the current role.  The user name and the remote key never change once the remote
        parameters are set (``set_remote``), so they need not be part of ``key``.

        Templates are kept until a pair is selected: the checks after that (consent, and
        the odd triggered check) are rare and make theirs afresh, and an idle agent holds
        none."""
        assert self.remote is not None
        template = BindingRequestTemplate(
            f"{self.remote.ufrag}:{self.local.ufrag}",
            self._prflx_priority(local),
            controlling=self.controlling,
            tiebreaker=self.tiebreaker,
            use_candidate=self.controlling and key[3],
            key=self._remote_key,
        )
        if self.selected is None and not self.finished:
            templates = self._templates
            if templates is None:
                self._templates = {key: template}
            else:
                if len(templates) >= 256:
                    templates.clear()
                templates[key] = template
        return template

    def _prflx_priority(self, local: Candidate) -> int:
        """PRIORITY of a check from ``local``: as if it were peer-reflexive (§7.1.1; over
        TCP with the direction preference of a peer-reflexive candidate, RFC 6544 §4.2)."""
        preference = (local.priority >> 8) & 0xFFFF
        if local.tcp_type is not None:
            preference = tcp_local_preference(
                CandidateType.PRFLX, local.tcp_type, preference & 0x1FFF
            )
        return candidate_priority(CandidateType.PRFLX, preference, local.component)

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` (or :meth:`poll_check`) next has something to do."""
        if self.finished:
            return None
        timing = self.timing
        selected = self.selected
        since = self._checking_since
        deadline: float | None = None
        if (
            since is not None
            and self.remote is not None  # (after a restart, checks wait for it)
            and not self.local.lite
            and (
                self._triggered
                or (selected is None and self.checklist.has_ordinary_work())
                or (selected is not None and self._better_to_check())
            )
        ):
            deadline = self._next_paced
        if selected is None:
            if since is not None:
                due = since + timing.failed_timeout
                if self._fail_held:
                    due = since + self._pac_for()  # (RFC 8863: when the held failure comes)
                if deadline is None or due < deadline:
                    deadline = due
                if self._pingback is not None:
                    due = self._pingback.pingback_at
                    if due < deadline:
                        deadline = due
                nudge = self._nudge_at
                if nudge is not None and nudge < deadline and not self.controlling:
                    deadline = nudge
            if self._previous is not None:
                # The pair of before a restart carries data until its consent expires.
                due = self._last_consent + self._consent_for
                if deadline is None or due < deadline:
                    deadline = due
            first_valid = self._first_valid_at
            if (
                first_valid is not None
                and self.controlling
                and self._nominating is None
                and self.nomination is not _AGGRESSIVE
            ):
                best = self.checklist.best_valid()
                if best is not None:
                    # (Now, if end-of-candidates has come since: see _maybe_nominate.)
                    due = first_valid
                    if not self._none_better(best):
                        due += self._nomination_delay(best)
                    if deadline is None or due < deadline:
                        deadline = due
            return deadline
        # Connected: consent (RFC 7675), and the peer heard from.
        due = self._last_consent + self._consent_for
        if deadline is None or due < deadline:
            deadline = due
        remapped, selected = self._remapped_at, self.selected
        if remapped is not None and not self._unheard and selected is not None:
            due = remapped + 2 * self._unheard_after(selected)
            if due < deadline:
                deadline = due
        if self.state is not _STATE_DISCONNECTED:
            due = self._last_alive + self._silence()
            asked = self._asked_at
            if asked is not None and asked >= due:  # (asked only then: see on_timer)
                due = asked + self._schedules[1][-1]
            if due < deadline:
                deadline = due
        next_consent = self._next_consent
        if next_consent is not None and next_consent < deadline:
            deadline = next_consent
        stale_until = self._previous_until
        if stale_until is not None and stale_until < deadline:
            deadline = stale_until
        return deadline

    def on_timer(self, now: float) -> None:
        """Time reached a deadline: nominate, keep consent, or declare failure."""
        if not self._checking:
            return
        if self.selected is None:
            assert self._checking_since is not None
            if now >= self._checking_since + self.timing.failed_timeout:
                self._set_state(ConnectionState.FAILED)
                return
            if self._fail_held and now >= self._checking_since + self._pac_for():
                self._maybe_fail(now)  # (the PAC timer ended: fail, if nothing changed)
                if self.finished:
                    return
                self._fail_held = False
            if self._previous is not None and now >= self._last_consent + self._consent_for:
                self._forget_previous()  # (its consent expired: RFC 7675)
            pair = self._pingback
            if pair is not None and now >= pair.pingback_at:
                self._ping_back(pair, now)
            nudge = self._nudge_at
            if nudge is not None and now >= nudge:
                self._nudge(now)
            self._maybe_nominate(now)
            return
        # The same sums as next_deadline's (``last + timeout``), not ``now - last``: in
        # floating point the two can disagree, and a deadline that came while its test stays
        # false would have the shell wake again and again.
        if now >= self._last_consent + self._consent_for:
            self._set_state(ConnectionState.FAILED)
            return
        if self._previous_until is not None and now >= self._previous_until:
            self._forget_previous()  # (data from the pair of before counts no more)
        remapped = self._remapped_at
        if (
            remapped is not None
            and not self._unheard
            and now >= remapped + 2 * self._unheard_after(self.selected)
        ):
            self._unheard = True  # (see _maybe_remapped)
            if self.state is not _STATE_DISCONNECTED:
                self._set_state(ConnectionState.DISCONNECTED)
        silent = self._last_alive + self._silence()
        if now >= silent and self.state is not _STATE_DISCONNECTED:
            asked = self._asked_at
            if asked is None and not self.local.lite:
                # Nothing was asked since the peer was last heard: this agent's own loop
                # stalled (consent checks go twice per disconnected_timeout at least).  It
                # asks now, and says disconnected if that goes unanswered for its RTO.
                self._next_consent = now
            elif asked is None or asked < silent or now >= asked + self._schedules[1][-1]:
                self._set_state(ConnectionState.DISCONNECTED)
        stranger = self._stranger
        if stranger is not None and now - self._last_alive >= self._quiet_after(self.selected):
            self._stranger = None
            if now < stranger[1] + self._consent_for:
                self._maybe_probe(self.selected, stranger[0], now)
        if self._next_consent is not None and now >= self._next_consent:
            self._next_consent = now + self._consent_interval() * self._jitter()
            if not self.local.lite:
                self._push_urgent(
                    self._start_check(self.selected, nominating=False, consent=True, now=now)
                )

    def on_stranger(self, base: int, source: Address, now: float) -> bool:
        """Data came to transport ``base`` from ``source``, which is no remote candidate's
        address (the shell drops it).  Like a keepalive indication from there, it may be
        the peer's from a new mapping of a NAT in front of it: to the selected pair's base,
        while the peer is silent on the pair, ``source`` is checked (see
        :meth:`_maybe_probe`: one at a time, rate-limited, kept till the silence comes).
        Returns whether a check was started (the shell sends it)."""
        selected = self.selected
        if selected is None or selected.base != base or self.finished:
            return False
        probe = self._probe
        self._maybe_probe(selected, source, now)
        return self._probe is not probe

    def on_data(self, now: float, *, selected: bool = False) -> None:
        """Data (not STUN) came from the peer since the shell last said so; ``now`` is when
        the shell noticed it, no earlier than it came.

        Data is a sign of life, as a request of the peer's is: it keeps the state from
        ``disconnected``, and brings it back from there (as Pion counts any packet).  For a
        full agent it is not consent, which only answers to its checks give (RFC 7675
        §5.1): data does not keep the state from ``failed``.  An ICE-lite agent sends no
        checks, and the full peer's keep its consent: but a peer that checks only an idle
        pair (Pion) sends none while data flows both ways, and then its data over the
        selected pair (``selected``: some came from the pair's remote address) is what
        shows it still wants the session: consent, for a lite agent.
        """
        if self.selected is None:
            return
        if selected and self.local.lite:
            if now > self._last_consent:
                # (Dated when it came: a sign of life told since, a keepalive indication,
                # may be later, and does not make it stale.)
                self._last_consent = now
            if now > self._data_at:
                self._data_at = now
                pair = self.selected
                if pair.paced_at - pair.heard_gap < now < pair.paced_at:
                    # Told after the check that ended the gap it came in (the shell tells
                    # a lite agent's data at its next deadline, a check at once): that gap
                    # had data.
                    pair.data_in_gap = True
        self._heard_since_remap(now)
        if now > self._last_alive:
            self._alive(now)

    def _push_urgent(self, check: Check) -> None:
        urgent = self._urgent
        if urgent is None:
            self._urgent = [check]
        else:
            urgent.append(check)

    def _push_triggered(self, pair: Pair) -> None:
        triggered = self._triggered
        if triggered is None:
            self._triggered = [pair]
        else:
            triggered.append(pair)

    # ------------------------------------------------------------------ outcomes of checks

    def on_response(
        self,
        check: Check,
        response: stun.Message,
        source: Address,
        now: float,
        *,
        base: int | None = None,
        sent_again: bool = False,
    ) -> bool:
        """A response to ``check`` arrived from ``source``, on transport ``base`` (``None``:
        the check's own).  Returns whether it was accepted (a response that fails
        authentication is ignored, RFC 8445 §7.2.5.1; so is a message that is not a
        response, or has another transaction id: see :meth:`on_late_response` then).

        A success is timed, as the pair's round trip (see :meth:`pair_statistics`), unless
        the shell says that the check went more than once (``sent_again``): then nobody can
        tell which copy it answers (Karn's rule).

        A response that came from elsewhere than the check went to, or arrived on another
        transport than the check left from, fails the pair: the addresses are not symmetric
        (RFC 8445 §7.2.5.2.1).  ``source`` may be as an IPv6 socket gives it, ``(host, port,
        flowinfo, scope_id)``."""
        if response.transaction_id != check.transaction_id:
            # (Not this check's answer: a driver that matched it by something else than
            # its transaction, RFC 8489 §6.3.)
            self.on_late_response(response, source, now, base=base)
            return False
        if response.message_class is not _SUCCESS and response.message_class is not _ERROR:
            return False  # (a request with the check's id: the check itself, come back)
        live = self._live
        if live is None or live.get(check.transaction_id) is not check or self.finished:
            # (Not this generation's: a consent check on the pair of before an ICE restart,
            # say, whose answer still counts for that pair.)
            self.on_late_response(response, source, now, base=base)
            return False
        if not response.verify_integrity(self._remote_key):
            if response.message_class is _ERROR and not check.consent:
                error = response.get(stun.ErrorCode)
                if error is not None and error.code == 401:
                    self._on_unauthorized(check, now)
            return False
        # (A signed answer: the peer takes the credentials now, whatever it refused before,
        # its parameters of this generation still on their way then.)
        self.checks_unauthorized = 0
        self._answered_signed = True
        del live[check.transaction_id]
        if not live:
            self._live = self._refused_checks = None
        pair = check.pair
        pair.responses_received += 1
        pair.answered_at = now
        if (
            check.controlling != self.controlling
            and pair.state is _PAIR_WAITING
            and not check.consent
            and not _answered(response)
        ):
            # The role switched since this check went, and its pair waits to be checked
            # again in the new role (see _switch_role): a refusal of the old check says
            # nothing of the new one, which decides (as in on_timeout).
            pair.transaction = None
            return True
        if response.unknown_required:
            # RFC 8489 §6.3.3, §6.3.4: an unknown comprehension-required attribute in a
            # response means the transaction failed: no success, no role conflict, no
            # consent.
            if not check.consent:
                pair.transaction = None
                if self.cancelled(check):
                    self._nomination_ended(pair)  # (as its timeout would: see on_timeout)
                else:
                    self._pair_failed(pair, now)
            return True
        symmetric = _symmetric(check, source, base)
        if check.consent:
            if response.message_class is _SUCCESS and symmetric:
                if not sent_again and _read_in_time(check, now):
                    pair.timed(now - check.started)
                self._proven(pair, check, now)
                self._maybe_remapped(pair, response, now)
            elif symmetric and pair is self.selected and _forbidden(response):
                self._revoke_consent()
            return True
        pair.transaction = None
        if not symmetric:
            # RFC 8445 §7.2.5.2.1: non-symmetric transport addresses.
            self._pair_failed(pair, now)
            return True
        if response.message_class is _ERROR:
            error = response.get(stun.ErrorCode)
            if error is not None and error.code == 487:
                if self.cancelled(check):
                    # A late conflict on a check our final nomination cancelled: the peer
                    # took that nomination as the controlled agent, so the roles are
                    # settled; switching now would leave both sides controlled.
                    self._nomination_ended(pair)
                    return True
                remote = self.remote
                if remote is not None and remote.lite and not self.local.lite:
                    # A lite peer is always controlled, and the full agent controls (RFC
                    # 8445 §6.1.1): one that claims otherwise cannot be followed, or no one
                    # would nominate.  Its pair fails as any refused check's does.
                    self._pair_failed(pair, now)
                    return True
                # RFC 8445 §7.2.5.1: role conflict; switch, with a new tiebreaker, and
                # check again.
                if check.controlling == self.controlling:
                    self._switch_role("a role conflict: the peer answered 487")
                    self.tiebreaker = self._new_tiebreaker()
                self._check_again(pair)
                return True
            self._pair_failed(pair, now)
            return True
        mapped = response.get(stun.XorMappedAddress)
        if mapped is None:
            self._pair_failed(pair, now)
            return True
        if not sent_again and _read_in_time(check, now):
            pair.timed(now - check.started)
        self._pair_succeeded(pair, (mapped.address, mapped.port), check, now)
        return True

    def _maybe_move(self, pair: Pair, now: float) -> None:
        """A controlling agent: the peer's check came on ``pair``, proved, from a
        peer-reflexive address, while the selected pair has heard nothing from the peer for
        a while (see :meth:`_quiet_after`), and this agent's consent checks there have gone
        unanswered as long.  A NAT in front of the peer has mapped it anew:
        the peer's consent checks, on its selected pair, come from the new address, while
        this agent's go to the one it knew, which leads nowhere now.  The pair is nominated,
        and selected once that check succeeds, whatever its priority: to the peer it is the
        pair it has selected (its base, this agent's address).  Any base of this agent's:
        where the two sides had selected pairs of different bases (an aggressive race not
        yet settled), the peer's checks come to the base of its pair, not of ours (the
        lan51 review: 4 of 10000 random sessions with a rebinding failed so).  But not from
        the selected pair's remote address: the peer is where it was, and its check is a
        late one (retransmitted, or delayed on a lossy path) of a pair it did not select,
        no sign of a new mapping (a random session over a path that lost 30 % and delayed
        up to 3 s moved so, after completed, twice in about 25000).  Nor while our consent
        checks there are answered: the peer is still there, and a check of its other base
        behind the same NAT looks the same as one from a new mapping (the same random
        sessions moved so once in about 15000, the peer's checks on the pair lost for 3.4 s
        while our consent check 1.2 s before was answered).  And only to an address
        learned while a pair was selected: a new mapping's is new; the peer's other base's
        was learned as the checks went (after 18 s of a path that lost 70 % one way,
        unheard and unanswered, a controlling agent moved so as the path healed, once in
        about 10000 sessions).  (Nothing RFC
        8445 foresees: without it, the controlling agent's consent ran out while the peer's
        did not, and ICE failed on both sides; see :meth:`_maybe_remapped` for a NAT in
        front of this agent.)"""
        selected = self.selected
        if (
            selected is None
            or pair is selected
            or self._nominating is not None
            or pair.remote.type is not _PRFLX
            or pair.remote_address == selected.remote_address
            or self._late_prflx is None
            or remote_key(pair.remote) not in self._late_prflx
        ):
            return
        quiet = self._quiet_after(selected)
        if now - selected.heard_at < quiet or now - self._last_consent < quiet:
            return
        self._nominate(pair, now)
        self._moving = True

    def _maybe_rebound(self, pair: Pair, now: float) -> bool:
        """A controlled full agent: the peer's check came on ``pair``, proved, from a
        peer-reflexive address to the base of the selected pair, on which the peer has sent
        nothing for a while, and this agent's own consent checks there have gone unanswered
        for twice as long.  A NAT in front of the peer has mapped it anew, and the peer did
        not nominate the pair with its new address (a controlling trice agent does, see
        :meth:`_maybe_remapped`; Pion does not): ``pair`` is selected, and ``True``
        returned.  To the peer it is the pair it has selected.  Both conditions: the peer's
        checks from another of its bases behind the same NAT look the same on the wire, but
        come while the selected pair's consent holds."""
        selected = self.selected
        if (
            self.local.lite
            or selected is None
            or pair is selected
            or pair.base != selected.base
            or pair.remote.type is not _PRFLX
            or now >= pair.proven_at + self._consent_for
        ):
            return False
        quiet = self._quiet_after(selected)
        if now - selected.heard_at < quiet or now - self._last_consent < 2 * quiet:
            return False
        self._move_to(pair, now)
        self._maybe_complete()
        return True

    def _maybe_probe(self, selected: Pair, source: Address, now: float) -> None:
        """A keepalive indication (or data, see :meth:`on_stranger`) came to the selected
        pair's base from an address no pair of it stands for, while the peer has gone
        unheard there (no answer to this agent's
        consent checks for the quiet time): a NAT in front of an older peer (RFC 5245, which
        checks nothing once connected) may have mapped it anew, and its indications come
        from the new address while this agent's checks go to the forgotten one.  An
        indication carries no integrity: the address is checked (a check of this agent's,
        which only the peer can answer), as a peer-reflexive candidate of the selected
        remote candidate's priority; once that check succeeds the pair is moved to (see
        :meth:`_probed`).  One such check at a time, another address taken no sooner than
        a consent interval after it went.  An indication that comes before the silence (it
        may follow the rebinding closely) is kept, the last one, and its source checked
        once the silence comes (see :meth:`on_timer`), if within consent's time of it.
        (Not in RFC 8445: without it, such a peer's path was lost for good, and ICE failed
        when consent ran out.)"""
        if self.local.lite or selected.local.protocol != "udp":
            return
        if now - self._last_alive < self._quiet_after(selected):
            self._stranger = (source, now)
            return
        if self._probe is not None and now < self._probe_at + self._consent_interval():
            return
        local = self._base_candidate(selected.base)
        if local is None:
            return
        pair = self._pair_from(local, selected.base, source, selected.remote.priority)
        if pair is None or pair is selected or pair.state is _PAIR_IN_PROGRESS:
            return
        self._probe, self._probe_at = pair, now
        self._check_again(pair)

    def _probed(self, pair: Pair, now: float) -> None:
        """The check of :meth:`_maybe_probe` succeeded on ``pair``: the older peer is
        there.  Still unheard on the selected pair, a controlling agent nominates ``pair``
        and selects it once that check succeeds (as :meth:`_maybe_move`), a controlled one
        selects it at once (as :meth:`_maybe_rebound`: to the peer it is the pair it has
        selected, which it does not nominate again)."""
        self._probe = None
        selected = self.selected
        if selected is None or pair is selected:
            return
        if now - self._last_alive < self._quiet_after(selected):
            return  # (heard again meanwhile)
        if self.controlling:
            if self._nominating is None:
                self._nominate(pair, now)
                self._moving = True
        else:
            self._move_to(pair, now)

    def _move_to(self, pair: Pair, now: float) -> None:
        """Select ``pair`` in place of the selected one, whatever their priorities (see
        :meth:`_maybe_move`); consent on it is its own, from its last answered check."""
        self._make_selected(pair, now)
        self._last_consent = pair.proven_at
        self._last_alive = now
        self._asked_at = None
        self._next_consent = now  # (consent on the new pair, at once)
        self._set_state(ConnectionState.CONNECTED)

    def _maybe_remapped(self, pair: Pair, response: stun.Message, now: float) -> None:
        """A controlling agent's consent check on the selected pair was answered with
        another mapped address than the pair's: a NAT in front of it mapped the base anew
        (a rebinding: it forgot the mapping, or restarted).  The peer's own consent checks
        go to the address it knew, which leads nowhere now, and it hears this agent's from
        an address it does not know: the selected pair is nominated again, so that the
        peer, whose pair has gone quiet, follows it to the new address (see
        :meth:`_maybe_follow`).  To the peer the path is a new pair; here it is the same.

        A controlled agent cannot nominate: a controlling peer that moves by itself (trice
        does, see :meth:`_maybe_move`) sends to the new mapping once its own pair has gone
        quiet, one that does not (Pion 2.3) goes on sending to the forgotten one, while
        this agent's data and consent checks reach it; so does a controlled peer that
        does not follow the nomination.  If a full peer (a lite one sends no checks) stays
        unheard on the selected pair (no check there, no data) for twice the quiet time
        since the answer, or since it was last heard after it, the state becomes
        ``disconnected`` (consent answers do not bring it back; the peer heard does, as
        does another pair selected): only an ICE restart, which the application signals,
        mends that half of the path.  (A peer that keeps its pair may still check the new
        one once, when this agent's checks first come from the new address: that check
        comes here on the selected pair, and only puts the time off.)  The quiet time is
        an older peer's where it sent keepalive indications (see :meth:`_unheard_after`)."""
        if pair is not self.selected or self._nominating is not None:
            return
        mapped = response.get(stun.XorMappedAddress)
        valid = pair.valid_local
        if mapped is None or valid is None:
            return
        if (mapped.address, mapped.port) != valid.transport_address:
            if self.controlling:
                self._nominate(pair, now)
            remote = self.remote
            if self._remapped_at is None and remote is not None and not remote.lite:
                self._remapped_at = now

    def _unheard_after(self, pair: Pair) -> float:
        """The quiet time that judges the peer's silence on ``pair``, the selected one,
        since a new mapping: unheard for twice it, the peer did not follow (see
        :meth:`_maybe_remapped`).  The pace of the peer's checks (:meth:`_quiet_after`);
        but a peer that has sent keepalive indications on the selected pair is an older
        one (RFC 5245 §10), whose only sign while idle may be one of them every 15 s or
        more (libnice's, 25 s), with no check since connecting: 0.6 of consent's time (18
        s) at least.  (Pion, aioice and browsers send checks, which the pace follows.)"""
        quiet = self._quiet_after(pair)
        if self._indicating:
            older = self._consent_for / 2 * JITTER_MAX
            if older > quiet:
                return older
        return quiet

    def _heard_since_remap(self, now: float) -> None:
        """The peer was heard on the selected pair (a check, a keepalive indication, or
        data from it): after a new mapping (see :meth:`_maybe_remapped`), it reaches it."""
        remapped = self._remapped_at
        if remapped is not None and now > remapped:
            self._remapped_at = now
            self._unheard = False

    def on_timeout(self, check: Check, now: float) -> None:
        """``check`` got no response before its last deadline."""
        live = self._live
        if live is None or live.pop(check.transaction_id, None) is None:
            return
        if not live:
            self._live = self._refused_checks = None
        if self.finished:
            return
        if check.consent:
            if check.pair is self.selected:
                self._keep_late(check, now)
            return
        pair = check.pair
        pair.transaction = None
        if pair.state is _PAIR_WAITING:
            return  # (checked again since, as after a role switch: the new check decides)
        if self.cancelled(check):
            # RFC 8445 §8.1.2: a cancelled check's silence is no failure of the pair as
            # such: see _nomination_ended for where it goes (a check of the peer's on it
            # still triggers one).
            self._nomination_ended(pair)
            return
        if pair.heard_at >= check.started and not self._below_as_seen(pair):
            # (Not on a pair _below_as_seen: this agent uses the selected pair, and the
            # pair fails as any other; checked again, one whose answers stay lost would
            # hold ``completed`` back for good: see _in_progress_kept.)
            # Every answer to our check was lost, but the peer's checks on the pair kept
            # coming meanwhile: the path works, at least the peer's way, and the peer may
            # have nominated or selected the pair (it may be connected on it).  Failing the
            # pair, and ICE with it once no pair is left, would leave this side failed and
            # the peer connected: check again instead, as a request on a failed pair would
            # have us do (RFC 8445 §7.3.1.4).  ICE still fails at failed_timeout without a
            # selected pair.
            if (
                check.nominating
                and self.controlling
                and self.nomination is not _AGGRESSIVE
                and pair.valid_local is not None
            ):
                # Our nomination of a pair that succeeded: nominate again.
                pair.state = _PAIR_SUCCEEDED
                if self._nominating is pair:
                    self._nominating = None
                self._maybe_nominate(now)
                return
            if self._nominating is pair:
                # (An aggressive agent's nomination, which the check made again is not:
                # left set, it held back every later nomination, the move to a peer's new
                # mapping among them, for good.)
                self._nominating = None
            self._check_again(pair)
            return
        self._pair_failed(pair, now)

    def _keep_late(self, check: Check, now: float) -> None:
        """Keep a consent check whose RTO passed: an answer to it still counts, as long as
        it was sent within ``failed_timeout`` (RFC 7675 §5.1 counts an answer to any
        consent request of the last 30 s).  On a path slower than the RTO every answer
        comes late."""
        late = self._late
        if late is None:
            late = self._late = {}
        else:
            horizon = now - self._consent_for
            for tid in [tid for tid, old in late.items() if old.started < horizon]:
                del late[tid]
        late[check.transaction_id] = check

    def awaits_answer(self, transaction_id: bytes) -> bool:
        """Whether an answer with ``transaction_id`` may still be taken: one to a check in
        flight, to a consent check past its RTO (see ``_keep_late``), or to one made before
        an ICE restart on the pair of before (see :meth:`on_late_response`).  A shell that
        routes answers by transaction (a UDP mux) keeps the route while this holds: an
        answer that fails authentication leaves the check waiting."""
        return any(
            checks is not None and transaction_id in checks
            for checks in (self._live, self._late, self._previous_checks)
        )

    def on_late_response(
        self, response: stun.Message, source: Address, now: float, *, base: int | None = None
    ) -> bool:
        """A response came for no check in flight (the shell has none for its transaction
        id).  If it answers a consent check whose RTO passed (see ``_keep_late``), from
        where that check went, on the transport it left from, and authenticated, it
        refreshes consent.  So does one that answers a consent check on the pair of before
        an ICE restart, made before it (see :meth:`restart`), for that pair, which carries
        data until a new one is selected.  Returns whether it answered such a check."""
        if response.message_class is not _SUCCESS and response.message_class is not _ERROR:
            return False  # (a request: a check of ours, come back)
        tid = response.transaction_id
        late, key = self._late, self._remote_key
        check = None if late is None else late.get(tid)
        before = check is None  # (the pair of before's, then, if any: checked with its key)
        if before:
            late, key = self._previous_checks, self._previous_key
            check = None if late is None else late.get(tid)
        if late is None or check is None or self.finished:
            return False
        pair = check.pair
        if (before and pair is not self._previous) or not response.verify_integrity(key):
            return False
        del late[tid]
        if not late and not before:
            self._late = None
        pair.responses_received += 1
        pair.answered_at = now
        if response.unknown_required or not _symmetric(check, source, base):
            return True  # (the first: a failed transaction, see on_response)
        if response.message_class is _SUCCESS:
            if before or pair is self.selected:
                pair.timed(now - check.started)  # (a consent check goes once: no doubt here)
            if before:
                if now < self._last_consent + self._consent_for:  # (else expired: §5.1)
                    self._last_consent = max(self._last_consent, check.started)
            else:
                self._proven(pair, check, now)
        elif _forbidden(response):
            if before:
                self._forget_previous()  # (the pair of before carries data no more)
            elif pair is self.selected:
                self._revoke_consent()
        return True

    def _pair_succeeded(self, pair: Pair, mapped: Address, check: Check, now: float) -> None:
        """RFC 8445 §7.2.5.3: discover peer-reflexive candidates, build the valid pair,
        unfreeze the foundation, and handle nomination."""
        pair.state = _PAIR_SUCCEEDED
        pair.proven_at = max(pair.proven_at, check.started)
        valid = pair.valid_local = self._local_for_mapped(pair, mapped)
        if valid is not pair.local:
            self.checklist.mapped_elsewhere = True
            pair.rank(self.controlling)  # (the valid pair's priority: see Pair.valid_priority)
        else:
            pair.valid_priority = pair.priority
        triggered = self._triggered
        if triggered is not None and pair in triggered:
            triggered.remove(pair)
            if not triggered:
                self._triggered = None
        self.checklist.unfreeze_foundation(pair.foundation)
        if self._first_valid_at is None:
            self._first_valid_at = now
        if self._nudge_at is None:
            self._nudge_at = now + self._consent_interval()
        if pair is self._probe and not check.nominating:
            self._probed(pair, now)
            self._maybe_complete()
            return
        if check.nominating and self.controlling:
            pair.nominated = True
            moving = self._moving and self._nominating is pair
            if self._nominating is pair:
                self._nominating = None
            if moving:
                self._move_to(pair, now)
            else:
                self._select(pair, now)
        elif not self.controlling and pair.nominate_on_success:
            pair.nominated = True
            self._select(pair, now)
        elif not self.controlling:
            rtt = max(now - check.started, 0.0)
            pair.pingback_at = now + min(max(PINGBACK_RTTS * rtt, PINGBACK_MIN), PINGBACK_MAX)
            if pair.peer_checked:
                # The peer's check came before ours went (a check that crossed ours has
                # its ping-back already): ours, sent behind our answer, reached a peer that
                # had proved the pair, so a peer that nominates on it has done so.  A ping
                # at its time only, should that answer have been lost.
                self._want_pingback(pair, now, soon=False)
        elif (
            self.selected is not None
            and self.nomination is _AGGRESSIVE
            and pair.valid_priority > self.selected.valid_priority
            and (self._nominating is None or pair.valid_priority > self._nominating.valid_priority)
        ):
            # An aggressive agent's ordinary check, which went without USE-CANDIDATE (its
            # pair was taken to rank below the selected one as the peer sees it: see
            # _better_to_check), found the pair above after all (the base reaches this
            # peer without the NAT its other pairs went through, say): nominated now.
            self._nominate(pair, now)
        else:
            self._maybe_nominate(now)
        self._maybe_complete()

    def _want_pingback(self, pair: Pair, now: float, *, soon: bool = True) -> None:
        """Not in RFC 8445: a controlled agent that has answered the peer's check on a pair,
        and whose own check on it has succeeded (or was in flight when the peer's check
        arrived), sends the peer one check of its own if no nomination comes.  A controlling
        peer that nominates when a request arrives on a pair it has proved (Pion does) then
        nominates at once instead of at its next scheduled round, which can be 200 ms away.
        A peer that nominates by itself (trice does) needs no ping: between two agents of
        one trio run it waits for its time, and the nomination comes first and drops it;
        with a trice peer in another process whose check crossed ours, it costs two
        messages more.

        Its time is a couple of round trips after our check succeeded (``pingback_at``,
        infinite while the check is in flight).  The shell sends it sooner, with
        :meth:`ping_back_now`, to a peer in another process: there, waiting wins nothing.  A
        peer in the same trio run is trice, and its nomination comes before that time.  Not
        ``soon``: the peer checked the pair before our check went, so our check, behind our
        answer, found the pair proved at the peer, which has nominated on it if it does so;
        the ping then goes only at its time (should that answer have been lost), to any
        peer.
        Only one is pending at a time; it is dropped when its pair fails or goes back to
        waiting, on a role switch, on selection, and when checks end."""
        if self.selected is not None or pair.pinged_back or self._pingback is not None:
            return
        self._pingback = pair
        self._pingback_soon = soon
        pair.pingback_at = max(pair.pingback_at, now)

    @property
    def pingback_pending(self) -> bool:
        """Whether a ping-back waits for its time that the shell may send sooner, with
        :meth:`ping_back_now` (see ``_want_pingback``): not one whose pair the peer checked
        before our own check went, which only waits for its time.  Never once a pair is
        selected or the checks are over (failed, closed): both drop it."""
        return self._pingback is not None and self._pingback_soon

    def ping_back_now(self, now: float) -> None:
        """Send the pending ping-back now rather than at its time: the shell calls this at
        once for a peer in another process (see ``_want_pingback``).  Nothing if none is
        pending, or only one that waits for its time (see :attr:`pingback_pending`)."""
        pair = self._pingback
        if pair is not None and self._pingback_soon:
            self._ping_back(pair, now)

    def _ping_back(self, pair: Pair, now: float) -> None:
        self._pingback = None
        if not self.controlling and (
            pair.state is _PAIR_SUCCEEDED or pair.state is _PAIR_IN_PROGRESS
        ):
            pair.pinged_back = True
            self._push_urgent(self._start_check(pair, nominating=False, consent=True, now=now))

    def _nudge(self, now: float) -> None:
        """Not in RFC 8445: a controlled agent with a valid pair and no nomination yet
        checks its best valid pair again every consent interval (``keepalive_interval``,
        jittered), from its first valid pair on, until a pair is selected or ICE fails.
        Its own check succeeded, but the peer's may have failed, every answer to it lost
        (a lossy path, since healed), and this agent sends nothing more once its checks
        are done: the peer waits for a check of ours to check again (RFC 8445 §7.3.1.4),
        and we for its nomination, until ICE fails on both sides.  Our check, on a failed
        pair of the peer's, brings its triggered check, which succeeds, and the
        nomination (in the liveness model, before 2026-12-05, a path that lost 70 % of
        one way's packets for 20 s left both sides so until they failed at
        ``failed_timeout``).  A peer still waiting before it nominates (a better pair
        still being checked, Pion's waits by pair type) only answers it."""
        self._nudge_at = now + self._consent_interval() * self._jitter()
        if self.controlling or self.selected is not None:
            return
        best = self.checklist.best_valid()
        if best is not None and best.state is _PAIR_SUCCEEDED:
            self._push_urgent(self._start_check(best, nominating=False, consent=True, now=now))

    def _local_for_mapped(self, pair: Pair, mapped: Address) -> Candidate:
        """The local candidate of the valid pair that a success with XOR-MAPPED-ADDRESS
        ``mapped`` makes of ``pair`` (RFC 8445 §7.2.5.3.1): the local candidate there, or a
        new peer-reflexive one.  A mapped address that is no transport address of the base's
        family (another family, port 0, unspecified or multicast: a peer's mistake, or a
        lie) tells nothing: the pair keeps the local candidate it had.  Nor does one that
        names another socket's candidate for a relayed check, or a relayed candidate for a
        check from another socket: a check that leaves a host socket is never seen from a
        relayed address, nor a relayed one from a host socket, so either is a lie, which
        would name a path the data does not take."""
        local = pair.local
        address, port = mapped
        if port == 0 or (":" in address) != (":" in local.address):
            return pair.valid_local or local
        protocol = local.protocol  # (a UDP and a TCP socket may share a port number)
        nohost = self.nohost
        found = None
        lie = False
        for candidate, base in self.local_candidates:
            if (candidate.address, candidate.port) == mapped and candidate.protocol == protocol:
                if nohost and candidate.type is CandidateType.HOST:
                    # (Not signalled under NOHOST: the srflx candidate at the same address,
                    # which is, stands for it; the peer ranks the pair by that one.)
                    continue
                if base == pair.base:
                    return candidate  # (whatever else was gathered at that address first)
                if CandidateType.RELAY in (candidate.type, local.type):
                    lie = True  # (see above; the base's own may still come)
                    continue
                if candidate.tcp_type is not local.tcp_type:
                    continue  # (a listener's, named for a connection we opened: a lie)
                # (Another socket's: two private addresses that a 1:1 NAT's one public
                # address stands for, each in its host candidate's place, share it.)
                found = found or candidate
        if lie:
            return pair.valid_local or local
        if found is not None:
            return found
        if no_destination(address):
            return pair.valid_local or local
        # RFC 8445 §7.2.5.3.1: a peer-reflexive local candidate; it is not signalled.
        prflx = prflx_candidate(
            mapped,
            learned_from=local.address,
            component=local.component,
            priority=self._prflx_priority(local),
            related=(local.address, local.port),
            tcp_type=local.tcp_type,
        )
        # Those no pair stands on any more go (``pair`` takes this one): a NAT that maps
        # anew, or a peer that answers each check as from another address, would else
        # grow the list without end.
        in_use = {id(other.valid_local) for other in self.checklist if other is not pair}
        self.local_candidates = (
            *(
                entry
                for entry in self.local_candidates
                if entry[0].type is not _PRFLX or id(entry[0]) in in_use
            ),
            (prflx, pair.base),
        )
        return prflx

    def _pair_failed(self, pair: Pair, now: float) -> None:
        pair.state = _PAIR_FAILED
        triggered = self._triggered
        if triggered is not None and pair in triggered:
            triggered.remove(pair)  # (else it held the failure of ICE back: see _maybe_fail)
            if not triggered:
                self._triggered = None
        if self._nominating is pair:
            self._nominating = None
        if self._pingback is pair:
            self._pingback = None  # (another pair may want one)
        if self.selected is pair:
            return
        self._maybe_nominate(now)
        self._maybe_fail(now)
        self._maybe_complete()

    def _maybe_fail(self, now: float | None = None) -> None:
        """ICE fails once every pair failed and no candidate can still come (RFC 8445 §8.1.2);
        or, checks begun, when no pair could be formed at all (RFC 8838 §8: the peer's
        candidates are all of a family or protocol this agent has none of, say).  Not an
        ICE-lite agent, which forms no pairs: the peer's checks prove them.

        Not before the PAC timer ends, though (RFC 8863 §4: ``Timing.pac_timeout`` after
        checks start): the peer's checks may still teach a peer-reflexive pair.  Till then
        the failure is held, and :meth:`on_timer` looks again when the timer ends.  Called
        without ``now`` (from signaling, which has no time), a failure is held whenever the
        timer is on at all, and the next :meth:`on_timer` (due at once, if the timer has
        ended) decides.

        An agent whose gathering is over with no candidate at all (:meth:`no_candidate`)
        fails as soon as checks begin, without the PAC timer and whatever the peer may
        still signal: no pair can be formed, and no check of the peer's can come (no
        address of its own was signalled or found).  A relay-only agent whose TURN servers
        all refused it, say: its gather reports say why."""
        if (
            self.selected is None
            and self.remote is not None
            and self.local_complete
            and self._checking_since is not None
            and self.no_candidate()
        ):
            self._fail_held = False
            self._set_state(ConnectionState.FAILED)
            return
        if (
            self.selected is None
            and self.remote is not None  # (after an ICE restart: only failed_timeout, till then)
            and self.remote_complete
            and self.local_complete
            and not self._triggered
            and (
                self.checklist.all_failed()
                or (
                    not self.checklist
                    and self._checking_since is not None
                    and not self.local.lite
                    and not self._peer_may_check()
                )
            )
        ):
            since = self._checking_since
            if since is None:
                return  # (checks have not begun: no PAC timer yet; they look again then)
            pac = self._pac_for()
            if pac and (now is None or now < since + pac):
                self._fail_held = True
                return
            self._fail_held = False
            self._set_state(ConnectionState.FAILED)

    def no_candidate(self) -> bool:
        """Whether this agent has no candidate the peer was told of: none at all, or under
        the NOHOST policy host candidates only (signalled never, paired never)."""
        candidates = self.local_candidates
        if not self.nohost:
            return not candidates
        return all(candidate.type is CandidateType.HOST for candidate, _ in candidates)

    def _pac_for(self) -> float:
        """How long after checks start ICE may not fail (RFC 8863's PAC timer): see
        ``Timing.pac_timeout``; by default the time a check takes to give up on RFC
        8489's schedule (``_pac_default``), and none against an ICE-lite peer."""
        timing = self.timing
        pac = timing.pac_timeout
        if pac is None:
            if self.remote is not None and self.remote.lite:
                return 0.0  # (an ICE-lite peer sends no checks to wait for)
            pac = _pac_default(timing.rto, timing.max_binding_requests)
        return min(pac, timing.failed_timeout)

    def _peer_may_check(self) -> bool:
        """With an empty check list: whether the peer may still have a pair with this agent,
        and check it (the pair is formed then): a passive ICE-TCP candidate here faces an
        active one there (the peer connects, RFC 6544 §6.2); or some remote candidate is
        one whose address is unknown here (a ``.local`` name with mDNS off or unanswered,
        left out): the peer may pair it with ours, and our address is learned from its
        check.  Only with neither does the empty list mean that no pair can be (a family
        or protocol in common with none of the peer's candidates)."""
        if self.left_out:
            return True
        stale = self._stale
        remotes = [c for key, c in self.remote_addresses.items() if key != stale]
        for remote in remotes:
            try:
                ipaddress.ip_address(remote.address)
            except ValueError:
                return True  # (a name)
        for local, _ in self.local_candidates:
            if local.tcp_type is TcpType.PASSIVE:
                family = ":" in local.address
                for remote in remotes:
                    if (
                        remote.tcp_type is TcpType.ACTIVE
                        and (":" in remote.address) == family
                        and remote.component == local.component
                    ):
                        return True
        return False

    # ------------------------------------------------------------------ nomination

    def _nominate_after_switch(self, now: float) -> None:
        """This agent took the controlling role in a role conflict (RFC 8445 §7.3.1.1),
        with pairs it checked, or even selected, as the controlled agent: the peer, now
        controlled, waits for a nomination.  The selected pair is checked again with
        USE-CANDIDATE (the peer may not hold it as nominated); else, with a valid pair in
        hand, nomination goes as usual (at once under aggressive nomination, whose later
        checks would not go to a pair already valid)."""
        selected = self.selected
        if selected is None:
            self._maybe_nominate(now)
        elif self._checking:
            self._nominate(selected, now)

    def _maybe_nominate(self, now: float) -> None:
        """Regular nomination (RFC 8445 §8.1.1): once the best valid pair is known, or the
        nomination delay has passed, check it again with USE-CANDIDATE.

        Under aggressive nomination every check of a controlling agent nominates, so a
        valid pair not selected is one whose check went while the agent was controlled
        (it took the controlling role since, in a role conflict): it is nominated at once,
        as no later check of it would go."""
        if not self.controlling or self.selected is not None or self._nominating is not None:
            return
        if not self._checking:
            return
        best = self.checklist.best_valid()
        if best is None:
            # Every valid pair has failed since (its nomination, say): the delay starts
            # again with the next pair that succeeds, rather than stay due (a busy loop).
            self._first_valid_at = None
            return
        if self.nomination is _AGGRESSIVE:
            self._nominate(best, now)
            return
        waited = self._first_valid_at is not None and (
            now >= self._first_valid_at + self._nomination_delay(best)
        )
        if not waited and not self._none_better(best):
            return
        self._nominate(best, now)

    def _better_to_check(self) -> bool:
        """Whether a controlling agent that nominates aggressively, a pair selected, has a
        pair ranked above it still to check (one formed since, of a candidate trickled
        late, say), by the pair's own priority: a better one found later replaces the
        selected pair, as :class:`~trice.Nomination` says.  Its check nominates if the pair
        is taken to rank above the selected one as the peer would see it (see
        :meth:`CheckList.seen_priority`); otherwise it goes without USE-CANDIDATE, and the
        pair is nominated once it succeeds above the selected one (see _pair_succeeded).
        (Under regular nomination, the nomination is final: ordinary checks end with it.)"""
        if not self.controlling or self.nomination is not _AGGRESSIVE:
            return False
        selected = self.selected
        better = self.checklist.peek_ordinary()
        return (
            better is not None
            and selected is not None
            and better.priority > selected.valid_priority
        )

    def _none_better(self, best: Pair) -> bool:
        """Whether no better pair than ``best`` can still succeed: none is being checked, and
        the peer has said end-of-candidates (until then, a better candidate may still be
        trickled: the nomination, which is final, waits for it up to the nomination delay).
        """
        return self.remote_complete and not self.checklist.pending_above(
            best.valid_priority, self.controlling
        )

    def _nomination_delay(self, best: Pair) -> float:
        """How long after the first valid pair ``best`` waits for better pairs still being
        checked: ``Timing.relay_nomination_delay`` if it is relayed (either candidate), and
        at least a check's first RTO (``rto``, or more with many pairs being checked) plus
        ``nomination_delay``, so that a direct path whose first check was
        lost has its retransmission's time (a nomination is final: a session nominated
        onto a relay stays there); else ``Timing.nomination_delay``."""
        timing = self.timing
        if best.remote.type is _RELAY or (best.valid_local or best.local).type is _RELAY:
            # (At least a retransmission's time past the direct pair's own wait, whatever
            # the timers given: a slow link's longer RTO, or the longer one of many pairs
            # being checked, RFC 8445 §14.3, as a check starting now would have it.)
            schedule = self._check_schedule()
            first_rto = schedule[1] if len(schedule) > 2 else timing.rto
            return max(timing.relay_nomination_delay, first_rto + timing.nomination_delay)
        return timing.nomination_delay

    def _nominate(self, pair: Pair, now: float) -> None:
        """Check ``pair`` again with USE-CANDIDATE, at once (RFC 8445 §8.1.1)."""
        self._moving = False
        self._nominating = pair
        self._push_urgent(self._start_check(pair, nominating=True, now=now))

    def _nomination_ended(self, pair: Pair) -> None:
        """``pair``'s check, cancelled, ended (its timeout, a late 487): its pair goes back
        to waiting.  One above the selected pair by its own priority is checked again then
        (see _better_to_check), without USE-CANDIDATE, and nominated if it proves better:
        a LAN path behind the NAT that was taken to rank below, its nomination lost, is
        found so (failed instead, it was lost for good, and ICE failed when the NAT's path
        later died: the p50pass review).  The peer, which may hold the pair as nominated,
        can follow that check off the pair in use if a consent check there was lost
        meanwhile (the agg50 review); both sides stay connected (see _maybe_follow's
        margin).  If it was the nomination in flight, none is now, and a later one may go
        (see _pair_succeeded)."""
        pair.state = _PAIR_WAITING
        if self._nominating is pair:
            self._nominating = None

    def _select(self, pair: Pair, now: float) -> None:
        if self.selected is not None and pair.valid_priority <= self.selected.valid_priority:
            return
        self._make_selected(pair, now)
        # Consent (RFC 7675 §5.1) from when our check on the pair that had a success answer
        # went, not from the selection: a peer that nominates late gives no more of it.  (An
        # ICE-lite agent's comes from the peer's check, now; see on_request for a pair
        # whose consent ran out before its nomination came.)
        self._last_consent = now if self.local.lite else pair.proven_at
        self._last_alive = now
        self._asked_at = None
        interval = self._consent_interval()
        if self._last_consent + self._consent_for < now + interval * JITTER_MAX:
            self._next_consent = now  # (it would run out before the next check's time)
        else:
            # Paced from when the latest check on the pair went (the one that proved it, or
            # a controlled agent's ping-back on its way), not from the answer that proved
            # it: so the answers come as far apart as the checks go, also the first one,
            # however long the round trip (from the answer, the first came an interval
            # and a round trip after it, and past disconnected_timeout over a path of a
            # 3 s round trip: the state flapped, against a peer that sends no checks of
            # its own).
            last = max(self._last_consent, pair.sent_at)
            regular = self._next_consent = max(now, last + interval * self._jitter())
            remote = self.remote
            if self.controlling and not pair.peer_checked and not (remote and remote.lite):
                # The peer has not checked the pair: its check may be lost on the way, and
                # a peer that checks a pair it gave up on only when a request of ours comes
                # (Pion, after 1.4 s of loss) would wait for our consent check.  The first
                # goes one RTO on, then, unless the peer's check has come meanwhile (an
                # ICE-lite peer sends none: it needs none).
                early = now + self.timing.rto
                if early < regular:
                    self._next_consent = early
                    self._early_consent = (early, regular)
        self._set_state(ConnectionState.CONNECTED)

    def _maybe_follow(self, pair: Pair, now: float) -> bool:
        """A controlled agent: the peer's check came on ``pair``, nominated, while the pair
        selected here is another, on which the peer has sent nothing for a consent interval.
        The peer uses ``pair``: select it too, and return ``True``.

        The highest-priority nominated pair, which both sides select, can differ between
        them when several are nominated (aggressive nomination): equal priorities (aioice
        gives all its host candidates one), or a nomination whose answer never reached the
        peer.  Without this, each side would keep its own pair, and a lite agent, which
        goes by the peer's checks on its own pair, would fail while the peer is there.  The
        selected pair must have gone quiet first: a peer that checks a backup pair beside
        the one it uses moves nothing.  Following refreshes no consent (RFC 7675): a full
        agent's consent on the new pair is its own (from its last answered check there), and
        it checks the pair at once; one whose consent ran out is checked first, and followed
        once that check is answered (see :meth:`_proven`)."""
        selected = self.selected
        if selected is None or selected is pair or not pair.nominated:
            return False
        lite = self.local.lite
        # (A lite agent hears data over the selected pair too: a peer that checks only an
        # idle pair, Pion's way, sends no check there while data flows.)
        heard = max(selected.heard_at, self._data_at) if lite else selected.heard_at
        if now - heard < self._quiet_after(selected):
            return False
        if not lite and now + self._schedules[1][-1] >= pair.proven_at + self._consent_for:
            # No answer on the pair in the last 30 s: no consent for data there (RFC 7675
            # §5.1); or so little left that a consent check's answer could not come before
            # it ends (followed so, the agent failed a round trip later).  A check of
            # consent's on it first (one an RTO at most, whatever the rate of the peer's
            # checks), and the pair is followed once it is answered.
            if now >= pair.sent_at + self.timing.rto:
                self._push_urgent(self._start_check(pair, nominating=False, consent=True, now=now))
            return False
        self._make_selected(pair, now)
        if not lite:
            self._last_consent = pair.proven_at  # (its own, not the pair's of before)
        self._next_consent = now  # (consent on the new pair, at once)
        # By way of connected, as at any selection, and on to completed if nothing is left
        # to check: an application that watches for connected sees the move.
        self._set_state(ConnectionState.CONNECTED)
        self._alive(now)
        self._maybe_complete()
        return True

    def _silence(self) -> float:
        """How long without hearing from the peer makes it disconnected (see ``__init__``).
        A lite agent's stretches to the pace of the peer's checks on the selected pair, as
        far apart as the last two, jitter included (an RFC 5245 peer that checks every
        15 s, its keepalives, §10: it flapped at each), within two thirds of its consent,
        while nothing but checks is heard (data since the last check: the peer sends
        checks when idle, Pion's way, and their pace says nothing), and never below
        ``disconnected_timeout``."""
        silence = self._disconnected_for
        selected = self.selected
        if (
            self.local.lite
            and selected is not None
            and self._last_alive <= selected.heard_at  # (no data since the last check)
            and not selected.data_in_gap  # (nor in the gap before it)
        ):
            paced = selected.heard_gap * JITTER_MAX
            if paced > silence:
                return max(silence, min(paced, self._consent_for * 2 / 3))
        return silence

    def _quiet_after(self, pair: Pair) -> float:
        """How long the peer's silence on ``pair`` means it left it: longer than its checks
        there may be apart, jitter included, as far apart as the last two (5 s for a peer
        that paces consent as RFC 7675 says), or this agent's consent checks, if that is
        longer; but at most 0.6 of this agent's consent (half, before jitter), which must
        outlast the wait."""
        pace = min(pair.heard_gap, self._consent_for / 2)
        return max(self._consent_interval(), pace) * JITTER_MAX

    def _make_selected(self, pair: Pair, now: float) -> None:
        left = self.selected
        if left is not None and left is not pair:
            left.left_at = now  # (see _learn_from_request: its gap now spans time elsewhere)
        self.selected = self._last_selected = self.checklist.selected = pair
        self._remapped_at = None
        self._unheard = False
        if self._previous is not None:
            # Data goes over the new pair now; but the peer may send over the pair of
            # before until it selects too (its nomination's answer may be lost, and data in
            # flight comes still): what comes from there counts while the pair's consent
            # would have lasted.
            self._previous = self._previous_checks = None
            if self._previous_far is not None:
                self._previous_until = self._last_consent + self._consent_for
        self._pingback = None
        self._late = None
        self._templates = None  # see _check_template
        self._spare_check = self._spare_nomination = self._spare_ping = None  # (see prepare)
        if self._triggered is not None and self._selection_final():
            self._triggered = None  # (RFC 8445 §8.1.2: its waiting pairs are checked no more)
        self._say_selected(pair)

    def _drop_checks(self) -> None:
        """Forget every check: those in flight (their answers count for nothing now), those
        queued, made ahead or wanted (a resend, a ping-back), and the templates.  When ICE
        is over, and at an ICE restart."""
        self._templates = None
        self._spare_check = self._spare_nomination = self._spare_ping = None
        self._live = self._late = self._refused_checks = None
        self._triggered = self._urgent = self._resend = self._resend_asked = None
        self._pingback = None

    def _forget_previous(self) -> None:
        """The pair of before an ICE restart carries data no more (see :meth:`restart`):
        data from its remote address counts no more either, unless signalled anew."""
        self._previous = self._previous_checks = None
        stale = self._stale
        self._previous_until = self._previous_far = None
        if stale is not None:
            self._stale = None
            self.remote_addresses.pop(stale, None)

    def _consent_interval(self) -> float:
        """Consent checks go every ``keepalive_interval`` (each interval times the jitter,
        0.8-1.2), and at least twice per ``disconnected_timeout`` (cut down with consent's
        30 s, see __init__) however the jitter falls: else a healthy pair would flap to
        disconnected and back between two checks, or lose consent."""
        return min(self.timing.keepalive_interval, self._disconnected_for / (2 * JITTER_MAX))

    def _maybe_complete(self) -> None:
        """``completed`` once a pair is selected, no triggered check waits, and no check is in
        flight on another pair but those cancelled (see :meth:`cancelled`)."""
        if (
            self.selected is not None
            and self.state is _STATE_CONNECTED
            and not self._triggered
            and (self._selection_final() or not self._in_progress_kept())
            and not self._better_to_check()
        ):
            self._set_state(ConnectionState.COMPLETED)

    def _selection_final(self) -> bool:
        """Whether the selected pair is this agent's own nomination, which is final (RFC
        8445 §8.1.1): a controlling agent's, nominating regularly.  (A controlled agent
        follows the peer, which may nominate again: aggressively, or a pair whose answer
        it never had.)"""
        return self.controlling and self.nomination is not _AGGRESSIVE

    def _kept_above(self) -> int:
        """The priority above which a pair's check in flight, a pair selected, holds
        ``completed`` back: a controlling agent that nominates aggressively cancels those
        on pairs ranked at or below the selected one, as the peer would see them (see
        :meth:`cancelled`): a pair ranked as the selected one replaces it no more than one
        below (see _select); otherwise none is cancelled here (-1: every check holds it
        back)."""
        selected = self.selected
        if selected is None or not self.controlling or self.nomination is not _AGGRESSIVE:
            return -1
        return selected.valid_priority

    def _in_progress_kept(self) -> bool:
        """Whether a check in flight holds ``completed`` back (see :meth:`_kept_above`):
        under aggressive nomination, one on another pair than the selected one that is not
        cancelled (see :meth:`cancelled`: an ordinary check above by its own priority may
        yet find a better pair)."""
        if self._kept_above() < 0:
            return self.checklist.in_progress()
        live = self._live
        if live is None:
            return False
        selected = self.selected
        for check in live.values():
            pair = check.pair
            if (
                not check.consent
                and pair is not selected
                and pair.state is _PAIR_IN_PROGRESS
                and not self.cancelled(check)
            ):
                return True
        return False

    def cancelled(self, check: Check) -> bool:
        """Whether ``check`` is cancelled (RFC 8445 §8.1.2): once a controlling agent that
        nominates regularly has its pair selected, its ordinary checks on other pairs; once
        one that nominates aggressively has, its checks on pairs ranked below the selected
        one (each of which nominates: one answered late would move a controlled peer that
        follows the latest nomination onto a pair this agent does not use).  The shell
        sends them no more, but waits their schedules out for a late answer; they hold
        ``completed`` back no more.  A cancelled check's timeout, or a late role conflict
        (487) on it, puts its pair back to waiting: neither fails the pair, nor does the
        conflict switch the role (see :meth:`on_response`)."""
        selected = self.selected
        if selected is None or check.pair is selected or check.consent:
            return False
        if check.nominating and self._moving and check.pair is self._nominating:
            return False  # (see _maybe_move)
        if check.pair is self._probe:
            return False  # (see _maybe_probe)
        pair = check.pair
        if self.controlling and pair.remote.type is _PRFLX and pair.heard_at > selected.heard_at:
            # The peer's checks come here now, from a new address, rather than on the
            # selected pair: a NAT in front of it mapped it anew, and this check proves the
            # pair that _maybe_move may take (cancelled, a lost first copy waited out its
            # transaction, 15.5 s, while consent ran out).
            return False
        if self._selection_final():
            return not check.nominating
        if not self.controlling:
            return False
        if pair.priority <= self._kept_above():
            return True  # (a valid pair ranks at most as its checked pair)
        # A nomination is ranked as the peer would see its pair, as the selected pair is:
        # behind a NAT a check's own priority, from its host candidate, is above every
        # valid pair's, and the peer may take a nomination below the pair in use.  An
        # ordinary check (see _better_to_check) by its own: it may yet find a better pair.
        return check.nominating and self._below_as_seen(pair)

    def _below_as_seen(self, pair: Pair) -> bool:
        """Whether a controlling agent that nominates aggressively, a pair selected, would
        see ``pair`` ranked at or below the selected one by the peer's reckoning (see
        :meth:`CheckList.seen_priority` and :meth:`_kept_above`); False otherwise."""
        kept = self._kept_above()
        return kept >= 0 and self.checklist.seen_priority(pair, True) <= kept

    def _proven(self, pair: Pair, check: Check, now: float) -> None:
        """A success answer to a check of consent's (or a ping-back) on ``pair``: on the
        selected pair, consent.  (A ping-back's answer proves its path, not the one data
        goes over.)"""
        pair.proven_at = max(pair.proven_at, check.started)
        if pair is self.selected:
            self._consent_refreshed(now, check.started)
        elif not self.controlling and pair.nominated and self._maybe_follow(pair, now):
            self._maybe_complete()  # (a pair the peer moved to, proved at last: followed)

    def _revoke_consent(self) -> None:
        """The peer answered a consent check on the selected pair with an authenticated 403
        (Forbidden): consent is revoked at once (RFC 7675 §5.2), and ICE has failed."""
        self.consent_revoked = True
        self._set_state(ConnectionState.FAILED)

    def _consent_refreshed(self, now: float, sent: float | None = None) -> None:
        """An answer to our check on the selected pair, sent at ``sent``: consent (RFC
        7675), from when the check went (§5.1 counts answers to the requests sent in the
        last 30 s: a late answer must not stretch it), and a sign of life now.  (An ICE-lite
        agent's consent comes from the peer's check, now.)  An answer read once consent had
        expired brings nothing back (§5.1), though no timer said so yet (a stalled loop
        reads the socket before it runs the timers)."""
        if sent is None:
            self._last_consent = now
        elif now >= self._last_consent + self._consent_for:
            return
        elif sent > self._last_consent:
            self._last_consent = sent
        self._alive(now)

    def _alive(self, now: float) -> None:
        """The peer was heard on the selected pair."""
        self._last_alive = now
        self._asked_at = None
        if self.state is _STATE_DISCONNECTED and not self._unheard:
            self._set_state(ConnectionState.CONNECTED)
            self._maybe_complete()  # (an ICE-lite agent's checks never come to do it)

    # ------------------------------------------------------------------ incoming requests

    def on_request(
        self, base: int, source: Address, request: stun.Message, now: float
    ) -> bytes | None:
        """A Binding request arrived on transport ``base`` from ``source``.

        Returns the encoded response to send back (success or error), or ``None`` to drop it.
        RFC 8445 §7.3 (and RFC 8489 §6.3 for authentication errors).  A request that fails
        authentication changes no state.  ``source`` may be as an IPv6 socket gives it,
        ``(host, port, flowinfo, scope_id)``: the core keeps ``(host, port)``.  One from
        port 0 is dropped (counted in ``requests_rejected``: a datagram may come from it,
        spoofed, but no answer can go there).

        Raises:
            UsageError: ``source`` is not an IP address and a port (a port past 65535, a
                name, a tuple of one).
        """
        if len(source) != 2:
            if len(source) < 2:
                raise UsageError(f"a request's source must be an IP address and a port: {source!r}")
            source = (source[0], source[1])
        if request.method is not _BINDING or request.message_class is not _REQUEST:
            if request.method is _BINDING and request.message_class is _INDICATION:
                # RFC 8445 §11's keepalive (an older peer's, RFC 5245): on the selected
                # pair, a sign of life, as data is.  It carries no integrity: for a full
                # agent it is not consent, which only answers to its checks give.  An
                # ICE-lite agent sends none, and an RFC 5245 peer sends only these once
                # ICE is done (its §10): consent, as data from there is (see on_data).
                selected = self.selected
                if (
                    selected is not None
                    and not request.unknown_required  # (discarded: RFC 8489 §6.3.2)
                    and selected.base == base
                ):
                    if selected.remote_address != source:
                        self._maybe_probe(selected, source, now)
                        return None
                    if self.local.lite and now > self._last_consent:
                        self._last_consent = now
                    self._indicating = True
                    self._heard_since_remap(now)
                    if now > self._last_alive:
                        self._alive(now)
            return None
        self.requests_received += 1
        if source[1] == 0:
            # (A datagram can come from port 0, a spoofed one say; no answer can go back
            # there: the kernel refuses to send to port 0.)
            self.requests_rejected += 1
            return None
        if self.state is _STATE_CLOSED or self.state is _STATE_FAILED:
            # (Failed, this agent sends nothing, and answers no check: a peer that still
            # holds a pair with it loses consent, RFC 7675, and fails too.)
            return None
        remote_ufrag = None if self.remote is None else self.remote.ufrag
        values = request.first_values(CHECK_TYPES)  # (one pass for all that follows)
        refused = authenticate(request, self.local.ufrag, remote_ufrag, self._local_key, values)
        if refused is not None:
            self.requests_rejected += 1
            code, reason, authenticated = refused
            extra: tuple[stun.Attribute, ...] = ()
            if code == 420:
                extra = (stun.UnknownAttributes(tuple(request.unknown_required)),)
            if not authenticated:
                return request.error_response(code, reason).encode(fingerprint=True)
            return self._signed(request, request.error_response(code, reason, *extra))
        decision = resolve_role_conflict(
            request,
            controlling=self.controlling,
            tiebreaker=self.tiebreaker,
            lite=self.local.lite,
            values=values,
            peer_lite=self.remote is not None and self.remote.lite,
        )
        if decision is _REJECT and self._ignores_487(request.transaction_id, (base, source), now):
            # Not in RFC 8445: a peer that goes on claiming our role well after our 487 (Pion
            # 2 drops checks that claim its own role, and reads no 487): nobody would switch,
            # and ICE would fail.  This side gives way.
            self._switch_role(
                "the peer ignores role conflicts: it still claims this role "
                f"{GIVE_WAY_AFTER:g} s after a 487"
            )
            if self.controlling:
                self._nominate_after_switch(now)
        elif decision is _REJECT:
            self.requests_rejected += 1
            return self._signed(request, request.error_response(487, "Role Conflict"))
        elif decision is _SWITCH:
            self._switch_role("a role conflict, settled by the tie-breakers")
            if self.controlling:
                self._nominate_after_switch(now)
        elif self._refused_at is not None:
            self._refused_at = math.inf  # (the peer took the other role: it reads 487s)
        # Binding success with XOR-MAPPED-ADDRESS (RFC 8445 §7.3.1.1, RFC 8489 §6.3.1.2).
        try:
            if request.has_integrity_sha256:
                mapped = stun.XorMappedAddress(source[0], source[1])
                response = self._signed(request, request.success_response(mapped))
            else:
                response = encode_binding_success(
                    request.transaction_id,
                    source[0],
                    source[1],
                    self._local_key,
                    self._success_pads,
                )
        except ValueError as exc:  # (a shell's mistake: a socket gives none such)
            raise UsageError(
                f"a request's source must be an IP address and a port: {exc}"
            ) from None
        if self.finished:
            return response
        priority, use_candidate = learned(values)
        taken = self._learn_from_request(
            base,
            source,
            priority,
            use_candidate,
            now,
            request.transaction_id,
            named_ufrag(values) if self.remote is None else None,
        )
        if not taken and use_candidate and not self.controlling:
            # RFC 8445 §7.3.1.5: a nomination this agent cannot take is refused with an
            # error, else the peer would hold it selected, on a pair this side never has.
            self.requests_rejected += 1
            return self._signed(request, request.error_response(400, "Nomination Not Taken"))
        return response

    def _signed(self, request: stun.Message, response: stun.Message) -> bytes:
        """``response`` to the authenticated ``request``, encoded with MESSAGE-INTEGRITY
        and, if the request has it, MESSAGE-INTEGRITY-SHA256 (RFC 8489 §9.1.3), and
        FINGERPRINT."""
        key = self._local_key
        sha256 = key if request.has_integrity_sha256 else None
        return response.encode(integrity_key=key, integrity_sha256_key=sha256, fingerprint=True)

    def _ignores_487(self, tid: bytes, path: tuple[int, Address], now: float) -> bool:
        """Whether the peer, a full agent as this one, ignores the role conflicts this agent
        answers with 487: two checks of new transactions (not copies of one seen before)
        on one path (``path``: our transport and the source) still claim our role
        ``GIVE_WAY_AFTER`` seconds or more after the first 487 of this generation, and no
        check of the peer's has claimed the other role since (which a peer that follows
        RFC 8445 §7.2.5.1 does once our 487 reaches it).  A compliant peer's checks sent
        before that may still come later, over a slow path or as late copies, but one a
        pair: a pair gets a new check only once its check of before is over.  Pion checks
        each pair anew every 200 ms."""
        if self.local.lite or (self.remote is not None and self.remote.lite):
            return False  # (a lite agent's role is no conflict to give way in)
        first = self._refused_at
        refused = self._refused
        if first is None or refused is None:
            self._refused_at = now
            self._refused = {path: ((tid,), 0)}
            return False
        before = refused.get(path)
        if before is None:
            if len(refused) >= MAX_REFUSED_KEPT:
                return False  # (paths past the bound never make it give way)
            before = ((), 0)
        seen, late = before
        if tid in seen:
            return False  # (a copy of a check of the path's: sent before our 487 came, maybe)
        late += now >= first + GIVE_WAY_AFTER
        refused[path] = ((*seen[-3:], tid), late)
        return late >= 2

    def _switch_role(self, why: str) -> None:
        """Take the other role (RFC 8445 §7.2.5.1, §7.3.1.1), because of ``why`` (kept in
        :attr:`switched_because`).  The checks in flight claim the role of before, and every
        copy of one would: each pair is checked again, with the new role (a peer that drops
        a request claiming its own role, as Pion does, had answered none of them until the
        old check gave up, 15.5 s on)."""
        self.controlling = not self.controlling
        self.role_switches += 1
        self.switched_because = why
        self._refused_at = self._refused = None
        self.checklist.recompute_priorities(self.controlling)
        self._pingback = None  # (a controlled agent's; and any role change starts afresh)
        self._nominating = None  # (a controlling agent's: one in flight no longer counts)
        for pair in self.checklist:
            if pair.state is _PAIR_IN_PROGRESS:
                self._check_again(pair)

    def _pair_from(
        self, local: Candidate, base: int, source: Address, priority: int
    ) -> Pair | None:
        """The pair of transport ``base`` (whose candidate is ``local``) to ``source``, its
        remote candidate learned as peer-reflexive if new (RFC 8445 §7.3.1.3: over TCP, of
        the tcptype of the connection's other end, RFC 6544 §7.2), of ``priority``; None if
        there is no room for it, or no candidate can stand for ``source``."""
        key = source if local.protocol == "udp" else _tcp_key(source)
        if key not in self.remote_addresses or key == self._stale:
            if (
                not self._counted(key)
                and self._remote_count() + self.pending_remote >= self.max_remote_candidates
            ):
                # (The names the shell resolves hold their room: see check_room.)
                self.prflx_dropped += 1
                capped = self._prflx_capped
                if capped is None:
                    capped = self._prflx_capped = set()
                if len(capped) < MAX_CAPPED_KEPT:
                    capped.add(key)
                return None
            try:
                prflx: Candidate | None = prflx_candidate(
                    source,
                    # (Its own foundation, unlike any other remote candidate's: two sources
                    # of one address are two candidates, RFC 8445 §7.3.1.3.)
                    learned_from=f"{source[0]} {source[1]}",
                    component=local.component,
                    priority=priority,
                    tcp_type=_opposite(local.tcp_type),
                )
            except CandidateError:
                prflx = None  # (a scoped link-local source, say)
            if prflx is None or prflx.transport_address != source:
                # A source that no candidate can stand for as it is written (the candidate
                # would write it otherwise: "::1.2.3.4" is "::102:304"), so no pair can be
                # found by it: answered, but not learned.
                self.prflx_dropped += 1
                return None
            self._add_remote(prflx)  # (only the pair of base to it, below: §7.3.1.4)
            if self.selected is not None:
                late = self._late_prflx
                if late is None:
                    late = self._late_prflx = set()
                late.add(key)
        pair = self.checklist.find(base, source)
        if pair is None:
            pair = self._add_pair(local, self.remote_addresses[key], base, keep=True)
        return pair

    def _learn_from_request(
        self,
        base: int,
        source: Address,
        priority: int,
        use_candidate: bool,
        now: float,
        request_tid: bytes,
        named: str | None = None,
    ) -> bool:
        """Take in what a check that passed authentication says (RFC 8445 §7.3.1.3-§7.3.1.5):
        its source as a peer-reflexive candidate if new, its pair, a triggered check, a
        nomination.  False if the check came from a source that no pair stands for, nor
        can (no room for one more remote candidate or pair, say): nothing was taken.
        ``named``: the peer's ufrag the check named, when the peer's parameters have not
        come (see _forget_misnamed)."""
        local = self._base_candidate(base)
        if local is None:
            return False
        pair = self._pair_from(local, base, source, priority)
        if pair is None:
            return False
        if named is not None:
            key = source if local.protocol == "udp" else _tcp_key(source)
            taught = self._taught
            if taught is None:
                self._taught = taught = {}
            ufrags = taught.setdefault(key, set())
            if len(ufrags) < MAX_NAMED_ENDS:
                ufrags.add(named)
        pair.requests_received += 1
        if self.local.lite:
            # (Data is over the selected pair: it says nothing of another pair's gaps, nor
            # of one selected by this check.  A pair left for another since its last check
            # has a gap that spans the peer's time elsewhere: no pace either.)
            data_at = self._data_at if pair is self.selected else pair.left_at
            # A lite agent does no checks: the peer's check proves the pair (RFC 8445 §7.3.2).
            pair.state = _PAIR_SUCCEEDED
            pair.valid_local = local
            if local is not pair.local:
                self.checklist.mapped_elsewhere = True
            if use_candidate:
                pair.nominated = True
                if named is None:  # (else once the peer's parameters say it was the peer)
                    self._select_nominated(pair, now)
            self._maybe_follow(pair, now)  # (the peer moved to another nominated pair?)
            pair.heard(now, request_tid, self._consent_interval(), data_since=data_at)
            if self.selected is pair:
                # A lite agent sends no checks (RFC 8445 §2.5), so none of consent's either:
                # the full peer's checks on the selected pair are what it goes by.
                self._consent_refreshed(now)
            # With no checks of its own, a lite agent is done once it has selected a pair
            # (RFC 8445 §8.2): ``completed``, as a full agent once its checks are over.
            self._maybe_complete()
            return True
        # A full agent's consent comes from the answers to its own checks alone (RFC 7675
        # §5.1): a request shows that the peer is there, not that it still wants our data.
        # It keeps the pair from counting as disconnected, though: a lost answer or two
        # should not make a live pair flap.
        if self.selected is pair:
            self._heard_since_remap(now)
            self._alive(now)
            early = self._early_consent
            if early is not None:  # (the peer has checked the pair: the regular time)
                self._early_consent = None
                if self._next_consent == early[0]:
                    self._next_consent = early[1]
        if not self._wanted:
            # The peer's checks have begun, so ours begin too, connect() called or not:
            # RFC 8445 §7.3.1.4 answers a check with a check of our own at once, and a
            # peer that nominates when our check reaches it (Pion does) would otherwise
            # wait for this application to call connect().
            self.want_connection(now)
        pair.peer_checked = True
        if use_candidate and not self.controlling:
            if named is None:
                self._peer_nominated = True
            else:  # (the peer's, once its parameters say it named the peer's ufrag)
                nominators = self._nominators
                if nominators is None:
                    self._nominators = nominators = set()
                # (As many as the remote candidates the checks may teach: a forked offer's
                # answerers that nominated first took all of a smaller room.)
                if len(nominators) < self.max_remote_candidates:
                    nominators.add(named)
        pair.heard(now, request_tid, self._consent_interval())  # (the selected pair's: gone quiet?)
        # RFC 8445 §7.3.1.4: triggered checks.
        if pair.state is _PAIR_SUCCEEDED and (
            use_candidate
            and not self.controlling
            and pair is not self.selected
            and now >= pair.proven_at + self._consent_for
        ):
            # Nominated after the consent our success on the pair gave ran out (RFC 7675
            # §5.1: no data without an answer to a check sent in the last 30 s): checked
            # again at once, and selected when that check succeeds.
            pair.nominate_on_success = True
            self._push_urgent(self._start_check(pair, nominating=False, now=now))
        elif pair.state is _PAIR_SUCCEEDED:
            if use_candidate and not self.controlling:
                pair.nominated = True
                self._select(pair, now)
                self._maybe_follow(pair, now)  # (a lower pair the peer moved to)
                self._maybe_complete()  # (its own checks may all be answered already)
            elif self.controlling:
                self._maybe_move(pair, now)
            elif not self._maybe_follow(pair, now) and not self._maybe_rebound(pair, now):
                self._want_pingback(pair, now)
        else:
            if use_candidate and not self.controlling:
                pair.nominate_on_success = True
            if pair.state is _PAIR_IN_PROGRESS:
                tid = pair.transaction
                if tid is not None:
                    self._want_resend(pair, tid, now, nominated=use_candidate)
                if not self.controlling and not use_candidate:
                    # The peer's check crossed ours: a ping-back too, but no time of its
                    # own until our check succeeds (see _want_pingback, _pair_succeeded).
                    pair.pingback_at = math.inf
                    self._want_pingback(pair, now)
                return True
            self._check_again(pair)
        return True

    def _check_again(self, pair: Pair) -> None:
        """Send ``pair`` a triggered check (RFC 8445 §7.3.1.4): back to waiting, in the
        triggered-check queue once; a ping-back pending on it goes (the check serves)."""
        pair.state = _PAIR_WAITING
        if self._pingback is pair:
            self._pingback = None
        triggered = self._triggered
        if triggered is None or pair not in triggered:
            self._push_triggered(pair)

    def _add_pair(
        self, local: Candidate, remote: Candidate, base: int, *, keep: bool = False
    ) -> Pair | None:
        """Form a pair (see :meth:`CheckList.add`); a pair the cap pruned leaves the
        triggered-check queue too."""
        hidden = self._hidden
        if hidden and not keep and local.type is _RELAY and remote_key(remote) in hidden:
            return None  # (see release_remote)
        checklist = self.checklist
        pruned = checklist.pruned
        pair = checklist.add(local, remote, base, controlling=self.controlling, keep=keep)
        triggered = self._triggered
        if checklist.pruned != pruned and triggered:
            self._triggered = [p for p in triggered if p in checklist] or None
        if pair is not None and pair.state is _PAIR_WAITING:
            # RFC 8445 §6.1.2.6: of each foundation, the highest-priority pair is the one
            # waiting (whichever was signalled first): a lower one not yet checked, nor
            # queued for a triggered check, goes back to frozen, unless a pair of the
            # foundation succeeded, which unfroze them all (§7.2.5.3.3).
            foundation = pair.foundation
            lower = []
            for other in checklist:
                if other.foundation != foundation or other is pair:
                    continue
                if other.state is _PAIR_SUCCEEDED:
                    return pair
                if (
                    other.state is _PAIR_WAITING
                    and other.priority < pair.priority
                    and other.transaction is None
                    and not (triggered and other in triggered)
                ):
                    lower.append(other)
            for other in lower:
                other.state = _PAIR_FROZEN
        return pair

    def _on_unauthorized(self, check: Check, now: float) -> None:
        """The peer answered ``check`` (an ordinary one) 401 Unauthorized, unsigned, as the
        peer cannot sign with a key it does not take: not taken, but counted, to say why
        ICE failed (it may be forged).  Not a consent check's: the peer that restarted
        first refuses those.  Nor once a signed answer came: the peer held the credentials
        then, and a 401 that comes after was made before, or is forged.

        The check reached the peer, which did not hold this agent's parameters yet.  If the
        peer has checked the pair since the check went, with them, it holds them now: the
        check goes again at once; else once it does (see :meth:`_want_resend`).  Once a
        transaction: a peer that refuses every copy gets no more of them."""
        if not self._answered_signed:
            self.checks_unauthorized += 1
        if check.nominating and self.nomination is not _AGGRESSIVE:
            return  # (a regular nomination: see _want_resend)
        pair = check.pair
        tid = check.transaction_id
        refused = self._refused_checks
        if refused is None:
            self._refused_checks = {tid}
        elif tid in refused:
            return
        else:
            refused.add(tid)
        # (Since: a request that came while the check was in flight, which _want_resend
        # marked, not one before it or the one that triggered it; and the pair's check
        # still, not one a role switch replaced.)
        if pair.resent == tid and pair.state is _PAIR_IN_PROGRESS and pair.transaction == tid:
            self._resend_refused(pair, check, now)

    def _push_resend(self, tid: bytes, at: float) -> None:
        """Have the check ``tid`` sent again at ``at`` (see :meth:`poll_resend`)."""
        if self._resend is None:
            self._resend = [(tid, at)]
        else:
            self._resend.append((tid, at))

    def _resend_refused(self, pair: Pair, check: Check, now: float) -> None:
        """The peer refused ``check`` on ``pair`` with 401, and has checked the pair since
        with this agent's parameters: it holds them now, and the check goes again at once
        (over TCP, where no copy goes, a new check)."""
        if pair.local.protocol != "udp":
            self._check_again(pair)
            return
        pair.resent = check.transaction_id
        self._push_resend(check.transaction_id, max(now, check.started + RESEND_MIN))

    def _want_resend(self, pair: Pair, tid: bytes, now: float, *, nominated: bool) -> None:
        """The peer's request crossed our check ``tid`` on ``pair``: send it again at twice
        its age (see :meth:`poll_resend`), or at once if the request nominated the pair
        (the peer waits for nothing more than our check's success: its answer may have
        been lost, and the next retransmission may be seconds away), or if the peer
        refused the check with 401 (it reached the peer before this agent's parameters
        did, after an ICE restart say: the peer's request has them, so it holds them now,
        and no copy of ours is on its way)."""
        live = self._live
        check = None if live is None else live.get(tid)
        if check is None:
            return
        regular = check.nominating and self.nomination is not _AGGRESSIVE
        refused = self._refused_checks
        if refused is not None and tid in refused and not regular:
            if pair.resent != tid or nominated:  # (once a transaction: see _refused)
                self._resend_refused(pair, check, now)
            return
        if nominated:
            pair.resent = tid
            at = max(now, check.started + RESEND_MIN)
            # (A retransmission of the schedule due as good as then, just gone or about to
            # go, serves: two copies at one instant carry nothing more than one.)
            schedule = check.schedule
            copies = len(schedule) - 1
            due = bisect.bisect_right(schedule, at - check.started, 0, copies)
            for k in (due - 1, due):
                if 1 <= k < copies and abs(check.started + schedule[k] - at) < RESEND_MIN:
                    return
            # (Nor does a copy asked by the request before, the peer's copies of one
            # nomination coming close together.)
            asked = self._resend_asked
            if asked is not None and asked[0] == tid and abs(asked[1] - at) < RESEND_MIN:
                return
            self._resend_asked = (tid, at)
        else:
            # (The age from our latest copy: after an outage the request comes long after
            # the check started, and twice its age fell past the next copy: none went.)
            # (The offsets rise: the copies sent by now are those up to bisect's place.)
            age = now - check.started
            schedule = check.schedule
            copies = len(schedule) - 1
            sent_copies = bisect.bisect_right(schedule, age, 0, copies)
            sent = check.started + (schedule[sent_copies - 1] if sent_copies else 0.0)
            asked = self._resend_asked
            if asked is not None and asked[0] == tid and sent < asked[1] <= now:
                sent = asked[1]  # (a copy this rule sent since)
            since = now - sent
            if since >= self.timing.rto:
                # Our latest copy went longer than an RTO ago: it was lost, or the way has
                # only now opened.  Again at once, at each such request: under loss that
                # lasts, the schedule's copies come up to rto_max apart (a second), while
                # the peer's request shows the way open now.  A regular nomination too
                # (over a pair already proved, its copies are lost only to loss): at a
                # third of the packets lost each way, it took 17 s to connect in the NAT
                # lab, its answers lost seven times while the peer's checks came.
                at = now
            elif regular or pair.resent == tid:
                # Crossing our latest copy, whose answer is most likely on its way: once a
                # transaction, an ordinary check goes again at twice the age (see
                # poll_resend); a regular nomination waits for its answer.
                return
            else:
                at = sent + max(RESEND_MIN, 2 * since)
            if sent_copies < copies and check.started + schedule[sent_copies] - at < RESEND_MIN:
                return  # (the next copy goes as soon: one is enough)
            pair.resent = tid
            self._resend_asked = (tid, at)
        self._push_resend(tid, at)

    # ------------------------------------------------------------------ state

    def _set_state(self, state: ConnectionState) -> None:
        if state is self.state:
            return
        if state not in CONNECTION_TRANSITIONS[self.state]:
            return
        self.state = state
        self.finished = state is _STATE_FAILED or state is _STATE_CLOSED
        self._emit(ConnectionStateChanged(state))
        if self.finished:
            # Checks are over (a pair's selection dropped the templates and spares too): the
            # checks in flight are forgotten now (their answers count for nothing), not when
            # the agent closes.
            self._drop_checks()
            if self._previous is not None or self._previous_far is not None:
                self._forget_previous()


@functools.lru_cache(maxsize=64)
def _schedule(timing: Timing, sends: int | None) -> tuple[float, ...]:
    """:func:`check_schedule`, kept: every check of every agent asks for the same few."""
    return check_schedule(timing, sends)


@functools.lru_cache(maxsize=64)
def _pac_default(rto: float, sends: int) -> float:
    """RFC 8863 §4's PAC timer: a check's transaction timeout, retransmissions included, on
    RFC 8489's schedule (doubling, Rm 16: 39.5 s at an RTO of 0.5 s and 7 sends), which is
    what the peer's checks, which the timer waits for, may take; this agent's own, capped
    at ``Timing.rto_max``, are shorter."""
    return stun.RetransmissionSchedule(rto, sends).total_timeout


@functools.lru_cache(maxsize=256)
def _scaled_schedule(timing: Timing, rto: float) -> tuple[float, ...]:
    """:func:`check_schedule` from an RTO scaled to the pairs being checked, kept."""
    return check_schedule(timing, None, rto)


def _answered(response: stun.Message) -> bool:
    """Whether ``response`` is a success (one with no attribute it must not ignore)."""
    return response.message_class is _SUCCESS and not response.unknown_required


def unreachable(candidate: Candidate) -> bool:
    """Whether no check may go to a signalled ``candidate`` as it is: its address (see
    :func:`no_destination`: a ``.local`` name too, until resolved), or port 0 (the kernel
    refuses to send there; an active ICE-TCP candidate, which takes no connection, may have
    any port)."""
    return no_destination(candidate.address) or (
        candidate.port == 0 and candidate.tcp_type is not TcpType.ACTIVE
    )


def _forbidden(response: stun.Message) -> bool:
    """Whether ``response`` is a 403 (Forbidden) error: the peer revokes consent (RFC 7675
    §5.2; its integrity is checked before)."""
    if response.message_class is not _ERROR:
        return False
    error = response.get(stun.ErrorCode)
    return error is not None and error.code == 403


def _read_in_time(check: Check, now: float) -> bool:
    """Whether an answer to ``check`` (sent once) read at ``now`` is timed: Karn's rule
    (RFC 6298 §3) leaves out one whose check went twice, and this one read past the time
    the next copy was due (or the check's end): this agent's own loop stalled, and the
    wait is not the path's.  Over ICE-TCP a check goes once and waits its whole schedule:
    no copy is ever due."""
    return now - check.started <= check.schedule[1] or check.pair.local.protocol != "udp"


def _symmetric(check: Check, source: Address, base: int | None) -> bool:
    """Whether a response to ``check`` from ``source``, on transport ``base`` (``None``: the
    check's own), came from where the check went, to where it left from (RFC 8445
    §7.2.5.2.1).  (``source`` as an IPv6 socket gives it too: see :meth:`AgentCore.on_request`.)"""
    if len(source) != 2:
        source = (source[0], source[1])
    return source == check.destination and (base is None or base == check.base)


def _spare_fits(spare: _Spare | None, pair: Pair, key: _TemplateKey) -> TypeGuard[_Spare]:
    """Whether ``spare`` (see :meth:`AgentCore.prepare`) is the check ``pair`` would send
    now, its bytes made as ``key`` says."""
    return spare is not None and spare[0] is pair and spare[1] == key


def warm_core(rounds: int = 10) -> None:
    """Run checks and a nomination between two throwaway cores, in memory, ``rounds`` times.

    A process's first STUN message costs several times a later one (first calls into the
    codec, HMAC and CRC, an interpreter not yet specialised); the shell calls this once per
    process when it opens its first agent, so that the first real check does not pay for it.
    Nothing is sent anywhere: the addresses are from the documentation range.
    """
    for i in range(rounds):
        # Every other round with a ufrag of another length: messages of a new shape, which
        # the codec decodes with its full pass (``trice.stun.decode``), as a real peer's
        # first messages are; the other rounds repeat one shape, which it soon decodes from
        # the shape kept, as a peer's later messages are.  Both paths are then warm.
        _warm_once(("warmA" + "w" * (i // 2 + 1), "warmB") if i % 2 else ("warmA", "warmB"))


def two_cores(
    ufrags: tuple[str, str] = ("warmA", "warmB"), *, end: bool = True
) -> tuple[AgentCore, AgentCore]:
    """Two cores (controlling, controlled) that hold each other's parameters and one host
    candidate each (documentation addresses), and (``end``) each other's end-of-candidates,
    both wanting to connect: a pair to drive in memory, as :func:`warm_core` and the tests
    do."""
    from trice.ice._gathering import host_candidate

    timing = Timing()
    a = AgentCore(
        local=IceParameters(ufrags[0], "a" * 22), controlling=True, tiebreaker=2, timing=timing
    )
    b = AgentCore(
        local=IceParameters(ufrags[1], "b" * 22), controlling=False, tiebreaker=1, timing=timing
    )
    a.add_local_candidate(host_candidate(("192.0.2.1", 9), 0), 0)
    b.add_local_candidate(host_candidate(("192.0.2.2", 9), 0), 0)
    a.set_remote(b.local, 0.0)
    b.set_remote(a.local, 0.0)
    a.add_remote_candidate(b.local_candidates[0][0])
    b.add_remote_candidate(a.local_candidates[0][0])
    if end:  # (the nomination then goes at once: nothing better can come)
        a.add_remote_candidate(None)
        b.add_remote_candidate(None)
    a.want_connection(0.0)
    b.want_connection(0.0)
    return a, b


def _warm_once(ufrags: tuple[str, str]) -> None:
    a, b = two_cores(ufrags)
    ca = a.local_candidates[0][0]
    cb = b.local_candidates[0][0]
    for _ in range(2):  # the check, then its nomination
        check = a.poll_check(1.0)
        if check is None:
            break
        response = b.on_request(0, (ca.address, ca.port), stun.decode(check.message), 1.0)
        if response is None:
            break
        a.on_response(check, stun.decode(response), check.destination, 1.0)
    # The controlled side's triggered check, which its nomination was waiting for.
    check = b.poll_check(2.0)
    if check is not None:
        response = a.on_request(0, (cb.address, cb.port), stun.decode(check.message), 2.0)
        if response is not None:
            b.on_response(check, stun.decode(response), check.destination, 2.0)
    a.drain_events()
    b.drain_events()


def _unauthorized(core: AgentCore) -> str:
    """What an ICE failure owes to the peer refusing this agent's credentials, if any."""
    refused = core.checks_unauthorized
    if not refused:
        return ""
    return (
        f"; the peer refused its checks ({refused} answer{'s' if refused > 1 else ''} 401 "
        "Unauthorized): it does not take the remote ufrag and pwd signalled to this agent"
    )


def _unchecked(core: AgentCore) -> str:
    """What an ICE failure owes to the pair cap, if any: pairs it pruned before they were
    checked (one of them might have worked)."""
    checklist = core.checklist
    if not checklist.unchecked:
        return ""
    return (
        f"; {checklist.unchecked} pair{'s' if checklist.unchecked > 1 else ''} past the cap "
        f"(max_pairs={checklist.max_pairs}, RFC 8445 §6.1.2.5) went unchecked"
    )
