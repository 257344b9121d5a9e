"""What the command line does through Dagster: run partitions, read their checks, send alerts.

Everything goes through the Dagster instance of ``DAGSTER_HOME`` (the persistent one of the
embedded default), so runs, check results and the alert sensor's cursor started here are the
ones the UI and the daemon see.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from acode_dagster import audit
from acode_dagster.bronze.store import Manifest, Quarantined
from acode_dagster.routing import Role
from acode_dagster.settings import Settings

if TYPE_CHECKING:
    from acode_dagster.bronze.mirror import Mirrored, PartitionDiff, RepairReport
    from acode_dagster.defs.bronze.sweep import RootSweep
    from acode_dagster.defs.resources import BronzeResource

ALERT_CURSOR_KEY = "acode/cli_alert_cursor"


SOURCE_POOL = "acode_source"
"""The Dagster concurrency pool of every step that reads the ACODE source (the bronze assets)."""

MANAGED_MARK = "# Managed by acode"
LEGACY_DAGSTER_YAML = "telemetry:\n  enabled: false\n"
"""What ``ensure_dagster_home`` wrote before it managed the pool limit: also ours to update."""


def local_instance_yaml(settings: Settings) -> str:
    """The embedded default's ``dagster.yaml``, from the settings.

    The limit is written in, not referenced with ``env:``: Dagster's schema takes a plain ``int``
    for ``concurrency.pools.default_limit`` (``get_concurrency_config`` in
    dagster/_core/instance/config.py) and refuses ``{env: ...}`` there.
    """
    return f"""{MANAGED_MARK} (acode_dagster/runs.py, ensure_dagster_home): every acode command
# rewrites this file from the environment. Delete this first line to make the file yours;
# acode then leaves it as it is.
telemetry:
  enabled: false
concurrency:
  runs:
    # The instance's run coordinator is Dagster's default, the queue the daemon dequeues.
    tag_concurrency_limits:
      # One run per partition: a schedule run, a backfill and a catch-up of the same day wait
      # in the queue for each other instead of meeting at the partition's lease. Runs that do
      # not go through the queue (`dagster asset materialize`, `acode sync`) are held apart by
      # the lease itself (acode_dagster/bronze/lease.py).
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  pools:
    # ACODE_SOURCE_CONCURRENCY. Every bronze sync is a step in the pool {SOURCE_POOL}, so at most
    # this many read the source at once, whether the schedule, a backfill, the catch-up or the
    # command line launched them. It is the limit of any pool that has none set in the UI
    # (Deployment > Concurrency), which takes precedence; {SOURCE_POOL} is the only pool.
    default_limit: {settings.source_concurrency}
    # Per step, in every executor, not per run: a run holds a slot only while a sync runs, and
    # the run queue keeps runs whose syncs would all wait queued rather than started.
    granularity: op
run_monitoring:
  enabled: true
  # A run worker that died holding a slot would keep it for ever; free it a minute after its
  # run is marked finished.
  free_slots_after_run_end_seconds: 60
  # ACODE_RUN_MAX_RUNTIME_S. A run still going after this long is terminated and marked failed
  # by the daemon's run monitoring (0: no limit), so a hung sync cannot hold its partition's
  # place in the queue and a slot of {SOURCE_POOL} for ever. A run's dagster/max_runtime tag
  # overrides it.
  max_runtime_seconds: {settings.run_max_runtime_s}
