"""The three ACODE tables, described once as data.

Everything table-specific in the platform (the extraction query, the Parquet schema, the assets,
the checks and the demo data) is derived from the descriptions below, so adding a column or a
table is an edit here and nowhere else. The descriptions must agree with the source contract,
``acode_dagster/sql/acode_source_schema.sql`` (a copy of ``shared/acode_source_schema.sql``); a
test parses that file and compares it column by column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

SOURCE_TIMEZONE = ZoneInfo("America/Sao_Paulo")
"""The source writes its DATETIMEs as local time of this zone; partitions are its local days."""

SOURCE_DATABASE = "acode_farmarcas"
BACKUP_DATABASE = "acode_farmarcas_replica"
BRONZE_DATABASE = "bronze_acode"
BRONZE_ORIGIN = "airbyte"

_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
_SIZED_STRING = re.compile(r"(CHAR|VARCHAR)\((\d+)\)")
_INTEGERS: dict[str, pa.DataType] = {
    "TINYINT": pa.int8(),
    "TINYINT UNSIGNED": pa.uint8(),
    "SMALLINT": pa.int16(),
    "SMALLINT UNSIGNED": pa.uint16(),
    "INT": pa.int32(),
    "INT UNSIGNED": pa.uint32(),
    "BIGINT": pa.int64(),
    "BIGINT UNSIGNED": pa.uint64(),
}


def arrow_type_for(mysql_type: str) -> pa.DataType:
    """The exact Arrow type for a MySQL column type as the contract spells it.

    Exact means lossless: DECIMAL stays decimal (never float), unsigned integers stay unsigned,
    DATETIME(6) keeps its microseconds and its local wall-clock (a naive timestamp, because the
    source stores local time without a zone and converting would invent an offset).
    """
    spelled = " ".join(mysql_type.upper().split())
    spelled = re.sub(r"^(TINYINT|SMALLINT|INT|BIGINT)\(\d+\)", r"\1", spelled)
    if spelled in _INTEGERS:
        return _INTEGERS[spelled]
    if match := _DECIMAL.fullmatch(spelled):
        return pa.decimal128(int(match[1]), int(match[2]))
    if _SIZED_STRING.fullmatch(spelled) or spelled == "TEXT":
        return pa.string()
    if spelled == "DATE":
        return pa.date32()
    if spelled in ("DATETIME(6)", "DATETIME"):
        return pa.timestamp("us")
    raise ValueError(
        f"no Arrow mapping for MySQL type {mysql_type!r}; add one to acode_dagster.tables"
    )


@dataclass(frozen=True)
class Column:
    """One source column. ``mysql_type`` is spelled as in the contract."""

    name: str
    mysql_type: str
    nullable: bool
    description: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type_for(self.mysql_type)

    @property
    def max_length(self) -> int | None:
        """Declared character length of CHAR/VARCHAR columns, else None."""
        match = _SIZED_STRING.fullmatch(self.mysql_type.upper())
        return int(match[2]) if match else None


@dataclass(frozen=True)
class Thresholds:
    """When the checks of a table warn and fail. Exact decimals, so 5.00 % is an edge, not a
    float that happens to round either way."""

    null_warn: Decimal = Decimal("0.01")
    """Share of NULLs in a critical column from which null_share warns."""
    null_error: Decimal = Decimal("0.05")
    """... and from which it fails (ERROR, blocking)."""
    volume_error_below: Decimal = Decimal("0.50")
    """Rows over the trailing median below which volume fails (zero rows always fails)."""
    volume_warn_below: Decimal = Decimal("0.70")
    volume_warn_above: Decimal = Decimal("1.50")
    volume_window: int = 7
    """How many earlier landed partitions the median is taken over."""
    volume_min_history: int = 3
    """Fewer earlier partitions than this and only the zero-rows rule applies."""
    volume_lookback_days: int = 28
    """How far back the earlier partitions are looked for (gaps are skipped)."""
    freshness_warn: timedelta = timedelta(hours=20)
    """Time without a new good partition after which freshness warns ..."""
    freshness_fail: timedelta = timedelta(hours=25)
    """... and fails (ERROR, paged)."""

    def __post_init__(self) -> None:
        assert 0 <= self.null_warn <= self.null_error <= 1
        assert 0 <= self.volume_error_below <= self.volume_warn_below <= 1 <= self.volume_warn_above
        assert 1 <= self.volume_min_history <= self.volume_window <= self.volume_lookback_days
        assert timedelta(0) < self.freshness_warn <= self.freshness_fail


@dataclass(frozen=True)
class BusinessSpec:
    """The business figures of a partition, computed while its rows are written
    (:mod:`acode_dagster.observability.business`) and published as the materialization's
    metadata: exact sums, distinct counts and rows per category of the named columns."""

    sums: tuple[str, ...] = ()
    """DECIMAL (or integer) columns summed exactly, NULLs skipped as SQL's SUM skips them."""
    distinct: tuple[str, ...] = ()
    """Columns whose distinct non-NULL values are counted (byte-exact, not the collation's)."""
    rows_by: tuple[str, ...] = ()
    """Low-cardinality columns whose rows are counted per value (NULL under "(null)")."""
    value_column: str | None = None
    """The money column the weekly report calls the partition's value; one of ``sums``."""

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.sums, *self.distinct, *self.rows_by)


