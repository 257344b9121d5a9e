"""Metrics out: what the platform measures, sent to DogStatsD and/or CloudWatch.

:data:`CATALOGUE` is the single source of truth: every metric the platform emits, with its kind,
unit, the tags it carries and what it means. :class:`Metrics` refuses a name the catalogue does
not hold, or a tag its entry does not name (a programming error; the tests run every emitter
strictly), and the monitors in ``deploy/monitors/`` are checked against it by the tests.

Sinks
-----
* **DogStatsD** (``ACODE_STATSD_ADDRESS=host:port``, the Datadog agent): UDP datagrams of
  ``name:value|type|#tag:value,...`` lines, packed up to :data:`MAX_DATAGRAM` bytes, from one
  unconnected, non-blocking socket per process. UDP never waits for the agent: an agent that is
  gone costs nothing, a full socket buffer drops the datagram.
* **CloudWatch** (``ACODE_CLOUDWATCH_NAMESPACE``): ``PutMetricData`` in batches of at most 1000
  datums, each tag a dimension (at most 30), through a boto3 client with short timeouts and one
  retry, so an endpoint that is down costs a bounded few seconds per flush.

Emitting never raises and never fails what emits it (a sync, a sensor tick): a sink's error is
counted and told once per flush through the caller's ``warn``, not once per metric. With no sink
configured, :class:`Metrics` is a no-op that does no work at all.

Tag values are lower-cased and every character Datadog does not keep in a tag becomes ``_``, in
both sinks, so a monitor's filter (``severity:error``) and a CloudWatch dimension agree.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from acode_dagster.errors import ConfigError, redact

if TYPE_CHECKING:
    from acode_dagster.probes import ProbeResult
    from acode_dagster.quality import Verdict
    from acode_dagster.replicator import SyncResult

Kind = Literal["gauge", "count", "distribution"]
KINDS: tuple[Kind, ...] = ("gauge", "count", "distribution")
_STATSD_TYPE: Mapping[Kind, str] = {"gauge": "g", "count": "c", "distribution": "d"}

MAX_DATAGRAM = 1432
"""Bytes per DogStatsD datagram: what fits an Ethernet MTU, as Datadog's own clients pack."""
CLOUDWATCH_BATCH = 1000
"""Datums per PutMetricData call, CloudWatch's limit."""
CLOUDWATCH_DIMENSIONS = 30
"""Dimensions per datum, CloudWatch's limit."""
CLOUDWATCH_CONNECT_TIMEOUT_S = 1.0
CLOUDWATCH_READ_TIMEOUT_S = 2.0
CLOUDWATCH_ATTEMPTS = 2
"""One try and one retry: a flush to an endpoint that is gone costs at most about
``ATTEMPTS * (CONNECT + READ)`` seconds."""

_log = logging.getLogger(__name__)

# ---------------------------------------------------------------------- the catalogue

TABLE, PARTITION, SIDE, BUCKET, CHECK, SEVERITY = (
    "table",
    "partition",
    "side",
    "bucket",
    "check",
    "severity",
)
_SYNC_TAGS = (TABLE, PARTITION, SIDE, BUCKET, "replicator", "outcome")
_PROBE_TAGS = ("target", "kind", SIDE)


@dataclass(frozen=True)
class Metric:
    """One metric the platform emits."""

    name: str
    kind: Kind
    unit: str
    """CloudWatch's unit name (``Seconds``, ``Count``, ``Bytes``, ``None``, ...)."""
    tags: tuple[str, ...]
    """The tags it may carry (besides the common ACODE_METRICS_TAGS)."""
    description: str


def _catalogue(*metrics: Metric) -> Mapping[str, Metric]:
    by_name: dict[str, Metric] = {}
    for metric in metrics:
        if metric.name in by_name:
            raise ValueError(f"metric {metric.name} is catalogued twice")
        by_name[metric.name] = metric
    return by_name


