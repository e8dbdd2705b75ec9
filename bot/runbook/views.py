"""Pure rendering: a run becomes the Block Kit JSON of its one status message (no I/O)."""

from __future__ import annotations

from typing import Any

from bot.messages import actor, code_block, escape, slack_date
from bot.runbook.rules import (
    CHECKABLE_BY_HAND,
    CHECKLIST,
    ROLLBACK_LABELS,
    STEP_CONFIRMS_ITEM,
    STEP_SPECS,
    RollbackOption,
    RollbackStatus,
    Run,
    RunStatus,
    StepStatus,
    blocking_findings,
    failed_step,
    maintenance_planned,
    may_cancel_now,
    may_rehearse,
    may_retry,
    next_step,
    readings_verdict,
    rollback_options,
)

Block = dict[str, Any]

STATUS_LABEL = {
    RunStatus.COLLECTING: "🟡 Collecting the checklist",
    RunStatus.AWAITING_APPROVAL: "🟠 Awaiting approval",
    RunStatus.RUNNING: "🔵 Running",
    RunStatus.MONITORING: "🟣 Monitoring",
    RunStatus.SUCCEEDED: "🟢 Succeeded",
    RunStatus.FAILED: "🔴 Failed",
    RunStatus.ROLLING_BACK: "🟠 Rolling back",
    RunStatus.ROLLED_BACK: "⚪ Rolled back",
    RunStatus.CANCELLED: "⚪ Cancelled",
}

STEP_ICON = {
    StepStatus.PENDING: "⬜",
    StepStatus.RUNNING: "⏳",
    StepStatus.SUCCEEDED: "✅",
    StepStatus.FAILED: "❌",
    StepStatus.SKIPPED: "⏭️",
    StepStatus.INTERRUPTED: "⚠️",
}


def button_value(run: Run) -> str:
    """Buttons carry only the run id and the message version they were rendered at."""
    return f"{run.id}|{run.version}"


def parse_button_value(value: str) -> tuple[str, int | None]:
    run_id, _, version = (value or "").partition("|")
    return run_id, int(version) if version.isdigit() else None


def _text(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text[:3000]}


def _button(text: str, action_id: str, value: str, style: str | None = None,
            confirm: tuple[str, str, str] | None = None) -> Block:
    button: Block = {"type": "button", "text": {"type": "plain_text", "text": text[:75], "emoji": True},
                     "action_id": action_id, "value": value}
    if style:
        button["style"] = style
    if confirm:
        title, body, ok = confirm
        button["confirm"] = {
            "title": {"type": "plain_text", "text": title[:100]},
            "text": {"type": "mrkdwn", "text": body[:300]},
            "confirm": {"type": "plain_text", "text": ok[:30]},
            "deny": {"type": "plain_text", "text": "Not yet"},
        }
        if style in ("danger", "primary"):
            button["confirm"]["style"] = style
    return button


def release_text(run: Run) -> str:
    """The commit a release-pinned run reads, and how far it is from what the environment last ran."""
    release = run.facts.release
    assert release is not None
    short = f"`{release.short}`"
    if release.url.startswith(("https://", "http://")):
        short = f"<{escape(release.url).replace('|', '%7C')}|{release.short}>"
    head = f"📦 Release {short} from `{escape(release.ref[:60])}`"
    if release.subject:
        head += f": {escape(release.subject[:150])}"
    if release.author:
        head += f" · by {escape(release.author[:60])}"
    if release.baseline_sha is None:
        ahead = f"no earlier release recorded as run in {run.env}"
    elif release.commits_ahead is None:
        ahead = f"commits ahead of what {run.env} last ran (`{release.baseline_sha[:7]}`): unknown (history not fetched)"
    else:
        ahead = (f"{release.commits_ahead} commit{'s' if release.commits_ahead != 1 else ''} ahead of what "
                 f"{run.env} last ran (`{release.baseline_sha[:7]}`)")
    lines = [head, ahead]
    if run.facts.pending is not None:
        count = len(run.facts.pending)
        if release.baseline_sha:
            since = (f"{escape(release.baseline_ref[:60])} ({release.baseline_sha[:7]})" if release.baseline_ref
                     else f"{release.baseline_sha[:7]}")
        elif release.baseline_migration:
            since = f"`{escape(release.baseline_migration[:100])}` (the last migration {run.env} ran)"
        else:
            since = "an empty migration history"
        lines.append(f"this release adds {count} migration{'s' if count != 1 else ''} since {since}")
    return "\n".join(lines)


