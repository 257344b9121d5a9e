"""The audit trail: one JSON record per operator or automatic action, kept in the bronze bucket.

Every route change, pin and unpin, quarantine release and discard, backfill or sync launched by an
operator command, and credential re-read calls :func:`record`. A record says when (UTC), who (the
operator, ``ACODE_OPERATOR`` or the OS user, or the automatic actor such as
``dagster:health_sensor``), what, why, the state before and after, the host, and the Dagster run
or sensor it came from. It is written as its own object::

    <bronze root>/_audit/YYYY/MM/DD/<when>-<action>-<id>.json    (or <action>-<id>.json, keyed)

under the primary bronze root (``ACODE_BRONZE_URL``), or under the backup root
(``ACODE_BRONZE_BACKUP_URL``) when the primary cannot be written, so a record is not lost while one
bucket is down; :func:`read_records` reads both and gives each record once. The leading ``_`` keeps
the prefix out of every reader of the bronze tables.

On S3 the objects go through :func:`acode_dagster.bronze.store.s3_client`, so they carry the
platform's server-side encryption, and with ``ACODE_AUDIT_RETENTION_DAYS`` set each is put under
S3 Object Lock (``ACODE_AUDIT_LOCK_MODE``, COMPLIANCE by default): nobody, the platform included,
can delete or overwrite it before its retention ends. On a folder root a record is made read-only,
which keeps out mistakes, not an owner who means it: a folder has no lock.

:func:`record` never raises: an audit trail that could fail an operation would be switched off. A
record that cannot be written anywhere is logged as an error with the reason.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
import os
import re
import socket
import stat
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acode_dagster.errors import AcodeError, BronzeError, ConfigError, redact
from acode_dagster.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

AUDIT_DIR = "_audit"
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class AuditRecord:
    """One audited action, as written (JSON, one object per record)."""

    id: str
    when: str
    """UTC, ISO 8601 with microseconds and ``+00:00``."""
    who: str
    action: str
    what: str
    why: str
    before: Any
    after: Any
    host: str
    run_id: str | None = None
    sensor: str | None = None
    key: str | None = None
    """The caller's idempotency key: a retried caller with the same key writes no second record."""

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.when)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> AuditRecord:
        data = json.loads(text)
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def object_name(self) -> str:
        """``YYYY/MM/DD/<when>-<action>-<id>.json``: the day folder lets a reader list only the
        days it asks for."""
        at = self.at
        action = _NAME_SAFE.sub("_", self.action)
        if self.key is not None:
            # A keyed record's name leaves the time out: a retry minutes later meets the first
            # record (callers with an event time pass it as ``at``, which fixes the day too).
            return f"{at:%Y/%m/%d}/{action}-{self.id}.json"
        return f"{at:%Y/%m/%d}/{at:%Y%m%dT%H%M%S.%fZ}-{action}-{self.id}.json"


def operator(settings: Settings | None = None) -> str:
    """Who acts from this shell: ``ACODE_OPERATOR``, else the OS user."""
    name = settings.operator if settings is not None else ""
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment nor the password database (containers)
        return f"uid:{os.getuid()}"


def build_record(
    action: str,
    *,
    what: str,
    why: str = "",
    before: object = None,
    after: object = None,
    key: str | None = None,
    who: str,
    at: datetime | None = None,
    run_id: str | None = None,
    sensor: str | None = None,
    host: str | None = None,
) -> AuditRecord:
    """The record of one action (pure but for the clock and the host name when not given).

    With ``key``, the id is derived from the action and the key, so the same action retried the
    same day (of ``at``, when given) lands on the same object name."""
    if not action.strip():
        raise ValueError("an audit record needs an action, e.g. 'route.pin'")
    when = (at or datetime.now(UTC)).astimezone(UTC)
    if key is not None:
        record_id = hashlib.sha256(f"{action}\0{key}".encode()).hexdigest()[:24]
    else:
        record_id = uuid.uuid4().hex[:24]
    return AuditRecord(
        id=record_id,
        when=when.isoformat(),
        who=who,
        action=action,
        what=redact(what),
        why=redact(why),
        before=_plain(before),
        after=_plain(after),
        host=host if host is not None else socket.gethostname(),
        run_id=run_id,
        sensor=sensor,
        key=key,
    )


