"""The bronze checks through real Dagster runs against the real MariaDB pair."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster.bronze.store import LocalStore
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import acode_alert_sensor
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import evaluate_freshness, newest_good_landing
from acode_dagster.defs.bronze.sensors import freshness_tick
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.generator import Anomalies
from acode_dagster.demo.loader import load_days
from acode_dagster.errors import SourceError
from acode_dagster.quality import evaluate_partition
from acode_dagster.replicator import EmbeddedReplicator
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, TABLES
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack

CLEAN, NULLS = date(2026, 7, 10), date(2026, 7, 11)
RECONCILED = date(2026, 7, 12)


def tick_alerts(instance: dg.DagsterInstance, cursor: str | None, alerting: Any) -> str:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"alerting": alerting}
    )
    acode_alert_sensor(context)
    assert context.cursor
    return context.cursor


def test_a_blocking_failure_fails_the_run_and_does_not_count_as_fresh(
    env: dict[str, str],
    mariadb_pair: Any,
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> None:
    spoiled = {(FISCAL_LINES.name, NULLS): Anomalies(null_share={"CNPJ": 0.07})}
    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        [CLEAN, NULLS],
        rows={FISCAL_LINES.name: 1000},
        anomalies=spoiled,
    )
    resources = build_resources(Settings.from_env())
    with dg.instance_for_test() as instance:
        clean = dg.materialize(
            bronze_assets, partition_key=str(CLEAN), resources=resources, instance=instance
        )
        evaluations = clean.get_asset_check_evaluations()
        assert len(evaluations) == 6 * len(TABLES)  # five partition checks and the mirror
        assert all(e.passed and e.partition == str(CLEAN) for e in evaluations)
        null_share = next(
            e
            for e in evaluations
            if e.check_name == "null_share" and e.asset_key.path[-1] == FISCAL_LINES.name
        )
        # Figures the UI plots are numbers, not text.
        assert isinstance(null_share.metadata["null_pct_CNPJ"], dg.FloatMetadataValue)

        bad = dg.materialize(
            bronze_assets,
            partition_key=str(NULLS),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not bad.success
        failed = [
            (e.asset_key.path[-1], e.check_name, e.severity.value, e.partition)
            for e in bad.get_asset_check_evaluations()
            if not e.passed
        ]
        assert failed == [(FISCAL_LINES.name, "null_share", "ERROR", str(NULLS))]
        # Quarantined, never published: the newest partition that counts is the clean one.
        fiscal = newest_good_landing(instance, FISCAL_LINES)
        assert fiscal is not None and fiscal[0] == str(CLEAN)
        complements = newest_good_landing(instance, NFE_COMPLEMENTS)
        assert complements is not None and complements[0] == str(NULLS)

        landed = fiscal[1]
        outcomes = {
            hours: evaluate_freshness(instance, FISCAL_LINES, landed + timedelta(hours=hours))
            for hours in (1, 19.99, 20, 21, 25, 26)
        }
        assert {h: v.outcome for h, v in outcomes.items()} == {
            1: "PASS",
            19.99: "PASS",
            20: "WARN",
            21: "WARN",
            25: "ERROR",
            26: "ERROR",
        }
        assert outcomes[21].metadata["newest_partition"] == str(CLEAN)

        # The clock moves; the freshness sensor records each change once and the alert
        # sensor tells it once: Slack for the warning, Slack and PagerDuty for the failure.
        alerting = AlertingResource(
            slack_token=slack_server.token,
            slack_api_url=slack_server.base_url,
            pagerduty_routing_key=pagerduty_server.routing_key,
            pagerduty_url=pagerduty_server.base_url,
            ui_url="http://dagster.example",
        )
        alert_cursor = tick_alerts(instance, None, alerting)  # alerting starts here
        freshness_cursor = None
        latest = max(
            found[1] for t in TABLES if (found := newest_good_landing(instance, t)) is not None
        )
        for hours in (1, 21, 21.5, 26, 27, 30):
            freshness_cursor, events = freshness_tick(
                instance, freshness_cursor, latest + timedelta(hours=hours)
            )
            for event in events:
                instance.report_runless_asset_event(event)
            alert_cursor = tick_alerts(instance, alert_cursor, alerting)
        titles = [m["text"].splitlines()[0] for m in slack_server.messages]
        for table in TABLES:
            mine = [t for t in titles if t.endswith(f"freshness WARN on {table.name}")]
            assert len(mine) == 1, (table.name, titles)
            mine = [t for t in titles if t.endswith(f"freshness ERROR on {table.name}")]
            assert len(mine) == 1, (table.name, titles)
        assert len(titles) == 2 * len(TABLES)
        triggers = [e for e in pagerduty_server.events if e["event_action"] == "trigger"]
        assert len(triggers) == len(TABLES)
        assert {e["dedup_key"] for e in triggers} == {
            f"acode/{t.name}/table/freshness" for t in TABLES
        }
        for request in slack_server.requests + pagerduty_server.requests:
            assert env["ACODE_PASS"] not in str(request)


def test_reconciliation_counts_on_the_server_the_sync_read(
    mariadb_pair: Any, tmp_path: Path
) -> None:
    admin = mariadb_pair.endpoint("primary", admin=True)
    load_days(admin, [RECONCILED], rows={FISCAL_LINES.name: 500})
    mariadb_pair.wait_replica_caught_up()
    store = LocalStore(tmp_path / "bronze")
    backup = mariadb_pair.endpoint("backup")
    EmbeddedReplicator().sync(FISCAL_LINES, RECONCILED, backup, store)

    verdicts = {
        v.check: v
        for v in evaluate_partition(
            FISCAL_LINES, RECONCILED, store.published(FISCAL_LINES, RECONCILED), backup, []
        )
    }
    assert all(v.passed for v in verdicts.values()), verdicts
    assert verdicts["reconciliation"].metadata["server"] == backup.display
    assert verdicts["schema"].metadata["source_checked"] == "yes"

    # A late row in the window: bronze no longer matches what the source holds.
    connection = admin.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {FISCAL_LINES.name} (id, Data, Data_Processamento) "
                f"VALUES (990000001, '{RECONCILED}', '{RECONCILED} 12:00:00')"
            )
        mariadb_pair.wait_replica_caught_up()
        late = evaluate_partition(
            FISCAL_LINES, RECONCILED, store.published(FISCAL_LINES, RECONCILED), backup, []
        )
        reconciliation = next(v for v in late if v.check == "reconciliation")
        assert not reconciliation.passed and reconciliation.severity == "ERROR"
        assert reconciliation.metadata["difference"] == -1
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {FISCAL_LINES.name} WHERE id = 990000001")
        connection.close()


def test_a_dead_source_cannot_be_reconciled_so_the_audit_raises_transient(
    mariadb_pair: Any, tmp_path: Path
) -> None:
    """Reconciliation blocks: a version whose source cannot be counted is neither published
    nor quarantined; the audit raises the source's transient error and the run retries."""
    load_days(
        mariadb_pair.endpoint("primary", admin=True), [RECONCILED], rows={FISCAL_LINES.name: 500}
    )
    store = LocalStore(tmp_path / "bronze")
    primary = mariadb_pair.endpoint("primary")
    EmbeddedReplicator().sync(FISCAL_LINES, RECONCILED, primary, store)
    nowhere = primary.__class__(host="127.0.0.1", port=9, user="acode", database="x")
    files = store.published(FISCAL_LINES, RECONCILED)
    with pytest.raises(SourceError, match="unreachable") as raised:
        evaluate_partition(FISCAL_LINES, RECONCILED, files, nowhere, [])
    assert raised.value.transient
