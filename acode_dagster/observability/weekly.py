"""The weekly operations report, in plain Python (no Dagster here).

The Dagster side (:mod:`acode_dagster.defs.observability.weekly`) reads the instance and the
buckets into plain facts (:class:`WeekFacts`); :func:`build_report` turns them into a
:class:`WeeklyReport`, which renders as Markdown (the asset's page in the UI) and as one Slack
alert (:func:`slack_alert`, delivered exactly once by :func:`acode_dagster.alerts.deliver`).

Definitions, so the figures mean one thing:

* **The week** is seven local days of America/Sao_Paulo, ``first`` to ``last`` both included,
  from ``first`` 00:00 to the day after ``last`` 00:00 local time.
* **A table's partitions** are the week's seven days; each counts by its latest
  materialization, whenever it happened (Sunday's partition is synced on Monday at 02:00). Rows,
  value and sync durations are those of the week's partitions (every sync of them, re-syncs
  included, for the durations).
* **Value** is the exact (Decimal) sum of the ``sum_<value column>`` strings the syncs wrote in
  ``business_metrics``; a partition without it makes the value partial, and says so.
* **Freshness attainment** is the share of the week (up to the report's time when that is
  earlier) during which the table's newest materialization was at most the target old (the
  table's freshness fail window, 25 h): :func:`attainment`.
* **Percentiles** are nearest-rank (:func:`percentile`): always one of the measured durations.
* **Failovers** are the intervals a part of the route (source, bucket) spent on its backup,
  from the event that moved it there to the one that brought it back (:func:`failovers`); one
  still open at the report's time is *ongoing*.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal

from acode_dagster.alerts import Alert
from acode_dagster.failover import PARTS, Part, RouteEvent
from acode_dagster.routing import BACKUP, PRIMARY, Route
from acode_dagster.tables import SOURCE_TIMEZONE, Table

DEFAULT_FRESHNESS_TARGET = timedelta(hours=25)
WEEK_DAYS = 7
_SLACK_NEEDS_SHOWN = 8
"""Items of "needs a person" the Slack message lists; the rest are on the asset's page."""
_SLACK_LINE_MAX = 240

# ---------------------------------------------------------------------- the week


@dataclass(frozen=True)
class Week:
    """Seven local days, ``first`` .. ``last``."""

    last: date

    @property
    def first(self) -> date:
        return self.last - timedelta(days=WEEK_DAYS - 1)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range(WEEK_DAYS)]

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time(), SOURCE_TIMEZONE)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), datetime.min.time(), SOURCE_TIMEZONE)

    @property
    def label(self) -> str:
        return f"{self.first:%Y-%m-%d} .. {self.last:%Y-%m-%d}"

    @classmethod
    def before(cls, moment: datetime) -> Week:
        """The week that ends the local day before ``moment`` (a schedule's tick)."""
        if moment.tzinfo is None:
            raise ValueError("Week.before: the moment must be timezone-aware")
        return cls(moment.astimezone(SOURCE_TIMEZONE).date() - timedelta(days=1))

    @classmethod
    def ending(cls, text: str) -> Week:
        """The week whose last day is ``text`` (YYYY-MM-DD)."""
        try:
            return cls(date.fromisoformat(text.strip()))
        except ValueError:
            raise ValueError(
                f"week_ending={text!r} is not a day; use YYYY-MM-DD, the week's last day "
                "(a Sunday for the Monday schedule)"
            ) from None


# ---------------------------------------------------------------------- facts


@dataclass(frozen=True)
class Materialization:
    """One materialization of a bronze partition, as its metadata recorded it."""

    table: str
    partition: date | None
    at: datetime
    rows: int | None = None
    seconds: float | None = None
    source_role: str | None = None
    bucket_role: str | None = None
    business_metrics: Mapping[str, str] = field(default_factory=dict, hash=False)
    sla: str | None = None


