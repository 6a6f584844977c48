"""Several processes writing one SQLite file lose no run."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from exectrack import ExecutionTracker, RunFilter, RunStatus
from exectrack.stores import open_store

RUNS_PER_PROCESS = 3000


def _worker(url: str, name: str, ready: object) -> None:
    t = ExecutionTracker(url, strict=True)

    @t.with_run("skill", name)
    def work(i: int) -> int:
        return i

    ready.wait()  # type: ignore[attr-defined]
    for i in range(RUNS_PER_PROCESS):
        work(i)
        if i % 3 == 0:
            with t.with_run("chat", name):
                pass
    t.close()


@pytest.mark.slow
def test_two_processes_on_one_file_lose_no_run(tmp_path: Path) -> None:
    """Two processes tracking concurrently into one file: every run lands, finished."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(url, f"p{k}", ready)) for k in range(2)]
    for p in procs:
        p.start()
    ready.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    counts = open_store(url).count_runs(RunFilter())
    per_process = RUNS_PER_PROCESS + (RUNS_PER_PROCESS + 2) // 3
    assert counts == {
        ("skill", RunStatus.SUCCESS): 2 * RUNS_PER_PROCESS,
        ("chat", RunStatus.SUCCESS): 2 * (per_process - RUNS_PER_PROCESS),
    }
    store = open_store(url)
    for k in range(2):
        assert len(store.list_runs(RunFilter(source_ref=f"p{k}"), limit=10_000)) == per_process
