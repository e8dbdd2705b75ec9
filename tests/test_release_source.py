"""Release-pinned runs through the bot's signed endpoint: `/migrate <env> <ref>` against a real bare repository,
served over git's smart HTTP (token by Basic auth) and over file://; every step reads the pinned commit."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from bot.devtools.slack.blockkit import validate_blocks
from bot.devtools.slack.client import SlackSender
from bot.devtools.slack.server import FakeSlack
from bot.integrations.git import GitSource
from bot.integrations.prisma.native import NativeRunner
from bot.store.keys import Keys
from tests.e2e import MANUAL_ITEMS
from tests.git_world import GitHttpServer, ReleaseRepo
from tests.harness import (
    ALICE,
    BOB,
    BOT_TOKEN,
    CAROL,
    MALLORY,
    PROD_CHANNEL,
    SCRIPTED_LIMITS,
    SIGNING_SECRET,
    BotProcess,
    free_port,
    wait_until,
    write_config,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "prisma" / "migrations"
FAKE_PRISMA = ROOT / "tests" / "fakes" / "fake_prisma.py"
INIT, COUNSEL, EMAIL = "20240101000000_init", "20240215000000_add_counseling_session", "20240301000000_add_email_verified"
TOKEN = "ghp_releaseTok3n0123456789abcdefABCDEF"  # the environment variable's token
URL_TOKEN = "urlTok3n-5f3a9c1e77d0b2"  # a token someone wrote into the URL
WRONG_TOKEN = "ghp_wrongTok3n9876543210zyxwvu"
SECRETS = [TOKEN, URL_TOKEN, WRONG_TOKEN] + [base64.b64encode(f"x-access-token:{t}".encode()).decode()
                                             for t in (TOKEN, WRONG_TOKEN)] + \
    [base64.b64encode(f"x-access-token:{URL_TOKEN}".encode()).decode()]
WEB = "https://github.example/acme/api/commit/{sha}"
DB = f"rel_{uuid.uuid4().hex[:8]}"
AUTHOR = "Eve & Co"
SUBJECT = "Add counseling sessions <!channel>"


def _files(*names: str) -> dict[str, str | None]:
    files: dict[str, str | None] = {"prisma/migrations/migration_lock.toml":
                                    (EXAMPLES / "migration_lock.toml").read_text()}
    for name in names:
        for path in (EXAMPLES / name).iterdir():
            files[f"prisma/migrations/{name}/{path.name}"] = path.read_text()
    return files


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_admin_url, redis_url):
    tmp = tmp_path_factory.mktemp("release")
    repo = ReleaseRepo(tmp / "repos")
    shas = {"v1.0.0": repo.commit("Initial schema", _files(INIT))}
    shas["v1.1.0"] = repo.commit(SUBJECT, _files(INIT, COUNSEL), author=AUTHOR)
    for tag in ("v1.0.0", "v1.1.0"):
        repo.tag(tag, shas[tag])
    http = GitHttpServer(tmp / "repos", TOKEN, URL_TOKEN).start()
    admin = psycopg.connect(pg_admin_url, autocommit=True)
    dbs = {name: f"{DB}_{name}" for name in ("prod", "stage", "urltok", "cli")}
    urls = {}
    for name, db in dbs.items():
        admin.execute(f'CREATE DATABASE "{db}"')
        urls[name] = pg_admin_url.rsplit("/", 1)[0] + "/" + db
        first = tmp / f"first-{name}"
        first.mkdir()
        (first / INIT).mkdir()
        (first / INIT / "migration.sql").write_text((EXAMPLES / INIT / "migration.sql").read_text())
        NativeRunner(urls[name]).deploy(first)  # what prod already ran: the baseline in _prisma_migrations
    fake = FakeSlack(token=BOT_TOKEN).start()
    for user in (ALICE, BOB, CAROL):
        fake.add_user(user, user.lower())
    cache = tmp / "git-cache"

    def env(channel: str, git: dict[str, object], db: str | None = None) -> dict[str, object]:
        config: dict[str, object] = {
            "channel": channel, "requesters": [ALICE, BOB], "approvers": [BOB, CAROL],
            "migrate": {"source": {"git": {"path": "prisma/migrations", "cache_dir": str(cache), "timeout_s": 30,
                                           **git}}, "lock_timeout_ms": 2000},
            "deploy": {"enabled": False}, "safety": {"rehearsal": False},
        }
        if db:
            config["database_url"] = urls[db]
            config["backup"] = {"method": "pg_dump", "local_dir": str(tmp / f"backups-{db}")}
        return config

    cli_migrate = {"runner": "prisma_cli", "prisma_command": [sys.executable, str(FAKE_PRISMA), "migrate"],
                   "source": {"git": {"url": repo.file_url, "cache_dir": str(cache)}}}
    config = {"environments": {
        "prod": env(PROD_CHANNEL, {"url": http.url("api.git"), "token_env": "RELEASE_GIT_TOKEN", "web_url": WEB},
                    "prod"),
        "stage": env("C0STAGE", {"url": repo.file_url, "ref_default": "v1.1.0"}, "stage"),
        "urltok": env("C0URLTOK", {"url": http.url("api.git", credentials=f"x-access-token:{URL_TOKEN}")},
                      "urltok"),
        "denied": env("C0DENIED", {"url": http.url("api.git"), "token_env": "WRONG_GIT_TOKEN"}),
        "offline": env("C0OFFLINE", {"url": f"http://127.0.0.1:{free_port()}/api.git",
                                     "token_env": "RELEASE_GIT_TOKEN"}),
        "nopath": {**env("C0NOPATH", {"url": repo.file_url}),
                   "migrate": {"source": {"git": {"url": repo.file_url, "path": "db/migrations",
                                                  "cache_dir": str(cache)}}}},
        "cli": {**env("C0CLI", {"url": repo.file_url}, "cli"), "safety": {"rehearsal": True}},
        "local": {"channel": "C0LOCAL", "requesters": [ALICE], "approvers": [BOB],
                  "migrate": {"migrations_dir": str(EXAMPLES)}},
    }, "limits": SCRIPTED_LIMITS}
    config["environments"]["cli"]["migrate"] = cli_migrate
    prefix = f"test:release:{time.time_ns()}:"
    bot = BotProcess(config_path=write_config(tmp / "env.yml", config), slack_api_url=fake.base_url,
                     redis_url=redis_url, key_prefix=prefix, log_path=tmp / "bot.log",
                     extra_env={"RELEASE_GIT_TOKEN": TOKEN, "WRONG_GIT_TOKEN": WRONG_TOKEN}).start()
    from bot.store.runs import RunStore, connect

    state = {"tmp": tmp, "repo": repo, "shas": shas, "http": http, "fake": fake, "bot": bot, "urls": urls,
             "cache": cache, "prefix": prefix, "store": RunStore(connect(redis_url), prefix=prefix),
             "sender": SlackSender(bot.url + "/slack/events", SIGNING_SECRET, fake=fake)}
    yield state
    bot.stop()
    fake.stop()
    http.stop()
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)
    for db in dbs.values():
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    admin.close()


# ---- helpers -------------------------------------------------------------------------------------

def channel_of(env: str) -> str:
    return {"prod": PROD_CHANNEL}.get(env, "C0" + env.upper())


def answer(world, text: str, env: str) -> str:
    """`/migrate <text>` from alice: the ephemeral answer that follows the "Resolving…" ack."""
    fake, channel = world["fake"], channel_of(env)
    before = len(fake.ephemerals(ALICE, channel))
    response = world["sender"].slash(ALICE, text, channel_id=channel)
    assert response.status_code == 200
    answers = wait_until(lambda: [e for e in fake.ephemerals(ALICE, channel)[before:]
                                  if not e["text"].startswith("⏳")], timeout=60)
    return str(answers[0]["text"])


def start(world, text: str, env: str = "prod") -> tuple[str, str]:
    fake, store = world["fake"], world["store"]
    channel = channel_of(env)
    before = len(fake.channel_messages(channel))
    reply = answer(world, text, env)
    assert reply.startswith("Started run"), reply
    wait_until(lambda: len(fake.channel_messages(channel)) > before)
    run = store.active_run(env)
    assert run is not None
    ts = fake.channel_messages(channel)[-1]["ts"]
    wait_until(lambda: store.get(run.id).facts.pending is not None, timeout=30)
    settle(world, channel, ts)
    return run.id, ts


def message(world, channel: str, ts: str):
    return world["fake"].message(channel, ts)


def text_of(world, channel: str, ts: str) -> str:
    return json.dumps(message(world, channel, ts)["blocks"], ensure_ascii=False)


def settle(world, channel: str, ts: str) -> None:
    footer = json.dumps(message(world, channel, ts)["blocks"][-1])
    run_id = footer.split("run `", 1)[1].split("`", 1)[0]
    wait_until(lambda: f" v{world['store'].get(run_id).version} "
               in json.dumps(message(world, channel, ts)["blocks"][-1]), timeout=20)


def click(world, ts: str, user: str, action_id: str, channel: str = PROD_CHANNEL):
    settle(world, channel, ts)
    return world["sender"].click(user, channel_id=channel, message=message(world, channel, ts),
                                 action_id=action_id)


def to_approval(world, run_id: str, ts: str, channel: str = PROD_CHANNEL) -> None:
    store = world["store"]
    for item in MANUAL_ITEMS:
        click(world, ts, BOB if item == "script_reviewed" else ALICE, f"checklist:{item}", channel)
        wait_until(lambda: item in store.get(run_id).checklist)
    click(world, ts, ALICE, "step_run:backup", channel)
    wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=60)
    if store.get(run_id).facts.rehearsal_expected:
        wait_until(lambda: store.get(run_id).facts.rehearsal is not None, timeout=120)
    wait_until(lambda: '"approve"' in text_of(world, channel, ts))


def run_migrate(world, run_id: str, ts: str, channel: str = PROD_CHANNEL) -> str:
    store = world["store"]
    wait_until(lambda: "step_run:migrate" in text_of(world, channel, ts))
    click(world, ts, ALICE, "step_run:migrate", channel)
    wait_until(lambda: store.get(run_id).step("migrate").status.value in ("succeeded", "failed")
               or store.get(run_id).status.value == "awaiting_approval", timeout=60)
    return store.get(run_id).step("migrate").status.value


def rows(world, env: str = "prod") -> dict[str, str]:
    with psycopg.connect(world["urls"][env]) as conn:
        return dict(conn.execute("SELECT migration_name, checksum FROM _prisma_migrations "
                                 "WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL").fetchall())


def finish(world, run_id: str, ts: str) -> None:
    store = world["store"]
    wait_until(lambda: store.get(run_id).status.value in ("monitoring", "succeeded"), timeout=30)
    wait_until(lambda: '"finish"' in text_of(world, PROD_CHANNEL, ts) or store.get(run_id).status.value == "succeeded")

    def closed() -> bool:  # the monitoring refreshes the message: a click on an older version is answered as stale
        if store.get(run_id).status.value != "succeeded":
            click(world, ts, ALICE, "finish")
        return store.get(run_id).status.value == "succeeded"

    wait_until(closed, timeout=30, interval=1)


# ---- the tests (in order: each builds on what prod ran before) ------------------------------------

def test_run_pinned_to_a_tag_over_http_reads_that_commit(world):
    """`/migrate prod v1.1.0` over smart HTTP with the token: the status message names the commit; a commit
    pushed to main after the start changes nothing; migrate applies the tag's migration, and the release becomes
    prod's baseline in Redis."""
    repo, shas, store = world["repo"], world["shas"], world["store"]
    run_id, ts = start(world, "prod v1.1.0")
    run = store.get(run_id)
    assert run.facts.release is not None and run.facts.release.sha == shas["v1.1.0"]
    assert run.facts.release.ref == "v1.1.0" and run.facts.release.subject == SUBJECT
    assert [p.name for p in run.facts.pending or []] == [COUNSEL]
    shown = text_of(world, PROD_CHANNEL, ts)
    short = shas["v1.1.0"][:7]
    assert f"<{WEB.format(sha=shas['v1.1.0'])}|{short}>" in shown
    assert "Add counseling sessions &lt;!channel&gt;" in shown and "<!channel>" not in shown  # escaped
    assert "by Eve &amp; Co" in shown
    assert f"this release adds 1 migration since `{INIT}`" in shown  # from prod's _prisma_migrations
    assert "no earlier release recorded as run in prod" in shown
    assert validate_blocks(message(world, PROD_CHANNEL, ts)["blocks"], surface="message") == []
    def thread() -> str:  # the SQL is posted in the thread just after the inspection is recorded
        return "\n".join(m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts))

    wait_until(lambda: "CounselingSession" in thread())
    assert EMAIL not in thread() and "emailverified" not in thread().lower()

    shas["main3"] = repo.commit("Add email verification", _files(INIT, COUNSEL, EMAIL))  # main moves on
    repo.tag("v1.1.0", shas["main3"])  # and even the tag is moved: the run keeps its commit
    to_approval(world, run_id, ts)
    assert click(world, ts, BOB, "approve").status_code == 200
    wait_until(lambda: store.get(run_id).status.value == "running")
    assert run_migrate(world, run_id, ts) == "succeeded"
    applied = rows(world)
    assert set(applied) == {INIT, COUNSEL}  # not the email migration the moved refs point at
    assert store.get(run_id).facts.release.sha == shas["v1.1.0"]
    finish(world, run_id, ts)
    raw = store.redis.get(Keys(world["prefix"]).released("prod"))
    assert raw is not None and json.loads(raw)["sha"] == shas["v1.1.0"] and json.loads(raw)["ref"] == "v1.1.0"
    repo.tag("v1.1.0", shas["v1.1.0"])


