"""``acode backfill``: bad input refused with the fix, the backfill record the UI and the daemon
read, and a real backfill run by a real ``dagster-daemon`` under the source pool's bound."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from acode_dagster import runs
from acode_dagster.cli import main
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.demo.loader import load_days
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, PRODUCTS, SOURCE_TIMEZONE, TABLES

DAYS = [date(2026, 10, 14), date(2026, 10, 15), date(2026, 10, 16)]
DAEMON_TIMEOUT_S = 300
DEPLOYED = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh Dagster home the acode way, without a MariaDB pair (nothing here syncs)."""
    monkeypatch.setenv("ACODE_HOME", str(tmp_path / "acode"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    return runs.ensure_dagster_home(Settings.from_env())


def _backfill_id(out: str) -> str:
    found = re.search(r"^backfill ([a-z]+):", out, re.MULTILINE)
    assert found, out
    return found.group(1)


# --------------------------------------------------------------------------- input and record


def test_bad_input_is_refused_with_the_fix(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yesterday = datetime.now(SOURCE_TIMEZONE).date() - timedelta(days=1)
    today = yesterday + timedelta(days=1)
    first = Settings.from_env().partitions_start
    cases = [
        (
            ["2026-10-16", "2026-10-14"],
            ["END 2026-10-14 is before START 2026-10-16", "`acode backfill 2026-10-14 2026-10-16`"],
        ),
        (
            [str(yesterday), str(today)],
            [f"END {today} is not over yet in America/Sao_Paulo", f"complete day is {yesterday}"],
        ),
        (
            [str(first - timedelta(days=2)), str(first)],
            [f"is before the first partition, {first}", "ACODE_PARTITIONS_START"],
        ),
        (
            ["2026-10-14", "2026-10-16", "--table", "nope"],
            ["unknown table 'nope'", FISCAL_LINES.name, "--table"],
        ),
        (["2026-10-14", "2026-02-30"], ["bad partition key '2026-02-30'", "real calendar day"]),
        (["14/10/2026", "2026-10-16"], ["expected a day as YYYY-MM-DD"]),
        (["2026-10-14"], ["needs the first and the last day"]),
        (["2026-10-14", "2026-10-16", "--follow", "abc"], ["give it alone"]),
        (["--follow", "nosuchid"], ["no asset backfill 'nosuchid'"]),
    ]
    for argv, needles in cases:
        code, out, err = run(["backfill", *argv], capsys)
        assert code == 2, (argv, out, err)
        assert err.startswith("acode: error: "), err
        for needle in needles:
            assert needle in err, (argv, needle, err)
    with dg.DagsterInstance.get() as instance:
        assert instance.get_backfills() == [], "a refused backfill must not be recorded"


def test_the_backfill_record_is_the_requested_days_of_the_requested_tables(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACODE_DAGSTER_UI_URL", "https://dagster.example.com/")
    code, out, _ = run(
        ["backfill", "2026-10-14", "2026-10-16", "--table", FISCAL_LINES.name,
         "--table", PRODUCTS.name, "--table", FISCAL_LINES.name],
        capsys,
    )  # fmt: skip
    assert code == 0, out
    backfill_id = _backfill_id(out)
    assert f"https://dagster.example.com/runs/b/{backfill_id}" in out
    assert "at most 2 sync(s) at once: pool acode_source" in out
    assert "no Dagster daemon has reported" in out
    assert f"acode backfill --follow {backfill_id}" in out

    asset_graph = runs.current_definitions().resolve_asset_graph()
    with dg.DagsterInstance.get() as instance:
        (backfill,) = instance.get_backfills()
        assert backfill.backfill_id == backfill_id
        assert backfill.status.value == "REQUESTED"
        assert backfill.is_asset_backfill and backfill.tags["acode/launched_by"] == "acode backfill"
        target = backfill.get_asset_backfill_data(asset_graph).target_subset
        assert {(p.asset_key, p.partition_key) for p in target.iterate_asset_partitions()} == {
            (bronze_key(table), str(day)) for table in (FISCAL_LINES, PRODUCTS) for day in DAYS
        }

    code, out, _ = run(["backfill", "2026-10-16", "2026-10-16"], capsys)
    assert code == 0
    with dg.DagsterInstance.get() as instance:
        newest = instance.get_backfill(_backfill_id(out))
        assert newest is not None
        target = newest.get_asset_backfill_data(asset_graph).target_subset
        assert {(p.asset_key, p.partition_key) for p in target.iterate_asset_partitions()} == {
            (bronze_key(table), "2026-10-16") for table in TABLES
        }


def test_the_bronze_assets_are_in_the_pool_whose_limit_is_the_setting(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {a.op.pool for a in bronze_assets} == {runs.SOURCE_POOL}
    with dg.DagsterInstance.get() as instance:
        assert runs.source_pool_bound(instance).limit == 2
        assert runs.source_pool_bound(instance).granularity == "op"

    # A later setting rewrites the file acode wrote, for the next process that reads it.
    monkeypatch.setenv("ACODE_SOURCE_CONCURRENCY", "5")
    runs.ensure_dagster_home(Settings.from_env())
    with dg.DagsterInstance.get() as instance:
        assert runs.source_pool_bound(instance).limit == 5

    # A file acode did not write is the user's: left as it is, and the missing bound is told.
    own = "telemetry:\n  enabled: true\n"
    (home / "dagster.yaml").write_text(own)
    runs.ensure_dagster_home(Settings.from_env())
    assert (home / "dagster.yaml").read_text() == own
    with dg.DagsterInstance.get() as instance:
        assert runs.source_pool_bound(instance).limit is None

    # The file earlier versions wrote is acode's, and gains the bound.
    (home / "dagster.yaml").write_text(runs.LEGACY_DAGSTER_YAML)
    runs.ensure_dagster_home(Settings.from_env())
    assert "default_limit: 5" in (home / "dagster.yaml").read_text()


def test_the_production_instance_bounds_the_pool_like_the_default_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its concurrency settings only, on SQLite: test_production_instance runs it on PostgreSQL.
    deployed = yaml.safe_load(DEPLOYED.read_text())
    del deployed["storage"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(deployed))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        bound = runs.source_pool_bound(instance)
        assert bound.limit == Settings.from_env({}).source_concurrency
        assert bound.granularity == "op"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.should_block_op_concurrency_limited_runs


# --------------------------------------------------------------------------- through the daemon


IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}
"""Each run's steps in its run worker: a fresh process takes ~10 s here to import Dagster and the
definitions, and the default executor starts one per step. The pool is claimed per step in every
executor (``InstanceConcurrencyContext``), so the bound under test is the same."""
HOLDER = "another-sync"
"""A stand-in for a sync launched some other way (the schedule, `acode sync`) holding the slot."""


@pytest.fixture
def daemon_home(
    env: dict[str, str], mariadb_pair: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("ACODE_SOURCE_CONCURRENCY", "1")
    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        DAYS,
        rows={FISCAL_LINES.name: 300, PRODUCTS.name: 200},
    )
    mariadb_pair.wait_replica_caught_up()
    home = runs.ensure_dagster_home(Settings.from_env())
    # The queue is looked at every second rather than every 5 s, to keep the test short.
    with (home / "dagster.yaml").open("a") as config:
        config.write(
            "run_coordinator:\n  module: dagster._core.run_coordinator\n"
            "  class: QueuedRunCoordinator\n  config:\n    dequeue_interval_seconds: 1\n"
        )
    return home


@contextlib.contextmanager
def dagster_daemon(log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``dagster-daemon run`` on the code location, in a process group of its own (its code
    server and run workers are its children), killed whole however the test ends."""
    daemon = Path(sys.executable).with_name("dagster-daemon")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(daemon), "run", "-m", "acode_dagster.definitions"],
            env=os.environ.copy(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            # Run workers and the code server outlive a daemon that exits: end the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _step_intervals(instance: dg.DagsterInstance, run_id: str) -> list[tuple[float, float, str]]:
    """(start, end, run/step) of every bronze sync step of the run, from its step events."""
    syncs = {asset.op.name for asset in bronze_assets}
    started: dict[str, float] = {}
    intervals = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key not in syncs:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            name = f"{run_id[:8]}/{event.step_key}"
            intervals.append((started[event.step_key], entry.timestamp, name))
    return intervals


def _backfill_run_ids(instance: dg.DagsterInstance, backfill_id: str) -> list[str]:
    filters = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
    return [record.dagster_run.run_id for record in instance.get_run_records(filters)]


@pytest.mark.slow
def test_a_backfill_runs_through_the_daemon_once_each_one_sync_at_a_time(
    daemon_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    # Submitted before the daemon starts, so that its first backfill iteration takes it (the
    # next is 30 s later); through the function `acode backfill` calls, to pass the run config.
    submitted = runs.backfill_days(DAYS[0], DAYS[-1], ui_url="http://ui", run_config=IN_PROCESS)
    assert submitted.bound.limit == 1 and submitted.bound.granularity == "op"
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        # The pool's only slot is taken by a sync launched elsewhere, so the backfill's first
        # sync must wait for it: the bound is put to the test, not left to timing.
        storage.initialize_concurrency_limit_to_default(runs.SOURCE_POOL)
        assert storage.claim_concurrency_slot(runs.SOURCE_POOL, HOLDER, "sync").is_claimed
        held_from = time.time()

    log = tmp_path / "daemon.log"
    with dagster_daemon(log), dg.DagsterInstance.get() as instance:
        # The run queue keeps the backfill's runs queued while the pool has no free slot (with
        # op granularity it counts claimed and waiting steps); it says so once per run.
        deadline = time.monotonic() + DAEMON_TIMEOUT_S
        while (
            f'blocked by global concurrency limits: {{"{runs.SOURCE_POOL}"' not in log.read_text()
        ):
            assert time.monotonic() < deadline, f"no run waited: {log.read_text()[-5000:]}"
            time.sleep(0.5)
        # Nothing of the backfill has started while the slot was taken.
        assert all(
            run.status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED)
            for run in instance.get_runs(
                dg.RunsFilter(tags={"dagster/backfill": submitted.backfill_id})
            )
        )
        held_until = time.time()
        instance.event_log_storage.free_concurrency_slots_for_run(HOLDER)
        try:
            runs.follow_backfill(
                submitted.backfill_id,
                lambda _: None,
                poll_s=1.0,
                timeout_s=DAEMON_TIMEOUT_S - (time.monotonic() - started),
            )
        except TimeoutError:
            print(log.read_text()[-8000:])
            raise
    elapsed = time.monotonic() - started

    # What `--follow` (and `--wait`) print once the daemon is done.
    code, out, err = run(["backfill", "--follow", submitted.backfill_id], capsys)
    print(out, f"{elapsed:.0f} s to submit, run and complete the backfill", sep="\n")
    assert code == 0, (out, err)
    assert f"backfill {submitted.backfill_id} COMPLETED_SUCCESS" in out
    wanted = {(table.name, str(day)) for table in TABLES for day in DAYS}
    rows = [line.split() for line in out.splitlines() if line.startswith("2026-")]
    assert {(row[1], row[0]) for row in rows} == wanted, out
    assert {row[2] for row in rows} == {"materialized"}

    with dg.DagsterInstance.get() as instance:
        run_ids = _backfill_run_ids(instance, submitted.backfill_id)
        finished = [instance.get_run_by_id(run_id) for run_id in run_ids]
        assert sorted(r.tags["dagster/partition"] for r in finished if r) == [str(d) for d in DAYS]
        assert all(r and r.status == dg.DagsterRunStatus.SUCCESS for r in finished)
        for table in TABLES:  # each (table, day) materialized exactly once
            records = instance.fetch_materializations(bronze_key(table), limit=100).records
            assert sorted(r.partition_key or "" for r in records) == [str(d) for d in DAYS]
        intervals = sorted(
            [(held_from, held_until, HOLDER)]
            + [i for run_id in run_ids for i in _step_intervals(instance, run_id)]
        )
    assert len(intervals) == 1 + len(wanted), intervals
    for (_, end, name), (start, _, next_name) in itertools.pairwise(intervals):
        assert end <= start, f"{name} still ran when {next_name} started: the bound did not hold"
