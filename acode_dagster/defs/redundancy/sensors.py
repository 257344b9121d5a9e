"""``acode_health_sensor``: probe everything, decide the route, commit it, then tell and catch up.

Each tick probes the two MySQL servers and the two buckets (and, in airbyte mode, the two Airbyte
connections) all at once, each bounded by the probe timeout and the whole round by the probe
budget, feeds the verdicts to the pure failover state machine, and commits the new state
together with its outbox (:mod:`acode_dagster.outbox`): the route events it owes the history
and the alerts, and the catch-up due at the new route version, in one compare-and-set of the
instance's key-value store. Only then does it return the tick's observation, every event still
owed (recorded by the daemon as observations of ``redundancy``, which the alert sensor reads)
and, while a catch-up is owed, what the route change owes the buckets
(:mod:`acode_dagster.defs.redundancy.catchup`): a repair of the partitions one bucket holds and
the other lacks, and a re-sync on the new route of those neither holds, keyed by the route
version so that the daemon launches each once.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from time import perf_counter
from typing import TypeVar

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from acode_dagster import audit
from acode_dagster.defs.bronze.jobs import bronze_acode_job
from acode_dagster.defs.bronze.repair import bronze_repair_job
from acode_dagster.defs.observability.resources import MetricsResource
from acode_dagster.defs.redundancy.catchup import catch_up_requests
from acode_dagster.defs.redundancy.resources import RedundancyResource
from acode_dagster.defs.redundancy.state import (
    compare_and_set,
    event_observation,
    newest_storage_id,
    read_record,
    recorded_event_ids,
    tick_observation,
)
from acode_dagster.defs.resources import (
    AcodeSourcesResource,
    BronzeResource,
    ReplicatorResource,
)
from acode_dagster.errors import AcodeError, redact
from acode_dagster.failover import Health, Observation, RouteEvent, RouteState, step
from acode_dagster.outbox import Outbox, commit, decode
from acode_dagster.probes import (
    TARGETS,
    Probe,
    ProbeGroup,
    ProbeResult,
    ProbeSettings,
    probe_bucket,
    probe_mysql,
    probe_replica,
    probe_within,
)
from acode_dagster.routing import BACKUP, PRIMARY, ROLES
from acode_dagster.settings import Settings

T = TypeVar("T")
HEALTH_SENSOR = "acode_health_sensor"


@dataclass
class HealthTick:
    results: dict[str, ProbeResult]
    state: RouteState
    events: list[RouteEvent]
    """The events this tick decided."""
    observations: list[dg.AssetObservation] = field(default_factory=list)
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    owed: list[RouteEvent] = field(default_factory=list)
    """Events of earlier ticks not found recorded, emitted again (same ids)."""
    probe_s: float = 0.0
    """How long the whole probe phase took."""
    committed: bool = True
    """False when the route record changed during the tick (a pin): its decision was dropped."""


def run_probes(
    sources: AcodeSourcesResource,
    bronze: BronzeResource,
    redundancy: RedundancyResource,
    replicator: ReplicatorResource | None = None,
) -> dict[str, ProbeResult]:
    """The four probes and the replicator's own (the Airbyte route's, in airbyte mode) all at
    once, the whole round within the probe budget; a target that cannot even be configured is
    reported unhealthy."""
    settings = redundancy.probe_settings()
    failed: dict[str, ProbeResult] = {}

    def resolve(target: str, build: Callable[[], T]) -> T | None:
        try:
            return build()
        except AcodeError as exc:
            failed[target] = ProbeResult(target, healthy=False, latency_s=0.0, reason=str(exc))
            return None

    calls: dict[str, Probe] = {}
    if primary := resolve("mysql_primary", lambda: sources.endpoint(PRIMARY)):
        calls["mysql_primary"] = partial(probe_mysql, primary, PRIMARY, settings)
    if backup := resolve("mysql_backup", lambda: sources.endpoint(BACKUP)):
        calls["mysql_backup"] = partial(probe_replica, backup, settings)
    if primary_store := resolve("bucket_primary", lambda: bronze.store(PRIMARY)):
        calls["bucket_primary"] = partial(probe_bucket, primary_store, PRIMARY, settings)
    if backup_store := resolve("bucket_backup", lambda: bronze.store(BACKUP)):
        calls["bucket_backup"] = partial(probe_bucket, backup_store, BACKUP, settings)
    groups = [] if replicator is None else [_replicator_group(replicator, settings)]
    results = {**failed, **probe_within(calls, settings.budget_s, groups)}
    return {t: results[t] for t in dict.fromkeys([*TARGETS, *results])}


def _replicator_group(replicator: ReplicatorResource, settings: ProbeSettings) -> ProbeGroup:
    """The replicator's probes (it runs its own at once) as one member of the round. Out of
    the budget, the Airbyte route's two sides are reported unhealthy: they are what moves the
    source part."""
    targets = () if replicator.airbyte is None else tuple(f"airbyte_{role}" for role in ROLES)

    def call() -> Mapping[str, ProbeResult]:
        try:
            return replicator.probe(settings)
        except Exception as exc:
            # Only the platform's own errors are known to carry no secret.
            what = str(exc) if isinstance(exc, AcodeError) else type(exc).__name__
            reason = redact(f"the replicator's probes failed: {what}")
            return {target: ProbeResult(target, False, 0.0, reason) for target in targets}

    return ProbeGroup(targets, call)


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

    # In airbyte mode a bucket side is also its staging prefix, where its connections land.
    return Observation(source=health("mysql", "airbyte"), bucket=health("bucket", "staging"))


@dataclass
class _InstanceLedger:
    """The outbox protocol's view of the Dagster instance (:class:`acode_dagster.outbox.Ledger`)."""

    instance: dg.DagsterInstance
    catch_up: Callable[[int], list[dg.RunRequest]]
    """The catch-up a route version owes, as run requests (read from the buckets)."""
    sensor_name: str = HEALTH_SENSOR

    def read(self) -> str | None:
        return read_record(self.instance)

    def compare_and_set(self, before: str | None, after: str) -> bool:
        return compare_and_set(self.instance, before, after)

    def recorded(self, outbox: Outbox) -> set[str]:
        return recorded_event_ids(self.instance, {e.id for e in outbox.events}, outbox.mark)

    def mark(self) -> int:
        return newest_storage_id(self.instance)

    def catch_up_launched(self, state: RouteState, version: int) -> bool:
        wanted = self.catch_up(version)
        return all(
            request.run_key and launched(self.instance, self.sensor_name, request.run_key)
            for request in wanted
        )


