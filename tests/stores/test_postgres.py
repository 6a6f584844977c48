"""What only the PostgreSQL store has: URLs and the driver, schemas, the advisory-locked
migration across processes, reconnecting after lost connections, fork safety, and
the multi-process concurrency and fault runs of the write path."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from typing import Any

import psycopg
import pytest

from exectrack import ExecutionTracker, RunFilter, RunStatus
from exectrack._model import now_us
from exectrack.errors import ConfigError, StoreUnavailableError
from exectrack.stores import ApplyResult, FinishResult, FinishRun, NewRun, _pgconn, open_store
from exectrack.stores.postgres import INSTALL_HINT, MIGRATIONS, PostgresStore
from forking import arm_child_watchdog, fork_and_run, held_by_a_thread, wait_child

from .conftest import PostgresServer, with_options

pytestmark = pytest.mark.postgres

SECRET = "s3cret-pw"
T0 = 1_764_000_000_000_000


def new(run_id: str, at_us: int = T0, **fields: Any) -> NewRun:
    return NewRun(run_id, fields.pop("source", "chat"), at_us, **fields)


# -- URLs, options and the driver (no server needed) ---------------------------------------


def test_open_store_dispatches_both_schemes_without_connecting() -> None:
    """postgresql:// and postgres:// URLs open a PostgresStore; nothing connects yet."""
    for url in ("postgresql://app@127.0.0.1:1/db", "POSTGRES://app@127.0.0.1:1/db?schema=s1"):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        assert store._pool_obj is None
        store.close()


def test_password_never_appears_in_url_repr_or_errors() -> None:
    """A URL password is masked in url, repr and connection errors, which still say why."""
    for url in (
        f"postgresql://app:{SECRET}@127.0.0.1:1/db?pool_timeout=0.3",
        f"postgresql://app@127.0.0.1:1/db?password={SECRET}&pool_timeout=0.3",
    ):
        store = PostgresStore(url)
        assert SECRET not in store.url and SECRET not in repr(store)
        with pytest.raises(StoreUnavailableError) as info:
            store.get("x")
        assert SECRET not in str(info.value)
        assert "refused" in str(info.value).lower()
        store.close()


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ('schema=bad"name', "schema="),
        ("schema=1abc", "schema="),
        ("pool_max_size=zero", "not an integer"),
        ("pool_min_size=0", "must be >= 1"),
        ("pool_min_size=5&pool_max_size=2", "pool_max_size < pool_min_size"),
        ("pool_timeout=-1", "must be > 0"),
    ],
)
def test_bad_options_are_config_errors_without_the_password(option: str, needle: str) -> None:
    """Unusable exectrack options fail at open with a ConfigError that masks the password."""
    with pytest.raises(ConfigError, match=needle) as info:
        open_store(f"postgresql://app:{SECRET}@127.0.0.1:1/db?{option}")
    assert SECRET not in str(info.value)


def test_missing_driver_names_the_extra_to_install() -> None:
    """Without psycopg, a PostgreSQL URL raises DriverMissingError naming the extra."""
    # Importing exectrack itself never needs the driver.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg"] = None  # as if not installed
        import exectrack
        from exectrack.errors import DriverMissingError
        assert "psycopg" not in [m for m in sys.modules if sys.modules[m] is not None]
        try:
            exectrack.open_store("postgresql://app@127.0.0.1/db")
        except DriverMissingError as exc:
            assert isinstance(exc, ImportError)
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert INSTALL_HINT in out.stdout
    assert "pip install 'exectrack[postgres]'" in out.stdout


# -- schema and migrations --------------------------------------------------------------------


