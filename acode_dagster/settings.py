"""Every setting the platform reads from the environment, in one place.

Plain values are read here; secrets (URLs that may embed a password, passwords, tokens) are only
*named* here and reach the resources as ``dagster.EnvVar``, so Dagster resolves them at run time
and never shows their values in the UI or the run configuration.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from acode_dagster.bronze.encryption import S3Encryption
from acode_dagster.errors import ConfigError
from acode_dagster.observability.metrics import MetricsSettings

DEFAULT_PARTITIONS_START = "2025-01-01"
REPLICATORS = ("embedded", "airbyte")
STAGING_FOLDER = "_airbyte_staging"
DEFAULT_SLACK_CHANNEL = "#data-engineering-alerts"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
DEFAULT_ALERT_GIVE_UP_H = 24.0
DEFAULT_SYNC_WARN_MINUTES = 180.0
DEFAULT_SYNC_ERROR_MINUTES = 240.0
DEFAULT_SOURCE_CONCURRENCY = 2
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_SECRET_CACHE_S = 60.0
DEFAULT_READ_TIMEOUT_S = 180.0
"""Silence, not duration: a read that gets no byte for this long fails; a long read is fine."""
SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")
"""TLS to MySQL, weakest first; the names and meanings of the MySQL client's --ssl-mode."""
DEFAULT_SSL_MODE = "preferred"
VERIFYING_SSL_MODES = ("verify_ca", "verify_identity")
AUDIT_LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
"""S3 Object Lock modes of the audit records, the default first."""
LOG_FORMATS = ("text", "json")
"""``ACODE_LOG_FORMAT``: human-readable lines (the default) or one JSON object per line."""
DEFAULT_RUN_MAX_RUNTIME_S = 4 * 3600
DEFAULT_PROBE_BUDGET_S = 30.0
DEFAULT_REPLICA_CHECK_CRON = "30 5 * * *"
DEFAULT_WEEKLY_CRON = "0 6 * * 1"
MAX_PROBE_BUDGET_S = 55.0
"""Dagster cuts a sensor tick at 60 s; after its probes the health tick still commits the route
and builds its catch-up."""
"""Four times the hour a 50M-row day takes: room for its retries and for waits on the pool."""


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
        "ACODE_MYSQL_PRIMARY_SECRET_ID",
        "",
        "AWS Secrets Manager secret (name or ARN) holding the primary's login as RDS rotation "
        'writes it ({"username", "password", "host", "port", "dbname"}); read at connect time, '
        "so a rotated password needs no restart. User and password come from it; host, port and "
        "database too unless ACODE_MYSQL_PRIMARY_URL is set",
    ),
    Setting(
        "ACODE_MYSQL_BACKUP_SECRET_ID",
        "",
        "the same for the backup server (with ACODE_MYSQL_BACKUP_URL)",
    ),
    Setting(
        "ACODE_SECRET_CACHE_S",
        f"{DEFAULT_SECRET_CACHE_S:g}",
        "a secret read from Secrets Manager is used this long before it is read again (a server "
        "refusing its password makes it read again at once)",
    ),
    Setting(
        "ACODE_MYSQL_CONNECT_TIMEOUT_S",
        f"{DEFAULT_CONNECT_TIMEOUT_S:g}",
        "a connection to a MySQL server not made in this long fails (and is retried)",
    ),
    Setting(
        "ACODE_MYSQL_READ_TIMEOUT_S",
        f"{DEFAULT_READ_TIMEOUT_S:g}",
        "a read from a MySQL server that gets no byte for this long fails (and is retried); "
        "a MariaDB server gives up on a reader that stopped reading after as long",
    ),
    Setting(
        "ACODE_MYSQL_SSL_MODE",
        "preferred (verify_identity with a CA set, and for the local pair)",
        "TLS to both MySQL servers: disabled, preferred (TLS when the server offers it, "
        "certificate not checked), required (TLS or fail, certificate not checked), verify_ca "
        "(and the certificate signed by the CA), verify_identity (and issued for the host "
        "connected to). The verifying modes use ACODE_MYSQL_SSL_CA, or the system's trust store "
        "when it is not set",
    ),
    Setting(
        "ACODE_MYSQL_PRIMARY_SSL_MODE",
        "$ACODE_MYSQL_SSL_MODE",
        "the same for the primary server only, when the two differ",
    ),
    Setting(
        "ACODE_MYSQL_BACKUP_SSL_MODE",
        "$ACODE_MYSQL_SSL_MODE",
        "the same for the backup server only",
    ),
    Setting(
        "ACODE_MYSQL_SSL_CA",
        "(system trust store)",
        "PEM file of the CA(s) that signed the MySQL servers' certificates (e.g. the RDS bundle); "
        "used by verify_ca and verify_identity",
    ),
    Setting("ACODE_MYSQL_PRIMARY_SSL_CA", "$ACODE_MYSQL_SSL_CA", "the same for the primary only"),
    Setting("ACODE_MYSQL_BACKUP_SSL_CA", "$ACODE_MYSQL_SSL_CA", "the same for the backup only"),
    Setting(
        "ACODE_BRONZE_URL", "$ACODE_HOME/bronze", "bronze root: a folder or s3://bucket[/prefix]"
    ),
    Setting("ACODE_BRONZE_BACKUP_URL", "$ACODE_HOME/bronze-backup", "backup bronze root"),
    Setting(
        "ACODE_S3_SSE",
        "",
        "server-side encryption every object the platform writes to S3 asks for: AES256 (SSE-S3) "
        "or aws:kms (SSE-KMS); unset: each bucket's default encryption",
    ),
    Setting(
        "ACODE_S3_KMS_KEY_ID",
        "",
        "with ACODE_S3_SSE=aws:kms, the KMS key (id, ARN, alias/name or alias ARN); unset: the "
        "AWS-managed key aws/s3",
    ),
    Setting(
        "ACODE_REPLICATOR",
        "embedded",
        "which replicator moves the data: embedded, or airbyte (the routed Airbyte connection)",
    ),
    Setting("ACODE_PARTITIONS_START", DEFAULT_PARTITIONS_START, "first daily partition"),
    Setting("ACODE_MAX_FILE_MB", "512", "a Parquet file is closed past this size"),
    Setting(
        "ACODE_SOURCE_CONCURRENCY",
        str(DEFAULT_SOURCE_CONCURRENCY),
        "syncs reading the source at once, however launched (Dagster pool acode_source)",
    ),
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
    Setting(
        "ACODE_ALERT_GIVE_UP_H",
        "24",
        "hours after its first attempt an undelivered alert is dropped, with a warning",
    ),
    Setting(
        "ACODE_SYNC_WARN_MINUTES",
        f"{DEFAULT_SYNC_WARN_MINUTES:g}",
        "a bronze run still running after this many minutes alerts WARN once (Slack)",
    ),
    Setting(
        "ACODE_SYNC_ERROR_MINUTES",
        f"{DEFAULT_SYNC_ERROR_MINUTES:g}",
        "after this many minutes (>= the WARN one) it alerts ERROR and pages once",
    ),
    Setting("ACODE_HEALTH_INTERVAL_S", "300", "seconds between two health probes of everything"),
    Setting(
        "ACODE_LOG_FORMAT",
        "text",
        "text (human-readable) or json: one JSON object per line on stderr, for a log shipper",
    ),
    Setting("ACODE_PROBE_TIMEOUT_S", "5", "a probe that takes longer fails"),
    Setting(
        "ACODE_PROBE_BUDGET_S",
        f"{DEFAULT_PROBE_BUDGET_S:g}",
        "longest a health tick's probes may take, all at once; a probe still running then "
        f"fails. At least ACODE_PROBE_TIMEOUT_S, below {MAX_PROBE_BUDGET_S:g} (Dagster cuts a "
        "sensor tick at 60 s)",
    ),
    Setting("ACODE_FAILOVER_AFTER", "2", "consecutive failed probes before moving to the backup"),
    Setting("ACODE_FAILBACK_AFTER", "3", "consecutive healthy probes of the primary to come back"),
    Setting("ACODE_FAILBACK_DWELL_S", "1800", "minimum seconds on the backup before coming back"),
    Setting("ACODE_RPO_S", "3600", "a replica further behind than this is not a safe target"),
    Setting("ACODE_LAG_WARN_S", "300", "replica lag from which the health report warns"),
    Setting("ACODE_CATCHUP_DAYS", "7", "after a route change, missing days of this window re-run"),
    Setting(
        "ACODE_REPLICA_CHECK_DAYS",
        "3",
        "complete days of each fact table the daily replica check compares on primary and replica",
    ),
    Setting(
        "ACODE_REPLICA_CHECK_CRON",
        DEFAULT_REPLICA_CHECK_CRON,
        "when the replica check runs (cron, America/Sao_Paulo)",
    ),
    Setting(
        "ACODE_WEEKLY_CRON",
        DEFAULT_WEEKLY_CRON,
        "when the weekly operations run (sweep, replica and bucket verification, the weekly "
        "report to Slack); cron, America/Sao_Paulo; the report covers the 7 days before",
    ),
    Setting(
        "ACODE_REPLICA_CHECK_WAIT_S",
        "60",
        "the longest the replica check waits for a lagging replica before comparing the "
        "differing days once more",
    ),
    Setting(
        "ACODE_MIRROR_VERIFY_DAYS",
        "7",
        "days the daily bucket repair compares between the two buckets (and copies across)",
    ),
    Setting("ACODE_RETRY_BASE_S", "30", "first wait before retrying a sync that lost its server"),
    Setting("ACODE_RETRIES", "4", "retries of such a sync (waits double each time)"),
    Setting(
        "ACODE_READ_CONNECTIONS",
        "2",
        "slices of a day the embedded replicator reads at once, a connection each",
    ),
    Setting(
        "ACODE_LEASE_TTL_S",
        "120",
        "a writer's lease on a partition expires when not renewed for this long (a crashed writer)",
    ),
    Setting(
        "ACODE_LEASE_WAIT_S",
        "600",
        "a writer waits this long for a partition another writer holds, then fails (and retries)",
    ),
    Setting(
        "ACODE_RUN_MAX_RUNTIME_S",
        str(DEFAULT_RUN_MAX_RUNTIME_S),
        "Dagster's run monitoring fails a run still going after this long (0: no limit)",
    ),
    Setting(
        "ACODE_QUARANTINE_RETENTION_DAYS",
        "30",
        "a quarantined version is swept this many days after it was quarantined",
    ),
    Setting(
        "ACODE_STAGING_MAX_AGE_H",
        "24",
        "staging left by a killed writer is swept after this many hours (never under a live lease)",
    ),
    Setting(
        "AIRBYTE_REST_API_BASE_URL",
        "",
        "airbyte mode: Airbyte's public API, e.g. http://airbyte:8000/api/public/v1",
    ),
    Setting(
        "AIRBYTE_CONFIGURATION_API_BASE_URL",
        "",
        "airbyte mode: Airbyte's configuration API, e.g. http://airbyte:8000/api/v1",
    ),
    Setting("AIRBYTE_WORKSPACE_ID", "", "airbyte mode: the workspace holding both connections"),
    Setting("AIRBYTE_CLIENT_ID", "", "airbyte mode: OAuth client id (application)", secret=True),
    Setting("AIRBYTE_CLIENT_SECRET", "", "airbyte mode: its client secret", secret=True),
    Setting(
        "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID",
        "",
        "airbyte mode: connection reading the primary into ACODE_AIRBYTE_STAGING_URL "
        "(connection_mysql_s3_acode)",
    ),
    Setting(
        "ACODE_AIRBYTE_BACKUP_CONNECTION_ID",
        "",
        "airbyte mode: connection reading the backup into ACODE_AIRBYTE_STAGING_URL "
        "(connection_mysql_s3_acode_backup)",
    ),
    Setting(
        "ACODE_AIRBYTE_STAGING_URL",
        f"$ACODE_BRONZE_URL/{STAGING_FOLDER}",
        "airbyte mode: where the two connections above land the raw Parquet (in the primary "
        "bucket)",
    ),
    Setting(
        "ACODE_AIRBYTE_BACKUP_STAGING_URL",
        "",
        "airbyte mode, bucket failover: the staging prefix in the backup bucket, where the two "
        "*_TO_BACKUP_BUCKET connections land; set all three, or none (no bucket failover)",
    ),
    Setting(
        "ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID",
        "",
        "airbyte mode, bucket failover: connection reading the primary into "
        "ACODE_AIRBYTE_BACKUP_STAGING_URL (connection_mysql_s3_acode_to_backup_bucket)",
    ),
    Setting(
        "ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID",
        "",
        "airbyte mode, bucket failover: connection reading the backup into "
        "ACODE_AIRBYTE_BACKUP_STAGING_URL (connection_mysql_s3_acode_backup_to_backup_bucket)",
    ),
    Setting(
        "ACODE_AIRBYTE_TIMEOUT_S", "3600", "airbyte mode: a sync job running longer is cancelled"
    ),
    Setting("ACODE_AIRBYTE_POLL_S", "10", "airbyte mode: seconds between two polls of a job"),
    Setting(
        "ACODE_AIRBYTE_FAILURE_WINDOW_S",
        "3600",
        "airbyte mode: a failed job counts as a failed probe of its route for this long",
    ),
    Setting(
        "ACODE_DAGSTER_UI_URL",
        DEFAULT_UI_URL,
        "where people open the Dagster UI; alerts link to runs and assets there",
    ),
    Setting(
        "ACODE_STATSD_ADDRESS",
        "",
        "host:port of the Datadog agent's DogStatsD (UDP), e.g. 127.0.0.1:8125; every sync, "
        "check, probe, route change and alert is sent there as metrics; unset: not sent",
    ),
    Setting(
        "ACODE_CLOUDWATCH_NAMESPACE",
        "",
        "CloudWatch namespace the same metrics go to (PutMetricData, boto3's credentials and "
        "AWS_REGION), e.g. ACODE/Dagster; unset: not sent",
    ),
    Setting(
        "ACODE_CLOUDWATCH_ENDPOINT_URL",
        "(AWS)",
        "CloudWatch endpoint to send to instead of AWS's (a VPC endpoint, a test server)",
    ),
    Setting(
        "ACODE_METRICS_TAGS",
        "",
        "tags added to every metric, e.g. env:prod,service:acode-dagster",
    ),
    Setting(
        "ACODE_OPERATOR",
        "(the OS user)",
        "the operator's name in the audit records of the commands run from this shell",
    ),
    Setting(
        "ACODE_AUDIT_RETENTION_DAYS",
        "",
        "when set, each audit record is put under S3 Object Lock for this many days (e.g. 2555, "
        "7 years for LGPD); the bucket must have Object Lock enabled",
    ),
    Setting(
        "ACODE_AUDIT_LOCK_MODE",
        "COMPLIANCE",
        "Object Lock mode of the audit records: COMPLIANCE (nobody can shorten it) or GOVERNANCE "
        "(a user with s3:BypassGovernanceRetention can)",
    ),
)


