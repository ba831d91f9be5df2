"""The client transaction's retransmission timer as a pure object (RFC 8489 §6.2.1, §6.2.2).

No clock here: the caller passes ``now`` (any monotonic float, in seconds) and gets back the
next deadline, so the schedule runs the same under trio, in a test with virtual time, or in a
simulation.
"""

from __future__ import annotations

import math

from .._errors import StateError

__all__ = ["RetransmissionSchedule"]


class RetransmissionSchedule:
    """When to retransmit a STUN request and when to give up (RFC 8489 §6.2.1, §6.2.2).

    Over UDP (``reliable=False``) the request is sent at 0, then again each time a wait that
    starts at ``rto`` and doubles runs out, ``rc`` sends in all; after the last send the client
    waits ``rm * rto`` and then the transaction fails.  With the defaults (RTO 500 ms, Rc 7,
    Rm 16) the sends are at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s and the failure at 39.5 s.
    Over TCP or TLS (``reliable=True``) there is one send and the failure comes after ``ti``
    seconds.

    Drive it like this::

        send(request)
        deadline = schedule.start(now)
        # ... when ``deadline`` passes without a response:
        deadline = schedule.on_timeout(now)
        if deadline is None: fail()
        else: send(request)  # a retransmission

    Args:
        rto: the initial retransmission timeout in seconds (RFC 8489 §6.2.1 recommends 0.5 s
            or more; ICE computes its own, RFC 8445 §14.3).
        rc: how many times the request is sent in all, the first one included (Rc).
        rm: the last wait is ``rm * rto`` (Rm).
        reliable: TCP or TLS: no retransmission, give up after ``ti``.
        ti: the reliable-transport timeout in seconds (Ti, RFC 8489 §6.2.2).
        max_rto: an optional cap on the doubling interval (RFC 8489 §6.2.1 allows one).

    Raises:
        ValueError: a value is not positive (or ``rc`` below 1).
    """

    __slots__ = ("_deadline", "_interval", "_sends", "max_rto", "rc", "reliable", "rm", "rto", "ti")

    def __init__(
        self,
        rto: float = 0.5,
        rc: int = 7,
        rm: int = 16,
        *,
        reliable: bool = False,
        ti: float = 39.5,
        max_rto: float | None = None,
    ) -> None:
        for name, value in (("rto", rto), ("rm", rm), ("ti", ti)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, not {value!r}")
        if rc < 1:
            raise ValueError(f"rc must be at least 1, not {rc!r}")
        if max_rto is not None and not max_rto > 0:
            raise ValueError(f"max_rto must be positive, not {max_rto!r}")
        self.rto = rto
        self.rc = rc
        self.rm = rm
        self.reliable = reliable
        self.ti = ti
        self.max_rto = max_rto
        self._sends = 0
        self._interval = rto
        self._deadline: float | None = None

    @property
    def sends(self) -> int:
        """How many times the request has been sent so far (first send included)."""
        return self._sends

    @property
    def deadline(self) -> float | None:
        """The current deadline, or ``None`` before :meth:`start` and after failure."""
        return self._deadline

    @property
    def total_timeout(self) -> float:
        """Seconds from the first send to failure without any response (39.5 by default)."""
        if self.reliable:
            return self.ti
        total = 0.0
        interval = self.rto
        for _ in range(self.rc - 1):
            total += interval
            interval = self._next_interval(interval)
        return total + self.rm * self.rto

    def _next_interval(self, interval: float) -> float:
        interval *= 2
        if self.max_rto is not None and interval > self.max_rto:
            interval = self.max_rto
        return interval

    def start(self, now: float) -> float:
        """Record the first send at *now* and return the first deadline (RFC 8489 §6.2.1).

        Raises:
            StateError: the schedule was already started.
        """
        if self._sends:
            raise StateError("this retransmission schedule was already started")
        self._sends = 1
        self._interval = self.rto
        if self.reliable:
            self._deadline = now + self.ti
        elif self.rc == 1:
            self._deadline = now + self.rm * self.rto
        else:
            self._deadline = now + self.rto
        return self._deadline

    def on_timeout(self, now: float) -> float | None:
        """The deadline passed without a response: retransmit now, or give up.

        Returns:
            The next deadline, after which to call this again, when the request must be sent
            again now; ``None`` when the transaction has failed (RFC 8489 §6.2.1: after Rc
            sends and a final ``rm * rto`` wait; §6.2.2: after Ti over a reliable transport).

        Raises:
            StateError: :meth:`start` was not called.
        """
        if not self._sends:
            raise StateError("on_timeout() before start()")
        if self.reliable or self._sends >= self.rc:
            self._deadline = None
            return None
        self._sends += 1
        if self._sends == self.rc:
            self._deadline = now + self.rm * self.rto
        else:
            self._interval = self._next_interval(self._interval)
            self._deadline = now + self._interval
        return self._deadline

    def __repr__(self) -> str:
        return (
            f"RetransmissionSchedule(rto={self.rto!r}, rc={self.rc!r}, rm={self.rm!r}, "
            f"reliable={self.reliable!r}, ti={self.ti!r}, max_rto={self.max_rto!r}, "
            f"sends={self._sends})"
        )
