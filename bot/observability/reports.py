"""Sentry reports of the bot's own unexpected errors (SENTRY_DSN): every string redacted, no request bodies or headers.

Not to be confused with ``monitoring.sentry`` in the environments file, which reads the *application's* Sentry
while a run is monitored (bot.integrations.sentry). Here the bot reports its own bugs: what the edge's "anything
else" branch contains (bot.edge) and a step that crashed (bot.runbook.engine), tagged with the run, environment and
step being worked on. Log lines become breadcrumbs, never events of their own, so nothing is reported twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from bot.observability.logs import current_context
from bot.redact import redact, register_secret

log = logging.getLogger(__name__)

_DROPPED_REQUEST_PARTS = ("data", "headers", "cookies", "env", "query_string")
_TAGS = ("run_id", "env", "step")  # never the user: reports carry no names
_state = {"on": False}


def init(dsn: str, *, environment: str | None = None) -> None:
    """Start reporting to ``dsn``; its key is registered as a secret so it never shows in a log or a message."""
    register_secret(dsn)
    register_secret(urlsplit(dsn).username)
    # sentry_sdk takes ~60 ms to import: only a process that reports loads it.
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        send_default_pii=False,
        include_local_variables=False,  # a frame's locals hold tokens and URLs
        max_request_body_size="never",
        auto_enabling_integrations=False,  # no web or Redis integration adding request data or spans
        integrations=[LoggingIntegration(level=logging.INFO, event_level=None)],
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
    )
    _state["on"] = True


def capture(exc: BaseException) -> None:
    """Report ``exc`` (a bug the caller contained) with the log context's run, environment and step as tags."""
    if not _state["on"]:
        return
    import sentry_sdk

    try:
        with sentry_sdk.new_scope() as scope:
            for key, value in current_context().items():
                if key in _TAGS:
                    scope.set_tag(key, value)
            sentry_sdk.capture_exception(exc)
    except Exception as failure:  # reporting must never turn one error into two
        log.debug("Sentry report not sent: %s", type(failure).__name__)


def scrub(value: Any) -> Any:
    """``value`` with every string in it redacted, however deeply nested, and every frame's locals dropped."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: scrub(item) for key, item in value.items() if key != "vars"}
    if isinstance(value, (list, tuple)):
        return [scrub(item) for item in value]
    return value


def scrub_event(event: Any, _hint: Any) -> Any:
    """before_send: drop request bodies, headers, cookies and the user; redact every other string."""
    request = event.get("request")
    if isinstance(request, dict):
        for part in _DROPPED_REQUEST_PARTS:
            request.pop(part, None)
    event.pop("user", None)
    return scrub(event)


def scrub_breadcrumb(crumb: Any, _hint: Any) -> Any:
    """before_breadcrumb: log lines reach Sentry before the log handler's filter redacts them, so redact here."""
    return scrub(crumb)
