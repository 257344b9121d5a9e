"""Reading the source the way a test trusts (every row, cut to the day in Python), and pointing
the platform at a test's MariaDB pair.

The replicator's own SQL is what is under test, so the expected partition is computed without it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from acode_dagster.localstack import LocalStack
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


def platform_environ(stack: LocalStack, home: Path, bronze: Path) -> dict[str, str]:
    """The platform configured the production way for ``stack``: server URLs and passwords from
    the environment, one bronze folder, and a lost server retried once and quickly, so a failing
    test fails fast."""
    primary, backup = stack.endpoint("primary"), stack.endpoint("backup")
    return {
        "ACODE_HOME": str(home),
        "ACODE_MYSQL_PRIMARY_URL": f"mysql://{primary.user}@{primary.address}/{primary.database}",
        "ACODE_PASS": primary.password or "",
        "ACODE_MYSQL_BACKUP_URL": f"mysql://{backup.user}@{backup.address}/{backup.database}",
        "ACODE_BACKUP_PASS": backup.password or "",
        "ACODE_BRONZE_URL": str(bronze),
        "ACODE_RETRIES": "1",
        "ACODE_RETRY_BASE_S": "0.1",
    }
