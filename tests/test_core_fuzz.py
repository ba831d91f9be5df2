"""The pure core against a hostile or broken peer: random sequences of requests, responses,
timeouts, data and time, built with hypothesis.

Whatever comes, the core raises nothing, answers a request with a well-formed STUN response
or not at all, keeps its event sequence valid, never asks to be woken in the past once it
has been served (the shell would spin), and keeps its caps.  The hostile steps know the
credentials in some draws and not in others, so that both the authenticated paths and the
refusals run; between them, a peer core that plays by the rules answers our checks and
checks us, so that runs reach connected, completed, disconnected and failed (a draw of 300
runs visits each of them; two planted bugs, a busy loop while disconnected and a check
without PRIORITY let through, each fail it within seconds).  In half the runs both sides
also restart ICE now and then, and signal their new parameters (4000 runs found nothing;
the busy loop of a restarted agent waiting for the peer's parameters fails it).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trice import LimitError, stun
from trice.ice import Candidate
from trice.ice._core import AgentCore, Check, IceParameters, two_cores
from trice.ice._events import ConnectionState, Event

from core_harness import event_order_problems

#: Where the peer's datagrams come from: its signalled candidate, and strangers.
SOURCES = [("192.0.2.2", 9), ("192.0.2.2", 10), ("198.51.100.7", 4000), ("203.0.113.9", 1)]
# (Repeats weigh the draw towards messages the core accepts, so that runs get past checking.)
ROLES = ["controlling", "controlled", "none", "both"]
KEYS = ["right"] * 4 + ["wrong", "none"]
MOSTLY = st.sampled_from([True] * 4 + [False])


@dataclass
class Run:
    """One core being driven, and what it put out."""

    core: AgentCore
    peer: AgentCore
    now: float = 0.0
    checks: list[Check] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    #: Whether the shell takes the peer for one in another process: it then has pings made
    #: ahead (``prepare(ping=True)``) and sent at once (``ping_back_now``).
    elsewhere: bool = False
    #: ICE restarts so far, and the peer's ufrag before the last one.
    restarts: int = 0
    old_peer_ufrag: str = "none yet"

    def serve(self) -> None:
        """What the shell does after every input: timers, resends, checks, events, spare
        work; then the core must not ask to be woken at once again."""
        core = self.core
        core.on_timer(self.now)
        if self.elsewhere and core.pingback_pending:
            core.ping_back_now(self.now)
        for _tid, at in core.poll_resend():
            assert at >= 0
        while (check := core.poll_check(self.now)) is not None:
            assert len(check.message) >= 20 and check.transaction_id
            self.checks.append(check)
        self.events.extend(core.drain_events())
        core.prepare(ping=self.elsewhere and not core.controlling)
        deadline = core.next_deadline()
        assert deadline is None or deadline > self.now, (deadline, self.now, core.state)
        # ICE restart's bookkeeping: a pair of before carries data only while its consent
        # lasts, and never beside a selected pair or once ICE is over; nothing is held
        # once the peer's parameters are known; the cap holds.
        previous = core._previous
        if previous is not None:
            assert core.selected is None and not core.finished
            assert self.now < core._last_consent + core.timing.failed_timeout
            assert core._stale in (None, previous.remote_address)
        else:
            # (After a new pair's selection, data from the pair of before counts a while.)
            assert core._stale is None or core._previous_until is not None
        if core.remote is not None:
            assert core._held is None
        assert core._remote_count() <= core.max_remote_candidates


request_steps = st.tuples(
    st.just("request"),
    st.sampled_from(SOURCES),
    st.sampled_from(["good"] * 4 + ["wrong ufrag", "no username", "other peer"]),
    st.sampled_from(KEYS),
    st.one_of(st.none(), st.integers(0, 2**32 - 1), st.just(1_845_501_695)),  # PRIORITY
    st.sampled_from(ROLES),
    st.integers(0, 2**64 - 1),  # tie-breaker
    st.booleans(),  # USE-CANDIDATE
    st.sampled_from([None] * 4 + [0x0007, 0x7F01, 0xC0DE]),  # an unknown attribute, if any
    st.sampled_from(["request"] * 4 + ["indication"]),
)
response_steps = st.tuples(
    st.just("response"),
    st.integers(0, 50),  # which check (modulo), or a stranger's transaction
    st.sampled_from(["success"] * 4 + ["error 487", "error 400", "error 401"]),
    st.sampled_from(KEYS),
    MOSTLY,  # from where the check went (else from a stranger)
    MOSTLY,  # on the transport it left from (else another)
    st.one_of(st.none(), st.sampled_from([*SOURCES, ("192.0.2.1", 9)])),  # XOR-MAPPED
)
other_steps = st.one_of(
    st.tuples(st.just("time"), st.floats(0.0, 3.0) | st.sampled_from([0.0, 6.0, 30.0])),
    st.tuples(st.just("timeout"), st.integers(0, 50)),
    st.tuples(st.just("data")),
    st.tuples(
        st.just("candidate"),
        st.sampled_from(SOURCES),
        st.integers(1, 2**31 - 1),
        # The ufrag it names, if any: the peer's of now, of before a restart, a stranger's.
        st.sampled_from([None, None, "now", "before", "stranger"]),
    ),
    st.tuples(st.just("end of candidates")),
    # ICE restart (both sides), and the signaling of the new parameters that follows it.
    st.tuples(st.just("restart")),
    st.tuples(st.just("signal")),
)
# The peer itself (a core that plays by the rules) answers our latest checks and checks us,
# so that runs reach connected and consent, with the hostile steps in between.
peer_steps = st.one_of(
    st.tuples(st.just("peer answers"), st.integers(0, 2)),
    st.tuples(st.just("peer checks")),
)
steps = st.lists(
    st.one_of(peer_steps, peer_steps, request_steps, response_steps, other_steps),
    min_size=20,
    max_size=60,
)


def _request(run: Run, step: tuple[object, ...]) -> None:
    _, source, user, key, priority, role, tiebreaker, use, unknown, kind = step
    core = run.core
    assert isinstance(source, tuple) and isinstance(tiebreaker, int)
    remote = run.peer.local.ufrag
    username = {
        "good": f"{core.local.ufrag}:{remote}",
        "wrong ufrag": f"nobody:{remote}",
        "other peer": f"{core.local.ufrag}:stranger",
        "no username": None,
    }[str(user)]
    attributes: list[stun.Attribute] = []
    if username is not None:
        attributes.append(stun.Username(username))
    if isinstance(priority, int):
        attributes.append(stun.Priority(priority))
    if role in ("controlling", "both"):
        attributes.append(stun.IceControlling(tiebreaker))
    if role in ("controlled", "both"):
        attributes.append(stun.IceControlled(tiebreaker))
    if use:
        attributes.append(stun.UseCandidate())
    if isinstance(unknown, int):
        attributes.append(stun.UnknownAttribute(unknown, b"\x01\x02\x03"))
    message_class = stun.MessageClass.REQUEST if kind == "request" else stun.MessageClass.INDICATION
    signing = {"right": stun.short_term_key(core.local.pwd), "wrong": b"not the key"}.get(str(key))
    data = stun.Message(stun.Method.BINDING, message_class, attributes=attributes).encode(
        integrity_key=signing, fingerprint=True
    )
    response = core.on_request(0, source, stun.decode(data), run.now)
    if response is not None:
        answer = stun.decode(response)
        assert answer.method is stun.Method.BINDING
        assert answer.message_class in (stun.MessageClass.SUCCESS, stun.MessageClass.ERROR)
        assert answer.transaction_id == stun.decode(data).transaction_id


def _peer_answers(run: Run, back: int) -> None:
    """The peer answers our ``back``-th latest check, as a peer that plays by the rules."""
    if not run.checks:
        return
    check = run.checks[-1 - back % len(run.checks)]
    local = run.core.local_candidates[0][0]
    answer = run.peer.on_request(
        0, (local.address, local.port), stun.decode(check.message), run.now
    )
    if answer is not None:
        run.core.on_response(
            check, stun.decode(answer), check.destination, run.now, base=check.base
        )


def _peer_checks(run: Run) -> None:
    """The peer sends its next check (if it has one due) and takes our answer."""
    peer = run.peer
    peer.on_timer(run.now)
    check = peer.poll_check(run.now)
    peer.drain_events()
    if check is None:
        return
    remote = peer.local_candidates[0][0]
    answer = run.core.on_request(
        0, (remote.address, remote.port), stun.decode(check.message), run.now
    )
    if answer is not None:
        peer.on_response(check, stun.decode(answer), check.destination, run.now, base=check.base)


def _response(run: Run, step: tuple[object, ...]) -> None:
    _, which, kind, key, same_source, same_base, mapped = step
    core = run.core
    assert isinstance(which, int)
    check = run.checks[which % len(run.checks)] if run.checks and which < 40 else None
    tid = check.transaction_id if check is not None else bytes([which]) * 12
    attributes: list[stun.Attribute] = []
    if kind == "success":
        message_class = stun.MessageClass.SUCCESS
        if isinstance(mapped, tuple):
            attributes.append(stun.XorMappedAddress(mapped[0], mapped[1]))
    else:
        message_class = stun.MessageClass.ERROR
        code = int(str(kind).split()[1])
        attributes.append(stun.ErrorCode(code, "nope"))
    signing = {"right": stun.short_term_key(run.peer.local.pwd), "wrong": b"nope"}.get(str(key))
    message = stun.decode(
        stun.Message(stun.Method.BINDING, message_class, tid, attributes).encode(
            integrity_key=signing, fingerprint=True
        )
    )
    source = SOURCES[3]
    base = 1
    if check is not None:
        source = check.destination if same_source else SOURCES[3]
        base = check.base if same_base else check.base + 1
        core.on_response(check, message, source, run.now, base=base)
    else:
        core.on_late_response(message, source, run.now, base=base)


def _restart(run: Run) -> None:
    """Both sides restart ICE, with new parameters each."""
    run.restarts += 1
    run.old_peer_ufrag = run.peer.local.ufrag
    n = run.restarts
    for side in (run.core, run.peer):
        name = side.local.ufrag[:5]
        side.restart(IceParameters(f"{name}{n}", f"{name}-restart-password-{n:04d}"), run.now)
    run.peer.drain_events()


def _signal(run: Run) -> None:
    """Each side takes the other's parameters (if it has none: after a restart) and its
    candidate."""
    for side, other in ((run.core, run.peer), (run.peer, run.core)):
        if side.remote is None:
            side.set_remote(other.local, run.now)
            if not side.remote_complete:
                with contextlib.suppress(LimitError):  # (a small cap, full of strangers)
                    side.add_remote_candidate(other.local_candidates[0][0])
    run.peer.drain_events()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=steps,
    controlling=st.booleans(),
    lite=st.booleans(),
    elsewhere=st.booleans(),
    restarts=st.booleans(),
    cap=st.sampled_from([200, 200, 3]),
)
def test_a_hostile_peer_cannot_break_the_core(
    steps: list[tuple[object, ...]],
    controlling: bool,
    lite: bool,
    elsewhere: bool,
    restarts: bool,
    cap: int,
) -> None:
    a, b = two_cores(("fuzzA", "fuzzB"))
    core = a if controlling else b
    peer = b if controlling else a
    if lite:
        # A lite agent of the same shape (host candidate, remote known, wanting to connect).
        lite_core = AgentCore(
            local=IceParameters("fuzzL", "l" * 22, lite=True),
            controlling=False,
            tiebreaker=7,
            timing=core.timing,
        )
        lite_core.add_local_candidate(core.local_candidates[0][0], 0)
        lite_core.set_remote(peer.local, 0.0)
        lite_core.add_remote_candidate(peer.local_candidates[0][0])
        lite_core.want_connection(0.0)
        core = lite_core
    core.max_remote_candidates = cap
    run = Run(core, peer, elsewhere=elsewhere)
    run.serve()
    for step in steps:
        kind = step[0]
        if kind == "request":
            _request(run, step)
        elif kind == "response":
            _response(run, step)
        elif kind == "peer answers":
            assert isinstance(step[1], int)
            _peer_answers(run, step[1])
        elif kind == "peer checks":
            _peer_checks(run)
        elif kind == "time":
            assert isinstance(step[1], float)
            run.now += step[1]
        elif kind == "timeout":
            assert isinstance(step[1], int)
            if run.checks:
                core.on_timeout(run.checks[step[1] % len(run.checks)], run.now)
        elif kind == "data":
            core.on_data(run.now)
        elif kind == "candidate":
            address, priority, named = step[1], step[2], step[3]
            assert isinstance(address, tuple) and isinstance(priority, int)
            line = f"candidate:7 1 udp {priority} {address[0]} {address[1]} typ host"
            ufrag = {"now": peer.local.ufrag, "before": run.old_peer_ufrag}.get(
                str(named), None if named is None else "stranger"
            )
            candidate = dataclasses.replace(Candidate.from_sdp(line), username_fragment=ufrag)
            if not core.remote_complete:
                with contextlib.suppress(LimitError):
                    core.add_remote_candidate(candidate)
        elif kind == "end of candidates":
            core.add_remote_candidate(None)
        elif kind == "restart" and restarts:  # (in half the runs: the others go deeper)
            _restart(run)
        elif kind == "signal" and restarts:
            _signal(run)
        run.serve()
    assert event_order_problems(run.events, restarts=run.restarts) == []
    if core.selected is not None:
        assert core.state is not ConnectionState.NEW
