"""The platform's resources, built from the environment in one place."""

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_airbyte import AirbyteWorkspace
from pydantic import Field

from acode_dagster.airbyte import (
    AirbyteConnections,
    AirbyteReplicator,
    no_backup_bucket,
    probe_both,
)
from acode_dagster.bronze.lease import DEFAULT_TTL_S, DEFAULT_WAIT_S, LeasePolicy
from acode_dagster.bronze.publish import ROW_GROUP_ROWS
from acode_dagster.bronze.quarantine import SweepPolicy
from acode_dagster.bronze.store import BronzeStore, open_store
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.observability.resources import MetricsConfig, MetricsResource
from acode_dagster.defs.redundancy.resources import RedundancyResource
from acode_dagster.errors import ConfigError, redact
from acode_dagster.landing import BACKUP_STAGING_SETTING, STAGING_SETTING, Landing
from acode_dagster.mysql import DEFAULT_PORT, MySQLEndpoint
from acode_dagster.observability.sla import SlaThresholds
from acode_dagster.probes import ProbeResult, ProbeSettings
from acode_dagster.replicator import BATCH_ROWS, EmbeddedReplicator, Replicator
from acode_dagster.routing import BACKUP, PRIMARY, Role
from acode_dagster.settings import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_SECRET_CACHE_S,
    DEFAULT_SSL_MODE,
    DEFAULT_SYNC_ERROR_MINUTES,
    DEFAULT_SYNC_WARN_MINUTES,
    SSL_MODES,
    AirbyteSettings,
    MySQLTLS,
    Settings,
)
from acode_dagster.source.credentials import shared_credentials
from acode_dagster.source.window import CHUNK_ROWS, READ_CONNECTIONS


class MySQLServerResource(dg.ConfigurableResource):
    """One ACODE MySQL server: from its URL, or the local pair's when no URL is configured."""

    role: str = Field(description="primary or backup")
    url: str | None = Field(default=None, description="mysql://user[:password]@host:port/db")
    password: str | None = Field(default=None, description="used when the URL has none")
    stack_home: str = Field(description="state folder of the local MariaDB pair")
    connect_timeout_s: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_S, description="ACODE_MYSQL_CONNECT_TIMEOUT_S"
    )
    read_timeout_s: float = Field(
        default=DEFAULT_READ_TIMEOUT_S, description="ACODE_MYSQL_READ_TIMEOUT_S"
    )
    secret_id: str | None = Field(
        default=None,
        description="ACODE_MYSQL_<ROLE>_SECRET_ID: Secrets Manager secret holding the login",
    )
    secret_cache_s: float = Field(
        default=DEFAULT_SECRET_CACHE_S, description="ACODE_SECRET_CACHE_S"
    )
    ssl_mode: str = Field(default=DEFAULT_SSL_MODE, description=f"one of {', '.join(SSL_MODES)}")
    ssl_ca: str = Field(default="", description="PEM file of the CA; empty: system trust store")
    ssl_mode_setting: str = Field(
        default="ACODE_MYSQL_SSL_MODE", description="the setting ssl_mode came from, for errors"
    )
    ssl_ca_setting: str = Field(
        default="ACODE_MYSQL_SSL_CA", description="the setting ssl_ca came from, for errors"
    )
    ssl_mode_chosen: bool = Field(
        default=False, description="whether a setting chose ssl_mode (else the local pair's own)"
    )

    def tls(self, local: MySQLTLS | None = None) -> MySQLTLS:
        """The configured TLS. For the local pair (``local``: its own, verify_identity with
        its throwaway CA) only a mode a setting chose replaces the pair's."""
        configured = MySQLTLS(
            self.ssl_mode,
            self.ssl_ca,
            self.ssl_mode_setting,
            self.ssl_ca_setting,
            self.ssl_mode_chosen,
        )
        if local is None:
            return configured
        if not configured.chosen:
            return replace(
                local, mode_setting=self.ssl_mode_setting, ca_setting=self.ssl_ca_setting
            )
        return replace(configured, ca=configured.ca or local.ca)

    def endpoint(self) -> MySQLEndpoint:
        if self.secret_id:
            parsed = self._from_secret(self.secret_id)
        elif self.url:
            setting = f"ACODE_MYSQL_{self.role.upper()}_URL"
            parsed = MySQLEndpoint.parse(self.url, password=self.password, setting=setting)
        else:
            from acode_dagster.localstack import LocalStack

            stack = LocalStack(Path(self.stack_home))
            if not (Path(self.stack_home) / "state.json").exists():
                raise ConfigError(
                    f"no ACODE_MYSQL_{self.role.upper()}_URL is set and the local MariaDB pair "
                    f"in {self.stack_home} was never started: run `acode stack start` (or set the "
                    "URL)"
                )
            parsed = stack.endpoint(self.role)
        local = not (self.secret_id or self.url)
        return replace(
            parsed,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            tls=self.tls(parsed.tls if local else None),
        )

    def _from_secret(self, secret_id: str) -> MySQLEndpoint:
        """The login from the secret, read again at connect time; where the server is from the
        URL when one is set, else from the secret (RDS writes host, port and dbname in it)."""
        role = self.role.upper()
        credentials = shared_credentials(
            secret_id,
            setting=f"ACODE_MYSQL_{role}_SECRET_ID",
            cache_s=self.secret_cache_s,
        )
        secret = credentials.get()
        if self.url:
            parsed = MySQLEndpoint.parse(
                self.url, setting=f"ACODE_MYSQL_{role}_URL", user=secret.username
            )
            return replace(
                parsed, user=secret.username or parsed.user, password=None, credentials=credentials
            )
        missing = [k for k in ("username", "host", "dbname") if not getattr(secret, k)]
        if missing:
            raise ConfigError(
                f"the secret {secret_id!r} (ACODE_MYSQL_{role}_SECRET_ID) has no "
                f"{', '.join(missing)}, and ACODE_MYSQL_{role}_URL is not set: add them to the "
                "secret, or set the URL (mysql://host:port/database; the login stays the secret's)"
            )
        assert secret.username and secret.host and secret.dbname
        return MySQLEndpoint(
            host=secret.host,
            port=secret.port or DEFAULT_PORT,
            user=secret.username,
            database=secret.dbname,
            credentials=credentials,
        )


