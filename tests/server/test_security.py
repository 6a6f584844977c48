"""Security and serving: the token, read-only methods, no CORS, the headers every
response carries, static files without traversal, and the app mounted under a prefix."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount

from exectrack.server import create_app
from exectrack.server._security import CSP
from exectrack.stores._sql import SqlStore

from .conftest import add_run

Client = Callable[..., TestClient]
TOKEN = "s3cret-t0ken"
URLS = [
    "/api/runs",
    "/api/runs/r1",
    "/api/runs/latest",
    "/api/runs/changes",
    "/api/stats",
    "/api/report",
    "/api/badges?scope=chat",
    "/badge/chat.svg",
    "/badge/chat.json",
    "/metrics",
    "/openapi.json",
]
# Only refused: with the token, the stream would stream on.
REFUSED = [*URLS, "/api/runs/changes/stream", "/static/../api/runs", "/staticx"]


@pytest.fixture
def guarded(store: SqlStore, client_for: Client) -> TestClient:
    add_run(store, "r1")
    return client_for(create_app(store, token=TOKEN))


@pytest.mark.parametrize("url", REFUSED)
def test_without_the_token_every_request_is_a_401(guarded: TestClient, url: str) -> None:
    r = guarded.get(url)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": TOKEN},
    ],
)
def test_a_wrong_token_is_a_401(guarded: TestClient, headers: dict[str, str]) -> None:
    assert guarded.get("/api/runs", headers=headers).status_code == 401
    assert guarded.get("/api/runs?token=wrong").status_code == 401


def test_the_right_token_in_a_header_or_the_query(guarded: TestClient) -> None:
    r = guarded.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert [run["id"] for run in r.json()["runs"]] == ["r1"]
    assert guarded.get("/api/runs", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200
    assert guarded.get(f"/api/runs?token={TOKEN}").status_code == 200
    assert guarded.get(f"/badge/chat.svg?token={TOKEN}").status_code == 200


def test_the_token_comes_from_the_environment(
    store: SqlStore, client_for: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECTRACK_TOKEN", "from-env")
    c = client_for(create_app(store))
    assert c.get("/api/runs").status_code == 401
    assert c.get("/api/runs?token=from-env").status_code == 200
    explicit = client_for(create_app(store, token="explicit"))
    assert explicit.get("/api/runs?token=from-env").status_code == 401


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT"])
@pytest.mark.parametrize("url", ["/api/runs", "/api/runs/r1", "/metrics", "/", "/nowhere"])
def test_writes_are_405(store: SqlStore, client_for: Client, method: str, url: str) -> None:
    r = client_for(create_app(store)).request(method, url, content=b"{}")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "GET, HEAD, OPTIONS"


def test_head_is_get_without_a_body(guarded: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = guarded.head("/api/runs", headers=auth)
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["content-length"]) == len(guarded.get("/api/runs", headers=auth).content)


def test_no_cors_even_for_a_preflight_from_another_origin(
    store: SqlStore, client_for: Client
) -> None:
    c = client_for(create_app(store))
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    for r in (c.options("/api/runs", headers=origin), c.get("/api/runs", headers=origin)):
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    assert c.options("/api/runs").status_code == 204


@pytest.mark.parametrize("url", [*URLS, "/api/runs?limit=0", "/api/runs/nope", "/static/badge.js"])
def test_every_response_carries_nosniff_and_the_csp(
    store: SqlStore, client_for: Client, url: str
) -> None:
    r = client_for(create_app(store)).get(url)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["referrer-policy"] == "no-referrer"


def test_the_panel_page_is_html_with_a_strict_csp(store: SqlStore, client_for: Client) -> None:
    r = client_for(create_app(store)).get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert '<base href="/">' in r.text


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/..%2f_app.py",
        "/static/%2e%2e/_app.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/.hidden",
        "/static//etc/passwd",
        "/static/%2e%2e",
        "/static/nothing.js",
        "/static/badge.js/",
        "/static/badge.js%00.png",
    ],
)
def test_static_files_never_leave_the_folder(
    store: SqlStore, client_for: Client, path: str
) -> None:
    r = client_for(create_app(store)).get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_mounted_under_a_prefix_everything_still_works(store: SqlStore, client_for: Client) -> None:
    """outer.mount("/runs", app): API, badges, static files, the OpenAPI schema (with
    its server URL) and the panel (with a <base> at the mount point) all answer under
    the prefix; /runs redirects to /runs/."""
    add_run(store, "r1")
    outer = FastAPI()

    @outer.get("/")
    def home() -> dict[str, str]:
        return {"app": "host"}

    outer.mount("/runs", create_app(store))
    c = client_for(outer)
    assert c.get("/").json() == {"app": "host"}
    assert [r["id"] for r in c.get("/runs/api/runs").json()["runs"]] == ["r1"]
    assert c.get("/runs/api/runs/r1").json()["run"]["id"] == "r1"
    assert c.get("/runs/badge/chat.svg").headers["content-type"] == "image/svg+xml"
    assert c.get("/runs/static/badge.js").status_code == 200
    schema = c.get("/runs/openapi.json").json()
    assert schema["servers"] == [{"url": "/runs"}]
    assert "/api/runs" in schema["paths"]
    page = c.get("/runs/")
    assert '<base href="/runs/">' in page.text
    redirect = c.get("/runs", follow_redirects=False)
    assert redirect.status_code in (307, 308)
    assert redirect.headers["location"].endswith("/runs/")
    assert c.post("/runs/api/runs").status_code == 405


def test_openapi_publishes_every_endpoint(store: SqlStore, client_for: Client) -> None:
    paths = client_for(create_app(store)).get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/api/runs",
        "/api/runs/latest",
        "/api/runs/{run_id}",
        "/api/stats",
        "/api/report",
        "/api/badges",
        "/badge/{source}.svg",
        "/badge/{source}.json",
        "/metrics",
    }
    assert all(set(ops) == {"get"} for ops in paths.values())


def test_the_schema_says_how_to_send_the_token(guarded: TestClient) -> None:
    schema = guarded.get(f"/openapi.json?token={TOKEN}").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {"token": []} in schema["security"]


def test_the_panel_page_and_static_files_need_no_token(store: SqlStore, client_for: Client) -> None:
    """A browser loads the page's scripts and styles by <script>/<link>, which carry
    no token; they hold code, never run data, so they are served without one (alone
    and mounted). Everything with run data still needs it."""
    add_run(store, "r1")
    alone = client_for(create_app(store, token=TOKEN))
    assert alone.get("/").status_code == 200
    assert alone.get("/static/badge.js").status_code == 200
    assert "r1" not in alone.get("/").text
    outer = Starlette(routes=[Mount("/runs", app=create_app(store, token=TOKEN))])
    mounted = client_for(outer)
    assert mounted.get("/runs/").status_code == 200
    assert mounted.get("/runs/static/badge.js").status_code == 200
    assert mounted.get("/runs/api/runs").status_code == 401
    assert mounted.get("/runs/static/../api/runs").status_code in (401, 404)
