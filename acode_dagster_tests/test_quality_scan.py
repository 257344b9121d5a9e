"""The checks' footer answers agree with a full scan of the data.

Real Parquet partitions, written by the replicator's :class:`PartitionWriter` into a local bronze
store from demo rows (NULL anomalies and edge rows included), in several files of several small
row groups each, so that every sum across files and row groups is exercised. What the footers
say (rows, NULLs of every column, schemas) is compared with what a full read computes, and the
key check with a Python set. No MySQL: the source half is tested elsewhere.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acode_dagster.bronze.keys import DEFAULT_MEMORY_ROWS
from acode_dagster.bronze.publish import publish_batches
from acode_dagster.bronze.store import LocalStore, Manifest, ManifestFile
from acode_dagster.demo.generator import Anomalies, generate_rows
from acode_dagster.quality import (
    PartitionStats,
    null_share,
    partition_keys,
    schema,
    unique_key,
    volume,
)
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS, TABLES, Table

DAY = date(2026, 11, 20)
DUPLICATED_DAY = date(2026, 11, 21)
EMPTY_DAY = date(2026, 11, 22)
ROWS = 1_200
# Small enough that every partition spans files and row groups (asserted below).
ROW_GROUP_ROWS = 200
MAX_FILE_BYTES = 48 * 1024
BATCH_ROWS = 150

ANOMALIES = {
    FISCAL_LINES.name: Anomalies(null_share={"CNPJ": 0.07, "EAN": 0.02}, edge_rows=True),
    # The other tables' critical columns are NOT NULL, so NULLs go where the schema admits them.
    PRODUCTS.name: Anomalies(
        null_share={"CNPJ_Fabricante": 0.07, "Principio_Ativo": 0.3}, edge_rows=True
    ),
    NFE_COMPLEMENTS.name: Anomalies(null_share={"CNPJ_Emitente": 0.07}, edge_rows=True),
}

Row = tuple[Any, ...]


def batches(table: Table, rows: Sequence[Row], size: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        columns = list(zip(*chunk, strict=True)) if chunk else [()] * len(table.columns)
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(list(v), type=f.type)
                for v, f in zip(columns, table.arrow_schema, strict=True)
            ],
            schema=table.arrow_schema,
        )


def publish(
    store: LocalStore,
    table: Table,
    day: date,
    parts: Iterable[pa.RecordBatch],
    *,
    row_group_rows: int = ROW_GROUP_ROWS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Manifest:
    return publish_batches(
        table,
        day,
        store,
        parts,
        source="mysql://test@nowhere:3306/acode",
        replicator="test",
        row_group_rows=row_group_rows,
        max_file_bytes=max_file_bytes,
    )


@dataclass(frozen=True)
class Published:
    store: LocalStore
    rows: dict[str, list[Row]]
    """What was written per table on DAY, as generated (the scan's independent witness)."""
    duplicated: dict[str, list[Row]]
    """... and on DUPLICATED_DAY, where some keys repeat across files."""


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    store = LocalStore(tmp_path_factory.mktemp("bronze"))
    rows: dict[str, list[Row]] = {}
    duplicated: dict[str, list[Row]] = {}
    for table in TABLES:
        generated = list(generate_rows(table, DAY, ROWS, anomalies=ANOMALIES[table.name]))
        rows[table.name] = generated
        publish(store, table, DAY, batches(table, generated))
        # Every 97th row again at the end, the last one three times: repeats far apart, in
        # other files and row groups than their first occurrence.
        again = generated[::97] + [generated[-1]] * 2
        duplicated[table.name] = generated + again
        publish(store, table, DUPLICATED_DAY, batches(table, duplicated[table.name]))
        publish(store, table, EMPTY_DAY, [])
    return Published(store, rows, duplicated)


def footer_stats(store: LocalStore, table: Table, day: date) -> PartitionStats:
    return PartitionStats.from_footers(store.footers(table, day))


def scanned_nulls(data: pa.Table) -> dict[str, int]:
    """NULLs per column computed from the values, not from any recorded count."""
    return {
        name: int(pc.sum(pc.cast(pc.is_null(data.column(name)), pa.int64())).as_py() or 0)
        for name in data.column_names
    }


TABLE_IDS = [t.name for t in TABLES]


@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_the_partitions_span_files_and_row_groups(published: Published, table: Table) -> None:
    stats = footer_stats(published.store, table, DAY)
    assert stats.files >= 2
    assert stats.row_groups > stats.files
    assert stats.files == len(published.store.footers(table, DAY))


@pytest.mark.parametrize("day", [DAY, DUPLICATED_DAY, EMPTY_DAY], ids=str)
@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_footer_rows_equal_the_scan(published: Published, table: Table, day: date) -> None:
    stats = footer_stats(published.store, table, day)
    data = published.store.read_partition(table, day)
    expected = {DAY: published.rows, DUPLICATED_DAY: published.duplicated}.get(day, {})
    assert stats.rows == data.num_rows == len(expected.get(table.name, []))
    manifest = published.store.manifest(table, day)
    assert manifest is not None and manifest.rows == stats.rows


@pytest.mark.parametrize("day", [DAY, DUPLICATED_DAY, EMPTY_DAY], ids=str)
@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_footer_null_counts_equal_the_scan_for_every_column(
    published: Published, table: Table, day: date
) -> None:
    stats = footer_stats(published.store, table, day)
    data = published.store.read_partition(table, day)
    assert set(stats.null_counts) == set(table.column_names)
    assert dict(stats.null_counts) == scanned_nulls(data)


@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_null_counts_match_what_was_generated(published: Published, table: Table) -> None:
    # The generator is the third witness: it says which values it made NULL.
    generated = published.rows[table.name]
    stats = footer_stats(published.store, table, DAY)
    for position, name in enumerate(table.column_names):
        assert stats.null_counts[name] == sum(row[position] is None for row in generated), name
    # The anomaly is really there, so the comparison is not of zeros with zeros.
    for column, share in ANOMALIES[table.name].null_share.items():
        count = stats.null_counts[column]
        assert count is not None and count >= round(share * ROWS)


@pytest.mark.parametrize("day", [DAY, DUPLICATED_DAY, EMPTY_DAY], ids=str)
@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_footer_schemas_equal_the_scan_and_the_description(
    published: Published, table: Table, day: date
) -> None:
    stats = footer_stats(published.store, table, day)
    read = published.store.read_partition(table, day).schema
    assert len(stats.schemas) == stats.files
    for written in stats.schemas:
        assert written.equals(table.arrow_schema, check_metadata=False)
        assert written.equals(read, check_metadata=False)
        assert [f.nullable for f in written] == [c.nullable for c in table.columns]
    verdict = schema(table, stats.schemas, None)
    assert verdict.passed, verdict.measured


@pytest.mark.parametrize("day", [DAY, DUPLICATED_DAY, EMPTY_DAY], ids=str)
@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_null_share_from_footers_equals_null_share_from_the_scan(
    published: Published, table: Table, day: date
) -> None:
    stats = footer_stats(published.store, table, day)
    data = published.store.read_partition(table, day)
    scanned = PartitionStats(
        rows=data.num_rows, files=0, row_groups=0, null_counts=scanned_nulls(data), schemas=()
    )
    assert null_share(table, stats) == null_share(table, scanned)


def test_null_share_fails_the_fiscal_partition_with_seven_percent_null_cnpj(
    published: Published,
) -> None:
    verdict = null_share(FISCAL_LINES, footer_stats(published.store, FISCAL_LINES, DAY))
    assert verdict.outcome == "ERROR"
    assert "CNPJ" in verdict.measured
    assert verdict.metadata["nulls_CNPJ"] == sum(
        row[FISCAL_LINES.column_names.index("CNPJ")] is None
        for row in published.rows[FISCAL_LINES.name]
    )


def test_volume_reads_the_footer_row_count(published: Published) -> None:
    stats = footer_stats(published.store, FISCAL_LINES, DAY)
    empty = footer_stats(published.store, FISCAL_LINES, EMPTY_DAY)
    assert volume(FISCAL_LINES, stats.rows, [stats.rows] * 3).passed
    assert volume(FISCAL_LINES, empty.rows, [stats.rows] * 3).outcome == "ERROR"


@pytest.mark.parametrize("day", [DAY, DUPLICATED_DAY, EMPTY_DAY], ids=str)
@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_unique_key_equals_the_set_computation(
    published: Published, table: Table, day: date
) -> None:
    keys = published.store.read_partition(table, day, columns=[table.key]).column(table.key)
    values = published.store.read_partition(table, day).column(table.key).to_pylist()
    verdict = unique_key(table, keys)
    assert verdict.metadata["rows"] == len(values)
    assert verdict.metadata["duplicates"] == len(values) - len(set(values))
    assert verdict.metadata["distinct"] == len(set(values))
    assert verdict.passed == (day != DUPLICATED_DAY)
    if day == DUPLICATED_DAY:
        repeated = {v for v in values if values.count(v) > 1}
        sample = str(verdict.metadata["duplicate_sample"]).split(", ")
        assert set(sample) <= {str(v) for v in repeated}


@pytest.mark.parametrize("memory_rows", [7, DEFAULT_MEMORY_ROWS], ids=["spilled", "in-memory"])
@pytest.mark.parametrize("day", [DAY, DUPLICATED_DAY, EMPTY_DAY], ids=str)
@pytest.mark.parametrize("table", TABLES, ids=TABLE_IDS)
def test_partition_keys_read_by_row_group_give_the_whole_column_verdict(
    published: Published, table: Table, day: date, memory_rows: int
) -> None:
    files = published.store.published(table, day)
    counted = partition_keys(table, files, files.footers(), memory_rows)
    whole = published.store.read_partition(table, day, columns=[table.key]).column(table.key)
    values = whole.to_pylist()
    assert counted.rows == len(values)
    assert counted.distinct == len(set(values))
    assert unique_key(table, counted) == unique_key(table, whole)


def _write_raw(
    store: LocalStore, table: Table, day: date, files: Sequence[tuple[pa.Table, object]]
) -> None:
    """Publish files written straight with pyarrow, each with its own statistics setting."""
    with store.staging(table, day) as staging:
        listed = []
        for number, (data, statistics) in enumerate(files, start=1):
            path = staging.workdir / f"file_{table.name}_{number:03d}.parquet"
            pq.write_table(data, path, row_group_size=100, write_statistics=statistics)
            listed.append(ManifestFile(path.name, data.num_rows, path.stat().st_size))
        rows = sum(f.rows for f in listed)
        staging.publish(
            Manifest(table.name, day.isoformat(), rows, tuple(listed), "s", "t"), lambda: None
        )


@pytest.mark.parametrize("described_first", [True, False], ids=["described-first", "bare-first"])
def test_a_file_without_statistics_leaves_its_columns_unknown(
    published: Published, tmp_path: Path, described_first: bool
) -> None:
    store = LocalStore(tmp_path)
    data = published.store.read_partition(FISCAL_LINES, DAY)
    half = data.num_rows // 2
    # One file fully described, the other with statistics for the key only: the sum over the
    # partition must be unknown for every other column, never a partial count, in either order.
    files: list[tuple[pa.Table, object]] = [(data[:half], True), (data[half:], ["id"])]
    _write_raw(store, FISCAL_LINES, DAY, files if described_first else files[::-1])
    stats = footer_stats(store, FISCAL_LINES, DAY)
    assert stats.rows == data.num_rows
    assert stats.null_counts["id"] == 0
    assert {n for n, c in stats.null_counts.items() if c is None} == set(data.column_names) - {"id"}
    verdict = null_share(FISCAL_LINES, stats)
    assert verdict.outcome == "ERROR"
    assert "CNPJ" in verdict.measured and "EAN" in verdict.measured
    # The data itself is still there and correct: only the footers lack the counts.
    assert scanned_nulls(store.read_partition(FISCAL_LINES, DAY))["CNPJ"] > 0


@pytest.mark.parametrize(
    "statistics", [[True, True], [True, False], [["id"], True]], ids=["all", "one-bare", "key-only"]
)
def test_partition_keys_with_and_without_key_statistics(
    published: Published, tmp_path: Path, statistics: list[object]
) -> None:
    store = LocalStore(tmp_path)
    data = published.store.read_partition(FISCAL_LINES, DUPLICATED_DAY)
    half = data.num_rows // 2
    # The second half repeats keys of the first: overlapping row groups across the two files.
    parts = [data[:half], data[half:]]
    _write_raw(store, FISCAL_LINES, DAY, list(zip(parts, statistics, strict=True)))
    files = store.published(FISCAL_LINES, DAY)
    values = data.column("id").to_pylist()
    for memory_rows in (5, 150, DEFAULT_MEMORY_ROWS):
        counted = partition_keys(FISCAL_LINES, files, files.footers(), memory_rows)
        assert counted.duplicates == len(values) - len(set(values)) > 0
        assert unique_key(FISCAL_LINES, counted) == unique_key(FISCAL_LINES, data.column("id"))


# --------------------------------------------------------------------------- property

_BASE_ROWS = 300


@pytest.fixture(scope="module")
def base_batch() -> pa.Table:
    rows = list(
        generate_rows(NFE_COMPLEMENTS, DAY, _BASE_ROWS, anomalies=Anomalies(edge_rows=True))
    )
    return pa.Table.from_batches(list(batches(NFE_COMPLEMENTS, rows)), NFE_COMPLEMENTS.arrow_schema)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    row_group_rows=st.integers(1, 120),
    max_file_bytes=st.sampled_from([1, 8 * 1024, 10**9]),
    batch_rows=st.integers(1, 90),
)
def test_footers_equal_the_scan_for_any_nulls_and_layout(
    base_batch: pa.Table,
    data: st.DataObject,
    row_group_rows: int,
    max_file_bytes: int,
    batch_rows: int,
) -> None:
    table = NFE_COMPLEMENTS
    rows = data.draw(st.integers(0, base_batch.num_rows), label="rows")
    chosen = base_batch.slice(0, rows)
    columns = []
    for field in table.arrow_schema:
        column = chosen.column(field.name)
        if field.nullable and rows:
            mask = data.draw(
                st.lists(st.booleans(), min_size=rows, max_size=rows), label=field.name
            )
            column = pc.if_else(pa.array(mask), pa.scalar(None, field.type), column)
        columns.append(column)
    spoiled = pa.Table.from_arrays(columns, schema=table.arrow_schema)
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(Path(folder))
        publish(
            store,
            table,
            DAY,
            spoiled.to_batches(max_chunksize=batch_rows),
            row_group_rows=row_group_rows,
            max_file_bytes=max_file_bytes,
        )
        stats = footer_stats(store, table, DAY)
        back = store.read_partition(table, DAY)
    assert stats.rows == back.num_rows == rows
    assert dict(stats.null_counts) == scanned_nulls(back) == scanned_nulls(spoiled)
    assert back.equals(spoiled)
    assert schema(table, stats.schemas, None).passed
