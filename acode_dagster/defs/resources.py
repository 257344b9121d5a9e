"""The platform's resources, built from the environment in one place."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import dagster as dg
from pydantic import Field

from acode_dagster.bronze import BronzeStore, open_store
from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.redundancy.resources import RedundancyResource
from acode_dagster.errors import ConfigError
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.replicator import BATCH_ROWS, ROW_GROUP_ROWS, EmbeddedReplicator, Replicator
from acode_dagster.routing import PRIMARY, Role
from acode_dagster.settings import Settings


class MySQLServerResource(dg.ConfigurableResource):
    """One ACODE MySQL server: from its URL, or the local pair's when no URL is configured."""

    role: str = Field(description="primary or backup")
    url: str | None = Field(default=None, description="mysql://user[:password]@host:port/db")
    password: str | None = Field(default=None, description="used when the URL has none")
    stack_home: str = Field(description="state folder of the local MariaDB pair")
    connect_timeout_s: float = 5.0

    def endpoint(self) -> MySQLEndpoint:
        if self.url:
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
        return replace(parsed, connect_timeout_s=self.connect_timeout_s)


class AcodeSourcesResource(dg.ConfigurableResource):
    """The primary ACODE server and its replica."""

    primary: MySQLServerResource
    backup: MySQLServerResource

    def endpoint(self, role: Role) -> MySQLEndpoint:
        return (self.primary if role == PRIMARY else self.backup).endpoint()


class BronzeResource(dg.ConfigurableResource):
    """The primary and backup bronze roots (a folder or s3://bucket[/prefix])."""

    primary_url: str
    backup_url: str

    def store(self, role: Role) -> BronzeStore:
        if role == PRIMARY:
            return open_store(self.primary_url, setting="ACODE_BRONZE_URL")
        return open_store(self.backup_url, setting="ACODE_BRONZE_BACKUP_URL")


class ReplicatorResource(dg.ConfigurableResource):
    """Which replicator moves a partition, and its tuning."""

    kind: str = "embedded"
    batch_rows: int = BATCH_ROWS
    row_group_rows: int = ROW_GROUP_ROWS
    max_file_mb: float = 512
    retries: int = Field(default=4, description="retries of a sync that lost its server")
    retry_base_s: float = Field(default=30.0, description="first wait; it doubles each retry")

    def build(self, log: Callable[[str], None]) -> Replicator:
        return EmbeddedReplicator(
            batch_rows=self.batch_rows,
            row_group_rows=self.row_group_rows,
            max_file_bytes=int(self.max_file_mb * 1024 * 1024),
            log=log,
        )


def _secret(name: str, is_set: bool) -> dg.EnvVar | None:
    # An EnvVar of an unset variable fails at run start, so only name the ones that are set.
    return dg.EnvVar(name) if is_set else None


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    stack_home = str(settings.stack_home)
    return {
        "acode_sources": AcodeSourcesResource(
            primary=MySQLServerResource(
                role="primary",
                url=_secret("ACODE_MYSQL_PRIMARY_URL", settings.primary_url_set),
                password=_secret("ACODE_PASS", settings.primary_password_set),
                stack_home=stack_home,
            ),
            backup=MySQLServerResource(
                role="backup",
                url=_secret("ACODE_MYSQL_BACKUP_URL", settings.backup_url_set),
                password=_secret("ACODE_BACKUP_PASS", settings.backup_password_set),
                stack_home=stack_home,
            ),
        ),
        "bronze": BronzeResource(
            primary_url=settings.bronze_url, backup_url=settings.bronze_backup_url
        ),
        "replicator": ReplicatorResource(
            kind=settings.replicator,
            max_file_mb=settings.max_file_mb,
            retries=settings.retries,
            retry_base_s=settings.retry_base_s,
        ),
        "redundancy": RedundancyResource(
            failover_after=settings.failover_after,
            failback_after=settings.failback_after,
            failback_dwell_s=settings.failback_dwell_s,
            probe_timeout_s=settings.probe_timeout_s,
            rpo_s=settings.rpo_s,
            lag_warn_s=settings.lag_warn_s,
            catchup_days=settings.catchup_days,
        ),
        "alerting": AlertingResource(
            slack_token=_secret("SLACK_BOT_TOKEN", settings.slack_token_set),
            slack_channel=settings.slack_channel,
            slack_api_url=settings.slack_api_url,
            pagerduty_routing_key=_secret("PAGERDUTY_ROUTING_KEY", settings.pagerduty_key_set),
            pagerduty_url=settings.pagerduty_url,
            ui_url=settings.ui_url,
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(Settings.from_env()))
