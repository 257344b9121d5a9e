"""MySQL endpoints: parsing the configured URLs, connecting, and errors a person can act on.

A password lives only in :class:`MySQLEndpoint` (hidden from ``repr``) and in the connection
strings handed to drivers; every message this module produces is built from
:attr:`MySQLEndpoint.display`, which has none, and driver errors are scrubbed before they are
re-raised because some drivers echo the connection string they were given.

No call here waits on a server for ever: a connection is bounded by ``connect_timeout_s``
(ACODE_MYSQL_CONNECT_TIMEOUT_S) and a read by ``read_timeout_s`` (ACODE_MYSQL_READ_TIMEOUT_S),
in pymysql by its own timeouts and in the Arrow reader by :func:`bound_reads`, whose
connections :func:`cut` stops where they are.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import ssl
import stat
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import pymysql

from acode_dagster.errors import AcodeError, ConfigError, SourceError, redact
from acode_dagster.settings import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S, MySQLTLS
from acode_dagster.source.credentials import MySQLSecret, SecretCredentials
from acode_dagster.tables import Table, get_table

DEFAULT_PORT = 3306
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MySQLEndpoint:
    """Where one MySQL/MariaDB server is and how to log into it."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = field(default=None, repr=False, compare=False)
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    credentials: SecretCredentials | None = field(default=None, repr=False, compare=False)
    """When set, user and password come from this secret at connect time (``password`` unused),
    so a rotated password is used without a restart."""
    tls: MySQLTLS = field(default_factory=MySQLTLS)
    """TLS mode and CA (ACODE_MYSQL_[<ROLE>_]SSL_MODE / _SSL_CA), honoured by every client."""

    @property
    def display(self) -> str:
        """The URL without its password: the only form that may be logged or shown."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be shown: the password, raw and URL-encoded, and the
        passwords its secret held (the current one, and those it held before)."""
        passwords = [self.password] if self.password else []
        if self.credentials is not None:
            passwords += self.credentials.known_passwords()
        return tuple(s for p in passwords for s in (p, quote(p, safe="")))

    def login(self) -> tuple[str, str | None]:
        """User and password to log in with now: the secret's (through its cache) or the
        configured ones."""
        if self.credentials is None:
            return self.user, self.password
        secret = self.credentials.get()
        return secret.username or self.user, secret.password

    def with_login(self, attempt: Callable[[MySQLEndpoint], T]) -> T:
        """``attempt(endpoint)`` with the login of now pinned in ``endpoint``; when the server
        refuses it (access denied, 1045) and the login comes from a secret, once more after
        re-reading the secret (at once, whatever its cache holds), if it changed meanwhile."""
        if self.credentials is None:
            return attempt(self)
        secret = self.credentials.get()
        try:
            return attempt(self._pinned(secret))
        except Exception as exc:
            if not refused_login(exc):
                raise
            refused = exc
        what = f"MySQL {self.display}"
        try:
            fresh = self.credentials.reread(
                secret, what=what, why=f"{what} refused the login (access denied, 1045)"
            )
        except AcodeError as exc:
            log.warning("%s: re-reading %s failed: %s", what, self.credentials.setting, exc)
            fresh = None
        if fresh is None:
            raise self._refusal(refused) from None
        try:
            return attempt(self._pinned(fresh))
        except Exception as exc:
            if refused_login(exc):
                raise self._refusal(exc) from None
            raise

    def _pinned(self, secret: MySQLSecret) -> MySQLEndpoint:
        return replace(
            self, user=secret.username or self.user, password=secret.password, credentials=None
        )

    def _refusal(self, exc: Exception) -> Exception:
        """A refusal of the secret's login, told as such (the hint names its setting).

        Transient: a rotation sets the server's password before it makes the new version the
        secret's current one, and a sync retried seconds later gets through."""
        assert self.credentials is not None
        if not isinstance(exc, SourceError):
            exc = explain_mysql_error(self, exc)
        return SourceError(
            f"{redact(str(exc), self.secrets())} (the login is the secret's of "
            f"{self.credentials.setting}, read again after the refusal: check that the secret "
            "holds the server's current password, e.g. that its rotation finished)",
            server=self.display,
            mysql_errno=exc.mysql_errno,
            transient=True,
        )

    def with_password(self, password: str | None) -> MySQLEndpoint:
        return replace(self, password=password)

    def arrow_reader_url(self) -> str:
        """Connection string for the Arrow reader (connectorx). Contains the password.

        Its options are the Rust ``mysql`` crate's (connectorx refuses an unknown one by name,
        and the crate knows some on some systems only). It takes no read timeout
        (``read_timeout`` is refused): :func:`bound_reads` sets one on the socket once the
        reader has connected.

        - ``prefer_socket=false``: the crate would move a connection to 127.0.0.1 onto the
          server's Unix socket, and the read timeout is set on the TCP socket.
        - ``tcp_connect_timeout_ms`` bounds each attempt to connect. connectorx's pool retries a
          failed connect for 30 s whatever it is (the preflight, with ``connect_timeout_s``,
          finds a server that is down sooner).
        - Keepalive, and on Linux ``tcp_user_timeout_ms``: a peer that is gone (a host down, a
          network partition: nothing acknowledges) is given up within about two thirds of
          ``read_timeout_s``, also in the moments before the read timeout is set. A peer that
          still acknowledges but sends nothing is invisible to them: that takes the read timeout.
        - ``ssl-mode`` (and ``ssl-ca``): connectorx 0.4.6 reads MySQL's names (disabled,
          required, verify_ca, verify_identity; checked against a TLS MariaDB: required does not
          check the certificate, verify_ca checks the chain, verify_identity also the host).
          Its ``preferred`` fails on a server without TLS and no mode means clear text, so
          preferred is resolved here: required when the server's greeting offers TLS, else
          disabled (:func:`offers_tls`, one TCP round trip, no login).
        """
        user, password = self.login()
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        keepalive_s = max(3, int(self.read_timeout_s / 3))
        options = [
            "prefer_socket=false",
            f"tcp_connect_timeout_ms={math.ceil(self.connect_timeout_s * 1000)}",
            f"tcp_keepalive_time_ms={keepalive_s * 1000}",
        ]
        if sys.platform in ("linux", "darwin"):
            options += [
                f"tcp_keepalive_probe_interval_secs={keepalive_s // 3}",
                "tcp_keepalive_probe_count=3",
            ]
        if sys.platform == "linux":
            options.append(f"tcp_user_timeout_ms={math.ceil(self.read_timeout_s * 1000)}")
        mode = self.tls.mode
        if mode == "preferred":
            mode = "required" if offers_tls(self) else "disabled"
        options.append(f"ssl-mode={mode}")
        if self.tls.verifies and self.tls.ca:
            options.append(f"ssl-ca={quote(self.tls.ca, safe='/')}")
        database = quote(self.database, safe="")
        return f"mysql://{auth}@{self.host}:{self.port}/{database}?{'&'.join(options)}"

    def bounded_statement(self, sql: str) -> str:
        """``sql`` with the server told to give up on a reader that stops reading.

        Without it a server keeps the statement (and on InnoDB its read view) for as long as
        its ``net_write_timeout`` says while nobody reads. ``/*M!...*/`` is run by MariaDB only
        (10.1.2 brought SET STATEMENT); MySQL takes it as a comment, and MySQL 8 has no
        per-statement form for this variable (its SET_VAR hint does not accept it), so there
        the server's own setting holds (60 s unless the DBA changed it).
        """
        seconds = max(1, math.ceil(self.read_timeout_s))
        return f"/*M!100102 SET STATEMENT net_write_timeout={seconds} FOR */ {sql}"

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        password: str | None = None,
        setting: str = "URL",
        user: str | None = None,
    ) -> MySQLEndpoint:
        """Parse ``mysql://user[:password]@host[:port]/database``.

        ``password`` fills in when the URL has none (the ``ACODE_PASS`` convention), ``user``
        when it names no user (a secret's). ``setting`` names the environment variable in
        errors, so the message says what to fix. The error never repeats the URL itself,
        because it may hold a password.
        """
        example = "mysql://acode:PASSWORD@db.example.com:3306/acode_farmarcas"
        text = url.strip()
        raw_password = _raw_password(text)
        if raw_password is not None and _RESERVED_IN_PASSWORD.search(raw_password):
            # A parser would cut the password there and report a piece of it as the port or
            # the path: refuse before any parser sees it, and say nothing of the password.
            separate = "ACODE_BACKUP_PASS" if "BACKUP" in setting else "ACODE_PASS"
            raise ConfigError(
                f"{setting} is not usable: its password holds a character that a URL reserves "
                "(/ ? # or a space) without percent-encoding, so the URL cannot be read. "
                "Percent-encode the password (python3 -c 'import sys, urllib.parse; "
                "print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'PASSWORD'), or leave it "
                f"out of the URL and set {separate}"
            )
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            # Never the parser's own words: they quote the part of the URL they could not read.
            raise ConfigError(
                f"{setting} is not a valid MySQL URL: its host or port cannot be read (a port is "
                "a number from 1 to 65535, an IPv6 host is written in brackets); expected the "
                f"form {example}"
            ) from None
        problems = []
        if parts.scheme not in ("mysql", "mariadb"):
            problems.append(f"its scheme is {parts.scheme!r}, not 'mysql'")
        if not parts.hostname:
            problems.append("it names no host")
        if not parts.username and not user:
            problems.append("it names no user")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            problems.append("it names no database (the path after the host)")
        if parts.query or parts.fragment:
            problems.append("it has a query string or fragment, which is not supported")
        if problems:
            raise ConfigError(f"{setting} is not usable: {'; '.join(problems)}; expected {example}")
        assert parts.hostname
        url_password = unquote(parts.password) if parts.password is not None else None
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORT,
            user=unquote(parts.username) if parts.username else user or "",
            database=database,
            password=url_password if url_password is not None else password,
        )

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """A pymysql connection, or a :class:`SourceError` saying what is wrong and what to do.

        Connecting, handshake included, takes at most ``connect_timeout_s``; then every read
        and write waits at most ``read_timeout_s`` (or the ``read_timeout`` and
        ``write_timeout`` given) for the server. A login from a secret that the server refuses
        is retried once with the secret read again (:meth:`with_login`).
        """
        return self.with_login(lambda endpoint: endpoint._connect(**kwargs))

    def _connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        read_timeout = kwargs.pop("read_timeout", self.read_timeout_s)
        write_timeout = kwargs.pop("write_timeout", self.read_timeout_s)
        try:
            # pymysql's connect_timeout covers the TCP connect only; it reads the server's
            # greeting and the login's answer with its read timeout. A server that accepts and
            # then says nothing must fail as slowly as one that does not accept.
            conn = pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                # As UTF-8 bytes: pymysql encodes a str as latin-1, which fails on other
                # scripts (with the password in the exception) and mangles accents.
                password=(self.password or "").encode("utf-8"),
                database=self.database,
                connect_timeout=self.connect_timeout_s,
                read_timeout=self.connect_timeout_s,
                write_timeout=self.connect_timeout_s,
                charset="utf8mb4",
                autocommit=True,
                **_pymysql_tls(self.tls),
                **kwargs,
            )
        except pymysql.MySQLError as exc:
            raise explain_mysql_error(self, exc) from None
        if self.tls.demands_tls and not isinstance(getattr(conn, "_sock", None), ssl.SSLSocket):
            # pymysql refuses a server without TLS once given a context; never trust a plain
            # connection to a setting that demands TLS, whatever a future version does.
            conn.close()
            raise tls_not_offered(self)
        # pymysql sets these on the socket before each read and write (_read_packet and
        # _write_bytes), so they hold from the first query on. Not in its type stubs.
        conn._read_timeout = read_timeout  # type: ignore[attr-defined]
        conn._write_timeout = write_timeout  # type: ignore[attr-defined]
        return conn


