"""The ASGI integration through real servers (uvicorn; hypercorn under trio) and a real
HTTP client that drops the connection: a tracked streamed response ends its run when
the response really ends, with the true cause."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import exectrack
from exectrack import ExecutionTracker, Run, RunStatus
from exectrack.integrations.asgi import ExectrackMiddleware

from .conftest import (
    Served,
    ended_runs,
    hypercorn_trio_server,
    uvicorn_server,
    wait_for_ended,
    wait_until,
)

CANCELED = RunStatus.CANCELED


def chat_app(tracker: ExecutionTracker, *, middleware: bool = True) -> Any:
    """``/stream`` serves a tracked async generator as a StreamingResponse, ``/sse`` as
    an sse-starlette EventSourceResponse. Query: ``n`` chunks, then ``hang=1`` waits
    for a model that never answers, ``fail=k`` raises before chunk k, ``stall=k``
    makes ``send`` block after k chunks (a client that stopped reading)."""

    @tracker.with_run("chat", "answer")
    async def answer(n: int, hang: bool, fail: int, sse: bool) -> AsyncIterator[Any]:
        for i in range(n):
            if i == fail:
                raise ConnectionError("the model provider went away")
            yield {"data": f"chunk {i}"} if sse else f"chunk {i}\n"
            await anyio.lowlevel.checkpoint()
        if hang:
            await anyio.sleep_forever()

    @tracker.with_run("chat", "answer")
    def sync_answer(n: int) -> Iterator[str]:  # served from Starlette's thread pool
        for i in range(n):
            yield f"chunk {i}\n"

    def body(request: Request, sse: bool) -> AsyncIterator[Any]:
        q = request.query_params
        return answer(int(q.get("n", "5")), q.get("hang") == "1", int(q.get("fail", "-1")), sse)

    async def stream(request: Request) -> Response:
        return StreamingResponse(body(request, sse=False), media_type="text/plain")

    async def sse(request: Request) -> Response:
        return EventSourceResponse(body(request, sse=True), ping=0)

    async def sync_stream(request: Request) -> Response:
        return StreamingResponse(sync_answer(int(request.query_params.get("n", "5"))))

    async def refused(request: Request) -> Response:
        body(request, sse=False)  # built, never iterated
        return JSONResponse({"error": "quota"}, status_code=429)

    app: Any = Starlette(
        routes=[
            Route("/stream", stream),
            Route("/sse", sse),
            Route("/sync", sync_stream),
            Route("/refused", refused),
        ]
    )
    app = StallSend(app)
    return ExectrackMiddleware(app) if middleware else app


class StallSend:
    """A network that stops taking bytes: with ``stall=k`` in the query, the response's
    ``send`` of body chunk k+1 never returns (until cancelled)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        query = dict(
            part.split("=", 1)
            for part in scope.get("query_string", b"").decode().split("&")
            if "=" in part
        )
        if "stall" not in query:
            await self.app(scope, receive, send)
            return
        limit, sent = int(query["stall"]), 0

        async def stalling_send(message: Any) -> None:
            nonlocal sent
            if message["type"] == "http.response.body" and message.get("body"):
                sent += 1
                if sent > limit:
                    await anyio.sleep_forever()
            await send(message)

        await self.app(scope, receive, stalling_send)


def read_chunks(served: Served, path: str, count: int) -> list[str]:
    """GET ``path``, read ``count`` chunks (data lines for SSE), then drop the
    connection with the response unfinished; returns what was read."""
    got: list[str] = []
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", served.url(path)) as response:
            assert response.status_code == 200
            for raw in response.iter_lines():
                line = raw.removeprefix("data: ").strip()
                if line:
                    got.append(line)
                if len(got) == count:
                    break
    return got


def the_run(tracker: ExecutionTracker, timeout: float) -> Run:
    [run] = wait_for_ended(tracker, timeout=timeout)
    return run


ROUTES = ["/stream", "/sse"]


