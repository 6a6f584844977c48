"""The panel page and the files under ``static/``, from package data.

Any file in ``exectrack/server/static/`` is served with its content type; names are
checked segment by segment (letters, digits, ``_``, ``-``, ``.``, never a leading
dot), so ``..``, hidden files and absolute paths cannot be reached, and a folder is a
404, never a listing."""

from __future__ import annotations

import html
import mimetypes
import re
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["index_html", "static_file"]

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}

# Served at the mount root until the panel's index.html is part of the package.
_PLACEHOLDER = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>exectrack</title>
</head>
<body>
<h1>exectrack</h1>
<p>The runs panel is not installed in this build. The HTTP API is:
<a href="api/runs">api/runs</a>, <a href="api/stats">api/stats</a>,
<a href="api/report">api/report</a>, <a href="metrics">metrics</a>,
<a href="openapi.json">openapi.json</a>.</p>
</body>
</html>
"""


def _static_root() -> Traversable:
    return resources.files("exectrack.server").joinpath("static")


def static_file(path: str) -> tuple[bytes, str] | None:
    """(content, content type) of ``static/<path>``, or None (unsafe, absent, a folder)."""
    parts = path.split("/")
    if not parts or not all(_SEGMENT.fullmatch(p) for p in parts):
        return None
    node = _static_root()
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        return None
    suffix = "." + parts[-1].rsplit(".", 1)[-1] if "." in parts[-1] else ""
    kind = _TYPES.get(suffix.lower()) or mimetypes.guess_type(parts[-1])[0]
    return node.read_bytes(), kind or "application/octet-stream"


def index_html(root_path: str) -> str:
    """The panel page with a ``<base>`` at the mount point, so its relative URLs work
    whether it is served at ``/`` or mounted at ``/runs`` (reached as ``/runs``)."""
    found = static_file("index.html")
    page = found[0].decode("utf-8") if found is not None else _PLACEHOLDER
    if re.search(r"<base\s", page, re.IGNORECASE):
        return page
    base = f'<base href="{html.escape(root_path.rstrip("/") + "/", quote=True)}">'
    head = re.search(r"<head[^>]*>", page, re.IGNORECASE)
    if head is None:
        return base + page
    return page[: head.end()] + "\n" + base + page[head.end() :]
