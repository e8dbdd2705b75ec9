"""What each runbook step does, one module per step; EXECUTORS is the table handed to the step engine."""

from __future__ import annotations

from bot.runbook.engine import Executor
from bot.runbook.steps import backup, deploy, maintenance, migrate, rollback, seed, smoke

# The forward steps of the runbook (bot.runbook.rules.STEP_SPECS), handed to the engine by bot.runbook.operations.
FORWARD: dict[str, Executor] = {
    "backup": backup.backup,
    "maintenance_on": maintenance.maintenance_on,
    "migrate": migrate.migrate,
    "seed": seed.seed,
    "deploy": deploy.deploy,
    "smoke": smoke.smoke,
    "maintenance_off": maintenance.maintenance_off,
}

# The rollback sub-steps (the seed's three options, and the abort), appended to a run when one starts; each
# ends with maintenance off and the smoke tests.
ROLLBACK: dict[str, Executor] = {
    **rollback.EXECUTORS,
    "rb_maintenance_off": maintenance.maintenance_off_after_rollback,
    "rb_smoke": smoke.smoke_after_rollback,
}

EXECUTORS: dict[str, Executor] = {**FORWARD, **ROLLBACK}
