"""The pure runbook rules: checklist, two-person approval, steps and interruptions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.errors import AlreadyDone, NotAllowed, SelfApproval, WrongState
from bot.runbook.rules import (
    CHECKLIST_KEYS,
    BackupResult,
    DeployResult,
    DownSql,
    Finding,
    FindingDetail,
    MaintenanceOnResult,
    MigrateResult,
    PendingMigration,
    Policy,
    Review,
    RollbackStatus,
    RunFacts,
    RunStatus,
    StepResult,
    StepStatus,
    approve,
    begin_step,
    cancel,
    confirm_item,
    fail_step,
    finish_step,
    hold_step,
    interrupt_step,
    new_run,
    resolve_interrupted,
    result_of,
    skip_step,
    waive,
)

NOW = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
POLICY = Policy(frozenset({"UREQ"}), frozenset({"UAPP", "UAPP2", "S0DBA"}), 1)
FP = "f" * 64  # the checksums of the pending migrations an approval binds to


def fresh(**kw):
    return new_run(run_id="prod-1", env="prod", requested_by="UREQ", channel="C1", now=NOW,
                   approvals_required=kw.get("approvals", 1),
                   steps_enabled=kw.get("steps", {"maintenance_on": True, "maintenance_off": True, "seed": False}),
                   facts=kw.get("facts")).run


def ready(**kw):
    """All manual items ticked and the backup taken (its evidence ticks the sixth item)."""
    run = fresh(**kw)
    for key in CHECKLIST_KEYS:
        if key != "backup_verified":  # the review is ticked by someone other than the requester
            run = confirm_item(run, item=key, user="UAPP" if key == "script_reviewed" else "UREQ", now=NOW).run
    run = begin_step(run, name="backup", user="UREQ", owner="p1", now=NOW).run
    return finish_step(run, name="backup", result=BackupResult(), now=NOW,
                       summary="pg_dump 1 MB, restore-verified").run


class TestChecklist:
    def test_last_item_opens_approval(self):
        """Ticking all six items moves the run to awaiting approval."""
        run = ready()
        assert run.status is RunStatus.AWAITING_APPROVAL
        assert set(run.checklist) == set(CHECKLIST_KEYS)

    def test_backup_item_needs_evidence(self):
        """The backup item cannot be ticked by hand; the backup step's evidence ticks it."""
        with pytest.raises(WrongState, match="evidence"):
            confirm_item(fresh(), item="backup_verified", user="UREQ", now=NOW)
        run = ready()
        assert run.checklist["backup_verified"].evidence == "pg_dump 1 MB, restore-verified"

    def test_backup_failure_before_approval_keeps_run_open(self):
        """A failed backup during the checklist leaves the run collecting, ready for a retry."""
        run = begin_step(fresh(), name="backup", user="UREQ", owner="p1", now=NOW).run
        run = fail_step(run, name="backup", error="bucket not versioned", now=NOW).run
        assert run.status is RunStatus.COLLECTING
        run = begin_step(run, name="backup", user="UREQ", owner="p1", now=NOW).run
        assert run.step("backup").attempt == 2

    def test_double_tick_is_refused(self):
        """A second click on the same item changes nothing."""
        run = confirm_item(fresh(), item="staging_tested", user="UREQ", now=NOW).run
        with pytest.raises(AlreadyDone):
            confirm_item(run, item="staging_tested", user="UAPP", now=NOW)


class TestApproval:
    def test_requester_cannot_approve(self):
        """The two-person rule refuses the requester's own approval."""
        with pytest.raises(SelfApproval):
            approve(ready(), user="UREQ", policy=POLICY, groups=(), now=NOW, fingerprint=FP)

    def test_outsider_cannot_approve(self):
        """Someone not on the approver list is refused."""
        with pytest.raises(NotAllowed):
            approve(ready(), user="UOUT", policy=POLICY, groups=(), now=NOW, fingerprint=FP)

    def test_group_member_can_approve(self):
        """Membership of an approver user group counts."""
        run = approve(ready(), user="UOUT", policy=POLICY, groups=("S0DBA",), now=NOW, fingerprint=FP).run
        assert run.status is RunStatus.RUNNING

    def test_approval_needs_checklist(self):
        """Approval is refused while checklist items are open, naming them."""
        with pytest.raises(WrongState, match="Rollback plan"):
            approve(fresh(), user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=FP)

    def test_one_person_counts_once(self):
        """With two approvals required, the same approver cannot count twice."""
        run = approve(ready(approvals=2), user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=FP).run
        assert run.status is RunStatus.AWAITING_APPROVAL
        with pytest.raises(AlreadyDone):
            approve(run, user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=FP)
        run = approve(run, user="UAPP2", policy=POLICY, groups=(), now=NOW, fingerprint=FP).run
        assert run.status is RunStatus.RUNNING


    def test_approval_without_a_fingerprint_is_refused(self):
        """Fails closed: unreadable migrations give no fingerprint, and no fingerprint gives no approval."""
        run = ready()
        for missing in (None, ""):
            with pytest.raises(WrongState, match="could not be read"):
                approve(run, user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=missing)
        assert run.approvals == [] and run.status is RunStatus.AWAITING_APPROVAL

    def test_second_approval_binds_to_the_same_migrations(self):
        """With two approvals required, the second must approve the same checksums as the first."""
        run = approve(ready(approvals=2), user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=FP).run
        with pytest.raises(WrongState, match="changed since the first approval"):
            approve(run, user="UAPP2", policy=POLICY, groups=(), now=NOW, fingerprint="e" * 64)


