"""Repeated keys in bounded memory, whatever the number of rows.

A partition's key check and the Airbyte landing's day cut both ask which rows repeat a key seen
before. Holding every key and sorting them costs memory in proportion to the rows (1.7 GB for a
50M-row day of fiscal lines); here memory is bounded by ``memory_rows`` keys, whatever the
partition's size, and the answer stays exact:

- **Statistics first** (:func:`count_key_groups`): the footers give each row group's smallest
  and largest key. Row groups whose ranges overlap form a cluster; no key of one cluster can equal
  a key of another, so each cluster is checked on its own, in ascending order of its keys. Rows
  written in key order make each row group its own cluster: memory is then one row group's keys.
  A row group without statistics may overlap any other, so all row groups become one cluster.
  Only bounds are needed, which the writer's statistics are even when truncated.
- **External merge sort** for any cluster larger than ``memory_rows`` and for a plain stream of
  keys (:func:`count_keys`, :func:`first_occurrences`): chunks of at most ``memory_rows`` keys are
  sorted in memory and written as Arrow IPC runs into a private temporary directory (removed
  afterwards, on error too); the runs are then merged ``fan_in`` at a time. Each merge step takes
  from every run's current batch the rows up to the smallest of the runs' last rows (nothing
  later in any run can sort before it; a binary search finds each run's share), sorts that step
  and hands it on: a few vectorised Arrow calls a step, never a Python loop over rows.

In the sorted stream a repeat sits right after its first occurrence: a row repeats an earlier key
exactly when it equals its neighbour (the previous step's last key is carried into the next). NULL
keys are counted and never taken for repeats (SQL's UNIQUE admits any number of them). When the
first occurrence matters (the landing keeps the first landed row of each key), rows are sorted on
(key, position), so the first of equal keys is the one with the smallest position; the positions
of the later ones go through a second external sort and come out ascending
(:class:`SortedPositions`), ready to be dropped while the rows are streamed again in their order.

Keys may be integers, text, binary, decimals, booleans, dates or times. A floating-point key is
refused with its column named: NaN equals nothing, so a repeat would have no exact meaning.

Memory: sorting a chunk holds it twice (the chunk and its sorted copy) plus 8 bytes a key of sort
indices: 24 bytes a uint64 key (48 MB measured at 2,000,000 keys), 40 with its position for the
landing (81 MB at 2,000,000), about 42 for a 13-digit EAN; the default is 1,000,000 keys, which
kept the whole 50M-row CLI run under 600 MB (bench/README.md, "Scale"). A merge holds one batch
of ``memory_rows / fan_in`` keys of each run and sorts what each step takes: the same order
again. Disk: the runs hold each non-NULL key once, 8 bytes a uint64 key and 16 with its position
(1.6 GB for a 50M-row day landed twice), and 8 bytes for each row to drop, in the system's
temporary folder unless ``directory`` names another.
"""

from __future__ import annotations

import bisect
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from acode_dagster.errors import AcodeError

DEFAULT_MEMORY_ROWS = 1_000_000
"""Keys sorted in memory at once; see the module's docstring for what that costs in bytes."""
DEFAULT_FAN_IN = 64
"""Runs merged at once. 50M keys at the default memory make 50 runs: a single merge."""
SAMPLE_SIZE = 5
_MAX_BATCH_ROWS = 65_536
KEY = "key"
POSITION = "position"


class KeyColumnError(AcodeError, ValueError):
    """A key column that cannot be checked: missing, of an unorderable type, or of two types."""


@dataclass(frozen=True)
class KeyCount:
    """What a key check measures. ``sample``: the smallest repeated keys, ascending."""

    rows: int
    nulls: int
    duplicates: int
    """Rows whose key repeats an earlier row's (NULLs aside): rows minus NULLs minus distinct."""
    sample: tuple[Any, ...] = ()

    @property
    def distinct(self) -> int:
        return self.rows - self.nulls - self.duplicates