def fallback_text(run: Run) -> str:
    return f"Migration {run.id} in {run.env}: {STATUS_LABEL[run.status]}"


def render_run(run: Run) -> dict[str, Any]:
    """The status message of a run: header, checklist, approvals, steps, and the buttons valid right now."""
    v = run.version
    value = button_value(run)
    blocks: list[Block] = [
        {"type": "header", "block_id": f"head:{v}",
         "text": {"type": "plain_text", "text": f"Migration {run.id} · {run.env}"[:150], "emoji": True}},
        {"type": "context", "block_id": f"meta:{v}", "elements": [_text(
            f"*{STATUS_LABEL[run.status]}* · requested by <@{run.requested_by}> · {slack_date(run.created_at)}"
            + (f" · image `{run.image_tag}`" if run.image_tag else ""))]},
    ]
    if run.facts.release is not None:
        blocks.append({"type": "context", "block_id": f"release:{v}",
                       "elements": [_text(release_text(run))]})
    blocks.append({"type": "divider", "block_id": f"d1:{v}"})
    checklist_open = run.status in (RunStatus.COLLECTING, RunStatus.AWAITING_APPROVAL)
    done = len(run.checklist)
    blocks.append({"type": "section", "block_id": f"cl:{v}",
                   "text": _text(f"*Pre-migration checklist* ({done}/{len(CHECKLIST)})")})
    for item in CHECKLIST:
        confirmation = run.checklist.get(item.key)
        if confirmation:
            who = "the bot" if confirmation.by == "bot" else f"<@{confirmation.by}>"
            line = f"✅ {item.label} — {who}, {slack_date(confirmation.at, '{time}')}"
            if confirmation.evidence:
                line += f"\n      _{confirmation.evidence}_"
            blocks.append({"type": "section", "block_id": f"item:{item.key}:{v}", "text": _text(line)})
        elif item.key in STEP_CONFIRMS_ITEM.values():
            blocks.append(_evidence_item(run, item.key, item.label, value, checklist_open))
        else:
            line = f"⬜ {item.label}"
            code_review = run.facts.code_review
            if item.key == "script_reviewed" and code_review is not None and not code_review.ok:
                line += f"\n      _{escape(code_review.reason()[:400])}_ — a developer other than the requester confirms"
            section: Block = {"type": "section", "block_id": f"item:{item.key}:{v}", "text": _text(line)}
            if checklist_open:
                section["accessory"] = _button("Confirm", f"checklist:{item.key}", value)
            blocks.append(section)
    blocks.append({"type": "divider", "block_id": f"d2:{v}"})
    blocks.extend(_review_blocks(run, value))
    blocks.extend(_approval_blocks(run, value))
    if run.status not in (RunStatus.COLLECTING, RunStatus.AWAITING_APPROVAL, RunStatus.CANCELLED) or any(
        s.status is not StepStatus.PENDING for s in run.steps
    ):
        blocks.append({"type": "divider", "block_id": f"d3:{v}"})
        blocks.extend(_step_blocks(run, value))
    if run.failure and run.status is RunStatus.FAILED:
        blocks.append({"type": "section", "block_id": f"fail:{v}", "text": _text(f"❌ *{run.failure}*")})
    blocks.extend(_rollback_blocks(run, value))
    if run.status is RunStatus.CANCELLED:
        reason = f": {escape(run.cancel_reason)}" if run.cancel_reason else ""
        blocks.append({"type": "context", "block_id": f"cancelled:{v}",
                       "elements": [_text(f"Cancelled by {actor(run.cancelled_by or '')}{reason}")]})
    blocks.extend(_monitoring_blocks(run, value))
    controls: list[Block] = []
    if run.status is RunStatus.MONITORING:
        controls.append(_button("Looks good: close run", "finish", value, "primary", (
            "Close this run as succeeded?", "The migration and deploy look healthy; the environment lock is released.",
            "Close run")))
    if run.status is RunStatus.AWAITING_APPROVAL:
        controls.append(_button("Approve", "approve", value, "primary", (
            f"Approve {run.env} migration?",
            f"You approve run {run.id} in {run.env}: backup, migrations and deploy will follow.",
            "Approve")))
    if may_cancel_now(run):
        label = "Close failed run" if run.status is RunStatus.FAILED else "Cancel run"
        controls.append(_button(label, "cancel", value, "danger", (
            f"{label}?", "The run stops here and the environment lock is released.", label)))
    if controls:
        blocks.append({"type": "actions", "block_id": f"controls:{v}", "elements": controls})
    blocks.append({"type": "context", "block_id": f"foot:{v}",
                   "elements": [_text(f"run `{run.id}` · v{v} · audit trail in the thread")]})
    return {"text": fallback_text(run), "blocks": blocks}


