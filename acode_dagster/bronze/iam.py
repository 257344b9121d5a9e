"""The IAM action each S3 request of the platform is authorized by, so an access denied names
the permission that is missing and where it is granted.

AWS does not authorize S3 requests by their API name: ``HeadBucket`` and ``ListObjectsV2`` are
``s3:ListBucket``, ``HeadObject`` is ``s3:GetObject``, every part of a multipart upload is
``s3:PutObject``, a server-side copy is ``s3:GetObject`` on its source and ``s3:PutObject`` on
its target, and ``DeleteObjects`` is ``s3:DeleteObject`` on each key (the Service Authorization
Reference for Amazon S3). The platform's role holds exactly these actions, in
``deploy/iam/acode-dagster-policy.json``; ``acode_dagster_tests/test_least_privilege.py`` shows,
against an S3 that enforces IAM, that each one is needed and that the role holding that policy
can sync, probe and mirror.
"""

from __future__ import annotations

POLICY_FILE = "deploy/iam/acode-dagster-policy.json"
"""Where the role's policy is kept, relative to the repository (named in errors)."""

S3_ACTIONS: dict[str, tuple[str, ...]] = {
    "HeadBucket": ("s3:ListBucket",),
    "ListObjectsV2": ("s3:ListBucket",),
    "ListObjectVersions": ("s3:ListBucketVersions",),
    "GetObject": ("s3:GetObject",),
    "HeadObject": ("s3:GetObject",),
    "PutObject": ("s3:PutObject",),
    "CreateMultipartUpload": ("s3:PutObject",),
    "UploadPart": ("s3:PutObject",),
    "CompleteMultipartUpload": ("s3:PutObject",),
    "CopyObject": ("s3:GetObject", "s3:PutObject"),
    "UploadPartCopy": ("s3:GetObject", "s3:PutObject"),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload",),
    "DeleteObject": ("s3:DeleteObject",),
    "DeleteObjects": ("s3:DeleteObject",),
}
"""Every S3 operation the platform sends (directly or through boto3's managed transfers) and
the IAM actions that authorize it."""

_COPIES = frozenset({"CopyObject", "UploadPartCopy"})


def s3_permission(operation: str) -> str:
    """What the role needs for ``operation``, in words: ``s3:PutObject`` or, for a copy,
    ``s3:GetObject on the source object and s3:PutObject on the target``; "" when unknown."""
    actions = S3_ACTIONS.get(operation)
    if actions is None:
        return ""
    if operation in _COPIES:
        return "s3:GetObject on the source object and s3:PutObject on the target"
    if operation == "GetObject":
        # The same request names a version when it reads one (the audit trail does).
        return "s3:GetObject (s3:GetObjectVersion when it reads a given version)"
    return " and ".join(actions)


def access_denied_hint(operation: str, bucket: str, copy_from: str | None = None) -> str:
    """The fix of an access denied on ``operation`` in ``bucket``, naming the IAM action;
    ``copy_from``: the operation is part of a server-side copy from that bucket (whose first
    request, a HeadObject, reads the source)."""
    if copy_from is not None:
        return (
            f"access denied: a copy from bucket {copy_from!r} into {bucket!r} ({operation}) "
            f"needs {s3_permission('CopyObject')}; grant them to the platform's IAM role "
            f"({POLICY_FILE}), or check the AWS credentials and the bucket policies"
        )
    needed = s3_permission(operation)
    if not needed:
        return (
            "access denied: check the AWS credentials, the IAM policy of the platform's role "
            f"({POLICY_FILE}) and the bucket policy"
        )
    return (
        f"access denied: {operation} needs {needed} in bucket {bucket!r}; grant it to the "
        f"platform's IAM role ({POLICY_FILE}), or check the AWS credentials and the bucket "
        "policy"
    )
