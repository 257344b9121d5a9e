"""Business-metrics benchmark: what tallying the figures costs a sync, and that the tally alone
keeps its memory flat over a production-size day.

    python bench/business.py [--rows 2000000] [--repeat 3] [--stream-rows 50000000]
                             [--work DIR --keep] [--skip-sync] [--skip-stream]

(a) **A sync with and without the tally.** Seeds one day of ``--rows`` fiscal lines into a
private MariaDB pair (kept in ``--work`` with ``--keep``), reads the window once with the raw
client so InnoDB's buffer pool holds it for every measured run (the runs then compare the
replicator, not the disk), then runs the embedded replicator ``--repeat`` times each way,
interleaved, each in a child process so ``wait4`` gives its own peak RSS. "Without" replaces the
tally in :mod:`acode_dagster.bronze.publish` by one that does nothing.

(b) **The tally alone** over a synthetic stream of ``--stream-rows`` rows in the fiscal table's
schema (65,536-row batches, as a sync feeds it): 5,000 pharmacies, 100,000 EANs, 27 UFs and a
few NULLs, each batch built once up front from a small pool so the figure is the tally's own.
The child records its RSS every 5M rows: flat means bounded. A second pass counts distinct
values of a column where every row is new (50M distinct keys), so the count goes to disk.

Prints Markdown tables and writes ``bench/results/business.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from replication import raw_read, run_child, seed  # noqa: E402

from acode_dagster.tables import FISCAL_LINES, BusinessSpec  # noqa: E402

BATCH = 65_536


# --------------------------------------------------------------------------- (a) sync


def sync(stack_home: Path, bronze: Path, day: date, tally: bool) -> tuple[float, int, Any]:
    argv = [
        sys.executable,
        __file__,
        "--child-sync",
        str(stack_home),
        str(bronze),
        day.isoformat(),
        "with" if tally else "without",
    ]
    seconds, rss, out = run_child(argv, capture=True)
    return seconds, rss, json.loads(out.strip().splitlines()[-1])


def child_sync(stack_home: str, bronze: str, day_text: str, mode: str) -> None:
    from acode_dagster.bronze import publish
    from acode_dagster.bronze.store import LocalStore
    from acode_dagster.localstack import LocalStack
    from acode_dagster.observability.business import BusinessTally
    from acode_dagster.replicator import EmbeddedReplicator, describe

    if mode == "without":

        class NoTally(BusinessTally):
            def feed(self, batch: Any) -> None:
                self.rows += batch.num_rows

        publish.BusinessTally = NoTally  # type: ignore[misc]
    source = LocalStack(Path(stack_home)).endpoint("primary")
    result = EmbeddedReplicator(log=lambda _msg: None).sync(
        FISCAL_LINES, date.fromisoformat(day_text), source, LocalStore(Path(bronze))
    )
    business = result.business.as_json() if result.business else {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU of every thread of the process (the reader's too): steadier than wall seconds on a
    # machine others share.
    cpu = round(usage.ru_utime + usage.ru_stime, 2)
    print(json.dumps({**describe(result), "cpu_s": cpu, "business": business}))


# --------------------------------------------------------------------------- (b) stream


def synthetic_batches(count: int, all_distinct: bool) -> Iterator[Any]:
    """``count`` rows of fiscal lines' schema, business columns realistic, the rest NULL."""
    import random

    import pyarrow as pa
    import pyarrow.compute as pc

    schema = FISCAL_LINES.arrow_schema
    chance = random.Random(7)
    ufs = [
        "SP",
        "RJ",
        "MG",
        "BA",
        "PR",
        "RS",
        "PE",
        "CE",
        "PA",
        "SC",
        "GO",
        "MA",
        "AM",
        "ES",
        "PB",
        "RN",
        "MT",
        "AL",
        "PI",
        "DF",
        "MS",
        "SE",
        "RO",
        "TO",
        "AC",
        "AP",
        "RR",
    ]
    pool = []
    for _ in range(16):
        values = pa.array(
            [Decimal(chance.randint(-(10**6), 10**9)).scaleb(-2) for _ in range(BATCH)],
            pa.decimal128(15, 2),
        )
        pool.append(
            {
                "CNPJ": pa.array([f"{chance.randrange(5_000):014d}" for _ in range(BATCH)]),
                "EAN": pa.array([f"789{chance.randrange(100_000):010d}" for _ in range(BATCH)]),
                "UF": pa.array([chance.choice(ufs) for _ in range(BATCH - 100)] + [None] * 100),
                "ACODE_Val_Total": values,
                "Val_Prod": values,
            }
        )
    nulls = {f.name: pa.nulls(BATCH, f.type) for f in schema}
    step = pa.array(range(BATCH), pa.int64())
    done = 0
    while done < count:
        rows = min(BATCH, count - done)
        columns = {**nulls, **pool[(done // BATCH) % len(pool)]}
        if all_distinct:
            # Every row a new value: as many distinct keys as rows, 16 characters each.
            numbers = pc.cast(pc.add(step, done), pa.string())
            columns["EAN"] = pc.utf8_lpad(numbers, 16, "0")
        batch = pa.record_batch([columns[f.name] for f in schema], schema=schema)
        yield batch.slice(0, rows) if rows < BATCH else batch
        done += rows


def rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def child_stream(rows_text: str, mode: str) -> None:
    from acode_dagster.observability.business import BusinessTally

    rows = int(rows_text)
    spec = (
        FISCAL_LINES.business
        if mode == "fiscal"
        else BusinessSpec(distinct=("EAN",))  # every row distinct: the disk path
    )
    samples = []
    fed = 0
    with tempfile.TemporaryDirectory(prefix="acode-business-") as spill:
        tally = BusinessTally(spec, FISCAL_LINES.arrow_schema, directory=Path(spill))
        generating = feeding = 0.0
        cpu = 0.0
        clock = time.perf_counter()
        for batch in synthetic_batches(rows, all_distinct=mode == "distinct"):
            now, cpu_now = time.perf_counter(), time.process_time()
            generating += now - clock
            tally.feed(batch)
            clock = time.perf_counter()
            feeding += clock - now
            cpu += time.process_time() - cpu_now
            fed += batch.num_rows
            if fed % (76 * BATCH) < BATCH:  # about every 5M rows
                samples.append((fed, round(rss_now() / 1e6)))
        started, cpu_now = time.perf_counter(), time.process_time()
        figures = tally.result()
        finishing = time.perf_counter() - started
        cpu += time.process_time() - cpu_now
        tally.close()
    samples.append((fed, round(rss_now() / 1e6)))
    print(
        json.dumps(
            {
                "mode": mode,
                "rows": fed,
                "feed_s": round(feeding, 2),
                "cpu_s": round(cpu, 2),
                "result_s": round(finishing, 2),
                "generate_s": round(generating, 2),
                "rss_samples_mb": samples,
                "spilled": list(figures.spilled),
                "distinct": dict(figures.distinct),
            }
        )
    )


def stream(rows: int, mode: str) -> dict[str, Any]:
    seconds, rss, out = run_child(
        [sys.executable, __file__, "--child-stream", str(rows), mode], capture=True
    )
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {**found, "wall_s": round(seconds, 1), "peak_rss_mb": round(rss / 1e6)}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stream-rows", type=int, default=50_000_000)
    parser.add_argument("--work", default=tempfile.mkdtemp(prefix="acode-bench-"))
    parser.add_argument("--keep", action="store_true", help="keep the seeded pair in --work")
    parser.add_argument("--skip-sync", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--child-sync", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-stream", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_sync:
        child_sync(*args.child_sync)
        return
    if args.child_stream:
        child_stream(*args.child_stream)
        return

    results: dict[str, Any] = {"when": datetime.now().isoformat(timespec="seconds")}
    if not args.skip_sync:
        results["sync"] = bench_sync(Path(args.work).resolve(), args.rows, args.repeat, args.keep)
    if not args.skip_stream:
        results["stream"] = [
            stream(args.stream_rows, "fiscal"),
            stream(args.stream_rows, "distinct"),
        ]
        print_stream(results["stream"])
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "business.json").write_text(json.dumps(results, indent=2))


def bench_sync(work: Path, rows: int, repeat: int, keep: bool) -> list[dict[str, Any]]:
    from acode_dagster.localstack import LocalStack

    stack = LocalStack(work / "stack")
    stack.start()
    runs = []
    try:
        day = seed(stack, [rows])[rows]
        raw_s, _ = raw_read(stack, day)  # warms the buffer pool: every run reads from memory
        print(f"raw read (warm-up) {raw_s:.1f} s", flush=True)
        for rep in range(repeat):
            for tally in (False, True):
                seconds, rss, summary = sync(work / "stack", work / "bronze", day, tally)
                assert summary["rows"] == rows, summary
                run = {
                    "tally": tally,
                    "rep": rep + 1,
                    "wall_s": round(seconds, 2),
                    "sync_s": summary["seconds"],
                    "rows_s": round(rows / summary["seconds"]),
                    "cpu_s": summary["cpu_s"],
                    "rss_mb": round(rss / 1e6),
                    "business": summary["business"] if tally else None,
                }
                runs.append(run)
                print(json.dumps(run), flush=True)
    finally:
        if keep:
            stack.stop()
        else:
            stack.destroy()
    print(
        "\n| tally | sync seconds (median) | rows/s | process CPU s (median) | peak RSS MB (max) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for tally in (False, True):
        mine = [r for r in runs if r["tally"] is tally]
        median = statistics.median(r["sync_s"] for r in mine)
        cpu = statistics.median(r["cpu_s"] for r in mine)
        print(
            f"| {'with' if tally else 'without'} | {median:.2f} | {rows / median:,.0f} | "
            f"{cpu:.2f} | {max(r['rss_mb'] for r in mine)} |"
        )
    return runs


def print_stream(found: list[dict[str, Any]]) -> None:
    print(
        "\n| stream | rows | tally s (wall) | tally CPU s | rows/s (CPU) | result s | "
        "peak RSS MB | RSS every ~5M rows |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for run in found:
        samples = ", ".join(str(mb) for _, mb in run["rss_samples_mb"])
        print(
            f"| {run['mode']} | {run['rows']:,} | {run['feed_s']} | {run['cpu_s']} | "
            f"{run['rows'] / run['cpu_s']:,.0f} | {run['result_s']} | {run['peak_rss_mb']} | "
            f"{samples} |"
        )


if __name__ == "__main__":
    main()
