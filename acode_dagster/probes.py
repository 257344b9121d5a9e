"""Health probes of the four failover targets: the two MySQL servers and the two bronze buckets.

Plain Python, no Dagster, so the health sensor, the CLI and a person at a shell ask the same
question the same way. A probe never raises: a failure is ``healthy=False`` with a reason that
says what is wrong and what to check, built from the endpoints' display forms and scrubbed of
passwords and keys.

Time limits
-----------
Every network operation waits at most ``ProbeSettings.timeout_s``: the MySQL connect, read and
write timeouts, and the S3 connect and read timeouts with a single attempt (no retries). A probe
as a whole gives up after twice that: the I/O runs in a worker thread and the caller stops
waiting, so neither a server that accepts a connection and then says nothing (a frozen process)
nor a hung local disk can stall the caller; the abandoned thread ends with its own socket
timeout. :func:`probe_all` runs the four probes (and any others, such as the Airbyte
connections') at once, so one dead target costs about one timeout, not one per target; and the
whole round waits at most ``ProbeSettings.budget_s``: a probe still running then is reported
unhealthy, having run out of the round's budget, beside the others' results. The health sensor
sets it well inside the 60 s Dagster gives a sensor tick.

Replica rules: when the backup is a safe failover target
--------------------------------------------------------
:func:`probe_replica` reads ``SHOW REPLICA STATUS`` (``SHOW SLAVE STATUS`` before MariaDB 10.5;
MySQL 8's ``Replica_*``/``Source_*`` column names are read too) and decides, in this order:

1. No row: the server replicates from nothing. Unhealthy, "not a replica".
2. SQL thread not running, by ``STOP SLAVE`` or stopped by an error (a duplicate key, say):
   nothing reaches the data any more. Unhealthy, "replication stopped", with ``Last_SQL_Error``
   (and ``Last_IO_Error``) when there is one.
3. Both threads running: ``Seconds_Behind_Master`` decides. Above ``rpo_s``: unhealthy ("N s
   behind, RPO is M s"); above ``lag_warn_s``: healthy with a warning; NULL although both
   threads run: unhealthy, because the lag is unknown. MariaDB 10.11 counts a ``MASTER_DELAY``
   in it (it is the age of the event being applied, and grows second by second while a delayed
   event waits), so a deliberately delayed replica is judged by how old its data is, which is
   what an RPO is about.
4. SQL thread running, IO thread not connected:

   a. IO ``No`` with no IO error: stopped by hand (``STOP SLAVE IO_THREAD``). Unhealthy,
      "replication stopped".
   b. A network error (2003 can't connect, 2013 lost connection, 2006 gone away, ...), or IO
      ``Connecting`` with no error yet: the primary is unreachable from the replica. This is the
      failover case itself, so the backup IS a safe target once it has applied everything it
      received: relay log executed to the end (``Exec_Master_Log_Pos == Read_Master_Log_Pos``
      in the same binlog file). Then healthy with the warning "primary unreachable from the
      replica; serving what it received up to ...". While relay log is still waiting to be
      applied (a slow SQL thread, or a ``MASTER_DELAY``), unhealthy until it is.
   c. Any other IO error (1045 the replication user is refused, 1236 the primary no longer has
      the binlog the replica needs): the primary answers but replication is broken, and the
      backup falls further behind with nothing to say by how much. Unhealthy, "replication
      broken".

What MariaDB 10.11 shows when the primary is SIGKILLed (observed on the local pair): within
milliseconds ``Slave_IO_Running`` becomes ``Connecting`` (the replica retries every
``MASTER_CONNECT_RETRY`` seconds), ``Last_IO_Errno`` is 2013 for the first failed read and 2003
("Can't connect ... Connection refused") from the first retry on, ``Seconds_Behind_Master``
turns NULL, ``Slave_SQL_Running`` stays ``Yes`` and the read and executed positions stop where
they were. When the primary returns, the IO thread reconnects by itself and the error clears.

Limits of rule 4b: a replica cannot know what the primary wrote after the link dropped; after a
network partition (rather than a crash) the primary may have accepted writes the backup never
got. MariaDB 10.11 does not report when the last received event happened, so the warning names
the last GTID received; servers that report ``Master_last_event_time`` (MariaDB 11.6+) give the
time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import pymysql
import pymysql.cursors

from acode_dagster.bronze.store import BronzeStore
from acode_dagster.errors import AcodeError, ConfigError, redact
from acode_dagster.mysql import MySQLEndpoint, explain_mysql_error
from acode_dagster.routing import BACKUP, PRIMARY, Role

Target = Literal["mysql_primary", "mysql_backup", "bucket_primary", "bucket_backup"]
TARGETS: tuple[Target, ...] = ("mysql_primary", "mysql_backup", "bucket_primary", "bucket_backup")

OK = "ok"
DEFAULT_BUDGET_S = 30.0

# A probe may take this many timeouts in all: connect, handshake and query each wait up to one.
_BUDGET_FACTOR = 2.0
# Long server messages (a failed event's statement) are cut: their head names the problem.
_MAX_ERROR_CHARS = 300
_ER_PARSE_ERROR = 1064
_ER_SPECIFIC_ACCESS_DENIED = 1227
# IO-thread errors that mean "could not reach the primary", not "the primary refused us".
_NETWORK_ERRNOS = frozenset({1158, 1159, 1160, 1161, 2002, 2003, 2005, 2006, 2013})
_APPLIED_ALL_STATES = ("has read all relay log",)

Details = Mapping[str, int | float | str]


@dataclass(frozen=True)
class ProbeResult:
    """One target's health at one moment; what a sensor stores and an operator reads."""

    target: str
    healthy: bool
    latency_s: float
    reason: str
    """``"ok"``, or what is wrong and what to check. Never a password, key or token."""
    warning: str | None = None
    """Healthy but worth a look, e.g. ``replica 420 s behind (warn at 300 s)``."""
    details: Details = field(default_factory=dict)
    """Machine-readable facts, e.g. ``seconds_behind`` (-1 when unknown), ``io_running``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "healthy": self.healthy,
            "latency_s": self.latency_s,
            "reason": self.reason,
            "warning": self.warning,
            "details": dict(self.details),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ProbeResult:
        warning = raw.get("warning")
        details = raw.get("details") or {}
        return cls(
            target=str(raw["target"]),
            healthy=bool(raw["healthy"]),
            latency_s=float(raw["latency_s"]),
            reason=str(raw["reason"]),
            warning=None if warning is None else str(warning),
            details={str(k): _detail_value(v) for k, v in dict(details).items()},
        )


def _detail_value(value: Any) -> int | float | str:
    # bool is an int to Python but not a detail type; JSON never yields one here anyway.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return str(value)


@dataclass(frozen=True)
class ProbeSettings:
    timeout_s: float = 5.0
    """Longest wait for one network operation; a probe as a whole waits at most twice this."""
    rpo_s: float = 3600.0
    """A backup further behind than this is not a safe target."""
    lag_warn_s: float = 300.0
    """A backup further behind than this is still a target, with a warning."""
    budget_s: float = DEFAULT_BUDGET_S
    """Longest wait for a whole round of probes run at once (:func:`probe_all`)."""

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"probe timeout must be positive, got {self.timeout_s}")
        if not self.budget_s > 0:
            raise ConfigError(f"probe budget must be positive, got {self.budget_s}")
        if not self.rpo_s > 0 or not self.lag_warn_s >= 0:
            raise ConfigError(
                f"probe RPO must be positive and the lag warning not negative, got "
                f"rpo_s={self.rpo_s}, lag_warn_s={self.lag_warn_s}"
            )


class Verdict(NamedTuple):
    """What a check concluded, before the probe adds target and latency."""

    healthy: bool
    reason: str
    warning: str | None = None
    details: Details = MappingProxyType({})


# ---------------------------------------------------------------------- MySQL


def probe_mysql(
    endpoint: MySQLEndpoint, role: Role, settings: ProbeSettings = ProbeSettings()
) -> ProbeResult:
    """Connect with every timeout at ``settings.timeout_s`` and run ``SELECT 1``."""

    def check() -> Verdict:
        conn = _connect(endpoint, settings)
        try:
            _select_one(endpoint, conn)
        finally:
            _close(conn)
        return Verdict(True, OK)

    return run_check(f"mysql_{role}", check, settings, endpoint.secrets(), where=endpoint.display)


def probe_replica(
    endpoint: MySQLEndpoint, settings: ProbeSettings = ProbeSettings()
) -> ProbeResult:
    """:func:`probe_mysql`'s check on the backup, then the replica rules of the module docstring."""

    def check() -> Verdict:
        conn = _connect(endpoint, settings)
        try:
            _select_one(endpoint, conn)
            status = _replica_status(endpoint, conn)
        finally:
            _close(conn)
        return judge_replica(status, settings, endpoint.secrets())

    return run_check(f"mysql_{BACKUP}", check, settings, endpoint.secrets(), where=endpoint.display)


