"""The failover state machine: worked examples, then Hypothesis properties over any probe history.

The examples pin down the documented behaviour probe by probe (N-th failure, M healthy probes and
the dwell, both down, pins). The properties check what must hold whatever the servers do:
safety (never stuck on a dead side longer than the hysteresis), no thrash (changes of one part
are far enough apart), agreement with a reference model written over the raw probe history,
one event per change, and JSON round trips of every reachable state.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acode_dagster.failover import (
    PARTS,
    Health,
    Observation,
    Part,
    PartState,
    Pin,
    Policy,
    RouteEvent,
    RouteState,
    opposite,
    pin,
    step,
    unpin,
)
from acode_dagster.routing import BACKUP, PRIMARY, Role, Route

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TICK = timedelta(minutes=5)

UP = Health(primary=True, backup=True)
PRIMARY_DOWN = Health(primary=False, backup=True, primary_reason="MySQL 10.0.0.1:3306 unreachable")
BACKUP_DOWN = Health(primary=True, backup=False, backup_reason="replica 10.0.0.2:3306 unreachable")
BOTH_DOWN = Health(
    primary=False,
    backup=False,
    primary_reason="primary refused connection",
    backup_reason="replica refused connection",
)


@dataclass
class Driver:
    """Feeds probe rounds five minutes apart and keeps every event."""

    policy: Policy = field(default_factory=Policy)
    state: RouteState = field(default_factory=RouteState)
    now: datetime = T0
    events: list[RouteEvent] = field(default_factory=list)

    def probe(self, source: Health = UP, bucket: Health = UP) -> list[RouteEvent]:
        self.now += TICK
        self.state, events = step(self.state, Observation(source, bucket), self.now, self.policy)
        self.events.extend(events)
        return events

    def probes(self, count: int, source: Health = UP, bucket: Health = UP) -> list[RouteEvent]:
        return [event for _ in range(count) for event in self.probe(source, bucket)]

    def pin(self, role: Role, parts: tuple[Part, ...] = PARTS) -> list[RouteEvent]:
        self.state, events = pin(self.state, Pin(role, "primary upgrade", "alice", self.now, parts))
        self.events.extend(events)
        return events

    def unpin(self) -> list[RouteEvent]:
        self.state, events = unpin(self.state, "bob", self.now, "upgrade done")
        self.events.extend(events)
        return events


def kinds(events: Sequence[RouteEvent]) -> list[tuple[str, Part | None]]:
    return [(event.kind, event.part) for event in events]


# ---------------------------------------------------------------------- failover


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_fails_over_exactly_at_the_nth_failed_probe(n: int) -> None:
    driver = Driver(Policy(fail_after=n, recover_after=3))
    assert driver.probes(n - 1, source=PRIMARY_DOWN) == []
    assert driver.state.route == Route(PRIMARY, PRIMARY)
    assert driver.state.source.active_failures == n - 1

    (event,) = driver.probe(source=PRIMARY_DOWN)

    assert driver.state.route == Route(source=BACKUP, bucket=PRIMARY)
    assert event == RouteEvent(
        kind="failover",
        part="source",
        parts=("source",),
        from_role=PRIMARY,
        to_role=BACKUP,
        at=driver.now,
        reason=f"after {n} failed probes: primary: MySQL 10.0.0.1:3306 unreachable",
        automatic=True,
        critical=False,
    )
    assert event.changes_route
    assert event.describe() == (
        f"source failed over primary -> backup after {n} failed probes: "
        "primary: MySQL 10.0.0.1:3306 unreachable"
    )
    assert driver.state.version == 1
    assert driver.state.source == PartState(active=BACKUP, since=driver.now, outage_since=T0 + TICK)
    assert driver.state.bucket == PartState()


def test_a_healthy_probe_in_between_resets_the_count() -> None:
    driver = Driver(Policy(fail_after=3))
    driver.probes(2, source=PRIMARY_DOWN)
    driver.probe()
    assert driver.state.source.active_failures == 0
    assert driver.state.source.outage_since is None  # the blip is not an outage
    assert driver.probes(2, source=PRIMARY_DOWN) == []
    assert driver.state.route.source == PRIMARY

    assert kinds(driver.probe(source=PRIMARY_DOWN)) == [("failover", "source")]
    assert driver.state.route.source == BACKUP


def test_no_failover_to_an_unhealthy_backup() -> None:
    driver = Driver(Policy(fail_after=2))
    assert kinds(driver.probes(5, source=BOTH_DOWN)) == [("both_down", "source")]
    assert driver.state.route.source == PRIMARY


# ---------------------------------------------------------------------- fail-back


def failed_over(policy: Policy) -> Driver:
    """A driver whose source failed over at T0 + N ticks (first failed probe at T0 + 1 tick)."""
    driver = Driver(policy)
    driver.probes(policy.fail_after, source=PRIMARY_DOWN)
    assert driver.state.route.source == BACKUP
    return driver


@pytest.mark.parametrize("dwell_min", [30, 27])
def test_fails_back_after_m_healthy_probes_and_only_once_the_dwell_is_over(dwell_min: int) -> None:
    driver = failed_over(
        Policy(fail_after=2, recover_after=3, min_dwell=timedelta(minutes=dwell_min))
    )
    switched_at = driver.now  # T0 + 10 min; the dwell ends at T0 + 40 (or 37) min

    # Three healthy probes make the streak, but 15 min on the backup is not the dwell.
    assert driver.probes(3) == []
    assert driver.state.source.primary_streak == 3
    # 20 and 25 min on the backup: streak >= M, still inside the dwell.
    assert driver.probes(2) == []
    assert driver.now - switched_at < timedelta(minutes=dwell_min)
    assert driver.state.route.source == BACKUP

    # The first probe at or after the end of the dwell fails back.
    (event,) = driver.probe()
    assert driver.now - switched_at == timedelta(minutes=30)
    assert (event.kind, event.from_role, event.to_role) == ("failback", BACKUP, PRIMARY)
    assert event.automatic and not event.critical
    assert "healthy for 6 consecutive probes" in event.reason
    assert driver.state.route.source == PRIMARY
    assert driver.state.version == 2
    assert driver.state.source == PartState(active=PRIMARY, since=driver.now)


def test_fails_back_at_the_mth_healthy_probe_when_the_dwell_is_over() -> None:
    driver = failed_over(Policy(fail_after=1, recover_after=4, min_dwell=timedelta(0)))
    driver.probes(3)
    driver.probe(source=PRIMARY_DOWN)  # the primary flaps: the streak starts again
    assert driver.state.source.primary_streak == 0
    assert driver.probes(3) == []
    assert driver.state.route.source == BACKUP

    (event,) = driver.probe()
    assert event.kind == "failback"
    assert (
        event.reason
        == "after the primary was healthy for 4 consecutive probes and 40 min on the backup"
    )
    assert driver.state.route.source == PRIMARY


def test_a_dying_backup_sends_the_part_back_to_a_healthy_primary_without_dwell() -> None:
    driver = failed_over(Policy(fail_after=2, recover_after=10, min_dwell=timedelta(hours=2)))

    assert driver.probe(source=BACKUP_DOWN) == []
    (event,) = driver.probe(source=BACKUP_DOWN)

    assert (event.kind, event.from_role, event.to_role) == ("failback", BACKUP, PRIMARY)
    assert event.reason == "after 2 failed probes: backup: replica 10.0.0.2:3306 unreachable"
    assert driver.state.route.source == PRIMARY
    assert driver.state.source.outage_since is None


def test_outage_s_is_the_time_since_the_first_failed_probe_of_the_primary() -> None:
    policy = Policy(fail_after=2, recover_after=2, min_dwell=timedelta(minutes=20))
    driver = Driver(policy)
    driver.probe(source=PRIMARY_DOWN)  # a blip, closed by the next probe
    driver.probe()
    driver.probe(source=PRIMARY_DOWN)
    first_failure = driver.now
    assert driver.state.source.outage_since == first_failure
    driver.probes(3, source=PRIMARY_DOWN)  # fails over on the first of these, stays down
    assert driver.state.route.source == BACKUP
    assert driver.state.source.outage_since == first_failure
    assert driver.probe() == []

    (event,) = driver.probe()  # M = 2 healthy probes, 20 min on the backup
    assert event.kind == "failback"
    assert event.outage_s == (driver.now - first_failure).total_seconds() == 25 * 60
    assert event.describe().endswith("; the outage lasted 25 min")
    assert driver.state.source.outage_since is None


# ---------------------------------------------------------------------- both down


def test_both_down_raises_one_critical_event_and_never_moves_the_route() -> None:
    driver = Driver(Policy(fail_after=2))
    events = driver.probes(10, source=BOTH_DOWN)

    assert kinds(events) == [("both_down", "source")]
    (event,) = events
    assert event.critical and event.automatic and not event.changes_route
    assert event.from_role == event.to_role == PRIMARY
    assert "primary refused connection" in event.reason
    assert "replica refused connection" in event.reason
    assert driver.state.route == Route(PRIMARY, PRIMARY)
    assert driver.state.version == 0
    assert driver.state.source.both_down
    assert driver.state.source.active_failures == 10


def test_the_primary_returning_after_both_down_recovers_in_place() -> None:
    driver = Driver(Policy(fail_after=2))
    driver.probes(4, source=BOTH_DOWN)

    (event,) = driver.probe(source=BACKUP_DOWN)
    assert (event.kind, event.critical, event.reason) == (
        "recovered",
        False,
        "primary healthy again",
    )
    assert driver.state.route.source == PRIMARY
    assert not driver.state.source.both_down
    assert driver.state.source.active_failures == 0

    # Normal switching again, from zero.
    assert driver.probe(source=PRIMARY_DOWN) == []
    assert kinds(driver.probe(source=PRIMARY_DOWN)) == [("failover", "source")]


def test_the_backup_returning_after_both_down_recovers_then_fails_over_at_once() -> None:
    driver = Driver(Policy(fail_after=3))
    driver.probes(4, source=BOTH_DOWN)

    events = driver.probe(source=PRIMARY_DOWN)

    assert kinds(events) == [("recovered", "source"), ("failover", "source")]
    assert events[1].reason.startswith("after 5 failed probes: primary:")
    assert driver.state.route.source == BACKUP
    assert driver.state.version == 1


def test_both_down_on_the_backup_stays_on_the_backup() -> None:
    driver = failed_over(Policy(fail_after=1, recover_after=1, min_dwell=timedelta(0)))
    assert kinds(driver.probes(6, source=BOTH_DOWN)) == [("both_down", "source")]
    assert driver.state.route.source == BACKUP
    (recovered, failback) = driver.probe(source=BACKUP_DOWN)
    assert (recovered.kind, failback.kind) == ("recovered", "failback")


# ---------------------------------------------------------------------- parts


def test_source_and_bucket_are_decided_independently() -> None:
    driver = Driver(Policy(fail_after=2, recover_after=1, min_dwell=timedelta(0)))
    driver.probes(2, source=PRIMARY_DOWN, bucket=UP)
    assert driver.state.route == Route(source=BACKUP, bucket=PRIMARY)
    assert driver.state.bucket == PartState()

    driver.probe(source=PRIMARY_DOWN, bucket=PRIMARY_DOWN)
    events = driver.probe(source=UP, bucket=PRIMARY_DOWN)
    assert kinds(events) == [("failback", "source"), ("failover", "bucket")]
    assert driver.state.route == Route(source=PRIMARY, bucket=BACKUP)
    assert driver.state.version == 3


def test_both_parts_switching_in_one_probe_report_source_first_and_count_twice() -> None:
    driver = Driver(Policy(fail_after=1))
    events = driver.probe(source=PRIMARY_DOWN, bucket=PRIMARY_DOWN)
    assert kinds(events) == [("failover", "source"), ("failover", "bucket")]
    assert driver.state.version == 2


# ---------------------------------------------------------------------- pins


def test_a_pin_to_the_backup_moves_both_parts_with_one_event_and_holds_them() -> None:
    policy = Policy(fail_after=2, recover_after=3, min_dwell=timedelta(minutes=30))
    driver = Driver(policy)
    driver.probes(2)
    driver.probe(source=PRIMARY_DOWN)  # one failed probe, to see the counters reset

    (event,) = driver.pin(BACKUP)

    assert event == RouteEvent(
        kind="pinned",
        part=None,
        parts=("source", "bucket"),
        from_role=PRIMARY,
        to_role=BACKUP,
        at=driver.now,
        reason="by alice: primary upgrade",
        automatic=False,
        critical=False,
    )
    assert event.changes_route
    assert event.describe() == (
        "source and bucket pinned to backup (moved from primary) by alice: primary upgrade"
    )
    assert driver.state.route == Route(BACKUP, BACKUP)
    assert driver.state.version == 1
    pinned_at = driver.now
    for part in PARTS:
        assert driver.state.part(part).since == pinned_at
        assert driver.state.part(part).active_failures == 0

    # The primary is healthy for 100 probes: nothing moves while pinned.
    assert driver.probes(100) == []
    assert driver.state.route == Route(BACKUP, BACKUP)
    assert driver.state.version == 1

    (event,) = driver.unpin()
    assert (event.kind, event.parts, event.automatic) == ("unpinned", PARTS, False)
    assert (event.from_role, event.to_role) == (BACKUP, BACKUP)
    assert not event.changes_route
    assert event.describe() == (
        "source and bucket unpinned (on backup) by bob: upgrade done; automatic failover resumes"
    )
    assert driver.state.pin is None
    assert driver.state.route == Route(BACKUP, BACKUP)
    assert driver.state.version == 1
    for part in PARTS:
        assert (
            driver.state.part(part).primary_streak,
            driver.state.part(part).active_failures,
        ) == (0, 0)

    # The dwell has long passed since the pin: the fail-back waits for M healthy probes only.
    assert driver.probes(policy.recover_after - 1) == []
    assert kinds(driver.probe()) == [("failback", "source"), ("failback", "bucket")]
    assert driver.state.route == Route(PRIMARY, PRIMARY)
    assert driver.state.version == 3


def test_after_a_short_pin_the_fail_back_also_waits_for_the_dwell_from_the_pin() -> None:
    driver = Driver(Policy(fail_after=2, recover_after=2, min_dwell=timedelta(minutes=30)))
    driver.pin(BACKUP)
    pinned_at = driver.now
    driver.probe()
    driver.unpin()

    assert driver.probes(4) == []  # streak >= M from the 2nd probe on, the dwell not over
    assert driver.state.route == Route(BACKUP, BACKUP)
    assert kinds(driver.probe()) == [("failback", "source"), ("failback", "bucket")]
    assert driver.now - pinned_at == timedelta(minutes=30)


def test_a_pin_of_one_part_leaves_the_other_automatic() -> None:
    driver = Driver(Policy(fail_after=2, recover_after=1, min_dwell=timedelta(0)))
    (event,) = driver.pin(BACKUP, parts=("bucket",))
    assert (event.parts, event.from_role, event.to_role) == (("bucket",), PRIMARY, BACKUP)
    assert driver.state.route == Route(source=PRIMARY, bucket=BACKUP)

    events = driver.probes(2, source=PRIMARY_DOWN)
    assert kinds(events) == [("failover", "source")]
    assert driver.state.route == Route(BACKUP, BACKUP)
    assert kinds(driver.probe()) == [("failback", "source")]
    assert driver.probes(20) == []
    assert driver.state.route == Route(source=PRIMARY, bucket=BACKUP)


def test_a_pin_to_the_active_role_changes_nothing_but_suspends_failover() -> None:
    driver = Driver(Policy(fail_after=1))
    (event,) = driver.pin(PRIMARY)
    assert not event.changes_route
    assert event.describe() == "source and bucket pinned to primary by alice: primary upgrade"
    assert driver.state.version == 0

    assert driver.probes(10, source=PRIMARY_DOWN) == []
    assert driver.state.route == Route(PRIMARY, PRIMARY)
    assert driver.state.source.active_failures == 10  # counted, not acted on
    # both_down and recovered still happen under a pin.
    assert kinds(driver.probe(bucket=BOTH_DOWN)) == [("both_down", "bucket")]
    assert kinds(driver.probe()) == [("recovered", "bucket")]

    driver.unpin()
    assert driver.state.source.active_failures == 0
    assert kinds(driver.probe(source=PRIMARY_DOWN)) == [("failover", "source")]


def test_a_pin_of_parts_on_different_roles_has_no_single_from_role() -> None:
    driver = Driver(Policy(fail_after=1, recover_after=5))
    driver.probe(source=PRIMARY_DOWN)
    driver.probe()  # a healthy primary, to see the streak kept
    source = driver.state.source
    assert source.primary_streak == 1
    (event,) = driver.pin(BACKUP)
    assert (event.from_role, event.to_role, event.changes_route) == (None, BACKUP, True)
    assert driver.state.version == 2  # one for the failover, one for the pin
    assert driver.state.route == Route(BACKUP, BACKUP)
    assert driver.state.source == source  # already there: untouched
    assert driver.state.bucket.since == driver.now


def test_a_new_pin_replaces_the_old_one_and_unpin_without_a_pin_says_nothing() -> None:
    driver = Driver()
    driver.pin(BACKUP)
    (event,) = driver.pin(PRIMARY, parts=("source",))
    assert event.kind == "pinned"
    assert driver.state.pin is not None and driver.state.pin.parts == ("source",)
    assert driver.state.route == Route(source=PRIMARY, bucket=BACKUP)
    driver.unpin()
    before = driver.state
    assert driver.unpin() == []
    assert driver.state is before


def test_pin_parts_are_validated_and_kept_in_canonical_order() -> None:
    assert Pin(BACKUP, "", "me", T0, ("bucket", "source")).parts == PARTS
    for parts in [(), ("source", "source"), ("replica",)]:
        with pytest.raises(ValueError, match="part"):
            Pin(BACKUP, "", "me", T0, parts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        Pin("secondary", "", "me", T0)  # type: ignore[arg-type]


def test_opposite() -> None:
    assert opposite(PRIMARY) == BACKUP
    assert opposite(BACKUP) == PRIMARY
    with pytest.raises(ValueError, match="role"):
        opposite("both")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fail_after": 0}, "fail_after must be an integer >= 1"),
        ({"fail_after": -3}, "fail_after must be an integer >= 1"),
        ({"fail_after": True}, "fail_after must be an integer >= 1"),
        ({"recover_after": 0}, "recover_after must be an integer >= 1"),
        ({"recover_after": 1.5}, "recover_after must be an integer >= 1"),
        ({"min_dwell": timedelta(seconds=-1)}, "min_dwell must be a timedelta >= 0"),
        ({"min_dwell": 30}, "min_dwell must be a timedelta >= 0"),
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)


def test_policy_accepts_the_smallest_values() -> None:
    assert Policy(fail_after=1, recover_after=1, min_dwell=timedelta(0)).fail_after == 1


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 3, 2, 8, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        step(RouteState(), Observation(UP, UP), naive, Policy())
    with pytest.raises(ValueError, match="timezone-aware"):
        pin(RouteState(), Pin(BACKUP, "", "me", naive))
    with pytest.raises(ValueError, match="timezone-aware"):
        unpin(RouteState(), "me", naive)
    with pytest.raises(ValueError, match="UTC offset"):
        RouteState.from_json(RouteState(source=PartState(since=T0)).to_json().replace("+00:00", ""))


def test_other_timezones_are_accepted_and_stored_as_utc() -> None:
    brasilia = timezone(timedelta(hours=-3))
    state, (event,) = step(
        RouteState(),
        Observation(PRIMARY_DOWN, UP),
        datetime(2026, 3, 2, 5, tzinfo=brasilia),
        Policy(fail_after=1),
    )
    assert state.source.since == event.at == T0
    assert event.at.utcoffset() == timedelta(0)


# ---------------------------------------------------------------------- JSON


def test_route_state_json_round_trip_with_pin_and_datetimes() -> None:
    state = RouteState(
        source=PartState(
            active=BACKUP,
            active_failures=1,
            primary_streak=2,
            since=T0,
            outage_since=T0 - timedelta(minutes=10, microseconds=7),
            both_down=True,
        ),
        bucket=PartState(since=T0 + timedelta(hours=1)),
        pin=Pin(BACKUP, "upgrade — 10.11", "alice", T0, ("source",)),
        version=7,
    )
    text = state.to_json()
    raw = json.loads(text)
    assert raw["source"]["since"] == "2026-03-02T08:00:00+00:00"
    assert raw["pin"]["parts"] == ["source"]
    assert RouteState.from_json(text) == state
    assert RouteState.from_json(RouteState().to_json()) == RouteState()


@pytest.mark.parametrize(
    "broken",
    [
        '{"version": 1}',
        "[]",
        RouteState().to_json().replace('"primary"', '"secondary"', 1),
        RouteState().to_json().replace('"version": 0', '"version": "0"'),
        RouteState().to_json().replace('"both_down": false', '"both_down": 0', 1),
    ],
)
def test_route_state_from_json_refuses_broken_text(broken: str) -> None:
    with pytest.raises(ValueError):
        RouteState.from_json(broken)


def test_route_event_json_round_trip_for_every_kind() -> None:
    driver = Driver(Policy(fail_after=1, recover_after=1, min_dwell=timedelta(0)))
    driver.probe(source=BOTH_DOWN)
    driver.probe(source=PRIMARY_DOWN)
    driver.probe()
    driver.pin(BACKUP)
    driver.unpin()
    assert {event.kind for event in driver.events} == {
        "both_down",
        "recovered",
        "failover",
        "failback",
        "pinned",
        "unpinned",
    }
    for event in driver.events:
        raw = event.to_json()
        assert RouteEvent.from_json(json.loads(json.dumps(raw))) == event
    failback = next(event for event in driver.events if event.kind == "failback")
    assert failback.outage_s == 600.0


# ---------------------------------------------------------------------- properties

HEALTH = st.builds(
    lambda primary, backup: Health(
        primary, backup, "" if primary else "primary down", "" if backup else "backup down"
    ),
    st.booleans(),
    st.booleans(),
)
OBSERVATIONS = st.lists(st.builds(Observation, HEALTH, HEALTH), max_size=60)
POLICIES = st.builds(
    Policy,
    fail_after=st.integers(1, 4),
    recover_after=st.integers(1, 4),
    # 0..3 probe intervals, to the minute, so dwells that are not a whole number of probes occur.
    min_dwell=st.integers(0, 15).map(lambda minutes: timedelta(minutes=minutes)),
)
PROPERTY = settings(max_examples=300, deadline=None)


@dataclass(frozen=True)
class Step:
    before: RouteState
    observation: Observation
    now: datetime
    after: RouteState
    events: list[RouteEvent]


def simulate(policy: Policy, observations: Sequence[Observation]) -> list[Step]:
    state = RouteState()
    steps = []
    for index, observation in enumerate(observations, start=1):
        now = T0 + index * TICK
        after, events = step(state, observation, now, policy)
        steps.append(Step(state, observation, now, after, events))
        state = after
    return steps


def reference_route(
    policy: Policy, healths: Sequence[Health]
) -> tuple[list[Role], dict[int, float | None]]:
    """The side one part is on after each probe, decided from the raw history, no counters, and
    the outage_s of each fail-back (by probe index).

    The evidence for a switch is what was probed since the part's last change: the trailing run
    of failed probes of the active side, and of healthy probes of the primary. An outage starts
    at a failed probe of the primary while on it and ends once on a healthy primary.
    """
    active: Role = PRIMARY
    changed: int | None = None  # index of the probe that made the last change
    outage: int | None = None  # index of the outage's first failed probe
    route, outages = [], {}
    for index, health in enumerate(healths):
        window = healths[(0 if changed is None else changed + 1) : index + 1]
        failures = trailing([not h.is_healthy(active) for h in window])
        streak = trailing([h.primary for h in window])
        dwelt = changed is None or (index - changed) * TICK >= policy.min_dwell
        if outage is None and active == PRIMARY and not health.primary:
            outage = index
        if (failures >= policy.fail_after and health.is_healthy(opposite(active))) or (
            active == BACKUP and streak >= policy.recover_after and dwelt
        ):
            active, changed = opposite(active), index
            if active == PRIMARY:
                outages[index] = (
                    None if outage is None else ((index - outage) * TICK).total_seconds()
                )
        if active == PRIMARY and health.primary:
            outage = None
        route.append(active)
    return route, outages


def trailing(flags: Sequence[bool]) -> int:
    """How many of the last flags are true in a row."""
    count = 0
    for flag in reversed(flags):
        if not flag:
            break
        count += 1
    return count


@PROPERTY
@given(POLICIES, OBSERVATIONS)
def test_the_route_is_the_one_the_probe_history_calls_for(
    policy: Policy, observations: list[Observation]
) -> None:
    """Model: the counters, the dwell and both parts' independence, against the raw history."""
    steps = simulate(policy, observations)
    for part in PARTS:
        route, outages = reference_route(policy, [o.of(part) for o in observations])
        assert [s.after.part(part).active for s in steps] == route
        failbacks = {
            index: event.outage_s
            for index, s in enumerate(steps)
            for event in s.events
            if event.part == part and event.kind == "failback"
        }
        assert failbacks == outages


