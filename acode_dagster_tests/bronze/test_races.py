"""Invariant 1 with real processes: writers of one (table, day) never interleave, however they
were launched, and a writer paused past its lease cannot publish over the one that took it over.

Every writer is a process of its own syncing from the session's real MariaDB primary into a
folder or into S3 (moto's HTTP server, conditional writes atomic as on S3), through the
production code: ``race_writer.py`` (the embedded replicator as a script runs it) or
``dagster asset materialize`` (as a person runs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from acode_dagster.bronze.lease import LeaseRecord
from acode_dagster.bronze.store import (
    SUCCESS_MARKER,
    BronzeStore,
    LocalStore,
    Manifest,
    S3Store,
    open_store,
    partition_prefix,
    table_prefix,
)
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS
from acode_dagster_tests.support.source import platform_environ, source_window

TABLE = FISCAL_LINES
DAY = date(2026, 10, 5)
ROWS = 80_000
"""About 2.8 MB of Parquet in 5,000-row groups: one file under a 64 MB bound, three under 1 MB."""
WRITER = Path(__file__).with_name("race_writer.py")
BUSY, LOST = 3, 4
"""race_writer.py's exit statuses for LeaseBusy and LeaseLost."""
STARTUP_S = 180.0
RUN_S = 240.0


@pytest.fixture(scope="module")
def source(mariadb_pair: Any) -> Any:
    from acode_dagster.demo.loader import load_days

    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        [DAY],
        rows={TABLE.name: ROWS, NFE_COMPLEMENTS.name: 0, PRODUCTS.name: 400},
    )
    return mariadb_pair


@pytest.fixture(scope="module")
def expected(source: Any) -> list[dict[str, Any]]:
    """The partition as the source holds it, read without the replicator's SQL."""
    rows = source_window(source.endpoint("primary"), TABLE, DAY)
    assert len(rows) == ROWS
    return rows


def store_url(store: BronzeStore) -> str:
    if isinstance(store, LocalStore):
        return store.url
    assert isinstance(store, S3Store)
    return f"s3://{store.bucket}/{store.prefix}"


# ----------------------------------------------------------------------------- writer processes


@dataclass
class Writer:
    """A race_writer.py process: started, READY (imports done), then told to go."""

    name: str
    process: subprocess.Popen[str]
    log: Path
    env: dict[str, str]
    status: int | None = None
    _outcome: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while "READY" not in self.text():
            assert self.process.poll() is None, f"{self.name} died starting:\n{self.text()}"
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.text()}"
            time.sleep(0.05)

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.close()

    def finish(self) -> int:
        try:
            self.status = self.process.wait(RUN_S)
        except subprocess.TimeoutExpired:
            stop(self.process)
            pytest.fail(f"{self.name} did not finish in {RUN_S:g} s:\n{self.text()}")
        return self.status

    @property
    def outcome(self) -> dict[str, Any]:
        if self._outcome is None:
            lines = [x for x in self.text().splitlines() if x.startswith("OUTCOME ")]
            assert lines, f"{self.name} exited {self.status} without an outcome:\n{self.text()}"
            self._outcome = json.loads(lines[-1].removeprefix("OUTCOME "))
        return self._outcome


