"""The panel's files pinned (mutation testing, issue 11): which names are served, with
which content type, and where the page's <base> goes. Served from a folder made here
(the package's own static/ holds six files of four types), and from the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

import exectrack.server._static as static
from exectrack.server._static import index_html, static_file


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """static/ is this folder."""
    monkeypatch.setattr(static, "_static_root", lambda: tmp_path)
    return tmp_path


def test_the_packaged_panel_page_and_modules_are_served() -> None:
    """index.html and a module come from the package with their types, byte for byte."""
    folder = resources.files("exectrack.server").joinpath("static")
    page = static_file("index.html")
    assert page == (folder.joinpath("index.html").read_bytes(), "text/html; charset=utf-8")
    module = static_file("panel.js")
    assert module == (folder.joinpath("panel.js").read_bytes(), "text/javascript; charset=utf-8")
    assert index_html("/runs").startswith(page[0].decode("utf-8")[:15])
    assert "The runs panel is not installed" not in index_html("/")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("app.JS", "text/javascript; charset=utf-8"),
        ("sub/deeper/style.css", "text/css; charset=utf-8"),
        ("archive.tar.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
        ("css", "application/octet-stream"),
        ("picture.webp", "image/webp"),
        ("notes.TXT", "text/plain; charset=utf-8"),
        ("bundle.gz", "application/octet-stream"),
        ("LICENSE", "application/octet-stream"),
        ("data.unknownext", "application/octet-stream"),
    ],
)
def test_content_types(root: Path, name: str, kind: str) -> None:
    """The type comes from the last suffix (any case) in the table, else from mimetypes,
    else application/octet-stream; folders in the path are walked."""
    path = root.joinpath(*name.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"content of " + name.encode())
    assert static_file(name) == (b"content of " + name.encode(), kind)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "missing.js",
        "sub",
        "sub/",
        "../x.js",
        ".hidden",
        "sub/.x",
        "a b.js",
        "/abs.js",
        "x" * 129,
    ],
)
def test_names_that_are_not_served(root: Path, name: str) -> None:
    """Absent files, folders, hidden or odd names and paths out of the folder are None."""
    (root / "sub").mkdir()
    (root / "sub" / ".x").write_text("hidden")
    (root / ".hidden").write_text("hidden")
    (root / "a b.js").write_text("spaced")
    assert static_file(name) is None


def test_index_without_a_packaged_page_is_the_placeholder(root: Path) -> None:
    """No index.html: the placeholder page, with the base inserted into its head."""
    page = index_html("/runs/")
    assert page.startswith('<!doctype html>\n<html lang="en">\n<head>\n<base href="/runs/">\n')
    assert "The runs panel is not installed in this build." in page


@pytest.mark.parametrize(
    ("page", "root_path", "expected"),
    [
        (
            "<html><HEAD lang=x><title>t</title></HEAD></html>",
            "/runs",
            '<html><HEAD lang=x>\n<base href="/runs/"><title>t</title></HEAD></html>',
        ),
        ("<p>no head</p>", "", '<base href="/"><p>no head</p>'),
        ("<head></head>", "/BOX//", '<head>\n<base href="/BOX/"></head>'),
        (
            "<head></head>",
            '/a"b<c>&/',
            '<head>\n<base href="/a&quot;b&lt;c&gt;&amp;/"></head>',
        ),
        ("<head><BASE href='/fixed/'></head>", "/runs", "<head><BASE href='/fixed/'></head>"),
    ],
)
def test_the_base_goes_into_the_head_once(
    root: Path, page: str, root_path: str, expected: str
) -> None:
    """The <base> (the mount point, one trailing slash, escaped as an attribute) goes
    right after <head ...> in any case, before the page without a head, and not at all
    when the page has its own."""
    (root / "index.html").write_text(page, encoding="utf-8")
    assert index_html(root_path) == expected


def test_the_page_is_read_as_utf8(root: Path) -> None:
    """index.html is UTF-8 text."""
    (root / "index.html").write_bytes("<head></head>Ω".encode())
    assert index_html("/") == '<head>\n<base href="/"></head>Ω'
