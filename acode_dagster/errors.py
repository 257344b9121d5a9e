"""The platform's errors: each names the problem and the fix, and none carries a secret."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+):[^@\s]*@", re.I)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets, and any password embedded in a URL (wherever else it recurs)."""
    found = set(re.findall(r"//[^:/@\s]+:([^@\s]*)@", text))
    for secret in sorted({s for s in (*secrets, *found) if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


class AcodeError(Exception):
    """Base of the errors this platform raises on purpose."""

    transient: bool = False
    """True when trying again later may succeed (a server or bucket unreachable), so a run retries
    it; False when a person must fix something first (a password, a missing table)."""


class ConfigError(AcodeError, ValueError):
    """A setting is missing or malformed; the message names the variable and the expected form."""


class SourceError(AcodeError):
    """The MySQL source could not be read."""

    def __init__(
        self,
        message: str,
        *,
        server: str = "",
        mysql_errno: int | None = None,
        transient: bool = False,
    ):
        super().__init__(message)
        self.server = server
        self.mysql_errno = mysql_errno
        self.transient = transient


class BronzeError(AcodeError):
    """The bronze store could not be written or read."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class PartitionError(AcodeError, ValueError):
    """A partition that cannot be synced (bad key, day not over yet)."""
