"""Business figures per partition: the tally against Python's own arithmetic (Hypothesis), and
the figures of real syncs, by both replicators and through a real materialization, against the
same aggregates computed by MariaDB on the source window, edge rows included."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from dagster_airbyte import AirbyteWorkspace
from hypothesis import given, settings
from hypothesis import strategies as st

from acode_dagster.airbyte import AirbyteConnections, AirbyteReplicator
from acode_dagster.bronze.store import LocalStore
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.observability.business import BUSINESS_METRICS, business_metadata
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.generator import Anomalies
from acode_dagster.demo.loader import load_days
from acode_dagster.landing import Landing
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.observability.business import (
    NULL_KEY,
    OTHER_KEY,
    BusinessTally,
    exact_text,
)
from acode_dagster.replicator import EmbeddedReplicator
from acode_dagster.settings import Settings
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    TABLES,
    BusinessSpec,
    Table,
    day_window,
)
from acode_dagster_tests.support.airbyte import LoopbackAirbyte
from acode_dagster_tests.support.platform import metadata_of

DAY = date(2026, 4, 7)
ROWS = {FISCAL_LINES.name: 600, NFE_COMPLEMENTS.name: 150}
MAX = Decimal("9999999999999.99")
"""The largest DECIMAL(15,2): eight of them need more digits than the column has."""

# --------------------------------------------------------------------------- the tally alone

SPEC = BusinessSpec(sums=("value",), distinct=("text",), rows_by=("kind",), value_column="value")
SCHEMA = pa.schema([("value", pa.decimal128(15, 2)), ("text", pa.string()), ("kind", pa.string())])
cents = st.integers(min_value=-999_999_999_999_999, max_value=999_999_999_999_999)
values = st.one_of(
    st.none(),
    st.sampled_from([MAX, -MAX, Decimal("0.01")]),
    cents.map(lambda c: Decimal(c).scaleb(-2)),
)
texts = st.one_of(
    st.none(),
    st.sampled_from(["SP", "sp", "Sé", "SE", "se", "ação", "acao", "💊", "x ", "x", ""]),
    st.text(max_size=4),
)
rows = st.lists(st.tuples(values, texts, texts), max_size=120)


def batches_of(data: list[tuple[Any, ...]], cuts: list[int]) -> Iterator[pa.RecordBatch]:
    """``data`` as record batches cut at ``cuts`` (empty batches included)."""
    table = pa.Table.from_pylist(
        [dict(zip(SCHEMA.names, row, strict=True)) for row in data], schema=SCHEMA
    )
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        yield from table.slice(start, cut - start).to_batches() or [
            pa.RecordBatch.from_pylist([], schema=SCHEMA)
        ]
        start = cut


@settings(max_examples=150, deadline=None)
@given(rows, st.lists(st.integers(min_value=0), max_size=6), st.sampled_from([1, 3, 10**6]))
def test_the_tally_equals_python_arithmetic_in_memory_and_spilled(
    data: list[tuple[Any, ...]], cuts: list[int], memory_values: int
) -> None:
    with BusinessTally(SPEC, SCHEMA, memory_values=memory_values) as tally:
        figures = tally.feed_all(batches_of(data, cuts))
    present = [v for v, _, _ in data if v is not None]
    # SQL's SUM: NULLs skipped; nothing to add up is NULL, not 0.
    assert figures.sums["value"] == (sum(present, Decimal(0)) if present else None)
    # COUNT(DISTINCT ...) on the bytes: case, accents and trailing spaces all count.
    distinct = {t for _, t, _ in data if t is not None}
    assert figures.distinct["text"] == len(distinct)
    assert (figures.spilled == ("text",)) == (len(distinct) > memory_values)
    assert figures.rows_by["kind"] == dict(
        Counter(NULL_KEY if k is None else k for _, _, k in data)
    )
    assert figures.rows == len(data)


def test_sums_beyond_the_columns_precision_stay_exact() -> None:
    data = [(MAX, "a", "k")] * 70_000 + [(Decimal("0.01"), "b", "k")]
    figures = BusinessTally(SPEC, SCHEMA).feed_all(batches_of(data, [65_536]))
    assert figures.sums["value"] == MAX * 70_000 + Decimal("0.01")
    assert figures.as_json()["sum_value"] == "699999999999999300.01"


def test_integer_sums_do_not_wrap_around() -> None:
    schema = pa.schema([("n", pa.uint64())])
    batch = pa.record_batch([pa.array([2**64 - 1, 2**64 - 1, None], pa.uint64())], schema=schema)
    figures = BusinessTally(BusinessSpec(sums=("n",)), schema).feed_all([batch, batch])
    assert figures.sums["n"] == 4 * (2**64 - 1)


def test_a_partition_of_nulls_sums_to_null_and_counts_no_value() -> None:
    figures = BusinessTally(SPEC, SCHEMA).feed_all(batches_of([(None, None, None)] * 3, []))
    assert figures.sums == {"value": None} and figures.value is None
    assert figures.distinct == {"text": 0}
    assert figures.rows_by == {"kind": {NULL_KEY: 3}}
    assert figures.as_json()["sum_value"] is None
    entries = business_metadata(figures)
    assert "sum_value" not in entries  # nothing to plot; business_metrics says null
    assert entries[BUSINESS_METRICS].value == figures.as_json()
    assert figures.as_json()["sum_value"] is None


def test_categories_past_the_cap_fold_into_other() -> None:
    data = [(None, None, f"k{n % 5}") for n in range(50)]
    figures = BusinessTally(SPEC, SCHEMA, max_categories=3).feed_all(batches_of(data, []))
    counts = figures.rows_by["kind"]
    assert len(counts) == 4 and counts[OTHER_KEY] == 20 and sum(counts.values()) == 50


def test_exact_text_never_writes_an_exponent() -> None:
    assert exact_text(Decimal("0E-2")) == "0.00"
    assert exact_text(Decimal("1E+3")) == "1000"
    assert exact_text(None) is None


def test_every_table_describes_its_figures_and_value() -> None:
    assert FISCAL_LINES.value_column == "ACODE_Val_Total"
    assert NFE_COMPLEMENTS.value_column == "Valor_Total_NF"
    assert all(t.business.columns for t in TABLES)
    with pytest.raises(AssertionError, match="not one of the business sums"):
        Table(
            **{
                **{f: getattr(FISCAL_LINES, f) for f in ("name", "description", "columns")},
                "key": "id",
                "partition_column": "Data_Processamento",
                "critical_columns": (),
                "expected_daily_rows": 1,
                "demo_daily_rows": 1,
                "business": BusinessSpec(value_column="Val_Prod"),
            }
        )


# --------------------------------------------------------------------------- against MariaDB

EXTRA_ID = 9_000_000_000


def edge_inserts(day: date) -> list[tuple[str, tuple[Any, ...]]]:
    """Rows a sum or a distinct count gets wrong when it is not exact, or when it means the
    collation's equality rather than the bytes': case, accents, trailing spaces, emoji, eight
    maxima in one batch, the day's first and last microsecond and the next day's first."""
    start, end = day_window(day)
    last = end - timedelta(microseconds=1)
    fiscal = (
        "INSERT INTO farmarcas_si_analitico_diario (id, Data, Data_Processamento, CNPJ, UF, EAN, "
        "Val_Prod, ACODE_Val_Total) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    rows: list[tuple[Any, ...]] = [
        (start, "12345678000199", "sp", "ÉAN7", None, MAX),
        (last, "12345678000199", "SP", "EAN7", Decimal("-0.01"), -MAX),
        (last, "ação💊", "Sé", "ean7", MAX, None),
        (start, "acao", "SE", "EAN7 ", None, Decimal("0.00")),
        (end, "99999999999999", "XX", "NEXTDAY", MAX, MAX),
    ] + [(last, None, None, "EAN7", None, MAX)] * 8
    statements = [
        (fiscal, (EXTRA_ID + n, day, when, *rest)) for n, (when, *rest) in enumerate(rows)
    ]
    complement = (
        "INSERT INTO farmarcas_si_analitico_diario_complemento (id, Chave_NFe, Data, "
        "Data_Processamento, CNPJ_Emitente, CNPJ_Destinatario, Status_NFe, Valor_Total_NF) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    others: list[tuple[Any, ...]] = [
        (last, "Ação", "ação", "Cancelada", MAX),
        (last, "ação", "acao ", "cancelada", MAX),
        (start, None, "💊", None, -MAX),
        (end, "x", "y", "autorizada", MAX),
    ]
    statements += [
        (complement, (EXTRA_ID + n, f"{n:044d}", day, when, *rest))
        for n, (when, *rest) in enumerate(others)
    ]
    return statements


@pytest.fixture(scope="module")
def source(mariadb_pair: Any) -> Any:
    """The session's pair with one demo day (its edge rows too) and the rows above."""
    admin = mariadb_pair.endpoint("primary", admin=True)
    load_days(admin, [DAY], rows=ROWS, anomalies=Anomalies(edge_rows=True))
    connection = admin.connect()
    try:
        with connection.cursor() as cursor:
            for statement, row in edge_inserts(DAY):
                cursor.execute(statement, row)
        connection.commit()
    finally:
        connection.close()
    mariadb_pair.wait_replica_caught_up()
    return mariadb_pair


