"""The "latest run" badges in a real browser: the <exectrack-badge> web component
(static/badge.js) on a page of the server's origin and of another origin, and the SVG
endpoint, each showing the latest status of exactly its scope in the contract's colour.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest

from exectrack import ExecutionTracker

from .conftest import PageErrors, Served, UvicornThread, serve

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

COLOURS = {"success": "#15803d", "error": "#b91c1c", "running": "#2563eb", "no runs": "#6b7280"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
MARKUP_REF = '<img src=x onerror="window.__xss=1">'


def hex_to_rgb(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@pytest.fixture(scope="module")
def served(module_tracker: ExecutionTracker) -> Iterator[Served]:
    """chat:ask ended success but newer chat runs of other refs ended error; the
    latest heartbeat:inbox ended error; one skill run of session sess-b is running."""
    tracker = module_tracker
    tracker.finish_error(tracker.start("chat", source_ref="ask"), code="rate_limited", message="x")
    tracker.finish_success(tracker.start("chat", source_ref="ask"))
    for _ in range(40):  # busier scopes of the same source must not hide chat:ask
        tracker.finish_error(tracker.start("chat", source_ref="other"), code="boom", message="b")
    tracker.finish_success(tracker.start("heartbeat", source_ref="inbox"))
    tracker.finish_error(tracker.start("heartbeat", source_ref="inbox"), code="boom", message="m")
    tracker.finish_success(tracker.start("chat", source_ref=MARKUP_REF))
    tracker.flush()
    yield from serve(tracker)


def badge_page(page: Page, served: Served, body: str) -> None:
    """Open a page of the server's origin whose HTML is ``body``, served by the browser
    itself with the panel's CSP, loading the real badge.js."""
    url = f"{served.server.origin}/badge-page.html"

    def fulfil(route: Route) -> None:
        route.fulfill(
            status=200,
            content_type="text/html; charset=utf-8",
            headers={"content-security-policy": CSP},
            body=f"<!doctype html><html><head><meta charset='utf-8'>{body}</body></html>",
        )

    page.route(url, fulfil)
    page.goto(url)


def latest_status(served: Served, **scope: str) -> str | None:
    status: str | None = (served.api("api/runs/latest", list(scope.items()))["run"] or {}).get(
        "status"
    )
    return status


def wait_badge(page: Page, selector: str, status: str) -> None:
    page.wait_for_function(
        "([sel, status]) => document.querySelector(sel)?.dataset.status === status",
        arg=[selector, status],
    )


def shown(page: Page, selector: str) -> tuple[str, str]:
    """(message text, message background colour) of a badge's shadow DOM."""
    result: list[str] = page.evaluate(
        """sel => {
            const m = document.querySelector(sel).shadowRoot.querySelector('[role=status]');
            return [m.textContent, getComputedStyle(m).backgroundColor];
        }""",
        selector,
    )
    return result[0], result[1]


def test_the_badge_component_shows_the_latest_status_of_exactly_its_scope(
    page: Page, served: Served
) -> None:
    """Each <exectrack-badge> shows its scope's latest status (a busier scope of the same
    source does not hide it), "no runs" for a scope that never ran, in the contract's
    colour, under the panel's CSP; all of them from api/badges."""
    assert latest_status(served, source="chat", source_ref="ask") == "success"
    assert latest_status(served, source="heartbeat", source_ref="inbox") == "error"
    errors = PageErrors(page)
    badge_requests: list[str] = []
    page.on("request", lambda r: badge_requests.append(r.url) if "api/badges" in r.url else None)
    badge_page(
        page,
        served,
        '<script src="static/badge.js"></script></head><body>'
        '<exectrack-badge id="ask" source="chat" source-ref="ask"></exectrack-badge>'
        '<exectrack-badge id="inbox" source="heartbeat" source-ref="inbox"></exectrack-badge>'
        '<exectrack-badge id="none" source="nosuch"></exectrack-badge>',
    )
    expected = {"#ask": "success", "#inbox": "error", "#none": "no runs"}
    for selector, status in expected.items():
        wait_badge(page, selector, status)
        text, background = shown(page, selector)
        assert text == status
        assert background == hex_to_rgb(COLOURS[status])
    assert badge_requests, "the badges were not read from api/badges"
    assert errors.errors == []


@pytest.fixture(scope="module")
def mounted(served: Served) -> Iterator[Served]:
    """The same runs, the app mounted under /runs."""
    yield from serve(served.tracker, prefix="/runs")


