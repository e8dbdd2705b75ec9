"""AWS: RDS snapshots and restores, versioned S3 backups, ECS deploys, ECR images; every boto3 call bounded and translated."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from bot.errors import BackupError, DeployError, IntegrationError

T = TypeVar("T")

SNAPSHOT_FAILED_STATUSES = frozenset({"failed", "error", "incompatible-restore", "incompatible-parameters"})
INSTANCE_FAILED_STATUSES = frozenset(
    {"failed", "incompatible-restore", "incompatible-parameters", "incompatible-network", "inaccessible-encryption-credentials", "storage-full"}
)

# Fields of describe_task_definition that register_task_definition accepts back.
_REGISTERABLE_FIELDS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
)


@dataclass(frozen=True)
class Snapshot:
    """A manual RDS DB snapshot as the bot needs it."""

    id: str
    instance_id: str
    status: str
    percent_progress: int
    created_at: datetime | None
    arn: str


@dataclass(frozen=True)
class S3Object:
    """One version of one S3 object."""

    bucket: str
    key: str
    version_id: str | None
    size: int
    etag: str

    @property
    def url(self) -> str:
        """``s3://bucket/key`` with ``?versionId=`` when the object is versioned."""
        base = f"s3://{self.bucket}/{self.key}"
        return f"{base}?versionId={self.version_id}" if self.version_id and self.version_id != "null" else base


@dataclass(frozen=True)
class ServiceState:
    """An ECS service's deployment state at one moment."""

    task_definition: str
    desired_count: int
    running_count: int
    deployments: int
    rollout_state: str | None

    @property
    def stable(self) -> bool:
        """The services_stable rule: one deployment and running equals desired."""
        return self.deployments == 1 and self.running_count == self.desired_count

    def __str__(self) -> str:
        td = self.task_definition.rsplit("/", 1)[-1]
        rollout = f", {self.rollout_state}" if self.rollout_state else ""
        return f"{td}: running {self.running_count}/{self.desired_count}, {self.deployments} deployment(s){rollout}"


def split_image(image: str) -> tuple[str, str | None]:
    """Split ``registry/repo:tag`` or ``repo@sha256:…`` into (repository, tag-or-digest or None)."""
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, None


def with_image_tag(image: str, tag: str) -> str:
    """``image`` pointing at ``tag`` (a tag, or a ``sha256:…`` digest)."""
    repo, _ = split_image(image)
    return f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag}"


_ECR_HOST = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


class ImageMissing(DeployError):
    """ECR answered: the repository or the image is not there (not a failure to ask)."""


@dataclass(frozen=True)
class EcrImage:
    """An image reference in an ECR registry: ``<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>``."""

    account: str
    region: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        return f"tag {self.tag}" if self.tag else f"digest {self.digest}"


def ecr_image(image: str) -> EcrImage | None:
    """``image`` as an ECR reference, or None when it names another registry (or no tag or digest)."""
    host, slash, rest = image.partition("/")
    match = _ECR_HOST.match(host)
    if not slash or not match:
        return None
    repository, tag = split_image(rest)
    if not tag:
        return None
    digest = tag if tag.startswith("sha256:") else None
    return EcrImage(match["account"], match["region"], repository, None if digest else tag, digest)


def _fmt_seconds(value: float) -> str:
    return f"{value:g}"


