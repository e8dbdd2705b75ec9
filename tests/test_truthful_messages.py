"""Messages that tell the truth: what Slack shows about readings, runs, locks, progress, long reviews and errors."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import BotConfig
from bot.context import Deps
from bot.devtools.slack.server import FakeSlack
from bot.edge import user_text
from bot.integrations.postgres import describe_database
from bot.integrations.prisma.native import NativeRunner
from bot.integrations.slack import Slack, SlackUnavailable, make_client
from bot.messages import BACKTICK_LOOKALIKE, FENCE, code_block, split_message, statements
from bot.redact import redact, register_secret
from bot.runbook.engine import StepContext
from bot.runbook.operations import describe_run, start_run, status
from bot.runbook.publisher import Publisher
from bot.runbook.rules import RunStatus, StepState, StepStatus, Transition
from bot.runbook.watch import monitor_run, watch_tick
from bot.safety import review_migrations
from bot.store.runs import RunStore, connect
from bot.store.watch import WatchStore
from tests.e2e import ready_for_approval, start
from tests.harness import ALICE, BOT_TOKEN, PROD_CHANNEL, base_config, wait_until

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "prisma" / "migrations"


# ---- pure: the sentence helpers ---------------------------------------------------------------------------

class TestCodeBlocks:
    def test_backticks_mentions_and_fences_inside_stay_inside_the_block(self):
        """Output with ```, inline `code` and <!channel> is one code block: two fences, nothing live inside."""
        shown = code_block("psql: ```oops``` near `name` <!channel> & <@U0BOB>\n")
        assert shown.startswith(FENCE) and shown.endswith(FENCE) and shown.count("`") == 2 * len(FENCE)
        assert f"{BACKTICK_LOOKALIKE * 3}oops" in shown and f"{BACKTICK_LOOKALIKE}name{BACKTICK_LOOKALIKE}" in shown
        assert "&lt;!channel&gt; &amp; &lt;@U0BOB&gt;" in shown

    def test_a_long_code_block_is_split_with_each_message_a_whole_block(self):
        """A code block over several messages is closed at the end of each one and reopened in the next."""
        lines = [f"line {i:04d} " + "x" * 70 for i in range(300)]
        pieces = split_message("*Apply Prisma migrations* output:\n" + code_block("\n".join(lines)))
        assert len(pieces) > 3 and all(len(p) <= 3900 for p in pieces)
        assert all(p.count(FENCE) == 2 for p in pieces), [p.count(FENCE) for p in pieces]
        shown = "\n".join(p.replace(FENCE, "") for p in pieces).split("\n")
        assert [line for line in shown if line.startswith("line ")] == lines

    def test_paragraphs_stay_whole_and_an_oversized_one_is_split_between_words(self):
        """Each finding stays in one message; a single huge line is split, never dropped."""
        paragraphs = [f"finding {i}\n    why: " + "because " * 40 for i in range(40)] + ["word " * 2000]
        pieces = split_message(paragraphs)
        assert all(len(p) <= 3900 for p in pieces)
        for i in range(40):
            assert sum(f"finding {i}\n" in p for p in pieces) == 1
        assert "".join(pieces).count("word") == 2000


class TestStatementRanges:
    def test_ranges_read_as_people_count(self):
        assert statements(1) == "statement 2" and statements(2, 2) == "statement 3"
        assert statements(2, 4) == "statements 3–5"

    def test_the_review_names_statements_not_index_ranges(self):
        """A lock held over a file reads "statements 1–2", and the lock-held finding counts from 1."""
        review = review_migrations([("m1", 'CREATE TABLE "T" ("id" int, "a" text);\n'),
                                    ("m2", 'ALTER TABLE "T" RENAME COLUMN "a" TO "b";\n'
                                           'ALTER TABLE "T" ALTER COLUMN "b" TYPE varchar(20);\n'
                                           'CREATE INDEX "T_b" ON "T" ("b");\n')])
        line = review.migrations[1].summary_line
        assert 'ACCESS EXCLUSIVE on "T" (statements 1–3)' in line and "[" not in line, line
        held = [f for f in review.findings if f.rule == "lock-held"]
        assert held and "(taken at statement 1)" in held[0].why and "until statement 3 (" in held[0].why