def _connect(
    endpoint: MySQLEndpoint, settings: ProbeSettings
) -> pymysql.connections.Connection[Any]:
    # connect() takes its connect timeout from the endpoint, so the probe's goes in there.
    probing = replace(endpoint, connect_timeout_s=settings.timeout_s)
    return probing.connect(read_timeout=settings.timeout_s, write_timeout=settings.timeout_s)


def _close(conn: pymysql.connections.Connection[Any]) -> None:
    # After a timeout pymysql has already dropped the socket, and close() would raise
    # "Already closed" over the error worth reporting.
    with contextlib.suppress(Exception):
        if conn.open:
            conn.close()


def _select_one(endpoint: MySQLEndpoint, conn: pymysql.connections.Connection[Any]) -> None:
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            row = cursor.fetchone()
    except pymysql.MySQLError as exc:
        raise explain_mysql_error(endpoint, exc) from None
    if row is None or row[0] != 1:
        raise AcodeError(f"MySQL {endpoint.display}: SELECT 1 answered {row!r}")


def _replica_status(
    endpoint: MySQLEndpoint, conn: pymysql.connections.Connection[Any]
) -> dict[str, Any] | None:
    """The replica's status row, or None when the server replicates from nothing."""
    last: pymysql.MySQLError | None = None
    for statement in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cursor:
                cursor.execute(statement)
                row: dict[str, Any] | None = cursor.fetchone()
            return row
        except pymysql.MySQLError as exc:
            last = exc
            # Only a server too old for the REPLICA spelling deserves the second try.
            if exc.args and exc.args[0] != _ER_PARSE_ERROR:
                break
    assert last is not None
    if last.args and last.args[0] == _ER_SPECIFIC_ACCESS_DENIED:
        raise AcodeError(
            f"MySQL {endpoint.display}: the user may not read the replication status — grant it "
            "SLAVE MONITOR (MariaDB 10.5+) or REPLICATION CLIENT"
        )
    raise explain_mysql_error(endpoint, last)


