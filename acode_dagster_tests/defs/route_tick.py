"""One health tick run the way the sensor daemon runs it, in a process of its own that a test can
kill at a chosen point:

    python -m acode_dagster_tests.defs.route_tick [CRASH_AT]

It reads the Dagster instance at ``DAGSTER_HOME`` and the platform's settings from the
environment, and runs :func:`daemon_tick`: evaluate ``acode_health_sensor``, record its
observations, launch its run requests. ``CRASH_AT`` makes the process SIGKILL itself:

* ``before_commit``: the tick has probed and decided, and is about to write the route;
* ``after_commit``: the route and its outbox are committed, nothing is recorded yet (the worst
  moment: the route has moved and nobody was told);
* ``after_observations``: the daemon recorded the tick's observations, and launched no run.

Without a crash it prints ``TICK {json}`` (what was recorded and launched) and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from acode_dagster.defs.redundancy import sensors
from acode_dagster.defs.redundancy.sensors import HEALTH_SENSOR, acode_health_sensor, launched
from acode_dagster.defs.resources import build_resources
from acode_dagster.settings import Settings

CRASH_POINTS = ("before_commit", "after_commit", "after_observations")


@dataclass
class DaemonTick:
    events: list[str] = field(default_factory=list)
    """Ids of the route events recorded."""
    launched: list[str] = field(default_factory=list)
    """Run keys launched."""
    skipped: list[str] = field(default_factory=list)
    """Run keys asked again, skipped: the sensor had launched them."""


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def daemon_tick(
    instance: dg.DagsterInstance, resources: Mapping[str, Any], crash_at: str | None = None
) -> DaemonTick:
    """What the sensor daemon does with one tick (``dagster._daemon.sensor``): evaluate the
    sensor, record its asset events, then create a run per run request unless the sensor
    already launched a run with that run key. A launched run is only recorded (as starting), not
    executed: what matters here is that it was launched, and how often."""
    with dg.build_sensor_context(
        instance=instance, resources=resources, sensor_name=HEALTH_SENSOR
    ) as context:
        result = acode_health_sensor(context)
    assert isinstance(result, dg.SensorResult)
    tick = DaemonTick()
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
        assert isinstance(event, dg.AssetObservation)
        if "event_id" in event.metadata:
            tick.events.append(str(event.metadata["event_id"].value))
    if crash_at == "after_observations":
        die()
    for request in result.run_requests or []:
        assert request.run_key is not None
        if launched(instance, HEALTH_SENSOR, request.run_key):
            tick.skipped.append(request.run_key)
            continue
        tags = {
            **request.tags,
            RUN_KEY_TAG: request.run_key,
            SENSOR_NAME_TAG: HEALTH_SENSOR,
            "dagster/partition": str(request.partition_key),
        }
        instance.add_run(
            dg.DagsterRun(
                job_name="bronze_acode_job",
                run_id=str(uuid.uuid4()),
                tags=tags,
                status=dg.DagsterRunStatus.STARTING,
            )
        )
        tick.launched.append(request.run_key)
    return tick


def _crash_around_the_commit(crash_at: str) -> None:
    commit = sensors.compare_and_set  # type: ignore[attr-defined]

    def compare_and_set(instance: dg.DagsterInstance, before: str | None, after: str) -> bool:
        if crash_at == "before_commit":
            die()
        done = commit(instance, before, after)
        if done and crash_at == "after_commit":
            die()
        return done

    sensors.compare_and_set = compare_and_set  # type: ignore[attr-defined]


def main() -> int:
    crash_at = sys.argv[1] if len(sys.argv) > 1 else None
    if crash_at is not None and crash_at not in CRASH_POINTS:
        print(f"unknown crash point {crash_at!r}; one of {', '.join(CRASH_POINTS)}")
        return 2
    if crash_at in ("before_commit", "after_commit"):
        _crash_around_the_commit(crash_at)
    resources = build_resources(Settings.from_env())
    with dg.DagsterInstance.get() as instance:
        tick = daemon_tick(instance, resources, crash_at)
    print("TICK " + json.dumps(tick.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
