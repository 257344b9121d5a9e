"""The route's state and history on a Postgres-backed Dagster instance (the production storage),
read back by a fresh process, as after a daemon restart."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from acode_dagster import failover
from acode_dagster.defs.redundancy.state import (
    event_observation,
    load_state,
    recent_route_events,
    save_state,
)
from acode_dagster.failover import Health, Observation, Policy, RouteState
from acode_dagster.routing import Route

SERVER = "postgresql://postgres@127.0.0.1:5432"
DAGSTER_SERVER = SERVER.replace("postgresql://", "postgresql+psycopg2://")


@pytest.fixture
def postgres_home(tmp_path: Path) -> Iterator[Path]:
    """A Dagster home whose runs, events and key-value store live in a fresh Postgres database."""
    name = f"acode_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{SERVER}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dagster-postgres ships psycopg2.
        f"storage:\n  postgres:\n    postgres_url: {DAGSTER_SERVER}/{name}\n"
        "telemetry:\n  enabled: false\n"
    )
    try:
        yield home
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_the_route_and_its_history_survive_a_restart_on_postgres(postgres_home: Path) -> None:
    now = datetime.now(UTC)
    down = Observation(
        source=Health(primary=False, backup=True, primary_reason="MySQL unreachable"),
        bucket=Health(primary=True, backup=True),
    )
    with dg.DagsterInstance.from_config(str(postgres_home)) as instance:
        assert "Postgres" in type(instance.run_storage).__name__
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
    with dg.DagsterInstance.from_config(str(postgres_home)) as instance:
        assert [e.kind for e in recent_route_events(instance)] == ["failover"]
