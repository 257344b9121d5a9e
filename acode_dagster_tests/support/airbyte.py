"""A loopback Airbyte: the API endpoints dagster-airbyte calls, with syncs that really run.

:class:`LoopbackAirbyte` is a threaded HTTP server on 127.0.0.1 that answers the Airbyte public
API (``/api/public/v1``) and the two configuration API calls (``/api/v1``) that dagster-airbyte
0.29's ``AirbyteClient`` makes, with the shapes Airbyte documents. A sync job is real: a thread
per job reads the connection's MySQL server with the embedded replicator's Arrow reader and lands
Parquet where and how the connections' S3 destination does (:mod:`acode_dagster.landing`):

* fact tables are *incremental append* on cursor ``Data_Processamento``: a sync lands the rows
  ``>=`` the connection's saved cursor for that stream (inclusive, as Airbyte's cursor is; no
  filter on the first sync) and saves the largest value it landed as the new cursor, only when
  the job succeeds; every connection keeps its own cursors;
* the catalogue is *full refresh overwrite*: once a sync succeeds only its own file is left in
  the stream's folder;
* each stream of a job is streamed through one ``pq.ParquetWriter`` into
  ``<stream folder>/<YYYY_MM_DD_epochms_part>.parquet`` (the S3 Path Format
  ``${STREAM_NAME}/${YEAR}_${MONTH}_${DAY}_${EPOCH}_``); a stream without rows writes no file;
* a job that fails or is cancelled keeps the files it wrote (each a complete Parquet file of the
  rows read so far, as a destination's flushed parts are) and commits no cursor and no overwrite;
  a cancelled job's thread stops at its next batch.

It is for tests, demos and the bench. In pytest, the ``airbyte_server`` fixture starts one with
the two ACODE connections on the session's MariaDB pair; anywhere else::

    with LoopbackAirbyte.for_pair(primary, backup, "s3://bucket/_airbyte_staging") as airbyte:
        os.environ.update(airbyte.environ())

``for_pair(..., backup_staging_url="s3://backup-bucket/_airbyte_staging")`` adds the two
connections of bucket failover, one from each server into the backup bucket's staging, and
:meth:`LoopbackAirbyte.environ` then names them and both staging prefixes.

Faults are knobs, settable from any thread while the server runs: :meth:`fail_next_jobs`
(with the failure's origin: the source's, or the destination's),
:meth:`hang_jobs`, :meth:`set_batch_delay`, :meth:`fail_requests` / :meth:`fail_all_requests`,
:meth:`reject_credentials`, :meth:`remove_connection`, :meth:`set_connection_status`,
:meth:`set_cursor`. Every request is recorded as a :class:`LoggedRequest` with the connection it
concerns and no secret (:attr:`request_log`, :meth:`requests`, :meth:`jobs_started`,
:meth:`cancellations`); :meth:`job` and :meth:`wait_for_job` show a job as the server holds it.

Shapes and behaviour follow airbyte-platform (``airbyte-api/server-api/src/main/openapi/``
``api_documentation_{jobs,connections,destinations,workspaces,applications}.yaml``,
``config.yaml``, ``airbyte-api/problems-api/.../api-problems.yaml``) and its public API server
(``JobsController``, ``JobResponseMapper``, ``PaginationMapper``, ``ConfigClientErrorHandler``,
``SchedulerHandler``):

* ``POST /applications/token`` answers ``{access_token, token_type: Bearer, expires_in: 180}``;
  a token expires after ``expires_in`` seconds. Wrong credentials answer 401.
* A ``JobResponse`` carries ``startTime`` (the job's creation, whole seconds, UTC), ``duration``
  (ISO 8601, absent while pending) and ``lastUpdatedAt`` only once the job is terminal, as
  ``JobResponseMapper`` does; ``bytesSynced``/``rowsSynced`` are the totals so far.
* Lists paginate the way ``PaginationMapper`` does: ``next`` is a link to the following page
  whenever the page was not empty, so a client reads one empty page at the end.
* Starting a sync while one of the connection runs answers 409 ``try-again-later`` with
  ``data.message`` "A sync is already running for: <id>"; an inactive connection is refused as
  Airbyte refuses it, 409 ``state-conflict`` with ``data.message`` "Could not fulfill request"
  (``SchedulerHandler`` raises "Can only sync an active connection", which the public API's error
  mapper does not pass on). Cancelling a finished job answers 409 "Job is not currently running".
* Problems are RFC 9457 bodies (``type``, ``title``, ``status``, ``detail``, ``data``) sent as
  ``application/json``, as Airbyte's ``AbstractThrowableProblemHandler`` sends them.
* ``POST /api/v1/jobs/get`` answers a ``JobInfoRead`` with one attempt per started job. A failed
  attempt's ``failureSummary.failures[0]`` carries ``failureOrigin`` (``source`` for a source
  error or an injected failure, ``destination`` for a write error), ``failureType``,
  ``externalMessage``, ``internalMessage`` and ``timestamp`` (epoch ms); a cancelled job's
  attempt failed with ``manual_cancellation`` / "This attempt was cancelled", as ``FailureHelper``
  records it. ``createdAt``/``updatedAt``/``endedAt`` are epoch seconds.

What it leaves out: every other endpoint (sources, streams, connection create/update, state,
reset/clear/refresh jobs, the configuration API beyond ``connections/get`` and ``jobs/get``);
basic auth and ``grant_type`` checks; roles, permissions and organisations; ``orderBy`` on
fields other than ``createdAt``/``updatedAt``; the ``pending`` -> ``running`` step is immediate
(no queueing for worker capacity); attempts are never retried (Airbyte retries a failed attempt
before failing the job); state is committed only when a job succeeds (Airbyte checkpoints it per
stream during a sync); the rows are not ordered by cursor; ``bytesSynced`` counts the Arrow bytes
of the landed records, not Airbyte's serialized JSON; job logs, stream stats, schema discovery
and change detection are absent; destination credentials are shown masked and are not used (the
landing's own filesystem is), and a local landing folder shows as ``s3_bucket_path`` with an
empty ``s3_bucket_name``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from acode_dagster.bronze.store import parse_bronze_url
from acode_dagster.errors import SourceError, redact
from acode_dagster.landing import Landing, landed_file_name, landed_type, to_landed
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.replicator import BATCH_ROWS, conform, preflight, stream_batches
from acode_dagster.tables import TABLES, Table
from acode_dagster_tests.support.http import LoopbackHTTP

PRIMARY_CONNECTION_NAME = "connection_mysql_s3_acode"
BACKUP_CONNECTION_NAME = "connection_mysql_s3_acode_backup"
PRIMARY_TO_BACKUP_BUCKET_NAME = "connection_mysql_s3_acode_to_backup_bucket"
BACKUP_TO_BACKUP_BUCKET_NAME = "connection_mysql_s3_acode_backup_to_backup_bucket"
CONNECTION_SETTINGS = {
    PRIMARY_CONNECTION_NAME: "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID",
    BACKUP_CONNECTION_NAME: "ACODE_AIRBYTE_BACKUP_CONNECTION_ID",
    PRIMARY_TO_BACKUP_BUCKET_NAME: "ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID",
    BACKUP_TO_BACKUP_BUCKET_NAME: "ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID",
}
"""The setting that names each connection, by the connection's name."""
REST_PREFIX = "/api/public/v1"
CONFIG_PREFIX = "/api/v1"
S3_PATH_FORMAT = "${STREAM_NAME}/${YEAR}_${MONTH}_${DAY}_${EPOCH}_"
S3_DESTINATION_DEFINITION_ID = "4816b78f-1489-44c1-9060-4b19d5fa9362"
"""Airbyte's definition id of destination-s3."""
MYSQL_SOURCE_DEFINITION_ID = "435bb9a5-7887-4809-aa58-28c27df0d7ad"
"""Airbyte's definition id of source-mysql."""
ACTIVE = ("pending", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
MASK = "**********"
"""How Airbyte shows a secret field of a connector's configuration."""
_SECRET_KEYS = frozenset({"client_secret", "clientSecret", "password", "access_token"})
_PAGE_DEFAULT, _PAGE_MAX = 20, 100


# ---------------------------------------------------------------------- public records


@dataclass(frozen=True)
class ConnectionSpec:
    """One connection: which server it reads and which staging prefix it lands into."""

    name: str
    source: MySQLEndpoint
    landing_url: str
    tables: tuple[Table, ...] = TABLES
    connection_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it; ``body`` has every secret replaced by ``***``."""

    method: str
    path: str
    query: Mapping[str, Sequence[str]]
    body: Any
    connection_id: str | None
    """The connection the request concerns (named, or through its job or destination)."""
    status: int
    at: datetime


@dataclass(frozen=True)
class JobView:
    """A job's state at one moment."""

    id: int
    connection_id: str
    status: str
    rows: int
    bytes: int
    failure: Mapping[str, Any] | None
    files: tuple[str, ...]
    """Files the job landed (filesystem paths), in the order it wrote them."""

    @property
    def failure_message(self) -> str | None:
        return None if self.failure is None else str(self.failure.get("externalMessage"))


# ---------------------------------------------------------------------- internal state


class _ApiError(Exception):
    def __init__(self, status: int, body: Any, content_type: str = "application/json") -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


class _Cancelled(Exception):
    pass


class _InjectedFailure(Exception):
    def __init__(self, fault: _InjectedFault) -> None:
        super().__init__(fault.reason)
        self.fault = fault


@dataclass
class _Connection:
    spec: ConnectionSpec
    landing: Landing
    source_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    destination_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "active"
    removed: bool = False
    cursors: dict[str, datetime] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.spec.connection_id


@dataclass(frozen=True)
class _InjectedFault:
    reason: str
    origin: str


@dataclass
class _Job:
    id: int
    connection_id: str
    fault: _InjectedFault | None
    created_at: float = field(default_factory=time.time)
    status: str = "pending"
    started_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    rows: int = 0
    bytes: int = 0
    failure: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    params: dict[str, str]

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def _problem(status: int, kind: str, title: str, detail: str, data: Any = None) -> _ApiError:
    body: dict[str, Any] = {
        "status": status,
        "type": f"https://reference.airbyte.com/reference/errors#{kind}",
        "title": title,
        "detail": detail,
    }
    if data is not None:
        body["data"] = data
    return _ApiError(status, body)


def _not_found(resource: str, resource_id: str) -> _ApiError:
    return _problem(
        404,
        "resource-not-found",
        "resource-not-found",
        "The requested resource could not be found.",
        {"resourceType": resource, "resourceId": resource_id},
    )


def _bad_request(message: str) -> _ApiError:
    return _problem(
        400,
        "bad-request",
        "bad-request",
        "The request could not be understood by the server due to malformed syntax.",
        {"message": message},
    )


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(int(epoch_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_duration(seconds: int) -> str:
    """``java.time.Duration.toString``, which Airbyte's ``duration`` is: PT0S, PT12S, PT1H2M3S."""
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    return text + (f"{secs}S" if secs or not (hours or minutes) else "")


def _parse_instant(text: str) -> float:
    """A query's date-time: ISO 8601 (naive = UTC) or epoch milliseconds, as Airbyte's docs show."""
    if text.isdigit():
        return int(text) / 1000
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _bad_request(f"not a date-time: {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _scrub(value: Any, secret: str) -> Any:
    """The body with every secret-named field replaced, and the client secret wherever else it
    shows (a body that is not JSON), for the request log."""
    if isinstance(value, dict):
        return {k: "***" if k in _SECRET_KEYS else _scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secret) for v in value]
    if isinstance(value, str):
        return redact(value, (secret,))
    return value


def _json_schema(table: Table) -> dict[str, Any]:
    """The stream's JSON schema, typed as the landed files type it (landing.landed_type)."""
    properties: dict[str, Any] = {}
    for column in table.arrow_schema:
        landed = landed_type(column.type)
        if pa.types.is_integer(landed):
            properties[column.name] = {"type": "integer"}
        elif pa.types.is_floating(landed):
            properties[column.name] = {"type": "number"}
        elif pa.types.is_date(landed):
            properties[column.name] = {"type": "string", "format": "date"}
        elif pa.types.is_timestamp(landed):
            properties[column.name] = {
                "type": "string",
                "format": "date-time",
                "airbyte_type": "timestamp_without_timezone",
            }
        else:
            properties[column.name] = {"type": "string"}
    return {"type": "object", "properties": properties}


def _failure(origin: str | None, kind: str, external: str, internal: str) -> dict[str, Any]:
    failure: dict[str, Any] = {
        "failureType": kind,
        "externalMessage": external,
        "internalMessage": internal,
        "timestamp": int(time.time() * 1000),
    }
    if origin is not None:
        failure["failureOrigin"] = origin
    return failure


_CANCELLATION = (
    "This attempt was cancelled",
    "Setting attempt to FAILED because the job was cancelled",
)

_Handler = Callable[["LoopbackAirbyte", _Request], tuple[int, Any]]


# ---------------------------------------------------------------------- the server


class LoopbackAirbyte:
    """The Airbyte API on a free loopback port, with a workspace holding ``connections``.

    ``workspace_id``, ``client_id`` and ``client_secret`` are made up when not given.
    ``batch_rows`` is how many rows a sync reads (and writes as one row group) at a time.
    """

    def __init__(
        self,
        connections: Sequence[ConnectionSpec],
        *,
        workspace_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        batch_rows: int = BATCH_ROWS,
        token_lifetime_s: int = 180,
    ) -> None:
        ids = [c.connection_id for c in connections]
        if len(set(ids)) != len(ids):
            raise ValueError("two connections share an id")
        self.workspace_id = workspace_id or str(uuid.uuid4())
        self.client_id = client_id or str(uuid.uuid4())
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.batch_rows = batch_rows
        self.token_lifetime_s = token_lifetime_s
        self._lock = threading.RLock()
        self._connections = {
            c.connection_id: _Connection(c, Landing(c.landing_url)) for c in connections
        }
        self._jobs: dict[int, _Job] = {}
        self._next_job_id = 1
        self._tokens: dict[str, float] = {}
        self._log: list[LoggedRequest] = []
        self._writing: set[str] = set()
        self._issued_paths: set[str] = set()
        # Knobs.
        self._fail_jobs: list[tuple[str | None, _InjectedFault]] = []
        self._hung: set[str | None] = set()
        self._batch_delay_s = 0.0
        self._failing_requests = 0
        self._failing_always = False
        self._failing_status = 503
        self._reject_credentials = False
        self._http = LoopbackHTTP(
            self._handle, "loopback-airbyte", methods=("GET", "POST", "DELETE", "PATCH")
        )

    def __repr__(self) -> str:
        # No secret: the client secret stays out of reprs and therefore out of test reports.
        return f"LoopbackAirbyte(port={self.port}, connections={list(self._connections)})"

    @classmethod
    def for_pair(
        cls,
        primary: MySQLEndpoint,
        backup: MySQLEndpoint,
        staging_url: str | Path,
        backup_staging_url: str | Path | None = None,
        **kwargs: Any,
    ) -> LoopbackAirbyte:
        """The two ACODE connections: ``connection_mysql_s3_acode`` reading ``primary`` and
        ``connection_mysql_s3_acode_backup`` reading ``backup``, both landing into
        ``staging_url`` (a folder or ``s3://bucket/prefix``), as configured in production.

        With ``backup_staging_url``, also the connections of bucket failover:
        ``connection_mysql_s3_acode_to_backup_bucket`` (``primary``) and
        ``connection_mysql_s3_acode_backup_to_backup_bucket`` (``backup``), landing there."""
        url = str(staging_url)
        specs = [
            ConnectionSpec(PRIMARY_CONNECTION_NAME, primary, url),
            ConnectionSpec(BACKUP_CONNECTION_NAME, backup, url),
        ]
        if backup_staging_url is not None:
            backup_url = str(backup_staging_url)
            specs += [
                ConnectionSpec(PRIMARY_TO_BACKUP_BUCKET_NAME, primary, backup_url),
                ConnectionSpec(BACKUP_TO_BACKUP_BUCKET_NAME, backup, backup_url),
            ]
        return cls(specs, **kwargs)

    # -- lifecycle

    @property
    def port(self) -> int:
        return self._http.port

    def start(self) -> LoopbackAirbyte:
        self._http.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel the jobs still running, wait for their threads, close the port."""
        with self._lock:
            for job in self._jobs.values():
                if job.status in ACTIVE:
                    self._mark_cancelled(job)
            threads = [j.thread for j in self._jobs.values() if j.thread is not None]
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.1))
        self._http.stop()

    def __enter__(self) -> LoopbackAirbyte:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it is

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        """``AIRBYTE_REST_API_BASE_URL``."""
        return self.base_url + REST_PREFIX

    @property
    def config_url(self) -> str:
        """``AIRBYTE_CONFIGURATION_API_BASE_URL``."""
        return self.base_url + CONFIG_PREFIX

    def connection_id(self, name: str) -> str:
        for connection in self._connections.values():
            if connection.spec.name == name:
                return connection.id
        raise KeyError(f"no connection named {name!r}")

    @property
    def primary_id(self) -> str:
        return self.connection_id(PRIMARY_CONNECTION_NAME)

    @property
    def backup_id(self) -> str:
        return self.connection_id(BACKUP_CONNECTION_NAME)

    @property
    def primary_to_backup_bucket_id(self) -> str:
        return self.connection_id(PRIMARY_TO_BACKUP_BUCKET_NAME)

    @property
    def backup_to_backup_bucket_id(self) -> str:
        return self.connection_id(BACKUP_TO_BACKUP_BUCKET_NAME)

    def landing_url(self, name: str) -> str:
        """Where the connection named ``name`` lands."""
        return self._connections[self.connection_id(name)].spec.landing_url

    def environ(self) -> dict[str, str]:
        """The variables that point the platform (and dagster-airbyte) at this server: the
        workspace, the id of each ACODE connection it has, and the staging prefix of each
        bucket it lands in."""
        values = {
            "AIRBYTE_REST_API_BASE_URL": self.rest_url,
            "AIRBYTE_CONFIGURATION_API_BASE_URL": self.config_url,
            "AIRBYTE_WORKSPACE_ID": self.workspace_id,
            "AIRBYTE_CLIENT_ID": self.client_id,
            "AIRBYTE_CLIENT_SECRET": self.client_secret,
        }
        names = {c.spec.name for c in self._connections.values()}
        for name, setting in CONNECTION_SETTINGS.items():
            if name in names:
                values[setting] = self.connection_id(name)
        if PRIMARY_CONNECTION_NAME in names:
            values["ACODE_AIRBYTE_STAGING_URL"] = self.landing_url(PRIMARY_CONNECTION_NAME)
        if PRIMARY_TO_BACKUP_BUCKET_NAME in names:
            values["ACODE_AIRBYTE_BACKUP_STAGING_URL"] = self.landing_url(
                PRIMARY_TO_BACKUP_BUCKET_NAME
            )
        return values

    # -- knobs (thread-safe, take effect at once)

    def fail_next_jobs(
        self,
        count: int,
        reason: str,
        *,
        connection_id: str | None = None,
        origin: str = "source",
    ) -> None:
        """The next ``count`` jobs (of ``connection_id``, or of any connection) land their first
        batch and then fail with ``reason`` as the failure's ``externalMessage`` and ``origin``
        as its ``failureOrigin`` (``source``, or ``destination`` for a write that failed)."""
        with self._lock:
            self._fail_jobs.extend([(connection_id, _InjectedFault(reason, origin))] * count)

    def hang_jobs(self, on: bool = True, *, connection_id: str | None = None) -> None:
        """Jobs (of ``connection_id``, or all) stay ``running`` without reading, until cancelled
        or until this is switched off, when they carry on."""
        with self._lock:
            if on:
                self._hung.add(connection_id)
            else:
                self._hung.discard(connection_id)

    def set_batch_delay(self, seconds: float) -> None:
        """Sleep this long after each landed batch: a slow sync, cancellable between batches."""
        with self._lock:
            self._batch_delay_s = seconds

    def fail_requests(self, count: int = 1, *, status: int = 503) -> None:
        """The next ``count`` requests, whatever they are, answer ``status``."""
        with self._lock:
            self._failing_requests = count
            self._failing_status = status

    def fail_all_requests(self, *, status: int = 503) -> None:
        """Every request answers ``status`` until :meth:`clear_request_failures`."""
        with self._lock:
            self._failing_always = True
            self._failing_status = status

    def clear_request_failures(self) -> None:
        with self._lock:
            self._failing_requests = 0
            self._failing_always = False

    def reject_credentials(self, on: bool = True) -> None:
        """While on, the token endpoint answers 401 and tokens already issued are refused."""
        with self._lock:
            self._reject_credentials = on

    def remove_connection(self, connection_id: str) -> None:
        """The connection disappears (404 everywhere, not listed) until restored."""
        with self._lock:
            self._connection(connection_id, include_removed=True).removed = True

    def restore_connection(self, connection_id: str) -> None:
        with self._lock:
            self._connection(connection_id, include_removed=True).removed = False

    def set_connection_status(self, connection_id: str, status: str) -> None:
        """``active`` or ``inactive`` (Airbyte's "disabled" toggle)."""
        if status not in ("active", "inactive"):
            raise ValueError(f"status must be active or inactive, not {status!r}")
        with self._lock:
            self._connection(connection_id, include_removed=True).status = status

    def cursor(self, connection_id: str, table: Table | str) -> datetime | None:
        """The connection's saved cursor (``Data_Processamento``) for the stream, if any."""
        name = table if isinstance(table, str) else table.name
        with self._lock:
            return self._connection(connection_id, include_removed=True).cursors.get(name)

    def set_cursor(self, connection_id: str, table: Table | str, value: datetime | None) -> None:
        """Set (or, with None, reset) a stream's saved cursor, as Airbyte's state API would."""
        name = table if isinstance(table, str) else table.name
        with self._lock:
            cursors = self._connection(connection_id, include_removed=True).cursors
            if value is None:
                cursors.pop(name, None)
            else:
                cursors[name] = value

    # -- what happened

    @property
    def request_log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def requests(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        connection_id: str | None = None,
        status: int | None = None,
    ) -> list[LoggedRequest]:
        """Logged requests matching all that is given (``path``: a regex searched in the path)."""
        return [
            r
            for r in self.request_log
            if (method is None or r.method == method)
            and (path is None or re.search(path, r.path))
            and (connection_id is None or r.connection_id == connection_id)
            and (status is None or r.status == status)
        ]

    def jobs_started(self, connection_id: str | None = None) -> list[int]:
        """Ids of the jobs the API started (answered ``POST /jobs``), oldest first."""
        with self._lock:
            return [
                j.id
                for j in sorted(self._jobs.values(), key=lambda j: j.id)
                if connection_id is None or j.connection_id == connection_id
            ]

    def cancellations(self, connection_id: str | None = None) -> list[int]:
        """Job ids a client asked to cancel (``DELETE /jobs/{id}``), in order."""
        return [
            int(r.path.rsplit("/", 1)[-1])
            for r in self.requests("DELETE", r"/jobs/\d+$", connection_id=connection_id)
        ]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def job(self, job_id: int) -> JobView:
        with self._lock:
            job = self._jobs[job_id]
            return JobView(
                job.id,
                job.connection_id,
                job.status,
                job.rows,
                job.bytes,
                dict(job.failure) if job.failure else None,
                tuple(job.files),
            )

    def jobs(self, connection_id: str | None = None) -> list[JobView]:
        return [self.job(i) for i in self.jobs_started(connection_id)]

    def wait_for_job(self, job_id: int, timeout_s: float = 60.0) -> JobView:
        """The job once it is terminal and its thread has finished."""
        with self._lock:
            thread = self._jobs[job_id].thread
        if thread is not None:
            thread.join(timeout=timeout_s)
        view = self.job(job_id)
        if view.status not in TERMINAL or (thread is not None and thread.is_alive()):
            raise TimeoutError(f"job {job_id} still {view.status} after {timeout_s:g} s")
        return view

    # -- HTTP plumbing

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        body, body_error = _parse_body(raw, handler.headers.get("Content-Type") or "")
        route = _route(handler.command, parts.path)
        concerns = self._concerns(parts.path, query, body)
        try:
            status, answer, content_type = self._answer(
                handler, route, _Request(handler.command, parts.path, query, body, {}), body_error
            )
        except _ApiError as error:
            status, answer, content_type = error.status, error.body, error.content_type
        except Exception as exc:
            # A bug of this server: answer as Airbyte answers an unexpected problem, so the
            # client sees a 500 and the log shows it, rather than a dropped connection.
            status, content_type = 500, "application/json"
            answer = _problem(
                500,
                "",
                "unexpected-problem",
                "An unexpected problem has occurred.",
                {"message": redact(f"{type(exc).__name__}: {exc}", (self.client_secret,))},
            ).body
        with self._lock:
            self._log.append(
                LoggedRequest(
                    handler.command,
                    parts.path,
                    {k: list(v) for k, v in query.items()},
                    _scrub(body, self.client_secret),
                    concerns,
                    status,
                    datetime.now(UTC),
                )
            )
        text = answer if isinstance(answer, str) else json.dumps(answer)
        _reply(handler, status, text, content_type)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        route: tuple[_Handler, dict[str, str], bool] | None,
        request: _Request,
        body_error: str | None,
    ) -> tuple[int, Any, str]:
        """Injected faults first (a gateway answers before Airbyte does), then routing, auth,
        the body, and the endpoint."""
        with self._lock:
            failing = self._failing_always or self._failing_requests > 0
            if self._failing_requests > 0 and not self._failing_always:
                self._failing_requests -= 1
            failing_status = self._failing_status
        if failing:
            if failing_status == 500:
                raise _problem(
                    500,
                    "",
                    "unexpected-problem",
                    "An unexpected problem has occurred.",
                    {"message": "fault injected by the loopback Airbyte server"},
                )
            # What a gateway in front of Airbyte answers when the server behind it is down.
            raise _ApiError(failing_status, "upstream unavailable\n", "text/plain")
        if route is None:
            if any(_route(m, request.path) for m in ("GET", "POST", "DELETE")):
                raise _problem(405, "method-not-allowed", "method-not-allowed", "Not allowed")
            raise _problem(404, "not-found", "not-found", f"No endpoint at {request.path}")
        function, params, needs_auth = route
        if needs_auth:
            self._authorize(handler.headers.get("Authorization") or "")
        if body_error:
            raise _bad_request(body_error)
        request.params = params
        status, answer = function(self, request)
        return status, answer, "application/json"

    def _authorize(self, header: str) -> None:
        scheme, _, token = header.partition(" ")
        with self._lock:
            issued = self._tokens.get(token) if scheme.lower() == "bearer" else None
            valid = (
                issued is not None
                and not self._reject_credentials
                and time.time() - issued < self.token_lifetime_s
            )
        if not valid:
            raise _problem(
                401,
                "invalid-api-key",
                "invalid-api-key",
                "The API key in the Authorization header is invalid.",
            )

    def _concerns(self, path: str, query: Mapping[str, list[str]], body: Any) -> str | None:
        """The connection a request is about, for the log: named, or through a job/destination."""
        named = body.get("connectionId") if isinstance(body, dict) else None
        named = named or (query.get("connectionId") or [""])[0]
        if named:
            return str(named)
        rest = path.removeprefix(REST_PREFIX) if path.startswith(REST_PREFIX) else ""
        if match := re.fullmatch(r"/connections/([^/]+)", rest):
            return match[1]
        job_id: Any = None
        if match := re.fullmatch(r"/jobs/(\d+)", rest):
            job_id = int(match[1])
        elif path == CONFIG_PREFIX + "/jobs/get" and isinstance(body, dict):
            job_id = body.get("id")
        with self._lock:
            if job_id is not None:
                job = self._jobs.get(job_id) if isinstance(job_id, int) else None
                return job.connection_id if job else None
            if match := re.fullmatch(r"/destinations/([^/]+)", rest):
                for connection in self._connections.values():
                    if connection.destination_id == match[1]:
                        return connection.id
        return None

    def _connection(self, connection_id: str, *, include_removed: bool = False) -> _Connection:
        connection = self._connections.get(connection_id)
        if connection is None or (connection.removed and not include_removed):
            raise _not_found("connection", connection_id)
        return connection

    def _job_of(self, raw: Any) -> _Job:
        try:
            job_id = int(raw)
        except (TypeError, ValueError):
            raise _bad_request(f"job id must be an integer, not {raw!r}") from None
        job = self._jobs.get(job_id)
        if job is None or self._connections[job.connection_id].removed:
            raise _not_found("job", str(raw))
        return job

    # -- endpoints: public API

    def _token(self, request: _Request) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        with self._lock:
            accepted = (
                not self._reject_credentials
                and body.get("client_id") == self.client_id
                and secrets.compare_digest(
                    str(body.get("client_secret") or "").encode(), self.client_secret.encode()
                )
            )
            if not accepted:
                raise _problem(
                    401,
                    "invalid-api-key",
                    "invalid-api-key",
                    "The client id or client secret is invalid.",
                )
            token = secrets.token_urlsafe(32)
            self._tokens[token] = time.time()
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_s,
        }

    def _get_workspace(self, request: _Request) -> tuple[int, Any]:
        if request.params["id"] != self.workspace_id:
            raise _not_found("workspace", request.params["id"])
        return 200, {
            "workspaceId": self.workspace_id,
            "name": "acode",
            "dataResidency": "auto",
            "notifications": {},
        }

    def _workspace_filter(self, request: _Request) -> bool:
        """False when ``workspaceIds`` is given and does not name this workspace."""
        wanted = [w for v in request.query.get("workspaceIds", []) for w in v.split(",") if w]
        return not wanted or self.workspace_id in wanted

    def _list_connections(self, request: _Request) -> tuple[int, Any]:
        limit, offset = _page(request)
        with self._lock:
            listed = [
                self._connection_response(c)
                for c in self._connections.values()
                if not c.removed and self._workspace_filter(request)
            ]
        return 200, self._paged(listed, limit, offset, "/connections", request)

    def _get_connection(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, self._connection_response(self._connection(request.params["id"]))

    def _get_destination(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            for connection in self._connections.values():
                if connection.destination_id == request.params["id"] and not connection.removed:
                    return 200, self._destination_response(connection)
        raise _not_found("destination", request.params["id"])

    def _create_job(self, request: _Request) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        if body.get("jobType") != "sync":
            raise _problem(
                422,
                "unprocessable-entity",
                "unprocessable-entity",
                "The body of the request was not understood",
                {"message": f"jobType {body.get('jobType')!r} is not supported here (only sync)"},
            )
        with self._lock:
            connection = self._connection(str(body.get("connectionId") or ""))
            if connection.status != "active":
                # SchedulerHandler's check() raises IllegalStateException("Can only sync an
                # active connection"); ConfigClientErrorHandler maps it to this.
                raise _problem(
                    409,
                    "409-state-conflict",
                    "state-conflict",
                    "State conflict",
                    {"message": "Could not fulfill request"},
                )
            if any(
                j.connection_id == connection.id and j.status in ACTIVE for j in self._jobs.values()
            ):
                raise _problem(
                    409,
                    "try-again-later",
                    "try-again-later",
                    "Please try again later.",
                    {"message": f"A sync is already running for: {connection.id}"},
                )
            job = _Job(self._next_job_id, connection.id, self._take_fault(connection.id))
            self._next_job_id += 1
            self._jobs[job.id] = job
            job.thread = threading.Thread(
                target=self._run_job, args=(job,), name=f"airbyte-job-{job.id}", daemon=True
            )
            answer = self._job_response(job)
        job.thread.start()
        return 200, answer

    def _take_fault(self, connection_id: str) -> _InjectedFault | None:
        for index, (target, fault) in enumerate(self._fail_jobs):
            if target in (None, connection_id):
                del self._fail_jobs[index]
                return fault
        return None

    def _list_jobs(self, request: _Request) -> tuple[int, Any]:
        limit, offset = _page(request)
        wanted_connection = request.arg("connectionId")
        start = request.arg("createdAtStart")
        end = request.arg("createdAtEnd")
        updated_start = request.arg("updatedAtStart")
        updated_end = request.arg("updatedAtEnd")
        bounds = (
            _parse_instant(start) if start else None,
            _parse_instant(end) if end else None,
            _parse_instant(updated_start) if updated_start else None,
            _parse_instant(updated_end) if updated_end else None,
        )
        status, job_type = request.arg("status"), request.arg("jobType")
        order_field, _, order = (request.arg("orderBy") or "createdAt|DESC").partition("|")
        if order_field not in ("createdAt", "updatedAt") or order.upper() not in ("ASC", "DESC"):
            raise _bad_request(
                f"orderBy {request.arg('orderBy')!r}: use createdAt|DESC and the like"
            )
        with self._lock:
            if wanted_connection:
                self._connection(wanted_connection)
            jobs = [
                j
                for j in self._jobs.values()
                if (not wanted_connection or j.connection_id == wanted_connection)
                and not self._connections[j.connection_id].removed
                and self._workspace_filter(request)
                and _within(j, *bounds)
                and (status is None or j.status == status)
                and job_type in (None, "sync")
            ]
            by_created = order_field == "createdAt"
            jobs.sort(
                key=lambda j: (j.created_at if by_created else j.updated_at, j.id),
                reverse=order.upper() == "DESC",
            )
            listed = [self._job_response(j) for j in jobs]
        return 200, self._paged(listed, limit, offset, "/jobs", request)

    def _get_job(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            return 200, self._job_response(self._job_of(request.params["id"]))

    def _cancel_job(self, request: _Request) -> tuple[int, Any]:
        with self._lock:
            job = self._job_of(request.params["id"])
            if job.status not in ACTIVE:
                raise _problem(
                    409,
                    "409-state-conflict",
                    "state-conflict",
                    "State conflict",
                    {"message": "Job is not currently running"},
                )
            self._mark_cancelled(job)
            return 200, self._job_response(job)

    # -- endpoints: configuration API

    def _config_connection(self, request: _Request) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        connection_id = str(body.get("connectionId") or "")
        with self._lock:
            connection = self._connections.get(connection_id)
            if connection is None or connection.removed:
                raise _ApiError(
                    404,
                    {
                        "id": connection_id,
                        "message": (
                            f"Could not find configuration for STANDARD_SYNC: {connection_id}."
                        ),
                        "exceptionClassName": "io.airbyte.data.ConfigNotFoundException",
                    },
                )
            return 200, self._connection_read(connection)

    def _config_job(self, request: _Request) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        with self._lock:
            try:
                job = self._job_of(body.get("id"))
            except _ApiError:
                raise _ApiError(
                    404 if isinstance(body.get("id"), int) else 422,
                    {
                        "id": str(body.get("id")),
                        "message": f"Could not find job with id: {body.get('id')}",
                        "exceptionClassName": "io.airbyte.data.ConfigNotFoundException",
                    },
                ) from None
            return 200, self._job_info_read(job)

    # -- response bodies (called under the lock)

    def _paged(
        self, items: list[Any], limit: int, offset: int, path: str, request: _Request
    ) -> dict[str, Any]:
        page = items[offset : offset + limit]
        params = {k: v[0] for k, v in request.query.items() if k not in ("limit", "offset")}

        def link(at: int) -> str:
            return f"{self.rest_url}{path}?{urlencode({**params, 'limit': limit, 'offset': at})}"

        return {
            "data": page,
            # PaginationMapper: a next link whenever this page had items, a previous one when
            # the offset is not 0.
            "next": link(offset + limit) if page else "",
            "previous": link(max(offset - limit, 0)) if offset else "",
        }

    def _streams(self, connection: _Connection) -> list[dict[str, Any]]:
        streams = []
        for table in connection.spec.tables:
            incremental = table.partition_column is not None
            streams.append(
                {
                    "name": table.name,
                    "namespace": connection.spec.source.database,
                    "syncMode": "incremental_append" if incremental else "full_refresh_overwrite",
                    "cursorField": [table.partition_column] if incremental else [],
                    "primaryKey": [[table.key]],
                }
            )
        return streams

    def _connection_response(self, connection: _Connection) -> dict[str, Any]:
        return {
            "connectionId": connection.id,
            "name": connection.spec.name,
            "sourceId": connection.source_id,
            "destinationId": connection.destination_id,
            "workspaceId": self.workspace_id,
            "status": connection.status,
            "schedule": {"scheduleType": "manual"},
            "namespaceDefinition": "destination",
            "prefix": "",
            "nonBreakingSchemaUpdatesBehavior": "ignore",
            "configurations": {"streams": self._streams(connection)},
            "createdAt": connection.created_at,
            "tags": [],
        }

    def _connection_read(self, connection: _Connection) -> dict[str, Any]:
        catalog = []
        for table in connection.spec.tables:
            incremental = table.partition_column is not None
            cursor = [table.partition_column] if table.partition_column else []
            catalog.append(
                {
                    "stream": {
                        "name": table.name,
                        "namespace": connection.spec.source.database,
                        "jsonSchema": _json_schema(table),
                        "supportedSyncModes": ["full_refresh", "incremental"],
                        "sourceDefinedCursor": False,
                        "defaultCursorField": [],
                        "sourceDefinedPrimaryKey": [[table.key]],
                        "isResumable": True,
                    },
                    "config": {
                        "syncMode": "incremental" if incremental else "full_refresh",
                        "destinationSyncMode": "append" if incremental else "overwrite",
                        "cursorField": cursor,
                        "primaryKey": [[table.key]],
                        "aliasName": table.name,
                        "selected": True,
                        "suggested": True,
                        "fieldSelectionEnabled": False,
                    },
                }
            )
        return {
            "connectionId": connection.id,
            "name": connection.spec.name,
            "namespaceDefinition": "destination",
            "prefix": "",
            "sourceId": connection.source_id,
            "destinationId": connection.destination_id,
            "operationIds": [],
            "syncCatalog": {"streams": catalog},
            "scheduleType": "manual",
            "status": connection.status,
            "breakingChange": False,
            "notifySchemaChanges": False,
            "nonBreakingChangesPreference": "ignore",
            "created_at": connection.created_at,
            "workspaceId": self.workspace_id,
            "tags": [],
        }

    def _destination_response(self, connection: _Connection) -> dict[str, Any]:
        kind, where = parse_bronze_url(connection.spec.landing_url)
        bucket, _, prefix = where.partition("/") if kind == "s3" else ("", "", where)
        return {
            "destinationId": connection.destination_id,
            "name": f"S3 staging of {connection.spec.name}",
            "destinationType": "s3",
            "definitionId": S3_DESTINATION_DEFINITION_ID,
            "workspaceId": self.workspace_id,
            "createdAt": connection.created_at,
            "configuration": {
                "destinationType": "s3",
                # A local landing folder shows as a path with no bucket.
                "s3_bucket_name": bucket,
                "s3_bucket_path": prefix,
                "s3_bucket_region": "",
                "s3_path_format": S3_PATH_FORMAT,
                "format": {
                    "format_type": "Parquet",
                    "compression_codec": "SNAPPY",
                    "block_size_mb": 128,
                    "page_size_kb": 1024,
                    "dictionary_encoding": True,
                },
                "access_key_id": MASK,
                "secret_access_key": MASK,
            },
        }

    def _job_response(self, job: _Job) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "jobId": job.id,
            "status": job.status,
            "jobType": "sync",
            "startTime": _iso(job.created_at),
            "connectionId": job.connection_id,
            "bytesSynced": job.bytes,
            "rowsSynced": job.rows,
        }
        if job.status != "pending":
            answer["duration"] = _iso_duration(int(job.updated_at) - int(job.created_at))
        if job.status in TERMINAL:
            answer["lastUpdatedAt"] = _iso(job.updated_at)
        return answer

    def _job_info_read(self, job: _Job) -> dict[str, Any]:
        connection = self._connections[job.connection_id]
        stats = {
            "recordsEmitted": job.rows,
            "bytesEmitted": job.bytes,
            "recordsCommitted": job.rows,
            "bytesCommitted": job.bytes,
            "recordsRejected": 0,
        }
        attempts = []
        if job.started_at is not None:
            attempt: dict[str, Any] = {
                "id": 0,
                "status": {"succeeded": "succeeded", "running": "running"}.get(
                    job.status, "failed"
                ),
                "createdAt": int(job.started_at),
                "updatedAt": int(job.updated_at),
                "bytesSynced": job.bytes,
                "recordsSynced": job.rows,
                "totalStats": {k: v for k, v in stats.items() if k != "recordsRejected"},
                "failureSummary": (
                    {"failures": [job.failure], "partialSuccess": job.rows > 0}
                    if job.failure
                    else None
                ),
            }
            if job.ended_at is not None:
                attempt["endedAt"] = int(job.ended_at)
            attempts.append({"attempt": attempt, "logs": {"logLines": []}})
        return {
            "job": {
                "id": job.id,
                "configType": "sync",
                "configId": job.connection_id,
                "enabledStreams": [
                    {"name": t.name, "namespace": connection.spec.source.database}
                    for t in connection.spec.tables
                ],
                "createdAt": int(job.created_at),
                "updatedAt": int(job.updated_at),
                **({"startedAt": int(job.started_at)} if job.started_at is not None else {}),
                "status": job.status,
                "aggregatedStats": stats,
            },
            "attempts": attempts,
        }

    # -- syncs

    def _mark_cancelled(self, job: _Job) -> None:
        """Cancel at once (the API answers ``cancelled``); the thread stops at its next batch."""
        now = time.time()
        job.status = "cancelled"
        job.updated_at = job.ended_at = now
        if job.started_at is None:
            job.started_at = now
        job.failure = _failure(None, "manual_cancellation", *_CANCELLATION)
        job.cancel.set()

    def _run_job(self, job: _Job) -> None:
        connection = self._connections[job.connection_id]
        with self._lock:
            if job.status != "pending":
                return
            job.status = "running"
            job.started_at = job.updated_at = time.time()
        landed: dict[str, str | None] = {}
        cursors: dict[str, datetime] = {}
        try:
            self._wait_while_hung(job)
            for table in connection.spec.tables:
                self._check_cancelled(job)
                landed[table.name], cursor = self._sync_stream(job, connection, table)
                if cursor is not None:
                    cursors[table.name] = cursor
                if job.fault:
                    raise _InjectedFailure(job.fault)
            self._commit(job, connection, landed, cursors)
        except _Cancelled:
            pass
        except _InjectedFailure as failure:
            reason = failure.fault.reason
            self._fail(job, _failure(failure.fault.origin, "system_error", reason, reason))
        except SourceError as exc:
            message = redact(str(exc), connection.spec.source.secrets())
            self._fail(job, _failure("source", "system_error", message, f"SourceError: {message}"))
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}", connection.spec.source.secrets())
            self._fail(job, _failure("destination", "system_error", message, message))

    def _wait_while_hung(self, job: _Job) -> None:
        while True:
            with self._lock:
                hung = bool(self._hung & {None, job.connection_id})
            if not hung:
                return
            self._check_cancelled(job)
            job.cancel.wait(0.05)

    @staticmethod
    def _check_cancelled(job: _Job) -> None:
        if job.cancel.is_set():
            raise _Cancelled

    def _query(self, table: Table, cursor: datetime | None) -> str:
        if table.partition_column is None:
            # A snapshot's extraction query has no window; any day gives it.
            return table.select_sql(date.today())
        columns = ", ".join(f"`{c}`" for c in table.column_names)
        query = f"SELECT {columns} FROM `{table.name}`"
        if cursor is not None:
            # Inclusive, as Airbyte's cursor is: rows at the saved value are landed again.
            query += f" WHERE `{table.partition_column}` >= '{cursor:%Y-%m-%d %H:%M:%S.%f}'"
        return query

    def _new_path(self, connection: _Connection, table: Table, extracted_at: datetime) -> str:
        """A file name no job of this server used yet (two connections share the folders)."""
        with self._lock:
            part = 0
            while True:
                name = landed_file_name(extracted_at, part)
                path = f"{connection.landing.stream_path(table)}/{name}"
                if path not in self._issued_paths:
                    self._issued_paths.add(path)
                    self._writing.add(path)
                    return path
                part += 1

    def _sync_stream(
        self, job: _Job, connection: _Connection, table: Table
    ) -> tuple[str | None, datetime | None]:
        """Land one stream; the landed file (None without rows) and the largest cursor value."""
        source = connection.spec.source
        preflight(table, source)
        with self._lock:
            start = connection.cursors.get(table.name)
            batch_rows = self.batch_rows
        extracted_at = datetime.now(UTC)
        filesystem = connection.landing.filesystem()
        path: str | None = None
        sink: Any = None
        writer: pq.ParquetWriter | None = None
        largest: datetime | None = None
        batches = stream_batches(source, self._query(table, start), batch_rows)
        try:
            for raw in batches:
                batch = conform(raw, table.arrow_schema)
                if batch.num_rows == 0:
                    continue
                landed = to_landed(batch, table, extracted_at, job.id)
                if writer is None:
                    path = self._new_path(connection, table, extracted_at)
                    filesystem.create_dir(connection.landing.stream_path(table), recursive=True)
                    sink = filesystem.open_output_stream(path)
                    writer = pq.ParquetWriter(sink, landed.schema, compression="snappy")
                    with self._lock:
                        job.files.append(path)
                writer.write_table(landed, row_group_size=max(landed.num_rows, 1))
                if table.partition_column is not None:
                    seen = pc.max(batch.column(table.partition_column)).as_py()
                    largest = seen if largest is None or seen > largest else largest
                self._after_batch(job, batch)
        finally:
            # Stopping early (a cancel, a failure) must release the server connection now.
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            if writer is not None:
                writer.close()
            if sink is not None:
                sink.close()
            if path is not None:
                with self._lock:
                    self._writing.discard(path)
        return path, largest

    def _after_batch(self, job: _Job, batch: pa.RecordBatch) -> None:
        with self._lock:
            job.rows += batch.num_rows
            job.bytes += batch.nbytes
            job.updated_at = time.time()
            delay = self._batch_delay_s
        if job.fault:
            # A failing sync lands what it read so far (its file is closed on the way out).
            raise _InjectedFailure(job.fault)
        if delay:
            job.cancel.wait(delay)
        self._check_cancelled(job)

    def _commit(
        self,
        job: _Job,
        connection: _Connection,
        landed: Mapping[str, str | None],
        cursors: Mapping[str, datetime],
    ) -> None:
        """Succeed: save the cursors, and leave only this sync's file of an overwrite stream.

        Under the lock, so a cancellation is either seen here (nothing is committed) or comes
        too late (the job has succeeded and the cancel answers 409)."""
        with self._lock:
            if job.status != "running":
                return
            for table in connection.spec.tables:
                if table.partition_column is not None:
                    continue
                keep = landed.get(table.name)
                filesystem = connection.landing.filesystem()
                for path in connection.landing.files(table):
                    if path != keep and path not in self._writing:
                        filesystem.delete_file(path)
            connection.cursors.update(cursors)
            job.status = "succeeded"
            job.updated_at = job.ended_at = time.time()

    def _fail(self, job: _Job, failure: dict[str, Any]) -> None:
        with self._lock:
            if job.status != "running":
                return
            job.status = "failed"
            job.failure = failure
            job.updated_at = job.ended_at = time.time()


# ---------------------------------------------------------------------- routing


_ROUTES: list[tuple[str, str, re.Pattern[str], _Handler, bool]] = [
    ("POST", REST_PREFIX, re.compile(r"/applications/token"), LoopbackAirbyte._token, False),
    (
        "GET",
        REST_PREFIX,
        re.compile(r"/workspaces/(?P<id>[^/]+)"),
        LoopbackAirbyte._get_workspace,
        True,
    ),
    ("GET", REST_PREFIX, re.compile(r"/connections"), LoopbackAirbyte._list_connections, True),
    (
        "GET",
        REST_PREFIX,
        re.compile(r"/connections/(?P<id>[^/]+)"),
        LoopbackAirbyte._get_connection,
        True,
    ),
    (
        "GET",
        REST_PREFIX,
        re.compile(r"/destinations/(?P<id>[^/]+)"),
        LoopbackAirbyte._get_destination,
        True,
    ),
    ("POST", REST_PREFIX, re.compile(r"/jobs"), LoopbackAirbyte._create_job, True),
    ("GET", REST_PREFIX, re.compile(r"/jobs"), LoopbackAirbyte._list_jobs, True),
    ("GET", REST_PREFIX, re.compile(r"/jobs/(?P<id>[^/]+)"), LoopbackAirbyte._get_job, True),
    ("DELETE", REST_PREFIX, re.compile(r"/jobs/(?P<id>[^/]+)"), LoopbackAirbyte._cancel_job, True),
    (
        "POST",
        CONFIG_PREFIX,
        re.compile(r"/connections/get"),
        LoopbackAirbyte._config_connection,
        True,
    ),
    ("POST", CONFIG_PREFIX, re.compile(r"/jobs/get"), LoopbackAirbyte._config_job, True),
]


def _route(method: str, path: str) -> tuple[_Handler, dict[str, str], bool] | None:
    for verb, prefix, pattern, function, needs_auth in _ROUTES:
        if verb != method or not path.startswith(prefix + "/"):
            continue
        if match := pattern.fullmatch(path[len(prefix) :].rstrip("/") or "/"):
            return function, match.groupdict(), needs_auth
    return None


def _parse_body(raw: bytes, content_type: str) -> tuple[Any, str | None]:
    """The body as JSON (or a form, which the token endpoint also takes) and any parse error."""
    if not raw:
        return None, None
    text = raw.decode("utf-8", errors="replace")
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[0] for k, v in parse_qs(text).items()}, None
    try:
        return json.loads(text), None
    except ValueError as exc:
        return text[:200], f"the body is not JSON ({exc})"


def _page(request: _Request) -> tuple[int, int]:
    try:
        limit = int(request.arg("limit") or _PAGE_DEFAULT)
        offset = int(request.arg("offset") or 0)
    except ValueError:
        raise _bad_request("limit and offset must be integers") from None
    if not 1 <= limit <= _PAGE_MAX or offset < 0:
        raise _bad_request(f"limit must be 1..{_PAGE_MAX} and offset >= 0")
    return limit, offset


def _within(
    job: _Job,
    created_from: float | None,
    created_to: float | None,
    updated_from: float | None,
    updated_to: float | None,
) -> bool:
    return (
        (created_from is None or job.created_at >= created_from)
        and (created_to is None or job.created_at <= created_to)
        and (updated_from is None or job.updated_at >= updated_from)
        and (updated_to is None or job.updated_at <= updated_to)
    )


def _reply(handler: BaseHTTPRequestHandler, status: int, text: str, content_type: str) -> None:
    data = text.encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", f"{content_type}; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        # The client gave up (its timeout); nothing is left to tell it.
        pass


# ---------------------------------------------------------------------- pytest


@pytest.fixture
def airbyte_server(mariadb_pair: Any, tmp_path: Path) -> Iterator[LoopbackAirbyte]:
    """A loopback Airbyte with ``connection_mysql_s3_acode`` (the pair's primary) and
    ``connection_mysql_s3_acode_backup`` (its backup), both landing into
    ``tmp_path/bronze/_airbyte_staging`` (the default staging prefix under the ``env``
    fixture's ACODE_BRONZE_URL). ``.environ()`` gives the variables to point the platform at it.
    """
    server = LoopbackAirbyte.for_pair(
        mariadb_pair.endpoint("primary"),
        mariadb_pair.endpoint("backup"),
        tmp_path / "bronze" / "_airbyte_staging",
    )
    with server:
        yield server
