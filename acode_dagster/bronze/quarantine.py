"""What operators do with quarantined versions, and the sweep of what writers leave behind.

A version that failed a blocking check is kept in quarantine (outside the published layout,
invisible to its readers) with its manifest and check results, so a person can look at it,
publish it anyway or throw it away. Releasing goes through the same lease and the same fenced
publish as a sync, so it never interleaves with one. Quarantine is swept after a retention
period, and the staging of killed writers after a maximum age, never while a live lease covers
its partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from acode_dagster.bronze.lease import Holder, LeasePolicy, decode, hold
from acode_dagster.bronze.store import BronzeStore, Leftover, Manifest, Quarantined
from acode_dagster.errors import BronzeError, ConfigError
from acode_dagster.tables import Table


@dataclass(frozen=True)
class SweepPolicy:
    staging_max_age: timedelta = timedelta(hours=24)
    quarantine_retention: timedelta = timedelta(days=30)


@dataclass
class SweepReport:
    store: str
    removed_staging: list[Leftover] = field(default_factory=list)
    kept_live: list[Leftover] = field(default_factory=list)
    """Old enough, but a live lease covers the partition: its writer may still be at work."""
    removed_quarantine: list[Quarantined] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.store}: removed {len(self.removed_staging)} staging leftover(s) "
            f"({sum(x.bytes for x in self.removed_staging) / 1e6:.1f} MB), "
            f"{len(self.removed_quarantine)} expired quarantined version(s); kept "
            f"{len(self.kept_live)} under a live lease"
        )


def pick(store: BronzeStore, table: Table, day: date, version: str | None = None) -> Quarantined:
    """The quarantined version of (table, day) named by ``version`` (a prefix will do), or the
    newest; BronzeError names what there is."""
    entries = store.quarantined(table, day)
    if not entries:
        raise BronzeError(
            f"nothing of {table.name} {day:%Y-%m-%d} is in quarantine in {store.url}: "
            "`acode quarantine list` shows what is"
        )
    if version is None:
        return entries[-1]
    chosen = [e for e in entries if e.version.startswith(version)]
    if len(chosen) != 1:
        have = ", ".join(e.version for e in entries)
        raise BronzeError(
            f"--version {version!r} names {len(chosen)} of the quarantined versions of "
            f"{table.name} {day:%Y-%m-%d} ({have}); give one of them"
        )
    return chosen[0]


def release(
    store: BronzeStore,
    table: Table,
    day: date,
    *,
    reason: str,
    by: str,
    policy: LeasePolicy,
    version: str | None = None,
) -> tuple[Quarantined, Manifest]:
    """Publish a quarantined version anyway: under the partition's lease, through the fenced
    publish, its manifest noting who released it and why."""
    reason = required_reason(reason)
    holder = Holder.here(f"release by {by}", purpose="release from quarantine")
    name = f"{table.name} {day:%Y-%m-%d}"
    with hold(store.lease_records(table, day), holder, policy, name) as lease:
        entry = pick(store, table, day, version)
        manifest = replace(
            entry.manifest,
            published_at=datetime.now(UTC).isoformat(),
            note=(
                f"released from quarantine by {by}: {reason} (it had failed "
                f"{', '.join(entry.failed) or 'nothing'}; quarantined {entry.quarantined_at})"
            ),
        )
        store.release(entry, manifest, lease.ensure_held)
    return entry, manifest


def required_reason(reason: str) -> str:
    """The reason of a release, stripped; ConfigError when there is none."""
    if not reason.strip():
        raise ConfigError(
            "a release needs a reason, e.g. `--reason 'nulls confirmed by the fiscal team'`: it "
            "is kept in the partition's manifest and on its materialization"
        )
    return reason.strip()


def discard(
    store: BronzeStore, table: Table, day: date, version: str | None = None
) -> list[Quarantined]:
    """Remove the quarantined versions of (table, day), or only ``version``."""
    entries = [pick(store, table, day, version)] if version else store.quarantined(table, day)
    if not entries:
        pick(store, table, day)  # raises, naming the store
    for entry in entries:
        store.discard(entry)
    return entries


def _live_lease(store: BronzeStore, table: Table, day: date | None, now: datetime) -> bool:
    if day is None:
        return False
    current = store.lease_records(table, day).read()
    record = decode(current[0]) if current else None
    return record is not None and not record.expired(now)


def sweep(
    store: BronzeStore,
    tables: Iterable[Table],
    policy: SweepPolicy,
    now: datetime | None = None,
    *,
    dry_run: bool = False,
) -> SweepReport:
    """Remove staging older than ``policy.staging_max_age`` whose partition no live lease
    covers, and quarantined versions older than ``policy.quarantine_retention``."""
    now = now or datetime.now(UTC)
    report = SweepReport(store.url)
    for table in tables:
        for leftover in store.leftovers(table):
            if now - leftover.modified < policy.staging_max_age:
                continue
            if _live_lease(store, table, leftover.day, now):
                report.kept_live.append(leftover)
                continue
            if not dry_run:
                store.remove(leftover)
            report.removed_staging.append(leftover)
        for entry in store.quarantined(table):
            if now - datetime.fromisoformat(entry.quarantined_at) < policy.quarantine_retention:
                continue
            # A live lease may be a release of this very version, half-way through its swap.
            if not _live_lease(store, table, entry.day, now):
                if not dry_run:
                    store.discard(entry)
                report.removed_quarantine.append(entry)
    return report