def _get(status: Mapping[str, Any], *names: str) -> Any:
    """The first column present: MariaDB and old MySQL say Slave/Master, MySQL 8 Replica/Source."""
    for name in names:
        if name in status:
            return status[name]
    return None


def _text(value: Any, secrets: Iterable[str]) -> str:
    return redact(str(value or ""), secrets)[:_MAX_ERROR_CHARS]


def judge_replica(
    status: Mapping[str, Any] | None, settings: ProbeSettings, secrets: Iterable[str] = ()
) -> Verdict:
    """Apply the replica rules (module docstring) to one ``SHOW REPLICA STATUS`` row."""
    if status is None:
        return Verdict(
            False,
            "not a replica: SHOW REPLICA STATUS is empty; point it at the primary "
            "(CHANGE MASTER TO ...; START SLAVE)",
        )
    hidden = tuple(secrets)
    io = str(_get(status, "Slave_IO_Running", "Replica_IO_Running") or "No")
    sql = str(_get(status, "Slave_SQL_Running", "Replica_SQL_Running") or "No")
    behind = _get(status, "Seconds_Behind_Master", "Seconds_Behind_Source")
    io_errno = int(_get(status, "Last_IO_Errno") or 0)
    io_error = _text(_get(status, "Last_IO_Error"), hidden)
    sql_errno = int(_get(status, "Last_SQL_Errno") or 0)
    sql_error = _text(_get(status, "Last_SQL_Error"), hidden)
    details: dict[str, int | float | str] = {
        "seconds_behind": int(behind) if behind is not None else -1,
        "io_running": io,
        "sql_running": sql,
        "last_io_errno": io_errno,
        "last_io_error": io_error,
        "last_sql_errno": sql_errno,
        "last_sql_error": sql_error,
        "received_up_to": _position(status, "Master_Log_File", "Read_Master_Log_Pos"),
        "applied_up_to": _position(status, "Relay_Master_Log_File", "Exec_Master_Log_Pos"),
    }
    gtid = _get(status, "Gtid_IO_Pos", "Retrieved_Gtid_Set")
    if gtid:
        details["gtid_received"] = str(gtid)

    if sql != "Yes":
        reason = "replication stopped: the replica's SQL thread is not running"
        if sql_errno:
            reason += f" (last SQL error {sql_errno}: {sql_error})"
        if io_errno:
            reason += f" (last IO error {io_errno}: {io_error})"
        return Verdict(
            False, reason + "; fix the cause, then START SLAVE on the backup", None, details
        )
    if io == "Yes":
        return _judge_lag(behind, settings, details)
    if io == "No" and not io_errno:
        return Verdict(
            False,
            "replication stopped: the replica's IO thread is not running (STOP SLAVE IO_THREAD?); "
            "START SLAVE on the backup",
            None,
            details,
        )
    if io_errno and io_errno not in _NETWORK_ERRNOS:
        return Verdict(
            False,
            f"replication broken: the replica cannot replicate from the primary (IO error "
            f"{io_errno}: {io_error}); it falls further behind until that is fixed",
            None,
            details,
        )
    return _judge_disconnected(status, io_errno, io_error, details)


