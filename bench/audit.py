"""Write-audit-publish benchmark: what auditing the staged version costs a sync.

    python bench/audit.py [--rounds 7] [--stores local,s3] [--work bench/.work] [--destroy]

On the 2,000,000-row day of ``farmarcas_si_analitico_diario`` (2026-10-02, the 2M day of
``bench/replication.py``, in the same kept pair: ``--work bench/.work`` shares it with
``python bench/replication.py --work bench/.work --keep``), compares two ways of landing the day,
on a local bronze folder and on S3 (moto's server over HTTP on loopback, started as the tests
start it):

- **A, publish then check** (main before write-audit-publish): ``publish_batches`` of the
  replicator's stream (``preflight``, ``stream_batches``, ``conform``; the lease, no audit),
  then ``evaluate_partition`` on the *published* files, with an empty volume history;
- **B, write, audit, publish**: ``EmbeddedReplicator().sync(table, day, source, store)``, which
  runs the same checks on the *staged* files, under the lease, before the swap.

The pair is seeded once and kept (stopped) for the next run; ``--destroy`` removes it. The
server reads its files with O_DIRECT, so only InnoDB's buffer pool can cache the window: the
primary's is grown for the run (``--buffer-pool-mb``, 1536 MB against a table of about 900 MB;
not persisted, the next start has the pair's 128 MB again), then one warm-up read of the window
(the raw client read) fills it, and the cache state is printed (buffer pool, pages read from
disk, per arm too). One untimed sync per store follows, so every timed run replaces a published
partition. Then ``--rounds`` rounds, each running both arms on each store, the order
alternating from round to round (A B, then B A), each arm in a fresh process under
``_measure.py`` so ``wait4`` reports its own peak RSS. The machine may be busy: the arms are
interleaved and compared as ratios. Prints a Markdown table and one JSON line, and writes
``bench/results/audit.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from acode_dagster.bronze.store import LEASE_DIR, STAGING_DIR  # noqa: E402
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS  # noqa: E402

TABLE = FISCAL_LINES
ROWS = 2_000_000
DAY = date(2026, 10, 2)
"""The 2M day of bench/replication.py (its FIRST_DAY + 1), so a pair kept by either is reused."""
BUCKET = "acode-bench-audit"
PREFIX = "lake"
ARMS = ("A", "B")
ARM_LABELS = {
    "A": "A: publish, then check the published files",
    "B": "B: write, audit in staging, publish",
}
PARTS = ("checks", "count", "describe", "footers", "keys", "swap")
"""Timed parts of an arm: the checks, of which the source's COUNT and data dictionary, the
footers and the key column; and the swap (publish) itself."""
STORE_LABELS = {"local": "local folder", "s3": "S3 (moto over HTTP)"}

# --------------------------------------------------------------------------- the arms (child)


class Tally:
    """What a child did besides moving rows: S3 requests made through boto3 (by operation),
    lease record operations, and the seconds spent in the checks and in their parts."""

    def __init__(self) -> None:
        self.s3_calls: Counter[str] = Counter()
        self.lease_ops: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.memory: dict[str, int] = {}

    def s3_hook(self, event_name: str, **_: Any) -> None:
        self.s3_calls[event_name.rsplit(".", 1)[-1]] += 1

    def instrument(self) -> None:
        """Wrap, in this process only, the functions whose calls and seconds are reported."""
        from acode_dagster import quality
        from acode_dagster.bronze import store

        for cls in (store.FileLeaseRecords, store.S3LeaseRecords):
            for op in ("create", "read", "swap", "delete"):
                setattr(cls, op, self._counted(op, getattr(cls, op)))
        # The checks' parts: the source's COUNT and data dictionary, the footers, the key column.
        quality.count_rows = self.timed("count", quality.count_rows)
        quality.source_columns = self.timed("describe", quality.source_columns)
        store._Files.footers = self.timed("footers", store._Files.footers)
        store._Files.read = self.timed("keys", store._Files.read)
        # The swap: the renames of a folder, the server-side copies on S3.
        store.LocalStore.swap_in = self.timed("swap", store.LocalStore.swap_in)
        store.S3Store.copy_in = self.timed("swap", store.S3Store.copy_in)

    def _counted(self, op: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.lease_ops[op] += 1
            return method(*args, **kwargs)

        return counted

    def audited(self, evaluate: Callable[..., Any]) -> Callable[..., Any]:
        """The checks, timed, with the process's memory as they start and its peak before and
        after them (so the report can tell whether the checks set the arm's peak RSS)."""
        timed = self.timed("checks", evaluate)

        @functools.wraps(evaluate)
        def audited(*args: Any, **kwargs: Any) -> Any:
            import pyarrow as pa

            self.memory["rss_at_checks_mb"] = _rss_now_mb()
            # Live buffers of Arrow's own pool (Parquet writer, casts), not what it keeps free.
            self.memory["arrow_at_checks_mb"] = round(pa.total_allocated_bytes() / 1e6)
            self.memory["peak_before_checks_mb"] = _peak_mb()
            try:
                return timed(*args, **kwargs)
            finally:
                self.memory["peak_after_checks_mb"] = _peak_mb()

        return audited

    def timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started

        return timed


def _rss_now_mb() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6)


