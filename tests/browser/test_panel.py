"""The panel in a real browser over a fixed set of runs: loading, filters, details, copy,
deep links, keyboard, narrow windows, status colours and untrusted text."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

import pytest

from exectrack import ExecutionTracker, FakeClock, RunStatus

from .conftest import (
    TIMEOUT_MS,
    PageErrors,
    Served,
    pretty,
    row_ids,
    serve,
    wait_loaded,
    wait_rows,
)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

# The contract's one table of status colours (panel, badges, API docs).
STATUS_COLOURS = {
    "queued": "#6b7280",
    "running": "#2563eb",
    "success": "#15803d",
    "error": "#b91c1c",
    "canceled": "#b45309",
    "timeout": "#7e22ce",
}

XSS_MESSAGE = '<img src=x onerror="window.__xss=1;alert(1)"> <script>window.__xss=2</script>'
XSS_REF = '<img src=x onerror="window.__xss=3">'
XSS_SESSION = "<script>window.__xss=4</script>"
XSS_METADATA = {
    "html": '<img src=x onerror="window.__xss=5;alert(5)">',
    "script": "<script>window.__xss=6;alert(6)</script>",
    "<b>key</b>": "</pre><img src=x onerror=window.__xss=7>",
}
COPY_METADATA = {"model": "small", "tokens": 1234, "tags": ["a", "b"], "nested": {"ok": True}}


def _seed(tracker: ExecutionTracker) -> dict[str, str]:
    """A known set of runs: every status, three sources, sessions, refs, a parent with
    children, a stream, runs from three days ago and one full of markup. Returns the
    ids of the runs tests refer to."""
    ids: dict[str, str] = {}
    outcomes = ["success", "error", "success", "canceled", "timeout", "success", "error"]
    refs = ["search", "summarize", "inbox", "fetch_url"]
    for i in range(21):
        source = ("chat", "skill", "heartbeat")[i % 3]
        run = tracker.start(
            source,
            source_ref=refs[i % 4],
            session_id=f"sess-{i % 3}",
            metadata={"i": i},
        )
        outcome = outcomes[i % len(outcomes)]
        if outcome == "success":
            tracker.finish_success(run)
        elif outcome == "error":
            message = "provider unavailable: upstream 503" if i % 2 else "rate limited by upstream"
            tracker.finish_error(run, code="provider_unavailable", message=message)
        else:
            tracker.finish_with_status(run, outcome)
    ids["running"] = tracker.start("skill", source_ref="long_job", session_id="sess-1").id
    ids["queued"] = tracker.start("heartbeat", source_ref="inbox", queued=True).id

    copy = tracker.start(
        "chat", source_ref="answer", session_id="sess-copy", metadata=COPY_METADATA
    )
    tracker.finish_error(copy, code="rate_limited", message="Rate limited: retry after 20 s")
    ids["copy"] = copy.id

    with tracker.with_run("chat", source_ref="turn", session_id="sess-tree") as parent:
        with tracker.with_run("skill", source_ref="search", session_id="sess-tree"):
            pass
        with tracker.with_run("skill", source_ref="summarize", session_id="sess-tree"):
            pass
    ids["parent"] = parent.id

    @tracker.with_run("chat", source_ref="streamed", session_id="sess-stream")
    def tokens() -> Iterator[str]:
        yield from ("one", "two", "three")

    assert list(tokens()) == ["one", "two", "three"]

    xss = tracker.start("chat", source_ref=XSS_REF, session_id=XSS_SESSION, metadata=XSS_METADATA)
    tracker.finish_error(xss, code="provider_unavailable", message=XSS_MESSAGE)
    ids["xss"] = xss.id

    # Runs from three days ago, written by a tracker whose clock is set back.
    past = ExecutionTracker(
        tracker.store,
        strict=True,
        durability="sync",
        lease=None,
        clock=FakeClock(datetime.now(UTC) - timedelta(days=3)),
    )
    for i in range(4):
        old = past.start("skill", source_ref="nightly", session_id="sess-old")
        assert isinstance(past.clock, FakeClock)
        past.clock.advance(60)
        past.finish_success(old, metadata={"night": i})
    past.close()
    tracker.flush()
    return ids


@pytest.fixture(scope="module")
def seeded(module_tracker: ExecutionTracker) -> dict[str, str]:
    return _seed(module_tracker)


@pytest.fixture(scope="module")
def served(module_tracker: ExecutionTracker, seeded: dict[str, str]) -> Iterator[Served]:
    yield from serve(module_tracker)


def open_panel(page: Page, served: Served, query: str = "") -> PageErrors:
    errors = PageErrors(page)
    page.goto(served.url + query)
    wait_loaded(page)
    return errors


def hex_to_rgb(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_panel_loads_the_runs_newest_first_as_the_api_lists_them(
    page: Page, served: Served, artifacts: Path
) -> None:
    """The panel at the mount root shows the API's first page, in its order, with a
    strict CSP and no script errors; every row shows its run's fields."""
    errors = PageErrors(page)
    response = page.goto(served.url)
    assert response is not None
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    page_one = served.api("api/runs", [("limit", "50")])
    wait_rows(page, [run["id"] for run in page_one["runs"]])
    first = page_one["runs"][0]
    row = page.locator(f'#rows tr[data-id="{first["id"]}"]')
    assert row.locator(".c-source").inner_text() == first["source"]
    assert row.locator(".c-status").inner_text() == first["status"]
    assert row.locator(".c-ref").inner_text() == (first["source_ref"] or "")
    assert row.locator(".c-session").inner_text() == (first["session_id"] or "")
    assert row.locator(".c-error").inner_text() == (first["error_code"] or "")
    assert row.locator("time").get_attribute("datetime") == first["started_at"]
    page.screenshot(path=str(artifacts / "panel.png"), full_page=True)
    assert errors.errors == []