"""


def ensure_dagster_home(settings: Settings) -> Path:
    """A persistent Dagster home, so runs started here are in the UI afterwards.

    Its ``dagster.yaml`` is written when missing, and rewritten when the settings changed if acode
    wrote it (it starts with ``MANAGED_MARK``, or is the file older versions wrote). Any other
    file is the user's (the production one, for instance) and is never touched.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = local_instance_yaml(settings)
    current = config.read_text() if config.exists() else None
    if current is None or (
        current != wanted and (current.startswith(MANAGED_MARK) or current == LEGACY_DAGSTER_YAML)
    ):
        # Whole or not at all: a webserver or run worker starting now reads one or the other.
        partial = config.with_name(f".dagster.yaml.{os.getpid()}.tmp")
        partial.write_text(wanted)
        partial.replace(config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@dataclass(frozen=True)
class CheckLine:
    table: str
    partition: str | None
    check: str
    outcome: str
    """PASS, WARN or ERROR."""
    measured: str


@dataclass(frozen=True)
class RunSummary:
    day: date
    run_id: str
    success: bool
    landed: list[dict[str, Any]] = field(default_factory=list)
    checks: list[CheckLine] = field(default_factory=list)
    failure: str | None = None

    @property
    def failed_checks(self) -> list[CheckLine]:
        return [c for c in self.checks if c.outcome != "PASS"]


def current_definitions() -> dg.Definitions:
    """The definitions with resources built from the environment as it is now.

    ``acode_dagster.definitions.defs`` is built once, when first imported; a command that has
    changed the environment since (or a test) needs them built again.
    """
    import acode_dagster.defs

    # Loading reads the instance's definitions-state storage, which Dagster finds through the
    # instance entered last; enter ours, or it may find one that is already closed.
    with dg.DagsterInstance.get():
        return dg.load_defs(defs_root=acode_dagster.defs)


def _summarize(day: date, result: dg.ExecuteInProcessResult) -> RunSummary:
    landed = []
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        meta: dict[str, Any] = {k: v.value for k, v in materialization.metadata.items()}
        landed.append(
            {
                "day": day.isoformat(),
                "asset": materialization.asset_key.path[-1],
                "rows": meta["dagster/row_count"],
                "files": meta["files"],
                "mb": round(int(meta["bytes"]) / 1e6, 2),
                "seconds": meta["seconds"],
                "source": meta["source_server"],
                "run": result.run_id[:8],
            }
        )
    checks = [
        CheckLine(
            table=evaluation.asset_key.path[-1],
            partition=evaluation.partition,
            check=evaluation.check_name,
            outcome="PASS" if evaluation.passed else evaluation.severity.value,
            measured=evaluation.description or "",
        )
        for evaluation in result.get_asset_check_evaluations()
    ]
    failure = None
    if not result.success:
        step_failure = next(
            (e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None
        )
        failure = _failure_text(step_failure) if step_failure else "see the run in the Dagster UI"
    return RunSummary(day, result.run_id, result.success, landed, checks, failure)


def _failure_text(event: dg.DagsterEvent) -> str:
    """The step's own error (a quarantine names where the version is and what to do), rather
    than Dagster's "Execution of step ... failed."."""
    data = event.step_failure_data
    error = data.error if data is not None else None
    if error is not None and error.message.strip():
        # Failure's message starts with its class path: drop it.
        return error.message.strip().removeprefix("dagster._core.definitions.events.Failure: ")
    return event.message or "see the run in the Dagster UI"


def materialize_days(days: Sequence[date]) -> list[RunSummary]:
    """Run ``bronze_acode_job`` (sync and checks) for each day in the Dagster instance."""
    job = current_definitions().resolve_job_def("bronze_acode_job")
    summaries = []
    with dg.DagsterInstance.get() as instance:
        for day in days:
            result = job.execute_in_process(
                partition_key=day.isoformat(),
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            summaries.append(_summarize(day, result))
    return summaries


def send_alerts(*, start: bool = False) -> str:
    """One evaluation of ``acode_alert_sensor`` from the command line; returns its summary.

    The command line keeps a cursor of its own in the instance's key-value store, so it neither
    replays history nor moves the daemon's cursor; ``start=True`` only marks everything
    recorded so far as known. With the daemon running the sensor too, both would send: leave
    alerting to the daemon when it runs.
    """
    from acode_dagster.defs.alerts.sensors import acode_alert_sensor

    resources = {"alerting": (current_definitions().resources or {})["alerting"]}
    with dg.DagsterInstance.get() as instance:
        storage = instance.run_storage
        cursor = (
            None if start else storage.get_cursor_values({ALERT_CURSOR_KEY}).get(ALERT_CURSOR_KEY)
        )
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        result = acode_alert_sensor(context)
        if context.cursor:
            storage.set_cursor_values({ALERT_CURSOR_KEY: context.cursor})
    return (result.skip_message or "") if isinstance(result, dg.SkipReason) else str(result)


def _resources() -> dict[str, Any]:
    return dict(current_definitions().resources or {})


def check_health() -> dict[str, Any]:
    """Probe the four targets now, with the configured limits; ``{target: ProbeResult}``."""
    from acode_dagster.defs.redundancy.sensors import run_probes

    resources = _resources()
    wanted = {k: resources[k] for k in ("acode_sources", "bronze", "redundancy", "replicator")}
    with dg.build_resources(wanted) as ready:
        return run_probes(ready.acode_sources, ready.bronze, ready.redundancy, ready.replicator)


@dataclass(frozen=True)
class TableStatus:
    table: str
    latest_partition: str | None
    checks: dict[str, str]
    """check name -> PASS/WARN/ERROR of the latest partition's latest evaluation."""


def route_status() -> tuple[Any, list[Any], list[TableStatus]]:
    """``(route state, recent route events newest first, per-table latest partition)``."""
    from acode_dagster.defs.bronze.checks import bronze_key
    from acode_dagster.defs.redundancy.state import load_state, recent_route_events
    from acode_dagster.quality import MIRROR_CHECK, PARTITION_CHECKS
    from acode_dagster.tables import TABLES

    with dg.DagsterInstance.get() as instance:
        state = load_state(instance)
        events = recent_route_events(instance, limit=5)
        tables = []
        for table in TABLES:
            landed = instance.get_materialized_partitions(bronze_key(table))
            latest = max(landed) if landed else None
            checks: dict[str, str] = {}
            for spec in (*PARTITION_CHECKS, MIRROR_CHECK):
                key = dg.AssetCheckKey(bronze_key(table), spec.name)
                for record in instance.event_log_storage.get_asset_check_execution_history(
                    key, limit=20
                ):
                    event = record.event.dagster_event if record.event else None
                    evaluation = event.asset_check_evaluation_data if event else None
                    if evaluation is not None and evaluation.partition == latest:
                        checks[spec.name] = (
                            "PASS" if evaluation.passed else evaluation.severity.value
                        )
                        break
            tables.append(TableStatus(table.name, latest, checks))
    return state, events, tables


def sync_partition(table_name: str, day: date) -> RunSummary:
    """Materialize (and check) one partition of one table now, on the route in force."""
    from acode_dagster.defs.bronze.checks import bronze_key
    from acode_dagster.tables import get_table

    key = bronze_key(get_table(table_name))
    job = current_definitions().resolve_job_def("bronze_acode_job")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            asset_selection=[key],
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    summary = _summarize(day, result)
    audit.record(
        "sync.run",
        what=f"sync of {table_name} {day.isoformat()}",
        after={"run_id": result.run_id, "success": result.success, "partition": str(day)},
        run_id=result.run_id,
    )
    return summary


def change_pin(role: str | None, reason: str, parts: Sequence[str], by: str) -> list[Any]:
    """Pin the given parts of the route to ``role``, or unpin (``role=None``); the events."""
    from datetime import UTC, datetime

    from acode_dagster import failover
    from acode_dagster.defs.redundancy.state import event_observation, load_state, save_state

    now = datetime.now(UTC)
    with dg.DagsterInstance.get() as instance:
        state = before = load_state(instance)
        if role is None:
            state, events = failover.unpin(state, by, now, reason)
        else:
            pin = failover.Pin(
                role=role,  # type: ignore[arg-type]
                reason=reason,
                by=by,
                at=now,
                parts=tuple(parts),  # type: ignore[arg-type]
            )
            state, events = failover.pin(state, pin)
        save_state(instance, state)
        for event in events:
            instance.report_runless_asset_event(event_observation(event))
    for event in events:
        audit.record(
            "route.unpin" if role is None else "route.pin",
            what=event.describe(),
            why=reason,
            before=route_view(before),
            after=route_view(state),
            key=event.id,
            at=event.at,
        )
    return events


def route_view(state: Any) -> dict[str, Any]:
    """A route state as an audit record's before or after: where each part points, the pin."""
    return {
        "source": state.route.source,
        "bucket": state.route.bucket,
        "pin": None if state.pin is None else state.pin.to_json(),
        "version": state.version,
    }


# ------------------------------------------------------------------------------- backfills

BACKFILL_DONE = frozenset(
    {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
)
"""Backfill statuses after which nothing more of it runs."""


@dataclass(frozen=True)
class PoolBound:
    limit: int | None
    """Steps of ``SOURCE_POOL`` at once; None when the instance sets no limit at all."""
    where: str
    granularity: str


@dataclass(frozen=True)
class SubmittedBackfill:
    backfill_id: str
    partitions: list[str]
    tables: list[str]
    url: str
    bound: PoolBound
    daemon_seen: bool
    """Whether a backfill daemon reported lately; without one the backfill waits."""


@dataclass(frozen=True)
class PartitionOutcome:
    partition: str
    table: str
    outcome: str
    """materialized, failed, running, queued or not run."""
    run_id: str | None
    run_status: str | None


@dataclass(frozen=True)
class BackfillProgress:
    backfill_id: str
    status: str
    """The backfill's status as the daemon records it: REQUESTED until it has finished."""
    runs: dict[str, int]
    """Run status -> how many of the backfill's runs are in it."""
    outcomes: list[PartitionOutcome]

    @property
    def done(self) -> bool:
        return self.status in BACKFILL_DONE

    @property
    def succeeded(self) -> bool:
        return self.status in {"COMPLETED", "COMPLETED_SUCCESS"} and all(
            o.outcome == "materialized" for o in self.outcomes
        )


def source_pool_bound(instance: dg.DagsterInstance) -> PoolBound:
    """The limit the instance puts on ``SOURCE_POOL``, resolved as a run worker resolves it.

    A limit set on the pool itself (UI: Deployment > Concurrency) wins; otherwise the instance's
    ``concurrency.pools.default_limit`` (see ``InstanceConcurrencyContext.claim`` in
    dagster/_core/execution/plan/instance_concurrency_context.py).
    """
    pool_config = instance.get_concurrency_config().pool_config
    granularity = pool_config.pool_granularity.value if pool_config.pool_granularity else "op"
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for pool in storage.get_pool_limits():
            if pool.name == SOURCE_POOL and not pool.from_default:
                return PoolBound(pool.limit, "set on the pool in the UI", granularity)
    limit = pool_config.default_pool_limit
    where = "concurrency.pools.default_limit in $DAGSTER_HOME/dagster.yaml"
    return PoolBound(limit, where if limit is not None else "no limit anywhere", granularity)


def _backfill_daemon_seen(instance: dg.DagsterInstance, within_s: float = 120.0) -> bool:
    """Whether a backfill daemon has reported lately (daemons beat every 30 s)."""
    beat = instance.get_daemon_heartbeats().get("BACKFILL")
    return beat is not None and time.time() - beat.timestamp < within_s


def backfill_days(
    start: date,
    end: date,
    table_names: Sequence[str] = (),
    *,
    ui_url: str,
    by: str = "operator",
    run_config: dict[str, Any] | None = None,
) -> SubmittedBackfill:
    """Submit a Dagster asset backfill of the days [start, end] of the chosen bronze tables.

    The backfill is recorded in the instance of ``DAGSTER_HOME``, exactly as the UI's "Launch
    backfill" records one, so it is on the UI's Backfills page and the backfill daemon runs it:
    one run per day, its syncs bounded by ``SOURCE_POOL`` like every other sync. Every day of
    the range is requested, whether it already landed or not. ``run_config`` is given to every
    run (the UI's backfill dialog offers the same), e.g. to choose the executor.
    """
    # Dagster has no public Python call that submits an asset backfill: the UI goes through
    # GraphQL's launchPartitionBackfill, which needs a running webserver. Its resolver
    # (dagster_graphql/implementation/execution/backfill.py, create_and_launch_partition_backfill)
    # makes the record with PartitionBackfill.from_asset_partitions and stores it with
    # instance.add_backfill; we make the same two calls, with the same arguments, so the daemon
    # and the UI cannot tell the difference. They are confined to this function.
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.storage.tags import USER_TAG
    from dagster._core.utils import make_new_backfill_id

    from acode_dagster.defs.bronze.checks import bronze_key
    from acode_dagster.errors import ConfigError
    from acode_dagster.tables import SOURCE_TIMEZONE, TABLES, get_table

    try:
        tables = [get_table(name) for name in dict.fromkeys(table_names)] or list(TABLES)
    except ValueError as exc:
        raise ConfigError(f"{exc}; name them with --table, or omit it for all") from None
    if end < start:
        raise ConfigError(
            f"END {end} is before START {start}: give the first day first, e.g. "
            f"`acode backfill {end} {start}`"
        )
    asset_graph = current_definitions().resolve_asset_graph()
    keys = [bronze_key(table) for table in tables]
    partitions_def = asset_graph.get(keys[0]).partitions_def
    if partitions_def is None:  # pragma: no cover - the bronze assets are all partitioned
        raise ConfigError(f"{keys[0].to_user_string()} is not partitioned")
    first = partitions_def.get_first_partition_key()
    last = partitions_def.get_last_partition_key()
    if first is not None and start < date.fromisoformat(first):
        raise ConfigError(
            f"START {start} is before the first partition, {first} (ACODE_PARTITIONS_START): "
            f"start on {first} or later"
        )
    if last is None or end > date.fromisoformat(last):
        latest = f"the latest complete day is {last}" if last else "no day is complete yet"
        raise ConfigError(
            f"END {end} is not over yet in {SOURCE_TIMEZONE.key}, so it has no partition to "
            f"sync: {latest}; end on it or before"
        )
    partitions = list(
        partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(str(start), str(end)))
    )
    backfill_id = make_new_backfill_id()
    with dg.DagsterInstance.get() as instance:
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=asset_graph,
            partition_names=partitions,
            asset_selection=keys,
            backfill_timestamp=time.time(),
            tags={USER_TAG: by, "acode/launched_by": "acode backfill"},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=f"acode backfill {start}..{end}",
            description=(
                f"{len(partitions)} day(s) of {', '.join(t.name for t in tables)}, "
                f"submitted by {by} from the command line"
            ),
            run_config=run_config,
        )
        instance.add_backfill(backfill)
        bound = source_pool_bound(instance)
        seen = _backfill_daemon_seen(instance)
    audit.record(
        "backfill.submit",
        what=f"backfill {backfill_id} of {start}..{end}, {', '.join(t.name for t in tables)}",
        after={
            "backfill_id": backfill_id,
            "partitions": partitions,
            "tables": [t.name for t in tables],
        },
        key=backfill_id,
    )
    return SubmittedBackfill(
        backfill_id=backfill_id,
        partitions=partitions,
        tables=[t.name for t in tables],
        url=f"{ui_url}/runs/b/{backfill_id}",
        bound=bound,
        daemon_seen=seen,
    )


def _backfill_progress(
    instance: dg.DagsterInstance, asset_graph: Any, backfill_id: str
) -> BackfillProgress:
    from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG

    from acode_dagster.errors import ConfigError

    backfill = instance.get_backfill(backfill_id)
    if backfill is None or not backfill.is_asset_backfill:
        raise ConfigError(
            f"no asset backfill {backfill_id!r} in the Dagster instance at "
            f"DAGSTER_HOME={os.environ.get('DAGSTER_HOME')}"
        )
    data = backfill.get_asset_backfill_data(asset_graph)
    runs: dict[str, int] = {}
    latest: dict[tuple[dg.AssetKey, str | None], dg.DagsterRun] = {}
    # Newest first, so a retried partition shows its last run.
    for record in instance.get_run_records(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})):
        launched = record.dagster_run
        runs[launched.status.value] = runs.get(launched.status.value, 0) + 1
        for key in launched.asset_selection or ():
            latest.setdefault((key, launched.tags.get(PARTITION_NAME_TAG)), launched)
    outcomes = []
    done = backfill.status.value in BACKFILL_DONE
    for target in data.target_subset.iterate_asset_partitions():
        run = latest.get((target.asset_key, target.partition_key))
        status = run.status if run else None
        if target in data.materialized_subset or status == dg.DagsterRunStatus.SUCCESS:
            outcome = "materialized"
        elif target in data.failed_and_downstream_subset or (run and run.is_failure_or_canceled):
            outcome = "failed"
        elif status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
            outcome = "queued"
        elif run is not None and not run.is_finished:
            outcome = "running"
        else:
            outcome = "not run" if done else "not started"
        outcomes.append(
            PartitionOutcome(
                partition=target.partition_key or "",
                table=target.asset_key.path[-1],
                outcome=outcome,
                run_id=run.run_id if run else None,
                run_status=status.value if status else None,
            )
        )
    outcomes.sort(key=lambda o: (o.partition, o.table))
    return BackfillProgress(backfill_id, backfill.status.value, runs, outcomes)


