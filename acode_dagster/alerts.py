"""Alert delivery to Slack and PagerDuty, in plain Python (no Dagster here).

A sensor turns check results into :class:`Alert` values, keeps the ones not yet delivered as
:class:`Pending` in its cursor (hence the JSON round trip), and calls :func:`deliver` once per
tick. Delivery tries each channel once and never sleeps: when a service is down the alert
stays pending and the next tick tries again, so a tick never blocks for long and nothing is
lost or sent twice.

Every text that leaves this module (Slack messages, PagerDuty events, log lines, error
messages) has been through :func:`acode_dagster.errors.redact` with the service credential and
any extra secrets the caller names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args
from urllib.error import URLError
from urllib.parse import urlsplit

import pagerduty
import slack_sdk
from slack_sdk.errors import SlackApiError

from acode_dagster.errors import AcodeError, ConfigError, redact

Severity = Literal["critical", "error", "warning", "info"]
Action = Literal["trigger", "resolve"]

SEVERITIES: tuple[Severity, ...] = get_args(Severity)
ACTIONS: tuple[Action, ...] = get_args(Action)
# Also the order in which deliver() tries the channels of one alert.
CHANNELS: tuple[str, ...] = ("slack", "pagerduty")

_SEVERITY_EMOJI: Mapping[str, str] = {
    "critical": ":rotating_light:",
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}
_OPTIONAL_FIELDS = (
    "table",
    "partition",
    "check",
    "measured",
    "threshold",
    "run_url",
    "occurred_at",
)

# Slack rejects a whole message (invalid_blocks) when one block is over its limit, and an
# alert we cannot post is worse than a clipped one.
_SLACK_HEADER_MAX = 150
_SLACK_TEXT_MAX = 3000
_SLACK_FIELD_MAX = 2000
_PAGERDUTY_SUMMARY_MAX = 1024


@dataclass(frozen=True)
class Alert:
    """One notification about one problem (``trigger``) or its end (``resolve``)."""

    id: str
    action: Action
    severity: Severity
    title: str
    dedup_key: str
    page: bool
    table: str | None = None
    partition: str | None = None
    check: str | None = None
    measured: str | None = None
    threshold: str | None = None
    # hash=False: a dict is unhashable, and the other fields already tell alerts apart.
    details: Mapping[str, str] = field(default_factory=dict, hash=False)
    run_url: str | None = None
    occurred_at: str | None = None

    def __post_init__(self) -> None:
        # Literal types are not checked at run time, and a bad value found only when PagerDuty
        # rejects the event would sit in the pending list forever.
        if self.action not in ACTIONS:
            raise ValueError(f"alert {self.id!r}: action must be one of {ACTIONS}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert {self.id!r}: severity must be one of {SEVERITIES}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.details.items()):
            raise ValueError(f"alert {self.id!r}: details must map strings to strings")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_json` turns it back into an equal alert."""
        raw = dataclasses.asdict(self)
        raw["details"] = dict(self.details)
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Alert:
        """The inverse of :meth:`to_json`.

        Optional keys may be missing and unknown keys are ignored, so a cursor written by an
        older or newer version of this module still loads.
        """
        details = raw.get("details", {})
        if not isinstance(details, Mapping):
            raise ValueError("alert JSON: 'details' must be an object")
        page = raw.get("page")
        if not isinstance(page, bool):
            raise ValueError("alert JSON: 'page' must be true or false")
        return cls(
            id=_required_str(raw, "id"),
            action=_required_str(raw, "action"),  # type: ignore[arg-type]  # checked on init
            severity=_required_str(raw, "severity"),  # type: ignore[arg-type]  # checked on init
            title=_required_str(raw, "title"),
            dedup_key=_required_str(raw, "dedup_key"),
            page=page,
            details=dict(details),
            **{name: _optional_str(raw, name) for name in _OPTIONAL_FIELDS},
        )