CATALOGUE: Mapping[str, Metric] = _catalogue(
    Metric(
        "acode.sync.seconds",
        "gauge",
        "Seconds",
        _SYNC_TAGS,
        "how long the sync of a partition took (read, write, audit, publish)",
    ),
    Metric("acode.sync.rows", "gauge", "Count", _SYNC_TAGS, "rows in the partition's version"),
    Metric(
        "acode.sync.bytes",
        "gauge",
        "Bytes",
        _SYNC_TAGS,
        "bytes of the partition's Parquet files in the bucket",
    ),
    Metric(
        "acode.sync.files",
        "gauge",
        "Count",
        _SYNC_TAGS,
        "Parquet files of the partition in the bucket",
    ),
    Metric(
        "acode.sync.rows_per_second",
        "gauge",
        "Count/Second",
        _SYNC_TAGS,
        "rows synced per second (throughput)",
    ),
    Metric(
        "acode.sync.value",
        "gauge",
        "None",
        _SYNC_TAGS,
        "the partition's money sum (ACODE_Val_Total for the fiscal lines), when known",
    ),
    Metric(
        "acode.sync.completed",
        "count",
        "Count",
        _SYNC_TAGS,
        "one per finished sync; outcome published or quarantined",
    ),
    Metric(
        "acode.sync.running_minutes",
        "gauge",
        "None",
        (TABLE, PARTITION, "job"),
        "minutes a bronze run still running has been going (the sync-duration SLA)",
    ),
    Metric(
        "acode.check.outcome",
        "gauge",
        "None",
        (TABLE, PARTITION, CHECK, SEVERITY),
        "1 when the check passed, 0 when it failed; severity is what a failure is (error, warn)",
    ),
    Metric(
        "acode.freshness.age_hours",
        "gauge",
        "None",
        (TABLE,),
        "hours since the table's newest good partition landed",
    ),
    Metric(
        "acode.probe.healthy",
        "gauge",
        "None",
        _PROBE_TAGS,
        "1 when the health probe of a target (mysql, bucket, airbyte, staging) passed, else 0",
    ),
    Metric(
        "acode.probe.latency_ms",
        "gauge",
        "Milliseconds",
        _PROBE_TAGS,
        "how long the health probe of a target took",
    ),
    Metric(
        "acode.replica.lag_seconds",
        "gauge",
        "Seconds",
        (SIDE,),
        "seconds the backup MySQL server is behind the primary (Seconds_Behind_Master)",
    ),
    Metric(
        "acode.route.source_is_backup",
        "gauge",
        "None",
        (),
        "1 while syncs read the backup MySQL server",
    ),
    Metric(
        "acode.route.bucket_is_backup",
        "gauge",
        "None",
        (),
        "1 while syncs write the backup bucket",
    ),
    Metric(
        "acode.route.failover",
        "count",
        "Count",
        ("part", "kind", SIDE),
        "one per route change of a part (source, bucket); kind failover, failback or pinned, "
        "side the role it moved to",
    ),
    Metric(
        "acode.alert.sent",
        "count",
        "Count",
        (SEVERITY, "channel", "action"),
        "one per notification a service took (slack, pagerduty); action trigger or resolve",
    ),
    Metric(
        "acode.alert.pending",
        "gauge",
        "Count",
        (),
        "alerts not yet delivered (a service down keeps them pending)",
    ),
    Metric(
        "acode.alert.given_up",
        "count",
        "Count",
        ("channel",),
        "alerts dropped undelivered after ACODE_ALERT_GIVE_UP_H",
    ),
)


class UnknownMetric(ValueError):
    """A name the catalogue does not hold, or a tag its entry does not name: a bug."""


# ---------------------------------------------------------------------- settings


_TAG_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]{0,199}")
_NAMESPACE = re.compile(r"[A-Za-z0-9.\-_/#:]{1,255}")


