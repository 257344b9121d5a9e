"""Alert delivery with the real Slack and PagerDuty clients against loopback servers."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
from dagster_slack import SlackResource
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk import WebClient

from acode_dagster.alerts import (
    Alert,
    DeliveryError,
    Notifier,
    PagerDutyNotifier,
    Pending,
    SlackNotifier,
    channels_for,
    deliver,
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
        assert queue == [
            Pending(first, frozenset({"slack"}), attempt),
            # Never tried: Slack was already down when its turn came.
            Pending(second, frozenset({"slack"}), 0),
        ]
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
