"""The sync-duration SLA's rules: one WARN, one ERROR with one page, one resolve per run."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acode_dagster.alerts import Alert
from acode_dagster.errors import ConfigError
from acode_dagster.incidents import AlertState, channels
from acode_dagster.observability.sla import (
    SLA_ENDED_TAG,
    SLA_MINUTES_TAG,
    SLA_TAG,
    RunEnd,
    RunningSync,
    SlaOpen,
    SlaThresholds,
    dedup_key,
    no_longer_running,
    sla_step,
    stage_of,
    told_by_tags,
)
from acode_dagster.settings import Settings

T = SlaThresholds(warn_minutes=180, error_minutes=240)
START = 1_780_000_000.0
RUN = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"


def running(minutes: float, run_id: str = RUN) -> RunningSync:
    return RunningSync(
        run_id=run_id,
        job="bronze_acode_job",
        partition="2026-11-20",
        tables=("farmarcas_si_analitico_diario",),
        minutes=minutes,
        started_at=START,
    )


def at(minutes: float) -> float:
    return START + minutes * 60


def step(
    open_runs: dict[str, SlaOpen],
    minutes: float | None,
    ended: RunEnd | None = None,
    thresholds: SlaThresholds = T,
) -> tuple[dict[str, SlaOpen], list[Alert]]:
    """One tick: the run still running at ``minutes``, or (None) ended as ``ended`` says."""
    now_running = [running(minutes)] if minutes is not None else []
    ends = {RUN: ended} if ended is not None else {}
    result = sla_step(
        open_runs,
        now_running,
        thresholds,
        ends,
        links={RUN: f"http://ui/runs/{RUN}"},
        now=at(minutes or 0),
    )
    return result.open, result.alerts


# ---------------------------------------------------------------------- stages


@pytest.mark.parametrize(
    ("minutes", "stage"),
    [(0, "ok"), (179.99, "ok"), (180, "warn"), (239.99, "warn"), (240, "error"), (1e6, "error")],
)
def test_the_stage_of_a_duration(minutes: float, stage: str) -> None:
    assert stage_of(minutes * 60, T) == stage


def test_equal_thresholds_go_straight_to_error() -> None:
    same = SlaThresholds(1, 1)
    assert stage_of(59.9, same) == "ok"
    assert stage_of(60, same) == "error"


@pytest.mark.parametrize(("warn", "error"), [(0, 1), (-1, 1), (2, 1), (math.nan, 1), (1, math.inf)])
def test_thresholds_that_make_no_sense_are_refused(warn: float, error: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        SlaThresholds(warn, error)


# ---------------------------------------------------------------------- settings


def test_the_settings_default_to_180_and_240_minutes_and_take_fractions() -> None:
    default = Settings.from_env({})
    assert (default.sync_warn_minutes, default.sync_error_minutes) == (180.0, 240.0)
    quick = Settings.from_env({"ACODE_SYNC_WARN_MINUTES": "0.05", "ACODE_SYNC_ERROR_MINUTES": ".1"})
    assert (quick.sync_warn_minutes, quick.sync_error_minutes) == (0.05, 0.1)


def test_an_error_threshold_below_the_warn_one_names_both_settings_and_the_fix() -> None:
    env = {"ACODE_SYNC_WARN_MINUTES": "240", "ACODE_SYNC_ERROR_MINUTES": "180"}
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    text = str(error.value)
    assert "ACODE_SYNC_ERROR_MINUTES=180" in text and "ACODE_SYNC_WARN_MINUTES=240" in text
    assert "raise ACODE_SYNC_ERROR_MINUTES or lower ACODE_SYNC_WARN_MINUTES" in text


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan", "inf"])
@pytest.mark.parametrize("name", ["ACODE_SYNC_WARN_MINUTES", "ACODE_SYNC_ERROR_MINUTES"])
def test_a_threshold_that_is_no_positive_number_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}='{value}'"):
        Settings.from_env({name: value})


# ---------------------------------------------------------------------- one run's alerts


def test_under_the_warn_threshold_nothing_is_told_or_kept() -> None:
    state, alerts = step({}, 179)
    assert state == {} and alerts == []


def test_a_run_past_warn_then_error_is_told_once_each_and_pages_once() -> None:
    state, alerts = step({}, 181)
    (warn,) = alerts
    assert warn.severity == "warning" and not warn.page
    assert channels(warn) == {"slack"}
    assert warn.id == f"sync_sla:{RUN}:warn"
    assert "has been running 3 h 01 min, past the WARN threshold of 3 h 00 min" in warn.title
    assert warn.run_url == f"http://ui/runs/{RUN}" and warn.partition == "2026-11-20"
    assert state[RUN].stage == "warn"

    state, alerts = step(state, 200)
    assert alerts == [], "the same stage is not told again"

    state, alerts = step(state, 241)
    (error,) = alerts
    assert error.severity == "error" and error.page
    assert channels(error) == {"slack", "pagerduty"}
    assert error.dedup_key == dedup_key(RUN)
    assert state[RUN].stage == "error"

    state, alerts = step(state, 400)
    assert alerts == []


def test_the_end_of_a_paged_run_resolves_its_incident_and_tells_slack_how_it_ended() -> None:
    state, _ = step({}, 250)
    state, alerts = step(state, None, RunEnd("succeeded", at(262.5)))
    assert state == {}
    resolve, told = alerts
    assert resolve.action == "resolve" and channels(resolve) == {"pagerduty"}
    assert resolve.dedup_key == dedup_key(RUN)
    assert told.action == "trigger" and channels(told) == {"slack"} and told.severity == "info"
    assert told.title.startswith("resolved: bronze run 0f1e2d3c of bronze_acode_job")
    assert "ran 4 h 22 min and succeeded" in told.title
    state, alerts = step(state, None, RunEnd("succeeded", at(262.5)))
    assert alerts == [], "a run resolved is forgotten"


def test_the_end_of_a_run_only_warned_tells_slack_and_pages_nobody() -> None:
    state, _ = step({}, 190)
    _, alerts = step(state, None, RunEnd("failed", at(200)))
    (told,) = alerts
    assert channels(told) == {"slack"} and "ran 3 h 20 min and failed" in told.title


def test_a_run_that_jumps_past_error_between_two_ticks_gets_the_error_alone() -> None:
    state, alerts = step({}, 100)
    assert alerts == []
    state, alerts = step(state, 300)
    assert [a.id for a in alerts] == [f"sync_sla:{RUN}:error"]
    state, alerts = step(state, 310)
    assert alerts == []


def test_a_run_whose_end_is_not_known_yet_stays_open() -> None:
    state, _ = step({}, 250)
    kept, alerts = step(state, None, None)
    assert alerts == [] and kept == state
    assert no_longer_running(state, []) == [RUN]
    assert no_longer_running(state, [running(260)]) == []


def test_an_end_reported_for_a_run_still_running_is_ignored() -> None:
    state, _ = step({}, 250)
    result = sla_step(state, [running(260)], T, {RUN: RunEnd("failed", at(255))}, now=at(260))
    assert result.alerts == [] and result.open == state


def test_a_deleted_run_is_resolved_with_what_was_known_of_it() -> None:
    state, _ = step({}, 245)
    _, alerts = step(state, None, RunEnd("is no longer recorded"))
    resolve, told = alerts
    assert resolve.action == "resolve"
    assert "had run at least 4 h 05 min and is no longer recorded" in told.title


def test_short_thresholds_read_in_seconds() -> None:
    quick = SlaThresholds(0.05, 0.1)
    _, alerts = step({}, 0.06, thresholds=quick)
    assert "has been running 4 s, past the WARN threshold of 3 s" in alerts[0].title


def test_runs_are_independent() -> None:
    other = "0f1e2d3c-aaaa-bbbb-cccc-000000000002"
    result = sla_step({}, [running(250), running(190, other)], T, {}, now=at(250))
    assert {a.id for a in result.alerts} == {f"sync_sla:{other}:warn", f"sync_sla:{RUN}:error"}
    assert set(result.raised) == {RUN, other}


# ---------------------------------------------------------------------- the cursor


def test_the_alerted_runs_survive_the_cursors_json_round_trip() -> None:
    state, _ = step({}, 250)
    cursor = AlertState(lineage="abc", sla=state)
    again = AlertState.from_json(cursor.to_json())
    assert again.sla == state
    assert again.to_json() == cursor.to_json()


def test_a_cursor_saved_before_the_sla_loads_with_nothing_alerted() -> None:
    raw = json.loads(AlertState(lineage="abc").to_json())
    del raw["sla"]
    assert AlertState.from_json(json.dumps(raw)).sla == {}


# ---------------------------------------------------------------------- any tick times

thresholds_st = st.tuples(
    st.floats(min_value=0.01, max_value=500), st.floats(min_value=0, max_value=500)
).map(lambda p: SlaThresholds(p[0], p[0] + p[1]))


@settings(max_examples=300, deadline=None)
@given(
    thresholds=thresholds_st,
    ticks=st.lists(
        st.tuples(st.floats(min_value=0, max_value=1200), st.booleans()), min_size=1, max_size=30
    ),
    ended_at=st.floats(min_value=0, max_value=1200),
)
def test_any_ticks_tell_at_most_one_warn_one_error_and_one_resolve(
    thresholds: SlaThresholds, ticks: list[tuple[float, bool]], ended_at: float
) -> None:
    """Ticks at any times, some of them killed before their cursor was saved (their sends
    are in the ledger: a replay does not send an alert id twice)."""
    state: dict[str, SlaOpen] = {}
    sent: dict[str, Alert] = {}
    stages: list[str] = []
    stage_at_end: str | None = None
    """The stage saved for the run when the first tick after its end saw it."""
    for minutes, killed in sorted(ticks):
        if minutes < ended_at:
            result = sla_step(state, [running(minutes)], thresholds, {}, now=at(minutes))
        else:
            if stage_at_end is None and RUN in state:
                stage_at_end = state[RUN].stage
            end = {RUN: RunEnd("succeeded", at(ended_at))}
            result = sla_step(state, [], thresholds, end, now=at(minutes))
        for alert in result.alerts:
            sent.setdefault(alert.id, alert)  # the ledger: one send per id
        if not killed:
            state = result.open
            gone = "gone" if minutes >= ended_at else "ok"
            stages.append(state[RUN].stage if RUN in state else gone)

    # Monotone: a stage once told only rises, until the run is resolved and forgotten.
    order = ["ok", "warn", "error", "gone"]
    assert stages == sorted(stages, key=order.index)

    warns = [a for a in sent.values() if a.severity == "warning"]
    errors = [a for a in sent.values() if a.severity == "error"]
    resolves = [a for a in sent.values() if a.action == "resolve"]
    ends = [a for a in sent.values() if a.severity == "info" and a.action == "trigger"]
    assert len(warns) <= 1 and len(errors) <= 1
    seen = [m for m, _ in ticks if m < ended_at]
    peak = max((stage_of(m * 60, thresholds) for m in seen), key=order.index, default="ok")
    assert len(errors) == (peak == "error"), "one ERROR exactly when a tick saw it"
    if peak == "warn":
        assert len(warns) == 1, "a run seen past WARN only is told once"
    if peak == "ok":
        assert not warns
    pages = [a for a in sent.values() if "pagerduty" in channels(a)]
    assert len([a for a in pages if a.action == "trigger"]) == len(errors)
    assert all(a.dedup_key == dedup_key(RUN) for a in pages)
    # The end is told once when a tick after it finds the run alerted, and resolves the
    # incident when it paged; a run never told is never resolved.
    assert len(ends) == (stage_at_end is not None)
    assert len(resolves) == (stage_at_end == "error")


# ---------------------------------------------------------------------- a run's tags


def _from_tags(tags: dict[str, str]) -> SlaOpen | None:
    return told_by_tags(
        tags, job="bronze_acode_job", partition="2026-11-20", tables=("t",), started_at=START
    )


def test_the_tags_of_a_run_alerted_and_not_resolved_say_what_was_told() -> None:
    told = _from_tags({SLA_TAG: "error", SLA_MINUTES_TAG: "241.50"})
    assert told is not None and (told.stage, told.minutes) == ("error", 241.5)
    _, alerts = step({RUN: told}, None, RunEnd("failed", at(250)))
    assert [a.action for a in alerts] == ["resolve", "trigger"]


@pytest.mark.parametrize(
    "tags",
    [
        {},
        {SLA_TAG: "ok"},
        {SLA_TAG: "error", SLA_ENDED_TAG: "succeeded"},
        {"dagster/partition": "2026-11-20"},
    ],
)
def test_tags_of_a_run_never_alerted_or_already_resolved_say_nothing(tags: dict[str, str]) -> None:
    assert _from_tags(tags) is None


def test_a_garbled_minutes_tag_still_resolves() -> None:
    told = _from_tags({SLA_TAG: "warn", SLA_MINUTES_TAG: "soon"})
    assert told is not None and told.minutes == 0.0
