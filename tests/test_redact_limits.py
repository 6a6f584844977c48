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


def test_a_secret_across_the_cut_is_redacted_before_cutting() -> None:
    """Text is cut before it is redacted, but the scan reads past the cut: a key that
    starts before the cut and ends after it leaves none of its characters."""
    text = "x" * 70 + " sk-" + "A" * 40  # the key starts at 71; a cut at 100 keeps 86
    assert clean_text(text, 100, redact=True) == "x" * 70 + " [REDACTED]" + CUT


def test_a_key_is_kept_up_to_256_characters() -> None:
    """A metadata key of 256 characters is kept whole; a longer one is cut to 256
    with the marker."""
    assert list(normalize_metadata({"k" * 256: 1})) == ["k" * 256]
    assert list(normalize_metadata({"k" * 257: 1})) == ["k" * (256 - len(CUT)) + CUT]


def test_ints_up_to_256_bits_stay_numbers() -> None:
    """An int of up to 256 bits is stored as a number; a larger one (which JSON
    readers would round) as text saying its size."""
    got = normalize_metadata({"a": 2**256 - 1, "b": 2**256, "c": -(2**256)})
    assert got == {"a": 2**256 - 1, "b": "<int of 257 bits>", "c": "<int of 257 bits>"}


def test_the_default_cap_is_16_kib() -> None:
    """Without a limit, metadata of exactly 16 KiB of JSON is stored whole; one byte
    more is cut and says its original size."""
    whole = {"a": "x" * (16 * 1024 - 8)}
    assert encode_metadata(whole) == json.dumps(whole, separators=(",", ":"))
    over = json.loads(encode_metadata({"a": "x" * (16 * 1024 - 7)}))
    assert over["_truncated"] == {"original_bytes": 16 * 1024 + 1}


def test_the_last_string_gets_what_is_left_of_the_budget() -> None:
    """Once the strings so far used most of the text budget, the next one is cut to
    what is left of it, not to the per-string limit."""
    values = {k: k * 250 for k in "abcd"}  # 1000 of the 1024 characters
    got = normalize_metadata({**values, "e": "e" * 100}, limit=MIN_METADATA_LIMIT)
    assert got == {**values, "e": "e" * (24 - len(CUT)) + CUT, "_truncated": {"dropped_chars": 76}}


def test_bytes_are_stored_as_their_repr() -> None:
    """bytes, bytearray and memoryview values are stored as the text of a bytes
    literal, cut like any string."""
    got = normalize_metadata({"b": b"ab\x00", "ba": bytearray(b"xy"), "m": memoryview(b"z")})
    assert got == {"b": "b'ab\\x00'", "ba": "b'xy'", "m": "b'z'"}


def test_cycles_and_shared_values() -> None:
    """A container inside itself is stored once, its inner reference as "[cycle]";
    the same container reached twice without a cycle is stored both times."""
    loop: list[Any] = [1]
    loop.append(loop)
    this: dict[str, Any] = {"x": 1}
    this["self"] = this
    shared = [1, 2]
    got = normalize_metadata({"l": loop, "d": this, "a": shared, "b": [shared, shared]})
    assert got == {
        "l": [1, "[cycle]"],
        "d": {"x": 1, "self": "[cycle]"},
        "a": [1, 2],
        "b": [[1, 2], [1, 2]],
    }


def test_too_deep_containers_say_their_type() -> None:
    """A container past the nesting limit is stored as a marker naming its type."""
    deep_list: Any = ["leaf"]
    deep_dict: Any = {"leaf": 1}
    for _ in range(40):
        deep_list, deep_dict = [deep_list], {"n": deep_dict}
    text = json.dumps(normalize_metadata({"l": deep_list, "d": deep_dict}))
    assert '"<list nested deeper than 32>"' in text
    assert '"<dict nested deeper than 32>"' in text


def test_unprintable_values_and_keys_are_said() -> None:
    """A metadata value or key whose __str__ raises is stored as a placeholder and
    each is reported, as a value or as a key."""

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no text")

    problems: list[tuple[str, BaseException]] = []
    got = normalize_metadata({"u": Unprintable(), Unprintable(): 1}, problems=problems)
    assert got == {"u": "<unprintable Unprintable>", "<unprintable Unprintable>": 1}
    assert [(what, str(exc)) for what, exc in problems] == [
        ("unprintable value", "no text"),
        ("unprintable key", "no text"),
    ]


def test_keys_are_kept_while_they_fit_exactly() -> None:
    """Dropping keys to fit the cap keeps a key whose JSON makes the object exactly
    the limit in bytes, and drops it one byte later."""
    fits = encode_metadata(normalize_metadata({"a": "x" * 255, "b": "y" * 2000}), 300)
    assert len(fits.encode()) == 300
    assert json.loads(fits) == {"a": "x" * 255, "_truncated": {"original_bytes": 2270}}
    over = encode_metadata(normalize_metadata({"a": "x" * 256, "b": "y" * 2000}), 300)
    assert json.loads(over) == {"_truncated": {"original_bytes": 2271}}


def test_a_users_truncated_key_gives_way_to_the_marker() -> None:
    """A key of the user's named _truncated is replaced by the cut's marker, and the
    keys after it are still kept."""
    meta = {"_truncated": "mine", "a": "v", "b": "y" * 2000}
    got = json.loads(encode_metadata(normalize_metadata(meta), 256))
    assert got == {"a": "v", "_truncated": {"original_bytes": 2036}}


def test_a_redacted_value_counts_as_one_value() -> None:
    """A value replaced because its key names a secret counts once towards the
    10,000 values, like any other."""
    got = normalize_metadata({f"k{i}_token": f"t{i}" for i in range(10_005)})
    assert got["_truncated"] == {"values": 10_000}
    assert len(got) == 10_000 + 1
    assert all(v == "[REDACTED]" for k, v in got.items() if k != "_truncated")


def test_metadata_that_contains_itself() -> None:
    """The metadata mapping itself is part of the cycle check: a reference to it
    inside is "[cycle]" at once."""
    meta: dict[str, Any] = {"a": 1}
    meta["self"] = meta
    assert normalize_metadata(meta) == {"a": 1, "self": "[cycle]"}


class _Unreadable(dict[str, Any]):
    def items(self) -> Any:
        raise RuntimeError("items exploded")


def test_unreadable_metadata_is_said_and_never_raises() -> None:
    """A mapping whose items() raises becomes a marker naming the error; the problem
    is reported when a list is given, and nothing raises without one."""
    problems: list[tuple[str, BaseException]] = []
    expected = {"_truncated": {"unreadable": "RuntimeError"}}
    assert normalize_metadata(_Unreadable(a=1), problems=problems) == expected
    assert [(what, str(exc)) for what, exc in problems] == [
        ("unreadable metadata", "items exploded")
    ]
    assert normalize_metadata(_Unreadable(a=1)) == expected


def test_a_limit_below_the_marker_keeps_no_text() -> None:
    """Under a limit shorter than the marker nothing of the text is kept, redacted or
    not: the marker alone says it was cut."""
    text = "abcdefghijklmnopqrstuvwxyz"
    for limit in (1, 5, len(TRUNCATED_TEXT)):
        assert clean_text(text, limit) == TRUNCATED_TEXT
        assert clean_text(text, limit, redact=True) == TRUNCATED_TEXT
    assert clean_text(text, len(TRUNCATED_TEXT) + 2) == "ab" + TRUNCATED_TEXT
