"""The bronze checks as pure functions: exact edges, the column each verdict names, and
Hypothesis properties against an independent integer computation. No database, no files."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acode_dagster.mysql import SourceColumn
from acode_dagster.quality import (
    FRESHNESS,
    NULL_SHARE,
    RECONCILIATION,
    SCHEMA,
    UNIQUE_KEY,
    VOLUME,
    PartitionStats,
    Verdict,
    freshness,
    normalize_mysql_type,
    null_share,
    reconciliation,
    schema,
    schema_differences,
    unique_key,
    volume,
)
from acode_dagster.tables import FISCAL_LINES, PRODUCTS, TABLES, Table, Thresholds

# The edges below are written for the default thresholds; if those change, these tests must be
# re-read, not silently re-computed.
DEFAULTS = Thresholds()


def test_the_edges_below_assume_the_default_thresholds() -> None:
    assert FISCAL_LINES.thresholds == DEFAULTS
    assert (DEFAULTS.null_warn, DEFAULTS.null_error) == (Decimal("0.01"), Decimal("0.05"))
    assert (DEFAULTS.volume_error_below, DEFAULTS.volume_warn_below) == (
        Decimal("0.50"),
        Decimal("0.70"),
    )
    assert DEFAULTS.volume_warn_above == Decimal("1.50")
    assert (DEFAULTS.volume_window, DEFAULTS.volume_min_history) == (7, 3)
    assert (DEFAULTS.freshness_warn, DEFAULTS.freshness_fail) == (
        timedelta(hours=20),
        timedelta(hours=25),
    )


def stats(rows: int, nulls: Mapping[str, int | None]) -> PartitionStats:
    return PartitionStats(rows=rows, files=1, row_groups=1, null_counts=nulls, schemas=())


# --------------------------------------------------------------------------- null_share


@pytest.mark.parametrize(
    ("cnpj_nulls", "outcome"),
    [(0, "PASS"), (99, "PASS"), (100, "WARN"), (499, "WARN"), (500, "ERROR"), (10_000, "ERROR")],
)
def test_null_share_edges_on_10000_rows(cnpj_nulls: int, outcome: str) -> None:
    verdict = null_share(FISCAL_LINES, stats(10_000, {"CNPJ": cnpj_nulls, "EAN": 0}))
    assert verdict.check == NULL_SHARE
    assert verdict.outcome == outcome
    assert verdict.passed == (outcome == "PASS")
    assert verdict.metadata["nulls_CNPJ"] == cnpj_nulls
    assert verdict.metadata["null_pct_CNPJ"] == pytest.approx(cnpj_nulls / 100)
    assert verdict.metadata["rows"] == 10_000


def test_null_share_measured_text_shows_two_decimals_at_the_edge() -> None:
    warned = null_share(FISCAL_LINES, stats(10_000, {"CNPJ": 499, "EAN": 0}))
    failed = null_share(FISCAL_LINES, stats(10_000, {"CNPJ": 500, "EAN": 0}))
    assert "4.99 %" in warned.measured and "CNPJ" in warned.measured
    assert "5.00 %" in failed.measured and "500 of 10,000" in failed.measured


@pytest.mark.parametrize(
    ("nulls", "outcome", "worst"),
    [
        ({"CNPJ": 99, "EAN": 500}, "ERROR", "EAN"),
        ({"CNPJ": 500, "EAN": 99}, "ERROR", "CNPJ"),
        ({"CNPJ": 100, "EAN": 0}, "WARN", "CNPJ"),
        ({"CNPJ": 0, "EAN": 499}, "WARN", "EAN"),
    ],
)
def test_null_share_worst_column_decides(nulls: dict[str, int], outcome: str, worst: str) -> None:
    verdict = null_share(FISCAL_LINES, stats(10_000, nulls))
    assert verdict.outcome == outcome
    assert f"NULL in {worst}" in verdict.measured
    assert {k: verdict.metadata[k] for k in ("nulls_CNPJ", "nulls_EAN")} == {
        "nulls_CNPJ": nulls["CNPJ"],
        "nulls_EAN": nulls["EAN"],
    }
    assert set(verdict.metadata) == {"rows", "null_pct_CNPJ", "nulls_CNPJ", "null_pct_EAN",
                                     "nulls_EAN"}  # fmt: skip


def test_null_share_only_looks_at_critical_columns() -> None:
    # Razao_Social is all NULL, but it is not critical for the fiscal lines.
    verdict = null_share(FISCAL_LINES, stats(100, {"CNPJ": 0, "EAN": 0, "Razao_Social": 100}))
    assert verdict.passed
    assert "null_pct_Razao_Social" not in verdict.metadata


def test_null_share_of_an_empty_partition_passes() -> None:
    verdict = null_share(FISCAL_LINES, stats(0, {"CNPJ": 0, "EAN": 0}))
    assert verdict.passed
    # Still names a column a person can look at, not an empty one.
    assert "NULL in EAN" in verdict.measured or "NULL in CNPJ" in verdict.measured
    assert verdict.metadata["rows"] == 0
    assert verdict.metadata["null_pct_CNPJ"] == 0


@pytest.mark.parametrize(
    "nulls", [{"CNPJ": None, "EAN": 0}, {"EAN": 0}], ids=["no-statistics", "absent"]
)
def test_null_share_without_a_null_count_fails_naming_the_column(
    nulls: dict[str, int | None],
) -> None:
    verdict = null_share(FISCAL_LINES, stats(10_000, nulls))
    assert verdict.outcome == "ERROR"
    assert "CNPJ" in verdict.measured
    assert "EAN" not in verdict.measured


def test_null_share_without_statistics_wins_over_a_clean_column() -> None:
    # Even when the other column would pass, an unknown count is no pass.
    verdict = null_share(PRODUCTS, stats(5, {"EAN": None}))
    assert verdict.outcome == "ERROR"
    assert "EAN" in verdict.measured


def _level(share_num: int, share_den: int, limits: Thresholds) -> int:
    """0 pass, 1 WARN, 2 ERROR, by cross-multiplication of integers only."""
    warn_n, warn_d = limits.null_warn.as_integer_ratio()
    error_n, error_d = limits.null_error.as_integer_ratio()
    if share_den == 0:
        return 0
    if share_num * error_d >= error_n * share_den:
        return 2
    if share_num * warn_d >= warn_n * share_den:
        return 1
    return 0


OUTCOMES = ("PASS", "WARN", "ERROR")
# Shares with up to four decimals, as a person would configure them (a zero threshold would
# warn on an empty partition, a configuration nobody means).
SHARES = st.integers(1, 10_000).map(lambda n: Decimal(n).scaleb(-4))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(0, 10**12),
    data=st.data(),
    limits=st.tuples(SHARES, SHARES).map(sorted),
)
def test_null_share_agrees_with_integer_arithmetic(
    rows: int, data: st.DataObject, limits: list[Decimal]
) -> None:
    thresholds = Thresholds(null_warn=limits[0], null_error=limits[1])
    table = dataclasses.replace(FISCAL_LINES, thresholds=thresholds)
    # Near the edges often: a count drawn around each threshold, else anywhere in 0..rows.
    near = [int(limit * rows) + d for limit in limits for d in (-1, 0, 1)]
    counts = st.one_of(st.integers(0, rows), st.sampled_from(near).filter(lambda n: 0 <= n <= rows))
    cnpj, ean = data.draw(counts), data.draw(counts)
    verdict = null_share(table, stats(rows, {"CNPJ": cnpj, "EAN": ean}))
    expected = max(_level(cnpj, rows, thresholds), _level(ean, rows, thresholds))
    assert verdict.outcome == OUTCOMES[expected]


# --------------------------------------------------------------------------- volume


def test_volume_zero_rows_fails_even_without_history() -> None:
    verdict = volume(FISCAL_LINES, 0, [])
    assert verdict.check == VOLUME
    assert verdict.outcome == "ERROR"


def test_volume_zero_rows_fails_with_history() -> None:
    assert volume(FISCAL_LINES, 0, [1000, 1000, 1000]).outcome == "ERROR"


@pytest.mark.parametrize("history", [[], [5], [5, 1_000_000]])
def test_volume_passes_with_too_little_history(history: list[int]) -> None:
    verdict = volume(FISCAL_LINES, 1, history)
    assert verdict.passed
    assert f"{len(history)} earlier partition(s)" in verdict.measured
    assert "fewer than the 3" in verdict.measured
    assert verdict.metadata["history_partitions"] == len(history)
    assert "median" not in verdict.metadata


@pytest.mark.parametrize(
    ("rows", "outcome"),
    [
        (499, "ERROR"),
        (500, "WARN"),
        (699, "WARN"),
        (700, "PASS"),
        (1000, "PASS"),
        (1500, "PASS"),
        (1501, "WARN"),
        (10**9, "WARN"),
    ],
)
def test_volume_edges_against_a_median_of_1000(rows: int, outcome: str) -> None:
    verdict = volume(FISCAL_LINES, rows, [1000, 900, 1100])
    assert verdict.outcome == outcome
    assert verdict.metadata["median"] == 1000
    assert verdict.metadata["ratio"] == pytest.approx(rows / 1000)
    assert verdict.metadata["rows"] == rows
    assert verdict.metadata["history_partitions"] == 3


def test_volume_just_below_half_is_an_error_even_by_a_hair() -> None:
    # 0.4999999... of the median: exact fractions, no float rounding to 0.50.
    median = 2 * 10**9 + 2
    assert volume(FISCAL_LINES, median // 2 - 1, [median] * 3).outcome == "ERROR"
    assert volume(FISCAL_LINES, median // 2, [median] * 3).outcome == "WARN"
    assert volume(FISCAL_LINES, median * 7 // 10 - 1, [median] * 3).outcome == "WARN"


def test_volume_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    history = [1000, 100, 300, 200]  # sorted 100, 200, 300, 1000: median 250
    verdict = volume(FISCAL_LINES, 125, history)
    assert verdict.metadata["median"] == 250
    assert verdict.metadata["ratio"] == 0.5
    assert verdict.outcome == "WARN"
    assert volume(FISCAL_LINES, 124, history).outcome == "ERROR"
    assert volume(FISCAL_LINES, 175, history).outcome == "PASS"


def test_volume_median_of_an_odd_count_is_the_middle_value() -> None:
    verdict = volume(FISCAL_LINES, 300, [10, 300, 5000, 1, 700])
    assert verdict.metadata["median"] == 300
    assert verdict.passed


def test_volume_counts_only_the_newest_window_partitions() -> None:
    newest_big = [1000] * 7 + [1] * 20
    verdict = volume(FISCAL_LINES, 1000, newest_big)
    assert verdict.passed
    assert verdict.metadata["history_partitions"] == 7
    assert verdict.metadata["median"] == 1000
    # History is newest first: the same values the other way round judge against the small days.
    oldest_big = [1] * 20 + [1000] * 7
    assert volume(FISCAL_LINES, 1000, oldest_big).outcome == "WARN"
    assert volume(FISCAL_LINES, 1000, oldest_big).metadata["median"] == 1


def test_volume_window_larger_than_min_history_uses_what_there_is() -> None:
    verdict = volume(FISCAL_LINES, 40, [10, 20, 30, 40, 50])
    assert verdict.metadata["history_partitions"] == 5
    assert verdict.metadata["median"] == 30


def _volume_level(rows: int, history: Sequence[int], limits: Thresholds) -> tuple[bool, str]:
    """(passed, severity) by integer arithmetic only: rows / median = 2 rows / (2 median)."""
    recent = list(history[: limits.volume_window])
    if len(recent) < limits.volume_min_history:
        return rows > 0, "ERROR"
    ordered = sorted(recent)
    middle = len(ordered) // 2
    twice_median = (
        2 * ordered[middle] if len(ordered) % 2 else ordered[middle - 1] + ordered[middle]
    )
    if rows == 0:
        return False, "ERROR"
    if twice_median == 0:
        return False, "WARN"  # any rows against an empty median is far above it
    scaled = 2 * rows  # compared with twice_median x limit
    err_n, err_d = limits.volume_error_below.as_integer_ratio()
    low_n, low_d = limits.volume_warn_below.as_integer_ratio()
    high_n, high_d = limits.volume_warn_above.as_integer_ratio()
    if scaled * err_d < err_n * twice_median:
        return False, "ERROR"
    if scaled * low_d < low_n * twice_median or scaled * high_d > high_n * twice_median:
        return False, "WARN"
    return True, "ERROR"


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(0, 10**10),
    history=st.lists(st.integers(0, 10**10), max_size=12),
)
def test_volume_agrees_with_integer_arithmetic(rows: int, history: list[int]) -> None:
    verdict = volume(FISCAL_LINES, rows, history)
    assert (verdict.passed, verdict.severity) == _volume_level(rows, history, DEFAULTS)


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(st.integers(1, 10**6), min_size=3, max_size=9),
    data=st.data(),
)
def test_volume_edges_agree_with_integer_arithmetic(
    history: list[int], data: st.DataObject
) -> None:
    # Rows drawn on and next to each edge of the median, where a float would decide wrongly.
    recent = sorted(history[:7])
    middle = len(recent) // 2
    twice = 2 * recent[middle] if len(recent) % 2 else recent[middle - 1] + recent[middle]
    edges = [twice * f // 20 for f in (10, 14, 30)]  # 0.50, 0.70, 1.50 of the median
    rows = data.draw(st.sampled_from(edges).flatmap(lambda e: st.integers(max(e - 2, 0), e + 2)))
    verdict = volume(FISCAL_LINES, rows, history)
    assert (verdict.passed, verdict.severity) == _volume_level(rows, history, DEFAULTS)


_RANK = {"PASS": 0, "WARN": 1, "ERROR": 2}


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(st.integers(0, 10**6), min_size=3, max_size=9),
    a=st.integers(0, 3 * 10**6),
    b=st.integers(0, 3 * 10**6),
)
def test_volume_is_monotone_on_each_side_of_the_median(history: list[int], a: int, b: int) -> None:
    low, high = sorted((a, b))
    rank_low = _RANK[volume(FISCAL_LINES, low, history).outcome]
    rank_high = _RANK[volume(FISCAL_LINES, high, history).outcome]
    median = float(volume(FISCAL_LINES, 1, history).metadata["median"])
    if high <= median:
        # Below the median, more rows is never worse ...
        assert rank_high <= rank_low
    elif low >= median and low > 0:
        # ... above it, more rows is never better (zero rows is its own rule: always ERROR).
        assert rank_high >= rank_low


# --------------------------------------------------------------------------- reconciliation


def test_reconciliation_equal_passes() -> None:
    verdict = reconciliation(1234, 1234, "mysql://u@primary:3306/db")
    assert verdict.check == RECONCILIATION
    assert verdict.passed
    assert verdict.metadata["difference"] == 0
    assert verdict.metadata["server"] == "mysql://u@primary:3306/db"


@pytest.mark.parametrize(("bronze", "source"), [(1235, 1234), (1233, 1234), (0, 1), (1, 0)])
def test_reconciliation_any_difference_is_an_error(bronze: int, source: int) -> None:
    verdict = reconciliation(bronze, source, "mysql://u@replica:3306/db")
    assert verdict.outcome == "ERROR"
    assert verdict.metadata["difference"] == bronze - source
    assert (verdict.metadata["bronze_rows"], verdict.metadata["source_rows"]) == (bronze, source)
    assert "replica" in verdict.measured


# --------------------------------------------------------------------------- schema


def _mariadb_spelling(mysql_type: str) -> str:
    """How MariaDB's information_schema.COLUMN_TYPE spells a contract type."""
    widths = {
        "BIGINT UNSIGNED": "bigint(20) unsigned",
        "BIGINT": "bigint(20)",
        "INT UNSIGNED": "int(10) unsigned",
        "INT": "int(11)",
        "SMALLINT UNSIGNED": "smallint(5) unsigned",
        "SMALLINT": "smallint(6)",
        "TINYINT UNSIGNED": "tinyint(3) unsigned",
        "TINYINT(1)": "tinyint(1)",
    }
    if mysql_type in widths:
        return widths[mysql_type]
    assert mysql_type.split("(", maxsplit=1)[0] in (
        "DECIMAL",
        "DATETIME",
        "DATE",
        "CHAR",
        "VARCHAR",
        "TEXT",
    ), f"teach this test MariaDB's spelling of {mysql_type}"
    return mysql_type.lower()


