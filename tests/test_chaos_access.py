"""Issue 11 holes 5, 6, 10: every listener, verb and CLI command has a permission, and outsiders are refused.

The table is bot.runbook.access. These tests enumerate what the real Bolt app registered and what the real CLI parser
offers, so a new button, form, verb or command without a permission entry fails here; then Mallory (a member of
the workspace, on no list) tries each of them against the running bot over signed HTTP and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from bot.runbook import access
from tests.e2e import blocks_text, start
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    CAROL,
    DAVE,
    MALLORY,
    PROD_CHANNEL,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    wait_until,
    write_config,
)
from tests.test_chaos_authz import forged, refused

# One concrete action_id for each pattern of bot.runbook.access.ACTIONS ({window} is a scheduled window's id).
SAMPLES = {
    r"checklist:.+": "checklist:staging_tested", r"step_run:.+": "step_run:backup",
    r"step_skip:.+": "step_skip:maintenance_on", r"step_done:.+": "step_done:migrate",
    r"rollback:.+": "rollback:previous", r"window_reschedule:.+": "window_reschedule:{window}",
    r"window_cancel:.+": "window_cancel:{window}", r"window_approver:.+": "window_approver:{window}",
}
OS_USER = pwd.getpwuid(os.geteuid()).pw_name


def cli_config(world, tmp: Path, **top) -> dict[str, str]:
    """The world's environments file plus top-level keys (cli_operators), as env for `world['bot'].cli`."""
    config = yaml.safe_load(Path(world["bot"].env["MIGRATE_BOT_CONFIG"]).read_text())
    config.update(top)
    return {"MIGRATE_BOT_CONFIG": str(write_config(tmp / f"cli-{time.time_ns()}.yml", config))}


def schedule_window(world) -> str:
    """A compliant prod maintenance window scheduled by Alice over `/migrate schedule`."""
    from datetime import UTC, datetime

    from bot.calendar.rules import next_allowed_day
    from bot.config import CalendarConfig

    calendar = CalendarConfig()
    from zoneinfo import ZoneInfo

    day = next_allowed_day(datetime.now(UTC), ZoneInfo(calendar.timezone), calendar)
    text = world["sender"].slash(ALICE, f'schedule prod {day} 02:00 1h "release 42"',
                                 channel_id=PROD_CHANNEL).json()["text"]
    match = re.search(r"window `([a-z0-9-]+)`", text)
    assert match, text
    return match.group(1)


