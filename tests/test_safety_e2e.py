"""The safety review in front of the approver, over real HTTP: waivers, rehearsal, pre-flight, lint, timeline."""

from __future__ import annotations

import psycopg

from tests.e2e import approve, blocks_text, click, ready_for_approval, run_step, start
from tests.harness import ALICE, BOB, CAROL, PROD_CHANNEL, wait_until

RENAME = "20240401000000_rename_email"


def add_migration(world, name, sql):
    directory = world["migrations"] / name
    directory.mkdir()
    (directory / "migration.sql").write_text(sql)
    return directory / "migration.sql"


def ephemeral_texts(world, user):
    return [e.get("text") or "" for e in world["fake"].ephemerals(user=user)]


def waive(world, ts, user, reason):
    fake = world["fake"]
    click(world, ts, user, "waive")
    view = wait_until(lambda: fake.top_modal(user))
    block = next(b for b in view["blocks"] if b.get("block_id") == "reason")
    action_id = block["element"]["action_id"]
    return world["sender"].submit_view(user, view, {"reason": {action_id: {"type": "plain_text_input",
                                                                             "value": reason}}})


class TestHighFindingGate:
    def test_high_finding_needs_a_waiver_voided_by_an_edit(self, fresh):
        """A rename blocks approval until an approver waives it; editing the file voids the waiver."""
        world = fresh
        store = world["store"]
        sql = add_migration(world, RENAME, 'ALTER TABLE "User" RENAME COLUMN "email" TO "emailAddress";\n')
        run_id, ts = start(world, "pgprod", env="pgprod")
        review = store.get(run_id).facts.review
        assert review is not None and review.high, review
        wait_until(lambda: "high finding(s) block approval" in blocks_text(world, ts))
        ready_for_approval(world, run_id, ts)
        click(world, ts, BOB, "approve")
        wait_until(lambda: any("need a waiver" in t for t in ephemeral_texts(world, BOB)))
        assert store.get(run_id).approvals == []
        before = len(ephemeral_texts(world, ALICE))  # the requester is refused at click time, without the form
        click(world, ts, ALICE, "waive")
        wait_until(lambda: len(ephemeral_texts(world, ALICE)) > before)
        assert "only approvers" in ephemeral_texts(world, ALICE)[-1] and world["fake"].top_modal(ALICE) is None
        world["fake"].dismiss_modals(ALICE)
        waive(world, ts, CAROL, "app v2 reads both column names; dual-write done last week")
        wait_until(lambda: store.get(run_id).facts.waivers)
        assert any(e.action == "finding.waive" and e.actor == CAROL for e in store.audit_entries(run_id))
        sql.write_text(sql.read_text() + "-- edited after the waiver\n")
        click(world, ts, BOB, "approve")
        wait_until(lambda: any("changed since they were reviewed" in t for t in ephemeral_texts(world, BOB)))
        run = store.get(run_id)
        assert run.facts.waivers == {} and run.approvals == []
        assert any(e.action == "waiver.voided" for e in store.audit_entries(run_id))
        waive(world, ts, CAROL, "still fine after the comment-only edit; re-read the SQL")
        wait_until(lambda: store.get(run_id).facts.waivers)
        wait_until(lambda: '"approve"' in blocks_text(world, ts))
        click(world, ts, BOB, "approve")
        wait_until(lambda: store.get(run_id).status.value == "running")


class TestRehearsal:
    def test_failed_rehearsal_blocks_approval(self, fresh):
        """A migration that fails on the restored copy blocks approval; no scratch database is left behind."""
        world = fresh
        store = world["store"]
        add_migration(world, "20240401000000_broken", 'CREATE TABLE "Tmp"(id int);\nSELECT 1/0;\n')
        run_id, ts = start(world, "pgprod", env="pgprod")
        ready_for_approval(world, run_id, ts)
        report = store.get(run_id).facts.rehearsal
        assert report is not None and report.ok is False and "20240401000000_broken" in report.summary
        assert any(m.name == "20240215000000_add_counseling_session" and m.duration_s >= 0
                   for m in report.migrations)
        click(world, ts, BOB, "approve")
        wait_until(lambda: any("rehearsal on the restored backup failed" in t for t in ephemeral_texts(world, BOB)))
        assert store.get(run_id).status.value == "awaiting_approval"
        with psycopg.connect(world["admin"]) as conn:
            left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE '%rehearsal%'").fetchone()[0]
        assert left == 0
        thread = "\n".join(m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts))
        assert "Rehearsal on a restored copy" in thread

    def test_passed_rehearsal_is_staging_evidence(self, fresh):
        """A passed rehearsal confirms "tested in staging" with evidence and a time per migration."""
        world = fresh
        store = world["store"]
        run_id, ts = start(world, "pgprod", env="pgprod")
        for item in ("rollback_plan", "window_scheduled", "team_notified", "script_reviewed"):
            click(world, ts, BOB if item == "script_reviewed" else ALICE, f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)
        click(world, ts, ALICE, "step_run:backup")
        wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=60)
        evidence = store.get(run_id).checklist["staging_tested"]
        assert evidence.by == "bot" and "rehearsal passed: 2/2 applied" in (evidence.evidence or "")


