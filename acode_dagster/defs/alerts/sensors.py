"""``acode_alert_sensor``: every failed check, freshness failure, failed or cancelled bronze run,
bronze run running long (the sync-duration SLA, :mod:`acode_dagster.observability.sla`) and route
change, told once.

Each tick reads what the instance recorded since the cursor (check executions per check key,
failed and cancelled runs by update time, route events), turns it into alerts with the pure
rules of :mod:`acode_dagster.incidents`, appends them to the pending list kept in the cursor,
and tries to deliver everything pending. A service that is down keeps its alerts pending for
the next tick; a delivered alert leaves the list; so an outage delays alerts and never repeats
them. Dagster saves the cursor only when the tick ends: each send is therefore also recorded,
as it happens, in a delivery ledger in the instance (:mod:`acode_dagster.defs.alerts.ledger`),
and a tick killed half-way is replayed by the next without a second message. An alert that
cannot be delivered is given up after ``ACODE_ALERT_GIVE_UP_H`` hours (sooner when the service
rejects it for good), with a warning naming it.
"""

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.execution.plan.objects import ErrorSource
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from acode_dagster.alerts import (
    LEDGER_KEEP_S,
    Alert,
    GivenUp,
    PagerDutyNotifier,
    Pending,
    deliver,
    describe,
    expire,
)
from acode_dagster.defs.alerts.ledger import load_ledger
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.bronze.checks import GROUP, bronze_key
from acode_dagster.defs.redundancy.replica import CHECK_NAME as REPLICA_CHECK
from acode_dagster.defs.redundancy.state import REDUNDANCY_KEY, route_events_since
from acode_dagster.errors import redact
from acode_dagster.incidents import (
    AlertState,
    CheckOutcome,
    channels,
    on_check,
    on_route_event,
    on_run_canceled,
    on_run_failure,
)
from acode_dagster.observability.metrics import Metrics
from acode_dagster.observability.sla import (
    SLA_ENDED_TAG,
    SLA_MINUTES_TAG,
    SLA_TAG,
    RunEnd,
    RunningSync,
    SlaOpen,
    no_longer_running,
    sla_step,
    told_by_tags,
)
from acode_dagster.quality import FRESHNESS_CHECK, MIRROR_CHECK, PARTITION_CHECKS
from acode_dagster.tables import TABLES, Table

ALERT_INTERVAL_S = 30
_PAGE = 100
_RUN_PAGES = 20
_NAMED_GIVEN_UP = 3
_CHECK_FAILED = "DagsterAssetCheckFailedError"
_INTERRUPTS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")


@dataclass(frozen=True)
class WatchedCheck:
    table: Table | None
    """None for a check of no table (the replica check on ``redundancy``)."""
    key: dg.AssetCheckKey

    @property
    def subject(self) -> str:
        """What an alert names: the table, or the checked asset."""
        return self.table.name if self.table else self.key.asset_key.to_user_string()

    @property
    def name(self) -> str:
        return self.key.to_user_string()


WATCHED = [
    WatchedCheck(table, dg.AssetCheckKey(bronze_key(table), spec.name))
    for table in TABLES
    for spec in (*PARTITION_CHECKS, MIRROR_CHECK, FRESHNESS_CHECK)
] + [WatchedCheck(None, dg.AssetCheckKey(REDUNDANCY_KEY, REPLICA_CHECK))]


def _history(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, mark: int
) -> list[AssetCheckExecutionRecord]:
    """The key's execution records with an id above ``mark``, oldest first."""
    found: list[AssetCheckExecutionRecord] = []
    cursor = None
    storage = instance.event_log_storage
    while True:
        page = storage.get_asset_check_execution_history(key, limit=_PAGE, cursor=cursor)
        newer = [r for r in page if r.id > mark]
        found += newer
        if len(page) < _PAGE or len(newer) < len(page):
            return sorted(found, key=lambda r: r.id)
        cursor = page[-1].id


