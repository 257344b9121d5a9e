"""Where an Airbyte connection lands its raw files, and how partition D is cut out of them.

The connections write Parquet through Airbyte's S3 destination into a staging prefix of the
bronze bucket (``ACODE_AIRBYTE_STAGING_URL``), one folder per stream, with the destination's
"S3 Path Format" set to ``${STREAM_NAME}/${YEAR}_${MONTH}_${DAY}_${EPOCH}_``:

    <staging>/<table>/2026_11_21_1763694000123_0.parquet

Each file holds the stream's columns as Airbyte types them (JSON-schema ``integer`` -> int64,
``big_integer`` (BIGINT UNSIGNED) -> string, ``number`` -> double, ``date`` -> date,
``timestamp_without_timezone`` -> timestamp, ``string``) after the four columns Airbyte adds
(``_airbyte_raw_id``, ``_airbyte_extracted_at``, ``_airbyte_generation_id``, ``_airbyte_meta``).
Fact tables sync as *incremental append* with cursor ``Data_Processamento`` and the catalogue as
*full refresh overwrite*, so a day's rows may be spread over several syncs, and Airbyte's
inclusive cursor (``>=`` the last value seen) lands the rows at the cursor again on the next
sync; after a failover the backup connection, whose cursor is its own, lands rows the primary
already landed. :meth:`Landing.cut` therefore keeps one row per key.

DECIMAL(15, s) columns travel as doubles; every such value has at most 15 significant digits,
which a double carries exactly, and Arrow's cast back to decimal128(15, s) rounds to the nearest,
so the value that left MySQL is the value published (tested with Hypothesis).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from acode_dagster.bronze.store import parse_bronze_url
from acode_dagster.errors import BronzeError, SourceError
from acode_dagster.quality import repeated_values
from acode_dagster.replicator import conform
from acode_dagster.tables import Table, day_window

STAGING_SETTING = "ACODE_AIRBYTE_STAGING_URL"
AIRBYTE_META_TYPE = pa.struct(
    [
        pa.field("sync_id", pa.int64()),
        pa.field(
            "changes",
            pa.list_(
                pa.struct(
                    [
                        pa.field("field", pa.string()),
                        pa.field("change", pa.string()),
                        pa.field("reason", pa.string()),
                    ]
                )
            ),
        ),
    ]
)
AIRBYTE_FIELDS = (
    pa.field("_airbyte_raw_id", pa.string(), nullable=False),
    pa.field("_airbyte_extracted_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("_airbyte_generation_id", pa.int64()),
    pa.field("_airbyte_meta", AIRBYTE_META_TYPE),
)
AIRBYTE_COLUMNS = tuple(f.name for f in AIRBYTE_FIELDS)


def landed_type(bronze_type: pa.DataType) -> pa.DataType:
    """How Airbyte's S3 destination types a column that bronze types ``bronze_type``."""
    if pa.types.is_uint64(bronze_type):
        # Past 2^63 a BIGINT UNSIGNED does not fit Airbyte's 64-bit signed integer; the MySQL
        # source declares it a big_integer, which the destination writes as text.
        return pa.string()
    if pa.types.is_integer(bronze_type):
        return pa.int64()
    if pa.types.is_decimal(bronze_type) or pa.types.is_floating(bronze_type):
        return pa.float64()
    return bronze_type


def landed_schema(table: Table) -> pa.Schema:
    """The schema of the files a connection lands for ``table``."""
    return pa.schema(
        [
            *AIRBYTE_FIELDS,
            *(pa.field(f.name, landed_type(f.type), nullable=True) for f in table.arrow_schema),
        ]
    )


def landed_file_name(extracted_at: datetime, part: int) -> str:
    """``YYYY_MM_DD_<epoch ms>_<part>.parquet``, what the documented S3 Path Format yields."""
    epoch_ms = int(extracted_at.timestamp() * 1000)
    return f"{extracted_at:%Y_%m_%d}_{epoch_ms}_{part}.parquet"