class TestSteps:
    def approved(self, **kw):
        return approve(ready(**kw), user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=FP).run

    def test_only_next_step_runs_once(self):
        """A step can be claimed once; a second claim and an out-of-order claim are refused."""
        run = begin_step(self.approved(), name="maintenance_on", user="UAPP", owner="p1", now=NOW).run
        with pytest.raises(AlreadyDone):
            begin_step(run, name="maintenance_on", user="UAPP", owner="p2", now=NOW)
        with pytest.raises(AlreadyDone):
            begin_step(run, name="backup", user="UAPP", owner="p2", now=NOW)
        with pytest.raises(WrongState):
            begin_step(run, name="migrate", user="UAPP", owner="p2", now=NOW)

    def test_all_steps_lead_to_monitoring(self):
        """Finishing or skipping every step moves the run to monitoring."""
        run = self.approved()
        for step in list(run.steps):
            if step.name == "backup":
                continue
            if step.name == "maintenance_on":
                run = skip_step(run, name=step.name, user="UAPP", now=NOW).run
                continue
            run = begin_step(run, name=step.name, user="UAPP", owner="p1", now=NOW).run
            run = finish_step(run, name=step.name, result=StepResult(), now=NOW).run
        assert run.status is RunStatus.MONITORING

    def test_required_step_cannot_be_skipped(self):
        """Applying the migrations is never skippable."""
        run = self.approved(steps={"maintenance_on": False, "maintenance_off": False})
        with pytest.raises(NotAllowed):
            skip_step(run, name="migrate", user="UAPP", now=NOW)

    def test_failure_stops_the_run(self):
        """A failed step after approval fails the run and records why."""
        run = begin_step(self.approved(), name="maintenance_on", user="UAPP", owner="p1", now=NOW).run
        run = fail_step(run, name="maintenance_on", error="disk full", now=NOW).run
        assert run.status is RunStatus.FAILED and "disk full" in (run.failure or "")

    def test_interrupted_step_waits_for_a_human(self):
        """An interrupted step is not pending; a human marks it done or resets it."""
        run = begin_step(self.approved(), name="maintenance_on", user="UAPP", owner="p1", now=NOW).run
        run = interrupt_step(run, name="maintenance_on", now=NOW, why="owner died").run
        assert run.step("maintenance_on").status is StepStatus.INTERRUPTED
        with pytest.raises(WrongState):
            begin_step(run, name="migrate", user="UAPP", owner="p2", now=NOW)
        done = resolve_interrupted(run, name="maintenance_on", user="UAPP", now=NOW, done=True).run
        assert done.step("maintenance_on").status is StepStatus.SUCCEEDED
        again = resolve_interrupted(run, name="maintenance_on", user="UAPP", now=NOW, done=False).run
        assert again.step("maintenance_on").status is StepStatus.PENDING

    def test_cannot_cancel_while_step_runs(self):
        """Cancel is refused while a step is changing things."""
        run = begin_step(self.approved(), name="maintenance_on", user="UAPP", owner="p1", now=NOW).run
        with pytest.raises(WrongState):
            cancel(run, user="UREQ", now=NOW)


class TestMaintenanceGate:
    HIGH = Finding(key="m1#0:rename_column", migration="m1", checksum="c1", message="renames a column")

    def approved_with_a_high_finding(self):
        run = ready()
        run.facts.review = Review(summary="1 high", high=[self.HIGH])
        return approve(run, user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=FP).run

    def test_skipping_maintenance_reopens_the_gate_until_an_approver_waives(self):
        """Approved without a waiver because maintenance was planned; skipping it blocks migrate until a waiver."""
        run = self.approved_with_a_high_finding()
        assert run.status is RunStatus.RUNNING and not run.facts.waivers
        skipped = skip_step(run, name="maintenance_on", user="UREQ", now=NOW)
        run = skipped.run
        assert "findings.gate_reopened" in [e.action for e in skipped.events]
        with pytest.raises(WrongState, match="maintenance mode was planned, and it was skipped"):
            begin_step(run, name="migrate", user="UREQ", owner="p1", now=NOW)
        with pytest.raises(SelfApproval):
            waive(run, user="UREQ", policy=POLICY, groups=(), reason="the app reads both names", now=NOW)
        with pytest.raises(NotAllowed):
            waive(run, user="UOUT", policy=POLICY, groups=(), reason="the app reads both names", now=NOW)
        run = waive(run, user="UAPP2", policy=POLICY, groups=(), reason="the app reads both names", now=NOW).run
        run = begin_step(run, name="migrate", user="UREQ", owner="p1", now=NOW).run
        assert run.step("migrate").status is StepStatus.RUNNING

    def test_maintenance_that_runs_keeps_the_gate_open(self):
        """With maintenance mode on, migrate runs without a waiver, as approved."""
        run = self.approved_with_a_high_finding()
        run = begin_step(run, name="maintenance_on", user="UREQ", owner="p1", now=NOW).run
        run = finish_step(run, name="maintenance_on", result=MaintenanceOnResult(), now=NOW).run
        run = begin_step(run, name="migrate", user="UREQ", owner="p1", now=NOW).run
        assert run.step("migrate").status is StepStatus.RUNNING


