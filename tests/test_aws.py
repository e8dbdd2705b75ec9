"""The AWS adapter against moto in server mode: RDS snapshots, versioned S3 uploads, ECS deploys, error lines."""

from __future__ import annotations

import boto3
import pytest

from bot.errors import BackupError, DeployError, IntegrationError
from bot.integrations.aws import Aws, split_image, with_image_tag
from tests.aws_world import make_ecs_service

REGION = "us-east-1"


def _raw(endpoint: str, service: str):
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def set_snapshot_status(snapshot_id: str, status: str) -> None:
    """Move a snapshot to a status moto never produces itself (moto's server shares this process's state)."""
    from moto.rds.models import rds_backends

    rds_backends["123456789012"][REGION].database_snapshots[snapshot_id].status = status


@pytest.fixture
def aws(moto_reset: str) -> Aws:
    """An adapter on a freshly reset moto, polling fast."""
    return Aws(region=REGION, endpoint_url=moto_reset, poll_interval_s=0.05, max_wait_s=2, call_timeout_s=10)


@pytest.fixture
def rds_instance(aws: Aws) -> str:
    """A PostgreSQL RDS instance called prod-db."""
    _raw(aws.endpoint_url, "rds").create_db_instance(
        DBInstanceIdentifier="prod-db", Engine="postgres", EngineVersion="16.3", DBInstanceClass="db.t3.micro",
        AllocatedStorage=20, MasterUsername="app", MasterUserPassword="password123",
    )
    return "prod-db"


class TestRdsSnapshots:
    def test_create_find_and_wait(self, aws, rds_instance):
        """A created snapshot is found by prefix and waiting reports 100 % once it is available."""
        made = aws.create_snapshot(rds_instance, "pre-migration-r1-20260101-000000", {"run": "r1"})
        assert made.instance_id == "prod-db" and made.arn.endswith(":snapshot:pre-migration-r1-20260101-000000")
        assert [s.id for s in aws.list_snapshots("pre-migration-r1-")] == [made.id]
        assert aws.list_snapshots("pre-migration-r2-") == []
        seen: list[int] = []
        done = aws.wait_snapshot(made.id, seen.append)
        assert done.status == "available" and done.percent_progress == 100 and seen == [100]

    def test_missing_instance_is_one_line(self, aws):
        """Snapshotting an instance that does not exist gives a one-line BackupError naming it."""
        with pytest.raises(BackupError) as info:
            aws.create_snapshot("no-such-db", "pre-migration-x-20260101-000000")
        text = str(info.value)
        assert text.startswith("RDS create_db_snapshot failed: DBInstanceNotFound")
        assert "no-such-db" in text and "\n" not in text

    def test_wait_times_out_or_fails(self, aws, rds_instance):
        """A snapshot stuck in creating times out with its status; one that failed is a BackupError at once."""
        aws.create_snapshot(rds_instance, "snap-slow")
        set_snapshot_status("snap-slow", "creating")
        quick = Aws(region=REGION, endpoint_url=aws.endpoint_url, poll_interval_s=0.05, max_wait_s=0.2)
        with pytest.raises(BackupError, match=r"snap-slow was not available within 0.2 s \(status creating, 0%\)"):
            quick.wait_snapshot("snap-slow")
        set_snapshot_status("snap-slow", "failed")
        with pytest.raises(BackupError, match="snap-slow ended in status failed"):
            aws.wait_snapshot("snap-slow")

    def test_restore_and_rename(self, aws, rds_instance):
        """An instance restored from a snapshot becomes available and can be renamed."""
        aws.create_snapshot(rds_instance, "snap-1")
        new_id = aws.restore_instance_from_snapshot("snap-1", "prod-db-restored", "db.t3.small")
        assert new_id == "prod-db-restored"
        aws.wait_instance_available(new_id)
        aws.rename_instance(new_id, "prod-db-2")
        assert aws.instance_status("prod-db-2") == "available"
        with pytest.raises(IntegrationError, match="DBInstanceNotFound"):
            aws.instance_status("prod-db-restored")


