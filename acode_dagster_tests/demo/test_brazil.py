"""Check digits and code lists of the Brazilian fiscal vocabulary.

The mod-11 schemes (CNPJ, NF-e key) map remainders 0 and 1 to the same check digit, so a single
changed digit that moves the weighted sum's remainder from 0 to 1 (or back) keeps the check
digit: the schemes' documented blind spot. The single-change properties below therefore say
"invalid, or inside that blind spot", and a separate test shows the blind spot is real and the
only way through. GTIN's mod-10 with weights 1 and 3 has no such spot: every single change fails.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from acode_dagster.demo import brazil

DIGITS = "0123456789"

cnpj_bases = st.text(DIGITS, min_size=12, max_size=12).filter(lambda s: len(set(s)) > 1)


def naive_mod11(digits: str, weights: list[int]) -> int:
    """The weighted sum's remainder, computed the slow, obvious way."""
    return sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11


CNPJ_W1 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
CNPJ_W2 = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
NFE_W = [2 + (42 - i) % 8 for i in range(43)]


def mutate(value: str, position: int, shift: int) -> str:
    changed = str((int(value[position]) + shift) % 10)
    return value[:position] + changed + value[position + 1 :]


# --- CNPJ -------------------------------------------------------------------------------------


def test_known_cnpjs() -> None:
    assert brazil.is_valid_cnpj("11222333000181")
    assert brazil.is_valid_cnpj("11.222.333/0001-81")
    assert not brazil.is_valid_cnpj("11222333000182")
    assert not brazil.is_valid_cnpj("00000000000000"), "placeholder, though its digits check"
    assert not brazil.is_valid_cnpj("1122233300018")
    assert not brazil.is_valid_cnpj("١١٢٢٢٣٣٣٠٠٠١٨١"), "Arabic-Indic digits are not digits here"
    # The Receita's example of the alphanumeric CNPJ issued from July 2026.
    assert brazil.cnpj_check_digits("12ABC34501DE") == "35"
    assert brazil.is_valid_cnpj("12.ABC.345/01DE-35")
    assert brazil.format_cnpj("11222333000181") == "11.222.333/0001-81"


def test_cnpj_refuses_bad_bases() -> None:
    with pytest.raises(ValueError, match="12 digits"):
        brazil.cnpj_with_check_digits("1234")
    with pytest.raises(ValueError, match="placeholder"):
        brazil.cnpj_with_check_digits("000000000000")


@given(cnpj_bases)
def test_generated_cnpj_always_validates(base: str) -> None:
    cnpj = brazil.cnpj_with_check_digits(base)
    assert cnpj[:12] == base
    assert brazil.is_valid_cnpj(cnpj)
    assert brazil.is_valid_cnpj(brazil.format_cnpj(cnpj))
    r1 = naive_mod11(base, CNPJ_W1)
    assert int(cnpj[12]) == (0 if r1 < 2 else 11 - r1)


@given(cnpj_bases, st.integers(0, 13), st.integers(1, 9))
@example("112223330001", 0, 1)
def test_a_single_changed_cnpj_digit_is_caught_outside_the_mod11_blind_spot(
    base: str, position: int, shift: int
) -> None:
    cnpj = brazil.cnpj_with_check_digits(base)
    changed = mutate(cnpj, position, shift)
    if not brazil.is_valid_cnpj(changed):
        return
    # Only a change of the body can get through, and only by moving both remainders across
    # the 0/1 boundary that both map to check digit 0.
    assert position < 12
    assert {naive_mod11(base, CNPJ_W1), naive_mod11(changed[:12], CNPJ_W1)} == {0, 1}
    assert {naive_mod11(cnpj[:13], CNPJ_W2), naive_mod11(changed[:13], CNPJ_W2)} == {0, 1}


def test_the_cnpj_blind_spot_exists_and_is_rare() -> None:
    slipped = total = 0
    for root in range(10_000_000, 10_000_200):
        cnpj = brazil.cnpj_with_check_digits(f"{root:08d}0001")
        for position in range(14):
            for shift in range(1, 10):
                total += 1
                slipped += brazil.is_valid_cnpj(mutate(cnpj, position, shift))
    assert 0 < slipped < total * 0.01


