"""R5: Hypothesis fuzzing of `/migrate` texts, interaction payloads, signatures and environment files.

Everything goes over real HTTP to one long-lived bot process: 0 tracebacks reach a user (responses, ephemerals,
the bot's log), 0 HTTP 5xx, and forged or stale signatures get 401 every time. CI runs ~250 examples in all;
MIGRATE_BOT_FULL=1 runs ≥ 10,000.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import load_config
from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.errors import ConfigError
from tests.chaos import size
from tests.harness import (
    ALICE,
    BOT_TOKEN,
    MALLORY,
    PROD_CHANNEL,
    SCRIPTED_LIMITS,
    SIGNING_SECRET,
    BotProcess,
    base_config,
    write_config,
)

FUZZ = settings(max_examples=size(60, 2600), deadline=None, derandomize=False,
                suppress_health_check=list(HealthCheck))
USERS = st.sampled_from([ALICE, MALLORY, "", "U" + "X" * 300, "cli:root"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True)
    | st.text(max_size=60),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)
ACTION_IDS = st.sampled_from(["approve", "cancel", "finish", "waive", "step_run:backup", "step_run:migrate",
                              "step_run:nope", "step_skip:migrate", "step_done:deploy", "checklist:staging_tested",
                              "checklist:x", "rollback:previous", "rollback:restore", "rollback:zzz",
                              "rollback_confirm", "rollback_withdraw", "monitor_refresh", "proceed_anyway",
                              "unknown_action", ""]) | st.text(max_size=40)


@pytest.fixture(scope="module")
def target(tmp_path_factory, redis_url):
    tmp = tmp_path_factory.mktemp("fuzz")
    fake = FakeSlack(token=BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    (tmp / "none").mkdir()
    prefix = f"test:fuzz:{time.time_ns()}:"
    config = {**base_config(migrate={"migrations_dir": str(tmp / "none")}), "limits": SCRIPTED_LIMITS}
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config),
                     slack_api_url=fake.base_url, redis_url=redis_url, key_prefix=prefix,
                     log_path=tmp / "bot.log").start()
    sender = SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)
    yield {"bot": bot, "fake": fake, "sender": sender, "tmp": tmp}
    bot.stop()
    fake.stop()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    # Whatever the fuzzers sent, no user and no log line ever saw a traceback.
    assert "Traceback" not in bot.logs()
    for message in fake.ephemerals():
        assert "Traceback" not in json.dumps(message)


def no_traceback(response):
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text


class TestFuzzSlack:
    @FUZZ
    @given(user=USERS, text=st.text(max_size=300) | st.sampled_from(
        ["prod", "status", "status prod", "cancel", "cancel nope-1", "prod --image", "prod --image ''", "'", '"',
         "check prod", "lint prod", "timeline x", "schedule prod 2099-13-40 25:61 -1h", "windows ✨", "help"]))
    def test_slash_texts(self, target, user, text):
        """Any `/migrate` text from anyone is answered (never 5xx) without a traceback."""
        no_traceback(target["sender"].slash(user, text, channel_id=PROD_CHANNEL))

    @FUZZ
    @given(action_id=ACTION_IDS, value=st.text(max_size=80) | st.just("prod-000000-abcdef|1"), user=USERS,
           extra=st.dictionaries(st.sampled_from(["user", "actions", "channel", "container", "view", "type",
                                                  "trigger_id", "message", "team"]), JSON, max_size=3))
    def test_interaction_payloads(self, target, action_id, value, user, extra):
        """Block actions with unknown ids, odd values and missing or mistyped fields never give a 5xx."""
        payload = {"type": "block_actions", "user": {"id": user}, "channel": {"id": PROD_CHANNEL},
                   "trigger_id": "1.2.3", "actions": [{"action_id": action_id, "value": value, "type": "button"}]}
        payload.update(extra)
        no_traceback(target["sender"]._post_payload(payload))

    @FUZZ
    @given(payload=JSON, kind=st.sampled_from(["block_actions", "view_submission", "view_closed", "shortcut",
                                                "message_action", "block_suggestion", None]))
    def test_arbitrary_payloads(self, target, payload, kind):
        """Any JSON at all as the interaction payload (huge numbers, wrong types) never gives a 5xx."""
        body = {"type": kind, "payload": payload} if kind else payload
        no_traceback(target["sender"]._post_payload(body if isinstance(body, dict) else {"x": body}))
        no_traceback(target["sender"].post_raw("payload=" + json.dumps(payload)[:5000],
                                               "application/x-www-form-urlencoded"))

    @FUZZ
    @given(text=st.text(max_size=50), forged=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
           age=st.integers(min_value=301, max_value=10**9), mode=st.sampled_from(["forged", "stale", "garbage"]))
    def test_bad_signatures_are_401(self, target, text, forged, age, mode):
        """A forged signature, a stale timestamp or a garbage header is 401, every time."""
        sender = target["sender"]
        if mode == "forged":
            response = sender.slash(ALICE, text, channel_id=PROD_CHANNEL, signature="v0=" + forged)
        elif mode == "stale":
            response = sender.slash(ALICE, text, channel_id=PROD_CHANNEL, timestamp=int(time.time()) - age)
        else:
            # Printable garbage; HTTP itself cannot carry a header value with outer spaces, so none is sent.
            garbage = "".join(c for c in text if 32 <= ord(c) < 127)[:20].strip()
            response = sender.post_raw("payload=" + text, "application/x-www-form-urlencoded",
                                       signature=garbage or "x")
        assert response.status_code == 401


def _yaml(value):
    return yaml.safe_dump(value, allow_unicode=True)


class TestFuzzConfig:
    @settings(max_examples=size(60, 2600), deadline=None, suppress_health_check=list(HealthCheck))
    @given(doc=st.one_of(
        JSON.map(_yaml),
        st.text(max_size=300),
        st.builds(lambda env: _yaml({"environments": {"prod": env}}),
                  st.dictionaries(st.sampled_from(["channel", "requesters", "approvers", "approvals_required",
                                                   "database_url", "backup", "migrate", "deploy", "smoke",
                                                   "maintenance", "aws", "lock_hours", "rollback", "safety"]),
                                  JSON, max_size=6))))
    def test_load_config_raises_only_config_error(self, tmp_path_factory, doc):
        """Any environments file either loads or raises ConfigError, never anything else."""
        path = tmp_path_factory.mktemp("cfg") / "env.yml"
        path.write_text(doc)
        try:
            load_config(path)
        except ConfigError as exc:
            assert "Traceback" not in str(exc)

    @pytest.mark.parametrize("doc", ["environments: [1, 2", "environments:\n  prod:\n    approvals_required: -3\n"])
    def test_check_config_exits_2(self, target, tmp_path, doc):
        """`migrate-bot check-config` on a broken file prints one line and exits 2, no traceback."""
        path = tmp_path / "bad.yml"
        path.write_text(doc)
        result = target["bot"].cli("check-config", env={"MIGRATE_BOT_CONFIG": str(path)})
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