@dataclass(frozen=True)
class MySQLTLS:
    """How one MySQL server is reached over TLS, and the settings that said so (for errors)."""

    mode: str = DEFAULT_SSL_MODE
    """One of :data:`SSL_MODES`."""
    ca: str = ""
    """PEM file of the CA the verifying modes check the certificate against; empty: the
    system's trust store."""
    mode_setting: str = "ACODE_MYSQL_SSL_MODE"
    ca_setting: str = "ACODE_MYSQL_SSL_CA"
    chosen: bool = False
    """Whether a setting chose the mode; if not it is the default, which the local pair's own
    (verify_identity with its throwaway CA) replaces."""

    @property
    def verifies(self) -> bool:
        return self.mode in VERIFYING_SSL_MODES

    @property
    def demands_tls(self) -> bool:
        """Whether a connection without TLS must fail (required and stronger)."""
        return SSL_MODES.index(self.mode) >= SSL_MODES.index("required")

    @property
    def described(self) -> str:
        """``SETTING=mode``, with the CA's setting when one is used."""
        text = f"{self.mode_setting}={self.mode}"
        if self.verifies:
            text += f", {self.ca_setting}={self.ca}" if self.ca else ", system trust store"
        return text


def mysql_tls(env: Mapping[str, str], role: str) -> MySQLTLS:
    """The TLS of server ``role`` (primary or backup): its own ACODE_MYSQL_<ROLE>_SSL_MODE and
    _SSL_CA when set, else the shared ACODE_MYSQL_SSL_MODE and ACODE_MYSQL_SSL_CA. With a CA and
    no mode, the mode is verify_identity: a CA given is meant to be checked against."""
    side = role.upper()
    mode_setting = _first_set(env, f"ACODE_MYSQL_{side}_SSL_MODE", "ACODE_MYSQL_SSL_MODE")
    ca_setting = _first_set(env, f"ACODE_MYSQL_{side}_SSL_CA", "ACODE_MYSQL_SSL_CA")
    text = (env.get(mode_setting) or "").strip()
    ca = _ca_file(env, ca_setting)
    if not text:
        mode = "verify_identity" if ca else DEFAULT_SSL_MODE
    else:
        mode = text.lower().replace("-", "_")
        if mode not in SSL_MODES:
            raise ConfigError(
                f"{mode_setting}={text!r} is not a TLS mode; use one of: {', '.join(SSL_MODES)} "
                "(verify_identity checks the server's certificate and host name, and is what "
                "production should use)"
            )
    return MySQLTLS(mode, ca, mode_setting, ca_setting, chosen=bool(text))