class AcodeSourcesResource(dg.ConfigurableResource):
    """The primary ACODE server and its replica."""

    primary: MySQLServerResource
    backup: MySQLServerResource

    def endpoint(self, role: Role) -> MySQLEndpoint:
        return (self.primary if role == PRIMARY else self.backup).endpoint()


class BronzeResource(dg.ConfigurableResource):
    """The primary and backup bronze roots (a folder or s3://bucket[/prefix]), and how their
    writers share a partition."""

    primary_url: str
    backup_url: str
    lease_ttl_s: float = Field(default=DEFAULT_TTL_S, description="ACODE_LEASE_TTL_S")
    lease_wait_s: float = Field(default=DEFAULT_WAIT_S, description="ACODE_LEASE_WAIT_S")
    quarantine_retention_days: float = 30.0
    staging_max_age_h: float = 24.0

    def lease_policy(self) -> LeasePolicy:
        return LeasePolicy(ttl_s=self.lease_ttl_s, wait_s=self.lease_wait_s)

    def sweep_policy(self) -> SweepPolicy:
        return SweepPolicy(
            staging_max_age=timedelta(hours=self.staging_max_age_h),
            quarantine_retention=timedelta(days=self.quarantine_retention_days),
        )

    def roots(self) -> list[tuple[Role, str]]:
        """``(role, url)`` of each distinct root, primary first; one root named by both settings
        is listed once. URLs are redacted, in case one embeds a credential."""
        roots: list[tuple[Role, str]] = [(PRIMARY, redact(self.primary_url))]
        if self.backup_url != self.primary_url:
            roots.append((BACKUP, redact(self.backup_url)))
        return roots

    @property
    def mirrored(self) -> bool:
        """Whether there are two roots to keep as copies of each other."""
        return self.backup_url != self.primary_url

    def store(self, role: Role) -> BronzeStore:
        if role == PRIMARY:
            return open_store(self.primary_url, setting="ACODE_BRONZE_URL")
        return open_store(self.backup_url, setting="ACODE_BRONZE_BACKUP_URL")