def test_schema_option_keeps_tables_in_that_schema(pg: PostgresServer) -> None:
    """?schema=name creates that schema on first use and keeps its runs apart from others."""
    (one, url_one), (two, url_two) = pg.new_schema(), pg.new_schema()
    a, b = PostgresStore(url_one), PostgresStore(url_two)
    try:
        a.create(new("in-one"))
        b.create(new("in-two"))
        assert [r.id for r in a.list_runs(RunFilter(), limit=10)] == ["in-one"]
        assert [r.id for r in b.list_runs(RunFilter(), limit=10)] == ["in-two"]
        for schema in (one, two):
            rows = pg.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".runs',))
            assert rows == [(True,)]
        (kind,) = pg.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'runs' AND column_name = 'metadata'",
            (one,),
        )[0]
        assert kind == "jsonb"
    finally:
        a.close()
        b.close()


def _migrate_in_process(url: str, barrier: Any, out: Any) -> None:
    store = PostgresStore(url)
    barrier.wait(30)
    try:
        out.put(store.migrate())
    except BaseException as exc:  # reported by the parent
        out.put(repr(exc))
    finally:
        store.close()


def test_processes_starting_at_once_migrate_once(pg: PostgresServer) -> None:
    """Four processes migrating a fresh schema at once: the advisory lock lets one apply it."""
    _, url = pg.new_schema()
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_migrate_in_process, args=(url, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    every = [m.version for m in MIGRATIONS]
    assert sorted(results, key=len) == [[], [], [], every]


# -- lost connections --------------------------------------------------------------------------


def test_reconnects_after_the_server_drops_its_connections(pg: PostgresServer) -> None:
    """After every pooled connection is killed, the next operations succeed without error."""
    schema, url = pg.new_schema()
    store = PostgresStore(url)
    try:
        store.create(new("before"))
        old = pg.backends(schema)
        assert pg.terminate(schema) >= 1
        deadline = time.monotonic() + 10
        while pg.backends(schema) & old:  # until the server closed them (under load, later)
            assert time.monotonic() < deadline, "the server kept the killed connections"
            time.sleep(0.005)
        assert store.create(new("after"))
        assert store.finish(FinishRun("after", RunStatus.SUCCESS, T0 + 5)).applied
        assert store.get("before") is not None
        assert not (pg.backends(schema) & old)
    finally:
        store.close()


def test_operation_on_a_connection_dying_unnoticed_is_retried_once(
    pg: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operation that meets a dead connection the checkout missed reruns once, exactly."""
    # The checkout check is switched off to open the window it normally closes: the
    # server closing a connection at the very moment it is handed out.
    schema, url = pg.new_schema()
    store = PostgresStore(url, pool_min_size=1, pool_max_size=1)
    monkeypatch.setattr(_pgconn, "has_input", lambda conn: False)

    def kill() -> None:
        old = pg.backends(schema)
        assert pg.terminate(schema) == 1
        deadline = time.monotonic() + 10
        while pg.backends(schema) & old:  # wait until the server closed it
            assert time.monotonic() < deadline
            time.sleep(0.005)

    try:
        store.create(new("a"))
        kill()
        assert store.create(new("b")) is True
        kill()
        assert store.finish(FinishRun("b", RunStatus.SUCCESS, T0 + 9)) == (
            FinishResult(True, RunStatus.SUCCESS)
        )
        kill()
        assert store.apply([new("c"), FinishRun("a", RunStatus.ERROR, T0 + 9)]) == ApplyResult(
            created=1, finished=1
        )
        kill()
        assert [r.id for r in store.list_runs(RunFilter(), limit=5)] == ["c", "b", "a"]
    finally:
        store.close()


def test_connection_lost_inside_a_transaction_is_store_unavailable(pg: PostgresServer) -> None:
    """A connection lost mid-transaction is StoreUnavailableError and nothing is kept."""
    schema, url = pg.new_schema()
    store = PostgresStore(url)
    try:
        store.migrate()

        def insert_then_lose_the_connection() -> None:
            with store._write() as cur:
                cur.execute(store._insert_sql, store._insert_params(new("lost")))
                assert pg.terminate(schema) >= 1
                cur.execute("SELECT 1")

        with pytest.raises(StoreUnavailableError):
            insert_then_lose_the_connection()
        assert store.get("lost") is None
        assert store.create(new("next"))
    finally:
        store.close()


# -- fork ------------------------------------------------------------------------------------------


def test_a_forked_child_logs_the_pools_messages_while_a_parent_thread_was_logging(
    pg: PostgresServer,
) -> None:
    """The filter that lets each of the pool's messages through once takes a lock; a
    pool thread of the parent may hold it at fork() (it logs each failed reconnect),
    and a lock held at fork stays held forever in the child: the child gets its own,
    or its own pool's first message would hang it."""
    _, url = pg.new_schema()
    store = PostgresStore(url)
    store.create(new("parent"))  # the pool, and its log filter, exist
    assert _pgconn._FILTER is not None

    def child() -> int:
        pool_log = logging.getLogger("psycopg.pool")
        pool_log.warning("error connecting in %r: refused", "exectrack")
        return 0

    with held_by_a_thread(_pgconn._FILTER._lock):
        pid = fork_and_run(child, limit=20)
    assert wait_child(pid) == 0
    store.close()


def test_forked_child_never_touches_the_parents_connections(pg: PostgresServer) -> None:
    """A forked child uses its own connections; the parent's survive the child entirely."""
    schema, url = pg.new_schema()
    store = PostgresStore(url)
    tracker = ExecutionTracker(store, strict=True)
    try:
        store.create(new("parent-before"))
        parents = pg.backends(schema)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child process
            arm_child_watchdog()
            code = 1
            try:
                gc.collect()  # the parent's pool, dropped at fork, is collected here
                with tracker.with_run("chat", "child"):
                    pass
                tracker.flush()
                store.create(new("child-direct"))
                gc.collect()
                code = 0
            finally:
                os._exit(code)
        assert wait_child(pid) == 0
        assert parents <= pg.backends(schema)  # nothing of the parent's was closed
        with store._read() as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] in parents
        store.create(new("parent-after"))
        refs = {r.source_ref or r.id for r in store.list_runs(RunFilter(), limit=10)}
        assert refs == {"parent-before", "child", "child-direct", "parent-after"}
    finally:
        tracker.close()
        store.close()


# -- many processes, racing finishes ------------------------------------------------------------

PROCESSES = 4
THREADS = 4
RUNS_PER_THREAD = 5_000
WINDOW = 64  # runs each thread keeps open, so finishes race with creates and racers


def _tracking_process(url: str, index: int, barrier: Any, out: Any) -> None:
    """Track runs from THREADS threads; race their finishes from three sides."""
    # Sixteen producer threads in a tight loop on two cores outrun any database, and
    # under sustained overload the writer drops by design (tests/test_writer.py). This
    # test is about racing finishes, so the queue holds the whole burst: a dropped
    # command can never pass for a lost run. Everything else is the default path.
    tracker = ExecutionTracker(url, strict=False, queue_size=2 * THREADS * RUNS_PER_THREAD)
    racer_store = open_store(url)
    ref = f"p{index}"
    counts = {"tracker_true": 0, "by_id_true": 0, "racer": 0, "direct": 0, "double": 0}
    lock = threading.Lock()
    errors: list[str] = []
    by_id: queue.SimpleQueue[str] = queue.SimpleQueue()
    done = threading.Event()

    def add(name: str, n: int = 1) -> None:
        with lock:
            counts[name] += n

    def worker(k: int) -> None:
        try:
            open_runs: deque[Any] = deque()
            for i in range(RUNS_PER_THREAD):
                h = tracker.start("chat", ref, session_id=f"{ref}-t{k}")
                open_runs.append(h)
                if i % 4 == 0:
                    by_id.put(h.id)
                if len(open_runs) >= WINDOW or i == RUNS_PER_THREAD - 1:
                    while open_runs:
                        old = open_runs.popleft()
                        if old.finish_success().applied:
                            add("tracker_true")
                        if i % 16 == 0:  # a duplicate straight to the store
                            result = racer_store.finish(
                                FinishRun(old.id, RunStatus.TIMEOUT, now_us(), error_code=ref)
                            )
                            add("direct", result.applied)
                        if len(open_runs) < WINDOW // 2 and i != RUNS_PER_THREAD - 1:
                            break
        except BaseException as exc:
            errors.append(f"worker {k}: {exc!r}")

    def finisher_by_id() -> None:
        """Finishes by id through the tracker, racing the handle's own finish."""
        try:
            while not (done.is_set() and by_id.empty()):
                try:
                    run_id = by_id.get(timeout=0.05)
                except queue.Empty:
                    continue
                if tracker.finish_with_status(run_id, "canceled", error_code="by_id").applied:
                    add("by_id_true")
        except BaseException as exc:
            errors.append(f"by-id: {exc!r}")

    def racer() -> None:
        """Finishes open runs of every process straight in the database."""
        try:
            while not done.is_set():
                for run in racer_store.list_runs(
                    RunFilter(statuses=(RunStatus.RUNNING,)), limit=20
                ):
                    result = racer_store.finish(
                        FinishRun(run.id, RunStatus.ERROR, now_us(), error_code=f"racer_{ref}")
                    )
                    add("racer", result.applied)
        except BaseException as exc:
            errors.append(f"racer: {exc!r}")

    helpers = [threading.Thread(target=finisher_by_id), threading.Thread(target=racer)]
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    barrier.wait(60)
    started = time.perf_counter()
    for t in helpers + workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    for t in helpers:
        t.join()
    flushed = tracker.flush(120)
    elapsed = time.perf_counter() - started
    stats = tracker.stats()
    tracker.close()
    racer_store.close()
    out.put(
        {
            "index": index,
            "counts": counts,
            "errors": errors,
            "flushed": flushed,
            "not_applied": stats.not_applied,
            "dropped": stats.dropped,
            "failures": stats.failures,
            "causes": stats.failures_by_cause,
            "committed": stats.committed,
            "elapsed": elapsed,
        }
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_processes_and_threads_racing_finishes_lose_and_double_nothing(
    pg: PostgresServer,
) -> None:
    """4 processes x 4 threads x 5,000 runs with racing finishes: none lost, none doubled."""
    # Through the default async tracker, while by-id finishes, direct store finishes and
    # cross-process racers hit the same runs: every run is present and terminal, the
    # applied finishes reported by all finishers add up to exactly one per run (and match
    # the stored statuses), and no error reaches a caller.
    _, url = pg.new_schema()
    PostgresStore(url).migrate()  # so the processes race on runs, not on the schema
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_tracking_process, args=(url, k, barrier, out)) for k in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=540) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for r in reports:
        assert r["errors"] == [] and r["flushed"], r
        assert (r["dropped"], r["failures"]) == (0, 0), r

    total = PROCESSES * THREADS * RUNS_PER_THREAD
    store = PostgresStore(url)
    try:
        counts = store.count_runs(RunFilter())
        assert sum(counts.values()) == total
        assert not any(status in (RunStatus.RUNNING, RunStatus.QUEUED) for _, status in counts)
        for k in range(PROCESSES):
            assert sum(store.count_runs(RunFilter(source_ref=f"p{k}")).values()) == (
                THREADS * RUNS_PER_THREAD
            )
        # Finishes submitted to a writer that the guard refused come back as not_applied.
        via_writer = sum(
            r["counts"]["tracker_true"] + r["counts"]["by_id_true"] - r["not_applied"]
            for r in reports
        )
        racers = sum(r["counts"]["racer"] for r in reports)
        direct = sum(r["counts"]["direct"] for r in reports)
        assert via_writer + racers + direct == total
        assert (
            counts.get(("chat", RunStatus.SUCCESS), 0) + counts.get(("chat", RunStatus.CANCELED), 0)
            == via_writer
        )
        assert counts.get(("chat", RunStatus.ERROR), 0) == racers
        assert counts.get(("chat", RunStatus.TIMEOUT), 0) == direct
        print(
            f"\n{total} runs in {max(r['elapsed'] for r in reports):.1f}s; applied finishes: "
            f"writer {via_writer}, cross-process racers {racers}, direct {direct}; "
            f"refused at the guard {sum(r['not_applied'] for r in reports)}"
        )
    finally:
        store.close()