def _peak_mb() -> int:
    # Linux reports kilobytes.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6)


def open_bench_store(kind: str, bronze: str, tally: Tally) -> Any:
    from acode_dagster.bronze.store import LocalStore, S3Store, s3_client

    if kind == "local":
        return LocalStore(Path(bronze))
    client = s3_client()
    client.meta.events.register("before-call.s3", tally.s3_hook)
    return S3Store(BUCKET, PREFIX, client=client)


def arm_a(source: Any, store: Any, tally: Tally) -> dict[str, Any]:
    """Publish then check: what main did before write-audit-publish."""
    from acode_dagster.bronze.publish import MAX_FILE_BYTES, ROW_GROUP_ROWS, publish_batches
    from acode_dagster.quality import evaluate_partition
    from acode_dagster.replicator import BATCH_ROWS, conform, preflight, stream_batches

    started, cpu = time.perf_counter(), time.process_time()
    preflight(TABLE, source)
    batches = stream_batches(source, TABLE.select_sql(DAY), BATCH_ROWS)
    manifest = publish_batches(
        TABLE,
        DAY,
        store,
        (conform(batch, TABLE.arrow_schema) for batch in batches),
        source=source.display,
        replicator="embedded",
        row_group_rows=ROW_GROUP_ROWS,
        max_file_bytes=MAX_FILE_BYTES,
    )
    verdicts = tally.audited(evaluate_partition)(
        TABLE, DAY, store.published(TABLE, DAY), source, []
    )
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rows": manifest.rows,
        "files": len(manifest.files),
        "bytes": manifest.bytes,
        "published": True,
        "outcomes": {v.check: v.outcome for v in verdicts},
    }


def arm_b(source: Any, store: Any, tally: Tally) -> dict[str, Any]:
    """Write, audit, publish: the sync as it is now, with its default publisher."""
    from acode_dagster import replicator

    # default_publisher's audit looks evaluate_partition up in the module when it runs.
    timed = tally.audited(replicator.evaluate_partition)
    replicator.evaluate_partition = timed
    started, cpu = time.perf_counter(), time.process_time()
    result = replicator.EmbeddedReplicator().sync(TABLE, DAY, source, store)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rows": result.rows,
        "files": result.files,
        "bytes": result.bytes,
        "published": result.published,
        "outcomes": {v.check: v.outcome for v in result.verdicts},
    }


def child(arm: str, kind: str, stack_home: str, bronze: str) -> None:
    from acode_dagster.localstack import LocalStack

    tally = Tally()
    tally.instrument()
    source = LocalStack(Path(stack_home)).endpoint("primary")
    store = open_bench_store(kind, bronze, tally)
    done = (arm_a if arm == "A" else arm_b)(source, store, tally)
    done.update(
        parts_s={k: round(v, 3) for k, v in sorted(tally.seconds.items())},
        **tally.memory,
        s3_calls=dict(sorted(tally.s3_calls.items())),
        lease_ops=dict(sorted(tally.lease_ops.items())),
    )
    print(json.dumps(done))


