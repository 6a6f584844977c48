"""Pure ASGI middleware in front of every route: the access token, read-only
methods, and the headers every response carries."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.lowlevel

from ._errors import error_body

__all__ = ["CSP", "SecurityMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),  # a ?token= must not leak through links
    (b"x-frame-options", b"DENY"),
]
_ALLOW = b"GET, HEAD, OPTIONS"
_NEEDS_TOKEN = "a valid token is required: Authorization: Bearer <token> or ?token=<token>"


def _public(scope: Scope) -> bool:
    """The panel's page and static files hold code, never run data: a browser loads
    them by <script>/<link>, which carry no token (the page then sends its token with
    every request for data)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path in ("", "/") or (path.startswith("/static/") and ".." not in path)


def _token_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return str(credentials.strip())
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            return str(value)
    return None


class SecurityMiddleware:
    """401 without the token (when one is set), 405 for writes, 204 for OPTIONS
    (without any CORS header), HEAD answered as GET without a body, and nosniff,
    the CSP and no-referrer on every response."""

    def __init__(
        self, app: ASGIApp, token: str | None, on_request: Callable[[], None] | None = None
    ) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
        self.on_request = on_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.on_request is not None:
            self.on_request()

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k not in dict(_HEADERS)]
                message["headers"] = headers + _HEADERS
            await send(message)

        if self.token is not None and not _public(scope):
            given = _token_of(scope)
            if given is None or not hmac.compare_digest(given.encode(), self.token):
                await _json(
                    send_secure,
                    401,
                    error_body("unauthorized", _NEEDS_TOKEN),
                    [(b"www-authenticate", b'Bearer realm="exectrack"')],
                )
                return
        method = scope["method"]
        if method == "OPTIONS":
            await send_secure(
                {"type": "http.response.start", "status": 204, "headers": [(b"allow", _ALLOW)]}
            )
            await send_secure({"type": "http.response.body", "body": b""})
            return
        if method == "HEAD":
            await self._head(scope, receive, send_secure)
            return
        if method != "GET":
            await _json(
                send_secure,
                405,
                error_body("method_not_allowed", f"{method} is not allowed: the API is read-only"),
                [(b"allow", _ALLOW)],
            )
            return
        await self.app(scope, receive, send_secure)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The GET response's status and headers, no body; the app (a stream, say) is
        cancelled as soon as they went out, so nothing runs on after the answer."""
        async with anyio.create_task_group() as group:

            async def head_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await send(message)
                    await send({"type": "http.response.body", "body": b""})
                    group.cancel_scope.cancel()
                    await anyio.lowlevel.checkpoint()  # the cancellation lands here, in the app

            await self.app({**scope, "method": "GET"}, receive, head_send)


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
