import dagster as dg

from acode_dagster.defs.bronze.assets import GROUP
from acode_dagster.defs.bronze.partitions import daily_partitions

bronze_acode_job = dg.define_asset_job(
    name="bronze_acode_job",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=daily_partitions,
    description="Materializes one day of the three ACODE bronze tables.",
)
