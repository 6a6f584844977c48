"""Metadata's bounds, pinned to the value: how many values, how deep, how much text,
and what ``_truncated`` says about each cut."""

from __future__ import annotations

import json
from typing import Any

from exectrack._redact import (
    MIN_METADATA_LIMIT,
    TRUNCATED_TEXT,
    clean_text,
    encode_metadata,
    normalize_metadata,
)

CUT = TRUNCATED_TEXT  # "...[truncated]"


def test_a_string_at_the_limit_is_kept_one_over_is_cut() -> None:
    """A string of exactly the limit is kept whole; one character more is cut to the
    limit (with the marker) and the dropped characters are counted."""
    assert normalize_metadata({"a": "x" * 256}, limit=MIN_METADATA_LIMIT) == {"a": "x" * 256}
    cut = normalize_metadata({"a": "x" * 257}, limit=MIN_METADATA_LIMIT)
    assert cut == {"a": "x" * (256 - len(CUT)) + CUT, "_truncated": {"dropped_chars": 1}}


def test_text_is_bounded_over_the_whole_object() -> None:
    """All strings together get four times the limit: the strings that fit are cut
    to the limit, then every further one is only the marker; _truncated says the
    budget and the characters dropped."""
    values = {k: k * 5000 for k in "abcde"}
    got = normalize_metadata(values, limit=MIN_METADATA_LIMIT)
    keep = 256 - len(CUT)
    assert got == {
        "a": "a" * keep + CUT,
        "b": "b" * keep + CUT,
        "c": "c" * keep + CUT,
        "d": "d" * keep + CUT,
        "e": CUT,
        "_truncated": {"text_chars": 1024, "dropped_chars": 4 * (5000 - 256)},
    }


def test_short_strings_share_the_budget() -> None:
    """The text budget counts what was kept: a short string leaves the rest to the
    next, which is cut only at the per-string limit."""
    got = normalize_metadata({"a": "x" * 200, "b": "y" * 300}, limit=MIN_METADATA_LIMIT)
    assert got == {"a": "x" * 200, "b": "y" * 242 + CUT, "_truncated": {"dropped_chars": 44}}


def test_at_most_ten_thousand_values() -> None:
    """One object holds at most 10,000 values (the key's own value counts): the
    rest are left out and _truncated says the cap."""
    got = normalize_metadata({"k": list(range(20_000))})
    assert got["_truncated"] == {"values": 10_000}
    assert got["k"] == list(range(9_999))
    many = normalize_metadata({f"k{i}": i for i in range(10_005)})
    assert many["_truncated"] == {"values": 10_000}
    assert len(many) == 10_000 + 1


def test_nesting_is_cut_at_depth_32() -> None:
    """Lists nested deeper than 32 levels are cut there, and _truncated says so."""
    deep: list[Any] = []
    cur = deep
    for _ in range(40):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    got = normalize_metadata({"deep": deep})
    assert got["_truncated"] == {"depth": 32}
    levels, node = 0, got["deep"]
    while isinstance(node, list) and node:
        levels += 1
        node = node[0]
    assert levels == 31


def test_a_lone_surrogate_is_replaced_not_fatal() -> None:
    """A string holding a lone surrogate (not encodable as UTF-8) is stored with the
    replacement character in its place."""
    assert encode_metadata({"a": "x\ud800y"}) == '{"a":"x\ufffdy"}'


def test_an_oversized_object_shortens_long_strings_only() -> None:
    """Metadata over its byte limit has each string longer than 256 characters cut
    (inside lists too); a string of exactly 256 stays whole; the original size is
    recorded."""
    big = {"l": ["s" * 256, "t" * 300], "pad": "p" * 5000}
    got = json.loads(encode_metadata(big, limit=2048))
    keep = 256
    assert got == {
        "l": ["s" * 256, "t" * keep + CUT],
        "pad": "p" * keep + CUT,
        "_truncated": {"original_bytes": 5578},
    }


def test_an_unprintable_value_is_said() -> None:
    """clean_text of a value whose __str__ raises gives a placeholder and reports it."""

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no text")

    problems: list[tuple[str, BaseException]] = []
    assert clean_text(Unprintable(), 100, problems=problems) == "<unprintable Unprintable>"
    assert [(what, str(exc)) for what, exc in problems] == [("unprintable value", "no text")]