@pytest.mark.parametrize("route", ROUTES)
def test_a_full_read_is_a_success_with_chunks_and_time_to_first(
    tracker: ExecutionTracker, route: str
) -> None:
    """The client reads the whole body: success, with the chunk count and the time
    to the first chunk in the run."""
    with uvicorn_server(chat_app(tracker)) as served:
        with httpx.Client(timeout=10) as client:
            response = client.get(served.url(f"{route}?n=7"))
        assert response.status_code == 200
        assert "chunk 6" in response.text
        run = the_run(tracker, 5)
    assert (run.status, run.error_code, run.items) == (RunStatus.SUCCESS, None, 7)
    assert run.first_item_ms is not None and run.first_item_ms >= 0


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "where", ["hang=1", "stall=3&n=100000"], ids=["model-awaited", "send-blocked"]
)
def test_a_client_that_drops_mid_stream_is_client_disconnected(
    tracker: ExecutionTracker, route: str, where: str
) -> None:
    """The client drops after 3 chunks, whether the stream was waiting for its model
    (uvicorn's http.disconnect, Starlette cancels the stream) or blocked in ``send``
    (the stream is left suspended at a yield and never closed by Starlette): the run
    is canceled/client_disconnected within 1 s, with the chunks it produced."""
    with uvicorn_server(chat_app(tracker)) as served:
        assert read_chunks(served, f"{route}?n=3&{where}", 3) == [
            "chunk 0",
            "chunk 1",
            "chunk 2",
        ]
        run = the_run(tracker, 1.0)
    assert (run.status, run.error_code, run.error_message) == (
        CANCELED,
        "client_disconnected",
        "the client disconnected",
    )
    assert run.items is not None and 3 <= run.items <= 4  # the 4th may be stuck in send
    assert run.first_item_ms is not None


@pytest.mark.parametrize("n", [3, 100_000], ids=["full-read", "send-blocked-drop"])
def test_a_sync_generator_from_the_thread_pool_ends_right(
    tracker: ExecutionTracker, n: int
) -> None:
    """A tracked *sync* generator (Starlette iterates it on worker threads): a full
    read is a success; a drop while the response is stuck in ``send`` leaves the
    generator suspended on its thread, and the middleware ends it
    client_disconnected."""
    with uvicorn_server(chat_app(tracker)) as served:
        if n == 3:
            with httpx.Client(timeout=10) as client:
                assert "chunk 2" in client.get(served.url("/sync?n=3")).text
        else:
            read_chunks(served, f"/sync?n={n}&stall=3", 3)
        run = the_run(tracker, 1.0)
    expected = (RunStatus.SUCCESS, None) if n == 3 else (CANCELED, "client_disconnected")
    assert (run.status, run.error_code) == expected
    assert run.items is not None and run.items >= 3


@pytest.mark.parametrize("route", ROUTES)
def test_without_the_middleware_a_disconnect_is_a_bare_cancellation(
    tracker: ExecutionTracker, route: str
) -> None:
    """Why the middleware exists: without it the same drop is recorded as a plain
    cancellation (Starlette and sse-starlette cancel the stream; nothing tells the
    run why)."""
    with uvicorn_server(chat_app(tracker, middleware=False)) as served:
        read_chunks(served, f"{route}?n=3&hang=1", 3)
        run = the_run(tracker, 5)
    assert (run.status, run.error_code) == (CANCELED, "cancelled")


def test_a_client_that_resets_mid_chunk_is_client_disconnected(
    tracker: ExecutionTracker,
) -> None:
    """A hostile client: raw socket, reads part of a big chunk, then resets the
    connection (RST). The endless fast stream ends client_disconnected."""
    with uvicorn_server(chat_app(tracker)) as served:
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.sendall(b"GET /stream?n=100000000 HTTP/1.1\r\nHost: test\r\n\r\n")
            received = 0
            while received < 100:
                received += len(sock.recv(37))  # mid-chunk: chunks are 9+ bytes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        run = the_run(tracker, 1.0)
    assert (run.status, run.error_code) == (CANCELED, "client_disconnected")
    assert run.items is not None and run.items >= 1


