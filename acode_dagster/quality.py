"""The bronze checks as plain functions: what a partition must satisfy, and how badly it fails.

Every check is a pure function from measured facts to a :class:`Verdict`; the facts come from
the Parquet footers of a version's files (the staged version, audited before it is published:
``acode_dagster.bronze.publish``), its row counts, null counts and written schema, from
the source's data dictionary and an indexed COUNT, and from earlier partitions' row counts. Only
the key's uniqueness needs data, and then only the key column, read row group by row group with
memory bounded whatever the rows (:mod:`acode_dagster.bronze.keys`). So a check costs about the
same on 100 rows as on 50 million, and the Dagster layer merely turns verdicts into check results.

Thresholds are data, in each table's :class:`~acode_dagster.tables.Thresholds`. Comparisons are
exact (fractions, not floats), so 5.00 % is an ERROR and 4.99 % a WARN, on any row count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from acode_dagster.bronze.keys import (
    DEFAULT_MEMORY_ROWS,
    KeyCount,
    count_key_groups,
    count_keys,
    key_groups,
)
from acode_dagster.bronze.store import VersionFiles
from acode_dagster.errors import SourceError
from acode_dagster.mysql import MySQLEndpoint, SourceColumn, count_rows, source_columns
from acode_dagster.tables import Table, Thresholds

Severity = Literal["ERROR", "WARN"]
MetadataValue = int | float | str

NULL_SHARE = "null_share"
VOLUME = "volume"
RECONCILIATION = "reconciliation"
SCHEMA = "schema"
UNIQUE_KEY = "unique_key"
FRESHNESS = "freshness"


@dataclass(frozen=True)
class CheckSpec:
    name: str
    description: str
    blocking: bool
    """A failed ERROR fails the run that wrote the partition and stops anything downstream."""


PARTITION_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec(
        NULL_SHARE,
        "Share of NULLs in each critical column (from the Parquet footers' null counts).",
        blocking=True,
    ),
    CheckSpec(
        VOLUME,
        "Rows against the median of the last landed partitions of the same table.",
        blocking=False,
    ),
    CheckSpec(
        RECONCILIATION,
        "Bronze rows equal the source rows of the window, counted on the server the sync read "
        "(a version with fewer or more rows is not a copy, so it is never published).",
        blocking=True,
    ),
    CheckSpec(
        SCHEMA,
        "The written Parquet schema equals the table description, and the source has no added, "
        "dropped or retyped column.",
        blocking=True,
    ),
    CheckSpec(
        UNIQUE_KEY,
        "The key is unique within the partition (reads the key column only).",
        blocking=True,
    ),
)
BLOCKING_CHECKS = frozenset(spec.name for spec in PARTITION_CHECKS if spec.blocking)
"""An ERROR on one of these keeps a version out of the published layout (it is quarantined)."""
MIRROR_CHECK = CheckSpec(
    "mirror",
    "The published version is copied to the other bucket and verified there against its "
    "manifest (files, sizes, rows, SHA-256). A WARN means the other bucket lacks it for now: "
    "the repair after fail-back (or `acode buckets repair`) copies it.",
    blocking=False,
)
"""Recorded after the publish, on the partition; never part of the audit of a staged version."""
FRESHNESS_CHECK = CheckSpec(
    FRESHNESS,
    "Time since the newest partition landed with its blocking checks passed.",
    blocking=False,
)


@dataclass(frozen=True)
class Verdict:
    check: str
    passed: bool
    severity: Severity
    """The severity of the failure; for a pass, the worst this check can be."""
    measured: str
    """One line a person reads in an alert: the figure that decided."""
    threshold: str
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    """Figures for the UI; ints and floats are plotted over partitions."""

    @property
    def outcome(self) -> str:
        return "PASS" if self.passed else self.severity


def _pct(share: Fraction) -> str:
    return f"{float(share) * 100:.2f} %"


# --------------------------------------------------------------------------- footer facts


@dataclass(frozen=True)
class PartitionStats:
    """What the footers of one published partition say, without reading its data."""

    rows: int
    files: int
    row_groups: int
    null_counts: Mapping[str, int | None]
    """Per column; None when a row group was written without statistics."""
    schemas: tuple[pa.Schema, ...]
    """The Arrow schema of each file, as written."""

    @classmethod
    def from_footers(
        cls, footers: Sequence[pq.FileMetaData], columns: Sequence[str] | None = None
    ) -> PartitionStats:
        """``columns``: whose null counts to add up (default all). The checks ask only for the
        critical ones, so the cost grows with row groups times two, not times every column."""
        rows = 0
        groups = 0
        nulls: dict[str, int | None] = {}
        schemas = []
        for footer in footers:
            rows += footer.num_rows
            groups += footer.num_row_groups
            schemas.append(footer.schema.to_arrow_schema())
            names = [footer.schema.column(i).name for i in range(footer.num_columns)]
            for index, name in enumerate(names):
                if columns is not None and name not in columns:
                    continue
                total = nulls.get(name, 0)
                for group in range(footer.num_row_groups):
                    if footer.row_group(group).num_rows == 0:
                        continue  # no rows, no nulls (and writers leave its statistics out)
                    stats = footer.row_group(group).column(index).statistics
                    if total is None or stats is None or not stats.has_null_count:
                        total = None
                    else:
                        total += stats.null_count
                nulls[name] = total
        return cls(rows, len(footers), groups, nulls, tuple(schemas))


# --------------------------------------------------------------------------- the checks


def null_share(table: Table, stats: PartitionStats) -> Verdict:
    limits = table.thresholds
    warn, error = Fraction(limits.null_warn), Fraction(limits.null_error)
    metadata: dict[str, MetadataValue] = {"rows": stats.rows}
    worst_column, worst = "", Fraction(0)
    missing = []
    for column in table.critical_columns:
        count = stats.null_counts.get(column)
        if count is None:
            missing.append(column)
            continue
        share = Fraction(count, stats.rows) if stats.rows else Fraction(0)
        metadata[f"null_pct_{column}"] = round(float(share) * 100, 4)
        metadata[f"nulls_{column}"] = count
        if share >= worst:
            worst_column, worst = column, share
    threshold = f"WARN at {_pct(warn)}, ERROR at {_pct(error)}"
    if missing:
        return Verdict(
            NULL_SHARE,
            False,
            "ERROR",
            f"no null count in the footers for {', '.join(missing)} (written without statistics)",
            threshold,
            metadata,
        )
    count = stats.null_counts.get(worst_column) or 0
    measured = f"{_pct(worst)} NULL in {worst_column} ({count:,} of {stats.rows:,} rows)"
    if worst >= error:
        return Verdict(NULL_SHARE, False, "ERROR", measured, threshold, metadata)
    if worst >= warn:
        return Verdict(NULL_SHARE, False, "WARN", measured, threshold, metadata)
    return Verdict(NULL_SHARE, True, "ERROR", measured, threshold, metadata)


def volume(table: Table, rows: int, history: Sequence[int]) -> Verdict:
    """``history``: row counts of the earlier landed partitions, newest first."""
    limits = table.thresholds
    recent = list(history[: limits.volume_window])
    metadata: dict[str, MetadataValue] = {"rows": rows, "history_partitions": len(recent)}
    threshold = (
        f"ERROR at 0 rows or below {_pct(Fraction(limits.volume_error_below))} of the median of "
        f"the last {limits.volume_window} partitions; WARN outside "
        f"{_pct(Fraction(limits.volume_warn_below))} to {_pct(Fraction(limits.volume_warn_above))}"
    )
    if len(recent) < limits.volume_min_history:
        measured = (
            f"{rows:,} rows; {len(recent)} earlier partition(s), fewer than the "
            f"{limits.volume_min_history} a median needs"
        )
        return Verdict(VOLUME, rows > 0, "ERROR", measured, threshold, metadata)
    median = _median(recent)
    ratio = Fraction(rows) / median if median else Fraction(0 if rows == 0 else 10**9)
    metadata["median"] = float(median)
    metadata["ratio"] = round(float(ratio), 4)
    measured = f"{rows:,} rows = {_pct(ratio)} of the median {float(median):,.0f}"
    if rows == 0 or ratio < Fraction(limits.volume_error_below):
        return Verdict(VOLUME, False, "ERROR", measured, threshold, metadata)
    if not Fraction(limits.volume_warn_below) <= ratio <= Fraction(limits.volume_warn_above):
        return Verdict(VOLUME, False, "WARN", measured, threshold, metadata)
    return Verdict(VOLUME, True, "ERROR", measured, threshold, metadata)


def _median(values: Sequence[int]) -> Fraction:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return Fraction(ordered[middle])
    return Fraction(ordered[middle - 1] + ordered[middle], 2)


def reconciliation(bronze_rows: int, source_rows: int, server: str) -> Verdict:
    difference = bronze_rows - source_rows
    metadata: dict[str, MetadataValue] = {
        "bronze_rows": bronze_rows,
        "source_rows": source_rows,
        "difference": difference,
        "server": server,
    }
    measured = f"bronze {bronze_rows:,} rows, source {source_rows:,} rows on {server}"
    return Verdict(
        RECONCILIATION, difference == 0, "ERROR", measured, "ERROR on any difference", metadata
    )


def normalize_mysql_type(spelled: str) -> str:
    """One spelling per type: MySQL 8 drops integer display widths that MariaDB still shows."""
    text = " ".join(spelled.upper().split())
    return re.sub(r"^(TINYINT|SMALLINT|MEDIUMINT|INT|BIGINT)\(\d+\)", r"\1", text)


def _written_differences(table: Table, written: Sequence[pa.Schema]) -> list[str]:
    problems: list[str] = []
    expected = table.arrow_schema
    for number, found in enumerate(written, start=1):
        where = f"bronze file {number}"
        problems += [f"{n}: missing from {where}" for n in expected.names if n not in found.names]
        for name in found.names:
            if name not in expected.names:
                problems.append(f"{name}: in {where} but not in the table description")
                continue
            want, got = expected.field(name), found.field(name)
            if not got.type.equals(want.type):
                problems.append(f"{name}: {where} has {got.type}, the description {want.type}")
            elif got.nullable != want.nullable:
                problems.append(
                    f"{name}: {where} nullable={got.nullable}, described {want.nullable}"
                )
        if not problems and found.names != expected.names:
            problems.append(f"{where}: columns out of order")
    return problems


def _source_differences(table: Table, source: Mapping[str, SourceColumn]) -> list[str]:
    problems: list[str] = []
    null = {True: "NULL", False: "NOT NULL"}
    for column in table.columns:
        found = source.get(column.name)
        if found is None:
            problems.append(f"{column.name}: dropped at the source")
        elif normalize_mysql_type(found.column_type) != normalize_mysql_type(column.mysql_type):
            problems.append(
                f"{column.name}: retyped at the source to {found.column_type} "
                f"(the contract says {column.mysql_type})"
            )
        elif found.nullable != column.nullable:
            problems.append(
                f"{column.name}: {null[found.nullable]} at the source "
                f"(the contract says {null[column.nullable]})"
            )
    problems += [
        f"{name}: added at the source ({found.column_type})"
        for name, found in source.items()
        if name not in table.column_names
    ]
    return problems


def schema_differences(
    table: Table,
    written: Sequence[pa.Schema],
    source: Mapping[str, SourceColumn] | None,
) -> list[str]:
    """Each difference as a sentence naming its column; empty when everything agrees.

    ``source`` is None when the source could not be asked; the bronze half still counts.
    """
    problems = _written_differences(table, written)
    if source is not None:
        problems += _source_differences(table, source)
    return problems


def schema(
    table: Table, written: Sequence[pa.Schema], source: Mapping[str, SourceColumn] | None
) -> Verdict:
    problems = schema_differences(table, written, source)
    metadata: dict[str, MetadataValue] = {
        "differences": len(problems),
        "columns": len(table.columns),
        "source_checked": "yes" if source is not None else "no",
    }
    if problems:
        metadata["differing_columns"] = "; ".join(problems)
    measured = "; ".join(problems) if problems else f"{len(table.columns)} columns as described"
    return Verdict(
        SCHEMA,
        not problems,
        "ERROR",
        measured,
        "ERROR on any added, dropped, retyped or missing column",
        metadata,
    )


def partition_keys(
    table: Table,
    files: VersionFiles,
    footers: Sequence[pq.FileMetaData],
    memory_rows: int = DEFAULT_MEMORY_ROWS,
) -> KeyCount:
    """The key column of a version, counted row group by row group in bounded memory
    (:mod:`acode_dagster.bronze.keys`): the footers' key statistics decide which row groups are
    compared together, and ``footers`` (what ``files.footers()`` returned) are not read again."""
    key_type = table.arrow_schema.field(table.key).type
    if footers:
        # The type as written: one the description does not have is the schema check's to
        # report, while this check still counts the keys that are there.
        written = footers[0].schema.to_arrow_schema()
        if table.key in written.names:
            key_type = written.field(table.key).type
    return count_key_groups(
        key_groups(footers, table.key),
        lambda groups: files.column_batches(
            table.key, footers, [(g.file, g.group) for g in groups]
        ),
        key_type=key_type,
        column=table.key,
        memory_rows=memory_rows,
    )


def unique_key(table: Table, keys: KeyCount | pa.ChunkedArray | pa.Array) -> Verdict:
    """``keys``: the counted key column (:func:`partition_keys`), or the column itself."""
    if not isinstance(keys, KeyCount):
        keys = count_keys([keys], key_type=keys.type, column=table.key)
    rows, duplicates, nulls = keys.rows, keys.duplicates, keys.nulls
    metadata: dict[str, MetadataValue] = {
        "rows": rows,
        "distinct": keys.distinct,
        "duplicates": duplicates,
    }
    sample = [str(v) for v in keys.sample] if duplicates else []
    if sample:
        metadata["duplicate_sample"] = ", ".join(sample)
    if nulls:
        metadata["null_keys"] = nulls
    measured = (
        f"{duplicates:,} duplicate {table.key} value(s) among {rows:,} rows"
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


def freshness(
    thresholds: Thresholds, now: datetime, landed_at: datetime | None, partition: str | None
) -> Verdict:
    """How long since the newest good partition landed, against the table's windows."""
    threshold = (
        f"WARN after {_hours(thresholds.freshness_warn)}, "
        f"ERROR after {_hours(thresholds.freshness_fail)} without a new partition"
    )
    if landed_at is None:
        return Verdict(
            FRESHNESS,
            False,
            "ERROR",
            "no partition has landed with its blocking checks passed",
            threshold,
            {},
        )
    age = now - landed_at
    metadata: dict[str, MetadataValue] = {
        "age_hours": round(age.total_seconds() / 3600, 2),
        "newest_partition": partition or "",
        "landed_at": landed_at.isoformat(),
    }
    measured = f"newest good partition {partition} landed {_hours(age)} ago"
    if age >= thresholds.freshness_fail:
        return Verdict(FRESHNESS, False, "ERROR", measured, threshold, metadata)
    if age >= thresholds.freshness_warn:
        return Verdict(FRESHNESS, False, "WARN", measured, threshold, metadata)
    return Verdict(FRESHNESS, True, "ERROR", measured, threshold, metadata)


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:.1f} h"


# --------------------------------------------------------------------------- one partition


def evaluate_partition(
    table: Table,
    day: date,
    files: VersionFiles,
    source: MySQLEndpoint,
    history: Sequence[int],
) -> list[Verdict]:
    """Every partition check of ``table`` on one version of partition ``day`` (a staged one,
    before it is published), in :data:`PARTITION_CHECKS` order.

    ``source`` must be the server the sync read, so reconciliation compares like with like
    after a failover. A source that cannot be counted raises its SourceError (transient when the
    server is unreachable): reconciliation blocks the publish, so a version that cannot be
    reconciled is neither published nor quarantined, and the run retries. A source whose data
    dictionary cannot be read leaves the schema check to the bronze half.
    """
    footers = files.footers()
    stats = PartitionStats.from_footers(footers, table.critical_columns)
    counted = reconciliation(stats.rows, count_rows(source, table, day), source.display)
    try:
        described: Mapping[str, SourceColumn] | None = source_columns(source, table.name)
    except SourceError:
        described = None
    keys = partition_keys(table, files, footers)
    return [
        null_share(table, stats),
        volume(table, stats.rows, history),
        counted,
        schema(table, stats.schemas, described),
        unique_key(table, keys),
    ]
