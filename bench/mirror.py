"""Mirror benchmark: what mirroring and verifying a published partition costs, at up to 50M rows.

    python bench/mirror.py [--sizes 2000000,10000000] [--rounds 3] [--stores local,s3]
                           [--work bench/.work/mirror]
    python bench/mirror.py --sizes 50000000 --rounds 1     # the production day

After every publish the bronze asset mirrors the version to the other bucket
(``acode_dagster.bronze.mirror.mirror``): under the target's lease, copied into the target's
staging, verified there against the manifest (sizes, the footers' row counts, the SHA-256 of
every byte), then swapped in. This bench measures that, and what it is made of, on a partition
of ``farmarcas_si_analitico_diario`` of each size, against the raw copy and the raw hash of the
same files, for two stores:

- **local**: two bronze folders on one disk;
- **s3**: two buckets of moto's S3 server over HTTP on loopback, started as the tests start it
  (``acode_dagster_tests/support/s3.py``), so the copy is server-side (``UploadPartCopy``).

The partition is written once per size with ``publish_batches`` (Snappy Parquet, the
replicator's row groups and file bound, ``_SUCCESS`` manifest with each file's SHA-256) and
kept under ``--work`` for the next run. Its rows: a pool of 524,288 rows (two row groups) from
the demo generator (``acode_dagster.demo.generator``: its pharmacies, catalogue, invoices and
centavo arithmetic), written once, then tiled with fresh ids (the day's ordinal x 10**9 + row)
and processing times spread over the day (the pool's own times scaled into each tile's slice,
so the lines of one invoice keep one time). Every row group is a window of the pool, so each
compresses exactly as a generated row group would: about 29 bytes a row, as the replication
bench's 2M day read from MariaDB (57.7 MB). On S3 the source partition is made by mirroring the
local one into the source bucket (the streamed path: through local disk), timed once.

The arms, each in a fresh process under ``_measure.py`` (its own peak RSS from ``wait4``):

- **copy** (baseline): local ``cp -r`` of the partition folder; S3 boto3's ``copy`` of each
  object into a third bucket (the managed transfer: multipart ``UploadPartCopy`` above 8 MB);
- **hash** (baseline): local ``sha256sum`` of the Parquet files, and ``openssl dgst -sha256``
  beside it (Debian's coreutils 9.1 ``sha256sum`` does not use the CPU's SHA instructions;
  OpenSSL, and so Python's ``hashlib``, does: 155 to 255 against 790 to 990 MB/s here); S3 one
  GET of each object, streamed through SHA-256, and beside it the objects read in 8 MB ranged GETs,
  as Arrow's S3 stream reads them for the checksums (moto 5.2 reads the whole object to answer
  each ranged GET and each part of a multipart copy: its cost grows with the square of a
  file's size, which real S3's does not);
- **mirror**: ``mirror(source, target, table, day)`` into an emptied target (copy, verify,
  swap), the production call;
- **verify**: ``inspect(target, table, day, checksums=True)``: sizes, footers, every byte hashed;
- **quick**: ``inspect(target, table, day)``: sizes and footers (what the daily repair does to
  each copy by default);
- **write / write, no hash** (local only; the hash reads the local file before any upload on
  either store): ``publish_batches`` of the size's rows into a scratch folder, as is and with
  ``publish.file_sha256`` monkeypatched to return "" in the child. The hash arm also times
  ``file_sha256`` itself.

Rounds: the arms of a store run in order, reversed every other round (the verify arms then read
the previous round's mirror). The Python children time their work inside (imports excluded);
``cp``, ``sha256sum`` and ``openssl`` are timed by ``_measure.py``. The children's CPU seconds
and, on S3, moto's (its CPU and its peak RSS over the arm, via ``/proc``) are reported, as are
the requests moto logged. Every file is in the page cache: reads come from memory, writes are
fsynced where the store fsyncs (the local mirror; ``cp`` does not). Prints a Markdown table and
one JSON line, and writes ``bench/results/mirror.json`` (one entry per invocation: the
production day's run replaces only the entry that measured 50M). The copies are removed at the
end; the source partitions stay.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from acode_dagster.bronze.publish import MAX_FILE_BYTES, ROW_GROUP_ROWS  # noqa: E402
from acode_dagster.tables import FISCAL_LINES  # noqa: E402

TABLE = FISCAL_LINES
BATCH_ROWS = 65_536
"""The replicator's reader batch (``replicator.BATCH_ROWS``)."""
POOL_ROWS = 2 * ROW_GROUP_ROWS
POOL_DAY = date(2026, 11, 20)
FIRST_DAY = date(2026, 9, 1)
US_PER_DAY = 86_400_000_000
GENERATOR = "bench-mirror-v1"
"""Written into the manifest (with the row-group size); a partition made otherwise is rebuilt."""
BUCKETS = {"src": "acode-bench-mirror-a", "dst": "acode-bench-mirror-b", "raw": "acode-bench-raw"}
PREFIX = "lake"
WRITE_ARMS = ("write", "write-nohash")
ARMS = {
    "local": ("copy", "hash", "hash-openssl", "mirror", "verify", "quick", *WRITE_ARMS),
    "s3": ("copy", "hash", "hash-ranged", "mirror", "verify", "quick"),
}
SECOND_HASH = {"local": "hash-openssl", "s3": "hash-ranged"}
"""The second raw hash: local, a fast one; on S3, the objects read as Arrow reads them."""
LABELS = {
    "copy": "raw copy",
    "hash": "raw hash",
    "hash-openssl": "raw hash (`openssl dgst -sha256`)",
    "hash-ranged": "raw hash (8 MB ranged GETs, as Arrow reads)",
    "mirror": "mirror (copy + verify + swap)",
    "verify": "verify: inspect, checksums",
    "quick": "quick: inspect, no checksums",
    "write": "publish_batches (hash at close)",
    "write-nohash": "publish_batches, hash off",
    "streamed": "mirror, streamed (local folder -> S3)",
}
RAW_LABELS = {
    ("local", "copy"): "raw copy (`cp -r`)",
    ("local", "hash"): "raw hash (`sha256sum`)",
    ("s3", "copy"): "raw copy (boto3 `copy` per object)",
    ("s3", "hash"): "raw hash (one GET per object)",
}
BASELINE = {"mirror": "copy", "verify": "hash", "quick": "hash", "write": "write-nohash"}
STORE_LABELS = {"local": "local folders", "s3": "S3 (moto, HTTP, loopback)"}
PARTS = ("copy", "fsync", "sizes", "footers", "digests", "swap", "sha_at_write")


