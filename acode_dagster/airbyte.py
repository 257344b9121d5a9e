"""The Airbyte route: the routed connection moves the rows, this module publishes partition D.

An Airbyte connection reads one server into one destination, fixed in Airbyte; so routing the
bucket means choosing the connection that lands in the routed bucket. There is a staging prefix
per bucket and a connection per (server, bucket):

* into the primary bucket's staging (``ACODE_AIRBYTE_STAGING_URL``): the primary server's
  ``ACODE_AIRBYTE_PRIMARY_CONNECTION_ID`` and the backup's ``ACODE_AIRBYTE_BACKUP_CONNECTION_ID``;
* into the backup bucket's (``ACODE_AIRBYTE_BACKUP_STAGING_URL``): the primary's
  ``ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID`` and the backup's
  ``ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID``.

The backup bucket's three settings are optional: without them Airbyte mode runs on the primary
bucket, a sync routed to the backup bucket fails naming them, and the backup bucket's staging
probe says that bucket failover is not available.

For partition D on route (server, bucket) the replicator checks that the connection's
destination is that bucket's staging prefix, triggers it through dagster-airbyte's client, polls
the job (cancelling it on a timeout, or when the run is terminated), and then cuts partition D
out of what it landed (:mod:`acode_dagster.landing`), publishing it to the routed bucket with the
same all-or-nothing publish as the embedded replicator. A job that started before D was over
cannot hold all of D; such a job is waited for, never used, and a new one is started after it.

Health (:func:`probe_both`): the ``airbyte_<server>`` probes count against the source part of
the route, the ``staging_<bucket>`` probes against the bucket part. A staging probe writes, reads
and deletes an object under the prefix's ``_probe/`` and checks that the connections landing
there have it as their destination. A failed job counts against exactly one part, by the origin
Airbyte records for its failure (:func:`blamed_part`): a failure of its destination (it could
not write the staging) against the bucket it lands in, any other against the server it reads. A
connection missing or disabled counts against its server when it lands in the primary bucket
(the everyday path, as before) and against the backup bucket's staging when it lands there (it
exists only for bucket failover, so it must not move the source).

Plain Python: the resource in ``defs/resources.py`` builds the client from the standard
``AIRBYTE_*`` variables, and the health sensor calls :func:`probe_both`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import requests
from dagster import Failure
from dagster_airbyte import AirbyteWorkspace
from dagster_airbyte.resources import AirbyteClient
from dagster_airbyte.translator import AirbyteJob, AirbyteJobStatusType

from acode_dagster.bronze.publish import (
    MAX_FILE_BYTES,
    ROW_GROUP_ROWS,
    Publisher,
    write_audit_publish,
)
from acode_dagster.bronze.store import BronzeStore
from acode_dagster.errors import AcodeError, ConfigError, SourceError, redact
from acode_dagster.failover import Part
from acode_dagster.landing import BACKUP_STAGING_SETTING, DayCut, Landing
from acode_dagster.mysql import MySQLEndpoint, count_rows
from acode_dagster.probes import OK, ProbeResult, ProbeSettings, Verdict, run_check
from acode_dagster.replicator import (
    BATCH_ROWS,
    ProgressLog,
    SyncResult,
    default_publisher,
    ensure_day_is_over,
)
from acode_dagster.routing import BACKUP, PRIMARY, ROLES, Role
from acode_dagster.tables import SOURCE_TIMEZONE, Table, day_window

ACTIVE = frozenset(
    {AirbyteJobStatusType.PENDING, AirbyteJobStatusType.RUNNING, AirbyteJobStatusType.INCOMPLETE}
)
FAILED = frozenset({AirbyteJobStatusType.FAILED, AirbyteJobStatusType.ERROR})
CONNECTION_SETTINGS: Mapping[tuple[Role, Role], str] = {
    (PRIMARY, PRIMARY): "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID",
    (BACKUP, PRIMARY): "ACODE_AIRBYTE_BACKUP_CONNECTION_ID",
    (PRIMARY, BACKUP): "ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID",
    (BACKUP, BACKUP): "ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID",
}
"""The setting naming the connection that reads (server) into (bucket)'s staging."""
BACKUP_BUCKET_SETTINGS = (
    BACKUP_STAGING_SETTING,
    CONNECTION_SETTINGS[(PRIMARY, BACKUP)],
    CONNECTION_SETTINGS[(BACKUP, BACKUP)],
)
_PROGRESS_EVERY_S = 30.0


