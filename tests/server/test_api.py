"""The JSON API in-process over a real SQLite store: every endpoint, its filters, and
every kind of bad input answered with a 4xx naming the parameter, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from exectrack import ExecutionTracker, FakeClock, RunStatus
from exectrack.errors import InvalidArgumentError
from exectrack.server import create_app
from exectrack.stores._sql import SqlStore
from exectrack.testing import FailingStore

from .conftest import add_run, ago

Client = Callable[..., TestClient]


def ids(body: dict[str, Any]) -> list[str]:
    return [r["id"] for r in body["runs"]]


@pytest.fixture
def seeded(store: SqlStore) -> SqlStore:
    """Nine runs over three sources, statuses, sessions, refs, a parent and times."""
    add_run(store, "r1", "chat", started=ago(hours=30), session_id="s1", source_ref="turn")
    add_run(store, "r2", "chat", started=ago(hours=2), session_id="s1", source_ref="turn",
            status=RunStatus.ERROR, error_code="rate_limited",
            error_message="Slow Down please")  # fmt: skip
    add_run(store, "r3", "skill", started=ago(hours=1), parent_id="r2", source_ref="search")
    add_run(store, "r4", "skill", started=ago(minutes=50), parent_id="r2", source_ref="search",
            status=RunStatus.TIMEOUT, error_code="deadline_exceeded")  # fmt: skip
    add_run(store, "r5", "heartbeat", started=ago(minutes=40), source_ref="inbox",
            status=RunStatus.RUNNING)  # fmt: skip
    add_run(store, "r6", "chat", started=ago(minutes=30), session_id="s2", source_ref="turn",
            status=RunStatus.CANCELED, error_code="client_disconnected")  # fmt: skip
    add_run(store, "r7", "skill", started=ago(minutes=20), parent_id="r6", source_ref="calc",
            status=RunStatus.ERROR, error_code="rate_limited")  # fmt: skip
    add_run(store, "r8", "heartbeat", started=ago(minutes=10), source_ref="nightly",
            status=RunStatus.QUEUED)  # fmt: skip
    add_run(store, "r9", "chat", started=ago(minutes=5), session_id="s3", source_ref="turn")
    return store


@pytest.fixture
def client(seeded: SqlStore, client_for: Client) -> TestClient:
    return client_for(create_app(seeded))


# -- api/runs -----------------------------------------------------------------------------


def test_list_is_newest_first_with_every_run_field(client: TestClient) -> None:
    """The default page holds every run, newest first, each with Run.to_dict()'s fields."""
    r = client.get("/api/runs")
    assert r.status_code == 200
    body = r.json()
    assert ids(body) == ["r9", "r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1"]
    assert body["next_cursor"] is None
    first = body["runs"][0]
    assert set(first) >= {"id", "source", "status", "started_at", "finished_at", "metadata"}
    assert first["started_at"].endswith("Z")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("source=skill", ["r7", "r4", "r3"]),
        ("source=skill&source=heartbeat", ["r8", "r7", "r5", "r4", "r3"]),
        ("status=error", ["r7", "r2"]),
        ("status=error&status=timeout", ["r7", "r4", "r2"]),
        ("session_id=s1", ["r2", "r1"]),
        ("source_ref=search", ["r4", "r3"]),
        ("parent_id=r2", ["r4", "r3"]),
        ("since=3h", ["r9", "r8", "r7", "r6", "r5", "r4", "r3", "r2"]),
        ("until=45m", ["r4", "r3", "r2", "r1"]),
        ("since=90m&until=45m", ["r4", "r3"]),
        ("text=slow down", ["r2"]),
        ("text=INBOX", ["r5"]),
        ("text=100%25", []),
        ("source=chat&status=success&session_id=s3", ["r9"]),
        ("source=nothing", []),
    ],
)
def test_each_filter_narrows_the_list(client: TestClient, query: str, expected: list[str]) -> None:
    """Every filter of the query layer, alone and combined, server-side."""
    r = client.get(f"/api/runs?{query}")
    assert r.status_code == 200, r.text
    assert ids(r.json()) == expected


def test_keyset_pages_cover_every_run_once(client: TestClient) -> None:
    """limit + next_cursor walk the list in order, each run exactly once."""
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/runs", params=params).json()
        assert len(body["runs"]) <= 2
        seen += ids(body)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["r9", "r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1"]


