"""The runbook as pure rules: the run document, the checklist, the steps, and every allowed transition (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from bot.errors import AlreadyDone, NotAllowed, SelfApproval, WrongState
from bot.messages import escape


@dataclass(frozen=True)
class ChecklistItem:
    key: str
    label: str


# The seed's pre-migration checklist, in its order.
CHECKLIST: tuple[ChecklistItem, ...] = (
    ChecklistItem("staging_tested", "All migrations tested in staging environment"),
    ChecklistItem("backup_verified", "Database backup completed and verified"),
    ChecklistItem("rollback_plan", "Rollback plan prepared and tested"),
    ChecklistItem("window_scheduled", "Maintenance window scheduled (if required)"),
    ChecklistItem("team_notified", "Team notified of deployment timeline"),
    ChecklistItem("script_reviewed", "Migration script reviewed by at least one other developer"),
)
CHECKLIST_KEYS = tuple(item.key for item in CHECKLIST)
NOT_BY_REQUESTER = frozenset({"script_reviewed"})
"""Items the requester cannot tick for themselves: a review is by "at least one other developer"."""
CHECKLIST_LABELS = {item.key: item.label for item in CHECKLIST}


class RunStatus(StrEnum):
    COLLECTING = "collecting"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    MONITORING = "monitoring"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED})
"""States after which the environment lock is released. FAILED keeps the lock: a human must roll back or close."""


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"


# ---- the stored JSON objects of a run ------------------------------------------------------------

class Record(BaseModel):
    """A JSON object inside the run document: what a later reader finds is exactly what an earlier writer wrote.

    Unknown keys (from an older or newer version) are kept. A key that was absent when read stays absent when
    written: only keys that were read, assigned, or moved off their default are written back. Defaults stand in
    for absent keys when read.
    """

    model_config = ConfigDict(extra="allow")

    none_is_absent: ClassVar[bool] = False
    """Whether a field set to None is left out when written (it was removed, as from a dict)."""

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        given = self.model_fields_set

        def keep(key: str) -> bool:
            if key not in fields:
                return True  # an unknown key, kept as read
            value = getattr(self, key)
            if value is None and self.none_is_absent:
                return False
            return key in given or value != fields[key].get_default(call_default_factory=True)

        return {key: value for key, value in data.items() if keep(key)}


# What each step records (StepState.result), read by the steps after it; see `result_of`.

class StepResult(Record):
    """What a step recorded when it ended; each step has its own kind below."""

    summary: str | None = None
    resolved_by: str | None = None
    """Who marked the step done by hand after an interruption."""


class BackupResult(StepResult):
    """The backup's evidence (bot.backup.evidence.BackupEvidence): what the restore and the rehearsal use."""

    method: str = ""
    identifier: str = ""
    location: str = ""
    size_bytes: int | None = None
    sha256: str | None = None
    s3_version_id: str | None = None
    live_prisma_migrations: int | None = None
    live_table_count: int | None = None
    restored_prisma_migrations: int | None = None
    restored_table_count: int | None = None
    toc_entries: int | None = None
    verified: bool = False
    reused: bool = False
    took_s: float = 0.0
    phases: dict[str, float] = Field(default_factory=dict)
    """Seconds each phase took, in order (dump, checks, verify, upload), so an engineer can plan the window."""
    notes: list[str] = Field(default_factory=list)


class MaintenanceOnResult(StepResult):
    previous_task_definition: str | None = None
    """The ECS task definition before the maintenance one (the ecs_task_definition method only)."""
    method: str | None = None


class MigrateResult(StepResult):
    applied: list[str] = Field(default_factory=list)
    with_down: bool = False
    """Every applied migration ships a down.sql, so Option 1 can revert them."""
    durations_s: dict[str, float] = Field(default_factory=dict)


class DeployResult(StepResult):
    previous_task_definition: str | None = None
    """Previous-stable: what the service ran before this deploy."""
    task_definition: str | None = None
    desired_count: int | None = None


class SmokeCheckResult(Record):
    name: str
    ok: bool = False
    status: int | None = None
    latency_ms: float = 0.0
    error: str | None = None


class SmokeTestsResult(StepResult):
    checks: list[SmokeCheckResult] = Field(default_factory=list)


class MaintenanceOffResult(StepResult):
    task_definition: str | None = None


class ResolveFailedResult(StepResult):
    rolled_back: list[str] = Field(default_factory=list)


class ApplyDownResult(StepResult):
    reverted: list[str] = Field(default_factory=list)
    """The migrations whose down.sql ran, so a retry skips them."""


class ScaleDownResult(StepResult):
    desired_count_before: int | None = None
    task_definition_before: str | None = None


class RestoreDbResult(StepResult):
    restored_instance: str | None = None
    previous_instance: str | None = None
    manual_switch: bool = False
    restored_database: str | None = None
    kept_aside: str | None = None
    prisma_migrations: int | None = None


class RedeployResult(StepResult):
    task_definition: str | None = None
    desired_count: int | None = None


class PreviousVersionResult(StepResult):
    task_definition: str | None = None


class RollbackMaintenanceOffResult(MaintenanceOffResult):
    """Maintenance mode turned off at the end of a rollback or an abort."""


class RollbackSmokeResult(SmokeTestsResult):
    """The smoke tests after a rollback or an abort: the proof that the site is up again."""


@dataclass(frozen=True)
class StepSpec:
    name: str
    label: str
    optional: bool
    result: type[StepResult] = StepResult


# The seed's production steps 1-6 and 8 (7, monitoring, is the run's `monitoring` state).
STEP_SPECS: dict[str, StepSpec] = {
    "backup": StepSpec("backup", "Back up the database", optional=False, result=BackupResult),
    "maintenance_on": StepSpec("maintenance_on", "Enable maintenance mode", optional=True,
                               result=MaintenanceOnResult),
    "migrate": StepSpec("migrate", "Apply Prisma migrations", optional=False, result=MigrateResult),
    "seed": StepSpec("seed", "Run the database seed", optional=True),
    "deploy": StepSpec("deploy", "Deploy the new app version", optional=False, result=DeployResult),
    "smoke": StepSpec("smoke", "Smoke-test critical paths", optional=False, result=SmokeTestsResult),
    "maintenance_off": StepSpec("maintenance_off", "Disable maintenance mode", optional=False,
                                result=MaintenanceOffResult),
    # Rollback sub-steps (the seed's three options); appended to a run when a rollback starts.
    "rb_resolve_failed": StepSpec("rb_resolve_failed", "Mark the failed migration rolled back",
                                  optional=False, result=ResolveFailedResult),
    "rb_apply_down": StepSpec("rb_apply_down", "Apply down.sql and mark the migrations rolled back",
                              optional=False, result=ApplyDownResult),
    "rb_scale_down": StepSpec("rb_scale_down", "Scale the app to 0 (stop new writes)", optional=False,
                              result=ScaleDownResult),
    "rb_restore_db": StepSpec("rb_restore_db", "Restore the database from the backup", optional=False,
                              result=RestoreDbResult),
    "rb_redeploy": StepSpec("rb_redeploy", "Redeploy previous-stable at the recorded count", optional=False,
                            result=RedeployResult),
    "rb_previous_version": StepSpec("rb_previous_version", "Deploy the previous app version", optional=False,
                                    result=PreviousVersionResult),
    # Every way back ends with the site up: maintenance off (if this run may have turned it on), then smoke tests.
    "rb_maintenance_off": StepSpec("rb_maintenance_off", "Disable maintenance mode", optional=False,
                                   result=RollbackMaintenanceOffResult),
    "rb_smoke": StepSpec("rb_smoke", "Smoke-test the site after the rollback", optional=True,
                         result=RollbackSmokeResult),
}