def record(
    action: str,
    *,
    what: str,
    why: str = "",
    before: object = None,
    after: object = None,
    key: str | None = None,
    actor: str | None = None,
    at: datetime | None = None,
    run_id: str | None = None,
    sensor: str | None = None,
) -> AuditRecord | None:
    """Append one record of ``action`` to the audit trail; never raises.

    ``actor`` names an automatic actor (``dagster:health_sensor``); without it the record is the
    operator's. ``key`` makes the record idempotent: a retried caller with the same key writes no
    second record (it gets the record back all the same). ``before`` and ``after`` are made JSON
    (unknown types as their ``str``); never pass a secret in any field. Returns None when the
    record could not be written anywhere (logged as an error with the reason)."""
    try:
        settings = Settings.from_env()
        built = build_record(
            action,
            what=what,
            why=why,
            before=before,
            after=after,
            key=key,
            who=actor or operator(settings),
            at=at,
            run_id=run_id,
            sensor=sensor,
        )
    except Exception as exc:
        log.error("audit record of %s not written: %s", action, _reason(exc))
        return None
    failures: list[str] = []
    for setting, url in _roots(settings):
        try:
            AuditTrail.open(url, settings, setting=setting).write(built)
        except Exception as exc:
            failures.append(f"{setting}: {_reason(exc)}")
            continue
        if failures:
            log.warning(
                "audit record %s of %s written to the backup root (%s) because %s",
                built.id,
                action,
                setting,
                "; ".join(failures),
            )
        return built
    log.error(
        "audit record of %s (%s) not written anywhere: %s", action, built.what, "; ".join(failures)
    )
    return None


@dataclass(frozen=True)
class FoundRecord:
    record: AuditRecord
    roots: tuple[str, ...]
    """The settings of the roots holding it (``ACODE_BRONZE_URL``, ``ACODE_BRONZE_BACKUP_URL``):
    a record written to the backup while the primary was down, and again by a retry, is in
    both."""


@dataclass(frozen=True)
class AuditReading:
    found: list[FoundRecord]
    """Each record once, oldest first."""
    problems: list[str]
    """The roots that could not be read, and why."""


