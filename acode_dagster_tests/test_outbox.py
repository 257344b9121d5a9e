"""The health tick's outbox (``acode_dagster/outbox.py``): commit first, then tell, exactly once.

The protocol runs here against an in-memory ledger whose every step can be the last one (a
process killed there), with the daemon's part (record the observations, then launch the run
requests, skipping a run key already launched) modelled the way ``dagster._daemon.sensor``
does it, and an operator's pin landing in the middle of a tick. Whatever the crash points, every
committed event ends up recorded once, no uncommitted one ever is, and the latest catch-up is
launched once per run key.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acode_dagster.failover import RouteEvent, RouteState
from acode_dagster.outbox import (
    Commit,
    Outbox,
    commit,
    decode,
    encode,
    owe,
    settle,
)

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
DAYS = ("2026-04-29", "2026-04-30")


def event(kind: str = "failover", minute: int = 0) -> RouteEvent:
    return RouteEvent(
        kind=kind,  # type: ignore[arg-type]
        part="source",
        parts=("source",),
        from_role="primary",
        to_role="backup" if kind == "failover" else "primary",
        at=T0 + timedelta(minutes=minute),
        reason="after 2 failed probes: primary: refused",
        automatic=True,
        critical=kind == "both_down",
    )


# ---------------------------------------------------------------------- the record


def test_a_record_that_owes_nothing_is_the_state_as_it_always_was() -> None:
    state = RouteState(version=3)
    assert encode(state, Outbox()) == state.to_json()
    assert decode(state.to_json()) == (state, Outbox())
    assert decode(None) == (RouteState(), Outbox())


def test_a_record_with_an_outbox_round_trips_and_still_reads_as_the_state() -> None:
    state = RouteState(version=1)
    outbox = Outbox((event(), event("both_down", 5)), catch_up=1, mark=42)
    text = encode(state, outbox)
    assert decode(text) == (state, outbox)
    # Every other reader (runs, the CLI, the UI) parses the route as before.
    assert RouteState.from_json(text) == state


def test_an_event_stored_before_ids_existed_gets_the_same_id_on_every_read() -> None:
    raw = event().to_json()
    del raw["id"]
    first, again = RouteEvent.from_json(raw), RouteEvent.from_json(json.loads(json.dumps(raw)))
    assert first.id == again.id == event().id
    assert first.id == f"failover/source/{T0.isoformat()}"


@pytest.mark.parametrize(
    "broken",
    [
        {"events": [], "catch_up": -1, "mark": 0},
        {"events": [], "catch_up": True, "mark": 0},
        {"events": [], "catch_up": None, "mark": -5},
        {"events": "x", "catch_up": None, "mark": 0},
        {"events": [], "mark": 0},
        {"events": [event().to_json(), event().to_json()], "catch_up": None, "mark": 0},
    ],
)
def test_a_broken_outbox_is_refused_by_name(broken: dict[str, object]) -> None:
    record = json.loads(RouteState().to_json())
    record["outbox"] = broken
    with pytest.raises(ValueError, match="outbox"):
        decode(json.dumps(record))


# ---------------------------------------------------------------------- owe and settle


def test_owing_adds_the_events_and_a_catch_up_only_for_a_change() -> None:
    failover, down = event(), event("both_down", 1)
    owed = owe(Outbox(), RouteState(version=0), [down], mark=7)
    assert owed == Outbox((down,), None, 7)
    owed = owe(owed, RouteState(version=1), [failover], mark=9)
    # The oldest owed event's mark is kept: its observation can only come after it.
    assert owed == Outbox((down, failover), 1, 7)
    # A decision that is already owed (the same ids) is not owed twice.
    assert owe(owed, RouteState(version=1), [failover], mark=11) == owed


def test_a_newer_catch_up_replaces_the_older_one() -> None:
    owed = owe(Outbox(catch_up=1), RouteState(version=2), [event("failback", 30)], mark=3)
    assert owed.catch_up == 2


def test_settling_strikes_out_what_was_delivered() -> None:
    first, second = event(), event("both_down", 1)
    owed = Outbox((first, second), catch_up=1, mark=7)
    assert settle(owed, {first.id}, catch_up_launched=False) == Outbox((second,), 1, 7)
    assert settle(owed, {first.id, second.id}, catch_up_launched=True) == Outbox()


# ------------------------------------------------------------ the protocol, killed anywhere


class Crash(Exception):
    """The process dies here."""


LEDGER_STEPS = ("mark", "recorded", "launched", "before_cas", "after_cas", "read")


@dataclass
class World:
    """The instance: the route record, the ``redundancy`` history and the launched runs."""

    record: str | None = None
    history: list[tuple[int, RouteEvent | None]] = field(default_factory=list)
    """(storage id, route event or None for a tick's own observation)."""
    runs: Counter[str] = field(default_factory=Counter)
    committed: dict[str, RouteEvent] = field(default_factory=dict)
    """Every event some successful compare-and-set wrote into the outbox."""
    catch_ups: list[int] = field(default_factory=list)
    """Route versions committed as owing a catch-up, in order."""
    emitted: Counter[str] = field(default_factory=Counter)

    def record_observation(self, routed: RouteEvent | None) -> None:
        self.history.append((len(self.history) + 1, routed))


@dataclass
class Ledger:
    world: World
    crash_at: str | None = None

    def _step(self, name: str) -> None:
        if name == self.crash_at:
            raise Crash(name)

    def read(self) -> str | None:
        self._step("read")
        return self.world.record

    def compare_and_set(self, before: str | None, after: str) -> bool:
        self._step("before_cas")
        if self.world.record != before:
            return False
        self.world.record = after
        _, outbox = decode(after)
        self.world.committed.update({e.id: e for e in outbox.events})
        if outbox.catch_up is not None and outbox.catch_up not in self.world.catch_ups:
            self.world.catch_ups.append(outbox.catch_up)
        self._step("after_cas")
        return True

    def recorded(self, outbox: Outbox) -> set[str]:
        self._step("recorded")
        wanted = {e.id for e in outbox.events}
        return {e.id for sid, e in self.world.history if e and sid > outbox.mark and e.id in wanted}

    def mark(self) -> int:
        self._step("mark")
        return self.world.history[-1][0] if self.world.history else 0

    def catch_up_launched(self, state: RouteState, version: int) -> bool:
        self._step("launched")
        return all(self.world.runs[run_key(version, day)] for day in DAYS)


def run_key(version: int, day: str) -> str:
    return f"catch-up/v{version}/{day}"


@dataclass(frozen=True)
class Tick:
    decision: str | None = None
    """None, ``failover`` (the route moves: catch-up) or ``both_down`` (it stays)."""
    pin_meanwhile: bool = False
    """An operator pins while the tick probes: the record changes under it."""
    zombie_meanwhile: bool = False
    """An earlier tick that Dagster cut at 60 s (its result thrown away) goes on in the code
    server and commits a failover of its own while this tick probes."""
    crash: tuple[str, int] | None = None
    """(ledger step, 0), or ("recording", k): the daemon dies after k observations, or
    ("launching", k): after k launched runs."""


def tick(world: World, plan: Tick, number: int) -> Commit | None:
    """One health tick as ``health_tick`` runs it, then the daemon's part of it."""
    before = world.record
    state, _ = decode(before)
    events: list[RouteEvent] = []
    if plan.decision is not None:
        events = [event(plan.decision, number)]
        if plan.decision == "failover":
            state = replace(state, version=state.version + 1)
    if plan.zombie_meanwhile:
        zombie_state, _ = decode(before)
        zombie = [event("failover", number * 1000 + 1)]
        commit(
            Ledger(world), before, replace(zombie_state, version=zombie_state.version + 1), zombie
        )
    if plan.pin_meanwhile:
        # save_state: the pinned route, keeping what the record owes.
        pinned, owed = decode(world.record)
        world.record = encode(replace(pinned, version=pinned.version + 1), owed)
    where, count = plan.crash or (None, 0)
    try:
        done = commit(Ledger(world, where), before, state, events)
    except Crash:
        return None
    told: list[RouteEvent | None] = [None, *done.outbox.events]
    for made, observation in enumerate(told):
        if where == "recording" and made == count:
            return None
        world.record_observation(observation)
        if observation is not None:
            world.emitted[observation.id] += 1
    version = done.outbox.catch_up
    for made, key in enumerate([] if version is None else [run_key(version, d) for d in DAYS]):
        if where == "launching" and made == count:
            return None
        if not world.runs[key]:  # the daemon skips a run key its sensor already launched
            world.runs[key] += 1
    return done


CRASHES = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(LEDGER_STEPS), st.just(0)),
    st.tuples(st.just("recording"), st.integers(0, 4)),
    st.tuples(st.just("launching"), st.integers(0, 2)),
)
TICKS = st.lists(
    st.builds(
        Tick,
        decision=st.sampled_from([None, None, "failover", "both_down"]),
        pin_meanwhile=st.sampled_from([False, False, False, True]),
        zombie_meanwhile=st.sampled_from([False, False, False, True]),
        crash=CRASHES,
    ),
    max_size=12,
)


