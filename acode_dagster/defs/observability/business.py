"""The business figures of a partition as materialization metadata (what the UI plots)."""

from __future__ import annotations

import dagster as dg

from acode_dagster.observability.business import BusinessFigures

BUSINESS_METRICS = "business_metrics"
"""The entry holding every figure exactly (decimals as strings); the weekly report reads it."""


def business_metadata(figures: BusinessFigures | None) -> dict[str, dg.MetadataValue]:
    """``sum_<column>`` as a float and ``distinct_<column>`` as an int, which the UI plots over
    partitions; ``rows_by_<column>`` as JSON; and ``business_metrics``, the exact figures.

    A float cannot hold every 15-digit sum to the cent: it is for the plot only, the exact
    value is the string in ``business_metrics``. A sum with no value (only NULLs) gets no
    float, and ``null`` in ``business_metrics``."""
    if figures is None:
        return {}
    entries: dict[str, dg.MetadataValue] = {}
    for column, total in figures.sums.items():
        if total is not None:
            entries[f"sum_{column}"] = dg.MetadataValue.float(float(total))
    for column, count in figures.distinct.items():
        entries[f"distinct_{column}"] = dg.MetadataValue.int(count)
    for column, counts in figures.rows_by.items():
        entries[f"rows_by_{column}"] = dg.MetadataValue.json(dict(counts))
    entries[BUSINESS_METRICS] = dg.MetadataValue.json(figures.as_json())
    return entries
