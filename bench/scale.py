"""Scale benchmark: 2M, 10M and 50M fiscal lines a day through both replicators.

    python bench/scale.py --work bench/.work/scale --keep        # all three sizes (loads first)
    python bench/scale.py --sizes 2000000 --repeat 1 --work bench/.work/scale --keep
    python bench/scale.py --work bench/.work/scale --keep --load-only   # load the days, no runs
    python bench/scale.py --work bench/.work/scale --keep --skip airbyte --airbyte-timeout 900
    python bench/scale.py --work bench/.work/scale --stop               # stop a kept pair

Without ``--work`` the pair lives in a new temporary folder and is destroyed at the end; with
``--work DIR --keep`` it is kept (stopped at the end, unless it was already running when the
bench started or ``--leave-running`` is given).

The production day is 50M+ lines of ``farmarcas_si_analitico_diario``. The bench loads one day
per size into the pair's primary with ``LOAD DATA LOCAL INFILE``, 500,000 rows a transaction
streamed through a FIFO (no chunk ever lands on disk): the rows come from a vectorised generator
(pyarrow.compute kernels, the demo generator's pools, distributions and centavo arithmetic, two
to four times faster than the demo's per-row Python and off the GIL), and any warning rolls its
chunk back. A day already holding its row count is not loaded again; an interrupted load
resumes after its last committed chunk. The load is not binlogged, so the replica never gets
these rows: replicating them would double the time and need the binlog, the relay log and the
replica's copy on top of the primary's 26 GB, more disk than this machine has free.

Before the runs the table's engine-independent statistics are set to what production's table
holds (``--plan production``, the default): with three days in it, MariaDB reads most bench days
by a full table scan, 62M rows to return one day, where production reads a day by an index
range scan. ``--buffer-pool-mb`` (default LocalStack's 128) sets the primary's buffer pool.

Then, for each size and repetition (interleaved), in turn:

- **raw client read**, the floor: ``mariadb --quick --batch -e "<the replicator's SELECT>"``;
- **the Dagster CLI** with the embedded replicator: ``dagster asset materialize -m
  acode_dagster.definitions --select bronze_acode/farmarcas_si_analitico_diario --partition D``
  in a child process pointed at the bench pair, a local bronze folder and a throwaway
  DAGSTER_HOME (its ``dagster.yaml`` as ``acode`` writes it); the sync's own ``seconds`` (read
  back from that instance), the run's wall seconds (split into startup, run and shutdown from
  the CLI's log), and the RSS of every process of the run, sampled every 0.2 s with psutil (the
  whole run's peak is the largest sum over the tree at one sample; ``ru_maxrss`` from
  ``_measure.py`` cross-checks the largest single process);
- **the Airbyte route after a failover**: the loopback Airbyte server (in this process) lands the
  day with the primary connection (cursor at the day's start), then the backup connection's
  cursor is set to the day's start too and a measured child process runs
  ``AirbyteReplicator(role="backup")``: it triggers the backup connection, which lands the day a
  second time, then cuts the day out of the landing (every key twice) and publishes it. Both
  connections read the primary server here (the replica holds no bench rows) and the server's
  query stops at the day's end (the later bench days would land too otherwise). Each job may
  take ``--airbyte-timeout`` seconds, and the cut and publish as long again; past that the
  round is recorded as timed out and the bench goes on. ``--skip airbyte`` leaves it out.

Every published partition's row count is checked against the size. Prints a Markdown table, the
targets, the cache state (buffer pool against the day's size, MB the server read from disk) and
the read plan, and writes ``bench/results/scale.json`` (and a copy beside the run's logs in
``<work>/logs/<time>/``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from acode_dagster.demo import brazil  # noqa: E402
from acode_dagster.demo.generator import (  # noqa: E402
    _ITEMS,
    _OPERATION_SAMPLER,
    _PRICING_SAMPLER,
    _PRICINGS,
    ID_DAY_STRIDE,
    _sales_sampler,
    _time_of_day_us,
    pharmacies,
)
from acode_dagster.tables import FISCAL_LINES, PRODUCTS, day_window  # noqa: E402

DEFAULT_SIZES = "2000000,10000000,50000000"
FIRST_DAY = date(2026, 9, 1)
CHUNK_ROWS = 500_000
"""Rows per LOAD DATA transaction (about 150 MB of text): the unit of progress and of resuming."""
ASSET = ("bronze_acode", FISCAL_LINES.name)
SAMPLE_EVERY_S = 0.2
MB = 1e6
PRODUCTION_TABLE_ROWS = 5_000_000_000
"""About a hundred production days of 50M lines: what the optimizer should believe it reads."""
TARGET_RSS_MB = 600
TARGET_RSS_GROWTH = 0.10
TARGET_SYNC_VS_RAW = 0.8
TARGET_CLI_VS_SYNC = 2.0
TARGET_CUT_S = 300.0

Log = Callable[[str], None]


def say(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# ---------------------------------------------------------------------- fast rows


_QUANTILES = 1 << 16
_EPOCH = date(1970, 1, 1)
_US_PER_DAY = 86_400_000_000
_SIX_HOURS_US = 6 * 3_600_000_000


def _ints(values: Sequence[int]) -> pa.Int64Array:
    return pa.array(values, pa.int64())


def _pick(uniform: pa.DoubleArray, count: int) -> pa.Int64Array:
    """Uniform draws in [0, 1) to indexes 0..count-1."""
    return pc.cast(pc.floor(pc.multiply(uniform, float(count))), pa.int64())


def _idiv(a: Any, b: Any) -> Any:
    """Integer division of non-negative integers (Arrow's integer divide truncates)."""
    return pc.divide(a, b)


def _half_up(numerator: Any, denominator: int) -> Any:
    """numerator / denominator rounded half up, as the demo generator rounds money."""
    return _idiv(pc.add(pc.multiply(numerator, 2), denominator), 2 * denominator)


def _decimal_text(units: Any, scale: int) -> Any:
    """Non-negative integers in units of 10**-scale as DECIMAL text: 5 -> '0.05' (scale 2)."""
    text = pc.utf8_lpad(pc.cast(units, pa.string()), width=scale + 1, padding="0")
    whole = pc.utf8_slice_codeunits(text, start=0, stop=-scale)
    return pc.binary_join_element_wise(whole, pc.utf8_slice_codeunits(text, start=-scale), ".")


def _padded(values: Any, width: int) -> Any:
    return pc.utf8_lpad(pc.cast(values, pa.string()), width=width, padding="0")


def _weighted_digits(values: Any, width: int, weights: Sequence[int]) -> Any:
    """Sum of digit x weight over the ``width`` digits of each value (leftmost first)."""
    total: Any = None
    for position, weight in enumerate(weights):
        shifted = _idiv(values, 10 ** (width - 1 - position))
        digit = pc.subtract(shifted, pc.multiply(_idiv(shifted, 10), 10))
        term = pc.multiply(digit, weight)
        total = term if total is None else pc.add(total, term)
    return total


class FastFiscalDay:
    """Plausible fiscal lines of one day, ``rows`` of them, built chunk by chunk with Arrow
    kernels and handed out as LOAD DATA text (tab-separated, one line per row).

    It draws from the demo generator's pools (600 pharmacies, the 2,000-product catalogue with
    its Zipf-like popularity, the fiscal operations, quantities, markdowns and discounts, items
    per invoice) and does its arithmetic the same way (integer centavos rounded half up), so
    every value fits its column; NF-e keys carry a valid check digit. Unlike the demo it is
    random-access by chunk (each chunk has its own seeded draws, and invoices do not straddle
    chunks), which is what lets a load resume. Ids are the demo's (day ordinal x 10**9 + row),
    rows come in ``Data_Processamento`` order through the day's hourly profile, as ACODE
    inserts them, and no value is NULL (a clean day).
    """

    def __init__(self, day: date, rows: int, seed: int = 42, chunk_rows: int = CHUNK_ROWS):
        if rows >= ID_DAY_STRIDE:
            raise ValueError(f"at most {ID_DAY_STRIDE - 1:,} rows a day, got {rows:,}")
        self.day, self.rows, self.seed, self.chunk_rows = day, rows, seed, chunk_rows
        pool = pharmacies(seed)
        self.pharmacy_cnpj = pa.array([p.cnpj for p in pool])
        self.pharmacy_name = pa.array([p.name for p in pool])
        self.pharmacy_uf = pa.array([p.uf for p in pool])
        self.pharmacy_rate = _ints([p.icms_rate_bp for p in pool])
        self.pharmacy_series = _ints([p.series for p in pool])
        products, sampler = _sales_sampler(seed, PRODUCTS.demo_daily_rows)
        self.sales = _ints(sampler)
        self.product_ean = pa.array([p.ean for p in products])
        self.product_description = pa.array([p.description for p in products])
        self.product_ncm = pa.array([p.ncm for p in products])
        self.product_pmc = _ints([p.pmc_cents for p in products])
        operations = brazil.FISCAL_OPERATIONS
        self.operation_sampler = _ints(_OPERATION_SAMPLER)
        self.operation_cfop = pa.array([o.cfop for o in operations])
        self.operation_cst = pa.array([o.cst for o in operations])
        self.operation_own_rate = pa.array([o.icms in ("internal", "reduced") for o in operations])
        self.operation_rate = _ints(
            [brazil.INTERSTATE_ICMS_RATE_BP if o.icms == "interstate" else 0 for o in operations]
        )
        self.operation_reduced = pa.array([o.icms == "reduced" for o in operations])
        self.pricing_sampler = _ints(_PRICING_SAMPLER)
        self.quantity = _ints([q for q, _, _ in _PRICINGS])
        self.markdown = _ints([m for _, m, _ in _PRICINGS])
        self.discount = _ints([d for _, _, d in _PRICINGS])
        self.items = _ints(_ITEMS)
        # The hourly profile's inverse, tabulated: microsecond of the day at quantile i/Q.
        low = [_time_of_day_us(i / _QUANTILES) for i in range(_QUANTILES + 1)]
        self.tod_low = _ints(low[:-1])
        self.tod_step = _ints([b - a for a, b in itertools.pairwise(low)])
        fiscal_dates = [day - timedelta(days=lag) for lag in range(3)]
        prefixes = [
            brazil.nfe_key_prefix(uf=p.uf_code, emitted=fiscal_dates[lag], cnpj=p.cnpj)
            for p in pool
            for lag in range(3)
        ]
        self.key_digits = pa.array([p.digits for p in prefixes])
        self.key_sum = _ints([p.weighted_sum for p in prefixes])
        self.first_id = day.toordinal() * ID_DAY_STRIDE
        self.day_days = (day - _EPOCH).days
        self.day_start_us = self.day_days * _US_PER_DAY
        self.row_numbers = pa.array(range(chunk_rows), pa.int64())
        for values in (self.pharmacy_cnpj, self.pharmacy_name, self.pharmacy_uf, self.product_ean,
                       self.product_description, self.product_ncm):  # fmt: skip
            for text in values.to_pylist():
                if any(c in text for c in "\t\n\r\\\0"):
                    raise ValueError(f"{text!r} would need LOAD DATA escaping")

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    def _uniform(self, chunk: int, stream: int, count: int) -> pa.DoubleArray:
        initializer = ((self.seed * 100_003 + self.day.toordinal()) * 10_007 + chunk) * 16 + stream
        return pc.random(count, initializer=initializer)

    def _invoice_offsets(self, chunk: int, rows: int) -> pa.Int64Array:
        """Row offsets of the chunk's invoices (sizes drawn from the demo's items per invoice),
        the last one cut to end the chunk: [0, ..., rows]."""
        draws = rows // 3 + 16
        while True:
            sizes = pc.take(self.items, _pick(self._uniform(chunk, 0, draws), len(self.items)))
            ends = pc.cumulative_sum(sizes)
            if ends[-1].as_py() >= rows:
                break
            draws *= 2
        invoices = pc.sum(pc.less(ends, rows)).as_py() + 1
        return pa.concat_arrays([_ints([0]), ends.slice(0, invoices - 1), _ints([rows])])

    def chunk_rows_of(self, chunk: int) -> int:
        return min(self.chunk_rows, self.rows - chunk * self.chunk_rows)

    def _processing_times(self, chunk: int, first: int, starts: Any, lengths: Any) -> Any:
        """Microsecond of the day of each invoice: its place in the day through the hourly
        profile (a row's quantile is its position among the day's rows, so rows come in order)."""
        invoices = len(starts)
        within = pc.multiply(self._uniform(chunk, 3, invoices), pc.cast(lengths, pa.float64()))
        quantile = pc.divide(
            pc.add(pc.cast(pc.add(starts, first), pa.float64()), within), float(self.rows)
        )
        scaled = pc.multiply(quantile, float(_QUANTILES))
        slot = pc.min_element_wise(pc.cast(pc.floor(scaled), pa.int64()), _QUANTILES - 1)
        fraction = pc.subtract(scaled, pc.cast(slot, pa.float64()))
        tod = pc.add(
            pc.take(self.tod_low, slot),
            pc.cast(
                pc.floor(
                    pc.multiply(fraction, pc.cast(pc.take(self.tod_step, slot), pa.float64()))
                ),
                pa.int64(),
            ),
        )
        tod = pc.min_element_wise(tod, _US_PER_DAY - 1)
        return tod

    def _nfe_keys(self, pharmacy: Any, lag: Any, series: Any, number: Any, code: Any) -> Any:
        """44-digit access keys: the (pharmacy, fiscal date) prefix, series, number, tpEmis 1,
        cNF and the mod-11 check digit over the 43 before it."""
        prefix = pc.add(pc.multiply(pharmacy, 3), lag)
        weights = brazil._NFE_SUFFIX_WEIGHTS
        total = pc.add(
            pc.add(pc.take(self.key_sum, prefix), _weighted_digits(series, 3, weights[0:3])),
            pc.add(
                _weighted_digits(number, 9, weights[3:12]),
                pc.add(weights[12], _weighted_digits(code, 8, weights[13:21])),
            ),
        )
        remainder = pc.subtract(total, pc.multiply(_idiv(total, 11), 11))
        check = pc.if_else(pc.less(remainder, 2), 0, pc.subtract(11, remainder))
        key = pc.binary_join_element_wise(
            pc.take(self.key_digits, prefix),
            _padded(series, 3),
            _padded(number, 9),
            "1",
            _padded(code, 8),
            pc.cast(check, pa.string()),
            "",
        )
        return key

    def chunk_text(self, chunk: int) -> tuple[int, pa.Buffer]:
        """Rows and LOAD DATA text of chunk ``chunk`` (rows chunk*chunk_rows onwards)."""
        first = chunk * self.chunk_rows
        rows = self.chunk_rows_of(chunk)
        if rows <= 0:
            raise ValueError(f"chunk {chunk} is past the day's {self.rows:,} rows")
        offsets = self._invoice_offsets(chunk, rows)
        invoices = len(offsets) - 1
        starts, ends = offsets.slice(0, invoices), offsets.slice(1, invoices)
        lengths = pc.subtract(ends, starts)
        parent = pc.list_parent_indices(
            pa.ListArray.from_arrays(pc.cast(offsets, pa.int32()), pa.nulls(rows, pa.int8()))
        )
        numbers = self.row_numbers.slice(0, rows)

        # One NF-e per invoice: pharmacy, operation, processing time, fiscal date, number, key.
        pharmacy = _pick(self._uniform(chunk, 1, invoices), len(self.pharmacy_cnpj))
        operation = pc.take(
            self.operation_sampler,
            _pick(self._uniform(chunk, 2, invoices), len(self.operation_sampler)),
        )
        tod = self._processing_times(chunk, first, starts, lengths)
        draw = self._uniform(chunk, 4, invoices)
        night_lag = pc.if_else(pc.less(draw, 0.55), 1, pc.if_else(pc.less(draw, 0.6), 2, 0))
        day_lag = pc.if_else(pc.less(draw, 0.88), 0, pc.if_else(pc.less(draw, 0.98), 1, 2))
        lag = pc.cast(pc.if_else(pc.less(tod, _SIX_HOURS_US), night_lag, day_lag), pa.int64())
        number = pc.add(numbers.slice(0, invoices), first + 1)
        series = pc.take(self.pharmacy_series, pharmacy)
        code = pc.cast(pc.floor(pc.multiply(self._uniform(chunk, 5, invoices), 1e8)), pa.int64())
        key = self._nfe_keys(pharmacy, lag, series, number, code)
        rate = pc.if_else(
            pc.take(self.operation_own_rate, operation),
            pc.take(self.pharmacy_rate, pharmacy),
            pc.take(self.operation_rate, operation),
        )
        reduced = pc.take(self.operation_reduced, operation)

        # One line per row: product, pricing, amounts.
        product = pc.take(self.sales, _pick(self._uniform(chunk, 6, rows), len(self.sales)))
        pricing = pc.take(
            self.pricing_sampler, _pick(self._uniform(chunk, 7, rows), len(self.pricing_sampler))
        )
        quantity = pc.take(self.quantity, pricing)
        unit = _half_up(
            pc.multiply(
                pc.take(self.product_pmc, product),
                pc.subtract(100, pc.take(self.markdown, pricing)),
            ),
            100,
        )
        gross = _half_up(pc.multiply(quantity, unit), 10_000)
        discount = _half_up(pc.multiply(gross, pc.take(self.discount, pricing)), 100)
        net = pc.subtract(gross, discount)
        base = pc.if_else(pc.take(reduced, parent), _half_up(pc.multiply(net, 2), 3), net)
        icms = _half_up(pc.multiply(base, pc.take(rate, parent)), 10_000)
        row_pharmacy = pc.take(pharmacy, parent)
        row_operation = pc.take(operation, parent)
        columns = {
            "id": pc.cast(pc.add(numbers, self.first_id + first), pa.string()),
            "Data": pc.cast(
                pc.cast(pc.subtract(self.day_days, pc.take(lag, parent)), pa.int32()).cast(
                    pa.date32()
                ),
                pa.string(),
            ),
            "Data_Processamento": pc.cast(
                pc.cast(pc.add(pc.take(tod, parent), self.day_start_us), pa.timestamp("us")),
                pa.string(),
            ),
            "CNPJ": pc.take(self.pharmacy_cnpj, row_pharmacy),
            "Razao_Social": pc.take(self.pharmacy_name, row_pharmacy),
            "UF": pc.take(self.pharmacy_uf, row_pharmacy),
            "Chave_NFe": pc.take(key, parent),
            "Numero_NF": pc.cast(pc.take(number, parent), pa.string()),
            "Serie_NF": pc.cast(pc.take(series, parent), pa.string()),
            "Item_NF": pc.cast(
                pc.add(pc.subtract(numbers, pc.take(starts, parent)), 1), pa.string()
            ),
            "EAN": pc.take(self.product_ean, product),
            "Descricao_Produto": pc.take(self.product_description, product),
            "CFOP": pc.take(self.operation_cfop, row_operation),
            "NCM": pc.take(self.product_ncm, product),
            "CST": pc.take(self.operation_cst, row_operation),
            "Quantidade": _decimal_text(quantity, 4),
            "Val_Unitario": _decimal_text(pc.multiply(unit, 100), 4),
            "Val_Prod": _decimal_text(gross, 2),
            "Val_Desconto": _decimal_text(discount, 2),
            "Val_ICMS": _decimal_text(icms, 2),
            "ACODE_Val_Total": _decimal_text(net, 2),
        }
        if tuple(columns) != FISCAL_LINES.column_names:
            raise AssertionError("the fast generator's columns are not the contract's")
        lines = pc.binary_join_element_wise(
            pc.binary_join_element_wise(*columns.values(), "\t"), "", "\n"
        )
        if lines.null_count:
            raise AssertionError("a generated line is NULL")
        _, offsets_buffer, data = lines.buffers()
        bounds = pa.Array.from_buffers(
            pa.int32(), len(lines) + 1, [None, offsets_buffer], offset=lines.offset
        )
        start, end = bounds[0].as_py(), bounds[-1].as_py()
        return rows, data.slice(start, end - start)


# ---------------------------------------------------------------------- loading


@dataclass
class LoadStats:
    size: int
    day: str
    loaded: int = 0
    resumed_from: int = 0
    seconds: float = 0.0
    generate_seconds: float = 0.0
    skipped: bool = False
    deleted: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.loaded / self.seconds if self.seconds > 0 else 0.0


def assign_days(work: Path, sizes: Sequence[int]) -> dict[int, date]:
    """The day of each size: kept in ``<work>/days.json``, so a kept pair's days stay put
    whatever sizes a later run asks for (new sizes get the next free day from FIRST_DAY)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "days.json"
    with open(work / ".days.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        taken = set(known.values())
        for size in sizes:
            if str(size) in known:
                continue
            day = FIRST_DAY
            while day.isoformat() in taken:
                day += timedelta(days=1)
            known[str(size)] = day.isoformat()
            taken.add(day.isoformat())
        path.write_text(json.dumps(known, indent=2, sort_keys=True))
    return {size: date.fromisoformat(known[str(size)]) for size in sizes}


def _scalar(conn: Any, sql: str) -> Any:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    return row[0] if row else None


def _grow_globals(conn: Any, pool_mb: int, redo_mb: int, log: Log) -> None:
    """A larger buffer pool (the secondary indexes' hot pages) and redo log (fewer forced
    checkpoints) for the load; never shrinks them, not persisted (a restart has LocalStack's)."""
    for name, wanted in (
        ("innodb_buffer_pool_size", pool_mb << 20),
        ("innodb_log_file_size", redo_mb << 20),
    ):
        current = int(_scalar(conn, f"SELECT @@GLOBAL.{name}"))
        if wanted <= current:
            continue
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"SET GLOBAL {name} = {wanted}")
            log(f"load: {name} {current >> 20} MB -> {wanted >> 20} MB (until the next restart)")
        except Exception as exc:  # an older server: the load is slower, not wrong
            log(f"load: could not set {name} ({exc}); loading with {current >> 20} MB")


def _feed_fifo(fifo: Path, data: pa.Buffer, errors: list[BaseException]) -> None:
    try:
        with open(fifo, "wb") as sink:
            sink.write(memoryview(data))
    except BaseException as exc:
        errors.append(exc)


def _release_fifo(fifo: Path) -> None:
    """Unblock a writer still waiting for a reader (the LOAD failed before opening the FIFO)."""
    with contextlib.suppress(OSError):
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)


