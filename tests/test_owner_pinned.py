"""Process identity, pinned: the owner id's parts, read from the real process table;
a process name that holds ``)`` and spaces; a forked child's own id and generation;
and which owners are alive, dead, or unknown to this host."""

from __future__ import annotations

import multiprocessing
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exectrack import _owner
from exectrack._owner import (
    hostname,
    owner_alive,
    parse_owner,
    process_owner,
    start_token,
)


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 on)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split(" ")


def test_hostname_is_the_socket_modules() -> None:
    assert hostname() == socket.gethostname()


def test_the_start_token_is_field_22_of_proc_stat() -> None:
    token = start_token(os.getpid())
    assert token is not None and token.isdigit()
    assert token == stat_fields(os.getpid())[22 - 3]


def test_a_process_named_with_a_paren_and_spaces_has_the_right_token(tmp_path: Path) -> None:
    """The command name sits in parentheses and may hold ``) ``, spaces and bytes
    that are not ASCII."""
    odd = tmp_path / "\u00e9) 1 2 3 4"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        assert "(\u00e9) 1 2 3 4)" in stat
        assert start_token(child.pid) == stat_fields(child.pid)[22 - 3]
        assert start_token(child.pid) != stat.split(")", 1)[1].split()[19]
    finally:
        child.kill()
        child.wait()


def test_no_token_for_a_process_that_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert start_token(child.pid) is None


def test_the_owner_id_is_host_pid_start_time_and_is_kept() -> None:
    owner = process_owner()
    assert owner == f"{hostname()}:{os.getpid()}:{start_token(os.getpid())}"
    assert process_owner() is owner


def test_without_a_start_time_the_token_is_random(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_owner, "_owner", None)
    monkeypatch.setattr(_owner, "start_token", lambda pid: None)
    owner = process_owner()
    host, pid, token = owner.rsplit(":", 2)
    assert (host, pid) == (hostname(), str(os.getpid()))
    assert re.fullmatch(r"x[0-9a-f]{8}", token), owner
    monkeypatch.setattr(_owner, "_owner", None)
    assert process_owner() != owner  # random each time it is made
    assert owner_alive(owner) is True  # a random token: only the pid can be checked


def _identity() -> tuple[str, int, int, str]:
    return process_owner(), _owner.generation, os.getpid(), stat_fields(os.getpid())[19]


def _child_identity(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Report this child's identity, then its own forked child's."""
    process_owner()  # made here first: the grandchild must not inherit it
    queue.put(_identity())
    grandchild = multiprocessing.get_context("fork").Process(target=lambda: queue.put(_identity()))
    grandchild.start()
    grandchild.join(60)


def test_forked_children_have_their_own_owner_and_a_new_generation() -> None:
    parent = process_owner()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_identity, args=(queue,))
    child.start()
    reports = [queue.get(timeout=60), queue.get(timeout=60)]
    child.join(60)
    assert child.exitcode == 0
    for depth, (owner, generation, pid, started) in enumerate(reports, start=1):
        assert owner == f"{hostname()}:{pid}:{started}"
        assert pid != os.getpid()
        assert generation == _owner.generation + depth
    assert reports[0][0] != reports[1][0]
    assert process_owner() == parent


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("h:12:345", ("h", 12, "345")),
        ("host.example:1:x0a1b2c3d", ("host.example", 1, "x0a1b2c3d")),
        ("fe80::1:7:99", ("fe80::1", 7, "99")),  # a host with colons of its own
        (":0:", ("", 0, "")),
        ("h:12", None),
        ("h", None),
        ("", None),
        ("h:x:1", None),
        ("h:-1:1", None),
        ("h:1.5:1", None),
        ("h: 1:1", None),
    ],
)
def test_parse_owner(text: str, parsed: tuple[str, int, str] | None) -> None:
    assert parse_owner(text) == parsed


def test_this_process_is_alive() -> None:
    assert owner_alive(process_owner()) is True


def test_a_process_that_ended_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    owner = f"{hostname()}:{child.pid}:{start_token(child.pid)}"
    assert owner_alive(owner) is True
    child.kill()
    child.wait()
    assert owner_alive(owner) is False


def test_a_reused_pid_is_a_different_process() -> None:
    """The pid runs, but started at another time: the owner that had it is dead."""
    token = start_token(os.getpid())
    assert token is not None
    assert owner_alive(f"{hostname()}:{os.getpid()}:{int(token) + 1}") is False
    assert owner_alive(f"{hostname()}:{os.getpid()}:{token}") is True


def test_a_random_token_is_alive_while_its_pid_is() -> None:
    assert owner_alive(f"{hostname()}:{os.getpid()}:xdeadbeef") is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert owner_alive(f"{hostname()}:{child.pid}:xdeadbeef") is False


@pytest.mark.parametrize(
    "template",
    [
        "some-other-host:1:1",
        "{host}x:{pid}:1",  # a host whose name only starts like this one's
        "not an owner",
        "{host}:pid:1",
    ],
)
def test_another_host_or_another_format_cannot_be_told(template: str) -> None:
    owner = template.format(host=socket.gethostname(), pid=os.getpid())
    assert owner_alive(owner) is None


def test_no_process_table_cannot_be_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_owner.os, "name", "nt")
    assert owner_alive(process_owner()) is None


def test_a_running_pid_whose_start_time_cannot_be_read_is_taken_as_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Better a run kept open for the lease to end than one reaped while it runs."""
    owner = f"{hostname()}:{os.getpid()}:12345"
    assert owner_alive(owner) is False  # readable, and another start time
    monkeypatch.setattr(_owner, "start_token", lambda pid: None)
    assert owner_alive(owner) is True