@dataclass(frozen=True)
class CheckRun:
    """One evaluation of an asset check."""

    subject: str
    """The table, or the checked asset for a check of no table."""
    check: str
    partition: str | None
    at: datetime
    passed: bool
    severity: Literal["WARN", "ERROR"]
    description: str = ""


@dataclass(frozen=True)
class QuarantineEntry:
    table: str
    day: date
    version: str
    quarantined_at: str
    failed: tuple[str, ...]
    bucket: str


@dataclass(frozen=True)
class Verification:
    """One of the week's operations: the sweep, the replica or the bucket verification."""

    name: str
    ok: bool | None
    """None: not run (nothing to verify, e.g. one bucket only)."""
    summary: str
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeekFacts:
    week: Week
    as_of: datetime
    tables: Sequence[Table]
    materializations: Sequence[Materialization] = ()
    """Of the week's partitions (all of their syncs), and the table's materializations in the
    week and the newest one before it (for freshness), in any order; duplicates are fine."""
    checks: Sequence[CheckRun] = ()
    """From the week's start to ``as_of``."""
    route_events: Sequence[RouteEvent] = ()
    route_now: Route | None = None
    quarantines: Sequence[QuarantineEntry] = ()
    """Open now."""
    verifications: Sequence[Verification] = ()
    first_partition: date | None = None
    """No partition is expected before this day."""
    ui_url: str = ""


# ---------------------------------------------------------------------- pure figures


def attainment(
    times: Iterable[datetime], start: datetime, end: datetime, target: timedelta
) -> float:
    """Share of ``[start, end)`` during which the newest of ``times`` at or before the moment
    was at most ``target`` old (0.0 .. 1.0; 1.0 for an empty span).

    A time before ``start`` counts from itself: a table materialized an hour before the week
    began is fresh for the week's first ``target`` minus an hour.
    """
    span = (end - start).total_seconds()
    if span <= 0:
        return 1.0
    ordered = sorted(times)
    covered = 0.0
    for index, at in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        low = max(at, start)
        high = min(at + target, end)
        if following is not None:
            high = min(high, following)
        if high > low:
            covered += (high - low).total_seconds()
    return min(1.0, covered / span)