# --------------------------------------------------------------------------- key types


def _comparable_type(key_type: pa.DataType, column: str) -> pa.DataType:
    """The type keys are sorted and compared as: one whose Python values order as Arrow sorts,
    so the merge can find its bounds with Python comparisons (a timestamp is compared as its
    integer, a string by code point, which is UTF-8's byte order)."""
    if (
        pa.types.is_integer(key_type)
        or pa.types.is_string(key_type)
        or pa.types.is_large_string(key_type)
        or pa.types.is_binary(key_type)
        or pa.types.is_large_binary(key_type)
        or pa.types.is_fixed_size_binary(key_type)
        or pa.types.is_boolean(key_type)
        or pa.types.is_decimal(key_type)
    ):
        return key_type
    if (
        pa.types.is_date(key_type)
        or pa.types.is_time(key_type)
        or pa.types.is_timestamp(key_type)
        or pa.types.is_duration(key_type)
    ):
        return pa.int32() if key_type.bit_width == 32 else pa.int64()
    why = (
        "a floating-point key cannot be compared exactly (NaN equals nothing)"
        if pa.types.is_floating(key_type)
        else "its values have no order"
    )
    raise KeyColumnError(
        f"key column {column!r} has type {key_type}: {why}; a key must be an integer, text, "
        "binary, decimal, boolean, date or time column"
    )


class _KeyStream:
    """Counts the rows and NULLs of incoming key arrays and hands on the non-NULL keys in their
    comparable type (:func:`_comparable_type`), with their row positions when asked."""

    def __init__(self, key_type: pa.DataType, column: str):
        self.column = column
        self.key_type = key_type.value_type if pa.types.is_dictionary(key_type) else key_type
        self.comparable = _comparable_type(self.key_type, column)
        self.rows = 0
        self.nulls = 0

    def _chunks(self, keys: pa.Array | pa.ChunkedArray) -> Iterator[pa.Array]:
        for chunk in keys.chunks if isinstance(keys, pa.ChunkedArray) else [keys]:
            if pa.types.is_dictionary(chunk.type):
                chunk = chunk.dictionary_decode()  # noqa: PLW2901
            if not chunk.type.equals(self.key_type):
                raise KeyColumnError(
                    f"key column {self.column!r} is {self.key_type} in some rows and "
                    f"{chunk.type} in others: the files of one version disagree on its type"
                )
            yield chunk

    def _comparable(self, keys: pa.Array) -> pa.Array:
        return keys if self.comparable is self.key_type else keys.view(self.comparable)

    def present(self, keys: pa.Array | pa.ChunkedArray) -> Iterator[pa.Array]:
        for chunk in self._chunks(keys):
            self.rows += len(chunk)
            self.nulls += chunk.null_count
            if chunk.null_count:
                chunk = pc.drop_null(chunk)  # noqa: PLW2901
            if len(chunk):
                yield self._comparable(chunk)

    def present_with_positions(
        self, keys: pa.Array | pa.ChunkedArray
    ) -> Iterator[tuple[pa.Array, pa.Array]]:
        """Non-NULL keys with their positions among all the rows seen (NULL rows included)."""
        for chunk in self._chunks(keys):
            where = positions(self.rows, len(chunk))
            self.rows += len(chunk)
            self.nulls += chunk.null_count
            if chunk.null_count:
                valid = pc.is_valid(chunk)
                chunk, where = pc.filter(chunk, valid), pc.filter(where, valid)  # noqa: PLW2901
            if len(chunk):
                yield self._comparable(chunk), where

    def restore(self, sample: pa.Array) -> tuple[Any, ...]:
        """Sample keys back in the key's own type, as Python values."""
        if self.comparable is not self.key_type:
            sample = sample.view(self.key_type)
        return tuple(sample.to_pylist())


_STEP: pa.Array | None = None