def test_summary_strip_shows_each_sources_report(page: Page, served: Served) -> None:
    """One card per source of api/report, with its started count, open runs and rates."""
    open_panel(page, served)
    report = served.api("api/report", [("since", "24h")])
    for source in report["sources"]:
        card = page.locator(f'#summary .card[data-source="{source["source"]}"]')
        assert card.locator('[data-stat="started"] dd').inner_text() == str(source["started"])
        assert card.locator('[data-stat="open"] dd').inner_text() == str(source["open"])
        finished = sum(n for s, n in source["by_status"].items() if s not in ("queued", "running"))
        rates = {
            "success-rate": source["by_status"]["success"] / finished,
            "hang-rate": source["hang_rate"],
        }
        for stat, rate in rates.items():
            shown = card.locator(f'[data-stat="{stat}"] dd').inner_text()
            assert shown.endswith(" %") and rate is not None, (stat, shown, rate)
            assert abs(float(shown.removesuffix(" %")) - rate * 100) < 0.051, (stat, shown)
        oldest = card.locator('[data-stat="oldest-open"] dd').inner_text()
        if source["oldest_open_age_s"] is None:
            assert oldest == "—"
        else:
            assert re.fullmatch(r"[\d.]+ (ms|s)|\d+ m \d\d s", oldest), oldest
    assert page.locator("#summary .card").count() == len(report["sources"])


