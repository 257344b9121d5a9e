"""Alert delivery to Slack and PagerDuty, in plain Python (no Dagster here).

A sensor turns check results into :class:`Alert` values, keeps the ones not yet delivered as
:class:`Pending` in its cursor (hence the JSON round trip), and calls :func:`deliver` once per
tick. Delivery tries each channel once and never sleeps: when a service is down the alert
stays pending and the next tick tries again, so a tick never blocks for long.

Exactly once, across crashes: the sensor's cursor is saved only when its tick ends, so a tick
killed after a send would send again from the old cursor. :func:`deliver` therefore writes
each send to a :class:`Ledger` that outlives the process, one alert at a time: *sending*
before the request leaves, *delivered* as soon as the service accepted it. A replayed alert
that the ledger knows as delivered is not sent again; one left *sending* by a crash is looked
for in the service first (Slack: the channel's history, by the alert id carried in the
message's metadata) and sent again only if it is not there. When Slack cannot tell (a token
without the ``channels:history`` scope, a channel named but whose ID no post has told yet),
the alert is sent again with a warning: at least once, for that case only. PagerDuty needs no
look-up: its Events API deduplicates a trigger or resolve by ``dedup_key``, so sending it twice
is harmless.

Bounded: :func:`expire` drops an alert that could not be delivered for a given time after its
first attempt, or that a service rejected for good (a Slack channel that does not exist, a
revoked token) several times in a row, and says which.

Every text that leaves this module (Slack messages, PagerDuty events, log lines, error
messages) has been through :func:`acode_dagster.errors.redact` with the service credential and
any extra secrets the caller names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable
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
    """An alert with the channels it has not reached yet, and how trying has gone so far."""

    alert: Alert
    channels: frozenset[str]
    attempts: int = 0
    """Ticks in which a send of this alert failed."""
    first_attempt_at: float | None = None
    """When a tick first set out to deliver it (Unix seconds): the give-up clock starts here."""
    # hash=False, as Alert.details: dicts are unhashable.
    last_error: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Per channel still pending: why the latest try did not deliver it."""
    rejections: Mapping[str, int] = field(default_factory=dict, hash=False)
    """Per channel: permanent rejections in a row (see :func:`expire`)."""

    def __post_init__(self) -> None:
        unknown = self.channels - set(CHANNELS)
        if unknown:
            raise ValueError(f"alert {self.alert.id!r}: unknown channels {sorted(unknown)}")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"alert {self.alert.id!r}: attempts must be an integer")
        first = self.first_attempt_at
        if first is not None and (
            isinstance(first, bool)
            or not isinstance(first, int | float)
            or not math.isfinite(first)
        ):
            raise ValueError(f"alert {self.alert.id!r}: first_attempt_at must be a number or null")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.last_error.items()):
            raise ValueError(f"alert {self.alert.id!r}: last_error must map channels to text")
        if not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in self.rejections.items()
        ):
            raise ValueError(f"alert {self.alert.id!r}: rejections must map channels to integers")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (channels sorted, so equal values serialize the same)."""
        return {
            "alert": self.alert.to_json(),
            "channels": sorted(self.channels),
            "attempts": self.attempts,
            "first_attempt_at": self.first_attempt_at,
            "last_error": dict(self.last_error),
            "rejections": dict(self.rejections),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Pending:
        """The inverse of :meth:`to_json`; keys added since (attempt times, errors) may be
        missing, so a cursor written before them still loads."""
        alert = raw.get("alert")
        channels = raw.get("channels")
        if not isinstance(alert, Mapping):
            raise ValueError("pending JSON: 'alert' must be an object")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ValueError("pending JSON: 'channels' must be a list of strings")
        last_error = raw.get("last_error") or {}
        rejections = raw.get("rejections") or {}
        if not isinstance(last_error, Mapping) or not isinstance(rejections, Mapping):
            raise ValueError("pending JSON: 'last_error' and 'rejections' must be objects")
        return cls(
            Alert.from_json(alert),
            frozenset(channels),
            raw.get("attempts", 0),
            first_attempt_at=raw.get("first_attempt_at"),
            last_error=dict(last_error),
            rejections=dict(rejections),
        )


def channels_for(alert: Alert) -> frozenset[str]:
    """Where an alert goes: always Slack, and PagerDuty too when it pages."""
    return frozenset({"slack", "pagerduty"} if alert.page else {"slack"})


class DeliveryError(AcodeError):
    """A notification service did not take an alert; the message names the service and the
    cause, never a token or key."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        alert_only: bool = False,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        """Sending the same request again can never succeed (until a person fixes something)."""
        self.alert_only = alert_only
        """The service refused this alert's content; it may still take the others."""
        self.maybe_sent = maybe_sent
        """The request may have reached the service and been acted on (a timeout, an HTTP 500)."""
        self.transient = not permanent