def _evidence_item(run: Run, key: str, label: str, value: str, checklist_open: bool) -> Block:
    """A checklist item ticked by a step's evidence (the backup), shown with that step's live state."""
    step_name = next(name for name, item in STEP_CONFIRMS_ITEM.items() if item == key)
    step = run.step(step_name) if any(s.name == step_name for s in run.steps) else None
    section: Block = {"type": "section", "block_id": f"item:{key}:{run.version}", "text": _text(f"⬜ {label}")}
    if step is None:
        return section
    if step.status is StepStatus.RUNNING:
        section["text"] = _text(f"⏳ {label} — running{f' ({step.progress})' if step.progress else ''}")
        return section
    if step.status in (StepStatus.FAILED, StepStatus.INTERRUPTED):
        section["text"] = _text(f"{STEP_ICON[step.status]} {label} — {step.error or step.status.value}")
        if checklist_open:
            section["accessory"] = _button("Retry backup", f"step_run:{step_name}", value, "primary")
        return section
    if checklist_open:
        section["text"] = _text(f"⬜ {label} — _the bot takes and verifies it_")
        section["accessory"] = _button("Take backup", f"step_run:{step_name}", value, "primary")
    return section


def _review_blocks(run: Run, value: str) -> list[Block]:
    """Pending migrations with a one-line safety summary each; a Waive button while high findings block."""
    review = run.facts.review
    if review is None:
        if run.status in (RunStatus.COLLECTING, RunStatus.AWAITING_APPROVAL):
            return [{"type": "context", "block_id": f"rev:{run.version}",
                     "elements": [_text("_Reading pending migrations…_")]}]
        return []
    lines = [f"*Pending migrations* ({len(run.pending_migrations)}) — review: {review.summary}"]
    for name in run.pending_migrations[:15]:
        lines.append(f"• `{name}` — {review.lines.get(name, '')}")
    if len(run.pending_migrations) > 15:
        lines.append(f"• … and {len(run.pending_migrations) - 15} more (see the thread)")
    rehearsal = run.facts.rehearsal
    if rehearsal is not None:
        lines.append(("✅ " if rehearsal.ok else "❌ ") + f"Rehearsal on the restored backup: {rehearsal.summary}")
    elif run.facts.rehearsing is not None:
        lines.append("⏳ Rehearsal on the restored backup: running (on an isolated copy, not on production)")
    elif may_rehearse(run):
        lines.append("⚠️ Rehearsal on the restored backup: it did not finish (the bot stopped); approval waits for it")
    blocks: list[Block] = [{"type": "section", "block_id": f"rev:{run.version}", "text": _text("\n".join(lines))}]
    if may_rehearse(run):
        blocks.append({"type": "actions", "block_id": f"reh:{run.version}",
                       "elements": [_button("Rehearse again", "rehearse", value, "primary")]})
    waivers = run.facts.waivers
    if waivers:
        who = sorted({w.by for w in waivers.values()})
        blocks.append({"type": "context", "block_id": f"waived:{run.version}", "elements": [_text(
            f"⚠️ {len(waivers)} high finding(s) waived by " + ", ".join(f"<@{u}>" for u in who)
            + ": " + "; ".join(sorted({escape(w.reason[:80]) for w in waivers.values()})))]})
    blocking = blocking_findings(run)
    if review.high and maintenance_planned(run):
        blocks.append({"type": "context", "block_id": f"maint:{run.version}", "elements": [_text(
            "High findings are accepted because maintenance mode is on for this run.")]})
    if blocking and run.status in (RunStatus.COLLECTING, RunStatus.AWAITING_APPROVAL):
        blocks.append({"type": "section", "block_id": f"block:{run.version}", "text": _text(
            f"🔴 *{len(blocking)} high finding(s) block approval* — an approver may waive them with a reason."),
            "accessory": _button("Waive with reason…", "waive", value, "danger")})
    elif blocking and run.status is RunStatus.RUNNING:
        blocks.append({"type": "section", "block_id": f"block:{run.version}", "text": _text(
            f"🔴 *Maintenance mode was skipped, so {len(blocking)} high finding(s) block the migration* — "
            "an approver may waive them with a reason."),
            "accessory": _button("Waive with reason…", "waive", value, "danger")})
    return blocks


