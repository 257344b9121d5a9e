"""Commit first, then tell: what a health tick owes once it has moved the route.

The route is one record in the instance's key-value store; its history and its alerts are
observations the daemon records from the tick's result *after* the tick returns, and the
catch-up runs are launched from the same result. A tick that saved the route and then died (a
killed daemon, a tick cut at Dagster's 60 s) would move the route silently: no event, no alert,
no catch-up. So the record carries an **outbox**, written in the same compare-and-set as the
route itself, of what the tick still owes:

* the route **events**, each with its stable id (:attr:`RouteEvent.id`), owed until an
  observation carrying that id is found in the ``redundancy`` history (only observations
  recorded after the outbox's ``mark`` can carry it, so only those are read);
* the **catch-up** at a route version, owed until every run it asks for has been launched by
  the sensor. Its run keys are derived from the version and the daemon skips a run key the
  sensor already launched, so asking twice launches once.

Every tick first strikes out what has been delivered (:func:`settle`), adds its own decision
(:func:`owe`), commits route and outbox with one compare-and-set against the record it started
from (so an operator's pin written meanwhile wins, as it always did), and only then emits the
whole outbox. Whatever the crash point, each event is recorded once and each catch-up run
launched once: before the commit nothing changed and the next tick decides again; after it the
next tick finds the debt and pays what is still unpaid.

Plain Python: the tick's I/O comes in through :class:`Ledger`, so the whole protocol is tested
against an in-memory ledger that can die at every step (``test_outbox.py``), and against the
Dagster instance with real kills (``test_route_durability.py``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from acode_dagster.failover import EventKind, RouteEvent, RouteState

CATCH_UP_AFTER: frozenset[EventKind] = frozenset(
    {"failover", "failback", "recovered", "pinned", "unpinned"}
)
"""Events after which the days missed in the catch-up window are requested on the new route."""

OUTBOX_FIELD = "outbox"
"""The record's field holding the outbox; :meth:`RouteState.from_json` ignores it, so every
reader of the route reads the record as it always did."""


@dataclass(frozen=True)
class Outbox:
    """What the committed route still owes the history, the alerts and the catch-up."""

    events: tuple[RouteEvent, ...] = ()
    """Events not yet found recorded, oldest first."""
    catch_up: int | None = None
    """Route version whose catch-up runs are not all launched yet; None: nothing owed."""
    mark: int = 0
    """Storage id of the newest ``redundancy`` observation when the oldest owed event was
    committed: an observation recording one of them can only come after it."""

    def __post_init__(self) -> None:
        ids = [event.id for event in self.events]
        if len(set(ids)) != len(ids):
            raise ValueError(f"an outbox holds each event once, got ids {ids}")
        if self.catch_up is not None and (
            not isinstance(self.catch_up, int) or isinstance(self.catch_up, bool)
        ):
            raise ValueError(f"outbox catch_up must be a route version or null: {self.catch_up!r}")
        if self.catch_up is not None and self.catch_up < 0:
            raise ValueError(f"outbox catch_up must be a route version >= 0: {self.catch_up}")
        if not isinstance(self.mark, int) or isinstance(self.mark, bool) or self.mark < 0:
            raise ValueError(f"outbox mark must be a storage id >= 0, got {self.mark!r}")

    @property
    def empty(self) -> bool:
        return not self.events and self.catch_up is None

    def to_json(self) -> dict[str, Any]:
        return {
            "events": [event.to_json() for event in self.events],
            "catch_up": self.catch_up,
            "mark": self.mark,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Outbox:
        try:
            events = raw["events"]
            if not isinstance(events, list):
                raise ValueError(f"outbox events must be a list, got {events!r}")
            return cls(
                events=tuple(RouteEvent.from_json(event) for event in events),
                catch_up=raw["catch_up"],
                mark=raw["mark"],
            )
        except KeyError as missing:
            raise ValueError(f"route outbox: missing field {missing}") from None


def encode(state: RouteState, outbox: Outbox) -> str:
    """The stored record: the route state, plus the outbox when something is owed (so a record
    that owes nothing is exactly what :meth:`RouteState.to_json` has always written)."""
    if outbox.empty:
        return state.to_json()
    record = json.loads(state.to_json())
    record[OUTBOX_FIELD] = outbox.to_json()
    return json.dumps(record, sort_keys=True)


def decode(text: str | None) -> tuple[RouteState, Outbox]:
    """The record :func:`encode` wrote, or a fresh state for none; ValueError for anything else."""
    if not text:
        return RouteState(), Outbox()
    state = RouteState.from_json(text)
    raw = json.loads(text).get(OUTBOX_FIELD)
    if raw is None:
        return state, Outbox()
    if not isinstance(raw, dict):
        raise ValueError(f"route outbox must be a JSON object, got {raw!r}")
    return state, Outbox.from_json(raw)


def settle(outbox: Outbox, recorded: Collection[str], *, catch_up_launched: bool) -> Outbox:
    """What is still owed once the events found ``recorded`` (their ids) are struck out, and
    the catch-up too if all its runs were launched."""
    events = tuple(event for event in outbox.events if event.id not in recorded)
    catch_up = None if catch_up_launched else outbox.catch_up
    return Outbox(events, catch_up, outbox.mark if events else 0)


def owe(outbox: Outbox, state: RouteState, events: Sequence[RouteEvent], mark: int) -> Outbox:
    """The debt after a decision that led to ``state`` with ``events``: the events on top of
    those still owed, and the catch-up at ``state.version`` if one of them calls for it. That
    replaces an older catch-up still owed: the route now in force is the one to catch up on,
    and the days the older one asked for and did not get are missing still."""
    owed = {event.id for event in outbox.events}
    fresh = tuple(event for event in events if event.id not in owed)
    every = outbox.events + fresh
    catch_up = state.version if any(e.kind in CATCH_UP_AFTER for e in fresh) else outbox.catch_up
    return Outbox(every, catch_up, (outbox.mark if outbox.events else mark) if every else 0)


class Ledger(Protocol):
    """The tick's view of the instance: the stored record and what was already delivered."""

    def read(self) -> str | None:
        """The stored record, None when there is none yet."""

    def compare_and_set(self, before: str | None, after: str) -> bool:
        """Store ``after`` if the record is still ``before`` (None: absent), in one write."""

    def recorded(self, outbox: Outbox) -> set[str]:
        """Ids of the outbox's events already recorded in the history."""

    def mark(self) -> int:
        """Storage id of the newest observation in the history (0 when there is none)."""

    def catch_up_launched(self, state: RouteState, version: int) -> bool:
        """Whether every run the catch-up at ``version`` asks for now was launched."""


