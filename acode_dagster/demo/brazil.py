"""Brazilian fiscal vocabulary for demo data: check digits, real code lists and realistic names.

Everything here is pure and deterministic. The code lists are real codes (CFOP, NCM, CST, IBGE
state codes) picked among those a pharmacy network actually issues; the names of pharmacies,
products and manufacturers are the kind a Brazilian catalogue holds, accents included, so that
demo data exercises the same text paths (UTF-8, collation) as production.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from operator import mul

# --- CNPJ -------------------------------------------------------------------------------------

_CNPJ_WEIGHTS_1 = (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
_CNPJ_WEIGHTS_2 = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
_CNPJ_BASE = re.compile(r"[0-9A-Z]{12}")
_CNPJ_FORMATTED = re.compile(r"([0-9A-Z]{2})\.([0-9A-Z]{3})\.([0-9A-Z]{3})/([0-9A-Z]{4})-(\d{2})")


def _mod11_digit(total: int) -> int:
    """The mod-11 check digit shared by CNPJ, NF-e keys and friends: remainders 0 and 1 give 0."""
    remainder = total % 11
    return 0 if remainder < 2 else 11 - remainder


def _cnpj_value(char: str) -> int:
    # The alphanumeric CNPJ (issued from July 2026) weighs each character by its ASCII code
    # minus 48, which keeps every numeric CNPJ's check digits unchanged.
    return ord(char) - 48


def cnpj_check_digits(base12: str) -> str:
    """The two check digits of a CNPJ whose first 12 characters are ``base12``."""
    if not _CNPJ_BASE.fullmatch(base12):
        raise ValueError(
            f"a CNPJ base is 12 digits (or, from 2026, uppercase letters and digits), "
            f"got {base12!r}"
        )
    values = [_cnpj_value(c) for c in base12]
    first = _mod11_digit(sum(v * w for v, w in zip(values, _CNPJ_WEIGHTS_1, strict=True)))
    values.append(first)
    second = _mod11_digit(sum(v * w for v, w in zip(values, _CNPJ_WEIGHTS_2, strict=True)))
    return f"{first}{second}"


def cnpj_with_check_digits(base12: str) -> str:
    """The 14-character CNPJ made of ``base12`` (8-character root, 4-character branch) and its
    check digits. A base that would give 14 equal digits is refused, as the Receita does."""
    cnpj = base12 + cnpj_check_digits(base12)
    if len(set(cnpj)) == 1:
        raise ValueError(f"{cnpj} is a placeholder, never a real CNPJ")
    return cnpj


def is_valid_cnpj(value: str) -> bool:
    """True for a CNPJ with correct check digits, bare (14 characters) or formatted
    (``12.345.678/0001-95``). Repeated-digit placeholders such as 00000000000000 are invalid."""
    if match := _CNPJ_FORMATTED.fullmatch(value):
        value = "".join(match.groups())
    if len(value) != 14 or not value[12:].isascii() or not value[12:].isdigit():
        return False
    if not _CNPJ_BASE.fullmatch(value[:12]) or len(set(value)) == 1:
        return False
    return cnpj_check_digits(value[:12]) == value[12:]


def format_cnpj(cnpj: str) -> str:
    """``12345678000195`` -> ``12.345.678/0001-95``."""
    if len(cnpj) != 14:
        raise ValueError(f"a CNPJ has 14 characters, got {cnpj!r}")
    return f"{cnpj[:2]}.{cnpj[2:5]}.{cnpj[5:8]}/{cnpj[8:12]}-{cnpj[12:]}"


# --- GTIN / EAN -------------------------------------------------------------------------------

GTIN_LENGTHS = (8, 12, 13, 14)


def gtin_check_digit(body: str) -> int:
    """The GS1 check digit of a GTIN body (7, 11, 12 or 13 digits, the GTIN without its last).

    Weights alternate 3, 1, starting with 3 on the rightmost body digit, so one rule serves
    GTIN-8, -12, -13 and -14.
    """
    if len(body) + 1 not in GTIN_LENGTHS or not (body.isascii() and body.isdigit()):
        raise ValueError(f"a GTIN body is 7, 11, 12 or 13 digits, got {body!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def gtin(body: str) -> str:
    """``body`` followed by its check digit."""
    return f"{body}{gtin_check_digit(body)}"


def is_valid_gtin(value: str) -> bool:
    """True for a GTIN-8/12/13/14 (EAN-8, UPC-A, EAN-13, DUN-14) with a correct check digit."""
    if len(value) not in GTIN_LENGTHS or not (value.isascii() and value.isdigit()):
        return False
    return gtin_check_digit(value[:-1]) == int(value[-1])


# --- NF-e access key --------------------------------------------------------------------------

# Weights 2..9 repeat from the rightmost of the 43 digits leftwards.
_NFE_WEIGHTS = tuple(2 + (42 - i) % 8 for i in range(43))
_NFE_ASCII_OFFSET = 48 * sum(_NFE_WEIGHTS)
_NFE_SUFFIX_WEIGHTS = _NFE_WEIGHTS[22:]
_NFE_SUFFIX_OFFSET = 48 * sum(_NFE_SUFFIX_WEIGHTS)


@dataclass(frozen=True)
class NFeKey:
    """The fields of a 44-digit NF-e access key (chave de acesso)."""

    uf_code: int
    year_month: str
    """AAMM of the emission date."""
    cnpj: str
    model: int
    series: int
    number: int
    emission_type: int
    code: int
    """cNF, the random code that keeps keys unguessable."""
    check_digit: int


def nfe_check_digit(body43: str) -> int:
    """cDV: mod 11 over the first 43 digits, weights 2..9 from the right."""
    if len(body43) != 43 or not (body43.isascii() and body43.isdigit()):
        raise ValueError(f"an NF-e key body is 43 digits, got {body43!r}")
    # Summing over the ASCII codes and subtracting 48 x the weights once is several times
    # faster than converting digit by digit, and keys are built per NF-e of a demo day.
    return _mod11_digit(sum(map(mul, body43.encode(), _NFE_WEIGHTS)) - _NFE_ASCII_OFFSET)


@dataclass(frozen=True)
class NFeKeyPrefix:
    """The first 22 digits of an access key (cUF, AAMM, CNPJ, model) and their weighted sum.

    Every NF-e a branch issues in a month shares them, so a generator computes them once and
    finishes each key with :func:`nfe_key_from_prefix`.
    """

    digits: str
    weighted_sum: int


def nfe_key_prefix(*, uf: str | int, emitted: date, cnpj: str, model: int = 55) -> NFeKeyPrefix:
    uf_code = UF_CODES[uf] if isinstance(uf, str) else uf
    if uf_code not in UF_BY_CODE:
        raise ValueError(f"{uf_code} is not an IBGE state code")
    if not (len(cnpj) == 14 and cnpj.isascii() and cnpj.isdigit()):
        raise ValueError(f"the issuer of an NF-e key is a 14-digit CNPJ, got {cnpj!r}")
    if model not in (55, 65):
        raise ValueError(f"an NF-e model is 55 (NF-e) or 65 (NFC-e), got {model}")
    digits = f"{uf_code:02d}{emitted.year % 100:02d}{emitted.month:02d}{cnpj}{model:02d}"
    return NFeKeyPrefix(
        digits, sum(map(mul, digits.encode(), _NFE_WEIGHTS)) - 48 * sum(_NFE_WEIGHTS[:22])
    )


def nfe_key_from_prefix(
    prefix: NFeKeyPrefix, *, series: int, number: int, code: int, emission_type: int = 1
) -> str:
    """The full key: ``prefix``, series, number, tpEmis, cNF and the check digit."""
    if not (
        0 <= series <= 999
        and 0 <= number <= 999_999_999
        and 0 <= code <= 99_999_999
        and 1 <= emission_type <= 9
    ):
        raise ValueError(
            f"NF-e series 0..999, number 0..999999999, code 0..99999999 and emission type 1..9 "
            f"expected, got {series}, {number}, {code}, {emission_type}"
        )
    suffix = f"{series:03d}{number:09d}{emission_type}{code:08d}"
    total = prefix.weighted_sum + sum(map(mul, suffix.encode(), _NFE_SUFFIX_WEIGHTS))
    return f"{prefix.digits}{suffix}{_mod11_digit(total - _NFE_SUFFIX_OFFSET)}"


def nfe_key(
    *,
    uf: str | int,
    emitted: date,
    cnpj: str,
    series: int,
    number: int,
    code: int,
    model: int = 55,
    emission_type: int = 1,
) -> str:
    """The 44-digit access key: cUF, AAMM, issuer CNPJ, model, series, number, tpEmis, cNF, cDV."""
    prefix = nfe_key_prefix(uf=uf, emitted=emitted, cnpj=cnpj, model=model)
    return nfe_key_from_prefix(
        prefix, series=series, number=number, code=code, emission_type=emission_type
    )


def is_valid_nfe_key(value: str) -> bool:
    """True for 44 digits with a known state code, a real month and a correct cDV."""
    if len(value) != 44 or not (value.isascii() and value.isdigit()):
        return False
    if int(value[:2]) not in UF_BY_CODE or not 1 <= int(value[4:6]) <= 12:
        return False
    return nfe_check_digit(value[:43]) == int(value[43])


def parse_nfe_key(value: str) -> NFeKey:
    """The fields of a valid key; a ValueError names what is wrong with an invalid one."""
    if not is_valid_nfe_key(value):
        raise ValueError(f"{value!r} is not a valid 44-digit NF-e access key")
    return NFeKey(
        uf_code=int(value[0:2]),
        year_month=value[2:6],
        cnpj=value[6:20],
        model=int(value[20:22]),
        series=int(value[22:25]),
        number=int(value[25:34]),
        emission_type=int(value[34]),
        code=int(value[35:43]),
        check_digit=int(value[43]),
    )


# --- ANVISA registration ----------------------------------------------------------------------

ANVISA_CATEGORY = {"medicamento": 1, "cosmetico": 2, "alimento": 6, "correlato": 8}
"""First digit of a registration by product class."""


def anvisa_registration(category: int, company: int, product: int, presentation: int) -> str:
    """A 13-digit ANVISA registration, ``1.0235.0117.001-5`` without punctuation.

    Layout as ANVISA prints it: class, company (4), product (4), presentation (3), one check
    digit. ANVISA does not publish the check-digit rule, so this uses mod 11 over the first 12
    digits; the result has the right shape, not necessarily a registration that exists.
    """
    body = f"{category:01d}{company:04d}{product:04d}{presentation:03d}"
    if len(body) != 12:
        raise ValueError("ANVISA registration fields out of range")
    digit = _mod11_digit(sum(int(d) * (2 + i % 8) for i, d in enumerate(reversed(body))))
    return f"{body}{digit}"


# --- States -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UF:
    """A federative unit: its abbreviation, IBGE code, name and modal internal ICMS rate."""

    abbreviation: str
    code: int
    name: str
    icms_rate_bp: int
    """Internal ICMS rate in basis points (18 % = 1800), approximately the modal rate of 2024
    including the poverty-fund surcharges; close enough for demo tax values."""


UFS: tuple[UF, ...] = (
    UF("RO", 11, "Rondônia", 1950),
    UF("AC", 12, "Acre", 1900),
    UF("AM", 13, "Amazonas", 2000),
    UF("RR", 14, "Roraima", 2000),
    UF("PA", 15, "Pará", 1900),
    UF("AP", 16, "Amapá", 1800),
    UF("TO", 17, "Tocantins", 2000),
    UF("MA", 21, "Maranhão", 2200),
    UF("PI", 22, "Piauí", 2100),
    UF("CE", 23, "Ceará", 2000),
    UF("RN", 24, "Rio Grande do Norte", 1800),
    UF("PB", 25, "Paraíba", 2000),
    UF("PE", 26, "Pernambuco", 2050),
    UF("AL", 27, "Alagoas", 1900),
    UF("SE", 28, "Sergipe", 1900),
    UF("BA", 29, "Bahia", 2050),
    UF("MG", 31, "Minas Gerais", 1800),
    UF("ES", 32, "Espírito Santo", 1700),
    UF("RJ", 33, "Rio de Janeiro", 2200),
    UF("SP", 35, "São Paulo", 1800),
    UF("PR", 41, "Paraná", 1950),
    UF("SC", 42, "Santa Catarina", 1700),
    UF("RS", 43, "Rio Grande do Sul", 1700),
    UF("MS", 50, "Mato Grosso do Sul", 1700),
    UF("MT", 51, "Mato Grosso", 1700),
    UF("GO", 52, "Goiás", 1900),
    UF("DF", 53, "Distrito Federal", 2000),
)
UF_BY_ABBREVIATION: dict[str, UF] = {uf.abbreviation: uf for uf in UFS}
UF_BY_CODE: dict[int, UF] = {uf.code: uf for uf in UFS}
UF_CODES: dict[str, int] = {uf.abbreviation: uf.code for uf in UFS}

UF_PHARMACY_WEIGHTS: dict[str, int] = {
    "SP": 30, "MG": 12, "RJ": 9, "PR": 7, "RS": 6, "SC": 5, "BA": 5, "GO": 4, "PE": 3, "CE": 3,
    "ES": 2, "DF": 2, "MT": 2, "MS": 2, "PA": 2, "MA": 1, "PB": 1, "RN": 1, "AL": 1, "SE": 1,
    "PI": 1, "AM": 1, "TO": 1, "RO": 1, "AC": 1, "AP": 1, "RR": 1,
}  # fmt: skip
"""Where the network's pharmacies are: roughly where Brazil's pharmacies are."""

# --- Fiscal code lists ------------------------------------------------------------------------

CFOP: dict[str, str] = {
    "5102": "Venda de mercadoria adquirida ou recebida de terceiros",
    "5405": "Venda de mercadoria adquirida ou recebida de terceiros em operação com mercadoria "
    "sujeita ao regime de substituição tributária, na condição de contribuinte substituído",
    "5403": "Venda de mercadoria adquirida ou recebida de terceiros em operação com mercadoria "
    "sujeita ao regime de substituição tributária, na condição de contribuinte substituto",
    "5929": "Lançamento efetuado em decorrência de emissão de documento fiscal relativo a "
    "operação ou prestação também registrada em equipamento Emissor de Cupom Fiscal - ECF",
    "5910": "Remessa em bonificação, doação ou brinde",
    "5202": "Devolução de compra para comercialização",
    "5411": "Devolução de compra para comercialização em operação com mercadoria sujeita ao "
    "regime de substituição tributária",
    "6102": "Venda de mercadoria adquirida ou recebida de terceiros (operação interestadual)",
    "6108": "Venda de mercadoria adquirida ou recebida de terceiros, destinada a não "
    "contribuinte (operação interestadual)",
    "1202": "Devolução de venda de mercadoria adquirida ou recebida de terceiros",
    "1411": "Devolução de venda de mercadoria adquirida ou recebida de terceiros em operação "
    "com mercadoria sujeita ao regime de substituição tributária",
}

NCM: dict[str, str] = {
    "30049099": "Outros medicamentos para fins terapêuticos ou profiláticos, em doses",
    "30049069": "Outros medicamentos contendo compostos heterocíclicos, em doses",
    "30042099": "Outros medicamentos contendo antibióticos, em doses",
    "30045090": "Outros medicamentos contendo vitaminas, em doses",
    "30066000": "Preparações químicas contraceptivas à base de hormônios",
    "30051090": "Curativos (pensos) adesivos e outros artigos com camada adesiva",
    "33049910": "Cremes de beleza e cremes nutritivos; loções tônicas",
    "33049990": "Outras preparações de beleza, maquiagem e para conservação ou cuidados da pele",
    "33051000": "Xampus",
    "33061000": "Dentifrícios",
    "33062000": "Fios utilizados para limpar os espaços interdentais (fios dentais)",
    "33072010": "Desodorantes corporais e antiperspirantes, líquidos",
    "34011190": "Sabões de toucador, em barras, pedaços ou figuras moldadas",
    "21069030": "Complementos alimentares",
    "40151900": "Luvas, mitenes e semelhantes, de borracha vulcanizada, exceto para cirurgia",
    "90183119": "Seringas, mesmo com agulhas, outras",
    "96032100": "Escovas de dentes",
    "96190000": "Absorventes e tampões higiênicos, cueiros e fraldas para bebês",
}

CST_ICMS: dict[str, str] = {
    "000": "Nacional - tributada integralmente",
    "010": "Nacional - tributada e com cobrança do ICMS por substituição tributária",
    "020": "Nacional - com redução de base de cálculo",
    "040": "Nacional - isenta",
    "041": "Nacional - não tributada",
    "060": "Nacional - ICMS cobrado anteriormente por substituição tributária",
    "090": "Nacional - outras",
    "100": "Estrangeira (importação direta) - tributada integralmente",
    "160": "Estrangeira (importação direta) - ICMS cobrado anteriormente por ST",
    "200": "Estrangeira (adquirida no mercado interno) - tributada integralmente",
    "260": "Estrangeira (adquirida no mercado interno) - ICMS cobrado anteriormente por ST",
}


@dataclass(frozen=True)
class FiscalOperation:
    """A kind of fiscal line: its CFOP, ICMS CST and how ICMS is computed on it."""

    cfop: str
    cst: str
    icms: str
    """'internal' (the state's rate), 'interstate' (12 %), 'reduced' (internal rate on a base
    reduced by a third) or 'none' (ICMS already withheld by tax substitution, or exempt)."""
    weight: int


FISCAL_OPERATIONS: tuple[FiscalOperation, ...] = (
    # Medicines are mostly under ICMS tax substitution: the pharmacy's sale carries no own ICMS.
    FiscalOperation("5405", "060", "none", 50),
    FiscalOperation("5102", "000", "internal", 16),
    FiscalOperation("5929", "060", "none", 8),
    FiscalOperation("5102", "020", "reduced", 4),
    FiscalOperation("5102", "040", "none", 4),
    FiscalOperation("6102", "000", "interstate", 3),
    FiscalOperation("6108", "000", "interstate", 1),
    FiscalOperation("5403", "010", "internal", 2),
    FiscalOperation("1202", "000", "internal", 3),
    FiscalOperation("1411", "060", "none", 2),
    FiscalOperation("5202", "000", "internal", 2),
    FiscalOperation("5411", "060", "none", 1),
    FiscalOperation("5910", "090", "none", 2),
    FiscalOperation("5405", "260", "none", 2),
)
INTERSTATE_ICMS_RATE_BP = 1200

# --- Names ------------------------------------------------------------------------------------

PHARMACY_PREFIXES = (
    "Drogaria", "Farmácia", "Drogaria e Perfumaria", "Farmácia e Drogaria", "Drogaria", "Farmácia",
)  # fmt: skip
PHARMACY_NAMES = (
    "São João", "Pão de Açúcar", "Santa Luzia", "Nossa Senhora Aparecida", "Bom Jesus",
    "São José", "Popular", "Vida & Saúde", "Saúde Total", "Bem-Estar", "Santa Rita", "São Bento",
    "Ipiranga", "Paraíso", "Esperança", "Imperial", "Central", "do Povo", "Santo Antônio",
    "Boa Vista", "Sol Nascente", "União", "Conceição", "Três Corações", "Canaã", "Jardim América",
    "Nova Iguaçu", "Pinheiros", "Guaíra", "Maringá", "Itaquá", "Mãe Rainha", "Família",
    "Economia", "Preço Baixo", "Farmavida", "Drogafácil", "Menor Preço", "Avenida", "Líder",
    "Estrela d'Oeste", "Cristo Rei", "São Judas Tadeu", "Boa Saúde", "Araçá", "Jaçanã",
)  # fmt: skip
LEGAL_SUFFIXES = (
    "Ltda",
    "Ltda - ME",
    "Ltda - EPP",
    "Eireli",
    "S.A.",
    "Comércio de Medicamentos Ltda",
)

DISTRIBUTOR_NAMES = (
    "Distribuidora Farmacêutica Panarello Ltda",
    "Profarma Distribuidora de Produtos Farmacêuticos S.A.",
    "Santa Cruz Distribuidora de Medicamentos Ltda",
    "Servimed Comercial Ltda",
    "Drogacenter Distribuidora de Medicamentos Ltda",
    "Genésio A. Mendes & Cia Ltda",
)

RECIPIENT_NAMES = (
    "Clínica Médica São Lucas Ltda",
    "Hospital e Maternidade Santa Cecília",
    "Lar dos Idosos Nossa Senhora das Graças",
    "Consultório Odontológico Sorriso Ltda",
    "Prefeitura Municipal de Três Pontas",
)

MANUFACTURERS_GENERICS = (
    "EMS", "Eurofarma", "Aché", "Medley", "Neo Química", "Germed", "Legrand", "Prati-Donaduzzi",
    "Teuto", "Cimed", "Sandoz", "Biolab Sanus", "Geolab", "União Química", "Vitamedic",
    "Cristália", "Hypera Pharma", "Torrent", "Ranbaxy", "Nova Química",
)  # fmt: skip


@dataclass(frozen=True)
class Medicine:
    """An active ingredient and the presentations it is sold in (price: a typical PMC)."""

    active_ingredient: str
    ncm: str
    presentations: tuple[tuple[str, int], ...]
    """(presentation, PMC of the reference product in centavos)."""
    reference: tuple[str, str] | None = None
    """(brand, manufacturer) of the reference medicine, when the catalogue carries one."""


MEDICINES: tuple[Medicine, ...] = (
    Medicine(
        "Dipirona Sódica",
        "30049099",
        (
            ("500 mg c/ 10 comprimidos", 690),
            ("1 g c/ 10 comprimidos", 1290),
            ("500 mg/mL solução oral gotas 20 mL", 990),
        ),
        ("Novalgina", "Sanofi"),
    ),
    Medicine(
        "Paracetamol",
        "30049099",
        (
            ("500 mg c/ 20 comprimidos", 890),
            ("750 mg c/ 20 comprimidos", 1390),
            ("200 mg/mL solução oral 15 mL", 1190),
        ),
        ("Tylenol", "Kenvue"),
    ),
    Medicine(
        "Ácido Acetilsalicílico",
        "30049099",
        (("100 mg c/ 30 comprimidos", 790), ("500 mg c/ 20 comprimidos", 1090)),
        ("Aspirina", "Bayer"),
    ),
    Medicine(
        "Ibuprofeno",
        "30049099",
        (
            ("400 mg c/ 10 cápsulas", 1590),
            ("600 mg c/ 20 comprimidos revestidos", 2490),
            ("50 mg/mL suspensão oral gotas 30 mL", 1890),
        ),
    ),
    Medicine(
        "Losartana Potássica",
        "30049069",
        (
            ("50 mg c/ 30 comprimidos revestidos", 2190),
            ("100 mg c/ 30 comprimidos revestidos", 3890),
        ),
        ("Cozaar", "Organon"),
    ),
    Medicine("Hidroclorotiazida", "30049069", (("25 mg c/ 30 comprimidos", 790),)),
    Medicine(
        "Besilato de Anlodipino",
        "30049069",
        (("5 mg c/ 30 comprimidos", 2490), ("10 mg c/ 30 comprimidos", 3690)),
        ("Norvasc", "Pfizer"),
    ),
    Medicine(
        "Maleato de Enalapril",
        "30049069",
        (("10 mg c/ 30 comprimidos", 1290), ("20 mg c/ 30 comprimidos", 1990)),
    ),
    Medicine(
        "Atenolol",
        "30049069",
        (("25 mg c/ 30 comprimidos", 990), ("50 mg c/ 30 comprimidos", 1490)),
    ),
    Medicine(
        "Sinvastatina",
        "30049069",
        (
            ("20 mg c/ 30 comprimidos revestidos", 2290),
            ("40 mg c/ 30 comprimidos revestidos", 3490),
        ),
    ),
    Medicine(
        "Rosuvastatina Cálcica",
        "30049069",
        (
            ("10 mg c/ 30 comprimidos revestidos", 5990),
            ("20 mg c/ 30 comprimidos revestidos", 8990),
        ),
        ("Crestor", "AstraZeneca"),
    ),
    Medicine(
        "Cloridrato de Metformina",
        "30049069",
        (("500 mg c/ 30 comprimidos", 890), ("850 mg c/ 30 comprimidos", 1190)),
        ("Glifage", "Merck"),
    ),
    Medicine(
        "Omeprazol", "30049099", (("20 mg c/ 28 cápsulas", 1990), ("40 mg c/ 28 cápsulas", 3790))
    ),
    Medicine(
        "Pantoprazol Sódico Sesqui-hidratado",
        "30049099",
        (("40 mg c/ 28 comprimidos revestidos", 4590),),
    ),
    Medicine(
        "Amoxicilina",
        "30042099",
        (("500 mg c/ 21 cápsulas", 2890), ("250 mg/5 mL pó para suspensão oral 150 mL", 2190)),
    ),
    Medicine(
        "Azitromicina Di-hidratada", "30042099", (("500 mg c/ 3 comprimidos revestidos", 2690),)
    ),
    Medicine("Cefalexina", "30042099", (("500 mg c/ 8 cápsulas", 2390),)),
    Medicine(
        "Levotiroxina Sódica",
        "30049099",
        (
            ("25 mcg c/ 30 comprimidos", 1390),
            ("50 mcg c/ 30 comprimidos", 1490),
            ("100 mcg c/ 30 comprimidos", 1590),
        ),
        ("Puran T4", "Sanofi"),
    ),
    Medicine(
        "Cloridrato de Sertralina",
        "30049099",
        (("50 mg c/ 30 comprimidos revestidos", 4990),),
        ("Zoloft", "Pfizer"),
    ),
    Medicine(
        "Clonazepam",
        "30049099",
        (("2 mg c/ 30 comprimidos", 1290), ("2,5 mg/mL solução oral gotas 20 mL", 1590)),
        ("Rivotril", "Roche"),
    ),
    Medicine("Loratadina", "30049099", (("10 mg c/ 12 comprimidos", 1490),)),
    Medicine(
        "Maleato de Dexclorfeniramina",
        "30049099",
        (("2 mg c/ 20 comprimidos", 1190), ("0,4 mg/mL xarope 120 mL", 1690)),
    ),
    Medicine("Nimesulida", "30049099", (("100 mg c/ 12 comprimidos", 1090),)),
    Medicine(
        "Diclofenaco Sódico",
        "30049099",
        (("50 mg c/ 20 comprimidos", 990), ("10 mg/g gel 60 g", 2490)),
    ),
    Medicine("Prednisona", "30049099", (("20 mg c/ 10 comprimidos", 1290),)),
    Medicine("Fluconazol", "30049099", (("150 mg c/ 1 cápsula", 1090),)),
    Medicine(
        "Citrato de Sildenafila",
        "30049099",
        (("50 mg c/ 4 comprimidos revestidos", 3490),),
        ("Viagra", "Pfizer"),
    ),
    Medicine(
        "Butilbrometo de Escopolamina",
        "30049099",
        (("10 mg c/ 20 drágeas", 1990),),
        ("Buscopan", "Boehringer Ingelheim"),
    ),
    Medicine(
        "Simeticona",
        "30049099",
        (("75 mg/mL emulsão oral gotas 15 mL", 1390), ("125 mg c/ 10 cápsulas", 1490)),
        ("Luftal", "Reckitt"),
    ),
    Medicine(
        "Colecalciferol (Vitamina D3)",
        "30045090",
        (("1.000 UI c/ 30 cápsulas", 2990), ("7.000 UI c/ 4 comprimidos", 2490)),
    ),
    Medicine("Sulfato Ferroso", "30049099", (("40 mg Fe c/ 50 comprimidos", 990),)),
    Medicine(
        "Etinilestradiol + Levonorgestrel",
        "30066000",
        (("0,03 mg + 0,15 mg c/ 21 comprimidos", 1290),),
    ),
)


@dataclass(frozen=True)
class ConsumerProduct:
    """A non-medicine line a pharmacy sells: cosmetics, hygiene, supplements, health devices."""

    description: str
    manufacturers: tuple[str, ...]
    ncm: str
    category: str
    price_cents: int
    anvisa_class: str | None
    """Key of :data:`ANVISA_CATEGORY`, or None when ANVISA only notifies (no registration)."""


CONSUMER_PRODUCTS: tuple[ConsumerProduct, ...] = (
    ConsumerProduct(
        "Protetor Solar Corporal FPS 50 200 mL",
        ("L'Oréal", "Beiersdorf", "Kenvue"),
        "33049990",
        "Dermocosmético",
        5990,
        "cosmetico",
    ),
    ConsumerProduct(
        "Hidratante Facial com Ácido Hialurônico 40 g",
        ("L'Oréal", "Beiersdorf", "Galderma"),
        "33049910",
        "Dermocosmético",
        8990,
        "cosmetico",
    ),
    ConsumerProduct(
        "Água Micelar Demaquilante 200 mL",
        ("L'Oréal", "NAOS", "Pierre Fabre"),
        "33049990",
        "Dermocosmético",
        4990,
        None,
    ),
    ConsumerProduct(
        "Creme Hidratante Corporal Pele Extrasseca 400 mL",
        ("Beiersdorf", "Kenvue", "Galderma"),
        "33049910",
        "Dermocosmético",
        3490,
        None,
    ),
    ConsumerProduct(
        "Sabonete em Barra Glicerinado Erva-Doce 90 g",
        ("Granado", "Unilever", "Kenvue"),
        "34011190",
        "Higiene Pessoal",
        590,
        None,
    ),
    ConsumerProduct(
        "Shampoo Anticaspa 200 mL",
        ("Unilever", "Procter & Gamble", "Granado"),
        "33051000",
        "Higiene Pessoal",
        2290,
        "cosmetico",
    ),
    ConsumerProduct(
        "Creme Dental com Flúor Proteção Anticáries 90 g",
        ("Colgate-Palmolive", "Haleon", "Procter & Gamble"),
        "33061000",
        "Higiene Pessoal",
        690,
        None,
    ),
    ConsumerProduct(
        "Fio Dental Menta 50 m",
        ("Kenvue", "Procter & Gamble", "Colgate-Palmolive"),
        "33062000",
        "Higiene Pessoal",
        990,
        None,
    ),
    ConsumerProduct(
        "Escova Dental Macia",
        ("Colgate-Palmolive", "Procter & Gamble", "Curaprox"),
        "96032100",
        "Higiene Pessoal",
        1290,
        None,
    ),
    ConsumerProduct(
        "Desodorante Roll-on Antitranspirante 50 mL",
        ("Unilever", "Beiersdorf", "Granado"),
        "33072010",
        "Higiene Pessoal",
        1490,
        None,
    ),
    ConsumerProduct(
        "Fralda Infantil Tamanho G c/ 30 unidades",
        ("Procter & Gamble", "Kimberly-Clark", "Unicharm"),
        "96190000",
        "Infantil",
        5490,
        None,
    ),
    ConsumerProduct(
        "Absorvente Noturno com Abas c/ 8 unidades",
        ("Procter & Gamble", "Kimberly-Clark", "Kenvue"),
        "96190000",
        "Higiene Pessoal",
        690,
        None,
    ),
    ConsumerProduct(
        "Curativo Adesivo Transparente c/ 40 unidades",
        ("Kenvue", "3M do Brasil", "Cremer"),
        "30051090",
        "Correlatos",
        1190,
        "correlato",
    ),
    ConsumerProduct(
        "Seringa Descartável 3 mL com Agulha 25x7",
        ("BD", "Descarpack", "SR Produtos"),
        "90183119",
        "Correlatos",
        190,
        "correlato",
    ),
    ConsumerProduct(
        "Luva de Procedimento Látex M c/ 100 unidades",
        ("Descarpack", "Supermax", "Mucambo"),
        "40151900",
        "Correlatos",
        3990,
        "correlato",
    ),
    ConsumerProduct(
        "Polivitamínico de A a Z c/ 60 comprimidos",
        ("Haleon", "Cimed", "Bayer"),
        "21069030",
        "Suplemento Alimentar",
        5990,
        "alimento",
    ),
    ConsumerProduct(
        "Vitamina C 1 g Efervescente c/ 10 comprimidos",
        ("Bayer", "Cimed", "EMS"),
        "21069030",
        "Suplemento Alimentar",
        1990,
        "alimento",
    ),
    ConsumerProduct(
        "Colágeno Hidrolisado em Pó Sabor Limão 300 g",
        ("Sanavita", "Nutrify", "Cimed"),
        "21069030",
        "Suplemento Alimentar",
        7990,
        None,
    ),
)

MEDICINE_CATEGORIES = ("Medicamento Genérico", "Medicamento Similar", "Medicamento de Referência")

COMPLEMENTARY_INFORMATION = (
    "Documento emitido por ME ou EPP optante pelo Simples Nacional. Não gera direito a "
    "crédito fiscal de IPI.",
    "ICMS retido anteriormente por substituição tributária. Mercadoria sujeita ao regime de "
    "ST conforme o regulamento do ICMS.",
    "Val. aprox. dos tributos: R$ {taxes} ({share}%). Fonte: IBPT. Lei da Transparência nº "
    "12.741/2012.",
    "Pedido nº {order} — atendimento: {clerk}. Obrigado pela preferência!",
    "Venda de medicamento controlado: receita retida conforme a Portaria SVS/MS nº 344/98.",
    "Devolução referente à NF-e nº {order}; mercadoria em perfeito estado, conferida no ato.",
)
CLERKS = (
    "João",
    "Conceição",
    "Antônio",
    "Márcia",
    "Sebastião",
    "Luíza",
    "Ângela",
    "Íris",
    "Gonçalo",
)


def weighted(items: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """Expand (value, weight) pairs into a tuple a uniform draw picks from with those weights."""
    return tuple(value for value, weight in items for _ in range(weight))