def _first_set(env: Mapping[str, str], own: str, shared: str) -> str:
    return own if (env.get(own) or "").strip() else shared


def _ca_file(env: Mapping[str, str], name: str) -> str:
    """The CA file named by ``name``, checked now: a wrong path would otherwise surface as a
    failed connection in the middle of a sync."""
    text = (env.get(name) or "").strip()
    if not text:
        return ""
    path = Path(text).expanduser()
    fix = (
        f"set {name} to the PEM file of the CA that signed the MySQL server's certificate "
        "(for RDS, its global-bundle.pem), or unset it to use the system's trust store"
    )
    try:
        head = path.read_bytes()[:1_000_000]
    except OSError as exc:
        raise ConfigError(f"{name}={text!r} cannot be read ({exc.strerror}); {fix}") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise ConfigError(f"{name}={text!r} holds no PEM certificate; {fix}")
    return str(path.resolve())


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
    source_concurrency: int = DEFAULT_SOURCE_CONCURRENCY
    slack_token_set: bool = False
    slack_channel: str = DEFAULT_SLACK_CHANNEL
    slack_api_url: str = DEFAULT_SLACK_API_URL
    pagerduty_key_set: bool = False
    pagerduty_url: str = DEFAULT_PAGERDUTY_URL
    ui_url: str = DEFAULT_UI_URL
    alert_give_up_h: float = DEFAULT_ALERT_GIVE_UP_H
    sync_warn_minutes: float = DEFAULT_SYNC_WARN_MINUTES
    sync_error_minutes: float = DEFAULT_SYNC_ERROR_MINUTES
    health_interval_s: int = 300
    probe_timeout_s: float = 5.0
    probe_budget_s: float = DEFAULT_PROBE_BUDGET_S
    failover_after: int = 2
    failback_after: int = 3
    failback_dwell_s: float = 1800.0
    rpo_s: float = 3600.0
    lag_warn_s: float = 300.0
    catchup_days: int = 7
    replica_check_days: int = 3
    replica_check_cron: str = DEFAULT_REPLICA_CHECK_CRON
    weekly_cron: str = DEFAULT_WEEKLY_CRON
    replica_check_wait_s: float = 60.0
    mirror_verify_days: int = 7
    retry_base_s: float = 30.0
    retries: int = 4
    read_connections: int = 2
    lease_ttl_s: float = 120.0
    lease_wait_s: float = 600.0
    mysql_connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    mysql_read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    primary_tls: MySQLTLS = MySQLTLS()
    backup_tls: MySQLTLS = MySQLTLS()
    run_max_runtime_s: int = DEFAULT_RUN_MAX_RUNTIME_S
    quarantine_retention_days: float = 30.0
    staging_max_age_h: float = 24.0
    primary_secret_id: str = ""
    """``ACODE_MYSQL_PRIMARY_SECRET_ID``; empty: the login comes from the URL and ACODE_PASS."""
    backup_secret_id: str = ""
    secret_cache_s: float = DEFAULT_SECRET_CACHE_S
    s3_encryption: S3Encryption = field(default_factory=S3Encryption)
    """``ACODE_S3_SSE`` and ``ACODE_S3_KMS_KEY_ID``, as every S3 client applies them."""
    operator: str = ""
    """``ACODE_OPERATOR``; empty: the OS user (acode_dagster.audit.operator)."""
    audit_retention_days: int = 0
    """0: no Object Lock on the audit records."""
    audit_lock_mode: str = "COMPLIANCE"
    log_format: str = LOG_FORMATS[0]
    """``ACODE_LOG_FORMAT``: ``text`` or ``json`` (acode_dagster.observability.logs)."""
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    """Where metrics go (ACODE_STATSD_ADDRESS, ACODE_CLOUDWATCH_NAMESPACE, ...)."""
    airbyte: AirbyteSettings | None = None
    """Set when ``ACODE_REPLICATOR=airbyte``."""

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
        bronze_url = env.get("ACODE_BRONZE_URL") or str(home / "bronze")
        sync_warn, sync_error = _sync_sla(env)
        return cls(
            home=home,
            primary_url_set=bool(env.get("ACODE_MYSQL_PRIMARY_URL")),
            backup_url_set=bool(env.get("ACODE_MYSQL_BACKUP_URL")),
            primary_password_set=bool(env.get("ACODE_PASS")),
            backup_password_set=bool(env.get("ACODE_BACKUP_PASS")),
            bronze_url=bronze_url,
            bronze_backup_url=env.get("ACODE_BRONZE_BACKUP_URL") or str(home / "bronze-backup"),
            replicator=replicator,
            partitions_start=start,
            max_file_mb=int(max_file_text),
            source_concurrency=_whole(
                env, "ACODE_SOURCE_CONCURRENCY", DEFAULT_SOURCE_CONCURRENCY, minimum=1
            ),
            slack_token_set=bool(env.get("SLACK_BOT_TOKEN")),
            slack_channel=env.get("ACODE_SLACK_CHANNEL") or DEFAULT_SLACK_CHANNEL,
            slack_api_url=_http_url(env, "ACODE_SLACK_API_URL", DEFAULT_SLACK_API_URL),
            pagerduty_key_set=bool(env.get("PAGERDUTY_ROUTING_KEY")),
            pagerduty_url=_http_url(env, "ACODE_PAGERDUTY_URL", DEFAULT_PAGERDUTY_URL),
            ui_url=_http_url(env, "ACODE_DAGSTER_UI_URL", DEFAULT_UI_URL).rstrip("/"),
            alert_give_up_h=_number(
                env, "ACODE_ALERT_GIVE_UP_H", DEFAULT_ALERT_GIVE_UP_H, minimum=0
            ),
            sync_warn_minutes=sync_warn,
            sync_error_minutes=sync_error,
            health_interval_s=int(_number(env, "ACODE_HEALTH_INTERVAL_S", 300, minimum=1)),
            probe_timeout_s=_number(env, "ACODE_PROBE_TIMEOUT_S", 5, minimum=0.1),
            probe_budget_s=_probe_budget(env),
            failover_after=int(_number(env, "ACODE_FAILOVER_AFTER", 2, minimum=1)),
            failback_after=int(_number(env, "ACODE_FAILBACK_AFTER", 3, minimum=1)),
            failback_dwell_s=_number(env, "ACODE_FAILBACK_DWELL_S", 1800, minimum=0),
            rpo_s=_number(env, "ACODE_RPO_S", 3600, minimum=1),
            lag_warn_s=_number(env, "ACODE_LAG_WARN_S", 300, minimum=0),
            catchup_days=int(_number(env, "ACODE_CATCHUP_DAYS", 7, minimum=0)),
            replica_check_days=_whole(env, "ACODE_REPLICA_CHECK_DAYS", 3, minimum=1),
            replica_check_cron=_cron(env, "ACODE_REPLICA_CHECK_CRON", DEFAULT_REPLICA_CHECK_CRON),
            weekly_cron=_cron(env, "ACODE_WEEKLY_CRON", DEFAULT_WEEKLY_CRON),
            replica_check_wait_s=_number(env, "ACODE_REPLICA_CHECK_WAIT_S", 60, minimum=0),
            mirror_verify_days=int(_number(env, "ACODE_MIRROR_VERIFY_DAYS", 7, minimum=1)),
            retry_base_s=_number(env, "ACODE_RETRY_BASE_S", 30, minimum=0),
            retries=int(_number(env, "ACODE_RETRIES", 4, minimum=0)),
            read_connections=int(_number(env, "ACODE_READ_CONNECTIONS", 2, minimum=1)),
            lease_ttl_s=_number(env, "ACODE_LEASE_TTL_S", 120, minimum=1),
            lease_wait_s=_number(env, "ACODE_LEASE_WAIT_S", 600, minimum=0),
            mysql_connect_timeout_s=_number(
                env, "ACODE_MYSQL_CONNECT_TIMEOUT_S", DEFAULT_CONNECT_TIMEOUT_S, minimum=0.5
            ),
            mysql_read_timeout_s=_number(
                env, "ACODE_MYSQL_READ_TIMEOUT_S", DEFAULT_READ_TIMEOUT_S, minimum=1
            ),
            primary_tls=mysql_tls(env, "primary"),
            backup_tls=mysql_tls(env, "backup"),
            # Whole seconds: Dagster's run_monitoring.max_runtime_seconds is an int.
            run_max_runtime_s=_whole(
                env, "ACODE_RUN_MAX_RUNTIME_S", DEFAULT_RUN_MAX_RUNTIME_S, minimum=0
            ),
            quarantine_retention_days=_number(
                env, "ACODE_QUARANTINE_RETENTION_DAYS", 30, minimum=0
            ),
            staging_max_age_h=_number(env, "ACODE_STAGING_MAX_AGE_H", 24, minimum=0),
            primary_secret_id=_secret_id(env, "ACODE_MYSQL_PRIMARY_SECRET_ID"),
            backup_secret_id=_secret_id(env, "ACODE_MYSQL_BACKUP_SECRET_ID"),
            secret_cache_s=_number(env, "ACODE_SECRET_CACHE_S", DEFAULT_SECRET_CACHE_S, minimum=0),
            s3_encryption=S3Encryption.from_env(env),
            operator=(env.get("ACODE_OPERATOR") or "").strip(),
            audit_retention_days=_whole(env, "ACODE_AUDIT_RETENTION_DAYS", 0, minimum=0),
            audit_lock_mode=_audit_lock_mode(env),
            log_format=_log_format(env),
            metrics=MetricsSettings.from_env(env),
            airbyte=AirbyteSettings.from_env(env, bronze_url) if replicator == "airbyte" else None,
        )


