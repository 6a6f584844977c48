"""Configuration, pinned: every spelling of on and off, what an unreadable value does
(an error naming the variable, or a warning when only EXECTRACK_ENABLED is bad and
strict mode is off), each variable's default, trimming, and the default file's place
on each platform."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from exectrack._config import Settings, default_database_path, parse_bool
from exectrack.errors import ConfigError

ON = ["1", "true", "on", "yes", "TRUE", "Yes", " on ", "\ton\n"]
OFF = ["0", "false", "off", "no", "FALSE", "No", " off ", "\t0\n"]


@pytest.mark.parametrize("raw", ON)
@pytest.mark.parametrize("default", [True, False])
def test_every_spelling_of_on(raw: str, default: bool) -> None:
    assert parse_bool("X", raw, default) is True


@pytest.mark.parametrize("raw", OFF)
@pytest.mark.parametrize("default", [True, False])
def test_every_spelling_of_off(raw: str, default: bool) -> None:
    assert parse_bool("X", raw, default) is False


@pytest.mark.parametrize("raw", [None, "", "   ", "\t\n"])
@pytest.mark.parametrize("default", [True, False])
def test_unset_or_blank_is_the_default(raw: str | None, default: bool) -> None:
    assert parse_bool("X", raw, default) is default


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "n", "enabled", "o n", "truee"])
def test_anything_else_is_an_error_naming_the_variable_and_the_choices(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bool("EXECTRACK_SOMETHING", raw, True)
    assert str(caught.value) == (
        f"EXECTRACK_SOMETHING={raw!r} is not a boolean; use one of 1/0, true/false, on/off, yes/no"
    )


def test_a_huge_value_is_echoed_short() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bool("X", "z" * 10_000, True)
    assert len(str(caught.value)) < 200


def test_defaults_with_nothing_set() -> None:
    assert Settings.from_env({}) == Settings(
        enabled=True,
        strict=False,
        database_url=None,
        durability="async",
        reaper=False,
        handle_sigterm=True,
        token=None,
    )


def test_every_variable_read_and_trimmed() -> None:
    env = {
        "EXECTRACK_ENABLED": " off ",
        "EXECTRACK_STRICT": "yes",
        "EXECTRACK_DATABASE_URL": "  sqlite:///x.db \n",
        "EXECTRACK_DURABILITY": " SYNC ",
        "EXECTRACK_REAPER": "1",
        "EXECTRACK_HANDLE_SIGTERM": "no",
        "EXECTRACK_TOKEN": "  s3cret  ",
    }
    assert Settings.from_env(env) == Settings(
        enabled=False,
        strict=True,
        database_url="sqlite:///x.db",
        durability="sync",
        reaper=True,
        handle_sigterm=False,
        token="s3cret",
    )


@pytest.mark.parametrize("name", ["EXECTRACK_DATABASE_URL", "EXECTRACK_TOKEN"])
def test_a_blank_url_or_token_is_none(name: str) -> None:
    settings = Settings.from_env({name: "   "})
    assert settings.database_url is None
    assert settings.token is None


def test_from_env_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECTRACK_TOKEN", "from-os")
    monkeypatch.setenv("EXECTRACK_DURABILITY", "sync")
    settings = Settings.from_env()
    assert (settings.token, settings.durability) == ("from-os", "sync")
    # an explicit mapping, even an empty one, is all that is read
    assert Settings.from_env({}).token is None


@pytest.mark.parametrize("raw", ["", "async", "Async", " async "])
def test_durability_async(raw: str) -> None:
    assert Settings.from_env({"EXECTRACK_DURABILITY": raw}).durability == "async"


@pytest.mark.parametrize("raw", ["fast", "synchronous", "none", "ASYNC!"])
def test_durability_anything_else_is_an_error(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"EXECTRACK_DURABILITY": raw})
    assert str(caught.value) == (
        f"EXECTRACK_DURABILITY={raw.strip().lower()!r}: use 'async' or 'sync'"
    )


@pytest.mark.parametrize(
    "name", ["EXECTRACK_STRICT", "EXECTRACK_REAPER", "EXECTRACK_HANDLE_SIGTERM"]
)
def test_an_unreadable_switch_other_than_enabled_is_an_error(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}='sometimes' is not a boolean"):
        Settings.from_env({name: "sometimes"})


def test_an_unreadable_enabled_warns_and_stays_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="exectrack"):
        settings = Settings.from_env({"EXECTRACK_ENABLED": "sometimes"})
    assert settings.enabled is True
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "ignoring EXECTRACK_ENABLED='sometimes': not a boolean; tracking stays on",
        )
    ]


def test_an_unreadable_enabled_in_strict_mode_is_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="exectrack"),
        pytest.raises(ConfigError, match=r"^EXECTRACK_ENABLED='sometimes' is not a boolean"),
    ):
        Settings.from_env({"EXECTRACK_ENABLED": "sometimes", "EXECTRACK_STRICT": "1"})
    assert caplog.records == []


def test_the_given_url_is_the_url() -> None:
    assert Settings(database_url="postgresql://h/db").resolved_database_url() == (
        "postgresql://h/db"
    )


def test_no_url_is_the_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    for settings in (Settings(), Settings(database_url="")):
        assert settings.resolved_database_url() == (
            f"sqlite:///{tmp_path / 'exectrack' / 'runs.db'}"
        )


def test_the_default_file_on_linux(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_database_path() == tmp_path / "data" / "exectrack" / "runs.db"
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("XDG_DATA_HOME")
        else:
            monkeypatch.setenv("XDG_DATA_HOME", unset)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert default_database_path() == (
            tmp_path / "home" / ".local" / "share" / "exectrack" / "runs.db"
        )


def test_the_default_file_on_macos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "ignored"))
    assert default_database_path() == (
        tmp_path / "Library" / "Application Support" / "exectrack" / "runs.db"
    )


def test_the_default_file_on_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert default_database_path() == tmp_path / "local" / "exectrack" / "runs.db"
    monkeypatch.setenv("LOCALAPPDATA", "")
    assert default_database_path() == tmp_path / "AppData" / "Local" / "exectrack" / "runs.db"