def _load_chunk(conn: Any, fifo: Path, rows: int, data: pa.Buffer, day: date) -> None:
    """One chunk in one transaction, streamed through the FIFO; any warning rolls it back."""
    errors: list[BaseException] = []
    writer = threading.Thread(target=_feed_fifo, args=(fifo, data, errors), daemon=True)
    writer.start()
    columns = ", ".join(f"`{c}`" for c in FISCAL_LINES.column_names)
    sql = (
        f"LOAD DATA LOCAL INFILE {conn.escape(str(fifo))} INTO TABLE `{FISCAL_LINES.name}`"
        " CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\'"
        f" LINES TERMINATED BY '\\n' ({columns})"
    )
    try:
        conn.begin()
        with conn.cursor() as cursor:
            affected = cursor.execute(sql)
            cursor.execute("SHOW WARNINGS LIMIT 5")
            warnings = cursor.fetchall()
        if warnings or affected != rows:
            conn.rollback()
            shown = "; ".join(f"{level} {code}: {message}" for level, code, message in warnings)
            raise RuntimeError(
                f"{FISCAL_LINES.name} {day}: the server took {affected:,} of {rows:,} rows "
                f"({shown or 'no warning'}); the chunk was rolled back"
            )
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        _release_fifo(fifo)
        writer.join(timeout=30)
    if errors:
        raise RuntimeError(f"writing the FIFO failed: {errors[0]}")


