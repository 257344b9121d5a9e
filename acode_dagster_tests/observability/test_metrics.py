"""Metrics out, without Dagster: the wire formats, the catalogue's guard, the sinks over real
sockets (a UDP listener; ports where nothing listens), and the settings."""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import botocore.session
import pytest
from botocore.model import StringShape
from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.bronze.store import Manifest, ManifestFile
from acode_dagster.errors import ConfigError
from acode_dagster.observability.business import BusinessFigures
from acode_dagster.observability.metrics import (
    CATALOGUE,
    CLOUDWATCH_ATTEMPTS,
    KINDS,
    MAX_DATAGRAM,
    CloudWatchSink,
    Metrics,
    MetricsSettings,
    Point,
    StatsdSink,
    UnknownMetric,
    cloudwatch_datum,
    metrics_for,
    pack,
    sanitize,
    sinks_for,
    statsd_line,
)
from acode_dagster.probes import ProbeResult
from acode_dagster.quality import Verdict
from acode_dagster.replicator import SyncResult
from acode_dagster_tests.support.metrics import Recorder
from acode_dagster_tests.support.s3 import free_port


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def receive(sock: socket.socket, lines: int, timeout: float = 10) -> list[bytes]:
    """Datagrams until they hold ``lines`` lines (polled, with a deadline)."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while sum(d.count(b"\n") + 1 for d in got) < lines:
        assert time.monotonic() < deadline, f"got {got!r}, expected {lines} lines"
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            continue
    return got


def sync_result(*, published: bool = True, business: BusinessFigures | None = None) -> SyncResult:
    manifest = Manifest(
        table="farmarcas_si_analitico_diario",
        partition="2026-07-10",
        rows=1000,
        files=(ManifestFile("file_001.parquet", 1000, 65536),),
        source="127.0.0.1:3306",
        replicator="embedded",
    )
    verdicts = (
        Verdict("null_share", True, "ERROR", "0 %", "< 5 %"),
        Verdict("volume", False, "WARN", "1000 rows", ">= 2000"),
    )
    return SyncResult(
        table=manifest.table,
        partition=manifest.partition,
        rows=manifest.rows,
        bytes=manifest.bytes,
        files=1,
        seconds=4.0,
        source=manifest.source,
        bronze_url="/tmp/bronze",
        manifest=manifest,
        published=published,
        verdicts=verdicts,
        business=business,
    )


# ---------------------------------------------------------------------- the catalogue


def test_every_catalogued_metric_is_well_formed() -> None:
    # CloudWatch's own list of units, from the service model botocore ships.
    shape = botocore.session.get_session().get_service_model("cloudwatch").shape_for("StandardUnit")
    assert isinstance(shape, StringShape)
    units = set(shape.enum)
    for name, metric in CATALOGUE.items():
        assert name == metric.name
        assert re.fullmatch(r"acode(\.[a-z_]+)+", name), name
        assert metric.kind in KINDS
        assert metric.unit in units, (name, metric.unit)
        assert len(metric.tags) <= 29 and len(set(metric.tags)) == len(metric.tags)
        assert metric.description


# ---------------------------------------------------------------------- wire formats


def test_a_statsd_line_is_name_value_type_and_tags() -> None:
    metrics = Metrics([recorder := Recorder()], strict=True)
    metrics.emit("acode.sync.seconds", 12.5, table="t", partition="2026-07-10", side="primary")
    metrics.emit("acode.alert.sent", 1, severity="critical", channel="pagerduty", action="trigger")
    metrics.emit("acode.route.source_is_backup", 0)
    metrics.flush()
    lines = [statsd_line(p, ("env:prod",)) for p in recorder.points]
    assert lines == [
        "acode.sync.seconds:12.5|g|#env:prod,table:t,partition:2026-07-10,side:primary",
        "acode.alert.sent:1|c|#env:prod,severity:critical,channel:pagerduty,action:trigger",
        "acode.route.source_is_backup:0|g|#env:prod",
    ]
    assert statsd_line(recorder.points[2]) == "acode.route.source_is_backup:0|g"


def test_tag_values_cannot_break_a_line() -> None:
    assert sanitize("ERROR") == "error"
    assert sanitize("a,b|c#d e\nf") == "a_b_c_d_e_f"
    assert sanitize("s3://bucket/prefix") == "s3://bucket/prefix"
    assert sanitize("") == "none"
    assert len(sanitize("x" * 500)) == 200


@given(st.lists(st.text(alphabet="abc.:|#,0123456789", min_size=1, max_size=600), max_size=60))
def test_packing_keeps_every_line_within_datagrams(lines: list[str]) -> None:
    datagrams = pack(lines, limit=MAX_DATAGRAM)
    assert [line for d in datagrams for line in d.decode().split("\n")] == lines
    for datagram in datagrams:
        assert len(datagram) <= MAX_DATAGRAM or b"\n" not in datagram
    # Packed, not one line a datagram: two neighbours share one whenever they fit.
    for first, second in itertools.pairwise(datagrams):
        assert len(first) + 1 + len(second.split(b"\n")[0]) > MAX_DATAGRAM


def test_a_cloudwatch_datum_has_the_tags_as_dimensions() -> None:
    at = datetime(2026, 7, 10, tzinfo=UTC)
    point = Point(CATALOGUE["acode.sync.bytes"], 65536, (("table", "t"), ("side", "backup")), at)
    assert cloudwatch_datum(point, ("env:prod", "canary")) == {
        "MetricName": "acode.sync.bytes",
        "Dimensions": [
            {"Name": "env", "Value": "prod"},
            {"Name": "canary", "Value": "true"},
            {"Name": "table", "Value": "t"},
            {"Name": "side", "Value": "backup"},
        ],
        "Timestamp": at,
        "Value": 65536.0,
        "Unit": "Bytes",
    }


# ---------------------------------------------------------------------- the facade


def test_an_uncatalogued_name_or_tag_is_a_programming_error() -> None:
    strict = Metrics([Recorder()], strict=True)
    with pytest.raises(UnknownMetric, match=r"acode\.sync\.secs"):
        strict.emit("acode.sync.secs", 1)
    with pytest.raises(UnknownMetric, match="no tag check"):
        strict.emit("acode.sync.rows", 1, check="volume")
    # Outside tests the same mistake is said and dropped: it never fails what emits it.
    said: list[str] = []
    lenient = Metrics([recorder := Recorder()], warn=said.append)
    lenient.emit("acode.sync.secs", 1)
    lenient.emit("acode.sync.rows", float("nan"), table="t")
    lenient.flush()
    assert recorder.points == [] and len(said) == 1 and "acode.sync.secs" in said[0]


def test_nothing_is_done_when_nothing_is_configured() -> None:
    metrics = metrics_for(MetricsSettings())
    assert not metrics.enabled and metrics.sinks == ()
    metrics.sync(sync_result(), side="primary", bucket="primary", replicator="embedded")
    metrics.emit("acode.sync.secs", 1)  # not even checked: no work at all
    assert metrics.pending == ()


def test_a_sync_emits_its_figures_and_its_checks() -> None:
    business = BusinessFigures(
        rows=1000,
        sums={"ACODE_Val_Total": Decimal("12345.67")},
        value_column="ACODE_Val_Total",
    )
    metrics = Metrics([recorder := Recorder()], strict=True)
    metrics.sync(
        sync_result(business=business), side="backup", bucket="primary", replicator="embedded"
    )
    sync_tags = {
        "table": "farmarcas_si_analitico_diario",
        "partition": "2026-07-10",
        "side": "backup",
        "bucket": "primary",
        "replicator": "embedded",
        "outcome": "published",
    }
    for name, value in (
        ("acode.sync.seconds", 4.0),
        ("acode.sync.rows", 1000),
        ("acode.sync.bytes", 65536),
        ("acode.sync.files", 1),
        ("acode.sync.rows_per_second", 250.0),
        ("acode.sync.value", 12345.67),
        ("acode.sync.completed", 1),
    ):
        assert recorder.values(name) == [value], name
        assert recorder.tagged(name) == [sync_tags], name
    assert recorder.tagged("acode.check.outcome") == [
        {**{k: sync_tags[k] for k in ("table", "partition")}, "check": c, "severity": s}
        for c, s in (("null_share", "error"), ("volume", "warn"))
    ]
    assert recorder.values("acode.check.outcome") == [1, 0]


def test_health_alert_freshness_and_running_figures() -> None:
    metrics = Metrics([recorder := Recorder()], strict=True)
    metrics.health(
        {
            "mysql_primary": ProbeResult("mysql_primary", False, 5.0, "refused"),
            "mysql_backup": ProbeResult(
                "mysql_backup", True, 0.012, "ok", details={"seconds_behind": 42}
            ),
            "bucket_backup": ProbeResult("bucket_backup", True, 0.002, "ok"),
        },
        source="backup",
        bucket="primary",
        changes=[("source", "failover", "backup")],
    )
    assert recorder.tagged("acode.probe.healthy") == [
        {"target": "mysql_primary", "kind": "mysql", "side": "primary"},
        {"target": "mysql_backup", "kind": "mysql", "side": "backup"},
        {"target": "bucket_backup", "kind": "bucket", "side": "backup"},
    ]
    assert recorder.values("acode.probe.healthy") == [0, 1, 1]
    assert recorder.values("acode.probe.latency_ms") == [5000.0, 12.0, 2.0]
    assert recorder.values("acode.replica.lag_seconds") == [42]
    assert recorder.values("acode.route.source_is_backup") == [1]
    assert recorder.values("acode.route.bucket_is_backup") == [0]
    assert recorder.tagged("acode.route.failover") == [
        {"part": "source", "kind": "failover", "side": "backup"}
    ]

    metrics.alerts([("critical", "pagerduty", "trigger")], pending=3, given_up=["slack"])
    metrics.freshness({"t": 26.5, "never_landed": None})
    metrics.running([("t", "2026-07-10", "bronze_acode_job", 181.5)])
    assert recorder.tagged("acode.alert.sent") == [
        {"severity": "critical", "channel": "pagerduty", "action": "trigger"}
    ]
    assert recorder.values("acode.alert.pending") == [3]
    assert recorder.tagged("acode.alert.given_up") == [{"channel": "slack"}]
    assert recorder.tagged("acode.freshness.age_hours") == [{"table": "t"}]
    assert recorder.values("acode.sync.running_minutes") == [181.5]


# ---------------------------------------------------------------------- sinks, for real


def test_dogstatsd_datagrams_reach_a_udp_listener_packed(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    metrics = Metrics([StatsdSink(f"127.0.0.1:{port}")], ("env:test",), strict=True)
    for n in range(100):
        metrics.emit("acode.probe.latency_ms", n, target=f"mysql_{n}", kind="mysql", side="x")
    metrics.flush()
    datagrams = receive(listener, 100)
    lines = [line.decode() for d in datagrams for line in d.split(b"\n")]
    assert lines[0] == "acode.probe.latency_ms:0|g|#env:test,target:mysql_0,kind:mysql,side:x"
    assert len(lines) == 100
    assert 1 < len(datagrams) < 100
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)


def test_a_sink_whose_endpoint_is_gone_costs_a_warning_per_flush_not_an_error() -> None:
    said: list[str] = []
    gone = free_port()  # nothing listens there
    unresolvable = StatsdSink("metrics-agent.invalid:8125")
    statsd = StatsdSink(f"127.0.0.1:{gone}")
    cloudwatch = CloudWatchSink("ACODE/Test", f"http://127.0.0.1:{gone}", "us-east-1")
    metrics = Metrics([unresolvable, statsd, cloudwatch], warn=said.append)
    for _ in range(2):
        for n in range(50):
            metrics.emit("acode.sync.rows", n, table="t")
        metrics.flush()
    # UDP to a closed port is fire-and-forget; the name that does not resolve and the HTTP
    # endpoint that refuses are each said once a flush, not once a metric.
    assert statsd.errors == 0
    assert unresolvable.errors == cloudwatch.errors == 100
    assert len(said) == 4
    assert all(("metrics-agent.invalid" in s) != ("CloudWatch" in s) for s in said)
    # Bounded: a dead endpoint is given short timeouts and a single retry.
    config = cloudwatch._get_client().meta.config
    assert config.connect_timeout <= 1 and config.read_timeout <= 2
    assert config.retries["total_max_attempts"] == CLOUDWATCH_ATTEMPTS == 2


def test_sinks_are_made_once_a_process_per_configuration() -> None:
    settings = MetricsSettings(statsd_address="127.0.0.1:8125", cloudwatch_namespace="ACODE/X")
    assert sinks_for(settings) is sinks_for(MetricsSettings(**vars(settings)))
    assert [s.name for s in sinks_for(settings)] == ["dogstatsd", "cloudwatch"]


# ---------------------------------------------------------------------- settings


def test_settings_from_the_environment() -> None:
    settings = MetricsSettings.from_env(
        {
            "ACODE_STATSD_ADDRESS": "[::1]:8125",
            "ACODE_CLOUDWATCH_NAMESPACE": "ACODE/Dagster",
            "ACODE_CLOUDWATCH_ENDPOINT_URL": "http://127.0.0.1:5000",
            "AWS_DEFAULT_REGION": "sa-east-1",
            "ACODE_METRICS_TAGS": "env:prod, service:Acode Dagster,canary",
        }
    )
    assert settings == MetricsSettings(
        "[::1]:8125",
        "ACODE/Dagster",
        "http://127.0.0.1:5000",
        "sa-east-1",
        ("env:prod", "service:acode_dagster", "canary"),
    )
    assert settings.enabled and not MetricsSettings.from_env({}).enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACODE_STATSD_ADDRESS", "localhost"),
        ("ACODE_STATSD_ADDRESS", "localhost:99999"),
        ("ACODE_STATSD_ADDRESS", "udp://localhost:8125"),
        ("ACODE_CLOUDWATCH_NAMESPACE", "AWS/EC2"),
        ("ACODE_CLOUDWATCH_NAMESPACE", "has spaces"),
        ("ACODE_CLOUDWATCH_ENDPOINT_URL", "monitoring.amazonaws.com"),
        ("ACODE_METRICS_TAGS", "env:prod,table:x"),
        ("ACODE_METRICS_TAGS", "1env:prod"),
    ],
)
def test_a_bad_setting_is_named_with_its_fix(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name) as raised:
        MetricsSettings.from_env({name: value})
    assert "e.g." in str(raised.value)


def test_settings_that_slipped_past_validation_leave_metrics_off_with_a_warning() -> None:
    said: list[str] = []
    metrics = metrics_for(MetricsSettings(statsd_address="no port"), warn=said.append)
    assert not metrics.enabled
    assert len(said) == 1 and "ACODE_STATSD_ADDRESS" in said[0]