def day_for(size: int) -> date:
    """One day per size, from the size, so a kept partition is found by the next run."""
    return FIRST_DAY + timedelta(days=round(size / 1_000_000))


# --------------------------------------------------------------------------- data


def pool(work: Path) -> Any:
    """The demo generator's first POOL_ROWS fiscal lines of POOL_DAY, as one Arrow table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = work / f"pool-{POOL_ROWS}.parquet"
    if not path.exists():
        from acode_dagster.demo.generator import generate_rows

        started = time.perf_counter()
        columns: list[list[Any]] = [[] for _ in TABLE.columns]
        for row in generate_rows(TABLE, POOL_DAY, POOL_ROWS):
            for values, value in zip(columns, row, strict=True):
                values.append(value)
        schema = TABLE.arrow_schema
        data = pa.table([pa.array(v, f.type) for v, f in zip(columns, schema, strict=True)], schema)
        assert data.num_rows == POOL_ROWS, data.num_rows
        work.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, path.with_suffix(".tmp"), compression="zstd")
        path.with_suffix(".tmp").rename(path)
        print(f"pool of {POOL_ROWS:,} demo rows in {time.perf_counter() - started:.1f} s")
    return pq.read_table(path).combine_chunks()


def day_batches(work: Path, day: date, rows: int) -> Iterator[Any]:
    """``rows`` fiscal lines of ``day``: the pool tiled, with the day's ids and times."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data = pool(work)
    schema = TABLE.arrow_schema
    names = schema.names
    pool_start_us = (POOL_DAY - date(1970, 1, 1)).days * US_PER_DAY
    day_start_us = (day - date(1970, 1, 1)).days * US_PER_DAY
    stamps = data.column("Data_Processamento").combine_chunks().cast(pa.int64())
    times = pc.subtract(stamps, pool_start_us)
    fiscal = data.column("Data").combine_chunks().cast(pa.int32())
    shift = pa.scalar((day - POOL_DAY).days, pa.int32())
    tiles = -(-rows // POOL_ROWS)
    counting = pa.array(range(BATCH_ROWS), pa.uint64())
    first_id = day.toordinal() * 1_000_000_000
    for start in range(0, rows, BATCH_ROWS):
        count = min(BATCH_ROWS, rows - start)
        tile, offset = divmod(start, POOL_ROWS)
        piece = data.slice(offset, count)
        # Tile t takes the t-th of `tiles` equal slices of the day; equal times stay equal.
        moment = pc.divide(pc.add(times.slice(offset, count), tile * US_PER_DAY), tiles)
        arrays = [piece.column(n).combine_chunks() for n in names]
        ids = pa.scalar(first_id + start, pa.uint64())
        arrays[names.index(TABLE.key)] = pc.add(counting.slice(0, count), ids)
        arrays[names.index("Data_Processamento")] = pc.add(moment, day_start_us).cast(
            schema.field("Data_Processamento").type
        )
        arrays[names.index("Data")] = pc.add(fiscal.slice(offset, count), shift).cast(pa.date32())
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def ensure_source(work: Path, size: int) -> Any:
    """The published partition of ``size`` rows in the local source folder (kept between runs)."""
    from acode_dagster.bronze.mirror import inspect
    from acode_dagster.bronze.publish import publish_batches
    from acode_dagster.bronze.store import LocalStore

    store = LocalStore(work / "local" / "src")
    day = day_for(size)
    made_by = f"{GENERATOR} row_group_rows={ROW_GROUP_ROWS}"
    manifest = store.manifest(TABLE, day)
    if (
        manifest is not None
        and manifest.rows == size
        and manifest.replicator == made_by
        and inspect(store, TABLE, day).state == "intact"
    ):
        return manifest
    started = time.perf_counter()
    manifest = publish_batches(
        TABLE,
        day,
        store,
        day_batches(work, day, size),
        source="bench/mirror.py (demo pool, tiled)",
        replicator=made_by,
        row_group_rows=ROW_GROUP_ROWS,
        max_file_bytes=MAX_FILE_BYTES,
    )
    print(
        f"wrote {size:,} rows for {day} in {time.perf_counter() - started:.1f} s "
        f"({manifest.bytes / 1e6:,.1f} MB, {len(manifest.files)} file(s))",
        flush=True,
    )
    return manifest


# --------------------------------------------------------------------------- the arms (child)


class Tally:
    """Seconds spent in the parts of an arm, in this process only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.running: set[str] = set()

    def instrument(self) -> None:
        from acode_dagster.bronze import publish, store

        for owner, attribute, name in (
            (store, "_fsync", "fsync"),
            (store._Files, "sizes", "sizes"),
            (store._Files, "footers", "footers"),
            (store._Files, "digests", "digests"),
            (store._StagedFiles, "add_copy", "copy"),
            (store._S3Staging, "add_copy", "copy"),
            (store.LocalStore, "swap_in", "swap"),
            (store.S3Store, "copy_in", "swap"),
            (publish, "file_sha256", "sha_at_write"),
        ):
            setattr(owner, attribute, self.timed(name, getattr(owner, attribute)))

    def timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if name in self.running:
                # Called from within itself (the S3 staging's add_copy streams through its
                # parent's): counted once, by the outer call.
                return function(*args, **kwargs)
            self.running.add(name)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.running.discard(name)
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return timed


def stores(kind: str, work: Path) -> dict[str, Any]:
    from acode_dagster.bronze.store import LocalStore, S3Store, s3_client

    if kind == "local":
        return {role: LocalStore(work / "local" / role) for role in ("src", "dst", "write")}
    client = s3_client()
    return {role: S3Store(bucket, PREFIX, client=client) for role, bucket in BUCKETS.items()}


def s3_raw_copy(source: Any, target: Any, day: date) -> dict[str, Any]:
    """Every object of the source partition copied into the raw bucket, one after the other."""
    from acode_dagster.bronze.store import partition_prefix

    prefix = source._key(partition_prefix(TABLE, day)) + "/"
    objects = source._objects(prefix)
    for obj in objects:
        source.client.copy({"Bucket": source.bucket, "Key": obj["Key"]}, target.bucket, obj["Key"])
    return {"files": len(objects), "bytes": sum(int(o["Size"]) for o in objects)}


def s3_raw_hash(source: Any, day: date) -> dict[str, Any]:
    """One GET of each Parquet object of the partition, its body streamed through SHA-256."""
    from acode_dagster.bronze.store import partition_prefix, sha256_of

    prefix = source._key(partition_prefix(TABLE, day)) + "/"
    digests = {}
    for key in [k for k in source._list(prefix) if k.endswith(".parquet")]:
        body = source.client.get_object(Bucket=source.bucket, Key=key)["Body"]
        digests[key.rsplit("/", 1)[-1]] = sha256_of(body)
    return {"files": len(digests)}


def s3_ranged_hash(source: Any, day: date) -> dict[str, Any]:
    """Each Parquet object read as Arrow's S3 input stream reads it for ``digests``: one ranged
    GET per 8 MB read, through SHA-256 (moto answers each one from the whole object)."""
    import hashlib

    from acode_dagster.bronze.store import _DIGEST_CHUNK, partition_prefix

    prefix = source._key(partition_prefix(TABLE, day)) + "/"
    requests = 0
    for obj in [o for o in source._objects(prefix) if o["Key"].endswith(".parquet")]:
        digest = hashlib.sha256()
        for start in range(0, int(obj["Size"]), _DIGEST_CHUNK):
            end = min(start + _DIGEST_CHUNK, int(obj["Size"])) - 1
            body = source.client.get_object(
                Bucket=source.bucket, Key=obj["Key"], Range=f"bytes={start}-{end}"
            )["Body"]
            digest.update(body.read())
            requests += 1
    return {"gets": requests}


def child(arm: str, kind: str, work_text: str, size_text: str) -> None:
    from acode_dagster.bronze.lease import Holder, LeasePolicy
    from acode_dagster.bronze.mirror import inspect, mirror

    work, size = Path(work_text), int(size_text)
    day = day_for(size)
    tally = Tally()
    tally.instrument()
    holder = Holder.here("bench", purpose="bench/mirror.py")
    policy = LeasePolicy(ttl_s=600, wait_s=5)
    both = stores(kind, work)
    if arm == "streamed":
        from acode_dagster.bronze.store import LocalStore

        both["src"], both["dst"] = LocalStore(work / "local" / "src"), both["src"]
    started, cpu = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {}
    if arm in ("mirror", "streamed"):
        done = mirror(both["src"], both["dst"], TABLE, day, holder=holder, policy=policy)
        if not done.done:
            raise RuntimeError(f"the mirror failed: {done.detail}")
        out = {"how": done.how, "files": done.files, "bytes": done.bytes}
    elif arm in ("verify", "quick"):
        copy = inspect(both["dst"], TABLE, day, checksums=arm == "verify")
        if copy.state != "intact":
            raise RuntimeError(f"the target's copy is {copy.summary}")
    elif arm == "copy":
        out = s3_raw_copy(both["src"], both["raw"], day)
    elif arm == "hash":
        out = s3_raw_hash(both["src"], day)
    elif arm == "hash-ranged":
        out = s3_ranged_hash(both["src"], day)
    elif arm in WRITE_ARMS:
        from acode_dagster.bronze import publish
        from acode_dagster.bronze.publish import publish_batches

        if arm == "write-nohash":
            setattr(publish, "file_sha256", lambda path: "")  # noqa: B010
        started, cpu = time.perf_counter(), time.process_time()
        manifest = publish_batches(
            TABLE,
            day,
            both["write"],
            day_batches(work, day, size),
            source="bench/mirror.py (demo pool, tiled)",
            replicator=arm,
            row_group_rows=ROW_GROUP_ROWS,
            max_file_bytes=MAX_FILE_BYTES,
        )
        if manifest.rows != size or any(bool(f.sha256) != (arm == "write") for f in manifest.files):
            raise RuntimeError(f"unexpected manifest {manifest}")
        out = {"files": len(manifest.files), "bytes": manifest.bytes}
    else:
        raise ValueError(f"unknown arm {arm!r}")
    out.update(
        seconds=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu,
        parts_s={k: round(v, 3) for k, v in sorted(tally.seconds.items())},
    )
    print(json.dumps(out))


# --------------------------------------------------------------------------- the parent


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the closing parenthesis: utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int | None) -> None:
    """Restart the high-water mark of ``pid``'s RSS (Linux: write 5 to clear_refs)."""
    if pid is not None:
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_mb(pid: int | None) -> int | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) * 1024 / 1e6)
    return None


