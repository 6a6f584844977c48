"""exectrack: one run model, one tracker, one store for every execution of an agent app.

Quick use::

    import exectrack

    @exectrack.with_run("skill")
    def search(query: str) -> list[str]: ...

    with exectrack.with_run("chat", session_id="s-1") as run:
        run.annotate(model="small")

See README.md for the API in five minutes.
"""

from __future__ import annotations

from exectrack.errors import (
    ConfigError,
    DriverMissingError,
    ExectrackError,
    InvalidArgumentError,
    SchemaError,
    SchemaTooNewError,
    StoreError,
    StoreUnavailableError,
)

# typing.TYPE_CHECKING without importing typing (type checkers treat the name alike):
# ``import exectrack`` loads nothing but the exceptions.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from exectrack._api import (
        annotate,
        finish_error,
        finish_success,
        finish_with_status,
        flush,
        start,
        with_run,
    )
    from exectrack._classify import ErrorClassifier, ErrorInfo, ResultClassifier, success_flag
    from exectrack._clock import Clock, FakeClock, SystemClock
    from exectrack._context import bind_context, current_run
    from exectrack._default import get_tracker, set_tracker
    from exectrack._lifecycle import CancelReason, ClientDisconnected, cancel_reason
    from exectrack._model import Run, RunStatus, Source
    from exectrack._tracker import Deadline, ExecutionTracker, RunHandle, TrackerStats
    from exectrack._wrap import TrackedRun
    from exectrack.stores import FinishResult, Page, RunFilter, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "CancelReason",
    "ClientDisconnected",
    "Clock",
    "ConfigError",
    "Deadline",
    "DriverMissingError",
    "ErrorClassifier",
    "ErrorInfo",
    "ExectrackError",
    "ExecutionTracker",
    "FakeClock",
    "FinishResult",
    "InvalidArgumentError",
    "Page",
    "ResultClassifier",
    "Run",
    "RunFilter",
    "RunHandle",
    "RunStatus",
    "SchemaError",
    "SchemaTooNewError",
    "Source",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "SystemClock",
    "TrackedRun",
    "TrackerStats",
    "__version__",
    "annotate",
    "bind_context",
    "cancel_reason",
    "current_run",
    "finish_error",
    "finish_success",
    "finish_with_status",
    "flush",
    "get_tracker",
    "open_store",
    "set_tracker",
    "start",
    "success_flag",
    "with_run",
]

# Where each lazily loaded public name lives. ``import exectrack`` imports only the
# exceptions: the tracker (and asyncio, threads, the writer, the query layer) is loaded
# on first use of a name that needs it, so the CLI's reads and a program that imports
# exectrack without tracking anything yet do not pay for it.
_LAZY = {
    "CancelReason": "exectrack._lifecycle",
    "ClientDisconnected": "exectrack._lifecycle",
    "Clock": "exectrack._clock",
    "Deadline": "exectrack._tracker",
    "ErrorClassifier": "exectrack._classify",
    "ErrorInfo": "exectrack._classify",
    "ExecutionTracker": "exectrack._tracker",
    "FakeClock": "exectrack._clock",
    "FinishResult": "exectrack.stores",
    "Page": "exectrack.stores",
    "ResultClassifier": "exectrack._classify",
    "Run": "exectrack._model",
    "RunFilter": "exectrack.stores",
    "RunHandle": "exectrack._tracker",
    "RunStatus": "exectrack._model",
    "Source": "exectrack._model",
    "Store": "exectrack.stores",
    "SystemClock": "exectrack._clock",
    "TrackedRun": "exectrack._wrap",
    "TrackerStats": "exectrack._tracker",
    "annotate": "exectrack._api",
    "bind_context": "exectrack._context",
    "cancel_reason": "exectrack._lifecycle",
    "current_run": "exectrack._context",
    "finish_error": "exectrack._api",
    "finish_success": "exectrack._api",
    "finish_with_status": "exectrack._api",
    "flush": "exectrack._api",
    "get_tracker": "exectrack._default",
    "open_store": "exectrack.stores",
    "set_tracker": "exectrack._default",
    "start": "exectrack._api",
    "success_flag": "exectrack._classify",
    "with_run": "exectrack._api",
}

# The submodules ``import exectrack`` used to load as a side effect, so that
# ``import exectrack; exectrack.query.list_runs(...)`` keeps working.
_SUBMODULES = frozenset(
    {
        "_breaker",
        "_classify",
        "_clock",
        "_config",
        "_context",
        "_default",
        "_echo",
        "_exit",
        "_failures",
        "_handle",
        "_lifecycle",
        "_lifetime",
        "_model",
        "_owner",
        "_reads",
        "_redact",
        "_tracker",
        "_wrap",
        "_writer",
        "errors",
        "monitor",
        "query",
        "stores",
    }
)

if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> Any:
        """Load a public name (or a submodule) on first access; it then stays bound."""
        module = _LAZY.get(name)
        if module is not None:
            value = getattr(__import__(module, fromlist=[name]), name)
        elif name in _SUBMODULES:
            value = __import__(f"{__name__}.{name}", fromlist=["_"])
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__, *_SUBMODULES})
