"""``bronze_repair_job``: both buckets made whole again, and the history brought to the backup.

The job compares the two buckets partition by partition over the last days
(:func:`acode_dagster.bronze.mirror.repair`) and copies the good copy of each partition over a
missing, older or damaged one, verified against its manifest. Each copy is recorded as an
evaluation of the partition's ``mirror`` check, so the UI shows which partitions are whole in
both buckets. It runs:

- after a fail-back of the bucket route (the health sensor requests it, before deciding what to
  re-sync), so the days synced into the backup bucket during the outage reach the primary;
- every day at 04:30 (``bronze_repair_schedule``, after the sweep), over
  ``ACODE_MIRROR_VERIFY_DAYS`` days, so a partition altered or deleted in either bucket is found
  and repaired within a day;
- by hand, from the UI or ``acode buckets repair --days N`` (with a large N: the backfill that
  brings the existing history to the backup bucket).
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field

from acode_dagster.bronze.lease import Holder
from acode_dagster.bronze.mirror import RepairReport, repair
from acode_dagster.defs.bronze.checks import mirror_evaluation
from acode_dagster.defs.bronze.partitions import daily_partitions
from acode_dagster.defs.resources import BronzeResource
from acode_dagster.routing import BACKUP, PRIMARY
from acode_dagster.settings import Settings
from acode_dagster.tables import SOURCE_TIMEZONE, TABLES, get_table, last_complete_days

REPAIR_JOB = "bronze_repair_job"


class RepairConfig(dg.Config):
    days: int = Field(
        default=Settings.from_env().mirror_verify_days,
        description="how many complete days back to compare (ACODE_MIRROR_VERIFY_DAYS)",
    )
    checksums: bool = Field(
        default=False,
        description="also hash every file of both copies (reads every byte; sizes and the "
        "Parquet footers' row counts are always compared)",
    )
    tables: list[str] = Field(default_factory=list, description="only these tables (default all)")


def complete_days(days: int, now: datetime | None = None) -> list[date]:
    """The last ``days`` complete days (São Paulo time, as of ``now``) that the partitions
    cover: what the repair and the catch-up after a route change look at."""
    if days < 1:
        return []
    yesterday = (now or datetime.now(UTC)).astimezone(SOURCE_TIMEZONE).date() - timedelta(days=1)
    first = daily_partitions.start.date()
    return [day for day in last_complete_days(days, end_day=yesterday) if day >= first]


def repair_window(days: int) -> list[date]:
    """The last ``days`` complete days that the partitions cover (one at least)."""
    return complete_days(max(days, 1))


def report_table(report: RepairReport) -> str:
    """The repair as a Markdown table a person reads in the UI."""
    lines = ["| table | day | primary | backup | decision | result |", "|---|---|---|---|---|---|"]
    done = {(m.table, m.day): m for m in report.copied + report.failed}
    for entry in report.checked:
        copied = done.get((entry.table, entry.day))
        result = copied.detail if copied else "-"
        lines.append(
            f"| {entry.table} | {entry.day:%Y-%m-%d} | {entry.primary.summary} | "
            f"{entry.backup.summary} | {entry.decision.action}: {entry.decision.why} | {result} |"
        )
    return "\n".join(lines)


@dg.op(
    description="Compare the primary and backup buckets over the last days and copy each "
    "partition's good copy over a missing, older or damaged one, verified against its manifest."
)
def repair_buckets(
    context: dg.OpExecutionContext, config: RepairConfig, bronze: BronzeResource
) -> dg.Output[RepairReport]:
    if not bronze.mirrored:
        context.log.info("one bronze root is configured: there is no second copy to repair")
        return dg.Output(RepairReport(), metadata={"checked": 0})
    days = repair_window(config.days)
    tables = [get_table(name) for name in config.tables] if config.tables else list(TABLES)
    context.log.info(
        f"comparing {len(tables)} table(s) over {len(days)} day(s) "
        f"({days[0] if days else '-'} to {days[-1] if days else '-'}) in both buckets"
        + (", with checksums" if config.checksums else "")
    )
    report = repair(
        {PRIMARY: bronze.store(PRIMARY), BACKUP: bronze.store(BACKUP)},
        tables,
        days,
        holder=Holder.here(context.run.run_id, purpose="bucket repair"),
        policy=bronze.lease_policy(),
        checksums=config.checksums,
        log=context.log.info,
    )
    for copy in report.copied + report.failed:
        context.log_event(mirror_evaluation(copy, other=copy.target_role))  # type: ignore[arg-type]
    summary = repair_summary(report)
    context.log.info(", ".join(f"{k} {v}" for k, v in summary.items()))
    return dg.Output(
        report,
        metadata={
            **{k: dg.MetadataValue.int(v) for k, v in summary.items()},
            "report": dg.MetadataValue.md(report_table(report)),
        },
    )


@dg.op(description="Fail the run when a partition could not be repaired, so the UI shows it.")
def all_repaired(report: RepairReport) -> None:
    unrepaired = len(report.failed) + len(report.left("unknown"))
    if unrepaired:
        raise dg.Failure(
            description=f"{unrepaired} partition(s) could not be repaired: "
            + "; ".join(f"{m.table} {m.day}: {m.detail}" for m in report.failed)
            + "; ".join(f"{d.table} {d.day}: {d.decision.why}" for d in report.left("unknown")),
            metadata={"report": dg.MetadataValue.md(report_table(report))},
        )


def repair_summary(report: RepairReport) -> dict[str, int]:
    return {
        "checked": len(report.checked),
        "in_sync": len(report.left("in_sync")),
        "copied": len(report.copied),
        "failed": len(report.failed),
        "missing_in_both": len(report.left("missing")),
        "to_resync": len(report.left("resync")),
        "unreadable": len(report.left("unknown")),
    }


@dg.job(
    name=REPAIR_JOB,
    description=(
        "Makes the primary and backup buckets whole: every partition of the last days present, "
        "newer or intact in one bucket is copied to the other and verified. After a bucket "
        "fail-back, daily, and by hand (`acode buckets repair`)."
    ),
    tags={"acode/purpose": "bucket repair"},
)
def bronze_repair_job() -> None:
    all_repaired(repair_buckets())


bronze_repair_schedule = dg.ScheduleDefinition(
    name="bronze_repair_schedule",
    job=bronze_repair_job,
    cron_schedule="30 4 * * *",
    execution_timezone=SOURCE_TIMEZONE.key,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Every day at 04:30 (after the 02:00 sync, its mirror and the sweep): compare both "
        "buckets over "
        "ACODE_MIRROR_VERIFY_DAYS days and repair what differs."
    ),
)
