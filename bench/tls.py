"""What TLS to MySQL costs the embedded replicator: the same day synced over a plain connection
and over verified TLS, side by side.

    python bench/tls.py [--sizes 2000000] [--repeat 3] [--work DIR --keep]

Seeds one day of fiscal lines per size into a private MariaDB pair (which serves TLS with its
throwaway CA), reads it once to warm the server's buffer pool (every figure is of a cached
window), then per repetition syncs it in child processes with ``ssl_mode=disabled`` and with
``verify_identity``, alternating which goes first. Prints a Markdown table and writes
``bench/results/tls.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from replication import raw_read, run_child, seed  # noqa: E402

MODES = ("disabled", "verify_identity")


def sync(mode: str, stack_home: Path, bronze: Path, day: date) -> tuple[float, int, int]:
    argv = [sys.executable, __file__, "--child", mode, str(stack_home), str(bronze), str(day)]
    seconds, rss, out = run_child(argv, capture=True)
    return seconds, rss, int(json.loads(out.strip().splitlines()[-1])["rows"])


def child(mode: str, stack_home: str, bronze: str, day_text: str) -> None:
    from acode_dagster.bronze.store import LocalStore
    from acode_dagster.localstack import LocalStack
    from acode_dagster.replicator import EmbeddedReplicator, describe
    from acode_dagster.tables import FISCAL_LINES

    source = LocalStack(Path(stack_home)).endpoint("primary")
    source = replace(source, tls=replace(source.tls, mode=mode))
    result = EmbeddedReplicator(log=lambda _msg: None).sync(
        FISCAL_LINES, date.fromisoformat(day_text), source, LocalStore(Path(bronze) / mode)
    )
    print(json.dumps(describe(result)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", default=tempfile.mkdtemp(prefix="acode-bench-tls-"))
    parser.add_argument("--keep", action="store_true", help="keep the seeded pair in --work")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from acode_dagster.localstack import LocalStack

    work = Path(args.work).resolve()
    stack = LocalStack(work / "stack")
    stack.start()
    rows = []
    try:
        for size, day in seed(stack, [int(s) for s in args.sizes.split(",")]).items():
            raw_read(stack, day)  # warm the buffer pool: every figure below is of a cached day
            for rep in range(args.repeat):
                order = MODES if rep % 2 == 0 else MODES[::-1]
                measured = {}
                for mode in order:
                    seconds, rss, synced = sync(mode, work / "stack", work / "bronze", day)
                    assert synced == size, (mode, synced, size)
                    measured[mode] = (seconds, rss)
                plain, tls = measured["disabled"], measured["verify_identity"]
                rows.append(
                    {
                        "rows": size,
                        "rep": rep + 1,
                        "plain_s": round(plain[0], 2),
                        "tls_s": round(tls[0], 2),
                        "plain_rows_s": round(size / plain[0]),
                        "tls_rows_s": round(size / tls[0]),
                        "tls_over_plain": round(tls[0] / plain[0], 3),
                        "plain_rss_mb": round(plain[1] / 1e6),
                        "tls_rss_mb": round(tls[1] / 1e6),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.keep:
            stack.stop()
    print("\n| rows | rep | plain s | TLS s | plain rows/s | TLS rows/s | TLS / plain | RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['rows']:,} | {r['rep']} | {r['plain_s']} | {r['tls_s']} | "
            f"{r['plain_rows_s']:,} | {r['tls_rows_s']:,} | {r['tls_over_plain']} | "
            f"{r['plain_rss_mb']} / {r['tls_rss_mb']} |"
        )
    ratio = statistics.median(r["tls_over_plain"] for r in rows)
    print(f"\nmedian TLS / plain wall time: {ratio}")
    out = HERE / "results" / "tls.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "median_tls_over_plain": ratio}, indent=2))


if __name__ == "__main__":
    main()
