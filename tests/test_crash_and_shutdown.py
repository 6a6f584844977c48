"""Real processes: a crash (SIGKILL) leaves runs the reaper finishes from another
process; a normal exit or SIGTERM finishes open runs as canceled/shutdown."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from exectrack import RunFilter, RunStatus
from exectrack import query as q
from exectrack.monitor import reap_once
from exectrack.stores import open_store
from forking import arm_child_watchdog, wait_child

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")

CHILD = """
import sys, threading, time
import exectrack

url, owner = sys.argv[1], (sys.argv[2] or None)
t = exectrack.ExecutionTracker(url, owner=owner, strict=True)
handles = [t.start("crashy", f"job-{i}") for i in range(100)]
t.flush()
print("ready", flush=True)
time.sleep(120)
"""


def _start_child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
    return proc


def _cli(url: str, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "exectrack", "--database", url, *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.slow
def test_killed_process_runs_are_reaped_at_once_by_another_process(db_url: str) -> None:
    """SIGKILL mid-run leaves 100 runs open; `exectrack reap` in another process finds
    the owner's pid gone and finishes all 100 as abandoned at once (their leases are
    still live); the report shows a hang rate of 100% for that source."""
    child = _start_child(CHILD, db_url, "")
    child.kill()
    child.wait(10)
    store = open_store(db_url)
    assert store.count_runs(RunFilter()) == {("crashy", RunStatus.RUNNING): 100}
    preview = _cli(db_url, "reap", "--dry-run")
    assert len(preview["reaped"]) == 100  # type: ignore[arg-type]
    assert store.count_runs(RunFilter()) == {("crashy", RunStatus.RUNNING): 100}
    done = _cli(db_url, "reap")
    reaped = done["reaped"]
    assert isinstance(reaped, list) and len(reaped) == 100
    assert {(r["status"], r["error_code"], r["reason"]) for r in reaped} == {
        ("error", "abandoned", "dead_owner")
    }
    assert store.count_runs(RunFilter()) == {("crashy", RunStatus.ERROR): 100}
    assert _cli(db_url, "reap")["reaped"] == []
    report = _cli(db_url, "report", "--since", "1h")
    [crashy] = report["sources"]  # type: ignore[misc]
    assert (crashy["source"], crashy["started"], crashy["abandoned"], crashy["hang_rate"]) == (
        "crashy",
        100,
        100,
        1.0,
    )


@pytest.mark.slow
def test_killed_process_on_another_host_is_reaped_after_its_lease(db_url: str) -> None:
    """When the pid rule cannot apply (the owner is on another host), the runs stay
    open while the lease lives and are abandoned once it expired (fake time)."""
    child = _start_child(CHILD, db_url, "far-away-host:4242:1")
    child.kill()
    child.wait(10)
    store = open_store(db_url)
    [first] = store.list_runs(RunFilter(), limit=1)
    assert first.lease_until is not None
    assert reap_once(store, first.lease_until - timedelta(seconds=1)) == []
    report = q.report(store, now=first.lease_until + timedelta(seconds=1))
    [crashy] = report.sources
    assert (crashy.open, crashy.open_past_lease) == (100, 100)
    assert crashy.hang_rate == 1.0  # open past lease counts as hung before any reap
    reaped = reap_once(store, first.lease_until + timedelta(seconds=1))
    assert len(reaped) == 100
    assert {(r.status, r.reason) for r in reaped} == {(RunStatus.ERROR, "lease_expired")}
    [crashy] = q.report(store, now=first.lease_until + timedelta(seconds=2)).sources
    assert (crashy.abandoned, crashy.open, crashy.hang_rate) == (100, 0, 1.0)


SIGTERM_CHILD = """
import sys, threading, time
import exectrack

t = exectrack.ExecutionTracker(sys.argv[1], strict=True)

in_thread = threading.Event()

@t.with_run("worker", "blocked")
def blocked(main):
    if main:
        in_thread.wait()
        t.flush()
        print("ready", flush=True)
    else:
        in_thread.set()
    time.sleep(120)

