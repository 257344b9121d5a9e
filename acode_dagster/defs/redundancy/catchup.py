"""What a route change owes the bronze layer: repair the buckets, then re-sync what neither holds.

Catch-up decides from the buckets' manifests, not from materialization events: a day synced into
the backup bucket during a bucket outage is materialized in Dagster but absent from the primary
bucket, which is what consumers read. So after a route change:

- a partition present in one bucket only (or different in the two) is *repaired*: one run of
  ``bronze_repair_job`` over the catch-up window copies it across, verified;
- a partition present in neither bucket is *re-synced*: one run per day, on the route now in
  force, with only that day's missing tables.

Both are keyed by the route version, so each route change asks for them once however many times
the request is emitted (a tick that died after committing the change emits it again).
The manifest reads are bounded: one GET per bucket and partition, all at once, within a budget;
a bucket the tick's probes found unhealthy is not read at all, and a partition whose presence
could not be read is neither repaired nor re-synced on this change (the daily repair and the
freshness check still see it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import date, datetime

import dagster as dg

from acode_dagster.bronze.store import BronzeStore
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.bronze.jobs import bronze_acode_job
from acode_dagster.defs.bronze.repair import REPAIR_JOB, complete_days
from acode_dagster.defs.resources import BronzeResource
from acode_dagster.errors import AcodeError
from acode_dagster.routing import ROLES, Role
from acode_dagster.tables import TABLES, Table

READ_THREADS = 8


@dataclass
class BucketPresence:
    """Which buckets hold each (table, day), as far as could be read within the budget."""

    holders: dict[tuple[str, date], set[Role]] = field(default_factory=dict)
    unread: set[tuple[str, date]] = field(default_factory=set)

    def missing_everywhere(self) -> dict[date, list[Table]]:
        """Per day, the tables that no bucket holds (oldest day first)."""
        found: dict[date, list[Table]] = {}
        for day in sorted({day for _, day in self.holders}):
            for table in TABLES:
                key = (table.name, day)
                if key in self.holders and not self.holders[key] and key not in self.unread:
                    found.setdefault(day, []).append(table)
        return found

    def one_sided(self, roles: Sequence[Role]) -> list[tuple[str, date]]:
        return sorted(
            key
            for key, held in self.holders.items()
            if held and held != set(roles) and key not in self.unread
        )


def read_presence(
    stores: dict[Role, BronzeStore],
    tables: Sequence[Table],
    days: Sequence[date],
    budget_s: float,
) -> BucketPresence:
    """One manifest GET per bucket and partition, concurrently, within ``budget_s``."""
    presence = BucketPresence()
    jobs = [(role, table, day) for role in stores for table in tables for day in days]
    for table in tables:
        for day in days:
            presence.holders[(table.name, day)] = set()
    deadline = time.monotonic() + budget_s
    pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="catch-up")
    try:
        futures = [
            (role, table.name, day, pool.submit(stores[role].manifest, table, day))
            for role, table, day in jobs
        ]
        for role, name, day, future in futures:
            key = (name, day)
            try:
                if future.result(timeout=max(0.0, deadline - time.monotonic())) is not None:
                    presence.holders[key].add(role)
            except (FutureTimeout, AcodeError, OSError, ValueError):
                presence.unread.add(key)
    finally:
        # Reads still running are abandoned (their own timeouts end them); the tick goes on.
        pool.shutdown(wait=False, cancel_futures=True)
    return presence


def catch_up_requests(
    bronze: BronzeResource,
    version: int,
    days: int,
    now: datetime,
    *,
    readable: Sequence[Role] = ROLES,
    budget_s: float = 10.0,
) -> list[dg.RunRequest]:
    """The repair run and the re-sync runs a route change (to ``version``) owes.

    ``readable``: the buckets the tick's probes found healthy; the others are not read.
    """
    window = complete_days(days, now)
    if not window:
        return []
    roles = [r for r in ROLES if r in readable and (bronze.mirrored or r == ROLES[0])]
    stores = {role: bronze.store(role) for role in roles}
    presence = read_presence(stores, TABLES, window, budget_s)
    requests: list[dg.RunRequest] = []
    if bronze.mirrored and len(roles) == 2 and presence.one_sided(roles):
        requests.append(
            dg.RunRequest(
                run_key=f"repair/v{version}",
                job_name=REPAIR_JOB,
                run_config={"ops": {"repair_buckets": {"config": {"days": len(window)}}}},
                tags={"acode/catch_up": f"route v{version}"},
            )
        )
    for day, tables in presence.missing_everywhere().items():
        requests.append(
            dg.RunRequest(
                run_key=f"catch-up/v{version}/{day}",
                job_name=bronze_acode_job.name,
                partition_key=day.isoformat(),
                asset_selection=[bronze_key(t) for t in tables],
                tags={"acode/catch_up": f"route v{version}"},
            )
        )
    return requests
