"""Store behaviour at the engines' limits, on every engine: big batches, and a reap
preview where several rules match one run."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from exectrack._model import RunStatus
from exectrack.stores import FinishRun, MarkRunning, NewRun
from exectrack.stores.sqlite import SQLiteStore
from forking import fork_and_run, held_by_a_thread, wait_child

from .conftest import Target
from .test_contract import T0, everything

S = 1_000_000  # one second in microseconds
TERMINAL = [RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.CANCELED, RunStatus.TIMEOUT]


def _finish(i: int) -> FinishRun:
    status = TERMINAL[i % len(TERMINAL)]
    code = None if status is RunStatus.SUCCESS else f"code_{i}"
    return FinishRun(f"r{i:04d}", status, T0 + S + i, error_code=code)


def test_one_batch_finishes_more_than_500_runs(target: Target) -> None:
    """One apply finishes 600 distinct open runs, each with its own status and code
    (SQLite refuses more than 500 SELECTs in one compound statement)."""
    store = target.store
    n = 600
    store.apply([NewRun(f"r{i:04d}", "skill", T0 + i) for i in range(n)])
    result = store.apply([_finish(i) for i in range(n)])
    assert (result.finished, result.not_applied) == (n, 0)
    runs = {r.id: r for r in everything(store)}
    for i in range(n):
        want = _finish(i)
        got = runs[want.id]
        assert (got.status, got.error_code) == (want.status, want.error_code), want.id


def test_a_finish_without_a_duration_measures_one_never_below_zero(target: Target) -> None:
    """A finish with no duration of its own (a run finished by id, from another
    process) is timed from the stored start; a finishing host whose clock is behind
    the starting one's records 0 ms, not a negative duration. Alone and in a batch."""
    store = target.store
    ids = ["one-late", "one-skewed", "batch-late", "batch-skewed"]
    store.apply([NewRun(run_id, "skill", T0) for run_id in ids])
    store.finish(FinishRun("one-late", RunStatus.SUCCESS, T0 + 2 * S))
    store.finish(FinishRun("one-skewed", RunStatus.SUCCESS, T0 - 5 * S))
    store.apply(
        [
            FinishRun("batch-late", RunStatus.ERROR, T0 + 3 * S),
            FinishRun("batch-skewed", RunStatus.ERROR, T0 - 7 * S),
        ]
    )
    durations = {r.id: r.duration_ms for r in everything(store)}
    assert durations == {
        "one-late": 2000.0,
        "one-skewed": 0.0,
        "batch-late": 3000.0,
        "batch-skewed": 0.0,
    }


@pytest.mark.parametrize("where", [":memory:", "runs.db"])
def test_batches_fit_the_oldest_sqlite_parameter_limit(tmp_path: Path, where: str) -> None:
    """Batched INSERTs and UPDATEs bind at most 999 parameters per statement, the
    limit of SQLite builds before 3.32."""
    store = SQLiteStore(where if where == ":memory:" else tmp_path / where)
    store._ensure_ready()
    store._conn().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # this thread's
    n = 240
    created = store.apply([NewRun(f"r{i:04d}", "skill", T0 + i) for i in range(n)])
    finished = store.apply([_finish(i) for i in range(n)])
    both = store.apply(
        [NewRun("x", "skill", T0), FinishRun("x", RunStatus.SUCCESS, T0 + S)]
        + [NewRun(f"y{i:04d}", "chat", T0 + i) for i in range(n)]
    )
    assert (created.created, finished.finished, both.created, both.finished) == (n, n, n + 1, 1)
    store.close()


def test_reap_preview_lists_each_run_once(target: Target) -> None:
    """A run that several reaper rules match appears once in a dry run, under the
    first rule (dead owner, then deadline, then lease), as the real reap finishes it."""
    store = target.store
    store.apply(
        [
            NewRun("all3", "skill", T0, owner="h:9:dead", deadline_at=T0 + S, lease_until=T0 + S),
            NewRun("two", "skill", T0, owner="h:1:a", deadline_at=T0 + S, lease_until=T0 + S),
            NewRun("lease", "skill", T0, owner="h:1:a", lease_until=T0 + S),
        ]
    )
    now = T0 + 5 * S
    preview = store.reap(now, dead_owners=["h:9:dead"], dry_run=True)
    assert sorted((r.run_id, r.reason, r.status) for r in preview) == [
        ("all3", "dead_owner", RunStatus.ERROR),
        ("lease", "lease_expired", RunStatus.ERROR),
        ("two", "deadline", RunStatus.TIMEOUT),
    ]
    done = store.reap(now, dead_owners=["h:9:dead"])
    assert sorted((r.run_id, r.reason) for r in done) == sorted(
        (r.run_id, r.reason) for r in preview
    )


def test_a_run_created_started_and_finished_in_one_batch_is_one_row_write() -> None:
    """A start and a finish whose run is created earlier in the same batch are folded
    into its INSERT: each run of the batch costs SQLite one row change, not three."""
    store = SQLiteStore(":memory:")
    store._ensure_ready()
    conn = store._conn()
    before = conn.total_changes
    result = store.apply(
        [
            NewRun("a", "skill", T0, RunStatus.QUEUED),
            MarkRunning("a", T0 + S),
            FinishRun("a", RunStatus.SUCCESS, T0 + 3 * S),
            NewRun("b", "chat", T0),
            FinishRun("b", RunStatus.ERROR, T0 + S, error_code="boom"),
        ]
    )
    assert conn.total_changes - before == 2
    assert (result.created, result.started, result.finished, result.not_applied) == (2, 1, 2, 0)
    a, b = store.get("a"), store.get("b")
    assert a is not None and (a.status, a.duration_ms) == (RunStatus.SUCCESS, 3000.0)
    assert b is not None and (b.status, b.error_code) == (RunStatus.ERROR, "boom")
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_migrates_while_a_parent_thread_held_the_lock(tmp_path: Path) -> None:
    """fork() while another thread of the parent is migrating (holds the store's
    first-use lock): the child's first write gets a lock of its own, never waits."""
    store = SQLiteStore(tmp_path / "runs.db")
    with held_by_a_thread(store._ready_lock):
        pid = fork_and_run(lambda: 0 if store.create(NewRun("child", "skill", T0)) else 2, 20)
    assert wait_child(pid) == 0, "the child waited on the lock its parent's thread held"
    run = store.get("child")
    assert run is not None and run.status is RunStatus.RUNNING
    store.close()
