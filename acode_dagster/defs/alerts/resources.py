"""Where alerts go: Slack through dagster-slack's resource, PagerDuty through its Events API."""

import dagster as dg
from dagster_slack import SlackResource
from pydantic import Field

from acode_dagster.alerts import Notifier, PagerDutyNotifier, SlackNotifier
from acode_dagster.defs.observability.resources import MetricsConfig
from acode_dagster.observability.sla import SlaThresholds
from acode_dagster.settings import (
    DEFAULT_ALERT_GIVE_UP_H,
    DEFAULT_PAGERDUTY_URL,
    DEFAULT_SLACK_API_URL,
    DEFAULT_SLACK_CHANNEL,
    DEFAULT_SYNC_ERROR_MINUTES,
    DEFAULT_SYNC_WARN_MINUTES,
    DEFAULT_UI_URL,
)


class AlertingResource(dg.ConfigurableResource):
    """The notification services; a service without its secret is left out (alerts to the log)."""

    slack_token: str | None = Field(default=None, description="SLACK_BOT_TOKEN")
    slack_channel: str = DEFAULT_SLACK_CHANNEL
    slack_api_url: str = DEFAULT_SLACK_API_URL
    pagerduty_routing_key: str | None = Field(default=None, description="PAGERDUTY_ROUTING_KEY")
    pagerduty_url: str = DEFAULT_PAGERDUTY_URL
    ui_url: str = DEFAULT_UI_URL
    give_up_h: float = Field(
        default=DEFAULT_ALERT_GIVE_UP_H,
        ge=0,
        description="ACODE_ALERT_GIVE_UP_H: hours after its first attempt an alert not "
        "delivered is given up (with a warning naming it)",
    )
    sync_warn_minutes: float = Field(
        default=DEFAULT_SYNC_WARN_MINUTES,
        gt=0,
        description="ACODE_SYNC_WARN_MINUTES: a bronze run running longer alerts WARN once",
    )
    sync_error_minutes: float = Field(
        default=DEFAULT_SYNC_ERROR_MINUTES,
        gt=0,
        description="ACODE_SYNC_ERROR_MINUTES: a bronze run running longer alerts ERROR and "
        "pages once",
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="where the alert sensor's metrics go (the metrics resource's settings)",
    )

    def notifiers(self) -> dict[str, Notifier]:
        found: dict[str, Notifier] = {}
        if self.slack_token:
            client = SlackResource(token=self.slack_token).get_client()
            client.base_url = self.slack_api_url
            # A tick must not hang on a slow service; the next tick retries.
            client.timeout = 10
            found["slack"] = SlackNotifier(client, self.slack_channel, secrets=self.secrets())
        if self.pagerduty_routing_key:
            found["pagerduty"] = PagerDutyNotifier(
                self.pagerduty_routing_key, base_url=self.pagerduty_url, secrets=self.secrets()
            )
        return found

    def sla_thresholds(self) -> SlaThresholds:
        return SlaThresholds(self.sync_warn_minutes, self.sync_error_minutes)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.slack_token, self.pagerduty_routing_key) if s)

    def destination(self, channel: str) -> str:
        """Where a channel's alerts go, for a person: ``slack #alerts``, ``pagerduty``."""
        return f"slack {self.slack_channel}" if channel == "slack" else channel

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    def asset_url(self, key: dg.AssetKey) -> str:
        return f"{self.ui_url.rstrip('/')}/assets/{'/'.join(key.path)}"