REQUEST = re.compile(r'\] "(?:\x1b\[[0-9;]*m)*([A-Z]+) /')
"""A request line of moto's (werkzeug's) log, colour codes and all: its method."""


class Moto:
    """moto's server as the tests start it, with the buckets made; what it did during an arm."""

    def __init__(self, pid: int, log: Path):
        self.pid, self.log = pid, log
        self.lines = 0

    def mark(self) -> None:
        reset_peak(self.pid)
        self.cpu = cpu_seconds(self.pid)
        self.lines = self._count()

    def since(self) -> dict[str, Any]:
        found: Counter[str] = Counter()
        with self.log.open("rb") as handle:
            for number, raw in enumerate(handle):
                if number < self.lines:
                    continue
                match = REQUEST.search(raw.decode(errors="replace"))
                if match is not None:
                    found[match.group(1)] += 1
        return {
            "moto_cpu_s": round(cpu_seconds(self.pid) - self.cpu, 2),
            "moto_peak_mb": peak_mb(self.pid),
            "requests": dict(sorted(found.items())),
        }

    def _count(self) -> int:
        with self.log.open("rb") as handle:
            return sum(1 for _ in handle)


def empty(kind: str, work: Path, role: str) -> None:
    """Remove everything a store role holds, so the next arm starts from an empty target."""
    if kind == "local":
        shutil.rmtree(work / "local" / role, ignore_errors=True)
        (work / "local" / role).mkdir(parents=True)
        return
    from acode_dagster.bronze.store import _delete_keys, s3_client

    client = s3_client()
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKETS[role])
        for obj in page.get("Contents", [])
    ]
    _delete_keys(client, BUCKETS[role], keys)


