"""Seed step 4: run the database seed command, when the environment enables it."""

from __future__ import annotations

import subprocess

from bot.errors import IntegrationError
from bot.runbook.engine import (
    StepContext,
    StepOutcome,
)


def seed(ctx: StepContext) -> StepOutcome:
    """Seed step 4 (optional): the configured seed command, output to the thread."""
    cfg = ctx.env.seed
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DATABASE_URL": ctx.env.database_url or ""}
    try:
        proc = subprocess.run(cfg.command, cwd=cfg.cwd or None, env=env, capture_output=True, text=True,
                              timeout=cfg.timeout_s, check=False)
    except FileNotFoundError:
        raise IntegrationError(f"Seed command not found: {cfg.command[0]}") from None
    except subprocess.TimeoutExpired:
        raise IntegrationError(f"Seed command timed out after {cfg.timeout_s:.0f} s") from None
    for line in (proc.stdout + proc.stderr).splitlines()[-60:]:
        ctx.log(line)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise IntegrationError(f"Seed command exited {proc.returncode}: {last[0][:200]}")
    return StepOutcome(f"`{' '.join(cfg.command)}` exited 0")
