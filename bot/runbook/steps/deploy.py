"""Seed step 5: deploy the new app version on ECS and wait for it to be stable."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.config import EnvironmentConfig
from bot.errors import BotError
from bot.runbook.engine import (
    StepContext,
    StepOutcome,
)
from bot.runbook.rules import DeployResult, MaintenanceOnResult, Release, Run, result_of

if TYPE_CHECKING:
    from bot.integrations.aws import Aws

log = logging.getLogger(__name__)


def planned_image(env: EnvironmentConfig, *, image_tag: str | None, release: Release | None) -> str | None:
    """The whole image reference a run will deploy, when it is known without asking ECS: an ``--image`` given
    as a whole reference, else ``deploy.image_template`` at the run's commit. None: a bare ``--image`` tag (its
    repository is the task definition's) or no new image at all."""
    if image_tag:
        return image_tag if "/" in image_tag else None
    if release is not None and release.sha:
        return env.deploy.image_for(release.sha)
    return None


def image_refusal(env: EnvironmentConfig, *, image_tag: str | None, release: Release | None) -> str | None:
    """At run start: one line when the image the deploy would use is not in ECR, so the requester learns early."""
    image = planned_image(env, image_tag=image_tag, release=release) if env.deploy.enabled else None
    if image is None:
        return None
    # boto3 is slow to import: loaded only when there is an image to check
    from bot.integrations.aws import Aws, ImageMissing

    try:  # a short budget: the answer goes in the slash command's ack
        Aws(region=env.aws.region, endpoint_url=env.aws.endpoint_url, call_timeout_s=2).require_image(image)
    except ImageMissing as exc:
        return f"Not started: {exc}"
    except BotError as exc:  # could not ask now: the deploy step asks again before it changes anything
        log.warning("image %s not checked at run start: %s", image, exc)
    return None


def _image(aws: Aws, env: EnvironmentConfig, run: Run, previous: str) -> str | None:
    """The image this deploy registers (None: redeploy what the service runs), checked in ECR first."""
    from bot.integrations.aws import with_image_tag

    image = planned_image(env, image_tag=run.image_tag, release=run.facts.release)
    if image is None and run.image_tag:  # a bare tag: on the app's repository, as the task definition names it
        image = with_image_tag(aws.app_image(previous), run.image_tag)
    if image is not None:
        aws.require_image(image)
    return image


def deploy(ctx: StepContext) -> StepOutcome:
    """Seed step 5: a new revision with the release's image (or --image's), else force a new deployment;
    remember previous-stable. Refuses before changing anything when ECR lacks the image."""
    aws, cfg = ctx.aws(), ctx.env.deploy
    assert cfg.cluster and cfg.service
    before = aws.service(cfg.cluster, cfg.service)
    maint = ctx.run.step("maintenance_on") if any(s.name == "maintenance_on" for s in ctx.run.steps) else None
    # A retry after a failure keeps the first attempt's previous-stable: by now the service may run the failed one.
    previous = (result_of(ctx.run, DeployResult).previous_task_definition
                or result_of(ctx.run, MaintenanceOnResult).previous_task_definition or before.task_definition)
    image = _image(aws, ctx.env, ctx.run, previous)
    ctx.remember(DeployResult(previous_task_definition=previous))
    target = previous
    if image:
        target = aws.register_revision_with_image(previous, image=image)
        aws.update_service(cfg.cluster, cfg.service, task_definition=target, force_new_deployment=True)
    elif maint and maint.status.value == "succeeded":
        aws.update_service(cfg.cluster, cfg.service, task_definition=previous, force_new_deployment=True)
    else:
        aws.update_service(cfg.cluster, cfg.service, force_new_deployment=True)
    aws.wait_stable(cfg.cluster, cfg.service, on_progress=lambda text: ctx.progress(str(text)))
    after = aws.service(cfg.cluster, cfg.service)
    shown = f", image {image.rsplit('/', 1)[-1]}" if image else ""
    return StepOutcome(f"{cfg.service} stable on {str(target).rsplit('/', 1)[-1]}{shown} "
                       f"({after.running_count}/{after.desired_count} running)",
                       DeployResult(previous_task_definition=previous, task_definition=target,
                                    desired_count=after.desired_count))