class TestPermissionTable:
    def test_every_registered_listener_and_cli_command_has_a_permission(self, redis_url, key_prefix):
        """Introspect the real Bolt app and CLI parser: each listener, click route, verb and command is in the table."""
        import handlers
        from bot.app import build_bolt_app
        from bot.cli.main import build_parser
        from bot.config import BotConfig, Settings
        from bot.context import Deps
        from bot.integrations.slack import Slack, make_client
        from bot.runbook.operations import VERBS
        from bot.store.runs import RunStore, connect
        from handlers.actions import ROUTES

        settings = Settings.from_environ({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET})
        deps = Deps(config=BotConfig.model_validate(base_config()), store=RunStore(connect(redis_url), prefix=key_prefix),
                    slack=Slack(make_client(BOT_TOKEN, "http://127.0.0.1:9/", timeout_s=1)), publisher=None)
        app = build_bolt_app(settings, deps, handlers.register)
        listeners = app._listeners
        assert len(listeners) >= 6
        served: set[tuple[str, str]] = set()
        for listener in listeners:
            tag = getattr(listener.ack_function, "__access__", None)
            assert tag is not None, f"listener {listener.ack_function.__qualname__} has no permission entry"
            kind, keys = tag
            assert keys, listener.ack_function.__qualname__
            for key in keys:
                rule = access.rule_for(kind, key)
                assert rule is not None and rule.permission in access.PERMISSIONS, (kind, key)
                served.add((kind, key))
        # Every click route has its pattern in the table, and every table entry is served by a listener.
        assert {("action", pattern) for pattern, _ in ROUTES} <= served
        assert {("action", pattern.pattern) for pattern, _ in access.ACTIONS} <= served
        assert {("view", key) for key in access.VIEWS} <= served
        # Every /migrate verb the dispatcher knows, and every CLI command (with sub-verbs) the parser offers.
        assert {*VERBS, "status", "cancel", "help", access.ENV_VERB} <= set(access.VERBS)
        def subcommands(parser, prefix=""):
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        yield prefix + name
                        yield from subcommands(sub, prefix + name + " ")

        commands = set(subcommands(build_parser()))
        assert commands and commands <= set(access.CLI), commands - set(access.CLI)
        assert {"status", "cancel", "timeline"} <= commands

    def test_identities(self):
        """A CLI actor counts as its mapped Slack user; a bare `cli:` actor is nobody; its name is escaped in Slack."""
        from bot.messages import actor

        assert access.principal(access.cli_actor("ops", ALICE)) == ALICE
        assert access.principal("cli:root") == "" and access.principal(ALICE) == ALICE
        assert access.cli_identity("ops", {"ops": ALICE}, None) == (ALICE, "")
        assert access.cli_identity("ops", {"ops": ALICE}, BOB)[0] is None
        assert access.cli_identity("eve", {}, None)[0] is None
        assert access.cli_identity("eve", {}, "<!channel>")[0] is None
        shown = actor(access.cli_actor("<!channel>&<@U0BOB>", ALICE))
        assert "<!channel>" not in shown and "<@U0BOB>" not in shown and shown.endswith(f"as <@{ALICE}>")


    def test_config_names_people_by_slack_id(self, tmp_path):
        """`cli_operators` maps OS accounts to Slack user IDs and `viewers` lists IDs; anything else is one line."""
        from bot.config import load_config
        from bot.errors import ConfigError

        good = {**base_config(viewers=[CAROL, "S0SRE"]), "cli_operators": {"deploy": ALICE}}
        config = load_config(write_config(tmp_path / "good.yml", good))
        assert config.cli_operators == {"deploy": ALICE}
        assert access.viewers(config.environments["prod"]) == {ALICE, BOB, "S0DEVS", CAROL, DAVE, "S0DBA", "S0SRE"}
        assert access.viewers(config.environments["staging"]) == {ALICE, BOB, CAROL}
        oncall = load_config(write_config(tmp_path / "oncall.yml", base_config(oncall="S0ONCALL")))
        assert "S0ONCALL" in access.viewers(oncall.environments["prod"])
        for bad, field in (({**base_config(), "cli_operators": {"deploy": "alice"}}, "cli_operators"),
                           (base_config(viewers=["#ops"]), "viewers")):
            with pytest.raises(ConfigError, match=field) as error:
                load_config(write_config(tmp_path / "bad.yml", bad))
            assert "\n" not in str(error.value)


