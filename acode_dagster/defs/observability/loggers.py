"""Dagster's console logs as JSON lines when ``ACODE_LOG_FORMAT=json``; as today otherwise.

Two ways a run gets its console logger, and both must give JSON:

- The code location's default loggers (``Definitions(loggers={"console": ...})``). Dagster
  applies them to every job that names none of its own, the implicit asset job included, but
  instantiates them only for a run whose run config lists them (``loggers: {console: {}}``).
- Every other run (the UI's Materialize, ``dagster asset materialize``, schedules and sensors
  with no logger config) gets Dagster's default system logger, which
  ``dagster._loggers.default_system_loggers`` reads from the module attribute
  ``colored_console_logger`` when the run starts; sensor and schedule ticks get theirs from
  ``dagster._core.definitions.instigation_logger.create_console_logger``. In JSON mode both
  attributes are pointed at the JSON logger when the definitions load, which happens in every
  process that runs a step or a tick, before its first log line. In text mode nothing is touched.
"""

from __future__ import annotations

import logging

import dagster as dg
import dagster._loggers as dagster_loggers
from dagster._core.definitions import instigation_logger
from dagster._loggers import colored_console_logger

from acode_dagster.observability.logs import json_handler
from acode_dagster.settings import Settings

DAGSTER_CONSOLE = colored_console_logger
"""Dagster's own colored console logger, kept before anything is replaced."""

_CONSOLE_CONFIG = {
    "log_level": dg.Field(str, is_required=False, default_value="INFO"),
    "name": dg.Field(str, is_required=False, default_value="dagster"),
}


def json_console(name: str, level: str | int) -> logging.Logger:
    """A logger writing JSON lines to stderr; the shape of ``create_console_logger``."""
    # Not registered with logging.getLogger, as Dagster's own is not: each run has its own.
    logger = logging.getLoggerClass()(
        name, level=level.upper() if isinstance(level, str) else level
    )
    logger.addHandler(json_handler())
    return logger


@dg.logger(config_schema=_CONSOLE_CONFIG, description="One JSON object per line on stderr.")
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    config = init_context.logger_config
    return json_console(config["name"], config["log_level"])


def console_logger(log_format: str) -> dg.LoggerDefinition:
    """The console logger definition for ``Settings.log_format``."""
    return json_console_logger if log_format == "json" else DAGSTER_CONSOLE


def install_default_console(log_format: str) -> None:
    """Makes the JSON logger Dagster's default console in this process (JSON mode only).

    Python logging outside Dagster's log manager (library warnings, ``acode_dagster`` modules,
    ``warnings.warn``) gets a JSON root handler too, unless the process has set up its own:
    left alone it would reach stderr as bare text through logging's last-resort handler.
    """
    if log_format != "json":
        return
    dagster_loggers.colored_console_logger = json_console_logger
    instigation_logger.create_console_logger = json_console  # type: ignore[attr-defined]
    root = logging.getLogger()
    if not root.handlers:
        handler = json_handler()
        handler.addFilter(_not_handled_on_the_way)
        root.addHandler(handler)
    logging.captureWarnings(True)


def _not_handled_on_the_way(record: logging.LogRecord) -> bool:
    """Whether no logger between the record's and the root has a handler of its own.

    Dagster's python loggers (``dagster.code_server``, ``dagster.daemon``...) print through
    handlers of their own and still propagate: the root handler would write them twice.
    """
    logger: logging.Logger | None = logging.getLogger(record.name)
    root = logging.getLogger()
    while logger is not None and logger is not root:
        if logger.handlers:
            return False
        logger = logger.parent if logger.propagate else None
    return True


@dg.definitions
def loggers() -> dg.Definitions:
    log_format = Settings.from_env().log_format
    install_default_console(log_format)
    return dg.Definitions(loggers={"console": console_logger(log_format)})
