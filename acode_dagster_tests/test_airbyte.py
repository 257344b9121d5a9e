"""The Airbyte route's decisions, without a server: settings, job health, the partition's close."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from dagster_airbyte.translator import AirbyteJob, AirbyteJobStatusType
from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.airbyte import judge_jobs, partition_closes
from acode_dagster.errors import ConfigError
from acode_dagster.settings import STAGING_FOLDER, Settings

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
WINDOW = timedelta(hours=1)
STATUSES = [s.value for s in AirbyteJobStatusType]

AIRBYTE_ENV = {
    "ACODE_REPLICATOR": "airbyte",
    "ACODE_BRONZE_URL": "s3://farmarcas-production-bronze",
    "AIRBYTE_REST_API_BASE_URL": "http://airbyte:8000/api/public/v1",
    "AIRBYTE_CONFIGURATION_API_BASE_URL": "http://airbyte:8000/api/v1",
    "AIRBYTE_WORKSPACE_ID": "9b1f0c0e",
    "AIRBYTE_CLIENT_ID": "client",
    "AIRBYTE_CLIENT_SECRET": "s3cr3t-value",
    "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID": "primary-connection",
    "ACODE_AIRBYTE_BACKUP_CONNECTION_ID": "backup-connection",
}


def job(job_id: int, status: str, ended: datetime = NOW) -> AirbyteJob:
    return AirbyteJob(
        id=job_id, status=status, type="sync", start_time=ended, last_updated_at=ended
    )


# ---------------------------------------------------------------------- settings


def test_airbyte_settings_are_read_and_the_staging_prefix_defaults_into_the_bronze_bucket() -> None:
    airbyte = Settings.from_env(AIRBYTE_ENV).airbyte
    assert airbyte is not None
    assert airbyte.staging_url == f"s3://farmarcas-production-bronze/{STAGING_FOLDER}"
    assert airbyte.credentials_set
    assert airbyte.primary_connection_id == "primary-connection"
    assert "s3cr3t-value" not in repr(airbyte)


@pytest.mark.parametrize(
    "missing",
    [
        "AIRBYTE_REST_API_BASE_URL",
        "AIRBYTE_CONFIGURATION_API_BASE_URL",
        "AIRBYTE_WORKSPACE_ID",
        "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID",
        "ACODE_AIRBYTE_BACKUP_CONNECTION_ID",
        "AIRBYTE_CLIENT_SECRET",
    ],
)
def test_a_missing_airbyte_variable_is_named_at_start_up(missing: str) -> None:
    env = {k: v for k, v in AIRBYTE_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=missing) as raised:
        Settings.from_env(env)
    assert "s3cr3t-value" not in str(raised.value)


def test_embedded_mode_needs_no_airbyte_variable() -> None:
    assert Settings.from_env({"ACODE_REPLICATOR": "embedded"}).airbyte is None


def test_one_connection_for_both_sides_is_refused() -> None:
    env = {**AIRBYTE_ENV, "ACODE_AIRBYTE_BACKUP_CONNECTION_ID": "primary-connection"}
    with pytest.raises(ConfigError, match="the same connection"):
        Settings.from_env(env)


def test_an_airbyte_url_that_is_not_http_is_named() -> None:
    env = {**AIRBYTE_ENV, "AIRBYTE_REST_API_BASE_URL": "airbyte:8000"}
    with pytest.raises(ConfigError, match="AIRBYTE_REST_API_BASE_URL"):
        Settings.from_env(env)


# ---------------------------------------------------------------------- job health


def test_no_job_yet_is_healthy() -> None:
    assert judge_jobs([], NOW, WINDOW)[0]


def test_a_recent_failure_is_unhealthy_and_a_later_success_heals() -> None:
    assert not judge_jobs([job(1, "failed")], NOW, WINDOW)[0]
    assert judge_jobs([job(1, "failed"), job(2, "succeeded")], NOW, WINDOW)[0]
    assert not judge_jobs([job(1, "succeeded"), job(2, "error")], NOW, WINDOW)[0]


def test_a_failure_older_than_the_window_stops_counting() -> None:
    old = NOW - WINDOW - timedelta(seconds=1)
    assert judge_jobs([job(1, "failed", old)], NOW, WINDOW)[0]
    assert not judge_jobs([job(1, "failed", NOW - WINDOW)], NOW, WINDOW)[0]


def test_running_and_cancelled_jobs_are_looked_past() -> None:
    jobs = [job(1, "failed"), job(2, "cancelled"), job(3, "running")]
    healthy, why = judge_jobs(jobs, NOW, WINDOW)
    assert not healthy and "job 1" in why


@given(st.lists(st.sampled_from(STATUSES), max_size=8))
def test_health_is_decided_by_the_newest_finished_job(statuses: list[str]) -> None:
    jobs = [job(n, status) for n, status in enumerate(statuses)]
    finished = [s for s in statuses if s in ("succeeded", "failed", "error")]
    expected = not finished or finished[-1] == "succeeded"
    # The order the API lists them in does not matter: ids do.
    assert judge_jobs(list(reversed(jobs)), NOW, WINDOW)[0] == expected


# ---------------------------------------------------------------------- partition close


def test_a_partition_closes_at_local_midnight() -> None:
    # São Paulo is UTC-3 all year since 2019.
    assert partition_closes(date(2026, 11, 20)) == datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
