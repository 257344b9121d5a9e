"""The bronze layer on a local folder or on S3: the fixed layout, staging, the publish swap and
quarantine.

Layout (fixed, downstream readers depend on it)::

    <root>/origin=airbyte/database=bronze_acode/<table>/cog_dt_ingestion=YYYY-MM-DD/
        file_<table>_001.parquet, file_<table>_002.parquet, ..., _SUCCESS

A partition is visible only with its ``_SUCCESS`` marker, a JSON manifest naming its files and
rows, written last. Everything else this module keeps lives beside the partitions under names
that readers skip (a leading ``.`` or ``_``, which Spark, pyarrow, Hive, Athena and Glue ignore):

    <table>/.staging-cog_dt_ingestion=D-<id>/        a version being written (folder)
    <table>/_staging/cog_dt_ingestion=D/<id>/         a version being written (S3)
    <table>/_quarantine/cog_dt_ingestion=D/<version>/ a version that failed its audit
    <table>/_leases/cog_dt_ingestion=D.json           who writes D now (acode_dagster.bronze.lease)

A new version is written whole into staging, audited there, and only then swapped in
(:meth:`Staging.publish`) or moved to quarantine (:meth:`Staging.quarantine`), so a run killed
at any point leaves the previous version untouched.

What a reader that ignores ``_SUCCESS`` sees during the swap:

- on a folder, the swap is two renames (old version aside, new version in): between them the
  partition folder is absent for a moment; it is never a mix of two versions.
- on S3 there is no multi-object rename. The marker is deleted first (marker-respecting readers
  see the partition absent), the new files are server-side copied over the same names all at
  once (in parallel), the old version's surplus files are deleted in one request, and the marker
  is written. For the length of those copies (about a second for a 512 MB file inside one
  region) a reader listing the folder can see new files beside old ones of other numbers; an
  Athena query or a Glue crawl should therefore read partitions through the marker or run away
  from the sync window (the daily schedule's 02:00).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from acode_dagster.bronze.encryption import KMS, SSE_SETTING, S3Encryption, encrypt_writes
from acode_dagster.bronze.iam import access_denied_hint
from acode_dagster.errors import BronzeError, ConfigError
from acode_dagster.tables import BRONZE_DATABASE, BRONZE_ORIGIN, Table, get_table

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_s3 import S3Client

    from acode_dagster.bronze.lease import LeaseRecords

log = logging.getLogger(__name__)

STAGING_DIR = "_staging"
QUARANTINE_DIR = "_quarantine"
LEASE_DIR = "_leases"
QUARANTINE_RECORD = "_QUARANTINE.json"
SUCCESS_MARKER = "_SUCCESS"
PARTITION_COLUMN = "cog_dt_ingestion"
_COPY_THREADS = 8

Fence = Callable[[], None]
"""Called before each step of a publish; raises when this writer no longer holds the lease."""


def table_prefix(table: Table) -> str:
    return f"origin={BRONZE_ORIGIN}/database={BRONZE_DATABASE}/{table.name}"


def partition_folder(day: date) -> str:
    return f"{PARTITION_COLUMN}={day:%Y-%m-%d}"


def partition_prefix(table: Table, day: date) -> str:
    return f"{table_prefix(table)}/{partition_folder(day)}"


def file_name(table: Table, number: int) -> str:
    return f"file_{table.name}_{number:03d}.parquet"


def _day_in(name: str) -> date | None:
    """The day of a ``cog_dt_ingestion=YYYY-MM-DD`` folder name (or a name that contains one)."""
    marker = f"{PARTITION_COLUMN}="
    start = name.find(marker)
    if start < 0:
        return None
    try:
        return date.fromisoformat(name[start + len(marker) : start + len(marker) + 10])
    except ValueError:
        return None


@dataclass(frozen=True)
class ManifestFile:
    name: str
    rows: int
    bytes: int
    sha256: str = ""
    """Hex SHA-256 of the file's bytes ("" in manifests written before checksums were kept):
    what a mirror or ``acode buckets diff --checksums`` verifies a copy against."""


_DIGEST_CHUNK = 8 * 1024 * 1024


def sha256_of(stream: Any) -> str:
    """SHA-256 of a binary stream read to its end, a bounded chunk at a time."""
    digest = hashlib.sha256()
    while chunk := stream.read(_DIGEST_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_of(handle)


@dataclass(frozen=True)
class Manifest:
    """What ``_SUCCESS`` holds: enough for a reader, or a check, to trust the partition."""

    table: str
    partition: str
    rows: int
    files: tuple[ManifestFile, ...]
    source: str
    """The server the rows were read from, without credentials."""
    replicator: str
    published_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    version: str = field(default_factory=lambda: uuid.uuid4().hex)
    note: str = ""
    """How the version got here when it was not a plain sync (a release from quarantine)."""

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        raw["files"] = tuple(ManifestFile(**f) for f in raw["files"])
        return cls(**raw)


@dataclass(frozen=True)
class Quarantined:
    """A version that failed a blocking check: its manifest and its check results, kept outside
    the published layout until it is released, discarded or swept."""

    manifest: Manifest
    checks: tuple[dict[str, Any], ...]
    """Each check's name, outcome, severity, measured figure and threshold, as audited."""
    quarantined_at: str
    by: str
    url: str = ""
    """Where it is kept (filled in when read back)."""

    @property
    def table(self) -> str:
        return self.manifest.table

    @property
    def day(self) -> date:
        return date.fromisoformat(self.manifest.partition)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def failed(self) -> list[str]:
        return [str(c["check"]) for c in self.checks if c.get("outcome") != "PASS"]

    def to_json(self) -> str:
        raw = {
            "manifest": json.loads(self.manifest.to_json()),
            "checks": list(self.checks),
            "quarantined_at": self.quarantined_at,
            "by": self.by,
        }
        return json.dumps(raw, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, url: str) -> Quarantined:
        raw = json.loads(text)
        return cls(
            manifest=Manifest.from_json(json.dumps(raw["manifest"])),
            checks=tuple(raw["checks"]),
            quarantined_at=raw["quarantined_at"],
            by=raw["by"],
            url=url,
        )


