"""The Datadog monitors in ``deploy/monitors/`` refer only to metrics the platform emits, with
the tags those metrics carry, and cover the seeds' alert rules.

Datadog cannot be reached from here, so each monitor is held to the API's monitor format and
its query to the metric catalogue (:data:`acode_dagster.observability.metrics.CATALOGUE`),
which the emitters themselves are held to."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from acode_dagster.observability.metrics import CATALOGUE

MONITORS = Path(__file__).resolve().parents[1] / "deploy" / "monitors"
# The seeds' alert rules, one monitor each (and the platform's own delivery of alerts).
RULES = {
    "sync-running-long": "acode.sync.running_minutes",
    "freshness": "acode.freshness.age_hours",
    "failed-check": "acode.check.outcome",
    "data-quality-score": "acode.check.outcome",
    "failover": "acode.route.failover",
    "route-on-backup": "acode.route.source_is_backup",
    "probe-unhealthy": "acode.probe.healthy",
    "mysql-latency": "acode.probe.latency_ms",
    "s3-latency": "acode.probe.latency_ms",
    "replica-lag": "acode.replica.lag_seconds",
    "alerts-stuck": "acode.alert.pending",
    "alerts-given-up": "acode.alert.given_up",
    "sync-throughput-drop": "acode.sync.rows_per_second",
}
# One metric in a query: space aggregation, name, {filter}, optional "by {groups}", as_count.
METRIC = re.compile(
    r"(?:avg|sum|min|max):(?P<name>[a-z][a-z0-9_.]*)\{(?P<filter>[^}]*)\}"
    r"(?:\s*by\s*\{(?P<groups>[^}]*)\})?(?P<as_count>\.as_count\(\))?"
)
COMPARISON = re.compile(r"(?P<op>>=|<=|>|<)\s*(?P<threshold>-?[0-9.]+)\s*$")


def monitors() -> list[Path]:
    return sorted(MONITORS.glob("*.json"))


def test_every_rule_has_its_monitor() -> None:
    assert {path.stem for path in monitors()} == set(RULES)


@pytest.mark.parametrize("path", monitors(), ids=lambda p: p.stem)
def test_a_monitor_refers_to_emitted_metrics_and_their_tags(path: Path) -> None:
    monitor: dict[str, Any] = json.loads(path.read_text())
    assert monitor["type"] == "metric alert"
    assert monitor["name"].startswith("[acode-dagster] ")
    assert "@" in monitor["message"]  # someone is told
    assert "service:acode-dagster" in monitor["tags"]
    query: str = monitor["query"]

    found = list(METRIC.finditer(query))
    assert found, f"{path.name}: no metric in {query!r}"
    assert RULES[path.stem] in {m["name"] for m in found}
    for match in found:
        name = match["name"]
        assert name in CATALOGUE, f"{path.name}: {name} is not a metric the platform emits"
        metric = CATALOGUE[name]
        used = [t.strip() for t in (match["groups"] or "").split(",") if t.strip()]
        used += [
            t.strip().lstrip("!").split(":", 1)[0]
            for t in match["filter"].split(",")
            if t.strip() not in ("*", "")
        ]
        missing = set(used) - set(metric.tags)
        assert not missing, f"{path.name}: {name} carries no tag {missing} ({metric.tags})"
        # A count is summed per interval; a gauge is a level, never turned into a count.
        assert bool(match["as_count"]) == (metric.kind == "count"), f"{path.name}: {name}"

    comparison = COMPARISON.search(query)
    assert comparison, f"{path.name}: the query ends in no comparison"
    thresholds = monitor["options"]["thresholds"]
    assert float(comparison["threshold"]) == thresholds["critical"]
    if "warning" in thresholds:
        # The warning comes before the critical in the direction the query alerts.
        earlier = thresholds["warning"] < thresholds["critical"]
        assert earlier == comparison["op"].startswith(">"), path.name
