"""No fragment of a password, anywhere: for any password (URL-special and non-ASCII characters,
percent-encoded or not), through the settings' parse, each client's connection errors, the
probes, a failed run's events and its alert, and the CLI."""

from __future__ import annotations

import json
import re
from datetime import date
from urllib.parse import quote, quote_plus, unquote

import dagster as dg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from acode_dagster.cli import main
from acode_dagster.defs.bronze.assets import bronze_assets
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.resources import build_resources
from acode_dagster.errors import MIN_FRAGMENT, AcodeError, ConfigError, redact
from acode_dagster.localstack import LocalStack
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.probes import ProbeSettings, probe_mysql
from acode_dagster.replicator import stream_batches
from acode_dagster.settings import Settings
from acode_dagster.tables import PRODUCTS
from acode_dagster_tests.defs.test_alerting import Sensor, alerting_for
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack

# What generated passwords are made of: every character a URL reserves or escapes, accents and
# other scripts, and plain letters and digits.
URL_SPECIAL = "/?#@:%&=+;,!$'()*[] ~\"\\"
NON_ASCII = "éçãõüßñÇÃ中文€😀ЖЯ"
ALPHABET = URL_SPECIAL + NON_ASCII + "abcdefghijKLMNOPQR0123456789-_."
BLANK = "Ω"
"""Not in ALPHABET: a password made of it shows which text a message has whatever the
password is."""

passwords = st.text(alphabet=ALPHABET, min_size=MIN_FRAGMENT, max_size=24).filter(
    lambda p: len(p.strip()) >= MIN_FRAGMENT
)


def fragments(password: str) -> set[str]:
    """Every run of MIN_FRAGMENT characters of the password, as written or percent-encoded,
    that is not made of URL punctuation alone (``////`` says nothing of a password)."""
    found = set()
    for text in {password, quote(password, safe=""), quote_plus(password)}:
        for start in range(len(text) - MIN_FRAGMENT + 1):
            piece = text[start : start + MIN_FRAGMENT]
            if any(c not in URL_SPECIAL for c in piece):
                found.add(piece)
    return found


def blanked(password: str) -> str:
    """The same password with every character that is not URL punctuation replaced, so it
    parses the same way and shares no fragment with the original."""
    return "".join(c if c in URL_SPECIAL else BLANK for c in password)


def leaks(text: str, password: str, baseline: str = "") -> set[str]:
    """Fragments of ``password`` in ``text`` that the same output for a blanked password does
    not have (those come from the message itself)."""
    return {piece for piece in fragments(password) if piece in text and piece not in baseline}


def parse_error(url: str, setting: str = "ACODE_MYSQL_PRIMARY_URL") -> str:
    try:
        MySQLEndpoint.parse(url, setting=setting)
    except ConfigError as exc:
        return str(exc)
    return ""


@given(passwords)
@example("3306")  # the port's digits: not a leak, the URL has them whatever the password
@example("Kx93vQ/pz#w?Lm@é")
@settings(max_examples=400, deadline=None)
def test_a_url_with_any_password_parses_exactly_or_is_refused_without_a_fragment(
    password: str,
) -> None:
    def encoded(secret: str) -> str:
        return f"mysql://acode:{quote(secret, safe='')}@db.example.com:3306/acode_farmarcas"

    endpoint = MySQLEndpoint.parse(encoded(password), setting="ACODE_MYSQL_PRIMARY_URL")
    assert endpoint.password == password
    blank = MySQLEndpoint.parse(encoded(blanked(password)))
    shown = endpoint.display + repr(endpoint)
    assert not leaks(shown, password, blank.display + repr(blank)), shown

    raw = f"mysql://acode:{password}@db.example.com:3306/acode_farmarcas"
    message = parse_error(raw)
    if message:
        assert "ACODE_MYSQL_PRIMARY_URL" in message
        assert "percent-encode" in message.lower() or "expected the form" in message
        baseline = parse_error(raw.replace(password, blanked(password)))
        assert not leaks(message, password, baseline), message
    else:
        # Read as written, it can only differ by the percent-escapes it happened to hold.
        assert MySQLEndpoint.parse(raw).password == unquote(password)


def test_the_issue_s_password_is_refused_with_the_fix_and_no_piece_of_it() -> None:
    message = parse_error("mysql://acode:Kx93vQ/pz#w?Lm@db.example.com:3306/acode_farmarcas")
    assert "Kx93vQ" not in message and "pz" not in message and "Lm@" not in message
    assert "ACODE_MYSQL_PRIMARY_URL" in message and "ACODE_PASS" in message
    backup = parse_error("mysql://acode:Kx93vQ/pz@h/db", setting="ACODE_MYSQL_BACKUP_URL")
    assert "ACODE_BACKUP_PASS" in backup