def _mysql8_spelling(mysql_type: str) -> str:
    """MySQL 8 drops integer display widths (except tinyint(1)) and keeps the rest lower-case."""
    return mysql_type.lower()


def mariadb_source(table: Table) -> dict[str, SourceColumn]:
    return {
        c.name: SourceColumn(c.name, _mariadb_spelling(c.mysql_type), c.nullable)
        for c in table.columns
    }


def test_mariadb_spellings_cover_every_type_of_the_contract() -> None:
    spelled = {c.mysql_type: _mariadb_spelling(c.mysql_type) for t in TABLES for c in t.columns}
    # The spellings the brief names all occur, so the no-drift test below exercises them.
    for expected in ("bigint(20) unsigned", "int(10) unsigned", "smallint(5) unsigned",
                     "tinyint(1)", "decimal(15,4)", "datetime(6)", "char(14)", "text"):  # fmt: skip
        assert expected in spelled.values()


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
@pytest.mark.parametrize("server", ["mariadb", "mysql8"])
def test_schema_as_described_passes(table: Table, server: str) -> None:
    source = (
        mariadb_source(table)
        if server == "mariadb"
        else {
            c.name: SourceColumn(c.name, _mysql8_spelling(c.mysql_type), c.nullable)
            for c in table.columns
        }
    )
    verdict = schema(table, [table.arrow_schema, table.arrow_schema], source)
    assert verdict.check == SCHEMA
    assert verdict.passed, verdict.measured
    assert verdict.metadata["differences"] == 0
    assert verdict.metadata["source_checked"] == "yes"
    assert "differing_columns" not in verdict.metadata


