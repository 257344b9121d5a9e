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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

import pyarrow as pa

from acode_dagster.bronze.lease import Holder, LeasePolicy
from acode_dagster.bronze.publish import (
    MAX_FILE_BYTES,
    ROW_GROUP_ROWS,
    Outcome,
    Publisher,
    write_audit_publish,
)
from acode_dagster.bronze.store import BronzeStore, Manifest
from acode_dagster.errors import AcodeError, PartitionError, SourceError, redact
from acode_dagster.mysql import (
    MySQLEndpoint,
    ReaderSocket,
    bound_reads,
    connections_to,
    cut,
    explain_mysql_error,
    source_columns,
)
from acode_dagster.observability.business import BusinessFigures
from acode_dagster.quality import Verdict, evaluate_partition
from acode_dagster.source.window import (
    CHUNK_ROWS,
    READ_CONNECTIONS,
    limit_malloc_arenas,
    window_batches,
)
from acode_dagster.tables import SOURCE_TIMEZONE, Table, day_window

log = logging.getLogger(__name__)

ProgressLog = Callable[[str], None]

BATCH_ROWS = 65_536


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
    published: bool = True
    """False when the version failed a blocking check and is in quarantine."""
    verdicts: tuple[Verdict, ...] = ()
    """The audit of the version, as it was staged."""
    kept_at: str = ""
    """Where the version is: the partition when published, the quarantine when not."""
    extra: Mapping[str, int | float | str] = field(default_factory=dict)
    """What only one replicator knows (Airbyte's job id, records and bytes), for metadata."""
    business: BusinessFigures | None = None
    """The business figures of the version's rows (acode_dagster.observability.business)."""

    @classmethod
    def of(
        cls,
        outcome: Outcome,
        *,
        seconds: float,
        source: str,
        bronze_url: str,
        extra: Mapping[str, int | float | str] | None = None,
    ) -> SyncResult:
        """The result of writing, auditing and publishing (or quarantining) a version."""
        manifest = outcome.manifest
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
            published=outcome.published,
            verdicts=outcome.verdicts,
            kept_at=outcome.kept_at,
            extra=extra or {},
            business=outcome.business,
        )

    @property
    def outcome_word(self) -> str:
        return "published" if self.published else "quarantined"

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float(self.rows)


class Replicator(Protocol):
    name: str

    def sync(
        self,
        table: Table,
        day: date,
        source: MySQLEndpoint,
        store: BronzeStore,
        publisher: Publisher | None = None,
    ) -> SyncResult: ...


def default_publisher(
    table: Table, day: date, source: MySQLEndpoint, log: ProgressLog = log.info
) -> Publisher:
    """A writer outside Dagster (a script, a test, the bench): audited like a run, without the
    volume history that only the instance knows (volume does not block), and leased as the
    settings say (ACODE_LEASE_TTL_S, ACODE_LEASE_WAIT_S)."""
    from acode_dagster.settings import Settings

    settings = Settings.from_env()
    return Publisher(
        holder=Holder.here("local", purpose="sync outside Dagster"),
        audit=lambda files: evaluate_partition(table, day, files, source, []),
        lease=LeasePolicy(ttl_s=settings.lease_ttl_s, wait_s=settings.lease_wait_s),
        log=log,
    )


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