handles = [t.start("worker", f"open-{i}") for i in range(5)]
t.start("worker", "done").finish_success()
threading.Thread(target=blocked, args=(False,), daemon=True).start()
blocked(True)
"""


@pytest.mark.slow
def test_sigterm_finishes_open_runs_as_shutdown_then_dies_of_the_signal(db_url: str) -> None:
    """SIGTERM to a process with open runs (handles, a tracked call in a thread, one in
    the main thread): they all end canceled/shutdown; finished runs keep their
    status; the process still dies of SIGTERM."""
    child = _start_child(SIGTERM_CHILD, db_url)
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == -signal.SIGTERM
    runs = open_store(db_url).list_runs(RunFilter(), limit=100)
    by_ref = {}
    for run in runs:
        by_ref.setdefault(run.source_ref, []).append((run.status, run.error_code))
    assert by_ref.pop("done") == [(RunStatus.SUCCESS, None)]
    assert by_ref.pop("blocked") == [(RunStatus.CANCELED, "shutdown")] * 2
    assert by_ref == {f"open-{i}": [(RunStatus.CANCELED, "shutdown")] for i in range(5)}


SIGTERM_IN_A_LOCK_CHILD = """
import os, signal, sys, time
import exectrack

t = exectrack.ExecutionTracker(sys.argv[1], strict=True)
for i in range(50):
    t.start("worker", "queued").finish_success()
print("ready", flush=True)
# The signal lands while the main thread holds the writer's lock, as it does for a
# moment in every submit that wakes the writer (a Pool worker terminated while its
# exit flush runs): the handler must not wait for work that needs that lock.
with t._writer._cond:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)
time.sleep(60)
"""


@pytest.mark.slow
def test_sigterm_while_the_main_thread_holds_a_writer_lock_loses_nothing(db_url: str) -> None:
    """SIGTERM delivered while the main thread holds the writer's lock (the handler
    runs inside that critical section): every queued run is still written and the
    process dies of the signal, instead of a 6 s deadlock that loses the queue."""
    child = _start_child(SIGTERM_IN_A_LOCK_CHILD, db_url)
    assert child.wait(30) == -signal.SIGTERM
    runs = open_store(db_url).list_runs(RunFilter(), limit=100)
    assert [r.status for r in runs] == [RunStatus.SUCCESS] * 50


SIGTERM_STUCK_CHILD = """
import sys, threading, time
import exectrack

t = exectrack.ExecutionTracker(sys.argv[1], strict=True)
t.start("worker", "open")
t.flush()
# A shutdown that never returns (as one blocked on a lock a forked child inherited
# held would): SIGTERM must still end the process.
t.shutdown = lambda timeout=None: threading.Event().wait()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_sigterm_ends_the_process_even_when_the_shutdown_is_stuck(db_url: str) -> None:
    """A Pool terminates its workers with SIGTERM and waits for them: a worker whose
    shutdown hangs must die anyway, just past the exit budget."""
    from exectrack._exit import EXIT_TIMEOUT

    child = _start_child(SIGTERM_STUCK_CHILD, db_url)
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == -signal.SIGTERM
    assert time.monotonic() - started >= EXIT_TIMEOUT  # it did wait for the shutdown


EXIT_CHILD = """
import signal, sys
import exectrack

def mine(signum, frame):
    raise SystemExit(3)

if sys.argv[2] == "own-handler":
    signal.signal(signal.SIGTERM, mine)
t = exectrack.ExecutionTracker(sys.argv[1], strict=True)
for i in range(3):
    t.start("worker", f"left-{i}")
print("ready", flush=True)
if sys.argv[2] == "own-handler":
    signal.raise_signal(signal.SIGTERM)  # the app's handler still decides: exit code 3
"""


