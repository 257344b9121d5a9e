"""Reading the source the way a test trusts: every row, cut to the day in Python.

The replicator's own SQL is what is under test, so the expected partition is computed without it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.tables import Table, day_window


def source_window(endpoint: MySQLEndpoint, table: Table, day: date) -> list[dict[str, Any]]:
    """The partition ``day`` of ``table`` as the server returns its rows, sorted by key."""
    connection = endpoint.connect()
    try:
        with connection.cursor() as cursor:
            columns = ", ".join(f"`{c}`" for c in table.column_names)
            cursor.execute(f"SELECT {columns} FROM `{table.name}`")
            rows = [dict(zip(table.column_names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        connection.close()
    if table.partition_column is not None:
        start, end = day_window(day)
        rows = [r for r in rows if start <= r[table.partition_column] < end]
    return sorted(rows, key=lambda r: r[table.key])
