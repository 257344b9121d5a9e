"""The route never moves silently, and a hung probe costs a tick its budget, not Dagster's 60 s.

Real parts: a private MariaDB pair whose primary is SIGKILLed, health ticks in a process of
their own (``route_tick.py``) SIGKILLed at the worst moments, an on-disk Dagster instance they
share with the test, the real alert sensor and a loopback Slack; TCP listeners that accept and
then say nothing, or dribble a byte now and then, for hung servers; SQLite and the local
PostgreSQL for the route record's compare-and-set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from acode_dagster.defs.redundancy.sensors import (
    HEALTH_SENSOR,
    acode_health_sensor,
    health_tick,
)
from acode_dagster.defs.redundancy.state import (
    compare_and_set,
    event_observation,
    load_state,
    read_record,
    route_events_since,
    save_state,
)
from acode_dagster.defs.resources import build_resources
from acode_dagster.failover import Pin, RouteEvent, RouteState, pin
from acode_dagster.incidents import on_route_event
from acode_dagster.localstack import LocalStack
from acode_dagster.outbox import Outbox, decode, encode
from acode_dagster.routing import Route
from acode_dagster.settings import Settings
from acode_dagster.tables import SOURCE_TIMEZONE
from acode_dagster_tests.defs.route_tick import CRASH_POINTS, daemon_tick
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack
from acode_dagster_tests.support.platform import Platform, started_platform

REPO = Path(__file__).resolve().parents[2]
CATCHUP_DAYS = 2
CHILD_TIMEOUT_S = 120


@pytest.fixture
def platform(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mariadb_pair_factory: Callable[..., LocalStack],
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> Iterator[Platform]:
    """A private pair (no rows: nothing here syncs) and an on-disk instance; one failed probe
    moves the route, so one tick decides a failover."""
    settings = {
        "ACODE_PROBE_TIMEOUT_S": "1",
        "ACODE_FAILOVER_AFTER": "1",
        "ACODE_FAILBACK_AFTER": "3",
        "ACODE_FAILBACK_DWELL_S": "0",
        "ACODE_CATCHUP_DAYS": str(CATCHUP_DAYS),
    }
    with started_platform(
        tmp_path,
        monkeypatch,
        mariadb_pair_factory,
        slack_server,
        pagerduty_server,
        settings=settings,
    ) as started:
        yield started


def route_events(instance: dg.DagsterInstance) -> list[RouteEvent]:
    return [event for _, event in route_events_since(instance, 0, limit=1000)[0]]


def catch_up_run_keys(instance: dg.DagsterInstance) -> list[str]:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={SENSOR_NAME_TAG: HEALTH_SENSOR}))
    return sorted(run.tags[RUN_KEY_TAG] for run in runs)


def expected_catch_up(version: int) -> list[str]:
    today = datetime.now(UTC).astimezone(SOURCE_TIMEZONE).date()
    days = [today - timedelta(days=n) for n in range(CATCHUP_DAYS, 0, -1)]
    return [f"catch-up/v{version}/{day.isoformat()}" for day in days]


def slack_titles(slack: LoopbackSlack) -> list[str]:
    return [str(m["text"]).splitlines()[0] for m in slack.messages]


def escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------- killed ticks


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_tick_killed_while_failing_over_still_tells_once_and_catches_up_once(
    platform: Platform, slack_server: LoopbackSlack, crash_at: str
) -> None:
    """The health tick runs in a process of its own and SIGKILLs itself at ``crash_at``;
    ``after_commit`` is the worst moment: the route has moved and nothing was told."""
    instance = platform.instance
    platform.stack.kill("primary")
    child = subprocess.run(
        [sys.executable, "-m", "acode_dagster_tests.defs.route_tick", crash_at],
        cwd=REPO,
        env={**os.environ, "DAGSTER_HOME": instance.root_directory},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr[-4000:]

    # Where it died.
    state, owed = decode(read_record(instance))
    if crash_at == "before_commit":
        assert state.route == Route() and owed.empty
        assert route_events(instance) == []
    elif crash_at == "after_commit":
        assert state.route == Route("backup", "primary")
        assert [e.kind for e in owed.events] == ["failover"] and owed.catch_up == 1
        assert route_events(instance) == [], "killed before anything was recorded"
    else:
        assert [e.kind for e in route_events(instance)] == ["failover"]
    assert catch_up_run_keys(instance) == []

    # The daemon goes on: the next ticks, then the alert sensor.
    daemon_tick(instance, platform.resources)
    last = daemon_tick(instance, platform.resources)
    platform.tick_alerts()
    platform.tick_alerts()

    assert load_state(instance).route == Route("backup", "primary")
    events = route_events(instance)
    assert [(e.kind, e.from_role, e.to_role) for e in events] == [("failover", "primary", "backup")]
    assert catch_up_run_keys(instance) == expected_catch_up(1), "each run once"
    assert last.events == [] and last.launched == []
    assert decode(read_record(instance))[1].empty, "nothing owed any more"
    titles = slack_titles(slack_server)
    assert len(titles) == 1 and titles[0].endswith(escaped(events[0].describe())), titles


def test_an_event_recorded_twice_is_still_one_alert(
    platform: Platform, slack_server: LoopbackSlack
) -> None:
    event = RouteEvent(
        kind="failover",
        part="source",
        parts=("source",),
        from_role="primary",
        to_role="backup",
        at=datetime.now(UTC),
        reason="after 2 failed probes",
        automatic=True,
        critical=False,
    )
    assert on_route_event(event, 1, None) == on_route_event(event, 2, None)
    for _ in range(2):
        platform.instance.report_runless_asset_event(event_observation(event))
    platform.tick_alerts()
    platform.tick_alerts()
    assert len(slack_titles(slack_server)) == 1, slack_titles(slack_server)


# ---------------------------------------------------------------------- hung servers


class Listener:
    """A TCP server that accepts and then says nothing (``silent``), or dribbles one byte of
    a never-ending MySQL packet every 0.2 s (``dribble``: alive, never done, so every read is
    within any socket timeout and only a deadline on the whole probe stops it)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self.accepted = threading.Event()
        self._closed = threading.Event()
        self._clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.append(client)
            self.accepted.set()
            if self.mode == "dribble":
                threading.Thread(target=self._dribble, args=(client,), daemon=True).start()

    def _dribble(self, client: socket.socket) -> None:
        packet = b"\xff\xff\xff\x00" + b"\x0a" * 10_000
        for byte in packet:
            if self._closed.wait(0.2):
                return
            try:
                client.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self._closed.set()
        for sock in (self._server, *self._clients):
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def listeners() -> Iterator[Callable[[str], Listener]]:
    made: list[Listener] = []

    def make(mode: str) -> Listener:
        made.append(Listener(mode))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def test_a_hung_probe_costs_the_tick_its_budget_and_the_others_stand(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    listeners: Callable[[str], Listener],
) -> None:
    """The primary MySQL server dribbles (its probe would wait twice its 1.5 s timeout), the
    Airbyte API accepts and says nothing; MySQL backup and the buckets are fine."""
    mysql, airbyte = listeners("dribble"), listeners("silent")
    budget = 2.0
    for name, value in {
        "ACODE_MYSQL_PRIMARY_URL": f"mysql://acode@127.0.0.1:{mysql.port}/acode_farmarcas",
        "ACODE_BRONZE_BACKUP_URL": str(tmp_path / "bronze-backup"),
        "ACODE_PROBE_TIMEOUT_S": "1.5",
        "ACODE_PROBE_BUDGET_S": str(budget),
        "ACODE_REPLICATOR": "airbyte",
        "AIRBYTE_REST_API_BASE_URL": f"http://127.0.0.1:{airbyte.port}/api/public/v1",
        "AIRBYTE_CONFIGURATION_API_BASE_URL": f"http://127.0.0.1:{airbyte.port}/api/v1",
        "AIRBYTE_WORKSPACE_ID": "workspace",
        "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID": "connection-primary",
        "ACODE_AIRBYTE_BACKUP_CONNECTION_ID": "connection-backup",
    }.items():
        monkeypatch.setenv(name, value)
    resources = build_resources(Settings.from_env())
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, resources=resources) as context,
    ):
        started = time.monotonic()
        result = acode_health_sensor(context)
        elapsed = time.monotonic() - started
    assert isinstance(result, dg.SensorResult) and result.asset_events
    tick = result.asset_events[0]
    assert isinstance(tick, dg.AssetObservation)
    probe_s = float(str(tick.metadata["probe_phase_ms"].value)) / 1000
    probes: dict[str, Any] = tick.metadata["probes"].value  # type: ignore[assignment]

    assert budget - 0.1 <= probe_s <= budget + 0.3, probe_s
    assert elapsed < budget + 3.0, f"the tick took {elapsed:.2f} s"
    assert mysql.accepted.is_set() and airbyte.accepted.is_set()
    hung = probes["mysql_primary"]
    assert not hung["healthy"] and "ran out of the tick's probe budget" in hung["reason"], hung
    for target in ("airbyte_primary", "airbyte_backup"):
        assert not probes[target]["healthy"], probes[target]
    for target in ("mysql_backup", "bucket_primary", "bucket_backup"):
        assert probes[target]["healthy"], probes[target]
        assert probes[target]["latency_s"] < budget


