"""``acode quarantine list|show|release|discard``, ``acode sweep`` and ``bronze_sweep_job``, on
a version that really failed its audit, in a folder and in a bucket behind moto's S3 server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from acode_dagster.bronze.lease import Holder, LeasePolicy, hold
from acode_dagster.bronze.store import BronzeStore, LocalStore, Manifest, Quarantined, file_name
from acode_dagster.cli import main
from acode_dagster.defs.bronze.checks import bronze_key, newest_good_landing
from acode_dagster.defs.bronze.sweep import bronze_sweep_job
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.generator import Anomalies
from acode_dagster.demo.loader import load_days
from acode_dagster.replicator import EmbeddedReplicator
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, PRODUCTS, Table

TABLE = FISCAL_LINES
DAY = date(2026, 5, 12)
LEASED_DAY = DAY + timedelta(days=1)
ROWS = 300
NULL_CNPJ = round(0.07 * ROWS)
REASON = "nulls confirmed by the fiscal team"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """What an operator's mistake must print: a single line, no traceback."""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("acode: error: "), err
    return err


def test_help_names_the_commands_and_what_they_need(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "    quarantine" in text and "    sweep" in text
    with pytest.raises(SystemExit):
        main(["quarantine", "release", "--help"])
    text = capsys.readouterr().out
    assert "--reason" in text and "--version" in text and "default: the OS user" in text


@pytest.fixture
def bronze(
    env: dict[str, str], store: BronzeStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> BronzeStore:
    """The platform's primary bronze root is ``store`` (a folder, or a bucket on moto); the
    backup root a folder; a Dagster home of the test's own."""
    monkeypatch.setenv("ACODE_BRONZE_URL", store.url)
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(tmp_path / "bronze-backup"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    return store


@dataclass(frozen=True)
class Spoiled:
    store: BronzeStore
    clean: Manifest
    """The version published before, from clean source rows."""
    entry: Quarantined
    """The version synced after the source was spoiled: it failed null_share."""


@pytest.fixture
def spoiled(bronze: BronzeStore, mariadb_pair: Any) -> Spoiled:
    """A clean sync of DAY published, then a sync of the same day with 7 % NULL CNPJ, which the
    audit sends to quarantine: the real path, through the embedded replicator and its checks."""
    admin, source = mariadb_pair.endpoint("primary", admin=True), mariadb_pair.endpoint("primary")
    replicator = EmbeddedReplicator()
    load_days(admin, [DAY], rows={TABLE.name: ROWS})
    clean = replicator.sync(TABLE, DAY, source, bronze)
    assert clean.published
    nulls = {(TABLE.name, DAY): Anomalies(null_share={"CNPJ": 0.07})}
    load_days(admin, [DAY], rows={TABLE.name: ROWS}, anomalies=nulls)
    bad = replicator.sync(TABLE, DAY, source, bronze)
    assert not bad.published
    (entry,) = bronze.quarantined(TABLE, DAY)
    assert entry.failed == ["null_share"]
    return Spoiled(bronze, clean.manifest, entry)


def test_list_and_show_name_the_version_and_every_check(
    spoiled: Spoiled, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = spoiled.entry
    code, out, err = run(["quarantine", "list"], capsys)
    assert (code, err) == (0, "")
    header, line = out.splitlines()
    assert header.split() == [
        "table", "day", "version", "quarantined", "by", "failed", "rows", "root", "url",
    ]  # fmt: skip
    for part in (TABLE.name, str(DAY), entry.version, "null_share", str(ROWS), entry.url):
        assert f" {part} " in f" {line} ", part
    assert "sync outside Dagster" in line and " primary " in line  # by whom, where
    code, out, _ = run(["quarantine", "list", "--table", PRODUCTS.name], capsys)
    assert code == 0 and out.startswith("nothing is in quarantine in ")

    code, out, err = run(["quarantine", "show", TABLE.name, str(DAY)], capsys)
    assert (code, err) == (0, "")
    assert f"version {entry.version} (primary root)" in out
    assert f"kept at      {entry.url}" in out
    for f in entry.manifest.files:
        assert f.name in out and str(f.bytes) in out
    checks = {c["check"]: c for c in entry.checks}
    assert set(checks) == {"null_share", "volume", "reconciliation", "schema", "unique_key"}
    for name, check in checks.items():
        row = next(r for r in out.splitlines() if r.strip().startswith(name + " "))
        assert check["outcome"] in row and check["measured"] in row and check["threshold"] in row
    null_row = next(r for r in out.splitlines() if r.strip().startswith("null_share "))
    assert " ERROR " in null_row and " yes " in null_row and "CNPJ" in null_row
    assert f"published now: version {spoiled.clean.version}, {ROWS} rows" in out
    assert f"release {TABLE.name} {DAY} --version {entry.version} --reason" in out


def test_release_publishes_exactly_the_quarantined_version_and_records_it_in_dagster(
    spoiled: Spoiled,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    store, entry = spoiled.store, spoiled.entry
    kept = store.quarantined_files(entry).read()
    monkeypatch.setenv("LOGNAME", "joana")  # --by defaults to the OS user
    monkeypatch.setenv("USER", "joana")
    code, out, err = run(
        ["quarantine", "release", TABLE.name, str(DAY), "--reason", REASON], capsys
    )
    assert (code, err) == (0, ""), err
    assert f"version {entry.version}" in out and "released by joana" in out

    published = store.manifest(TABLE, DAY)
    assert published is not None
    assert (published.version, published.files, published.rows) == (
        entry.version,
        entry.manifest.files,
        ROWS,
    )
    assert "released from quarantine by joana" in published.note and REASON in published.note
    assert "null_share" in published.note
    names = [f.name for f in entry.manifest.files]
    assert store.visible_files(TABLE, DAY) == sorted([*names, "_SUCCESS"])
    rows = store.read_partition(TABLE, DAY)
    assert rows.equals(kept)
    assert pc.sum(pc.is_null(rows.column("CNPJ"))).as_py() == NULL_CNPJ
    assert store.quarantined(TABLE, DAY) == [] and store.leftovers(TABLE) == []
    # Published like a sync's version, so mirrored like one: the backup root holds it too.
    assert f"mirrored to {tmp_path / 'bronze-backup'}" in out
    backup = LocalStore(tmp_path / "bronze-backup")
    assert backup.manifest(TABLE, DAY) == published
    assert backup.read_partition(TABLE, DAY).equals(kept)

    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=bronze_key(TABLE), asset_partitions=[str(DAY)]),
            limit=5,
        ).records
        # A person published it: it counts as landed for freshness.
        landed = newest_good_landing(instance, TABLE)
    assert landed is not None and landed[0] == str(DAY)
    assert len(records) == 1
    materialization = records[0].asset_materialization
    assert materialization is not None and materialization.partition == str(DAY)
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["dagster/row_count"] == ROWS
    assert meta["files"] == len(names) and meta["bytes"] == entry.manifest.bytes
    assert meta["version"] == entry.version
    assert (meta["released_by"], meta["release_reason"]) == ("joana", REASON)
    assert meta["failed_checks"] == "null_share"
    assert meta["bronze_url"] == store.partition_url(TABLE, DAY)

    # Released once: a second release finds nothing, and says where it looked.
    code, _, err = run(["quarantine", "release", TABLE.name, str(DAY), "--reason", "x"], capsys)
    assert code == 2
    assert f"nothing of {TABLE.name} {DAY} is in quarantine in {store.url}" in one_line_error(err)


def test_discard_drops_the_version_and_keeps_the_published_one(
    spoiled: Spoiled, capsys: pytest.CaptureFixture[str]
) -> None:
    store, entry = spoiled.store, spoiled.entry
    argv = ["quarantine", "discard", TABLE.name, str(DAY), "--version", "ffff" + entry.version]
    code, _, err = run(argv, capsys)
    assert code == 2 and entry.version in one_line_error(err)  # names the versions there are

    argv = ["quarantine", "discard", TABLE.name, str(DAY), "--version", entry.version[:8]]
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    assert f"discarded {TABLE.name} {DAY} version {entry.version} from the primary root" in out
    assert store.quarantined(TABLE) == [] and store.leftovers(TABLE) == []
    published = store.manifest(TABLE, DAY)
    assert published is not None and published.version == spoiled.clean.version
    code, out, _ = run(["quarantine", "list"], capsys)
    assert code == 0 and out.startswith("nothing is in quarantine")


def killed_writer(
    store: BronzeStore, table: Table, day: date, alive: list[AbstractContextManager[Any]]
) -> str:
    """What a writer killed mid-sync leaves: staging entered, a file written into it, never
    left. ``alive`` keeps the context referenced: leaving it, even by garbage collection, would
    clean up like a writer that was not killed."""
    context = store.staging(table, day)
    staging = context.__enter__()
    path = staging.workdir / file_name(table, 1)
    pq.write_table(table.arrow_schema.empty_table(), path)
    staging.add_file(path)
    alive.append(context)
    return str(staging.url)


@pytest.fixture
def abandoned() -> Iterator[list[AbstractContextManager[Any]]]:
    alive: list[AbstractContextManager[Any]] = []
    yield alive
    for context in alive:
        context.__exit__(None, None, None)


def test_sweep_spares_fresh_and_leased_staging_and_removes_the_rest(
    spoiled: Spoiled,
    abandoned: list[AbstractContextManager[Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = spoiled.store
    orphan = killed_writer(store, TABLE, DAY, abandoned)
    leased = killed_writer(store, TABLE, LEASED_DAY, abandoned)
    assert sorted(x.url for x in store.leftovers(TABLE)) == sorted([orphan, leased])

    # The defaults (24 h, 30 days): everything here is too young.
    code, out, _ = run(["sweep"], capsys)
    assert code == 0
    assert f"primary root {store.url}: removed 0 staging leftover(s)" in out
    assert len(store.leftovers(TABLE)) == 2 and len(store.quarantined(TABLE)) == 1

    monkeypatch.setenv("ACODE_STAGING_MAX_AGE_H", "0")
    monkeypatch.setenv("ACODE_QUARANTINE_RETENTION_DAYS", "0")
    writer = Holder.here("test-writer", purpose="a sync still at work")
    name = f"{TABLE.name} {LEASED_DAY}"
    with hold(store.lease_records(TABLE, LEASED_DAY), writer, LeasePolicy(ttl_s=300), name):
        code, out, _ = run(["sweep", "--dry-run"], capsys)
        assert code == 0
        assert f"would remove staging {orphan} " in out
        assert f"kept staging {leased}: a live lease covers {LEASED_DAY}" in out
        assert f"would remove quarantined {TABLE.name} {DAY} version {spoiled.entry.version}" in out
        assert len(store.leftovers(TABLE)) == 2 and len(store.quarantined(TABLE)) == 1

        code, out, _ = run(["sweep"], capsys)
        assert code == 0, out
        assert (
            f"primary root {store.url}: removed 1 staging leftover(s)" in out
            and "1 expired quarantined version(s); kept 1 under a live lease" in out
        )
        assert [x.url for x in store.leftovers(TABLE)] == [leased]
        assert store.quarantined(TABLE) == []
    published = store.manifest(TABLE, DAY)
    assert published is not None and published.version == spoiled.clean.version

    # Once its writer is gone (the lease released, or expired), its staging goes too.
    code, out, _ = run(["sweep"], capsys)
    assert code == 0 and store.leftovers(TABLE) == []


def test_operator_mistakes_get_one_line_naming_the_fix(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(tmp_path / "bronze-backup"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    code, _, err = run(["quarantine", "show", TABLE.name, str(DAY)], capsys)
    assert code == 2
    line = one_line_error(err)
    assert (
        f"nothing of {TABLE.name} {DAY} is in quarantine in {env['ACODE_BRONZE_URL']} or " in line
    )
    assert "`acode quarantine list` shows what is" in line
    code, _, err = run(["quarantine", "release", TABLE.name, "2026-02-30", "--reason", "x"], capsys)
    assert code == 2 and "real calendar day" in one_line_error(err)
    code, _, err = run(["quarantine", "discard", "nope", str(DAY)], capsys)
    assert code == 2 and "unknown table 'nope'" in one_line_error(err)
    code, _, err = run(["quarantine", "list", "--table", "nope"], capsys)
    assert code == 2 and "--table" in one_line_error(err)
    for reason in ([], ["--reason", "  "]):
        code, _, err = run(["quarantine", "release", TABLE.name, str(DAY), *reason], capsys)
        assert code == 2 and "needs a reason" in one_line_error(err) and "--reason '" in err
    code, _, err = run(["quarantine", "discard", TABLE.name, str(DAY)], capsys)
    assert code == 2 and "nothing of" in one_line_error(err)
    assert env["ACODE_PASS"] not in err


def test_sweep_job_runs_in_dagster_and_goes_on_past_a_dead_root(
    bronze: BronzeStore,
    s3_server: Any,
    abandoned: list[AbstractContextManager[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job with the ``bronze`` resource the definitions build from the environment."""
    orphan = killed_writer(bronze, TABLE, DAY, abandoned)
    monkeypatch.setenv("ACODE_STAGING_MAX_AGE_H", "0")

    def resources() -> dict[str, Any]:
        return {"bronze": build_resources(Settings.from_env())["bronze"]}

    # In memory: what the job does is in the bronze roots; the instance only records the run.
    with dg.DagsterInstance.ephemeral() as instance:
        dry = bronze_sweep_job.execute_in_process(
            instance=instance,
            resources=resources(),
            run_config={"ops": {"sweep_bronze_roots": {"config": {"dry_run": True}}}},
        )
        assert dry.success
        assert dry.output_for_node("sweep_bronze_roots")["removed_staging"] == 1
        assert [x.url for x in bronze.leftovers(TABLE)] == [orphan]  # a dry run removes nothing
        (output,) = [e for e in dry.all_events if e.event_type_value == "STEP_OUTPUT"]
        assert output.step_output_data.metadata["primary_removed_staging"].value == 1

        missing = f"acode-missing-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", f"s3://{missing}/lake")
        result = bronze_sweep_job.execute_in_process(
            instance=instance, resources=resources(), raise_on_error=False
        )
        assert not result.success
        assert bronze.leftovers(TABLE) == []  # the primary was swept all the same
        failure = result.failure_data_for_node("sweep_bronze_roots")
        assert failure is not None and failure.error is not None
        assert f"the backup root s3://{missing}/lake" in failure.error.message
        assert "NoSuchBucket" in failure.error.message
        logs = "\n".join(r.user_message for r in instance.all_logs(result.run_id) if r.user_message)
        assert f"primary root {bronze.url}: removed 1 staging leftover(s)" in logs
        assert f"backup root s3://{missing}/lake: not swept" in logs
