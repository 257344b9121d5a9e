"""Where metrics go, as Dagster configuration: :class:`MetricsResource` (the ``metrics`` resource
of the assets and the health and freshness sensors) and :class:`MetricsConfig` (the same fields,
nested in ``AlertingResource`` so that the alert sensor emits too while it keeps its one
resource)."""

from collections.abc import Callable
from typing import Self

import dagster as dg
from pydantic import Field

from acode_dagster.observability.metrics import Metrics, MetricsSettings, metrics_for


class MetricsConfig(dg.Config):
    """Where metrics go; all empty (the default): nowhere, at no cost."""

    statsd_address: str = Field(
        default="", description="ACODE_STATSD_ADDRESS: host:port of the DogStatsD agent"
    )
    cloudwatch_namespace: str = Field(default="", description="ACODE_CLOUDWATCH_NAMESPACE")
    cloudwatch_endpoint_url: str = Field(
        default="", description="ACODE_CLOUDWATCH_ENDPOINT_URL; empty: AWS's"
    )
    cloudwatch_region: str = Field(
        default="", description="AWS_REGION / AWS_DEFAULT_REGION; empty: boto3's own"
    )
    tags: list[str] = Field(
        default_factory=list, description="ACODE_METRICS_TAGS: key:value tags on every metric"
    )

    @classmethod
    def of(cls, settings: MetricsSettings) -> Self:
        return cls(
            statsd_address=settings.statsd_address,
            cloudwatch_namespace=settings.cloudwatch_namespace,
            cloudwatch_endpoint_url=settings.cloudwatch_endpoint_url,
            cloudwatch_region=settings.cloudwatch_region,
            tags=list(settings.tags),
        )

    def settings(self) -> MetricsSettings:
        return MetricsSettings(
            statsd_address=self.statsd_address,
            cloudwatch_namespace=self.cloudwatch_namespace,
            cloudwatch_endpoint_url=self.cloudwatch_endpoint_url,
            cloudwatch_region=self.cloudwatch_region,
            tags=tuple(self.tags),
        )

    def client(self, warn: Callable[[str], None] | None = None) -> Metrics:
        """The emitter (a no-op when nothing is configured); ``warn`` gets one line per flush
        whose sends failed. It never raises."""
        return metrics_for(self.settings(), warn=warn)


class MetricsResource(dg.ConfigurableResource, MetricsConfig):
    """Metrics out to DogStatsD and/or CloudWatch (acode_dagster.observability.metrics)."""