def test_a_pin_written_while_the_tick_probes_wins(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    listeners: Callable[[str], Listener],
) -> None:
    """The tick decides a failover (its primary says nothing for the 1 s probe timeout); an
    operator pins the route to the primary meanwhile: the pin stays, nothing fails over."""
    silent = listeners("silent")
    for name, value in {
        "ACODE_MYSQL_PRIMARY_URL": f"mysql://acode@127.0.0.1:{silent.port}/acode_farmarcas",
        "ACODE_BRONZE_BACKUP_URL": str(tmp_path / "bronze-backup"),
        "ACODE_PROBE_TIMEOUT_S": "1",
        "ACODE_FAILOVER_AFTER": "1",
    }.items():
        monkeypatch.setenv(name, value)
    resources = build_resources(Settings.from_env())
    ticks: list[Any] = []
    with dg.instance_for_test() as instance, dg.build_resources(resources) as ready:

        def run() -> None:
            ticks.append(health_tick(instance, ready.acode_sources, ready.bronze, ready.redundancy))

        ticker = threading.Thread(target=run)
        ticker.start()
        assert silent.accepted.wait(30), "the tick never probed the primary"
        pinned, _ = pin(
            load_state(instance), Pin("primary", "maintenance", "alice", datetime.now(UTC))
        )
        save_state(instance, pinned)
        ticker.join(30)
        (tick,) = ticks
        assert not tick.committed and tick.events == []
        assert not tick.results["mysql_primary"].healthy
        assert load_state(instance) == pinned
        assert tick.state == pinned
        assert [o for o in tick.observations if "event_id" in o.metadata] == []
        # And the pin holds on the next tick.
        again = health_tick(instance, ready.acode_sources, ready.bronze, ready.redundancy)
        assert again.committed and again.events == [] and again.state.route == Route()


