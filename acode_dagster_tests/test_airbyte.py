"""The Airbyte route's decisions, without a server: settings, job health and which part of the
route a failed job counts against, the connection's destination, the partition's close."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from dagster_airbyte.translator import AirbyteJob, AirbyteJobStatusType
from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.airbyte import (
    BACKUP_BUCKET_SETTINGS,
    blamed_part,
    bucket_failover_unavailable,
    destination_mismatch,
    judge_jobs,
    lane,
    partition_closes,
    recent_failure,
)
from acode_dagster.errors import ConfigError
from acode_dagster.landing import BACKUP_STAGING_SETTING, Landing
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
BACKUP_BUCKET_ENV = {
    "ACODE_BRONZE_BACKUP_URL": "s3://farmarcas-backup-acode",
    "ACODE_AIRBYTE_BACKUP_STAGING_URL": f"s3://farmarcas-backup-acode/{STAGING_FOLDER}",
    "ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID": "primary-to-backup-bucket",
    "ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID": "backup-to-backup-bucket",
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


def test_without_the_backup_bucket_settings_airbyte_mode_runs_on_the_primary_bucket() -> None:
    airbyte = Settings.from_env(AIRBYTE_ENV).airbyte
    assert airbyte is not None and not airbyte.backup_bucket_configured
    assert airbyte.backup_staging_url == ""


def test_the_backup_bucket_settings_are_read_together() -> None:
    airbyte = Settings.from_env({**AIRBYTE_ENV, **BACKUP_BUCKET_ENV}).airbyte
    assert airbyte is not None and airbyte.backup_bucket_configured
    assert airbyte.backup_staging_url == f"s3://farmarcas-backup-acode/{STAGING_FOLDER}"
    assert airbyte.primary_to_backup_bucket_connection_id == "primary-to-backup-bucket"
    assert airbyte.backup_to_backup_bucket_connection_id == "backup-to-backup-bucket"
    # The primary bucket's staging is what it was.
    assert airbyte.staging_url == f"s3://farmarcas-production-bronze/{STAGING_FOLDER}"


HALVES = [
    given
    for size in (1, 2)
    for given in itertools.combinations(sorted(set(BACKUP_BUCKET_SETTINGS)), size)
]


@pytest.mark.parametrize("given", HALVES, ids=["+".join(g) for g in HALVES])
def test_a_half_configured_backup_bucket_names_what_is_missing(given: tuple[str, ...]) -> None:
    env = {
        **AIRBYTE_ENV,
        "ACODE_BRONZE_BACKUP_URL": BACKUP_BUCKET_ENV["ACODE_BRONZE_BACKUP_URL"],
        **{name: BACKUP_BUCKET_ENV[name] for name in given},
    }
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    missing = set(BACKUP_BUCKET_SETTINGS) - set(given)
    assert all(f"{name} (" in message for name in missing), message
    assert "missing" in message and "primary bucket only" in message
    assert "s3cr3t-value" not in message


@pytest.mark.parametrize(
    ("setting", "value", "problem"),
    [
        ("ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID", "primary-connection", "same"),
        ("ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID", "backup-connection", "same"),
        ("ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID", "primary-to-backup-bucket", "same"),
        (
            "ACODE_AIRBYTE_BACKUP_STAGING_URL",
            f"s3://farmarcas-production-bronze/{STAGING_FOLDER}/",
            "is the primary bucket's staging",
        ),
        (
            "ACODE_AIRBYTE_BACKUP_STAGING_URL",
            "s3://farmarcas-production-bronze/_backup_staging",
            "is in the primary bronze bucket",
        ),
    ],
)
def test_a_backup_bucket_that_cannot_fail_over_is_refused(
    setting: str, value: str, problem: str
) -> None:
    env = {**AIRBYTE_ENV, **BACKUP_BUCKET_ENV, setting: value}
    with pytest.raises(ConfigError, match=problem) as raised:
        Settings.from_env(env)
    assert setting in str(raised.value)


# ---------------------------------------------------------------------- routes and destinations


def test_a_lane_names_its_bucket_only_when_it_is_the_backup() -> None:
    assert lane("primary", "primary") == "primary"
    assert lane("backup", "backup") == "backup -> backup bucket"


def test_the_unavailable_failover_names_every_setting() -> None:
    message = bucket_failover_unavailable()
    assert all(name in message for name in BACKUP_BUCKET_SETTINGS)


def s3_destination(bucket: str, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "destinationType": "s3",
        "configuration": {"s3_bucket_name": bucket, "s3_bucket_path": path, **extra},
    }


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        (s3_destination("backup", "_airbyte_staging"), None),
        (s3_destination("backup", "/_airbyte_staging/"), None),
        (s3_destination("primary", "_airbyte_staging"), "s3://primary/_airbyte_staging"),
        (s3_destination("backup", "other"), "s3://backup/other"),
        ({"destinationType": "postgres", "configuration": {}}, "a postgres destination, not S3"),
        ({"destinationType": "s3", "configuration": {}}, None),
        ({}, None),
    ],
)
def test_a_destination_is_compared_with_the_staging_prefix(
    destination: dict[str, Any], expected: str | None
) -> None:
    landing = Landing("s3://backup/_airbyte_staging", BACKUP_STAGING_SETTING)
    assert destination_mismatch(destination, landing) == expected


def test_a_staging_folder_is_the_destination_path_of_an_empty_bucket(tmp_path: Any) -> None:
    folder = tmp_path / "staging"
    landing = Landing(str(folder))
    assert destination_mismatch(s3_destination("", str(folder)), landing) is None
    assert destination_mismatch(s3_destination("", str(tmp_path / "x")), landing) is not None


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


ORIGINS = [None, "source", "destination", "replication", "airbyte_platform", "unknown"]


@pytest.mark.parametrize("origin", ORIGINS)
def test_only_a_destination_failure_counts_against_the_bucket(origin: str | None) -> None:
    assert blamed_part(origin) == ("bucket" if origin == "destination" else "source")


@given(
    st.lists(st.sampled_from(STATUSES), max_size=8),
    st.sampled_from(ORIGINS),
    st.integers(0, 7200),
)
def test_a_failed_job_counts_against_exactly_one_part(
    statuses: list[str], origin: str | None, age_s: int
) -> None:
    """What the source probe and the staging probe conclude from one connection's jobs: both
    healthy, or exactly one of them unhealthy, never both (so one broken bucket never fails the
    source over, nor the other way round)."""
    ended = NOW - timedelta(seconds=age_s)
    jobs = [job(n, status, ended) for n, status in enumerate(statuses)]
    failed, _ = recent_failure(jobs, NOW, WINDOW)
    blamed = None if failed is None else blamed_part(origin)
    source_healthy, bucket_healthy = blamed != "source", blamed != "bucket"
    assert source_healthy or bucket_healthy
    assert (source_healthy and bucket_healthy) == judge_jobs(jobs, NOW, WINDOW)[0]


# ---------------------------------------------------------------------- partition close


def test_a_partition_closes_at_local_midnight() -> None:
    # São Paulo is UTC-3 all year since 2019.
    assert partition_closes(date(2026, 11, 20)) == datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
