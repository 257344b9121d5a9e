"""``acode_weekly_job`` over a seeded week on a real Dagster instance: real syncs of the demo
(one spoiled, so a check fails and the version is quarantined), a failover and its fail-back
recorded the way the health sensor records them, and the report posted to a loopback Slack
exactly once however often the job runs for that week."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from acode_dagster.cli import main
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.observability.weekly import (
    WEEK_TAG,
    WEEKLY_REPORT_KEY,
    acode_weekly_schedule,
    run_weekly,
    weekly_cron,
    weekly_report,
)
from acode_dagster.defs.redundancy.state import event_observation
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.generator import Anomalies
from acode_dagster.demo.loader import load_days
from acode_dagster.errors import ConfigError
from acode_dagster.failover import RouteEvent
from acode_dagster.observability.weekly import Week
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, SOURCE_TIMEZONE
from acode_dagster_tests.support.alerting import LoopbackSlack

WEEK_ENDING = date(2025, 3, 9)  # a Sunday; the week is Monday 3 .. Sunday 9 March 2025
FIRST = WEEK_ENDING - timedelta(days=6)
GOOD_DAYS = [FIRST, FIRST + timedelta(days=1)]
SPOILED_DAY = FIRST + timedelta(days=2)
ROWS = 100
UI = "http://dagster.test:3000"


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SOURCE_TIMEZONE)


def route_event(kind: str, to_role: str, when: datetime, **extra: Any) -> RouteEvent:
    return RouteEvent(
        kind=kind,  # type: ignore[arg-type]
        part="source",
        parts=("source",),
        from_role="backup" if to_role == "primary" else "primary",
        to_role=to_role,  # type: ignore[arg-type]
        at=when,
        reason="after 2 failed probes" if kind == "failover" else "after 3 good probes",
        automatic=True,
        critical=kind == "failover",
        **extra,
    )


@pytest.fixture
def seeded(
    env: dict[str, str], mariadb_pair: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """An instance holding a week: two good syncs, one spoiled (null_share fails, quarantined),
    a failover of the source and its fail-back 3 h 30 min later."""
    monkeypatch.setenv("ACODE_REPLICA_CHECK_WAIT_S", "0")
    admin = mariadb_pair.endpoint("primary", admin=True)
    load_days(admin, [*GOOD_DAYS, SPOILED_DAY], rows={FISCAL_LINES.name: ROWS})
    resources = build_resources(Settings.from_env())
    fiscal = next(a for a in bronze_assets if bronze_key(FISCAL_LINES) in a.keys)
    with dg.instance_for_test() as instance:
        for day in GOOD_DAYS:
            done = dg.materialize(
                [fiscal], partition_key=f"{day}", resources=resources, instance=instance
            )
            assert done.success
        spoil = {(FISCAL_LINES.name, SPOILED_DAY): Anomalies(null_share={"CNPJ": 0.07})}
        load_days(admin, [SPOILED_DAY], rows={FISCAL_LINES.name: ROWS}, anomalies=spoil)
        dg.materialize(
            [fiscal],
            partition_key=f"{SPOILED_DAY}",
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        outage = timedelta(hours=3, minutes=30)
        for event in (
            route_event("failover", "backup", at(GOOD_DAYS[1], 10)),
            route_event(
                "failback", "primary", at(GOOD_DAYS[1], 10) + outage, outage_s=outage.seconds
            ),
        ):
            instance.report_runless_asset_event(event_observation(event))
        yield instance


def run_week(
    instance: dg.DagsterInstance, alerting: AlertingResource, *, resend: bool = False
) -> dict[str, Any]:
    """One run of acode_weekly_job for the seeded week (as `acode report weekly --send` runs
    it); the report's metadata."""
    resources = {**build_resources(Settings.from_env()), "alerting": alerting}
    found = run_weekly(instance, resources, Week(WEEK_ENDING), resend=resend)
    (latest,) = instance.fetch_materializations(WEEKLY_REPORT_KEY, limit=1).records
    assert latest.asset_materialization is not None
    assert latest.asset_materialization.metadata["slack"].value == found["slack"]
    return found


