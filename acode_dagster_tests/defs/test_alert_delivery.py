"""``acode_alert_sensor`` tells every alert once, across outages, killed ticks and run updates,
and gives up on what cannot be delivered: a real instance (on disk where a process is killed),
real processes, and the loopback Slack."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType

from acode_dagster.defs.alerts.ledger import LEDGER_PREFIX
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import acode_alert_sensor, alert_tick
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.resources import build_resources
from acode_dagster.incidents import AlertState
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, PRODUCTS
from acode_dagster_tests.support.alert_ticker import (
    make_home,
    open_instance,
    slack_alerting,
    tick,
    tick_once,
)
from acode_dagster_tests.support.alerting import HoldStage, LoopbackSlack

REPO = Path(__file__).resolve().parents[2]
CHANNEL = "#acode-alerts"
HOUR = 3600.0


def record_failure(instance: dg.DagsterInstance, partition: str, check: str = "volume") -> None:
    """A WARN check failure recorded as a run of its own records it (a WARN goes to Slack only)."""
    evaluation = dg.AssetCheckEvaluation(
        asset_key=bronze_key(FISCAL_LINES),
        check_name=check,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        partition=partition,
        metadata={"measured": "12 rows", "threshold": "WARN below 1000"},
    )
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
        job_name="bronze_acode_job",
        event_specific_data=evaluation,
    )
    instance.report_dagster_event(event, run_id=str(uuid.uuid4()))


def refused_url() -> str:
    """A Slack API URL on a loopback port nobody listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/"


