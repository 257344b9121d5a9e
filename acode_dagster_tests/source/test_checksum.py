"""Window checksums: the pure parts exhaustively, the SQL on a real MariaDB primary and replica.

Every difference is made on the replica directly (as root, past ``read_only``), which is what
a replica that drifted looks like, and undone by the same test, so the private pair stays one
copy of the primary throughout.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acode_dagster.demo.loader import load_days
from acode_dagster.errors import SourceError
from acode_dagster.localstack import LocalStack
from acode_dagster.mysql import MySQLEndpoint, count_rows
from acode_dagster.source import checksum
from acode_dagster.source.checksum import (
    CHECKSUM_SLICES,
    Comparison,
    Reconciliation,
    SpanSum,
    Window,
    WindowSum,
    check_windows,
    compare,
    judge,
    lag_wait_s,
    reconcile,
    window_sum,
    window_sums,
)
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    PRODUCTS,
    SOURCE_TIMEZONE,
    TABLES,
    Column,
    Table,
    day_window,
)
from acode_dagster_tests.support.tcp_proxy import StallingProxy

DAY = date(2026, 6, 15)
NEXT = DAY + timedelta(days=1)
PROPERTY = settings(max_examples=200, deadline=None)

# ---------------------------------------------------------------------- the SQL, as text

TINY = Table(
    name="t",
    description="",
    columns=(
        Column("id", "BIGINT UNSIGNED", False),
        Column("at", "DATETIME(6)", False),
        Column("name", "VARCHAR(10)", True),
        Column("uf", "CHAR(2)", True),
    ),
    key="id",
    partition_column="at",
    critical_columns=(),
    expected_daily_rows=1,
    demo_daily_rows=1,
)


def test_the_row_is_concatenated_as_pt_table_checksum_does_with_a_null_bitmap() -> None:
    assert checksum.row_checksum_sql(TINY) == (
        "CONCAT_WS('#', `id`, `at`, `name`, `uf`, CONCAT(ISNULL(`name`), ISNULL(`uf`)))"
    )
    for table in TABLES:
        sql = checksum.row_checksum_sql(table)
        for column in table.columns:
            assert f"`{column.name}`," in sql or f"`{column.name}`)" in sql
            assert (f"ISNULL(`{column.name}`)" in sql) == column.nullable


def test_the_window_query_is_count_and_the_xor_of_64_bits_of_md5() -> None:
    assert checksum.checksum_sql(TINY, DAY) == (
        "SELECT COUNT(*) AS cnt, COALESCE(LOWER(LPAD(CONV(BIT_XOR(CAST(CONV(SUBSTRING(MD5("
        "CONCAT_WS('#', `id`, `at`, `name`, `uf`, CONCAT(ISNULL(`name`), ISNULL(`uf`)))), 1, 16)"
        ", 16, 10) AS UNSIGNED)), 10, 16), 16, '0')), 0) AS crc FROM `t`"
        " WHERE `at` >= '2026-06-15 00:00:00' AND `at` < '2026-06-16 00:00:00'"
    )
    # The whole window is the replicator's own: the same WHERE as its extraction query.
    for table in TABLES:
        assert checksum.checksum_sql(table, DAY).endswith(f"`{table.name}`{table.where_sql(DAY)}")
    assert "WHERE" not in checksum.checksum_sql(PRODUCTS, DAY)
    assert "WHERE" not in checksum.checksum_sql(PRODUCTS, None)


def test_a_span_must_lie_in_its_day_and_a_fact_table_needs_a_day() -> None:
    start, end = day_window(DAY)
    sql = checksum.checksum_sql(TINY, DAY, (start + timedelta(hours=1), end))
    assert sql.endswith(
        " WHERE `at` >= '2026-06-15 01:00:00.000000' AND `at` < '2026-06-16 00:00:00.000000'"
    )
    for bad in [(start - timedelta(microseconds=1), end), (start, end + timedelta(seconds=1))]:
        with pytest.raises(ValueError, match="not a slice"):
            checksum.checksum_sql(TINY, DAY, bad)
    with pytest.raises(ValueError, match="a day is needed"):
        checksum.checksum_sql(FISCAL_LINES, None)
    with pytest.raises(ValueError, match="a day is needed"):
        checksum.window_spans(FISCAL_LINES, None)
    with pytest.raises(ValueError, match="at least 1"):
        checksum.window_spans(FISCAL_LINES, DAY, 0)


@given(st.dates(date(2000, 1, 1), date(2099, 12, 31)), st.integers(1, 96))
@PROPERTY
def test_spans_cover_the_day_exactly_edge_to_edge(day: date, slices: int) -> None:
    spans = checksum.window_spans(FISCAL_LINES, day, slices)
    assert len(spans) == slices
    start, end = day_window(day)
    edges = [s for s in spans if s is not None]
    assert edges[0][0] == start and edges[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(edges))
    assert checksum.window_spans(PRODUCTS, day, slices) == [None]


def test_a_statement_is_bounded_on_mariadb_by_the_read_timeout() -> None:
    endpoint = MySQLEndpoint("h", 1, "u", "d", read_timeout_s=2.5)
    assert checksum.bounded(endpoint, "SELECT 1") == (
        "/*M!100108 SET STATEMENT max_statement_time=3 FOR */ SELECT 1"
    )


# ---------------------------------------------------------------------- sums and decisions


def _sum(
    rows: int, crc: int, *, table: str = FISCAL_LINES.name, day: date | None = DAY
) -> WindowSum:
    return WindowSum(table, day, "mysql://x", (SpanSum(None, rows, crc),))


def _spans(values: list[tuple[int, int]], day: date = DAY) -> WindowSum:
    spans = checksum.window_spans(FISCAL_LINES, day, len(values))
    return WindowSum(
        FISCAL_LINES.name,
        day,
        "mysql://x",
        tuple(SpanSum(s, r, c) for s, (r, c) in zip(spans, values, strict=True)),
    )


sums = st.lists(
    st.tuples(st.integers(0, 10**9), st.integers(0, 2**64 - 1)), min_size=1, max_size=30
)


@given(sums)
@PROPERTY
def test_a_window_is_the_sum_and_xor_of_its_spans_and_survives_json(
    values: list[tuple[int, int]],
) -> None:
    window = _spans(values)
    assert window.rows == sum(r for r, _ in values)
    xor = 0
    for _, c in values:
        xor ^= c
    assert window.checksum == xor and window.hex == f"{xor:016x}" and len(window.hex) == 16
    assert WindowSum.from_json(window.to_json()) == window
    assert compare(window, window).equal


@given(sums, st.data())
@PROPERTY
def test_any_change_of_one_span_is_a_difference_located_in_that_span(
    values: list[tuple[int, int]], data: st.DataObject
) -> None:
    n = data.draw(st.integers(0, len(values) - 1))
    rows, crc = values[n]
    changed = data.draw(
        st.tuples(st.integers(0, 10**9), st.integers(0, 2**64 - 1)).filter(
            lambda v: v != (rows, crc)
        )
    )
    other = list(values)
    other[n] = changed
    comparison = compare(_spans(values), _spans(other))
    assert not comparison.equal
    assert comparison.differing_spans == (checksum.window_spans(FISCAL_LINES, DAY, len(values))[n],)
    assert comparison.outcome == ("rows_differ" if changed[0] != rows else "checksum_differs")


def test_compare_names_where_and_refuses_different_windows() -> None:
    hours = [(10, 1)] * CHECKSUM_SLICES
    moved = list(hours)
    moved[10] = (10, 2)
    comparison = compare(_spans(hours), _spans(moved))
    assert comparison.where() == "10:00-11:00"
    assert "differs in 10:00-11:00" in comparison.describe()
    assert f"{FISCAL_LINES.name} {DAY}" in comparison.describe()
    last = list(hours)
    last[-1] = (11, 1)
    assert compare(_spans(hours), _spans(last)).where() == "23:00-24:00"
    every = [(n, n) for n in range(CHECKSUM_SLICES)]
    assert compare(_spans(hours), _spans(every)).where().endswith("and 18 more")
    assert (
        compare(_sum(5, 1), _sum(5, 1))
        .describe()
        .endswith("equal, 5 rows (checksum 0000000000000001)")
    )
    with pytest.raises(ValueError, match="cannot compare"):
        compare(_sum(1, 1), _sum(1, 1, day=NEXT))
    with pytest.raises(ValueError, match="cannot compare"):
        compare(_sum(1, 1), _sum(1, 1, table=NFE_COMPLEMENTS.name))
    with pytest.raises(ValueError, match="cut differently"):
        compare(_sum(1, 1), _spans([(1, 1)]))


def test_parse_checksum_takes_16_hex_digits_or_a_bare_zero() -> None:
    assert checksum.parse_checksum("0") == 0
    assert checksum.parse_checksum("00000000000000ff") == 255
    assert checksum.parse_checksum("FFFFFFFFFFFFFFFF") == 2**64 - 1
    for bad in ["", "g", "1" * 17, None, "-1"]:
        with pytest.raises(ValueError, match="64-bit checksum"):
            checksum.parse_checksum(bad)


@pytest.mark.parametrize("equal", [True, False])
@pytest.mark.parametrize("lag", [None, 0.0, 5.0, 100_000.0])
@pytest.mark.parametrize("age", [None, 10.0, 50_000.0])
def test_judge_blames_lag_only_for_a_window_the_lag_reaches(
    equal: bool, lag: float | None, age: float | None
) -> None:
    comparison = compare(_sum(1, 1), _sum(1, 1 if equal else 2))
    verdict = judge(comparison, lag, age)
    if equal:
        expected = "equal"
    elif lag is not None and lag > 0 and (age is None or lag >= age):
        expected = "lagging"
    else:
        expected = "differs"
    assert verdict == expected
    # The cases spelled out: a window that closed hours ago is not explained by seconds of lag.
    if not equal and lag == 5.0:
        assert verdict == ("lagging" if age is None else "differs")
    if not equal and lag is None:
        assert verdict == "differs"


@given(st.one_of(st.none(), st.floats(-10, 10**6)), st.floats(0, 10**4))
@PROPERTY
def test_the_wait_for_a_lagging_replica_is_bounded_and_only_for_a_known_lag(
    lag: float | None, budget: float
) -> None:
    wait = lag_wait_s(lag, budget)
    assert 0 <= wait <= budget
    if lag is None or lag <= 0:
        assert wait == 0
    elif budget > 0:
        assert wait == min(lag + 1, budget)


def test_a_window_is_as_old_as_the_time_since_its_local_day_ended() -> None:
    ended = datetime(2026, 6, 16, tzinfo=SOURCE_TIMEZONE)
    assert checksum.window_age_s(FISCAL_LINES, DAY, ended + timedelta(hours=5)) == 5 * 3600
    assert checksum.window_age_s(FISCAL_LINES, DAY, ended.astimezone(UTC)) == 0
    assert checksum.window_age_s(PRODUCTS, DAY, ended) is None


def test_the_days_checked_are_the_complete_ones_before_today() -> None:
    today = date(2026, 6, 20)
    assert checksum.complete_days_before(today, 3) == [
        date(2026, 6, 17),
        date(2026, 6, 18),
        DAY + timedelta(days=4),
    ]
    assert checksum.complete_days_before(today, 3, first=date(2026, 6, 19)) == [date(2026, 6, 19)]
    windows = checksum.replica_windows(TABLES, [DAY, NEXT])
    assert [(w.table.name, w.day) for w in windows] == [
        (FISCAL_LINES.name, DAY),
        (FISCAL_LINES.name, NEXT),
        (PRODUCTS.name, None),
        (NFE_COMPLEMENTS.name, DAY),
        (NFE_COMPLEMENTS.name, NEXT),
    ]
    assert windows[2].label == "snapshot (now)"


@pytest.mark.parametrize(
    ("table", "published", "primary", "replica", "resync", "says"),
    [
        (FISCAL_LINES, 5, (5, 1), (5, 1), False, "verified: 5 rows published"),
        (FISCAL_LINES, 4, (5, 1), (5, 1), True, "published 4 rows read from the replica"),
        (FISCAL_LINES, 5, (5, 1), (5, 2), True, "the replica's window differs"),
        (FISCAL_LINES, 4, (5, 1), (4, 2), True, "published 4 rows"),
        (FISCAL_LINES, None, (5, 1), (5, 1), True, "published row count is unknown"),
        (FISCAL_LINES, 5, (5, 1), None, True, "replica could not be read"),
        (PRODUCTS, 7, (5, 1), (5, 1), False, "catalogue equals the primary's"),
        (PRODUCTS, None, (5, 1), (5, 1), False, "catalogue equals"),
        (PRODUCTS, 5, (5, 1), (6, 1), True, "the replica's window differs"),
        (PRODUCTS, 5, (5, 1), None, True, "could not be read"),
    ],
)
def test_reconcile_resyncs_whatever_the_primary_does_not_vouch_for(  # noqa: PLR0917
    table: Table,
    published: int | None,
    primary: tuple[int, int],
    replica: tuple[int, int] | None,
    resync: bool,
    says: str,
) -> None:
    on_primary = _sum(*primary, table=table.name)
    on_replica = None if replica is None else _sum(*replica, table=table.name)
    verdict = reconcile(table, DAY, published, on_primary, on_replica)
    assert verdict.resync is resync and says in verdict.reason
    assert Reconciliation.from_json(verdict.to_json()) == verdict


# ---------------------------------------------------------------------- the SQL on real servers

ACCENTED = "Drogaria São João 💊"
TWINS = (8_000_000_001, 8_000_000_002)
"""Two rows of equal length, edited alike at the same offset: what a CRC32 XOR cannot see."""


@dataclass(frozen=True)
class Pair:
    stack: LocalStack
    last: int
    """DAY's last microsecond."""
    first_next: int
    """NEXT's first microsecond (midnight)."""
    null: int
    empty: int
    accented: int

    def primary(self) -> MySQLEndpoint:
        return self.stack.endpoint("primary")

    def backup(self) -> MySQLEndpoint:
        return self.stack.endpoint("backup")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A private pair holding DAY and NEXT with edge rows, all written on the primary and
    replicated: DAY's last microsecond and NEXT's first, a NULL and an empty string, accents
    and an emoji, and two twin rows."""
    stack = LocalStack(tmp_path_factory.mktemp("checksum-pair"))
    try:
        stack.start()
        admin = stack.endpoint("primary", admin=True)
        rows = {FISCAL_LINES.name: 240, NFE_COMPLEMENTS.name: 60, PRODUCTS.name: 50}
        load_days(admin, [DAY, NEXT], rows=rows)
        start, end = day_window(DAY)
        last, null, empty, accented = _ids(admin, DAY, 4)
        (first_next,) = _ids(admin, NEXT, 1)
        table = FISCAL_LINES.name
        with _cursor(admin) as cursor:
            for sql, args in [
                (
                    f"UPDATE `{table}` SET `Data_Processamento` = %s WHERE id = %s",
                    (end - MICRO, last),
                ),
                (
                    f"UPDATE `{table}` SET `Data_Processamento` = %s WHERE id = %s",
                    (end, first_next),
                ),
                (f"UPDATE `{table}` SET `Razao_Social` = NULL WHERE id = %s", (null,)),
                (f"UPDATE `{table}` SET `Razao_Social` = '' WHERE id = %s", (empty,)),
                (f"UPDATE `{table}` SET `Razao_Social` = %s WHERE id = %s", (ACCENTED, accented)),
            ]:
                cursor.execute(sql, args)
            for n, row_id in enumerate(TWINS, start=1):
                cursor.execute(
                    f"INSERT INTO `{table}` (id, `Data`, `Data_Processamento`, `UF`) "
                    "VALUES (%s, %s, %s, 'SP')",
                    (row_id, DAY, start + timedelta(hours=10, microseconds=n)),
                )
        stack.wait_replica_caught_up()
        yield Pair(stack, last, first_next, null, empty, accented)
    finally:
        stack.destroy()


MICRO = timedelta(microseconds=1)


@contextmanager
def _cursor(endpoint: MySQLEndpoint) -> Iterator[Any]:
    connection = endpoint.connect()
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def _ids(endpoint: MySQLEndpoint, day: date, n: int) -> list[int]:
    start, end = day_window(day)
    with _cursor(endpoint) as cursor:
        cursor.execute(
            f"SELECT id FROM `{FISCAL_LINES.name}` WHERE `Data_Processamento` >= %s "
            "AND `Data_Processamento` < %s ORDER BY id LIMIT %s",
            (start, end, n),
        )
        return [int(r[0]) for r in cursor.fetchall()]


def _value(endpoint: MySQLEndpoint, sql: str, args: tuple[Any, ...] = ()) -> Any:
    with _cursor(endpoint) as cursor:
        cursor.execute(sql, args)
        row = cursor.fetchone()
        return row[0] if row else None


@contextmanager
def drift(
    pair: Pair, table: Table, keys: Sequence[Any], *statements: tuple[str, tuple[Any, ...]]
) -> Iterator[None]:
    """``statements`` run on the replica only (as root, past read_only); afterwards the rows of
    ``keys`` on the replica are the primary's again (deleted where the primary has none)."""
    with _cursor(pair.stack.endpoint("backup", admin=True)) as cursor:
        for sql, args in statements:
            cursor.execute(sql, args)
    try:
        yield
    finally:
        _copy_rows(pair, table, keys)