def stream_batches(
    source: MySQLEndpoint, query: str | Sequence[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``query`` from the server, fetched as the consumer pulls them; of
    several queries at once, each on a connection of its own, when given several (a batch
    holds rows of one query).

    Bounded on both sides (ACODE_MYSQL_READ_TIMEOUT_S): the reader's socket by
    :func:`bound_reads`, the server's patience with a reader that stopped reading by
    :meth:`MySQLEndpoint.bounded_statement`. A lost or stalled server is a transient
    :class:`SourceError`, which the run retries. An interrupt (a run terminated from the UI or
    by run monitoring: KeyboardInterrupt, Dagster's DagsterExecutionInterruptedError) goes
    through untouched, so a cancelled run is told as cancelled, not as a MySQL failure. It
    lands between two batches (the reader holds the GIL while the caller waits for one), or
    when a stalled read times out. However the stream ends early (an error, an interrupt, the
    consumer closing it: :func:`close_stream`), its connection is cut at once.
    """
    import connectorx as cx

    reader: pa.RecordBatchReader | None = None
    mine: set[ReaderSocket] = set()
    done = False
    try:
        others = connections_to(source)
        statements = (
            source.bounded_statement(query)
            if isinstance(query, str)
            else [source.bounded_statement(q) for q in query]
        )
        # A login from a secret that the server refuses is retried once, the secret re-read.
        reader = source.with_login(
            lambda login: cx.read_sql(
                login.arrow_reader_url(),
                statements,
                return_type="arrow_stream",
                batch_size=batch_rows,
            )
        )
        # The reader has connected and read the result's columns; the rows come on the
        # connection it made, bounded before the first batch is asked for.
        mine = connections_to(source) - others
        if not bound_reads(mine, source.read_timeout_s):
            log.warning(
                "%s: found no connection of the reader to bound; a stalled read would wait "
                "for TCP to give up",
                source.display,
            )
        yield from reader
        done = True
    except AcodeError:
        raise  # told already (a refused login from a secret, a secret that cannot be read)
    except Exception as exc:
        raise _reader_error(source, exc) from None
    except BaseException as exc:
        # A connection lost mid-stream surfaces as pyo3's PanicException, which is not an
        # Exception. Anything else that is not an Exception is an interrupt or an exit.
        if type(exc).__name__ != "PanicException":
            raise
        raise _reader_error(source, exc) from None
    finally:
        if reader is not None:
            reader.close()
        if not done:
            # Closing the reader does not stop its reading thread, which would read on (and
            # keep the server's statement) until the process ends: stop it where it is.
            cut(mine)


def close_stream(batches: Iterator[pa.RecordBatch]) -> None:
    """Stop a stream of :func:`stream_batches` (however wrapped in generators) where it is: its
    reader's connection closes now, not when the generators are collected."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def _reader_error(source: MySQLEndpoint, exc: BaseException) -> SourceError:
    # The reader's errors may quote the connection string; never let the password through.
    return explain_mysql_error(source, RuntimeError(redact(str(exc), source.secrets())))


@dataclass
class EmbeddedReplicator:
    """MySQL -> Arrow -> Parquet in this process, streamed, published all or nothing."""

    batch_rows: int = BATCH_ROWS
    chunk_rows: int = CHUNK_ROWS
    """Rows per query of the window (acode_dagster.source.window); 0 reads it in one query."""
    connections: int = READ_CONNECTIONS
    """Slices of the window read at once, each on a connection of its own."""
    row_group_rows: int = ROW_GROUP_ROWS
    max_file_bytes: int = MAX_FILE_BYTES
    progress_every_s: float = 10.0
    log: ProgressLog = log.info
    name: str = "embedded"

    def sync(
        self,
        table: Table,
        day: date,
        source: MySQLEndpoint,
        store: BronzeStore,
        publisher: Publisher | None = None,
    ) -> SyncResult:
        ensure_day_is_over(table, day)
        started = time.monotonic()
        preflight(table, source)
        limit_malloc_arenas()
        publisher = publisher or default_publisher(table, day, source, self.log)
        self.log(
            f"{table.name} {day:%Y-%m-%d}: reading from {source.display} "
            f"into {store.partition_url(table, day)}"
        )
        batches = window_batches(
            stream_batches,
            source,
            table,
            day,
            batch_rows=self.batch_rows,
            chunk_rows=self.chunk_rows,
            connections=self.connections,
            log=self.log,
        )
        try:
            outcome = write_audit_publish(
                table,
                day,
                store,
                (
                    conform(batch, table.arrow_schema)
                    for batch in self._with_progress(batches, table, day, started)
                ),
                publisher,
                source=source.display,
                replicator=self.name,
                row_group_rows=self.row_group_rows,
                max_file_bytes=self.max_file_bytes,
            )
        finally:
            # An error or a run's interrupt raised in the writer leaves the reader suspended,
            # and the traceback (which Dagster keeps) keeps it reading ahead: close it now.
            close_stream(batches)
        seconds = time.monotonic() - started
        result = SyncResult.of(
            outcome,
            seconds=seconds,
            source=source.display,
            bronze_url=store.partition_url(table, day),
        )
        self.log(
            f"{table.name} {day:%Y-%m-%d}: {result.outcome_word} {result.rows:,} rows in "
            f"{result.files} "
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
