"""The embedded default's MySQL: a private MariaDB primary and a real binlog replica of it.

Both servers run from the installed MariaDB binaries, in a state folder of their own, on free
loopback ports, so they never touch a system server (which may well listen on 3306). The backup
replicates ``acode_farmarcas`` from the primary through the binlog and renames it to
``acode_farmarcas_replica`` on the way (``--replicate-rewrite-db``), which is what production's
backup looks like. Killing one of them is a real fault, which is what the failover tests need.

The servers are started detached (their own session, reparented away from us), so a CLI can start
the stack and exit; everything needed to find them again lives in ``<home>/state.json`` (mode
0600, because it holds the passwords). Passwords are never logged and never put in an error
message; users are created from password *hashes*, so the binlogs hold no password either.

Both servers serve TLS with a throwaway CA and a server certificate for 127.0.0.1 and localhost,
made at the first start in ``<home>/tls`` (:mod:`acode_dagster.source.certs`), and :meth:`endpoint`
connects with ``verify_identity`` against that CA, so the embedded default exercises the TLS
production must use. Two connections stay unverified, on purpose: the stack's own root
connections (pymysql's default, TLS without a check of the certificate: loopback only, and they
must work while a server is being set up) and the replica's replication connection to the
primary (MariaDB's own client, on loopback). A pair started before the stack had TLS keeps
working in clear text (its endpoints say ``preferred``) until the next start restarts it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from acode_dagster.errors import AcodeError, ConfigError, redact
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.routing import BACKUP, PRIMARY, ROLES, Role
from acode_dagster.settings import MySQLTLS
from acode_dagster.source.certs import (
    ServerCertificates,
    certificate_files,
    local_server_certificates,
)
from acode_dagster.tables import BACKUP_DATABASE, SOURCE_DATABASE, source_schema_statements

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
APP_USER = "acode"
REPL_USER = "acode_repl"
ROOT_USER = "root"

DATABASES: dict[str, str] = {PRIMARY: SOURCE_DATABASE, BACKUP: BACKUP_DATABASE}
_SERVER_IDS: dict[str, int] = {PRIMARY: 1, BACKUP: 2}

_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0
_KILL_TIMEOUT_S = 10.0
# sun_path holds 108 bytes with its NUL; stay clear of the edge.
_SOCKET_PATH_LIMIT = 100
_STATE_VERSION = 1

_SERVER_NAMES = ("mariadbd", "mysqld")
_INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")
_EXTRA_BIN_DIRS = (
    "/usr/sbin",
    "/usr/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/opt/homebrew/sbin",
    "/opt/homebrew/bin",
    "/usr/local/opt/mariadb/bin",
)
_INSTALL_HINT = (
    "install MariaDB server: `apt-get install mariadb-server` (Debian/Ubuntu) or "
    "`brew install mariadb` (macOS); only the binaries are used, the system service may stay off"
)

# Options shared by bootstrap (install-db passes them on) and by the running server, so the
# InnoDB files are created at their final small size instead of being resized at first start.
_INNODB_OPTIONS = (
    "--innodb-buffer-pool-size=128M",
    "--innodb-log-file-size=16M",
    # 2 = write to the OS on commit: a killed server loses nothing (only an OS crash could),
    # and commits do not wait for fsync, which keeps a laptop and the tests quick.
    "--innodb-flush-log-at-trx-commit=2",
)


def _private_tmpdir(datadir: Path) -> Path:
    """A temporary folder of the server's own, beside its datadir. With the shared /tmp, a
    bootstrap failed about once in eight on a busy machine: a temporary table's file vanished
    under it (ENOENT, then "Unknown table 'mysql.tmp_proxies_priv'"); 40 of 40 passed with this."""
    folder = datadir.parent / f"tmp-{datadir.name}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


class LocalStackError(AcodeError, RuntimeError):
    """The local MariaDB pair could not be started, stopped or set up; the message says why."""


@dataclass(frozen=True)
class ServerStatus:
    """What one server of the pair is doing right now.

    ``running`` means the process is alive *and* answers a connection. The replication fields
    are filled for the backup when it answers, else left ``None``.
    """

    role: str
    port: int
    pid: int | None
    running: bool
    io_running: bool | None = None
    sql_running: bool | None = None
    seconds_behind: int | None = None
    last_error: str | None = None

    @property
    def replicating(self) -> bool:
        return bool(self.io_running and self.sql_running)


@dataclass
class _ServerState:
    role: str
    port: int
    datadir: str
    socket: str
    pid_file: str
    error_log: str
    stdout_log: str
    pid: int | None = None
    tls: bool = False
    """Whether the running server was launched with the stack's certificate. A pair started
    before the stack had TLS runs without it until start() restarts it."""


@dataclass
class _State:
    servers: dict[str, _ServerState]
    app_password: str = field(repr=False)
    repl_password: str = field(repr=False)
    setup_done: bool = False
    server_binary: str = ""
    install_db_binary: str = ""
    version: int = _STATE_VERSION

    def secrets(self) -> tuple[str, ...]:
        return (self.app_password, self.repl_password)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _State:
        servers = {role: _ServerState(**raw) for role, raw in data.pop("servers").items()}
        return cls(servers=servers, **data)


def native_password_hash(password: str) -> str:
    """The ``mysql_native_password`` hash, so CREATE USER (and thus the binlog) never sees the
    password itself."""
    inner = hashlib.sha1(password.encode()).digest()
    return "*" + hashlib.sha1(inner).hexdigest().upper()


class LocalStack:
    """A local MariaDB primary and its binlog replica, kept in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalStack({str(self.home)!r})"

    # ------------------------------------------------------------------ paths and state

    @property
    def state_path(self) -> Path:
        return self.home / "state.json"

    @property
    def certificates(self) -> ServerCertificates:
        """The stack's throwaway CA and the server certificate (127.0.0.1 and localhost) both
        servers present, in ``<home>/tls``; made by the first start."""
        return certificate_files(self.home / "tls")

    def _short_socket_dir(self) -> Path:
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
        return Path("/tmp") / f"acode-mariadb-{digest}"

    def _socket_path(self, role: str) -> Path:
        near = self.home / role / "mariadbd.sock"
        if len(str(near).encode()) <= _SOCKET_PATH_LIMIT:
            return near
        return self._short_socket_dir() / f"{role}.sock"

    def _new_state(self) -> _State:
        ports = _free_ports(len(ROLES))
        servers: dict[str, _ServerState] = {}
        for role, port in zip(ROLES, ports, strict=True):
            base = self.home / role
            servers[role] = _ServerState(
                role=role,
                port=port,
                datadir=str(base / "data"),
                socket=str(self._socket_path(role)),
                pid_file=str(base / "mariadbd.pid"),
                error_log=str(base / "mariadbd.err"),
                stdout_log=str(base / "mariadbd.out"),
            )
        return _State(
            servers=servers,
            app_password=secrets.token_urlsafe(24),
            repl_password=secrets.token_urlsafe(24),
        )

    def _load_state(self) -> _State | None:
        try:
            raw = self.state_path.read_text()
        except FileNotFoundError:
            return None
        try:
            return _State.from_json(json.loads(raw))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise LocalStackError(
                f"{self.state_path} is unreadable ({type(exc).__name__}); stop any server left "
                f"running from {self.home} and delete the folder to start afresh"
            ) from None

    def _require_state(self) -> _State:
        state = self._load_state()
        if state is None:
            raise LocalStackError(
                f"the local MariaDB pair in {self.home} was never started: run `acode stack "
                "start` (or LocalStack.start()) first"
            )
        return state

    def _save_state(self, state: _State) -> None:
        tmp = self.state_path.with_name(".state.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(state), out, indent=2, sort_keys=True)
        # os.open only applies the mode to a file it creates; a leftover tmp keeps its own.
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize starts and stops across processes (a CLI, the daemon and tests may race)."""
        import fcntl

        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        """Start both servers, creating and wiring them up on first use. Idempotent."""
        began = time.monotonic()
        with self._locked():
            state = self._load_state()
            fresh = state is None
            if state is None:
                state = self._new_state()
                self._save_state(state)
            down = [role for role in ROLES if self._live_pid(state.servers[role]) is None]
            self._stop_without_tls(state, down)
            if not down and state.setup_done:
                log.debug("local MariaDB pair in %s already running", self.home)
                return
            server_bin, install_bin = self._binaries(state)
            initialized = self._init_datadirs(state, down, install_bin)
            if initialized and not fresh:
                # A datadir was wiped: run the (idempotent) setup again rather than trust it.
                state.setup_done = False
            self._launch(state, down, server_bin)
            if not state.setup_done:
                self._setup(state)
                state.setup_done = True
                self._save_state(state)
            else:
                self._repoint_replica_if_needed(state)
        log.info(
            "local MariaDB pair ready in %.1f s: primary %s:%d, backup %s:%d (%s)",
            time.monotonic() - began,
            HOST,
            state.servers[PRIMARY].port,
            HOST,
            state.servers[BACKUP].port,
            self.home,
        )

    def stop(self) -> None:
        """Shut both servers down gracefully (SIGTERM, then SIGKILL after a grace period)."""
        if not self.state_path.exists():
            return
        with self._locked():
            state = self._load_state()
            if state is None:
                return
            pids = {}
            # Both at once: a graceful shutdown is mostly flushing, and the two do not wait on
            # each other (the backup merely notes that its primary went away).
            for role in (BACKUP, PRIMARY):
                pid = self._live_pid(state.servers[role])
                if pid is not None:
                    log.info("stopping %s (pid %d)", role, pid)
                    _signal(pid, signal.SIGTERM)
                    pids[role] = pid
            for role, pid in pids.items():
                server = state.servers[role]
                if not self._wait_gone(server, pid, _STOP_TIMEOUT_S):
                    log.warning(
                        "%s (pid %d) ignored SIGTERM for %.0f s: killing it",
                        role,
                        pid,
                        _STOP_TIMEOUT_S,
                    )
                    _signal(pid, signal.SIGKILL)
                    self._wait_gone(server, pid, _KILL_TIMEOUT_S)
                server.pid = None
            self._save_state(state)

    def status(self) -> dict[str, ServerStatus]:
        """The state of both servers; never raises for a server that is down."""
        state = self._load_state()
        if state is None:
            return {role: ServerStatus(role, 0, None, False) for role in ROLES}
        result: dict[str, ServerStatus] = {}
        for role in ROLES:
            server = state.servers[role]
            pid = self._live_pid(server)
            if pid is None:
                result[role] = ServerStatus(role, server.port, None, False)
                continue
            try:
                with self._root(server, connect_timeout=2.0) as conn:
                    replica = _slave_status(conn) if role == BACKUP else None
            except pymysql.MySQLError:
                result[role] = ServerStatus(role, server.port, pid, False)
                continue
            if replica is None:
                result[role] = ServerStatus(role, server.port, pid, True)
                continue
            behind = replica.get("Seconds_Behind_Master")
            error = replica.get("Last_SQL_Error") or replica.get("Last_IO_Error") or None
            result[role] = ServerStatus(
                role,
                server.port,
                pid,
                True,
                io_running=replica.get("Slave_IO_Running") == "Yes",
                sql_running=replica.get("Slave_SQL_Running") == "Yes",
                seconds_behind=int(behind) if behind is not None else None,
                last_error=redact(str(error), state.secrets()) if error else None,
            )
        return result

    def kill(self, role: str) -> None:
        """SIGKILL one server (a real crash, for fault tests) and wait until it is gone."""
        _check_role(role)
        state = self._require_state()
        server = state.servers[role]
        pid = self._live_pid(server)
        if pid is None:
            return
        log.info("killing %s (pid %d) with SIGKILL", role, pid)
        _signal(pid, signal.SIGKILL)
        if not self._wait_gone(server, pid, _KILL_TIMEOUT_S):
            raise LocalStackError(f"{role} (pid {pid}) survived SIGKILL for {_KILL_TIMEOUT_S} s")

    def start_server(self, role: str) -> None:
        """Start one stopped server again on its existing data; replication resumes by itself."""
        _check_role(role)
        with self._locked():
            state = self._require_state()
            if not state.setup_done:
                raise LocalStackError(
                    f"the local MariaDB pair in {self.home} was never fully set up: call start()"
                )
            if self._live_pid(state.servers[role]) is not None:
                return
            server_bin, _ = self._binaries(state)
            self._launch(state, [role], server_bin)
            self._repoint_replica_if_needed(state)

    def endpoint(self, role: str, *, admin: bool = False) -> MySQLEndpoint:
        """Where to reach one server: as root (no password) or as the read-only ``acode`` user,
        over TLS checked against the stack's CA and host name (verify_identity)."""
        _check_role(role)
        state = self._require_state()
        server = state.servers[role]
        user, password = (ROOT_USER, None) if admin else (APP_USER, state.app_password)
        return MySQLEndpoint(
            HOST, server.port, user, DATABASES[role], password, tls=self._tls(server)
        )

    def _tls(self, server: _ServerState) -> MySQLTLS:
        if not server.tls:
            return MySQLTLS()  # a server of a pair started before TLS (preferred: plain)
        return MySQLTLS(mode="verify_identity", ca=str(self.certificates.ca))

    def wait_replica_caught_up(self, timeout: float = 30.0) -> None:
        """Block until the backup has applied everything the primary had logged at the call.

        Raises :class:`TimeoutError` when that takes longer than ``timeout`` (a server down or
        slow), and :class:`LocalStackError` at once when the backup's SQL thread has stopped on
        an error, which no amount of waiting would cure.
        """
        state = self._require_state()
        deadline = time.monotonic() + timeout
        target: str | None = None
        problem = "no answer yet"
        while True:
            remaining = deadline - time.monotonic()
            try:
                if target is None:
                    with self._root(state.servers[PRIMARY], connect_timeout=2.0) as conn:
                        target = str(_scalar(conn, "SELECT @@GLOBAL.gtid_binlog_pos"))
                # Short slices, so that a replica stopped on an error is noticed quickly.
                slice_s = min(1.0, max(remaining, 0.0))
                with self._root(
                    state.servers[BACKUP], connect_timeout=2.0, read_timeout=slice_s + 5
                ) as conn:
                    if _scalar(conn, "SELECT MASTER_GTID_WAIT(%s, %s)", (target, slice_s)) == 0:
                        return
                    replica = _slave_status(conn)
                problem = _describe_replica(replica, state.secrets())
                if (
                    replica
                    and replica.get("Slave_SQL_Running") == "No"
                    and replica.get("Last_SQL_Errno")
                ):
                    raise LocalStackError(f"replication to the backup is broken: {problem}")
            except pymysql.MySQLError as exc:
                problem = redact(str(exc), state.secrets())
                time.sleep(0.2)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the backup (port {state.servers[BACKUP].port}) did not catch up with the "
                    f"primary (port {state.servers[PRIMARY].port}, GTID {target or 'unknown'}) "
                    f"within {timeout:g} s: {problem}"
                )

    def destroy(self) -> None:
        """Stop both servers and delete every file of the pair (for tests)."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self._short_socket_dir(), ignore_errors=True)

    # ------------------------------------------------------------------ processes

    def _live_pid(self, server: _ServerState) -> int | None:
        """The server's pid if that process is alive and really is this server."""
        candidates = [server.pid] if server.pid else []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(Path(server.pid_file).read_text().strip()))
        for pid in candidates:
            if _process_matches(pid, server.datadir):
                return pid
        return None

    def _wait_gone(self, server: _ServerState, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _process_matches(pid, server.datadir):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _binaries(self, state: _State) -> tuple[str, str]:
        if not (_is_executable(state.server_binary) and _is_executable(state.install_db_binary)):
            server_bin, install_bin = find_mariadb_binaries(install=True)
            state.server_binary, state.install_db_binary = server_bin, install_bin
            self._save_state(state)
        return state.server_binary, state.install_db_binary

    def _init_datadirs(self, state: _State, roles: Sequence[str], install_bin: str) -> bool:
        """Create the system tables of every datadir that has none; True if any was made."""
        todo = [
            state.servers[role]
            for role in roles
            if not (Path(state.servers[role].datadir) / "mysql").is_dir()
        ]
        if not todo:
            return False
        began = time.monotonic()
        first, *others = todo
        for server in todo:
            # A half-made datadir (install interrupted) would make install-db fail: start clean.
            shutil.rmtree(server.datadir, ignore_errors=True)
        datadir = Path(first.datadir)
        datadir.mkdir(parents=True, mode=0o700)
        cmd = [
            install_bin,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--tmpdir={_private_tmpdir(datadir)}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *_INNODB_OPTIONS,
            *_as_root_options(),
        ]
        install_log = datadir.parent / "install-db.log"
        with install_log.open("wb") as out:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if done.returncode != 0:
            raise LocalStackError(
                f"{install_bin} failed for the {first.role} (exit {done.returncode}): "
                f"{_tail(install_log)}"
            )
        for server in others:
            # A freshly bootstrapped datadir holds no identity of its own (the server id and
            # the ports are options), so a copy is as good as a second bootstrap, and 20x faster.
            shutil.copytree(datadir, server.datadir, symlinks=True)
        log.info(
            "initialized datadir(s) of %s in %.1f s",
            ", ".join(s.role for s in todo),
            time.monotonic() - began,
        )
        return True

    def _server_command(self, server: _ServerState, server_bin: str) -> list[str]:
        tls = local_server_certificates(self.home / "tls")  # under the lock: made once
        cmd = [
            server_bin,
            "--no-defaults",
            f"--datadir={server.datadir}",
            f"--tmpdir={_private_tmpdir(Path(server.datadir))}",
            f"--port={server.port}",
            f"--bind-address={HOST}",
            f"--socket={server.socket}",
            f"--pid-file={server.pid_file}",
            f"--log-error={server.error_log}",
            f"--server-id={_SERVER_IDS[server.role]}",
            # Explicit names, because the defaults embed the host name and a renamed host would
            # then lose its binlog index and relay log.
            "--log-bin=binlog",
            "--relay-log=relay-bin",
            "--binlog-format=ROW",
            *_INNODB_OPTIONS,
            "--skip-name-resolve",
            "--local-infile=1",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--max-allowed-packet=64M",
            f"--ssl-ca={tls.ca}",
            f"--ssl-cert={tls.cert}",
            f"--ssl-key={tls.key}",
            *_as_root_options(),
        ]
        if server.role == BACKUP:
            cmd += [
                f"--replicate-rewrite-db={SOURCE_DATABASE}->{BACKUP_DATABASE}",
                "--read-only",
                # Notice a silent (not crashed) primary in seconds rather than a minute.
                "--slave-net-timeout=10",
            ]
        return cmd

    def _launch(self, state: _State, roles: Sequence[str], server_bin: str) -> None:
        """Start the given servers detached and wait until each accepts connections."""
        began = time.monotonic()
        for role in roles:
            server = state.servers[role]
            if not _port_free(server.port):
                old = server.port
                server.port = _free_ports(1, avoid={s.port for s in state.servers.values()})[0]
                log.warning(
                    "port %d of the %s is taken by another program; using %d",
                    old,
                    role,
                    server.port,
                )
            Path(server.socket).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileNotFoundError):
                Path(server.pid_file).unlink()
            cmd = self._server_command(server, server_bin)
            log.debug("launching %s: %s", role, " ".join(cmd))
            server.pid = _spawn_detached(cmd, Path(server.stdout_log))
            server.tls = True
            log.info("launched %s on %s:%d (pid %d)", role, HOST, server.port, server.pid)
        self._save_state(state)
        for role in roles:
            server = state.servers[role]
            assert server.pid is not None
            self._wait_ready(server, server.pid)
            self._check_tls(server)
        if roles:
            log.info(
                "%s accepting connections after %.1f s",
                " and ".join(roles),
                time.monotonic() - began,
            )

    def _check_tls(self, server: _ServerState) -> None:
        """A server that cannot load its certificate starts anyway, without TLS: say so now,
        not at the first connection that demands it."""
        with self._root(server) as conn:
            have_ssl = str(_scalar(conn, "SELECT @@GLOBAL.have_ssl"))
        if have_ssl != "YES":
            raise LocalStackError(
                f"the {server.role} MariaDB server (port {server.port}) started without TLS "
                f"(have_ssl={have_ssl}); delete {self.home / 'tls'} to have its certificates "
                f"made again, then `acode stack stop` and `acode stack start`; the end of "
                f"{server.error_log}:\n{_tail(Path(server.error_log))}"
            )

    def _stop_without_tls(self, state: _State, down: list[Role]) -> None:
        """Stop the running servers of a pair started before the stack had TLS, and add them to
        ``down``, so that start() brings them back with it: a replica resumes where it was, and
        the embedded default then connects as production must."""
        for role in ROLES:
            server = state.servers[role]
            pid = self._live_pid(server)
            if pid is None or server.tls:
                continue
            log.warning("restarting the %s (pid %d) to turn TLS on", role, pid)
            _signal(pid, signal.SIGTERM)
            if not self._wait_gone(server, pid, _STOP_TIMEOUT_S):
                _signal(pid, signal.SIGKILL)
                self._wait_gone(server, pid, _KILL_TIMEOUT_S)
            server.pid = None
            down.append(role)

    def _wait_ready(self, server: _ServerState, pid: int) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if not _process_matches(pid, server.datadir):
                raise LocalStackError(
                    f"the {server.role} MariaDB server (port {server.port}) exited during "
                    f"startup; the end of {server.error_log}:\n{_tail(Path(server.error_log))}"
                )
            try:
                with self._root(server, connect_timeout=1.0):
                    return
            except pymysql.MySQLError:
                pass
            if time.monotonic() >= deadline:
                # A server that never answers only holds the port and the datadir's lock.
                _signal(pid, signal.SIGKILL)
                raise LocalStackError(
                    f"the {server.role} MariaDB server (pid {pid}, port {server.port}) "
                    f"did not accept connections within {_READY_TIMEOUT_S:.0f} s; the end of "
                    f"{server.error_log}:\n{_tail(Path(server.error_log))}"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------------ SQL

    @contextlib.contextmanager
    def _root(
        self, server: _ServerState, *, connect_timeout: float = 5.0, read_timeout: float = 60.0
    ) -> Iterator[pymysql.connections.Connection[Any]]:
        conn = pymysql.connect(
            host=HOST,
            port=server.port,
            user=ROOT_USER,
            password="",
            connect_timeout=connect_timeout,
            read_timeout=max(1, int(read_timeout + 0.999)),
            charset="utf8mb4",
            autocommit=True,
        )
        try:
            yield conn
        finally:
            conn.close()

    def _setup(self, state: _State) -> None:
        """First-time wiring, ordered so that everything but the replica's own settings is made
        on the primary and reaches the backup through replication."""
        began = time.monotonic()
        primary, backup = state.servers[PRIMARY], state.servers[BACKUP]
        try:
            with self._root(primary) as conn:
                _create_user(conn, REPL_USER, [HOST], state.repl_password)
                _execute(conn, f"GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'{HOST}'")
            with self._root(backup) as conn:
                # replicate-rewrite-db rewrites only the default database of an event, never
                # the name in CREATE DATABASE, so each server creates its own database, outside
                # the binlog. Were the primary's replicated, the backup would also grow an empty
                # acode_farmarcas, and a reader pointed at the wrong name would read nothing
                # instead of failing.
                _execute(conn, "SET SESSION sql_log_bin = 0")
                _execute(conn, _create_database_sql(BACKUP_DATABASE))
                self._point_replica(conn, state)
            with self._root(primary) as conn:
                _execute(conn, "SET SESSION sql_log_bin = 0")
                _execute(conn, _create_database_sql(SOURCE_DATABASE))
                _execute(conn, "SET SESSION sql_log_bin = 1")
                # Unqualified DDL under a default database, so that the replica's
                # replicate-rewrite-db maps it to the backup's database.
                _execute(conn, f"USE `{SOURCE_DATABASE}`")
                for statement in source_schema_statements():
                    _execute(conn, statement)
                hosts = [HOST, "localhost"]
                _create_user(conn, APP_USER, hosts, state.app_password)
                for host in hosts:
                    # The pattern covers acode_farmarcas and, once replicated, the backup's
                    # acode_farmarcas_replica, with one grant made on the primary.
                    reader_grant = r"GRANT SELECT, SHOW VIEW ON `acode\_farmarcas%`.*"
                    _execute(conn, f"{reader_grant} TO '{APP_USER}'@'{host}'")
                    _execute(
                        conn,
                        f"GRANT REPLICATION CLIENT, SLAVE MONITOR ON *.* TO '{APP_USER}'@'{host}'",
                    )
        except pymysql.MySQLError as exc:
            raise LocalStackError(
                f"setting up the local MariaDB pair failed: {redact(str(exc), state.secrets())}"
            ) from None
        self.wait_replica_caught_up(timeout=30.0)
        self._verify_app_user(state)
        log.info("set up replication, schema and users in %.1f s", time.monotonic() - began)

    def _point_replica(self, conn: pymysql.connections.Connection[Any], state: _State) -> None:
        _execute(conn, "STOP SLAVE")
        with conn.cursor() as cursor:
            cursor.execute(
                "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                (HOST, state.servers[PRIMARY].port, REPL_USER, state.repl_password),
            )
        _execute(conn, "START SLAVE")

    def _repoint_replica_if_needed(self, state: _State) -> None:
        """After the primary moved to another port, tell the replica where it went."""
        backup = state.servers[BACKUP]
        if self._live_pid(backup) is None:
            return
        try:
            with self._root(backup) as conn:
                replica = _slave_status(conn)
                if replica is None or int(replica["Master_Port"]) != state.servers[PRIMARY].port:
                    log.info(
                        "pointing the backup at the primary's port %d", state.servers[PRIMARY].port
                    )
                    self._point_replica(conn, state)
        except pymysql.MySQLError as exc:
            raise LocalStackError(
                f"could not re-point the backup: {redact(str(exc), state.secrets())}"
            ) from None

    def _verify_app_user(self, state: _State) -> None:
        """The reader must see the contract tables on both servers; fail loudly here rather
        than in the first sync."""
        expected = len(source_schema_statements())
        for role in ROLES:
            endpoint = self.endpoint(role)
            with endpoint.connect() as conn:
                found = _scalar(
                    conn,
                    "SELECT COUNT(*) FROM information_schema.tables"
                    " WHERE table_schema = DATABASE()",
                )
            if found != expected:
                raise LocalStackError(
                    f"{endpoint.display} shows {found} tables to {APP_USER}, expected {expected}: "
                    "the grants or the replication of the schema are wrong"
                )


# ---------------------------------------------------------------------- helpers


def find_mariadb_binaries(*, install: bool = False) -> tuple[str, str]:
    """Paths of the MariaDB server and of its install-db script.

    With ``install`` and root and apt-get, a missing MariaDB is installed (without letting the
    package start or restart any system service); otherwise the error says what to install.
    """
    found = _find_binaries()
    if found is None and install and _can_apt_install():
        _apt_install_mariadb()
        found = _find_binaries()
    if found is None:
        raise ConfigError(
            f"no MariaDB server binaries (mariadbd, mariadb-install-db) found: {_INSTALL_HINT}"
        )
    server_bin = found[0]
    version = subprocess.run(
        [server_bin, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    if "mariadb" not in version.lower():
        raise ConfigError(
            f"{server_bin} is not MariaDB ({version.strip() or 'no version output'}); the local "
            f"stack needs MariaDB: {_INSTALL_HINT}"
        )
    return found


def _find_binaries() -> tuple[str, str] | None:
    def which(names: Sequence[str]) -> str | None:
        for name in names:
            hit = shutil.which(name)
            if hit:
                return hit
            for folder in _EXTRA_BIN_DIRS:
                candidate = os.path.join(folder, name)
                if _is_executable(candidate):
                    return candidate
        return None

    server_bin, install_bin = which(_SERVER_NAMES), which(_INSTALL_DB_NAMES)
    if server_bin and install_bin:
        return server_bin, install_bin
    return None


def _can_apt_install() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0 and bool(shutil.which("apt-get"))


def _apt_install_mariadb() -> None:
    log.warning("MariaDB server binaries not found: installing mariadb-server with apt-get")
    # policy-rc.d answering 101 forbids maintainer scripts to start or restart services, so a
    # system MariaDB (running or not) is left exactly as it was.
    policy = Path("/usr/sbin/policy-rc.d")
    created = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        created = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "mariadb-server"]
    try:
        if subprocess.run(install, env=env, check=False, timeout=1800).returncode != 0:
            # The usual cause on a fresh machine: no package lists yet.
            subprocess.run(["apt-get", "update"], env=env, check=False, timeout=600)
            subprocess.run(install, env=env, check=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        raise ConfigError(
            f"installing mariadb-server with apt-get failed ({exc}): {_INSTALL_HINT}"
        ) from None
    finally:
        if created:
            policy.unlink(missing_ok=True)


def _is_executable(path: str) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _as_root_options() -> list[str]:
    # mariadbd refuses to run as root unless told to; install-db then owns files as root too.
    return ["--user=root"] if os.geteuid() == 0 else []


def _spawn_detached(cmd: Sequence[str], stdout_log: Path) -> int:
    """Start ``cmd`` in the background through a shell that exits at once.

    The server is thus nobody's child here: it outlives this process (a CLI can start the stack
    and return), and no Popen object is left to warn about it or to keep it as a zombie.
    """
    stdout_log.parent.mkdir(parents=True, exist_ok=True)
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", str(stdout_log), *cmd],
        capture_output=True,
        text=True,
        start_new_session=True,
        check=True,
        timeout=30,
    )
    return int(out.stdout.strip())


def _process_matches(pid: int, datadir: str) -> bool:
    """Whether ``pid`` is a live (not zombie) server of ``datadir``; guards against pid reuse."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        # Orphans are reparented to whatever init there is, which may never reap them.
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False
        return f"\0--datadir={datadir}\0" in f"\0{cmdline}\0"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    ps = subprocess.run(
        ["ps", "-o", "stat=,command=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    return bool(ps) and not ps.startswith("Z") and f"--datadir={datadir}" in ps


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_ports(count: int, avoid: set[int] | None = None) -> list[int]:
    """Ports the kernel considers free, all held open together so they come out distinct."""
    held: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in (avoid or set()):
                ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown server role {role!r}; the roles are {', '.join(ROLES)}")


def _create_database_sql(name: str) -> str:
    return (
        f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )


def _execute(conn: pymysql.connections.Connection[Any], sql: str) -> None:
    with conn.cursor() as cursor:
        cursor.execute(sql)


def _scalar(
    conn: pymysql.connections.Connection[Any], sql: str, args: Sequence[object] | None = None
) -> Any:
    with conn.cursor() as cursor:
        cursor.execute(sql, args)
        row = cursor.fetchone()
    return row[0] if row else None


def _create_user(
    conn: pymysql.connections.Connection[Any], user: str, hosts: Sequence[str], password: str
) -> None:
    hashed = native_password_hash(password)
    for host in hosts:
        # CREATE ... IF NOT EXISTS then ALTER, so a setup interrupted halfway can simply rerun.
        for verb in ("CREATE USER IF NOT EXISTS", "ALTER USER"):
            with conn.cursor() as cursor:
                cursor.execute(f"{verb} %s@%s IDENTIFIED BY PASSWORD %s", (user, host, hashed))


def _slave_status(conn: pymysql.connections.Connection[Any]) -> dict[str, Any] | None:
    with conn.cursor(pymysql.cursors.DictCursor) as cursor:
        cursor.execute("SHOW SLAVE STATUS")
        row: dict[str, Any] | None = cursor.fetchone()
    return row


def _describe_replica(replica: dict[str, Any] | None, hidden: Sequence[str]) -> str:
    if replica is None:
        return "the backup has no replication configured"
    parts = [
        f"IO thread {replica.get('Slave_IO_Running')}",
        f"SQL thread {replica.get('Slave_SQL_Running')}",
        f"received up to GTID {replica.get('Gtid_IO_Pos') or 'none'}",
    ]
    for key in ("Last_IO_Error", "Last_SQL_Error"):
        if replica.get(key):
            # The statement a failed event carried can be long; its head names the problem.
            parts.append(f"{key}: {str(replica[key])[:300]}")
    return redact("; ".join(parts), hidden)