class TestRevertNeedsASecondPerson:
    def monitoring_with_down(self):
        run = approve(ready(steps={"maintenance_on": False, "maintenance_off": False, "seed": False}),
                      user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=FP).run
        for name in ("migrate", "deploy", "smoke"):
            run = begin_step(run, name=name, user="UREQ", owner="p1", now=NOW).run
            result = MigrateResult(applied=["m1"], with_down=True) if name == "migrate" else StepResult()
            run = finish_step(run, name=name, result=result, now=NOW).run
        assert run.status is RunStatus.MONITORING
        return run

    def test_down_sql_waits_for_a_second_approver_of_exactly_what_was_shown(self):
        """Option 1 with down.sql: no step until another approver confirms the same down.sql fingerprint."""
        from bot.runbook.rules import RollbackOption, approve_rollback, request_rollback

        run = self.monitoring_with_down()
        down = [DownSql(name="m1", checksum="d1")]
        with pytest.raises(WrongState):  # nothing shown, nothing to approve
            request_rollback(run, option=RollbackOption.REVERT, user="UREQ", reason="", now=NOW, ecs=False,
                             policy=POLICY, groups=())
        run = request_rollback(run, option=RollbackOption.REVERT, user="UREQ", reason="", now=NOW, ecs=False,
                               policy=POLICY, groups=(), down=down, down_fingerprint=FP).run
        assert run.rollback is not None and run.rollback.status is RollbackStatus.AWAITING_SECOND_APPROVAL
        assert run.status is RunStatus.MONITORING
        assert not [s for s in run.steps if s.phase == "rollback"]
        with pytest.raises(SelfApproval):
            approve_rollback(run, user="UREQ", policy=POLICY, groups=(), now=NOW, ecs=False, down_fingerprint=FP)
        with pytest.raises(NotAllowed):
            approve_rollback(run, user="UOUT", policy=POLICY, groups=(), now=NOW, ecs=False, down_fingerprint=FP)
        with pytest.raises(WrongState, match="changed since they were shown"):
            approve_rollback(run, user="UAPP", policy=POLICY, groups=(), now=NOW, ecs=False, down_fingerprint="e")
        run = approve_rollback(run, user="UAPP", policy=POLICY, groups=(), now=NOW, ecs=False,
                               down_fingerprint=FP).run
        assert run.status is RunStatus.ROLLING_BACK
        assert [s.name for s in run.steps if s.phase == "rollback"] == ["rb_apply_down"]


class TestStagingEvidence:
    def test_only_the_same_checksums_are_evidence(self):
        """A staging database that ran another version of a same-named migration is not evidence."""
        from bot.runbook.rules import not_tested_in_staging, record_staging_evidence

        run = fresh()
        run.facts.pending = [PendingMigration(name="m1", checksum="aa"), PendingMigration(name="m2", checksum="bb")]
        assert not_tested_in_staging(run.facts.pending, [("m1", "aa"), ("m2", "cc")]) == ["m2"]
        with pytest.raises(WrongState):
            record_staging_evidence(run, staging_env="staging", finished=[("m1", "aa"), ("m2", "cc")], now=NOW)
        done = record_staging_evidence(run, staging_env="staging", finished=[("m1", "AA"), ("m2", "bb")], now=NOW)
        assert "same checksums" in (done.run.checklist["staging_tested"].evidence or "")


class TestClosingAFailedRun:
    def test_other_requesters_close_only_their_own_failed_run(self):
        """Another listed requester may cancel a fresh run, but a failed one only its requester or an approver."""
        from bot.runbook.rules import may_cancel_run

        policy = Policy(frozenset({"UREQ", "UREQ2"}), frozenset({"UAPP"}), 1)
        run = fresh()
        assert may_cancel_run(run, user="UREQ2", policy=policy, groups=())
        failed = run.model_copy(update={"status": RunStatus.FAILED})
        assert not may_cancel_run(failed, user="UREQ2", policy=policy, groups=())
        assert not may_cancel_run(failed, user="UOUT", policy=policy, groups=())
        assert may_cancel_run(failed, user="UREQ", policy=policy, groups=())
        assert may_cancel_run(failed, user="UAPP", policy=policy, groups=())


