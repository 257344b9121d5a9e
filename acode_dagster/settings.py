"""Every setting the platform reads from the environment, in one place.

Plain values are read here; secrets (URLs that may embed a password, passwords, tokens) are only
*named* here and reach the resources as ``dagster.EnvVar``, so Dagster resolves them at run time
and never shows their values in the UI or the run configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from acode_dagster.errors import ConfigError

DEFAULT_PARTITIONS_START = "2025-01-01"
REPLICATORS = ("embedded",)


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "ACODE_HOME",
        "./.acode",
        "state folder of the embedded default: MariaDB pair, bronze, Dagster home",
    ),
    Setting(
        "ACODE_MYSQL_PRIMARY_URL",
        "(local pair)",
        "mysql://user[:password]@host:port/database of the primary server",
        secret=True,
    ),
    Setting(
        "ACODE_MYSQL_BACKUP_URL",
        "(local pair)",
        "the same for the backup (replica) server",
        secret=True,
    ),
    Setting("ACODE_PASS", "", "primary password when its URL has none", secret=True),
    Setting("ACODE_BACKUP_PASS", "", "backup password when its URL has none", secret=True),
    Setting(
        "ACODE_BRONZE_URL", "$ACODE_HOME/bronze", "bronze root: a folder or s3://bucket[/prefix]"
    ),
    Setting("ACODE_BRONZE_BACKUP_URL", "$ACODE_HOME/bronze-backup", "backup bronze root"),
    Setting("ACODE_REPLICATOR", "embedded", "which replicator moves the data: embedded"),
    Setting("ACODE_PARTITIONS_START", DEFAULT_PARTITIONS_START, "first daily partition"),
    Setting("ACODE_MAX_FILE_MB", "512", "a Parquet file is closed past this size"),
)


@dataclass(frozen=True)
class Settings:
    home: Path
    primary_url_set: bool
    backup_url_set: bool
    primary_password_set: bool
    backup_password_set: bool
    bronze_url: str
    bronze_backup_url: str
    replicator: str
    partitions_start: date
    max_file_mb: int

    @property
    def stack_home(self) -> Path:
        return self.home / "stack"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("ACODE_HOME") or ".acode").expanduser().resolve()
        replicator = (env.get("ACODE_REPLICATOR") or "embedded").strip().lower()
        if replicator not in REPLICATORS:
            raise ConfigError(
                f"ACODE_REPLICATOR={replicator!r} is not known; "
                f"use one of: {', '.join(REPLICATORS)}"
            )
        start_text = env.get("ACODE_PARTITIONS_START") or DEFAULT_PARTITIONS_START
        try:
            start = date.fromisoformat(start_text)
        except ValueError:
            raise ConfigError(
                f"ACODE_PARTITIONS_START={start_text!r} is not a day; use YYYY-MM-DD, e.g. "
                f"{DEFAULT_PARTITIONS_START}"
            ) from None
        max_file_text = env.get("ACODE_MAX_FILE_MB") or "512"
        if not max_file_text.isdigit() or int(max_file_text) < 1:
            raise ConfigError(
                f"ACODE_MAX_FILE_MB={max_file_text!r} must be a whole number of megabytes >= 1"
            )
        return cls(
            home=home,
            primary_url_set=bool(env.get("ACODE_MYSQL_PRIMARY_URL")),
            backup_url_set=bool(env.get("ACODE_MYSQL_BACKUP_URL")),
            primary_password_set=bool(env.get("ACODE_PASS")),
            backup_password_set=bool(env.get("ACODE_BACKUP_PASS")),
            bronze_url=env.get("ACODE_BRONZE_URL") or str(home / "bronze"),
            bronze_backup_url=env.get("ACODE_BRONZE_BACKUP_URL") or str(home / "bronze-backup"),
            replicator=replicator,
            partitions_start=start,
            max_file_mb=int(max_file_text),
        )