_RESERVED_IN_PASSWORD = re.compile(r"[/?#\s]")


def _raw_password(url: str) -> str | None:
    """The password part of ``scheme://user:password@host...`` as written, up to the last "@"
    (a password may hold "@" and ":", which parsers read right)."""
    _, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return None
    user_info = rest.rpartition("@")[0]
    if ":" not in user_info:
        return None
    return user_info.partition(":")[2]


_ACCESS_DENIED = 1045
# 1045's text; 1044 (no access to a database) says "to database" where this says "using".
_LOGIN_REFUSED = re.compile(r"access denied for user \S+ \(using password", re.I)


def refused_login(exc: BaseException) -> bool:
    """Whether ``exc`` is a server refusing the user or password (1045), from any client."""
    if isinstance(exc, SourceError) and exc.mysql_errno is not None:
        return exc.mysql_errno == _ACCESS_DENIED
    if isinstance(exc, pymysql.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0] == _ACCESS_DENIED
    return bool(_LOGIN_REFUSED.search(str(exc)))


_UNKNOWN_DATABASE = 1049
_NO_SUCH_TABLE = 1146
_CANT_CONNECT = (2003, 2005, 2006, 2013)
_UNREACHABLE = re.compile(
    r"can't connect|timed out|refused|lost connection|connection reset|broken pipe"
    r"|gone away|unexpected eof|bytes remaining on stream|io error",
    re.I,
)
# What a read cut by bound_reads's socket timeout says (EAGAIN: "os error 11" on Linux, 35 on
# macOS), through the Rust reader.
_READ_TIMED_OUT = re.compile(
    r"resource temporarily unavailable|would block|os error (11|35)\b", re.I
)