@PROPERTY
@given(POLICIES, OBSERVATIONS)
def test_safety_never_on_a_failing_side_longer_than_n_probes_while_the_other_is_up(
    policy: Policy, observations: list[Observation]
) -> None:
    n = policy.fail_after
    steps = simulate(policy, observations)
    for part in PARTS:
        for end in range(n - 1, len(steps)):
            window = steps[end - n + 1 : end + 1]
            active = window[0].before.part(part).active
            stuck = all(
                s.before.part(part).active == active
                and not s.observation.of(part).is_healthy(active)
                for s in window
            )
            if stuck and steps[end].observation.of(part).is_healthy(opposite(active)):
                assert steps[end].after.part(part).active == opposite(active)


def changes(steps: Sequence[Step], part: Part) -> list[tuple[int, Role]]:
    """(1-based probe number, new role) of every change of ``part``."""
    return [
        (number, s.after.part(part).active)
        for number, s in enumerate(steps, start=1)
        if s.after.part(part).active != s.before.part(part).active
    ]


def dwell_probes(policy: Policy) -> int:
    return math.ceil(policy.min_dwell / TICK)


@PROPERTY
@given(POLICIES, OBSERVATIONS)
def test_no_thrash_changes_of_one_part_are_at_least_the_hysteresis_apart(
    policy: Policy, observations: list[Observation]
) -> None:
    """The first change needs N probes; after a change to the primary the next needs N more;
    after a change to the backup, min(N, max(M, ceil(dwell / interval))) more (N when the
    backup itself fails, M and the dwell when the primary comes back)."""
    n, m = policy.fail_after, policy.recover_after
    after_backup = min(n, max(m, dwell_probes(policy)))
    steps = simulate(policy, observations)
    for part in PARTS:
        moves = changes(steps, part)
        if moves:
            assert moves[0] == (moves[0][0], BACKUP)
            assert moves[0][0] >= n
        for (previous, role), (number, new_role) in itertools.pairwise(moves):
            assert new_role == opposite(role)
            assert number - previous >= (n if role == PRIMARY else after_backup)


