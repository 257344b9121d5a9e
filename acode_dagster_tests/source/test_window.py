"""A window read in chunks holds exactly the window's rows, on a real MariaDB server: rows that
share a ``Data_Processamento`` across a chunk's edge, the day's first and last microsecond, and
chunk sizes that divide the window exactly or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from acode_dagster.localstack import LocalStack
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.replicator import stream_batches
from acode_dagster.source import window
from acode_dagster.source.window import window_batches
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS, day_window
from acode_dagster_tests.support.source import source_window

DAY = date(2026, 8, 3)
TIES = 37
"""Rows added with one and the same Data_Processamento, so that chunk edges fall inside them."""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A pair of this module's own: the session's holds the larger days other tests load, and
    42 window reads over a table of 100,000+ rows took 200 s where these take 15."""
    stack = LocalStack(tmp_path_factory.mktemp("window-pair"))
    try:
        stack.start()
        yield stack
    finally:
        stack.destroy()


@pytest.fixture(scope="module")
def source(pair: LocalStack) -> MySQLEndpoint:
    from acode_dagster.demo.loader import load_days

    admin = pair.endpoint("primary", admin=True)
    load_days(admin, [DAY], rows={FISCAL_LINES.name: 400, NFE_COMPLEMENTS.name: 60})
    start, end = day_window(DAY)
    moments = [
        start,
        start + timedelta(hours=12),  # the edge of two slices
        start + timedelta(hours=13, microseconds=5),
        end - timedelta(microseconds=1),
    ]
    connection = admin.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT MAX(id) FROM `{FISCAL_LINES.name}`")
            first = int(cursor.fetchone()[0]) + 1  # type: ignore[index]
            rows = [
                (first + n, DAY, moments[n % len(moments)], f"tie {n}")
                for n in range(TIES * len(moments))
            ]
            # The day's edges too: its first microsecond is in, the next day's first is not.
            rows.append((first + len(rows), DAY, end, "next day"))
            cursor.executemany(
                f"INSERT INTO `{FISCAL_LINES.name}` (id, Data, Data_Processamento, "
                "Descricao_Produto) VALUES (%s, %s, %s, %s)",
                rows,
            )
    finally:
        connection.close()
    endpoint: MySQLEndpoint = pair.endpoint("primary")
    return endpoint


def keys_of(batches: Iterator[pa.RecordBatch], key: str) -> list[Any]:
    found: list[Any] = []
    for batch in batches:
        found += batch.column(key).to_pylist()
    return found


@pytest.mark.parametrize("chunk_rows", [1, 7, TIES, 100, 511, 512, 10_000])
@pytest.mark.parametrize("order", FISCAL_LINES.read_orders())
@pytest.mark.parametrize("connections", [1, 2, 3])
def test_chunks_hold_exactly_the_window(
    source: MySQLEndpoint,
    chunk_rows: int,
    order: tuple[str, ...],
    connections: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In either order, whichever the optimizer would pick, over one connection or several
    (with two, 37 tied rows sit on the edge of the slices, at 12:00)."""
    monkeypatch.setattr(window, "read_order", lambda *_: order)
    expected = [r["id"] for r in source_window(source, FISCAL_LINES, DAY)]
    assert len(expected) == 400 + TIES * 4
    read = keys_of(
        window_batches(
            stream_batches,
            source,
            FISCAL_LINES,
            DAY,
            batch_rows=64,
            chunk_rows=chunk_rows,
            connections=connections,
        ),
        "id",
    )
    assert len(read) == len(expected)
    assert sorted(read) == expected


def test_the_order_follows_the_optimizer(source: MySQLEndpoint) -> None:
    """This test table holds little but a few days: the optimizer scans it for a day's window
    when that day is most of the table, and takes the index for a day that is a sliver."""
    empty_day = date(2020, 1, 1)
    assert window.read_order(source, FISCAL_LINES, empty_day) == ("Data_Processamento", "id")
    assert window.read_order(source, PRODUCTS, DAY) is None


def test_each_chunk_resumes_after_the_last_row_of_the_one_before(source: MySQLEndpoint) -> None:
    queries: list[str] = []

    def recording(endpoint: MySQLEndpoint, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        queries.append(sql)
        return stream_batches(endpoint, sql, batch_rows)

    rows = keys_of(
        window_batches(recording, source, FISCAL_LINES, DAY, batch_rows=50, chunk_rows=100), "id"
    )
    assert len(queries) == len(rows) // 100 + 1
    order = window.read_order(source, FISCAL_LINES, DAY)
    assert order is not None
    assert f"ORDER BY {', '.join(f'`{c}`' for c in order)} LIMIT 100" in queries[0]
    assert all(f"`{order[-1]}` > " in q for q in queries[1:])


def test_a_table_without_an_integer_key_or_window_is_read_in_one_query(
    source: MySQLEndpoint,
) -> None:
    assert PRODUCTS.read_orders() == ()
    assert NFE_COMPLEMENTS.read_orders() == (("Data_Processamento", "id"), ("id",))
    queries: list[str] = []

    def recording(endpoint: MySQLEndpoint, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        queries.append(sql)
        return iter(())

    list(window_batches(recording, source, PRODUCTS, DAY, batch_rows=10, chunk_rows=3))
    assert queries == [PRODUCTS.select_sql(DAY)]
    with pytest.raises(ValueError, match="not read in chunks"):
        PRODUCTS.chunk_sql(DAY, ("EAN",), None, 10)


def test_the_resume_literal_keeps_microseconds() -> None:
    order = ("Data_Processamento", "id")
    sql = FISCAL_LINES.chunk_sql(DAY, order, (datetime(2026, 8, 3, 13, 0, 0, 5), 42), 9)
    assert "(`Data_Processamento` > '2026-08-03 13:00:00.000005')" in sql
    assert "`Data_Processamento` = '2026-08-03 13:00:00.000005' AND `id` > 42" in sql
    assert sql.endswith("LIMIT 9")
    with pytest.raises(TypeError, match="resume position"):
        FISCAL_LINES.chunk_sql(DAY, ("id",), ("42",), 9)
