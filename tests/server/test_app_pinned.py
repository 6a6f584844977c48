"""``create_app`` pinned exactly: the published schema's own additions (run ids that
are routes, the token's two schemes), the app's metadata and defaults, the routes it
adds beside the API (badges, /metrics, the panel, static files) and their caching.

Each assertion is one a mutant of ``server/_app.py`` changed (``make mutate
MODULES=src/exectrack/server/_app.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

import exectrack
from exectrack import InvalidArgumentError, RunStatus, __version__
from exectrack.server import create_app
from exectrack.stores._sql import SqlStore

from .conftest import add_run

Client = Callable[..., TestClient]

ERROR_CODES = {"400", "401", "503"}


def _schema(client_for: Client, store: SqlStore, **kwargs: Any) -> dict[str, Any]:
    response = client_for(create_app(store, **kwargs)).get(
        "/openapi.json", headers={"Authorization": f"Bearer {kwargs.get('token') or ''}"}
    )
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def test_schema_metadata(
    client_for: Client, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Title, description and exectrack's own version (read when the app is made)."""
    info = _schema(client_for, store, token="")["info"]
    assert info == {
        "title": "exectrack runs",
        "version": __version__,
        "description": "Read-only HTTP API of the exectrack runs panel.",
    }
    monkeypatch.setattr(exectrack, "__version__", "9.8.7")
    assert _schema(client_for, store, token="")["info"]["version"] == "9.8.7"


def test_schema_says_latest_and_changes_are_not_run_ids(
    client_for: Client, store: SqlStore
) -> None:
    (param,) = _schema(client_for, store, token="")["paths"]["/api/runs/{run_id}"]["get"][
        "parameters"
    ]
    assert param["name"] == "run_id"
    assert param["schema"]["not"] == {"enum": ["latest", "changes"]}


def test_schema_without_a_token_names_no_scheme(client_for: Client, store: SqlStore) -> None:
    schema = _schema(client_for, store, token="")
    assert "security" not in schema
    assert "securitySchemes" not in schema["components"]


def test_schema_with_a_token_says_how_to_send_it(client_for: Client, store: SqlStore) -> None:
    schema = _schema(client_for, store, token="s3cret")
    assert schema["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "token": {"type": "apiKey", "in": "query", "name": "token"},
    }
    assert schema["security"] == [{"bearer": []}, {"token": []}]


@pytest.mark.parametrize(
    ("path", "kind"), [("/badge/{source}.svg", "image/svg+xml"), ("/metrics", "text/plain")]
)
def test_schema_of_the_non_json_routes(
    client_for: Client, store: SqlStore, path: str, kind: str
) -> None:
    """The SVG badge and /metrics publish their media type for 200, and the API's
    error answers beside it."""
    responses = _schema(client_for, store, token="")["paths"][path]["get"]["responses"]
    assert list(responses["200"]["content"]) == [kind]
    assert set(responses) >= ERROR_CODES


def test_no_interactive_docs(client_for: Client, store: SqlStore) -> None:
    """The app serves its schema and no Swagger or ReDoc page (they load from a CDN,
    which the panel never does)."""
    client = client_for(create_app(store, token=""))
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404


def test_live_interval_default_and_bounds(store: SqlStore) -> None:
    assert create_app(store, token="").state.exectrack.live_interval == 1.0
    assert create_app(store, token="", live_interval=3).state.exectrack.live_interval == 3.0
    for bad, shown in [(0, "0"), (-1.5, "-1.5"), (float("nan"), "nan")]:
        with pytest.raises(InvalidArgumentError) as caught:
            create_app(store, token="", live_interval=bad)
        assert str(caught.value) == f"live_interval={shown}: must be > 0 seconds"


def test_badges_and_panel_are_never_cached_static_files_revalidate(
    client_for: Client, store: SqlStore
) -> None:
    add_run(store, "r1", "skill", status=RunStatus.ERROR, source_ref="search")
    client = client_for(create_app(store, token=""))
    svg = client.get("/badge/skill.svg", params={"source_ref": "search"})
    assert (svg.status_code, svg.headers["content-type"]) == (200, "image/svg+xml")
    assert svg.headers["cache-control"] == "no-store"
    assert "error" in svg.text
    shields = client.get("/badge/skill.json", params={"source_ref": "search"})
    assert shields.headers["cache-control"] == "no-store"
    assert shields.json()["message"] == "error"
    panel = client.get("/")
    assert (panel.status_code, panel.headers["cache-control"]) == (200, "no-store")
    static = client.get("/static/badge.js")
    assert (static.status_code, static.headers["cache-control"]) == (200, "no-cache")
    missing = client.get("/static/nothing-here.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no such file"