class AirbyteError(SourceError):
    """The Airbyte API or one of its jobs let a sync down; the message names job and fix."""

    def __init__(
        self,
        message: str,
        *,
        job_id: int | None = None,
        status: str = "",
        transient: bool = False,
    ):
        super().__init__(message, transient=transient)
        self.job_id = job_id
        self.status = status


def bucket_failover_unavailable() -> str:
    """Why nothing can land into the backup bucket in airbyte mode, and what to set."""
    return (
        "bucket failover is not available in airbyte mode until "
        f"{', '.join(BACKUP_BUCKET_SETTINGS)} are set: an Airbyte connection lands into the "
        "destination fixed in Airbyte, so the backup bucket needs a staging prefix of its own and "
        "a connection from each server landing there (README, 'Bucket failover in airbyte mode')"
    )


def no_backup_bucket() -> ConfigError:
    """The error of a sync routed to the backup bucket while bucket failover is not configured."""
    return ConfigError(
        f"the route names the backup bucket, but {bucket_failover_unavailable()}. Set them, or "
        "pin the bucket to the primary (`acode route pin primary --part bucket --reason ...`)"
    )


def lane(role: Role, bucket: Role) -> str:
    """How a message names a connection's place: ``primary``, or ``primary -> backup bucket``."""
    return role if bucket == PRIMARY else f"{role} -> {bucket} bucket"


def blamed_part(origin: str | None) -> Part:
    """Which part of the route a failed job counts against, from the ``failureOrigin`` Airbyte
    records for it: ``destination`` (it could not write its staging: the bucket down, its
    credentials refused) against the bucket it lands in; anything else (``source``,
    ``replication``, ``airbyte_platform``, unknown) against the server it reads, as before."""
    return "bucket" if origin == "destination" else "source"


def destination_mismatch(destination: Mapping[str, Any], landing: Landing) -> str | None:
    """Where a connection's destination lands when that is not ``landing``; None when it is,
    or when the destination does not say (not described as an S3 destination with a bucket).

    Airbyte's public API describes an S3 destination by its ``configuration``'s
    ``s3_bucket_name`` and ``s3_bucket_path`` (the prefix the S3 Path Format goes under)."""
    config = destination.get("configuration") or {}
    kind = str(destination.get("destinationType") or config.get("destinationType") or "")
    if kind and kind != "s3":
        return f"a {kind} destination, not S3"
    if "s3_bucket_name" not in config:
        return None
    bucket = str(config.get("s3_bucket_name") or "")
    path = str(config.get("s3_bucket_path") or "")
    expected_bucket, expected_path = landing.location
    if (bucket, path.strip("/")) == (expected_bucket, expected_path.strip("/")):
        return None
    return f"s3://{bucket}/{path.strip('/')}".rstrip("/") if bucket else path


@dataclass(frozen=True)
class JobFailure:
    """What Airbyte recorded for a failed job: a reason for people, an origin for the probes."""

    reason: str
    origin: str | None = None


@dataclass(frozen=True)
class AirbyteJobSummary:
    job_id: int
    status: str
    connection_id: str
    connection_name: str
    role: str
    records: int
    bytes: int
    seconds: float
    bucket: str = PRIMARY


def as_job(details: Mapping[str, Any]) -> AirbyteJob:
    """dagster-airbyte's job record. Its parser reads the bytes from ``bytesScanned``, which
    Airbyte's public JobResponse does not have; the API's ``bytesSynced`` is what it reports."""
    if "bytesScanned" not in details:
        details = {**details, "bytesScanned": details.get("bytesSynced")}
    return AirbyteJob.from_job_details(job_details=details)