def to_landed(
    batch: pa.RecordBatch, table: Table, extracted_at: datetime, sync_id: int
) -> pa.Table:
    """A batch in the bronze schema as Airbyte would land it (used by the loopback server)."""
    rows = batch.num_rows
    meta = pa.array(
        [{"sync_id": sync_id, "changes": []}] * rows,
        type=AIRBYTE_META_TYPE,
    )
    columns: list[pa.Array] = [
        _raw_ids(rows),
        pa.array([extracted_at] * rows, pa.timestamp("ms", tz="UTC")),
        pa.array([sync_id] * rows, pa.int64()),
        meta,
    ]
    schema = landed_schema(table)
    for name in table.column_names:
        columns.append(batch.column(name).cast(schema.field(name).type))
    return pa.Table.from_arrays(columns, schema=schema)


def _raw_ids(rows: int) -> pa.Array:
    """One UUID-shaped id per row, built in Arrow: a random UUID's first 24 characters, then the
    row's number in 12 digits (one Python object per row would cost more than the rows' I/O)."""
    head = str(uuid.uuid4())[:24]
    numbers = pc.utf8_lpad(pc.cast(pa.array(range(rows), pa.int64()), pa.string()), 12, "0")
    return pc.binary_join_element_wise(pa.scalar(head), numbers, "")


def from_landed(batch: pa.RecordBatch, table: Table) -> pa.RecordBatch:
    """The landed columns of ``table`` cast back to the bronze contract; Airbyte's own dropped.

    ``safe`` casts: an integer that does not fit its unsigned column, or a double that is not a
    value of its DECIMAL, fails with the column named rather than landing altered.
    """
    schema = table.arrow_schema
    missing = [n for n in schema.names if n not in batch.schema.names]
    if missing:
        raise SourceError(
            f"the landed files of {table.name} lack column(s) {', '.join(missing)}: select them "
            "in the Airbyte connection's stream settings (or refresh its source schema)"
        )
    return conform(
        batch.select(schema.names),
        schema,
        fix=f"the landed files of {table.name} hold a value the contract does not admit",
    )


@dataclass(frozen=True)
class LandingStats:
    files: int
    landed_rows: int
    """Rows of the day found in the landed files, duplicates included."""
    duplicates: int
    """Of those, repeats of a key already seen (Airbyte's inclusive cursor, two connections)."""


class Landing:
    """The staging prefix the connections write into: a folder or ``s3://bucket/prefix``."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        kind, where = parse_bronze_url(url, setting=STAGING_SETTING)
        self._kind = kind
        self._root = where

    def filesystem(self) -> pafs.FileSystem:
        if self._kind == "s3":
            from acode_dagster.bronze.store import S3Store

            return S3Store(self._root.partition("/")[0])._filesystem()
        return pafs.LocalFileSystem()

    def stream_path(self, table: Table) -> str:
        """The stream's folder, in the filesystem's own terms (no scheme)."""
        return f"{self._root}/{table.name}"

    def stream_url(self, table: Table) -> str:
        return f"{self.url}/{table.name}"

    def files(self, table: Table) -> list[str]:
        fs = self.filesystem()
        selector = pafs.FileSelector(self.stream_path(table), allow_not_found=True)
        try:
            infos = fs.get_file_info(selector)
        except OSError as exc:
            raise BronzeError(
                f"cannot list the Airbyte landing folder {self.stream_url(table)}: {exc} — check "
                f"{STAGING_SETTING} and the bucket's permissions",
                transient=True,
            ) from None
        return sorted(
            i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
        )

    def write(
        self, table: Table, data: pa.Table, name: str, row_group_rows: int | None = None
    ) -> str:
        """Write one landed file, as the destination does."""
        fs = self.filesystem()
        fs.create_dir(self.stream_path(table), recursive=True)
        path = f"{self.stream_path(table)}/{name}"
        pq.write_table(
            data, path, filesystem=fs, compression="snappy", row_group_size=row_group_rows
        )
        return path

    def cut(self, table: Table, day: date) -> DayCut:
        """Partition ``day`` as landed: counted now (key column only), streamed on demand.

        Both passes read the landed files row group by row group, skipping the groups whose
        ``Data_Processamento`` statistics lie outside the day, and keep the day's rows of each.
        The first reads only the key and cursor columns, to count the day's distinct rows and
        find the keys landed more than once; the second (:meth:`DayCut.batches`) streams the rows
        and keeps the first of each repeated key. Memory is the key column of one day plus a
        batch, never the day's rows. A snapshot table takes every landed row (overwrite leaves
        only the last sync's).
        """
        scan = _DayScan(self.filesystem(), tuple(self.files(table)), table, day)
        key_type = table.arrow_schema.field(table.key).type
        # Cast to the key's own type as they come (a BIGINT lands as text): 8 bytes a row.
        keys = pa.chunked_array(
            [batch.column(table.key).cast(key_type) for batch in scan.batches([table.key])],
            type=key_type,
        )
        duplicates, repeated = repeated_values(keys)
        stats = LandingStats(files=len(scan.files), landed_rows=len(keys), duplicates=duplicates)
        return DayCut(table, scan, repeated, stats)

    def day_batches(
        self, table: Table, day: date, batch_rows: int, stats: list[LandingStats] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """:meth:`cut` and stream in one call; ``stats`` receives the cut's figures."""
        cut = self.cut(table, day)
        if stats is not None:
            stats.append(cut.stats)
        return cut.batches(batch_rows)


