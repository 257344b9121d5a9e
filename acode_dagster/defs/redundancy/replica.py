"""The replica is checked, not assumed; days read from it are re-verified after fail-back.

``replica_consistency`` is an asset check on ``redundancy``: the last ACODE_REPLICA_CHECK_DAYS
complete days of each fact table, and the catalogue as it is now, summed on the primary and on
the replica (:mod:`acode_dagster.source.checksum`) and compared; a difference fails it at ERROR,
which the alert sensor tells (and pages). ``replica_check_job`` runs it, on
``replica_check_schedule`` (ACODE_REPLICA_CHECK_CRON, São Paulo time). An asset check on an
external asset (an ``AssetSpec``) runs in a ``define_asset_job`` selecting only the check, and
through ``materialize``/``execute_in_process``, in Dagster 1.13: it executes as a step of its
own and records its evaluation against ``redundancy``; nothing is materialized.

After the source route comes back from the backup to the primary (a ``failback``, or a
``pinned`` event moving the source there), ``replica_reverify_sensor`` finds the bronze days
whose latest version was read from the backup before that moment, within ACODE_CATCHUP_DAYS of
it or since the outage began, and launches ``replica_reverify_job`` for them: a sensor tick has
60 s, a day's checksum on two servers can take minutes. The job reconciles each day against
the primary (:func:`~acode_dagster.source.checksum.reconcile`) and records its verdicts as an
observation of ``redundancy``; a later tick of the sensor reads that observation and requests
the bronze runs that re-sync the differing days from the primary, once each (the run key names
the fail-back event and the day), and only while the route's source is the primary (each run
reads the route when it starts).
"""

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.bronze.jobs import bronze_acode_job
from acode_dagster.defs.bronze.partitions import daily_partitions
from acode_dagster.defs.cron import schedule_cron
from acode_dagster.defs.observability.resources import MetricsResource
from acode_dagster.defs.redundancy.resources import RedundancyResource
from acode_dagster.defs.redundancy.state import EVENT_FIELD, REDUNDANCY_KEY, read_route
from acode_dagster.defs.resources import AcodeSourcesResource, BronzeResource
from acode_dagster.errors import AcodeError, redact
from acode_dagster.failover import RouteEvent
from acode_dagster.observability.metrics import Metrics
from acode_dagster.routing import BACKUP, PRIMARY
from acode_dagster.settings import DEFAULT_REPLICA_CHECK_CRON, Settings
from acode_dagster.source.checksum import (
    Reconciliation,
    WindowCheck,
    check_windows,
    complete_days_before,
    reconcile,
    replica_lag_s,
    replica_windows,
    window_label,
    window_sum,
    window_sums,
)
from acode_dagster.tables import SOURCE_TIMEZONE, TABLES, get_table

CHECK_NAME = "replica_consistency"
REVERIFY_FIELD = "reverify_json"
"""Metadata field of the ``redundancy`` observation that carries a re-verification's result."""
REVERIFY_INTERVAL_S = 60
_PAGE = 200
_PAGES_PER_TICK = 10
"""At most this many pages of ``redundancy`` observations per tick (the health sensor records
one every tick); the next tick goes on from where this one stopped."""


# ---------------------------------------------------------------------- the replica check


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _windows_table(checks: Sequence[WindowCheck]) -> str:
    lines = [
        "| table | window | verdict | primary rows | replica rows | primary checksum "
        "| replica checksum | differs in |",
        "|---|---|---|---:|---:|---|---|---|",
    ]
    for c in checks:
        if c.comparison is None:
            lines.append(
                f"| {c.table} | {window_label(c.day)} | {c.verdict} | | | | | {_md(c.error)} |"
            )
            continue
        p, r = c.comparison.primary, c.comparison.replica
        lines.append(
            f"| {c.table} | {window_label(c.day)} | {c.verdict} | {p.rows:,} | {r.rows:,} "
            f"| `{p.hex}` | `{r.hex}` | {_md(c.comparison.where())} |"
        )
    return "\n".join(lines)


