"""Status badges: one colour and label per status (the panel and badge.js use the
same table), rendered as a flat SVG or as shields.io endpoint JSON."""

from __future__ import annotations

from xml.sax.saxutils import escape

from exectrack import Run

__all__ = ["NO_RUNS", "STATUS_COLOURS", "badge_json", "badge_svg", "label_and_message"]

STATUS_COLOURS = {
    "queued": "#6b7280",
    "running": "#2563eb",
    "success": "#15803d",
    "error": "#b91c1c",
    "canceled": "#b45309",
    "timeout": "#7e22ce",
}
NO_RUNS = ("no runs", "#6b7280")
_LABEL_COLOUR = "#555"
_MAX_TEXT = 48  # characters of a label or message before it is cut


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "\u2026"


def label_and_message(source: str, source_ref: str | None, run: Run | None) -> tuple[str, str, str]:
    """(label, message, colour): the label is the source_ref when one was asked for."""
    label = _cut(source_ref or source)
    if run is None:
        return label, NO_RUNS[0], NO_RUNS[1]
    return label, run.status.value, STATUS_COLOURS[run.status.value]


def badge_json(label: str, message: str, colour: str) -> dict[str, object]:
    """A shields.io endpoint badge (https://shields.io/badges/endpoint-badge)."""
    return {"schemaVersion": 1, "label": label, "message": message, "color": colour}


def _width(text: str) -> int:
    """Approximate width in px of ``text`` at 11px Verdana (shields' font)."""
    wide = sum(1 for ch in text if ch.isupper() or ch in "mwMW@%")
    return int(len(text) * 6.4 + wide * 1.6) + 10


def badge_svg(label: str, message: str, colour: str) -> str:
    """A flat badge; every text is XML-escaped (a source_ref is user data)."""
    lw, mw = _width(label), _width(message)
    total = lw + mw
    lab, msg = escape(label), escape(message)
    plain = f"{label}: {message}"
    title = escape(plain)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" '
        f'role="img" aria-label="{escape(plain, {chr(34): "&quot;"})}">'
        f"<title>{title}</title>"
        f'<rect width="{lw}" height="20" fill="{_LABEL_COLOUR}"/>'
        f'<rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2:.1f}" y="14">{lab}</text>'
        f'<text x="{lw + mw / 2:.1f}" y="14">{msg}</text>'
        "</g></svg>"
    )
