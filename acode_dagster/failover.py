"""Which side each part of the route is on: a pure state machine with hysteresis.

The route has two independent parts, the MySQL ``source`` and the bronze ``bucket``; each is on
its ``primary`` or its ``backup``. Every five minutes the health sensor probes all four and hands
the verdicts to :func:`step`, which returns the next :class:`RouteState` and the events worth
telling people about. Nothing here does I/O or knows Dagster, so the whole behaviour is a function
of its arguments and is tested exhaustively without servers.

Per part, with ``N = fail_after``, ``M = recover_after`` and ``min_dwell``:

* **Failover** (and the rare failback the other way): the active side has failed ``N``
  consecutive probes and the other side passed the latest one. One failed probe is a blip, not
  an outage, so a single timeout never moves the route.
* **Fail-back**: on the backup, the primary has passed ``M`` consecutive probes *and* the part
  has been on the backup for at least ``min_dwell``. A primary that comes back for ten minutes
  and dies again would otherwise drag every run back and forth.
* **Both down**: nothing to switch to, so the route stays; one critical ``both_down`` event is
  raised when it starts and one ``recovered`` event when either side returns, however many
  probes it lasts. Failed probes of the active side still count, so if the other side is the
  one that returns, the switch happens on that very probe.
* **Pin**: an operator can pin some parts to a role. Pinned parts move only by :func:`pin`;
  :func:`unpin` hands them back to the automatic rules without moving them.

Between two changes of one part there are therefore at least ``N`` probes after a change to the
primary, and at least ``min(N, max(M, ceil(min_dwell / interval)))`` after a change to the
backup: a flapping server cannot make the route thrash faster than the hysteresis allows.

The state is stored as JSON (:meth:`RouteState.to_json`) between sensor ticks; every datetime in
it is timezone-aware, and naive datetimes are refused rather than guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from acode_dagster.routing import BACKUP, PRIMARY, ROLES, Role, Route

Part = Literal["source", "bucket"]
PARTS: tuple[Part, ...] = ("source", "bucket")

EventKind = Literal["failover", "failback", "pinned", "unpinned", "both_down", "recovered"]
EVENT_KINDS: tuple[EventKind, ...] = (
    "failover",
    "failback",
    "pinned",
    "unpinned",
    "both_down",
    "recovered",
)


def opposite(role: Role) -> Role:
    """The other side: the backup of the primary and the primary of the backup."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return BACKUP if role == PRIMARY else PRIMARY


# ---------------------------------------------------------------------- policy and observations


