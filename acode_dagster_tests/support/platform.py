"""The platform on a private MariaDB pair, driven by hand: the real sensors ticked the way the
daemon ticks them (their observations persisted, their cursors carried), real runs in process.

Shared by the redundancy tests and ``bench/failover_drill.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import acode_alert_sensor
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.bronze.repair import bronze_repair_job
from acode_dagster.defs.redundancy.sensors import acode_health_sensor, run_probes
from acode_dagster.defs.redundancy.state import load_state
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.loader import load_days
from acode_dagster.localstack import LocalStack
from acode_dagster.routing import Route
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES


class Platform:
    """One private MariaDB pair, one Dagster instance, the real sensors ticked by hand."""

    def __init__(
        self, stack: LocalStack, instance: dg.DagsterInstance, slack: Any = None, pd: Any = None
    ) -> None:
        self.stack, self.instance = stack, instance
        self.resources = build_resources(Settings.from_env())
        self.alert_cursor: str | None = None
        self.run_keys: set[str] = set()
        """Run keys the health sensor asked for: asked again, the daemon skips them."""
        self.alerting = AlertingResource(
            slack_token=slack.token if slack else None,
            slack_api_url=slack.base_url if slack else "https://slack.com/api/",
            pagerduty_routing_key=pd.routing_key if pd else None,
            pagerduty_url=pd.base_url if pd else "https://events.pagerduty.com",
        )
        self.tick_alerts()  # alerting starts before anything happens

    def tick(self, times: int = 1) -> list[dg.RunRequest]:
        """Health sensor ticks, persisted as the daemon persists them; a run key already asked
        for is left out, as the daemon skips a run key its sensor already launched."""
        requests: list[dg.RunRequest] = []
        for _ in range(times):
            with dg.build_sensor_context(
                instance=self.instance, resources=self.resources
            ) as context:
                result = acode_health_sensor(context)
            assert isinstance(result, dg.SensorResult)
            for event in result.asset_events or []:
                self.instance.report_runless_asset_event(event)
            for request in result.run_requests or []:
                if request.run_key is None or request.run_key not in self.run_keys:
                    requests.append(request)
                if request.run_key is not None:
                    self.run_keys.add(request.run_key)
        return requests

    def tick_alerts(self) -> None:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.alert_cursor, resources={"alerting": self.alerting}
        )
        acode_alert_sensor(context)
        self.alert_cursor = context.cursor

    @property
    def route(self) -> Route:
        return load_state(self.instance).route

    def materialize(
        self,
        day: date | str,
        keys: list[dg.AssetKey] | None = None,
        tags: dict[str, str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        wanted = [a for a in bronze_assets if keys is None or set(a.keys) & set(keys)]
        return dg.materialize(
            wanted,
            partition_key=str(day),
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
            tags=tags,
        )

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """Launch a run the health sensor asked for, tagged as the daemon tags it (so the
        sensor's outbox sees it launched)."""
        tags = {**request.tags, SENSOR_NAME_TAG: "acode_health_sensor"}
        if request.run_key:
            tags[RUN_KEY_TAG] = request.run_key
        if request.job_name == bronze_repair_job.name:
            return bronze_repair_job.execute_in_process(
                run_config=request.run_config,
                resources=self.resources,
                instance=self.instance,
                tags=tags,
                raise_on_error=False,
            )
        assert request.partition_key is not None
        return self.materialize(
            request.partition_key, list(request.asset_selection or []), tags=tags
        )

    def healthy(self, target: str) -> bool:
        with dg.build_resources(self.resources) as ready:
            return run_probes(
                ready.acode_sources, ready.bronze, ready.redundancy, ready.replicator
            )[target].healthy


@contextmanager
def started_platform(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_stack: Callable[[Path], LocalStack],
    slack: Any,
    pd: Any,
    *,
    settings: Mapping[str, str],
    days: Sequence[date] = (),
    rows: Mapping[str, int] | None = None,
) -> Iterator[Platform]:
    """A private MariaDB pair under ``tmp_path`` (with ``days`` of demo rows, replicated), two
    bronze folders, an on-disk Dagster instance, and ``settings`` on top of those paths."""
    home = tmp_path / "home"
    paths = {
        "ACODE_HOME": str(home),
        "ACODE_BRONZE_URL": str(tmp_path / "bronze"),
        "ACODE_BRONZE_BACKUP_URL": str(tmp_path / "bronze-backup"),
    }
    for name, value in {**paths, **settings}.items():
        monkeypatch.setenv(name, value)
    stack = make_stack(home / "stack")
    stack.start()
    if days:
        load_days(stack.endpoint("primary", admin=True), days, rows=rows)
        stack.wait_replica_caught_up()
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        yield Platform(stack, instance, slack, pd)


def metadata_of(result: dg.ExecuteInProcessResult, table: Any = FISCAL_LINES) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.materialization.asset_key == bronze_key(table):
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{table.name} did not materialize")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