def positions(start: int, count: int) -> pa.Array:
    """``start, start + 1, ..., start + count - 1`` as int64, built by Arrow (a Python range
    converted row by row costs 8 ms per 65,536 rows)."""
    global _STEP  # noqa: PLW0603
    if _STEP is None:
        _STEP = pa.array(range(_MAX_BATCH_ROWS), pa.int64())
    parts = [
        pc.add(_STEP.slice(0, min(_MAX_BATCH_ROWS, count - done)), start + done)
        for done in range(0, count, _MAX_BATCH_ROWS)
    ]
    if len(parts) == 1:
        return parts[0]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.int64())


# --------------------------------------------------------------------------- external sort


class _Spill:
    """A private temporary directory for sorted runs, made on first use."""

    def __init__(self, parent: Path | None):
        self._parent = parent
        self.path: Path | None = None
        self._made = 0

    def new_file(self, stem: str) -> Path:
        if self.path is None:
            self.path = Path(tempfile.mkdtemp(prefix="acode-keys-", dir=self._parent))
        self._made += 1
        return self.path / f"{stem}-{self._made:06d}.arrow"

    def close(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def _write_run(
    path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch], batch_rows: int
) -> None:
    # Small batches on disk: a merge holds one batch of each run it reads.
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            for start in range(0, batch.num_rows, batch_rows):
                writer.write_batch(batch.slice(start, batch_rows))


def _read_run(path: Path) -> Iterator[pa.RecordBatch]:
    # Read, not memory-mapped: mapped pages would count in the process's memory as they are read.
    with pa.OSFile(str(path), "rb") as source, pa.ipc.open_stream(source) as reader:
        yield from reader


class _Cursor:
    """The head of one sorted run in a merge: its current batch and how much of it is taken.

    Rows compare as Python values (a single value, or a tuple for several columns), fetched one
    at a time by a binary search: a few dozen per step, where converting the batch would touch
    every row."""

    def __init__(self, batches: Iterator[pa.RecordBatch], order: Sequence[str]):
        self._batches = batches
        self._order = order
        self._batch: pa.RecordBatch | None = None
        self._offset = 0
        self._row: Callable[[int], Any] = int
        self.last: Any = None
        self._advance()

    def _advance(self) -> None:
        self._batch = batch = next((b for b in self._batches if b.num_rows), None)
        self._offset = 0
        if batch is None:
            return
        columns = [batch.column(name) for name in self._order]
        if len(columns) == 1:
            only = columns[0]
            self._row = lambda index: only[index].as_py()
        elif len(columns) == 2:
            first, second = columns
            self._row = lambda index: (first[index].as_py(), second[index].as_py())
        else:
            self._row = lambda index: tuple(column[index].as_py() for column in columns)
        self.last = self._row(batch.num_rows - 1)

    @property
    def done(self) -> bool:
        return self._batch is None

    def take_through(self, bound: Any) -> pa.RecordBatch | None:
        """The rows of the current batch up to ``bound`` included."""
        batch = self._batch
        assert batch is not None
        start = self._offset
        if self.last <= bound:
            end = batch.num_rows
        else:
            end = bisect.bisect_right(range(batch.num_rows), bound, lo=start, key=self._row)
            if end == start:
                return None
        if end == batch.num_rows:
            self._advance()
        else:
            self._offset = end
        return batch.slice(start, end - start)


def _merge(
    runs: Sequence[Iterator[pa.RecordBatch]], order: Sequence[str]
) -> Iterator[pa.RecordBatch]:
    """Sorted runs as one sorted stream.

    Each step's bound is the smallest of the runs' current last rows: every row a run holds after
    its current batch sorts at or after that batch's last row, so all rows up to the bound are
    in the current batches. The run that owns the bound gives its whole batch, so every step
    consumes at least one batch."""
    cursors = [c for c in (_Cursor(run, order) for run in runs) if not c.done]
    sort_keys = [(name, "ascending") for name in order]
    while cursors:
        bound = min(c.last for c in cursors)
        parts = [p for p in (c.take_through(bound) for c in cursors) if p is not None]
        cursors = [c for c in cursors if not c.done]
        if len(parts) == 1:
            yield parts[0]
            continue
        step = pa.Table.from_batches(parts).combine_chunks()
        yield from step.take(pc.sort_indices(step, sort_keys=sort_keys)).to_batches()