@pytest.mark.parametrize("mode", ["plain", "own-handler"])
def test_normal_exit_finishes_open_runs_and_keeps_the_apps_handler(db_url: str, mode: str) -> None:
    """Interpreter exit finishes runs left open as canceled/shutdown; an app's own
    SIGTERM handler still runs (chained, not replaced) and decides how the app exits."""
    child = _start_child(EXIT_CHILD, db_url, mode)
    expected = 3 if mode == "own-handler" else 0
    assert child.wait(30) == expected, child.stderr.read() if child.stderr else ""
    runs = open_store(db_url).list_runs(RunFilter(), limit=10)
    assert sorted((r.source_ref, r.status, r.error_code) for r in runs) == [
        (f"left-{i}", RunStatus.CANCELED, "shutdown") for i in range(3)
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_exit_leaves_the_parents_runs_alone(db_url: str) -> None:
    """A child forked while the parent has open runs shuts down (as at its exit)
    without finishing them: they are the parent's, still running."""
    from exectrack import ExecutionTracker
    from exectrack._exit import shutdown_all

    t = ExecutionTracker(db_url, strict=True, durability="sync")
    parents = [t.start("worker", f"parent-{i}") for i in range(3)]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        arm_child_watchdog()
        code = 1
        try:
            t.start("worker", "child").finish_success()
            t.start("worker", "child-left-open")
            code = 0 if shutdown_all(5) == 1 else 2
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    runs = {r.source_ref: (r.status, r.error_code) for r in t.list_runs().runs}
    assert runs == {
        **{f"parent-{i}": (RunStatus.RUNNING, None) for i in range(3)},
        "child": (RunStatus.SUCCESS, None),
        "child-left-open": (RunStatus.CANCELED, "shutdown"),
    }
    for h in parents:
        h.finish_success()
    t.close()


def test_sigterm_handler_only_when_tracking_and_from_the_main_thread(db_url: str) -> None:
    """A disabled tracker installs nothing; a tracker built in another thread cannot
    install the handler, and the next one built in the main thread does."""
    code = """
import signal, sys, threading
import exectrack
url = sys.argv[1]
exectrack.ExecutionTracker(url, enabled=False)
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
th = threading.Thread(target=exectrack.ExecutionTracker, args=(url,))
th.start(); th.join()
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
exectrack.ExecutionTracker(url)
assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code, db_url], capture_output=True, text=True, check=False
    )
    assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stderr


def _blocked(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    [line] = [ln for ln in status.splitlines() if ln.startswith("SigBlk:")]
    return int(line.split()[1], 16)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc")
def test_exectracks_threads_leave_sigterm_and_sigint_to_the_main_thread(db_url: str) -> None:
    """A signal sent to the process goes to any thread that does not block it; one
    that lands on the writer or the monitor while the main thread waits in C (a Pool
    worker waiting for a task) runs no Python handler, and the process never ends.
    exectrack's threads block both, the main thread keeps them."""
    import threading

    from exectrack import ExecutionTracker

    tracker = ExecutionTracker(db_url, lease=1.0)
    try:
        tracker.start("worker", "x").finish_success()
        tracker.flush()
        # This tracker's own threads (another test's, named alike, may be ending now)
        threads = {"writer": tracker._writer._thread, "monitor": tracker.monitor._thread}
        mine = {name: t.native_id for name, t in threads.items() if t is not None}
        assert set(mine) == {"writer", "monitor"} and None not in mine.values(), mine
        wanted = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
        for name, native_id in mine.items():
            assert _blocked(native_id) & wanted == wanted, name
        # the thread running this test (the main thread; under mutmut's forked runner
        # main_thread() still names the parent's, whose /proc entry is not here)
        assert _blocked(threading.get_native_id()) & wanted == 0
    finally:
        tracker.close()


def _signal_this_thread_once_main_waits(main: threading.Thread) -> None:
    """Until the main thread sleeps in ``Condition.wait`` (seen twice, 50 ms apart, so
    it is past the bytecodes and in the lock's wait in C), then SIGTERM to this
    thread: its C handler notes the signal, the main thread is not woken."""
    settled = 0
    while settled < 2:
        frame = sys._current_frames().get(main.ident or 0)
        state = Path(f"/proc/self/task/{main.native_id}/stat").read_text().rsplit(")", 1)[1]
        waiting = frame is not None and frame.f_code.co_name == "wait" and state.split()[0] == "S"
        settled = settled + 1 if waiting else 0
        time.sleep(0.05)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)


