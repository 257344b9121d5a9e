"""Weekly operations: ``acode_weekly_job`` on ``acode_weekly_schedule`` (ACODE_WEEKLY_CRON,
Monday 06:00 São Paulo time by default).

One step, the asset ``acode_ops/weekly_report``: it sweeps both bronze roots (what
``bronze_sweep_job`` does daily), compares the week's days on the primary and the replica (the
replica check's checksums) and in the two buckets (``acode buckets diff``), then reads the week
from the instance (the bronze materializations, the check executions, the route events) and
the open quarantines from the buckets, and writes the report (:mod:`acode_dagster.observability
.weekly`): Markdown in the materialization's metadata, and one Slack message. Each operation
that fails is a line of the report, never the end of it.

The week is the seven local days ending the day before the tick (``week_ending`` in the run's
config, which the schedule sets from its tick, so a re-run covers the same week; the UI's
launchpad takes any other). The Slack message is posted once per week, however often the run is
retried or re-run: it goes through :func:`acode_dagster.alerts.deliver` with a delivery ledger of
its own in the instance (``acode/alerts/ledger/weekly-report``), keyed ``weekly-report:<first
day>``; ``resend: true`` posts it again on purpose. Without a Slack token the report is still
materialized, and the log says it was not sent.
"""

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)
from pydantic import Field

from acode_dagster.alerts import Pending, deliver
from acode_dagster.bronze.mirror import diff
from acode_dagster.defs.alerts.ledger import load_ledger
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import WATCHED
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.bronze.partitions import daily_partitions
from acode_dagster.defs.bronze.sweep import sweep_roots
from acode_dagster.defs.cron import schedule_cron
from acode_dagster.defs.observability.business import BUSINESS_METRICS
from acode_dagster.defs.redundancy.resources import RedundancyResource
from acode_dagster.defs.redundancy.state import EVENT_FIELD, REDUNDANCY_KEY, read_route
from acode_dagster.defs.resources import AcodeSourcesResource, BronzeResource
from acode_dagster.errors import AcodeError, ConfigError, redact
from acode_dagster.failover import RouteEvent
from acode_dagster.observability.weekly import (
    CheckRun,
    Materialization,
    QuarantineEntry,
    Verification,
    Week,
    WeekFacts,
    WeeklyReport,
    build_report,
    figures,
    render_markdown,
    slack_alert,
)
from acode_dagster.routing import BACKUP, PRIMARY
from acode_dagster.settings import DEFAULT_WEEKLY_CRON, Settings
from acode_dagster.source.checksum import check_windows, replica_lag_s, replica_windows
from acode_dagster.tables import SOURCE_TIMEZONE, TABLES

WEEKLY_REPORT_KEY = dg.AssetKey(["acode_ops", "weekly_report"])
WEEK_TAG = "acode/week_ending"
LEDGER_LINEAGE = "weekly-report"
LEDGER_KEEP_S = 400 * 24 * 3600.0
"""A week's delivery mark outlives a year: a re-run of an old week does not post it again."""
ROUTE_LOOKBACK = timedelta(days=14)
"""Route events read from this long before the week: a failover that began before the week
and ended in it has its start. Older stays still in force come from the route itself."""
_PAGE = 500


class WeeklyConfig(dg.Config):
    week_ending: str = Field(
        default="",
        description="the week's last local day, YYYY-MM-DD; empty: yesterday in São Paulo "
        "(the schedule sets it from its tick)",
    )
    resend: bool = Field(
        default=False, description="post the report to Slack again even if it was posted"
    )
    checksums: bool = Field(
        default=False,
        description="also compare the SHA-256 of every file in both buckets (reads every byte)",
    )


# ---------------------------------------------------------------------- reading the instance


def _value(metadata: Mapping[str, dg.MetadataValue], name: str) -> Any:
    found = metadata.get(name)
    return None if found is None else found.value