def _ascending(values: pa.ChunkedArray) -> bool:
    count = len(values)
    return bool(pc.all(pc.less_equal(values.slice(0, count - 1), values.slice(1))).as_py())


class _Sorter:
    """Record batches sorted by ``order`` (ascending), at most ``memory_rows`` rows in memory:
    beyond that, sorted runs go to disk and are merged when the sorted rows are asked for."""

    def __init__(
        self,
        schema: pa.Schema,
        order: Sequence[str],
        memory_rows: int,
        fan_in: int,
        spill: _Spill,
    ):
        if memory_rows < 1 or fan_in < 2:
            raise ValueError(
                f"memory_rows must be >= 1 and fan_in >= 2, not {memory_rows}, {fan_in}"
            )
        self._schema = schema
        self._order = order
        self._memory_rows = memory_rows
        self._fan_in = fan_in
        self._spill = spill
        # A merge holds one batch of each of fan_in runs: memory_rows keys in all.
        self._batch_rows = max(1, min(_MAX_BATCH_ROWS, memory_rows // fan_in))
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.runs: list[Path] = []

    def add(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            room = self._memory_rows - self._pending_rows
            head = batch.slice(0, room)
            self._pending.append(head)
            self._pending_rows += head.num_rows
            batch = batch.slice(head.num_rows)
            if self._pending_rows >= self._memory_rows:
                self._spill_pending()

    def _sorted_pending(self) -> pa.Table:
        # One copy, then the pieces go: the sort's copy is the second, not the third.
        table = pa.Table.from_batches(self._pending, self._schema).combine_chunks()
        self._pending, self._pending_rows = [], 0
        if table.num_rows < 2 or (len(self._order) == 1 and _ascending(table.column(0))):
            # Keys that come in order (a snapshot is selected ORDER BY its key) need neither the
            # sort's indices nor its copy.
            return table
        indices = pc.sort_indices(table, sort_keys=[(name, "ascending") for name in self._order])
        return table.take(indices)

    def _spill_pending(self) -> None:
        path = self._spill.new_file("run")
        _write_run(path, self._schema, self._sorted_pending().to_batches(), self._batch_rows)
        self.runs.append(path)

    def reduced_runs(self) -> list[Path]:
        """What was added, as at most ``fan_in`` sorted runs on disk (merging runs if need be)."""
        if self._pending_rows:
            self._spill_pending()
        while len(self.runs) > self._fan_in:
            group, self.runs = self.runs[: self._fan_in], self.runs[self._fan_in :]
            merged = self._spill.new_file("merged")
            _write_run(
                merged,
                self._schema,
                _merge([_read_run(p) for p in group], self._order),
                self._batch_rows,
            )
            for path in group:
                path.unlink()
            self.runs.append(merged)
        return self.runs

    def sorted(self) -> Iterator[pa.RecordBatch]:
        """Every row added, in order; the runs are removed once read."""
        if not self.runs:
            yield from self._sorted_pending().to_batches(max_chunksize=_MAX_BATCH_ROWS)
            return
        runs, self.runs = self.reduced_runs(), []
        try:
            yield from _merge([_read_run(p) for p in runs], self._order)
        finally:
            for path in runs:
                path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- repeats


class _Repeats:
    """Equal neighbours in a stream of keys in ascending order: each is a repeat of an earlier
    key. Keeps the count and the smallest repeated keys (met first, since the stream ascends)."""

    def __init__(self) -> None:
        self.duplicates = 0
        self._previous: pa.Array | None = None
        self._sample: list[pa.Array] = []
        self._sampled = 0
        self._last_sampled: Any = None

    def feed(self, keys: pa.Array) -> pa.Array | None:
        """The mask of the repeats among ``keys``, or None when there are none."""
        count = len(keys)
        if not count:
            return None
        inner = pc.equal(keys.slice(1), keys.slice(0, count - 1))
        first = (
            pc.equal(self._previous, keys.slice(0, 1))
            if self._previous is not None
            else pa.array([False])
        )
        # A copy of one key, so the batch it came from can be released.
        self._previous = pa.concat_arrays([keys.slice(count - 1, 1)])
        same = pa.concat_arrays([first, inner])
        found = pc.sum(same).as_py() or 0
        if not found:
            return None
        self.duplicates += found
        if self._sampled < SAMPLE_SIZE:
            self._collect(pc.unique(pc.filter(keys, same)))
        return same

    def _collect(self, repeated: pa.Array) -> None:
        # The key repeated across two steps shows up at the end of one and the start of the next.
        if self._sampled and repeated[0].as_py() == self._last_sampled:
            repeated = repeated.slice(1)
        taken = repeated.slice(0, SAMPLE_SIZE - self._sampled)
        if len(taken):
            self._sample.append(taken)
            self._sampled += len(taken)
            self._last_sampled = taken[len(taken) - 1].as_py()

    def sample(self, key_type: pa.DataType) -> pa.Array:
        return pa.concat_arrays(self._sample) if self._sample else pa.array([], key_type)


# --------------------------------------------------------------------------- key checks


def count_keys(
    arrays: Iterable[pa.Array | pa.ChunkedArray],
    *,
    key_type: pa.DataType,
    column: str,
    memory_rows: int = DEFAULT_MEMORY_ROWS,
    fan_in: int = DEFAULT_FAN_IN,
    directory: Path | None = None,
) -> KeyCount:
    """Rows, NULLs, repeats and the smallest repeated keys of a stream of key arrays."""
    keys = _KeyStream(key_type, column)
    repeats = _Repeats()
    spill = _Spill(directory)
    try:
        sorter = _Sorter(pa.schema([(KEY, keys.comparable)]), [KEY], memory_rows, fan_in, spill)
        for array in arrays:
            for present in keys.present(array):
                sorter.add(pa.record_batch([present], names=[KEY]))
        for batch in sorter.sorted():
            repeats.feed(batch.column(0))
    finally:
        spill.close()
    sample = keys.restore(repeats.sample(keys.comparable))
    return KeyCount(keys.rows, keys.nulls, repeats.duplicates, sample)


@dataclass(frozen=True)
class KeyGroup:
    """One row group's key column as its file's footer describes it."""

    file: int
    group: int
    rows: int
    low: Any = None
    high: Any = None
    """The smallest and largest key; None when the writer left them out."""
    nulls_only: bool = False

    @property
    def bounded(self) -> bool:
        return self.low is not None and self.high is not None


def key_groups(footers: Sequence[pq.FileMetaData], column: str) -> list[KeyGroup]:
    """Every row group of ``footers`` with its key statistics (the column is a top-level one)."""
    groups = []
    for number, footer in enumerate(footers):
        names = [footer.schema.column(i).path for i in range(footer.num_columns)]
        if column not in names:
            raise KeyColumnError(f"file {number + 1} of the version has no key column {column!r}")
        index = names.index(column)
        for group in range(footer.num_row_groups):
            rows = footer.row_group(group).num_rows
            stats = footer.row_group(group).column(index).statistics
            low = high = None
            nulls_only = False
            if stats is not None:
                nulls_only = stats.has_null_count and stats.null_count == rows
                if stats.has_min_max:
                    try:
                        low, high = stats.min, stats.max
                    except (ValueError, TypeError, pa.ArrowException):
                        low = high = None  # a statistic pyarrow cannot turn into a value
            groups.append(KeyGroup(number, group, rows, low, high, nulls_only))
    return groups


def _clusters(groups: Sequence[KeyGroup]) -> list[list[KeyGroup]]:
    """Row groups whose key ranges overlap, cluster by cluster in ascending order of keys; each
    cluster's groups in file order. A group without statistics may overlap any: one cluster."""
    in_file_order = sorted(groups, key=lambda g: (g.file, g.group))
    if not groups:
        return []
    if not all(g.bounded for g in groups):
        return [in_file_order]
    try:
        ordered = sorted(groups, key=lambda g: (g.low, g.high))
    except TypeError:
        # Statistics of two types (files that disagree on the key's type): the read says so.
        return [in_file_order]
    clusters: list[list[KeyGroup]] = []
    high: Any = None
    for group in ordered:
        # Inclusive: two groups that share a boundary value may share that key.
        if clusters and group.low <= high:
            clusters[-1].append(group)
            high = max(high, group.high)
        else:
            clusters.append([group])
            high = group.high
    return [sorted(c, key=lambda g: (g.file, g.group)) for c in clusters]


class _Rows:
    """Cuts a stream of arrays at given row counts (arrays may span row groups)."""

    def __init__(self, arrays: Iterable[pa.Array]):
        self._arrays = iter(arrays)
        self._left: pa.Array | None = None

    def take(self, rows: int) -> Iterator[pa.Array]:
        while rows:
            array = self._left if self._left is not None else next(self._arrays, None)
            self._left = None
            if array is None:
                raise KeyColumnError(f"the files hold {rows:,} key(s) fewer than their footers say")
            if len(array) > rows:
                self._left = array.slice(rows)
                array = array.slice(0, rows)
            rows -= len(array)
            yield array

    def finish(self) -> None:
        extra = (0 if self._left is None else len(self._left)) + sum(len(a) for a in self._arrays)
        if extra:
            raise KeyColumnError(f"the files hold {extra:,} key(s) more than their footers say")


def count_key_groups(
    groups: Sequence[KeyGroup],
    read: Callable[[Sequence[KeyGroup]], Iterable[pa.Array]],
    *,
    key_type: pa.DataType,
    column: str,
    memory_rows: int = DEFAULT_MEMORY_ROWS,
    fan_in: int = DEFAULT_FAN_IN,
    directory: Path | None = None,
) -> KeyCount:
    """:func:`count_keys` over row groups, cluster by cluster (see the module's docstring).

    ``read(groups)`` yields the key column of those row groups, in that order; it is called once.
    A row group whose statistics say it holds only NULLs is counted and not read."""
    keys = _KeyStream(key_type, column)
    for group in groups:
        if group.nulls_only:
            keys.rows += group.rows
            keys.nulls += group.rows
    clusters = _clusters([g for g in groups if g.rows and not g.nulls_only])
    repeats = _Repeats()
    spill = _Spill(directory)
    schema = pa.schema([(KEY, keys.comparable)])
    try:
        rows = _Rows(read([g for cluster in clusters for g in cluster]))
        for cluster in clusters:
            # Clusters come in ascending order of keys and share none, so one stream of
            # repeats runs through them all and its sample is the smallest repeated keys.
            sorter = _Sorter(schema, [KEY], memory_rows, fan_in, spill)
            for array in rows.take(sum(g.rows for g in cluster)):
                for present in keys.present(array):
                    sorter.add(pa.record_batch([present], names=[KEY]))
            for batch in sorter.sorted():
                repeats.feed(batch.column(0))
        rows.finish()
    finally:
        spill.close()
    sample = keys.restore(repeats.sample(keys.comparable))
    return KeyCount(keys.rows, keys.nulls, repeats.duplicates, sample)


# --------------------------------------------------------------------------- first occurrences


class SortedPositions:
    """Row positions in ascending order: in memory or, past ``memory_rows``, as sorted runs in a
    private temporary directory, merged each time they are read; :meth:`close` (or the garbage
    collector) removes the directory."""

    def __init__(self, count: int, array: pa.Array | None, runs: Sequence[Path], spill: _Spill):
        self.count = count
        self._array = array
        self._runs = tuple(runs)
        self._closer = weakref.finalize(self, spill.close)

    def __len__(self) -> int:
        return self.count

    def chunks(self) -> Iterator[pa.Array]:
        if self._array is not None:
            yield self._array
            return
        if self._runs and not self._closer.alive:
            raise ValueError("these positions were closed")
        for batch in _merge([_read_run(p) for p in self._runs], [POSITION]):
            yield batch.column(0)

    def walk(self) -> PositionWalk:
        return PositionWalk(self.chunks())

    def close(self) -> None:
        self._closer()


class PositionWalk:
    """Walks ascending positions window by window: :meth:`below` hands on those under a bound."""

    def __init__(self, chunks: Iterator[pa.Array]):
        self._chunks = chunks
        self._head: pa.Array | None = None

    def below(self, end: int) -> pa.Array:
        parts = []
        while True:
            if self._head is None or not len(self._head):
                self._head = next(self._chunks, None)
                if self._head is None:
                    break
            head = self._head
            cut = bisect.bisect_left(range(len(head)), end, key=lambda i: head[i].as_py())
            parts.append(head.slice(0, cut))
            self._head = head.slice(cut)
            if len(self._head):
                break
        return pa.concat_arrays(parts) if parts else pa.array([], pa.int64())


@dataclass(frozen=True)
class Occurrences:
    """What :func:`first_occurrences` finds."""

    count: KeyCount
    later: SortedPositions
    """The positions of every row whose key an earlier row already had, ascending."""


def first_occurrences(
    arrays: Iterable[pa.Array | pa.ChunkedArray],
    *,
    key_type: pa.DataType,
    column: str,
    memory_rows: int = DEFAULT_MEMORY_ROWS,
    fan_in: int = DEFAULT_FAN_IN,
    directory: Path | None = None,
) -> Occurrences:
    """:func:`count_keys`, and the positions (0 for the first row of ``arrays``) of the rows to
    drop so that each key is kept once, at its first occurrence."""
    keys = _KeyStream(key_type, column)
    repeats = _Repeats()
    spill = _Spill(directory)
    try:
        by_key = _Sorter(
            pa.schema([(KEY, keys.comparable), (POSITION, pa.int64())]),
            [KEY, POSITION],
            memory_rows,
            fan_in,
            spill,
        )
        for array in arrays:
            for present, where in keys.present_with_positions(array):
                by_key.add(pa.record_batch([present, where], names=[KEY, POSITION]))
        schema = pa.schema([(POSITION, pa.int64())])
        by_position = _Sorter(schema, [POSITION], memory_rows, fan_in, spill)
        for batch in by_key.sorted():
            same = repeats.feed(batch.column(0))
            if same is not None:
                by_position.add(pa.record_batch([pc.filter(batch.column(1), same)], [POSITION]))
        later = _keep_sorted(by_position, repeats.duplicates, spill)
    except BaseException:
        spill.close()
        raise
    sample = keys.restore(repeats.sample(keys.comparable))
    return Occurrences(KeyCount(keys.rows, keys.nulls, repeats.duplicates, sample), later)


def _keep_sorted(sorter: _Sorter, count: int, spill: _Spill) -> SortedPositions:
    # Runs stay runs: merged while the rows are streamed, not written again as one file first.
    if sorter.runs:
        return SortedPositions(count, None, sorter.reduced_runs(), spill)
    ordered = [b.column(0) for b in sorter.sorted()]
    spill.close()
    array = pa.concat_arrays(ordered) if ordered else pa.array([], pa.int64())
    return SortedPositions(count, array, (), spill)
