"""The route's durable state, and its history, in the Dagster instance.

The live state (route, counters, pin) is one JSON value in the instance's key-value store, so it
lives wherever the instance lives (SQLite locally, Postgres in production) and survives any
process. The same value carries the health tick's outbox (:mod:`acode_dagster.outbox`): what a
committed route change still owes its history, alerts and catch-up; it is written with one
compare-and-set, a single conditional ``UPDATE`` of the store's row, atomic on every database
Dagster runs on. Its history is a series of observations of the ``redundancy`` asset: one per
health tick (every probe's result, plotted in the UI) and one per route event (when, from, to,
why, automatic or manual, how long the outage lasted, and the event's id), which the alert
sensor reads.
"""

import json
from collections.abc import Collection, Mapping, Sequence

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.legacy_storage import LegacyRunStorage
from dagster._core.storage.runs.schema import KeyValueStoreTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

from acode_dagster.failover import RouteEvent, RouteState
from acode_dagster.outbox import decode, encode
from acode_dagster.probes import ProbeResult
from acode_dagster.routing import Route

STATE_KEY = "acode/redundancy/state"
REDUNDANCY_KEY = dg.AssetKey("redundancy")
EVENT_FIELD = "event_json"
EVENT_ID_FIELD = "event_id"
_PAGE = 200
_SAVE_ATTEMPTS = 20


def load_state(instance: dg.DagsterInstance) -> RouteState:
    return decode(read_record(instance))[0]


def save_state(instance: dg.DagsterInstance, state: RouteState) -> None:
    """Store ``state`` (an operator's pin), keeping whatever the record's outbox still owes."""
    for _ in range(_SAVE_ATTEMPTS):
        before = read_record(instance)
        if compare_and_set(instance, before, encode(state, decode(before)[1])):
            return
    raise RuntimeError(
        f"the route record {STATE_KEY!r} changed {_SAVE_ATTEMPTS} times while it was being "
        "saved; try again"
    )


def read_record(instance: dg.DagsterInstance) -> str | None:
    """The stored route record (state and outbox), None when nothing was ever stored."""
    return instance.run_storage.get_cursor_values({STATE_KEY}).get(STATE_KEY)


def compare_and_set(instance: dg.DagsterInstance, before: str | None, after: str) -> bool:
    """Store ``after`` if the record is still ``before`` (None: absent), in one statement."""
    storage = _sql_storage(instance)
    if storage is None:
        # Not a SQL storage (none ships with Dagster): compare, then set, not atomically.
        if read_record(instance) != before:
            return False
        instance.run_storage.set_cursor_values({STATE_KEY: after})
        return True
    table = KeyValueStoreTable
    try:
        with storage.connect() as conn:
            if before is None:
                conn.execute(table.insert().values(key=STATE_KEY, value=after))
                return True
            done = conn.execute(
                table.update()
                .where(table.c.key == STATE_KEY, table.c.value == before)
                .values(value=after)
            )
            return bool(done.rowcount == 1)
    except sa.exc.IntegrityError:
        return False  # another writer created the record first


def _sql_storage(instance: dg.DagsterInstance) -> SqlRunStorage | None:
    storage = instance.run_storage
    if isinstance(storage, LegacyRunStorage):
        storage = storage._storage.run_storage  # the storage it wraps
    return storage if isinstance(storage, SqlRunStorage) else None


def newest_storage_id(instance: dg.DagsterInstance) -> int:
    """Storage id of the latest ``redundancy`` observation (0: none yet)."""
    page = instance.fetch_observations(REDUNDANCY_KEY, limit=1)
    return page.records[0].storage_id if page.records else 0


def recorded_event_ids(
    instance: dg.DagsterInstance, wanted: Collection[str], after_storage_id: int
) -> set[str]:
    """Those of the ``wanted`` event ids recorded in ``redundancy`` observations after the
    given storage id."""
    found: set[str] = set()
    mark = after_storage_id
    while len(found) < len(set(wanted)):
        events, new_mark = route_events_since(instance, mark, limit=_PAGE)
        found |= {event.id for _, event in events if event.id in wanted}
        if new_mark == mark:
            break
        mark = new_mark
    return found


def read_route(instance: dg.DagsterInstance) -> Route:
    """The route in force: what every run asks once, when it starts."""
    return load_state(instance).route


