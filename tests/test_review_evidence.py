""""Migration script reviewed by at least one other developer" from GitHub: the pull requests that added the files.

Real parts: the bot as a subprocess behind its signed endpoint, the Slack stand-in, Redis, PostgreSQL (one migration
applied, two pending), and a local stand-in for GitHub's REST API (bot.devtools.stubs.GitHubStub: commits of a
path -> pulls of a commit -> reviews, paginated two items a page, with rate-limit headers).

Until the git source lands (issue 14, h14a), a run is pinned to its commit by writing `facts.release` on the run
the bot started, and the evidence is gathered by the bot's own `review_evidence` on that run's store (in this
process, publishing through the same Slack stand-in), as `inspect_run` does once the pending migrations are known.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from bot.config import GithubReviewConfig, load_config
from bot.context import Deps
from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.devtools.stubs import GitHubStub
from bot.integrations.github import independent_approvers
from bot.integrations.prisma.native import NativeRunner
from bot.integrations.slack import Slack, make_client
from bot.runbook.code_review import collect, review_evidence
from bot.runbook.publisher import Publisher
from bot.runbook.rules import Release, Run, Transition
from bot.store.runs import RunStore, connect
from tests import harness
from tests.harness import ALICE, BOB, CAROL, PROD_CHANNEL, wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prisma" / "migrations"
INIT = "20240101000000_init"
SESSION = "20240215000000_add_counseling_session"
EMAIL = "20240301000000_add_email_verified"
SHA = "4f1c2a9d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a"
GH_TOKEN = "ghp_reviewEvidenceSecret0123456789abcdef"
# Each environment reads the same database and migrations; its GitHub repository tells a different story.
REPOS = {"prod": "acme/api", "selfok": "acme/self", "unmerged": "acme/unmerged", "locked": "acme/locked",
         "limited": "acme/limited"}


def path_of(name: str) -> str:
    return f"prisma/migrations/{name}/migration.sql"


def history(github: GitHubStub) -> None:
    """What the repositories hold: which commits added the two pending files, their pull requests and reviews."""
    for repo in REPOS.values():
        github.commit(repo, "a" * 40, [path_of(INIT)])
        github.commit(repo, "b" * 40, [path_of(SESSION)])
        github.commit(repo, "c" * 40, [path_of(EMAIL)])
        github.pull(repo, 12, author="alice", commits=["b" * 40])
        github.review(repo, 12, by="bob")
    api, own = "acme/api", "acme/self"
    # Three reviews over two pages: carol's later "changes requested" undoes her approval, dave's approval is on
    # the second page, a later comment from dave does not undo his.
    github.pull(api, 15, author="carol", commits=["c" * 40])
    for by, state in [("carol", "COMMENTED"), ("erin", "APPROVED"), ("erin", "CHANGES_REQUESTED"),
                      ("dave", "APPROVED"), ("dave", "COMMENTED")]:
        github.review(api, 15, by=by, state=state)
    # The only approval of the email migration's pull request is its author's own; bob only commented.
    github.pull(own, 15, author="alice", commits=["c" * 40])
    github.review(own, 15, by="bob", state="COMMENTED")
    github.review(own, 15, by="alice", state="APPROVED")
    github.pull("acme/unmerged", 15, author="carol", commits=["c" * 40], merged=False)
    github.review("acme/unmerged", 15, by="dave")
    for repo in ("acme/locked", "acme/limited"):
        github.pull(repo, 15, author="carol", commits=["c" * 40])
        github.review(repo, 15, by="dave")
    github.forbidden.add("acme/locked")


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_admin_url, redis_url):
    import psycopg

    tmp = tmp_path_factory.mktemp("review")
    name = f"rev_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = pg_admin_url.rsplit("/", 1)[0] + "/" + name
    migrations = tmp / "migrations"
    shutil.copytree(EXAMPLES, migrations)
    first = tmp / "first"
    shutil.copytree(EXAMPLES / INIT, first / INIT)
    NativeRunner(db).deploy(first)
    github = GitHubStub(token=GH_TOKEN, page_size=2).start()
    history(github)
    envs = {env: {"channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB, CAROL], "database_url": db,
                  "migrate": {"migrations_dir": str(migrations)}, "safety": {"rehearsal": False},
                  "review": {"github": {"repo": repo, "token_env": "GITHUB_TOKEN", "api_url": github.base_url}}}
            for env, repo in REPOS.items()}
    config_path = harness.write_config(tmp / "env.yml", {"environments": envs, "limits": harness.SCRIPTED_LIMITS})
    fake = FakeSlack(token=harness.BOT_TOKEN).start()
    fake.add_user(ALICE, "alice")
    fake.add_user(BOB, "bob")
    prefix = f"test:review:{uuid.uuid4().hex[:8]}:"
    bot = harness.BotProcess(config_path=config_path, slack_api_url=fake.base_url, redis_url=redis_url,
                             key_prefix=prefix, log_path=tmp / "bot.log",
                             extra_env={"GITHUB_TOKEN": GH_TOKEN}).start()
    store = RunStore(connect(redis_url), prefix=prefix)
    slack = Slack(make_client(harness.BOT_TOKEN, fake.base_url))
    deps = Deps(config=load_config(config_path, environ={"GITHUB_TOKEN": GH_TOKEN}), store=store, slack=slack,
                publisher=Publisher(store, slack))
    yield {"fake": fake, "bot": bot, "store": store, "github": github, "deps": deps,
           "sender": SlackSender(bot.url + "/slack/events", harness.SIGNING_SECRET, fake=fake)}
    bot.stop()
    fake.stop()
    github.stop()
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def pin(run: Run) -> Transition:
    """What the git source records at run start: the commit the run reads everything from."""
    new = run.model_copy(update={"version": run.version + 1}, deep=True)
    new.facts.release = Release(sha=SHA, ref="main", subject="Add counseling sessions and email verification")
    return Transition(new, [])


def pinned_run(world, env: str, monkeypatch) -> tuple[str, str]:
    """Start a run in `env` through the signed endpoint, pin it to SHA, gather the review evidence."""
    store, fake = world["store"], world["fake"]
    assert world["sender"].slash(ALICE, env, channel_id=PROD_CHANNEL).status_code == 200
    run = wait_until(lambda: store.active_run(env), timeout=20)
    wait_until(lambda: store.get(run.id).facts.pending is not None and store.get(run.id).message_ts, timeout=20)
    assert "code_review" not in json.loads(store.get(run.id).model_dump_json())["facts"]  # not pinned: not asked
    store.apply(run.id, pin)
    monkeypatch.setenv("GITHUB_TOKEN", GH_TOKEN)
    review_evidence(world["deps"], run.id)
    ts = store.get(run.id).message_ts
    assert ts
    wait_until(lambda: f" v{store.get(run.id).version} " in json.dumps(fake.message(PROD_CHANNEL, ts)["blocks"][-1]),
               timeout=20)
    return run.id, ts


def shown(world, ts: str) -> str:
    return json.dumps(world["fake"].message(PROD_CHANNEL, ts)["blocks"], ensure_ascii=False)


def close(world, run_id: str) -> None:
    """Cancel the run (`/migrate cancel`), freeing its environment for the next test."""
    assert world["sender"].slash(ALICE, f"cancel {run_id}", channel_id=PROD_CHANNEL).status_code == 200
    wait_until(lambda: world["store"].get(run_id).status.value == "cancelled", timeout=20)


def no_token_anywhere(world, run_id: str) -> None:
    payloads = json.dumps([c.args for c in world["fake"].calls] + world["fake"].ephemerals(), ensure_ascii=False)
    audit = json.dumps([e.detail for e in world["store"].audit_entries(run_id)])
    assert GH_TOKEN not in payloads
    assert GH_TOKEN not in world["bot"].logs()
    assert GH_TOKEN not in audit
    assert GH_TOKEN not in world["store"].get(run_id).model_dump_json()


class TestReviewEvidence:
    def test_every_file_approved_by_another_developer_ticks_the_item(self, world, monkeypatch):
        store = world["store"]
        run_id, ts = pinned_run(world, "prod", monkeypatch)
        run = store.get(run_id)
        ticked = run.checklist["script_reviewed"]
        assert ticked.by == "bot"
        assert f"`{SESSION}`: PR #12 approved by bob" in (ticked.evidence or "")
        # dave's approval is on the second page of reviews; erin's was withdrawn by her later "changes requested"
        assert f"`{EMAIL}`: PR #15 approved by dave" in (ticked.evidence or "")
        assert "erin" not in (ticked.evidence or "")
        text = shown(world, ts)
        assert "Migration script reviewed by at least one other developer — the bot" in text
        assert "PR #12 approved by bob" in text and "PR #15 approved by dave" in text
        assert any(e.action == "checklist.evidence" and "approved by dave" in e.detail
                   for e in store.audit_entries(run_id))
        pages = [r for r in world["github"].requests if r.path == "/repos/acme/api/pulls/15/reviews"]
        assert [r.param("page") for r in pages] == [None, "2", "3"]  # followed Link: rel="next" to the end
        assert {r.headers.get("authorization") for r in world["github"].requests} == {f"Bearer {GH_TOKEN}"}
        no_token_anywhere(world, run_id)
        close(world, run_id)

    def test_only_the_author_approved_leaves_a_click_the_requester_may_not_make(self, world, monkeypatch):
        store, fake = world["store"], world["fake"]
        run_id, ts = pinned_run(world, "selfok", monkeypatch)
        assert "script_reviewed" not in store.get(run_id).checklist
        text = shown(world, ts)
        assert (f"`prisma/migrations/{EMAIL}/migration.sql`: pull request #15 has no approving review by someone "
                "other than its author alice") in text
        assert "a developer other than the requester confirms" in text
        before = store.get(run_id).version
        world["sender"].click(ALICE, channel_id=PROD_CHANNEL, message=fake.message(PROD_CHANNEL, ts),
                              action_id="checklist:script_reviewed")
        wait_until(lambda: any("You requested this run" in (e.get("text") or "") for e in fake.ephemerals(ALICE)),
                   timeout=20)
        assert "script_reviewed" not in store.get(run_id).checklist and store.get(run_id).version == before
        world["sender"].click(BOB, channel_id=PROD_CHANNEL, message=fake.message(PROD_CHANNEL, ts),
                              action_id="checklist:script_reviewed")
        wait_until(lambda: "script_reviewed" in store.get(run_id).checklist, timeout=20)
        assert store.get(run_id).checklist["script_reviewed"].by == BOB
        close(world, run_id)

    def test_unmerged_pull_request_is_not_evidence(self, world, monkeypatch):
        run_id, ts = pinned_run(world, "unmerged", monkeypatch)
        assert "script_reviewed" not in world["store"].get(run_id).checklist
        assert f"`prisma/migrations/{EMAIL}/migration.sql`: pull request #15 that brought in ccccccc is not merged" \
            in shown(world, ts)
        close(world, run_id)

    def test_token_without_access_keeps_the_item_manual_with_one_line(self, world, monkeypatch, caplog):
        store = world["store"]
        with caplog.at_level("DEBUG"):
            run_id, ts = pinned_run(world, "locked", monkeypatch)
        assert f"review evidence for {run_id} unavailable: GitHub denied access to acme/locked (403)" in caplog.text
        assert GH_TOKEN not in caplog.text
        run = store.get(run_id)
        assert "script_reviewed" not in run.checklist
        assert run.facts.code_review is not None and run.facts.code_review.error == (
            "GitHub denied access to acme/locked (403): the token needs read access to its contents and pull "
            "requests (check the token in GITHUB_TOKEN)")
        assert "not ticked from GitHub: GitHub denied access to acme/locked (403)" in shown(world, ts)
        assert any(e.action == "review.github" and e.outcome == "failed" for e in store.audit_entries(run_id))
        no_token_anywhere(world, run_id)
        close(world, run_id)

    def test_rate_limit_says_when_to_try_again(self, world, monkeypatch):
        world["github"].rate_limited = True
        try:
            run_id, ts = pinned_run(world, "limited", monkeypatch)
        finally:
            world["github"].rate_limited = False
        assert "not ticked from GitHub: GitHub's rate limit is reached; it resets at " in shown(world, ts)
        assert "script_reviewed" not in world["store"].get(run_id).checklist
        close(world, run_id)


class TestGithubClient:
    def test_wrong_token_and_unreachable_api_are_one_line_each(self, world, monkeypatch):
        monkeypatch.setenv("GITHUB_TOKEN", "ghp_notTheRightToken000000000000000000")
        config = GithubReviewConfig(repo="acme/api", token_env="GITHUB_TOKEN", api_url=world["github"].base_url)
        refused = collect(config, sha=SHA, migrations=[SESSION], path="prisma/migrations")
        assert refused.error == "GitHub refused the token (401) (check the token in GITHUB_TOKEN)"
        assert not refused.ok
        gone = GithubReviewConfig(repo="acme/api", token_env="GITHUB_TOKEN",
                                  api_url=f"http://127.0.0.1:{harness.free_port()}", timeout_s=2)
        unreachable = collect(gone, sha=SHA, migrations=[SESSION], path="prisma/migrations")
        assert (unreachable.error or "").startswith("GitHub unreachable at http://127.0.0.1:")
        monkeypatch.delenv("GITHUB_TOKEN")
        unset = collect(config, sha=SHA, migrations=[SESSION], path="prisma/migrations")
        assert unset.error == "the token variable GITHUB_TOKEN is not set in the bot's environment"

    def test_latest_deciding_review_per_reviewer_counts_and_the_author_never(self):
        def review(by: str, state: str, minute: int) -> dict[str, object]:
            return {"id": minute, "user": {"login": by}, "state": state, "submitted_at": f"2024-01-01T00:{minute:02d}:00Z"}

        assert independent_approvers([review("alice", "APPROVED", 1)], "alice") == []
        assert independent_approvers([review("bob", "APPROVED", 1), review("bob", "COMMENTED", 2)], "alice") == ["bob"]
        assert independent_approvers([review("bob", "APPROVED", 1), review("bob", "CHANGES_REQUESTED", 2)],
                                     "alice") == []
        assert independent_approvers([review("bob", "CHANGES_REQUESTED", 1), review("bob", "APPROVED", 2),
                                      review("carol", "DISMISSED", 3)], "alice") == ["bob"]
