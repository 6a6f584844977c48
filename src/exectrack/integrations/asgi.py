"""ASGI: a tracked streamed response ends its run when the response really ends.

One line in the app::

    app.add_middleware(ExectrackMiddleware)      # FastAPI / Starlette
    app = ExectrackMiddleware(app)               # any ASGI app

and a tracked stream as the body (``StreamingResponse(answer(q))`` with ``answer`` an
``@exectrack.with_run("chat")`` async generator; sse-starlette's
``EventSourceResponse`` alike). Then, per request:

| what happened to the response           | the stream's run | error_code            |
| --------------------------------------- | ---------------- | --------------------- |
| body sent to the end                    | success          |                       |
| the stream raised                       | error            | from the classifier   |
| the client went away mid-stream         | canceled         | ``client_disconnected`` |
| the server cancelled it (shutdown)      | canceled         | ``shutdown``          |

However the framework learns of the disconnect: an ``http.disconnect`` message (what
uvicorn sends, ASGI spec 2.3: Starlette then cancels the response's task group, so the
stream only sees a cancellation), a ``send`` that raises ``OSError`` (spec 2.4 servers:
Starlette raises ``ClientDisconnect``), or a stream that sse-starlette closes. A stream
the framework drops while it is suspended at a ``yield`` (Starlette cancels a response
that is waiting in ``send`` and never closes its body) is ended by the middleware when
the request ends, with the same cause. The run's ``items`` are the chunks the stream
handed to the response, ``first_item_ms`` the time to the first.

A request the server cancels while its client is still connected and its response
unfinished is taken for a server shutdown (uvicorn cancels requests only when its
graceful shutdown times out); after SIGTERM every cancellation is ``shutdown`` anyway.
A non-streaming handler whose client goes away while it runs keeps the status of its
work (the work was done); its runs still open when the middleware learns of the
disconnect get ``client_disconnected: true`` in their metadata (see
:class:`ExectrackMiddleware`).

Pure ASGI (no ``BaseHTTPMiddleware``), no framework import: it works with any ASGI
framework and server. Per chunk it costs one check of the message in ``send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import exectrack

__all__ = ["ExectrackMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DISCONNECT_NAMES = frozenset({"ClientDisconnect", "ClientDisconnected"})


class ExectrackMiddleware:
    """Pure ASGI middleware that gives every HTTP request a
    :func:`exectrack.cancel_reason` block and tells it why the request's work stops.

    - ``http.disconnect`` received before the response was complete, or ``OSError``
      / Starlette's ``ClientDisconnect`` out of the app: ``client_disconnected``.
    - The request's task cancelled while the client is still there and the response
      unfinished (asyncio): ``shutdown``.
    - When the app returns or raises, tracked streams of the request that are still
      open (dropped by the framework without being closed) end with that cause, or
      ``consumer_closed`` when there is none.
    - While the handler works and before the response starts, nothing in the app
      listens for a disconnect; with ``watch_disconnect`` (on asyncio) the middleware
      does, from ``watch_after`` seconds after the request body is in (a quick
      handler costs no task; a disconnect that happened earlier is seen at once when
      the watch starts). Runs of the request that are still open when the client
      goes get ``client_disconnected: true`` in their metadata; their status stays
      what their work ends with (a handler is not cancelled by a disconnect, its
      work is done).

    WebSocket and lifespan scopes pass through untouched.
    """

    __slots__ = ("app", "watch_after", "watch_disconnect")

    def __init__(
        self, app: ASGIApp, *, watch_disconnect: bool = True, watch_after: float = 0.05
    ) -> None:
        self.app = app
        self.watch_disconnect = watch_disconnect
        self.watch_after = watch_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(receive, send, self.watch_after)
        with exectrack.cancel_reason(resolve=exchange.cause) as reason:
            exchange.reason = reason
            if self.watch_disconnect and exchange.task is not None:
                exchange.watching = True
                if not _has_body(scope):
                    exchange.watch()
            try:
                await self.app(scope, exchange.receive, exchange.send)
            except BaseException as exc:
                if not exchange.complete and _is_disconnect(exc):
                    exchange.client_gone()
                raise
            finally:
                exchange.unwatch()
                reason.end_open_streams()


_DISCONNECT: Message = {"type": "http.disconnect"}


class _Exchange:
    """One request/response as the middleware sees it."""

    __slots__ = (
        "_receive",
        "_send",
        "complete",
        "disconnected",
        "held",
        "reason",
        "receiving",
        "started",
        "task",
        "timer",
        "watch_after",
        "watcher",
        "watching",
    )

    def __init__(self, receive: Receive, send: Send, watch_after: float) -> None:
        self._receive = receive
        self._send = send
        self.watch_after = watch_after
        self.timer: asyncio.TimerHandle | None = None
        self.receiving = False  # the app waits in the server's receive
        self.started = False  # the response started
        self.complete = False  # the last body message was sent
        self.disconnected = False  # the client went away before that
        self.reason: exectrack.CancelReason | None = None
        self.watching = False  # watch for a disconnect once the request body is in
        self.watcher: asyncio.Task[None] | None = None
        self.held: Message | None = None  # what the watcher received for the app
        try:
            self.task: asyncio.Task[Any] | None = asyncio.current_task()
        except RuntimeError:  # not asyncio (trio): shutdown is known from SIGTERM only
            self.task = None

    def cause(self) -> str | None:
        """Why the request's work is being cancelled, asked when a run ends so."""
        if self.disconnected:
            return "client_disconnected"
        if self.complete:
            return None
        task = self.task
        if task is not None and task.cancelling():
            return "shutdown"  # the server cancelled it with the client still there
        return None

    def client_gone(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        reason = self.reason
        if reason is not None:
            for handle in reason.open_runs():
                handle.annotate(client_disconnected=True)

    # -- the watcher: the server's receive, read while the handler works ----------------

    def watch(self) -> None:
        """Read the server's ``receive`` in a task until the response starts, from
        ``watch_after`` seconds on: the request body is in, so the only thing left to
        come is ``http.disconnect``."""
        self.watching = False
        if self.watch_after > 0:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.watch_after, self._start_watcher)
        else:
            self._start_watcher()

    def _start_watcher(self) -> None:
        self.timer = None
        if not (self.started or self.disconnected or self.receiving):  # else: no need
            self.watcher = asyncio.get_running_loop().create_task(self._watch())

    def unwatch(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()
        watcher, self.watcher = self.watcher, None
        if watcher is not None and not watcher.done():
            watcher.cancel()

    async def _watch(self) -> None:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    if not self.complete:
                        self.client_gone()
                    return
                self.held = message  # the (empty) request body the app has not read yet
                if message.get("more_body", False):
                    return  # not what a request without a body sends: leave it be
        except Exception:  # a server's receive failing here is the app's business
            return

    # -- what the app sees ----------------------------------------------------------------

    async def receive(self) -> Message:
        held = self.held
        if held is not None:
            self.held = None
            return held
        watcher = self.watcher
        if watcher is not None:
            # The watcher holds the server's receive: wait for what it gets.
            if not watcher.done():
                try:
                    await asyncio.shield(watcher)
                except asyncio.CancelledError:
                    if not watcher.cancelled():
                        raise  # this receive itself was cancelled
            if self.watcher is watcher:
                self.watcher = None
            return await self.receive()
        if self.disconnected:
            return dict(_DISCONNECT)  # the watcher took the server's only copy
        self.receiving = True
        try:
            message = await self._receive()
        finally:
            self.receiving = False
        kind = message["type"]
        if kind == "http.disconnect":
            if not self.complete:
                self.client_gone()
        elif self.watching and not message.get("more_body", False):
            self.watch()  # the request body is in
        return message

    async def send(self, message: Message) -> None:
        if not self.started:
            self.started = True
            self.unwatch()
        await self._send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or type(exc).__name__ in _DISCONNECT_NAMES