def ticker(home: Path, cursor_file: Path, slack: LoopbackSlack) -> subprocess.Popen[str]:
    """The sensor ticked in a process of its own (support/alert_ticker.py), on command."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acode_dagster_tests.support.alert_ticker",
            str(home),
            str(cursor_file),
            CHANNEL,
        ],
        cwd=REPO,
        env={**os.environ, "SLACK_BOT_TOKEN": slack.token},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def command(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def three_failed_ticks(home: Path, cursor_file: Path, slack: LoopbackSlack) -> None:
    """Alerting started, one alert told, then three alerts that Slack fails to take for three
    ticks: HTTP 500 twice (which may or may not have posted), then refused connections."""
    alerting = slack_alerting(slack.base_url, slack.token, CHANNEL)
    with open_instance(home) as instance:
        tick(instance, cursor_file, alerting)  # alerting starts
        # The channel has had an alert before: Slack said its ID then, for the look-up.
        record_failure(instance, "2026-11-01")
        assert tick(instance, cursor_file, alerting).startswith("1 notification(s) delivered")

        for day in ("2026-11-02", "2026-11-03", "2026-11-04"):
            record_failure(instance, day)
        slack.down, slack.down_status = True, 500
        for _ in range(2):
            summary = tick(instance, cursor_file, alerting)
            assert "0 notification(s) delivered, 3 alert(s) pending" in summary
        slack.down = False
        unreachable = slack_alerting(refused_url(), slack.token, CHANNEL)
        assert "3 alert(s) pending" in tick(instance, cursor_file, unreachable)
        assert len(slack.alert_ids()) == 1


@pytest.mark.parametrize(("held_post", "stage"), [(2, "answered"), (1, "received")])
def test_every_alert_arrives_once_across_an_outage_and_a_killed_tick(
    tmp_path: Path, slack_server: LoopbackSlack, held_post: int, stage: HoldStage
) -> None:
    """Slack fails for three ticks (HTTP 500, then refused connections); the next tick, in a
    process of its own, is SIGKILLed while Slack holds one of its posts (``answered``: posted,
    the answer never sent; ``received``: never acted on); a fresh process ticks on. Every alert
    is in the channel exactly once.

    The killed process is forked from this one (Dagster already imported: it ticks at once);
    the fresh one is a new interpreter, started first so that its import overlaps the rest.
    """
    slack = slack_server
    home = make_home(tmp_path / "dagster")
    cursor_file = tmp_path / "alert_cursor.json"
    fresh = ticker(home, cursor_file, slack)
    killed: multiprocessing.process.BaseProcess | None = None
    held = False
    try:
        three_failed_ticks(home, cursor_file, slack)
        saved = cursor_file.read_text()
        slack.hold_post(held_post, stage)
        killed = multiprocessing.get_context("fork").Process(
            target=tick_once, args=(home, cursor_file, slack.base_url, slack.token, CHANNEL)
        )
        killed.start()
        held = slack.held.wait(timeout=90)
    finally:
        if killed is not None and killed.pid is not None:
            os.kill(killed.pid, signal.SIGKILL)
            killed.join(timeout=30)
        slack.release()
        if not held:
            fresh.kill()
    assert held, "the killed tick never reached Slack"
    assert killed.exitcode == -signal.SIGKILL
    # Killed before its tick returned: its cursor was never saved, as with a killed daemon.
    assert cursor_file.read_text() == saved
    history_reads = sum("conversations.history" in r["path"] for r in slack.requests)

    command(fresh, f"tick {slack.base_url}")
    command(fresh, f"tick {slack.base_url}")
    out, errors = fresh.communicate(timeout=120)  # closes its input: it ends after the ticks
    assert fresh.returncode == 0, errors[-3000:]
    summaries = out.splitlines()
    assert summaries[0] == "ready" and len(summaries) == 3, out
    assert summaries[-1].startswith("0 notification(s) delivered, 0 alert(s) pending"), out

    counts = Counter(slack.alert_ids())
    assert len(counts) == 4, counts
    assert set(counts.values()) == {1}, counts
    # The unconfirmed send was looked up in the channel's history, not blindly sent again.
    assert sum("conversations.history" in r["path"] for r in slack.requests) > history_reads
    # The ledger keeps only what a replay could need: once a tick started from a cursor saved
    # after the deliveries, nothing.
    with open_instance(home) as instance:
        state = AlertState.from_json(cursor_file.read_text())
        key = LEDGER_PREFIX + state.lineage
        book = instance.run_storage.get_cursor_values({key})[key]
        assert '"marks": {}' in book, book


def test_a_tag_added_to_a_failed_run_never_tells_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slack_server: LoopbackSlack
) -> None:
    # Both servers refuse connections: the run fails before anything is published.
    for key, value in {
        "ACODE_HOME": str(tmp_path / "home"),
        "ACODE_BRONZE_URL": str(tmp_path / "bronze"),
        "ACODE_MYSQL_PRIMARY_URL": "mysql://acode:pw@127.0.0.1:9/acode_farmarcas",
        "ACODE_MYSQL_BACKUP_URL": "mysql://acode:pw@127.0.0.1:9/acode_farmarcas_replica",
        "ACODE_RETRIES": "0",
    }.items():
        monkeypatch.setenv(key, value)
    resources = build_resources(Settings.from_env())
    products = next(a for a in bronze_assets if bronze_key(PRODUCTS) in a.keys)
    alerting = slack_alerting(slack_server.base_url, slack_server.token, CHANNEL)
    cursor_file = tmp_path / "alert_cursor.json"
    with dg.instance_for_test() as instance:
        tick(instance, cursor_file, alerting)

        def fail_a_run(day: date) -> str:
            result = dg.materialize(
                [products],
                partition_key=day.isoformat(),
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
            assert not result.success
            return result.run_id

        run_id = fail_a_run(date(2026, 11, 10))
        tick(instance, cursor_file, alerting)
        assert slack_server.alert_ids() == [f"run:{run_id}"]

        # An operator marks the run (or a retry tags it): its update time moves on.
        runs_after = AlertState.from_json(cursor_file.read_text()).runs_after
        instance.add_run_tags(run_id, {"acode/reviewed": "yes"})
        (record,) = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
        assert record.update_timestamp.timestamp() > runs_after
        for _ in range(2):
            tick(instance, cursor_file, alerting)
        assert slack_server.alert_ids() == [f"run:{run_id}"]

        # Remembering told runs hides nothing new: the next failure is told, once.
        second = fail_a_run(date(2026, 11, 11))
        instance.add_run_tags(second, {"dagster/retry_number": "0"})
        for _ in range(2):
            tick(instance, cursor_file, alerting)
        assert slack_server.alert_ids() == [f"run:{run_id}", f"run:{second}"]


def test_an_alert_undelivered_for_the_give_up_time_is_dropped_and_named(
    slack_server: LoopbackSlack,
) -> None:
    alerting = AlertingResource(
        slack_token=slack_server.token,
        slack_api_url=slack_server.base_url,
        slack_channel=CHANNEL,
        give_up_h=24,
    )
    lines: list[str] = []
    warnings: list[str] = []
    start = time.time()
    with dg.instance_for_test() as instance:
        cursor: str | None = None

        def run_at(hours: float) -> str:
            nonlocal cursor
            result = alert_tick(
                instance,
                cursor,
                alerting,
                lines.append,
                warn=warnings.append,
                now=start + hours * HOUR,
            )
            cursor = result.cursor
            return result.summary()

        run_at(0)
        record_failure(instance, "2026-11-20")
        record_failure(instance, "2026-11-21")
        slack_server.down = True  # HTTP 503, for a day and more
        assert run_at(0.1) == "0 notification(s) delivered, 2 alert(s) pending, 0 given up"
        assert run_at(12) == "0 notification(s) delivered, 2 alert(s) pending, 0 given up"
        # Deliver came in one tick, the give-up clock started with it: just before the end...
        assert run_at(24.09).endswith("2 alert(s) pending, 0 given up")
        assert warnings == []
        # ... and at it.
        summary = run_at(24.1)
        assert summary.startswith("0 notification(s) delivered, 0 alert(s) pending, 2 given up: ")
        pending = AlertState.from_json(cursor or "").pending
        assert pending == []

        assert len(warnings) == 2
        first, second = warnings
        assert "2026-11-20/volume" in first and "2026-11-21/volume" in second
        for line in warnings:
            assert "given up on slack after " in line
            assert "still not delivered 24.0 h after its first attempt" in line
            assert f"sent to slack {CHANNEL}" in line
            assert "HTTP 503" in line
            assert slack_server.token not in line
        assert "after 4 attempt(s)" in first  # tried in each tick; the second waited behind it
        assert "not tried, slack failed earlier in the same tick" in second

        # Slack back: nothing given up comes out of the past.
        slack_server.down = False
        assert run_at(25).startswith("0 notification(s) delivered, 0 alert(s) pending")
        assert slack_server.messages == []


def test_a_channel_that_rejects_alerts_for_good_gives_them_up_in_three_ticks(
    slack_server: LoopbackSlack,
) -> None:
    """``channel_not_found`` never heals by itself: no waiting a day, but three ticks, in case
    Slack says it by mistake for a moment (it has, in its incidents)."""
    alerting = slack_alerting(slack_server.base_url, slack_server.token, CHANNEL)
    warnings: list[str] = []

    class Warnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.WARNING:
                warnings.append(record.getMessage())

    with dg.instance_for_test() as instance:
        cursor: str | None = None

        def sensor_tick() -> str:
            nonlocal cursor
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"alerting": alerting}
            )
            context.log.addHandler(Warnings())
            result = acode_alert_sensor(context)
            cursor = context.cursor
            assert isinstance(result, dg.SkipReason)
            return result.skip_message or ""

        sensor_tick()
        record_failure(instance, "2026-11-20")
        record_failure(instance, "2026-11-21")
        slack_server.post_error = "channel_not_found"
        for _ in range(2):
            assert sensor_tick().endswith("2 alert(s) pending, 0 given up")
        summary = sensor_tick()
        assert summary.startswith("0 notification(s) delivered, 0 alert(s) pending, 2 given up: ")
        assert "rejected for good 3 times in a row" in summary
        assert "channel_not_found" in summary
        given_up = [w for w in warnings if "given up on slack" in w]
        assert len(given_up) == 2, warnings
        assert "2026-11-20/volume" in given_up[0] and "after 3 attempt(s)" in given_up[0]
        assert "2026-11-21/volume" in given_up[1]
        assert all("channel_not_found" in w and f"slack {CHANNEL}" in w for w in given_up)

        # The channel fixed: a new alert goes; the dropped ones stay dropped.
        slack_server.post_error = None
        record_failure(instance, "2026-11-22")
        assert sensor_tick().startswith("1 notification(s) delivered, 0 alert(s) pending")
        assert [i.split("/")[2] for i in slack_server.alert_ids()] == ["2026-11-22"]
