"""Issue 11, hole 11 (each a test): user text is escaped in Slack, smoke-test header values are redacted,
`/migrate schedule` is idempotent for a replayed request, and closed runs and windows expire from Redis."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest

from bot.config import SmokeProbe
from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.integrations.smoke import run_smoke_probes
from bot.redact import redact
from bot.store.runs import RunStore, connect
from tests.harness import (
    ALICE,
    BOT_TOKEN,
    COMPRESSED_CALENDAR,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    wait_until,
    write_config,
)

EVIL = "<!channel> <@U123> <https://evil.example|click>"
RAW_FORMS = ("<!channel>", "<@U123>", "<https://evil.example|click>")
RETENTION_DAYS = 2


@pytest.fixture(scope="module")
def hygiene(tmp_path_factory, redis_url) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("hygiene")
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    (tmp / "none").mkdir()
    prefix = f"test:hygiene:{time.time_ns()}:"
    config = base_config(migrate={"migrations_dir": str(tmp / "none")}, calendar=COMPRESSED_CALENDAR)
    config["retention_days"] = RETENTION_DAYS
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log").start()
    sender = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
    store = RunStore(connect(redis_url), prefix=prefix)
    yield {"bot": bot, "fake": fake, "sender": sender, "store": store, "prefix": prefix}
    sender.close()
    bot.stop()
    fake.stop()
    for key in store.redis.scan_iter(match=prefix + "*"):
        store.redis.delete(key)


def _start_run(world) -> str:
    store = world["store"]
    assert world["sender"].slash(ALICE, "prod", channel_id=PROD_CHANNEL).status_code == 200
    run = wait_until(lambda: (r := store.active_run("prod")) and r.message_ts and r, timeout=20)
    return str(run.id)


def _cancel(world, run_id: str, reason: str) -> None:
    store = world["store"]
    world["sender"].slash(ALICE, f"cancel {run_id} {reason}", channel_id=PROD_CHANNEL)
    wait_until(lambda: store.get(run_id).status.value == "cancelled")
    # The status message and the thread have caught up with the cancellation.
    wait_until(lambda: not store.message_behind(run_id), timeout=20)


def _recorded(fake: FakeSlack) -> str:
    """Everything the bot sent to Slack: Web API calls and ephemeral answers."""
    calls = [json.dumps(c.args, ensure_ascii=False, default=str) for c in fake.calls]
    return "\n".join(calls + [json.dumps(e, ensure_ascii=False, default=str) for e in fake.ephemerals()])


class TestUserTextIsEscaped:
    def test_cancel_reason_does_not_ping_or_disguise_links(self, hygiene):
        """A cancel reason `<!channel> <@U123> <https://evil.example|click>` shows as typed: in the status
        message and in the thread it is escaped, so it pings nobody and hides no link."""
        run_id = _start_run(hygiene)
        _cancel(hygiene, run_id, EVIL)
        store, fake = hygiene["store"], hygiene["fake"]
        assert store.get(run_id).cancel_reason == EVIL  # stored as typed, escaped only when shown
        message = fake.message(PROD_CHANNEL, str(store.get(run_id).message_ts))
        thread = fake.thread(PROD_CHANNEL, str(store.get(run_id).message_ts))
        shown = json.dumps(message, ensure_ascii=False) + json.dumps(thread, ensure_ascii=False)
        assert "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil.example|click&gt;" in shown
        recorded = _recorded(fake)
        for raw in RAW_FORMS:
            assert raw not in recorded, raw

    def test_echoed_environment_names_and_release_notes_are_escaped(self, hygiene):
        sender = hygiene["sender"]
        unknown = sender.slash(ALICE, "<!channel>", channel_id=PROD_CHANNEL).json()["text"]
        assert "<!channel>" not in unknown and "&lt;!channel&gt;" in unknown
        start = datetime.now(UTC) + timedelta(days=3)
        words = f"{start:%Y-%m-%d} 10:00 1h \"release {EVIL}\" --tz UTC"
        reply = sender.slash(ALICE, f"schedule prod {words}", channel_id=PROD_CHANNEL).json()["text"]
        assert "Scheduled window" in reply, reply
        listing = json.dumps(sender.slash(ALICE, "windows prod", channel_id=PROD_CHANNEL).json(), ensure_ascii=False)
        assert "release &lt;!channel&gt;" in listing
        for raw in RAW_FORMS:
            assert raw not in listing, raw


class TestScheduleReplay:
    def test_a_replayed_schedule_request_books_one_window(self, hygiene):
        """Slack retries a slow command with the identical signed body (X-Slack-Retry-Num): one window, and the
        retry gets the same answer."""
        sender, store, fake = hygiene["sender"], hygiene["store"], hygiene["fake"]
        notes = f"replay {time.time_ns()}"
        start = datetime.now(UTC) + timedelta(days=4)
        fields = {"token": "t", "team_id": sender.team_id, "team_domain": sender.team_domain,
                  "channel_id": PROD_CHANNEL, "channel_name": "prod", "user_id": ALICE, "user_name": "alice",
                  "command": "/migrate", "text": f"schedule prod {start:%Y-%m-%d} 11:00 1h \"{notes}\" --tz UTC",
                  "api_app_id": sender.api_app_id, "response_url": fake.response_url(PROD_CHANNEL, ALICE),
                  "trigger_id": fake.issue_trigger_id(ALICE)}
        body = urlencode(fields)
        timestamp = int(time.time())
        first = sender.post_raw(body, "application/x-www-form-urlencoded", timestamp=timestamp)
        replay = sender.post_raw(body, "application/x-www-form-urlencoded", timestamp=timestamp,
                                 headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
        assert first.status_code == replay.status_code == 200
        assert first.json()["text"] == replay.json()["text"]
        ids = re.findall(r"window `([a-z0-9-]+)`", first.json()["text"])
        assert ids, first.json()["text"]
        booked = [raw for raw in (store.redis.get(k) for k in store.redis.scan_iter(match=store.key("window", "*")))
                  if raw and notes in raw]
        assert len(booked) == 1, booked
        # Cancelling the window starts its retention: the document and its audit expire, the audit last.
        sender.slash(ALICE, f"windows cancel {ids[0]} done", channel_id=PROD_CHANNEL)
        window_ttl = wait_until(lambda: (t := store.redis.ttl(store.key("window", ids[0]))) > 0 and t)
        assert RETENTION_DAYS * 86400 - 60 <= window_ttl <= RETENTION_DAYS * 86400
        assert store.redis.ttl(store.key("window-audit", ids[0])) >= window_ttl


class TestRetention:
    def test_closing_a_run_sets_ttls_and_an_active_run_has_none(self, hygiene):
        store = hygiene["store"]
        run_id = _start_run(hygiene)
        wait_until(lambda: not store.message_behind(run_id), timeout=20)
        run_key, audit_key = f"{hygiene['prefix']}run:{run_id}", f"{hygiene['prefix']}audit:{run_id}"
        beside = [store.key("rendered", run_id), store.key("threadcursor", run_id)]
        for key in (run_key, audit_key, *beside):
            assert store.redis.ttl(key) == -1, key  # exists, no expiry while the run is active
        _cancel(hygiene, run_id, "done here")
        run_ttl = store.redis.ttl(run_key)
        assert RETENTION_DAYS * 86400 - 60 <= run_ttl <= RETENTION_DAYS * 86400
        wait_until(lambda: all(store.redis.ttl(key) > 0 for key in (audit_key, *beside)), timeout=20)
        for key in (audit_key, *beside):
            assert store.redis.ttl(key) >= run_ttl, key  # the audit outlives its run
        assert store.get(run_id).status.value == "cancelled"  # same key names: still readable until it expires
        assert store.audit_entries(run_id)[-1].action == "run.cancel"


class _EchoHeaders(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = ("error: " + " ".join(f"{k}={v}" for k, v in self.headers.items() if k.startswith("X-"))).encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class TestSmokeHeaders:
    def test_header_values_never_show_in_results(self):
        """A failing probe whose response quotes the request headers (an error page) shows no header value in
        its error, detail or summary; secret-named ones are also removed from logs."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHeaders)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/health"
            probe = SmokeProbe(name="health", url=url, headers={"X-Api-Key": "static-key-7f3a9c",
                                                                "X-Tenant": "tenant-secret-42"})
            report = run_smoke_probes([probe], variables={}, extra_headers={"X-Maintenance-Token": "bypass-91c2"})
        finally:
            server.shutdown()
        result = report.results[0]
        assert not result.ok and result.status == 500
        shown = " ".join([result.error or "", result.detail or "", result.url, report.summary()])
        assert "error:" in (result.detail or "")  # the excerpt is still shown...
        for value in ("static-key-7f3a9c", "tenant-secret-42", "bypass-91c2"):
            assert value not in shown, value  # ...without the header values
        assert "static-key-7f3a9c" not in redact("log line with static-key-7f3a9c")
