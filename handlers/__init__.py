"""Bolt listeners: each one acks, takes fields from the payload, calls one operation and shows the reply."""

from __future__ import annotations

from slack_bolt import App

from bot.operations import Deps
from handlers import actions, commands, errors


def register(app: App, deps: Deps) -> None:
    """Attach every listener to the app, in one place."""
    errors.register(app)
    commands.register(app, deps)
    actions.register(app, deps)


__all__ = ["register"]
