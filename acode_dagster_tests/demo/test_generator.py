"""The demo generator: deterministic, realistic where it must be, extreme where asked."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from acode_dagster.demo import brazil
from acode_dagster.demo.generator import (
    EDGE_ID_OFFSET,
    ID_DAY_STRIDE,
    Anomalies,
    catalogue,
    count_invoices,
    edge_rows,
    generate_rows,
    normal_row_count,
    pharmacies,
)
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    PRODUCTS,
    TABLES,
    Column,
    Table,
    day_window,
)

DAY = date(2026, 11, 20)
FISCAL_ROWS = 3_000
CATALOGUE = 300

Row = tuple[Any, ...]


def as_dicts(table: Table, rows: list[Row]) -> list[dict[str, Any]]:
    return [dict(zip(table.column_names, row, strict=True)) for row in rows]


def fiscal(day: date = DAY, rows: int = FISCAL_ROWS, **kwargs: Any) -> list[dict[str, Any]]:
    kwargs.setdefault("catalogue_size", CATALOGUE)
    return as_dicts(FISCAL_LINES, list(generate_rows(FISCAL_LINES, day, rows, **kwargs)))


def assert_fits_schema(table: Table, row: Row) -> None:
    """Every value is of its column's Python kind and fits its declared size exactly."""
    for column, value in zip(table.columns, row, strict=True):
        where = f"{table.name}.{column.name} = {value!r:.80}"
        if value is None:
            assert column.nullable, where
            continue
        spelled = column.mysql_type.upper()
        if decimal := re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", spelled):
            precision, scale = int(decimal[1]), int(decimal[2])
            assert isinstance(value, Decimal), where
            assert value.as_tuple().exponent == -scale, where
            assert len(value.as_tuple().digits) <= precision, where
        elif "INT" in spelled:
            assert type(value) is int, where
            if "UNSIGNED" in spelled:
                assert value >= 0, where
        elif spelled.startswith("DATETIME"):
            assert type(value) is datetime and value.tzinfo is None, where
        elif spelled == "DATE":
            assert type(value) is date, where
        else:
            assert isinstance(value, str), where
            if column.max_length is not None:
                assert len(value) <= column.max_length, where
            else:
                assert len(value.encode()) <= 65_535, where
            if spelled.startswith("CHAR"):
                assert not value.endswith(" "), f"{where}: CHAR drops trailing spaces on read"


# --- Determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_same_inputs_same_rows_whatever_ran_before(table: Table) -> None:
    nullable = next(c.name for c in table.columns if c.nullable)
    knobs = Anomalies(null_share={nullable: 0.1}, edge_rows=True)
    first = list(generate_rows(table, DAY, 500, seed=7, anomalies=knobs))
    # Other days, seeds and sizes in between must not leak into (table, DAY).
    list(generate_rows(table, DAY + timedelta(days=1), 800, seed=7))
    list(generate_rows(table, DAY, 200, seed=8))
    catalogue(7, 1000)
    assert list(generate_rows(table, DAY, 500, seed=7, anomalies=knobs)) == first
    assert list(generate_rows(table, DAY, 500, seed=8)) != first[:500]


def test_catalogue_prefix_is_stable() -> None:
    assert catalogue(42, 100) == catalogue(42, 400)[:100]
    assert catalogue(42, 100) != catalogue(43, 100)


# --- Fiscal lines -----------------------------------------------------------------------------