def test_limit_500_is_allowed(client: TestClient) -> None:
    assert client.get("/api/runs?limit=500").status_code == 200


BAD = [
    ("/api/runs?status=bogus", "status"),
    ("/api/runs?status=error&status=SUCCESS", "status"),
    ("/api/runs?since=yesterday", "since"),
    ("/api/runs?until=2026-13-45", "until"),
    ("/api/runs?since=99999999999999999999d", "since"),
    ("/api/runs?cursor=not-a-cursor", "cursor"),
    ("/api/runs?cursor=%00%ff", "cursor"),
    ("/api/runs?limit=0", "limit"),
    ("/api/runs?limit=501", "limit"),
    ("/api/runs?limit=-1", "limit"),
    ("/api/runs?limit=abc", "limit"),
    ("/api/runs?limit=1e3", "limit"),
    ("/api/runs?source=Chat", "source"),
    ("/api/runs?source=chat&source=a%20b", "source"),
    ("/api/runs?" + "&".join(["source=chat"] * 51), "source"),
    ("/api/runs?text=" + "x" * 60_000, "text"),
    ("/api/runs?session_id=" + "s" * 10_000, "session_id"),
    ("/api/runs/latest?source=no/such", "source"),
    ("/api/stats?since=-5h", "since"),
    ("/api/stats?until=never", "until"),
    ("/api/report?since=12 parsecs", "since"),
    ("/api/badges?scope=BAD:x", "scope"),
    ("/api/badges?" + "&".join(["scope=chat"] * 201), "scope"),
    ("/badge/Not%20Valid.svg", "source"),
    ("/badge/chat.svg?source_ref=" + "r" * 5000, "source_ref"),
]


@pytest.mark.parametrize(("url", "param"), BAD, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD)])
def test_bad_parameters_are_400_naming_the_parameter(
    client: TestClient, url: str, param: str
) -> None:
    """Invalid input is a 400 with the error shape naming the parameter, never a 500."""
    r = client.get(url)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["parameter"] == param
    assert isinstance(error["message"], str)
    assert len(error["message"]) < 500  # a 100 KB value is not echoed back whole


# -- api/runs/{id} and latest ---------------------------------------------------------------


def test_get_returns_the_run_and_its_children_oldest_first(client: TestClient) -> None:
    body = client.get("/api/runs/r2").json()
    assert body["run"]["id"] == "r2"
    assert body["run"]["error_message"] == "Slow Down please"
    assert [c["id"] for c in body["children"]] == ["r3", "r4"]
    assert client.get("/api/runs/r9").json()["children"] == []