@given(passwords, st.sampled_from(["raw", "encoded", "plus", "json", "bytes", "repr", "piece"]))
@settings(max_examples=400, deadline=None)
def test_redact_hides_any_password_in_any_spelling_a_client_prints(
    password: str, spelling: str
) -> None:
    piece = max(re.split(r"[/?#@:\[\]\s]", password), key=len)
    shown = {
        "raw": password,
        "encoded": quote(password, safe=""),
        "plus": quote_plus(password),
        "json": json.dumps(password)[1:-1],
        "bytes": str(password.encode())[2:-1],
        "repr": repr(password)[1:-1],
        # What a parser reports of a password it cut at a delimiter.
        "piece": piece,
    }[spelling]
    text = (
        f"connect to mysql://acode:{shown}@h:1/db failed; "
        f"Port could not be cast to integer value as '{shown}'"
    )
    cleaned = redact(text, (password,))
    if len(shown) >= MIN_FRAGMENT:
        assert shown not in cleaned
    baseline = redact(text.replace(shown, BLANK * len(shown)), (blanked(password),))
    if spelling != "piece" or len(piece) >= MIN_FRAGMENT:
        assert not leaks(cleaned, password, baseline), cleaned
    # A URL's password goes even when nobody said it was one (a URL ends at a blank).
    if len(shown) >= MIN_FRAGMENT and not re.search(r"\s", shown):
        assert f"{shown}@h:1" not in redact(text)


# A real password for the real clients, with what generated passwords break on.
PASSWORD = "Kx93vQ/é#?@:%2F pz中"


def no_fragment(text: str, password: str = PASSWORD) -> None:
    found = leaks(text, password)
    assert not found, f"fragments {found} of the password in: {text[:2000]}"


def test_each_client_s_connection_error_names_the_problem_without_the_password(
    mariadb_pair: LocalStack,
) -> None:
    good = mariadb_pair.endpoint("primary")
    wrong = good.with_password(PASSWORD)
    closed = MySQLEndpoint(host="127.0.0.1", port=9, user="acode", database="x", password=PASSWORD)
    messages = []
    for endpoint in (wrong, closed):
        with pytest.raises(AcodeError) as caught:
            endpoint.connect().close()
        messages.append(str(caught.value))
        result = probe_mysql(endpoint, "primary", ProbeSettings(timeout_s=3))
        assert not result.healthy
        messages.append(json.dumps(result.to_json(), ensure_ascii=False))
    # The Arrow reader (connectorx) given its connection string, password in it, and refusing
    # it at once (its refusals from a server take its pool's 30 s of retries).
    unreadable = MySQLEndpoint(
        host="bad host", port=3306, user="acode", database="x", password=PASSWORD
    )
    with pytest.raises(AcodeError) as caught:
        list(stream_batches(unreadable, "SELECT 1", 10))
    messages.append(str(caught.value))
    assert "parse error" in messages[-1]
    assert "password" in messages[0].lower() and "ACODE_PASS" in messages[0]
    assert "unreachable" in messages[2]
    for message in messages:
        no_fragment(message)


def test_a_failed_run_its_events_its_alert_and_the_cli_carry_no_fragment(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The password as a person pastes it: unencoded, so the URL cannot even be read.
    raw_url = f"mysql://acode:{PASSWORD}@127.0.0.1:9/acode_farmarcas"
    monkeypatch.setenv("ACODE_MYSQL_PRIMARY_URL", raw_url)
    products = next(a for a in bronze_assets if bronze_key(PRODUCTS) in a.keys)
    seen: list[str] = []
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, alerting_for(slack_server, pagerduty_server))
        sensor.tick()
        result = dg.materialize(
            [products],
            partition_key=str(date(2026, 11, 10)),
            resources=build_resources(Settings.from_env()),
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        for _ in range(2):
            sensor.tick()
        records = instance.get_records_for_run(result.run_id).records
        seen += [repr(r.event_log_entry) for r in records]
        seen += [repr(event) for event in result.all_events]
        assert "percent-encode" in " ".join(seen).lower()
        (message,) = slack_server.messages
        seen.append(json.dumps(slack_server.requests, ensure_ascii=False, default=str))
        assert "ACODE_MYSQL_PRIMARY_URL" in message["text"]
    # The operator's command on the same settings: the health report.
    assert main(["health"]) == 1
    captured = capfd.readouterr()
    seen += [captured.out, captured.err]
    assert "ACODE_MYSQL_PRIMARY_URL" in captured.out + captured.err
    for text in seen:
        no_fragment(text)


def test_an_encoded_password_the_server_refuses_leaves_no_fragment_in_the_health_report(
    env: dict[str, str],
    mariadb_pair: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    good = mariadb_pair.endpoint("primary")
    monkeypatch.setenv(
        "ACODE_MYSQL_PRIMARY_URL",
        f"mysql://{good.user}:{quote(PASSWORD, safe='')}@{good.host}:{good.port}/{good.database}",
    )
    assert main(["health"]) == 1
    captured = capfd.readouterr()
    report = captured.out + captured.err
    assert "access denied" in report.lower() or "refused the user or password" in report
    no_fragment(report)
