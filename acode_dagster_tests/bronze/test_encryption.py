"""Encryption at rest: every object the platform writes to S3, in both buckets, carries the
server-side encryption of ``ACODE_S3_SSE`` / ``ACODE_S3_KMS_KEY_ID``.

Real parts: moto's S3 server over HTTP (which also serves KMS: the key is created there), both
bronze buckets versioned so that every object ever written stays readable, deleted or not
(staging, probes, replaced markers and leases), the session's MariaDB pair, real Dagster runs
with the health sensor ticked as the daemon ticks it, and an audit record. Each object version
is read back with ``head_object``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest

from acode_dagster.audit import AUDIT_DIR, record
from acode_dagster.bronze.encryption import S3Encryption, encrypt_writes
from acode_dagster.bronze.store import (
    LEASE_DIR,
    QUARANTINE_DIR,
    QUARANTINE_RECORD,
    STAGING_DIR,
    SUCCESS_MARKER,
    S3Store,
    s3_client,
)
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.demo.generator import Anomalies
from acode_dagster.demo.loader import load_days
from acode_dagster.errors import ConfigError
from acode_dagster.localstack import LocalStack
from acode_dagster.settings import Settings
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, TABLES, Table
from acode_dagster_tests.support.platform import Platform
from acode_dagster_tests.support.s3 import MotoServer

MULTIPART_THRESHOLD = 8 * 1024 * 1024
"""boto3's TransferConfig default: a larger upload or copy is made in parts."""
BIG_ROWS = 75_000
"""NF-e complements of one day: about 9.5 MB of Parquet, past the multipart threshold."""
SMALL_ROWS = 300


@dataclass(frozen=True)
class Written:
    """One version of one object, as ``head_object`` reads it back."""

    bucket: str
    key: str
    version: str
    size: int
    etag: str
    sse: str | None
    kms_key: str | None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key} ({self.version}): sse={self.sse} key={self.kms_key}"


def every_version(bucket: str) -> list[Written]:
    """Every version of every object in ``bucket`` (delete markers are not objects)."""
    client = s3_client()
    found = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            head = client.head_object(
                Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"]
            )
            found.append(
                Written(
                    bucket,
                    version["Key"],
                    version["VersionId"],
                    int(head["ContentLength"]),
                    str(head["ETag"]).strip('"'),
                    head.get("ServerSideEncryption"),
                    head.get("SSEKMSKeyId"),
                )
            )
    return found


def unencrypted(objects: list[Written], expected: S3Encryption) -> list[str]:
    """The objects that do not carry ``expected``, one line each (empty: all do)."""
    wanted_key = expected.kms_key_id or None
    return [str(o) for o in objects if (o.sse, o.kms_key) != (expected.mode, wanted_key)]


def assert_all_encrypted(objects: list[Written], expected: S3Encryption) -> None:
    wrong = unencrypted(objects, expected)
    assert objects, "nothing was written"
    assert not wrong, f"{len(wrong)} of {len(objects)} objects lack {expected}:\n" + "\n".join(
        wrong
    )


@pytest.fixture
def kms_key(s3_server: MotoServer) -> str:
    """A KMS key made on the same moto server (it speaks KMS too); its ARN."""
    kms = boto3.session.Session().client("kms", endpoint_url=s3_server.url)
    return str(kms.create_key(Description="acode bronze")["KeyMetadata"]["Arn"])