_AIRBYTE_REQUIRED = {
    "AIRBYTE_REST_API_BASE_URL": "Airbyte's public API, e.g. http://airbyte:8000/api/public/v1",
    "AIRBYTE_CONFIGURATION_API_BASE_URL": "Airbyte's configuration API, e.g. "
    "http://airbyte:8000/api/v1",
    "AIRBYTE_WORKSPACE_ID": "the workspace id from the Airbyte UI's address bar "
    "(/workspaces/<id>/...)",
    "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID": "the id of connection_mysql_s3_acode "
    "(its page's address: /connections/<id>)",
    "ACODE_AIRBYTE_BACKUP_CONNECTION_ID": "the id of connection_mysql_s3_acode_backup",
}
_AIRBYTE_BACKUP_BUCKET = {
    "ACODE_AIRBYTE_BACKUP_STAGING_URL": "the S3 Bucket Path of their destination, in the backup "
    "bucket, e.g. s3://farmarcas-backup-acode/_airbyte_staging",
    "ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID": "the id of the connection reading "
    "the primary into that prefix (connection_mysql_s3_acode_to_backup_bucket)",
    "ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID": "the id of the connection reading "
    "the backup into that prefix (connection_mysql_s3_acode_backup_to_backup_bucket)",
}


@dataclass(frozen=True)
class AirbyteSettings:
    """The Airbyte route's settings; the client id and secret are only known to be set."""

    rest_api_base_url: str
    configuration_api_base_url: str
    workspace_id: str
    credentials_set: bool
    primary_connection_id: str
    backup_connection_id: str
    staging_url: str
    timeout_s: float = 3600.0
    poll_s: float = 10.0
    failure_window_s: float = 3600.0
    backup_staging_url: str = ""
    """The backup bucket's staging prefix; empty when bucket failover is not configured."""
    primary_to_backup_bucket_connection_id: str = ""
    backup_to_backup_bucket_connection_id: str = ""

    @property
    def backup_bucket_configured(self) -> bool:
        """Whether a sync can land into the backup bucket (all three settings are set)."""
        return bool(self.backup_staging_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str], bronze_url: str) -> AirbyteSettings:
        values = {name: (env.get(name) or "").strip() for name in _AIRBYTE_REQUIRED}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise ConfigError(
                "ACODE_REPLICATOR=airbyte needs "
                + "; ".join(f"{name} ({_AIRBYTE_REQUIRED[name]})" for name in missing)
                + ". Set them, or set ACODE_REPLICATOR=embedded"
            )
        for name in ("AIRBYTE_REST_API_BASE_URL", "AIRBYTE_CONFIGURATION_API_BASE_URL"):
            _http_url(env, name, _AIRBYTE_REQUIRED[name].rsplit(" ", 1)[-1])
        has_id, has_secret = (
            bool(env.get("AIRBYTE_CLIENT_ID")),
            bool(env.get("AIRBYTE_CLIENT_SECRET")),
        )
        if has_id != has_secret:
            absent = "AIRBYTE_CLIENT_SECRET" if has_id else "AIRBYTE_CLIENT_ID"
            raise ConfigError(
                f"{absent} is not set although its pair is: set both AIRBYTE_CLIENT_ID and "
                "AIRBYTE_CLIENT_SECRET (an Airbyte application's credentials), or neither for an "
                "Airbyte without authentication"
            )
        if (
            values["ACODE_AIRBYTE_PRIMARY_CONNECTION_ID"]
            == values["ACODE_AIRBYTE_BACKUP_CONNECTION_ID"]
        ):
            raise ConfigError(
                "ACODE_AIRBYTE_PRIMARY_CONNECTION_ID and ACODE_AIRBYTE_BACKUP_CONNECTION_ID are "
                "the same connection; the backup connection must read the backup server"
            )
        staging_url = (env.get("ACODE_AIRBYTE_STAGING_URL") or "").strip() or (
            f"{bronze_url.rstrip('/')}/{STAGING_FOLDER}"
        )
        backup_bucket = _airbyte_backup_bucket(env, values, staging_url)
        return cls(
            rest_api_base_url=values["AIRBYTE_REST_API_BASE_URL"].rstrip("/"),
            configuration_api_base_url=values["AIRBYTE_CONFIGURATION_API_BASE_URL"].rstrip("/"),
            workspace_id=values["AIRBYTE_WORKSPACE_ID"],
            credentials_set=has_id,
            primary_connection_id=values["ACODE_AIRBYTE_PRIMARY_CONNECTION_ID"],
            backup_connection_id=values["ACODE_AIRBYTE_BACKUP_CONNECTION_ID"],
            staging_url=staging_url,
            timeout_s=_number(env, "ACODE_AIRBYTE_TIMEOUT_S", 3600, minimum=1),
            poll_s=_number(env, "ACODE_AIRBYTE_POLL_S", 10, minimum=0.05),
            failure_window_s=_number(env, "ACODE_AIRBYTE_FAILURE_WINDOW_S", 3600, minimum=0),
            backup_staging_url=backup_bucket["ACODE_AIRBYTE_BACKUP_STAGING_URL"],
            primary_to_backup_bucket_connection_id=backup_bucket[
                "ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID"
            ],
            backup_to_backup_bucket_connection_id=backup_bucket[
                "ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID"
            ],
        )


