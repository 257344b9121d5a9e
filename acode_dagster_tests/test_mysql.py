"""MySQL URLs: parsed exactly, refused clearly, and never echoed with their password."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acode_dagster.errors import ConfigError, redact
from acode_dagster.mysql import MySQLEndpoint


def test_parse_full_url() -> None:
    endpoint = MySQLEndpoint.parse(
        "mysql://acode:p%40ss%3Aw0rd@db.farmarcas.local:3307/acode_farmarcas"
    )
    assert (endpoint.host, endpoint.port, endpoint.user, endpoint.database) == (
        "db.farmarcas.local",
        3307,
        "acode",
        "acode_farmarcas",
    )
    assert endpoint.password == "p@ss:w0rd"
    assert endpoint.display == "mysql://acode@db.farmarcas.local:3307/acode_farmarcas"
    assert "p@ss" not in repr(endpoint)


def test_password_falls_back_to_the_separate_variable() -> None:
    endpoint = MySQLEndpoint.parse("mysql://acode@h/acode_farmarcas", password="from-ACODE_PASS")
    assert endpoint.password == "from-ACODE_PASS"
    assert endpoint.port == 3306
    assert MySQLEndpoint.parse("mysql://acode:inline@h/db", password="other").password == "inline"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgres://a:b@h:1/db", "scheme is 'postgres'"),
        ("mysql://a:b@h:1/", "names no database"),
        ("mysql://h:1/db", "names no user"),
        ("mysql://a:b@:1/db", "names no host"),
        ("mysql://a:b@h:99999/db", "not a valid MySQL URL"),
        ("mysql://a:b@h:1/db?ssl=1", "query string"),
    ],
)
def test_malformed_urls_name_the_setting_and_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MySQLEndpoint.parse(url, setting="ACODE_MYSQL_PRIMARY_URL")
    message = str(caught.value)
    assert "ACODE_MYSQL_PRIMARY_URL" in message
    assert problem in message
    assert "mysql://acode:PASSWORD@" in message or "expected" in message
    assert ":b@" not in message


@given(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=6, max_size=30)
)
def test_no_password_survives_in_a_parse_error(password: str) -> None:
    from urllib.parse import quote

    for url in (
        f"mysql://u:{quote(password, safe='')}@h:99999/db",
        f"ftp://u:{quote(password, safe='')}@h/db",
    ):
        with pytest.raises(ConfigError) as caught:
            MySQLEndpoint.parse(url)
        assert password not in str(caught.value)
        assert quote(password, safe="") not in str(caught.value)


def test_redact_removes_secrets_and_url_passwords() -> None:
    text = "failed mysql://root:hunter2@h:1/db with hunter2 and key s3cr3t"
    cleaned = redact(text, ["s3cr3t"])
    assert "hunter2" not in cleaned and "s3cr3t" not in cleaned
    assert "mysql://root:***@h:1/db" in cleaned
