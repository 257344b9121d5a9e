"""A partition's window summed up on the MySQL server: its row count and a checksum of its rows,
so the primary and its replica (or the primary and what bronze published) can be compared
without moving a single row.

The query follows Percona's pt-table-checksum (``RowChecksum::make_row_checksum`` and
``make_chunk_checksum``): each row is the ``CONCAT_WS('#', ...)`` of its columns plus the bitmap
``CONCAT(ISNULL(c1), ISNULL(c2), ...)`` of its nullable columns, because ``CONCAT_WS`` skips a
NULL and a NULL would otherwise read the same as ``''``; the window is ``COUNT(*)`` and the
``BIT_XOR`` of the rows' hashes, an order-independent sum that each server computes from its own
copy. One deviation, measured on MariaDB 10.11: pt-table-checksum's default hash, ``CRC32``
(XORed whole as an integer), is linear over GF(2), so the same edit at the same offset of two
rows of equal length cancels in the XOR: ``UPDATE ... SET Status_NFe = 'cancelada!'`` on two
'autorizada' rows left the CRC32 sum unchanged. Fiscal rows are fixed-width almost throughout, so
a batch update made on one server only is exactly what would go unseen. The row hash here is
therefore the first 64 bits of ``MD5`` (not linear), XORed through pt-table-checksum's own form
for a hash wider than an integer, ``LPAD(CONV(BIT_XOR(CAST(CONV(SUBSTRING(<hash>, 1, 16), 16,
10) AS UNSIGNED)), 10, 16), 16, '0')``, one 16-hex-digit slice of it (pt-table-checksum's MD5
path XORs both slices; 64 bits already make a missed difference a 2**-64 chance, at half the
hashing). pt-table-checksum also wraps TIMESTAMP columns in ``UNIX_TIMESTAMP`` and may round
floats; the ACODE tables have neither (DATETIME is stored as written, DECIMAL is exact), so every
column goes in as it is.

The window is the synced one, to the microsecond: a fact table's day is cut into
:data:`CHECKSUM_SLICES` contiguous spans of the partition column (the replicator's own
:func:`~acode_dagster.source.window.day_slices`) whose union is exactly
:meth:`~acode_dagster.tables.Table.where_sql`'s half-open day; a count and an XOR combine exactly
over spans, so the day's figures are the spans' sum and XOR, and the spans also say where in the
day two servers differ. A span is one range scan of the partition column's index (about 2M rows
of a 50M-row day: some 30 s at the ~70,000 fiscal rows/s one MariaDB summed on 2 cores here,
against ~125,000 with CRC32), so no statement runs long enough to meet the read timeout
(``ACODE_MYSQL_READ_TIMEOUT_S``) that bounds each one, and MariaDB is told to give up on it after
as long (``max_statement_time``) so a client that gave up leaves no query running. The snapshot
table (the catalogue) has no day: its window is the whole table as it is now.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import pymysql

from acode_dagster.errors import AcodeError, redact
from acode_dagster.mysql import MySQLEndpoint, explain_mysql_error
from acode_dagster.probes import ProbeSettings, probe_replica
from acode_dagster.source.window import day_slices
from acode_dagster.tables import SOURCE_TIMEZONE, Table, day_window

CHECKSUM_SLICES = 24
"""Spans a fact table's day is summed in (hours): about 2M rows each on a 50M-row day."""

SEPARATOR = "#"
"""pt-table-checksum's default separator between a row's columns."""

Span = tuple[datetime, datetime] | None
"""A slice of a day's window, or None for the whole window (the snapshot table)."""

Outcome = Literal["equal", "rows_differ", "checksum_differs"]
Verdict = Literal["equal", "differs", "lagging", "error"]
VERDICTS: tuple[Verdict, ...] = ("equal", "differs", "lagging", "error")


# ---------------------------------------------------------------------- the SQL


def row_checksum_sql(table: Table) -> str:
    """One row as pt-table-checksum concatenates it: every column, then the NULL bitmap."""
    columns = [f"`{c.name}`" for c in table.columns]
    nullable = [f"ISNULL(`{c.name}`)" for c in table.columns if c.nullable]
    if nullable:
        columns.append(f"CONCAT({', '.join(nullable)})")
    return f"CONCAT_WS('{SEPARATOR}', {', '.join(columns)})"


