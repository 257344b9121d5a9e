"""Alert delivery with the real Slack and PagerDuty clients against loopback servers."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from typing import Any

import pytest
from dagster_slack import SlackResource
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk import WebClient

from acode_dagster import alerts as alerts_module
from acode_dagster.alerts import (
    PERMANENT_REJECTIONS,
    Alert,
    BookLedger,
    DeliveryError,
    LedgerBook,
    Mark,
    Notifier,
    PagerDutyNotifier,
    Pending,
    SlackNotifier,
    channels_for,
    deliver,
    expire,
    format_slack,
)
from acode_dagster.errors import ConfigError
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack

CHANNEL = "#acode-alerts"


def slack_client(server: LoopbackSlack, token: str | None = None) -> WebClient:
    """The client production uses (Dagster's SlackResource), pointed at the loopback server."""
    client = SlackResource(token=token or server.token).get_client()
    client.base_url = server.base_url
    return client


def pagerduty(server: LoopbackPagerDuty, **kwargs: Any) -> PagerDutyNotifier:
    return PagerDutyNotifier(server.routing_key, base_url=server.base_url, **kwargs)


def check_alert(n: int = 1, **overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": f"check:fiscal:2026-11-20:null_share:{n}",
        "action": "trigger",
        "severity": "error",
        "title": f"null_share ERROR on farmarcas_si_analitico_diario 2026-11-{n:02d}",
        "dedup_key": f"acode/farmarcas_si_analitico_diario/2026-11-{n:02d}/null_share",
        "page": True,
        "table": "farmarcas_si_analitico_diario",
        "partition": f"2026-11-{n:02d}",
        "check": "null_share",
        "measured": "7.00 % NULL in CNPJ",
        "threshold": "ERROR at 5.00 %, WARN at 1.00 %",
        "details": {"column": "CNPJ", "rows": "1200"},
        "run_url": "http://dagster.local/runs/abc123?logs=type%3AASSET&x=1",
        "occurred_at": "2026-11-21T03:00:00+00:00",
    }
    fields.update(overrides)
    return Alert(**fields)


def pending(*alerts: Alert) -> list[Pending]:
    return [Pending(a, channels_for(a)) for a in alerts]


def posted_text(message: dict[str, Any]) -> str:
    """Everything a reader of a Slack message can see: fallback text and blocks."""
    return str(message["text"]) + json.dumps(message.get("blocks", []), ensure_ascii=False)


# ---------------------------------------------------------------------- values

optional_text = st.none() | st.text(max_size=40)
alerts = st.builds(
    Alert,
    id=st.text(min_size=1, max_size=40),
    action=st.sampled_from(["trigger", "resolve"]),
    severity=st.sampled_from(["critical", "error", "warning", "info"]),
    title=st.text(max_size=80),
    dedup_key=st.text(min_size=1, max_size=60),
    page=st.booleans(),
    table=optional_text,
    partition=optional_text,
    check=optional_text,
    measured=optional_text,
    threshold=optional_text,
    details=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=4),
    run_url=optional_text,
    occurred_at=optional_text,
)


@given(alerts, st.sets(st.sampled_from(["slack", "pagerduty"])), st.integers(0, 10_000))
def test_alert_and_pending_survive_a_json_round_trip(
    alert: Alert, channels: set[str], attempts: int
) -> None:
    item = Pending(alert, frozenset(channels), attempts)
    raw = json.loads(json.dumps(item.to_json()))
    assert Pending.from_json(raw) == item
    assert Alert.from_json(json.loads(json.dumps(alert.to_json()))) == alert


def test_from_json_rejects_malformed_values() -> None:
    good = check_alert().to_json()
    for key, value in [
        ("severity", "fatal"),
        ("action", "snooze"),
        ("page", "yes"),
        ("title", None),
        ("details", {"rows": 12}),
        ("table", 3),
    ]:
        with pytest.raises(ValueError, match=key if key != "details" else "details"):
            Alert.from_json({**good, key: value})
    with pytest.raises(ValueError, match="unknown channels"):
        Pending.from_json({"alert": good, "channels": ["email"]})


def test_channels_follow_paging() -> None:
    assert channels_for(check_alert(page=True)) == {"slack", "pagerduty"}
    assert channels_for(check_alert(page=False)) == {"slack"}


