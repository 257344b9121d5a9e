import dagster as dg

from acode_dagster.settings import Settings
from acode_dagster.tables import SOURCE_TIMEZONE

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().partitions_start.isoformat(),
    timezone=SOURCE_TIMEZONE.key,
)
"""One partition per local day of America/Sao_Paulo, shared by every bronze asset."""