def test_fiscal_lines_are_realistic_and_consistent() -> None:
    rows = list(generate_rows(FISCAL_LINES, DAY, FISCAL_ROWS, catalogue_size=CATALOGUE))
    assert len(rows) == FISCAL_ROWS
    for row in rows:
        assert_fits_schema(FISCAL_LINES, row)
    lines = as_dicts(FISCAL_LINES, rows)
    start, end = day_window(DAY)
    eans = {p.ean for p in catalogue(42, CATALOGUE)}
    invoices: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        assert None not in line.values(), "clean rows have no NULL"
        assert start <= line["Data_Processamento"] < end
        assert DAY - timedelta(days=2) <= line["Data"] <= DAY
        assert brazil.is_valid_cnpj(line["CNPJ"])
        key = brazil.parse_nfe_key(line["Chave_NFe"])
        assert key.cnpj == line["CNPJ"]
        assert key.uf_code == brazil.UF_CODES[line["UF"]]
        assert key.year_month == f"{line['Data']:%y%m}"
        assert (key.number, key.series, key.model) == (line["Numero_NF"], line["Serie_NF"], 55)
        assert line["EAN"] in eans and brazil.is_valid_gtin(line["EAN"])
        assert line["CFOP"] in brazil.CFOP
        assert line["NCM"] in brazil.NCM
        assert line["CST"] in brazil.CST_ICMS
        q, unit = line["Quantidade"], line["Val_Unitario"]
        assert line["Val_Prod"] == (q * unit).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert Decimal(0) <= line["Val_Desconto"] <= line["Val_Prod"]
        assert line["ACODE_Val_Total"] == line["Val_Prod"] - line["Val_Desconto"]
        if line["CST"] in ("060", "260", "040", "090"):
            assert line["Val_ICMS"] == 0
        else:
            assert 0 <= line["Val_ICMS"] <= line["ACODE_Val_Total"] * Decimal("0.23")
        invoices[line["Chave_NFe"]].append(line)
    ids = [line["id"] for line in lines]
    assert len(set(ids)) == len(ids) and min(ids) == DAY.toordinal() * ID_DAY_STRIDE
    # Several items per invoice, numbered 1..n, sharing the invoice's header.
    assert len(invoices) < len(lines) / 2
    for items in invoices.values():
        assert [i["Item_NF"] for i in items] == list(range(1, len(items) + 1))
        assert len({(i["CNPJ"], i["Data"], i["Data_Processamento"], i["CFOP"]) for i in items}) == 1
    # (CNPJ, series, number) identifies an invoice.
    assert len(
        {(i[0]["CNPJ"], i[0]["Serie_NF"], i[0]["Numero_NF"]) for i in invoices.values()}
    ) == (len(invoices))
    # Accented names come through as text, not escapes.
    assert any(re.search(r"[ãçéáíóú]", line["Razao_Social"]) for line in lines)
    # The day is covered, busier in shop hours than at night.
    hours = Counter(line["Data_Processamento"].hour for line in lines)
    assert len(hours) >= 20 and hours[11] > hours[3]
    assert any(line["Data_Processamento"].microsecond % 1000 for line in lines)


def test_ids_and_invoices_never_repeat_across_days() -> None:
    first, second = fiscal(DAY, 1000), fiscal(DAY + timedelta(days=1), 1000)
    assert not {r["id"] for r in first} & {r["id"] for r in second}
    assert not {r["Chave_NFe"] for r in first} & {r["Chave_NFe"] for r in second}
    numbers = {(r["CNPJ"], r["Serie_NF"], r["Numero_NF"]) for r in first}
    assert not numbers & {(r["CNPJ"], r["Serie_NF"], r["Numero_NF"]) for r in second}


def test_zero_rows_is_an_empty_day() -> None:
    assert list(generate_rows(FISCAL_LINES, DAY, 0)) == []
    assert list(generate_rows(NFE_COMPLEMENTS, DAY, None, fiscal_rows=0)) == []


# --- Products ---------------------------------------------------------------------------------


def test_products_are_a_valid_catalogue() -> None:
    rows = list(generate_rows(PRODUCTS, DAY, CATALOGUE))
    assert len(rows) == CATALOGUE
    products = as_dicts(PRODUCTS, rows)
    for row in rows:
        assert_fits_schema(PRODUCTS, row)
    eans = [p["EAN"] for p in products]
    assert len(set(eans)) == len(eans)
    assert all(brazil.is_valid_gtin(e) for e in eans)
    lengths = Counter(len(e) for e in eans)
    assert lengths[13] > 0.8 * len(eans) and lengths[8] + lengths[14] > 0
    for product in products:
        assert brazil.is_valid_cnpj(product["CNPJ_Fabricante"])
        assert product["NCM"] in brazil.NCM
        assert product["Ativo"] in (0, 1)
        assert product["Preco_Maximo_Consumidor"] > 0
        assert product["Data_Atualizacao"] < day_window(DAY)[1]
        registration = product["Registro_ANVISA"]
        assert registration is None or (len(registration) == 13 and registration.isdigit())
        if product["Categoria"].startswith("Medicamento"):
            assert product["Principio_Ativo"] and registration
    assert {p["Fabricante"] for p in products} & {"EMS", "Eurofarma", "Aché", "Medley"}
    assert any("Sódica" in p["Descricao"] or "Potássica" in p["Descricao"] for p in products)