def test_format_escapes_slack_markup_and_keeps_blocks_within_limits() -> None:
    alert = check_alert(title="x" * 400, details={"note": "<!channel> & <http://evil|click>"})
    text, blocks = format_slack(alert, CHANNEL)
    dumped = text + json.dumps(blocks)
    assert "<!channel>" not in dumped
    assert "&lt;!channel&gt; &amp; &lt;http://evil|click&gt;" in dumped
    assert len(blocks[0]["text"]["text"]) <= 150
    # The run link keeps Slack's <url|label> form, with & escaped as Slack asks.
    assert "<http://dagster.local/runs/abc123?logs=type%3AASSET&amp;x=1|View in Dagster>" in text


# ---------------------------------------------------------------------- delivery


def test_check_alert_reaches_slack_once_with_the_facts(slack_server: LoopbackSlack) -> None:
    notifiers: dict[str, Notifier] = {"slack": SlackNotifier(slack_client(slack_server), CHANNEL)}
    alert = check_alert(page=False)
    still, delivered = deliver(pending(alert), notifiers, print)

    assert still == []
    assert delivered == [(alert, "slack")]
    assert len(slack_server.messages) == 1
    message = slack_server.messages[0]
    assert message["channel"] == CHANNEL
    shown = posted_text(message)
    for fact in (
        "farmarcas_si_analitico_diario",
        "2026-11-01",
        "null_share",
        "7.00 % NULL in CNPJ",
        "ERROR at 5.00 %, WARN at 1.00 %",
        ":red_circle:",
        "CNPJ",
        "View in Dagster",
        "http://dagster.local/runs/abc123",
    ):
        assert fact in shown, fact
    assert [b["type"] for b in message["blocks"]][:2] == ["header", "section"]


def test_slack_base_url_without_trailing_slash_still_works(slack_server: LoopbackSlack) -> None:
    client = slack_client(slack_server)
    client.base_url = slack_server.base_url.rstrip("/")
    SlackNotifier(client, CHANNEL).send(check_alert())
    assert [r["path"] for r in slack_server.requests] == ["/api/chat.postMessage"]
    assert len(slack_server.messages) == 1