def load_day(
    stack: Any,
    size: int,
    day: date,
    *,
    seed: int = 42,
    pool_mb: int = 2048,
    redo_mb: int = 1024,
    log: Log = say,
) -> LoadStats:
    """Load ``size`` generated fiscal lines on ``day`` into the primary, not binlogged.

    Skipped when the day already holds ``size`` rows; resumed at the next chunk when it holds
    the first whole chunks of this generator (ids day*10**9 + 0..n-1, n a multiple of the
    chunk); otherwise the day's rows are deleted first.
    """
    stats = LoadStats(size, day.isoformat())
    conn = stack.endpoint("primary", admin=True).connect(local_infile=True, read_timeout=3600)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION sql_log_bin = 0")
        started = time.perf_counter()
        # Two bench processes on one kept pair (a load in the background, a run) take turns on
        # a day; the lock goes with the connection.
        if _scalar(conn, f"SELECT GET_LOCK('acode-scale-load-{day}', 86400)") != 1:
            raise RuntimeError(f"load {day}: another process holds the day's load lock")
        count, low, high = _day_extent(conn, day)
        first_id = day.toordinal() * ID_DAY_STRIDE
        if count == size:
            stats.skipped = True
            log(f"load {day}: already holds {size:,} rows ({time.perf_counter() - started:.0f} s)")
            return stats
        generator = FastFiscalDay(day, size, seed)
        start_chunk = 0
        if (
            0 < count < size
            and count % CHUNK_ROWS == 0
            and low == first_id
            and high == first_id + count - 1
        ):
            start_chunk = count // CHUNK_ROWS
            stats.resumed_from = count
            log(f"load {day}: resuming at row {count:,} of {size:,}")
        elif count:
            log(f"load {day}: holds {count:,} rows, not a prefix of this load: deleting them")
            stats.deleted = _delete_day(conn, day)
        _grow_globals(conn, pool_mb, redo_mb, log)
        stats.loaded = _load_chunks(
            conn, generator, start_chunk=start_chunk, day=day, stats=stats, log=log
        )
        stats.seconds = time.perf_counter() - started
        with conn.cursor() as cursor:  # fresh sizes for information_schema
            cursor.execute(f"ANALYZE NO_WRITE_TO_BINLOG TABLE `{FISCAL_LINES.name}`")
            cursor.fetchall()
        final = _day_extent(conn, day)[0]
        if final != size:
            raise RuntimeError(f"load {day}: the day holds {final:,} rows, not {size:,}")
        log(
            f"load {day}: {stats.loaded:,} rows in {stats.seconds:.0f} s "
            f"({stats.rows_per_s:,.0f} rows/s; generating took {stats.generate_seconds:.0f} s)"
        )
        return stats
    finally:
        conn.close()


