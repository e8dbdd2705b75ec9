"""Keeps a run's one Slack message and its thread in step with Redis: post once, then update in place."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import LockError, RedisError

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
            lock = self.store.redis.lock(self.store.key("msglock", run_id), timeout=30, blocking_timeout=30)
            if not lock.acquire():
                log.warning("message sync for %s skipped: lock busy", run_id)
                return
        except RedisError as exc:
            log.warning("message sync for %s skipped: %s", run_id, type(exc).__name__)
            return
        try:
            self._sync_locked(run_id)
        except StateStoreUnavailable as exc:
            log.warning("message sync for %s stopped: %s", run_id, exc)
        except BotError as exc:
            log.warning("message sync for %s incomplete: %s", run_id, exc)
        finally:
            try:
                lock.release()
            except (LockError, RedisError):
                pass

    def _sync_locked(self, run_id: str) -> None:
        run = self.store.get(run_id)
        rendered_key = self.store.key("rendered", run_id)
        if not run.message_ts:
            view = render_run(run)
            ts = self.slack.post_message(run.channel, view["text"], view["blocks"])
            self.store.set_message(run_id, run.channel, ts)
            self.store.redis.set(rendered_key, run.version)
            run = self.store.get(run_id)
        rendered = int(self.store.redis.get(rendered_key) or 0)
        if run.version > rendered and run.message_ts:
            view = render_run(run)
            self.slack.update_message(run.channel, run.message_ts, view["text"], view["blocks"])
            self.store.redis.set(rendered_key, run.version)
        self._post_thread(run_id, run.channel, run.message_ts)
        if run.is_terminal:
            self.store.retain(run_id)  # the cursors just written must expire with the closed run

    def _post_thread(self, run_id: str, channel: str, thread_ts: str | None) -> None:
        if not thread_ts:
            return
        cursor_key = self.store.key("threadcursor", run_id)
        cursor = str(self.store.redis.get(cursor_key) or "-")
        for entry in self.store.audit_entries(run_id, after=cursor):
            text = audit_line(entry.actor, entry.action, entry.outcome, entry.detail, entry.at)
            self.slack.post_message(channel, text, thread_ts=thread_ts)
            self.store.redis.set(cursor_key, entry.id)

    def current_view(self, run_id: str) -> dict[str, Any]:
        return render_run(self.store.get(run_id))
