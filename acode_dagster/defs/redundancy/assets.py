"""``redundancy``: not data, but the history of the platform's health and of the route."""

import dagster as dg

from acode_dagster.defs.redundancy.state import REDUNDANCY_KEY

redundancy = dg.AssetSpec(
    key=REDUNDANCY_KEY,
    group_name="acode_ops",
    description=(
        "Health of the primary and backup MySQL servers and buckets, and the route the syncs "
        "use. Each health tick records an observation with every probe's result (plotted: "
        "healthy, latency, replica lag); each route change (failover, fail-back, pin, both "
        "sources down, recovery) records one with when, from, to, why, automatic or manual and "
        "how long the outage lasted."
    ),
    kinds={"mysql", "s3"},
    owners=["team:data-engineering"],
)