def _day_extent(conn: Any, day: date) -> tuple[int, int | None, int | None]:
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), MIN(id), MAX(id) FROM `{FISCAL_LINES.name}`"
            f"{FISCAL_LINES.where_sql(day)}"
        )
        count, low, high = cursor.fetchone()
    return int(count), low, high


def _delete_day(conn: Any, day: date) -> int:
    deleted = 0
    while True:
        with conn.cursor() as cursor:
            done = int(
                cursor.execute(
                    f"DELETE FROM `{FISCAL_LINES.name}`{FISCAL_LINES.where_sql(day)} LIMIT 100000"
                )
            )
        deleted += done
        if done == 0:
            return deleted


def _load_chunks(
    conn: Any, generator: FastFiscalDay, *, start_chunk: int, day: date, stats: LoadStats, log: Log
) -> int:
    """Generate the next chunk in a thread while the server loads the current one."""
    ready: queue.Queue[tuple[int, pa.Buffer] | BaseException | None] = queue.Queue(maxsize=1)
    stopping = threading.Event()

    def produce() -> None:
        try:
            for chunk in range(start_chunk, generator.chunks):
                began = time.perf_counter()
                item = generator.chunk_text(chunk)
                stats.generate_seconds += time.perf_counter() - began
                while not stopping.is_set():
                    with contextlib.suppress(queue.Full):
                        ready.put(item, timeout=0.2)
                        break
                if stopping.is_set():
                    return
            ready.put(None)
        except BaseException as exc:
            ready.put(exc)

    producer = threading.Thread(target=produce, name="scale-rows", daemon=True)
    producer.start()
    loaded = 0
    already = start_chunk * CHUNK_ROWS
    began = last_note = time.perf_counter()
    fifo_dir = Path(tempfile.mkdtemp(prefix="acode-scale-load-"))
    fifo = fifo_dir / "rows.fifo"
    os.mkfifo(fifo, 0o600)
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            rows, data = item
            _load_chunk(conn, fifo, rows, data, day)
            loaded += rows
            now = time.perf_counter()
            if now - last_note >= 10 or already + loaded == generator.rows:
                last_note = now
                rate = loaded / (now - began)
                left = (generator.rows - already - loaded) / rate if rate else 0
                log(
                    f"load {day}: {already + loaded:,} of {generator.rows:,} rows "
                    f"({rate:,.0f} rows/s, {now - began:.0f} s, about {left:.0f} s left)"
                )
    finally:
        stopping.set()
        producer.join(timeout=60)
        shutil.rmtree(fifo_dir, ignore_errors=True)
    return loaded


# ---------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    if args.child_airbyte:
        child_airbyte(*args.child_airbyte)
        return
    from acode_dagster.localstack import LocalStack

    temporary = args.work is None
    work = Path(args.work or tempfile.mkdtemp(prefix="acode-scale-")).resolve()
    stack = LocalStack(work / "stack")
    if args.stop:
        stack.stop()
        say(f"stopped the pair in {stack.home}")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    was_running = all(s.running for s in stack.status().values())
    stack.start()
    say(f"MariaDB pair in {stack.home}: {'already running' if was_running else 'started'}")
    try:
        days = assign_days(work, sizes)
        loads = [
            load_day(
                stack,
                size,
                day,
                seed=args.seed,
                pool_mb=args.load_pool_mb,
                redo_mb=args.load_redo_mb,
            )
            for size, day in sorted(days.items(), key=lambda item: -item[0])
        ]
        if args.load_only:
            report_disk(stack, work)
            return
        run_bench(args, stack, work, days, loads)
    finally:
        if not args.keep:
            if was_running:
                say("the pair was running before this run: left as it is (not destroyed)")
            else:
                stack.destroy()
                if temporary:
                    shutil.rmtree(work, ignore_errors=True)
        elif not was_running and not args.leave_running:
            stack.stop()
            say(f"stopped the pair; its data stays in {stack.home}")
        else:
            say(f"left the pair running in {stack.home}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="rows a day, one day per size")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="interleaved repetitions per size (default 3 up to 2M rows, 2 up to 10M, else 1)",
    )
    parser.add_argument(
        "--work",
        default=None,
        help="state folder (MariaDB pair, bronze, landing, logs); default a new temporary one",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the loaded pair in --work for the next run"
    )
    parser.add_argument(
        "--leave-running",
        action="store_true",
        help="with --keep, leave the pair running at the end (a pair that was already running "
        "when the bench started is always left running)",
    )
    parser.add_argument("--load-only", action="store_true", help="load the days, run nothing")
    parser.add_argument("--stop", action="store_true", help="stop the pair in --work and exit")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated paths not to run: raw, cli, airbyte",
    )
    parser.add_argument(
        "--airbyte-timeout",
        type=float,
        default=1800.0,
        help="seconds each Airbyte job may take, and the cut and publish as long again, before "
        "the round is cancelled and recorded as timed out (the bench goes on)",
    )
    parser.add_argument(
        "--cli-timeout", type=float, default=3600.0, help="seconds a CLI run may take"
    )
    parser.add_argument(
        "--buffer-pool-mb",
        type=int,
        default=128,
        help="the primary's InnoDB buffer pool for the runs (SET GLOBAL; default LocalStack's "
        "128 MB, whatever a load left); 0 leaves it as it is",
    )
    parser.add_argument("--load-pool-mb", type=int, default=2048, help="buffer pool while loading")
    parser.add_argument("--load-redo-mb", type=int, default=1024, help="redo log while loading")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--plan",
        choices=("production", "as-is"),
        default="production",
        help="production (default): the table's statistics say it holds "
        f"{PRODUCTION_TABLE_ROWS:,} rows, as production's does, so the server reads each day "
        "through the Data_Processamento index as it does there; as-is: the bench table's own "
        "statistics, under which a day that is a large share of it is read by a full table scan",
    )
    parser.add_argument("--child-airbyte", nargs=5, help=argparse.SUPPRESS)
    return parser.parse_args()


def report_disk(stack: Any, work: Path) -> dict[str, Any]:
    """The pair's and the work folder's disk use, and the table's size as InnoDB counts it."""
    usage: dict[str, Any] = {}
    for name in ("stack/primary", "stack/backup", "."):
        folder = work / name
        if folder.exists():
            out = subprocess.run(
                ["du", "-sb", str(folder)], capture_output=True, text=True, check=False
            )
            usage[name] = int(out.stdout.split()[0]) if out.returncode == 0 else None
    usage["table_mb"] = table_mb(stack)
    free = shutil.disk_usage(work)
    usage["free_gb"] = round(free.free / 1e9, 1)
    say(
        "disk: "
        + ", ".join(
            f"{name} {value / 1e9:.1f} GB"
            for name, value in usage.items()
            if name not in ("table_mb", "free_gb") and value is not None
        )
        + f"; {FISCAL_LINES.name} data+indexes {usage['table_mb']:,.0f} MB; "
        f"{usage['free_gb']} GB free"
    )
    return usage


def table_mb(stack: Any) -> float:
    conn = stack.endpoint("primary", admin=True).connect()
    try:
        value = _scalar(
            conn,
            "SELECT data_length + index_length FROM information_schema.tables"
            f" WHERE table_schema = DATABASE() AND table_name = '{FISCAL_LINES.name}'",
        )
    finally:
        conn.close()
    return int(value or 0) / MB