def _metrics(raw: Any) -> dict[str, str]:
    """``business_metrics`` as strings (exact figures stay strings until summed)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    if not isinstance(raw, Mapping):
        return {}
    # A sum over only NULLs is null: nothing to add, which is not a figure missing.
    return {
        str(k): ("0" if v is None and str(k).startswith("sum_") else str(v))
        for k, v in raw.items()
        if v is not None or str(k).startswith("sum_")
    }


def _materialization(table: str, record: dg.EventLogRecord) -> Materialization | None:
    event = record.asset_materialization
    if event is None:
        return None
    metadata = event.metadata
    rows, seconds = _value(metadata, "dagster/row_count"), _value(metadata, "seconds")
    sla = _value(metadata, "sla")
    partition = record.partition_key
    try:
        day = date.fromisoformat(partition) if partition else None
    except ValueError:
        day = None
    return Materialization(
        table=table,
        partition=day,
        at=datetime.fromtimestamp(record.timestamp, UTC),
        rows=rows if isinstance(rows, int) else None,
        seconds=float(seconds) if isinstance(seconds, int | float) else None,
        source_role=_value(metadata, "source_role"),
        bucket_role=_value(metadata, "bucket_role"),
        business_metrics=_metrics(_value(metadata, BUSINESS_METRICS)),
        sla=str(sla) if sla else None,
    )


def _records(
    instance: dg.DagsterInstance, records_filter: dg.AssetRecordsFilter
) -> Iterator[dg.EventLogRecord]:
    cursor = None
    while True:
        page = instance.fetch_materializations(records_filter, limit=_PAGE, cursor=cursor)
        yield from page.records
        if not page.has_more:
            return
        cursor = page.cursor


def read_materializations(
    instance: dg.DagsterInstance, week: Week, as_of: datetime
) -> list[Materialization]:
    """Every materialization of the week's partitions, those made in the week, and the newest
    one before it, of each bronze table."""
    found: list[Materialization] = []
    for table in TABLES:
        key = bronze_key(table)
        partitions = [f"{d:%Y-%m-%d}" for d in week.days]
        filters = [
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions),
            dg.AssetRecordsFilter(
                asset_key=key,
                after_timestamp=week.start.timestamp(),
                before_timestamp=min(week.end, as_of).timestamp(),
            ),
        ]
        records = [r for f in filters for r in _records(instance, f)]
        before = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, before_timestamp=week.start.timestamp()), limit=1
        ).records
        for record in [*records, *before]:
            m = _materialization(table.name, record)
            if m is not None:
                found.append(m)
    return found


def read_checks(instance: dg.DagsterInstance, since: datetime) -> list[CheckRun]:
    """Every finished check execution recorded since ``since``, of every watched check."""
    found: list[CheckRun] = []
    for watched in WATCHED:
        for record in _check_history(instance, watched.key, since):
            if record.status == AssetCheckExecutionRecordStatus.PLANNED:
                continue
            event = record.event.dagster_event if record.event else None
            evaluation = event.asset_check_evaluation_data if event else None
            if evaluation is None:
                continue
            warn = evaluation.severity == dg.AssetCheckSeverity.WARN
            found.append(
                CheckRun(
                    subject=watched.subject,
                    check=evaluation.check_name,
                    partition=evaluation.partition,
                    at=datetime.fromtimestamp(record.create_timestamp, UTC),
                    passed=evaluation.passed,
                    severity="WARN" if warn else "ERROR",
                    description=evaluation.description or "",
                )
            )
    return found


def _check_history(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, since: datetime
) -> Iterator[AssetCheckExecutionRecord]:
    """The key's execution records created since ``since``, newest first."""
    cursor = None
    while True:
        page = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=_PAGE, cursor=cursor
        )
        for record in page:
            if record.create_timestamp < since.timestamp():
                return
            yield record
        if len(page) < _PAGE:
            return
        cursor = page[-1].id


def read_route_events(instance: dg.DagsterInstance, since: datetime) -> list[RouteEvent]:
    """Route events recorded since ``since`` (the health ticks in between are skipped)."""
    found: list[RouteEvent] = []
    cursor = None
    while True:
        page = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=REDUNDANCY_KEY, after_timestamp=since.timestamp()),
            limit=_PAGE,
            cursor=cursor,
            ascending=True,
        )
        for record in page.records:
            observation = record.asset_observation
            raw = observation.metadata.get(EVENT_FIELD) if observation else None
            if raw is None:
                continue
            value = raw.value if isinstance(raw.value, dict) else json.loads(str(raw.value))
            found.append(RouteEvent.from_json(value))
        if not page.has_more:
            return found
        cursor = page.cursor


