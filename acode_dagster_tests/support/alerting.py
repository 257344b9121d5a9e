"""Loopback Slack and PagerDuty: real HTTP servers on 127.0.0.1, for the real clients.

They answer the way the services document (Slack Web API ``chat.postMessage``,
``conversations.history`` and ``auth.test``; PagerDuty Events API v2 ``/v2/enqueue``), record
every request so tests can search what left the process, and can be switched down (HTTP 503,
or ``down_status``), slow, or made to hold a request (Slack) while a test kills its sender.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs

import pytest

from acode_dagster_tests.support.http import LoopbackHTTP

_PAGERDUTY_ACTIONS = ("trigger", "acknowledge", "resolve")
_PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")


class _LoopbackServer:
    """A threaded HTTP server on a free loopback port; subclasses answer requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.down = False
        # What a down server answers: 503 says "not taken", a 500 leaves it open.
        self.down_status = 503
        # Seconds to wait before answering, to exercise client timeouts.
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self._http = LoopbackHTTP(self._handle, type(self).__name__)

    # -- lifecycle

    @property
    def port(self) -> int:
        return self._http.port

    def start(self) -> None:
        self._http.start()

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> _LoopbackServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- requests

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode("utf-8", errors="replace")
        request = {
            "method": handler.command,
            "path": handler.path,
            "headers": dict(handler.headers.items()),
            "body": body,
        }
        with self._lock:
            self.requests.append(request)
            down = self.down
            down_status = self.down_status
            delay = self.delay_s
        if delay:
            time.sleep(delay)
        if down:
            self._reply(handler, down_status, "Service Unavailable", content_type="text/plain")
            return
        if self._hold(request, "received"):
            return  # dropped: as if the request never arrived whole
        with self._lock:
            status, answer, headers = self._answer(request)
        self._hold(request, "answered")
        self._reply(handler, status, json.dumps(answer), headers=headers)

    def _hold(self, request: dict[str, Any], stage: str) -> bool:
        """Called outside the lock before and after answering; True drops the request."""
        del request, stage
        return False

    def _answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, JSON body and extra headers for one request (called under the lock)."""
        raise NotImplementedError

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: str,
        *,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout test); nothing is left to tell it.
            pass


HoldStage = Literal["received", "answered"]


class LoopbackSlack(_LoopbackServer):
    """Slack's Web API, as far as ``chat.postMessage``, ``conversations.history`` and
    ``auth.test`` go.

    Any channel name is accepted for posting; every message lands in the one channel
    ``CHANNEL_ID``, the only ID ``conversations.history`` knows (a name there is
    ``channel_not_found``, as in Slack). ``messages`` holds the parsed body of every accepted
    post, ``blocks`` and ``metadata`` decoded from JSON when sent as form fields.
    """

    TEAM_ID: ClassVar[str] = "T0ACODE01"
    BOT_USER_ID: ClassVar[str] = "U0ACODEBOT"
    BOT_ID: ClassVar[str] = "B0ACODE01"
    CHANNEL_ID: ClassVar[str] = "C0ACODE0123"

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.messages: list[dict[str, Any]] = []
        # Set to answer HTTP 429 with Retry-After, as Slack does when rate limiting.
        self.rate_limited = False
        # Set to an error code (e.g. "channel_not_found") to refuse every post with it.
        self.post_error: str | None = None
        # Set to an error code (e.g. "missing_scope") to refuse every history read with it.
        self.history_error: str | None = None
        # The channel as conversations.history returns it: message objects, oldest first.
        self._channel: list[dict[str, Any]] = []
        self._ts = 0
        # hold_post(): the post number to hold, at which stage; held is set when it is held.
        self._posts = 0
        self._hold_at: tuple[int, HoldStage] | None = None
        self.held = threading.Event()
        self._release = threading.Event()

    @property
    def base_url(self) -> str:
        """For ``WebClient(base_url=...)``, which wants the trailing slash."""
        return f"http://127.0.0.1:{self.port}/api/"

    def __enter__(self) -> LoopbackSlack:
        self.start()
        return self

    def stop(self) -> None:
        self.release()
        super().stop()

    # -- holding a post, for crash tests

    def hold_post(self, number: int = 1, stage: HoldStage = "answered") -> None:
        """Hold the ``number``-th ``chat.postMessage`` from now until :meth:`release`.

        ``received``: held before it is acted on, and dropped when released (the sender never
        got its post through). ``answered``: the message is posted, and the answer held (the
        sender never learns it was). ``held`` is set while it waits.
        """
        with self._lock:
            self._hold_at = (self._posts + number, stage)
        self.held.clear()
        self._release.clear()

    def release(self) -> None:
        with self._lock:
            self._hold_at = None
        self._release.set()

    def _hold(self, request: dict[str, Any], stage: str) -> bool:
        if request["path"].split("?", 1)[0] != "/api/chat.postMessage":
            return False
        with self._lock:
            if stage == "received":
                self._posts += 1
                request["post_number"] = self._posts
            hold = self._hold_at is not None and self._hold_at == (request["post_number"], stage)
        if not hold:
            return False
        self.held.set()
        self._release.wait(timeout=120)
        return stage == "received"

    # -- what the channel holds

    def alert_ids(self) -> list[str]:
        """The ``alert_id`` in each posted message's metadata, in posting order."""
        with self._lock:
            metadata = [m.get("metadata") for m in self.messages]
        return [
            str(m["event_payload"].get("alert_id"))
            for m in metadata
            if isinstance(m, dict) and isinstance(m.get("event_payload"), dict)
        ]

    # -- answers

    def _answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        path = request["path"].split("?", 1)[0]
        if self.rate_limited:
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"}
        params = _slack_params(request)
        if params is None:
            return 200, {"ok": False, "error": "invalid_form_data"}, {}
        token = _bearer(request["headers"]) or params.pop("token", None)
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token != self.token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if path == "/api/auth.test":
            return 200, self._auth_test(), {}
        if path == "/api/chat.postMessage":
            return 200, self._post_message(params), {}
        if path == "/api/conversations.history":
            return 200, self._history(params), {}
        return 404, {"ok": False, "error": "unknown_method"}, {}

    def _auth_test(self) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://acode-test.slack.com/",
            "team": "ACODE test",
            "user": "acode-bot",
            "team_id": self.TEAM_ID,
            "user_id": self.BOT_USER_ID,
            "bot_id": self.BOT_ID,
            "is_enterprise_install": False,
        }

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.post_error:
            return {"ok": False, "error": self.post_error}
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        blocks = params.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return {"ok": False, "error": "invalid_blocks"}
            params["blocks"] = blocks
        if blocks is not None and not isinstance(blocks, list):
            return {"ok": False, "error": "invalid_blocks"}
        if not params.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError:
                return {"ok": False, "error": "invalid_metadata_format"}
            params["metadata"] = metadata
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            return {"ok": False, "error": "invalid_metadata_format"}
        # Slack's ts: the server's clock in microseconds, unique within the channel.
        self._ts = max(self._ts + 1, int(time.time() * 1_000_000))
        ts = f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"
        self.messages.append(params)
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": params.get("text", ""),
            "user": self.BOT_USER_ID,
            "bot_id": self.BOT_ID,
            "ts": ts,
        }
        if blocks:
            message["blocks"] = blocks
        self._channel.append({**message, **({"metadata": metadata} if metadata else {})})
        return {"ok": True, "channel": self.CHANNEL_ID, "ts": ts, "message": message}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        """``conversations.history``: newest first, ``oldest``/``latest`` exclusive unless
        ``inclusive``, ``limit`` (default 100, at most 999), cursor pagination, and message
        metadata only with ``include_all_metadata``."""
        if params.get("channel") != self.CHANNEL_ID:
            return {"ok": False, "error": "channel_not_found"}
        if self.history_error == "missing_scope":
            return {
                "ok": False,
                "error": "missing_scope",
                "needed": "channels:history,groups:history,mpim:history,im:history",
                "provided": "chat:write",
            }
        if self.history_error:
            return {"ok": False, "error": self.history_error}
        try:
            oldest = float(params.get("oldest") or 0)
            latest = float(params.get("latest") or "inf")
            limit = min(max(int(params.get("limit") or 100), 1), 999)
            offset = (
                int(base64.b64decode(params["cursor"]).decode().split(":")[1])
                if params.get("cursor")
                else 0
            )
        except (ValueError, IndexError):
            return {"ok": False, "error": "invalid_arguments"}
        inclusive = _flag(params.get("inclusive"))
        metadata = _flag(params.get("include_all_metadata"))
        found = [
            m
            for m in reversed(self._channel)
            if (oldest < float(m["ts"]) < latest)
            or (inclusive and float(m["ts"]) in (oldest, latest))
        ]
        page = found[offset : offset + limit]
        has_more = offset + limit < len(found)
        answer: dict[str, Any] = {
            "ok": True,
            "messages": [{k: v for k, v in m.items() if metadata or k != "metadata"} for m in page],
            "has_more": has_more,
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
        }
        if has_more:
            cursor = base64.b64encode(f"offset:{offset + limit}".encode()).decode()
            answer["response_metadata"] = {"next_cursor": cursor}
        return answer


