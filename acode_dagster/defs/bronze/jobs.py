import dagster as dg

from acode_dagster.defs.bronze.checks import GROUP, freshness_checks
from acode_dagster.defs.bronze.partitions import daily_partitions

bronze_acode_job = dg.define_asset_job(
    name="bronze_acode_job",
    # Freshness is about the table, not the day being written: the freshness sensor records it.
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.checks(*freshness_checks),
    partitions_def=daily_partitions,
    description="Materializes and checks one day of the three ACODE bronze tables.",
)