@dataclass(frozen=True)
class MetricsSettings:
    """Where metrics go; both empty: nowhere."""

    statsd_address: str = ""
    """``host:port`` of the DogStatsD agent (``ACODE_STATSD_ADDRESS``)."""
    cloudwatch_namespace: str = ""
    """``ACODE_CLOUDWATCH_NAMESPACE``."""
    cloudwatch_endpoint_url: str = ""
    """``ACODE_CLOUDWATCH_ENDPOINT_URL``; empty: boto3's own (AWS_ENDPOINT_URL_CLOUDWATCH,
    AWS_ENDPOINT_URL, or AWS)."""
    cloudwatch_region: str = ""
    """From AWS_REGION or AWS_DEFAULT_REGION; empty: boto3's own resolution."""
    tags: tuple[str, ...] = ()
    """``ACODE_METRICS_TAGS``: ``key:value`` tags added to every metric."""

    @property
    def enabled(self) -> bool:
        return bool(self.statsd_address or self.cloudwatch_namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MetricsSettings:
        address = (env.get("ACODE_STATSD_ADDRESS") or "").strip()
        if address:
            parse_address(address, "ACODE_STATSD_ADDRESS")
        namespace = (env.get("ACODE_CLOUDWATCH_NAMESPACE") or "").strip()
        if namespace and (
            not _NAMESPACE.fullmatch(namespace) or namespace.lower().startswith("aws/")
        ):
            raise ConfigError(
                f"ACODE_CLOUDWATCH_NAMESPACE={namespace!r} is not a CloudWatch namespace: up to "
                "255 letters, digits and .-_/#: not starting with AWS/ (reserved for AWS), "
                "e.g. ACODE/Dagster; or unset it to send nothing to CloudWatch"
            )
        endpoint = (env.get("ACODE_CLOUDWATCH_ENDPOINT_URL") or "").strip()
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"ACODE_CLOUDWATCH_ENDPOINT_URL={redact(endpoint)!r} is not an http(s) URL, "
                "e.g. https://monitoring.us-east-1.amazonaws.com; unset it to use AWS's"
            )
        region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip()
        return cls(
            statsd_address=address,
            cloudwatch_namespace=namespace,
            cloudwatch_endpoint_url=endpoint,
            cloudwatch_region=region,
            tags=parse_tags(env.get("ACODE_METRICS_TAGS") or "", "ACODE_METRICS_TAGS"),
        )


def parse_address(text: str, setting: str) -> tuple[str, int]:
    """``host:port`` (or ``[ipv6]:port``) as host and port; ConfigError naming ``setting``."""
    fix = (
        f"{setting}={text!r} is not host:port; set it to the Datadog agent's DogStatsD "
        "address, e.g. 127.0.0.1:8125 (or [::1]:8125), or unset it to send nothing to Datadog"
    )
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9.\-_]+):(\d{1,5})", text)
    if not match:
        raise ConfigError(fix)
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ConfigError(fix)
    return host, port


def parse_tags(text: str, setting: str) -> tuple[str, ...]:
    """``env:prod,service:acode-dagster`` as ``("env:prod", "service:acode-dagster")``."""
    tags = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, _, value = item.partition(":")
        if not _TAG_KEY.fullmatch(key) or key in _ALL_TAG_NAMES:
            raise ConfigError(
                f"{setting}: {item!r} is not a key:value tag of its own (the key starts with a "
                "letter; letters, digits and _.-/ follow; not one of the platform's tags "
                f"{', '.join(sorted(_ALL_TAG_NAMES))}); e.g. env:prod,service:acode-dagster"
            )
        tags.append(f"{key}:{sanitize(value)}" if value else key)
    return tuple(tags)


_ALL_TAG_NAMES = frozenset(tag for metric in CATALOGUE.values() for tag in metric.tags)


# ---------------------------------------------------------------------- wire formats


_TAG_VALUE_DROP = re.compile(r"[^a-z0-9_\-:./]")


def sanitize(value: object) -> str:
    """A tag value as Datadog keeps it: lower case, ``_`` for anything but letters, digits and
    ``_-:./`` (so never a ``,``, ``|`` or ``#`` that would break a line), at most 200 chars."""
    return _TAG_VALUE_DROP.sub("_", str(value).lower())[:200] or "none"


@dataclass(frozen=True)
class Point:
    """One measurement: a catalogued metric, its value, its tags (sanitized, in order)."""

    metric: Metric
    value: float
    tags: tuple[tuple[str, str], ...]
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def statsd_line(point: Point, common: Sequence[str] = ()) -> str:
    """``name:value|type|#tag:value,...`` as the DogStatsD protocol has it."""
    tags = [*common, *(f"{key}:{value}" for key, value in point.tags)]
    line = f"{point.metric.name}:{_number(point.value)}|{_STATSD_TYPE[point.metric.kind]}"
    return f"{line}|#{','.join(tags)}" if tags else line


