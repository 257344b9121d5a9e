"""The route's durable state, and its history, in the Dagster instance.

The live state (route, counters, pin) is one JSON value in the instance's key-value store, so it
lives wherever the instance lives (SQLite locally, Postgres in production) and survives any
process. Its history is a series of observations of the ``redundancy`` asset: one per health
tick (every probe's result, plotted in the UI) and one per route event (when, from, to, why,
automatic or manual, how long the outage lasted), which the alert sensor reads.
"""

import json
from collections.abc import Mapping, Sequence

import dagster as dg

from acode_dagster.failover import RouteEvent, RouteState
from acode_dagster.probes import ProbeResult
from acode_dagster.routing import Route

STATE_KEY = "acode/redundancy/state"
REDUNDANCY_KEY = dg.AssetKey("redundancy")
EVENT_FIELD = "event_json"


def load_state(instance: dg.DagsterInstance) -> RouteState:
    raw = instance.run_storage.get_cursor_values({STATE_KEY}).get(STATE_KEY)
    return RouteState.from_json(raw) if raw else RouteState()


def save_state(instance: dg.DagsterInstance, state: RouteState) -> None:
    instance.run_storage.set_cursor_values({STATE_KEY: state.to_json()})


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
        EVENT_FIELD: dg.MetadataValue.json(event.to_json()),
    }
    if event.outage_s is not None:
        metadata["outage_minutes"] = dg.MetadataValue.float(round(event.outage_s / 60, 2))
    return dg.AssetObservation(
        asset_key=REDUNDANCY_KEY, description=event.describe(), metadata=metadata
    )


def tick_observation(
    state: RouteState, results: Mapping[str, ProbeResult], events: Sequence[RouteEvent]
) -> dg.AssetObservation:
    """Every probe's figures as numbers the UI plots, plus the route after the tick."""
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