@dataclass(frozen=True)
class Pending:
    """An alert with the channels it has not reached yet."""

    alert: Alert
    channels: frozenset[str]
    attempts: int = 0

    def __post_init__(self) -> None:
        unknown = self.channels - set(CHANNELS)
        if unknown:
            raise ValueError(f"alert {self.alert.id!r}: unknown channels {sorted(unknown)}")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"alert {self.alert.id!r}: attempts must be an integer")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (channels sorted, so equal values serialize the same)."""
        return {
            "alert": self.alert.to_json(),
            "channels": sorted(self.channels),
            "attempts": self.attempts,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Pending:
        """The inverse of :meth:`to_json`."""
        alert = raw.get("alert")
        channels = raw.get("channels")
        if not isinstance(alert, Mapping):
            raise ValueError("pending JSON: 'alert' must be an object")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ValueError("pending JSON: 'channels' must be a list of strings")
        return cls(Alert.from_json(alert), frozenset(channels), raw.get("attempts", 0))


def channels_for(alert: Alert) -> frozenset[str]:
    """Where an alert goes: always Slack, and PagerDuty too when it pages."""
    return frozenset({"slack", "pagerduty"} if alert.page else {"slack"})


class DeliveryError(AcodeError):
    """A notification service did not take an alert; the message names the service and the
    cause, never a token or key."""


class Notifier(Protocol):
    """Sends alerts to one service."""

    channel: str

    def send(self, alert: Alert) -> None:
        """Deliver one alert, or raise :class:`DeliveryError`."""


# ---------------------------------------------------------------------- Slack


class SlackNotifier:
    """Posts alerts to one Slack channel through a ``slack_sdk.WebClient``."""

    channel = "slack"

    def __init__(
        self,
        client: slack_sdk.WebClient,
        channel_name: str,
        secrets: Sequence[str] = (),
    ) -> None:
        # The default handlers sleep and retry on connection errors (and, if a caller added
        # them, on 429): deliver() is called from a sensor tick, which must not wait; the next
        # tick is the retry. This changes the client given, which is ours to use here.
        client.retry_handlers = []
        # The constructor adds the trailing slash, setting the attribute later does not; without
        # it the method name replaces the URL's last segment ("/api" + "chat.postMessage").
        if not client.base_url.endswith("/"):
            client.base_url += "/"
        self._client = client
        self._channel_name = channel_name
        self._secrets = _secrets(client.token, secrets)

    def send(self, alert: Alert) -> None:
        text, blocks = format_slack(_redacted(alert, self._secrets), self._channel_name)
        try:
            self._client.chat_postMessage(
                channel=self._channel_name,
                text=redact(text, self._secrets),
                blocks=_redact_tree(blocks, self._secrets),
            )
        # The SDK's own messages repeat the request (and so maybe the text or token): each
        # branch words its own, with `from None` to keep the original out of tracebacks.
        except SlackApiError as exc:
            raise DeliveryError(
                redact(f"Slack API chat.postMessage: {_slack_cause(exc)}", self._secrets)
            ) from None
        except Exception as exc:
            raise DeliveryError(
                redact(f"Slack API chat.postMessage: {_network_cause(exc)}", self._secrets)
            ) from None


def _slack_cause(exc: SlackApiError) -> str:
    status = getattr(exc.response, "status_code", None)
    data = getattr(exc.response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    if status == 200 and isinstance(error, str):
        return error
    cause = f"HTTP {status}"
    if status == 429:
        retry_after = exc.response.headers.get("Retry-After") or exc.response.headers.get(
            "retry-after"
        )
        cause += f" (rate limited, retry after {retry_after} s)"
    return cause


def _network_cause(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, URLError):
        return f"cannot connect ({exc.reason})"
    return f"unexpected {type(exc).__name__}"


def format_slack(alert: Alert, channel_name: str) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the Block Kit blocks of one alert's Slack message.

    ``channel_name`` is where the message goes; it is part of the agreed signature so the
    layout may differ per channel, but today's layout is the same everywhere.
    """
    del channel_name
    if alert.action == "resolve":
        return _format_resolve(alert)
    emoji = _SEVERITY_EMOJI[alert.severity]
    facts = _facts(alert)
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{name}*\n{_esc(value)}", _SLACK_FIELD_MAX)}
        for name, value in facts
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(f"{emoji} {alert.title}", _SLACK_HEADER_MAX),
                "emoji": True,
            },
        },
        {"type": "section", "fields": fields},
    ]
    if alert.details:
        lines = "\n".join(f"• *{_esc(k)}*: {_esc(v)}" for k, v in alert.details.items())
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(lines, _SLACK_TEXT_MAX)}}
        )
    blocks.append(_context_block(alert))

    text_lines = [f"{emoji} *{alert.severity.upper()}* {_esc(alert.title)}"]
    text_lines += [f"{name}: {_esc(value)}" for name, value in facts if name != "Severity"]
    text_lines += [f"{_esc(k)}: {_esc(v)}" for k, v in alert.details.items()]
    if alert.run_url:
        text_lines.append(_link(alert.run_url, "View in Dagster"))
    return "\n".join(text_lines), blocks


def _format_resolve(alert: Alert) -> tuple[str, list[dict[str, Any]]]:
    where = " · ".join(f"{name}: {_esc(value)}" for name, value in _facts(alert)[:3])
    text = f":white_check_mark: resolved: {_esc(alert.title)}"
    if where:
        text += f"\n{where}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, _SLACK_TEXT_MAX)}},
        _context_block(alert),
    ]
    if alert.run_url:
        text += "\n" + _link(alert.run_url, "View in Dagster")
    return text, blocks


