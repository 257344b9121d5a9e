"""Health probes against real faults: killed and frozen servers, stopped and broken replication,
a lagging replica, unwritable folders, deleted buckets and dead S3 endpoints.

No mocks. Two exceptions, marked where they are: replica states a local pair cannot be put in
on demand are decoded from status rows as the server reports them, and a hung network mount
has a stand-in store."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from acode_dagster.bronze.store import LocalStore, S3Store, s3_client
from acode_dagster.localstack import REPL_USER, LocalStack
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.probes import (
    TARGETS,
    ProbeGroup,
    ProbeResult,
    ProbeSettings,
    judge_replica,
    probe_all,
    probe_bucket,
    probe_mysql,
    probe_replica,
    probe_within,
)
from acode_dagster.routing import BACKUP, PRIMARY
from acode_dagster.tables import PRODUCTS
from acode_dagster_tests.support.s3 import S3_ENV, MotoServer

QUICK = ProbeSettings(timeout_s=2.0)


def _admin(stack: LocalStack, role: str, *statements: str) -> None:
    """Run statements as root on one server of the pair."""
    with stack.endpoint(role, admin=True).connect() as conn, conn.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _insert_product(stack: LocalStack, role: str, ean: str) -> None:
    with stack.endpoint(role, admin=True).connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO `{PRODUCTS.name}` (EAN, Descricao, Data_Atualizacao) "
            "VALUES (%s, 'probe test', NOW(6))",
            (ean,),
        )


def _until(
    probe: Callable[[], ProbeResult],
    accept: Callable[[ProbeResult], bool],
    timeout: float = 15.0,
    also: Callable[[ProbeResult], None] | None = None,
) -> ProbeResult:
    """Probe every 0.2 s until ``accept``; ``also`` checks every intermediate result."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if also is not None:
            also(result)
        if accept(result):
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"no acceptable probe result within {timeout} s; the last: {result}")
        time.sleep(0.2)


def _started_pair(factory: Callable[..., LocalStack]) -> LocalStack:
    stack = factory()
    stack.start()
    return stack