def test_next_run_counts_from_the_baseline_and_an_edit_needs_a_new_run(world):
    """The default ref (main) is one commit ahead of what prod ran; an edit of the pending migration pushed after
    the start is not what runs: the approved commit's SQL is applied, and the edit needs a new run."""
    repo, shas, store = world["repo"], world["shas"], world["store"]
    run_id, ts = start(world, "prod")
    release = store.get(run_id).facts.release
    assert release is not None and release.sha == shas["main3"] and release.ref == "main"
    assert release.baseline_sha == shas["v1.1.0"] and release.commits_ahead == 1
    shown = text_of(world, PROD_CHANNEL, ts)
    assert f"1 commit ahead of what prod last ran (`{shas['v1.1.0'][:7]}`)" in shown
    assert f"this release adds 1 migration since v1.1.0 ({shas['v1.1.0'][:7]})" in shown

    original = (EXAMPLES / EMAIL / "migration.sql").read_text()
    edited = original + "\n-- edited after the run started\nSELECT 1;\n"
    shas["main4"] = repo.commit("Tweak email verification", {f"prisma/migrations/{EMAIL}/migration.sql": edited})
    reply = answer(world, "prod main", "prod")  # the new commit needs a new run: not while this one is active
    assert "already active" in reply and store.active_run("prod").id == run_id
    to_approval(world, run_id, ts)
    assert click(world, ts, BOB, "approve").status_code == 200
    wait_until(lambda: store.get(run_id).status.value == "running")
    assert run_migrate(world, run_id, ts) == "succeeded"
    assert rows(world)[EMAIL] == _checksum(original)  # the approved commit's SQL, not the edit
    finish(world, run_id, ts)


