"""The audit trail: one record per audited action, kept where it outlives the Dagster instance.

Real parts: the ``acode`` command line, the health sensor ticked against the session's MariaDB
pair, a version that really failed its audit, and moto's S3 server over HTTP with a bucket under
Object Lock (where a record under retention cannot be deleted).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from botocore.exceptions import ClientError

from acode_dagster import audit
from acode_dagster.bronze.store import BronzeStore, LocalStore, s3_client
from acode_dagster.cli import main
from acode_dagster.defs.redundancy.sensors import HEALTH_SENSOR, acode_health_sensor
from acode_dagster.defs.redundancy.state import load_state
from acode_dagster.defs.resources import build_resources
from acode_dagster.errors import ConfigError
from acode_dagster.routing import Route
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, last_complete_days
from acode_dagster_tests.support.s3 import MotoServer
from acode_dagster_tests.test_cli_quarantine import (  # noqa: F401 - fixtures used by name
    REASON,
    Spoiled,
    abandoned,
    bronze,
    killed_writer,
    spoiled,
)

TABLE = FISCAL_LINES


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def trail(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    """What ``acode audit --json`` prints."""
    code, out, err = run(["audit", "--json", *args], capsys)
    assert code == 0, err
    records: list[dict[str, Any]] = json.loads(out)
    return records


def of(records: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [r for r in records if r["action"] == action]


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two bronze folders and a Dagster home of the test's own; no MySQL needed."""
    primary, backup = tmp_path / "bronze", tmp_path / "bronze-backup"
    for name, value in {
        "ACODE_HOME": str(tmp_path / "home"),
        "ACODE_BRONZE_URL": str(primary),
        "ACODE_BRONZE_BACKUP_URL": str(backup),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "ACODE_OPERATOR": "maria.silva",
    }.items():
        monkeypatch.setenv(name, value)
    return primary, backup


# ---------------------------------------------------------------------- the record itself


def test_a_record_names_who_what_when_and_a_key_makes_it_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = datetime(2026, 11, 30, 23, 59, 58, tzinfo=UTC)
    one = audit.build_record(
        "route.pin",
        what="source and bucket pinned to backup",
        why="primary maintenance",
        before={"source": "primary", "url": "mysql://acode:Kx9/3#?é@db:3306/acode"},
        after={"source": "backup", "day": date(2026, 11, 30)},
        key="evt-1",
        who="maria.silva",
        at=at,
        run_id="r-1",
    )
    assert (one.who, one.action, one.why, one.run_id) == (
        "maria.silva",
        "route.pin",
        "primary maintenance",
        "r-1",
    )
    assert one.when == "2026-11-30T23:59:58+00:00" and one.host
    assert one.after == {"source": "backup", "day": "2026-11-30"}
    # A connection URL slipped into a record keeps no password.
    assert "Kx9" not in one.to_json() and "mysql://acode:***@db:3306" in one.to_json()
    assert audit.AuditRecord.from_json(one.to_json()) == one

    # The same action and key, retried later the same day: the same id and object name.
    again = audit.build_record(
        "route.pin", what="x", key="evt-1", who="w", at=at + timedelta(seconds=1)
    )
    assert (again.id, again.object_name()) == (one.id, one.object_name())
    assert one.object_name() == f"2026/11/30/route.pin-{one.id}.json"
    other = audit.build_record("route.pin", what="x", key="evt-2", who="w", at=at)
    assert other.id != one.id
    # Without a key, each call is a record of its own, named by its time.
    free = [audit.build_record("sync.run", what="x", who="w", at=at) for _ in range(2)]
    assert free[0].id != free[1].id
    assert free[0].object_name().startswith("2026/11/30/20261130T235958.000000Z-sync.run-")

    # Who: ACODE_OPERATOR, else the OS user.
    monkeypatch.setenv("ACODE_OPERATOR", "joao")
    assert audit.operator(Settings.from_env()) == "joao"
    monkeypatch.delenv("ACODE_OPERATOR")
    monkeypatch.setenv("LOGNAME", "os-user")
    assert audit.operator(Settings.from_env()) == "os-user"

    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    assert audit.parse_since("7d", now) == now - timedelta(days=7)
    assert audit.parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match=r"--since 'last week'.*YYYY-MM-DD or e.g. 7d"):
        audit.parse_since("last week")
    for name, value, fix in (
        ("ACODE_AUDIT_LOCK_MODE", "strict", "COMPLIANCE"),
        ("ACODE_AUDIT_RETENTION_DAYS", "7y", "whole number"),
    ):
        with pytest.raises(ConfigError, match=f"{name}=.*{fix}"):
            Settings.from_env({name: value})