RETRYABLE_AFTER_FAILURE = frozenset({"maintenance_on", "deploy", "smoke", "maintenance_off"})
"""Forward steps that may run again after they failed: each is idempotent (the webhook, the ECS service update
to a recorded task definition, read-only smoke tests). migrate and seed are not: a failed migration is resolved
by Option 1, a failed seed may be skipped."""

CHECKABLE_BY_HAND = frozenset({"maintenance_off", "rb_maintenance_off"})
"""Failed steps a human may mark done after checking by hand (the maintenance webhook may be down while the
site is already serving): audited, and the way out when the bot cannot reach the switch."""

FORWARD_STEPS = ("backup", "maintenance_on", "migrate", "seed", "deploy", "smoke", "maintenance_off")


class RollbackOption(StrEnum):
    REVERT = "revert"          # Option 1 (preferred): revert the migration
    RESTORE = "restore"        # Option 2 (last resort): restore from the backup; loses data written since
    PREVIOUS = "previous"      # Option 3: deploy the previous app version
    ABORT = "abort"            # no migration ran: turn maintenance mode off and end the run


ROLLBACK_LABELS = {
    RollbackOption.REVERT: "Option 1 · Revert the migration",
    RollbackOption.RESTORE: "Option 2 · Restore from backup",
    RollbackOption.PREVIOUS: "Option 3 · Deploy previous version",
    RollbackOption.ABORT: "Abort: maintenance off and cancel",
}


class Confirmation(BaseModel):
    by: str
    at: datetime
    evidence: str | None = None


class Approval(BaseModel):
    by: str
    at: datetime
    fingerprint: str | None = None


# What the run learned before and after its steps (Run.facts).

class PendingMigration(Record):
    """A migration pending when the run was inspected, with the checksum an approval binds to."""

    name: str
    checksum: str = ""


class Advice(Record):
    """What a safety finding says: the risk, why it matters, the safe alternative and its category."""

    message: str = ""
    why: str = ""
    alternative: str = ""
    category: str = ""


class Finding(Advice):
    """A high safety finding: it gates approval until an approver waives it (or maintenance mode is on)."""

    key: str
    migration: str
    checksum: str = ""


class FindingDetail(Advice):
    """A high or medium finding as shown in the thread."""

    migration: str
    level: str


class Review(Record):
    """The safety review of the pending migrations (or of the down.sql scripts of a revert)."""

    summary: str = "-"
    lines: dict[str, str] = Field(default_factory=dict)
    """Migration name -> its one-line summary."""
    high: list[Finding] = Field(default_factory=list)
    details: list[FindingDetail] = Field(default_factory=list)
    error: str | None = None


class Release(Record):
    """The commit a release-pinned run reads everything from: resolved once, when the run starts."""

    sha: str
    """The full commit SHA; the approval binds to it with the checksums and the backup."""
    ref: str = ""
    """What the requester typed (a tag, branch or SHA), or the environment's default ref."""
    subject: str = ""
    author: str = ""
    url: str = ""
    """A link to the commit (the source's ``web_url`` template), or empty."""
    baseline_sha: str | None = None
    """The commit of the last run that succeeded on this environment, if known."""
    commits_ahead: int | None = None
    """How many commits ``sha`` is ahead of ``baseline_sha``, if known."""
    baseline_ref: str = ""
    """What that last succeeded run was started from (e.g. ``v1.4.1``), if known."""
    baseline_migration: str = ""
    """The last migration `_prisma_migrations` records as applied when the run started, if any."""

    @property
    def short(self) -> str:
        return self.sha[:7]


class ReviewedFile(Record):
    """One pending migration's file at the run's commit, and the pull requests (and approvers) that brought it in."""

    migration: str
    path: str = ""
    pulls: list[int] = Field(default_factory=list)
    approvers: list[str] = Field(default_factory=list)
    problem: str | None = None
    """Why it lacks an approval by someone other than its author (None: it has one)."""


class CodeReview(Record):
    """What the pull requests say about "reviewed by at least one other developer" (``review.github``)."""

    sha: str = ""
    files: list[ReviewedFile] = Field(default_factory=list)
    error: str | None = None
    """Why GitHub could not be asked (the token, the rate limit, the network): the item stays a click."""

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.files) and all(f.problem is None for f in self.files)

    def reason(self) -> str:
        """One line: why the item is not ticked from the pull requests, or who reviewed which file."""
        if self.error is not None:
            return f"not ticked from GitHub: {self.error}"
        missing = [f for f in self.files if f.problem is not None]
        if missing:
            more = f" (and {len(missing) - 1} more file(s))" if len(missing) > 1 else ""
            return f"not ticked from GitHub: {missing[0].problem}{more}"
        return review_evidence_text(self.files)


def review_evidence_text(files: list[ReviewedFile], shown: int = 5) -> str:
    """Who approved which file, e.g. "`20240102_add_x`: PR #12 approved by bob"; the first ``shown`` files."""
    parts = [f"`{f.migration}`: PR {', '.join(f'#{n}' for n in f.pulls)} approved by {', '.join(f.approvers)}"
             for f in files[:shown]]
    more = f"; and {len(files) - shown} more" if len(files) > shown else ""
    return escape("; ".join(parts) + more)


class Waiver(Record):
    """An approver accepted a high finding with a reason; void once its migration's checksum changes."""

    by: str
    reason: str = ""
    at: str = ""
    migration: str | None = None
    checksum: str | None = None


class RehearsedMigration(Record):
    """One migration as it ran on the restored copy of the backup (bot.backup.rehearsal.RehearsedMigration)."""

    name: str
    duration_s: float = 0.0
    ok: bool = False
    error: str | None = None
    locks: dict[str, str] = Field(default_factory=dict)
    waits: list[str] = Field(default_factory=list)


class Rehearsal(Record):
    """The rehearsal on the restored backup (bot.backup.rehearsal.RehearsalReport, with its summary)."""

    ok: bool | None = None
    summary: str = ""
    migrations: list[RehearsedMigration] = Field(default_factory=list)
    took_s: float = 0.0
    scratch_database: str = ""
    pending: list[str] = Field(default_factory=list)
    error: str | None = None
    notes: list[str] = Field(default_factory=list)


class Rehearsing(Record):
    """The rehearsal under way: which bot process runs it (a dead one's rehearsal is given up), since when."""

    owner: str
    started_at: str


class Hold(Record):
    """A go-time check put a claimed step back to pending; a human must look first."""

    step: str
    reason: str = ""
    blockers: list[str] = Field(default_factory=list)


class HoldOverride(Record):
    """A human saw the hold and chose to proceed anyway."""

    by: str
    at: str = ""
    step: str


class Reading(Record):
    """One row of the monitoring table, as shown."""

    name: str
    value: str = ""
    threshold: str = ""
    status: str = "unknown"
    icon: str = ""
    message: str = ""


class Monitoring(Record):
    """The latest monitoring readings after the deploy (the seed's step 7)."""

    taken_at: str = ""
    checks: list[Reading] = Field(default_factory=list)
    log_lines: list[str] = Field(default_factory=list)
    unavailable: dict[str, str] = Field(default_factory=dict)
    """Reading -> why it could not be taken."""