def mysql_figures(endpoint: MySQLEndpoint, table: Table, day: date) -> dict[str, Any]:
    """The figures as MariaDB computes them on the window, in the published form: SUM,
    COUNT(DISTINCT) and GROUP BY on the bytes (CAST AS BINARY), not on the collation."""
    spec, where = table.business, table.where_sql(day)
    aggregates = ["COUNT(*)"]
    aggregates += [f"SUM(`{c}`)" for c in spec.sums]
    aggregates += [f"COUNT(DISTINCT CAST(`{c}` AS BINARY))" for c in spec.distinct]
    connection = endpoint.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {', '.join(aggregates)} FROM `{table.name}`{where}")
            count, *rest = cursor.fetchone()
            figures: dict[str, Any] = {"rows": count}
            for column, total in zip(spec.sums, rest, strict=False):
                figures[f"sum_{column}"] = exact_text(total)
            for column, distinct in zip(spec.distinct, rest[len(spec.sums) :], strict=True):
                figures[f"distinct_{column}"] = distinct
            for column in spec.rows_by:
                cursor.execute(
                    f"SELECT CAST(`{column}` AS BINARY), COUNT(*) FROM `{table.name}`{where} "
                    "GROUP BY 1"
                )
                figures[f"rows_by_{column}"] = {
                    NULL_KEY if value is None else value.decode(): n
                    for value, n in cursor.fetchall()
                }
    finally:
        connection.close()
    return figures


