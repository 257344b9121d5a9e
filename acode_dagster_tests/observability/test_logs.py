"""Structured logs: the JSON formatter on its own, on Dagster's own log records, and a real
``dagster asset materialize`` of a bronze partition with ``ACODE_LOG_FORMAT=json``."""

import io
import json
import logging
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster.errors import ConfigError
from acode_dagster.observability.logs import JsonFormatter, configure_logging, table_in
from acode_dagster.settings import LOG_FORMATS, Settings
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS, TABLES

KEYS = ["time", "level", "logger", "run", "job", "step", "table", "partition", "message", "fields"]
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DAY = date(2026, 9, 15)


def _record(message: str, **extra: Any) -> logging.LogRecord:
    record = logging.getLogger("acode_dagster.test").makeRecord(
        "acode_dagster.test", logging.WARNING, __file__, 1, message, (), None, extra=extra
    )
    record.created = 1_764_000_000.1234
    return record


def _one_object(line: str) -> dict[str, Any]:
    assert len(line.splitlines()) == 1, line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_a_plain_record_is_one_object_with_every_key() -> None:
    line = JsonFormatter().format(_record("sync of %s done", rows=12))
    obj = _one_object(line)
    assert list(obj) == KEYS
    assert obj["time"] == "2025-11-24T16:00:00.123Z"
    assert (obj["level"], obj["logger"]) == ("WARNING", "acode_dagster.test")
    assert obj["run"] is obj["table"] is obj["partition"] is None
    # The message is what was logged: a %-placeholder without arguments stays as written.
    assert obj["message"] == "sync of %s done"
    assert obj["fields"] == {"rows": 12}


def test_newlines_accents_and_unicode_line_separators_stay_inside_one_line() -> None:
    message = "linha 1\nlinha 2\r\nFarmácia São João \u2028 fim\x85\u2029 \t ok"
    line = JsonFormatter().format(_record(message, uf="SÃO PAULO"))
    assert "\n" not in line and "\r" not in line
    obj = _one_object(line)
    assert obj["message"] == message
    assert obj["fields"] == {"uf": "SÃO PAULO"}
    # Accents are written as they are, readable in a log viewer.
    assert "Farmácia São João" in line


def test_an_exception_is_one_field_with_its_traceback_and_only_once() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("the source closed the connection\nafter 3 s")
    except ValueError:
        record = logging.getLogger("acode").makeRecord(
            "acode", logging.ERROR, __file__, 1, "sync failed", (), sys.exc_info()
        )
    line = formatter.format(record)
    obj = _one_object(line)
    assert obj["message"] == "sync failed"
    exception = obj["fields"]["exception"]
    assert exception.startswith("Traceback (most recent call last):")
    assert "ValueError: the source closed the connection\nafter 3 s" in exception
    assert line.count("ValueError: the source") == 1 and line.count("Traceback") == 1
    # Formatting a record twice (two handlers) does not double it either.
    assert formatter.format(record).count("Traceback") == 1


def test_the_table_is_the_longest_name_in_a_step_key() -> None:
    names = [t.name for t in TABLES]
    for table in TABLES:
        assert table_in(f"bronze_acode__{table.name}", names) == table.name
        assert table_in(f"bronze_acode__{table.name}_nulls", names) == table.name
    assert table_in("redundancy_state", names) is None
    assert table_in(None, names) is None


def test_an_unknown_log_format_is_a_config_error_naming_the_setting() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"ACODE_LOG_FORMAT": " JSON "}).log_format == "json"
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"ACODE_LOG_FORMAT": "xml"})
    message = str(raised.value)
    assert "ACODE_LOG_FORMAT='xml'" in message
    assert all(name in message for name in LOG_FORMATS)