def pack(lines: Iterable[str], limit: int = MAX_DATAGRAM) -> list[bytes]:
    """Lines joined by newlines into datagrams of at most ``limit`` bytes; a longer line goes
    alone (the agent reads what arrives)."""
    datagrams: list[bytes] = []
    current = b""
    for line in lines:
        data = line.encode()
        if current and len(current) + 1 + len(data) > limit:
            datagrams.append(current)
            current = b""
        current = current + b"\n" + data if current else data
    if current:
        datagrams.append(current)
    return datagrams


def cloudwatch_datum(point: Point, common: Sequence[str] = ()) -> dict[str, Any]:
    dimensions = [
        {"Name": key, "Value": value or "none"}
        for key, value in (
            *(tuple(tag.split(":", 1)) if ":" in tag else (tag, "true") for tag in common),
            *point.tags,
        )
    ]
    return {
        "MetricName": point.metric.name,
        "Dimensions": dimensions[:CLOUDWATCH_DIMENSIONS],
        "Timestamp": point.at,
        "Value": float(point.value),
        "Unit": point.metric.unit,
    }


# ---------------------------------------------------------------------- sinks


class Sink(Protocol):
    name: str
    errors: int
    """Points not delivered, in this process so far."""

    def send(self, points: Sequence[Point], common: Sequence[str]) -> str | None:
        """Send; never raise: the error, said for a person, or None."""


class StatsdSink:
    """DogStatsD over UDP: one unconnected, non-blocking socket, opened on first use."""

    name = "dogstatsd"

    def __init__(self, address: str, max_datagram: int = MAX_DATAGRAM) -> None:
        self.host, self.port = parse_address(address, "ACODE_STATSD_ADDRESS")
        self.max_datagram = max_datagram
        self.errors = 0
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._target: tuple[Any, ...] | None = None

    def _open(self) -> tuple[socket.socket, tuple[Any, ...]]:
        with self._lock:
            if self._socket is None or self._target is None:
                # Resolved once and kept; a failed resolution is tried again next flush.
                family, kind, proto, _, target = socket.getaddrinfo(
                    self.host, self.port, type=socket.SOCK_DGRAM
                )[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                self._socket, self._target = sock, target
            return self._socket, self._target

    def send(self, points: Sequence[Point], common: Sequence[str]) -> str | None:
        datagrams = pack((statsd_line(p, common) for p in points), self.max_datagram)
        failed: OSError | None = None
        try:
            sock, target = self._open()
        except OSError as exc:
            self.errors += len(points)
            return f"DogStatsD at {self.host}:{self.port}: {exc}"
        for datagram in datagrams:
            try:
                sock.sendto(datagram, target)
            except OSError as exc:  # a full buffer, an unreachable network, ...
                self.errors += datagram.count(b"\n") + 1
                failed = exc
        if failed is not None:
            return f"DogStatsD at {self.host}:{self.port}: {failed}"
        return None

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
            self._socket = self._target = None


class CloudWatchSink:
    """CloudWatch ``PutMetricData`` through boto3, with short timeouts and one retry."""

    name = "cloudwatch"

    def __init__(self, namespace: str, endpoint_url: str = "", region: str = "") -> None:
        self.namespace = namespace
        self.endpoint_url = endpoint_url
        self.region = region
        self.errors = 0
        self._lock = threading.Lock()
        self._client: Any = None

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=CLOUDWATCH_CONNECT_TIMEOUT_S,
                    read_timeout=CLOUDWATCH_READ_TIMEOUT_S,
                    retries={"total_max_attempts": CLOUDWATCH_ATTEMPTS, "mode": "standard"},
                )
                self._client = boto3.session.Session().client(
                    "cloudwatch",
                    config=config,
                    endpoint_url=self.endpoint_url or None,
                    region_name=self.region or None,
                )
            return self._client

    def send(self, points: Sequence[Point], common: Sequence[str]) -> str | None:
        datums = [cloudwatch_datum(p, common) for p in points]
        for start in range(0, len(datums), CLOUDWATCH_BATCH):
            batch = datums[start : start + CLOUDWATCH_BATCH]
            try:
                self._get_client().put_metric_data(Namespace=self.namespace, MetricData=batch)
            except Exception as exc:  # botocore's errors have no common base; none may escape
                self.errors += len(datums) - start
                where = self.endpoint_url or "AWS"
                return redact(f"CloudWatch ({where}): {type(exc).__name__}: {exc}")
        return None


