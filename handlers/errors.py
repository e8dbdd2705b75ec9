"""The global error handler: log one redacted line, show the user a short apology, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App

from bot.edge import one_line

log = logging.getLogger("bot.handlers")


def register(app: App) -> None:
    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        kind = body.get("type") or ("command" if "command" in body else "request")
        log.error("listener failed (%s): %s", kind, one_line(error))