class TestOutsiderEverywhere:
    def test_mallory_is_refused_by_every_listener_and_verb(self, fresh, tmp_path):
        """Each button, form and verb of the table, tried by an outsider: one-line refusal, nothing changed."""
        world = fresh
        store, fake, sender = world["store"], world["fake"], world["sender"]
        run_id, ts = start(world)
        window_id = schedule_window(world)
        from bot.store.windows import WindowStore

        windows = WindowStore(store)
        window_before = windows.get(window_id)
        world["pagerduty"].events.clear()
        # Buttons: run-bound ones with the shared `refused` helper; window buttons audit on the window.
        for pattern, rule in access.ACTIONS:
            action_id = SAMPLES.get(pattern.pattern, pattern.pattern).format(window=window_id)
            assert access.action_rule(action_id) is rule, pattern.pattern
            if not action_id.startswith("window_"):
                refused(world, run_id, MALLORY, action_id, rule.audit)
                continue
            before = len(fake.ephemerals(user=MALLORY))
            message = {"ts": ts, "blocks": [{"type": "actions", "block_id": "w", "elements": [
                {"type": "button", "action_id": action_id, "value": window_id,
                 "text": {"type": "plain_text", "text": "x"}}]}]}
            sender.click(MALLORY, channel_id=PROD_CHANNEL, message=message, action_id=action_id)
            wait_until(lambda: len(fake.ephemerals(user=MALLORY)) > before, timeout=15)  # noqa: B023
            assert fake.ephemerals(user=MALLORY)[-1]["text"].startswith("🚫"), action_id
            assert windows.get(window_id) == window_before, action_id
            last = windows.audit_entries(window_id)[-1]
            assert (last.actor, last.action, last.outcome) == (MALLORY, rule.audit, "denied")
        assert fake.top_modal(MALLORY) is None  # neither the waiver nor the restore form opened
        assert world["pagerduty"].events == []  # Refresh readings paged nobody
        assert not [e for e in store.audit_entries(run_id) if e.actor == MALLORY and e.outcome == "ok"]
        # Forms: each callback refused with a field error, nothing written.
        version = store.get(run_id).version
        forms = {
            "waive_findings": ({"private_metadata": f"{run_id}|{version}"},
                               {"reason": {"r": {"type": "plain_text_input", "value": "we accept this lock risk"}}}),
            "restore_request": ({"private_metadata": f"{run_id}|{version}"},
                                {"env": {"e": {"type": "plain_text_input", "value": "prod"}},
                                 "reason": {"r": {"type": "plain_text_input", "value": "broken after the deploy"}}}),
            "window_schedule": ({"private_metadata": json.dumps({"env": "prod", "channel": PROD_CHANNEL})}, {}),
            "window_reschedule": ({"private_metadata": json.dumps({"window_id": window_id})}, {}),
        }
        assert set(forms) == set(access.VIEWS)
        scheduled = [w.id for w in windows.scheduled()]
        for callback, (view, values) in forms.items():
            response = sender.submit_view(MALLORY, {"type": "modal", "callback_id": callback, **view}, values).json()
            assert response["response_action"] == "errors", callback
            assert "🚫" in json.dumps(response["errors"], ensure_ascii=False), (callback, response)
        assert store.get(run_id).version == version and [w.id for w in windows.scheduled()] == scheduled
        assert windows.get(window_id) == window_before
        # Verbs: every entry of the table but help; reads and changes alike.
        texts = {
            access.ENV_VERB: "prod", "status": f"status {run_id}", "cancel": f"cancel {run_id}",
            "check": "check prod", "lint": "lint prod", "timeline": f"timeline {run_id}",
            "schedule": f"schedule prod {window_before.start:%Y-%m-%d} 02:00 1h \"x\"", "windows": "windows prod",
            "windows cancel": f"windows cancel {window_id}",
            "windows reschedule": f"windows reschedule {window_id} {window_before.start:%Y-%m-%d} 03:00",
        }
        assert set(texts) == set(access.VERBS) - {"help"}
        files = len(fake.files)
        for verb, text in texts.items():
            body = sender.slash(MALLORY, text, channel_id=PROD_CHANNEL).json()
            assert body["text"].startswith("🚫") and "\n" not in body["text"], (verb, body["text"])
        for text in ("status", "windows"):  # without an environment: she may read none
            assert sender.slash(MALLORY, text, channel_id=PROD_CHANNEL).json()["text"].startswith("🚫")
        assert "Usage" in sender.slash(MALLORY, "help", channel_id=PROD_CHANNEL).json()["text"]
        assert store.redis.get(store.key("check", "prod")) is None  # no check ran
        assert store.get(run_id).version == version and store.get(run_id).status.value == "collecting"
        assert windows.get(window_id) == window_before and [w.id for w in windows.scheduled()] == scheduled
        fake.wait_idle(quiet_s=0.5, timeout=10)
        assert len(fake.files) == files  # no timeline was uploaded
        # The CLI: Mallory as --as, and an OS user with no mapping, are refused every run command.
        env = cli_config(world, tmp_path)
        for args in (["status"], ["status", "prod"], ["status", run_id], ["timeline", run_id], ["cancel", run_id]):
            for identity in (["--as", MALLORY], []):
                cli = world["bot"].cli(*args, *identity, env=env)
                lines = [line for line in cli.stderr.splitlines() if line.startswith("migrate-bot:")]
                assert cli.returncode == 1 and cli.stdout == "", (args, identity, cli.stdout)
                assert len(lines) == 1 and "Nothing was changed" in lines[0], (args, identity, cli.stderr)
        assert store.get(run_id).version == version
        # App Home: Mallory's lists nothing of prod; Alice's shows the run and the window.
        for user in (MALLORY, ALICE):
            sender.home_opened(user)
        mallory = json.dumps(wait_until(lambda: fake.home(MALLORY), timeout=15)["blocks"], ensure_ascii=False)
        alice = json.dumps(wait_until(lambda: fake.home(ALICE), timeout=15)["blocks"], ensure_ascii=False)
        assert run_id in alice and window_id in alice
        assert run_id not in mallory and window_id not in mallory and "*prod*" not in mallory
        assert "Traceback" not in world["bot"].logs()

    def test_waive_is_refused_at_click_time_and_only_approvers_see_the_findings(self, fresh):
        """The requester (not an approver) clicking Waive gets a refusal, not the form with the findings."""
        world = fresh
        run_id, ts = start(world)
        refused(world, run_id, ALICE, "waive", "finding.waive")
        assert world["fake"].top_modal(ALICE) is None
        world["sender"].click(CAROL, channel_id=PROD_CHANNEL, message=forged(world, run_id, "waive"),
                              action_id="waive")
        modal = wait_until(lambda: world["fake"].top_modal(CAROL), timeout=15)
        assert modal["callback_id"] == "waive_findings"
        _ = blocks_text


