"""User input repeated in an error message, kept short: a 100 KB value never makes a
100 KB message (or log line)."""

from __future__ import annotations

__all__ = ["ECHO_LIMIT", "echo", "echo_url"]

ECHO_LIMIT = 80


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)``, cut to its first ``limit`` characters plus ``...`` when longer.

    A string is cut before ``repr`` (so its quotes stay); a value whose ``repr`` raises
    becomes ``<TypeName>``. Never raises.
    """
    try:
        if isinstance(value, str):
            return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
        text = repr(value)
    except Exception:  # a broken __repr__, or an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def echo_url(url: str) -> str:
    """:func:`echo` of a database URL, its password replaced by ``***`` first (so a
    cut can never leave part of a password out of the redaction's reach)."""
    from exectrack._redact import redact_text  # this module stays free of imports

    return echo(redact_text(url))
