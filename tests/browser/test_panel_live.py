"""The panel following the change feed in a real browser while a tracker writes runs:
"load more" rows survive live updates, runs change status in place, new runs appear
only when they match, live pauses while the details are open; mounted under a prefix.

Each test writes runs in a session of its own and filters the panel to it, so the
tests of this module share one server without seeing each other's runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from exectrack import ExecutionTracker

from .conftest import PageErrors, Served, serve, wait_loaded, wait_rows

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

_sessions = itertools.count()


@pytest.fixture(scope="module")
def served(module_tracker: ExecutionTracker) -> Iterator[Served]:
    yield from serve(module_tracker)


@pytest.fixture
def session() -> str:
    """A session id no other test of the module writes to."""
    return f"live-{next(_sessions)}"


def open_session(page: Page, served: Served, session: str) -> PageErrors:
    """Open the panel filtered to one session, wait for its first page, and mark the
    document so a test can prove later that the page was never reloaded."""
    errors = PageErrors(page)
    page.goto(f"{served.url}?session_id={session}")
    wait_loaded(page)
    page.evaluate("() => { window.__sameDocument = true; }")
    return errors


def wait_live(page: Page) -> None:
    """Wait until the change feed is connected (so writes from now on reach the page)."""
    page.wait_for_function(
        "() => ['live', 'polling'].includes(document.querySelector('#live-state').dataset.state)"
    )


def wait_status(page: Page, run_id: str, status: str) -> None:
    page.locator(f'#rows tr[data-id="{run_id}"][data-status="{status}"]').wait_for()


def assert_same_document(page: Page) -> None:
    assert page.evaluate("() => window.__sameDocument") is True, "the page was reloaded"


def test_load_more_then_a_live_update_keeps_every_loaded_row_and_adds_the_new_one(
    page: Page, served: Served, session: str
) -> None:
    """After "load more" fetched the second page, a new run arriving through the change
    feed is added at the top and none of the 60 loaded rows is thrown away."""
    tracker = served.tracker
    for i in range(60):
        tracker.finish_success(tracker.start("skill", source_ref=f"step-{i}", session_id=session))
    every = served.list_ids([("session_id", session)], limit=500)
    assert len(every) == 60
    errors = open_session(page, served, session)
    wait_rows(page, every[:50])
    page.locator("#load-more").click()
    wait_rows(page, every)
    assert page.locator("#load-more").is_hidden()
    wait_live(page)
    new = tracker.start("chat", source_ref="late", session_id=session)
    wait_rows(page, [new.id, *every])
    tracker.finish_success(new)
    wait_status(page, new.id, "success")
    assert page.locator("#rows tr").count() == 61
    assert_same_document(page)
    assert errors.errors == []


def test_live_inserts_above_the_loaded_pages_without_duplicating_later_ones(
    page: Page, served: Served, session: str
) -> None:
    """With more pages still to load, a new run goes on top, and "load more" afterwards
    brings the rest exactly once."""
    tracker = served.tracker
    for i in range(55):
        tracker.finish_success(tracker.start("skill", source_ref=f"s-{i}", session_id=session))
    every = served.list_ids([("session_id", session)], limit=500)
    open_session(page, served, session)
    wait_rows(page, every[:50])
    wait_live(page)
    new = tracker.start("skill", source_ref="on-top", session_id=session)
    wait_rows(page, [new.id, *every[:50]])
    page.locator("#load-more").click()
    wait_rows(page, [new.id, *every])


def test_a_run_that_finishes_while_the_page_is_open_changes_status_in_place(
    page: Page, served: Served, session: str
) -> None:
    """A running row turns into its final status, error code and duration without a
    reload; its elapsed time was counting before."""
    tracker = served.tracker
    run = tracker.start("heartbeat", source_ref="inbox", session_id=session)
    tracker.flush()
    open_session(page, served, session)
    wait_status(page, run.id, "running")
    row = page.locator(f'#rows tr[data-id="{run.id}"]')
    assert row.locator(".c-status").inner_text() == "running"
    wait_live(page)
    tracker.finish_error(run, code="rate_limited", message="slow down")
    wait_status(page, run.id, "error")
    assert row.locator(".c-status").inner_text() == "error"
    assert row.locator(".c-error").inner_text() == "rate_limited"
    final = served.api(f"api/runs/{run.id}")["run"]
    assert final["status"] == "error"
    assert row.locator(".c-duration").get_attribute("class") == "c-duration num"
    assert_same_document(page)


def test_a_run_that_does_not_match_the_filters_is_not_inserted(
    page: Page, served: Served, session: str
) -> None:
    """Live changes go through the page's filters: a running run of another session and
    a queued run of this one stay out; the running run written after them comes in."""
    tracker = served.tracker
    tracker.finish_success(tracker.start("chat", session_id=session))
    page.goto(f"{served.url}?session_id={session}&status=running")
    wait_loaded(page)
    wait_rows(page, [])
    wait_live(page)
    elsewhere = tracker.start("chat", session_id=f"{session}-other")
    queued = tracker.start("chat", session_id=session, queued=True)
    tracker.flush()
    matching = tracker.start("chat", session_id=session)
    wait_rows(page, [matching.id])  # the feed is ordered: the others came first
    tracker.finish_success(elsewhere)
    tracker.finish_with_status(queued, "canceled")
    tracker.finish_success(matching)


def test_live_pauses_while_the_details_are_open_and_catches_up_after(
    page: Page, served: Served, session: str
) -> None:
    """Opening a run's details pauses the feed (and says so); closing them resumes it
    from where it stopped, so a run written meanwhile appears."""
    tracker = served.tracker
    first = tracker.start("chat", session_id=session)
    tracker.finish_success(first)
    tracker.flush()
    open_session(page, served, session)
    wait_rows(page, [first.id])
    wait_live(page)
    page.locator(f'#rows tr[data-id="{first.id}"]').click()
    page.locator("#details").wait_for()
    page.wait_for_function("() => document.querySelector('#live-state').dataset.state === 'paused'")
    meanwhile = tracker.start("skill", session_id=session)
    tracker.flush()
    page.keyboard.press("Escape")
    page.locator("#details").wait_for(state="hidden")
    wait_rows(page, [meanwhile.id, first.id])
    tracker.finish_success(meanwhile)
    wait_status(page, meanwhile.id, "success")
    assert_same_document(page)


def test_the_live_toggle_stops_and_resumes_updates(
    page: Page, served: Served, session: str
) -> None:
    """Live off: the state says off; on again: runs written meanwhile arrive."""
    tracker = served.tracker
    open_session(page, served, session)
    wait_live(page)
    page.locator("#live").uncheck()
    page.wait_for_function("() => document.querySelector('#live-state').dataset.state === 'off'")
    run = tracker.start("chat", session_id=session)
    tracker.finish_success(run)
    tracker.flush()
    synced = page.locator("#last-synced").get_attribute("datetime")
    page.locator("#live").check()
    wait_rows(page, [run.id])
    assert page.locator("#last-synced").get_attribute("datetime") != synced
    assert_same_document(page)


@pytest.fixture(scope="module")
def mounted(module_tracker: ExecutionTracker) -> Iterator[Served]:
    """The same app mounted under /runs inside an outer Starlette app."""
    yield from serve(module_tracker, prefix="/runs")


def test_mounted_under_a_prefix_the_panel_loads_opens_details_and_follows_live(
    new_context: Callable[..., BrowserContext], mounted: Served, session: str
) -> None:
    """Under /runs/ every request stays under /runs/; the table, details and the live
    feed all work."""
    tracker = mounted.tracker
    run = tracker.start("skill", source_ref="mounted", session_id=session)
    tracker.flush()
    page = new_context().new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    errors = open_session(page, mounted, session)
    wait_rows(page, [run.id])
    wait_live(page)
    tracker.finish_success(run)
    wait_status(page, run.id, "success")
    page.locator(f'#rows tr[data-id="{run.id}"]').click()
    page.locator(f'#details [data-field="id"]:has-text("{run.id}")').wait_for()
    assert urls and all(u.startswith(mounted.url) or u.startswith("data:") for u in urls), [
        u for u in urls if not u.startswith(mounted.url)
    ]
    assert errors.errors == []


@pytest.fixture(scope="module")
def protected(module_tracker: ExecutionTracker) -> Iterator[Served]:
    """The app with an access token."""
    yield from serve(module_tracker, token="s3cret-token")


def test_with_a_token_the_panel_loads_follows_live_and_keeps_the_token_out_of_links(
    page: Page, protected: Served, session: str
) -> None:
    """Opened once as ?token=..., the panel loads its files and runs, follows the live
    feed, drops the token from the address bar (deep links never carry it) and still
    works after a reload of that address."""
    for name in ("panel.js", "api.js", "format.js", "panel.css"):
        # what the page loads before it can know the token
        assert httpx.get(f"{protected.url}static/{name}").status_code == 200, name
    assert httpx.get(f"{protected.url}api/runs").status_code == 401
    tracker = protected.tracker
    run = tracker.start("chat", session_id=session)
    tracker.flush()
    errors = PageErrors(page)
    page.goto(f"{protected.url}?token=s3cret-token&session_id={session}")
    wait_rows(page, [run.id])
    wait_live(page)
    tracker.finish_success(run)
    wait_status(page, run.id, "success")
    assert "token" not in page.url and f"session_id={session}" in page.url
    page.locator(f'#rows tr[data-id="{run.id}"]').click()
    page.locator(f'#details [data-field="id"]:has-text("{run.id}")').wait_for()
    assert "token" not in page.url
    assert errors.errors == []


def test_the_mount_point_without_its_slash_leads_to_the_panel(
    page: Page, mounted: Served, session: str
) -> None:
    """/runs (no trailing slash) ends at the working panel under /runs/."""
    run = mounted.tracker.start("chat", session_id=session)
    mounted.tracker.finish_success(run)
    mounted.tracker.flush()
    page.goto(f"{mounted.server.origin}/runs?session_id={session}")
    wait_rows(page, [run.id])
    assert page.url.startswith(mounted.url)


def test_when_the_server_cannot_be_reached_the_panel_says_so_and_retries(
    page: Page, served: Served, session: str
) -> None:
    """A first page that fails to load (connection refused) shows the error, and the
    panel tries again by itself while live is on."""
    run = served.tracker.start("chat", session_id=session)
    served.tracker.finish_success(run)
    served.tracker.flush()
    refused: list[str] = []

    def refuse_once(route: Route) -> None:
        if refused:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("connectionrefused")

    page.route("**/api/runs?*", refuse_once)
    page.goto(f"{served.url}?session_id={session}")
    page.locator("#error").wait_for(state="visible")
    wait_rows(page, [run.id])
    assert page.locator("#error").is_hidden()
    assert len(refused) == 1


def test_without_the_event_stream_the_panel_polls_the_change_feed(
    page: Page, served: Served, session: str
) -> None:
    """Where the event stream is refused (a proxy, an older server), the panel follows
    api/runs/changes by polling and still updates in place and inserts."""
    page.route(
        "**/api/runs/changes/stream*",
        lambda route: route.fulfill(status=404, content_type="application/json", body="{}"),
    )
    run = served.tracker.start("skill", session_id=session)
    served.tracker.flush()
    open_session(page, served, session)
    wait_rows(page, [run.id])
    page.wait_for_function(
        "() => document.querySelector('#live-state').dataset.state === 'polling'"
    )
    served.tracker.finish_success(run)
    wait_status(page, run.id, "success")
    new = served.tracker.start("chat", session_id=session)
    wait_rows(page, [new.id, run.id])
    served.tracker.finish_success(new)
    assert_same_document(page)


def test_the_summary_strip_follows_new_runs(page: Page, served: Served, session: str) -> None:
    """A run of a source the strip has not shown yet brings that source's card, with
    the report's figures, without a reload."""
    source = f"src-{session}"
    open_session(page, served, session)
    wait_live(page)
    assert page.locator(f'#summary .card[data-source="{source}"]').count() == 0
    run = served.tracker.start(source, session_id=session)
    card = page.locator(f'#summary .card[data-source="{source}"]')
    card.wait_for()
    assert card.locator('[data-stat="started"] dd').inner_text() == "1"
    assert card.locator('[data-stat="open"] dd').inner_text() == "1"
    served.tracker.finish_success(run)
    page.wait_for_function(
        """sel => document.querySelector(sel)?.textContent === '100 %'""",
        arg=f'#summary .card[data-source="{source}"] [data-stat="success-rate"] dd',
    )
    assert_same_document(page)
