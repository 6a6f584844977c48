"""The liveness part of the Store contract, on every engine: heartbeats renew leases,
the reaper's rules and their boundaries, and the hang-rate summary."""

from __future__ import annotations

import math
import threading

from exectrack._model import RunStatus, us_to_datetime
from exectrack.stores import FinishResult, NewRun, Reaped

from .conftest import Target
from .test_contract import T0, everything, fin

S = 1_000_000  # one second in microseconds


def run(run_id: str, *, owner: str = "h:1:a", at: int = T0, **fields: object) -> NewRun:
    return NewRun(run_id, str(fields.pop("source", "skill")), at, owner=owner, **fields)  # type: ignore[arg-type]


def statuses(target: Target) -> dict[str, tuple[RunStatus, str | None]]:
    return {r.id: (r.status, r.error_code) for r in everything(target.store)}


def test_heartbeat_renews_only_the_owners_open_runs(target: Target) -> None:
    """One statement renews heartbeat_at and lease_until of every open run of one
    owner; other owners' runs and finished runs are untouched."""
    store = target.store
    store.apply(
        [
            run("a1", lease_until=T0 + 30 * S),
            run("a2", status=RunStatus.QUEUED, lease_until=T0 + 30 * S),
            run("a3", lease_until=T0 + 30 * S),
            run("b1", owner="h:2:b", lease_until=T0 + 30 * S),
        ]
    )
    store.finish(fin("a3", RunStatus.SUCCESS, T0 + S))
    assert store.heartbeat("h:1:a", T0 + 10 * S, T0 + 40 * S) == 2
    assert store.heartbeat("nobody", T0 + 10 * S, T0 + 40 * S) == 0
    runs = {r.id: r for r in everything(store)}
    for rid in ("a1", "a2"):
        assert runs[rid].heartbeat_at == us_to_datetime(T0 + 10 * S)
        assert runs[rid].lease_until == us_to_datetime(T0 + 40 * S)
    for rid in ("a3", "b1"):
        assert runs[rid].lease_until == us_to_datetime(T0 + 30 * S)
    assert store.open_owners() == ["h:1:a", "h:2:b"]


def test_deadline_boundary(target: Target) -> None:
    """A run is past its deadline only strictly after deadline_at; then it ends
    timeout/deadline_exceeded, a queued one canceled."""
    store = target.store
    store.apply(
        [
            run("r", deadline_at=T0 + 5 * S),
            run("q", status=RunStatus.QUEUED, deadline_at=T0 + 5 * S),
            run("later", deadline_at=T0 + 6 * S),
            run("none"),
        ]
    )
    assert store.reap(T0 + 5 * S) == []
    reaped = store.reap(T0 + 5 * S + 1)
    assert sorted((r.run_id, r.status, r.error_code, r.reason) for r in reaped) == [
        ("q", RunStatus.CANCELED, "deadline_exceeded", "deadline"),
        ("r", RunStatus.TIMEOUT, "deadline_exceeded", "deadline"),
    ]
    assert statuses(target)["later"] == (RunStatus.RUNNING, None)
    finished = {r.id: r for r in everything(store)}["r"]
    assert finished.duration_ms is not None
    assert math.isclose(finished.duration_ms, 5000.001)
    assert finished.retryable is True


def test_lease_boundary(target: Target) -> None:
    """A lease is expired only strictly after lease_until: then error/abandoned; a
    run without a lease is never lease-reaped."""
    store = target.store
    store.apply([run("r", lease_until=T0 + 30 * S), run("free")])
    assert store.reap(T0 + 30 * S) == []
    [reaped] = store.reap(T0 + 30 * S + 1)
    assert (reaped.run_id, reaped.status, reaped.error_code, reaped.reason) == (
        "r",
        RunStatus.ERROR,
        "abandoned",
        "lease_expired",
    )
    assert statuses(target)["free"] == (RunStatus.RUNNING, None)
    assert store.reap(T0 + 10**9 * S) == []


def test_heartbeat_keeps_a_run_alive(target: Target) -> None:
    """A renewed lease moves the expiry: the old expiry no longer reaps the run."""
    store = target.store
    store.create(run("r", lease_until=T0 + 30 * S))
    store.heartbeat("h:1:a", T0 + 25 * S, T0 + 55 * S)
    assert store.reap(T0 + 31 * S) == []
    assert [r.run_id for r in store.reap(T0 + 55 * S + 1)] == ["r"]


def test_dead_owner_rule_is_immediate_and_first(target: Target) -> None:
    """Runs of a dead owner end abandoned at once, even with a live lease or a passed
    deadline (the dead-owner rule comes first); other owners are untouched."""
    store = target.store
    store.apply(
        [
            run("d1", owner="h:9:dead", lease_until=T0 + 30 * S),
            run("d2", owner="h:9:dead", deadline_at=T0 - S),
            run("dq", owner="h:9:dead", status=RunStatus.QUEUED),
            run("live", owner="h:1:a", lease_until=T0 + 30 * S),
        ]
    )
    reaped = store.reap(T0, dead_owners=["h:9:dead"])
    assert sorted((r.run_id, r.status, r.reason, r.owner) for r in reaped) == [
        ("d1", RunStatus.ERROR, "dead_owner", "h:9:dead"),
        ("d2", RunStatus.ERROR, "dead_owner", "h:9:dead"),
        ("dq", RunStatus.CANCELED, "dead_owner", "h:9:dead"),
    ]
    assert statuses(target)["live"] == (RunStatus.RUNNING, None)


