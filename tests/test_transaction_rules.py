"""Rules of the STUN retransmission schedule (trice/stun/_transaction.py) that the other
STUN tests did not pin (found by a mutation review; the test here kills a mutant the rest of
the suite let through): over a reliable transport the whole time a transaction is given is
its Ti, not the time of an unreliable schedule's retransmissions.  (The suite's own test of
a reliable schedule uses the defaults, whose unreliable total is 39.5 s as well.)"""

from __future__ import annotations

from trice import stun

# -- a reliable transport's total time --------------------------------------------------------


def test_a_reliable_schedules_total_timeout_is_its_ti() -> None:
    """With ``reliable=True`` the total timeout is ``ti`` (10 s here, where an unreliable
    schedule of rto 0.2 s would give up far sooner), and the one deadline is at ``ti``,
    after which nothing is resent.  (Kills ``if self.reliable:`` -> ``if False:`` in
    ``total_timeout``.)"""
    schedule = stun.RetransmissionSchedule(rto=0.2, reliable=True, ti=10.0)
    assert schedule.total_timeout == 10.0
    assert schedule.start(0.0) == 10.0 and schedule.on_timeout(10.0) is None
