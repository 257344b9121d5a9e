"""``ACODE_REPLICATOR=airbyte`` end to end: real runs trigger the routed connection through the
real dagster-airbyte client against the loopback Airbyte server, which reads the real MariaDB
pair and lands Parquet; the platform publishes the partitions from what landed.

Faults are real: a primary server killed, jobs that fail or hang, a run process interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster import failover
from acode_dagster.airbyte import BACKUP_BUCKET_SETTINGS
from acode_dagster.bronze.store import BronzeStore, LocalStore, open_store, s3_client
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.redundancy.state import load_state, save_state
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.loader import load_days
from acode_dagster.landing import Landing
from acode_dagster.localstack import LocalStack
from acode_dagster.probes import ProbeResult
from acode_dagster.routing import BACKUP, PRIMARY, Role
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, TABLES, Table, last_complete_days
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
    """The primary root as a folder (not used on buckets)."""
    stores: dict[Role, BronzeStore]

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
    *,
    buckets: tuple[str, str] | None = None,
    backup_bucket: bool = False,
    configured_backup_staging: str | None = None,
) -> Iterator[AirbytePlatform]:
    """The platform in airbyte mode on folders, or on the S3 ``buckets`` (primary, backup).
    ``backup_bucket``: with the connections of bucket failover, landing into the backup root's
    ``_airbyte_staging``; ``configured_backup_staging``: ACODE_AIRBYTE_BACKUP_STAGING_URL when it
    is not where they land."""
    bronze = tmp_path / "bronze"
    roots = (
        (str(bronze), str(tmp_path / "bronze-backup"))
        if buckets is None
        else (f"s3://{buckets[0]}", f"s3://{buckets[1]}")
    )
    primary, backup = stack.endpoint("primary"), stack.endpoint("backup")
    airbyte = LoopbackAirbyte.for_pair(
        primary,
        backup,
        f"{roots[0]}/_airbyte_staging",
        f"{roots[1]}/_airbyte_staging" if backup_bucket else None,
    )
    for name in BACKUP_BUCKET_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    settings = {
        **platform_environ(stack, tmp_path / "home", bronze),
        "ACODE_REPLICATOR": "airbyte",
        "ACODE_BRONZE_URL": roots[0],
        "ACODE_BRONZE_BACKUP_URL": roots[1],
        "ACODE_PROBE_TIMEOUT_S": "2",
        "ACODE_FAILOVER_AFTER": "2",
        "ACODE_FAILBACK_DWELL_S": "0",
        "ACODE_CATCHUP_DAYS": "0",
        "ACODE_AIRBYTE_POLL_S": "0.1",
        "ACODE_AIRBYTE_TIMEOUT_S": "60",
    }
    with airbyte:
        environ = {**settings, **airbyte.environ()}
        if configured_backup_staging is not None:
            environ["ACODE_AIRBYTE_BACKUP_STAGING_URL"] = configured_backup_staging
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        dagster_home = tmp_path / "dagster"
        dagster_home.mkdir()
        with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
            platform = AirbytePlatform(stack, instance, slack, pagerduty)
            platform.airbyte, platform.bronze = airbyte, LocalStore(bronze)
            platform.stores = {PRIMARY: open_store(roots[0]), BACKUP: open_store(roots[1])}
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


def bronze_rows(store: BronzeStore, table: Table, day: Any) -> list[dict[str, Any]]:
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
    assert len(checks) == 6 * len(TABLES)  # five partition checks and the mirror
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


# ---------------------------------------------------------------------- bucket failover


def airbyte_probes(platform: Platform) -> dict[str, ProbeResult]:
    """The probes the health sensor adds in airbyte mode (``ReplicatorResource.probe``)."""
    with dg.build_resources(platform.resources) as ready:
        return dict(ready.replicator.probe(ready.redundancy.probe_settings()))


def pin_bucket(platform: Platform, role: Role) -> None:
    """Pin the bucket part of the route, as `acode route pin` does."""
    pin = failover.Pin(role=role, reason="test", by="test", at=datetime.now(UTC), parts=("bucket",))
    state, _ = failover.pin(load_state(platform.instance), pin)
    save_state(platform.instance, state)


def remove_bucket(bucket: str) -> None:
    """The bucket gone, as a deleted (or wrongly renamed) bucket is: every request on it fails."""
    client = s3_client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    for key in keys:
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def two_buckets(s3_server: Any) -> tuple[str, str]:
    """A primary and a backup bronze bucket on moto's S3 server."""
    suffix = uuid.uuid4().hex[:8]
    buckets = (f"acode-bronze-{suffix}", f"acode-backup-{suffix}")
    for bucket in buckets:
        s3_client().create_bucket(Bucket=bucket)
    return buckets


@pytest.fixture
def s3_platform(
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    two_buckets: tuple[str, str],
    request: pytest.FixtureRequest,
) -> Iterator[AirbytePlatform]:
    """Both bronze roots on buckets, each with its own Airbyte staging and the connections
    landing there."""
    yield from make_platform(
        stack,
        tmp_path,
        monkeypatch,
        request.getfixturevalue("slack_server"),
        request.getfixturevalue("pagerduty_server"),
        buckets=two_buckets,
        backup_bucket=True,
    )