def _run_is_over(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished


def _outcome(watched: WatchedCheck, record: AssetCheckExecutionRecord) -> CheckOutcome | None:
    event = record.event.dagster_event if record.event else None
    evaluation = event.asset_check_evaluation_data if event else None
    if evaluation is None:
        return None
    metadata = evaluation.metadata
    measured = metadata.get("measured")
    threshold = metadata.get("threshold")
    details = {
        name: str(value.value)
        for name, value in metadata.items()
        if name not in ("measured", "threshold") and not isinstance(value.value, bool | None)
    }
    return CheckOutcome(
        record_id=record.id,
        table=watched.subject,
        partition=evaluation.partition,
        check=evaluation.check_name,
        passed=evaluation.passed,
        severity="WARN" if evaluation.severity == dg.AssetCheckSeverity.WARN else "ERROR",
        measured=str(measured.value) if measured else (evaluation.description or ""),
        threshold=str(threshold.value) if threshold else "",
        run_id=record.run_id or None,
        occurred_at=datetime.fromtimestamp(record.create_timestamp, UTC).isoformat(),
        details=details,
    )


def read_checks(
    instance: dg.DagsterInstance, state: AlertState, alerting: AlertingResource
) -> list[Alert]:
    """Alerts for the check evaluations recorded since the cursor; updates ``state``."""
    alerts: list[Alert] = []
    for watched in WATCHED:
        mark = state.marks.get(watched.name, 0)
        done = set(state.done.get(watched.name, []))
        unfinished: list[int] = []
        seen = mark
        for record in _history(instance, watched.key, mark):
            seen = max(seen, record.id)
            if record.id in done:
                continue
            if record.status == AssetCheckExecutionRecordStatus.PLANNED:
                # Planned by a run still going: its result will update this very record.
                if record.run_id and not _run_is_over(instance, record.run_id):
                    unfinished.append(record.id)
                    continue
                done.add(record.id)
                continue
            done.add(record.id)
            outcome = _outcome(watched, record)
            if outcome is None:
                continue
            link = (
                alerting.run_url(outcome.run_id)
                if outcome.run_id
                else alerting.asset_url(watched.key.asset_key)
            )
            state.open, found = on_check(state.open, outcome, link)
            alerts += found
        new_mark = min(unfinished) - 1 if unfinished else seen
        state.marks[watched.name] = new_mark
        state.done[watched.name] = sorted(i for i in done if i > new_mark)
    return alerts


def _is_bronze_run(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run set out to materialize a bronze asset (whatever job it ran as)."""
    return bool(_bronze_tables(instance, run_id))


def _bronze_tables(instance: dg.DagsterInstance, run_id: str) -> tuple[str, ...]:
    """The bronze tables the run set out to materialize (planned when the run was created)."""
    planned = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    keys = [
        entry.dagster_event.asset_key.path
        for entry in planned
        if entry.dagster_event and entry.dagster_event.asset_key
    ]
    return tuple(sorted({path[-1] for path in keys if path[:1] == [GROUP]}))


def _interrupted(event: dg.DagsterEvent | None) -> bool:
    """The step failed because its run was terminated (the UI, run monitoring), not by itself."""
    data = event.step_failure_data if event else None
    if data is None:
        return False
    return data.error_source == ErrorSource.INTERRUPT or (
        data.error is not None and data.error.cls_name in _INTERRUPTS
    )


def _interrupted_steps(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    failures = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    return [
        entry.dagster_event.step_key or "?"
        for entry in failures
        if entry.dagster_event and _interrupted(entry.dagster_event)
    ]


def _message(
    instance: dg.DagsterInstance, run_id: str, kind: DagsterEventType, *, first: bool = False
) -> str:
    # .message: the event's own (run monitoring's "Exceeded maximum runtime of ..."), which
    # user_message leaves empty for events the instance reports itself.
    entries = instance.all_logs(run_id, of_type=kind)
    return entries[0 if first else -1].message.strip() if entries else ""


def _terminated(steps: list[str]) -> str:
    if steps:
        return f"interrupted while {', '.join(steps)} ran"
    return "stopped with no step recorded as interrupted (see its events)"


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why the run failed, or None when only blocking checks failed it (they alert already)."""
    failures = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    reasons = []
    interrupted = []
    for entry in failures:
        event = entry.dagster_event
        error = event.step_failure_data.error if event else None
        if error is not None and error.cls_name == _CHECK_FAILED:
            continue
        if _quarantined(event):
            continue  # its failed checks are told, each with where the version is kept
        if _interrupted(event):
            # The termination is the cause (run monitoring's maximum runtime, usually), not
            # what the step was doing when it came.
            interrupted.append((event.step_key if event else None) or "?")
            continue
        # Dagster wraps the op's exception; the innermost cause is the one that names the fix.
        while error is not None and error.cause is not None:
            error = error.cause
        step = event.step_key if event else None
        message = (error.message if error else entry.user_message).strip().splitlines()
        reasons.append(f"{step}: {message[0] if message else 'failed'}")
    if reasons:
        return "; ".join(reasons)
    if interrupted:
        why = _message(instance, run_id, DagsterEventType.RUN_FAILURE) or "terminated"
        return f"{why} The run was {_terminated(interrupted)}."
    if failures:
        return None
    return _message(instance, run_id, DagsterEventType.RUN_FAILURE) or "the run failed"


def _cancel_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    """Who or what cancelled the run, and what it stopped."""
    # The first: whoever asked (run monitoring says why); the launcher reports its own after.
    why = _message(instance, run_id, DagsterEventType.RUN_CANCELING, first=True)
    return f"{why or 'Cancelled.'} The run was {_terminated(_interrupted_steps(instance, run_id))}."


def _quarantined(event: dg.DagsterEvent | None) -> bool:
    """The step failed because its version failed a blocking check and was quarantined."""
    data = event.step_failure_data if event else None
    failure = data.user_failure_data if data else None
    version = failure.metadata.get("bronze_version") if failure else None
    return version is not None and version.value == "quarantined"


def read_failed_runs(
    instance: dg.DagsterInstance, state: AlertState, alerting: AlertingResource
) -> list[Alert]:
    """Alerts for the bronze runs that failed or were cancelled since the cursor.

    Runs come back whenever they are updated (a tag added to a failed run moves its update
    time): :meth:`AlertState.run_is_news` tells each one once. Pages of runs that are no news
    cost one query each, so a tick reads on until the newest run, up to a bound.
    """
    alerts: list[Alert] = []
    for _ in range(_RUN_PAGES):
        after = datetime.fromtimestamp(state.runs_after, UTC) if state.runs_after else None
        records = instance.get_run_records(
            dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
                updated_after=after,
            ),
            limit=_PAGE,
            order_by="update_timestamp",
            ascending=True,
        )
        read = 0
        for record in records:
            run = record.dagster_run
            stamp = record.update_timestamp.timestamp()
            if run.run_id in state.runs_seen and stamp <= state.runs_after:
                continue
            read += 1
            if stamp > state.runs_after:
                state.runs_after, state.runs_seen = stamp, []
            state.runs_seen.append(run.run_id)
            if not state.run_is_news(run.run_id, record.end_time or stamp):
                continue
            alert = _run_alert(instance, record, alerting)
            if alert is not None:
                alerts.append(alert)
        if len(records) < _PAGE or not read:
            break
    state.forget_old_runs()
    return alerts


def _run_alert(
    instance: dg.DagsterInstance, record: dg.RunRecord, alerting: AlertingResource
) -> Alert | None:
    """The alert for one failed or cancelled run, or None when there is nothing to tell."""
    run = record.dagster_run
    if not _is_bronze_run(instance, run.run_id):
        return None
    job, partition = run.job_name, run.tags.get("dagster/partition")
    link, occurred_at = alerting.run_url(run.run_id), record.update_timestamp.isoformat()
    if run.status == dg.DagsterRunStatus.CANCELED:
        return on_run_canceled(
            run.run_id,
            job=job,
            partition=partition,
            reason=_cancel_reason(instance, run.run_id),
            link=link,
            occurred_at=occurred_at,
        )
    failure = _failure_reason(instance, run.run_id)
    if failure is None:
        return None
    return on_run_failure(
        run.run_id,
        job=job,
        partition=partition,
        reason=failure,
        link=link,
        occurred_at=occurred_at,
    )


def read_route_events(
    instance: dg.DagsterInstance, state: AlertState, alerting: AlertingResource
) -> list[Alert]:
    alerts: list[Alert] = []
    link = alerting.asset_url(REDUNDANCY_KEY)
    while True:
        events, mark = route_events_since(instance, state.route_mark)
        for record_id, event in events:
            alerts += on_route_event(event, record_id, link)
        if mark == state.route_mark:
            return alerts
        state.route_mark = mark


# CANCELING: a run asked to stop is still running (and holding the source) until it stops.
_RUNNING = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
_ENDINGS = {
    dg.DagsterRunStatus.SUCCESS: "succeeded",
    dg.DagsterRunStatus.FAILURE: "failed",
    dg.DagsterRunStatus.CANCELED: "was cancelled",
}
_UNRESOLVED_S = 24 * 3600.0
"""How long after its end a run alerted by a killed tick is still looked for, to resolve it."""


def read_running_syncs(
    instance: dg.DagsterInstance, now: float
) -> list[tuple[RunningSync, Mapping[str, str]]]:
    """The bronze runs in progress at ``now`` (Unix seconds), each with its tags."""
    found = []
    # No limit: the runs in progress are bounded by the run queue and the source pool.
    for record in instance.get_run_records(dg.RunsFilter(statuses=_RUNNING)):
        run = record.dagster_run
        tables = _bronze_tables(instance, run.run_id)
        if not tables:
            continue
        # start_time is None only on a storage without the run stats columns; the creation
        # time then, which counts a wait in the queue too.
        started = record.start_time or record.create_timestamp.timestamp()
        sync = RunningSync(
            run_id=run.run_id,
            job=run.job_name,
            partition=run.tags.get("dagster/partition"),
            tables=tables,
            minutes=max(0.0, now - started) / 60,
            started_at=started,
        )
        found.append((sync, run.tags))
    return found


def _unresolved(
    instance: dg.DagsterInstance, known: Mapping[str, SlaOpen], now: float
) -> dict[str, SlaOpen]:
    """Runs ended in the last day, tagged as alerted for their duration, whose end was never
    told and which the cursor does not know: a tick that alerted was killed before saving it
    (see :func:`acode_dagster.observability.sla.told_by_tags`)."""
    records = instance.get_run_records(
        dg.RunsFilter(
            tags={SLA_TAG: ["warn", "error"]},
            statuses=list(_ENDINGS),
            updated_after=datetime.fromtimestamp(now - _UNRESOLVED_S, UTC),
        )
    )
    found: dict[str, SlaOpen] = {}
    for record in records:
        run = record.dagster_run
        if run.run_id in known:
            continue
        told = told_by_tags(
            run.tags,
            job=run.job_name,
            partition=run.tags.get("dagster/partition"),
            tables=_bronze_tables(instance, run.run_id),
            started_at=record.start_time or record.create_timestamp.timestamp(),
        )
        if told is not None:
            found[run.run_id] = told
    return found


def _run_end(instance: dg.DagsterInstance, run_id: str) -> RunEnd | None:
    """How a run no longer in progress ended; None while it has not (yet) ended."""
    records = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]), limit=1)
    if not records:
        return RunEnd("is no longer recorded")
    record = records[0]
    outcome = _ENDINGS.get(record.dagster_run.status)
    if outcome is None:
        return None
    return RunEnd(outcome, record.end_time or record.update_timestamp.timestamp())


