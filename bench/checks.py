"""Checks benchmark: the footer-based bronze checks against a full scan giving the same answers.

    python bench/checks.py [--sizes 100000,1000000,5000000] [--repeat 7] [--footer-repeat 101]
                           [--work bench/.work/checks]

Publishes one partition per size of the fiscal lines (``farmarcas_si_analitico_diario``) into a
local bronze folder under ``--work``, exactly as the replicator lays them out (Snappy Parquet,
its row-group and file-size defaults, ``_SUCCESS`` manifest), from Arrow batches built with
Arrow compute kernels: 5M rows in seconds, where the demo generator's Python tuples would take
minutes. The partitions are kept and reused by the next run when their manifest matches.

Then, for each size, three paths run in turn, each in its own child process so ``wait4`` reports
that process's own peak RSS (see ``_measure.py``), each doing one warm-up and then ``--repeat``
timed repetitions (``--footer-repeat`` for the footer checks) of:

- **footer checks**: ``PartitionStats.from_footers(store.footers(...))``, then ``null_share``,
  ``volume`` and the bronze half of ``schema``, the checks that read no data;
- **unique_key**: the key column read, then ``unique_key``;
- **full scan**: the whole partition read, and the same answers computed from it (rows, NULLs
  per critical column, schema, distinct keys).

Every path's answers are compared with the others' before the table is printed. Prints a
Markdown table and writes ``bench/results/checks.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from acode_dagster.bronze.publish import publish_batches  # noqa: E402
from acode_dagster.bronze.store import LocalStore, Manifest  # noqa: E402
from acode_dagster.replicator import EmbeddedReplicator  # noqa: E402
from acode_dagster.tables import FISCAL_LINES  # noqa: E402

TABLE = FISCAL_LINES
FIRST_DAY = date(2026, 9, 1)
GENERATOR = "bench-checks-v1"
"""Written into the manifest with the row-group size; a partition made otherwise is rebuilt."""
BATCH_ROWS = EmbeddedReplicator.row_group_rows
NULL_SHARE = {"CNPJ": 0.004, "EAN": 0.012}
"""Some NULLs in the critical columns (under the 5 % error, over the 1 % warning for EAN), so
both paths count something."""
PATHS = ("footer", "unique", "scan")
PATH_LABELS = {
    "footer": "footer checks (null_share + volume + schema, footers only)",
    "unique": "unique_key (key column read)",
    "scan": "full scan, same answers (whole partition read)",
}

# --------------------------------------------------------------------------- data


class FiscalBatches:
    """Fiscal lines of one day as record batches of the table's exact schema.

    Built with Arrow compute kernels only (numpy is not a dependency of the project): random
    doubles from ``pc.random``, scaled and cast. Pools stand in for the pharmacies and the
    catalogue so that strings repeat as they do in production (and compress like them); invoice
    keys, ids and timestamps are unique per line or per invoice, as in the source.
    """

    def __init__(self, day: date, total_rows: int, seed: int = 42):
        self.day = day
        # Processing times spread over the day in line order, as an index range scan reads them.
        self.step_us = max(86_400_000_000 // max(total_rows, 1), 1)
        self.seed = seed
        self.draws = 0
        self.cnpj = self.digits(600, 14)
        self.pharmacy = pa.array(
            [f"DROGARIA {i:03d} COMERCIO DE MEDICAMENTOS LTDA" for i in range(600)]
        )
        self.uf = pa.array([("SP", "MG", "RJ", "PR", "RS", "BA", "GO")[i % 7] for i in range(600)])
        self.ean = self.digits(2000, 13)
        self.product = pa.array(
            [f"PRODUTO {i:04d} 500MG COM REV CT BL AL X 30" for i in range(2000)]
        )
        self.ncm = self.digits(2000, 8)
        self.cfop = pa.array(["5102", "5405", "6102", "5929"])
        self.cst = pa.array(["000", "060", "020", "040"])
        # Naive local wall-clock, as the source stores it: microseconds since 1970-01-01 00:00.
        self.epoch_days = (day - date(1970, 1, 1)).days
        self.next_id = day.toordinal() * 1_000_000_000

    def uniform(self, rows: int) -> pa.Array:
        # Each draw its own initializer: deterministic for a seed, independent between columns.
        self.draws += 1
        return pc.random(rows, initializer=self.seed * 1_000_003 + self.draws)

    def integers(self, rows: int, low: int, high: int) -> pa.Array:
        """Uniform int64 in [low, high)."""
        scaled = pc.floor(pc.multiply(self.uniform(rows), float(high - low)))
        return pc.add(pc.cast(scaled, pa.int64()), low)

    def digits(self, rows: int, width: int) -> pa.Array:
        """``rows`` strings of ``width`` random digits, as one Arrow buffer (no Python str)."""
        data = pc.cast(pc.add(self.integers(rows * width, 0, 10), ord("0")), pa.uint8())
        offsets = pa.array(range(0, (rows + 1) * width, width), pa.int32())
        return pa.Array.from_buffers(
            pa.string(), rows, [None, offsets.buffers()[1], data.buffers()[1]]
        )

    def nulls(self, indices: pa.Array, share: float) -> pa.Array:
        """``indices`` with about ``share`` of them NULL, so a ``take`` through them gives NULL."""
        return pc.if_else(
            pc.less(self.uniform(len(indices)), share), pa.scalar(None, pa.int64()), indices
        )

    def batch(self, rows: int) -> pa.RecordBatch:
        line = pa.array(range(rows), pa.int64())
        invoice = pc.divide(line, 3)  # integer division: three lines an invoice
        invoices = -(-rows // 3)
        # Pharmacy, number and key belong to the invoice; product and amounts to the line.
        pharmacy = self.integers(invoices, 0, 600).take(invoice)
        number = pc.cast(self.integers(invoices, 1, 999_999), pa.uint32()).take(invoice)
        product = self.integers(rows, 0, 2000)
        quantity = self.integers(rows, 1, 12)
        unit_cents = self.integers(rows, 199, 40_000)
        gross = pc.multiply(quantity, unit_cents)
        discount = pc.divide(pc.multiply(gross, self.integers(rows, 0, 15)), 100)
        net = pc.subtract(gross, discount)
        icms = pc.divide(pc.multiply(net, 18), 100)
        day_ids = self.day.toordinal() * 1_000_000_000
        ids = pa.array(range(self.next_id, self.next_id + rows), pa.uint64())
        first_line = self.next_id - day_ids
        micros = pc.add(
            pc.multiply(pc.add(line, first_line), self.step_us),
            pc.add(self.integers(rows, 0, self.step_us), self.epoch_days * 86_400_000_000),
        )
        fiscal_date = pc.subtract(self.epoch_days, self.integers(rows, 0, 2))
        arrays = [
            ids,
            pc.cast(pc.cast(fiscal_date, pa.int32()), pa.date32()),
            pc.cast(micros, pa.timestamp("us")),
            self.cnpj.take(self.nulls(pharmacy, NULL_SHARE["CNPJ"])),
            self.pharmacy.take(pharmacy),
            self.uf.take(pharmacy),
            self.digits(invoices, 44).take(invoice),
            number,
            pc.cast(self.integers(rows, 1, 4), pa.uint16()),
            pc.cast(pc.add(pc.subtract(line, pc.multiply(invoice, 3)), 1), pa.uint16()),
            self.ean.take(self.nulls(product, NULL_SHARE["EAN"])),
            self.product.take(product),
            self.cfop.take(self.integers(rows, 0, 4)),
            self.ncm.take(product),
            self.cst.take(self.integers(rows, 0, 4)),
            _decimal(pc.multiply(quantity, 10_000), 4),
            _decimal(pc.multiply(unit_cents, 100), 4),
            _decimal(gross, 2),
            _decimal(discount, 2),
            _decimal(icms, 2),
            _decimal(net, 2),
        ]
        self.next_id += rows
        return pa.RecordBatch.from_arrays(arrays, schema=TABLE.arrow_schema)


def _decimal(unscaled: pa.Array, scale: int) -> pa.Array:
    """DECIMAL(15, scale) holding ``unscaled`` x 10^-scale.

    Casting int64 to decimal(19, 0) stores the integer itself as the unscaled value; the same
    16-byte words read with scale ``scale`` are the wanted decimals, with no float in between.
    """
    words = pc.cast(unscaled, pa.decimal128(19, 0))
    return pa.Array.from_buffers(pa.decimal128(15, scale), len(words), words.buffers())


def ensure_partition(store: LocalStore, day: date, rows: int, row_group_rows: int) -> Manifest:
    """The published partition of ``rows`` lines on ``day``, written unless already there."""
    made_by = f"{GENERATOR} row_group_rows={row_group_rows}"
    manifest = store.manifest(TABLE, day)
    if manifest is not None and manifest.rows == rows and manifest.replicator == made_by:
        return manifest
    started = time.perf_counter()
    source = FiscalBatches(day, rows)
    # Batch by batch: memory stays at a batch and a row group whatever the size. The writer
    # flushes whole batches, so a batch is never larger than the row group wanted.
    batch_rows = min(BATCH_ROWS, row_group_rows)
    manifest = publish_batches(
        TABLE,
        day,
        store,
        (source.batch(min(batch_rows, rows - start)) for start in range(0, rows, batch_rows)),
        source="bench/checks.py (generated)",
        replicator=made_by,
        row_group_rows=row_group_rows,
        max_file_bytes=EmbeddedReplicator.max_file_bytes,
    )
    print(
        f"wrote {rows:,} rows for {day} in {time.perf_counter() - started:.1f} s "
        f"({manifest.bytes / 1e6:.1f} MB, {len(manifest.files)} file(s))",
        flush=True,
    )
    return manifest


# --------------------------------------------------------------------------- the paths


def footer_path(store: LocalStore, day: date) -> dict[str, Any]:
    from acode_dagster.quality import PartitionStats, null_share, schema, volume

    stats = PartitionStats.from_footers(store.footers(TABLE, day), TABLE.critical_columns)
    nulls = null_share(TABLE, stats)
    # A steady history: the volume check does its full work (median, ratio), not the short cut.
    counted = volume(TABLE, stats.rows, [stats.rows] * TABLE.thresholds.volume_window)
    described = schema(TABLE, stats.schemas, None)
    return {
        "rows": stats.rows,
        "nulls": {c: stats.null_counts[c] for c in TABLE.critical_columns},
        "schema_ok": described.passed,
        "outcomes": [nulls.outcome, counted.outcome, described.outcome],
        "row_groups": stats.row_groups,
        "files": stats.files,
    }


def unique_path(store: LocalStore, day: date) -> dict[str, Any]:
    from acode_dagster.quality import unique_key

    keys = store.read_partition(TABLE, day, columns=[TABLE.key]).column(TABLE.key)
    verdict = unique_key(TABLE, keys)
    return {"distinct": verdict.metadata["distinct"], "outcome": verdict.outcome}


def scan_path(store: LocalStore, day: date) -> dict[str, Any]:
    data = store.read_partition(TABLE, day)
    return {
        "rows": data.num_rows,
        "nulls": {c: data.column(c).null_count for c in TABLE.critical_columns},
        "schema_ok": data.schema.equals(TABLE.arrow_schema, check_metadata=False),
        "distinct": pc.count_distinct(data.column(TABLE.key)).as_py(),
    }


def child(path: str, work: str, day_text: str, repeat: int) -> None:
    """One path, one warm-up then ``repeat`` timed runs; prints seconds and the last answer."""
    # Imported here for every path, "idle" included, so the baseline carries the same modules.
    import acode_dagster.quality  # noqa: F401

    store = LocalStore(Path(work))
    day = date.fromisoformat(day_text)
    run = {"footer": footer_path, "unique": unique_path, "scan": scan_path, "idle": None}[path]
    seconds: list[float] = []
    answer: dict[str, Any] = {}
    if run is not None:
        answer = run(store, day)
        for number in range(repeat):
            # Parsed footers sit in reference cycles that only the collector frees: collected
            # every tenth run, untimed, so the peak RSS is that of a few runs, not of a hundred.
            # Not before every run: a full collection leaves the CPU caches cold, which adds
            # more than the footer checks themselves cost, and the median skips the odd run.
            if number % 10 == 0:
                gc.collect()
            started = time.perf_counter()
            answer = run(store, day)
            seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "answer": answer}))


def measured(
    path: str, work: Path, day: date, repeat: int
) -> tuple[list[float], int, dict[str, Any]]:
    """Timings, the child's own peak RSS in bytes, and its answer."""
    launcher = [sys.executable, "-I", "-S", str(HERE / "_measure.py")]
    argv = [sys.executable, __file__, "--child", path, str(work), day.isoformat(), str(repeat)]
    process = subprocess.run(launcher + argv, check=False, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"{path} failed: {process.stderr[-2000:]}")
    rss = json.loads(process.stderr.strip().splitlines()[-1])["rss"]
    out = json.loads(process.stdout.strip().splitlines()[-1])
    return out["seconds"], rss, out["answer"]