def read_quarantines(bronze: BronzeResource, log: Callable[[str], None]) -> list[QuarantineEntry]:
    found: list[QuarantineEntry] = []
    for role, url in bronze.roots():
        try:
            store = bronze.store(role)
            entries = [e for table in TABLES for e in store.quarantined(table)]
        except (AcodeError, OSError) as exc:
            log(f"could not list the quarantine of the {role} root {url}: {exc}")
            continue
        found += [
            QuarantineEntry(
                table=e.table,
                day=e.day,
                version=e.version,
                quarantined_at=e.quarantined_at,
                failed=tuple(e.failed),
                bucket=role,
            )
            for e in entries
        ]
    return found


# ---------------------------------------------------------------------- the operations


def sweep_verification(bronze: BronzeResource) -> Verification:
    try:
        swept = sweep_roots(bronze)
    except Exception as exc:  # the report goes on whatever happened here
        return Verification("sweep", False, f"not run: {redact(str(exc))}")
    failed = tuple(r.summary() for r in swept if r.error is not None)
    return Verification(
        "sweep", not failed, "; ".join(r.summary() for r in swept if r.error is None), failed
    )


def replica_verification(
    sources: AcodeSourcesResource,
    redundancy: RedundancyResource,
    days: Sequence[date],
    log: Callable[[str], None],
) -> Verification:
    """The replica check's comparison (row counts and checksums on both servers) of the
    week's days of each fact table, and of the catalogue as it is now."""
    name = "replica verification"
    try:
        primary, backup = sources.endpoint(PRIMARY), sources.endpoint(BACKUP)
        checks = check_windows(
            primary,
            backup,
            replica_windows(TABLES, days),
            wait_s=redundancy.replica_check_wait_s,
            lag=lambda: replica_lag_s(backup, redundancy.probe_timeout_s),
            log=log,
        )
    except Exception as exc:
        return Verification(name, False, f"not compared: {redact(str(exc))}")
    bad = [c for c in checks if c.verdict != "equal"]
    span = f"{days[0]:%Y-%m-%d}..{days[-1]:%Y-%m-%d}" if days else "no day"
    return Verification(
        name,
        not bad,
        f"{len(checks) - len(bad)} of {len(checks)} window(s) equal on primary and replica "
        f"(days {span} and the catalogue)",
        tuple(f"{c.verdict}: {c.describe()}" for c in bad),
    )


def bucket_verification(
    bronze: BronzeResource, days: Sequence[date], *, checksums: bool
) -> Verification:
    """``acode buckets diff`` over the week's days."""
    name = "bucket verification"
    if not bronze.mirrored:
        return Verification(name, None, "one bronze root only: nothing to compare")
    try:
        found = diff(bronze.store(PRIMARY), bronze.store(BACKUP), TABLES, days, checksums=checksums)
    except Exception as exc:
        return Verification(name, False, f"not compared: {redact(str(exc))}")
    # "missing" (in neither bucket) is a missing partition, already in the report.
    bad = [d for d in found if d.decision.action not in ("in_sync", "missing")]
    same = sum(1 for d in found if d.decision.action == "in_sync")
    how = "sizes, rows" + (" and SHA-256" if checksums else "")
    return Verification(
        name,
        not bad,
        f"{same} of {len(found)} partition(s) the same in both buckets ({how})",
        tuple(
            f"{d.table} {d.day:%Y-%m-%d}: {d.decision.action}: {d.decision.why} "
            "(`acode buckets repair` copies the good copy across)"
            for d in bad
        ),
    )


# ---------------------------------------------------------------------- Slack, once