def argv_of(arm: str, kind: str, work: Path, size: int) -> list[str]:
    """The command of an arm: the raw local ones are the tools themselves."""
    from acode_dagster.bronze.store import LocalStore

    folder = Path(LocalStore(work / "local" / "src").partition_url(TABLE, day_for(size)))
    if (kind, arm) == ("local", "copy"):
        target = Path(LocalStore(work / "local" / "raw").partition_url(TABLE, day_for(size)))
        target.parent.mkdir(parents=True, exist_ok=True)
        return ["cp", "-r", str(folder), str(target)]
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    if (kind, arm) == ("local", "hash"):
        return ["--stdout-null", "sha256sum", *files]
    if (kind, arm) == ("local", "hash-openssl"):
        return ["--stdout-null", "openssl", "dgst", "-sha256", *files]
    return [sys.executable, __file__, "--child", arm, kind, str(work), str(size)]


def measured(arm: str, kind: str, work: Path, size: int, moto: Moto | None) -> dict[str, Any]:
    """One arm in a fresh process under _measure.py, its target emptied first."""
    if arm in ("mirror", "streamed"):
        empty(kind, work, "src" if arm == "streamed" else "dst")
    elif arm == "copy":
        empty(kind, work, "raw")
    elif arm in WRITE_ARMS:
        empty(kind, work, "write")
    watch = moto if kind == "s3" else None
    launcher = [sys.executable, "-I", "-S", str(HERE / "_measure.py")]
    load = os.getloadavg()[0]
    if watch is not None:
        watch.mark()
    process = subprocess.run(
        launcher + argv_of(arm, kind, work, size), check=False, capture_output=True, text=True
    )
    extra = watch.since() if watch is not None else {}
    if process.returncode != 0:
        raise RuntimeError(f"{arm} on {kind} at {size:,} failed: {process.stderr[-3000:]}")
    wall = json.loads(process.stderr.strip().splitlines()[-1])
    lines = process.stdout.strip().splitlines()
    out = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    seconds = out.pop("seconds", wall["seconds"])
    return {
        "size": size,
        "store": kind,
        "arm": arm,
        "seconds": round(seconds, 3),
        "wall_s": round(wall["seconds"], 3),
        "rss_mb": round(wall["rss"] / 1e6),
        **out,
        **extra,
        "load_1min": round(load, 2),
    }


