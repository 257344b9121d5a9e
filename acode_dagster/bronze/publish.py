"""Write, audit, then publish: how every new version of a partition reaches bronze.

One function, :func:`write_audit_publish`, used by both replicators and by nothing else that
writes a partition:

1. take the partition's lease (:mod:`acode_dagster.bronze.lease`), so writers of one (table, day)
   never interleave, however they were launched and on whichever machine;
2. write the version into staging, Parquet files of bounded size, memory bounded by a row group;
3. audit it there: the partition checks run on the *staged* files and the server the rows came
   from;
4. publish it (fenced: only while the lease is still held) when no blocking check failed with
   ERROR, or else move it to quarantine with its manifest and check results. A quarantined
   version never becomes visible and never replaces the published one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from acode_dagster.bronze.lease import Holder, LeasePolicy, hold
from acode_dagster.bronze.store import (
    BronzeStore,
    Manifest,
    ManifestFile,
    Quarantined,
    Staging,
    VersionFiles,
    file_name,
    file_sha256,
)
from acode_dagster.observability.business import BusinessFigures, BusinessTally
from acode_dagster.quality import BLOCKING_CHECKS, Verdict
from acode_dagster.tables import Table

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 512 * 1024 * 1024
ROW_GROUP_ROWS = 262_144
"""Rows per Parquet row group. The writer holds one row group in memory before it writes it
(about 0.45 KB a row for the fiscal table), so this bounds a sync's memory: 262,144 rows keep it
near 350 MB. Fewer, larger groups would make footers (what the checks read, about 13 µs a row
group to parse) smaller still, at more memory; bench/README.md has the figures."""

Audit = Callable[[VersionFiles], Sequence[Verdict]]
"""The partition checks of one staged version."""


@dataclass(frozen=True)
class Publisher:
    """How one writer publishes: who it is (shown to writers that wait for it), how its
    versions are audited, and how long it waits for a busy partition."""

    holder: Holder
    audit: Audit
    lease: LeasePolicy = field(default_factory=LeasePolicy)
    log: Callable[[str], None] = log.info


@dataclass(frozen=True)
class Outcome:
    manifest: Manifest
    verdicts: tuple[Verdict, ...]
    published: bool
    """False when the version failed a blocking check and went to quarantine."""
    kept_at: str
    """The partition's URL when published, the quarantine's when not."""
    business: BusinessFigures | None = None
    """The business figures of the version's rows, tallied as they were written."""

    @property
    def blocking_failures(self) -> list[Verdict]:
        return blocking_failures(self.verdicts)


def blocking_failures(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """The verdicts that keep a version from being published: ERROR on a blocking check."""
    return [
        v for v in verdicts if not v.passed and v.severity == "ERROR" and v.check in BLOCKING_CHECKS
    ]


def verdict_record(verdict: Verdict) -> dict[str, Any]:
    """A verdict as kept beside a quarantined version."""
    return {
        "check": verdict.check,
        "outcome": verdict.outcome,
        "severity": verdict.severity,
        "blocking": verdict.check in BLOCKING_CHECKS,
        "measured": verdict.measured,
        "threshold": verdict.threshold,
        "metadata": dict(verdict.metadata),
    }


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
        if batch.num_rows == 0:
            # An empty row group carries no statistics, which a reader (and null_share) would
            # take for a file written without them.
            return
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
        # Hashed while the file is still local (and in the page cache): a mirror or a repair
        # verifies every copy of the partition against it.
        digest = file_sha256(self._path)
        self.files.append(ManifestFile(self._path.name, self._file_rows, size, digest))
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


def write_audit_publish(
    table: Table,
    day: date,
    store: BronzeStore,
    batches: Iterable[pa.RecordBatch],
    publisher: Publisher,
    *,
    source: str,
    replicator: str,
    row_group_rows: int = ROW_GROUP_ROWS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Outcome:
    """Write ``batches`` (already in the table's schema) as a new version of partition ``day``,
    audit it in staging, then publish it or quarantine it.

    The lease is taken before the first batch is pulled (so a waiting writer has not read the
    source yet), and the staging place exists before it too (so a missing bucket fails first).
    """
    name = f"{table.name} {day:%Y-%m-%d}"
    with (
        hold(
            store.lease_records(table, day),
            publisher.holder,
            publisher.lease,
            name,
            log_wait=publisher.log,
        ) as lease,
        store.staging(table, day) as staging,
    ):
        writer = PartitionWriter(
            table, staging, row_group_rows=row_group_rows, max_file_bytes=max_file_bytes
        )
        # Tallied here, from the very batches written, so both replicators get the same figures.
        with BusinessTally.for_table(table) as tally:
            for batch in batches:
                writer.write(batch)
                tally.feed(batch)
            files = writer.close()
            business = tally.result()
        publisher.log(f"{name}: business figures: {business.headline()}")
        manifest = Manifest(
            table=table.name,
            partition=f"{day:%Y-%m-%d}",
            rows=sum(f.rows for f in files),
            files=tuple(files),
            source=source,
            replicator=replicator,
        )
        # Arrow's allocator keeps what the writer freed; hand it back before the audit takes
        # its own (the key column and its sort), so the two do not add up (bench/README.md).
        pa.default_memory_pool().release_unused()
        verdicts = tuple(publisher.audit(staging))
        failed = blocking_failures(verdicts)
        if failed:
            record = Quarantined(
                manifest=manifest,
                checks=tuple(verdict_record(v) for v in verdicts),
                quarantined_at=datetime.now(UTC).isoformat(),
                by=publisher.holder.describe(),
            )
            kept = staging.quarantine(record)
            publisher.log(
                f"{name}: version {manifest.version} failed "
                f"{', '.join(v.check for v in failed)}; quarantined at {kept}, the published "
                "version is unchanged"
            )
            return Outcome(manifest, verdicts, False, kept, business)
        staging.publish(manifest, lease.ensure_held)
    return Outcome(manifest, verdicts, True, store.partition_url(table, day), business)


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
    """Publish rows that need no audit (the bench's and tests' own fixtures) through the same
    lease and swap as a sync. Anything read from the source goes through a replicator, which
    audits."""
    publisher = Publisher(
        holder=Holder.here("local", purpose="publish_batches"), audit=lambda _: ()
    )
    return write_audit_publish(
        table,
        day,
        store,
        batches,
        publisher,
        source=source,
        replicator=replicator,
        row_group_rows=row_group_rows,
        max_file_bytes=max_file_bytes,
    ).manifest
