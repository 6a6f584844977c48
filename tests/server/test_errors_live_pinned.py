"""The API's error handlers and the change stream's event loop pinned to exact output:
each failure's status, code, parameter and message, what the log says about a store
failure, the stream's events byte for byte, its counters and how an outage is
reported once and resumed from the same cursor."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Header, Query
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from exectrack import ExecutionTracker, InvalidArgumentError, StoreError, query
from exectrack.server._errors import ApiError, _validation_error, install_handlers
from exectrack.server._live import _events
from exectrack.server._state import ServerState

SECRET = "postgresql://app:hunter2@db.internal/runs"


class _State:
    store_errors = 0


def _app(with_state: bool = True) -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    if with_state:
        app.state.exectrack = _State()

    @app.get("/api-error")
    def api_error() -> None:
        raise ApiError(418, "short and stout", parameter="pot")

    @app.get("/api-error-coded")
    def api_error_coded() -> None:
        raise ApiError(409, "taken", code="conflict")

    @app.get("/http-error")
    def http_error() -> None:
        raise HTTPException(404, detail="no such thing", headers={"x-why": "gone"})

    @app.get("/invalid")
    def invalid() -> None:
        raise InvalidArgumentError("limit=0: must be between 1 and 500")

    @app.get("/store")
    def store() -> None:
        raise StoreError(f"read failed on {SECRET}: connection refused")

    @app.get("/typed/{item}")
    def typed(item: int, n: int = Query(1), x_count: int = Header(1)) -> dict[str, int]:
        return {"item": item, "n": n, "x_count": x_count}

    return app


def _get(app: FastAPI, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path, **kwargs)

    return anyio.run(go)


def _error(code: str, message: str, parameter: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "parameter": parameter, "message": message}}


def test_an_api_error_answers_its_status_code_parameter_and_message() -> None:
    r = _get(_app(), "/api-error")
    assert (r.status_code, r.json()) == (418, _error("http_error", "short and stout", "pot"))
    r = _get(_app(), "/api-error-coded")
    assert (r.status_code, r.json()) == (409, _error("conflict", "taken"))
    assert str(ApiError(400, "bad")) == "bad"
    assert ApiError(404, "x").code == "not_found"


def test_an_http_error_keeps_its_detail_and_headers() -> None:
    r = _get(_app(), "/http-error")
    assert (r.status_code, r.json()) == (404, _error("not_found", "no such thing"))
    assert r.headers["x-why"] == "gone"
    r = _get(_app(), "/no/such/route")
    assert (r.status_code, r.json()) == (404, _error("not_found", "Not Found"))


def test_a_query_layer_refusal_is_a_400_with_its_message() -> None:
    r = _get(_app(), "/invalid")
    expected = _error("invalid_parameter", "limit=0: must be between 1 and 500")
    assert (r.status_code, r.json()) == (400, expected)


def test_a_store_failure_is_a_503_counted_and_logged_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app()
    with caplog.at_level(logging.WARNING, logger="exectrack.server._errors"):
        r = _get(app, "/store")
    expected = _error("store_unavailable", "the run store is unavailable; try again")
    assert (r.status_code, r.json()) == (503, expected)
    assert app.state.exectrack.store_errors == 1
    [record] = [rec for rec in caplog.records if rec.name == "exectrack.server._errors"]
    text = record.getMessage()
    assert text.startswith("exectrack server: the store failed: read failed on ")
    assert "connection refused" in text and "hunter2" not in text
    bare = _get(_app(with_state=False), "/store")  # an app without the server's state
    assert bare.status_code == 503


@pytest.mark.parametrize(
    ("path", "headers", "parameter", "starts"),
    [
        ("/typed/x", {}, "item", "item: "),
        ("/typed/1?n=many", {}, "n", "n: "),
        ("/typed/1", {"x-count": "lots"}, "x-count", "x-count: "),
    ],
)
def test_a_validation_error_names_where_it_is(
    path: str, headers: dict[str, str], parameter: str, starts: str
) -> None:
    r = _get(_app(), path, headers=headers)
    body = r.json()["error"]
    assert (r.status_code, body["code"], body["parameter"]) == (400, "invalid_parameter", parameter)
    assert body["message"].startswith(starts) and "integer" in body["message"]


def test_validation_errors_without_a_place_or_a_message() -> None:
    bare = _validation_error(RequestValidationError([]))
    assert (bare.status, bare.message, bare.parameter) == (400, "invalid request", None)
    nothing = _validation_error(RequestValidationError([{}]))
    assert (nothing.message, nothing.parameter) == ("invalid request", None)
    body = _validation_error(RequestValidationError([{"loc": ("body", "x"), "msg": "bad"}]))
    assert (body.message, body.parameter) == ("bad", None)
    short = _validation_error(RequestValidationError([{"loc": ("query",), "msg": "bad"}]))
    assert (short.message, short.parameter) == ("bad", None)


# -- the change stream's loop ---------------------------------------------------------


@pytest.fixture
def runs(tmp_path: Any) -> Iterator[list[Any]]:
    tracker = ExecutionTracker(f"sqlite:///{tmp_path / 'r.db'}", durability="sync")
    ids = [tracker.start("skill", f"r{i}").id for i in range(2)]
    yield [tracker.get_run(i) for i in ids]
    tracker.close()


def _state(streams: int = 0) -> ServerState:
    return ServerState(reader=None, token=None, live_interval=0.0, streams=streams)  # type: ignore[arg-type]


def test_the_stream_sends_each_change_page_as_one_compact_event(runs: list[Any]) -> None:
    state = _state(streams=5)
    pages = [query.Changes(runs[1:], "c2"), query.Changes([], "c2")]
    asked: list[tuple[str, int]] = []

    def read(after: str, limit: int) -> query.Changes:
        asked.append((after, limit))
        return pages.pop(0)

    async def go() -> list[bytes]:
        events = _events(state, read, query.Changes(runs[:1], "c1"))
        out = [(await events.__anext__()).encode()]
        assert state.streams == 6
        out.append((await events.__anext__()).encode())
        state.stopping.set()  # next time it is caught up, the loop ends
        with pytest.raises(StopAsyncIteration):
            await events.__anext__()
        return out

    first, second = anyio.run(go)
    body = json.dumps({"runs": [runs[0].to_dict()], "cursor": "c1"}, separators=(",", ":"))
    assert first == f"id: c1\nevent: runs\ndata: {body}\n\n".encode()
    assert second.startswith(b'id: c2\nevent: runs\ndata: {"runs":[{')
    assert asked == [("c1", 500)]  # the page after c2 was never asked: stopping
    assert state.streams == 5


def test_an_outage_is_logged_once_counted_each_time_and_resumed_from_the_cursor(
    runs: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    state = _state()
    outcomes: list[Any] = [
        StoreError("down 1"),
        StoreError("down 2"),
        query.Changes(runs[1:], "c2"),
        StoreError("down 3"),
        query.Changes([], "c2"),
    ]
    asked: list[str] = []

    def read(after: str, limit: int) -> query.Changes:
        asked.append(after)
        outcome = outcomes.pop(0)
        if not outcomes:
            state.stopping.set()  # the app's lifespan ends after this poll
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    async def go() -> bytes:
        events = _events(state, read, query.Changes([], "c1"))
        got = (await events.__anext__()).encode()  # after two failed polls
        with pytest.raises(StopAsyncIteration):  # one more outage, then caught up
            await events.__anext__()
        return got

    with caplog.at_level(logging.WARNING, logger="exectrack.server._live"):
        got = anyio.run(go)
    assert got.startswith(b"id: c2\nevent: runs\n")
    assert asked == ["c1", "c1", "c1", "c2", "c2"]
    assert state.store_errors == 3
    logged = [r.getMessage() for r in caplog.records if r.name == "exectrack.server._live"]
    assert logged == [
        "exectrack server: the change stream cannot read: down 1",
        "exectrack server: the change stream cannot read: down 3",
    ]