class RunFacts(Record):
    """What the run learned along the way; None means not known yet (the key is absent from the document)."""

    none_is_absent: ClassVar[bool] = True

    rehearsal_expected: bool = False
    """The backup will be rehearsed, and approval waits for the rehearsal."""
    pending: list[PendingMigration] | None = None
    review: Review | None = None
    waivers: dict[str, Waiver] = Field(default_factory=dict)
    """Finding key -> its waiver."""
    rehearsal: Rehearsal | None = None
    rehearsing: Rehearsing | None = None
    hold: Hold | None = None
    hold_override: HoldOverride | None = None
    monitoring: Monitoring | None = None
    release: Release | None = None
    """The git commit this run is pinned to (``migrate.source.git``); None for a run on a local directory."""
    code_review: CodeReview | None = None
    """The pull-request evidence for "script reviewed" (``review.github``), once asked."""


class RollbackStatus(StrEnum):
    AWAITING_SECOND_APPROVAL = "awaiting_second_approval"
    RUNNING = "running"


class DownSql(Record):
    """One down.sql that Option 1 would run, as it was shown: its migration and its sha256."""

    name: str
    checksum: str


class RollbackState(Record):
    """The rollback chosen for a run (Run.rollback): which option, who asked, who confirmed."""

    option: RollbackOption = RollbackOption.RESTORE
    requested_by: str = ""
    reason: str = ""
    requested_at: str = ""
    down: list[DownSql] = Field(default_factory=list)
    fingerprint: str | None = None
    """Of the down.sql scripts shown: the second person confirms exactly these."""
    review: Review | None = None
    from_status: RunStatus | None = None
    """The run's status when a revert was requested, to go back to if it is voided."""
    status: RollbackStatus | None = None
    approved_by: str | None = None
    approved_at: str | None = None


class StepState(BaseModel):
    name: str
    phase: str = "forward"
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    by: str | None = None
    owner: str | None = None
    progress: str | None = None
    result: SerializeAsAny[StepResult] = Field(default_factory=StepResult)
    error: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _result_of_its_kind(cls, data: Any) -> Any:
        """Read the result as the kind its step records (STEP_SPECS)."""
        if isinstance(data, dict) and data.get("name") in STEP_SPECS:
            kind = STEP_SPECS[data["name"]].result
            result = data.get("result")
            if not isinstance(result, kind):
                raw = result.model_dump() if isinstance(result, StepResult) else result
                data = {**data, "result": kind.model_validate(raw if raw is not None else {})}
        return data

    @property
    def label(self) -> str:
        return STEP_SPECS[self.name].label


class Run(BaseModel):
    """Everything the bot knows about one migration run; stored in Redis as JSON."""

    id: str
    env: str
    status: RunStatus = RunStatus.COLLECTING
    requested_by: str
    channel: str
    message_ts: str | None = None
    created_at: datetime
    updated_at: datetime
    version: int = 0
    approvals_required: int = 1
    checklist: dict[str, Confirmation] = Field(default_factory=dict)
    approvals: list[Approval] = Field(default_factory=list)
    steps: list[StepState] = Field(default_factory=list)
    image_tag: str | None = None
    fingerprint: str | None = None
    pending_migrations: list[str] = Field(default_factory=list)
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    failure: str | None = None
    rollback: RollbackState | None = None
    facts: RunFacts = Field(default_factory=RunFacts)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_active(self) -> bool:
        return not self.is_terminal

    def step(self, name: str) -> StepState:
        for step in self.steps:
            if step.name == name:
                return step
        raise WrongState(f"Run {self.id} has no step {name!r}.")

    def missing_items(self) -> list[str]:
        return [key for key in CHECKLIST_KEYS if key not in self.checklist]

    def approved_by(self) -> list[str]:
        return [a.by for a in self.approvals]


R = TypeVar("R", bound=StepResult)


def result_of(run: Run, kind: type[R]) -> R:
    """What the step that records ``kind`` recorded in this run; empty while it has not (or is not in the run)."""
    for step in run.steps:
        if step.name in STEP_SPECS and STEP_SPECS[step.name].result is kind:
            result = step.result
            return result if isinstance(result, kind) else kind.model_validate(result.model_dump())
    return kind()


def _result_for(name: str, result: StepResult) -> StepResult:
    """``result`` as the kind step ``name`` records."""
    kind = STEP_SPECS[name].result if name in STEP_SPECS else StepResult
    return result if isinstance(result, kind) else kind.model_validate(result.model_dump())


@dataclass
class AuditEvent:
    """One line of the append-only audit trail: who did what, when, and how it ended."""

    actor: str
    action: str
    outcome: str
    at: datetime
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Transition:
    run: Run
    events: list[AuditEvent]


@dataclass(frozen=True)
class Policy:
    """Who may do what in one environment, with user-group membership already resolved."""

    requesters: frozenset[str]
    approvers: frozenset[str]
    approvals_required: int

    def may_start(self, user: str, groups: Iterable[str] = ()) -> bool:
        return _member(user, groups, self.requesters)

    def may_approve(self, user: str, groups: Iterable[str] = ()) -> bool:
        return _member(user, groups, self.approvers)


def _member(user: str, groups: Iterable[str], allowed: frozenset[str]) -> bool:
    return user in allowed or any(group in allowed for group in groups)


def _touch(run: Run, now: datetime) -> Run:
    return run.model_copy(update={"version": run.version + 1, "updated_at": now}, deep=True)


def _running_copy(run: Run, name: str, now: datetime) -> tuple[Run, StepState]:
    """The next version of ``run`` and its step ``name``, which must be running."""
    step = run.step(name)
    if step.status is not StepStatus.RUNNING:
        raise WrongState(f"Step {name} is {step.status.value}, not running.")
    new = _touch(run, now)
    return new, new.step(name)


def steps_for(enabled: dict[str, bool]) -> list[StepState]:
    """The step list of a new run: every step whose switch in ``enabled`` is on (default on)."""
    return [StepState(name=name) for name in FORWARD_STEPS if enabled.get(name, True)]


def new_run(
    *,
    run_id: str,
    env: str,
    requested_by: str,
    channel: str,
    now: datetime,
    approvals_required: int,
    steps_enabled: dict[str, bool],
    image_tag: str | None = None,
    facts: RunFacts | None = None,
) -> Transition:
    run = Run(
        id=run_id,
        env=env,
        requested_by=requested_by,
        channel=channel,
        created_at=now,
        updated_at=now,
        version=1,
        approvals_required=approvals_required,
        steps=steps_for(steps_enabled),
        image_tag=image_tag,
        facts=facts.model_copy(deep=True) if facts else RunFacts(),
    )
    detail = f"image {image_tag}" if image_tag else ""
    events = [AuditEvent(requested_by, "run.start", "ok", now, detail)]
    if image_tag:  # an explicit override of the release's image (deploy.image_template): who chose what
        events.append(AuditEvent(requested_by, "deploy.image_override", "ok", now,
                                 f"--image {image_tag}: deployed instead of the image the release names",
                                 {"image": image_tag}))
    return Transition(run, events)


def record_message(run: Run, *, channel: str, ts: str) -> Transition:
    """The run's status message was posted: remember where. Only the first writer wins (one message per run)."""
    if run.message_ts:
        raise AlreadyDone("message already posted")
    new = run.model_copy(update={"message_ts": ts, "channel": channel}, deep=True)
    return Transition(new, [])


def _require_status(run: Run, allowed: Iterable[RunStatus], action: str) -> None:
    allowed = tuple(allowed)
    if run.status not in allowed:
        raise WrongState(f"Cannot {action}: run {run.id} is {run.status.value.replace('_', ' ')}.")


