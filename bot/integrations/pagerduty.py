"""PagerDuty Events API v2: trigger and resolve one alert per dedup key (``POST /v2/enqueue``, via httpx).

The event (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/):
``{"routing_key", "event_action": "trigger"|"resolve", "dedup_key", "payload": {"summary" (≤ 1024 chars),
"source", "severity": critical|error|warning|info, "custom_details"}}``. PagerDuty answers 202
``{"status": "success", "dedup_key": …}``; 400 for an invalid event, 429 when rate-limited.
Every failure raises ``IntegrationError`` with one readable line (the routing key redacted).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from bot.errors import IntegrationError
from bot.integrations.http import body_excerpt, send
from bot.redact import register_secret

PagerDutySeverity = Literal["critical", "error", "warning", "info"]
DEFAULT_URL = "https://events.pagerduty.com"
MAX_SUMMARY = 1024


class PagerDuty:
    """An Events API v2 client for one integration (routing key)."""

    def __init__(self, routing_key: str, base_url: str = DEFAULT_URL, *, timeout_s: float = 10,
                 client: httpx.Client | None = None) -> None:
        if not routing_key:
            raise IntegrationError("PagerDuty needs a routing key (the integration key of an Events API v2 service)")
        register_secret(routing_key)
        self._routing_key = routing_key
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = client

    def trigger(self, dedup_key: str, summary: str, severity: PagerDutySeverity = "critical",
                source: str = "migrate-bot", *, custom_details: dict[str, Any] | None = None) -> str:
        """Open (or update) the alert ``dedup_key``; returns the dedup key PagerDuty answered with."""
        if len(summary) > MAX_SUMMARY:
            summary = summary[: MAX_SUMMARY - 1] + "…"
        payload: dict[str, Any] = {"summary": summary, "source": source, "severity": severity}
        if custom_details:
            payload["custom_details"] = custom_details
        return self._enqueue({"event_action": "trigger", "dedup_key": dedup_key, "payload": payload})

    def resolve(self, dedup_key: str) -> str:
        """Resolve the alert ``dedup_key``."""
        return self._enqueue({"event_action": "resolve", "dedup_key": dedup_key})

    def _enqueue(self, event: dict[str, Any]) -> str:
        action = event["event_action"]
        url = f"{self.base_url}/v2/enqueue"
        response = send(self._client, "POST", url, timeout_s=self.timeout_s,
                        json={"routing_key": self._routing_key, **event},
                        unreachable=f"PagerDuty {action} failed: unreachable at {self.base_url}")
        status = response.status_code
        try:
            document = response.json()
        except ValueError:
            document = None
        if status == 429:
            raise IntegrationError(f"PagerDuty {action} failed: rate-limited (429); try again shortly")
        if not response.is_success:
            detail = ""
            if isinstance(document, dict):
                errors = document.get("errors")
                detail = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else str(
                    document.get("message") or "")
            detail = detail or body_excerpt(response, limit=160)
            raise IntegrationError(f"PagerDuty {action} failed: {status}" + (f": {detail}" if detail else ""))
        if isinstance(document, dict) and document.get("dedup_key"):
            return str(document["dedup_key"])
        return str(event.get("dedup_key", ""))
