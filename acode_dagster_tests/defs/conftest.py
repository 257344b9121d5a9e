"""Fixtures of the Dagster-level tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, mariadb_pair: Any, tmp_path: Path) -> dict[str, str]:
    """The platform configured the production way: URLs and passwords from the environment."""
    primary = mariadb_pair.endpoint("primary")
    backup = mariadb_pair.endpoint("backup")
    values = {
        "ACODE_HOME": str(tmp_path / "home"),
        "ACODE_MYSQL_PRIMARY_URL": f"mysql://{primary.user}@{primary.address}/{primary.database}",
        "ACODE_PASS": primary.password or "",
        "ACODE_MYSQL_BACKUP_URL": f"mysql://{backup.user}@{backup.address}/{backup.database}",
        "ACODE_BACKUP_PASS": backup.password or "",
        "ACODE_BRONZE_URL": str(tmp_path / "bronze"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values
