"""No silent hang: a MySQL server that dies, stalls or never answers ends the sync within its
timeouts, as a transient SourceError the run retries.

Real faults against a private MariaDB pair: the primary killed with SIGKILL mid-stream, a TCP
proxy that stops forwarding mid-stream while keeping both sockets open (the fault TCP itself
never notices), and a listener that accepts connections and says nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Generator, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError

from acode_dagster.bronze.store import LocalStore
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.loader import load_days
from acode_dagster.errors import SourceError
from acode_dagster.localstack import LocalStack
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.replicator import EmbeddedReplicator, stream_batches
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS
from acode_dagster_tests.support.source import platform_environ, source_window
from acode_dagster_tests.support.tcp_proxy import ProxyProcess, stalling_proxy

DAY = date(2026, 11, 3)
ROWS = 60_000
"""About 18 MB on the wire: a stream cut after 3 MB is well under way and far from its end."""
CUT_AFTER_BYTES = 3_000_000


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A pair of this module's own (a test kills its primary), with one day of ROWS rows."""
    stack = LocalStack(tmp_path_factory.mktemp("faults-pair"))
    try:
        stack.start()
        load_days(
            stack.endpoint("primary", admin=True),
            [DAY],
            rows={FISCAL_LINES.name: ROWS, NFE_COMPLEMENTS.name: 0, PRODUCTS.name: 200},
        )
        yield stack
    finally:
        stack.destroy()


@pytest.fixture
def primary(pair: LocalStack) -> Iterator[MySQLEndpoint]:
    """The primary, running; started again after a test that killed it."""
    pair.start_server("primary")
    yield pair.endpoint("primary")
    pair.start_server("primary")


@pytest.fixture
def proxy(primary: MySQLEndpoint) -> Iterator[ProxyProcess]:
    with stalling_proxy(primary.host, primary.port) as running:
        yield running


def through(endpoint: MySQLEndpoint, proxy: ProxyProcess) -> MySQLEndpoint:
    return replace(endpoint, host="127.0.0.1", port=proxy.port)


def bronze_rows(store: LocalStore) -> list[dict[str, Any]]:
    rows = store.read_partition(FISCAL_LINES, DAY).to_pylist()
    return sorted(rows, key=lambda r: r[FISCAL_LINES.key])


def test_the_reader_bounds_the_server_side_of_its_statement(primary: MySQLEndpoint) -> None:
    """The reader's options and statement prefix are accepted, and MariaDB applies the prefix
    (net_write_timeout = the read timeout) to the statement the reader runs."""
    endpoint = replace(primary, read_timeout_s=7.2)
    query = "SELECT @@net_write_timeout AS w, @@SESSION.net_write_timeout AS s"
    (batch,) = list(stream_batches(endpoint, query, 10))
    assert batch.to_pylist() == [{"w": 8, "s": 8}]
    url = endpoint.arrow_reader_url()
    assert "prefer_socket=false" in url and "tcp_keepalive_time_ms=3000" in url


def test_a_server_killed_mid_stream_is_a_transient_error_at_once(
    pair: LocalStack, primary: MySQLEndpoint, tmp_path: Path
) -> None:
    endpoint = replace(primary, read_timeout_s=10)
    killed: list[float] = []

    def kill_once_rows_flow(line: str) -> None:
        if " rows/s" in line and not killed:
            pair.kill("primary")  # SIGKILL, waited for
            killed.append(time.monotonic())

    replicator = EmbeddedReplicator(batch_rows=1000, progress_every_s=0, log=kill_once_rows_flow)
    store = LocalStore(tmp_path)
    with pytest.raises(SourceError) as caught:
        replicator.sync(FISCAL_LINES, DAY, endpoint, store)
    assert killed, "the stream never got going"
    ended = time.monotonic() - killed[0]
    assert caught.value.transient, caught.value
    assert "unreachable" in str(caught.value)
    assert ended < endpoint.read_timeout_s, f"took {ended:.1f} s after the kill"
    assert endpoint.password and endpoint.password not in str(caught.value)
    assert store.manifest(FISCAL_LINES, DAY) is None
    assert store.lease_records(FISCAL_LINES, DAY).read() is None