def _facts(alert: Alert) -> list[tuple[str, str]]:
    """The alert's named facts, table/partition/check first (resolve messages use those)."""
    pairs = [
        ("Table", alert.table),
        ("Partition", alert.partition),
        ("Check", alert.check),
        ("Severity", f"{_SEVERITY_EMOJI[alert.severity]} {alert.severity.upper()}"),
        ("Measured", alert.measured),
        ("Threshold", alert.threshold),
    ]
    return [(name, value) for name, value in pairs if value]


def _context_block(alert: Alert) -> dict[str, Any]:
    parts = []
    if alert.run_url:
        parts.append(_link(alert.run_url, "View in Dagster"))
    if alert.occurred_at:
        parts.append(_esc(alert.occurred_at))
    parts.append(f"alert `{_esc(alert.id)}`")
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(parts)}]}


def _link(url: str, label: str) -> str:
    # "|" would end the URL part of Slack's <url|label> syntax early.
    return f"<{_esc(url).replace('|', '%7C')}|{label}>"


def _esc(text: str) -> str:
    """Slack's required escaping for mrkdwn: only these three characters are control ones."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------- PagerDuty


class _EventsClient(pagerduty.EventsApiV2Client):
    """The official client, also accepting plain http:// on loopback.

    The library refuses any base URL not starting with https://; the loopback test server
    (and a local relay, if one is ever used) speaks plain HTTP on 127.0.0.1. Other hosts must
    still use https.
    """

    @property
    def url(self) -> str:
        return self._acode_url

    @url.setter
    def url(self, new_base_url: str) -> None:
        parts = urlsplit(new_base_url)
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
            raise pagerduty.UrlError("API base URL must use https:// (or http:// on loopback)")
        self._acode_url = new_base_url.rstrip("/")


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PagerDutyNotifier:
    """Sends alerts to one PagerDuty service through the Events API v2."""

    channel = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        base_url: str = "https://events.pagerduty.com",
        source: str = "acode-dagster",
        secrets: Sequence[str] = (),
        timeout_s: float = 10.0,
    ) -> None:
        self._secrets = _secrets(routing_key, secrets)
        self._source = source
        try:
            self._client = _EventsClient(routing_key, base_url=base_url)
        except pagerduty.UrlError:
            message = (
                f"PagerDuty base URL {base_url!r} must start with https:// (or http:// on loopback)"
            )
            raise ConfigError(redact(message, self._secrets)) from None
        # The library retries inside one call, with growing sleeps: 500/502/503/504 up to 6
        # times, network errors 3 times, and 429 without limit (its fallback for 429 ignores
        # `retry`). A sensor tick must not wait on that; the next tick is the retry. So: no
        # network retry, no status retry but one immediate retry on 429 (the only way to bound
        # it), and no sleeping in between.
        self._client.retry = {429: 1}
        self._client.max_network_attempts = 0
        self._client.sleep_timer = 0.0
        self._client.timeout = timeout_s  # type: ignore[assignment]  # the library says int

    def send(self, alert: Alert) -> None:
        try:
            # Redacted too, and the same way each time, so a resolve still matches its trigger.
            dedup_key = redact(alert.dedup_key, self._secrets)
            if alert.action == "resolve":
                self._client.send_event("resolve", dedup_key=dedup_key)
            else:
                event = _redact_tree(self._trigger(alert), self._secrets)
                self._client.send_event("trigger", dedup_key=dedup_key, **event)
        except pagerduty.Error as exc:
            raise DeliveryError(
                redact(f"PagerDuty Events API: {_pagerduty_cause(exc)}", self._secrets)
            ) from None
        except Exception as exc:
            raise DeliveryError(
                redact(f"PagerDuty Events API: unexpected {type(exc).__name__}", self._secrets)
            ) from None

    def close(self) -> None:
        """Close the client's connection pool (optional: it also goes when collected)."""
        self._client.close()

    def _trigger(self, alert: Alert) -> dict[str, Any]:
        custom: dict[str, str] = {"alert_id": alert.id}
        for name in ("table", "partition", "check", "measured", "threshold"):
            value = getattr(alert, name)
            if value:
                custom[name] = value
        for key, value in alert.details.items():
            # The named facts win: a detail called "table" must not hide the real table.
            custom.setdefault(key, value)
        payload: dict[str, Any] = {
            # PagerDuty rejects an empty summary, and an untitled alert is still an alert.
            "summary": _clip(alert.title or alert.id, _PAGERDUTY_SUMMARY_MAX),
            "source": self._source,
            "severity": alert.severity,
            "group": "bronze_acode",
            "custom_details": custom,
        }
        if alert.table:
            payload["component"] = alert.table
        if alert.check:
            payload["class"] = alert.check
        if alert.occurred_at:
            payload["timestamp"] = alert.occurred_at
        event: dict[str, Any] = {"payload": payload}
        if alert.run_url:
            event["links"] = [{"href": alert.run_url, "text": "Dagster run"}]
        return event