# ---------------------------------------------------------------------- measuring


class TreeSampler(threading.Thread):
    """Samples the RSS of a process tree every ``SAMPLE_EVERY_S``: each process's peak, and the
    peak of their sum at one sample (what the run needed at once). The root, ``_measure.py``'s
    launcher, is left out of the sum: it is the harness, not the run."""

    def __init__(self, root: int) -> None:
        super().__init__(name=f"rss-{root}", daemon=True)
        self.root = root
        self.peaks: dict[int, int] = {}
        self.labels: dict[int, str] = {}
        self.parents: dict[int, int] = {}
        self.peak_total = 0
        self.samples = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        import psutil  # type: ignore[import-untyped]

        try:
            root = psutil.Process(self.root)
        except psutil.NoSuchProcess:
            return
        while not self.stopping.is_set():
            try:
                tree = root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in tree:
                try:
                    rss = process.memory_info().rss
                    if process.pid not in self.labels:
                        self.labels[process.pid] = " ".join(process.cmdline())[:160]
                        self.parents[process.pid] = process.ppid()
                except psutil.Error:
                    continue
                total += rss
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
            self.peak_total = max(self.peak_total, total)
            self.samples += 1
            self.stopping.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)

    def processes(self) -> list[dict[str, Any]]:
        return [
            {
                "pid": pid,
                "parent": self.parents.get(pid),
                "peak_rss_mb": round(peak / MB),
                "command": self.labels.get(pid, ""),
            }
            for pid, peak in sorted(self.peaks.items())
        ]


@dataclass(frozen=True)
class Where:
    """The day under measurement and where its runs keep their state and logs."""

    work: Path
    day: date
    size: int
    logs: Path


@dataclass
class Measured:
    """One command run under ``_measure.py`` and the tree sampler."""

    seconds: float
    ru_maxrss: int
    code: int | None
    timed_out: bool
    peak_total: int
    processes: list[dict[str, Any]]
    stdout: Path
    stderr: Path

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out

    def stderr_tail(self, chars: int = 3000) -> str:
        return self.stderr.read_text(errors="replace")[-chars:]


def run_measured(
    name: str,
    argv: Sequence[str],
    logs: Path,
    *,
    env: dict[str, str] | None = None,
    stdout_null: bool = False,
    timeout: float | None = None,
) -> Measured:
    """Run ``argv`` forked from ``_measure.py`` (its own peak RSS through ``wait4``), in a
    session of its own so a timeout ends the whole tree, its output in ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    launcher = [sys.executable, "-I", "-S", str(HERE / "_measure.py")]
    if stdout_null:
        launcher.append("--stdout-null")
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [*launcher, *argv], env=env, stdout=out, stderr=err, cwd=ROOT, start_new_session=True
        )
        sampler = TreeSampler(process.pid)
        sampler.start()
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _end_group(process)
        finally:
            sampler.stop()
    wall = time.perf_counter() - started
    measured: dict[str, Any] = {}
    if not timed_out:
        with contextlib.suppress(ValueError, IndexError):
            measured = json.loads(err_path.read_text(errors="replace").strip().splitlines()[-1])
    return Measured(
        seconds=float(measured.get("seconds", wall)),
        ru_maxrss=int(measured.get("rss", 0)),
        code=measured.get("code", process.returncode),
        timed_out=timed_out,
        peak_total=sampler.peak_total,
        processes=sampler.processes(),
        stdout=out_path,
        stderr=err_path,
    )


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the session this bench started for the command, then SIGKILL what is left."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def clean_environ() -> dict[str, str]:
    """This process's environment without any platform, Airbyte or Dagster setting."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("ACODE_", "AIRBYTE_", "DAGSTER_"))
    }


def buffer_pool_counters(stack: Any) -> dict[str, int]:
    """Pages read from disk and page requests so far, and the pool's size."""
    conn = stack.endpoint("primary", admin=True).connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_read%'")
            status = {name: value for name, value in cursor.fetchall()}
        pool = int(_scalar(conn, "SELECT @@GLOBAL.innodb_buffer_pool_size"))
        page = int(_scalar(conn, "SELECT @@GLOBAL.innodb_page_size"))
    finally:
        conn.close()
    return {
        "disk_reads": int(status.get("Innodb_buffer_pool_reads", 0)),
        "requests": int(status.get("Innodb_buffer_pool_read_requests", 0)),
        "pool_bytes": pool,
        "page_bytes": page,
    }


@contextlib.contextmanager
def pool_delta(stack: Any, into: dict[str, Any]) -> Iterator[None]:
    """Pages the primary read from disk (and page requests) while the block ran."""
    before = buffer_pool_counters(stack)
    yield
    after = buffer_pool_counters(stack)
    into["pages_from_disk"] = after["disk_reads"] - before["disk_reads"]
    into["page_requests"] = after["requests"] - before["requests"]
    into["mb_from_disk"] = round(into["pages_from_disk"] * after["page_bytes"] / MB)


def set_buffer_pool(stack: Any, megabytes: int) -> None:
    conn = stack.endpoint("primary", admin=True).connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SET GLOBAL innodb_buffer_pool_size = {megabytes << 20}")
        # The resize runs in the background; wait until the pool has the asked size.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with conn.cursor() as cursor:
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'")
                row = cursor.fetchone()
            if not row or not row[1] or "Completed" in row[1] or "complete" in row[1].lower():
                break
            time.sleep(0.5)
    finally:
        conn.close()


def table_statistics(stack: Any, production: bool) -> None:
    """Make the optimizer plan a day's window as production's does: an index range scan.

    The bench table holds three days, so a day is 3 % to 80 % of it and MariaDB's cost model
    prefers a full table scan (EXPLAIN type ALL) for most of them, reading every day to return
    one. Production's table holds months, where a day is a sliver. The table's
    engine-independent statistics (``mysql.table_stats``, which the server uses for queries
    under its default ``use_stat_tables=PREFERABLY_FOR_QUERIES``) are set to
    PRODUCTION_TABLE_ROWS rows and the table is reopened (FLUSH TABLE); the range's estimate
    still comes from index dives, so it is the day's real size. Not binlogged, so the replica is
    left alone; it stays in the pair (a restart keeps it). ``production=False`` deletes it: the
    bench table's own statistics.
    """
    conn = stack.endpoint("primary", admin=True).connect(read_timeout=3600)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION sql_log_bin = 0")
            if production:
                cursor.execute(
                    "REPLACE INTO mysql.table_stats (db_name, table_name, cardinality)"
                    " VALUES (DATABASE(), %s, %s)",
                    (FISCAL_LINES.name, PRODUCTION_TABLE_ROWS),
                )
            else:
                cursor.execute(
                    "DELETE FROM mysql.table_stats WHERE db_name = DATABASE() AND table_name = %s",
                    (FISCAL_LINES.name,),
                )
            cursor.execute(f"FLUSH TABLES `{FISCAL_LINES.name}`")
    finally:
        conn.close()


def window_plan(stack: Any, day: date) -> str:
    """How the server reads the day's window: EXPLAIN's access type and index."""
    conn = stack.endpoint("primary", admin=True).connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("EXPLAIN " + FISCAL_LINES.select_sql(day))
            plan = cursor.fetchone()
    finally:
        conn.close()
    access, key, rows = plan[3], plan[5], plan[8]
    if access == "ALL":
        return f"full table scan (EXPLAIN type ALL, {int(rows):,} rows)"
    return f"{access} on {key} (EXPLAIN estimates {int(rows):,} rows)"


# -- raw read


def client_read(stack: Any, day: date) -> tuple[list[str], dict[str, str]]:
    """The raw client's command for the replicator's own SELECT (as bench/replication.py)."""
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
    return argv, {**clean_environ(), "MYSQL_PWD": endpoint.password or ""}


def raw_read(stack: Any, day: date, logs: Path, name: str) -> dict[str, Any]:
    argv, env = client_read(stack, day)
    row: dict[str, Any] = {}
    with pool_delta(stack, row):
        measured = run_measured(name, argv, logs, env=env, stdout_null=True)
    if not measured.ok:
        raise RuntimeError(f"the raw read failed: {measured.stderr_tail()}")
    row.update(seconds=round(measured.seconds, 2), rss_mb=round(measured.ru_maxrss / MB, 1))
    return row


# -- the Dagster CLI, embedded replicator