class AirbyteRouteResource(dg.ConfigurableResource):
    """The Airbyte route: dagster-airbyte's workspace (its standard AIRBYTE_* variables), a
    staging prefix per bucket and, for each, the connections from the primary and the backup
    server landing there (the backup bucket's are optional: empty strings, no bucket
    failover)."""

    workspace: AirbyteWorkspace
    primary_connection_id: str
    backup_connection_id: str
    staging_url: str
    timeout_s: float = 3600.0
    poll_s: float = 10.0
    failure_window_s: float = 3600.0
    backup_staging_url: str = ""
    primary_to_backup_bucket_connection_id: str = ""
    backup_to_backup_bucket_connection_id: str = ""

    @property
    def backup_bucket_configured(self) -> bool:
        return bool(
            self.backup_staging_url
            and self.primary_to_backup_bucket_connection_id
            and self.backup_to_backup_bucket_connection_id
        )

    def landing(self, bucket: Role) -> Landing:
        """The staging prefix of ``bucket``; ConfigError naming the settings when the backup
        bucket has none."""
        if bucket == PRIMARY:
            return Landing(self.staging_url, STAGING_SETTING)
        if not self.backup_bucket_configured:
            raise no_backup_bucket()
        return Landing(self.backup_staging_url, BACKUP_STAGING_SETTING)

    def connections(self, *, request_timeout: int | None = None) -> AirbyteConnections:
        workspace = self.workspace
        if request_timeout is not None:
            # A probe must not sit in the client's retries: one attempt, bounded.
            workspace = AirbyteWorkspace(
                rest_api_base_url=workspace.rest_api_base_url,
                configuration_api_base_url=workspace.configuration_api_base_url,
                workspace_id=workspace.workspace_id,
                client_id=workspace.client_id,
                client_secret=workspace.client_secret,
                request_max_retries=0,
                request_timeout=request_timeout,
            )
        return AirbyteConnections(
            workspace=workspace,
            connection_ids={PRIMARY: self.primary_connection_id, BACKUP: self.backup_connection_id},
            secrets=tuple(s for s in (self.workspace.client_secret,) if s),
            backup_bucket_ids=(
                {
                    PRIMARY: self.primary_to_backup_bucket_connection_id,
                    BACKUP: self.backup_to_backup_bucket_connection_id,
                }
                if self.backup_bucket_configured
                else {}
            ),
        )

    def probe(self, settings: ProbeSettings) -> dict[str, ProbeResult]:
        """``airbyte_<server>`` (source part) and ``staging_<bucket>`` (bucket part) probes."""
        connections = self.connections(request_timeout=max(1, int(settings.timeout_s)))
        landings: dict[Role, Landing | None] = {
            PRIMARY: Landing(self.staging_url, STAGING_SETTING),
            BACKUP: (
                Landing(self.backup_staging_url, BACKUP_STAGING_SETTING)
                if self.backup_bucket_configured
                else None
            ),
        }
        return probe_both(connections, settings, timedelta(seconds=self.failure_window_s), landings)


class ReplicatorResource(dg.ConfigurableResource):
    """Which replicator moves a partition, and its tuning."""

    kind: str = "embedded"
    batch_rows: int = BATCH_ROWS
    chunk_rows: int = Field(
        default=CHUNK_ROWS,
        description="rows per query of a window (the reader's read-ahead bound); 0: one query",
    )
    read_connections: int = Field(
        default=READ_CONNECTIONS,
        description="slices of a day the embedded replicator reads at once, a connection each",
    )
    row_group_rows: int = ROW_GROUP_ROWS
    max_file_mb: float = 512
    retries: int = Field(default=4, description="retries of a sync that lost its server")
    retry_base_s: float = Field(default=30.0, description="first wait; it doubles each retry")
    airbyte: AirbyteRouteResource | None = None
    # The sync-duration SLA, to record each sync's stage in its metadata (the alert sensor
    # gets the same settings through AlertingResource).
    sync_warn_minutes: float = Field(default=DEFAULT_SYNC_WARN_MINUTES, gt=0)
    sync_error_minutes: float = Field(default=DEFAULT_SYNC_ERROR_MINUTES, gt=0)

    def sla_thresholds(self) -> SlaThresholds:
        return SlaThresholds(self.sync_warn_minutes, self.sync_error_minutes)

    def build(
        self, log: Callable[[str], None], role: Role = PRIMARY, bucket: Role = PRIMARY
    ) -> Replicator:
        """The replicator for a sync on route (source ``role``, ``bucket``): in airbyte mode the
        connection reading ``role`` into that bucket's staging."""
        max_file_bytes = int(self.max_file_mb * 1024 * 1024)
        if self.kind == "airbyte":
            if self.airbyte is None:
                raise ConfigError(
                    "ACODE_REPLICATOR=airbyte but the Airbyte route is not configured"
                )
            return AirbyteReplicator(
                connections=self.airbyte.connections(),
                role=role,
                bucket=bucket,
                landing=self.airbyte.landing(bucket),
                timeout_s=self.airbyte.timeout_s,
                poll_s=self.airbyte.poll_s,
                batch_rows=self.batch_rows,
                row_group_rows=self.row_group_rows,
                max_file_bytes=max_file_bytes,
                log=log,
            )
        return EmbeddedReplicator(
            batch_rows=self.batch_rows,
            chunk_rows=self.chunk_rows,
            connections=self.read_connections,
            row_group_rows=self.row_group_rows,
            max_file_bytes=max_file_bytes,
            log=log,
        )

    def probe(self, settings: ProbeSettings) -> dict[str, ProbeResult]:
        """Probes of what this replicator depends on beyond MySQL and the buckets."""
        return self.airbyte.probe(settings) if self.airbyte is not None else {}


def _secret(name: str, is_set: bool) -> dg.EnvVar | None:
    # An EnvVar of an unset variable fails at run start, so only name the ones that are set.
    return dg.EnvVar(name) if is_set else None


