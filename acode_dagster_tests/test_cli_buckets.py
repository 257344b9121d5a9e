"""``acode buckets diff|repair``: the history brought to the backup bucket, a damaged copy found
and repaired, each copy recorded as the partition's ``mirror`` check in Dagster."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from acode_dagster.bronze.publish import publish_batches
from acode_dagster.bronze.store import LocalStore, partition_prefix
from acode_dagster.cli import main
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.tables import NFE_COMPLEMENTS as TABLE
from acode_dagster.tables import last_complete_days
from acode_dagster_tests.bronze.test_store import batch

DAYS = last_complete_days(3)


def flip_a_data_byte(body: bytes) -> bytes:
    """The file with one byte of its column data inverted: same size, same footer (so the same
    row counts), different bytes: what a bit flip on a disk does."""
    footer = int.from_bytes(body[-8:-4], "little")
    data_end = len(body) - 8 - footer
    changed = bytearray(body)
    changed[4 + (data_end - 4) // 2] ^= 0xFF
    return bytes(changed)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalStore, LocalStore]:
    monkeypatch.setenv("ACODE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ACODE_BRONZE_URL", str(tmp_path / "primary"))
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(tmp_path / "backup"))
    monkeypatch.setenv("ACODE_PARTITIONS_START", str(DAYS[0] - timedelta(days=30)))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    return LocalStore(tmp_path / "primary"), LocalStore(tmp_path / "backup")


def test_history_reaches_the_backup_and_a_damaged_copy_is_repaired(
    roots: tuple[LocalStore, LocalStore], capsys: pytest.CaptureFixture[str]
) -> None:
    primary, backup = roots
    # History written before mirroring existed: in the primary bucket only.
    for day in DAYS[1:]:
        publish_batches(TABLE, day, primary, [batch(1, 50, "a")], source="s", replicator="test")

    code, out, _ = run(["buckets", "diff", "--days", "3", "--table", TABLE.name], capsys)
    assert code == 1
    assert out.count("copy_to_backup") == 2 and out.count("missing") == 1
    assert "3 partition(s) compared" in out and "2 not, 1 in neither" in out

    code, out, _ = run(["buckets", "repair", "--days", "3", "--table", TABLE.name], capsys)
    assert code == 0, out
    assert "2 copied and verified, 0 failed" in out
    assert f"{TABLE.name} {DAYS[0]}: in neither bucket" in out
    code, out, _ = run(["buckets", "diff", "--days", "3", "--checksums"], capsys)
    assert code == 0 and "2 the same in both buckets, 0 not" in out

    # A file of the backup copy damaged in place (same size): only checksums see it.
    path = next((backup.root / partition_prefix(TABLE, DAYS[2])).glob("*.parquet"))
    path.write_bytes(flip_a_data_byte(path.read_bytes()))
    code, out, _ = run(["buckets", "diff", "--days", "3"], capsys)
    assert code == 0, out
    code, out, _ = run(["buckets", "diff", "--days", "3", "--checksums"], capsys)
    assert code == 1 and "SHA-256 differs" in out
    code, out, _ = run(["buckets", "repair", "--days", "1", "--checksums"], capsys)
    assert code == 0 and "1 copied and verified" in out
    assert backup.read_partition(TABLE, DAYS[2]).equals(primary.read_partition(TABLE, DAYS[2]))

    with dg.DagsterInstance.get() as instance:
        record = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(bronze_key(TABLE), "mirror"), limit=10
        )
    partitions = sorted(
        r.event.dagster_event.asset_check_evaluation_data.partition  # type: ignore[union-attr]
        for r in record
    )
    assert partitions == sorted([str(DAYS[1]), str(DAYS[2]), str(DAYS[2])])


def test_one_root_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACODE_BRONZE_URL", str(tmp_path / "one"))
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(tmp_path / "one"))
    code, _, err = run(["buckets", "diff"], capsys)
    assert code == 2 and "ACODE_BRONZE_BACKUP_URL" in err and "set" in err
