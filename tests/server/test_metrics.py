"""/metrics: Prometheus text that prometheus-client's own parser reads back, with the
runs of the database and the write-path health of the serving process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exectrack import ExecutionTracker, RunStatus
from exectrack._model import datetime_to_us
from exectrack.server import create_app
from exectrack.stores._sql import SqlStore

from .conftest import add_run, ago

Client = Callable[..., TestClient]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_runs_durations_open_and_hang_rate(store: SqlStore, client_for: Client) -> None:
    for i, ms in enumerate([3.0, 20.0, 700.0]):
        add_run(store, f"ok{i}", "skill", duration_ms=ms)
    add_run(store, "bad", "skill", status=RunStatus.ERROR, duration_ms=40_000.0)
    add_run(store, "open", "chat", status=RunStatus.RUNNING, started=ago(minutes=3))
    add_run(store, "hung", "chat", status=RunStatus.RUNNING, started=ago(minutes=2),
            lease_until=datetime_to_us(ago(minutes=1)))  # fmt: skip
    r = client_for(create_app(store)).get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    assert got[("exectrack_store_up", ())] == 1
    assert got[("exectrack_runs", (("source", "skill"), ("status", "success")))] == 3
    assert got[("exectrack_runs", (("source", "skill"), ("status", "error")))] == 1
    assert got[("exectrack_runs", (("source", "chat"), ("status", "running")))] == 2

    def bucket(le: str) -> float:
        return got[("exectrack_run_duration_seconds_bucket", (("le", le), ("source", "skill")))]

    assert bucket("0.005") == 1
    assert bucket("0.025") == 2
    assert bucket("1.0") == 3
    assert bucket("30.0") == 3
    assert bucket("60.0") == 4
    assert bucket("+Inf") == 4
    assert got[("exectrack_run_duration_seconds_count", (("source", "skill"),))] == 4
    assert got[("exectrack_run_duration_seconds_sum", (("source", "skill"),))] == 40.723
    assert got[("exectrack_open_runs", (("source", "chat"),))] == 2
    assert got[("exectrack_open_runs_past_lease", (("source", "chat"),))] == 1
    assert got[("exectrack_hang_rate", (("source", "chat"),))] == 0.5
    assert got[("exectrack_hang_rate", (("source", "skill"),))] == 0
    assert 170 < got[("exectrack_oldest_open_run_age_seconds", (("source", "chat"),))] < 600
    assert got[("exectrack_server_streams", ())] == 0
    assert ("exectrack_dropped_writes_total", ()) not in got  # no tracker in this process


def test_a_trackers_write_path_is_reported(db_url: str, client_for: Client) -> None:
    tracker = ExecutionTracker(db_url, strict=True)
    try:
        with tracker.with_run("chat"):
            pass
        got = samples(client_for(create_app(tracker)).get("/metrics").text)
        assert got[("exectrack_dropped_writes_total", ())] == 0
        assert got[("exectrack_store_failures_total", ())] == 0
        assert got[("exectrack_write_queue", ())] == 0
        assert got[("exectrack_runs", (("source", "chat"), ("status", "success")))] == 1
    finally:
        tracker.close()


def test_two_apps_in_one_process_keep_their_own_registries(
    store: SqlStore, tmp_path: object, client_for: Client
) -> None:
    """Each app has its own registry: a second app neither fails to register nor
    reports the first one's database."""
    from exectrack.stores import open_store

    other = open_store(f"{tmp_path}/other.db")
    try:
        add_run(store, "a", "chat")
        add_run(other, "b", "skill")
        first = samples(client_for(create_app(store)).get("/metrics").text)
        second = samples(client_for(create_app(other)).get("/metrics").text)
        assert ("exectrack_runs", (("source", "chat"), ("status", "success"))) in first
        assert ("exectrack_runs", (("source", "skill"), ("status", "success"))) not in first
        assert ("exectrack_runs", (("source", "skill"), ("status", "success"))) in second
    finally:
        other.close()


def test_source_stats_can_skip_the_percentiles(store: SqlStore) -> None:
    """What /metrics asks for: the counts and buckets, without the sorting query."""
    from exectrack import query

    add_run(store, "a", "chat", duration_ms=5.0)
    (full,) = query.source_stats(store, bounds=(10.0,))
    (lean,) = query.source_stats(store, bounds=(10.0,), percentiles=False)
    assert full.p50_ms == 5.0 and lean.p50_ms is None and lean.p99_ms is None
    assert (lean.by_status, lean.buckets, lean.duration_count) == (
        full.by_status,
        full.buckets,
        full.duration_count,
    )


