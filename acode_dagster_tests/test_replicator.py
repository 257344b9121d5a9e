"""The embedded replicator against real MariaDB servers, on a folder and on S3 over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from acode_dagster.bronze.store import BronzeStore, LocalStore, S3Store, partition_prefix
from acode_dagster.errors import BronzeError, PartitionError, SourceError
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.replicator import EmbeddedReplicator, conform
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    PRODUCTS,
    TABLES,
    Table,
    day_window,
)
from acode_dagster_tests.support.source import source_window

DAYS = [date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)]
DAY = DAYS[1]
KILL_DAY = date(2026, 11, 10)
ROWS = {FISCAL_LINES.name: 3000, NFE_COMPLEMENTS.name: 500, PRODUCTS.name: 400}


@pytest.fixture(scope="module")
def source(mariadb_pair: Any) -> Any:
    """The pair with three consecutive demo days, edge rows included, replicated to the backup."""
    from acode_dagster.demo.generator import Anomalies
    from acode_dagster.demo.loader import load_days

    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        DAYS,
        rows=ROWS,
        anomalies=Anomalies(edge_rows=True),
    )
    mariadb_pair.wait_replica_caught_up()
    return mariadb_pair


class Recorder:
    """Collects the replicator's progress lines, to look for secrets in them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def count_window(endpoint: MySQLEndpoint, table: Table) -> int:
    """The source's own count of the window (what the reconciliation check will ask)."""
    connection = endpoint.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(table.count_sql(DAY))
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def bronze_rows(store: BronzeStore, table: Table, day: date) -> list[dict[str, Any]]:
    return sorted(store.read_partition(table, day).to_pylist(), key=lambda r: r[table.key])


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_bronze_equals_the_source_window_row_for_row(
    source: Any, store: BronzeStore, table: Table
) -> None:
    endpoint = source.endpoint("primary")
    log = Recorder()
    result = EmbeddedReplicator(log=log, max_file_bytes=64 * 1024).sync(table, DAY, endpoint, store)
    expected = source_window(endpoint, table, DAY)
    assert len(expected) > 0
    assert bronze_rows(store, table, DAY) == expected
    assert result.rows == len(expected) == count_window(endpoint, table)
    assert store.read_partition(table, DAY).schema == table.arrow_schema
    assert not any(endpoint.password in line for line in log.lines)


