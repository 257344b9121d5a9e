"""Business figures of a partition, tallied while its rows stream by: exact, in bounded memory.

:class:`BusinessTally` is fed the record batches a partition is written from
(:func:`acode_dagster.bronze.publish.write_audit_publish`, the one writer of both replicators),
so the embedded and the Airbyte replicator get the same figures from the same rows. What a
table's figures are is data, its :class:`~acode_dagster.tables.BusinessSpec`:

- **Rows.**
- **Sums**, exact: each batch's column is widened to ``decimal128(38, s)`` before Arrow sums it
  (65,536 values of ``DECIMAL(15,2)`` can need 20 digits) and the batch sums are added as Python
  :class:`~decimal.Decimal` in a context that raises rather than round. NULLs are skipped as
  SQL's ``SUM`` skips them; a partition with no non-NULL value sums to ``None``, as MySQL's
  ``SUM`` gives NULL (not 0).
- **Distinct counts**, exact, NULLs excluded as ``COUNT(DISTINCT ...)`` excludes them. Distinct
  means *byte-exact*, the values as bronze stores them: MySQL's ``COUNT(DISTINCT col)`` follows
  the column's collation (``utf8mb4_unicode_ci`` folds case and accents, and ignores trailing
  spaces), which bronze does not, so the MySQL equivalent is ``COUNT(DISTINCT CAST(col AS
  BINARY))``. Each batch's distinct values (``pc.unique``) are kept as Arrow arrays and
  deduplicated together whenever they add up to ``memory_values``; once more than
  ``memory_values`` distinct values are known, they and every later batch's distinct values go
  to the external sort of :mod:`acode_dagster.bronze.keys` (sorted runs on disk, merged at the
  end, repeats counted between neighbours). Memory stays bounded whatever the partition's size;
  the expected case (thousands of pharmacies, about 100,000 EANs a day) never touches the disk.
- **Rows per category**, exact up to ``max_categories`` distinct values of a column (NULL under
  ``"(null)"``); values first met after the cap are counted together under ``"(other)"``. Which
  values those are then depends on the order rows arrive in, so the cap is set far above the
  contract's categories (27 UFs, three NF-e statuses, a few dozen product categories).

Plain Python and Arrow, no Dagster: :mod:`acode_dagster.defs.observability.business` turns the
figures into materialization metadata.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# The external sort's parts are private to keys.py; this is its second user, on the same terms.
from acode_dagster.bronze.keys import (
    DEFAULT_FAN_IN,
    KEY,
    _comparable_type,
    _Repeats,
    _Sorter,
    _Spill,
)
from acode_dagster.tables import BusinessSpec, Table

DEFAULT_MEMORY_VALUES = 500_000
"""Distinct values of one column held in memory before the count goes to disk. In memory they
are Arrow arrays: the known values plus as many again waiting to be deduplicated, about 20 bytes
each for a CNPJ or an EAN; deduplicating them briefly takes a copy and a hash table besides
(bench/README.md, "Business metrics": under 200 MB at the bound). The external sort past the
bound holds as many keys again (see acode_dagster.bronze.keys)."""
DEFAULT_MAX_CATEGORIES = 1_000
"""Values of one category column counted one by one; later ones fold into ``"(other)"``."""
NULL_KEY = "(null)"
OTHER_KEY = "(other)"

_EXACT = decimal.Context(
    prec=200,
    traps=[decimal.Inexact, decimal.Rounded, decimal.Overflow, decimal.InvalidOperation],
)
"""Adds decimals exactly or raises; 200 digits are far beyond any sum of 38-digit batch sums."""


@dataclass(frozen=True)
class BusinessFigures:
    """What a partition's rows add up to. ``sums`` keep their decimals exact (None: no non-NULL
    value); ``rows_by`` maps each category column to its counts per value."""

    rows: int
    sums: Mapping[str, Decimal | None] = field(default_factory=dict)
    distinct: Mapping[str, int] = field(default_factory=dict)
    rows_by: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    value_column: str | None = None
    spilled: tuple[str, ...] = ()
    """Distinct columns whose count went to disk (more values than the memory bound)."""

    @property
    def value(self) -> Decimal | None:
        """The sum of the table's value column (None without one, or without a value)."""
        return self.sums.get(self.value_column) if self.value_column else None

    def as_json(self) -> dict[str, Any]:
        """The figures with their published names: decimals as exact strings, ``sum_<column>``,
        ``distinct_<column>``, ``rows_by_<column>``. The weekly report reads these names."""
        return {
            "rows": self.rows,
            **{f"sum_{c}": exact_text(v) for c, v in self.sums.items()},
            **{f"distinct_{c}": n for c, n in self.distinct.items()},
            **{f"rows_by_{c}": dict(counts) for c, counts in self.rows_by.items()},
        }

    def headline(self) -> str:
        """One line for a log: rows, sums and distinct counts (not the categories)."""
        parts = [f"{self.rows:,} rows"]
        parts += [f"sum {c} {exact_text(v) or 'NULL'}" for c, v in self.sums.items()]
        parts += [f"{n:,} distinct {c}" for c, n in self.distinct.items()]
        return ", ".join(parts)


