"""MySQL credentials read from AWS Secrets Manager at connect time, so a rotated password
reaches a running process without a restart.

The secret holds the JSON that RDS rotation writes (``username``, ``password``, ``host``,
``port``, ``dbname``, ``engine``, ...). :class:`SecretCredentials` reads it through a short cache
(ACODE_SECRET_CACHE_S): a burst of connections costs one ``GetSecretValue``, and a rotation is
seen at the latest when the cache expires. A server that refuses the cached password makes the
caller re-read the secret at once (:meth:`SecretCredentials.reread`), once however many threads
were refused together, and each such re-read is written to the audit trail with the secret's
version ids, never a password.

Nothing here needs Dagster: the command line and the sensors share one
:class:`SecretCredentials` per secret and process (:func:`shared_credentials`). No message this
module produces holds a value of the secret: errors name the setting and the secret's id, which
is not a secret, and the key at fault.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from acode_dagster.errors import ConfigError, SourceError
from acode_dagster.settings import DEFAULT_SECRET_CACHE_S

log = logging.getLogger(__name__)

RDS_SHAPE = '{"username", "password", "host", "port", "dbname"}'
"""What an RDS-rotated secret holds, for the errors."""
_KEEP_PASSWORDS = 4
"""Passwords of a secret still redacted after it moved on (an old one may linger in a message)."""

ClientFactory = Callable[[], Any]
"""Builds a boto3 Secrets Manager client (called once per :class:`SecretCredentials`)."""


@dataclass(frozen=True)
class MySQLSecret:
    """One version of a secret, parsed. ``password`` is hidden from ``repr``."""

    username: str | None
    password: str = field(repr=False)
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    version_id: str = ""


def parse_secret(text: str | None, *, setting: str, secret_id: str) -> MySQLSecret:
    """The secret's JSON, or a :class:`ConfigError` naming ``setting`` and the key at fault (and
    never a value: a value may be the password, or a fragment of it)."""
    where = f"the secret {secret_id!r} ({setting})"
    shape = f"store the JSON that RDS rotation writes, {RDS_SHAPE}"
    if text is None:
        raise ConfigError(f"{where} holds no text (SecretString), only binary data; {shape}")
    try:
        value = json.loads(text)
    except ValueError:
        # json's own message quotes the text around the fault: the password, perhaps.
        raise ConfigError(f"{where} is not JSON; {shape}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} is JSON but not an object; {shape}")
    password = value.get("password")
    if not isinstance(password, str) or not password:
        raise ConfigError(f'{where} has no "password" key with a non-empty text; {shape}')

    def text_of(key: str) -> str | None:
        found = value.get(key)
        if found is None or found == "":
            return None
        if not isinstance(found, str):
            raise ConfigError(f'{where}: its "{key}" is not a text; {shape}')
        return found

    port = value.get("port")
    if port is not None and port != "":
        # RDS writes a number; a person editing the secret by hand often a text.
        digits = str(port).strip()
        if isinstance(port, bool) or not (digits.isascii() and digits.isdigit()):
            raise ConfigError(f'{where}: its "port" is not a whole number; {shape}')
        port = int(digits)
        if not 0 < port < 65536:
            raise ConfigError(f'{where}: its "port" is not between 1 and 65535; {shape}')
    else:
        port = None
    return MySQLSecret(
        username=text_of("username"),
        password=password,
        host=text_of("host"),
        port=port,
        dbname=text_of("dbname"),
    )


class SecretCredentials:
    """The login held by one secret, read at most once per ``cache_s`` (thread-safe)."""

    def __init__(
        self,
        secret_id: str,
        *,
        setting: str,
        cache_s: float = DEFAULT_SECRET_CACHE_S,
        client: ClientFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret_id = secret_id
        self.setting = setting
        self.cache_s = cache_s
        self._client_factory = client or _default_client
        self._client: Any = None
        self._clock = clock
        self._lock = threading.Lock()
        self._current: MySQLSecret | None = None
        self._read_at = 0.0
        self._passwords: list[str] = []

    def __repr__(self) -> str:
        return f"SecretCredentials({self.secret_id!r}, setting={self.setting!r})"

    def get(self) -> MySQLSecret:
        """The secret, from the cache while it is younger than ``cache_s``.

        When the cache has expired and Secrets Manager cannot be reached, the last version read
        is used on (with a warning): a password rarely changes, and a server that refuses it
        makes the caller :meth:`reread`, which does fail."""
        with self._lock:
            current = self._current
            if current is not None and self._clock() - self._read_at < self.cache_s:
                return current
            try:
                return self._read()
            except SourceError as exc:
                if current is None or not exc.transient:
                    raise
                log.warning("%s; going on with the version read before", exc)
                return current

    def refresh(self) -> MySQLSecret:
        """Read the secret now, whatever the cache holds."""
        with self._lock:
            return self._read()

    def reread(self, refused: MySQLSecret, *, what: str, why: str) -> MySQLSecret | None:
        """After a server refused ``refused``: the secret's login when it differs (read again
        unless another thread already did since), or None when the secret still holds the
        refused login (a retry could not succeed). Each read made here is audited."""
        with self._lock:
            current = self._current
            if (
                current is not None
                and current is not refused
                and _login(current) != _login(refused)
            ):
                return current  # another thread re-read it after the same refusal
            fresh = self._read()
        _audit_reread(
            what=what,
            why=why,
            before=refused.version_id,
            after=fresh.version_id,
            setting=self.setting,
            secret_id=self.secret_id,
        )
        return fresh if _login(fresh) != _login(refused) else None

    def known_passwords(self) -> tuple[str, ...]:
        """The passwords this secret held while this process read it, newest first, to redact.
        Reads the secret when it was never read, and gives nothing when it cannot be read
        (connecting fails then, with the reason)."""
        with self._lock:
            if self._current is None:
                try:
                    self._read()
                except Exception:  # the connection attempt reports it; redaction must not fail
                    return ()
            return tuple(reversed(self._passwords))

    def _read(self) -> MySQLSecret:
        """One GetSecretValue, parsed and cached (the lock is held)."""
        if self._client is None:
            self._client = self._client_factory()
        answer = _get_secret_value(self._client, self.secret_id, self.setting)
        parsed = parse_secret(
            answer.get("SecretString"), setting=self.setting, secret_id=self.secret_id
        )
        version = str(answer.get("VersionId") or "")
        secret = MySQLSecret(
            username=parsed.username,
            password=parsed.password,
            host=parsed.host,
            port=parsed.port,
            dbname=parsed.dbname,
            version_id=version,
        )
        self._current, self._read_at = secret, self._clock()
        if secret.password not in self._passwords:
            self._passwords = [*self._passwords, secret.password][-_KEEP_PASSWORDS:]
        return secret


def _login(secret: MySQLSecret) -> tuple[str | None, str]:
    return secret.username, secret.password


def _default_client() -> Any:
    # boto3's standard variables choose region and endpoint (AWS_DEFAULT_REGION,
    # AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SECRETS_MANAGER); bounded, so a probe is not held.
    # Not dagster-aws's SecretsManagerResource: its client takes botocore's 60 s timeouts and
    # offers no way to shorten them, which a health tick (cut at 60 s) cannot afford.
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client("secretsmanager", config=config)


class _NoSecretBodies(logging.Filter):
    """botocore logs every response body at DEBUG, GetSecretValue's too: the secret itself.
    Dropped here, so a debug log level shows no password."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            isinstance(record.msg, str)
            and record.msg.startswith("Response body")
            and "SecretString" in str(record.args)
        )