def _approval_blocks(run: Run, value: str) -> list[Block]:
    got, need = len(run.approvals), run.approvals_required
    lines = [f"*Approval* ({got}/{need}) — the requester cannot approve their own run"]
    for approval in run.approvals:
        lines.append(f"✅ Approved by <@{approval.by}> at {slack_date(approval.at, '{time}')}")
    if run.status is RunStatus.COLLECTING:
        lines.append("_Approval opens when every checklist item is confirmed._")
    return [{"type": "section", "block_id": f"appr:{run.version}", "text": _text("\n".join(lines))}]


def _monitoring_blocks(run: Run, value: str) -> list[Block]:
    """The seed's step 7 readings as a ✅/⚠️ table, with a refresh while the run is being monitored."""
    summary = run.facts.monitoring
    if run.status is not RunStatus.MONITORING and summary is None:
        return []
    if summary is None:
        return [{"type": "context", "block_id": f"mon:{run.version}", "elements": [_text("_Taking readings…_")]}]
    fields = [_text(f"{c.icon} *{c.name}*\n" + (f"not available: {escape(c.message)[:200]}" if c.status == "unknown"
                                                 else f"{c.value} (goal {c.threshold})"))
              for c in summary.checks[:10]]
    blocks: list[Block] = [
        {"type": "section", "block_id": f"mon:{run.version}",
         "text": _text(f"*Monitoring* — readings at {summary.taken_at[11:19]} UTC: "
                       f"{readings_verdict(summary.checks)}")},
    ]
    if fields:
        blocks.append({"type": "section", "block_id": f"monf:{run.version}", "fields": fields})
    if summary.log_lines:
        logs = "\n".join(line[:200] for line in summary.log_lines[:5])
        blocks.append({"type": "section", "block_id": f"monl:{run.version}",
                       "text": _text(f"Latest ERROR lines:\n{code_block(logs)}")})
    if run.status is RunStatus.MONITORING:
        blocks.append({"type": "actions", "block_id": f"mona:{run.version}",
                       "elements": [_button("Refresh readings", "monitor_refresh", value)]})
    return blocks