def test_the_approval_binds_the_commit(world):
    """An approved run whose commit is swapped (same migrations, another SHA) is not what was approved: the
    migrate step voids the approval and applies nothing."""
    repo, shas, store = world["repo"], world["shas"], world["store"]
    files = _files(INIT, COUNSEL, EMAIL)
    files[f"prisma/migrations/{EMAIL}/migration.sql"] = (EXAMPLES / EMAIL / "migration.sql").read_text()
    shas["main5"] = repo.commit("Revert the tweak", files)
    with psycopg.connect(world["urls"]["prod"], autocommit=True) as conn:  # prod forgets the email migration
        conn.execute("DELETE FROM _prisma_migrations WHERE migration_name = %s", (EMAIL,))
        conn.execute('ALTER TABLE "User" DROP COLUMN IF EXISTS "emailVerified"')
    same = repo.commit("Docs only", {"README.md": "release notes\n"})
    run_id, ts = start(world, f"prod {shas['main5'][:10]}")
    assert store.get(run_id).facts.release.sha == shas["main5"]
    to_approval(world, run_id, ts)
    assert click(world, ts, BOB, "approve").status_code == 200
    wait_until(lambda: store.get(run_id).status.value == "running")
    key = Keys(world["prefix"]).run(run_id)  # the run's commit swapped behind the approval's back
    document = json.loads(store.redis.get(key))
    document["facts"]["release"]["sha"] = same
    document["version"] += 1
    store.redis.set(key, json.dumps(document))
    run_migrate(world, run_id, ts)
    wait_until(lambda: store.get(run_id).status.value == "awaiting_approval")
    assert EMAIL not in rows(world) and not store.get(run_id).approvals
    assert "Started" not in answer(world, f"cancel {run_id} commit swapped", "prod")
    wait_until(lambda: store.active_run("prod") is None)


