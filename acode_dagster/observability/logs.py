"""Structured logs: one JSON object per line, for log shippers (``ACODE_LOG_FORMAT=json``).

The same formatter serves Dagster's run and step logs (records that Dagster's log manager has
stamped with ``dagster_meta``: run id, job, step, run tags, the event) and the plain python
``logging`` records of the ``acode`` CLI and the library modules. A shipper (the Datadog agent,
the CloudWatch agent, Fluent Bit) tails stderr and gets one event per line with the run, the
table and the partition as fields, so an on-call person can filter a night's logs by partition.

Human-readable text stays the default (``ACODE_LOG_FORMAT=text``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from acode_dagster.settings import LOG_FORMATS

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The CLI's human-readable line (as it was before structured logs)."""

PARTITION_TAG = "dagster/partition"
TABLE_TAG = "acode/table"
"""A run tag naming the table, for runs whose steps do not carry it in their key."""

_DAGSTER_META = "dagster_meta"
_OURS = "_acode_configured"
"""Marks the root handler configure_logging installed."""
_DAGSTER_EVENT = "dagster_event"

# Every attribute a plain LogRecord has; anything else on a record was passed through
# ``extra=`` and belongs in ``fields``.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    _DAGSTER_META,
    _DAGSTER_EVENT,
    "dagster_event_batch_metadata",
}

# json.dumps escapes every control character below U+0020, but leaves these raw; str.splitlines()
# and some shippers break lines on them, which would cut one object in two.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def table_in(text: str | None, tables: Iterable[str]) -> str | None:
    """The table a step key or job name names, the longest match first.

    The longest first because one table's name is the prefix of the others'
    (``farmarcas_si_analitico_diario`` and ``..._produtos``).
    """
    if not text:
        return None
    for name in sorted(tables, key=len, reverse=True):
        if name in text:
            return name
    return None


def _iso_ms(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _event_fields(event: Any) -> dict[str, Any]:
    """The event type and, for a failure, its error with the traceback (Dagster's own text)."""
    fields: dict[str, Any] = {}
    event_type = getattr(event, "event_type_value", None)
    if event_type:
        fields["event"] = str(event_type)
    data = getattr(event, "event_specific_data", None)
    error = getattr(data, "error", None) if data is not None else None
    if error is not None:
        display = getattr(data, "error_display_string", None)
        fields["error"] = display if isinstance(display, str) else error.to_string()
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``run``, ``job``,
    ``step``, ``table``, ``partition``, ``message`` and ``fields`` (the Dagster event type, an
    error or exception with its traceback, anything passed with ``extra=``). Unknown values are
    null. The message goes out as given: secrets are redacted where messages are made.
    """

    def __init__(self, tables: Iterable[str] | None = None) -> None:
        super().__init__()
        if tables is None:
            # Here, not at the top: the CLI sets up logging before it needs pyarrow.
            from acode_dagster.tables import TABLES

            tables = (t.name for t in TABLES)
        self._tables = tuple(tables)

    def record_dict(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as the dictionary that :meth:`format` writes."""
        meta = record.__dict__.get(_DAGSTER_META)
        fields: dict[str, Any] = {}
        run = job = step = table = partition = None
        if isinstance(meta, Mapping):
            run, job, step = meta.get("run_id"), meta.get("job_name"), meta.get("step_key")
            tags = meta.get("job_tags") or {}
            partition = tags.get(PARTITION_TAG)
            table = tags.get(TABLE_TAG) or table_in(step, self._tables)
            table = table or table_in(job, self._tables)
            # Dagster's own record message repeats job, run, step and the error; the original
            # message is what was logged.
            message = str(meta.get("orig_message", record.getMessage()))
            event = meta.get(_DAGSTER_EVENT)
            if event is not None:
                fields.update(_event_fields(event))
            if meta.get("resource_name"):
                fields["resource"] = meta["resource_name"]
        else:
            message = record.getMessage()
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                fields[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            fields["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exception"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return {
            "time": _iso_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            "run": run,
            "job": job,
            "step": step,
            "table": table,
            "partition": partition,
            "message": message,
            "fields": fields,
        }

    def format(self, record: logging.LogRecord) -> str:
        line = json.dumps(
            self.record_dict(record), ensure_ascii=False, default=str, separators=(",", ":")
        )
        for raw, escaped in _LINE_BREAKS.items():
            line = line.replace(raw, escaped)
        return line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes, not when the handler was made.

    Dagster swaps stderr while it captures a step's output; a handler holding the old object
    would write where nobody reads.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def json_handler(
    stream: TextIO | None = None, tables: Iterable[str] | None = None
) -> logging.Handler:
    """A handler writing :class:`JsonFormatter` lines to ``stream`` (the current stderr if none)."""
    handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(tables))
    return handler


def configure_logging(log_format: str, stream: TextIO | None = None) -> None:
    """Sets up python logging for the ``acode`` CLI: our progress at INFO, libraries at WARNING.

    ``log_format`` is ``Settings.log_format``: ``text`` (a human-readable line) or ``json``.
    Like ``logging.basicConfig``, it leaves a root logger that someone else has given handlers
    (pytest's capture, an embedding program) alone; calling it again replaces its own handler.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {LOG_FORMATS}")
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OURS, False):
            root.removeHandler(old)
    if not root.handlers:
        if log_format == "json":
            handler = json_handler(stream)
        else:
            handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        setattr(handler, _OURS, True)
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger("acode_dagster").setLevel(logging.INFO)
