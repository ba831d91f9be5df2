"""Leaving a nursery that a context manager holds for its block (an agent's, a UDP mux's):
the block's own exception goes on as itself, not wrapped in an exception group."""

from __future__ import annotations

import sys
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["exit_nursery"]


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
    """
    try:
        return bool(await manager.__aexit__(exc_type, exc, tb))
    except BaseExceptionGroup as group:
        if exc is not None and len(group.exceptions) == 1 and _same(group.exceptions[0], exc):
            return False
        leaves = _leaves(group)
        if len(leaves) != 1:
            raise
        raise leaves[0] from None


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


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