def build_airbyte(airbyte: AirbyteSettings) -> AirbyteRouteResource:
    secret = airbyte.credentials_set
    return AirbyteRouteResource(
        workspace=AirbyteWorkspace(
            rest_api_base_url=airbyte.rest_api_base_url,
            configuration_api_base_url=airbyte.configuration_api_base_url,
            workspace_id=airbyte.workspace_id,
            client_id=_secret("AIRBYTE_CLIENT_ID", secret),
            client_secret=_secret("AIRBYTE_CLIENT_SECRET", secret),
        ),
        primary_connection_id=airbyte.primary_connection_id,
        backup_connection_id=airbyte.backup_connection_id,
        staging_url=airbyte.staging_url,
        timeout_s=airbyte.timeout_s,
        poll_s=airbyte.poll_s,
        failure_window_s=airbyte.failure_window_s,
        backup_staging_url=airbyte.backup_staging_url,
        primary_to_backup_bucket_connection_id=airbyte.primary_to_backup_bucket_connection_id,
        backup_to_backup_bucket_connection_id=airbyte.backup_to_backup_bucket_connection_id,
    )


def _tls_fields(tls: MySQLTLS) -> dict[str, Any]:
    return {
        "ssl_mode": tls.mode,
        "ssl_ca": tls.ca,
        "ssl_mode_setting": tls.mode_setting,
        "ssl_ca_setting": tls.ca_setting,
        "ssl_mode_chosen": tls.chosen,
    }


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    stack_home = str(settings.stack_home)
    return {
        "acode_sources": AcodeSourcesResource(
            primary=MySQLServerResource(
                role="primary",
                url=_secret("ACODE_MYSQL_PRIMARY_URL", settings.primary_url_set),
                password=_secret("ACODE_PASS", settings.primary_password_set),
                stack_home=stack_home,
                connect_timeout_s=settings.mysql_connect_timeout_s,
                read_timeout_s=settings.mysql_read_timeout_s,
                secret_id=settings.primary_secret_id or None,
                secret_cache_s=settings.secret_cache_s,
                **_tls_fields(settings.primary_tls),
            ),
            backup=MySQLServerResource(
                role="backup",
                url=_secret("ACODE_MYSQL_BACKUP_URL", settings.backup_url_set),
                password=_secret("ACODE_BACKUP_PASS", settings.backup_password_set),
                stack_home=stack_home,
                connect_timeout_s=settings.mysql_connect_timeout_s,
                read_timeout_s=settings.mysql_read_timeout_s,
                secret_id=settings.backup_secret_id or None,
                secret_cache_s=settings.secret_cache_s,
                **_tls_fields(settings.backup_tls),
            ),
        ),
        "bronze": BronzeResource(
            primary_url=settings.bronze_url,
            backup_url=settings.bronze_backup_url,
            lease_ttl_s=settings.lease_ttl_s,
            lease_wait_s=settings.lease_wait_s,
            quarantine_retention_days=settings.quarantine_retention_days,
            staging_max_age_h=settings.staging_max_age_h,
        ),
        "replicator": ReplicatorResource(
            kind=settings.replicator,
            max_file_mb=settings.max_file_mb,
            retries=settings.retries,
            retry_base_s=settings.retry_base_s,
            read_connections=settings.read_connections,
            airbyte=build_airbyte(settings.airbyte) if settings.airbyte else None,
            sync_warn_minutes=settings.sync_warn_minutes,
            sync_error_minutes=settings.sync_error_minutes,
        ),
        "redundancy": RedundancyResource(
            failover_after=settings.failover_after,
            failback_after=settings.failback_after,
            failback_dwell_s=settings.failback_dwell_s,
            probe_timeout_s=settings.probe_timeout_s,
            probe_budget_s=settings.probe_budget_s,
            rpo_s=settings.rpo_s,
            lag_warn_s=settings.lag_warn_s,
            catchup_days=settings.catchup_days,
            replica_check_days=settings.replica_check_days,
            replica_check_wait_s=settings.replica_check_wait_s,
        ),
        "alerting": AlertingResource(
            slack_token=_secret("SLACK_BOT_TOKEN", settings.slack_token_set),
            slack_channel=settings.slack_channel,
            slack_api_url=settings.slack_api_url,
            pagerduty_routing_key=_secret("PAGERDUTY_ROUTING_KEY", settings.pagerduty_key_set),
            pagerduty_url=settings.pagerduty_url,
            ui_url=settings.ui_url,
            give_up_h=settings.alert_give_up_h,
            sync_warn_minutes=settings.sync_warn_minutes,
            sync_error_minutes=settings.sync_error_minutes,
            metrics=MetricsConfig.of(settings.metrics),
        ),
        "metrics": MetricsResource.of(settings.metrics),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(Settings.from_env()))
