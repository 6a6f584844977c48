"""Redaction and size caps, applied before anything is stored.

- Secrets in text (API keys such as ``sk-...``, bearer tokens, passwords in URLs,
  ``password=...``-style pairs including cloud names such as
  ``aws_secret_access_key=...`` or ``AccountKey=...``, signed-URL signatures,
  GitHub/Slack/AWS/Google/Stripe/Hugging Face keys, JWTs, PEM private keys) become
  ``[REDACTED]``; a value under a secret-looking key (``password``, ``api_key``,
  ``clientSecret``, ``aws_session_token``, ...) is replaced whole, whatever it is
  (text, a list, a mapping), except numbers, booleans and None (counts and flags).
  Metadata keys are redacted like text (a URL with a password, a token used as a
  key); two keys that differ only in a secret become one key.
- Long text is cut *before* it is redacted, so a 10 MB string costs what its capped
  prefix costs; the redaction looks a little past the cut, so a secret that straddles
  it is still recognised.
- Metadata becomes a JSON object: non-JSON values are stringified, NUL characters and
  lone surrogates (which no database stores) become U+FFFD. The walk is linear in
  the input and bounded: at most ``MAX_NODES`` values, ``MAX_DEPTH`` levels and a
  character budget are visited; a circular reference becomes ``"[cycle]"``, and a
  walk that hit a budget records why under ``_truncated``. A value whose ``__str__``
  raises becomes ``"<unprintable TypeName>"`` and is reported, never raised. The
  serialised size is then capped (16 KiB by default): long strings are shortened
  first, then top-level keys dropped, and ``_truncated`` records the original size.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from exectrack.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_METADATA_LIMIT",
    "MAX_DEPTH",
    "MAX_NODES",
    "REDACTED",
    "TRUNCATED_KEY",
    "Problems",
    "clean_text",
    "encode_metadata",
    "is_secret_key",
    "normalize_metadata",
    "redact_text",
    "require_mapping",
    "safe_str",
]

REDACTED = "[REDACTED]"
TRUNCATED_KEY = "_truncated"
TRUNCATED_TEXT = "...[truncated]"
DEFAULT_METADATA_LIMIT = 16 * 1024
MIN_METADATA_LIMIT = 256
MAX_DEPTH = 32  # nesting levels kept; deeper containers become a marker string
MAX_NODES = 10_000  # values visited in one metadata object
_KEY_LIMIT = 256  # characters of one metadata key
_LOOKAHEAD = 1024  # characters past a cut that redaction still reads
_SHORT_STRING = 256
_MAX_INT_BITS = 256  # larger ints are stored as text (JSON readers lose them anyway)

_SECRET_TEXT = re.compile(
    r"(?P<url>(?<=://)[^\s:/@]*:)[^\s@/]+(?=@)"  # scheme://user:PASSWORD@host
    r"|(?P<scheme>\b(?:bearer|basic|token)\s+)[A-Za-z0-9\-._~+/]{8,}=*"
    # name=value, name: value, "name": "value", ?name=value: redacted when the name
    # is a secret's (decided by is_secret_key, so text and metadata keys agree)
    r"|(?P<pair>\b(?P<name>[A-Za-z][A-Za-z0-9_.\-]{0,63}+)[\"']?\s*(?:=|:(?!//))\s*[\"']?)"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"
    r"|\bsk-[A-Za-z0-9_\-]{16,}"
    r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"
    r"|\bglpat-[A-Za-z0-9_\-]{20,}"
    r"|\bhf_[A-Za-z0-9]{30,}"
    r"|\bnpm_[A-Za-z0-9]{36}\b"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAIza[0-9A-Za-z_\-]{30,}"
    r"|\bya29\.[0-9A-Za-z_\-]{20,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    re.IGNORECASE,
)

# A key names a secret when its last words do: ``aws_secret_access_key``, ``X-Api-Key``,
# ``AccountKey``, ``OPENAI_API_KEY``, ``session_token``, ``clientSecret``, ``sig``.
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:pass|password|passwd|pwd|passphrase|secret|client_?secret"
    r"|(?:secret|secret_?access|private|api|access|account|storage|subscription|master"
    r"|signing|encryption|session|shared|shared_?access)_?key"
    r"|(?:access|refresh|auth|id|session|security|bearer|api|sas|oauth|csrf)?_?token"
    r"|authorization|cookie|set_cookie|credentials?|signature|sig)$"
)
_PAIR_VALUE = re.compile(
    r"-----BEGIN [^\"']*?(?:-----END [A-Z ]*-----|(?=[\"'])|\Z)"  # a PEM block, even escaped
    r"|(?P<scheme>(?:bearer|basic|token|digest)\s+)?[^\s\"'&,;]+",
    re.IGNORECASE,
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def redact_text(text: str) -> str:
    """``text`` with every recognised secret replaced. Linear in ``text``: a pair whose
    name is not a secret's is stepped over, so the scan goes on inside its value."""
    out: list[str] = []
    pos = 0
    search = _SECRET_TEXT.search
    while (m := search(text, pos)) is not None:
        out.append(text[pos : m.start()])
        pair = m.group("pair")
        if pair is not None:
            out.append(pair)
            pos = m.end()
            if is_secret_key(m.group("name")):
                value = _PAIR_VALUE.match(text, pos)
                if value is not None:
                    out.append((value.group("scheme") or "") + REDACTED)
                    pos = value.end()
            continue
        url = m.group("url")
        scheme = m.group("scheme")
        if url is not None:
            out.append(url + "***")
        elif scheme is not None:
            out.append(scheme + REDACTED)
        else:
            out.append(REDACTED)
        pos = m.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a metadata key names a secret: its last words (``camelCase``,
    ``snake_case``, ``kebab-case`` or ``dotted``) are a secret's name."""
    words = _SEPARATORS.sub("_", _CAMEL.sub("_", name)).lower()
    return _SECRET_KEY.search(words) is not None