def _copy_rows(pair: Pair, table: Table, keys: Sequence[Any]) -> None:
    columns = ", ".join(f"`{c}`" for c in table.column_names)
    marks = ", ".join(["%s"] * len(keys))
    with _cursor(pair.primary()) as cursor:
        cursor.execute(
            f"SELECT {columns} FROM `{table.name}` WHERE `{table.key}` IN ({marks})", tuple(keys)
        )
        rows = cursor.fetchall()
    with _cursor(pair.stack.endpoint("backup", admin=True)) as cursor:
        cursor.execute(f"DELETE FROM `{table.name}` WHERE `{table.key}` IN ({marks})", tuple(keys))
        values = ", ".join(["%s"] * len(table.column_names))
        cursor.executemany(f"INSERT INTO `{table.name}` ({columns}) VALUES ({values})", rows)


def _sums(pair: Pair, table: Table = FISCAL_LINES, day: date | None = DAY) -> Comparison:
    return compare(*window_sums(pair.primary(), pair.backup(), table, day))


def test_equal_data_sums_equal_on_both_servers_over_exactly_the_synced_window(
    pair: Pair,
) -> None:
    primary = pair.primary()
    for table in TABLES:
        for day in (DAY, NEXT):
            comparison = _sums(pair, table, day)
            assert comparison.equal, comparison.describe()
            assert comparison.primary.rows == count_rows(primary, table, day)
            # One statement for the whole window says what the day's spans say together.
            whole = window_sum(primary, table, day, slices=1)
            assert (whole.rows, whole.hex) == (comparison.primary.rows, comparison.primary.hex)
    assert _sums(pair, PRODUCTS, None).equal
    assert window_sum(primary, FISCAL_LINES, DAY).hex != window_sum(primary, FISCAL_LINES, NEXT).hex
    assert _sums(pair).primary.server == primary.display