@contextmanager
def _private_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto server of this test's own (the session's must keep running), made the S3 of the
    standard variables until the test ends."""
    server = MotoServer(tmp_path)
    server.start()
    try:
        for key, value in S3_ENV.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------- MySQL, session pair


@pytest.mark.slow
def test_healthy_pair_probes_healthy(mariadb_pair: LocalStack) -> None:
    mariadb_pair.wait_replica_caught_up(timeout=15)
    primary = probe_mysql(mariadb_pair.endpoint(PRIMARY), PRIMARY, QUICK)
    backup = probe_replica(mariadb_pair.endpoint(BACKUP), QUICK)

    assert primary.target == "mysql_primary" and backup.target == "mysql_backup"
    assert (primary.healthy, primary.reason, primary.warning) == (True, "ok", None)
    assert (backup.healthy, backup.reason, backup.warning) == (True, "ok", None)
    assert backup.details["io_running"] == "Yes"
    assert backup.details["sql_running"] == "Yes"
    assert backup.details["seconds_behind"] == 0
    assert 0 < primary.latency_s < 1 and 0 < backup.latency_s < 1


@pytest.mark.slow
def test_server_without_replication_is_not_a_replica(mariadb_pair: LocalStack) -> None:
    # The primary replicates from nothing: the real "no replication configured" case.
    result = probe_replica(mariadb_pair.endpoint(PRIMARY), QUICK)
    assert not result.healthy
    assert "not a replica" in result.reason


@pytest.mark.slow
def test_wrong_password_names_the_password_and_never_shows_it(mariadb_pair: LocalStack) -> None:
    wrong = "Wr0ng-pr0be-Passw0rd"
    for role in (PRIMARY, BACKUP):
        endpoint = mariadb_pair.endpoint(role).with_password(wrong)
        for result in (probe_mysql(endpoint, role, QUICK), probe_replica(endpoint, QUICK)):
            assert not result.healthy
            assert "password" in result.reason
            assert endpoint.display in result.reason
            assert wrong not in json.dumps(result.to_json())


# ---------------------------------------------------------------------- MySQL, private pairs


@pytest.mark.slow
def test_killed_primary_backup_serves_then_both_recover_then_backup_dies(
    mariadb_pair_factory: Callable[..., LocalStack],
) -> None:
    stack = _started_pair(mariadb_pair_factory)
    primary, backup = stack.endpoint(PRIMARY), stack.endpoint(BACKUP)
    assert probe_mysql(primary, PRIMARY, QUICK).healthy

    stack.kill(PRIMARY)
    down = probe_mysql(primary, PRIMARY, QUICK)
    assert not down.healthy
    assert down.latency_s < QUICK.timeout_s + 0.5
    assert primary.display in down.reason and "unreachable" in down.reason
    assert primary.password and primary.password not in json.dumps(down.to_json())

    def still_healthy(result: ProbeResult) -> None:
        # The failover case: the backup must never look unsafe because its primary died.
        assert result.healthy, result

    serving = _until(
        lambda: probe_replica(backup, QUICK),
        lambda r: r.warning is not None,
        timeout=10,
        also=still_healthy,
    )
    assert serving.warning is not None
    assert "primary unreachable from the replica" in serving.warning
    assert "serving what it received up to" in serving.warning
    assert serving.details["io_running"] != "Yes"
    assert serving.details["seconds_behind"] == -1
    assert serving.details["last_io_errno"] in (2003, 2013)

    stack.start_server(PRIMARY)
    # A restart may move the primary to another port when the old one is still in TIME_WAIT.
    primary = stack.endpoint(PRIMARY)
    assert probe_mysql(primary, PRIMARY, QUICK).healthy
    recovered = _until(
        lambda: probe_replica(backup, QUICK),
        lambda r: r.healthy and r.warning is None and r.details["io_running"] == "Yes",
        timeout=15,
    )
    assert recovered.details["sql_running"] == "Yes"

    stack.kill(BACKUP)
    dead = probe_replica(backup, QUICK)
    assert not dead.healthy
    assert backup.display in dead.reason and "unreachable" in dead.reason
    assert probe_mysql(primary, PRIMARY, QUICK).healthy


@pytest.mark.slow
def test_stopped_refused_and_broken_replication(
    mariadb_pair_factory: Callable[..., LocalStack],
) -> None:
    stack = _started_pair(mariadb_pair_factory)
    backup = stack.endpoint(BACKUP)

    def healthy_again() -> None:
        _until(
            lambda: probe_replica(backup, QUICK),
            lambda r: r.healthy and r.warning is None and r.details["io_running"] == "Yes",
            timeout=15,
        )

    _admin(stack, BACKUP, "STOP SLAVE")
    stopped = probe_replica(backup, QUICK)
    assert not stopped.healthy and "replication stopped" in stopped.reason
    assert (stopped.details["io_running"], stopped.details["sql_running"]) == ("No", "No")
    _admin(stack, BACKUP, "START SLAVE")
    healthy_again()

    _admin(stack, BACKUP, "STOP SLAVE IO_THREAD")
    io_stopped = probe_replica(backup, QUICK)
    assert not io_stopped.healthy and "replication stopped" in io_stopped.reason
    assert (io_stopped.details["io_running"], io_stopped.details["sql_running"]) == ("No", "Yes")
    _admin(stack, BACKUP, "START SLAVE")
    healthy_again()

    # The primary is up but refuses the replication user: not the failover case, the backup
    # only falls further behind. Locked outside the binlog, so the backup's copy is untouched.
    repl_user = f"'{REPL_USER}'@'127.0.0.1'"
    _admin(stack, PRIMARY, "SET SESSION sql_log_bin = 0", f"ALTER USER {repl_user} ACCOUNT LOCK")
    _admin(stack, BACKUP, "STOP SLAVE IO_THREAD", "START SLAVE IO_THREAD")
    refused = _until(
        lambda: probe_replica(backup, QUICK), lambda r: r.details["last_io_errno"] != 0, timeout=10
    )
    assert not refused.healthy and "replication broken" in refused.reason, refused
    _admin(stack, PRIMARY, "SET SESSION sql_log_bin = 0", f"ALTER USER {repl_user} ACCOUNT UNLOCK")
    healthy_again()

    # A row the backup already has arrives from the primary: the SQL thread stops on error 1062.
    _insert_product(stack, BACKUP, "7890000000001")
    _insert_product(stack, PRIMARY, "7890000000001")
    broken = _until(lambda: probe_replica(backup, QUICK), lambda r: not r.healthy, timeout=10)
    assert "replication stopped" in broken.reason
    assert "Duplicate entry" in broken.reason
    assert broken.details["last_sql_errno"] == 1062
    assert broken.details["sql_running"] == "No"


@pytest.mark.slow
def test_lagging_replica_against_rpo_and_warning(
    mariadb_pair_factory: Callable[..., LocalStack],
) -> None:
    stack = _started_pair(mariadb_pair_factory)
    backup = stack.endpoint(BACKUP)
    # MariaDB 10.11 counts MASTER_DELAY in Seconds_Behind_Master: while a delayed event waits it
    # reads 0, 1, 2, ... (now minus the event's time on the primary), so a 30 s delay gives a
    # lag that grows by one a second, and the test waits only until it passes the thresholds.
    _admin(stack, BACKUP, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY=30", "START SLAVE")
    _insert_product(stack, PRIMARY, "7890000000002")

    strict = ProbeSettings(timeout_s=2.0, rpo_s=2, lag_warn_s=1)
    behind = _until(lambda: probe_replica(backup, strict), lambda r: "behind" in r.reason)
    assert not behind.healthy
    assert "RPO is 2 s" in behind.reason
    assert int(behind.details["seconds_behind"]) > 2

    generous = ProbeSettings(timeout_s=2.0, rpo_s=3600, lag_warn_s=1)
    warned = probe_replica(backup, generous)
    assert warned.healthy and warned.reason == "ok"
    assert warned.warning is not None and "behind (warn at 1 s)" in warned.warning

    # The primary dies while the delayed event still waits in the relay log: the backup lacks
    # what it received, so it is not a safe target until it has applied it.
    stack.kill(PRIMARY)
    pending = _until(
        lambda: probe_replica(backup, generous),
        lambda r: r.details["io_running"] != "Yes",
        timeout=10,
    )
    assert not pending.healthy
    assert "primary unreachable" in pending.reason and "not applied" in pending.reason
    assert pending.details["received_up_to"] != pending.details["applied_up_to"]


# ---------------------------------------------------------------------- replica rules, decoded


def _status(**fields: Any) -> dict[str, Any]:
    healthy = {
        "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "Yes",
        "Seconds_Behind_Master": 0,
        "Master_Log_File": "binlog.000001",
        "Read_Master_Log_Pos": 500,
        "Relay_Master_Log_File": "binlog.000001",
        "Exec_Master_Log_Pos": 500,
        "Last_IO_Errno": 0,
        "Last_IO_Error": "",
        "Last_SQL_Errno": 0,
        "Last_SQL_Error": "",
        "Gtid_IO_Pos": "0-1-42",
    }
    return healthy | fields


@pytest.mark.parametrize(
    ("fields", "healthy", "says"),
    [
        # States a local pair cannot be put in on demand, as SHOW REPLICA STATUS reports them.
        ({"Seconds_Behind_Master": None}, False, "lag unknown"),
        # The IO thread gave up after master_retry_count attempts: still the failover case.
        (
            {"Slave_IO_Running": "No", "Seconds_Behind_Master": None, "Last_IO_Errno": 2003},
            True,
            "GTID 0-1-42",
        ),
        ({"Slave_IO_Running": "No", "Last_IO_Errno": 1236}, False, "replication broken"),
    ],
)
def test_replica_rules_for_rare_states(fields: dict[str, Any], healthy: bool, says: str) -> None:
    verdict = judge_replica(_status(**fields), ProbeSettings())
    assert verdict.healthy is healthy
    assert says in f"{verdict.reason} {verdict.warning}"


def test_replica_rules_read_mysql_8_column_names() -> None:
    mysql8 = {
        "Replica_IO_Running": "Yes",
        "Replica_SQL_Running": "Yes",
        "Seconds_Behind_Source": 400,
        "Source_Log_File": "binlog.000003",
        "Read_Source_Log_Pos": 9,
        "Relay_Source_Log_File": "binlog.000003",
        "Exec_Source_Log_Pos": 9,
        "Last_IO_Errno": 0,
        "Last_SQL_Errno": 0,
    }
    verdict = judge_replica(mysql8, ProbeSettings())
    assert verdict.healthy and verdict.warning == "replica 400 s behind (warn at 300 s)"
    assert verdict.details["received_up_to"] == "binlog.000003:9"


# ---------------------------------------------------------------------- buckets


def test_local_store_probe_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "bronze"
    result = probe_bucket(LocalStore(root), PRIMARY, QUICK)
    assert (result.target, result.healthy, result.reason) == ("bucket_primary", True, "ok")
    assert list(root.iterdir()) == []


def test_local_store_that_cannot_be_created_is_unhealthy(tmp_path: Path) -> None:
    # chmod cannot stop root, and the tests run as root; a path under a regular file cannot be
    # created by anyone.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = probe_bucket(LocalStore(blocker / "bronze"), BACKUP, QUICK)
    assert result.target == "bucket_backup" and not result.healthy
    assert str(blocker / "bronze") in result.reason
    assert "Not a directory" in result.reason and "ACODE_BRONZE_URL" in result.reason


@pytest.mark.slow
def test_s3_probe_is_healthy_and_leaves_no_object(s3_bucket: str) -> None:
    result = probe_bucket(S3Store(s3_bucket, "lake"), PRIMARY, QUICK)
    assert (result.healthy, result.reason) == (True, "ok"), result
    assert s3_client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


@pytest.mark.slow
def test_s3_probe_of_a_deleted_bucket_names_nosuchbucket(s3_bucket: str) -> None:
    s3_client().delete_bucket(Bucket=s3_bucket)
    result = probe_bucket(S3Store(s3_bucket), BACKUP, QUICK)
    assert not result.healthy
    assert "NoSuchBucket" in result.reason and s3_bucket in result.reason
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in json.dumps(result.to_json())


@pytest.mark.slow
def test_s3_probe_of_a_dead_endpoint_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"acode-probe-{uuid.uuid4().hex[:10]}"
    with _private_moto(tmp_path, monkeypatch) as server:
        s3_client().create_bucket(Bucket=bucket)
        store = S3Store(bucket)
        assert probe_bucket(store, PRIMARY, QUICK).healthy
        server.stop()
        result = probe_bucket(store, PRIMARY, ProbeSettings(timeout_s=1.0))
    assert not result.healthy
    assert result.latency_s < 3.0
    assert "AWS_ENDPOINT_URL" in result.reason and bucket in result.reason


class _HungStore(LocalStore):
    """Stand-in for a folder on a hung network mount, which a test cannot make: every local
    system call there blocks with no timeout. The one fake in this file."""

    def __init__(self, root: Path, release: threading.Event):
        super().__init__(root)
        self.release = release

    def probe(self, timeout_s: float) -> None:
        self.release.wait()


def test_a_hung_store_costs_the_budget_not_forever(tmp_path: Path) -> None:
    release = threading.Event()
    try:
        result = probe_bucket(_HungStore(tmp_path, release), BACKUP, ProbeSettings(timeout_s=0.2))
    finally:
        release.set()
    assert not result.healthy
    assert 0.4 <= result.latency_s < 1.0
    assert "did not answer within 0.4 s" in result.reason and str(tmp_path) in result.reason


# ---------------------------------------------------------------------- all four at once


@pytest.mark.slow
def test_probe_all_waits_one_timeout_not_the_sum(
    mariadb_pair_factory: Callable[..., LocalStack],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A killed server refuses at once and costs no time, so it cannot show whether the probes
    # overlap. A frozen one (SIGSTOP: the kernel still accepts the connection, nobody answers)
    # holds each probe for its whole timeout, like a hung host: three such targets take three
    # timeouts one after the other, one timeout side by side.
    stack = _started_pair(mariadb_pair_factory)
    settings = ProbeSettings(timeout_s=1.0)
    buckets = [f"acode-probe-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with _private_moto(tmp_path, monkeypatch) as server:
        for bucket in buckets:
            s3_client().create_bucket(Bucket=bucket)
        primary_pid = stack.status()[PRIMARY].pid
        assert primary_pid is not None and server.process is not None
        os.kill(primary_pid, signal.SIGSTOP)
        server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.perf_counter()
            results = probe_all(
                stack.endpoint(PRIMARY),
                stack.endpoint(BACKUP),
                S3Store(buckets[0]),
                S3Store(buckets[1]),
                settings,
            )
            elapsed = time.perf_counter() - started
        finally:
            # A stopped server ignores the SIGTERM of the pair's teardown until continued.
            os.kill(primary_pid, signal.SIGCONT)

    assert list(results) == list(TARGETS)
    assert {t: r.target for t, r in results.items()} == {t: t for t in TARGETS}
    assert results["mysql_backup"].healthy, results["mysql_backup"]
    frozen = [results[t] for t in ("mysql_primary", "bucket_primary", "bucket_backup")]
    for result in frozen:
        assert not result.healthy
        assert result.latency_s >= 0.9 * settings.timeout_s, result
    # Each gave up on its own socket timeout (a reason naming the cause), not on the budget.
    assert stack.endpoint(PRIMARY).display in results["mysql_primary"].reason
    assert "timed out" in results["mysql_primary"].reason
    # Read timeout, or connect timeout when the frozen server's accept backlog is already full.
    assert all(
        "ReadTimeoutError" in r.reason or "ConnectTimeoutError" in r.reason for r in frozen[1:]
    ), [r.reason for r in frozen[1:]]
    assert sum(r.latency_s for r in frozen) > 2.7 * settings.timeout_s
    assert elapsed < 2.5 * settings.timeout_s, f"probe_all took {elapsed:.2f} s"


# ---------------------------------------------------------------------- the round's budget


@contextmanager
def _silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts connections and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for sock in (server, *accepted):
            sock.close()


def _waits_for_an_answer(address: tuple[str, int], seconds: float) -> Callable[[], ProbeResult]:
    """A probe of its own making that reads from ``address`` for up to ``seconds``: longer
    than the round's budget, shorter than forever, like a probe with a generous timeout."""

    def probe() -> ProbeResult:
        with socket.create_connection(address, timeout=seconds) as conn:
            try:
                conn.recv(1)
            except TimeoutError:
                return ProbeResult("hung", False, seconds, "no answer")
        return ProbeResult("hung", True, 0.0, "ok")

    return probe