class Aws:
    """Thin, bounded adapter over the boto3 clients the runbook uses (RDS, S3, ECS, CloudWatch, Logs)."""

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        poll_interval_s: float = 15.0,
        max_wait_s: float = 3600.0,
        call_timeout_s: float = 30.0,
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.poll_interval_s = poll_interval_s
        self.max_wait_s = max_wait_s
        self.call_timeout_s = call_timeout_s
        self._session: boto3.session.Session | None = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    # -- clients ----------------------------------------------------------------------------------------------

    def _client(self, name: str, region: str | None = None) -> Any:
        region = region or self.region
        with self._lock:
            client = self._clients.get(name if region == self.region else f"{name}@{region}")
            if client is None:
                if self._session is None:
                    self._session = boto3.session.Session(region_name=self.region)
                config = Config(
                    region_name=region,
                    connect_timeout=min(10.0, self.call_timeout_s),
                    read_timeout=self.call_timeout_s,
                    retries={"max_attempts": 4, "mode": "standard"},
                )
                client = self._session.client(name, endpoint_url=self.endpoint_url, config=config)
                self._clients[name if region == self.region else f"{name}@{region}"] = client
            return client

    @property
    def rds(self) -> Any:
        return self._client("rds")

    @property
    def s3(self) -> Any:
        return self._client("s3")

    @property
    def ecs(self) -> Any:
        return self._client("ecs")

    @property
    def cloudwatch(self) -> Any:
        return self._client("cloudwatch")

    @property
    def logs(self) -> Any:
        return self._client("logs")

    # -- error translation ------------------------------------------------------------------------------------

    @staticmethod
    def _call(error: type[IntegrationError], what: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Call ``fn(**kwargs)``; turn a botocore failure into ``error`` with one readable line."""
        try:
            return fn(**kwargs)
        except botocore.exceptions.ClientError as exc:
            info = exc.response.get("Error", {})
            code = info.get("Code", "Error")
            message = " ".join(str(info.get("Message", "")).split()) or "no message"
            raise error(f"{what} failed: {code} — {message}") from exc
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error) as exc:
            raise error(f"{what} failed: {type(exc).__name__} — {' '.join(str(exc).split())}") from exc

    def _poll(
        self,
        fetch: Callable[[], T],
        done: Callable[[T], bool],
        timeout_message: Callable[[T], str],
        error: type[IntegrationError],
        on_each: Callable[[T], None] | None = None,
    ) -> T:
        """Call ``fetch`` every poll interval until ``done`` says so; raise ``error`` after max_wait_s."""
        deadline = self._clock() + self.max_wait_s
        while True:
            value = fetch()
            if on_each is not None:
                on_each(value)
            if done(value):
                return value
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise error(timeout_message(value))
            self._sleep(min(self.poll_interval_s, remaining))

    # -- RDS --------------------------------------------------------------------------------------------------

    @staticmethod
    def _snapshot(raw: dict[str, Any]) -> Snapshot:
        status = str(raw.get("Status", "unknown"))
        progress = raw.get("PercentProgress")
        if progress is None:  # moto never sets it; a finished snapshot is 100 %
            progress = 100 if status == "available" else 0
        return Snapshot(
            id=raw["DBSnapshotIdentifier"],
            instance_id=raw.get("DBInstanceIdentifier", ""),
            status=status,
            percent_progress=int(progress),
            created_at=raw.get("SnapshotCreateTime"),
            arn=raw.get("DBSnapshotArn", ""),
        )

    def list_snapshots(self, prefix: str) -> list[Snapshot]:
        """Manual snapshots whose identifier starts with ``prefix``, newest first."""
        found: list[Snapshot] = []
        paginator = self.rds.get_paginator("describe_db_snapshots")

        def pages() -> Iterator[dict[str, Any]]:
            return iter(paginator.paginate(SnapshotType="manual"))

        for page in self._call(BackupError, "RDS describe_db_snapshots", lambda: list(pages())):
            for raw in page.get("DBSnapshots", []):
                if raw.get("DBSnapshotIdentifier", "").startswith(prefix):
                    found.append(self._snapshot(raw))
        found.sort(key=lambda s: (s.created_at is not None, s.created_at or datetime.min, s.id), reverse=True)
        return found

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        """One snapshot by identifier (BackupError DBSnapshotNotFound when it does not exist)."""
        response = self._call(
            BackupError, "RDS describe_db_snapshots", self.rds.describe_db_snapshots, DBSnapshotIdentifier=snapshot_id
        )
        snapshots = response.get("DBSnapshots", [])
        if not snapshots:
            raise BackupError(f"RDS describe_db_snapshots failed: DBSnapshotNotFound — {snapshot_id} not found")
        return self._snapshot(snapshots[0])

    def create_snapshot(self, instance_id: str, snapshot_id: str, tags: dict[str, str] | None = None) -> Snapshot:
        """Start a manual snapshot of ``instance_id``; returns at once (see wait_snapshot)."""
        response = self._call(
            BackupError,
            "RDS create_db_snapshot",
            self.rds.create_db_snapshot,
            DBSnapshotIdentifier=snapshot_id,
            DBInstanceIdentifier=instance_id,
            Tags=[{"Key": k, "Value": str(v)} for k, v in (tags or {}).items()],
        )
        return self._snapshot(response["DBSnapshot"])

    def wait_snapshot(self, snapshot_id: str, on_progress: Callable[[int], None] | None = None) -> Snapshot:
        """Poll until the snapshot is available, reporting PercentProgress; BackupError if it fails or times out."""
        last: list[int] = []

        def report(snapshot: Snapshot) -> None:
            if snapshot.status in SNAPSHOT_FAILED_STATUSES:
                raise BackupError(f"RDS snapshot {snapshot_id} ended in status {snapshot.status}.")
            if on_progress is not None and (not last or last[-1] != snapshot.percent_progress):
                last.append(snapshot.percent_progress)
                on_progress(snapshot.percent_progress)

        return self._poll(
            lambda: self.get_snapshot(snapshot_id),
            lambda s: s.status == "available",
            lambda s: (
                f"RDS snapshot {snapshot_id} was not available within {_fmt_seconds(self.max_wait_s)} s "
                f"(status {s.status}, {s.percent_progress}%)."
            ),
            BackupError,
            report,
        )

    def _instance(self, instance_id: str) -> dict[str, Any]:
        response = self._call(
            IntegrationError, "RDS describe_db_instances", self.rds.describe_db_instances, DBInstanceIdentifier=instance_id
        )
        instance: dict[str, Any] = response["DBInstances"][0]
        return instance

    def instance_status(self, instance_id: str) -> str:
        """The DBInstanceStatus of one instance."""
        return str(self._instance(instance_id).get("DBInstanceStatus", "unknown"))

    def restore_instance_from_snapshot(
        self, snapshot_id: str, new_instance_id: str, instance_class: str | None = None
    ) -> str:
        """Create ``new_instance_id`` from a snapshot, in the source instance's subnet group and security groups
        when that instance still exists; returns the new instance identifier (see wait_instance_available)."""
        snapshot = self.get_snapshot(snapshot_id)
        kwargs: dict[str, Any] = {"DBInstanceIdentifier": new_instance_id, "DBSnapshotIdentifier": snapshot_id}
        if instance_class:
            kwargs["DBInstanceClass"] = instance_class
        try:
            source = self._instance(snapshot.instance_id) if snapshot.instance_id else None
        except IntegrationError:
            source = None
        if source is not None:
            group = (source.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
            if group:
                kwargs["DBSubnetGroupName"] = group
            security_groups = [g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups", []) if g.get("VpcSecurityGroupId")]
            if security_groups:
                kwargs["VpcSecurityGroupIds"] = security_groups
            if not instance_class and source.get("DBInstanceClass"):
                kwargs["DBInstanceClass"] = source["DBInstanceClass"]
        response = self._call(
            IntegrationError,
            "RDS restore_db_instance_from_db_snapshot",
            self.rds.restore_db_instance_from_db_snapshot,
            **kwargs,
        )
        return str(response["DBInstance"]["DBInstanceIdentifier"])

    def wait_instance_available(self, instance_id: str) -> None:
        """Poll until the instance is available; IntegrationError if it fails or times out."""

        def fail_early(status: str) -> None:
            if status in INSTANCE_FAILED_STATUSES:
                raise IntegrationError(f"RDS instance {instance_id} ended in status {status}.")

        self._poll(
            lambda: self.instance_status(instance_id),
            lambda status: status == "available",
            lambda status: (
                f"RDS instance {instance_id} was not available within {_fmt_seconds(self.max_wait_s)} s (status {status})."
            ),
            IntegrationError,
            fail_early,
        )

    def instance_endpoint(self, instance_id: str) -> tuple[str, int]:
        """(address, port) clients connect to; IntegrationError while the instance has none yet."""
        endpoint = self._instance(instance_id).get("Endpoint") or {}
        if not endpoint.get("Address"):
            raise IntegrationError(f"RDS instance {instance_id} has no endpoint yet.")
        return str(endpoint["Address"]), int(endpoint.get("Port") or 5432)

    def delete_instance(self, instance_id: str) -> None:
        """Delete a disposable instance at once: no final snapshot, no automated backups kept."""
        self._call(
            IntegrationError,
            "RDS delete_db_instance",
            self.rds.delete_db_instance,
            DBInstanceIdentifier=instance_id,
            SkipFinalSnapshot=True,
            DeleteAutomatedBackups=True,
        )

    def rename_instance(self, old: str, new: str) -> None:
        """Rename an instance at once (modify_db_instance NewDBInstanceIdentifier, ApplyImmediately)."""
        self._call(
            IntegrationError,
            "RDS modify_db_instance",
            self.rds.modify_db_instance,
            DBInstanceIdentifier=old,
            NewDBInstanceIdentifier=new,
            ApplyImmediately=True,
        )

    # -- S3 ---------------------------------------------------------------------------------------------------

    def require_versioning(self, bucket: str) -> None:
        """Raise BackupError unless versioning is Enabled on ``bucket`` (the runbook keeps every backup version)."""
        response = self._call(BackupError, f"S3 get_bucket_versioning on {bucket}", self.s3.get_bucket_versioning, Bucket=bucket)
        status = response.get("Status")
        if status != "Enabled":
            state = "suspended" if status == "Suspended" else "not enabled"
            raise BackupError(
                f"S3 bucket {bucket} has versioning {state}; the runbook requires a versioned bucket for backups. "
                f"Enable it with: aws s3api put-bucket-versioning --bucket {bucket} "
                "--versioning-configuration Status=Enabled"
            )

    def _head(self, bucket: str, key: str, version_id: str | None = None) -> S3Object:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        head = self._call(BackupError, f"S3 head_object s3://{bucket}/{key}", self.s3.head_object, **kwargs)
        return S3Object(
            bucket=bucket,
            key=key,
            version_id=head.get("VersionId"),
            size=int(head.get("ContentLength", 0)),
            etag=str(head.get("ETag", "")).strip('"'),
        )

    def object_metadata(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        """The user metadata (x-amz-meta-*) of an object version."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        head = self._call(BackupError, f"S3 head_object s3://{bucket}/{key}", self.s3.head_object, **kwargs)
        return dict(head.get("Metadata", {}))

    def upload_file(
        self,
        path: Path | str,
        bucket: str,
        key: str,
        *,
        part_size_mb: int = 8,
        metadata: dict[str, str] | None = None,
    ) -> S3Object:
        """Upload a file with multipart transfer (``part_size_mb`` parts) and return the version it created."""
        part = max(5, part_size_mb) * 1024 * 1024  # S3's minimum part size is 5 MiB
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=4)
        extra: dict[str, Any] = {}  # encryption: the bucket's default (SSE-S3 or the KMS key its policy requires)
        if metadata:
            extra["Metadata"] = {k: str(v) for k, v in metadata.items()}
        what = f"S3 upload of {Path(path).name} to s3://{bucket}/{key}"
        try:
            self.s3.upload_file(str(path), bucket, key, ExtraArgs=extra or None, Config=config)
        except boto3.exceptions.S3UploadFailedError as exc:
            raise BackupError(f"{what} failed: {' '.join(str(exc).split())}") from exc
        except botocore.exceptions.ClientError as exc:
            info = exc.response.get("Error", {})
            raise BackupError(f"{what} failed: {info.get('Code', 'Error')} — {info.get('Message', '')}") from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise BackupError(f"{what} failed: {type(exc).__name__} — {' '.join(str(exc).split())}") from exc
        return self._head(bucket, key)

    def list_objects(self, bucket: str, prefix: str) -> list[S3Object]:
        """Current (latest, not deleted) objects under ``prefix``, newest first, with their version ids."""
        paginator = self.s3.get_paginator("list_object_versions")
        pages = self._call(
            BackupError,
            f"S3 list_object_versions s3://{bucket}/{prefix}",
            lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix)),
        )
        latest = [v for page in pages for v in page.get("Versions", []) if v.get("IsLatest")]
        latest.sort(key=lambda v: (v["LastModified"], v["Key"]), reverse=True)
        return [
            S3Object(
                bucket=bucket,
                key=v["Key"],
                version_id=v.get("VersionId"),
                size=int(v.get("Size", 0)),
                etag=str(v.get("ETag", "")).strip('"'),
            )
            for v in latest
        ]

    def download_file(self, bucket: str, key: str, path: Path | str, version_id: str | None = None) -> Path:
        """Download one object (a given version when ``version_id`` is set) to ``path``."""
        extra = {"VersionId": version_id} if version_id else None
        what = f"S3 download of s3://{bucket}/{key}"
        try:
            self.s3.download_file(bucket, key, str(path), ExtraArgs=extra)
        except botocore.exceptions.ClientError as exc:
            info = exc.response.get("Error", {})
            raise BackupError(f"{what} failed: {info.get('Code', 'Error')} — {info.get('Message', '')}") from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise BackupError(f"{what} failed: {type(exc).__name__} — {' '.join(str(exc).split())}") from exc
        return Path(path)

    # -- ECS --------------------------------------------------------------------------------------------------

    def service(self, cluster: str, service: str) -> ServiceState:
        """The current task definition, counts, deployment count and primary rollout state of a service."""
        response = self._call(
            DeployError, f"ECS describe_services {service}", self.ecs.describe_services, cluster=cluster, services=[service]
        )
        services = response.get("services", [])
        if not services:
            reasons = ", ".join(f.get("reason", "?") for f in response.get("failures", [])) or "MISSING"
            raise DeployError(f"ECS service {service} not found in cluster {cluster} ({reasons}).")
        raw = services[0]
        deployments = raw.get("deployments", [])
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), deployments[0] if deployments else {})
        return ServiceState(
            task_definition=str(raw.get("taskDefinition", "")),
            desired_count=int(raw.get("desiredCount", 0)),
            running_count=int(raw.get("runningCount", 0)),
            deployments=len(deployments),
            rollout_state=primary.get("rolloutState"),
        )

    def update_service(
        self,
        cluster: str,
        service: str,
        *,
        task_definition: str | None = None,
        force_new_deployment: bool = False,
        desired_count: int | None = None,
    ) -> None:
        """Point a service at a task definition and/or change its desired count (see wait_stable)."""
        kwargs: dict[str, Any] = {"cluster": cluster, "service": service}
        if task_definition is not None:
            kwargs["taskDefinition"] = task_definition
        if desired_count is not None:
            kwargs["desiredCount"] = desired_count
        if force_new_deployment:
            kwargs["forceNewDeployment"] = True
        self._call(DeployError, f"ECS update_service {service}", self.ecs.update_service, **kwargs)

    def wait_stable(
        self, cluster: str, service: str, on_progress: Callable[[ServiceState], None] | None = None
    ) -> ServiceState:
        """Poll until one deployment runs desired tasks; DeployError on a FAILED rollout or after max_wait_s."""

        def report_or_fail(state: ServiceState) -> None:
            if on_progress is not None:
                on_progress(state)
            if state.rollout_state == "FAILED":
                raise DeployError(
                    f"ECS deployment of service {service} failed (running {state.running_count}/{state.desired_count})."
                )

        return self._poll(
            lambda: self.service(cluster, service),
            lambda state: state.stable,
            lambda state: (
                f"ECS service {service} did not stabilise within {_fmt_seconds(self.max_wait_s)} s "
                f"(running {state.running_count}/{state.desired_count})"
            ),
            DeployError,
            report_or_fail,
        )

    def describe_task_definition(self, td: str) -> dict[str, Any]:
        """The full task definition (family:revision, family, or ARN)."""
        response = self._call(
            DeployError, f"ECS describe_task_definition {td}", self.ecs.describe_task_definition, taskDefinition=td, include=["TAGS"]
        )
        task_definition = dict(response["taskDefinition"])
        if response.get("tags"):
            task_definition["tags"] = response["tags"]
        return task_definition

    def app_image(self, task_definition: str) -> str:
        """The app's image in ``task_definition``: its first container's."""
        containers = self.describe_task_definition(task_definition).get("containerDefinitions", [])
        if not containers:
            raise DeployError(f"ECS task definition {task_definition} has no container definitions.")
        return str(containers[0].get("image", ""))

    def register_revision_with_image(self, task_definition: str, image_tag: str | None = None, *,
                                     image: str | None = None) -> str:
        """Register a copy of ``task_definition`` whose app image points at ``image_tag`` (or is the whole
        reference ``image``); return the new ARN.

        The first container's image repository is the app's: every container using that repository gets the
        new image (sidecars with other images are left alone).
        """
        if not (image or image_tag):
            raise DeployError("No image or tag to register a new task definition revision with.")
        current = self.describe_task_definition(task_definition)
        containers = [dict(c) for c in current.get("containerDefinitions", [])]
        if not containers:
            raise DeployError(f"ECS task definition {task_definition} has no container definitions.")
        app_repo, _ = split_image(str(containers[0].get("image", "")))
        for container in containers:
            old = str(container.get("image", ""))
            if split_image(old)[0] == app_repo:
                container["image"] = image if image else with_image_tag(old, str(image_tag))
        kwargs = {key: current[key] for key in _REGISTERABLE_FIELDS if current.get(key) not in (None, [], {})}
        kwargs["containerDefinitions"] = containers
        if current.get("tags"):
            kwargs["tags"] = current["tags"]
        response = self._call(
            DeployError,
            f"ECS register_task_definition {current.get('family', task_definition)}",
            self.ecs.register_task_definition,
            **kwargs,
        )
        return str(response["taskDefinition"]["taskDefinitionArn"])

    # -- ECR --------------------------------------------------------------------------------------------------

    def require_image(self, image: str) -> bool:
        """Check ECR holds ``image`` (ecr:DescribeImages); True when checked, False when it is not an ECR image.

        Raises DeployError with one line naming the repository and the tag, and what to do, when it does not.
        """
        ref = ecr_image(image)
        if ref is None:
            return False
        ecr = self._client("ecr", ref.region)
        image_id = {"imageTag": ref.tag} if ref.tag else {"imageDigest": ref.digest}
        try:
            found = ecr.describe_images(registryId=ref.account, repositoryName=ref.repository, imageIds=[image_id])
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ImageNotFoundException":
                raise ImageMissing(f"ECR repository {ref.repository} (account {ref.account}, {ref.region}) has no image "
                                  f"with {ref.reference}: build and push that image (or wait for CI to), then try "
                                  "again.") from exc
            if code == "RepositoryNotFoundException":
                raise ImageMissing(f"ECR has no repository {ref.repository} in account {ref.account} ({ref.region}), "
                                  f"so {ref.reference} cannot be there: check deploy.image_template.") from exc
            message = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split()) or "no message"
            raise DeployError(f"ECR describe_images {ref.repository} failed: {code or 'Error'} — {message}") from exc
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error) as exc:
            raise DeployError(f"ECR describe_images {ref.repository} failed: {type(exc).__name__} — "
                              f"{' '.join(str(exc).split())}") from exc
        if not found.get("imageDetails"):
            raise ImageMissing(f"ECR repository {ref.repository} has no image with {ref.reference}: build and push "
                              "that image, then try again.")
        return True

    # -- CloudWatch metrics and Logs (the monitoring step and the watch) --------------------------------------

    def metric_values(
        self, queries: list[MetricQuery], start: datetime, end: datetime, *, period_s: int = 60
    ) -> dict[str, list[float]]:
        """Each query's datapoints (oldest first) between ``start`` and ``end``, by query key; one batched call.

        Plain statistics only (Sum, Average, Maximum …): compute ratios in Python, not with metric math.
        """
        if not queries:
            return {}
        data_queries = [
            {
                "Id": f"q{i}",
                "Label": query.key,
                "MetricStat": {
                    "Metric": {
                        "Namespace": query.namespace,
                        "MetricName": query.metric,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in query.dimensions.items()],
                    },
                    "Period": period_s,
                    "Stat": query.stat,
                },
                "ReturnData": True,
            }
            for i, query in enumerate(queries)
        ]
        found: dict[str, list[tuple[datetime, float]]] = {query.key: [] for query in queries}
        token: str | None = None
        for _ in range(20):  # a handful of pages at most for minutes of one-minute datapoints
            kwargs: dict[str, Any] = {"MetricDataQueries": data_queries, "StartTime": start, "EndTime": end,
                                      "ScanBy": "TimestampAscending"}
            if token:
                kwargs["NextToken"] = token
            response = self._call(IntegrationError, "CloudWatch get_metric_data", self.cloudwatch.get_metric_data, **kwargs)
            for result in response.get("MetricDataResults", []):
                index = int(str(result.get("Id", "q-1"))[1:])
                if 0 <= index < len(queries):
                    pairs = zip(result.get("Timestamps", []), result.get("Values", []), strict=False)
                    found[queries[index].key].extend((ts, float(v)) for ts, v in pairs if v is not None)
            token = response.get("NextToken")
            if not token:
                break
        return {key: [v for _, v in sorted(points, key=lambda p: p[0])] for key, points in found.items()}

    def metric_percentile(
        self,
        namespace: str,
        metric: str,
        dimensions: dict[str, str],
        start: datetime,
        end: datetime,
        *,
        percentile: str = "p95",
    ) -> tuple[float | None, str]:
        """The ``percentile`` of a metric over the whole window, and which statistic it is.

        Returns (value, "p95") from ExtendedStatistics. Where the backend keeps no percentiles (moto), falls back
        to the window's Maximum, returned as (value, "Maximum") — an upper bound, so thresholds still fire.
        (None, percentile) when there are no datapoints.
        """
        seconds = max(60, int((end - start).total_seconds()))
        period = ((seconds + 59) // 60) * 60
        common: dict[str, Any] = {
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
            "StartTime": start,
            "EndTime": end,
            "Period": period,
        }
        what = f"CloudWatch get_metric_statistics {metric}"
        response = self._call(IntegrationError, what, self.cloudwatch.get_metric_statistics,
                              ExtendedStatistics=[percentile], **common)
        points = response.get("Datapoints", [])
        values = [float(p["ExtendedStatistics"][percentile]) for p in points
                  if p.get("ExtendedStatistics", {}).get(percentile) is not None]
        if values:
            return max(values), percentile
        if not points:
            return None, percentile
        response = self._call(IntegrationError, what, self.cloudwatch.get_metric_statistics,
                              Statistics=["Maximum"], **common)
        maxima = [float(p["Maximum"]) for p in response.get("Datapoints", []) if p.get("Maximum") is not None]
        return (max(maxima) if maxima else None), "Maximum"

    def recent_log_events(
        self, log_group: str, pattern: str, start: datetime, end: datetime, *, limit: int = 10, max_pages: int = 20
    ) -> list[LogEvent]:
        """The newest ``limit`` events of ``log_group`` matching the filter ``pattern`` (a plain term), oldest first."""
        events: list[LogEvent] = []
        token: str | None = None
        for _ in range(max_pages):
            kwargs: dict[str, Any] = {
                "logGroupName": log_group,
                "filterPattern": pattern,
                "startTime": int(start.timestamp() * 1000),
                "endTime": int(end.timestamp() * 1000),
            }
            if token:
                kwargs["nextToken"] = token
            response = self._call(IntegrationError, f"CloudWatch Logs filter_log_events {log_group}",
                                  self.logs.filter_log_events, **kwargs)
            for raw in response.get("events", []):
                events.append(LogEvent(
                    timestamp=datetime.fromtimestamp(int(raw.get("timestamp", 0)) / 1000, tz=UTC),
                    message=str(raw.get("message", "")).rstrip(),
                    stream=str(raw.get("logStreamName", "")),
                ))
            token = response.get("nextToken")
            if not token:
                break
        events.sort(key=lambda e: e.timestamp)
        return events[-limit:] if limit > 0 else []


@dataclass(frozen=True)
class MetricQuery:
    """One CloudWatch metric and statistic to read; ``key`` names it in the result."""

    key: str
    namespace: str
    metric: str
    dimensions: dict[str, str]
    stat: str = "Average"


@dataclass(frozen=True)
class LogEvent:
    """One CloudWatch Logs event."""

    timestamp: datetime
    message: str
    stream: str
