"""Failover drill: kill the primary MySQL, then time the failover, the first partition from the
backup, the fail-back and the catch-up, through the real health sensor and real runs.

    python bench/failover_drill.py [--rounds 3] [--interval 2] [--dwell 0] [--work DIR --keep]

Each round starts a private MariaDB pair, loads the last three complete demo days, lands the
first day from the primary, then ticks the real ``acode_health_sensor`` every ``--interval``
seconds. The ticks persist their observations as the daemon does. Every run the sensor requests
is launched at once in a process of its own, as the daemon's default run launcher does. The
primary is SIGKILLed half an interval after a tick. Once the catch-up runs are done, it is started
again.

Each figure is given in seconds and in probe intervals. The intervals are then extrapolated to
the default 5-minute probe (``ACODE_HEALTH_INTERVAL_S=300``), adding the tick, run and restart
times as measured, since those do not depend on the probe interval. The bench prints a Markdown
table and a one-line verdict. The Dagster and sensor logs go to ``<work>/drill.log``; on a
failure, ``--work`` is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

PRODUCTION_INTERVAL_S = 300
FAILOVER_TARGET_S = 15 * 60
RTO_TARGET_S = 2 * 3600
RPO_TARGET_S = 3600
DAYS = 3
WARMUP_TICKS = 2
STEP_TIMEOUT_S = 120.0

_STARTED = time.monotonic()
_OUT: TextIO = sys.stdout


def say(message: str) -> None:
    """A progress line for the person watching: wall clock and seconds since the start."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp} +{time.monotonic() - _STARTED:6.1f}s] {message}", file=_OUT, flush=True)


def configure(work: Path, interval: int, dwell: float) -> None:
    """This process's ACODE_* settings, set before the platform's modules read them."""
    for name in list(os.environ):
        if name.startswith("ACODE_") or name in ("SLACK_BOT_TOKEN", "PAGERDUTY_ROUTING_KEY"):
            del os.environ[name]
    os.environ.update(
        {
            "ACODE_HOME": str(work),
            "ACODE_BRONZE_URL": str(work / "bronze"),
            "ACODE_BRONZE_BACKUP_URL": str(work / "bronze-backup"),
            "ACODE_HEALTH_INTERVAL_S": str(interval),
            "ACODE_PROBE_TIMEOUT_S": "1",
            "ACODE_FAILOVER_AFTER": "2",
            "ACODE_FAILBACK_AFTER": "3",
            "ACODE_FAILBACK_DWELL_S": f"{dwell:g}",
            "ACODE_CATCHUP_DAYS": str(DAYS),
            "ACODE_RETRIES": "1",
            "ACODE_RETRY_BASE_S": "0.5",
        }
    )


# ---------------------------------------------------------------------- one run, in its process


def child_run(partition: str, keys: str) -> None:
    """Execute one requested run through ``Platform.run`` on the instance in DAGSTER_HOME, and
    print what it landed as JSON on the last line of stdout."""
    import dagster as dg

    from acode_dagster.localstack import LocalStack
    from acode_dagster_tests.support.platform import Platform

    with dg.DagsterInstance.get() as instance:
        platform = Platform(LocalStack(Path(os.environ["ACODE_HOME"]) / "stack"), instance)
        request = dg.RunRequest(
            partition_key=partition,
            asset_selection=[dg.AssetKey.from_user_string(k) for k in keys.split(",")],
        )
        began = time.monotonic()
        result = platform.run(request)
        seconds = time.monotonic() - began
        roles, rows = set(), {}
        for event in result.get_asset_materialization_events():
            metadata = event.materialization.metadata
            roles.add(str(metadata["source_role"].value))
            key = event.materialization.asset_key.to_user_string()
            rows[key] = int(metadata["dagster/row_count"].value)  # type: ignore[arg-type]
    print(
        json.dumps(
            {"success": result.success, "roles": sorted(roles), "rows": rows, "seconds": seconds}
        )
    )


# ---------------------------------------------------------------------- the daemon, by hand


@dataclass
class Tick:
    started: float
    ended: float
    source: str
    requests: int


@dataclass
class Run:
    partition: str
    launched: float
    finished: float = 0.0
    success: bool = False
    roles: set[str] = field(default_factory=set)
    rows: dict[str, int] = field(default_factory=dict)
    run_s: float = 0.0
    error: str = ""


