"""Configuration, read in one place.

Explicit arguments beat environment variables, which beat defaults. Variables:

- ``EXECTRACK_ENABLED``: off with ``0``, ``false``, ``off``, ``no`` (any case, trimmed).
- ``EXECTRACK_DATABASE_URL``: the store, e.g. ``sqlite:///runs.db``.
- ``EXECTRACK_STRICT``: on (``1``, ``true``, ...) makes tracking failures raise.
- ``EXECTRACK_DURABILITY``: ``async`` (default, group commit) or ``sync``.
- ``EXECTRACK_REAPER``: on makes every tracker reap abandoned and overdue runs.
- ``EXECTRACK_TOKEN``: the access token of the HTTP API (``exectrack serve``,
  ``exectrack.server.create_app``); empty means none.
- ``EXECTRACK_HANDLE_SIGTERM``: off leaves SIGTERM alone (default: on SIGTERM, open
  runs end ``canceled``/``shutdown`` before the process dies of the signal).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, NamedTuple

from exectrack._echo import echo
from exectrack._log import get_logger
from exectrack.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Durability", "Settings", "default_database_path", "parse_bool"]

log = get_logger(__name__)

Durability = Literal["async", "sync"]

_OFF = frozenset({"0", "false", "off", "no"})
_ON = frozenset({"1", "true", "on", "yes"})


def parse_bool(name: str, raw: str | None, default: bool) -> bool:
    """Parse a boolean environment value; empty or unset means ``default``."""
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ConfigError(
        f"{name}={echo(raw)} is not a boolean; use one of 1/0, true/false, on/off, yes/no"
    )


def default_database_path() -> Path:
    """A file in the user's data directory (XDG on Linux, the platform's elsewhere)."""
    from pathlib import Path  # here: a command given a database never needs it

    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "exectrack" / "runs.db"


class Settings(NamedTuple):
    enabled: bool = True
    strict: bool = False
    database_url: str | None = None
    durability: Durability = "async"
    reaper: bool = False
    handle_sigterm: bool = True
    token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        strict = parse_bool("EXECTRACK_STRICT", env.get("EXECTRACK_STRICT"), False)
        try:
            enabled = parse_bool("EXECTRACK_ENABLED", env.get("EXECTRACK_ENABLED"), True)
        except ConfigError:
            if strict:
                raise
            log.warning(
                "ignoring EXECTRACK_ENABLED=%r: not a boolean; tracking stays on",
                env.get("EXECTRACK_ENABLED"),
            )
            enabled = True
        durability_raw = (env.get("EXECTRACK_DURABILITY") or "async").strip().lower()
        if durability_raw not in ("async", "sync"):
            raise ConfigError(f"EXECTRACK_DURABILITY={echo(durability_raw)}: use 'async' or 'sync'")
        durability: Durability = "sync" if durability_raw == "sync" else "async"
        url = (env.get("EXECTRACK_DATABASE_URL") or "").strip() or None
        return cls(
            enabled=enabled,
            strict=strict,
            database_url=url,
            durability=durability,
            reaper=parse_bool("EXECTRACK_REAPER", env.get("EXECTRACK_REAPER"), False),
            handle_sigterm=parse_bool(
                "EXECTRACK_HANDLE_SIGTERM", env.get("EXECTRACK_HANDLE_SIGTERM"), True
            ),
            token=(env.get("EXECTRACK_TOKEN") or "").strip() or None,
        )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return "sqlite:///" + str(default_database_path())