class Notifier(Protocol):
    """Sends alerts to one service."""

    channel: str

    def send(self, alert: Alert) -> str | None:
        """Deliver one alert, or raise :class:`DeliveryError`; return where the service put it
        when it says (Slack: the channel's ID), for :meth:`Finder.find` later."""


@runtime_checkable
class Finder(Protocol):
    """A notifier that can tell whether the service already holds an alert."""

    destination: str
    """Where it sends, as configured (e.g. ``slack #alerts``): what ``where`` is remembered
    for, so that a changed setting is not looked up in the old place."""

    def find(self, alert: Alert, since: float, where: str | None) -> bool:
        """Whether ``alert`` reached the service at or after ``since`` (Unix seconds); ``where``
        is what an earlier :meth:`Notifier.send` returned, if anything. Raise
        :class:`DeliveryError` when the service cannot tell (``permanent`` when asking again
        will not help either, e.g. a missing permission)."""


# ---------------------------------------------------------------------- delivery ledger

MarkState = Literal["sending", "delivered"]

LEDGER_KEEP_S = 7 * 24 * 3600.0
"""A mark no tick has settled is dropped after this long (a lineage abandoned mid-send)."""


@dataclass(frozen=True)
class Mark:
    """What the ledger knows of one alert on one channel."""

    state: MarkState
    at: float
    """When the send began (``sending``) or the service took it (``delivered``), Unix seconds."""
    tick: str
    """The id of the sensor tick that wrote it (or last relied on it)."""


class Ledger(Protocol):
    """Durable record of sends, written one alert at a time (see the module's docstring).

    Each mutating call is durable when it returns: a process killed right after it has not lost
    it.
    """

    def get(self, alert_id: str, channel: str) -> Mark | None:
        """The mark of ``alert_id`` on ``channel``, if any."""

    def where(self, destination: str) -> str | None:
        """What a delivery to ``destination`` said about where it went, if any did."""

    def remember(self, destination: str, where: str) -> None:
        """Keep what a delivery to ``destination`` said about where it went."""

    def begin(self, alert_id: str, channel: str, at: float) -> None:
        """Record a send about to leave."""

    def done(self, alert_id: str, channel: str, at: float) -> None:
        """Record that the service took the alert."""

    def abort(self, alert_id: str, channel: str) -> None:
        """Forget the alert's mark: the send is known not to have reached the service."""


