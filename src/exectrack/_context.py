"""The current run travels in a ContextVar, so nested runs get ``parent_id`` for free.

asyncio tasks, ``asyncio.to_thread`` and ``contextvars.copy_context().run`` carry it;
a plain thread pool ``submit`` does not: wrap the callable with :func:`bind_context`.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from exectrack._tracker import RunHandle

__all__ = ["bind_context", "current", "current_run"]

P = ParamSpec("P")
R = TypeVar("R")

current: contextvars.ContextVar[RunHandle | None] = contextvars.ContextVar(
    "exectrack_current_run", default=None
)


def current_run() -> RunHandle | None:
    """The innermost run active in this context, or None."""
    return current.get()


def bind_context(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` bound to a copy of the current context (and so the current run).

    The context is captured when ``bind_context`` is called: runs inside ``work`` are
    children of the run active at that moment (in ``executor.submit(bind_context(work),
    x)`` that is the ``submit`` line, since the argument is evaluated there; a function
    bound once and submitted later keeps the run active when it was bound). Each call
    runs in its own copy, so a reused worker thread never inherits a stale parent.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(func)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(func, *args, **kwargs)

    return bound
