"""The public surface stays honest: sorted, complete, importable, nothing stray."""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
import subprocess
import sys
import types

import exectrack


def test_all_is_sorted_and_importable() -> None:
    """__all__ is sorted and every name in it exists."""
    names = exectrack.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert hasattr(exectrack, name), name


def test_no_public_name_outside_all() -> None:
    """Every public attribute of the package is either in __all__ or a submodule."""
    stray = {
        name
        for name, value in vars(exectrack).items()
        if not name.startswith("_")
        and name not in exectrack.__all__
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "TYPE_CHECKING"}
    }
    assert stray == set()


# Where every public name is defined: ``exectrack.X`` must stay that very object even
# though the package loads it lazily (on first access) instead of at import.
DEFINED_IN = {
    "CancelReason": "exectrack._lifecycle",
    "ClientDisconnected": "exectrack._lifecycle",
    "Clock": "exectrack._clock",
    "ConfigError": "exectrack.errors",
    "Deadline": "exectrack._tracker",
    "DriverMissingError": "exectrack.errors",
    "ErrorClassifier": "exectrack._classify",
    "ErrorInfo": "exectrack._classify",
    "ExectrackError": "exectrack.errors",
    "ExecutionTracker": "exectrack._tracker",
    "FakeClock": "exectrack._clock",
    "FinishResult": "exectrack.stores",
    "InvalidArgumentError": "exectrack.errors",
    "Page": "exectrack.stores",
    "ResultClassifier": "exectrack._classify",
    "Run": "exectrack._model",
    "RunFilter": "exectrack.stores",
    "RunHandle": "exectrack._tracker",
    "RunStatus": "exectrack._model",
    "SchemaError": "exectrack.errors",
    "SchemaTooNewError": "exectrack.errors",
    "Source": "exectrack._model",
    "Store": "exectrack.stores",
    "StoreError": "exectrack.errors",
    "StoreUnavailableError": "exectrack.errors",
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
# The package-level functions are documented (and pickled) as exectrack's own.
PACKAGE_FUNCTIONS = {name for name, module in DEFINED_IN.items() if module == "exectrack._api"}


def _resolve_all_in_fresh_interpreter() -> dict[str, str]:
    """In a new process, ``from exectrack import X`` for every name (and ``import *``):
    for each name, "same" when it is the defining module's object, else its repr; for
    the package-level functions, their ``__module__``."""
    code = (
        "import importlib, json, sys\n"
        "defined = json.loads(sys.argv[1])\n"
        "import exectrack\n"
        "out = {}\n"
        "for name in exectrack.__all__:\n"
        "    ns = {}\n"
        "    exec(f'from exectrack import {name}', ns)\n"
        "    value = ns[name]\n"
        "    if name in defined:\n"
        "        home = getattr(importlib.import_module(defined[name]), name)\n"
        "        out[name] = 'same' if value is home else repr(value)\n"
        "    else:\n"
        "        out[name] = repr(value)\n"
        "    if defined.get(name) == 'exectrack._api':\n"
        "        out[name + '.__module__'] = value.__module__\n"
        "star = {}\n"
        "exec('from exectrack import *', star)\n"
        "out['*'] = sorted(set(exectrack.__all__) - set(star))\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(DEFINED_IN)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, str] = json.loads(out.stdout)
    return result


def test_every_public_name_is_the_defining_modules_object() -> None:
    """Lazy loading changes no identity: ``from exectrack import X`` (and ``import *``)
    gives, in a fresh interpreter, exactly the object its defining module holds; the
    package-level functions still say they are exectrack's."""
    assert set(exectrack.__all__) == {*DEFINED_IN, "__version__"}
    resolved = _resolve_all_in_fresh_interpreter()
    assert resolved.pop("*") == []
    assert resolved.pop("__version__") == repr(exectrack.__version__)
    assert resolved == {
        **dict.fromkeys(DEFINED_IN, "same"),
        **{f"{name}.__module__": "exectrack" for name in PACKAGE_FUNCTIONS},
    }
    for name, module in DEFINED_IN.items():  # and in this process, already loaded
        assert getattr(exectrack, name) is getattr(importlib.import_module(module), name)


def test_package_functions_pickle_by_their_public_name() -> None:
    """``pickle`` finds ``exectrack.with_run`` (and friends) where they are documented."""
    for name in PACKAGE_FUNCTIONS:
        function = getattr(exectrack, name)
        assert pickle.loads(pickle.dumps(function)) is function


def test_submodules_stay_reachable_as_attributes() -> None:
    """``import exectrack; exectrack.query.list_runs`` works as before, though
    ``import exectrack`` no longer imports the query layer; unknown names still raise."""
    code = (
        "import sys, exectrack\n"
        "assert 'exectrack.query' not in sys.modules\n"
        "assert exectrack.query is sys.modules['exectrack.query']\n"
        "assert exectrack.stores.open_store is exectrack.open_store\n"
        "assert exectrack._default._tracker is None\n"
        "assert 'ExecutionTracker' in dir(exectrack) and 'query' in dir(exectrack)\n"
        "try:\n"
        "    exectrack.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "module 'exectrack' has no attribute 'no_such_name'"


# Exported without a docstring today; remove a name once it has one.
UNDOCUMENTED = {"SystemClock", "finish_error", "finish_success", "finish_with_status"}


def test_exported_objects_come_from_exectrack() -> None:
    """Exported classes and functions are exectrack's own, with docstrings."""
    missing = set()
    for name in exectrack.__all__:
        value = getattr(exectrack, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("exectrack"), name
            if not (inspect.getdoc(value) or "").strip():
                missing.add(name)
    assert missing == UNDOCUMENTED


def test_import_has_no_side_effects() -> None:
    """Importing exectrack opens no database, starts no thread, imports no driver."""
    code = (
        "import sys, threading, exectrack, exectrack.query, exectrack.cli;"
        "assert threading.active_count() == 1, threading.enumerate();"
        "assert 'psycopg' not in sys.modules;"
        "assert exectrack._default._tracker is None;"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
