"""The production instance (``deploy/dagster.yaml``: PostgreSQL storage) against the local
PostgreSQL: a run, the route's state and its history, read back by a fresh process, as after a
restart of the webserver and the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from acode_dagster import failover
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.redundancy.state import (
    event_observation,
    load_state,
    save_state,
)
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.loader import load_days
from acode_dagster.failover import Health, Observation, Policy, RouteState
from acode_dagster.routing import Route
from acode_dagster.settings import Settings
from acode_dagster.tables import PRODUCTS

DAY = date(2026, 8, 25)


def test_a_run_the_route_and_its_history_survive_a_restart_on_postgres(
    postgres_home: Path, env: dict[str, str], mariadb_pair: Any
) -> None:
    load_days(mariadb_pair.endpoint("primary", admin=True), [DAY], rows={PRODUCTS.name: 200})
    now = datetime.now(UTC)
    down = Observation(
        source=Health(primary=False, backup=True, primary_reason="MySQL unreachable"),
        bucket=Health(primary=True, backup=True),
    )
    with dg.DagsterInstance.get() as instance:
        assert "Postgres" in type(instance.run_storage).__name__
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        landed = dg.materialize(
            [next(a for a in bronze_assets if bronze_key(PRODUCTS) in a.keys)],
            partition_key=str(DAY),
            resources=build_resources(Settings.from_env()),
            instance=instance,
        )
        assert landed.success
        state: RouteState = load_state(instance)
        events = []
        for _ in range(2):
            state, found = failover.step(state, down, now, Policy())
            events += found
        save_state(instance, state)
        for event in events:
            instance.report_runless_asset_event(event_observation(event))
        assert load_state(instance).route == Route("backup", "primary")

    script = (
        "import dagster as dg\n"
        "from acode_dagster.defs.redundancy.state import load_state, recent_route_events\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    print(load_state(i).to_json())\n"
        "    print(';'.join(e.kind for e in recent_route_events(i)))\n"
        "    print(';'.join(r.dagster_run.run_id for r in i.get_run_records()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "DAGSTER_HOME": str(postgres_home)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert RouteState.from_json(out[0]) == state
    assert out[1] == "failover"
    assert out[2] == landed.run_id
