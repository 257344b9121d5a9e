"""Metrics out from a real run: a UDP listener as the Datadog agent and moto's CloudWatch over
HTTP receive a bronze sync's figures and checks, and the sensors' probes, route, freshness and
alert figures; with the listener gone and CloudWatch's endpoint dead, the run still succeeds."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import dagster as dg
import pytest

from acode_dagster.defs.alerts.sensors import acode_alert_sensor
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.bronze.sensors import acode_freshness_sensor
from acode_dagster.defs.redundancy.replica import CHECK_NAME, emit_window_metrics
from acode_dagster.defs.redundancy.sensors import acode_health_sensor, route_changes
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.loader import load_days
from acode_dagster.failover import RouteEvent
from acode_dagster.observability.metrics import Metrics
from acode_dagster.settings import Settings
from acode_dagster.source.checksum import WindowCheck
from acode_dagster.tables import FISCAL_LINES
from acode_dagster_tests.support.metrics import Recorder
from acode_dagster_tests.support.s3 import MotoServer, free_port

DAY = date(2026, 8, 3)
ROWS = 400
PARTITION_CHECKS = {"null_share", "volume", "reconciliation", "schema", "unique_key", "mirror"}


def statsd_lines(
    sock: socket.socket, done: Callable[[list[str]], bool], timeout: float = 20
) -> list[str]:
    """Lines received until ``done`` says they are all there (polled, with a deadline)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not done(lines):
        assert time.monotonic() < deadline, f"only received {lines}"
        try:
            lines += sock.recv(65536).decode().split("\n")
        except TimeoutError:
            continue
    return lines


def names(*wanted: str, checks: int = 0) -> Callable[[list[str]], bool]:
    """Done when each ``wanted`` metric and ``checks`` check outcomes have arrived."""

    def done(lines: list[str]) -> bool:
        seen = [line.split(":", 1)[0] for line in lines]
        return set(wanted) <= set(seen) and seen.count("acode.check.outcome") >= checks

    return done


def tags_of(line: str) -> dict[str, str]:
    _, _, tags = line.partition("|#")
    return dict(tag.split(":", 1) for tag in tags.split(",") if ":" in tag)