def settle_down(world: World, start: int) -> None:
    """Ticks with nothing new to decide and nothing dying, until everything owed is paid."""
    for number in range(start, start + 3):
        tick(world, Tick(), number)


@settings(max_examples=300, deadline=None)
@given(TICKS)
def test_any_crash_points_tell_each_committed_event_once_and_catch_up_once(
    plans: list[Tick],
) -> None:
    world = World()
    for number, plan in enumerate(plans, start=1):
        tick(world, plan, number)
    settle_down(world, len(plans) + 1)

    recorded = Counter(e.id for _, e in world.history if e is not None)
    assert set(recorded) == set(world.committed), "recorded events are exactly the committed"
    assert all(count == 1 for count in recorded.values()), recorded
    _, owed = decode(world.record)
    assert owed.empty, owed
    assert all(count == 1 for count in world.runs.values()), world.runs
    if world.catch_ups:
        latest = world.catch_ups[-1]
        assert all(world.runs[run_key(latest, day)] == 1 for day in DAYS)
    launched_versions = {int(key.split("/")[1][1:]) for key in world.runs}
    assert launched_versions <= set(world.catch_ups)
    if not any(plan.crash for plan in plans):
        # Nothing died: nothing was ever told twice, pin or cut tick or not.
        assert all(count == 1 for count in world.emitted.values()), world.emitted