@dataclass(frozen=True)
class Leftover:
    """Staging of a writer that never finished (killed, or its clean-up failed)."""

    table: str
    day: date | None
    url: str
    modified: datetime
    bytes: int


class VersionFiles(Protocol):
    """The files of one version of a partition, wherever they are kept."""

    def footers(self) -> list[pq.FileMetaData]:
        """Each file's Parquet footer (schema, row groups, statistics), without the data."""

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The version's rows (only ``columns`` when given)."""

    def column_batches(
        self,
        column: str,
        footers: Sequence[pq.FileMetaData],
        row_groups: Sequence[tuple[int, int]],
    ) -> Iterator[pa.Array]:
        """Column ``column`` of the row groups ``(file, group)``, in that order, a batch at a time.

        ``file`` indexes ``footers``, which must be what :meth:`footers` returned: each file is
        opened with its footer, not made to read it again."""

    def sizes(self) -> dict[str, int | None]:
        """Each file's size in bytes by name, None for a file that is not there."""

    def digests(self) -> dict[str, str]:
        """Each file's SHA-256 by name, reading every byte once (a bounded chunk at a time)."""

    def fetch(self, name: str, target: Path) -> None:
        """Copy the file ``name`` to the local path ``target``, a bounded chunk at a time."""


class Staging(VersionFiles, Protocol):
    """A new version of one partition being written. Files are written into :attr:`workdir`."""

    workdir: Path
    url: str

    def add_file(self, path: Path) -> None:
        """``path`` (inside workdir) is complete; the store may move it off local disk now."""

    def add_copy(self, source: BronzeStore, table: Table, day: date, name: str) -> str:
        """Copy the published file ``name`` of ``source``'s partition in as a file of this
        version: server-side when both are buckets of one S3, else through local disk, one file
        at a time. Returns how (``server-side`` or ``streamed``)."""

    def publish(self, manifest: Manifest, fence: Fence) -> None:
        """Make the staged version the visible one, replacing any previous version."""

    def quarantine(self, record: Quarantined) -> str:
        """Keep the staged version (with ``record``) outside the published layout; its URL."""


class BronzeStore(Protocol):
    """One bronze root (a folder or an S3 bucket and prefix)."""

    url: str

    def partition_url(self, table: Table, day: date) -> str: ...

    def staging(self, table: Table, day: date) -> Any:
        """A context manager yielding a :class:`Staging`; leaving it without publish discards."""

    def manifest(self, table: Table, day: date) -> Manifest | None:
        """The published version's manifest, or None when the partition is not visible."""

    def read_partition(
        self, table: Table, day: date, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """The visible version's rows (for tests, checks and people); BronzeError when absent."""

    def footers(self, table: Table, day: date) -> list[pq.FileMetaData]:
        """The Parquet footer of each published file: schema, row groups and their statistics,
        read without the data (a range read of the file's tail on S3)."""

    def published(self, table: Table, day: date) -> VersionFiles:
        """The published version's files (what its manifest names); BronzeError when absent."""

    def visible_files(self, table: Table, day: date) -> list[str]:
        """Every object or file under the partition, marker included, published or not."""

    def lease_records(self, table: Table, day: date) -> LeaseRecords:
        """Where the lease of (table, day) is kept (:mod:`acode_dagster.bronze.lease`)."""

    def quarantined(self, table: Table, day: date | None = None) -> list[Quarantined]:
        """The quarantined versions of ``table`` (of ``day`` only, when given), oldest first."""

    def quarantined_files(self, entry: Quarantined) -> VersionFiles: ...

    def release(self, entry: Quarantined, manifest: Manifest, fence: Fence) -> None:
        """Publish a quarantined version as ``manifest`` and remove it from quarantine."""

    def discard(self, entry: Quarantined) -> None: ...

    def leftovers(self, table: Table) -> list[Leftover]:
        """Staging left behind by writers that did not finish."""

    def remove(self, leftover: Leftover) -> None: ...

    def probe(self, timeout_s: float) -> None:
        """Write a small object under ``_probe/`` (which readers skip), read it back and delete
        it; a BronzeError names the fix. Network calls give up after ``timeout_s``."""

    def prepare_probe(self, timeout_s: float) -> Callable[[], None]:
        """:meth:`probe` in two parts: what it builds locally (an S3 client) is built now, and
        the waiting part is returned, so a caller's time limit measures only the waiting."""


def parse_bronze_url(url: str, *, setting: str = "ACODE_BRONZE_URL") -> tuple[str, str]:
    """``('file', '/abs/path')`` or ``('s3', 'bucket/prefix')``; ConfigError names the fix."""
    text = url.strip()
    if not text:
        raise ConfigError(f"{setting} is empty; set a folder or s3://bucket[/prefix]")
    parts = urlsplit(text)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"{setting}={text!r} names no bucket; expected s3://bucket[/prefix]")
        return "s3", f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    if parts.scheme in ("", "file"):
        return "file", str(Path(parts.path if parts.scheme else text).expanduser().resolve())
    raise ConfigError(
        f"{setting}={text!r} has scheme {parts.scheme!r}; expected a local folder or "
        "s3://bucket[/prefix]"
    )