def test_run_counts_cover_the_last_24_hours_open_runs_every_age(
    store: SqlStore, client_for: Client
) -> None:
    """A scrape counts the runs started in the last 24 h (its cost follows the window,
    not the database), while an open run from two days ago still counts as open."""
    add_run(store, "recent", "skill", duration_ms=5.0)
    add_run(store, "old", "skill", duration_ms=5.0, started=ago(hours=48))
    add_run(store, "old-open", "chat", status=RunStatus.RUNNING, started=ago(hours=48))
    got = samples(client_for(create_app(store)).get("/metrics").text)
    assert got[("exectrack_runs", (("source", "skill"), ("status", "success")))] == 1
    assert got[("exectrack_run_duration_seconds_count", (("source", "skill"),))] == 1
    assert ("exectrack_runs", (("source", "chat"), ("status", "running"))) not in got
    assert got[("exectrack_open_runs", (("source", "chat"),))] == 1
    assert got[("exectrack_oldest_open_run_age_seconds", (("source", "chat"),))] > 47 * 3600


# -- every family's name, type and help; an unreadable store; the tracker's clock ---------

FAMILIES = {
    "exectrack_store_up": ("gauge", "1 when this scrape could read the store"),
    "exectrack_runs": ("gauge", "Runs started in the last 24 h by source and status"),
    "exectrack_run_duration_seconds": (
        "histogram",
        "Durations of the finished runs started in the last 24 h",
    ),
    "exectrack_open_runs": ("gauge", "Runs still open"),
    "exectrack_hang_rate": (
        "gauge",
        "(abandoned + open past lease) / started, runs started in the last 24 h",
    ),
    "exectrack_open_runs_past_lease": ("gauge", "Open runs past their lease"),
    "exectrack_oldest_open_run_age_seconds": ("gauge", "Age of the oldest open run"),
    "exectrack_dropped_writes": (
        "counter",
        "Runs this process dropped instead of writing (queue full, store down)",
    ),
    "exectrack_store_failures": ("counter", "Store failures of this process's tracker"),
    "exectrack_write_queue": ("gauge", "Writes queued in this process"),
    "exectrack_server_store_errors": (
        "counter",
        "Requests of this server that the store failed",
    ),
    "exectrack_server_streams": ("gauge", "Change-feed streams this server is sending"),
}


def test_every_family_has_its_name_type_and_help(db_url: str, client_for: Client) -> None:
    tracker = ExecutionTracker(db_url, strict=True)
    try:
        tracker.start("chat").finish_success()
        text = client_for(create_app(tracker)).get("/metrics").text
        got = {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(text)}
        assert got == FAMILIES
    finally:
        tracker.close()


def test_an_unreadable_store_is_store_up_0_counted_and_logged_once_per_scrape(
    store: SqlStore, client_for: Client, caplog: Any
) -> None:
    from exectrack.testing import FailingStore

    client = client_for(create_app(FailingStore(store)))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="exectrack.server._metrics"):
        first = samples(client.get("/metrics").text)
        second = samples(client.get("/metrics").text)
    assert first[("exectrack_store_up", ())] == 0
    assert first[("exectrack_server_store_errors_total", ())] == 1
    assert second[("exectrack_server_store_errors_total", ())] == 2
    assert not any(name == "exectrack_runs" for name, _ in second)
    logged = [r.getMessage() for r in caplog.records if r.name == "exectrack.server._metrics"]
    assert (
        logged
        == ["exectrack server: /metrics could not read the store: injected store failure"] * 2
    )


def test_figures_are_read_on_the_trackers_clock_over_its_last_24_hours(
    db_url: str, client_for: Client
) -> None:
    """A served tracker's clock is the scrape's now: the hang-rate window and the open
    runs' ages count from it, not from the wall clock."""
    from datetime import UTC, datetime

    from exectrack.testing import FakeClock

    clock = FakeClock(datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
    tracker = ExecutionTracker(db_url, strict=True, durability="sync", clock=clock, lease=7200)
    try:
        old = tracker.start("skill", "old")  # started 2 days before the scrape
        clock.advance(2 * 86_400 - 3_600)
        opened = tracker.start("skill", "open")  # an hour before the scrape
        tracker.start("skill", "ok").finish_success()
        clock.advance(3_600)
        old.finish_with_status(  # ends now, as the reaper ends a run whose process died
            RunStatus.ERROR, error_code="abandoned", error_message="its process died"
        )
        got = samples(client_for(create_app(tracker)).get("/metrics").text)
        assert got[("exectrack_oldest_open_run_age_seconds", (("source", "skill"),))] == 3600
        assert got[("exectrack_open_runs", (("source", "skill"),))] == 1
        assert got[("exectrack_hang_rate", (("source", "skill"),))] == 0  # old one outside
        assert got[("exectrack_runs", (("source", "skill"), ("status", "error")))] == 0
        assert opened.id
    finally:
        tracker.close()