def test_a_hung_probe_costs_the_round_its_budget_and_the_others_stand(tmp_path: Path) -> None:
    settings = ProbeSettings(timeout_s=0.5, budget_s=1.0)
    store = LocalStore(tmp_path / "bronze")
    with _silent_server() as address:
        started = time.perf_counter()
        results = probe_within(
            {
                "hung": _waits_for_an_answer(address, 20),
                "bucket_primary": lambda: probe_bucket(store, PRIMARY, settings),
            },
            settings.budget_s,
            [
                ProbeGroup(
                    ("group_a", "group_b"),
                    lambda: {t: ProbeResult(t, True, 0.01, "ok") for t in ("group_a", "group_b")},
                ),
                ProbeGroup(
                    ("group_hung",), lambda: {"group_hung": _waits_for_an_answer(address, 20)()}
                ),
            ],
        )
        elapsed = time.perf_counter() - started
    assert 1.0 <= elapsed < 1.5, f"the round took {elapsed:.2f} s"
    assert list(results) == ["hung", "bucket_primary", "group_a", "group_b", "group_hung"]
    for target in ("hung", "group_hung"):
        assert not results[target].healthy
        assert "ran out of the tick's probe budget" in results[target].reason
        assert "ACODE_PROBE_BUDGET_S" in results[target].reason
        assert 1.0 <= results[target].latency_s < 1.5
    assert results["bucket_primary"].healthy, results["bucket_primary"]
    assert results["group_a"].healthy and results["group_b"].healthy


