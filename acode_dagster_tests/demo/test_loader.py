"""The bulk loader against a real MariaDB: what goes in comes back out, value for value.

The tests use the session's MariaDB pair but a database of their own on the primary, because
they add drift columns and reload days, which would disturb tests reading ``acode_farmarcas``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from acode_dagster.demo.generator import Anomalies, count_invoices, generate_rows
from acode_dagster.demo.loader import (
    EXTRA_COLUMN_VALUE,
    DemoLoadError,
    _load_part,
    create_tables,
    last_complete_days,
    load_days,
    load_demo,
)
from acode_dagster.errors import SourceError
from acode_dagster.mysql import MySQLEndpoint, count_rows
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    PRODUCTS,
    SOURCE_TIMEZONE,
    TABLES,
    Table,
)

pytestmark = pytest.mark.slow

DAYS = [date(2026, 11, 19), date(2026, 11, 20)]
ROWS = {FISCAL_LINES.name: 1_500, PRODUCTS.name: 300}


@pytest.fixture(scope="module")
def database(mariadb_pair: Any) -> Iterator[MySQLEndpoint]:
    admin: MySQLEndpoint = mariadb_pair.endpoint("primary", admin=True)
    name = f"acode_demo_test_{os.getpid()}"
    conn = admin.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()
    endpoint = dataclasses.replace(admin, database=name)
    create_tables(endpoint)
    yield endpoint
    conn = admin.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def read(endpoint: MySQLEndpoint, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    conn = endpoint.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
    finally:
        conn.close()


def read_day(endpoint: MySQLEndpoint, table: Table, day: date) -> list[tuple[Any, ...]]:
    return read(endpoint, table.select_sql(day) + ("" if table.is_snapshot else " ORDER BY id"))


@pytest.fixture(scope="module")
def loaded(database: MySQLEndpoint) -> MySQLEndpoint:
    lines: list[str] = []
    report = load_days(
        database, DAYS, rows=ROWS, anomalies=Anomalies(edge_rows=True), log=lines.append
    )
    assert report.rows_of(FISCAL_LINES, DAYS[0]) == ROWS[FISCAL_LINES.name] + 6
    assert any("rows/s" in line for line in lines)
    assert not any("password" in line.lower() for line in lines)
    return database


def test_what_is_loaded_reads_back_value_for_value(loaded: MySQLEndpoint) -> None:
    for day in DAYS:
        for table in (FISCAL_LINES, NFE_COMPLEMENTS):
            fiscal_rows = ROWS[FISCAL_LINES.name] if table is NFE_COMPLEMENTS else None
            expected = list(
                generate_rows(
                    table,
                    day,
                    ROWS.get(table.name),
                    anomalies=Anomalies(edge_rows=True),
                    catalogue_size=ROWS[PRODUCTS.name],
                    fiscal_rows=fiscal_rows,
                )
            )
            actual = read_day(loaded, table, day)
            assert len(actual) == len(expected)
            for got, wanted in zip(actual, sorted(expected), strict=True):
                assert got == wanted, f"{table.name} {day}: {got!r:.300} != {wanted!r:.300}"
    expected_products = {
        row[0]: row
        for row in generate_rows(
            PRODUCTS, DAYS[-1], ROWS[PRODUCTS.name], anomalies=Anomalies(edge_rows=True)
        )
    }
    actual_products = {row[0]: row for row in read_day(loaded, PRODUCTS, DAYS[-1])}
    assert actual_products == expected_products


def test_the_hard_values_survive(loaded: MySQLEndpoint) -> None:
    """Checked on the server's side too, so a symmetric bug (the same mangling on the way in and
    out) cannot hide behind the round trip."""
    day = DAYS[0]
    window = FISCAL_LINES.where_sql(day)
    at = f"SELECT COUNT(*) FROM {FISCAL_LINES.name}{window} AND Data_Processamento = %s"
    assert read(loaded, at, (f"{day} 00:00:00.000000",))[0][0] >= 1
    assert read(loaded, at, (f"{day} 23:59:59.999999",))[0][0] >= 1
    values = read(
        loaded,
        "SELECT MAX(Val_Prod), MIN(Val_Prod), MAX(Quantidade), MAX(Numero_NF), MAX(Serie_NF),"
        " MAX(CHAR_LENGTH(Razao_Social)), SUM(UF IS NULL), SUM(UF = '\\\\N'), SUM(UF = ''),"
        " SUM(HEX(Razao_Social) LIKE '%F09F928A%')"
        f" FROM {FISCAL_LINES.name}{window}",
    )[0]
    assert values[:5] == (
        Decimal("9999999999999.99"),
        Decimal("-9999999999999.99"),
        Decimal("99999999999.9999"),
        4_294_967_295,
        65_535,
    )
    assert values[5] == FISCAL_LINES.column("Razao_Social").max_length
    # One edge row each: NULL, the two characters backslash-N, and the empty string are three
    # different values.
    assert tuple(int(v) for v in values[6:9]) == (1, 1, 1)
    assert values[9] >= 2, "💊 kept as its four UTF-8 bytes"


def test_a_reload_replaces_never_duplicates(loaded: MySQLEndpoint) -> None:
    before = {t.name: count_rows(loaded, t, DAYS[0]) for t in TABLES}
    report = load_days(
        loaded, [DAYS[0]], rows=ROWS, anomalies=Anomalies(edge_rows=True), log=lambda _: None
    )
    after = {t.name: count_rows(loaded, t, DAYS[0]) for t in TABLES}
    assert after == before
    fiscal = next(p for p in report.parts if p.table == FISCAL_LINES.name)
    assert fiscal.deleted == fiscal.rows == before[FISCAL_LINES.name]
    # Normal lines (edge rows repeat their odd keys on purpose) are each there once.
    duplicates = read(
        loaded,
        f"SELECT Chave_NFe, Item_NF FROM {FISCAL_LINES.name}{FISCAL_LINES.where_sql(DAYS[0])}"
        " AND Chave_NFe REGEXP '^[0-9]{44}$' GROUP BY Chave_NFe, Item_NF HAVING COUNT(*) > 1",
    )
    assert duplicates == []
    # The neighbouring day is untouched.
    assert count_rows(loaded, FISCAL_LINES, DAYS[1]) == ROWS[FISCAL_LINES.name] + 6


def test_anomalies_land_as_asked(database: MySQLEndpoint) -> None:
    nulls_day, drop_day, drift_day = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)
    rows = {FISCAL_LINES.name: 1_000, PRODUCTS.name: 200}
    load_days(
        database,
        [nulls_day, drop_day, drift_day],
        rows=rows,
        anomalies={
            (FISCAL_LINES.name, nulls_day): Anomalies(null_share={"CNPJ": 0.07, "EAN": 0.2}),
            (FISCAL_LINES.name, drop_day): Anomalies(volume_factor=0.1),
            (NFE_COMPLEMENTS.name, drift_day): Anomalies(extra_column="Codigo_Novo"),
        },
        log=lambda _: None,
    )
    window = FISCAL_LINES.where_sql(nulls_day)
    counts = read(
        database,
        f"SELECT SUM(CNPJ IS NULL), SUM(EAN IS NULL), COUNT(*) FROM {FISCAL_LINES.name}{window}",
    )[0]
    assert tuple(int(v) for v in counts) == (70, 200, 1000)
    assert count_rows(database, FISCAL_LINES, drop_day) == 100
    # Complements follow the NF-e that were actually loaded.
    assert count_rows(database, NFE_COMPLEMENTS, drop_day) == count_invoices(drop_day, 100)
    orphans = read(
        database,
        f"SELECT COUNT(*) FROM {NFE_COMPLEMENTS.name} c{NFE_COMPLEMENTS.where_sql(drop_day)}"
        f" AND NOT EXISTS (SELECT 1 FROM {FISCAL_LINES.name} f WHERE f.Chave_NFe = c.Chave_NFe)",
    )
    assert orphans[0][0] == 0
    columns = [r[0] for r in read(database, f"SHOW COLUMNS FROM {NFE_COMPLEMENTS.name}")]
    assert columns[-1] == "Codigo_Novo"
    drift = read(
        database,
        f"SELECT DATE(Data_Processamento), COUNT(Codigo_Novo), MIN(Codigo_Novo)"
        f" FROM {NFE_COMPLEMENTS.name} WHERE Data_Processamento >= '2026-10-01'"
        f" AND Data_Processamento < '2026-10-04' GROUP BY 1 ORDER BY 1",
    )
    assert [(d, int(n), v) for d, n, v in drift] == [
        (nulls_day, 0, None),
        (drop_day, 0, None),
        (drift_day, count_invoices(drift_day, 1_000), EXTRA_COLUMN_VALUE),
    ]


def test_anomalies_that_match_nothing_are_refused(database: MySQLEndpoint) -> None:
    with pytest.raises(ValueError, match="match nothing loaded"):
        load_days(database, DAYS, anomalies={(FISCAL_LINES.name, date(2000, 1, 1)): Anomalies()})
    with pytest.raises(ValueError, match="no nullable column"):
        load_days(database, DAYS, anomalies=Anomalies(null_share={"Nope": 0.1}))


def test_a_row_the_schema_refuses_rolls_the_day_back(
    database: MySQLEndpoint, tmp_path: Path
) -> None:
    day = date(2026, 9, 1)
    load_days(database, [day], rows={FISCAL_LINES.name: 50}, log=lambda _: None)
    good = list(generate_rows(FISCAL_LINES, day, 50))
    too_long = (*good[10][:5], "SPX", *good[10][6:])  # UF is CHAR(2)
    conn = database.connect(local_infile=True)
    try:
        with pytest.raises(DemoLoadError, match=r"UF|truncated"):
            _load_part(
                conn,
                FISCAL_LINES,
                day,
                iter([*good[:10], too_long]),
                extra=None,
                workdir=tmp_path,
                chunk_rows=4,
                log=lambda _: None,
            )
    finally:
        conn.close()
    assert read_day(database, FISCAL_LINES, day) == good
    assert list(tmp_path.iterdir()) == []


def test_load_demo_loads_the_last_complete_local_days(database: MySQLEndpoint) -> None:
    days = last_complete_days(2, date(2026, 8, 31))
    assert days == [date(2026, 8, 30), date(2026, 8, 31)]
    yesterday = datetime.now(SOURCE_TIMEZONE).date() - timedelta(days=1)
    assert last_complete_days(1) == [yesterday]
    report = load_demo(
        database,
        n_days=2,
        end_day=date(2026, 8, 31),
        rows={FISCAL_LINES.name: 100, NFE_COMPLEMENTS.name: 10, PRODUCTS.name: 50},
        log=lambda _: None,
    )
    assert {p.day for p in report.parts} == set(days)
    assert count_rows(database, FISCAL_LINES.name, date(2026, 8, 30)) == 100
    assert count_rows(database, NFE_COMPLEMENTS, date(2026, 8, 31)) == 10


def test_an_unreachable_server_is_explained(database: MySQLEndpoint) -> None:
    nowhere = dataclasses.replace(database, port=1, connect_timeout_s=1.0)
    with pytest.raises(SourceError, match="unreachable"):
        load_days(nowhere, [DAYS[0]])
    with pytest.raises(SourceError, match="unreachable"):
        count_rows(nowhere, FISCAL_LINES, DAYS[0])