# At import: any client of this process, the platform's or Dagster's own, is covered.
logging.getLogger("botocore.parsers").addFilter(_NoSecretBodies())

_MISSING = ("ResourceNotFoundException",)
# "403": a denial whose body names no code (botocore then gives the HTTP status as the code).
_DENIED = ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "403")
_UNREADABLE = ("DecryptionFailure", "InvalidRequestException")


def _get_secret_value(client: Any, secret_id: str, setting: str) -> Mapping[str, Any]:
    """GetSecretValue, its failures told as what to fix (by code: a message never quotes the
    secret, but nothing is gained by passing it on)."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"the secret {secret_id!r} ({setting})"
    try:
        answer: Mapping[str, Any] = client.get_secret_value(SecretId=secret_id)
        return answer
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise ConfigError(
                f"{where} does not exist in Secrets Manager ({code}) — set {setting} to the name "
                "or ARN of the secret that holds the server's login, in the region of "
                "AWS_DEFAULT_REGION"
            ) from None
        if code in _DENIED:
            raise ConfigError(
                f"{where} may not be read ({code}) — grant the platform's role "
                "secretsmanager:GetSecretValue on it (and kms:Decrypt on its KMS key)"
            ) from None
        if code in _UNREADABLE:
            raise ConfigError(
                f"{where} cannot be read ({code}: deleted, scheduled for deletion, or its KMS key "
                f"unusable) — restore it or point {setting} at the live secret"
            ) from None
        raise SourceError(
            f"{where}: Secrets Manager answered {code or 'an error'} — retried later",
            transient=True,
        ) from None
    except BotoCoreError as exc:
        raise SourceError(
            f"{where}: Secrets Manager unreachable ({type(exc).__name__}) — check the network "
            "and AWS_DEFAULT_REGION / AWS_ENDPOINT_URL_SECRETS_MANAGER",
            transient=True,
        ) from None


def _audit_reread(
    *, what: str, why: str, before: str, after: str, setting: str, secret_id: str
) -> None:
    # audit reads its settings from the environment and never raises.
    from acode_dagster import audit

    audit.record(
        "credential.reread",
        what=f"{what}: {setting} ({secret_id})",
        why=why,
        before={"version_id": before},
        after={"version_id": after},
        actor="acode:credentials",
    )
    changed = "a new version" if before != after else "the same version"
    log.info("re-read %s (%s) after %s: %s", setting, secret_id, why, changed)


_SHARED: dict[tuple[str, str, float], SecretCredentials] = {}
_SHARED_LOCK = threading.Lock()


def shared_credentials(
    secret_id: str,
    *,
    setting: str,
    cache_s: float = DEFAULT_SECRET_CACHE_S,
    client: ClientFactory | None = None,
) -> SecretCredentials:
    """The process's one :class:`SecretCredentials` of ``secret_id``: every resource copy, run
    and sensor tick of a process shares its cache (and its re-read after a refusal)."""
    key = (secret_id, setting, cache_s)
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is None:
            found = _SHARED[key] = SecretCredentials(
                secret_id, setting=setting, cache_s=cache_s, client=client
            )
        return found