def test_catalogue_snapshots_change_slowly() -> None:
    today = list(generate_rows(PRODUCTS, DAY, CATALOGUE))
    tomorrow = list(generate_rows(PRODUCTS, DAY + timedelta(days=1), CATALOGUE))
    assert [r[:-1] for r in today] == [r[:-1] for r in tomorrow]
    changed = sum(a[-1] != b[-1] for a, b in zip(today, tomorrow, strict=True))
    assert 0 < changed < CATALOGUE / 5


# --- Complements ------------------------------------------------------------------------------


def test_complements_describe_the_days_invoices() -> None:
    lines = fiscal()
    complements = as_dicts(
        NFE_COMPLEMENTS,
        list(
            generate_rows(NFE_COMPLEMENTS, DAY, fiscal_rows=FISCAL_ROWS, catalogue_size=CATALOGUE)
        ),
    )
    totals: dict[str, Decimal] = defaultdict(Decimal)
    issuers = {}
    for line in lines:
        totals[line["Chave_NFe"]] += line["ACODE_Val_Total"]
        issuers[line["Chave_NFe"]] = line["CNPJ"]
    assert len(complements) == len(totals) == count_invoices(DAY, FISCAL_ROWS)
    assert {c["Chave_NFe"] for c in complements} == set(totals)
    start, end = day_window(DAY)
    statuses = Counter(c["Status_NFe"] for c in complements)
    assert set(statuses) <= {"autorizada", "cancelada", "denegada"}
    assert statuses["autorizada"] > 0.9 * len(complements)
    for complement in complements:
        assert_fits_schema(NFE_COMPLEMENTS, tuple(complement.values()))
        key = complement["Chave_NFe"]
        assert complement["Valor_Total_NF"] == totals[key]
        assert complement["CNPJ_Emitente"] == issuers[key]
        assert start <= complement["Data_Processamento"] < end
        assert re.fullmatch(r"1\d{14}", complement["Protocolo_Autorizacao"])
        assert re.fullmatch(r"[0-9a-f]{64}", complement["XML_Hash"])
        recipient = complement["CNPJ_Destinatario"]
        assert recipient is None or brazil.is_valid_cnpj(recipient)
    notes = [c["Informacoes_Complementares"] for c in complements]
    assert None in notes and any(n and re.search(r"[ãçéíõ]", n) for n in notes)


def test_fewer_complements_are_spread_and_more_add_purchases() -> None:
    invoices = count_invoices(DAY, FISCAL_ROWS)
    keys = {r["Chave_NFe"] for r in fiscal()}
    few = as_dicts(
        NFE_COMPLEMENTS,
        list(generate_rows(NFE_COMPLEMENTS, DAY, 50, fiscal_rows=FISCAL_ROWS)),
    )
    assert len(few) == 50 and {c["Chave_NFe"] for c in few} <= keys
    hours = {c["Data_Processamento"].hour for c in few}
    assert min(hours) < 8 and max(hours) > 18, "picked across the day, not the first 50"
    many = as_dicts(
        NFE_COMPLEMENTS,
        list(generate_rows(NFE_COMPLEMENTS, DAY, invoices + 40, fiscal_rows=FISCAL_ROWS)),
    )
    purchases = [c for c in many if c["Chave_NFe"] not in keys]
    assert len(purchases) == 40
    pharmacy_cnpjs = {p.cnpj for p in pharmacies()}
    for purchase in purchases:
        assert brazil.is_valid_nfe_key(purchase["Chave_NFe"])
        assert purchase["CNPJ_Destinatario"] in pharmacy_cnpjs
    assert len({c["id"] for c in many}) == len(many)


# --- Anomalies --------------------------------------------------------------------------------


def test_null_share_nulls_exactly_the_share_and_nothing_else() -> None:
    clean = fiscal(rows=1001)
    spoiled = fiscal(rows=1001, anomalies=Anomalies(null_share={"CNPJ": 0.07, "EAN": 0.5}))
    assert sum(r["CNPJ"] is None for r in spoiled) == round(0.07 * 1001)
    assert sum(r["EAN"] is None for r in spoiled) == round(0.5 * 1001)
    for before, after in zip(clean, spoiled, strict=True):
        assert {k: v for k, v in before.items() if k not in ("CNPJ", "EAN")} == {
            k: v for k, v in after.items() if k not in ("CNPJ", "EAN")
        }