def read_sync_sla(
    instance: dg.DagsterInstance, state: AlertState, alerting: AlertingResource, now: float
) -> tuple[list[Alert], tuple[RunningSync, ...]]:
    """Alerts for bronze runs running past the sync-duration thresholds, and for the end of
    those alerted; updates ``state``. Also the runs in progress, for the metrics.

    A run whose stage rises is tagged with it (``acode/sync_sla``, ``acode/sync_sla_minutes``),
    so the run's page in the UI shows it. The tag moves the run's update time; if the run
    has failed by then, :meth:`AlertState.run_is_news` keeps it from being told twice.
    """
    seen = read_running_syncs(instance, now)
    running = tuple(sync for sync, _ in seen)
    known = {**_unresolved(instance, state.sla, now), **state.sla}
    ended = {
        run_id: end
        for run_id in no_longer_running(known, running)
        if (end := _run_end(instance, run_id)) is not None
    }
    step = sla_step(
        known,
        running,
        alerting.sla_thresholds(),
        ended,
        links={run_id: alerting.run_url(run_id) for run_id in [*known, *ended]}
        | {sync.run_id: alerting.run_url(sync.run_id) for sync in running},
        now=now,
    )
    state.sla = step.open
    tags = {sync.run_id: run_tags for sync, run_tags in seen}
    # Tagged before the alert goes: a tick killed after sending leaves the tag behind.
    for run_id, told in step.raised.items():
        # A replayed tick raises the same stage again: the tag is already there.
        if tags.get(run_id, {}).get(SLA_TAG) != told.stage:
            instance.add_run_tags(
                run_id, {SLA_TAG: told.stage, SLA_MINUTES_TAG: f"{told.minutes:.2f}"}
            )
    for run_id, end in ended.items():
        if run_id not in step.open and end.ended_at is not None:
            instance.add_run_tags(run_id, {SLA_ENDED_TAG: end.outcome})
    return step.alerts, running