def _pagerduty_cause(exc: pagerduty.Error) -> str:
    response = exc.response
    if response is None:
        # The library wraps network errors (timeouts included) in a plain Error.
        network = exc.__cause__
        return f"cannot connect ({type(network).__name__ if network else 'network error'})"
    cause = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return cause
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        cause += " (" + "; ".join(str(e) for e in errors[:3]) + ")"
    return cause


# ---------------------------------------------------------------------- delivery


def deliver(
    pending: Sequence[Pending],
    notifiers: Mapping[str, Notifier],
    log: Callable[[str], None],
    *,
    secrets: Iterable[str] = (),
) -> tuple[list[Pending], list[tuple[Alert, str]]]:
    """Try every pending channel once; return ``(still_pending, delivered)``.

    ``delivered`` lists the ``(alert, channel)`` pairs a service accepted in this call. A
    channel without a notifier is written to ``log`` instead (once per alert) and dropped,
    without appearing in ``delivered``. A failed send stays pending with one more attempt
    counted, and its service is not tried again in this call: it is probably down, and every
    further try would only wait for the same timeout. Order is kept, oldest first.

    ``secrets`` (beyond those the notifiers already know) are redacted from the log lines.
    """
    redact_secrets = tuple(s for s in secrets if s)
    still: list[Pending] = []
    delivered: list[tuple[Alert, str]] = []
    down: set[str] = set()
    for item in pending:
        alert = item.alert
        remaining: set[str] = set()
        failed = False
        logged = False
        for channel in (c for c in CHANNELS if c in item.channels):
            notifier = notifiers.get(channel)
            if notifier is None:
                if not logged:
                    log(
                        redact(
                            f"alert (no notifier for {channel}): {describe(alert)}", redact_secrets
                        )
                    )
                    logged = True
                continue
            if channel in down:
                remaining.add(channel)
                continue
            try:
                notifier.send(alert)
            except Exception as exc:
                # Not only DeliveryError: whatever a notifier raises, the alerts already sent
                # in this call must still be reported, or the caller would send them again.
                cause = str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__
                log(
                    redact(
                        f"warning: alert {alert.id} not delivered to {channel} "
                        f"(attempt {item.attempts + 1}), kept for the next try: {cause}",
                        redact_secrets,
                    )
                )
                down.add(channel)
                remaining.add(channel)
                failed = True
                continue
            delivered.append((alert, channel))
        if remaining:
            still.append(Pending(alert, frozenset(remaining), item.attempts + int(failed)))
    return still, delivered


def describe(alert: Alert) -> str:
    """One plain-text line telling what an alert says (for logs)."""
    head = "RESOLVED" if alert.action == "resolve" else alert.severity.upper()
    parts = [f"[{head}] {alert.title}"]
    for name in ("table", "partition", "check", "measured", "threshold"):
        value = getattr(alert, name)
        if value:
            parts.append(f"{name}={value}")
    parts += [f"{k}={v}" for k, v in alert.details.items()]
    if alert.run_url:
        parts.append(f"run={alert.run_url}")
    parts.append(f"dedup_key={alert.dedup_key}")
    return "; ".join(parts)


# ---------------------------------------------------------------------- redaction


def _secrets(credential: str | None, extra: Iterable[str]) -> tuple[str, ...]:
    return tuple(s for s in (credential or "", *extra) if s)


def _redacted(alert: Alert, secrets: Sequence[str]) -> Alert:
    """The alert with secrets removed from every text, before any formatting.

    Redacting only the formatted message would miss a secret that escaping (``&`` to
    ``&amp;``) or clipping has changed.
    """
    changes: dict[str, Any] = {
        name: redact(value, secrets)
        for name in ("title", "dedup_key", *_OPTIONAL_FIELDS)
        if isinstance(value := getattr(alert, name), str)
    }
    changes["details"] = {redact(k, secrets): redact(v, secrets) for k, v in alert.details.items()}
    return dataclasses.replace(alert, **changes)


def _redact_tree(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: _redact_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v, secrets) for v in value]
    return value


# ---------------------------------------------------------------------- JSON helpers


def _required_str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ValueError(f"alert JSON: {key!r} must be a string")
    return value


def _optional_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"alert JSON: {key!r} must be a string or null")
    return value