def test_volume_factor_scales_the_day() -> None:
    assert len(fiscal(rows=2000, anomalies=Anomalies(volume_factor=0.1))) == 200
    assert normal_row_count(FISCAL_LINES, DAY, 2000, anomalies=Anomalies(volume_factor=0.1)) == 200
    assert (
        len(list(generate_rows(PRODUCTS, DAY, 100, anomalies=Anomalies(volume_factor=0.5)))) == 50
    )
    assert normal_row_count(NFE_COMPLEMENTS, DAY, fiscal_rows=1000) == count_invoices(DAY, 1000)


def test_bad_anomalies_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="NOT NULL"):
        generate_rows(FISCAL_LINES, DAY, 10, anomalies=Anomalies(null_share={"id": 0.1}))
    with pytest.raises(ValueError, match="does not have"):
        generate_rows(FISCAL_LINES, DAY, 10, anomalies=Anomalies(null_share={"Nope": 0.1}))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        Anomalies(null_share={"CNPJ": 1.5})
    with pytest.raises(ValueError, match="volume_factor"):
        Anomalies(volume_factor=-1)
    with pytest.raises(ValueError, match="identifier"):
        Anomalies(extra_column="x; DROP TABLE y")
    with pytest.raises(ValueError, match="no demo generator"):
        generate_rows(dataclasses.replace(FISCAL_LINES, name="other"), DAY, 1)


def test_anomalies_are_frozen_and_hashable() -> None:
    shares = {"CNPJ": 0.1}
    knobs = Anomalies(null_share=shares)
    shares["CNPJ"] = 0.9
    assert knobs.null_share["CNPJ"] == 0.1
    assert hash(knobs) == hash(Anomalies(null_share={"CNPJ": 0.1}))
    assert Anomalies().is_clean and not knobs.is_clean


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_edge_rows_sit_on_the_schema_limits(table: Table) -> None:
    edges = edge_rows(table, DAY)
    rows = list(generate_rows(table, DAY, 20, anomalies=Anomalies(edge_rows=True)))
    assert rows[-len(edges) :] == edges and len(rows) == 20 + len(edges)
    start, end = day_window(DAY)
    for row in edges:
        assert_fits_schema(table, row)
    values = as_dicts(table, edges)
    assert len({row[table.key] for row in values}) == len(values)
    for column in table.columns:
        seen = [row[column.name] for row in values]
        if column.nullable:
            assert None in seen, column.name
            assert all(row[column.name] is None for row in values[:1] if column.name != table.key)
        spelled = column.mysql_type.upper()
        if spelled == "DECIMAL(15,2)":
            assert {Decimal("9999999999999.99"), Decimal("-9999999999999.99")} <= set(seen)
        elif spelled == "DECIMAL(15,4)":
            assert {Decimal("99999999999.9999"), Decimal("-99999999999.9999")} <= set(seen)
        elif spelled == "INT UNSIGNED":
            assert 4_294_967_295 in seen
        elif spelled == "SMALLINT UNSIGNED":
            assert 65_535 in seen
        elif spelled.startswith("DATETIME"):
            assert {start, end - timedelta(microseconds=1)} <= set(seen)
        elif column.max_length is not None and column.name != table.key:
            texts = [s for s in seen if isinstance(s, str)]
            assert any(len(s) == column.max_length for s in texts), column.name
            assert any("💊" in s for s in texts), column.name
            assert "" in texts
            assert any(s.startswith("\\N") for s in texts), "a literal backslash-N, not NULL"
        elif spelled == "TEXT":
            assert max(len(s.encode()) for s in seen if s) == 65_535
    if not table.is_snapshot:
        assert all(
            row[table.key] >= DAY.toordinal() * ID_DAY_STRIDE + EDGE_ID_OFFSET for row in values
        )


def test_columns_unknown_to_the_generator() -> None:
    extra = Column("Observacao", "VARCHAR(10)", True)
    reordered = dataclasses.replace(FISCAL_LINES, columns=(extra, *reversed(FISCAL_LINES.columns)))
    rows = list(generate_rows(reordered, DAY, 5))
    expected = list(generate_rows(FISCAL_LINES, DAY, 5))
    assert rows == [(None, *reversed(row)) for row in expected]
    required = dataclasses.replace(
        FISCAL_LINES, columns=(*FISCAL_LINES.columns, Column("Lote", "CHAR(3)", False))
    )
    with pytest.raises(ValueError, match=r"NOT NULL column .*Lote"):
        generate_rows(required, DAY, 5)
