"""The ASGI middleware in process, pinned: no server, an asyncio loop driving the
middleware with a scripted ``receive`` and a recording ``send``; what each path tells
the request's runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack.integrations.asgi import ExectrackMiddleware


@pytest.fixture
def t(db_url: str) -> Iterator[ExecutionTracker]:
    tracker = ExecutionTracker(db_url, strict=True, durability="sync", lease=None)
    yield tracker
    tracker.close()


class Server:
    """The server side of one request: ``messages`` handed out in order by
    ``receive`` (then it waits forever), every ``send`` recorded."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = list(messages)
        self.received = 0
        self.sent: list[dict[str, Any]] = []
        self.handed = asyncio.Event()
        self.all_handed = asyncio.Event()  # set once the last message was handed out
        self.streaming = asyncio.Event()  # set once a body chunk was sent

    async def receive(self) -> dict[str, Any]:
        if self.messages:
            self.received += 1
            message = self.messages.pop(0)
            self.handed.set()
            if not self.messages:
                self.all_handed.set()
            return message
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.streaming.set()


def http(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "headers": headers or []}


DISCONNECT = {"type": "http.disconnect"}
START = {"type": "http.response.start", "status": 200, "headers": []}
END = {"type": "http.response.body", "body": b"done", "more_body": False}


def test_other_scopes_pass_through_untouched() -> None:
    """A lifespan (or websocket) scope reaches the app with the server's own
    receive and send."""
    seen: list[Any] = []
    server = Server()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.extend([scope["type"], receive, send])

    asyncio.run(ExectrackMiddleware(app)({"type": "lifespan"}, server.receive, server.send))
    assert seen == ["lifespan", server.receive, server.send]