# --- GTIN -------------------------------------------------------------------------------------


def test_known_gtins() -> None:
    assert brazil.is_valid_gtin("7891000100103")  # EAN-13
    assert brazil.is_valid_gtin("96385074")  # EAN-8
    assert brazil.is_valid_gtin("036000291452")  # UPC-A
    assert brazil.is_valid_gtin("17891000100100")  # GTIN-14 of the EAN-13 above, indicator 1
    assert not brazil.is_valid_gtin("7891000100104")
    assert not brazil.is_valid_gtin("789100010010")  # 12 digits, wrong check digit
    assert not brazil.is_valid_gtin("78910001001a3")
    with pytest.raises(ValueError, match="7, 11, 12 or 13"):
        brazil.gtin_check_digit("123")


@given(st.sampled_from([7, 11, 12, 13]).flatmap(lambda n: st.text(DIGITS, min_size=n, max_size=n)))
def test_generated_gtin_always_validates(body: str) -> None:
    code = brazil.gtin(body)
    assert len(code) in brazil.GTIN_LENGTHS
    assert brazil.is_valid_gtin(code)


@given(
    st.sampled_from([7, 11, 12, 13]).flatmap(lambda n: st.text(DIGITS, min_size=n, max_size=n)),
    st.integers(0, 13),
    st.integers(1, 9),
)
def test_any_single_changed_gtin_digit_is_caught(body: str, position: int, shift: int) -> None:
    code = brazil.gtin(body)
    assert not brazil.is_valid_gtin(mutate(code, position % len(code), shift))


# --- NF-e key ---------------------------------------------------------------------------------

nfe_fields = st.fixed_dictionaries(
    {
        "uf": st.sampled_from([uf.abbreviation for uf in brazil.UFS]),
        "emitted": st.dates(date(2006, 1, 1), date(2099, 12, 31)),
        "cnpj": cnpj_bases.map(brazil.cnpj_with_check_digits),
        "series": st.integers(0, 999),
        "number": st.integers(1, 999_999_999),
        "code": st.integers(0, 99_999_999),
        "model": st.sampled_from([55, 65]),
    }
)


def test_known_nfe_key() -> None:
    # The key of the NF-e layout manual's example, in its pre-2010 form (9-digit cNF).
    assert brazil.nfe_check_digit("5206043300991100250655012000000780026730161") == 5
    key = brazil.nfe_key(
        uf="SP", emitted=date(2026, 11, 20), cnpj="11222333000181", series=1, number=123, code=7
    )
    assert key.startswith("35" + "2611" + "11222333000181" + "55" + "001" + "000000123" + "1")
    assert brazil.is_valid_nfe_key(key)
    assert not brazil.is_valid_nfe_key("99" + key[2:])  # no such state
    assert not brazil.is_valid_nfe_key(key[:43])