def _airbyte_backup_bucket(
    env: Mapping[str, str], primary: Mapping[str, str], staging_url: str
) -> dict[str, str]:
    """The three settings of bucket failover in airbyte mode: all set, or all empty.

    An Airbyte connection's destination is fixed in Airbyte, so landing into the backup bucket
    takes a staging prefix there and a connection from each server into it; with none of them
    set, Airbyte mode runs on the primary bucket only."""
    values = {name: (env.get(name) or "").strip() for name in _AIRBYTE_BACKUP_BUCKET}
    given = [name for name, value in values.items() if value]
    missing = [name for name, value in values.items() if not value]
    if given and missing:
        needed = "; ".join(f"{name} ({_AIRBYTE_BACKUP_BUCKET[name]})" for name in missing)
        raise ConfigError(
            f"bucket failover in airbyte mode needs all three of {', '.join(values)}; "
            f"{' and '.join(given)} set, missing: {needed}. Set the missing, or unset "
            f"{' and '.join(given)} to run airbyte mode on the primary bucket only"
        )
    if not given:
        return values
    ids = {
        **{name: primary[name] for name in _AIRBYTE_REQUIRED if name.endswith("CONNECTION_ID")},
        **{name: values[name] for name in values if name.endswith("CONNECTION_ID")},
    }
    seen: dict[str, str] = {}
    for name, connection_id in ids.items():
        if connection_id in seen:
            raise ConfigError(
                f"{seen[connection_id]} and {name} are the same connection ({connection_id}); an "
                "Airbyte connection reads one server into one destination, so each (server, "
                "bucket) pair needs a connection of its own"
            )
        seen[connection_id] = name
    backup_staging = values["ACODE_AIRBYTE_BACKUP_STAGING_URL"]
    if backup_staging.rstrip("/") == staging_url.rstrip("/"):
        raise ConfigError(
            f"ACODE_AIRBYTE_BACKUP_STAGING_URL={backup_staging!r} is the primary bucket's staging "
            "(ACODE_AIRBYTE_STAGING_URL); set it to the prefix in the backup bucket that the "
            "*_TO_BACKUP_BUCKET connections land into"
        )
    primary_bucket = _s3_bucket(env.get("ACODE_BRONZE_URL") or "")
    backup_bucket = _s3_bucket(env.get("ACODE_BRONZE_BACKUP_URL") or "")
    if (
        primary_bucket
        and primary_bucket != backup_bucket
        and _s3_bucket(backup_staging) == primary_bucket
    ):
        raise ConfigError(
            f"ACODE_AIRBYTE_BACKUP_STAGING_URL={backup_staging!r} is in the primary bronze bucket "
            f"{primary_bucket!r} (ACODE_BRONZE_URL): with that bucket down nothing could land "
            "there either. Point it, and the destination of the *_TO_BACKUP_BUCKET connections, "
            + (
                f"into the backup bucket, e.g. s3://{backup_bucket}/{STAGING_FOLDER}"
                if backup_bucket
                else "into the backup bucket"
            )
        )
    return values