def confirm_item(run: Run, *, item: str, user: str, now: datetime, evidence: str | None = None) -> Transition:
    """Tick one checklist item. When the last one is ticked the run waits for approval."""
    if item not in CHECKLIST_LABELS:
        raise WrongState(f"Unknown checklist item {item!r}.")
    _require_status(run, (RunStatus.COLLECTING, RunStatus.AWAITING_APPROVAL), "confirm a checklist item")
    if item in STEP_CONFIRMS_ITEM.values():
        raise WrongState(f"“{CHECKLIST_LABELS[item]}” is confirmed by evidence: run the backup step instead.")
    if item in run.checklist:
        done = run.checklist[item]
        raise AlreadyDone(f"“{CHECKLIST_LABELS[item]}” was already confirmed by <@{done.by}>.")
    if item in NOT_BY_REQUESTER and user == run.requested_by:
        raise SelfApproval(f"You requested this run, so “{CHECKLIST_LABELS[item]}” is for the developer who "
                           "reviewed the migration to confirm.")
    new = _touch(run, now)
    new.checklist[item] = Confirmation(by=user, at=now, evidence=evidence)
    events = [AuditEvent(user, "checklist.confirm", "ok", now, CHECKLIST_LABELS[item], {"item": item})]
    if not new.missing_items() and new.status is RunStatus.COLLECTING:
        new.status = RunStatus.AWAITING_APPROVAL
        events.append(AuditEvent("bot", "run.awaiting_approval", "ok", now, "checklist complete"))
    return Transition(new, events)


def approve(run: Run, *, user: str, policy: Policy, groups: Iterable[str], now: datetime,
            fingerprint: str | None = None) -> Transition:
    """Record one approval; the two-person rule is enforced here, whatever the buttons showed."""
    if run.status is RunStatus.COLLECTING:
        missing = ", ".join(f"“{CHECKLIST_LABELS[key]}”" for key in run.missing_items())
        raise WrongState(f"Approval needs every checklist item confirmed first. Still open: {missing}.")
    _require_status(run, (RunStatus.AWAITING_APPROVAL,), "approve")
    if run.facts.rehearsal_expected and run.facts.rehearsal is None:
        raise WrongState("The rehearsal on the restored backup is still running; approve once it has passed.")
    if run.facts.rehearsal is not None and run.facts.rehearsal.ok is False:
        raise WrongState("The rehearsal on the restored backup failed, so this run cannot be approved. "
                         "Fix the migration and start a new run.")
    blocking = blocking_findings(run)
    if blocking:
        raise WrongState(f"{len(blocking)} high safety finding(s) need a waiver with a reason first "
                         "(or enable maintenance mode for this environment).")
    if user == run.requested_by:
        raise SelfApproval("You requested this run, so you cannot approve it. Ask another approver.")
    if user in run.approved_by():
        raise AlreadyDone("You have already approved this run; approvals from one person count once.")
    if not policy.may_approve(user, groups):
        raise NotAllowed(f"You are not on the approver list for {run.env}.")
    if not fingerprint:
        raise WrongState("The pending migrations could not be read, so there is nothing exact to approve.")
    if run.approvals and run.fingerprint and fingerprint != run.fingerprint:
        raise WrongState("The pending migrations changed since the first approval; they must be approved again.")
    new = _touch(run, now)
    new.approvals.append(Approval(by=user, at=now, fingerprint=fingerprint))
    new.fingerprint = fingerprint
    events = [AuditEvent(user, "run.approve", "ok", now, f"{len(new.approvals)}/{run.approvals_required}")]
    if len(new.approvals) >= run.approvals_required:
        new.status = RunStatus.RUNNING
        events.append(AuditEvent("bot", "run.approved", "ok", now, "all approvals in; steps may run"))
    return Transition(new, events)


def void_approvals(run: Run, *, reason: str, now: datetime) -> Transition:
    """Take back every approval (the migrations changed after they were approved)."""
    new = _touch(run, now)
    new.approvals = []
    new.fingerprint = None
    if new.status is RunStatus.RUNNING:
        new.status = RunStatus.AWAITING_APPROVAL
    return Transition(new, [AuditEvent("bot", "run.approval_voided", "ok", now, reason)])


def void_approvals_for_step(run: Run, *, name: str, reason: str, now: datetime) -> Transition:
    """Step ``name`` found the approved migrations changed before it did anything: every approval is voided and
    the step goes back to pending, unchanged."""
    transition = void_approvals(run, reason=reason, now=now)
    step = transition.run.step(name)
    step.status = StepStatus.PENDING
    step.owner = None
    step.progress = None
    return transition


def cancel(run: Run, *, user: str, now: datetime, reason: str = "") -> Transition:
    """Cancel a run that has not started changing anything yet, or that has stopped."""
    if run.is_terminal:
        raise AlreadyDone(f"Run {run.id} is already {run.status.value.replace('_', ' ')}.")
    running = [s.name for s in run.steps if s.status is StepStatus.RUNNING]
    if running:
        raise WrongState(f"Step {running[0]} is running; wait for it to finish before cancelling.")
    if maintenance_may_be_on(run):
        if RollbackOption.ABORT in rollback_options(run):
            raise WrongState("Maintenance mode is on for this run, so it cannot simply be closed: choose "
                             f"“{ROLLBACK_LABELS[RollbackOption.ABORT]}” (it turns maintenance off first).")
        raise WrongState("This run changed the environment and maintenance mode is on, so it cannot simply be "
                         "closed: retry the failed step, or roll back (every option ends with maintenance off).")
    if run.status is not RunStatus.FAILED and changed_environment(run):
        raise WrongState("This run has already changed the environment; finish it, or roll back, instead of "
                         "cancelling.")
    new = _touch(run, now)
    new.status = RunStatus.CANCELLED
    new.cancelled_by = user
    new.cancel_reason = reason or None
    return Transition(new, [AuditEvent(user, "run.cancel", "ok", now, reason)])


def may_cancel_run(run: Run, *, user: str, policy: Policy, groups: Iterable[str]) -> bool:
    """Its requester and approvers may cancel a run; other listed requesters only one that has not failed.

    A failed run holds the environment lock and its rollback choices: only its own requester or an approver
    may close it.
    """
    if user == run.requested_by or policy.may_approve(user, groups):
        return True
    return run.status is not RunStatus.FAILED and policy.may_start(user, groups)


def changed_environment(run: Run) -> bool:
    """Whether a step that changes the environment (anything but the backup) has started."""
    return any(step.name not in PRE_APPROVAL_STEPS and step.status is not StepStatus.PENDING
               and step.status is not StepStatus.SKIPPED for step in run.steps)


def may_cancel_now(run: Run) -> bool:
    return (run.is_active and not any(s.status is StepStatus.RUNNING for s in run.steps)
            and not maintenance_may_be_on(run)
            and (run.status is RunStatus.FAILED or not changed_environment(run)))


def maintenance_may_be_on(run: Run) -> bool:
    """This run turned maintenance mode on, or may have (its step failed or was interrupted half-way), and
    nothing has turned it off since: no run may end in this state."""
    on = _step_status(run, "maintenance_on")
    if on is None or on in (StepStatus.PENDING, StepStatus.SKIPPED):
        return False
    return not any(step.name in ("maintenance_off", "rb_maintenance_off") and step.status is StepStatus.SUCCEEDED
                   for step in run.steps)


def failed_step(run: Run) -> StepState | None:
    """The forward step whose failure stopped the run (FAILED runs only)."""
    if run.status is not RunStatus.FAILED:
        return None
    return next((s for s in run.steps if s.phase == "forward" and s.status is StepStatus.FAILED), None)


def may_retry(run: Run, name: str) -> bool:
    """A failed run may run its failed step again when that step is idempotent and no rollback is chosen."""
    failed = failed_step(run)
    return failed is not None and failed.name == name and name in RETRYABLE_AFTER_FAILURE and run.rollback is None


