"""The demo agent host in a real browser: a chat turn sent from its page turns its
"latest run" badge to the turn's status, and the runs panel it mounts at /runs/ shows
that turn with its tool calls as children."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from exectrack import ExecutionTracker

from .conftest import PageErrors, UvicornThread, wait_rows

if TYPE_CHECKING:
    from playwright.sync_api import Page

# The badges refresh every 10 s by default: allow a few refreshes on a loaded machine.
BADGE_TIMEOUT_MS = 45_000


@pytest.fixture(scope="module")
def demo(module_tracker: ExecutionTracker) -> Iterator[UvicornThread]:
    from exectrack.demo.app import create_app

    server = UvicornThread(create_app(module_tracker))
    server.start()
    yield server
    server.stop()


def badge_status(page: Page, source: str) -> str | None:
    status: str | None = page.evaluate(
        "src => document.querySelector(`exectrack-badge[source='${src}']`)?.dataset.status",
        source,
    )
    return status


def test_a_chat_turn_from_the_demo_page_shows_in_its_badge_and_the_panel(
    page: Page, demo: UvicornThread, module_tracker: ExecutionTracker
) -> None:
    """Before any turn the chat badge says "no runs"; after one sent from the page it
    shows that turn's status; the panel link lists the turn, whose details link its
    tool runs."""
    errors = PageErrors(page)
    page.goto(f"{demo.origin}/")
    page.wait_for_function("() => document.querySelector('exectrack-badge')?.dataset.status")
    assert badge_status(page, "chat") == "no runs"
    page.locator("#chat button[type=submit]").click()
    page.wait_for_function("() => document.querySelector('#answer').textContent.endsWith('\\n')")
    # The turn's run ends when its response has really ended, a moment after the text.
    page.wait_for_function(
        "() => ['success', 'error'].includes("
        "document.querySelector(`exectrack-badge[source='chat']`)?.dataset.status)",
        timeout=BADGE_TIMEOUT_MS,
    )
    module_tracker.flush()
    latest = httpx.get(f"{demo.origin}/runs/api/runs/latest", params={"source": "chat"}).json()
    turn = latest["run"]
    assert badge_status(page, "chat") == turn["status"]
    page.locator('a[href="/runs/"]').click()
    page.wait_for_url(f"{demo.origin}/runs/")
    everything = httpx.get(f"{demo.origin}/runs/api/runs").json()["runs"]
    wait_rows(page, [run["id"] for run in everything])
    children = httpx.get(f"{demo.origin}/runs/api/runs/{turn['id']}").json()["children"]
    page.locator(f'#rows tr[data-id="{turn["id"]}"]').click()
    page.locator(f'#details [data-field="id"]:has-text("{turn["id"]}")').wait_for()
    links = page.locator("#details .children a.run-link")
    assert [links.nth(i).get_attribute("data-run") for i in range(links.count())] == [
        child["id"] for child in children
    ]
    assert errors.errors == []