def open_store(url: str, *, setting: str = "ACODE_BRONZE_URL") -> BronzeStore:
    kind, where = parse_bronze_url(url, setting=setting)
    if kind == "s3":
        bucket, _, prefix = where.partition("/")
        return S3Store(bucket, prefix)
    return LocalStore(Path(where))


class _Files:
    """Files of one version on a pyarrow filesystem (published, staged or quarantined)."""

    def __init__(self, fs: pafs.FileSystem, paths: Sequence[str], schema: pa.Schema):
        self.fs = fs
        self.paths = list(paths)
        self.schema = schema

    def footers(self) -> list[pq.FileMetaData]:
        footers = []
        for path in self.paths:
            with self.fs.open_input_file(path) as handle:
                footers.append(pq.read_metadata(handle))
        return footers

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        schema = self.schema
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if not self.paths:
            return schema.empty_table()
        wanted = list(columns) if columns is not None else None
        return pa.concat_tables(
            pq.read_table(p, filesystem=self.fs, columns=wanted) for p in self.paths
        )

    def column_batches(
        self,
        column: str,
        footers: Sequence[pq.FileMetaData],
        row_groups: Sequence[tuple[int, int]],
        batch_rows: int = 65_536,
    ) -> Iterator[pa.Array]:
        if len(footers) != len(self.paths):
            raise BronzeError(
                f"{len(footers)} footer(s) for the {len(self.paths)} file(s) of a version: the "
                "version changed since its footers were read"
            )
        # One open per run of row groups of the same file; one group at a time, so the rows come
        # in the order asked whatever order the groups are asked in.
        for file, run in itertools.groupby(row_groups, key=lambda pair: pair[0]):
            with self.fs.open_input_file(self.paths[file]) as handle:
                parquet = pq.ParquetFile(handle, metadata=footers[file], pre_buffer=False)
                for _, group in run:
                    for batch in parquet.iter_batches(batch_rows, [group], columns=[column]):
                        yield batch.column(0)

    def _name(self, path: str) -> str:
        return path.rsplit("/", 1)[-1]

    def sizes(self) -> dict[str, int | None]:
        infos = self.fs.get_file_info(self.paths) if self.paths else []
        return {
            self._name(info.path): info.size if info.type == pafs.FileType.File else None
            for info in infos
        }

    def digests(self) -> dict[str, str]:
        found = {}
        for path in self.paths:
            with self.fs.open_input_stream(path) as handle:
                found[self._name(path)] = sha256_of(handle)
        return found

    def fetch(self, name: str, target: Path) -> None:
        """Copy the file ``name`` to the local ``target``, a bounded chunk at a time."""
        path = next(p for p in self.paths if self._name(p) == name)
        with self.fs.open_input_stream(path) as source, target.open("wb") as sink:
            while chunk := source.read(_DIGEST_CHUNK):
                sink.write(chunk)


class _PublishedFiles:
    """Reads of a published version, shared by the stores: only what the manifest names."""

    def manifest(self, table: Table, day: date) -> Manifest | None:
        raise NotImplementedError

    def partition_url(self, table: Table, day: date) -> str:
        raise NotImplementedError

    def _filesystem(self) -> pafs.FileSystem:
        raise NotImplementedError

    def _base(self, table: Table, day: date) -> str:
        raise NotImplementedError

    def published(self, table: Table, day: date) -> _Files:
        manifest = self.manifest(table, day)
        if manifest is None:
            raise BronzeError(f"partition {self.partition_url(table, day)} is not published")
        base = self._base(table, day)
        paths = [f"{base}/{f.name}" for f in manifest.files]
        return _Files(self._filesystem(), paths, table.arrow_schema)

    def read_partition(
        self, table: Table, day: date, columns: Sequence[str] | None = None
    ) -> pa.Table:
        return self.published(table, day).read(columns)

    def footers(self, table: Table, day: date) -> list[pq.FileMetaData]:
        return self.published(table, day).footers()


def _parquet_names(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if n.endswith(".parquet"))


def _schema_of(name: str) -> pa.Schema:
    from acode_dagster.tables import get_table

    return get_table(name).arrow_schema


