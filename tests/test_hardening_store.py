"""A SQLite database file deleted or replaced while a tracker uses it: noticed before the
next transaction, reopened, said once; later runs land in the file now at the path."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exectrack import ExecutionTracker, RunFilter
from exectrack._model import new_run_id, now_us
from exectrack.errors import StoreError, StoreUnavailableError
from exectrack.stores import NewRun, open_store
from exectrack.stores.sqlite import SQLiteStore

LOGGER = "exectrack.stores.sqlite"


def track(tracker: ExecutionTracker, n: int, source: str = "chat") -> None:
    for _ in range(n):
        with tracker.with_run(source):
            pass


def remove_database(path: Path, *, with_wal: bool) -> None:
    """What a user's ``rm runs.db`` (or ``rm runs.db*``) does."""
    os.remove(path)
    if with_wal:
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def reopened_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and "deleted or replaced" in r.getMessage()
    ]


def new_run() -> NewRun:
    return NewRun(new_run_id(), "chat", now_us())


@pytest.mark.parametrize("with_wal", [False, True], ids=["db-only", "db-wal-shm"])
def test_runs_after_the_file_is_deleted_land_in_a_new_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, with_wal: bool
) -> None:
    """The background writer's batch after a delete goes to a new file with the schema;
    nothing is dropped, the tracker reads its own runs, and it is logged once."""
    path = tmp_path / "runs.db"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with ExecutionTracker(f"sqlite:///{path}", strict=True) as t:
        track(t, 2)
        assert t.flush()
        remove_database(path, with_wal=with_wal)
        track(t, 5)
        assert t.flush()
        track(t, 3)  # a second batch: no second reopen
        assert t.flush()
        assert len(t.list_runs(limit=100).runs) == 8
        stats = t.stats()
    assert (stats.dropped, stats.failures) == (0, 0)
    assert path.exists()
    assert len(open_store(f"sqlite:///{path}").list_runs(RunFilter(), limit=100)) == 8
    assert len(reopened_warnings(caplog)) == 1


def test_a_sync_tracker_counts_the_reopen_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In sync mode the first write after a delete fails once (counted, logged), every
    later one lands in the new file."""
    path = tmp_path / "runs.db"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with ExecutionTracker(f"sqlite:///{path}", strict=False, durability="sync") as t:
        track(t, 1)
        os.remove(path)
        track(t, 4)
        stats = t.stats()
        runs = t.list_runs(limit=100).runs
    assert stats.failures == 1
    [cause] = stats.failures_by_cause
    assert "deleted or replaced" in cause
    assert len(runs) == 3  # the run whose start failed left no row; its finish did nothing
    assert all(r.status == "success" for r in runs)
    assert len(reopened_warnings(caplog)) == 1


def test_runs_after_the_file_is_replaced_land_in_the_replacement(tmp_path: Path) -> None:
    """A file renamed over the path (a restored backup) is used from the next write on."""
    path = tmp_path / "runs.db"
    backup = tmp_path / "backup.db"
    with ExecutionTracker(f"sqlite:///{backup}", strict=True) as other:
        track(other, 2, source="skill")
    with ExecutionTracker(f"sqlite:///{path}", strict=True) as t:
        track(t, 3)
        assert t.flush()
        remove_database(path, with_wal=True)  # SQLite pairs a -wal with whatever file
        os.replace(backup, path)  # has the name: the old one goes with its database
        track(t, 4, source="heartbeat")
        assert t.flush()
        sources = sorted(r.source for r in t.list_runs(limit=100).runs)
    assert sources == ["heartbeat"] * 4 + ["skill"] * 2


def test_reads_notice_a_deleted_file(tmp_path: Path) -> None:
    """A read after a delete says so (retryable) instead of "no such table", and the next
    one reads the new, empty database."""
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    store.create(new_run())
    os.remove(path)
    with pytest.raises(StoreUnavailableError, match="deleted or replaced; reopened"):
        store.list_runs(RunFilter(), limit=10)
    assert store.list_runs(RunFilter(), limit=10) == []
    store.close()


def test_a_stale_connection_of_another_thread_is_replaced_on_next_use(tmp_path: Path) -> None:
    """A thread whose connection predates a reopen done by another thread reads the new
    file next time, without an error: the generation tells it its connection is stale."""
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    store.create(new_run())
    assert len(store.list_runs(RunFilter(), limit=10)) == 1  # this thread's connection
    errors: list[BaseException] = []

    def delete_then_write() -> None:
        os.remove(path)
        try:
            store.create(new_run())
        except StoreUnavailableError as exc:
            errors.append(exc)
        store.create(new_run())
        store.create(new_run())

    other = threading.Thread(target=delete_then_write)
    other.start()
    other.join()
    assert len(errors) == 1
    assert len(store.list_runs(RunFilter(), limit=10)) == 2
    store.close()


def test_a_reopen_waits_for_a_read_in_flight_in_another_thread(tmp_path: Path) -> None:
    """A reopen never closes a connection another thread is reading from (that can crash
    the interpreter): the read finishes on the old file, the writer gets the retryable
    error, whichever reaches the store first."""
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    for _ in range(3):
        store.create(new_run())
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.create(new_run())
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    with store._read() as cur:
        cur.execute("SELECT id FROM runs")
        first = cur.fetchone()
        os.remove(path)
        writer.start()
        rest = cur.fetchall()
    writer.join()
    assert first is not None and len(rest) == 2
    assert [type(e) for e in errors] == [StoreUnavailableError]
    assert store.list_runs(RunFilter(), limit=10) == []
    store.close()


def test_racing_threads_through_repeated_deletes_see_only_store_errors(tmp_path: Path) -> None:
    """Readers and writers racing several deletes get results or StoreError subclasses
    (retryable ones while a reopen is under way), never a raw sqlite3 error."""
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    store.migrate()
    stop = threading.Event()
    unexpected: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                store.list_runs(RunFilter(), limit=5)
                store.count_runs(RunFilter())
            except StoreUnavailableError:
                pass
            except BaseException as exc:  # a raw sqlite3 error, or a non-retryable one
                unexpected.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(20):
            path.unlink(missing_ok=True)
            for _attempt in range(50):
                try:
                    store.create(new_run())
                    break
                except StoreUnavailableError:
                    continue
            else:
                pytest.fail("the store never recovered from a delete")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not unexpected, unexpected
    store.close()


def test_the_new_file_is_sound_for_other_connections(tmp_path: Path) -> None:
    """After a reopen the new file keeps its own -wal (the old file's connections were
    closed before it was opened), and a separate connection reads every new run."""
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    for _ in range(2):
        store.create(new_run())
    os.remove(path)
    with pytest.raises(StoreUnavailableError):
        store.create(new_run())
    for _ in range(3):
        store.create(new_run())
    assert Path(f"{path}-wal").exists()
    outside = sqlite3.connect(path)
    try:
        assert outside.execute("SELECT COUNT(*) FROM runs").fetchone() == (3,)
        assert outside.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        outside.close()
    store.close()


def test_a_closed_store_is_not_reopened(tmp_path: Path) -> None:
    """close() then a deleted file: the store stays closed (no new file appears)."""
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    store.create(new_run())
    store.close()
    os.remove(path)
    with pytest.raises(StoreError, match="closed"):
        store.create(new_run())
    assert not path.exists()


_CLOSE_RACE = """
import sys, tempfile, threading, time
from exectrack import RunFilter
from exectrack.errors import StoreError
from exectrack.stores import NewRun
from exectrack.stores.sqlite import SQLiteStore

