"""What an Airbyte connection lands, cut back into partition D: exact values, one row per key.

No server here: the landed files are written with the same conversion the loopback Airbyte
server uses, so these tests pin the conversion itself (every value of the contract's types,
edge rows included, comes back unchanged) and the cut (the day's rows, each once, whatever
number of syncs and connections landed them).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.demo.generator import edge_rows, generate_rows
from acode_dagster.errors import SourceError
from acode_dagster.landing import (
    AIRBYTE_COLUMNS,
    Landing,
    LandingStats,
    from_landed,
    landed_file_name,
    landed_schema,
    to_landed,
)
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS, TABLES, Table

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
