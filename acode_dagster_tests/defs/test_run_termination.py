"""No silent hang, at the run's level: a run terminated mid-sync ends CANCELED and is told as
cancelled; a run past ACODE_RUN_MAX_RUNTIME_S is terminated and failed by run monitoring.

Real runs: the instance is the one `acode` writes (`local_instance_yaml`), a code server serves
the code location, the run launcher starts the run worker, and the termination takes Dagster's
own path (the launcher asks the code server, which interrupts the worker). The sync reads the
primary through a throttled proxy, so it is mid-stream when the run is stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType
from dagster._core.execution.plan.objects import ErrorSource
from dagster._core.test_utils import poll_for_finished_run
from dagster._core.workspace.context import WorkspaceProcessContext

from acode_dagster.bronze.store import LocalStore
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import acode_alert_sensor
from acode_dagster.demo.loader import load_days
from acode_dagster.localstack import LocalStack
from acode_dagster.runs import local_instance_yaml
from acode_dagster.settings import DEFAULT_RUN_MAX_RUNTIME_S, SETTINGS, Settings
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS
from acode_dagster_tests.support.alerting import LoopbackSlack
from acode_dagster_tests.support.launched import code_location, launch_partition, monitor_runs_once
from acode_dagster_tests.support.platform import wait_for
from acode_dagster_tests.support.source import platform_environ
from acode_dagster_tests.support.tcp_proxy import ProxyProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CANCEL_DAY, RUNTIME_DAY = date(2026, 11, 4), date(2026, 11, 5)
ROWS = 40_000
"""About 12 MB on the wire, read at THROTTLE: a sync of it takes 10 s, and the run is stopped
about a second into it."""
THROTTLE = 1_200_000
MAX_RUNTIME_S = 3
SMALL_BATCHES = {"resources": {"replicator": {"config": {"batch_rows": 2000}}}}
"""An interrupt lands between two batches (the reader holds the GIL while it waits for one):
batches of 2,000 rows arrive every ~0.5 s through the proxy, as 65,536-row ones do at the
speed of a real server."""


# --------------------------------------------------------------------------- configuration


def test_the_local_instance_fails_runs_past_the_max_runtime(tmp_path: Path) -> None:
    settings = Settings.from_env({"ACODE_HOME": str(tmp_path), "ACODE_RUN_MAX_RUNTIME_S": "90"})
    config = yaml.safe_load(local_instance_yaml(settings))
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["max_runtime_seconds"] == 90
    (tmp_path / "dagster.yaml").write_text(local_instance_yaml(settings))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 90
    default = Settings.from_env({"ACODE_HOME": str(tmp_path)})
    assert default.run_max_runtime_s == DEFAULT_RUN_MAX_RUNTIME_S == 4 * 3600


def test_production_sets_the_same_max_runtime_everywhere() -> None:
    """deploy/dagster.yaml, the chart's values and the settings ConfigMap agree (Dagster reads
    the limit from the instance's yaml as a plain number, not from the environment)."""
    deployed = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    config_map = next(
        doc
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / "external-secret.yaml").read_text())
        if doc
        and doc["kind"] == "ConfigMap"
        and doc["metadata"]["name"] == "acode-dagster-settings"
    )
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is True and deployed["run_monitoring"]["enabled"] is True
    assert (
        deployed["run_monitoring"]["max_runtime_seconds"]
        == monitoring["maxRuntimeSeconds"]
        == int(config_map["data"]["ACODE_RUN_MAX_RUNTIME_S"])
        == DEFAULT_RUN_MAX_RUNTIME_S
    )
    documented = {s.name for s in SETTINGS}
    for name in ("ACODE_MYSQL_CONNECT_TIMEOUT_S", "ACODE_MYSQL_READ_TIMEOUT_S"):
        assert name in documented and name in config_map["data"]


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("termination-pair"))
    try:
        stack.start()
        load_days(
            stack.endpoint("primary", admin=True),
            [CANCEL_DAY, RUNTIME_DAY],
            rows={FISCAL_LINES.name: ROWS, NFE_COMPLEMENTS.name: 0, PRODUCTS.name: 200},
        )
        yield stack
    finally:
        stack.destroy()


@pytest.fixture(scope="module")
def proxy(pair: LocalStack) -> Iterator[ProxyProcess]:
    primary = pair.endpoint("primary")
    running = ProxyProcess(primary.host, primary.port)
    try:
        running.throttle(THROTTLE)
        yield running
    finally:
        running.close()


class Launched:
    def __init__(self, context: WorkspaceProcessContext, bronze: Path, pair: LocalStack) -> None:
        self.context, self.instance = context, context.instance
        self.bronze, self.pair = LocalStore(bronze), pair


@pytest.fixture(scope="module")
def launched(
    pair: LocalStack, proxy: ProxyProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launched]:
    """The platform on the pair, its primary read through the proxy, in an instance configured
    by `local_instance_yaml` with a max runtime of 3 s (only run monitoring acts on it, and only
    when a test calls it), and its code location served by a code server."""
    base = tmp_path_factory.mktemp("launched")
    primary = pair.endpoint("primary")
    with pytest.MonkeyPatch.context() as env:
        for name, value in platform_environ(pair, base / "home", base / "bronze").items():
            env.setenv(name, value)
        env.setenv(
            "ACODE_MYSQL_PRIMARY_URL",
            f"mysql://{primary.user}@127.0.0.1:{proxy.port}/{primary.database}",
        )
        env.setenv("ACODE_RUN_MAX_RUNTIME_S", str(MAX_RUNTIME_S))
        home = base / "dagster"
        home.mkdir()
        (home / "dagster.yaml").write_text(local_instance_yaml(Settings.from_env()))
        env.setenv("DAGSTER_HOME", str(home))
        with (
            dg.DagsterInstance.from_config(str(home)) as instance,
            code_location(instance) as context,
        ):
            yield Launched(context, base / "bronze", pair)