def current_phase(run: Run) -> str:
    return "rollback" if run.status in (RunStatus.ROLLING_BACK, RunStatus.ROLLED_BACK) else "forward"


def next_step(run: Run) -> StepState | None:
    """The first step of the current phase that is not finished (succeeded or skipped)."""
    phase = current_phase(run)
    for step in run.steps:
        if step.phase == phase and step.status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
            return step
    return None


PRE_APPROVAL_STEPS = frozenset({"backup"})
"""Steps that change nothing in the environment, so they may run while the checklist is collected.

The backup runs first because its evidence confirms the checklist item "Database backup completed and
verified", and a later rehearsal restores it before anyone approves.
"""

STEP_CONFIRMS_ITEM = {"backup": "backup_verified"}


def begin_step(run: Run, *, name: str, user: str, owner: str, now: datetime) -> Transition:
    """Claim a step for execution. Only the next step, and only once: a second click loses here."""
    if name in PRE_APPROVAL_STEPS:
        _require_status(run, (RunStatus.COLLECTING, RunStatus.AWAITING_APPROVAL, RunStatus.RUNNING),
                        f"run step {name}")
    elif name.startswith("rb_"):
        _require_status(run, (RunStatus.ROLLING_BACK,), f"run rollback step {name}")
    elif may_retry(run, name):
        pass  # the failed step again: the run resumes below
    else:
        _require_status(run, (RunStatus.RUNNING,), f"run step {name}")
        blocking = blocking_findings(run) if name == "migrate" else []
        if blocking:  # approved on the strength of maintenance mode, which was then skipped
            raise WrongState(f"{len(blocking)} high safety finding(s) were accepted because maintenance mode was "
                             "planned, and it was skipped: an approver must waive them with a reason first.")
    step = next_step(run)
    if step is None or step.name != name:
        current = run.step(name)
        if current.status is StepStatus.RUNNING:
            raise AlreadyDone(f"Step “{current.label}” is already running.")
        if current.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
            raise AlreadyDone(f"Step “{current.label}” is already {current.status.value}.")
        raise WrongState(f"Step “{current.label}” is not next; “{step.label if step else 'none'}” is.")
    if step.status is StepStatus.RUNNING:
        raise AlreadyDone(f"Step “{step.label}” is already running.")
    new = _touch(run, now)
    events: list[AuditEvent] = []
    if new.status is RunStatus.FAILED:
        new.status, new.failure = RunStatus.RUNNING, None
        events.append(AuditEvent(user, "run.resume", "ok", now, f"retrying {STEP_SPECS[name].label}", {"step": name}))
    target = new.step(name)
    target.status = StepStatus.RUNNING
    target.attempt += 1
    target.started_at = now
    target.finished_at = None
    target.by = user
    target.owner = owner
    target.error = None
    target.progress = None
    if new.facts.hold is not None and new.facts.hold.step == name:
        new.facts.hold = None
    action = "step.retry" if target.attempt > 1 else "step.start"
    events.append(AuditEvent(user, action, "ok", now, target.label, {"step": name, "attempt": target.attempt}))
    return Transition(new, events)


def report_progress(run: Run, *, name: str, progress: str, now: datetime) -> Transition:
    step = run.step(name)
    if step.status is not StepStatus.RUNNING:
        raise WrongState(f"Step {name} is not running.")
    new = _touch(run, now)
    new.step(name).progress = progress
    return Transition(new, [])


def remember_on_step(run: Run, *, name: str, values: StepResult) -> Transition:
    """Record facts on step ``name`` at once, before it acts, so a retry after a crash still has them."""
    new = run.model_copy(deep=True)
    step = new.step(name)
    kind = STEP_SPECS[name].result if name in STEP_SPECS else StepResult
    step.result = kind.model_validate({**step.result.model_dump(), **values.model_dump()})
    return Transition(new, [])


def finish_step(run: Run, *, name: str, result: StepResult, now: datetime, summary: str = "") -> Transition:
    new, target = _running_copy(run, name, now)
    target.status = StepStatus.SUCCEEDED
    target.finished_at = now
    recorded = _result_for(name, result)
    target.result = recorded.model_copy(update={"summary": summary}) if summary else recorded
    target.progress = None
    target.owner = None
    events = [AuditEvent("bot", "step.succeeded", "ok", now, summary or target.label, {"step": name})]
    if name == "backup" and may_rehearse(new):  # its restored copy is rehearsed next, by the same process
        new.facts.rehearsing = Rehearsing(owner=run.step(name).owner or "", started_at=now.isoformat())
    _after_success(new, name, summary or target.label, now, events)
    return Transition(new, events)


def _after_success(new: Run, name: str, evidence: str, now: datetime, events: list[AuditEvent]) -> None:
    """A finished step may confirm a checklist item with its evidence, and the last one starts monitoring."""
    item = STEP_CONFIRMS_ITEM.get(name)
    if item and item not in new.checklist:
        new.checklist[item] = Confirmation(by="bot", at=now, evidence=evidence)
        events.append(AuditEvent("bot", "checklist.evidence", "ok", now, f"{CHECKLIST_LABELS[item]}: {evidence}",
                                 {"item": item}))
        if not new.missing_items() and new.status is RunStatus.COLLECTING:
            new.status = RunStatus.AWAITING_APPROVAL
            events.append(AuditEvent("bot", "run.awaiting_approval", "ok", now, "checklist complete"))
    if new.status is RunStatus.RUNNING and next_step(new) is None:
        new.status = RunStatus.MONITORING
        events.append(AuditEvent("bot", "run.monitoring", "ok", now, "all steps done; watching the result"))
    elif new.status is RunStatus.ROLLING_BACK and next_step(new) is None:
        if new.rollback is not None and new.rollback.option is RollbackOption.ABORT:
            new.status = RunStatus.CANCELLED
            new.cancelled_by = new.rollback.requested_by
            new.cancel_reason = new.rollback.reason or "aborted: maintenance mode turned off"
            events.append(AuditEvent("bot", "run.cancel", "ok", now, "aborted; maintenance mode is off"))
            return
        new.status = RunStatus.ROLLED_BACK
        option = new.rollback.option.value if new.rollback else ""
        events.append(AuditEvent("bot", "run.rolled_back", "ok", now, f"rollback ({option}) complete"))


def fail_step(run: Run, *, name: str, error: str, now: datetime, result: StepResult | None = None,
              stop_run: bool = True) -> Transition:
    new, target = _running_copy(run, name, now)
    target.status = StepStatus.FAILED
    target.finished_at = now
    target.error = error
    target.owner = None
    target.progress = None
    if result is not None and result.model_dump():
        target.result = _result_for(name, result)
    events = [AuditEvent("bot", "step.failed", "failed", now, f"{target.label}: {error}", {"step": name})]
    if stop_run and new.status in (RunStatus.RUNNING, RunStatus.MONITORING):
        new.status = RunStatus.FAILED
        new.failure = f"{target.label} failed: {error}"
    return Transition(new, events)