def test_paged_alert_reaches_pagerduty_with_dedup_key_and_severity(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    notifiers: dict[str, Notifier] = {
        "slack": SlackNotifier(slack_client(slack_server), CHANNEL),
        "pagerduty": pagerduty(pagerduty_server),
    }
    alert = check_alert(severity="critical")
    still, delivered = deliver(pending(alert), notifiers, print)

    assert still == []
    assert delivered == [(alert, "slack"), (alert, "pagerduty")]
    [event] = pagerduty_server.events
    assert event["event_action"] == "trigger"
    assert event["routing_key"] == pagerduty_server.routing_key
    assert event["dedup_key"] == alert.dedup_key
    payload = event["payload"]
    assert payload["severity"] == "critical"
    assert payload["summary"] == alert.title
    assert payload["source"] == "acode-dagster"
    assert payload["component"] == "farmarcas_si_analitico_diario"
    assert payload["group"] == "bronze_acode"
    assert payload["class"] == "null_share"
    assert payload["timestamp"] == alert.occurred_at
    assert payload["custom_details"]["measured"] == "7.00 % NULL in CNPJ"
    assert payload["custom_details"]["column"] == "CNPJ"
    assert event["links"] == [{"href": alert.run_url, "text": "Dagster run"}]


def test_resolve_sends_a_pagerduty_resolve_with_the_same_dedup_key(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    notifiers: dict[str, Notifier] = {
        "slack": SlackNotifier(slack_client(slack_server), CHANNEL),
        "pagerduty": pagerduty(pagerduty_server),
    }
    problem = check_alert()
    resolved = check_alert(id=problem.id + ":resolve", action="resolve", severity="info")
    deliver(pending(problem), notifiers, print)
    still, _ = deliver(pending(resolved), notifiers, print)

    assert still == []
    trigger, resolve = pagerduty_server.events
    assert resolve["event_action"] == "resolve"
    assert resolve["dedup_key"] == trigger["dedup_key"] == problem.dedup_key
    assert "payload" not in resolve
    assert ":white_check_mark: resolved" in slack_server.messages[1]["text"]
    assert "farmarcas_si_analitico_diario" in posted_text(slack_server.messages[1])


def test_slack_outage_delays_slack_only_and_sends_each_alert_once(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    notifiers: dict[str, Notifier] = {
        "slack": SlackNotifier(slack_client(slack_server), CHANNEL),
        "pagerduty": pagerduty(pagerduty_server),
    }
    first, second = check_alert(1), check_alert(2, page=False)
    lines: list[str] = []
    queue = pending(first, second)

    slack_server.down = True
    for attempt in (1, 2):
        queue, delivered = deliver(queue, notifiers, lines.append)
        assert delivered == ([(first, "pagerduty")] if attempt == 1 else [])
        assert [(p.alert, p.channels, p.attempts) for p in queue] == [
            (first, frozenset({"slack"}), attempt),
            # Never tried: Slack was already down when its turn came.
            (second, frozenset({"slack"}), 0),
        ]
        assert queue[0].last_error == {"slack": "Slack API chat.postMessage: HTTP 503"}
        assert queue[1].last_error["slack"].startswith("not tried, slack failed earlier")
    assert slack_server.messages == []
    assert len(lines) == 2
    assert all("slack" in line and "HTTP 503" in line for line in lines)
    # Queue round trips through the cursor between ticks.
    queue = [Pending.from_json(json.loads(json.dumps(p.to_json()))) for p in queue]

    slack_server.down = False
    queue, delivered = deliver(queue, notifiers, lines.append)
    assert queue == []
    assert delivered == [(first, "slack"), (second, "slack")]
    queue, delivered = deliver(queue, notifiers, lines.append)
    assert (queue, delivered) == ([], [])

    assert [m["text"].splitlines()[0] for m in slack_server.messages] == [
        f":red_circle: *ERROR* {first.title}",
        f":red_circle: *ERROR* {second.title}",
    ]
    assert [e["dedup_key"] for e in pagerduty_server.events] == [first.dedup_key]
    assert len(lines) == 2


def test_deliver_stops_trying_a_service_after_its_first_failure(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    notifiers: dict[str, Notifier] = {
        "slack": SlackNotifier(slack_client(slack_server), CHANNEL),
        "pagerduty": pagerduty(pagerduty_server),
    }
    alerts = [check_alert(n) for n in range(1, 6)]
    slack_server.down = True
    pagerduty_server.down = True
    lines: list[str] = []
    queue, delivered = deliver(pending(*alerts), notifiers, lines.append)

    assert delivered == []
    assert len(slack_server.requests) == 1
    assert len(pagerduty_server.requests) == 1
    assert [p.alert for p in queue] == alerts
    assert [p.attempts for p in queue] == [1, 0, 0, 0, 0]
    assert all(p.channels == {"slack", "pagerduty"} for p in queue)
    assert len(lines) == 2

    # PagerDuty comes back alone: it takes all five, Slack is tried once more.
    pagerduty_server.down = False
    queue, delivered = deliver(queue, notifiers, lines.append)
    assert delivered == [(a, "pagerduty") for a in alerts]
    assert len(slack_server.requests) == 2
    assert [p.channels for p in queue] == [frozenset({"slack"})] * 5


def test_rejected_slack_token_names_slack_and_the_error_not_the_token(
    slack_server: LoopbackSlack,
) -> None:
    wrong = "xoxb-wrong-" + secrets.token_hex(12)
    notifier = SlackNotifier(slack_client(slack_server, token=wrong), CHANNEL)
    with pytest.raises(DeliveryError) as caught:
        notifier.send(check_alert())

    message = str(caught.value)
    assert "Slack" in message
    assert "invalid_auth" in message
    assert wrong not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert slack_server.messages == []


def test_without_notifiers_alerts_go_to_the_log_once(slack_server: LoopbackSlack) -> None:
    lines: list[str] = []
    alert = check_alert()
    queue, delivered = deliver(pending(alert), {}, lines.append)

    assert queue == []
    assert delivered == []
    assert len(lines) == 1
    for fact in (alert.title, "null_share", "7.00 % NULL in CNPJ", alert.dedup_key):
        assert fact in lines[0]

    # Slack configured, PagerDuty not: the paged alert reaches Slack and the log.
    notifiers: dict[str, Notifier] = {"slack": SlackNotifier(slack_client(slack_server), CHANNEL)}
    queue, delivered = deliver(pending(alert), notifiers, lines.append)
    assert (queue, delivered) == ([], [(alert, "slack")])
    assert len(lines) == 2
    assert "no notifier for pagerduty" in lines[1]


def test_secrets_never_leave_in_requests_logs_or_errors(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    # "&" on purpose: Slack escaping would turn it into "&amp;" and hide it from a late redact.
    secret_tail = secrets.token_hex(8)
    secret = f"p&ss-{secret_tail}"
    db_password = secrets.token_hex(8)
    token, key = slack_server.token, pagerduty_server.routing_key
    leaky = check_alert(
        title=f"null_share ERROR {secret}",
        measured=f"7.00 % with {token}",
        details={
            "note": f"secret {secret}, key {key}",
            "dsn": f"mysql://acode:{db_password}@db:3306/fiscal",
        },
        run_url=f"http://dagster.local/runs/1?t={secret}",
    )
    # Each notifier knows its own credential; the other service's is one of the extra secrets.
    notifiers: dict[str, Notifier] = {
        "slack": SlackNotifier(slack_client(slack_server), CHANNEL, secrets=[secret, key]),
        "pagerduty": pagerduty(pagerduty_server, secrets=[secret, token]),
    }
    lines: list[str] = []
    slack_server.down = True
    queue, _ = deliver(pending(leaky), notifiers, lines.append)
    slack_server.down = False
    queue, _ = deliver(queue, notifiers, lines.append)
    assert queue == []
    # And with nowhere to send it, the log line is redacted too.
    deliver(pending(leaky), {}, lines.append, secrets=[secret, token, key])
    resolved = check_alert(action="resolve", dedup_key=f"acode/{secret}")
    deliver(pending(resolved), notifiers, lines.append)

    # The tail, not the whole secret: an escaped copy ("p&amp;ss-...") is a leak as well.
    forbidden = (secret_tail, token, key, db_password)
    slack_bodies = [r["body"] + r["path"] for r in slack_server.requests]
    pd_bodies = []
    for request in pagerduty_server.requests:
        event = json.loads(request["body"])
        # The one place the routing key belongs: the field that authenticates the event.
        assert event.pop("routing_key") == key
        pd_bodies.append(json.dumps(event) + request["path"] + json.dumps(request["headers"]))
    assert len(slack_bodies) == 3
    assert len(pd_bodies) == 2
    assert len(lines) == 2
    for text in [*slack_bodies, *pd_bodies, *lines]:
        for value in forbidden:
            assert value not in text
    assert "***" in slack_server.messages[0]["text"]
    assert pagerduty_server.events[0]["payload"]["custom_details"]["note"] == "secret ***, key ***"
    assert pagerduty_server.events[1]["dedup_key"] == "acode/***"


def test_unreachable_services_fail_fast_without_retrying(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    slack = SlackNotifier(slack_client(slack_server), CHANNEL)
    pager = pagerduty(pagerduty_server)
    slack_server.stop()
    pagerduty_server.stop()

    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"^Slack API chat\.postMessage: cannot connect"):
        slack.send(check_alert())
    with pytest.raises(DeliveryError, match=r"^PagerDuty Events API: cannot connect"):
        pager.send(check_alert())
    assert time.monotonic() - started < 1.0


def test_pagerduty_timeout_is_honoured(pagerduty_server: LoopbackPagerDuty) -> None:
    pagerduty_server.delay_s = 2.0
    pager = pagerduty(pagerduty_server, timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="ReadTimeout"):
        pager.send(check_alert())
    assert time.monotonic() - started < 1.0
    assert len(pagerduty_server.requests) == 1


def test_rate_limits_do_not_make_either_client_wait(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    slack_server.rate_limited = True
    pagerduty_server.rate_limited = True
    slack = SlackNotifier(slack_client(slack_server), CHANNEL)
    pager = pagerduty(pagerduty_server)

    started = time.monotonic()
    with pytest.raises(DeliveryError, match="HTTP 429"):
        slack.send(check_alert())
    with pytest.raises(DeliveryError, match="HTTP 429"):
        pager.send(check_alert())
    assert time.monotonic() - started < 1.0
    assert len(slack_server.requests) == 1
    # The library's only bounded setting for 429 is one immediate retry.
    assert len(pagerduty_server.requests) == 2


def test_pagerduty_rejection_names_the_cause_not_the_key(
    pagerduty_server: LoopbackPagerDuty,
) -> None:
    other_key = secrets.token_hex(16)
    pager = PagerDutyNotifier(other_key, base_url=pagerduty_server.base_url)
    with pytest.raises(DeliveryError) as caught:
        pager.send(check_alert())
    message = str(caught.value)
    assert message == "PagerDuty Events API: HTTP 400 (Invalid routing key)"
    assert pagerduty_server.events == []


def test_pagerduty_refuses_plain_http_off_loopback() -> None:
    with pytest.raises(ConfigError, match="https://"):
        PagerDutyNotifier(secrets.token_hex(16), base_url="http://events.pagerduty.com")
    PagerDutyNotifier(secrets.token_hex(16), base_url="http://localhost:1").close()


# ---------------------------------------------------------------------- give-up bookkeeping


@given(
    alerts,
    st.sets(st.sampled_from(["slack", "pagerduty"]), min_size=1),
    st.integers(0, 100),
    st.none() | st.floats(0, 2e9),
    st.dictionaries(st.sampled_from(["slack", "pagerduty"]), st.text(max_size=30)),
    st.dictionaries(st.sampled_from(["slack", "pagerduty"]), st.integers(1, 9)),
)
def test_pending_with_its_attempt_record_survives_a_json_round_trip(  # noqa: PLR0917
    alert: Alert,
    channels: set[str],
    attempts: int,
    first: float | None,
    errors: dict[str, str],
    rejections: dict[str, int],
) -> None:
    item = Pending(alert, frozenset(channels), attempts, first, errors, rejections)
    assert Pending.from_json(json.loads(json.dumps(item.to_json()))) == item


def test_a_pending_alert_saved_before_attempt_times_still_loads() -> None:
    raw = {"alert": check_alert().to_json(), "channels": ["slack"], "attempts": 2}
    item = Pending.from_json(raw)
    assert (item.attempts, item.first_attempt_at, item.last_error, item.rejections) == (
        2,
        None,
        {},
        {},
    )
    with pytest.raises(ValueError, match="first_attempt_at"):
        Pending.from_json({**raw, "first_attempt_at": "yesterday"})


HOUR = 3600.0
CHANNEL_SETS = st.sets(st.sampled_from(["slack", "pagerduty"]), min_size=1)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            CHANNEL_SETS,
            st.none() | st.floats(0, 100 * HOUR),
            st.dictionaries(st.sampled_from(["slack", "pagerduty"]), st.integers(1, 5)),
        ),
        max_size=8,
    ),
    st.floats(0, 100 * HOUR),
    st.floats(0, 50 * HOUR),
)
def test_expire_gives_up_exactly_what_is_too_old_or_rejected_for_good(
    rows: list[tuple[set[str], float | None, dict[str, int]]], now: float, limit: float
) -> None:
    queue = [
        Pending(
            check_alert(n),
            frozenset(channels),
            attempts=n,
            first_attempt_at=first,
            last_error={c: f"{c} error {n}" for c in channels},
            rejections={c: r for c, r in rejected.items() if c in channels},
        )
        for n, (channels, first, rejected) in enumerate(rows, 1)
    ]
    kept, given_up = expire(queue, now, limit)

    expected_kept = []
    for item in queue:
        first = item.first_attempt_at
        if first is not None and now - first >= limit:
            gone = set(item.channels)
        else:
            gone = {c for c in item.channels if item.rejections.get(c, 0) >= PERMANENT_REJECTIONS}
        told = [g for g in given_up if g.alert == item.alert]
        assert {g.channel for g in told} == gone
        for g in told:
            assert g.attempts == item.attempts
            assert g.last_error == item.last_error[g.channel]
            assert g.alert.id in g.describe() and g.channel in g.describe()
        if item.channels - gone:
            expected_kept.append((item.alert, item.channels - gone))
    assert [(p.alert, p.channels) for p in kept] == expected_kept
    for p in kept:
        assert set(p.last_error) <= p.channels and set(p.rejections) <= p.channels


def test_a_rejected_alert_does_not_hold_back_the_others_and_is_given_up() -> None:
    bad, good = check_alert(1, page=False), check_alert(2, page=False)
    sent: list[str] = []

    class Picky:
        channel = "slack"

        def send(self, alert: Alert) -> None:
            if alert == bad:
                raise DeliveryError(
                    "Slack API chat.postMessage: msg_too_long", permanent=True, alert_only=True
                )
            sent.append(alert.id)

    queue = pending(bad, good)
    for tick in range(PERMANENT_REJECTIONS):
        queue, _ = deliver(queue, {"slack": Picky()}, print, now=1000.0 + tick)
        queue, given_up = expire(queue, 1000.0 + tick, 24 * HOUR)
    assert sent == [good.id]
    assert queue == []
    (gone,) = given_up
    assert (gone.alert, gone.channel, gone.attempts) == (bad, "slack", PERMANENT_REJECTIONS)
    assert "msg_too_long" in gone.last_error


# ---------------------------------------------------------------------- the delivery ledger

TICK_IDS = st.sampled_from(["a1", "b2", "c3", "d4"])
MARKS = st.builds(Mark, st.sampled_from(["sending", "delivered"]), st.floats(0, 1e6), TICK_IDS)


@given(
    st.dictionaries(st.text(min_size=1, max_size=20), MARKS, max_size=10),
    TICK_IDS,
    st.floats(0, 2e6),
)
def test_settling_the_ledger_drops_only_what_no_replay_can_need(
    marks: dict[str, Mark], confirmed: str, now: float
) -> None:
    book = LedgerBook(dict(marks), {"slack #alerts": "C0123"})
    assert LedgerBook.from_json(book.to_json()) == book
    book.settle(confirmed, now, keep_s=1e5)
    for key, mark in marks.items():
        confirmed_delivery = mark.state == "delivered" and mark.tick == confirmed
        assert (key in book.marks) == (not confirmed_delivery and now - mark.at <= 1e5)
    assert book.places == {"slack #alerts": "C0123"}


class Killed(BaseException):
    """The process died (SIGKILL): nothing runs on in it, not even an ``except Exception``."""


SEND_STEPS = st.sampled_from(["ok", "fail", "fail_after", "crash_before", "crash_after"])
FIND_STEPS = st.sampled_from(["ok", "down", "crash", "blind"])


class FakeService:
    """A service keeping what it received, and failing or dying as its scripts say (once
    they run out, it works)."""

    def __init__(self, channel: str, sends: list[str], finds: list[str] | None = None) -> None:
        self.channel = channel
        self.received: list[str] = []
        self.blind: set[str] = set()
        self._sends, self._finds = list(sends), list(finds or [])

    def send(self, alert: Alert) -> str | None:
        step = self._sends.pop(0) if self._sends else "ok"
        if step == "crash_before":
            raise Killed
        if step == "fail":
            raise DeliveryError(f"{self.channel}: HTTP 503")
        self.received.append(alert.id)
        if step == "crash_after":
            raise Killed
        if step == "fail_after":
            raise DeliveryError(f"{self.channel}: timed out", maybe_sent=True)
        return "C0123"

    @property
    def calm(self) -> bool:
        return not self._sends and not self._finds


class FakeSlack(FakeService):
    destination = "slack #alerts"

    def find(self, alert: Alert, since: float, where: str | None) -> bool:
        step = self._finds.pop(0) if self._finds else "ok"
        if step == "crash":
            raise Killed
        if step == "down":
            raise DeliveryError("slack: HTTP 503")
        if step == "blind":
            self.blind.add(alert.id)
            raise DeliveryError("slack: missing_scope", permanent=True)
        return alert.id in self.received


def run_ticks(
    source: list[Alert], reads: list[int], notifiers: dict[str, Notifier], warn: list[str]
) -> tuple[dict[str, Any], LedgerBook]:
    """The alert sensor's loop in miniature: each tick reads a few new alerts from ``source``
    and delivers the pending ones with a ledger kept in a store that survives; its cursor
    (read mark, pending list, tick number) is saved only when the tick returns."""
    store: dict[str, str] = {}
    cursor: dict[str, Any] = {"read": 0, "pending": [], "tick": ""}
    services = [n for n in notifiers.values() if isinstance(n, FakeService)]

    def save(text: str) -> None:
        store["ledger"] = text

    for number in range(300):
        book = LedgerBook.from_json(store["ledger"]) if "ledger" in store else LedgerBook()
        now = 1000.0 + number
        if book.settle(cursor["tick"], now):
            save(book.to_json())
        ledger = BookLedger(book, f"t{number}", save)  # an id per attempt, never reused
        queue = [Pending.from_json(p) for p in cursor["pending"]]
        step = reads.pop(0) if reads else len(source)
        fresh = source[cursor["read"] : cursor["read"] + step]
        queue += [Pending(a, channels_for(a)) for a in fresh]
        try:
            queue, _ = deliver(
                queue, notifiers, lambda _: None, ledger=ledger, now=now, warn=warn.append
            )
        except Killed:
            continue  # the cursor stays what the last finished tick saved
        cursor = {
            "read": cursor["read"] + len(fresh),
            "pending": [p.to_json() for p in queue],
            "tick": f"t{number}",
        }
        if cursor["read"] == len(source) and not queue and all(s.calm for s in services):
            break
    book = LedgerBook.from_json(store["ledger"]) if "ledger" in store else LedgerBook()
    return cursor, book


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=6),
    st.lists(SEND_STEPS, max_size=25),
    st.lists(FIND_STEPS, max_size=8),
    st.lists(SEND_STEPS, max_size=15),
    st.lists(st.integers(0, 3), max_size=8),
)
def test_each_alert_reaches_slack_exactly_once_whatever_fails_or_dies(
    pages: list[bool],
    slack_steps: list[str],
    find_steps: list[str],
    pagerduty_steps: list[str],
    reads: list[int],
) -> None:
    """Sends that fail, time out after arriving, or die before or after arriving; look-ups
    that fail or die; ticks replayed from the last saved cursor: Slack gets every alert
    exactly once (at least once only where the look-up could not tell, with a warning), and
    PagerDuty at least once (its dedup_key makes more harmless)."""
    source = [check_alert(n, page=page) for n, page in enumerate(pages, 1)]
    slack = FakeSlack("slack", slack_steps, find_steps)
    pager = FakeService("pagerduty", pagerduty_steps)
    warnings: list[str] = []
    cursor, book = run_ticks(source, list(reads), {"slack": slack, "pagerduty": pager}, warnings)

    assert cursor["read"] == len(source) and cursor["pending"] == []
    slack_counts = Counter(slack.received)
    for alert in source:
        if alert.id in slack.blind:
            assert slack_counts[alert.id] >= 1
        else:
            assert slack_counts[alert.id] == 1, (alert.id, slack.received)
    # A warning for each send that may show twice, and only for those.
    assert bool(warnings) == bool(slack.blind)
    assert all("may show twice" in w and any(i in w for i in slack.blind) for w in warnings)
    pager_counts = Counter(pager.received)
    assert {a.id for a in source if a.page} == set(pager_counts)
    # Bounded: once a tick starts from the cursor saved after the last delivery, nothing stays.
    book.settle(cursor["tick"], 1e6)
    assert book.marks == {}


# ---------------------------------------------------------------------- Slack, interrupted


def interrupted(alert: Alert, notifier: SlackNotifier, *, posted: bool) -> BookLedger:
    """The ledger a killed process leaves: the channel's ID known from an earlier post, a send
    of ``alert`` begun and never recorded as ended (``posted``: it did reach Slack)."""
    ledger = BookLedger(tick="t3")
    ledger.remember(notifier.destination, LoopbackSlack.CHANNEL_ID)
    ledger.begin(alert.id, "slack", time.time())
    if posted:
        notifier.send(alert)
    return ledger


def history_reads(server: LoopbackSlack) -> list[str]:
    """The arguments of each ``conversations.history`` call (slack_sdk sends them as a form)."""
    return [r["body"] for r in server.requests if "conversations.history" in r["path"]]


def test_slack_messages_carry_their_alert_id_and_are_found_by_it(
    slack_server: LoopbackSlack,
) -> None:
    notifier = SlackNotifier(slack_client(slack_server), CHANNEL)
    before = time.time() - 1
    where = notifier.send(check_alert(1))
    assert where == LoopbackSlack.CHANNEL_ID
    assert slack_server.messages[0]["metadata"] == {
        "event_type": "acode_alert",
        "event_payload": {"alert_id": check_alert(1).id},
    }
    assert notifier.find(check_alert(1), before, where)
    assert not notifier.find(check_alert(2), before, where)
    assert not notifier.find(check_alert(1), time.time() + 1, where)  # posted before `since`
    (first_read, *_) = history_reads(slack_server)
    assert "include_all_metadata=1" in first_read and "oldest=" in first_read

    # Configured by name, and no post said the ID yet: the history cannot be read, for good.
    with pytest.raises(DeliveryError, match="ACODE_SLACK_CHANNEL") as caught:
        notifier.find(check_alert(1), before, None)
    assert caught.value.permanent
    # Configured by ID, the ID is known from the start.
    by_id = SlackNotifier(slack_client(slack_server), LoopbackSlack.CHANNEL_ID)
    assert by_id.find(check_alert(1), before, None)


def test_the_look_up_reads_the_history_past_its_first_page(
    slack_server: LoopbackSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts_module, "_SLACK_HISTORY_LIMIT", 2)
    notifier = SlackNotifier(slack_client(slack_server), CHANNEL)
    before = time.time() - 1
    for n in range(1, 6):
        notifier.send(check_alert(n))
    assert notifier.find(check_alert(1), before, LoopbackSlack.CHANNEL_ID)  # the oldest
    assert len(history_reads(slack_server)) == 3


@pytest.mark.parametrize("posted", [True, False])
def test_an_interrupted_slack_send_is_looked_up_and_sent_only_if_absent(
    slack_server: LoopbackSlack, posted: bool
) -> None:
    alert = check_alert(1, page=False)
    notifier = SlackNotifier(slack_client(slack_server), CHANNEL)
    ledger = interrupted(alert, notifier, posted=posted)
    lines: list[str] = []
    warnings: list[str] = []
    queue, delivered = deliver(
        pending(alert), {"slack": notifier}, lines.append, ledger=ledger, warn=warnings.append
    )
    assert (queue, delivered) == ([], [(alert, "slack")])
    assert slack_server.alert_ids() == [alert.id]
    assert len(history_reads(slack_server)) == 1
    assert warnings == []
    assert (ledger.get(alert.id, "slack") or Mark("sending", 0, "")).state == "delivered"
    assert any("found there" in line for line in lines) == posted


def test_without_history_access_an_interrupted_send_is_sent_again_with_a_warning(
    slack_server: LoopbackSlack,
) -> None:
    """The documented exception to exactly once: a token without ``channels:history``."""
    slack_server.history_error = "missing_scope"
    alert = check_alert(1, page=False)
    notifier = SlackNotifier(slack_client(slack_server), CHANNEL)
    ledger = interrupted(alert, notifier, posted=True)
    warnings: list[str] = []
    queue, delivered = deliver(
        pending(alert), {"slack": notifier}, print, ledger=ledger, warn=warnings.append
    )
    assert (queue, delivered) == ([], [(alert, "slack")])
    assert slack_server.alert_ids() == [alert.id, alert.id]
    (warning,) = warnings
    assert alert.id in warning and "missing_scope" in warning and "may show twice" in warning
    assert slack_server.token not in warning


def test_while_slack_is_down_an_interrupted_send_waits_unsent(
    slack_server: LoopbackSlack,
) -> None:
    alert = check_alert(1, page=False)
    notifier = SlackNotifier(slack_client(slack_server), CHANNEL)
    ledger = interrupted(alert, notifier, posted=False)
    slack_server.down = True
    warnings: list[str] = []
    queue, delivered = deliver(
        pending(alert), {"slack": notifier}, print, ledger=ledger, warn=warnings.append
    )
    assert delivered == [] and [p.alert for p in queue] == [alert]
    assert "conversations.history: HTTP 503" in queue[0].last_error["slack"]
    assert not any("chat.postMessage" in r["path"] for r in slack_server.requests)
    assert warnings == []
    assert (ledger.get(alert.id, "slack") or Mark("delivered", 0, "")).state == "sending"


@pytest.mark.parametrize(
    ("setup", "permanent", "alert_only", "maybe_sent"),
    [
        ({"post_error": "channel_not_found"}, True, False, False),
        ({"post_error": "not_in_channel"}, True, False, False),
        ({"post_error": "invalid_blocks"}, True, True, False),
        ({"post_error": "internal_error"}, False, False, True),
        ({"down": True, "down_status": 500}, False, False, True),
        ({"down": True, "down_status": 503}, False, False, False),
        ({"rate_limited": True}, False, False, False),
    ],
)
def test_slack_failures_are_told_apart(
    slack_server: LoopbackSlack,
    setup: dict[str, Any],
    permanent: bool,
    alert_only: bool,
    maybe_sent: bool,
) -> None:
    for name, value in setup.items():
        setattr(slack_server, name, value)
    notifier = SlackNotifier(slack_client(slack_server), CHANNEL)
    with pytest.raises(DeliveryError) as caught:
        notifier.send(check_alert())
    error = caught.value
    assert (error.permanent, error.alert_only, error.maybe_sent) == (
        permanent,
        alert_only,
        maybe_sent,
    )
    # Whether the send stays unconfirmed (looked up before the next try) or is forgotten.
    ledger = BookLedger()
    deliver(pending(check_alert(page=False)), {"slack": notifier}, print, ledger=ledger)
    mark = ledger.get(check_alert().id, "slack")
    assert (mark is not None) == maybe_sent


def test_a_refused_connection_is_known_not_to_have_sent(slack_server: LoopbackSlack) -> None:
    notifier = SlackNotifier(slack_client(slack_server), CHANNEL)
    slack_server.stop()
    with pytest.raises(DeliveryError, match="cannot connect") as caught:
        notifier.send(check_alert())
    assert not caught.value.maybe_sent and not caught.value.permanent


def test_a_pagerduty_routing_key_rejection_stops_the_service_for_good(
    pagerduty_server: LoopbackPagerDuty,
) -> None:
    pager = PagerDutyNotifier(secrets.token_hex(16), base_url=pagerduty_server.base_url)
    with pytest.raises(DeliveryError) as caught:
        pager.send(check_alert())
    assert caught.value.permanent and not caught.value.alert_only
    # PagerDuty deduplicates by dedup_key: an unconfirmed event is simply sent again.
    assert not isinstance(pager, alerts_module.Finder)
