"""Key benchmark: the bounded key check and landing cut against the versions they replaced.

    python bench/keys.py [--sizes 2000000,10000000,50000000] [--work bench/.work/keys]
                         [--old-cut-max 10000000] [--memory-rows N]

Generates, once per size (kept under ``--work`` and reused), with Arrow kernels only:

- **ordered**: a partition's key column (``id``, uint64) in key order, in files of at most
  10,000,000 rows and row groups of 262,144 (the replicator's), so no two row groups overlap;
- **shuffled**: the same keys in a scattered order (``i * 2654435761 mod n``, a permutation), so
  every row group spans the whole key range and the check cannot rely on statistics;
- **landing**: a day of a three-column fact table (``id`` landed as text, as Airbyte lands a
  BIGINT UNSIGNED; ``Data_Processamento``; ``Valor``), landed twice: the sync, then the backup
  connection after a failover, with a ``Valor`` of its own so keeping the wrong copy shows.

Then each variant runs in its own child process under ``_measure.py`` (its own peak RSS, from
``wait4``), one after the other:

- **old key check**: the key column read whole, then the sort-based ``unique_key`` of commit
  72665a7 (copied below);
- **new key check**: the footers, then ``quality.partition_keys`` (row group by row group) and
  ``unique_key``;
- **old cut**: ``Landing.cut`` and ``DayCut.batches`` of 72665a7 (copied below): every landed key
  in memory, sorted; then a Python set and ``is_in`` against every repeated key, batch by batch;
- **new cut**: ``Landing.cut`` and ``DayCut.batches`` now.

The old cut runs only up to ``--old-cut-max`` keys (at 50M repeats its ``is_in`` hashes 50M keys
for each of 1,500 batches: hours). Every pair's answers are compared before the table is printed.
Prints a Markdown table and writes ``bench/results/keys.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from acode_dagster.bronze.keys import DEFAULT_MEMORY_ROWS, positions  # noqa: E402
from acode_dagster.bronze.store import _Files  # noqa: E402
from acode_dagster.landing import Landing, from_landed, landed_file_name  # noqa: E402
from acode_dagster.quality import Verdict, partition_keys, unique_key  # noqa: E402
from acode_dagster.tables import FISCAL_LINES, Column, Table, day_window  # noqa: E402

DAY = date(2026, 11, 20)
SYNCED_AT = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
ROW_GROUP_ROWS = 262_144
FILE_ROWS = 10_000_000
SCATTER = 2_654_435_761
"""A prime above every size: ``i * SCATTER mod n`` visits each key once, far from its neighbours."""
BATCH_ROWS = 65_536
LANDED = Table(
    name="keys_bench",
    description="a day of a narrow fact table, as Airbyte lands it",
    columns=(
        Column("id", "BIGINT UNSIGNED", False),
        Column("Data_Processamento", "DATETIME(6)", False),
        Column("Valor", "BIGINT", True),
    ),
    key="id",
    partition_column="Data_Processamento",
    critical_columns=(),
    expected_daily_rows=50_000_000,
    demo_daily_rows=0,
)
CASES = ("ordered", "shuffled", "landing")
VARIANTS = {
    "ordered": ("old-check", "new-check"),
    "shuffled": ("old-check", "new-check"),
    "landing": ("old-cut", "new-cut"),
}
LABELS = {
    "old-check": "old key check (column read whole, sorted)",
    "new-check": "new key check (row group by row group)",
    "old-cut": "old cut (all keys sorted, Python set, is_in per batch)",
    "new-cut": "new cut (external sort of (key, position), drops merged)",
}


# --------------------------------------------------------------------------- data


def keys_of(start: int, count: int, total: int, scattered: bool) -> pa.Array:
    """Keys ``start .. start + count - 1`` of a partition of ``total`` (uint64)."""
    index = pc.cast(positions(start, count), pa.uint64())
    if not scattered:
        return index
    product = pc.multiply(index, pa.scalar(SCATTER, pa.uint64()))
    size = pa.scalar(total, pa.uint64())
    return pc.subtract(product, pc.multiply(pc.divide(product, size), size))


def write_partition(folder: Path, total: int, scattered: bool) -> None:
    done = folder / "_DONE"
    if done.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, total, FILE_ROWS), start=1):
        count = min(FILE_ROWS, total - start)
        path = folder / f"file_{FISCAL_LINES.name}_{number:03d}.parquet"
        schema = pa.schema([pa.field(FISCAL_LINES.key, pa.uint64(), nullable=False)])
        with pq.ParquetWriter(path, schema, compression="snappy") as writer:
            for offset in range(start, start + count, ROW_GROUP_ROWS):
                rows = min(ROW_GROUP_ROWS, start + count - offset)
                writer.write_table(
                    pa.table([keys_of(offset, rows, total, scattered)], schema=schema)
                )
    done.write_text("")


def write_landing(folder: Path, total: int) -> None:
    """The day landed twice, each landing in files of at most FILE_ROWS rows."""
    done = folder / "_DONE"
    if done.exists():
        return
    landing = Landing(str(folder))
    start, _ = day_window(DAY)
    start_us = int((start - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    step_us = max(86_399_000_000 // total, 1)
    for landed in range(2):
        at = SYNCED_AT + timedelta(hours=landed)
        for part, first in enumerate(range(0, total, FILE_ROWS)):
            count = min(FILE_ROWS, total - first)
            path = Path(landing.stream_path(LANDED)) / landed_file_name(at, part)
            path.parent.mkdir(parents=True, exist_ok=True)
            writer: pq.ParquetWriter | None = None
            for offset in range(first, first + count, ROW_GROUP_ROWS):
                rows = min(ROW_GROUP_ROWS, first + count - offset)
                where = positions(offset, rows)
                stamps = pc.add(pc.multiply(where, step_us), start_us)
                data = pa.table(
                    {
                        "id": pc.cast(keys_of(offset, rows, total, True), pa.string()),
                        "Data_Processamento": stamps.view(pa.timestamp("us")),
                        "Valor": pc.add(where, landed * 1_000_000_000_000),
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(path, data.schema, compression="snappy")
                writer.write_table(data)
            assert writer is not None
            writer.close()
    done.write_text("")


# --------------------------------------------------------------------------- the old versions


def old_repeated_values(values: pa.ChunkedArray | pa.Array) -> tuple[int, pa.Array]:
    """``quality.repeated_values`` of 72665a7."""
    present = pc.drop_null(values)
    if isinstance(present, pa.ChunkedArray):
        present = present.combine_chunks()
    ordered = pc.take(present, pc.array_sort_indices(present))
    if len(ordered) < 2:
        return 0, ordered.slice(0, 0)
    same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    duplicates = int(pc.sum(pc.cast(same, pa.int64())).as_py() or 0)
    return duplicates, pc.unique(pc.filter(ordered.slice(1), same))


def old_unique_key(table: Table, keys: pa.ChunkedArray | pa.Array) -> Verdict:
    """``quality.unique_key`` of 72665a7."""
    rows = len(keys)
    present = len(keys) - keys.null_count
    duplicates, repeated = old_repeated_values(keys)
    metadata: dict[str, int | float | str] = {
        "rows": rows,
        "distinct": present - duplicates,
        "duplicates": duplicates,
    }
    sample = [str(v) for v in repeated[:5].to_pylist()] if duplicates else []
    if sample:
        metadata["duplicate_sample"] = ", ".join(sample)
    nulls = keys.null_count
    if nulls:
        metadata["null_keys"] = nulls
    measured = (
        f"{duplicates:,} duplicate {table.key} value(s) among {rows:,} rows"
        + (f" (e.g. {', '.join(sample)})" if sample else "")
        + (f"; {nulls:,} NULL keys" if nulls else "")
    )
    return Verdict(
        "unique_key",
        duplicates == 0 and nulls == 0,
        "ERROR",
        measured,
        f"ERROR on any repeated or NULL {table.key}",
        metadata,
    )


@dataclass(frozen=True)
class OldDayScan:
    """``landing._DayScan`` of 72665a7: every pass opens each file and reads its footer."""

    filesystem: pafs.FileSystem
    files: tuple[str, ...]
    table: Table
    day: date

    def batches(self, columns: Sequence[str], batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        cursor = self.table.partition_column
        wanted = list(dict.fromkeys([*columns, *([cursor] if cursor else [])]))
        start, end = day_window(self.day)
        for path in self.files:
            with self.filesystem.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=False)
                groups = [
                    g for g in range(parquet.num_row_groups) if self._may_hold_day(parquet, g)
                ]
                for batch in parquet.iter_batches(batch_rows, groups, columns=wanted):
                    if cursor is not None:
                        stamps = batch.column(cursor)
                        inside = pc.and_(
                            pc.greater_equal(stamps, pa.scalar(start, stamps.type)),
                            pc.less(stamps, pa.scalar(end, stamps.type)),
                        )
                        batch = batch.filter(inside)  # noqa: PLW2901
                    if batch.num_rows:
                        yield batch.select(list(columns))

    def _may_hold_day(self, parquet: pq.ParquetFile, group: int) -> bool:
        cursor = self.table.partition_column
        if cursor is None:
            return True
        metadata = parquet.metadata.row_group(group)
        leaves = [metadata.column(i) for i in range(metadata.num_columns)]
        chunk = next((c for c in leaves if c.path_in_schema == cursor), None)
        if chunk is None:
            return True
        statistics = chunk.statistics
        if statistics is None or not statistics.has_min_max:
            return True
        start, end = day_window(self.day)
        return bool(statistics.min < end and statistics.max >= start)


def old_first_of_each(
    batch: pa.RecordBatch, key: str, repeated: pa.Array, seen: set[Any]
) -> pa.RecordBatch:
    """``landing._first_of_each`` of 72665a7."""
    if not len(repeated):
        return batch
    keys = batch.column(key).cast(repeated.type)
    mask = pc.is_in(keys, value_set=repeated)
    if not pc.any(mask).as_py():
        return batch
    keep = [True] * batch.num_rows
    for index in pc.indices_nonzero(mask).to_pylist():
        value = keys[index].as_py()
        if value in seen:
            keep[index] = False
        else:
            seen.add(value)
    return batch.filter(pa.array(keep))


def old_cut(folder: str) -> Iterator[pa.RecordBatch]:
    """``Landing.cut`` and ``DayCut.batches`` of 72665a7, in one generator."""
    landing = Landing(folder)
    scan = OldDayScan(landing.filesystem(), tuple(landing.files(LANDED)), LANDED, DAY)
    key_type = LANDED.arrow_schema.field(LANDED.key).type
    keys = pa.chunked_array(
        [batch.column(LANDED.key).cast(key_type) for batch in scan.batches([LANDED.key])],
        type=key_type,
    )
    _, repeated = old_repeated_values(keys)
    del keys
    seen: set[Any] = set()
    for landed in scan.batches(LANDED.column_names, BATCH_ROWS):
        yield from_landed(old_first_of_each(landed, LANDED.key, repeated, seen), LANDED)


# --------------------------------------------------------------------------- children


def key_files(folder: str) -> _Files:
    paths = sorted(str(p) for p in Path(folder).glob("*.parquet"))
    return _Files(pafs.LocalFileSystem(), paths, FISCAL_LINES.arrow_schema)


def cut_answer(batches: Iterator[pa.RecordBatch]) -> dict[str, Any]:
    """Rows kept and a checksum of which copy of each row was kept (Valor differs per landing)."""
    rows = 0
    total = 0
    for batch in batches:
        rows += batch.num_rows
        total += int(pc.sum(batch.column("Valor")).as_py() or 0)
    return {"rows": rows, "valor_sum": total}


def child(variant: str, folder: str, memory_rows: int) -> None:
    started = time.perf_counter()
    answer: dict[str, Any]
    if variant == "old-check":
        keys = key_files(folder).read([FISCAL_LINES.key]).column(FISCAL_LINES.key)
        answer = dict(old_unique_key(FISCAL_LINES, keys).metadata)
    elif variant == "new-check":
        files = key_files(folder)
        counted = partition_keys(FISCAL_LINES, files, files.footers(), memory_rows)
        answer = dict(unique_key(FISCAL_LINES, counted).metadata)
    elif variant == "old-cut":
        answer = cut_answer(old_cut(folder))
    elif variant == "new-cut":
        cut = Landing(folder).cut(LANDED, DAY, memory_rows=memory_rows)
        answer = {**cut_answer(cut.batches(BATCH_ROWS)), "duplicates": cut.stats.duplicates}
        cut.close()
    else:
        answer = {}
    print(json.dumps({"seconds": time.perf_counter() - started, "answer": answer}))


def measured(variant: str, folder: Path, memory_rows: int, timeout_s: float) -> dict[str, Any]:
    """The child's own seconds, its wall seconds and peak RSS (``_measure.py``), its answer."""
    launcher = [sys.executable, "-I", "-S", str(HERE / "_measure.py")]
    argv = [sys.executable, __file__, "--child", variant, str(folder), str(memory_rows)]
    with subprocess.Popen(
        launcher + argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # The launcher and the child it forked share this new session's process group.
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return {"timeout": timeout_s}
    if process.returncode != 0:
        raise RuntimeError(f"{variant} failed: {err[-3000:]}")
    launched = json.loads(err.strip().splitlines()[-1])
    inner = json.loads(out.strip().splitlines()[-1])
    return {
        "seconds": round(inner["seconds"], 2),
        "wall_s": round(launched["seconds"], 2),
        "rss_mb": round(launched["rss"] / 1e6),
        "answer": inner["answer"],
    }


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="2000000,10000000,50000000")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--work", default=str(HERE / ".work" / "keys"))
    parser.add_argument(
        "--old-cut-max",
        type=int,
        default=10_000_000,
        help="largest size the old cut runs at (it takes hours at 50M)",
    )
    parser.add_argument("--memory-rows", type=int, default=DEFAULT_MEMORY_ROWS)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, folder, memory_rows = args.child
        child(variant, folder, int(memory_rows))
        return

    work = Path(args.work).resolve()
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [c for c in args.cases.split(",") if c]
    idle = measured("idle", work, args.memory_rows, args.timeout)
    results: list[dict[str, Any]] = []
    for size in sizes:
        for case in cases:
            folder = work / f"{case}-{size}"
            started = time.perf_counter()
            if case == "landing":
                write_landing(folder, size)
            else:
                write_partition(folder, size, scattered=case == "shuffled")
            print(
                f"{case} {size:,}: data ready in {time.perf_counter() - started:.1f} s", flush=True
            )
            answers = {}
            for variant in VARIANTS[case]:
                if variant == "old-cut" and size > args.old_cut_max:
                    row: dict[str, Any] = {"skipped": f"above --old-cut-max {args.old_cut_max:,}"}
                else:
                    row = measured(variant, folder, args.memory_rows, args.timeout)
                row = {"keys": size, "case": case, "variant": variant, **row}
                results.append(row)
                answers[variant] = row.get("answer")
                print(json.dumps(row), flush=True)
            agree(case, size, answers)
    (HERE / "results").mkdir(exist_ok=True)
    report = {"idle_rss_mb": idle["rss_mb"], "memory_rows": args.memory_rows, "runs": results}
    (HERE / "results" / "keys.json").write_text(json.dumps(report, indent=2))
    print_table(results, idle["rss_mb"], args.memory_rows)


