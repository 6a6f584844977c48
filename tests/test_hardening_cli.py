"""The CLI under hostile input: an error is one short line and exit 1, never a
traceback."""

from __future__ import annotations

import pytest

from exectrack.cli import main
from exectrack.stores import open_store


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, out: str, err: str, *needles: str) -> None:
    assert (code, out) == (1, "")
    assert err.startswith("exectrack: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err


def migrated(url: str) -> None:
    """An empty exectrack database at ``url``."""
    store = open_store(url)
    store.migrate()
    store.close()


# -- echoed input stays short (issue 7, item 12) -----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "list", "--source", "X" * 100_000],
        ["runs", "list", "--status", "x" * 100_000],
        ["runs", "list", "--cursor", "x" * 100_000],
        ["runs", "list", "--since", "x" * 100_000],
        ["runs", "get", "x" * 100_000],
    ],
    ids=["source", "status", "cursor", "since", "get"],
)
def test_a_huge_argument_makes_a_short_error_line(
    capsys: pytest.CaptureFixture[str], db_url: str, args: list[str]
) -> None:
    """The one error line repeats a short prefix of the argument, not 100 KB."""
    migrated(db_url)
    code, out, err = cli(capsys, "--database", db_url, *args)
    assert_one_error_line(code, out, err)
    assert len(err) < 300, len(err)
