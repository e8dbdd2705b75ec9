"""Upgrading over live state: what the release before the store moved (747b6cb) wrote into Redis, this code reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import jobs.scheduler
import jobs.watch
from bot.calendar.delivery import missing_for
from bot.calendar.rules import WindowStatus
from bot.config import BotConfig
from bot.context import Deps, Invocation
from bot.runbook.operations import handle_command
from bot.runbook.timeline import timeline_for
from bot.store.liveness import Liveness
from bot.store.prechecks import PrecheckResults
from bot.store.runs import RunStore, connect
from bot.store.watch import WatchStore
from bot.store.windows import InFlight, WindowStore
from tests.harness import ALICE, BOB, MALLORY, PROD_CHANNEL, base_config

OLD_RELEASE = "747b6cb"  # the last commit before bot/ was reorganised into packages (issue 12)
ROOT = Path(__file__).resolve().parents[1]
WRITER = ROOT / "tests" / "data" / "write_old_state.py"
OLD_INSTANCE = "old-release:1:abcdef"
# Reminders of a window three days ahead are all still to come: the announcement two days before, then the rest.
CALENDAR = {"allowed_weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "earliest_start": "00:00",
            "latest_end": "24:00", "min_notice_s": 0, "holiday_country": None, "timezone": "UTC",
            "announce_before_s": 2 * 86400}


def old_release(into: Path) -> Path:
    """The tree of the old release, from git: `git archive 747b6cb | tar -x -C <into>`."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD_RELEASE}^{{commit}}"],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip(f"needs the project's git history (commit {OLD_RELEASE})")
    into.mkdir()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", OLD_RELEASE], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True, timeout=120)
    assert archive.stdout is not None
    archive.stdout.close()
    assert archive.wait(timeout=120) == 0
    return into


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[dict[str, Any]]:
    """State written by the old release's own code in a subprocess (still running, as an old replica would be),
    and deps of this code on the same Redis and prefix."""
    work = tmp_path_factory.mktemp("upgrade")
    root = old_release(work / "old")
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    config = base_config(calendar=CALENDAR, backup={"method": "pg_dump", "local_dir": str(work / "backups")})
    params = {"root": str(root), "redis_url": redis_url, "prefix": prefix, "instance": OLD_INSTANCE,
              "config": config}
    environ = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    stderr = (work / "writer.log").open("w")
    writer = subprocess.Popen([sys.executable, str(WRITER), json.dumps(params)], cwd=root,
                              env={**environ, "PYTHONPATH": str(root)}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=stderr, text=True)
    store = RunStore(connect(redis_url), prefix=prefix)
    try:
        assert writer.stdout is not None
        line = writer.stdout.readline()
        assert line, f"the old release wrote nothing: {(work / 'writer.log').read_text()[-3000:]}"
        deps = Deps(config=BotConfig.model_validate(config), store=store, slack=None, publisher=None,
                    instance_id="new-release:2:fedcba")
        yield {"deps": deps, "old": json.loads(line), "alive": Liveness(store).is_alive(OLD_INSTANCE)}
    finally:
        writer.communicate(timeout=60)  # closes stdin: the old replica stops
        stderr.close()
        for key in store.redis.scan_iter(match=prefix + "*", count=500):
            store.redis.delete(key)