def window_checksum_select(table: Table) -> str:
    """``COUNT(*) AS cnt, <64-bit XOR of the rows' MD5 halves as 16 hex digits> AS crc``."""
    row_hash = f"MD5({row_checksum_sql(table)})"
    xor = f"BIT_XOR(CAST(CONV(SUBSTRING({row_hash}, 1, 16), 16, 10) AS UNSIGNED))"
    return f"COUNT(*) AS cnt, COALESCE(LOWER(LPAD(CONV({xor}, 10, 16), 16, '0')), 0) AS crc"


def window_spans(table: Table, day: date | None, slices: int = CHECKSUM_SLICES) -> list[Span]:
    """The spans partition ``day`` is summed in: ``slices`` of the day, or the whole table."""
    if table.is_snapshot:
        return [None]
    if day is None:
        raise ValueError(f"{table.name} is partitioned by day: a day is needed")
    if slices < 1:
        raise ValueError(f"slices must be at least 1, got {slices}")
    return list[Span](day_slices(day, slices))


def checksum_sql(table: Table, day: date | None, span: Span = None) -> str:
    """The statement summing ``span`` of partition ``day`` (the whole window when None)."""
    if table.is_snapshot:
        return f"SELECT {window_checksum_select(table)} FROM `{table.name}`"
    if day is None:
        raise ValueError(f"{table.name} is partitioned by day: a day is needed")
    where = table.where_sql(day)
    if span is not None:
        start, end = day_window(day)
        if not start <= span[0] < span[1] <= end:
            raise ValueError(f"{span} is not a slice of partition {day}")
        where = (
            f" WHERE `{table.partition_column}` >= {_stamp(span[0])}"
            f" AND `{table.partition_column}` < {_stamp(span[1])}"
        )
    return f"SELECT {window_checksum_select(table)} FROM `{table.name}`{where}"


def bounded(endpoint: MySQLEndpoint, sql: str) -> str:
    """``sql`` with MariaDB told to stop it after the read timeout, when its client gives up
    (``/*M!...*/`` runs on MariaDB only; MySQL takes it as a comment and keeps its own limits)."""
    seconds = max(1, math.ceil(endpoint.read_timeout_s))
    return f"/*M!100108 SET STATEMENT max_statement_time={seconds} FOR */ {sql}"


def _stamp(value: datetime) -> str:
    """A span's edge as a literal: digits, dashes, colons and a dot, from a datetime."""
    return f"'{value:%Y-%m-%d %H:%M:%S.%f}'"


# ---------------------------------------------------------------------- what a server says


@dataclass(frozen=True)
class SpanSum:
    """Rows and checksum of one span of a window, on one server."""

    span: Span
    rows: int
    checksum: int
    """The 64-bit XOR of the rows' hashes (0 for no rows)."""

    @property
    def label(self) -> str:
        return span_label(self.span)

    def to_json(self) -> dict[str, Any]:
        span = None if self.span is None else [self.span[0].isoformat(), self.span[1].isoformat()]
        return {"span": span, "rows": self.rows, "checksum": f"{self.checksum:016x}"}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SpanSum:
        span = raw["span"]
        return cls(
            span=None
            if span is None
            else (datetime.fromisoformat(span[0]), datetime.fromisoformat(span[1])),
            rows=int(raw["rows"]),
            checksum=int(str(raw["checksum"]), 16),
        )


@dataclass(frozen=True)
class WindowSum:
    """Partition ``day`` of ``table`` summed up on one server (``server``: its display URL,
    without password)."""

    table: str
    day: date | None
    """None: the snapshot table summed as it is now, for no partition in particular."""
    server: str
    spans: tuple[SpanSum, ...]
    seconds: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        if not self.spans:
            raise ValueError("a window has at least one span")

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.spans)

    @property
    def checksum(self) -> int:
        return functools.reduce(operator.xor, (s.checksum for s in self.spans), 0)

    @property
    def hex(self) -> str:
        return f"{self.checksum:016x}"

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "day": None if self.day is None else self.day.isoformat(),
            "server": self.server,
            "rows": self.rows,
            "checksum": self.hex,
            "seconds": round(self.seconds, 3),
            "spans": [s.to_json() for s in self.spans],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WindowSum:
        return cls(
            table=str(raw["table"]),
            day=None if raw["day"] is None else date.fromisoformat(str(raw["day"])),
            server=str(raw["server"]),
            spans=tuple(SpanSum.from_json(s) for s in raw["spans"]),
            seconds=float(raw.get("seconds", 0.0)),
        )


