"""The local MariaDB pair: real servers, real binlog replication, real crashes."""

from __future__ import annotations

import json
import logging
import stat
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any

import pymysql
import pytest

from acode_dagster import localstack
from acode_dagster.errors import ConfigError
from acode_dagster.localstack import (
    BACKUP,
    PRIMARY,
    ROLES,
    LocalStack,
    LocalStackError,
    native_password_hash,
)
from acode_dagster.tables import BACKUP_DATABASE, FISCAL_LINES, SOURCE_DATABASE, TABLES

pytestmark = pytest.mark.slow

_CNPJ = count(10_000_000_000_000)


def _insert_line(stack: LocalStack, marker: str) -> None:
    """One fiscal line on the primary, written as root, tagged by ``marker`` in Razao_Social."""
    with stack.endpoint(PRIMARY, admin=True).connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO `{FISCAL_LINES.name}` (Data, Data_Processamento, CNPJ, EAN, "
            "Razao_Social, Val_Prod) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                "2026-11-20",
                datetime(2026, 11, 20, 23, 59, 59, 999_999),
                str(next(_CNPJ)),
                "7891234567895",
                marker,
                "12.34",
            ),
        )


def _lines_on(stack: LocalStack, role: str, marker: str) -> list[tuple[Any, ...]]:
    with stack.endpoint(role, admin=True).connect() as conn, conn.cursor() as cursor:
        cursor.execute(
            f"SELECT Data_Processamento, EAN, Val_Prod FROM `{FISCAL_LINES.name}` "
            "WHERE Razao_Social = %s",
            (marker,),
        )
        return list(cursor.fetchall())


# ---------------------------------------------------------------------- the healthy session pair


def test_row_written_on_primary_reaches_the_backup(mariadb_pair: LocalStack) -> None:
    _insert_line(mariadb_pair, "replicates")
    mariadb_pair.wait_replica_caught_up(timeout=10)

    on_primary = _lines_on(mariadb_pair, PRIMARY, "replicates")
    on_backup = _lines_on(mariadb_pair, BACKUP, "replicates")
    assert len(on_primary) == 1
    assert on_backup == on_primary
    assert on_backup[0][0] == datetime(2026, 11, 20, 23, 59, 59, 999_999)


def test_endpoints_name_the_right_databases(mariadb_pair: LocalStack) -> None:
    primary, backup = mariadb_pair.endpoint(PRIMARY), mariadb_pair.endpoint(BACKUP)
    assert (primary.database, backup.database) == (SOURCE_DATABASE, BACKUP_DATABASE)
    assert (primary.user, primary.host) == ("acode", "127.0.0.1")
    assert primary.password and primary.password == backup.password
    assert primary.port != backup.port and 3306 not in (primary.port, backup.port)
    admin = mariadb_pair.endpoint(BACKUP, admin=True)
    assert (admin.user, admin.password, admin.database) == ("root", None, BACKUP_DATABASE)


def test_both_servers_hold_the_contract_tables(mariadb_pair: LocalStack) -> None:
    for role in ROLES:
        with mariadb_pair.endpoint(role, admin=True).connect() as conn, conn.cursor() as cursor:
            cursor.execute("SHOW DATABASES LIKE 'acode%'")
            assert [row[0] for row in cursor.fetchall()] == [localstack.DATABASES[role]]
            cursor.execute(
                "SELECT table_name, table_collation FROM information_schema.tables "
                "WHERE table_schema = DATABASE() ORDER BY table_name"
            )
            assert dict(cursor.fetchall()) == {
                t.name: "utf8mb4_unicode_ci" for t in sorted(TABLES, key=lambda t: t.name)
            }


def test_app_user_reads_both_servers_and_cannot_write(mariadb_pair: LocalStack) -> None:
    for role in ROLES:
        with mariadb_pair.endpoint(role).connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM `{FISCAL_LINES.name}`")
            assert cursor.fetchone() is not None
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cursor.execute(
                    f"INSERT INTO `{FISCAL_LINES.name}` (Data, Data_Processamento) "
                    "VALUES ('2026-11-20', '2026-11-20 10:00:00')"
                )
            # INSERT command denied; the backup may refuse first for being read-only.
            assert denied.value.args[0] in ((1142,) if role == PRIMARY else (1142, 1290))
    # The health probe reads the replication threads with the same user.
    with mariadb_pair.endpoint(BACKUP).connect() as conn, conn.cursor() as cursor:
        cursor.execute("SHOW SLAVE STATUS")
        assert cursor.fetchone() is not None


