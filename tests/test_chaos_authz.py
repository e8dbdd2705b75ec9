"""R6: the authorization matrix. Every action × {requester, approver, outsider, CLI} over real HTTP.

prod: requesters alice, bob; approvers bob, carol, dave. Alice is the requester, Carol the approver, Mallory the
outsider. Outsiders click *forged* buttons (the bot must not trust which buttons it showed): the run's version
must not move and a `denied` audit entry must be written.
"""

from __future__ import annotations

from tests.e2e import MANUAL_ITEMS, awaiting_second_approval, blocks_text, click, run_step, settle, start
from tests.harness import ALICE, BOB, CAROL, MALLORY, PROD_CHANNEL, wait_until


def forged(world, run_id, action_id):
    """A message carrying just the button `action_id` for the run's current version."""
    version = world["store"].get(run_id).version
    return {"ts": world["store"].get(run_id).message_ts, "blocks": [{"type": "actions", "block_id": "forged", "elements": [
        {"type": "button", "action_id": action_id, "value": f"{run_id}|{version}",
         "text": {"type": "plain_text", "text": "x"}}]}]}


def refused(world, run_id, user, action_id, audit_action, *, expect="🚫"):
    """The click is answered with an ephemeral refusal, the run is unchanged and the refusal is audited."""
    fake, store = world["fake"], world["store"]
    version = store.get(run_id).version
    denials = [e for e in store.audit_entries(run_id) if e.outcome == "denied"]
    before = len(fake.ephemerals(user=user))
    response = world["sender"].click(user, channel_id=PROD_CHANNEL, message=forged(world, run_id, action_id),
                                     action_id=action_id)
    assert response.status_code == 200
    wait_until(lambda: len(fake.ephemerals(user=user)) > before, timeout=15)
    assert expect in fake.ephemerals(user=user)[-1]["text"], (action_id, fake.ephemerals(user=user)[-1]["text"])
    assert store.get(run_id).version == version, f"{user} changed the run with {action_id}"
    new = [e for e in store.audit_entries(run_id) if e.outcome == "denied"][len(denials):]
    assert [(e.actor, e.action) for e in new] == [(user, audit_action)], (action_id, new)