def skip_step(run: Run, *, name: str, user: str, now: datetime) -> Transition:
    resuming = run.status is RunStatus.FAILED and (failed := failed_step(run)) is not None \
        and failed.name == name and run.rollback is None
    if not resuming:
        _require_status(run, (RunStatus.RUNNING, RunStatus.ROLLING_BACK), f"skip step {name}")
    step = next_step(run)
    if step is None or step.name != name:
        raise WrongState(f"Only the next step can be skipped, and {name} is not next.")
    if not STEP_SPECS[name].optional:
        raise NotAllowed(f"“{step.label}” cannot be skipped: the runbook requires it.")
    if step.status is StepStatus.RUNNING:
        raise WrongState(f"“{step.label}” is running.")
    new = _touch(run, now)
    if resuming:
        new.status, new.failure = RunStatus.RUNNING, None
    target = new.step(name)
    target.status = StepStatus.SKIPPED
    target.finished_at = now
    target.by = user
    events = [AuditEvent(user, "step.skip", "ok", now, target.label, {"step": name})]
    blocking = blocking_findings(new) if name == "maintenance_on" else []
    if blocking:
        events.append(AuditEvent("bot", "findings.gate_reopened", "ok", now,
                                 f"{len(blocking)} high finding(s) were accepted because maintenance mode was "
                                 "planned; it was skipped, so migrate waits for a waiver"))
    _after_success(new, name, f"skipped by <@{user}>", now, events)
    return Transition(new, events)


def interrupt_step(run: Run, *, name: str, now: datetime, why: str) -> Transition:
    """The process running a step died: mark it for a human. Never re-run it silently."""
    new, target = _running_copy(run, name, now)
    target.status = StepStatus.INTERRUPTED
    target.owner = None
    target.error = why
    return Transition(new, [AuditEvent("bot", "step.interrupted", "interrupted", now, f"{target.label}: {why}",
                                       {"step": name})])


def interrupt_abandoned(run: Run, *, name: str, owner: str, now: datetime, why: str) -> Transition:
    """``interrupt_step`` for a step whose process ``owner`` died; AlreadyDone if the step moved on meanwhile."""
    step = run.step(name)
    if step.status is not StepStatus.RUNNING or step.owner != owner:
        raise AlreadyDone("the step moved on")
    return interrupt_step(run, name=name, now=now, why=why)


def resolve_interrupted(run: Run, *, name: str, user: str, now: datetime, done: bool) -> Transition:
    """A human looked at reality after an interruption: mark the step done, or leave it to be retried."""
    step = run.step(name)
    by_hand = step.status is StepStatus.FAILED and name in CHECKABLE_BY_HAND and done
    if step.status is not StepStatus.INTERRUPTED and not by_hand:
        raise WrongState(f"Step {name} is {step.status.value}, not interrupted.")
    new = _touch(run, now)
    if by_hand and new.status is RunStatus.FAILED:
        new.status, new.failure = RunStatus.RUNNING, None
    target = new.step(name)
    if done:
        target.status = StepStatus.SUCCEEDED
        target.finished_at = now
        target.result = target.result.model_copy(update={"resolved_by": user})
        events = [AuditEvent(user, "step.mark_done", "ok", now, f"{target.label} checked by hand and marked done",
                             {"step": name})]
        why = "after it failed" if by_hand else "after an interruption"
        _after_success(new, name, f"checked by hand by <@{user}> {why}", now, events)
        return Transition(new, events)
    target.status = StepStatus.PENDING
    return Transition(new, [AuditEvent(user, "step.reset", "ok", now, f"{target.label} will be run again",
                                       {"step": name})])


def finish_run(run: Run, *, user: str, now: datetime, status: RunStatus, detail: str) -> Transition:
    new = _touch(run, now)
    new.status = status
    return Transition(new, [AuditEvent(user, f"run.{status.value}", "ok", now, detail)])


def close_monitored(run: Run, *, user: str, now: datetime) -> Transition:
    """The readings look good: a run being monitored is closed as succeeded."""
    if run.status is not RunStatus.MONITORING:
        raise AlreadyDone(f"Run {run.id} is {run.status.value}, not monitoring.")
    return finish_run(run, user=user, now=now, status=RunStatus.SUCCEEDED, detail="looks good; run closed")


def record_readings(run: Run, *, summary: Monitoring, now: datetime) -> Transition:
    """The latest monitoring readings after the deploy; audited as a warning when any is off its threshold."""
    new = _touch(run, now)
    new.facts.monitoring = summary.model_copy(deep=True)
    bad = [c for c in summary.checks if c.status in ("warn", "alert")]
    return Transition(new, [AuditEvent("bot", "monitoring.readings", "ok" if not bad else "warn", now,
                                       readings_verdict(summary.checks))])


def readings_verdict(checks: list[Reading]) -> str:
    """What the readings show, claiming nothing about those not taken: "2 of 6 readings available; none over
    threshold (not available: Error rate, …)", or the readings over threshold first."""
    if not checks:
        return "no readings taken"
    missing = [c.name for c in checks if c.status == "unknown"]
    bad = [f"{c.name} {c.value}" for c in checks if c.status in ("warn", "alert")]
    available = f"{len(checks) - len(missing)} of {len(checks)} readings available"
    if bad:
        verdict = "over threshold: " + ", ".join(bad) + f"; {available}"
    elif missing:
        verdict = f"{available}; none over threshold"
    else:
        verdict = f"{available}; all within thresholds"
    return verdict + (f" (not available: {', '.join(missing)})" if missing else "")


# ---- inspection and the safety gate --------------------------------------------------------------

def record_inspection(run: Run, *, pending: list[PendingMigration], review: Review, now: datetime) -> Transition:
    """Store what is pending and what the safety review found. Waivers for changed files are voided."""
    new = _touch(run, now)
    new.pending_migrations = [p.name for p in pending]
    new.facts.pending = [p.model_copy(deep=True) for p in pending]
    new.facts.review = review.model_copy(deep=True)
    checksums = {p.name: p.checksum for p in pending}
    waivers = dict(new.facts.waivers)
    voided = [key for key, w in waivers.items() if checksums.get(w.migration or "") != w.checksum]
    for key in voided:
        waivers.pop(key)
    new.facts.waivers = waivers
    names = ", ".join(new.pending_migrations) or "none"
    events = [AuditEvent("bot", "run.inspect", "ok", now, f"pending: {names}; review: {review.summary}")]
    if voided:
        events.append(AuditEvent("bot", "waiver.voided", "ok", now,
                                 f"{len(voided)} waiver(s) voided: the migration changed", {"keys": voided}))
    return Transition(new, events)


def maintenance_planned(run: Run) -> bool:
    """Maintenance mode is part of this run and has not been skipped."""
    return any(step.name == "maintenance_on" and step.status is not StepStatus.SKIPPED for step in run.steps)


def maintenance_skipped(run: Run) -> bool:
    return any(step.name == "maintenance_on" and step.status is StepStatus.SKIPPED for step in run.steps)


def blocking_findings(run: Run) -> list[Finding]:
    """High findings that still gate approval: none when maintenance mode is on for this run, else unwaived ones."""
    if maintenance_planned(run) or run.facts.review is None:
        return []
    return [f for f in run.facts.review.high if f.key not in run.facts.waivers]


def waive(run: Run, *, user: str, policy: Policy, groups: Iterable[str], reason: str, now: datetime) -> Transition:
    """An approver accepts every blocking high finding, with a reason; audited, voided if the file changes.

    Also while running, once maintenance mode (on whose strength the findings were accepted) was skipped.
    """
    allowed = (RunStatus.COLLECTING, RunStatus.AWAITING_APPROVAL) + (
        (RunStatus.RUNNING,) if maintenance_skipped(run) else ())
    _require_status(run, allowed, "waive findings")
    if user == run.requested_by:
        raise SelfApproval("You requested this run, so another approver must waive its findings.")
    if not policy.may_approve(user, groups):
        raise NotAllowed(f"Only approvers of {run.env} may waive safety findings.")
    reason = reason.strip()
    if len(reason) < 10:
        raise WrongState("Give a reason of at least a few words for the waiver.")
    blocking = blocking_findings(run)
    if not blocking:
        raise AlreadyDone("There are no high findings left to waive.")
    new = _touch(run, now)
    waivers = dict(new.facts.waivers)
    for finding in blocking:
        waivers[finding.key] = Waiver(by=user, reason=reason[:500], at=now.isoformat(),
                                      migration=finding.migration, checksum=finding.checksum)
    new.facts.waivers = waivers
    events = [AuditEvent(user, "finding.waive", "ok", now, f"{f.migration}: {f.message} — {reason[:200]}",
                         {"key": f.key}) for f in blocking]
    return Transition(new, events)


