"""The bronze layer on a local folder or on S3: the fixed layout and the all-or-nothing publish.

Layout (fixed, downstream readers depend on it)::

    <root>/origin=airbyte/database=bronze_acode/<table>/cog_dt_ingestion=YYYY-MM-DD/
        file_<table>_001.parquet, file_<table>_002.parquet, ..., _SUCCESS

A partition is visible only with its ``_SUCCESS`` marker, a JSON manifest naming its files and
rows, written last. Writers first build the whole new version in a staging place that readers
ignore (names starting with ``.`` or ``_``, which Spark, pyarrow and Athena skip), so a run killed
while writing leaves the previous version untouched. The swap itself is short: two renames on a
folder; on S3, remove the marker, server-side copy the staged objects in, delete the stale ones,
write the marker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from acode_dagster.errors import BronzeError, ConfigError
from acode_dagster.tables import BRONZE_DATABASE, BRONZE_ORIGIN, Table

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"
PARTITION_COLUMN = "cog_dt_ingestion"


def table_prefix(table: Table) -> str:
    return f"origin={BRONZE_ORIGIN}/database={BRONZE_DATABASE}/{table.name}"


def partition_prefix(table: Table, day: date) -> str:
    return f"{table_prefix(table)}/{PARTITION_COLUMN}={day:%Y-%m-%d}"


def file_name(table: Table, number: int) -> str:
    return f"file_{table.name}_{number:03d}.parquet"


@dataclass(frozen=True)
class ManifestFile:
    name: str
    rows: int
    bytes: int


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


class Staging(Protocol):
    """A new version of one partition being written. Files are written into :attr:`workdir`."""

    workdir: Path

    def add_file(self, path: Path) -> None:
        """``path`` (inside workdir) is complete; the store may move it off local disk now."""

    def publish(self, manifest: Manifest) -> None:
        """Make the staged version the visible one, replacing any previous version."""


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

    def visible_files(self, table: Table, day: date) -> list[str]:
        """Every object or file under the partition, marker included, published or not."""

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

    def _published(self, table: Table, day: date) -> list[str]:
        manifest = self.manifest(table, day)
        if manifest is None:
            raise BronzeError(f"partition {self.partition_url(table, day)} is not published")
        base = self._base(table, day)
        return [f"{base}/{f.name}" for f in manifest.files]

    def read_partition(
        self, table: Table, day: date, columns: Sequence[str] | None = None
    ) -> pa.Table:
        paths = self._published(table, day)
        schema = table.arrow_schema
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if not paths:
            return schema.empty_table()
        fs = self._filesystem()
        wanted = list(columns) if columns is not None else None
        return pa.concat_tables(pq.read_table(p, filesystem=fs, columns=wanted) for p in paths)

    def footers(self, table: Table, day: date) -> list[pq.FileMetaData]:
        fs = self._filesystem()
        footers = []
        for path in self._published(table, day):
            with fs.open_input_file(path) as handle:
                footers.append(pq.read_metadata(handle))
        return footers


class LocalStore(_PublishedFiles):
    """Bronze in a local folder. The swap is a pair of renames inside the table's folder."""

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)

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
        staging = _LocalStaging(work, final)
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