def replica_check_result(
    checks: Sequence[WindowCheck], days: Sequence[date]
) -> dg.AssetCheckResult:
    """The check's verdict from every window's: ERROR when a window differs (a difference the
    replica's lag cannot explain), WARN when one is only lagging or could not be read."""
    differs = [c for c in checks if c.verdict == "differs"]
    lagging = [c for c in checks if c.verdict == "lagging"]
    unreadable = [c for c in checks if c.verdict == "error"]
    bad = differs + lagging + unreadable
    passed = not bad
    severity = dg.AssetCheckSeverity.ERROR if differs else dg.AssetCheckSeverity.WARN
    span = f"{days[0]}..{days[-1]}" if days else "no complete day"
    if passed:
        measured = f"{len(checks)} window(s) equal on primary and replica (days {span})"
    else:
        named = "; ".join(c.describe() for c in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        measured = (
            f"{len(differs)} window(s) differ, {len(lagging)} lagging, {len(unreadable)} not "
            f"compared, of {len(checks)}: {named}{more}"
        )
    lag = next((c.lag_s for c in checks), None)
    metadata: dict[str, dg.MetadataValue] = {
        "measured": dg.MetadataValue.text(measured),
        "threshold": dg.MetadataValue.text(
            "every window equal on primary and replica (rows and checksum)"
        ),
        "days": dg.MetadataValue.text(span),
        "differing": dg.MetadataValue.md(_windows_table(bad) if bad else "none"),
        "compared_windows": dg.MetadataValue.int(len(checks)),
        "differing_windows": dg.MetadataValue.int(len(differs)),
        "lagging_windows": dg.MetadataValue.int(len(lagging)),
        "unreadable_windows": dg.MetadataValue.int(len(unreadable)),
        "replica_lag_s": dg.MetadataValue.float(-1.0 if lag is None else float(lag)),
    }
    # Per table, ints summed over the compared days: what the UI plots run after run.
    for table in TABLES:
        mine = [c for c in checks if c.table == table.name and c.comparison is not None]
        for side in ("primary", "replica"):
            rows = sum(getattr(c.comparison, side).rows for c in mine if c.comparison)
            metadata[f"{table.name}/{side}_rows"] = dg.MetadataValue.int(rows)
        metadata[f"{table.name}/differing_windows"] = dg.MetadataValue.int(
            sum(1 for c in checks if c.table == table.name and c.verdict != "equal")
        )
    metadata["windows"] = dg.MetadataValue.md(_windows_table(checks))
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=passed,
        severity=severity,
        description=measured,
        metadata=metadata,
    )


def check_days(days: int, now: datetime) -> list[date]:
    """The last ``days`` complete local days, none before the first partition."""
    today = now.astimezone(SOURCE_TIMEZONE).date()
    return complete_days_before(today, days, first=daily_partitions.start.date())


@dg.asset_check(
    asset=REDUNDANCY_KEY,
    name=CHECK_NAME,
    description=(
        "The replica is a copy of the primary: the last ACODE_REPLICA_CHECK_DAYS complete days "
        "of each fact table, and the catalogue as it is now, have the same row count and "
        "checksum (pt-table-checksum's method, computed on each server) on both. ERROR on a "
        "difference the replica's lag cannot explain."
    ),
    blocking=False,
    # It reads both servers about as hard as a sync reads one: counted with the syncs
    # (acode_dagster.runs.SOURCE_POOL, ACODE_SOURCE_CONCURRENCY).
    pool="acode_source",
)
def replica_consistency(
    context: dg.AssetCheckExecutionContext,
    acode_sources: AcodeSourcesResource,
    redundancy: RedundancyResource,
    metrics: MetricsResource,
) -> dg.AssetCheckResult:
    days = check_days(redundancy.replica_check_days, datetime.now(UTC))
    windows = replica_windows(TABLES, days)
    try:
        primary, backup = acode_sources.endpoint(PRIMARY), acode_sources.endpoint(BACKUP)
    except AcodeError as exc:
        checks = [WindowCheck(w.table.name, w.day, "error", error=str(exc)) for w in windows]
        emit_window_metrics(checks, metrics.client(context.log.warning))
        return replica_check_result(checks, days)
    checks = check_windows(
        primary,
        backup,
        windows,
        wait_s=redundancy.replica_check_wait_s,
        lag=lambda: replica_lag_s(backup, redundancy.probe_timeout_s),
        log=context.log.info,
    )
    for check in checks:
        (context.log.info if check.verdict == "equal" else context.log.warning)(
            f"{check.verdict}: {check.describe()}"
        )
    emit_window_metrics(checks, metrics.client(context.log.warning))
    return replica_check_result(checks, days)