# -- text -----------------------------------------------------------------------------

Problems = list[tuple[str, BaseException]]


def safe_str(value: object, problems: Problems | None = None, what: str = "value") -> str:
    """``str(value)``, or ``<unprintable TypeName>`` when its ``__str__`` raises
    (recorded in ``problems``): a broken value must never break the host."""
    if isinstance(value, str):
        return value
    try:
        text = str(value)
    except Exception as exc:
        if problems is not None:
            problems.append((f"unprintable {what}", exc))
        return f"<unprintable {type(value).__name__}>"
    return text if isinstance(text, str) else f"<unprintable {type(value).__name__}>"


def _fix_unicode(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def _cap_redacted(text: str, limit: int, redact: bool) -> str:
    """``text`` cut to ``limit`` characters (with a marker) and, when ``redact``,
    redacted; the cut comes first, so the cost is that of the prefix."""
    if len(text) <= limit:
        text = _fix_unicode(text)
        return redact_text(text) if redact else text
    keep = max(limit - len(TRUNCATED_TEXT), 0)
    head = _fix_unicode(text[: keep + _LOOKAHEAD] if redact else text[:keep])
    if redact:
        head = redact_text(head)
    return head[:keep] + TRUNCATED_TEXT


def clean_text(
    value: object, limit: int, *, redact: bool = False, problems: Problems | None = None
) -> str:
    """A storable string: stringified (never raising), capped, unicode-safe and,
    when ``redact``, with secrets replaced."""
    return _cap_redacted(safe_str(value, problems), limit, redact)


# -- metadata -------------------------------------------------------------------------


class _Walk:
    """The budgets of one normalisation: values visited and characters kept."""

    __slots__ = (
        "chars",
        "cut",
        "dropped",
        "nodes",
        "path",
        "problems",
        "str_limit",
        "text_budget",
    )

    def __init__(self, limit: int, problems: Problems | None) -> None:
        self.nodes = 0
        self.chars = 0
        self.dropped = 0  # characters cut from long strings
        self.str_limit = max(limit, MIN_METADATA_LIMIT)
        self.text_budget = 4 * self.str_limit
        self.cut: dict[str, int] = {}
        self.path: set[int] = set()  # ids of the containers being walked (cycles)
        self.problems = problems

    def text(self, value: str) -> str:
        if self.chars >= self.text_budget:
            self.cut.setdefault("text_chars", self.text_budget)
            return TRUNCATED_TEXT
        limit = min(self.str_limit, self.text_budget - self.chars)
        if len(value) > limit:
            self.dropped += len(value) - limit
        out = _cap_redacted(value, limit, True)
        self.chars += len(out)
        return out


def _normalize(value: Any, depth: int, w: _Walk) -> Any:
    w.nodes += 1
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            return f"<int of {value.bit_length()} bits>"
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, str):
        return w.text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return w.text(repr(bytes(value[: w.str_limit])))
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if depth >= MAX_DEPTH:
            w.cut.setdefault("depth", MAX_DEPTH)
            return f"<{type(value).__name__} nested deeper than {MAX_DEPTH}>"
        key = id(value)
        if key in w.path:
            return "[cycle]"
        w.path.add(key)
        try:
            if isinstance(value, Mapping):
                return _normalize_mapping(value, depth, w)
            return _normalize_items(value, depth, w)
        finally:
            w.path.discard(key)
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    return w.text(safe_str(value, w.problems))


