"""What an Airbyte connection lands, cut back into partition D: exact values, one row per key.

No server here: the landed files are written with the same conversion the loopback Airbyte
server uses, so these tests pin the conversion itself (every value of the contract's types,
edge rows included, comes back unchanged) and the cut (the day's rows, each once, whatever
number of syncs and connections landed them).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acode_dagster.bronze.keys import DEFAULT_MEMORY_ROWS
from acode_dagster.bronze.store import s3_client
from acode_dagster.demo.generator import edge_rows, generate_rows
from acode_dagster.errors import BronzeError, SourceError
from acode_dagster.landing import (
    AIRBYTE_COLUMNS,
    BACKUP_STAGING_SETTING,
    Landing,
    LandingStats,
    from_landed,
    landed_file_name,
    landed_schema,
    landed_type,
    to_landed,
)
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    PRODUCTS,
    TABLES,
    Column,
    Table,
    day_window,
)
from acode_dagster_tests.support.memory import peak_allocated

DAY = date(2026, 11, 20)
SYNCED_AT = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)


def bronze_batch(table: Table, day: date, rows: int = 300) -> pa.RecordBatch:
    """Demo rows of ``day`` plus the rows on the schema's limits, in the bronze schema."""
    data = [*generate_rows(table, day, rows), *edge_rows(table, day)]
    return pa.RecordBatch.from_pylist(
        [dict(zip(table.column_names, row, strict=True)) for row in data],
        schema=table.arrow_schema,
    )


def land(landing: Landing, table: Table, batch: pa.RecordBatch, at: datetime, part: int) -> None:
    # Small row groups, so the cut skips some by their statistics and filters inside others.
    landed = to_landed(batch, table, at, sync_id=part)
    landing.write(table, landed, landed_file_name(at, part), row_group_rows=64)


def day_rows(landing: Landing, table: Table, day: date) -> tuple[pa.Table, LandingStats]:
    stats: list[LandingStats] = []
    batches = list(landing.day_batches(table, day, 128, stats))
    return pa.Table.from_batches(batches, schema=table.arrow_schema), stats[0]


def sorted_rows(data: pa.Table | pa.RecordBatch, key: str) -> list[dict[str, object]]:
    return sorted(data.to_pylist(), key=lambda row: str(row[key]))


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_landed_files_have_airbyte_columns_and_types_and_convert_back_exactly(
    table: Table,
) -> None:
    batch = bronze_batch(table, DAY)
    landed = to_landed(batch, table, SYNCED_AT, sync_id=7)
    assert landed.schema == landed_schema(table)
    assert landed.schema.names[: len(AIRBYTE_COLUMNS)] == list(AIRBYTE_COLUMNS)
    assert len(set(landed.column("_airbyte_raw_id").to_pylist())) == batch.num_rows
    back = from_landed(landed.to_batches()[0], table)
    assert back.schema == table.arrow_schema
    assert back.to_pylist() == batch.to_pylist()


@given(
    st.decimals(
        min_value=Decimal("-9999999999999.99"),
        max_value=Decimal("9999999999999.99"),
        places=2,
        allow_nan=False,
    ),
    st.decimals(
        min_value=Decimal("-99999999999.9999"),
        max_value=Decimal("99999999999.9999"),
        places=4,
        allow_nan=False,
    ),
)
def test_decimals_survive_airbyte_doubles(cents: Decimal, fourths: Decimal) -> None:
    # DECIMAL(15, s) travels as a double; 15 significant digits always come back exactly.
    for value, scale in ((cents, 2), (fourths, 4)):
        as_double = pa.array([float(value)], pa.float64())
        assert as_double.cast(pa.decimal128(15, scale))[0].as_py() == value