def send_report(
    instance: dg.DagsterInstance,
    alerting: AlertingResource,
    report: WeeklyReport,
    *,
    run_id: str,
    resend: bool,
    log: Callable[[str], None],
    warn: Callable[[str], None],
) -> str:
    """Post the report to Slack at most once per week (unless ``resend``); what happened."""
    alert = slack_alert(
        report, alerting.asset_url(WEEKLY_REPORT_KEY), resend_of=run_id if resend else ""
    )
    notifiers = {k: n for k, n in alerting.notifiers().items() if k == "slack"}
    if not notifiers:
        warn("the weekly report was not sent to Slack: SLACK_BOT_TOKEN is not set")
        return "not sent: no Slack token (SLACK_BOT_TOKEN)"
    ledger = load_ledger(
        instance,
        LEDGER_LINEAGE,
        confirmed_tick="",
        tick=run_id,
        now=time.time(),
        keep_s=LEDGER_KEEP_S,
    )
    before = ledger.get(alert.id, "slack")
    still, delivered = deliver(
        [Pending(alert, frozenset({"slack"}))],
        notifiers,
        log,
        secrets=alerting.secrets(),
        ledger=ledger,
        warn=warn,
    )
    if delivered:
        if before is not None and before.state == "delivered":
            when = datetime.fromtimestamp(before.at, UTC).isoformat(timespec="seconds")
            return f"already sent at {when} (not sent again; resend: true posts it again)"
        return f"sent to {alerting.destination('slack')}"
    error = still[0].last_error.get("slack", "unknown error") if still else "unknown error"
    warn(f"the weekly report was not sent to Slack: {error}; a re-run of the job sends it")
    return f"not sent: {error}"


# ---------------------------------------------------------------------- the asset, job, schedule


def resolve_week(config: WeeklyConfig, tags: Mapping[str, str], now: datetime) -> Week:
    text = config.week_ending or tags.get(WEEK_TAG, "")
    try:
        return Week.ending(text) if text else Week.before(now)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def collect_facts(
    instance: dg.DagsterInstance,
    *,
    bronze: BronzeResource,
    week: Week,
    as_of: datetime,
    verifications: Sequence[Verification],
    ui_url: str,
    log: Callable[[str], None],
) -> WeekFacts:
    return WeekFacts(
        week=week,
        as_of=as_of,
        tables=TABLES,
        materializations=read_materializations(instance, week, as_of),
        checks=read_checks(instance, week.start),
        route_events=read_route_events(instance, week.start - ROUTE_LOOKBACK),
        route_now=read_route(instance),
        quarantines=read_quarantines(bronze, log),
        verifications=verifications,
        first_partition=daily_partitions.start.date(),
        ui_url=ui_url,
    )


@dg.asset(
    key=WEEKLY_REPORT_KEY,
    group_name="acode_ops",
    description=(
        "The weekly operations report: per table the week's partitions, rows, value, check "
        "outcomes, freshness attainment and sync durations; failovers and their durations; "
        "open quarantines; the sweep, replica and bucket verifications; and what needs a "
        "person. The Markdown is in the latest materialization's `report`; the same report "
        "goes to Slack once per week."
    ),
    kinds={"slack"},
    owners=["team:data-engineering"],
)
def weekly_report(  # noqa: PLR0917 - Dagster passes the resources by name
    context: dg.AssetExecutionContext,
    config: WeeklyConfig,
    bronze: BronzeResource,
    acode_sources: AcodeSourcesResource,
    redundancy: RedundancyResource,
    alerting: AlertingResource,
) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    week = resolve_week(config, context.run.tags, now)
    days = [d for d in week.days if d >= daily_partitions.start.date()]
    context.log.info(f"weekly operations for {week.label} (local days of São Paulo)")
    operations: list[Callable[[], Verification]] = [
        lambda: sweep_verification(bronze),
        lambda: replica_verification(acode_sources, redundancy, days, context.log.info),
        lambda: bucket_verification(bronze, days, checksums=config.checksums),
    ]
    verifications = []
    for operation in operations:
        began = time.monotonic()
        done = operation()
        verifications.append(done)
        (context.log.warning if done.ok is False else context.log.info)(
            f"{done.name} ({time.monotonic() - began:.1f} s): {done.summary}"
            + "".join(f"\n  {problem}" for problem in done.problems)
        )
    facts = collect_facts(
        context.instance,
        bronze=bronze,
        week=week,
        as_of=datetime.now(UTC),
        verifications=verifications,
        ui_url=alerting.ui_url,
        log=context.log.warning,
    )
    report = build_report(facts)
    markdown = render_markdown(report)
    sent = send_report(
        context.instance,
        alerting,
        report,
        run_id=context.run.run_id,
        resend=config.resend,
        log=context.log.info,
        warn=context.log.warning,
    )
    context.log.info(
        f"weekly report {week.label}: {len(report.needs)} item(s) need a person; Slack: {sent}"
    )
    metadata: dict[str, Any] = {
        "report": dg.MetadataValue.md(markdown),
        "week": dg.MetadataValue.text(week.label),
        "week_ending": dg.MetadataValue.text(f"{week.last:%Y-%m-%d}"),
        "slack": dg.MetadataValue.text(sent),
        **{name: value for name, value in figures(report).items()},
    }
    for t in report.tables:
        if t.value is not None:
            # Text: a float would round the exact sum.
            metadata[f"{t.table}/value"] = dg.MetadataValue.text(str(t.value))
    return dg.MaterializeResult(metadata=metadata)


