"""The sync path's breaker, pinned: what opens it (an unavailable store, and only after
a slow wait), one probe thread however often it trips, the probe's back-off, and the
first answer closing it. The probe's sleeps are recorded, not waited for."""

from __future__ import annotations

import signal
import threading
import time
import types

import pytest

from exectrack import _breaker
from exectrack._breaker import RETRY_MAX, SLOW, Breaker
from exectrack.errors import StoreError, StoreUnavailableError


class Probe:
    """Fails ``failures`` times, then answers; records the signal mask it ran with."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.answered = threading.Event()
        self.blocked: set[int] = set()

    def __call__(self) -> None:
        self.calls += 1
        self.blocked = set(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        if self.calls <= self.failures:
            raise StoreUnavailableError("still down")
        self.answered.set()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The probe thread's sleeps, recorded; each waits only a moment."""
    asked: list[float] = []

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        time.sleep(0.001)

    monkeypatch.setattr(_breaker, "time", types.SimpleNamespace(sleep=sleep))
    return asked


def wait_closed(b: Breaker) -> None:
    thread = b._thread
    assert thread is not None
    thread.join(30)
    assert not thread.is_alive(), "the probe thread never ended"
    assert b.open is False


def test_a_new_breaker_is_closed_with_no_thread() -> None:
    b = Breaker(Probe(0))
    assert (b.open, b._thread) == (False, None)


@pytest.mark.parametrize(
    "exc", [StoreError("broken"), ValueError("x"), TimeoutError("t"), ConnectionError("c")]
)
def test_only_an_unavailable_store_opens_it(exc: BaseException) -> None:
    b = Breaker(Probe(0))
    b.trip(exc, waited=60.0)
    assert (b.open, b._thread) == (False, None)


def test_a_fast_failure_opens_nothing_a_slow_one_does(sleeps: list[float]) -> None:
    probe = Probe(0)
    b = Breaker(probe)
    for waited in (0.0, SLOW / 2, SLOW - 1e-9):
        b.trip(StoreUnavailableError("down"), waited)
        assert (b.open, b._thread) == (False, None)
    b.trip(StoreUnavailableError("down"), SLOW)  # the threshold itself is slow
    assert b.open is True
    wait_closed(b)
    assert probe.calls == 1


def test_one_probe_thread_however_often_it_trips(sleeps: list[float]) -> None:
    gate = threading.Event()
    calls = []

    def probe() -> None:
        calls.append(1)
        gate.wait(30)

    b = Breaker(probe)
    b.trip(StoreUnavailableError("down"), 1.0)
    thread = b._thread
    assert thread is not None
    assert (thread.name, thread.daemon, thread.is_alive()) == ("exectrack-probe", True, True)
    for _ in range(5):
        b.trip(StoreUnavailableError("down"), 1.0)
    assert b._thread is thread
    gate.set()
    wait_closed(b)
    assert calls == [1]


def test_the_probe_backs_off_to_half_a_second_and_the_first_answer_closes_it(
    sleeps: list[float],
) -> None:
    probe = Probe(failures=6)
    b = Breaker(probe)
    b.trip(StoreUnavailableError("down"), 1.0)
    assert probe.answered.wait(30)
    wait_closed(b)
    assert probe.calls == 7
    assert sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, RETRY_MAX, RETRY_MAX, RETRY_MAX])
    assert RETRY_MAX == 0.5


def test_any_exception_of_the_probe_only_delays_it(sleeps: list[float]) -> None:
    answers = iter([RuntimeError("odd"), KeyError("k"), None])

    def probe() -> None:
        exc = next(answers)
        if exc is not None:
            raise exc

    b = Breaker(probe)
    b.trip(StoreUnavailableError("down"), 1.0)
    wait_closed(b)
    assert sleeps == pytest.approx([0.05, 0.1, 0.2])


def test_the_probe_thread_leaves_sigterm_and_sigint_to_other_threads(
    sleeps: list[float],
) -> None:
    probe = Probe(0)
    b = Breaker(probe)
    b.trip(StoreUnavailableError("down"), 1.0)
    wait_closed(b)
    assert {signal.SIGTERM, signal.SIGINT} <= probe.blocked
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_it_opens_again_after_closing(sleeps: list[float]) -> None:
    probe = Probe(0)
    b = Breaker(probe)
    b.trip(StoreUnavailableError("down"), 1.0)
    wait_closed(b)
    first = b._thread
    b.trip(StoreUnavailableError("down again"), 1.0)
    assert b._thread is not first
    wait_closed(b)
    assert probe.calls == 2


def test_reset_closes_it_and_forgets_the_thread_and_lock(sleeps: list[float]) -> None:
    gate = threading.Event()
    b = Breaker(lambda: gate.wait(30))
    b.trip(StoreUnavailableError("down"), 1.0)
    thread, lock = b._thread, b._lock
    assert thread is not None
    b.reset()
    assert (b.open, b._thread) == (False, None)
    assert b._lock is not lock
    assert not b._lock.locked()
    gate.set()
    thread.join(30)
    assert not thread.is_alive()