class TestCliIdentity:
    def test_cancel_needs_a_checked_identity(self, fresh, tmp_path):
        """No mapping: refused. --as an outsider: refused. A mapped requester: cancelled, audited as that user."""
        world = fresh
        store = world["store"]
        run_id, _ = start(world)
        version = store.get(run_id).version
        plain = world["bot"].cli("cancel", run_id, "--reason", "slack is down", env=cli_config(world, tmp_path))
        assert plain.returncode == 1 and "no Slack identity" in plain.stderr and "cli_operators" in plain.stderr
        assert len(plain.stderr.strip().splitlines()) == 1
        outsider = world["bot"].cli("cancel", run_id, "--as", MALLORY, env=cli_config(world, tmp_path))
        assert outsider.returncode == 1 and "Only requesters and approvers" in outsider.stderr
        assert store.get(run_id).version == version and store.get(run_id).status.value == "collecting"
        denied = store.audit_entries(run_id)[-1]
        assert (denied.actor, denied.action, denied.outcome) == (f"cli:{OS_USER} as <@{MALLORY}>", "run.cancel",
                                                                 "denied")
        # A mapped operator may not claim to be someone else.
        mapped = cli_config(world, tmp_path, cli_operators={OS_USER: ALICE})
        other = world["bot"].cli("cancel", run_id, "--as", BOB, env=mapped)
        assert other.returncode == 1 and "mapped to" in other.stderr
        assert store.get(run_id).version == version
        done = world["bot"].cli("cancel", run_id, "--reason", "slack is down", env=mapped)
        assert done.returncode == 0, done.stderr
        final = store.get(run_id)
        actor = f"cli:{OS_USER} as <@{ALICE}>"
        assert final.status.value == "cancelled" and final.cancelled_by == actor
        last = store.audit_entries(run_id)[-1]
        assert (last.actor, last.action, last.outcome) == (actor, "run.cancel", "ok")
        shown = world["bot"].cli("status", run_id, env=mapped)
        assert shown.returncode == 0 and run_id in shown.stdout