def stop(process: subprocess.Popen[Any]) -> None:
    """Kill the process group, paused or not."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30)


@pytest.fixture
def spawn(source: Any, tmp_path: Path) -> Iterator[Callable[..., Writer]]:
    """Starts writers of (TABLE, DAY); whatever is left running when the test ends is killed."""
    started: list[Writer] = []

    def start(name: str, url: str, **env: str) -> Writer:
        log = tmp_path / f"{name}.log"
        child_env = {**os.environ, **env}
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, str(WRITER), str(source.home), url, TABLE.name, DAY.isoformat()],
                env=child_env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        writer = Writer(name, process, log, env)
        started.append(writer)
        return writer

    yield start
    for writer in started:
        stop(writer.process)


# ----------------------------------------------------------------------------- the end state


def assert_one_complete_version(
    store: BronzeStore, expected: list[dict[str, Any]], versions: dict[str, list[str] | None]
) -> Manifest:
    """The partition is one version, among ``versions`` (version -> its files, when known), with
    exactly its files, equal to the source cell by cell, and nothing else is left behind."""
    manifest = store.manifest(TABLE, DAY)
    assert manifest is not None, "the partition is not published"
    assert manifest.version in versions, (manifest.version, sorted(versions))
    names = [f.name for f in manifest.files]
    if versions[manifest.version] is not None:
        assert names == versions[manifest.version]
    assert store.visible_files(TABLE, DAY) == sorted([SUCCESS_MARKER, *names])
    assert manifest.rows == len(expected)
    rows = sorted(store.read_partition(TABLE, DAY).to_pylist(), key=lambda r: r[TABLE.key])
    assert rows == expected
    assert store.leftovers(TABLE) == [], "a writer left staging behind"
    assert store.quarantined(TABLE, DAY) == [], "a version was quarantined"
    assert store.lease_records(TABLE, DAY).read() is None, "a lease record was left behind"
    return manifest


def staged_files(store: BronzeStore) -> int:
    """Files closed into staging by a writer of (TABLE, DAY) (the kill test's poll)."""
    if isinstance(store, LocalStore):
        folder = store.root / partition_prefix(TABLE, DAY)
        # The file being written is in staging too: count the closed ones.
        return sum(
            max(len(list(p.glob("*.parquet"))) - 1, 0) for p in folder.parent.glob(".staging-*")
        )
    assert isinstance(store, S3Store)
    return len(store._list(store._key(table_prefix(TABLE), "_staging/")))


# ----------------------------------------------------------------------------- races of scripts

ROUNDS = 3
CONFIGS = {
    # name: the settings the writer runs with
    "big-files-waits": {"ACODE_MAX_FILE_MB": "64", "ACODE_LEASE_WAIT_S": "300"},
    "small-files-impatient": {"ACODE_MAX_FILE_MB": "1", "ACODE_LEASE_WAIT_S": "0.5"},
    "small-files-waits": {"ACODE_MAX_FILE_MB": "1", "ACODE_LEASE_WAIT_S": "300"},
}


def test_racing_writers_leave_one_complete_version(
    store: BronzeStore,
    expected: list[dict[str, Any]],
    spawn: Callable[..., Writer],
) -> None:
    """Three processes sync the same partition at the same moment, with versions of different
    file counts, round after round: each publishes in turn or fails naming the holder, and the
    partition is always exactly one of the published versions."""
    url = store_url(store)
    host = socket.gethostname()
    seen: dict[str, int] = {"published": 0, "busy": 0, "waited": 0}
    for round_number in range(ROUNDS):
        writers = [
            spawn(f"r{round_number}-{name}", url, RACE_ROWS_PER_GROUP="5000", **settings)
            for name, settings in CONFIGS.items()
        ]
        for writer in writers:
            writer.wait_ready()
        start_round(store, writers, round_number)
        for writer in writers:
            writer.finish()
        pids = {w.pid: w for w in writers}
        published: dict[str, list[str] | None] = {}
        last_published: tuple[str, str] | None = None
        for writer in writers:
            text, outcome = writer.text(), writer.outcome
            assert "quarantined" not in text, text
            if outcome["outcome"] == "published":
                assert writer.status == 0
                assert set(outcome["checks"].values()) == {"PASS"}, outcome["checks"]
                assert outcome["rows"] == ROWS
                files = outcome["files"]
                if writer.env["ACODE_MAX_FILE_MB"] == "64":
                    assert len(files) == 1
                else:
                    assert len(files) >= 3, files
                published[outcome["version"]] = files
                # Writers hold the lease in turn: the last to publish built its manifest last.
                built = outcome["published_at"]
                if last_published is None or built > last_published[0]:
                    last_published = (built, outcome["version"])
                seen["published"] += 1
                seen["waited"] += "is being written by run local" in text
            else:
                assert outcome["outcome"] == "busy", (writer.name, text)
                assert writer.status == BUSY
                holder = outcome["holder"]
                # The holder is named: another writer of this round, which published.
                assert holder["pid"] in pids and holder["pid"] != writer.pid, (holder, pids)
                assert pids[holder["pid"]].outcome["outcome"] == "published"
                assert holder["host"] == host and holder["run_id"] == "local"
                message = outcome["message"]
                assert re.search(
                    rf"is being written by run local \(.+\) on host {re.escape(host)}, "
                    rf"pid {holder['pid']} since \d{{4}}-\d\d-\d\dT",
                    message,
                ), message
                seen["busy"] += 1
        assert published, "nobody published"
        manifest = assert_one_complete_version(store, expected, published)
        assert last_published is not None
        assert manifest.version == last_published[1], "the last version published is not the one"
    # Every round had at least two publishers (the patient ones), in turn.
    assert seen["published"] >= 2 * ROUNDS
    assert seen["waited"] >= 1 and seen["busy"] >= 1, seen


def start_round(store: BronzeStore, writers: list[Writer], round_number: int) -> None:
    """All at once, in a different order each round. In the second round the impatient one goes
    only once another holds the lease, and that holder is paused (its lease live) until the
    impatient one is done, so that it surely meets a holder however fast the holder's sync
    would have been."""
    order = writers[round_number:] + writers[:round_number]
    late = [w for w in order if round_number == 1 and w.name.endswith("impatient")]
    for writer in order:
        if writer not in late:
            writer.go()
    if late:
        holder_pid = wait_for_a_holder(store)
        os.kill(holder_pid, signal.SIGSTOP)
        try:
            late[0].go()
            late[0].finish()
        finally:
            os.kill(holder_pid, signal.SIGCONT)


def wait_for_a_holder(store: BronzeStore) -> int:
    """The pid of the first writer seen holding the partition's lease."""
    deadline = time.monotonic() + RUN_S
    while (current := store.lease_records(TABLE, DAY).read()) is None:
        assert time.monotonic() < deadline, "nobody took the lease"
        time.sleep(0.005)
    return LeaseRecord.from_json(current[0]).holder.pid


# ----------------------------------------------------------------------------- pause past expiry


def holds_flock(pid: int) -> bool:
    """Whether ``pid`` holds a flock (the folder lease's lock is held only inside a swap)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[1] == "FLOCK" and fields[4] == str(pid):
            return True
    return False


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (state T in /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def pause_while_holding(writer: Writer, store: BronzeStore) -> None:
    """Keep the writer paused once it holds the lease and has closed a file into staging: it
    stops itself there (RACE_STOP_AFTER_FILES), however fast it runs on this machine."""
    deadline = time.monotonic() + RUN_S
    while not stopped(writer.pid):
        assert writer.process.poll() is None, f"{writer.name} ended:\n{writer.text()}"
        assert time.monotonic() < deadline, f"{writer.name} staged nothing:\n{writer.text()}"
        time.sleep(0.005)
    for _attempt in range(50):
        os.kill(writer.pid, signal.SIGSTOP)
        # Not inside a swap of a folder's lease record: a process paused holding that flock
        # would keep every other writer out of the record until it resumes (see the report of
        # this test's author); that is a pause of the lock, not the lease under test.
        if not isinstance(store, LocalStore) or not holds_flock(writer.pid):
            return
        os.kill(writer.pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("the writer held the lease file's lock at every attempt to pause it")


def test_a_writer_paused_past_its_lease_cannot_publish_over_the_next(
    store: BronzeStore,
    expected: list[dict[str, Any]],
    spawn: Callable[..., Writer],
) -> None:
    """SIGSTOP a writer mid-staging for longer than ACODE_LEASE_TTL_S: the next writer takes the
    expired lease over and publishes; the first, resumed, is fenced off (LeaseLost) and its
    version never becomes visible, nor does it remove the new holder's lease."""
    url = store_url(store)
    lease = {"ACODE_LEASE_TTL_S": "2"}
    first = spawn(
        "paused",
        url,
        ACODE_MAX_FILE_MB="1",
        ACODE_LEASE_WAIT_S="0",
        RACE_ROWS_PER_GROUP="1000",
        RACE_STOP_AFTER_FILES="1",
        **lease,
    )
    second = spawn("next", url, ACODE_MAX_FILE_MB="64", ACODE_LEASE_WAIT_S="120", **lease)
    first.wait_ready()
    second.wait_ready()
    first.go()
    pause_while_holding(first, store)
    try:
        current = store.lease_records(TABLE, DAY).read()
        assert current is not None and f'"pid": {first.pid}' in current[0].decode()
        second.go()
        assert second.finish() == 0, second.text()
        assert second.outcome["outcome"] == "published"
        assert re.search(
            rf"took over the expired lease of run local \(.+\) on host .+, pid {first.pid}",
            second.text(),
        ), second.text()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.finish() == LOST, first.text()
    lost = first.outcome["message"]
    assert "lost its lease" in lost and f"pid {first.pid}" in lost and "ACODE_LEASE_TTL_S" in lost
    assert_one_complete_version(
        store, expected, {second.outcome["version"]: second.outcome["files"]}
    )


# ----------------------------------------------------------------------------- the Dagster CLI

RUN_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CLI_SETTINGS = [
    # Two impatient runs (they do not wait at all), so that one likely meets a holder and gives
    # up, and a patient one, which waits for whoever holds the partition and publishes after it.
    {"ACODE_MAX_FILE_MB": "64", "ACODE_LEASE_WAIT_S": "0"},
    {"ACODE_MAX_FILE_MB": "1", "ACODE_LEASE_WAIT_S": "0"},
    {"ACODE_MAX_FILE_MB": "1", "ACODE_LEASE_WAIT_S": "300"},
]


def materialize_command(settings: dict[str, str]) -> list[str]:
    from acode_dagster.defs.bronze.checks import bronze_key

    # Run config replaces the replicator resource's whole configuration (Dagster falls back to
    # the class defaults, not to the values built from the environment), so it restates the
    # settings: small row groups, so that the 1 MB bound makes several files of this small
    # partition, and the environment's file bound and retries. The steps run in the materialize
    # process itself (no step subprocess: the same code, 20 s less).
    config = {
        "execution": {"config": {"in_process": {}}},
        "resources": {
            "replicator": {
                "config": {
                    "kind": "embedded",
                    "batch_rows": 5000,
                    "row_group_rows": 5000,
                    "max_file_mb": float(settings["ACODE_MAX_FILE_MB"]),
                    "retries": int(os.environ["ACODE_RETRIES"]),
                    "retry_base_s": float(os.environ["ACODE_RETRY_BASE_S"]),
                }
            }
        },
    }
    return [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "acode_dagster.definitions",
        "--select",
        bronze_key(TABLE).to_user_string(),
        "--partition",
        DAY.isoformat(),
        "--config-json",
        json.dumps(config),
    ]


def run_at_once(commands: list[tuple[list[str], dict[str, str]]], logs: Path) -> list[str]:
    """Start every command at once, wait for all; their outputs."""
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for number, (command, env) in enumerate(commands):
            log = logs / f"cli-{number}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    command,
                    env={**os.environ, **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            processes.append((process, log))
        for process, log in processes:
            try:
                process.wait(RUN_S + STARTUP_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"dagster asset materialize did not finish:\n{log.read_text()}")
    finally:
        for process, _ in processes:
            stop(process)
    return [log.read_text(errors="replace") for _, log in processes]


def test_three_dagster_materializations_of_one_partition_take_turns(
    source: Any,
    s3_bucket: str,
    expected: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three ``dagster asset materialize`` of the same partition at once, on one instance and
    one bucket, outside the run queue (whose one-run-per-partition limit would keep them
    apart): the lease does. Each run publishes in turn, or gives up waiting and fails naming the
    run that holds the partition; the partition is the last version published."""
    import dagster as dg

    from acode_dagster import runs
    from acode_dagster.defs.bronze.checks import bronze_key
    from acode_dagster.settings import Settings

    url = f"s3://{s3_bucket}/lake"
    env = {
        **platform_environ(source, tmp_path / "acode", tmp_path / "unused"),
        "ACODE_BRONZE_URL": url,
        # The pool would queue the three steps for one slot; here they must meet at the lease.
        "ACODE_SOURCE_CONCURRENCY": "3",
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    home = runs.ensure_dagster_home(Settings.from_env())
    # The instance exists before its runs, as in production (the daemon and the UI made it):
    # several processes creating a fresh SQLite instance at once trip over each other's schema.
    instance = dg.DagsterInstance.from_config(str(home))
    instance.get_runs(limit=1)

    texts = run_at_once([(materialize_command(s), s) for s in CLI_SETTINGS], tmp_path)

    run_ids = []
    for text in texts:
        found = re.search(rf"({RUN_ID}) - \d+ - RUN_START", text)
        assert found, text
        run_ids.append(found.group(1))
    published, gave_up_on = [], []
    for settings, text, run_id in zip(CLI_SETTINGS, texts, run_ids, strict=True):
        run = instance.get_run_by_id(run_id)
        assert run is not None
        # Whom it waited for (or gave up on) is named, and is one of the others.
        named = re.findall(rf"is being written by run ({RUN_ID}) \(sync\) on host", text)
        assert all(r in run_ids and r != run_id for r in named), (named, run_ids)
        assert not re.search(r"check unique_key (?!PASS)", text), text
        assert "quarantined" not in text, text
        if run.status == dg.DagsterRunStatus.SUCCESS:
            published.append(run_id)
        else:
            # It gave up waiting (LeaseBusy), retried once, and failed naming the holder.
            assert run.status == dg.DagsterRunStatus.FAILURE, text
            assert settings["ACODE_LEASE_WAIT_S"] == "0", text
            assert named and "ACODE_LEASE_WAIT_S" in text, text
            gave_up_on.append(named[-1])
    assert run_ids[2] in published, "the patient run waited and published"
    assert all(holder in published for holder in gave_up_on), (gave_up_on, published)
    records = instance.fetch_materializations(bronze_key(TABLE), limit=10).records
    assert sorted(r.run_id for r in records) == sorted(published)
    # The latest materialization (records come newest first) is the version in the bucket.
    latest = records[0]
    assert latest.asset_materialization is not None
    version = str(latest.asset_materialization.metadata["version"].value)
    manifest = assert_one_complete_version(open_store(url), expected, {version: None})
    small_files = CLI_SETTINGS[run_ids.index(latest.run_id)]["ACODE_MAX_FILE_MB"] == "1"
    assert (len(manifest.files) >= 3) if small_files else (len(manifest.files) == 1)