def follow_backfill(
    backfill_id: str,
    report: Callable[[BackfillProgress], None],
    *,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
) -> BackfillProgress:
    """Poll the backfill until the daemon marks it finished; ``report`` sees every poll.

    Without a daemon nothing happens to it, so past ``timeout_s`` (if given) this gives up with
    ``TimeoutError``; the backfill itself goes on.
    """
    asset_graph = current_definitions().resolve_asset_graph()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with dg.DagsterInstance.get() as instance:
        while True:
            progress = _backfill_progress(instance, asset_graph, backfill_id)
            report(progress)
            if progress.done:
                return progress
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"backfill {backfill_id} still {progress.status} after {timeout_s:.0f} s "
                    f"(runs: {progress.runs or 'none yet'})"
                )
            time.sleep(poll_s)


# ------------------------------------------------------------------------------- quarantine


@dataclass(frozen=True)
class QuarantineEntry:
    """A quarantined version and the bronze root that keeps it."""

    role: Role
    """The root the version was written to, where a release publishes it."""
    store_url: str
    entry: Quarantined


@dataclass(frozen=True)
class RootProblem:
    """A bronze root that could not be read; the other root's findings still stand."""

    role: Role
    url: str
    error: str


@dataclass(frozen=True)
class QuarantineListing:
    """What both roots hold in quarantine, and which of them could not be read."""

    entries: list[QuarantineEntry]
    """Oldest first."""
    problems: list[RootProblem]
    published: dict[tuple[str, str], Manifest | None] = field(default_factory=dict)
    """(role, table) -> the published manifest of the day asked for, when a day was asked for."""
    roots: list[str] = field(default_factory=list)
    """The URL of each root looked in."""