def test_dry_run_changes_nothing(target: Target) -> None:
    """A dry run reports exactly what a real reap then finishes, and writes nothing."""
    store = target.store
    store.apply(
        [
            run("a", owner="h:9:dead"),
            run("b", deadline_at=T0 + S),
            run("c", lease_until=T0 + S, status=RunStatus.QUEUED),
            run("d", lease_until=T0 + 10 * S),
        ]
    )
    before = statuses(target)
    preview = store.reap(T0 + 2 * S, dead_owners=["h:9:dead"], dry_run=True)
    assert statuses(target) == before
    done = store.reap(T0 + 2 * S, dead_owners=["h:9:dead"])
    assert sorted(preview, key=lambda r: r.run_id) == sorted(done, key=lambda r: r.run_id)
    assert [r.run_id for r in sorted(done, key=lambda r: r.run_id)] == ["a", "b", "c"]


def test_reaped_run_refuses_later_finish_and_finished_run_is_not_reaped(
    target: Target,
) -> None:
    """The reaper and normal finishes share one guard: whichever comes first wins."""
    store = target.store
    store.apply([run("late", lease_until=T0 + S), run("done", lease_until=T0 + S)])
    store.finish(fin("done", RunStatus.SUCCESS, T0 + S // 2))
    assert [r.run_id for r in store.reap(T0 + 2 * S)] == ["late"]
    assert store.finish(fin("late", RunStatus.SUCCESS, T0 + 3 * S)) == FinishResult(
        False, RunStatus.ERROR
    )
    assert store.reap(T0 + 4 * S) == []


def test_concurrent_reapers_finish_each_run_once(shared_target: Target) -> None:
    """Six reapers on separate connections, at once, with finishers racing them: every
    run ends exactly once, and the reports add up to the runs reaped."""
    store = shared_target.store
    n = 120
    store.apply([run(f"r{i:03}", lease_until=T0 + S) for i in range(n)])
    reapers = [shared_target.open_again() for _ in range(6)]
    barrier = threading.Barrier(len(reapers) + 1)
    results: list[list[Reaped]] = [[] for _ in reapers]
    finished: list[str] = []

    def reap(k: int) -> None:
        barrier.wait()
        results[k] = reapers[k].reap(T0 + 2 * S)

    def finish() -> None:
        barrier.wait()
        for i in range(0, n, 3):
            if store.finish(fin(f"r{i:03}", RunStatus.SUCCESS, T0 + S)).applied:
                finished.append(f"r{i:03}")

    threads = [threading.Thread(target=reap, args=(k,)) for k in range(len(reapers))]
    threads.append(threading.Thread(target=finish))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    reaped = [r.run_id for per in results for r in per]
    assert len(reaped) == len(set(reaped))
    assert sorted(reaped + finished) == [f"r{i:03}" for i in range(n)]
    final = statuses(shared_target)
    assert all(final[rid] == (RunStatus.ERROR, "abandoned") for rid in reaped)
    assert all(final[rid] == (RunStatus.SUCCESS, None) for rid in finished)


def test_summary_counts_and_percentiles(target: Target) -> None:
    """summarize() gives per-source counts, open and past-lease runs, the oldest open
    run and nearest-rank p50/p95 of durations, over the window."""
    store = target.store
    durations = [float(d) for d in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]
    cmds = []
    for i, ms in enumerate(durations):
        cmds.append(run(f"s{i}", at=T0 + i * S))
        cmds.append(fin(f"s{i}", RunStatus.SUCCESS, T0 + i * S + 1, duration_ms=ms))
    store.apply(cmds)
    store.apply(
        [
            run("e1", at=T0 + 20 * S),
            fin("e1", RunStatus.ERROR, T0 + 21 * S, error_code="rate_limited", duration_ms=50.0),
            run("ab", at=T0 + 22 * S, lease_until=T0 + 23 * S),
            run("open-old", at=T0 - 100 * S, lease_until=T0 - 50 * S),  # before the window
            run("open-new", at=T0 + 30 * S, lease_until=T0 + 90 * S),
            run("chat1", at=T0 + 5 * S, source="chat"),
        ]
    )
    store.reap(T0 + 40 * S)  # reaps "ab" and "open-old" as abandoned
    store.create(run("open-past", at=T0 + 31 * S, lease_until=T0 + 35 * S))
    [chat, skill] = store.summarize(T0, T0 + 40 * S)
    assert chat.source == "chat" and chat.open == 1 and chat.by_status == {RunStatus.RUNNING: 1}
    assert skill.by_status == {
        RunStatus.SUCCESS: 10,
        RunStatus.ERROR: 2,
        RunStatus.RUNNING: 2,
    }
    assert skill.error_codes == {"rate_limited": 1, "abandoned": 1}
    assert (skill.open, skill.open_past_lease, skill.open_past_lease_in_window) == (2, 1, 1)
    assert skill.oldest_open_at == T0 + 30 * S
    finished = sorted([*durations, 50.0, 40 * 1000 - 22 * 1000.0])
    assert skill.p50_ms == finished[math.ceil(0.5 * len(finished)) - 1]
    assert skill.p95_ms == finished[math.ceil(0.95 * len(finished)) - 1]
    everything_since_ever = {s.source: s for s in store.summarize(None, T0 + 40 * S)}
    assert everything_since_ever["skill"].error_codes["abandoned"] == 2
