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


def test_the_default_thread_is_named_and_never_keeps_the_process_alive() -> None:
    watchdog = Watchdog()
    watchdog.schedule(time.monotonic() + 60, lambda: None)
    thread = watchdog._thread
    assert thread is not None
    assert (thread.name, thread.daemon) == ("exectrack-watchdog", True)
    watchdog.stop()


def test_a_callback_waits_for_its_deadline() -> None:
    watchdog = Watchdog()
    calls, record = _recorder()
    now = time.monotonic()
    watchdog.schedule(now + 60, record("later"))
    assert _barrier(watchdog, now + 0.03).wait(10)
    assert calls == []
    watchdog.stop()


def test_cancelling_the_only_pending_callback_and_unknown_keys_leaves_nothing_behind() -> None:
    """A cancelled key is forgotten once its entry is dropped, and a key that is not
    pending is never remembered: a long-lived scheduler's set stays empty."""
    watchdog = Watchdog()
    calls, record = _recorder()
    now = time.monotonic()
    only = watchdog.schedule(now + 0.02, record("cancelled"))
    watchdog.cancel(only)
    watchdog.cancel(only + 1000)
    assert _barrier(watchdog, now + 0.04).wait(10)
    assert calls == []
    assert watchdog._cancelled == set()
    watchdog.cancel(only + 1000)  # nothing pending at all
    assert watchdog._cancelled == set()
    watchdog.stop()


def _idle(watchdog: Watchdog) -> None:
    """Until the thread waits on an empty heap (polling its state, not the clock)."""
    deadline = time.monotonic() + 10
    while not watchdog._cond._waiters:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the watchdog never went idle"
        time.sleep(0.001)


def test_an_idle_watchdog_woken_runs_only_the_new_callback() -> None:
    """After its last callback the thread waits on an empty heap; a new schedule, a
    cancel or a stop wakes it, and it runs nothing it already ran."""
    watchdog = Watchdog()
    calls, record = _recorder()
    assert _barrier(watchdog, time.monotonic()).wait(10)
    watchdog.schedule(time.monotonic(), record("first"))
    _idle(watchdog)
    done = _barrier(watchdog, time.monotonic() + 0.02)
    watchdog.schedule(time.monotonic() + 0.01, record("second"))
    assert done.wait(10)
    _idle(watchdog)
    assert calls == ["first", "second"]
    watchdog.stop()
    thread = watchdog._thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert calls == ["first", "second"]