# -- fault: connections killed under a tracked workload -------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("durability", ["async", "sync"])
def test_tracked_calls_survive_killed_connections(pg: PostgresServer, durability: str) -> None:
    """Killed store connections change no call's result; runs outside the fault all land."""
    # Runs started before the first kill or after the last one are all stored finished.
    schema, url = pg.new_schema()
    url = with_options(url, pool_max_size="6")
    tracker = ExecutionTracker(url, strict=False, durability=durability)  # type: ignore[arg-type]
    n_threads = 4
    phase = "before"
    done: dict[str, list[int]] = {p: [0] * n_threads for p in ("before", "during", "after")}
    started: dict[str, list[str]] = {p: [] for p in done}
    cond = threading.Condition()
    stop = threading.Event()
    wrong: list[str] = []

    def work(k: int) -> None:
        # The tracked call does real I/O: a query on its own connection (which the
        # fault does not touch), as an agent's call waits on a model or a tool.
        own = psycopg.connect(pg.url, autocommit=True)
        i = 0
        while not stop.is_set():
            current = phase
            try:
                with tracker.with_run("skill", current) as run:
                    started[current].append(run.id)
                    value = own.execute("SELECT %s::int * 3", (i,)).fetchone()
                if value != (i * 3,):  # pragma: no cover - the body's own result
                    wrong.append(f"{k}:{i}: {value}")
            except BaseException as exc:
                wrong.append(f"raised {exc!r}")
                break
            i += 1
            with cond:
                done[current][k] += 1
                cond.notify_all()
        own.close()

    def wait_each(name: str, calls: int) -> None:
        """Until every thread finished ``calls`` runs in phase ``name``."""
        with cond:
            ok = cond.wait_for(lambda: min(done[name]) >= calls or bool(wrong), timeout=60)
        assert ok and not wrong

    def reconnected(old: set[int]) -> None:
        """Until the store holds a server connection opened after ``old`` ones died."""
        deadline = time.monotonic() + 30
        while not pg.backends(schema) - old:
            assert time.monotonic() < deadline, "the store did not reconnect"
            stop.wait(0.005)  # polling the server's view, not waiting for time to pass

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    killed = 0
    try:
        wait_each("before", 50)
        phase = "during"
        wait_each("during", 1)  # no "before" run is still in flight
        assert tracker.flush(30)
        for n in range(1, 4):
            # The pids the kill hit, not a list read before it: a connection opened
            # between the two would be killed too yet look like a reconnection.
            hit = pg.kill_some(schema)
            killed += len(hit)
            wait_each("during", 75 * n)
            reconnected(hit)
        phase = "after"
        wait_each("after", 150)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a tracking thread is stuck"
    assert wrong == []
    assert killed >= 3
    assert tracker.flush(30)
    stats = tracker.stats()
    store = tracker.store
    for name in ("before", "after"):
        for run_id in started[name]:
            run = store.get(run_id)
            assert run is not None and run.status is RunStatus.SUCCESS, (name, run_id, stats)
    landed = sum(store.get(run_id) is not None for run_id in started["during"])
    print(
        f"\n{durability}: killed {killed} connections; runs during the fault recorded "
        f"{landed}/{len(started['during'])}; failures {stats.failures}, dropped {stats.dropped}"
    )
    tracker.close()
