"""``ACODE_REPLICATOR=airbyte`` end to end: real runs trigger the routed connection through the
real dagster-airbyte client against the loopback Airbyte server, which reads the real MariaDB
pair and lands Parquet; the platform publishes the partitions from what landed.

Faults are real: a primary server killed, jobs that fail or hang, a run process interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster.bronze.store import LocalStore
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.loader import last_complete_days, load_days
from acode_dagster.localstack import LocalStack
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, TABLES, Table
from acode_dagster_tests.support.airbyte import LoopbackAirbyte
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack
from acode_dagster_tests.support.platform import Platform, metadata_of, wait_for
from acode_dagster_tests.support.source import platform_environ, source_window

DAYS = last_complete_days(3)
ROWS = {FISCAL_LINES.name: 300}
FISCAL = [bronze_key(FISCAL_LINES)]


class AirbytePlatform(Platform):
    airbyte: LoopbackAirbyte
    bronze: LocalStore

    def reconfigure(self, **settings: str) -> None:
        """Change settings and rebuild the resources, as a redeploy would."""
        for name, value in settings.items():
            os.environ[name] = value
        self.resources = build_resources(Settings.from_env())


@pytest.fixture(scope="module")
def loaded_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A private pair with the demo days, shared by the tests that leave its servers running."""
    stack = LocalStack(tmp_path_factory.mktemp("airbyte-pair"))
    try:
        stack.start()
        load_days(stack.endpoint("primary", admin=True), DAYS, rows=ROWS)
        stack.wait_replica_caught_up()
        yield stack
    finally:
        stack.destroy()


@pytest.fixture
def stack(loaded_pair: LocalStack) -> LocalStack:
    return loaded_pair


@pytest.fixture
def killable_stack(mariadb_pair_factory: Callable[..., LocalStack]) -> LocalStack:
    """A pair of the test's own, for a test that stops one of its servers."""
    stack = mariadb_pair_factory()
    stack.start()
    load_days(stack.endpoint("primary", admin=True), DAYS, rows=ROWS)
    stack.wait_replica_caught_up()
    return stack


def make_platform(
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    slack: LoopbackSlack,
    pagerduty: LoopbackPagerDuty,
) -> Iterator[AirbytePlatform]:
    bronze = tmp_path / "bronze"
    primary, backup = stack.endpoint("primary"), stack.endpoint("backup")
    airbyte = LoopbackAirbyte.for_pair(primary, backup, bronze / "_airbyte_staging")
    settings = {
        **platform_environ(stack, tmp_path / "home", bronze),
        "ACODE_REPLICATOR": "airbyte",
        "ACODE_BRONZE_BACKUP_URL": str(tmp_path / "bronze-backup"),
        "ACODE_PROBE_TIMEOUT_S": "2",
        "ACODE_FAILOVER_AFTER": "2",
        "ACODE_FAILBACK_DWELL_S": "0",
        "ACODE_CATCHUP_DAYS": "0",
        "ACODE_AIRBYTE_POLL_S": "0.1",
        "ACODE_AIRBYTE_TIMEOUT_S": "60",
    }
    with airbyte:
        for name, value in {**settings, **airbyte.environ()}.items():
            monkeypatch.setenv(name, value)
        dagster_home = tmp_path / "dagster"
        dagster_home.mkdir()
        with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
            platform = AirbytePlatform(stack, instance, slack, pagerduty)
            platform.airbyte, platform.bronze = airbyte, LocalStore(bronze)
            yield platform


