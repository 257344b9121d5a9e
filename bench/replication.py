"""Replication benchmark: the embedded replicator and the Airbyte route against the raw read.

    python bench/replication.py [--sizes 1000000,2000000] [--repeat 3] [--work DIR --keep]

Seeds one day per size of fiscal lines into a private MariaDB pair, then, for each size and
repetition, runs in turn (a) the raw client read, ``mariadb --quick --batch -e "<SELECT>" >
/dev/null``, the floor no replicator can beat, (b) the embedded replicator into a local folder,
and (c) the Airbyte route: the real dagster-airbyte client triggers the loopback Airbyte server
(running in this process, reading the primary and landing Parquet into a staging folder, its
cursor at the day's start as in daily operation), then the replicator cuts the day out of the
landing and publishes it. (b) and (c) run in child processes so ``wait4`` reports their own peak
RSS. Prints a Markdown table and writes ``bench/results/replication.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS  # noqa: E402

FIRST_DAY = date(2026, 10, 1)


def run_child(
    argv: list[str], env: dict[str, str] | None = None, capture: bool = False
) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes, and stdout text of one command, measured by _measure.py."""
    launcher = [sys.executable, "-I", "-S", str(HERE / "_measure.py")]
    if not capture:
        launcher.append("--stdout-null")
    process = subprocess.run(launcher + argv, check=False, env=env, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {process.stderr[-2000:]}")
    measured = json.loads(process.stderr.strip().splitlines()[-1])
    return measured["seconds"], measured["rss"], process.stdout


def client_read(stack: Any, day: date) -> tuple[list[str], dict[str, str]]:
    """The raw client's command for the replicator's own SELECT, password in the environment."""
    endpoint = stack.endpoint("primary")
    argv = [
        "mariadb",
        "--quick",
        "--batch",
        "-h",
        endpoint.host,
        "-P",
        str(endpoint.port),
        "-u",
        endpoint.user,
        endpoint.database,
        "-e",
        FISCAL_LINES.select_sql(day),
    ]
    return argv, {**os.environ, "MYSQL_PWD": endpoint.password or ""}


def raw_read(stack: Any, day: date) -> tuple[float, int]:
    argv, env = client_read(stack, day)
    seconds, rss, _ = run_child(argv, env=env)
    return seconds, rss


def tsv_bytes(stack: Any, day: date) -> int:
    """Size of the result as the client prints it: the common yardstick for MB/s."""
    argv, env = client_read(stack, day)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env) as process:
        assert process.stdout is not None
        total = 0
        while chunk := process.stdout.read(1 << 20):
            total += len(chunk)
    return total


def embedded(stack_home: Path, bronze: Path, day: date) -> tuple[float, int, dict[str, Any]]:
    argv = [sys.executable, __file__, "--child-sync", str(stack_home), str(bronze), day.isoformat()]
    seconds, rss, out = run_child(argv, capture=True)
    return seconds, rss, json.loads(out.strip().splitlines()[-1])


def child_sync(stack_home: str, bronze: str, day_text: str) -> None:
    from acode_dagster.bronze.store import LocalStore
    from acode_dagster.localstack import LocalStack
    from acode_dagster.replicator import EmbeddedReplicator, describe

    source = LocalStack(Path(stack_home)).endpoint("primary")
    result = EmbeddedReplicator(log=lambda _msg: None).sync(
        FISCAL_LINES, date.fromisoformat(day_text), source, LocalStore(Path(bronze))
    )
    print(json.dumps(describe(result)))


def airbyte_route(
    server: Any, work: Path, bronze: Path, day: date
) -> tuple[float, int, dict[str, Any]]:
    """The Airbyte path in a child process; the loopback server runs in this one."""
    import shutil
    from datetime import datetime

    staging = work / "airbyte-staging"
    shutil.rmtree(staging, ignore_errors=True)
    # Daily operation: the connection's cursor sits at the start of the day being synced.
    server.set_cursor(server.primary_id, FISCAL_LINES, datetime(day.year, day.month, day.day))
    env = {**os.environ, **server.environ(), "ACODE_AIRBYTE_STAGING_URL": str(staging)}
    argv = [
        sys.executable,
        __file__,
        "--child-airbyte",
        str(work / "stack"),
        str(bronze),
        day.isoformat(),
    ]
    seconds, rss, out = run_child(argv, env=env, capture=True)
    return seconds, rss, json.loads(out.strip().splitlines()[-1])


