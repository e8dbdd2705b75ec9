"""The `/migrate` slash command: parse, run the operation, answer ephemerally within Slack's 3 seconds."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot import messages
from bot.context import Deps, Invocation, Reply, authorize
from bot.edge import contained, user_text
from bot.observability.logs import log_context
from bot.runbook import access
from bot.runbook.operations import handle_command, parse_start
from bot.slowwork import Flights

# Verbs that query databases, run checks or squawk: answered after the ack, from a small pool (bot.slowwork).
SLOW_VERBS = ("check", "lint")


def register(app: App, deps: Deps) -> None:
    flights = Flights(deps.config.limits.check_workers)

    @app.command("/migrate")
    @access.listener("command", *access.VERBS)
    def migrate(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        invocation = Invocation(
            user=command.get("user_id", ""),
            channel=command.get("channel_id", ""),
            text=str(command.get("text", ""))[:2000],
            trigger_id=command.get("trigger_id"),
        )
        words = invocation.text.split()
        env = next((word for word in words[:2] if deps.config.environment(word) is not None), None)
        with log_context(user=invocation.user, env=env):  # every log line of this command names them
            _migrate(deps, flights, invocation, words, ack, respond)


def _migrate(deps: Deps, flights: Flights, invocation: Invocation, words: list[str], ack: Ack,
             respond: Respond) -> None:
    if len(words) == 2 and words[0].lower() in SLOW_VERBS and deps.config.environment(words[1]) is not None:
        # Ack first; the operation (and its permission decision) runs on the pool and answers through
        # response_url. A second request for the same check while it runs joins it instead of opening
        # its own connections.
        key = (words[0].lower(), words[1])
        # The permission is decided before the ack: an outsider is refused at once, never told "Checking…".
        refused = _refusal(deps, invocation, key)
        if refused:
            ack(response_type="ephemeral", text=refused)
            return
        ack(response_type="ephemeral", text=messages.checking(*key))
        flights.join(key, lambda: _answer_later(deps, invocation, respond))
        return
    if words and deps.config.environment(words[0].lower()) is not None \
            and deps.config.environments[words[0].lower()].migrate.source.git is not None:
        # A release-pinned start fetches the repository first (seconds): ack, then start on the pool. The
        # permission is decided before the ack, as for the slow verbs; bad input gets one line, no run.
        refused = _refusal(deps, invocation, (access.ENV_VERB, words[0].lower()))
        if refused:
            ack(response_type="ephemeral", text=refused)
            return
        parsed = parse_start(words[1:])
        ack(response_type="ephemeral", text=messages.resolving_release(words[0].lower(),
                                                                       parsed[0] if parsed else None))
        flights.join(("start", words[0].lower()), lambda: _answer_later(deps, invocation, respond))
        return
    # Every other operation is a few Redis round trips (milliseconds), so its answer goes in the ack itself.
    reply = _decide(deps, invocation)
    ack(response_type="ephemeral", text=reply.text or "Done.", blocks=reply.blocks)
    follow_up(deps, reply)


def _refusal(deps: Deps, invocation: Invocation, key: tuple[str, str]) -> str | None:
    """The one-line refusal when the user may not run this slow verb on that environment, else None."""
    try:
        return authorize(deps, access.VERBS[key[0]], invocation.user, env_name=key[1])
    except Exception as exc:
        return user_text(exc, doing=f"/migrate {key[0]}")


def _decide(deps: Deps, invocation: Invocation) -> Reply:
    try:
        return handle_command(deps, invocation)
    except Exception as exc:
        return Reply(user_text(exc, doing="/migrate"))


def _answer_later(deps: Deps, invocation: Invocation, respond: Respond) -> None:
    reply = _decide(deps, invocation)
    with contained(f"answering /migrate {invocation.text.split()[0]}"):  # Slack unreachable: the answer is lost
        respond(text=reply.text or "Done.", blocks=reply.blocks, response_type="ephemeral", replace_original=False)
    follow_up(deps, reply)


def follow_up(deps: Deps, reply: Reply) -> None:
    """After the ack: a form opens at once (its own pool); then, in the background, the run's message is
    published and what the operation queued runs."""
    if reply.form is not None:
        deps.promptly(reply.form, doing="opening a form")
    if not reply.publish_run and not reply.after:
        return

    def work() -> None:
        if reply.publish_run:
            deps.publish(reply.publish_run)
        if reply.after:
            reply.after()

    deps.background(work)