@dataclass
class ReleasedVersion:
    role: Role
    store_url: str
    entry: Quarantined
    """The version as it was in quarantine."""
    manifest: Manifest
    """The manifest it was published with (its note says who released it and why)."""
    partition_url: str
    mirrored: "Mirrored | None" = None
    """Its copy to the other root (None with a single root)."""


def _bronze() -> "BronzeResource":
    """The ``bronze`` resource, built from the environment as the definitions build it."""
    from acode_dagster.defs.resources import BronzeResource, build_resources

    bronze = build_resources(Settings.from_env())["bronze"]
    assert isinstance(bronze, BronzeResource)
    return bronze


def list_quarantined(table_names: Sequence[str] = (), day: date | None = None) -> QuarantineListing:
    """Every quarantined version in both bronze roots (of ``table_names`` and ``day`` when
    given), oldest first. A root that cannot be read is a problem in the listing, not an
    error: during a bucket outage the other root is what the operator needs to see."""
    from acode_dagster.errors import AcodeError, ConfigError
    from acode_dagster.tables import TABLES, get_table

    try:
        tables = [get_table(name) for name in dict.fromkeys(table_names)] or list(TABLES)
    except ValueError as exc:
        raise ConfigError(f"{exc}; name one with --table, or omit it for all") from None
    entries: list[QuarantineEntry] = []
    problems: list[RootProblem] = []
    published: dict[tuple[str, str], Manifest | None] = {}
    bronze = _bronze()
    roots: list[str] = []
    for role, url in bronze.roots():
        roots.append(url)
        try:
            store = bronze.store(role)
            found = [
                QuarantineEntry(role, store.url, entry)
                for table in tables
                for entry in store.quarantined(table, day)
            ]
            if day is not None:
                for table in tables:
                    published[(role, table.name)] = store.manifest(table, day)
        except (AcodeError, OSError) as exc:
            # OSError: a local root that is not a folder (a file in its path, no permission).
            problems.append(RootProblem(role, url, str(exc)))
            continue
        entries.extend(found)
    entries.sort(key=lambda e: e.entry.quarantined_at)
    return QuarantineListing(entries, problems, published, roots)