# ---- rollback (the seed's three options) ---------------------------------------------------------

def _step_status(run: Run, name: str) -> StepStatus | None:
    for step in run.steps:
        if step.name == name and step.phase == "forward":
            return step.status
    return None


def rollback_options(run: Run) -> list[RollbackOption]:
    """What can be undone depends on what this run did."""
    if run.status not in (RunStatus.FAILED, RunStatus.MONITORING, RunStatus.RUNNING):
        return []
    options: list[RollbackOption] = []
    migrate = _step_status(run, "migrate")
    with_down = result_of(run, MigrateResult).with_down
    if migrate is StepStatus.FAILED or (migrate is StepStatus.SUCCEEDED and with_down):
        options.append(RollbackOption.REVERT)
    backup_done = _step_status(run, "backup") is StepStatus.SUCCEEDED
    if backup_done and migrate in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.INTERRUPTED):
        options.append(RollbackOption.RESTORE)
    deploy = next((s for s in run.steps if s.name == "deploy" and s.phase == "forward"), None)
    if deploy is not None and deploy.status in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.INTERRUPTED) \
            and result_of(run, DeployResult).previous_task_definition:
        options.append(RollbackOption.PREVIOUS)
    nothing_applied = migrate in (None, StepStatus.PENDING)
    if maintenance_may_be_on(run) and nothing_applied and run.status in (RunStatus.RUNNING, RunStatus.FAILED):
        options.append(RollbackOption.ABORT)
    return options


def rollback_steps(run: Run, option: RollbackOption, *, ecs: bool, smoke: bool = False) -> list[StepState]:
    """The recorded sub-steps of ``option``, then the way back to a working site: maintenance mode off (when
    this run may have turned it on) and the smoke tests (when any are configured)."""
    if option is RollbackOption.REVERT:
        failed = _step_status(run, "migrate") is StepStatus.FAILED
        names = ["rb_resolve_failed" if failed else "rb_apply_down"]
    elif option is RollbackOption.PREVIOUS:
        names = ["rb_previous_version"]
    elif option is RollbackOption.ABORT:
        names = []
    else:
        names = (["rb_scale_down"] if ecs else []) + ["rb_restore_db"] + (["rb_redeploy"] if ecs else [])
    if maintenance_may_be_on(run):
        names.append("rb_maintenance_off")
    if smoke:
        names.append("rb_smoke")
    return [StepState(name=name, phase="rollback") for name in names]


def runs_down_sql(run: Run, option: RollbackOption) -> bool:
    """Option 1 on applied migrations runs their down.sql on production (a failed one is only marked)."""
    return option is RollbackOption.REVERT and _step_status(run, "migrate") is not StepStatus.FAILED


def needs_second_person(run: Run, option: RollbackOption) -> bool:
    """Option 2 (data loss) and any down.sql (SQL on production) wait for a second approver."""
    return option is RollbackOption.RESTORE or runs_down_sql(run, option)


def request_rollback(run: Run, *, option: RollbackOption, user: str, reason: str, now: datetime,
                     ecs: bool, policy: Policy, groups: Iterable[str], smoke: bool = False,
                     down: list[DownSql] | None = None, down_fingerprint: str | None = None,
                     down_review: Review | None = None) -> Transition:
    """Option 3 and marking a failed migration start at once; a restore or any down.sql waits for a second person.

    ``down`` is what Option 1 would run (name and sha256 of each down.sql, as shown in the thread) and
    ``down_fingerprint`` binds the second person's confirmation to exactly that.
    """
    chosen = run.rollback
    if chosen is not None and chosen.option is option and run.status in (RunStatus.ROLLING_BACK,
                                                                          RunStatus.ROLLED_BACK):
        raise AlreadyDone(f"{ROLLBACK_LABELS[option]} was already chosen by <@{chosen.requested_by}>.")
    if option not in rollback_options(run):
        raise WrongState(f"{ROLLBACK_LABELS[option]} is not available for this run.")
    if chosen is not None and chosen.status is RollbackStatus.AWAITING_SECOND_APPROVAL:
        raise AlreadyDone(f"{ROLLBACK_LABELS[chosen.option]} is already waiting for its second approval.")
    if not (user == run.requested_by or policy.may_approve(user, groups)):
        raise NotAllowed(f"Only the requester or an approver of {run.env} may start a rollback.")
    if any(s.status is StepStatus.RUNNING for s in run.steps):
        raise WrongState("A step is running; wait for it to finish before rolling back.")
    new = _touch(run, now)
    rollback = RollbackState(option=option, requested_by=user, reason=reason, requested_at=now.isoformat())
    events = [AuditEvent(user, "rollback.request", "ok", now, f"{ROLLBACK_LABELS[option]}: {reason}".rstrip(": "),
                         {"option": option.value})]
    if runs_down_sql(run, option):
        if not down or not down_fingerprint:
            raise WrongState("The down.sql scripts to run could not be read, so there is nothing to approve.")
        rollback.down = [script.model_copy() for script in down]
        rollback.fingerprint = down_fingerprint
        rollback.review = down_review.model_copy(deep=True) if down_review else Review()
        rollback.from_status = run.status
    new.rollback = rollback
    if needs_second_person(run, option):
        rollback.status = RollbackStatus.AWAITING_SECOND_APPROVAL
        return Transition(new, events)
    rollback.status = RollbackStatus.RUNNING
    new.status = RunStatus.ROLLING_BACK
    new.steps.extend(rollback_steps(run, option, ecs=ecs, smoke=smoke))
    return Transition(new, events)


def approve_rollback(run: Run, *, user: str, policy: Policy, groups: Iterable[str], now: datetime,
                     ecs: bool, smoke: bool = False, down_fingerprint: str | None = None) -> Transition:
    """The second person behind a restore from backup or a down.sql. Never the person who asked for it.

    For down.sql, ``down_fingerprint`` is what the scripts read now: it must be what was shown and reviewed.
    """
    pending = run.rollback
    if pending is None or pending.status is not RollbackStatus.AWAITING_SECOND_APPROVAL:
        raise AlreadyDone("There is no rollback waiting for approval.")
    option = pending.option
    what = "restore" if option is RollbackOption.RESTORE else "revert with down.sql"
    if user == pending.requested_by:
        raise SelfApproval(f"You asked for this {what}; a second approver must confirm it.")
    if not policy.may_approve(user, groups):
        raise NotAllowed(f"Only approvers of {run.env} may confirm a {what}.")
    if option is RollbackOption.REVERT and (not down_fingerprint or down_fingerprint != pending.fingerprint):
        raise WrongState("The down.sql scripts changed since they were shown and reviewed, so nothing was run. "
                         "Withdraw, and request Option 1 again to review them as they are now.")
    new = _touch(run, now)
    assert new.rollback is not None
    new.rollback.status = RollbackStatus.RUNNING
    new.rollback.approved_by = user
    new.rollback.approved_at = now.isoformat()
    new.status = RunStatus.ROLLING_BACK
    new.steps.extend(rollback_steps(run, option, ecs=ecs, smoke=smoke))
    return Transition(new, [AuditEvent(user, "rollback.approve", "ok", now, f"{what} confirmed",
                                       {"option": option.value})])