def rounds_of(size: int, kinds: list[str], rounds: int, work: Path, moto: Moto | None) -> list[Any]:
    results = []
    for number in range(rounds):
        for kind in kinds:
            arms = ARMS[kind]
            # Reversed every other round: a drift of the machine's load falls on all arms alike;
            # the verify arms then read the copy the previous round's mirror made.
            order = arms if number % 2 == 0 else arms[::-1]
            for arm in order:
                row = {"round": number + 1, **measured(arm, kind, work, size, moto)}
                results.append(row)
                print(json.dumps(row), flush=True)
    return results


def summarize(results: list[dict[str, Any]], partitions: dict[int, Any]) -> list[dict[str, Any]]:
    rows = []
    keys = dict.fromkeys((r["size"], r["store"], r["arm"]) for r in results)
    for size, kind, arm in keys:
        mine = [r for r in results if (r["size"], r["store"], r["arm"]) == (size, kind, arm)]
        seconds = statistics.median(r["seconds"] for r in mine)
        mb = partitions[size]["bytes"] / 1e6
        row: dict[str, Any] = {
            "size": size,
            "store": kind,
            "arm": arm,
            "runs": len(mine),
            "seconds": round(seconds, 3),
            "seconds_all": [r["seconds"] for r in mine],
            "mb_s": round(mb / seconds, 1),
            "rows_s": round(size / seconds),
            "rss_mb": max(r["rss_mb"] for r in mine),
            "cpu_s": round(statistics.median(r.get("cpu_s", 0.0) for r in mine), 2),
            "parts_s": {
                p: round(statistics.median(r.get("parts_s", {}).get(p, 0.0) for r in mine), 2)
                for p in PARTS
            },
        }
        if kind == "s3":
            row["moto_cpu_s"] = round(statistics.median(r["moto_cpu_s"] for r in mine), 2)
            row["moto_peak_mb"] = max(r["moto_peak_mb"] or 0 for r in mine)
            row["requests"] = mine[-1]["requests"]
        if "how" in mine[-1]:
            row["how"] = mine[-1]["how"]
        rows.append(row)
    by = {(r["size"], r["store"], r["arm"]): r for r in rows}
    for row in rows:
        row["baseline"] = BASELINE.get(row["arm"], "")
        base = by.get((row["size"], row["store"], row["baseline"]))
        row["ratio"] = round(row["seconds"] / base["seconds"], 3) if base else None
        second = by.get((row["size"], row["store"], SECOND_HASH[row["store"]]))
        if second is not None and row["arm"] in ("verify", "quick"):
            row["ratio_second_hash"] = round(row["seconds"] / second["seconds"], 3)
        copy = by.get((row["size"], row["store"], "copy"))
        hashes = [
            by.get((row["size"], row["store"], a)) for a in ("hash", SECOND_HASH[row["store"]])
        ]
        fastest = min((h["seconds"] for h in hashes if h), default=None)
        if row["arm"] == "mirror" and copy is not None and fastest is not None:
            # The floor of a verified copy: the raw copy, then the fastest raw hash.
            row["ratio_copy_and_hash"] = round(row["seconds"] / (copy["seconds"] + fastest), 3)
    return rows