def agree(case: str, size: int, answers: dict[str, Any]) -> None:
    """Old and new must give the same answer, or the figures mean nothing."""
    old, new = (answers.get(v) for v in VARIANTS[case])
    if case == "landing":
        assert new is not None and new["rows"] == size and new["duplicates"] == size, new
        if old is not None:
            assert old["rows"] == new["rows"] and old["valor_sum"] == new["valor_sum"], answers
        return
    assert new is not None and new["rows"] == new["distinct"] == size, new
    if old is not None:
        assert old == new, answers


def print_table(results: list[dict[str, Any]], idle_rss_mb: int, memory_rows: int) -> None:
    print("\n| keys | case | variant | seconds | peak RSS MB |")
    print("| ---: | --- | --- | ---: | ---: |")
    for r in results:
        if "skipped" in r:
            seconds, rss = "not run", r["skipped"]
        elif "timeout" in r:
            seconds, rss = f"> {r['timeout']:,.0f}", "(killed)"
        else:
            seconds, rss = f"{r['seconds']:,.2f}", f"{r['rss_mb']:,}"
        print(f"| {r['keys']:,} | {r['case']} | {LABELS[r['variant']]} | {seconds} | {rss} |")
    print(
        f"\nInterpreter with the imports alone: {idle_rss_mb} MB peak RSS; "
        f"memory_rows = {memory_rows:,}."
    )


if __name__ == "__main__":
    main()
