"""``acode``: the operator's command line.

``acode quickstart`` is the README's first command: it starts the local MariaDB pair, loads demo
days, and materializes them through Dagster in a persistent Dagster home, so the UI shows them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from acode_dagster.audit import operator
from acode_dagster.errors import AcodeError, ConfigError
from acode_dagster.observability.logs import configure_logging
from acode_dagster.settings import Settings

if TYPE_CHECKING:
    from acode_dagster.runs import RootProblem

log = logging.getLogger("acode")


def _stack(settings: Settings) -> Any:
    from acode_dagster.localstack import LocalStack

    return LocalStack(settings.stack_home)


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    stack = _stack(settings)
    if args.action == "start":
        started = time.monotonic()
        stack.start()
        print(
            f"local MariaDB pair is up in {settings.stack_home} "
            f"({time.monotonic() - started:.1f} s)"
        )
        _print_status(stack)
    elif args.action == "stop":
        stack.stop()
        print("local MariaDB pair stopped")
    else:
        _print_status(stack)
    return 0


def _print_status(stack: Any) -> None:
    for role, status in stack.status().items():
        state = "running" if status.running else "stopped"
        line = f"  {role:<8} 127.0.0.1:{status.port}  {state}"
        if role == "backup" and status.running:
            line += (
                f"  replication io={getattr(status, 'io_running', None)} "
                f"sql={getattr(status, 'sql_running', None)} "
                f"behind={getattr(status, 'seconds_behind', None)}s"
            )
        print(line)


def _demo_days(args: argparse.Namespace) -> list[date]:
    from acode_dagster.tables import last_complete_days

    try:
        end = date.fromisoformat(args.end_day) if args.end_day else None
        return last_complete_days(args.days, end)
    except ValueError as exc:
        raise ConfigError(
            f"bad --days/--end-day: {exc}; use --days N --end-day YYYY-MM-DD"
        ) from None


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.demo.loader import load_days

    stack = _stack(settings)
    stack.start()
    days = _demo_days(args)
    report = load_days(stack.endpoint("primary", admin=True), days, seed=args.seed)
    stack.wait_replica_caught_up()
    print(f"loaded demo data for {', '.join(map(str, days))}: {report}")
    return 0


def _print_table(rows: list[dict[str, Any]], indent: str = "") -> None:
    if not rows:
        return
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in headers}
    print(indent + "  ".join(h.ljust(widths[h]) for h in headers))
    for row in rows:
        print(indent + "  ".join(str(row[h]).ljust(widths[h]) for h in headers))


def cmd_quickstart(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import ensure_dagster_home, materialize_days

    started = time.monotonic()
    cmd_stack(argparse.Namespace(action="start"), settings)
    cmd_demo(args, settings)
    home = ensure_dagster_home(settings)
    days = _demo_days(args)
    print(
        f"materializing {len(days)} day(s) of the bronze assets through Dagster "
        f"(DAGSTER_HOME={home}) ..."
    )
    runs = materialize_days(days)
    for run in runs:
        if not run.success:
            raise AcodeError(f"run {run.run_id} for {run.day} failed: {run.failure}")
    rows = [row for run in runs for row in run.landed]
    _print_table(rows)
    print(
        f"\n{sum(r['rows'] for r in rows):,} rows in {len(rows)} partitions landed in "
        f"{settings.bronze_url} in {time.monotonic() - started:.0f} s.\n"
        f"See them in the UI: `make dev`, then http://127.0.0.1:3000 (DAGSTER_HOME={home})."
    )
    return 0


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    """Probe everything now; exit 1 when a target is unhealthy, so scripts can use it."""
    from acode_dagster.runs import check_health, ensure_dagster_home

    ensure_dagster_home(settings)
    results = check_health()
    _print_table(
        [
            {
                "target": r.target,
                "healthy": "yes" if r.healthy else "NO",
                "ms": f"{r.latency_s * 1000:.0f}",
                "reason": (r.reason + (f" ({r.warning})" if r.warning else ""))[:110],
            }
            for r in results.values()
        ]
    )
    # The table cuts reasons to fit; the fix is at the end of a reason, so print them whole.
    for r in results.values():
        if not r.healthy and len(r.reason) > 110:
            print(f"\n{r.target}: {r.reason}")
    return 0 if all(r.healthy for r in results.values()) else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.quality import MIRROR_CHECK, PARTITION_CHECKS
    from acode_dagster.runs import ensure_dagster_home, route_status

    ensure_dagster_home(settings)
    state, events, tables = route_status()
    pinned = (
        f" (pinned to {state.pin.role} by {state.pin.by}: {state.pin.reason})" if state.pin else ""
    )
    print(f"route: source={state.route.source} bucket={state.route.bucket}{pinned}")
    if events:
        print("last changes:")
        for event in events:
            print(f"  {event.at:%Y-%m-%d %H:%M:%S %Z}  {event.describe()}")
    else:
        print("last change: none (on the primaries since the start)")
    print(f"S3 encryption at rest: {settings.s3_encryption.describe()}")
    print()
    _print_table(
        [
            {
                "table": t.table,
                "latest partition": t.latest_partition or "-",
                **{c.name: t.checks.get(c.name, "-") for c in (*PARTITION_CHECKS, MIRROR_CHECK)},
            }
            for t in tables
        ]
    )
    return 0


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import ensure_dagster_home, sync_partition
    from acode_dagster.tables import get_table, parse_partition_key

    try:
        table = get_table(args.table)
        day = parse_partition_key(args.date)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    ensure_dagster_home(settings)
    run = sync_partition(table.name, day)
    _print_table(run.landed)
    for check in run.checks:
        print(f"  {check.check:<15} {check.outcome:<5} {check.measured}")
    if not run.success:
        print(f"run {run.run_id} failed: {run.failure}", file=sys.stderr)
        return 1
    return 0


def cmd_route(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import change_pin, ensure_dagster_home

    ensure_dagster_home(settings)
    parts = ("source", "bucket") if args.part == "both" else (args.part,)
    role = args.role if args.action == "pin" else None
    if args.action == "pin" and (role is None or not args.reason):
        raise ConfigError(
            "route pin needs a side and a reason, e.g. `acode route pin backup --reason "
            "'primary maintenance'`; the reason is recorded and alerted"
        )
    by = operator(settings)
    events = change_pin(role, args.reason or "", parts, by)
    for event in events:
        print(event.describe())
    if not events:
        print("nothing to do: the route was not pinned")
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Submit a backfill of days to the daemon (the same record the UI's "Launch backfill"
    makes), or follow one until the daemon has finished it."""
    from acode_dagster.runs import SOURCE_POOL, backfill_days, ensure_dagster_home
    from acode_dagster.tables import parse_partition_key

    if args.follow:
        if args.start or args.end or args.tables or args.wait:
            raise ConfigError(
                "--follow ID watches a backfill that exists: give it alone, e.g. "
                "`acode backfill --follow abcdefgh`"
            )
        ensure_dagster_home(settings)
        return _follow(args.follow, f"{settings.ui_url}/runs/b/{args.follow}")
    if not (args.start and args.end):
        raise ConfigError(
            "backfill needs the first and the last day, e.g. `acode backfill 2026-11-01 "
            "2026-11-20`, or --follow ID"
        )
    try:
        start, end = parse_partition_key(args.start), parse_partition_key(args.end)
    except ValueError as exc:
        raise ConfigError(f"{exc} (acode backfill START END)") from None
    home = ensure_dagster_home(settings)
    by = operator(settings)
    done = backfill_days(start, end, args.tables or (), ui_url=settings.ui_url, by=by)
    print(
        f"backfill {done.backfill_id}: {len(done.partitions)} day(s), {start} to {end}, of "
        f"{', '.join(done.tables)} (one run per day)\n  in the UI: {done.url}"
    )
    bound = done.bound
    if bound.limit is None:
        print(
            f"acode: warning: this instance sets no limit on the pool {SOURCE_POOL}, so nothing "
            "bounds the syncs; add `concurrency: pools: default_limit: N` to "
            f"{home / 'dagster.yaml'} or set the pool's limit in the UI (Deployment > Concurrency)",
            file=sys.stderr,
        )
    else:
        print(f"  at most {bound.limit} sync(s) at once: pool {SOURCE_POOL}, {bound.where}")
        if bound.limit != settings.source_concurrency:
            print(
                f"  (not ACODE_SOURCE_CONCURRENCY={settings.source_concurrency}: the instance's "
                "own limit is what holds)"
            )
    if not done.daemon_seen:
        print(
            "  no Dagster daemon has reported on this instance lately: the backfill starts when "
            f"one runs (`make dev`, or `dagster-daemon run -w workspace.yaml` with DAGSTER_HOME="
            f"{home})"
        )
    if not args.wait:
        print(f"  follow it there, or here with `acode backfill --follow {done.backfill_id}`")
        return 0
    return _follow(done.backfill_id, done.url)