@pytest.mark.parametrize("route", ROUTES)
def test_a_stream_that_raises_after_chunks_is_an_error(
    tracker: ExecutionTracker, route: str
) -> None:
    """The model fails after 2 chunks: the run is error with the classifier's code
    (not a cancellation), and the client sees a truncated response."""
    with uvicorn_server(chat_app(tracker)) as served:
        with httpx.Client(timeout=10) as client, pytest.raises(httpx.HTTPError):
            client.get(served.url(f"{route}?n=5&fail=2"))
        run = the_run(tracker, 5)
    assert (run.status, run.error_code, run.items) == (RunStatus.ERROR, "provider_unavailable", 2)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "where", ["hang=1", "stall=3&n=100000"], ids=["model-awaited", "send-blocked"]
)
def test_a_server_shutdown_mid_stream_is_shutdown(
    tracker: ExecutionTracker, route: str, where: str
) -> None:
    """uvicorn shuts down (no signal: ``should_exit``) while the client still reads;
    after its graceful timeout it cancels the request: the run is canceled/shutdown,
    not client_disconnected."""
    with uvicorn_server(chat_app(tracker), graceful=0.3) as served:
        with httpx.Client(timeout=10) as client:
            with client.stream("GET", served.url(f"{route}?n=3&{where}")) as response:
                lines = (line for line in response.iter_lines() if line.strip())
                assert len([next(lines) for _ in range(3)]) == 3
                served.stop()
                run = the_run(tracker, 10)
    assert (run.status, run.error_code, run.error_message) == (
        CANCELED,
        "shutdown",
        "the process shut down before the run finished",
    )


def test_a_stream_never_iterated_leaves_no_run(tracker: ExecutionTracker) -> None:
    """A handler that builds the tracked stream but answers something else (and a
    HEAD on an SSE route, which sse-starlette never iterates) records nothing."""
    with uvicorn_server(chat_app(tracker)) as served:
        with httpx.Client(timeout=10) as client:
            assert client.get(served.url("/refused")).status_code == 429
            assert client.head(served.url("/sse")).status_code == 200
            assert client.get(served.url("/stream?n=1")).status_code == 200
        wait_for_ended(tracker, 1, timeout=5)
    assert [r.status for r in tracker.list_runs(source="chat").runs] == [RunStatus.SUCCESS]


def test_many_drops_and_reads_leave_no_run_open(tracker: ExecutionTracker) -> None:
    """Twenty requests, every other one dropped after a chunk: twenty runs, all
    ended, each with the outcome of its own request."""
    with uvicorn_server(chat_app(tracker)) as served:
        with httpx.Client(timeout=10) as client:
            for i in range(20):
                if i % 2:
                    read_chunks(served, "/stream?n=2&hang=1", 1)
                else:
                    assert client.get(served.url("/sse?n=2")).status_code == 200
        runs = wait_for_ended(tracker, 20, timeout=5)
    assert sorted((r.status, r.error_code) for r in runs) == sorted(
        [(RunStatus.SUCCESS, None)] * 10 + [(CANCELED, "client_disconnected")] * 10
    )
    assert tracker.list_runs(source="chat", status="running").runs == []


@pytest.mark.parametrize("route", ROUTES)
def test_under_trio_a_drop_is_client_disconnected(tracker: ExecutionTracker, route: str) -> None:
    """Starlette under trio (hypercorn's trio worker): a full read is a success and a
    drop is canceled/client_disconnected within 1 s (trio's Cancelled, not asyncio's)."""
    with hypercorn_trio_server(chat_app(tracker)) as served:
        with httpx.Client(timeout=10) as client:
            assert "chunk 2" in client.get(served.url(f"{route}?n=3")).text
        [ok] = wait_for_ended(tracker, 1, timeout=5)
        read_chunks(served, f"{route}?n=3&hang=1", 3)
        dropped = wait_until(
            lambda: [r for r in ended_runs(tracker) if r.id != ok.id], 1.0, "the dropped run"
        )
    assert (ok.status, ok.items) == (RunStatus.SUCCESS, 3)
    assert [(r.status, r.error_code, r.items) for r in dropped] == [
        (CANCELED, "client_disconnected", 3)
    ]