def test_file_url_source_and_default_ref(world):
    """A file:// source resolves the environment's ref_default (a tag) and reads that commit's migrations."""
    store, shas = world["store"], world["shas"]
    run_id, ts = start(world, "stage", env="stage")
    release = store.get(run_id).facts.release
    assert release is not None and release.sha == shas["v1.1.0"] and release.ref == "v1.1.0"
    assert [p.name for p in store.get(run_id).facts.pending or []] == [COUNSEL]
    assert "Add counseling sessions" in text_of(world, "C0STAGE", ts)
    answer(world, f"cancel {run_id}", "stage")
    wait_until(lambda: store.active_run("stage") is None)


def test_rehearsal_and_the_prisma_cli_run_in_a_checkout_of_the_commit(world):
    """The rehearsal applies the pinned commit's migrations to a restored copy; the Prisma CLI (the stand-in, which
    reads ./prisma/migrations) runs in a checkout of that commit, not where the bot was started."""
    store, shas = world["store"], world["shas"]
    world["repo"].tag("v1.1.0", shas["v1.1.0"])
    run_id, ts = start(world, "cli v1.1.0", env="cli")
    to_approval(world, run_id, ts, "C0CLI")
    rehearsal = store.get(run_id).facts.rehearsal
    assert rehearsal is not None and rehearsal.ok, rehearsal
    assert [m.name for m in rehearsal.migrations] == [COUNSEL]
    assert click(world, ts, BOB, "approve", "C0CLI").status_code == 200
    wait_until(lambda: store.get(run_id).status.value == "running")
    assert run_migrate(world, run_id, ts, "C0CLI") == "succeeded", store.get(run_id).step("migrate")
    assert set(rows(world, "cli")) == {INIT, COUNSEL}
    answer(world, f"cancel {run_id}", "cli")