def test_a_primary_root_that_cannot_be_written_puts_the_record_in_the_backup_once(
    roots: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, backup = roots
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the primary root's parent should be")
    monkeypatch.setenv("ACODE_BRONZE_URL", str(blocker / "bronze"))
    with caplog.at_level(logging.WARNING, logger="acode_dagster.audit"):
        written = audit.record("route.pin", what="pinned to backup", key="evt-9")
    assert written is not None and written.who == "maria.silva"
    assert "written to the backup root (ACODE_BRONZE_BACKUP_URL)" in caplog.text
    (path,) = (backup / "_audit").rglob("*.json")
    assert audit.AuditRecord.from_json(path.read_bytes()) == written
    assert not path.stat().st_mode & 0o222, "a folder record is made read-only"

    # The primary is back; the caller retries: the record lands there too, and is shown once.
    monkeypatch.setenv("ACODE_BRONZE_URL", str(tmp_path / "bronze"))
    assert audit.record("route.pin", what="pinned to backup", key="evt-9") is not None
    assert len(list((tmp_path / "bronze" / "_audit").rglob("*.json"))) == 1
    stray = path.parent / "notes.json"  # something else put under the prefix is skipped
    stray.write_text("[1, 2]")
    (shown,) = trail(capsys)
    assert shown["id"] == written.id
    assert shown["roots"] == ["ACODE_BRONZE_URL", "ACODE_BRONZE_BACKUP_URL"]
    assert f"{stray} is not an audit record" in caplog.text
    code, out, _ = run(["audit"], capsys)
    assert code == 0 and out.count("route.pin") == 1 and "maria.silva" in out

    # Neither root can be written: no exception, an error naming both and why.
    monkeypatch.setenv("ACODE_BRONZE_URL", str(blocker / "a"))
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(blocker / "b"))
    caplog.clear()
    assert audit.record("route.unpin", what="unpinned") is None
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "not written anywhere" in error.getMessage()
    assert "ACODE_BRONZE_URL" in error.getMessage()
    assert "ACODE_BRONZE_BACKUP_URL" in error.getMessage()


# ---------------------------------------------------------------------- S3 and Object Lock


