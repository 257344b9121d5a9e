"""Replication of one (table, day) partition from a MySQL server into bronze.

One interface, :class:`Replicator`, and one meaning of a partition for every implementation:
partition D of a fact table is the rows whose ``Data_Processamento`` falls on local day D; of the
catalogue, a full snapshot. The embedded implementation streams the rows through a Rust reader
that yields Arrow record batches (connectorx), so memory is bounded by a batch and a row group,
never by the partition, and the read runs at the speed of the wire rather than of Python objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from acode_dagster.bronze.store import BronzeStore, Manifest, ManifestFile, Staging, file_name
from acode_dagster.errors import PartitionError, SourceError, redact
from acode_dagster.mysql import MySQLEndpoint, explain_mysql_error, source_columns
from acode_dagster.tables import SOURCE_TIMEZONE, Table, day_window

log = logging.getLogger(__name__)

ProgressLog = Callable[[str], None]

BATCH_ROWS = 65_536
MAX_FILE_BYTES = 512 * 1024 * 1024
ROW_GROUP_ROWS = 262_144
"""Rows per Parquet row group. The writer holds one row group in memory before it writes it
(about 0.45 KB a row for the fiscal table), so this bounds a sync's memory: 262,144 rows keep it
near 350 MB. Fewer, larger groups would make footers (what the checks read, about 13 µs a row
group to parse) smaller still, at more memory; bench/README.md has the figures."""


@dataclass(frozen=True)
class SyncResult:
    table: str
    partition: str
    rows: int
    bytes: int
    files: int
    seconds: float
    source: str
    bronze_url: str
    manifest: Manifest
    extra: Mapping[str, int | float | str] = field(default_factory=dict)
    """What only one replicator knows (Airbyte's job id, records and bytes), for metadata."""

    @classmethod
    def of(
        cls,
        manifest: Manifest,
        *,
        seconds: float,
        source: str,
        bronze_url: str,
        extra: Mapping[str, int | float | str] | None = None,
    ) -> SyncResult:
        """The result of publishing ``manifest``."""
        return cls(
            table=manifest.table,
            partition=manifest.partition,
            rows=manifest.rows,
            bytes=manifest.bytes,
            files=len(manifest.files),
            seconds=seconds,
            source=source,
            bronze_url=bronze_url,
            manifest=manifest,
            extra=extra or {},
        )

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float(self.rows)


class Replicator(Protocol):
    name: str

    def sync(
        self, table: Table, day: date, source: MySQLEndpoint, store: BronzeStore
    ) -> SyncResult: ...


def ensure_day_is_over(table: Table, day: date, now: datetime | None = None) -> None:
    """A fact partition is synced only once its local day has ended, so it never changes again."""
    if table.is_snapshot:
        return
    now = now or datetime.now(SOURCE_TIMEZONE)
    _, end = day_window(day)
    if now.replace(tzinfo=None) < end:
        raise PartitionError(
            f"partition {day:%Y-%m-%d} of {table.name} is not over yet in {SOURCE_TIMEZONE.key} "
            f"(it ends at {end:%Y-%m-%d %H:%M}); sync it after that, or pick an earlier day"
        )


def preflight(table: Table, source: MySQLEndpoint) -> None:
    """Check the source has the table and its columns.

    Doing this with a plain driver before the fast reader starts gives one clear error for a
    wrong password, a dead server or a missing table or column, instead of whatever the fast
    reader happens to say. It does not count the window: that costs the server a tenth of the
    read again, and the reconciliation check counts it on the server the sync read anyway.
    """
    present = source_columns(source, table.name)
    if not present:
        raise SourceError(
            f"MySQL {source.display}: table {table.name} does not exist (or the user cannot see "
            "it) — the server must have the tables of acode_source_schema.sql and the user "
            "needs SELECT on them",
            server=source.display,
        )
    missing = [c for c in table.column_names if c not in present]
    if missing:
        raise SourceError(
            f"MySQL {source.display}: table {table.name} lacks column(s) {', '.join(missing)} "
            "of the contract — the source schema changed; fix the source or update "
            "acode_dagster/tables.py and the contract together",
            server=source.display,
        )


class PartitionWriter:
    """Writes record batches as Snappy Parquet files of bounded size into a staging folder."""

    def __init__(
        self,
        table: Table,
        staging: Staging,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        max_file_bytes: int = MAX_FILE_BYTES,
    ):
        self.table = table
        self.staging = staging
        self.row_group_rows = row_group_rows
        self.max_file_bytes = max_file_bytes
        self.files: list[ManifestFile] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._file_rows = 0

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files) + self._file_rows + self._pending_rows

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush_row_group()

    def _flush_row_group(self) -> None:
        if not self._pending:
            return
        chunk = pa.Table.from_batches(self._pending, schema=self.table.arrow_schema)
        self._pending, self._pending_rows = [], 0
        if self._writer is None:
            self._open_file()
        assert self._writer is not None and self._path is not None
        self._writer.write_table(chunk, row_group_size=max(chunk.num_rows, 1))
        self._file_rows += chunk.num_rows
        # The size is known only once a row group is flushed: files end a little past the bound.
        if self._path.stat().st_size >= self.max_file_bytes:
            self._close_file()

    def _open_file(self) -> None:
        self._path = self.staging.workdir / file_name(self.table, len(self.files) + 1)
        self._writer = pq.ParquetWriter(
            self._path,
            self.table.arrow_schema,
            compression="snappy",
            write_statistics=True,
            use_dictionary=True,
        )
        self._file_rows = 0

    def _close_file(self) -> None:
        assert self._writer is not None and self._path is not None
        self._writer.close()
        size = self._path.stat().st_size
        self.files.append(ManifestFile(self._path.name, self._file_rows, size))
        self.staging.add_file(self._path)
        self._writer, self._path, self._file_rows = None, None, 0

    def close(self) -> list[ManifestFile]:
        self._flush_row_group()
        if self._writer is None and not self.files:
            # An empty partition still gets one file, so readers see its schema and checks see 0.
            self._open_file()
        if self._writer is not None:
            self._close_file()
        return self.files