class LocalStore(_PublishedFiles):
    """Bronze in a local folder. The swap is a pair of renames inside the table's folder."""

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)

    def _table_dir(self, table: Table) -> Path:
        return self.root / table_prefix(table)

    def _dir(self, table: Table, day: date) -> Path:
        return self.root / partition_prefix(table, day)

    def partition_url(self, table: Table, day: date) -> str:
        return str(self._dir(table, day))

    @contextmanager
    def staging(self, table: Table, day: date) -> Iterator[_LocalStaging]:
        final = self._dir(table, day)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BronzeError(
                f"cannot create the bronze folder {final.parent}: {exc.strerror}; check "
                "ACODE_BRONZE_URL and the folder's permissions"
            ) from None
        # Same folder as the final one, so the publish is a rename on one filesystem.
        work = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:12]}"
        work.mkdir()
        staging = _LocalStaging(self, table, work, final)
        try:
            yield staging
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def manifest(self, table: Table, day: date) -> Manifest | None:
        marker = self._dir(table, day) / SUCCESS_MARKER
        try:
            return Manifest.from_json(marker.read_text())
        except FileNotFoundError:
            return None

    def _filesystem(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    def _base(self, table: Table, day: date) -> str:
        return str(self._dir(table, day))

    def visible_files(self, table: Table, day: date) -> list[str]:
        folder = self._dir(table, day)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def lease_records(self, table: Table, day: date) -> LeaseRecords:
        return FileLeaseRecords(
            self._table_dir(table) / LEASE_DIR / f"{partition_folder(day)}.json"
        )

    def swap_in(self, folder: Path, final: Path, manifest: Manifest, fence: Fence) -> None:
        """Make ``folder`` (a complete version) the partition ``final``, marker last."""
        marker = folder / SUCCESS_MARKER
        marker.write_text(manifest.to_json())
        _fsync(marker)
        _fsync(folder)
        fence()
        trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:12]}"
        # rename() cannot replace a non-empty folder, so the old version steps aside first;
        # a kill between the two renames leaves the partition absent, never mixed.
        if final.exists():
            final.rename(trash)
        folder.rename(final)
        _fsync(final.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def quarantined(self, table: Table, day: date | None = None) -> list[Quarantined]:
        base = self._table_dir(table) / QUARANTINE_DIR
        days = [base / partition_folder(day)] if day else sorted(base.glob(f"{PARTITION_COLUMN}=*"))
        found = []
        for folder in days:
            for record in folder.glob(f"*/{QUARANTINE_RECORD}"):
                try:
                    found.append(Quarantined.from_json(record.read_text(), str(record.parent)))
                except FileNotFoundError:
                    continue  # released or discarded meanwhile
        return sorted(found, key=lambda q: q.quarantined_at)

    def quarantined_files(self, entry: Quarantined) -> VersionFiles:
        folder = Path(entry.url)
        paths = [str(folder / f.name) for f in entry.manifest.files]
        return _Files(self._filesystem(), paths, _schema_of(entry.table))

    def release(self, entry: Quarantined, manifest: Manifest, fence: Fence) -> None:
        folder = Path(entry.url)
        table = get_table(entry.table)
        # The record goes first: a folder half-way through a release is a leftover for the
        # sweep, never a version someone could release twice.
        (folder / QUARANTINE_RECORD).unlink()
        self.swap_in(folder, self._dir(table, entry.day), manifest, fence)

    def discard(self, entry: Quarantined) -> None:
        shutil.rmtree(entry.url, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(entry.url).parent.rmdir()

    def leftovers(self, table: Table) -> list[Leftover]:
        base = self._table_dir(table)
        found = []
        candidates = [*base.glob(".staging-*"), *base.glob(".trash-*")]
        # A release interrupted after its record was removed.
        candidates += [
            p
            for p in base.glob(f"{QUARANTINE_DIR}/*/*")
            if p.is_dir() and not (p / QUARANTINE_RECORD).exists()
        ]
        for path in candidates:
            try:
                stat = path.stat()
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            except OSError:
                continue
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            found.append(Leftover(table.name, _day_in(str(path)), str(path), modified, size))
        return found

    def remove(self, leftover: Leftover) -> None:
        shutil.rmtree(leftover.url, ignore_errors=True)

    def prepare_probe(self, timeout_s: float) -> Callable[[], None]:
        return lambda: self.probe(timeout_s)

    def probe(self, timeout_s: float) -> None:
        """Write, fsync, read back and delete ``<root>/_probe/<uuid>``.

        ``timeout_s`` is not enforced here: a local system call cannot be interrupted, so the
        caller (``acode_dagster.probes``) bounds how long it waits instead.
        """
        import contextlib

        folder = self.root / "_probe"
        path = folder / uuid.uuid4().hex
        body = f"acode bronze probe {path.name}".encode()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                path.write_bytes(body)
                _fsync(path)
                read = path.read_bytes()
            finally:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise BronzeError(
                f"cannot write, read and delete a probe file in the bronze folder {self.root}: "
                f"{exc.strerror or exc}; check ACODE_BRONZE_URL, the free space and the folder's "
                "permissions"
            ) from None
        # Only when empty: a concurrent probe may have its own file in there.
        with contextlib.suppress(OSError):
            folder.rmdir()
        if read != body:
            raise BronzeError(
                f"the bronze folder {self.root} returned different bytes than were written to "
                f"{path.name}: check the disk and the filesystem"
            )


class _StagedFiles:
    """The :class:`VersionFiles` side of a staging: its files as written so far."""

    def _files(self) -> _Files:
        raise NotImplementedError

    def footers(self) -> list[pq.FileMetaData]:
        return self._files().footers()

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        return self._files().read(columns)

    def column_batches(
        self,
        column: str,
        footers: Sequence[pq.FileMetaData],
        row_groups: Sequence[tuple[int, int]],
    ) -> Iterator[pa.Array]:
        return self._files().column_batches(column, footers, row_groups)

    def sizes(self) -> dict[str, int | None]:
        return self._files().sizes()

    def digests(self) -> dict[str, str]:
        return self._files().digests()

    def fetch(self, name: str, target: Path) -> None:
        self._files().fetch(name, target)

    workdir: Path

    def add_file(self, path: Path) -> None:
        raise NotImplementedError

    def add_copy(self, source: BronzeStore, table: Table, day: date, name: str) -> str:
        path = self.workdir / name
        source.published(table, day).fetch(name, path)
        self.add_file(path)
        return "streamed"


class _LocalStaging(_StagedFiles):
    def __init__(self, store: LocalStore, table: Table, workdir: Path, final: Path):
        self.store = store
        self.table = table
        self.workdir = workdir
        self.final = final
        self.url = str(workdir)

    def _files(self) -> _Files:
        names = _parquet_names([p.name for p in self.workdir.iterdir()])
        paths = [str(self.workdir / n) for n in names]
        return _Files(pafs.LocalFileSystem(), paths, self.table.arrow_schema)

    def add_file(self, path: Path) -> None:
        _fsync(path)

    def publish(self, manifest: Manifest, fence: Fence) -> None:
        self.store.swap_in(self.workdir, self.final, manifest, fence)

    def quarantine(self, record: Quarantined) -> str:
        kept = (
            self.store._table_dir(self.table)
            / QUARANTINE_DIR
            / self.final.name
            / record.manifest.version
        )
        kept.parent.mkdir(parents=True, exist_ok=True)
        (self.workdir / QUARANTINE_RECORD).write_text(record.to_json())
        self.workdir.rename(kept)
        return str(kept)


class FileLeaseRecords:
    """A lease record in a file, swapped under ``flock`` on a lock file beside it; the tag is
    a hash of the record's bytes (every record holds a fresh token and time, so none repeats)."""

    def __init__(self, path: Path):
        self.path = path
        self.where = str(path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BronzeError(
                f"cannot open the lease {self.path}: {exc.strerror}; check the bronze folder's "
                "permissions"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _tag(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()

    def _current(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def _write(self, body: bytes) -> str:
        partial = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        partial.write_bytes(body)
        _fsync(partial)
        partial.replace(self.path)
        return self._tag(body)

    def create(self, body: bytes) -> str | None:
        with self._locked():
            return None if self.path.exists() else self._write(body)

    def read(self) -> tuple[bytes, str] | None:
        body = self._current()
        return None if body is None else (body, self._tag(body))

    def swap(self, body: bytes, tag: str) -> str | None:
        with self._locked():
            current = self._current()
            if current is None or self._tag(current) != tag:
                return None
            return self._write(body)

    def delete(self, tag: str) -> bool:
        with self._locked():
            current = self._current()
            if current is None or self._tag(current) != tag:
                return False
            self.path.unlink()
            return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def s3_client(config: Config | None = None, **where: Any) -> S3Client:
    """boto3's client from its standard variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...),
    asking for the server-side encryption of ``ACODE_S3_SSE`` on every object it writes.

    Every S3 client of the platform is built here, so none writes an object unencrypted;
    ``config`` replaces the default retries and timeouts, ``where`` (``endpoint_url``,
    ``region_name``) the standard variables'."""
    import boto3
    from botocore.config import Config

    # Read first: a bad setting fails before any client is built, naming the variable.
    encryption = S3Encryption.from_env()
    if config is None:
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            # The publish copies files in parallel on one client.
            max_pool_connections=_COPY_THREADS * 2,
        )
    client = boto3.session.Session().client("s3", config=config, **where)
    return encrypt_writes(client, encryption)


class S3Store(_PublishedFiles):
    """Bronze on S3 with the committer convention: ``_SUCCESS`` removed first, written last."""

    def __init__(self, bucket: str, prefix: str = "", client: S3Client | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        # Threads of one store (parallel copies, concurrent manifest reads) share one client:
        # building a boto3 client is about a second of CPU, and each would build its own.
        with self._client_lock:
            if self._client is None:
                self._client = s3_client()
            return self._client

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def partition_url(self, table: Table, day: date) -> str:
        return f"s3://{self.bucket}/{self._key(partition_prefix(table, day))}"

    def _objects(self, prefix: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors(self.bucket):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                found.extend(dict(obj) for obj in page.get("Contents", []))
        return found

    def _list(self, prefix: str) -> list[str]:
        return [obj["Key"] for obj in self._objects(prefix)]

    @contextmanager
    def staging(self, table: Table, day: date) -> Iterator[_S3Staging]:
        with _s3_errors(self.bucket):
            # Fail before reading a single source row when the bucket is missing or forbidden.
            self.client.head_bucket(Bucket=self.bucket)
        staged_prefix = self._key(
            table_prefix(table), STAGING_DIR, partition_folder(day), uuid.uuid4().hex[:12]
        )
        with tempfile.TemporaryDirectory(prefix="acode-bronze-") as tmp:
            staging = _S3Staging(self, table, day, Path(tmp), staged_prefix)
            try:
                yield staging
            finally:
                staging.discard_staged()

    def _get(self, key: str) -> bytes | None:
        try:
            with _s3_errors(self.bucket):
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except BronzeError as exc:
            if "NoSuchKey" in str(exc) or "404" in str(exc):
                return None
            raise

    def manifest(self, table: Table, day: date) -> Manifest | None:
        body = self._get(self._key(partition_prefix(table, day), SUCCESS_MARKER))
        return None if body is None else Manifest.from_json(body.decode())

    def _filesystem(self) -> pafs.FileSystem:
        # The same standard variables boto3 reads, so both clients see the same S3.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return pafs.S3FileSystem(
            endpoint_override=endpoint,
            region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        )

    def _base(self, table: Table, day: date) -> str:
        return f"{self.bucket}/{self._key(partition_prefix(table, day))}"

    def _files(self, prefix: str, names: Sequence[str], table_name: str) -> _Files:
        paths = [f"{self.bucket}/{prefix}/{n}" for n in names]
        return _Files(self._filesystem(), paths, _schema_of(table_name))

    def visible_files(self, table: Table, day: date) -> list[str]:
        prefix = self._key(partition_prefix(table, day)) + "/"
        return sorted(k[len(prefix) :] for k in self._list(prefix))

    def lease_records(self, table: Table, day: date) -> LeaseRecords:
        key = self._key(table_prefix(table), LEASE_DIR, f"{partition_folder(day)}.json")
        return S3LeaseRecords(self, key)

    def copy_in(
        self,
        source_prefix: str,
        names: Sequence[str],
        final_prefix: str,
        manifest: Manifest,
        fence: Fence,
    ) -> None:
        """Make the objects ``source_prefix/<names>`` the partition ``final_prefix``."""
        client, bucket = self.client, self.bucket
        marker = f"{final_prefix}/{SUCCESS_MARKER}"
        fence()
        with _s3_errors(bucket):
            client.delete_object(Bucket=bucket, Key=marker)
        self._copy(source_prefix, names, final_prefix)
        keep = {f"{final_prefix}/{name}" for name in names}
        stale = [k for k in self._list(final_prefix + "/") if k not in keep]
        fence()
        with _s3_errors(bucket):
            _delete_keys(client, bucket, stale)
            client.put_object(
                Bucket=bucket,
                Key=marker,
                Body=manifest.to_json().encode(),
                ContentType="application/json",
            )

    def _copy(self, source_prefix: str, names: Sequence[str], target_prefix: str) -> None:
        """Server-side copies, all at once: the swap's window is one file's copy, not all."""

        def one(name: str) -> None:
            with _s3_errors(self.bucket, copy_from=self.bucket):
                self.client.copy(
                    {"Bucket": self.bucket, "Key": f"{source_prefix}/{name}"},
                    self.bucket,
                    f"{target_prefix}/{name}",
                )

        with ThreadPoolExecutor(max_workers=_COPY_THREADS) as pool:
            for done in [pool.submit(one, name) for name in names]:
                done.result()

    def _quarantine_prefix(self, table: Table, day: date, version: str) -> str:
        return self._key(table_prefix(table), QUARANTINE_DIR, partition_folder(day), version)

    def _prefix_of(self, url: str) -> str:
        return url.removeprefix(f"s3://{self.bucket}/")

    def quarantined(self, table: Table, day: date | None = None) -> list[Quarantined]:
        base = self._key(table_prefix(table), QUARANTINE_DIR) + "/"
        if day is not None:
            base += partition_folder(day) + "/"
        found = []
        for key in self._list(base):
            if key.endswith(f"/{QUARANTINE_RECORD}"):
                body = self._get(key)
                if body is not None:
                    url = f"s3://{self.bucket}/{key.rsplit('/', 1)[0]}"
                    found.append(Quarantined.from_json(body.decode(), url))
        return sorted(found, key=lambda q: q.quarantined_at)

    def quarantined_files(self, entry: Quarantined) -> VersionFiles:
        names = [f.name for f in entry.manifest.files]
        return self._files(self._prefix_of(entry.url), names, entry.table)

    def release(self, entry: Quarantined, manifest: Manifest, fence: Fence) -> None:
        final = self._key(partition_prefix(get_table(entry.table), entry.day))
        names = [f.name for f in manifest.files]
        self.copy_in(self._prefix_of(entry.url), names, final, manifest, fence)
        self.discard(entry)

    def discard(self, entry: Quarantined) -> None:
        prefix = self._prefix_of(entry.url)
        # The record first, so a discard cut short is a leftover, not a half-listed entry.
        with _s3_errors(self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=f"{prefix}/{QUARANTINE_RECORD}")
            _delete_keys(self.client, self.bucket, self._list(prefix + "/"))

    def leftovers(self, table: Table) -> list[Leftover]:
        base = self._key(table_prefix(table), STAGING_DIR) + "/"
        groups: dict[str, list[dict[str, Any]]] = {}
        for obj in self._objects(base):
            # <base>cog_dt_ingestion=D/<id>/<file>
            head = "/".join(obj["Key"][len(base) :].split("/")[:2])
            groups.setdefault(head, []).append(obj)
        return [
            Leftover(
                table.name,
                _day_in(head),
                f"s3://{self.bucket}/{base}{head}",
                max(o["LastModified"] for o in objs),
                sum(int(o.get("Size", 0)) for o in objs),
            )
            for head, objs in groups.items()
        ]

    def remove(self, leftover: Leftover) -> None:
        prefix = self._prefix_of(leftover.url)
        with _s3_errors(self.bucket):
            _delete_keys(self.client, self.bucket, self._list(prefix + "/"))

    def probe(self, timeout_s: float) -> None:
        self.prepare_probe(timeout_s)()

    def prepare_probe(self, timeout_s: float) -> Callable[[], None]:
        """Put, get and delete ``<prefix>/_probe/<uuid>`` with a client of its own.

        The store's client retries five times with long read timeouts, which is right for a
        sync and wrong for a health check: this one makes a single attempt per call and waits
        ``timeout_s`` at most, so a dead endpoint fails in about ``timeout_s``. It is built by
        :func:`s3_client` (keeping an injected client's endpoint and region), so it probes the
        S3 the store writes to, and its object is encrypted as every other. Building that client
        is local work that can take a second on a busy machine; it happens here, before the
        waiting part.
        """
        import contextlib

        from botocore.config import Config

        config = Config(
            # total_max_attempts counts the first call; max_attempts would count retries only.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
        )
        where: dict[str, Any] = {}
        if self._client is not None:
            where = {
                "endpoint_url": self._client.meta.endpoint_url,
                "region_name": self._client.meta.region_name,
            }
        client = s3_client(config, **where)

        def send_body_at_once(request: Any, **_: Any) -> None:
            # botocore asks for "100 Continue" before a PUT's body and, hearing nothing, waits a
            # fixed second before sending it: a hung endpoint would cost timeout_s + 1 s.
            if "Expect" in request.headers:
                del request.headers["Expect"]

        client.meta.events.register("before-send.s3.PutObject", send_body_at_once)

        def put_get_delete() -> None:
            key = self._key("_probe", uuid.uuid4().hex)
            body = f"acode bronze probe {key}".encode()
            with _s3_errors(self.bucket):
                client.put_object(Bucket=self.bucket, Key=key, Body=body)
                try:
                    read = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                except Exception:
                    # The read's error is the one to report; a leftover under _probe/ is invisible
                    # to readers.
                    with contextlib.suppress(Exception):
                        client.delete_object(Bucket=self.bucket, Key=key)
                    raise
                # A failed delete is a real fault: publishing needs delete_object too.
                client.delete_object(Bucket=self.bucket, Key=key)
            if read != body:
                raise BronzeError(
                    f"S3 bucket {self.bucket!r} returned different bytes than were written to "
                    f"{key}: check the endpoint (AWS_ENDPOINT_URL) and any proxy in between"
                )

        return put_get_delete


class _S3Staging(_StagedFiles):
    def __init__(self, store: S3Store, table: Table, day: date, workdir: Path, staged_prefix: str):
        self.store = store
        self.table = table
        self.day = day
        self.workdir = workdir
        self.staged_prefix = staged_prefix
        self.url = f"s3://{store.bucket}/{staged_prefix}"
        self.staged: list[str] = []

    def _files(self) -> _Files:
        return self.store._files(self.staged_prefix, self.staged, self.table.name)

    def add_file(self, path: Path) -> None:
        key = f"{self.staged_prefix}/{path.name}"
        with _s3_errors(self.store.bucket):
            self.store.client.upload_file(str(path), self.store.bucket, key)
        self.staged.append(path.name)
        # Local disk holds one file at a time, whatever the partition's size.
        path.unlink()

    def add_copy(self, source: BronzeStore, table: Table, day: date, name: str) -> str:
        if not isinstance(source, S3Store):
            return super().add_copy(source, table, day, name)
        key = f"{self.staged_prefix}/{name}"
        with _s3_errors(self.store.bucket, copy_from=source.bucket):
            # One S3 (one client's endpoint and credentials) holds both buckets: the bytes never
            # leave it. A multipart copy for large files, as upload_file does for uploads.
            self.store.client.copy(
                {"Bucket": source.bucket, "Key": source._key(partition_prefix(table, day), name)},
                self.store.bucket,
                key,
            )
        self.staged.append(name)
        return "server-side"

    def publish(self, manifest: Manifest, fence: Fence) -> None:
        final = self.store._key(partition_prefix(self.table, self.day))
        self.store.copy_in(self.staged_prefix, self.staged, final, manifest, fence)

    def quarantine(self, record: Quarantined) -> str:
        kept = self.store._quarantine_prefix(self.table, self.day, record.manifest.version)
        self.store._copy(self.staged_prefix, self.staged, kept)
        with _s3_errors(self.store.bucket):
            # The record last: a quarantine cut short is not listed as one.
            self.store.client.put_object(
                Bucket=self.store.bucket,
                Key=f"{kept}/{QUARANTINE_RECORD}",
                Body=record.to_json().encode(),
                ContentType="application/json",
            )
        return f"s3://{self.store.bucket}/{kept}"

    def discard_staged(self) -> None:
        try:
            keys = self.store._list(self.staged_prefix + "/")
            _delete_keys(self.store.client, self.store.bucket, keys)
        except BronzeError as exc:
            # Leftovers under _staging/ are invisible to readers and swept later.
            log.warning("could not remove staged objects under %s: %s", self.staged_prefix, exc)


_CONDITION_FAILED = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_ABSENT = frozenset({"NoSuchKey", "404"})


class S3LeaseRecords:
    """A lease record in one S3 object, changed only by conditional requests (the ETag is the
    tag): S3 performs the compare-and-swap, so it holds across machines."""

    def __init__(self, store: S3Store, key: str):
        self.store = store
        self.key = key
        self.where = f"s3://{store.bucket}/{key}"

    def _conditional(self, call: Callable[[], Any], tolerated: frozenset[str]) -> Any:
        from botocore.exceptions import ClientError

        try:
            with _s3_errors(self.store.bucket, passthrough=tolerated):
                return call()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in tolerated:
                return None
            raise

    def create(self, body: bytes) -> str | None:
        put = self._conditional(
            lambda: self.store.client.put_object(
                Bucket=self.store.bucket, Key=self.key, Body=body, IfNoneMatch="*"
            ),
            _CONDITION_FAILED,
        )
        return None if put is None else str(put["ETag"])

    def read(self) -> tuple[bytes, str] | None:
        got = self._conditional(
            lambda: self.store.client.get_object(Bucket=self.store.bucket, Key=self.key), _ABSENT
        )
        return None if got is None else (got["Body"].read(), str(got["ETag"]))

    def swap(self, body: bytes, tag: str) -> str | None:
        put = self._conditional(
            lambda: self.store.client.put_object(
                Bucket=self.store.bucket, Key=self.key, Body=body, IfMatch=tag
            ),
            _CONDITION_FAILED | _ABSENT,
        )
        return None if put is None else str(put["ETag"])

    def delete(self, tag: str) -> bool:
        done = self._conditional(
            lambda: self.store.client.delete_object(
                Bucket=self.store.bucket, Key=self.key, IfMatch=tag
            ),
            _CONDITION_FAILED | _ABSENT,
        )
        return done is not None


def _delete_keys(client: S3Client, bucket: str, keys: list[str]) -> None:
    from botocore.exceptions import ClientError

    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        with _s3_errors(bucket):
            answer = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
            # DeleteObjects answers 200 whatever happened to each key: a key it could not delete
            # (s3:DeleteObject denied on it, an Object Lock) is only listed under Errors.
            failed = answer.get("Errors") or []
            if failed:
                code, key = str(failed[0].get("Code", "?")), str(failed[0].get("Key"))
                raise ClientError({"Error": {"Code": code, "Message": key}}, "DeleteObjects")


@contextmanager
def _s3_errors(
    bucket: str, passthrough: frozenset[str] = frozenset(), copy_from: str | None = None
) -> Iterator[None]:
    """S3 failures as BronzeError naming the bucket and the likely fix (no credentials shown);
    errors whose code is in ``passthrough`` are answers the caller expects, and pass as they are.
    ``copy_from``: the requests are a server-side copy from that bucket into ``bucket``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        if code in passthrough:
            raise
        # Writes with ACODE_S3_SSE=aws:kms need the key's policy too (S3 answers AccessDenied).
        kms = (
            f"; with {SSE_SETTING}={KMS} also the KMS key's policy (kms:GenerateDataKey, "
            "kms:Decrypt)"
            if S3Encryption.from_env().mode == KMS
            else ""
        )
        # The S3 operation, so an access denied names the IAM action the role lacks.
        operation = str(getattr(exc, "operation_name", "") or "")
        denied = access_denied_hint(operation, bucket, copy_from) + kms
        hints = {
            "NoSuchBucket": "the bucket does not exist: create it or fix ACODE_BRONZE_URL",
            "404": "the bucket or object does not exist: create the bucket or fix ACODE_BRONZE_URL",
            "AccessDenied": denied,
            "403": denied,
            "InvalidAccessKeyId": "the AWS access key is not known: check AWS_ACCESS_KEY_ID",
            "SignatureDoesNotMatch": "the AWS secret key is wrong: check AWS_SECRET_ACCESS_KEY",
            "KMS.NotFoundException": "the KMS key is not known in the bucket's region: check "
            "ACODE_S3_KMS_KEY_ID",
            "KMS.DisabledException": "the KMS key is disabled: enable it or change "
            "ACODE_S3_KMS_KEY_ID",
            "KMS.KMSInvalidStateException": "the KMS key cannot be used (pending deletion or "
            "import): check ACODE_S3_KMS_KEY_ID",
        }
        hint = hints.get(code, "see the S3 error code")
        on = f" on {operation}" if operation else ""
        raise BronzeError(f"S3 bucket {bucket!r}: {code}{on} — {hint}") from None
    except BotoCoreError as exc:
        raise BronzeError(
            f"S3 bucket {bucket!r}: {type(exc).__name__}: {exc} — check AWS_ENDPOINT_URL and the "
            "network",
            transient=True,
        ) from None