def _nothing_quarantined(
    table_name: str, day: date, listing: QuarantineListing, version: str | None
) -> str:
    what = f"no version starting with {version!r}" if version else "nothing"
    where = " or ".join(listing.roots) or "the bronze roots"
    message = f"{what} of {table_name} {day:%Y-%m-%d} is in quarantine in {where}"
    if version and listing.entries:
        have = ", ".join(e.entry.version for e in listing.entries)
        message += f" (its quarantined versions: {have}); give one of them with --version"
    else:
        message += "; `acode quarantine list` shows what is"
    unread = "; ".join(
        f"the {p.role} root {p.url} could not be read: {p.error}" for p in listing.problems
    )
    return f"{message}{'; ' + unread if unread else ''}"


def choose_quarantined(
    table_name: str, day: date, listing: QuarantineListing, version: str | None
) -> list[QuarantineEntry]:
    """The entries of ``listing`` (one table's day) that ``version`` names (a prefix will do),
    or all of them; BronzeError naming the roots looked in when there are none."""
    from acode_dagster.errors import BronzeError

    chosen = [e for e in listing.entries if version is None or e.entry.version.startswith(version)]
    if not chosen:
        raise BronzeError(_nothing_quarantined(table_name, day, listing, version))
    if version is not None and len({e.entry.version for e in chosen}) > 1:
        have = ", ".join(e.entry.version for e in chosen)
        raise BronzeError(
            f"--version {version!r} names {len(chosen)} quarantined versions of {table_name} "
            f"{day:%Y-%m-%d} ({have}); give more of its characters"
        )
    return chosen


