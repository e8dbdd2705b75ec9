"""Button clicks on the status message: ack at once, then apply the click to the run and re-render."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App

from bot import messages
from bot.context import Deps, Reply, authorize
from bot.edge import contained, user_text
from bot.observability.logs import log_context
from bot.runbook import access, engine, rollback
from bot.runbook.operations import (
    approve_run,
    cancel_run,
    confirm,
    mark_done,
    proceed_anyway,
    rehearse_again,
    run_step,
    skip_step,
    waive_findings,
)
from bot.runbook.views import parse_button_value, waiver_modal
from bot.runbook.watch import refresh_readings
from handlers.commands import follow_up


class Click:
    """The fields of a block_actions payload that operations need."""

    def __init__(self, body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        self.action_id: str = str(action.get("action_id", ""))
        self.user: str = str((body.get("user") or {}).get("id", ""))
        self.channel: str = str((body.get("channel") or {}).get("id", "")
                                or (body.get("container") or {}).get("channel_id", ""))
        self.run_id, self.version = parse_button_value(str(action.get("value", "")))
        self.trigger_id: str | None = body.get("trigger_id")
        self.subject = self.action_id.partition(":")[2]


def _refresh(deps: Deps, click: Click) -> Reply:
    return refresh_readings(deps, run_id=click.run_id, user=click.user)


# action_id pattern (as spelled in bot.runbook.access.ACTIONS, which names its permission) -> operation; first match wins.
ROUTES: list[tuple[str, Callable[[Deps, Click], Reply]]] = [
    (r"checklist:.+", lambda deps, c: confirm(deps, run_id=c.run_id, item=c.subject, user=c.user)),
    (r"approve", lambda deps, c: approve_run(deps, run_id=c.run_id, user=c.user, version=c.version,
                                             fingerprint=lambda run: engine.approval_fingerprint(deps, run))),
    (r"cancel", lambda deps, c: cancel_run(deps, run_id=c.run_id, user=c.user)),
    (r"step_run:.+", lambda deps, c: run_step(deps, run_id=c.run_id, name=c.subject, user=c.user,
                                              version=c.version)),
    (r"step_skip:.+", lambda deps, c: skip_step(deps, run_id=c.run_id, name=c.subject, user=c.user,
                                                version=c.version)),
    (r"step_done:.+", lambda deps, c: mark_done(deps, run_id=c.run_id, name=c.subject, user=c.user,
                                                version=c.version)),
    (r"waive", lambda deps, c: _open_waiver(deps, c)),
    (r"rollback:restore", lambda deps, c: _open_restore(deps, c)),
    (r"rollback:.+", lambda deps, c: rollback.start_rollback(deps, run_id=c.run_id, option=c.subject,
                                                             user=c.user, version=c.version)),
    (r"rollback_confirm", lambda deps, c: rollback.confirm_restore(deps, run_id=c.run_id, user=c.user,
                                                                   version=c.version)),
    (r"rollback_withdraw", lambda deps, c: rollback.withdraw_restore(deps, run_id=c.run_id, user=c.user,
                                                                     version=c.version)),
    (r"monitor_refresh", _refresh),
    (r"proceed_anyway", lambda deps, c: proceed_anyway(deps, run_id=c.run_id, user=c.user,
                                                       version=c.version)),
    (r"finish", lambda deps, c: engine.close_run(deps, run_id=c.run_id, user=c.user, version=c.version)),
    (r"rehearse", lambda deps, c: rehearse_again(deps, run_id=c.run_id, user=c.user, version=c.version)),
]

# Buttons that act on the run as rendered: their value must carry the run version (compared when applied).
VERSIONED_ACTIONS = ("approve", "finish", "proceed_anyway", "step_run:", "step_skip:", "step_done:", "rollback",
                     "rehearse")

# Buttons that open a form: Slack's trigger_id lasts 3 s, so they go to Deps.promptly's pool, never behind posts.
FORM_BUTTONS = frozenset({"waive", "rollback:restore"})


def _run_click(deps: Deps, click: Click) -> Reply:
    """Check the button's permission (bot.runbook.access) on the run before any work, then do what it says."""
    rule = access.action_rule(click.action_id)
    handler = next((fn for pattern, fn in ROUTES
                    if re.fullmatch(pattern, click.action_id)), None)
    if rule is None or handler is None:
        return Reply("That button is not known to this version of the bot. Nothing was changed.")
    run = deps.store.get(click.run_id)
    refused = authorize(deps, rule, click.user, env_name=run.env, run=run, subject=click.action_id)
    if refused:
        return Reply(refused, publish_run=run.id)
    if click.version is None and click.action_id.startswith(VERSIONED_ACTIONS):
        return Reply(messages.stale_message())
    return handler(deps, click)


def _open_waiver(deps: Deps, click: Click) -> Reply:
    run = deps.store.get(click.run_id)
    if deps.slack is not None and click.trigger_id:
        deps.slack.open_view(click.trigger_id, waiver_modal(run))
    return Reply("")


