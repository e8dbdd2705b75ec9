"""The spine over real HTTP: signed Slack requests -> the bot process -> Redis -> one live message in the stand-in."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import psycopg
import pytest
import redis

from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    CAROL,
    DAVE,
    MALLORY,
    PROD_CHANNEL,
    SCRIPTED_LIMITS,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    wait_until,
    write_config,
)

MANUAL_ITEMS = ["staging_tested", "rollback_plan", "window_scheduled", "team_notified", "script_reviewed"]


@pytest.fixture(scope="module")
def fake() -> FakeSlack:
    slack = FakeSlack(token=BOT_TOKEN).start()
    for user, name in [(ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (DAVE, "dave"), (MALLORY, "mallory")]:
        slack.add_user(user, name)
    slack.add_usergroup("S0DBA", "dba", [DAVE])
    slack.add_usergroup("S0DEVS", "devs", [])
    yield slack
    slack.stop()


@pytest.fixture(scope="module")
def app_db(tmp_path_factory, pg_admin_url):
    """A small application database for the backup step."""
    import uuid

    name = f"spine_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_admin_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('CREATE TABLE "User" (id serial primary key, email text)')
        conn.execute("INSERT INTO \"User\"(email) VALUES ('a@example.com')")
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def bot(tmp_path_factory, fake, redis_url, app_db):
    tmp = tmp_path_factory.mktemp("spine")
    config = base_config(database_url=app_db, backup={"method": "pg_dump", "local_dir": str(tmp / "backups"),
                                                      "verify_restore": False},
                         migrate={"migrations_dir": str(tmp / "no-migrations")})
    config["limits"] = SCRIPTED_LIMITS
    (tmp / "no-migrations").mkdir()
    prefix = f"test:spine:{time.time_ns()}:"
    process = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                         redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log").start()
    process.prefix = prefix  # type: ignore[attr-defined]
    yield process
    process.stop()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


@pytest.fixture
def sender(bot, fake) -> SlackSender:
    return SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)


@pytest.fixture
def store(bot, redis_url):
    from bot.store.runs import RunStore, connect

    return RunStore(connect(redis_url), prefix=bot.prefix)


def cancel_active(store, env="prod"):
    active = store.active_run(env)
    if active:
        from bot.config import BotConfig
        from bot.context import Deps
        from bot.runbook.operations import cancel_run

        deps = Deps(config=BotConfig.model_validate(base_config()), store=store, slack=None, publisher=None)
        cancel_run(deps, run_id=active.id, user=f"cli:test as <@{BOB}>")


def start_run(sender, fake, store, user=ALICE):
    cancel_active(store)
    before = len(fake.channel_messages(PROD_CHANNEL))
    response = sender.slash(user, "prod", channel_id=PROD_CHANNEL)
    assert response.status_code == 200
    wait_until(lambda: len(fake.channel_messages(PROD_CHANNEL)) > before)
    message = fake.channel_messages(PROD_CHANNEL)[-1]
    run = store.active_run("prod")
    assert run is not None
    # The run-start inspection adds its own audit entry; let it land before counting clicks.
    wait_until(lambda: store.get(run.id).facts.review is not None, timeout=20)
    return store.get(run.id), fake.message(PROD_CHANNEL, message["ts"])


def latest(fake, ts):
    return fake.message(PROD_CHANNEL, ts)


def tick_manual_items(sender, fake, store, run, ts, user=ALICE):
    for item in MANUAL_ITEMS:
        version = store.get(run.id).version
        who = (BOB if user == ALICE else ALICE) if item == "script_reviewed" else user  # a review is someone else's
        sender.click(who, channel_id=PROD_CHANNEL, message=latest(fake, ts), action_id=f"checklist:{item}")
        wait_until(lambda: store.get(run.id).version > version and
                   f"checklist:{item}" not in json.dumps(latest(fake, ts)["blocks"]))


def take_backup(sender, fake, store, run, ts, user=ALICE):
    sender.click(user, channel_id=PROD_CHANNEL, message=latest(fake, ts), action_id="step_run:backup")
    try:
        wait_until(lambda: "backup_verified" in store.get(run.id).checklist, timeout=60)
    except AssertionError:
        raise AssertionError(f"backup did not finish: {store.get(run.id).step('backup')!r} "
                             f"ephemerals={fake.ephemerals(user=user)[-3:]}") from None
    wait_until(lambda: "Database backup completed and verified —" in json.dumps(latest(fake, ts)["blocks"],
                                                                             ensure_ascii=False))
    wait_until(lambda: store.get(run.id).facts.rehearsal is not None, timeout=60)  # the rehearsal gates approval
    # Buttons carry the run version: click only once the message shows the version the rehearsal left.
    wait_until(lambda: f" v{store.get(run.id).version} " in json.dumps(latest(fake, ts)["blocks"][-1]))


class TestSlashCommand:
    def test_starts_a_run_with_one_message(self, sender, fake, store):
        """A signed `/migrate prod` gets 200, one chat.postMessage with six checklist buttons, and a run in Redis."""
        posts = len(fake.calls_to("chat.postMessage"))
        run, message = start_run(sender, fake, store)
        top_level_posts = [c for c in fake.calls_to("chat.postMessage")[posts:] if not c.args.get("thread_ts")]
        assert len(top_level_posts) == 1
        ids = [b.action_id for b in sender.buttons(message)]
        assert [i for i in ids if i.startswith("checklist:")] == [f"checklist:{i}" for i in MANUAL_ITEMS]
        assert "step_run:backup" in ids
        assert len([i for i in ids if i.startswith(("checklist:", "step_run:backup"))]) == 6
        assert run.requested_by == ALICE and run.message_ts == message["ts"]

    def test_unknown_environment_suggests(self, sender, store):
        """A typo in the environment gets an ephemeral 'did you mean' and starts nothing."""
        before = len(store.recent_runs(100))
        response = sender.slash(ALICE, "prd", channel_id=PROD_CHANNEL)
        assert response.status_code == 200
        body = response.json()
        assert body["response_type"] == "ephemeral"
        assert "Unknown environment `prd`. Did you mean `prod`? Known: prod, staging" in body["text"]
        assert len(store.recent_runs(100)) == before

    def test_unknown_form_gets_usage(self, sender):
        """A malformed command gets the usage text."""
        body = sender.slash(ALICE, "frobnicate the db", channel_id=PROD_CHANNEL).json()
        assert "Usage" in body["text"]

    def test_outsider_cannot_start(self, sender, store):
        """Someone not on the requester list is refused and nothing starts."""
        cancel_active(store)
        body = sender.slash(MALLORY, "prod", channel_id=PROD_CHANNEL).json()
        assert "not on the requester list" in body["text"]
        assert store.active_run("prod") is None

    def test_second_run_is_refused_with_details(self, sender, fake, store):
        """Starting a second prod run while one is active names the active run, its owner and age."""
        run, _ = start_run(sender, fake, store)
        body = sender.slash(BOB, "prod", channel_id=PROD_CHANNEL).json()
        assert "already active in prod" in body["text"]
        assert run.id in body["text"] and f"<@{ALICE}>" in body["text"] and "min ago" in body["text"]
        assert store.active_run("prod").id == run.id


class TestSignatures:
    def test_forged_signature_is_401(self, bot, sender, store):
        """A bad signature gets 401 and writes nothing to Redis."""
        before = store.redis.dbsize()
        response = sender.slash(ALICE, "prod", channel_id=PROD_CHANNEL, signature="v0=" + "0" * 64)
        assert response.status_code == 401
        assert store.redis.dbsize() == before

    def test_old_timestamp_is_401(self, bot, sender, store):
        """A correctly signed request older than 5 minutes gets 401 and writes nothing."""
        before = store.redis.dbsize()
        response = sender.slash(ALICE, "prod", channel_id=PROD_CHANNEL, timestamp=int(time.time()) - 301)
        assert response.status_code == 401
        assert store.redis.dbsize() == before


class TestChecklistAndApproval:
    def test_each_click_updates_in_place_and_audits(self, sender, fake, store):
        """Every checklist click gives a chat.update on the same ts and exactly one more audit entry."""
        run, message = start_run(sender, fake, store)
        ts = message["ts"]
        for item in MANUAL_ITEMS:
            audit_before = len(store.audit_entries(run.id))
            updates_before = [c for c in fake.calls_to("chat.update") if c.args.get("ts") == ts]
            sender.click(BOB if item == "script_reviewed" else ALICE, channel_id=PROD_CHANNEL, message=latest(fake, ts),
                         action_id=f"checklist:{item}")
            wait_until(lambda: len([c for c in fake.calls_to("chat.update") if c.args.get("ts") == ts])
                       > len(updates_before))
            assert len(store.audit_entries(run.id)) == audit_before + 1
        text = json.dumps(latest(fake, ts)["blocks"], ensure_ascii=False)
        assert "✅ All migrations tested in staging environment — <@U0ALICE>" in text
        assert len(fake.channel_messages(PROD_CHANNEL)) >= 1
        assert [m["ts"] for m in fake.channel_messages(PROD_CHANNEL)].count(ts) == 1

    def test_requester_cannot_approve_then_second_person_does(self, sender, fake, store):
        """The requester's Approve gets an ephemeral denial and changes nothing; an approver's succeeds."""
        run, message = start_run(sender, fake, store)
        ts = message["ts"]
        tick_manual_items(sender, fake, store, run, ts)
        take_backup(sender, fake, store, run, ts)
        before = store.get(run.id)
        assert before.status.value == "awaiting_approval"
        sender.click(ALICE, channel_id=PROD_CHANNEL, message=latest(fake, ts), action_id="approve")
        wait_until(lambda: any("cannot approve" in (e.get("text") or "") for e in fake.ephemerals(user=ALICE)))
        after = store.get(run.id)
        assert after.version == before.version and after.approvals == []
        assert store.audit_entries(run.id)[-1].outcome == "denied"
        sender.click(BOB, channel_id=PROD_CHANNEL, message=latest(fake, ts), action_id="approve")
        wait_until(lambda: store.get(run.id).status.value == "running")
        wait_until(lambda: f"Approved by <@{BOB}>" in json.dumps(latest(fake, ts)["blocks"]))
        assert '"approve"' not in json.dumps(latest(fake, ts)["blocks"])

    def test_group_member_may_approve(self, sender, fake, store):
        """A member of an approver user group (resolved through usergroups.users.list) may approve."""
        run, message = start_run(sender, fake, store)
        ts = message["ts"]
        tick_manual_items(sender, fake, store, run, ts)
        take_backup(sender, fake, store, run, ts)
        sender.click(DAVE, channel_id=PROD_CHANNEL, message=latest(fake, ts), action_id="approve")
        wait_until(lambda: store.get(run.id).status.value == "running")

    def test_fifty_concurrent_approvals_count_once(self, sender, fake, store, bot):
        """50 concurrent Approve clicks from allowed users record exactly one approval and one audit entry."""
        run, message = start_run(sender, fake, store)
        ts = message["ts"]
        tick_manual_items(sender, fake, store, run, ts)
        take_backup(sender, fake, store, run, ts)
        snapshot = latest(fake, ts)
        approvers = [BOB, CAROL, DAVE] * 17
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(lambda user: sender.click(user, channel_id=PROD_CHANNEL, message=snapshot,
                                                            action_id="approve").status_code, approvers[:50]))
        assert codes == [200] * 50
        wait_until(lambda: store.get(run.id).status.value == "running")
        time.sleep(1.0)
        final = store.get(run.id)
        assert len(final.approvals) == 1
        approvals = [e for e in store.audit_entries(run.id) if e.action == "run.approve" and e.outcome == "ok"]
        assert len(approvals) == 1

    def test_stale_click_changes_nothing(self, sender, fake, store):
        """A click on an outdated message version is told so and changes nothing."""
        run, message = start_run(sender, fake, store)
        ts = message["ts"]
        tick_manual_items(sender, fake, store, run, ts)
        take_backup(sender, fake, store, run, ts)
        old = latest(fake, ts)
        sender.click(ALICE, channel_id=PROD_CHANNEL, message=old, action_id="cancel")
        wait_until(lambda: store.get(run.id).status.value == "cancelled")
        version = store.get(run.id).version
        sender.click(BOB, channel_id=PROD_CHANNEL, message=old, action_id="approve")
        wait_until(lambda: any("out of date" in (e.get("text") or "") for e in fake.ephemerals(user=BOB)))
        assert store.get(run.id).version == version


class TestRestartAndCli:
    def test_status_survives_restart(self, tmp_path, fake, redis_url, sender, store, bot):
        """After a new bot process starts, `/migrate status` shows the run unchanged."""
        run, message = start_run(sender, fake, store)
        sender.click(ALICE, channel_id=PROD_CHANNEL, message=message, action_id="checklist:staging_tested")
        wait_until(lambda: "staging_tested" in store.get(run.id).checklist)
        before = store.get(run.id)
        bot.stop()
        bot.start()
        body = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake).slash(
            ALICE, f"status {run.id}", channel_id=PROD_CHANNEL).json()
        assert run.id in body["text"] and "Collecting the checklist" in body["text"] and "1/6 checklist" in body["text"]
        assert f"requested by <@{ALICE}>" in body["text"]
        assert store.get(run.id) == before

    def test_cli_status_and_cancel(self, bot, fake, sender, store):
        """`migrate-bot status` and `cancel` work on the same Redis state and audit the operator as cli:<user>."""
        run, message = start_run(sender, fake, store)
        shown = bot.cli("status", "prod", "--as", ALICE)
        assert shown.returncode == 0 and run.id in shown.stdout
        cancelled = bot.cli("cancel", run.id, "--reason", "slack is down", "--as", ALICE)
        assert cancelled.returncode == 0, cancelled.stderr
        final = store.get(run.id)
        assert final.status.value == "cancelled" and final.cancelled_by.startswith("cli:")
        assert store.audit_entries(run.id)[-1].actor.startswith("cli:")
        assert store.active_run("prod") is None


class TestRedisDown:
    def test_clear_error_and_503(self, tmp_path, fake):
        """With Redis stopped, /migrate says nothing was changed (HTTP 200), no traceback, /healthz is 503."""
        import subprocess

        from tests.harness import free_port

        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                   "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: redis.Redis(port=port).ping() if _up(port) else False)
            config = write_config(tmp_path / "env.yml", base_config())
            bot = BotProcess(config_path=config, slack_api_url=fake.base_url, redis_url=f"redis://127.0.0.1:{port}/0",
                             key_prefix="t:", log_path=tmp_path / "bot.log").start()
            try:
                assert httpx.get(bot.url + "/healthz").status_code == 200
                server.kill()
                server.wait(5)
                send = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
                response = send.slash(ALICE, "prod", channel_id=PROD_CHANNEL)
                assert response.status_code == 200
                assert "state store (Redis) is unavailable — nothing was changed" in response.json()["text"]
                assert httpx.get(bot.url + "/healthz").status_code == 503
                time.sleep(0.5)
                assert "Traceback" not in bot.logs()
            finally:
                bot.stop()
        finally:
            if server.poll() is None:
                server.kill()


def _up(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False