class TestRunsSurviveTheUpgrade:
    def test_the_run_reads_back_with_its_checklist_lock_and_audit(self, upgraded):
        """/migrate status finds the old run by id and in the list, still holding prod, its tick and audit intact."""
        deps, old = upgraded["deps"], upgraded["old"]
        run = deps.store.get(old["run_id"])
        assert json.loads(run.model_dump_json()) == old["run"]
        assert list(run.checklist) == ["staging_tested"]
        assert deps.store.active_run("prod").id == run.id
        entries = deps.store.audit_entries(run.id)
        assert [{**asdict(entry), "at": str(entry.at)} for entry in entries] == old["audit"]
        assert [(entry.actor, entry.action, entry.outcome) for entry in entries] == [
            (ALICE, "run.start", "ok"), (ALICE, "checklist.confirm", "ok"), (MALLORY, "checklist.confirm", "denied"),
            ("bot", "watch.start", "ok")]
        listed = handle_command(deps, Invocation(ALICE, PROD_CHANNEL, "status")).text
        assert listed.startswith("1 active run(s)") and run.id in listed
        shown = handle_command(deps, Invocation(ALICE, PROD_CHANNEL, f"status {run.id}")).text
        assert shown.startswith(run.id) and "1/6 checklist" in shown
        assert "| U0MALLORY | checklist.confirm | denied | not allowed |" in timeline_for(deps, run.id)

    def test_the_slack_message_is_not_posted_again(self, upgraded):
        """The rendered version and thread cursor are found: after the upgrade nothing is re-posted or re-threaded."""
        deps, old = upgraded["deps"], upgraded["old"]
        assert not deps.store.message_behind(old["run_id"])
        assert deps.store.rendered_version(old["run_id"]) == old["run"]["version"]
        assert deps.store.thread_cursor(old["run_id"]) == deps.store.audit_entries(old["run_id"])[-1].id

    def test_the_watch_goes_on(self, upgraded):
        """The 24-hour watch's schedule and readings are found, and its claims hold."""
        deps, old = upgraded["deps"], upgraded["old"]
        watches = WatchStore(deps.store)
        assert watches.get(old["run_id"])["interval_s"] == 300
        assert len(watches.samples(old["run_id"])) == old["watch_samples"] == 1
        assert not watches.claim_tick(old["run_id"], old["watch_slot"])  # the old release took that reading

    def test_an_old_replica_is_seen_alive(self, upgraded):
        """During a rolling deploy the new code sees the old process's heartbeat, so it takes over none of its work."""
        assert upgraded["alive"]


class TestWindowsSurviveTheUpgrade:
    def test_the_window_lists_with_its_approver_and_audit(self, upgraded):
        """/migrate windows shows the old window, with its approver and audit; its reminders will know both."""
        deps, old = upgraded["deps"], upgraded["old"]
        windows = WindowStore(deps.store)
        (window,) = windows.scheduled()
        assert json.loads(window.model_dump_json()) == old["window"]
        assert window.status is WindowStatus.SCHEDULED and window.approver == BOB
        assert [entry.action for entry in windows.audit_entries(window.id)] == [
            entry["action"] for entry in old["window_audit"]] == ["window.schedule", "window.approver"]
        reply = handle_command(deps, Invocation(ALICE, PROD_CHANNEL, "windows"))
        assert "1 upcoming maintenance window(s)" in reply.text and window.id in json.dumps(reply.blocks)
        # What the next reminder will say: the approver and the verified backup target are not reported missing.
        missing = " ".join(missing_for(deps, window))
        assert "No approver" not in missing and "Backup target not verified" not in missing
        assert "Checklist of run" in missing

    def test_the_pickled_reminder_jobs_load_and_resolve(self, upgraded):
        """APScheduler unpickles every job the old release stored; each refers to this code's job functions."""
        deps, old = upgraded["deps"], upgraded["old"]
        window = WindowStore(deps.store).get(old["window"]["id"])
        scheduler = jobs.scheduler.WindowScheduler(deps, run_jobs=False).start()
        try:
            loaded = {job.id: job for job in scheduler.scheduler.get_jobs()}
        finally:
            scheduler.stop()
        assert sorted(loaded) == old["jobs"]
        assert set(window.job_ids) <= set(loaded)
        for job_id in window.job_ids:
            assert loaded[job_id].func is jobs.scheduler.fire_reminder
            assert loaded[job_id].args[0] == window.id
        assert loaded[f"watch:{old['run_id']}"].func is jobs.watch.watch_tick
        assert loaded[f"watch-end:{old['run_id']}"].func is jobs.watch.watch_end

    def test_an_interrupted_post_is_found_and_its_claim_holds(self, upgraded):
        """A timeline post the old release left half done is in the in-flight list; nobody can claim it again."""
        deps, old = upgraded["deps"], upgraded["old"]
        window = WindowStore(deps.store).get(old["window"]["id"])
        inflight = InFlight(deps.store, deps.instance_id)
        entry = inflight.entries()[old["inflight_claim"]]
        assert entry["instance"] == "host:1:dead00" and entry["kind"] == "reminder"
        assert not inflight.claim(old["inflight_claim"], 3600, window, "reminder", window.revision, deps.clock())

    def test_the_last_precheck_reads_back(self, upgraded):
        """/migrate check's last result, which the reminders quote, is found."""
        deps, old = upgraded["deps"], upgraded["old"]
        assert PrecheckResults(deps.store).last("prod") == old["check"]
        assert any(item["name"] == "Backup target" and item["ok"] for item in old["check"]["items"])