def percentile(values: Sequence[float], pct: int) -> float | None:
    """Nearest-rank percentile (``pct`` in 1..100): the smallest value with at least ``pct`` %
    of the values at or below it; None for no values."""
    if not 1 <= pct <= 100:
        raise ValueError(f"percentile: pct must be 1..100, got {pct}")
    if not values:
        return None
    ordered = sorted(values)
    rank = -(-pct * len(ordered) // 100)  # ceil, in integers
    return ordered[rank - 1]


@dataclass(frozen=True)
class Failover:
    """A part's stay on its backup."""

    part: Part
    started: datetime | None
    """None: it was on the backup before the earliest event read."""
    ended: datetime | None
    """None: still on the backup (ongoing)."""
    why: str
    back_why: str = ""
    automatic: bool = True

    def lasted(self, as_of: datetime) -> timedelta | None:
        if self.started is None:
            return None
        return (self.ended or as_of) - self.started


def failovers(events: Iterable[RouteEvent], route_now: Route | None = None) -> list[Failover]:
    """Each part's stays on its backup, from the route events (any order), oldest first.

    An event moves a part when it is a failover, a fail-back or a pin that changes the route;
    ``route_now`` adds a stay with no known start for a part on its backup with no open stay.
    """
    open_: dict[Part, tuple[datetime, str, bool]] = {}
    found: list[Failover] = []
    for event in sorted(events, key=lambda e: e.at):
        if not event.changes_route or event.to_role is None:
            continue
        for part in event.parts:
            if event.to_role == BACKUP and part not in open_:
                open_[part] = (event.at, event.describe(), event.automatic)
            elif event.to_role == PRIMARY:
                began = open_.pop(part, None)
                if began is None:
                    found.append(Failover(part, None, event.at, "", event.describe()))
                else:
                    found.append(
                        Failover(part, began[0], event.at, began[1], event.describe(), began[2])
                    )
    for part, (at, why, automatic) in open_.items():
        found.append(Failover(part, at, None, why, automatic=automatic))
    if route_now is not None:
        for part in PARTS:
            on_backup = getattr(route_now, part) == BACKUP
            if on_backup and part not in open_:
                found.append(
                    Failover(part, None, None, "on the backup since before the history read")
                )
    return sorted(found, key=lambda f: (f.started or datetime.min.replace(tzinfo=UTC), f.part))


def value_sum(
    metrics: Sequence[Mapping[str, str]], column: str | None
) -> tuple[Decimal | None, int]:
    """Exact sum of ``sum_<column>`` over the partitions' business metrics, and how many
    partitions lacked it (None when the table has no value column or none had it)."""
    if column is None:
        return None, 0
    total, missing, seen = Decimal(0), 0, 0
    for found in metrics:
        text = found.get(f"sum_{column}")
        if text is None:
            missing += 1
            continue
        try:
            total += Decimal(str(text))
        except InvalidOperation:
            missing += 1
            continue
        seen += 1
    return (total if seen else None), missing


# ---------------------------------------------------------------------- the report


@dataclass(frozen=True)
class CheckTally:
    check: str
    passed: int = 0
    warned: int = 0
    failed: int = 0


@dataclass(frozen=True)
class TableWeek:
    table: str
    value_column: str | None
    expected: tuple[date, ...]
    present: tuple[date, ...]
    rows: int
    value: Decimal | None
    value_missing: int
    syncs: int
    sync_p50_s: float | None
    sync_p95_s: float | None
    sync_max_s: float | None
    freshness: float
    freshness_target: timedelta
    checks: tuple[CheckTally, ...]
    quarantined: int
    from_backup: tuple[date, ...]
    sla_warn: int
    sla_error: int

    @property
    def missing(self) -> tuple[date, ...]:
        return tuple(d for d in self.expected if d not in self.present)

    @property
    def check_totals(self) -> CheckTally:
        return CheckTally(
            "all",
            sum(c.passed for c in self.checks),
            sum(c.warned for c in self.checks),
            sum(c.failed for c in self.checks),
        )


@dataclass(frozen=True)
class NeedsPerson:
    kind: str
    subject: str
    text: str

    def line(self) -> str:
        return f"{self.kind}: {self.subject}: {self.text}"


@dataclass(frozen=True)
class WeeklyReport:
    week: Week
    as_of: datetime
    tables: tuple[TableWeek, ...]
    failovers: tuple[Failover, ...]
    incidents: tuple[RouteEvent, ...]
    """Both sides down, and recoveries, in the week."""
    other_checks: tuple[tuple[str, CheckTally], ...]
    """Checks of no table (the replica check on ``redundancy``)."""
    quarantines: tuple[QuarantineEntry, ...]
    verifications: tuple[Verification, ...]
    needs: tuple[NeedsPerson, ...]
    ui_url: str = ""

    @property
    def report_id(self) -> str:
        """What the Slack delivery keys on: one report per week."""
        return f"weekly-report:{self.week.first:%Y-%m-%d}"


def _in(at: datetime, start: datetime, end: datetime) -> bool:
    return start <= at < end


def _of_week(run: CheckRun, week: Week) -> bool:
    """A partitioned check counts for the week of its partition (Sunday's is checked on
    Monday); any other for the week it ran in."""
    if run.partition:
        try:
            return date.fromisoformat(run.partition) in week.days
        except ValueError:
            return False
    return _in(run.at, week.start, week.end)


def build_report(facts: WeekFacts) -> WeeklyReport:
    week, as_of = facts.week, facts.as_of
    start, end = week.start, week.end
    needs: list[NeedsPerson] = []
    tables: list[TableWeek] = []
    latest_check: dict[tuple[str, str, str | None], CheckRun] = {}
    for run in sorted(facts.checks, key=lambda c: c.at):
        latest_check[(run.subject, run.check, run.partition)] = run
    for table in facts.tables:
        summary, found = _table_week(table, facts)
        tables.append(summary)
        needs += found
    other: dict[str, CheckTally] = {}
    table_names = {t.name for t in facts.tables}
    for run in facts.checks:
        if run.subject in table_names or not _of_week(run, week):
            continue
        other[f"{run.subject} {run.check}"] = _tally(
            other.get(f"{run.subject} {run.check}", CheckTally(run.check)), run
        )
    for (subject, check, partition), run in sorted(latest_check.items(), key=lambda kv: kv[1].at):
        if not run.passed and run.severity == "ERROR":
            where = f" {partition}" if partition else ""
            needs.append(
                NeedsPerson(
                    "failed check",
                    f"{subject}{where}",
                    f"{check} failed at {_local(run.at)} and has not passed since"
                    + (f": {run.description}" if run.description else ""),
                )
            )
    for entry in facts.quarantines:
        needs.append(
            NeedsPerson(
                "quarantine",
                f"{entry.table} {entry.day:%Y-%m-%d}",
                f"version {entry.version} in the {entry.bucket} bucket, quarantined "
                f"{_when(entry.quarantined_at)}, failed "
                f"{', '.join(entry.failed) or 'a blocking check'} "
                f"(review it with `acode quarantine show {entry.table} {entry.day:%Y-%m-%d}`, "
                "then release or discard it)",
            )
        )
    stays = [
        f
        for f in failovers(facts.route_events, facts.route_now)
        if (f.started is None or f.started < min(end, as_of))
        and (f.ended is None or f.ended >= start)
    ]
    for stay in stays:
        if stay.ended is None:
            since = f"since {_local(stay.started)}" if stay.started else "since before the week"
            needs.append(
                NeedsPerson(
                    "failover in force",
                    stay.part,
                    f"on the backup {since}: {stay.why}" if stay.why else f"on the backup {since}",
                )
            )
    incidents = tuple(
        e
        for e in sorted(facts.route_events, key=lambda e: e.at)
        if e.kind in ("both_down", "recovered") and _in(e.at, start, end)
    )
    for done in facts.verifications:
        if done.ok is False:
            problems = done.problems or (done.summary,)
            needs += [NeedsPerson(done.name, "weekly operations", p) for p in problems]
    return WeeklyReport(
        week=week,
        as_of=as_of,
        tables=tuple(tables),
        failovers=tuple(stays),
        incidents=incidents,
        other_checks=tuple(sorted(other.items())),
        quarantines=tuple(facts.quarantines),
        verifications=tuple(facts.verifications),
        needs=tuple(needs),
        ui_url=facts.ui_url,
    )


def _tally(tally: CheckTally, run: CheckRun) -> CheckTally:
    if run.passed:
        return CheckTally(tally.check, tally.passed + 1, tally.warned, tally.failed)
    if run.severity == "WARN":
        return CheckTally(tally.check, tally.passed, tally.warned + 1, tally.failed)
    return CheckTally(tally.check, tally.passed, tally.warned, tally.failed + 1)


def _table_week(table: Table, facts: WeekFacts) -> tuple[TableWeek, list[NeedsPerson]]:
    week = facts.week
    mine = [m for m in facts.materializations if m.table == table.name]
    days = set(week.days)
    # Latest per partition: what the partition holds now.
    latest: dict[date, Materialization] = {}
    syncs: list[Materialization] = []
    seen: set[tuple[date | None, datetime]] = set()
    for m in sorted(mine, key=lambda m: m.at):
        if (m.partition, m.at) in seen:
            continue
        seen.add((m.partition, m.at))
        if m.partition in days:
            latest[m.partition] = m
            syncs.append(m)
    # A day is synced once it is over: a week still under way expects only its past days.
    today = facts.as_of.astimezone(SOURCE_TIMEZONE).date()
    expected = tuple(
        d
        for d in week.days
        if d < today and (facts.first_partition is None or d >= facts.first_partition)
    )
    present = tuple(sorted(latest))
    value_column: str | None = getattr(table, "value_column", None)
    value, value_missing = value_sum([latest[d].business_metrics for d in present], value_column)
    durations = [m.seconds for m in syncs if m.seconds is not None]
    target = _freshness_target(table)
    times = sorted({m.at for m in mine if m.at < min(week.end, facts.as_of)})
    # Only the newest before the week matters; attainment() handles the rest.
    before = [t for t in times if t < week.start]
    times = before[-1:] + [t for t in times if t >= week.start]
    fresh = attainment(times, week.start, min(week.end, max(facts.as_of, week.start)), target)
    tallies: dict[str, CheckTally] = {}
    for run in facts.checks:
        if run.subject == table.name and _of_week(run, week):
            tallies[run.check] = _tally(tallies.get(run.check, CheckTally(run.check)), run)
    from_backup = tuple(
        d for d in present if BACKUP in (latest[d].source_role, latest[d].bucket_role)
    )
    sla_warn = sum(1 for m in syncs if m.sla == "warn")
    sla_errors = [m for m in syncs if m.sla == "error"]
    summary = TableWeek(
        table=table.name,
        value_column=value_column,
        expected=expected,
        present=present,
        rows=sum(latest[d].rows or 0 for d in present),
        value=value,
        value_missing=value_missing,
        syncs=len(syncs),
        sync_p50_s=percentile(durations, 50),
        sync_p95_s=percentile(durations, 95),
        sync_max_s=max(durations) if durations else None,
        freshness=fresh,
        freshness_target=target,
        checks=tuple(tallies[name] for name in sorted(tallies)),
        quarantined=sum(1 for q in facts.quarantines if q.table == table.name),
        from_backup=from_backup,
        sla_warn=sla_warn,
        sla_error=len(sla_errors),
    )
    needs: list[NeedsPerson] = []
    if summary.missing:
        needs.append(
            NeedsPerson(
                "missing partitions",
                table.name,
                f"{day_runs(summary.missing)} not materialized (`acode backfill` syncs them)",
            )
        )
    for m in sla_errors:
        needs.append(
            NeedsPerson(
                "sync SLA",
                f"{table.name} {m.partition:%Y-%m-%d}" if m.partition else table.name,
                "the sync ran past the error threshold"
                + (f" ({m.seconds / 60:.0f} min)" if m.seconds is not None else ""),
            )
        )
    return summary, needs


def day_runs(days: Sequence[date]) -> str:
    """``2026-11-23..2026-11-25, 2026-11-28``: consecutive days as one run."""
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(
        f"{r[0]:%Y-%m-%d}" if len(r) == 1 else f"{r[0]:%Y-%m-%d}..{r[-1]:%Y-%m-%d}" for r in runs
    )


def _freshness_target(table: Table) -> timedelta:
    thresholds = getattr(table, "thresholds", None)
    fail = getattr(thresholds, "freshness_fail", None)
    return fail if isinstance(fail, timedelta) else DEFAULT_FRESHNESS_TARGET


# ---------------------------------------------------------------------- rendering


def _local(at: datetime | None) -> str:
    if at is None:
        return "?"
    return at.astimezone(SOURCE_TIMEZONE).strftime("%Y-%m-%d %H:%M")


def _when(text: str) -> str:
    """An ISO time as the rest of the report shows times (São Paulo, to the minute)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return text
    return _local(parsed) if parsed.tzinfo else text


def duration(delta: timedelta | None) -> str:
    if delta is None:
        return "unknown"
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


def money(value: Decimal | None) -> str:
    return "—" if value is None else f"{value:,}"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pct(share: float) -> str:
    # Floor to one decimal: 99.97 % must not read as 100 %.
    return f"{math.floor(share * 1000) / 10:.1f} %"


def table_line(t: TableWeek) -> str:
    """One line per table: what Slack shows."""
    totals = t.check_totals
    value = f" · value {money(t.value)}" if t.value_column else ""
    return (
        f"{len(t.present)}/{len(t.expected)} partitions · {t.rows:,} rows{value} · checks "
        f"{totals.passed} passed, {totals.warned} warned, {totals.failed} failed · fresh "
        f"{_pct(t.freshness)} · sync p50/p95/max {_seconds(t.sync_p50_s)}/"
        f"{_seconds(t.sync_p95_s)}/{_seconds(t.sync_max_s)}"
    )


def render_markdown(report: WeeklyReport) -> str:
    week = report.week
    out = [
        f"# ACODE weekly report: {week.label}",
        "",
        f"Local days of America/Sao_Paulo, {week.first:%a %d %b} to {week.last:%a %d %b}; "
        f"written {_local(report.as_of)} (São Paulo).",
        "",
        f"## Needs a person ({len(report.needs)})",
        "",
    ]
    if report.needs:
        out += [f"- **{_md(n.kind)}** — {_md(n.subject)}: {_md(n.text)}" for n in report.needs]
    else:
        out.append(
            "Nothing: every partition landed, every check passed in the end, no "
            "quarantine is open, the route is on the primaries and the verifications agree."
        )
    for section in (_tables_md, _checks_md, _failovers_md, _quarantines_md, _operations_md):
        out += ["", *section(report)]
    out += [
        "",
        "Partitions, rows, value and sync durations are those of the week's seven partitions "
        "(each by its latest materialization; durations over every sync of them). Percentiles "
        "are nearest-rank. Freshness is the share of the week during which the newest "
        "materialization was at most the target old.",
    ]
    return "\n".join(out) + "\n"


def _tables_md(report: WeeklyReport) -> list[str]:
    out = [
        "## Tables",
        "",
        "| table | partitions | rows | value | checks passed / warned / failed | quarantined "
        "| fresh (≤ target) | syncs | sync p50 / p95 / max | SLA warn / error | from backup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in report.tables:
        totals = t.check_totals
        value = "—"
        if t.value_column:
            value = f"{money(t.value)} ({t.value_column})"
            if t.value_missing:
                value += f", {t.value_missing} partition(s) without figures"
        target_h = t.freshness_target.total_seconds() / 3600
        out.append(
            f"| {t.table} | {len(t.present)}/{len(t.expected)} | {t.rows:,} | {_md(value)} "
            f"| {totals.passed} / {totals.warned} / {totals.failed} | {t.quarantined} "
            f"| {_pct(t.freshness)} (≤ {target_h:g} h) | {t.syncs} "
            f"| {_seconds(t.sync_p50_s)} / {_seconds(t.sync_p95_s)} / {_seconds(t.sync_max_s)} "
            f"| {t.sla_warn} / {t.sla_error} "
            f"| {', '.join(f'{d:%m-%d}' for d in t.from_backup) or 'none'} |"
        )
    return out


def _checks_md(report: WeeklyReport) -> list[str]:
    out = [
        "## Checks",
        "",
        "| table | check | passed | warned | failed |",
        "|---|---|---:|---:|---:|",
    ]
    rows = [(t.table, c) for t in report.tables for c in t.checks]
    rows += [(name.rsplit(" ", 1)[0], c) for name, c in report.other_checks]
    if rows:
        out += [f"| {s} | {c.check} | {c.passed} | {c.warned} | {c.failed} |" for s, c in rows]
    else:
        out.append("| — | no check ran this week | | | |")
    return out


def _failovers_md(report: WeeklyReport) -> list[str]:
    out = ["## Failovers", ""]
    if not (report.failovers or report.incidents):
        return [*out, "None: the source and the bucket stayed on their primaries all week."]
    out += [
        "| part | on backup from | back on primary | lasted | why |",
        "|---|---|---|---:|---|",
    ]
    for f in report.failovers:
        back = _local(f.ended) if f.ended else "**ongoing**"
        lasted = duration(f.lasted(report.as_of))
        out.append(
            f"| {f.part} | {_local(f.started) if f.started else 'before the week'} "
            f"| {back} | {lasted}{'' if f.ended else ' so far'} | {_md(f.why)} |"
        )
    for e in report.incidents:
        out.append(f"| {' and '.join(e.parts)} | {_local(e.at)} | | | {_md(e.describe())} |")
    return out


def _quarantines_md(report: WeeklyReport) -> list[str]:
    out = ["## Quarantined versions (open)", ""]
    if not report.quarantines:
        return [*out, "None."]
    out += [
        "| table | day | version | bucket | quarantined | failed |",
        "|---|---|---|---|---|---|",
    ]
    out += [
        f"| {q.table} | {q.day:%Y-%m-%d} | `{q.version}` | {q.bucket} | {_when(q.quarantined_at)} "
        f"| {_md(', '.join(q.failed))} |"
        for q in report.quarantines
    ]
    return out


def _operations_md(report: WeeklyReport) -> list[str]:
    out = ["## Weekly operations", "", "| operation | result | detail |", "|---|---|---|"]
    for v in report.verifications:
        verdict = {True: "ok", False: "**problems**", None: "not run"}[v.ok]
        detail = "; ".join((v.summary, *v.problems)) if v.problems else v.summary
        out.append(f"| {v.name} | {verdict} | {_md(detail)} |")
    if not report.verifications:
        out.append("| — | not run | |")
    return out


def slack_alert(report: WeeklyReport, asset_url: str, *, resend_of: str = "") -> Alert:
    """The report as one Slack message: a line per table, what needs a person, and the link to
    the full report. ``resend_of`` (a run id) makes a deliberate second post a new alert."""
    needs = report.needs
    title = f"Weekly report {report.week.label}: " + (
        f"{len(needs)} item(s) need a person" if needs else "all clear"
    )
    details: dict[str, str] = {
        t.table: _clip(table_line(t), _SLACK_LINE_MAX) for t in report.tables
    }
    ongoing = [f for f in report.failovers if f.ended is None]
    details["failovers"] = (
        f"{len(report.failovers)} this week"
        + (f", {len(ongoing)} still in force" if ongoing else "")
        + (
            ": "
            + "; ".join(f"{f.part} {duration(f.lasted(report.as_of))}" for f in report.failovers)
            if report.failovers
            else ""
        )
    )
    if needs:
        shown = [_clip(n.line(), _SLACK_LINE_MAX) for n in needs[:_SLACK_NEEDS_SHOWN]]
        more = len(needs) - len(shown)
        details["needs a person"] = (
            "\n"
            + "\n".join(f"– {line}" for line in shown)
            + (f"\n– and {more} more on the report's page" if more else "")
        )
    present = sum(len(t.present) for t in report.tables)
    expected = sum(len(t.expected) for t in report.tables)
    return Alert(
        id=report.report_id + (f":resend:{resend_of}" if resend_of else ""),
        action="trigger",
        severity="warning" if needs else "info",
        title=title,
        dedup_key=report.report_id,
        page=False,
        measured=f"{present}/{expected} partitions, {sum(t.rows for t in report.tables):,} rows",
        details=details,
        run_url=asset_url or None,
        occurred_at=report.as_of.astimezone(UTC).isoformat(timespec="seconds"),
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def figures(report: WeeklyReport) -> dict[str, float | int]:
    """Numbers for the asset's metadata, which the UI plots week over week."""
    found: dict[str, float | int] = {
        "needs_a_person": len(report.needs),
        "failovers": len(report.failovers),
        "open_quarantines": len(report.quarantines),
    }
    for t in report.tables:
        totals = t.check_totals
        found[f"{t.table}/partitions"] = len(t.present)
        found[f"{t.table}/missing_partitions"] = len(t.missing)
        found[f"{t.table}/rows"] = t.rows
        found[f"{t.table}/freshness_pct"] = round(t.freshness * 100, 2)
        found[f"{t.table}/checks_failed"] = totals.failed
        if t.sync_p95_s is not None:
            found[f"{t.table}/sync_p95_s"] = round(t.sync_p95_s, 3)
        if t.sync_max_s is not None:
            found[f"{t.table}/sync_max_s"] = round(t.sync_max_s, 3)
    return found
