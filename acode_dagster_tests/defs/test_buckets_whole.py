"""Both buckets whole after a bucket outage: every published partition mirrored and verified, the
days synced into the backup bucket copied to the primary after fail-back, catch-up decided from
the buckets' manifests. Real runs, the real health sensor, a real MariaDB pair, and the two
buckets as folders (the embedded default) or as two buckets of an S3 served over HTTP, with a
real fault: the primary folder replaced by a file (an unmounted volume), or the primary bucket
deleted (revoked), its objects kept aside and put back when it returns."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest

from acode_dagster.bronze.mirror import diff
from acode_dagster.bronze.store import (
    SUCCESS_MARKER,
    BronzeStore,
    LocalStore,
    S3Store,
    partition_prefix,
    s3_client,
)
from acode_dagster.defs.bronze.repair import REPAIR_JOB
from acode_dagster.defs.resources import build_resources
from acode_dagster.routing import Route
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, TABLES
from acode_dagster_tests.defs.test_redundancy import DAYS, platform  # noqa: F401  (fixture)
from acode_dagster_tests.support.platform import Platform
from acode_dagster_tests.support.source import source_window


class Outage:
    """The primary bucket made unavailable and brought back, its contents intact."""

    def __init__(self, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind = kind
        if kind == "local":
            self.root = Path(os.environ["ACODE_BRONZE_URL"])
            self.away = self.root.with_name("bronze.away")
            self.primary: BronzeStore = LocalStore(self.root)
            self.backup: BronzeStore = LocalStore(tmp_path / "bronze-backup")
            return
        self.client = s3_client()
        self.bucket, backup, self.kept = (f"acode-{n}-{uuid.uuid4().hex[:8]}" for n in "pbk")
        for bucket in (self.bucket, backup, self.kept):
            self.client.create_bucket(Bucket=bucket)
        monkeypatch.setenv("ACODE_BRONZE_URL", f"s3://{self.bucket}/lake")
        monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", f"s3://{backup}/lake")
        self.primary, self.backup = S3Store(self.bucket, "lake"), S3Store(backup, "lake")

    def begin(self) -> None:
        if self.kind == "local":
            self.root.rename(self.away)
            self.root.write_text("an unmounted volume")
            return
        self._move(self.bucket, self.kept)
        self.client.delete_bucket(Bucket=self.bucket)

    def end(self) -> None:
        if self.kind == "local":
            self.root.unlink()
            self.away.rename(self.root)
            return
        self.client.create_bucket(Bucket=self.bucket)
        self._move(self.kept, self.bucket)

    def lose(self, prefix: str) -> None:
        """A partition lost from both buckets while the primary is away."""
        if self.kind == "local":
            assert isinstance(self.backup, LocalStore)
            shutil.rmtree(self.away / prefix)
            shutil.rmtree(self.backup.root / prefix)
            return
        assert isinstance(self.backup, S3Store)
        for bucket in (self.kept, self.backup.bucket):
            for key in self._keys(bucket, f"lake/{prefix}/"):
                self.client.delete_object(Bucket=bucket, Key=key)

    def held_by_primary(self, prefix: str) -> bool:
        """Whether the primary's contents, wherever they are kept now, hold the partition."""
        if self.kind == "local":
            return (self.away / prefix).exists()
        return bool(self._keys(self.kept, f"lake/{prefix}/"))

    def _keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def _move(self, source: str, target: str) -> None:
        for key in self._keys(source):
            self.client.copy_object(
                Bucket=target, Key=key, CopySource={"Bucket": source, "Key": key}
            )
            self.client.delete_object(Bucket=source, Key=key)


def marker(store: BronzeStore, folder: str) -> bytes:
    if isinstance(store, LocalStore):
        return (store.root / folder / SUCCESS_MARKER).read_bytes()
    assert isinstance(store, S3Store)
    key = f"lake/{folder}/{SUCCESS_MARKER}"
    return store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()