@dataclass(frozen=True)
class _DayScan:
    """The rows of one day in a set of landed files, read one row group at a time.

    Not Arrow's dataset scanner: it reads ahead several row groups of every column whatever its
    readahead options say (measured: 400 MB of batches in flight for a 2M-row landing), where
    this holds one batch."""

    filesystem: pafs.FileSystem
    files: tuple[str, ...]
    table: Table
    day: date

    def batches(self, columns: Sequence[str], batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        cursor = self.table.partition_column
        wanted = list(dict.fromkeys([*columns, *([cursor] if cursor else [])]))
        start, end = day_window(self.day)
        for path in self.files:
            with self.filesystem.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=False)
                groups = [
                    g for g in range(parquet.num_row_groups) if self._may_hold_day(parquet, g)
                ]
                for batch in parquet.iter_batches(batch_rows, groups, columns=wanted):
                    if cursor is not None:
                        stamps = batch.column(cursor)
                        inside = pc.and_(
                            pc.greater_equal(stamps, pa.scalar(start, stamps.type)),
                            pc.less(stamps, pa.scalar(end, stamps.type)),
                        )
                        batch = batch.filter(inside)  # noqa: PLW2901
                    if batch.num_rows:
                        yield batch.select(list(columns))

    def _may_hold_day(self, parquet: pq.ParquetFile, group: int) -> bool:
        cursor = self.table.partition_column
        if cursor is None:
            return True
        metadata = parquet.metadata.row_group(group)
        # Leaf columns, not fields: Airbyte's nested _airbyte_meta counts as several.
        leaves = [metadata.column(i) for i in range(metadata.num_columns)]
        chunk = next((c for c in leaves if c.path_in_schema == cursor), None)
        if chunk is None:
            return True  # from_landed names the missing column
        statistics = chunk.statistics
        if statistics is None or not statistics.has_min_max:
            return True
        start, end = day_window(self.day)
        return bool(statistics.min < end and statistics.max >= start)


@dataclass(frozen=True)
class DayCut:
    """One partition's rows in the landed files, counted; :meth:`batches` streams them."""

    table: Table
    scan: _DayScan
    repeated: pa.Array
    stats: LandingStats

    @property
    def rows(self) -> int:
        """Distinct rows of the day: what the partition will hold."""
        return self.stats.landed_rows - self.stats.duplicates

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        seen: set[Any] = set()
        for landed in self.scan.batches(self.table.column_names, batch_rows):
            kept = _first_of_each(landed, self.table.key, self.repeated, seen)
            yield from_landed(kept, self.table)


def _first_of_each(
    batch: pa.RecordBatch, key: str, repeated: pa.Array, seen: set[Any]
) -> pa.RecordBatch:
    """Drop the rows whose key is a repeated one already emitted (in this batch or before)."""
    if not len(repeated):
        return batch
    # The repeated keys are in the key's bronze type; a BIGINT key lands as text.
    keys = batch.column(key).cast(repeated.type)
    mask = pc.is_in(keys, value_set=repeated)
    if not pc.any(mask).as_py():
        return batch
    keep = [True] * batch.num_rows
    # Only the repeated keys' rows visit Python; they are few beside the batch.
    for index in pc.indices_nonzero(mask).to_pylist():
        value = keys[index].as_py()
        if value in seen:
            keep[index] = False
        else:
            seen.add(value)
    return batch.filter(pa.array(keep))