def _s3_bucket(url: str) -> str | None:
    """The bucket of an ``s3://bucket/prefix`` URL; None for a folder (or nothing)."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc:
        return None
    return parts.netloc


def _sync_sla(env: Mapping[str, str]) -> tuple[float, float]:
    """The sync-duration thresholds: minutes, fractions allowed (tests use seconds)."""
    found = {}
    for name, default in (
        ("ACODE_SYNC_WARN_MINUTES", DEFAULT_SYNC_WARN_MINUTES),
        ("ACODE_SYNC_ERROR_MINUTES", DEFAULT_SYNC_ERROR_MINUTES),
    ):
        value = _number(env, name, default, minimum=0)
        if not 0 < value < float("inf"):
            raise ConfigError(
                f"{name}={env.get(name)!r} must be a number of minutes > 0, e.g. {default:g}"
            )
        found[name] = value
    warn, error = found["ACODE_SYNC_WARN_MINUTES"], found["ACODE_SYNC_ERROR_MINUTES"]
    if error < warn:
        raise ConfigError(
            f"ACODE_SYNC_ERROR_MINUTES={error:g} is below ACODE_SYNC_WARN_MINUTES={warn:g}: the "
            "ERROR (paging) threshold must not come before the WARN one; raise "
            "ACODE_SYNC_ERROR_MINUTES or lower ACODE_SYNC_WARN_MINUTES"
        )
    return warn, error


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


def _probe_budget(env: Mapping[str, str]) -> float:
    budget = _number(env, "ACODE_PROBE_BUDGET_S", DEFAULT_PROBE_BUDGET_S, minimum=0.1)
    timeout = _number(env, "ACODE_PROBE_TIMEOUT_S", 5, minimum=0.1)
    if budget >= MAX_PROBE_BUDGET_S:
        raise ConfigError(
            f"ACODE_PROBE_BUDGET_S={budget:g} must be below {MAX_PROBE_BUDGET_S:g} s: Dagster "
            "cuts a sensor tick at 60 s, and after its probes the health tick still has to "
            f"commit the route and request its catch-up; e.g. {DEFAULT_PROBE_BUDGET_S:g}"
        )
    if budget < timeout:
        raise ConfigError(
            f"ACODE_PROBE_BUDGET_S={budget:g} is below ACODE_PROBE_TIMEOUT_S={timeout:g}: no "
            "probe could wait out even one network operation; raise ACODE_PROBE_BUDGET_S to at "
            f"least {timeout:g} (e.g. {DEFAULT_PROBE_BUDGET_S:g}) or lower ACODE_PROBE_TIMEOUT_S"
        )
    return budget


def _cron(env: Mapping[str, str], name: str, default: str) -> str:
    """Five cron fields (minute hour day month weekday); Dagster checks the values when the
    schedule is built."""
    value = " ".join((env.get(name) or default).split())
    if len(value.split(" ")) != 5 or not re.fullmatch(r"[0-9A-Za-z*,/?LW# -]+", value):
        raise ConfigError(
            f"{name}={value!r} is not a cron schedule; use five fields (minute hour day month "
            f"weekday), e.g. {default!r}"
        )
    return value


def _log_format(env: Mapping[str, str]) -> str:
    text = (env.get("ACODE_LOG_FORMAT") or LOG_FORMATS[0]).strip().lower()
    if text not in LOG_FORMATS:
        raise ConfigError(
            f"ACODE_LOG_FORMAT={text!r} is not a log format; use text (human-readable, the "
            "default) or json (one JSON object per line, for a log shipper)"
        )
    return text


def _audit_lock_mode(env: Mapping[str, str]) -> str:
    text = (env.get("ACODE_AUDIT_LOCK_MODE") or AUDIT_LOCK_MODES[0]).strip().upper()
    if text not in AUDIT_LOCK_MODES:
        raise ConfigError(
            f"ACODE_AUDIT_LOCK_MODE={text!r} is not an Object Lock mode; use COMPLIANCE (the "
            "default: nobody can delete a record before its retention ends) or GOVERNANCE"
        )
    return text


_SECRET_ID = re.compile(r"[A-Za-z0-9/_+=.@:-]{1,2048}")
"""What Secrets Manager accepts in a name or ARN."""


def _secret_id(env: Mapping[str, str], name: str) -> str:
    """A secret's name or ARN (not a secret itself: it only says where the login is)."""
    text = (env.get(name) or "").strip()
    if text and not _SECRET_ID.fullmatch(text):
        raise ConfigError(
            f"{name} is not a Secrets Manager secret name or ARN (letters, digits and "
            "/_+=.@- only, as in acode/mysql/primary or "
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:acode/mysql/primary-AbCdEf)"
        )
    return text


def _whole(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """A whole number: a fractional or zero limit would be silently rounded or stop everything."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < minimum:
        raise ConfigError(f"{name}={text!r} must be a whole number >= {minimum}, e.g. {default}")
    return int(text)