class TestNoDeadEnds:
    """Every failure has a way out, and every way out ends with maintenance mode off (issue 13)."""

    def approved(self, **kw):
        return approve(ready(**kw), user="UAPP", policy=POLICY, groups=(), now=NOW, fingerprint=FP).run

    def run_through(self, run, *names, result=None):
        for name in names:
            run = begin_step(run, name=name, user="UREQ", owner="p1", now=NOW).run
            run = finish_step(run, name=name, result=result or StepResult(), now=NOW).run
        return run

    def test_the_requester_cannot_tick_the_review_for_herself(self):
        """"Reviewed by at least one other developer" is ticked by someone else."""
        with pytest.raises(SelfApproval):
            confirm_item(fresh(), item="script_reviewed", user="UREQ", now=NOW)
        done = confirm_item(fresh(), item="script_reviewed", user="UAPP", now=NOW).run
        assert done.checklist["script_reviewed"].by == "UAPP"

    def test_abort_after_maintenance_on_turns_it_off_and_cancels(self):
        """Maintenance on, nothing migrated: abort is offered, plain cancel is not; it ends cancelled, site checked."""
        from bot.runbook.rules import RollbackOption, may_cancel_now, request_rollback, rollback_options

        run = self.run_through(self.approved(), "maintenance_on")
        assert rollback_options(run) == [RollbackOption.ABORT]
        assert not may_cancel_now(run)
        with pytest.raises(WrongState, match="Maintenance mode is on"):
            cancel(run, user="UREQ", now=NOW)
        run = request_rollback(run, option=RollbackOption.ABORT, user="UREQ", reason="", now=NOW, ecs=False,
                               policy=POLICY, groups=(), smoke=True).run
        assert [s.name for s in run.steps if s.phase == "rollback"] == ["rb_maintenance_off", "rb_smoke"]
        run = self.run_through(run, "rb_maintenance_off", "rb_smoke")
        assert run.status is RunStatus.CANCELLED and run.is_terminal and run.cancelled_by == "UREQ"

    def test_every_rollback_option_ends_with_maintenance_off_and_smoke(self):
        """After a failed smoke test with maintenance on, each option's steps end with maintenance off, smoke."""
        from bot.runbook.rules import RollbackOption, request_rollback, rollback_options

        run = self.run_through(self.approved(), "maintenance_on")
        run = self.run_through(run, "migrate", result=MigrateResult(applied=["m1"], with_down=True))
        run = self.run_through(run, "deploy", result=DeployResult(previous_task_definition="td:1"))
        run = begin_step(run, name="smoke", user="UREQ", owner="p1", now=NOW).run
        run = fail_step(run, name="smoke", error="counsel: 500", now=NOW).run
        options = rollback_options(run)
        assert options == [RollbackOption.REVERT, RollbackOption.RESTORE, RollbackOption.PREVIOUS]
        for option in options:
            chosen = request_rollback(run, option=option, user="UREQ", reason="smoke failed", now=NOW, ecs=True,
                                      policy=POLICY, groups=(), smoke=True,
                                      down=[DownSql(name="m1", checksum="d")], down_fingerprint=FP).run
            if chosen.status is not RunStatus.ROLLING_BACK:  # a second person confirms a restore or a down.sql
                from bot.runbook.rules import approve_rollback
                chosen = approve_rollback(chosen, user="UAPP", policy=POLICY, groups=(), now=NOW, ecs=True,
                                          smoke=True, down_fingerprint=FP).run
            names = [s.name for s in chosen.steps if s.phase == "rollback"]
            assert names[-2:] == ["rb_maintenance_off", "rb_smoke"], option
            done = self.run_through(chosen, *names)
            assert done.status is RunStatus.ROLLED_BACK

    def test_a_failed_smoke_test_can_be_retried(self):
        """Retry of a failed idempotent step resumes the run; the second try succeeding leads on."""
        from bot.runbook.rules import may_retry

        run = self.run_through(self.approved(), "maintenance_on", "migrate", "deploy")
        run = begin_step(run, name="smoke", user="UREQ", owner="p1", now=NOW).run
        run = fail_step(run, name="smoke", error="timeout", now=NOW).run
        assert run.status is RunStatus.FAILED and may_retry(run, "smoke")
        run = begin_step(run, name="smoke", user="UREQ", owner="p1", now=NOW).run
        assert run.status is RunStatus.RUNNING and run.failure is None and run.step("smoke").attempt == 2
        run = finish_step(run, name="smoke", result=StepResult(), now=NOW).run
        run = self.run_through(run, "maintenance_off")
        assert run.status is RunStatus.MONITORING

    def test_a_failed_migration_is_not_retried_blindly(self):
        """migrate is not idempotent: after its failure the way on is Option 1 or 2, never Retry."""
        from bot.runbook.rules import may_retry

        run = self.run_through(self.approved(), "maintenance_on")
        run = begin_step(run, name="migrate", user="UREQ", owner="p1", now=NOW).run
        run = fail_step(run, name="migrate", error="P3018", now=NOW).run
        assert not may_retry(run, "migrate")
        with pytest.raises(WrongState):
            begin_step(run, name="migrate", user="UREQ", owner="p1", now=NOW)

    def test_a_failed_optional_step_can_be_skipped(self):
        """A failed seed may be skipped (audited); the run goes on."""
        run = self.run_through(self.approved(steps={"maintenance_on": True, "maintenance_off": True, "seed": True}),
                               "maintenance_on", "migrate")
        run = begin_step(run, name="seed", user="UREQ", owner="p1", now=NOW).run
        run = fail_step(run, name="seed", error="duplicate key", now=NOW).run
        run = skip_step(run, name="seed", user="UREQ", now=NOW).run
        assert run.status is RunStatus.RUNNING and run.step("seed").status is StepStatus.SKIPPED

    def test_maintenance_off_that_fails_keeps_the_run_open_until_someone_checks(self):
        """If turning maintenance off fails the run is not closed; a human may check by hand and say so."""
        from bot.runbook.rules import RollbackOption, maintenance_may_be_on, request_rollback

        run = self.run_through(self.approved(), "maintenance_on")
        run = request_rollback(run, option=RollbackOption.ABORT, user="UREQ", reason="", now=NOW, ecs=False,
                               policy=POLICY, groups=(), smoke=False).run
        run = begin_step(run, name="rb_maintenance_off", user="UREQ", owner="p1", now=NOW).run
        run = fail_step(run, name="rb_maintenance_off", error="webhook 502", now=NOW).run
        assert run.status is RunStatus.ROLLING_BACK and maintenance_may_be_on(run) and not run.is_terminal
        run = resolve_interrupted(run, name="rb_maintenance_off", user="UAPP", now=NOW, done=True).run
        assert run.status is RunStatus.CANCELLED and not maintenance_may_be_on(run)