def _follow(backfill_id: str, url: str) -> int:
    """Poll until the daemon marks the backfill finished, then print each partition's outcome;
    1 unless every partition materialized."""
    from acode_dagster.runs import BackfillProgress, follow_backfill

    last_line = ""

    def report(progress: BackfillProgress) -> None:
        nonlocal last_line
        landed = sum(o.outcome == "materialized" for o in progress.outcomes)
        runs = ", ".join(f"{n} {status.lower()}" for status, n in sorted(progress.runs.items()))
        line = (
            f"{progress.status}: {landed} of {len(progress.outcomes)} partitions materialized; "
            f"runs: {runs or 'none yet'}"
        )
        if line != last_line:
            print(f"  {time.strftime('%H:%M:%S')}  {line}", flush=True)
            last_line = line

    try:
        result = follow_backfill(backfill_id, report)
    except KeyboardInterrupt:
        print(f"\nstopped following; the backfill goes on: {url}")
        return 130
    _print_table(
        [
            {
                "day": o.partition,
                "table": o.table,
                "outcome": o.outcome,
                "run": (o.run_id or "-")[:8],
                "run status": o.run_status or "-",
            }
            for o in result.outcomes
        ]
    )
    print(f"backfill {result.backfill_id} {result.status}: {url}")
    return 0 if result.succeeded else 1


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso


def _table_and_day(args: argparse.Namespace) -> tuple[str, date]:
    from acode_dagster.tables import get_table, parse_partition_key

    try:
        table = get_table(args.table)
        day = parse_partition_key(args.day)
    except ValueError as exc:
        raise ConfigError(f"{exc} (acode quarantine {args.action} TABLE YYYY-MM-DD)") from None
    return table.name, day


def _warn_unread(problems: Sequence[RootProblem]) -> int:
    """Tell which roots could not be read; 1 when one could not, so scripts notice."""
    for problem in problems:
        print(
            f"acode: warning: could not read the {problem.role} bronze root {problem.url}: "
            f"{problem.error}",
            file=sys.stderr,
        )
    return 1 if problems else 0


def cmd_quarantine_list(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import list_quarantined

    listing = list_quarantined(args.tables or ())
    if not listing.entries:
        print(f"nothing is in quarantine in {' or '.join(listing.roots)}")
    _print_table(
        [
            {
                "table": found.entry.table,
                "day": f"{found.entry.day:%Y-%m-%d}",
                "version": found.entry.version,
                "quarantined": _when(found.entry.quarantined_at),
                "by": found.entry.by,
                "failed": ", ".join(found.entry.failed) or "-",
                "rows": found.entry.manifest.rows,
                "root": found.role,
                "url": found.entry.url,
            }
            for found in listing.entries
        ]
    )
    return _warn_unread(listing.problems)


def cmd_quarantine_show(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import choose_quarantined, list_quarantined

    table, day = _table_and_day(args)
    listing = list_quarantined([table], day)
    entries = choose_quarantined(table, day, listing, None)
    print(f"{table} {day:%Y-%m-%d}: {len(entries)} quarantined version(s)")
    for found in entries:
        entry, manifest = found.entry, found.entry.manifest
        print(f"\nversion {entry.version} ({found.role} root)")
        print(f"  kept at      {entry.url}")
        print(f"  quarantined  {_when(entry.quarantined_at)} by {entry.by}")
        print(f"  read from    {manifest.source} by the {manifest.replicator} replicator")
        print(
            f"  rows         {manifest.rows:,} in {len(manifest.files)} file(s), "
            f"{manifest.bytes / 1e6:.2f} MB"
        )
        print("  files:")
        _print_table(
            [{"file": f.name, "rows": f.rows, "bytes": f.bytes} for f in manifest.files], "    "
        )
        print("  checks:")
        _print_table(
            [
                {
                    "check": check.get("check", "?"),
                    "outcome": check.get("outcome", "?"),
                    "blocking": "yes" if check.get("blocking") else "no",
                    "measured": check.get("measured", ""),
                    "threshold": check.get("threshold", ""),
                }
                for check in entry.checks
            ],
            "    ",
        )
        published = listing.published.get((found.role, table))
        print(
            "  published now: "
            + (
                f"version {published.version}, {published.rows:,} rows, since "
                f"{_when(published.published_at)}"
                if published
                else "nothing (the partition is absent)"
            )
        )
        print(
            f"  publish it anyway: acode quarantine release {table} {day:%Y-%m-%d} --version "
            f"{entry.version} --reason '...'\n"
            f"  throw it away:     acode quarantine discard {table} {day:%Y-%m-%d} --version "
            f"{entry.version}"
        )
    return _warn_unread(listing.problems)


def cmd_quarantine_release(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import ensure_dagster_home, release_quarantined

    table, day = _table_and_day(args)
    if not (args.reason or "").strip():
        raise ConfigError(
            f"a release needs a reason: `acode quarantine release {table} {day:%Y-%m-%d} "
            "--reason 'nulls confirmed by the fiscal team'`; it is kept in the manifest and on "
            "the materialization"
        )
    home = ensure_dagster_home(settings)
    by = (args.by or "").strip() or operator(settings)
    released = release_quarantined(table, day, reason=args.reason, by=by, version=args.version)
    manifest = released.manifest
    print(
        f"released {table} {day:%Y-%m-%d} version {manifest.version} from quarantine on the "
        f"{released.role} root: {manifest.rows:,} rows in {len(manifest.files)} file(s) now "
        f"published at {released.partition_url} (it had failed "
        f"{', '.join(released.entry.failed) or 'nothing'})"
    )
    print(
        f"recorded as a materialization of partition {day:%Y-%m-%d} in the Dagster instance "
        f"(DAGSTER_HOME={home}): released by {by}: {args.reason.strip()}"
    )
    if released.mirrored is not None:
        copy = released.mirrored
        print(
            f"mirrored to {copy.target_url}: {copy.detail}"
            if copy.done
            else f"warning: not mirrored to {copy.target_url}: {copy.detail}; "
            "`acode buckets repair` copies it once that bucket is back"
        )
    return 0


def _buckets_tables(args: argparse.Namespace) -> list[str]:
    from acode_dagster.tables import get_table

    return [get_table(name).name for name in args.tables or []]


def cmd_buckets_diff(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import compare_buckets

    found = compare_buckets(args.days, _buckets_tables(args), checksums=args.checksums)
    _print_table(
        [
            {
                "table": d.table,
                "day": f"{d.day:%Y-%m-%d}",
                "primary": d.primary.summary,
                "backup": d.backup.summary,
                "decision": d.decision.action,
            }
            for d in found
        ]
    )
    differing = [d for d in found if d.decision.action not in ("in_sync", "missing")]
    missing = [d for d in found if d.decision.action == "missing"]
    how = "sizes, footers' rows" + (" and SHA-256 of every file" if args.checksums else "")
    same = len(found) - len(differing) - len(missing)
    print(
        f"\n{len(found)} partition(s) compared ({how}): {same} the same in both buckets, "
        f"{len(differing)} not, {len(missing)} in neither"
        + ("; `acode buckets repair` copies what one bucket holds better" if differing else "")
    )
    return 1 if differing else 0


def cmd_buckets_repair(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import ensure_dagster_home, repair_buckets

    ensure_dagster_home(settings)
    report = repair_buckets(
        args.days, _buckets_tables(args), checksums=args.checksums, by=operator(settings)
    )
    for copy in report.copied:
        print(f"{copy.table} {copy.day:%Y-%m-%d}: {copy.detail} in {copy.target_url}")
    for copy in report.failed:
        print(f"NOT repaired: {copy.table} {copy.day:%Y-%m-%d}: {copy.detail}")
    for kind, what in (
        ("missing", "in neither bucket (the catch-up or a backfill re-syncs them)"),
        ("resync", "with no intact copy in either bucket (re-sync them: `acode backfill`)"),
        ("unknown", "unreadable in one bucket"),
    ):
        for entry in report.left(kind):  # type: ignore[arg-type]
            print(f"{entry.table} {entry.day:%Y-%m-%d}: {what}")
    print(
        f"{len(report.checked)} partition(s) compared: {len(report.copied)} copied and verified, "
        f"{len(report.failed)} failed, {len(report.left('in_sync'))} already the same"
    )
    return 1 if report.failed or report.left("unknown") else 0


def cmd_quarantine_discard(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import discard_quarantined

    table, day = _table_and_day(args)
    for found in discard_quarantined(table, day, args.version):
        print(
            f"discarded {table} {day:%Y-%m-%d} version {found.entry.version} from the "
            f"{found.role} root ({found.entry.url})"
        )
    return 0


def cmd_report_weekly(args: argparse.Namespace, settings: Settings) -> int:
    import dagster as dg

    from acode_dagster.defs.observability.weekly import (
        WeeklyConfig,
        preview_report,
        resolve_week,
        run_weekly,
        stored_report,
    )
    from acode_dagster.defs.resources import BronzeResource, build_resources
    from acode_dagster.runs import ensure_dagster_home

    ensure_dagster_home(settings)
    week = resolve_week(WeeklyConfig(week_ending=args.week_ending or ""), {}, datetime.now(UTC))
    resources = build_resources(settings)
    with dg.DagsterInstance.get() as instance:
        found: dict[str, Any] | None
        if args.send or args.resend:
            found = run_weekly(
                instance,
                resources,
                week,
                resend=args.resend,
                tags={"acode/launched_by": operator(settings)},
            )
        else:
            found = stored_report(instance, week)
        if found is not None:
            print(found["report"], end="")
            print(f"\nSlack: {found['slack']}")
            return 0
        bronze = resources["bronze"]
        assert isinstance(bronze, BronzeResource)
        print(preview_report(instance, bronze, week, settings.ui_url), end="")
        print(
            f"\n(a preview: no report of {week.label} was materialized yet; `acode report "
            "weekly --send` runs the week's operations, materializes it and posts it to Slack)"
        )
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.runs import sweep_bronze

    now = datetime.now(UTC)
    print(
        f"sweeping staging older than {settings.staging_max_age_h:g} h (ACODE_STAGING_MAX_AGE_H) "
        f"and quarantine older than {settings.quarantine_retention_days:g} days "
        "(ACODE_QUARANTINE_RETENTION_DAYS)"
        + (": dry run, nothing is removed" if args.dry_run else "")
    )
    removed = "would remove" if args.dry_run else "removed"
    failed = 0
    for root in sweep_bronze(dry_run=args.dry_run, now=now):
        print(("(dry run) " if args.dry_run else "") + root.summary())
        if root.report is None:
            failed += 1
            continue
        for leftover in root.report.removed_staging:
            age = (now - leftover.modified).total_seconds() / 3600
            print(f"  {removed} staging {leftover.url} ({age:.1f} h old, {leftover.bytes:,} bytes)")
        for leftover in root.report.kept_live:
            print(f"  kept staging {leftover.url}: a live lease covers {leftover.day}")
        for entry in root.report.removed_quarantine:
            print(
                f"  {removed} quarantined {entry.table} {entry.day:%Y-%m-%d} version "
                f"{entry.version} (quarantined {_when(entry.quarantined_at)})"
            )
    return 1 if failed else 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """The audit trail of both bronze roots, oldest first, each record once."""
    from acode_dagster.audit import parse_since, read_records, record_line, records_as_json

    since = parse_since(args.since) if args.since else None
    reading = read_records(since, args.action, settings)
    if args.json:
        print(records_as_json(reading.found))
    elif not reading.found:
        print(
            "no audit record"
            + (f" since {since:%Y-%m-%d %H:%M}Z" if since else "")
            + (f" of {args.action}" if args.action else "")
        )
    for found in [] if args.json else reading.found:
        print(record_line(found))
    for problem in reading.problems:
        print(f"acode: warning: audit records not read from {problem}", file=sys.stderr)
    return 1 if reading.problems else 0


DRIFT_COLUMN = "Canal_Venda"


def cmd_anomalies(args: argparse.Namespace, settings: Settings) -> int:
    """Spoil three days on purpose, materialize them, and show the checks and alerts they cause.

    Two phases, because schema drift is a property of the source table, not of a day: the
    extra column is added only after the other days are checked, and dropped again at the end
    (unless --keep-drift), so later syncs are clean.
    """
    from acode_dagster.demo.generator import Anomalies
    from acode_dagster.demo.loader import drop_column, load_days
    from acode_dagster.runs import ensure_dagster_home, materialize_days, send_alerts
    from acode_dagster.tables import FISCAL_LINES

    stack = _stack(settings)
    stack.start()
    admin = stack.endpoint("primary", admin=True)
    home = ensure_dagster_home(settings)
    end = _demo_days(argparse.Namespace(days=1, end_day=args.end_day))[0]
    nulls, drop, drift = (end - timedelta(days=n) for n in (2, 1, 0))
    history = [nulls - timedelta(days=n) for n in range(args.history_days, 0, -1)]
    rows = {FISCAL_LINES.name: args.rows} if args.rows else None
    print(f"alerts: {send_alerts()} (before the demo; DAGSTER_HOME={home})")
    spoiled = {
        (FISCAL_LINES.name, nulls): Anomalies(null_share={"CNPJ": 0.07}),
        (FISCAL_LINES.name, drop): Anomalies(volume_factor=0.1),
    }
    report = load_days(admin, [*history, nulls, drop], rows=rows, seed=args.seed, anomalies=spoiled)
    print(
        f"loaded {len(history)} clean day(s), then {nulls} with 7 % NULL CNPJ and {drop} with a "
        f"90 % volume drop: {report}"
    )
    runs = materialize_days([*history, nulls, drop])
    report = load_days(
        admin,
        [drift],
        rows=rows,
        seed=args.seed,
        anomalies={(FISCAL_LINES.name, drift): Anomalies(extra_column=DRIFT_COLUMN)},
    )
    print(f"loaded {drift} after adding the column {DRIFT_COLUMN} at the source: {report}")
    stack.wait_replica_caught_up()
    try:
        runs += materialize_days([drift])
    finally:
        if not args.keep_drift:
            drop_column(admin, FISCAL_LINES, DRIFT_COLUMN)
            print(f"dropped {FISCAL_LINES.name}.{DRIFT_COLUMN} again (--keep-drift keeps it)")
    failed = [
        {"day": str(run.day), "table": c.table, "check": c.check, "outcome": c.outcome,
         "measured": c.measured[:90]}
        for run in runs
        for c in run.failed_checks
    ]  # fmt: skip
    print(f"\n{len(failed)} failed check evaluation(s):")
    _print_table(failed)
    print(f"\nalerts: {send_alerts()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acode",
        description="Operate the ACODE bronze layer: the local MariaDB pair, demo data, syncs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start, stop or show the local MariaDB primary+replica")
    stack.add_argument("action", choices=["start", "stop", "status"])
    stack.set_defaults(func=cmd_stack)

    for name, func, help_text in (
        ("demo", cmd_demo, "load deterministic demo days into the local primary"),
        (
            "quickstart",
            cmd_quickstart,
            "start the pair, load demo days and materialize them through Dagster",
        ),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--days", type=int, default=3, help="how many days (default 3)")
        command.add_argument("--end-day", help="last day, YYYY-MM-DD (default: yesterday, local)")
        command.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
        command.set_defaults(func=func)

    anomalies = sub.add_parser(
        "anomalies",
        help="load clean days and three spoiled ones, materialize them, show failing checks and "
        "the alerts sent",
    )
    anomalies.add_argument("--end-day", help="the drift day, YYYY-MM-DD (default: yesterday)")
    anomalies.add_argument(
        "--history-days", type=int, default=7, help="clean days before them (default 7)"
    )
    anomalies.add_argument("--rows", type=int, help="fiscal rows per clean day (default: demo's)")
    anomalies.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    anomalies.add_argument(
        "--keep-drift", action="store_true", help="leave the extra source column in place"
    )
    anomalies.set_defaults(func=cmd_anomalies)

    health = sub.add_parser(
        "health", help="probe both MySQL servers and both buckets now (exit 1 if one is down)"
    )
    health.set_defaults(func=cmd_health)
    status = sub.add_parser(
        "status", help="the route, its last changes, and each table's latest partition and checks"
    )
    status.set_defaults(func=cmd_status)
    sync = sub.add_parser("sync", help="materialize and check one partition now, on the route")
    sync.add_argument("table", help="e.g. farmarcas_si_analitico_diario")
    sync.add_argument("date", help="the partition, YYYY-MM-DD")
    sync.set_defaults(func=cmd_sync)
    route = sub.add_parser(
        "route",
        help="pin the route to a side (overrides automatic failover until unpinned), or unpin",
        description="`acode route pin backup --reason 'primary maintenance'` moves the syncs to "
        "the backup now and keeps them there; `acode route unpin` hands the route back to the "
        "health sensor. Both are recorded on the redundancy asset and alerted.",
    )
    route.add_argument("action", choices=["pin", "unpin"])
    route.add_argument("role", nargs="?", choices=["primary", "backup"], help="for pin")
    route.add_argument("--reason", help="why (required for pin; recorded and alerted)")
    route.add_argument(
        "--part", choices=["both", "source", "bucket"], default="both", help="default: both"
    )
    route.set_defaults(func=cmd_route)
    backfill = sub.add_parser(
        "backfill",
        help="backfill the days START..END of the bronze tables through the Dagster daemon, at "
        "the bounded concurrency",
        description="`acode backfill 2026-11-01 2026-11-20` submits a Dagster asset backfill of "
        "those days (both included) to the instance of DAGSTER_HOME: it is on the UI's Backfills "
        "page, the daemon runs it one run per day, and its syncs wait for the pool acode_source "
        "(ACODE_SOURCE_CONCURRENCY) like every other sync. Days already landed are synced again. "
        "--wait, or `acode backfill --follow ID` later, follows it here until the daemon is done.",
    )
    backfill.add_argument("start", nargs="?", help="first day, YYYY-MM-DD")
    backfill.add_argument("end", nargs="?", help="last day, YYYY-MM-DD (a day that is over)")
    backfill.add_argument(
        "--table",
        dest="tables",
        action="append",
        metavar="NAME",
        help="only this table (repeatable; default: the three)",
    )
    backfill.add_argument(
        "--wait",
        action="store_true",
        help="follow it until done and print each partition's outcome",
    )
    backfill.add_argument(
        "--follow", metavar="ID", help="follow an existing backfill (from here or the UI) instead"
    )
    backfill.set_defaults(func=cmd_backfill)
    _add_quarantine_commands(sub)
    audit = sub.add_parser(
        "audit",
        help="the audit trail: route changes, pins, releases, discards, syncs and backfills",
        description="Every route change, pin and unpin, quarantine release and discard, backfill "
        "or sync launched by a command, and credential re-read is one JSON record under _audit/ "
        "of the bronze bucket (the backup bucket when the primary could not be written), with "
        "S3 Object Lock when ACODE_AUDIT_RETENTION_DAYS is set. This prints them, oldest first.",
    )
    audit.add_argument("--since", metavar="D", help="from the day YYYY-MM-DD, or back 7d, 12h")
    audit.add_argument("--action", metavar="A", help="only this action, e.g. route or route.pin")
    audit.add_argument("--json", action="store_true", help="as a JSON list")
    audit.set_defaults(func=cmd_audit)
    return parser


def _add_quarantine_commands(sub: Any) -> None:
    quarantine = sub.add_parser(
        "quarantine",
        help="list, show, release or discard versions that failed a blocking check",
        description="A version that fails a blocking check is kept in quarantine, beside the "
        "published layout and invisible to its readers, in the bronze root it was written to. "
        "`acode quarantine list` shows them all (both roots), `show TABLE DAY` one day's with "
        "every check result, `release TABLE DAY --reason '...'` publishes one anyway (under the "
        "partition's lease, recorded in Dagster with who and why), `discard TABLE DAY` drops "
        "them. `acode sweep` removes those past ACODE_QUARANTINE_RETENTION_DAYS.",
    )
    actions = quarantine.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every quarantined version in both roots")
    listing.add_argument(
        "--table",
        dest="tables",
        action="append",
        metavar="NAME",
        help="only this table (repeatable; default: the three)",
    )
    listing.set_defaults(func=cmd_quarantine_list)
    for name, func, help_text in (
        ("show", cmd_quarantine_show, "one day's quarantined versions: files and check results"),
        (
            "release",
            cmd_quarantine_release,
            "publish a quarantined version anyway (the newest, or --version)",
        ),
        (
            "discard",
            cmd_quarantine_discard,
            "remove a day's quarantined versions (all of them, or --version)",
        ),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("table", help="e.g. farmarcas_si_analitico_diario")
        action.add_argument("day", help="the partition, YYYY-MM-DD")
        if name != "show":
            action.add_argument("--version", help="the version (its first characters will do)")
        if name == "release":
            action.add_argument(
                "--reason", help="why it is published anyway (required; kept with the version)"
            )
            action.add_argument("--by", help="who releases it (default: the OS user)")
        action.set_defaults(func=func)
    _add_bucket_commands(sub)
    sweep = sub.add_parser(
        "sweep",
        help="remove staging left by killed writers and expired quarantined versions, both roots",
        description="What the daily bronze_sweep_job does: staging older than "
        "ACODE_STAGING_MAX_AGE_H is removed unless a live lease covers its partition (its "
        "writer may be at work), and quarantined versions older than "
        "ACODE_QUARANTINE_RETENTION_DAYS are removed.",
    )
    sweep.add_argument(
        "--dry-run", action="store_true", help="show what would be removed; remove nothing"
    )
    sweep.set_defaults(func=cmd_sweep)
    report = sub.add_parser("report", help="the weekly operations report")
    kinds = report.add_subparsers(dest="kind", required=True)
    weekly = kinds.add_parser(
        "weekly",
        help="print the weekly report (Markdown); --send runs the week's operations and posts it",
        description="Without --send: the report of the week as materialized by acode_weekly_job "
        "(or a preview from the instance when none was). With --send: a run of acode_weekly_job "
        "here (sweep, replica and bucket verification, the report as the asset "
        "acode_ops/weekly_report) that posts it to Slack unless that week's was posted already.",
    )
    weekly.add_argument(
        "--week-ending",
        metavar="YYYY-MM-DD",
        help="the week's last local day (default: yesterday in São Paulo)",
    )
    weekly.add_argument("--send", action="store_true", help="run the job and post to Slack once")
    weekly.add_argument(
        "--resend", action="store_true", help="like --send, posting again if it was posted"
    )
    weekly.set_defaults(func=cmd_report_weekly)


def _add_bucket_commands(sub: Any) -> None:
    buckets = sub.add_parser(
        "buckets",
        help="compare the primary and backup buckets, or repair what differs",
        description="Both buckets hold the whole bronze layer: every published partition is "
        "mirrored to the other bucket and verified. `diff` compares them partition by partition "
        "(manifest, files, sizes, rows; --checksums also hashes every byte); `repair` copies the "
        "good copy of each partition over a missing, older or damaged one, verified, as the "
        "bronze_repair_job does. A large --days is the backfill of the history to the backup.",
    )
    actions = buckets.add_subparsers(dest="action", required=True)
    for name, func, help_text in (
        ("diff", cmd_buckets_diff, "what differs between the buckets (exit 1 when anything does)"),
        ("repair", cmd_buckets_repair, "copy each partition's good copy across, verified"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--days", type=int, default=7, help="complete days back from yesterday (default 7)"
        )
        action.add_argument(
            "--checksums", action="store_true", help="also hash every file of both copies"
        )
        action.add_argument(
            "--table", dest="tables", action="append", metavar="NAME", help="only this table"
        )
        action.set_defaults(func=func)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # Our progress lines at INFO; libraries (alembic, botocore, ...) only when they warn.
        configure_logging(settings.log_format)
        return int(args.func(args, settings))
    except AcodeError as exc:
        print(f"acode: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