def _open_restore(deps: Deps, click: Click) -> Reply:
    run = deps.store.get(click.run_id)
    if not engine.may_operate(deps, run, click.user):
        return Reply(messages.denied(f"Only the requester or an approver of {run.env} may request a restore."))
    if click.version != run.version:
        return Reply(messages.stale_message(), publish_run=run.id)
    if deps.slack is not None and click.trigger_id:
        deps.slack.open_view(click.trigger_id, rollback.restore_modal(run))
    return Reply("")


def _field(view: dict[str, Any], block_id: str) -> str:
    """The text typed into an input block (whatever its element's action_id)."""
    values = ((view.get("state") or {}).get("values") or {}).get(block_id, {})
    first: dict[str, Any] = next(iter(values.values()), {}) if isinstance(values, dict) else {}
    return str((first or {}).get("value") or "")


def _submission(deps: Deps, ack: Ack, field: str, operation: Callable[[], Reply], *, callback_id: str = "",
                user: str = "", run_id: str = "") -> None:
    """Check the form's permission (bot.runbook.access.VIEWS) on its run, then run its operation; any refusal becomes a
    field error on the modal, success closes it."""
    with log_context(run_id=run_id, env=_env_of(deps, run_id), user=user):
        try:
            rule = access.VIEWS.get(callback_id)
            run = deps.store.get(run_id)
            refused = authorize(deps, rule, user, env_name=run.env, run=run) if rule else "🚫 Unknown form."
            if refused:
                ack(response_action="errors", errors={field: refused[:150]})
                return
            reply = operation()
        except Exception as exc:
            ack(response_action="errors", errors={field: user_text(exc, doing=f"form {callback_id}")[:150]})
            return
        if reply.text:
            ack(response_action="errors", errors={field: reply.text[:150]})
            return
        ack()
        follow_up(deps, reply)


def register(app: App, deps: Deps) -> None:
    @app.view("restore_request")
    @access.listener("view", "restore_request")
    def on_restore_request(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user = str((body.get("user") or {}).get("id", ""))
        run_id, _ = parse_button_value(str(view.get("private_metadata", "")))
        typed, reason = _field(view, "env"), _field(view, "reason")
        field = "env" if typed.strip() != run_id.rsplit("-", 2)[0] else "reason"
        _submission(deps, ack, field, lambda: rollback.request_restore(
            deps, run_id=run_id, user=user, typed_env=typed, reason=reason),
                    callback_id="restore_request", user=user, run_id=run_id)

    @app.view("waive_findings")
    @access.listener("view", "waive_findings")
    def on_waive(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user = str((body.get("user") or {}).get("id", ""))
        run_id, _ = parse_button_value(str(view.get("private_metadata", "")))
        reason = _field(view, "reason")
        _submission(deps, ack, "reason", lambda: waive_findings(deps, run_id=run_id, user=user, reason=reason),
                    callback_id="waive_findings", user=user, run_id=run_id)

    @app.action(re.compile(r".+"))
    @access.listener("action", *(pattern for pattern, _ in ROUTES))
    def on_click(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        click = Click(body)
        if not click.run_id or not click.user:
            return
        # The work goes to a pool, and its log lines name the run, its environment and who clicked.
        with log_context(run_id=click.run_id, env=_env_of(deps, click.run_id), user=click.user):
            if click.action_id in FORM_BUTTONS:
                deps.promptly(lambda: _open_form(deps, click), doing=f"click {click.action_id}")
            else:
                deps.background(lambda: _answer(deps, click, _decide(deps, click)))


def _env_of(deps: Deps, run_id: str) -> str | None:
    """The environment a run id names (``prod-261124-a1b2c3``), when it is a configured one."""
    env = run_id.rsplit("-", 2)[0]
    return env if deps.config.environment(env) is not None else None


def _decide(deps: Deps, click: Click) -> Reply:
    """The click applied to the run (a form opened, for a form button); any error as the line the user reads."""
    try:
        return _run_click(deps, click)
    except Exception as exc:
        return Reply(user_text(exc, doing=f"click {click.action_id}"))


def _open_form(deps: Deps, click: Click) -> None:
    """A form button, on the forms pool: the permission check and views.open now; any answer in the background."""
    reply = _decide(deps, click)
    if reply.text or reply.publish_run or reply.after:
        deps.background(lambda: _answer(deps, click, reply))


def _answer(deps: Deps, click: Click, reply: Reply) -> None:
    """Everything after a click was decided: the ephemeral answer, the message update, what was queued."""
    if reply.text and deps.slack is not None and click.channel:
        with contained("ephemeral reply"):
            deps.slack.post_ephemeral(click.channel, click.user, reply.text, reply.blocks)
    if reply.publish_run:
        deps.publish(reply.publish_run)
    if reply.after:
        reply.after()
