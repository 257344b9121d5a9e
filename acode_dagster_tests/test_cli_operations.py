"""The operator's commands: health, status, sync, route pin/unpin, and a --help to follow."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster.cli import main
from acode_dagster.demo.loader import load_days
from acode_dagster.tables import FISCAL_LINES

DAY = date(2026, 8, 20)


@pytest.fixture
def operated(
    env: dict[str, str], mariadb_pair: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(tmp_path / "bronze-backup"))
    load_days(mariadb_pair.endpoint("primary", admin=True), [DAY], rows={FISCAL_LINES.name: 300})
    mariadb_pair.wait_replica_caught_up()
    return env


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command_with_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command in ("stack", "demo", "quickstart", "anomalies", "health", "status", "sync"):
        assert f"    {command}" in text, command
    assert "route" in text and "pin the route" in text
    with pytest.raises(SystemExit):
        main(["route", "--help"])
    assert "acode route pin backup --reason" in capsys.readouterr().out


def test_health_status_sync_and_a_pin_through_the_command_line(
    operated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["health"], capsys)
    assert code == 0, out
    assert out.count(" yes ") == 4
    assert operated["ACODE_PASS"] not in out

    code, out, _ = run(["sync", FISCAL_LINES.name, str(DAY)], capsys)
    assert code == 0, out
    assert "300" in out and out.count(" PASS ") == 7  # five partition checks, mirror, freshness

    code, out, _ = run(["status"], capsys)
    assert code == 0
    assert "route: source=primary bucket=primary" in out
    assert "last change: none" in out
    fiscal = next(line for line in out.splitlines() if line.startswith(FISCAL_LINES.name + " "))
    assert str(DAY) in fiscal and fiscal.count("PASS") == 6  # five checks and the mirror

    code, out, _ = run(["route", "pin", "backup", "--reason", "primary maintenance"], capsys)
    assert code == 0 and "pinned" in out
    code, out, _ = run(["sync", FISCAL_LINES.name, str(DAY)], capsys)
    assert code == 0
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records(limit=1)
        (event,) = [
            e
            for e in instance.all_logs(runs[0].dagster_run.run_id)
            if e.dagster_event and e.dagster_event.is_step_materialization
        ]
        meta = event.dagster_event.materialization.metadata  # type: ignore[union-attr]
    assert meta["source_role"].value == "backup" and meta["bucket_role"].value == "backup"
    code, out, _ = run(["status"], capsys)
    assert "route: source=backup bucket=backup (pinned to backup by" in out
    assert "primary maintenance" in out

    code, out, _ = run(["route", "unpin", "--reason", "maintenance over"], capsys)
    assert code == 0 and "unpinned" in out
    code, out, _ = run(["status"], capsys)
    assert "pinned" not in out.splitlines()[0]


def test_bad_operator_input_is_refused_with_the_fix(
    operated: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: Any
) -> None:
    code, _, err = run(["route", "pin", "backup"], capsys)
    assert code == 2 and "--reason" in err
    code, _, err = run(["sync", "nope", str(DAY)], capsys)
    assert code == 2 and "unknown table 'nope'" in err
    code, _, err = run(["sync", FISCAL_LINES.name, "2026-02-30"], capsys)
    assert code == 2 and "real calendar day" in err

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(blocked / "bronze"))
    code, out, _ = run(["health"], capsys)
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("bucket_backup"))
    assert " NO " in line
