"""Bulk-load demo days into a MySQL/MariaDB server that has the ACODE tables.

A fact table's day is replaced, never appended to: one transaction deletes the day's window and
streams the generated rows in through ``LOAD DATA LOCAL INFILE``, so a re-load leaves exactly
one copy and a failed load leaves the previous one. The product catalogue is loaded with
REPLACE, as the snapshot it is.

``LOAD DATA LOCAL`` turns bad values into warnings instead of errors (the server cannot stop a
client mid-file), which would silently truncate or skip rows; every chunk's warnings are read
back and any warning fails the load, rolling the day back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

import pymysql

from acode_dagster.demo.generator import (
    CLEAN,
    Anomalies,
    Row,
    generate_rows,
    normal_row_count,
)
from acode_dagster.errors import AcodeError
from acode_dagster.mysql import MySQLEndpoint, explain_mysql_error
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    PRODUCTS,
    Column,
    Table,
    get_table,
    last_complete_days,
    source_schema_statements,
)

_LOG = logging.getLogger(__name__)

CHUNK_ROWS = 200_000
"""Rows per LOAD DATA statement: large enough to amortize a round trip, small enough that the
temporary file stays in the tens of megabytes."""

EXTRA_COLUMN_VALUE = "drift"
"""What rows loaded with an ``extra_column`` anomaly hold in that column."""

Log = Callable[[str], object]


class DemoLoadError(AcodeError):
    """Demo rows could not be loaded; the day's previous rows are still in place."""


@dataclass(frozen=True)
class LoadedPart:
    """One (table, day) as loaded."""

    table: str
    day: date
    rows: int
    """Rows loaded (normal plus edge rows); for a fact table, what the day now holds."""
    deleted: int
    """Rows of the day's window the load replaced (0 for the catalogue)."""
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class LoadReport:
    parts: tuple[LoadedPart, ...]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        parts = ", ".join(f"{p.table} {p.day}: {p.rows:,}" for p in self.parts)
        return (
            f"{self.rows:,} rows in {self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s; {parts})"
        )

    def rows_of(self, table: Table | str, day: date | None = None) -> int:
        name = table if isinstance(table, str) else table.name
        return sum(p.rows for p in self.parts if p.table == name and day in (None, p.day))


# --- TSV encoding -----------------------------------------------------------------------------

_NULL = "\\N"
# LOAD DATA's default escaping: backslash escapes itself, and tab, newline, carriage return
# and NUL would otherwise end a field or a line (or be mangled).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _escape(text: str) -> str:
    # translate() is slow on non-ASCII text; almost every value is printable and needs nothing.
    return text if text.isprintable() and "\\" not in text else text.translate(_ESCAPES)


def _expression(column: Column, variable: str) -> str:
    """Python source turning one value of ``column`` into its TSV field."""
    spelled = column.mysql_type.upper()
    if spelled.startswith(("CHAR", "VARCHAR", "TEXT")):
        text = f"escape({variable})"
    elif spelled.startswith("DECIMAL"):
        # "f" never falls back to exponent notation, which str(Decimal) may.
        text = f"format({variable}, 'f')"
    elif spelled.startswith("DATETIME"):
        text = f"{variable}.isoformat(' ', 'microseconds')"
    elif spelled == "DATE":
        text = f"{variable}.isoformat()"
    else:
        text = f"str({variable})"
    return f"(NULL if {variable} is None else {text})"


def row_encoder(table: Table) -> Callable[[Row], str]:
    """A function turning a row of ``table`` into one line of LOAD DATA's default text format
    (tab-separated, ``\\N`` for NULL, backslash escapes).

    The function is generated from the column types: one call per row instead of one per value,
    which makes encoding several times faster for million-row days.
    """
    variables = [f"v{i}" for i in range(len(table.columns))]
    fields = ", ".join(_expression(c, v) for c, v in zip(table.columns, variables, strict=True))
    source = (
        f"def encode(row):\n"
        f"    ({', '.join(variables)},) = row\n"
        f"    return '\\t'.join(({fields},)) + '\\n'\n"
    )
    namespace: dict[str, Any] = {"NULL": _NULL, "escape": _escape}
    exec(compile(source, f"<tsv encoder for {table.name}>", "exec"), namespace)
    encode: Callable[[Row], str] = namespace["encode"]
    return encode