def span_label(span: Span) -> str:
    """``10:00-11:00`` for a span of a day, ``whole table`` for the snapshot's window."""
    if span is None:
        return "whole table"
    start, end = span
    finish = "24:00" if end.date() > start.date() else f"{end:%H:%M}"
    return f"{start:%H:%M}-{finish}"


def parse_checksum(text: object) -> int:
    """The server's 16 hex digits (or pt-table-checksum's bare ``0``) as an integer."""
    value = str(text).strip().lower()
    if not value or len(value) > 16 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"not a 64-bit checksum in hex: {text!r}")
    return int(value, 16)


# ---------------------------------------------------------------------- decisions (pure)


@dataclass(frozen=True)
class Comparison:
    """One window on the primary and on the replica, span by span."""

    primary: WindowSum
    replica: WindowSum

    @property
    def differing_spans(self) -> tuple[Span, ...]:
        return tuple(
            p.span
            for p, r in zip(self.primary.spans, self.replica.spans, strict=True)
            if (p.rows, p.checksum) != (r.rows, r.checksum)
        )

    @property
    def outcome(self) -> Outcome:
        if self.primary.rows != self.replica.rows:
            return "rows_differ"
        if self.differing_spans:
            return "checksum_differs"
        return "equal"

    @property
    def equal(self) -> bool:
        return self.outcome == "equal"

    def where(self) -> str:
        """Where the two differ, as spans of the day ('' when equal)."""
        labels = [span_label(s) for s in self.differing_spans]
        if len(labels) > 6:
            labels = [*labels[:6], f"and {len(labels) - 6} more"]
        return ", ".join(labels)

    def describe(self) -> str:
        p, r = self.primary, self.replica
        what = f"{p.table} {window_label(p.day)}"
        figures = (
            f"primary {p.rows:,} rows (checksum {p.hex}), replica {r.rows:,} rows "
            f"(checksum {r.hex})"
        )
        if self.equal:
            return f"{what}: equal, {p.rows:,} rows (checksum {p.hex})"
        where = self.where()
        return f"{what}: {figures}" + (f"; differs in {where}" if where else "")


def compare(primary: WindowSum, replica: WindowSum) -> Comparison:
    """The two sums of one window, side by side; refuses sums of different windows."""
    if (primary.table, primary.day) != (replica.table, replica.day):
        raise ValueError(
            f"cannot compare {primary.table} {primary.day} with {replica.table} {replica.day}"
        )
    if [s.span for s in primary.spans] != [s.span for s in replica.spans]:
        raise ValueError(f"{primary.table} {primary.day}: the two sums were cut differently")
    return Comparison(primary, replica)


def judge(comparison: Comparison, lag_s: float | None, window_age_s: float | None) -> Verdict:
    """What a difference means, given the replica's lag and how long ago the window closed.

    A replica ``lag_s`` behind may not hold yet what the primary wrote in the last ``lag_s``:
    a difference in a window that closed longer ago than that is not lag (``differs``); one in
    a window that closed more recently, or in the snapshot (``window_age_s`` None: it is now),
    may be (``lagging``). An unknown lag (None: replication stopped or its status unreadable)
    explains nothing.
    """
    if comparison.equal:
        return "equal"
    if lag_s is not None and lag_s > 0 and (window_age_s is None or lag_s >= window_age_s):
        return "lagging"
    return "differs"


def lag_wait_s(lag_s: float | None, budget_s: float) -> float:
    """How long to wait before comparing once more: the lag and a second, at most the budget;
    nothing when the replica is caught up or its lag is unknown (waiting would not help)."""
    if lag_s is None or lag_s <= 0 or budget_s <= 0:
        return 0.0
    return min(lag_s + 1.0, budget_s)


def window_age_s(table: Table, day: date | None, now: datetime) -> float | None:
    """Seconds since partition ``day``'s window closed (local São Paulo time); None for the
    snapshot, whose window is the moment it is read."""
    if table.is_snapshot or day is None:
        return None
    end = day_window(day)[1].replace(tzinfo=SOURCE_TIMEZONE)
    return (now - end).total_seconds()


def window_label(day: date | None) -> str:
    return "snapshot (now)" if day is None else f"{day:%Y-%m-%d}"


