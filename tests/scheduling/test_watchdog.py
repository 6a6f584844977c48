"""The watchdog: one daemon thread calling callbacks at monotonic deadlines (the
scheduler bridge's timeouts). Deadlines here are a few tens of milliseconds away and
every wait is on an event a callback sets, never a sleep."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from exectrack.integrations._watchdog import Watchdog


def _recorder() -> tuple[list[str], Callable[[str], Callable[[], None]]]:
    calls: list[str] = []

    def record(name: str) -> Callable[[], None]:
        return lambda: calls.append(name)

    return calls, record


def _barrier(watchdog: Watchdog, at: float) -> threading.Event:
    """An event set by a callback due at ``at``: once set, everything due before ran."""
    done = threading.Event()
    watchdog.schedule(at, done.set)
    return done


def test_callbacks_run_in_deadline_order_on_the_named_thread() -> None:
    watchdog = Watchdog(name="exectrack-test-watchdog")
    calls, record = _recorder()
    names: list[str] = []
    now = time.monotonic()
    watchdog.schedule(now + 0.06, record("third"))
    watchdog.schedule(now + 0.02, record("first"))
    watchdog.schedule(now + 0.04, record("second"))
    watchdog.schedule(now + 0.05, lambda: names.append(threading.current_thread().name))
    assert _barrier(watchdog, now + 0.08).wait(10)
    assert calls == ["first", "second", "third"]
    assert names == ["exectrack-test-watchdog"]
    watchdog.stop()


def test_a_deadline_already_past_runs_at_once() -> None:
    watchdog = Watchdog()
    done = threading.Event()
    watchdog.schedule(time.monotonic() - 5, done.set)
    assert done.wait(10)
    watchdog.stop()


def test_keys_are_distinct_and_a_cancelled_callback_never_runs() -> None:
    watchdog = Watchdog()
    calls, record = _recorder()
    now = time.monotonic()
    keys = [watchdog.schedule(now + 0.03, record(name)) for name in ("a", "b", "c")]
    assert len(set(keys)) == 3
    watchdog.cancel(keys[1])
    watchdog.cancel(10_000)  # no such key: nothing happens
    assert _barrier(watchdog, now + 0.06).wait(10)
    assert calls == ["a", "c"]
    watchdog.cancel(keys[0])  # already ran: harmless
    watchdog.stop()


def test_cancelling_the_earliest_lets_the_next_run_on_time() -> None:
    """The thread sleeps until the earliest deadline; cancelling that one wakes it to
    wait for the next instead of running nothing, or the cancelled one."""
    watchdog = Watchdog()
    calls, record = _recorder()
    now = time.monotonic()
    first = watchdog.schedule(now + 0.03, record("first"))
    watchdog.schedule(now + 0.05, record("second"))
    watchdog.cancel(first)
    assert _barrier(watchdog, now + 0.07).wait(10)
    assert calls == ["second"]
    watchdog.stop()


def test_a_failing_callback_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="exectrack")
    watchdog = Watchdog()

    def fail() -> None:
        raise ValueError("boom")

    now = time.monotonic()
    watchdog.schedule(now + 0.02, fail)
    assert _barrier(watchdog, now + 0.04).wait(10)
    [record] = [r for r in caplog.records if r.name == "exectrack.integrations"]
    assert record.getMessage() == "exectrack: a timeout callback failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    watchdog.stop()


def test_stop_drops_what_is_pending_ends_the_thread_and_a_later_schedule_restarts_it() -> None:
    watchdog = Watchdog()
    calls, record = _recorder()
    now = time.monotonic()
    watchdog.schedule(now + 0.05, record("dropped"))
    thread = watchdog._thread
    assert thread is not None and thread.is_alive()
    watchdog.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert _barrier(watchdog, time.monotonic() + 0.1).wait(10)
    assert calls == []
    assert watchdog._thread is not thread and watchdog._thread is not None
    watchdog.stop()
