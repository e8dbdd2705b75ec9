"""Runs the runbook's steps: claim the step in Redis, do the work through one integration, record the outcome."""

from __future__ import annotations

from bot.operations import Deps
from bot.runbook import Run


def approval_fingerprint(deps: Deps, run: Run) -> str | None:
    """What an approval approves: the checksums of the pending migrations (None when there are none to read)."""
    return None
