"""`/migrate check <env>`: the seed's pre-migration-check.sh as a command, reporting a ✅/❌ list."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot.config import EnvironmentConfig
from bot.context import Deps, Invocation, Reply, environment_or_refuse, require
from bot.errors import BotError
from bot.messages import slack_date
from bot.redact import redact
from bot.runbook.access import VERBS
from bot.runbook.engine import latest_migrations_dir
from bot.slowwork import shared
from bot.store.prechecks import PrecheckResults


@dataclass
class PrecheckItem:
    name: str
    ok: bool
    detail: str
    warn: bool = False

    def __post_init__(self) -> None:
        # A precheck command's arguments and output may carry a database URL or a token: never show or store them.
        self.name, self.detail = redact(self.name), redact(self.detail)

    def line(self) -> str:
        icon = "⚠️" if self.warn else ("✅" if self.ok else "❌")
        return f"{icon} *{self.name}* — {self.detail}"


def _database(env: EnvironmentConfig) -> list[PrecheckItem]:
    if not env.database_url:
        return [PrecheckItem("Database connection", False, "no database_url configured")]
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.postgres import Postgres

    try:
        Postgres(env.database_url, connect_timeout_s=5).ping()
    except BotError as exc:
        return [PrecheckItem("Database connection", False, str(exc))]
    items = [PrecheckItem("Database connection", True, "SELECT 1 succeeded")]
    # psycopg is loaded only by the work that talks to PostgreSQL
    from bot.integrations.prisma.native import NativeRunner

    try:
        status = NativeRunner(env.database_url).status(latest_migrations_dir(env))
    except BotError as exc:
        return items + [PrecheckItem("Migration status", False, str(exc))]
    if status.failed:
        names = ", ".join(row.migration_name for row in status.failed)
        items.append(PrecheckItem("Failed migrations", False, f"{names} — resolve before deploying (P3009)"))
    else:
        items.append(PrecheckItem("Failed migrations", True, "none"))
    if status.pending:
        items.append(PrecheckItem("Pending migrations", True, f"{len(status.pending)}: {', '.join(status.pending)}"))
    else:
        items.append(PrecheckItem("Pending migrations", True, "none — the database is up to date", warn=True))
    return items


def _backup_target(env: EnvironmentConfig) -> PrecheckItem:
    cfg = env.backup
    if cfg is None:
        return PrecheckItem("Backup target", False, "no backup configured")
    try:
        if cfg.method == "rds_snapshot":
            # boto3 is slow to import: loaded only by the work that calls AWS
            from bot.integrations.aws import Aws

            status = Aws(region=env.aws.region, endpoint_url=env.aws.endpoint_url).instance_status(
                str(cfg.rds_instance))
            return PrecheckItem("Backup target", status == "available", f"RDS instance {cfg.rds_instance} is {status}")
        if cfg.s3_bucket:
            # boto3 is slow to import: loaded only by the work that calls AWS
            from bot.integrations.aws import Aws

            Aws(region=env.aws.region, endpoint_url=env.aws.endpoint_url).require_versioning(cfg.s3_bucket)
            return PrecheckItem("Backup target", True, f"s3://{cfg.s3_bucket} reachable, versioning enabled")
        directory = Path(str(cfg.local_dir))
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        return PrecheckItem("Backup target", True, f"local directory {directory} is writable")
    except BotError as exc:
        return PrecheckItem("Backup target", False, str(exc))
    except OSError as exc:
        return PrecheckItem("Backup target", False, f"{cfg.local_dir}: {exc.strerror}")


def _extra(env: EnvironmentConfig) -> list[PrecheckItem]:
    items = []
    for command in env.check_commands:
        name = " ".join(command)
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        except FileNotFoundError:
            items.append(PrecheckItem(name, False, "command not found"))
            continue
        except subprocess.TimeoutExpired:
            items.append(PrecheckItem(name, False, "timed out after 300 s"))
            continue
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
        items.append(PrecheckItem(name, proc.returncode == 0, f"exit {proc.returncode} {last[0][:120]}".strip()))
    return items


def precheck_environment(deps: Deps, env_name: str) -> list[PrecheckItem]:
    env = environment_or_refuse(deps, env_name)
    return shared(("check", env.name), lambda: _precheck(deps, env))


def _precheck(deps: Deps, env: EnvironmentConfig) -> list[PrecheckItem]:
    items = [PrecheckItem("Configuration", True, f"{env.name}: channel <#{env.channel}>, "
                       f"{env.approvals_required} approval(s) required")]
    items += _database(env)
    items.append(_backup_target(env))
    items += _extra(env)
    ok = all(item.ok for item in items)
    PrecheckResults(deps.store).save(env.name, {
        "ok": ok, "at": deps.clock().isoformat(), "items": [asdict(i) for i in items]})
    return items


def precheck_reply(deps: Deps, inv: Invocation, args: list[str]) -> Reply:
    if len(args) != 1:
        return Reply("Which environment? `/migrate check <env>`")
    require(deps, VERBS["check"], inv.user, env_name=environment_or_refuse(deps, args[0]).name)
    items = precheck_environment(deps, args[0])
    ok = all(item.ok for item in items)
    head = f"*Pre-migration check for {args[0]}* — {'✅ ready' if ok else '❌ not ready'} · {slack_date(deps.clock())}"
    text = head + "\n" + "\n".join(item.line() for item in items)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]
    active = deps.store.active_run(args[0])
    if active and active.is_active and "backup_verified" not in active.checklist:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                       "text": f"⚠️ Have you created a backup? Run `{active.id}` has none yet."},
                       "accessory": {"type": "button", "action_id": "step_run:backup", "style": "primary",
                                     "text": {"type": "plain_text", "text": "Take backup now"},
                                     "value": f"{active.id}|{active.version}"}})
    elif active is None:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                       "⚠️ Ensure you have a backup before proceeding: `/migrate "
                       f"{args[0]}` starts a run whose first step takes and verifies one."}]})
    return Reply(text, blocks=blocks)