def emit_window_metrics(checks: Sequence[WindowCheck], metrics: Metrics) -> None:
    """Each window's outcome (a difference is an error, lagging or unreadable a warning, as
    the check's own severity goes) and the lag the check measured; never raises."""
    for check in checks:
        severity = "ERROR" if check.verdict == "differs" else "WARN"
        day = check.day.isoformat() if check.day else None
        metrics.check(check.table, day, CHECK_NAME, check.verdict == "equal", severity)
    lag = next((c.lag_s for c in checks if c.lag_s is not None), None)
    if lag is not None:
        metrics.emit("acode.replica.lag_seconds", lag, side=BACKUP)
    metrics.flush()


replica_check_job = dg.define_asset_job(
    name="replica_check_job",
    selection=dg.AssetSelection.checks(replica_consistency),
    description=(
        "Compares the primary and the replica (row counts and checksums of the last "
        "ACODE_REPLICA_CHECK_DAYS complete days, and the catalogue) and records the "
        "replica_consistency check on redundancy."
    ),
)


def _cron(settings: Settings) -> str:
    return schedule_cron(
        "ACODE_REPLICA_CHECK_CRON", settings.replica_check_cron, DEFAULT_REPLICA_CHECK_CRON
    )


replica_check_schedule = dg.ScheduleDefinition(
    name="replica_check_schedule",
    job=replica_check_job,
    cron_schedule=_cron(Settings.from_env()),
    execution_timezone=SOURCE_TIMEZONE.key,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Runs the replica check on ACODE_REPLICA_CHECK_CRON (default 05:30 São Paulo time, "
        "after the night's syncs, when the days it compares are long complete)."
    ),
)


# ---------------------------------------------------------------------- re-verify after fail-back


def returns_source_to_primary(event: RouteEvent) -> bool:
    """Whether ``event`` moved the source route from the backup to the primary (a pin whose
    parts started on different sides may have: its days are checked, which costs little when
    none was read from the backup)."""
    return (
        event.kind in ("failback", "failover", "pinned")
        and "source" in event.parts
        and event.to_role == PRIMARY
        and event.from_role != PRIMARY
    )


def reverify_days(event: RouteEvent, catchup_days: int, first: date) -> list[date]:
    """The days whose versions may have been read from the backup before ``event``: the last
    ``catchup_days`` before it and, when the event knows when the outage began, every day
    since then."""
    end = event.at.astimezone(SOURCE_TIMEZONE).date()
    start = end - timedelta(days=catchup_days)
    if event.outage_s is not None:
        began = (event.at - timedelta(seconds=event.outage_s)).astimezone(SOURCE_TIMEZONE)
        start = min(start, began.date())
    start = max(start, first)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def latest_materializations(
    instance: dg.DagsterInstance, key: dg.AssetKey, days: Sequence[date]
) -> dict[str, dg.EventLogRecord]:
    """The latest materialization record of each of ``days`` that has one."""
    wanted = [f"{d:%Y-%m-%d}" for d in days]
    latest: dict[str, dg.EventLogRecord] = {}
    cursor = None
    while wanted:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=wanted),
            limit=_PAGE,
            cursor=cursor,
        )
        for record in page.records:  # newest first
            if record.partition_key and record.partition_key not in latest:
                latest[record.partition_key] = record
        if not page.has_more or len(latest) == len(wanted):
            break
        cursor = page.cursor
    return latest


def _metadata_value(record: dg.EventLogRecord, name: str) -> Any:
    materialization = record.asset_materialization
    value = materialization.metadata.get(name) if materialization else None
    return value.value if value is not None else None


