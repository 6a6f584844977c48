"""The ExecutionTracker API: start/finish, first-finish-wins, switch, fail-open, strict."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import exectrack
from exectrack import (
    ExecutionTracker,
    FinishResult,
    InvalidArgumentError,
    RunStatus,
    StoreError,
)
from exectrack.stores import open_store
from exectrack.testing import FailingStore, FakeClock

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_start_then_finish_success(sync_tracker: ExecutionTracker) -> None:
    """start() records a running run; finish_success() ends it with merged metadata."""
    t = sync_tracker
    h = t.start("skill", "search", session_id="s-1", metadata={"q": "cats", "n": 1})
    run = t.get_run(h.id)
    assert run.status is RunStatus.RUNNING and run.finished_at is None
    assert (run.source, run.source_ref, run.session_id) == ("skill", "search", "s-1")
    assert run.owner == t.owner and run.owner.split(":")[1].isdigit()
    assert t.finish_success(h, metadata={"n": 2, "hits": 3}) == FinishResult(
        True, RunStatus.SUCCESS
    )
    run = t.get_run(h.id)
    assert run.status is RunStatus.SUCCESS and run.finished_at is not None
    assert dict(run.metadata) == {"q": "cats", "n": 2, "hits": 3}


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_second_finish_changes_nothing_and_says_so(db_url: str, durability: Any) -> None:
    """The first terminal write wins; later ones return the existing status."""
    t = ExecutionTracker(db_url, strict=True, durability=durability)
    h = t.start("skill")
    assert t.finish_error(h, code="rate_limited", message="slow down", retryable=True)
    later = t.finish_success(h)
    assert later == FinishResult(False, RunStatus.ERROR)
    assert not later
    assert h.finish_with_status("canceled") == FinishResult(False, RunStatus.ERROR)
    run = t.get_run(h.id)
    assert (run.status, run.error_code, run.error_message, run.retryable) == (
        RunStatus.ERROR,
        "rate_limited",
        "slow down",
        True,
    )
    t.close()


def test_finish_error_from_exception_and_overrides(sync_tracker: ExecutionTracker) -> None:
    """finish_error classifies an exception; an explicit code or retryable wins."""
    t = sync_tracker
    a, b, c = t.start("skill", "a"), t.start("skill", "b"), t.start("skill", "c")
    t.finish_error(a, PermissionError("denied"))
    t.finish_error(b, ConnectionError("down"), code="UpstreamDown", retryable=False)
    t.finish_error(c, TimeoutError())
    runs = {r.source_ref: r for r in t.list_runs().runs}
    assert (runs["a"].error_code, runs["a"].error_message, runs["a"].retryable) == (
        "permission_denied",
        "denied",
        False,
    )
    assert (runs["b"].error_code, runs["b"].retryable) == ("upstream_down", False)
    assert (runs["c"].status, runs["c"].error_message) == (RunStatus.TIMEOUT, "TimeoutError")


def test_finish_with_status_rules(sync_tracker: ExecutionTracker) -> None:
    """Only terminal statuses finish a run; unknown statuses are errors, not coerced."""
    t = sync_tracker
    h = t.start("skill")
    with pytest.raises(InvalidArgumentError, match="terminal status"):
        t.finish_with_status(h, "running")
    with pytest.raises(InvalidArgumentError, match="unknown run status 'done'"):
        t.finish_with_status(h, "done")
    with pytest.raises(InvalidArgumentError, match="needs an exception or a code"):
        t.finish_error(h)
    assert t.finish_with_status(h, "canceled", error_code="user_stopped").applied
    assert t.get_run(h.id).error_code == "user_stopped"


def test_queued_run_lifecycle(sync_tracker: ExecutionTracker) -> None:
    """A queued run cannot succeed before it runs; it can be canceled or started."""
    t = sync_tracker
    waiting = t.start("heartbeat", "digest", queued=True)
    assert t.get_run(waiting.id).status is RunStatus.QUEUED
    assert waiting.finish_success() == FinishResult(False, RunStatus.QUEUED)
    assert waiting.mark_running() == FinishResult(True, RunStatus.RUNNING)
    assert waiting.mark_running() == FinishResult(False, RunStatus.RUNNING)
    assert waiting.finish_success().applied
    dropped = t.start("heartbeat", "skipped", queued=True)
    assert dropped.finish_with_status("canceled", error_code="superseded").applied
    runs = {r.source_ref: r.status for r in t.list_runs().runs}
    assert runs == {"digest": RunStatus.SUCCESS, "skipped": RunStatus.CANCELED}


def test_finish_by_id_from_another_tracker(db_url: str) -> None:
    """A run started by one process can be finished by id from another: the guarded
    write applies once, metadata merges over the stored start metadata."""
    a = ExecutionTracker(db_url, strict=True)
    b = ExecutionTracker(db_url, strict=True)
    h = a.start("skill", "job", metadata={"queued_by": "api"})
    a.flush()
    assert b.finish_success(h.id, metadata={"worker": "w1"}) == FinishResult(
        True, RunStatus.SUCCESS
    )
    assert b.finish_error(h.id, code="late", message="x") == FinishResult(False, RunStatus.SUCCESS)
    assert b.finish_success("no-such-run") == FinishResult(False, None)
    run = b.get_run(h.id)
    assert dict(run.metadata) == {"queued_by": "api", "worker": "w1"}
    assert run.duration_ms is not None and run.duration_ms >= 0
    # the starting process learns nothing locally, but the store already settled it
    a.finish_error(h, code="too_late", message="after the fact")
    assert a.get_run(h.id).status is RunStatus.SUCCESS
    assert a.stats().not_applied == 1
    a.close()
    b.close()


def test_duration_comes_from_the_monotonic_clock(db_url: str) -> None:
    """duration_ms is measured on the monotonic clock, not wall-time subtraction."""

    class SkewedClock(FakeClock):
        def now_us(self) -> int:  # wall clock jumps back one hour mid-run
            return super().now_us() - (3_600_000_000 if self.monotonic_ns() > 0 else 0)

    clock = SkewedClock(T0)
    t = ExecutionTracker(db_url, strict=True, clock=clock, durability="sync")
    h = t.start("skill")
    clock.advance(1.5)
    h.finish_success()
    run = t.get_run(h.id)
    assert run.duration_ms == pytest.approx(1500.0)
    assert run.started_at == T0
    assert run.finished_at == T0 + timedelta(seconds=1.5) - timedelta(hours=1)
    t.close()


def test_deadline_forms(sync_tracker: ExecutionTracker) -> None:
    """A deadline may be seconds, a timedelta or an aware datetime; others are errors."""
    t = sync_tracker
    at = datetime(2030, 1, 1, tzinfo=UTC)
    a = t.start("skill", "secs", deadline=30)
    b = t.start("skill", "delta", deadline=timedelta(minutes=1))
    c = t.start("skill", "at", deadline=at)
    runs = {r.source_ref: r for r in t.list_runs().runs}
    assert runs["secs"].deadline_at == a.started_at + timedelta(seconds=30)
    assert runs["delta"].deadline_at == b.started_at + timedelta(minutes=1)
    assert runs["at"].deadline_at == at
    assert c.deadline_at_us is not None
    with pytest.raises(InvalidArgumentError, match="deadline"):
        t.start("skill", deadline=-1)
    with pytest.raises(InvalidArgumentError, match="naive"):
        t.start("skill", deadline=datetime(2030, 1, 1))


def test_racing_finishers_one_applied_finish_per_run(db_url: str) -> None:
    """8 threads finishing the same 200 runs (by id, through the store's guard) give
    exactly one applied finish per run, and the stored status is the winner's."""
    starter = ExecutionTracker(db_url, strict=True, durability="sync")
    ids = [starter.start("skill", f"r{i}").id for i in range(200)]
    racers = [ExecutionTracker(db_url, strict=True, durability="sync") for _ in range(8)]
    statuses = [RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.CANCELED, RunStatus.TIMEOUT]
    wins: list[list[tuple[str, RunStatus]]] = [[] for _ in racers]
    barrier = threading.Barrier(len(racers))

    def race(k: int) -> None:
        barrier.wait()
        for run_id in ids:
            status = statuses[k % len(statuses)]
            if racers[k].finish_with_status(run_id, status, error_code=f"racer_{k}").applied:
                wins[k].append((run_id, status))

    threads = [threading.Thread(target=race, args=(k,)) for k in range(len(racers))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    applied = [w for per in wins for w in per]
    assert sorted(run_id for run_id, _ in applied) == sorted(ids)
    final = {r.id: r.status for r in starter.list_runs(limit=1000).runs}
    assert final == dict(applied)
    for t in [starter, *racers]:
        t.close()


def test_racing_finishers_on_one_handle(tracker: ExecutionTracker) -> None:
    """8 threads finishing the same handles: exactly one finish per handle applies."""
    handles = [tracker.start("skill") for _ in range(300)]
    applied = [0] * len(handles)
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def race(k: int) -> None:
        barrier.wait()
        for i, h in enumerate(handles):
            if h.finish_with_status(RunStatus.SUCCESS if k % 2 else RunStatus.ERROR).applied:
                with lock:
                    applied[i] += 1

    threads = [threading.Thread(target=race, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert applied == [1] * len(handles)
    stored = {r.id: r.status for r in tracker.list_runs(limit=1000).runs}
    assert stored == {h.id: h.status for h in handles}
    assert tracker.stats().not_applied == 0


# -- the switch ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "false", "OFF", " no ", "False", "\tOff\n"])
def test_env_switch_off_writes_nothing(
    value: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXECTRACK_ENABLED off: no rows at all, every callable kind runs unchanged, and
    queries still work."""
    monkeypatch.setenv("EXECTRACK_ENABLED", value)
    t = ExecutionTracker(db_url)
    assert not t.enabled

    @t.with_run("skill")
    def plain(x: int) -> int:
        return x + 1

    @t.with_run("skill")
    async def coro() -> str:
        return "c"

    @t.with_run("chat")
    def gen() -> Iterator[int]:
        got = yield 1
        yield got

    @t.with_run("chat")
    async def agen() -> AsyncIterator[int]:
        yield 2

    @t.with_run("skill")
    def boom() -> None:
        raise KeyError("k")

    assert plain(1) == 2
    assert asyncio.run(coro()) == "c"
    g = gen()
    assert next(g) == 1 and g.send(5) == 5

    async def drain() -> list[int]:
        return [i async for i in agen()]

    assert asyncio.run(drain()) == [2]
    with pytest.raises(KeyError):
        boom()
    with t.with_run("chat") as run:
        run.annotate(x=1)
        assert not run.recorded
    h = t.start("skill")
    assert not h.recorded
    h.finish_success()
    assert t.list_runs().runs == []
    assert t.run_stats().total == 0
    store = open_store(db_url)
    assert store.list_runs(exectrack.RunFilter(), limit=10) == []
    t.close()


def test_env_switch_default_on_and_explicit_argument_wins(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset or on means enabled; an explicit enabled= beats the environment."""
    assert ExecutionTracker(db_url).enabled
    monkeypatch.setenv("EXECTRACK_ENABLED", "1")
    assert ExecutionTracker(db_url).enabled
    assert not ExecutionTracker(db_url, enabled=False).enabled
    monkeypatch.setenv("EXECTRACK_ENABLED", "0")
    assert ExecutionTracker(db_url, enabled=True).enabled


def test_env_switch_garbage_value_keeps_tracking_on(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unreadable EXECTRACK_ENABLED is a warning (on), or an error in strict mode."""
    monkeypatch.setenv("EXECTRACK_ENABLED", "maybe")
    with pytest.raises(exectrack.ConfigError, match="EXECTRACK_ENABLED"):
        ExecutionTracker(db_url)
    monkeypatch.setenv("EXECTRACK_STRICT", "0")
    with caplog.at_level(logging.WARNING):
        assert ExecutionTracker(db_url).enabled
    assert "EXECTRACK_ENABLED" in caplog.text


# -- fail-open and strict ---------------------------------------------------------------------


def _every_kind(t: ExecutionTracker) -> dict[str, Any]:
    """Run each callable kind once under ``t``; return what each returned or raised."""
    out: dict[str, Any] = {}
    err = ValueError("from the body")

    @t.with_run("skill")
    def plain() -> int:
        return 1

    @t.with_run("skill")
    def raises() -> None:
        raise err

    @t.with_run("skill")
    async def coro() -> int:
        return 2

    @t.with_run("chat")
    def gen() -> Iterator[int]:
        yield from (3, 4)

    @t.with_run("chat")
    async def agen() -> AsyncIterator[int]:
        yield 5

    out["plain"] = plain()
    try:
        raises()
    except ValueError as exc:
        out["raises"] = exc
    out["coro"] = asyncio.run(coro())
    out["gen"] = list(gen())

    async def drain() -> list[int]:
        return [i async for i in agen()]

    out["agen"] = asyncio.run(drain())
    with t.with_run("chat") as h:
        out["cm"] = h.status
    manual = t.start("skill")
    out["finish"] = manual.finish_success().applied
    return out


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_fail_open_results_and_exceptions_unchanged(
    db_url: str, durability: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With a store that raises on every call, the host sees exactly what it would see
    untracked; failures are logged once per cause and counted."""
    broken = FailingStore(open_store(db_url))
    t = ExecutionTracker(broken, strict=False, durability=durability)
    with caplog.at_level(logging.WARNING, logger="exectrack"):
        out = _every_kind(t)
        t.flush()
    assert out["plain"] == 1 and out["coro"] == 2
    assert out["gen"] == [3, 4] and out["agen"] == [5]
    assert isinstance(out["raises"], ValueError) and str(out["raises"]) == "from the body"
    assert out["cm"] is RunStatus.RUNNING
    stats = t.stats()
    assert stats.failures >= 7
    assert len(stats.failures_by_cause) == 1
    assert caplog.text.count("injected store failure") == 1
    if durability == "async":
        # 7 runs, each one queue entry (start and finish folded) or two: all lost
        assert 7 <= stats.dropped <= 14 and stats.committed == 0
    t.close()


def test_strict_mode_raises_store_failures(db_url: str) -> None:
    """Strict mode surfaces a failing store: at once when sync, at flush when async."""
    sync = ExecutionTracker(FailingStore(open_store(db_url)), strict=True, durability="sync")
    with pytest.raises(StoreError, match="injected"):
        sync.start("skill")
    queued = ExecutionTracker(FailingStore(open_store(db_url)), strict=True)
    queued.start("skill")
    with pytest.raises(StoreError, match="injected"):
        queued.flush()
    queued.close()


def test_strict_mode_from_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """EXECTRACK_STRICT=1 turns strict mode on (the suite runs with it on)."""
    assert ExecutionTracker(db_url).strict
    monkeypatch.setenv("EXECTRACK_STRICT", "0")
    assert not ExecutionTracker(db_url).strict


def test_failure_of_non_store_error_is_wrapped_in_strict_mode(db_url: str) -> None:
    """A raw driver-style error from a store reaches strict callers as StoreError."""
    store = FailingStore(open_store(db_url), error=OSError("disk full"))
    t = ExecutionTracker(store, strict=True, durability="sync")
    with pytest.raises(StoreError) as info:
        t.start("skill")
    assert isinstance(info.value.__cause__, OSError)


# -- default tracker ------------------------------------------------------------------------


def test_module_level_api_uses_default_tracker_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decorating at import time opens nothing; the first call opens the database
    named by EXECTRACK_DATABASE_URL."""
    path = tmp_path / "default.db"
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", f"sqlite:///{path}")

    @exectrack.with_run("skill", "lazy")
    def skill() -> str:
        exectrack.annotate(step="inside")
        return "ok"

    assert not path.exists()
    assert skill() == "ok"
    h = exectrack.start("heartbeat", "tick")
    exectrack.finish_error(h, code="missed", message="late")
    assert exectrack.flush()
    t = exectrack.get_tracker()
    assert t.store.url.endswith("default.db")
    runs = {r.source_ref: r for r in t.list_runs().runs}
    assert dict(runs["lazy"].metadata) == {"step": "inside"}
    assert runs["tick"].error_code == "missed"


def test_default_database_lives_in_user_data_dir(tmp_path: Path) -> None:
    """Without a URL, the default tracker writes to the user's data directory."""
    exectrack.with_run("skill", "x")(lambda: None)()
    exectrack.flush()
    assert (tmp_path / "xdg" / "exectrack" / "runs.db").exists()


def test_bad_database_url_runs_untracked_outside_strict(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A default tracker that cannot be built never breaks tracked code (warning once);
    strict mode raises the configuration error."""
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", "mysql://nope")
    skill = exectrack.with_run("skill")(lambda: 42)
    with pytest.raises(exectrack.ConfigError, match="unsupported database URL"):
        skill()
    exectrack.set_tracker(None)
    monkeypatch.setenv("EXECTRACK_STRICT", "0")
    with caplog.at_level(logging.WARNING, logger="exectrack"):
        assert skill() == 42
        assert skill() == 42
        assert not exectrack.start("skill").recorded
    assert caplog.text.count("tracking is off") == 1


def test_closed_tracker_drops_and_counts(db_url: str) -> None:
    """Writes after close() are dropped and counted, never raised (outside strict)."""
    t = ExecutionTracker(db_url, strict=False)
    t.close()
    h = t.start("skill")
    assert not h.recorded
    assert t.close()