class TestRehearsalWayOut:
    def test_a_rehearsal_whose_process_died_can_be_run_again(self):
        """The backup claims the rehearsal for its process; if that process dies it is given up, then redone."""
        from bot.runbook.rules import Rehearsal as RehearsalFact
        from bot.runbook.rules import abandon_rehearsal, begin_rehearsal, may_rehearse, record_rehearsal

        run = fresh(facts=RunFacts(rehearsal_expected=True))
        run = begin_step(run, name="backup", user="UREQ", owner="p1", now=NOW).run
        run = finish_step(run, name="backup", result=BackupResult(), now=NOW).run
        assert run.facts.rehearsing is not None and run.facts.rehearsing.owner == "p1" and not may_rehearse(run)
        assert begin_rehearsal(run, user="bot", owner="p1", now=NOW).run.facts.rehearsing is not None  # its own
        with pytest.raises(AlreadyDone):
            begin_rehearsal(run, user="UREQ", owner="p2", now=NOW)
        with pytest.raises(AlreadyDone):
            abandon_rehearsal(run, owner="p2", now=NOW)
        run = abandon_rehearsal(run, owner="p1", now=NOW).run
        assert run.facts.rehearsing is None and may_rehearse(run)
        run = begin_rehearsal(run, user="UREQ", owner="p2", now=NOW).run
        run = record_rehearsal(run, report=RehearsalFact(ok=True, summary="1/1 applied"), now=NOW).run
        assert run.facts.rehearsing is None and not may_rehearse(run)

    def test_a_rehearsal_that_could_not_run_may_be_redone_but_a_failed_one_may_not(self):
        from bot.runbook.rules import Rehearsal as RehearsalFact
        from bot.runbook.rules import RehearsedMigration, may_rehearse, record_rehearsal

        run = ready(facts=RunFacts(rehearsal_expected=True))
        run.facts.rehearsing = None
        could_not = record_rehearsal(run, report=RehearsalFact(ok=False, summary="could not run"), now=NOW).run
        assert may_rehearse(could_not)
        failed = record_rehearsal(run, report=RehearsalFact(
            ok=False, summary="1 failed", migrations=[RehearsedMigration(name="m1", ok=False)]), now=NOW).run
        assert not may_rehearse(failed)