def _rollback_blocks(run: Run, value: str) -> list[Block]:
    """Rollback choices that fit what this run did, or the restore waiting for its second person."""
    pending = run.rollback
    waiting = pending is not None and pending.status is RollbackStatus.AWAITING_SECOND_APPROVAL
    if pending is not None and waiting and pending.option is RollbackOption.REVERT:
        scripts = ", ".join(f"`{d.name}` (sha256 `{d.checksum[:12]}…`)" for d in pending.down[:10])
        review = pending.review.summary if pending.review else "-"
        text = (f"⚠️ *Revert with down.sql requested* by <@{pending.requested_by}>"
                + (f": {pending.reason}" if pending.reason else "") + "\n"
                f"Runs on {run.env}, newest first: {scripts}. The SQL and its review ({review}) are in the thread. "
                "A second approver must confirm.")
        return _second_person_blocks(run, value, text, _button("Confirm revert", "rollback_confirm", value, "danger", (
            f"Run down.sql on {run.env}?", "Exactly the down.sql shown in the thread runs on the production database.",
            "Confirm")))
    if pending is not None and waiting:
        text = (f"⚠️ *Restore from backup requested* by <@{pending.requested_by}>: {escape(pending.reason)}\n"
                "All data written after the backup will be lost. A second approver must confirm.")
        return _second_person_blocks(run, value, text, _button("Confirm restore", "rollback_confirm", value, "danger", (
            f"Restore {run.env} from backup?",
            "Data written after the backup is lost. The app is scaled to 0 during the restore.", "Restore")))
    if run.rollback or run.status not in (RunStatus.FAILED, RunStatus.MONITORING, RunStatus.RUNNING):
        return []
    if any(s.status is StepStatus.RUNNING for s in run.steps):
        return []
    options = rollback_options(run)
    if not options:
        return []
    elements: list[Block] = []
    for option in options:
        label = ROLLBACK_LABELS[option]
        if option is RollbackOption.RESTORE:
            elements.append(_button(label, "rollback:restore", value, "danger"))
        elif option is RollbackOption.ABORT:
            elements.append(_button(label, "rollback:abort", value, "danger", (
                "Abort this run?", "Maintenance mode is turned off, the smoke tests run, and the run ends cancelled. "
                "No migration has run.", "Abort")))
        else:
            elements.append(_button(label, f"rollback:{option.value}", value, None, (
                f"{label}?", "The rollback runs as recorded steps, each behind its own button.", "Start")))
    return [{"type": "section", "block_id": f"rbh:{run.version}", "text": _text(_rollback_heading(options))},
            {"type": "actions", "block_id": f"rbo:{run.version}", "elements": elements}]


def _rollback_heading(options: list[RollbackOption]) -> str:
    """What each offered way back means, naming only the options offered."""
    if options == [RollbackOption.ABORT]:
        return ("*Stop here?* No migration has run: abort turns maintenance mode off, checks the site and cancels "
                "the run.")
    notes: list[str] = []
    if RollbackOption.REVERT in options:
        notes.append("Option 1 is preferred: it undoes only this run's migrations")
    if RollbackOption.RESTORE in options:
        notes.append("Option 2 loses data written since the backup")
    if RollbackOption.PREVIOUS in options:
        notes.append("Option 3 puts the previous app version back and leaves the database as it is")
    tail = " Each ends with maintenance mode off and the smoke tests."
    return "*Roll back?* " + "; ".join(notes) + "." + tail


def _second_person_blocks(run: Run, value: str, text: str, confirm: Block) -> list[Block]:
    """A rollback waiting for its second approver: what was asked, Confirm and Withdraw."""
    return [
        {"type": "section", "block_id": f"rbreq:{run.version}", "text": _text(text)},
        {"type": "actions", "block_id": f"rbreqa:{run.version}",
         "elements": [confirm, _button("Withdraw", "rollback_withdraw", value)]},
    ]