def read_from_backup(
    instance: dg.DagsterInstance, event: RouteEvent, catchup_days: int
) -> list[tuple[str, date]]:
    """``(table, day)`` of the bronze days whose latest version was read from the backup before
    ``event`` (a later version, or one read after the event, is not this event's business)."""
    days = reverify_days(event, catchup_days, daily_partitions.start.date())
    found: list[tuple[str, date]] = []
    for table in TABLES:
        for partition, record in latest_materializations(instance, bronze_key(table), days).items():
            if _metadata_value(record, "source_role") != BACKUP:
                continue
            if record.timestamp > event.at.timestamp():
                continue
            found.append((table.name, date.fromisoformat(partition)))
    return sorted(found, key=lambda pair: (pair[1], pair[0]))


class ReverifyPair(dg.Config):
    table: str = Field(description="bronze table name, e.g. farmarcas_si_analitico_diario")
    day: str = Field(description="partition, YYYY-MM-DD")


class ReverifyConfig(dg.Config):
    event_id: int = Field(description="storage id of the route event that returned to primary")
    event: str = Field(default="", description="that event, as people read it")
    pairs: list[ReverifyPair] = Field(default_factory=list)


def published_rows(
    instance: dg.DagsterInstance, bronze: BronzeResource, table_name: str, day: date
) -> int | None:
    """Rows of the published version: its manifest in the bucket it was written to, else the
    latest materialization's ``dagster/row_count``; None when neither is known."""
    table = get_table(table_name)
    record = latest_materializations(instance, bronze_key(table), [day]).get(f"{day:%Y-%m-%d}")
    if record is None:
        return None
    role = _metadata_value(record, "bucket_role")
    try:
        manifest = bronze.store(BACKUP if role == BACKUP else PRIMARY).manifest(table, day)
    except (AcodeError, OSError):
        manifest = None
    if manifest is not None:
        return manifest.rows
    rows = _metadata_value(record, "dagster/row_count")
    return rows if isinstance(rows, int) else None


@dataclass
class Reverified:
    """One re-verification: the reconciled days, and the ones that could not be verified."""

    event_id: int
    reconciled: list[Reconciliation] = field(default_factory=list)
    unverified: list[tuple[str, str, str]] = field(default_factory=list)
    """``(table, day, why)``: the primary could not be read, so nothing was decided."""

    @property
    def resync(self) -> list[tuple[str, str]]:
        return [(r.table, f"{r.day:%Y-%m-%d}") for r in self.reconciled if r.resync]

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "resync": [list(pair) for pair in self.resync],
            "verdicts": [r.to_json() for r in self.reconciled],
            "unverified": [list(u) for u in self.unverified],
        }

    def observation(self, event: str) -> dg.AssetObservation:
        lines = [
            "| table | day | verdict | published rows | primary rows | replica rows "
            "| primary checksum | replica checksum | why |",
            "|---|---|---|---:|---:|---:|---|---|---|",
        ]
        for r in self.reconciled:
            p, b = r.primary, r.replica
            lines.append(
                f"| {r.table} | {r.day} | {'re-sync' if r.resync else 'verified'} "
                f"| {'' if r.published_rows is None else f'{r.published_rows:,}'} "
                f"| {'' if p is None else f'{p.rows:,}'} | {'' if b is None else f'{b.rows:,}'} "
                f"| {'' if p is None else p.hex} | {'' if b is None else b.hex} | {_md(r.reason)} |"
            )
        for table, day, why in self.unverified:
            lines.append(f"| {table} | {day} | not verified | | | | | | {_md(why)} |")
        resync = self.resync
        summary = (
            f"re-verified {len(self.reconciled)} day(s) read from the backup after: {event}; "
            f"{len(resync)} to re-sync from the primary"
            + (f" ({', '.join(f'{t} {d}' for t, d in resync)})" if resync else "")
            + (f"; {len(self.unverified)} not verified" if self.unverified else "")
        )
        return dg.AssetObservation(
            asset_key=REDUNDANCY_KEY,
            description=summary,
            metadata={
                "reverify_event": dg.MetadataValue.int(self.event_id),
                "reverified_days": dg.MetadataValue.int(len(self.reconciled)),
                "resync_days": dg.MetadataValue.int(len(resync)),
                "unverified_days": dg.MetadataValue.int(len(self.unverified)),
                "reverify_verdicts": dg.MetadataValue.md("\n".join(lines)),
                REVERIFY_FIELD: dg.MetadataValue.json(self.to_json()),
            },
        )


