"""Redaction of secrets and the metadata size cap, before anything is stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exectrack import ExecutionTracker, InvalidArgumentError
from exectrack._redact import (
    REDACTED,
    TRUNCATED_KEY,
    clean_text,
    encode_metadata,
    normalize_metadata,
    redact_text,
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("openai key sk-proj-abcdefghijklmnop1234 failed", "sk-proj-abcdefghijklmnop1234"),
        ("anthropic sk-ant-api03-AbCdEfGhIjKlMnOpQr", "sk-ant-api03-AbCdEfGhIjKlMnOpQr"),
        ("Authorization: Bearer eyJhbGciOi.abc.def-ghijkl", "eyJhbGciOi.abc.def-ghijkl"),
        ("header bearer abcdefgh12345678", "abcdefgh12345678"),
        ("postgresql://app:s3cr3t-pw@db:5432/x", "s3cr3t-pw"),
        ("https://user:hunter22@example.com/path", "hunter22"),
        ("retry with api_key=AKIAIOSFODNN7EXAMPLE&x=1", "AKIAIOSFODNN7EXAMPLE"),
        ('{"password": "pa55word"}', "pa55word"),
        ("token: ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
        ("slack xoxb-1234567890-abcdef", "xoxb-1234567890-abcdef"),
        ("google AIzaSyA1234567890abcdefghijklmnopqrstu", "AIzaSyA1234567890abcdefghijklmnopqrstu"),
        ("aws AKIAIOSFODNN7EXAMPLE in message", "AKIAIOSFODNN7EXAMPLE"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
    ],
)
def test_secrets_are_redacted_from_text(text: str, secret: str) -> None:
    """Every recognised secret disappears from the text; the rest stays readable."""
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out or "***" in out


def test_harmless_text_is_untouched() -> None:
    """Ordinary messages, token counts and URLs without passwords are unchanged."""
    for text in (
        "max_tokens=1024 exceeded",
        "see https://example.com/docs?page=2",
        "task sk-1 failed",
        "a skeptic's note",
    ):
        assert redact_text(text) == text


def test_secret_keys_in_metadata_are_replaced_whole() -> None:
    """String values under secret-looking keys are replaced; counts are kept."""
    meta = normalize_metadata(
        {
            "api_key": "plain-looking-value",
            "Authorization": "Basic dXNlcjpwYXNz",
            "nested": {"client_secret": "x", "x-api-key": "y", "safe": "ok"},
            "prompt_tokens": 12,
            "max_tokens": "4096",
            "note": "called with sk-abcdefghijklmnopqrstuv",
        }
    )
    assert meta["api_key"] == REDACTED and meta["Authorization"] == REDACTED
    assert meta["nested"] == {"client_secret": REDACTED, "x-api-key": REDACTED, "safe": "ok"}
    assert meta["prompt_tokens"] == 12 and meta["max_tokens"] == "4096"
    assert "sk-abcdef" not in meta["note"]


def test_non_json_values_are_stringified() -> None:
    """Datetimes, decimals, sets, tuples, NaN and objects become JSON values."""
    meta = normalize_metadata(
        {
            "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "price": Decimal("1.10"),
            "tags": ("a", "b"),
            "nan": float("nan"),
            "obj": object,
            1: "int key",
        }
    )
    text = encode_metadata(meta)
    loaded = json.loads(text)
    assert loaded["when"] == "2026-01-02T03:04:05+00:00"
    assert loaded["price"] == "1.10" and loaded["tags"] == ["a", "b"]
    assert loaded["nan"] == "nan" and loaded["obj"] == "<class 'object'>"
    assert loaded["1"] == "int key"


def test_metadata_must_be_a_mapping() -> None:
    """Metadata that is not a mapping is a clear error."""
    with pytest.raises(InvalidArgumentError, match="metadata must be a mapping"):
        normalize_metadata([1, 2])  # type: ignore[arg-type]


def test_cap_truncates_with_marker() -> None:
    """Oversized metadata is cut to the limit, with a marker giving the original size."""
    big = {"prompt": "x" * 50_000, "model": "small", "n": 3}
    text = encode_metadata(normalize_metadata(big), 16 * 1024)
    assert len(text.encode()) <= 16 * 1024
    loaded = json.loads(text)
    # long strings are cut before redaction, so the marker counts what was cut there
    assert loaded[TRUNCATED_KEY]["original_bytes"] > 16 * 1024
    assert loaded[TRUNCATED_KEY]["dropped_chars"] == 50_000 - 16 * 1024
    assert loaded["model"] == "small" and loaded["n"] == 3
    assert loaded["prompt"].endswith("...[truncated]")
    many = {f"k{i}": "v" * 200 for i in range(500)}
    text = encode_metadata(normalize_metadata(many), 4096)
    loaded = json.loads(text)
    assert len(text.encode()) <= 4096 and TRUNCATED_KEY in loaded
    assert 0 < len(loaded) < 500


def test_cyclic_and_deep_structures_are_bounded() -> None:
    """A self-referencing or very deep value cannot hang or blow the stack."""
    loop: dict[str, Any] = {}
    loop["self"] = loop
    deep: Any = "leaf"
    for _ in range(500):
        deep = [deep]
    text = encode_metadata(normalize_metadata({"loop": loop, "deep": deep}))
    assert json.loads(text)["loop"]["self"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=20), json_values, max_size=8), st.integers(256, 4096))
def test_encoded_metadata_is_valid_bounded_storable_json(meta: dict[str, Any], limit: int) -> None:
    """Whatever goes in, what comes out is a JSON object within the limit, valid
    UTF-8, without NUL characters; when it fits, its content survives."""
    text = encode_metadata(normalize_metadata(meta), limit)
    raw = text.encode("utf-8")
    assert len(raw) <= limit
    assert "\\u0000" not in text and "\x00" not in text
    loaded = json.loads(text)
    assert isinstance(loaded, dict)
    if TRUNCATED_KEY not in loaded:
        assert set(loaded) == {k.replace("\x00", "\ufffd") for k in meta}


def test_clean_text_caps_and_fixes_unicode() -> None:
    """Stored strings lose NULs and lone surrogates and are capped with a marker."""
    assert clean_text("a\x00b\ud800c", 100) == "a\ufffdb\ufffdc"
    capped = clean_text("y" * 5000, 100)
    assert len(capped) == 100 and capped.endswith("...[truncated]")
    assert clean_text(12, 10) == "12"


def test_tracker_stores_redacted_capped_values(sync_tracker: ExecutionTracker) -> None:
    """End to end: messages and metadata are redacted and capped in the database."""
    t = sync_tracker
    h = t.start("skill", metadata={"url": "https://bob:pw123456@x.io", "blob": "z" * 40_000})
    h.finish_error(code="auth_failed", message="key sk-live-abcdefghijklmnop0123 rejected " * 300)
    run = t.get_run(h.id)
    assert "sk-live" not in run.error_message and len(run.error_message) <= 4096
    assert "pw123456" not in json.dumps(dict(run.metadata))
    assert len(json.dumps(dict(run.metadata), separators=(",", ":")).encode()) <= 16 * 1024
    assert TRUNCATED_KEY in run.metadata
