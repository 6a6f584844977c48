"""The public surface stays honest: sorted, complete, importable, nothing stray."""

from __future__ import annotations

import inspect
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
        and name not in {"annotations", "Any", "Mapping"}
    }
    assert stray == set()


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
