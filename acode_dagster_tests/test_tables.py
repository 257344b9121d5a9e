"""The table descriptions against the source contract, and the partition window."""

import re
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.tables import (
    TABLES,
    TABLES_BY_NAME,
    arrow_type_for,
    day_window,
    get_table,
    parse_partition_key,
    source_schema_sql,
    source_schema_statements,
    split_sql_statements,
)

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "acode_source_schema.sql"


def parse_contract(sql: str) -> dict[str, list[tuple[str, str, bool]]]:
    """{table: [(column, TYPE, nullable)]} from the CREATE TABLE statements of the contract."""
    sql = re.sub(r"--[^\n]*", "", sql)
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\)", sql, re.S):
        columns = []
        for raw in body.splitlines():
            line = raw.strip().rstrip(",")
            if not line or re.match(r"(PRIMARY|UNIQUE)?\s*KEY\b", line):
                continue
            match = re.match(
                r"(\w+)\s+([A-Z]+(?:\(\d+(?:,\s*\d+)?\))?(?:\s+UNSIGNED)?)\s+(NOT NULL|NULL)", line
            )
            assert match, f"unparsed column line in the contract: {line!r}"
            columns.append((match[1], match[2], match[3] == "NULL"))
        tables[name] = columns
    return tables


@pytest.fixture(scope="module")
def contract() -> dict[str, list[tuple[str, str, bool]]]:
    return parse_contract(CONTRACT.read_text())


def test_the_packaged_ddl_is_the_contract() -> None:
    assert source_schema_sql() == CONTRACT.read_text()


def test_descriptions_match_the_contract_column_for_column(contract) -> None:
    assert set(contract) == set(TABLES_BY_NAME)
    for table in TABLES:
        described = [(c.name, c.mysql_type, c.nullable) for c in table.columns]
        assert described == contract[table.name], table.name


def test_every_contract_type_has_an_exact_arrow_type(contract) -> None:
    for columns in contract.values():
        for _, mysql_type, _ in columns:
            arrow_type_for(mysql_type)
    assert arrow_type_for("DECIMAL(15,2)") == pa.decimal128(15, 2)
    assert arrow_type_for("BIGINT UNSIGNED") == pa.uint64()
    assert arrow_type_for("DATETIME(6)") == pa.timestamp("us")
    assert arrow_type_for("TINYINT(1)") == pa.int8()
    with pytest.raises(ValueError, match="no Arrow mapping for MySQL type 'FLOAT'"):
        arrow_type_for("FLOAT")


def test_arrow_schema_keeps_nullability() -> None:
    fiscal = get_table("farmarcas_si_analitico_diario")
    assert not fiscal.arrow_schema.field("id").nullable
    assert fiscal.arrow_schema.field("CNPJ").nullable


def test_select_lists_columns_explicitly_and_cuts_the_local_day() -> None:
    fiscal = get_table("farmarcas_si_analitico_diario")
    sql = fiscal.select_sql(date(2026, 11, 20))
    assert "*" not in sql
    assert "`Data_Processamento` >= '2026-11-20 00:00:00'" in sql
    assert "`Data_Processamento` < '2026-11-21 00:00:00'" in sql
    products = get_table("farmarcas_si_analitico_diario_produtos")
    assert "WHERE" not in products.select_sql(date(2026, 11, 20))
    assert products.is_snapshot


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
def test_windows_of_consecutive_days_tile_time(day: date) -> None:
    start, end = day_window(day)
    assert start == datetime(day.year, day.month, day.day)
    assert day_window(date.fromordinal(day.toordinal() + 1))[0] == end
    assert (end - start).total_seconds() == 86_400


@given(st.dates())
def test_partition_keys_round_trip(day: date) -> None:
    assert parse_partition_key(day.isoformat()) == day


@pytest.mark.parametrize(
    "bad", ["2026-13-01", "2026-02-30", "20261120", "yesterday", "", "2026-1-1"]
)
def test_bad_partition_keys_are_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match=r"bad partition key .*(YYYY-MM-DD|calendar day)"):
        parse_partition_key(bad)


def test_unknown_table_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="farmarcas_si_analitico_diario_produtos"):
        get_table("vendas")


def test_split_sql_statements_honours_quotes_and_comments() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (a INT COMMENT 'x; y', b CHAR(1) DEFAULT ';');  # trailing
    /* block; comment */ INSERT INTO t VALUES (1, 'it''s; fine');
    ;
    """
    assert split_sql_statements(script) == [
        "CREATE TABLE t (a INT COMMENT 'x; y', b CHAR(1) DEFAULT ';')",
        "INSERT INTO t VALUES (1, 'it''s; fine')",
    ]


def test_the_contract_splits_into_its_three_tables() -> None:
    statements = source_schema_statements()
    assert [s.split("(")[0].split()[-1] for s in statements] == list(TABLES_BY_NAME)