def release_metadata(
    released: ReleasedVersion, *, by: str, reason: str
) -> dict[str, dg.MetadataValue]:
    """The materialization metadata of a release: the asset's own figures (so the UI plots the
    released partition with the others) and who released what, and why."""
    from acode_dagster.defs.bronze.assets import partition_metadata

    manifest = released.manifest
    return {
        **partition_metadata(manifest, released.partition_url),
        "bronze_version": dg.MetadataValue.text("released from quarantine"),
        "released_by": dg.MetadataValue.text(by),
        "release_reason": dg.MetadataValue.text(reason),
        "failed_checks": dg.MetadataValue.text(", ".join(released.entry.failed) or "none"),
        "quarantined_at": dg.MetadataValue.text(released.entry.quarantined_at),
        "bucket_role": dg.MetadataValue.text(released.role),
        "source_server": dg.MetadataValue.text(manifest.source),
        **(
            {
                "mirrored": dg.MetadataValue.bool(released.mirrored.done),
                "mirror": dg.MetadataValue.text(released.mirrored.detail),
            }
            if released.mirrored is not None
            else {}
        ),
    }


def release_quarantined(
    table_name: str, day: date, *, reason: str, by: str, version: str | None = None
) -> ReleasedVersion:
    """Publish a quarantined version anyway, on the root that keeps it, and record it as a
    materialization of the bronze asset's partition in the Dagster instance.

    The publish is :func:`acode_dagster.bronze.quarantine.release`: under the partition's lease
    and through the fenced publish, so it never interleaves with a sync of the same partition.
    Without ``version`` the newest quarantined version of the day (in either root) is released.
    """
    from acode_dagster.bronze import quarantine
    from acode_dagster.defs.bronze.checks import bronze_key
    from acode_dagster.errors import AcodeError
    from acode_dagster.tables import get_table

    table = get_table(table_name)
    reason = quarantine.required_reason(reason)
    bronze = _bronze()
    listing = list_quarantined([table.name], day)
    target = choose_quarantined(table.name, day, listing, version)[-1]
    # The instance first: a Dagster home that cannot be opened fails before anything is
    # published, not after.
    with dg.DagsterInstance.get() as instance:
        store = bronze.store(target.role)
        entry, manifest = quarantine.release(
            store,
            table,
            day,
            reason=reason,
            by=by,
            policy=bronze.lease_policy(),
            version=target.entry.version,
        )
        published = listing.published.get((target.role, table.name))
        audit.record(
            "quarantine.release",
            what=f"{table.name} {day.isoformat()} version {manifest.version} on the "
            f"{target.role} root, released by {by}",
            why=reason,
            before={"published_version": published.version if published else None},
            after={"published_version": manifest.version, "url": store.partition_url(table, day)},
        )
        released = ReleasedVersion(
            target.role, store.url, entry, manifest, store.partition_url(table, day)
        )
        # Published like a sync's version, so mirrored like one (recorded with the release).
        released.mirrored = _mirror_release(bronze, table, day, released)
        try:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=bronze_key(table),
                    partition=day.isoformat(),
                    description=manifest.note,
                    metadata=release_metadata(released, by=by, reason=reason),
                )
            )
        except Exception as exc:
            raise AcodeError(
                f"{table.name} {day:%Y-%m-%d}: version {manifest.version} is published at "
                f"{released.partition_url}, but recording it in the Dagster instance "
                f"(DAGSTER_HOME={os.environ.get('DAGSTER_HOME')}) failed: {exc}; the release "
                "stands and only its record in Dagster is missing: check DAGSTER_HOME and the "
                "instance's storage"
            ) from exc
    return released


