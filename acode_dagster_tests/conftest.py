"""Fixtures shared by the test suite.

Real parts, not mocks: the MySQL source is a private MariaDB primary and its binlog replica,
started from the installed binaries in pytest's temporary folder, on free ports (never the
system server's 3306).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from acode_dagster.localstack import LocalStack
from acode_dagster_tests.support.source import platform_environ

pytest_plugins = [
    "acode_dagster_tests.support.fixtures",
    "acode_dagster_tests.support.alerting",
    "acode_dagster_tests.support.airbyte",
]

# ---------------------------------------------------------------------- MariaDB pair


@pytest.fixture(scope="session")
def mariadb_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The session's healthy MariaDB pair. Tests may write rows into it but must leave both
    servers running; a test that kills a server uses ``mariadb_pair_factory`` instead."""
    stack = LocalStack(tmp_path_factory.mktemp("stack"))
    try:
        stack.start()
        yield stack
    finally:
        stack.destroy()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, mariadb_pair: Any, tmp_path: Path) -> dict[str, str]:
    """The platform configured the production way: URLs and passwords from the environment."""
    values = platform_environ(mariadb_pair, tmp_path / "home", tmp_path / "bronze")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def mariadb_pair_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LocalStack]]:
    """Makes private (not yet started) pairs, destroyed when the test ends.

    ``make()`` puts the pair in a fresh temporary folder; ``make(home)`` in the folder given.
    """
    made: list[LocalStack] = []

    def make(home: Path | None = None) -> LocalStack:
        stack = LocalStack(home if home is not None else tmp_path_factory.mktemp("private-stack"))
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.destroy()


@pytest.fixture(scope="session", autouse=True)
def _no_stray_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the session if a test left a server of ours running, and kill it.

    Set up first, so torn down last: every other fixture has stopped its servers by then.
    """
    yield
    base = str(tmp_path_factory.getbasetemp())
    strays = _servers_under(base)
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not strays, f"tests left MariaDB servers running under {base}: pids {strays}"


def _servers_under(folder: str) -> list[int]:
    """Pids of live server processes whose datadir lies under ``folder`` (Linux /proc only)."""
    proc = Path("/proc")
    if not (proc / "self").exists():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            zombie = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and any(a.startswith(f"--datadir={folder}/") for a in args):
            found.append(int(entry.name))
    return found
