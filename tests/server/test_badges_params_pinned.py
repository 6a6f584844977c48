"""Badges and request parameters pinned to exact output: the SVG a badge renders
(sizes, positions, escaping), where a long label is cut, how a scope string splits
and which parameter an error names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exectrack.server._badges import _cut, _width, badge_json, badge_svg
from exectrack.server._errors import ApiError
from exectrack.server._params import parse_scope, run_filter

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_a_badge_is_exactly_this_svg() -> None:
    """Widths from the font estimate (5 narrow characters: 42 px, 7: 54 px), each text
    centred in its half."""
    assert badge_svg("skill", "success", "#15803d") == (
        '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="20" '
        'role="img" aria-label="skill: success">'
        "<title>skill: success</title>"
        '<rect width="42" height="20" fill="#555"/>'
        '<rect x="42" width="54" height="20" fill="#15803d"/>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        '<text x="21.0" y="14">skill</text>'
        '<text x="69.0" y="14">success</text>'
        "</g></svg>"
    )


def test_badge_text_is_escaped_once_everywhere() -> None:
    """User text (a source_ref) is XML-escaped in the texts and the title, and the
    attribute escapes its quotes too; nothing is escaped twice."""
    svg = badge_svg('a<b>&"c', "error", "#b91c1c")
    assert 'aria-label="a&lt;b&gt;&amp;&quot;c: error"' in svg
    assert '<title>a&lt;b&gt;&amp;"c: error</title>' in svg
    assert '<text x="27.0" y="14">a&lt;b&gt;&amp;"c</text>' in svg  # 7 characters: 54 px
    assert "&amp;amp;" not in svg and "&amp;lt;" not in svg


@pytest.mark.parametrize(
    ("text", "width"),
    [
        ("", 10),
        ("a", 16),
        ("abc", 29),
        ("A", 18),  # capitals are wide
        ("m", 18),
        ("w", 18),
        ("M", 18),
        ("@", 18),
        ("%", 18),
        ("Mm@%wW", 58),
        ("badge", 42),
    ],
)
def test_text_width_estimate(text: str, width: int) -> None:
    assert _width(text) == width


def test_labels_are_cut_after_48_characters() -> None:
    assert _cut("x" * 48) == "x" * 48
    assert _cut("x" * 49) == "x" * 47 + "\u2026"
    assert _cut("y" * 200) == "y" * 47 + "\u2026"


def test_shields_endpoint_json() -> None:
    assert badge_json("nightly", "timeout", "#7e22ce") == {
        "schemaVersion": 1,
        "label": "nightly",
        "message": "timeout",
        "color": "#7e22ce",
    }


@pytest.mark.parametrize(
    ("scope", "parsed"),
    [
        ("skill", ("skill", None, None)),
        ("skill:", ("skill", None, None)),
        ("skill:summarize", ("skill", "summarize", None)),
        ("chat::sess-1", ("chat", None, "sess-1")),
        ("chat:ref:sess:with:colons", ("chat", "ref", "sess:with:colons")),
        ("", ("", None, None)),
    ],
)
def test_scope_splits_at_the_first_two_colons(
    scope: str, parsed: tuple[str, str | None, str | None]
) -> None:
    source, ref, session = parsed
    assert parse_scope(scope) == {"source": source, "source_ref": ref, "session_id": session}


def test_run_filter_reads_ages_from_the_requests_now() -> None:
    flt = run_filter(T0, since="1h", until="10m", source="skill", status=None)
    assert (flt.started_after, flt.started_before) == (
        T0 - timedelta(hours=1),
        T0 - timedelta(minutes=10),
    )
    assert flt.sources == ("skill",) and flt.statuses == ()


def test_run_filter_names_the_parameter_that_fails_alone() -> None:
    with pytest.raises(ApiError) as err:
        run_filter(T0, source="skill", status="bogus", since="1h")
    e = err.value
    assert (e.status, e.code, e.parameter, e.message) == (
        400,
        "invalid_parameter",
        "status",
        "unknown run status 'bogus'; expected one of: queued, running, success, error, "
        "canceled, timeout",
    )