@pytest.mark.parametrize(
    "run_id", ["nope", "0190c3a2-0000-7000-8000-000000000000", "%00", "x" * 400]
)
def test_unknown_id_is_a_404_with_the_error_shape(client: TestClient, run_id: str) -> None:
    r = client.get(f"/api/runs/{run_id}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_latest_is_exactly_the_scope_asked_for(client: TestClient, seeded: SqlStore) -> None:
    """A quiet scope is answered even when a busier one has newer runs; a scope that
    never ran is null, not another scope's run."""
    for i in range(30):
        add_run(seeded, f"busy{i:02d}", "chat", started=ago(seconds=60 - i), source_ref="busy")
    assert (
        client.get("/api/runs/latest?source=heartbeat&source_ref=inbox").json()["run"]["id"] == "r5"
    )
    assert client.get("/api/runs/latest?source=chat&session_id=s1").json()["run"]["id"] == "r2"
    assert client.get("/api/runs/latest?source=chat").json()["run"]["id"] == "busy29"
    assert client.get("/api/runs/latest?source=skill&source_ref=never").json() == {"run": None}


# -- stats and report ---------------------------------------------------------------------


def test_stats_per_source_over_the_default_24_hours(client: TestClient) -> None:
    """Counts by status, open, success rate = success / finished, percentiles and top
    error codes; r1 (30 h ago) is outside the default window."""
    body = client.get("/api/stats").json()
    assert body["until"] is None
    by = {s["source"]: s for s in body["sources"]}
    chat = by["chat"]
    assert chat["total"] == 3
    assert chat["by_status"]["success"] == 1
    assert chat["success_rate"] == pytest.approx(1 / 3)
    assert chat["p50_ms"] == 10.0 and chat["p99_ms"] == 10.0
    assert {e["code"] for e in chat["top_errors"]} == {"rate_limited", "client_disconnected"}
    heartbeat = by["heartbeat"]
    assert heartbeat["open"] == 2
    assert heartbeat["success_rate"] is None
    assert heartbeat["p50_ms"] is None
    skill = by["skill"]
    assert skill["top_errors"] == [
        {"code": "deadline_exceeded", "count": 1},
        {"code": "rate_limited", "count": 1},
    ]


def test_stats_window_and_source_filter(client: TestClient) -> None:
    body = client.get("/api/stats?since=48h&until=90m&source=chat").json()
    assert body["since"].endswith("Z") and body["until"].endswith("Z")
    (chat,) = body["sources"]
    assert chat["total"] == 2  # r1, r2


def test_report_is_the_query_layers_report(client: TestClient) -> None:
    body = client.get("/api/report").json()
    by = {s["source"]: s for s in body["sources"]}
    assert by["chat"]["started"] == 3  # r1 is older than the default 24 h
    assert by["heartbeat"]["open"] == 2
    assert "hang_rate" in by["skill"] and "first_item_p95_ms" in by["skill"]
    everything = client.get("/api/report?since=7d").json()
    assert {s["source"]: s["started"] for s in everything["sources"]}["chat"] == 4


# -- badges -------------------------------------------------------------------------------


def test_svg_badge_shows_the_latest_status_in_its_colour(client: TestClient) -> None:
    r = client.get("/badge/skill.svg")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/svg+xml"
    assert ">error<" in r.text and "#b91c1c" in r.text  # r7, the newest skill run
    ref = client.get("/badge/heartbeat.svg?source_ref=inbox").text
    assert ">inbox<" in ref and ">running<" in ref and "#2563eb" in ref
    none = client.get("/badge/nothing.svg").text
    assert ">no runs<" in none and "#6b7280" in none


def test_badge_text_is_escaped(client: TestClient, seeded: SqlStore) -> None:
    """A source_ref is user data: it never becomes markup in the SVG."""
    evil = '<script>alert(1)</script>"&'
    add_run(seeded, "evil", "chat", source_ref=evil, started=ago(seconds=1))
    r = client.get("/badge/chat.svg", params={"source_ref": evil})
    assert "<script>" not in r.text
    assert "&lt;script&gt;" in r.text


def test_shields_json_badge(client: TestClient) -> None:
    body = client.get("/badge/chat.json?session_id=s2").json()
    assert body == {"schemaVersion": 1, "label": "chat", "message": "canceled", "color": "#b45309"}
    assert client.get("/badge/nothing.json").json()["message"] == "no runs"


def test_badges_batch_answers_every_scope(client: TestClient) -> None:
    r = client.get(
        "/api/badges",
        params=[
            ("scope", s)
            for s in ["chat", "heartbeat:inbox", "chat::s1", "skill:never", "chat:turn:s3"]
        ],
    )
    assert r.status_code == 200
    got = {b["scope"]: b for b in r.json()["badges"]}
    assert got["chat"]["status"] == "success" and got["chat"]["run_id"] == "r9"
    assert got["heartbeat:inbox"]["run_id"] == "r5"
    assert got["heartbeat:inbox"]["source_ref"] == "inbox"
    assert got["chat::s1"]["run_id"] == "r2" and got["chat::s1"]["session_id"] == "s1"
    assert got["chat::s1"]["source_ref"] is None
    assert got["skill:never"]["status"] is None and got["skill:never"]["run_id"] is None
    assert got["chat:turn:s3"]["run_id"] == "r9"
    assert client.get("/api/badges").json() == {"badges": []}


def test_badge_js_uses_the_python_colour_table(client: TestClient) -> None:
    """One colour per status everywhere: badge.js's table is the server's."""
    import re

    from exectrack.server._badges import STATUS_COLOURS

    r = client.get("/static/badge.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    table = dict(re.findall(r'^\s+(\w+): "(#[0-9a-f]{6})",$', r.text, re.MULTILINE))
    assert table == STATUS_COLOURS


# -- reads through a tracker, store failures ------------------------------------------------


def test_a_tracker_is_flushed_before_each_read(db_url: str, client_for: Client) -> None:
    """With the async write path, a run finished just before the request is listed."""
    tracker = ExecutionTracker(db_url, strict=True)
    try:
        c = client_for(create_app(tracker))
        with tracker.with_run("chat", "turn"):
            pass
        assert [r["status"] for r in c.get("/api/runs").json()["runs"]] == ["success"]
    finally:
        tracker.close()


def test_a_trackers_clock_sets_the_window(db_url: str, client_for: Client) -> None:
    """since=1h is one hour before the tracker's clock, not the wall clock."""
    clock = FakeClock(ago(days=10))
    tracker = ExecutionTracker(db_url, strict=True, clock=clock)
    try:
        with tracker.with_run("skill"):
            pass
        c = client_for(create_app(tracker))
        assert len(c.get("/api/runs?since=1h").json()["runs"]) == 1
        clock.advance(7200)
        assert c.get("/api/runs?since=1h").json()["runs"] == []
    finally:
        tracker.close()


def test_a_failing_store_is_a_503_not_a_500(seeded: SqlStore, client_for: Client) -> None:
    failing = FailingStore(seeded, fail={"list_runs", "aggregate", "get"})
    c = client_for(create_app(failing), raise_server_exceptions=False)
    for url in ("/api/runs", "/api/stats", "/api/runs/r1"):
        r = c.get(url)
        assert r.status_code == 503, url
        assert r.json()["error"]["code"] == "store_unavailable"
        assert "injected" not in r.text  # no driver or store text leaks
    metrics = c.get("/metrics")
    assert metrics.status_code == 200  # the process's own figures still go out
    assert "exectrack_store_up 0.0" in metrics.text
    assert "exectrack_server_store_errors_total 4.0" in metrics.text
    assert "exectrack_runs{" not in metrics.text


def test_create_app_refuses_what_it_cannot_serve(store: SqlStore) -> None:
    with pytest.raises(InvalidArgumentError):
        create_app("sqlite:///runs.db")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        create_app(store, live_interval=0)


def test_reaper_finishes_abandoned_runs_while_the_app_runs(
    store: SqlStore, client_for: Client
) -> None:
    """create_app(reaper=True): a run whose lease ran out ends error/abandoned."""
    from exectrack._model import datetime_to_us

    add_run(store, "stale", "heartbeat", status=RunStatus.RUNNING, owner="gone-host:1:1",
            lease_until=datetime_to_us(ago(minutes=5)))  # fmt: skip
    from .conftest import wait_until

    with client_for(create_app(store, reaper=True)):
        run = wait_until(
            lambda: (r := store.get("stale")) is not None and r.is_terminal and r,
            10,
            "the stale run reaped",
        )
    assert run.status is RunStatus.ERROR and run.error_code == "abandoned"


def test_the_reaper_loop_folds_what_writers_left_unfolded(
    store: SqlStore, client_for: Client
) -> None:
    """Runs a writer never folded (fewer than its 2,000 changes) are folded by the
    served app's reaper loop, and the stats read the same before and after."""
    store.fold_every = 10**9
    for i in range(5):
        add_run(store, f"r{i}", "chat")
    since = {"since": "2020-01-01T00:00:00Z"}
    before = client_for(create_app(store)).get("/api/stats", params=since).json()
    assert before["sources"][0]["total"] == 5
    from .conftest import wait_until

    with client_for(create_app(store, reaper=True)) as c:
        app_state = c.app.state.exectrack  # type: ignore[attr-defined]
        wait_until(lambda: app_state.reaper.folded == 5, 10, "the runs folded")
        assert c.get("/api/stats", params=since).json() == before
    assert store.fold_rollups() == 0


def test_a_mounted_app_starts_its_reaper_on_the_first_request(
    store: SqlStore, client_for: Client
) -> None:
    """A mounted app gets no lifespan events: its first request starts the reaper."""
    from fastapi import FastAPI

    from exectrack._model import datetime_to_us

    from .conftest import wait_until

    add_run(store, "stale", "heartbeat", status=RunStatus.RUNNING, owner="gone-host:1:1",
            lease_until=datetime_to_us(ago(minutes=5)))  # fmt: skip
    outer = FastAPI()
    app = create_app(store, reaper=True)
    outer.mount("/runs", app)
    c = client_for(outer)
    try:
        assert store.get("stale").status is RunStatus.RUNNING  # type: ignore[union-attr]
        assert c.get("/runs/api/runs/latest").status_code == 200
        wait_until(lambda: store.get("stale").is_terminal, 10, "the stale run reaped")  # type: ignore[union-attr]
    finally:
        app.state.exectrack.reaper.stop()


def test_an_unknown_path_is_a_404_with_the_error_shape(client: TestClient) -> None:
    r = client.get("/api/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