def exact_text(value: Decimal | None) -> str | None:
    """A decimal as plain digits (never an exponent), None as None."""
    return None if value is None else format(value, "f")


class _Sum:
    def __init__(self, column: str, kind: pa.DataType):
        self.column = column
        # Widened so no batch's sum overflows (integers too: Arrow's int64 sum wraps around).
        self.wide = pa.decimal128(38, kind.scale if pa.types.is_decimal(kind) else 0)
        self.total: Decimal | None = None

    def feed(self, values: pa.Array | pa.ChunkedArray) -> None:
        if values.type != self.wide:
            values = values.cast(self.wide)
        part = pc.sum(values, min_count=1).as_py()
        if part is None:
            return
        part = Decimal(part)
        self.total = part if self.total is None else _EXACT.add(self.total, part)


class _Distinct:
    """Distinct non-NULL values of one column: in memory as Arrow arrays while there are at most
    ``memory_values`` of them, then through the external sort on disk."""

    def __init__(self, column: str, kind: pa.DataType, memory_values: int, directory: Path | None):
        self.column = column
        self.kind = kind
        self.comparable = _comparable_type(kind, column)
        self.memory_values = memory_values
        self._known: pa.Array = pa.array([], kind)
        """Distinct values seen, deduplicated at the last compaction."""
        self._pending: list[pa.Array] = []
        """Each later batch's distinct values, which may repeat ``_known`` and each other."""
        self._pending_values = 0
        self._spill = _Spill(directory)
        self._sorter: _Sorter | None = None
        self._schema = pa.schema([(KEY, self.comparable)])
        self._counted: int | None = None

    @property
    def spilled(self) -> bool:
        return self._sorter is not None

    def feed(self, values: pa.Array | pa.ChunkedArray) -> None:
        unique = pc.unique(values)
        if unique.null_count:
            unique = pc.drop_null(unique)
        if isinstance(unique, pa.ChunkedArray):
            unique = unique.combine_chunks()
        if self._sorter is not None:
            self._sort(unique)
            return
        # Deduplicated in bulk, not value by value: one hash pass over what is known and what
        # came since, once that is as many values as the memory bound (Python objects in a set
        # cost ten times the time and four times the bytes).
        self._pending.append(unique)
        self._pending_values += len(unique)
        if self._pending_values >= self.memory_values:
            self._compact()

    def _compact(self) -> None:
        if self._pending:
            self._known = pc.unique(pa.concat_arrays([self._known, *self._pending]))
            self._pending, self._pending_values = [], 0
        if len(self._known) > self.memory_values:
            self._sorter = _Sorter(
                self._schema, [KEY], self.memory_values, DEFAULT_FAN_IN, self._spill
            )
            held, self._known = self._known, pa.array([], self.kind)
            self._sort(held)

    def _sort(self, unique: pa.Array) -> None:
        assert self._sorter is not None
        if len(unique):
            comparable = unique if self.comparable == self.kind else unique.view(self.comparable)
            self._sorter.add(pa.record_batch([comparable], names=[KEY]))

    def count(self) -> int:
        if self._sorter is None:
            self._compact()
        if self._sorter is None:
            return len(self._known)
        if self._counted is None:
            self._counted = self._merged_count(self._sorter)
        return self._counted

    @staticmethod
    def _merged_count(sorter: _Sorter) -> int:
        # Each batch's values are distinct, but a value may come in many batches: sorted, its
        # copies are neighbours, and every neighbour equal to the previous one is a repeat.
        repeats, total = _Repeats(), 0
        for batch in sorter.sorted():
            total += batch.num_rows
            repeats.feed(batch.column(0))
        return total - repeats.duplicates

    def close(self) -> None:
        # The values go now, not when the tally is collected: the audit that follows a sync
        # wants the memory.
        self._known, self._pending, self._pending_values = pa.array([], self.kind), [], 0
        self._spill.close()