# ---------------------------------------------------------------- the compare-and-set of the record


@pytest.fixture(params=["sqlite", "postgres"])
def instance(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    if request.param == "sqlite":
        home = tmp_path / "dagster"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as made:
            yield made
        return
    request.getfixturevalue("postgres_home")  # DAGSTER_HOME on a fresh Postgres database
    with dg.DagsterInstance.get() as made:
        yield made


def test_the_route_record_is_written_by_compare_and_set(instance: dg.DagsterInstance) -> None:
    assert read_record(instance) is None and load_state(instance) == RouteState()
    first = encode(RouteState(), Outbox())
    assert compare_and_set(instance, None, first)
    assert not compare_and_set(instance, None, "{}"), "created already"
    event = RouteEvent(
        "failover", "source", ("source",), "primary", "backup", datetime.now(UTC), "x", True, False
    )
    owing = encode(RouteState(version=1), Outbox((event,), catch_up=1, mark=3))
    assert not compare_and_set(instance, "stale", owing)
    assert compare_and_set(instance, first, owing)
    assert read_record(instance) == owing

    # An operator's pin keeps what the record owes.
    pinned, _ = pin(RouteState(version=1), Pin("backup", "drill", "bob", datetime.now(UTC)))
    save_state(instance, pinned)
    assert decode(read_record(instance)) == (pinned, Outbox((event,), catch_up=1, mark=3))

    # Writers racing from the same record: exactly one wins.
    before = read_record(instance)
    wins: list[bool] = []
    barrier = threading.Barrier(4)

    def race(number: int) -> None:
        barrier.wait()
        wins.append(
            compare_and_set(instance, before, encode(RouteState(version=10 + number), Outbox()))
        )

    racers = [threading.Thread(target=race, args=(n,)) for n in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(wins) == [False, False, False, True]
