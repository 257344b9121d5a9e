"""The platform's IAM policy (``deploy/iam/acode-dagster-policy.json``) and where the code uses
each action it allows: the evidence ``test_deploy`` holds the policy to, and what
``test_least_privilege`` loads into an S3 server that enforces IAM.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acode_dagster.bronze.iam import POLICY_FILE

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / POLICY_FILE


@dataclass(frozen=True)
class Use:
    """One place in the code whose request needs the action: ``needle`` is text of ``path``."""

    path: str
    needle: str
    why: str


USES: dict[str, tuple[Use, ...]] = {
    "s3:ListBucket": (
        Use("acode_dagster/bronze/store.py", "head_bucket(", "HeadBucket before a sync reads"),
        Use(
            "acode_dagster/bronze/store.py",
            'get_paginator("list_objects_v2")',
            "partitions, staging leftovers, quarantine, stale files of a swap",
        ),
        Use("acode_dagster/landing.py", "get_file_info(selector)", "the files Airbyte landed"),
    ),
    "s3:ListBucketVersions": (
        Use(
            "acode_dagster/audit.py",
            'get_paginator("list_object_versions")',
            "acode audit reads every version (a record under a delete marker too)",
        ),
    ),
    "s3:GetObjectVersion": (
        Use("acode_dagster/audit.py", '["VersionId"]', "acode audit reads a given version"),
    ),
    "s3:GetObject": (
        Use("acode_dagster/bronze/store.py", ".get_object(", "manifests, leases, probes"),
        Use("acode_dagster/bronze/store.py", "open_input_file(", "Parquet footers and rows"),
        Use("acode_dagster/bronze/store.py", "client.copy(", "the source of a server-side copy"),
        Use("acode_dagster/audit.py", ".get_object(", "acode audit"),
        Use("acode_dagster/landing.py", "open_input_file(", "landed files (airbyte mode)"),
    ),
    "s3:PutObject": (
        Use("acode_dagster/bronze/store.py", "upload_file(", "data files, multipart included"),
        Use("acode_dagster/bronze/store.py", ".put_object(", "markers, leases, probes"),
        Use("acode_dagster/bronze/store.py", "client.copy(", "the target of a server-side copy"),
        Use("acode_dagster/audit.py", ".put_object(", "audit records (If-None-Match)"),
    ),
    "s3:DeleteObject": (
        Use("acode_dagster/bronze/store.py", ".delete_object(", "marker, lease, probe"),
        Use("acode_dagster/bronze/store.py", ".delete_objects(", "staging, stale files, sweep"),
    ),
    "s3:AbortMultipartUpload": (
        Use(
            "acode_dagster/bronze/store.py",
            "upload_file(",
            "boto3's managed transfer aborts a multipart upload that failed",
        ),
    ),
    "s3:PutObjectRetention": (
        Use("acode_dagster/audit.py", '"ObjectLockRetainUntilDate"', "audit records' lock"),
    ),
    "kms:GenerateDataKey": (
        Use("acode_dagster/bronze/encryption.py", '"CreateMultipartUpload"', "SSE-KMS writes"),
    ),
    "kms:Decrypt": (
        Use(
            "acode_dagster/bronze/encryption.py",
            '"CopyObject"',
            "reads and copies of SSE-KMS objects, multipart completion",
        ),
    ),
    "secretsmanager:GetSecretValue": (
        Use("acode_dagster/source/credentials.py", ".get_secret_value(", "the MySQL logins"),
    ),
    "cloudwatch:PutMetricData": (
        Use("acode_dagster/observability/metrics.py", ".put_metric_data(", "metrics out"),
    ),
}


def load_policy() -> dict[str, Any]:
    return json.loads(POLICY.read_text())  # type: ignore[no-any-return]


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allowed_actions(policy: dict[str, Any]) -> list[str]:
    """Every action an Allow statement names, in the order the policy names them."""
    found: list[str] = []
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow":
            found += [a for a in _listed(statement["Action"]) if a not in found]
    return found


def without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    """``policy`` with ``action`` taken out of every Allow statement (empty ones dropped)."""
    statements = []
    for statement in copy.deepcopy(policy["Statement"]):
        if statement["Effect"] == "Allow":
            statement["Action"] = [a for a in _listed(statement["Action"]) if a != action]
            if not statement["Action"]:
                continue
        statements.append(statement)
    return {**policy, "Statement": statements}


def for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` as moto 5.2 must be told it to authorize what AWS authorizes with it.

    moto names three requests differently from AWS (moto/s3/responses.py ``ACTION_MAP``,
    moto/core/responses.py ``call_action``): HeadBucket is ``s3:HeadBucket`` there
    (``s3:ListBucket`` in AWS); DeleteObjects is checked once against the bucket's ARN (in AWS
    against each key's); and KMS and Secrets Manager actions are checked against the resource
    ``*`` whatever the request names. So a statement allowing ``s3:ListBucket`` also allows
    ``s3:HeadBucket``, one allowing ``s3:DeleteObject`` on keys also names their buckets, and
    KMS and Secrets Manager statements name ``*``. Nothing else changes: actions, effects and S3
    keys are checked as written."""
    statements = []
    for statement in copy.deepcopy(policy["Statement"]):
        actions = _listed(statement["Action"])
        if all(a.startswith("cloudwatch:") for a in actions):
            continue  # the S3 server has no CloudWatch to authorize; its condition is moto's gap

        resources = _listed(statement["Resource"])
        if all(a.split(":")[0] in ("kms", "secretsmanager") for a in actions):
            resources = ["*"]
        if "s3:ListBucket" in actions:
            actions.append("s3:HeadBucket")
        if "s3:DeleteObject" in actions and statement["Effect"] == "Allow":
            resources += sorted({r.split("/", 1)[0] for r in resources})
        statement["Action"], statement["Resource"] = actions, resources
        statements.append(statement)
    return {**policy, "Statement": statements}
