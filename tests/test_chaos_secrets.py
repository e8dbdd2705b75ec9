"""R7: planted secrets (database password, AWS keys, Slack tokens, webhook and Sentry tokens) never reach Slack or logs."""

from __future__ import annotations

import json
import secrets
import shutil
import string
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from bot.devtools.demoapp import DemoApp
from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.devtools.stubs import SentryStub
from bot.integrations.prisma.native import NativeRunner
from tests.harness import ALICE, BOB, PROD_CHANNEL, BotProcess, wait_until, write_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "prisma" / "migrations"
ITEMS = ["staging_tested", "rollback_plan", "window_scheduled", "team_notified", "script_reviewed"]


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@pytest.fixture
def planted(tmp_path, pg_admin_url, redis_url, moto_endpoint):
    """A bot whose every credential is a fresh random secret, wired to real parts."""
    values = {
        "db_password": "pw" + _random(string.ascii_letters + string.digits, 24),
        "aws_key": "AKIA" + _random(string.ascii_uppercase + string.digits, 16),
        "aws_secret": _random(string.ascii_letters + string.digits, 40),
        "bot_token": "xoxb-" + _random(string.digits, 12) + "-" + _random(string.ascii_letters, 24),
        "signing_secret": _random(string.hexdigits.lower(), 32),
        "webhook_token": "wh" + _random(string.ascii_letters + string.digits, 30),
        "sentry_token": "sntrys_" + _random(string.ascii_letters + string.digits, 32),
    }
    role, dbname = f"secret_probe_{uuid.uuid4().hex[:6]}", f"sec_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{values['db_password']}'")
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER {role}')
    db_url = f"postgresql://{role}:{values['db_password']}@127.0.0.1:5432/{dbname}"
    migrations = tmp_path / "migrations"
    shutil.copytree(EXAMPLES, migrations)
    first = tmp_path / "first"
    shutil.copytree(EXAMPLES / "20240101000000_init", first / "20240101000000_init")
    NativeRunner(db_url).deploy(first)
    broken = migrations / "20240401000000_broken"
    broken.mkdir()
    (broken / "migration.sql").write_text('CREATE TABLE "Tmp"(id int);\nSELECT 1/0;\n')
    app = DemoApp(database_url=db_url, maintenance_token=values["webhook_token"]).start()
    sentry = SentryStub(token=values["sentry_token"]).start()
    fake = FakeSlack(token=values["bot_token"]).start()
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    env = {
        "channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB], "database_url": db_url,
        "aws": {"region": "us-east-1", "endpoint_url": moto_endpoint},
        "backup": {"method": "pg_dump", "local_dir": str(tmp_path / "backups")},
        "maintenance": {"enabled": True, "method": "webhook",
                        "webhook_url": app.base_url.rstrip("/") + "/admin/maintenance",
                        "webhook_token": values["webhook_token"]},
        "migrate": {"migrations_dir": str(migrations)},
        "safety": {"rehearsal": False},
        "monitoring": {"sentry": {"org": "mcc", "project": "api", "token": values["sentry_token"],
                                  "base_url": sentry.base_url}},
        "check_commands": [["false"]],
    }
    config = write_config(tmp_path / "env.yml", {"environments": {"sec": env}})
    bot = BotProcess(config_path=config, slack_api_url=fake.base_url, redis_url=redis_url,
                     key_prefix=f"test:sec:{time.time_ns()}:", log_path=tmp_path / "bot.log",
                     extra_env={"SLACK_BOT_TOKEN": values["bot_token"], "SLACK_SIGNING_SECRET": values["signing_secret"],
                                "AWS_ACCESS_KEY_ID": values["aws_key"], "AWS_SECRET_ACCESS_KEY": values["aws_secret"]})
    bot.start()
    sender = SlackSender(bot.url + "/slack/events", values["signing_secret"], fake=fake)
    yield {"values": values, "bot": bot, "fake": fake, "sender": sender, "db_url": db_url, "tmp": tmp_path,
           "migrations": migrations}
    bot.stop()
    fake.stop()
    app.stop()
    sentry.stop()
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                (dbname + "%",))]:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f"DROP ROLE IF EXISTS {role}")


class TestSecretsStayOut:
    def test_no_secret_in_slack_logs_or_cli_output(self, planted):
        """After a run with failures, no planted secret appears in anything Slack received, the logs or the CLI."""
        fake, sender, bot = planted["fake"], planted["sender"], planted["bot"]
        outputs: list[str] = []
        outputs.append(sender.slash(ALICE, "sec", channel_id=PROD_CHANNEL).text)
        wait_until(lambda: fake.channel_messages(PROD_CHANNEL))
        ts = fake.channel_messages(PROD_CHANNEL)[-1]["ts"]

        def click(user, action_id):
            sender.click(user, channel_id=PROD_CHANNEL, message=fake.message(PROD_CHANNEL, ts), action_id=action_id)

        def shown(text):
            return text in json.dumps(fake.message(PROD_CHANNEL, ts)["blocks"], ensure_ascii=False)

        wait_until(lambda: shown("Pending migrations"), timeout=30)
        for item in ITEMS:
            wait_until(lambda: shown(f"checklist:{item}"))
            click(BOB if item == "script_reviewed" else ALICE, f"checklist:{item}")
            wait_until(lambda: not shown(f"checklist:{item}"))
        click(ALICE, "step_run:backup")
        wait_until(lambda: shown('"approve"'), timeout=60)
        click(BOB, "approve")
        wait_until(lambda: shown("step_run:maintenance_on"))
        click(ALICE, "step_run:maintenance_on")
        wait_until(lambda: shown("step_run:migrate"), timeout=30)
        click(ALICE, "step_run:migrate")
        wait_until(lambda: shown("Apply Prisma migrations failed"), timeout=60)
        run_id = json.dumps(fake.message(PROD_CHANNEL, ts)["blocks"][-1]).split("run `")[1].split("`")[0]
        for text in ("check sec", "lint sec", f"timeline {run_id}", "status", "frobnicate"):
            outputs.append(sender.slash(ALICE, text, channel_id=PROD_CHANNEL).text)
        wait_until(lambda: [f for f in fake.files if f.name.endswith("-timeline.md")], timeout=20)
        for args in (["status", run_id, "--as", ALICE], ["timeline", run_id, "--as", ALICE],
                     ["migrate", "status", "--dir", str(planted["migrations"]), "--database-url", planted["db_url"]],
                     ["migrate", "deploy", "--dir", "/nonexistent", "--database-url", planted["db_url"]],
                     ["lint", str(planted["migrations"]), "--database-url",
                      planted["db_url"].replace("127.0.0.1:5432", "127.0.0.1:1")]):
            result = bot.cli(*args)
            outputs += [result.stdout, result.stderr]
        fake.wait_idle(quiet_s=1.0, timeout=15)
        recorded = [json.dumps({"method": c.method, "args": c.args, "response": c.response}, default=str)
                    for c in fake.calls]
        recorded += [json.dumps(e, default=str) for e in fake.ephemerals()]
        recorded += [f.content.decode("utf-8", "replace") for f in fake.files]
        haystack = "\n".join(recorded + outputs + [bot.logs()])
        assert "Database error" in haystack or "division by zero" in haystack  # the error paths ran
        assert planted["db_url"].split("//")[1].split(":")[0] in haystack  # URLs were shown, redacted
        assert ":***@" in haystack
        leaked = {name: value for name, value in planted["values"].items() if value in haystack}
        assert leaked == {}, f"secrets found in Slack/logs/CLI output: {sorted(leaked)}"
