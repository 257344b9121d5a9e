"""The two buckets as copies of one bronze layer: mirror, verify, compare and repair, on folders
and on two buckets of an S3 served over HTTP (server-side copies)."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.bronze.lease import Holder, LeasePolicy
from acode_dagster.bronze.mirror import (
    Copy,
    decide,
    diff,
    inspect,
    mirror,
    repair,
    verify,
)
from acode_dagster.bronze.store import (
    SUCCESS_MARKER,
    BronzeStore,
    LocalStore,
    Manifest,
    ManifestFile,
    S3Store,
    partition_prefix,
    s3_client,
)
from acode_dagster.routing import BACKUP, PRIMARY
from acode_dagster.tables import NFE_COMPLEMENTS as TABLE
from acode_dagster_tests.bronze.test_store import DAY, batch, publish
from acode_dagster_tests.test_cli_buckets import flip_a_data_byte

BATCHES = [batch(n * 1000 + 1, 1000, "a") for n in range(3)]
HOLDER = Holder.here("test", purpose="mirror test")
POLICY = LeasePolicy(ttl_s=30, wait_s=5)


def manifest(version: str = "v1", published_at: str = "2026-11-21T03:00:00+00:00") -> Manifest:
    return Manifest(
        table=TABLE.name,
        partition=f"{DAY}",
        rows=10,
        files=(ManifestFile("file_001.parquet", 10, 100, "ab" * 32),),
        source="s",
        replicator="r",
        published_at=published_at,
        version=version,
    )


# ---------------------------------------------------------------------- the pure parts


def test_verify_names_each_difference() -> None:
    m = manifest()
    assert (
        verify(
            m, {"file_001.parquet": 100}, {"file_001.parquet": 10}, {"file_001.parquet": "ab" * 32}
        )
        == []
    )
    assert verify(m, {}) == ["file_001.parquet is missing"]
    assert verify(m, {"file_001.parquet": 99}) == [
        "file_001.parquet has 99 bytes, the manifest 100"
    ]
    assert verify(m, {"file_001.parquet": 100}, {"file_001.parquet": 9}) == [
        "file_001.parquet holds 9 rows, the manifest 10"
    ]
    assert verify(m, {"file_001.parquet": 100}, digests={"file_001.parquet": "cd" * 32}) == [
        "file_001.parquet's SHA-256 differs from the manifest's"
    ]
    assert verify(m, {"file_001.parquet": 100}, extra=["file_002.parquet"]) == [
        "file_002.parquet is not in the manifest"
    ]
    # A manifest from before checksums were kept is checked on sizes and rows only.
    old = dataclasses.replace(m, files=(dataclasses.replace(m.files[0], sha256=""),))
    assert verify(old, {"file_001.parquet": 100}, digests={"file_001.parquet": "cd" * 32}) == []


STATES = ("intact_old", "intact_new", "damaged", "absent", "unreachable")


def copy_of(state: str) -> Copy:
    if state == "intact_old":
        return Copy("intact", manifest("old", "2026-11-21T03:00:00+00:00"))
    if state == "intact_new":
        return Copy("intact", manifest("new", "2026-11-22T03:00:00+00:00"))
    if state == "damaged":
        return Copy("damaged", manifest("x"), ("file_001.parquet is missing",))
    if state == "absent":
        return Copy("absent")
    return Copy("unreachable", problems=("S3 bucket 'b': 503",))


@pytest.mark.parametrize("primary", STATES)
@pytest.mark.parametrize("backup", STATES)
def test_decide_every_pair_of_states(primary: str, backup: str) -> None:
    decision = decide(copy_of(primary), copy_of(backup))
    if "unreachable" in (primary, backup):
        expected = "unknown"  # never copy over what could not be read
    elif primary == backup and primary.startswith("intact"):
        expected = "in_sync"
    elif primary.startswith("intact") and backup.startswith("intact"):
        expected = "copy_to_backup" if primary == "intact_new" else "copy_to_primary"
    elif primary.startswith("intact"):
        expected = "copy_to_backup"
    elif backup.startswith("intact"):
        expected = "copy_to_primary"
    elif primary == backup == "absent":
        expected = "missing"
    else:
        expected = "resync"
    assert decision.action == expected, decision.why


@given(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.just(UTC)),
    st.text(min_size=1, max_size=8),
    st.text(min_size=1, max_size=8),
)
def test_both_sides_agree_on_the_newer_version(
    first: datetime, second: datetime, v1: str, v2: str
) -> None:
    """Whichever bucket is called primary, the same version wins: two repairs never undo each
    other."""
    a = Copy("intact", manifest(v1, first.isoformat()))
    b = Copy("intact", manifest(v2, second.isoformat()))
    one, other = decide(a, b), decide(b, a)
    if a.manifest == b.manifest:
        assert one.action == other.action == "in_sync"
        return
    winner_one = a if one.action == "copy_to_backup" else b
    winner_other = b if other.action == "copy_to_backup" else a
    assert winner_one.manifest == winner_other.manifest


# ---------------------------------------------------------------------- real buckets


def two_stores(kind: str, tmp_path: Path) -> tuple[BronzeStore, BronzeStore]:
    if kind == "local":
        return LocalStore(tmp_path / "primary"), LocalStore(tmp_path / "backup")
    client = s3_client()
    names = [f"acode-mirror-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for name in names:
        client.create_bucket(Bucket=name)
    return S3Store(names[0], "lake"), S3Store(names[1], "lake")


@pytest.fixture(params=["local", "s3"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[BronzeStore, BronzeStore]:
    if request.param == "s3":
        request.getfixturevalue("s3_server")
    return two_stores(request.param, tmp_path)


def marker(store: BronzeStore) -> bytes:
    if isinstance(store, LocalStore):
        return (store.root / partition_prefix(TABLE, DAY) / SUCCESS_MARKER).read_bytes()
    assert isinstance(store, S3Store)
    key = store._key(partition_prefix(TABLE, DAY), SUCCESS_MARKER)
    return store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()


def file_bytes(store: BronzeStore, name: str) -> bytes:
    if isinstance(store, LocalStore):
        return (store.root / partition_prefix(TABLE, DAY) / name).read_bytes()
    assert isinstance(store, S3Store)
    key = store._key(partition_prefix(TABLE, DAY), name)
    return store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()


def overwrite(store: BronzeStore, name: str, body: bytes | None) -> None:
    """A fault from outside the platform: a file of a published partition rewritten or
    deleted."""
    if isinstance(store, LocalStore):
        path = store.root / partition_prefix(TABLE, DAY) / name
        if body is None:
            path.unlink()
        else:
            path.write_bytes(body)
        return
    assert isinstance(store, S3Store)
    key = store._key(partition_prefix(TABLE, DAY), name)
    if body is None:
        store.client.delete_object(Bucket=store.bucket, Key=key)
    else:
        store.client.put_object(Bucket=store.bucket, Key=key, Body=body)


def test_a_mirror_is_byte_identical_and_verified(
    stores: tuple[BronzeStore, BronzeStore],
) -> None:
    primary, backup = stores
    published = publish(primary, BATCHES, max_file_bytes=16 * 1024)
    assert len(published.files) > 1 and all(len(f.sha256) == 64 for f in published.files)

    copy = mirror(primary, backup, TABLE, DAY, holder=HOLDER, policy=POLICY, expected=published)
    assert copy.done, copy.detail
    assert copy.how == ("server-side" if isinstance(primary, S3Store) else "streamed")
    assert marker(backup) == marker(primary)
    for file in published.files:
        body = file_bytes(backup, file.name)
        assert len(body) == file.bytes and hashlib.sha256(body).hexdigest() == file.sha256
    assert inspect(backup, TABLE, DAY, checksums=True).state == "intact"
    assert backup.read_partition(TABLE, DAY).equals(primary.read_partition(TABLE, DAY))

    again = mirror(primary, backup, TABLE, DAY, holder=HOLDER, policy=POLICY)
    assert again.done and "already holds" in again.detail  # idempotent: nothing copied twice


def test_an_altered_or_deleted_backup_partition_is_found_and_repaired(
    stores: tuple[BronzeStore, BronzeStore],
) -> None:
    primary, backup = stores
    publish(primary, BATCHES, max_file_bytes=16 * 1024)
    assert mirror(primary, backup, TABLE, DAY, holder=HOLDER, policy=POLICY).done
    both = {PRIMARY: primary, BACKUP: backup}
    files = primary.manifest(TABLE, DAY).files  # type: ignore[union-attr]

    # One byte flipped, the size kept: only the checksums see it.
    overwrite(backup, files[0].name, flip_a_data_byte(file_bytes(backup, files[0].name)))
    assert diff(primary, backup, [TABLE], [DAY])[0].decision.action == "in_sync"
    found = diff(primary, backup, [TABLE], [DAY], checksums=True)[0]
    assert found.backup.state == "damaged" and "SHA-256" in found.backup.summary
    assert found.decision.action == "copy_to_backup"
    report = repair(both, [TABLE], [DAY], holder=HOLDER, policy=POLICY, checksums=True)
    assert [c.target_role for c in report.copied] == [BACKUP] and not report.failed
    assert inspect(backup, TABLE, DAY, checksums=True).state == "intact"

    # A file deleted: sizes alone see it.
    overwrite(backup, files[-1].name, None)
    assert diff(primary, backup, [TABLE], [DAY])[0].decision.action == "copy_to_backup"
    repair(both, [TABLE], [DAY], holder=HOLDER, policy=POLICY)
    assert inspect(backup, TABLE, DAY, checksums=True).state == "intact"

    # The whole partition deleted (marker included).
    for name in [*(f.name for f in files), SUCCESS_MARKER]:
        overwrite(backup, name, None)
    assert diff(primary, backup, [TABLE], [DAY])[0].backup.state == "absent"
    repair(both, [TABLE], [DAY], holder=HOLDER, policy=POLICY)
    assert marker(backup) == marker(primary)
    assert diff(primary, backup, [TABLE], [DAY], checksums=True)[0].decision.action == "in_sync"


def test_the_newer_version_wins_and_a_newer_target_is_left_alone(
    stores: tuple[BronzeStore, BronzeStore],
) -> None:
    primary, backup = stores
    publish(primary, [batch(1, 100, "old")], max_file_bytes=1 << 30)
    assert mirror(primary, backup, TABLE, DAY, holder=HOLDER, policy=POLICY).done
    # A sync during a bucket outage: only the backup gets the new version.
    newer = publish(backup, [batch(1, 120, "new")], max_file_bytes=1 << 30)
    assert diff(primary, backup, [TABLE], [DAY])[0].decision.action == "copy_to_primary"

    # An old mirror arriving late must not replace it.
    late = mirror(primary, backup, TABLE, DAY, holder=HOLDER, policy=POLICY)
    assert not late.done and "newer version" in late.detail
    assert backup.manifest(TABLE, DAY) == newer

    report = repair(
        {PRIMARY: primary, BACKUP: backup}, [TABLE], [DAY], holder=HOLDER, policy=POLICY
    )
    assert [c.target_role for c in report.copied] == [PRIMARY]
    assert primary.manifest(TABLE, DAY) == newer
    assert primary.read_partition(TABLE, DAY).num_rows == 120


def test_a_target_that_is_down_is_reported_not_raised(tmp_path: Path) -> None:
    primary = LocalStore(tmp_path / "primary")
    publish(primary, [batch(1, 10, "a")], max_file_bytes=1 << 30)
    gone = tmp_path / "backup"
    gone.write_text("an unmounted volume")  # the root is a file: nothing can be created in it
    copy = mirror(primary, LocalStore(gone), TABLE, DAY, holder=HOLDER, policy=POLICY)
    assert not copy.done and str(gone) in copy.detail
    # A bucket that cannot be read is not "damaged": nothing is copied over it, or from it.
    down = inspect(LocalStore(gone), TABLE, DAY)
    assert down.state == "unreachable"
    assert decide(inspect(primary, TABLE, DAY), down).action == "unknown"


def test_a_source_changed_under_the_copy_is_not_published(tmp_path: Path) -> None:
    """The copy is verified against the manifest read before it: bytes of another version
    (a sync that swapped the source meanwhile, or damage) never reach the target."""
    primary, backup = LocalStore(tmp_path / "primary"), LocalStore(tmp_path / "backup")
    published = publish(primary, [batch(1, 10, "a")], max_file_bytes=1 << 30)
    name = published.files[0].name
    overwrite(primary, name, flip_a_data_byte(file_bytes(primary, name)))
    copy = mirror(primary, backup, TABLE, DAY, holder=HOLDER, policy=POLICY)
    assert not copy.done and "did not verify" in copy.detail
    assert backup.manifest(TABLE, DAY) is None
    assert backup.visible_files(TABLE, DAY) == []


def test_days_missing_from_both_buckets_are_told_apart(tmp_path: Path) -> None:
    from acode_dagster.bronze.mirror import present_days

    primary, backup = LocalStore(tmp_path / "primary"), LocalStore(tmp_path / "backup")
    publish(backup, [batch(1, 10, "a")], max_file_bytes=1 << 30)
    other = DAY - timedelta(days=1)
    found = present_days([primary, backup], [TABLE], [other, DAY])
    assert found == {(TABLE.name, other): [], (TABLE.name, DAY): [1]}
