"""Keeps a run's one Slack message and its thread in step with Redis: post once, then update in place."""

from __future__ import annotations

import logging
from typing import Any

from bot.errors import BotError, StateStoreUnavailable
from bot.integrations.slack import Slack
from bot.messages import audit_line
from bot.runbook.views import render_run
from bot.store.runs import RunStore

log = logging.getLogger(__name__)


class Publisher:
    """``sync(run_id)`` makes Slack show the latest run state; safe to call from any thread or replica."""

    def __init__(self, store: RunStore, slack: Slack) -> None:
        self.store = store
        self.slack = slack

    def sync(self, run_id: str) -> None:
        try:
            if not self.store.message_behind(run_id):
                return  # a later change calls sync again after its own write, so nothing is missed
        except StateStoreUnavailable as exc:
            log.warning("message sync for %s skipped: %s", run_id, exc)
            return
        try:
            with self.store.message_lock(run_id) as held:
                if not held:
                    log.warning("message sync for %s skipped: lock busy", run_id)
                    return
                try:
                    self._sync_locked(run_id)
                except StateStoreUnavailable as exc:
                    log.warning("message sync for %s stopped: %s", run_id, exc)
                except BotError as exc:
                    log.warning("message sync for %s incomplete: %s", run_id, exc)
        except StateStoreUnavailable as exc:  # the lock could not be taken
            log.warning("message sync for %s skipped: %s", run_id, exc)

    def _sync_locked(self, run_id: str) -> None:
        run = self.store.get(run_id)
        if not run.message_ts:
            view = render_run(run)
            ts = self.slack.post_message(run.channel, view["text"], view["blocks"])
            self.store.set_message(run_id, run.channel, ts)
            self.store.mark_rendered(run_id, run.version)
            run = self.store.get(run_id)
        if run.version > self.store.rendered_version(run_id) and run.message_ts:
            view = render_run(run)
            self.slack.update_message(run.channel, run.message_ts, view["text"], view["blocks"])
            self.store.mark_rendered(run_id, run.version)
        self._post_thread(run_id, run.channel, run.message_ts)
        if run.is_terminal:
            self.store.retain(run_id)  # the cursors just written must expire with the closed run

    def _post_thread(self, run_id: str, channel: str, thread_ts: str | None) -> None:
        if not thread_ts:
            return
        for entry in self.store.audit_entries(run_id, after=self.store.thread_cursor(run_id)):
            text = audit_line(entry.actor, entry.action, entry.outcome, entry.detail, entry.at)
            self.slack.post_message(channel, text, thread_ts=thread_ts)
            self.store.advance_thread_cursor(run_id, entry.id)

    def current_view(self, run_id: str) -> dict[str, Any]:
        return render_run(self.store.get(run_id))