def _flag(value: Any) -> bool:
    """Slack's boolean arguments: slack_sdk sends 1/0, people send true/false."""
    return str(value).lower() in ("1", "true")


def _slack_params(request: dict[str, Any]) -> dict[str, Any] | None:
    """The request's arguments: slack_sdk sends JSON for chat.postMessage and a form for the
    other methods; a query string is read too, as Slack accepts arguments there."""
    content_type = request["headers"].get("Content-Type", "")
    body = request["body"]
    query = {key: values[-1] for key, values in parse_qs(request["path"].partition("?")[2]).items()}
    if content_type.startswith("application/json"):
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            return None
        return {**query, **parsed} if isinstance(parsed, dict) else None
    if content_type.startswith("multipart/"):
        return None
    return {**query, **{key: values[-1] for key, values in parse_qs(body).items()}}


def _bearer(headers: dict[str, str]) -> str | None:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class LoopbackPagerDuty(_LoopbackServer):
    """PagerDuty's Events API v2 (``POST /v2/enqueue``), validating events as documented.

    ``valid_routing_keys``, when given, are the only integration keys accepted; otherwise any
    32-character key is. ``events`` holds every accepted event.
    """

    def __init__(self, valid_routing_keys: set[str] | None = None) -> None:
        super().__init__()
        self.valid_routing_keys = valid_routing_keys
        # The fixture's key, for convenience; not used by the server itself.
        self.routing_key = ""
        self.events: list[dict[str, Any]] = []
        # Set to answer HTTP 429, as PagerDuty does when a service sends too fast.
        self.rate_limited = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackPagerDuty:
        self.start()
        return self

    def _answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if request["path"].split("?", 1)[0] != "/v2/enqueue" or request["method"] != "POST":
            return 404, {"status": "not found", "message": "Not Found"}, {}
        if self.rate_limited:
            return 429, {"status": "throttle event", "message": "Too many requests"}, {}
        try:
            event = json.loads(request["body"])
        except ValueError:
            return 400, _invalid(["Malformed JSON: could not parse request body"]), {}
        if not isinstance(event, dict):
            return 400, _invalid(["Event object must be a JSON object"]), {}
        errors = self._errors(event)
        if errors:
            return 400, _invalid(errors), {}
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        self.events.append(event)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}, {}

    def _errors(self, event: dict[str, Any]) -> list[str]:
        errors = []
        key = event.get("routing_key")
        if not isinstance(key, str) or not key:
            errors.append("'routing_key' is missing or blank")
        elif len(key) != 32:
            errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
        elif self.valid_routing_keys is not None and key not in self.valid_routing_keys:
            errors.append("Invalid routing key")
        action = event.get("event_action")
        if action not in _PAGERDUTY_ACTIONS:
            errors.append(
                "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)"
            )
        dedup_key = event.get("dedup_key")
        if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action in ("acknowledge", "resolve") and not dedup_key:
            errors.append("'dedup_key' is missing or blank")
        if action == "trigger":
            errors += _payload_errors(event.get("payload"))
        links = event.get("links", [])
        if not isinstance(links, list) or not all(
            isinstance(link, dict) and isinstance(link.get("href"), str) for link in links
        ):
            errors.append("'links' must be a list of objects with an 'href'")
        return errors