@pytest.fixture
def platform(
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> Iterator[AirbytePlatform]:
    yield from make_platform(stack, tmp_path, monkeypatch, slack_server, pagerduty_server)


@pytest.fixture
def killable_platform(
    killable_stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> Iterator[AirbytePlatform]:
    yield from make_platform(killable_stack, tmp_path, monkeypatch, slack_server, pagerduty_server)


def bronze_rows(store: LocalStore, table: Table, day: Any) -> list[dict[str, Any]]:
    return sorted(store.read_partition(table, day).to_pylist(), key=lambda r: r[table.key])


def run_text(platform: Platform, result: dg.ExecuteInProcessResult) -> str:
    """Everything the run logged, failures included: what a person reads in the UI."""
    records = platform.instance.all_logs(result.run_id)
    return "\n".join(
        str(r.dagster_event.event_specific_data) if r.dagster_event else r.user_message
        for r in records
    ) + "\n".join(r.user_message for r in records)


def test_partition_lands_through_the_primary_connection_and_its_checks_pass(
    platform: AirbytePlatform,
) -> None:
    day = DAYS[0]
    result = platform.materialize(day)

    assert result.success
    airbyte = platform.airbyte
    assert airbyte.jobs_started(airbyte.primary_id) and not airbyte.jobs_started(airbyte.backup_id)
    primary = platform.stack.endpoint("primary")
    for table in TABLES:
        assert bronze_rows(platform.bronze, table, day) == source_window(primary, table, day)
        metadata = metadata_of(result, table)
        assert metadata["replicator"] == "airbyte"
        assert metadata["source_role"] == "primary"
        assert metadata["airbyte_job_id"] in airbyte.jobs_started(airbyte.primary_id)
        assert metadata["airbyte_connection"] == f"connection_mysql_s3_acode ({airbyte.primary_id})"
        assert metadata["airbyte_records"] > 0 and metadata["airbyte_bytes"] > 0
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 5 * len(TABLES)
    assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
    # Landed by Airbyte, with its own columns, and still there for the next days' cuts.
    assert list((platform.bronze.root / "_airbyte_staging" / FISCAL_LINES.name).glob("*.parquet"))
    assert airbyte.client_secret not in run_text(platform, result)


def test_primary_stopped_moves_the_route_and_the_backup_connection_runs(
    killable_platform: AirbytePlatform,
) -> None:
    platform = killable_platform
    airbyte = platform.airbyte
    assert platform.tick() == [] and platform.route.source == "primary"
    assert platform.materialize(DAYS[0]).success

    platform.stack.kill("primary")
    platform.tick(2)
    assert platform.route.source == "backup"

    airbyte.clear_log()
    primary_jobs = airbyte.jobs_started(airbyte.primary_id)
    result = platform.materialize(DAYS[1])

    assert result.success, run_text(platform, result)
    started = airbyte.requests("POST", r"/public/v1/jobs$")
    assert started and {r.connection_id for r in started} == {airbyte.backup_id}
    assert airbyte.jobs_started(airbyte.primary_id) == primary_jobs
    backup = platform.stack.endpoint("backup")
    for table in TABLES:
        assert metadata_of(result, table)["source_role"] == "backup"
        assert bronze_rows(platform.bronze, table, DAYS[1]) == source_window(backup, table, DAYS[1])
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_failing_jobs_fail_the_run_with_their_reason_publish_nothing_and_fail_over(
    platform: AirbytePlatform,
) -> None:
    airbyte = platform.airbyte
    reason = "Communications link failure: the last packet sent successfully was 0 ms ago"
    airbyte.fail_next_jobs(99, reason, connection_id=airbyte.primary_id)

    result = platform.materialize(DAYS[0], FISCAL)

    assert not result.success
    failed = airbyte.jobs_started(airbyte.primary_id)
    assert len(failed) == 2, "one retry (ACODE_RETRIES=1), on the route then in force"
    text = run_text(platform, result)
    assert f"Airbyte job {failed[-1]} on connection_mysql_s3_acode (primary) ended failed" in text
    assert reason in text
    # The failed jobs landed a batch each; none of it is published.
    assert list((platform.bronze.root / "_airbyte_staging" / FISCAL_LINES.name).glob("*.parquet"))
    assert platform.bronze.manifest(FISCAL_LINES, DAYS[0]) is None
    assert platform.bronze.visible_files(FISCAL_LINES, DAYS[0]) == []

    platform.tick()
    assert platform.route.source == "primary", "one failed probe must not move the route"
    platform.tick()
    assert platform.route.source == "backup"
    assert not platform.healthy("airbyte_primary") and platform.healthy("mysql_primary")

    retried = platform.materialize(DAYS[0], FISCAL)
    assert retried.success
    assert metadata_of(retried)["airbyte_connection"].endswith(f"({airbyte.backup_id})")


def test_hanging_job_times_out_is_cancelled_and_publishes_nothing(
    platform: AirbytePlatform,
) -> None:
    airbyte = platform.airbyte
    platform.reconfigure(ACODE_AIRBYTE_TIMEOUT_S="1.5")
    airbyte.hang_jobs(True)

    result = platform.materialize(DAYS[0], FISCAL)

    assert not result.success
    [job] = airbyte.jobs_started(airbyte.primary_id)
    assert airbyte.cancellations(airbyte.primary_id) == [job]
    assert airbyte.job(job).status == "cancelled"
    assert "still running after 1.5 s (ACODE_AIRBYTE_TIMEOUT_S); cancelled it" in run_text(
        platform, result
    )
    assert platform.bronze.manifest(FISCAL_LINES, DAYS[0]) is None


def test_an_unknown_connection_is_named_with_its_setting(platform: AirbytePlatform) -> None:
    airbyte = platform.airbyte
    airbyte.remove_connection(airbyte.primary_id)

    result = platform.materialize(DAYS[0], FISCAL)

    assert not result.success
    text = run_text(platform, result)
    assert f"ACODE_AIRBYTE_PRIMARY_CONNECTION_ID={airbyte.primary_id} names no connection" in text
    assert not platform.healthy("airbyte_primary")


def test_rejected_credentials_say_so_without_the_secret(platform: AirbytePlatform) -> None:
    airbyte = platform.airbyte
    airbyte.reject_credentials(True)

    result = platform.materialize(DAYS[0], FISCAL)

    assert not result.success
    text = run_text(platform, result)
    assert "Airbyte refused the client credentials" in text
    assert "AIRBYTE_CLIENT_SECRET" in text and airbyte.client_secret not in text


def test_terminating_the_run_cancels_the_airbyte_job(
    platform: AirbytePlatform, tmp_path: Path
) -> None:
    """The run in a process of its own, interrupted the way a terminated run worker is."""
    airbyte = platform.airbyte
    airbyte.hang_jobs(True)
    dagster_home = tmp_path / "run-home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "acode_dagster.definitions",
        "--select",
        bronze_key(FISCAL_LINES).to_user_string(),
        "--partition",
        DAYS[0].isoformat(),
    ]
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        command,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: bool(airbyte.jobs_started(airbyte.primary_id)), "the job to start", 60)
        [job] = airbyte.jobs_started(airbyte.primary_id)
        assert airbyte.job(job).status == "running"
        # What a terminated run worker (or its pod) receives; Dagster maps it to an interrupt.
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: airbyte.cancellations(airbyte.primary_id) == [job], "the cancel", 30)
        process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
    assert airbyte.job(job).status == "cancelled"
    assert platform.bronze.manifest(FISCAL_LINES, DAYS[0]) is None