def read_records(
    since: datetime | None = None,
    action: str | None = None,
    settings: Settings | None = None,
) -> AuditReading:
    """Every record of both roots at or after ``since`` (of ``action``, or whose action starts
    with ``action.``), each once, oldest first. A root that cannot be read is a problem in the
    reading; BronzeError naming both when neither can be read."""
    settings = settings or Settings.from_env()
    seen: dict[str, tuple[AuditRecord, list[str]]] = {}
    problems: list[str] = []
    roots = _roots(settings)
    for setting, url in roots:
        try:
            found = list(AuditTrail.open(url, settings, setting=setting).records(since))
        except ConfigError:
            raise
        except Exception as exc:
            problems.append(f"{setting}: {_reason(exc)}")
            continue
        for one in found:
            where = seen.setdefault(one.id, (one, []))[1]
            if setting not in where:
                where.append(setting)
    if len(problems) == len(roots):
        raise BronzeError("no audit root could be read: " + "; ".join(problems), transient=True)
    chosen = [
        FoundRecord(one, tuple(where))
        for one, where in seen.values()
        if (since is None or one.at >= since)
        and (action is None or one.action == action or one.action.startswith(action + "."))
    ]
    return AuditReading(sorted(chosen, key=lambda f: (f.record.when, f.record.id)), problems)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``YYYY-MM-DD`` (that day's start, UTC) or a duration back from now: ``7d``, ``12h``,
    ``30m``."""
    value = text.strip()
    match = re.fullmatch(r"(\d+)\s*([dhm])", value)
    if match:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: int(match.group(1))})
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is neither a day nor a duration; use YYYY-MM-DD or e.g. 7d, 12h"
        ) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class AuditTrail:
    """The audit prefix of one bronze root (a folder or S3)."""

    @staticmethod
    def open(url: str, settings: Settings, *, setting: str = "ACODE_BRONZE_URL") -> AuditTrail:
        from acode_dagster.bronze.store import parse_bronze_url

        kind, where = parse_bronze_url(url, setting=setting)
        if kind == "s3":
            bucket, _, prefix = where.partition("/")
            return S3AuditTrail(bucket, prefix, settings)
        return FolderAuditTrail(Path(where))

    def write(self, one: AuditRecord) -> bool:
        """Write ``one``; False when a record of the same name is already there (a retry)."""
        raise NotImplementedError

    def records(self, since: datetime | None = None) -> Iterator[AuditRecord]:
        raise NotImplementedError


class FolderAuditTrail(AuditTrail):
    def __init__(self, root: Path):
        self.base = root / AUDIT_DIR

    def write(self, one: AuditRecord) -> bool:
        path = self.base / one.object_name()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a name of its own (O_EXCL), then linked to its final name: the link
        # is the idempotence check (it fails when the name exists, atomically), and a reader
        # never meets a half-written record.
        draft = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(one.to_json().encode())
                out.flush()
                os.fsync(out.fileno())
            # Read-only keeps out an accidental edit; it is not a lock (the owner can undo it).
            draft.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            try:
                os.link(draft, path)
            except FileExistsError:
                return False
        finally:
            with contextlib.suppress(OSError):
                draft.unlink()
        return True

    def records(self, since: datetime | None = None) -> Iterator[AuditRecord]:
        if not self.base.is_dir():
            return
        for day_dir in _day_dirs(self.base, since):
            for path in sorted(day_dir.glob("*.json")):
                found = _parsed(path.read_bytes(), str(path))
                if found is not None:
                    yield found


class S3AuditTrail(AuditTrail):
    def __init__(
        self, bucket: str, prefix: str, settings: Settings, client: S3Client | None = None
    ):
        self.bucket = bucket
        self.prefix = "/".join(p for p in (prefix.strip("/"), AUDIT_DIR) if p)
        self.settings = settings
        self._client = client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            from botocore.config import Config

            from acode_dagster.bronze.store import s3_client

            # Built by s3_client, so the record carries the platform's encryption. Fewer and
            # shorter attempts than a sync's client: a health tick writes the record of its route
            # change inside Dagster's 60 s, and a bucket that does not answer has the backup
            # root behind it.
            # At worst 2 x (2 + 5) s for a bucket that hangs: the tick still fits with its probes.
            config = Config(
                retries={"total_max_attempts": 2, "mode": "standard"},
                connect_timeout=2,
                read_timeout=5,
            )
            self._client = s3_client(config)
        return self._client

    def write(self, one: AuditRecord) -> bool:
        from botocore.exceptions import ClientError

        from acode_dagster.bronze.store import _CONDITION_FAILED, _s3_errors

        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": f"{self.prefix}/{one.object_name()}",
            "Body": one.to_json().encode(),
            "ContentType": "application/json",
            # Conditional create: S3 refuses a second object of the same name (a retry).
            "IfNoneMatch": "*",
        }
        days = self.settings.audit_retention_days
        passthrough = _CONDITION_FAILED
        if days:
            args["ObjectLockMode"] = self.settings.audit_lock_mode
            # From the time written, not the action's: a record written late keeps its full term.
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=days)
            # S3 refuses an Object Lock put without an integrity checksum (Content-MD5 or a
            # flexible checksum); ask for one whatever AWS_REQUEST_CHECKSUM_CALCULATION says.
            args["ChecksumAlgorithm"] = "SHA256"
            passthrough = passthrough | _LOCK_REFUSED
        try:
            with _s3_errors(self.bucket, passthrough=passthrough):
                self.client.put_object(**args)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code"))
            if code in _CONDITION_FAILED:
                return False
            raise ConfigError(
                f"ACODE_AUDIT_RETENTION_DAYS={days} asks for S3 Object Lock, but bucket "
                f"{self.bucket!r} refused a locked record ({code}: {error.get('Message', '')}); "
                "Object Lock is likely not enabled on it: enable it (aws s3api "
                f"put-object-lock-configuration --bucket {self.bucket} --object-lock-configuration "
                "ObjectLockEnabled=Enabled on a versioned bucket, or create the bucket with "
                "--object-lock-enabled-for-bucket), or unset ACODE_AUDIT_RETENTION_DAYS"
            ) from None
        return True

    def records(self, since: datetime | None = None) -> Iterator[AuditRecord]:
        """Every version under the day prefixes, not only the current ones: in a bucket under
        Object Lock a plain DELETE lays a delete marker over a record it cannot remove, and the
        record must still be shown."""
        from acode_dagster.bronze.store import _s3_errors

        paginator = self.client.get_paginator("list_object_versions")
        for prefix in self._day_prefixes(since):
            with _s3_errors(self.bucket):
                versions = [
                    (version["Key"], version.get("VersionId"))
                    for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                    for version in page.get("Versions", [])
                    if version["Key"].endswith(".json")
                ]
                for key, version_id in sorted(versions, key=lambda v: (v[0], v[1] or "")):
                    where: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
                    if version_id and version_id != "null":
                        where["VersionId"] = version_id
                    body = self.client.get_object(**where)["Body"].read()
                    found = _parsed(body, f"s3://{self.bucket}/{key}")
                    if found is not None:
                        yield found

    def _day_prefixes(self, since: datetime | None) -> list[str]:
        if since is None:
            return [self.prefix + "/"]
        start = since.astimezone(UTC).date()
        today = datetime.now(UTC).date()
        if (today - start).days > 366:
            return [self.prefix + "/"]
        return [
            f"{self.prefix}/{start + timedelta(days=n):%Y/%m/%d}/"
            for n in range((today - start).days + 2)  # a day ahead: clocks differ between hosts
        ]


_LOCK_REFUSED = frozenset({"InvalidRequest", "ObjectLockConfigurationNotFoundError"})
"""What S3 answers a locked put into a bucket without Object Lock."""


def _parsed(body: bytes, where: str) -> AuditRecord | None:
    """The record in ``body``; None, with a warning, for anything else put under the prefix."""
    try:
        return AuditRecord.from_json(body)
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("%s is not an audit record, skipped: %s", where, exc)
        return None


def _day_dirs(base: Path, since: datetime | None) -> list[Path]:
    start = since.astimezone(UTC).date() if since is not None else None
    found = []
    for path in sorted(base.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]")):
        try:
            day = date(int(path.parent.parent.name), int(path.parent.name), int(path.name))
        except ValueError:
            continue
        if start is None or day >= start:
            found.append(path)
    return found


def _roots(settings: Settings) -> list[tuple[str, str]]:
    roots = [("ACODE_BRONZE_URL", settings.bronze_url)]
    if settings.bronze_backup_url and settings.bronze_backup_url != settings.bronze_url:
        roots.append(("ACODE_BRONZE_BACKUP_URL", settings.bronze_backup_url))
    return roots


def _plain(value: object) -> Any:
    """``value`` as JSON would carry it (dates and other types as text), any password in a URL
    masked: callers pass no secret, and a connection URL slipped in keeps none."""
    return json.loads(redact(json.dumps(value, default=str)))


def _reason(exc: BaseException) -> str:
    # Errors of this platform already name the fix and carry no secret; others are summarised by
    # their type and message, which for boto3 and OS errors hold no credential.
    if isinstance(exc, AcodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def records_as_json(found: Iterable[FoundRecord]) -> str:
    """``acode audit --json``: a JSON list, each record with the roots holding it."""
    return json.dumps(
        [{**json.loads(f.record.to_json()), "roots": list(f.roots)} for f in found], indent=2
    )


def record_line(found: FoundRecord) -> str:
    """One record as a line of ``acode audit``."""
    one = found.record
    parts = [f"{one.at:%Y-%m-%d %H:%M:%S}Z", one.who, one.action, one.what]
    if one.why:
        parts.append(f"why={one.why!r}")
    if one.before is not None or one.after is not None:
        parts.append(f"before={json.dumps(one.before)} after={json.dumps(one.after)}")
    if one.run_id:
        parts.append(f"run={one.run_id}")
    if one.sensor:
        parts.append(f"sensor={one.sensor}")
    parts.append(f"host={one.host} id={one.id}")
    if found.roots != ("ACODE_BRONZE_URL",):
        parts.append(f"in={','.join(found.roots)}")
    return "  ".join(parts)
