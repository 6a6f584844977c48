"""Redaction and size caps, applied before anything is stored.

- Secrets in text (API keys such as ``sk-...``, bearer tokens, passwords in URLs,
  ``password=...``-style pairs, GitHub/Slack/AWS/Google keys, JWTs) become
  ``[REDACTED]``; string values under secret-looking keys (``password``,
  ``api_key``, ``authorization``, ...) are replaced whole.
- Metadata becomes a JSON object: non-JSON values are stringified, NUL characters and
  lone surrogates (which no database stores) become U+FFFD, and the serialised size is
  capped (16 KiB by default): long strings are shortened first, then top-level keys
  dropped, and a ``_truncated`` marker records the original size.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from exectrack.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_METADATA_LIMIT",
    "REDACTED",
    "TRUNCATED_KEY",
    "clean_text",
    "encode_metadata",
    "normalize_metadata",
    "redact_text",
]

REDACTED = "[REDACTED]"
TRUNCATED_KEY = "_truncated"
DEFAULT_METADATA_LIMIT = 16 * 1024
MIN_METADATA_LIMIT = 256
_MAX_DEPTH = 32
_SHORT_STRING = 256

_SECRET_TEXT = re.compile(
    r"(?P<url>(?<=://)[^\s:/@]*:)[^\s@/]+(?=@)"  # scheme://user:PASSWORD@host
    r"|(?P<scheme>\b(?:[Bb]earer|[Bb]asic|[Tt]oken)\s+)[A-Za-z0-9\-._~+/]{8,}=*"
    r"|(?P<pair>\b(?:api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|auth[_-]?token"
    r"|client[_-]?secret|secret|password|passwd|pwd)\b[\"']?\s*[=:]\s*[\"']?)"
    r"[^\s\"'&,;]+"
    r"|\bsk-[A-Za-z0-9_\-]{16,}"
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAIza[0-9A-Za-z_\-]{30,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    re.IGNORECASE,
)

_SECRET_KEY = re.compile(
    r"(?:^|[_\-.])(?:password|passwd|secret|api[_-]?key|apikey|token|authorization"
    r"|cookie|credentials?|private[_-]?key)$",
    re.IGNORECASE,
)


def _secret_sub(match: re.Match[str]) -> str:
    for group in ("url", "scheme", "pair"):
        prefix = match.group(group)
        if prefix is not None:
            return prefix + (REDACTED if group != "url" else "***")
    return REDACTED


def redact_text(text: str) -> str:
    """``text`` with every recognised secret replaced."""
    return _SECRET_TEXT.sub(_secret_sub, text)


def _fix_unicode(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def clean_text(value: object, limit: int, *, redact: bool = False) -> str:
    """A storable string: stringified, unicode-safe, optionally redacted, capped."""
    text = value if isinstance(value, str) else str(value)
    text = _fix_unicode(text)
    if redact:
        text = redact_text(text)
    if len(text) > limit:
        marker = "...[truncated]"
        text = text[: max(limit - len(marker), 0)] + marker
    return text


def _normalize(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        return redact_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return clean_text(value, 1024, redact=True)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            if "\x00" in name:
                name = name.replace("\x00", "\ufffd")
            if isinstance(item, str) and _SECRET_KEY.search(name):
                out[name] = REDACTED
            else:
                out[name] = _normalize(item, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [_normalize(item, depth + 1) for item in value]
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    return redact_text(_fix_unicode(str(value)))


def normalize_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-safe, redacted copy of ``metadata`` (not yet size-capped)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata must be a mapping (a dict), not {type(metadata).__name__}"
        )
    result: dict[str, Any] = _normalize(metadata, 0)
    return result


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _shorten(value: Any, keep: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= keep else value[:keep] + "...[truncated]"
    if isinstance(value, dict):
        return {k: _shorten(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, keep) for v in value]
    return value


def encode_metadata(normalized: dict[str, Any], limit: int = DEFAULT_METADATA_LIMIT) -> str:
    """JSON text of normalised metadata, at most ``limit`` UTF-8 bytes."""
    limit = max(limit, MIN_METADATA_LIMIT)
    text = _dumps(normalized)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate somewhere: replace and retry
        normalized = json.loads(_fix_unicode(text))
        text = _dumps(normalized)
        size = len(text.encode("utf-8"))
    if size <= limit:
        return text
    marker = {TRUNCATED_KEY: {"original_bytes": size}}
    shortened = _shorten(normalized, _SHORT_STRING)
    candidate = _dumps({**shortened, **marker})
    if _size(candidate) <= limit:
        return candidate
    kept: dict[str, Any] = {}
    total = _size(_dumps(marker))
    for key, value in shortened.items():
        piece = _size(_dumps({key: value})) - 2 + 1  # without braces, plus a comma
        if total + piece <= limit:
            kept[key] = value
            total += piece
    kept.update(marker)
    return _dumps(kept)