FILTERS: dict[str, tuple[list[tuple[str, str]], Callable[[Page], None]]] = {
    "source": ([("source", "heartbeat")], lambda p: p.fill("input[name=source]", "heartbeat")),
    "two-statuses": (
        [("status", "error"), ("status", "timeout")],
        lambda p: (p.check("input[name=status][value=error]"), p.check("input[value=timeout]")),
    ),
    "session_id": (
        [("session_id", "sess-1")],
        lambda p: p.fill("input[name=session_id]", "sess-1"),
    ),
    "source_ref": (
        [("source_ref", "summarize")],
        lambda p: p.fill("input[name=source_ref]", "summarize"),
    ),
    "text": ([("text", "UPSTREAM")], lambda p: p.fill("input[name=text]", "UPSTREAM")),
    "since": ([("since", "2d")], lambda p: p.fill("input[name=since]", "2d")),
    "until": ([("until", "1d")], lambda p: p.fill("input[name=until]", "1d")),
    "two-sources": (
        [("source", "chat"), ("source", "heartbeat")],
        lambda p: p.fill("input[name=source]", "chat, heartbeat"),
    ),
    "source-and-status": (
        [("source", "skill"), ("status", "success")],
        lambda p: (p.fill("input[name=source]", "skill"), p.check("input[value=success]")),
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_each_filter_narrows_the_table_to_what_the_api_returns(
    page: Page, served: Served, name: str
) -> None:
    """Setting a filter in the form shows exactly the runs api/runs returns for it,
    newest first, and writes the filter into the page URL."""
    params, set_filter = FILTERS[name]
    everything = served.list_ids([], limit=500)
    expected = served.list_ids(params)
    assert 0 < len(expected) < len(everything), "the data set must make this filter narrow"
    errors = open_panel(page, served)
    set_filter(page)
    page.locator("#filters button[type=submit]").click()
    wait_rows(page, expected)
    query = parse_qsl(urlsplit(page.url).query)
    assert sorted(query) == sorted(params)
    assert errors.errors == []


def test_an_invalid_filter_shows_the_apis_error_naming_the_parameter(
    page: Page, served: Served
) -> None:
    """A time the API cannot read is reported next to the form, not swallowed."""
    open_panel(page, served)
    page.fill("input[name=since]", "yesterday-ish")
    page.keyboard.press("Enter")
    alert = page.locator("#error")
    alert.wait_for(state="visible")
    assert "since" in alert.inner_text()
    assert page.locator("input[name=since]").get_attribute("aria-invalid") == "true"


def test_text_shorter_than_three_characters_is_not_searched(page: Page, served: Served) -> None:
    """Text search reads a trigram index; shorter text would make the server read
    every run. Two characters say so next to the form, leave the table as it was and
    send no request with them; a third character searches."""
    everything = served.list_ids([])
    narrowed = served.list_ids([("text", "UPSTREAM")])
    assert 0 < len(narrowed) < len(everything)
    errors = open_panel(page, served)
    wait_rows(page, everything)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.fill("input[name=text]", "UP")
    page.keyboard.press("Enter")
    alert = page.locator("#error")
    alert.wait_for(state="visible")
    assert alert.inner_text() == (
        "text: type at least 3 characters: shorter text cannot use the search index"
    )
    assert page.locator("input[name=text]").get_attribute("aria-invalid") == "true"
    page.fill("input[name=text]", "UPSTREAM")
    page.keyboard.press("Enter")
    wait_rows(page, narrowed)
    alert.wait_for(state="hidden")
    assert [u for u in asked if ("text", "UP") in parse_qsl(urlsplit(u).query)] == []
    assert ("text", "UPSTREAM") in parse_qsl(urlsplit(page.url).query)
    assert errors.errors == []


def test_a_link_with_too_short_text_lists_everything_and_says_why(
    page: Page, served: Served
) -> None:
    """A hand-made link with two characters of text keeps them in the box, lists as
    if there were no text filter, and shows why."""
    open_panel(page, served, "?text=UP")
    wait_rows(page, served.list_ids([]))
    assert page.locator("input[name=text]").input_value() == "UP"
    assert "at least 3 characters" in page.locator("#error").inner_text()


def open_details_of(page: Page, run_id: str) -> None:
    page.locator(f'#rows tr[data-id="{run_id}"]').click()
    page.locator(f'#details [data-field="id"]:has-text("{run_id}")').wait_for()


def test_details_show_every_field_and_pretty_metadata_and_copy_exact_text(
    new_context: Callable[..., BrowserContext],
    served: Served,
    seeded: dict[str, str],
    artifacts: Path,
) -> None:
    """The details view lists every field of the run; each copy button puts the exact
    text on the clipboard and says "Copied"."""
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    errors = open_panel(page, served)
    run = served.api(f"api/runs/{seeded['copy']}")["run"]
    open_details_of(page, run["id"])
    dialog = page.locator("#details")
    for field in run:
        assert dialog.locator(f'[data-field="{field}"]').count() == 1, field
    assert dialog.locator('[data-field="metadata"]').inner_text() == pretty(COPY_METADATA)
    assert (
        dialog.locator('[data-field="error_message"]').inner_text().startswith(run["error_message"])
    )
    page.screenshot(path=str(artifacts / "details.png"))
    expected = {
        "id": run["id"],
        "session_id": "sess-copy",
        "error_message": "Rate limited: retry after 20 s",
        "metadata": pretty(COPY_METADATA),
        "link": page.url,
    }
    assert urlsplit(page.url).fragment == f"run={run['id']}"
    for name, text in expected.items():
        button = dialog.locator(f'button[data-copy="{name}"]')
        button.click()
        page.wait_for_function("el => el.textContent === 'Copied'", arg=button.element_handle())
        assert page.evaluate("() => navigator.clipboard.readText()") == text, name
    assert errors.errors == []


def test_copy_falls_back_when_the_clipboard_api_refuses(
    new_context: Callable[..., BrowserContext], served: Served, seeded: dict[str, str]
) -> None:
    """Where navigator.clipboard.writeText rejects, the copy still lands (a selected
    textarea and execCommand) and still says "Copied"."""
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    context.add_init_script(
        "navigator.clipboard.writeText = () => Promise.reject(new Error('denied'));"
    )
    page = context.new_page()
    open_panel(page, served)
    open_details_of(page, seeded["copy"])
    button = page.locator('#details button[data-copy="id"]')
    button.click()
    page.wait_for_function("el => el.textContent === 'Copied'", arg=button.element_handle())
    assert page.evaluate("() => navigator.clipboard.readText()") == seeded["copy"]


def test_details_link_parent_and_children(
    page: Page, served: Served, seeded: dict[str, str]
) -> None:
    """A parent's details list its children as links; a child's details link back."""
    open_panel(page, served)
    detail = served.api(f"api/runs/{seeded['parent']}")
    children = [c["id"] for c in detail["children"]]
    assert len(children) == 2
    open_details_of(page, seeded["parent"])
    links = page.locator("#details .children a.run-link")
    assert [links.nth(i).get_attribute("data-run") for i in range(links.count())] == children
    links.first.click()
    page.locator(f'#details [data-field="id"]:has-text("{children[0]}")').wait_for()
    parent_link = page.locator('#details [data-field="parent_id"] a')
    assert parent_link.inner_text() == seeded["parent"]
    assert urlsplit(page.url).fragment == f"run={children[0]}"
    parent_link.click()
    page.locator(f'#details [data-field="id"]:has-text("{seeded["parent"]}")').wait_for()


def test_a_streams_details_show_items_and_time_to_first_item(page: Page, served: Served) -> None:
    """A tracked stream's details show how many items it yielded and its first-item time."""
    runs = served.api("api/runs", [("session_id", "sess-stream")])["runs"]
    assert len(runs) == 1 and runs[0]["items"] == 3
    open_panel(page, served)
    open_details_of(page, runs[0]["id"])
    assert page.locator('#details [data-field="items"]').inner_text() == "3"
    first_item = page.locator('#details [data-field="first_item_ms"]').inner_text()
    assert f"{runs[0]['first_item_ms']} ms" in first_item


def test_a_deep_link_restores_filters_and_the_selected_run(
    page: Page, served: Served, seeded: dict[str, str]
) -> None:
    """Opening a link with filters in the query and a run in the hash shows that filtered
    table with those filters in the form and that run's details open."""
    params = [("source", "chat"), ("status", "error"), ("status", "success")]
    expected = served.list_ids(params)
    errors = PageErrors(page)
    page.goto(f"{served.url}?source=chat&status=error&status=success#run={seeded['copy']}")
    page.locator(f'#details [data-field="id"]:has-text("{seeded["copy"]}")').wait_for()
    wait_rows(page, expected)
    assert page.input_value("input[name=source]") == "chat"
    checked = page.eval_on_selector_all(
        "input[name=status]:checked", "els => els.map(e => e.value)"
    )
    assert checked == ["success", "error"]
    assert errors.errors == []


def test_a_deep_link_to_an_unknown_run_says_so(page: Page, served: Served) -> None:
    """A link to a run id the store does not have opens the details with the API's
    not-found message, and the table still loads."""
    page.goto(f"{served.url}#run=01000000-0000-7000-8000-000000000000")
    alert = page.locator("#details [role=alert]")
    alert.wait_for()
    assert alert.inner_text()
    wait_rows(page, served.list_ids([]))


def test_filters_and_selection_set_in_the_page_make_a_link_that_restores_them(
    page: Page, new_context: Callable[..., BrowserContext], served: Served
) -> None:
    """The URL follows the filters and the open run, so it can be pasted elsewhere."""
    params = [("session_id", "sess-2"), ("status", "success")]
    expected = served.list_ids(params)
    open_panel(page, served)
    page.fill("input[name=session_id]", "sess-2")
    page.check("input[name=status][value=success]")
    wait_rows(page, expected)
    open_details_of(page, expected[1])
    link = page.url
    other = new_context().new_page()
    other.goto(link)
    other.locator(f'#details [data-field="id"]:has-text("{expected[1]}")').wait_for()
    wait_rows(other, expected)
    assert other.input_value("input[name=session_id]") == "sess-2"


def test_markup_in_run_text_renders_as_text_and_runs_nothing(
    new_context: Callable[..., BrowserContext], served: Served, seeded: dict[str, str]
) -> None:
    """<img onerror> and <script> in an error message, source ref, session and metadata
    show as literal text in the table and details; no element is created and nothing
    runs, even with the page's CSP bypassed (so the rendering itself is what is tested)."""
    context = new_context(bypass_csp=True)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors = open_panel(page, served)
    row = page.locator(f'#rows tr[data-id="{seeded["xss"]}"]')
    assert row.locator(".c-ref").inner_text() == XSS_REF
    assert row.locator(".c-session").inner_text() == XSS_SESSION
    open_details_of(page, seeded["xss"])
    details = page.locator("#details")
    assert details.locator('[data-field="error_message"] .message').inner_text() == XSS_MESSAGE
    assert details.locator('[data-field="source_ref"]').inner_text() == XSS_REF
    assert details.locator('[data-field="metadata"]').inner_text() == pretty(XSS_METADATA)
    # A control: the same payload inserted as HTML would run here (no CSP), so the
    # checks below would catch a panel that rendered run text as HTML.
    page.evaluate(
        """() => new Promise(done => {
            const probe = document.createElement('div');
            probe.innerHTML = '<img src="data:," onerror="window.__probe=1">';
            probe.querySelector('img').addEventListener('error', () => setTimeout(done, 0));
            document.body.append(probe);
        })"""
    )
    assert page.evaluate("() => window.__probe") == 1
    assert page.evaluate("() => window.__xss") is None
    counts = page.evaluate(
        """() => ['#rows', '#details', '#summary'].map(
            s => document.querySelectorAll(`${s} img, ${s} script, ${s} b`).length)"""
    )
    assert counts == [0, 0, 0]
    assert dialogs == []
    assert errors.errors == []


def test_keyboard_tab_to_a_row_enter_opens_escape_closes(page: Page, served: Served) -> None:
    """The table is one Tab stop with a visible focus; arrows move between rows; Enter
    opens the focused row's details and Escape closes them, giving focus back to the
    row; the next Tab leaves the table."""
    open_panel(page, served)
    ids = row_ids(page)
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('#rows tr')"):
            break
    else:
        pytest.fail("Tab never reached a row of the table")
    focused = "() => document.activeElement.dataset.id"
    assert page.evaluate(focused) == ids[0]
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"
    )
    assert outline[0] != "none" and outline[1] > 0
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    assert page.evaluate(focused) == ids[1]
    page.keyboard.press("Enter")
    page.locator(f'#details [data-field="id"]:has-text("{ids[1]}")').wait_for()
    assert page.locator("#details").is_visible()
    page.keyboard.press("Escape")
    page.locator("#details").wait_for(state="hidden")
    assert page.evaluate(focused) == ids[1]
    page.wait_for_function("() => location.hash === ''")  # the URL follows the close
    page.keyboard.press("End")
    assert page.evaluate(focused) == ids[-1]
    page.keyboard.press("Tab")
    assert not page.evaluate("() => document.activeElement.matches('#rows tr')")


def test_a_narrow_window_does_not_scroll_the_page_sideways(
    new_context: Callable[..., BrowserContext],
    served: Served,
    seeded: dict[str, str],
    artifacts: Path,
) -> None:
    """At 375 px wide the page body never overflows horizontally (the table scrolls in
    its own box), with or without the details open."""
    page = new_context(viewport={"width": 375, "height": 812}).new_page()
    open_panel(page, served)
    overflow = "() => [document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]"
    html_width, body_width, width = page.evaluate(overflow)
    assert html_width <= width and body_width <= width
    page.screenshot(path=str(artifacts / "panel-375px.png"), full_page=True)
    open_details_of(page, seeded["copy"])
    html_width, body_width, width = page.evaluate(overflow)
    assert html_width <= width and body_width <= width
    box = page.locator("#details").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    page.screenshot(path=str(artifacts / "details-375px.png"))


def test_each_status_has_one_colour_and_label_everywhere(
    page: Page, served: Served, seeded: dict[str, str]
) -> None:
    """Table pills, filter chips and the details view use the contract's colour and
    label for every status."""
    open_panel(page, served)
    for status, colour in STATUS_COLOURS.items():
        rgb = hex_to_rgb(colour)
        pills = page.locator(f'#rows tr[data-status="{status}"] .c-status .status')
        assert pills.count() > 0, status
        assert pills.first.inner_text() == status
        assert pills.first.evaluate("e => getComputedStyle(e).backgroundColor") == rgb
        dot = page.locator(f"#status-filter .chip.st-{status} .dot")
        assert dot.evaluate("e => getComputedStyle(e).backgroundColor") == rgb
        assert page.locator(f"#status-filter .chip.st-{status}").inner_text().strip() == status
    open_details_of(page, seeded["running"])
    pill = page.locator('#details [data-field="status"] .status')
    assert pill.inner_text() == "running"
    assert pill.evaluate("e => getComputedStyle(e).backgroundColor") == hex_to_rgb("#2563eb")
    assert {s.value for s in RunStatus} == set(STATUS_COLOURS)


def test_a_running_run_shows_a_live_elapsed_time(
    page: Page, served: Served, seeded: dict[str, str]
) -> None:
    """An open run's duration cell counts up while the page is open."""
    open_panel(page, served)
    cell = page.locator(f'#rows tr[data-id="{seeded["running"]}"] .c-duration')
    first = cell.inner_text()
    assert re.fullmatch(r"[\d.]+ (ms|s)|\d+ m \d\d s", first)
    page.wait_for_function(
        "([el, first]) => el.textContent !== first",
        arg=[cell.element_handle(), first],
        timeout=TIMEOUT_MS,
    )


def test_the_panel_reads_nothing_it_does_not_need(page: Page, served: Served) -> None:
    """Everything the panel loads comes from its own server (works offline, no CDN)."""
    origins: set[str] = set()
    page.on("request", lambda r: origins.add(re.sub(r"^(\w+://[^/]+).*$", r"\1", r.url)))
    open_panel(page, served)
    assert origins <= {served.server.origin, "data:,"}