class TestBookkeeping:
    """Transitions the engine, the watch, the heartbeat and the store apply besides the buttons."""

    def running(self, name="maintenance_on", owner="p1"):
        return begin_step(TestSteps().approved(), name=name, user="UAPP", owner=owner, now=NOW).run

    def test_a_step_remembers_facts_before_it_acts(self):
        """Remembered values join what the running step recorded, and a second call adds to the first."""
        from bot.runbook.rules import ScaleDownResult, remember_on_step

        run = self.running()
        once = remember_on_step(run, name="maintenance_on",
                                values=MaintenanceOnResult(previous_task_definition="td:1"))
        twice = remember_on_step(once.run, name="maintenance_on",
                                 values=MaintenanceOnResult(method="ecs_task_definition"))
        result = result_of(twice.run, MaintenanceOnResult)
        assert (result.previous_task_definition, result.method) == ("td:1", "ecs_task_definition")
        assert twice.events == [] and twice.run.version == run.version
        assert json.loads(twice.run.model_dump_json())["steps"][1]["result"] == {
            "previous_task_definition": "td:1", "method": "ecs_task_definition"}
        assert result_of(twice.run, ScaleDownResult) == ScaleDownResult()  # not in this run: empty

    def test_changed_migrations_void_the_approvals_and_put_the_step_back(self):
        """The step that found the approved migrations changed goes back to pending, unclaimed; approvals are void."""
        from bot.runbook.rules import void_approvals_for_step

        voided = void_approvals_for_step(self.running(), name="maintenance_on", reason="m2 changed", now=NOW)
        step = voided.run.step("maintenance_on")
        assert voided.run.status is RunStatus.AWAITING_APPROVAL and voided.run.approvals == []
        assert (step.status, step.owner, step.progress) == (StepStatus.PENDING, None, None)
        assert [e.action for e in voided.events] == ["run.approval_voided"]

    def test_a_step_of_a_dead_process_is_interrupted_once(self):
        """Only the step still running under the dead owner is marked interrupted."""
        from bot.runbook.rules import interrupt_abandoned

        run = self.running(owner="p1")
        with pytest.raises(AlreadyDone):
            interrupt_abandoned(run, name="maintenance_on", owner="p2", now=NOW, why="p2 stopped")
        run = interrupt_abandoned(run, name="maintenance_on", owner="p1", now=NOW, why="p1 stopped").run
        assert run.step("maintenance_on").status is StepStatus.INTERRUPTED
        with pytest.raises(AlreadyDone):
            interrupt_abandoned(run, name="maintenance_on", owner="p1", now=NOW, why="p1 stopped")

    def test_only_a_monitored_run_is_closed(self):
        """"Looks good" closes a run being monitored as succeeded, and nothing else."""
        from bot.runbook.rules import close_monitored

        with pytest.raises(AlreadyDone, match="not monitoring"):
            close_monitored(self.running(), user="UAPP", now=NOW)
        run = TestRevertNeedsASecondPerson().monitoring_with_down()
        closed = close_monitored(run, user="UAPP", now=NOW)
        assert closed.run.status is RunStatus.SUCCEEDED and closed.run.is_terminal
        assert [(e.action, e.detail) for e in closed.events] == [("run.succeeded", "looks good; run closed")]

    def test_readings_off_their_threshold_are_audited_as_a_warning(self):
        """The latest readings replace the previous ones; a warn or alert reading makes the audit entry a warning."""
        from bot.runbook.rules import Monitoring, Reading, record_readings

        run = TestRevertNeedsASecondPerson().monitoring_with_down()
        calm = record_readings(run, summary=Monitoring(taken_at=NOW.isoformat(), checks=[
            Reading(name="Error rate", value="0.1%", status="ok")]), now=NOW)
        assert (calm.events[0].outcome, calm.events[0].detail) == ("ok", "1 of 1 readings available; all within thresholds")
        loud = record_readings(calm.run, summary=Monitoring(taken_at=NOW.isoformat(), checks=[
            Reading(name="Error rate", value="7%", status="alert"), Reading(name="CPU", value="20%", status="ok")]),
            now=NOW)
        assert (loud.events[0].outcome, loud.events[0].detail) == (
            "warn", "over threshold: Error rate 7%; 2 of 2 readings available")
        assert loud.run.facts.monitoring is not None and len(loud.run.facts.monitoring.checks) == 2
        assert loud.run.version == run.version + 2

    def test_the_first_status_message_wins(self):
        """A run gets one status message: a second writer is refused."""
        from bot.runbook.rules import record_message

        posted = record_message(fresh(), channel="C2", ts="1.000100").run
        assert (posted.channel, posted.message_ts) == ("C2", "1.000100")
        with pytest.raises(AlreadyDone):
            record_message(posted, channel="C3", ts="2.000200")