@dataclass(frozen=True)
class Reconciliation:
    """A bronze day synced from the replica, reconciled against the primary after fail-back."""

    table: str
    day: date
    resync: bool
    reason: str
    published_rows: int | None
    primary: WindowSum | None = None
    replica: WindowSum | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "day": self.day.isoformat(),
            "resync": self.resync,
            "reason": self.reason,
            "published_rows": self.published_rows,
            "primary": None if self.primary is None else self.primary.to_json(),
            "replica": None if self.replica is None else self.replica.to_json(),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Reconciliation:
        published = raw.get("published_rows")
        return cls(
            table=str(raw["table"]),
            day=date.fromisoformat(str(raw["day"])),
            resync=bool(raw["resync"]),
            reason=str(raw["reason"]),
            published_rows=None if published is None else int(published),
            primary=None if raw.get("primary") is None else WindowSum.from_json(raw["primary"]),
            replica=None if raw.get("replica") is None else WindowSum.from_json(raw["replica"]),
        )


def reconcile(
    table: Table,
    day: date,
    published_rows: int | None,
    primary: WindowSum,
    replica: WindowSum | None,
) -> Reconciliation:
    """Whether partition ``day``, published from the replica, must be synced again from the
    primary.

    Again when what was published does not hold the primary's rows (its count), when the
    replica's window is not the primary's (a row it missed or holds differently, which a
    count alone would not show), or when either cannot be known: syncing from the primary is
    always right, so doubt costs a sync, never a wrong day. For the snapshot table the window
    is the catalogue as it is now, which may have moved on since the day was taken; its
    published count is recorded but does not decide, only the replica's agreement with the
    primary does.
    """
    if replica is None:
        return Reconciliation(
            table.name,
            day,
            True,
            "the replica could not be read to compare it with the primary",
            published_rows,
            primary,
        )
    comparison = compare(primary, replica)
    if not table.is_snapshot:
        if published_rows is None:
            reason = "the published row count is unknown"
            return Reconciliation(table.name, day, True, reason, None, primary, replica)
        if published_rows != primary.rows:
            reason = (
                f"published {published_rows:,} rows read from the replica; the primary's window "
                f"has {primary.rows:,}"
            )
            return Reconciliation(table.name, day, True, reason, published_rows, primary, replica)
    if not comparison.equal:
        reason = f"the replica's window differs from the primary's: {comparison.describe()}"
        return Reconciliation(table.name, day, True, reason, published_rows, primary, replica)
    rows = f"{primary.rows:,} rows"
    reason = (
        f"verified: the replica's catalogue equals the primary's ({rows}, checksum {primary.hex})"
        if table.is_snapshot
        else f"verified: {rows} published, equal to the primary's window (checksum {primary.hex})"
    )
    return Reconciliation(table.name, day, False, reason, published_rows, primary, replica)


# ---------------------------------------------------------------------- reading the servers


def window_sum(
    endpoint: MySQLEndpoint, table: Table, day: date | None, *, slices: int = CHECKSUM_SLICES
) -> WindowSum:
    """Partition ``day`` of ``table`` summed on ``endpoint``, span by span, on one connection.

    Each statement waits at most the endpoint's read timeout for its answer (pymysql's socket
    timeout), and MariaDB stops it after as long.
    """
    spans = window_spans(table, day, slices)
    started = time.monotonic()
    found: list[SpanSum] = []
    connection = endpoint.connect()
    try:
        with connection.cursor() as cursor:
            for span in spans:
                cursor.execute(bounded(endpoint, checksum_sql(table, day, span)))
                row = cursor.fetchone()
                if row is None:
                    raise AcodeError(f"MySQL {endpoint.display}: a checksum query returned no row")
                found.append(SpanSum(span, int(row[0]), parse_checksum(row[1])))
    except pymysql.MySQLError as exc:
        raise explain_mysql_error(endpoint, exc) from None
    finally:
        if connection.open:
            connection.close()
    return WindowSum(table.name, day, endpoint.display, tuple(found), time.monotonic() - started)