@dataclass(frozen=True)
class Commit:
    """A tick's outcome once committed: what to tell, and on which route."""

    state: RouteState
    """The route in force: the tick's decision, or what won over it."""
    outbox: Outbox
    """Everything owed, this tick's events included: what the tick emits."""
    events: tuple[RouteEvent, ...]
    """The events this tick decided (none when a concurrent write won)."""
    won: bool
    """False when the record changed under the tick (an operator's pin) and its decision was
    dropped; the next tick decides again from the record as it is."""


def commit(
    ledger: Ledger, before: str | None, state: RouteState, events: Sequence[RouteEvent]
) -> Commit:
    """Commit the decision ``state``/``events`` taken from the record ``before``, with all that
    is owed, in one compare-and-set; the :class:`Commit` says what to emit."""
    after = _pay(ledger, before)
    outbox = owe(after, state, events, ledger.mark())
    if ledger.compare_and_set(before, encode(state, outbox)):
        return Commit(state, outbox, tuple(events), won=True)
    # Written meanwhile (an operator's pin): it wins and this decision is dropped. What the
    # record owes is still emitted now; it stays owed until found delivered.
    current = ledger.read()
    return Commit(decode(current)[0], _pay(ledger, current), (), won=False)


def _pay(ledger: Ledger, record: str | None) -> Outbox:
    state, outbox = decode(record)
    recorded = ledger.recorded(outbox) if outbox.events else set()
    launched = outbox.catch_up is not None and ledger.catch_up_launched(state, outbox.catch_up)
    return settle(outbox, recorded, catch_up_launched=launched)
