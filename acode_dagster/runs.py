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

    # Loading reads the instance's definitions-state storage, which Dagster finds through the
    # instance entered last; enter ours, or it may find one that is already closed.
    with dg.DagsterInstance.get():
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


def _resources() -> dict[str, Any]:
    return dict(current_definitions().resources or {})


def check_health() -> dict[str, Any]:
    """Probe the four targets now, with the configured limits; ``{target: ProbeResult}``."""
    from acode_dagster.defs.redundancy.sensors import run_probes

    resources = _resources()
    wanted = {k: resources[k] for k in ("acode_sources", "bronze", "redundancy")}
    with dg.build_resources(wanted) as ready:
        return run_probes(ready.acode_sources, ready.bronze, ready.redundancy)


@dataclass(frozen=True)
class TableStatus:
    table: str
    latest_partition: str | None
    checks: dict[str, str]
    """check name -> PASS/WARN/ERROR of the latest partition's latest evaluation."""


def route_status() -> tuple[Any, list[Any], list[TableStatus]]:
    """``(route state, recent route events newest first, per-table latest partition)``."""
    from acode_dagster.defs.bronze.checks import bronze_key
    from acode_dagster.defs.redundancy.state import load_state, recent_route_events
    from acode_dagster.quality import PARTITION_CHECKS
    from acode_dagster.tables import TABLES

    with dg.DagsterInstance.get() as instance:
        state = load_state(instance)
        events = recent_route_events(instance, limit=5)
        tables = []
        for table in TABLES:
            landed = instance.get_materialized_partitions(bronze_key(table))
            latest = max(landed) if landed else None
            checks: dict[str, str] = {}
            for spec in PARTITION_CHECKS:
                key = dg.AssetCheckKey(bronze_key(table), spec.name)
                for record in instance.event_log_storage.get_asset_check_execution_history(
                    key, limit=20
                ):
                    event = record.event.dagster_event if record.event else None
                    evaluation = event.asset_check_evaluation_data if event else None
                    if evaluation is not None and evaluation.partition == latest:
                        checks[spec.name] = (
                            "PASS" if evaluation.passed else evaluation.severity.value
                        )
                        break
            tables.append(TableStatus(table.name, latest, checks))
    return state, events, tables


def sync_partition(table_name: str, day: date) -> RunSummary:
    """Materialize (and check) one partition of one table now, on the route in force."""
    from acode_dagster.defs.bronze.checks import bronze_key
    from acode_dagster.tables import get_table

    key = bronze_key(get_table(table_name))
    job = current_definitions().resolve_job_def("bronze_acode_job")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            asset_selection=[key],
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    return _summarize(day, result)


def change_pin(role: str | None, reason: str, parts: Sequence[str], by: str) -> list[Any]:
    """Pin the given parts of the route to ``role``, or unpin (``role=None``); the events."""
    from datetime import UTC, datetime

    from acode_dagster import failover
    from acode_dagster.defs.redundancy.state import event_observation, load_state, save_state

    now = datetime.now(UTC)
    with dg.DagsterInstance.get() as instance:
        state = load_state(instance)
        if role is None:
            state, events = failover.unpin(state, by, now, reason)
        else:
            pin = failover.Pin(
                role=role,  # type: ignore[arg-type]
                reason=reason,
                by=by,
                at=now,
                parts=tuple(parts),  # type: ignore[arg-type]
            )
            state, events = failover.pin(state, pin)
        save_state(instance, state)
        for event in events:
            instance.report_runless_asset_event(event_observation(event))
    return events
