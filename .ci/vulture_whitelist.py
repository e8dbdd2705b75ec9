"""What only looks unused to vulture (`make lint`): each name here is read in a way vulture cannot see.

vulture parses this file; nothing runs it. Framework hooks matched by name or decorator are in [tool.vulture]
in pyproject.toml. Add a line here only with its reason: anything else vulture reports is dead code to remove.
"""

import logging

import pglast.ast

import bot.devtools.slack
from bot.calendar.rules import Window
from bot.config import CalendarConfig, SchedulerConfig
from bot.devtools.demoapp import _WakeableServer
from bot.integrations.squawk import SquawkViolation
from bot.runbook.rules import MigrateResult, RestoreDbResult, Run, StepResult
from bot.safety.analysis import Lock
from bot.store.runs import EnvLock
from jobs.scheduler import fire_reminder

# Read as getattr(config, f"{kind}_grace_s") by bot.calendar.rules.
CalendarConfig.announce_grace_s
CalendarConfig.reminder_grace_s
CalendarConfig.final_grace_s
CalendarConfig.start_grace_s
CalendarConfig.status_grace_s
CalendarConfig.complete_grace_s

# Fields of documents kept in Redis or parsed from a tool's output: part of the record, read or not.
Window.completed_at
Run.updated_at
StepResult.resolved_by
MigrateResult.durations_s
RestoreDbResult.previous_instance
RestoreDbResult.manual_switch
RestoreDbResult.restored_database
RestoreDbResult.prisma_migrations
EnvLock.expires_at
SquawkViolation.line_end
SquawkViolation.column_end

# PostgreSQL's lock modes: the enum is ordered by strength, so every mode has its place even if none names it.
Lock.ROW_SHARE
Lock.EXCLUSIVE

# Called or read by the library: uvicorn's Server loop, logging's record cache, PEP 562 module attributes.
_WakeableServer.main_loop
_WakeableServer.should_exit
logging.LogRecord.exc_text  # cleared by bot.redact.RedactingFilter
bot.devtools.slack.__getattr__

# Named as "jobs.scheduler:fire_reminder" in jobs pickled into Redis.
fire_reminder

# Parse-tree fields set on a copied pglast node, read by pglast's deparser (bot.safety.alternatives: NOT VALID).
pglast.ast.Constraint.skip_validation
pglast.ast.Constraint.initially_valid
# Accepted (and ignored) so that configs written for the leader-lock scheduler still load (jobs.scheduler).
SchedulerConfig.leader_ttl_s
