"""The post-mortem timeline: a run's audit stream rendered as Markdown (the seed: "document what happened")."""

from __future__ import annotations

from datetime import datetime

from bot.context import Deps, Invocation, Reply, require
from bot.redact import redact
from bot.runbook.access import VERBS
from bot.runbook.rules import Run
from bot.store.runs import AuditEntry


def _who(actor: str) -> str:
    return "bot" if actor == "bot" else actor


def _duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return "—"
    seconds = (end - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_timeline(run: Run, entries: list[AuditEntry]) -> str:
    """Markdown: summary, step durations, readings, rollback decisions, then every audit entry in order."""
    lines = [f"# Post-mortem timeline: {run.id}", ""]
    approvers = ", ".join(a.by for a in run.approvals) or "none"
    lines += [
        f"- **Environment:** {run.env}",
        f"- **Requested by:** {run.requested_by} at {run.created_at:%Y-%m-%d %H:%M:%S} UTC",
        f"- **Approved by:** {approvers}",
        f"- **Outcome:** {run.status.value.replace('_', ' ')}" + (f" — {run.failure}" if run.failure else ""),
        f"- **Pending migrations:** {', '.join(run.pending_migrations) or 'none'}",
    ]
    if entries:
        lines.append(f"- **Span:** {entries[0].at:%Y-%m-%d %H:%M:%S} → {entries[-1].at:%H:%M:%S} UTC "
                     f"({_duration(entries[0].at, entries[-1].at)})")
    lines += ["", "## Steps", "", "| phase | step | status | attempts | started (UTC) | took | result |",
              "|---|---|---|---|---|---|---|"]
    for step in run.steps:
        result = step.error if step.error else (step.result.summary or "")
        started = f"{step.started_at:%H:%M:%S}" if step.started_at else "—"
        lines.append(f"| {step.phase} | {_cell(step.label)} | {step.status.value} | {step.attempt} | {started} | "
                     f"{_duration(step.started_at, step.finished_at)} | {_cell(result[:160])} |")
    readings = run.facts.monitoring
    if readings is not None:
        lines += ["", "## Readings after the deploy", ""]
        for gauge in readings.checks:
            lines.append(f"- {gauge.icon} {gauge.name}: {gauge.value} (threshold {gauge.threshold})")
    if run.rollback is not None:
        rb = run.rollback
        lines += ["", "## Rollback decision", "",
                  f"- **Option:** {rb.option.value} — requested by {rb.requested_by} "
                  f"at {rb.requested_at[:19]}", f"- **Reason:** {rb.reason or '—'}"]
        if rb.approved_by:
            lines.append(f"- **Confirmed by:** {rb.approved_by} at {(rb.approved_at or '')[:19]}")
    lines += ["", "## Audit trail", "", "| # | time (UTC) | who | action | outcome | detail |", "|---|---|---|---|---|---|"]
    for number, entry in enumerate(entries, 1):
        lines.append(f"| {number} | {entry.at:%H:%M:%S} | {_cell(_who(entry.actor))} | {entry.action} | "
                     f"{entry.outcome} | {_cell(entry.detail[:200])} |")
    return "\n".join(lines) + "\n"


def timeline_for(deps: Deps, run_id: str) -> str:
    """The rendered timeline, redacted: audit details and step errors may quote a command or a URL."""
    return redact(render_timeline(deps.store.get(run_id), deps.store.audit_entries(run_id)))


def timeline_reply(deps: Deps, inv: Invocation, args: list[str]) -> Reply:
    """`/migrate timeline <run>`: the Markdown goes into the run's thread as a file."""
    if len(args) != 1:
        return Reply("Which run? `/migrate timeline <run-id>`")
    run = deps.store.get(args[0])
    require(deps, VERBS["timeline"], inv.user, env_name=run.env)
    text = timeline_for(deps, run.id)

    def upload() -> None:
        if deps.slack is not None:
            deps.slack.upload_file(channel=run.channel, thread_ts=run.message_ts, filename=f"{run.id}-timeline.md",
                                   content=text.encode(), title=f"Post-mortem timeline {run.id}")

    return Reply(f"The timeline of `{run.id}` ({text.count(chr(10))} lines) is being posted in its thread.",
                 after=upload)
