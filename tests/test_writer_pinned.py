"""The background writer, pinned: what it drops and says, how long a full queue
waits, what a fold writes, batch sizes, flush and close, and when it lingers.

The writer waits on threads and on the monotonic clock, which no fake clock reaches:
where a test needs time to pass it holds the store at a gate (a stuck database) and
bounds what it waits for, never sleeps for a duration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack._writer import Writer, WriterStats, _Marker, _writers
from exectrack.errors import StoreUnavailableError
from exectrack.stores import ApplyResult, Command, FinishRun, MarkRunning, NewRun, open_store
from exectrack.testing import FailingStore, FakeClock

T0 = 1_764_000_000_000_000


class Store(FailingStore):
    """A real store that records each batch it is given; ``gate`` (open by default)
    holds ``apply`` while closed."""

    def __init__(self, url: str) -> None:
        super().__init__(open_store(url), fail=set())
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        self.entered.set()
        self.gate.wait(30)
        self.batches.append(len(commands))
        return super().apply(commands)


class Reports:
    """The writer's ``report``: what it was told, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, cause: str, exc: BaseException) -> None:
        self.seen.append((cause, type(exc).__name__, str(exc)))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.gate.set()
    for writer in list(_writers):  # every writer thread is done with the store first
        thread = writer._thread
        if writer.store is s and thread is not None:
            writer.close(10)
            thread.join(10)
            assert not thread.is_alive()
    s.inner.close()


def held(store: Store, writer: Writer) -> None:
    """Make the writer take one command and hold it at the store's gate."""
    store.gate.clear()
    writer.submit(NewRun("held", "skill", T0))
    assert store.entered.wait(10)


# -- what is dropped, and what is said -------------------------------------------------


def test_commands_after_close_are_dropped_and_said_once(store: Store) -> None:
    """After close() a command is refused (False), counted as dropped, and reported
    under ``dropped`` with why, once."""
    reports = Reports()
    w = Writer(store, reports)
    w.close(5)
    assert w.submit(NewRun("late", "skill", T0)) is False
    assert w.finish(None, FinishRun("late", RunStatus.SUCCESS, T0 + 1)) is False
    assert w.stats().dropped == 2
    assert reports.seen == [
        ("dropped", "RuntimeError", "tracker closed: commands after close() are dropped")
    ]


def test_drops_are_reported_first_then_every_ten_thousandth(store: Store) -> None:
    """A stream of drops is reported at the first and then at every 10,000th."""
    reports = Reports()
    w = Writer(store, reports)
    w.close(5)
    cmd = NewRun("late", "skill", T0)
    for _ in range(20_001):
        w.submit(cmd)
    assert w.stats().dropped == 20_001
    assert [cause for cause, _, _ in reports.seen] == ["dropped"] * 3


def test_a_full_queue_drops_a_new_run_after_the_put_wait(store: Store) -> None:
    """With the queue full (here: the writer lingers), a new run from a plain thread
    waits ``put_wait`` for room, then is dropped, said to be beyond the store."""
    reports = Reports()
    w = Writer(store, reports, queue_size=2, put_wait=0.2, linger=60)
    assert w.submit(NewRun("a", "skill", T0)) and w.submit(NewRun("b", "skill", T0))
    began = time.monotonic()
    assert w.submit(NewRun("c", "skill", T0)) is False
    waited = time.monotonic() - began
    assert 0.2 <= waited < 0.8
    assert reports.seen == [
        ("dropped", "RuntimeError", "queue full: the store cannot keep up; new runs are dropped")
    ]
    # a start or finish is never refused for room: its run was accepted
    assert w.submit(MarkRunning("a", T0 + 1)) is True
    assert w.stats().dropped == 1
    assert w.close(5)
    assert store.batches == [3]


def test_a_full_queue_waits_while_a_batch_is_in_the_store(store: Store) -> None:
    """A batch in the store (not yet stalled) makes a new run wait the whole put_wait."""
    w = Writer(store, Reports(), queue_size=1, put_wait=0.3, linger=0)
    held(store, w)
    assert w.submit(NewRun("a", "skill", T0))
    began = time.monotonic()
    assert w.submit(NewRun("b", "skill", T0)) is False
    assert 0.3 <= time.monotonic() - began < 0.9
    store.gate.set()
    assert w.close(5)


def test_a_full_queue_stops_waiting_once_the_batch_stalled(store: Store) -> None:
    """Once one batch has been in the store for more than a second, a new run that
    finds the queue full stops waiting (however long its put_wait)."""
    w = Writer(store, Reports(), queue_size=1, put_wait=20, linger=0)
    held(store, w)
    assert w.submit(NewRun("a", "skill", T0))
    began = time.monotonic()
    assert w.submit(NewRun("b", "skill", T0)) is False
    assert 0.9 <= time.monotonic() - began < 5
    store.gate.set()
    assert w.close(5)