class TestStoredDocuments:
    """Run documents already in Redis load, and are written back exactly as they were read."""

    # Written by the model of 9c45e04 (facts, rollback and step results as plain dicts), through its transitions:
    # every facts key (a rehearsal, waivers, readings, a hold and its override), a down.sql rollback, and a
    # restore from backup with the results of its sub-steps.
    DOCUMENTS = sorted((Path(__file__).parent / "data" / "runs").glob("*.json"))

    @pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.stem)
    def test_a_run_written_before_round_trips_to_the_same_json(self, path):
        """Loading a stored run and writing it back changes no key and no value."""
        from bot.runbook.rules import Run

        stored = json.loads(path.read_text())
        run = Run.model_validate_json(path.read_text())
        assert json.loads(run.model_dump_json()) == stored
        assert json.loads(Run.model_validate_json(run.model_dump_json()).model_dump_json()) == stored

    def test_unknown_keys_are_kept(self):
        """Keys this version does not know (written by an older or newer one) are written back as they were."""
        from bot.runbook.rules import Run

        stored = json.loads((Path(__file__).parent / "data" / "runs" / "rolling_back_held.json").read_text())
        stored["facts"]["future_fact"] = {"any": ["shape"]}
        stored["facts"]["review"]["high"][0]["severity_v2"] = 3
        stored["rollback"]["ticket"] = "INC-42"
        stored["steps"][3]["result"]["region"] = "eu-west-1"
        run = Run.model_validate(stored)
        assert result_of(run, DeployResult).previous_task_definition == "arn:aws:ecs:eu-west-1:1:task-definition/api:1"
        assert json.loads(run.model_dump_json()) == stored

    def test_removed_facts_leave_no_key_behind(self):
        """A fact that is cleared (the hold once its step starts again) is absent from the document, not null."""
        run = begin_step(TestSteps().approved(), name="maintenance_on", user="UAPP", owner="p1", now=NOW).run
        run = hold_step(run, name="maintenance_on", now=NOW, reason="a blocker", blockers=["pid 1"]).run
        assert json.loads(run.model_dump_json())["facts"]["hold"] == {"step": "maintenance_on", "reason": "a blocker",
                                                                     "blockers": ["pid 1"]}
        run = begin_step(run, name="maintenance_on", user="UAPP", owner="p1", now=NOW).run
        assert run.facts.hold is None and "hold" not in json.loads(run.model_dump_json())["facts"]

    def test_the_same_history_writes_the_same_document(self):
        """Replaying the stored run's history through today's transitions writes exactly the stored document."""
        stored = json.loads((Path(__file__).parent / "data" / "runs" / "rolling_back_held.json").read_text())
        assert json.loads(_replay_rolling_back_held().model_dump_json()) == stored


