"""Seed step 5: deploy the new app version on ECS and wait for it to be stable."""

from __future__ import annotations

from bot.runbook.engine import (
    StepContext,
    StepOutcome,
)
from bot.runbook.rules import DeployResult, MaintenanceOnResult, result_of


def deploy(ctx: StepContext) -> StepOutcome:
    """Seed step 5: force a new deployment (or a new revision for --image), remember previous-stable."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    before = aws.service(cfg.cluster, cfg.service)
    maint = ctx.run.step("maintenance_on") if any(s.name == "maintenance_on" for s in ctx.run.steps) else None
    # A retry after a failure keeps the first attempt's previous-stable: by now the service may run the failed one.
    previous = (result_of(ctx.run, DeployResult).previous_task_definition
                or result_of(ctx.run, MaintenanceOnResult).previous_task_definition or before.task_definition)
    ctx.remember(DeployResult(previous_task_definition=previous))
    target = previous
    if ctx.run.image_tag:
        target = aws.register_revision_with_image(previous, ctx.run.image_tag)
        aws.update_service(cfg.cluster, cfg.service, task_definition=target, force_new_deployment=True)
    elif maint and maint.status.value == "succeeded":
        aws.update_service(cfg.cluster, cfg.service, task_definition=previous, force_new_deployment=True)
    else:
        aws.update_service(cfg.cluster, cfg.service, force_new_deployment=True)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda text: ctx.progress(str(text)))
    after = aws.service(cfg.cluster, cfg.service)
    return StepOutcome(f"{cfg.service} stable on {str(target).rsplit('/', 1)[-1]} "
                       f"({after.running_count}/{after.desired_count} running)",
                       DeployResult(previous_task_definition=previous, task_definition=target,
                                    desired_count=after.desired_count))