def test_under_a_prefix_the_badge_component_reads_from_the_mount_point(
    page: Page, mounted: Served
) -> None:
    """badge.js loaded from /runs/static/ reads its badges under /runs/ by itself."""
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    badge_page(
        page,
        mounted,
        '<script src="runs/static/badge.js"></script></head><body>'
        '<exectrack-badge id="ask" source="chat" source-ref="ask"></exectrack-badge>',
    )
    wait_badge(page, "#ask", "success")
    api = [u for u in urls if "api/badges" in u]
    assert api and all(u.startswith(f"{mounted.url}api/badges?") for u in api)


def test_a_badge_follows_its_run_until_it_finishes(page: Page, served: Served) -> None:
    """A badge of a running run shows running, then the final status without a reload."""
    tracker = served.tracker
    run = tracker.start("skill", source_ref="job", session_id="sess-b")
    tracker.flush()
    badge_page(
        page,
        served,
        '<script src="static/badge.js"></script></head><body>'
        '<exectrack-badge id="job" source="skill" session-id="sess-b" interval="1">'
        "</exectrack-badge>",
    )
    wait_badge(page, "#job", "running")
    assert shown(page, "#job") == ("running", hex_to_rgb(COLOURS["running"]))
    page.evaluate("() => { window.__sameDocument = true; }")
    tracker.finish_success(run)
    wait_badge(page, "#job", "success")
    assert shown(page, "#job") == ("success", hex_to_rgb(COLOURS["success"]))
    assert page.evaluate("() => window.__sameDocument") is True


def test_the_svg_badge_shows_the_status_in_its_colour(page: Page, served: Served) -> None:
    """badge/{source}.svg renders (as a document and as an <img>) the latest status of
    the scope, or "no runs", in the contract's colour."""
    cases = [
        ("badge/chat.svg?source_ref=ask", "ask", "success"),
        ("badge/heartbeat.svg?source_ref=inbox", "inbox", "error"),
        ("badge/nosuch.svg", "nosuch", "no runs"),
    ]
    for path, label, status in cases:
        response = page.goto(f"{served.url}{path}")
        assert response is not None and response.ok
        assert response.headers["content-type"].startswith("image/svg+xml")
        texts = page.eval_on_selector_all("svg text", "els => els.map(e => e.textContent)")
        assert texts == [label, status]
        fills = page.eval_on_selector_all("svg rect", "els => els.map(e => e.getAttribute('fill'))")
        assert fills[-1].lower() == COLOURS[status]
    badge_page(
        page,
        served,
        '</head><body><img id="svg" alt="chat:ask" src="badge/chat.svg?source_ref=ask">',
    )
    page.wait_for_function("() => document.querySelector('#svg').complete")
    assert page.evaluate("() => document.querySelector('#svg').naturalWidth") > 0


def test_markup_in_a_badge_scope_is_text_in_the_svg(page: Page, served: Served) -> None:
    """A source_ref full of markup is escaped in the SVG: no element is made from it and
    nothing runs when the SVG is opened as a document."""
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{served.url}badge/chat.svg?source_ref={MARKUP_REF}")
    texts = page.eval_on_selector_all("svg text", "els => els.map(e => e.textContent)")
    assert texts == [MARKUP_REF, "success"]
    assert page.evaluate("() => document.querySelectorAll('img, script').length") == 0
    assert page.evaluate("() => window.__xss") is None
    assert dialogs == []


@pytest.fixture(scope="module")
def other_origin() -> Iterator[UvicornThread]:
    """Another real server on 127.0.0.1 (another port: another origin) that serves one
    page embedding the badge from the exectrack server given in ``?server=``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    def embed(request: Request) -> HTMLResponse:
        server = html.escape(request.query_params["server"], quote=True)
        origin = html.escape(request.query_params["origin"], quote=True)
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f'<script src="{server}static/badge.js"></script></head><body>'
            f'<exectrack-badge id="ask" source="chat" source-ref="ask" base="{server}">'
            "</exectrack-badge></body></html>",
            headers={"content-security-policy": f"script-src {origin}; img-src {origin}"},
        )

    server = UvicornThread(Starlette(routes=[Route("/embed.html", embed)]))
    server.start()
    yield server
    server.stop()


def test_on_another_origin_the_badge_component_shows_the_svg(
    page: Page, served: Served, other_origin: UvicornThread
) -> None:
    """A page of another origin (no CORS on the server) gets the SVG badge as an image."""
    query = urlencode({"server": served.url, "origin": served.server.origin})
    errors = PageErrors(page)
    page.goto(f"{other_origin.origin}/embed.html?{query}")
    page.wait_for_function(
        """() => {
            const img = document.querySelector('#ask')?.shadowRoot?.querySelector('img');
            return img && !img.hidden && img.complete && img.naturalWidth > 0;
        }"""
    )
    src = page.evaluate("() => document.querySelector('#ask').shadowRoot.querySelector('img').src")
    assert src.startswith(f"{served.url}badge/chat.svg?") and "source_ref=ask" in src
    assert errors.errors == []
