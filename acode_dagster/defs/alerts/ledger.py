"""The alert sensor's delivery ledger, in the instance's key-value store.

The sensor's cursor is saved by Dagster when a tick ends; the ledger is saved by each send, so
it outlives a tick killed half-way (see :mod:`acode_dagster.alerts`). It lives where the
instance lives (SQLite locally, Postgres in production), one small JSON value per cursor
lineage: the command line's cursor and the daemon's each have their own, as each has its own
idea of which tick was the last one saved. What the services said about where deliveries go
(the Slack channel's ID) is one more value, shared by every lineage.
"""

import json

import dagster as dg

from acode_dagster.alerts import LEDGER_KEEP_S, BookLedger, LedgerBook

LEDGER_PREFIX = "acode/alerts/ledger/"
PLACES_KEY = "acode/alerts/places"


def ledger_key(lineage: str) -> str:
    # The key-value table's unique index covers 64 characters on MySQL: lineages are short.
    return LEDGER_PREFIX + lineage


def load_ledger(
    instance: dg.DagsterInstance,
    lineage: str,
    *,
    confirmed_tick: str,
    tick: str,
    now: float,
    keep_s: float = LEDGER_KEEP_S,
) -> BookLedger:
    """The lineage's ledger for the tick of id ``tick``, settled against ``confirmed_tick``
    (the id of the tick that saved the cursor this one starts from)."""
    key = ledger_key(lineage)
    storage = instance.run_storage
    values = storage.get_cursor_values({key, PLACES_KEY})
    book = LedgerBook.from_json(values[key]) if values.get(key) else LedgerBook()
    book.places = {**book.places, **_places(values.get(PLACES_KEY))}

    def save(text: str) -> None:
        storage.set_cursor_values({key: text})

    def save_place(destination: str, where: str) -> None:
        places = _places(storage.get_cursor_values({PLACES_KEY}).get(PLACES_KEY))
        places[destination] = where
        storage.set_cursor_values({PLACES_KEY: json.dumps(places, sort_keys=True)})

    if book.settle(confirmed_tick, now, keep_s):
        save(book.to_json())
    return BookLedger(book, tick, save, save_place)


def _places(text: str | None) -> dict[str, str]:
    raw = json.loads(text) if text else {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
