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
DEFAULT_SLACK_CHANNEL = "#data-engineering-alerts"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com"
DEFAULT_UI_URL = "http://127.0.0.1:3000"


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
    Setting(
        "SLACK_BOT_TOKEN",
        "",
        "Slack bot token (chat:write); without it alerts go to the sensor's log in the UI",
        secret=True,
    ),
    Setting("ACODE_SLACK_CHANNEL", DEFAULT_SLACK_CHANNEL, "Slack channel the alerts go to"),
    Setting("ACODE_SLACK_API_URL", DEFAULT_SLACK_API_URL, "Slack Web API base URL"),
    Setting(
        "PAGERDUTY_ROUTING_KEY",
        "",
        "PagerDuty Events API v2 routing key; without it nothing is paged",
        secret=True,
    ),
    Setting("ACODE_PAGERDUTY_URL", DEFAULT_PAGERDUTY_URL, "PagerDuty Events API base URL"),
    Setting("ACODE_HEALTH_INTERVAL_S", "300", "seconds between two health probes of everything"),
    Setting("ACODE_PROBE_TIMEOUT_S", "5", "a probe that takes longer fails"),
    Setting("ACODE_FAILOVER_AFTER", "2", "consecutive failed probes before moving to the backup"),
    Setting("ACODE_FAILBACK_AFTER", "3", "consecutive healthy probes of the primary to come back"),
    Setting("ACODE_FAILBACK_DWELL_S", "1800", "minimum seconds on the backup before coming back"),
    Setting("ACODE_RPO_S", "3600", "a replica further behind than this is not a safe target"),
    Setting("ACODE_LAG_WARN_S", "300", "replica lag from which the health report warns"),
    Setting("ACODE_CATCHUP_DAYS", "7", "after a route change, missing days of this window re-run"),
    Setting("ACODE_RETRY_BASE_S", "30", "first wait before retrying a sync that lost its server"),
    Setting("ACODE_RETRIES", "4", "retries of such a sync (waits double each time)"),
    Setting(
        "ACODE_DAGSTER_UI_URL",
        DEFAULT_UI_URL,
        "where people open the Dagster UI; alerts link to runs and assets there",
    ),
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
    slack_token_set: bool = False
    slack_channel: str = DEFAULT_SLACK_CHANNEL
    slack_api_url: str = DEFAULT_SLACK_API_URL
    pagerduty_key_set: bool = False
    pagerduty_url: str = DEFAULT_PAGERDUTY_URL
    ui_url: str = DEFAULT_UI_URL
    health_interval_s: int = 300
    probe_timeout_s: float = 5.0
    failover_after: int = 2
    failback_after: int = 3
    failback_dwell_s: float = 1800.0
    rpo_s: float = 3600.0
    lag_warn_s: float = 300.0
    catchup_days: int = 7
    retry_base_s: float = 30.0
    retries: int = 4

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
            slack_token_set=bool(env.get("SLACK_BOT_TOKEN")),
            slack_channel=env.get("ACODE_SLACK_CHANNEL") or DEFAULT_SLACK_CHANNEL,
            slack_api_url=_http_url(env, "ACODE_SLACK_API_URL", DEFAULT_SLACK_API_URL),
            pagerduty_key_set=bool(env.get("PAGERDUTY_ROUTING_KEY")),
            pagerduty_url=_http_url(env, "ACODE_PAGERDUTY_URL", DEFAULT_PAGERDUTY_URL),
            ui_url=_http_url(env, "ACODE_DAGSTER_UI_URL", DEFAULT_UI_URL).rstrip("/"),
            health_interval_s=int(_number(env, "ACODE_HEALTH_INTERVAL_S", 300, minimum=1)),
            probe_timeout_s=_number(env, "ACODE_PROBE_TIMEOUT_S", 5, minimum=0.1),
            failover_after=int(_number(env, "ACODE_FAILOVER_AFTER", 2, minimum=1)),
            failback_after=int(_number(env, "ACODE_FAILBACK_AFTER", 3, minimum=1)),
            failback_dwell_s=_number(env, "ACODE_FAILBACK_DWELL_S", 1800, minimum=0),
            rpo_s=_number(env, "ACODE_RPO_S", 3600, minimum=1),
            lag_warn_s=_number(env, "ACODE_LAG_WARN_S", 300, minimum=0),
            catchup_days=int(_number(env, "ACODE_CATCHUP_DAYS", 7, minimum=0)),
            retry_base_s=_number(env, "ACODE_RETRY_BASE_S", 30, minimum=0),
            retries=int(_number(env, "ACODE_RETRIES", 4, minimum=0)),
        )


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    text = (env.get(name) or "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also refuses NaN
        raise ConfigError(f"{name}={text!r} must be a number >= {minimum:g}, e.g. {default:g}")
    return value


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name) or default).strip()
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={value!r} is not an http(s) URL; for example {default}")
    return value
