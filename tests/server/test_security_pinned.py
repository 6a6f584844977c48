"""The security middleware driven as ASGI, message by message: exact statuses,
header names and values, bodies, what the app behind it receives, and which paths
and tokens pass. (HTTP clients fold header-name case and hide missing bodies; the
ASGI messages do not.)"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from exectrack.server._security import CSP, SecurityMiddleware

SECURE = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
NEEDS_TOKEN = "a valid token is required: Authorization: Bearer <token> or ?token=<token>"


class App:
    """The app behind the middleware: records what it got, answers 200 "ok"."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.calls: list[tuple[dict[str, Any], Any]] = []
        self.headers = headers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append((scope, receive))
        start: dict[str, Any] = {"type": "http.response.start", "status": 200}
        if self.headers is not None:
            start["headers"] = self.headers
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


def call(middleware: SecurityMiddleware, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    anyio.run(middleware, scope, _receive, send)
    return sent


def http(
    path: str = "/api/runs",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    root_path: str = "",
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": headers or [],
        "query_string": query,
    }


def _json_answer(status: int, body: dict[str, Any], *extra: tuple[bytes, bytes]) -> list[Any]:
    data = json.dumps(body).encode()
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *extra,
                *SECURE,
            ],
        },
        {"type": "http.response.body", "body": data},
    ]


def test_a_request_without_the_token_gets_exactly_this_401() -> None:
    app = App()
    sent = call(SecurityMiddleware(app, "s3cret"), http())
    body = {"error": {"code": "unauthorized", "parameter": None, "message": NEEDS_TOKEN}}
    assert sent == _json_answer(401, body, (b"www-authenticate", b'Bearer realm="exectrack"'))
    assert app.calls == []


def test_a_write_gets_exactly_this_405() -> None:
    app = App()
    sent = call(SecurityMiddleware(app, None), http(method="DELETE"))
    message = "DELETE is not allowed: the API is read-only"
    body = {"error": {"code": "method_not_allowed", "parameter": None, "message": message}}
    assert sent == _json_answer(405, body, (b"allow", b"GET, HEAD, OPTIONS"))
    assert app.calls == []


def test_options_is_an_empty_204_naming_the_methods() -> None:
    app = App()
    sent = call(SecurityMiddleware(app, None), http(method="OPTIONS"))
    assert sent == [
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [(b"allow", b"GET, HEAD, OPTIONS"), *SECURE],
        },
        {"type": "http.response.body", "body": b""},
    ]
    assert app.calls == []


def test_head_is_the_gets_answer_without_its_body() -> None:
    app = App(headers=[(b"content-type", b"text/plain")])
    sent = call(SecurityMiddleware(app, None), http(method="HEAD"))
    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), *SECURE],
        },
        {"type": "http.response.body", "body": b""},
    ]
    [(scope, receive)] = app.calls
    assert scope["method"] == "GET" and receive is _receive


def test_get_reaches_the_app_with_its_own_receive_and_secure_headers() -> None:
    app = App(headers=[(b"x-frame-options", b"SAMEORIGIN"), (b"content-type", b"text/plain")])
    sent = call(SecurityMiddleware(app, None), http())
    assert sent[0]["headers"] == [(b"content-type", b"text/plain"), *SECURE]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}
    [(scope, receive)] = app.calls
    assert scope["method"] == "GET" and receive is _receive


def test_a_response_start_without_headers_still_gets_the_secure_ones() -> None:
    sent = call(SecurityMiddleware(App(), None), http())
    assert sent[0] == {"type": "http.response.start", "status": 200, "headers": SECURE}


@pytest.mark.parametrize(
    ("headers", "query", "token", "passes"),
    [
        ([(b"authorization", b"Bearer s3cret")], b"", "s3cret", True),
        ([(b"authorization", b"bearer s3cret")], b"", "s3cret", True),
        ([(b"authorization", b"Bearer   s3cret  ")], b"", "s3cret", True),
        ([(b"authorization", b"Bearer two words")], b"", "two words", True),
        ([(b"authorization", b"Basic s3cret")], b"", "s3cret", False),
        ([(b"authorization", b"Bearer ")], b"", "s3cret", False),
        ([(b"authorization", b"Bearer wrong")], b"", "s3cret", False),
        ([(b"x-token", b"s3cret")], b"", "s3cret", False),
        ([], b"token=s3cret", "s3cret", True),
        ([], b"limit=5&token=s3cret", "s3cret", True),
        ([], b"token=%C3%A9t%C3%A9", "\u00e9t\u00e9", True),  # percent-encoded UTF-8
        ([], b"token=", "s3cret", False),
        ([], b"token=&token=s3cret", "s3cret", False),  # the first token= is the one
        ([], b"tokens=s3cret", "s3cret", False),
        ([(b"authorization", b"Bearer s3cret")], b"token=wrong", "s3cret", True),
    ],
)
def test_which_tokens_pass(
    headers: list[tuple[bytes, bytes]], query: bytes, token: str, passes: bool
) -> None:
    app = App()
    sent = call(SecurityMiddleware(app, token), http(headers=headers, query=query))
    assert (sent[0]["status"], len(app.calls)) == ((200, 1) if passes else (401, 0))


def test_a_scope_without_headers_or_query_has_no_token() -> None:
    scope = {"type": "http", "method": "GET", "path": "/api/runs"}
    assert call(SecurityMiddleware(App(), "s3cret"), scope)[0]["status"] == 401
    public = {"type": "http", "method": "GET"}  # no path: the panel's root
    assert call(SecurityMiddleware(App(), "s3cret"), public)[0]["status"] == 200


@pytest.mark.parametrize(
    ("path", "root_path", "public"),
    [
        ("/", "", True),
        ("", "", True),
        ("/static/panel.js", "", True),
        ("/static/../api/runs", "", False),
        ("/static", "", False),
        ("/api/runs", "", False),
        ("/index.html", "", False),
        ("/runs/", "/runs", True),
        ("/runs", "/runs", True),
        ("/runs/static/panel.js", "/runs", True),
        ("/runs/api/runs", "/runs", False),
        ("/abcd/", "/runs", False),  # a path outside the mount is not cut by its length
        ("/api/runs", "/runs", False),  # a proxy that removed the prefix
        ("/static/format.js", "/runs", True),
    ],
)
def test_which_paths_are_public(path: str, root_path: str, public: bool) -> None:
    app = App()
    sent = call(SecurityMiddleware(app, "s3cret"), http(path=path, root_path=root_path))
    assert sent[0]["status"] == (200 if public else 401)


def test_other_scopes_pass_through_untouched_and_only_http_is_counted() -> None:
    seen: list[tuple[dict[str, Any], Any, Any]] = []
    counted: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def send(message: dict[str, Any]) -> None: ...

    middleware = SecurityMiddleware(app, "s3cret", on_request=lambda: counted.append(1))
    scope = {"type": "lifespan"}
    anyio.run(middleware, scope, _receive, send)
    assert seen == [(scope, _receive, send)] and counted == []
    call(middleware, http(path="/"))
    call(middleware, http())
    assert counted == [1, 1]