def reverify(
    sources: AcodeSourcesResource,
    bronze: BronzeResource,
    instance: dg.DagsterInstance,
    event_id: int,
    pairs: Iterable[tuple[str, date]],
) -> Reverified:
    """Reconcile each ``(table, day)`` against the primary, both servers read at once."""
    done = Reverified(event_id)
    primary, backup = sources.endpoint(PRIMARY), sources.endpoint(BACKUP)
    secrets = (*primary.secrets(), *backup.secrets())
    for name, day in pairs:
        table = get_table(name)
        published = published_rows(instance, bronze, name, day)
        try:
            on_primary, on_replica = window_sums(primary, backup, table, day)
        except AcodeError:
            # The replica may be what failed; a day can still be decided on the primary alone.
            try:
                on_primary, on_replica = window_sum(primary, table, day), None
            except AcodeError as exc:
                done.unverified.append((name, f"{day:%Y-%m-%d}", redact(str(exc), secrets)))
                continue
        done.reconciled.append(reconcile(table, day, published, on_primary, on_replica))
    return done


@dg.op(
    description=(
        "Reconciles bronze days read from the backup against the primary after fail-back "
        "(published rows against the primary's window, the replica's checksum against the "
        "primary's) and records the verdicts, and the days to re-sync, on redundancy."
    ),
    retry_policy=dg.RetryPolicy(max_retries=2, delay=60),
    pool="acode_source",
)
def reverify_replica_days(
    context: dg.OpExecutionContext,
    config: ReverifyConfig,
    acode_sources: AcodeSourcesResource,
    bronze: BronzeResource,
) -> None:
    pairs = [(p.table, date.fromisoformat(p.day)) for p in config.pairs]
    done = reverify(acode_sources, bronze, context.instance, config.event_id, pairs)
    for r in done.reconciled:
        (context.log.warning if r.resync else context.log.info)(
            f"{r.table} {r.day}: {'re-sync' if r.resync else 'ok'}: {r.reason}"
        )
    context.log_event(done.observation(config.event))
    if done.unverified:
        raise dg.Failure(
            description=(
                "could not read the primary to verify "
                + "; ".join(f"{t} {d}: {why}" for t, d, why in done.unverified)
                + " (the days verified are recorded; the run retries)"
            )
        )


@dg.job(
    name="replica_reverify_job",
    description=(
        "Re-verifies, against the primary, the bronze days read from the backup during an "
        "outage; launched by replica_reverify_sensor after the source fails back."
    ),
)
def replica_reverify_job() -> None:
    reverify_replica_days()


@dataclass
class ReverifyCursor:
    mark: int = 0
    """Storage id of the last ``redundancy`` observation read."""
    held: list[dict[str, Any]] = field(default_factory=list)
    """Re-syncs found while the source was not on the primary: ``{event_id, day, tables}``."""
    since: float | None = None
    """Nothing recorded before this timestamp is read (set by the sensor's first tick)."""

    def to_json(self) -> str:
        return json.dumps(
            {"mark": self.mark, "held": self.held, "since": self.since}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> "ReverifyCursor":
        raw = json.loads(text)
        since = raw.get("since")
        return cls(
            mark=int(raw["mark"]),
            held=list(raw.get("held", [])),
            since=None if since is None else float(since),
        )


def resync_request(event_id: int, day: str, tables: Sequence[str]) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"replica-resync/{event_id}/{day}",
        job_name=bronze_acode_job.name,
        partition_key=day,
        asset_selection=[bronze_key(get_table(t)) for t in sorted(tables)],
        tags={"acode/replica_resync": f"failback event {event_id}"},
    )


def reverify_request(
    event_id: int, event: RouteEvent, pairs: Sequence[tuple[str, date]]
) -> dg.RunRequest:
    config = ReverifyConfig(
        event_id=event_id,
        event=event.describe(),
        pairs=[ReverifyPair(table=t, day=f"{d:%Y-%m-%d}") for t, d in pairs],
    )
    return dg.RunRequest(
        run_key=f"replica-reverify/{event_id}",
        job_name=replica_reverify_job.name,
        run_config=dg.RunConfig(ops={reverify_replica_days.name: config}),
        tags={"acode/replica_reverify": f"failback event {event_id}"},
    )