@pytest.mark.parametrize(
    ("spelled", "contract"),
    [
        ("bigint(20) unsigned", "BIGINT UNSIGNED"),
        ("BIGINT  UNSIGNED", "bigint unsigned"),
        ("int(10) unsigned", "INT UNSIGNED"),
        ("smallint(5) unsigned", "SMALLINT UNSIGNED"),
        ("tinyint(1)", "TINYINT(1)"),
        ("decimal(15,4)", "DECIMAL(15,4)"),
        ("datetime(6)", "DATETIME(6)"),
        ("char(14)", "CHAR(14)"),
        ("text", "TEXT"),
    ],
)
def test_normalize_mysql_type_equates_spellings(spelled: str, contract: str) -> None:
    assert normalize_mysql_type(spelled) == normalize_mysql_type(contract)


@pytest.mark.parametrize(
    ("spelled", "contract"),
    [
        ("varchar(20)", "VARCHAR(14)"),
        ("bigint(20)", "BIGINT UNSIGNED"),
        ("int(10) unsigned", "BIGINT UNSIGNED"),
        ("decimal(15,2)", "DECIMAL(15,4)"),
        ("datetime", "DATETIME(6)"),
        ("char(15)", "CHAR(14)"),
        ("mediumtext", "TEXT"),
    ],
)
def test_normalize_mysql_type_keeps_real_differences(spelled: str, contract: str) -> None:
    assert normalize_mysql_type(spelled) != normalize_mysql_type(contract)