def materialize(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    fiscal = [a for a in bronze_assets if bronze_key(FISCAL_LINES) in a.keys]
    return dg.materialize(
        fiscal,
        partition_key=str(DAY),
        resources=build_resources(Settings.from_env()),
        instance=instance,
        raise_on_error=False,
    )


def in_cloudwatch(url: str, namespace: str, partition: str) -> None:
    """The figures CloudWatch's API gives back: the sync's and the checks' with their
    dimensions, the sensors', and the value of one."""
    cloudwatch = boto3.session.Session().client(
        "cloudwatch", endpoint_url=url, region_name="us-east-1"
    )
    listed = cloudwatch.list_metrics(Namespace=namespace)["Metrics"]
    dimensions = {
        (m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
        for m in listed
    }
    sync_dims = (
        ("bucket", "primary"),
        ("env", "test"),
        ("outcome", "published"),
        ("partition", partition),
        ("replicator", "embedded"),
        ("side", "primary"),
        ("table", FISCAL_LINES.name),
    )
    assert ("acode.sync.seconds", sync_dims) in dimensions
    assert (
        "acode.check.outcome",
        (
            ("check", "mirror"),
            ("env", "test"),
            ("partition", partition),
            ("severity", "warn"),
            ("table", FISCAL_LINES.name),
        ),
    ) in dimensions
    assert {"acode.probe.latency_ms", "acode.alert.pending"} <= {m for m, _ in dimensions}
    now = datetime.now(UTC)
    statistics = cloudwatch.get_metric_statistics(
        Namespace=namespace,
        MetricName="acode.sync.rows",
        Dimensions=[{"Name": k, "Value": v} for k, v in sync_dims],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum"],
    )
    assert [p["Maximum"] for p in statistics["Datapoints"]] == [ROWS]


def test_a_real_run_and_the_sensors_send_their_metrics_and_survive_dead_endpoints(
    env: dict[str, str],
    mariadb_pair: Any,
    s3_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_days(mariadb_pair.endpoint("primary", admin=True), [DAY], rows={FISCAL_LINES.name: ROWS})
    mariadb_pair.wait_replica_caught_up()
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    namespace = f"ACODE/Test{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ACODE_STATSD_ADDRESS", f"127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("ACODE_CLOUDWATCH_NAMESPACE", namespace)
    monkeypatch.setenv("ACODE_CLOUDWATCH_ENDPOINT_URL", s3_server.url)
    monkeypatch.setenv("ACODE_METRICS_TAGS", "env:test")
    partition = str(DAY)

    with dg.instance_for_test() as instance:
        result = materialize(instance)
        assert result.success
        lines = statsd_lines(
            listener, names("acode.sync.seconds", "acode.sync.rows", checks=len(PARTITION_CHECKS))
        )
        rows = [line for line in lines if line.startswith("acode.sync.rows:")]
        assert rows == [
            f"acode.sync.rows:{ROWS}|g|#env:test,table:{FISCAL_LINES.name},"
            f"partition:{partition},side:primary,bucket:primary,replicator:embedded,"
            "outcome:published"
        ]
        checks = {
            tags_of(line)["check"]: (line.split("|")[0], tags_of(line))
            for line in lines
            if line.startswith("acode.check.outcome:")
        }
        assert set(checks) == PARTITION_CHECKS
        assert all(value == "acode.check.outcome:1" for value, _ in checks.values())
        assert checks["null_share"][1] == {
            "env": "test",
            "table": FISCAL_LINES.name,
            "partition": partition,
            "check": "null_share",
            "severity": "error",
        }
        assert {"acode.sync.value", "acode.sync.bytes", "acode.sync.rows_per_second"} <= {
            line.split(":", 1)[0] for line in lines
        }

        # The sensors, ticked as the daemon ticks them, with the resources it gives them.
        resources = build_resources(Settings.from_env())
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            acode_health_sensor(context)
        with dg.build_sensor_context(
            instance=instance, resources={"metrics": resources["metrics"]}
        ) as context:
            acode_freshness_sensor(context)
        acode_alert_sensor(
            dg.build_sensor_context(
                instance=instance, resources={"alerting": resources["alerting"]}
            )
        )
        lines = statsd_lines(
            listener,
            names(
                "acode.probe.healthy",
                "acode.replica.lag_seconds",
                "acode.route.source_is_backup",
                "acode.freshness.age_hours",
                "acode.alert.pending",
            ),
        )
        probes = {
            tags_of(line)["target"]: (line.split("|")[0], tags_of(line))
            for line in lines
            if line.startswith("acode.probe.healthy:")
        }
        assert probes["mysql_backup"] == (
            "acode.probe.healthy:1",
            {"env": "test", "target": "mysql_backup", "kind": "mysql", "side": "backup"},
        )
        assert {"mysql_primary", "bucket_primary", "bucket_backup"} <= set(probes)
        assert "acode.route.source_is_backup:0|g|#env:test" in lines
        assert any(
            line.startswith("acode.freshness.age_hours:")
            and tags_of(line)["table"] == FISCAL_LINES.name
            for line in lines
        )

        in_cloudwatch(s3_server.url, namespace, partition)

        # The agent gone, CloudWatch's endpoint dead: the run succeeds all the same, and says
        # once that its metrics were not sent.
        listener.close()
        monkeypatch.setenv("ACODE_CLOUDWATCH_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        again = materialize(instance)
        assert again.success
        warnings = [
            entry.user_message
            for entry in instance.all_logs(again.run_id)
            if entry.dagster_event is None and "metrics not sent" in entry.user_message
        ]
        assert warnings and all("CloudWatch" in w for w in warnings)
        assert len(warnings) == 2  # one per flush (the sync's, the mirror's), not per metric


def test_route_changes_name_each_part_moved() -> None:
    at = datetime(2026, 8, 3, 12, tzinfo=UTC)
    events = [
        RouteEvent("failover", "source", ("source",), "primary", "backup", at, "down", True, True),
        RouteEvent("both_down", "bucket", ("bucket",), "primary", "primary", at, "x", True, True),
        RouteEvent(
            "pinned", None, ("source", "bucket"), "primary", "backup", at, "maint", False, False
        ),
    ]
    assert route_changes(events) == [
        ("source", "failover", "backup"),
        ("source", "pinned", "backup"),
        ("bucket", "pinned", "backup"),
    ]


def test_the_replica_check_windows_become_check_outcomes_and_the_lag() -> None:
    metrics = Metrics([recorder := Recorder()], strict=True)
    emit_window_metrics(
        [
            WindowCheck(FISCAL_LINES.name, DAY, "equal", lag_s=3.0),
            WindowCheck(FISCAL_LINES.name, DAY + timedelta(days=1), "differs"),
            WindowCheck("farmarcas_si_analitico_diario_produtos", None, "lagging", lag_s=9.0),
        ],
        metrics,
    )
    assert [(dict(p.tags), p.value) for p in recorder.points] == [
        (
            {"table": FISCAL_LINES.name, "partition": "2026-08-03", "check": CHECK_NAME}
            | {"severity": "warn"},
            1,
        ),
        (
            {"table": FISCAL_LINES.name, "partition": "2026-08-04", "check": CHECK_NAME}
            | {"severity": "error"},
            0,
        ),
        (
            {"table": "farmarcas_si_analitico_diario_produtos", "check": CHECK_NAME}
            | {"severity": "warn"},
            0,
        ),
        ({"side": "backup"}, 3.0),
    ]