@dataclass
class AirbyteConnections:
    """An Airbyte workspace and the ACODE connections in it, spoken to through dagster-airbyte's
    client; every error it raises names the setting to look at and carries no secret.

    ``connection_ids`` are the connections into the primary bucket's staging, by the server they
    read; ``backup_bucket_ids`` those into the backup bucket's, empty when bucket failover is not
    configured."""

    workspace: AirbyteWorkspace
    connection_ids: Mapping[Role, str]
    secrets: tuple[str, ...] = ()
    backup_bucket_ids: Mapping[Role, str] = field(default_factory=dict)
    _client: AirbyteClient | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> AirbyteClient:
        if self._client is None:
            self._client = self.workspace.get_client()
        return self._client

    @property
    def rest_url(self) -> str:
        return self.client.rest_api_base_url.rstrip("/")

    @property
    def buckets(self) -> tuple[Role, ...]:
        """The buckets a sync can land into."""
        return (PRIMARY, BACKUP) if self.backup_bucket_ids else (PRIMARY,)

    def connection_id(self, role: Role, bucket: Role = PRIMARY) -> str:
        """The connection reading ``role`` into ``bucket``'s staging; ConfigError when bucket
        failover is not configured."""
        if bucket == PRIMARY:
            return self.connection_ids[role]
        found = self.backup_bucket_ids.get(role)
        if not found:
            raise no_backup_bucket()
        return found

    def _call(self, doing: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Failure as exc:
            why, transient = self.diagnose()
            raise AirbyteError(
                redact(f"Airbyte API: {doing} failed: {exc.description} — {why}", self.secrets),
                # Refused credentials need a person; an unreachable or failing server may be back.
                transient=transient,
            ) from None

    def diagnose(self) -> tuple[str, bool]:
        """Why the API does not answer (unreachable, credentials refused, or a server error), and
        whether trying again later may help.

        dagster-airbyte's errors name only the URL that failed; one direct request tells a
        person which of the three it is."""
        try:
            if self.workspace.client_id:
                response = requests.post(
                    f"{self.rest_url}/applications/token",
                    json={
                        "client_id": self.workspace.client_id,
                        "client_secret": self.workspace.client_secret,
                    },
                    timeout=self.client.request_timeout,
                )
            else:
                response = requests.get(
                    f"{self.rest_url}/workspaces/{self.workspace.workspace_id}",
                    timeout=self.client.request_timeout,
                )
        except requests.RequestException as exc:
            unreachable = (
                f"{self.rest_url} is unreachable ({type(exc).__name__}); check "
                "AIRBYTE_REST_API_BASE_URL and that Airbyte runs"
            )
            return redact(unreachable, self.secrets), True
        status = response.status_code
        if status in (401, 403):
            return (
                f"Airbyte refused the client credentials (HTTP {status}); check "
                "AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET (rotated? the application deleted?)",
                False,
            )
        if status >= 500:
            return f"Airbyte answers HTTP {status}: its server is failing", True
        return f"Airbyte answers (HTTP {status}); see the request that failed above", True

    def listed(self) -> list[Mapping[str, Any]]:
        """Every connection of the workspace, as the public API lists them."""
        listed = self._call(
            f"listing the connections of workspace {self.workspace.workspace_id}",
            self.client.get_connections,
        )
        return [dict(c) for c in listed]

    def connection(
        self,
        role: Role,
        bucket: Role = PRIMARY,
        *,
        listed: Sequence[Mapping[str, Any]] | None = None,
    ) -> Mapping[str, Any]:
        """The routed connection as the workspace lists it (``listed``, or listed now);
        ConfigError if it is not there."""
        connection_id = self.connection_id(role, bucket)
        listed = self.listed() if listed is None else listed
        for connection in listed:
            if connection.get("connectionId") == connection_id:
                return dict(connection)
        names = ", ".join(f"{c.get('name')} ({c.get('connectionId')})" for c in listed) or "none"
        raise ConfigError(
            f"{CONNECTION_SETTINGS[(role, bucket)]}={connection_id} names no connection in "
            f"Airbyte workspace {self.workspace.workspace_id} (it has: {names}); set it to the id "
            f"of the connection reading the {role} server into the {bucket} bucket's staging"
        )

    def destination(self, connection: Mapping[str, Any]) -> Mapping[str, Any]:
        """The destination of a listed connection (``GET /destinations/{id}``)."""
        destination_id = str(connection.get("destinationId") or "")
        if not destination_id:
            return {}
        return dict(
            self._call(
                f"reading destination {destination_id} of connection "
                f"{connection.get('connectionId')}",
                lambda: self.client.get_destination_details(destination_id),
            )
        )

    def jobs(self, role: Role, since: datetime, bucket: Role = PRIMARY) -> list[AirbyteJob]:
        """The connection's jobs created after ``since``, newest first."""
        connection_id = self.connection_id(role, bucket)
        jobs = self._call(
            f"listing the jobs of connection {connection_id}",
            lambda: self.client.get_jobs_for_connection(connection_id, since),
        )
        return sorted(jobs, key=lambda job: job.id, reverse=True)

    def job(self, job_id: int) -> AirbyteJob:
        details = self._call(f"reading job {job_id}", lambda: self.client.get_job_details(job_id))
        return as_job(details)

    def failure_reason(self, job_id: int) -> str:
        """The failure Airbyte recorded for the job's last attempt (configuration API)."""
        return self.failure(job_id).reason

    def failure(self, job_id: int) -> JobFailure:
        """The failure Airbyte recorded for the job's last attempt, and its origin (configuration
        API); an unreadable record is a reason that says so, with no origin."""
        try:
            response = requests.post(
                f"{self.client.configuration_api_base_url.rstrip('/')}/jobs/get",
                json={"id": job_id},
                headers=dict(self.client.all_additional_request_headers),
                timeout=self.client.request_timeout,
            )
            response.raise_for_status()
            attempts = response.json().get("attempts") or []
            for attempt in reversed(attempts):
                summary = (attempt.get("attempt") or {}).get("failureSummary") or {}
                for failure in summary.get("failures") or []:
                    message = failure.get("externalMessage") or failure.get("internalMessage")
                    if message:
                        origin = failure.get("failureOrigin")
                        reason = f"{message} (origin: {origin})" if origin else message
                        return JobFailure(
                            redact(reason, self.secrets), str(origin) if origin else None
                        )
            return JobFailure("Airbyte recorded no reason")
        except (requests.RequestException, ValueError, Failure) as exc:
            return JobFailure(
                redact(f"reason unavailable ({type(exc).__name__}: {exc})", self.secrets)
            )

    def start(self, role: Role, bucket: Role = PRIMARY) -> AirbyteJob | None:
        """Start a sync; None when Airbyte refuses because one is already running."""
        connection_id = self.connection_id(role, bucket)
        try:
            details = self.client.start_sync_job(connection_id)
        except Failure:
            # A sibling step of the same run may have started one a moment ago (Airbyte answers
            # 409); the caller adopts it. Anything else shows up when the jobs are listed.
            return None
        return as_job(details)

    def cancel(self, job_id: int) -> bool:
        try:
            self.client.cancel_job(job_id)
        except Failure:
            return False
        return True


@dataclass
class AirbyteSync:
    """Runs one job of the routed connection (the one reading ``role`` into ``bucket``'s
    staging) to its end (or its timeout) and says how it went. With ``landing`` given, the
    connection's destination must be that staging prefix."""

    connections: AirbyteConnections
    role: Role
    timeout_s: float
    poll_s: float
    log: ProgressLog
    sleep: Callable[[float], None] = time.sleep
    bucket: Role = PRIMARY
    landing: Landing | None = None

    @property
    def lane(self) -> str:
        return lane(self.role, self.bucket)

    @property
    def connection_id(self) -> str:
        return self.connections.connection_id(self.role, self.bucket)

    def run(self, not_before: datetime) -> AirbyteJobSummary:
        """A succeeded job that started at or after ``not_before``: adopted if one is running
        (three assets of one run share their connection's job), started otherwise."""
        connection = self.connections.connection(self.role, self.bucket)
        name = str(connection.get("name") or self.connection_id)
        if connection.get("status") not in (None, "active"):
            raise ConfigError(
                f"Airbyte connection {name} ({self.lane}) is {connection.get('status')}: enable "
                "it in Airbyte, or pin the route to the other side (`acode route pin`)"
            )
        if self.landing is not None:
            self._ensure_destination(connection, name, self.landing)
        started = time.monotonic()
        deadline = started + self.timeout_s
        while True:
            job, ours = self._job_to_follow(not_before)
            job = self._follow(job, ours, name, deadline)
            # A job started here began after the partition closed (the caller checked).
            if ours or job.start_time is None or job.start_time >= not_before:
                break
            self.log(
                f"Airbyte job {job.id} started at {job.start_time:%Y-%m-%d %H:%M:%S %Z}, before "
                f"the partition was over; starting a new one"
            )
        return AirbyteJobSummary(
            job_id=job.id,
            status=str(job.status),
            connection_id=self.connection_id,
            connection_name=name,
            role=self.role,
            records=job.rows_synced or 0,
            bytes=job.bytes_synced or 0,
            seconds=time.monotonic() - started,
            bucket=self.bucket,
        )

    def _ensure_destination(
        self, connection: Mapping[str, Any], name: str, landing: Landing
    ) -> None:
        """Refuse to trigger a connection that lands somewhere else than the routed bucket's
        staging: its rows would not be where the cut looks (or, worse, land in the bucket the
        route moved away from)."""
        wrong = destination_mismatch(self.connections.destination(connection), landing)
        if wrong is not None:
            setting = CONNECTION_SETTINGS[(self.role, self.bucket)]
            raise ConfigError(
                f"Airbyte connection {name} ({setting}) lands into {wrong}, not into the "
                f"{self.bucket} bucket's staging {landing.url} ({landing.setting}): point its "
                f"destination's S3 bucket and path there, or set {setting} to the connection "
                "that lands there; nothing was synced"
            )

    def _job_to_follow(self, not_before: datetime) -> tuple[AirbyteJob, bool]:
        since = min(not_before, datetime.now(UTC)) - timedelta(days=2)
        for attempt in range(3):
            jobs = self.connections.jobs(self.role, since, bucket=self.bucket)
            running = [j for j in jobs if j.status in ACTIVE]
            if running:
                self.log(f"Airbyte job {running[0].id} is already running; following it")
                return running[0], False
            job = self.connections.start(self.role, self.bucket)
            if job is not None:
                self.log(
                    f"started Airbyte job {job.id} on connection {self.connection_id} ({self.lane})"
                )
                return job, True
            self.sleep(self.poll_s * (attempt + 1))
        raise AirbyteError(
            f"Airbyte refused to start a sync of connection "
            f"{self.connection_id} ({self.lane}) and shows none running "
            f"— {self.connections.diagnose()[0]}",
            transient=True,
        )

    def _follow(self, job: AirbyteJob, ours: bool, name: str, deadline: float) -> AirbyteJob:
        last_note = time.monotonic()
        timed_out = False
        try:
            while job.status in ACTIVE:
                if time.monotonic() > deadline:
                    timed_out = True
                    cancelled = ours and self.connections.cancel(job.id)
                    raise AirbyteError(
                        f"Airbyte job {job.id} on {name} ({self.lane}) still {job.status} after "
                        f"{self.timeout_s:g} s (ACODE_AIRBYTE_TIMEOUT_S); "
                        + ("cancelled it" if cancelled else "left it running")
                        + " — look at the job's logs in Airbyte; nothing was published",
                        job_id=job.id,
                        status="timeout",
                    )
                self.sleep(self.poll_s)
                job = self.connections.job(job.id)
                if time.monotonic() - last_note >= _PROGRESS_EVERY_S:
                    last_note = time.monotonic()
                    self.log(
                        f"Airbyte job {job.id}: {job.status}, {job.rows_synced or 0:,} records, "
                        f"{(job.bytes_synced or 0) / 1e6:.1f} MB so far"
                    )
        finally:
            # Reached with the job still active only when the run is being terminated (Dagster
            # interrupts the step) or polling broke: a job we started must not outlive us.
            if ours and job.status in ACTIVE and not timed_out and self.connections.cancel(job.id):
                self.log(f"cancelled Airbyte job {job.id}")
        if job.status != AirbyteJobStatusType.SUCCEEDED:
            reason = self.connections.failure_reason(job.id)
            raise AirbyteError(
                f"Airbyte job {job.id} on {name} ({self.lane}) ended {job.status}: {reason}; "
                "nothing was published",
                job_id=job.id,
                status=str(job.status),
                # Retried, on the route then in force: repeated failures fail the route over.
                transient=job.status in FAILED,
            )
        return job


@dataclass
class AirbyteReplicator:
    """Partition D through the routed Airbyte connection, then the same atomic publish.

    ``role`` is the route's source, ``bucket`` its bucket and ``landing`` that bucket's staging
    prefix: the connection reading ``role`` into ``landing`` runs, and the store the partition
    is published to is the routed bucket's (the caller's)."""

    connections: AirbyteConnections
    role: Role
    landing: Landing
    timeout_s: float = 3600.0
    poll_s: float = 10.0
    batch_rows: int = BATCH_ROWS
    row_group_rows: int = ROW_GROUP_ROWS
    max_file_bytes: int = MAX_FILE_BYTES
    log: ProgressLog = print
    name: str = "airbyte"
    bucket: Role = PRIMARY

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
        publisher = publisher or default_publisher(table, day, source, self.log)
        job = AirbyteSync(
            self.connections,
            self.role,
            self.timeout_s,
            self.poll_s,
            self.log,
            bucket=self.bucket,
            landing=self.landing,
        ).run(not_before=partition_closes(day))
        self.log(
            f"Airbyte job {job.job_id} succeeded: {job.records:,} records, "
            f"{job.bytes / 1e6:.1f} MB in {job.seconds:.1f} s; publishing {table.name} "
            f"{day:%Y-%m-%d} from {self.landing.stream_url(table)}"
        )
        published = time.monotonic()
        cut = self.landing.cut(table, day)
        self._ensure_complete(table, day, cut, source)
        outcome = write_audit_publish(
            table,
            day,
            store,
            cut.batches(self.batch_rows),
            publisher,
            source=f"airbyte:{job.connection_name} ({source.display})",
            replicator=self.name,
            row_group_rows=self.row_group_rows,
            max_file_bytes=self.max_file_bytes,
        )
        landed = cut.stats
        result = SyncResult.of(
            outcome,
            seconds=time.monotonic() - started,
            source=source.display,
            bronze_url=store.partition_url(table, day),
            extra={
                "airbyte_job_id": job.job_id,
                "airbyte_records": job.records,
                "airbyte_bytes": job.bytes,
                "airbyte_connection": f"{job.connection_name} ({job.connection_id})",
                "airbyte_staging": self.landing.url,
                "airbyte_job_seconds": round(job.seconds, 3),
                "publish_seconds": round(time.monotonic() - published, 3),
                "landed_files": landed.files,
                "landed_duplicates": landed.duplicates,
            },
        )
        self.log(
            f"{table.name} {day:%Y-%m-%d}: {result.outcome_word} {result.rows:,} rows from "
            f"{landed.files} "
            f"landed file(s) ({landed.duplicates:,} repeated rows dropped) in "
            f"{result.extra['publish_seconds']} s"
        )
        return result

    def _ensure_complete(self, table: Table, day: date, cut: DayCut, source: MySQLEndpoint) -> None:
        """Refuse to publish fewer rows than the source holds for the day.

        A day whose rows are no longer in staging (a lifecycle rule expired them, or the
        connection's cursor was already past the day when it first synced) would otherwise
        replace a complete partition with a short one."""
        expected = count_rows(source, table, day)
        if cut.rows < expected:
            raise AirbyteError(
                f"the Airbyte landing {self.landing.stream_url(table)} holds {cut.rows:,} of the "
                f"{expected:,} rows of {table.name} {day:%Y-%m-%d} on {source.display}: the "
                "connection did not land them (staging expired, or its cursor was past the day); "
                "the published partition is unchanged. Re-sync that day with the embedded "
                f"replicator (ACODE_REPLICATOR=embedded acode sync {table.name} {day:%Y-%m-%d}), "
                "or refresh the stream in Airbyte so it lands the table again"
            )


def partition_closes(day: date) -> datetime:
    """The earliest start of a job that can hold all of partition ``day``, in UTC (a snapshot
    taken after the day is over is that day's snapshot)."""
    _, end = day_window(day)
    return end.replace(tzinfo=SOURCE_TIMEZONE).astimezone(UTC)


# ---------------------------------------------------------------------- health


def recent_failure(
    jobs: Sequence[AirbyteJob], now: datetime, window: timedelta
) -> tuple[AirbyteJob | None, str]:
    """The connection's last finished job when it failed within ``window`` (else None), and
    what the jobs say.

    Cancelled jobs say nothing about the connection and are skipped; a failure older than the
    window stops counting, so the route can come back once the cause is fixed (the next sync on
    it decides again).
    """
    for job in sorted(jobs, key=lambda j: j.id, reverse=True):
        if job.status in ACTIVE or job.status == AirbyteJobStatusType.CANCELLED:
            continue
        if job.status == AirbyteJobStatusType.SUCCEEDED:
            return None, f"last job {job.id} succeeded"
        ended = job.last_updated_at or job.start_time
        if ended is not None and now - ended > window:
            return None, f"last job {job.id} failed, longer ago than {window}"
        return job, f"last job {job.id} {job.status}"
    return None, "no finished job yet"


def judge_jobs(jobs: Sequence[AirbyteJob], now: datetime, window: timedelta) -> tuple[bool, str]:
    """A connection whose last finished job failed within ``window`` is unhealthy (whichever
    part of the route the failure counts against: see :func:`blamed_part`)."""
    failed, how = recent_failure(jobs, now, window)
    return failed is None, how


@dataclass(frozen=True)
class _LastJobs:
    failure: JobFailure | None
    """The recorded failure of the last finished job, when it is a recent failure."""
    how: str
    seen: int


def _last_jobs(
    connections: AirbyteConnections, role: Role, bucket: Role, now: datetime, window: timedelta
) -> _LastJobs:
    jobs = connections.jobs(role, now - window - timedelta(days=1), bucket=bucket)
    failed, how = recent_failure(jobs, now, window)
    failure = None if failed is None else connections.failure(failed.id)
    return _LastJobs(failure, how, len(jobs))


def probe_connection(
    connections: AirbyteConnections,
    role: Role,
    settings: ProbeSettings,
    failure_window: timedelta,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ProbeResult:
    """The ``role`` server's side of the route (target ``airbyte_<role>``): API reachable,
    credentials valid, its connection into the primary bucket present and active, and no
    connection reading it (into either bucket) whose last finished job is a recent failure
    that is not its destination's."""

    def check() -> Verdict:
        listed = connections.listed()
        moment = now()
        notes: list[str] = []
        seen = 0
        for bucket in connections.buckets:
            try:
                connection = connections.connection(role, bucket, listed=listed)
            except ConfigError:
                if bucket == PRIMARY:
                    raise
                continue  # the backup bucket's staging probe reports it
            name = connection.get("name") or connections.connection_id(role, bucket)
            if connection.get("status") not in (None, "active"):
                if bucket == PRIMARY:
                    return Verdict(False, f"connection {name} is {connection.get('status')}")
                continue
            last = _last_jobs(connections, role, bucket, moment, failure_window)
            seen += last.seen
            if last.failure is None:
                continue
            if blamed_part(last.failure.origin) == "source":
                return Verdict(
                    False,
                    f"connection {name}: {last.how}: {last.failure.reason}",
                    details={"jobs_seen": seen},
                )
            notes.append(
                f"connection {name}: {last.how} at its destination (counted against "
                f"staging_{bucket}, not this server)"
            )
        return Verdict(True, OK, warning="; ".join(notes) or None, details={"jobs_seen": seen})

    return run_check(
        f"airbyte_{role}", check, settings, connections.secrets, where=connections.rest_url
    )


def probe_staging(
    connections: AirbyteConnections,
    landing: Landing | None,
    bucket: Role,
    settings: ProbeSettings,
    failure_window: timedelta,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ProbeResult:
    """The ``bucket`` side of the route as Airbyte needs it (target ``staging_<bucket>``).

    A small object written, read back and deleted under the staging prefix's ``_probe/``; then
    each connection landing there has the prefix as its destination, and its last finished job
    is not a recent failure of its destination. A connection into the backup bucket must also be
    present and active (one into the primary bucket that is not counts against its server:
    :func:`probe_connection`). When the Airbyte API does not answer, the prefix's own health
    stands, with a warning: the server probes already count an API outage.
    ``landing`` None: bucket failover is not configured, and the probe says so, unhealthy."""
    target = f"staging_{bucket}"
    if landing is None:
        return ProbeResult(target, False, 0.0, bucket_failover_unavailable())
    # botocore does not echo keys in its errors; scrubbing them anyway costs nothing.
    aws = [os.environ.get(k, "") for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    secrets = (*connections.secrets, *aws)
    started = time.perf_counter()
    # Built before the probe's budget starts, as the bucket probe does: the budget bounds the
    # waiting, and building an S3 client is a second of CPU on a busy machine.
    try:
        put_get_delete = landing.prepare_probe(settings.timeout_s)
    except AcodeError as exc:
        return ProbeResult(target, False, time.perf_counter() - started, redact(str(exc), secrets))
    except Exception as exc:
        reason = f"probing {landing.url} failed unexpectedly: {type(exc).__name__}: {exc}"
        return ProbeResult(target, False, time.perf_counter() - started, redact(reason, secrets))

    def check() -> Verdict:
        put_get_delete()
        try:
            return _judge_staging_connections(connections, landing, bucket, now(), failure_window)
        except AirbyteError as exc:
            return Verdict(
                True,
                OK,
                warning=f"{landing.url} is writable; its connections were not checked: {exc}",
            )

    return run_check(target, check, settings, secrets, where=landing.url)


def _judge_staging_connections(
    connections: AirbyteConnections,
    landing: Landing,
    bucket: Role,
    now: datetime,
    window: timedelta,
) -> Verdict:
    listed = connections.listed()
    seen = 0
    for role in ROLES:
        setting = CONNECTION_SETTINGS[(role, bucket)]
        try:
            connection = connections.connection(role, bucket, listed=listed)
        except ConfigError as exc:
            if bucket == PRIMARY:
                continue  # counted against its server (probe_connection)
            return Verdict(False, str(exc))
        name = connection.get("name") or connections.connection_id(role, bucket)
        status = connection.get("status")
        if status not in (None, "active") and bucket != PRIMARY:
            return Verdict(
                False,
                f"connection {name} ({setting}) is {status}: enable it in Airbyte, bucket "
                f"failover lands through it",
            )
        wrong = destination_mismatch(connections.destination(connection), landing)
        if wrong is not None:
            return Verdict(
                False,
                f"connection {name} ({setting}) lands into {wrong}, not into {landing.url} "
                f"({landing.setting}): point its destination's S3 bucket and path there",
            )
        last = _last_jobs(connections, role, bucket, now, window)
        seen += last.seen
        if last.failure is not None and blamed_part(last.failure.origin) == "bucket":
            return Verdict(
                False,
                f"connection {name} could not write {landing.url}: {last.how}: "
                f"{last.failure.reason}",
                details={"jobs_seen": seen},
            )
    return Verdict(True, OK, details={"jobs_seen": seen})


def probe_both(
    connections: AirbyteConnections,
    settings: ProbeSettings,
    failure_window: timedelta,
    landings: Mapping[Role, Landing | None] | None = None,
) -> dict[str, ProbeResult]:
    """The probes of the Airbyte route, at once: ``airbyte_primary`` and ``airbyte_backup``
    (the source part) and, given the staging prefixes by bucket (None: not configured),
    ``staging_primary`` and ``staging_backup`` (the bucket part)."""
    calls: dict[str, Callable[[], ProbeResult]] = {
        f"airbyte_{role}": partial(probe_connection, connections, role, settings, failure_window)
        for role in ROLES
    }
    if landings is not None:
        for bucket in ROLES:
            calls[f"staging_{bucket}"] = partial(
                probe_staging, connections, landings.get(bucket), bucket, settings, failure_window
            )
    connections.client  # noqa: B018 -- built once here, not raced for by the probes' threads
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="airbyte-probe") as pool:
        running = {target: pool.submit(call) for target, call in calls.items()}
        return {target: future.result() for target, future in running.items()}
