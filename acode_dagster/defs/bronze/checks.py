"""The bronze asset checks in Dagster's terms: specs, results and what they read from the instance.

The partition checks run inside each bronze asset's step on the version while it is staged,
before it is published (write, audit, publish: ``acode_dagster.bronze.publish``), so they add no
step (and no process) to a run and they check the server the sync actually read. A version with a
blocking ERROR goes to quarantine instead of the published layout; its results say so.
They are partitioned check specs, so every evaluation is recorded against its partition and the
UI plots their figures over partitions. ``freshness`` is a check of the table as a whole; the
freshness sensor records it without a run, and it can also be executed from the UI.
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster._core.events import DagsterEventType

from acode_dagster import quality
from acode_dagster.bronze.mirror import Mirrored
from acode_dagster.defs.bronze.partitions import daily_partitions
from acode_dagster.quality import (
    BLOCKING_CHECKS,
    FRESHNESS_CHECK,
    MIRROR_CHECK,
    PARTITION_CHECKS,
    Verdict,
)
from acode_dagster.replicator import SyncResult
from acode_dagster.tables import TABLES, Table, get_table

GROUP = "bronze_acode"


def bronze_key(table: Table) -> dg.AssetKey:
    return dg.AssetKey([GROUP, table.name])


def partition_check_specs(table: Table) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            spec.name,
            asset=bronze_key(table),
            description=spec.description,
            blocking=spec.blocking,
            partitions_def=daily_partitions,
        )
        for spec in (*PARTITION_CHECKS, MIRROR_CHECK)
    ]


def mirror_result(copy: Mirrored | None, *, other: str) -> dg.AssetCheckResult:
    """The ``mirror`` check of a partition just published: ``copy`` is None with a single root."""
    if copy is None:
        return dg.AssetCheckResult(
            check_name=MIRROR_CHECK.name,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="one bronze root (ACODE_BRONZE_BACKUP_URL is ACODE_BRONZE_URL)",
            metadata={"measured": dg.MetadataValue.text("nothing to mirror")},
        )
    return dg.AssetCheckResult(
        check_name=MIRROR_CHECK.name,
        passed=copy.done,
        severity=dg.AssetCheckSeverity.WARN,
        description=copy.detail,
        metadata=mirror_metadata(copy, other=other),
    )


def mirror_evaluation(copy: Mirrored, *, other: str) -> dg.AssetCheckEvaluation:
    """The ``mirror`` check of a partition copied by a repair, outside the run that wrote it."""
    return dg.AssetCheckEvaluation(
        asset_key=bronze_key(get_table(copy.table)),
        check_name=MIRROR_CHECK.name,
        passed=copy.done,
        severity=dg.AssetCheckSeverity.WARN,
        description=copy.detail,
        metadata=mirror_metadata(copy, other=other),
        partition=f"{copy.day:%Y-%m-%d}",
    )


def mirror_metadata(copy: Mirrored, *, other: str) -> dict[str, dg.MetadataValue]:
    return {
        "measured": dg.MetadataValue.text(copy.detail),
        "threshold": dg.MetadataValue.text(f"the {other} bucket holds the version, verified"),
        "target": dg.MetadataValue.text(copy.target_url),
        "mirror_files": dg.MetadataValue.int(copy.files),
        "mirror_bytes": dg.MetadataValue.int(copy.bytes),
        "mirror_seconds": dg.MetadataValue.float(copy.seconds),
        "copy": dg.MetadataValue.text(copy.how or "-"),
    }


def check_result(verdict: Verdict, synced: SyncResult | None = None) -> dg.AssetCheckResult:
    """``synced``: the version the verdict judged, so the result says whether it was published
    or quarantined (and where it is)."""
    metadata: dict[str, dg.MetadataValue] = {
        "measured": dg.MetadataValue.text(verdict.measured),
        "threshold": dg.MetadataValue.text(verdict.threshold),
    }
    if synced is not None:
        metadata["bronze_version"] = dg.MetadataValue.text(synced.outcome_word)
        metadata["version"] = dg.MetadataValue.text(synced.manifest.version)
        if not synced.published:
            metadata["quarantine_url"] = dg.MetadataValue.text(synced.kept_at)
    for name, value in verdict.metadata.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            metadata[name] = dg.MetadataValue.text(str(value))
        elif isinstance(value, int):
            metadata[name] = dg.MetadataValue.int(value)
        else:
            metadata[name] = dg.MetadataValue.float(value)
    return dg.AssetCheckResult(
        check_name=verdict.check,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity(verdict.severity),
        description=verdict.measured,
        metadata=metadata,
    )


def row_count_history(instance: dg.DagsterInstance, table: Table, day: date) -> list[int]:
    """Rows of the latest materialization of each earlier partition, newest partition first.

    Read from the instance rather than the bucket, so the history survives a bucket failover
    and costs one query instead of a GET per day.
    """
    lookback = table.thresholds.volume_lookback_days
    wanted = [f"{day - timedelta(days=n):%Y-%m-%d}" for n in range(1, lookback + 1)]
    latest: dict[str, int] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=bronze_key(table), asset_partitions=wanted),
            limit=200,
            cursor=cursor,
        )
        for record in page.records:
            materialization = record.asset_materialization
            if materialization is None or record.partition_key in latest:
                continue
            rows = materialization.metadata.get("dagster/row_count")
            if rows is not None and isinstance(rows.value, int) and record.partition_key:
                latest[record.partition_key] = rows.value
        if not page.has_more:
            break
        cursor = page.cursor
    return [latest[key] for key in wanted if key in latest]


def _blocking_checks_passed(
    instance: dg.DagsterInstance, table: Table, run_id: str, partition: str
) -> bool:
    verdicts: dict[str, bool] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        event = entry.dagster_event
        evaluation = event.asset_check_evaluation_data if event else None
        if (
            evaluation is not None
            and evaluation.asset_key == bronze_key(table)
            and evaluation.partition == partition
            and evaluation.check_name in BLOCKING_CHECKS
        ):
            verdicts[evaluation.check_name] = evaluation.passed
    return set(verdicts) == BLOCKING_CHECKS and all(verdicts.values())


def newest_good_landing(
    instance: dg.DagsterInstance, table: Table, scan: int = 100
) -> tuple[str, datetime] | None:
    """The newest partition whose latest materialization passed its blocking checks (or was
    released from quarantine by a person), and when it landed."""
    page = instance.fetch_materializations(bronze_key(table), limit=scan)
    seen: set[str] = set()
    best: tuple[str, datetime] | None = None
    for record in page.records:  # newest first
        partition = record.partition_key
        if partition is None or partition in seen:
            continue
        seen.add(partition)
        if best is not None and partition <= best[0]:
            continue
        materialization = record.asset_materialization
        released = materialization is not None and "released_by" in materialization.metadata
        # A release from quarantine is a person's decision to publish despite the checks.
        if released or _blocking_checks_passed(instance, table, record.run_id, partition):
            best = (partition, datetime.fromtimestamp(record.timestamp, UTC))
    return best


def evaluate_freshness(
    instance: dg.DagsterInstance, table: Table, now: datetime | None = None
) -> Verdict:
    landing = newest_good_landing(instance, table)
    return quality.freshness(
        table.thresholds,
        now or datetime.now(UTC),
        landing[1] if landing else None,
        landing[0] if landing else None,
    )


def build_freshness_check(table: Table) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=bronze_key(table),
        name=FRESHNESS_CHECK.name,
        description=FRESHNESS_CHECK.description,
        blocking=False,
    )
    def freshness_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return check_result(evaluate_freshness(context.instance, table))

    return freshness_check


freshness_checks = [build_freshness_check(table) for table in TABLES]