def label(row: dict[str, Any]) -> str:
    return RAW_LABELS.get((row["store"], row["arm"]), LABELS[row["arm"]])


def notes(row: dict[str, Any]) -> str:
    p = row["parts_s"]
    said = []
    verify = p["sizes"] + p["footers"] + p["digests"]
    if row["arm"] == "mirror":
        said.append(
            f"copy {p['copy']:.2f} s ({row.get('how', '')}), verify {verify:.2f} s (hash "
            f"{p['digests']:.2f}), swap {p['swap']:.2f} s"
            + (f"; fsync {p['fsync']:.2f} s" if row["store"] == "local" else "")
        )
        if "ratio_copy_and_hash" in row:
            said.append(f"{row['ratio_copy_and_hash']:.2f}x raw copy + fastest raw hash")
    elif row["arm"] == "streamed":
        said.append(
            f"1 run, the S3 source's setup; copy {p['copy']:.2f} s, hash {p['digests']:.2f} s, "
            f"swap {p['swap']:.2f} s"
        )
    elif row["arm"] in ("verify", "quick"):
        said.append(
            f"sizes {p['sizes']:.2f} s, footers {p['footers']:.2f} s"
            + (f", hash {p['digests']:.2f} s" if row["arm"] == "verify" else "")
        )
        if "ratio_second_hash" in row:
            what = "openssl" if row["store"] == "local" else "the ranged GETs"
            said.append(f"{figure(row['ratio_second_hash'])}x {what}")
    elif row["arm"] == "write":
        sha = p["sha_at_write"]
        said.append(f"of which file_sha256 {sha:.2f} s ({sha / row['seconds']:.1%})")
    if row["store"] == "s3":
        calls = ", ".join(f"{n} {method}" for method, n in row["requests"].items())
        said.append(f"moto CPU {row['moto_cpu_s']:.1f} s, peak {row['moto_peak_mb']:,} MB; {calls}")
    return "; ".join(said)


