"""The Airbyte route: the routed connection moves the rows, this module publishes partition D.

For partition D the replicator triggers the connection that the route names (primary or backup)
through dagster-airbyte's client, polls the job (cancelling it on a timeout, or when the run is
terminated), and then cuts partition D out of what the connection landed in the staging prefix
(:mod:`acode_dagster.landing`), publishing it with the same all-or-nothing publish as the
embedded replicator. A job that started before D was over cannot hold all of D; such a job is
waited for, never used, and a new one is started after it.

Plain Python: the resource in ``defs/resources.py`` builds the client from the standard
``AIRBYTE_*`` variables, and the health sensor calls :func:`probe_connection`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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
from acode_dagster.errors import ConfigError, SourceError, redact
from acode_dagster.landing import DayCut, Landing
from acode_dagster.mysql import MySQLEndpoint, count_rows
from acode_dagster.probes import ProbeResult, ProbeSettings, Verdict, run_check
from acode_dagster.replicator import (
    BATCH_ROWS,
    ProgressLog,
    SyncResult,
    default_publisher,
    ensure_day_is_over,
)
from acode_dagster.routing import PRIMARY, Role
from acode_dagster.tables import SOURCE_TIMEZONE, Table, day_window

ACTIVE = frozenset(
    {AirbyteJobStatusType.PENDING, AirbyteJobStatusType.RUNNING, AirbyteJobStatusType.INCOMPLETE}
)
FAILED = frozenset({AirbyteJobStatusType.FAILED, AirbyteJobStatusType.ERROR})
CONNECTION_SETTING = {
    "primary": "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID",
    "backup": "ACODE_AIRBYTE_BACKUP_CONNECTION_ID",
}
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


def as_job(details: Mapping[str, Any]) -> AirbyteJob:
    """dagster-airbyte's job record. Its parser reads the bytes from ``bytesScanned``, which
    Airbyte's public JobResponse does not have; the API's ``bytesSynced`` is what it reports."""
    if "bytesScanned" not in details:
        details = {**details, "bytesScanned": details.get("bytesSynced")}
    return AirbyteJob.from_job_details(job_details=details)


@dataclass
class AirbyteConnections:
    """An Airbyte workspace and the two ACODE connections in it, spoken to through
    dagster-airbyte's client; every error it raises names the setting to look at and carries
    no secret."""

    workspace: AirbyteWorkspace
    connection_ids: Mapping[Role, str]
    secrets: tuple[str, ...] = ()
    _client: AirbyteClient | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> AirbyteClient:
        if self._client is None:
            self._client = self.workspace.get_client()
        return self._client

    @property
    def rest_url(self) -> str:
        return self.client.rest_api_base_url.rstrip("/")

    def connection_id(self, role: Role) -> str:
        return self.connection_ids[role]

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

    def connection(self, role: Role) -> Mapping[str, Any]:
        """The routed connection as the workspace lists it; ConfigError if it is not there."""
        connection_id = self.connection_id(role)
        listed = self._call(
            f"listing the connections of workspace {self.workspace.workspace_id}",
            self.client.get_connections,
        )
        for connection in listed:
            if connection.get("connectionId") == connection_id:
                return dict(connection)
        names = ", ".join(f"{c.get('name')} ({c.get('connectionId')})" for c in listed) or "none"
        raise ConfigError(
            f"{CONNECTION_SETTING[role]}={connection_id} names no connection in Airbyte "
            f"workspace {self.workspace.workspace_id} (it has: {names}); set it to the id of "
            f"the {role} connection"
        )

    def jobs(self, role: Role, since: datetime) -> list[AirbyteJob]:
        """The connection's jobs created after ``since``, newest first."""
        jobs = self._call(
            f"listing the jobs of connection {self.connection_id(role)}",
            lambda: self.client.get_jobs_for_connection(self.connection_id(role), since),
        )
        return sorted(jobs, key=lambda job: job.id, reverse=True)

    def job(self, job_id: int) -> AirbyteJob:
        details = self._call(f"reading job {job_id}", lambda: self.client.get_job_details(job_id))
        return as_job(details)

    def failure_reason(self, job_id: int) -> str:
        """The failure Airbyte recorded for the job's last attempt (configuration API)."""
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
                        return redact(
                            f"{message} (origin: {origin})" if origin else message, self.secrets
                        )
            return "Airbyte recorded no reason"
        except (requests.RequestException, ValueError, Failure) as exc:
            return redact(f"reason unavailable ({type(exc).__name__}: {exc})", self.secrets)

    def start(self, role: Role) -> AirbyteJob | None:
        """Start a sync; None when Airbyte refuses because one is already running."""
        try:
            details = self.client.start_sync_job(self.connection_id(role))
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
    """Runs one job of the routed connection to its end (or its timeout) and says how it went."""

    connections: AirbyteConnections
    role: Role
    timeout_s: float
    poll_s: float
    log: ProgressLog
    sleep: Callable[[float], None] = time.sleep

    def run(self, not_before: datetime) -> AirbyteJobSummary:
        """A succeeded job that started at or after ``not_before``: adopted if one is running
        (three assets of one run share their connection's job), started otherwise."""
        connection = self.connections.connection(self.role)
        name = str(connection.get("name") or self.connections.connection_id(self.role))
        if connection.get("status") not in (None, "active"):
            raise ConfigError(
                f"Airbyte connection {name} ({self.role}) is {connection.get('status')}: enable "
                "it in Airbyte, or pin the route to the other side (`acode route pin`)"
            )
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
            connection_id=self.connections.connection_id(self.role),
            connection_name=name,
            role=self.role,
            records=job.rows_synced or 0,
            bytes=job.bytes_synced or 0,
            seconds=time.monotonic() - started,
        )

    def _job_to_follow(self, not_before: datetime) -> tuple[AirbyteJob, bool]:
        since = min(not_before, datetime.now(UTC)) - timedelta(days=2)
        for attempt in range(3):
            running = [j for j in self.connections.jobs(self.role, since) if j.status in ACTIVE]
            if running:
                self.log(f"Airbyte job {running[0].id} is already running; following it")
                return running[0], False
            job = self.connections.start(self.role)
            if job is not None:
                self.log(
                    f"started Airbyte job {job.id} on connection "
                    f"{self.connections.connection_id(self.role)} ({self.role})"
                )
                return job, True
            self.sleep(self.poll_s * (attempt + 1))
        raise AirbyteError(
            f"Airbyte refused to start a sync of connection "
            f"{self.connections.connection_id(self.role)} ({self.role}) and shows none running "
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
                        f"Airbyte job {job.id} on {name} ({self.role}) still {job.status} after "
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
                f"Airbyte job {job.id} on {name} ({self.role}) ended {job.status}: {reason}; "
                "nothing was published",
                job_id=job.id,
                status=str(job.status),
                # Retried, on the route then in force: repeated failures fail the route over.
                transient=job.status in FAILED,
            )
        return job