@dataclass
class LedgerBook:
    """A ledger's content, kept as one small JSON document.

    Small because marks do not stay: a ``delivered`` mark is only needed while a tick could
    still be replayed from a cursor saved before the delivery. Each tick attempt has an id of
    its own, never reused (a tick replayed after a crash is another attempt); a tick stamps with
    its id the marks it writes and the ``delivered`` marks it relies on to drop an alert, and
    once a cursor saved by that tick is read, its stamped marks are settled (:meth:`settle`).
    A mark of a tick that died stays until a later tick relies on it (or it is older than
    ``keep_s``). A ``sending`` mark stays until its send is resolved (or is that old).
    """

    marks: dict[str, Mark] = field(default_factory=dict)
    places: dict[str, str] = field(default_factory=dict)
    """Per destination, where its service said a delivery went (Slack: the channel's ID)."""

    @staticmethod
    def key(alert_id: str, channel: str) -> str:
        # A channel name has no ":", so the first one splits the key unambiguously.
        return f"{channel}:{alert_id}"

    def settle(self, confirmed_tick: str, now: float, keep_s: float = LEDGER_KEEP_S) -> bool:
        """Drop the marks no replay can need; whether anything changed.

        ``confirmed_tick`` is the id of the tick that saved the cursor the current tick starts
        from: every delivery that tick stamped is in that cursor (the alert out of the pending
        list, the read marks past its source), so no replay can produce it again. Not a
        comparison of numbers: a tick that died and the one replaying it start from the same
        cursor, and the replay's cursor says nothing of what it did not come across.
        """
        kept = {
            key: mark
            for key, mark in self.marks.items()
            if not (mark.state == "delivered" and mark.tick == confirmed_tick)
            and now - mark.at <= keep_s
        }
        changed = len(kept) != len(self.marks)
        self.marks = kept
        return changed

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "marks": {
                    key: {"state": m.state, "at": m.at, "tick": m.tick}
                    for key, m in sorted(self.marks.items())
                },
                "places": dict(sorted(self.places.items())),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> LedgerBook:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("marks", {}), dict):
            raise ValueError("delivery ledger JSON: expected an object with 'marks'")
        marks = {}
        for key, value in raw.get("marks", {}).items():
            state = value.get("state")
            if state not in ("sending", "delivered"):
                raise ValueError(f"delivery ledger JSON: mark {key!r} has state {state!r}")
            marks[str(key)] = Mark(state, float(value["at"]), str(value["tick"]))
        places = {str(k): str(v) for k, v in (raw.get("places") or {}).items()}
        return cls(marks, places)