# --------------------------------------------------------------------------- the pair


def seed(stack: Any) -> dict[str, Any]:
    """The 2M-row day, loaded unless an earlier run left it in the kept pair."""
    from acode_dagster.demo.loader import load_days
    from acode_dagster.mysql import count_rows

    if count_rows(stack.endpoint("primary"), TABLE, DAY) == ROWS:
        print(f"{ROWS:,} rows for {DAY} already in the kept pair: not reloaded", flush=True)
        return {"seeded_now": False, "seed_s": 0.0}
    started = time.perf_counter()
    load_days(
        stack.endpoint("primary", admin=True),
        [DAY],
        rows={TABLE.name: ROWS, NFE_COMPLEMENTS.name: 0},
    )
    seconds = time.perf_counter() - started
    print(f"seeded {ROWS:,} rows for {DAY} in {seconds:.0f} s", flush=True)
    return {"seeded_now": True, "seed_s": round(seconds, 1)}


def query(stack: Any, sql: str) -> list[tuple[Any, ...]]:
    import pymysql

    endpoint = stack.endpoint("primary", admin=True)
    connection = pymysql.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=endpoint.user,
        password=endpoint.password or "",
        database=endpoint.database,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        connection.close()


def status(stack: Any, name: str) -> int:
    return int(query(stack, f"SHOW GLOBAL STATUS LIKE '{name}'")[0][1])


def pool_reads(stack: Any) -> int:
    """InnoDB page reads that missed the buffer pool (went to the disk), server-wide."""
    return status(stack, "Innodb_buffer_pool_reads")