@pytest.fixture
def buckets(
    env: dict[str, str], s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """Primary and backup bronze roots in two versioned buckets of the moto server."""
    client = s3_client()
    names = (f"acode-enc-p-{uuid.uuid4().hex[:8]}", f"acode-enc-b-{uuid.uuid4().hex[:8]}")
    for name in names:
        client.create_bucket(Bucket=name)
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    monkeypatch.setenv("ACODE_BRONZE_URL", f"s3://{names[0]}/lake")
    monkeypatch.setenv("ACODE_BRONZE_BACKUP_URL", f"s3://{names[1]}/lake")
    monkeypatch.setenv("ACODE_CATCHUP_DAYS", "0")
    return names


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as made:
        yield made


def sync_and_probe(
    pair: LocalStack, instance: dg.DagsterInstance, day: date, tables: Sequence[Table] = TABLES
) -> Any:
    """A health tick (the probes of both buckets) and a sync of ``day``'s ``tables``, mirrored
    to the backup bucket, on the platform configured from the environment now."""
    platform = Platform(pair, instance)
    assert platform.tick() == []
    return platform.materialize(day, [bronze_key(t) for t in tables])


def assert_every_kind(objects: list[Written], buckets: tuple[str, str]) -> None:
    """Every kind of object a sync, its mirror and the probes write is among ``objects``, in
    both buckets: so the encryption check above covered each writer."""

    def some(bucket: str, *parts: str) -> bool:
        return any(o.bucket == bucket and all(p in o.key for p in parts) for o in objects)

    for bucket in buckets:
        assert some(bucket, "/_probe/"), f"no probe object in {bucket}"
        assert some(bucket, f"/{LEASE_DIR}/"), f"no lease record in {bucket}"
        assert some(bucket, f"/{STAGING_DIR}/", ".parquet"), f"no staged file in {bucket}"
        assert some(bucket, "/cog_dt_ingestion=", ".parquet"), f"no published file in {bucket}"
        assert some(bucket, "/cog_dt_ingestion=", SUCCESS_MARKER), f"no manifest in {bucket}"


def materialized(result: Any) -> set[str]:
    return {e.materialization.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def test_every_object_of_a_sync_mirror_quarantine_and_probe_carries_the_kms_key(
    mariadb_pair: LocalStack,
    buckets: tuple[str, str],
    kms_key: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    day = date(2025, 6, 17)
    # Complements big enough for multipart uploads and copies; fiscal lines with 7 % NULL CNPJ,
    # which the audit sends to quarantine.
    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        [day],
        rows={FISCAL_LINES.name: SMALL_ROWS, NFE_COMPLEMENTS.name: BIG_ROWS},
        anomalies={(FISCAL_LINES.name, day): Anomalies(null_share={"CNPJ": 0.07})},
    )
    mariadb_pair.wait_replica_caught_up()
    monkeypatch.setenv("ACODE_S3_SSE", "aws:kms")
    monkeypatch.setenv("ACODE_S3_KMS_KEY_ID", kms_key)
    expected = Settings.from_env().s3_encryption
    assert expected == S3Encryption("aws:kms", kms_key)

    result = sync_and_probe(mariadb_pair, instance, day, [FISCAL_LINES, NFE_COMPLEMENTS])
    assert materialized(result) == {bronze_key(NFE_COMPLEMENTS).path[-1]}
    mirrors = {
        e.asset_key.path[-1]: e.passed
        for e in result.get_asset_check_evaluations()
        if e.check_name == "mirror"
    }
    assert mirrors == {bronze_key(NFE_COMPLEMENTS).path[-1]: True}
    (entry,) = S3Store(buckets[0], "lake").quarantined(FISCAL_LINES, day)
    assert entry.failed == ["null_share"]
    # An operator's action leaves an audit record under the primary root.
    assert record("test.encryption", what="an audited action", actor="test") is not None

    objects = every_version(buckets[0]) + every_version(buckets[1])
    assert_all_encrypted(objects, expected)
    assert_every_kind(objects, buckets)
    assert [o for o in objects if f"/{AUDIT_DIR}/" in o.key and o.bucket == buckets[0]]
    quarantined = [o for o in objects if f"/{QUARANTINE_DIR}/" in o.key]
    assert {o.key.rsplit("/", 1)[-1] for o in quarantined} == {
        QUARANTINE_RECORD,
        *(f.name for f in entry.manifest.files),
    }
    # Past the threshold, boto3 uploads and copies in parts (S3 marks such an ETag "-<parts>"):
    # the upload into the primary's staging, the copy into the published partition, the mirror's
    # server-side copy into the backup's staging, and its copy into the backup's partition.
    big = [o for o in objects if f"/{NFE_COMPLEMENTS.name}/" in o.key and "-" in o.etag]
    assert all(o.size > MULTIPART_THRESHOLD for o in big)
    assert sorted((o.bucket, f"/{STAGING_DIR}/" in o.key) for o in big) == [
        (bucket, staged) for bucket in sorted(buckets) for staged in (False, True)
    ], [str(o) for o in big]


def test_aes256_and_the_check_catches_an_unencrypted_object(
    mariadb_pair: LocalStack,
    buckets: tuple[str, str],
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    day = date(2025, 6, 18)
    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        [day],
        rows={FISCAL_LINES.name: SMALL_ROWS, NFE_COMPLEMENTS.name: SMALL_ROWS},
    )
    mariadb_pair.wait_replica_caught_up()
    # With the setting off nothing is asked for: the check sees every object unencrypted.
    off = sync_and_probe(mariadb_pair, instance, day, [FISCAL_LINES])
    assert off.success
    before = every_version(buckets[0]) + every_version(buckets[1])
    aes = S3Encryption("AES256")
    assert len(unencrypted(before, aes)) == len(before) > 0
    with pytest.raises(AssertionError, match="objects lack"):
        assert_all_encrypted(before, aes)

    monkeypatch.setenv("ACODE_S3_SSE", "aes256")
    on = sync_and_probe(mariadb_pair, instance, day, [FISCAL_LINES])
    assert on.success
    seen = {(o.bucket, o.key, o.version) for o in before}
    written = [
        o
        for o in every_version(buckets[0]) + every_version(buckets[1])
        if (o.bucket, o.key, o.version) not in seen
    ]
    assert_all_encrypted(written, aes)
    assert_every_kind(written, buckets)

    # A server-side copy made without the platform's hook is not encrypted, even from an
    # encrypted source: S3 (and moto) do not carry encryption over, which is why CopyObject
    # and CreateMultipartUpload are hooked, not PutObject alone.
    plain = boto3.session.Session().client("s3")
    source = next(o for o in written if o.key.endswith(SUCCESS_MARKER))
    plain.copy_object(
        Bucket=source.bucket,
        Key="copied-plainly",
        CopySource={"Bucket": source.bucket, "Key": source.key},
    )
    encrypt_writes(plain, aes).copy_object(
        Bucket=source.bucket,
        Key="copied-hooked",
        CopySource={"Bucket": source.bucket, "Key": source.key},
    )
    copies = {o.key: o.sse for o in every_version(source.bucket) if o.key.startswith("copied-")}
    assert copies == {"copied-plainly": None, "copied-hooked": "AES256"}


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ACODE_S3_SSE": "aws:kms:dsse"}, "ACODE_S3_SSE='aws:kms:dsse'"),
        ({"ACODE_S3_SSE": "KMS"}, "ACODE_S3_SSE='KMS'"),
        ({"ACODE_S3_KMS_KEY_ID": "alias/acode"}, "ACODE_S3_SSE is not set"),
        (
            {"ACODE_S3_SSE": "AES256", "ACODE_S3_KMS_KEY_ID": "alias/acode"},
            "ACODE_S3_SSE is 'AES256'",
        ),
        ({"ACODE_S3_SSE": "aws:kms", "ACODE_S3_KMS_KEY_ID": "alias/a b"}, "holds whitespace"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(
    environ: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="ACODE_S3_") as refused:
        Settings.from_env(environ)
    assert named in str(refused.value)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # The client builder reads the same settings: no S3 client writes with a bad one.
    with pytest.raises(ConfigError, match="ACODE_S3_"):
        s3_client()


def test_what_each_setting_asks_for() -> None:
    assert S3Encryption.from_env({}).parameters == {}
    assert S3Encryption.from_env({"ACODE_S3_SSE": "AES256"}).parameters == {
        "ServerSideEncryption": "AES256"
    }
    managed = S3Encryption.from_env({"ACODE_S3_SSE": "AWS:KMS"})
    assert managed.parameters == {"ServerSideEncryption": "aws:kms"}
    assert "AWS-managed key aws/s3" in managed.describe()
    keyed = S3Encryption.from_env({"ACODE_S3_SSE": "aws:kms", "ACODE_S3_KMS_KEY_ID": "alias/x "})
    assert keyed.parameters == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x"}
    assert "bucket's default" in S3Encryption().describe()