def _assert_names(verdict: Verdict, column: str, *, others_clean: Table | None = None) -> None:
    assert verdict.outcome == "ERROR"
    assert column in verdict.measured
    differing = str(verdict.metadata["differing_columns"])
    assert column in differing
    assert verdict.metadata["differences"] == 1, differing
    if others_clean is not None:
        named = {part.split(":")[0].strip() for part in differing.split(";")}
        assert named == {column}


def _without(schema_: pa.Schema, name: str) -> pa.Schema:
    return schema_.remove(schema_.get_field_index(name))


def _with_field(schema_: pa.Schema, name: str, field: pa.Field) -> pa.Schema:
    return schema_.set(schema_.get_field_index(name), field)


EXPECTED = FISCAL_LINES.arrow_schema
WRITTEN_DRIFT = {
    "missing": ("EAN", _without(EXPECTED, "EAN")),
    "extra": ("Loja", EXPECTED.append(pa.field("Loja", pa.string()))),
    "retyped-int": ("id", _with_field(EXPECTED, "id", pa.field("id", pa.int32(), nullable=False))),
    "retyped-decimal": (
        "Val_ICMS",
        _with_field(EXPECTED, "Val_ICMS", pa.field("Val_ICMS", pa.decimal128(15, 4))),
    ),
    "retyped-timestamp": (
        "Data_Processamento",
        _with_field(
            EXPECTED,
            "Data_Processamento",
            pa.field("Data_Processamento", pa.timestamp("us", "UTC"), nullable=False),
        ),
    ),
    "nullable": ("id", _with_field(EXPECTED, "id", EXPECTED.field("id").with_nullable(True))),
    "not-null": (
        "CNPJ",
        _with_field(EXPECTED, "CNPJ", EXPECTED.field("CNPJ").with_nullable(False)),
    ),
}


