"""Leaving a nursery that a context manager holds for its block (an agent's, a UDP mux's):
the block's own exception goes on as itself, not wrapped in an exception group."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import NoReturn

import trio

from trice._errors import UsageError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["exit_nursery", "leaves", "open_block_nursery", "raise_alone", "require_trio"]


def require_trio(caller: str) -> None:
    """A :class:`~trice.UsageError` unless a trio run is going on in this thread (under
    asyncio, trio's own errors, an AttributeError from its insides or "must be called from
    async context", do not say what is wrong)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise UsageError(
            f"{caller} runs under trio (trio.run, or anyio on its trio backend): this thread "
            "runs no trio event loop (asyncio's, say)"
        ) from None


def open_block_nursery(opener: str) -> AbstractAsyncContextManager[trio.Nursery]:
    """``trio.open_nursery()`` for ``opener``'s block (see :func:`require_trio`)."""
    require_trio(opener)
    return trio.open_nursery()


async def exit_nursery(
    manager: AbstractAsyncContextManager[trio.Nursery],
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool:
    """``manager.__aexit__``, with the block's exception (``exc``) going on as itself.

    trio wraps what a nursery's block raised in an exception group: when that is the block's
    own exception alone (perhaps a group itself, which must not be flattened, and which trio
    hands on as a copy), it goes on as itself (``False`` is returned); a failure of one of
    the nursery's tasks, alone, is raised as itself too; only several come out as a group.
    Cancellations of an enclosing scope beside the one failure do not count, and alone they
    go on as one :class:`trio.Cancelled`.
    """
    try:
        return bool(await manager.__aexit__(exc_type, exc, tb))
    except BaseExceptionGroup as group:
        if exc is not None and _same(group, exc):
            # (trio's nursery under ``strict_exception_groups=False`` hands the block's
            # own group on unwrapped, a copy: it goes on as itself, the very object.)
            return False
        failed = group
        cancelled, rest = group.split(trio.Cancelled)
        if rest is None:
            # Only an enclosing scope's cancellation, of the block and the tasks: it goes on
            # as one Cancelled (the block's own, if it raised one), which that scope catches.
            if isinstance(exc, trio.Cancelled):
                return False
            _raise_as_itself(leaves(group)[0])
        if cancelled is not None and rest is not None:
            # An enclosing scope was cancelled as the block or a task failed: the failure
            # goes on, and the cancellation comes again at the next checkpoint in that scope
            # (as trio does with one exception and a cancellation in a non-strict nursery).
            failed = rest
        if exc is not None and len(failed.exceptions) == 1:
            if _same(failed.exceptions[0], exc):
                return False
            if cancelled is not None and isinstance(exc, BaseExceptionGroup):
                # The block's own group, which held the enclosing scope's cancellation too:
                # the rest of it goes on as a group (as trio hands it on), not flattened.
                own = exc.split(trio.Cancelled)[1]
                if own is not None and _same(failed.exceptions[0], own):
                    _raise_as_itself(own)
        alone = _failures(failed)
        if len(alone) != 1:
            raise
        _raise_as_itself(alone[0])


def raise_alone(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one exception ``group`` holds (however deep) as itself, or the group if it
    holds several: for a nursery of trice's own whose failure goes to the caller (a
    KeyboardInterrupt in one of its tasks, say, which the caller catches as itself).  An
    enclosing scope's cancellation beside it does not count (as in :func:`exit_nursery`:
    it comes again at that scope's next checkpoint)."""
    cancelled, rest = group.split(trio.Cancelled)
    # (split() rebuilds the groups even when nothing matched: the group itself then, so
    # that a task's own group comes out as the very object it raised.)
    alone = _failures(group if cancelled is None or rest is None else rest)
    if len(alone) != 1:
        raise group
    _raise_as_itself(alone[0])


def _raise_as_itself(exc: BaseException) -> NoReturn:
    """Raise ``exc``, out of the group it came in, as it was: its own cause and context kept
    (``raise exc from None`` would drop them: the ``OSError`` a ``LimitError`` was raised
    from, say), not chained to the group being handled."""
    cause, context, suppress = exc.__cause__, exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__cause__, exc.__context__ = cause, context
        exc.__suppress_context__ = suppress


def _same(seen: BaseException, raised: BaseException) -> bool:
    """Whether ``seen`` is ``raised``, or a copy trio made of that group (same message, the
    same exceptions in it)."""
    if seen is raised:
        return True
    if not (isinstance(seen, BaseExceptionGroup) and isinstance(raised, BaseExceptionGroup)):
        return False
    return (
        seen.message == raised.message
        and len(seen.exceptions) == len(raised.exceptions)
        and all(_same(a, b) for a, b in zip(seen.exceptions, raised.exceptions, strict=True))
    )


#: The message of the groups trio's nurseries raise (a group with another is a task's own
#: failure, not to be taken apart).
_NURSERY_GROUP = "Exceptions from Trio nursery"


def _failures(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The failures a nursery's ``group`` holds: the groups of trio's nurseries (a task of
    trice's may run one of its own) taken apart, however deep; any other group, one a
    task raised itself (a filter of the user's, say), kept whole, as trio keeps it."""
    return _opened(group, lambda inner: inner.message == _NURSERY_GROUP)


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of ``group`` that are not groups, however deep."""
    return _opened(group, lambda inner: True)


def _opened(
    group: BaseExceptionGroup[BaseException],
    opens: Callable[[BaseExceptionGroup[BaseException]], bool],
) -> list[BaseException]:
    """What ``group`` holds, the groups that ``opens`` takes (``group`` first) taken apart,
    however deep, the others kept whole."""
    if not opens(group):
        return [group]
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_opened(exc, opens))
        else:
            out.append(exc)
    return out