def test_a_full_queue_of_a_down_store_drops_at_once(store: Store) -> None:
    """While the store is down a new run that finds the queue full is dropped at once,
    said to be the store's unavailability."""
    reports = Reports()
    w = Writer(store, reports, queue_size=1, put_wait=20, linger=0)
    store.fail = {"apply"}
    store.error = StoreUnavailableError("down")
    w.submit(NewRun("a", "skill", T0))
    deadline = time.monotonic() + 10
    while not w.down:
        assert time.monotonic() < deadline, "the writer never saw the store down"
        time.sleep(0.001)
    w.submit(NewRun("b", "skill", T0))
    began = time.monotonic()
    assert w.submit(NewRun("c", "skill", T0)) is False
    assert time.monotonic() - began < 0.5
    assert (
        "dropped",
        "RuntimeError",
        "queue full: the store is unavailable; new runs are dropped",
    ) in reports.seen
    assert w.stats().down is True
    store.fail = set()
    assert w.close(10)
    assert w.stats().down is False


def test_a_rejected_command_is_reported_under_write(db_url: str) -> None:
    """A command the store rejects is dropped alone and reported under ``write``."""
    t = ExecutionTracker(db_url, strict=False)
    assert t._writer is not None
    t._writer.submit(FinishRun("x", RunStatus.RUNNING, T0))
    assert t.flush(5)
    assert t.stats().failures_by_cause == {
        "write: InvalidArgumentError: cannot finish run x with non-terminal status 'running'": 1
    }
    t.close()


# -- folding a start or a finish into a create that still waits ------------------------


def test_a_folded_finish_writes_every_field(db_url: str) -> None:
    """A run that ends while its create still waits in the queue is written as one row
    with everything its finish said: status, duration, code, message, retryable,
    items and the time to the first item."""
    clock = FakeClock(datetime(2025, 11, 24, tzinfo=UTC))
    store = Store(db_url)
    t = ExecutionTracker(store, strict=True, clock=clock, lease=None)
    assert t._writer is not None
    t._writer._linger = 60.0

    @t.with_run("chat", "stream")
    def stream() -> Iterator[int]:
        clock.advance(0.5)
        yield 1
        yield 2
        clock.advance(1)
        yield 3

    assert list(stream()) == [1, 2, 3]
    h = t.start("skill", "failing")
    clock.advance(2)
    t.finish_error(h, code="quota_exceeded", message="over quota", retryable=True)
    assert t.flush(5)
    assert store.batches == [2]
    runs = {r.source_ref: r for r in t.list_runs(limit=10).runs}
    s = runs["stream"]
    assert (s.status, s.duration_ms, s.items, s.first_item_ms) == (
        RunStatus.SUCCESS,
        1500.0,
        3,
        500.0,
    )
    f = runs["failing"]
    assert (f.status, f.duration_ms, f.error_code, f.error_message, f.retryable) == (
        RunStatus.ERROR,
        2000.0,
        "quota_exceeded",
        "over quota",
        True,
    )
    t.close()
    store.inner.close()


def test_fold_into_a_waiting_create_returns_true_and_queues_nothing(store: Store) -> None:
    """Writer.start/finish fold into a create still in the queue (True, one entry);
    given no create (None) they queue their own command."""
    w = Writer(store, Reports(), linger=60)
    new = NewRun("a", "skill", T0, RunStatus.QUEUED)
    assert w.submit(new)
    assert w.start(new, MarkRunning("a", T0 + 1)) is True
    assert new.status is RunStatus.RUNNING
    assert w.finish(new, FinishRun("a", RunStatus.SUCCESS, T0 + 2)) is True
    assert w.stats().queued == 1
    assert w.start(None, MarkRunning("b", T0 + 1)) is True
    assert w.finish(None, FinishRun("b", RunStatus.SUCCESS, T0 + 2)) is True
    assert w.stats().queued == 3
    assert w.close(5)
    run = open_store(store.url).get("a")
    assert run is not None and run.status is RunStatus.SUCCESS


def test_a_queued_run_started_while_its_create_waits_is_one_row(db_url: str) -> None:
    """mark_running of a queued run whose create still waits folds into that create:
    one command, the run written running."""
    store = Store(db_url)
    t = ExecutionTracker(store, strict=True, lease=None)
    assert t._writer is not None
    t._writer._linger = 60.0
    h = t.start("skill", queued=True)
    assert t.mark_running(h).applied
    assert t.flush(5)
    assert store.batches == [1]
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.RUNNING
    t.close()
    store.inner.close()