@dataclass
class AirbyteReplicator:
    """Partition D through the routed Airbyte connection, then the same atomic publish."""

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
        job = AirbyteSync(self.connections, self.role, self.timeout_s, self.poll_s, self.log).run(
            not_before=partition_closes(day)
        )
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


def judge_jobs(jobs: Sequence[AirbyteJob], now: datetime, window: timedelta) -> tuple[bool, str]:
    """A connection whose last finished job failed within ``window`` is unhealthy.

    Cancelled jobs say nothing about the connection and are skipped; a failure older than the
    window stops counting, so the route can come back once the cause is fixed (the next sync on
    it decides again).
    """
    for job in sorted(jobs, key=lambda j: j.id, reverse=True):
        if job.status in ACTIVE or job.status == AirbyteJobStatusType.CANCELLED:
            continue
        if job.status == AirbyteJobStatusType.SUCCEEDED:
            return True, f"last job {job.id} succeeded"
        ended = job.last_updated_at or job.start_time
        if ended is not None and now - ended > window:
            return True, f"last job {job.id} failed, longer ago than {window}"
        return False, f"last job {job.id} {job.status}"
    return True, "no finished job yet"


def probe_connection(
    connections: AirbyteConnections,
    role: Role,
    settings: ProbeSettings,
    failure_window: timedelta,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ProbeResult:
    """API reachable, credentials valid, the routed connection present and active, and its last
    finished job not a recent failure."""

    def check() -> Verdict:
        connection = connections.connection(role)
        name = connection.get("name") or connections.connection_id(role)
        if connection.get("status") not in (None, "active"):
            return Verdict(False, f"connection {name} is {connection.get('status')}")
        moment = now()
        jobs = connections.jobs(role, moment - failure_window - timedelta(days=1))
        healthy, how = judge_jobs(jobs, moment, failure_window)
        if not healthy:
            last = next(j for j in jobs if j.status in FAILED)
            how = f"{how}: {connections.failure_reason(last.id)}"
        return Verdict(
            healthy,
            "ok" if healthy else f"connection {name}: {how}",
            details={"jobs_seen": len(jobs)},
        )

    return run_check(
        f"airbyte_{role}", check, settings, connections.secrets, where=connections.rest_url
    )


def probe_both(
    connections: AirbyteConnections, settings: ProbeSettings, failure_window: timedelta
) -> dict[str, ProbeResult]:
    roles: Iterable[Role] = (PRIMARY, "backup")
    return {
        f"airbyte_{role}": probe_connection(connections, role, settings, failure_window)
        for role in roles
    }
