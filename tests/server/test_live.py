"""The change feed: api/runs/changes in-process, and its Server-Sent Events stream on a
real uvicorn server (a run finished while a client is connected arrives; a client
that goes away leaves no stream or task behind)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from exectrack import ExecutionTracker, RunStatus
from exectrack.server import create_app
from exectrack.stores import FinishRun
from exectrack.stores._sql import SqlStore

from .conftest import add_run, uvicorn_thread, wait_until

Client = Callable[..., TestClient]


def test_changes_report_new_runs_and_status_changes(store: SqlStore, client_for: Client) -> None:
    """From a page's changes_cursor, the feed returns runs created after it and runs
    whose status changed (each once, as it is now); then nothing until more changes."""
    c = client_for(create_app(store))
    add_run(store, "old", status=RunStatus.RUNNING)
    page = c.get("/api/runs").json()
    assert [r["id"] for r in page["runs"]] == ["old"]
    cursor = page["changes_cursor"]
    assert c.get(f"/api/runs/changes?after={cursor}").json() == {"runs": [], "cursor": cursor}
    from exectrack._model import now_us

    store.finish(FinishRun("old", RunStatus.ERROR, now_us(), error_code="boom"))
    add_run(store, "new")
    body = c.get(f"/api/runs/changes?after={cursor}").json()
    assert [(r["id"], r["status"]) for r in body["runs"]] == [("old", "error"), ("new", "success")]
    assert c.get(f"/api/runs/changes?after={body['cursor']}").json()["runs"] == []
    everything = c.get("/api/runs/changes").json()  # no cursor: from the start
    assert {r["id"] for r in everything["runs"]} == {"old", "new"}
    first = c.get("/api/runs/changes?limit=1").json()
    assert len(first["runs"]) == 1
    rest = c.get(f"/api/runs/changes?after={first['cursor']}").json()
    assert len(rest["runs"]) == 1 and rest["runs"][0]["id"] != first["runs"][0]["id"]


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/runs/changes?after=garbage", "after"),
        ("/api/runs/changes?after=" + "A" * 600, "after"),
        ("/api/runs/changes?limit=0", "limit"),
        ("/api/runs/changes?limit=501", "limit"),
        ("/api/runs/changes/stream?after=garbage", "after"),
    ],
)
def test_bad_change_cursors_are_400(
    store: SqlStore, client_for: Client, url: str, param: str
) -> None:
    r = client_for(create_app(store)).get(url)
    assert r.status_code == 400
    assert r.json()["error"]["parameter"] == param


def test_a_bad_last_event_id_is_400_naming_it(store: SqlStore, client_for: Client) -> None:
    r = client_for(create_app(store)).get(
        "/api/runs/changes/stream", headers={"Last-Event-ID": "nonsense"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["parameter"] == "Last-Event-ID"


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse the stream's events (comments included, as ``{"comment": ...}``)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            event[name] = value


@pytest.fixture
def live_tracker(db_url: str) -> Iterator[ExecutionTracker]:
    t = ExecutionTracker(db_url, strict=True)
    yield t
    t.close()


def test_stream_delivers_a_run_that_finishes_while_connected(
    live_tracker: ExecutionTracker,
) -> None:
    """Connected from a page's changes_cursor: the run's start and then its finish
    arrive as events whose id is the cursor to resume from."""
    app = create_app(live_tracker, live_interval=0.05)
    with (
        uvicorn_thread(app) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client,
    ):
        cursor = client.get("/api/runs").json()["changes_cursor"]
        handle = live_tracker.start("skill", "slow")
        seen: list[tuple[str, str]] = []
        with client.stream("GET", f"/api/runs/changes/stream?after={cursor}") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in events(response):
                if "comment" in event:
                    continue
                assert event["event"] == "runs"
                body = json.loads(event["data"])
                assert body["cursor"] == event["id"]
                seen += [(r["id"], r["status"]) for r in body["runs"]]
                if seen == [(handle.id, "running")]:
                    live_tracker.finish_success(handle)
                if (handle.id, "success") in seen:
                    break
        assert seen == [(handle.id, "running"), (handle.id, "success")]
        # Resuming from the last id (as a reconnecting EventSource does) replays nothing.
        resumed = client.get(f"/api/runs/changes?after={event['id']}").json()
        assert resumed["runs"] == []


def test_stream_resumes_from_last_event_id(live_tracker: ExecutionTracker) -> None:
    """A reconnecting EventSource sends Last-Event-ID; it wins over the URL's after."""
    app = create_app(live_tracker, live_interval=0.05)
    with live_tracker.with_run("chat", "first"):
        pass
    with (
        uvicorn_thread(app) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client,
    ):
        head = client.get("/api/runs").json()["changes_cursor"]
        with live_tracker.with_run("chat", "second"):
            pass
        headers = {"Last-Event-ID": head}
        with client.stream("GET", "/api/runs/changes/stream", headers=headers) as response:
            event = next(e for e in events(response) if "data" in e)
        refs = [r["source_ref"] for r in json.loads(event["data"])["runs"]]
        assert refs == ["second"]