def test_grants_exist_on_both_servers(mariadb_pair: LocalStack) -> None:
    for role in ROLES:
        with mariadb_pair.endpoint(role, admin=True).connect() as conn, conn.cursor() as cursor:
            for host in ("127.0.0.1", "localhost"):
                cursor.execute("SHOW GRANTS FOR %s@%s", ("acode", host))
                grants = " ".join(row[0] for row in cursor.fetchall())
                assert r"GRANT SELECT, SHOW VIEW ON `acode\_farmarcas%`.*" in grants
                assert "SLAVE MONITOR" in grants
                assert "INSERT" not in grants


def test_status_reports_both_running_and_replicating(mariadb_pair: LocalStack) -> None:
    status = mariadb_pair.status()
    assert set(status) == set(ROLES)
    primary, backup = status[PRIMARY], status[BACKUP]
    assert primary.running and primary.pid and primary.io_running is None
    assert backup.running and backup.pid and backup.replicating
    assert backup.seconds_behind == 0 and backup.last_error is None
    assert primary.port == mariadb_pair.endpoint(PRIMARY).port


def test_start_again_is_idempotent_and_fast(mariadb_pair: LocalStack) -> None:
    pids = {role: s.pid for role, s in mariadb_pair.status().items()}
    began = time.monotonic()
    mariadb_pair.start()
    assert time.monotonic() - began < 0.5
    assert {role: s.pid for role, s in mariadb_pair.status().items()} == pids


def test_native_password_hash_matches_the_server(mariadb_pair: LocalStack) -> None:
    with mariadb_pair.endpoint(PRIMARY, admin=True).connect() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT PASSWORD(%s)", ("sécret-ü",))
        row = cursor.fetchone()
    assert row is not None and row[0] == native_password_hash("sécret-ü")


# ---------------------------------------------------------------------- faults, on a private pair


@pytest.fixture(scope="module")
def scratch_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A pair of this module's own, so that killing servers never disturbs the session pair."""
    stack = LocalStack(tmp_path_factory.mktemp("scratch-stack"))
    try:
        began = time.monotonic()
        stack.start()
        logging.getLogger(__name__).info("cold start %.2f s", time.monotonic() - began)
        yield stack
    finally:
        stack.destroy()


def test_second_stack_gets_its_own_ports(
    mariadb_pair: LocalStack, scratch_pair: LocalStack
) -> None:
    ours = {scratch_pair.endpoint(role).port for role in ROLES}
    theirs = {mariadb_pair.endpoint(role).port for role in ROLES}
    assert len(ours) == 2 and not ours & theirs


def test_killed_backup_comes_back_and_catches_up(scratch_pair: LocalStack) -> None:
    scratch_pair.kill(BACKUP)
    status = scratch_pair.status()
    assert not status[BACKUP].running and status[BACKUP].pid is None
    assert status[BACKUP].io_running is None
    assert status[PRIMARY].running
    with pytest.raises(TimeoutError, match="did not catch up"):
        scratch_pair.wait_replica_caught_up(timeout=0.5)

    _insert_line(scratch_pair, "while-backup-down")
    scratch_pair.start_server(BACKUP)
    scratch_pair.wait_replica_caught_up(timeout=15)

    assert len(_lines_on(scratch_pair, BACKUP, "while-backup-down")) == 1
    assert scratch_pair.status()[BACKUP].replicating