def cli_run(stack: Any, where: Where, name: str, timeout: float) -> dict[str, Any]:
    """``dagster asset materialize`` of the day in a child process, on a throwaway instance."""
    from acode_dagster.bronze.store import LocalStore
    from acode_dagster.runs import local_instance_yaml
    from acode_dagster.settings import Settings
    from acode_dagster_tests.support.source import platform_environ

    day, size = where.day, where.size
    home = where.work / "cli"
    bronze = home / "bronze"
    (home / "instances").mkdir(parents=True, exist_ok=True)
    dagster_home = Path(tempfile.mkdtemp(prefix="dagster-home-", dir=home / "instances"))
    env = {
        **clean_environ(),
        **platform_environ(stack, home, bronze),
        "ACODE_REPLICATOR": "embedded",
        "DAGSTER_HOME": str(dagster_home),
    }
    (dagster_home / "dagster.yaml").write_text(local_instance_yaml(Settings.from_env(env)))
    argv = [
        str(Path(sys.executable).with_name("dagster")),
        "asset",
        "materialize",
        "-m",
        "acode_dagster.definitions",
        "--select",
        "/".join(ASSET),
        "--partition",
        day.isoformat(),
    ]
    row: dict[str, Any] = {}
    launched = datetime.now(UTC).replace(microsecond=0)
    with pool_delta(stack, row):
        measured = run_measured(name, argv, where.logs, env=env, timeout=timeout)
    pids = {p["pid"] for p in measured.processes}
    cli_pid = next((p["pid"] for p in measured.processes if p["parent"] not in pids), None)
    others = [p for p in measured.processes if p["pid"] != cli_pid]
    # Dagster's compute-log capture: a `tail -F` of each captured stream and its orphan watcher.
    helpers = [p for p in others if _LOG_CAPTURE.search(p["command"])]
    row.update(
        wall_s=round(measured.seconds, 2),
        **run_phases(measured.stderr, launched, measured.seconds),
        exit=measured.code,
        timed_out=measured.timed_out,
        peak_total_mb=round(measured.peak_total / MB),
        peak_process_mb=max((p["peak_rss_mb"] for p in measured.processes), default=0),
        ru_maxrss_mb=round(measured.ru_maxrss / MB),
        step_processes=len(others) - len(helpers),
        helper_processes=len(helpers),
        helper_mb=sum(p["peak_rss_mb"] for p in helpers),
        processes=measured.processes,
    )
    if measured.ok:
        metadata = read_materialization(dagster_home, day)
        manifest = LocalStore(bronze).manifest(FISCAL_LINES, day)
        row.update(
            sync_s=float(metadata["seconds"]),
            row_count=int(metadata["dagster/row_count"]),
            published_rows=manifest.rows if manifest else None,
            files=metadata.get("files"),
            mb=round(int(metadata.get("bytes", 0)) / MB, 1),
        )
        if row["published_rows"] != size or row["row_count"] != size:
            row["error"] = (
                f"published {row['published_rows']} rows (metadata {row['row_count']}), "
                f"not {size:,}"
            )
        shutil.rmtree(dagster_home, ignore_errors=True)
    elif measured.timed_out:
        row["error"] = f"timed out after {timeout:g} s (instance kept in {dagster_home})"
    else:
        row["error"] = f"exit {measured.code}: {measured.stderr_tail(1500)}"
        say(f"  the CLI run failed (instance kept in {dagster_home}): {row['error'][-600:]}")
    return row


_LOG_CAPTURE = re.compile(r"^tail -F |watch_orphans\.py")
_RUN_EVENT = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \+0000 - dagster - \w+ - .* - "
    r"(RUN_START|RUN_SUCCESS|RUN_FAILURE) - "
)


def run_phases(stderr: Path, launched: datetime, wall: float) -> dict[str, float]:
    """Seconds from launch to RUN_START (imports, definitions, instance), RUN_START to the run's
    end (the steps), and the rest (shutdown), from the CLI's log; whole seconds, as it logs."""
    stamps: dict[str, datetime] = {}
    for line in stderr.read_text(errors="replace").splitlines():
        if match := _RUN_EVENT.match(line):
            stamps[match[2]] = datetime.fromisoformat(match[1]).replace(tzinfo=UTC)
    start = stamps.get("RUN_START")
    end = stamps.get("RUN_SUCCESS") or stamps.get("RUN_FAILURE")
    if start is None or end is None:
        return {}
    startup = (start - launched).total_seconds()
    run = (end - start).total_seconds()
    return {"startup_s": startup, "run_s": run, "shutdown_s": round(wall - startup - run, 1)}


