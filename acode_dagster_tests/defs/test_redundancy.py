"""Failover and fail-back proven with real faults: servers killed, replication stopped, a bucket
revoked, through the real health sensor, real runs and the instance's storage."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster.bronze.store import LocalStore, open_store, s3_client
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.redundancy.state import load_state, recent_route_events
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.loader import load_days
from acode_dagster.errors import SourceError
from acode_dagster.localstack import LocalStack
from acode_dagster.replicator import EmbeddedReplicator
from acode_dagster.routing import Route
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, TABLES, last_complete_days
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack
from acode_dagster_tests.support.platform import (
    Platform,
    metadata_of,
    started_platform,
    wait_for,
)
from acode_dagster_tests.support.source import source_window

DAYS = last_complete_days(3)
ROWS = {FISCAL_LINES.name: 300}


@pytest.fixture
def platform(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mariadb_pair_factory: Callable[..., LocalStack],
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> Iterator[Platform]:
    settings = {
        "ACODE_PROBE_TIMEOUT_S": "1",
        "ACODE_FAILOVER_AFTER": "2",
        "ACODE_FAILBACK_AFTER": "3",
        "ACODE_FAILBACK_DWELL_S": "0",
        "ACODE_CATCHUP_DAYS": str(len(DAYS)),
        "ACODE_RETRIES": "1",
        "ACODE_RETRY_BASE_S": "0.1",
    }
    with started_platform(
        tmp_path,
        monkeypatch,
        mariadb_pair_factory,
        slack_server,
        pagerduty_server,
        settings=settings,
        days=DAYS,
        rows=ROWS,
    ) as started:
        yield started


def test_primary_killed_fail_over_sync_from_backup_fail_back_and_catch_up(
    platform: Platform, slack_server: LoopbackSlack, tmp_path: Path
) -> None:
    first, second, third = DAYS
    assert platform.tick() == [] and platform.route == Route("primary", "primary")
    landed = platform.materialize(first)
    assert landed.success and metadata_of(landed)["source_role"] == "primary"

    platform.stack.kill("primary")
    platform.tick()
    assert platform.route.source == "primary", "one failed probe must not move the route"
    requests = platform.tick()
    assert platform.route == Route("backup", "primary")
    # The days never landed in the catch-up window are requested on the new route, once.
    assert sorted(r.partition_key for r in requests) == [str(second), str(third)]

    synced = platform.materialize(second)
    assert synced.success
    meta = metadata_of(synced)
    assert meta["source_role"] == "backup"
    assert meta["source_server"] == platform.stack.endpoint("backup").address
    bronze = LocalStore(tmp_path / "bronze").read_partition(FISCAL_LINES, second)
    expected = source_window(platform.stack.endpoint("backup"), FISCAL_LINES, second)
    assert sorted(bronze.column("id").to_pylist()) == [r["id"] for r in expected]

    platform.stack.start_server("primary")
    wait_for(lambda: platform.healthy("mysql_primary"), "the primary to answer again")
    platform.tick(2)
    assert platform.route.source == "backup", "two healthy probes are not enough to come back"
    requests = platform.tick()
    assert platform.route == Route("primary", "primary")
    assert [r.partition_key for r in requests] == [str(third)]
    caught_up = platform.run(requests[0])
    assert caught_up.success
    assert all(e.passed for e in caught_up.get_asset_check_evaluations())
    assert metadata_of(caught_up)["source_role"] == "primary"

    # The history, as the UI reads it, and one alert per change.
    events = recent_route_events(platform.instance)
    assert [(e.kind, e.from_role, e.to_role) for e in events] == [
        ("failback", "backup", "primary"),
        ("failover", "primary", "backup"),
    ]
    assert events[0].outage_s is not None and events[0].outage_s > 0
    platform.tick_alerts()
    platform.tick_alerts()
    titles = [m["text"].splitlines()[0] for m in slack_server.messages]
    assert len(titles) == 2, titles
    for event in events:
        said = event.describe().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert len([t for t in titles if t.endswith(said)]) == 1, (said, titles)

    # A daemon restart is a new process reading the same instance: same route, same history.
    script = (
        "import dagster as dg\n"
        "from acode_dagster.defs.redundancy.state import load_state, recent_route_events\n"
        "i = dg.DagsterInstance.get()\n"
        "print(load_state(i).to_json())\n"
        "print(len(recent_route_events(i)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "DAGSTER_HOME": platform.instance.root_directory},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == load_state(platform.instance).to_json()
    assert out[1] == "2"


def test_a_flapping_primary_does_not_move_the_route(platform: Platform) -> None:
    for _ in range(3):
        platform.stack.kill("primary")
        platform.tick()
        platform.stack.start_server("primary")
        wait_for(lambda: platform.healthy("mysql_primary"), "the primary")
        platform.tick()
    assert platform.route == Route("primary", "primary")
    assert recent_route_events(platform.instance) == []


def test_both_down_keeps_the_route_pages_once_and_resumes(
    platform: Platform, pagerduty_server: LoopbackPagerDuty, tmp_path: Path
) -> None:
    first = DAYS[0]
    platform.stack.kill("primary")
    platform.stack.kill("backup")
    platform.tick(4)
    assert platform.route == Route("primary", "primary")
    events = recent_route_events(platform.instance)
    assert [e.kind for e in events] == ["both_down"] and events[0].critical

    failed = platform.materialize(first, [bronze_key(FISCAL_LINES)])
    assert not failed.success
    assert LocalStore(tmp_path / "bronze").visible_files(FISCAL_LINES, first) == []

    platform.tick_alerts()
    platform.tick_alerts()
    assert [e["event_action"] for e in pagerduty_server.events] == ["trigger"]

    platform.stack.start_server("backup")
    wait_for(lambda: platform.healthy("mysql_backup"), "the backup")
    requests = platform.tick()
    assert platform.route.source == "backup"
    kinds = [e.kind for e in recent_route_events(platform.instance)]
    assert kinds[:2] == ["failover", "recovered"]
    assert str(first) in {r.partition_key for r in requests}
    caught_up = platform.run(next(r for r in requests if r.partition_key == str(first)))
    assert caught_up.success and metadata_of(caught_up)["source_role"] == "backup"
    platform.tick_alerts()
    assert [e["event_action"] for e in pagerduty_server.events] == ["trigger", "resolve"]


def test_a_stopped_replica_is_not_a_failover_target(platform: Platform) -> None:
    admin = platform.stack.endpoint("backup", admin=True)
    connection = admin.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("STOP SLAVE")
        assert not platform.healthy("mysql_backup")
        platform.stack.kill("primary")
        platform.tick(3)
        assert platform.route.source == "primary"
        assert [e.kind for e in recent_route_events(platform.instance)] == ["both_down"]
        observations = platform.instance.fetch_observations(dg.AssetKey("redundancy"), limit=1)
        latest = observations.records[0].asset_observation
        assert latest is not None
        assert latest.metadata["mysql_backup_healthy"].value == 0
        assert "replication" in str(latest.metadata["probes"].value)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("START SLAVE")
        connection.close()


def test_a_sync_that_loses_its_source_retries_on_the_new_route(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run starts with the primary dead; while it waits to retry, the sensor fails over."""
    platform.stack.kill("primary")
    monkeypatch.setenv("ACODE_RETRY_BASE_S", "8")
    platform.resources = build_resources(Settings.from_env())

    def fail_over_once_the_step_waits_to_retry() -> None:
        # Ticking after a fixed sleep raced the run's start on a busy machine: the route could
        # move before the first attempt read it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _waiting_to_retry(platform.instance):
            time.sleep(0.05)
        platform.tick(2)

    ticker = threading.Thread(target=fail_over_once_the_step_waits_to_retry)
    ticker.start()
    result = platform.materialize(DAYS[0], [bronze_key(FISCAL_LINES)])
    ticker.join()
    assert result.success
    assert metadata_of(result)["source_role"] == "backup"
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1