def window_sums(
    primary: MySQLEndpoint,
    replica: MySQLEndpoint,
    table: Table,
    day: date | None,
    *,
    slices: int = CHECKSUM_SLICES,
) -> tuple[WindowSum, WindowSum]:
    """The same window summed on both servers at once (a thread each), so the two read as
    nearly the same moment as possible and the comparison takes the slower server's time."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="acode-checksum") as pool:
        on_primary = pool.submit(window_sum, primary, table, day, slices=slices)
        on_replica = pool.submit(window_sum, replica, table, day, slices=slices)
        errors = [f.exception() for f in (on_primary, on_replica)]
    for error in errors:
        if error is not None:
            raise error
    return on_primary.result(), on_replica.result()


def replica_lag_s(replica: MySQLEndpoint, timeout_s: float = 5.0) -> float | None:
    """Seconds the replica reports it is behind (``Seconds_Behind_Master``); None when it does
    not say (replication stopped, the server unreachable, no status to read)."""
    result = probe_replica(replica, ProbeSettings(timeout_s=timeout_s))
    behind = result.details.get("seconds_behind")
    if isinstance(behind, int | float) and behind >= 0:
        return float(behind)
    return None


@dataclass(frozen=True)
class Window:
    """A window to compare: partition ``day`` of ``table``; None for the snapshot as it is now."""

    table: Table
    day: date | None

    @property
    def label(self) -> str:
        return window_label(self.day)


@dataclass(frozen=True)
class WindowCheck:
    """One window's verdict in a replica check."""

    table: str
    day: date | None
    verdict: Verdict
    comparison: Comparison | None = None
    error: str | None = None
    lag_s: float | None = None
    compared: int = 1
    """How many times it was compared (2 when a difference was looked at once more)."""

    def describe(self) -> str:
        if self.comparison is None:
            return f"{self.table} {window_label(self.day)}: not compared: {self.error}"
        text = self.comparison.describe()
        if self.verdict == "lagging":
            text += f" — the replica is {self.lag_s:g} s behind, which may explain it"
        return text


def complete_days_before(today: date, count: int, first: date | None = None) -> list[date]:
    """The ``count`` days before ``today``, oldest first, none before ``first``."""
    days = [today - timedelta(days=n) for n in range(count, 0, -1)]
    return [d for d in days if first is None or d >= first]


def replica_windows(tables: Iterable[Table], days: Sequence[date]) -> list[Window]:
    """Each fact table's ``days`` and the snapshot table once (its window is now)."""
    windows: list[Window] = []
    for table in tables:
        if table.is_snapshot:
            windows.append(Window(table, None))
        else:
            windows += [Window(table, day) for day in days]
    return windows


def check_windows(
    primary: MySQLEndpoint,
    replica: MySQLEndpoint,
    windows: Sequence[Window],
    *,
    wait_s: float,
    lag: Callable[[], float | None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
    slices: int = CHECKSUM_SLICES,
    log: Callable[[str], None] = lambda _: None,
) -> list[WindowCheck]:
    """Compare every window on both servers; look once more at those that differ.

    A difference may be replication in flight (the replica behind, or a snapshot row written
    between the two reads): the differing windows are compared a second time, after waiting
    for the replica's reported lag (at most ``wait_s``), and judged with the lag it reports
    then (:func:`judge`). A window that cannot be read is reported (``error``), not raised, so
    the others are still compared.
    """
    read_lag = lag or (lambda: replica_lag_s(replica, timeout_s=min(10.0, replica.read_timeout_s)))
    secrets = (*primary.secrets(), *replica.secrets())

    def one(window: Window) -> Comparison | str:
        try:
            sums = window_sums(primary, replica, window.table, window.day, slices=slices)
        except (AcodeError, OSError) as exc:
            return redact(str(exc), secrets)
        return compare(*sums)

    # By position: a Table holds a dict (its tags) and cannot be a key.
    results = [one(w) for w in windows]
    compared = [1] * len(windows)
    lag_s = read_lag()
    again = [n for n, c in enumerate(results) if isinstance(c, Comparison) and not c.equal]
    if again:
        wait = lag_wait_s(lag_s, wait_s)
        log(
            f"{len(again)} window(s) differ; replica lag {_lag_text(lag_s)}; comparing them "
            f"once more in {wait:g} s"
        )
        sleep(wait)
        for n in again:
            results[n], compared[n] = one(windows[n]), 2
        lag_s = read_lag()
    checks: list[WindowCheck] = []
    at = now()
    for window, result, times in zip(windows, results, compared, strict=True):
        name = window.table.name
        if isinstance(result, str):
            checks.append(WindowCheck(name, window.day, "error", None, result, lag_s, times))
            continue
        verdict = judge(result, lag_s, window_age_s(window.table, window.day, at))
        checks.append(WindowCheck(name, window.day, verdict, result, None, lag_s, times))
    return checks


def _lag_text(lag_s: float | None) -> str:
    return "unknown" if lag_s is None else f"{lag_s:g} s"
