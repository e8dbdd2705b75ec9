"""Slack's Web API: the one client the bot uses, with retries on rate limits, 5xx and dropped connections."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.signature import SignatureVerifier

from bot.errors import IntegrationError
from bot.messages import split_message
from bot.observability import metrics
from bot.redact import redact

log = logging.getLogger(__name__)


_LASTING_ERRORS = frozenset({"not_in_channel", "channel_not_found", "missing_scope", "thread_not_found",
                             "not_allowed_token_type", "invalid_auth", "account_inactive", "token_revoked"})


# What a person reads when Slack refuses a call: Slack's error codes never reach anyone raw. The one table; a code
# not in it reads as UNKNOWN_ERROR, and the code itself goes to the log (and stays on the exception's ``error``).
READABLE_ERRORS: dict[str, str] = {
    "expired_trigger_id": "That form took too long to open — click again.",
    "exchanged_trigger_id": "That click already opened a form — click again for a new one.",
    "invalid_trigger_id": "Slack did not accept that click for opening a form — click again.",
    "ratelimited": "Slack is rate-limiting the bot right now — try again in a minute.",
    "not_in_channel": "The bot is not in that channel — invite it there (`/invite`) and try again.",
    "channel_not_found": "The bot cannot see that channel — check the channel ID in the environments file, "
                         "and invite the bot if the channel is private.",
    "is_archived": "That channel is archived, so the bot cannot post there.",
    "thread_not_found": "The run's Slack thread is gone (was the message deleted?).",
    "message_not_found": "The run's Slack message is gone (was it deleted?).",
    "missing_scope": "The bot's Slack app lacks a permission it needs — ask a Slack admin to reinstall it "
                     "with the scopes in manifest.yml.",
    "not_allowed_token_type": "The bot is configured with the wrong kind of Slack token — it needs the bot "
                              "token (xoxb-…).",
    "invalid_auth": "Slack did not accept the bot's token — ask an admin to check SLACK_BOT_TOKEN.",
    "not_authed": "Slack did not accept the bot's token — ask an admin to check SLACK_BOT_TOKEN.",
    "token_revoked": "The bot's Slack token was revoked — ask an admin to reinstall the app.",
    "account_inactive": "The bot's Slack account is deactivated — ask an admin to reinstall the app.",
    "msg_too_long": "That message was too long for Slack.",
    "invalid_blocks": "Slack refused the message's layout (a bug in the bot; it was logged).",
    "view_too_large": "That form was too large for Slack (a bug in the bot; it was logged).",
    "user_not_found": "Slack does not know that user.",
    "fatal_error": "Slack had an internal error — try again in a minute.",
    "internal_error": "Slack had an internal error — try again in a minute.",
    "service_unavailable": "Slack is unavailable right now — try again in a minute.",
}
UNKNOWN_ERROR = "Slack refused the bot's request (the reason was logged for the team)."
UNREACHABLE = "Slack could not be reached — try again in a minute."


def readable_error(error: str | None) -> str:
    """The sentence a person reads for Slack's error code ``error`` (None: Slack was not reached at all)."""
    if error is None:
        return UNREACHABLE
    return READABLE_ERRORS.get(error, UNKNOWN_ERROR)


class SlackUnavailable(IntegrationError):
    """Slack's Web API refused or failed a call even after retries: its message is the readable sentence;
    ``error`` is Slack's code when it sent one, for the log and for decisions (``lasting``)."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error

    @property
    def lasting(self) -> bool:
        """Asking again will not help: no access to the channel, a missing scope, a dead token."""
        return self.error in _LASTING_ERRORS


def _failed(method: str, error: str | None = None, detail: str = "") -> SlackUnavailable:
    """The error for a failed call: readable for people; Slack's own code (or the connection error) is logged."""
    log.warning("Slack %s failed: %s", method, error or redact(detail)[:200] or "no response")
    # The label is a code this module knows (Slack's are a fixed list; anything else is "other"), or "unreachable".
    metrics.slack_error(method, "unreachable" if error is None else error if error in READABLE_ERRORS else "other")
    return SlackUnavailable(readable_error(error), error=error)


class _CountedRetries(RetryHandler):
    """One of slack_sdk's retry handlers, unchanged, except that each retry it makes is counted by method."""

    def __init__(self, inner: RetryHandler, reason: str) -> None:
        super().__init__(max_retry_count=inner.max_retry_count, interval_calculator=inner.interval_calculator)
        self.inner, self.reason = inner, reason

    def can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                  error: Exception | None = None) -> bool:
        return bool(self.inner.can_retry(state=state, request=request, response=response, error=error))

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None, error: Exception | None = None) -> None:
        metrics.slack_retry(_method_of(request.url), self.reason)
        self.inner.prepare_for_next_attempt(state=state, request=request, response=response, error=error)