def _payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = [
        f"'payload.{name}' is missing or blank"
        for name in ("summary", "source", "severity")
        if not isinstance(payload.get(name), str) or not payload[name].strip()
    ]
    if isinstance(payload.get("summary"), str) and len(payload["summary"]) > 1024:
        errors.append("'payload.summary' is longer than 1024 characters")
    severity = payload.get("severity")
    if isinstance(severity, str) and severity and severity not in _PAGERDUTY_SEVERITIES:
        errors.append(
            "'payload.severity' is invalid (must be one of: critical, error, warning, info)"
        )
    for name in ("timestamp", "component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict | str):
        errors.append("'payload.custom_details' must be an object")
    return errors


def _invalid(errors: list[str]) -> dict[str, Any]:
    return {"status": "invalid event", "message": "Event object is invalid", "errors": errors}


@pytest.fixture
def slack_server() -> Iterator[LoopbackSlack]:
    """A running loopback Slack accepting a fresh bot token (``slack_server.token``)."""
    with LoopbackSlack("xoxb-test-" + secrets.token_hex(12)) as server:
        yield server


@pytest.fixture
def pagerduty_server() -> Iterator[LoopbackPagerDuty]:
    """A running loopback PagerDuty accepting one fresh routing key (``.routing_key``)."""
    key = secrets.token_hex(16)
    with LoopbackPagerDuty({key}) as server:
        server.routing_key = key
        yield server
