"""One real webserver and daemon for the whole ``ui`` package, shared by the GraphQL and browser
tests (starting Dagster costs tens of seconds), with one partition run and one three-day
backfill launched through its GraphQL API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.demo.loader import LoadReport, load_days
from acode_dagster.tables import FISCAL_LINES, PRODUCTS, TABLES
from acode_dagster_tests.support.source import platform_environ
from acode_dagster_tests.support.webserver import DagsterUI, dagster_ui

RUN_DAY = date(2026, 9, 14)
"""The partition materialized once, through ``launchRun``, for every test of the package."""
BACKFILL_DAYS = (date(2026, 9, 15), date(2026, 9, 16), date(2026, 9, 17))
"""The three days of the backfill. All of them long over in São Paulo."""
DEMO_ROWS = {FISCAL_LINES.name: 400, PRODUCTS.name: 200}

JOB = "bronze_acode_job"
# Each run's steps in the run worker's own process: one Python start (which imports the whole
# code location) per run instead of one more per asset, on a two-core machine.
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}

LAUNCH_RUN = """
mutation($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

LAUNCH_BACKFILL = """
mutation($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""


BACKFILL = """
query($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      status
      isAssetBackfill
      partitionNames
      error { message }
      runs { runId status }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsMaterialized
            numPartitionsFailed
          }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""
BACKFILL_UNDER_WAY = frozenset({"REQUESTED", "CANCELING", "FAILING"})
# Generous: on two cores shared with other work, starting a run worker alone can take a minute.
RUN_TIMEOUT_S = 300
BACKFILL_TIMEOUT_S = 360


@dataclass(frozen=True)
class Launched:
    """What was launched through GraphQL before the daemon started."""

    run_id: str
    backfill_id: str


@dataclass(frozen=True)
class LaunchedRun:
    run_id: str
    partition: str
    status: str
    errors: list[str]


def asset_key_inputs() -> list[dict[str, list[str]]]:
    return [{"path": list(bronze_key(table).path)} for table in TABLES]


def launch_partition_run(ui: DagsterUI, day: date) -> str:
    """The Launchpad's way: the partitioned job, with the partition tag. Returns the run id."""
    data = ui.graphql(
        LAUNCH_RUN,
        {
            "executionParams": {
                "selector": {**ui.repository, "jobName": JOB},
                "runConfigData": IN_PROCESS,
                "executionMetadata": {
                    "tags": [{"key": "dagster/partition", "value": day.isoformat()}]
                },
            }
        },
    )
    launched = data["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id: str = launched["run"]["runId"]
    return run_id


def launch_asset_backfill(ui: DagsterUI, days: Sequence[date]) -> str:
    """The asset graph's "Materialize" dialog over a range of partitions: an asset backfill of
    the three assets. Returns the backfill id."""
    data = ui.graphql(
        LAUNCH_BACKFILL,
        {
            "backfillParams": {
                "assetSelection": asset_key_inputs(),
                "partitionNames": [day.isoformat() for day in days],
                "title": "ui test: three days of bronze",
                "runConfigData": IN_PROCESS,
            }
        },
    )
    launched = data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id: str = launched["backfillId"]
    return backfill_id


@pytest.fixture(scope="package")
def ui_env(mariadb_pair: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The platform's environment, as the ``env`` fixture sets it (that one is per test; this
    one lives as long as the webserver that reads it)."""
    root = tmp_path_factory.mktemp("ui-platform")
    return platform_environ(mariadb_pair, root / "home", root / "bronze")


@pytest.fixture(scope="package")
def demo_days(mariadb_pair: Any) -> LoadReport:
    """The demo rows of every day the package materializes, in the primary (and, through the
    binlog, its replica)."""
    report = load_days(
        mariadb_pair.endpoint("primary", admin=True), [RUN_DAY, *BACKFILL_DAYS], rows=DEMO_ROWS
    )
    mariadb_pair.wait_replica_caught_up()
    return report


@pytest.fixture(scope="package")
def _ui_session(
    ui_env: dict[str, str], demo_days: LoadReport, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DagsterUI, Launched]]:
    """The webserver, the run and the backfill launched through it, then the daemon.

    The launches come before the daemon starts (the webserver takes them whatever the daemon's
    state; they wait for it): the daemon's backfill loop wakes every 30 s, so a backfill
    launched before its first wake-up has its runs submitted at once, side by side with the
    partition run, instead of up to half a minute later.
    """
    with dagster_ui(tmp_path_factory.mktemp("dagster-ui"), ui_env, start_daemon=False) as ui:
        launched = Launched(
            run_id=launch_partition_run(ui, RUN_DAY),
            backfill_id=launch_asset_backfill(ui, BACKFILL_DAYS),
        )
        ui.start_daemon()
        yield ui, launched


@pytest.fixture(scope="package")
def dagster_webserver(_ui_session: tuple[DagsterUI, Launched]) -> DagsterUI:
    """``dagster-webserver`` and ``dagster-daemon`` on the platform, stopped when the package's
    tests are done (or failed)."""
    return _ui_session[0]


@pytest.fixture(scope="package")
def materialized_run(_ui_session: tuple[DagsterUI, Launched]) -> LaunchedRun:
    """``RUN_DAY`` of the three bronze assets, launched the way the Launchpad does it, waited
    for."""
    ui, launched = _ui_session
    status = ui.wait_for_run(launched.run_id, timeout=RUN_TIMEOUT_S)
    errors = [] if status == "SUCCESS" else ui.run_errors(launched.run_id)
    return LaunchedRun(launched.run_id, RUN_DAY.isoformat(), status, errors)


@pytest.fixture(scope="package")
def finished_backfill(_ui_session: tuple[DagsterUI, Launched]) -> dict[str, Any]:
    """The three-day asset backfill of ``BACKFILL_DAYS`` once the daemon has finished with it,
    as ``partitionBackfillOrError`` tells it."""
    ui, launched = _ui_session
    # The daemon's backfill loop wakes every 30 s: once to launch the runs, once more to see
    # them done.
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while True:
        data = ui.graphql(BACKFILL, {"backfillId": launched.backfill_id})
        result: dict[str, Any] = data["partitionBackfillOrError"]
        assert result["__typename"] == "PartitionBackfill", result
        if result["status"] not in BACKFILL_UNDER_WAY:
            return result
        assert time.monotonic() < deadline, f"backfill still {result}\n{ui.log_tails()}"
        time.sleep(1)
