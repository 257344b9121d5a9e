"""One partition's window read from MySQL in chunks, so memory stays bounded at any size.

The Arrow reader (connectorx) reads ahead in its own threads and never waits for its consumer:
with one query per window, whatever the writer has not consumed yet accumulates, all of it if the
writer is the slower side (measured on the 2M-row bench day with a consumer slowed to a third of
the reader's pace: 687 MB, the whole day, against 160 MB when the consumer keeps up). On a
50M-row day an S3 upload that pauses the writer for seconds would pile up gigabytes. So a window
is read as a sequence of queries of at most ``chunk_rows`` rows each, every one resuming after
the last row the previous one returned (keyset pagination,
:meth:`~acode_dagster.tables.Table.chunk_sql`): the reader is never more than one chunk ahead.
Exact, because the rows of a partition whose day is over do not change, and each order is total
(it ends with the primary key).

The order follows the access path the server's optimizer picks for the whole window, so chunking
costs the server what the single query would: the partition column's index for a day that is a
sliver of the table (production: one day of years), the primary key when the optimizer would
rather scan the table (a bench table holding little but that day).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pymysql

from acode_dagster.mysql import MySQLEndpoint, explain_mysql_error
from acode_dagster.tables import Table, day_window

CHUNK_ROWS = 131_072
"""Rows per query (over all connections): half a row group. The reader may hold one such chunk
ahead of the writer (about 0.35 KB a fiscal row as Arrow data, so ~45 MB); 16 queries for a
2M-row day, 382 for 50M, each an index seek on the server. 262,144 cost the 2M-row sync 23 MB
more at its peak, and the 50M-row CLI run went over 600 MB (bench/README.md, "Scale")."""

READ_CONNECTIONS = 2
"""Slices of a day read at once. Measured on the 2M-row bench day read through the index, the
server's cache cold (bench/README.md): two connections read it in 0.81 of the time of one."""

Stream = Callable[[MySQLEndpoint, str | Sequence[str], int], Iterator[pa.RecordBatch]]


def scans_table(source: MySQLEndpoint, sql: str) -> bool:
    """Whether the server would read ``sql`` by scanning the whole table (EXPLAIN's ``ALL``)."""
    connection = source.connect()
    try:
        with connection.cursor(pymysql.cursors.DictCursor) as cursor:
            cursor.execute(f"EXPLAIN {sql}")
            plan = cursor.fetchall()
    except pymysql.MySQLError as exc:
        raise explain_mysql_error(source, exc) from None
    finally:
        connection.close()
    return any(str(row.get("type", "")).upper() == "ALL" for row in plan)


def read_order(source: MySQLEndpoint, table: Table, day: date) -> tuple[str, ...] | None:
    """The order to read partition ``day`` in, chunk by chunk; None to read it in one query."""
    orders = table.read_orders()
    if not orders:
        return None
    by_index, by_key = orders
    return by_key if scans_table(source, table.select_sql(day)) else by_index


def day_slices(day: date, count: int) -> list[tuple[datetime, datetime]]:
    """Partition ``day``'s window cut into ``count`` equal spans of time (whole microseconds)."""
    start, end = day_window(day)
    step = (end - start) / count
    edges = [start + step * n for n in range(count)] + [end]
    return [(edges[n], edges[n + 1]) for n in range(count)]


def window_batches(
    stream: Stream,
    source: MySQLEndpoint,
    table: Table,
    day: date,
    *,
    batch_rows: int,
    chunk_rows: int = CHUNK_ROWS,
    connections: int = 1,
    log: Callable[[str], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The rows of partition ``day`` of ``table``, as ``stream`` reads each query's batches.

    ``connections`` > 1 reads that many slices of the day at once, each on a connection of its
    own, each in chunks of ``chunk_rows / connections`` rows, so the read-ahead bound stays one
    chunk in all. Only in the index's order: a table the optimizer scans is read by one.
    """
    order = read_order(source, table, day) if chunk_rows > 0 else None
    if order is None:
        yield from stream(source, table.select_sql(day), batch_rows)
        return
    stamp = order[0]
    slices: list[tuple[datetime, datetime] | None] = [None]
    if connections > 1 and order == table.read_orders()[0]:
        slices = list[tuple[datetime, datetime] | None](day_slices(day, connections))
    per_query = max(1, chunk_rows // len(slices))
    if log is not None:
        log(
            f"{table.name} {day:%Y-%m-%d}: reading in chunks of {per_query:,} rows ordered by "
            f"{', '.join(order)}, on {len(slices)} connection(s)"
        )
    after: dict[int, tuple[Any, ...] | None] = dict.fromkeys(range(len(slices)))
    while after:
        live = sorted(after)
        queries = [table.chunk_sql(day, order, after[n], per_query, span=slices[n]) for n in live]
        rows = dict.fromkeys(live, 0)
        last: dict[int, pa.RecordBatch] = {}
        for batch in stream(source, queries[0] if len(queries) == 1 else queries, batch_rows):
            if not batch.num_rows:
                continue
            for n in live:
                mine = _within(batch, stamp, slices[n])
                if mine.num_rows:
                    rows[n] += mine.num_rows
                    last[n] = mine
            yield batch
        for n in live:
            if rows[n] < per_query or n not in last:
                del after[n]
            else:
                end = last[n].num_rows - 1
                after[n] = tuple(last[n].column(name)[end].as_py() for name in order)


def _within(
    batch: pa.RecordBatch, stamp: str, span: tuple[datetime, datetime] | None
) -> pa.RecordBatch:
    """The rows of ``batch`` whose ``stamp`` falls in ``span`` (a batch holds one query's rows,
    so this is all of it or nothing; filtering keeps it exact either way)."""
    if span is None:
        return batch
    values = batch.column(stamp)
    inside = pc.and_(
        pc.greater_equal(values, pa.scalar(span[0], values.type)),
        pc.less(values, pa.scalar(span[1], values.type)),
    )
    return batch.filter(inside)


_M_ARENA_MAX = -8
"""glibc's mallopt parameter number for the arena limit (malloc.h)."""


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas for threads created from now on (as ``MALLOC_ARENA_MAX`` does).

    Every query of the reader runs on fresh Rust threads, and glibc gives each new thread an arena
    of its own (up to 8 a core) that keeps its freed memory: measured on the 2M-row day read in
    chunks, 394 to 409 MB peak with the default against 299 MB with 2 arenas. A no-op where the C
    library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        return