@dataclass(frozen=True)
class TickResult:
    """What one evaluation of the alert sensor did."""

    cursor: str
    delivered: int
    """Notifications the services took in this tick (or in a killed one, per the ledger)."""
    pending: int
    """Alerts still to deliver."""
    given_up: list[GivenUp]
    running: tuple[RunningSync, ...] = ()
    """The bronze runs in progress at this tick (for the running-time metric)."""
    sent: tuple[tuple[str, str, str], ...] = ()
    """``(severity, channel, action)`` of each notification delivered (for the metrics)."""

    def summary(self) -> str:
        text = (
            f"{self.delivered} notification(s) delivered, {self.pending} alert(s) pending, "
            f"{len(self.given_up)} given up"
        )
        if self.given_up:
            # A day-long outage can give up hundreds at once: the log names each of them.
            named = [gone.describe() for gone in self.given_up[:_NAMED_GIVEN_UP]]
            more = len(self.given_up) - len(named)
            text += ": " + "; ".join(named) + (f"; and {more} more (see the log)" if more else "")
        return text


def alert_tick(
    instance: dg.DagsterInstance,
    cursor: str | None,
    alerting: AlertingResource,
    log: Callable[[str], None],
    *,
    warn: Callable[[str], None] | None = None,
    now: float | None = None,
) -> TickResult:
    """One evaluation of the alert sensor.

    With no cursor (the sensor's first tick on this instance) everything already recorded is
    taken as read: alerting starts now, it does not replay history.

    Each send is recorded in the cursor lineage's delivery ledger as it happens (see
    :mod:`acode_dagster.alerts`), so a tick killed before Dagster saved its cursor is replayed
    by the next one without telling anything twice. ``warn`` (default ``log``) gets what an
    operator must see: alerts given up, alerts that may show twice. ``now`` (Unix seconds,
    default the clock) is the tick's time, for the give-up clock.
    """
    clock = time.time() if now is None else now
    shout = warn or log
    first = cursor is None
    if cursor:
        state = AlertState.from_json(cursor)
    else:
        state = AlertState(lineage=uuid.uuid4().hex[:16], runs_since=clock)
    give_up_s = alerting.give_up_h * 3600
    # Never reused, not even by the tick that replays this one if it dies (see LedgerBook).
    tick_id = uuid.uuid4().hex[:12]
    ledger = load_ledger(
        instance,
        state.lineage,
        confirmed_tick=state.tick,
        tick=tick_id,
        now=clock,
        # A send left unconfirmed must be remembered as long as its alert may still be retried.
        keep_s=max(LEDGER_KEEP_S, give_up_s + 24 * 3600),
    )
    state.tick = tick_id
    found = (
        read_checks(instance, state, alerting)
        + read_failed_runs(instance, state, alerting)
        + read_route_events(instance, state, alerting)
    )
    if first:
        log(f"alerting starts now; {len(found)} earlier problem(s) taken as already known")
        state.pending = []
        found = []
    # After the first-tick reset: a run running long now is no history, and even the first
    # tick tells it.
    sla_found, running = read_sync_sla(instance, state, alerting, clock)
    found += sla_found
    known = {item.alert.id for item in state.pending}
    for alert in found:
        # The same alert found twice (an event recorded twice) is told once.
        if alert.id not in known:
            known.add(alert.id)
            state.pending.append(Pending(alert, channels(alert)))
    notifiers = alerting.notifiers()
    secrets = alerting.secrets()
    try:
        state.pending, delivered = deliver(
            state.pending, notifiers, log, secrets=secrets, ledger=ledger, now=clock, warn=shout
        )
    finally:
        for notifier in notifiers.values():
            if isinstance(notifier, PagerDutyNotifier):
                notifier.close()
    state.pending, given_up = expire(state.pending, clock, give_up_s)
    for gone in given_up:
        shout(
            redact(
                f"{gone.describe()} (sent to {alerting.destination(gone.channel)}); "
                f"the alert said: {describe(gone.alert)}",
                secrets,
            )
        )
        ledger.abort(gone.alert.id, gone.channel)
    return TickResult(
        state.to_json(),
        len(delivered),
        len(state.pending),
        given_up,
        running,
        sent=tuple((alert.severity, channel, alert.action) for alert, channel in delivered),
    )