class AlertSensor:
    """The real alert sensor, ticked by hand, its cursor carried as the daemon carries it."""

    def __init__(self, instance: dg.DagsterInstance, slack: LoopbackSlack) -> None:
        self.instance = instance
        self.cursor: str | None = None
        self.alerting = AlertingResource(
            slack_token=slack.token,
            slack_api_url=slack.base_url,
            ui_url="http://dagster.example",
        )
        self.tick()  # alerting starts before the run

    def tick(self) -> None:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"alerting": self.alerting}
        )
        acode_alert_sensor(context)
        self.cursor = context.cursor


def start_streaming(launched: Launched, proxy: ProxyProcess, day: date) -> tuple[str, int]:
    """Launch the run of ``day`` and wait until its sync is reading; (run id, bytes read)."""
    before = proxy.status().downstream_bytes
    run_id = launch_partition(launched.context, FISCAL_LINES, day, run_config=SMALL_BATCHES)
    wait_for(
        lambda: proxy.status().downstream_bytes > before + 500_000,
        "the sync to be reading the source",
        timeout=120,
    )
    run = launched.instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.STARTED
    return run_id, proxy.status().downstream_bytes


def assert_stopped_clean(launched: Launched, proxy: ProxyProcess, run_id: str, day: date) -> None:
    """The read stopped, the lease was released, nothing was published, and the step ended on
    the interrupt (not on a MySQL error)."""
    time.sleep(0.5)  # what the proxy had in hand when the connection was cut still goes
    read = proxy.status().downstream_bytes
    time.sleep(1)
    assert proxy.status().downstream_bytes == read, "the source is still being read"
    assert read < 0.8 * ROWS * 300, "the sync ran to its end"
    assert launched.bronze.lease_records(FISCAL_LINES, day).read() is None
    assert launched.bronze.manifest(FISCAL_LINES, day) is None
    failures = launched.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    assert failures, "the sync step did not record how it ended"
    for entry in failures:
        data = entry.dagster_event.step_failure_data if entry.dagster_event else None
        assert data is not None and data.error_source == ErrorSource.INTERRUPT, data
        assert "MySQL" not in (data.error.to_string() if data.error else "")
    text = "\n".join(e.user_message for e in launched.instance.all_logs(run_id))
    assert "SourceError" not in text and "unreachable" not in text


def test_a_run_terminated_mid_sync_ends_cancelled_and_is_told_as_cancelled(
    launched: Launched, proxy: ProxyProcess, slack_server: LoopbackSlack
) -> None:
    alerts = AlertSensor(launched.instance, slack_server)
    run_id, _ = start_streaming(launched, proxy, CANCEL_DAY)
    asked = time.monotonic()
    assert launched.instance.run_launcher.terminate(run_id)  # what the UI's Terminate calls
    run = poll_for_finished_run(launched.instance, run_id, timeout=60)
    took = time.monotonic() - asked
    assert run.status == dg.DagsterRunStatus.CANCELED, run.status
    # The interrupt lands at the next batch, half a second away here; the rest is the worker
    # reporting and exiting on a loaded machine.
    assert took < 20, f"the run took {took:.1f} s to stop"
    assert_stopped_clean(launched, proxy, run_id, CANCEL_DAY)

    alerts.tick()
    (message,) = slack_server.messages
    text = str(message)
    assert f"bronze run {run_id[:8]} of bronze_acode_job for {CANCEL_DAY} was cancelled" in text
    assert "bronze_acode__farmarcas_si_analitico_diario" in text
    assert "MySQL" not in text and "unreachable" not in text and "failed" not in text


def test_a_run_past_its_max_runtime_is_failed_by_run_monitoring_and_told_so(
    launched: Launched, proxy: ProxyProcess, slack_server: LoopbackSlack
) -> None:
    alerts = AlertSensor(launched.instance, slack_server)
    assert launched.instance.run_monitoring_max_runtime_seconds == MAX_RUNTIME_S
    run_id, _ = start_streaming(launched, proxy, RUNTIME_DAY)
    record = launched.instance.get_run_record_by_id(run_id)
    assert record is not None and record.start_time is not None
    over_at = record.start_time + MAX_RUNTIME_S + 0.5
    wait_for(lambda: time.time() > over_at, "the max runtime to pass")
    monitor_runs_once(launched.context)  # what the daemon does every poll interval
    run = poll_for_finished_run(launched.instance, run_id, timeout=60)
    assert run.status == dg.DagsterRunStatus.FAILURE, run.status
    failure = launched.instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert any(f"Exceeded maximum runtime of {MAX_RUNTIME_S} seconds" in e.message for e in failure)
    wait_for(lambda: _step_ended(launched.instance, run_id), "the sync step to end", 60)
    assert_stopped_clean(launched, proxy, run_id, RUNTIME_DAY)

    alerts.tick()
    (message,) = slack_server.messages
    text = str(message)
    assert f"bronze run {run_id[:8]} of bronze_acode_job for {RUNTIME_DAY} failed" in text
    assert f"Exceeded maximum runtime of {MAX_RUNTIME_S} seconds" in text
    assert "interrupted while bronze_acode__farmarcas_si_analitico_diario ran" in text
    assert "MySQL" not in text and "unreachable" not in text


def _step_ended(instance: dg.DagsterInstance, run_id: str) -> bool:
    """A run marked failed by monitoring is finished at once; its worker still has to take the
    interrupt, which ends the sync step."""
    return bool(instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE))
