"""The demo agent host serves the runs panel at /runs/ and shows latest-status
badges on its chat page, so ``exectrack demo`` shows everything."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from exectrack import ExecutionTracker
from exectrack.demo.app import create_app

Client = Callable[..., TestClient]


def test_the_demo_mounts_the_panel_and_its_page_shows_badges(
    tracker: ExecutionTracker, client_for: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECTRACK_TOKEN", "ignored-by-the-demo")  # the demo runs on loopback
    c = client_for(create_app(tracker))
    page = c.get("/").text
    assert '<script src="/runs/static/badge.js" defer></script>' in page
    assert page.count("<exectrack-badge ") == 4
    assert c.get("/runs/static/badge.js").status_code == 200
    with c.stream("POST", "/api/chat", json={"message": "hi", "session_id": "s-1"}) as r:
        assert r.status_code == 200
        r.read()
    tracker.flush()
    latest = c.get("/runs/api/runs/latest", params={"source": "chat", "session_id": "s-1"})
    assert latest.json()["run"]["status"] in ("success", "error")
    badges = c.get("/runs/api/badges", params=[("scope", "chat"), ("scope", "heartbeat:inbox")])
    got = {b["scope"]: b["status"] for b in badges.json()["badges"]}
    assert got["chat"] is not None and got["heartbeat:inbox"] is None
    assert c.get("/runs/").headers["content-type"].startswith("text/html")