@pytest.mark.parametrize("table", [FISCAL_LINES, NFE_COMPLEMENTS], ids=lambda t: t.name)
def test_day_cut_keeps_each_row_of_the_day_once(table: Table, tmp_path: Path) -> None:
    landing = Landing(str(tmp_path / "staging"))
    day = bronze_batch(table, DAY)
    before = bronze_batch(table, DAY - timedelta(days=1), 150)
    after = bronze_batch(table, DAY + timedelta(days=1), 150)
    half = day.num_rows // 2
    # Sync 1 during the day lands its first half; sync 2 (inclusive cursor) lands the last row
    # of that half again with the rest and the next day's start; the backup connection, with a
    # cursor of its own, lands the whole day once more after a failover.
    land(landing, table, pa.concat_batches([before, day.slice(0, half)]), SYNCED_AT, 0)
    land(landing, table, pa.concat_batches([day.slice(half - 1), after]), SYNCED_AT, 1)
    land(landing, table, day, SYNCED_AT + timedelta(hours=1), 0)

    cut, stats = day_rows(landing, table, DAY)

    assert sorted_rows(cut, table.key) == sorted_rows(day, table.key)
    assert stats == LandingStats(
        files=3, landed_rows=2 * day.num_rows + 1, duplicates=day.num_rows + 1
    )


def test_snapshot_takes_every_landed_row(tmp_path: Path) -> None:
    landing = Landing(str(tmp_path / "staging"))
    catalogue = bronze_batch(PRODUCTS, DAY)
    land(landing, PRODUCTS, catalogue, SYNCED_AT, 0)
    cut, _ = day_rows(landing, PRODUCTS, DAY)
    assert sorted_rows(cut, PRODUCTS.key) == sorted_rows(catalogue, PRODUCTS.key)


def test_nothing_landed_is_an_empty_day(tmp_path: Path) -> None:
    cut, stats = day_rows(Landing(str(tmp_path / "never-written")), NFE_COMPLEMENTS, DAY)
    assert cut.num_rows == 0 and stats.files == 0


def test_a_column_the_connection_does_not_select_is_named(tmp_path: Path) -> None:
    landed = to_landed(bronze_batch(FISCAL_LINES, DAY, 10), FISCAL_LINES, SYNCED_AT, 1)
    dropped = landed.drop_columns(["CNPJ"])
    with pytest.raises(SourceError, match=r"lack column\(s\) CNPJ: select them"):
        from_landed(dropped.to_batches()[0], FISCAL_LINES)


def test_a_landed_value_outside_the_contract_names_its_column() -> None:
    landed = to_landed(bronze_batch(FISCAL_LINES, DAY, 10), FISCAL_LINES, SYNCED_AT, 1)
    column = next(c.name for c in FISCAL_LINES.columns if c.mysql_type.startswith("SMALLINT"))
    index = landed.schema.get_field_index(column)
    broken = landed.set_column(index, column, pa.array([-1] * landed.num_rows, pa.int64()))
    with pytest.raises(
        SourceError, match=f"column {column}: .* landed files of {FISCAL_LINES.name}"
    ):
        from_landed(broken.to_batches()[0], FISCAL_LINES)


# --------------------------------------------------------------------------- bounded cut

PROBE = Table(
    name="keys_probe",
    description="a fact table of three columns, for cuts of any shape",
    columns=(
        Column("id", "BIGINT UNSIGNED", False),
        Column("Data_Processamento", "DATETIME(6)", False),
        Column("Valor", "INT", True),
    ),
    key="id",
    partition_column="Data_Processamento",
    critical_columns=(),
    expected_daily_rows=0,
    demo_daily_rows=0,
)
PROBE_SNAPSHOT = Table(
    name="keys_probe_snapshot",
    description="a catalogue keyed by text, taken whole",
    columns=(Column("EAN", "VARCHAR(14)", False), Column("Valor", "INT", True)),
    key="EAN",
    partition_column=None,
    critical_columns=(),
    expected_daily_rows=0,
    demo_daily_rows=0,
)
START, END = day_window(DAY)
MICROSECOND = timedelta(microseconds=1)
STAMPS = st.one_of(
    # The window's edges: its first and last microsecond, and the next day's first.
    st.sampled_from(
        [START, END - timedelta(microseconds=1), START - timedelta(microseconds=1), END]
    ),
    st.datetimes(min_value=START - timedelta(hours=3), max_value=END + timedelta(hours=3)),
)