def publish_batches(
    table: Table,
    day: date,
    store: BronzeStore,
    batches: Iterable[pa.RecordBatch],
    *,
    source: str,
    replicator: str,
    row_group_rows: int = ROW_GROUP_ROWS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Manifest:
    """Write ``batches`` (already in the table's schema) as partition ``day``'s new version and
    publish it, all or nothing. The staging place exists before the first batch is pulled, so a
    missing bucket fails before a single source row is read."""
    with store.staging(table, day) as staging:
        writer = PartitionWriter(
            table, staging, row_group_rows=row_group_rows, max_file_bytes=max_file_bytes
        )
        for batch in batches:
            writer.write(batch)
        files = writer.close()
        manifest = Manifest(
            table=table.name,
            partition=f"{day:%Y-%m-%d}",
            rows=sum(f.rows for f in files),
            files=tuple(files),
            source=source,
            replicator=replicator,
        )
        staging.publish(manifest)
    return manifest


def conform(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    fix: str = "the source admits values the bronze schema does not; fix the row at the source "
    "or widen the type in tables.py and the contract",
) -> pa.RecordBatch:
    """Cast a batch to the table's exact types; refuse anything that would lose data.

    ``safe=True`` makes Arrow raise on decimal truncation or integer overflow instead of rounding,
    so a row the contract does not admit fails the sync with its column named, and ``fix``.
    """
    if batch.schema.names != schema.names:
        raise SourceError(
            f"the reader returned columns {batch.schema.names}, expected {schema.names}"
        )
    arrays = []
    for column, target in zip(batch.columns, schema, strict=True):
        try:
            arrays.append(column if column.type == target.type else column.cast(target.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SourceError(
                f"column {target.name}: a value does not fit the contract's type {target.type} "
                f"({exc}) — {fix}"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def stream_batches(source: MySQLEndpoint, query: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of ``query`` from the server, fetched as the consumer pulls them."""
    import connectorx as cx

    try:
        reader = cx.read_sql(
            source.arrow_reader_url(), query, return_type="arrow_stream", batch_size=batch_rows
        )
        yield from reader
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        # BaseException: a connection lost mid-stream surfaces as pyo3's PanicException, which
        # is not an Exception. The reader's errors may quote the connection string; never let
        # the password through.
        raise explain_mysql_error(
            source, RuntimeError(redact(str(exc), source.secrets()))
        ) from None


@dataclass
class EmbeddedReplicator:
    """MySQL -> Arrow -> Parquet in this process, streamed, published all or nothing."""

    batch_rows: int = BATCH_ROWS
    row_group_rows: int = ROW_GROUP_ROWS
    max_file_bytes: int = MAX_FILE_BYTES
    progress_every_s: float = 10.0
    log: ProgressLog = log.info
    name: str = "embedded"

    def sync(
        self, table: Table, day: date, source: MySQLEndpoint, store: BronzeStore
    ) -> SyncResult:
        ensure_day_is_over(table, day)
        started = time.monotonic()
        preflight(table, source)
        self.log(
            f"{table.name} {day:%Y-%m-%d}: reading from {source.display} "
            f"into {store.partition_url(table, day)}"
        )
        batches = stream_batches(source, table.select_sql(day), self.batch_rows)
        manifest = publish_batches(
            table,
            day,
            store,
            (
                conform(batch, table.arrow_schema)
                for batch in self._with_progress(batches, table, day, started)
            ),
            source=source.display,
            replicator=self.name,
            row_group_rows=self.row_group_rows,
            max_file_bytes=self.max_file_bytes,
        )
        seconds = time.monotonic() - started
        result = SyncResult.of(
            manifest,
            seconds=seconds,
            source=source.display,
            bronze_url=store.partition_url(table, day),
        )
        self.log(
            f"{table.name} {day:%Y-%m-%d}: published {result.rows:,} rows in {result.files} "
            f"file(s), {result.bytes / 1e6:.1f} MB, {seconds:.1f} s "
            f"({result.rows_per_second:,.0f} rows/s)"
        )
        return result

    def _with_progress(
        self,
        batches: Iterable[pa.RecordBatch],
        table: Table,
        day: date,
        started: float,
    ) -> Iterator[pa.RecordBatch]:
        rows, last = 0, time.monotonic()
        for batch in batches:
            rows += batch.num_rows
            yield batch
            now = time.monotonic()
            if now - last >= self.progress_every_s:
                last = now
                rate = rows / max(now - started, 1e-9)
                self.log(f"{table.name} {day:%Y-%m-%d}: {rows:,} rows, {rate:,.0f} rows/s")


def describe(result: SyncResult) -> dict[str, Any]:
    """A plain summary, for the CLI and for logs."""
    return {
        "table": result.table,
        "partition": result.partition,
        "rows": result.rows,
        "files": result.files,
        "bytes": result.bytes,
        "seconds": round(result.seconds, 2),
        "rows_per_s": round(result.rows_per_second),
        "source": result.source,
        "bronze_url": result.bronze_url,
    }