@pytest.mark.parametrize("case", WRITTEN_DRIFT, ids=str)
def test_schema_names_the_column_a_bronze_file_differs_in(case: str) -> None:
    column, written = WRITTEN_DRIFT[case]
    # The second file is the odd one: every file is compared, not just the first.
    verdict = schema(FISCAL_LINES, [EXPECTED, written], mariadb_source(FISCAL_LINES))
    _assert_names(verdict, column, others_clean=FISCAL_LINES)
    assert "file 2" in verdict.measured


def test_schema_bronze_half_counts_when_the_source_cannot_be_asked() -> None:
    verdict = schema(FISCAL_LINES, [_without(EXPECTED, "CNPJ")], None)
    _assert_names(verdict, "CNPJ")
    assert verdict.metadata["source_checked"] == "no"
    assert schema(FISCAL_LINES, [EXPECTED], None).passed


def test_schema_notices_columns_out_of_order() -> None:
    shuffled = pa.schema([EXPECTED.field(n) for n in reversed(EXPECTED.names)])
    verdict = schema(FISCAL_LINES, [shuffled], None)
    assert verdict.outcome == "ERROR"
    assert "order" in verdict.measured


def _source_drift(case: str) -> tuple[str, dict[str, SourceColumn]]:
    source = mariadb_source(FISCAL_LINES)
    if case == "added":
        source["Loja"] = SourceColumn("Loja", "varchar(40)", True)
        return "Loja", source
    if case == "dropped":
        del source["Numero_NF"]
        return "Numero_NF", source
    if case == "retyped":
        source["EAN"] = SourceColumn("EAN", "varchar(20)", True)
        return "EAN", source
    if case == "retyped-unsigned":
        source["id"] = SourceColumn("id", "bigint(20)", False)
        return "id", source
    if case == "nullable":
        source["Data"] = SourceColumn("Data", "date", True)
        return "Data", source
    assert case == "not-null"
    source["CNPJ"] = SourceColumn("CNPJ", "char(14)", False)
    return "CNPJ", source