def child_airbyte(stack_home: str, bronze: str, day_text: str) -> None:
    from dagster_airbyte import AirbyteWorkspace

    from acode_dagster.airbyte import AirbyteConnections, AirbyteReplicator
    from acode_dagster.bronze.store import LocalStore
    from acode_dagster.landing import Landing
    from acode_dagster.localstack import LocalStack
    from acode_dagster.replicator import describe

    env = os.environ
    workspace = AirbyteWorkspace(
        rest_api_base_url=env["AIRBYTE_REST_API_BASE_URL"],
        configuration_api_base_url=env["AIRBYTE_CONFIGURATION_API_BASE_URL"],
        workspace_id=env["AIRBYTE_WORKSPACE_ID"],
        client_id=env["AIRBYTE_CLIENT_ID"],
        client_secret=env["AIRBYTE_CLIENT_SECRET"],
    )
    connections = AirbyteConnections(
        workspace,
        {
            "primary": env["ACODE_AIRBYTE_PRIMARY_CONNECTION_ID"],
            "backup": env["ACODE_AIRBYTE_BACKUP_CONNECTION_ID"],
        },
    )
    result = AirbyteReplicator(
        connections=connections,
        role="primary",
        landing=Landing(env["ACODE_AIRBYTE_STAGING_URL"]),
        poll_s=0.2,
        log=lambda _msg: None,
    ).sync(
        FISCAL_LINES,
        date.fromisoformat(day_text),
        LocalStack(Path(stack_home)).endpoint("primary"),
        LocalStore(Path(bronze)),
    )
    print(json.dumps({**describe(result), **result.extra}))


def seed(stack: Any, sizes: list[int]) -> dict[int, date]:
    """One day of fiscal lines per size, loaded unless an earlier run (--keep) left it there."""
    from acode_dagster.demo.loader import load_days
    from acode_dagster.mysql import count_rows

    days = {}
    for offset, size in enumerate(sizes):
        day = date.fromordinal(FIRST_DAY.toordinal() + offset)
        days[size] = day
        if count_rows(stack.endpoint("primary"), FISCAL_LINES, day) == size:
            continue
        started = time.perf_counter()
        load_days(
            stack.endpoint("primary", admin=True),
            [day],
            rows={FISCAL_LINES.name: size, NFE_COMPLEMENTS.name: 0},
        )
        print(f"seeded {size:,} rows for {day} in {time.perf_counter() - started:.0f} s")
    return days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,2000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--work",
        default=tempfile.mkdtemp(prefix="acode-bench-"),
        help="state folder (MariaDB pair, bronze); default a new temporary one",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the seeded pair in --work for the next run (stopped)",
    )
    parser.add_argument("--child-sync", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-airbyte", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_sync:
        child_sync(*args.child_sync)
        return
    if args.child_airbyte:
        child_airbyte(*args.child_airbyte)
        return

    from acode_dagster.localstack import LocalStack
    from acode_dagster_tests.support.airbyte import LoopbackAirbyte

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work).resolve()
    stack = LocalStack(work / "stack")
    stack.start()
    try:
        days = seed(stack, sizes)
        results = []
        # The staging folder each run lands into is set per run (ACODE_AIRBYTE_STAGING_URL).
        server = LoopbackAirbyte.for_pair(
            stack.endpoint("primary"), stack.endpoint("backup"), work / "airbyte-staging"
        )
        server.start()
        for size, day in days.items():
            yardstick = tsv_bytes(stack, day)
            for rep in range(args.repeat):
                raw_s, raw_rss = raw_read(stack, day)
                emb_s, emb_rss, summary = embedded(work / "stack", work / "bronze", day)
                assert summary["rows"] == size, summary
                ab_s, ab_rss, ab = airbyte_route(server, work, work / "bronze-airbyte", day)
                assert ab["rows"] == size, ab
                row = {
                    "rows": size,
                    "rep": rep + 1,
                    "mb": round(yardstick / 1e6, 1),
                    "raw_s": round(raw_s, 2),
                    "raw_rows_s": round(size / raw_s),
                    "raw_rss_mb": round(raw_rss / 1e6),
                    "emb_s": round(emb_s, 2),
                    "emb_rows_s": round(size / emb_s),
                    "emb_rss_mb": round(emb_rss / 1e6),
                    "emb_mb_s": round(yardstick / 1e6 / emb_s, 1),
                    "raw_mb_s": round(yardstick / 1e6 / raw_s, 1),
                    "ratio": round(raw_s / emb_s, 3),
                    "parquet_mb": round(summary["bytes"] / 1e6, 1),
                    "emb_sync_s": summary["seconds"],
                    "ab_wall_s": round(ab_s, 2),
                    "ab_s": ab["seconds"],
                    "ab_job_s": ab["airbyte_job_seconds"],
                    "ab_publish_s": ab["publish_seconds"],
                    "ab_rss_mb": round(ab_rss / 1e6),
                    "ab_records": ab["airbyte_records"],
                }
                results.append(row)
                print(json.dumps(row), flush=True)
        server.stop()
    finally:
        if args.keep:
            stack.stop()
        else:
            stack.destroy()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "replication.json").write_text(json.dumps(results, indent=2))
    print_table(results)


