"""Semantic checks of a loaded environments file: what parses but cannot work (`check-config`, and `serve` at start)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bot.config import BotConfig, EnvironmentConfig
from bot.runbook.access import ENV_VERB, VERBS

# `migrate-bot check-config` exit codes (README "Configuration reference"); `serve` refuses on EXIT_ERRORS.
EXIT_CLEAN = 0
EXIT_WARNINGS = 1
EXIT_ERRORS = 2


@dataclass(frozen=True)
class Finding:
    """One problem: an error stops `serve`; a warning is something that will fail or surprise later."""

    level: Literal["error", "warning"]
    where: str
    text: str

    def line(self) -> str:
        return f"{self.level}: {self.where}: {self.text}"


def reserved_names() -> set[str]:
    """The first words of `/migrate` verbs (bot.runbook.access.VERBS): an environment named so could not be started."""
    return {verb.split()[0] for verb in VERBS if verb != ENV_VERB}


def _is_group(slack_id: str) -> bool:
    return slack_id.startswith("S")  # a user group: its members are not known from the file


def _approvals(name: str, env: EnvironmentConfig) -> list[Finding]:
    """Approvals that can never be met: a requester cannot approve their own run (bot.runbook.rules.approve)."""
    where = f"environments.{name}"
    if any(_is_group(a) for a in env.approvers):
        return []  # a group may hold any number of people; nothing can be proven from the file
    approvers = set(env.approvers)
    need = env.approvals_required
    if len(approvers) < need:
        return [Finding("error", where, f"approvals_required is {need} but only {len(approvers)} approver(s) are "
                                        "listed: no run can ever be approved")]
    stuck = sorted(r for r in env.requesters if not _is_group(r) and len(approvers - {r}) < need)
    if not stuck:
        return []
    if len(stuck) == len(env.requesters):
        scope = "no run can ever be approved"
    else:
        scope = f"a run started by {', '.join(stuck)} can never be approved"
    alone = len(approvers - {stuck[0]})
    return [Finding("error", where, f"{scope}: a requester cannot approve their own run, and besides "
                                    f"{stuck[0]} only {alone} approver(s) remain for approvals_required {need} "
                                    "(add approvers or lower approvals_required)")]


def _references(name: str, env: EnvironmentConfig, config: BotConfig) -> list[Finding]:
    staging = env.safety.staging_env
    if staging is None:
        return []
    where = f"environments.{name}.safety.staging_env"
    if staging == name:
        return [Finding("error", where, f"{staging!r} is this environment itself: staging evidence must come from "
                                        "another environment")]
    if staging not in config.environments:
        known = ", ".join(sorted(config.environments))
        return [Finding("error", where, f"unknown environment {staging!r} (known: {known})")]
    if not config.environments[staging].database_url:
        return [Finding("warning", where, f"{staging!r} has no database_url, so its _prisma_migrations cannot be "
                                          "read as staging evidence")]
    return []


def _steps(name: str, env: EnvironmentConfig) -> list[Finding]:
    where = f"environments.{name}"
    found: list[Finding] = []
    maintenance = env.maintenance
    if maintenance.enabled and maintenance.method == "ecs_task_definition" and not (
            env.deploy.cluster and env.deploy.service):
        found.append(Finding("error", f"{where}.maintenance", "method ecs_task_definition switches the ECS service "
                                                              "named by deploy.cluster and deploy.service: set both"))
    if not env.database_url:
        if env.backup is not None and env.backup.method == "pg_dump":
            found.append(Finding("error", f"{where}.backup", "method pg_dump needs the environment's database_url "
                                                             "(there is nothing to dump)"))
        if env.rehearsal.target == "database_url" or env.safety.rehearsal:
            found.append(Finding("error", f"{where}.rehearsal", "the rehearsal restores this environment's "
                                                                "database: set database_url"))
        found.append(Finding("warning", f"{where}.database_url", "not set: check and lint have nothing to read "
                                                                 "and the migrate step will refuse every run"))
    if env.backup is None:
        found.append(Finding("warning", f"{where}.backup", "not set: runs migrate without a backup to restore "
                                                           "(rollback Option 2 is unavailable)"))
    monitoring = env.monitoring.resolved(env.deploy)
    if monitoring.target_group and not monitoring.load_balancer:
        found.append(Finding("error", f"{where}.monitoring.target_group", "narrows the load balancer's metrics: "
                                                                          "set monitoring.load_balancer too"))
    sources = [monitoring.sentry, monitoring.load_balancer, monitoring.ecs_service, monitoring.log_group]
    if not any(sources) and not env.database_url:
        found.append(Finding("warning", f"{where}.monitoring", "no source (sentry, load_balancer, deploy or "
                                                               "ecs_service, log_group, database_url): the "
                                                               "monitoring step and the 24-hour watch read nothing"))
    return found


def _tokens(name: str, env: EnvironmentConfig, environ: Mapping[str, str]) -> list[Finding]:
    """A token variable named but unset fails only later: at the first release fetch or pull-request read."""
    where = f"environments.{name}"
    named = []
    if env.migrate.source.git is not None and env.migrate.source.git.token_env:
        named.append(("migrate.source.git.token_env", env.migrate.source.git.token_env,
                      "fetching a private repository will fail"))
    if env.review.github is not None and env.review.github.token_env:
        named.append(("review.github.token_env", env.review.github.token_env,
                      "GitHub will refuse or rate-limit reading the pull requests"))
    return [Finding("warning", f"{where}.{field}", f"{variable} is not set in this process's environment: {effect}")
            for field, variable, effect in named if not environ.get(variable)]


def check(config: BotConfig, environ: Mapping[str, str]) -> list[Finding]:
    """Every finding for ``config`` in a process with ``environ`` (for the token variables), errors first."""
    found: list[Finding] = []
    reserved = reserved_names()
    for name, env in config.environments.items():
        if name in reserved:
            found.append(Finding("error", f"environments.{name}", f"the name {name!r} is a /migrate verb, so "
                                                                  f"`/migrate {name}` could never start a run here "
                                                                  "(rename the environment)"))
        found += _approvals(name, env)
        found += _references(name, env, config)
        found += _steps(name, env)
        found += _tokens(name, env, environ)
    return sorted(found, key=lambda f: f.level != "error")


def exit_code(findings: list[Finding]) -> int:
    if any(f.level == "error" for f in findings):
        return EXIT_ERRORS
    return EXIT_WARNINGS if findings else EXIT_CLEAN