def _lost_wakeup_child(url: str) -> None:
    """A multiprocessing child whose SIGTERM handler the main thread never gets to
    run: the signal is taken by another thread while the main thread waits in C with
    no timeout, as a Pool worker's does when Pool.terminate signals it."""
    from exectrack import ExecutionTracker

    tracker = ExecutionTracker(url, strict=True)
    tracker.start("worker", "open")  # from the main thread: the handler is installed
    tracker.start("worker", "done").finish_success()
    tracker.flush()
    threading.Thread(
        target=_signal_this_thread_once_main_waits, args=(threading.main_thread(),), daemon=True
    ).start()
    threading.Event().wait()  # no timeout, no Python code until it is set


def _forking_child(url: str) -> None:
    """A multiprocessing child that watches its signals and forks one more: the
    grandchild must watch its own, and its SIGTERM must not end this process."""
    from exectrack import ExecutionTracker

    tracker = ExecutionTracker(url, strict=True)
    tracker.start("parent", "before").finish_success()
    tracker.flush()
    grandchild = multiprocessing.get_context("fork").Process(target=_lost_wakeup_child, args=(url,))
    grandchild.start()
    grandchild.join(60)
    if grandchild.is_alive():
        grandchild.kill()
        sys.exit(4)
    tracker.start("parent", "after").finish_success()
    tracker.flush()
    sys.exit(0 if grandchild.exitcode == -signal.SIGTERM else 3)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc")
@pytest.mark.parametrize("method", ["spawn", "fork", "fork-from-a-watching-child"])
def test_sigterm_the_main_thread_never_sees_still_ends_a_multiprocessing_child(
    db_url: str, method: str
) -> None:
    """The hang behind Pool.terminate: SIGTERM noted by the C handler while the main
    thread waits in C, so its Python handler never runs. The watcher on the wakeup
    descriptor shuts down and sends the signal again: the open run ends
    canceled/shutdown, the finished one stays, the child dies of SIGTERM."""
    nested = method == "fork-from-a-watching-child"
    ctx = multiprocessing.get_context("spawn" if nested else method)
    child = ctx.Process(target=_forking_child if nested else _lost_wakeup_child, args=(db_url,))
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the child never acted on its SIGTERM")
    assert child.exitcode == (0 if nested else -signal.SIGTERM)
    runs = open_store(db_url).list_runs(RunFilter(), limit=10)
    expected = [("done", RunStatus.SUCCESS, None), ("open", RunStatus.CANCELED, "shutdown")]
    if nested:
        expected += [("before", RunStatus.SUCCESS, None), ("after", RunStatus.SUCCESS, None)]
    assert sorted((r.source_ref, r.status, r.error_code) for r in runs) == sorted(expected)


EXIT_BEFORE_THE_HELPER_CHILD = """
import os, signal, sys, time
import exectrack
from exectrack.stores import open_store
from exectrack.testing import FailingStore

class SlowFinish(FailingStore):
    def _check(self, op):
        if op == "finish":
            time.sleep(5)  # the helper's shutdown is still writing when main exits
        super()._check(op)

t = exectrack.ExecutionTracker(
    SlowFinish(open_store(sys.argv[1]), fail=set()), durability="sync", strict=True
)
t.start("worker", "open")
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGTERM)  # the handler waits a moment, then returns
print("main goes on", flush=True)
"""


def test_sigterm_then_interpreter_exit_before_the_shutdown_ends_still_dies_of_it(
    db_url: str,
) -> None:
    """The handler returned and the main thread reached interpreter exit while the
    shutdown was still writing: the exit hook sends the signal again, so the process
    ends as SIGTERM's default action would, not with exit code 0."""
    child = _start_child(EXIT_BEFORE_THE_HELPER_CHILD, db_url)
    assert child.wait(30) == -signal.SIGTERM
    assert child.stdout is not None and child.stdout.read() == "main goes on\n"
