"""The alert rules: one announcement per problem and severity, a PagerDuty resolve per paged fix."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.alerts import Pending
from acode_dagster.incidents import (
    AlertState,
    CheckOutcome,
    channels,
    dedup_key,
    on_check,
    on_run_failure,
)

TABLE = "farmarcas_si_analitico_diario"


def outcome(record_id: int, passed: bool, severity: str = "ERROR", **kw: object) -> CheckOutcome:
    return CheckOutcome(
        record_id=record_id,
        table=TABLE,
        partition=str(kw.get("partition", "2026-11-20")),
        check=str(kw.get("check", "null_share")),
        passed=passed,
        severity=severity,  # type: ignore[arg-type]
        measured="7.00 % NULL in CNPJ",
        threshold="WARN at 1.00 %, ERROR at 5.00 %",
        run_id="r1",
    )


def test_a_failure_is_announced_once_and_paged_when_error() -> None:
    state, alerts = on_check({}, outcome(1, False), "http://ui/runs/r1")
    assert [a.action for a in alerts] == ["trigger"]
    (alert,) = alerts
    assert alert.page and alert.severity == "error"
    assert alert.dedup_key == dedup_key(TABLE, "2026-11-20", "null_share")
    assert alert.run_url == "http://ui/runs/r1"
    assert channels(alert) == {"slack", "pagerduty"}
    again, repeated = on_check(state, outcome(2, False), None)
    assert repeated == [] and again == state


def test_warn_goes_to_slack_only_and_escalation_is_news() -> None:
    state, alerts = on_check({}, outcome(1, False, "WARN"), None)
    assert [(a.severity, a.page) for a in alerts] == [("warning", False)]
    assert channels(alerts[0]) == {"slack"}
    state, alerts = on_check(state, outcome(2, False, "ERROR"), None)
    assert [(a.action, a.severity) for a in alerts] == [("trigger", "error")]


def test_a_pass_resolves_a_paged_problem_in_pagerduty_only() -> None:
    state, _ = on_check({}, outcome(1, False), None)
    state, alerts = on_check(state, outcome(2, True), None)
    assert state == {}
    (resolve,) = alerts
    assert resolve.action == "resolve"
    assert resolve.dedup_key == dedup_key(TABLE, "2026-11-20", "null_share")
    assert channels(resolve) == {"pagerduty"}


def test_a_pass_after_a_warning_is_silent_and_a_pass_of_nothing_too() -> None:
    state, _ = on_check({}, outcome(1, False, "WARN"), None)
    state, alerts = on_check(state, outcome(2, True), None)
    assert (state, alerts) == ({}, [])
    assert on_check({}, outcome(3, True), None) == ({}, [])


def test_error_easing_to_warn_resolves_the_page_and_tells_slack() -> None:
    state, _ = on_check({}, outcome(1, False), None)
    state, alerts = on_check(state, outcome(2, False, "WARN"), None)
    assert [(a.action, channels(a)) for a in alerts] == [
        ("resolve", {"pagerduty"}),
        ("trigger", {"slack"}),
    ]
    assert state == {dedup_key(TABLE, "2026-11-20", "null_share"): "WARN"}


def test_problems_are_told_apart_by_partition_and_check() -> None:
    state, first = on_check({}, outcome(1, False), None)
    state, second = on_check(state, outcome(2, False, partition="2026-11-21"), None)
    state, third = on_check(state, outcome(3, False, check="schema"), None)
    assert len(first) == len(second) == len(third) == 1
    assert len(state) == 3


def test_a_run_failure_is_told_in_slack_with_its_reason() -> None:
    alert = on_run_failure(
        "abcdef123456", job="bronze_acode_job", partition="2026-11-20", reason="x: dead", link="u"
    )
    assert channels(alert) == {"slack"}
    assert "2026-11-20" in alert.title and alert.measured == "x: dead"


def test_the_cursor_round_trips() -> None:
    _, alerts = on_check({}, outcome(1, False), "http://ui/runs/r1")
    state = AlertState(
        marks={"a:b": 7},
        done={"a:b": [9, 11]},
        open={"k": "ERROR"},
        runs_after=1.5,
        runs_seen=["r"],
        pending=[Pending(alerts[0], channels(alerts[0]), attempts=2)],
    )
    assert AlertState.from_json(state.to_json()) == state


@given(st.lists(st.sampled_from(["PASS", "WARN", "ERROR"]), max_size=40))
def test_triggers_are_exactly_the_changes_of_failing_severity(sequence: list[str]) -> None:
    state: dict[str, str] = {}
    triggers = resolves = 0
    announced = None
    expected_triggers = expected_resolves = 0
    for number, seen in enumerate(sequence):
        step = outcome(number, seen == "PASS", "WARN" if seen == "WARN" else "ERROR")
        state, alerts = on_check(state, step, None)  # type: ignore[arg-type]
        triggers += sum(a.action == "trigger" for a in alerts)
        resolves += sum(a.action == "resolve" for a in alerts)
        if seen not in ("PASS", announced):
            expected_triggers += 1
        if announced == "ERROR" and seen != "ERROR":
            expected_resolves += 1
        announced = None if seen == "PASS" else seen
    assert (triggers, resolves) == (expected_triggers, expected_resolves)