def _step_blocks(run: Run, value: str) -> list[Block]:
    lines = ["*Runbook*"]
    for step in run.steps:
        if step.phase == "rollback" and lines[-1] != "*Rollback*" and not any(
                line == "*Rollback*" for line in lines):
            lines.append("*Rollback*")
        line = f"{STEP_ICON[step.status]} {step.label}"
        if step.status is StepStatus.RUNNING:
            line += f" — running{f' ({step.progress})' if step.progress else ''}"
        elif step.status is StepStatus.SUCCEEDED and step.result.summary:
            line += f" — {step.result.summary}"
        elif step.status in (StepStatus.FAILED, StepStatus.INTERRUPTED) and step.error:
            line += f" — {step.error}"
        if step.attempt > 1:
            line += f" (attempt {step.attempt})"
        lines.append(line)
    blocks: list[Block] = [{"type": "section", "block_id": f"steps:{run.version}", "text": _text("\n".join(lines))}]
    if run.status is RunStatus.FAILED:
        return blocks + _failed_step_actions(run, value)
    if run.status not in (RunStatus.RUNNING, RunStatus.ROLLING_BACK):
        return blocks
    upcoming = next_step(run)
    if upcoming is None or upcoming.status is StepStatus.RUNNING:
        return blocks
    step = upcoming
    spec = STEP_SPECS[step.name]
    elements: list[Block] = []
    if step.status is StepStatus.FAILED and step.name in CHECKABLE_BY_HAND:
        blocks.append(_maintenance_still_on(run))
    hold = run.facts.hold
    if hold is not None and hold.step == step.name:
        blockers = "\n".join(f"• {b}" for b in hold.blockers[:5])
        blocks.append({"type": "section", "block_id": f"hold:{run.version}", "text": _text(
            f"⏸️ *Held before {spec.label.lower()}:* {escape(hold.reason)}\n{blockers}")})
        elements.append(_button("Retry check", f"step_run:{step.name}", value, "primary"))
        elements.append(_button("Proceed anyway", "proceed_anyway", value, "danger", (
            "Proceed despite the blockers?", "The migration may wait on their locks, or time out. This is audited.",
            "Proceed")))
        blocks.append({"type": "actions", "block_id": f"step:{step.name}:{run.version}", "elements": elements})
        return blocks
    if step.status is StepStatus.INTERRUPTED:
        elements.append(_button(f"Retry: {spec.label}", f"step_run:{step.name}", value, "primary", (
            "Run this step again?", f"“{spec.label}” was interrupted. Check what it left behind before running it again.",
            "Run again")))
        elements.append(_button("Checked: it completed", f"step_done:{step.name}", value, None, (
            "Mark as done?", f"Only if you verified by hand that “{spec.label}” completed.", "Mark done")))
    else:
        label = "Retry" if step.status is StepStatus.FAILED else "Run"
        elements.append(_button(f"{label}: {spec.label}", f"step_run:{step.name}", value, "primary"))
        if spec.optional:
            elements.append(_button("Skip", f"step_skip:{step.name}", value))
        if step.status is StepStatus.FAILED and step.name in CHECKABLE_BY_HAND:
            elements.append(_checked_off_button(step.name, value))
    blocks.append({"type": "actions", "block_id": f"step:{step.name}:{run.version}", "elements": elements})
    return blocks


def _failed_step_actions(run: Run, value: str) -> list[Block]:
    """At a failed gate: Retry when the step is safe to run again, Skip when it is optional, and a check by hand
    when the bot cannot reach the maintenance switch. Rollback choices follow in their own block."""
    step = failed_step(run)
    if step is None or run.rollback is not None:
        return []
    spec = STEP_SPECS[step.name]
    elements: list[Block] = []
    if may_retry(run, step.name):
        elements.append(_button(f"Retry: {spec.label}", f"step_run:{step.name}", value, "primary"))
    if spec.optional:
        elements.append(_button(f"Skip: {spec.label}", f"step_skip:{step.name}", value, None, (
            "Skip this step?", f"The run goes on without “{spec.label}”. This is audited.", "Skip")))
    if step.name in CHECKABLE_BY_HAND:
        elements.append(_checked_off_button(step.name, value))
    blocks: list[Block] = [_maintenance_still_on(run)] if step.name in CHECKABLE_BY_HAND else []
    if elements:
        blocks.append({"type": "actions", "block_id": f"failed:{step.name}:{run.version}", "elements": elements})
    return blocks


def _maintenance_still_on(run: Run) -> Block:
    return {"type": "section", "block_id": f"maint_on:{run.version}", "text": _text(
        "🚨 *Maintenance mode is still ON: the site answers 503 to users.* Retry turning it off, or check by hand "
        "that it is off and say so. The run stays open until it is.")}


def _checked_off_button(name: str, value: str) -> Block:
    return _button("Checked: maintenance is off", f"step_done:{name}", value, None, (
        "Maintenance mode is off?", "Only if you checked by hand that the site serves users again. This is audited.",
        "It is off"))


def waiver_modal(run: Run) -> dict[str, Any]:
    """The modal in which an approver gives the reason for waiving the blocking findings."""
    findings = "\n".join(f"• `{f.migration}`: {f.message}" for f in blocking_findings(run)[:20])
    return {
        "type": "modal",
        "callback_id": "waive_findings",
        "private_metadata": button_value(run),
        "title": {"type": "plain_text", "text": "Waive findings"},
        "submit": {"type": "plain_text", "text": "Waive"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "block_id": "findings", "text": _text(f"*High findings in {run.id}*\n{findings}")},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why is this acceptable?"},
             "element": {"type": "plain_text_input", "action_id": "value", "multiline": True, "min_length": 10,
                         "max_length": 500}},
        ],
    }