folder = tempfile.mkdtemp()
T = 1_790_000_000_000_000
for k in range(int(sys.argv[1])):
    store = SQLiteStore(f"{folder}/r{k}.db")
    store.migrate()
    stop = threading.Event()

    def work(n):
        i = 0
        while not stop.is_set():
            try:
                store.apply([NewRun(f"{n}-{i}-{j}", "chat", T + i) for j in range(50)])
                store.list_runs(RunFilter(), limit=20)
            except StoreError:
                pass
            i += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    store.close()
    time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
print("survived")
"""


def test_closing_a_store_while_threads_write_and_read_never_crashes(tmp_path: Path) -> None:
    """close() while three threads write batches and read pages: every later call is
    a StoreError, and the interpreter survives (closing a connection under a running
    statement segfaulted it, in the first of 50 rounds). In a child process, so a
    crash fails this test instead of the test run."""
    script = tmp_path / "close_race.py"
    script.write_text(_CLOSE_RACE)
    proc = subprocess.run(
        [sys.executable, str(script), "40"],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "survived"


def test_close_leaves_a_connection_in_use_open_past_its_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read still going when close() has waited its time: close returns, says so,
    and leaves that connection to its thread, which finishes its statement; every
    call after close is a StoreError."""
    import exectrack.stores.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "CLOSE_WAIT", 0.1)
    store = SQLiteStore(tmp_path / "runs.db")
    store.create(new_run())
    inside, release = threading.Event(), threading.Event()
    counted: list[int] = []

    def read() -> None:
        with store._read() as cur:
            inside.set()
            assert release.wait(30)
            cur.execute("SELECT COUNT(*) FROM runs")
            counted.append(cur.fetchone()[0])

    reader = threading.Thread(target=read)
    reader.start()
    assert inside.wait(30)
    with caplog.at_level(logging.WARNING, logger="exectrack.stores.sqlite"):
        store.close()
    assert any("still running" in r.getMessage() for r in caplog.records)
    release.set()
    reader.join(30)
    assert not reader.is_alive()
    assert counted == [1]
    with pytest.raises(StoreError, match="closed"):
        store.list_runs(RunFilter(), limit=1)