def test_the_day_is_cut_on_its_first_and_last_microsecond(source: Any, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    EmbeddedReplicator().sync(FISCAL_LINES, DAY, source.endpoint("primary"), store)
    stamps = store.read_partition(FISCAL_LINES, DAY).column("Data_Processamento").to_pylist()
    start, end = day_window(DAY)
    assert min(stamps) == start
    assert max(stamps) == end - timedelta(microseconds=1)
    neighbours = {
        d: source_window(source.endpoint("primary"), FISCAL_LINES, d)
        for d in (DAY - timedelta(days=1), DAY + timedelta(days=1))
    }
    # The neighbours have rows touching the boundaries, and none of them leaked in.
    assert neighbours[DAY - timedelta(days=1)][-1]["Data_Processamento"] < start
    assert any(r["Data_Processamento"] == end for r in neighbours[DAY + timedelta(days=1)])
    ids = set(store.read_partition(FISCAL_LINES, DAY).column("id").to_pylist())
    assert not ids & {r["id"] for rows in neighbours.values() for r in rows}


def test_edge_values_survive_exactly(source: Any, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    EmbeddedReplicator().sync(FISCAL_LINES, DAY, source.endpoint("primary"), store)
    table = store.read_partition(FISCAL_LINES, DAY)
    values = table.column("ACODE_Val_Total").to_pylist()
    assert Decimal("9999999999999.99") in values and Decimal("-9999999999999.99") in values
    assert any(
        v and "💊" in v
        for v in table.column("Razao_Social").to_pylist()
        + table.column("Descricao_Produto").to_pylist()
    )
    assert table.column("CNPJ").null_count > 0
    assert 4294967295 in table.column("Numero_NF").to_pylist()


def test_the_replica_gives_the_same_bronze(source: Any, tmp_path: Path) -> None:
    for table in TABLES:
        from_primary, from_backup = LocalStore(tmp_path / "p"), LocalStore(tmp_path / "b")
        EmbeddedReplicator().sync(table, DAY, source.endpoint("primary"), from_primary)
        result = EmbeddedReplicator().sync(table, DAY, source.endpoint("backup"), from_backup)
        assert "acode_farmarcas_replica" in result.source
        assert bronze_rows(from_primary, table, DAY) == bronze_rows(from_backup, table, DAY)


def test_a_rerun_replaces_without_duplicates_or_stale_files(
    source: Any, store: BronzeStore
) -> None:
    endpoint = source.endpoint("primary")
    small_files = EmbeddedReplicator(batch_rows=500, row_group_rows=500, max_file_bytes=1)
    first = small_files.sync(FISCAL_LINES, DAY, endpoint, store)
    assert first.files > 3
    second = EmbeddedReplicator().sync(FISCAL_LINES, DAY, endpoint, store)
    assert second.files == 1
    names = store.visible_files(FISCAL_LINES, DAY)
    assert names == ["_SUCCESS", f"file_{FISCAL_LINES.name}_001.parquet"]
    rows = bronze_rows(store, FISCAL_LINES, DAY)
    assert len(rows) == len({r["id"] for r in rows}) == first.rows


def test_a_day_not_over_is_refused(source: Any, tmp_path: Path) -> None:
    from acode_dagster.tables import SOURCE_TIMEZONE

    today = datetime.now(SOURCE_TIMEZONE).date()
    with pytest.raises(PartitionError, match="is not over yet"):
        EmbeddedReplicator().sync(
            FISCAL_LINES, today, source.endpoint("primary"), LocalStore(tmp_path)
        )


# --- bad input: a clear error, and what already landed stays -------------------------------------


@pytest.fixture
def landed(source: Any, tmp_path: Path) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path)
    result = EmbeddedReplicator().sync(FISCAL_LINES, DAY, source.endpoint("primary"), store)
    return store, result.manifest.version


def assert_still_landed(landed: tuple[LocalStore, str]) -> None:
    store, version = landed
    manifest = store.manifest(FISCAL_LINES, DAY)
    assert manifest is not None and manifest.version == version
    assert store.read_partition(FISCAL_LINES, DAY).num_rows == manifest.rows


def test_wrong_password(source: Any, landed: tuple[LocalStore, str]) -> None:
    bad = source.endpoint("primary").with_password("not-the-password-7d1c")
    with pytest.raises(SourceError) as caught:
        EmbeddedReplicator().sync(FISCAL_LINES, DAY, bad, landed[0])
    message = str(caught.value)
    assert "refused the user or password" in message and "ACODE_PASS" in message
    assert "not-the-password-7d1c" not in message
    assert_still_landed(landed)


def test_unreachable_server(source: Any, landed: tuple[LocalStore, str]) -> None:
    from acode_dagster_tests.support.s3 import free_port

    endpoint = source.endpoint("primary")
    dead = MySQLEndpoint(
        "127.0.0.1",
        free_port(),
        endpoint.user,
        endpoint.database,
        endpoint.password,
        connect_timeout_s=2,
    )
    with pytest.raises(SourceError, match=r"unreachable.*acode stack status"):
        EmbeddedReplicator().sync(FISCAL_LINES, DAY, dead, landed[0])
    assert_still_landed(landed)


def test_missing_table(source: Any, landed: tuple[LocalStore, str]) -> None:
    admin = source.endpoint("primary", admin=True).connect()
    with admin.cursor() as cursor:
        cursor.execute("CREATE DATABASE IF NOT EXISTS acode_farmarcas_empty")
    admin.close()
    empty = replace(source.endpoint("primary"), database="acode_farmarcas_empty")
    with pytest.raises(SourceError, match=f"table {FISCAL_LINES.name} does not exist"):
        EmbeddedReplicator().sync(FISCAL_LINES, DAY, empty, landed[0])
    assert_still_landed(landed)


def test_missing_bucket(source: Any, s3_server: Any) -> None:
    with pytest.raises(BronzeError, match="does not exist"):
        EmbeddedReplicator().sync(
            FISCAL_LINES, DAY, source.endpoint("primary"), S3Store("acode-bucket-that-is-not-there")
        )


def test_a_value_the_contract_does_not_admit_names_its_column() -> None:
    schema = NFE_COMPLEMENTS.arrow_schema
    arrays = [pa.nulls(1, f.type) for f in schema]
    index = schema.get_field_index("Valor_Total_NF")
    arrays[index] = pa.array([Decimal("1.005")], pa.decimal128(38, 10))
    with pytest.raises(
        SourceError, match=r"column Valor_Total_NF: a value does not fit.*fix the row at the source"
    ):
        conform(pa.RecordBatch.from_arrays(arrays, names=schema.names), schema)


# --- a sync killed mid-write -------------------------------------------------------------------


CHILD = """
import sys
from datetime import date
from acode_dagster.bronze.store import open_store
from acode_dagster.localstack import LocalStack
from acode_dagster.replicator import EmbeddedReplicator
from acode_dagster.tables import FISCAL_LINES
stack_home, url, day = sys.argv[1:4]
EmbeddedReplicator(batch_rows=200, row_group_rows=200, max_file_bytes=1).sync(
    FISCAL_LINES, date.fromisoformat(day), LocalStack(__import__('pathlib').Path(stack_home))
    .endpoint('primary'), open_store(url))
"""


def staged_files(store: BronzeStore) -> int:
    if isinstance(store, LocalStore):
        folder = store.root / partition_prefix(FISCAL_LINES, KILL_DAY)
        return sum(len(list(p.glob("*.parquet"))) for p in folder.parent.glob(".staging-*"))
    assert isinstance(store, S3Store)
    prefix = store._key(f"{partition_prefix(FISCAL_LINES, KILL_DAY).rsplit('/', 1)[0]}/_staging/")
    return len(store._list(prefix))


def test_a_sync_killed_mid_write_leaves_the_previous_version(
    source: Any, store: BronzeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL between staging and publish: nothing partial is visible, the killed writer's
    lease expires (ACODE_LEASE_TTL_S, inherited by the child), and the next sync succeeds."""
    from acode_dagster.demo.loader import load_days

    monkeypatch.setenv("ACODE_LEASE_TTL_S", "3")

    load_days(
        source.endpoint("primary", admin=True),
        [KILL_DAY],
        rows={FISCAL_LINES.name: 40_000, NFE_COMPLEMENTS.name: 0, PRODUCTS.name: 400},
    )
    endpoint = source.endpoint("primary")
    previous = EmbeddedReplicator().sync(FISCAL_LINES, KILL_DAY, endpoint, store)
    url = store.url if isinstance(store, LocalStore) else f"s3://{store.bucket}/{store.prefix}"
    for _attempt in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(source.home), url, KILL_DAY.isoformat()],
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 60
        while child.poll() is None and staged_files(store) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
            break
    else:
        pytest.fail("the child finished every time before it could be killed mid-write")
    assert child.returncode == -signal.SIGKILL
    manifest = store.manifest(FISCAL_LINES, KILL_DAY)
    assert manifest is not None and manifest.version == previous.manifest.version
    assert len(bronze_rows(store, FISCAL_LINES, KILL_DAY)) == previous.rows
    assert [n for n in store.visible_files(FISCAL_LINES, KILL_DAY) if n.endswith(".parquet")] == [
        f.name for f in previous.manifest.files
    ]
    held = store.lease_records(FISCAL_LINES, KILL_DAY).read()
    assert held is not None, "the killed writer held the partition's lease"
    logged: list[str] = []
    again = EmbeddedReplicator(log=logged.append).sync(FISCAL_LINES, KILL_DAY, endpoint, store)
    assert any("took over the expired lease" in line for line in logged), logged
    assert again.rows == previous.rows and again.published
    assert store.lease_records(FISCAL_LINES, KILL_DAY).read() is None
    assert len(bronze_rows(store, FISCAL_LINES, KILL_DAY)) == previous.rows
