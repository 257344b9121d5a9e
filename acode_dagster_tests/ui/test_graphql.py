"""What a person finds in the Dagster UI, asked of the real webserver over its GraphQL API (the
API the UI itself uses), with the real daemon launching the runs and ticking the sensors.

Field names follow the schema of the installed dagster-graphql (Dagster 1.13).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from acode_dagster.defs.bronze.checks import GROUP, bronze_key
from acode_dagster.quality import FRESHNESS_CHECK, MIRROR_CHECK, PARTITION_CHECKS
from acode_dagster.settings import DEFAULT_PARTITIONS_START
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, TABLES
from acode_dagster_tests.support.webserver import DagsterUI
from acode_dagster_tests.ui.conftest import (
    BACKFILL_DAYS,
    JOB,
    RUN_DAY,
    LaunchedRun,
    asset_key_inputs,
)

pytestmark = pytest.mark.slow

ASSET_PATHS = {tuple(bronze_key(table).path) for table in TABLES}
PARTITION_CHECK_NAMES = {spec.name for spec in PARTITION_CHECKS}
SENSORS = {"acode_health_sensor", "acode_alert_sensor", "acode_freshness_sensor"}
SCHEDULE = "acode_daily_schedule"

GROUP_ASSETS = """
query($group: AssetGroupSelector!) {
  assetNodes(group: $group) {
    assetKey { path }
    groupName
    isPartitioned
    partitionDefinition { type }
    partitionKeys
    jobNames
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks { name blocking partitionDefinition { type } }
      }
    }
  }
}
"""

INSTIGATORS = """
query($repo: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repo) {
    __typename
    ... on Sensors {
      results {
        name
        sensorState { status ticks(limit: 1) { status } }
      }
    }
  }
  schedulesOrError(repositorySelector: $repo) {
    __typename
    ... on Schedules {
      results { name cronSchedule executionTimezone pipelineName scheduleState { status } }
    }
  }
}
"""

MATERIALIZATIONS = """
query($keys: [AssetKeyInput!], $partitions: [String!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(partitions: $partitions) {
      runId
      partition
      metadataEntries {
        label
        ... on IntMetadataEntry { intValue }
      }
    }
  }
}
"""


def check_executions(
    ui: DagsterUI, partitions: list[str]
) -> dict[tuple[tuple[str, ...], str, str], list[dict[str, Any]]]:
    """Every execution of every partition check of every bronze asset for ``partitions``, in one
    request (one aliased ``assetCheckExecutions`` field per asset, check and partition)."""
    wanted = [
        (tuple(bronze_key(table).path), check, partition)
        for table in TABLES
        for check in sorted(PARTITION_CHECK_NAMES)
        for partition in partitions
    ]
    fields = "\n".join(
        f"c{i}: assetCheckExecutions(assetKey: {{path: {json.dumps(list(path))}}},"
        f" checkName: {json.dumps(check)}, partition: {json.dumps(partition)}, limit: 10) {{"
        " runId status partition evaluation { success severity partition } }"
        for i, (path, check, partition) in enumerate(wanted)
    )
    data = ui.graphql(f"query {{\n{fields}\n}}")
    return {key: data[f"c{i}"] for i, key in enumerate(wanted)}


def metadata(event: dict[str, Any]) -> dict[str, Any]:
    return {entry["label"]: entry.get("intValue") for entry in event["metadataEntries"]}


def test_the_bronze_group_shows_three_daily_partitioned_assets_with_their_checks(
    dagster_webserver: DagsterUI,
) -> None:
    ui = dagster_webserver
    group = {**ui.repository, "groupName": GROUP}
    nodes = ui.graphql(GROUP_ASSETS, {"group": group})["assetNodes"]

    assert {tuple(node["assetKey"]["path"]) for node in nodes} == ASSET_PATHS
    for node in nodes:
        name = "/".join(node["assetKey"]["path"])
        assert node["groupName"] == GROUP
        assert node["isPartitioned"], name
        assert node["partitionDefinition"]["type"] == "TIME_WINDOW", name
        keys = node["partitionKeys"]
        assert keys[0] == DEFAULT_PARTITIONS_START, name
        assert RUN_DAY.isoformat() in keys, name
        assert all(day.isoformat() in keys for day in BACKFILL_DAYS), name
        assert JOB in node["jobNames"], name

        checks_or_error = node["assetChecksOrError"]
        assert checks_or_error["__typename"] == "AssetChecks", checks_or_error
        checks = {check["name"]: check for check in checks_or_error["checks"]}
        assert set(checks) == PARTITION_CHECK_NAMES | {MIRROR_CHECK.name, FRESHNESS_CHECK.name}
        for spec in (*PARTITION_CHECKS, MIRROR_CHECK):
            assert checks[spec.name]["blocking"] == spec.blocking, (name, spec.name)
            assert checks[spec.name]["partitionDefinition"]["type"] == "TIME_WINDOW"
        # Freshness is about the table, not a day.
        assert checks[FRESHNESS_CHECK.name]["partitionDefinition"] is None


def test_the_sensors_and_the_daily_schedule_are_running_and_ticked_by_the_daemon(
    dagster_webserver: DagsterUI,
) -> None:
    ui = dagster_webserver
    deadline = time.monotonic() + 60
    while True:
        data = ui.graphql(INSTIGATORS, {"repo": ui.repository})
        sensors = {s["name"]: s["sensorState"] for s in data["sensorsOrError"]["results"]}
        assert set(sensors) >= SENSORS, sensors
        # The daemon ticks every sensor soon after it starts; wait for the first ticks.
        if all(sensors[name]["ticks"] for name in SENSORS) or time.monotonic() > deadline:
            break
        time.sleep(1)
    for name in SENSORS:
        assert sensors[name]["status"] == "RUNNING", name
        assert sensors[name]["ticks"], f"the daemon never ticked {name}"
        assert sensors[name]["ticks"][0]["status"] in {"SUCCESS", "SKIPPED"}, (name, sensors)

    schedules = {s["name"]: s for s in data["schedulesOrError"]["results"]}
    schedule = schedules[SCHEDULE]
    assert schedule["scheduleState"]["status"] == "RUNNING"
    assert schedule["cronSchedule"] == "0 2 * * *"
    assert schedule["executionTimezone"] == "America/Sao_Paulo"
    assert schedule["pipelineName"] == JOB


def test_a_launched_partition_run_succeeds_and_its_materializations_arrive(
    dagster_webserver: DagsterUI, materialized_run: LaunchedRun, demo_days: Any
) -> None:
    assert materialized_run.status == "SUCCESS", materialized_run.errors
    data = dagster_webserver.graphql(
        MATERIALIZATIONS, {"keys": asset_key_inputs(), "partitions": [materialized_run.partition]}
    )
    events = {
        tuple(node["assetKey"]["path"]): node["assetMaterializations"]
        for node in data["assetNodes"]
    }
    assert set(events) == ASSET_PATHS
    for table in TABLES:
        [event] = events[tuple(bronze_key(table).path)]
        assert event["runId"] == materialized_run.run_id
        assert event["partition"] == materialized_run.partition
        rows = metadata(event)["dagster/row_count"]
        assert isinstance(rows, int)
        assert rows > 0, table.name
        if table in (FISCAL_LINES, NFE_COMPLEMENTS):  # the day's rows, exactly as loaded
            assert rows == demo_days.rows_of(table, RUN_DAY), table.name


def test_the_partition_checks_of_the_run_arrive_passed(
    dagster_webserver: DagsterUI, materialized_run: LaunchedRun
) -> None:
    executions = check_executions(dagster_webserver, [materialized_run.partition])
    assert len(executions) == len(TABLES) * len(PARTITION_CHECK_NAMES)
    for (path, check, partition), found in executions.items():
        [execution] = found
        assert execution["runId"] == materialized_run.run_id, (path, check)
        assert execution["status"] == "SUCCEEDED", (path, check, execution)
        assert execution["evaluation"]["success"] is True, (path, check)
        assert execution["evaluation"]["partition"] == partition


def test_a_three_day_backfill_from_the_ui_materializes_each_partition_exactly_once(
    dagster_webserver: DagsterUI, finished_backfill: dict[str, Any]
) -> None:
    """The backfill was launched through ``launchPartitionBackfill``, as the UI's "Materialize"
    dialog does (see ``launch_asset_backfill``), and the daemon ran it to its end."""
    ui = dagster_webserver
    days = [day.isoformat() for day in BACKFILL_DAYS]
    result = finished_backfill

    runs = result["runs"]
    failures = {r["runId"]: ui.run_errors(r["runId"]) for r in runs if r["status"] != "SUCCESS"}
    assert result["status"] == "COMPLETED_SUCCESS", (result, failures)
    assert result["error"] is None
    assert result["isAssetBackfill"]
    assert sorted(result["partitionNames"]) == days
    assert not failures
    # One run per day, each materializing the three assets of its day.
    assert len(runs) == len(days), runs
    statuses = result["assetBackfillData"]["assetBackfillStatuses"]
    assert {tuple(status["assetKey"]["path"]) for status in statuses} == ASSET_PATHS
    for status in statuses:
        assert status["numPartitionsTargeted"] == len(days), status
        assert status["numPartitionsMaterialized"] == len(days), status
        assert status["numPartitionsFailed"] == 0, status

    # Every materialization event of those days (the field pages through all of them).
    data = ui.graphql(MATERIALIZATIONS, {"keys": asset_key_inputs(), "partitions": days})
    counted = Counter(
        (tuple(node["assetKey"]["path"]), event["partition"])
        for node in data["assetNodes"]
        for event in node["assetMaterializations"]
    )
    expected = {(path, day) for path in ASSET_PATHS for day in days}
    assert set(counted) == expected
    assert all(count == 1 for count in counted.values()), counted
    backfill_runs = {run["runId"] for run in runs}
    assert {
        event["runId"] for node in data["assetNodes"] for event in node["assetMaterializations"]
    } <= backfill_runs

    executions = check_executions(ui, days)
    for key, found in executions.items():
        assert [e["status"] for e in found] == ["SUCCEEDED"], (key, found)
        assert found[0]["runId"] in backfill_runs, key