def event_observation(event: RouteEvent) -> dg.AssetObservation:
    metadata: dict[str, dg.MetadataValue] = {
        "event": dg.MetadataValue.text(event.kind),
        "parts": dg.MetadataValue.text(", ".join(event.parts)),
        "from": dg.MetadataValue.text(event.from_role or ""),
        "to": dg.MetadataValue.text(event.to_role or ""),
        "why": dg.MetadataValue.text(event.reason),
        "automatic": dg.MetadataValue.bool(event.automatic),
        "critical": dg.MetadataValue.bool(event.critical),
        EVENT_ID_FIELD: dg.MetadataValue.text(event.id),
        EVENT_FIELD: dg.MetadataValue.json(event.to_json()),
    }
    if event.outage_s is not None:
        metadata["outage_minutes"] = dg.MetadataValue.float(round(event.outage_s / 60, 2))
    return dg.AssetObservation(
        asset_key=REDUNDANCY_KEY, description=event.describe(), metadata=metadata
    )


def tick_observation(
    state: RouteState,
    results: Mapping[str, ProbeResult],
    events: Sequence[RouteEvent],
    probe_s: float | None = None,
) -> dg.AssetObservation:
    """Every probe's figures as numbers the UI plots, plus the route after the tick and how
    long the probe phase took (``probe_s``, all probes at once)."""
    metadata: dict[str, dg.MetadataValue] = {
        "route_source": dg.MetadataValue.text(state.route.source),
        "route_bucket": dg.MetadataValue.text(state.route.bucket),
        "route_version": dg.MetadataValue.int(state.version),
        "pinned": dg.MetadataValue.text(
            f"{state.pin.role} by {state.pin.by}: {state.pin.reason}" if state.pin else ""
        ),
        "events": dg.MetadataValue.int(len(events)),
        "probes": dg.MetadataValue.json({k: r.to_json() for k, r in results.items()}),
    }
    if probe_s is not None:
        metadata["probe_phase_ms"] = dg.MetadataValue.float(round(probe_s * 1000, 1))
    for target, result in results.items():
        metadata[f"{target}_healthy"] = dg.MetadataValue.int(int(result.healthy))
        metadata[f"{target}_latency_ms"] = dg.MetadataValue.float(round(result.latency_s * 1000, 1))
        behind = result.details.get("seconds_behind")
        if isinstance(behind, int | float):
            metadata[f"{target}_seconds_behind"] = dg.MetadataValue.float(float(behind))
    unhealthy = [t for t, r in results.items() if not r.healthy]
    summary = f"route {state.route.source}/{state.route.bucket}; " + (
        f"unhealthy: {', '.join(unhealthy)}" if unhealthy else "all healthy"
    )
    return dg.AssetObservation(asset_key=REDUNDANCY_KEY, description=summary, metadata=metadata)


def route_events_since(
    instance: dg.DagsterInstance, after_storage_id: int, limit: int = 100
) -> tuple[list[tuple[int, RouteEvent]], int]:
    """Route events recorded after ``after_storage_id``, oldest first, and the new mark."""
    page = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=REDUNDANCY_KEY, after_storage_id=after_storage_id or None),
        limit=limit,
        ascending=True,
    )
    found: list[tuple[int, RouteEvent]] = []
    mark = after_storage_id
    for record in page.records:
        mark = max(mark, record.storage_id)
        observation = record.asset_observation
        raw = observation.metadata.get(EVENT_FIELD) if observation else None
        if raw is not None:
            found.append((record.storage_id, RouteEvent.from_json(_json(raw.value))))
    return found, mark


def recent_route_events(instance: dg.DagsterInstance, limit: int = 5) -> list[RouteEvent]:
    """The latest route events, newest first (ticks without an event are skipped)."""
    found: list[RouteEvent] = []
    cursor = None
    while len(found) < limit:
        page = instance.fetch_observations(REDUNDANCY_KEY, limit=200, cursor=cursor)
        for record in page.records:
            observation = record.asset_observation
            raw = observation.metadata.get(EVENT_FIELD) if observation else None
            if raw is not None and len(found) < limit:
                found.append(RouteEvent.from_json(_json(raw.value)))
        if not page.has_more:
            break
        cursor = page.cursor
    return found


def _json(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else json.loads(str(value))
