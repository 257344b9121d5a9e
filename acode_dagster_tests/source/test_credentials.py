"""MySQL logins from AWS Secrets Manager (moto's server over HTTP), rotated under a running
platform: the session pair's servers, a user of the test's own whose password is rotated in the
server and in the secret, real Dagster runs and real health ticks."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import dagster as dg
import pytest

from acode_dagster.audit import read_records
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.redundancy.sensors import acode_health_sensor, run_probes
from acode_dagster.defs.resources import MySQLServerResource
from acode_dagster.demo.loader import load_days
from acode_dagster.errors import AcodeError, ConfigError, SourceError
from acode_dagster.localstack import LocalStack, native_password_hash
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.replicator import stream_batches
from acode_dagster.routing import Route
from acode_dagster.source.credentials import SecretCredentials, shared_credentials
from acode_dagster.tables import FISCAL_LINES
from acode_dagster_tests.support.platform import Platform
from acode_dagster_tests.support.s3 import MotoServer

DAY = date(2026, 11, 5)  # the day test_definitions loads: the same rows, whichever runs first
CACHE_S = 300.0
"""Longer than any test: a rotation is found by the server's refusal, not the cache expiring."""
SPECIAL = "/#?@:%+ &="
"""What a URL parser trips on, in every password."""


def new_password() -> str:
    return f"Rot{SPECIAL}{uuid.uuid4().hex}"


class SecretsManager:
    """The secrets of one test in moto's Secrets Manager, and every GetSecretValue made by the
    clients it builds (counted by botocore's event hooks on real calls over HTTP)."""

    def __init__(self) -> None:
        self.client = boto3.client("secretsmanager")
        self.reads: list[str] = []

    def counting_client(self) -> Any:
        client = boto3.client("secretsmanager")

        def count(params: dict[str, Any], **_: Any) -> None:
            self.reads.append(str(params["SecretId"]))

        client.meta.events.register("before-parameter-build.secrets-manager.GetSecretValue", count)
        return client

    def create(self, value: str | dict[str, Any]) -> str:
        name = f"acode/test/{uuid.uuid4().hex[:12]}"
        text = value if isinstance(value, str) else json.dumps(value)
        with quiet_botocore():
            self.client.create_secret(Name=name, SecretString=text)
        return name

    def put(self, name: str, value: dict[str, Any]) -> str:
        with quiet_botocore():
            answer = self.client.put_secret_value(SecretId=name, SecretString=json.dumps(value))
        return str(answer["VersionId"])

    def reads_of(self, name: str) -> int:
        return self.reads.count(name)


@contextmanager
def quiet_botocore() -> Iterator[None]:
    """The test's own writes of a secret (what a rotation does, not the platform) are kept out
    of the captured debug logs, whose every line the platform answers for."""
    logger = logging.getLogger("botocore")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@pytest.fixture
def secrets(s3_server: MotoServer) -> SecretsManager:
    return SecretsManager()


@dataclass
class RotatingUser:
    """A login of the test's own on the session pair (made on the primary, replicated)."""

    stack: LocalStack
    name: str = field(default_factory=lambda: f"rot_{uuid.uuid4().hex[:8]}")
    passwords: list[str] = field(default_factory=list)

    @property
    def password(self) -> str:
        return self.passwords[-1]

    def rotate(self, password: str | None = None) -> str:
        """A new password in the servers (the hash only: the binlog holds no password)."""
        self.passwords.append(password or new_password())
        verb = "CREATE USER" if len(self.passwords) == 1 else "ALTER USER"
        conn = self.stack.endpoint("primary", admin=True).connect()
        try:
            with conn.cursor() as cursor:
                for host in ("127.0.0.1", "localhost"):
                    cursor.execute(
                        f"{verb} %s@%s IDENTIFIED BY PASSWORD %s",
                        (self.name, host, native_password_hash(self.password)),
                    )
                    if verb == "CREATE USER":
                        to = f"TO '{self.name}'@'{host}'"
                        cursor.execute(rf"GRANT SELECT, SHOW VIEW ON `acode\_farmarcas%`.* {to}")
                        cursor.execute(f"GRANT REPLICATION CLIENT, SLAVE MONITOR ON *.* {to}")
        finally:
            conn.close()
        self.stack.wait_replica_caught_up()
        return self.password

    def secret(self, role: str, *, where: bool = False) -> dict[str, Any]:
        """The secret as RDS rotation writes it; with ``where``, host, port and dbname too."""
        value: dict[str, Any] = {
            "username": self.name,
            "password": self.password,
            "engine": "mariadb",
        }
        if where:
            endpoint = self.stack.endpoint(role)
            value |= {"host": endpoint.host, "port": endpoint.port, "dbname": endpoint.database}
        return value

    def hidden(self) -> list[str]:
        """Every form a password could be shown in."""
        return [form for p in self.passwords for form in (p, quote(p, safe=""), p[3:12])]

    def drop(self) -> None:
        conn = self.stack.endpoint("primary", admin=True).connect()
        try:
            with conn.cursor() as cursor:
                for host in ("127.0.0.1", "localhost"):
                    cursor.execute("DROP USER IF EXISTS %s@%s", (self.name, host))
        finally:
            conn.close()