def explain_mysql_error(endpoint: MySQLEndpoint, exc: BaseException) -> SourceError:
    """Turn a driver error into one that names the problem and the fix, with no secret in it."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    detail = redact(
        str(exc.args[1] if code is not None and len(exc.args) > 1 else exc), endpoint.secrets()
    )
    where = endpoint.display
    if _READ_TIMED_OUT.search(detail):
        return SourceError(
            f"MySQL {where}: no byte from the server for {endpoint.read_timeout_s:g} s "
            f"(ACODE_MYSQL_READ_TIMEOUT_S) — the server or the network between stalled; the "
            "sync is retried, on the route then in force",
            server=where,
            mysql_errno=code,
            transient=True,
        )
    tls_problem = _explain_tls(endpoint, code, detail)
    if tls_problem is not None:
        return tls_problem
    if code == _ACCESS_DENIED or re.search(r"access denied", detail, re.I):
        hint = (
            "the server refused the user or password: check the password "
            "(ACODE_PASS / ACODE_BACKUP_PASS or the URL) and the user's grants"
        )
        if endpoint.tls.mode == "disabled":
            # MariaDB and MySQL refuse a REQUIRE SSL user over a plain connection with the very
            # words of a wrong password.
            hint = (
                f"the server refused the login over a connection without TLS "
                f"({endpoint.tls.mode_setting}=disabled): when TLS is required by the server or "
                f"the user (REQUIRE SSL in SHOW GRANTS, or require_secure_transport), set "
                f"{endpoint.tls.mode_setting}=verify_identity (or required); otherwise "
                + hint.removeprefix("the server refused the user or password: ")
            )
    elif code == _UNKNOWN_DATABASE:
        hint = "the database does not exist on that server: check the database part of the URL"
    elif code == _NO_SUCH_TABLE:
        hint = (
            "a source table is missing: the server must have the tables of "
            "acode_source_schema.sql (run `acode stack start` for the local default)"
        )
    elif code in _CANT_CONNECT or _UNREACHABLE.search(detail):
        hint = (
            "the server is unreachable: check that it runs and that host and port are right "
            "(`acode stack status` for the local default)"
        )
    else:
        hint = "see the server's message above"
    # A lost or refused connection may heal (or the route may move to the backup): worth a retry.
    transient = code in _CANT_CONNECT or bool(_UNREACHABLE.search(detail))
    if refused_login(exc):
        # The Arrow reader's pool words a refusal as "timed out waiting for connection: ...
        # Access denied": the server answered, and will answer the same to a retry.
        transient = False
    return SourceError(
        f"MySQL {where}: {detail} — {hint}", server=where, mysql_errno=code, transient=transient
    )


# ------------------------------------------------------------------ TLS


def tls_context(tls: MySQLTLS) -> ssl.SSLContext:
    """The client context of a mode that demands TLS: the verifying modes check the chain
    against the CA file (or the system's trust store), verify_identity also the host name."""
    if tls.verifies:
        context = ssl.create_default_context(cafile=tls.ca or None)
        context.check_hostname = tls.mode == "verify_identity"
        return context
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_CLIENT_SSL = 0x0800
"""The capability bit by which a server's greeting says it can switch to TLS."""


def offers_tls(endpoint: MySQLEndpoint) -> bool:
    """Whether the server's greeting offers TLS; False when it cannot be read (the caller's
    own connection then reports why). No login: only the greeting is read, then the
    connection is dropped."""
    try:
        with socket.create_connection(
            (endpoint.host, endpoint.port), timeout=endpoint.connect_timeout_s
        ) as sock:
            reader = sock.makefile("rb")
            header = reader.read(4)
            if len(header) < 4:
                return False
            payload = reader.read(int.from_bytes(header[:3], "little"))
    except OSError:
        return False
    # Protocol 10: version byte, server version (NUL-ended), thread id (4), scramble (8),
    # filler (1), then the lower two bytes of the capability flags. 0xFF: an error packet.
    if not payload or payload[0] != 10 or b"\0" not in payload[1:]:
        return False
    at = payload.index(b"\0", 1) + 1 + 4 + 8 + 1
    if len(payload) < at + 2:
        return False
    return bool(int.from_bytes(payload[at : at + 2], "little") & _CLIENT_SSL)


def _pymysql_tls(tls: MySQLTLS) -> dict[str, Any]:
    if tls.mode == "disabled":
        return {"ssl_disabled": True}
    if tls.mode == "preferred":
        # pymysql's own default: TLS when the server offers it, certificate unchecked, and a
        # plain connection when it does not.
        return {}
    # Given a context, pymysql refuses a server that offers no TLS (error 2026).
    return {"ssl": tls_context(tls)}


def tls_not_offered(endpoint: MySQLEndpoint) -> SourceError:
    tls = endpoint.tls
    return SourceError(
        f"MySQL {endpoint.display}: {tls.mode_setting}={tls.mode} demands TLS, but the server "
        "does not offer it — turn TLS on in the server (ssl_cert and ssl_key; SHOW VARIABLES "
        f"LIKE 'have_ssl' must say YES), or set {tls.mode_setting}=preferred to accept a "
        "connection in clear text",
        server=endpoint.display,
        mysql_errno=_SSL_CONNECTION_ERROR,
    )


_SSL_CONNECTION_ERROR = 2026
_TLS_NOT_OFFERED = re.compile(
    r"ssl is required but the server doesn't support it|server does not support (ssl|tls)"
    r"|requires secure connection but server does not have"
    r"|ssl connection error: ssl is required",
    re.I,
)
_CERT_NAME_MISMATCH = re.compile(
    r"hostname mismatch|ip address mismatch|doesn't match|not valid for", re.I
)
_CERT_UNTRUSTED = re.compile(
    r"certificate verify failed|certificate_verify_failed|unable to get local issuer"
    r"|self[- ]signed certificate|unknown ca|bad certificate|certificate has expired",
    re.I,
)
_PLAIN_REFUSED = re.compile(r"insecure transport|require_secure_transport", re.I)


def _explain_tls(endpoint: MySQLEndpoint, code: int | None, detail: str) -> SourceError | None:
    """The TLS failures, each named with the setting to change. None of them heals by itself,
    so none is transient: a retry would fail the same way."""
    tls, where = endpoint.tls, endpoint.display
    if _TLS_NOT_OFFERED.search(detail):
        return tls_not_offered(endpoint)
    if _PLAIN_REFUSED.search(detail):
        return SourceError(
            f"MySQL {where}: {detail} — the server accepts connections over TLS only, and "
            f"{tls.mode_setting}={tls.mode}: set {tls.mode_setting}=verify_identity "
            "(or required)",
            server=where,
            mysql_errno=code,
        )
    if _CERT_NAME_MISMATCH.search(detail) and tls.mode == "verify_identity":
        fix = (
            f"the server's certificate is not issued for {endpoint.host!r}, the host this "
            f"connects to: connect by a name the certificate holds (see it with `openssl "
            f"s_client -starttls mysql -connect {endpoint.address}`), have the server's "
            f"certificate issued for {endpoint.host!r}, or set {tls.mode_setting}=verify_ca, "
            "which checks the CA but not the name"
        )
    elif _CERT_UNTRUSTED.search(detail) and tls.verifies:
        trusted = (
            f"the CA in {tls.ca_setting}={tls.ca}" if tls.ca else "a CA of the system's trust store"
        )
        fix = (
            f"the server's certificate is not signed by {trusted}: set {tls.ca_setting} to "
            "the PEM file of the CA that signed it (for RDS, its global-bundle.pem)"
        )
    else:
        return None
    return SourceError(
        f"TLS verification of {where} failed ({tls.described}): {detail} — {fix}",
        server=where,
        mysql_errno=code,
    )


@dataclass(frozen=True)
class SourceColumn:
    """A column as the server describes it in information_schema."""

    name: str
    column_type: str
    """As the server spells it, e.g. ``bigint(20) unsigned`` or ``decimal(15,4)``."""
    nullable: bool


def _query(endpoint: MySQLEndpoint, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = endpoint.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
    except pymysql.MySQLError as exc:
        raise explain_mysql_error(endpoint, exc) from None
    finally:
        conn.close()


def source_columns(endpoint: MySQLEndpoint, table_name: str) -> dict[str, SourceColumn]:
    """The table's columns in their order; empty when the table is missing or not visible.

    information_schema answers from the data dictionary, so this costs the same on an empty
    table as on a billion rows.
    """
    rows = _query(
        endpoint,
        "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (endpoint.database, table_name),
    )
    return {
        str(name): SourceColumn(str(name), str(kind), str(nullable) == "YES")
        for name, kind, nullable in rows
    }


def count_rows(endpoint: MySQLEndpoint, table: Table | str, day: date) -> int:
    """Rows of ``table`` in partition ``day`` (the whole catalogue for the snapshot table).

    The same window as the extraction query, so it is one range scan of the partition column's
    index, not a table scan.
    """
    described = get_table(table) if isinstance(table, str) else table
    rows = _query(endpoint, described.count_sql(day))
    return int(rows[0][0]) if rows else 0


# ------------------------------------------------------------------ the Arrow reader's sockets
#
# The Arrow reader (connectorx, in Rust) takes no read timeout, reads ahead in a thread of its
# own that closing the reader does not stop, and holds the GIL while the caller waits for a
# batch (so no Python thread can act meanwhile, Dagster's termination of the run included). TCP
# keepalive cannot tell a stalled peer that still acknowledges from a live one. What does work
# is acting on its sockets from Python, between two batches: a socket timeout bounds every read,
# and a shutdown stops the reading thread where it is.


@dataclass(frozen=True)
class ReaderSocket:
    """One TCP connection of this process: its descriptor and both ends, so that a descriptor
    number reused since by another connection is never mistaken for it."""

    fd: int
    local: Any
    peer: Any


def _socket_fds() -> list[int]:
    """This process's open socket descriptors; none where they cannot be listed."""
    folder = next((f for f in ("/proc/self/fd", "/dev/fd") if os.path.isdir(f)), None)
    if folder is None:
        return []
    found = []
    for name in os.listdir(folder):
        try:
            fd = int(name)
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                found.append(fd)
        except (ValueError, OSError):
            continue  # closed since it was listed, as the listing's own descriptor is
    return found


def connections_to(endpoint: MySQLEndpoint) -> set[ReaderSocket]:
    """This process's TCP connections to ``endpoint``'s port (none on Windows)."""
    if sys.platform == "win32":
        return set()
    found = set()
    for fd in _socket_fds():
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                peer = sock.getpeername()
                if peer[1] == endpoint.port:
                    found.add(ReaderSocket(fd, sock.getsockname(), peer))
        except OSError:
            continue  # not connected, or closed meanwhile
        finally:
            sock.detach()  # the descriptor is not ours: never close it here
    return found


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


@contextmanager
def _same_socket(connection: ReaderSocket) -> Iterator[socket.socket | None]:
    """The socket of ``connection`` if its descriptor still is that connection, else None."""
    try:
        sock = socket.socket(fileno=connection.fd)
    except OSError:
        yield None
        return
    try:
        same = sock.getsockname() == connection.local and sock.getpeername() == connection.peer
    except OSError:
        same = False
    try:
        yield sock if same else None
    finally:
        sock.detach()


def bound_reads(connections: Iterable[ReaderSocket], seconds: float) -> int:
    """Give ``connections`` a socket read and write timeout; how many still were there.

    A read that gets no byte for ``seconds`` then fails with EAGAIN, which the reader raises.
    The mysql crate reads once more while it drops the broken result, so a stalled stream
    fails after up to twice ``seconds``.
    """
    timeout = _timeval(seconds)
    bounded = 0
    for connection in connections:
        with _same_socket(connection) as sock:
            if sock is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
                bounded += 1
            except OSError:
                continue
    return bounded


def cut(connections: Iterable[ReaderSocket]) -> None:
    """Shut ``connections`` down: the reader's thread fails its next read and ends, and the
    server sees the connection go and drops the statement. The descriptors stay the reader's
    to close."""
    for connection in connections:
        with _same_socket(connection) as sock:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