class TestAuthorizationMatrix:
    def test_start_is_for_requesters_only(self, fresh):
        """Only a requester starts a prod run; an approver who is not a requester and an outsider start nothing."""
        world = fresh
        for user in (CAROL, MALLORY):
            body = world["sender"].slash(user, "prod", channel_id=PROD_CHANNEL).json()
            assert "not on the requester list" in body["text"]
            assert world["store"].active_run("prod") is None

    def test_every_action_on_a_run(self, fresh):
        """Outsiders are refused every action, the requester cannot approve or confirm their own restore, approvers can."""
        world = fresh
        store, fake = world["store"], world["fake"]
        world["app"].state.fail_path = "/counsel"
        run_id, _ = start(world)
        ts = store.get(run_id).message_ts
        # Collecting: checklist, backup, approve, waive, cancel, skip, run step, finish — all refused to Mallory.
        for action_id, audit in [(f"checklist:{MANUAL_ITEMS[0]}", "checklist.confirm"),
                                 ("step_run:backup", "step.start"), ("approve", "run.approve"),
                                 ("cancel", "run.cancel"), ("step_skip:maintenance_on", "step.skip"),
                                 ("step_run:migrate", "step.start"), ("step_done:migrate", "step.mark_done"),
                                 ("finish", "run.finish"), ("rollback:previous", "rollback.request"),
                                 ("rollback_withdraw", "rollback.withdraw")]:
            refused(world, run_id, MALLORY, action_id, audit)
        # The waiver form, submitted by an outsider and by the requester, is refused and changes nothing.
        for user in (MALLORY, ALICE):
            version = store.get(run_id).version
            response = world["sender"].submit_view(user, {"type": "modal", "callback_id": "waive_findings",
                                                          "private_metadata": f"{run_id}|{version}"},
                                                   {"reason": {"r": {"type": "plain_text_input",
                                                                     "value": "we accept the risk of this lock"}}})
            assert response.json()["response_action"] == "errors"
            assert store.get(run_id).version == version
            assert store.audit_entries(run_id)[-1].outcome == "denied"
        # The requester and an approver tick the checklist; the approver may not be the requester.
        for user, item in zip([CAROL] + [ALICE] * 3 + [CAROL], MANUAL_ITEMS, strict=True):  # a review is another's
            world["sender"].click(user, channel_id=PROD_CHANNEL, message=forged(world, run_id, f"checklist:{item}"),
                                  action_id=f"checklist:{item}")
            wait_until(lambda: item in store.get(run_id).checklist)
        assert store.get(run_id).checklist[MANUAL_ITEMS[0]].by == CAROL
        world["sender"].click(ALICE, channel_id=PROD_CHANNEL, message=forged(world, run_id, "step_run:backup"),
                              action_id="step_run:backup")
        wait_until(lambda: store.get(run_id).status.value == "awaiting_approval", timeout=60)
        if store.get(run_id).facts.rehearsal_expected:
            wait_until(lambda: store.get(run_id).facts.rehearsal is not None, timeout=60)
        wait_until(lambda: '"approve"' in blocks_text(world, ts), timeout=30)
        refused(world, run_id, ALICE, "approve", "run.approve")  # no self-approval
        refused(world, run_id, MALLORY, "approve", "run.approve")
        click(world, ts, CAROL, "approve")
        wait_until(lambda: store.get(run_id).status.value == "running")
        for action_id, audit in [("step_run:maintenance_on", "step.start"), ("step_skip:maintenance_on", "step.skip"),
                                 ("cancel", "run.cancel")]:
            refused(world, run_id, MALLORY, action_id, audit)
        # The approver runs steps too; the requester runs the rest.
        run_step(world, run_id, ts, "maintenance_on")
        assert store.get(run_id).step("maintenance_on").by == ALICE
        settle(world, ts)
        click(world, ts, CAROL, "step_run:migrate")
        wait_until(lambda: store.get(run_id).step("migrate").status.value == "succeeded", timeout=60)
        assert store.get(run_id).step("migrate").by == CAROL
        run_step(world, run_id, ts, "deploy")
        run_step(world, run_id, ts, "smoke", expect="failed")
        # Rollback: outsiders cannot ask; the requester asks for a restore, only a second approver confirms.
        refused(world, run_id, MALLORY, "rollback:previous", "rollback.request")
        from tests.test_rollback_e2e import submit_restore

        submit_restore(world, ts, ALICE, "prod", "checkout is broken and the migration cannot be reverted")
        wait_until(lambda: awaiting_second_approval(store.get(run_id)))
        refused(world, run_id, ALICE, "rollback_confirm", "rollback.approve")
        refused(world, run_id, MALLORY, "rollback_confirm", "rollback.approve")
        refused(world, run_id, MALLORY, "rollback_withdraw", "rollback.withdraw")
        click(world, ts, BOB, "rollback_confirm")
        wait_until(lambda: store.get(run_id).status.value == "rolling_back")
        refused(world, run_id, MALLORY, "step_run:rb_scale_down", "step.start")
        # The CLI operator may cancel (audited as cli:<user>) but not a run that already changed prod.
        cli = world["bot"].cli("cancel", run_id, "--reason", "authz matrix", "--as", BOB)
        assert cli.returncode == 1 and "changed the environment" in cli.stdout + cli.stderr
        assert store.get(run_id).status.value == "rolling_back"
        assert store.audit_entries(run_id)[-1].actor.startswith("cli:")
        assert "Traceback" not in world["bot"].logs()
        _ = fake

    def test_cli_may_cancel_an_untouched_run(self, fresh):
        """`migrate-bot cancel` ends a run that changed nothing, audited as cli:<user>; outsiders cannot."""
        world = fresh
        store = world["store"]
        run_id, ts = start(world)
        refused(world, run_id, MALLORY, "cancel", "run.cancel")
        cli = world["bot"].cli("cancel", run_id, "--reason", "slack is down", "--as", ALICE)
        assert cli.returncode == 0, cli.stderr
        assert store.get(run_id).status.value == "cancelled" and store.get(run_id).cancelled_by.startswith("cli:")
