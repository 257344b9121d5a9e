"""The platform's errors: each names the problem and the fix, and none carries a secret."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MIN_FRAGMENT = 4
"""A run of this many characters of a secret is a fragment worth hiding; shorter ones are
everywhere in ordinary text, and hiding them would garble every message."""

# Where a URL parser cuts a password that holds an unencoded delimiter, so what it prints (a
# "port", a "path") is a piece of the password between two of these.
_URL_DELIMITERS = re.compile(r"[/?#@:\[\]\s]")
# scheme://user:password@ — the password runs to the last "@" of the token, because a password
# may hold "@" (and "/", ":") unencoded.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+):(?P<password>\S*)@", re.I)


def _spellings(text: str) -> set[str]:
    """The ways a client may print ``text``: as is, URL-encoded, JSON- and repr-escaped, and as
    the escapes of its UTF-8 bytes."""
    return {
        text,
        quote(text, safe=""),
        quote(text),
        quote_plus(text),
        json.dumps(text)[1:-1],
        repr(text)[1:-1],
        str(text.encode())[2:-1],
    }


def secret_forms(secret: str) -> set[str]:
    """Every string that shows ``secret`` or a fragment of it, to be hidden wherever it occurs.

    Besides the whole secret in each spelling, its pieces between URL delimiters: a URL whose
    password holds an unencoded ``/`` makes a parser report the part before it as a port, the
    rest as a path."""
    if not secret:
        return set()
    pieces = {p for p in _URL_DELIMITERS.split(secret) if len(p) >= MIN_FRAGMENT}
    forms = {form for text in (secret, *pieces) for form in _spellings(text)}
    return {form for form in forms if len(form) >= MIN_FRAGMENT or form == secret}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets in any spelling, with their fragments, and any password embedded in
    a URL (wherever else it recurs)."""
    found = [m.group("password") for m in _URL_PASSWORD.finditer(text)]
    forms = {form for secret in (*secrets, *found) if secret for form in secret_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
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
