"""``acode_daily_schedule``: every day at 02:00 in São Paulo, partition D-1 of the three tables."""

import dagster as dg

from acode_dagster.defs.bronze.jobs import bronze_acode_job

acode_daily_schedule = dg.build_schedule_from_partitioned_job(
    bronze_acode_job,
    name="acode_daily_schedule",
    description=(
        "Materializes and checks yesterday's partition (D-1, America/Sao_Paulo) of the three "
        "bronze tables at 02:00 local time, once the day is over and the source has settled."
    ),
    hour_of_day=2,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
