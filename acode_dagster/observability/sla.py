"""The sync-duration SLA, as pure rules: how late a bronze run is, and what that tells on call.

A bronze run still running past ``ACODE_SYNC_WARN_MINUTES`` is told once as a WARN (Slack);
past ``ACODE_SYNC_ERROR_MINUTES`` once as an ERROR, which pages (Slack and PagerDuty). When a
run that was told ends, Slack hears how long it ran and how it ended, and PagerDuty's incident
(if it paged) is resolved under the dedup key of its trigger.

A run's stage only rises (ok, warn, error), whatever the clock of the ticks that look at it: a
stage already told is never told again, and a stage passed over between two ticks is not told
late. So a run that went from under the WARN threshold to past the ERROR one between two ticks
gets the ERROR alone: the WARN would only say less, later than the page.

Every alert's id is a function of the run id and the stage, so a tick that dies after a send
and is replayed from the cursor before it builds the same alert again, and the delivery ledger
of :mod:`acode_dagster.alerts` does not send it twice.

No Dagster here: the alert sensor reads the runs and passes them in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from acode_dagster.alerts import Alert
from acode_dagster.settings import DEFAULT_SYNC_ERROR_MINUTES, DEFAULT_SYNC_WARN_MINUTES

Stage = Literal["ok", "warn", "error"]
STAGES: tuple[Stage, ...] = get_args(Stage)
"""Lowest first."""

SLA_CHECK = "sync_sla"
"""What the alerts name as their check, and the weekly report as the figure's name."""
SLA_TAG = "acode/sync_sla"
"""Run tag: the highest stage the run was alerted at (``warn`` or ``error``)."""
SLA_MINUTES_TAG = "acode/sync_sla_minutes"
"""Run tag: how long the run had been running when that alert was raised, in minutes."""
SLA_ENDED_TAG = "acode/sync_sla_ended"
"""Run tag: the end of an alerted run was told (its value: how it ended)."""


@dataclass(frozen=True)
class SlaThresholds:
    """``ACODE_SYNC_WARN_MINUTES`` and ``ACODE_SYNC_ERROR_MINUTES``."""

    warn_minutes: float = DEFAULT_SYNC_WARN_MINUTES
    error_minutes: float = DEFAULT_SYNC_ERROR_MINUTES

    def __post_init__(self) -> None:
        for name, value in (("warn", self.warn_minutes), ("error", self.error_minutes)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"the sync {name} threshold must be a number of minutes > 0")
        if self.error_minutes < self.warn_minutes:
            raise ValueError("the sync error threshold must not be below the warn threshold")

    def describe(self) -> str:
        return f"WARN {_minutes(self.warn_minutes)}, ERROR {_minutes(self.error_minutes)}"


def stage_of(seconds: float, thresholds: SlaThresholds) -> Stage:
    """The stage of a sync (or run) that has lasted ``seconds``; a threshold reached counts."""
    minutes = seconds / 60
    if minutes >= thresholds.error_minutes:
        return "error"
    if minutes >= thresholds.warn_minutes:
        return "warn"
    return "ok"


def rank(stage: Stage) -> int:
    return STAGES.index(stage)


@dataclass(frozen=True)
class RunningSync:
    """A bronze run in progress, as one alert tick saw it (also what the metrics emit)."""

    run_id: str
    job: str
    partition: str | None
    tables: tuple[str, ...]
    """The bronze tables the run set out to materialize."""
    minutes: float
    """Minutes since the run started, at the tick."""
    started_at: float
    """When the run started, Unix seconds."""


@dataclass(frozen=True)
class SlaOpen:
    """A run alerted for its duration and not yet resolved: what the cursor keeps of it."""

    stage: Stage
    """The highest stage told (``warn`` or ``error``)."""
    job: str
    partition: str | None
    tables: tuple[str, ...]
    started_at: float
    minutes: float
    """Minutes it had run when that stage was told."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "job": self.job,
            "partition": self.partition,
            "tables": list(self.tables),
            "started_at": float(self.started_at),
            "minutes": float(self.minutes),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SlaOpen:
        stage = raw.get("stage")
        if stage not in STAGES:
            raise ValueError(f"sync SLA JSON: unknown stage {stage!r}")
        partition = raw.get("partition")
        return cls(
            stage=stage,
            job=str(raw.get("job", "")),
            partition=None if partition is None else str(partition),
            tables=tuple(str(t) for t in raw.get("tables", [])),
            started_at=float(raw.get("started_at", 0.0)),
            minutes=float(raw.get("minutes", 0.0)),
        )


@dataclass(frozen=True)
class RunEnd:
    """How an alerted run ended, read once it is no longer running."""

    outcome: str
    """For a person: ``succeeded``, ``failed``, ``was cancelled``, ``is no longer recorded``."""
    ended_at: float | None = None
    """Unix seconds; None when the instance does not say (a deleted run)."""


@dataclass(frozen=True)
class SlaStep:
    """What one tick's look at the running runs changes."""

    open: dict[str, SlaOpen]
    alerts: list[Alert]
    raised: dict[str, SlaOpen] = field(default_factory=dict)
    """Runs whose stage rose at this tick, with the new stage (to tag the run with)."""


_TOLD: Mapping[str, Stage] = {"warn": "warn", "error": "error"}


def told_by_tags(
    tags: Mapping[str, str],
    *,
    job: str,
    partition: str | None,
    tables: tuple[str, ...],
    started_at: float,
) -> SlaOpen | None:
    """What a run's tags say was told of it and not yet resolved, or None.

    The sensor tags a run before sending its alert, and its cursor is saved only when the
    tick ends: a tick killed after the send leaves the tag and not the cursor. If the run
    ends before a tick sees it running again, its tags are all that says it needs a resolve.
    """
    stage = _TOLD.get(tags.get(SLA_TAG, ""))
    if stage is None or SLA_ENDED_TAG in tags:
        return None
    try:
        minutes = float(tags.get(SLA_MINUTES_TAG, "0"))
    except ValueError:
        minutes = 0.0
    return SlaOpen(
        stage=stage,
        job=job,
        partition=partition,
        tables=tables,
        started_at=started_at,
        minutes=minutes if math.isfinite(minutes) else 0.0,
    )