def _normalize_mapping(value: Mapping[Any, Any], depth: int, w: _Walk) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if w.nodes >= MAX_NODES:
            w.cut.setdefault("values", MAX_NODES)
            break
        name = _cap_redacted(safe_str(key, w.problems, "key"), _KEY_LIMIT, True)
        if item is not None and not isinstance(item, bool | int | float) and is_secret_key(name):
            w.nodes += 1  # text, bytes, a list or mapping, an object: all of it is secret
            out[name] = REDACTED
        else:
            out[name] = _normalize(item, depth + 1, w)
    return out


def _normalize_items(value: Any, depth: int, w: _Walk) -> list[Any]:
    out: list[Any] = []
    for item in value:
        if w.nodes >= MAX_NODES:
            w.cut.setdefault("values", MAX_NODES)
            break
        out.append(_normalize(item, depth + 1, w))
    return out


def require_mapping(metadata: object) -> None:
    """Raise InvalidArgumentError unless ``metadata`` is None or a mapping."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata must be a mapping (a dict), not {type(metadata).__name__}"
        )


def normalize_metadata(
    metadata: Mapping[str, Any] | None,
    *,
    limit: int = DEFAULT_METADATA_LIMIT,
    problems: Problems | None = None,
) -> dict[str, Any]:
    """A JSON-safe, redacted copy of ``metadata`` (not yet size-capped).

    Linear in the input and bounded (values, depth, characters: see the module
    docstring); never raises for a bad value inside it (``problems`` collects what
    went wrong), only for ``metadata`` that is not a mapping at all.
    """
    if metadata is None:
        return {}
    require_mapping(metadata)
    w = _Walk(limit, problems)
    w.path.add(id(metadata))
    try:
        result = _normalize_mapping(metadata, 0, w)
    except Exception as exc:  # a mapping whose items() or iteration raises
        if problems is not None:
            problems.append(("unreadable metadata", exc))
        return {TRUNCATED_KEY: {"unreadable": type(exc).__name__}}
    if w.dropped:
        w.cut["dropped_chars"] = w.dropped
    if w.cut:
        result[TRUNCATED_KEY] = dict(w.cut)
    return result


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _shorten(value: Any, keep: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= keep else value[:keep] + TRUNCATED_TEXT
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
    earlier = normalized.get(TRUNCATED_KEY)
    note = dict(earlier) if isinstance(earlier, dict) else {}
    marker = {TRUNCATED_KEY: {**note, "original_bytes": size}}
    shortened = _shorten(normalized, _SHORT_STRING)
    candidate = _dumps({**shortened, **marker})
    if _size(candidate) <= limit:
        return candidate
    kept: dict[str, Any] = {}
    total = _size(_dumps(marker))
    for key, value in shortened.items():
        if key == TRUNCATED_KEY:
            continue
        piece = _size(_dumps({key: value})) - 2 + 1  # without braces, plus a comma
        if total + piece <= limit:
            kept[key] = value
            total += piece
    kept.update(marker)
    return _dumps(kept)