def agree(size: int, answers: dict[str, dict[str, Any]]) -> None:
    """The footer answers must be the scan's, or the speed means nothing."""
    footer, unique, scan = answers["footer"], answers["unique"], answers["scan"]
    assert footer["rows"] == scan["rows"] == size, (size, footer, scan)
    assert footer["nulls"] == scan["nulls"], (footer, scan)
    assert footer["schema_ok"] and scan["schema_ok"], (footer, scan)
    assert unique["distinct"] == scan["distinct"] == size, (unique, scan)


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of each path")
    parser.add_argument(
        "--footer-repeat",
        type=int,
        default=101,
        help="timed runs of the footer checks (a millisecond each: more runs, a steadier median)",
    )
    parser.add_argument(
        "--work",
        default=str(HERE / ".work" / "checks"),
        help="bronze folder for the partitions (kept and reused); default bench/.work/checks",
    )
    parser.add_argument(
        "--row-group-rows",
        type=int,
        default=EmbeddedReplicator.row_group_rows,
        help="rows per Parquet row group (default: the replicator's); smaller gives the footer "
        "of a larger partition without its data",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, work, day_text, repeat = args.child
        child(path, work, day_text, int(repeat))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work).resolve()
    store = LocalStore(work)
    days: dict[int, date] = {}
    layout: dict[int, dict[str, Any]] = {}
    for offset, size in enumerate(sizes):
        days[size] = date.fromordinal(FIRST_DAY.toordinal() + offset)
        manifest = ensure_partition(store, days[size], size, args.row_group_rows)
        layout[size] = {
            "files": len(manifest.files),
            "row_groups": sum(f.num_row_groups for f in store.footers(TABLE, days[size])),
            "mb": round(manifest.bytes / 1e6, 1),
        }

    _, idle_rss, _ = measured("idle", work, days[sizes[0]], 0)
    results: list[dict[str, Any]] = []
    for size, day in days.items():
        answers = {}
        for path in PATHS:
            repeat = args.footer_repeat if path == "footer" else args.repeat
            seconds, rss, answer = measured(path, work, day, repeat)
            answers[path] = answer
            row = {
                "rows": size,
                "path": path,
                "median_ms": round(statistics.median(seconds) * 1000, 3),
                "min_ms": round(min(seconds) * 1000, 3),
                "max_ms": round(max(seconds) * 1000, 3),
                "rss_mb": round(rss / 1e6),
                "repeat": len(seconds),
                **layout[size],
            }
            results.append(row)
            print(json.dumps(row), flush=True)
        agree(size, answers)
    (HERE / "results").mkdir(exist_ok=True)
    name = "checks.json"
    if args.row_group_rows != EmbeddedReplicator.row_group_rows:
        name = f"checks-row-groups-of-{args.row_group_rows}.json"
    (HERE / "results" / name).write_text(
        json.dumps({"idle_rss_mb": round(idle_rss / 1e6), "runs": results}, indent=2)
    )
    print_table(results, layout, round(idle_rss / 1e6))
    # Linux reports kilobytes. This process wrote the partitions, batch by batch.
    writer_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    print(f"Peak RSS of this process (generating and writing the partitions): {writer_mb:,.0f} MB.")