def grow_buffer_pool(stack: Any, mb: int) -> int:
    """Resize the primary's buffer pool at run time (not persisted: the next start has the
    pair's own 128 MB again); its size in MB once the resize is done."""
    current = int(query(stack, "SELECT @@innodb_buffer_pool_size")[0][0])
    if mb <= 0 or current >= mb * 2**20:
        return round(current / 2**20)
    query(stack, f"SET GLOBAL innodb_buffer_pool_size = {mb * 2**20}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        size = int(query(stack, "SELECT @@innodb_buffer_pool_size")[0][0])
        state = query(stack, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'")
        text = str(state[0][1]) if state else ""
        if size >= mb * 2**20 and ("Completed" in text or not text):
            break
        time.sleep(0.5)
    return round(int(query(stack, "SELECT @@innodb_buffer_pool_size")[0][0]) / 2**20)


def cache_state(stack: Any) -> dict[str, Any]:
    flush, pool, page = query(
        stack, "SELECT @@innodb_flush_method, @@innodb_buffer_pool_size, @@innodb_page_size"
    )[0]
    database = stack.endpoint("primary").database
    table_rows, data_bytes = query(
        stack,
        "SELECT table_rows, data_length + index_length FROM information_schema.tables "
        f"WHERE table_schema = '{database}' AND table_name = '{TABLE.name}'",
    )[0]
    return {
        "innodb_flush_method": flush,
        "buffer_pool_mb": round(int(pool) / 2**20),
        "buffer_pool_data_mb": round(
            status(stack, "Innodb_buffer_pool_pages_data") * int(page) / 2**20
        ),
        "table_rows_estimate": int(table_rows),
        "table_mb": round(int(data_bytes) / 2**20),
    }


def describe_cache(before: dict[str, Any], after: dict[str, Any], warm: dict[str, Any]) -> str:
    lines = [
        f"MariaDB primary: buffer pool {after['buffer_pool_mb']} MB, flush method "
        f"{after['innodb_flush_method']}; table {after['table_mb']} MB of data and indexes, "
        f"~{after['table_rows_estimate']:,} rows (estimate)",
        f"buffer pool data pages: {before['buffer_pool_data_mb']} MB before the warm-up read, "
        f"{after['buffer_pool_data_mb']} MB after it",
        f"warm-up read (raw client, the replicator's SELECT): {warm['seconds']:.2f} s, "
        f"{warm['pool_reads']:,} pages read from disk",
    ]
    if after["buffer_pool_mb"] >= after["table_mb"]:
        lines.append(
            "the buffer pool can hold the whole table; the pages each timed run reads from disk "
            "are counted (Innodb_buffer_pool_reads) and decide whether the window was cached"
        )
    else:
        lines.append(
            "the buffer pool cannot hold the table, and InnoDB bypasses the OS page cache "
            f"({after['innodb_flush_method']}): reads of the window go partly to the disk"
        )
    return "\n".join(lines)


def cache_verdict(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Cached or not, from what the timed runs themselves read from disk."""
    misses = [r["pool_reads"] for r in results]
    if max(misses) == 0:
        text = (
            f"window CACHED: none of the {len(misses)} timed runs read a page from disk "
            "(Innodb_buffer_pool_reads unchanged across each run)"
        )
    else:
        text = (
            f"window NOT fully cached: the timed runs read up to {max(misses):,} pages from "
            f"disk (median {statistics.median(misses):,.0f})"
        )
    return {"cached": max(misses) == 0, "max_pool_reads_per_run": max(misses), "verdict": text}


def warm_up(stack: Any) -> dict[str, Any]:
    """One raw client read of the window, as bench/replication.py's floor reads it."""
    from replication import client_read, run_child

    argv, env = client_read(stack, DAY)
    misses = pool_reads(stack)
    seconds, _, _ = run_child(argv, env=env)
    return {"seconds": seconds, "pool_reads": pool_reads(stack) - misses}


# --------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command's closing parenthesis: utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def primary_pid(work: Path) -> int:
    state = json.loads((work / "stack" / "state.json").read_text())
    return int(Path(state["servers"]["primary"]["pid_file"]).read_text().strip())


@dataclass(frozen=True)
class Servers:
    """What an arm talks to besides its own process: the MariaDB primary, moto's server."""

    mariadb_pid: int
    moto_pid: int | None = None
    moto_log: Path | None = None


def measured(arm: str, kind: str, work: Path, stack: Any, servers: Servers) -> dict[str, Any]:
    """One arm in a fresh process under _measure.py: its own peak RSS from wait4, its own CPU
    seconds, and the CPU seconds the MariaDB primary and moto's server spent meanwhile."""
    moto_pid, moto_log = (servers.moto_pid, servers.moto_log) if kind == "s3" else (None, None)
    launcher = [sys.executable, "-I", "-S", str(HERE / "_measure.py")]
    bronze = work / "audit-bronze"
    argv = [sys.executable, __file__, "--child", arm, kind, str(work / "stack"), str(bronze)]
    log_at = _log_lines(moto_log)
    misses = pool_reads(stack)
    load = os.getloadavg()[0]
    server_cpu = cpu_seconds(servers.mariadb_pid), cpu_seconds(moto_pid)
    process = subprocess.run(launcher + argv, check=False, capture_output=True, text=True)
    mariadb_cpu = cpu_seconds(servers.mariadb_pid) - server_cpu[0]
    moto_cpu = cpu_seconds(moto_pid) - server_cpu[1]
    if process.returncode != 0:
        raise RuntimeError(f"arm {arm} on {kind} failed: {process.stderr[-3000:]}")
    wall = json.loads(process.stderr.strip().splitlines()[-1])
    out = json.loads(process.stdout.strip().splitlines()[-1])
    return {
        **out,
        "wall_s": wall["seconds"],
        "rss_mb": round(wall["rss"] / 1e6),
        "mariadb_cpu_s": round(mariadb_cpu, 2),
        "moto_cpu_s": round(moto_cpu, 2),
        "all_cpu_s": round(out["cpu_s"] + mariadb_cpu + moto_cpu, 2),
        "pool_reads": pool_reads(stack) - misses,
        "s3_requests": _requests(moto_log, log_at),
        "load_1min": round(load, 2),
    }


REQUEST = re.compile(r'\] "(?:\x1b\[[0-9;]*m)*([A-Z]+) /[^/ ?]+/?([^ ?]*)')
"""A request line of moto's (werkzeug's) log, colour codes and all: method and object key."""


def _log_lines(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def _requests(path: Path | None, skip: int) -> dict[str, int]:
    """The requests moto logged after line ``skip``, by method and by where they went: the
    staged objects, the lease record, the published partition, the bucket (listings)."""
    found: Counter[str] = Counter()
    if path is None:
        return {}
    with path.open("rb") as handle:
        for number, raw in enumerate(handle):
            match = REQUEST.search(raw.decode(errors="replace")) if number >= skip else None
            if match is None:
                continue
            method, key = match.groups()
            where = "bucket"
            if f"/{STAGING_DIR}/" in key:
                where = "staging"
            elif f"/{LEASE_DIR}/" in key:
                where = "lease"
            elif key:
                where = "published"
            found[f"{method} {where}"] += 1
    return dict(sorted(found.items()))


def run_rounds(
    rounds: int, stores: list[str], work: Path, stack: Any, servers: Servers
) -> list[dict[str, Any]]:
    for kind in stores:
        # Untimed: the first sync into a store pays for creating it (and moto its first
        # uploads); after this one every run replaces a published partition.
        run = measured("B", kind, work, stack, servers)
        print(f"warm-up sync into {kind}: {run['seconds']:.2f} s (not counted)", flush=True)
    results = []
    for number in range(rounds):
        # A B, then B A: a slow drift of the machine's load falls on both arms alike.
        order = ARMS if number % 2 == 0 else ARMS[::-1]
        for kind in stores:
            for arm in order:
                run = measured(arm, kind, work, stack, servers)
                assert run["rows"] == ROWS, run
                assert run["published"], run
                row = {"round": number + 1, "store": kind, "arm": arm, **run}
                row["seconds"] = round(row["seconds"], 3)
                row["wall_s"] = round(row["wall_s"], 3)
                row["cpu_s"] = round(row["cpu_s"], 2)
                results.append(row)
                print(json.dumps(row), flush=True)
    return results


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(r["store"] for r in results):
        runs = {arm: [r for r in results if r["store"] == kind and r["arm"] == arm] for arm in ARMS}
        figures: dict[str, Any] = {}
        for arm, mine in runs.items():
            seconds = statistics.median(r["seconds"] for r in mine)
            figures[arm] = {
                "seconds": round(seconds, 2),
                "seconds_all": [r["seconds"] for r in mine],
                "fastest_s": round(min(r["seconds"] for r in mine), 2),
                "wall_s": round(statistics.median(r["wall_s"] for r in mine), 2),
                **{
                    key: round(statistics.median(r[key] for r in mine), 2)
                    for key in ("cpu_s", "mariadb_cpu_s", "moto_cpu_s", "all_cpu_s")
                },
                **{
                    key: round(statistics.median(r[key] for r in mine))
                    for key in (
                        "rss_at_checks_mb",
                        "arrow_at_checks_mb",
                        "peak_before_checks_mb",
                        "peak_after_checks_mb",
                    )
                },
                "rss_median_mb": round(statistics.median(r["rss_mb"] for r in mine)),
                "parts_s": {
                    part: round(statistics.median(r["parts_s"].get(part, 0.0) for r in mine), 2)
                    for part in PARTS
                },
                "rss_mb": max(r["rss_mb"] for r in mine),
                "rows_s": round(ROWS / seconds),
                "pool_reads": round(statistics.median(r["pool_reads"] for r in mine)),
                "s3_http_requests": round(
                    statistics.median(sum(r["s3_requests"].values()) for r in mine)
                ),
                "s3_requests": mine[-1]["s3_requests"],
                "s3_calls": mine[-1]["s3_calls"],
                "lease_ops": mine[-1]["lease_ops"],
                "outcomes": mine[-1]["outcomes"],
                "mb": round(mine[-1]["bytes"] / 1e6, 1),
                "files": mine[-1]["files"],
            }
        paired = [b["seconds"] / a["seconds"] for a, b in zip(runs["A"], runs["B"], strict=True)]
        figures["ratio"] = round(figures["B"]["seconds"] / figures["A"]["seconds"], 3)
        figures["ratio_by_round"] = [round(p, 3) for p in paired]
        figures["ratio_of_rounds"] = round(statistics.median(paired), 3)
        figures["ratio_geomean"] = round(statistics.geometric_mean(paired), 3)
        figures["ratio_fastest"] = round(figures["B"]["fastest_s"] / figures["A"]["fastest_s"], 3)
        figures["ratio_cpu"] = round(figures["B"]["all_cpu_s"] / figures["A"]["all_cpu_s"], 3)
        figures["rss_ratio"] = round(figures["B"]["rss_mb"] / figures["A"]["rss_mb"], 3)
        summary[kind] = figures
    return summary


def print_table(summary: dict[str, dict[str, Any]], rounds: int) -> None:
    print(
        f"\n| store | arm | seconds, median of {rounds} | fastest s | rows/s | CPU s (process + "
        "MariaDB + moto) | of which checks s (COUNT, footers, keys) | peak RSS MB | B/A seconds "
        "| B/A CPU |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, figures in summary.items():
        for arm in ARMS:
            f = figures[arm]
            p = f["parts_s"]
            cpu = f"{f['all_cpu_s']:.2f} ({f['cpu_s']:.2f} + {f['mariadb_cpu_s']:.2f}"
            cpu += f" + {f['moto_cpu_s']:.2f})" if kind == "s3" else ")"
            ratios = "1.00 | 1.00"
            if arm == "B":
                ratios = f"**{figures['ratio']:.3f}** | {figures['ratio_cpu']:.3f}"
            print(
                f"| {STORE_LABELS[kind]} | {ARM_LABELS[arm]} | {f['seconds']:.2f} | "
                f"{f['fastest_s']:.2f} | {f['rows_s']:,} | {cpu} | {p['checks']:.2f} "
                f"({p['count']:.2f}, {p['footers']:.2f}, {p['keys']:.2f}) | {f['rss_mb']} | "
                f"{ratios} |"
            )
    print()
    for kind, figures in summary.items():
        verdict = "met" if figures["ratio"] <= 1.10 else "NOT met"
        a, b = figures["A"], figures["B"]
        by_round = ", ".join(f"{p:.3f}" for p in figures["ratio_by_round"])
        print(
            f"{STORE_LABELS[kind]}: B/A {figures['ratio']:.3f} on the medians (target <= 1.10: "
            f"{verdict}); round by round {by_round} (median {figures['ratio_of_rounds']:.3f}, "
            f"geometric mean {figures['ratio_geomean']:.3f}); "
            f"fastest runs {figures['ratio_fastest']:.3f}; CPU {figures['ratio_cpu']:.3f}; "
            f"peak RSS {figures['rss_ratio']:.3f}"
        )
        print(
            f"  seconds A {a['seconds_all']}, B {b['seconds_all']}; wall s of the process "
            f"(imports included) A {a['wall_s']:.2f}, B {b['wall_s']:.2f}; swap s A "
            f"{a['parts_s']['swap']:.2f}, B {b['parts_s']['swap']:.2f}"
        )
        print(
            "  memory (medians, MB): "
            + "; ".join(
                f"{arm} peak {f['rss_median_mb']}, {f['rss_at_checks_mb']} in use as the checks "
                f"start ({f['arrow_at_checks_mb']} of them live Arrow buffers), peak "
                f"{f['peak_before_checks_mb']} before them and "
                f"{f['peak_after_checks_mb']} after"
                for arm, f in (("A", a), ("B", b))
            )
        )
        print(
            f"  lease operations A {a['lease_ops']}, B {b['lease_ops']}; buffer-pool misses "
            f"(median) A {a['pool_reads']}, B {b['pool_reads']}"
        )
        if kind == "s3":
            print(
                f"  S3 HTTP requests (moto's log, median): A {a['s3_http_requests']}, "
                f"B {b['s3_http_requests']}; last round's by method and place: A "
                f"{a['s3_requests']}, B {b['s3_requests']}"
            )
            print(f"  of which through boto3 (by operation): A {a['s3_calls']}, B {b['s3_calls']}")


def prepare(stack: Any, buffer_pool_mb: int) -> dict[str, Any]:
    """Seed (once), wait for the backup to apply it (so it does not compete with the arms),
    size the buffer pool, then one warm-up read of the window, with the cache state around it."""
    seeded = seed(stack)
    stack.wait_replica_caught_up(timeout=900)
    grow_buffer_pool(stack, buffer_pool_mb)
    before = cache_state(stack)
    warm = warm_up(stack)
    after = cache_state(stack)
    cache_text = describe_cache(before, after, warm)
    print(cache_text, flush=True)
    return {
        "seeded": seeded,
        "cache": {**after, "before_warm_up": before, "warm_up": warm},
        "cache_text": cache_text,
    }


def measure_stores(rounds: int, stores: list[str], work: Path, stack: Any) -> list[dict[str, Any]]:
    """The rounds, with moto's server up (and the bucket made) when S3 is measured."""
    mariadb_pid = primary_pid(work)
    if "s3" not in stores:
        return run_rounds(rounds, stores, work, stack, Servers(mariadb_pid))
    from acode_dagster.bronze.store import s3_client
    from acode_dagster_tests.support.s3 import moto_server

    log_dir = work / "moto"
    log_dir.mkdir(exist_ok=True)
    with moto_server(log_dir) as server:
        s3_client().create_bucket(Bucket=BUCKET)
        assert server.process is not None
        servers = Servers(mariadb_pid, server.process.pid, server.log_path)
        return run_rounds(rounds, stores, work, stack, servers)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument(
        "--work",
        default=str(HERE / ".work"),
        help="state folder: the MariaDB pair (stack/, shared with bench/replication.py --work) "
        "and the local bronze (audit-bronze/); default bench/.work",
    )
    parser.add_argument(
        "--buffer-pool-mb",
        type=int,
        default=1536,
        help="grow the primary's InnoDB buffer pool to this for the run (not persisted) so the "
        "warm-up read caches the whole window; 0 keeps the pair's 128 MB (reads from disk)",
    )
    parser.add_argument(
        "--destroy", action="store_true", help="remove the pair at the end instead of keeping it"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from acode_dagster.localstack import LocalStack

    began = time.perf_counter()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "audit-bronze", ignore_errors=True)
    stack = LocalStack(work / "stack")
    stack.start()
    try:
        prepared = prepare(stack, args.buffer_pool_mb)
        load_start = os.getloadavg()
        results = measure_stores(args.rounds, stores, work, stack)
        load_end = os.getloadavg()
    finally:
        if args.destroy:
            stack.destroy()
        else:
            stack.stop()
    summary = summarize(results)
    verdict = cache_verdict(results)
    total_s = time.perf_counter() - began
    report = {
        "bench": "audit",
        "table": TABLE.name,
        "day": DAY.isoformat(),
        "rows": ROWS,
        "rounds": args.rounds,
        **prepared["seeded"],
        "cache": {**prepared["cache"], **verdict},
        "load_1min": {"start": round(load_start[0], 2), "end": round(load_end[0], 2)},
        "cpus": os.cpu_count(),
        "total_s": round(total_s, 1),
        "stores": summary,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "audit.json").write_text(json.dumps({**report, "runs": results}, indent=2))
    print_table(summary, args.rounds)
    print(f"\n{prepared['cache_text']}\n{verdict['verdict']}")
    print(
        f"load average (1 min) {load_start[0]:.2f} at the first round, {load_end[0]:.2f} at the "
        f"end, on {os.cpu_count()} CPUs; total {total_s / 60:.1f} min"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
