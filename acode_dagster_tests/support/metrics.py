"""A metrics sink for tests: it keeps what it is sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from acode_dagster.observability.metrics import Point


@dataclass
class Recorder:
    """A sink that keeps what it is sent."""

    name: str = "recorder"
    errors: int = 0
    points: list[Point] = field(default_factory=list)

    def send(self, points: Sequence[Point], common: Sequence[str]) -> str | None:
        self.points += points
        return None

    def tagged(self, name: str) -> list[dict[str, str]]:
        return [dict(p.tags) for p in self.points if p.metric.name == name]

    def values(self, name: str) -> list[float]:
        return [p.value for p in self.points if p.metric.name == name]