def print_table(results: list[dict[str, Any]]) -> None:
    """Median seconds of each path per size (the reps ran interleaved), and the worst peak RSS."""
    print("\n| rows | path | seconds | rows/s | MB/s | peak RSS MB | rows/s vs raw |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    emb_rss: dict[int, int] = {}
    for size in sorted({r["rows"] for r in results}):
        runs = [r for r in results if r["rows"] == size]
        mb = runs[0]["mb"]
        raw_s = statistics.median(r["raw_s"] for r in runs)
        emb_s = statistics.median(r["emb_s"] for r in runs)
        raw_rss = max(r["raw_rss_mb"] for r in runs)
        emb_rss[size] = max(r["emb_rss_mb"] for r in runs)
        print(
            f"| {size:,} | raw client read (`mariadb --quick --batch`) | {raw_s:.2f} | "
            f"{size / raw_s:,.0f} | {mb / raw_s:.1f} | {raw_rss} | 1.00 |"
        )
        print(
            f"| {size:,} | embedded replicator -> local Parquet | {emb_s:.2f} | "
            f"{size / emb_s:,.0f} | {mb / emb_s:.1f} | {emb_rss[size]} | {raw_s / emb_s:.2f} |"
        )
        ab_s = statistics.median(r["ab_s"] for r in runs)
        emb_sync_s = statistics.median(r["emb_sync_s"] for r in runs)
        job_s = statistics.median(r["ab_job_s"] for r in runs)
        publish_s = statistics.median(r["ab_publish_s"] for r in runs)
        ab_rss = max(r["ab_rss_mb"] for r in runs)
        print(
            f"| {size:,} | Airbyte route: job + cut and publish (in process) | {ab_s:.2f} | "
            f"{size / ab_s:,.0f} | {mb / ab_s:.1f} | {ab_rss} | {raw_s / ab_s:.2f} |"
        )
        print(
            f"| {size:,} | of which the loopback Airbyte job | {job_s:.2f} | "
            f"{size / job_s:,.0f} | {mb / job_s:.1f} | (server) | |"
        )
        print(
            f"| {size:,} | of which cut and publish from staging | {publish_s:.2f} | "
            f"{size / publish_s:,.0f} | {mb / publish_s:.1f} | {ab_rss} | "
            f"{publish_s / emb_sync_s:.2f} of embedded's {emb_sync_s:.2f} s in process |"
        )
    sizes = sorted(emb_rss)
    if len(sizes) >= 2:
        growth = emb_rss[sizes[-1]] / emb_rss[sizes[0]] - 1
        print(
            f"\npeak RSS of the embedded replicator, {sizes[0]:,} -> {sizes[-1]:,} rows: "
            f"{growth:+.1%}"
        )


if __name__ == "__main__":
    main()