def test_stream_sends_keepalive_comments(store: SqlStore) -> None:
    app = create_app(store, live_interval=0.05)
    app.state.exectrack.keepalive = 0.2
    with (
        uvicorn_thread(app) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client,
    ):
        head = client.get("/api/runs").json()["changes_cursor"]
        with client.stream("GET", f"/api/runs/changes/stream?after={head}") as response:
            first = next(events(response))
        assert first == {"comment": "keepalive"}


def test_a_dropped_client_leaves_no_stream_or_task_behind(store: SqlStore) -> None:
    """Clients that disconnect mid-stream: the server's stream count returns to zero
    and its event loop holds no more tasks than before they came."""
    app = create_app(store, live_interval=0.05)
    state = app.state.exectrack
    with uvicorn_thread(app) as server:
        loop = server.servers[0].get_loop()

        def tasks() -> int:
            async def count() -> int:
                return len(asyncio.all_tasks())

            return asyncio.run_coroutine_threadsafe(count(), loop).result(5)

        base = f"http://127.0.0.1:{server.port}"

        def connect_and_drop() -> None:
            with httpx.Client(base_url=base, timeout=10) as client:
                with client.stream("GET", "/api/runs/changes/stream") as response:
                    assert response.status_code == 200
                    wait_until(lambda: state.streams >= 1, 5, "the stream started")
            # the client and its connection are gone
            wait_until(lambda: state.streams == 0, 10, "the stream ended")

        connect_and_drop()  # sse-starlette starts one shutdown watcher per loop, once
        before = tasks()
        for _ in range(3):
            connect_and_drop()
        wait_until(lambda: tasks() <= before, 10, f"tasks back to {before}")


def test_many_changes_are_sent_in_pages_without_waiting(store: SqlStore) -> None:
    """More than one page of changes: the stream sends page after page at once."""
    for i in range(1200):
        add_run(store, f"r{i:04d}")
    # A 30 s wait between pages would hit the client's 10 s read timeout.
    app = create_app(store, live_interval=30)
    with (
        uvicorn_thread(app) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client,
    ):
        got: list[str] = []
        with client.stream("GET", "/api/runs/changes/stream") as response:
            for event in events(response):
                if "data" in event:
                    got += [r["id"] for r in json.loads(event["data"])["runs"]]
                if len(got) >= 1200:
                    break
        assert sorted(got) == [f"r{i:04d}" for i in range(1200)]


def test_head_on_the_stream_ends_at_the_headers(store: SqlStore) -> None:
    """HEAD gets the stream's headers and nothing keeps running: the stream count is
    back to zero and the same keep-alive connection answers the next request."""
    app = create_app(store, live_interval=0.05)
    with (
        uvicorn_thread(app) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client,
    ):
        r = client.head("/api/runs/changes/stream")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        wait_until(lambda: app.state.exectrack.streams == 0, 5, "the stream ended")
        assert client.get("/api/runs").status_code == 200


def test_the_stream_outlives_a_store_outage(store: SqlStore) -> None:
    """The store fails for a while: the client stays connected, and the run written
    meanwhile arrives once the store answers again."""
    from exectrack.testing import FailingStore

    failing = FailingStore(store, fail=set())
    app = create_app(failing, live_interval=0.05)
    with (
        uvicorn_thread(app) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client,
    ):
        head = client.get("/api/runs").json()["changes_cursor"]
        with client.stream("GET", f"/api/runs/changes/stream?after={head}") as response:
            failing.fail = {"changes"}
            wait_until(lambda: app.state.exectrack.store_errors >= 3, 10, "polls that failed")
            add_run(store, "meanwhile")
            failing.fail = set()
            event = next(e for e in events(response) if "data" in e)
        assert [r["id"] for r in json.loads(event["data"])["runs"]] == ["meanwhile"]