def mirror_outcomes(result: object) -> dict[str, bool]:
    evaluations = result.get_asset_check_evaluations()  # type: ignore[attr-defined]
    return {e.asset_key.path[-1]: e.passed for e in evaluations if e.check_name == "mirror"}


def snapshot(primary: BronzeStore, backup: BronzeStore) -> list[str]:
    """Both buckets, one line per partition: what the note shows as before and after."""
    return [
        f"{d.table} {d.day}: primary {d.primary.summary} | backup {d.backup.summary} | "
        f"{d.decision.action}"
        for d in diff(primary, backup, TABLES, DAYS, checksums=True)
    ]


def assert_equals_source(on: Platform, store: BronzeStore) -> None:
    endpoint = on.stack.endpoint("primary")
    for day in DAYS:
        bronze = store.read_partition(FISCAL_LINES, day)
        expected = source_window(endpoint, FISCAL_LINES, day)
        assert sorted(bronze.column("id").to_pylist()) == [r["id"] for r in expected]


def tick_and_run(on: Platform, times: int = 1) -> list[tuple[dg.RunRequest, bool]]:
    """Health ticks, each followed by the runs it asked for, as the daemon launches them."""
    launched = []
    for _ in range(times):
        for request in on.tick():
            launched.append((request, on.run(request).success))
    return launched


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_days_on_the_backup_bucket_reach_the_primary_after_fail_back(
    platform: Platform,  # noqa: F811
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    first, second, third = DAYS
    if kind == "s3":
        request.getfixturevalue("s3_server")
    outage = Outage(kind, tmp_path, monkeypatch)
    platform.resources = build_resources(Settings.from_env())
    primary, backup = outage.primary, outage.backup
    platform.tick()
    landed = platform.materialize(first)
    assert landed.success
    assert mirror_outcomes(landed) == {t.name: True for t in TABLES}

    # The primary bucket goes away: the route moves, and the catch-up syncs the two missing
    # days into the backup bucket (the primary's copy cannot be read, so it is not counted).
    outage.begin()
    launched = tick_and_run(platform, 2)
    assert platform.route == Route("primary", "backup")
    synced = sorted((r.partition_key, ok) for r, ok in launched)
    assert synced == [(str(second), True), (str(third), True)]
    for day in (second, third):
        assert backup.manifest(FISCAL_LINES, day) is not None
        assert not outage.held_by_primary(partition_prefix(FISCAL_LINES, day))
    # One partition lost from both buckets meanwhile: only a re-sync can bring it back.
    outage.lose(partition_prefix(FISCAL_LINES, first))

    outage.end()
    before = snapshot(primary, backup)
    print(f"{kind}, before fail-back:", *before, sep="\n  ")
    assert sum("primary absent | backup version" in line for line in before) == 2 * len(TABLES)

    launched = tick_and_run(platform, 3)
    assert platform.route == Route("primary", "primary")
    assert all(ok for _, ok in launched), launched
    repairs = [r for r, _ in launched if r.job_name == REPAIR_JOB]
    syncs = [r for r, _ in launched if r.job_name != REPAIR_JOB]
    assert repairs, launched
    # Catch-up reads the buckets, not Dagster's materializations: the lost partition is re-synced
    # although it was materialized, and the two days only in the backup are copied, not re-read.
    assert [(r.partition_key, [k.path[-1] for k in r.asset_selection or []]) for r in syncs] == [
        (str(first), [FISCAL_LINES.name])
    ]

    after = snapshot(primary, backup)
    print(f"{kind}, after fail-back:", *after, sep="\n  ")
    assert all(line.endswith("in_sync") for line in after), after
    for day in DAYS:
        for table in TABLES:
            folder = partition_prefix(table, day)
            assert marker(primary, folder) == marker(backup, folder)
    assert_equals_source(platform, primary)
    assert_equals_source(platform, backup)
    assert tick_and_run(platform, 1) == []  # nothing is owed any more
