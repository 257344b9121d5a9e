"""Write, audit, publish: a version that fails a blocking check never replaces the published one.

Real MariaDB (the session pair, or a private empty one), bronze on a folder and on S3 over HTTP,
the real audit (``quality.evaluate_partition``) and real Dagster runs.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from acode_dagster.bronze import quarantine
from acode_dagster.bronze.lease import Holder, LeasePolicy
from acode_dagster.bronze.publish import Outcome, Publisher, write_audit_publish
from acode_dagster.bronze.store import SUCCESS_MARKER, BronzeStore, LocalStore, S3Store
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import acode_alert_sensor
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import evaluate_freshness
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.generator import Anomalies
from acode_dagster.demo.loader import load_days
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.quality import evaluate_partition
from acode_dagster.replicator import EmbeddedReplicator
from acode_dagster.runs import _summarize
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS, TABLES, Table
from acode_dagster_tests.support.alerting import LoopbackSlack
from acode_dagster_tests.support.source import platform_environ, source_window

GOOD = date(2026, 4, 6)
SCHEMA_DAY = date(2026, 4, 7)
FIRST_BAD = date(2026, 4, 8)
EMPTY = date(2026, 4, 9)


@pytest.fixture(scope="module")
def source(mariadb_pair: Any) -> Any:
    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        [GOOD, SCHEMA_DAY],
        rows={FISCAL_LINES.name: 3000, NFE_COMPLEMENTS.name: 300, PRODUCTS.name: 300},
    )
    mariadb_pair.wait_replica_caught_up()
    return mariadb_pair


def published_bytes(store: BronzeStore, table: Table, day: date) -> dict[str, str]:
    """Every object under the partition, marker included, by its bytes' hash."""
    names = store.visible_files(table, day)
    if isinstance(store, LocalStore):
        base = Path(store.partition_url(table, day))
        return {n: hashlib.sha256((base / n).read_bytes()).hexdigest() for n in names}
    assert isinstance(store, S3Store)
    prefix = store.partition_url(table, day).removeprefix(f"s3://{store.bucket}/")
    return {
        n: hashlib.sha256(
            store.client.get_object(Bucket=store.bucket, Key=f"{prefix}/{n}")["Body"].read()
        ).hexdigest()
        for n in names
    }


def audited(table: Table, day: date, endpoint: MySQLEndpoint) -> Publisher:
    return Publisher(
        holder=Holder.here("test-rerun"),
        audit=lambda files: evaluate_partition(table, day, files, endpoint, []),
    )


def rerun(store: BronzeStore, rows: pa.Table, endpoint: MySQLEndpoint) -> Outcome:
    return write_audit_publish(
        FISCAL_LINES,
        GOOD,
        store,
        rows.to_batches(max_chunksize=700),
        audited(FISCAL_LINES, GOOD, endpoint),
        source=endpoint.display,
        replicator="test",
        row_group_rows=1000,
        max_file_bytes=1,
    )


def spoil(rows: pa.Table, check: str) -> pa.Table:
    if check == "null_share":
        index = rows.schema.get_field_index("CNPJ")
        share = pc.less(pa.array(range(rows.num_rows)), int(rows.num_rows * 0.07))
        cnpj = pc.if_else(share, pa.scalar(None, pa.string()), rows.column("CNPJ"))
        return rows.set_column(index, rows.schema.field(index), cnpj)
    if check == "unique_key":
        return pa.concat_tables([rows, rows.slice(0, 5)])
    assert check == "reconciliation"
    return rows.slice(10)


@pytest.mark.parametrize("check", ["null_share", "unique_key", "reconciliation"])
def test_a_rerun_that_fails_a_blocking_check_is_quarantined_not_published(
    source: Any, store: BronzeStore, check: str
) -> None:
    endpoint = source.endpoint("primary")
    good = EmbeddedReplicator().sync(FISCAL_LINES, GOOD, endpoint, store)
    assert good.published and all(v.passed for v in good.verdicts if v.check != "volume")
    before = published_bytes(store, FISCAL_LINES, GOOD)

    spoiled = spoil(store.read_partition(FISCAL_LINES, GOOD), check)
    outcome = rerun(store, spoiled, endpoint)

    assert not outcome.published
    assert check in {v.check for v in outcome.blocking_failures}
    # The published version is byte for byte the good one; nothing of the bad one is visible.
    assert published_bytes(store, FISCAL_LINES, GOOD) == before
    assert store.manifest(FISCAL_LINES, GOOD) == good.manifest
    [kept] = store.quarantined(FISCAL_LINES, GOOD)
    assert kept.version == outcome.manifest.version and kept.url == outcome.kept_at
    assert check in kept.failed
    assert {c["check"] for c in kept.checks} == {v.check for v in outcome.verdicts}
    assert store.quarantined_files(kept).read().num_rows == spoiled.num_rows

    # Published anyway, by a person, through the lease and the fenced swap.
    entry, manifest = quarantine.release(
        store, FISCAL_LINES, GOOD, reason="vendor confirmed", by="tester", policy=LeasePolicy()
    )
    assert entry.version == manifest.version == outcome.manifest.version
    assert store.manifest(FISCAL_LINES, GOOD) == manifest
    assert "tester" in manifest.note and "vendor confirmed" in manifest.note
    assert store.visible_files(FISCAL_LINES, GOOD) == sorted(
        [SUCCESS_MARKER, *(f.name for f in manifest.files)]
    )
    assert store.read_partition(FISCAL_LINES, GOOD).num_rows == spoiled.num_rows
    assert store.quarantined(FISCAL_LINES, GOOD) == []
    assert store.lease_records(FISCAL_LINES, GOOD).read() is None

    # A good sync replaces it; another bad one is quarantined and then discarded.
    again = EmbeddedReplicator().sync(FISCAL_LINES, GOOD, endpoint, store)
    assert again.published
    restored = published_bytes(store, FISCAL_LINES, GOOD)
    assert not rerun(store, spoiled, endpoint).published
    [dropped] = quarantine.discard(store, FISCAL_LINES, GOOD)
    assert store.quarantined(FISCAL_LINES, GOOD) == [] and dropped.failed
    assert published_bytes(store, FISCAL_LINES, GOOD) == restored