class TestSlackErrors:
    def test_an_expired_trigger_reads_as_a_sentence(self):
        """Slack's expired_trigger_id becomes "That form took too long to open — click again.", never the code."""
        fake = FakeSlack(token=BOT_TOKEN, trigger_ttl_s=0.0).start()
        try:
            slack = Slack(make_client(BOT_TOKEN, fake.base_url))
            trigger = fake.issue_trigger_id(ALICE)
            with pytest.raises(SlackUnavailable) as raised:
                slack.open_view(trigger, {"type": "modal", "title": {"type": "plain_text", "text": "x"},
                                          "blocks": []})
            assert raised.value.error == "expired_trigger_id"
            assert user_text(raised.value, doing="click") == "That form took too long to open — click again."
            with pytest.raises(SlackUnavailable) as unknown:
                slack.open_view("not-a-trigger", {"type": "modal", "blocks": [],
                                                  "title": {"type": "plain_text", "text": "x"}})
            assert "invalid_trigger_id" not in str(unknown.value) and "click again" in str(unknown.value)
        finally:
            fake.stop()


class TestProgress:
    def test_a_database_is_described_without_its_url(self):
        """The backup's progress names the database and server; with the URL a registered secret, nothing is
        redacted away (no stars), and neither user nor password shows."""
        password = "pw" + secrets.token_hex(8)
        url = f"postgresql://app_user:{password}@db.internal:6432/app_prod?schema=public"
        register_secret(url)
        register_secret(password)
        text = f"Reading the live state of the {describe_database(url)}"
        assert text == "Reading the live state of the database app_prod on db.internal:6432"
        assert redact(text) == text and "*" not in text


# ---- against Redis and the Slack stand-in ------------------------------------------------------------------

@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack(token=BOT_TOKEN).start()
    slack.add_user(ALICE, "alice")
    yield slack
    slack.stop()


@pytest.fixture
def deps(fake: FakeSlack, redis_url: str, key_prefix: str, scratch_db: str) -> Deps:
    """A prod environment whose database is migrated, with no AWS and no Sentry configured."""
    NativeRunner(scratch_db).deploy(EXAMPLES)
    store = RunStore(connect(redis_url), prefix=key_prefix)
    slack = Slack(make_client(BOT_TOKEN, fake.base_url))
    return Deps(config=BotConfig.model_validate(base_config(database_url=scratch_db)), store=store, slack=slack,
                publisher=Publisher(store, slack))


def _started(deps: Deps) -> str:
    run_id = start_run(deps, env_name="prod", user=ALICE).publish_run
    assert run_id
    deps.publish(run_id)
    return run_id


def _monitoring(deps: Deps, run_id: str) -> None:
    """Put the run where the monitoring step takes its readings (the way there is tested end to end elsewhere)."""
    deps.store.apply(run_id, lambda run: Transition(
        run.model_copy(update={"status": RunStatus.MONITORING, "version": run.version + 1}), []))


def _shown(fake: FakeSlack, deps: Deps, run_id: str) -> tuple[str, str]:
    """(the status message's blocks, its thread) as Slack shows them."""
    ts = deps.store.get(run_id).message_ts or ""
    message = fake.message(PROD_CHANNEL, ts) or {}
    thread = "\n".join(m.get("text", "") for m in fake.thread(PROD_CHANNEL, ts))
    return json.dumps(message.get("blocks"), ensure_ascii=False), thread