def _judge_lag(behind: Any, settings: ProbeSettings, details: Details) -> Verdict:
    if behind is None:
        return Verdict(
            False,
            "replica lag unknown: both threads run but Seconds_Behind_Master is NULL; check "
            "SHOW REPLICA STATUS on the backup",
            None,
            details,
        )
    lag = int(behind)
    if lag > settings.rpo_s:
        return Verdict(
            False,
            f"replica {lag} s behind, RPO is {settings.rpo_s:g} s: wait for it to catch up or "
            "find what slows it (SHOW REPLICA STATUS, the primary's write load)",
            None,
            details,
        )
    if lag > settings.lag_warn_s:
        return Verdict(
            True, OK, f"replica {lag} s behind (warn at {settings.lag_warn_s:g} s)", details
        )
    return Verdict(True, OK, None, details)


def _judge_disconnected(
    status: Mapping[str, Any], io_errno: int, io_error: str, details: Details
) -> Verdict:
    """Rule 4b: the primary is out of reach; safe once everything received is applied."""
    if io_errno:
        # MariaDB's text is "error reconnecting to master '...' - retry-time: 1 ... message: X";
        # X is the part a person needs.
        cause = io_error.rsplit("message: ", 1)[-1]
        what = f"primary unreachable from the replica (IO error {io_errno}: {cause})"
    else:
        what = "replica is (re)connecting to the primary"
    applied = _applied_everything(status)
    if applied is None:
        return Verdict(
            False,
            f"{what}, and the replica does not say whether it applied all it received; "
            "check SHOW REPLICA STATUS on the backup",
            None,
            details,
        )
    if not applied:
        return Verdict(
            False,
            f"{what}, and it has received changes it has not applied yet (received up to "
            f"{details['received_up_to']}, applied up to {details['applied_up_to']}); it becomes "
            "a safe target when it has applied them",
            None,
            details,
        )
    return Verdict(True, OK, f"{what}; serving what it received up to {_received(status)}", details)


def _applied_everything(status: Mapping[str, Any]) -> bool | None:
    """Whether the relay log is executed to its end; None when the row cannot tell."""
    read_file = _get(status, "Master_Log_File", "Source_Log_File")
    exec_file = _get(status, "Relay_Master_Log_File", "Relay_Source_Log_File")
    read_pos = _get(status, "Read_Master_Log_Pos", "Read_Source_Log_Pos")
    exec_pos = _get(status, "Exec_Master_Log_Pos", "Exec_Source_Log_Pos")
    if None not in (read_file, exec_file, read_pos, exec_pos):
        return bool(read_file == exec_file and int(read_pos) == int(exec_pos))
    state = str(_get(status, "Slave_SQL_Running_State", "Replica_SQL_Running_State") or "")
    if any(s in state for s in _APPLIED_ALL_STATES):
        return True
    return None