def test_check_and_lint_read_the_default_ref(world):
    """Without a run, `/migrate check` and `lint` read the commit ``ref_default`` names now (stage: v1.1.0)."""
    world["repo"].tag("v1.1.0", world["shas"]["v1.1.0"])
    lint = answer(world, "lint stage", "stage")
    assert COUNSEL in lint and EMAIL not in lint, lint
    check = answer(world, "check stage", "stage")
    assert f"1: {COUNSEL}" in check, check
    world["repo"].commit("Squawk config", {".squawk.toml": 'excluded_rules = ["prefer-robust-stmts"]\n'})
    lint = answer(world, "lint prod", "prod")  # the repository's .squawk.toml, from main's commit
    assert "squawk config:" in lint and ".squawk.toml" in lint and "prefer-robust-stmts" in lint, lint


def test_only_a_requester_starts_a_pinned_run_and_a_refusal_fetches_nothing(world):
    """An approver who is not a requester and an outsider are refused in the ack: no run, and the permission is
    checked before the ref is resolved, so the git server sees no request from their commands."""
    world["fake"].add_user(MALLORY, "mallory")
    store, http = world["store"], world["http"]
    seen = len(http.requests)
    for user in (CAROL, MALLORY):
        body = world["sender"].slash(user, "prod v1.1.0", channel_id=PROD_CHANNEL).json()
        assert "not on the requester list" in body["text"], body
    assert len(http.requests) == seen
    assert all(run.requested_by not in (CAROL, MALLORY) for run in store.recent_runs(limit=100))