@pytest.fixture
def user(mariadb_pair: LocalStack) -> Iterator[RotatingUser]:
    made = RotatingUser(mariadb_pair)
    made.rotate()
    yield made
    made.drop()


def assert_nothing_shown(user: RotatingUser, *texts: str) -> None:
    for text in texts:
        for secret in user.hidden():
            assert secret not in text


def rereads() -> list[Any]:
    return [found.record for found in read_records(action="credential.reread").found]


# ------------------------------------------------------------------ rotation under a platform


@pytest.fixture
def platform(  # noqa: PLR0917
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    mariadb_pair: LocalStack,
    secrets: SecretsManager,
    user: RotatingUser,
    tmp_path: Path,
) -> Iterator[tuple[Platform, dict[str, str]]]:
    """The platform as production runs it with rotation: the primary wholly from its secret
    (RDS's host, port and dbname), the backup from its URL with the login from its secret; no
    password in the environment."""
    ids = {
        "primary": secrets.create(user.secret("primary", where=True)),
        "backup": secrets.create(user.secret("backup")),
    }
    for name in ("ACODE_MYSQL_PRIMARY_URL", "ACODE_PASS", "ACODE_BACKUP_PASS"):
        monkeypatch.delenv(name)
    backup = mariadb_pair.endpoint("backup")
    monkeypatch.setenv("ACODE_MYSQL_BACKUP_URL", f"mysql://{backup.address}/{backup.database}")
    monkeypatch.setenv("ACODE_MYSQL_PRIMARY_SECRET_ID", ids["primary"])
    monkeypatch.setenv("ACODE_MYSQL_BACKUP_SECRET_ID", ids["backup"])
    monkeypatch.setenv("ACODE_SECRET_CACHE_S", f"{CACHE_S:g}")
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", str(tmp_path / "bronze-backup"))
    for role, secret_id in ids.items():
        # The process's shared credentials of these secrets, made first with a counting client:
        # the platform's resources then use these very objects.
        shared_credentials(
            secret_id,
            setting=f"ACODE_MYSQL_{role.upper()}_SECRET_ID",
            cache_s=CACHE_S,
            client=secrets.counting_client,
        ).get()  # read once: each side's cache holds the password in force before any rotation
    load_days(mariadb_pair.endpoint("primary", admin=True), [DAY])
    mariadb_pair.wait_replica_caught_up()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield Platform(mariadb_pair, instance), ids


def rotate_everywhere(user: RotatingUser, secrets: SecretsManager, ids: dict[str, str]) -> None:
    """Rotation as RDS does it: the server's password, then the secret's."""
    user.rotate()
    secrets.put(ids["primary"], user.secret("primary", where=True))
    secrets.put(ids["backup"], user.secret("backup"))