def test_a_column_added_at_the_source_fails_schema_and_is_quarantined(
    source: Any, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "bronze")
    admin, endpoint = source.endpoint("primary", admin=True), source.endpoint("primary")
    table = NFE_COMPLEMENTS
    good = EmbeddedReplicator().sync(table, SCHEMA_DAY, endpoint, store)
    before = published_bytes(store, table, SCHEMA_DAY)

    def alter(statement: str) -> None:
        connection = admin.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {table.name} {statement}")
        finally:
            connection.close()
        source.wait_replica_caught_up()

    alter("ADD COLUMN Extra_Audit INT NULL")
    try:
        bad = EmbeddedReplicator().sync(table, SCHEMA_DAY, endpoint, store)
    finally:
        alter("DROP COLUMN Extra_Audit")
    assert not bad.published
    schema = next(v for v in bad.verdicts if v.check == "schema")
    assert not schema.passed and "Extra_Audit: added at the source" in schema.measured
    assert published_bytes(store, table, SCHEMA_DAY) == before
    assert store.manifest(table, SCHEMA_DAY) == good.manifest
    assert [q.version for q in store.quarantined(table, SCHEMA_DAY)] == [bad.manifest.version]


def test_a_first_sync_that_fails_publishes_nothing_and_freshness_says_so(
    env: dict[str, str], source: Any, slack_server: LoopbackSlack
) -> None:
    load_days(
        source.endpoint("primary", admin=True),
        [FIRST_BAD],
        rows={FISCAL_LINES.name: 2000},
        anomalies={(FISCAL_LINES.name, FIRST_BAD): Anomalies(null_share={"CNPJ": 0.07})},
    )
    resources = build_resources(Settings.from_env())
    store = LocalStore(Path(env["ACODE_BRONZE_URL"]))
    alerting = AlertingResource(
        slack_token=slack_server.token,
        slack_api_url=slack_server.base_url,
        ui_url="http://dagster.example",
    )
    with dg.instance_for_test() as instance:
        start = dg.build_sensor_context(instance=instance, resources={"alerting": alerting})
        acode_alert_sensor(start)  # alerting starts here
        result = dg.materialize(
            bronze_assets,
            partition_key=str(FIRST_BAD),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        landed = {
            e.materialization.asset_key.path[-1] for e in result.get_asset_materialization_events()
        }
        assert landed == {NFE_COMPLEMENTS.name, PRODUCTS.name}
        assert store.manifest(FISCAL_LINES, FIRST_BAD) is None
        assert store.visible_files(FISCAL_LINES, FIRST_BAD) == []
        [kept] = store.quarantined(FISCAL_LINES, FIRST_BAD)
        evaluations = [
            e
            for e in result.get_asset_check_evaluations()
            if e.asset_key.path[-1] == FISCAL_LINES.name
        ]
        assert {e.metadata["bronze_version"].value for e in evaluations} == {"quarantined"}
        assert {e.metadata["quarantine_url"].value for e in evaluations} == {kept.url}
        # What `acode sync` prints of the failed run: where the version is and what to do.
        failure = _summarize(FIRST_BAD, result).failure or ""
        assert failure.startswith(f"{FISCAL_LINES.name} {FIRST_BAD}: the new version"), failure
        assert f"quarantined at {kept.url}" in failure and "acode quarantine release" in failure

        freshness = evaluate_freshness(instance, FISCAL_LINES)
        assert not freshness.passed
        assert freshness.measured == "no partition has landed with its blocking checks passed"

        # The alert says the failed version was quarantined, not published.
        context = dg.build_sensor_context(
            instance=instance, cursor=start.cursor, resources={"alerting": alerting}
        )
        acode_alert_sensor(context)
        texts = [m["text"] for m in slack_server.messages]
        check_alerts = [t for t in texts if "null_share ERROR on" in t.splitlines()[0]]
        assert len(check_alerts) == 1 and "bronze_version: quarantined" in check_alerts[0], texts
        # The run failed for its checks only: no second alert about the run itself.
        assert len(texts) == 1, texts


def test_an_empty_day_of_each_table_publishes_and_fails_only_volume(
    mariadb_pair_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private pair with the contract's tables and no rows at all: every table's day is empty,
    the catalogue's snapshot too."""
    stack = mariadb_pair_factory()
    stack.start()
    for key, value in platform_environ(stack, tmp_path / "home", tmp_path / "bronze").items():
        monkeypatch.setenv(key, value)
    resources = build_resources(Settings.from_env())
    store = LocalStore(tmp_path / "bronze")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            bronze_assets, partition_key=str(EMPTY), resources=resources, instance=instance
        )
    assert result.success
    for table in TABLES:
        manifest = store.manifest(table, EMPTY)
        assert manifest is not None and manifest.rows == 0, table.name
        assert store.read_partition(table, EMPTY).schema == table.arrow_schema
        assert source_window(stack.endpoint("primary"), table, EMPTY) == []
    outcomes = {
        (e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()
    }
    assert len(outcomes) == 6 * len(TABLES)  # five partition checks and the mirror
    failed = sorted(key for key, passed in outcomes.items() if not passed)
    assert failed == sorted((t.name, "volume") for t in TABLES)