def _mirror_release(
    bronze: "BronzeResource",
    table: Any,
    day: date,
    released: "ReleasedVersion",
) -> "Mirrored | None":
    from acode_dagster.bronze.lease import Holder
    from acode_dagster.bronze.mirror import mirror
    from acode_dagster.failover import opposite

    if not bronze.mirrored:
        return None
    other = opposite(released.role)
    return mirror(
        bronze.store(released.role),
        bronze.store(other),
        table,
        day,
        holder=Holder.here("release", purpose=f"mirror to the {other} bucket"),
        policy=bronze.lease_policy(),
        expected=released.manifest,
    )


def discard_quarantined(
    table_name: str, day: date, version: str | None = None
) -> list[QuarantineEntry]:
    """Remove the quarantined versions of (table, day) from both roots, or only ``version``."""
    from acode_dagster.tables import get_table

    table = get_table(table_name)
    bronze = _bronze()
    listing = list_quarantined([table.name], day)
    chosen = choose_quarantined(table.name, day, listing, version)
    for found in chosen:
        bronze.store(found.role).discard(found.entry)
        audit.record(
            "quarantine.discard",
            what=f"{table.name} {day.isoformat()} version {found.entry.version} on the "
            f"{found.role} root",
            before={"version": found.entry.version, "url": found.entry.url},
            after=None,
        )
    return chosen


