"""``bronze_sweep_job`` and ``bronze_sweep_schedule``: every day at 04:00 in São Paulo, clear what
writers left behind in both bronze roots.

The sweep (:func:`acode_dagster.bronze.quarantine.sweep`) removes staging older than
ACODE_STAGING_MAX_AGE_H whose partition no live lease covers, and quarantined versions older than
ACODE_QUARANTINE_RETENTION_DAYS. It runs two hours after the daily sync (02:00), so the staging it
finds is a killed writer's, not that night's sync at work. ``acode sweep`` runs the same thing from
the command line.
"""

from dataclasses import dataclass
from datetime import datetime

import dagster as dg
from pydantic import Field

from acode_dagster.bronze.quarantine import SweepReport, sweep
from acode_dagster.defs.resources import BronzeResource
from acode_dagster.errors import AcodeError
from acode_dagster.routing import Role
from acode_dagster.tables import SOURCE_TIMEZONE, TABLES


@dataclass(frozen=True)
class RootSweep:
    """The sweep of one bronze root: its report, or why it could not be swept."""

    role: Role
    url: str
    report: SweepReport | None = None
    error: str | None = None

    def summary(self) -> str:
        if self.report is not None:
            return f"{self.role} root {self.report.summary()}"
        return f"{self.role} root {self.url}: not swept: {self.error}"

    def counts(self) -> dict[str, int]:
        report = self.report or SweepReport(self.url)
        return {
            "removed_staging": len(report.removed_staging),
            "removed_staging_bytes": sum(x.bytes for x in report.removed_staging),
            "kept_live": len(report.kept_live),
            "removed_quarantine": len(report.removed_quarantine),
        }


def sweep_roots(
    bronze: BronzeResource, *, dry_run: bool = False, now: datetime | None = None
) -> list[RootSweep]:
    """Sweep the primary and the backup root with the settings' policy. A root that cannot be
    reached is reported, not raised, so the other one is still swept."""
    policy = bronze.sweep_policy()
    swept: list[RootSweep] = []
    for role, url in bronze.roots():
        try:
            store = bronze.store(role)
            report = sweep(store, TABLES, policy, now, dry_run=dry_run)
        except (AcodeError, OSError) as exc:
            # OSError: a local root that is not a folder (a file in its path, no permission).
            swept.append(RootSweep(role, url, error=str(exc)))
            continue
        swept.append(RootSweep(role, store.url, report))
    return swept


class SweepConfig(dg.Config):
    dry_run: bool = Field(
        default=False, description="only report what would be removed; remove nothing"
    )


@dg.op(
    description=(
        "Removes staging leftovers older than ACODE_STAGING_MAX_AGE_H (never under a live lease) "
        "and quarantined versions older than ACODE_QUARANTINE_RETENTION_DAYS, in both roots."
    ),
)
def sweep_bronze_roots(
    context: dg.OpExecutionContext, config: SweepConfig, bronze: BronzeResource
) -> dg.Output[dict[str, int]]:
    swept = sweep_roots(bronze, dry_run=config.dry_run)
    totals: dict[str, int] = {}
    metadata: dict[str, dg.MetadataValue] = {"dry_run": dg.MetadataValue.bool(config.dry_run)}
    for root in swept:
        (context.log.info if root.error is None else context.log.error)(root.summary())
        for name, value in root.counts().items():
            totals[name] = totals.get(name, 0) + value
            # Ints, so the UI plots each root's figures run over run.
            metadata[f"{root.role}_{name}"] = dg.MetadataValue.int(value)
    metadata.update({name: dg.MetadataValue.int(value) for name, value in totals.items()})
    metadata["summary"] = dg.MetadataValue.md("\n".join(f"- {r.summary()}" for r in swept))
    failed = [root for root in swept if root.error is not None]
    if failed:
        raise dg.Failure(
            description=(
                "could not sweep "
                + "; ".join(f"the {r.role} root {r.url}: {r.error}" for r in failed)
                + " (the other root, if any, was swept; the next run tries again)"
            ),
            metadata=metadata,
        )
    return dg.Output(totals, metadata=metadata)


@dg.job(
    name="bronze_sweep_job",
    description=(
        "Sweeps both bronze roots: staging of killed writers and expired quarantined versions. "
        "Set `dry_run: true` in the op's config to see what it would remove."
    ),
)
def bronze_sweep_job() -> None:
    sweep_bronze_roots()


bronze_sweep_schedule = dg.ScheduleDefinition(
    name="bronze_sweep_schedule",
    job=bronze_sweep_job,
    cron_schedule="0 4 * * *",
    execution_timezone=SOURCE_TIMEZONE.key,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Sweeps both bronze roots at 04:00 São Paulo time, two hours after the daily sync, so "
        "the staging it finds belongs to writers that died, not to that night's sync."
    ),
)