def flapping(n_max: int = 12) -> st.SearchStrategy[list[Observation]]:
    """The primary alternates runs of failures and recoveries; the backup is always up."""
    runs = st.lists(st.integers(1, n_max), min_size=1, max_size=12)
    return runs.map(
        lambda lengths: [
            Observation(PRIMARY_DOWN if i % 2 == 0 else UP, UP)
            for i, length in enumerate(lengths)
            for _ in range(length)
        ]
    )


def most_changes(length: int, n: int, recovery: int) -> int:
    """The most changes ``length`` probes allow when each failover needs N probes since the last
    change and each fail-back ``recovery`` = max(M, ceil(dwell / interval))."""
    cycles, rest = divmod(length, n + recovery)
    return 2 * cycles + (1 if rest >= n else 0)


@PROPERTY
@given(POLICIES, flapping())
def test_no_thrash_under_a_flapping_primary(
    policy: Policy, observations: list[Observation]
) -> None:
    n, m = policy.fail_after, policy.recover_after
    recovery = max(m, dwell_probes(policy))
    steps = simulate(policy, observations)
    moves = changes(steps, "source")
    failovers = sum(1 for _, role in moves if role == BACKUP)
    # The bound as first stated, per failover/fail-back cycle, and the exact one per change.
    assert failovers <= math.ceil(len(observations) / (n + m))
    assert len(moves) <= most_changes(len(observations), n, recovery)
    assert changes(steps, "bucket") == []