class TestS3:
    def test_unversioned_bucket_is_refused_with_the_fix(self, aws):
        """An unversioned bucket is refused with the command that enables versioning."""
        _raw(aws.endpoint_url, "s3").create_bucket(Bucket="plain")
        with pytest.raises(BackupError) as info:
            aws.require_versioning("plain")
        text = str(info.value)
        assert "versioning" in text and "runbook requires" in text
        assert "aws s3api put-bucket-versioning --bucket plain --versioning-configuration Status=Enabled" in text

    def test_missing_bucket_is_a_backup_error(self, aws):
        """A bucket that does not exist is named in a BackupError."""
        with pytest.raises(BackupError, match="NoSuchBucket"):
            aws.require_versioning("nope")

    def test_multipart_upload_keeps_versions(self, aws, tmp_path):
        """A 12 MiB upload goes in parts, returns its version id, and each version downloads byte for byte."""
        s3 = _raw(aws.endpoint_url, "s3")
        s3.create_bucket(Bucket="backups")
        s3.put_bucket_versioning(Bucket="backups", VersioningConfiguration={"Status": "Enabled"})
        aws.require_versioning("backups")
        first = tmp_path / "a.bin"
        first.write_bytes(b"a" * (12 * 1024 * 1024))
        one = aws.upload_file(first, "backups", "dumps/x.dump", part_size_mb=5, metadata={"sha256": "abc"})
        assert one.version_id and one.size == 12 * 1024 * 1024 and one.etag.endswith("-3")
        assert one.url == f"s3://backups/dumps/x.dump?versionId={one.version_id}"
        second = tmp_path / "b.bin"
        second.write_bytes(b"b" * 100)
        two = aws.upload_file(second, "backups", "dumps/x.dump")
        assert two.version_id != one.version_id
        assert aws.list_objects("backups", "dumps/") == [two]  # the current version only
        assert aws.object_metadata("backups", "dumps/x.dump", one.version_id) == {"sha256": "abc"}
        back = aws.download_file("backups", "dumps/x.dump", tmp_path / "back.bin", version_id=one.version_id)
        assert back.read_bytes() == first.read_bytes()
        assert aws.list_objects("backups", "other/") == []


@pytest.fixture
def ecs_service(aws: Aws) -> dict[str, str]:
    """A FARGATE service `api` (awsvpc) on task definition api:1, with api-maintenance:1 registered too."""
    return make_ecs_service(aws.endpoint_url, stable=False)


class TestEcs:
    def test_update_service_switches_task_definition(self, aws, ecs_service):
        """Pointing the service at the maintenance task definition shows in service()."""
        aws.update_service("prod", "api", task_definition="api-maintenance:1", desired_count=2)
        state = aws.service("prod", "api")
        assert "api-maintenance:1" in state.task_definition
        assert state.desired_count == 2 and state.running_count == 2

    def test_register_revision_with_image(self, aws, ecs_service):
        """A new revision re-tags the app image and leaves the sidecar alone."""
        arn = aws.register_revision_with_image("api:1", "v2")
        assert arn.endswith(":task-definition/api:2")
        images = [c["image"] for c in aws.describe_task_definition(arn)["containerDefinitions"]]
        assert images == [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:v2",
            "public.ecr.aws/aws-observability/aws-for-fluent-bit:2.32",
        ]
        assert aws.describe_task_definition("api:1")["containerDefinitions"][0]["image"].endswith("/api:v1")

    def test_wait_stable_returns_when_counts_match(self, aws, ecs_service):
        """After a desired-count update moto reports running == desired, and wait_stable returns it."""
        arn = aws.register_revision_with_image("api:1", "v2")
        aws.update_service("prod", "api", task_definition=arn, desired_count=2, force_new_deployment=True)
        seen = []
        state = aws.wait_stable("prod", "api", on_progress=seen.append)
        assert state.stable and state.running_count == 2 and seen
        assert str(seen[-1]) == "api:2: running 2/2, 1 deployment(s), IN_PROGRESS"

    def test_wait_stable_times_out_with_counts(self, aws, ecs_service):
        """A service that never reaches its desired count gives a DeployError with the counts."""
        quick = Aws(region=REGION, endpoint_url=aws.endpoint_url, poll_interval_s=0.05, max_wait_s=0.2)
        with pytest.raises(DeployError) as info:
            quick.wait_stable("prod", "api")
        assert str(info.value) == "ECS service api did not stabilise within 0.2 s (running 0/2)"

    def test_missing_service(self, aws, ecs_service):
        """Describing a service that does not exist names it."""
        with pytest.raises(DeployError, match="ECS service web not found in cluster prod"):
            aws.service("prod", "web")


class TestImageNames:
    @pytest.mark.parametrize(
        ("image", "tag", "expected"),
        [
            ("api:v1", "v2", "api:v2"),
            ("localhost:5000/team/api:v1", "v2", "localhost:5000/team/api:v2"),
            ("localhost:5000/team/api", "v2", "localhost:5000/team/api:v2"),
            ("repo/api@sha256:aaa", "v2", "repo/api:v2"),
            ("repo/api:v1", "sha256:bbb", "repo/api@sha256:bbb"),
        ],
    )
    def test_retag(self, image, tag, expected):
        """Tags replace tags and digests, registry ports are not mistaken for tags."""
        assert with_image_tag(image, tag) == expected
        assert split_image(expected)[0] == split_image(image)[0]


class TestClients:
    def test_clients_are_bounded_and_reused(self, aws):
        """Every client carries the call timeout and is built once."""
        assert aws.cloudwatch is aws.cloudwatch
        assert aws.logs.meta.config.read_timeout == 10
        assert aws.logs.meta.endpoint_url == aws.endpoint_url
