"""The image comes from the run's commit: `deploy.image_template` at the pinned SHA, and only if ECR holds it.

Real parts: the bot as a subprocess behind its signed endpoint, the Slack stand-in, Redis, PostgreSQL, moto in server
mode for ECS and ECR (`ecr:DescribeImages`), and the demo app. Until the git source lands (issue 14, h14a), a run
is pinned by writing `facts.release` on the run the bot started, before anything reads it.
"""

from __future__ import annotations

from bot.runbook.rules import Release, Run, Transition
from tests.aws_world import client, push_images
from tests.e2e import IMAGE_TEMPLATE, approve, blocks_text, click, ready_for_approval, run_step, start
from tests.harness import ALICE, PROD_CHANNEL, wait_until

SHA = "9b2e4c6a8d0f1e3c5a7b9d2f4e6a8c0b1d3f5e7a"
IMAGE = IMAGE_TEMPLATE.format(sha=SHA)
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def pin(run: Run) -> Transition:
    """What the git source records at run start: the commit the run reads everything from."""
    new = run.model_copy(update={"version": run.version + 1}, deep=True)
    new.facts.release = Release(sha=SHA, ref="v1.5.0")
    return Transition(new, [])


def up_to_deploy(world) -> tuple[str, str]:
    run_id, ts = start(world, "prod")
    world["store"].apply(run_id, pin)
    ready_for_approval(world, run_id, ts)
    approve(world, run_id, ts)
    run_step(world, run_id, ts, "maintenance_on")
    run_step(world, run_id, ts, "migrate")
    return run_id, ts


def app_revisions(world) -> list[str]:
    return client(world["moto"], "ecs").list_task_definitions(familyPrefix="api")["taskDefinitionArns"]


def service_image(world) -> str:
    ecs = client(world["moto"], "ecs")
    service = ecs.describe_services(cluster="prod", services=["api"])["services"][0]
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    return str(definition["containerDefinitions"][0]["image"])


class TestImageFromTheCommit:
    def test_deploy_registers_the_image_the_commit_names(self, fresh):
        world = fresh
        push_images(world["moto"], "api", [SHA])  # CI built and pushed the release's image
        run_id, ts = up_to_deploy(world)
        before = app_revisions(world)
        run_step(world, run_id, ts, "deploy")
        assert service_image(world) == IMAGE
        ecs = client(world["moto"], "ecs")
        new = ecs.describe_task_definition(taskDefinition=sorted(set(app_revisions(world)) - set(before))[0])
        sidecar = new["taskDefinition"]["containerDefinitions"][1]
        assert sidecar["image"].startswith("public.ecr.aws/aws-observability/")  # only the app's image changes
        wait_until(lambda: f"image api:{SHA}" in blocks_text(world, ts))

    def test_refused_when_ecr_lacks_the_tag_then_retried_once_pushed(self, fresh):
        world = fresh
        run_id, ts = up_to_deploy(world)
        before = app_revisions(world)
        run_step(world, run_id, ts, "deploy", expect="failed")
        error = world["store"].get(run_id).step("deploy").error or ""
        assert error == (f"ECR repository api (account 123456789012, us-east-1) has no image with tag {SHA}: build "
                         "and push that image (or wait for CI to), then try again.")
        wait_until(lambda: f"has no image with tag {SHA}" in blocks_text(world, ts))
        assert app_revisions(world) == before  # nothing registered
        assert "api-maintenance" in client(world["moto"], "ecs").describe_services(
            cluster="prod", services=["api"])["services"][0]["taskDefinition"]  # the service was left alone
        push_images(world["moto"], "api", [SHA])
        wait_until(lambda: "Retry: " in blocks_text(world, ts))
        click(world, ts, ALICE, "step_run:deploy")  # the Retry button: the guarded step runs again
        store = world["store"]
        wait_until(lambda: store.get(run_id).step("deploy").attempt == 2
                   and store.get(run_id).step("deploy").status.value in ("succeeded", "failed"), timeout=60)
        assert store.get(run_id).step("deploy").status.value == "succeeded"
        assert service_image(world) == IMAGE


class TestImageOverride:
    def test_missing_override_image_refused_at_start_and_a_present_one_audited(self, fresh):
        world = fresh
        fake, store, sender = world["fake"], world["store"], world["sender"]
        assert sender.slash(ALICE, f"prod --image {ECR}/api:not-built", channel_id=PROD_CHANNEL).status_code == 200
        line = wait_until(lambda: next((e["text"] for e in fake.ephemerals(ALICE)
                                        if "not-built" in (e.get("text") or "")), None), timeout=20)
        assert line == ("Not started: ECR repository api (account 123456789012, us-east-1) has no image with tag "
                        "not-built: build and push that image (or wait for CI to), then try again.")
        assert store.active_run("prod") is None
        run_id, ts = start(world, f"prod --image {ECR}/api:v2")
        entries = [e for e in store.audit_entries(run_id) if e.action == "deploy.image_override"]
        assert [(e.actor, e.data.get("image")) for e in entries] == [(ALICE, f"{ECR}/api:v2")]
        assert sender.slash(ALICE, f"cancel {run_id}", channel_id=PROD_CHANNEL).status_code == 200
        wait_until(lambda: store.get(run_id).status.value == "cancelled")


class TestImageTemplateConfig:
    def test_a_template_that_names_no_commit_is_refused_in_one_line(self, tmp_path):
        from bot.config import load_config
        from bot.errors import ConfigError
        from tests.harness import base_config, write_config

        for template, why in [(f"{ECR}/api:latest", "must contain {sha} or {short}"),
                              (f"{ECR}/api:{{sha}}-{{branch}}", "may only use {sha} and {short}")]:
            config = base_config(deploy={"cluster": "prod", "service": "api", "image_template": template})
            try:
                load_config(write_config(tmp_path / "env.yml", config))
            except ConfigError as exc:
                line = str(exc)
                assert "environments.prod.deploy.image_template: image_template " + why in line and "\n" not in line
            else:
                raise AssertionError(f"{template} was accepted")
        config = base_config(deploy={"cluster": "prod", "service": "api", "image_template": f"{ECR}/api:{{short}}"})
        deploy = load_config(write_config(tmp_path / "env.yml", config)).environments["prod"].deploy
        assert deploy.image_for(SHA) == f"{ECR}/api:{SHA[:7]}"