# ---------------------------------------------------------------------- the facade


class Metrics:
    """What the platform's code calls: catalogued metrics, buffered, flushed to every sink.

    ``warn`` (default: this module's logger) gets one line per sink per flush that failed.
    ``strict`` (tests) lets a programming error (an uncatalogued name or tag) raise; otherwise
    nothing here ever raises.
    """

    def __init__(
        self,
        sinks: Sequence[Sink] = (),
        common_tags: Sequence[str] = (),
        *,
        warn: Callable[[str], None] | None = None,
        strict: bool = False,
    ) -> None:
        self.sinks = tuple(sinks)
        self.common_tags = tuple(common_tags)
        self.warn = warn or _log.warning
        self.strict = strict
        self._buffer: list[Point] = []

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def emit(self, name: str, value: float, **tags: object) -> None:
        """Buffer one point (sent by :meth:`flush`). None-valued tags are left out; a
        non-finite value is dropped (neither sink takes one)."""
        if not (self.sinks or self.strict):
            return
        with self._guard(f"metric {name}"):
            metric = CATALOGUE.get(name)
            if metric is None:
                raise UnknownMetric(f"metric {name!r} is not in the catalogue")
            unknown = set(tags) - set(metric.tags)
            if unknown:
                raise UnknownMetric(
                    f"metric {name} carries no tag {', '.join(sorted(unknown))}; its tags are "
                    f"{', '.join(metric.tags) or 'none'}"
                )
            number = float(value)
            if not math.isfinite(number):
                return
            self._buffer.append(
                Point(
                    metric,
                    number,
                    tuple((k, sanitize(v)) for k, v in tags.items() if v is not None),
                )
            )

    def flush(self) -> None:
        points, self._buffer = self._buffer, []
        if not points:
            return
        for sink in self.sinks:
            try:
                error = sink.send(points, self.common_tags)
            except Exception as exc:  # a sink's bug must not fail a sync either
                error = f"{sink.name}: {type(exc).__name__}: {exc}"
            if error is not None:
                self._say(
                    f"metrics not sent ({len(points)} point(s)): {error}; "
                    f"{sink.errors} point(s) not delivered by {sink.name} in this process"
                )

    @property
    def pending(self) -> Sequence[Point]:
        """Points buffered and not yet flushed."""
        return tuple(self._buffer)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            if self.strict:
                raise
            self._say(f"{what}: not emitted ({type(exc).__name__}: {exc})")

    def _say(self, line: str) -> None:
        try:
            self.warn(line)
        except Exception:  # a closed log must not fail the caller
            _log.warning(line)

    # ------------------------------------------------------------------ what the platform emits

    def sync(self, result: SyncResult, *, side: str, bucket: str, replicator: str) -> None:
        """A finished sync of one partition (published or quarantined), and its checks."""
        if not (self.sinks or self.strict):
            return
        with self._guard("sync metrics"):
            tags = {
                TABLE: result.table,
                PARTITION: result.partition,
                SIDE: side,
                BUCKET: bucket,
                "replicator": replicator,
                "outcome": "published" if result.published else "quarantined",
            }
            self.emit("acode.sync.seconds", result.seconds, **tags)
            self.emit("acode.sync.rows", result.rows, **tags)
            self.emit("acode.sync.bytes", result.bytes, **tags)
            self.emit("acode.sync.files", result.files, **tags)
            self.emit("acode.sync.rows_per_second", result.rows_per_second, **tags)
            value = business_value(result)
            if value is not None:
                self.emit("acode.sync.value", value, **tags)
            self.emit("acode.sync.completed", 1, **tags)
            for verdict in result.verdicts:
                self.check(
                    result.table, result.partition, verdict.check, verdict.passed, verdict.severity
                )
        self.flush()

    def check(
        self, table: str, partition: str | None, check: str, passed: bool, severity: str
    ) -> None:
        """One check outcome (buffered: flushed with the caller's other points)."""
        self.emit(
            "acode.check.outcome",
            1 if passed else 0,
            table=table,
            partition=partition,
            check=check,
            severity=severity,
        )

    def checks(self, table: str, partition: str | None, verdicts: Iterable[Verdict]) -> None:
        if not (self.sinks or self.strict):
            return
        with self._guard("check metrics"):
            for verdict in verdicts:
                self.check(table, partition, verdict.check, verdict.passed, verdict.severity)
        self.flush()

    def freshness(self, ages: Mapping[str, float | None]) -> None:
        """Hours since each table's newest good partition landed (None: none has)."""
        if not (self.sinks or self.strict):
            return
        with self._guard("freshness metrics"):
            for table, age in ages.items():
                if age is not None:
                    self.emit("acode.freshness.age_hours", age, table=table)
        self.flush()

    def health(
        self,
        results: Mapping[str, ProbeResult],
        *,
        source: str,
        bucket: str,
        changes: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        """One health tick: every probe, the replica's lag, the route after the tick
        (``source``, ``bucket``: the roles) and its ``changes`` ``(part, kind, to_role)``."""
        if not (self.sinks or self.strict):
            return
        with self._guard("health metrics"):
            for target, result in results.items():
                kind, _, side = target.rpartition("_")
                tags = {"target": target, "kind": kind or target, SIDE: side}
                self.emit("acode.probe.healthy", 1 if result.healthy else 0, **tags)
                self.emit("acode.probe.latency_ms", result.latency_s * 1000, **tags)
                behind = result.details.get("seconds_behind")
                # -1: unknown (replication stopped or broken); the probe's health says so.
                if isinstance(behind, int | float) and behind >= 0:
                    self.emit("acode.replica.lag_seconds", behind, side=side)
            self.emit("acode.route.source_is_backup", 1 if source == "backup" else 0)
            self.emit("acode.route.bucket_is_backup", 1 if bucket == "backup" else 0)
            for part, kind, to_role in changes:
                self.emit("acode.route.failover", 1, part=part, kind=kind, side=to_role)
        self.flush()

    def alerts(
        self,
        sent: Iterable[tuple[str, str, str]],
        *,
        pending: int,
        given_up: Iterable[str] = (),
    ) -> None:
        """One alert tick: each notification a service took ``(severity, channel, action)``,
        the alerts still pending, the channel of each given up."""
        if not (self.sinks or self.strict):
            return
        with self._guard("alert metrics"):
            for severity, channel, action in sent:
                self.emit("acode.alert.sent", 1, severity=severity, channel=channel, action=action)
            self.emit("acode.alert.pending", pending)
            for channel in given_up:
                self.emit("acode.alert.given_up", 1, channel=channel)
        self.flush()

    def running(self, syncs: Iterable[tuple[str, str | None, str, float]]) -> None:
        """Bronze runs still going: ``(table, partition, job, minutes)`` each."""
        if not (self.sinks or self.strict):
            return
        with self._guard("running-sync metrics"):
            for table, partition, job, minutes in syncs:
                self.emit(
                    "acode.sync.running_minutes", minutes, table=table, partition=partition, job=job
                )
        self.flush()


def business_value(result: SyncResult) -> float | None:
    """The partition's money sum (its table's value column), when it has one."""
    figures = result.business
    value = figures.value if figures is not None else None
    return float(value) if value is not None else None


# ---------------------------------------------------------------------- per process


@functools.lru_cache(maxsize=16)
def sinks_for(settings: MetricsSettings) -> tuple[Sink, ...]:
    """The configured sinks, one set per process and configuration: one socket, one boto3
    client (a second of CPU to build), one error count."""
    sinks: list[Sink] = []
    if settings.statsd_address:
        sinks.append(StatsdSink(settings.statsd_address))
    if settings.cloudwatch_namespace:
        sinks.append(
            CloudWatchSink(
                settings.cloudwatch_namespace,
                settings.cloudwatch_endpoint_url,
                settings.cloudwatch_region,
            )
        )
    return tuple(sinks)


def metrics_for(settings: MetricsSettings, *, warn: Callable[[str], None] | None = None) -> Metrics:
    """A facade over the process's sinks for ``settings`` (a no-op when none is configured).
    Never raises: settings that slipped past validation (a run's own configuration) leave
    metrics off, with a warning."""
    try:
        sinks = sinks_for(settings)
    except Exception as exc:
        (warn or _log.warning)(f"metrics off: {type(exc).__name__}: {exc}")
        sinks = ()
    return Metrics(sinks, settings.tags, warn=warn)