def handler_app(tracker: ExecutionTracker, release: threading.Event, **options: Any) -> Any:
    """A FastAPI app whose tracked, non-streaming handlers wait (in a tracked tool
    call) until the test releases them."""
    from fastapi import FastAPI

    app = FastAPI()

    @tracker.with_run("skill", "lookup")
    async def lookup() -> str:
        # Works until released, or until the middleware marked the run (the client
        # left): a server-side wait, so the test needs no sleep of its own.
        run = exectrack.current_run()
        assert run is not None
        while not release.is_set() and not (run._extra or {}).get("client_disconnected"):  # noqa: ASYNC110
            await anyio.sleep(0.005)
        return "found"

    @app.get("/answer")
    @tracker.with_run("chat", "answer")
    async def answer() -> dict[str, str]:
        return {"answer": await lookup()}

    @app.post("/answer")
    @tracker.with_run("chat", "answer")
    async def answer_post(question: dict[str, str]) -> dict[str, str]:
        return {"answer": await lookup(), **question}

    app.add_middleware(ExectrackMiddleware, **options)
    return app


def drop_while_handling(served: Served, method: str) -> None:
    """Send a request, then close the connection before any response came, and wait
    until the server has seen the connection go."""
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        if method == "GET":
            sock.sendall(b"GET /answer HTTP/1.1\r\nHost: test\r\n\r\n")
        else:
            body = b'{"q": "why"}'
            sock.sendall(
                b"POST /answer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        wait_until(lambda: served.server.server_state.connections, 5, "the request arrived")
    wait_until(lambda: not served.server.server_state.connections, 5, "the connection went")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_handler_whose_client_left_keeps_its_status_and_says_so(
    tracker: ExecutionTracker, method: str
) -> None:
    """A non-streaming handler whose client goes away while it works (nothing in the
    app listens for a disconnect then): its run and the tool run it awaits end with
    the status of their work (success) and ``client_disconnected: true`` in their
    metadata; the response is never sent. (The middleware's default watch starts
    0.05 s into the handler and sees the earlier disconnect at once.)"""
    release = threading.Event()  # never set: the handler goes on once it is marked
    with uvicorn_server(handler_app(tracker, release)) as served:
        drop_while_handling(served, method)
        runs = wait_for_ended(tracker, 1, source="chat") + wait_for_ended(tracker, source="skill")
    assert [(r.source, r.status, r.metadata) for r in runs] == [
        ("chat", RunStatus.SUCCESS, {"client_disconnected": True}),
        ("skill", RunStatus.SUCCESS, {"client_disconnected": True}),
    ]
    assert runs[1].parent_id == runs[0].id


def test_a_handler_whose_client_stays_has_no_such_mark(tracker: ExecutionTracker) -> None:
    """The same handlers with a client that waits for the answer: no mark, and the
    request body still reaches the handler whole (the watcher never takes it)."""
    release = threading.Event()
    release.set()
    with uvicorn_server(handler_app(tracker, release)) as served:
        with httpx.Client(timeout=10) as client:
            assert client.get(served.url("/answer")).json() == {"answer": "found"}
            posted = client.post(served.url("/answer"), json={"q": "why"})
            assert posted.json() == {"answer": "found", "q": "why"}
        runs = wait_for_ended(tracker, 2) + wait_for_ended(tracker, 2, source="skill")
    assert [(r.status, r.metadata) for r in runs] == [(RunStatus.SUCCESS, {})] * 4


def test_without_the_watcher_a_handler_learns_nothing(tracker: ExecutionTracker) -> None:
    """``watch_disconnect=False``: nothing reads the server while the handler works,
    so a client that left then leaves no mark (what uvicorn + Starlette alone do)."""
    release = threading.Event()
    with uvicorn_server(handler_app(tracker, release, watch_disconnect=False)) as served:
        drop_while_handling(served, "GET")
        release.set()
        [run] = wait_for_ended(tracker, 1)
    assert (run.status, run.metadata) == (RunStatus.SUCCESS, {})


def test_starlette_spec_2_4_path_oserror_on_send_is_client_disconnected(
    tracker: ExecutionTracker,
) -> None:
    """A server that says ASGI spec 2.4 and whose ``send`` raises ``OSError`` once the
    client is gone (no server installed here does: uvicorn says 2.3 and drops writes
    silently, hypercorn says 2.1), driven in-process: Starlette skips its disconnect
    listener and raises ``ClientDisconnect``; the stream, left suspended at a yield,
    ends client_disconnected with the chunks sent, and the exception propagates."""
    app = chat_app(tracker)
    sent: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and len(sent) == 3:
            raise ConnectionResetError("peer went away")
        sent.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/stream",
        "raw_path": b"/stream",
        "query_string": b"n=10",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
    }

    async def main() -> None:
        with pytest.raises(ClientDisconnect):
            await app(scope, receive, send)

    anyio.run(main)
    [run] = ended_runs(tracker)
    assert (run.status, run.error_code, run.items) == (CANCELED, "client_disconnected", 3)