def test_a_stream_cut_mid_way_fails_within_the_read_timeout_and_the_retry_lands_the_day(
    pair: LocalStack,
    primary: MySQLEndpoint,
    proxy: ProxyProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real Dagster run through the proxy: the first attempt's stream stalls after 3 MB, the
    attempt fails within twice the read timeout as a transient error, the asset's retry reads
    again on a new connection and lands the day, equal to the source."""
    read_timeout = 2.0
    for name, value in platform_environ(pair, tmp_path / "home", tmp_path / "bronze").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "ACODE_MYSQL_PRIMARY_URL",
        f"mysql://{primary.user}@127.0.0.1:{proxy.port}/{primary.database}",
    )
    monkeypatch.setenv("ACODE_MYSQL_READ_TIMEOUT_S", f"{read_timeout:g}")
    resources = build_resources(Settings.from_env())
    asset = next(a for a in bronze_assets if bronze_key(FISCAL_LINES) in a.keys)
    proxy.stall_after(CUT_AFTER_BYTES)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            partition_key=DAY.isoformat(),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        events = instance.all_logs(result.run_id)
    assert result.success
    status = proxy.status()
    # The cut ones, still open: one per connection the reader had open (ACODE_READ_CONNECTIONS).
    assert 1 <= status.stalled <= 2 and status.connections > 2, status
    step = [e for e in events if e.dagster_event and e.dagster_event.step_key]
    started = next(e.timestamp for e in step if e.dagster_event_type == "STEP_START")
    retried = [e for e in step if e.dagster_event_type == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1
    # Preflight and connecting take well under a second; the stall at most twice the timeout.
    assert retried[0].timestamp - started < 2 * read_timeout + 3
    warnings = "\n".join(e.user_message for e in events)
    assert f"no byte from the server for {read_timeout:g} s" in warnings
    assert primary.password and primary.password not in warnings
    store = LocalStore(tmp_path / "bronze")
    assert bronze_rows(store) == source_window(primary, FISCAL_LINES, DAY)
    assert len(bronze_rows(store)) == ROWS


def test_a_stalled_stream_without_dagster_fails_in_time_and_a_second_sync_lands_it(
    primary: MySQLEndpoint, proxy: ProxyProcess, tmp_path: Path
) -> None:
    endpoint = replace(through(primary, proxy), read_timeout_s=1.5)
    store = LocalStore(tmp_path)
    proxy.stall_after(CUT_AFTER_BYTES)
    started = time.monotonic()
    with pytest.raises(SourceError, match="ACODE_MYSQL_READ_TIMEOUT_S") as caught:
        EmbeddedReplicator(batch_rows=1000).sync(FISCAL_LINES, DAY, endpoint, store)
    took = time.monotonic() - started
    assert caught.value.transient
    assert endpoint.read_timeout_s <= took < 2 * endpoint.read_timeout_s + 2, took
    assert store.manifest(FISCAL_LINES, DAY) is None
    assert store.lease_records(FISCAL_LINES, DAY).read() is None
    # The stalled connection stays stalled; a new one goes around it.
    result = EmbeddedReplicator().sync(FISCAL_LINES, DAY, endpoint, store)
    assert result.published and result.rows == ROWS
    assert bronze_rows(store) == source_window(primary, FISCAL_LINES, DAY)


def test_a_server_that_accepts_and_never_answers_fails_within_the_connect_timeout(
    tmp_path: Path,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        endpoint = MySQLEndpoint("127.0.0.1", port, "acode", "acode_farmarcas", "x", 1.0)
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            EmbeddedReplicator().sync(FISCAL_LINES, DAY, endpoint, LocalStore(tmp_path))
        took = time.monotonic() - started
    assert caught.value.transient and "unreachable" in str(caught.value)
    assert took < 3, took


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, DagsterExecutionInterruptedError])
def test_an_interrupt_mid_stream_goes_through_as_itself(
    primary: MySQLEndpoint, interrupt: type[BaseException]
) -> None:
    """A terminated run's interrupt is not a MySQL error: never turned into a SourceError."""
    batches = stream_batches(primary, FISCAL_LINES.select_sql(DAY), 1000)
    assert isinstance(batches, Generator)
    next(batches)
    with pytest.raises(interrupt):
        batches.throw(interrupt())


def test_a_sigint_mid_sync_stops_the_read_and_releases_the_partition(
    primary: MySQLEndpoint, proxy: ProxyProcess, tmp_path: Path
) -> None:
    """SIGINT, which Dagster's termination sends the step's process, goes through the sync as
    KeyboardInterrupt; the reader's connection is cut (no byte is read after), the partition's
    lease is released and nothing is published."""
    proxy.throttle(2_000_000)  # ~6,000 rows a second: the sync is far from its end when stopped
    interrupted: list[int] = []

    def interrupt_once_rows_flow(line: str) -> None:
        if " rows/s" in line:
            if not interrupted:
                interrupted.append(proxy.status().downstream_bytes)
            # Again on every batch until it lands: Python runs a signal's handler at its next
            # chance, which on a busy machine can be a collected generator's finaliser, where a
            # KeyboardInterrupt is printed and dropped; Dagster's termination signals again too.
            os.kill(os.getpid(), signal.SIGINT)

    store = LocalStore(tmp_path)
    replicator = EmbeddedReplicator(
        batch_rows=1000, progress_every_s=0, log=interrupt_once_rows_flow
    )
    # Python's own handler, whatever an earlier test in this process left installed: in the
    # whole suite the SIGINT was once taken without a KeyboardInterrupt, as Dagster's capturing
    # handler (dagster._utils.interrupts) takes it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            replicator.sync(FISCAL_LINES, DAY, through(primary, proxy), store)
    finally:
        signal.signal(signal.SIGINT, previous)
    time.sleep(0.5)  # what the proxy had in hand when the connection was cut still goes
    stopped = proxy.status().downstream_bytes
    time.sleep(1)
    assert proxy.status().downstream_bytes == stopped, "the reader still reads"
    assert stopped < ROWS * 300 / 2
    assert store.lease_records(FISCAL_LINES, DAY).read() is None
    assert store.manifest(FISCAL_LINES, DAY) is None