def test_a_disconnect_while_the_handler_works_marks_its_open_runs(t: ExecutionTracker) -> None:
    """The watcher reads the server's receive while a body-less request's handler
    works: a disconnect marks the request's open runs client_disconnected, and their
    status stays what their work ends with."""
    server = Server(DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool", "lookup")
        await server.handed.wait()  # the watcher took the disconnect
        await asyncio.sleep(0)  # and handled it
        h.finish_success()
        assert await receive() == DISCONNECT  # the app still learns of it
        await send(START)

    asyncio.run(ExectrackMiddleware(app, watch_after=0)(http(), server.receive, server.send))
    [run] = t.list_runs(source="tool").runs
    assert run.status is RunStatus.SUCCESS
    assert run.metadata == {"client_disconnected": True}
    assert server.sent == [START]


def test_no_watch_for_a_handler_quicker_than_watch_after(t: ExecutionTracker) -> None:
    """A handler that answers before ``watch_after`` costs no watcher: the server's
    receive is never read for it."""
    server = Server(DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        t.start("tool").finish_success()
        await send(START)
        await send(END)

    asyncio.run(ExectrackMiddleware(app, watch_after=60)(http(), server.receive, server.send))
    assert server.received == 0
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {}


def test_no_watch_when_switched_off(t: ExecutionTracker) -> None:
    """watch_disconnect=False never reads the server's receive for the app."""
    server = Server(DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool")
        for _ in range(5):
            await asyncio.sleep(0)
        h.finish_success()

    middleware = ExectrackMiddleware(app, watch_disconnect=False, watch_after=0)
    asyncio.run(middleware(http(), server.receive, server.send))
    assert server.received == 0


def test_a_request_with_a_body_is_watched_once_the_body_is_in(t: ExecutionTracker) -> None:
    """With a request body the watcher waits until the app read the last of it; the
    body reaches the app as the server sent it."""
    body = {"type": "http.request", "body": b"hello", "more_body": False}
    server = Server(body, DISCONNECT)
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool")
        for _ in range(5):
            await asyncio.sleep(0)
        got.append(server.received)  # nothing read before the app asked
        got.append(await receive())
        await server.handed.wait()
        for _ in range(5):
            await asyncio.sleep(0)
        got.append(server.received)  # the watcher read the disconnect
        h.finish_success()

    headers = [(b"content-length", b"5")]
    middleware = ExectrackMiddleware(app, watch_after=0)
    asyncio.run(middleware(http(headers), server.receive, server.send))
    assert got == [0, body, 2]
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {"client_disconnected": True}


def test_the_empty_body_the_watcher_read_is_handed_to_the_app(t: ExecutionTracker) -> None:
    """What the watcher receives before a disconnect (a body-less request's empty
    body) is handed to the app's next receive, unchanged and once."""
    empty = {"type": "http.request", "body": b"", "more_body": False}
    server = Server(empty)
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await server.handed.wait()
        got.append(await receive())
        await send(START)
        await send(END)

    asyncio.run(ExectrackMiddleware(app, watch_after=0)(http(), server.receive, server.send))
    assert got == [empty]
    assert server.sent == [START, END]


@pytest.mark.parametrize("error", [OSError("reset"), type("ClientDisconnect", (Exception,), {})()])
def test_a_send_that_fails_for_a_gone_client_marks_open_runs(
    t: ExecutionTracker, error: Exception
) -> None:
    """An OSError, or an exception named ClientDisconnect, out of the app before the
    response completed means the client went away: open runs are marked."""
    server = Server()
    handles: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        handles.append(t.start("tool"))  # still open (a thread's work) when it fails
        await send(START)
        raise error

    with pytest.raises(type(error)):
        asyncio.run(ExectrackMiddleware(app)(http(), server.receive, server.send))
    handles[0].finish_success()
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {"client_disconnected": True}


def test_an_error_after_the_response_completed_is_no_disconnect(t: ExecutionTracker) -> None:
    """An OSError after the last body message does not mark open runs: the client got
    its whole response."""
    server = Server()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool")
        await send(START)
        await send(END)
        try:
            raise OSError("cleanup failed")
        finally:
            h.finish_success()

    with pytest.raises(OSError, match="cleanup failed"):
        asyncio.run(ExectrackMiddleware(app)(http(), server.receive, server.send))
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {}


def test_a_stream_the_app_dropped_ends_when_the_request_ends(t: ExecutionTracker) -> None:
    """A tracked stream the app left open (never closed) is ended when the request
    ends: canceled/consumer_closed with no other cause, its items counted."""
    server = Server()

    @t.with_run("chat", "answer")
    async def answer() -> AsyncIterator[str]:
        for i in range(5):
            yield f"chunk {i}"

    kept: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        stream = answer()
        kept.append(stream)  # not garbage: dropped, never closed
        await send(START)
        await send(
            {
                "type": "http.response.body",
                "body": (await anext(stream)).encode(),
                "more_body": True,
            }
        )

    asyncio.run(ExectrackMiddleware(app)(http(), server.receive, server.send))
    [run] = t.list_runs(source="chat").runs
    assert (run.status, run.error_code, run.items) == (RunStatus.CANCELED, "consumer_closed", 1)


def test_a_cancelled_request_with_the_client_there_is_shutdown(t: ExecutionTracker) -> None:
    """The server cancelling a request whose client is still there and whose
    response is unfinished ends its stream canceled/shutdown."""
    server = Server()

    @t.with_run("chat", "answer")
    async def answer() -> AsyncIterator[str]:
        yield "first"
        await asyncio.Event().wait()  # a model that never answers
        yield "never"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        async for chunk in answer():
            await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})

    async def main() -> None:
        task = asyncio.create_task(ExectrackMiddleware(app)(http(), server.receive, server.send))
        await server.streaming.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    [run] = t.list_runs(source="chat").runs
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")


def test_a_cancellation_after_a_disconnect_is_client_disconnected(t: ExecutionTracker) -> None:
    """Once the client is gone (the app's receive got http.disconnect), a cancelled
    stream ends client_disconnected, not shutdown."""
    server = Server(DISCONNECT)

    @t.with_run("chat", "answer")
    async def answer() -> AsyncIterator[str]:
        yield "first"
        await asyncio.Event().wait()
        yield "never"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        assert await receive() == DISCONNECT
        async for chunk in answer():
            await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})

    async def main() -> None:
        task = asyncio.create_task(
            ExectrackMiddleware(app, watch_disconnect=False)(http(), server.receive, server.send)
        )
        await server.streaming.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    [run] = t.list_runs(source="chat").runs
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "client_disconnected")


