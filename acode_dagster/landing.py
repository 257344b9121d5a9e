"""Where an Airbyte connection lands its raw files, and how partition D is cut out of them.

The connections write Parquet through Airbyte's S3 destination into a staging prefix of a
bronze bucket, one folder per stream, with the destination's "S3 Path Format" set to
``${STREAM_NAME}/${YEAR}_${MONTH}_${DAY}_${EPOCH}_``. There is one staging prefix per bucket:
``ACODE_AIRBYTE_STAGING_URL`` in the primary bucket and, for bucket failover,
``ACODE_AIRBYTE_BACKUP_STAGING_URL`` in the backup bucket, each fed by connections of its own
(a destination is fixed in Airbyte):

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from acode_dagster.bronze.keys import (
    DEFAULT_MEMORY_ROWS,
    PositionWalk,
    SortedPositions,
    first_occurrences,
    positions,
)
from acode_dagster.bronze.store import open_store, parse_bronze_url
from acode_dagster.errors import AcodeError, BronzeError, SourceError
from acode_dagster.replicator import conform
from acode_dagster.routing import BACKUP, PRIMARY, Role
from acode_dagster.tables import Table, day_window

STAGING_SETTING = "ACODE_AIRBYTE_STAGING_URL"
BACKUP_STAGING_SETTING = "ACODE_AIRBYTE_BACKUP_STAGING_URL"
STAGING_SETTINGS: Mapping[Role, str] = {PRIMARY: STAGING_SETTING, BACKUP: BACKUP_STAGING_SETTING}
"""The setting naming each bucket's staging prefix."""
PROBE_FOLDER = "_probe"
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
    """The staging prefix the connections write into: a folder or ``s3://bucket/prefix``;
    ``setting`` is the variable that names it, for errors."""

    def __init__(self, url: str, setting: str = STAGING_SETTING):
        self.url = url.rstrip("/")
        self.setting = setting
        kind, where = parse_bronze_url(url, setting=setting)
        self._kind = kind
        self._root = where

    @property
    def location(self) -> tuple[str, str]:
        """``(bucket, prefix)`` of an S3 prefix; ``("", folder)`` for a folder."""
        if self._kind == "s3":
            bucket, _, prefix = self._root.partition("/")
            return bucket, prefix
        return "", self._root

    def prepare_probe(self, timeout_s: float) -> Callable[[], None]:
        """Write, read back and delete a small object under ``<staging>/_probe/`` (which the
        cut never reads: it lists the stream folders only), as the bronze probe does; what it
        builds locally (an S3 client) is built now, the waiting part is returned. Its errors
        name the staging prefix and its setting."""
        store = open_store(self.url, setting=self.setting)
        put_get_delete = store.prepare_probe(timeout_s)

        def probe() -> None:
            try:
                put_get_delete()
            except AcodeError as exc:
                # The store's hints name the bronze setting; here the staging's is the one to fix.
                why = str(exc).replace("ACODE_BRONZE_URL", self.setting)
                raise BronzeError(
                    f"cannot write, read and delete a probe object under "
                    f"{self.url}/{PROBE_FOLDER}/ ({self.setting}): {why}",
                    transient=exc.transient,
                ) from None

        return probe

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
                f"{self.setting} and the bucket's permissions",
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

    def cut(self, table: Table, day: date, *, memory_rows: int = DEFAULT_MEMORY_ROWS) -> DayCut:
        """Partition ``day`` as landed: counted now (key column only), streamed on demand.

        Each landed file's footer is read once, here; both passes read the row groups whose
        ``Data_Processamento`` statistics may hold the day, row group by row group, and keep the
        day's rows of each. The first pass reads only the key and cursor columns and numbers the
        day's rows in landed order; :func:`~acode_dagster.bronze.keys.first_occurrences` finds,
        in bounded memory (``memory_rows`` keys; the rest spills to a temporary folder), the
        positions of the rows whose key an earlier row had. The second (:meth:`DayCut.batches`)
        streams the rows and drops those positions, so the first landed row of each key is kept.
        Memory is a batch and ``memory_rows`` keys, never the day's rows or keys. A snapshot
        table takes every landed row (overwrite leaves only the last sync's).
        """
        scan = _DayScan.open(self.filesystem(), self.files(table), table, day)
        key_type = table.arrow_schema.field(table.key).type
        # Cast to the key's own type as they come (a BIGINT lands as text): 8 bytes a row.
        keys = (batch.column(table.key).cast(key_type) for batch in scan.batches([table.key]))
        found = first_occurrences(
            keys, key_type=key_type, column=table.key, memory_rows=memory_rows
        )
        stats = LandingStats(
            files=len(scan.files), landed_rows=found.count.rows, duplicates=found.count.duplicates
        )
        return DayCut(table, scan, found.later, stats)

    def day_batches(
        self,
        table: Table,
        day: date,
        batch_rows: int,
        stats: list[LandingStats] | None = None,
        *,
        memory_rows: int = DEFAULT_MEMORY_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        """:meth:`cut` and stream in one call; ``stats`` receives the cut's figures."""
        cut = self.cut(table, day, memory_rows=memory_rows)
        if stats is not None:
            stats.append(cut.stats)
        return cut.batches(batch_rows)


@dataclass(frozen=True)
class _LandedFile:
    path: str
    footer: pq.FileMetaData
    groups: tuple[int, ...]
    """The row groups whose cursor statistics may hold the day (all of them for a snapshot)."""


@dataclass(frozen=True)
class _DayScan:
    """The rows of one day in a set of landed files, read one row group at a time.

    Not Arrow's dataset scanner: it reads ahead several row groups of every column whatever its
    readahead options say (measured: 400 MB of batches in flight for a 2M-row landing), where
    this holds one batch. Each file's footer is read once (:meth:`open`) and handed to every
    later open of the file, so a pass costs no footer read."""

    filesystem: pafs.FileSystem
    files: tuple[_LandedFile, ...]
    table: Table
    day: date

    @classmethod
    def open(
        cls, filesystem: pafs.FileSystem, paths: Sequence[str], table: Table, day: date
    ) -> _DayScan:
        files = []
        for path in paths:
            with filesystem.open_input_file(path) as handle:
                footer = pq.read_metadata(handle)
            groups = tuple(
                g for g in range(footer.num_row_groups) if _may_hold_day(footer, g, table, day)
            )
            files.append(_LandedFile(path, footer, groups))
        return cls(filesystem, tuple(files), table, day)

    def batches(self, columns: Sequence[str], batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        for landed in self.files:
            if landed.groups:
                yield from self._file_batches(landed, columns, batch_rows)

    def _file_batches(
        self, landed: _LandedFile, columns: Sequence[str], batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        # A generator of its own, so one file's reader and last batch are gone when it ends,
        # before the next file's reader is made.
        cursor = self.table.partition_column
        wanted = list(dict.fromkeys([*columns, *([cursor] if cursor else [])]))
        start, end = day_window(self.day)
        with self.filesystem.open_input_file(landed.path) as handle:
            parquet = pq.ParquetFile(handle, metadata=landed.footer, pre_buffer=False)
            for batch in parquet.iter_batches(batch_rows, list(landed.groups), columns=wanted):
                if cursor is not None:
                    stamps = batch.column(cursor)
                    inside = pc.and_(
                        pc.greater_equal(stamps, pa.scalar(start, stamps.type)),
                        pc.less(stamps, pa.scalar(end, stamps.type)),
                    )
                    batch = batch.filter(inside)  # noqa: PLW2901
                if batch.num_rows:
                    yield batch.select(list(columns))


def _may_hold_day(footer: pq.FileMetaData, group: int, table: Table, day: date) -> bool:
    cursor = table.partition_column
    if cursor is None:
        return True
    metadata = footer.row_group(group)
    # Leaf columns, not fields: Airbyte's nested _airbyte_meta counts as several.
    leaves = [metadata.column(i) for i in range(metadata.num_columns)]
    chunk = next((c for c in leaves if c.path_in_schema == cursor), None)
    if chunk is None:
        return True  # from_landed names the missing column
    statistics = chunk.statistics
    if statistics is None or not statistics.has_min_max:
        return True
    start, end = day_window(day)
    return bool(statistics.min < end and statistics.max >= start)


@dataclass(frozen=True)
class DayCut:
    """One partition's rows in the landed files, counted; :meth:`batches` streams them."""

    table: Table
    scan: _DayScan
    later: SortedPositions
    """Positions (in the day's landed order) of the rows whose key an earlier row had."""
    stats: LandingStats

    @property
    def rows(self) -> int:
        """Distinct rows of the day: what the partition will hold."""
        return self.stats.landed_rows - self.stats.duplicates

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The day's rows in landed order, each key's first landed row only, in the bronze
        schema. The rows to drop come in ascending order beside the batches, so each batch
        takes its own from the front: one pass over both, whatever the number of repeats."""
        later = self.later.walk()
        start = 0
        for landed in self.scan.batches(self.table.column_names, batch_rows):
            rows = landed.num_rows
            keep = _kept(later, start, rows)
            start += rows
            yield from_landed(landed if keep is None else landed.filter(keep), self.table)
        if start != self.stats.landed_rows:
            raise BronzeError(
                f"the Airbyte landing of {self.table.name} {self.scan.day:%Y-%m-%d} changed while "
                f"it was cut ({self.stats.landed_rows:,} rows of the day counted, {start:,} read): "
                "sync again"
            )

    def close(self) -> None:
        """Remove the positions kept on disk now (the garbage collector does it otherwise)."""
        self.later.close()


_MASK_ROWS = 8_192


def _kept(later: PositionWalk, start: int, rows: int) -> pa.Array | None:
    """Which of the rows at ``start, ..., start + rows - 1`` to keep; None for all of them.

    Window by window: ``is_in`` hashes its value set at about 240 bytes a value (15 MB for a
    batch of 65,536 dropped rows), so each window hashes at most 8,192. A window dropped whole
    (a day landed again) needs no hash at all."""
    masks = []
    dropped_any = False
    for offset in range(0, rows, _MASK_ROWS):
        size = min(_MASK_ROWS, rows - offset)
        dropped = later.below(start + offset + size)
        where = positions(start + offset, size)
        if not len(dropped):
            masks.append(pc.is_valid(where))
        elif len(dropped) == size:
            masks.append(pc.is_null(where))
        else:
            masks.append(pc.invert(pc.is_in(where, value_set=dropped)))
        dropped_any = dropped_any or bool(len(dropped))
    if not dropped_any:
        return None
    return masks[0] if len(masks) == 1 else pa.concat_arrays(masks)