@dg.sensor(
    name="acode_alert_sensor",
    minimum_interval_seconds=ALERT_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Sends every failed bronze check (ERROR and WARN), freshness failure, failed or "
        "cancelled bronze run, bronze run running past ACODE_SYNC_WARN_MINUTES or "
        "ACODE_SYNC_ERROR_MINUTES (and its end) and route change to Slack, and ERROR-level and "
        "critical ones to "
        "PagerDuty, once each, across outages and crashes; gives up on an alert that cannot be "
        "delivered (ACODE_ALERT_GIVE_UP_H), and says so."
    ),
)
def acode_alert_sensor(
    context: dg.SensorEvaluationContext, alerting: AlertingResource
) -> dg.SkipReason:
    result = alert_tick(
        context.instance, context.cursor, alerting, context.log.info, warn=context.log.warning
    )
    context.update_cursor(result.cursor)
    emit_tick_metrics(result, alerting.metrics.client(context.log.warning))
    return dg.SkipReason(result.summary())


def emit_tick_metrics(result: TickResult, metrics: Metrics) -> None:
    """What the tick delivered, left pending and gave up, and the bronze runs still going
    (the sync-duration SLA's figure); never raises."""
    metrics.alerts(
        result.sent, pending=result.pending, given_up=[gone.channel for gone in result.given_up]
    )
    metrics.running(
        (table, sync.partition, sync.job, sync.minutes)
        for sync in result.running
        for table in sync.tables
    )