def test_a_round_ends_as_soon_as_every_probe_answered_and_a_raising_one_is_reported() -> None:
    def broken() -> ProbeResult:
        raise RuntimeError("bug in a probe")

    started = time.perf_counter()
    results = probe_within(
        {"fine": lambda: ProbeResult("fine", True, 0.0, "ok"), "broken": broken},
        30.0,
        [ProbeGroup(("a", "b"), lambda: {"a": broken()})],
    )
    assert time.perf_counter() - started < 1.0
    assert results["fine"].healthy
    assert (
        not results["broken"].healthy and "RuntimeError: bug in a probe" in results["broken"].reason
    )
    assert not results["a"].healthy and not results["b"].healthy


def test_the_probe_budget_setting_is_refused_out_of_bounds() -> None:
    from acode_dagster.errors import ConfigError
    from acode_dagster.settings import Settings

    assert Settings.from_env({}).probe_budget_s == 30.0
    assert Settings.from_env({"ACODE_PROBE_BUDGET_S": "12.5"}).probe_budget_s == 12.5
    with pytest.raises(ConfigError, match=r"ACODE_PROBE_BUDGET_S=55 must be below 55 s"):
        Settings.from_env({"ACODE_PROBE_BUDGET_S": "55"})
    with pytest.raises(
        ConfigError, match=r"ACODE_PROBE_BUDGET_S=4 is below ACODE_PROBE_TIMEOUT_S=5"
    ):
        Settings.from_env({"ACODE_PROBE_BUDGET_S": "4"})
    with pytest.raises(ConfigError, match="ACODE_PROBE_BUDGET_S"):
        Settings.from_env({"ACODE_PROBE_BUDGET_S": "soon"})
    with pytest.raises(ConfigError, match="budget"):
        ProbeSettings(budget_s=0)