def test_nfe_key_refuses_out_of_range_fields() -> None:
    args = {"uf": "SP", "emitted": date(2026, 1, 1), "cnpj": "11222333000181", "code": 1}
    with pytest.raises(ValueError, match="series"):
        brazil.nfe_key(**args, series=1000, number=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CNPJ"):
        brazil.nfe_key(**{**args, "cnpj": "123"}, series=1, number=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state code"):
        brazil.nfe_key(**{**args, "uf": 99}, series=1, number=1)  # type: ignore[arg-type]


@given(nfe_fields)
def test_generated_nfe_key_validates_and_parses_back(fields: dict[str, object]) -> None:
    key = brazil.nfe_key(**fields)  # type: ignore[arg-type]
    assert len(key) == 44 and key.isdigit()
    assert brazil.is_valid_nfe_key(key)
    r = naive_mod11(key[:43], NFE_W)
    assert int(key[43]) == (0 if r < 2 else 11 - r)
    parsed = brazil.parse_nfe_key(key)
    emitted = fields["emitted"]
    assert isinstance(emitted, date)
    assert parsed.uf_code == brazil.UF_CODES[str(fields["uf"])]
    assert parsed.year_month == f"{emitted:%y%m}"
    assert (parsed.cnpj, parsed.model, parsed.series, parsed.number, parsed.code) == (
        fields["cnpj"],
        fields["model"],
        fields["series"],
        fields["number"],
        fields["code"],
    )
    assert parsed.emission_type == 1


@given(nfe_fields, st.integers(0, 43), st.integers(1, 9))
def test_a_single_changed_key_digit_is_caught_outside_the_mod11_blind_spot(
    fields: dict[str, object], position: int, shift: int
) -> None:
    key = brazil.nfe_key(**fields)  # type: ignore[arg-type]
    changed = mutate(key, position, shift)
    if brazil.is_valid_nfe_key(changed):
        assert position < 43
        assert {naive_mod11(key[:43], NFE_W), naive_mod11(changed[:43], NFE_W)} == {0, 1}


def test_the_nfe_blind_spot_exists() -> None:
    key = next(
        k
        for n in range(1, 1000)
        if naive_mod11(
            (k := brazil.nfe_key(uf="SP", emitted=date(2026, 1, 1), cnpj="11222333000181",
                                 series=1, number=n, code=0))[:43],
            NFE_W,
        ) == 0
    )  # fmt: skip
    # Weight 2 sits on the last body digit (cNF's last, 0 here): +6 there adds 12, which moves
    # the remainder from 0 to 1, and both give check digit 0.
    assert NFE_W[42] == 2 and key[42] == "0"
    changed = mutate(key, 42, 6)
    assert changed != key and brazil.is_valid_nfe_key(changed)


def test_parse_refuses_an_invalid_key() -> None:
    with pytest.raises(ValueError, match="not a valid 44-digit"):
        brazil.parse_nfe_key("1" * 44)


# --- Code lists and names ---------------------------------------------------------------------


def test_code_lists_are_real_shapes() -> None:
    assert {"5102", "5405", "6102", "5929", "1202", "5202"} <= set(brazil.CFOP)
    assert all(len(c) == 4 and c.isdigit() and c[0] in "1256" for c in brazil.CFOP)
    assert {"30049099", "30049069", "30042099", "33049910", "21069030", "34011190"} <= set(
        brazil.NCM
    )
    assert all(len(n) == 8 and n.isdigit() for n in brazil.NCM)
    assert {"000", "060", "040", "010", "020", "090"} <= set(brazil.CST_ICMS)
    assert all(len(c) == 3 and c.isdigit() for c in brazil.CST_ICMS)
    assert len(brazil.UFS) == 27 and len(brazil.UF_BY_CODE) == 27
    assert brazil.UF_CODES["SP"] == 35 and brazil.UF_CODES["DF"] == 53
    assert set(brazil.UF_PHARMACY_WEIGHTS) == set(brazil.UF_CODES)
    for op in brazil.FISCAL_OPERATIONS:
        assert op.cfop in brazil.CFOP and op.cst in brazil.CST_ICMS
        assert op.icms in ("internal", "interstate", "reduced", "none")
        # CST 060 means ICMS was withheld up front: the line itself carries none.
        assert op.cst[1:] != "60" or op.icms == "none"
    for medicine in brazil.MEDICINES:
        assert medicine.ncm in brazil.NCM
    for item in brazil.CONSUMER_PRODUCTS:
        assert item.ncm in brazil.NCM


def test_names_carry_portuguese_accents() -> None:
    text = " ".join(
        [*brazil.PHARMACY_NAMES, *brazil.MANUFACTURERS_GENERICS]
        + [m.active_ingredient for m in brazil.MEDICINES]
    )
    for accented in ("São João", "Pão de Açúcar", "Aché", "Neo Química", "Ácido Acetilsalicílico"):
        assert accented in text
    assert "Dipirona Sódica" in text and "Losartana Potássica" in text


@given(st.integers(1, 8), st.integers(0, 9999), st.integers(0, 9999), st.integers(0, 999))
def test_anvisa_registration_has_13_digits(
    category: int, company: int, product: int, presentation: int
) -> None:
    registration = brazil.anvisa_registration(category, company, product, presentation)
    assert len(registration) == 13 and registration.isdigit()
    assert registration[0] == str(category)
