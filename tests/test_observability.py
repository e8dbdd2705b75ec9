"""Issue 15 item 5: a bot you can see into — /metrics, JSON log lines and Sentry reports of the bot's own errors.

One real bot process (Slack stand-in, test Redis, a Sentry ingest stand-in) driven by signed requests; what the
tests read is what an operator reads: the scrape, the log file line by line, the envelopes that reached Sentry.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.devtools.stubs import SentryIngestStub
from tests.e2e import settle
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    MALLORY,
    PROD_CHANNEL,
    SCRIPTED_LIMITS,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    wait_until,
    write_config,
)

PLANTED_PASSWORD = "Pl4ntedS3cret" + uuid.uuid4().hex[:8]
PLANTED_URL = f"postgresql://app:{PLANTED_PASSWORD}@db.internal:5432/prod"


@pytest.fixture(scope="module")
def seen(tmp_path_factory, redis_url):
    """The bot with LOG_FORMAT=json and SENTRY_DSN pointing at a local ingest stand-in."""
    tmp = tmp_path_factory.mktemp("observability")
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    sentry = SentryIngestStub().start()
    config = base_config()
    config["limits"] = SCRIPTED_LIMITS
    prefix = f"test:obs:{time.time_ns()}:"
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log",
                     extra_env={"LOG_FORMAT": "json", "SENTRY_DSN": sentry.dsn}).start()
    from bot.store.runs import RunStore, connect

    world = {"fake": fake, "bot": bot, "sentry": sentry, "store": RunStore(connect(redis_url), prefix=prefix),
             "sender": SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)}
    yield world
    bot.stop()
    fake.stop()
    sentry.stop()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def scrape(world) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by (sample name, sorted labels)."""
    response = httpx.get(world["bot"].url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def start_run(world) -> tuple[str, str]:
    fake, store = world["fake"], world["store"]
    before = len(fake.channel_messages(PROD_CHANNEL))
    assert world["sender"].slash(ALICE, "prod", channel_id=PROD_CHANNEL).status_code == 200
    wait_until(lambda: len(fake.channel_messages(PROD_CHANNEL)) > before)
    run = wait_until(lambda: store.active_run("prod"))
    return run.id, fake.channel_messages(PROD_CHANNEL)[-1]["ts"]


def click(world, user: str, ts: str, action_id: str):
    """A click on the message as Slack shows it once it renders the run's latest version (tests.e2e.settle)."""
    settle(world, ts)
    message = world["fake"].message(PROD_CHANNEL, ts)
    return world["sender"].click(user, channel_id=PROD_CHANNEL, message=message, action_id=action_id)


def cancel_active(world) -> None:
    """Leave no run holding prod for the next test (the lock is what a new run waits on)."""
    world["store"].redis.delete(world["store"].key("lock", "prod"))


class TestMetrics:
    def test_a_command_and_a_click_show_in_the_series_an_operator_graphs(self, seen):
        world = seen
        before = scrape(world)
        assert value(before, "migrate_bot_state_store_up") == 1
        # Every configured (environment, state) pair exists from the start, so a graph has no gaps.
        assert ("migrate_bot_runs", (("env", "staging"), ("state", "rolled_back"))) in before
        collecting = value(before, "migrate_bot_runs", env="prod", state="collecting")

        run_id, ts = start_run(world)
        after_command = wait_until(lambda: (s := scrape(world)) and value(
            s, "migrate_bot_runs", env="prod", state="collecting") == collecting + 1 and s)
        assert value(after_command, "migrate_bot_ack_seconds_count", kind="command") == \
            value(before, "migrate_bot_ack_seconds_count", kind="command") + 1
        assert value(after_command, "migrate_bot_ack_seconds_bucket", kind="command", le="3.0") == \
            value(before, "migrate_bot_ack_seconds_bucket", kind="command", le="3.0") + 1  # acked within 3 s

        assert click(world, ALICE, ts, "checklist:staging_tested").status_code == 200
        wait_until(lambda: "staging_tested" in world["store"].get(run_id).checklist)
        after_click = scrape(world)
        assert value(after_click, "migrate_bot_ack_seconds_count", kind="action") == \
            value(before, "migrate_bot_ack_seconds_count", kind="action") + 1

        assert wait_until(lambda: value(scrape(world), "migrate_bot_scheduler_running") == 1)
        # The scrape names no person, no run and no credential, however many runs there are.
        text = httpx.get(world["bot"].url + "/metrics", timeout=5).text
        for private in (ALICE, run_id, BOT_TOKEN, SIGNING_SECRET):
            assert private not in text
        cancel_active(world)

    def test_a_step_shows_in_the_step_durations(self, seen):
        world = seen
        store = world["store"]
        run_id, ts = start_run(world)
        for item in ("staging_tested", "rollback_plan", "window_scheduled", "team_notified", "script_reviewed"):
            wait_until(lambda: f"checklist:{item}" in json.dumps(world["fake"].message(PROD_CHANNEL, ts)["blocks"]))
            assert click(world, BOB if item == "script_reviewed" else ALICE, ts, f"checklist:{item}").status_code == 200
            wait_until(lambda: item in store.get(run_id).checklist)
        wait_until(lambda: "step_run:backup" in json.dumps(world["fake"].message(PROD_CHANNEL, ts)["blocks"]))
        before = scrape(world)
        assert click(world, ALICE, ts, "step_run:backup").status_code == 200
        step = wait_until(lambda: (s := store.get(run_id).step("backup")).status.value not in ("pending", "running")
                          and s, timeout=30)
        outcome = {"succeeded": "succeeded", "skipped": "succeeded"}.get(step.status.value, step.status.value)
        after = wait_until(lambda: (s := scrape(world)) and value(
            s, "migrate_bot_step_duration_seconds_count", step="backup", outcome=outcome) == value(
            before, "migrate_bot_step_duration_seconds_count", step="backup", outcome=outcome) + 1 and s)
        assert value(after, "migrate_bot_step_duration_seconds_sum", step="backup", outcome=outcome) >= value(
            before, "migrate_bot_step_duration_seconds_sum", step="backup", outcome=outcome)
        # Its log lines name the run, the environment, the step and who ran it.
        lines = [json.loads(line) for line in world["bot"].logs().splitlines()]
        assert any(e.get("run_id") == run_id and e.get("step") == "backup" and e.get("user") == ALICE
                   and e.get("env") == "prod" for e in lines), [e for e in lines if e.get("run_id") == run_id]
        cancel_active(world)

    def test_slack_errors_and_retries_are_counted_by_method(self, seen):
        world = seen
        fake = world["fake"]
        run_id, ts = start_run(world)
        before = scrape(world)
        # The bot's refusal to an outsider goes out as an ephemeral message, which Slack now refuses; and the
        # run's message update gets a 500 once, which the client retries.
        fake.inject("chat.postEphemeral", status=200, error="not_in_channel")
        assert click(world, MALLORY, ts, "cancel").status_code == 200
        errors = wait_until(lambda: (s := scrape(world)) and value(
            s, "migrate_bot_slack_api_errors_total", method="chat.postEphemeral", error="not_in_channel") == value(
            before, "migrate_bot_slack_api_errors_total", method="chat.postEphemeral", error="not_in_channel") + 1
            and s)
        assert errors
        fake.inject("chat.update", status=500)
        assert click(world, ALICE, ts, "checklist:rollback_plan").status_code == 200
        wait_until(lambda: value(scrape(world), "migrate_bot_slack_api_retries_total", method="chat.update",
                                 reason="server_error")
                   == value(before, "migrate_bot_slack_api_retries_total", method="chat.update",
                            reason="server_error") + 1)
        cancel_active(world)
        assert run_id


class TestJsonLogs:
    def test_every_line_is_json_with_the_run_environment_and_user(self, seen):
        world = seen
        fake = world["fake"]
        run_id, ts = start_run(world)
        fake.inject("chat.postEphemeral", status=200, error="not_in_channel")
        assert click(world, MALLORY, ts, "cancel").status_code == 200

        def refused_line():
            for line in world["bot"].logs().splitlines():
                entry = json.loads(line)
                if entry.get("run_id") == run_id and "chat.postEphemeral failed" in entry["message"]:
                    return entry
            return None

        entry = wait_until(refused_line)
        assert entry["env"] == "prod" and entry["user"] == MALLORY and entry["level"] == "WARNING"
        assert entry["logger"] == "bot.integrations.slack" and entry["ts"].endswith("+00:00")
        lines = world["bot"].logs().splitlines()
        assert lines and all(set(json.loads(line)) >= {"ts", "level", "logger", "message"} for line in lines)
        cancel_active(world)


class TestSentry:
    def test_an_internal_error_reaches_sentry_redacted(self, seen):
        """A run document nobody can read (a bug's trace, say) makes `/migrate status` fail unexpectedly: the
        user reads the apology, Sentry gets the exception, and the database password in it is gone."""
        world = seen
        broken_id = f"prod-261201-{uuid.uuid4().hex[:6]}"
        world["store"].redis.set(world["store"].key("run", broken_id), json.dumps({"id": PLANTED_URL}))
        before = len(world["sentry"].events())
        response = world["sender"].slash(ALICE, f"status {broken_id}", channel_id=PROD_CHANNEL)
        assert response.status_code == 200
        assert "went wrong on the bot's side" in response.text

        events = wait_until(lambda: (found := world["sentry"].events()) and len(found) > before and found)
        event = events[-1]
        exception = event["exception"]["values"][-1]
        assert exception["type"] == "ValidationError"
        assert "postgresql://app:***@db.internal" in exception["value"]  # the secret was there, and was redacted
        for envelope in world["sentry"].envelopes():
            assert PLANTED_PASSWORD not in envelope
            assert SIGNING_SECRET not in envelope and BOT_TOKEN not in envelope
        assert "request" not in event or not {"data", "headers", "cookies"} & set(event["request"])
        assert ALICE not in json.dumps(event.get("user") or {})
        # The log said it too, on one redacted JSON line; the user got one line, not a traceback.
        logged = [json.loads(line) for line in world["bot"].logs().splitlines()]
        failed = [e for e in logged if e["level"] == "ERROR" and e.get("user") == ALICE]
        assert failed and all(PLANTED_PASSWORD not in json.dumps(e) for e in logged)
        assert value(scrape(world), "migrate_bot_internal_errors_total") >= 1


class TestPlacementAndOutages:
    def test_own_port_and_a_redis_outage(self, tmp_path, redis_url):
        """METRICS_PORT moves /metrics off the Slack-facing port; with Redis gone the scrape still answers, says
        the state store is down, and counts the failures the users met."""
        from tests.chaos import ThrowawayRedis
        from tests.harness import free_port

        fake = FakeSlack(token=BOT_TOKEN).start()
        metrics_port = free_port()
        own_redis = ThrowawayRedis(tmp_path / "redis").start()  # the bot starts only once Redis answers
        bot = BotProcess(config_path=write_config(tmp_path / "env.yml", base_config()), slack_api_url=fake.base_url,
                         redis_url=own_redis.url, key_prefix=f"test:obs2:{time.time_ns()}:",
                         log_path=tmp_path / "bot.log", extra_env={"METRICS_PORT": str(metrics_port)})
        try:
            bot.start()
            own_redis.kill()  # then it goes away
            assert httpx.get(bot.url + "/metrics", timeout=5).status_code == 404
            own = f"http://127.0.0.1:{metrics_port}/metrics"

            def samples():
                found = {}
                for family in text_string_to_metric_families(httpx.get(own, timeout=5).text):
                    for sample in family.samples:
                        found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
                return found

            before = samples()
            assert value(before, "migrate_bot_state_store_up") == 0
            assert not any(name == "migrate_bot_runs" for name, _ in before)
            sender = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
            answer = sender.slash(ALICE, "status", channel_id=PROD_CHANNEL)
            assert answer.status_code == 200 and "state store" in answer.text.lower()
            after = samples()
            assert value(after, "migrate_bot_redis_errors_total", kind="connection") > \
                value(before, "migrate_bot_redis_errors_total", kind="connection")
            assert value(after, "migrate_bot_ack_seconds_count", kind="command") == 1
        finally:
            bot.stop()
            fake.stop()
            own_redis.stop()


class TestSettings:
    @pytest.mark.parametrize(("name", "bad"), [("LOG_FORMAT", "xml"), ("METRICS_PORT", "99999"),
                                               ("SENTRY_DSN", "not-a-dsn-Sup3rSecretKey")])
    def test_a_bad_setting_is_one_line_and_exit_2(self, tmp_path, name, bad):
        bot = BotProcess(config_path=write_config(tmp_path / "env.yml", base_config()), slack_api_url="http://x/",
                         redis_url="redis://127.0.0.1:1/0", key_prefix="test:obs3:", log_path=tmp_path / "bot.log")
        done = bot.cli("check-config", env={name: bad})
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("migrate-bot: ") and name in lines[0]
        assert "Sup3rSecretKey" not in done.stderr and "Traceback" not in done.stderr

    def test_a_json_line_stays_json_and_secret_free_whatever_the_message(self):
        import logging

        from bot.observability.logs import JsonFormatter, log_context
        from bot.redact import register_secret

        token = "tok-" + uuid.uuid4().hex
        register_secret(token)
        formatter = JsonFormatter()
        with log_context(run_id="prod-261201-abcdef", env="prod", user="U0BOB"):
            record = logging.LogRecord("bot.test", logging.INFO, __file__, 1,
                                       'a "quoted" %s aws_secret_access_key=AbCd%s', (token, "x" * 30), None)
            line = formatter.format(record)
        entry = json.loads(line)
        assert token not in line and "AbCd" not in line
        assert entry["message"] == 'a "quoted" *** aws_secret_access_key=***'
        assert entry["run_id"] == "prod-261201-abcdef" and entry["env"] == "prod" and entry["user"] == "U0BOB"
        assert entry["level"] == "INFO" and entry["logger"] == "bot.test"
        outside = json.loads(formatter.format(logging.LogRecord("bot.test", logging.INFO, __file__, 1, "x", None,
                                                                None)))
        assert "run_id" not in outside  # the context ends with its block
