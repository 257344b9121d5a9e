"""TLS to MySQL on every connection: the settings, both clients (pymysql and the Arrow reader),
the probes, the health command and a sync, against the local pair's real TLS.

The session pair serves a certificate for 127.0.0.1 and localhost signed by its throwaway CA.
A source user created ``REQUIRE SSL`` is refused by the server over a plain connection, which
is what proves that a mode really encrypts or really does not.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from acode_dagster.bronze.store import LocalStore
from acode_dagster.cli import main
from acode_dagster.demo.loader import load_days
from acode_dagster.errors import ConfigError, SourceError
from acode_dagster.localstack import HOST, LocalStack, native_password_hash
from acode_dagster.mysql import MySQLEndpoint, explain_mysql_error
from acode_dagster.probes import ProbeSettings, probe_mysql
from acode_dagster.replicator import EmbeddedReplicator, stream_batches
from acode_dagster.settings import SSL_MODES, MySQLTLS, Settings, mysql_tls
from acode_dagster.source.certs import issue_server_certificate, make_ca
from acode_dagster.tables import BACKUP_DATABASE, FISCAL_LINES, SOURCE_DATABASE

DAY = date(2026, 7, 14)
TLS_USER = "acode_tls"
CIPHER = "SHOW SESSION STATUS LIKE 'Ssl_cipher'"


# ---------------------------------------------------------------------- settings


def test_mode_defaults_to_preferred_and_a_side_of_its_own_wins() -> None:
    assert mysql_tls({}, "primary") == MySQLTLS()
    env = {"ACODE_MYSQL_SSL_MODE": "VERIFY-CA", "ACODE_MYSQL_BACKUP_SSL_MODE": "disabled"}
    settings = Settings.from_env(env)
    assert (settings.primary_tls.mode, settings.primary_tls.mode_setting) == (
        "verify_ca",
        "ACODE_MYSQL_SSL_MODE",
    )
    assert (settings.backup_tls.mode, settings.backup_tls.mode_setting) == (
        "disabled",
        "ACODE_MYSQL_BACKUP_SSL_MODE",
    )
    assert settings.primary_tls.chosen and settings.backup_tls.chosen


def test_a_bad_mode_is_refused_naming_the_variable_and_the_choices() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"ACODE_MYSQL_PRIMARY_SSL_MODE": "yes-please"})
    message = str(error.value)
    assert "ACODE_MYSQL_PRIMARY_SSL_MODE='yes-please'" in message
    assert all(mode in message for mode in SSL_MODES)


def test_a_ca_turns_verification_on_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    ca, _ = make_ca(tmp_path / "ca")
    tls = mysql_tls({"ACODE_MYSQL_SSL_CA": str(ca)}, "backup")
    assert (tls.mode, tls.ca, tls.chosen) == ("verify_identity", str(ca.resolve()), False)
    own = tmp_path / "own.pem"
    own.write_bytes(ca.read_bytes())
    env = {"ACODE_MYSQL_SSL_CA": str(ca), "ACODE_MYSQL_PRIMARY_SSL_CA": str(own)}
    assert mysql_tls(env, "primary").ca_setting == "ACODE_MYSQL_PRIMARY_SSL_CA"
    assert mysql_tls(env, "backup").ca == str(ca.resolve())
    with pytest.raises(ConfigError, match=r"ACODE_MYSQL_SSL_CA='/nowhere/ca.pem' cannot be read"):
        Settings.from_env({"ACODE_MYSQL_SSL_CA": "/nowhere/ca.pem"})
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"ACODE_MYSQL_BACKUP_SSL_CA=.* holds no PEM certificate"):
        Settings.from_env({"ACODE_MYSQL_BACKUP_SSL_CA": str(tmp_path / "key.pem")})


# ---------------------------------------------------------------------- the local pair


def test_the_local_pair_serves_tls_and_its_endpoints_verify_identity(
    mariadb_pair: LocalStack,
) -> None:
    for role in ("primary", "backup"):
        endpoint = mariadb_pair.endpoint(role)
        assert endpoint.tls.mode == "verify_identity"
        assert endpoint.tls.ca == str(mariadb_pair.certificates.ca)
        assert _cipher(endpoint), role
        assert _arrow_cipher(endpoint), role


# ---------------------------------------------------------------------- a REQUIRE SSL user


@pytest.fixture(scope="module")
def tls_user(mariadb_pair: LocalStack) -> Iterator[dict[str, str]]:
    """A source user the server accepts over TLS only, on both servers (made on the primary,
    replicated); its login as the platform's settings."""
    password = secrets.token_urlsafe(18)
    hashed = native_password_hash(password)
    admin = mariadb_pair.endpoint("primary", admin=True).connect()
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "CREATE USER %s@%s IDENTIFIED BY PASSWORD %s REQUIRE SSL", (TLS_USER, HOST, hashed)
            )
            cursor.execute(
                rf"GRANT SELECT, SHOW VIEW ON `acode\_farmarcas%`.* TO {TLS_USER}@'{HOST}'"
            )
            cursor.execute(f"GRANT REPLICATION CLIENT, SLAVE MONITOR ON *.* TO {TLS_USER}@'{HOST}'")
        mariadb_pair.wait_replica_caught_up()
        yield {"password": password}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS {TLS_USER}@'{HOST}'")
        admin.close()


