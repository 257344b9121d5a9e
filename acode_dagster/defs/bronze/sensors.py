"""``acode_freshness_sensor``: records each table's freshness check without launching a run.

Dagster's own freshness policy on the assets (evaluated by the daemon) counts any
materialization, of any partition, checks passed or not. For daily partitions that is not
enough: a backfill of last month, or a day that landed with 7 % NULL CNPJ, would count as fresh.
This sensor evaluates the partition-aware ``freshness`` check instead and records it as a
runless check evaluation whenever its outcome changes, so the UI shows it and the alert sensor
tells people once per change.
"""

import json
from datetime import UTC, datetime

import dagster as dg

from acode_dagster.defs.bronze.checks import bronze_key, check_result, evaluate_freshness
from acode_dagster.defs.observability.resources import MetricsResource
from acode_dagster.quality import Verdict
from acode_dagster.tables import TABLES

FRESHNESS_INTERVAL_S = 300


def freshness_tick(
    instance: dg.DagsterInstance, cursor: str | None, now: datetime
) -> tuple[str, list[dg.AssetCheckEvaluation]]:
    """The new cursor and the evaluations to record: one per table whose outcome changed."""
    cursor, evaluations, _ = freshness_verdicts(instance, cursor, now)
    return cursor, evaluations


def freshness_verdicts(
    instance: dg.DagsterInstance, cursor: str | None, now: datetime
) -> tuple[str, list[dg.AssetCheckEvaluation], dict[str, Verdict]]:
    """:func:`freshness_tick`, and every table's verdict of this tick (changed or not)."""
    previous: dict[str, str] = json.loads(cursor) if cursor else {}
    outcomes: dict[str, str] = {}
    verdicts: dict[str, Verdict] = {}
    evaluations = []
    for table in TABLES:
        verdict = evaluate_freshness(instance, table, now)
        outcomes[table.name] = verdict.outcome
        verdicts[table.name] = verdict
        if previous.get(table.name) == verdict.outcome:
            continue
        result = check_result(verdict)
        evaluations.append(
            dg.AssetCheckEvaluation(
                asset_key=bronze_key(table),
                check_name=verdict.check,
                passed=result.passed,
                severity=result.severity,
                description=result.description,
                metadata=result.metadata,
            )
        )
    return json.dumps(outcomes, sort_keys=True), evaluations, verdicts


@dg.sensor(
    name="acode_freshness_sensor",
    minimum_interval_seconds=FRESHNESS_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Evaluates each bronze table's freshness (time since its newest partition landed with "
        "its blocking checks passed) and records it when it changes."
    ),
)
def acode_freshness_sensor(
    context: dg.SensorEvaluationContext, metrics: MetricsResource
) -> dg.SensorResult:
    cursor, evaluations, verdicts = freshness_verdicts(
        context.instance, context.cursor, datetime.now(UTC)
    )
    metrics.client(context.log.warning).freshness(
        {name: _age_hours(verdict) for name, verdict in verdicts.items()}
    )
    for evaluation in evaluations:
        outcome = "passes" if evaluation.passed else f"fails ({evaluation.severity.value})"
        context.log.info(
            f"freshness of {evaluation.asset_key.to_user_string()} {outcome}: "
            f"{evaluation.description}"
        )
    return dg.SensorResult(asset_events=evaluations, cursor=cursor)


def _age_hours(verdict: Verdict) -> float | None:
    age = verdict.metadata.get("age_hours")
    return float(age) if isinstance(age, int | float) else None
