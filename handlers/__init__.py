"""Bolt listeners: each one acks, takes fields from the payload, calls one operation and shows the reply."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Deps
from handlers import actions, calendar, commands, errors, limits


def register(app: App, deps: Deps) -> None:
    """Attach every listener to the app, in one place."""
    errors.register(app)
    limits.register(app, deps)  # middleware: before every listener
    commands.register(app, deps)
    calendar.register(app, deps)  # before actions: its catch-all button listener would take window buttons
    actions.register(app, deps)


__all__ = ["register"]