def sweep_bronze(*, dry_run: bool = False, now: datetime | None = None) -> list["RootSweep"]:
    """The sweep of both roots with the settings' policy (``RootSweep`` each), as the daily
    ``bronze_sweep_job`` does it."""
    from acode_dagster.defs.bronze.sweep import sweep_roots

    swept = sweep_roots(_bronze(), dry_run=dry_run, now=now)
    removed = {
        root.url: [x.url for x in root.report.removed_staging]
        + [x.url for x in root.report.removed_quarantine]
        for root in swept
        if root.report is not None
        and (root.report.removed_staging or root.report.removed_quarantine)
    }
    if removed and not dry_run:
        audit.record(
            "bronze.sweep",
            what=f"sweep removed {sum(map(len, removed.values()))} staging or quarantined "
            "version(s)",
            before=removed,
            after=None,
        )
    return swept


def _two_roots(what: str) -> "BronzeResource":
    """The ``bronze`` resource, refused with the fix when it has one root only."""
    from acode_dagster.errors import ConfigError

    bronze = _bronze()
    if not bronze.mirrored:
        raise ConfigError(
            "ACODE_BRONZE_BACKUP_URL is the same root as ACODE_BRONZE_URL: there is no second "
            f"copy to {what}; set ACODE_BRONZE_BACKUP_URL to the backup bucket"
        )
    return bronze


def compare_buckets(
    days: int, table_names: Sequence[str] = (), *, checksums: bool = False
) -> list["PartitionDiff"]:
    """Both bronze roots compared over the last ``days`` complete days (``acode buckets diff``)."""
    from acode_dagster.bronze.mirror import diff
    from acode_dagster.defs.bronze.repair import repair_window
    from acode_dagster.routing import BACKUP, PRIMARY
    from acode_dagster.tables import TABLES, get_table

    bronze = _two_roots("compare")
    tables = [get_table(t) for t in table_names] if table_names else list(TABLES)
    return diff(
        bronze.store(PRIMARY),
        bronze.store(BACKUP),
        tables,
        repair_window(days),
        checksums=checksums,
    )


def repair_buckets(
    days: int, table_names: Sequence[str] = (), *, checksums: bool = False, by: str
) -> "RepairReport":
    """``acode buckets repair``: a run of ``bronze_repair_job`` in this process, recorded in the
    Dagster instance like one launched from the UI (each copy an evaluation of the partition's
    ``mirror`` check); its report, for the command to print."""
    from acode_dagster.defs.bronze.repair import bronze_repair_job
    from acode_dagster.tables import get_table

    bronze = _two_roots("repair")
    config = {
        "days": days,
        "checksums": checksums,
        "tables": [get_table(t).name for t in table_names],
    }
    with dg.DagsterInstance.get() as instance:
        result = bronze_repair_job.execute_in_process(
            run_config={"ops": {"repair_buckets": {"config": config}}},
            resources={"bronze": bronze},
            instance=instance,
            tags={"acode/launched_by": by},
            raise_on_error=False,
        )
    # The report whatever the outcome: a run that could not repair everything fails (so the
    # UI shows it), and the command says what failed.
    report: RepairReport = result.output_for_node("repair_buckets")
    audit.record(
        "buckets.repair",
        what=f"bucket repair of {days} day(s) of {', '.join(table_names) or 'every table'}",
        after={
            "run_id": result.run_id,
            "success": result.success,
            "copied": [f"{c.table} {c.day} to {c.target_url}" for c in report.copied],
            "failed": [f"{c.table} {c.day}" for c in report.failed],
        },
        run_id=result.run_id,
    )
    return report