def read_materialization(dagster_home: Path, day: date) -> dict[str, Any]:
    """The metadata of the day's materialization, from the run's own instance."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        result = instance.fetch_materializations(dg.AssetKey(list(ASSET)), limit=10)
        for record in result.records:
            materialization = record.asset_materialization
            if materialization is not None and materialization.partition == day.isoformat():
                return {
                    key: value.value
                    for key, value in materialization.metadata.items()
                    if isinstance(value.value, (int, float, str))
                }
    finally:
        instance.dispose()
    raise RuntimeError(f"no materialization of {day} in {dagster_home}")


# -- the Airbyte route


def day_bounded_airbyte(primary: Any, staging: Path) -> Any:
    """The loopback server with both ACODE connections on the primary (the replica holds no bench
    rows), the fiscal stream only, its query stopped at ``until`` (the day's end): otherwise a
    cursor at an early bench day would land every later bench day too."""
    from acode_dagster_tests.support.airbyte import (
        BACKUP_CONNECTION_NAME,
        PRIMARY_CONNECTION_NAME,
        ConnectionSpec,
        LoopbackAirbyte,
    )

    class DayBoundedAirbyte(LoopbackAirbyte):
        until: datetime | None = None

        def _query(self, table: Any, cursor: datetime | None) -> str:
            query = super()._query(table, cursor)
            if self.until is not None and table.partition_column is not None:
                joiner = " AND " if " WHERE " in query else " WHERE "
                query += f"{joiner}`{table.partition_column}` < '{self.until:%Y-%m-%d %H:%M:%S}'"
            return query

    return DayBoundedAirbyte(
        [
            ConnectionSpec(PRIMARY_CONNECTION_NAME, primary, str(staging), (FISCAL_LINES,)),
            ConnectionSpec(BACKUP_CONNECTION_NAME, primary, str(staging), (FISCAL_LINES,)),
        ]
    )


def _airbyte_api(server: Any, method: str, path: str, body: Any = None) -> Any:
    import requests

    token = requests.post(
        f"{server.rest_url}/applications/token",
        json={"client_id": server.client_id, "client_secret": server.client_secret},
        timeout=30,
    ).json()["access_token"]
    response = requests.request(
        method,
        f"{server.rest_url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json() if response.content else None


def _cancel_active(server: Any) -> None:
    for job in server.jobs():
        if job.status in ("pending", "running"):
            with contextlib.suppress(Exception):
                _airbyte_api(server, "DELETE", f"/jobs/{job.id}")


def airbyte_run(server: Any, stack: Any, where: Where, name: str, timeout: float) -> dict[str, Any]:
    """Primary lands the day, the backup lands it again (a failover), the child cuts and
    publishes it with ``AirbyteReplicator(role="backup")``."""
    day, size = where.day, where.size
    staging = where.work / "airbyte-staging"
    bronze = where.work / "airbyte-bronze"
    shutil.rmtree(staging, ignore_errors=True)
    start, end = day_window(day)
    server.until = end
    row: dict[str, Any] = {"status": "ok"}
    server.set_cursor(server.primary_id, FISCAL_LINES, start)
    began = time.perf_counter()
    job_id = int(
        _airbyte_api(
            server, "POST", "/jobs", {"connectionId": server.primary_id, "jobType": "sync"}
        )["jobId"]
    )
    try:
        job = server.wait_for_job(job_id, timeout_s=timeout)
    except TimeoutError:
        _cancel_active(server)
        row.update(status=f"primary job timed out after {timeout:.0f} s")
        return row
    row.update(primary_job_s=round(time.perf_counter() - began, 2), primary_job_rows=job.rows)
    if job.status != "succeeded":
        row.update(status=f"primary job {job.status}: {job.failure_message}")
        return row
    # The failover: the backup connection's own cursor at the day's start too.
    server.set_cursor(server.backup_id, FISCAL_LINES, start)
    env = {
        **clean_environ(),
        **server.environ(),
        "ACODE_AIRBYTE_STAGING_URL": str(staging),
    }
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-airbyte",
        str(stack.home),
        str(bronze),
        day.isoformat(),
        str(staging),
        str(timeout),
    ]
    measured = run_measured(name, argv, where.logs, env=env, timeout=2 * timeout)
    backup_jobs = server.jobs(server.backup_id)
    row.update(
        child_wall_s=round(measured.seconds, 2),
        child_peak_mb=round(measured.peak_total / MB),
        child_ru_maxrss_mb=round(measured.ru_maxrss / MB),
        backup_job_rows=backup_jobs[-1].rows if backup_jobs else None,
    )
    if not measured.ok:
        _cancel_active(server)
        row["status"] = (
            f"child timed out after {2 * timeout:.0f} s"
            if measured.timed_out
            else f"child failed: {measured.stderr_tail(600)}"
        )
        say(f"  Airbyte route: {row['status'][-600:]}")
        return row
    result = json.loads(measured.stdout.read_text().strip().splitlines()[-1])
    from acode_dagster.bronze.store import LocalStore

    manifest = LocalStore(bronze).manifest(FISCAL_LINES, day)
    row.update(
        backup_job_s=result["airbyte_job_seconds"],
        cut_publish_s=result["publish_seconds"],
        sync_s=result["seconds"],
        landed_rows=int(result["rows"]) + int(result["landed_duplicates"]),
        landed_duplicates=int(result["landed_duplicates"]),
        landed_files=result["landed_files"],
        published_rows=manifest.rows if manifest else None,
        published=result["published"],
    )
    if row["published_rows"] != size:
        row["status"] = f"published {row['published_rows']} rows, not {size:,}"
    shutil.rmtree(staging, ignore_errors=True)
    return row


def child_airbyte(stack_home: str, bronze: str, day_text: str, staging: str, timeout: str) -> None:
    """In the measured child: the backup connection's sync (it lands the day again), the cut of
    the day out of the landing, the audit and the publish."""
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
        role="backup",
        landing=Landing(staging),
        timeout_s=float(timeout),
        poll_s=0.2,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    ).sync(
        FISCAL_LINES,
        date.fromisoformat(day_text),
        LocalStack(Path(stack_home)).endpoint("primary"),
        LocalStore(Path(bronze)),
    )
    print(json.dumps({**describe(result), **result.extra, "published": result.published}))


# ---------------------------------------------------------------------- the runs


def default_repeat(size: int) -> int:
    return 3 if size <= 2_000_000 else 2 if size <= 10_000_000 else 1


def run_bench(
    args: argparse.Namespace,
    stack: Any,
    work: Path,
    days: dict[int, date],
    loads: list[LoadStats],
) -> None:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"raw", "cli", "airbyte"}
    if unknown:
        raise SystemExit(f"--skip takes raw, cli, airbyte; not {', '.join(sorted(unknown))}")
    if args.buffer_pool_mb:
        set_buffer_pool(stack, args.buffer_pool_mb)
    disk = report_disk(stack, work)
    table = table_mb(stack)
    loaded_rows = table_rows(stack)
    table_statistics(stack, production=args.plan == "production")
    plans = {size: window_plan(stack, day) for size, day in days.items()}
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    logs = work / "logs" / stamp
    server = None
    if "airbyte" not in skip:
        server = day_bounded_airbyte(stack.endpoint("primary"), work / "airbyte-staging")
        server.start()
    runs: list[dict[str, Any]] = []
    caches: dict[int, dict[str, Any]] = {}
    at_start = machine()
    say(f"machine: {at_start}")
    try:
        for size, day in sorted(days.items()):
            pool = buffer_pool_counters(stack)["pool_bytes"]
            caches[size] = {
                "day": day.isoformat(),
                "buffer_pool_mib": round(pool / 2**20),
                "table_mb": round(table),
                "day_mb_estimate": round(table * size / max(loaded_rows, 1)),
                "plan": plans[size],
                "statistics": args.plan,
            }
            say(
                f"{size:,} rows on {day}: buffer pool {pool / 2**20:,.0f} MiB; the day is about "
                f"{caches[size]['day_mb_estimate']:,} MB of the table's {table:,.0f} MB; "
                f"read by {plans[size]}"
            )
            for rep in range(args.repeat or default_repeat(size)):
                where = Where(work, day, size, logs)
                runs.append(one_round(args, stack, server, where, rep=rep + 1, skip=skip))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work / "airbyte-staging", ignore_errors=True)
    checks = targets(runs)
    results: dict[str, Any] = {
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "machine": {"start": at_start, "end": machine()},
        "work": str(work),
        "loads": [vars(load) | {"rows_per_s": round(load.rows_per_s)} for load in loads],
        "disk": disk,
        "cache": {str(size): cache for size, cache in caches.items()},
        "runs": runs,
    }
    results["targets"] = checks
    text = json.dumps(results, indent=2, default=str)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "scale.json").write_text(text)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "scale.json").write_text(text)  # each run's own copy, beside its logs
    print_report(runs, caches, checks)
    say(
        f"load average {at_start['load_average']} at the start, "
        f"{results['machine']['end']['load_average']} at the end ({os.cpu_count()} CPUs)"
    )
    say(f"wrote {HERE / 'results' / 'scale.json'}; logs in {logs}")


def one_round(
    args: argparse.Namespace, stack: Any, server: Any, where: Where, *, rep: int, skip: set[str]
) -> dict[str, Any]:
    """One repetition of every path on one day, in turn: raw read, CLI, Airbyte."""
    row: dict[str, Any] = {"rows": where.size, "day": where.day.isoformat(), "rep": rep}
    tag = f"{where.size}-{rep}"
    paths: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if "raw" not in skip:
        paths.append(("raw", lambda: raw_read(stack, where.day, where.logs, f"raw-{tag}")))
    if "cli" not in skip:
        paths.append(("cli", lambda: cli_run(stack, where, f"cli-{tag}", args.cli_timeout)))
    if server is not None:

        def airbyte() -> dict[str, Any]:
            measured: dict[str, Any] = {}
            with pool_delta(stack, measured):
                measured.update(
                    airbyte_run(server, stack, where, f"airbyte-{tag}", args.airbyte_timeout)
                )
            return measured

        paths.append(("airbyte", airbyte))
    for path, run in paths:
        # One path failing (a bug, a server gone) is recorded; the others still run.
        try:
            row[path] = run()
        except Exception as exc:
            row[path] = {"error": f"{type(exc).__name__}: {exc}", "status": "error"}
        shown = {k: v for k, v in row[path].items() if k != "processes"}
        say(f"  {path}: {shown}")
    return row


def table_rows(stack: Any) -> int:
    """InnoDB's estimate of the table's rows (a COUNT(*) would scan tens of millions)."""
    conn = stack.endpoint("primary", admin=True).connect()
    try:
        return int(
            _scalar(
                conn,
                "SELECT table_rows FROM information_schema.tables"
                f" WHERE table_schema = DATABASE() AND table_name = '{FISCAL_LINES.name}'",
            )
            or 0
        )
    finally:
        conn.close()


def machine() -> dict[str, Any]:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


def _median(runs: list[dict[str, Any]], path: str, key: str) -> float | None:
    values = [r[path][key] for r in runs if path in r and r[path].get(key) is not None]
    return statistics.median(values) if values else None


def _succeeded(runs: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [
        r
        for r in runs
        if path in r and not r[path].get("error") and r[path].get("status", "ok") == "ok"
    ]


def _peak(runs: list[dict[str, Any]], path: str, key: str) -> float | None:
    values = [r[path][key] for r in runs if path in r and r[path].get(key) is not None]
    return max(values) if values else None


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scale targets, each MET, NOT MET or n/a, with the figures behind it."""
    sizes = sorted({r["rows"] for r in runs})
    of = {size: [r for r in runs if r["rows"] == size] for size in sizes}
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool | None, figures: str) -> None:
        verdict = "n/a" if ok is None else "MET" if ok else "NOT MET"
        checks.append({"target": name, "verdict": verdict, "figures": figures})

    for label, path, key in (
        ("embedded (whole CLI run)", "cli", "peak_total_mb"),
        ("Airbyte (cut and publish child)", "airbyte", "child_peak_mb"),
    ):
        peaks = {s: _peak(_succeeded(of[s], path), path, key) for s in sizes}
        known = {s: p for s, p in peaks.items() if p}
        text = ", ".join(f"{s / 1e6:g}M {p:.0f} MB" for s, p in known.items()) or "not measured"
        check(
            f"peak RSS under {TARGET_RSS_MB} MB, {label}",
            all(p < TARGET_RSS_MB for p in known.values()) if known else None,
            text,
        )
        if len(known) >= 2:
            low, high = min(known), max(known)
            growth = known[high] / known[low] - 1
            check(
                f"peak RSS within {TARGET_RSS_GROWTH:.0%} from {low / 1e6:g}M to "
                f"{high / 1e6:g}M rows, {label}",
                abs(growth) <= TARGET_RSS_GROWTH,
                f"{growth:+.1%}",
            )
        else:
            check(f"peak RSS within {TARGET_RSS_GROWTH:.0%} across sizes, {label}", None,
                  "needs two sizes")  # fmt: skip
    for size in sizes:
        raw, sync = _median(of[size], "raw", "seconds"), _median(of[size], "cli", "sync_s")
        check(
            f"embedded sync >= {TARGET_SYNC_VS_RAW} of the raw read's rows/s, {size / 1e6:g}M",
            raw / sync >= TARGET_SYNC_VS_RAW if raw and sync else None,
            f"{raw / sync:.2f} (sync {sync:.1f} s, raw {raw:.1f} s)" if raw and sync else "-",
        )
    if 2_000_000 in of:
        wall, sync = (
            _median(of[2_000_000], "cli", "wall_s"),
            _median(of[2_000_000], "cli", "sync_s"),
        )
        check(
            f"2M CLI run <= {TARGET_CLI_VS_SYNC:g}x its sync",
            wall / sync <= TARGET_CLI_VS_SYNC if wall and sync else None,
            f"{wall / sync:.2f}x ({wall:.1f} s run, {sync:.1f} s sync)" if wall and sync else "-",
        )
    wrong = [
        f"{r['rows']:,} rep {r['rep']} {path}: {r[path].get('error') or r[path].get('status')}"
        for r in runs
        for path in ("raw", "cli", "airbyte")
        if path in r and (r[path].get("error") or r[path].get("status", "ok") != "ok")
    ]
    published = [
        r[path]["published_rows"] == r["rows"]
        for r in runs
        for path in ("cli", "airbyte")
        if path in r and r[path].get("published_rows") is not None
    ]
    check(
        "every published partition holds exactly its size's rows, and every run succeeded",
        (all(published) and not wrong) if published or wrong else None,
        "; ".join(wrong) or f"{len(published)} partition(s) checked",
    )
    top = max(sizes) if sizes else 0
    if top >= 50_000_000:
        cut = _peak(of[top], "airbyte", "cut_publish_s")
        statuses = [r["airbyte"]["status"] for r in of[top] if "airbyte" in r]
        check(
            f"Airbyte cut and publish of the {top / 1e6:g}M day landed twice < "
            f"{TARGET_CUT_S / 60:g} min",
            (cut < TARGET_CUT_S) if cut is not None else (False if statuses else None),
            f"{cut:.0f} s" if cut is not None else "; ".join(statuses) or "not measured",
        )
    else:
        check(f"Airbyte cut of the 50M day landed twice < {TARGET_CUT_S / 60:g} min", None,
              "no 50M size in this run")  # fmt: skip
    return checks