def _method_of(url: str) -> str:
    """``chat.postMessage`` of ``https://slack.com/api/chat.postMessage?…``."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def make_client(token: str, base_url: str, *, timeout_s: int = 10) -> WebClient:
    """A WebClient that waits out 429s (Retry-After), retries 500/503 and connection resets."""
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout_s,
        retry_handlers=[
            _CountedRetries(ConnectionErrorRetryHandler(max_retry_count=2), "connection"),
            _CountedRetries(RateLimitErrorRetryHandler(max_retry_count=5), "ratelimited"),
            _CountedRetries(ServerErrorRetryHandler(max_retry_count=3), "server_error"),
        ],
    )


class Slack:
    """The calls the bot makes, each translating slack_sdk errors into one readable line."""

    def __init__(self, client: WebClient, *, group_cache_s: float = 60.0) -> None:
        self.client = client
        self._group_cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._group_cache_s = group_cache_s
        self._lock = threading.Lock()

    def _call(self, method: str, *, form: bool = False, **kwargs: Any) -> dict[str, Any]:
        """POST one method. Writes go as JSON; read methods (form=True) as form fields, which every method accepts."""
        try:
            if form:
                response = self.client.api_call(method, params=kwargs)
            else:
                response = self.client.api_call(method, json=kwargs)
            return dict(response.data) if isinstance(response.data, dict) else {}
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error") if exc.response is not None else "unknown_error"
            raise _failed(method, str(error)) from exc
        except (SlackClientError, OSError) as exc:
            raise _failed(method, detail=str(exc)) from exc

    def post_message(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                     thread_ts: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        """Post a message; ``metadata`` is Slack message metadata ({"event_type", "event_payload"})."""
        args: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False}
        if blocks is not None:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
        if metadata is not None:
            args["metadata"] = metadata
        return str(self._call("chat.postMessage", **args)["ts"])

    def post_long(self, channel: str, text: str | list[str], *, thread_ts: str | None) -> int:
        """Post ``text`` (or its paragraphs, each kept whole) as as many messages as it takes, so nothing is cut
        off (bot.messages.split_message); returns how many were posted."""
        pieces = split_message(text)
        for piece in pieces:
            self.post_message(channel, piece, thread_ts=thread_ts)
        return len(pieces)

    def find_posted(self, channel: str, *, event_type: str, payload: dict[str, Any], oldest: float,
                    thread_ts: str | None = None, max_pages: int = 10) -> str | None:
        """The ts of a message posted since ``oldest`` whose metadata has ``event_type`` and contains ``payload``.

        Reads conversations.history (or .replies in a thread), newest first, at most ``max_pages`` pages of 200.
        """
        method = "conversations.replies" if thread_ts else "conversations.history"
        args: dict[str, Any] = {"channel": channel, "oldest": f"{oldest:.6f}", "limit": 200,
                                "include_all_metadata": "true"}
        if thread_ts:
            args["ts"] = thread_ts
        for _ in range(max_pages):
            data = self._call(method, form=True, **args)
            for message in data.get("messages") or []:
                meta = message.get("metadata") or {}
                found = meta.get("event_payload") or {}
                if meta.get("event_type") == event_type and all(found.get(k) == v for k, v in payload.items()):
                    return str(message.get("ts"))
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not data.get("has_more") or not cursor:
                return None
            args["cursor"] = cursor
        return None

    def update_message(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self._call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks)

    def post_ephemeral(self, channel: str, user: str, text: str,
                       blocks: list[dict[str, Any]] | None = None) -> None:
        args: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        self._call("chat.postEphemeral", **args)

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        self._call("views.open", trigger_id=trigger_id, view=view)

    def publish_home(self, user: str, view: dict[str, Any]) -> None:
        self._call("views.publish", user_id=user, view=view)

    def upload_file(self, *, channel: str, thread_ts: str | None, filename: str, content: bytes,
                    title: str) -> None:
        try:
            self.client.files_upload_v2(channel=channel, thread_ts=thread_ts, filename=filename,
                                        content=content, title=title)
        except SlackApiError as exc:
            raise _failed("file upload", str(exc.response.get("error", "unknown_error"))) from exc
        except (SlackClientError, OSError) as exc:
            raise _failed("file upload", detail=str(exc)) from exc

    def group_members(self, group_id: str) -> frozenset[str]:
        with self._lock:
            cached = self._group_cache.get(group_id)
            if cached and time.monotonic() - cached[0] < self._group_cache_s:
                return cached[1]
        data = self._call("usergroups.users.list", form=True, usergroup=group_id)
        members = frozenset(data.get("users", []))
        with self._lock:
            self._group_cache[group_id] = (time.monotonic(), members)
        return members

    def groups_of(self, user: str, candidates: list[str]) -> frozenset[str]:
        """Which of the user-group IDs in ``candidates`` (S…) the user belongs to."""
        found = set()
        for group in candidates:
            if group.startswith("S"):
                try:
                    if user in self.group_members(group):
                        found.add(group)
                except SlackUnavailable as exc:
                    log.warning("could not resolve user group %s: %s", group, exc)
        return frozenset(found)


def signature_valid(signing_secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether a request carries Slack's signature for ``body`` under ``signing_secret`` (and a fresh timestamp)."""
    try:
        return bool(signing_secret) and SignatureVerifier(signing_secret).is_valid_request(
            body.decode("utf-8", "replace"), headers)
    except Exception:
        return False