def tsv_lines(
    table: Table, rows: Iterable[Row], encode: Callable[[Row], str] | None = None
) -> Iterator[str]:
    """Rows as lines of LOAD DATA's default text format; see :func:`row_encoder`."""
    encode = encode or row_encoder(table)
    for row in rows:
        try:
            yield encode(row)
        except (ValueError, TypeError, AttributeError) as exc:
            raise DemoLoadError(
                f"{table.name}: a row does not match the table's {len(table.columns)} columns "
                f"({exc}): {row!r:.300}"
            ) from None


def _load_sql(
    conn: pymysql.connections.Connection[Any],
    table: Table,
    path: Path,
    *,
    replace: bool,
    extra: str | None,
) -> str:
    columns = ", ".join(f"`{name}`" for name in table.column_names)
    setting = f" SET `{extra}` = '{EXTRA_COLUMN_VALUE}'" if extra else ""
    return (
        f"LOAD DATA LOCAL INFILE {conn.escape(str(path))}{' REPLACE' if replace else ''}"
        f" INTO TABLE `{table.name}` CHARACTER SET utf8mb4"
        " FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
        f" ({columns}){setting}"
    )


# --- Loading ----------------------------------------------------------------------------------


def create_tables(endpoint: MySQLEndpoint) -> None:
    """Create the contract's tables in the endpoint's database if they are missing."""
    conn = endpoint.connect()
    try:
        with conn.cursor() as cursor:
            for statement in source_schema_statements():
                cursor.execute(statement)
    except pymysql.MySQLError as exc:
        raise explain_mysql_error(endpoint, exc) from None
    finally:
        conn.close()


def _ensure_column(cursor: pymysql.cursors.Cursor, table: Table, column: str) -> bool:
    """Add the drift column if the table lacks it; True when it was added."""
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s",
        (table.name, column),
    )
    row = cursor.fetchone()
    if row and row[0]:
        return False
    cursor.execute(f"ALTER TABLE `{table.name}` ADD COLUMN `{column}` VARCHAR(32) NULL")
    return True


def drop_column(endpoint: MySQLEndpoint, table: Table, column: str) -> bool:
    """Undo :func:`_ensure_column` (the demo's schema drift); True when it was there."""
    if column in table.column_names:
        raise ValueError(f"{column} is a contract column of {table.name}; it is never dropped")
    conn = endpoint.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.COLUMNS"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s",
                (table.name, column),
            )
            row = cursor.fetchone()
            if not (row and row[0]):
                return False
            cursor.execute(f"ALTER TABLE `{table.name}` DROP COLUMN `{column}`")
            return True
    except pymysql.MySQLError as exc:
        raise explain_mysql_error(endpoint, exc) from None
    finally:
        conn.close()