def test_bad_input_gets_one_line_and_starts_nothing(world):
    repo, store = world["repo"], world["store"]
    doomed = repo.commit("Experiment", {"prisma/migrations/20990101000000_x/migration.sql": "SELECT 1;"},
                         branch="doomed")
    repo.checkout("main")
    source = GitSource(world["http"].url("api.git"), path="prisma/migrations", cache_dir=world["cache"],
                       token=TOKEN)
    assert source.resolve("doomed").sha == doomed  # the bot's cache has seen it ...
    repo.delete_branch("doomed")  # ... then it was force-pushed away
    cases = [
        ("prod", "prod no-such-tag", "No tag, branch or commit `no-such-tag`"),
        ("prod", f"prod {doomed}", "no longer on any branch or tag"),
        ("prod", "prod 0123456789abcdef0123456789abcdef01234567", "No tag, branch or commit"),
        ("prod", "prod v1.1.0 main", "Unexpected"),
        ("prod", "prod --image api:v9 no-such-tag", "No tag, branch or commit `no-such-tag`"),
        ("denied", "denied main", "refused the credentials"),
        ("offline", "offline", "could not be reached"),
        ("nopath", "nopath main", "has no folder `db/migrations`"),
        ("local", "local v1.1.0", "not from a git repository"),
    ]
    for env, text, expected in cases:
        reply = answer(world, text, env)
        if "no-such-tag" in text:  # the ack named what is being resolved
            assert any("Resolving `no-such-tag`" in e["text"] for e in world["fake"].ephemerals(ALICE)), text
        assert expected in reply, (text, reply)
        assert "\n" not in reply.strip() or expected == "Unexpected", reply
        assert store.active_run(env) is None, text
        assert not world["fake"].channel_messages(channel_of(env)) or env == "prod"


def test_tokens_never_leak(world):
    """A token in the URL and one in the environment (and a wrong one) reach git only: never Slack, the logs,
    the CLI or the cache's .git/config."""
    store = world["store"]
    run_id, ts = start(world, "urltok main", env="urltok")
    assert store.get(run_id).facts.release is not None
    answer(world, f"cancel {run_id}", "urltok")
    assert "refused the credentials" in answer(world, "denied", "denied")
    assert world["http"].refused >= 1  # the wrong token was really sent and refused
    bot = world["bot"]
    status = bot.cli("status", run_id, "--as", ALICE)
    assert f"release {store.get(run_id).facts.release.short} (main)" in status.stdout, status
    timeline = bot.cli("timeline", run_id, "--as", ALICE)
    assert store.get(run_id).facts.release.sha in timeline.stdout, timeline  # the audit records the commit
    check = bot.cli("check-config")
    outputs = [status.stdout, status.stderr, timeline.stdout, timeline.stderr, check.stdout, check.stderr,
               bot.cli("status", "--as", ALICE).stdout]
    slack = json.dumps([{"method": c.method, "args": c.args} for c in world["fake"].calls], ensure_ascii=False)
    slack += json.dumps(world["fake"].ephemerals(), ensure_ascii=False)
    configs = "".join(p.read_text() for p in world["cache"].glob("*/repo.git/config"))
    assert "[remote \"origin\"]" in configs  # the caches exist, and hold the URL without credentials
    for secret in SECRETS:
        assert secret not in slack
        assert secret not in bot.logs()
        assert all(secret not in out for out in outputs)
        assert secret not in configs
    assert "x-access-token" not in configs