def test_a_password_rotated_between_two_syncs_and_during_a_health_tick_needs_no_restart(
    platform: tuple[Platform, dict[str, str]],
    secrets: SecretsManager,
    user: RotatingUser,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    acode, ids = platform
    fiscal = [bronze_key(FISCAL_LINES)]

    first = acode.materialize(DAY, fiscal)
    assert first.success
    assert secrets.reads_of(ids["primary"]) == 1
    assert rereads() == []

    rotate_everywhere(user, secrets, ids)
    second = acode.materialize(DAY, fiscal)  # the same process, the same resource objects
    assert second.success, "a sync failed across a rotation"
    # One read to start, one re-read after the server refused the old password: the Arrow
    # reader's connections, after the preflight's retry, took the new one from the cache.
    assert secrets.reads_of(ids["primary"]) == 2
    (record,) = rereads()
    assert record.action == "credential.reread" and "ACODE_MYSQL_PRIMARY_SECRET_ID" in record.what
    assert record.before["version_id"] != record.after["version_id"]

    rotate_everywhere(user, secrets, ids)
    with dg.build_sensor_context(instance=acode.instance, resources=acode.resources) as context:
        tick = acode_health_sensor(context)
    assert isinstance(tick, dg.SensorResult)
    observation = tick.asset_events[0]
    assert isinstance(observation, dg.AssetObservation)
    probes = {k: v.value for k, v in observation.metadata.items()}
    assert probes["mysql_primary_healthy"] == 1 and probes["mysql_backup_healthy"] == 1, probes
    assert acode.route == Route("primary", "primary")
    assert secrets.reads_of(ids["primary"]) == 3 and secrets.reads_of(ids["backup"]) == 2
    records = rereads()
    assert len(records) == 3  # one per refusal: the sync's, then each probe's
    assert {"ACODE_MYSQL_PRIMARY_SECRET_ID", "ACODE_MYSQL_BACKUP_SECRET_ID"} <= {
        r.what.split(": ")[1].split(" ")[0] for r in records
    }

    events = "\n".join(
        repr(record) for run in (first, second) for record in acode.instance.all_logs(run.run_id)
    )
    out, err = capfd.readouterr()
    assert_nothing_shown(
        user,
        events,
        repr(tick),
        caplog.text,
        out,
        err,
        "\n".join(r.to_json() for r in records),
    )


def test_a_login_refused_again_after_the_re_read_fails_clearly_once(
    platform: tuple[Platform, dict[str, str]],
    secrets: SecretsManager,
    user: RotatingUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server rotated, the secret not (yet): one re-read, no loop, an error naming the
    setting and no password."""
    acode, ids = platform
    with dg.build_resources(acode.resources) as ready:
        endpoint = ready.acode_sources.endpoint("primary")
    user.rotate()
    with pytest.raises(SourceError) as failure:
        endpoint.connect()
    message = str(failure.value)
    assert "ACODE_MYSQL_PRIMARY_SECRET_ID" in message and "refused" in message
    assert failure.value.transient  # a rotation halfway: a retried sync gets through
    assert secrets.reads_of(ids["primary"]) == 2
    assert len(rereads()) == 1
    assert_nothing_shown(user, message, caplog.text)


# ------------------------------------------------------------------ the Arrow reader's path


def test_the_arrow_reader_refused_re_reads_the_secret_and_retries(
    mariadb_pair: LocalStack, secrets: SecretsManager, user: RotatingUser, env: dict[str, str]
) -> None:
    """The reader's own login (no preflight before it here) refused: one re-read, one retry,
    the rows. connectorx's pool takes 30 s to give up on a refused login."""
    secret_id = secrets.create(user.secret("primary"))
    credentials = SecretCredentials(
        secret_id, setting="ACODE_MYSQL_PRIMARY_SECRET_ID", client=secrets.counting_client
    )
    base = mariadb_pair.endpoint("primary")
    endpoint = MySQLEndpoint(
        base.host, base.port, user.name, base.database, credentials=credentials
    )
    assert endpoint.login()[1] == user.password  # cached now
    user.rotate()
    secrets.put(secret_id, user.secret("primary"))
    batches = list(stream_batches(endpoint, "SELECT 1 AS one", 16))
    assert [b.to_pydict() for b in batches] == [{"one": [1]}]
    assert secrets.reads_of(secret_id) == 2
    assert len(rereads()) == 1
    assert user.passwords[0] in endpoint.secrets() and user.password in endpoint.secrets()


# ------------------------------------------------------------------ the cache


def test_two_connects_within_the_cache_time_read_the_secret_once(
    mariadb_pair: LocalStack, secrets: SecretsManager, user: RotatingUser
) -> None:
    secret_id = secrets.create(user.secret("primary", where=True))

    def endpoint(cache_s: float) -> MySQLEndpoint:
        credentials = SecretCredentials(
            secret_id, setting="S", cache_s=cache_s, client=secrets.counting_client
        )
        base = mariadb_pair.endpoint("primary")
        return MySQLEndpoint(
            base.host, base.port, user.name, base.database, credentials=credentials
        )

    cached = endpoint(60)
    for _ in range(2):
        cached.connect().close()
    assert secrets.reads_of(secret_id) == 1

    uncached = endpoint(0)  # the same two connects, no cache: the count can tell them apart
    for _ in range(2):
        uncached.connect().close()
    assert secrets.reads_of(secret_id) == 3


# ------------------------------------------------------------------ malformed or missing


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Kx93vQ/#?not-json", "is not JSON"),
        (["Kx93vQ/#?"], "not an object"),
        ({"username": "acode", "pass": "Kx93vQ/#?"}, 'no "password" key'),
        ({"username": "acode", "password": "Kx93vQ/#?", "port": "33o6"}, '"port"'),
        ({"username": "acode", "password": "Kx93vQ/#?"}, "has no host, dbname"),
    ],
)
def test_a_wrong_shaped_secret_is_a_clear_error_naming_the_setting(
    secrets: SecretsManager,
    tmp_path: Any,
    value: str | list[str] | dict[str, Any],
    says: str,
) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    secret_id = secrets.create(text)
    resource = MySQLServerResource(
        role="backup", secret_id=secret_id, stack_home=str(tmp_path), secret_cache_s=0
    )
    with pytest.raises(ConfigError) as failure:
        resource.endpoint()
    message = str(failure.value)
    assert "ACODE_MYSQL_BACKUP_SECRET_ID" in message and secret_id in message
    assert says in message
    assert "Kx93vQ" not in message and "33o6" not in message