def test_a_queued_run_started_after_its_create_was_written_is_started(db_url: str) -> None:
    """mark_running of a queued run whose create was already taken queues a start:
    the stored run becomes running (it is not folded into the written create)."""
    store = Store(db_url)
    t = ExecutionTracker(store, strict=True, lease=None)
    h = t.start("skill", queued=True)
    assert t.flush(5)
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.QUEUED
    assert t.mark_running(h).applied
    assert t.flush(5)
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.RUNNING
    assert store.batches == [1, 1]
    t.close()
    store.inner.close()


# -- batches, flush, close, stats ------------------------------------------------------


def test_batches_hold_at_most_max_batch_commands(store: Store) -> None:
    """Commands that piled up while the store was busy are taken max_batch at a time."""
    w = Writer(store, Reports(), max_batch=3, linger=0)
    held(store, w)
    for i in range(7):
        w.submit(NewRun(f"r{i}", "skill", T0))
    store.gate.set()
    assert w.flush(5)
    assert store.batches == [1, 3, 3, 1]
    assert w.stats().batches == 4
    assert w.stats().committed == 8
    assert w.close(5)


def test_flush_without_a_thread_tells_whether_anything_waits(store: Store) -> None:
    """A writer whose thread has ended (or never ran) does not wait in flush(): True
    when nothing is queued, False when commands are left."""
    w = Writer(store, Reports())
    assert w.flush(5) is True  # never started
    w.submit(NewRun("a", "skill", T0))
    assert w.close(5)
    began = time.monotonic()
    assert w.flush(5) is True  # the thread ended, nothing left
    assert time.monotonic() - began < 1
    w._pending.append(_Marker())  # a flush's marker left behind counts for nothing
    assert w.flush(5) is True
    w._pending.append(NewRun("b", "skill", T0))  # as left by a close that timed out
    assert w.flush(5) is False


def test_close_ends_the_thread_before_it_returns(store: Store) -> None:
    """close() flushes and joins the writer's thread: it is gone when close returns;
    the thread was a daemon named exectrack-writer."""
    w = Writer(store, Reports())
    w.submit(NewRun("a", "skill", T0))
    thread = w._thread
    assert thread is not None and thread.daemon and thread.name == "exectrack-writer"
    assert w.close(5) is True
    assert not thread.is_alive()


def test_close_of_a_stuck_store_returns_after_its_timeout(store: Store) -> None:
    """close(timeout) with a batch stuck in the store returns False after the timeout
    and does not wait for the thread on top of it."""
    w = Writer(store, Reports(), linger=0)
    held(store, w)
    w.submit(NewRun("a", "skill", T0))
    began = time.monotonic()
    assert w.close(1.0) is False
    assert 1.0 <= time.monotonic() - began < 1.8  # not its timeout again for the join
    store.gate.set()


# -- waking and lingering --------------------------------------------------------------


def test_an_idle_writer_is_woken_by_each_command(store: Store) -> None:
    """Each command submitted to an idle writer lands within moments (it is woken, not
    found by its half-second safety timeout)."""
    w = Writer(store, Reports(), linger=0)
    reader = open_store(store.url)
    began = time.monotonic()
    for i in range(6):
        deadline = time.monotonic() + 10
        while not w._idle:  # wait until the thread sleeps again
            assert time.monotonic() < deadline
            time.sleep(0.001)
        w.submit(NewRun(f"r{i}", "skill", T0))
        while reader.get(f"r{i}") is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    assert time.monotonic() - began < 2.0  # six half-second timeouts would be 3 s
    reader.close()
    assert w.close(5)


def test_a_writer_woken_after_a_flush_lingers_again(store: Store) -> None:
    """A flush cuts one linger short, not the next ones: woken from sleep later, the
    writer lingers again before it takes a create."""
    w = Writer(store, Reports(), linger=60)
    w.submit(NewRun("a", "skill", T0))
    assert w.flush(5)
    deadline = time.monotonic() + 10
    while not w._idle:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    new = NewRun("b", "skill", T0)
    w.submit(new)
    waited = threading.Event().wait(0.3)  # the thread would take it by now if it did not linger
    assert not waited and not new.taken
    assert w.close(5)
    assert new.taken and store.batches == [1, 1]