@pytest.mark.parametrize(
    "case", ["added", "dropped", "retyped", "retyped-unsigned", "nullable", "not-null"]
)
def test_schema_names_the_column_that_drifted_at_the_source(case: str) -> None:
    column, source = _source_drift(case)
    verdict = schema(FISCAL_LINES, [EXPECTED], source)
    _assert_names(verdict, column, others_clean=FISCAL_LINES)
    assert "source" in verdict.measured


def test_schema_differences_lists_each_problem_once() -> None:
    source = mariadb_source(FISCAL_LINES)
    source["EAN"] = SourceColumn("EAN", "varchar(20)", True)
    del source["UF"]
    problems = schema_differences(FISCAL_LINES, [_without(EXPECTED, "CNPJ")], source)
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == ["CNPJ", "UF", "EAN"]
    assert "varchar(20)" in problems[2] and "VARCHAR(14)" in problems[2]


# --------------------------------------------------------------------------- unique_key


def test_unique_key_unique_passes() -> None:
    verdict = unique_key(FISCAL_LINES, pa.array([3, 1, 2], pa.uint64()))
    assert verdict.check == UNIQUE_KEY
    assert verdict.passed
    assert verdict.metadata["duplicates"] == 0
    assert verdict.metadata["distinct"] == 3
    assert "duplicate_sample" not in verdict.metadata