class TestMonitoringSaysWhatItMeasured:
    def test_two_of_six_readings_is_not_all_within_thresholds(self, fake: FakeSlack, deps: Deps) -> None:
        """With only PostgreSQL to read, the message and the audit line say 2 of 6 and name the missing four."""
        run_id = _started(deps)
        _monitoring(deps, run_id)
        monitor_run(deps, run_id)
        blocks, thread = _shown(fake, deps, run_id)
        verdict = ("2 of 6 readings available; none over threshold (not available: Error rate, Response time p95, "
                   "CPU, Memory)")
        assert verdict in blocks and verdict in thread
        assert "all within" not in blocks + thread and "within thresholds" not in blocks + thread
        assert "not available: AWS is not configured" in blocks

    def test_an_alert_whose_reading_is_missing_is_not_cleared(self, fake: FakeSlack, deps: Deps) -> None:
        """An error-rate alert stays raised when the error rate cannot be read: unknown is not "back within"."""
        run_id = _started(deps)
        watches = WatchStore(deps.store)
        now = datetime.now(UTC)
        watches.start(run_id, {"started_at": now.isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
                               "interval_s": 60}, ttl_s=3600)
        assert watches.raise_alert(run_id, "error_rate")
        watch_tick(deps, run_id)
        assert watches.active_alerts(run_id) == {"error_rate"}
        _, thread = _shown(fake, deps, run_id)
        assert "back within" not in thread
        assert not [e for e in deps.store.audit_entries(run_id) if e.action == "watch.clear"]


class TestStatusNamesPeopleAndSteps:
    def test_people_are_mentions_steps_are_labels_states_are_words(self, deps: Deps) -> None:
        """`/migrate status` shows <@U…> and "Restore the database…" where it showed U… and rb_restore_db."""
        run_id = _started(deps)
        restore = StepState(name="rb_restore_db", phase="rollback", status=StepStatus.SUCCEEDED)

        def rolled_back(run):  # the recorded end of an Option 2 restore
            steps = [*run.steps, restore]
            return Transition(run.model_copy(update={"status": RunStatus.ROLLED_BACK, "steps": steps,
                                                     "version": run.version + 1}), [])

        deps.store.apply(run_id, rolled_back)
        run = deps.store.get(run_id)
        slack_text = describe_run(run, datetime.now(UTC))
        assert f"requested by <@{ALICE}>" in slack_text and "⚪ Rolled back" in slack_text
        assert f"{restore.label} (done)" in slack_text and "rb_restore_db" not in slack_text
        assert "rolled_back" not in slack_text
        terminal = status(deps, run_id, for_slack=False)
        assert f"requested by {ALICE} " in terminal and "<@" not in terminal and "`" not in terminal


class TestStepOutput:
    def test_output_with_backticks_keeps_its_fence_and_a_secret_progress_line_is_withheld(
            self, fake: FakeSlack, deps: Deps) -> None:
        """Step output quoting ``` and `x` posts as one intact block; progress naming a secret shows nothing."""
        run_id = _started(deps)
        run = deps.store.get(run_id)
        env = deps.config.environment("prod")
        assert env is not None
        ctx = StepContext(deps=deps, run=run, env=env, step_name="migrate")
        ctx.log("Error: P3018 near ```sql``` and `email`")
        ctx.log("Applied 1 migration")
        ctx.flush_log("Apply Prisma migrations")
        posted = next(m["text"] for m in fake.thread(PROD_CHANNEL, run.message_ts or "")
                      if "Apply Prisma migrations* output" in m.get("text", ""))
        assert posted.count("`") == 2 * len(FENCE) and posted.endswith(FENCE)
        assert f"near {BACKTICK_LOOKALIKE * 3}sql" in posted
        secret = "s3cr3t" + secrets.token_hex(6)
        register_secret(secret)
        deps.store.apply(run_id, lambda current: Transition(current.model_copy(update={"steps": [
            s.model_copy(update={"status": StepStatus.RUNNING}) if s.name == "migrate" else s
            for s in current.steps]}), []))
        ctx.progress(f"connecting with {secret}", force=True)
        assert deps.store.get(run_id).step("migrate").progress is None
        ctx.progress("Applying 20240215000000_add_counseling_session", force=True)
        assert deps.store.get(run_id).step("migrate").progress == "Applying 20240215000000_add_counseling_session"

    def test_output_too_long_for_a_few_messages_is_uploaded_whole(self, fake: FakeSlack, deps: Deps) -> None:
        """Thousands of output lines become one file in the thread, first line to last, instead of a tail."""
        run_id = _started(deps)
        run = deps.store.get(run_id)
        env = deps.config.environment("prod")
        assert env is not None
        ctx = StepContext(deps=deps, run=run, env=env, step_name="migrate")
        lines = [f"Applying migration {i:05d}_change" for i in range(3000)]
        for line in lines:
            ctx.log(line)
        ctx.flush_log("Apply Prisma migrations")
        uploaded = wait_until(lambda: [f for f in fake.files if f.name.endswith("-migrate-output.txt")])
        assert uploaded[0].content.decode().split("\n") == lines and uploaded[0].thread_ts == run.message_ts