def test_a_row_changed_on_the_replica_only_is_found_in_its_hour(pair: Pair) -> None:
    row_id = _ids(pair.primary(), DAY, 6)[5]
    hour = int(
        _value(
            pair.primary(),
            f"SELECT HOUR(`Data_Processamento`) FROM `{FISCAL_LINES.name}` WHERE id = %s",
            (row_id,),
        )
    )
    table = FISCAL_LINES.name
    change = (f"UPDATE `{table}` SET `Val_Prod` = `Val_Prod` + 0.01 WHERE id = %s", (row_id,))
    with drift(pair, FISCAL_LINES, [row_id], change):
        comparison = _sums(pair)
        assert comparison.outcome == "checksum_differs"
        assert comparison.primary.rows == comparison.replica.rows
        assert comparison.where() == checksum.span_label(
            checksum.window_spans(FISCAL_LINES, DAY)[hour]
        )
        assert _sums(pair, day=NEXT).equal
    assert _sums(pair).equal


@pytest.mark.parametrize(("row", "becomes"), [("null", "''"), ("empty", "NULL")])
def test_null_and_empty_string_differ(pair: Pair, row: str, becomes: str) -> None:
    row_id: int = getattr(pair, row)
    table = FISCAL_LINES.name
    change = (f"UPDATE `{table}` SET `Razao_Social` = {becomes} WHERE id = %s", (row_id,))
    with drift(pair, FISCAL_LINES, [row_id], change):
        assert _sums(pair).outcome == "checksum_differs"
    assert _sums(pair).equal


