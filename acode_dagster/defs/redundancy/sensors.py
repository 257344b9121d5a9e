"""``acode_health_sensor``: probe everything, decide the route, record it, catch up.

Each tick probes the two MySQL servers and the two buckets (and, in airbyte mode, the two
Airbyte connections) (concurrently, each bounded by the
probe timeout), feeds the verdicts to the pure failover state machine, saves the new state in the
instance, records the tick and every route event as observations of ``redundancy``, and, after a
failover, fail-back or recovery, requests the partitions of the last days that never landed, on
the route now in force, once each.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import dagster as dg

from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.bronze.jobs import bronze_acode_job
from acode_dagster.defs.bronze.partitions import daily_partitions
from acode_dagster.defs.redundancy.resources import RedundancyResource
from acode_dagster.defs.redundancy.state import (
    event_observation,
    load_state,
    save_state,
    tick_observation,
)
from acode_dagster.defs.resources import (
    AcodeSourcesResource,
    BronzeResource,
    ReplicatorResource,
)
from acode_dagster.errors import AcodeError
from acode_dagster.failover import Health, Observation, RouteEvent, RouteState, step
from acode_dagster.probes import (
    ProbeResult,
    ProbeSettings,
    probe_all,
    probe_bucket,
    probe_mysql,
    probe_replica,
)
from acode_dagster.routing import BACKUP, PRIMARY
from acode_dagster.settings import Settings
from acode_dagster.tables import SOURCE_TIMEZONE, TABLES

T = TypeVar("T")
CATCH_UP_AFTER = frozenset({"failover", "failback", "recovered", "pinned", "unpinned"})


@dataclass
class HealthTick:
    results: dict[str, ProbeResult]
    state: RouteState
    events: list[RouteEvent]
    observations: list[dg.AssetObservation] = field(default_factory=list)
    run_requests: list[dg.RunRequest] = field(default_factory=list)


def run_probes(
    sources: AcodeSourcesResource,
    bronze: BronzeResource,
    redundancy: RedundancyResource,
    replicator: ReplicatorResource | None = None,
) -> dict[str, ProbeResult]:
    """The four probes, plus the replicator's own (the two Airbyte connections in airbyte mode);
    a target that cannot even be configured is reported unhealthy."""
    settings = redundancy.probe_settings()
    extra = replicator.probe(settings) if replicator is not None else {}
    return {**_storage_probes(sources, bronze, settings), **extra}


def _storage_probes(
    sources: AcodeSourcesResource, bronze: BronzeResource, settings: ProbeSettings
) -> dict[str, ProbeResult]:
    failed: dict[str, ProbeResult] = {}

    def resolve(target: str, build: Callable[[], T]) -> T | None:
        try:
            return build()
        except AcodeError as exc:
            failed[target] = ProbeResult(target, healthy=False, latency_s=0.0, reason=str(exc))
            return None

    primary = resolve("mysql_primary", lambda: sources.endpoint(PRIMARY))
    backup = resolve("mysql_backup", lambda: sources.endpoint(BACKUP))
    primary_store = resolve("bucket_primary", lambda: bronze.store(PRIMARY))
    backup_store = resolve("bucket_backup", lambda: bronze.store(BACKUP))
    if primary and backup and primary_store and backup_store:
        return probe_all(primary, backup, primary_store, backup_store, settings)
    # Rare (a setting broken at run time): probe what can be probed, one by one.
    results = dict(failed)
    if primary:
        results["mysql_primary"] = probe_mysql(primary, PRIMARY, settings)
    if backup:
        results["mysql_backup"] = probe_replica(backup, settings)
    if primary_store:
        results["bucket_primary"] = probe_bucket(primary_store, PRIMARY, settings)
    if backup_store:
        results["bucket_backup"] = probe_bucket(backup_store, BACKUP, settings)
    return results


def observe(results: Mapping[str, ProbeResult]) -> Observation:
    """The state machine's view: a source side is healthy when its MySQL server is and, in
    airbyte mode, its connection too (a failing connection fails its side over like a dead
    server does)."""

    def side(kinds: tuple[str, ...], role: str) -> tuple[bool, str]:
        found = [results[f"{k}_{role}"] for k in kinds if f"{k}_{role}" in results]
        failing = [r for r in found if not r.healthy]
        return not failing, "; ".join(f"{r.target}: {r.reason}" for r in failing) or "ok"

    def health(*kinds: str) -> Health:
        primary, primary_reason = side(kinds, "primary")
        backup, backup_reason = side(kinds, "backup")
        return Health(
            primary=primary,
            backup=backup,
            primary_reason=primary_reason,
            backup_reason=backup_reason,
        )

    return Observation(source=health("mysql", "airbyte"), bucket=health("bucket"))


def missing_partitions(
    instance: dg.DagsterInstance, today: date, days: int, first: date
) -> dict[str, list[dg.AssetKey]]:
    """Per day of the last ``days`` complete days, the bronze assets with nothing landed."""
    wanted = [today - timedelta(days=n) for n in range(days, 0, -1)]
    wanted = [day for day in wanted if day >= first]
    missing: dict[str, list[dg.AssetKey]] = {}
    for table in TABLES:
        landed = instance.get_materialized_partitions(bronze_key(table))
        for day in wanted:
            if day.isoformat() not in landed:
                missing.setdefault(day.isoformat(), []).append(bronze_key(table))
    return missing


def catch_up_requests(
    instance: dg.DagsterInstance, state: RouteState, days: int, now: datetime
) -> list[dg.RunRequest]:
    """One run per day with something missing, keyed by the route version: requested once."""
    today = now.astimezone(SOURCE_TIMEZONE).date()
    first = daily_partitions.start.date()
    return [
        dg.RunRequest(
            run_key=f"catch-up/v{state.version}/{day}",
            partition_key=day,
            asset_selection=keys,
            tags={"acode/catch_up": f"route v{state.version}"},
        )
        for day, keys in sorted(missing_partitions(instance, today, days, first).items())
    ]


def health_tick(
    instance: dg.DagsterInstance,
    sources: AcodeSourcesResource,
    bronze: BronzeResource,
    redundancy: RedundancyResource,
    *,
    replicator: ReplicatorResource | None = None,
    now: datetime | None = None,
) -> HealthTick:
    now = now or datetime.now(UTC)
    before = load_state(instance)
    results = run_probes(sources, bronze, redundancy, replicator)
    state, events = step(before, observe(results), now, redundancy.policy())
    tick = HealthTick(results, state, events)
    # An operator's pin written while we probed wins: drop this tick's decision, keep its
    # probe results for the record; the next tick decides again from the pinned state.
    current = load_state(instance)
    if current != before:
        tick.state, tick.events = current, []
    else:
        save_state(instance, state)
    tick.observations = [tick_observation(tick.state, results, tick.events)] + [
        event_observation(event) for event in tick.events
    ]
    if any(event.kind in CATCH_UP_AFTER for event in tick.events):
        tick.run_requests = catch_up_requests(instance, tick.state, redundancy.catchup_days, now)
    return tick


@dg.sensor(
    name="acode_health_sensor",
    job=bronze_acode_job,
    minimum_interval_seconds=Settings.from_env().health_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Probes the primary and backup MySQL servers and buckets, moves the route with "
        "hysteresis (ACODE_FAILOVER_AFTER failed probes out, ACODE_FAILBACK_AFTER healthy ones "
        "and ACODE_FAILBACK_DWELL_S back), records it on the redundancy asset, and re-runs the "
        "partitions missed in the last ACODE_CATCHUP_DAYS days after a change."
    ),
)
def acode_health_sensor(
    context: dg.SensorEvaluationContext,
    acode_sources: AcodeSourcesResource,
    bronze: BronzeResource,
    redundancy: RedundancyResource,
    replicator: ReplicatorResource,
) -> dg.SensorResult:
    tick = health_tick(context.instance, acode_sources, bronze, redundancy, replicator=replicator)
    for event in tick.events:
        log = context.log.warning if event.critical else context.log.info
        log(event.describe())
    for result in tick.results.values():
        if not result.healthy or result.warning:
            context.log.info(f"{result.target}: {result.reason} {result.warning or ''}".strip())
    return dg.SensorResult(run_requests=tick.run_requests, asset_events=tick.observations)
