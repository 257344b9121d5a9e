"""The alert sensor ticked as the daemon ticks it, in a process that a test may kill.

Against an instance kept on disk (a ``DAGSTER_HOME``-like folder with SQLite storage), with
the sensor's cursor in a file that is replaced only once a tick has returned, the way the
daemon saves a sensor's cursor after its tick. A process killed during a tick so leaves the
cursor of the tick before, as a killed daemon does.

    python -m acode_dagster_tests.support.alert_ticker HOME CURSOR_FILE CHANNEL

then one command per line on standard input: ``tick SLACK_API_URL`` ticks once and prints
the tick's summary on a line of its own. A test can so start the process early (importing
Dagster takes seconds) and have it tick when the moment comes. The Slack token comes from
``SLACK_BOT_TOKEN`` (never on the command line, where ``ps`` shows it). :func:`tick_once` is
the same tick for a process forked from a test that has imported Dagster already.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg

from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import acode_alert_sensor

INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def make_home(home: Path) -> Path:
    """A folder for a persistent SQLite instance that several processes open by path."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    return home


def open_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def tick(instance: dg.DagsterInstance, cursor_file: Path, alerting: AlertingResource) -> str:
    """One evaluation of ``acode_alert_sensor``; its summary. The cursor is saved after it."""
    cursor = cursor_file.read_text() if cursor_file.exists() else None
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"alerting": alerting}
    )
    result = acode_alert_sensor(context)
    if context.cursor is not None:
        staged = cursor_file.with_name(cursor_file.name + ".new")
        staged.write_text(context.cursor)
        os.replace(staged, cursor_file)
    assert isinstance(result, dg.SkipReason)
    return result.skip_message or ""


def slack_alerting(api_url: str, token: str, channel: str) -> AlertingResource:
    return AlertingResource(
        slack_token=token,
        slack_api_url=api_url,
        slack_channel=channel,
        ui_url="http://dagster.example",
    )


def tick_once(home: Path, cursor_file: Path, api_url: str, token: str, channel: str) -> None:
    """One tick in a process of its own (the target of a forked process a test kills)."""
    with open_instance(home) as instance:
        tick(instance, cursor_file, slack_alerting(api_url, token, channel))


def main(argv: list[str]) -> int:
    home, cursor_file, channel = argv
    token = os.environ["SLACK_BOT_TOKEN"]
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, api_url = line.strip().partition(" ")
        if command != "tick":
            raise SystemExit(f"unknown command {line!r}: expected 'tick SLACK_API_URL'")
        with open_instance(Path(home)) as instance:
            summary = tick(instance, Path(cursor_file), slack_alerting(api_url, token, channel))
        print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
