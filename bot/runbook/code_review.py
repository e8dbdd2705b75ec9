"""Review as evidence: the pull requests that added the pending migrations tick "script reviewed" (review.github)."""

from __future__ import annotations

import logging
import os

from bot.config import EnvironmentConfig, GithubReviewConfig
from bot.context import Deps
from bot.errors import BotError, WrongState
from bot.redact import redact, register_secret
from bot.runbook.rules import CodeReview, ReviewedFile, record_code_review

log = logging.getLogger(__name__)

DEFAULT_MIGRATIONS_PATH = "prisma/migrations"


def migrations_path(env: EnvironmentConfig) -> str:
    """Where the migrations are inside the repository: the git source's ``path`` (``migrate.source.git.path``,
    when that source is configured), else Prisma's default."""
    git = env.migrate.source.git
    return (git.path if git is not None else DEFAULT_MIGRATIONS_PATH).strip("/")


def collect(config: GithubReviewConfig, *, sha: str, migrations: list[str], path: str) -> CodeReview:
    """Ask GitHub about each migration's file at ``sha``; any failure is the reason the item stays manual."""
    # httpx is loaded only when there is a review to read
    from bot.integrations.github import GitHub

    token = os.environ.get(config.token_env) if config.token_env else None
    register_secret(token)
    if config.token_env and not token:
        return CodeReview(sha=sha, error=f"the token variable {config.token_env} is not set in the bot's environment")
    files: list[ReviewedFile] = []
    try:
        with GitHub(repo=config.repo, api_url=config.api_url, token=token, timeout_s=config.timeout_s,
                    token_name=config.token_env) as github:
            for name in migrations:
                found = github.review_of(f"{path}/{name}/migration.sql" if path else f"{name}/migration.sql", sha)
                files.append(ReviewedFile(migration=name, path=found.path, pulls=found.pulls,
                                          approvers=found.approvers, problem=found.problem))
    except BotError as exc:
        return CodeReview(sha=sha, error=redact(str(exc)))
    except (ValueError, TypeError, AttributeError) as exc:  # an answer not shaped like GitHub's
        log.warning("unexpected answer from GitHub for %s: %s", config.repo, redact(str(exc)))
        return CodeReview(sha=sha, error=f"GitHub answered {config.repo}'s questions with something unexpected")
    return CodeReview(sha=sha, files=files)


def review_evidence(deps: Deps, run_id: str) -> None:
    """Once the pending migrations are known: record what their pull requests say, and publish. Never raises for
    GitHub's trouble (the item stays a click, with the reason in the message)."""
    run = deps.store.get(run_id)
    env = deps.config.environment(run.env)
    github = env.review.github if env else None
    release = run.facts.release
    if env is None or github is None or release is None or not run.pending_migrations \
            or "script_reviewed" in run.checklist:
        return
    review = collect(github, sha=release.sha, migrations=list(run.pending_migrations), path=migrations_path(env))
    if review.error:
        log.warning("review evidence for %s unavailable: %s", run_id, review.error)
    try:
        deps.store.apply(run_id, lambda current: record_code_review(current, review=review, now=deps.clock()))
    except WrongState as exc:  # the pending set changed in between: the next inspection asks again
        log.info("review evidence for %s not recorded: %s", run_id, exc)
        return
    deps.publish(run_id)