def test_the_edge_rows_make_collation_and_bytes_disagree(source: Any) -> None:
    """The test below could not tell byte-exact from collation-equal without these rows."""
    endpoint = source.endpoint("primary")
    connection = endpoint.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(DISTINCT EAN), COUNT(DISTINCT CAST(EAN AS BINARY)) FROM "
                f"`{FISCAL_LINES.name}`{FISCAL_LINES.where_sql(DAY)}"
            )
            collated, exact = cursor.fetchone()
    finally:
        connection.close()
    assert exact > collated


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_the_embedded_sync_figures_equal_mariadbs(
    source: Any, tmp_path: Path, table: Table
) -> None:
    endpoint = source.endpoint("primary")
    result = EmbeddedReplicator(batch_rows=128).sync(table, DAY, endpoint, LocalStore(tmp_path))
    assert result.business is not None
    assert result.business.as_json() == mysql_figures(endpoint, table, DAY)


def test_the_airbyte_sync_figures_equal_mariadbs(
    source: Any, airbyte_server: LoopbackAirbyte, tmp_path: Path
) -> None:
    workspace = AirbyteWorkspace(
        rest_api_base_url=airbyte_server.rest_url,
        configuration_api_base_url=airbyte_server.config_url,
        workspace_id=airbyte_server.workspace_id,
        client_id=airbyte_server.client_id,
        client_secret=airbyte_server.client_secret,
        poll_interval=0.1,
    )
    connections = AirbyteConnections(
        workspace, {"primary": airbyte_server.primary_id, "backup": airbyte_server.backup_id}
    )
    replicator = AirbyteReplicator(
        connections=connections,
        role="primary",
        landing=Landing(str(tmp_path / "bronze" / "_airbyte_staging")),
        poll_s=0.1,
        batch_rows=128,
        log=lambda _line: None,
    )
    endpoint = source.endpoint("primary")
    store = LocalStore(tmp_path / "bronze")
    for table in TABLES:
        result = replicator.sync(table, DAY, endpoint, store)
        assert result.business is not None
        assert result.business.as_json() == mysql_figures(endpoint, table, DAY), table.name


def test_a_materialization_carries_the_figures(source: Any, env: dict[str, str]) -> None:
    fiscal = [a for a in bronze_assets if bronze_key(FISCAL_LINES) in a.keys]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            fiscal,
            partition_key=str(DAY),
            resources=build_resources(Settings.from_env()),
            instance=instance,
        )
        logged = [e.user_message for e in instance.all_logs(result.run_id)]
    entries = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == bronze_key(FISCAL_LINES)
    )
    expected = mysql_figures(source.endpoint("primary"), FISCAL_LINES, DAY)
    assert entries[BUSINESS_METRICS].value == expected
    # What the UI plots over partitions is a number.
    total = entries["sum_ACODE_Val_Total"]
    assert isinstance(total, dg.FloatMetadataValue)
    assert total.value == float(Decimal(expected["sum_ACODE_Val_Total"]))
    assert isinstance(entries["distinct_CNPJ"], dg.IntMetadataValue)
    assert entries["distinct_EAN"].value == expected["distinct_EAN"]
    assert entries["rows_by_UF"].value == expected["rows_by_UF"]
    assert metadata_of(result)["dagster/row_count"] == expected["rows"]
    headline = [line for line in logged if "business figures" in line]
    assert len(headline) == 1 and f"{expected['rows']:,} rows" in headline[0]
