"""``create_app``: the runs panel's ASGI app (API, badges, /metrics, static files)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from exectrack import ExecutionTracker, InvalidArgumentError, Store, query
from exectrack._config import Settings
from exectrack._echo import echo

from . import _models as m
from ._api import _ERRORS, api_router
from ._badges import badge_json, badge_svg, label_and_message
from ._errors import ApiError, install_handlers
from ._live import live_router
from ._metrics import metrics_text, new_registry
from ._params import run_filter
from ._reader import Reader
from ._security import SecurityMiddleware
from ._state import Reaper, ServerState
from ._static import index_html, static_file

__all__ = ["create_app"]

_NO_STORE = {"Cache-Control": "no-store"}
_BadgeSource = Annotated[str, Path(max_length=64, description="the run source")]
_BadgeRef = Annotated[str | None, Query(max_length=512)]


def _content(kind: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {kind: {}}}, **_ERRORS}


def create_app(
    tracker_or_store: ExecutionTracker | Store,
    *,
    token: str | None = None,
    reaper: bool = False,
    live_interval: float = 1.0,
) -> FastAPI:
    """The runs panel and its HTTP API as an ASGI app, served alone or mounted in
    another app (``outer.mount("/runs", create_app(tracker))``); read-only.

    ``tracker_or_store``: a tracker (every read flushes its queued writes first) or a
    store (read as it is). ``token`` (default: ``EXECTRACK_TOKEN``): when set, every
    request must carry it (``Authorization: Bearer <token>`` or ``?token=``);
    ``token=""`` serves without one whatever the environment says.
    ``reaper``: finish abandoned and overdue runs while the app runs.
    ``live_interval``: seconds between two polls of the change-feed stream.
    """
    if not live_interval > 0:
        raise InvalidArgumentError(f"live_interval={echo(live_interval)}: must be > 0 seconds")
    reader = Reader(tracker_or_store)
    if token is None:
        token = Settings.from_env().token
    state = ServerState(
        reader=reader,
        token=token or None,
        live_interval=float(live_interval),
        reaper=Reaper(reader) if reaper else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.stopping.clear()
        if state.reaper is not None:
            state.reaper.ensure_started()
        try:
            yield
        finally:
            state.stopping.set()
            if state.reaper is not None:
                await run_in_threadpool(state.reaper.stop)

    app = FastAPI(
        title="exectrack runs",
        version=_version(),
        description="Read-only HTTP API of the exectrack runs panel.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.exectrack = state
    install_handlers(app)
    app.include_router(live_router(state))  # before api/runs/{run_id}
    app.include_router(api_router(state))
    registry = new_registry(state)

    # A mounted app gets no lifespan events: its first request starts the reaper.
    on_request = None if state.reaper is None else state.reaper.ensure_started
    app.add_middleware(SecurityMiddleware, token=state.token, on_request=on_request)

    def badge_run(source: str, source_ref: str | None, session_id: str | None) -> Any:
        flt = run_filter(reader.now(), source=source, source_ref=source_ref, session_id=session_id)
        reader.sync()
        run = query.latest_run(reader.store, flt)
        return label_and_message(source, source_ref, run)

    @app.get(
        "/badge/{source}.svg",
        response_class=Response,
        responses=_content("image/svg+xml"),
    )
    def badge_svg_route(
        source: _BadgeSource, source_ref: _BadgeRef = None, session_id: _BadgeRef = None
    ) -> Response:
        """The latest status of the scope as an SVG badge."""
        label, message, colour = badge_run(source, source_ref, session_id)
        return Response(
            badge_svg(label, message, colour), media_type="image/svg+xml", headers=_NO_STORE
        )

    @app.get("/badge/{source}.json", response_model=m.ShieldsOut, responses=_ERRORS)
    def badge_json_route(
        source: _BadgeSource, source_ref: _BadgeRef = None, session_id: _BadgeRef = None
    ) -> JSONResponse:
        """The latest status of the scope as a shields.io endpoint badge."""
        label, message, colour = badge_run(source, source_ref, session_id)
        return JSONResponse(badge_json(label, message, colour), headers=_NO_STORE)

    @app.get(
        "/metrics",
        response_class=Response,
        responses=_content("text/plain"),
    )
    def metrics() -> Response:
        """Prometheus metrics of the runs and of this process."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics_text(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def panel(request: Request) -> HTMLResponse:
        return HTMLResponse(index_html(request.scope.get("root_path", "")), headers=_NO_STORE)

    @app.get("/static/{path:path}", include_in_schema=False)
    def static(path: str) -> Response:
        found = static_file(path)
        if found is None:
            raise ApiError(404, "no such file")
        content, kind = found
        return Response(content, media_type=kind, headers={"Cache-Control": "no-cache"})

    _finish_schema(app, with_token=state.token is not None)
    return app


def _finish_schema(app: FastAPI, *, with_token: bool) -> None:
    """The published schema also says: ``api/runs/latest`` and ``api/runs/changes``
    are routes, not run ids (so no client, or fuzzer, expects a run there); and, when
    a token is required, how to send it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for param in schema["paths"]["/api/runs/{run_id}"]["get"].get("parameters", []):
            if param.get("name") == "run_id":
                param["schema"]["not"] = {"enum": ["latest", "changes"]}
        if with_token:
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "token": {"type": "apiKey", "in": "query", "name": "token"},
            }
            schema["security"] = [{"bearer": []}, {"token": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    from exectrack import __version__

    return __version__
