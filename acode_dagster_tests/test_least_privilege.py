"""Least privilege, proven: the platform works holding exactly its IAM policy
(``deploy/iam/acode-dagster-policy.json``), and each action of the policy is needed.

The S3 here is moto's server told to enforce IAM (``INITIAL_NO_AUTH_ACTION_COUNT=3``: its first
three requests, which create an administrator and its key, are let through; every later one must
be signed by a known key and allowed by that key's user's policies). The administrator makes the
two production buckets, a KMS key and the two MySQL secrets (the session's MariaDB pair's logins);
the platform then runs as an IAM user holding exactly the policy, with SSE-KMS and the logins
from Secrets Manager: a real sync of a day (mirrored into the backup bucket), the
bucket probes, a repair of a partition lost from the backup bucket, and an audit record. Then,
for each action of the policy, the policy without that one action is attached and the operation
that needs it fails, with an error naming the bucket (or secret), the denial and the action.

What moto cannot show: its S3 does not call KMS on the caller's behalf, so the KMS actions are
shown on the requests S3 makes to KMS (GenerateDataKey, Decrypt) made directly; and it
authorizes Object Lock headers and ``PUT ?retention`` as ``s3:PutObject``, so
``s3:PutObjectRetention`` (which AWS requires for an audit record put under retention) is not
shown here (skipped, with the reason). ``support/iam.py`` says how the policy is told to moto.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import boto3
import dagster as dg
import pytest
from botocore.exceptions import ClientError

from acode_dagster import audit
from acode_dagster.bronze.lease import Holder, LeasePolicy
from acode_dagster.bronze.mirror import diff, repair
from acode_dagster.bronze.store import (
    STAGING_DIR,
    S3Store,
    _s3_errors,
    partition_prefix,
    s3_client,
    table_prefix,
)
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.resources import build_resources
from acode_dagster.demo.loader import load_days
from acode_dagster.errors import AcodeError, BronzeError
from acode_dagster.localstack import LocalStack
from acode_dagster.routing import BACKUP, PRIMARY
from acode_dagster.settings import Settings
from acode_dagster.source.credentials import SecretCredentials
from acode_dagster.tables import FISCAL_LINES, TABLES
from acode_dagster_tests.support.iam import allowed_actions, for_moto, load_policy, without
from acode_dagster_tests.support.s3 import MotoServer
from acode_dagster_tests.support.source import platform_environ

PRIMARY_BUCKET, BACKUP_BUCKET = "farmarcas-production-bronze", "farmarcas-backup-acode"
SECRETS = {
    "ACODE_MYSQL_PRIMARY_SECRET_ID": ("farmarcas/production/acode-mysql-primary", "primary"),
    "ACODE_MYSQL_BACKUP_SECRET_ID": ("farmarcas/production/acode-mysql-backup", "backup"),
}
DAY = date(2026, 10, 21)
ROWS = {t.name: n for t, n in zip(TABLES, (600, 80, 60), strict=True)}
REGION = "us-east-1"
USER = "acode-platform"
HOLDER = Holder.here("least-privilege", purpose="repair")
LEASES = LeasePolicy(ttl_s=30, wait_s=5)


@dataclass
class Account:
    """The IAM-enforcing S3 (and KMS, Secrets Manager) and the two principals on it."""

    server: MotoServer
    admin: dict[str, str]
    platform: dict[str, str]
    kms_key: str = ""
    clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, who: dict[str, str] | None = None) -> Any:
        """A client of ``service`` as ``who`` (the administrator unless given), built once."""
        keys = who or self.admin
        made = self.clients.get((service, keys["aws_access_key_id"]))
        if made is None:
            made = _client(self.server.url, service, keys)
            self.clients[(service, keys["aws_access_key_id"])] = made
        return made

    def attach(self, policy: dict[str, Any]) -> None:
        """Make ``policy`` the platform user's only policy (as the role's, in production)."""
        self.client("iam").put_user_policy(
            UserName=USER, PolicyName="acode-dagster", PolicyDocument=json.dumps(for_moto(policy))
        )


def _client(url: str, service: str, keys: dict[str, str]) -> Any:
    return boto3.session.Session().client(  # type: ignore[call-overload]
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=keys["aws_access_key_id"],
        aws_secret_access_key=keys["aws_secret_access_key"],
    )


def _keys(answer: dict[str, Any]) -> dict[str, str]:
    key = answer["AccessKey"]
    return {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }


@pytest.fixture(scope="module")
def account(
    tmp_path_factory: pytest.TempPathFactory, mariadb_pair: LocalStack
) -> Iterator[Account]:
    server = MotoServer(
        tmp_path_factory.mktemp("moto-iam"), env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    )
    server.start()
    try:
        # The three requests moto does not check: an administrator and its key.
        boot = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = _client(server.url, "iam", boot)
        iam.create_user(UserName="admin")
        everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="admin",
            PolicyName="admin",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [everything]}),
        )
        admin = _keys(iam.create_access_key(UserName="admin"))
        made = Account(server, admin, {})
        # From here on IAM holds: the bootstrap key is nobody's.
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            made.client("s3", boot).list_buckets()
        admin_iam = made.client("iam")
        admin_iam.create_user(UserName=USER)
        made.platform = _keys(admin_iam.create_access_key(UserName=USER))
        s3 = made.client("s3")
        for bucket in (PRIMARY_BUCKET, BACKUP_BUCKET):
            s3.create_bucket(Bucket=bucket)
        # Versioned, as a bucket under Object Lock is: the audit trail reads versions there.
        s3.put_bucket_versioning(
            Bucket=BACKUP_BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
        made.kms_key = made.client("kms").create_key(Description="acode bronze")["KeyMetadata"][
            "Arn"
        ]
        secrets = made.client("secretsmanager")
        for name, role in SECRETS.values():
            endpoint = mariadb_pair.endpoint(role)
            login = {
                "username": endpoint.user,
                "password": endpoint.password,
                "host": endpoint.host,
                "port": endpoint.port,
                "dbname": endpoint.database,
                "engine": "mysql",
            }
            secrets.create_secret(Name=name, SecretString=json.dumps(login))
        load_days(mariadb_pair.endpoint("primary", admin=True), [DAY], rows=ROWS)
        mariadb_pair.wait_replica_caught_up()
        yield made
    finally:
        server.stop()


@pytest.fixture(scope="module")
def as_platform(
    account: Account, mariadb_pair: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Account]:
    """This process configured as a production pod: the platform user's keys (IRSA's role in
    production), both buckets, SSE-KMS, the MySQL logins from Secrets Manager."""
    home = tmp_path_factory.mktemp("least-privilege")
    environ = platform_environ(mariadb_pair, home / "home", home / "unused")
    environ.update(
        {
            "ACODE_PASS": "",
            "ACODE_BACKUP_PASS": "",
            "ACODE_BRONZE_URL": f"s3://{PRIMARY_BUCKET}",
            "ACODE_BRONZE_BACKUP_URL": f"s3://{BACKUP_BUCKET}",
            "ACODE_S3_SSE": "aws:kms",
            "ACODE_S3_KMS_KEY_ID": account.kms_key,
            "ACODE_OPERATOR": "least-privilege-test",
            "AWS_ENDPOINT_URL": account.server.url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": account.platform["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": account.platform["aws_secret_access_key"],
            **{setting: name for setting, (name, _) in SECRETS.items()},
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        # boto3's default session keeps the credentials it first resolved; start a fresh one.
        patch.setattr(boto3, "DEFAULT_SESSION", None)
        account.attach(load_policy())
        yield account


@pytest.fixture(scope="module")
def synced(
    as_platform: Account, tmp_path_factory: pytest.TempPathFactory
) -> dg.ExecuteInProcessResult:
    """One real sync of DAY (fiscal lines, mirrored), holding exactly the policy."""
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster"))) as instance:
        return dg.materialize(
            # One table: the other two go through the same store calls.
            [a for a in bronze_assets if bronze_key(FISCAL_LINES) in a.keys],
            partition_key=str(DAY),
            resources=build_resources(Settings.from_env()),
            instance=instance,
            raise_on_error=False,
        )


@pytest.fixture(scope="module")
def audited(as_platform: Account) -> audit.AuditRecord:
    """A record in the backup root (as one written while the primary bucket was down)."""
    one = audit.build_record("least_privilege.backup", what="kept in the backup bucket", who="t")
    audit.S3AuditTrail(BACKUP_BUCKET, "", Settings.from_env()).write(one)
    return one


@pytest.fixture
def full_policy(as_platform: Account) -> Iterator[Account]:
    """Each test starts and ends holding the whole policy."""
    as_platform.attach(load_policy())
    yield as_platform
    as_platform.attach(load_policy())


def test_a_sync_probes_a_repair_and_an_audit_record_need_nothing_more_than_the_policy(
    synced: dg.ExecuteInProcessResult, full_policy: Account
) -> None:
    failures = [e.message for e in synced.all_events if e.is_step_failure]
    assert synced.success, failures
    mirrored = {
        e.asset_key.path[-1]: e.passed
        for e in synced.get_asset_check_evaluations()
        if e.check_name == "mirror"
    }
    assert mirrored == {FISCAL_LINES.name: True}
    primary, backup = S3Store(PRIMARY_BUCKET), S3Store(BACKUP_BUCKET)
    for store in (primary, backup):
        store.probe(5)
        manifest = store.manifest(FISCAL_LINES, DAY)
        assert manifest is not None and manifest.rows == ROWS[FISCAL_LINES.name]

    # Every object was written under the platform's KMS key (read back as the administrator).
    s3 = full_policy.client("s3")
    for bucket in (PRIMARY_BUCKET, BACKUP_BUCKET):
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=partition_prefix(FISCAL_LINES, DAY))
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert keys
        for key in keys:
            assert s3.head_object(Bucket=bucket, Key=key)["SSEKMSKeyId"] == full_policy.kms_key

    # The backup bucket loses a partition; the repair copies it back (server-side, both buckets).
    lost = partition_prefix(FISCAL_LINES, DAY)
    for key in [
        o["Key"] for o in s3.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix=lost)["Contents"]
    ]:
        s3.delete_object(Bucket=BACKUP_BUCKET, Key=key)
    report = repair(
        {PRIMARY: primary, BACKUP: backup},
        [FISCAL_LINES],
        [DAY],
        holder=HOLDER,
        policy=LEASES,
        checksums=True,
    )
    assert [m.table for m in report.copied] == [FISCAL_LINES.name], report
    assert not report.failed
    after = diff(primary, backup, [FISCAL_LINES], [DAY], checksums=True)
    assert [d.decision.action for d in after] == ["in_sync"]

    # An audit record is appended and read back; the trail cannot be deleted by the platform.
    written = audit.record("least_privilege.check", what="the platform holds its policy")
    assert written is not None
    reading = audit.read_records()
    assert not reading.problems
    assert written.id in {found.record.id for found in reading.found}
    trail = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=PRIMARY_BUCKET, Prefix=f"{audit.AUDIT_DIR}/")["Contents"]
    ]
    platform_s3 = full_policy.client("s3", full_policy.platform)
    # (DeleteObjects is checked per key by AWS and only per bucket by moto: not shown here.)
    with pytest.raises(ClientError, match="AccessDenied"):
        platform_s3.delete_object(Bucket=PRIMARY_BUCKET, Key=trail[0])


# ---------------------------------------------------------------- one action at a time


def _staged_leftover(account: Account) -> str:
    day = partition_prefix(FISCAL_LINES, DAY).rsplit("/", 1)[1]
    key = f"{table_prefix(FISCAL_LINES)}/{STAGING_DIR}/{day}/{uuid.uuid4().hex[:12]}/file_x.parquet"
    account.client("s3").put_object(Bucket=PRIMARY_BUCKET, Key=key, Body=b"left behind")
    return key


def _list(account: Account) -> None:
    S3Store(PRIMARY_BUCKET).visible_files(FISCAL_LINES, DAY)
    with S3Store(BACKUP_BUCKET).staging(FISCAL_LINES, DAY):  # HeadBucket first
        pass


def _get(account: Account) -> None:
    assert S3Store(PRIMARY_BUCKET).manifest(FISCAL_LINES, DAY) is not None


def _put(account: Account) -> None:
    S3Store(BACKUP_BUCKET).probe(5)


def _delete(account: Account) -> None:
    key = _staged_leftover(account)
    store = S3Store(PRIMARY_BUCKET)
    for leftover in store.leftovers(FISCAL_LINES):
        if key.startswith(leftover.url.removeprefix(f"s3://{PRIMARY_BUCKET}/")):
            try:
                store.remove(leftover)
            finally:
                # A denied delete leaves the object; the sweep must not pretend otherwise.
                still = account.client("s3").list_objects_v2(Bucket=PRIMARY_BUCKET, Prefix=key)
                account.client("s3").delete_object(Bucket=PRIMARY_BUCKET, Key=key)
            assert not still.get("Contents"), "remove() reported success but the object is there"


def _read_audit(account: Account) -> None:
    reading = audit.read_records()
    if reading.problems:
        raise BronzeError("; ".join(reading.problems))
    assert {"least_privilege.backup"} <= {found.record.action for found in reading.found}


def _abort_multipart(account: Account) -> None:
    # Only boto3's managed transfers call it, when a multipart upload fails: called as they do.
    client = s3_client()
    key = f"{partition_prefix(FISCAL_LINES, DAY)}/file_aborted.parquet"
    upload = client.create_multipart_upload(Bucket=PRIMARY_BUCKET, Key=key)["UploadId"]
    try:
        with _s3_errors(PRIMARY_BUCKET):
            client.abort_multipart_upload(Bucket=PRIMARY_BUCKET, Key=key, UploadId=upload)
    except BronzeError:
        account.client("s3").abort_multipart_upload(Bucket=PRIMARY_BUCKET, Key=key, UploadId=upload)
        raise


def _kms(operation: str) -> Callable[[Account], None]:
    # moto's S3 does not call KMS; these are the calls S3 makes with the caller's identity.
    def call(account: Account) -> None:
        kms = account.client("kms", account.platform)
        try:
            if operation == "GenerateDataKey":
                kms.generate_data_key(KeyId=account.kms_key, KeySpec="AES_256")
            else:
                blob = account.client("kms").encrypt(KeyId=account.kms_key, Plaintext=b"k")
                kms.decrypt(CiphertextBlob=blob["CiphertextBlob"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            raise BronzeError(f"KMS key {account.kms_key}: {code} on {operation}") from None

    return call


def _secret(account: Account) -> None:
    name, _ = SECRETS["ACODE_MYSQL_PRIMARY_SECRET_ID"]
    SecretCredentials(name, setting="ACODE_MYSQL_PRIMARY_SECRET_ID", cache_s=0).get()


@dataclass(frozen=True)
class Proof:
    operation: Callable[[Account], None]
    message: tuple[str, ...]
    """What the error of the operation without the action must say."""


PROOFS: dict[str, Proof] = {
    "s3:ListBucket": Proof(
        _list, (PRIMARY_BUCKET, "AccessDenied on ListObjectsV2", "s3:ListBucket")
    ),
    "s3:ListBucketVersions": Proof(
        _read_audit, (BACKUP_BUCKET, "AccessDenied on ListObjectVersions", "s3:ListBucketVersions")
    ),
    "s3:GetObjectVersion": Proof(
        _read_audit, (BACKUP_BUCKET, "AccessDenied on GetObject", "s3:GetObjectVersion")
    ),
    "s3:GetObject": Proof(_get, (PRIMARY_BUCKET, "AccessDenied on GetObject", "s3:GetObject")),
    "s3:PutObject": Proof(_put, (BACKUP_BUCKET, "AccessDenied on PutObject", "s3:PutObject")),
    "s3:DeleteObject": Proof(
        _delete, (PRIMARY_BUCKET, "AccessDenied on DeleteObjects", "s3:DeleteObject")
    ),
    "s3:AbortMultipartUpload": Proof(
        _abort_multipart,
        (PRIMARY_BUCKET, "AccessDenied on AbortMultipartUpload", "s3:AbortMultipartUpload"),
    ),
    "kms:GenerateDataKey": Proof(_kms("GenerateDataKey"), ("GenerateDataKey",)),
    "kms:Decrypt": Proof(_kms("Decrypt"), ("Decrypt",)),
    "secretsmanager:GetSecretValue": Proof(
        _secret,
        (
            "farmarcas/production/acode-mysql-primary",
            "ACODE_MYSQL_PRIMARY_SECRET_ID",
            "secretsmanager:GetSecretValue",
        ),
    ),
}
NOT_SHOWN = {
    "s3:PutObjectRetention": "moto authorizes Object Lock headers and PUT ?retention as "
    "s3:PutObject; AWS requires s3:PutObjectRetention for a PutObject that sets a retention "
    "(PutObject API reference), which an audit record under ACODE_AUDIT_RETENTION_DAYS does",
    "cloudwatch:PutMetricData": "metrics never fail what emits them: without the action a "
    "PutMetricData is refused and the run logs one warning (test_metrics_out shows a refused "
    "endpoint costing one warning and no failure), so there is no error to name",
}


def test_every_action_of_the_policy_has_its_proof() -> None:
    assert sorted(allowed_actions(load_policy())) == sorted([*PROOFS, *NOT_SHOWN])


@pytest.mark.parametrize("action", allowed_actions(load_policy()))
def test_without_any_one_action_its_operation_fails_naming_it(
    action: str,
    synced: dg.ExecuteInProcessResult,
    audited: audit.AuditRecord,
    full_policy: Account,
) -> None:
    if action in NOT_SHOWN:
        pytest.skip(NOT_SHOWN[action])
    assert synced.success
    proof = PROOFS[action]
    proof.operation(full_policy)  # allowed with the whole policy
    full_policy.attach(without(load_policy(), action))
    with pytest.raises(AcodeError) as denied:
        proof.operation(full_policy)
    message = str(denied.value)
    print(f"without {action}: {message}")
    for part in proof.message:
        assert part in message, f"{part!r} not in {message!r}"
    assert full_policy.platform["aws_secret_access_key"] not in message
