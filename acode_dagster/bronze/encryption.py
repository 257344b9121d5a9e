"""Server-side encryption of every object the platform writes to S3 (encryption at rest).

``ACODE_S3_SSE`` chooses the mode: ``AES256`` (SSE-S3, keys held by S3) or ``aws:kms``
(SSE-KMS, with ``ACODE_S3_KMS_KEY_ID`` or, without it, the account's AWS-managed key
``aws/s3``). Unset, nothing is asked and each bucket's default encryption applies.

S3 does not carry a source object's encryption over to a server-side copy, nor does a multipart
upload inherit anything from its parts: each request that creates an object must ask. So the
request is added where objects are created, in one place: :func:`encrypt_writes` hooks the
client's ``PutObject``, ``CopyObject`` and ``CreateMultipartUpload`` (the multipart upload and
copy that boto3's managed transfers start for large files), and
:func:`acode_dagster.bronze.store.s3_client`, which builds every S3 client of the platform,
applies it. A writer that builds its client with ``s3_client()`` needs nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acode_dagster.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SSE_SETTING = "ACODE_S3_SSE"
KMS_KEY_SETTING = "ACODE_S3_KMS_KEY_ID"
AES256 = "AES256"
KMS = "aws:kms"
MODES = (AES256, KMS)
WRITE_OPERATIONS = ("PutObject", "CopyObject", "CreateMultipartUpload")
"""Every S3 operation that creates an object. UploadPart and UploadPartCopy take the
encryption of the CreateMultipartUpload they belong to."""
_HANDLER_ID = "acode-s3-encryption"


@dataclass(frozen=True)
class S3Encryption:
    """What each object-creating request asks for; ``mode`` empty: the bucket's default."""

    mode: str = ""
    kms_key_id: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Encryption:
        env = os.environ if environ is None else environ
        text = (env.get(SSE_SETTING) or "").strip()
        key = (env.get(KMS_KEY_SETTING) or "").strip()
        modes = {m.lower(): m for m in MODES}
        mode = modes.get(text.lower(), "") if text else ""
        if text and not mode:
            raise ConfigError(
                f"{SSE_SETTING}={text!r} is not an S3 server-side encryption mode; use "
                f"{AES256} (SSE-S3) or {KMS} (SSE-KMS, with {KMS_KEY_SETTING}), or leave it "
                "unset for the bucket's default encryption"
            )
        if key and mode != KMS:
            shown = f"is {text!r}" if text else "is not set"
            raise ConfigError(
                f"{KMS_KEY_SETTING} is set but {SSE_SETTING} {shown}: a KMS key is used only "
                f"with {SSE_SETTING}={KMS}; set {SSE_SETTING}={KMS}, or unset {KMS_KEY_SETTING}"
            )
        if any(c.isspace() for c in key):
            raise ConfigError(
                f"{KMS_KEY_SETTING}={key!r} holds whitespace; use a key id, a key ARN, an alias "
                "(alias/name) or an alias ARN"
            )
        return cls(mode, key)

    @property
    def parameters(self) -> dict[str, str]:
        """The request parameters of an object-creating S3 call (none for the bucket default)."""
        if not self.mode:
            return {}
        if self.kms_key_id:
            return {"ServerSideEncryption": self.mode, "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": self.mode}

    def describe(self) -> str:
        """One line for people (``acode status``); a key id is not a secret."""
        if self.mode == AES256:
            return f"{AES256} (SSE-S3) on every object written ({SSE_SETTING})"
        if self.mode == KMS and self.kms_key_id:
            return f"{KMS} (SSE-KMS) with key {self.kms_key_id} on every object written"
        if self.mode == KMS:
            return (
                f"{KMS} (SSE-KMS) with the AWS-managed key aws/s3 on every object written "
                f"({KMS_KEY_SETTING} not set)"
            )
        return f"the bucket's default encryption ({SSE_SETTING} not set)"


def encrypt_writes(client: S3Client, encryption: S3Encryption) -> S3Client:
    """Make every object ``client`` creates ask for ``encryption``; returns the client.

    A call that names its own server-side encryption (or a customer key) keeps it. Applying it
    twice to one client changes nothing."""
    wanted = encryption.parameters
    if not wanted:
        return client

    def add_encryption(params: dict[str, Any], **_: Any) -> None:
        if "ServerSideEncryption" not in params and "SSECustomerAlgorithm" not in params:
            params.update(wanted)

    for operation in WRITE_OPERATIONS:
        client.meta.events.register(
            f"before-parameter-build.s3.{operation}",
            add_encryption,
            unique_id=f"{_HANDLER_ID}-{operation}",
        )
    return client
