"""What the command line does through Dagster: run partitions, read their checks, send alerts.

Everything goes through the Dagster instance of ``DAGSTER_HOME`` (the persistent one of the
embedded default), so runs, check results and the alert sensor's cursor started here are the
ones the UI and the daemon see.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg

from acode_dagster.settings import Settings

ALERT_CURSOR_KEY = "acode/cli_alert_cursor"


def ensure_dagster_home(settings: Settings) -> Path:
    """A persistent Dagster home, so runs started here are in the UI afterwards."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@dataclass(frozen=True)
class CheckLine:
    table: str
    partition: str | None
    check: str
    outcome: str
    """PASS, WARN or ERROR."""
    measured: str


@dataclass(frozen=True)
class RunSummary:
    day: date
    run_id: str
    success: bool
    landed: list[dict[str, Any]] = field(default_factory=list)
    checks: list[CheckLine] = field(default_factory=list)
    failure: str | None = None

    @property
    def failed_checks(self) -> list[CheckLine]:
        return [c for c in self.checks if c.outcome != "PASS"]


def current_definitions() -> dg.Definitions:
    """The definitions with resources built from the environment as it is now.

    ``acode_dagster.definitions.defs`` is built once, when first imported; a command that has
    changed the environment since (or a test) needs them built again.
    """
    import acode_dagster.defs

    return dg.load_defs(defs_root=acode_dagster.defs)


def _summarize(day: date, result: dg.ExecuteInProcessResult) -> RunSummary:
    landed = []
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        meta: dict[str, Any] = {k: v.value for k, v in materialization.metadata.items()}
        landed.append(
            {
                "day": day.isoformat(),
                "asset": materialization.asset_key.path[-1],
                "rows": meta["dagster/row_count"],
                "files": meta["files"],
                "mb": round(int(meta["bytes"]) / 1e6, 2),
                "seconds": meta["seconds"],
                "source": meta["source_server"],
                "run": result.run_id[:8],
            }
        )
    checks = [
        CheckLine(
            table=evaluation.asset_key.path[-1],
            partition=evaluation.partition,
            check=evaluation.check_name,
            outcome="PASS" if evaluation.passed else evaluation.severity.value,
            measured=evaluation.description or "",
        )
        for evaluation in result.get_asset_check_evaluations()
    ]
    failure = None
    if not result.success:
        step_failure = next(
            (e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None
        )
        failure = step_failure.message if step_failure else "see the run in the Dagster UI"
    return RunSummary(day, result.run_id, result.success, landed, checks, failure)


def materialize_days(days: Sequence[date]) -> list[RunSummary]:
    """Run ``bronze_acode_job`` (sync and checks) for each day in the Dagster instance."""
    job = current_definitions().resolve_job_def("bronze_acode_job")
    summaries = []
    with dg.DagsterInstance.get() as instance:
        for day in days:
            result = job.execute_in_process(
                partition_key=day.isoformat(),
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            summaries.append(_summarize(day, result))
    return summaries


def send_alerts(*, start: bool = False) -> str:
    """One evaluation of ``acode_alert_sensor`` from the command line; returns its summary.

    The command line keeps a cursor of its own in the instance's key-value store, so it neither
    replays history nor moves the daemon's cursor; ``start=True`` only marks everything
    recorded so far as known. With the daemon running the sensor too, both would send: leave
    alerting to the daemon when it runs.
    """
    from acode_dagster.defs.alerts.sensors import acode_alert_sensor

    resources = {"alerting": (current_definitions().resources or {})["alerting"]}
    with dg.DagsterInstance.get() as instance:
        storage = instance.run_storage
        cursor = (
            None if start else storage.get_cursor_values({ALERT_CURSOR_KEY}).get(ALERT_CURSOR_KEY)
        )
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        result = acode_alert_sensor(context)
        if context.cursor:
            storage.set_cursor_values({ALERT_CURSOR_KEY: context.cursor})
    return (result.skip_message or "") if isinstance(result, dg.SkipReason) else str(result)
