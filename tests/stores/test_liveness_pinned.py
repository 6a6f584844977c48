"""Liveness, pinned on every engine: heartbeats of chosen runs (across the statement
chunks), every stored field of a run each reaper rule ends, what a reap reports, that
a dry run only reads, and that only real reaps count toward the rollups' fold."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exectrack._model import RunStatus, us_to_datetime
from exectrack.errors import StoreError, StoreUnavailableError
from exectrack.stores import Reaped, open_store
from exectrack.stores._liveness import HEARTBEAT_CHUNK

from .conftest import Target
from .test_contract import T0, everything, fin
from .test_liveness_contract import S, run


def test_heartbeat_of_chosen_runs_renews_only_those_that_are_the_owners_and_open(
    target: Target,
) -> None:
    store = target.store
    store.apply(
        [
            run("mine1", lease_until=T0 + S),
            run("mine2", status=RunStatus.QUEUED, lease_until=T0 + S),
            run("mine-not-asked", lease_until=T0 + S),
            run("mine-done", lease_until=T0 + S),
            run("theirs", owner="h:2:b", lease_until=T0 + S),
        ]
    )
    store.finish(fin("mine-done", RunStatus.SUCCESS, T0 + 1))
    asked = ["mine1", "mine2", "mine-done", "theirs", "no-such-run"]
    assert store.heartbeat("h:1:a", T0 + 5 * S, T0 + 9 * S, asked) == 2
    leases = {r.id: (r.heartbeat_at, r.lease_until) for r in everything(store)}
    renewed = (us_to_datetime(T0 + 5 * S), us_to_datetime(T0 + 9 * S))
    assert leases["mine1"] == leases["mine2"] == renewed
    for rid in ("mine-not-asked", "theirs"):
        assert leases[rid] == (us_to_datetime(T0), us_to_datetime(T0 + S))
    assert leases["mine-done"][1] == us_to_datetime(T0 + S)
    assert store.heartbeat("h:1:a", T0 + 6 * S, T0 + 10 * S, []) == 0
    assert {r.id: r.lease_until for r in everything(store)}["mine1"] == us_to_datetime(T0 + 9 * S)


def test_heartbeat_of_more_runs_than_one_statement_takes(target: Target) -> None:
    """Ids beyond the first chunk (and the first id of each chunk) are renewed too,
    and the count adds up over the chunks."""
    n = 2 * HEARTBEAT_CHUNK + 7
    assert HEARTBEAT_CHUNK == 500
    ids = [f"r{i:05}" for i in range(n)]
    store = target.store
    store.apply([run(rid, lease_until=T0 + S) for rid in ids])
    assert store.heartbeat("h:1:a", T0 + 2 * S, T0 + 3 * S, iter(ids)) == n
    leases = {r.id: r.lease_until for r in everything(store)}
    assert set(leases.values()) == {us_to_datetime(T0 + 3 * S)}
    # half of them again: only those move
    assert store.heartbeat("h:1:a", T0 + 3 * S, T0 + 4 * S, ids[::2]) == len(ids[::2])
    leases = {r.id: r.lease_until for r in everything(store)}
    assert [leases[rid] for rid in ids[:4]] == [
        us_to_datetime(T0 + 4 * S),
        us_to_datetime(T0 + 3 * S),
        us_to_datetime(T0 + 4 * S),
        us_to_datetime(T0 + 3 * S),
    ]


@pytest.mark.parametrize(
    ("setup", "dead", "status", "code", "message", "reason"),
    [
        (
            {"owner": "h:9:dead"},
            ["h:9:dead"],
            RunStatus.ERROR,
            "abandoned",
            "the process that ran it is gone",
            "dead_owner",
        ),
        (
            {"deadline_at": T0 + S},
            [],
            RunStatus.TIMEOUT,
            "deadline_exceeded",
            "its deadline passed before it finished",
            "deadline",
        ),
        (
            {"lease_until": T0 + S},
            [],
            RunStatus.ERROR,
            "abandoned",
            "its owner stopped heartbeating (lease expired)",
            "lease_expired",
        ),
    ],
)
def test_every_field_a_reaper_rule_writes_and_reports(
    target: Target,
    setup: dict[str, object],
    dead: list[str],
    status: RunStatus,
    code: str,
    message: str,
    reason: str,
) -> None:
    store = target.store
    store.create(run("r", source="chat", source_ref="job-7", **setup))  # type: ignore[arg-type]
    now = T0 + 3 * S
    reaped = store.reap(now, dead_owners=dead)
    owner = setup.get("owner", "h:1:a")
    assert reaped == [Reaped("r", "chat", "job-7", owner, status, code, reason)]  # type: ignore[arg-type]
    [stored] = everything(store)
    assert (
        stored.status,
        stored.error_code,
        stored.error_message,
        stored.retryable,
        stored.finished_at,
        stored.updated_at,
        stored.duration_ms,
    ) == (status, code, message, True, us_to_datetime(now), us_to_datetime(now), 3000.0)


def test_a_dry_run_reports_each_run_once_with_the_first_rule(target: Target) -> None:
    """A run two rules match is reported once, as the first rule ends it."""
    store = target.store
    store.apply(
        [
            run("both", owner="h:9:dead", deadline_at=T0 + S, lease_until=T0 + S),
            run("late", deadline_at=T0 + S, lease_until=T0 + S),
            run("queued", status=RunStatus.QUEUED, lease_until=T0 + S),
        ]
    )
    preview = store.reap(T0 + 2 * S, dead_owners=["h:9:dead"], dry_run=True)
    assert sorted((r.run_id, r.status, r.error_code, r.reason) for r in preview) == [
        ("both", RunStatus.ERROR, "abandoned", "dead_owner"),
        ("late", RunStatus.TIMEOUT, "deadline_exceeded", "deadline"),
        ("queued", RunStatus.CANCELED, "abandoned", "lease_expired"),
    ]
    done = store.reap(T0 + 2 * S, dead_owners=["h:9:dead"])
    assert sorted(preview, key=lambda r: r.run_id) == sorted(done, key=lambda r: r.run_id)


def test_a_dry_run_only_reads_so_a_held_write_lock_does_not_stop_it(tmp_path: Path) -> None:
    """SQLite: another connection holding the write lock blocks every writer (here at
    once: no busy timeout), never a reader."""
    path = tmp_path / "runs.db"
    store = open_store(f"sqlite:///{path}?busy_timeout=0")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        store.create(run("r", lease_until=T0 + S))
        other.execute("BEGIN IMMEDIATE")
        assert [r.run_id for r in store.reap(T0 + 2 * S, dry_run=True)] == ["r"]
        with pytest.raises(StoreUnavailableError):
            store.reap(T0 + 2 * S)
    finally:
        other.close()
        store.close()


def test_only_a_reap_that_finished_runs_counts_toward_the_fold(target: Target) -> None:
    store = target.store
    store.apply([run(f"r{i}", lease_until=T0 + S) for i in range(3)])
    before = store._unfolded
    assert len(store.reap(T0 + 2 * S, dry_run=True)) == 3
    assert store._unfolded == before
    assert len(store.reap(T0 + 2 * S)) == 3
    assert store._unfolded == before + 3
    assert store.reap(T0 + 3 * S) == []
    assert store._unfolded == before + 3


def test_runs_of_several_dead_owners_end_in_one_reap(target: Target) -> None:
    store = target.store
    store.apply(
        [
            run("a", owner="h:9:dead"),
            run("b", owner="h:8:gone"),
            run("c", owner="h:7:alive"),
        ]
    )
    assert store.heartbeat("h:1:a", T0, T0 + S, ["a", "b", "no-such-run"]) == 0
    reaped = store.reap(T0, dead_owners=["h:9:dead", "h:8:gone"])
    assert sorted((r.run_id, r.reason) for r in reaped) == [
        ("a", "dead_owner"),
        ("b", "dead_owner"),
    ]


def test_a_reap_is_one_transaction(tmp_path: Path) -> None:
    """When a later rule's write fails, what an earlier rule wrote is rolled back too:
    no run is left half reaped, and the next reap finds them all."""
    path = tmp_path / "runs.db"
    store = open_store(f"sqlite:///{path}")
    try:
        store.apply([run("dead", owner="h:9:dead"), run("late", deadline_at=T0)])
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TRIGGER no_timeouts BEFORE UPDATE ON runs "
                "WHEN NEW.error_code = 'deadline_exceeded' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        db.close()
        with pytest.raises(StoreError, match="refused"):
            store.reap(T0 + S, dead_owners=["h:9:dead"])
        assert {r.id: r.status for r in everything(store)} == {
            "dead": RunStatus.RUNNING,
            "late": RunStatus.RUNNING,
        }
        with sqlite3.connect(path) as db:
            db.execute("DROP TRIGGER no_timeouts")
        db.close()
        assert sorted(r.run_id for r in store.reap(T0 + S, dead_owners=["h:9:dead"])) == [
            "dead",
            "late",
        ]
    finally:
        store.close()