def void_rollback(run: Run, *, reason: str, now: datetime) -> Transition:
    """The down.sql changed after its second approval: nothing ran; back to choosing a rollback."""
    new = _touch(run, now)
    new.steps = [s for s in new.steps if not (s.phase == "rollback" and s.status in
                                               (StepStatus.PENDING, StepStatus.RUNNING))]
    from_status = run.rollback.from_status if run.rollback else None
    new.status = from_status or RunStatus.FAILED
    new.rollback = None
    return Transition(new, [AuditEvent("bot", "rollback.voided", "ok", now, reason)])


def withdraw_rollback(run: Run, *, user: str, now: datetime) -> Transition:
    pending = run.rollback
    if pending is None or pending.status is not RollbackStatus.AWAITING_SECOND_APPROVAL:
        raise AlreadyDone("There is no pending rollback to withdraw.")
    new = _touch(run, now)
    new.rollback = None
    what = "restore" if pending.option is RollbackOption.RESTORE else "revert"
    return Transition(new, [AuditEvent(user, "rollback.withdraw", "ok", now, f"{what} request withdrawn")])


# ---- evidence from the rehearsal and from staging; the go-time hold ------------------------------

def _evidence_for(new: Run, item: str, evidence: str, now: datetime, events: list[AuditEvent]) -> None:
    if item in new.checklist:
        return
    new.checklist[item] = Confirmation(by="bot", at=now, evidence=evidence)
    events.append(AuditEvent("bot", "checklist.evidence", "ok", now, f"{CHECKLIST_LABELS[item]}: {evidence}",
                             {"item": item}))
    if not new.missing_items() and new.status is RunStatus.COLLECTING:
        new.status = RunStatus.AWAITING_APPROVAL
        events.append(AuditEvent("bot", "run.awaiting_approval", "ok", now, "checklist complete"))


def may_rehearse(run: Run) -> bool:
    """The backup is done and no rehearsal is running or has a verdict (one that could not run may be redone)."""
    rehearsal = run.facts.rehearsal
    redo = rehearsal is not None and rehearsal.ok is False and not rehearsal.migrations
    backup = next((s for s in run.steps if s.name == "backup"), None)
    return (run.facts.rehearsal_expected and run.facts.rehearsing is None and (rehearsal is None or redo)
            and backup is not None and backup.status is StepStatus.SUCCEEDED
            and run.status in (RunStatus.COLLECTING, RunStatus.AWAITING_APPROVAL))


def begin_rehearsal(run: Run, *, user: str, owner: str, now: datetime) -> Transition:
    """Claim the rehearsal for process ``owner`` (once across replicas); a failed-to-run one starts afresh."""
    if run.facts.rehearsing is not None:
        if run.facts.rehearsing.owner == owner:
            return Transition(run, [])  # claimed with the backup whose restored copy it rehearses
        raise AlreadyDone("The rehearsal is already running.")
    if not may_rehearse(run):
        raise WrongState("There is no rehearsal to run for this run now.")
    new = _touch(run, now)
    again = new.facts.rehearsal is not None
    new.facts.rehearsal = None
    new.facts.rehearsing = Rehearsing(owner=owner, started_at=now.isoformat())
    return Transition(new, [AuditEvent(user, "rehearsal.retry" if again else "rehearsal.start", "ok", now,
                                       "rehearsing the pending migrations on the restored backup")])


def abandon_rehearsal(run: Run, *, owner: str, now: datetime) -> Transition:
    """The process rehearsing died: the rehearsal did not finish, and may be run again (AlreadyDone if it moved on)."""
    if run.facts.rehearsing is None or run.facts.rehearsing.owner != owner:
        raise AlreadyDone("the rehearsal moved on")
    new = _touch(run, now)
    new.facts.rehearsing = None
    return Transition(new, [AuditEvent("bot", "rehearsal.interrupted", "interrupted", now,
                                       "the bot process rehearsing stopped; rehearse again")])


def record_rehearsal(run: Run, *, report: Rehearsal, now: datetime) -> Transition:
    """A passed rehearsal is evidence for "tested in staging"; a failed one blocks approval (see approve)."""
    new = _touch(run, now)
    new.facts.rehearsing = None
    new.facts.rehearsal = report.model_copy(deep=True)
    ok = bool(report.ok)
    events = [AuditEvent("bot", "rehearsal", "ok" if ok else "failed", now, report.summary)]
    if ok and report.migrations:
        _evidence_for(new, "staging_tested", f"rehearsal passed: {report.summary}", now, events)
    elif new.status is RunStatus.AWAITING_APPROVAL:
        new.approvals = []
    return Transition(new, events)


def not_tested_in_staging(pending: list[PendingMigration], finished: Iterable[tuple[str, str]]) -> list[str]:
    """The pending migrations staging has not finished *in this exact version* (same name and checksum)."""
    done = {(name, checksum.lower()) for name, checksum in finished}
    return [p.name for p in pending if (p.name, p.checksum.lower()) not in done]


def record_staging_evidence(run: Run, *, staging_env: str, finished: Iterable[tuple[str, str]],
                            now: datetime) -> Transition:
    """Staging is evidence only if it finished every pending migration with the same checksum."""
    pending = run.facts.pending or []
    if not pending or not_tested_in_staging(pending, finished):
        raise WrongState(f"{staging_env} has not finished these exact migrations.")
    new = _touch(run, now)
    events: list[AuditEvent] = []
    _evidence_for(new, "staging_tested", f"all {len(pending)} pending migration(s) finished in {staging_env} "
                  "with the same checksums", now, events)
    return Transition(new, events)


def record_code_review(run: Run, *, review: CodeReview, now: datetime) -> Transition:
    """The pull requests of the run's commit: evidence for "script reviewed" when every pending migration's file
    has an independent approval; otherwise the item stays a click the requester may not make, with the reason."""
    release = run.facts.release
    if release is None or release.sha != review.sha:
        raise WrongState("The run is not pinned to the commit these reviews are about.")
    if review.error is None and sorted(f.migration for f in review.files) != sorted(run.pending_migrations):
        raise WrongState("The pending migrations changed since their reviews were read.")
    new = _touch(run, now)
    new.facts.code_review = review.model_copy(deep=True)
    events = [AuditEvent("bot", "review.github", "ok" if review.ok else "failed", now, review.reason())]
    if review.ok:
        _evidence_for(new, "script_reviewed", review.reason(), now, events)
    return Transition(new, events)


def hold_step(run: Run, *, name: str, now: datetime, reason: str, blockers: list[str]) -> Transition:
    """Put a claimed step back to pending because a pre-flight check found something a human must see."""
    new, target = _running_copy(run, name, now)
    target.status = StepStatus.PENDING
    target.owner = None
    target.progress = None
    target.error = f"held: {reason}"
    new.facts.hold = Hold(step=name, reason=reason, blockers=list(blockers))
    new.facts.hold_override = None
    return Transition(new, [AuditEvent("bot", "step.held", "held", now, f"{target.label}: {reason}", {"step": name})])


def override_hold(run: Run, *, user: str, policy: Policy, groups: Iterable[str], now: datetime) -> Transition:
    hold = run.facts.hold
    if hold is None:
        raise AlreadyDone("Nothing is on hold.")
    if not (user == run.requested_by or policy.may_approve(user, groups)):
        raise NotAllowed(f"Only the requester or an approver of {run.env} may proceed past a hold.")
    new = _touch(run, now)
    new.facts.hold_override = HoldOverride(by=user, at=now.isoformat(), step=hold.step)
    return Transition(new, [AuditEvent(user, "step.proceed_anyway", "ok", now,
                                       f"proceeding despite: {hold.reason}", {"step": hold.step})])
