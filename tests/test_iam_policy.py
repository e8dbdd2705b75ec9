"""deploy/iam-policy.json is enough and nothing extra: the bot's AWS paths run in moto with IAM enforced.

An admin builds the account (RDS instance, versioned bucket, ECS service, ECR image, metrics and logs) with IAM off;
then moto server's authorisation mode is switched on (``/moto-api/reset-auth``, the server-mode form of
``INITIAL_NO_AUTH_ACTION_COUNT``) and the bot's own code runs as a user holding only the policy, its credentials
given the way a deployment gives them (the environment).

What moto checks, and so what this file can prove by running: moto authorises every action of RDS, ECS, ECR,
CloudWatch and Logs against the resource ``*`` (it matches no ARN for them) and ignores conditions; only S3 is
checked per bucket and object ARN; CloudWatch's actions are named ``monitoring:…`` there. So the user gets the policy with the Resource of its non-S3 statements widened
to ``*`` and its conditions dropped, which leaves the actions (and S3's resources) to moto; the resource scoping of
the other statements, and the two statements AWS evaluates on calls moto does not authorise (``iam:PassRole`` and
``ecs:TagResource`` during RegisterTaskDefinition), are checked by a small evaluator of the policy's own text below.
"""

from __future__ import annotations

import copy
import fnmatch
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from bot.backup.rds import take_rds_snapshot_backup
from bot.integrations.aws import Aws, MetricQuery
from tests.aws_world import APP_IMAGE, client, make_ecs_service, make_rds_instance

ROOT = Path(__file__).resolve().parents[1]
POLICY_PATH = ROOT / "deploy" / "iam-policy.json"
REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "acme-migrate-backups"
LOG_GROUP = "/ecs/api"
EARLIER_SNAPSHOT = "pre-migration-R0-20261201-000000"  # an earlier run's backup, restored by rehearsal and rollback


def load_policy(bucket: str = BUCKET) -> dict[str, Any]:
    """The policy as an operator attaches it: BACKUP_BUCKET replaced by their bucket (README, "IAM")."""
    policy: dict[str, Any] = json.loads(POLICY_PATH.read_text().replace("BACKUP_BUCKET", bucket))
    return policy


def statement_ids() -> list[str]:
    return [s["Sid"] for s in load_policy()["Statement"]]