def test_a_tick_killed_right_after_its_commit_is_told_by_the_next_one() -> None:
    world = World()
    assert tick(world, Tick("failover", crash=("after_cas", 0)), 1) is None
    state, owed = decode(world.record)
    assert state.version == 1 and [e.kind for e in owed.events] == ["failover"]
    assert world.history == [] and not world.runs
    done = tick(world, Tick(), 2)
    assert done is not None and done.won and done.events == ()
    assert [e.kind for e in done.outbox.events] == ["failover"] and done.outbox.catch_up == 1
    settle_down(world, 3)
    assert [e.kind for _, e in world.history if e] == ["failover"]
    assert sorted(world.runs) == [run_key(1, day) for day in DAYS]


def test_a_pin_written_during_the_tick_wins_and_what_is_owed_is_still_told() -> None:
    world = World()
    assert tick(world, Tick("failover", crash=("after_cas", 0)), 1) is None
    done = tick(world, Tick("both_down", pin_meanwhile=True), 2)
    assert done is not None and not done.won
    assert done.state.version == 2, "the pinned record is the route in force"
    assert done.events == (), "the tick's own decision is dropped"
    assert [e.kind for e in done.outbox.events] == ["failover"], "the older debt is still told"
    settle_down(world, 3)
    assert [e.kind for _, e in world.history if e] == ["failover"]
