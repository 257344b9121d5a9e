"""``acode anomalies``: spoiled days end to end, from the demo generator to one alert each."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from acode_dagster.cli import DRIFT_COLUMN, main
from acode_dagster.localstack import LocalStack
from acode_dagster.mysql import source_columns
from acode_dagster.runs import send_alerts
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack

END = "2026-06-20"
NULLS, DROP, DRIFT = "2026-06-18", "2026-06-19", "2026-06-20"


def test_each_anomaly_fails_its_check_and_is_told_exactly_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> None:
    home = tmp_path / "home"
    for name, value in {
        "ACODE_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "SLACK_BOT_TOKEN": slack_server.token,
        "ACODE_SLACK_API_URL": slack_server.base_url,
        "PAGERDUTY_ROUTING_KEY": pagerduty_server.routing_key,
        "ACODE_PAGERDUTY_URL": pagerduty_server.base_url,
        "ACODE_DAGSTER_UI_URL": "http://dagster.example",
    }.items():
        monkeypatch.setenv(name, value)
    stack = LocalStack(home / "stack")
    try:
        argv = ["anomalies", "--rows", "1000", "--history-days", "3", "--end-day", END]
        assert main(argv) == 0
        printed = capsys.readouterr().out

        expected = {
            (FISCAL_LINES.name, NULLS, "null_share"),
            (FISCAL_LINES.name, DROP, "volume"),
            (NFE_COMPLEMENTS.name, DROP, "volume"),  # one complement per invoice: it drops too
            (FISCAL_LINES.name, DRIFT, "schema"),
        }
        titles = [m["text"].splitlines()[0] for m in slack_server.messages]
        assert sorted(titles) == sorted(
            f":red_circle: *ERROR* {check} ERROR on {table} {day}" for table, day, check in expected
        )
        triggers = [e for e in pagerduty_server.events if e["event_action"] == "trigger"]
        assert {e["dedup_key"] for e in triggers} == {
            f"acode/{table}/{day}/{check}" for table, day, check in expected
        }
        assert len(triggers) == len(expected)
        by_check = {m["text"].splitlines()[0].split()[2]: m["text"] for m in slack_server.messages}
        assert "7.00 % NULL in CNPJ" in by_check["null_share"]
        assert DRIFT_COLUMN in by_check["schema"] and "added at the source" in by_check["schema"]
        assert "10.00 % of the median" in printed

        # The blocking failures failed their runs; the volume drop's run succeeded.
        with dg.DagsterInstance.get() as instance:
            runs = {
                r.tags["dagster/partition"]: r.status
                for r in instance.get_runs()
                if "dagster/partition" in r.tags
            }
        assert runs[NULLS] == runs[DRIFT] == dg.DagsterRunStatus.FAILURE
        assert runs[DROP] == dg.DagsterRunStatus.SUCCESS

        # More ticks tell nothing new; the drift column is gone from the source again.
        for _ in range(3):
            send_alerts()
        assert len(slack_server.messages) == len(expected)
        assert len(pagerduty_server.events) == len(expected)
        assert DRIFT_COLUMN not in source_columns(stack.endpoint("primary"), FISCAL_LINES.name)
        secrets = [stack.endpoint("primary").password, slack_server.token]
        for request in slack_server.requests + pagerduty_server.requests:
            for secret in secrets:
                assert secret and secret not in str(request.get("body"))
    finally:
        stack.destroy()