def _replay_rolling_back_held():
    """The history of tests/data/runs/rolling_back_held.json, one transition per second from 07:00:00."""
    from datetime import timedelta

    from bot.runbook.rules import (
        Monitoring,
        Reading,
        Rehearsal,
        RehearsedMigration,
        RollbackOption,
        SmokeCheckResult,
        SmokeTestsResult,
        approve_rollback,
        override_hold,
        record_inspection,
        record_readings,
        record_rehearsal,
        request_rollback,
    )

    seconds = iter(range(1000))

    def now():
        return NOW + timedelta(seconds=next(seconds))

    policy = Policy(frozenset({"UREQ"}), frozenset({"UAPP", "UAPP2"}), 1)
    add_col, rename = "20261201000000_add_col", "20261201000001_rename"
    task = "arn:aws:ecs:eu-west-1:1:task-definition/api:"
    run = new_run(run_id="prod-20261202-070000-ab12", env="prod", requested_by="UREQ", channel="C1", now=now(),
                  approvals_required=1, steps_enabled={"seed": False}, image_tag="v42",
                  facts=RunFacts(rehearsal_expected=True)).run
    for key in CHECKLIST_KEYS:
        if key not in ("backup_verified", "staging_tested"):
            run = confirm_item(run, item=key, user="UAPP" if key == "script_reviewed" else "UREQ", now=now(),
                               evidence=None).run
    pending = [PendingMigration(name=add_col, checksum="a" * 64), PendingMigration(name=rename, checksum="b" * 64)]
    finding = dict(message="renames a column", why="old code reads the old name", alternative="add, backfill, switch",
                   category="breaking")
    review = Review(summary="2 migrations: 1 high", lines={add_col: "1 statement, low", rename: "1 statement, high"},
                    high=[Finding(key=f"{rename}#0:rename_column", migration=rename, checksum="b" * 64, **finding)],
                    details=[FindingDetail(migration=rename, level="high", **finding)])
    run = record_inspection(run, pending=pending, review=review, now=now()).run
    run = begin_step(run, name="backup", user="UREQ", owner="host-1", now=now()).run
    summary = "pg_dump 1.2 MB, sha256 cccccccc…, 7 migrations, 12 tables, restore-verified"
    evidence = BackupResult(
        method="pg_dump", identifier="pre-migration-prod-20261202.dump",
        location="s3://backups/prod/pre-migration-prod-20261202.dump?versionId=v1", size_bytes=1234567,
        sha256="c" * 64, s3_version_id="v1", live_prisma_migrations=7, live_table_count=12,
        restored_prisma_migrations=7, restored_table_count=12, toc_entries=40, verified=True, reused=False,
        took_s=3.25, notes=["restore verified"])
    run = finish_step(run, name="backup", result=evidence, now=now(), summary=summary).run
    report = Rehearsal(
        ok=True, migrations=[
            RehearsedMigration(name=add_col, duration_s=0.12, ok=True, error=None,
                               locks={"User": "AccessExclusiveLock"}, waits=["Lock:relation"]),
            RehearsedMigration(name=rename, duration_s=0.05, ok=True, error=None, locks={}, waits=[])],
        took_s=4.5, scratch_database="rehearsal_prod_x", pending=[add_col, rename], error=None,
        notes=["dropped scratch"], summary="2/2 applied on a restored copy in 4.5 s (slowest: add_col 0.1 s)")
    run = record_rehearsal(run, report=report, now=now()).run
    run = approve(run, user="UAPP", policy=policy, groups=(), now=now(), fingerprint="f" * 64).run
    run = skip_step(run, name="maintenance_on", user="UREQ", now=now()).run
    run = waive(run, user="UAPP2", policy=policy, groups=(), reason="the app reads both names since v41", now=now()).run
    run = begin_step(run, name="migrate", user="UREQ", owner="host-1", now=now()).run
    run = hold_step(run, name="migrate", now=now(), reason="1 session holds a lock on User",
                    blockers=["pid 4242 (idle in transaction 300 s) on User"]).run
    run = override_hold(run, user="UAPP", policy=policy, groups=(), now=now()).run
    run = begin_step(run, name="migrate", user="UAPP", owner="host-2", now=now()).run
    run = interrupt_step(run, name="migrate", now=now(), why="the bot process running it stopped").run
    run = resolve_interrupted(run, name="migrate", user="UAPP", now=now(), done=False).run
    run = begin_step(run, name="migrate", user="UAPP", owner="host-2", now=now()).run
    run = finish_step(run, name="migrate", now=now(), summary="applied 2 · Database schema is up to date!",
                      result=MigrateResult(applied=[add_col, rename], with_down=True,
                                           durations_s={add_col: 0.101, rename: 0.044})).run
    run = begin_step(run, name="deploy", user="UREQ", owner="host-1", now=now()).run
    run = finish_step(run, name="deploy", now=now(), summary="api stable on api:2 (2/2 running)",
                      result=DeployResult(previous_task_definition=task + "1", task_definition=task + "2",
                                          desired_count=2)).run
    run = begin_step(run, name="smoke", user="UREQ", owner="host-1", now=now()).run
    run = finish_step(run, name="smoke", now=now(), summary="2/2 passed", result=SmokeTestsResult(checks=[
        SmokeCheckResult(name="health", ok=True, status=200, latency_ms=12.3, error=None),
        SmokeCheckResult(name="login", ok=True, status=None, latency_ms=40.0, error=None)])).run
    run = begin_step(run, name="maintenance_off", user="UREQ", owner="host-1", now=now()).run
    run = interrupt_step(run, name="maintenance_off", now=now(), why="the bot process running it stopped").run
    run = resolve_interrupted(run, name="maintenance_off", user="UAPP", now=now(), done=True).run
    readings = Monitoring(
        taken_at=now().isoformat(),
        checks=[Reading(name="Error rate", value="0.10%", threshold="< 1%", status="ok", icon="✅", message=""),
                Reading(name="p95 latency", value="900 ms", threshold="< 800 ms", status="warn", icon="⚠️",
                        message="p95 above threshold")],
        log_lines=["ERROR something happened"], unavailable={"cpu": "no ECS cluster/service configured"})
    run = record_readings(run, summary=readings, now=now()).run
    down_review = Review(summary="1 migration: 1 medium", lines={f"{rename}/down.sql": "1 statement"}, high=[],
                         details=[FindingDetail(migration=f"{rename}/down.sql", level="medium", message="renames back",
                                                why="w", alternative="a", category="locking")])
    run = request_rollback(run, option=RollbackOption.REVERT, user="UREQ", reason="error rate above 5%", now=now(),
                           ecs=True, policy=policy, groups=(),
                           down=[DownSql(name=rename, checksum="d" * 64), DownSql(name=add_col, checksum="e" * 64)],
                           down_fingerprint="9" * 64, down_review=down_review).run
    run = approve_rollback(run, user="UAPP", policy=policy, groups=(), now=now(), ecs=True,
                           down_fingerprint="9" * 64).run
    run = begin_step(run, name="rb_apply_down", user="UAPP", owner="host-1", now=now()).run
    run = hold_step(run, name="rb_apply_down", now=now(), reason="1 session holds a lock on User",
                    blockers=["pid 4343 (active 90 s) on User"]).run
    return override_hold(run, user="UREQ", policy=policy, groups=(), now=now()).run