def _received(status: Mapping[str, Any]) -> str:
    """When (or at least how far) the replica last heard from the primary."""
    when = _get(status, "Master_last_event_time")
    if when:
        return f"{when} (time of the primary's last event it received)"
    gtid = _get(status, "Gtid_IO_Pos", "Retrieved_Gtid_Set")
    if gtid:
        return f"GTID {gtid} (this server does not report the time)"
    file, pos = _get(status, "Master_Log_File"), _get(status, "Read_Master_Log_Pos")
    return f"binlog position {file}:{pos} (this server does not report the time)"


def _position(status: Mapping[str, Any], file_key: str, pos_key: str) -> str:
    mysql8 = {
        "Master_Log_File": "Source_Log_File",
        "Relay_Master_Log_File": "Relay_Source_Log_File",
    }
    file = _get(status, file_key, mysql8.get(file_key, file_key))
    pos = _get(status, pos_key, pos_key.replace("Master", "Source"))
    return f"{file}:{pos}" if file else ""


# ---------------------------------------------------------------------- buckets


def probe_bucket(
    store: BronzeStore, role: Role, settings: ProbeSettings = ProbeSettings()
) -> ProbeResult:
    """Write, read back and delete a small object under ``_probe/`` (see ``store.probe``)."""
    # botocore does not echo keys in its errors; scrubbing them anyway costs nothing.
    secrets = [os.environ.get(k, "") for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    target = f"bucket_{role}"
    started = time.perf_counter()
    # The client is built before the clock of the probe's budget starts: the budget bounds
    # waiting on the bucket, and building a client is a second of CPU on a busy machine.
    try:
        put_get_delete = store.prepare_probe(settings.timeout_s)
    except AcodeError as exc:
        return ProbeResult(target, False, _since(started), redact(str(exc), tuple(secrets)))
    except Exception as exc:
        return ProbeResult(target, False, _since(started), _unexpected(exc, secrets, store.url))

    def check() -> Verdict:
        put_get_delete()
        return Verdict(True, OK)

    return run_check(target, check, settings, secrets, where=store.url)


# ---------------------------------------------------------------------- all at once

Probe = Callable[[], ProbeResult]


def probe_all(
    primary: MySQLEndpoint,
    backup: MySQLEndpoint,
    primary_store: BronzeStore,
    backup_store: BronzeStore,
    settings: ProbeSettings = ProbeSettings(),
    *,
    groups: Sequence[ProbeGroup] = (),
) -> dict[str, ProbeResult]:
    """The four probes and the ``groups`` at once, within ``settings.budget_s``, keyed by
    target (:data:`TARGETS` order, then the groups')."""
    calls: dict[str, Probe] = {
        "mysql_primary": lambda: probe_mysql(primary, PRIMARY, settings),
        "mysql_backup": lambda: probe_replica(backup, settings),
        "bucket_primary": lambda: probe_bucket(primary_store, PRIMARY, settings),
        "bucket_backup": lambda: probe_bucket(backup_store, BACKUP, settings),
    }
    return probe_within(calls, settings.budget_s, groups)


@dataclass(frozen=True)
class ProbeGroup:
    """Probes that one call runs and reports together (the replicator's own, say)."""

    targets: tuple[str, ...]
    """What the call reports on: each is reported unhealthy if the call is not done in time."""
    call: Callable[[], Mapping[str, ProbeResult]]


def probe_within(
    calls: Mapping[str, Probe], budget_s: float, groups: Sequence[ProbeGroup] = ()
) -> dict[str, ProbeResult]:
    """Run every probe and group at once, each in a thread of its own, and wait at most
    ``budget_s`` for them all; keyed by target, ``calls`` first, then each group's. Never raises.

    A probe still running when the budget is spent is reported unhealthy, and abandoned: its
    daemon thread ends with its own timeouts and holds up neither the caller nor the process's
    exit (a pool's worker threads would hold both).
    """
    jobs = [ProbeGroup((target,), partial(_single, target, call)) for target, call in calls.items()]
    jobs += groups
    started = time.perf_counter()
    deadline = time.monotonic() + budget_s
    done = threading.Condition()
    finished: dict[int, Mapping[str, ProbeResult]] = {}

    def work(index: int, job: ProbeGroup) -> None:
        try:
            results = dict(job.call())
        except Exception as exc:  # a probe never raises; this is a belt for the braces
            reason = _unexpected(exc, ())
            results = {t: ProbeResult(t, False, _since(started), reason) for t in job.targets}
        with done:
            finished[index] = results
            done.notify_all()

    for index, job in enumerate(jobs):
        try:
            threading.Thread(
                target=work, args=(index, job), name=f"probes-{index}", daemon=True
            ).start()
        except Exception as exc:  # no thread to be had: report it rather than raise
            reason = _unexpected(exc, ())
            with done:
                finished[index] = {t: ProbeResult(t, False, 0.0, reason) for t in job.targets}
    with done:
        while len(finished) < len(jobs) and (left := deadline - time.monotonic()) > 0:
            done.wait(left)
        ready = dict(finished)
    waited = _since(started)
    results: dict[str, ProbeResult] = {}
    for index, job in enumerate(jobs):
        if index in ready:
            results.update(ready[index])
        else:
            results.update({t: _out_of_budget(t, budget_s, waited) for t in job.targets})
    return results


def _single(target: str, call: Probe) -> dict[str, ProbeResult]:
    return {target: call()}


def _out_of_budget(target: str, budget_s: float, waited_s: float) -> ProbeResult:
    return ProbeResult(
        target,
        False,
        waited_s,
        f"{target} ran out of the tick's probe budget: no verdict within {budget_s:g} s for "
        "all probes at once (ACODE_PROBE_BUDGET_S); check that it runs and is reachable",
    )


# ---------------------------------------------------------------------- running a check


def run_check(
    target: str,
    check: Callable[[], Verdict],
    settings: ProbeSettings,
    secrets: Iterable[str],
    *,
    where: str = "",
) -> ProbeResult:
    """Run ``check`` in a worker thread and wait at most the probe's budget for it.

    Never raises. An error becomes an unhealthy result; a check still running when the budget
    is spent is abandoned (daemon thread, bounded by its own socket timeouts) and reported.
    """
    hidden = tuple(s for s in secrets if s)
    started = time.perf_counter()
    outcome: list[ProbeResult] = []

    def work() -> None:
        try:
            verdict = check()
            reason = redact(verdict.reason, hidden)
            warning = redact(verdict.warning, hidden) if verdict.warning else None
            result = ProbeResult(
                target, verdict.healthy, _since(started), reason, warning, dict(verdict.details)
            )
        except AcodeError as exc:
            # The platform's own errors already name the server and the fix.
            result = ProbeResult(target, False, _since(started), redact(str(exc), hidden))
        except Exception as exc:
            result = ProbeResult(target, False, _since(started), _unexpected(exc, hidden, where))
        outcome.append(result)

    budget = settings.timeout_s * _BUDGET_FACTOR
    try:
        worker = threading.Thread(target=work, name=f"probe-{target}", daemon=True)
        worker.start()
        worker.join(budget)
    except Exception as exc:  # no thread to be had: report it rather than raise
        return ProbeResult(target, False, _since(started), _unexpected(exc, hidden, where))
    if outcome:
        return outcome[0]
    place = f" ({where})" if where else ""
    return ProbeResult(
        target,
        False,
        _since(started),
        f"{target}{place} did not answer within {budget:g} s (probe timeout "
        f"{settings.timeout_s:g} s per operation): check that it runs and is reachable",
    )


def _unexpected(exc: BaseException, secrets: Iterable[str], where: str = "") -> str:
    place = f" {where}" if where else ""
    return redact(
        f"probing{place} failed unexpectedly: {type(exc).__name__}: {exc}", tuple(secrets)
    )


def _since(started: float) -> float:
    return time.perf_counter() - started
