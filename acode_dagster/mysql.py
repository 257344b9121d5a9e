"""MySQL endpoints: parsing the configured URLs, connecting, and errors a person can act on.

A password lives only in :class:`MySQLEndpoint` (hidden from ``repr``) and in the connection
strings handed to drivers; every message this module produces is built from
:attr:`MySQLEndpoint.display`, which has none, and driver errors are scrubbed before they are
re-raised because some drivers echo the connection string they were given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pymysql

from acode_dagster.errors import ConfigError, SourceError, redact
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
    connect_timeout_s: float = 5.0

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
        """Connection string for the Arrow reader (connectorx). Contains the password."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"mysql://{auth}@{self.host}:{self.port}/{quote(self.database, safe='')}"

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
        """A pymysql connection, or a :class:`SourceError` saying what is wrong and what to do."""
        try:
            return pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password or "",
                database=self.database,
                connect_timeout=self.connect_timeout_s,
                read_timeout=kwargs.pop("read_timeout", 600),
                charset="utf8mb4",
                autocommit=True,
                **kwargs,
            )
        except pymysql.MySQLError as exc:
            raise explain_mysql_error(self, exc) from None


_ACCESS_DENIED = 1045
_UNKNOWN_DATABASE = 1049
_NO_SUCH_TABLE = 1146
_CANT_CONNECT = (2003, 2005, 2006, 2013)
_UNREACHABLE = re.compile(
    r"can't connect|timed out|refused|lost connection|connection reset|broken pipe"
    r"|gone away|unexpected eof|bytes remaining on stream|io error",
    re.I,
)


def explain_mysql_error(endpoint: MySQLEndpoint, exc: BaseException) -> SourceError:
    """Turn a driver error into one that names the problem and the fix, with no secret in it."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    detail = redact(
        str(exc.args[1] if code is not None and len(exc.args) > 1 else exc), endpoint.secrets()
    )
    where = endpoint.display
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