def test_primary_bucket_gone_the_backup_bucket_connection_lands_and_publishes_there(
    s3_platform: AirbytePlatform,
) -> None:
    platform, airbyte = s3_platform, s3_platform.airbyte
    primary_bucket = platform.stores[PRIMARY].url.removeprefix("s3://")
    backup_staging = f"{platform.stores[BACKUP].url}/_airbyte_staging"
    before = airbyte_probes(platform)
    assert all(r.healthy for r in before.values()), before
    assert set(before) == {"airbyte_primary", "airbyte_backup", "staging_primary", "staging_backup"}

    remove_bucket(primary_bucket)

    probes = airbyte_probes(platform)
    down = probes["staging_primary"]
    assert not down.healthy
    assert f"s3://{primary_bucket}/_airbyte_staging/_probe/ (ACODE_AIRBYTE_STAGING_URL)" in (
        down.reason
    )
    assert "NoSuchBucket" in down.reason, down.reason
    assert probes["staging_backup"].healthy, probes["staging_backup"]
    # Nothing is wrong with the servers: the source part must not move.
    assert probes["airbyte_primary"].healthy and probes["airbyte_backup"].healthy
    platform.tick(2)
    assert platform.route.bucket == BACKUP and platform.route.source == PRIMARY

    result = platform.materialize(DAYS[0], FISCAL)

    assert result.success, run_text(platform, result)
    started = airbyte.requests("POST", r"/public/v1/jobs$")
    assert started and {r.connection_id for r in started} == {airbyte.primary_to_backup_bucket_id}
    assert Landing(backup_staging).files(FISCAL_LINES), "landed in the backup bucket's staging"
    metadata = metadata_of(result)
    assert metadata["bucket_role"] == "backup" and metadata["source_role"] == "primary"
    assert metadata["airbyte_staging"] == backup_staging
    assert metadata["airbyte_connection"] == (
        f"connection_mysql_s3_acode_to_backup_bucket ({airbyte.primary_to_backup_bucket_id})"
    )
    primary = platform.stack.endpoint("primary")
    assert bronze_rows(platform.stores[BACKUP], FISCAL_LINES, DAYS[0]) == source_window(
        primary, FISCAL_LINES, DAYS[0]
    )
    partition_checks = [c for c in result.get_asset_check_evaluations() if c.check_name != "mirror"]
    assert partition_checks and all(c.passed for c in partition_checks)


def test_without_backup_bucket_connections_a_backup_bucket_sync_names_the_settings(
    platform: AirbytePlatform,
) -> None:
    airbyte = platform.airbyte
    probes = airbyte_probes(platform)
    assert probes["staging_primary"].healthy, probes["staging_primary"]
    assert not probes["staging_backup"].healthy
    assert "bucket failover is not available in airbyte mode" in probes["staging_backup"].reason
    pin_bucket(platform, BACKUP)

    result = platform.materialize(DAYS[0], FISCAL)

    assert not result.success
    text = run_text(platform, result)
    assert all(name in text for name in BACKUP_BUCKET_SETTINGS), text
    assert airbyte.jobs_started() == [], "no connection was triggered"
    assert platform.stores[BACKUP].manifest(FISCAL_LINES, DAYS[0]) is None


def test_a_backup_bucket_connection_landing_elsewhere_is_refused_before_it_runs(
    stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> None:
    configured = str(tmp_path / "bronze-backup" / "_other_staging")
    with contextmanager(make_platform)(
        stack,
        tmp_path,
        monkeypatch,
        slack_server,
        pagerduty_server,
        backup_bucket=True,
        configured_backup_staging=configured,
    ) as platform:
        airbyte = platform.airbyte
        probe = airbyte_probes(platform)["staging_backup"]
        assert not probe.healthy
        assert "lands into" in probe.reason and configured in probe.reason, probe.reason
        pin_bucket(platform, BACKUP)

        result = platform.materialize(DAYS[0], FISCAL)

        assert not result.success
        text = run_text(platform, result)
        assert "ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID) lands into" in text
        assert "ACODE_AIRBYTE_BACKUP_STAGING_URL" in text
        assert airbyte.jobs_started() == [], "no connection was triggered"


def test_a_job_failure_counts_against_the_staging_or_the_server_by_its_origin(
    platform: AirbytePlatform,
) -> None:
    airbyte = platform.airbyte

    def failing_job(reason: str, origin: str) -> None:
        airbyte.fail_next_jobs(1, reason, connection_id=airbyte.primary_id, origin=origin)
        with dg.build_resources(platform.resources) as ready:
            job = ready.replicator.airbyte.connections().start(PRIMARY)
        assert job is not None
        assert airbyte.wait_for_job(job.id).status == "failed"

    failing_job("Access Denied writing to the destination bucket (injected)", "destination")
    probes = airbyte_probes(platform)
    assert probes["airbyte_primary"].healthy, probes["airbyte_primary"]
    assert "counted against staging_primary" in (probes["airbyte_primary"].warning or "")
    assert not probes["staging_primary"].healthy
    assert "Access Denied writing to the destination bucket" in probes["staging_primary"].reason

    failing_job("Communications link failure (injected)", "source")
    probes = airbyte_probes(platform)
    assert not probes["airbyte_primary"].healthy
    assert "Communications link failure" in probes["airbyte_primary"].reason
    assert probes["staging_primary"].healthy, probes["staging_primary"]
