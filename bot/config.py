"""Settings: the process environment and the environments file, read once and passed in as frozen objects."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.errors import ConfigError
from bot.redact import register_secret

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_CONFIG_PATH = Path(__file__).parent / "defaults" / "environments.yml"
"""The demo's bundled environments file: `migrate-bot demo` passes it explicitly; `serve` never falls back to it."""
NO_CONFIG = ("no environments file given: set MIGRATE_BOT_CONFIG to its path (or `serve --config PATH`, "
             "`check-config PATH`; examples/environments.yml is a commented starting point)")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

_SLACK_ID = re.compile(r"^[UWSB][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackupConfig(_Strict):
    """How the backup step takes and verifies its backup."""

    method: Literal["rds_snapshot", "pg_dump"] = "pg_dump"
    rds_instance: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = "migrations/"
    local_dir: str | None = None
    format: Literal["custom", "directory"] = "custom"
    jobs: int = Field(default=1, ge=1, le=16)
    verify_restore: bool = True
    timeout_s: float = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _target_given(self) -> BackupConfig:
        if self.method == "rds_snapshot" and not self.rds_instance:
            raise ValueError("rds_instance is required when method is rds_snapshot")
        if self.method == "pg_dump" and not (self.s3_bucket or self.local_dir):
            raise ValueError("pg_dump needs s3_bucket or local_dir")
        return self


class MaintenanceConfig(_Strict):
    """Maintenance mode: optional per environment, by ECS task definition or by a webhook of the app."""

    enabled: bool = False
    method: Literal["ecs_task_definition", "webhook"] = "webhook"
    task_definition: str | None = None
    webhook_url: str | None = None
    webhook_token: str | None = None

    @model_validator(mode="after")
    def _method_settings(self) -> MaintenanceConfig:
        if self.enabled and self.method == "ecs_task_definition" and not self.task_definition:
            raise ValueError("task_definition is required for method ecs_task_definition")
        if self.enabled and self.method == "webhook" and not self.webhook_url:
            raise ValueError("webhook_url is required for method webhook")
        return self


_GIT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def valid_ref(ref: str) -> bool:
    """A ref a person may type or configure: a tag, branch or SHA; never an option, a range or an expression."""
    return bool(_GIT_REF.match(ref)) and ".." not in ref and "//" not in ref and not ref.endswith((".lock", "/", "."))


class GitSourceConfig(_Strict):
    """A repository the migrations of a release come from: `/migrate <env> <ref>` pins a run to one commit of it."""

    url: str
    """Anything `git` can fetch: https (token from ``token_env``), ssh, or file:// (tests)."""
    path: str = "prisma/migrations"
    """The migrations folder inside the repository."""
    ref_default: str = "main"
    token_env: str | None = None
    """The name of the environment variable holding the token (never the token itself)."""
    web_url: str | None = None
    """A link to a commit, with ``{sha}``: e.g. ``https://github.com/acme/api/commit/{sha}``."""
    cache_dir: str | None = None
    """Where the bot keeps its partial clone and the commits' folders (default: a migrate-bot cache in the temp dir)."""
    timeout_s: float = Field(default=120, gt=0)

    @field_validator("url")
    @classmethod
    def _fetchable(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.password:
            register_secret(unquote(parts.password))  # a token written into the URL: used, never shown
            register_secret(parts.password)
        if parts.scheme not in ("https", "http", "ssh", "file", "git") and not re.match(r"^[\w.-]+@[\w.-]+:", value):
            raise ValueError("must be a URL git can fetch: https://…, ssh://…, git@host:owner/repo.git or file://…")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        cleaned = value.strip("/")
        if not cleaned or ".." in cleaned.split("/") or cleaned.startswith("-"):
            raise ValueError("must be a folder inside the repository, e.g. prisma/migrations")
        return cleaned

    @field_validator("ref_default")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not valid_ref(value):
            raise ValueError("must be a tag, branch or commit SHA, e.g. main")
        return value

    @field_validator("token_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError("must be the name of an environment variable (e.g. GITHUB_TOKEN), not the token")
        return value

    @field_validator("web_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and "{sha}" not in value:
            raise ValueError("must contain {sha}, e.g. https://github.com/acme/api/commit/{sha}")
        return value

    def token(self) -> str | None:
        """The token from the process environment (registered as a secret), or None."""
        value = os.environ.get(self.token_env) if self.token_env else None
        register_secret(value)
        return value or None


class SourceConfig(_Strict):
    """Where a release's migrations come from, besides the local ``migrations_dir``."""

    git: GitSourceConfig | None = None


class MigrateConfig(_Strict):
    """Where the migrations are and which runner applies them."""

    migrations_dir: str = "prisma/migrations"
    """A folder on the bot's disk: local use and the demo; ``source.git`` pins each run to a commit instead."""
    source: SourceConfig = Field(default_factory=SourceConfig)
    runner: Literal["native", "prisma_cli"] = "native"
    prisma_command: list[str] = Field(default_factory=lambda: ["npx", "prisma", "migrate"])
    prisma_cwd: str | None = None
    lock_timeout_ms: int | None = Field(default=5000, ge=0)
    statement_timeout_ms: int | None = Field(default=None, ge=0)
    lock_retries: int = Field(default=3, ge=0, le=20)
    timeout_s: float = Field(default=1800, gt=0)


class SeedConfig(_Strict):
    """The optional seed step (the seed's `npm run seed`)."""

    enabled: bool = False
    command: list[str] = Field(default_factory=lambda: ["npm", "run", "seed"])
    cwd: str | None = None
    timeout_s: float = Field(default=600, gt=0)


class DeployConfig(_Strict):
    """The ECS service that runs the app."""

    enabled: bool = True
    cluster: str | None = None
    service: str | None = None
    wait_timeout_s: float = Field(default=900, gt=0)
    poll_interval_s: float = Field(default=15, gt=0)
    image_template: str | None = None
    """The app image of a release-pinned run, e.g. ``123456789012.dkr.ecr.us-east-1.amazonaws.com/api:{sha}``
    (``{sha}`` the full commit, ``{short}`` its first 7 characters); ECR must hold it before the deploy."""

    @field_validator("image_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "{sha}" not in value and "{short}" not in value:
            raise ValueError("image_template must contain {sha} or {short} (the run's commit)")
        try:
            value.format(sha="0" * 40, short="0" * 7)
        except (KeyError, IndexError, ValueError):
            raise ValueError("image_template may only use {sha} and {short}") from None
        return value

    def image_for(self, sha: str) -> str | None:
        """The image ``image_template`` names for commit ``sha`` (None without a template)."""
        return self.image_template.format(sha=sha, short=sha[:7]) if self.image_template else None

    @model_validator(mode="after")
    def _service_named(self) -> DeployConfig:
        if self.enabled and not (self.cluster and self.service):
            raise ValueError("cluster and service are required when deploy is enabled")
        return self


class SmokeProbe(BaseModel):
    """One HTTP request and what its answer must look like."""

    # The body is passed as ``json=`` (like httpx and the environments file) and read as ``.json_body``,
    # because a field called ``json`` would shadow BaseModel.json().
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: str
    method: str = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any | None = Field(default=None, alias="json")
    expect_status: int | list[int] = 200
    capture: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10, gt=0)


class SmokeProbeConfig(SmokeProbe):
    """One HTTP probe of the smoke-test chain, as written in the environments file (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RollbackConfig(_Strict):
    """How Option 2 (restore from backup) switches to the restored database."""

    rds_swap: bool = False
    """RDS: rename the instances so the app's endpoint points at the restored one; otherwise stop and say what to switch."""
    pg_restore_mode: Literal["swap", "clean", "new_database"] = "swap"
    """pg_dump: restore into a new database and swap it in by renaming, keeping the old one aside (default);
    or `pg_restore --clean --if-exists` into the target (fails if objects created after the backup depend on
    restored ones); or restore into a new database and tell a human to switch."""
    typed_confirmation: bool = True


class SafetyConfig(_Strict):
    """The pre-approval safety work: rehearsal on the fresh backup, staging evidence, the go-time lock check."""

    rehearsal: bool | None = None
    """Apply the pending migrations to a restored copy of this run's pg_dump before approval.
    Default: on for pg_dump backups (an RDS snapshot restore costs a new instance, so it is opt-in there)."""
    staging_env: str | None = None
    """Another environment whose `_prisma_migrations` counts as staging evidence for the checklist."""
    preflight: bool = True
    preflight_long_running_s: float = Field(default=60, gt=0)
    preflight_idle_in_tx_s: float = Field(default=5, gt=0)


class RehearsalConfig(_Strict):
    """Where the run's backup is restored to be verified and rehearsed: never the production server."""

    target: Literal["local", "database_url", "rds_restore"] = "local"
    """`local`: a throwaway cluster the bot starts with initdb/pg_ctl (the dump's major version where installed);
    `database_url`: a separate server you provide; `rds_restore`: a temporary RDS instance from the snapshot."""
    database_url: str | None = None
    """For `database_url`: a server that is not the environment's (check-config refuses the same host and port)."""
    local_dir: str | None = None
    """For `local`: where throwaway clusters are made (default: the system temp dir); leftovers are swept here."""
    rds_instance_class: str = "db.t3.micro"
    timeout_s: float = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _target_settings(self) -> RehearsalConfig:
        if self.target == "database_url" and not self.database_url:
            raise ValueError("database_url is required when target is database_url")
        return self


def server_address(url: str) -> tuple[str, int]:
    """(host, port) a PostgreSQL URL connects to; loopback names and the unix socket count as one host."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "localhost"
    try:
        port = int(query.get("port") or parts.port or 5432)
    except ValueError:
        port = 5432
    host = host.lower().strip("[]")
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("/"):
        host = "localhost"
    return host, port


class AwsConfig(_Strict):
    region: str = "us-east-1"
    endpoint_url: str | None = None


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")


class CalendarConfig(_Strict):
    """Maintenance windows: the seed's recommended schedule as a policy, and the reminder timeline (seconds)."""

    allowed_weekdays: list[Weekday] = Field(default_factory=lambda: list[Weekday](["tue", "wed"]), min_length=1)
    earliest_start: str = "02:00"
    latest_end: str = "04:00"
    max_duration_s: float = Field(default=7200, gt=0)
    min_notice_s: float = Field(default=7 * 86400, ge=0)
    timezone: str = "America/New_York"
    holiday_country: str | None = "US"
    announce_before_s: float = Field(default=7 * 86400, ge=0)
    reminder_before_s: float = Field(default=86400, gt=0)
    final_before_s: float = Field(default=3600, gt=0)
    status_every_s: float = Field(default=900, gt=0)
    announce_grace_s: int = Field(default=12 * 3600, ge=1)
    reminder_grace_s: int = Field(default=2 * 3600, ge=1)
    final_grace_s: int = Field(default=15 * 60, ge=1)
    start_grace_s: int = Field(default=15 * 60, ge=1)
    status_grace_s: int = Field(default=5 * 60, ge=1)
    complete_grace_s: int = Field(default=6 * 3600, ge=1)

    @field_validator("earliest_start", "latest_end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"expected a time of day like 02:00 (00:00-24:00), got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like America/New_York)") from None
        return value

    @field_validator("holiday_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import holidays

        if value.upper() not in holidays.list_supported_countries():
            raise ValueError(f"no holiday calendar for country {value!r} (use an ISO code like US)")
        return value.upper()

    @model_validator(mode="after")
    def _order(self) -> CalendarConfig:
        if self.earliest_start >= self.latest_end:
            raise ValueError("earliest_start must be before latest_end")
        if self.final_before_s >= self.reminder_before_s:
            raise ValueError("final_before_s must be shorter than reminder_before_s")
        return self


class SchedulerConfig(_Strict):
    """The reminder scheduler: every replica runs due jobs (claims pick one poster; see jobs.scheduler).

    ``renew_every_s`` is how often a replica re-reads the shared job store even without a wake-up message.
    ``leader_ttl_s`` is accepted for configs written for the previous release (its leader lock) and ignored.
    """

    enabled: bool = True
    leader_ttl_s: float = Field(default=30, gt=0)
    renew_every_s: float = Field(default=10, gt=0)


class LimitsConfig(_Strict):
    """What one client may cost the bot: request size, slash commands and clicks per user, slow-check workers."""

    max_body_bytes: int = Field(default=1 << 20, ge=16 * 1024, le=64 << 20)
    # A token bucket per user for slash commands and button clicks: `burst` at once, then `per_minute`. Sized
    # well above a person's pace (the scripted tests schedule 50 windows in a row), far below a flood's.
    per_minute: float = Field(default=120, gt=0)
    burst: int = Field(default=60, ge=1)
    # /migrate check and lint run on this many workers after the ack; one at a time per environment.
    check_workers: int = Field(default=2, ge=1, le=32)


class SentryConfig(_Strict):
    """The Sentry project whose error rate the monitoring step reads (token: org:read and project:read)."""

    org: str
    project: str
    token: str
    base_url: str = "https://sentry.io"

    @field_validator("token")
    @classmethod
    def _secret(cls, value: str) -> str:
        register_secret(value)
        return value


class MonitoringConfig(_Strict):
    """The post-migration readings (the seed's step 7 and the 24-hour watch) and their thresholds (fractions, ms)."""

    sentry: SentryConfig | None = None
    load_balancer: str | None = None
    """The ALB's CloudWatch dimension value, e.g. ``app/prod-alb/50dc6c495c0c9188``."""
    target_group: str | None = None
    """Optional TargetGroup dimension value (``targetgroup/api/…``) to narrow the ALB metrics to the app."""
    ecs_cluster: str | None = None
    """Defaults to deploy.cluster (see ``resolved``)."""
    ecs_service: str | None = None
    """Defaults to deploy.service (see ``resolved``)."""
    log_group: str | None = None
    log_lines: int = Field(default=10, ge=0, le=50)
    pool_size: int | None = Field(default=None, ge=1)
    """The app's total connection pool (all tasks); without it connections are compared to max_connections."""
    window_minutes: int = Field(default=5, ge=1, le=1440)
    error_rate_warn: float = Field(default=0.01, gt=0, le=1)
    error_rate_page: float = Field(default=0.05, gt=0, le=1)
    p95_warn_ms: float = Field(default=500, gt=0)
    p95_alert_ms: float = Field(default=2000, gt=0)
    connections_warn: float = Field(default=0.80, gt=0, le=1)
    connections_alert: float = Field(default=0.90, gt=0, le=1)
    cpu_warn: float = Field(default=0.70, gt=0, le=1)
    memory_warn: float = Field(default=0.85, gt=0, le=1)
    watch_interval_s: float = Field(default=300, gt=0)
    watch_hours: float = Field(default=24, gt=0, le=168)
    pagerduty_routing_key: str | None = None
    pagerduty_url: str = "https://events.pagerduty.com"

    @field_validator("pagerduty_routing_key")
    @classmethod
    def _routing_key_secret(cls, value: str | None) -> str | None:
        register_secret(value)
        return value

    @model_validator(mode="after")
    def _warn_below_alert(self) -> MonitoringConfig:
        for warn, alert in (("error_rate_warn", "error_rate_page"), ("p95_warn_ms", "p95_alert_ms"),
                            ("connections_warn", "connections_alert")):
            if getattr(self, warn) > getattr(self, alert):
                raise ValueError(f"{warn} must not be above {alert}")
        return self

    def resolved(self, deploy: DeployConfig) -> MonitoringConfig:
        """This config with ecs_cluster/ecs_service taken from the deploy config where they are not set."""
        return self.model_copy(update={"ecs_cluster": self.ecs_cluster or deploy.cluster,
                                       "ecs_service": self.ecs_service or deploy.service})


_GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class GithubReviewConfig(_Strict):
    """Where the pull requests that added the migrations are (GitHub's REST API): their reviews are the evidence."""

    repo: str
    """``owner/name``."""
    token_env: str | None = None
    """The environment variable holding a token that may read the repository's contents and pull requests."""
    api_url: str = "https://api.github.com"
    timeout_s: float = Field(default=10, gt=0)

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not _GITHUB_REPO.match(value):
            raise ValueError(f"expected owner/name, got {value!r}")
        return value


class ReviewConfig(_Strict):
    """Evidence for "Migration script reviewed by at least one other developer"."""

    github: GithubReviewConfig | None = None


class EnvironmentConfig(_Strict):
    """One environment (prod, staging, local): who may do what, and how each step is done."""

    name: str = ""
    channel: str
    requesters: list[str] = Field(min_length=1)
    approvers: list[str] = Field(min_length=1)
    approvals_required: int = Field(default=1, ge=1, le=5)
    oncall: str | None = None
    viewers: list[str] | None = None
    """Who else may read this environment (check, lint, status, timeline, App Home) besides its requesters and
    approvers; default: the on-call."""
    database_url: str | None = None
    aws: AwsConfig = Field(default_factory=AwsConfig)
    backup: BackupConfig | None = None
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    migrate: MigrateConfig = Field(default_factory=MigrateConfig)
    seed: SeedConfig = Field(default_factory=SeedConfig)
    deploy: DeployConfig = Field(default_factory=lambda: DeployConfig(enabled=False))
    smoke: list[SmokeProbeConfig] = Field(default_factory=list)
    check_commands: list[list[str]] = Field(default_factory=list)
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    rehearsal: RehearsalConfig = Field(default_factory=RehearsalConfig)
    lock_hours: float = Field(default=12, gt=0, le=72)
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)

    @field_validator("channel")
    @classmethod
    def _channel_id(cls, value: str) -> str:
        if not _CHANNEL_ID.match(value):
            raise ValueError(f"expected a Slack channel ID like C0123ABCD, got {value!r}")
        return value

    @field_validator("requesters", "approvers", "viewers")
    @classmethod
    def _slack_ids(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            if not _SLACK_ID.match(value):
                raise ValueError(f"expected Slack user IDs (U…/W…) or user-group IDs (S…), got {value!r}")
        return values

    @model_validator(mode="after")
    def _rehearsal_isolated(self) -> EnvironmentConfig:
        target = self.rehearsal
        if target.target == "database_url" and target.database_url and self.database_url:
            if server_address(target.database_url) == server_address(self.database_url):
                host, port = server_address(self.database_url)
                raise ValueError(f"rehearsal.database_url points at the environment's own server ({host}:{port}); "
                                 "the rehearsal must run on a separate server")
        if target.target == "rds_restore" and not (self.backup and self.backup.method == "rds_snapshot"):
            raise ValueError("rehearsal target rds_restore needs backup.method rds_snapshot")
        return self

    @field_validator("oncall")
    @classmethod
    def _oncall_id(cls, value: str | None) -> str | None:
        if value is not None and not _SLACK_ID.match(value):
            raise ValueError(f"expected a Slack user ID or user-group ID, got {value!r}")
        return value


class BotConfig(_Strict):
    """The whole environments file."""

    environments: dict[str, EnvironmentConfig] = Field(min_length=1)
    worker_threads: int = Field(default=16, ge=2, le=256)
    followup_threads: int = Field(default=16, ge=1, le=256)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # Closed runs' documents, audit streams and idempotency keys expire this many days after the run closes.
    retention_days: float = Field(default=90, gt=0)
    cli_operators: dict[str, str] = Field(default_factory=dict)
    """OS user name -> the Slack user id the command line acts as (checked like a click from that user)."""

    @field_validator("cli_operators")
    @classmethod
    def _operator_ids(cls, operators: dict[str, str]) -> dict[str, str]:
        for name, user in operators.items():
            if not re.match(r"^[UW][A-Z0-9]{2,}$", user):
                raise ValueError(f"cli_operators.{name}: expected a Slack user ID like U0123ABCD, got {user!r}")
        return operators

    @field_validator("environments")
    @classmethod
    def _names(cls, envs: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        named: dict[str, EnvironmentConfig] = {}
        for key, env in envs.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"environment names are lower-case words like prod or staging, got {key!r}")
            named[key] = env.model_copy(update={"name": key})
        return named

    def environment(self, name: str) -> EnvironmentConfig | None:
        return self.environments.get(name)


_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, environ: Mapping[str, str], where: str) -> Any:
    """Replace ${VAR} and ${VAR:-default} in strings with values from the environment."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            escaped, name, default = match.group(1), match.group(2), match.group(3)
            if escaped:  # $${name} is a literal ${name}, left for run-time templates
                return match.group(0)[1:]
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set (referenced as ${{{name}}})")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _describe(error: ValidationError, path: Path) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "extra_forbidden":
        message = "unknown field (check the spelling against the configuration reference)"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {loc}: {message}{suffix}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key written twice in one mapping is an error (not: the last one wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges; an explicit key beside it overrides on purpose
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: the safe loader's own error names it
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first}; the second would silently win)",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> BotConfig:
    """Read and validate the environments file. Raises ConfigError with one line naming the field."""
    path = Path(path)
    environ = os.environ if environ is None else environ
    try:
        raw = yaml.load(path.read_text("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (set MIGRATE_BOT_CONFIG to your environments file)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not an environments file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with an 'environments' key at the top level")
    raw = _interpolate(raw, environ, "")
    try:
        config = BotConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    for env in config.environments.values():
        register_secret(env.database_url)
        register_secret(env.maintenance.webhook_token)
        register_secret(env.rehearsal.database_url)
        if env.review.github and env.review.github.token_env:
            register_secret(environ.get(env.review.github.token_env))
        for url in (env.database_url, env.rehearsal.database_url):
            match = re.match(r"^[a-z+]+://[^:/@]*:([^@]+)@", url or "")
            if match:
                register_secret(match.group(1))
    return config


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a REDIS_URL (without repeating it: it may hold a password), or None.

    A Sentinel URL names several hosts; its full form is checked where the client is built
    (bot.store.connection.parse_sentinel), here only that it names sentinels and a service.
    """
    try:
        parts = urlsplit(url)
        if parts.scheme in SENTINEL_SCHEMES:
            hosts = parts.netloc.rpartition("@")[2]
            if not hosts or not parts.path.strip("/"):
                return ("REDIS_URL names no sentinels or no service (expected "
                        "redis+sentinel://host:port[,host:port…]/service-name[/db])")
            return None
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "REDIS_URL is not a valid URL (expected redis://HOST:PORT/DB)"
    if parts.scheme not in REDIS_SCHEMES:
        return (f"REDIS_URL must start with {', '.join(s + '://' for s in REDIS_SCHEMES)} "
                f"(got {parts.scheme + '://' if parts.scheme else 'no scheme'})")
    if parts.scheme != "unix" and not parts.hostname:
        return "REDIS_URL names no host (expected redis://HOST:PORT/DB)"
    if parts.scheme == "unix" and not parts.path:
        return "REDIS_URL names no socket path (expected unix:///path/to/redis.sock)"
    return None


@dataclass(frozen=True)
class Settings:
    """Process-level settings from the environment variables."""

    slack_bot_token: str
    slack_signing_secret: str
    slack_app_token: str | None
    slack_api_url: str
    redis_url: str
    config_path: Path | None
    """MIGRATE_BOT_CONFIG; None when unset (serve and the CLI refuse then: see ``require_config``)."""
    key_prefix: str
    port: int
    demo: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def require_config(self, given: str | Path | None = None) -> Path:
        """The environments file to read: ``given`` (a --config or a PATH argument), else MIGRATE_BOT_CONFIG."""
        if given:
            return Path(given)
        if self.config_path is None:
            raise ConfigError(NO_CONFIG)
        return self.config_path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, require_slack: bool = True,
                     socket_mode: bool = False) -> Settings:
        """Every setting checked before anything starts; each problem is one ConfigError line that names the
        variable (never its value: tokens and URLs may be secret)."""
        environ = os.environ if environ is None else environ
        token = environ.get("SLACK_BOT_TOKEN", "")
        secret = environ.get("SLACK_SIGNING_SECRET", "")
        app_token = environ.get("SLACK_APP_TOKEN", "")
        for value in (token, secret, app_token):
            register_secret(value)
        if require_slack and not token:
            raise ConfigError("SLACK_BOT_TOKEN is not set (the bot token, xoxb-…; see README 'Connect a workspace')")
        if token and not token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN is not a bot token (it starts with xoxb-; OAuth & Permissions "
                              "→ Bot User OAuth Token)")
        if require_slack and not secret.strip():
            raise ConfigError("SLACK_SIGNING_SECRET is not set (Basic Information → App Credentials in Slack)")
        if secret and secret != secret.strip():
            raise ConfigError("SLACK_SIGNING_SECRET has spaces or a newline around it (copy it again)")
        if socket_mode and not app_token:
            raise ConfigError("SLACK_APP_TOKEN is not set: Socket Mode needs an app-level token (xapp-…) with "
                              "connections:write (Basic Information → App-Level Tokens)")
        if app_token and not app_token.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN is not an app-level token (it starts with xapp-; Basic "
                              "Information → App-Level Tokens)")
        port_text = environ.get("PORT", "3000")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"PORT must be a number from 1 to 65535, got {port_text!r}")
        redis_url = environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        problem = redis_url_problem(redis_url)
        if problem:
            raise ConfigError(problem)
        api_url = environ.get("SLACK_API_URL", DEFAULT_SLACK_API_URL)
        if urlsplit(api_url).scheme not in ("http", "https"):
            raise ConfigError("SLACK_API_URL must be an http(s) URL like https://slack.com/api/")
        if not api_url.endswith("/"):
            api_url += "/"
        prefix = environ.get("MIGRATE_BOT_KEY_PREFIX", "migbot:")
        if not prefix or any(ch.isspace() or ch in "*?[]" for ch in prefix):
            raise ConfigError("MIGRATE_BOT_KEY_PREFIX must be non-empty, without spaces or * ? [ ] "
                              f"(got {prefix!r})")
        config = environ.get("MIGRATE_BOT_CONFIG", "").strip()
        return cls(
            slack_bot_token=token,
            slack_signing_secret=secret,
            slack_app_token=app_token or None,
            slack_api_url=api_url,
            redis_url=redis_url,
            config_path=Path(config) if config else None,
            key_prefix=prefix,
            port=int(port_text),
        )
