"""One process for a run of one sync, one process per step for a run of several: real runs of
the Dagster command line on the session's MariaDB pair, and the daily job's plan."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.tables import FISCAL_LINES, PRODUCTS

DAY = date(2026, 9, 14)


@pytest.fixture
def cli_env(env: dict[str, str], mariadb_pair: Any, tmp_path: Path) -> dict[str, str]:
    from acode_dagster import runs
    from acode_dagster.demo.loader import load_days
    from acode_dagster.settings import Settings

    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        [DAY],
        rows={FISCAL_LINES.name: 3000},
    )
    os.environ["DAGSTER_HOME"] = str(tmp_path / "dagster")
    runs.ensure_dagster_home(Settings.from_env())
    return {**os.environ}


def dagster_cli(args: list[str], environ: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dagster", *args, "-m", "acode_dagster.definitions"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_one_table_and_day_runs_in_the_run_process(
    cli_env: dict[str, str],
) -> None:
    """``dagster asset materialize`` of one table and day: the sync and its freshness check run
    in the command's own process (no step subprocess)."""
    one = dagster_cli(
        [
            "asset",
            "materialize",
            "--select",
            bronze_key(FISCAL_LINES).to_user_string(),
            "--partition",
            DAY.isoformat(),
        ],
        cli_env,
    )
    assert "Executing steps in process" in one, one[-3000:]
    assert "Launching subprocess" not in one
    assert "Started execution of step" in one and "_freshness" in one
    instance = dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"])
    records = instance.fetch_materializations(bronze_key(FISCAL_LINES), limit=10).records
    assert [r.partition_key for r in records] == [DAY.isoformat()]


def test_the_daily_job_keeps_one_process_per_sync() -> None:
    """Its three syncs run side by side, one process each, as the pool allows."""
    from dagster._core.execution.api import create_execution_plan

    from acode_dagster.definitions import defs
    from acode_dagster.defs.executor import syncs_in

    job = defs.resolve_job_def("bronze_acode_job")
    plan = create_execution_plan(job, tags={"dagster/partition": DAY.isoformat()})
    assert syncs_in(plan) == 3
    one = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={bronze_key(PRODUCTS)}
    )
    assert syncs_in(create_execution_plan(one, tags={"dagster/partition": DAY.isoformat()})) == 1
    assert job.executor_def.name == "acode_executor"
