"""Real-browser tests: the panel in headless Chromium (Debian's ``chromium`` driven by
Playwright's sync API) against a real uvicorn serving ``create_app`` over a SQLite file
that a real ExecutionTracker writes.

Without Chromium or Playwright these tests skip, unless EXECTRACK_REQUIRE_BROWSER=1
(CI), where a missing browser is a failure. Screenshots go to EXECTRACK_ARTIFACTS
(else the session's temporary directory).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

from exectrack import ExecutionTracker

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

# Read at import: the autouse clean_env fixture removes EXECTRACK_* from each test's env.
REQUIRE_BROWSER = os.environ.get("EXECTRACK_REQUIRE_BROWSER", "") == "1"
ARTIFACTS = os.environ.get("EXECTRACK_ARTIFACTS", "")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Generous: two cores shared with other work; conditions are awaited, never slept on.
TIMEOUT_MS = 20_000


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install -e '.[dev]')"
    try:
        import uvicorn  # noqa: F401

        import exectrack.server  # noqa: F401
    except ImportError as exc:
        return f"the server extra is not installed ({exc})"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return "no chromium executable (apt-get install chromium)"
    return None


def need_browser() -> None:
    """Skip (or, with EXECTRACK_REQUIRE_BROWSER=1, fail) when the browser stack is missing."""
    reason = _missing()
    if reason is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"EXECTRACK_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


# -- the server -----------------------------------------------------------------------


class UvicornThread:
    """A real uvicorn serving ``app`` on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:  # a startup condition, polled; not a timed wait
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 30 s")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()


@dataclass
class Served:
    """A running server: where the panel is, and the tracker that writes its runs."""

    server: UvicornThread
    tracker: ExecutionTracker
    prefix: str = ""  # "" at the root, "/runs" when mounted
    token: str | None = None

    @property
    def url(self) -> str:
        """The panel's URL (the mount root, with its trailing slash)."""
        return f"{self.server.origin}{self.prefix}/"

    def api(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        """GET a JSON endpoint relative to the mount root, as the panel would."""
        import httpx

        self.tracker.flush()
        query = f"?{urlencode(params)}" if params else ""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = httpx.get(f"{self.url}{path}{query}", headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()

    def list_ids(self, params: list[tuple[str, str]], limit: int = 50) -> list[str]:
        page = self.api("api/runs", [*params, ("limit", str(limit))])
        return [run["id"] for run in page["runs"]]


def serve(
    tracker: ExecutionTracker,
    *,
    prefix: str = "",
    live_interval: float = 0.25,
    token: str | None = None,
) -> Iterator[Served]:
    """Serve ``create_app(tracker)`` (mounted under ``prefix`` when given) until closed."""
    from exectrack.server import create_app

    app: Any = create_app(tracker, live_interval=live_interval, token=token)
    if prefix:
        from starlette.applications import Starlette
        from starlette.routing import Mount

        app = Starlette(routes=[Mount(prefix, app=app)])
    server = UvicornThread(app)
    server.start()
    try:
        yield Served(server, tracker, prefix, token)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExecutionTracker]:
    """A real tracker on a SQLite file of this module's own."""
    need_browser()
    path = tmp_path_factory.mktemp("browser-db") / "runs.db"
    tracker = ExecutionTracker(f"sqlite:///{path}", strict=True)
    yield tracker
    tracker.close()


# -- the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module, never per session: Playwright's sync API keeps an
    asyncio loop running in this thread while it is open, and any other test the same
    worker runs meanwhile (xdist mixes modules) would find asyncio.run() refused."""
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Contexts for one test (closed after it), with strict timeouts on every wait."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


class PageErrors:
    """Uncaught script errors and console errors of a page, asserted empty by tests
    (except the browser's own probe for a /favicon.ico the page never asked for)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type != "error" or msg.location.get("url", "").endswith("/favicon.ico"):
            return
        self.errors.append(f"console.{msg.type}: {msg.text} ({msg.location.get('url')})")


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context().new_page()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: EXECTRACK_ARTIFACTS, else the session's temporary dir."""
    folder = Path(ARTIFACTS) if ARTIFACTS else tmp_path_factory.mktemp("browser-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- waiting on the panel -------------------------------------------------------------

ROW_IDS_JS = "() => [...document.querySelectorAll('#rows tr')].map(r => r.dataset.id)"


def row_ids(page: Page) -> list[str]:
    ids: list[str] = page.evaluate(ROW_IDS_JS)
    return ids


def wait_rows(page: Page, expected: list[str], timeout: float = TIMEOUT_MS) -> None:
    """Wait until the table shows exactly ``expected`` (ids, in order)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """expected => JSON.stringify(
                [...document.querySelectorAll('#rows tr')].map(r => r.dataset.id)
            ) === JSON.stringify(expected)""",
            arg=expected,
            timeout=timeout,
        )
    except PlaywrightTimeout:
        shown = row_ids(page)
        pytest.fail(
            f"the table never showed the expected {len(expected)} rows; it shows "
            f"{len(shown)}: missing {sorted(set(expected) - set(shown))[:5]}, "
            f"extra {sorted(set(shown) - set(expected))[:5]}, "
            f"same set {set(shown) == set(expected)}"
        )


def wait_loaded(page: Page) -> None:
    """Wait until the first page of runs has been rendered (or found empty)."""
    page.wait_for_function(
        "() => document.querySelector('#runs')?.getAttribute('aria-busy') === 'false'"
    )


def pretty(value: Any) -> str:
    """What JSON.stringify(value, null, 2) gives, as the details view shows it."""
    return json.dumps(value, indent=2, ensure_ascii=False)