def test_client_refetches_a_lost_cache_and_refuses_a_vanished_commit(tmp_path):
    """The git client alone: a cache lost with its container is fetched again for the run's SHA; a SHA that no
    branch or tag holds any more is refused with what to do; a ref that is an option or expression is refused."""
    from bot.integrations.git import GitError

    repo = ReleaseRepo(tmp_path / "repo")
    first = repo.commit("one", _files(INIT))
    feature = repo.commit("two", _files(INIT, COUNSEL), branch="feature")
    cache = tmp_path / "cache"
    source = GitSource(repo.file_url, path="prisma/migrations", cache_dir=cache)
    assert source.resolve("feature").sha == feature
    assert source.commits_between(first, feature) == 1
    shutil.rmtree(cache)  # a new container: the cache is gone, the run still has its SHA
    assert (source.tree(first) / "prisma" / "migrations" / INIT / "migration.sql").is_file()
    repo.delete_branch("feature")
    shutil.rmtree(cache)
    with pytest.raises(GitError, match="no longer on any branch or tag"):
        source.tree(feature)
    for bad in ("-oops", "a..b", "HEAD~1", "main:secret", "x" * 300, "--upload-pack=touch"):
        with pytest.raises(GitError, match="not a tag, branch or commit SHA"):
            source.resolve(bad)


@pytest.mark.parametrize(("git", "field", "says"), [
    ({"url": "https://github.com/acme/api.git", "token_env": "ghp_notAVariableName-123"}, "token_env",
     "name of an environment variable"),
    ({"url": "https://github.com/acme/api.git", "web_url": "https://github.com/acme/api/commit/"}, "web_url",
     "{sha}"),
    ({"url": "https://github.com/acme/api.git", "path": "../etc"}, "path", "folder inside the repository"),
    ({"url": "https://github.com/acme/api.git", "ref_default": "--upload-pack=x"}, "ref_default",
     "tag, branch or commit SHA"),
    ({"url": "ftp://x-access-token:ftpSecretTok3n@host/api.git"}, "url", "URL git can fetch"),
    ({"url": "https://github.com/acme/api.git", "branch": "main"}, "branch", "unknown field"),
])
def test_source_config_is_checked_in_one_line(tmp_path, git, field, says):
    """A wrong `migrate.source.git` is one line naming the field; the value (maybe a token) is never echoed."""
    from bot.config import load_config
    from bot.errors import ConfigError

    config = {"environments": {"prod": {"channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB],
                                        "migrate": {"source": {"git": git}}}}}
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path / "env.yml", config))
    text = str(raised.value)
    assert f"prod.migrate.source.git.{field}" in text and says in text and "\n" not in text, text
    assert "ghp_notAVariableName" not in text and "ftpSecretTok3n" not in text


def test_a_token_in_the_url_is_a_secret_once_the_file_is_read(tmp_path):
    from bot.config import load_config
    from bot.redact import redact

    secret = "urlOnlyTok3n-0f9e8d7c"
    config = {"environments": {"prod": {"channel": PROD_CHANNEL, "requesters": [ALICE], "approvers": [BOB],
                                        "migrate": {"source": {"git": {
                                            "url": f"https://x-access-token:{secret}@github.com/acme/api.git"}}}}}}
    loaded = load_config(write_config(tmp_path / "env.yml", config))
    assert loaded.environments["prod"].migrate.source.git is not None
    assert secret not in redact(f"fetching with {secret} failed")
