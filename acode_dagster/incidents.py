"""Which observations are news for the people on call: a pure state machine over open problems.

A problem is identified by its dedup key (table, partition, check). The state is the severity at
which each open problem was last announced. A failed evaluation at the announced severity is the
same problem seen again (a re-run, another sensor tick) and says nothing; a new or changed
severity is announced once; a pass closes the problem, and resolves it in PagerDuty if it was
paged. Everything here is a function of its arguments, so the alert sensor's exactly-once
behaviour is tested without Dagster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from acode_dagster.alerts import Alert, Pending, channels_for
from acode_dagster.failover import RouteEvent
from acode_dagster.observability.sla import SlaOpen

CheckSeverity = Literal["ERROR", "WARN"]
OpenProblems = Mapping[str, CheckSeverity]


@dataclass(frozen=True)
class CheckOutcome:
    """One recorded check evaluation, as the alert sensor reads it from the instance."""

    record_id: int
    table: str
    partition: str | None
    """None for a check of the whole table (freshness)."""
    check: str
    passed: bool
    severity: CheckSeverity
    measured: str = ""
    threshold: str = ""
    run_id: str | None = None
    occurred_at: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)


def dedup_key(table: str, partition: str | None, check: str) -> str:
    return f"acode/{table}/{partition or 'table'}/{check}"


def on_check(
    open_problems: OpenProblems, outcome: CheckOutcome, link: str | None
) -> tuple[dict[str, CheckSeverity], list[Alert]]:
    """The open problems after ``outcome``, and the alerts it causes (none, one or two)."""
    key = dedup_key(outcome.table, outcome.partition, outcome.check)
    state = dict(open_problems)
    announced = state.get(key)
    where = f"{outcome.table} {outcome.partition}" if outcome.partition else outcome.table
    failure = Alert(
        id=f"check:{key}:{outcome.record_id}",
        action="trigger",
        severity="error" if outcome.severity == "ERROR" else "warning",
        title=f"{outcome.check} {outcome.severity} on {where}",
        dedup_key=key,
        page=outcome.severity == "ERROR",
        table=outcome.table,
        partition=outcome.partition,
        check=outcome.check,
        measured=outcome.measured or None,
        threshold=outcome.threshold or None,
        details=dict(outcome.details),
        run_url=link,
        occurred_at=outcome.occurred_at,
    )
    alerts: list[Alert] = []
    if announced == "ERROR" and (outcome.passed or outcome.severity != "ERROR"):
        # Only a paged problem has anything to resolve; Slack heard the failure and the
        # channel stays quiet about the recovery, which the UI shows anyway.
        alerts.append(
            replace(
                failure,
                id=f"resolve:{key}:{outcome.record_id}",
                action="resolve",
                severity="info",
                title=f"{outcome.check} passes again on {where}",
                page=True,
            )
        )
    if outcome.passed:
        state.pop(key, None)
        return state, alerts
    if announced == outcome.severity:
        return state, alerts
    state[key] = outcome.severity
    alerts.append(failure)
    return state, alerts


def on_run_failure(
    run_id: str,
    *,
    job: str,
    partition: str | None,
    reason: str,
    link: str | None,
    occurred_at: str | None = None,
) -> Alert:
    """A bronze run that failed for a reason other than its checks (those alert on their own).

    Not paged: the run is retried and caught up, and if the table stays without a good
    partition, freshness fails and pages.
    """
    return _run_ended(run_id, "failed", "error", {}, job, partition, reason, link, occurred_at)


def on_run_canceled(
    run_id: str,
    *,
    job: str,
    partition: str | None,
    reason: str,
    link: str | None,
    occurred_at: str | None = None,
) -> Alert:
    """A bronze run that was cancelled (terminated from the UI, or by run monitoring).

    A warning, not an error, and not paged: someone or something stopped it on purpose; if the
    day is not run again, freshness fails and pages. Told apart from a failure so that nobody
    goes looking for a MySQL problem that was not there.
    """
    return _run_ended(
        run_id,
        "was cancelled",
        "warning",
        {"status": "cancelled"},
        job,
        partition,
        reason,
        link,
        occurred_at,
    )


def _run_ended(  # noqa: PLR0917 - the public two spell every argument out by name
    run_id: str,
    how: str,
    severity: Literal["error", "warning"],
    details: Mapping[str, str],
    job: str,
    partition: str | None,
    reason: str,
    link: str | None,
    occurred_at: str | None,
) -> Alert:
    where = f" for {partition}" if partition else ""
    return Alert(
        id=f"run:{run_id}",
        action="trigger",
        severity=severity,
        title=f"bronze run {run_id[:8]} of {job}{where} {how}",
        dedup_key=f"acode/run/{run_id}",
        page=False,
        partition=partition,
        measured=reason,
        details={"run_id": run_id, "job": job, **details},
        run_url=link,
        occurred_at=occurred_at,
    )


@dataclass
class AlertState:
    """The alert sensor's cursor: what has been read, what is open, what is still to deliver.

    ``marks`` holds, per check key, the highest execution record id below which everything has
    been read; ``done`` the ids above it already read (records of runs still going sit between).

    Runs are read by update time, which moves whenever a run changes, a tag added by an
    operator included: ``runs_told`` keeps the failed or cancelled runs already handled (run id
    to end time) so that such a change never tells a run again, and runs that ended before
    ``runs_since`` (when alerting started) or long before the newest update read are never
    told (see :meth:`run_is_news`), which also bounds ``runs_told``.

    ``lineage`` names this cursor's delivery ledger and ``tick`` is the id of the tick that
    saved it (see :class:`acode_dagster.alerts.LedgerBook`).
    """

    marks: dict[str, int] = field(default_factory=dict)
    done: dict[str, list[int]] = field(default_factory=dict)
    open: dict[str, CheckSeverity] = field(default_factory=dict)
    runs_after: float = 0.0
    runs_seen: list[str] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    route_mark: int = 0
    """Storage id of the last route event read."""
    runs_told: dict[str, float] = field(default_factory=dict)
    runs_since: float = 0.0
    lineage: str = ""
    tick: str = ""
    sla: dict[str, SlaOpen] = field(default_factory=dict)
    """Bronze runs alerted for running long and not yet resolved, by run id (see
    :mod:`acode_dagster.observability.sla`)."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 2,
                "marks": self.marks,
                "done": self.done,
                "open": self.open,
                "runs_after": self.runs_after,
                "runs_seen": self.runs_seen,
                "runs_told": self.runs_told,
                "runs_since": self.runs_since,
                "pending": [p.to_json() for p in self.pending],
                "route_mark": self.route_mark,
                "lineage": self.lineage,
                "tick": self.tick,
                "sla": {run_id: told.to_json() for run_id, told in self.sla.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        raw = json.loads(text)
        runs_after = float(raw["runs_after"])
        runs_seen = list(raw["runs_seen"])
        if "runs_told" in raw:
            told = {str(k): float(v) for k, v in raw["runs_told"].items()}
            since = float(raw.get("runs_since", 0.0))
        else:
            # A version 1 cursor handled every run updated up to runs_after: those are known.
            told = dict.fromkeys(runs_seen, runs_after)
            since = runs_after
        return cls(
            marks={k: int(v) for k, v in raw["marks"].items()},
            done={k: [int(i) for i in v] for k, v in raw["done"].items()},
            open=dict(raw["open"]),
            runs_after=runs_after,
            runs_seen=runs_seen,
            pending=[Pending.from_json(p) for p in raw["pending"]],
            route_mark=int(raw.get("route_mark", 0)),
            runs_told=told,
            runs_since=since,
            # A version 1 cursor gets a lineage derived from its text: the same one for every
            # tick that starts from it, until a tick saves it with the lineage written in.
            lineage=str(raw["lineage"])
            if "lineage" in raw
            else hashlib.sha256(text.encode()).hexdigest()[:16],
            tick=str(raw.get("tick", "")),
            # Absent from a cursor saved before the sync-duration SLA: nothing was alerted.
            sla={str(k): SlaOpen.from_json(v) for k, v in (raw.get("sla") or {}).items()},
        )

    def run_is_news(self, run_id: str, ended_at: float) -> bool:
        """Whether a failed or cancelled run just read is to be told; if so, remember it.

        Not when it was told (or handled) before, nor when it ended before alerting started,
        nor when it ended more than :data:`RUN_MEMORY_S` before the newest update read: such a
        run was handled when its end was read, and forgotten since; only a later update (a
        tag) brings it back. ``runs_after`` must already include this read.
        """
        if run_id in self.runs_told or ended_at < self._runs_floor():
            return False
        self.runs_told[run_id] = ended_at
        return True

    def forget_old_runs(self) -> None:
        """Drop what :meth:`run_is_news` no longer needs to remember."""
        floor = self._runs_floor()
        self.runs_told = {k: v for k, v in self.runs_told.items() if v >= floor}

    def _runs_floor(self) -> float:
        return max(self.runs_since, self.runs_after - RUN_MEMORY_S)


RUN_MEMORY_S = 7 * 24 * 3600.0
"""How long before the newest run update read a failed run must have ended to still be news;
as long as ``runs_told`` remembers a run."""


def on_route_event(event: RouteEvent, record_id: int, link: str | None) -> list[Alert]:
    """A route change is news for Slack; both sources (or buckets) down pages, and is resolved in
    PagerDuty when one of them is back.

    The alerts are named after the event's stable id, not after ``record_id`` (where the event
    was read): an event recorded twice is still one alert."""
    parts = "+".join(event.parts)
    down_key = f"acode/route/{parts}/both_down"
    details: dict[str, str] = {"from": event.from_role or "", "to": event.to_role or ""}
    details["automatic"] = "yes" if event.automatic else "no (operator)"
    if event.outage_s is not None:
        details["outage_minutes"] = f"{event.outage_s / 60:.1f}"
    told = Alert(
        id=f"route:{event.id}",
        action="trigger",
        severity="warning" if event.kind == "failover" else "info",
        title=event.describe(),
        dedup_key=f"acode/route/{event.id}",
        page=False,
        measured=event.reason,
        details=details,
        run_url=link,
        occurred_at=event.at.isoformat(),
    )
    if event.kind == "both_down":
        title = f"both {parts} sides are down: the route stays and syncs cannot run"
        return [replace(told, severity="critical", title=title, dedup_key=down_key, page=True)]
    if event.kind == "recovered":
        resolve = replace(
            told, id=f"route-resolve:{event.id}", action="resolve", dedup_key=down_key, page=True
        )
        return [resolve, told]
    return [told]


def channels(alert: Alert) -> frozenset[str]:
    """Where an alert goes: a resolve only to PagerDuty, which has something to close."""
    if alert.action == "resolve":
        return frozenset({"pagerduty"})
    return channels_for(alert)