@pytest.mark.parametrize(("n", "m", "dwell_min"), [(1, 1, 0), (2, 3, 0), (2, 1, 30), (4, 4, 12)])
def test_the_no_thrash_bound_is_reached_by_the_worst_flapping(
    n: int, m: int, dwell_min: int
) -> None:
    """The bound is tight: down N probes, up max(M, dwell) probes, again and again."""
    policy = Policy(fail_after=n, recover_after=m, min_dwell=timedelta(minutes=dwell_min))
    recovery = max(m, math.ceil(timedelta(minutes=dwell_min) / TICK))
    cycle = [Observation(PRIMARY_DOWN, UP)] * n + [Observation(UP, UP)] * recovery
    observations = (cycle * 5)[: 5 * len(cycle) - 1]
    moves = changes(simulate(policy, observations), "source")
    assert len(moves) == most_changes(len(observations), n, recovery) == 9


@PROPERTY
@given(POLICIES, OBSERVATIONS)
def test_events_match_changes_and_version_counts_them(
    policy: Policy, observations: list[Observation]
) -> None:
    for s in simulate(policy, observations):
        changed = 0
        for part in PARTS:
            moved = s.after.part(part).active != s.before.part(part).active
            changed += moved
            mine = [e for e in s.events if e.part == part]
            route_events = [e for e in mine if e.changes_route]
            assert len(route_events) == int(moved)
            for event in route_events:
                assert event.from_role == s.before.part(part).active
                assert event.to_role == s.after.part(part).active
                assert event.at == s.now and event.automatic and not event.critical
                assert event.kind == ("failover" if event.to_role == BACKUP else "failback")
            if moved:
                assert s.after.part(part).since == s.now
        assert s.after.version == s.before.version + changed
        # Source's events come before bucket's.
        order = [PARTS.index(e.part) for e in s.events if e.part is not None]
        assert order == sorted(order)