def test_a_full_queue_takes_the_run_once_room_appears(store: Store) -> None:
    """A new run that waits for room is queued (True) as soon as the writer takes
    what was pending, within its put_wait."""
    w = Writer(store, Reports(), queue_size=1, put_wait=10, linger=0)
    held(store, w)
    assert w.submit(NewRun("a", "skill", T0))
    opener = threading.Timer(0.05, store.gate.set)  # the store answers while b waits
    opener.start()
    assert w.submit(NewRun("b", "skill", T0)) is True
    opener.join()
    assert w.close(5)
    assert w.stats().dropped == 0 and w.stats().committed == 3


def test_an_exit_with_the_store_down_says_so(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """At exit with the store down, the log says the store is unavailable and how
    many commands were not written (after half a second, not the whole timeout)."""
    store = Store(db_url)
    store.fail = {"apply"}
    store.error = StoreUnavailableError("down")
    t = ExecutionTracker(store, strict=False, lease=None)
    t.start("skill")
    assert t._writer is not None
    deadline = time.monotonic() + 10
    while not t._writer.down:
        assert time.monotonic() < deadline, "the writer never saw the store down"
        time.sleep(0.001)
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="exectrack._writer"):
        assert t.shutdown(5) == 1
    assert time.monotonic() - began < 2.5
    assert "exectrack: the store is unavailable; 2 commands not written" in caplog.messages
    store.fail = set()
    t.close()
    store.inner.close()