class _Categories:
    def __init__(self, column: str, max_categories: int):
        self.column = column
        self.max_categories = max_categories
        self.counts: dict[str, int] = {}

    def feed(self, values: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        found = pc.value_counts(values)
        keys = found.field("values").to_pylist()
        counts = found.field("counts").to_pylist()
        for value, count in zip(keys, counts, strict=True):
            key = NULL_KEY if value is None else str(value)
            if key not in self.counts and len(self.counts) >= self.max_categories:
                key = OTHER_KEY
            self.counts[key] = self.counts.get(key, 0) + count

    def result(self) -> dict[str, int]:
        # Most rows first, then by value: the same order however the rows arrived.
        return dict(sorted(self.counts.items(), key=lambda item: (-item[1], item[0])))


class BusinessTally:
    """The figures of ``spec`` over the batches :meth:`feed` is given (all in ``schema``).

    Use it as a context manager, or call :meth:`close`: a count that went to disk keeps its
    runs in a private temporary directory until then."""

    def __init__(
        self,
        spec: BusinessSpec,
        schema: pa.Schema,
        *,
        memory_values: int = DEFAULT_MEMORY_VALUES,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
        directory: Path | None = None,
    ):
        if memory_values < 1 or max_categories < 1:
            raise ValueError(
                f"memory_values and max_categories must be >= 1, not {memory_values}, "
                f"{max_categories}"
            )
        self.spec = spec
        self.rows = 0
        self._sums = [_Sum(c, schema.field(c).type) for c in spec.sums]
        self._distinct = [
            _Distinct(c, schema.field(c).type, memory_values, directory) for c in spec.distinct
        ]
        self._categories = [_Categories(c, max_categories) for c in spec.rows_by]

    @classmethod
    def for_table(cls, table: Table, **options: Any) -> BusinessTally:
        return cls(table.business, table.arrow_schema, **options)

    def feed(self, batch: pa.RecordBatch | pa.Table) -> None:
        if not batch.num_rows:
            return
        self.rows += batch.num_rows
        for total in self._sums:
            total.feed(batch.column(total.column))
        for distinct in self._distinct:
            distinct.feed(batch.column(distinct.column))
        for categories in self._categories:
            categories.feed(batch.column(categories.column))

    def feed_all(self, batches: Iterable[pa.RecordBatch | pa.Table]) -> BusinessFigures:
        for batch in batches:
            self.feed(batch)
        return self.result()

    def result(self) -> BusinessFigures:
        """The figures of everything fed so far (a count on disk is merged now)."""
        return BusinessFigures(
            rows=self.rows,
            sums={s.column: s.total for s in self._sums},
            distinct={d.column: d.count() for d in self._distinct},
            rows_by={c.column: c.result() for c in self._categories},
            value_column=self.spec.value_column,
            spilled=tuple(d.column for d in self._distinct if d.spilled),
        )

    def close(self) -> None:
        for distinct in self._distinct:
            distinct.close()

    def __enter__(self) -> BusinessTally:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def business_figures(
    table: Table, batches: Iterable[pa.RecordBatch | pa.Table], **options: Any
) -> BusinessFigures:
    """The figures of ``batches`` of ``table`` in one call."""
    with BusinessTally.for_table(table, **options) as tally:
        return tally.feed_all(batches)