def print_table(
    results: list[dict[str, Any]], layout: dict[int, dict[str, Any]], idle_rss_mb: int
) -> None:
    median = {(r["rows"], r["path"]): r["median_ms"] for r in results}
    print(
        "\n| rows | Parquet MB, files, row groups | path | median ms | min ms | peak RSS MB "
        "| vs footer checks |"
    )
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        where = layout[r["rows"]]
        parquet = f"{where['mb']:,.1f}, {where['files']}, {where['row_groups']}"
        ratio = r["median_ms"] / median[(r["rows"], "footer")]
        print(
            f"| {r['rows']:,} | {parquet} | {PATH_LABELS[r['path']]} | {r['median_ms']:,.2f} | "
            f"{r['min_ms']:,.2f} | {r['rss_mb']:,} | {ratio:,.1f}x |"
        )
    print(f"\nInterpreter with the imports alone (baseline peak RSS): {idle_rss_mb} MB.")
    sizes = sorted(layout)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        flat = median[(large, "footer")] / median[(small, "footer")]
        scan = median[(large, "scan")] / median[(large, "footer")]
        print(f"footer checks, {large:,} / {small:,} rows: {flat:.2f}x (target < 1.5)")
        print(f"full scan / footer checks at {large:,} rows: {scan:,.0f}x (target >= 100)")


if __name__ == "__main__":
    main()