def probe_rows(table: Table) -> st.SearchStrategy[dict[str, object]]:
    keys = (
        st.integers(0, 25) | st.just(2**64 - 1)
        if table is PROBE
        else st.sampled_from(["789", "0789", "7891000", "1"])
    )
    fields: dict[str, st.SearchStrategy[object]] = {
        table.key: keys,
        "Valor": st.integers(-(2**31), 2**31 - 1) | st.none(),
    }
    if table.partition_column:
        fields[table.partition_column] = STAMPS
    return st.fixed_dictionaries(fields)


@st.composite
def landings(draw: st.DrawFn) -> tuple[Table, list[tuple[list[dict[str, object]], int]]]:
    """Landed files in landing order, each ``(rows, row_group_rows)``: syncs drawn at random, and
    a day landed again whole (the backup connection after a failover) one or two more times."""
    table = draw(st.sampled_from([PROBE, PROBE_SNAPSHOT]))
    files = draw(st.lists(st.lists(probe_rows(table), max_size=30), min_size=1, max_size=3))
    for _ in range(draw(st.integers(0, 2))):
        files.append(draw(st.permutations([row for rows in files for row in rows])))
    return table, [(rows, draw(st.integers(1, 6))) for rows in files]


def in_day(table: Table, row: dict[str, object]) -> bool:
    stamp = row[table.partition_column] if table.partition_column else None
    return not isinstance(stamp, datetime) or START <= stamp < END


def expected_cut(table: Table, files: list[list[dict[str, object]]]) -> list[dict[str, object]]:
    """The reference: the day's rows in landed order, the first of each key."""
    kept: dict[object, dict[str, object]] = {}
    for rows in files:
        for row in rows:
            if in_day(table, row):
                kept.setdefault(row[table.key], row)
    return [{name: row[name] for name in table.column_names} for row in kept.values()]


def land_rows(
    landing: Landing,
    table: Table,
    rows: list[dict[str, object]],
    number: int,
    row_group_rows: int,
) -> None:
    schema = pa.schema([pa.field(f.name, landed_type(f.type)) for f in table.arrow_schema])
    landed = pa.Table.from_pylist(
        [{**row, table.key: str(row[table.key])} for row in rows], schema=schema
    )
    at = SYNCED_AT + timedelta(minutes=number)
    landing.write(table, landed, landed_file_name(at, number), row_group_rows=row_group_rows)


@settings(max_examples=150, deadline=None)
@given(landings(), st.sampled_from([1, 2, 3, 7, DEFAULT_MEMORY_ROWS]), st.integers(1, 9))
def test_day_cut_keeps_the_first_landed_row_of_each_key(
    case: tuple[Table, list[tuple[list[dict[str, object]], int]]],
    memory_rows: int,
    batch_rows: int,
) -> None:
    table, files = case
    with tempfile.TemporaryDirectory() as folder:
        landing = Landing(folder)
        for number, (rows, group_rows) in enumerate(files):
            land_rows(landing, table, rows, number, group_rows)
        cut = landing.cut(table, DAY, memory_rows=memory_rows)
        got = [row for batch in cut.batches(batch_rows) for row in batch.to_pylist()]
        cut.close()
    expected = expected_cut(table, [rows for rows, _ in files])
    assert got == expected
    day = [row for rows, _ in files for row in rows if in_day(table, row)]
    assert cut.stats == LandingStats(
        files=len(files), landed_rows=len(day), duplicates=len(day) - len(expected)
    )
    assert cut.rows == len(expected)