def _as_tls_user(stack: LocalStack, role: str, password: str, mode: str) -> MySQLEndpoint:
    return replace(
        stack.endpoint(role), user=TLS_USER, password=password, tls=MySQLTLS(mode, chosen=True)
    )


def _cipher(endpoint: MySQLEndpoint) -> str:
    conn = endpoint.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(CIPHER)
            return str(cursor.fetchone()[1])
    finally:
        conn.close()


def _arrow_cipher(endpoint: MySQLEndpoint) -> str:
    (batch,) = list(stream_batches(endpoint, CIPHER, 10))
    return str(batch.column(1)[0].as_py())


def _refused_for_plain_text(error: SourceError) -> None:
    message = str(error)
    assert "without TLS" in message and "ACODE_MYSQL_SSL_MODE=verify_identity" in message
    assert not error.transient  # a retry would be refused the same way


def test_required_encrypts_and_disabled_is_refused_clearly_by_pymysql(
    mariadb_pair: LocalStack, tls_user: dict[str, str]
) -> None:
    password = tls_user["password"]
    for role in ("primary", "backup"):
        assert _cipher(_as_tls_user(mariadb_pair, role, password, "required"))
    with pytest.raises(SourceError) as error:
        _cipher(_as_tls_user(mariadb_pair, "primary", password, "disabled"))
    _refused_for_plain_text(error.value)
    assert password not in str(error.value)


def test_the_arrow_reader_encrypts_with_required_and_preferred_and_not_with_disabled(
    mariadb_pair: LocalStack, tls_user: dict[str, str]
) -> None:
    password = tls_user["password"]
    assert _arrow_cipher(_as_tls_user(mariadb_pair, "primary", password, "required"))
    # connectorx's own "preferred" fails on a server without TLS; ours asks the greeting first.
    assert _arrow_cipher(_as_tls_user(mariadb_pair, "primary", password, "preferred"))
    plain = replace(mariadb_pair.endpoint("primary"), tls=MySQLTLS("disabled", chosen=True))
    assert _arrow_cipher(plain) == ""  # the app user may connect in clear text: it does


def test_the_arrow_reader_with_disabled_is_refused_clearly(
    mariadb_pair: LocalStack, tls_user: dict[str, str]
) -> None:
    """Slow (about 30 s): connectorx's pool retries a refused login for that long."""
    password = tls_user["password"]
    with pytest.raises(SourceError) as error:
        _arrow_cipher(_as_tls_user(mariadb_pair, "backup", password, "disabled"))
    _refused_for_plain_text(error.value)
    assert password not in str(error.value)


def test_a_probe_succeeds_with_required_and_fails_clearly_with_disabled(
    mariadb_pair: LocalStack, tls_user: dict[str, str]
) -> None:
    password = tls_user["password"]
    settings = ProbeSettings(timeout_s=5)
    ok = probe_mysql(
        _as_tls_user(mariadb_pair, "primary", password, "required"), "primary", settings
    )
    assert ok.healthy, ok.reason
    bad = probe_mysql(
        _as_tls_user(mariadb_pair, "primary", password, "disabled"), "primary", settings
    )
    assert not bad.healthy
    assert "without TLS" in bad.reason and "ACODE_MYSQL_SSL_MODE" in bad.reason
    assert password not in bad.reason