@dataclass(frozen=True)
class Policy:
    """How much evidence moves the route."""

    fail_after: int = 2
    """N: consecutive failed probes of the active side before switching to the other side."""
    recover_after: int = 3
    """M: consecutive healthy probes of the primary, while on the backup, before failing back."""
    min_dwell: timedelta = timedelta(minutes=30)
    """Minimum time on the backup before an automatic fail-back (a failing backup overrides it)."""

    def __post_init__(self) -> None:
        # bool is an int; a policy of "True failures" is a typo, not a policy.
        for name in ("fail_after", "recover_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Policy.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.min_dwell, timedelta) or self.min_dwell < timedelta(0):
            raise ValueError(f"Policy.min_dwell must be a timedelta >= 0, got {self.min_dwell!r}")


@dataclass(frozen=True)
class Health:
    """One probe round's verdict on both sides of one part; the reasons explain a failure."""

    primary: bool
    backup: bool
    primary_reason: str = ""
    backup_reason: str = ""

    def is_healthy(self, role: Role) -> bool:
        return self.primary if role == PRIMARY else self.backup

    def reason_of(self, role: Role) -> str:
        """Why ``role`` failed, never empty so that messages always say something."""
        reason = self.primary_reason if role == PRIMARY else self.backup_reason
        return reason or "unhealthy"


@dataclass(frozen=True)
class Observation:
    """One probe round: the health of both parts at the same moment."""

    source: Health
    bucket: Health

    def of(self, part: Part) -> Health:
        return self.source if _check_part(part) == "source" else self.bucket


@dataclass(frozen=True)
class Pin:
    """An operator's order: keep ``parts`` on ``role`` until unpinned."""

    role: Role
    reason: str
    by: str
    at: datetime
    parts: tuple[Part, ...] = PARTS

    def __post_init__(self) -> None:
        _check_role(self.role)
        object.__setattr__(self, "at", _aware(self.at, "Pin.at"))
        parts = tuple(self.parts)
        if not parts:
            raise ValueError("a pin must name at least one part")
        for part in parts:
            _check_part(part)
        if len(set(parts)) != len(parts):
            raise ValueError(f"a pin names each part once, got {parts!r}")
        # One spelling per pin: ("bucket", "source") and ("source", "bucket") are the same order.
        object.__setattr__(self, "parts", tuple(part for part in PARTS if part in parts))

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "reason": self.reason,
            "by": self.by,
            "at": self.at.isoformat(),
            "parts": list(self.parts),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Pin:
        return cls(
            role=_check_role(raw["role"]),
            reason=_str(raw["reason"], "pin.reason"),
            by=_str(raw["by"], "pin.by"),
            at=_datetime(raw["at"], "pin.at"),
            parts=_parts(raw["parts"]),
        )


# ---------------------------------------------------------------------- state


@dataclass(frozen=True)
class PartState:
    """Where one part is, and the evidence gathered towards moving it."""

    active: Role = PRIMARY
    active_failures: int = 0
    """Consecutive probes with the active side unhealthy (reset by a healthy probe or a switch)."""
    primary_streak: int = 0
    """Consecutive healthy probes of the primary while on the backup."""
    since: datetime | None = None
    """When this part last changed side (None: never), the start of the dwell."""
    outage_since: datetime | None = None
    """The first failed probe of the primary in the outage in progress."""
    both_down: bool = False
    """A both_down event was raised and no recovered event yet."""

    def __post_init__(self) -> None:
        _check_role(self.active)
        if self.active_failures < 0 or self.primary_streak < 0:
            raise ValueError("PartState counters cannot be negative")
        if self.since is not None:
            _aware(self.since, "PartState.since")
        if self.outage_since is not None:
            _aware(self.outage_since, "PartState.outage_since")

    def to_json(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "active_failures": self.active_failures,
            "primary_streak": self.primary_streak,
            "since": _iso(self.since),
            "outage_since": _iso(self.outage_since),
            "both_down": self.both_down,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PartState:
        return cls(
            active=_check_role(raw["active"]),
            active_failures=_int(raw["active_failures"], "active_failures"),
            primary_streak=_int(raw["primary_streak"], "primary_streak"),
            since=_optional_datetime(raw["since"], "since"),
            outage_since=_optional_datetime(raw["outage_since"], "outage_since"),
            both_down=_bool(raw["both_down"], "both_down"),
        )


@dataclass(frozen=True)
class RouteState:
    """Everything the machine remembers between two probe rounds."""

    source: PartState = field(default_factory=PartState)
    bucket: PartState = field(default_factory=PartState)
    pin: Pin | None = None
    version: int = 0
    """+1 on every route change, so a reader can tell that the route moved under it."""

    def part(self, part: Part) -> PartState:
        return self.source if _check_part(part) == "source" else self.bucket

    @property
    def route(self) -> Route:
        return Route(source=self.source.active, bucket=self.bucket.active)

    def pinned(self, part: Part) -> bool:
        return self.pin is not None and part in self.pin.parts

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "source": self.source.to_json(),
                "bucket": self.bucket.to_json(),
                "pin": None if self.pin is None else self.pin.to_json(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RouteState:
        """The state :meth:`to_json` wrote; ValueError for anything else (json's included)."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"a route state is a JSON object, got {type(raw).__name__}")
        try:
            pin_raw = raw["pin"]
            return cls(
                source=PartState.from_json(_object(raw["source"], "source")),
                bucket=PartState.from_json(_object(raw["bucket"], "bucket")),
                pin=None if pin_raw is None else Pin.from_json(_object(pin_raw, "pin")),
                version=_int(raw["version"], "version"),
            )
        except KeyError as missing:
            raise ValueError(f"route state: missing field {missing}") from None


def _with_part(state: RouteState, part: Part, value: PartState) -> RouteState:
    return replace(state, source=value) if part == "source" else replace(state, bucket=value)


# ---------------------------------------------------------------------- events


@dataclass(frozen=True)
class RouteEvent:
    """Something about the route worth telling a human (Slack) or a pager (``critical``).

    ``from_role``/``to_role`` are the role of the event's parts before and after it; they are
    equal for events that do not move anything (both_down, recovered, unpinned) and
    ``from_role`` is None for a pin whose parts started on different roles.
    """

    kind: EventKind
    part: Part | None
    """The part for automatic events; None for pinned/unpinned, which may span parts."""
    parts: tuple[Part, ...]
    from_role: Role | None
    to_role: Role | None
    at: datetime
    reason: str
    automatic: bool
    critical: bool
    outage_s: float | None = None
    """On a fail-back to the primary: seconds since the outage's first failed probe."""
    id: str = ""
    """Stable identity, the same however often the event is written or read: what the health
    tick's outbox and the alerts key on. Derived from kind, parts and time when not given (an
    event of one part and kind per decision, and a decision per instant), which is also how an
    event stored before ids existed gets one."""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", event_id(self.kind, self.parts, self.at))

    @property
    def changes_route(self) -> bool:
        if self.kind in ("failover", "failback"):
            return True
        return self.kind == "pinned" and self.from_role != self.to_role

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "part": self.part,
            "parts": list(self.parts),
            "from_role": self.from_role,
            "to_role": self.to_role,
            "at": self.at.isoformat(),
            "reason": self.reason,
            "automatic": self.automatic,
            "critical": self.critical,
            "outage_s": self.outage_s,
            "id": self.id,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RouteEvent:
        try:
            return cls._from_json(raw)
        except KeyError as missing:
            raise ValueError(f"route event: missing field {missing}") from None

    @classmethod
    def _from_json(cls, raw: Mapping[str, Any]) -> RouteEvent:
        outage = raw.get("outage_s")
        if outage is not None and (not isinstance(outage, int | float) or isinstance(outage, bool)):
            raise ValueError(f"event: outage_s must be a number or null, got {outage!r}")
        return cls(
            kind=_kind(raw["kind"]),
            part=None if raw["part"] is None else _check_part(raw["part"]),
            parts=_parts(raw["parts"]),
            from_role=None if raw["from_role"] is None else _check_role(raw["from_role"]),
            to_role=None if raw["to_role"] is None else _check_role(raw["to_role"]),
            at=_datetime(raw["at"], "event.at"),
            reason=_str(raw["reason"], "event.reason"),
            automatic=_bool(raw["automatic"], "event.automatic"),
            critical=_bool(raw["critical"], "event.critical"),
            outage_s=None if outage is None else float(outage),
            # Written before events had ids: derived, the same on every read.
            id=_str(raw.get("id") or "", "event.id"),
        )

    def describe(self) -> str:
        """One sentence for a human, e.g. ``source failed over primary -> backup after ...``."""
        where = self.part or " and ".join(self.parts)
        if self.kind == "failover":
            return f"{where} failed over {self.from_role} -> {self.to_role} {self.reason}"
        if self.kind == "failback":
            text = f"{where} failed back {self.from_role} -> {self.to_role} {self.reason}"
            if self.outage_s is not None:
                text += f"; the outage lasted {_duration(self.outage_s)}"
            return text
        if self.kind == "both_down":
            return (
                f"{where}: primary and backup both unhealthy, staying on {self.from_role}: "
                f"{self.reason}"
            )
        if self.kind == "recovered":
            return f"{where} recovered, on {self.to_role}: {self.reason}"
        if self.kind == "pinned":
            moved = ""
            if self.changes_route:
                moved = f" (moved from {self.from_role})" if self.from_role else " (moved)"
            return f"{where} pinned to {self.to_role}{moved} {self.reason}"
        return f"{where} unpinned (on {self.to_role}) {self.reason}; automatic failover resumes"


def event_id(kind: EventKind, parts: tuple[Part, ...], at: datetime) -> str:
    """``failover/source/2026-05-01T10:05:00+00:00``: one decision makes at most one event of a
    kind per set of parts, and two decisions never share an instant."""
    return f"{kind}/{'+'.join(parts)}/{at.isoformat()}"


# ---------------------------------------------------------------------- transitions


def step(
    state: RouteState, observation: Observation, now: datetime, policy: Policy
) -> tuple[RouteState, list[RouteEvent]]:
    """The state after one probe round taken at ``now``, and its events (source's first)."""
    now = _aware(now, "now")
    events: list[RouteEvent] = []
    moved = 0
    new = state
    for part in PARTS:
        before = state.part(part)
        after, part_events = _step_part(
            part, before, observation.of(part), now, policy, pinned=state.pinned(part)
        )
        new = _with_part(new, part, after)
        events.extend(part_events)
        moved += after.active != before.active
    return replace(new, version=state.version + moved), events


def _step_part(
    part: Part, state: PartState, health: Health, now: datetime, policy: Policy, *, pinned: bool
) -> tuple[PartState, list[RouteEvent]]:
    active = state.active
    other = opposite(active)
    events: list[RouteEvent] = []

    both_down = state.both_down
    if not health.primary and not health.backup:
        if not both_down:
            events.append(
                _automatic(
                    "both_down",
                    part,
                    (active, active),
                    now,
                    f"primary: {health.reason_of(PRIMARY)}; backup: {health.reason_of(BACKUP)}",
                    critical=True,
                )
            )
            both_down = True
    elif both_down:
        back = " and ".join(role for role in ROLES if health.is_healthy(role))
        events.append(_automatic("recovered", part, (active, active), now, f"{back} healthy again"))
        both_down = False

    # The counters are kept while pinned so the state shows what the probes say; unpin resets
    # them, so a pin's history never triggers a switch the moment the pin is lifted.
    failures = 0 if health.is_healthy(active) else state.active_failures + 1
    streak = (state.primary_streak + 1 if health.primary else 0) if active == BACKUP else 0
    outage_since = state.outage_since
    if active == PRIMARY and not health.primary and outage_since is None:
        outage_since = now

    reason = (
        None
        if pinned
        else _switch_reason(state, health, now, policy, failures=failures, streak=streak)
    )
    if reason is None:
        if active == PRIMARY and health.primary:
            outage_since = None  # the primary came back before the failover: no outage
        after = replace(
            state,
            active_failures=failures,
            primary_streak=streak,
            outage_since=outage_since,
            both_down=both_down,
        )
        return after, events

    outage_s = None
    if other == PRIMARY and outage_since is not None:
        outage_s = (now - outage_since).total_seconds()
    kind: EventKind = "failover" if other == BACKUP else "failback"
    events.append(_automatic(kind, part, (active, other), now, reason, outage_s=outage_s))
    after = PartState(
        active=other,
        active_failures=0,
        primary_streak=0,
        since=now,
        # Every switch needs a healthy target, so back on the primary means the outage is over.
        outage_since=None if other == PRIMARY else outage_since,
        both_down=both_down,
    )
    return after, events


def _switch_reason(
    state: PartState, health: Health, now: datetime, policy: Policy, *, failures: int, streak: int
) -> str | None:
    """Why the part must change side on this probe, or None to stay."""
    active = state.active
    if failures >= policy.fail_after and health.is_healthy(opposite(active)):
        return f"after {failures} failed probes: {active}: {health.reason_of(active)}"
    if active != BACKUP or streak < policy.recover_after:
        return None
    if state.since is None:
        return f"after the primary was healthy for {streak} consecutive probes"
    dwelt = now - state.since
    if dwelt < policy.min_dwell:
        return None
    return (
        f"after the primary was healthy for {streak} consecutive probes "
        f"and {_duration(dwelt.total_seconds())} on the backup"
    )


def _automatic(
    kind: EventKind,
    part: Part,
    roles: tuple[Role, Role],
    at: datetime,
    reason: str,
    *,
    critical: bool = False,
    outage_s: float | None = None,
) -> RouteEvent:
    """An event of the automatic rules about one part; ``roles`` is (from, to)."""
    return RouteEvent(
        kind=kind,
        part=part,
        parts=(part,),
        from_role=roles[0],
        to_role=roles[1],
        at=at,
        reason=reason,
        automatic=True,
        critical=critical,
        outage_s=outage_s,
    )


def pin(state: RouteState, pin: Pin) -> tuple[RouteState, list[RouteEvent]]:
    """Pin ``pin.parts`` to ``pin.role`` at ``pin.at``, replacing any pin in force.

    Exactly one ``pinned`` event; the version moves by one if any part changed side.
    """
    at = _aware(pin.at, "pin.at")
    roles = {state.part(part).active for part in pin.parts}
    new = replace(state, pin=pin)
    moved = False
    for part in pin.parts:
        current = state.part(part)
        if current.active != pin.role:
            moved = True
            # The evidence gathered on the old side says nothing about the new one.
            new = _with_part(
                new,
                part,
                replace(current, active=pin.role, active_failures=0, primary_streak=0, since=at),
            )
    if moved:
        new = replace(new, version=state.version + 1)
    event = RouteEvent(
        kind="pinned",
        part=None,
        parts=pin.parts,
        from_role=roles.pop() if len(roles) == 1 else None,
        to_role=pin.role,
        at=at,
        reason=_by(pin.by, pin.reason),
        automatic=False,
        critical=False,
    )
    return new, [event]


def unpin(
    state: RouteState, by: str, at: datetime, reason: str = ""
) -> tuple[RouteState, list[RouteEvent]]:
    """Hand the pinned parts back to the automatic rules; they stay where they are for now.

    The dwell still counts from the part's last change (``since``), usually the pin itself, so
    after a long pin the fail-back only waits for ``recover_after`` healthy probes.
    """
    at = _aware(at, "at")
    if state.pin is None:
        return state, []
    parts = state.pin.parts
    new = replace(state, pin=None)
    for part in parts:
        new = _with_part(new, part, replace(state.part(part), active_failures=0, primary_streak=0))
    roles = {state.part(part).active for part in parts}
    role = roles.pop() if len(roles) == 1 else None
    event = RouteEvent(
        kind="unpinned",
        part=None,
        parts=parts,
        from_role=role,
        to_role=role,
        at=at,
        reason=_by(by, reason),
        automatic=False,
        critical=False,
    )
    return new, [event]


def _by(by: str, reason: str) -> str:
    return f"by {by}: {reason}" if reason else f"by {by}"


# ---------------------------------------------------------------------- parsing helpers


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}; "
            "use datetime.now(UTC)"
        )
    return value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _datetime(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO-8601 string, got {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{what} must carry a UTC offset, got {value!r}")
    return parsed


def _optional_datetime(value: object, what: str) -> datetime | None:
    return None if value is None else _datetime(value, what)


def _check_role(value: object) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise ValueError(f"unknown role {value!r}; expected one of {', '.join(ROLES)}")


def _check_part(value: object) -> Part:
    for part in PARTS:
        if value == part:
            return part
    raise ValueError(f"unknown part {value!r}; expected one of {', '.join(PARTS)}")


def _kind(value: object) -> EventKind:
    for kind in EVENT_KINDS:
        if value == kind:
            return kind
    raise ValueError(f"unknown event kind {value!r}; expected one of {', '.join(EVENT_KINDS)}")


def _parts(value: object) -> tuple[Part, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"parts must be a list, got {value!r}")
    return tuple(_check_part(part) for part in value)


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return value


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {value!r}")
    return value


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
