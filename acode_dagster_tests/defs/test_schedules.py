"""``acode_daily_schedule`` requests exactly partition D-1 of the three tables at 02:00 local."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from acode_dagster.definitions import defs
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.tables import TABLES

SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def test_it_runs_by_default_at_two_in_the_morning_in_sao_paulo() -> None:
    schedule = defs.resolve_schedule_def("acode_daily_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "America/Sao_Paulo"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def(schedule.job_name)
    assert set(job.asset_layer.executable_asset_keys) == {bronze_key(t) for t in TABLES}


@pytest.mark.parametrize(
    ("fires_at", "partition"),
    [
        (datetime(2026, 11, 23, 2, 0, tzinfo=SAO_PAULO), "2026-11-22"),
        (datetime(2027, 1, 1, 2, 0, tzinfo=SAO_PAULO), "2026-12-31"),
        (datetime(2028, 3, 1, 2, 0, tzinfo=SAO_PAULO), "2028-02-29"),
    ],
)
def test_a_tick_requests_yesterday_once(fires_at: datetime, partition: str) -> None:
    schedule = defs.resolve_schedule_def("acode_daily_schedule")
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=fires_at) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests or []
    assert [(r.partition_key, r.job_name) for r in requests] == [(partition, "bronze_acode_job")]
