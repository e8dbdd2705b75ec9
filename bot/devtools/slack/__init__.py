"""devslack: a local stand-in for Slack (Web API fake, signed request sender, terminal console)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.devtools.slack.blockkit import validate_blocks, validate_view
    from bot.devtools.slack.client import Button, ElementNotFound, SlackSender, buttons
    from bot.devtools.slack.console import Console
    from bot.devtools.slack.server import Call, FakeSlack, FileUpload

# Imported lazily so `python -m bot.devtools.slack.server` does not import its own module twice.
_EXPORTS = {
    "validate_blocks": "blockkit", "validate_view": "blockkit",
    "Button": "client", "ElementNotFound": "client", "SlackSender": "client", "buttons": "client",
    "Console": "console",
    "Call": "server", "FakeSlack": "server", "FileUpload": "server",
}

__all__ = [
    "Button",
    "Call",
    "Console",
    "ElementNotFound",
    "FakeSlack",
    "FileUpload",
    "SlackSender",
    "buttons",
    "validate_blocks",
    "validate_view",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bot.devtools.slack' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bot.devtools.slack.{module}"), name)