SIGTERM_SERVER = """
import socket, sys
import anyio, uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route
import exectrack
from exectrack.integrations.asgi import ExectrackMiddleware

@exectrack.with_run("chat", "answer")
async def answer(sse):
    for i in range(3):
        yield {"data": f"chunk {i}"} if sse else f"chunk {i}\\n"
    await anyio.sleep_forever()

async def stream(request):
    return StreamingResponse(answer(False), media_type="text/plain")

async def sse(request):
    return EventSourceResponse(answer(True), ping=0)

app = ExectrackMiddleware(Starlette(routes=[Route("/stream", stream), Route("/sse", sse)]))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(
    lambda: app, factory=True, interface="asgi3", log_config=None, timeout_graceful_shutdown=1
)
uvicorn.Server(config).run(sockets=[sock])
"""


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
def test_sigterm_to_a_uvicorn_process_mid_stream_is_shutdown(
    tmp_path: Any, db_url: str, route: str
) -> None:
    """A real uvicorn process behind the middleware gets SIGTERM while a client reads
    a stream (sse-starlette cancels its streams at once on uvicorn's signal,
    Starlette's wait for the graceful timeout): the run is canceled/shutdown, never
    client_disconnected, though the connection then closes."""
    import os
    import signal
    import subprocess
    import sys

    from exectrack import RunFilter, open_store

    script = tmp_path / "server.py"
    script.write_text(SIGTERM_SERVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")}
    server = subprocess.Popen(
        [sys.executable, str(script)],
        env={**env, "EXECTRACK_DATABASE_URL": db_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        served = Served(int(server.stdout.readline()), stop=lambda: None)
        wait_until(lambda: _listening(served.port), 30, "the server listens")
        with httpx.Client(timeout=10) as client:
            with client.stream("GET", served.url(route)) as response:
                lines = (line for line in response.iter_lines() if line.strip())
                assert len([next(lines) for _ in range(3)]) == 3
                server.send_signal(signal.SIGTERM)
                # The server ends the stream when it cancels it: sse-starlette may send
                # the body's last chunk before uvicorn closes the connection (a clean
                # end; seen on a busy machine) or not (a cut one). Either ends the loop.
                with contextlib.suppress(httpx.RemoteProtocolError, httpx.ReadError):
                    for _ in lines:
                        pass
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    [run] = open_store(db_url).list_runs(RunFilter(sources=("chat",)), limit=5)
    assert (run.status, run.error_code, run.items) == (CANCELED, "shutdown", 3)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