def test_unique_key_counts_every_extra_occurrence() -> None:
    keys = pa.chunked_array([pa.array([1, 1], pa.uint64()), pa.array([1, 2, 3, 3], pa.uint64())])
    verdict = unique_key(FISCAL_LINES, keys)
    assert verdict.outcome == "ERROR"
    assert verdict.metadata["duplicates"] == 3
    assert verdict.metadata["distinct"] == 3
    assert verdict.metadata["rows"] == 6
    assert set(str(verdict.metadata["duplicate_sample"]).split(", ")) == {"1", "3"}
    assert "3 duplicate id" in verdict.measured


def test_unique_key_on_a_text_key() -> None:
    verdict = unique_key(PRODUCTS, pa.array(["789", "0789", "789"]))
    assert verdict.metadata["duplicates"] == 1
    assert verdict.metadata["duplicate_sample"] == "789"
    assert "EAN" in verdict.measured


def test_unique_key_sample_is_at_most_five_values() -> None:
    keys = pa.array([n // 2 for n in range(40)], pa.uint64())
    verdict = unique_key(FISCAL_LINES, keys)
    assert verdict.metadata["duplicates"] == 20
    assert len(str(verdict.metadata["duplicate_sample"]).split(", ")) == 5


def test_unique_key_null_keys_fail() -> None:
    verdict = unique_key(FISCAL_LINES, pa.array([1, None, 2], pa.uint64()))
    assert verdict.outcome == "ERROR"
    assert verdict.metadata["null_keys"] == 1
    assert verdict.metadata["duplicates"] == 0
    assert "1 NULL keys" in verdict.measured


def test_unique_key_does_not_count_null_keys_as_a_duplicated_value() -> None:
    # NULL is no value (SQL's UNIQUE admits any number of them); NULL keys are reported as
    # null_keys, and must not also inflate duplicates or appear as "None" in the sample.
    verdict = unique_key(FISCAL_LINES, pa.array([None, None, None, 1], pa.uint64()))
    assert verdict.outcome == "ERROR"
    assert verdict.metadata["null_keys"] == 3
    assert verdict.metadata["duplicates"] == 0, verdict.measured
    assert "duplicate_sample" not in verdict.metadata


def test_unique_key_of_an_empty_partition_passes() -> None:
    verdict = unique_key(FISCAL_LINES, pa.chunked_array([], pa.uint64()))
    assert verdict.passed
    assert verdict.metadata["rows"] == 0


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 20), max_size=200),
    cuts=st.lists(st.integers(0, 200), max_size=4),
)
def test_unique_key_duplicates_equal_the_set_computation(
    values: list[int], cuts: list[int]
) -> None:
    # Split into chunks, as a partition of several files and row groups is read.
    bounds = sorted({0, len(values), *(c for c in cuts if c <= len(values))})
    chunks = [pa.array(values[a:b], pa.uint64()) for a, b in itertools.pairwise(bounds)]
    keys = pa.chunked_array(chunks, pa.uint64())
    verdict = unique_key(FISCAL_LINES, keys)
    assert verdict.metadata["duplicates"] == len(values) - len(set(values))
    assert verdict.metadata["distinct"] == len(set(values))
    assert verdict.passed == (len(values) == len(set(values)))
    repeated = {v for v in values if values.count(v) > 1}
    sample = verdict.metadata.get("duplicate_sample")
    assert (sample is None) == (not repeated)
    if sample is not None:
        assert {int(v) for v in str(sample).split(", ")} <= repeated