@PROPERTY
@given(POLICIES, OBSERVATIONS)
def test_both_down_never_moves_the_route_and_is_announced_once_per_outage(
    policy: Policy, observations: list[Observation]
) -> None:
    steps = simulate(policy, observations)
    for part in PARTS:
        was_down = False
        for s in steps:
            health = s.observation.of(part)
            down = not health.primary and not health.backup
            if down:
                assert s.after.part(part).active == s.before.part(part).active
            announced = [e.kind for e in s.events if e.part == part and not e.changes_route]
            expected = ["both_down"] if down and not was_down else []
            expected += ["recovered"] if was_down and not down else []
            assert announced == expected
            assert all(e.critical == (e.kind == "both_down") for e in s.events)
            assert s.after.part(part).both_down == down
            was_down = down


ACTIONS = st.lists(
    st.one_of(
        st.builds(Observation, HEALTH, HEALTH),
        st.tuples(
            st.sampled_from([PRIMARY, BACKUP]),
            st.sampled_from([("source",), ("bucket",), PARTS]),
        ),
        st.just("unpin"),
    ),
    max_size=60,
)


@PROPERTY
@given(POLICIES, ACTIONS)
def test_pins_hold_and_every_reachable_state_and_event_round_trips_through_json(
    policy: Policy, actions: list[Observation | tuple[Role, tuple[Part, ...]] | str]
) -> None:
    state = RouteState()
    for index, action in enumerate(actions, start=1):
        now = T0 + index * TICK
        before = state
        if isinstance(action, Observation):
            state, events = step(state, action, now, policy)
            for part in PARTS:
                if before.pinned(part):
                    assert state.part(part).active == before.part(part).active
        elif action == "unpin":
            state, events = unpin(state, "bob", now)
            assert len(events) == (0 if before.pin is None else 1)
            assert state.route == before.route and state.version == before.version
            assert state.pin is None
        else:
            assert isinstance(action, tuple)
            role, parts = action
            state, events = pin(state, Pin(role, "test", "alice", now, parts))
            (event,) = events
            moved = [part for part in parts if before.part(part).active != role]
            assert event.changes_route == bool(moved)
            assert state.version == before.version + (1 if moved else 0)
            assert all(state.part(part).active == role for part in parts)
            for part in set(PARTS) - set(parts):
                assert state.part(part) == before.part(part)
        assert RouteState.from_json(state.to_json()) == state
        for event in events:
            assert RouteEvent.from_json(json.loads(json.dumps(event.to_json()))) == event
            assert event.describe()