@pytest.mark.parametrize(
    "replica_text",
    ["Drogaria Sao Joao 💊", "Drogaria São João 💉", "drogaria são joão 💊", "Drogaria São João"],
)
def test_accents_emoji_and_case_change_the_checksum(pair: Pair, replica_text: str) -> None:
    table = FISCAL_LINES.name
    read = f"SELECT `Razao_Social` FROM `{table}` WHERE id = %s"
    assert _value(pair.backup(), read, (pair.accented,)) == ACCENTED  # utf8mb4 replicated whole
    change = (
        f"UPDATE `{table}` SET `Razao_Social` = %s WHERE id = %s",
        (replica_text, pair.accented),
    )
    with drift(pair, FISCAL_LINES, [pair.accented], change):
        assert _sums(pair).outcome == "checksum_differs"
    assert _sums(pair).equal


def test_an_extra_row_on_the_replica_changes_the_count(pair: Pair) -> None:
    start, _ = day_window(DAY)
    extra = 9_000_000_001
    insert = (
        f"INSERT INTO `{FISCAL_LINES.name}` (id, `Data`, `Data_Processamento`) VALUES (%s, %s, %s)",
        (extra, DAY, start + timedelta(hours=3)),
    )
    with drift(pair, FISCAL_LINES, [extra], insert):
        comparison = _sums(pair)
        assert comparison.outcome == "rows_differ"
        assert comparison.replica.rows == comparison.primary.rows + 1
        assert comparison.where() == "03:00-04:00"
    assert _sums(pair).equal


