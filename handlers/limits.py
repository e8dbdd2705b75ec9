"""Per-user rate limit on slash commands and button clicks, applied before any listener runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltResponse

from bot import messages
from bot.context import Deps
from bot.ratelimit import TokenBuckets


def register(app: App, deps: Deps) -> None:
    limits = deps.config.limits
    buckets = TokenBuckets(per_minute=limits.per_minute, burst=limits.burst)
    notices = TokenBuckets(per_minute=1, burst=1)  # "slow down" at most once a minute per user

    @app.middleware
    def per_user_limit(body: dict[str, Any], next: Callable[[], None]) -> BoltResponse | None:  # noqa: A002
        if "command" in body:
            user, channel = str(body.get("user_id") or ""), str(body.get("channel_id") or "")
        elif body.get("type") == "block_actions":
            user = str((body.get("user") or {}).get("id") or "")
            channel = str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
                          or "")
        else:
            next()
            return None
        if not user or buckets.take(user):
            next()
            return None
        if "command" in body:
            return BoltResponse(status=200, headers={"content-type": "application/json"},
                                body=json.dumps({"response_type": "ephemeral", "text": messages.slow_down()}))
        if channel and deps.slack is not None and notices.take(user):
            slack = deps.slack
            deps.background(lambda: slack.post_ephemeral(channel, user, messages.slow_down()),
                            doing="slow-down notice")
        return BoltResponse(status=200, body="")  # the click is acknowledged and ignored