def _cli_notes(runs: list[dict[str, Any]]) -> str:
    def median(key: str) -> float:
        return _median(runs, "cli", key) or 0.0

    def peak(key: str) -> float:
        return _peak(runs, "cli", key) or 0.0

    return (
        f"run/sync {median('wall_s') / median('sync_s'):.2f}x: startup {median('startup_s'):.0f} s,"
        f" run {median('run_s'):.0f} s, shutdown {median('shutdown_s'):.0f} s (the CLI's log); "
        f"{peak('step_processes'):.0f} step process(es) besides the CLI, "
        f"{peak('helper_processes'):.0f} log-capture helpers ({peak('helper_mb'):.0f} MB); "
        f"largest process {peak('peak_process_mb'):.0f} MB "
        f"(ru_maxrss {peak('ru_maxrss_mb'):.0f} MB)"
    )


def _cache_state(runs: list[dict[str, Any]], size: int, cache: dict[str, Any]) -> str:
    """Whether the day came from the buffer pool or from disk, from the server's counters."""
    of = [r for r in runs if r["rows"] == size and "raw" in r]
    read = statistics.median(r["raw"]["mb_from_disk"] for r in of) if of else None
    day, pool = cache["day_mb_estimate"], cache["buffer_pool_mib"]
    if read is None:
        state = "not measured (no raw read)"
    elif read <= 0.1 * day:
        state = "warm: the raw reads found the day in the buffer pool"
    elif read >= 0.5 * day:
        state = "cold: the reads went to disk" + (
            " (the day does not fit the buffer pool)" if day > pool else ""
        )
    else:
        state = "partly cached"
    return (
        f"buffer pool {pool:,} MiB, the day about {day:,} MB of data and indexes (table "
        f"{cache['table_mb']:,} MB); the server read {read or 0:,.0f} MB from disk during a raw "
        f"read (its counters are server-wide: a concurrent load counts too), and the raw read "
        f"ran right before each CLI run: {state}. The server opens its files with O_DIRECT, so "
        f"the OS page cache holds none of the table. The window is read by {cache['plan']} "
        f"({cache['statistics']} statistics)"
    )


def print_report(
    runs: list[dict[str, Any]], caches: dict[int, dict[str, Any]], checks: list[dict[str, Any]]
) -> None:
    print("\n| rows | path | seconds | rows/s | peak RSS MB | ratio to raw read | notes |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for size in sorted({r["rows"] for r in runs}):
        of = [r for r in runs if r["rows"] == size]
        raw_s = _median(of, "raw", "seconds")

        def line(
            path: str,
            seconds: float | None,
            rss: str,
            notes: str,
            *,
            size: int = size,
            raw_s: float | None = raw_s,
        ) -> None:
            if seconds is None:
                print(f"| {size:,} | {path} | - | - | {rss} | - | {notes} |")
                return
            ratio = f"{raw_s / seconds:.2f}" if raw_s else "-"
            print(
                f"| {size:,} | {path} | {seconds:.2f} | {size / seconds:,.0f} | {rss} | "
                f"{ratio} | {notes} |"
            )

        reps = f"median of {len(of)}" if len(of) > 1 else "1 run"
        if raw_s is not None:
            disk = sum(r["raw"]["mb_from_disk"] for r in of) // len(of)
            line(
                "raw client read (`mariadb --quick --batch`)",
                raw_s,
                f"{_peak(of, 'raw', 'rss_mb') or 0:.0f}",
                f"{reps}; {disk:,} MB read from disk a run",
            )
        if any("cli" in r for r in of):
            sync = _median(of, "cli", "sync_s")
            wall = _median(of, "cli", "wall_s")
            line(
                "embedded sync in the CLI run (materialization `seconds`)",
                sync,
                "(in the run)",
                f"{reps}; published {_peak(of, 'cli', 'published_rows') or 0:,.0f} rows",
            )
            line(
                "`dagster asset materialize` (whole CLI run, wall)",
                wall,
                f"{_peak(of, 'cli', 'peak_total_mb') or 0:.0f}",
                _cli_notes(of) if wall and sync else "failed: see the logs",
            )
        if any("airbyte" in r for r in of):
            ok = [r for r in of if r["airbyte"].get("status") == "ok"]
            statuses = "; ".join(sorted({r["airbyte"]["status"] for r in of}))
            line(
                "Airbyte primary job (lands the day)",
                _median(of, "airbyte", "primary_job_s"),
                "(server)",
                "loopback server in the bench process",
            )
            line(
                "Airbyte backup job (failover: lands the day again)",
                _median(ok, "airbyte", "backup_job_s"),
                "(server)",
                "started and followed by the child, polling every 0.2 s",
            )
            landed = _peak(ok, "airbyte", "landed_rows")
            line(
                "Airbyte cut and publish (the day landed twice)",
                _median(ok, "airbyte", "cut_publish_s"),
                f"{_peak(of, 'airbyte', 'child_peak_mb') or 0:.0f}",
                f"landed {landed:,.0f} rows, published "
                f"{_peak(ok, 'airbyte', 'published_rows') or 0:,.0f}; child ru_maxrss "
                f"{_peak(of, 'airbyte', 'child_ru_maxrss_mb') or 0:.0f} MB"
                if ok and landed
                else statuses,
            )
    print()
    for size, cache in sorted(caches.items()):
        print(f"cache, {size:,} rows ({cache['day']}): {_cache_state(runs, size, cache)}")
    print("\nTargets:")
    for item in checks:
        print(f"- {item['verdict']}: {item['target']} ({item['figures']})")


if __name__ == "__main__":
    main()