def test_the_same_edit_on_two_rows_does_not_cancel_out_as_it_does_in_crc32(pair: Pair) -> None:
    table = FISCAL_LINES.name
    crc32 = (
        f"SELECT LOWER(CONV(BIT_XOR(CAST(CRC32({checksum.row_checksum_sql(FISCAL_LINES)}) "
        f"AS UNSIGNED)), 10, 16)) FROM `{table}` WHERE id IN {TWINS}"
    )
    change = (f"UPDATE `{table}` SET `UF` = 'RJ' WHERE id IN {TWINS}", ())
    with drift(pair, FISCAL_LINES, TWINS, change):
        # pt-table-checksum's default sum is blind to it ...
        assert _value(pair.backup(), crc32) == _value(pair.primary(), crc32)
        # ... this one is not.
        assert _sums(pair).outcome == "checksum_differs"
    assert _sums(pair).equal


@pytest.mark.parametrize(
    ("row", "day", "where"), [("last", DAY, "23:00-24:00"), ("first_next", NEXT, "00:00-01:00")]
)
def test_the_day_ends_at_midnight_to_the_microsecond(
    pair: Pair, row: str, day: date, where: str
) -> None:
    row_id: int = getattr(pair, row)
    change = (f"UPDATE `{FISCAL_LINES.name}` SET `Val_ICMS` = 123456.78 WHERE id = %s", (row_id,))
    with drift(pair, FISCAL_LINES, [row_id], change):
        assert _sums(pair, day=day).where() == where
        assert _sums(pair, day=NEXT if day == DAY else DAY).equal
    assert _sums(pair, day=day).equal


