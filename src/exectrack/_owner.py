"""Process identity: the owner id recorded on every run, and whether an owner lives.

An owner id is ``host:pid:token``. On Linux the token is the process start time from
``/proc`` (so a pid reused by a later process is told apart); elsewhere it is random
(``x`` + hex) and only the pid's existence can be checked.
"""

from __future__ import annotations

import os

__all__ = ["generation", "owner_alive", "parse_owner", "process_owner", "start_token"]

_owner: str | None = None
# Bumped in a forked child: a run opened under another generation is the parent's,
# and nothing this process does may finish it.
generation = 0


def hostname() -> str:
    """This host's name, as ``socket.gethostname()`` gives it (on POSIX both read
    uname's node name; socket is imported only where there is no uname)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def start_token(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_owner() -> str:
    """This process's owner id (recomputed in a forked child)."""
    global _owner
    if _owner is None:
        pid = os.getpid()
        token = start_token(pid)
        if not token:
            import secrets  # here: it loads OpenSSL's hashes, and only this needs it

            token = "x" + secrets.token_hex(4)
        _owner = f"{hostname()}:{pid}:{token}"
    return _owner


def parse_owner(owner: str) -> tuple[str, int, str] | None:
    """``(host, pid, token)``, or None when ``owner`` is not in that form."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def owner_alive(owner: str) -> bool | None:
    """False when ``owner`` was a process on this host that no longer runs (its pid is
    gone, or now belongs to a later process); True when it runs; None when this host
    cannot tell (another host, an unknown format, or no process table to ask)."""
    parsed = parse_owner(owner)
    if parsed is None or os.name != "posix":
        return None
    host, pid, token = parsed
    if host != hostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if token.startswith("x"):
        return True
    current = start_token(pid)
    return True if current is None else current == token  # unreadable: assume alive


def _reset_after_fork() -> None:
    global _owner, generation
    _owner = None
    generation += 1


os.register_at_fork(after_in_child=_reset_after_fork)