def test_killed_primary_comes_back_and_replication_resumes(scratch_pair: LocalStack) -> None:
    _insert_line(scratch_pair, "before-primary-crash")
    scratch_pair.kill(PRIMARY)
    status = scratch_pair.status()
    assert not status[PRIMARY].running and status[PRIMARY].pid is None
    assert status[BACKUP].running
    # The backup still serves what it had, under its own name.
    with scratch_pair.endpoint(BACKUP).connect() as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM `{FISCAL_LINES.name}`")
        assert cursor.fetchone() is not None

    scratch_pair.start_server(PRIMARY)
    assert len(_lines_on(scratch_pair, PRIMARY, "before-primary-crash")) == 1
    _insert_line(scratch_pair, "after-primary-crash")
    scratch_pair.wait_replica_caught_up(timeout=15)
    assert len(_lines_on(scratch_pair, BACKUP, "after-primary-crash")) == 1
    assert scratch_pair.status()[BACKUP].replicating


def test_start_brings_back_whichever_server_is_down(scratch_pair: LocalStack) -> None:
    scratch_pair.kill(BACKUP)
    scratch_pair.start()
    status = scratch_pair.status()
    assert all(s.running for s in status.values())
    scratch_pair.wait_replica_caught_up(timeout=15)


def test_stop_then_start_keeps_the_data(scratch_pair: LocalStack) -> None:
    _insert_line(scratch_pair, "survives-stop")
    scratch_pair.wait_replica_caught_up(timeout=10)
    scratch_pair.stop()
    scratch_pair.stop()  # idempotent
    assert not any(s.running or s.pid for s in scratch_pair.status().values())

    scratch_pair.start()
    assert len(_lines_on(scratch_pair, PRIMARY, "survives-stop")) == 1
    assert len(_lines_on(scratch_pair, BACKUP, "survives-stop")) == 1
    _insert_line(scratch_pair, "after-restart")
    scratch_pair.wait_replica_caught_up(timeout=10)
    assert len(_lines_on(scratch_pair, BACKUP, "after-restart")) == 1


# ---------------------------------------------------------------------- secrets and setup


def test_secrets_stay_in_the_state_file(
    mariadb_pair_factory: Callable[..., LocalStack],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="acode_dagster.localstack")
    # Deep enough that a unix socket beside the datadir would not fit in sun_path.
    home = tmp_path / ("deep-" + "x" * 60) / ("deeper-" + "y" * 40) / "stack"
    stack = mariadb_pair_factory(home)
    stack.start()
    stack.kill(BACKUP)
    with pytest.raises(TimeoutError) as timed_out:
        stack.wait_replica_caught_up(timeout=0.3)
    stack.start_server(BACKUP)
    stack.wait_replica_caught_up(timeout=15)
    stack.stop()
    state = stack.state_path.read_text()
    stack.start()

    assert stat.S_IMODE(stack.state_path.stat().st_mode) == 0o600

    raw = json.loads(state)
    secrets = [raw["app_password"], raw["repl_password"]]
    assert all(len(s) >= 24 for s in secrets)
    assert caplog.records, "the stack logs what it does"
    text = caplog.text + str(timed_out.value) + repr(stack) + repr(stack.status())
    for secret in secrets:
        assert secret not in text
    # Only the state file and the replica's own connection settings may hold a password:
    # users are created from hashes, so no binlog or relay log carries one.
    holders = {
        p.relative_to(home).as_posix()
        for p in home.rglob("*")
        if p.is_file() and any(s.encode() in p.read_bytes() for s in secrets)
    }
    assert holders == {"state.json", "backup/data/master.info"}
    for role in ROLES:
        socket_path = raw["servers"][role]["socket"]
        assert len(socket_path.encode()) <= 100
        assert socket_path.startswith("/tmp/acode-mariadb-")


def test_missing_binaries_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localstack, "_find_binaries", lambda: None)
    monkeypatch.setattr(localstack, "_can_apt_install", lambda: False)
    with pytest.raises(ConfigError) as missing:
        localstack.find_mariadb_binaries(install=True)
    assert "apt-get install mariadb-server" in str(missing.value)
    assert "brew install mariadb" in str(missing.value)


def test_unknown_role_and_unstarted_stack_are_refused(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "never-started")
    with pytest.raises(ValueError, match="unknown server role 'replica'"):
        stack.endpoint("replica")
    with pytest.raises(LocalStackError, match="never started"):
        stack.endpoint(PRIMARY)
    assert not any(s.running for s in stack.status().values())
    stack.stop()  # nothing to stop is fine