def launched(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> bool:
    """Whether the sensor launched a run with this key: what the daemon checks before it
    launches one (a run created but not launched, NOT_STARTED, is launched by the daemon when
    asked again, so it does not count)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name})
    )
    return any(run.status != dg.DagsterRunStatus.NOT_STARTED for run in runs)


def health_tick(
    instance: dg.DagsterInstance,
    sources: AcodeSourcesResource,
    bronze: BronzeResource,
    redundancy: RedundancyResource,
    *,
    replicator: ReplicatorResource | None = None,
    now: datetime | None = None,
) -> HealthTick:
    """Probe, decide, commit route and outbox in one write, then build what to tell.

    Nothing is emitted before the commit: a tick that dies before it changed nothing, and one
    that dies after it left the outbox for the next tick to emit again.
    """
    now = now or datetime.now(UTC)
    before = read_record(instance)
    started = perf_counter()
    results = run_probes(sources, bronze, redundancy, replicator)
    probe_s = perf_counter() - started
    state, events = step(decode(before)[0], observe(results), now, redundancy.policy())
    # Buckets whose probe failed are not read: their GETs would only spend the tick's time.
    readable = [role for role in ROLES if _healthy(results, f"bucket_{role}")]

    owed: dict[int, list[dg.RunRequest]] = {}

    def catch_up(version: int) -> list[dg.RunRequest]:
        # Asked twice a tick (is the owed catch-up launched? what to request?): read the
        # buckets once.
        if version not in owed:
            owed[version] = catch_up_requests(
                bronze, version, redundancy.catchup_days, now, readable=readable
            )
        return owed[version]

    ledger = _InstanceLedger(instance, catch_up)
    # An operator's pin written while we probed wins: the commit drops this tick's decision and
    # keeps its probe results for the record; the next tick decides again from the pinned state.
    done = commit(ledger, before, state, events)
    # The audit trail of the committed changes, also from the ticks that emit an owed event
    # again (one that died before its record): keyed by the event's id, each is written once.
    for event in done.outbox.events:
        if event.automatic and event.changes_route:
            audit_route_change(event)
    decided = {event.id for event in done.events}
    tick = HealthTick(
        results,
        done.state,
        list(done.events),
        owed=[event for event in done.outbox.events if event.id not in decided],
        probe_s=probe_s,
        committed=done.won,
    )
    tick.observations = [tick_observation(tick.state, results, tick.events, probe_s)] + [
        event_observation(event) for event in done.outbox.events
    ]
    if done.outbox.catch_up is not None:
        tick.run_requests = catch_up(done.outbox.catch_up)
    return tick


def route_changes(events: Sequence[RouteEvent]) -> list[tuple[str, str, str]]:
    """``(part, kind, to_role)`` of each part the events moved, for the failover metric."""
    return [
        (part, event.kind, event.to_role)
        for event in events
        if event.changes_route and event.to_role is not None
        for part in event.parts
    ]


def audit_route_change(event: RouteEvent) -> None:
    """The audit record of an automatic route change, by the health sensor (never raises)."""
    audit.record(
        f"route.{event.kind}",
        what=event.describe(),
        why=event.reason,
        before={part: event.from_role for part in event.parts},
        after={part: event.to_role for part in event.parts},
        key=event.id,
        actor=f"dagster:{HEALTH_SENSOR}",
        at=event.at,
        sensor=HEALTH_SENSOR,
    )


def _healthy(results: Mapping[str, ProbeResult], target: str) -> bool:
    result = results.get(target)
    return result is not None and result.healthy


@dg.sensor(
    name=HEALTH_SENSOR,
    jobs=[bronze_acode_job, bronze_repair_job],
    minimum_interval_seconds=Settings.from_env().health_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Probes the primary and backup MySQL servers and buckets, moves the route with "
        "hysteresis (ACODE_FAILOVER_AFTER failed probes out, ACODE_FAILBACK_AFTER healthy ones "
        "and ACODE_FAILBACK_DWELL_S back), records it on the redundancy asset, and after a "
        "change repairs the partitions of the last ACODE_CATCHUP_DAYS days that one bucket "
        "holds and the other lacks, and re-syncs those no bucket holds."
    ),
)
def acode_health_sensor(
    context: dg.SensorEvaluationContext,
    *,
    acode_sources: AcodeSourcesResource,
    bronze: BronzeResource,
    redundancy: RedundancyResource,
    replicator: ReplicatorResource,
    metrics: MetricsResource,
) -> dg.SensorResult:
    tick = health_tick(context.instance, acode_sources, bronze, redundancy, replicator=replicator)
    # After the commit, never raising, bounded (a few seconds at worst): the tick's decision
    # stands whatever the metrics endpoints do.
    metrics.client(context.log.warning).health(
        tick.results,
        source=tick.state.route.source,
        bucket=tick.state.route.bucket,
        changes=route_changes(tick.events),
    )
    context.log.info(
        f"probe phase: {len(tick.results)} probes at once in {tick.probe_s:.2f} s "
        f"(budget {redundancy.probe_budget_s:g} s)"
    )
    if not tick.committed:
        context.log.info("the route record changed during the tick (a pin?); decision dropped")
    for event in tick.events:
        log = context.log.warning if event.critical else context.log.info
        log(event.describe())
    for event in tick.owed:
        context.log.info(f"emitted again, not found recorded: {event.id}: {event.describe()}")
    if tick.run_requests:
        context.log.info(
            f"catch-up owed: {len(tick.run_requests)} run(s) requested (a run key already "
            "launched is skipped)"
        )
    for result in tick.results.values():
        if not result.healthy or result.warning:
            context.log.info(f"{result.target}: {result.reason} {result.warning or ''}".strip())
    return dg.SensorResult(run_requests=tick.run_requests, asset_events=tick.observations)
