"""Every definition loads, and the bronze assets materialize through real Dagster execution."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.errors import DagsterUnknownPartitionError

from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.observability.weekly import WEEKLY_REPORT_KEY
from acode_dagster.defs.redundancy.state import REDUNDANCY_KEY
from acode_dagster.defs.resources import build_resources
from acode_dagster.quality import FRESHNESS_CHECK, MIRROR_CHECK, PARTITION_CHECKS
from acode_dagster.settings import Settings
from acode_dagster.tables import TABLES

DAY = date(2026, 11, 5)


def test_every_definition_loads() -> None:
    from acode_dagster.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {bronze_key(t) for t in TABLES} | {
        REDUNDANCY_KEY,
        WEEKLY_REPORT_KEY,
    }
    checks = {(key.asset_key, key.name) for key in graph.asset_check_keys}
    assert checks == {
        (bronze_key(t), spec.name)
        for t in TABLES
        for spec in (*PARTITION_CHECKS, MIRROR_CHECK, FRESHNESS_CHECK)
    } | {(REDUNDANCY_KEY, "replica_consistency")}
    job = defs.resolve_job_def("bronze_acode_job")
    assert job.partitions_def is not None
    assert {j.name for j in defs.jobs or []} == {
        "bronze_acode_job",
        "bronze_sweep_job",
        "bronze_repair_job",
        "replica_check_job",
        "replica_reverify_job",
        "acode_weekly_job",
    }
    assert {s.name for s in defs.schedules or []} == {
        "acode_daily_schedule",
        "bronze_sweep_schedule",
        "bronze_repair_schedule",
        "replica_check_schedule",
        "acode_weekly_schedule",
    }
    assert {s.name for s in defs.sensors or []} == {
        "acode_alert_sensor",
        "acode_freshness_sensor",
        "acode_health_sensor",
        "replica_reverify_sensor",
    }
    assert set(defs.resources or {}) == {
        "acode_sources",
        "bronze",
        "replicator",
        "redundancy",
        "alerting",
        "metrics",
    }


def test_the_sweep_runs_by_default_at_four_in_the_morning_in_sao_paulo() -> None:
    from acode_dagster.definitions import defs

    schedule = defs.resolve_schedule_def("bronze_sweep_schedule")
    assert schedule.cron_schedule == "0 4 * * *"
    assert schedule.execution_timezone == "America/Sao_Paulo"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "bronze_sweep_job"
    job = defs.resolve_job_def("bronze_sweep_job")
    assert job.partitions_def is None and "bronze" in job.required_resource_keys
    fires_at = datetime(2026, 11, 23, 4, 0, tzinfo=ZoneInfo("America/Sao_Paulo"))
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=fires_at) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests or []
    # One unpartitioned run of the schedule's own job (a request names no job when it is that).
    assert [(r.job_name, r.partition_key) for r in requests] == [(None, None)]


def test_assets_share_one_daily_partitioning_in_sao_paulo() -> None:
    partitions = {a.partitions_def for a in bronze_assets}
    assert len(partitions) == 1
    (daily,) = partitions
    assert isinstance(daily, dg.DailyPartitionsDefinition)
    assert daily.timezone == "America/Sao_Paulo"
    for asset in bronze_assets:
        spec = next(iter(asset.specs))
        assert spec.group_name == "bronze_acode"
        assert spec.kinds == {"mysql", "parquet"}
        schema = spec.metadata["dagster/column_schema"]
        table = next(t for t in TABLES if bronze_key(t) == spec.key)
        assert [c.name for c in schema.columns] == list(table.column_names)
        assert spec.description == table.description


@pytest.fixture
def demo_day(mariadb_pair: Any) -> date:
    from acode_dagster.demo.loader import load_days

    load_days(mariadb_pair.endpoint("primary", admin=True), [DAY])
    return DAY


def all_event_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(repr(record) for record in instance.all_logs(run_id))


def test_materialize_three_assets_with_metadata_and_no_secret(
    env: dict[str, str], demo_day: date
) -> None:
    resources = build_resources(Settings.from_env())
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            bronze_assets,
            partition_key=demo_day.isoformat(),
            resources=resources,
            instance=instance,
        )
        assert result.success
        materializations = result.get_asset_materialization_events()
        assert len(materializations) == 3
        for event in materializations:
            materialization = event.materialization
            meta = {k: v.value for k, v in materialization.metadata.items()}
            assert meta["dagster/row_count"] > 0
            assert meta["files"] >= 1 and meta["bytes"] > 0
            assert meta["seconds"] > 0 and meta["rows_per_second"] > 0
            assert meta["source_server"].startswith("127.0.0.1:")
            assert meta["source_role"] == "primary"
            assert str(meta["bronze_url"]).startswith(env["ACODE_BRONZE_URL"])
            assert str(meta["bronze_url"]).endswith(f"cog_dt_ingestion={demo_day}")
        text = all_event_text(instance, result.run_id)
        assert env["ACODE_PASS"] not in text
        assert "published" in text  # the replicator's progress lines reach the run's log


def test_a_malformed_url_fails_the_run_naming_the_setting_not_the_secret(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, demo_day: date
) -> None:
    monkeypatch.setenv("ACODE_MYSQL_PRIMARY_URL", "mysql://acode:Sup3r-S3cret@db:99999/acode")
    resources = build_resources(Settings.from_env())
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [bronze_assets[0]],
            partition_key=demo_day.isoformat(),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        text = all_event_text(instance, result.run_id)
        assert "ACODE_MYSQL_PRIMARY_URL is not a valid MySQL URL" in text
        assert "Sup3r-S3cret" not in text


def test_a_bad_partition_key_is_refused_before_anything_runs(env: dict[str, str]) -> None:
    resources = build_resources(Settings.from_env())
    with pytest.raises(DagsterUnknownPartitionError, match="2026-13-45"):
        dg.materialize(bronze_assets, partition_key="2026-13-45", resources=resources)
    assert not (Path(env["ACODE_BRONZE_URL"])).exists()


def test_embedded_default_reads_the_local_pair(mariadb_pair: Any, tmp_path: Path) -> None:
    """With no URL set, the resources find the local pair's servers through its state folder."""
    from acode_dagster.defs.resources import MySQLServerResource

    resource = MySQLServerResource(role="backup", stack_home=str(mariadb_pair.home))
    endpoint = resource.endpoint()
    assert endpoint.database == "acode_farmarcas_replica"
    assert endpoint.port == mariadb_pair.endpoint("backup").port
    missing = MySQLServerResource(role="primary", stack_home=str(tmp_path / "never-started"))
    with pytest.raises(Exception, match="acode stack start"):
        missing.endpoint()