def test_dagster_records_carry_run_step_table_partition_and_the_error_once(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Dagster's own log manager, with the code location's console logger in JSON mode."""
    from acode_dagster.defs.observability.loggers import console_logger

    daily = dg.DailyPartitionsDefinition(start_date="2026-09-01")

    @dg.asset(key_prefix="bronze_acode", name=PRODUCTS.name, partitions_def=daily)
    def products(context: dg.AssetExecutionContext) -> None:
        context.log.info("lidos 3 registros\nda Farmácia")
        raise RuntimeError("s3 said no")

    defs = dg.Definitions(assets=[products], loggers={"console": console_logger("json")})
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=DAY.isoformat(),
            run_config={"loggers": {"console": {"config": {"log_level": "DEBUG"}}}},
            raise_on_error=False,
        )
    assert not result.success
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    objects = [_one_object(line) for line in lines]
    assert objects and all(list(o) == KEYS for o in objects)
    assert {o["run"] for o in objects} == {result.run_id}
    assert {o["partition"] for o in objects} == {DAY.isoformat()}
    assert all(TIME.match(o["time"]) for o in objects)
    in_step = [o for o in objects if o["step"]]
    assert in_step and {o["table"] for o in in_step} == {PRODUCTS.name}
    (said,) = [o for o in objects if o["message"].startswith("lidos")]
    assert said["message"] == "lidos 3 registros\nda Farmácia" and said["level"] == "INFO"
    (failure,) = [o for o in objects if o["fields"].get("event") == "STEP_FAILURE"]
    assert failure["level"] == "ERROR"
    assert "RuntimeError: s3 said no" in failure["fields"]["error"]
    assert "s3 said no" not in failure["message"]
    assert "Stack Trace" in failure["fields"]["error"]


def _python(code: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_logging_is_json_when_asked_and_text_by_default() -> None:
    """``acode`` sets up logging through configure_logging; its own lines at INFO, libraries'
    only from WARNING, in either format."""
    code = (
        "import logging\n"
        "from acode_dagster.observability.logs import configure_logging\n"
        "from acode_dagster.settings import Settings\n"
        "configure_logging(Settings.from_env().log_format)\n"
        "configure_logging(Settings.from_env().log_format)\n"
        "logging.getLogger('acode_dagster.sync').info('publicado %s', 'São Paulo', "
        "extra={'rows': 7})\n"
        "logging.getLogger('botocore').info('not shown')\n"
        "logging.getLogger('botocore').warning('retrying')\n"
    )
    base = {k: v for k, v in os.environ.items() if k != "ACODE_LOG_FORMAT"}
    as_json = _python(code, {**base, "ACODE_LOG_FORMAT": "json"})
    assert as_json.returncode == 0, as_json.stderr
    objects = [_one_object(line) for line in as_json.stderr.splitlines()]
    assert [(o["logger"], o["level"], o["message"]) for o in objects] == [
        ("acode_dagster.sync", "INFO", "publicado São Paulo"),
        ("botocore", "WARNING", "retrying"),
    ]
    assert objects[0]["fields"] == {"rows": 7}
    as_text = _python(code, base)
    assert as_text.returncode == 0, as_text.stderr
    lines = as_text.stderr.splitlines()
    assert len(lines) == 2 and "INFO acode_dagster.sync: publicado São Paulo" in lines[0]
    assert not lines[0].startswith("{")


def test_configure_logging_writes_to_the_stream_given() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers)
    for handler in saved:
        root.removeHandler(handler)
    try:
        configure_logging("json", stream)
        logging.getLogger("acode_dagster.x").info("ok")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
    assert _one_object(stream.getvalue().strip())["message"] == "ok"
    with pytest.raises(ValueError):
        configure_logging("yaml")


# A real run of the code location, as a person runs it, against the session's MariaDB pair.


@pytest.fixture
def run_env(env: dict[str, str], mariadb_pair: Any, tmp_path: Path) -> dict[str, str]:
    from acode_dagster import runs
    from acode_dagster.demo.loader import load_days

    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        [DAY],
        rows={FISCAL_LINES.name: 200, NFE_COMPLEMENTS.name: 50},
    )
    os.environ["DAGSTER_HOME"] = str(tmp_path / "dagster")
    runs.ensure_dagster_home(Settings.from_env())
    environ = {k: v for k, v in os.environ.items() if k != "ACODE_LOG_FORMAT"}
    # Python warnings (Dagster's notice that the command is superseded, printed before the
    # code location loads) are not log lines.
    return {**environ, "PYTHONWARNINGS": "ignore"}


def _materialize(environ: dict[str, str]) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "acode_dagster.definitions",
            "--select",
            f"bronze_acode/{FISCAL_LINES.name}",
            "--partition",
            DAY.isoformat(),
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stderr


def test_a_real_run_logs_one_json_object_per_line_and_text_by_default(
    run_env: dict[str, str],
) -> None:
    err = _materialize({**run_env, "ACODE_LOG_FORMAT": "json"})
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) > 5, err
    objects = [_one_object(line) for line in lines]
    from_run = [o for o in objects if o["run"] is not None]
    assert len({o["run"] for o in from_run}) == 1
    assert all(o["partition"] == DAY.isoformat() for o in from_run)
    assert all(list(o) == KEYS and o["level"] and o["message"] for o in objects)
    in_steps = [o for o in from_run if o["step"]]
    assert {o["table"] for o in in_steps} == {FISCAL_LINES.name}
    events = {o["fields"].get("event") for o in from_run}
    assert {"PIPELINE_START", "STEP_START", "ASSET_MATERIALIZATION", "PIPELINE_SUCCESS"} <= events

    text = _materialize(run_env)
    text_lines = [line for line in text.splitlines() if line.strip()]
    assert text_lines and not any(line.lstrip().startswith("{") for line in text_lines)
    assert any(
        " - RUN_START - " in line or "Started execution of run" in line for line in text_lines
    )


def test_a_run_launched_as_the_ui_and_the_daemon_launch_it_logs_json(
    run_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A code server serves the code location; the instance's run launcher starts a run worker
    from it (the path of the UI's Materialize, schedules, sensors and backfills). Its lines reach
    this test's stderr, inherited by the code server and the worker."""
    from acode_dagster_tests.support.launched import code_location, launch_partition
    from acode_dagster_tests.support.platform import wait_for

    for name, value in {**run_env, "ACODE_LOG_FORMAT": "json"}.items():
        monkeypatch.setenv(name, value)
    with (
        dg.DagsterInstance.from_config(run_env["DAGSTER_HOME"]) as instance,
        code_location(instance) as context,
    ):
        run_id = launch_partition(context, FISCAL_LINES, DAY)

        def finished() -> bool:
            run = instance.get_run_by_id(run_id)
            return run is not None and run.is_finished

        wait_for(finished, "the launched run to finish", timeout=240)
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if run_id in line]
    objects = [_one_object(line) for line in lines]
    assert len(objects) > 5, err[-3000:]
    assert {o["run"] for o in objects} == {run_id}
    assert {o["partition"] for o in objects} == {DAY.isoformat()}
    events = {o["fields"].get("event") for o in objects}
    assert {"PIPELINE_START", "ASSET_MATERIALIZATION", "PIPELINE_SUCCESS"} <= events


TICK = """
import dagster as dg

from acode_dagster.defs.observability.loggers import loggers

# What loading the code location does with this module, as a code server does.
loggers()

@dg.sensor(job_name="bronze_acode_job")
def probe(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    context.log.info("tick de São Paulo")
    return dg.SkipReason("nothing to do")

with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance) as context:
    probe.evaluate_tick(context)
"""


def test_a_sensor_tick_logs_json_once_the_code_location_is_loaded() -> None:
    """Sensor and schedule ticks log through Dagster's instigation logger, in the code server.
    (In text mode nothing is replaced: the real run's test shows that the default is text.)"""
    base = {k: v for k, v in os.environ.items() if k != "ACODE_LOG_FORMAT"}
    base["PYTHONWARNINGS"] = "ignore"
    as_json = _python(TICK, {**base, "ACODE_LOG_FORMAT": "json"})
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    (line,) = [line for line in as_json.stderr.splitlines() if "tick de" in line]
    obj = _one_object(line)
    assert (obj["level"], obj["message"], obj["run"]) == ("INFO", "tick de São Paulo", None)