def _waiting_to_retry(instance: dg.DagsterInstance) -> bool:
    records = instance.get_run_records(limit=1)
    if not records:
        return False
    return any(
        entry.dagster_event is not None
        and entry.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
        for entry in instance.all_logs(records[0].dagster_run.run_id)
    )


def test_a_revoked_bucket_moves_the_bucket_route_and_back(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, s3_server: Any
) -> None:
    client = s3_client()
    primary, backup = (f"acode-{name}-{os.getpid()}" for name in ("main", "spare"))
    for bucket in (primary, backup):
        client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("ACODE_BRONZE_URL", f"s3://{primary}/lake")
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", f"s3://{backup}/lake")
    platform.resources = build_resources(Settings.from_env())
    platform.tick()
    assert platform.route == Route("primary", "primary")

    client.delete_bucket(Bucket=primary)  # revoked
    platform.tick(2)
    assert platform.route == Route("primary", "backup")
    landed = platform.materialize(DAYS[0], [bronze_key(TABLES[0])])
    assert landed.success and metadata_of(landed)["bucket_role"] == "backup"
    assert open_store(f"s3://{backup}/lake").manifest(TABLES[0], DAYS[0]) is not None

    client.create_bucket(Bucket=primary)
    platform.tick(3)
    assert platform.route == Route("primary", "primary")
    kinds = [(e.kind, e.parts) for e in recent_route_events(platform.instance)]
    assert kinds == [("failback", ("bucket",)), ("failover", ("bucket",))]


def test_a_source_lost_mid_sync_publishes_nothing_and_is_worth_a_retry(
    platform: Platform, tmp_path: Path
) -> None:
    day = DAYS[0]
    load_days(
        platform.stack.endpoint("primary", admin=True), [day], rows={FISCAL_LINES.name: 60_000}
    )
    store = LocalStore(tmp_path / "mid-sync")
    killed: list[str] = []

    def kill_after_first_batch(line: str) -> None:
        if "rows/s" in line and not killed:
            killed.append(line)
            platform.stack.kill("primary")

    replicator = EmbeddedReplicator(batch_rows=500, progress_every_s=0, log=kill_after_first_batch)
    with pytest.raises(SourceError) as error:
        replicator.sync(FISCAL_LINES, day, platform.stack.endpoint("primary"), store)
    assert killed, "the sync finished before the kill: nothing was tested"
    assert error.value.transient, error.value
    assert store.visible_files(FISCAL_LINES, day) == []
    assert store.manifest(FISCAL_LINES, day) is None
