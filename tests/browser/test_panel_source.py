"""Rules the panel's files keep, read from the package data (no browser needed): no
HTML built from strings, nothing inline for the CSP to block, nothing from the network."""

from __future__ import annotations

import re
from importlib import resources

import pytest

PANEL_FILES = ["index.html", "panel.js", "api.js", "format.js", "panel.css"]


def read(name: str) -> str:
    return resources.files("exectrack.server").joinpath("static", name).read_text("utf-8")


def test_the_panel_files_are_package_data() -> None:
    for name in PANEL_FILES:
        assert read(name).strip(), name


@pytest.mark.parametrize("name", [n for n in PANEL_FILES if n.endswith(".js")])
def test_the_panel_scripts_never_parse_strings_as_html(name: str) -> None:
    """Run text reaches the page through textContent and text nodes only."""
    source = read(name)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, sink
    assert not re.search(r"new\s+Function\s*\(", source)


def test_index_html_has_nothing_inline_for_the_csp_to_block() -> None:
    page = read("index.html")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script"
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+\s*=", page), "inline event handler"


@pytest.mark.parametrize("name", PANEL_FILES)
def test_the_panel_loads_nothing_from_the_network(name: str) -> None:
    """No CDN, fonts or absolute URLs: the panel works offline, wherever it is mounted."""
    text = read(name)
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.IGNORECASE), name
    assert "@import" not in text
    assert not re.search(r"""(src|href)=["']/""", text), "a root-absolute URL"