class Daemon:
    """The sensor daemon and the run launcher: one tick per interval in a thread, and every
    requested run launched at once in a process of its own (each run key once).

    Runs are processes, not threads, because Dagster sets up logging at each run start
    (``logging.config.dictConfig``), which deadlocks against a run or a tick logging in another
    thread of the same process; the daemon's default launcher uses a process per run as well.
    """

    def __init__(self, platform: Any, interval: float, logs: Path) -> None:
        self.platform, self.interval, self.logs = platform, interval, logs
        self.ticks: list[Tick] = []
        self.runs: list[Run] = []
        self.failure: BaseException | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="launcher")
        self.futures: list[Future[None]] = []
        self.run_keys: set[str] = set()
        self.thread = threading.Thread(target=self._loop, name="ticker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=STEP_TIMEOUT_S)
        for future in self.futures:
            future.result(timeout=STEP_TIMEOUT_S)
        self.pool.shutdown(wait=True)

    def _loop(self) -> None:
        next_at = time.monotonic()
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                requests = self.platform.tick()
                source = self.platform.route.source
                ended = time.monotonic()
                with self.lock:
                    self.ticks.append(Tick(started, ended, source, len(requests)))
                    count = len(self.ticks)
                asked = f", {len(requests)} run(s) requested" if requests else ""
                say(f"tick {count}: route source={source} ({ended - started:.2f} s){asked}")
                for request in requests:
                    if request.run_key not in self.run_keys:
                        self.run_keys.add(request.run_key)
                        self.futures.append(self.pool.submit(self._launch, request))
                # The daemon's cadence: the next evaluation one interval after this one began.
                next_at = max(next_at + self.interval, time.monotonic())
                self.stopping.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:
            self.failure = exc
            traceback.print_exc()

    def _launch(self, request: Any) -> None:
        partition = str(request.partition_key)
        keys = ",".join(k.to_user_string() for k in request.asset_selection)
        run = Run(partition=partition, launched=time.monotonic())
        with self.lock:
            self.runs.append(run)
        log = self.logs / f"run-{partition}-{len(self.runs)}.log"
        try:
            with log.open("w") as stderr:
                done = subprocess.run(
                    [sys.executable, __file__, "--child-run", partition, keys],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    timeout=STEP_TIMEOUT_S,
                    check=False,
                )
            if done.returncode != 0:
                raise RuntimeError(f"exit {done.returncode}, see {log}")
            landed = json.loads(done.stdout.strip().splitlines()[-1])
            run.success, run.roles = landed["success"], set(landed["roles"])
            run.rows, run.run_s = landed["rows"], landed["seconds"]
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
        run.finished = time.monotonic()
        outcome = "landed" if run.success else "FAILED"
        say(
            f"run {partition} {outcome} from {'/'.join(sorted(run.roles)) or '-'}: "
            f"{run.finished - run.launched:.1f} s launched to finished ({run.run_s:.1f} s in the "
            f"run){': ' + run.error if run.error else ''}"
        )

    def snapshot(self) -> tuple[list[Tick], list[Run]]:
        with self.lock:
            return list(self.ticks), list(self.runs)

    def first_tick_on(self, source: str, since: float) -> Tick | None:
        ticks = self.snapshot()[0]
        return next((t for t in ticks if t.ended >= since and t.source == source), None)

    def ticks_between(self, since: float, until: Tick) -> int:
        """Ticks from ``since`` to ``until``, counting one that was under way at ``since``: its
        probe may have come after (the conservative count)."""
        return len([t for t in self.snapshot()[0] if since <= t.ended <= until.ended])

    def first_from_backup(self) -> Run | None:
        done = [r for r in self.snapshot()[1] if r.success and "backup" in r.roles]
        return min(done, key=lambda r: r.finished) if done else None

    def idle(self) -> bool:
        return all(r.finished for r in self.snapshot()[1])

    def wait(self, condition: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not condition():
            if self.failure is not None:
                raise RuntimeError(f"the ticker failed while waiting for {what}") from self.failure
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {STEP_TIMEOUT_S:.0f} s waiting for {what}")
            time.sleep(0.05)


# ---------------------------------------------------------------------- one round


def gtid_seq(stack: Any, role: str, variable: str) -> str:
    from acode_dagster.localstack import _scalar

    with stack.endpoint(role, admin=True).connect() as conn:
        return str(_scalar(conn, f"SELECT @@GLOBAL.{variable}"))


def transactions_behind(logged: str, applied: str) -> int:
    """How many transactions of the primary's binlog the backup had not applied (one domain)."""
    if logged == applied:
        return 0
    try:
        return int(logged.rsplit("-", 1)[1]) - int((applied or "0-0-0").rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1  # several GTID domains: unknown, reported as a failure


def prepare(number: int, work: Path, rows: int) -> tuple[Any, list[date]]:
    """A fresh pair with the demo days loaded and replicated, fresh bronze and Dagster home."""
    from acode_dagster.demo.loader import load_days
    from acode_dagster.localstack import LocalStack
    from acode_dagster.tables import FISCAL_LINES, last_complete_days

    for folder in ("bronze", "bronze-backup", "stack", f"dagster/round-{number}"):
        shutil.rmtree(work / folder, ignore_errors=True)
    (work / f"dagster/round-{number}").mkdir(parents=True)
    os.environ["DAGSTER_HOME"] = str(work / f"dagster/round-{number}")
    days = last_complete_days(DAYS)
    stack = LocalStack(work / "stack")
    began = time.monotonic()
    stack.start()
    load_days(
        stack.endpoint("primary", admin=True),
        days,
        rows={FISCAL_LINES.name: rows},
        log=lambda _msg: None,
    )
    stack.wait_replica_caught_up()
    say(
        f"round {number}: MariaDB pair up, {', '.join(map(str, days))} loaded and replicated in "
        f"{time.monotonic() - began:.1f} s"
    )
    return stack, days


def outage(number: int, stack: Any, daemon: Daemon, interval: float) -> dict[str, Any]:
    """Kill the primary, wait for the failover and the catch-up, restart it, wait for the
    fail-back; the times and tick counts of each step."""
    daemon.wait(lambda: len(daemon.snapshot()[0]) >= WARMUP_TICKS, "the warm-up ticks")
    last = daemon.snapshot()[0][-1]
    assert last.source == "primary", "the route must start on the primary"
    # Half an interval after a tick: the kill falls at the mean phase of the cadence.
    time.sleep(max(0.0, last.started + interval / 2 - time.monotonic()))
    logged = gtid_seq(stack, "primary", "gtid_binlog_pos")
    applied = gtid_seq(stack, "backup", "gtid_slave_pos")
    port_before = stack.endpoint("primary").port
    t0 = time.monotonic()
    stack.kill("primary")
    say(f"round {number}: t0, primary (port {port_before}) killed")

    daemon.wait(lambda: daemon.first_tick_on("backup", t0), "the failover")
    failover = daemon.first_tick_on("backup", t0)
    assert failover is not None
    failover_ticks = daemon.ticks_between(t0, failover)
    say(f"round {number}: failed over {failover.ended - t0:.1f} s after t0, tick {failover_ticks}")
    daemon.wait(daemon.first_from_backup, "a partition landed from the backup")
    first = daemon.first_from_backup()
    assert first is not None
    say(f"round {number}: first partition from the backup {first.finished - t0:.1f} s after t0")
    daemon.wait(daemon.idle, "the catch-up runs")

    t1 = time.monotonic()
    say(f"round {number}: t1, starting the primary again")
    stack.start_server("primary")
    ready = time.monotonic()
    port_after = stack.endpoint("primary").port
    moved = f" (NEW port, was {port_before})" if port_after != port_before else " (same port)"
    say(f"round {number}: primary answers {ready - t1:.1f} s after t1 on port {port_after}{moved}")
    daemon.wait(lambda: daemon.first_tick_on("primary", ready), "the fail-back")
    failback = daemon.first_tick_on("primary", ready)
    assert failback is not None
    failback_ticks = daemon.ticks_between(ready, failback)
    say(f"round {number}: failed back {failback.ended - t1:.1f} s after t1, tick {failback_ticks}")
    # One more tick (quiet, nothing to request), and whatever the fail-back requested runs.
    time.sleep(interval + 0.5)
    daemon.wait(daemon.idle, "the fail-back's runs")
    landed = [r.finished for r in daemon.snapshot()[1] if r.success]
    return {
        "failover_s": failover.ended - t0,
        "failover_ticks": failover_ticks,
        "failover_tick_s": failover.ended - failover.started,
        "rto_s": first.finished - t0,
        "rto_after_tick_s": first.finished - failover.started,
        "caught_up_s": max(landed) - t0,
        "caught_up_after_tick_s": max(landed) - failover.started,
        "restart_s": ready - t1,
        "failback_s": failback.ended - t1,
        "failback_ticks": failback_ticks,
        "failback_tick_s": failback.ended - failback.started,
        "behind_trx": transactions_behind(logged, applied),
        "port_moved": port_after != port_before,
    }


def audit(instance: Any, stack: Any, days: list[date], runs: list[Run]) -> dict[str, Any]:
    """Each partition of the window landed once; the backup's partitions hold the primary's
    rows (counted on the primary, back up again)."""
    from acode_dagster.defs.bronze.checks import bronze_key
    from acode_dagster.mysql import count_rows
    from acode_dagster.tables import TABLES

    counts: dict[tuple[str, str], int] = {}
    for table in TABLES:
        for record in instance.fetch_materializations(bronze_key(table), limit=1000).records:
            key = (table.name, str(record.partition_key))
            counts[key] = counts.get(key, 0) + 1
    expected = {(table.name, str(day)) for table in TABLES for day in days}
    lost = 0
    for run in runs:
        if "backup" not in run.roles:
            continue
        for table in TABLES:
            landed = run.rows.get(bronze_key(table).to_user_string())
            if landed is not None:
                day = date.fromisoformat(run.partition)
                lost += max(0, count_rows(stack.endpoint("primary"), table, day) - landed)
    return {
        "runs": len(runs),
        "failed_runs": len([r for r in runs if not r.success]),
        "missing": sorted(expected - set(counts)),
        "landed_twice": sorted(key for key, n in counts.items() if n > 1),
        "rows_lost": lost,
    }


def drill_round(number: int, work: Path, interval: float, rows: int) -> dict[str, Any]:
    import dagster as dg

    from acode_dagster_tests.support.platform import Platform, metadata_of

    stack, days = prepare(number, work, rows)
    logs = work / "logs" / f"round-{number}"
    logs.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=os.environ["DAGSTER_HOME"]) as instance:
        platform = Platform(stack, instance)
        landed = platform.materialize(days[0])
        assert landed.success and metadata_of(landed)["source_role"] == "primary", days[0]
        say(f"round {number}: {days[0]} landed from the primary; the ticker starts")
        daemon = Daemon(platform, interval, logs)
        daemon.start()
        try:
            figures = outage(number, stack, daemon, interval)
        finally:
            daemon.stop()
        figures.update(audit(instance, stack, days, daemon.snapshot()[1]))
    say(
        f"round {number}: {figures['runs']} catch-up run(s), {figures['failed_runs']} failed; "
        f"never landed: {figures['missing'] or 'none'}; landed twice: "
        f"{figures['landed_twice'] or 'none'}; rows lost: {figures['rows_lost']}"
    )
    return figures


# ---------------------------------------------------------------------- report


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def print_table(rounds: list[dict[str, Any]], interval: float) -> bool:
    def spread(values: list[float]) -> tuple[float, float]:
        return statistics.median(values), max(values)

    def at_scale(ticks: str, *measured: str) -> tuple[float, float]:
        # Each probe interval becomes five minutes; what does not wait on the cadence (the
        # deciding tick, the runs, the restart) is added as measured.
        return spread(
            [r[ticks] * PRODUCTION_INTERVAL_S + sum(r[k] for k in measured) for r in rounds]
        )

    failover = at_scale("failover_ticks", "failover_tick_s")
    rto = at_scale("failover_ticks", "rto_after_tick_s")
    rows = [
        ("failover: kill -> route on the backup", "failover_s", "failover_ticks", failover),
        ("**RTO**: kill -> first partition landed from the backup", "rto_s", "failover_ticks", rto),
        (
            "caught up: kill -> every partition of the window landed",
            "caught_up_s",
            "failover_ticks",
            at_scale("failover_ticks", "caught_up_after_tick_s"),
        ),
        (
            "fail-back: restart -> route on the primary",
            "failback_s",
            "failback_ticks",
            at_scale("failback_ticks", "restart_s", "failback_tick_s"),
        ),
    ]
    targets = {
        "failover_s": f"< {minutes(FAILOVER_TARGET_S)}",
        "rto_s": "2 h",
    }
    print(
        f"\n{len(rounds)} round(s), a probe every {interval:g} s; median / max. At 5-min probes: "
        f"probe intervals x {PRODUCTION_INTERVAL_S} s, plus the tick, run and restart times as "
        "measured.\n"
    )
    print("| figure | seconds | probe intervals | at 5-min probes | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for label, seconds, ticks, scaled in rows:
        s_med, s_max = spread([r[seconds] for r in rounds])
        t_med, t_max = spread([r[ticks] for r in rounds])
        print(
            f"| {label} | {s_med:.1f} / {s_max:.1f} | {t_med:g} / {t_max:g} | "
            f"{minutes(scaled[0])} / {minutes(scaled[1])} | {targets.get(seconds, '-')} |"
        )
    r_med, r_max = spread([r["restart_s"] for r in rounds])
    print(
        f"| primary restart (part of the fail-back) | {r_med:.1f} / {r_max:.1f} | - | "
        f"{r_med:.0f} s / {r_max:.0f} s (does not scale) | - |"
    )
    lost = max(r["rows_lost"] for r in rounds)
    behind = max(r["behind_trx"] for r in rounds)
    unknown = any(r["behind_trx"] < 0 for r in rounds)
    print(
        f"| **RPO**: rows lost / transactions the backup lacked at the kill | {lost} / "
        f"{'unknown' if unknown else behind} | - | {lost} / {'unknown' if unknown else behind} "
        "(replica lag, does not scale) | 1 h |"
    )
    once = all(not r["missing"] and not r["landed_twice"] for r in rounds)
    failed = sum(r["failed_runs"] for r in rounds)
    moved = sum(r["port_moved"] for r in rounds)
    print(
        f"\nEvery partition of the window landed exactly once: {'yes' if once else 'NO'} "
        f"({sum(r['runs'] for r in rounds)} catch-up runs, {failed} failed). The primary came "
        f"back on a new port in {moved} of {len(rounds)} round(s)."
    )
    ok = (
        failover[1] < FAILOVER_TARGET_S
        and rto[1] < RTO_TARGET_S
        and once
        and failed == 0
        and lost == 0
        and behind == 0
        and not unknown
    )
    print(
        f"\nVerdict: {'PASS' if ok else 'FAIL'}: at 5-minute probes the route would fail over "
        f"within {minutes(failover[1])} (target < 15 min) and the first partition land from the "
        f"backup within {minutes(rto[1])} (RTO target 2 h), with {lost} rows lost (RPO target "
        "1 h)."
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=int, default=2, help="seconds between two probes")
    parser.add_argument("--dwell", type=float, default=0, help="ACODE_FAILBACK_DWELL_S")
    parser.add_argument("--rows", type=int, default=2000, help="fiscal lines per demo day")
    parser.add_argument(
        "--work",
        default=str(HERE / ".work" / "failover-drill"),
        help="state folder: the MariaDB pair, bronze, Dagster instances, logs",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep --work (the pair stopped) for inspection"
    )
    parser.add_argument("--child-run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_run:
        child_run(*args.child_run)
        return

    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    configure(work, args.interval, args.dwell)
    # Dagster's console logs and the sensor's go to a file; stdout keeps the progress lines.
    log_path = work / "drill.log"
    sys.stderr = log_path.open("a", buffering=1)
    say(f"failover drill: {args.rounds} round(s), a probe every {args.interval} s; log {log_path}")

    from acode_dagster.localstack import LocalStack

    rounds: list[dict[str, Any]] = []
    failed = True
    try:
        for number in range(1, args.rounds + 1):
            try:
                rounds.append(drill_round(number, work, args.interval, args.rows))
            finally:
                stack = LocalStack(work / "stack")
                if args.keep and number == args.rounds:
                    stack.stop()
                else:
                    stack.destroy()
        failed = False
    except BaseException:
        traceback.print_exc(file=_OUT)
        say(f"the drill failed; --work kept: {work}")
        raise
    finally:
        sys.stderr.flush()
        if not failed and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ok = print_table(rounds, args.interval)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