def dedup_key(run_id: str) -> str:
    """One PagerDuty incident per run: the ERROR triggers it, the run's end resolves it."""
    return f"acode/{SLA_CHECK}/{run_id}"


def no_longer_running(
    open_runs: Mapping[str, SlaOpen], running: Sequence[RunningSync]
) -> list[str]:
    """Alerted runs not among ``running``: the sensor reads how each ended."""
    now_running = {run.run_id for run in running}
    return sorted(run_id for run_id in open_runs if run_id not in now_running)


def sla_step(
    open_runs: Mapping[str, SlaOpen],
    running: Sequence[RunningSync],
    thresholds: SlaThresholds,
    ended: Mapping[str, RunEnd],
    *,
    links: Mapping[str, str] | None = None,
    now: float,
) -> SlaStep:
    """The alerted runs after this tick, and the alerts it causes.

    ``running``: the bronze runs in progress; ``ended``: how the alerted runs no longer running
    ended (one missing is left open, to be looked at again next tick); ``links``: per run, its
    page in the UI; ``now``: the tick's time (Unix seconds), for the alerts' time.
    """
    state = dict(open_runs)
    alerts: list[Alert] = []
    raised: dict[str, SlaOpen] = {}
    links = links or {}
    at = datetime.fromtimestamp(now, UTC).isoformat()
    for run in running:
        told = state.get(run.run_id)
        reached = stage_of(run.minutes * 60, thresholds)
        if rank(reached) <= rank(told.stage if told else "ok"):
            continue
        opened = SlaOpen(
            stage=reached,
            job=run.job,
            partition=run.partition,
            tables=run.tables,
            started_at=run.started_at,
            minutes=run.minutes,
        )
        state[run.run_id] = raised[run.run_id] = opened
        alerts.append(_running_long(run, reached, thresholds, links.get(run.run_id), at))
    now_running = {run.run_id for run in running}
    for run_id, end in sorted(ended.items()):
        if run_id in now_running or run_id not in state:
            continue
        opened = state.pop(run_id)
        alerts += _ended(run_id, opened, end, thresholds, link=links.get(run_id), at=at)
    return SlaStep(state, alerts, raised)


def _where(job: str, partition: str | None, run_id: str) -> str:
    return f"bronze run {run_id[:8]} of {job}" + (f" for {partition}" if partition else "")


def _running_long(
    run: RunningSync, stage: Stage, thresholds: SlaThresholds, link: str | None, at: str
) -> Alert:
    error = stage == "error"
    limit = thresholds.error_minutes if error else thresholds.warn_minutes
    return Alert(
        id=f"{SLA_CHECK}:{run.run_id}:{stage}",
        action="trigger",
        severity="error" if error else "warning",
        title=(
            f"{_where(run.job, run.partition, run.run_id)} has been running "
            f"{_minutes(run.minutes)}, past the {stage.upper()} threshold of {_minutes(limit)}"
        ),
        dedup_key=dedup_key(run.run_id),
        page=error,
        table=", ".join(run.tables) or None,
        partition=run.partition,
        check=SLA_CHECK,
        measured=f"running for {_minutes(run.minutes)}",
        threshold=thresholds.describe(),
        details={
            "run_id": run.run_id,
            "job": run.job,
            "started_at": datetime.fromtimestamp(run.started_at, UTC).isoformat(),
        },
        run_url=link,
        occurred_at=at,
    )


def _ended(
    run_id: str,
    opened: SlaOpen,
    end: RunEnd,
    thresholds: SlaThresholds,
    *,
    link: str | None,
    at: str,
) -> list[Alert]:
    """Slack hears how the run ended; PagerDuty's incident, if it paged, is resolved."""
    if end.ended_at is not None:
        lasted = f"ran {_minutes(max(0.0, end.ended_at - opened.started_at) / 60)} and"
    else:
        lasted = f"had run at least {_minutes(opened.minutes)} and"
    title = f"resolved: {_where(opened.job, opened.partition, run_id)} {lasted} {end.outcome}"
    told = Alert(
        id=f"{SLA_CHECK}-ended:{run_id}",
        action="trigger",
        severity="info",
        title=title,
        dedup_key=dedup_key(run_id),
        page=False,
        table=", ".join(opened.tables) or None,
        partition=opened.partition,
        check=SLA_CHECK,
        measured=f"{lasted.removesuffix(' and')}; it was told at {opened.stage.upper()}",
        threshold=thresholds.describe(),
        details={"run_id": run_id, "job": opened.job, "outcome": end.outcome},
        run_url=link,
        occurred_at=at,
    )
    if opened.stage != "error":
        return [told]
    resolve = Alert(
        id=f"{SLA_CHECK}-resolve:{run_id}",
        action="resolve",
        severity="info",
        title=title,
        dedup_key=dedup_key(run_id),
        page=True,
        table=told.table,
        partition=opened.partition,
        check=SLA_CHECK,
        run_url=link,
        occurred_at=at,
    )
    return [resolve, told]


def _minutes(minutes: float) -> str:
    """A duration for a person: seconds under a minute (tests use such thresholds), minutes
    under an hour, else hours and minutes."""
    if minutes < 1:
        return f"{minutes * 60:.0f} s"
    if minutes < 60:
        return f"{minutes:.1f} min".replace(".0 min", " min")
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest:02d} min"