def figure(value: float) -> str:
    """Two decimals, or three significant digits below 0.1 (a quick inspect takes milliseconds)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def print_table(rows: list[dict[str, Any]], partitions: dict[int, Any], rounds: int) -> None:
    print(
        f"\n| rows | store | arm | seconds (median of {rounds}) | MB/s | rows/s | peak RSS MB "
        "| vs baseline | notes |"
    )
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        ratio = (
            "1.00" if r["arm"] in ("copy", "hash", *SECOND_HASH.values(), "write-nohash") else ""
        )
        if r["ratio"] is not None and r["baseline"]:
            ratio = f"{figure(r['ratio'])}x {r['baseline']}"
        print(
            f"| {r['size']:,} | {STORE_LABELS[r['store']]} | {label(r)} | {figure(r['seconds'])} | "
            f"{r['mb_s']:,.0f} | {r['rows_s']:,} | {r['rss_mb']} | {ratio} | {notes(r)} |"
        )
    print()
    for size, partition in partitions.items():
        print(
            f"{size:,} rows: {partition['bytes']:,} bytes ({partition['bytes'] / 1e6:,.1f} MB, "
            f"{partition['bytes'] / size:.1f} bytes a row) in {partition['files']} file(s) of "
            f"{partition['row_groups']} row groups"
        )


def save(report: dict[str, Any]) -> None:
    """Into bench/results/mirror.json, beside the earlier invocations that measured other
    sizes (the production day runs on its own): one entry per invocation."""
    path = HERE / "results" / "mirror.json"
    path.parent.mkdir(exist_ok=True)
    kept = []
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except ValueError:
            earlier = {}
        kept = [
            entry
            for entry in earlier.get("invocations", [])
            if not set(entry.get("sizes", [])) & set(report["sizes"])
        ]
    stamped = {"finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), **report}
    path.write_text(json.dumps({"bench": "mirror", "invocations": [*kept, stamped]}, indent=2))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="2000000,10000000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--work", default=str(HERE / ".work" / "mirror"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from acode_dagster.bronze.store import LocalStore

    began = time.perf_counter()
    before = uptime()
    print(f"uptime before: {before}", flush=True)
    work = Path(args.work).resolve()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if len({day_for(s) for s in sizes}) != len(sizes):
        raise SystemExit(f"two of the sizes {sizes} share a day; pick sizes a million apart")
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    partitions = {}
    for size in sizes:
        manifest = ensure_source(work, size)
        footers = LocalStore(work / "local" / "src").footers(TABLE, day_for(size))
        partitions[size] = {
            "day": day_for(size).isoformat(),
            "bytes": manifest.bytes,
            "files": len(manifest.files),
            "file_bytes": [f.bytes for f in manifest.files],
            "row_groups": sum(f.num_row_groups for f in footers),
        }
    results: list[dict[str, Any]] = []
    if "s3" in kinds:
        from acode_dagster.bronze.store import s3_client
        from acode_dagster_tests.support.s3 import moto_server

        (work / "moto").mkdir(parents=True, exist_ok=True)
        with moto_server(work / "moto") as server:
            client = s3_client()
            for bucket in BUCKETS.values():
                client.create_bucket(Bucket=bucket)
            assert server.process is not None
            moto = Moto(server.process.pid, server.log_path)
            for size in sizes:
                row = measured("streamed", "s3", work, size, moto)
                results.append({"round": 0, **row})
                print(json.dumps(results[-1]), flush=True)
                results += rounds_of(size, kinds, args.rounds, work, moto)
    else:
        for size in sizes:
            results += rounds_of(size, kinds, args.rounds, work, None)
    for role in ("dst", "raw", "write"):
        # The copies go; the source partitions stay for the next run.
        shutil.rmtree(work / "local" / role, ignore_errors=True)
    after = uptime()
    summary = summarize(results, partitions)
    total_s = time.perf_counter() - began
    report = {
        "bench": "mirror",
        "table": TABLE.name,
        "sizes": sizes,
        "rounds": args.rounds,
        "partitions": partitions,
        "uptime": {"before": before, "after": after},
        "cpus": os.cpu_count(),
        "total_s": round(total_s, 1),
        "arms": summary,
    }
    (HERE / "results").mkdir(exist_ok=True)
    save({**report, "runs": results})
    print_table(summary, partitions, args.rounds)
    print(f"uptime before: {before}\nuptime after:  {after}\ntotal {total_s / 60:.1f} min")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
