"""The weekly report's figures and rendering, as pure functions over plain facts."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.alerts import format_slack
from acode_dagster.failover import RouteEvent
from acode_dagster.observability.weekly import (
    CheckRun,
    Materialization,
    QuarantineEntry,
    Verification,
    Week,
    WeekFacts,
    attainment,
    build_report,
    day_runs,
    failovers,
    percentile,
    render_markdown,
    slack_alert,
    value_sum,
)
from acode_dagster.routing import Route
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS, SOURCE_TIMEZONE, TABLES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WEEK = Week(date(2026, 11, 29))  # Monday 23 .. Sunday 29 November


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SOURCE_TIMEZONE)


# ---------------------------------------------------------------------- the week


def test_the_week_is_the_seven_local_days_before_the_tick() -> None:
    tick = datetime(2026, 11, 30, 6, 0, tzinfo=SOURCE_TIMEZONE)
    week = Week.before(tick)
    assert week == WEEK and week.first == date(2026, 11, 23) and len(week.days) == 7
    assert week.start == local(date(2026, 11, 23), 0) and week.end == local(date(2026, 11, 30), 0)
    # 06:00 in São Paulo is 09:00 UTC: the same week whichever zone the tick is given in.
    assert Week.before(tick.astimezone(UTC)) == WEEK
    assert Week.ending("2026-11-29") == WEEK
    with pytest.raises(ValueError, match="week_ending='last sunday' is not a day"):
        Week.ending("last sunday")


# ---------------------------------------------------------------------- freshness attainment


def test_attainment_counts_the_time_within_the_target() -> None:
    start, end, target = at(0), at(100), timedelta(seconds=25)
    assert attainment([], start, end, target) == 0.0
    assert attainment([at(0)], start, end, target) == 0.25
    # A materialization before the span counts from itself: 10 s of its 25 fall in the span.
    assert attainment([at(-15)], start, end, target) == 0.10
    # Overlapping freshness windows are not counted twice.
    assert attainment([at(0), at(10), at(50)], start, end, target) == (35 + 25) / 100
    assert attainment([at(n) for n in range(0, 100, 25)], start, end, target) == 1.0
    assert attainment([at(95)], start, end, target) == 0.05
    assert attainment([at(100)], start, end, target) == 0.0


@given(
    st.lists(st.integers(-60, 160), max_size=12),
    st.integers(0, 80),
    st.integers(1, 120),
)
def test_attainment_equals_counting_each_second(times: list[int], target: int, span: int) -> None:
    """Against the definition, second by second: a moment is fresh when some materialization
    at or before it is at most ``target`` old (with integer inputs both are exact)."""
    fresh = sum(1 for p in range(span) if any(t <= p < t + target for t in times))
    got = attainment([at(t) for t in times], at(0), at(span), timedelta(seconds=target))
    assert got == pytest.approx(fresh / span)


@given(st.lists(st.integers(0, 200), max_size=10), st.integers(0, 200), st.integers(1, 60))
def test_another_materialization_never_lowers_attainment(
    times: list[int], extra: int, target: int
) -> None:
    def share(found: list[int]) -> float:
        return attainment([at(t) for t in found], at(0), at(200), timedelta(seconds=target))

    assert 0.0 <= share(times) <= share([*times, extra]) <= 1.0


# ---------------------------------------------------------------------- percentiles


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in (15, 20, 35, 40, 50)]
    assert percentile(values, 50) == 35.0
    assert percentile(values, 95) == 50.0
    assert percentile(values, 30) == 20.0  # rank ceil(1.5) = 2
    assert percentile(values, 100) == 50.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"1\.\.100"):
        percentile(values, 0)


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40), st.integers(1, 100))
def test_a_percentile_is_a_value_with_pct_at_or_below_it(values: list[int], pct: int) -> None:
    found = percentile([float(v) for v in values], pct)
    assert found is not None and found in values
    n = len(values)
    # At least pct % of the values are <= it, and fewer than pct % are below it.
    assert 100 * sum(1 for v in values if v <= found) >= pct * n
    assert 100 * sum(1 for v in values if v < found) < pct * n


# ---------------------------------------------------------------------- failovers, value


def event(kind: str, part: str, to_role: str, when: datetime, why: str = "") -> RouteEvent:
    from_role = "primary" if to_role == "backup" else "backup"
    return RouteEvent(
        kind=kind,  # type: ignore[arg-type]
        part=part,  # type: ignore[arg-type]
        parts=(part,),  # type: ignore[arg-type]
        from_role=from_role,  # type: ignore[arg-type]
        to_role=to_role,  # type: ignore[arg-type]
        at=when,
        reason=why or f"({kind})",
        automatic=True,
        critical=False,
    )


def test_failovers_pair_each_switch_with_its_return() -> None:
    day = date(2026, 11, 25)
    events = [
        event("failback", "source", "primary", local(day, 13, 30)),
        event("failover", "source", "backup", local(day, 10, 0), "after 2 failed probes"),
        event("failover", "bucket", "backup", local(day, 20, 0)),
    ]
    stays = failovers(events, Route(source="primary", bucket="backup"))
    assert [(f.part, f.lasted(local(day, 23, 0))) for f in stays] == [
        ("source", timedelta(hours=3, minutes=30)),
        ("bucket", timedelta(hours=3)),
    ]
    assert stays[0].ended == local(day, 13, 30) and stays[1].ended is None
    # On the backup with no event read: a stay of unknown start.
    (old,) = failovers([], Route(source="backup", bucket="primary"))
    assert old.part == "source" and old.started is None and old.ended is None


def test_consecutive_days_read_as_runs() -> None:
    days = [date(2026, 11, d) for d in (28, 23, 24, 25, 29, 26)]
    assert day_runs(days) == "2026-11-23..2026-11-26, 2026-11-28..2026-11-29"
    assert day_runs([date(2026, 11, 27)]) == "2026-11-27" and day_runs([]) == ""


def test_value_is_an_exact_decimal_sum() -> None:
    metrics = [{"sum_ACODE_Val_Total": "0.10"}, {"sum_ACODE_Val_Total": "0.20"}, {"rows": "3"}]
    assert value_sum(metrics, "ACODE_Val_Total") == (Decimal("0.30"), 1)
    assert value_sum(metrics, None) == (None, 0)
    assert value_sum([{}], "ACODE_Val_Total") == (None, 1)


# ---------------------------------------------------------------------- the report


def seeded_week() -> WeekFacts:
    """A week of fiscal lines with one day missing, a sync past the SLA, a failover and its
    fail-back, a failed check, an open quarantine, a bucket that differs."""
    days = WEEK.days
    materializations = [
        Materialization(
            FISCAL_LINES.name,
            day,
            local(day + timedelta(days=1), 2, 10),
            rows=1000 + n,
            seconds=60.0 * (n + 1),
            source_role="backup" if n == 2 else "primary",
            bucket_role="primary",
            business_metrics={"rows": str(1000 + n), "sum_ACODE_Val_Total": f"{n}.25"},
            sla="error" if n == 4 else "ok",
        )
        for n, day in enumerate(days)
        if n != 5
    ]
    # The two days before the week, synced on Sunday 22 and Monday 23 at 02:10: the week
    # starts fresh, and a sync in the week of a day before it counts for freshness.
    materializations += [
        Materialization(
            FISCAL_LINES.name,
            days[0] - timedelta(days=n),
            local(days[0], 2, 10) - timedelta(days=n - 1),
        )
        for n in (1, 2)
    ]
    checks = [
        CheckRun(FISCAL_LINES.name, "null_share", f"{day}", local(day, 3), True, "ERROR")
        for day in days[:3]
    ] + [
        CheckRun(FISCAL_LINES.name, "volume", f"{days[3]}", local(days[4], 2, 30), False, "WARN"),
        CheckRun(
            FISCAL_LINES.name,
            "reconciliation",
            f"{days[4]}",
            local(days[5], 2, 30),
            False,
            "ERROR",
            "bronze 1003 rows, source 1010",
        ),
    ]
    return WeekFacts(
        week=WEEK,
        as_of=local(date(2026, 11, 30), 6),
        tables=TABLES,
        materializations=materializations,
        checks=checks,
        route_events=[
            event("failover", "source", "backup", local(days[2], 10), "after 2 failed probes"),
            event("failback", "source", "primary", local(days[2], 13, 30)),
        ],
        route_now=Route(),
        quarantines=[
            QuarantineEntry(
                FISCAL_LINES.name,
                days[4],
                "v-1234",
                "2026-11-28T02:20:00-03:00",
                ("null_share",),
                "primary",
            )
        ],
        verifications=[
            Verification("sweep", True, "primary root: removed 1 staging leftover"),
            Verification("replica verification", True, "15 of 15 window(s) equal"),
            Verification(
                "bucket verification",
                False,
                "20 of 21 partition(s) the same in both buckets",
                (f"{FISCAL_LINES.name} {days[1]}: copy_to_backup: the backup lacks it",),
            ),
        ],
    )


def test_the_report_lists_every_problem_of_the_week() -> None:
    report = build_report(seeded_week())
    (fiscal, products, complements) = report.tables
    assert fiscal.table == FISCAL_LINES.name and products.table == PRODUCTS.name
    assert complements.table == NFE_COMPLEMENTS.name
    assert len(fiscal.present) == 6 and fiscal.missing == (WEEK.days[5],)
    assert fiscal.rows == sum(1000 + n for n in range(7) if n != 5)
    assert fiscal.value == Decimal("17.50")  # 0.25 + 1.25 + 2.25 + 3.25 + 4.25 + 6.25
    assert (fiscal.sync_p50_s, fiscal.sync_p95_s, fiscal.sync_max_s) == (180.0, 420.0, 420.0)
    assert fiscal.from_backup == (WEEK.days[2],) and fiscal.sla_error == 1
    # Fresh from the sync before the week on, each sync covering 25 h, until Saturday's
    # sync runs out (02:10 + 25 h = Sunday 03:10): 20 h 50 min of the week stale.
    assert fiscal.freshness == pytest.approx(1 - (20 + 50 / 60) / (7 * 24))
    totals = fiscal.check_totals
    assert (totals.passed, totals.warned, totals.failed) == (3, 1, 1)
    assert products.present == () and len(products.missing) == 7
    kinds = [n.kind for n in report.needs]
    assert kinds.count("missing partitions") == 3  # the fiscal day, and the two empty tables
    assert {"failed check", "quarantine", "sync SLA", "bucket verification"} <= set(kinds)
    assert "failover in force" not in kinds  # it failed back
    (stay,) = report.failovers
    assert stay.lasted(report.as_of) == timedelta(hours=3, minutes=30)

    text = render_markdown(report)
    assert "# ACODE weekly report: 2026-11-23 .. 2026-11-29" in text
    assert "| source | 2026-11-25 10:00 | 2026-11-25 13:30 | 3 h 30 min |" in text
    assert "reconciliation failed at 2026-11-28 02:30" in text
    assert "| farmarcas_si_analitico_diario | 2026-11-27 | `v-1234` | primary |" in text
    assert "6/7" in text and "17.50 (ACODE_Val_Total)" in text and "87.5 %" in text
    assert "copy_to_backup" in text and "**problems**" in text


def test_a_failover_still_in_force_needs_a_person() -> None:
    facts = seeded_week()
    ongoing = WeekFacts(
        week=facts.week,
        as_of=facts.as_of,
        tables=facts.tables,
        route_events=[event("failover", "bucket", "backup", local(WEEK.days[6], 22))],
        route_now=Route(bucket="backup"),
    )
    report = build_report(ongoing)
    (need,) = [n for n in report.needs if n.kind == "failover in force"]
    assert need.subject == "bucket" and "since 2026-11-29 22:00" in need.text
    assert "| **ongoing** | 8 h 0 min so far |" in render_markdown(report)


def test_the_slack_message_is_short_and_within_slack_limits() -> None:
    report = build_report(seeded_week())
    alert = slack_alert(report, "http://ui.example/assets/acode_ops/weekly_report")
    assert alert.id == "weekly-report:2026-11-23" and alert.severity == "warning"
    assert slack_alert(report, "", resend_of="run-2").id == "weekly-report:2026-11-23:resend:run-2"
    text, blocks = format_slack(alert, "#ops")
    assert len(blocks) <= 50
    for block in blocks:
        section = block.get("text", {}).get("text", "")
        assert len(section) <= 3000
    assert "need a person" in text and "quarantine" in text and "failed check" in text
    assert "6/7 partitions" in text and "View in Dagster" in text
    assert "farmarcas_si_analitico_diario" in text and "source 3 h 30 min" in text