class TestPreflight:
    def test_idle_transaction_holds_then_retry_proceeds(self, fresh):
        """An idle-in-transaction session on "User" holds the migrate step; after it ends, Retry check runs it."""
        world = fresh
        store = world["store"]
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        run_step(world, run_id, ts, "maintenance_on")
        blocker = psycopg.connect(world["db_url"])
        try:
            blocker.execute('SELECT count(*) FROM "User"')  # ACCESS SHARE, then idle in transaction
            import time

            time.sleep(6)
            click(world, ts, ALICE, "step_run:migrate")
            wait_until(lambda: store.get(run_id).facts.hold is not None, timeout=30)
            wait_until(lambda: "Held before" in blocks_text(world, ts))
            run = store.get(run_id)
            assert run.step("migrate").status.value == "pending"
            assert run.facts.hold is not None
            assert f"pid {blocker.info.backend_pid}" in " ".join(run.facts.hold.blockers)
        finally:
            blocker.close()
        click(world, ts, ALICE, "step_run:migrate")
        wait_until(lambda: store.get(run_id).step("migrate").status.value == "succeeded", timeout=60)


class TestLintAndTimeline:
    def test_lint_in_slack(self, fresh):
        """`/migrate lint pgprod` answers with the review of the pending migrations."""
        world = fresh
        add_migration(world, RENAME, 'ALTER TABLE "User" RENAME COLUMN "email" TO "emailAddress";\n')
        before = len(world["fake"].ephemerals(user=ALICE))
        world["sender"].slash(ALICE, "lint pgprod", channel_id=PROD_CHANNEL)
        text = wait_until(lambda: next((e["text"] for e in world["fake"].ephemerals(user=ALICE)[before:]
                                        if "Safety review for pgprod" in e["text"]), None), timeout=30)
        assert "Safety review for pgprod" in text and RENAME in text and "high" in text

    def test_timeline_lists_every_audit_entry_in_order(self, fresh):
        """`/migrate timeline` posts a Markdown file whose audit rows match the audit stream, in order."""
        world = fresh
        store, fake = world["store"], world["fake"]
        run_id, ts = start(world)
        ready_for_approval(world, run_id, ts)
        approve(world, run_id, ts)
        body = world["sender"].slash(ALICE, f"timeline {run_id}", channel_id=PROD_CHANNEL).json()
        assert run_id in body["text"]
        upload = wait_until(lambda: [f for f in fake.files if f.name == f"{run_id}-timeline.md"])[0]
        text = upload.content.decode()
        entries = store.audit_entries(run_id)
        rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
        assert len(rows) == len(entries)
        assert [r.split("|")[4].strip() for r in rows] == [e.action for e in entries]
        cli = world["bot"].cli("timeline", run_id, "--as", ALICE)
        assert cli.returncode == 0 and f"# Post-mortem timeline: {run_id}" in cli.stdout


class TestMaintenanceSkipped:
    def test_skipping_maintenance_needs_a_waiver_before_migrate(self, fresh):
        """Approved without a waiver because maintenance was planned; after skipping it, migrate waits for a waiver."""
        from tests.e2e import migration_rows

        world = fresh
        store = world["store"]
        add_migration(world, RENAME, 'ALTER TABLE "User" RENAME COLUMN "email" TO "emailAddress";\n')
        run_id, ts = start(world)
        review = store.get(run_id).facts.review
        assert review is not None and review.high
        ready_for_approval(world, run_id, ts)
        wait_until(lambda: "accepted because maintenance mode is on" in blocks_text(world, ts))
        approve(world, run_id, ts)  # no waiver needed: maintenance mode is planned
        click(world, ts, ALICE, "step_skip:maintenance_on")
        wait_until(lambda: store.get(run_id).step("maintenance_on").status.value == "skipped")
        wait_until(lambda: "block the migration" in blocks_text(world, ts))
        assert any(e.action == "findings.gate_reopened" for e in store.audit_entries(run_id))
        click(world, ts, ALICE, "step_run:migrate")
        wait_until(lambda: any("it was skipped" in t for t in ephemeral_texts(world, ALICE)), timeout=30)
        assert store.get(run_id).step("migrate").status.value == "pending"
        assert RENAME not in [r[0] for r in migration_rows(world)]
        before = len(ephemeral_texts(world, ALICE))
        click(world, ts, ALICE, "waive")  # the requester: refused at click time, no form opens
        wait_until(lambda: any(t.startswith("🚫") for t in ephemeral_texts(world, ALICE)[before:]))
        assert world["fake"].top_modal(ALICE) is None
        assert not store.get(run_id).facts.waivers
        waive(world, ts, CAROL, "app v2 reads both column names; the window is quiet")
        wait_until(lambda: store.get(run_id).facts.waivers)
        run_step(world, run_id, ts, "migrate")
        assert RENAME in [r[0] for r in migration_rows(world)]


class TestSquawkConfigInSlack:
    def test_review_names_the_repository_squawk_toml(self, fresh):
        """A .squawk.toml next to the migrations is applied to the pending review and named in the thread."""
        world = fresh
        (world["migrations"] / ".squawk.toml").write_text('excluded_rules = ["renaming-column"]\n')
        add_migration(world, RENAME, 'ALTER TABLE "User" RENAME COLUMN "email" TO "emailAddress";\n')
        run_id, ts = start(world, "pgprod", env="pgprod")
        review = world["store"].get(run_id).facts.review
        path = world["migrations"] / ".squawk.toml"
        assert review is not None and f"squawk config: {path} (excluded rules: renaming-column)" in review.summary

        def thread():
            return "\n".join(m.get("text", "") for m in world["fake"].thread(PROD_CHANNEL, ts))

        wait_until(lambda: f"squawk config: {path}" in thread())