def test_the_weekly_report_lists_the_week_and_reaches_slack_once(
    seeded: dg.DagsterInstance, slack_server: LoopbackSlack, capsys: pytest.CaptureFixture[str]
) -> None:
    # No Slack token: the report is still materialized, and says it was not sent.
    quiet = run_week(seeded, AlertingResource(ui_url=UI))
    assert str(quiet["slack"]).startswith("not sent: no Slack token")

    alerting = AlertingResource(
        slack_token=slack_server.token,
        slack_api_url=slack_server.base_url,
        slack_channel="#ops",
        ui_url=UI,
    )
    first = run_week(seeded, alerting)
    again = run_week(seeded, alerting)
    assert first["slack"] == "sent to slack #ops"
    assert str(again["slack"]).startswith("already sent at ")
    assert slack_server.alert_ids() == [f"weekly-report:{FIRST}"]

    report = str(first["report"])
    fiscal = FISCAL_LINES.name
    assert f"# ACODE weekly report: {FIRST} .. {WEEK_ENDING}" in report
    # The failover and its duration, the failed check, the quarantined version.
    assert "| source | 2025-03-04 10:00 | 2025-03-04 13:30 | 3 h 30 min |" in report
    assert f"**failed check** — {fiscal} {SPOILED_DAY}: null_share failed" in report
    assert f"**quarantine** — {fiscal} {SPOILED_DAY}: version " in report
    assert f"| {fiscal} | {SPOILED_DAY} | `" in report
    # The two good days are there, the other five (the spoiled one first) are missing.
    assert f"| {fiscal} | 2/7 | {2 * ROWS:,} |" in report
    assert f"**missing partitions** — {fiscal}: {SPOILED_DAY}..{WEEK_ENDING} not" in report
    assert "| sweep | ok |" in report and "| replica verification | ok |" in report
    assert "| bucket verification | ok |" in report
    assert first[f"{fiscal}/rows"] == 2 * ROWS and first["failovers"] == 1
    assert first["open_quarantines"] == 1

    (message,) = slack_server.messages
    text = str(message["text"])
    assert f"Weekly report {FIRST} .. {WEEK_ENDING}" in text
    assert f"{fiscal}: 2/7 partitions · {2 * ROWS:,} rows" in text
    assert "failed check" in text and "quarantine" in text and "source 3 h 30 min" in text
    assert f"{UI}/assets/acode_ops/weekly_report" in text

    # The command line prints the week's stored report (the instance is DAGSTER_HOME's).
    capsys.readouterr()
    assert main(["report", "weekly", "--week-ending", f"{WEEK_ENDING}"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"# ACODE weekly report: {FIRST} .. {WEEK_ENDING}")
    assert "Slack: already sent at " in printed and "3 h 30 min" in printed
    # A week no run covered: a preview from the instance, nothing run, nothing sent.
    assert main(["report", "weekly", "--week-ending", "2025-03-16"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# ACODE weekly report: 2025-03-10 .. 2025-03-16")
    assert "| sweep | not run |" in printed and "(a preview: no report of" in printed
    assert len(slack_server.messages) == 1

    # On purpose, once more.
    run_week(seeded, alerting, resend=True)
    assert len(slack_server.messages) == 2
    assert slack_server.alert_ids()[1].startswith(f"weekly-report:{FIRST}:resend:")


def test_the_schedule_asks_for_the_week_before_its_tick() -> None:
    assert acode_weekly_schedule.cron_schedule == "0 6 * * 1"
    assert acode_weekly_schedule.execution_timezone == "America/Sao_Paulo"
    assert acode_weekly_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = datetime(2026, 11, 30, 6, 0, tzinfo=SOURCE_TIMEZONE)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context,
    ):
        (request,) = acode_weekly_schedule.evaluate_tick(context).run_requests or []
    assert request.run_key == "weekly-report/2026-11-29"
    assert request.tags[WEEK_TAG] == "2026-11-29"
    config = request.run_config["ops"][weekly_report.op.name]["config"]
    assert config["week_ending"] == "2026-11-29"


@pytest.mark.parametrize("cron", ["every monday", "0 6 * *"])
def test_a_bad_weekly_cron_is_refused_naming_the_setting(cron: str) -> None:
    with pytest.raises(ConfigError, match="ACODE_WEEKLY_CRON"):
        weekly_cron(Settings.from_env({"ACODE_WEEKLY_CRON": cron}))


def test_a_weekly_cron_dagster_refuses_is_refused_too() -> None:
    settings = Settings.from_env({"ACODE_WEEKLY_CRON": "0 25 * * 1"})
    with pytest.raises(ConfigError, match="ACODE_WEEKLY_CRON='0 25 \\* \\* 1'"):
        weekly_cron(settings)
    assert weekly_cron(Settings.from_env({"ACODE_WEEKLY_CRON": "30 7 * * 2"})) == "30 7 * * 2"
