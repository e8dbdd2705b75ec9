"""A small AWS account inside moto's server: the RDS instance, S3 bucket, ECS service and ECR images the runbook acts on."""

from __future__ import annotations

import json
from typing import Any

import boto3

APP_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:v1"


def client(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_ecs_service(endpoint: str, *, cluster: str = "prod", service: str = "api", desired: int = 2,
                     stable: bool = True) -> dict[str, str]:
    """A FARGATE service (awsvpc) on task definition api:1, with api-maintenance:1 registered too."""
    ec2 = client(endpoint, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"{service}-{cluster}", Description="api", VpcId=vpc)["GroupId"]
    ecs = client(endpoint, "ecs")
    ecs.create_cluster(clusterName=cluster)
    common = {"networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512"}
    ecs.register_task_definition(
        family="api",
        containerDefinitions=[
            {"name": "api", "image": APP_IMAGE, "essential": True},
            {"name": "log-router", "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:2.32",
             "essential": False},
        ],
        **common,
    )
    ecs.register_task_definition(
        family="api-maintenance",
        containerDefinitions=[{"name": "api", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/maintenance:v1"}],
        **common,
    )
    ecs.create_service(
        cluster=cluster, serviceName=service, taskDefinition="api:1", desiredCount=desired, launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}},
    )
    if stable:  # moto reports runningCount 0 until the service is updated; an update makes it "stable"
        ecs.update_service(cluster=cluster, service=service, desiredCount=desired)
    push_images(endpoint, "api", ["v1", "v2"])  # what CI pushed: `--image v2` deploys an image ECR holds
    return {"cluster": cluster, "service": service}


def push_images(endpoint: str, repository: str, tags: list[str]) -> None:
    """Images with these tags in an ECR repository of the moto account (created when missing), as CI pushes them."""
    ecr = client(endpoint, "ecr")
    try:
        ecr.create_repository(repositoryName=repository)
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
    for tag in tags:
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                               "digest": "sha256:" + (tag.encode().hex() * 64)[:64]},
                    "layers": []}
        ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)


def make_rds_instance(endpoint: str, instance: str = "prod-db") -> str:
    client(endpoint, "rds").create_db_instance(
        DBInstanceIdentifier=instance, Engine="postgres", EngineVersion="15.4", DBInstanceClass="db.t3.micro",
        AllocatedStorage=20, MasterUsername="app", MasterUserPassword="not-a-real-password")
    return instance
