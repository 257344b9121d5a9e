"""``acode_alert_sensor`` against a real instance and loopback Slack and PagerDuty servers."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType

from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import acode_alert_sensor
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.resources import build_resources
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, PRODUCTS
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack


def alerting_for(slack: LoopbackSlack, pagerduty: LoopbackPagerDuty) -> AlertingResource:
    return AlertingResource(
        slack_token=slack.token,
        slack_api_url=slack.base_url,
        pagerduty_routing_key=pagerduty.routing_key,
        pagerduty_url=pagerduty.base_url,
        ui_url="http://dagster.example",
    )


class Sensor:
    """The real sensor, ticked by hand, with its cursor carried between ticks as the daemon does."""

    def __init__(self, instance: dg.DagsterInstance, alerting: AlertingResource) -> None:
        self.instance, self.alerting, self.cursor = instance, alerting, None

    def tick(self) -> str:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"alerting": self.alerting}
        )
        result = acode_alert_sensor(context)
        self.cursor = context.cursor
        assert isinstance(result, dg.SkipReason)
        return result.skip_message or ""


def record(
    instance: dg.DagsterInstance, check: str, partition: str, passed: bool, severity: str
) -> None:
    """A check evaluation recorded in the instance as a run of its own records it (the storage
    keeps one evaluation per check, partition and run)."""
    evaluation = dg.AssetCheckEvaluation(
        asset_key=bronze_key(FISCAL_LINES),
        check_name=check,
        passed=passed,
        severity=dg.AssetCheckSeverity(severity),
        partition=partition,
        description=f"{check} measured",
        metadata={"measured": f"{check} measured", "threshold": "the limit", "ratio": 0.1},
    )
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
        job_name="bronze_acode_job",
        event_specific_data=evaluation,
    )
    instance.report_dagster_event(event, run_id=str(uuid.uuid4()))


def test_each_problem_reaches_each_service_once_across_an_outage(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    with dg.instance_for_test() as instance:
        record(instance, "null_share", "2026-11-01", False, "ERROR")  # before alerting started
        sensor = Sensor(instance, alerting_for(slack_server, pagerduty_server))
        sensor.tick()
        assert slack_server.messages == [] and pagerduty_server.events == []

        record(instance, "null_share", "2026-11-20", False, "ERROR")
        record(instance, "volume", "2026-11-21", False, "WARN")
        slack_server.down = True
        for _ in range(2):
            assert "2 alert(s) pending" in sensor.tick()
        assert slack_server.messages == []
        # PagerDuty was up: the ERROR was paged once, not once per tick.
        assert [e["event_action"] for e in pagerduty_server.events] == ["trigger"]

        slack_server.down = False
        sensor.tick()
        for _ in range(3):
            assert "0 alert(s) pending" in sensor.tick()
        titles = [m["text"].splitlines()[0] for m in slack_server.messages]
        assert len(titles) == 2
        assert titles[0].endswith(f"null_share ERROR on {FISCAL_LINES.name} 2026-11-20")
        assert titles[1].endswith(f"volume WARN on {FISCAL_LINES.name} 2026-11-21")
        assert "http://dagster.example/runs/" in slack_server.messages[0]["text"]

        # Seen again (a re-run that fails the same way): nothing new to say.
        record(instance, "null_share", "2026-11-20", False, "ERROR")
        sensor.tick()
        assert len(slack_server.messages) == 2 and len(pagerduty_server.events) == 1

        # Fixed: PagerDuty's incident is resolved under the same dedup key; Slack stays quiet.
        record(instance, "null_share", "2026-11-20", True, "ERROR")
        sensor.tick()
        sensor.tick()
        assert [e["event_action"] for e in pagerduty_server.events] == ["trigger", "resolve"]
        assert len({e["dedup_key"] for e in pagerduty_server.events}) == 1
        assert len(slack_server.messages) == 2

        for request in slack_server.requests:
            assert pagerduty_server.routing_key not in str(request["body"])
            assert slack_server.token not in str(request["body"])
        for request in pagerduty_server.requests:
            assert slack_server.token not in str(request)


def test_a_failed_bronze_run_is_told_once_with_its_reason_and_no_secret(
    env: dict[str, str],
    monkeypatch: Any,
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> None:
    # A server that refuses connections: the run fails before anything is published.
    monkeypatch.setenv("ACODE_MYSQL_PRIMARY_URL", "mysql://acode:Sup3r-S3cret@127.0.0.1:9/x")
    resources = build_resources(Settings.from_env())
    products = next(a for a in bronze_assets if bronze_key(PRODUCTS) in a.keys)
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, alerting_for(slack_server, pagerduty_server))
        sensor.tick()
        result = dg.materialize(
            [products],
            partition_key=str(date(2026, 11, 10)),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        for _ in range(3):
            sensor.tick()
        (message,) = slack_server.messages
        assert f"run {result.run_id[:8]}" in message["text"]
        assert "unreachable" in message["text"]
        assert f"http://dagster.example/runs/{result.run_id}" in message["text"]
        assert "Sup3r-S3cret" not in str(slack_server.requests)
        # A failed run is not paged: the retry or freshness decides whether someone wakes up.
        assert pagerduty_server.events == []