@pytest.fixture
def locked_buckets(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket with Object Lock as primary root, records kept a day, encrypted."""
    name = f"acode-audit-{uuid.uuid4().hex[:10]}"
    s3_client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("ACODE_BRONZE_URL", f"s3://{name}/lake")
    monkeypatch.setenv("ACODE_AUDIT_RETENTION_DAYS", "1")
    monkeypatch.setenv("ACODE_S3_SSE", "AES256")
    yield name


def test_a_record_under_object_lock_cannot_be_deleted_and_is_printed(
    roots: tuple[Path, Path],
    locked_buckets: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = locked_buckets
    written = audit.record(
        "quarantine.discard", what="fiscal lines 2026-11-30", before={"version": "v1"}
    )
    assert written is not None
    client = s3_client()
    (key,) = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert key == f"lake/_audit/{written.object_name()}"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1)
    assert head["ServerSideEncryption"] == "AES256"

    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # A plain delete only lays a delete marker over it: the trail still shows the record.
    client.delete_object(Bucket=bucket, Key=key)

    (shown,) = trail(capsys, "--since", "1d")
    assert shown["id"] == written.id and shown["before"] == {"version": "v1"}
    code, out, _ = run(["audit", "--since", f"{datetime.now(UTC):%Y-%m-%d}"], capsys)
    assert code == 0 and "quarantine.discard" in out and written.id in out
    assert trail(capsys, "--since", f"{datetime.now(UTC) + timedelta(days=2):%Y-%m-%d}") == []


def test_a_bucket_without_object_lock_is_named_with_the_fix_and_the_record_kept(
    roots: tuple[Path, Path],
    locked_buckets: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = f"acode-plain-{uuid.uuid4().hex[:10]}"
    s3_client().create_bucket(Bucket=plain)
    monkeypatch.setenv("ACODE_BRONZE_URL", f"s3://{plain}/lake")
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", f"s3://{locked_buckets}/lake")
    with caplog.at_level(logging.WARNING, logger="acode_dagster.audit"):
        written = audit.record("route.unpin", what="unpinned")
    assert written is not None
    assert f"bucket {plain!r} refused a locked record" in caplog.text
    assert (
        "ACODE_AUDIT_RETENTION_DAYS" in caplog.text
        and "put-object-lock-configuration" in caplog.text
    )
    assert "acode-test-secret" not in caplog.text
    (shown,) = trail(capsys)
    assert shown["roots"] == ["ACODE_BRONZE_BACKUP_URL"]


# ---------------------------------------------------------------------- each audited action


def test_pin_unpin_backfill_sweep_and_repair_from_the_command_line_leave_one_record_each(
    roots: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    abandoned: list[AbstractContextManager[Any]],  # noqa: F811 - the imported fixture
) -> None:
    code, _, err = run(["route", "pin", "backup", "--reason", "primary maintenance"], capsys)
    assert code == 0, err
    code, _, err = run(["route", "unpin", "--reason", "maintenance over"], capsys)
    assert code == 0, err
    code, out, _ = run(["route", "unpin"], capsys)  # nothing pinned: nothing done, no record
    assert code == 0 and "nothing to do" in out
    first, last = last_complete_days(2)
    code, out, err = run(["backfill", str(first), str(last), "--table", TABLE.name], capsys)
    assert code == 0, err

    records = trail(capsys)
    assert [r["action"] for r in records] == ["route.pin", "route.unpin", "backfill.submit"]
    pin, unpin, backfill = records
    assert {r["who"] for r in records} == {"maria.silva"}
    assert pin["why"] == "primary maintenance"
    assert (pin["before"]["source"], pin["before"]["bucket"], pin["before"]["pin"]) == (
        "primary",
        "primary",
        None,
    )
    assert (pin["after"]["source"], pin["after"]["bucket"]) == ("backup", "backup")
    assert pin["after"]["pin"]["by"] == "maria.silva"
    assert unpin["before"]["pin"] is not None and unpin["after"]["pin"] is None
    assert backfill["after"]["partitions"] == [str(first), str(last)]
    assert backfill["after"]["tables"] == [TABLE.name] and backfill["after"]["backfill_id"] in out
    assert of(trail(capsys, "--action", "route"), "route.pin") == [pin]

    # A sweep that deletes is recorded with what it deleted; a dry run or one with nothing to
    # delete is not.
    leftover = killed_writer(LocalStore(roots[0]), TABLE, first, abandoned)
    monkeypatch.setenv("ACODE_STAGING_MAX_AGE_H", "0")
    for argv in (["sweep", "--dry-run"], ["sweep"], ["sweep"]):
        code, out, err = run(argv, capsys)
        assert code == 0, out + err
    code, out, err = run(["buckets", "repair", "--days", "1"], capsys)
    assert code == 0, out + err
    records = trail(capsys)
    assert [r["action"] for r in records[3:]] == ["bronze.sweep", "buckets.repair"]
    sweep, repair = records[3:]
    assert sweep["before"] == {str(roots[0]): [leftover]}
    assert repair["run_id"] and repair["after"]["success"] is True


def test_a_route_change_emitted_by_two_ticks_is_one_record(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The primary bucket fails its probe, one failed probe moves the route: the tick commits a
    bucket failover. Its observations are never recorded (a daemon that died after the commit),
    so the next tick emits the same event again and writes its audit record again, by key."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    backup = tmp_path / "bronze-backup"
    monkeypatch.setenv("ACODE_BRONZE_URL", str(blocker / "bronze"))
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(backup))
    monkeypatch.setenv("ACODE_FAILOVER_AFTER", "1")
    monkeypatch.setenv("ACODE_PROBE_TIMEOUT_S", "2")
    resources = build_resources(Settings.from_env())
    owed: list[str] = []
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for _ in range(2):
            with dg.build_sensor_context(
                instance=instance, resources=resources, sensor_name=HEALTH_SENSOR
            ) as context:
                result = acode_health_sensor(context)
            assert isinstance(result, dg.SensorResult)
            owed.append(
                ",".join(
                    str(e.metadata["event_id"].value)
                    for e in result.asset_events or []
                    if isinstance(e, dg.AssetObservation) and "event_id" in e.metadata
                )
            )
        assert load_state(instance).route == Route("primary", "backup")
    assert owed[0] and owed[0] == owed[1], "the second tick emits the same event again"

    (record,) = trail(capsys)
    assert record["action"] == "route.failover" and record["key"] == owed[0]
    assert record["who"] == f"dagster:{HEALTH_SENSOR}" and record["sensor"] == HEALTH_SENSOR
    assert (record["before"], record["after"]) == ({"bucket": "primary"}, {"bucket": "backup"})
    assert record["roots"] == ["ACODE_BRONZE_BACKUP_URL"]  # the primary bucket is the one down


@pytest.fixture
def store(tmp_path: Path) -> BronzeStore:
    """The quarantine tests' primary root, on a folder only here (the S3 path of the audit trail
    is proven above)."""
    return LocalStore(tmp_path / "bronze")


def test_a_release_a_discard_and_a_sync_from_the_command_line_leave_one_record_each(
    spoiled: Spoiled,  # noqa: F811 - the imported fixture
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACODE_OPERATOR", "ana.lima")
    entry = spoiled.entry
    day = entry.day
    code, _, err = run(["quarantine", "release", TABLE.name, str(day), "--reason", REASON], capsys)
    assert code == 0, err
    (release,) = trail(capsys)
    assert (release["action"], release["who"], release["why"]) == (
        "quarantine.release",
        "ana.lima",
        REASON,
    )
    assert release["before"] == {"published_version": spoiled.clean.version}
    assert release["after"]["published_version"] == entry.version

    # A sync of the still spoiled day (its version fails the audit again: exit 1), then the
    # discard of that version.
    code, _, err = run(["sync", TABLE.name, str(day)], capsys)
    assert code == 1 and "failed null_share" in err
    (quarantined,) = spoiled.store.quarantined(TABLE, day)
    code, _, err = run(["quarantine", "discard", TABLE.name, str(day)], capsys)
    assert code == 0, err

    records = trail(capsys)
    assert [r["action"] for r in records] == [
        "quarantine.release",
        "sync.run",
        "quarantine.discard",
    ]
    _, sync, discard = records
    assert sync["run_id"] and sync["after"]["run_id"] == sync["run_id"]
    assert sync["after"]["success"] is False  # its version failed the audit again
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(sync["run_id"]) is not None
    assert discard["before"] == {"version": quarantined.version, "url": quarantined.url}
    assert discard["after"] is None
