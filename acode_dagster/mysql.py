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
import math
import os
import re
import socket
import stat
import struct
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pymysql

from acode_dagster.errors import ConfigError, SourceError, redact
from acode_dagster.settings import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S
from acode_dagster.tables import Table, get_table

DEFAULT_PORT = 3306


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

    @property
    def display(self) -> str:
        """The URL without its password: the only form that may be logged or shown."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be shown: the password, raw and URL-encoded."""
        if not self.password:
            return ()
        return (self.password, quote(self.password, safe=""))

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
        """
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
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
    def parse(cls, url: str, *, password: str | None = None, setting: str = "URL") -> MySQLEndpoint:
        """Parse ``mysql://user[:password]@host[:port]/database``.

        ``password`` fills in when the URL has none (the ``ACODE_PASS`` convention). ``setting``
        names the environment variable in errors, so the message says what to fix. The error
        never repeats the URL itself, because it may hold a password.
        """
        example = "mysql://acode:PASSWORD@db.example.com:3306/acode_farmarcas"
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ConfigError(
                f"{setting} is not a valid MySQL URL ({redact(str(exc), (url,))}); "
                f"expected the form {example}"
            ) from None
        problems = []
        if parts.scheme not in ("mysql", "mariadb"):
            problems.append(f"its scheme is {parts.scheme!r}, not 'mysql'")
        if not parts.hostname:
            problems.append("it names no host")
        if not parts.username:
            problems.append("it names no user")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            problems.append("it names no database (the path after the host)")
        if parts.query or parts.fragment:
            problems.append("it has a query string or fragment, which is not supported")
        if problems:
            raise ConfigError(f"{setting} is not usable: {'; '.join(problems)}; expected {example}")
        assert parts.hostname and parts.username
        url_password = unquote(parts.password) if parts.password is not None else None
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORT,
            user=unquote(parts.username),
            database=database,
            password=url_password if url_password is not None else password,
        )

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """A pymysql connection, or a :class:`SourceError` saying what is wrong and what to do.

        Connecting, handshake included, takes at most ``connect_timeout_s``; then every read
        and write waits at most ``read_timeout_s`` (or the ``read_timeout`` and
        ``write_timeout`` given) for the server.
        """
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
                password=self.password or "",
                database=self.database,
                connect_timeout=self.connect_timeout_s,
                read_timeout=self.connect_timeout_s,
                write_timeout=self.connect_timeout_s,
                charset="utf8mb4",
                autocommit=True,
                **kwargs,
            )
        except pymysql.MySQLError as exc:
            raise explain_mysql_error(self, exc) from None
        # pymysql sets these on the socket before each read and write (_read_packet and
        # _write_bytes), so they hold from the first query on. Not in its type stubs.
        conn._read_timeout = read_timeout  # type: ignore[attr-defined]
        conn._write_timeout = write_timeout  # type: ignore[attr-defined]
        return conn


_ACCESS_DENIED = 1045
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
    if code == _ACCESS_DENIED or re.search(r"access denied", detail, re.I):
        hint = (
            "the server refused the user or password: check the password "
            "(ACODE_PASS / ACODE_BACKUP_PASS or the URL) and the user's grants"
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
    return SourceError(
        f"MySQL {where}: {detail} — {hint}", server=where, mysql_errno=code, transient=transient
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
