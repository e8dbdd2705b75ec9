"""Seed steps 2 and 8: maintenance mode on and off, through the app's webhook."""

from __future__ import annotations

from bot.errors import DeployError
from bot.integrations.http import set_maintenance_webhook
from bot.runbook.engine import (
    StepContext,
    StepOutcome,
)
from bot.runbook.rules import (
    DeployResult,
    MaintenanceOffResult,
    MaintenanceOnResult,
    RollbackMaintenanceOffResult,
    StepStatus,
    result_of,
)


def maintenance_on(ctx: StepContext) -> StepOutcome:
    """Seed step 2: switch the app to its 503 page (ECS task definition or the app's webhook)."""
    cfg = ctx.env.maintenance
    if cfg.method == "ecs_task_definition":
        aws, deploy = ctx.aws(), ctx.env.deploy
        assert deploy.cluster and deploy.service and cfg.task_definition
        before = aws.service(deploy.cluster, deploy.service)
        # Remembered before ECS is switched: if the bot dies mid-switch and a person marks the step done, the deploy
        # and the way back still know what the app ran (not the maintenance task definition now on the service).
        ctx.remember(MaintenanceOnResult(previous_task_definition=before.task_definition, method=cfg.method))
        aws.update_service(deploy.cluster, deploy.service, task_definition=cfg.task_definition)
        aws.wait_stable(deploy.cluster, deploy.service, on_progress=lambda text: ctx.progress(str(text)))
        return StepOutcome(f"ECS {deploy.service} on {cfg.task_definition}",
                           MaintenanceOnResult(previous_task_definition=before.task_definition, method=cfg.method))
    assert cfg.webhook_url
    set_maintenance_webhook(cfg.webhook_url, enabled=True, token=cfg.webhook_token)
    return StepOutcome("maintenance page on (webhook)", MaintenanceOnResult(method=cfg.method))


def maintenance_off(ctx: StepContext) -> StepOutcome:
    """Seed step 8: undo exactly what maintenance_on changed."""
    if ctx.run.step("maintenance_on").status is StepStatus.SKIPPED:
        return StepOutcome("maintenance mode was not on", MaintenanceOffResult())
    summary, target = _switch_off(ctx, result_of(ctx.run, DeployResult).task_definition)
    return StepOutcome(summary, MaintenanceOffResult(task_definition=target))


def maintenance_off_after_rollback(ctx: StepContext) -> StepOutcome:
    """The way back ends with the site serving: undo maintenance mode, unless the rollback's own deploy already
    replaced the maintenance task definition (the ecs_task_definition method)."""
    if ctx.env.maintenance.method == "ecs_task_definition":
        redeployed = [s for s in ctx.run.steps if s.phase == "rollback" and s.status is StepStatus.SUCCEEDED
                      and s.name in ("rb_redeploy", "rb_previous_version")]
        if redeployed:
            return StepOutcome(f"the rollback's deploy ({redeployed[-1].label.lower()}) replaced the maintenance "
                               "task definition", RollbackMaintenanceOffResult())
    deploy = next((s for s in ctx.run.steps if s.name == "deploy" and s.phase == "forward"), None)
    deployed = deploy is not None and deploy.status is StepStatus.SUCCEEDED
    summary, target = _switch_off(ctx, result_of(ctx.run, DeployResult).task_definition if deployed else None)
    return StepOutcome(summary, RollbackMaintenanceOffResult(task_definition=target))


def _switch_off(ctx: StepContext, deployed: str | None) -> tuple[str, str | None]:
    """Maintenance mode off: the app's webhook, or the ECS service back on ``deployed`` (else what ran before)."""
    cfg = ctx.env.maintenance
    if cfg.method != "ecs_task_definition":
        assert cfg.webhook_url
        set_maintenance_webhook(cfg.webhook_url, enabled=False, token=cfg.webhook_token)
        return "maintenance page off (webhook)", None
    aws, deploy = ctx.aws(), ctx.env.deploy
    assert deploy.cluster and deploy.service
    target = deployed or result_of(ctx.run, MaintenanceOnResult).previous_task_definition
    if not target:
        raise DeployError("Cannot tell which task definition to restore; set it by hand, then mark this step done.")
    aws.update_service(deploy.cluster, deploy.service, task_definition=target)
    aws.wait_stable(deploy.cluster, deploy.service, on_progress=lambda text: ctx.progress(str(text)))
    return f"ECS {deploy.service} back on {target.rsplit('/', 1)[-1]}", target