def test_each_landed_footer_is_read_once_per_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = Landing(str(tmp_path / "staging"))
    for part in range(3):
        land(landing, FISCAL_LINES, bronze_batch(FISCAL_LINES, DAY, 100), SYNCED_AT, part)
    reads: list[object] = []
    opened: list[object] = []
    read_metadata, parquet_file = pq.read_metadata, pq.ParquetFile

    def counted_read(*args: Any, **kwargs: Any) -> pq.FileMetaData:
        reads.append(args[0])
        return read_metadata(*args, **kwargs)

    def given_footer(*args: Any, **kwargs: Any) -> pq.ParquetFile:
        opened.append(kwargs.get("metadata"))
        return parquet_file(*args, **kwargs)

    monkeypatch.setattr(pq, "read_metadata", counted_read)
    monkeypatch.setattr(pq, "ParquetFile", given_footer)
    cut = landing.cut(FISCAL_LINES, DAY)
    assert sum(batch.num_rows for batch in cut.batches(64)) == cut.rows
    assert len(reads) == 3
    # Both passes open each file again, each time with the footer read at the cut.
    assert len(opened) == 6 and all(footer is not None for footer in opened)


def land_shuffled(folder: Path, rows: int) -> None:
    """``rows`` rows of the day in random key order, landed twice (a sync, then the backup
    connection again after a failover). Row groups of 16,384 rows keep the reader's own share of
    the memory small beside the keys'."""
    landing = Landing(str(folder))
    start_us = int((START - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    for number in range(2):
        ids = pc.sort_indices(pc.random(rows, initializer=number))
        offsets = pc.floor(pc.multiply(pc.random(rows, initializer=10 + number), 86_399e6))
        stamps = pc.add(pc.cast(offsets, pa.int64()), start_us).view(pa.timestamp("us"))
        landed = pa.table(
            {
                "id": pc.cast(ids, pa.string()),
                "Data_Processamento": stamps,
                "Valor": pc.cast(ids, pa.int64()),
            }
        )
        at = SYNCED_AT + timedelta(hours=number)
        landing.write(PROBE, landed, landed_file_name(at, 0), row_group_rows=16_384)


def cut_folder(folder: str, memory_rows: str, rows: str) -> None:
    """Run in the child process of :func:`peak_allocated`: a whole cut, both passes."""
    cut = Landing(folder).cut(PROBE, DAY, memory_rows=int(memory_rows))
    assert cut.stats.duplicates == int(rows) and cut.rows == int(rows), cut.stats
    assert sum(batch.num_rows for batch in cut.batches(16_384)) == int(rows)


def test_day_cut_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    small, large = 200_000, 1_000_000
    peaks = {}
    for rows in (small, large):
        folder = tmp_path / f"rows-{rows}"
        land_shuffled(folder, rows)
        # 50,000 keys in memory: the 400,000 landed keys spill into 8 runs, the 2M into 40.
        peaks[rows] = peak_allocated(f"{__name__}:cut_folder", str(folder), "50000", str(rows))
    # Measured: 7.3 MB at both sizes, most of it the reader's batches. The cut before held
    # every landed key in Arrow (16 MB here, and its sorted copy) and a Python set of them.
    keys = 2 * large * 8
    assert peaks[large] <= peaks[small] * 1.25 + 1_000_000, peaks
    assert peaks[large] < keys / 2, peaks


# ---------------------------------------------------------------------- the staging probe


def test_the_staging_probe_leaves_nothing_and_the_cut_never_sees_it(tmp_path: Path) -> None:
    landing = Landing(str(tmp_path / "staging"))
    land(landing, FISCAL_LINES, bronze_batch(FISCAL_LINES, DAY, 10), SYNCED_AT, 0)
    before = day_rows(landing, FISCAL_LINES, DAY)
    landing.prepare_probe(2.0)()
    assert [p.name for p in (tmp_path / "staging").iterdir()] == [FISCAL_LINES.name]
    assert day_rows(landing, FISCAL_LINES, DAY)[1] == before[1]


def test_the_staging_probe_of_a_bucket_names_the_staging_and_its_setting(s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/_airbyte_staging"
    landing = Landing(url, BACKUP_STAGING_SETTING)
    landing.prepare_probe(2.0)()
    assert s3_client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    s3_client().delete_bucket(Bucket=s3_bucket)
    with pytest.raises(BronzeError) as raised:
        landing.prepare_probe(2.0)()
    message = str(raised.value)
    assert f"{url}/_probe/ ({BACKUP_STAGING_SETTING})" in message
    assert "NoSuchBucket" in message and "ACODE_BRONZE_URL" not in message