class _ChunkWriter(threading.Thread):
    """Generates and encodes the next chunks while the server loads the current one.

    Generation and encoding are Python work, loading is the server's; on two cores the pair
    takes about the time of the slower half instead of the sum. Chunk files rotate over three
    names (one loading, one queued, one being written), so the disk holds at most three chunks.
    """

    def __init__(self, table: Table, rows: Iterator[Row], workdir: Path, chunk_rows: int) -> None:
        super().__init__(name=f"demo-chunks-{table.name}", daemon=True)
        self.table, self.rows, self.workdir, self.chunk_rows = table, rows, workdir, chunk_rows
        self.ready: queue.Queue[tuple[Path, int] | BaseException | None] = queue.Queue(maxsize=1)
        self.stopping = threading.Event()

    def _hand_over(self, item: tuple[Path, int] | BaseException | None) -> bool:
        while not self.stopping.is_set():
            try:
                self.ready.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            encode = row_encoder(self.table)
            number = 0
            while chunk := list(islice(self.rows, self.chunk_rows)):
                path = self.workdir / f"{self.table.name}.{number % 3}.tsv"
                with path.open("w", encoding="utf-8", newline="") as handle:
                    handle.writelines(tsv_lines(self.table, chunk, encode))
                number += 1
                if not self._hand_over((path, len(chunk))):
                    return
            self._hand_over(None)
        except BaseException as exc:  # re-raised by the loading thread
            self._hand_over(exc)

    def chunks(self) -> Iterator[tuple[Path, int]]:
        while (item := self.ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def _check_load(
    cursor: pymysql.cursors.Cursor, table: Table, day: date, affected: int, rows: int
) -> None:
    cursor.execute("SHOW WARNINGS LIMIT 5")
    if warnings := cursor.fetchall():
        shown = "; ".join(f"{level} {code}: {message}" for level, code, message in warnings)
        raise DemoLoadError(
            f"{table.name} {day}: the server did not take the rows as generated ({shown}); "
            "the day was rolled back"
        )
    # REPLACE counts a replaced row twice (delete and insert).
    if not rows <= affected <= (2 if table.is_snapshot else 1) * rows:
        raise DemoLoadError(
            f"{table.name} {day}: the server took {affected} of {rows} rows; "
            "the day was rolled back"
        )


def _load_part(
    conn: pymysql.connections.Connection[Any],
    table: Table,
    day: date,
    rows: Iterator[Row],
    *,
    extra: str | None,
    workdir: Path,
    chunk_rows: int,
    log: Log,
) -> LoadedPart:
    """Replace (table, day) with ``rows`` in one transaction."""
    started = time.perf_counter()
    loaded = deleted = 0
    writer = _ChunkWriter(table, rows, workdir, chunk_rows)
    writer.start()
    conn.begin()
    try:
        with conn.cursor() as cursor:
            if not table.is_snapshot:
                deleted = cursor.execute(f"DELETE FROM `{table.name}`{table.where_sql(day)}")
            for path, count in writer.chunks():
                sql = _load_sql(conn, table, path, replace=table.is_snapshot, extra=extra)
                _check_load(cursor, table, day, cursor.execute(sql), count)
                loaded += count
                elapsed = time.perf_counter() - started
                log(
                    f"demo load {table.name} {day}: {loaded:,} rows "
                    f"({loaded / max(elapsed, 1e-9):,.0f} rows/s)"
                )
        conn.commit()
    except BaseException:
        with contextlib.suppress(pymysql.MySQLError):
            conn.rollback()
        raise
    finally:
        writer.stop()
        for leftover in workdir.glob(f"{table.name}.*.tsv"):
            leftover.unlink(missing_ok=True)
    return LoadedPart(table.name, day, loaded, deleted, time.perf_counter() - started)


AnomalySpec = Mapping[tuple[str, date], Anomalies] | Anomalies | None


def _resolve_anomalies(
    spec: AnomalySpec, loads: Sequence[tuple[Table, date]]
) -> dict[tuple[str, date], Anomalies]:
    """The anomalies of each (table, day) to load; a spec naming nothing loaded is an error,
    because a silently ignored anomaly makes a test pass for the wrong reason."""
    if spec is None:
        return {}
    if isinstance(spec, Anomalies):

        def nullable(table: Table) -> set[str]:
            return {c.name for c in table.columns if c.nullable}

        unknown = set(spec.null_share) - {c for table, _ in loads for c in nullable(table)}
        if unknown:
            raise ValueError(
                f"null_share names no nullable column of a loaded table: {sorted(unknown)}"
            )
        return {
            (table.name, day): dataclasses.replace(
                spec,
                null_share={c: s for c, s in spec.null_share.items() if c in nullable(table)},
            )
            for table, day in loads
        }
    wanted = {(table.name, day) for table, day in loads}
    for name, day in spec:
        if (name, day) not in wanted:
            raise ValueError(
                f"anomalies for ({name!r}, {day}) match nothing loaded; facts are loaded for "
                f"the requested days, the catalogue ({PRODUCTS.name}) for the last of them"
            )
    return dict(spec)


def load_days(
    endpoint: MySQLEndpoint,
    days: Sequence[date],
    *,
    rows: Mapping[str, int] | None = None,
    seed: int = 42,
    anomalies: AnomalySpec = None,
    log: Log = _LOG.info,
    chunk_rows: int = CHUNK_ROWS,
) -> LoadReport:
    """Load the demo rows of ``days`` into ``endpoint``'s ACODE tables.

    Each fact table's day is replaced whole (see the module doc); the catalogue is loaded once,
    as the snapshot of the last day, with REPLACE. ``rows`` maps table names to their normal
    daily row count (defaults: each table's ``demo_daily_rows``; complements default to one per
    loaded NF-e). ``anomalies`` is one :class:`Anomalies` for every loaded (table, day), its
    null shares applied where the column exists, or a mapping from (table name, day) to one.
    """
    if not days:
        return LoadReport((), 0.0)
    counts = dict(rows or {})
    for name in counts:
        get_table(name)
    ordered = sorted(set(days))
    snapshot_day = ordered[-1]
    loads = [(PRODUCTS, snapshot_day)] + [
        (table, day) for day in ordered for table in (FISCAL_LINES, NFE_COMPLEMENTS)
    ]
    resolved = _resolve_anomalies(anomalies, loads)
    catalogue_size = counts.get(PRODUCTS.name, PRODUCTS.demo_daily_rows)
    started = time.perf_counter()
    parts: list[LoadedPart] = []
    log(f"demo load into {endpoint.display}: {len(ordered)} day(s) {ordered[0]}..{snapshot_day}")
    conn = endpoint.connect(local_infile=True)
    try:
        with tempfile.TemporaryDirectory(prefix="acode-demo-") as workdir:
            fiscal_loaded: dict[date, int] = {}
            for table, day in loads:
                knobs = resolved.get((table.name, day), CLEAN)
                if knobs.extra_column:
                    with conn.cursor() as cursor:
                        if _ensure_column(cursor, table, knobs.extra_column):
                            log(f"demo load: added drift column {table.name}.{knobs.extra_column}")
                fiscal_rows = fiscal_loaded.get(day)
                stream = generate_rows(
                    table,
                    day,
                    counts.get(table.name),
                    seed=seed,
                    anomalies=knobs,
                    catalogue_size=catalogue_size,
                    fiscal_rows=fiscal_rows,
                )
                if table is FISCAL_LINES:
                    fiscal_loaded[day] = normal_row_count(
                        table, day, counts.get(table.name), seed=seed, anomalies=knobs
                    )
                part = _load_part(
                    conn,
                    table,
                    day,
                    stream,
                    extra=knobs.extra_column,
                    workdir=Path(workdir),
                    chunk_rows=chunk_rows,
                    log=log,
                )
                parts.append(part)
                log(
                    f"demo load {table.name} {day}: {part.rows:,} rows in {part.seconds:.1f} s "
                    f"({part.rows_per_s:,.0f} rows/s), replaced {part.deleted:,}"
                )
    except pymysql.MySQLError as exc:
        raise explain_mysql_error(endpoint, exc) from None
    finally:
        conn.close()
    report = LoadReport(tuple(parts), time.perf_counter() - started)
    log(
        f"demo load done: {report.rows:,} rows in {report.seconds:.1f} s "
        f"({report.rows_per_s:,.0f} rows/s)"
    )
    return report


def load_demo(
    endpoint: MySQLEndpoint,
    n_days: int = 3,
    end_day: date | None = None,
    *,
    rows: Mapping[str, int] | None = None,
    seed: int = 42,
    anomalies: AnomalySpec = None,
    log: Log = _LOG.info,
) -> LoadReport:
    """Load the last ``n_days`` complete local days (America/Sao_Paulo) of demo data."""
    return load_days(
        endpoint,
        last_complete_days(n_days, end_day),
        rows=rows,
        seed=seed,
        anomalies=anomalies,
        log=log,
    )
