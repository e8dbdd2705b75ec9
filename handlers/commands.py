"""The `/migrate` slash command: parse, run the operation, answer ephemerally within Slack's 3 seconds."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App

from bot import access, messages
from bot.errors import BotError, StateStoreUnavailable
from bot.operations import Deps, Invocation, Reply, handle_command

log = logging.getLogger(__name__)


def register(app: App, deps: Deps) -> None:
    @app.command("/migrate")
    @access.listener("command", *access.VERBS)
    def migrate(ack: Ack, command: dict[str, Any]) -> None:
        invocation = Invocation(
            user=command.get("user_id", ""),
            channel=command.get("channel_id", ""),
            text=str(command.get("text", ""))[:2000],
            trigger_id=command.get("trigger_id"),
        )
        # The operation is a few Redis round trips (milliseconds), so its answer goes in the ack itself.
        try:
            reply = handle_command(deps, invocation)
        except StateStoreUnavailable:
            ack(response_type="ephemeral", text=messages.state_store_unavailable())
            return
        except BotError as exc:
            ack(response_type="ephemeral", text=str(exc))
            return
        except Exception as exc:  # never let a traceback reach the user
            log.error("/migrate failed: %s", type(exc).__name__)
            ack(response_type="ephemeral", text=messages.internal_error())
            return
        ack(response_type="ephemeral", text=reply.text or "Done.", blocks=reply.blocks)
        follow_up(deps, reply)


def follow_up(deps: Deps, reply: Reply) -> None:
    """Slow work after the ack, in the background: publish the run's message, then what the operation queued."""
    if not reply.publish_run and not reply.after:
        return

    def work() -> None:
        if reply.publish_run:
            deps.publish(reply.publish_run)
        if reply.after:
            reply.after()

    deps.background(work)
