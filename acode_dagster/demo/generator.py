"""Deterministic demo rows for the ACODE tables, with optional anomalies.

Same (seed, table, day, rows, knobs) gives the same rows, whatever else was generated before:
each (table, day) draws from its own ``random.Random`` seeded with a string naming them, and the
few pools shared by all days (pharmacies, product catalogue) are derived from the seed alone.
That is what lets a demo day be re-loaded, or re-generated in a test, and come out identical.

Rows are tuples in ``table.column_names`` order holding the Python values a MySQL driver returns
for those columns (int, str, Decimal with the column's scale, date, datetime with microseconds,
None), so a test can compare what it generated with what it reads back, value for value.

Generation streams: memory stays bounded by the pools, not by the number of rows. The fiscal
lines are built from precomputed pools and integer arithmetic on centavos (Decimals come from a
cache) because the per-row cost decides whether a multi-million-row demo day takes seconds or
minutes.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any

from acode_dagster.demo import brazil
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    PRODUCTS,
    Column,
    Table,
    day_window,
)

Row = tuple[Any, ...]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Anomalies:
    """What to spoil in a generated (table, day); the default spoils nothing.

    ``null_share`` applies to the normal rows: exactly ``round(share * rows)`` of them get NULL in
    that column, chosen at random. ``volume_factor`` scales the normal row count (0.1 is a 90 %
    drop). ``extra_column`` is schema drift: the loader adds that column to the source table (the
    generator's rows never carry it). ``edge_rows`` appends a few rows that sit on the limits of
    the schema: first and last microsecond of the day, NULL in every nullable column, the largest
    and most negative decimals, the largest unsigned integers, strings at their declared length
    with accents, 4-byte emoji and the characters a bulk loader must escape.
    """

    null_share: Mapping[str, float] = field(default_factory=dict)
    volume_factor: float = 1.0
    extra_column: str | None = None
    edge_rows: bool = False

    def __post_init__(self) -> None:
        for column, share in self.null_share.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"null_share[{column!r}] must be within 0..1, got {share}")
        if not (math.isfinite(self.volume_factor) and self.volume_factor >= 0):
            raise ValueError(
                f"volume_factor must be a finite number >= 0, got {self.volume_factor}"
            )
        if self.extra_column is not None and not _IDENTIFIER.fullmatch(self.extra_column):
            raise ValueError(
                f"extra_column must be a plain SQL identifier (letters, digits, _), "
                f"got {self.extra_column!r}"
            )
        # A private read-only copy, so a caller mutating its dict cannot change a frozen value.
        object.__setattr__(self, "null_share", MappingProxyType(dict(self.null_share)))

    def __hash__(self) -> int:
        return hash(
            (tuple(sorted(self.null_share.items())), self.volume_factor, self.extra_column,
             self.edge_rows)
        )  # fmt: skip

    @property
    def is_clean(self) -> bool:
        return self == CLEAN


CLEAN = Anomalies()

# --- Identifiers and time ---------------------------------------------------------------------

ID_DAY_STRIDE = 1_000_000_000
"""Surrogate ids are day ordinal x stride + row index: unique across days, stable on re-load."""
EDGE_ID_OFFSET = 999_000_000
"""Edge rows take ids from here on within their day, clear of any realistic row count."""
_MICROSECONDS_PER_DAY = 86_400_000_000
_NUMBER_EPOCH = date(2000, 1, 1)

# Share of the day's processing per local hour: quiet nights (a batch of late sales), busy
# shop hours with peaks before lunch and after work.
_HOURLY_PROFILE = (2, 1, 1, 1, 1, 2, 4, 7, 9, 10, 11, 11,
                   10, 10, 10, 10, 10, 11, 11, 10, 8, 6, 4, 3)  # fmt: skip
_HOURLY_CUMULATIVE = tuple(
    sum(_HOURLY_PROFILE[:h]) / sum(_HOURLY_PROFILE) for h in range(len(_HOURLY_PROFILE) + 1)
)


def _rng(seed: int, *parts: object) -> random.Random:
    # String seeds are hashed with SHA-512 by random.Random: stable across runs and platforms.
    return random.Random(":".join([str(seed), *(str(p) for p in parts)]))


def _time_of_day_us(u: float) -> int:
    """Microsecond of the day at quantile ``u`` of the hourly profile (monotone in ``u``)."""
    hour = min(bisect_right(_HOURLY_CUMULATIVE, u) - 1, 23)
    low, high = _HOURLY_CUMULATIVE[hour], _HOURLY_CUMULATIVE[hour + 1]
    us = int((hour + (u - low) / (high - low)) * 3_600_000_000)
    return min(max(us, 0), _MICROSECONDS_PER_DAY - 1)


# --- Decimals ---------------------------------------------------------------------------------

_DECIMAL_CACHE_LIMIT = 400_000
_cents_cache: dict[int, Decimal] = {}
_ten_thousandths_cache: dict[int, Decimal] = {}


def _cents(value: int) -> Decimal:
    """Decimal with scale 2 for an amount in centavos (cached: amounts repeat a lot)."""
    cached = _cents_cache.get(value)
    if cached is None:
        if len(_cents_cache) > _DECIMAL_CACHE_LIMIT:
            _cents_cache.clear()
        cached = _cents_cache[value] = Decimal(value).scaleb(-2)
    return cached


def _ten_thousandths(value: int) -> Decimal:
    """Decimal with scale 4 for a value in units of 0.0001."""
    cached = _ten_thousandths_cache.get(value)
    if cached is None:
        if len(_ten_thousandths_cache) > _DECIMAL_CACHE_LIMIT:
            _ten_thousandths_cache.clear()
        cached = _ten_thousandths_cache[value] = Decimal(value).scaleb(-4)
    return cached


def _half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers (money rounding)."""
    return (2 * numerator + denominator) // (2 * denominator)


# --- Pools shared by all days -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pharmacy:
    cnpj: str
    name: str
    uf: str
    uf_code: int
    icms_rate_bp: int
    series: int


@dataclass(frozen=True, slots=True)
class Company:
    """A distributor or an institutional customer: the other side of some NF-e."""

    cnpj: str
    name: str
    uf: str


@dataclass(frozen=True, slots=True)
class Product:
    """One catalogue entry; fiscal lines sell these, the products table lists them."""

    index: int
    ean: str
    description: str
    manufacturer: str
    manufacturer_cnpj: str
    ncm: str
    category: str
    active_ingredient: str | None
    anvisa_registration: str | None
    pmc_cents: int
    active: bool
    update_period_days: int
    update_phase_days: int
    update_time_us: int

    @property
    def pmc(self) -> Decimal:
        return _cents(self.pmc_cents)

    def updated_at(self, day: date) -> datetime:
        """The last catalogue update on or before ``day``: products change every few weeks or
        months, so consecutive snapshots mostly agree, as real ones do."""
        since = (day.toordinal() - self.update_phase_days) % self.update_period_days
        update_day = day - timedelta(days=since)
        return datetime(update_day.year, update_day.month, update_day.day) + timedelta(
            microseconds=self.update_time_us
        )


PHARMACY_POOL_SIZE = 600


def _random_cnpj(rng: random.Random, branch: int = 1) -> str:
    return brazil.cnpj_with_check_digits(f"{rng.randrange(1, 10**8):08d}{branch:04d}")


@lru_cache(maxsize=8)
def pharmacies(seed: int = 42) -> tuple[Pharmacy, ...]:
    """The network's pharmacies: each its own company (a CNPJ root), a few with branches."""
    rng = _rng(seed, "pharmacies")
    ufs = brazil.weighted(list(brazil.UF_PHARMACY_WEIGHTS.items()))
    seen: set[str] = set()
    pool: list[Pharmacy] = []
    while len(pool) < PHARMACY_POOL_SIZE:
        branch = 1 if rng.random() < 0.85 else rng.randint(2, 9)
        cnpj = _random_cnpj(rng, branch)
        if cnpj in seen:
            continue
        seen.add(cnpj)
        uf = brazil.UF_BY_ABBREVIATION[rng.choice(ufs)]
        name = (
            f"{rng.choice(brazil.PHARMACY_PREFIXES)} {rng.choice(brazil.PHARMACY_NAMES)} "
            f"{rng.choice(brazil.LEGAL_SUFFIXES)}"
        )
        series = rng.choice((1, 1, 1, 1, 1, 1, 2, 2, 3, 10))
        pool.append(Pharmacy(cnpj, name, uf.abbreviation, uf.code, uf.icms_rate_bp, series))
    return tuple(pool)


@lru_cache(maxsize=8)
def _companies(seed: int, kind: str) -> tuple[Company, ...]:
    rng = _rng(seed, kind)
    names = brazil.DISTRIBUTOR_NAMES if kind == "distributors" else brazil.RECIPIENT_NAMES
    return tuple(
        Company(_random_cnpj(rng), name, rng.choice(("SP", "MG", "RJ", "PR"))) for name in names
    )


@cache
def manufacturer_cnpj(name: str) -> str:
    """A valid, stable CNPJ for a manufacturer (made up: derived from the name, not looked up)."""
    return _random_cnpj(random.Random(f"manufacturer:{name}"))


@cache
def _manufacturer_anvisa_code(name: str) -> int:
    return random.Random(f"anvisa:{name}").randrange(1, 10_000)


def _product_ean(index: int, rng: random.Random) -> str:
    """A unique GTIN for catalogue entry ``index``.

    Each GTIN length maps indexes through an affine bijection (multiplier coprime to 10), so two
    entries never share a code, without a set of seen codes.
    """
    draw = rng.random()
    if draw < 0.03 and index < 100_000:
        return brazil.gtin(f"78{(index * 7919 + 12_345) % 10**5:05d}")  # GTIN-8
    gtin13_body = f"789{(index * 7_654_321 + 1_234_567) % 10**9:09d}"
    if draw < 0.05:
        return brazil.gtin(f"1{gtin13_body}")  # GTIN-14 (a box of units)
    if draw < 0.06:
        return brazil.gtin(f"0{(index * 7_654_321 + 7) % 10**10:010d}")  # GTIN-12, imported
    return brazil.gtin(gtin13_body)


def _retail_price(cents: float) -> int:
    """Prices end in 9 centavos, as shelf prices do."""
    return max(int(cents) // 10 * 10 + 9, 99)


def _make_product(seed: int, index: int) -> Product:
    rng = _rng(seed, "catalogue", index)
    ean = _product_ean(index, rng)
    if rng.random() < 0.8:
        medicine = rng.choice(brazil.MEDICINES)
        slot = rng.randrange(len(medicine.presentations))
        presentation, reference_price = medicine.presentations[slot]
        ingredient: str | None = medicine.active_ingredient
        if medicine.reference and rng.random() < 0.2:
            brand, manufacturer = medicine.reference
            category, description = brazil.MEDICINE_CATEGORIES[2], f"{brand} {presentation}"
            price = _retail_price(reference_price * rng.uniform(0.95, 1.05))
        else:
            manufacturer = rng.choice(brazil.MANUFACTURERS_GENERICS)
            generic = rng.random() < 0.7
            category = brazil.MEDICINE_CATEGORIES[0 if generic else 1]
            description = f"{ingredient} {presentation} - {manufacturer}"
            description += " (genérico)" if generic else ""
            price = _retail_price(
                reference_price * rng.uniform(*((0.45, 0.65) if generic else (0.7, 0.9)))
            )
        ncm = medicine.ncm
        registration: str | None = brazil.anvisa_registration(
            brazil.ANVISA_CATEGORY["medicamento"],
            _manufacturer_anvisa_code(manufacturer),
            rng.randrange(10_000),
            slot + 1,
        )
    else:
        item = rng.choice(brazil.CONSUMER_PRODUCTS)
        manufacturer = rng.choice(item.manufacturers)
        description = f"{item.description} - {manufacturer}"
        category, ncm, ingredient = item.category, item.ncm, None
        price = _retail_price(item.price_cents * rng.uniform(0.85, 1.25))
        registration = (
            brazil.anvisa_registration(
                brazil.ANVISA_CATEGORY[item.anvisa_class],
                _manufacturer_anvisa_code(manufacturer),
                rng.randrange(10_000),
                rng.randint(1, 20),
            )
            if item.anvisa_class
            else None
        )
    period = rng.randint(20, 240)
    return Product(
        index=index,
        ean=ean,
        description=description,
        manufacturer=manufacturer,
        manufacturer_cnpj=manufacturer_cnpj(manufacturer),
        ncm=ncm,
        category=category,
        active_ingredient=ingredient,
        anvisa_registration=registration,
        pmc_cents=price,
        active=rng.random() < 0.96,
        update_period_days=period,
        update_phase_days=rng.randrange(period),
        update_time_us=rng.randrange(_MICROSECONDS_PER_DAY),
    )


@lru_cache(maxsize=8)
def catalogue(seed: int = 42, size: int = PRODUCTS.demo_daily_rows) -> tuple[Product, ...]:
    """The product catalogue: ``size`` products with unique EANs.

    Entry i depends only on (seed, i), so a smaller catalogue is a prefix of a larger one and a
    fiscal line generated against one size references an EAN of any larger one too.
    """
    if size < 0:
        raise ValueError(f"catalogue size must be >= 0, got {size}")
    return tuple(_make_product(seed, i) for i in range(size))


# --- Fiscal lines -----------------------------------------------------------------------------

_SAMPLER_SIZE = 1 << 16


def _lookup_table(weights: list[float]) -> tuple[int, ...]:
    """A table in which index i appears in proportion to ``weights[i]`` (each at least once):
    one uniform draw into it is the cheapest weighted choice there is."""
    total = sum(weights)
    table: list[int] = []
    for index, weight in enumerate(weights):
        table.extend([index] * max(1, round(weight / total * _SAMPLER_SIZE)))
    return tuple(table)


# Items per invoice (mean about 5), quantities in units of 0.0001, markdown off the maximum
# consumer price and discount on the line, both in percent.
_ITEMS = tuple(k for k, w in ((1, 21), (2, 17), (3, 13), (4, 10), (5, 8), (6, 6), (7, 5), (8, 4),
                              (9, 3), (10, 4), (12, 3), (15, 2), (20, 2), (25, 1), (30, 1))
               for _ in range(w))  # fmt: skip
_QUANTITY_WEIGHTS = ((10_000, 60), (20_000, 22), (30_000, 7), (40_000, 4), (50_000, 2),
                     (60_000, 2), (100_000, 1), (120_000, 1), (5_000, 1))  # fmt: skip
_MARKDOWN_WEIGHTS = ((0, 25), (5, 15), (10, 20), (15, 15), (20, 10), (25, 5), (30, 5), (40, 5))
_DISCOUNT_WEIGHTS = ((0, 70), (3, 8), (5, 10), (10, 7), (15, 3), (20, 2))
_PRICINGS = tuple(
    (q, m, d)
    for q, _ in _QUANTITY_WEIGHTS
    for m, _ in _MARKDOWN_WEIGHTS
    for d, _ in _DISCOUNT_WEIGHTS
)
"""(quantity in 0.0001 units, markdown off the PMC %, line discount %) combinations."""
_PRICING_SAMPLER = _lookup_table(
    [
        qw * mw * dw
        for _, qw in _QUANTITY_WEIGHTS
        for _, mw in _MARKDOWN_WEIGHTS
        for _, dw in _DISCOUNT_WEIGHTS
    ]
)
_OPERATION_SAMPLER = _lookup_table([op.weight for op in brazil.FISCAL_OPERATIONS])
_LINE_CACHE_LIMIT = 250_000


@lru_cache(maxsize=8)
def _sales_sampler(seed: int, size: int) -> tuple[tuple[Product, ...], tuple[int, ...]]:
    """Active products and a lookup table that draws them with Zipf-like popularity."""
    products = tuple(p for p in catalogue(seed, size) if p.active) or catalogue(seed, size)
    if not products:
        raise ValueError("fiscal lines need a catalogue of at least one product")
    rng = _rng(seed, "popularity")
    order = list(range(len(products)))
    rng.shuffle(order)
    weights = [0.0] * len(products)
    for rank, product_index in enumerate(order):
        weights[product_index] = 1.0 / (rank + 1) ** 0.8
    return products, _lookup_table(weights)


@dataclass(slots=True)
class _Invoice:
    """An NF-e as the fiscal-lines stream builds it; complements reuse it."""

    pharmacy: Pharmacy
    key: str
    number: int
    series: int
    fiscal_date: date
    processed: datetime
    operation: brazil.FiscalOperation
    rows: list[Row]
    total_cents: int


def _invoice_sizes(seed: int, day: date, rows: int) -> Iterator[int]:
    """Items per invoice for a day of ``rows`` fiscal lines; its own RNG, so that counting the
    invoices of a day (which complements need up front) costs no line generation."""
    rng = _rng(seed, FISCAL_LINES.name, day, "sizes")
    draw, items, left = rng.random, _ITEMS, rows
    while left > 0:
        size = min(items[int(draw() * len(items))], left)
        left -= size
        yield size


def count_invoices(day: date, fiscal_rows: int, *, seed: int = 42) -> int:
    """How many NF-e the day's ``fiscal_rows`` fiscal lines belong to."""
    return sum(1 for _ in _invoice_sizes(seed, day, fiscal_rows))


_Amounts = tuple[Row, int]


def _line_amounts(
    product: Product, pricing: tuple[int, int, int], rate_bp: int, reduced: bool
) -> _Amounts:
    """Quantidade to ACODE_Val_Total of a line, and its total in centavos.

    Integer arithmetic on centavos, rounded half up once per value, so every value fits its
    DECIMAL exactly and Val_Prod = round(q x unit, 2), total = Val_Prod - Val_Desconto hold.
    """
    quantity, markdown, discount = pricing
    unit_cents = _half_up(product.pmc_cents * (100 - markdown), 100)
    prod_cents = _half_up(quantity * unit_cents, 10_000)
    discount_cents = _half_up(prod_cents * discount, 100)
    total_cents = prod_cents - discount_cents
    base_cents = _half_up(total_cents * 2, 3) if reduced else total_cents
    icms_cents = _half_up(base_cents * rate_bp, 10_000)
    return (
        _ten_thousandths(quantity),
        _ten_thousandths(unit_cents * 100),
        _cents(prod_cents),
        _cents(discount_cents),
        _cents(icms_cents),
        _cents(total_cents),
    ), total_cents


def _icms_rate_bp(operation: brazil.FiscalOperation, pharmacy: Pharmacy) -> int:
    if operation.icms in ("internal", "reduced"):
        return pharmacy.icms_rate_bp
    return brazil.INTERSTATE_ICMS_RATE_BP if operation.icms == "interstate" else 0


def _fiscal_date_lag(microsecond: int, draw: float) -> int:
    """Days between the sale and its processing: night batches carry yesterday's sales."""
    if microsecond < 6 * 3_600_000_000:
        return 1 if draw < 0.55 else 2 if draw < 0.6 else 0
    return 0 if draw < 0.88 else 1 if draw < 0.98 else 2


class _FiscalDay:
    """One day's stream of NF-e and their lines: its RNG, numbering and caches."""

    def __init__(self, seed: int, day: date, rows: int, catalogue_size: int) -> None:
        if rows >= EDGE_ID_OFFSET:
            raise ValueError(f"at most {EDGE_ID_OFFSET - 1} fiscal lines a day, got {rows}")
        self.seed, self.day, self.rows = seed, day, rows
        self.rng = _rng(seed, FISCAL_LINES.name, day)
        self.pool = pharmacies(seed)
        self.products, self.sampler = _sales_sampler(seed, catalogue_size)
        self.fiscal_dates = (day, day - timedelta(days=1), day - timedelta(days=2))
        self.day_number = (day - _NUMBER_EPOCH).days % 9_000
        self.issued: dict[int, int] = {}
        self.prefixes: dict[int, brazil.NFeKeyPrefix] = {}

    def _number(self, pharmacy_index: int) -> tuple[int, int]:
        """(number, series) of the pharmacy's next NF-e of the day.

        Numbers run per pharmacy and day; past 100,000 NF-e in a day a pharmacy moves on to
        another series, so (CNPJ, series, number) never repeats across days.
        """
        counter = self.issued.get(pharmacy_index, 0)
        self.issued[pharmacy_index] = counter + 1
        series = self.pool[pharmacy_index].series + 100 * (counter // 100_000)
        return self.day_number * 100_000 + counter % 100_000 + 1, series

    def _key(self, pharmacy_index: int, lag: int, series: int, number: int) -> str:
        prefix = self.prefixes.get(pharmacy_index * 3 + lag)
        if prefix is None:
            pharmacy = self.pool[pharmacy_index]
            prefix = self.prefixes[pharmacy_index * 3 + lag] = brazil.nfe_key_prefix(
                uf=pharmacy.uf_code, emitted=self.fiscal_dates[lag], cnpj=pharmacy.cnpj
            )
        return brazil.nfe_key_from_prefix(
            prefix, series=series, number=number, code=self.rng.randrange(10**8)
        )

    def invoices(self) -> Iterator[_Invoice]:
        """The day's NF-e with their lines, in processing order; ``rows`` lines in total."""
        draw, randrange, pool, rows = self.rng.random, self.rng.randrange, self.pool, self.rows
        products, sampler = self.products, self.sampler
        sampler_size, pricing_count, product_count = len(sampler), len(_PRICINGS), len(products)
        pricing_sampler, pricing_draws = _PRICING_SAMPLER, len(_PRICING_SAMPLER)
        # Popular products sell in the same quantities, prices and tax situations again and
        # again: each distinct part of a line is built once.
        amounts: dict[int, _Amounts] = {}
        labels: list[Row | None] = [None] * (len(brazil.FISCAL_OPERATIONS) * product_count)
        start, _ = day_window(self.day)
        first_id = self.day.toordinal() * ID_DAY_STRIDE
        line = 0
        for size in _invoice_sizes(self.seed, self.day, rows):
            pharmacy_index = randrange(len(pool))
            pharmacy = pool[pharmacy_index]
            operation_index = _OPERATION_SAMPLER[int(draw() * len(_OPERATION_SAMPLER))]
            operation = brazil.FISCAL_OPERATIONS[operation_index]
            microsecond = _time_of_day_us((line + draw() * size) / rows)
            processed = start + timedelta(microseconds=microsecond)
            lag = _fiscal_date_lag(microsecond, draw())
            number, series = self._number(pharmacy_index)
            key = self._key(pharmacy_index, lag, series, number)
            rate_bp = _icms_rate_bp(operation, pharmacy)
            reduced = operation.icms == "reduced"
            amounts_base = (rate_bp * 2 + reduced) * product_count
            labels_base = operation_index * product_count
            header = (self.fiscal_dates[lag], processed, pharmacy.cnpj, pharmacy.name,
                      pharmacy.uf, key, number, series)  # fmt: skip
            invoice_rows: list[Row] = []
            total_cents = 0
            for item in range(1, size + 1):
                product_index = sampler[int(draw() * sampler_size)]
                pricing_index = pricing_sampler[int(draw() * pricing_draws)]
                amounts_key = (amounts_base + product_index) * pricing_count + pricing_index
                line_amounts = amounts.get(amounts_key)
                if line_amounts is None:
                    if len(amounts) > _LINE_CACHE_LIMIT:
                        amounts.clear()
                    line_amounts = amounts[amounts_key] = _line_amounts(
                        products[product_index], _PRICINGS[pricing_index], rate_bp, reduced
                    )
                line_labels = labels[labels_base + product_index]
                if line_labels is None:
                    product = products[product_index]
                    line_labels = labels[labels_base + product_index] = (
                        product.ean, product.description, operation.cfop, product.ncm,
                        operation.cst,
                    )  # fmt: skip
                total_cents += line_amounts[1]
                invoice_rows.append(
                    (first_id + line,) + header + (item,) + line_labels + line_amounts[0]
                )
                line += 1
            yield _Invoice(pharmacy, key, number, series, self.fiscal_dates[lag], processed,
                           operation, invoice_rows, total_cents)  # fmt: skip


def _fiscal_invoices(seed: int, day: date, rows: int, catalogue_size: int) -> Iterator[_Invoice]:
    if rows <= 0:
        return iter(())
    return _FiscalDay(seed, day, rows, catalogue_size).invoices()


_FISCAL_FIELDS = (
    "id", "Data", "Data_Processamento", "CNPJ", "Razao_Social", "UF", "Chave_NFe", "Numero_NF",
    "Serie_NF", "Item_NF", "EAN", "Descricao_Produto", "CFOP", "NCM", "CST", "Quantidade",
    "Val_Unitario", "Val_Prod", "Val_Desconto", "Val_ICMS", "ACODE_Val_Total",
)  # fmt: skip


def _fiscal_rows(seed: int, day: date, rows: int, catalogue_size: int) -> Iterator[Row]:
    for invoice in _fiscal_invoices(seed, day, rows, catalogue_size):
        yield from invoice.rows


# --- Products ---------------------------------------------------------------------------------

_PRODUCT_FIELDS = (
    "EAN", "Descricao", "Fabricante", "CNPJ_Fabricante", "NCM", "Categoria", "Principio_Ativo",
    "Registro_ANVISA", "Preco_Maximo_Consumidor", "Ativo", "Data_Atualizacao",
)  # fmt: skip


def _product_rows(seed: int, day: date, rows: int) -> Iterator[Row]:
    for p in catalogue(seed, rows):
        yield (p.ean, p.description, p.manufacturer, p.manufacturer_cnpj, p.ncm, p.category,
               p.active_ingredient, p.anvisa_registration, p.pmc, int(p.active),
               p.updated_at(day))  # fmt: skip


# --- NF-e complements -------------------------------------------------------------------------

_COMPLEMENT_FIELDS = (
    "id", "Chave_NFe", "Data", "Data_Processamento", "CNPJ_Emitente", "CNPJ_Destinatario",
    "Protocolo_Autorizacao", "Status_NFe", "Valor_Total_NF", "XML_Hash",
    "Informacoes_Complementares",
)  # fmt: skip


def _status(draw: float) -> str:
    return "autorizada" if draw < 0.97 else "cancelada" if draw < 0.995 else "denegada"


def _complementary_information(rng: random.Random, total_cents: int) -> str | None:
    if rng.random() < 0.35:
        return None
    template = rng.choice(brazil.COMPLEMENTARY_INFORMATION)
    share_bp = rng.randint(1500, 2300)
    taxes = _half_up(total_cents * share_bp, 10_000)
    return template.format(
        taxes=f"{taxes // 100:,}".replace(",", ".") + f",{taxes % 100:02d}",
        share=f"{share_bp // 100},{share_bp % 100:02d}",
        order=rng.randint(10_000, 999_999),
        clerk=rng.choice(brazil.CLERKS),
    )


def _complement_rows(
    seed: int, day: date, rows: int, fiscal_rows: int, catalogue_size: int
) -> Iterator[Row]:
    """One complement per NF-e of the day's fiscal lines, evenly picked when there are more
    NF-e than rows wanted; beyond the day's NF-e, purchase NF-e from distributors."""
    rng = _rng(seed, NFE_COMPLEMENTS.name, day)
    invoices_total = count_invoices(day, fiscal_rows, seed=seed) if fiscal_rows > 0 else 0
    start, end = day_window(day)
    first_id = day.toordinal() * ID_DAY_STRIDE
    distributors = _companies(seed, "distributors")
    recipients = _companies(seed, "recipients")
    emitted = 0
    if rows > 0 and invoices_total > 0:
        for position, invoice in enumerate(
            _fiscal_invoices(seed, day, fiscal_rows, catalogue_size)
        ):
            if (
                rows < invoices_total
                and (position * rows) // invoices_total == ((position + 1) * rows) // invoices_total
            ):
                continue
            # The XML arrives seconds to minutes after the lines, but never after the day ends.
            room = (end - invoice.processed) // timedelta(microseconds=1)
            processed = invoice.processed + timedelta(
                microseconds=rng.randrange(min(10**6, room // 2), min(300 * 10**6, room))
            )
            cfop = invoice.operation.cfop
            if cfop in ("5202", "5411"):  # back to the supplier
                recipient: str | None = rng.choice(distributors).cnpj
            elif rng.random() < 0.15:
                recipient = rng.choice(recipients).cnpj
            else:
                recipient = None  # a consumer, identified by CPF or not at all
            yield _complement_row(
                rng,
                row_id=first_id + emitted,
                key=invoice.key,
                fiscal_date=invoice.fiscal_date,
                processed=processed,
                issuer=invoice.pharmacy.cnpj,
                recipient=recipient,
                uf_code=invoice.pharmacy.uf_code,
                total_cents=invoice.total_cents,
                seed=seed,
            )
            emitted += 1
            if emitted == rows:
                return
    pool = pharmacies(seed)
    extra = rows - emitted
    for position in range(extra):
        distributor = rng.choice(distributors)
        pharmacy = rng.choice(pool)
        fiscal_date = day - timedelta(days=rng.randint(0, 3))
        processed = start + timedelta(
            microseconds=_time_of_day_us((position + rng.random()) / extra)
        )
        total_cents = rng.randint(50_000, 5_000_000)
        key = brazil.nfe_key(
            uf=distributor.uf,
            emitted=fiscal_date,
            cnpj=distributor.cnpj,
            series=rng.randint(1, 3),
            number=rng.randint(1, 999_999_999),
            code=rng.randrange(10**8),
        )
        yield _complement_row(
            rng,
            row_id=first_id + emitted,
            key=key,
            fiscal_date=fiscal_date,
            processed=processed,
            issuer=distributor.cnpj,
            recipient=pharmacy.cnpj,
            uf_code=brazil.UF_CODES[distributor.uf],
            total_cents=total_cents,
            seed=seed,
        )
        emitted += 1


def _complement_row(
    rng: random.Random,
    *,
    row_id: int,
    key: str,
    fiscal_date: date,
    processed: datetime,
    issuer: str,
    recipient: str | None,
    uf_code: int,
    total_cents: int,
    seed: int,
) -> Row:
    protocol = f"1{uf_code:02d}{fiscal_date:%y}{rng.randrange(10**10):010d}"
    xml_hash = hashlib.sha256(f"{seed}|{key}|{total_cents}".encode()).hexdigest()
    return (
        row_id, key, fiscal_date, processed, issuer, recipient, protocol, _status(rng.random()),
        _cents(total_cents), xml_hash, _complementary_information(rng, total_cents),
    )  # fmt: skip


# --- Edge rows --------------------------------------------------------------------------------

_TEXT_BYTES = 65_535
_LONG_PATTERN = "💊Ação São João — Pão de Açúcar ÁÉÍÓÚ ãõ ç ü ñ Ñandú 😀 "
_ESCAPES = "\\N\t\\\n\r'\"%_; fim"
"""What a tab-separated bulk load must escape: a literal backslash-N, tab, backslash, newline,
carriage return, and SQL quote and wildcard characters."""
_ACCENTS = "ÇÃÕÉÊÍÓÔÚÜ àáâãçéêíóôõúü"
_EMOJI = "Farmácia 💊 São João 🇧🇷 ✓"


def _cut(text: str, length: int | None) -> str:
    # CHAR columns drop trailing spaces on read, so an edge string never ends with one.
    return (text if length is None else text[:length]).rstrip(" ")


def _longest(length: int | None) -> str:
    """A string at the column's declared length (characters), or at TEXT's 65,535 bytes."""
    if length is not None:
        text = (_LONG_PATTERN * (length // len(_LONG_PATTERN) + 1))[:length]
        return text[:-1] + "ç" if text.endswith(" ") else text
    repeats = _TEXT_BYTES // len(_LONG_PATTERN.encode()) + 1
    encoded = (_LONG_PATTERN * repeats).encode()[:_TEXT_BYTES]
    text = encoded.decode(errors="ignore").rstrip(" ")
    return text + "x" * (_TEXT_BYTES - len(text.encode()))


def _integer_limits(mysql_type: str) -> tuple[int, int]:
    spelled = " ".join(mysql_type.upper().split())
    bits = {"TINYINT": 8, "SMALLINT": 16, "MEDIUMINT": 24, "INT": 32, "BIGINT": 64}
    base = re.sub(r"\(\d+\)", "", spelled.split()[0])
    if "UNSIGNED" in spelled:
        return 0, 2 ** bits[base] - 1
    return -(2 ** (bits[base] - 1)), 2 ** (bits[base] - 1) - 1


def _edge_values(table: Table, column: Column, day: date) -> list[Any]:
    """The values edge rows cycle through for one column, NULL first when the column admits it."""
    spelled = " ".join(column.mysql_type.upper().split())
    start, end = day_window(day)
    values: list[Any]
    if decimal := re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", spelled):
        precision, scale = int(decimal[1]), int(decimal[2])
        largest = Decimal(10**precision - 1).scaleb(-scale)
        smallest = Decimal(1).scaleb(-scale)
        values = [largest, -largest, Decimal(0).scaleb(-scale), smallest, -smallest]
    elif spelled == "TINYINT(1)":  # MySQL's BOOLEAN
        values = [1, 0]
    elif re.match(r"(TINY|SMALL|MEDIUM|BIG)?INT\b", spelled):
        low, high = _integer_limits(spelled)
        values = [high, low, 1] if low == 0 else [high, low, 0]
    elif spelled.startswith(("CHAR", "VARCHAR")) or spelled == "TEXT":
        length = column.max_length
        values = [_longest(length), _cut(_ESCAPES, length), "", _cut(_ACCENTS, length),
                  _cut(_EMOJI, length)]  # fmt: skip
    elif spelled == "DATE":
        values = [day, day - timedelta(days=1)]
    elif spelled.startswith("DATETIME"):
        values = [
            start,
            end - timedelta(microseconds=1),
            start + timedelta(hours=12, microseconds=1),
        ]
    else:
        raise ValueError(f"no edge values for {table.name}.{column.name} ({column.mysql_type})")
    return [None, *values] if column.nullable else values


def _edge_key(column: Column, day: date, position: int) -> Any:
    if re.match(r"(TINY|SMALL|MEDIUM|BIG)?INT\b", column.mysql_type.upper()):
        return day.toordinal() * ID_DAY_STRIDE + EDGE_ID_OFFSET + position
    length = column.max_length or 14
    if position == 0:
        return "9" * length
    # Distinct digits keep keys distinct under an accent- and case-insensitive collation.
    return "💊é" + f"{position:0{length - 2}d}" if length > 2 else f"{position:0{length}d}"


def edge_rows(table: Table, day: date) -> list[Row]:
    """Rows on the limits of the schema for (table, day); see :class:`Anomalies`."""
    columns = [None if c.name == table.key else _edge_values(table, c, day) for c in table.columns]
    count = max(len(v) for v in columns if v is not None)
    return [
        tuple(
            _edge_key(column, day, position) if values is None
            else values[position % len(values)]
            for column, values in zip(table.columns, columns, strict=True)
        )
        for position in range(count)
    ]  # fmt: skip


# --- Public API -------------------------------------------------------------------------------


def normal_row_count(
    table: Table,
    day: date,
    rows: int | None = None,
    *,
    seed: int = 42,
    anomalies: Anomalies = CLEAN,
    fiscal_rows: int | None = None,
) -> int:
    """How many rows :func:`generate_rows` yields before its edge rows."""
    if rows is None and table.name == NFE_COMPLEMENTS.name:
        base = count_invoices(
            day, FISCAL_LINES.demo_daily_rows if fiscal_rows is None else fiscal_rows, seed=seed
        )
    else:
        base = table.demo_daily_rows if rows is None else rows
    if base < 0:
        raise ValueError(f"rows must be >= 0, got {base}")
    return round(base * anomalies.volume_factor)


_Builder = Callable[[int, date, int, int, int], Iterator[Row]]
_BUILDERS: dict[str, tuple[tuple[str, ...], _Builder]] = {
    FISCAL_LINES.name: (_FISCAL_FIELDS, lambda s, d, n, f, c: _fiscal_rows(s, d, n, c)),
    PRODUCTS.name: (_PRODUCT_FIELDS, lambda s, d, n, f, c: _product_rows(s, d, n)),
    NFE_COMPLEMENTS.name: (_COMPLEMENT_FIELDS, _complement_rows),
}


def _shaper(table: Table, fields: tuple[str, ...]) -> Callable[[Row], Row] | None:
    """Maps the builder's field order onto the table's columns; None when they already agree.

    A column the builder does not know (one added to ``tables.py`` later) is NULL if nullable,
    and refused up front if not, naming what to teach the generator.
    """
    if table.column_names == fields:
        return None
    positions: list[int | None] = []
    for column in table.columns:
        if column.name in fields:
            positions.append(fields.index(column.name))
        elif column.nullable:
            positions.append(None)
        else:
            raise ValueError(
                f"the demo generator cannot fill NOT NULL column {table.name}.{column.name}; "
                "teach acode_dagster.demo.generator about it"
            )
    return lambda row: tuple(None if p is None else row[p] for p in positions)


def generate_rows(
    table: Table,
    day: date,
    rows: int | None = None,
    *,
    seed: int = 42,
    anomalies: Anomalies = CLEAN,
    catalogue_size: int | None = None,
    fiscal_rows: int | None = None,
) -> Iterator[Row]:
    """Stream the demo rows of ``table`` for ``day``, tuples in ``table.column_names`` order.

    ``rows`` is the day's normal row count before ``anomalies.volume_factor``; None means
    ``table.demo_daily_rows``, except for the NF-e complements, where None means one per NF-e
    of the day's fiscal lines. ``catalogue_size`` is the size of the catalogue the fiscal lines
    sell from (default ``PRODUCTS.demo_daily_rows``; pass the products table's row count so
    every EAN sold is in the catalogue). ``fiscal_rows`` is, for the complements, how many
    fiscal lines the day has (default ``FISCAL_LINES.demo_daily_rows``; pass what was loaded,
    volume anomalies included, so complements match the loaded NF-e keys).
    """
    try:
        fields, builder = _BUILDERS[table.name]
    except KeyError:
        raise ValueError(
            f"no demo generator for table {table.name!r}; known: {', '.join(_BUILDERS)}"
        ) from None
    shape = _shaper(table, fields)
    for column in anomalies.null_share:
        if column not in table.column_names:
            raise ValueError(f"null_share names {column!r}, which {table.name} does not have")
        if not table.column(column).nullable:
            raise ValueError(f"null_share names {table.name}.{column}, which is NOT NULL")
    count = normal_row_count(
        table, day, rows, seed=seed, anomalies=anomalies, fiscal_rows=fiscal_rows
    )
    fiscal = FISCAL_LINES.demo_daily_rows if fiscal_rows is None else fiscal_rows
    sizes = PRODUCTS.demo_daily_rows if catalogue_size is None else catalogue_size
    stream = builder(seed, day, count, fiscal, sizes)
    if shape is not None:
        stream = map(shape, stream)
    if anomalies.null_share:
        stream = _with_nulls(
            stream, table, day=day, count=count, seed=seed, shares=anomalies.null_share
        )
    if anomalies.edge_rows:
        stream = _then(stream, edge_rows(table, day))
    return stream


def _then(first: Iterator[Row], rest: list[Row]) -> Iterator[Row]:
    yield from first
    yield from rest


def _with_nulls(
    stream: Iterator[Row],
    table: Table,
    *,
    day: date,
    count: int,
    seed: int,
    shares: Mapping[str, float],
) -> Iterator[Row]:
    """NULL in exactly round(share x count) rows per column; the choice has its own RNG so
    that adding a NULL anomaly leaves every other value of the day unchanged."""
    nulls_at: dict[int, list[int]] = {}
    for column, share in shares.items():
        position = table.column_names.index(column)
        chosen = _rng(seed, table.name, day, "nulls", column).sample(
            range(count), round(share * count)
        )
        for row_index in chosen:
            nulls_at.setdefault(row_index, []).append(position)
    for row_index, row in enumerate(stream):
        positions = nulls_at.get(row_index)
        if positions is None:
            yield row
        else:
            values = list(row)
            for position in positions:
                values[position] = None
            yield tuple(values)