# ---------------------------------------------------------------------- event ids


@PROPERTY
@given(POLICIES, ACTIONS)
def test_every_event_of_a_history_has_its_own_stable_id(
    policy: Policy, actions: list[Observation | tuple[Role, tuple[Part, ...]] | str]
) -> None:
    """The outbox and the alerts key on ``RouteEvent.id``: unique over any history, kept by a
    JSON round trip, and the same when derived again from an event stored without one."""
    state, seen = RouteState(), set()
    for index, action in enumerate(actions, start=1):
        now = T0 + index * TICK
        if isinstance(action, Observation):
            state, events = step(state, action, now, policy)
        elif action == "unpin":
            state, events = unpin(state, "bob", now)
        else:
            assert isinstance(action, tuple)
            state, events = pin(state, Pin(action[0], "test", "alice", now, action[1]))
        for event in events:
            assert event.id and event.id not in seen, event.id
            seen.add(event.id)
            raw = json.loads(json.dumps(event.to_json()))
            assert RouteEvent.from_json(raw).id == event.id
            del raw["id"]
            assert RouteEvent.from_json(raw) == event


def test_an_event_id_names_kind_parts_and_time_and_must_be_text() -> None:
    driver = Driver(Policy(fail_after=1, recover_after=1, min_dwell=timedelta(0)))
    (event,) = driver.probe(source=PRIMARY_DOWN)
    assert event.id == f"failover/source/{(T0 + TICK).isoformat()}"
    (pinned,) = driver.pin(BACKUP)
    assert pinned.id.startswith("pinned/source+bucket/")
    raw = event.to_json() | {"id": 7}
    with pytest.raises(ValueError, match=r"event\.id"):
        RouteEvent.from_json(raw)