class BookLedger:
    """A :class:`Ledger` over a :class:`LedgerBook`, calling ``save`` with the whole book after
    each change (none makes it an in-memory ledger), and ``save_place`` with each place learnt
    (for a store that shares places beyond one book)."""

    def __init__(
        self,
        book: LedgerBook | None = None,
        tick: str = "",
        save: Callable[[str], None] | None = None,
        save_place: Callable[[str, str], None] | None = None,
    ) -> None:
        self.book = book if book is not None else LedgerBook()
        self.tick = tick
        self._save = save
        self._save_place = save_place

    def get(self, alert_id: str, channel: str) -> Mark | None:
        return self.book.marks.get(LedgerBook.key(alert_id, channel))

    def where(self, destination: str) -> str | None:
        return self.book.places.get(destination)

    def remember(self, destination: str, where: str) -> None:
        self.book.places[destination] = where
        self._write()
        if self._save_place is not None:
            self._save_place(destination, where)

    def begin(self, alert_id: str, channel: str, at: float) -> None:
        self.book.marks[LedgerBook.key(alert_id, channel)] = Mark("sending", at, self.tick)
        self._write()

    def done(self, alert_id: str, channel: str, at: float) -> None:
        self.book.marks[LedgerBook.key(alert_id, channel)] = Mark("delivered", at, self.tick)
        self._write()

    def abort(self, alert_id: str, channel: str) -> None:
        if self.book.marks.pop(LedgerBook.key(alert_id, channel), None) is not None:
            self._write()

    def _write(self) -> None:
        if self._save is not None:
            self._save(self.book.to_json())


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
        self.destination = f"slack {channel_name}"

    def send(self, alert: Alert) -> str | None:
        """Post the alert; return the channel's ID, which the history look-up needs."""
        text, blocks = format_slack(_redacted(alert, self._secrets), self._channel_name)
        try:
            response = self._client.chat_postMessage(
                channel=self._channel_name,
                text=redact(text, self._secrets),
                blocks=_redact_tree(blocks, self._secrets),
                # What find() looks for after a crash: the alert id, in a field Slack keeps
                # apart from the text (so no text change can hide it) and returns on request.
                metadata={
                    "event_type": SLACK_EVENT_TYPE,
                    "event_payload": {"alert_id": self._alert_id(alert)},
                },
            )
        except Exception as exc:
            raise self._error("chat.postMessage", exc) from None
        channel_id = response.get("channel")
        return channel_id if isinstance(channel_id, str) and channel_id else None

    def find(self, alert: Alert, since: float, where: str | None) -> bool:
        """Whether the channel holds a message for ``alert`` posted after ``since``.

        Reads the channel's history (``conversations.history``, which needs the
        ``channels:history`` scope, ``groups:history`` for a private channel) newest first,
        down to ``since``. The method wants the channel's ID: ``where`` (what a send returned
        before), or the configured channel when it is an ID.
        """
        channel_id = where or (
            self._channel_name if _SLACK_ID.fullmatch(self._channel_name) else None
        )
        if channel_id is None:
            raise DeliveryError(
                "Slack API conversations.history: the channel's ID is not known yet (no message "
                "has been posted there since the ledger began); set ACODE_SLACK_CHANNEL to the "
                "channel's ID (C0..., in the channel's details) to avoid this",
                permanent=True,
            )
        wanted = self._alert_id(alert)
        cursor: str | None = None
        for _ in range(_SLACK_HISTORY_PAGES):
            try:
                response = self._client.conversations_history(
                    channel=channel_id,
                    oldest=f"{since:.6f}",
                    include_all_metadata=True,
                    limit=_SLACK_HISTORY_LIMIT,
                    cursor=cursor,
                )
            except Exception as exc:
                raise self._error("conversations.history", exc) from None
            for message in response.get("messages") or []:
                if _slack_alert_id(message) == wanted:
                    return True
            metadata = response.get("response_metadata") or {}
            cursor = metadata.get("next_cursor") if isinstance(metadata, dict) else None
            if not response.get("has_more") or not cursor:
                return False
        searched = _SLACK_HISTORY_PAGES * _SLACK_HISTORY_LIMIT
        raise DeliveryError(
            f"Slack API conversations.history: more than {searched} messages since the send "
            "began, and the alert was not among the newest",
            permanent=True,
        )

    def _alert_id(self, alert: Alert) -> str:
        # Redacted as everything sent is, and the same way when looked for.
        return redact(alert.id, self._secrets)

    def _error(self, method: str, exc: Exception) -> DeliveryError:
        """The SDK's own messages repeat the request (and so maybe the text or token): the
        error is worded here, and raised `from None` to keep the original out of tracebacks."""
        if isinstance(exc, SlackApiError):
            cause, flags = _slack_cause(exc), _slack_flags(exc)
        else:
            cause, flags = _network_cause(exc), {"maybe_sent": _maybe_sent(exc)}
        return DeliveryError(redact(f"Slack API {method}: {cause}", self._secrets), **flags)


SLACK_EVENT_TYPE = "acode_alert"
"""The ``event_type`` of the metadata of every alert message (its payload: ``alert_id``)."""
_SLACK_ID = re.compile(r"[CGD][A-Z0-9]{6,}")
_SLACK_HISTORY_LIMIT = 200
_SLACK_HISTORY_PAGES = 10

# Rejections no retry can turn into a success: the channel, the token or the app's
# permissions are wrong, and a person has to act. They hold for every alert of the channel.
SLACK_CHANNEL_REJECTIONS = frozenset(
    {
        "access_denied",
        "account_inactive",
        "channel_not_found",
        "deprecated_endpoint",
        "ekm_access_denied",
        "enterprise_is_restricted",
        "invalid_auth",
        "is_archived",
        "metadata_must_be_sent_from_app",
        "method_deprecated",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "not_authed",
        "not_in_channel",
        "org_login_required",
        "restricted_action",
        "restricted_action_read_only_channel",
        "team_access_not_granted",
        "token_expired",
        "token_revoked",
        "two_factor_setup_required",
    }
)
# ... and rejections of one message's content: the channel may still take the others.
SLACK_ALERT_REJECTIONS = frozenset(
    {
        "invalid_arg_name",
        "invalid_arguments",
        "invalid_array_arg",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_charset",
        "invalid_form_data",
        "invalid_json",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "invalid_post_type",
        "json_not_object",
        "metadata_too_long",
        "missing_post_type",
        "msg_too_long",
        "no_text",
        "too_many_attachments",
    }
)
# Slack's own failures, which may come after it acted on the request.
_SLACK_MAYBE_SENT = frozenset({"fatal_error", "internal_error", "request_timeout"})
# 503 and 429 say the request was not taken; a 500 or a gateway's 502/504 do not say.
_MAYBE_SENT_STATUSES = frozenset({500, 502, 504})