# ---------------------------------------------------------------------- results as JSON


def test_probe_result_json_round_trip() -> None:
    results = [
        ProbeResult(
            "mysql_backup",
            True,
            0.0123,
            "ok",
            "replica 420 s behind (warn at 300 s)",
            {"seconds_behind": 420, "io_running": "Yes", "sql_running": "Yes", "ratio": 0.5},
        ),
        ProbeResult("bucket_primary", False, 1.5, "S3 bucket 'x': NoSuchBucket — create it"),
    ]
    for result in results:
        again = ProbeResult.from_json(json.loads(json.dumps(result.to_json())))
        assert again == result


def test_probe_settings_refuse_nonsense() -> None:
    from acode_dagster.errors import ConfigError

    with pytest.raises(ConfigError, match="timeout"):
        ProbeSettings(timeout_s=0)
    with pytest.raises(ConfigError, match="RPO"):
        ProbeSettings(rpo_s=-1)


def test_unreachable_host_is_unhealthy_not_raised() -> None:
    # Nothing listens on port 1 of loopback: refused at once, reported, never raised.
    endpoint = MySQLEndpoint("127.0.0.1", 1, "acode", "acode_farmarcas", "s3cret-pw")
    result = probe_mysql(endpoint, PRIMARY, ProbeSettings(timeout_s=1.0))
    assert not result.healthy and endpoint.display in result.reason
    assert "s3cret-pw" not in result.reason