def test_no_watch_once_the_response_started(t: ExecutionTracker) -> None:
    """The watcher is for a handler that has not answered yet: an app that reads the
    request body after starting its response gets no watcher reading the server's
    receive behind it (a later disconnect is the app's to see)."""
    body = {"type": "http.request", "body": b"hello", "more_body": False}
    server = Server(body, DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool")
        await send(START)
        assert await receive() == body
        for _ in range(5):
            await asyncio.sleep(0)
        h.finish_success()
        await send(END)

    headers = [(b"content-length", b"5")]
    middleware = ExectrackMiddleware(app, watch_after=0)
    asyncio.run(middleware(http(headers), server.receive, server.send))
    assert server.received == 1
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {}


def test_no_watch_once_the_app_saw_the_disconnect(t: ExecutionTracker) -> None:
    """An app that read the disconnect itself before ``watch_after`` leaves nothing
    to watch for: the server's receive is not read again on its own. (The app's
    2 ms sleep ends after the watch's 1 ms timer: the loop orders them by deadline.)"""
    server = Server(DISCONNECT, DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert await receive() == DISCONNECT
        await asyncio.sleep(0.002)
        for _ in range(5):
            await asyncio.sleep(0)

    middleware = ExectrackMiddleware(app, watch_after=0.001)
    asyncio.run(middleware(http(), server.receive, server.send))
    assert server.received == 1


class LiveServer:
    """A server whose messages arrive when the test puts them (``deliver``), handed
    to its waiting ``receive`` calls in the order they called; every call counted."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.calls = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.calls += 1
        return await self.queue.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def deliver(self, message: dict[str, Any]) -> None:
        self.queue.put_nowait(message)


async def ticks(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_chunk_sent_though_the_headers_said_no_body_reaches_the_app(
    t: ExecutionTracker,
) -> None:
    """A request whose headers announce no body but whose server sends body chunks:
    the watcher hands the first over and stops there (more is coming); the app
    receives every chunk, in order, and no receive of its own is lost."""
    one = {"type": "http.request", "body": b"a", "more_body": True}
    two = {"type": "http.request", "body": b"b", "more_body": False}
    server = Server(one, two)
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await server.handed.wait()
        await ticks()
        got.append(server.received)  # the watcher took the first chunk only
        got.append(await receive())
        got.append(await receive())

    asyncio.run(ExectrackMiddleware(app, watch_after=0)(http(), server.receive, server.send))
    assert got == [1, one, two]


def test_an_empty_body_without_more_body_is_the_last(t: ExecutionTracker) -> None:
    """A body message without a ``more_body`` key is the last one (the ASGI default):
    the watcher goes on to see the disconnect after it."""
    empty = {"type": "http.request", "body": b""}
    server = Server(empty, DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool")
        await server.all_handed.wait()
        await ticks()
        h.finish_success()
        assert await receive() == empty

    asyncio.run(ExectrackMiddleware(app, watch_after=0)(http(), server.receive, server.send))
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {"client_disconnected": True}


def test_a_body_in_chunks_is_watched_only_after_the_last(t: ExecutionTracker) -> None:
    """With a body in several chunks the watcher starts after the last one, never
    while more of the body is to come."""
    one = {"type": "http.request", "body": b"a", "more_body": True}
    two = {"type": "http.request", "body": b"b", "more_body": False}
    server = Server(one, two, DISCONNECT)
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool")
        got.append(await receive())
        await ticks()
        got.append(server.received)  # nothing read behind the app
        got.append(await receive())
        await server.all_handed.wait()
        await ticks()
        h.finish_success()

    headers = [(b"transfer-encoding", b"chunked")]
    middleware = ExectrackMiddleware(app, watch_after=0)
    asyncio.run(middleware(http(headers), server.receive, server.send))
    assert got == [one, 1, two]
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {"client_disconnected": True}


def test_the_apps_receive_waits_for_the_watcher(t: ExecutionTracker) -> None:
    """While the watcher reads the server's receive, the app's receive waits for what
    the watcher gets (never a second read of its own): a disconnect reaches both."""
    got: list[Any] = []

    async def main() -> None:
        server = LiveServer()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await ticks()  # the watcher is reading
            waiting = asyncio.create_task(receive())
            await ticks()
            server.deliver(DISCONNECT)
            got.append(await asyncio.wait_for(waiting, 5))
            got.append(server.calls)

        await ExectrackMiddleware(app, watch_after=0)(http(), server.receive, server.send)

    asyncio.run(main())
    assert got == [DISCONNECT, 1]


def test_no_watcher_while_the_app_reads_itself(t: ExecutionTracker) -> None:
    """An app already waiting in receive when ``watch_after`` passes gets no watcher
    reading beside it. (The app's 2 ms sleep ends after the 1 ms timer: the loop
    orders them by deadline.)"""
    got: list[Any] = []

    async def main() -> None:
        server = LiveServer()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            waiting = asyncio.create_task(receive())
            await asyncio.sleep(0.002)
            await ticks()
            server.deliver(DISCONNECT)
            got.append(await asyncio.wait_for(waiting, 5))
            got.append(server.calls)

        await ExectrackMiddleware(app, watch_after=0.001)(http(), server.receive, server.send)

    asyncio.run(main())
    assert got == [DISCONNECT, 1]


def test_a_cancelled_receive_is_cancelled_while_the_watcher_reads(t: ExecutionTracker) -> None:
    """The app's receive, waiting for the watcher, is cancelled like any await (a
    timeout around it); the watcher goes on and still sees the disconnect."""
    got: list[Any] = []

    async def main() -> None:
        server = LiveServer()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            h = t.start("tool")
            await ticks()
            waiting = asyncio.create_task(receive())
            await ticks()
            waiting.cancel()
            got.append(await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 5))
            server.deliver(DISCONNECT)
            await ticks()
            h.finish_success()

        await ExectrackMiddleware(app, watch_after=0)(http(), server.receive, server.send)

    asyncio.run(main())
    assert [type(x) for x in got[0]] == [asyncio.CancelledError]
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {"client_disconnected": True}


def test_a_receive_waiting_when_the_response_starts_reads_on(t: ExecutionTracker) -> None:
    """Starting the response stops the watcher; an app receive that was waiting for
    it then reads the server's receive itself and gets the next message."""
    body = {"type": "http.request", "body": b"", "more_body": False}
    got: list[Any] = []

    async def main() -> None:
        server = LiveServer()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await ticks()
            waiting = asyncio.create_task(receive())
            await ticks()
            await send(START)  # stops the watcher
            await ticks()
            server.deliver(body)
            got.append(await asyncio.wait_for(waiting, 5))
            await send(END)

        await ExectrackMiddleware(app, watch_after=0)(http(), server.receive, server.send)

    asyncio.run(main())
    assert got == [body]


def test_no_watch_before_watch_after_under_a_second(t: ExecutionTracker) -> None:
    """``watch_after`` below a second is waited for as well: a handler that answers
    within it (a few loop turns here) costs no read of the server's receive."""
    server = Server(DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await ticks()
        await send(START)
        await send(END)

    asyncio.run(ExectrackMiddleware(app, watch_after=0.9)(http(), server.receive, server.send))
    assert server.received == 0


def test_a_last_body_message_without_more_body_starts_the_watch(t: ExecutionTracker) -> None:
    """A request body whose last message has no ``more_body`` key (the ASGI default,
    False) is complete: the watcher starts after it and sees the disconnect."""
    body = {"type": "http.request", "body": b"hello"}
    server = Server(body, DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool")
        assert await receive() == body
        await server.all_handed.wait()
        await ticks()
        h.finish_success()

    headers = [(b"content-length", b"5")]
    middleware = ExectrackMiddleware(app, watch_after=0)
    asyncio.run(middleware(http(headers), server.receive, server.send))
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {"client_disconnected": True}


def test_a_request_with_content_length_0_is_watched_at_once(t: ExecutionTracker) -> None:
    """``content-length: 0`` announces no body: the watch starts with the request."""
    server = Server(DISCONNECT)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        h = t.start("tool")
        await server.handed.wait()
        await ticks()
        h.finish_success()

    headers = [(b"content-length", b"0")]
    middleware = ExectrackMiddleware(app, watch_after=0)
    asyncio.run(middleware(http(headers), server.receive, server.send))
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {"client_disconnected": True}


def test_an_error_after_a_complete_response_leaves_open_runs_unmarked(
    t: ExecutionTracker,
) -> None:
    """A response is complete at its last body message (no ``more_body``: False): an
    OSError after it marks no run, even one still open when the request ends."""
    server = Server()
    handles: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        handles.append(t.start("tool"))  # still open (a thread's work) when it fails
        await send(START)
        await send({"type": "http.response.body", "body": b"done"})
        raise OSError("cleanup failed")

    with pytest.raises(OSError, match="cleanup failed"):
        asyncio.run(ExectrackMiddleware(app)(http(), server.receive, server.send))
    handles[0].finish_success()
    [run] = t.list_runs(source="tool").runs
    assert run.metadata == {}


def test_the_watch_starts_50_ms_after_the_body_by_default() -> None:
    """The documented defaults: the watch is on and starts 50 ms after the request
    body is in (a quicker handler costs nothing)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    middleware = ExectrackMiddleware(app)
    assert (middleware.watch_disconnect, middleware.watch_after) == (True, 0.05)