@pytest.fixture
def sentinel():
    """A TCP port that counts connection attempts (a database URL pointing here shows whether anything connected)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    seen = {"count": 0}
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            seen["count"] += 1
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(5)
    server.close()


class TestCheckIsForMembers:
    def test_outsider_gets_a_refusal_and_members_a_redacted_check(self, tmp_path, redis_url, key_prefix, sentinel):
        """`/migrate check` by Mallory: one line, no Redis write, no database connection, no command run.
        By the requester and by on-call: the check's output, with the password in its arguments and output redacted."""
        from bot.devtools.slack.client import SlackSender
        from bot.devtools.slack.server import FakeSlack
        from bot.store.runs import RunStore, connect

        port, seen = sentinel
        password = "pw-" + os.urandom(8).hex()
        url = f"postgresql://postgres:{password}@127.0.0.1:{port}/app"
        marker = tmp_path / "check-ran"
        (tmp_path / "migrations").mkdir()
        prod = {
            "channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB], "oncall": CAROL,
            "database_url": "${PROD_DATABASE_URL}",
            "backup": {"method": "pg_dump", "local_dir": str(tmp_path / "backups")},
            "migrate": {"migrations_dir": str(tmp_path / "migrations")},
            "check_commands": [["sh", "-c", 'touch "$1"; echo "cannot reach $0" >&2; exit 3',
                                "${PROD_DATABASE_URL}", str(marker)]],
        }
        ops = {"channel": "C0OPS", "requesters": [ALICE], "approvers": [BOB], "viewers": [MALLORY]}
        config = write_config(tmp_path / "env.yml", {"environments": {"prod": prod, "ops": ops}})
        fake = FakeSlack(token=BOT_TOKEN).start()
        bot = BotProcess(config_path=config, slack_api_url=fake.base_url, redis_url=redis_url, key_prefix=key_prefix,
                         log_path=tmp_path / "bot.log", extra_env={"PROD_DATABASE_URL": url})
        try:
            bot.start()
            sender = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
            store = RunStore(connect(redis_url), prefix=key_prefix)

            def checked(user: str, env: str) -> dict:
                """A member's check: acked at once, its result follows through response_url."""
                before = len(fake.ephemerals(user=user))
                ack = sender.slash(user, f"check {env}", channel_id=PROD_CHANNEL).json()
                assert f"Checking {env}" in ack["text"], ack["text"]
                return wait_until(lambda: next((e for e in fake.ephemerals(user=user)[before:]
                                                if "Pre-migration check" in e["text"]), None), timeout=30)

            outsider = sender.slash(MALLORY, "check prod", channel_id=PROD_CHANNEL).json()
            assert outsider["response_type"] == "ephemeral"
            assert outsider["text"].startswith("🚫") and "\n" not in outsider["text"], outsider["text"]
            assert "requesters, approvers and on-call" in outsider["text"]
            assert password not in json.dumps(outsider) and "cannot reach" not in json.dumps(outsider)
            assert store.redis.get(store.key("check", "prod")) is None
            assert not marker.exists() and seen["count"] == 0
            for text in ("lint prod", "status prod", "windows prod"):
                body = sender.slash(MALLORY, text, channel_id=PROD_CHANNEL).json()
                assert body["text"].startswith("🚫"), (text, body["text"])
            assert seen["count"] == 0
            # `viewers:` widens reading per environment: Mallory may check `ops`, and still not prod.
            assert "Pre-migration check for ops" in checked(MALLORY, "ops")["text"]
            for user in (ALICE, CAROL):
                body = checked(user, "prod")
                shown = json.dumps(body, ensure_ascii=False)
                assert "Pre-migration check for prod" in body["text"] and "cannot reach" in body["text"], body["text"]
                assert password not in shown and "***" in shown
                stored = store.redis.get(store.key("check", "prod"))
                assert stored and password not in stored
            assert marker.exists() and seen["count"] >= 1  # the members' checks did run, and connect
            # `/migrate status` without an environment lists only the environments the user may read.
            for env in ("prod", "ops"):
                assert "Started run" in sender.slash(ALICE, env, channel_id=PROD_CHANNEL).json()["text"]
            prod_run, ops_run = store.active_run("prod").id, store.active_run("ops").id
            alice = sender.slash(ALICE, "status", channel_id=PROD_CHANNEL).json()["text"]
            mallory = sender.slash(MALLORY, "status", channel_id=PROD_CHANNEL).json()["text"]
            assert prod_run in alice and ops_run in alice
            assert ops_run in mallory and prod_run not in mallory and "[prod]" not in mallory
            assert password not in bot.logs() and "Traceback" not in bot.logs()
        finally:
            bot.stop()
            fake.stop()