def test_a_stalled_server_fails_the_sum_within_its_read_timeout(pair: Pair) -> None:
    backup = pair.backup()
    with StallingProxy(backup.host, backup.port) as proxy:
        via = replace(backup, port=proxy.port, connect_timeout_s=5, read_timeout_s=1)
        via.connect().close()
        # The next connection logs in, then hears one byte of its first answer and no more.
        proxy.stall_after(proxy.downstream_bytes + 1)
        started = time.monotonic()
        with pytest.raises(SourceError) as error:
            window_sums(pair.primary(), via, FISCAL_LINES, DAY)
        took = time.monotonic() - started
    assert took < 5, f"took {took:.1f} s with a 1 s read timeout"
    assert error.value.transient and via.display in str(error.value)
    assert backup.password and backup.password not in str(error.value)


NOW = datetime(2026, 6, 20, 5, 30, tzinfo=SOURCE_TIMEZONE)


def test_a_difference_is_compared_again_after_the_lag_and_judged_with_it(pair: Pair) -> None:
    primary, backup = pair.primary(), pair.backup()
    windows = [Window(FISCAL_LINES, DAY), Window(PRODUCTS, None), Window(NFE_COMPLEMENTS, NEXT)]
    checks = check_windows(primary, backup, windows, wait_s=0, lag=lambda: 0.0, now=lambda: NOW)
    assert [(c.verdict, c.compared) for c in checks] == [("equal", 1)] * 3

    row_id = _ids(primary, DAY, 9)[8]
    ean = str(_value(primary, f"SELECT MIN(`EAN`) FROM `{PRODUCTS.name}`"))
    fiscal = (f"UPDATE `{FISCAL_LINES.name}` SET `CFOP` = '9999' WHERE id = %s", (row_id,))
    product = (f"UPDATE `{PRODUCTS.name}` SET `Descricao` = 'changed' WHERE `EAN` = %s", (ean,))
    with drift(pair, FISCAL_LINES, [row_id], fiscal), drift(pair, PRODUCTS, [ean], product):
        slept: list[float] = []
        checks = check_windows(
            primary,
            backup,
            windows,
            wait_s=30,
            lag=lambda: 7.0,
            now=lambda: NOW,
            sleep=slept.append,
        )
        # It waited for the lag and looked again. Seven seconds of lag explain the snapshot,
        # not a day over for more than five hours.
        assert slept == [8.0]
        assert [(c.verdict, c.compared) for c in checks] == [
            ("differs", 2),
            ("lagging", 2),
            ("equal", 1),
        ]
        assert "7 s behind" in checks[1].describe()
        assert f"{FISCAL_LINES.name} {DAY}" in checks[0].describe()

        # The replica catches up while the check waits: the second look finds them equal.
        checks = check_windows(
            primary,
            backup,
            windows[:1],
            wait_s=30,
            lag=lambda: 3.0,
            now=lambda: NOW,
            sleep=lambda _: _copy_rows(pair, FISCAL_LINES, [row_id]),
        )
        assert [(c.verdict, c.compared) for c in checks] == [("equal", 2)]

        # Replication stopped (no lag reported): nothing to wait for, nothing explained.
        checks = check_windows(
            primary,
            backup,
            windows[1:2],
            wait_s=30,
            lag=lambda: None,
            now=lambda: NOW,
            sleep=slept.append,
        )
        assert checks[0].verdict == "differs" and slept == [8.0, 0.0]
    assert _sums(pair).equal and _sums(pair, PRODUCTS, None).equal


def test_an_unreadable_server_is_reported_not_raised(pair: Pair) -> None:
    gone = MySQLEndpoint("127.0.0.1", 1, "acode", "x", "secret-pw", connect_timeout_s=1)
    checks = check_windows(
        pair.primary(), gone, [Window(FISCAL_LINES, DAY)], wait_s=0, lag=lambda: None
    )
    assert checks[0].verdict == "error" and checks[0].comparison is None
    assert "secret-pw" not in (checks[0].error or "") and "not compared" in checks[0].describe()
