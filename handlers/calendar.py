"""Maintenance-window listeners: the window buttons, the schedule/reschedule forms and the App Home tab."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt import Ack, App

from bot.calendar.operations import (
    cancel_window,
    confirm_approver,
    home_opened,
    reschedule_form,
    submit_modal,
)
from bot.calendar.views import RESCHEDULE_CALLBACK, SCHEDULE_CALLBACK
from bot.context import Deps, authorize
from bot.edge import user_text
from bot.runbook import access
from bot.store.windows import WindowStore

WINDOW_ACTION = re.compile(r"^window_(reschedule|cancel|approver):(.+)$")


def register(app: App, deps: Deps) -> None:
    """Attach the calendar's listeners; call before handlers.actions (its button listener matches anything)."""

    @app.action(WINDOW_ACTION)
    @access.listener("action", r"window_reschedule:.+", r"window_cancel:.+", r"window_approver:.+")
    def on_window_button(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        action = (body.get("actions") or [{}])[0]
        match = WINDOW_ACTION.match(str(action.get("action_id", "")))
        user = str((body.get("user") or {}).get("id", ""))
        channel = str((body.get("channel") or {}).get("id", "")
                      or (body.get("container") or {}).get("channel_id", ""))
        if not match or not user or deps.slack is None:
            return
        verb, window_id = match.group(1), match.group(2)
        slack = deps.slack
        # Reschedule opens a form, whose trigger_id lasts 3 s: on the forms pool, never behind queued posts.
        pool = deps.promptly if verb == "reschedule" else deps.background
        pool(lambda: _window_button(deps, slack, verb, window_id, user, channel, body), doing=f"window button {verb}")

    @access.listener("view", SCHEDULE_CALLBACK, RESCHEDULE_CALLBACK)
    def on_submit(ack: Ack, body: dict[str, Any]) -> None:
        view = body.get("view") or {}
        user = str((body.get("user") or {}).get("id", ""))
        try:
            refused = _form_refusal(deps, user, str(view.get("callback_id", "")), str(view.get("private_metadata", "")))
            if refused:
                ack(response_action="errors", errors={"date": refused[:150]})
                return
            result = submit_modal(deps, user=user, callback_id=str(view.get("callback_id", "")),
                                  metadata=str(view.get("private_metadata", "")),
                                  values=(view.get("state") or {}).get("values") or {})
        except Exception as exc:
            ack(response_action="errors", errors={"date": user_text(exc, doing="window form")[:150]})
            return
        if result.errors:
            ack(response_action="errors", errors=result.errors)
            return
        ack()

        def after() -> None:
            if result.after:
                result.after()
            if deps.slack is not None and result.channel and result.text:
                deps.slack.post_ephemeral(result.channel, user, result.text)

        deps.background(after, doing="window form follow-up")

    app.view(SCHEDULE_CALLBACK)(on_submit)
    app.view(RESCHEDULE_CALLBACK)(on_submit)

    @app.event("app_home_opened")
    @access.listener("event", "app_home_opened")
    def on_home_opened(event: dict[str, Any]) -> None:
        user = str(event.get("user", ""))
        if not user or deps.slack is None or event.get("tab", "home") != "home":
            return
        slack = deps.slack

        deps.background(lambda: slack.publish_home(user, home_opened(deps, user)), doing="App Home")


def _form_refusal(deps: Deps, user: str, callback_id: str, metadata: str) -> str | None:
    """The schedule form checks the environment it names; the reschedule form the environment of its window."""
    import json

    rule = access.VIEWS.get(callback_id)
    if rule is None:
        return "🚫 That form is not known to this version of the bot. Nothing was changed."
    try:
        meta = json.loads(metadata or "{}")
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    env_name = str(meta.get("env", ""))
    if meta.get("window_id"):
        window = WindowStore(deps.store).get(str(meta["window_id"]))
        env_name = window.env if window is not None else ""
    return authorize(deps, rule, user, env_name=env_name or None)


def _window_button(deps: Deps, slack: Any, verb: str, window_id: str, user: str, channel: str,
                   body: dict[str, Any]) -> None:
    """After the ack of a window button: open the reschedule form, cancel, or note the approver."""

    def run() -> str | None:
        window = WindowStore(deps.store).get(window_id)
        if window is None:
            return f"No maintenance window `{window_id[:60]}`. `/migrate windows` lists them."
        rule = access.action_rule(f"window_{verb}:{window_id}")
        refused = authorize(deps, rule, user, env_name=window.env) if rule else "🚫 Unknown button."
        if refused:
            WindowStore(deps.store).audit(window.id, user, rule.audit if rule else verb, "denied", deps.clock(),
                                    "not allowed")
            return refused
        if verb == "reschedule":
            slack.open_view(str(body.get("trigger_id", "")), reschedule_form(deps, window_id=window_id, user=user))
            return None
        if verb == "cancel":
            window, notice = cancel_window(deps, window_id=window_id, user=user)
            notice()
            return f"Cancelled window `{window.id}`; the notice is in <#{window.channel}>."
        window = confirm_approver(deps, window_id=window_id, user=user)
        return f"Noted: you will approve the {window.env} window `{window.id}`."

    try:
        text = run()
    except Exception as exc:
        text = user_text(exc, doing=f"window {verb}")
    if text and channel:
        deps.background(lambda: slack.post_ephemeral(channel, user, text), doing=f"window {verb} answer")
