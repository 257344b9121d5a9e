"""Replication benchmark: the embedded replicator against the raw client read, side by side.

    python bench/replication.py [--sizes 1000000,2000000] [--repeat 3] [--work DIR --keep]

Seeds one day per size of fiscal lines into a private MariaDB pair, then, for each size and
repetition, runs in turn (a) the raw client read, ``mariadb --quick --batch -e "<SELECT>" >
/dev/null``, the floor no replicator can beat, and (b) the embedded replicator into a local
folder, each in its own child process so ``wait4`` reports that process's own peak RSS. Prints a
Markdown table and writes ``bench/results/replication.json``.
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
    from acode_dagster.bronze import LocalStore
    from acode_dagster.localstack import LocalStack
    from acode_dagster.replicator import EmbeddedReplicator, describe

    source = LocalStack(Path(stack_home)).endpoint("primary")
    result = EmbeddedReplicator(log=lambda _msg: None).sync(
        FISCAL_LINES, date.fromisoformat(day_text), source, LocalStore(Path(bronze))
    )
    print(json.dumps(describe(result)))


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
    args = parser.parse_args()
    if args.child_sync:
        child_sync(*args.child_sync)
        return

    from acode_dagster.demo.loader import load_days
    from acode_dagster.localstack import LocalStack
    from acode_dagster.mysql import count_rows

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work).resolve()
    stack = LocalStack(work / "stack")
    stack.start()
    try:
        days = {}
        for offset, size in enumerate(sizes):
            day = date.fromordinal(FIRST_DAY.toordinal() + offset)
            days[size] = day
            if count_rows(stack.endpoint("primary"), FISCAL_LINES, day) == size:
                continue  # seeded by an earlier run with --keep
            started = time.perf_counter()
            load_days(
                stack.endpoint("primary", admin=True),
                [day],
                rows={FISCAL_LINES.name: size, NFE_COMPLEMENTS.name: 0},
            )
            print(f"seeded {size:,} rows for {day} in {time.perf_counter() - started:.0f} s")
        results = []
        for size, day in days.items():
            yardstick = tsv_bytes(stack, day)
            for rep in range(args.repeat):
                raw_s, raw_rss = raw_read(stack, day)
                emb_s, emb_rss, summary = embedded(work / "stack", work / "bronze", day)
                assert summary["rows"] == size, summary
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
                }
                results.append(row)
                print(json.dumps(row), flush=True)
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
    sizes = sorted(emb_rss)
    if len(sizes) >= 2:
        growth = emb_rss[sizes[-1]] / emb_rss[sizes[0]] - 1
        print(
            f"\npeak RSS of the embedded replicator, {sizes[0]:,} -> {sizes[-1]:,} rows: "
            f"{growth:+.1%}"
        )


if __name__ == "__main__":
    main()
