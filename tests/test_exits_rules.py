"""Rules of how errors leave trice's nurseries (trice/_trio/_exits.py) that the other tests
did not pin (found by a mutation review; each test here kills a mutant the rest of the suite
let through): nursery groups nested inside each other (a task of trice's running its own
nursery) are taken apart however deep, both by ``raise_alone`` and by ``leaves``."""

from __future__ import annotations

import sys

import pytest

from trice._trio._exits import leaves, raise_alone

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

#: The message of the groups trio's nurseries raise.
_NURSERY = "Exceptions from Trio nursery"


# -- groups in groups -------------------------------------------------------------------------


def test_one_failure_deep_in_nested_nursery_groups_is_raised_as_itself() -> None:
    """The one failure in a nursery group inside a nursery group is raised as itself (the
    very object), not in a group.  (Kills ``if isinstance(exc, BaseExceptionGroup):`` ->
    ``if False:`` in ``_opened``: the inner group is not opened.)"""
    bug = KeyError("deep")
    inner = BaseExceptionGroup(_NURSERY, [bug])
    outer = BaseExceptionGroup(_NURSERY, [inner])
    with pytest.raises(KeyError) as info:
        raise_alone(outer)
    assert info.value is bug


def test_leaves_opens_every_level() -> None:
    """``leaves`` gives the exceptions that are not groups, from every level, in order.
    (Kills the same mutant: ``if isinstance(exc, BaseExceptionGroup):`` -> ``if False:``.)"""
    a, b, c = KeyError("a"), ValueError("b"), KeyboardInterrupt()
    group = BaseExceptionGroup("x", [a, BaseExceptionGroup("y", [b, BaseExceptionGroup("z", [c])])])
    assert leaves(group) == [a, b, c]