def counted_verdict(table: Table, values: Sequence[Any]) -> Verdict:
    """The reference: the unique_key verdict from a Counter of the values, as the check has
    always worded it (the sample is the smallest five repeated values, ascending)."""
    counts = Counter(v for v in values if v is not None)
    duplicates = sum(n - 1 for n in counts.values())
    nulls = sum(v is None for v in values)
    sample = [str(v) for v in sorted(v for v, n in counts.items() if n > 1)[:5]]
    metadata: dict[str, int | float | str] = {
        "rows": len(values),
        "distinct": len(counts),
        "duplicates": duplicates,
    }
    if sample:
        metadata["duplicate_sample"] = ", ".join(sample)
    if nulls:
        metadata["null_keys"] = nulls
    measured = (
        f"{duplicates:,} duplicate {table.key} value(s) among {len(values):,} rows"
        + (f" (e.g. {', '.join(sample)})" if sample else "")
        + (f"; {nulls:,} NULL keys" if nulls else "")
    )
    return Verdict(
        UNIQUE_KEY,
        duplicates == 0 and nulls == 0,
        "ERROR",
        measured,
        f"ERROR on any repeated or NULL {table.key}",
        metadata,
    )


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    table=st.sampled_from([FISCAL_LINES, PRODUCTS]),
    cuts=st.lists(st.integers(0, 150), max_size=4),
)
def test_unique_key_verdict_equals_the_counter_verdict(
    data: st.DataObject, table: Table, cuts: list[int]
) -> None:
    if table is FISCAL_LINES:
        value: st.SearchStrategy[object] = st.integers(0, 12) | st.integers(0, 2**64 - 1)
    else:
        value = st.sampled_from(["789", "0789", "7891", "", "É"]) | st.text(max_size=4)
    values = data.draw(st.lists(value | st.none(), max_size=150), label="values")
    key_type = table.arrow_schema.field(table.key).type
    bounds = sorted({0, len(values), *(c for c in cuts if c <= len(values))})
    chunks = [pa.array(values[a:b], key_type) for a, b in itertools.pairwise(bounds)]
    assert unique_key(table, pa.chunked_array(chunks, key_type)) == counted_verdict(table, values)


# --------------------------------------------------------------------------- freshness

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "outcome"),
    [
        (timedelta(0), "PASS"),
        (timedelta(hours=19.99), "PASS"),
        (timedelta(hours=20) - timedelta(microseconds=1), "PASS"),
        (timedelta(hours=20), "WARN"),
        (timedelta(hours=21), "WARN"),
        (timedelta(hours=25) - timedelta(microseconds=1), "WARN"),
        (timedelta(hours=25), "ERROR"),
        (timedelta(hours=26), "ERROR"),
    ],
)
def test_freshness_edges(age: timedelta, outcome: str) -> None:
    verdict = freshness(DEFAULTS, NOW, NOW - age, "2026-11-20")
    assert verdict.check == FRESHNESS
    assert verdict.outcome == outcome
    assert verdict.metadata["age_hours"] == round(age.total_seconds() / 3600, 2)
    assert verdict.metadata["newest_partition"] == "2026-11-20"
    assert "2026-11-20" in verdict.measured


def test_freshness_follows_the_table_thresholds() -> None:
    tight = Thresholds(freshness_warn=timedelta(hours=1), freshness_fail=timedelta(hours=2))
    assert freshness(tight, NOW, NOW - timedelta(hours=1), "d").outcome == "WARN"
    assert freshness(tight, NOW, NOW - timedelta(hours=2), "d").outcome == "ERROR"


def test_freshness_never_landed_is_an_error() -> None:
    verdict = freshness(DEFAULTS, NOW, None, None)
    assert verdict.outcome == "ERROR"
    assert "no partition" in verdict.measured
