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
        aws.update_service(deploy.cluster, deploy.service, task_definition=cfg.task_definition)
        aws.wait_stable(deploy.cluster, deploy.service, on_progress=lambda text: ctx.progress(str(text)))
        return StepOutcome(f"ECS {deploy.service} on {cfg.task_definition}",
                           MaintenanceOnResult(previous_task_definition=before.task_definition, method=cfg.method))
    assert cfg.webhook_url
    set_maintenance_webhook(cfg.webhook_url, enabled=True, token=cfg.webhook_token)
    return StepOutcome("maintenance page on (webhook)", MaintenanceOnResult(method=cfg.method))


def maintenance_off(ctx: StepContext) -> StepOutcome:
    """Seed step 8: undo exactly what maintenance_on changed."""
    cfg = ctx.env.maintenance
    on = ctx.run.step("maintenance_on")
    if on.status.value == "skipped":
        return StepOutcome("maintenance mode was not on", MaintenanceOffResult())
    if cfg.method == "ecs_task_definition":
        aws, deploy = ctx.aws(), ctx.env.deploy
        assert deploy.cluster and deploy.service
        deployed = result_of(ctx.run, DeployResult).task_definition
        target = deployed or result_of(ctx.run, MaintenanceOnResult).previous_task_definition
        if not target:
            raise DeployError("Cannot tell which task definition to restore; set it by hand and mark the step done.")
        aws.update_service(deploy.cluster, deploy.service, task_definition=target)
        aws.wait_stable(deploy.cluster, deploy.service, on_progress=lambda text: ctx.progress(str(text)))
        return StepOutcome(f"ECS {deploy.service} back on {target.rsplit('/', 1)[-1]}",
                           MaintenanceOffResult(task_definition=target))
    assert cfg.webhook_url
    set_maintenance_webhook(cfg.webhook_url, enabled=False, token=cfg.webhook_token)
    return StepOutcome("maintenance page off (webhook)", MaintenanceOffResult())


def maintenance_off_after_rollback(ctx: StepContext) -> StepOutcome:
    """The way back ends with the site serving: undo maintenance mode, unless the rollback's own deploy already
    replaced the maintenance task definition (the ecs_task_definition method)."""
    cfg = ctx.env.maintenance
    if cfg.method == "ecs_task_definition":
        redeployed = [s for s in ctx.run.steps if s.phase == "rollback" and s.status is StepStatus.SUCCEEDED
                      and s.name in ("rb_redeploy", "rb_previous_version")]
        if redeployed:
            return StepOutcome(f"the rollback's deploy ({redeployed[-1].label.lower()}) replaced the maintenance "
                               "task definition", RollbackMaintenanceOffResult())
        aws, deploy = ctx.aws(), ctx.env.deploy
        assert deploy.cluster and deploy.service
        deployed = ctx.run.step("deploy").status is StepStatus.SUCCEEDED if any(
            s.name == "deploy" for s in ctx.run.steps) else False
        target = (result_of(ctx.run, DeployResult).task_definition if deployed else None) \
            or result_of(ctx.run, MaintenanceOnResult).previous_task_definition
        if not target:
            raise DeployError("Cannot tell which task definition to restore; set it by hand, then mark this step "
                              "done.")
        aws.update_service(deploy.cluster, deploy.service, task_definition=target)
        aws.wait_stable(deploy.cluster, deploy.service, on_progress=lambda text: ctx.progress(str(text)))
        return StepOutcome(f"ECS {deploy.service} back on {target.rsplit('/', 1)[-1]}",
                           RollbackMaintenanceOffResult(task_definition=target))
    assert cfg.webhook_url
    set_maintenance_webhook(cfg.webhook_url, enabled=False, token=cfg.webhook_token)
    return StepOutcome("maintenance page off (webhook)", RollbackMaintenanceOffResult())