@pytest.fixture
def tls_env(
    env: dict[str, str],
    tls_user: dict[str, str],
    mariadb_pair: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The platform configured with the REQUIRE SSL user on both servers."""
    for role, database in (("PRIMARY", SOURCE_DATABASE), ("BACKUP", BACKUP_DATABASE)):
        address = mariadb_pair.endpoint(role.lower()).address
        monkeypatch.setenv(f"ACODE_MYSQL_{role}_URL", f"mysql://{TLS_USER}@{address}/{database}")
    monkeypatch.setenv("ACODE_PASS", tls_user["password"])
    monkeypatch.setenv("ACODE_BACKUP_PASS", tls_user["password"])
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(tmp_path / "bronze-backup"))
    load_days(mariadb_pair.endpoint("primary", admin=True), [DAY], rows={FISCAL_LINES.name: 200})
    mariadb_pair.wait_replica_caught_up()
    return env


def test_health_and_a_sync_through_the_command_line_with_required_and_disabled(
    tls_env: dict[str, str],
    tls_user: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """From the settings through Dagster's resources to both servers."""
    monkeypatch.setenv("ACODE_MYSQL_SSL_MODE", "required")
    assert main(["health"]) == 0, capsys.readouterr().out
    assert main(["sync", FISCAL_LINES.name, str(DAY)]) == 0, capsys.readouterr()
    assert "200" in capsys.readouterr().out

    monkeypatch.setenv("ACODE_MYSQL_SSL_MODE", "disabled")
    assert main(["health"]) == 1
    out = capsys.readouterr().out
    for role in ("primary", "backup"):
        row = next(li for li in out.splitlines() if li.startswith(f"mysql_{role} "))
        reason = next(li for li in out.splitlines() if li.startswith(f"mysql_{role}: "))
        assert " NO " in row, row
        assert "without TLS (ACODE_MYSQL_SSL_MODE=disabled)" in reason, reason
    assert tls_user["password"] not in out


def test_a_sync_with_disabled_fails_clearly_and_lands_nothing(
    tls_env: dict[str, str], tls_user: dict[str, str], mariadb_pair: LocalStack, tmp_path: Path
) -> None:
    """The same sync as the command's, by the replicator itself (a Dagster run costs seconds)."""
    store = LocalStore(tmp_path / "bronze-disabled")
    endpoint = _as_tls_user(mariadb_pair, "primary", tls_user["password"], "disabled")
    with pytest.raises(SourceError) as error:
        EmbeddedReplicator().sync(FISCAL_LINES, DAY, endpoint, store)
    _refused_for_plain_text(error.value)
    assert store.manifest(FISCAL_LINES, DAY) is None
    required = replace(endpoint, tls=MySQLTLS("required", chosen=True))
    assert EmbeddedReplicator().sync(FISCAL_LINES, DAY, required, store).rows == 200


# ---------------------------------------------------------------------- verification


def test_verify_ca_with_the_right_ca_passes_and_a_wrong_ca_fails_naming_the_setting(
    mariadb_pair: LocalStack, tmp_path: Path
) -> None:
    endpoint = mariadb_pair.endpoint("primary")
    right = MySQLTLS("verify_ca", endpoint.tls.ca, "ACODE_MYSQL_PRIMARY_SSL_MODE", chosen=True)
    assert _cipher(replace(endpoint, tls=right))
    wrong_ca, _ = make_ca(tmp_path / "wrong", "some other CA")
    wrong = replace(right, ca=str(wrong_ca), ca_setting="ACODE_MYSQL_PRIMARY_SSL_CA")
    with pytest.raises(SourceError) as error:
        _cipher(replace(endpoint, tls=wrong))
    message = str(error.value)
    assert message.startswith(f"TLS verification of {endpoint.display} failed")
    assert "set ACODE_MYSQL_PRIMARY_SSL_CA to the PEM file of the CA" in message
    assert not error.value.transient


@pytest.fixture
def other_host_pair(mariadb_pair_factory: Any) -> LocalStack:
    """A private pair whose primary presents, from now on, a certificate for another host,
    signed by the pair's own CA (reloaded with FLUSH SSL, as a renewed certificate would be)."""
    stack: LocalStack = mariadb_pair_factory()
    stack.start()
    files = stack.certificates
    issue_server_certificate(
        files.ca, files.ca.with_name("ca-key.pem"), ["db.other.example"], files.cert, files.key
    )
    admin = stack.endpoint("primary", admin=True)
    conn = replace(admin, tls=MySQLTLS("required")).connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("FLUSH SSL")
    finally:
        conn.close()
    return stack


def test_verify_identity_against_a_certificate_for_another_host_fails_naming_the_setting(
    other_host_pair: LocalStack,
) -> None:
    endpoint = other_host_pair.endpoint("primary")
    tls = MySQLTLS(
        "verify_identity",
        endpoint.tls.ca,
        "ACODE_MYSQL_PRIMARY_SSL_MODE",
        "ACODE_MYSQL_PRIMARY_SSL_CA",
        chosen=True,
    )
    with pytest.raises(SourceError) as error:
        _cipher(replace(endpoint, tls=tls))
    message = str(error.value)
    assert message.startswith(f"TLS verification of {endpoint.display} failed")
    assert "(ACODE_MYSQL_PRIMARY_SSL_MODE=verify_identity" in message
    assert "not issued for '127.0.0.1'" in message
    assert "ACODE_MYSQL_PRIMARY_SSL_MODE=verify_ca" in message
    assert not error.value.transient
    # The same certificate passes a check of its CA only.
    assert _cipher(replace(endpoint, tls=replace(tls, mode="verify_ca")))
    probe = probe_mysql(replace(endpoint, tls=tls), "primary", ProbeSettings(timeout_s=5))
    assert not probe.healthy and "ACODE_MYSQL_PRIMARY_SSL_MODE=verify_identity" in probe.reason


def test_the_arrow_readers_tls_failures_are_told_as_such() -> None:
    """connectorx's words for each failure (captured from a TLS MariaDB; the pool wraps them)
    get the same explanation as pymysql's."""
    endpoint = MySQLEndpoint(
        HOST, 3307, "acode", "acode", tls=MySQLTLS("verify_identity", chosen=True)
    )
    pool = "timed out waiting for connection: "
    mismatch = explain_mysql_error(
        endpoint,
        RuntimeError(
            pool + "TlsError { error:0A000086:SSL routines:tls_post_process_server_certificate:"
            "certificate verify failed:ssl/statem/statem_clnt.c:2123: (hostname mismatch) }"
        ),
    )
    assert "not issued for '127.0.0.1'" in str(mismatch) and not mismatch.transient
    untrusted = explain_mysql_error(
        endpoint,
        RuntimeError(
            pool + "TlsError { error:0A000086:SSL routines:tls_post_process_server_certificate:"
            "certificate verify failed:ssl/statem/statem_clnt.c:2123: (self-signed certificate "
            "in certificate chain) }"
        ),
    )
    assert "a CA of the system's trust store: set ACODE_MYSQL_SSL_CA" in str(untrusted)
    plain = explain_mysql_error(
        endpoint,
        RuntimeError(
            pool + "DriverError { Client requires secure connection but server does not have "
            "this capability }"
        ),
    )
    assert "demands TLS, but the server does not offer it" in str(plain)
    assert not plain.transient


def test_a_pair_started_before_tls_still_works_and_its_next_start_turns_tls_on(
    mariadb_pair_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pair left running by an older version: servers without certificates, a state.json
    without the ``tls`` flags."""
    stack: LocalStack = mariadb_pair_factory()
    command = LocalStack._server_command
    with monkeypatch.context() as old:
        old.setattr(
            LocalStack,
            "_server_command",
            lambda self, *a: [o for o in command(self, *a) if not o.startswith("--ssl")],
        )
        old.setattr(LocalStack, "_check_tls", lambda self, server: None)
        old.setattr(LocalStack, "_tls", lambda self, server: MySQLTLS())
        stack.start()
    state = json.loads(stack.state_path.read_text())
    for server in state["servers"].values():
        del server["tls"]
    stack.state_path.write_text(json.dumps(state))

    before = stack.endpoint("backup")
    assert before.tls.mode == "preferred" and _cipher(before) == ""  # works, in clear text
    stack.start()
    for role in ("primary", "backup"):
        after = stack.endpoint(role)
        assert after.tls.mode == "verify_identity" and _cipher(after), role
    stack.wait_replica_caught_up()