def test_a_store_that_goes_down_is_noted_once_and_resumed_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that fails with StoreUnavailableError is noted once (not reported as
    a failure) however often the batch is retried; when it answers again the batch
    is written and a warning says writing resumed."""
    notes, reports = Reports(), Reports()
    w = Writer(store, reports, notes, linger=0)
    store.fail = {"apply"}
    store.error = StoreUnavailableError("down")
    w.submit(NewRun("a", "skill", T0))
    deadline = time.monotonic() + 10
    while store.calls.get("apply", 0) < 3:  # retried at least twice
        assert time.monotonic() < deadline, "the batch was not retried"
        time.sleep(0.001)
    assert w.down and w.stats().down
    assert notes.seen == [("store unavailable", "StoreUnavailableError", "down")]
    store.fail = set()
    with caplog.at_level("WARNING", logger="exectrack._writer"):
        assert w.flush(10)
    assert not w.down
    assert f"exectrack: the store {store.url} answers again; writing resumed" in caplog.messages
    assert reports.seen == []
    assert (w.stats().committed, w.stats().dropped) == (1, 0)
    assert w.close(5)


def test_close_while_the_store_is_down_drops_the_batch_quietly(store: Store) -> None:
    """close() while the store is down gives up after half a second (False); the
    thread then drops the batch it held, counted, without a failure report."""
    reports = Reports()
    w = Writer(store, reports, Reports(), linger=0)
    store.fail = {"apply"}
    store.error = StoreUnavailableError("down")
    for i in range(3):
        w.submit(NewRun(f"r{i}", "skill", T0))
    deadline = time.monotonic() + 10
    while not w.down:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    began = time.monotonic()
    assert w.close(10) is False
    assert 0.5 <= time.monotonic() - began < 2.0
    thread = w._thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert (w.stats().dropped, w.stats().committed) == (3, 0)
    assert reports.seen == []
    store.fail = set()


def test_counts_of_a_batch_with_commands_that_did_not_apply(store: Store) -> None:
    """A batch counts every command it committed, those that did not apply (a
    duplicate create, a second finish) apart, and one batch."""
    w = Writer(store, Reports(), linger=60)
    w.submit(NewRun("a", "skill", T0))
    w.submit(NewRun("a", "skill", T0))
    w.submit(FinishRun("a", RunStatus.SUCCESS, T0 + 1))
    w.submit(FinishRun("a", RunStatus.ERROR, T0 + 2))
    assert w.flush(5)
    s = w.stats()
    assert (s.committed, s.not_applied, s.batches, s.queued, s.dropped) == (4, 2, 1, 0, 0)
    assert w.close(5)


def test_a_start_folds_only_into_a_queued_create(store: Store) -> None:
    """A start given a create that waits but is already running (not queued) is not
    folded: it is queued as its own command, for the store to judge."""
    w = Writer(store, Reports(), linger=60)
    new = NewRun("r", "skill", T0)  # created running
    assert w.submit(new)
    assert w.start(new, MarkRunning("r", T0 + 1)) is True
    assert w.stats().queued == 2
    assert w.flush(5)
    assert (w.stats().committed, w.stats().not_applied) == (2, 1)
    assert w.close(5)


def test_flush_without_a_timeout_waits_until_written(store: Store) -> None:
    """flush(None) waits as long as it takes, and is True once everything is written."""
    w = Writer(store, Reports(), linger=0)
    held(store, w)
    w.submit(NewRun("a", "skill", T0))
    opener = threading.Timer(0.05, store.gate.set)
    opener.start()
    assert w.flush(None) is True
    opener.join()
    assert w.stats().committed == 2
    assert w.close(5)


def _down_after(store: Store, seconds: float) -> threading.Timer:
    """In ``seconds``: the store goes down and the batch held at its gate meets it."""

    def go_down() -> None:
        store.error = StoreUnavailableError("down")
        store.fail = {"apply"}
        store.gate.set()

    timer = threading.Timer(seconds, go_down)
    timer.start()
    return timer


@pytest.mark.parametrize("timeout", [None, 10.0])
def test_flush_gives_up_half_a_second_after_the_store_went_down(
    store: Store, timeout: float | None
) -> None:
    """A flush that was waiting on a store that then went down gives up (False) half a
    second later, with or without a timeout of its own."""
    w = Writer(store, Reports(), Reports(), linger=0)
    held(store, w)
    began = time.monotonic()  # before the timer starts: it cannot fire earlier than 0.1 s
    timer = _down_after(store, 0.1)
    assert w.flush(timeout) is False
    assert 0.6 <= time.monotonic() - began < 1.0
    timer.join()
    store.fail = set()
    assert w.close(10)


def test_a_new_writer_reports_empty_stats_and_max_batch_one_is_one(store: Store) -> None:
    """A new writer's stats are all zero and not down; max_batch=1 writes one command
    per batch."""
    w = Writer(store, Reports(), max_batch=1, linger=0)
    assert w.stats() == WriterStats(0, 0, 0, 0, 0, False)
    assert w.stats().down is False
    held(store, w)
    for i in range(3):
        w.submit(NewRun(f"r{i}", "skill", T0))
    store.gate.set()
    assert w.flush(5)
    assert store.batches == [1, 1, 1, 1]
    assert w.close(5)


def test_a_full_queue_after_a_written_batch_still_waits_and_drops(store: Store) -> None:
    """After a batch was written (no batch in the store now), a new run that finds
    the queue full waits its put_wait and is dropped, like any other."""
    w = Writer(store, Reports(), queue_size=1, put_wait=0.2, linger=60)
    w.submit(NewRun("first", "skill", T0))
    assert w.flush(5)
    deadline = time.monotonic() + 10
    while not w._idle:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert w.submit(NewRun("a", "skill", T0))  # the writer lingers: the queue is full
    began = time.monotonic()
    assert w.submit(NewRun("b", "skill", T0)) is False
    assert 0.2 <= time.monotonic() - began < 0.8
    assert w.close(5)


def test_retries_of_a_down_store_back_off(store: Store) -> None:
    """While the store is down the batch is retried with a growing delay (5 ms,
    doubling): a few attempts in half a second, not one every few milliseconds."""
    w = Writer(store, Reports(), Reports(), linger=0)
    store.fail = {"apply"}
    store.error = StoreUnavailableError("down")
    w.submit(NewRun("a", "skill", T0))
    assert not threading.Event().wait(0.6)  # the store stays down this long
    attempts = store.calls["apply"]
    store.fail = set()
    assert 3 <= attempts <= 12
    deadline = time.monotonic() + 10
    while w.down:  # the next retry (up to a second away) finds the store back
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert w.close(5)


def test_a_full_queue_after_a_rejected_command_still_waits_and_drops(store: Store) -> None:
    """After a batch the store rejected (its command dropped), a new run that finds the
    queue full waits its put_wait and is dropped, like any other."""
    w = Writer(store, Reports(), queue_size=1, put_wait=0.2, linger=60)
    w.submit(FinishRun("x", RunStatus.RUNNING, T0))  # invalid: the store rejects it
    assert w.flush(5)
    assert w.stats().dropped == 1
    deadline = time.monotonic() + 10
    while not w._idle:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert w.submit(NewRun("a", "skill", T0))  # the writer lingers: the queue is full
    began = time.monotonic()
    assert w.submit(NewRun("b", "skill", T0)) is False
    assert 0.2 <= time.monotonic() - began < 0.8
    assert w.close(5)


def test_not_applied_counts_add_up_over_batches(store: Store) -> None:
    """Commands that did not apply are counted over every batch, not the last one."""
    w = Writer(store, Reports(), linger=0)
    w.submit(NewRun("a", "skill", T0))
    w.submit(NewRun("a", "skill", T0))
    assert w.flush(5)
    w.submit(NewRun("a", "skill", T0))
    assert w.flush(5)
    assert (w.stats().not_applied, w.stats().committed) == (2, 3)
    assert w.close(5)