def new_records(
    instance: dg.DagsterInstance, state: ReverifyCursor
) -> Iterator[tuple[int, Mapping[str, dg.MetadataValue]]]:
    """``(storage id, metadata)`` of the ``redundancy`` observations after the cursor, oldest
    first, at most :data:`_PAGES_PER_TICK` pages; moves the cursor's mark past each."""
    for _ in range(_PAGES_PER_TICK):
        page = instance.fetch_observations(
            dg.AssetRecordsFilter(
                asset_key=REDUNDANCY_KEY,
                after_storage_id=state.mark or None,
                after_timestamp=state.since,
            ),
            limit=_PAGE,
            ascending=True,
        )
        for record in page.records:
            state.mark = max(state.mark, record.storage_id)
            observation = record.asset_observation
            yield record.storage_id, (observation.metadata if observation else {})
        if not page.has_more:
            return


def reverify_tick(
    instance: dg.DagsterInstance,
    cursor: str | None,
    catchup_days: int,
    now: datetime,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[str, list[dg.RunRequest]]:
    """One evaluation of the sensor: the new cursor and the runs to request.

    Reads the ``redundancy`` observations recorded since the cursor, in order: a route event
    returning the source to the primary requests the re-verification of the days read from the
    backup; a re-verification's result requests the re-sync of its differing days (held while
    the source is not on the primary). With no cursor (the sensor's first tick) it starts
    ``catchup_days`` back, so a fail-back shortly before the sensor was turned on still counts.
    """
    state = ReverifyCursor.from_json(cursor) if cursor else ReverifyCursor()
    if cursor is None:
        state.since = (now - timedelta(days=max(catchup_days, 1))).timestamp()
    requests: list[dg.RunRequest] = []
    resyncs: dict[tuple[int, str], set[str]] = {}
    for held in state.held:
        resyncs.setdefault((int(held["event_id"]), str(held["day"])), set()).update(held["tables"])
    for storage_id, metadata in new_records(instance, state):
        if EVENT_FIELD in metadata:
            event = RouteEvent.from_json(_json(metadata[EVENT_FIELD].value))
            if not returns_source_to_primary(event):
                continue
            pairs = read_from_backup(instance, event, catchup_days)
            log(
                f"{event.describe()}: {len(pairs)} bronze day(s) were read from the backup"
                + (": re-verifying them against the primary" if pairs else "")
            )
            if pairs:
                requests.append(reverify_request(storage_id, event, pairs))
        elif REVERIFY_FIELD in metadata:
            result = _json(metadata[REVERIFY_FIELD].value)
            for table, day in _pairs(result.get("resync")):
                resyncs.setdefault((int(str(result["event_id"])), day), set()).add(table)
    on_primary = read_route(instance).source == PRIMARY
    state.held = []
    for (event_id, day), tables in sorted(resyncs.items()):
        if on_primary:
            requests.append(resync_request(event_id, day, sorted(tables)))
        else:
            state.held.append({"event_id": event_id, "day": day, "tables": sorted(tables)})
    if state.held:
        log(f"{len(state.held)} re-sync(s) held until the source route is on the primary again")
    return state.to_json(), requests


def _json(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(str(value))


def _pairs(value: object) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return []
    return [(str(pair[0]), str(pair[1])) for pair in value if isinstance(pair, list | tuple)]


@dg.sensor(
    name="replica_reverify_sensor",
    jobs=[replica_reverify_job, bronze_acode_job],
    minimum_interval_seconds=REVERIFY_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "After the source route returns from the backup to the primary, launches "
        "replica_reverify_job for the bronze days read from the backup (within "
        "ACODE_CATCHUP_DAYS, or since the outage began), then re-syncs from the primary the "
        "days it found different, once each."
    ),
)
def replica_reverify_sensor(
    context: dg.SensorEvaluationContext, redundancy: RedundancyResource
) -> dg.SensorResult:
    cursor, requests = reverify_tick(
        context.instance,
        context.cursor,
        redundancy.catchup_days,
        datetime.now(UTC),
        log=context.log.info,
    )
    return dg.SensorResult(run_requests=requests, cursor=cursor)