def as_moto_checks_it(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy with what moto cannot evaluate taken out: non-S3 resources widened to ``*``, conditions dropped,
    and CloudWatch's actions under the name moto authorises them by (its signing name, ``monitoring:``)."""
    widened = copy.deepcopy(policy)
    for statement in widened["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if not all(a.startswith("s3:") for a in actions):
            statement["Resource"] = "*"
        statement["Action"] = [a.replace("cloudwatch:", "monitoring:") for a in actions]
        statement.pop("Condition", None)
    return widened


def without(policy: dict[str, Any], sid: str) -> dict[str, Any]:
    trimmed = copy.deepcopy(policy)
    trimmed["Statement"] = [s for s in trimmed["Statement"] if s["Sid"] != sid]
    return trimmed


# -- the account -------------------------------------------------------------------------------------------------------


@dataclass
class Account:
    """The moto account: its endpoint and the restricted user whose policy a test may change."""

    endpoint: str
    admin_keys: dict[str, str]
    bot_keys: dict[str, str]

    def admin(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **self.admin_keys)

    def give_bot(self, policy: dict[str, Any]) -> None:
        """Replace the bot user's only (inline) policy; moto applies it to the next request."""
        self.admin("iam").put_user_policy(UserName="migrate-bot", PolicyName="migrate-bot",
                                          PolicyDocument=json.dumps(policy))


def _keys(iam: Any, user: str) -> dict[str, str]:
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def _build_world(endpoint: str) -> None:
    """RDS prod-db with an earlier backup, a versioned backup bucket, the ECS service, an ECR image, an ALB metric and an app log line."""
    make_rds_instance(endpoint)
    client(endpoint, "rds").create_db_snapshot(DBInstanceIdentifier="prod-db", DBSnapshotIdentifier=EARLIER_SNAPSHOT)
    s3 = client(endpoint, "s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    make_ecs_service(endpoint)  # also pushes the app's images api:v1 and api:v2 to ECR
    now = datetime.now(UTC)
    client(endpoint, "cloudwatch").put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
        {"MetricName": "RequestCount", "Dimensions": [{"Name": "LoadBalancer", "Value": "app/api/1"}],
         "Timestamp": now - timedelta(minutes=1), "Value": 120.0}])
    logs = client(endpoint, "logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="api/1")
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="api/1", logEvents=[
        {"timestamp": int((now - timedelta(minutes=1)).timestamp() * 1000), "message": "ERROR payment failed"}])


def _set_enforcement(endpoint: str, on: bool) -> None:
    httpx.post(endpoint + "/moto-api/reset-auth", content=b"0" if on else b"inf", timeout=10).raise_for_status()


@pytest.fixture
def account(moto_reset: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    """A fresh account; IAM enforced from the moment the test starts until it ends, whatever happens in it."""
    iam = client(moto_reset, "iam")
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    iam.create_user(UserName="migrate-bot")
    world = Account(endpoint=moto_reset, admin_keys=_keys(iam, "admin"), bot_keys=_keys(iam, "migrate-bot"))
    _build_world(moto_reset)
    # The bot reads its credentials from the environment, as in a deployment with keys (a task role is the same
    # thing through another provider of the default chain).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", world.bot_keys["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", world.bot_keys["aws_secret_access_key"])
    _set_enforcement(moto_reset, True)
    try:
        yield world
    finally:
        _set_enforcement(moto_reset, False)


def bot_aws(account: Account) -> Aws:
    return Aws(region=REGION, endpoint_url=account.endpoint, poll_interval_s=0.05, max_wait_s=5, call_timeout_s=10)


# -- the bot's paths, each as the runbook step calls it ------------------------------------------------------------------


def rds_backup(aws: Aws, account: Account, tmp: Path) -> None:
    """Step 1 with backup.method rds_snapshot: find this run's snapshot, else take one (tagged) and wait for it."""
    evidence = take_rds_snapshot_backup(run_id="R1", aws=aws, instance_id="prod-db", database_url=None)
    assert evidence.identifier.startswith("pre-migration-r1-")  # RDS lowercases identifiers


def rds_rehearsal(aws: Aws, account: Account, tmp: Path) -> None:
    """rehearsal.target rds_restore: a temporary instance from the backup, its endpoint, then deleted."""
    snapshot = EARLIER_SNAPSHOT
    aws.restore_instance_from_snapshot(snapshot, "rehearsal-R0-abc123")
    aws.wait_instance_available("rehearsal-R0-abc123")
    assert aws.instance_endpoint("rehearsal-R0-abc123")[0]
    aws.delete_instance("rehearsal-R0-abc123")


def rds_rollback(aws: Aws, account: Account, tmp: Path) -> None:
    """Rollback option 2 with rollback.rds_swap: restore beside prod-db, move prod-db aside, rename the copy in."""
    snapshot = EARLIER_SNAPSHOT
    aws.restore_instance_from_snapshot(snapshot, "prod-db-restored-1")
    aws.wait_instance_available("prod-db-restored-1")
    aws.rename_instance("prod-db", "prod-db-pre-restore-1")
    aws.rename_instance("prod-db-restored-1", "prod-db")
    assert aws.instance_status("prod-db") == "available"


def s3_backup(aws: Aws, account: Account, tmp: Path) -> None:
    """Step 1 with backup.method pg_dump to S3: versioning checked, a multipart upload, found again, fetched back."""
    aws.require_versioning(BUCKET)
    dump = tmp / "pre-migration-R1.dump"
    dump.write_bytes(b"x" * (6 * 1024 * 1024))  # over the 5 MiB part size: a multipart upload
    stored = aws.upload_file(dump, BUCKET, "migrations/pre-migration-R1.dump", part_size_mb=5,
                             metadata={"sha256": "abc"})
    [found] = aws.list_objects(BUCKET, "migrations/pre-migration-R1")
    assert found.version_id == stored.version_id
    assert aws.object_metadata(BUCKET, found.key, found.version_id) == {"sha256": "abc"}
    back = aws.download_file(BUCKET, found.key, tmp / "back.dump", version_id=found.version_id)
    assert back.stat().st_size == dump.stat().st_size


def ecs_deploy(aws: Aws, account: Account, tmp: Path) -> None:
    """Step 5 (and the maintenance switch and rollback option 1): a new revision with the image, the service moved."""
    before = aws.service("prod", "api")
    target = aws.register_revision_with_image(before.task_definition, "v2")
    aws.update_service("prod", "api", task_definition=target, force_new_deployment=True)
    assert aws.wait_stable("prod", "api").task_definition == target


def ecr_image(aws: Aws, account: Account, tmp: Path) -> None:
    """The deploy step's check that ECR holds the tag (ecr:DescribeImages, as the deploy step calls it)."""
    assert aws.require_image(APP_IMAGE.rsplit(":", 1)[0] + ":v2")


def cloudwatch_watch(aws: Aws, account: Account, tmp: Path) -> None:
    """The monitoring step and the watch: batched metrics, a percentile, the app's error lines."""
    end = datetime.now(UTC)
    start = end - timedelta(minutes=10)
    dims = {"LoadBalancer": "app/api/1"}
    values = aws.metric_values([MetricQuery("requests", "AWS/ApplicationELB", "RequestCount", dims, "Sum")], start, end)
    assert values["requests"] == [120.0]
    value, _ = aws.metric_percentile("AWS/ApplicationELB", "RequestCount", dims, start, end)
    assert value == 120.0
    [event] = aws.recent_log_events(LOG_GROUP, "ERROR", start, end)
    assert event.message == "ERROR payment failed"


PATHS: dict[str, Callable[[Aws, Account, Path], None]] = {
    "rds_backup": rds_backup, "rds_rehearsal": rds_rehearsal, "rds_rollback": rds_rollback, "s3_backup": s3_backup,
    "ecs_deploy": ecs_deploy, "ecr_image": ecr_image, "cloudwatch_watch": cloudwatch_watch,
}


def refused(line: str) -> bool:
    """An authorisation refusal as each service words it (AccessDenied, AccessDeniedException, not authorized)."""
    return "AccessDenied" in line or "not authorized" in line


def failing_paths(account: Account, tmp_path: Path) -> dict[str, str]:
    """Each path that fails, with the line it failed with."""
    failed = {}
    for name, path in PATHS.items():
        scratch = tmp_path / name
        scratch.mkdir(exist_ok=True)
        try:
            path(bot_aws(account), account, scratch)
        except Exception as exc:  # any failure counts; the tests then check each one is a refusal
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


# -- by running: every path passes with the policy, and each statement is needed by one ----------------------------------

# Statements AWS evaluates on calls moto does not authorise; checked by the evaluator below instead.
NOT_AUTHORISED_BY_MOTO = {
    "EcsTagNewRevisions": "ecs:TagResource is evaluated by AWS inside RegisterTaskDefinition when tags are given",
    "PassTheTaskRolesOnToEcs": "iam:PassRole is evaluated by AWS inside RegisterTaskDefinition for the task roles",
}


class TestEnforced:
    def test_enforcement_is_on(self, account, tmp_path):
        """Without any policy the bot's user is refused: the switch really enforces (else nothing here means anything)."""
        failed = failing_paths(account, tmp_path)
        assert sorted(failed) == sorted(PATHS)
        assert all(refused(line) for line in failed.values()), failed

    def test_every_path_passes_with_the_policy(self, account, tmp_path):
        """The bot's user holding exactly deploy/iam-policy.json runs every RDS, S3, ECS, ECR and CloudWatch path."""
        account.give_bot(as_moto_checks_it(load_policy()))
        failed = failing_paths(account, tmp_path)
        assert failed == {}, "\n".join(f"{k}: {v}" for k, v in failed.items())

    @pytest.mark.parametrize("sid", [s for s in statement_ids() if s not in NOT_AUTHORISED_BY_MOTO])
    def test_each_statement_is_needed(self, account, tmp_path, sid):
        """With any one statement removed, some path is refused (AccessDenied) and the others still pass."""
        account.give_bot(as_moto_checks_it(without(load_policy(), sid)))
        failed = failing_paths(account, tmp_path)
        assert failed, f"nothing failed without {sid}: the statement grants nothing the bot uses"
        assert all(refused(line) for line in failed.values()), failed

    def test_the_bucket_is_the_one_named(self, account, tmp_path):
        """S3 is checked by ARN in moto too: the policy written for another bucket does not reach this one."""
        account.give_bot(as_moto_checks_it(load_policy(bucket="someone-elses-bucket")))
        failed = failing_paths(account, tmp_path)
        assert sorted(failed) == ["s3_backup"] and "AccessDenied" in failed["s3_backup"]


# -- by reading: the resource scoping and conditions moto does not evaluate ----------------------------------------------


def allowed(policy: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    """Whether an Allow statement of ``policy`` covers the request (IAM's `*`/`?` wildcards, StringEquals only)."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Effect"] != "Allow" or not any(fnmatch.fnmatchcase(action, a) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        conditions = statement.get("Condition", {})
        assert set(conditions) <= {"StringEquals"}, f"{statement['Sid']}: teach allowed() its condition operator"
        if all((context or {}).get(key) == value for key, value in conditions.get("StringEquals", {}).items()):
            return True
    return False


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/api-task"
SCOPED = [  # (action, resource, context, allowed?) as AWS would evaluate the bot's calls, and what must stay refused
    ("rds:CreateDBSnapshot", arn("rds", "snapshot:pre-migration-R1-20261201-000000"), None, True),
    ("rds:CreateDBSnapshot", arn("rds", "snapshot:nightly-2026-12-01"), None, False),
    ("rds:RestoreDBInstanceFromDBSnapshot", arn("rds", "snapshot:pre-migration-R1-20261201-000000"), None, True),
    ("rds:RestoreDBInstanceFromDBSnapshot", arn("rds", "snapshot:rds:prod-db-2026-12-01"), None, False),
    ("rds:DeleteDBInstance", arn("rds", "db:rehearsal-R1-abc123"), None, True),
    ("rds:DeleteDBInstance", arn("rds", "db:prod-db"), None, False),
    ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/migrations/pre-migration-R1.dump", None, True),
    ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/migrations/pre-migration-R1.dump", None, False),
    ("s3:PutObject", "arn:aws:s3:::another-bucket/x", None, False),
    ("ecs:UpdateService", arn("ecs", "service/prod/api"), None, True),
    ("ecs:TagResource", arn("ecs", "task-definition/api:2"), {"ecs:CreateAction": "RegisterTaskDefinition"}, True),
    ("ecs:TagResource", arn("ecs", "task-definition/api:2"), None, False),
    ("iam:PassRole", TASK_ROLE, {"iam:PassedToService": "ecs-tasks.amazonaws.com"}, True),
    ("iam:PassRole", TASK_ROLE, {"iam:PassedToService": "ec2.amazonaws.com"}, False),
    ("ecr:DescribeImages", arn("ecr", "repository/api"), None, True),
    ("logs:FilterLogEvents", arn("logs", "log-group:/ecs/api"), None, True),
]


class TestScoping:
    @pytest.mark.parametrize("action,resource,context,expected", SCOPED,
                             ids=[f"{a}-{'allow' if e else 'deny'}-{r.rsplit(':', 1)[-1]}" for a, r, _, e in SCOPED])
    def test_scoped_by_resource_and_condition(self, action, resource, context, expected):
        """The bot may snapshot under its prefix, delete only rehearsal copies, pass roles only to ECS tasks."""
        assert allowed(load_policy(), action, resource, context) is expected

    @pytest.mark.parametrize("sid", sorted(NOT_AUTHORISED_BY_MOTO))
    def test_statements_moto_does_not_authorise_are_needed(self, sid):
        """Without the statement, the request it exists for is no longer allowed."""
        case = {"EcsTagNewRevisions": SCOPED[10], "PassTheTaskRolesOnToEcs": SCOPED[12]}[sid]
        action, resource, context, _ = case
        assert allowed(load_policy(), action, resource, context)
        assert not allowed(without(load_policy(), sid), action, resource, context)

    def test_every_call_the_adapter_makes_is_in_the_policy(self):
        """Each boto3 operation bot/integrations/aws.py calls maps to actions the policy names, and the policy names
        no other: a new call there fails here until its action is added to deploy/iam-policy.json."""
        import re

        source = (ROOT / "bot" / "integrations" / "aws.py").read_text()
        calls = {f"{service}.{operation}" for service, operation in
                 re.findall(r"\b(?:self\.)?(rds|s3|ecs|cloudwatch|logs|ecr)\.([a-z_]+)\b", source)}
        calls |= {f"paginate.{operation}" for operation in re.findall(r'get_paginator\("([a-z_]+)"\)', source)}
        calls -= {"rds.get_paginator", "s3.get_paginator", "s3.transfer"}  # a paginator, and boto3's import
        assert calls <= set(ACTIONS_OF_CALL), f"add the IAM actions of {sorted(calls - set(ACTIONS_OF_CALL))}"
        # Called at run time by ecs.register_task_definition (tags, task roles) and by h14b's image check.
        needed = {a for call in calls for a in ACTIONS_OF_CALL[call]} | {"ecs:TagResource", "iam:PassRole",
                                                                         "ecr:DescribeImages"}
        policy_actions = {a for s in load_policy()["Statement"]
                          for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
        assert policy_actions == needed


# The IAM actions each boto3 call of the adapter needs (the S3 transfer manager's calls included).
ACTIONS_OF_CALL = {
    "rds.describe_db_snapshots": ["rds:DescribeDBSnapshots"], "paginate.describe_db_snapshots": ["rds:DescribeDBSnapshots"],
    "rds.create_db_snapshot": ["rds:CreateDBSnapshot", "rds:AddTagsToResource"],
    "rds.describe_db_instances": ["rds:DescribeDBInstances"],
    "rds.restore_db_instance_from_db_snapshot": ["rds:RestoreDBInstanceFromDBSnapshot"],
    "rds.delete_db_instance": ["rds:DeleteDBInstance"], "rds.modify_db_instance": ["rds:ModifyDBInstance"],
    "s3.get_bucket_versioning": ["s3:GetBucketVersioning"], "s3.head_object": ["s3:GetObject", "s3:GetObjectVersion"],
    "s3.upload_file": ["s3:PutObject", "s3:AbortMultipartUpload"],
    "s3.download_file": ["s3:GetObject", "s3:GetObjectVersion"],
    "paginate.list_object_versions": ["s3:ListBucketVersions"],
    "ecs.describe_services": ["ecs:DescribeServices"], "ecs.update_service": ["ecs:UpdateService"],
    "ecs.describe_task_definition": ["ecs:DescribeTaskDefinition"],
    "ecs.register_task_definition": ["ecs:RegisterTaskDefinition"],
    "ecr.describe_images": ["ecr:DescribeImages"],
    "cloudwatch.get_metric_data": ["cloudwatch:GetMetricData"],
    "cloudwatch.get_metric_statistics": ["cloudwatch:GetMetricStatistics"],
    "logs.filter_log_events": ["logs:FilterLogEvents"],
}
