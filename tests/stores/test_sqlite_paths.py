"""A SQLite database path means what pathlib made of it, without pathlib on the CLI's
path: ``expand_path`` and ``file_uri`` against ``pathlib`` itself, over every mix of
slashes, dots, tildes and odd characters, and under several home directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exectrack.errors import ConfigError
from exectrack.stores import NewRun
from exectrack.stores.sqlite import SQLiteStore, expand_path, file_uri

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the POSIX half of the paths")

PIECES = ["/", "//", "///", ".", "..", "~", "~root", "~no_such_user_x9", "a", "b c", "é", "%", "?#"]
HOMES = ["/home/u", "/home/u/", "/", "//srv/h", "relative/home", ""]


def _pathlib(path: str) -> str:
    return str(Path(path).expanduser())


def _outcome(fn: object, path: str) -> str:
    try:
        return "=" + fn(path)  # type: ignore[operator]
    except RuntimeError:
        return "RuntimeError"


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=7), home=st.sampled_from(HOMES))
@example(pieces=["~"], home="")
@example(pieces=["//", "a", "/", "."], home="/")
@example(pieces=["~", "/", "a"], home="//srv/h")
def test_expand_path_is_pathlibs(pieces: list[str], home: str) -> None:
    path = "".join(pieces)
    saved = os.environ.get("HOME")
    os.environ["HOME"] = home
    try:
        assert _outcome(expand_path, path) == _outcome(_pathlib, path), repr(path)
    finally:
        if saved is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = saved


@given(names=st.lists(st.text(min_size=1).filter(lambda s: "/" not in s and "\x00" not in s)))
@example(names=["a b", "%41", "?x#y", "é", "~", ".."])
def test_file_uri_is_pathlibs(names: list[str]) -> None:
    path = os.path.normpath("/" + "/".join(names))
    try:
        expected = Path(path).as_uri()
    except UnicodeEncodeError:  # a lone surrogate: neither can encode it
        with pytest.raises(UnicodeEncodeError):
            file_uri(path)
        return
    assert file_uri(path) == expected


def test_an_unknown_user_home_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        SQLiteStore("~no_such_user_x9/runs.db")
    assert str(err.value).startswith("cannot use database path '~no_such_user_x9/runs.db': ")


def test_a_store_under_home_opens_the_expanded_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    store = SQLiteStore("~//data/./runs.db")
    assert store.path == f"{tmp_path}/data/runs.db"
    assert store.create(NewRun("r1", "skill", 1_764_000_000_000_000))
    store.close()
    assert (tmp_path / "data" / "runs.db").exists()
