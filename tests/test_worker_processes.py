"""Runs tracked in worker processes, forked children, servers and daemon threads reach
the store, however the process ends (issue 7, items 1, 3, 16, 17)."""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.pool
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import pytest

import exectrack
from exectrack import ExecutionTracker, RunFilter, RunStatus
from exectrack.stores import open_store

METHODS = [
    m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()
]


@exectrack.with_run("skill", "worker-call")
def tracked(i: int) -> int:
    return i


def _use(url: str) -> None:
    """In a worker: record into this test's database (a forkserver keeps the
    environment it started with, an earlier test's)."""
    if os.environ.get("EXECTRACK_DATABASE_URL") != url:
        os.environ["EXECTRACK_DATABASE_URL"] = url
        exectrack.set_tracker(None)


def tracked_in(url: str, i: int) -> int:
    _use(url)
    return tracked(i)


def track_many(url: str, n: int) -> None:
    _use(url)
    for i in range(n):
        tracked(i)


def _proc_text(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace").strip()
    except OSError as exc:
        return f"<{type(exc).__name__}>"


def _terminate_or_explain(pool: multiprocessing.pool.Pool, timeout: float = 60) -> None:
    """What ``with Pool()`` does on exit (terminate, then join the workers), but a
    worker still alive after ``timeout`` fails the test with where each of its
    threads waits, instead of the run's timeout with no trace of the child. (It
    caught SIGTERM handlers that never ran: a signal noted while the worker's main
    thread went back to sleep in sem_wait.)"""
    workers = list(pool._pool)  # type: ignore[attr-defined]
    done = threading.Event()
    threading.Thread(target=lambda: (pool.terminate(), done.set()), daemon=True).start()
    if done.wait(timeout):
        return
    report = []
    for w in workers:
        if w.exitcode is None and w.pid is not None:
            tasks = Path(f"/proc/{w.pid}/task")
            waits = (
                {t.name: _proc_text(w.pid, f"task/{t.name}/wchan") for t in tasks.iterdir()}
                if tasks.exists()
                else {}
            )
            report.append(
                f"worker {w.pid}: {_proc_text(w.pid, 'status').splitlines()[2:3]} "
                f"threads waiting in {waits}; signals: "
                + " ".join(
                    ln for ln in _proc_text(w.pid, "status").splitlines() if ln.startswith("Sig")
                )
            )
            os.kill(w.pid, signal.SIGKILL)
    pytest.fail(f"Pool.terminate did not end within {timeout} s: " + "; ".join(report))


def _counts(url: str) -> dict[tuple[str, RunStatus], int]:
    store = open_store(url)
    try:
        return store.count_runs(RunFilter())
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("parent_tracks", [False, True], ids=["child-tracker", "parent-tracker"])
@pytest.mark.parametrize("method", METHODS)
def test_every_run_of_every_kind_of_worker_reaches_the_store(
    db_url: str, monkeypatch: pytest.MonkeyPatch, method: str, parent_tracks: bool
) -> None:
    """Process children (which end with os._exit under fork/forkserver), a Pool
    terminated and a ProcessPoolExecutor: every tracked call is stored,
    finished, with the default tracker made in the child or inherited."""
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", db_url)
    if parent_tracks:
        tracked(-1)  # the default tracker (and its writer thread) exists before fork
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=track_many, args=(db_url, 100)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    work = functools.partial(tracked_in, db_url)
    pool = ctx.Pool(2)
    try:
        assert pool.map(work, range(1000)) == list(range(1000))
    finally:
        _terminate_or_explain(pool)  # what `with Pool()` does
    with ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert list(executor.map(work, range(500))) == list(range(500))
    exectrack.flush()
    assert _counts(db_url) == {("skill", RunStatus.SUCCESS): 1900 + parent_tracks}


def test_a_forked_child_cannot_finish_its_parents_run(tracker: ExecutionTracker) -> None:
    """fork() inside ``with_run``, then the child finishes the handle and exits
    through the block with SystemExit(3): the parent's run stays running until the
    parent leaves the block; the child's own runs are its own. (Finishing by id stays
    possible on purpose: that is how a worker finishes a run handed to it.)"""
    pid = -1
    try:
        with tracker.with_run("chat", "parent") as run:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                run.annotate(child=True)
                assert not run.finish_error(code="from_child")
                tracker.start("skill", "child-own").finish_success()
                sys.exit(3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 3
            seen = tracker.get_run(run.id)
            assert seen is not None and seen.status is RunStatus.RUNNING
    except SystemExit:  # pragma: no cover - the child, leaving the block
        if pid == 0:
            tracker.flush(5)
            os._exit(3)
        raise
    finally:
        if pid == 0:  # pragma: no cover - the child must never return into pytest
            os._exit(4)
    done = tracker.get_run(run.id)
    assert done is not None and (done.status, done.metadata) == (RunStatus.SUCCESS, {})
    child = tracker.list_runs(source_ref="child-own").runs
    assert [r.status for r in child] == [RunStatus.SUCCESS]


def _script(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return path


def _env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")}
    return {**env, "EXECTRACK_DATABASE_URL": db_url}


DAEMON_AT_EXIT = """
import threading, time
import exectrack

@exectrack.with_run("skill", "daemon")
def work():
    time.sleep(0.0005)

def loop():
    while True:
        work()

for _ in range(3):
    threading.Thread(target=loop, daemon=True).start()
time.sleep(0.3)
print("exiting", flush=True)
"""


@pytest.mark.slow
def test_daemon_threads_tracking_during_exit_leave_no_run_running(
    tmp_path: Path, db_url: str
) -> None:
    """Three daemon threads track runs while the interpreter exits: every run that
    was recorded is finished (5 trials; it failed in 3 of 5)."""
    script = _script(tmp_path, "daemon.py", DAEMON_AT_EXIT)
    for _ in range(5):
        proc = subprocess.run(
            [sys.executable, str(script)],
            env=_env(db_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0 and "exiting" in proc.stdout, proc.stderr
    counts = _counts(db_url)
    assert counts.get(("skill", RunStatus.SUCCESS), 0) > 0
    assert counts.get(("skill", RunStatus.RUNNING), 0) == 0, counts


SERVER = """
import asyncio, socket, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route
import exectrack

if sys.argv[1] == "tracker-first":
    exectrack.get_tracker()  # built before uvicorn installs its signal handlers

@exectrack.with_run("chat", "stream")
async def chunks():
    for i in range(10_000):
        yield f"chunk {i}\\n"
        await asyncio.sleep(0.02)

async def stream(request):
    return StreamingResponse(chunks(), media_type="text/plain")

app = Starlette(routes=[Route("/stream", stream)])
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
uvicorn.Server(config).run(sockets=[sock])
"""


@pytest.fixture
def server_script(tmp_path: Path) -> Path:
    return _script(tmp_path, "server.py", SERVER)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lazy-default", "tracker-first"])
def test_sigterm_to_uvicorn_mid_stream_records_shutdown(
    server_script: Path, db_url: str, mode: str
) -> None:
    """A real uvicorn process streaming a tracked response gets SIGTERM; its own
    graceful shutdown cancels the stream after 1 s and the process dies of the
    signal. The run is stored canceled/shutdown, whether the default tracker was
    made lazily inside the server (uvicorn's handler is chained) or before it."""
    for trial in range(3):
        server = subprocess.Popen(
            [sys.executable, str(server_script), mode],
            env=_env(db_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            _wait_listening(port)
            with httpx.Client(timeout=10) as client:
                with client.stream("GET", f"http://127.0.0.1:{port}/stream") as response:
                    lines = response.iter_lines()
                    assert [next(lines) for _ in range(3)] == [f"chunk {i}" for i in range(3)]
                    server.send_signal(signal.SIGTERM)
                    with pytest.raises(httpx.HTTPError):
                        for _ in lines:  # the server ends the stream when it cancels it
                            pass
            assert server.wait(30) == -signal.SIGTERM
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        runs = open_store(db_url).list_runs(RunFilter(source_ref="stream"), limit=10)
        assert len(runs) == trial + 1
        assert {(r.status, r.error_code) for r in runs} == {(RunStatus.CANCELED, "shutdown")}


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.02)