@dataclass(frozen=True)
class Table:
    """A bronze table: its columns, how a day is cut out of it, and what matters in it."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: str
    """The column that identifies a row (unique within a partition)."""
    partition_column: str | None
    """DATETIME column whose local day defines partition D; None for a full snapshot."""
    critical_columns: tuple[str, ...]
    expected_daily_rows: int
    """Production volume of one partition, the order of magnitude the checks expect."""
    demo_daily_rows: int
    """Rows a demo day gets by default: small enough for a laptop, large enough to plot."""
    tags: dict[str, str] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    business: BusinessSpec = field(default_factory=BusinessSpec)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        assert len(set(names)) == len(names), f"{self.name}: duplicate column"
        for wanted in (self.key, self.partition_column, *self.critical_columns):
            assert wanted is None or wanted in names, f"{self.name}: unknown column {wanted}"
        for wanted in self.business.columns:
            assert wanted in names, f"{self.name}: unknown business column {wanted}"
        for summed in self.business.sums:
            kind = self.column(summed).arrow_type
            assert pa.types.is_decimal(kind) or pa.types.is_integer(kind), (
                f"{self.name}: business sum of {summed}, which is not a number"
            )
        value = self.business.value_column
        assert value is None or value in self.business.sums, (
            f"{self.name}: value column {value} is not one of the business sums"
        )

    @property
    def value_column(self) -> str | None:
        """The money column the weekly report calls "value" (None: the table has none)."""
        return self.business.value_column

    @property
    def is_snapshot(self) -> bool:
        return self.partition_column is None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns],
            metadata={"acode.table": self.name},
        )

    def where_sql(self, day: date) -> str:
        """The half-open window of partition ``day`` on local wall-clock time, or '' for a snapshot.

        Literals, not parameters, because the Arrow reader takes a plain query; they come from a
        ``date`` and cannot carry anything but digits, dashes and colons.
        """
        if self.partition_column is None:
            return ""
        start, end = day_window(day)
        return (
            f" WHERE `{self.partition_column}` >= '{start:%Y-%m-%d %H:%M:%S}'"
            f" AND `{self.partition_column}` < '{end:%Y-%m-%d %H:%M:%S}'"
        )

    def select_sql(self, day: date) -> str:
        """The extraction query for partition ``day``.

        The column list is explicit so that a column added at the source (schema drift) never
        leaks into bronze unannounced; the window is one range scan of the partition column's
        index.
        """
        columns = ", ".join(f"`{c}`" for c in self.column_names)
        order = f" ORDER BY `{self.key}`" if self.is_snapshot else ""
        return f"SELECT {columns} FROM `{self.name}`{self.where_sql(day)}{order}"

    def read_orders(self) -> tuple[tuple[str, ...], ...]:
        """The orders a window can be read in chunk by chunk (:meth:`chunk_sql`); empty when it
        is read in one query.

        Each is an index's own order, so a chunk resumes after the last row of the previous one
        with an index seek and no sort: the partition column's index, whose entries InnoDB keys
        by (column, primary key), for a day that is a sliver of the table; the primary key for a
        day the optimizer would rather scan the table for. Only for an integer key, whose
        literal carries nothing but digits; the catalogue (a string key, and a partition of
        about 150,000 rows) is read whole.
        """
        if self.partition_column is None or not pa.types.is_integer(
            self.column(self.key).arrow_type
        ):
            return ()
        return ((self.partition_column, self.key), (self.key,))

    def chunk_sql(
        self,
        day: date,
        order: tuple[str, ...],
        after: tuple[Any, ...] | None,
        limit: int,
        span: tuple[datetime, datetime] | None = None,
    ) -> str:
        """At most ``limit`` rows of partition ``day`` in ``order`` (one of :meth:`read_orders`),
        after the position ``after`` (the last row's values of ``order``; None at the start);
        only those whose partition column falls in ``span`` (a slice of the day) when given."""
        if order not in self.read_orders():
            raise ValueError(f"{self.name} is not read in chunks ordered by {order}")
        where = self.where_sql(day)
        if span is not None:
            start, end = day_window(day)
            if not start <= span[0] < span[1] <= end:
                raise ValueError(f"{span} is not a slice of partition {day}")
            where = (
                f" WHERE `{self.partition_column}` >= {_literal(span[0])}"
                f" AND `{self.partition_column}` < {_literal(span[1])}"
            )
        resume = ""
        if after is not None:
            literals = [_literal(value) for value in after]
            # (a, b) > (x, y) spelled out: both servers turn it into an index range.
            ors = [
                " AND ".join(
                    [f"`{c}` = {v}" for c, v in zip(order[:n], literals[:n], strict=True)]
                    + [f"`{order[n]}` > {literals[n]}"]
                )
                for n in range(len(order))
            ]
            resume = " AND (" + " OR ".join(f"({o})" for o in ors) + ")"
        columns = ", ".join(f"`{c}`" for c in self.column_names)
        by = ", ".join(f"`{c}`" for c in order)
        return (
            f"SELECT {columns} FROM `{self.name}`{where}{resume} ORDER BY {by} LIMIT {int(limit)}"
        )

    def count_sql(self, day: date) -> str:
        """Counts what :meth:`select_sql` returns, with the same window."""
        return f"SELECT COUNT(*) FROM `{self.name}`{self.where_sql(day)}"


def _literal(value: Any) -> str:
    """A resume position as SQL: from an int or a datetime, digits, dashes, colons, a dot."""
    if isinstance(value, datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S.%f}'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"no SQL literal for a resume position of type {type(value).__name__}")


def day_window(day: date) -> tuple[datetime, datetime]:
    """[D 00:00:00, D+1 00:00:00) in the source's local wall-clock time (naive, as stored)."""
    start = datetime(day.year, day.month, day.day)
    return start, start + timedelta(days=1)


def parse_partition_key(key: str) -> date:
    """A partition key is a local day, ``YYYY-MM-DD``; anything else is refused clearly."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", key or ""):
        raise ValueError(
            f"bad partition key {key!r}: expected a day as YYYY-MM-DD, for example 2026-11-20"
        )
    try:
        return date.fromisoformat(key)
    except ValueError as exc:
        raise ValueError(f"bad partition key {key!r}: {exc}; use a real calendar day") from None


def source_schema_sql() -> str:
    """The contract's DDL, shipped inside the package so the local stack can create the tables."""
    return resources.files("acode_dagster.sql").joinpath("acode_source_schema.sql").read_text()


def split_sql_statements(script: str) -> list[str]:
    """Split a SQL script into statements, dropping comments, honouring quotes.

    The driver runs one statement per call, and a naive split on ``;`` would break on a
    semicolon inside a COMMENT string.
    """
    token = re.compile(
        r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`"
        r"|(?P<comment>--[^\n]*|#[^\n]*|/\*.*?\*/)|(?P<end>;)|[^'\"`;#/-]+|.",
        re.S,
    )
    statements: list[str] = []
    current: list[str] = []
    for match in token.finditer(script):
        if match["comment"]:
            current.append(" ")
        elif match["end"]:
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(match[0])
    statements.append("".join(current).strip())
    return [s for s in statements if s]


def source_schema_statements() -> list[str]:
    """The contract's DDL as statements the driver can run one by one."""
    return split_sql_statements(source_schema_sql())


FISCAL_LINES = Table(
    name="farmarcas_si_analitico_diario",
    description=(
        "One row per fiscal sale line (NF-e item) of the pharmacy network: who sold (CNPJ), what "
        "(EAN, NCM), under which tax codes (CFOP, CST), for how much. Partition D holds the lines "
        "whose Data_Processamento falls on local day D (America/Sao_Paulo)."
    ),
    columns=(
        Column("id", "BIGINT UNSIGNED", False, "surrogate key of the line"),
        Column("Data", "DATE", False, "fiscal date of the sale"),
        Column("Data_Processamento", "DATETIME(6)", False, "when ACODE processed the line"),
        Column("CNPJ", "CHAR(14)", True, "pharmacy CNPJ, 14 digits"),
        Column("Razao_Social", "VARCHAR(150)", True, "pharmacy legal name"),
        Column("UF", "CHAR(2)", True, "state of the pharmacy"),
        Column("Chave_NFe", "CHAR(44)", True, "NF-e access key, 44 digits"),
        Column("Numero_NF", "INT UNSIGNED", True, "invoice number"),
        Column("Serie_NF", "SMALLINT UNSIGNED", True, "invoice series"),
        Column("Item_NF", "SMALLINT UNSIGNED", True, "item number within the invoice"),
        Column("EAN", "VARCHAR(14)", True, "GTIN-8/12/13/14 of the product"),
        Column("Descricao_Produto", "VARCHAR(200)", True, "product description on the invoice"),
        Column("CFOP", "CHAR(4)", True, "fiscal operation code"),
        Column("NCM", "CHAR(8)", True, "Mercosur product classification"),
        Column("CST", "CHAR(3)", True, "ICMS tax situation code"),
        Column("Quantidade", "DECIMAL(15,4)", True, "quantity sold"),
        Column("Val_Unitario", "DECIMAL(15,4)", True, "unit price"),
        Column("Val_Prod", "DECIMAL(15,2)", True, "gross value of the line"),
        Column("Val_Desconto", "DECIMAL(15,2)", True, "discount"),
        Column("Val_ICMS", "DECIMAL(15,2)", True, "ICMS tax"),
        Column("ACODE_Val_Total", "DECIMAL(15,2)", True, "net value as ACODE computes it"),
    ),
    key="id",
    partition_column="Data_Processamento",
    critical_columns=("CNPJ", "EAN"),
    expected_daily_rows=50_000_000,
    demo_daily_rows=20_000,
    tags={"domain": "fiscal", "grain": "sale_line"},
    business=BusinessSpec(
        sums=("ACODE_Val_Total", "Val_Prod"),
        distinct=("CNPJ", "EAN"),
        rows_by=("UF",),
        value_column="ACODE_Val_Total",
    ),
)

PRODUCTS = Table(
    name="farmarcas_si_analitico_diario_produtos",
    description=(
        "The product catalogue (EAN, description, manufacturer, classification, maximum consumer "
        "price). Partition D is a full snapshot of the catalogue taken when D is synced."
    ),
    columns=(
        Column("EAN", "VARCHAR(14)", False, "GTIN of the product"),
        Column("Descricao", "VARCHAR(200)", True, "product description"),
        Column("Fabricante", "VARCHAR(120)", True, "manufacturer"),
        Column("CNPJ_Fabricante", "CHAR(14)", True, "manufacturer CNPJ"),
        Column("NCM", "CHAR(8)", True, "Mercosur product classification"),
        Column("Categoria", "VARCHAR(60)", True, "category"),
        Column("Principio_Ativo", "VARCHAR(200)", True, "active ingredient"),
        Column("Registro_ANVISA", "CHAR(13)", True, "ANVISA registration number"),
        Column("Preco_Maximo_Consumidor", "DECIMAL(15,2)", True, "maximum consumer price (PMC)"),
        Column("Ativo", "TINYINT(1)", False, "1 when the product is active"),
        Column("Data_Atualizacao", "DATETIME(6)", False, "last update of the product"),
    ),
    key="EAN",
    partition_column=None,
    critical_columns=("EAN",),
    expected_daily_rows=150_000,
    demo_daily_rows=2_000,
    tags={"domain": "catalogue", "grain": "product"},
    # A snapshot: what is worth plotting is its size and make-up (manufacturers, how much is
    # still sold, per category), not a sum of prices, which means nothing.
    business=BusinessSpec(
        distinct=("CNPJ_Fabricante",),
        rows_by=("Ativo", "Categoria"),
    ),
)

NFE_COMPLEMENTS = Table(
    name="farmarcas_si_analitico_diario_complemento",
    description=(
        "NF-e / XML complements of the fiscal lines: issuer and recipient, authorization "
        "protocol, status, total and XML hash. Partition D holds the complements whose "
        "Data_Processamento falls on local day D (America/Sao_Paulo)."
    ),
    columns=(
        Column("id", "BIGINT UNSIGNED", False, "surrogate key"),
        Column("Chave_NFe", "CHAR(44)", False, "NF-e access key"),
        Column("Data", "DATE", False, "fiscal date"),
        Column("Data_Processamento", "DATETIME(6)", False, "when ACODE processed the NF-e"),
        Column("CNPJ_Emitente", "CHAR(14)", True, "issuer CNPJ"),
        Column("CNPJ_Destinatario", "CHAR(14)", True, "recipient CNPJ"),
        Column("Protocolo_Autorizacao", "CHAR(15)", True, "SEFAZ authorization protocol"),
        Column("Status_NFe", "VARCHAR(20)", True, "autorizada, cancelada, denegada"),
        Column("Valor_Total_NF", "DECIMAL(15,2)", True, "total value of the NF-e"),
        Column("XML_Hash", "CHAR(64)", True, "SHA-256 of the NF-e XML"),
        Column("Informacoes_Complementares", "TEXT", True, "free-text complementary information"),
    ),
    key="id",
    partition_column="Data_Processamento",
    critical_columns=("Chave_NFe",),
    expected_daily_rows=5_000_000,
    demo_daily_rows=4_000,
    tags={"domain": "fiscal", "grain": "nfe"},
    # One complement per NF-e, so distinct Chave_NFe would repeat the rows: issuers and
    # recipients say more.
    business=BusinessSpec(
        sums=("Valor_Total_NF",),
        distinct=("CNPJ_Emitente", "CNPJ_Destinatario"),
        rows_by=("Status_NFe",),
        value_column="Valor_Total_NF",
    ),
)

TABLES: tuple[Table, ...] = (FISCAL_LINES, PRODUCTS, NFE_COMPLEMENTS)
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}


def get_table(name: str) -> Table:
    try:
        return TABLES_BY_NAME[name]
    except KeyError:
        known = ", ".join(TABLES_BY_NAME)
        raise ValueError(f"unknown table {name!r}; the bronze tables are: {known}") from None


def last_complete_days(n_days: int, end_day: date | None = None) -> list[date]:
    """The ``n_days`` days ending with ``end_day`` (default: yesterday, São Paulo time)."""
    if n_days < 1:
        raise ValueError(f"n_days must be at least 1, got {n_days}")
    last = end_day or (datetime.now(SOURCE_TIMEZONE).date() - timedelta(days=1))
    return [last - timedelta(days=offset) for offset in range(n_days - 1, -1, -1)]