acode_weekly_job = dg.define_asset_job(
    name="acode_weekly_job",
    selection=dg.AssetSelection.assets(weekly_report),
    description=(
        "Weekly operations: sweeps both bronze roots, verifies the replica and the buckets over "
        "the week, and writes the weekly report (asset acode_ops/weekly_report, and Slack once). "
        "Config `week_ending` picks the week; `resend: true` posts to Slack again."
    ),
)


def weekly_cron(settings: Settings) -> str:
    return schedule_cron("ACODE_WEEKLY_CRON", settings.weekly_cron, DEFAULT_WEEKLY_CRON)


def weekly_run_request(scheduled: datetime) -> dg.RunRequest:
    """The run of the tick at ``scheduled``: the week ending the local day before."""
    week = Week.before(scheduled)
    ending = f"{week.last:%Y-%m-%d}"
    return dg.RunRequest(
        run_key=f"weekly-report/{ending}",
        run_config=dg.RunConfig(ops={weekly_report.op.name: WeeklyConfig(week_ending=ending)}),
        tags={WEEK_TAG: ending},
    )


@dg.schedule(
    name="acode_weekly_schedule",
    job=acode_weekly_job,
    cron_schedule=weekly_cron(Settings.from_env()),
    execution_timezone=SOURCE_TIMEZONE.key,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Weekly operations on ACODE_WEEKLY_CRON (default Mondays 06:00 São Paulo time): the "
        "report covers the seven local days ending the day before the tick."
    ),
)
def acode_weekly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    return weekly_run_request(scheduled)


# ---------------------------------------------------------------------- the command line


def weekly_run_config(week: Week, *, resend: bool = False) -> dict[str, Any]:
    config = {"week_ending": f"{week.last:%Y-%m-%d}", "resend": resend}
    return {"ops": {weekly_report.op.name: {"config": config}}}


def run_weekly(
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
    week: Week,
    *,
    resend: bool = False,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A run of ``acode_weekly_job`` in this process, recorded in ``instance`` like one the
    schedule launched; the report's metadata (``report`` is the Markdown, ``slack`` what
    happened to the message)."""
    defs = dg.Definitions(assets=[weekly_report], jobs=[acode_weekly_job], resources=resources)
    result = defs.resolve_job_def(acode_weekly_job.name).execute_in_process(
        run_config=weekly_run_config(week, resend=resend),
        instance=instance,
        tags={WEEK_TAG: f"{week.last:%Y-%m-%d}", **(tags or {})},
    )
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    return {name: value.value for name, value in metadata.items()}


def stored_report(instance: dg.DagsterInstance, week: Week) -> dict[str, Any] | None:
    """The metadata of the latest materialized report of ``week``, if any (newest 100 read)."""
    page = instance.fetch_materializations(WEEKLY_REPORT_KEY, limit=100)
    for record in page.records:
        event = record.asset_materialization
        metadata = event.metadata if event else {}
        if _value(metadata, "week_ending") == f"{week.last:%Y-%m-%d}":
            return {name: value.value for name, value in metadata.items()}
    return None


def preview_report(
    instance: dg.DagsterInstance, bronze: BronzeResource, week: Week, ui_url: str
) -> str:
    """The report from what the instance and buckets hold now, without the week's
    operations (no sweep, no verification) and without sending anything."""
    skipped = [
        Verification(name, None, "not run: a preview (`acode report weekly --send` runs them)")
        for name in ("sweep", "replica verification", "bucket verification")
    ]
    facts = collect_facts(
        instance,
        bronze=bronze,
        week=week,
        as_of=datetime.now(UTC),
        verifications=skipped,
        ui_url=ui_url,
        log=lambda line: None,
    )
    return render_markdown(build_report(facts))