def test_a_missing_secret_names_the_setting_and_fails_the_probe_not_the_tick(
    secrets: SecretsManager, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from acode_dagster.defs.resources import build_resources
    from acode_dagster.settings import Settings

    monkeypatch.setenv("ACODE_MYSQL_PRIMARY_SECRET_ID", f"acode/absent/{uuid.uuid4().hex}")
    with dg.build_resources(build_resources(Settings.from_env())) as ready:
        results = run_probes(ready.acode_sources, ready.bronze, ready.redundancy)
    primary = results["mysql_primary"]
    assert not primary.healthy
    assert "ACODE_MYSQL_PRIMARY_SECRET_ID" in primary.reason
    assert "does not exist" in primary.reason
    assert results["mysql_backup"].healthy  # the environment's password still works


def test_a_secret_id_that_cannot_be_one_is_refused_by_the_settings() -> None:
    from acode_dagster.settings import Settings

    with pytest.raises(ConfigError, match="ACODE_MYSQL_BACKUP_SECRET_ID is not a Secrets"):
        Settings.from_env({"ACODE_MYSQL_BACKUP_SECRET_ID": "my secret Kx93vQ"})
    assert Settings.from_env({"ACODE_SECRET_CACHE_S": "5"}).secret_cache_s == 5


def test_secrets_manager_unreachable_keeps_the_last_read_login(
    secrets: SecretsManager, user: RotatingUser
) -> None:
    """Past the cache, a Secrets Manager that does not answer does not stop the connections
    that the last read login still opens; a forced read does fail, transiently."""
    secret_id = secrets.create(user.secret("primary"))
    clock = [0.0]
    broken: list[bool] = []

    def client() -> Any:
        made = secrets.counting_client()

        def fail(**_: Any) -> None:
            if broken:
                from botocore.exceptions import EndpointConnectionError

                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

        made.meta.events.register("before-call.secrets-manager.GetSecretValue", fail)
        return made

    credentials = SecretCredentials(
        secret_id,
        setting="ACODE_MYSQL_PRIMARY_SECRET_ID",
        cache_s=1,
        client=client,
        clock=lambda: clock[0],
    )
    first = credentials.get()
    broken.append(True)
    clock[0] = 10
    assert credentials.get() is first
    with pytest.raises(AcodeError) as failure:
        credentials.refresh()
    assert failure.value.transient and "ACODE_MYSQL_PRIMARY_SECRET_ID" in str(failure.value)


def test_secret_credentials_and_endpoints_never_show_the_password(
    secrets: SecretsManager, user: RotatingUser
) -> None:
    secret_id = secrets.create(user.secret("primary", where=True))
    credentials = SecretCredentials(secret_id, setting="S", client=secrets.counting_client)
    secret = credentials.get()
    endpoint = MySQLEndpoint("h", 1, "u", "d", credentials=credentials)
    assert_nothing_shown(user, repr(secret), repr(credentials), repr(endpoint), endpoint.display)