# ---- the real bot over HTTP --------------------------------------------------------------------------------

# Each adds a required column (a finding): adding and renaming a column in one migration is no longer one.
BACKTICK_SQL = ('-- Required for the `profile` screen; see ```docs/rename.md```\n'
                'ALTER TABLE "User" ADD COLUMN "nick0" TEXT NOT NULL;\n')


class TestTheWholeReviewInTheThread:
    def test_45_pending_migrations_show_every_finding(self, fresh):
        """45 pending migrations (2 examples + 43 new required columns): the thread opens the review under Slack's
        length and the file beside it holds every high and medium finding, numbered, each whole; the SQL file holds
        every migration, the one with backticks unchanged."""
        world = fresh
        for i in range(43):
            directory = world["migrations"] / f"20250101{i:06d}_rename_{i}"
            directory.mkdir()
            sql = BACKTICK_SQL if i == 0 else f'ALTER TABLE "User" ADD COLUMN "nick{i}" TEXT NOT NULL;\n'
            (directory / "migration.sql").write_text(sql)
        run_id, ts = start(world, "pgprod", env="pgprod")
        run = world["store"].get(run_id)
        assert len(run.pending_migrations) == 45
        review = run.facts.review
        assert review is not None and len(review.details) >= 43, review
        fake = world["fake"]

        def thread():
            return [m.get("text", "") for m in fake.thread(PROD_CHANNEL, ts)]

        def review_file():
            return next((f.content.decode() for f in fake.files if f.name == f"safety-review-{run_id}.txt"), "")

        wait_until(lambda: review_file() and any("*Safety review*" in t for t in thread()), timeout=30)
        opening = next(t for t in thread() if "*Safety review*" in t)
        assert len(opening) <= 3900 and "the whole review (" in opening
        whole = review_file()
        for number, finding in enumerate(review.details, 1):
            entry = re.search(rf"^[🔴🟠] {number}\. (.*?)(?=^[🔴🟠] \d+\. |\Z)", whole, re.M | re.S)
            assert entry is not None, number
            assert finding.migration in entry.group(1) and finding.message in entry.group(1)
            assert "_instead:_" in entry.group(1)
        bundle = next(f.content.decode() for f in fake.files if f.name == f"pending-migrations-{run_id}.sql")
        assert BACKTICK_SQL.strip() in bundle and bundle.count("-- ==== ") == 45
        assert all(len(t) <= 3900 for t in thread())

    def test_status_in_slack_mentions_the_requester_and_labels_the_steps(self, fresh):
        """`/migrate status <run>` over HTTP: <@U…>, the state in words, the backup by its label."""
        world = fresh
        store = world["store"]
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        text = world["sender"].slash(ALICE, f"status {run_id}", channel_id=PROD_CHANNEL).json()["text"]
        assert f"requested by <@{ALICE}>" in text and "🟠 Awaiting approval" in text, text
        assert f"{store.get(run_id).step('backup').label} (done)" in text and "backup succeeded" not in text
