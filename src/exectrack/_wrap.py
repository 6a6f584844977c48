"""``with_run``: one object that is a context manager (sync and async) and a decorator.

Four thin wrappers drive the tracker's lifecycle: plain functions, coroutine
functions, generator functions and async-generator functions. A generator's run starts
when its body first runs; a plain (or async) function that returns a stream is
followed until that stream ends. The parent run is set only while the tracked body
runs, never while the consumer of a stream holds control.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Mapping
from types import AsyncGeneratorType, CoroutineType, GeneratorType, TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from exectrack._classify import ResultClassifier
from exectrack._context import current
from exectrack._default import default_tracker_or_none
from exectrack._echo import echo
from exectrack._lifecycle import (
    CONSUMER_CLOSED,
    SUCCESS,
    Outcome,
    closed_early,
    outcome_of_result,
)
from exectrack._log import get_logger
from exectrack._model import validate_source
from exectrack._redact import Problems, clean_text, require_mapping
from exectrack._tracker import (
    REF_LIMIT,
    Deadline,
    ExecutionTracker,
    RunHandle,
    clean_refs,
    null_handle,
)
from exectrack.errors import InvalidArgumentError

__all__ = ["TrackedRun"]

log = get_logger("exectrack")

P = ParamSpec("P")
R = TypeVar("R")
Opened = tuple[ExecutionTracker, RunHandle] | None


def _end_on_result(
    t: ExecutionTracker, h: RunHandle, value: Any, classify: ResultClassifier | None
) -> None:
    """End the run on the body's result, as the call site's classifier judges it."""
    outcome: Outcome = SUCCESS
    if classify is not None:
        try:
            outcome = outcome_of_result(value, classify)
        except Exception as exc:  # a broken classifier must not break the host
            if t.strict:  # ... unless asked to: the run ends as that error, then raise
                t._end_exc(h, exc)
                raise
            t._report("result classifier", exc)
    t._end(h, outcome)


_PLAIN_RESULTS = frozenset({type(None), bool, int, float, str, bytes, dict, list, tuple})


def _settle(
    t: ExecutionTracker, h: RunHandle, result: Any, classify: ResultClassifier | None
) -> Any:
    """End the run on a returned value, or follow a returned stream/coroutine."""
    kind = type(result)
    if kind in _PLAIN_RESULTS:
        _end_on_result(t, h, result, classify)
        return result
    if kind is GeneratorType:
        follower: Any = _drive_sync(t, h, result, classify)
    elif kind is AsyncGeneratorType or hasattr(kind, "__anext__"):
        follower = _async_stream(lambda: (t, h), lambda: result, classify)()
    elif kind is CoroutineType:
        follower = _follow_coroutine(t, h, result, classify)
    else:
        _end_on_result(t, h, result, classify)
        return result
    # A followed stream nobody ever iterates would leave its run open: end it when
    # the follower is collected (a no-op if the stream ended first).
    weakref.finalize(follower, t._end, h, CONSUMER_CLOSED)
    return follower


async def _follow_coroutine(
    t: ExecutionTracker,
    h: RunHandle,
    coro: Coroutine[Any, Any, Any],
    classify: ResultClassifier | None,
) -> Any:
    token = current.set(h)
    try:
        result = await coro
    except BaseException as exc:
        t._end_exc(h, exc)
        raise
    finally:
        current.reset(token)
    _end_on_result(t, h, result, classify)
    return result


def _drive_sync(
    t: ExecutionTracker,
    h: RunHandle,
    gen: Generator[Any, Any, Any],
    classify: ResultClassifier | None,
) -> Generator[Any, Any, Any]:
    """Drive ``gen``, forwarding send/throw/close, and end the run exactly once;
    count what it yields (the only per-item cost) and when the first item came."""
    send: Any = None
    thrown: BaseException | None = None
    h._items = 0
    while True:
        token = current.set(h)
        try:
            if thrown is not None:
                to_throw, thrown = thrown, None
                item = gen.throw(to_throw)
            else:
                item = gen.send(send)
        except StopIteration as stop:
            _end_on_result(t, h, stop.value, classify)
            return stop.value
        except BaseException as exc:
            t._end_exc(h, exc)
            raise
        finally:
            current.reset(token)
        h._items += 1
        if h._items == 1:
            h._first_ns = t.clock.monotonic_ns()
        try:
            send = yield item
        except GeneratorExit:
            token = current.set(h)
            try:
                gen.close()
            finally:
                current.reset(token)
                t._end(h, closed_early())
            raise
        except BaseException as exc:
            thrown, send = exc, None


def _async_stream(
    begin: Callable[[], Opened],
    make: Callable[..., AsyncIterator[Any]],
    classify: ResultClassifier | None,
) -> Callable[..., Any]:
    """An async generator function that drives ``make(...)`` and ends its run once.

    ``begin`` runs when the body first runs (the first ``__anext__``).
    """

    async def stream(*args: Any, **kwargs: Any) -> Any:
        opened = begin()
        t, h = opened if opened is not None else (None, None)
        try:
            it = make(*args, **kwargs)
        except BaseException as exc:
            if t is not None and h is not None:
                t._end_exc(h, exc)
            raise
        asend = getattr(it, "asend", None)
        send: Any = None
        thrown: BaseException | None = None
        if h is not None:
            h._items = 0
        while True:
            token = None if h is None else current.set(h)
            try:
                if thrown is not None:
                    to_throw, thrown = thrown, None
                    athrow = getattr(it, "athrow", None)
                    if athrow is None:
                        raise to_throw
                    item = await athrow(to_throw)
                elif asend is not None:
                    item = await asend(send)
                else:
                    item = await it.__anext__()
            except StopAsyncIteration:
                if t is not None and h is not None:
                    _end_on_result(t, h, None, classify)
                return
            except BaseException as exc:
                if t is not None and h is not None:
                    t._end_exc(h, exc)
                raise
            finally:
                if token is not None:
                    current.reset(token)
            if h is not None and t is not None:
                h._items += 1  # type: ignore[operator]
                if h._items == 1:
                    h._first_ns = t.clock.monotonic_ns()
            try:
                send = yield item
            except GeneratorExit:
                token = None if h is None else current.set(h)
                try:
                    aclose = getattr(it, "aclose", None)
                    if aclose is not None:
                        await aclose()
                finally:
                    if token is not None:
                        current.reset(token)
                    if t is not None and h is not None:
                        t._end(h, closed_early())
                raise
            except BaseException as exc:
                thrown, send = exc, None

    return stream


class TrackedRun:
    """What ``with_run(...)`` returns. Each ``with`` block or call records one run."""

    __slots__ = (
        "_problems",
        "_tracker",
        "classify_result",
        "deadline",
        "metadata",
        "session_id",
        "source",
        "source_ref",
    )

    def __init__(
        self,
        tracker: ExecutionTracker | None,
        source: str,
        *,
        source_ref: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        deadline: Deadline = None,
        classify_result: ResultClassifier | None = None,
    ) -> None:
        self._tracker = tracker
        self.source = validate_source(source)
        # A value whose __str__ raises gets a placeholder, counted on the tracker when
        # one is known (for the default tracker, at the first use: decorating at
        # import time opens nothing).
        problems: Problems = []
        self.source_ref, self.session_id = clean_refs(source_ref, session_id, problems)
        require_mapping(metadata)  # its values are checked (and counted) at each use
        self.metadata = metadata
        self._problems: Problems | None = problems or None
        if problems and tracker is not None:
            self._report_problems(tracker)
        self.deadline = deadline
        if classify_result is not None and not callable(classify_result):
            raise InvalidArgumentError("classify_result must be callable")
        self.classify_result = classify_result

    def _resolve(self) -> ExecutionTracker | None:
        t = self._tracker if self._tracker is not None else default_tracker_or_none()
        if self._problems is not None and t is not None:
            self._report_problems(t)
        return t

    def _report_problems(self, tracker: ExecutionTracker) -> None:
        problems, self._problems = self._problems, None
        if problems:
            tracker._problems(problems)

    def _begin(self, source_ref: str | None) -> Opened:
        t = self._resolve()
        if t is None or not t.enabled:
            return None
        return t, t._open(
            self.source, source_ref, self.session_id, self.metadata, self.deadline, clean=False
        )

    # -- context manager ---------------------------------------------------------------

    def __enter__(self) -> RunHandle:
        t = self._resolve()
        if t is None:
            h = null_handle(self.source, self.source_ref)
        else:
            h = t._open(
                self.source,
                self.source_ref,
                self.session_id,
                self.metadata,
                self.deadline,
                clean=False,
            )
        h._token = current.set(h)
        return h

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        h = current.get()
        token = None if h is None else h._token
        if h is None or token is None:
            log.warning("exectrack: with_run exited in a different context than it entered")
            return
        try:
            current.reset(token)
            h._token = None
        except ValueError:
            # Exited in a copy of the context it was entered in (a task started inside
            # the block): the run ends here; the token stays for the block's own exit,
            # which then restores its context instead of leaving the run current there.
            current.set(None)
        t = h._tracker
        if t is None:
            return
        if exc is None:
            t._end(h, SUCCESS)
        else:
            t._end_exc(h, exc)

    async def __aenter__(self) -> RunHandle:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator ---------------------------------------------------------------------

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if not callable(func):
            raise InvalidArgumentError(f"with_run decorates a callable, not {echo(func)}")
        ref = self.source_ref
        if ref is None:
            ref = clean_text(_qualname(func), REF_LIMIT)
        classify = self.classify_result
        spec = self

        if inspect.isasyncgenfunction(func):
            stream = _async_stream(lambda: spec._begin(ref), func, classify)
            return cast(Callable[P, R], functools.wraps(func)(stream))

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_coroutine(*args: Any, **kwargs: Any) -> Any:
                opened = spec._begin(ref)
                if opened is None:
                    return await func(*args, **kwargs)
                t, h = opened
                token = current.set(h)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    t._end_exc(h, exc)
                    raise
                finally:
                    current.reset(token)
                return _settle(t, h, result, classify)

            return cast(Callable[P, R], run_coroutine)

        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def run_generator(*args: Any, **kwargs: Any) -> Any:
                opened = spec._begin(ref)
                if opened is None:
                    return (yield from func(*args, **kwargs))
                t, h = opened
                try:
                    gen = func(*args, **kwargs)
                except BaseException as exc:
                    t._end_exc(h, exc)
                    raise
                return (yield from _drive_sync(t, h, gen, classify))

            return cast(Callable[P, R], run_generator)

        @functools.wraps(func)
        def run_plain(*args: P.args, **kwargs: P.kwargs) -> R:
            opened = spec._begin(ref)
            if opened is None:
                return func(*args, **kwargs)
            t, h = opened
            token = current.set(h)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                t._end_exc(h, exc)
                raise
            finally:
                current.reset(token)
            return cast(R, _settle(t, h, result, classify))

        return run_plain

    def __repr__(self) -> str:
        return f"with_run({self.source!r}, source_ref={self.source_ref!r})"


def _qualname(func: Callable[..., Any]) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return str(name) if name else type(func).__name__