def _slack_alert_id(message: Any) -> str | None:
    metadata = message.get("metadata") if isinstance(message, dict) else None
    if not isinstance(metadata, dict) or metadata.get("event_type") != SLACK_EVENT_TYPE:
        return None
    payload = metadata.get("event_payload")
    alert_id = payload.get("alert_id") if isinstance(payload, dict) else None
    return alert_id if isinstance(alert_id, str) else None


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


def _slack_flags(exc: SlackApiError) -> dict[str, bool]:
    status = getattr(exc.response, "status_code", None)
    data = getattr(exc.response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    if status == 200 and isinstance(error, str):
        alert_only = error in SLACK_ALERT_REJECTIONS
        return {
            "permanent": alert_only or error in SLACK_CHANNEL_REJECTIONS,
            "alert_only": alert_only,
            "maybe_sent": error in _SLACK_MAYBE_SENT,
        }
    return {"maybe_sent": status in _MAYBE_SENT_STATUSES}


def _network_cause(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, URLError):
        return f"cannot connect ({exc.reason})"
    return f"unexpected {type(exc).__name__}"


def _maybe_sent(exc: BaseException) -> bool:
    """Whether a request that failed this way may still have been acted on.

    urllib raises URLError while it connects and sends, before any answer can exist; a timeout
    or a dropped connection after that leaves the outcome unknown.
    """
    if isinstance(exc, URLError):
        return False
    return not isinstance(exc, ConnectionRefusedError | socket.gaierror)


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
        # Every event carries the alert's dedup_key, so sending one twice (a send that a crash
        # left unconfirmed, sent again) is harmless: PagerDuty folds a second trigger into the
        # open alert of that key, and a second resolve finds nothing left to resolve. Hence no
        # find() here: deliver() sends an unconfirmed PagerDuty event again without looking.
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
                redact(f"PagerDuty Events API: {_pagerduty_cause(exc)}", self._secrets),
                **_pagerduty_flags(exc),
            ) from None
        except Exception as exc:
            raise DeliveryError(
                redact(f"PagerDuty Events API: unexpected {type(exc).__name__}", self._secrets),
                maybe_sent=True,
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


def _pagerduty_flags(exc: pagerduty.Error) -> dict[str, bool]:
    response = exc.response
    if response is None:
        return {"maybe_sent": _maybe_sent(exc.__cause__) if exc.__cause__ else True}
    status = response.status_code
    if status in (401, 403):
        return {"permanent": True}
    if status in (400, 413):
        # An invalid event: the same event is refused again. A bad routing key refuses every
        # event of the service; anything else (a field, the size) only this one.
        try:
            body = response.json()
        except ValueError:
            body = None
        errors = body.get("errors") if isinstance(body, dict) else None
        about_key = isinstance(errors, list) and any("routing" in str(e).lower() for e in errors)
        return {"permanent": True, "alert_only": not about_key}
    return {"maybe_sent": status in _MAYBE_SENT_STATUSES}


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


PERMANENT_REJECTIONS = 3
"""Permanent rejections in a row (at most one per tick) after which :func:`expire` gives an
alert up on a channel.

Not one: Slack has answered ``invalid_auth``, ``account_inactive`` or ``channel_not_found``
for a few minutes during its own incidents, and an alert dropped on such an answer would be
lost for nothing. Three ticks apart (a minute or more at the sensor's pace), the rejection is
the channel's, and waiting the whole give-up time would only grow the pending list.
"""
LOOKUP_MARGIN_S = 600.0
"""How far before a send's recorded start the service's history is searched: room for the two
clocks (ours, the service's) not agreeing."""


def deliver(
    pending: Sequence[Pending],
    notifiers: Mapping[str, Notifier],
    log: Callable[[str], None],
    *,
    secrets: Iterable[str] = (),
    ledger: Ledger | None = None,
    now: float | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[list[Pending], list[tuple[Alert, str]]]:
    """Try every pending channel once; return ``(still_pending, delivered)``.

    ``delivered`` lists the ``(alert, channel)`` pairs a service took: in this call, or earlier
    when the ``ledger`` says so (a tick that sent it and was killed before its cursor was
    saved). A channel without a notifier is written to ``log`` instead (once per alert) and
    dropped, without appearing in ``delivered``. A failed send stays pending with one more
    attempt counted and its error kept; its service is not tried again in this call (it is
    probably down, and every further try would only wait for the same timeout) unless the
    service refused only that alert's content. Order is kept, oldest first.

    Each send is written to ``ledger`` before it leaves and when the service took it (see the
    module's docstring); without one, an in-memory ledger serves this call only. ``now`` (Unix
    seconds, default: the clock) stamps those marks and the alerts' first attempt. ``warn``
    (default ``log``) receives what an operator should see: an alert that may show twice.

    ``secrets`` (beyond those the notifiers already know) are redacted from the log lines.
    """
    redact_secrets = tuple(s for s in secrets if s)
    book: Ledger = ledger if ledger is not None else BookLedger()
    clock = time.time() if now is None else now

    def say(line: str) -> None:
        log(redact(line, redact_secrets))

    def shout(line: str) -> None:
        (warn or log)(redact(line, redact_secrets))

    still: list[Pending] = []
    delivered: list[tuple[Alert, str]] = []
    down: dict[str, DeliveryError] = {}
    for item in pending:
        alert = item.alert
        remaining: set[str] = set()
        errors, rejections = dict(item.last_error), dict(item.rejections)
        failed = tried = logged = False
        for channel in (c for c in CHANNELS if c in item.channels):
            notifier = notifiers.get(channel)
            if notifier is None:
                if not logged:
                    say(f"alert (no notifier for {channel}): {describe(alert)}")
                    logged = True
                continue
            tried = True
            blocked = down.get(channel)
            if blocked is not None:
                # Not tried: what stopped the channel for an earlier alert stops it for this
                # one, and a rejection of the channel itself (its token, its name) counts.
                remaining.add(channel)
                errors[channel] = f"not tried, {channel} failed earlier in the same tick: {blocked}"
                rejections[channel] = rejections.get(channel, 0) + 1 if blocked.permanent else 0
                continue
            error = _deliver_one(alert, channel, notifier, book, clock, say, shout)
            if error is None:
                delivered.append((alert, channel))
                errors.pop(channel, None)
                rejections.pop(channel, None)
                continue
            say(
                f"warning: alert {alert.id} not delivered to {channel} "
                f"(attempt {item.attempts + 1}), kept for the next try: {error}"
            )
            if not error.alert_only:
                down[channel] = error
            remaining.add(channel)
            failed = True
            errors[channel] = str(error)
            rejections[channel] = rejections.get(channel, 0) + 1 if error.permanent else 0
        if remaining:
            first = item.first_attempt_at
            still.append(
                Pending(
                    alert,
                    frozenset(remaining),
                    item.attempts + int(failed),
                    first_attempt_at=clock if first is None and tried else first,
                    last_error={
                        c: redact(e, redact_secrets) for c, e in errors.items() if c in remaining
                    },
                    rejections={c: n for c, n in rejections.items() if c in remaining and n},
                )
            )
    return still, delivered


def _deliver_one(  # noqa: PLR0917 - one step of deliver(), which holds these
    alert: Alert,
    channel: str,
    notifier: Notifier,
    ledger: Ledger,
    now: float,
    say: Callable[[str], None],
    shout: Callable[[str], None],
) -> DeliveryError | None:
    """Deliver ``alert`` to one channel at most once; None when the service has it.

    Ledger errors are not caught: the tick fails before its cursor is saved, and what the
    ledger did record still holds for the next one.
    """
    mark = ledger.get(alert.id, channel)
    if mark is not None and mark.state == "delivered":
        # Stamped again with this tick: its cursor, once saved, is the one without the alert.
        ledger.done(alert.id, channel, mark.at)
        say(f"alert {alert.id} already reached {channel} (delivery ledger): not sent again")
        return None
    finder = notifier if isinstance(notifier, Finder) else None
    if mark is not None and finder is not None:
        # A send began and nothing says how it ended (the process was killed, or the request
        # timed out): the service is asked before sending again.
        place = ledger.where(finder.destination)
        try:
            found = finder.find(alert, mark.at - LOOKUP_MARGIN_S, place)
        except Exception as exc:
            error = _as_delivery_error(exc)
            if not error.permanent:
                return error  # the service is not answering: try again next tick
            shout(
                f"warning: cannot tell whether alert {alert.id} reached {channel} before its "
                f"send was interrupted ({error}); sending it again, so it may show twice"
            )
            found = False
        if found:
            ledger.done(alert.id, channel, now)
            say(
                f"alert {alert.id} had reached {channel} before its send was interrupted "
                "(found there): not sent again"
            )
            return None
    ledger.begin(alert.id, channel, now)
    try:
        where = notifier.send(alert)
    except Exception as exc:
        # Not only DeliveryError: whatever a notifier raises, the alerts already sent in this
        # call must still be reported, or the caller would send them again.
        error = _as_delivery_error(exc)
        if not (error.maybe_sent and finder is not None):
            ledger.abort(alert.id, channel)
        return error
    ledger.done(alert.id, channel, now)
    if finder is not None and where and ledger.where(finder.destination) != where:
        ledger.remember(finder.destination, where)
    return None


def _as_delivery_error(exc: Exception) -> DeliveryError:
    if isinstance(exc, DeliveryError):
        return exc
    # A notifier's own bug: its message may hold anything, so only its type is told.
    return DeliveryError(type(exc).__name__, maybe_sent=True)


@dataclass(frozen=True)
class GivenUp:
    """An alert dropped from a channel by :func:`expire`, with what an operator needs."""

    alert: Alert
    channel: str
    attempts: int
    last_error: str
    why: str

    def describe(self) -> str:
        return (
            f"alert {self.alert.id} given up on {self.channel} after {self.attempts} "
            f"attempt(s), {self.why}; last error: {self.last_error or 'none recorded'}"
        )


def expire(
    pending: Sequence[Pending],
    now: float,
    give_up_after_s: float,
    *,
    rejections: int = PERMANENT_REJECTIONS,
) -> tuple[list[Pending], list[GivenUp]]:
    """Drop what will not be delivered; return ``(kept, given_up)``.

    An alert still pending ``give_up_after_s`` after its first attempt is given up on every
    channel left; before that, a channel that rejected it for good ``rejections`` times in a
    row (see :data:`PERMANENT_REJECTIONS`) is given up alone. An alert with no channel left
    leaves the list. Order is kept.
    """
    kept: list[Pending] = []
    given_up: list[GivenUp] = []
    for item in pending:
        first = item.first_attempt_at
        if first is not None and now - first >= give_up_after_s:
            gone = set(item.channels)
            why = f"still not delivered {(now - first) / 3600:.1f} h after its first attempt"
        else:
            gone = {c for c in item.channels if item.rejections.get(c, 0) >= rejections}
            why = f"rejected for good {rejections} times in a row"
        if not gone:
            kept.append(item)
            continue
        for channel in (c for c in CHANNELS if c in gone):
            given_up.append(
                GivenUp(item.alert, channel, item.attempts, item.last_error.get(channel, ""), why)
            )
        left = item.channels - gone
        if left:
            kept.append(
                dataclasses.replace(
                    item,
                    channels=left,
                    last_error={c: e for c, e in item.last_error.items() if c in left},
                    rejections={c: n for c, n in item.rejections.items() if c in left},
                )
            )
    return kept, given_up


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
