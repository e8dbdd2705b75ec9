"""Wiring: build the Bolt app, the run store and the Slack client from settings, once, at startup."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App

from bot.config import BotConfig, Settings
from bot.context import Deps, JobQueue
from bot.integrations.slack import Slack, make_client
from bot.observability import metrics
from bot.runbook.publisher import Publisher
from bot.runbook.rules import RunStatus
from bot.store.runs import RunStore, connect

log = logging.getLogger(__name__)


def instance_name() -> str:
    """Identifies this process in step ownership, so a dead owner can be told from a live one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def build_deps(settings: Settings, config: BotConfig, *, jobs: Callable[[Deps], JobQueue] | None = None) -> Deps:
    """The server's deps; ``jobs`` is the job queue (jobs.scheduler.queue_for), given by whoever starts the jobs."""
    store = RunStore(connect(settings.redis_url), prefix=settings.key_prefix,
                     retention_s=config.retention_days * 86400)
    slack = Slack(make_client(settings.slack_bot_token, settings.slack_api_url))
    # The runs gauge of /metrics reads Redis at each scrape: every replica reports the same truth.
    metrics.watch_runs(metrics.RunsSource(states_of_runs=store.states_of_runs,
                                          environments=tuple(config.environments),
                                          states=tuple(status.value for status in RunStatus)))
    return Deps(
        config=config,
        store=store,
        slack=slack,
        publisher=Publisher(store, slack),
        instance_id=instance_name(),
        executor=ThreadPoolExecutor(max_workers=config.worker_threads, thread_name_prefix="step"),
        # Follow-ups (Slack replies and message updates after an ack) share the GIL with the acks, so under a click
        # storm every extra thread makes acks wait (P1 click p50: 103 ms with 4 threads, 135 with 8, 192 with 32),
        # while Slack's rate limits allow only a few calls a second anyway.
        followups=ThreadPoolExecutor(max_workers=config.followup_threads, thread_name_prefix="followup"),
        jobs=jobs,
    )


def _not_token_unused(record: logging.LogRecord) -> bool:
    """Bolt reads SLACK_BOT_TOKEN itself and warns it is unused beside our client, given on purpose (its retry
    handlers, its base URL): that warning says nothing true about this bot."""
    return "token` will be unused" not in record.getMessage()


def build_bolt_app(settings: Settings, deps: Deps, listeners: Callable[[App, Deps], None]) -> App:
    """The Bolt app with every listener registered by ``listeners`` (handlers.register, given by `serve`)."""
    assert deps.slack is not None
    logging.getLogger("slack_bolt.App").addFilter(_not_token_unused)
    # process_before_response: each listener runs on the request's own thread and the HTTP response goes out
    # when it returns. Listeners do only fast Redis work before returning and hand everything that talks to
    # Slack or AWS to deps.background(), so no polling for ack() and no shared listener pool to saturate.
    app = App(
        client=deps.slack.client,
        signing_secret=settings.slack_signing_secret,
        token_verification_enabled=False,
        process_before_response=True,
        raise_error_for_unhandled_request=False,
    )
    # Bolt logs the whole body of a request whose signature fails (at INFO, as it builds the App); bot.server refuses
    # those before Bolt sees them, and this keeps any that get through out of the log too.
    logging.getLogger("slack_bolt.RequestVerification").setLevel(logging.WARNING)
    listeners(app, deps)
    return app