class _LocalStaging:
    def __init__(self, workdir: Path, final: Path):
        self.workdir = workdir
        self.final = final

    def add_file(self, path: Path) -> None:
        _fsync(path)

    def publish(self, manifest: Manifest) -> None:
        marker = self.workdir / SUCCESS_MARKER
        marker.write_text(manifest.to_json())
        _fsync(marker)
        _fsync(self.workdir)
        trash = self.final.parent / f".trash-{self.final.name}-{uuid.uuid4().hex[:12]}"
        # rename() cannot replace a non-empty folder, so the old version steps aside first;
        # a kill between the two renames leaves the partition absent, never mixed.
        if self.final.exists():
            self.final.rename(trash)
        self.workdir.rename(self.final)
        _fsync(self.final.parent)
        shutil.rmtree(trash, ignore_errors=True)
        for leftover in self.final.parent.glob(f".trash-{self.final.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def s3_client() -> S3Client:
    """boto3's client from its standard variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5)
    return boto3.session.Session().client("s3", config=config)


class S3Store(_PublishedFiles):
    """Bronze on S3 with the committer convention: ``_SUCCESS`` removed first, written last."""

    def __init__(self, bucket: str, prefix: str = "", client: S3Client | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def partition_url(self, table: Table, day: date) -> str:
        return f"s3://{self.bucket}/{self._key(partition_prefix(table, day))}"

    def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors(self.bucket):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    @contextmanager
    def staging(self, table: Table, day: date) -> Iterator[_S3Staging]:
        with _s3_errors(self.bucket):
            # Fail before reading a single source row when the bucket is missing or forbidden.
            self.client.head_bucket(Bucket=self.bucket)
        staged_prefix = self._key(
            table_prefix(table),
            "_staging",
            f"{PARTITION_COLUMN}={day:%Y-%m-%d}",
            uuid.uuid4().hex[:12],
        )
        with tempfile.TemporaryDirectory(prefix="acode-bronze-") as tmp:
            staging = _S3Staging(
                self, Path(tmp), staged_prefix, self._key(partition_prefix(table, day))
            )
            try:
                yield staging
            finally:
                staging.discard_staged()

    def manifest(self, table: Table, day: date) -> Manifest | None:
        key = self._key(partition_prefix(table, day), SUCCESS_MARKER)
        try:
            with _s3_errors(self.bucket):
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except BronzeError as exc:
            if "NoSuchKey" in str(exc) or "404" in str(exc):
                return None
            raise
        return Manifest.from_json(body.decode())

    def _filesystem(self) -> pafs.FileSystem:
        # The same standard variables boto3 reads, so both clients see the same S3.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return pafs.S3FileSystem(
            endpoint_override=endpoint,
            region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        )

    def _base(self, table: Table, day: date) -> str:
        return f"{self.bucket}/{self._key(partition_prefix(table, day))}"

    def visible_files(self, table: Table, day: date) -> list[str]:
        prefix = self._key(partition_prefix(table, day)) + "/"
        return sorted(k[len(prefix) :] for k in self._list(prefix))

    def probe(self, timeout_s: float) -> None:
        self.prepare_probe(timeout_s)()

    def prepare_probe(self, timeout_s: float) -> Callable[[], None]:
        """Put, get and delete ``<prefix>/_probe/<uuid>`` with a client of its own.

        The store's client retries five times with long read timeouts, which is right for a
        sync and wrong for a health check: this one makes a single attempt per call and waits
        ``timeout_s`` at most, so a dead endpoint fails in about ``timeout_s``. It reads the same
        standard variables as :func:`s3_client` (or keeps an injected client's endpoint and
        region), so it probes the S3 the store writes to. Building that client is local work
        that can take a second on a busy machine; it happens here, before the waiting part.
        """
        import contextlib

        import boto3
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
        client = boto3.session.Session().client("s3", config=config, **where)

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


class _S3Staging:
    def __init__(self, store: S3Store, workdir: Path, staged_prefix: str, final_prefix: str):
        self.store = store
        self.workdir = workdir
        self.staged_prefix = staged_prefix
        self.final_prefix = final_prefix
        self.staged: list[str] = []

    def add_file(self, path: Path) -> None:
        key = f"{self.staged_prefix}/{path.name}"
        with _s3_errors(self.store.bucket):
            self.store.client.upload_file(str(path), self.store.bucket, key)
        self.staged.append(path.name)
        # Local disk holds one file at a time, whatever the partition's size.
        path.unlink()

    def publish(self, manifest: Manifest) -> None:
        client, bucket = self.store.client, self.store.bucket
        marker = f"{self.final_prefix}/{SUCCESS_MARKER}"
        with _s3_errors(bucket):
            client.delete_object(Bucket=bucket, Key=marker)
            for name in self.staged:
                client.copy(
                    {"Bucket": bucket, "Key": f"{self.staged_prefix}/{name}"},
                    bucket,
                    f"{self.final_prefix}/{name}",
                )
            keep = {f"{self.final_prefix}/{name}" for name in self.staged}
            stale = [k for k in self.store._list(self.final_prefix + "/") if k not in keep]
            _delete_keys(client, bucket, stale)
            client.put_object(
                Bucket=bucket,
                Key=marker,
                Body=manifest.to_json().encode(),
                ContentType="application/json",
            )

    def discard_staged(self) -> None:
        try:
            keys = self.store._list(self.staged_prefix + "/")
            _delete_keys(self.store.client, self.store.bucket, keys)
        except BronzeError as exc:
            # Leftovers under _staging/ are invisible to readers; a failed clean-up is not fatal.
            log.warning("could not remove staged objects under %s: %s", self.staged_prefix, exc)


def _delete_keys(client: S3Client, bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )


@contextmanager
def _s3_errors(bucket: str) -> Iterator[None]:
    """S3 failures as BronzeError naming the bucket and the likely fix (no credentials shown)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        hints = {
            "NoSuchBucket": "the bucket does not exist: create it or fix ACODE_BRONZE_URL",
            "404": "the bucket or object does not exist: create the bucket or fix ACODE_BRONZE_URL",
            "AccessDenied": "access denied: check the AWS credentials and the bucket policy",
            "403": "access denied: check the AWS credentials and the bucket policy",
            "InvalidAccessKeyId": "the AWS access key is not known: check AWS_ACCESS_KEY_ID",
            "SignatureDoesNotMatch": "the AWS secret key is wrong: check AWS_SECRET_ACCESS_KEY",
        }
        hint = hints.get(code, "see the S3 error code")
        raise BronzeError(f"S3 bucket {bucket!r}: {code} — {hint}") from None
    except BotoCoreError as exc:
        raise BronzeError(
            f"S3 bucket {bucket!r}: {type(exc).__name__}: {exc} — check AWS_ENDPOINT_URL and the "
            "network",
            transient=True,
        ) from None
